"""Benchmark: how often ``--max_accuracy_drop`` passes or stops a student by noise,
written to docs/benchmarks/stop_rule_noise.md.

    python benchmarks/stop_rule_noise.py [--draws=200000]

A binomial simulation (NumPy, no model): a teacher of true accuracy p and a student
truly ``loss`` points below it are both measured on the same n-example selection split
with independent errors (the cautious case: a distilled student errs on many of the
teacher's examples, which makes the difference less noisy); the rule ``--max_accuracy_drop
=0.5`` is judged three ways on the measured loss: the point estimate (epkd_tf's rule), a
lenient bound (pass unless the loss minus 1.645 standard errors exceeds the drop) and a
strict bound (pass only if the loss plus 1.645 standard errors is within it), the standard
error being epkd_tf's ``accuracy_difference_se``. Reported: how often a student truly 0.25
points worse (within the rule) fails it, and how often one truly 0.75 points worse (beyond
it) passes, for n = 1,200 and 6,000 at p = 0.90 and 0.99; and the start-up warning's
standard error.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks_md import page, replace_section  # noqa: E402
from epkd_tf.budget.stop import accuracy_difference_se  # noqa: E402

SECTION = "stop_rule_noise"
DROP = 0.5
Z = 1.645                      # one-sided 95%
SPLITS = (1200, 6000)
ACCURACIES = (0.90, 0.99)
LOSSES = (0.25, 0.75)          # truly within the rule, truly beyond it


def pass_rates(p: float, n: int, loss: float, draws: int, seed: int = 0) -> dict:
    """How often each way of judging passes a student truly ``loss`` points below a teacher
    of accuracy ``p``, both measured on ``n`` examples (independent binomial errors)."""
    rng = np.random.default_rng(seed)
    teacher = rng.binomial(n, p, draws) / n
    student = rng.binomial(n, p - loss / 100, draws) / n
    lost = 100 * (teacher - student)
    se = accuracy_difference_se(p, n)
    return {"point": float(np.mean(lost <= DROP + 1e-9)),
            "lenient": float(np.mean(lost - Z * se <= DROP + 1e-9)),
            "strict": float(np.mean(lost + Z * se <= DROP + 1e-9))}


def table(draws: int) -> list:
    """The page's Markdown rows: per split size and accuracy, the standard error and the
    wrong decisions of each way of judging."""
    lines = ["| n | p | SE of the difference (points) | one example (points) | "
             "0.25 worse fails: point estimate | lenient bound | strict bound | "
             "0.75 worse passes: point estimate | lenient bound | strict bound |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in SPLITS:
        for p in ACCURACIES:
            good = pass_rates(p, n, LOSSES[0], draws)
            bad = pass_rates(p, n, LOSSES[1], draws)
            cells = [f"{n:,}", f"{p:.2f}", f"{accuracy_difference_se(p, n):.2f}",
                     f"{100 / n:.3f}"]
            cells += [f"{100 * (1 - good[k]):.0f}%" for k in ("point", "lenient", "strict")]
            cells += [f"{100 * bad[k]:.0f}%" for k in ("point", "lenient", "strict")]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200_000)
    parser.add_argument("--page", default=None, help="write this page instead")
    args = parser.parse_args()
    today = datetime.date.today().isoformat()
    lines = [f"## `--max_accuracy_drop={DROP:g}` judged on a noisy split", "",
             f"Measured {today}: {args.draws:,} binomial draws per cell (seed 0), NumPy "
             "only. A student truly 0.25 points below the teacher should pass the rule, one "
             "truly 0.75 points below should not; the table gives how often each is judged "
             f"wrongly. Lenient bound: pass unless loss - {Z} SE > {DROP:g}; strict bound: "
             f"pass only if loss + {Z} SE <= {DROP:g}. Independent errors (the cautious "
             "case; a distilled student shares many of the teacher's errors).", ""]
    lines += table(args.draws)
    replace_section(SECTION, "\n".join(lines), Path(args.page) if args.page else page(__file__))


if __name__ == "__main__":
    main()
