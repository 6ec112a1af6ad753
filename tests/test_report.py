"""report.md and plots/: written by every run and by ``python -m epkd_tf.report RUN_DIR``."""
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from cli_helpers import error_lines, run_subprocess
from epkd_tf.cli import report as report_command
from epkd_tf.records import report
from epkd_tf.records import TABLES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sections(markdown: str) -> dict:
    """{heading: [table rows as {column: cell}]} for every Markdown table of the report."""
    tables, heading, header = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("# ").strip(), None
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                tables[heading] = []
            else:
                tables[heading].append(dict(zip(header, cells)))
        elif not line.startswith("|"):
            header = None
    return tables


def assert_rows_match(rows, frame: pd.DataFrame, columns=None):
    """The Markdown rows show ``frame``'s values (as report.markdown_table rounds them)."""
    columns = list(frame.columns if columns is None else columns)
    assert len(rows) == len(frame)
    for row, (_, expected) in zip(rows, frame.iterrows()):
        assert list(row) == columns
        for column in columns:
            value, cell = expected[column], row[column]
            if isinstance(value, (bool, np.bool_)):
                assert cell == ("yes" if value else "no"), column
            elif pd.isna(value):
                assert cell == "", column
            elif isinstance(value, (int, np.integer)):
                assert int(cell) == value, column
            elif isinstance(value, (float, np.floating)):
                assert float(cell) == pytest.approx(value, rel=5e-4, abs=5e-5), column
            else:
                assert cell == str(value), column


def check_report(out, iterations):
    text = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    tables = sections(text)
    read = lambda t: pd.read_csv(os.path.join(out, f"{t}.csv"))   # noqa: E731
    students = read("students")
    students = students[students.iteration <= iterations]
    assert_rows_match(tables["Students"], students, TABLES["students"])
    candidates = read("candidates")
    for k in range(1, iterations + 1):
        ranked = candidates[candidates.iteration == k].sort_values("rank")
        assert_rows_match(tables[f"Iteration {k}"], ranked,
                          ["rank", "pruner", "nonzero_params", "total_params",
                           "train_sample_accuracy", "test_accuracy", "weighted_score",
                           "size_mb", "latency_ms"])
    # Ranked on the test split (no --validation_split): the report says so.
    assert "test accuracies of the selected students are therefore **optimistic**" in text
    assert f"Iteration {iterations + 1}" not in tables
    correlation = read("criteria_correlation")
    overall = correlation[(correlation.scope == "global") & (correlation.iteration <= iterations)]
    assert len(overall) == 2 * iterations      # l1_filter and taylor against the oracle
    assert_rows_match(tables["Spearman correlation with the oracle"], overall)
    deployment = read("deployment")
    assert_rows_match(tables["Size and latency"], deployment[deployment.iteration <= iterations],
                      ["model", "iteration", "format", "bytes", "gzip_bytes", "test_accuracy",
                       "latency_ms_median", "latency_ms_p90"])
    assert_rows_match(tables["Teacher"], read("teacher_history"))
    timings = read("timings")
    shown = tables["Where the time went"]
    assert {r["phase"] for r in shown} == set(timings.phase)
    assert abs(sum(float(r["share_%"]) for r in shown) - 100) < 0.5
    import matplotlib.image
    for name in report.PLOTS:
        path = os.path.join(out, "plots", f"{name}.png")
        assert f"](plots/{name}.png)" in text
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE, name
        height, width, channels = matplotlib.image.imread(path).shape
        assert height > 100 and width > 100 and channels in (3, 4), name
    return text


@pytest.mark.e2e
def test_every_run_writes_its_report(reference_run):
    out = reference_run.out
    text = check_report(out, iterations=2)
    assert "— 2 of 2 iterations completed." in text
    assert not [f for f in os.listdir(out) + os.listdir(os.path.join(out, "plots"))
                if f.startswith(".tmp-")]


@pytest.mark.e2e
def test_report_command_rewrites_it_for_the_completed_stages(reference_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(reference_run.out, copy)
    shutil.rmtree(copy / "plots")
    os.remove(copy / "report.md")
    # As if the run had been killed during iteration 2: its rows are not reported.
    progress = json.load(open(copy / "progress.json"))
    progress.update(iterations_done=1, finished=False)
    json.dump(progress, open(copy / "progress.json", "w"))
    result = run_subprocess("epkd_tf.report", [str(copy)])
    assert result.returncode == 0, result.stderr
    text = check_report(str(copy), iterations=1)
    assert "— 1 of 2 iterations completed." in text
    # The time per phase covers the completed stages: the rows iteration 1 had recorded
    # (the rows of iteration 2 and of the final report came later).
    recorded = progress["stages"][1]["tables"]["timings"]["bytes"]
    timings = pd.read_csv(io.BytesIO((copy / "timings.csv").read_bytes()[:recorded]))
    assert timings.iteration.max() == 1 and len(timings) < len(pd.read_csv(copy / "timings.csv"))
    per_phase = timings.groupby("phase").seconds.sum().sort_values(ascending=False)
    shown = sections(text)["Where the time went"]
    assert [r["phase"] for r in shown] == per_phase.index.tolist()
    np.testing.assert_allclose([float(r["seconds"]) for r in shown], per_phase, atol=0.051)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["missing", "file", "empty", "bad_progress"])
def test_a_bad_run_dir_is_one_line_and_exit_2(kind, tmp_path, capsys):
    path = tmp_path / "run"
    if kind == "file":
        path.write_text("x")
    elif kind != "missing":
        path.mkdir()
        if kind == "bad_progress":
            (path / "flags.txt").write_text("--dataset=mnist\n")
        if kind == "bad_progress":
            (path / "progress.json").write_text("{not json")
    before = sorted(os.listdir(path)) if path.is_dir() else None
    assert report_command.main(["report", str(path)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"RUN_DIR={path}" in lines[0], lines
    assert (sorted(os.listdir(path)) if path.is_dir() else None) == before


@pytest.mark.unit
def test_a_run_that_completed_no_stage_yet_is_reported_as_such(tmp_path, capsys):
    """Killed while training its teacher, a run has flags.txt but no progress.json yet:
    the report says what is there, not that it is no run."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "flags.txt").write_text("--dataset=mnist\n--iterations=3\n")
    assert report_command.main(["report", str(path)]) == 0
    text = (path / "report.md").read_text(encoding="utf-8")
    assert "0 of 3 iterations completed" in text
    assert "The teacher has not completed yet." in text


@pytest.mark.e2e
def test_the_command_needs_exactly_one_run_dir(tmp_path, capsys):
    assert report_command.main(["report"]) == 2
    assert report_command.main(["report", str(tmp_path), str(tmp_path)]) == 2
    assert len(error_lines(capsys.readouterr().err)) == 2
    result = run_subprocess("epkd_tf.report", [str(tmp_path / "nope")])
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1


# -- the headline on a made-up run (no training) ----------------------------------------
def fake_run(root, final: int, formats=("saved_model", "tflite", "tflite_int8"),
             missing=(), cost=None, budget=None):
    """A finished run directory with two students, whose final model is iteration
    ``final`` (0: the teacher), exported in ``formats`` (deployment rows for all; no file
    for those in ``missing``); ``cost``: the budget cost of teacher, student 1, 2;
    ``budget``: the --budget line of flags.txt."""
    from epkd_tf.records import RunDir
    run = RunDir(str(root))
    cost = cost or (1000.0, 600.0, 300.0)
    common = dict(total_params=1000, gzip_mb=0.001, train_accuracy=0.99, goal_met=False,
                  validation_accuracy=np.nan)
    run.tables.append("teacher", pd.DataFrame([dict(
        iteration=0, nonzero_params=1000, macs=50_000, size_mb=0.004, latency_ms=0.65,
        cost=cost[0], test_accuracy=0.98, **common)]))
    run.tables.append("students", pd.DataFrame([dict(
        iteration=k, pruner="taylor", nonzero_params=1000 // (2 * k), macs=50_000 // (2 * k),
        size_mb=0.004 / (2 * k), latency_ms=[0.2, 0.9][k - 1], cost=cost[k],
        test_accuracy=0.97, temperature=2.0, **common) for k in (1, 2)]))
    source = "teacher" if final == 0 else f"student_{final}"
    rows = []
    for model, iteration in (("teacher", 0), (source, final), ("final", final)):
        for fmt in formats:
            path = os.path.relpath(run.export_path(model, fmt), run.root)
            if model == "final" and fmt not in missing:
                os.makedirs(os.path.dirname(run.path(path)), exist_ok=True)
                if fmt == "saved_model":
                    os.makedirs(run.path(path), exist_ok=True)
                else:
                    open(run.path(path), "wb").write(b"x")
            rows.append(dict(model=model, iteration=iteration, format=fmt, path=path,
                             bytes=4000 if model == "teacher" else 1000, gzip_bytes=900,
                             test_accuracy=0.97, latency_ms_median=0.6, latency_ms_p90=0.7))
    run.tables.append("deployment", pd.DataFrame(rows))
    run.tables.append("final", pd.DataFrame([dict(
        iteration=final, pruner="teacher" if final == 0 else "taylor", nonzero_params=1,
        macs=1, cost=1, validation_accuracy=np.nan, test_accuracy=0.97,
        teacher_float_latency_ms=0.6504, float_latency_ms=0.6304 if final == 0 else 0.2,
        teacher_int8_latency_ms=0.5, int8_latency_ms=0.48 if final == 0 else 0.1,
        stopped="--iterations=2 reached")]))
    if budget:
        run.write_text("flags.txt", f"--budget={budget}\n")
    run.stages.mark(teacher_done=True, iterations_done=2, finished=True)
    return run


@pytest.mark.unit
def test_the_headline_and_the_console_name_the_final_models_files(tmp_path, monkeypatch):
    """The top of report.md lists the final student's exported files (paths in the run
    directory); the console's last lines list them from the working directory. A format
    whose file is absent (or not exported) is not listed."""
    monkeypatch.chdir(tmp_path)
    run = fake_run(tmp_path / "cli_run", final=2,
                   formats=("saved_model", "tflite", "tflite_int8", "keras3"),
                   missing=("keras3",))
    lines = report.headline(run)
    at = lines.index("Files of the final student (in the run directory):")
    assert lines[at + 2:] == ["* SavedModel: `serving/final/1`",
                              "* TFLite float32: `tflite/final.tflite`",
                              "* TFLite int8: `tflite/final_int8.tflite`"]
    text = report.headline_text(run)
    assert text[-4] == "Files of the final student:"
    assert [line.split() for line in text[-3:]] == [
        ["SavedModel", os.path.join("cli_run", "serving", "final", "1")],
        ["TFLite", "float32", os.path.join("cli_run", "tflite", "final.tflite")],
        ["TFLite", "int8", os.path.join("cli_run", "tflite", "final_int8.tflite")]]
    report.write_report(run)
    top = (tmp_path / "cli_run" / "report.md").read_text().split("## ")[0]
    assert "* TFLite int8: `tflite/final_int8.tflite`" in top
    assert not any("keras3" in line for line in lines + text)
    # Outside the working directory the console gives absolute paths; the API's
    # temporary run directories list none.
    monkeypatch.chdir(tmp_path / "cli_run" / "serving")
    assert report.headline_text(run)[-1].split()[-1] == str(
        tmp_path / "cli_run" / "tflite" / "final_int8.tflite")
    assert not any("Files of" in line for line in report.headline(run, files=False))


@pytest.mark.unit
def test_without_exports_the_final_students_checkpoint_is_named(tmp_path):
    run = fake_run(tmp_path / "run", final=1, formats=())
    os.makedirs(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "checkpoints" / "student_1.keras").write_bytes(b"x")
    assert report.final_files(run) == [("tf_keras checkpoint (no --export_formats)",
                                        os.path.join("checkpoints", "student_1.keras"))]


@pytest.mark.unit
def test_a_teacher_kept_as_the_final_model_is_not_timed_against_itself(tmp_path):
    """Final iteration 0: the headline says the final model is the teacher itself and
    shows its figures once, with no speed-up, size or accuracy ratio of it against
    itself (final.csv's side-by-side timing of the teacher and its copy is not shown)."""
    run = fake_run(tmp_path / "run", final=0)
    lines = report.headline(run)
    assert lines[0].startswith("**The final model is the teacher itself**: no student is "
                               "within the stop rules")
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| | teacher (the final model) |"
    assert all(line.count("|") == 3 for line in table)
    joined = "\n".join(lines + report.headline_text(run))
    for ratio in ("faster", "smaller", "fewer", "points", "1.03x", "0.6304", "side by side"):
        assert ratio not in joined, ratio
    assert "Files of the final model (in the run directory):" in lines
    # A student as the final model keeps the comparison.
    student = "\n".join(report.headline(fake_run(tmp_path / "student", final=2)))
    assert "Teacher → final student" in student and "3.25x faster" in student


@pytest.mark.unit
def test_the_pareto_plot_shows_the_latency_the_run_decided_on(tmp_path):
    """With --budget=latency the latency panel plots the ``cost`` column (timed side by
    side with the teacher: what the targets and the final choice read), not
    ``latency_ms`` (each model timed alone), which orders the students differently here;
    with another budget it plots ``latency_ms`` and says it was timed alone."""
    run = fake_run(tmp_path / "run", final=2, cost=(0.65, 0.3, 0.1), budget="latency")
    t = report.completed_tables(run)
    points, panels = report.pareto_points(t["teacher"], t["candidates"], t["students"],
                                          "latency", "tflite_int8")
    column, label = panels[0]
    assert column == "cost" and "side by side" in label and "int8" in label
    students = points[points.kind == "student"]
    assert students[column].tolist() == [0.3, 0.1]                 # students.csv's cost
    assert students["latency_ms"].tolist() == [0.2, 0.9]           # the other order
    assert points.loc[points.kind == "teacher", column].tolist() == [0.65]
    other, panels = report.pareto_points(t["teacher"], t["candidates"], t["students"])
    assert panels[0][0] == "latency_ms" and "timed alone" in panels[0][1]
    assert other[panels[0][0]].tolist() == [0.2, 0.9, 0.65]
    # The run's report reads the budget from flags.txt (the API's run passes its own).
    report.write_report(run)
    assert (tmp_path / "run" / "plots" / "pareto.png").read_bytes()[:8] == PNG_SIGNATURE
