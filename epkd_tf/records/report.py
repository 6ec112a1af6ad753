"""``report.md`` and ``plots/*.png`` of a run, from its tables (``python -m epkd_tf.report
RUN_DIR`` writes them for any run directory: :mod:`epkd_tf.cli.report`).

Everything comes from the run's CSV files (only the stages ``progress.json`` records as
completed), so a report can be written for a finished or an interrupted run; every run
writes its own at the end. ``report.md`` holds the students, the candidates' ranking per
iteration, the Spearman correlations of the criteria with the oracle and the deployment
table, and links the plots:

* ``plots/pareto.png`` — test accuracy vs latency, parameters, MACs and size of every
  candidate, student and the teacher (the latency the run decided on:
  :func:`pareto_points`);
* ``plots/accuracy_vs_params.png`` — test accuracy vs nonzero parameters of every
  candidate (marker per pruner) and of each iteration's student (the line);
* ``plots/temperature.png`` — the distillation temperature per iteration;
* ``plots/criteria_correlation.png`` — global Spearman correlation of each criterion with
  the oracle per iteration (only when the oracle ran with another structured criterion);
* ``plots/size_latency.png`` — file size and TFLite latency per model and format
  (``deployment.csv``; ``students.csv`` when the run exported nothing).
"""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from epkd_tf.records.run_dir import RunDir
from epkd_tf.records.stages import FINAL
from epkd_tf.records.tables import SIDE_BY_SIDE_FORMATS

PLOTS = ("pareto", "accuracy_vs_params", "temperature", "criteria_correlation",
         "size_latency")
# Columns written with 4 decimals; other floats get 4 significant digits.
_FIXED = ("accuracy", "score", "spearman")


def markdown_table(frame: pd.DataFrame, columns: Optional[Sequence[str]] = None) -> List[str]:
    """``frame`` (its ``columns``) as the lines of a Markdown table: integers as they are,
    accuracies, scores and correlations with 4 decimals, other floats with 4 significant
    digits, missing values empty."""
    columns = list(frame.columns if columns is None else columns)

    def cell(column, value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            if any(key in column for key in _FIXED):
                return f"{value:.4f}"
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame[columns].itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(columns, row)) + " |")
    return lines


def completed_tables(run: RunDir, current: bool = False) -> Dict[str, pd.DataFrame]:
    """Every table of the run, without rows of stages that did not complete; ``current``:
    as they are now (the run writing its own report, whose last stage is being written)."""
    read = run.tables.read if current else run.tables.read_completed
    return {name: read(name).reset_index(drop=True)
            for name in ("teacher_history", "teacher", "candidates", "students", "final",
                         "criteria_correlation", "deployment", "timings")}


# -- plots --------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(run: RunDir, fig, name: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    path = run.plot_path(name)
    return run.write_bytes(os.path.relpath(path, run.root), buffer.getvalue())


def plot_accuracy_vs_params(run: RunDir, candidates, students) -> Optional[str]:
    if students.empty and candidates.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>px*"
    for k, (pruner, group) in enumerate(candidates.groupby("pruner", sort=False)):
        ax.scatter(group.nonzero_params, 100 * group.test_accuracy, marker=markers[k % 10],
                   alpha=0.6, label=f"candidate: {pruner}")
    if not students.empty:
        ax.plot(students.nonzero_params, 100 * students.test_accuracy, "k-", marker="*",
                markersize=10, label="student (winner, distilled)")
        for row in students.itertuples():
            ax.annotate(str(row.iteration), (row.nonzero_params, 100 * row.test_accuracy),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.invert_xaxis()
    ax.set_xlabel("nonzero parameters (fewer →)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy vs nonzero parameters per iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(run, fig, "accuracy_vs_params")


def plot_temperature(run: RunDir, students) -> Optional[str]:
    if students.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(students.iteration, students.temperature, "o-")
    _integer_ticks(ax)
    ax.set_xlabel("iteration")
    ax.set_ylabel("temperature T")
    ax.set_title("Distillation temperature schedule")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(run, fig, "temperature")


def plot_correlation(run: RunDir, correlation) -> Optional[str]:
    overall = correlation[correlation.scope == "global"]
    if overall.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for criterion, group in overall.groupby("criterion", sort=False):
        ax.plot(group.iteration, group.spearman, "o-", label=criterion)
    ax.axhline(0, color="k", lw=0.8)
    _integer_ticks(ax)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("iteration")
    ax.set_ylabel("Spearman ρ with the oracle")
    ax.set_title("Agreement of each criterion's ranking with the oracle (global)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(run, fig, "criteria_correlation")


def plot_size_latency(run: RunDir, deployment, students) -> Optional[str]:
    plt = _pyplot()
    fig, (size_ax, latency_ax) = plt.subplots(1, 2, figsize=(11, 4))
    if not deployment.empty:
        for k, (fmt, group) in enumerate(deployment.groupby("format", sort=False)):
            size_ax.plot(group.iteration, group.bytes / 1e6, "o-", color=f"C{k}", label=fmt)
            if group.latency_ms_median.notna().any():
                latency_ax.plot(group.iteration, group.latency_ms_median, "o-",
                                color=f"C{k}", label=fmt)
        xlabel = "model (0 = teacher, k = student of iteration k)"
    elif not students.empty:
        size_ax.plot(students.iteration, students.size_mb, "o-", label="tflite")
        size_ax.plot(students.iteration, students.gzip_mb, "o-", label="tflite, gzip")
        latency_ax.plot(students.iteration, students.latency_ms, "o-", label="tflite")
        xlabel = "iteration"
    else:
        plt.close(fig)
        return None
    size_ax.set_title("File size")
    size_ax.set_ylabel("MB")
    latency_ax.set_title("Latency, batch 1 (median)")
    latency_ax.set_ylabel("ms")
    for ax in (size_ax, latency_ax):
        _integer_ticks(ax)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(run, fig, "size_latency")


# -- the report ---------------------------------------------------------------------------
def _ratio(before: float, after: float, fewer: str) -> str:
    if not (np.isfinite(before) and np.isfinite(after)) or after <= 0:
        return "-"
    return f"{before / after:.2f}x {fewer}"


def _fmt(value, kind: str) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return {"count": f"{value:,.0f}", "mb": f"{value:.4f} MB", "ms": f"{value:.4f} ms",
            "acc": f"{100 * value:.2f}%"}[kind]


def _deployed(deployment: pd.DataFrame, model: str, fmt: str, column: str) -> float:
    rows = deployment[(deployment["model"] == model) & (deployment["format"] == fmt)]
    return float(rows[column].iloc[0]) if len(rows) else float("nan")


# How the headline names each export format of the final model.
FORMAT_LABELS = {"saved_model": "SavedModel", "tflite": "TFLite float32",
                 "tflite_sparse": "TFLite sparse", "tflite_int8_dynamic":
                 "TFLite int8 (dynamic range)", "tflite_int8": "TFLite int8",
                 "keras3": "Keras 3"}


def final_files(run: RunDir, current: bool = False) -> List[Tuple[str, str]]:
    """The files of the run's final model that exist, as (what it is, path relative to
    the run directory): its exports under the name ``final`` (``serving/final/1``,
    ``tflite/final*.tflite``, ``keras3/final.keras``: only the ``--export_formats``
    written), else, when the run exported none, the tf_keras checkpoint it was saved as.

    Args:
        run: the run directory.
        current: read the tables as they are now (see :func:`completed_tables`).

    Returns:
        The list, empty until the run has chosen its final model.
    """
    read = run.tables.read if current else run.tables.read_completed
    chosen = read("final")
    if chosen.empty:
        return []
    deployment = read("deployment")
    rows = deployment[deployment["model"] == "final"]
    files = [(FORMAT_LABELS.get(row.format, row.format), str(row.path))
             for row in rows.itertuples() if os.path.exists(run.path(str(row.path)))]
    if not files:
        k = int(chosen.iloc[-1]["iteration"])
        checkpoint = run.teacher_checkpoint() if k == 0 else run.student_checkpoint(k)
        if os.path.exists(checkpoint):
            files = [("tf_keras checkpoint (no --export_formats)",
                      os.path.relpath(checkpoint, run.root))]
    return files


def console_path(run: RunDir, relative: str) -> str:
    """A run's file as the console names it: relative to the working directory when it
    lies inside it (what a user types next), else absolute.

    Args:
        run: the run directory.
        relative: the file's path in it (``""``: the directory itself).

    Returns:
        The path to print.
    """
    full = os.path.normpath(os.path.join(run.root, relative))
    shown = os.path.relpath(full)
    return full if shown == os.pardir or shown.startswith(os.pardir + os.sep) else shown


def headline(run: RunDir, current: bool = False, files: bool = True) -> List[str]:
    """The result first, as Markdown lines: teacher → final student (params, MACs, float
    and int8 TFLite size and latency, accuracy change, the winner of each iteration),
    then the final model's files (:func:`final_files`, paths in the run directory).
    When the final model is the teacher itself (no student within the stop rules) it
    says so and shows the teacher's figures alone: no model is compared with itself.

    Args:
        run: the run directory.
        current: read the tables as they are now (see :func:`completed_tables`).
        files: list the final model's files (off for a run directory that is removed
            afterwards).

    Returns:
        The lines; empty until the run has chosen its final student.
    """
    t = completed_tables(run, current)
    teacher, students = t["teacher"], t["students"]
    if teacher.empty or t["final"].empty:
        return []
    k = int(t["final"].iloc[-1]["iteration"])
    if k and k not in set(students["iteration"].astype(int)):
        return []       # chosen among stages that the progress no longer counts as done
    final = teacher.iloc[0] if k == 0 else students.set_index("iteration").loc[k]
    source = "teacher" if k == 0 else f"student_{k}"
    deployment = t["deployment"]
    teach = teacher.iloc[0]
    selection = "validation" if np.isfinite(float(teach.get("validation_accuracy", np.nan))) \
        else "test"
    rows = [("nonzero params", teach.nonzero_params, final.nonzero_params, "count", "fewer"),
            ("MACs", teach.macs, final.macs, "count", "fewer")]
    chosen = t["final"].iloc[-1]
    side_by_side = False
    for fmt, label in (("tflite", "float32 TFLite"), ("tflite_int8", "int8 TFLite")):
        # The final student's files are its exports under the name "final" (runs before
        # them: its own); the teacher's exist with --export_every_student alone.
        size_f, lat_f = (_deployed(deployment, FINAL, fmt, column)
                         for column in ("bytes", "latency_ms_median"))
        if not np.isfinite(size_f):
            size_f, lat_f = (_deployed(deployment, source, fmt, column)
                             for column in ("bytes", "latency_ms_median"))
        size_f /= 1e6
        size_t = _deployed(deployment, "teacher", fmt, "bytes") / 1e6
        lat_t = _deployed(deployment, "teacher", fmt, "latency_ms_median")
        if k == 0 and not np.isfinite(size_t):
            size_t, lat_t = size_f, lat_f               # the teacher is the final model
        if fmt == "tflite":     # teacher.csv and students.csv measured float TFLite
            if not np.isfinite(size_t):
                size_t, lat_t = teach.size_mb, teach.latency_ms
            if not np.isfinite(size_f):
                size_f, lat_f = final.size_mb, final.latency_ms
        if not np.isfinite(size_f):
            continue                                       # that format was not exported
        # Prefer the end-of-run timing of both files side by side (runs before it had
        # none); the teacher alone is not timed against a copy of itself.
        prefix = SIDE_BY_SIDE_FORMATS.get(fmt)
        timed = [float(chosen.get(f"{who}{prefix}_latency_ms", np.nan))
                 for who in ("teacher_", "")] if prefix else [np.nan, np.nan]
        if k and all(np.isfinite(timed)):
            (lat_t, lat_f), side_by_side = timed, True
        rows.append((f"{label} size", size_t, size_f, "mb", "smaller"))
        rows.append((f"{label} latency", lat_t, lat_f, "ms", "faster"))
    winners = ", ".join(f"{int(r.iteration)} {r.pruner}" for r in students.itertuples())
    about = f"winners per iteration: {winners or 'none'}; stopped: {chosen['stopped']}"
    accuracies = [(f"{split} accuracy", float(teach[f"{split}_accuracy"]),
                   float(final[f"{split}_accuracy"])) for split in dict.fromkeys((selection,
                                                                                 "test"))]
    if k == 0:
        lines = [f"**The final model is the teacher itself**: no student is within the stop "
                 f"rules ({about}):", "", "| | teacher (the final model) |", "|---|---|"]
        lines += [f"| {label} | {_fmt(before, kind)} |" for label, before, _, kind, _ in rows]
        lines += [f"| {label} | {_fmt(before, 'acc')} |" for label, before, _ in accuracies]
    else:
        lines = [f"**Teacher → final student** (iteration {k}'s student; {about}):", "",
                 "| | teacher | final student | change |", "|---|---|---|---|"]
        for label, before, after, kind, word in rows:
            lines.append(f"| {label} | {_fmt(before, kind)} | {_fmt(after, kind)} | "
                         f"{_ratio(float(before), float(after), word)} |")
        for label, before, after in accuracies:
            lines.append(f"| {label} | {_fmt(before, 'acc')} | {_fmt(after, 'acc')} | "
                         f"{100 * (after - before):+.2f} points |")
    if side_by_side:
        lines += ["", "Latency: batch 1, median; teacher and final student timed side by "
                      "side in interleaved rounds at the end of the run."]
    made = final_files(run, current) if files else []
    if made:
        lines += ["", f"Files of the {'final model' if k == 0 else 'final student'} "
                      f"(in the run directory):", ""]
        lines += [f"* {label}: `{path}`" for label, path in made]
    return lines


def headline_text(run: RunDir) -> List[str]:
    """:func:`headline` as plain, aligned console lines (no Markdown), the final model's
    files last, with paths from the working directory (absolute outside it)."""
    lines = headline(run, files=False)
    if not lines:
        return []
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in lines[2:] if line.startswith("|") and not line.startswith("|---")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = [lines[0].replace("**", "")]
    for row in rows:
        text.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    text += [line for line in lines[2:] if line and not line.startswith("|")]
    made = final_files(run)
    if made:
        final = int(run.tables.read_completed("final").iloc[-1]["iteration"])
        text.append(f"Files of the {'final model' if final == 0 else 'final student'}:")
        width = max(len(label) for label, _ in made)
        text += [f"  {label.ljust(width)}  {console_path(run, path)}" for label, path in made]
    return text


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower cost, higher
    accuracy), by increasing cost."""
    order = np.lexsort((-accuracy, cost))
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.array(front, dtype=np.int64)


def pareto_points(teacher: pd.DataFrame, candidates: pd.DataFrame, students: pd.DataFrame,
                  budget: str = "params", latency_format: str = "tflite"
                  ) -> Tuple[pd.DataFrame, List[Tuple[str, str]]]:
    """What ``plots/pareto.png`` draws: every made candidate, student and the teacher
    (column ``kind``) and its panels as (column, axis label).

    The latency panel shows the latency the run decided on: with ``--budget=latency``
    the ``cost`` column (each model timed side by side with the teacher in
    ``latency_format``, scaled by the teacher's latency: what the targets, the stop rules
    and the final choice read); otherwise no decision read a latency, and the panel
    shows ``latency_ms`` (each model's float TFLite file timed alone), saying so.

    Args:
        teacher, candidates, students: the run's ``teacher.csv``, ``candidates.csv`` and
            ``students.csv`` rows.
        budget: the run's ``--budget`` measure.
        latency_format: its ``--latency_format`` (``tflite`` or ``tflite_int8``).

    Returns:
        (the points, the panels).
    """
    made = candidates[candidates["skipped"].fillna("") == ""] if "skipped" in candidates \
        else candidates
    points = pd.concat([made.assign(kind="candidate"), students.assign(kind="student"),
                        teacher.assign(kind="teacher")], ignore_index=True)
    if budget == "latency":
        kind = "int8" if latency_format == "tflite_int8" else "float"
        latency = ("cost", f"{kind} TFLite latency (ms, batch 1; timed side by side with "
                           f"the teacher: the --budget the run decided on)")
    else:
        latency = ("latency_ms", "float TFLite latency (ms, batch 1; each model timed alone)")
    return points, [latency, ("nonzero_params", "nonzero parameters"),
                    ("macs", "MACs per example"), ("size_mb", "float TFLite size (MB)")]


def plot_pareto(run: RunDir, teacher, candidates, students, budget: str = "params",
                latency_format: str = "tflite") -> Optional[str]:
    """Test accuracy vs latency, parameters, MACs and file size of every candidate,
    student and the teacher (:func:`pareto_points`); the frontier of the best trade-offs
    drawn."""
    if teacher.empty:
        return None
    plt = _pyplot()
    points, panels = pareto_points(teacher, candidates, students, budget, latency_format)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (column, label) in zip(axes.ravel(), panels):
        if column not in points or points[column].isna().all():
            ax.set_visible(False)
            continue
        for kind, style in (("candidate", dict(c="0.6", marker="o", s=18)),
                            ("student", dict(c="k", marker="*", s=60)),
                            ("teacher", dict(c="tab:red", marker="P", s=120))):
            group = points[points.kind == kind]
            ax.scatter(group[column], 100 * group["test_accuracy"], label=kind, **style)
        valid = points.dropna(subset=[column, "test_accuracy"])
        front = pareto_front(valid[column].to_numpy(float), valid["test_accuracy"].to_numpy(float))
        ax.plot(valid[column].to_numpy()[front], 100 * valid["test_accuracy"].to_numpy()[front],
                "b--", lw=1, label="frontier")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Accuracy vs cost of every candidate and student (teacher marked)")
    return _save(run, fig, "pareto")


def _image(run: RunDir, path: Optional[str], alt: str) -> List[str]:
    if path is None:
        return []
    return [f"![{alt}]({os.path.relpath(path, run.root)})", ""]


def time_per_phase(timings: pd.DataFrame) -> List[str]:
    """Markdown lines: seconds and share of every ``timings.csv`` phase, largest first."""
    if timings.empty:
        return ["No stage has completed yet.", ""]
    phases = timings.groupby("phase").seconds.sum().sort_values(ascending=False)
    total = phases.sum()
    frame = pd.DataFrame({"phase": phases.index, "seconds": phases.round(1).to_numpy(),
                          "share_%": (100 * phases / total).round(1).to_numpy()})
    # The largest peak of each phase (a run written before peaks were measured has none).
    for column in ("peak_rss_mb", "peak_device_mb"):
        if column in timings and timings[column].notna().any():
            peaks = timings.groupby("phase")[column].max().reindex(phases.index)
            frame[column] = peaks.round(0).to_numpy()
    return ([f"Seconds and peak memory (MB) per phase of the completed stages, "
             f"{total:.0f} s in all (`timings.csv` has them per iteration and pruner; "
             f"`other` is the time between phases).", ""] + markdown_table(frame) + [""])


def selection_statement(flags_text: str, candidates: pd.DataFrame) -> List[str]:
    """On which split the candidates were ranked, and what that means for the test
    accuracies reported."""
    split = [line.split("=", 1)[1] for line in flags_text.splitlines()
             if line.startswith("--validation_split=")]
    validated = "validation_accuracy" in candidates and \
        candidates["validation_accuracy"].notna().any()
    if split or validated:
        where = f"`--validation_split={split[0]}`" if split else "a validation split"
        return [f"Candidates were ranked on the held-out {where}: no test example "
                "influenced any choice, so the test accuracies below are unbiased "
                "estimates."]
    return ["Candidates were ranked on the **test split** (the seed's definition, "
            "`--rank_weights` train,test): the test accuracies of the selected students are "
            "therefore **optimistic**. Set `--validation_split` (e.g. 0.1) to select on "
            "held-out training examples instead."]


def _flag(flags_text: str, name: str) -> Optional[str]:
    """The value of ``--name`` in a run's flags.txt, or None."""
    found = [line.split("=", 1)[1] for line in flags_text.splitlines()
             if line.startswith(f"--{name}=")]
    return found[0] if found else None


def write_report(run: RunDir, check_files: bool = False, budget: Optional[str] = None,
                 latency_format: Optional[str] = None) -> str:
    """Writes ``report.md`` and its plots into ``run`` (atomically); returns its path.
    ``check_files``: list the files that are not what their stage wrote (``python -m
    epkd_tf.report`` does; a run writing its own report wrote those files itself, and
    reads its tables as they are: their last stage is being completed). ``budget`` and
    ``latency_format``: the run's ``--budget`` and ``--latency_format`` (default: as
    flags.txt gives them, else the settings' defaults), for the plot of what the run
    decided on (:func:`pareto_points`)."""
    from epkd_tf.config import BudgetConfig
    from epkd_tf.settings import default_of
    t = completed_tables(run, current=not check_files)
    state = run.stages.progress()
    students, candidates = t["students"], t["candidates"]
    flags_text = (run.read_flags() or "").strip()
    budget = budget or _flag(flags_text, "budget") or default_of(BudgetConfig, "budget")
    latency_format = (latency_format or _flag(flags_text, "latency_format")
                      or default_of(BudgetConfig, "latency_format"))
    planned = [line.split("=", 1)[1] for line in flags_text.splitlines()
               if line.startswith("--iterations=")]
    lines = ["# EPKD run report", ""]
    top = headline(run, current=not check_files)
    if top:
        lines += top + [""]
    lines += [f"Run directory: `{run.root}` — {len(students)}"
              f"{' of ' + planned[0] if planned else ''} iterations completed.", ""]
    lines += selection_statement(flags_text, candidates) + [""]
    if flags_text:
        replay = (f"python -m epkd_tf.main --flagfile={run.flags_file} "
                  f"--output_dir={run.root}-replay")
        lines += [f"Replay this run (the same flags, into a new directory): `{replay}`", "",
                  "Its flags (`flags.txt`):", "", "```", flags_text, "```", ""]
    history = t["teacher_history"]
    lines += ["## Teacher", ""]
    if not state.get("teacher_done"):
        lines += ["The teacher has not completed yet.", ""]
    else:
        if history.empty:
            lines += ["Not trained by this run (`--teacher_path`, or `--teacher_epochs=0`).",
                      ""]
        else:
            lines += markdown_table(history) + [""]
        if not t["teacher"].empty:
            lines += ["### The teacher as measured (`teacher.csv`)", ""]
            measured = t["teacher"].dropna(axis=1, how="all")
            lines += markdown_table(measured, [c for c in measured.columns
                                               if c not in ("iteration", "goal_met")]) + [""]

    lines += ["## Students", "",
              "One row per iteration: the winning candidate after distillation "
              "(`students.csv`; `kept_previous`: the distillation hit a NaN/Inf loss and "
              "the previous student was kept; `kept_candidate`: distillation left the "
              "winner less accurate on the selection split, so the winner went on "
              "undistilled).", ""]
    if students.empty:
        lines += ["No iteration has completed yet.", ""]
    else:
        lines += markdown_table(students) + [""]
    lines += _image(run, plot_pareto(run, t["teacher"], candidates, students, budget,
                                     latency_format),
                    "accuracy vs latency, parameters, MACs and size")
    lines += _image(run, plot_accuracy_vs_params(run, candidates, students),
                    "test accuracy vs nonzero parameters")

    lines += ["## Temperature schedule", ""]
    lines += _image(run, plot_temperature(run, students), "temperature per iteration")

    validated = "validation_accuracy" in candidates and \
        candidates["validation_accuracy"].notna().any()
    selection = "validation" if validated else "test"
    lines += ["## Candidate ranking per iteration", "",
              f"Score = (w_train·train_sample_accuracy + w_sel·{selection}_accuracy) / "
              "(w_train + w_sel) (`--rank_weights`); `train_sample_accuracy` is measured on "
              "the `--eval_examples` training examples, the split accuracies on at most "
              "`--selection_examples` seeded examples of each split; rank 1 is distilled "
              "(`candidates.csv`).", ""]
    columns = ["rank", "pruner", "nonzero_params", "total_params", "train_sample_accuracy"]
    columns += ["validation_accuracy"] if validated else []
    columns += ["test_accuracy", "weighted_score", "size_mb", "latency_ms"]
    for iteration, group in candidates.groupby("iteration"):
        lines += [f"### Iteration {int(iteration)}", ""]
        lines += markdown_table(group.sort_values("rank"), columns) + [""]

    lines += ["## Spearman correlation with the oracle", ""]
    correlation = t["criteria_correlation"]
    overall = correlation[correlation.scope == "global"]
    if overall.empty:
        lines += ["None recorded (it needs the `oracle` and another structured criterion "
                  "among `--pruners`).", ""]
    else:
        lines += ["Over all units ranked together; per-layer values (`layer:<name>`) are in "
                  "`criteria_correlation.csv`.", ""]
        lines += markdown_table(overall, ["iteration", "criterion", "scope", "spearman"]) + [""]
        lines += _image(run, plot_correlation(run, correlation), "Spearman correlation")

    lines += ["## Size and latency", ""]
    deployment = t["deployment"]
    if deployment.empty:
        lines += ["No deployment formats exported (`--export_formats`); the float TFLite "
                  "size and latency of each student are in the students table.", ""]
    else:
        lines += ["Every exported model and format (`deployment.csv`; latency: median and "
                  "90th percentile of batch-1 TFLite runs).", ""]
        lines += markdown_table(deployment, ["model", "iteration", "format", "bytes",
                                             "gzip_bytes", "test_accuracy",
                                             "latency_ms_median", "latency_ms_p90"]) + [""]
    lines += _image(run, plot_size_latency(run, deployment, students), "size and latency")

    lines += ["## Where the time went", ""]
    lines += time_per_phase(t["timings"])

    damaged = [d for d in run.stages.damages() if not d["table"]] if check_files else []
    if damaged:
        lines += ["## Damaged files", "",
                  "These files are not what their stage wrote (checked against "
                  "`progress.json`):", ""]
        lines += [f"* `{d['path']}` ({d['problem']}; stage: {d['name']})" for d in damaged]
        lines += [""]

    run.write_text(os.path.relpath(run.report_file, run.root), "\n".join(lines))
    return run.report_file
