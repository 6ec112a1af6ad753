"""Issue 24, part 3: long epochs survive interruption. Real runs (``python -m epkd_tf.main``
subprocesses on tiny_digits, 8 steps an epoch) are SIGKILLed inside a teacher epoch and
inside a distillation epoch (``EPKD_TEST_KILL_AT=<name>_epoch_<e>_step_<k>``, see
epkd_tf/faults.py) and resumed with the same command: they end with the weights and
tables of an uninterrupted run, and a teacher killed in epoch 2 of 3 resumes at epoch 2.

LeNet-300-100 on tiny_digits has no dropout and the data no augmentation: with op
determinism on, the results are then equal bit for bit (docs/outputs.md, Reliability)."""
import json
import os
import signal

import numpy as np
import pandas as pd
import pytest

import tf_keras
from cli_helpers import run_subprocess
from epkd_tf import faults

ARGS = ["--dataset=tiny_digits", "--teacher_epochs=3", "--iterations=1",
        "--finetune_epochs=2", "--latency_runs=2", "--batch_size=32",
        "--pruners=l1_filter", "--export_formats="]
# Every column but the measured latencies and the cost some budgets time.
TABLES = {"teacher_history": None, "finetune_history": None,
          "students": ["iteration", "pruner", "nonzero_params", "total_params",
                       "test_accuracy", "train_accuracy", "test_accuracy_before_finetune",
                       "kept_previous", "epochs"]}


def run(tiny_dir, out, *extra, kill=None):
    """The run's output (stdout and stderr); asserts it was killed at ``kill`` or ended
    well."""
    result = run_subprocess("epkd_tf.main", [f"--data_dir={tiny_dir}", f"--output_dir={out}",
                                             *ARGS, *extra],
                            env={faults.ENV: kill} if kill else None)
    output = result.stdout + result.stderr
    if kill:
        assert result.returncode == -signal.SIGKILL, (kill, output[-3000:])
    else:
        assert result.returncode == 0, output[-3000:]
    return output


def partial(out, name):
    path = os.path.join(out, "checkpoints", "partial", f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def assert_same_results(expected, actual):
    for table, columns in TABLES.items():
        a, b = (pd.read_csv(os.path.join(d, f"{table}.csv")) for d in (expected, actual))
        columns = columns or list(a.columns)
        pd.testing.assert_frame_equal(b[columns], a[columns], check_exact=True, obj=table)
    for name in ("teacher", "student_1"):
        models = [tf_keras.models.load_model(os.path.join(d, "checkpoints", f"{name}.keras"),
                                             compile=False) for d in (expected, actual)]
        for a, b in zip(models[0].get_weights(), models[1].get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert not os.path.exists(os.path.join(actual, "checkpoints", "partial"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("epochs") / "uninterrupted")
    run(tiny_dir, out, "--checkpoint_every=2")
    return out


@pytest.mark.e2e
def test_runs_killed_inside_teacher_and_distillation_epochs_resume_to_the_same_result(
        uninterrupted, tiny_dir, tmp_path):
    out = str(tmp_path / "killed")
    # Killed after step 3 of teacher epoch 2: the checkpoint of step 2 is there ...
    run(tiny_dir, out, "--checkpoint_every=2", kill="teacher_epoch_2_step_3")
    state = partial(out, "teacher")
    assert (state["epoch"], state["step"], len(state["history"]["loss"])) == (1, 2, 1)
    assert not os.path.exists(os.path.join(out, "progress.json"))
    # ... and the same command resumes there; this time it is killed after step 5 of the
    # first distillation epoch (the teacher's checkpoint went with its stage).
    output = run(tiny_dir, out, "--checkpoint_every=2", kill="finetune_1_epoch_1_step_5")
    assert "Teacher: resumed at epoch 2/3, step 2/8 (from its checkpoint)" in output
    assert "Teacher epoch 1/3" not in output         # no epoch trained twice
    assert partial(out, "teacher") is None
    state = partial(out, "finetune_1")
    assert (state["epoch"], state["step"]) == (0, 4)
    output = run(tiny_dir, out, "--checkpoint_every=2")
    assert ("Iteration 1 distillation (T=50): resumed at epoch 1/2, step 4/8 (from its "
            "checkpoint)") in output
    assert_same_results(uninterrupted, out)


@pytest.mark.e2e
@pytest.mark.parametrize("point", [
    # Killed as epoch 2 begins: the same resume as in its middle, in the slow tier (20 s).
    pytest.param("teacher_epoch_1", marks=pytest.mark.slow), "teacher_epoch_2_step_5"])
def test_a_teacher_killed_in_epoch_2_of_3_resumes_at_epoch_2(uninterrupted, tiny_dir,
                                                              tmp_path, point):
    # Checkpoints after every epoch only (the default): killed as epoch 2 begins or in its
    # middle, the run resumes at its beginning, not at epoch 1, and --checkpoint_every
    # does not change what the run computes.
    out = str(tmp_path / "killed")
    run(tiny_dir, out, kill=point)
    assert (partial(out, "teacher")["epoch"], partial(out, "teacher")["step"]) == (1, 0)
    output = run(tiny_dir, out)
    assert "Teacher: resumed at epoch 2/3, step 0/8 (from its checkpoint)" in output
    assert "Teacher epoch 1/3" not in output and "Teacher epoch 2/3" in output
    assert_same_results(uninterrupted, out)
