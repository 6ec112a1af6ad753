"""Real runs killed with SIGKILL and resumed, and two runs of one seed: identical results.

Each run is ``python -m epkd_tf.main`` in a subprocess; ``EPKD_TEST_KILL_AT`` (see
``epkd_tf/faults.py``) makes it SIGKILL itself at a chosen moment.
"""
import json

import pytest
import os
import re
import signal

import numpy as np
import pandas as pd

import tf_keras
from cli_helpers import TINY_RUN_ARGS, error_lines, run_in_process, run_subprocess
from epkd_tf.cli import main as epkd_main
from epkd_tf.records import TABLES, TMP_PREFIX

pytestmark = pytest.mark.e2e

# Columns that are the same, bit for bit, for the same flags on the same machine (README,
# Reproducibility); latencies, times and SavedModel byte counts are not.
DETERMINISTIC = {
    "teacher_history": TABLES["teacher_history"],
    "candidates": [c for c in TABLES["candidates"] if c != "latency_ms"],
    "finetune_history": TABLES["finetune_history"],
    "students": [c for c in TABLES["students"] if c != "latency_ms"],
    "criteria_correlation": TABLES["criteria_correlation"],
    "deployment": ["model", "iteration", "format", "path", "test_accuracy"],
}


def read(out, table):
    return pd.read_csv(os.path.join(out, f"{table}.csv"))


def assert_same_results(expected_dir, actual_dir):
    for table, columns in DETERMINISTIC.items():
        pd.testing.assert_frame_equal(read(actual_dir, table)[columns],
                                      read(expected_dir, table)[columns], check_exact=True,
                                      obj=table)
    tflite = [read(d, "deployment").query("format != 'saved_model'")[["bytes", "gzip_bytes"]]
              for d in (expected_dir, actual_dir)]
    pd.testing.assert_frame_equal(tflite[1], tflite[0], obj="TFLite file sizes")
    for name in ("teacher", "student_1", "student_2"):
        models = [tf_keras.models.load_model(os.path.join(d, "checkpoints", f"{name}.keras"),
                                             compile=False) for d in (expected_dir, actual_dir)]
        for a, b in zip(models[0].get_weights(), models[1].get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)


def files(out):
    """Every path in the run directory, relative, except TensorBoard's event files (named
    by time and process) and the report (names the directory)."""
    found = set()
    for root, dirs, names in os.walk(out):
        for name in dirs + names:
            path = os.path.relpath(os.path.join(root, name), out)
            found.add(re.sub(r"events\.out\.tfevents\..*", "events", path))
    return found


def progress(out):
    path = os.path.join(out, "progress.json")
    return json.load(open(path)) if os.path.exists(path) else {}


# Slow (three kills and resumes, ~40 s): the default run covers resuming with one kill
# (test_cli, test_main, test_reliability's timings).
@pytest.mark.slow
def test_a_run_killed_three_times_resumes_to_the_uninterrupted_result(reference_run, tiny_dir,
                                                                     tmp_path):
    expected = reference_run.out
    out = str(tmp_path / "killed")
    args = [f"--data_dir={tiny_dir}", f"--output_dir={out}", *TINY_RUN_ARGS]
    # Killed during teacher training, right after iteration 1 was recorded, and in
    # iteration 2's export (its SavedModel written to a temporary, not yet renamed).
    for point, teacher_done, iterations_done in [("teacher_epoch_1", False, 0),
                                                 ("iteration_1_done", True, 1),
                                                 ("write:student/2", True, 1)]:
        result = run_subprocess("epkd_tf.main", args, env={"EPKD_TEST_KILL_AT": point})
        assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
        state = progress(out)
        assert state.get("teacher_done", False) == teacher_done, point
        assert state.get("iterations_done", 0) == iterations_done, point
        assert not state.get("finished"), point
    # The last kill left a half-done export behind ...
    leftovers = [n for n in os.listdir(os.path.join(out, "serving", "student"))
                 if n.startswith(TMP_PREFIX)]
    assert leftovers and os.path.exists(os.path.join(out, "checkpoints", "student_2.keras"))

    result = run_subprocess("epkd_tf.main", args)   # the same command again
    assert result.returncode == 0, result.stderr[-3000:]
    assert progress(out)["finished"]
    # ... which is gone: no temporaries, exactly the files of an uninterrupted run, and the
    # same rows (no duplicates, none missing) with the same values.
    assert not [p for p in files(out) if TMP_PREFIX in p]
    assert files(out) == files(expected)
    # Each training's logs once: the teacher's from the process killed after its first
    # epoch and from the one that resumed it at epoch 2 (tests/test_resume_epochs.py);
    # iteration 2's distillation was complete (only its export was cut short), so its
    # checkpoint gave the distilled student and its logs are the killed process's.
    for board, logs in (("teacher", 2), ("finetune_1", 1), ("finetune_2", 1)):
        assert len(os.listdir(os.path.join(out, "tensorboard", board, "train"))) == logs
    assert_same_results(expected, out)


def test_the_same_seed_gives_identical_results_and_verbose_only_adds_progress_bars(
        reference_run, tiny_dir, tmp_path, capfd):
    expected, quiet = reference_run.out, reference_run
    # The second run is in this process (whatever TensorFlow did here before), verbose.
    out = str(tmp_path / "again")
    code = run_in_process(epkd_main, [f"--data_dir={tiny_dir}", f"--output_dir={out}",
                                      *TINY_RUN_ARGS, "--verbose=1"])
    assert code == 0
    assert_same_results(expected, out)
    progress_bar = re.compile(r"\d+/\d+ \[=*[>.]*\]|ms/step")
    assert progress_bar.search(capfd.readouterr().out)
    # Without --verbose: no progress bar, one line per phase and iteration with the time.
    assert not progress_bar.search(quiet.stdout + quiet.stderr)
    lines = [line for line in quiet.stderr.splitlines() if " epkd_tf: " in line]
    assert any(re.search(r"Teacher done; elapsed \d+ s", line) for line in lines)
    for k in (1, 2):
        assert any(re.search(rf"Iteration {k}/2 done; elapsed \d+ s, ETA \d+ s", line)
                   for line in lines)
    assert not error_lines(quiet.stderr)


def test_a_run_killed_while_exporting_its_final_student_resumes_to_one_set_of_exports(
        tiny_dir, tmp_path):
    """Without --export_every_student the final student is exported in the run's last
    stage: killed there (its SavedModel half written), the same command redoes that stage
    alone and leaves one export per format, no temporaries, and no per-iteration exports
    (while every student's checkpoint is kept)."""
    out = str(tmp_path / "killed")
    args = [f"--data_dir={tiny_dir}", f"--output_dir={out}",
            *[a for a in TINY_RUN_ARGS if a != "--export_every_student"]]
    result = run_subprocess("epkd_tf.main", args, env={"EPKD_TEST_KILL_AT": "write:final/1"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    state = progress(out)
    assert state["iterations_done"] == 2 and not state.get("finished")
    assert [n for n in os.listdir(os.path.join(out, "serving", "final"))
            if n.startswith(TMP_PREFIX)]
    result = run_subprocess("epkd_tf.main", args)   # the same command again
    assert result.returncode == 0, result.stderr[-3000:]
    assert progress(out)["finished"]
    assert not [p for p in files(out) if TMP_PREFIX in p]
    deployment = read(out, "deployment")
    assert deployment.model.tolist() == ["final", "final"]
    assert deployment.format.tolist() == ["saved_model", "tflite"]
    assert all(os.path.exists(os.path.join(out, p)) for p in deployment.path)
    assert sorted(os.listdir(os.path.join(out, "serving"))) == [
        "final", "models.config", "models.docker.config"]
    assert os.listdir(os.path.join(out, "serving", "final")) == ["1"]
    assert os.listdir(os.path.join(out, "tflite")) == ["final.tflite"]
    for name in ("teacher", "student_1", "student_2"):
        assert os.path.exists(os.path.join(out, "checkpoints", f"{name}.keras"))
