"""Benchmark: which factors decide the quality of epkd_tf's structured LeNet-5 students at
10x fewer parameters, one factor at a time, written to docs/benchmarks/quality.md.

    python benchmarks/quality.py [--npz=../shared/data/mnist.npz] [--keep_runs=DIR]
        [--only=all|tournament] [--smoke] [--page=PATH]

Every variant runs the peer protocol (``compression_setup.py``: the same teacher, 5 steps,
2 epochs of distillation each, the same split) through the real CLI with two seeds, and
changes one thing against the one before it:

* ``before``: the settings before this study (per-layer floor a fraction of the *current*
  width, Taylor scores L2-normalised per layer, l1_filter + taylor + oracle);
* ``floor of teacher``: the floor a fraction of the teacher's widths (no compounding);
* ``taylor mean``: Taylor scores normalised by their per-layer mean (Torch-Pruning's
  normaliser) instead of their L2 norm;
* ``taylor alone``: only the Taylor criterion (no tournament);
* ``flops 0.5``: FLOPs-regularised ranking (``--flops_weight=0.5``);
* ``cosine``: the distillation rate cosine-decayed within each step.

Reported per variant: mean test accuracy of the final students (both seeds), parameters,
MACs, widths, and the change against ``before``.

**Tournament** (part of the default invocation; ``--only=tournament`` runs and writes it
alone, inside the section): is the tournament's winner (the candidate ranked first before
distillation) the candidate that distils best? The default recipe (the ``taylor mean``
row's flags, the library's defaults) with the same protocol, teacher and seeds, but
through the Python library: the same flags are parsed into the same ``RunConfig`` as the
CLI's (:func:`run_config`), the run is seeded as the CLI seeds it, and the chain calls
``EPKD.step`` per iteration (it follows the ranked winner, as EPKD does). At every
iteration every other candidate is distilled too, exactly as the winner (``EPKD.distil``,
a copy), and every distilled candidate is measured on the selection split and the test
split. Cached per seed in ``tournament/s<seed>.json`` of the work directory
(``--keep_runs``): a rerun with the same flags reuses it. ``--smoke`` runs this part alone
on a tiny slice (a LeNet-5 teacher of its own trained 1 epoch on 1,200 examples, 300
validation and 500 test examples, 2 iterations each halving the parameters with 1 epoch
of distillation) and writes it into ``<work>/quality.md`` unless ``--page`` is given: a check of the plumbing whose figures mean nothing.

Time on 2 cores: the six factor rows ~40 minutes (runs found finished in ``--keep_runs``
are reused); the tournament ~6 minutes per seed (the default recipe's run, ~3 minutes, plus
two more 2-epoch distillations per iteration).
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

import benchmarks_md
from benchmarks_md import replace_section
from compression_setup import (epkd_flags, final_iteration, finished, run_epkd, teacher,
                               teacher_row)
from mnist_epkd import mnist_arguments, mnist_workspace

SECTION = "quality"
TOURNAMENT = f"{SECTION}_tournament"       # its own markers inside the section
RATIO = 10
SEEDS = (0, 1)
STRUCTURED = "--pruners=l1_filter,taylor,oracle"
VARIANTS = [
    ("before", [STRUCTURED, "--layer_floor_of=current", "--taylor_normalization=l2"]),
    ("floor of teacher", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=l2"]),
    ("taylor mean", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=mean"]),
    ("taylor alone", ["--pruners=taylor", "--layer_floor_of=teacher",
                      "--taylor_normalization=mean"]),
    ("flops 0.5", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=mean",
                   "--flops_weight=0.5"]),
    ("cosine", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=mean",
                "--finetune_schedule=cosine"]),
]


def main() -> int:
    args = parse_args()
    work, data_dir = mnist_workspace(args, "epkd_quality_")
    path = (Path(args.page) if args.page else
            Path(work) / "quality.md" if args.smoke else benchmarks_md.page(__file__))
    if args.smoke or args.only == "tournament":
        write_tournament(tournament_section(work, data_dir, args.smoke), path)
        print(f"wrote the tournament part of section {SECTION} of {path}; runs in {work}")
        return 0
    teacher(work, data_dir)
    rows = []
    for name, extra in VARIANTS:
        for seed in SEEDS:
            rows.append(run_epkd(work, data_dir, name.replace(" ", "_"), RATIO, seed, extra))
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    teach = teacher_row(work)
    baseline = frame[frame.name == "before"].test_accuracy.mean()
    lines = ["## Compression quality, factor by factor (`benchmarks/quality.py`)", "",
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
             f"cores, CPU only. LeNet-5 teacher ({100 * teach.test_accuracy:.2f}% test, "
             f"{int(teach.nonzero_params):,} params) compressed {RATIO}x in 5 steps of 2 "
             "distillation epochs each (the peer protocol, `benchmarks/compression_setup.py`;"
             " candidates ranked on the held-out `train[90%:]`), seeds "
             f"{', '.join(map(str, SEEDS))}. Each variant changes one thing against the row "
             "above it (see the script's docstring).", "",
             "| variant | flags | test acc (mean of seeds) | per seed | vs before | params "
             "| MACs | widths conv1, conv2, fc1 | winners (seed 0) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, extra in VARIANTS:
        group = frame[frame.name == name.replace(" ", "_")]
        mean = group.test_accuracy.mean()
        lines.append(
            f"| {name} | `{' '.join(extra)}` | {100 * mean:.2f}% | "
            f"{', '.join(f'{100 * a:.2f}' for a in group.test_accuracy)} | "
            f"{100 * (mean - baseline):+.2f} | {int(group.params.mean()):,} | "
            f"{int(group.macs.mean()):,} | {' / '.join(group.widths)} | "
            f"{group.winners.iloc[0]} |")
    lines += ["", "Seconds per run: " + ", ".join(
        f"{r.name} s{r.seed} {r.seconds:.0f}" for r in frame.itertuples()) + "."]
    lines += ["", f"<!-- {TOURNAMENT}:start -->", tournament_section(work, data_dir, False),
              f"<!-- {TOURNAMENT}:end -->"]
    replace_section(SECTION, "\n".join(lines), path)
    frame.to_csv(os.path.join(work, "quality.csv"), index=False)
    print(f"wrote section {SECTION} of {path}; runs in {work}")
    return 0


def parse_args():
    parser = mnist_arguments(__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["all", "tournament"], default="all",
                        help="all: the factor rows and the tournament; tournament: the "
                        "tournament part alone (its markers inside the section)")
    parser.add_argument("--smoke", action="store_true",
                        help="the tournament part alone on a tiny slice: a plumbing check")
    parser.add_argument("--page", "--benchmarks_md", dest="page", default=None,
                        help="file to write into (default: docs/benchmarks/quality.md; "
                        "with --smoke <work>/quality.md)")
    return parser.parse_args()


# ------------------------------------------------------------------------ the tournament
DEFAULT = "taylor mean"          # the row whose flags are the library's current defaults
SMOKE_SPLITS = ["--train_split=train[:1200]", "--validation_split=train[1200:1500]",
                "--test_split=test[:500]"]
SMOKE_RATIO = 4
SMOKE_FLAGS = [*SMOKE_SPLITS, "--iterations=2", "--finetune_epochs=1", "--keep_ratio=0.5",
               "--oracle_examples=128", "--latency_runs=5"]


def run_config(flag_list: Sequence[str]):
    """The ``RunConfig`` that ``python -m epkd_tf.main`` builds from ``flag_list``: the
    same flag definitions (``define_flags``) and parsing (``from_flags``), in a FlagValues
    of its own (the process's global flags are left alone)."""
    from absl import flags
    from epkd_tf.config import RunConfig
    from epkd_tf.settings import define_flags, from_flags
    values = flags.FlagValues()
    define_flags(RunConfig(), values)
    values(["quality.py", *flag_list])
    return from_flags(RunConfig(), values)


def tournament_chain(cfg) -> Dict:
    """EPKD over ``cfg`` through the library, seeded as the CLI seeds a run (op determinism
    and ``--seed`` before the data and the teacher, ``--seed`` + k before iteration k) and
    stopped by the same rules (``--iterations``, every ``--target_*`` goal met): per
    iteration ``EPKD.step``, then every candidate distilled and measured
    (:func:`distilled_candidates`). The chain goes on from the ranked winner's distilled
    copy, as EPKD does. Returns JSON-ready rows, the final student's figures and times."""
    import epkd_tf  # noqa: F401  (Keras 2 before TensorFlow)
    import tf_keras
    from epkd_tf import training
    from epkd_tf.data import load_data
    from epkd_tf.graph import nonzero_params
    from epkd_tf.loop import EPKD
    from epkd_tf.seeds import seed_everything
    from epkd_tf.models.user import load_user_model
    seed = cfg.data.seed
    seed_everything(seed)
    data = load_data(cfg.data)
    tf_keras.utils.set_random_seed(seed)
    epkd = EPKD(cfg, data, teacher=load_user_model(cfg.teacher.teacher_path, "teacher_path"))
    student = epkd.teacher_model
    cost = epkd.cost_of(student)
    rows, chain_seconds, extra_seconds = [], 0.0, 0.0
    for iteration in range(1, cfg.iterations + 1):
        tf_keras.utils.set_random_seed(seed + iteration)
        start = time.perf_counter()
        result = epkd.step(student, iteration, epkd.next_target(cost), current_cost=cost)
        chain_seconds += time.perf_counter() - start
        start = time.perf_counter()
        rows += distilled_candidates(epkd, result, seed + iteration)
        extra_seconds += time.perf_counter() - start
        student, cost = result.student, epkd.cost_of(result.student)
        if cfg.budget.goals() and epkd.goals_met(student, {epkd.measure.name: cost}):
            break
    return {"rows": rows, "final_test_accuracy": training.accuracy(student, data.test()),
            "final_params": int(nonzero_params(student)),
            "num_validation": int(data.spec.num_validation),
            "num_test": int(data.spec.num_test), "chain_seconds": chain_seconds,
            "extra_seconds": extra_seconds}


def distilled_candidates(epkd, result, seed: int) -> List[Dict]:
    """One row per candidate of the iteration ``result`` (``EPKD.step``): its pruner, rank
    before distillation, selection and test accuracy before and after distillation. The
    winner's distilled model is the chain's own student (``result.student``); every other
    candidate is distilled here exactly as EPKD distils its winner (``EPKD.distil``: a copy,
    the same teacher, temperature, epochs and data order, under the iteration's seed). A
    distillation stopped by a NaN/Inf loss has no accuracies after it (NaN)."""
    import epkd_tf  # noqa: F401  (Keras 2 before TensorFlow)
    import tf_keras
    from epkd_tf import training
    table = result.table.set_index("pruner")
    selection = result.selection_column
    selection_data = (epkd.data.validation() if selection == "validation_accuracy"
                      else epkd.data.test())
    rows = []
    for candidate in result.candidates:
        winner = candidate is result.winner
        if winner:
            model, nonfinite = result.student, result.nonfinite
        else:
            tf_keras.utils.set_random_seed(seed)
            model, _, nonfinite = epkd.distil(candidate.model, result.iteration)
        row = table.loc[candidate.pruner]
        rows.append({
            "iteration": result.iteration, "temperature": float(result.temperature),
            "pruner": candidate.pruner, "winner": winner, "rank_before": int(row["rank"]),
            "params": int(row["nonzero_params"]),
            "selection_before": float(row[selection]),
            "test_before": float(row["test_accuracy"]),
            "selection_after": (np.nan if nonfinite else
                                training.accuracy(model, selection_data)),
            "test_after": np.nan if nonfinite else training.accuracy(model, epkd.data.test())})
    return rows


def smoke_teacher(work: str, data_dir: str) -> str:
    """``--smoke``'s LeNet-5 teacher: trained 1 epoch on the smoke slice in this process by
    epkd_tf's own teacher training, saved once into ``work``."""
    path = os.path.join(work, "smoke_teacher.keras")
    if not os.path.exists(path):
        import epkd_tf  # noqa: F401  (Keras 2 before TensorFlow)
        import tf_keras
        from epkd_tf import training
        from epkd_tf.data import load_data
        from epkd_tf.models import build_model
        cfg = run_config(["--dataset=mnist", f"--data_dir={data_dir}", *SMOKE_SPLITS])
        tf_keras.utils.set_random_seed(0)
        data = load_data(cfg.data)
        model = build_model("lenet5", data.spec.input_shape, data.spec.num_classes)
        training.train_teacher(model, data, 1, 1e-3)
        model.save(path)
    return path


def tournament_flags(work: str, data_dir: str, seed: int, smoke: bool) -> List[str]:
    """The flags of the default recipe's CLI run of ``seed`` (``compression_setup``'s
    protocol and teacher, the ``taylor mean`` row's flags); with ``smoke`` the smoke
    teacher and slice."""
    extra = dict(VARIANTS)[DEFAULT]
    if not smoke:
        return epkd_flags(data_dir, teacher(work, data_dir),
                          int(teacher_row(work).nonzero_params), RATIO, seed, extra)
    from epkd_tf.graph import nonzero_params
    from epkd_tf.models.user import load_user_model
    path = smoke_teacher(work, data_dir)
    params = int(nonzero_params(load_user_model(path, None)))
    return epkd_flags(data_dir, path, params, SMOKE_RATIO, seed, [*extra, *SMOKE_FLAGS])


def tournament_runs(work: str, data_dir: str, smoke: bool) -> List[Dict]:
    """Every seed's :func:`tournament_chain`, cached in ``work/tournament*/s<seed>.json``
    (run again only when its flags changed)."""
    folder = os.path.join(work, "tournament_smoke" if smoke else "tournament")
    os.makedirs(folder, exist_ok=True)
    results = []
    for seed in SEEDS:
        flag_list = tournament_flags(work, data_dir, seed, smoke)
        path = os.path.join(folder, f"s{seed}.json")
        cached = json.load(open(path)) if os.path.exists(path) else None
        if cached is None or cached["flags"] != flag_list:
            cached = {"seed": seed, "flags": flag_list,
                      **tournament_chain(run_config(flag_list))}
            with open(path + ".tmp", "w") as f:
                json.dump(cached, f, indent=1)
            os.replace(path + ".tmp", path)
        print(f"tournament seed {seed}: final test {cached['final_test_accuracy']:.4f}",
              flush=True)
        results.append(cached)
    rows = pd.DataFrame([{"seed": r["seed"], **row} for r in results for row in r["rows"]])
    rows.to_csv(os.path.join(folder, "tournament.csv"), index=False)
    return results


def per_iteration(rows: pd.DataFrame) -> pd.DataFrame:
    """Per seed and iteration: the winner, the best candidate after distillation on the
    selection split (ties go to the better-ranked one, so a tie with the winner counts as
    the winner being best), the gaps best - winner in points, whether the winner is best on
    test too, the Spearman of rank before vs rank after, and pairs kept in order."""
    out = []
    for (seed, iteration), group in rows.groupby(["seed", "iteration"]):
        group = group.sort_values("rank_before")
        after = group.selection_after.fillna(-np.inf)
        best = group.loc[after[after == after.max()].index[0]]
        winner = group[group.winner].iloc[0]
        ranks_after = after.rank(ascending=False, method="average")
        spearman = (np.corrcoef(group.rank_before, ranks_after)[0, 1]
                    if ranks_after.nunique() > 1 else np.nan)
        kept = ties = 0
        pairs = list(itertools.combinations(range(len(group)), 2))
        for i, j in pairs:       # i ranked before j
            ties += after.iloc[i] == after.iloc[j]
            kept += after.iloc[i] > after.iloc[j]
        out.append({
            "seed": seed, "iteration": iteration, "winner": winner.pruner,
            "best": best.pruner, "winner_best": bool(best.winner),
            "winner_best_test": bool(winner.test_after >= group.test_after.max()),
            "gap_selection": 100 * (best.selection_after - winner.selection_after),
            "gap_test": 100 * (best.test_after - winner.test_after),
            "spearman": spearman, "pairs": len(pairs), "kept": kept, "ties": ties,
            "candidates": "; ".join(
                f"{int(r.rank_before)}. {r.pruner} {100 * r.selection_before:.2f} → "
                f"{100 * r.selection_after:.2f} ({100 * r.test_after:.2f})"
                for r in group.itertuples())})
    return pd.DataFrame(out)


def flag_value(flag_list: Sequence[str], name: str) -> Optional[str]:
    """The value of ``--name`` in ``flag_list`` (the last one given wins, as in absl)."""
    values = [f.split("=", 1)[1] for f in flag_list if f.startswith(f"--{name}=")]
    return values[-1] if values else None


def cli_run(work: str, seed: int) -> Optional[pd.DataFrame]:
    """The students table of the CLI's run of the default recipe (the ``taylor mean``
    row) of ``seed`` in ``work``, when it is there and finished."""
    out = os.path.join(work, "runs", f"{DEFAULT.replace(' ', '_')}_x{RATIO:g}_s{seed}")
    if not finished(out):
        return None
    students = pd.read_csv(os.path.join(out, "students.csv"))
    return students[students.iteration <= final_iteration(out)]


def tournament_section(work: str, data_dir: str, smoke: bool) -> str:
    """The sub-table "Tournament: ..." and its reading, computed from the runs."""
    results = tournament_runs(work, data_dir, smoke)
    rows = pd.DataFrame([{"seed": r["seed"], **row} for r in results for row in r["rows"]])
    table = per_iteration(rows)
    n, wins = len(table), int(table.winner_best.sum())
    wins_test = int(table.winner_best_test.sum())
    lost = table[~table.winner_best]
    n_val = results[0]["num_validation"]
    p = rows.selection_after.mean()
    stderr = 100 * np.sqrt(p * (1 - p) / n_val)
    rho = table.spearman.mean()
    kept, pairs, ties = int(table.kept.sum()), int(table.pairs.sum()), int(table.ties.sum())
    chain = np.mean([r["chain_seconds"] for r in results])
    extra = np.mean([r["extra_seconds"] for r in results])
    finals = [100 * r["final_test_accuracy"] for r in results]
    lines = ["### Tournament: is the ranked winner the candidate that distils best?", ""]
    if smoke:
        lines += ["**`--smoke` run: a check of the plumbing on a tiny slice with 1 epoch; "
                  "its figures mean nothing.**", ""]
    lines += [
        f"The default recipe (the `{DEFAULT}` row's flags: "
        f"`{' '.join(dict(VARIANTS)[DEFAULT])}`), seeds {', '.join(map(str, SEEDS))}, run "
        "through the Python library (`EPKD.step`, the same flags parsed into the same "
        "`RunConfig` and seeded as the CLI seeds a run); at every iteration every losing "
        "candidate is also distilled exactly as the winner is (`EPKD.distil`: a copy, the "
        "same teacher, temperature, epochs, data order and seed). The chain follows the "
        "ranked winner, as EPKD does. Per iteration, candidates in their rank before "
        "distillation (EPKD's weighted score): selection accuracy before → after "
        "distillation (test accuracy after), in %; the gaps are best-after-distillation "
        f"(on the selection split, `{flag_value(results[0]['flags'], 'validation_split')}`"
        f": {n_val:,} held-out training examples) minus the distilled winner, in points.", "",
        "| seed | iteration | T | candidates: selection before → after (test after) "
        "| winner | best after | winner best? | gap selection | gap test | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    temperatures = rows.groupby(["seed", "iteration"]).temperature.first()
    for r in table.itertuples():
        lines.append(
            f"| {r.seed} | {r.iteration} | {temperatures[(r.seed, r.iteration)]:g} | "
            f"{r.candidates} | {r.winner} | {r.best} | {'yes' if r.winner_best else '**no**'}"
            f" | {r.gap_selection:+.2f} | {r.gap_test:+.2f} | {r.spearman:.2f} |")
    lines += ["", "| measure | value |", "|---|---|",
              f"| ranked winner also best after distillation, selection split | "
              f"{wins} of {n} iterations |",
              f"| ranked winner also best after distillation, test split | "
              f"{wins_test} of {n} iterations |",
              f"| gap best-distilled - distilled winner, selection: mean / largest | "
              f"{table.gap_selection.mean():+.2f} / {table.gap_selection.max():+.2f} points |",
              f"| the same candidates' gap on test: mean / largest / smallest | "
              f"{table.gap_test.mean():+.2f} / {table.gap_test.max():+.2f} / "
              f"{table.gap_test.min():+.2f} points |",
              f"| Spearman, rank before vs rank after distillation (mean of iterations) | "
              f"{rho:.2f} |",
              f"| candidate pairs in the same order before and after | {kept} of {pairs}"
              f" ({ties} tied after) |",
              f"| binomial standard error of one selection accuracy ({n_val:,} examples) | "
              f"{stderr:.2f} points |",
              f"| final student of this chain, test (seeds {', '.join(map(str, SEEDS))}) | "
              f"{', '.join(f'{a:.2f}' for a in finals)} (mean {np.mean(finals):.2f}%) |",
              f"| seconds per seed: the chain / the extra distillations | "
              f"{chain:.0f} / {extra:.0f} |"]
    lines += ["", tournament_reading(table, lost, n, wins, wins_test, stderr, rho, kept,
                                     pairs, ties, chain, extra, results, work, smoke)]
    return "\n".join(lines)


def tournament_reading(table, lost, n, wins, wins_test, stderr, rho, kept, pairs, ties,
                       chain, extra, results, work, smoke) -> str:
    """One paragraph reading the tournament's figures (no conclusion fixed in advance)."""
    text = [f"Reading: the ranked winner was also the best candidate after distillation in "
            f"{wins} of {n} iterations on the selection split ({wins_test} of {n} on test)."]
    if len(lost):
        text.append(
            f"Where it was not, the best-distilled candidate beat it by "
            f"{lost.gap_selection.mean():.2f} points on the selection split on average "
            f"(largest {lost.gap_selection.max():.2f}), and those candidates differed from "
            f"the winner by {lost.gap_test.mean():+.2f} points on test on average "
            f"({lost.gap_test.min():+.2f} to {lost.gap_test.max():+.2f}).")
    gap = table.gap_selection.mean()
    text.append(
        f"Over all iterations the mean selection gap is {gap:.2f} points, "
        f"{'within' if gap <= stderr else 'above'} the binomial standard error of one "
        f"selection accuracy ({stderr:.2f} points), and the mean test gap "
        f"{table.gap_test.mean():+.2f} points.")
    verb = ("cannot be compared with" if np.isnan(rho) else "predicts" if rho >= 0.5 else
            "weakly predicts" if rho > 0 else "does not predict")
    text.append(
        f"The order before distillation {verb} the order after it: mean Spearman "
        f"{rho:.2f}, {kept} of {pairs} candidate pairs kept their order ({ties} tied after).")
    text.append(
        f"Distilling every candidate (to pick after distillation) cost {extra:.0f} s more "
        f"per seed on top of the chain's {chain:.0f} s ({100 * extra / chain:.0f}%); what such "
        "a pick would change in later iterations is not measured here, since the chain "
        "follows the ranked winner.")
    text.append(chain_vs_cli(results, work, smoke))
    return " ".join(text)


def chain_vs_cli(results: List[Dict], work: str, smoke: bool) -> str:
    """How the chain's final students compare with the CLI's runs of the same recipe."""
    if smoke:
        return "(`--smoke`: no CLI run of the recipe to compare the chain with.)"
    parts, same_winners = [], True
    for r in results:
        cli = cli_run(work, r["seed"])
        if cli is None:
            return (f"No finished CLI run of the `{DEFAULT}` row in {work} to compare the "
                    "chain's final students with.")
        winners = [row["pruner"] for row in r["rows"] if row["winner"]]
        same_winners &= winners == list(cli.pruner)
        parts.append((r["seed"], 100 * r["final_test_accuracy"],
                      100 * float(cli.test_accuracy.iloc[-1])))
    differences = [chain - cli for _, chain, cli in parts]
    text = ("The chain's final students score " + ", ".join(
        f"{chain:.2f}% (seed {seed}; CLI {cli:.2f}%)" for seed, chain, cli in parts)
        + f" on test against the CLI's `{DEFAULT}` row, with "
        + ("the same" if same_winners else "different") + " winners at every iteration")
    if max(abs(d) for d in differences) < 0.005 and same_winners:
        return text + ": the same chain."
    return (text + f" (largest difference {max(differences, key=abs):+.2f} points): the "
            "chain is seeded as the CLI seeds a run, but runs both seeds in one Python "
            "process rather than a fresh process per run, which can change TensorFlow's "
            "random draws and kernels.")


def write_tournament(body: str, path: Path) -> None:
    """Writes the tournament part alone between its own markers inside the section
    (adding the markers before the section's end when the section has none yet)."""
    text = path.read_text() if path.exists() else benchmarks_md.header(path)
    start, end = f"<!-- {TOURNAMENT}:start -->", f"<!-- {SECTION}:end -->"
    if start not in text and end in text:
        path.write_text(text.replace(end, f"\n{start}\n<!-- {TOURNAMENT}:end -->\n{end}"))
    replace_section(TOURNAMENT, body, path)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
