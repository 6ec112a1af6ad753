"""Issue #15: model files never run code, one run per directory, verified resumes, a clean
error for every failure, paths that stay inside the run.

Runs are tiny (tiny_digits, LeNet-300-100, the flags of conftest's reference_run). Base
states are made once by real ``python -m epkd_tf.main`` subprocesses, some killed with
``EPKD_TEST_KILL_AT`` (epkd_tf/faults.py); each test works on a copy.
"""
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import tf_keras
from cli_helpers import TINY_RUN_ARGS, error_lines, run_in_process, run_subprocess
from planted_models import (HELPERS_MODULE, custom_layer_saved_model, module_field,
                            plain_model, resource_saved_model, tfop_write_file)
from epkd_tf import faults
from epkd_tf.budget import feasibility
from epkd_tf.cli import export, report
from epkd_tf.cli import main as epkd_main
from epkd_tf.records import LOCK_NAME, TABLES, TMP_PREFIX, RunDir, file_digest

study_main = importlib.import_module("epkd_tf.cli.study")

# The reference run's flags: a resumed run must end where it does.
ARGS = TINY_RUN_ARGS
DETERMINISTIC = {"students": ["iteration", "pruner", "nonzero_params", "total_params",
                              "test_accuracy", "train_accuracy", "kept_previous"],
                 "deployment": ["model", "iteration", "format", "path", "test_accuracy"],
                 "timings": ["phase", "iteration", "pruner"]}


def args(tiny_dir, out, *extra):
    return [f"--data_dir={tiny_dir}", f"--output_dir={out}", *ARGS, *extra]


def killed(tiny_dir, out, point):
    result = run_subprocess("epkd_tf.main", args(tiny_dir, out),
                            env={faults.ENV: point})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def read(out, table):
    return pd.read_csv(os.path.join(out, f"{table}.csv"))


def progress(out):
    return json.load(open(os.path.join(out, "progress.json")))


def assert_same_results(expected, actual, tables=DETERMINISTIC):
    for table, columns in tables.items():
        pd.testing.assert_frame_equal(read(actual, table)[columns],
                                      read(expected, table)[columns], check_exact=True,
                                      obj=table)
    for name in ("teacher", "student_1", "student_2"):
        models = [tf_keras.models.load_model(os.path.join(d, "checkpoints", f"{name}.keras"),
                                             compile=False) for d in (expected, actual)]
        for a, b in zip(models[0].get_weights(), models[1].get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)


def snapshot(out):
    """Every file under ``out`` with its bytes (what a refusal must leave as it was); the
    lock file a killed run left is taken over and removed, so it does not count."""
    found = {}
    for root, _, names in os.walk(out):
        for name in set(names) - {LOCK_NAME}:
            path = os.path.join(root, name)
            found[os.path.relpath(path, out)] = open(path, "rb").read()
    return found


@pytest.fixture
def reference(reference_run):
    """An uninterrupted run (the session's, read-only)."""
    return reference_run.out


@pytest.fixture(scope="module")
def stopped(tiny_dir, tmp_path_factory):
    """A run killed right after iteration 2 was recorded (its final report undone)."""
    out = str(tmp_path_factory.mktemp("stopped") / "run")
    killed(tiny_dir, out, "iteration_2_done")
    assert progress(out)["iterations_done"] == 2 and not progress(out)["finished"]
    return out


@pytest.fixture
def copy_of(tmp_path):
    def make(path):
        target = str(tmp_path / "run")
        shutil.copytree(path, target, symlinks=True)
        return target
    return make


# -- 1. model files never run or import code --------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    marker = str(root / "marker")
    tfop_write_file(str(root), marker)
    module_field(str(root), marker, "this", "zen")
    module_field(str(root), marker, HELPERS_MODULE, "helpers")
    custom_layer_saved_model(str(root), marker)
    resource_saved_model(str(root), marker)
    resource_saved_model(str(root), marker, "resource3_saved_model", classes=3)
    return str(root), marker


@pytest.mark.e2e
@pytest.mark.parametrize("name,extra,message", [
    ("tfop.h5", [], "a TF-op layer 'tf.io.write_file' calling tf.io.write_file"),
    ("tfop.keras", [], "a TF-op layer 'tf.io.write_file' calling tf.io.write_file"),
    ("zen.keras", [], "an object of module 'this'"),
    ("helpers.keras", [], f"an object of module '{HELPERS_MODULE}'"),
    ("custom_saved_model", ["--pruners=poly_magnitude"], "an unknown class 'Stamp'"),
    # Loaded without running its resource's initializer; then refused for its 3 classes.
    ("resource3_saved_model", [], "predicts 3 classes"),
])
def test_a_teacher_file_never_runs_or_imports_code(name, extra, message, planted, tiny_dir,
                                                   tmp_path):
    root, marker = planted
    out = tmp_path / "never"
    # Run from the model's directory, where `python -m` would import a module beside it.
    result = run_subprocess("epkd_tf.main", [f"--data_dir={tiny_dir}", "--dataset=tiny_digits",
                                             f"--output_dir={out}",
                                             f"--teacher_path={name}", *extra],
                            cwd=root, env={"PYTHONPATH": os.getcwd()})
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    expected = "--teacher_path predicts" if "predicts" in message else \
        f"--teacher_path={name} has {message}"
    assert expected in lines[0]
    assert not os.path.exists(marker) and not out.exists()
    assert "Beautiful is better than ugly" not in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["tfop.keras", "custom_saved_model", "helpers.keras"])
def test_export_never_runs_or_imports_code(name, planted, tmp_path):
    root, marker = planted
    result = run_subprocess("epkd_tf.export", [f"--model={name}", f"--output_dir={tmp_path}/x",
                                               "--formats=tflite"],
                            cwd=root, env={"PYTHONPATH": os.getcwd()})
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and f"--model={name} has" in lines[0]
    assert not os.path.exists(marker) and not (tmp_path / "x").exists()


@pytest.mark.e2e
def test_export_of_a_saved_model_never_runs_its_resource_initializer(planted, tmp_path):
    root, marker = planted
    result = run_subprocess("epkd_tf.export", ["--model=resource_saved_model",
                                               f"--output_dir={tmp_path}/x",
                                               "--formats=saved_model"],
                            cwd=root, env={"PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr[-2000:]
    assert not os.path.exists(marker)
    assert (tmp_path / "x" / "deployment.csv").exists()


@pytest.mark.e2e
def test_a_planted_checkpoint_is_never_loaded(stopped, planted, copy_of, tiny_dir, capsys):
    root, marker = planted
    out = copy_of(stopped)
    shutil.copy(os.path.join(root, "tfop.keras"), os.path.join(out, "checkpoints",
                                                               "student_2.keras"))
    # Its digest is not what iteration 2 recorded: the stage is redone, the file replaced
    # without ever being loaded.
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 0
    err = capsys.readouterr().err
    assert "warning: checkpoints/student_2.keras" in err and not error_lines(err)
    assert not os.path.exists(marker)
    # With progress.json forged to match it, the safe loader refuses it on resume.
    out2 = out + "_forged"
    shutil.copytree(stopped, out2)
    planted_path = os.path.join(out2, "checkpoints", "student_2.keras")
    shutil.copy(os.path.join(root, "tfop.keras"), planted_path)
    state = progress(out2)
    state["stages"][2]["files"]["checkpoints/student_2.keras"] = file_digest(planted_path)
    json.dump(state, open(os.path.join(out2, "progress.json"), "w"))
    assert run_in_process(epkd_main, args(tiny_dir, out2)) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "checkpoints/student_2.keras has a TF-op layer" in lines[0]
    assert not os.path.exists(marker)


# -- 2. one run per directory -------------------------------------------------------------
@pytest.mark.e2e
def test_two_runs_started_together_on_one_directory(tiny_dir, tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "epkd_tf.main", *args(tiny_dir, out, "--teacher_epochs=3")]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]
    results = [(p, *p.communicate(timeout=600)) for p in runs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [e[-1500:] for _, _, e in results]
    (winner,) = [p for p, _, _ in results if p.returncode == 0]
    (refused,) = [e for p, _, e in results if p.returncode == 2]
    lines = error_lines(refused)
    assert len(lines) == 1 and f"in use by another epkd_tf process (PID {winner.pid})" \
        in lines[0], lines
    assert read(out, "students").iteration.tolist() == [1, 2]       # not doubled
    assert read(out, "timings").query("phase == 'teacher_training'").shape[0] == 1
    assert not os.path.exists(os.path.join(out, LOCK_NAME))


@pytest.mark.e2e
def test_a_running_run_refuses_a_second_one_and_a_dead_one_s_lock_is_taken_over(
        stopped, copy_of, tiny_dir, capsys):
    out = copy_of(stopped)
    with RunDir(out).lock():           # as a live process holds it
        assert run_in_process(epkd_main, args(tiny_dir, out)) == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and f"(PID {os.getpid()})" in lines[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    open(os.path.join(out, LOCK_NAME), "w").write(dead + "\n")     # a killed run's
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 0
    assert progress(out)["finished"] and not os.path.exists(os.path.join(out, LOCK_NAME))


@pytest.mark.unit
def test_export_and_study_hold_their_directory_too(tiny_dir, tmp_path, capsys):
    model = str(tmp_path / "m.keras")
    plain_model().save(model)
    for module, flags in [(export, [f"--model={model}", "--formats=tflite"]),
                          (study_main, ["--dataset=tiny_digits", f"--data_dir={tiny_dir}",
                                        "--teacher_epochs=1", "--epochs=1",
                                        "--methods=prune", "--fractions_removed=0.5",
                                        "--seeds=1"])]:
        out = tmp_path / module.__name__
        with RunDir(str(out)).lock():
            assert run_in_process(module, [*flags, f"--output_dir={out}"]) == 2
            lines = error_lines(capsys.readouterr().err)
            assert len(lines) == 1 and f"(PID {os.getpid()})" in lines[0], lines
            assert os.listdir(out) == [LOCK_NAME]


# -- 3. verified state on resume ------------------------------------------------------------
def truncate(path, keep=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])


def variables_file(out, version):
    folder = os.path.join(out, "serving", "student", str(version), "variables")
    return os.path.join(folder, [n for n in os.listdir(folder) if n.startswith("variables.data")][0])


def drop_line(path, index):
    lines = open(path).read().splitlines(keepends=True)
    open(path, "w").write("".join(lines[:index] + lines[index + 1:]))


REFUSED = {
    "empty progress.json": (lambda out: open(f"{out}/progress.json", "w").close(), "progress.json"),
    "garbage progress.json": (lambda out: open(f"{out}/progress.json", "w").write("\x00{ja"),
                              "progress.json"),
    "progress.json []": (lambda out: open(f"{out}/progress.json", "w").write("[]"), "progress.json"),
    "progress.json {}": (lambda out: open(f"{out}/progress.json", "w").write("{}"), "progress.json"),
    "more iterations than recorded": (
        lambda out: json.dump({**progress(out), "iterations_done": 5},
                              open(f"{out}/progress.json", "w")), "progress.json"),
    "truncated teacher checkpoint": (lambda out: truncate(f"{out}/checkpoints/teacher.keras"),
                                     "checkpoints/teacher.keras"),
    "deleted students.csv row of iteration 1": (lambda out: drop_line(f"{out}/students.csv", 1),
                                                "students.csv"),
    "headerless deployment.csv": (lambda out: drop_line(f"{out}/deployment.csv", 0),
                                  "deployment.csv"),
    "truncated exported variables of iteration 1": (
        lambda out: truncate(variables_file(out, 1)), "serving/student/1/variables/"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_damage_a_later_stage_builds_on_is_refused_naming_the_file(case, stopped, copy_of,
                                                                   tiny_dir, capsys):
    damage, named = REFUSED[case]
    out = copy_of(stopped)
    damage(out)
    before = snapshot(out)
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and named in lines[0], lines
    assert snapshot(out) == before


REDONE = {
    "truncated last checkpoint": (lambda out: truncate(f"{out}/checkpoints/student_2.keras"),
                                  "checkpoints/student_2.keras"),
    "teacher copied over the last checkpoint": (
        lambda out: shutil.copy(f"{out}/checkpoints/teacher.keras",
                                f"{out}/checkpoints/student_2.keras"),
        "checkpoints/student_2.keras"),
    "last students.csv row cut": (lambda out: truncate(f"{out}/students.csv", 0.9),
                                  "students.csv"),
    "deleted students.csv row of iteration 2": (lambda out: drop_line(f"{out}/students.csv", 2),
                                                "students.csv"),
    "truncated TFLite file of iteration 2": (lambda out: truncate(f"{out}/tflite/student_2.tflite"),
                                             "tflite/student_2.tflite"),
    "truncated exported variables of iteration 2": (
        lambda out: truncate(variables_file(out, 2)), "serving/student/2/variables/"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(REDONE))
def test_damage_to_the_last_stage_is_redone(case, stopped, reference, copy_of, tiny_dir,
                                            capsys):
    damage, named = REDONE[case]
    out = copy_of(stopped)
    damage(out)
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 0
    err = capsys.readouterr().err
    assert not error_lines(err) and f"warning: {named}" in err
    assert progress(out)["finished"] and RunDir(out).stages.verify() is None
    assert_same_results(reference, out)
    assert open(f"{out}/tflite/student_2.tflite", "rb").read() == \
        open(f"{reference}/tflite/student_2.tflite", "rb").read()


@pytest.mark.e2e
@pytest.mark.slow   # three CLI runs (28 s); the end commit's kill is checked by the next test
def test_timings_rows_are_those_of_an_uninterrupted_run(reference, tiny_dir, tmp_path):
    out = str(tmp_path / "run")
    # Killed after iteration 1 (the resume recomputes the teacher's logits), then killed
    # again after the final timings rows were written but before the run was marked
    # finished (the 2nd commit of the resumed process), then resumed.
    killed(tiny_dir, out, "iteration_1_done")
    killed(tiny_dir, out, f"write:{os.path.basename(out)}/progress.json#2")
    assert not progress(out)["finished"] and progress(out)["iterations_done"] == 2
    assert read(out, "timings").phase.tolist()[-2:] == ["logging", "other"]
    result = run_subprocess("epkd_tf.main", args(tiny_dir, out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_results(reference, out)
    assert len(read(out, "timings").query("phase == 'teacher_logits'")) == 1


@pytest.mark.e2e
def test_a_run_killed_before_its_end_commit_has_every_table_of_an_uninterrupted_run(
        stopped, reference, copy_of, tiny_dir, capsys):
    # Resumed after iteration 2 and killed at its first commit, the end stage's: final.csv
    # (made by that stage) and the final deployment rows are written, "finished" is not.
    out = copy_of(stopped)
    killed(tiny_dir, out, f"write:{os.path.basename(out)}/progress.json#1")
    assert not progress(out)["finished"] and len(read(out, "final")) == 1
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 0
    assert not error_lines(capsys.readouterr().err)
    assert progress(out)["finished"] and RunDir(out).stages.verify() is None
    for table in TABLES:
        assert len(read(out, table)) == len(read(reference, table)), table
    final = [c for c in TABLES["final"] if not c.endswith("_latency_ms")]
    assert_same_results(reference, out, {**DETERMINISTIC, "final": final})


@pytest.mark.e2e
def test_report_names_damaged_tables_and_files(reference, copy_of, capsys):
    out = copy_of(reference)
    truncate(f"{out}/tflite/student_1.tflite")
    assert report.main(["report", out]) == 0
    assert "warning: tflite/student_1.tflite is damaged" in capsys.readouterr().err
    text = open(f"{out}/report.md").read()
    assert "## Damaged files" in text and "`tflite/student_1.tflite`" in text
    drop_line(f"{out}/students.csv", 1)
    assert report.main(["report", out]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "students.csv is damaged" in lines[0], lines


# -- 4. a clean error for every failure ------------------------------------------------------
@pytest.mark.unit
def test_a_teacher_too_large_for_the_memory_is_refused_before_work(tiny_dir, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(feasibility, "available_memory", lambda: 2 * feasibility.GIB)
    out = tmp_path / "never"
    # 1024x1024 inputs make LeNet-300-100's first layer 315 M weights: 4.7 GiB to train.
    code = run_in_process(epkd_main, args(tiny_dir, out, "--image_size=1024"))
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and "--image_size" in lines[0], lines
    assert "314,603,604 parameters" in lines[0] and "2.0 GiB of memory" in lines[0]
    assert not out.exists()


@pytest.mark.integration
def test_a_full_disk_or_a_read_only_one_on_the_way_is_one_line_and_resumes(
        tiny_dir, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    for errno_name, text in (("ENOSPC", "no space left on the device"),
                             ("EROFS", "Read-only file system")):
        faults._times.clear()
        monkeypatch.setenv(faults.FAIL_ENV, f"{errno_name}@write:checkpoints/student_2.keras")
        assert run_in_process(epkd_main, args(tiny_dir, out)) == 1
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and text in lines[0] and "rerun the same command" in lines[0]
        assert progress(out)["iterations_done"] == 1
        assert not [n for _, d, f in os.walk(out) for n in d + f if n.startswith(TMP_PREFIX)]
    monkeypatch.delenv(faults.FAIL_ENV)
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 0
    assert read(out, "students").iteration.tolist() == [1, 2]


@pytest.mark.e2e
def test_a_really_full_disk(tiny_dir, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    # 2.4 MB: the teacher's stage fits (its checkpoint, its partial training checkpoint
    # until the stage completes, its TFLite file), the first iteration's does not.
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2400k",
                                            "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("needs root and tmpfs mounts")
    try:
        result = run_subprocess("epkd_tf.main", args(tiny_dir, mount / "run",
                                                     "--export_formats=tflite"))
        lines = error_lines(result.stderr)
        assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
        assert "no space left on the device" in lines[0]
        assert progress(mount / "run")["teacher_done"]
    finally:
        subprocess.run(["umount", str(mount)])


@pytest.mark.e2e
def test_a_read_only_run_directory_is_refused_before_work(stopped, copy_of, tiny_dir,
                                                          capsys):
    from test_records import make_read_only, make_writable
    out = copy_of(stopped)
    before = snapshot(out)
    if not make_read_only(out):
        pytest.skip("cannot make a directory read-only here")
    try:
        assert run_in_process(epkd_main, args(tiny_dir, out)) == 2
    finally:
        make_writable(out)
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "cannot be written" in lines[0], lines
    assert snapshot(out) == before


@pytest.mark.e2e
def test_a_fifo_as_teacher_is_refused_without_waiting(tiny_dir, tmp_path):
    fifo = tmp_path / "teacher.keras"
    os.mkfifo(fifo)
    result = run_subprocess("epkd_tf.main", [f"--data_dir={tiny_dir}", "--dataset=tiny_digits",
                                             f"--teacher_path={fifo}",
                                             f"--output_dir={tmp_path / 'never'}"], timeout=120)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "not a regular file" in lines[0]
    assert not (tmp_path / "never").exists()


def bicubic_model(path):
    """Converts to a SavedModel but not to TFLite (ResizeBicubic is no TFLite builtin)."""
    inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.Resizing(16, 16, interpolation="bicubic")(inputs)
    x = tf_keras.layers.Flatten()(x)
    tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x)).save(path)
    return path


@pytest.mark.integration
def test_an_export_whose_conversion_fails_leaves_nothing(tmp_path, capsys):
    model = bicubic_model(str(tmp_path / "bicubic.keras"))
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        code = run_in_process(export, [f"--model={model}", f"--output_dir={out}",
                                       "--formats=saved_model,tflite", "--latency_runs=1"])
        lines = error_lines(capsys.readouterr().err)
        assert code == 1 and len(lines) == 1, lines
        assert "exporting --model=" in lines[0] and "nothing was written" in lines[0]
        assert (os.listdir(out) == []) if out.name == "empty" else not out.exists()


@pytest.mark.unit
@pytest.mark.parametrize("flags,named", [
    (["--name=.."], "--name='..'"), (["--name=.hidden"], "--name='.hidden'"),
    (["--name=a/b"], "--name='a/b'"), (["--output_dir={file}/x"], "which is a file"),
    (["--output_dir=/"], "the file system's root"),
])
def test_export_refuses_names_and_directories_that_leave_its_place(flags, named, tmp_path,
                                                                   capsys):
    model = str(tmp_path / "m.keras")
    plain_model().save(model)
    (tmp_path / "file").write_text("x")
    flags = [f.format(file=tmp_path / "file") for f in flags]
    code = run_in_process(export, [f"--model={model}", f"--output_dir={tmp_path / 'out'}",
                                   "--formats=tflite", *flags])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and named in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == ["file", "m.keras"]


# -- 5. paths -------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_link_out_of_the_run_directory_is_refused_on_resume(stopped, copy_of, tiny_dir,
                                                              tmp_path, capsys):
    out = copy_of(stopped)
    outside = tmp_path / "outside"
    shutil.move(os.path.join(out, "tflite"), outside)
    os.symlink(outside, os.path.join(out, "tflite"))
    before = sorted(os.listdir(outside))
    assert run_in_process(epkd_main, args(tiny_dir, out)) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "tflite is a link to" in lines[0] and "outside the run" \
        in lines[0], lines
    assert sorted(os.listdir(outside)) == before
