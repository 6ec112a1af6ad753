"""``study.md`` and the study's plots, written from the study directory's files alone
(so they can be regenerated for a finished or interrupted study)."""
from __future__ import annotations

import io
import os
from typing import List

import numpy as np
import pandas as pd

from epkd_tf.study.layout import StudyDir, cell_name

DISTILL, PRUNE_DISTILL = "distill", "prune_distill"


def _pct(x: float) -> str:
    return "" if pd.isna(x) else f"{100 * x:.2f}"


def _mean_spread(values: pd.Series) -> str:
    """``mean ± half the range`` in percent over the seeds of a cell."""
    if values.empty:
        return ""
    if len(values) == 1:
        return _pct(values.iloc[0])
    half = (values.max() - values.min()) / 2
    return f"{100 * values.mean():.2f} ± {100 * half:.2f}"


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def accuracy_table(study: pd.DataFrame, column: str = "test_accuracy") -> List[str]:
    """Methods x fractions removed: mean ± half-range over seeds (percent)."""
    fractions = sorted(study.fraction_removed.unique())
    rows = []
    for method in study.method.unique():
        cells = study[study.method == method]
        rows.append([method] + [_mean_spread(cells[np.isclose(cells.fraction_removed, f)][column])
                                for f in fractions])
    params = [f"{int(study[np.isclose(study.fraction_removed, f)].nonzero_params.median()):,}"
              for f in fractions]
    rows.append(["*nonzero params*"] + params)
    return _table(["method"] + [f"{100 * f:g}% removed" for f in fractions], rows)


def _pair(comparisons: pd.DataFrame, fraction: float, a: str, b: str):
    hit = comparisons[np.isclose(comparisons.fraction_removed, fraction)
                      & (((comparisons.model_a == a) & (comparisons.model_b == b))
                         | ((comparisons.model_a == b) & (comparisons.model_b == a)))]
    return hit.iloc[0] if len(hit) else None


def side_by_side(study: pd.DataFrame, comparisons: pd.DataFrame, other: str) -> List[str]:
    """Distillation vs ``other`` (seed-matched pairs, mean over seeds) and two distillation
    models (different seeds), per fraction: accuracies, examples classified differently
    and L2 distance of the outputs."""
    seeds = sorted(study.seed.unique())
    rows = []
    for f in sorted(study.fraction_removed.unique()):
        at = study[np.isclose(study.fraction_removed, f)]
        acc = {m: at[at.method == m].test_accuracy.mean() for m in (DISTILL, other)}
        mixed = [_pair(comparisons, f, cell_name(DISTILL, f, s), cell_name(other, f, s))
                 for s in seeds]
        mixed = [p for p in mixed if p is not None]
        twin = (_pair(comparisons, f, cell_name(DISTILL, f, seeds[0]),
                      cell_name(DISTILL, f, seeds[1])) if len(seeds) > 1 else None)
        rows.append([f"{100 * f:g}%", _pct(acc[DISTILL]), _pct(acc[other]),
                     f"{np.mean([p.n_differ for p in mixed]):.0f}" if mixed else "",
                     f"{np.mean([p.l2_distance for p in mixed]):.2f}" if mixed else "",
                     f"{twin.n_differ:.0f}" if twin is not None else "",
                     f"{twin.l2_distance:.2f}" if twin is not None else ""])
    return _table(["removed", "distill acc %", f"{other} acc %",
                   f"distill vs {other}: n differ", f"distill vs {other}: L2",
                   "two distill models: n differ", "two distill models: L2"], rows)


def write_plots(d: StudyDir, study: pd.DataFrame, max_examples: int = 8) -> List[str]:
    """accuracy_vs_fraction.png and misclassified.png; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in study.method.unique():
        g = study[study.method == method].groupby("fraction_removed").test_accuracy
        x = g.mean().index.to_numpy()
        ax.plot(100 * x, 100 * g.mean().to_numpy(), marker="o", label=method)
        ax.fill_between(100 * x, 100 * g.min().to_numpy(), 100 * g.max().to_numpy(),
                        alpha=0.2)
    history = d.tables.read("teacher_history")
    if len(history):
        ax.axhline(100 * history.test_accuracy.iloc[-1], color="k", ls="--", lw=1,
                   label="teacher")
    ax.set_xlabel("parameters removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy vs compression (band: min-max over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, d, "accuracy_vs_fraction"))
    plt.close(fig)

    images = _test_images(d)
    if images:
        fraction = study.fraction_removed.max()
        seed = study.seed.min()
        methods = list(study.method.unique())
        fig, axes = plt.subplots(len(methods), max_examples,
                                 figsize=(1.2 * max_examples, 1.4 * len(methods)),
                                 squeeze=False)
        for row, method in enumerate(methods):
            path = d.cell_probabilities(method, fraction, seed)
            predicted = np.load(path).argmax(1) if os.path.exists(path) else None
            wrong = [i for i in sorted(images) if predicted is not None
                     and predicted[i] != images[i][1]][:max_examples]
            if not wrong:
                axes[row][max_examples // 2].text(0.5, 0.5, "none misclassified",
                                                  ha="center", va="center", fontsize=8)
            for col in range(max_examples):
                axis = axes[row][col]
                axis.axis("off")
                if col < len(wrong):
                    image, label = images[wrong[col]]
                    gray = image.ndim == 2 or image.shape[-1] == 1
                    axis.imshow(image.reshape(image.shape[:2]) if gray else image,
                                cmap="gray" if gray else None)
                    axis.set_title(f"{label}→{predicted[wrong[col]]}", fontsize=7)
            axes[row][0].text(-0.15, 0.5, method, transform=axes[row][0].transAxes,
                              ha="right", va="center", fontsize=8)
        fig.suptitle(f"First misclassified test examples at {100 * fraction:g}% removed "
                     f"(seed {seed}; label→prediction)", fontsize=9)
        paths.append(_save(fig, d, "misclassified"))
        plt.close(fig)
    return paths


def _save(fig, d: StudyDir, name: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return d.write_bytes(os.path.relpath(d.plot_path(name), d.root), buffer.getvalue())


def _test_images(d: StudyDir):
    """{test index: (image, label)} of the examples saved for the grid, or None."""
    path = d.test_images()
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {int(i): (x, int(y)) for i, x, y in zip(f["index"], f["x"], f["y"])}


def write_report(d: StudyDir) -> str:
    """Writes study.md (and the plots) from study.csv / comparisons.csv; returns its path."""
    study, comparisons = d.tables.read("study"), d.tables.read("comparisons")
    history = d.tables.read("teacher_history")
    lines = ["# Compression study", ""]
    flags_text = d.read_flags()
    if flags_text is not None:
        flags_text = flags_text.strip()
        lines += ["Flags:", "", "```", flags_text, "```", ""]
    if len(history):
        lines += [f"Teacher test accuracy: {_pct(history.test_accuracy.iloc[-1])}% after "
                  f"{len(history)} epochs.", ""]
    if study.empty:
        lines += ["No cell has finished yet."]
    else:
        seeds = study.seed.nunique()
        lines += ["## Test accuracy (%) by method and fraction of parameters removed", "",
                  f"Mean ± half the range over {seeds} seed(s).", ""]
        lines += accuracy_table(study) + [""]
        lines += ["## Agreement with the teacher (%)", "",
                  "Test examples a model classifies like the teacher.", ""]
        lines += accuracy_table(study, "agreement_with_teacher") + [""]
        lines += ["## Train accuracy (%)", "", "On the training labels the models saw "
                  "(with --label_noise: the replaced ones).", ""]
        lines += accuracy_table(study, "train_accuracy") + [""]
        methods = set(study.method)
        for other in (PRUNE_DISTILL, "epkd"):
            if {DISTILL, other} <= methods and not comparisons.empty:
                lines += [f"## Distillation vs pruning+distillation ({other}) and two "
                          "distillation models", "",
                          "n differ: test examples the two models classify differently; "
                          "L2: ||P_a - P_b||_F of their softmax outputs over the test set "
                          "(docs/study.md). Pairs of the same seed, mean "
                          "over seeds; the two distillation models differ only in seed.", ""]
                lines += side_by_side(study, comparisons, other) + [""]
        plots = write_plots(d, study)
        lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.relpath(p, d.root)})"
                                     for p in plots] + [""]
    d.write_text("study.md", "\n".join(lines) + "\n")
    return d.path("study.md")
