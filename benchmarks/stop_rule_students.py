"""Benchmark: how noisy ``--max_accuracy_drop`` is on real students, written to
docs/benchmarks/stop_rule_students.md.

    python benchmarks/stop_rule_students.py --runs=DIR[,DIR...] [--data_dir=DIR]
        [--drop=0.5] [--section=NAME]

Reads finished epkd_tf runs with a validation split (for instance the frontier's kept runs,
``benchmarks/frontier.py --keep_runs``), loads their teacher and every student from the
run directory with epkd_tf's safe loader, and measures, on the run's own validation and
test examples (its flags.txt says which), for every student: its change against the
teacher, the fraction of examples on which the two disagree (exactly one of them right),
and the paired standard error of the change (``epkd_tf.budget.stop.paired_difference_se``)
beside the cautious figure the start-up warning uses (``accuracy_difference_se``,
independent errors). The last column is how many examples would bring two paired standard
errors within ``--drop`` at the student's disagreement ``d`` (``d·(200/drop)²``).
``--data_dir`` replaces the runs' recorded TFDS directory (a kept run moved elsewhere).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks_md import cpu, page, replace_section  # noqa: E402

SECTION = "stop_rule_students"


def correct(model, dataset) -> np.ndarray:
    """Per example of ``dataset`` (batches of images and labels), in order: whether
    ``model`` got it right."""
    hits = []
    for x, y in dataset:
        hits.append(np.argmax(model(x, training=False), axis=-1) == y.numpy())
    return np.concatenate(hits)


def run_rows(out: str, data_dir: str = None) -> list:
    """One dict per student of the finished run in ``out``: its change against the teacher
    on the validation and the test split, their disagreement and paired standard errors.

    Raises:
        SystemExit: if the run has no validation split or no checkpoints.
    """
    import epkd_tf
    from epkd_tf.budget.stop import accuracy_difference_se, paired_difference_se
    from epkd_tf.config import DataConfig
    from epkd_tf.data import load_data
    from epkd_tf.records.settings_record import recorded_settings

    cfg = recorded_settings(Path(out, "flags.txt").read_text(), DataConfig())
    if cfg.validation_split is None:
        raise SystemExit(f"error: {out} has no --validation_split to judge on")
    data = load_data(cfg.replace(data_dir=data_dir) if data_dir else cfg)
    splits = {"validation": data.validation(), "test": data.test()}
    checkpoints = Path(out, "checkpoints")
    teacher = epkd_tf.load_model(str(checkpoints / "teacher.keras"))
    reference = {name: correct(teacher, ds) for name, ds in splits.items()}
    rows, iteration = [], 1
    while (checkpoints / f"student_{iteration}.keras").exists():
        student = epkd_tf.load_model(str(checkpoints / f"student_{iteration}.keras"))
        row = {"run": os.path.basename(os.path.normpath(out)), "iteration": iteration}
        for name, ds in splits.items():
            got, ref = correct(student, ds), reference[name]
            row[f"{name}_n"] = ref.size
            row[f"{name}_change"] = 100 * (got.mean() - ref.mean())
            row[f"{name}_disagree"] = float(np.mean(got != ref))
            row[f"{name}_paired_se"] = paired_difference_se(ref, got)
            row[f"{name}_cautious_se"] = accuracy_difference_se(ref.mean(), ref.size)
        rows.append(row)
        iteration += 1
    if not rows:
        raise SystemExit(f"error: {out} has no student checkpoints (checkpoints/student_N.keras)")
    return rows


def markdown(rows: list, args) -> str:
    title = "" if args.section == SECTION else f": {args.section}"
    lines = [f"## Paired noise of real students{title}", "",
             f"Measured {datetime.date.today()} on {cpu()}. Invocation: `python "
             f"benchmarks/stop_rule_students.py --runs=<{len(args.runs)} kept run(s)> "
             f"--drop={args.drop:g} --section={args.section}`. Change: the student's "
             "accuracy minus the teacher's, in points, on the run's own split; disagree: "
             "the examples exactly one of them gets right; paired SE: the standard error "
             "of the change from those (`paired_difference_se`); cautious SE: the start-up "
             "warning's, errors taken as independent (`accuracy_difference_se`); examples "
             f"needed: for two paired standard errors within {args.drop:g} points at that "
             "disagreement.", "",
             "| run | iteration | validation n | validation change | test change | "
             "validation disagree | validation paired SE | validation cautious SE | "
             "test paired SE | examples needed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        needed = r["validation_disagree"] * (200 / args.drop) ** 2
        lines.append(
            f"| {r['run']} | {r['iteration']} | {r['validation_n']:,} | "
            f"{r['validation_change']:+.2f} | {r['test_change']:+.2f} | "
            f"{100 * r['validation_disagree']:.1f}% | {r['validation_paired_se']:.2f} | "
            f"{r['validation_cautious_se']:.2f} | {r['test_paired_se']:.2f} | "
            f"{needed:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True,
                        type=lambda text: [v for v in text.split(",") if v],
                        help="finished epkd_tf run directories with a validation split")
    parser.add_argument("--data_dir", default=None,
                        help="the TFDS directory of the runs' dataset (default: recorded)")
    parser.add_argument("--drop", type=float, default=0.5,
                        help="the --max_accuracy_drop the last column sizes the split for")
    parser.add_argument("--section", default=SECTION,
                        help="the page section to write (one per set of runs)")
    parser.add_argument("--page", default=None, help="write this page instead")
    args = parser.parse_args()
    if not args.drop > 0:
        parser.error(f"--drop={args.drop:g}: must be positive")
    missing = [r for r in args.runs if not Path(r, "flags.txt").is_file()]
    if missing:
        parser.error(f"--runs: {missing[0]} is not an epkd_tf run (no flags.txt)")
    rows = [row for out in args.runs for row in run_rows(out, args.data_dir)]
    replace_section(args.section, markdown(rows, args),
                    Path(args.page) if args.page else page(__file__))


if __name__ == "__main__":
    main()
