"""Issue 24, part 3: trainings checkpointed inside epochs (epkd_tf/epochs.py) — the
--checkpoint_every setting, the verification of a training's checkpoint before a resume
uses it, the stage ledger removing it once its stage completes, and progress lines inside
long epochs. (The kills and resumes themselves: tests/test_resume_epochs.py.)"""
import json
import logging
import os

import numpy as np
import pytest

import tf_keras
from cli_helpers import error_lines, run_in_process
from epkd_tf import epochs
from epkd_tf.cli import main as epkd_main
from epkd_tf.config import ConfigError, RunConfig, parse_checkpoint_every
from epkd_tf.epochs import StepProgress, TrainingCheckpoint
from epkd_tf.records import RunDir

IDENTITY = {"epochs": 3, "steps_per_epoch": 8, "batch_size": 32, "seed": 0}


@pytest.mark.unit
@pytest.mark.parametrize("text, expected", [
    ("0", (0, 0.0)), ("", (0, 0.0)), ("500", (500, 0.0)), ("10min", (0, 600.0)),
    ("0.5min", (0, 30.0)), (" 2MIN ", (0, 120.0))])
def test_checkpoint_every_reads_steps_or_minutes(text, expected):
    assert parse_checkpoint_every(text) == expected
    assert parse_checkpoint_every(RunConfig(checkpoint_every=text).checkpoint_every) == expected


@pytest.mark.unit
@pytest.mark.parametrize("text", ["soon", "-3", "0min", "10 s", "1.5", "10h", "min"])
def test_a_bad_checkpoint_every_is_refused_in_one_line(text):
    assert parse_checkpoint_every(text) is None
    with pytest.raises(ConfigError) as err:
        RunConfig(checkpoint_every=text)
    message = str(err.value)
    assert "\n" not in message and "--checkpoint_every" in message and "10min" in message


@pytest.mark.unit
def test_the_command_line_refuses_a_bad_checkpoint_every_with_status_2(tmp_path, capsys):
    code = run_in_process(epkd_main, [f"--output_dir={tmp_path / 'run'}",
                                      "--checkpoint_every=often"])
    assert code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--checkpoint_every='often'" in lines[0]
    assert not os.path.exists(tmp_path / "run")


def compiled_model(seed=0):
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((4,))
    hidden = tf_keras.layers.Dense(5, activation="relu")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(hidden))
    model.compile(tf_keras.optimizers.Adam(1e-3),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def saved(tmp_path, epoch=1, step=2, identity=IDENTITY):
    """A run directory holding a teacher checkpoint of a model whose optimizer moments
    were set by hand (no training: what matters is that they come back)."""
    run = RunDir(str(tmp_path / "run"))
    model = compiled_model()
    epochs._build_optimizer(model)
    for i, variable in enumerate(model.optimizer.variables):
        variable.assign(np.full(variable.shape, i + 0.5, variable.dtype.as_numpy_dtype))
    checkpoint = TrainingCheckpoint(run, "teacher", identity)
    checkpoint.save(model, epoch, step, {"loss": [0.75]}, [np.float32(3.0), np.float32(4.0)])
    return run, model, checkpoint


@pytest.mark.unit
def test_a_checkpoint_restores_weights_optimizer_history_and_metrics(tmp_path):
    run, model, _ = saved(tmp_path)
    assert os.path.dirname(run.partial_checkpoint("teacher", "npz")) == run.path(
        "checkpoints", "partial")
    fresh = compiled_model(seed=1)
    state = TrainingCheckpoint(run, "teacher", dict(IDENTITY)).restore(fresh, 3, 8)
    assert (state["epoch"], state["step"], state["history"]) == (1, 2, {"loss": [0.75]})
    assert [float(m) for m in state["metrics"]] == [3.0, 4.0]
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, fresh.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def damage_arrays(run):
    path = run.partial_checkpoint("teacher", "npz")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def damage_record(run):
    path = run.partial_checkpoint("teacher", "json")
    open(path, "w").write(open(path).read()[:40])


def other_epoch(run):
    path = run.partial_checkpoint("teacher", "json")
    meta = json.load(open(path))
    meta["epoch"] = 7
    open(path, "w").write(json.dumps(meta))


def no_arrays(run):
    os.remove(run.partial_checkpoint("teacher", "npz"))


@pytest.mark.unit
@pytest.mark.parametrize("damage, why", [
    (damage_arrays, "its arrays are"), (damage_record, "not readable"),
    (other_epoch, "lie outside the training's 3 epochs"), (no_arrays, "missing")])
def test_a_damaged_checkpoint_is_ignored_with_a_warning_and_removed(tmp_path, caplog, damage,
                                                                      why):
    run, _, _ = saved(tmp_path)
    os.makedirs(os.path.join(run.tensorboard_dir("teacher"), "train"))
    damage(run)
    fresh = compiled_model(seed=1)
    before = fresh.get_weights()
    with caplog.at_level(logging.WARNING, logger="epkd_tf"):
        state = TrainingCheckpoint(run, "teacher", IDENTITY).restore(fresh, 3, 8)
    assert state is None
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith("warning: checkpoints/partial/teacher.json")
    assert why in lines[0] and "teacher training starts from its beginning" in lines[0]
    assert not os.path.exists(run.partial_checkpoint("teacher", "json"))
    assert not os.path.exists(run.partial_checkpoint("teacher", "npz"))
    assert not os.path.exists(run.tensorboard_dir("teacher"))    # its epochs start again
    for a, b in zip(before, fresh.get_weights()):      # left as it was
        np.testing.assert_array_equal(a, b)


@pytest.mark.unit
def test_a_checkpoint_of_other_settings_or_another_model_is_not_used(tmp_path, caplog):
    run, _, _ = saved(tmp_path)
    with caplog.at_level(logging.WARNING, logger="epkd_tf"):
        assert TrainingCheckpoint(run, "teacher", dict(IDENTITY, seed=1)).restore(
            compiled_model(), 3, 8) is None
    assert "written with other settings" in caplog.text
    run, _, _ = saved(tmp_path / "b")
    wider = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(6),
                                 tf_keras.layers.Dense(3)])
    wider.compile(tf_keras.optimizers.Adam(), "mse")
    with caplog.at_level(logging.WARNING, logger="epkd_tf"):
        assert TrainingCheckpoint(run, "teacher", IDENTITY).restore(wider, 3, 8) is None
    assert "its weights do not fit the model" in caplog.text


@pytest.mark.unit
def test_a_checkpoint_at_a_step_past_the_epoch_is_refused(tmp_path):
    run, _, checkpoint = saved(tmp_path, epoch=1, step=8)
    with pytest.raises(ValueError, match="step 8 lie outside"):
        checkpoint.read(3, 8)
    assert checkpoint.read(3, 9)["step"] == 8


@pytest.mark.unit
def test_the_ledger_removes_a_stage_s_training_checkpoint_once_the_stage_completes(tmp_path):
    run, _, _ = saved(tmp_path)
    TrainingCheckpoint(run, "finetune_1", IDENTITY).save(compiled_model(), 1, 0, {})
    assert sorted(os.listdir(run.path("checkpoints", "partial"))) == [
        "finetune_1.json", "finetune_1.npz", "teacher.json", "teacher.npz"]
    run.stages.mark(teacher_done=True)
    record = run.stages.progress()["stages"][0]
    assert not [p for p in record["files"] if "partial" in p]     # never a stage's file
    assert sorted(os.listdir(run.path("checkpoints", "partial"))) == [
        "finetune_1.json", "finetune_1.npz"]
    os.makedirs(os.path.join(run.tensorboard_dir("finetune_1"), "train"))
    run.stages.drop_unfinished()       # an unfinished stage's checkpoint stays for it,
    assert os.path.exists(run.partial_checkpoint("finetune_1", "npz"))
    assert os.path.isdir(run.tensorboard_dir("finetune_1"))      # and its logs so far
    run.stages.mark(iterations_done=1)
    assert not os.path.exists(run.path("checkpoints", "partial"))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.unit
def test_progress_lines_inside_an_epoch_are_rare_and_say_steps_speed_and_eta(monkeypatch,
                                                                           caplog):
    clock = Clock()
    monkeypatch.setattr(epochs.time, "monotonic", clock)
    progress = StepProgress("Teacher", 3, 100, 32)
    with caplog.at_level(logging.INFO, logger="epkd_tf"):
        progress.on_epoch_begin(1)
        for batch in range(100):
            clock.now += 1.0            # one second a step: 100 s an epoch
            progress.on_train_batch_end(batch)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Teacher epoch 2/3: step 60/100, 32 examples/s, epoch ETA 40 s"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="epkd_tf"):
        progress.on_epoch_begin(2)
        for batch in range(50):         # an epoch shorter than the interval: no line
            clock.now += 1.0
            progress.on_train_batch_end(batch)
    assert not caplog.records


@pytest.mark.unit
def test_an_epoch_s_augmented_order_is_replayed_and_skipped_exactly(tmp_path):
    """CIFAR-10's pad-crop-flip augmentation (mocked TFDS): the batches of epoch e come
    from (seed, e) alone — a fresh load gives them again — and a resumed epoch's
    ``.skip(k)`` yields the uninterrupted epoch's batches after the k-th, augmentation
    included."""
    from epkd_tf.data import load_data
    from epkd_tf.config import DataConfig
    from epkd_tf.training import epoch_batches
    from mock_tfds import mocked, write_metadata

    def batches(ds):
        return [(x.numpy(), y.numpy()) for x, y in ds]

    meta = write_metadata(tmp_path / "tfds", 12)
    with mocked(meta, 12):
        cfg = DataConfig(data_dir=str(meta), dataset="cifar10", batch_size=5, seed=1)
        first, again = (epoch_batches(load_data(cfg)) for _ in range(2))
        epoch_1, epoch_2 = batches(first(1)), batches(first(2))
        resumed = batches(again(1).skip(1))
    assert len(epoch_1) == 3 and len(resumed) == 2
    for (x, y), (rx, ry) in zip(epoch_1[1:], resumed):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    assert not np.array_equal(epoch_1[0][0], epoch_2[0][0])     # each epoch its own
