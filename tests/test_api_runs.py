"""The Python API's run directory behaves as the command line's: it records its settings,
resumes with the same ones, returns a finished run without running it again, refuses
other settings, damage and a busy directory in one line, loads checkpoints safely only,
and shows epkd_tf's progress lines (issue 25)."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pytest

import tf_keras

from tiny_data import quadrant_digits

SETTINGS = dict(iterations=2, pruners=("l1_filter",), keep_ratio=0.6, finetune_epochs=1,
                batch_size=64, latency_runs=2)


@pytest.fixture(scope="module")
def arrays():
    x, y = quadrant_digits(np.random.default_rng(0), 320)
    x = x[..., None].astype("float32") / 255.0
    return (x[:256], y[:256]), (x[256:], y[256:])


def dense_teacher(arrays, seed=0):
    (x, y), _ = arrays
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((12, 12, 1))
    hidden = tf_keras.layers.Dense(16, activation="relu")(tf_keras.layers.Flatten()(inputs))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4)(hidden))
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def teacher(arrays):
    return dense_teacher(arrays)


@pytest.fixture(scope="module")
def finished(teacher, arrays, tmp_path_factory):
    """A finished two-iteration API run (copied by each test that changes it)."""
    out = str(tmp_path_factory.mktemp("api_runs") / "finished")
    train, test = arrays
    epkd_tf.compress(teacher, train, test, output_dir=out, progress=False, **SETTINGS)
    return out


@pytest.fixture
def copy_of(tmp_path):
    def copy(path, name=None):
        target = str(tmp_path / (name or os.path.basename(path)))
        shutil.copytree(path, target)
        return target
    return copy


def snapshot(directory):
    """{relative path: sha256} of every file under ``directory``."""
    found = {}
    for folder, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


def compress(teacher, arrays, out, **changes):
    train, test = arrays
    return epkd_tf.compress(teacher, train, test, output_dir=out, progress=False,
                            **{**SETTINGS, **changes})


# -- 1. the settings are recorded; a finished run is returned; other settings refused --------
@pytest.mark.integration
def test_a_finished_run_is_returned_as_it_is(finished, teacher, arrays, copy_of):
    out = copy_of(finished)
    before = snapshot(out)
    result = compress(teacher, arrays, out)
    assert snapshot(out) == before                  # nothing appended (timings.csv: none)
    assert result.final_iteration == 2 and len(result.students) == 2
    with open(os.path.join(out, "flags.txt"), encoding="utf-8") as f:
        text = f.read()
    assert "--iterations=2\n" in text and "--pruners=l1_filter\n" in text
    assert "# teacher weights sha256: " in text


@pytest.mark.integration
@pytest.mark.parametrize("change, named", [
    (dict(settings=dict(max_accuracy_drop=1.5)), "(max_accuracy_drop)"),
    (dict(settings=dict(iterations=3, keep_ratio=0.5)), "(iterations, keep_ratio)"),
    (dict(teacher_seed=1), "the teacher's weights"),
    (dict(flip_label=True), "the train/test arrays"),
])
def test_other_settings_are_refused_in_one_line(finished, teacher, arrays, copy_of, change,
                                                 named):
    out = copy_of(finished)
    before = snapshot(out)
    if "teacher_seed" in change:
        teacher = dense_teacher(arrays, seed=change["teacher_seed"])
    if change.get("flip_label"):
        (x, y), test = arrays
        y = y.copy()
        y[0] = (y[0] + 1) % 4
        arrays = ((x, y), test)
    with pytest.raises(epkd_tf.ConfigError) as err:
        compress(teacher, arrays, out, **change.get("settings", {}))
    message = str(err.value)
    assert "\n" not in message and named in message and "overwrite=True" in message
    assert snapshot(out) == before


@pytest.mark.integration
def test_overwrite_runs_again_with_the_new_settings(finished, teacher, arrays, copy_of):
    out = copy_of(finished)
    result = compress(teacher, arrays, out, iterations=1, overwrite=True)
    assert len(result.students) == 1
    assert result.tables["students"].iteration.tolist() == [1]
    with open(os.path.join(out, "flags.txt"), encoding="utf-8") as f:
        assert "--iterations=1\n" in f.read()


@pytest.mark.integration
def test_an_unfinished_run_resumes_with_the_same_settings(teacher, arrays, tmp_path,
                                                          monkeypatch):
    from epkd_tf import faults
    from epkd_tf.records import RunDir
    out = str(tmp_path / "run")
    monkeypatch.setenv(faults.FAIL_ENV, "ENOSPC@iteration_1_done")
    with pytest.raises(epkd_tf.RunFailure) as failed:          # one line, the package's
        compress(teacher, arrays, out)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("no space left on the device")
    assert "call again with the same output_dir to resume" in message
    assert isinstance(failed.value.__cause__, OSError)
    monkeypatch.delenv(faults.FAIL_ENV)
    kept = RunDir(out).tables.read_completed("timings")
    with pytest.raises(epkd_tf.ConfigError, match=r"different settings \(keep_ratio\)"):
        compress(teacher, arrays, out, keep_ratio=0.5)
    result = compress(teacher, arrays, out)
    assert result.tables["students"].iteration.tolist() == [1, 2]
    timings = result.tables["timings"]
    done = timings[timings.iteration == 1].reset_index(drop=True)    # kept, not redone
    assert done.equals(kept[kept.iteration == 1].reset_index(drop=True)) and len(done)


@pytest.mark.integration
def test_a_directory_that_holds_no_run_is_refused(teacher, arrays, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("not a run")
    with pytest.raises(epkd_tf.RunDirError, match="holds no epkd_tf run"):
        compress(teacher, arrays, str(out))
    assert sorted(os.listdir(out)) == ["mine.txt"]


# -- 3. checkpoints are loaded safely; 5. damage is refused or redone ---------------------
@pytest.mark.integration
def test_a_planted_checkpoint_is_never_loaded(finished, teacher, arrays, copy_of, tmp_path):
    from epkd_tf.files import file_digest
    from planted_models import tfop_write_file
    marker = str(tmp_path / "pwned")
    planted, _ = tfop_write_file(str(tmp_path), marker)
    out = copy_of(finished)
    path = os.path.join(out, "checkpoints", "student_1.keras")
    shutil.copy(planted, path)
    progress_file = os.path.join(out, "progress.json")
    with open(progress_file, encoding="utf-8") as f:
        state = json.load(f)
    for record in state["stages"]:        # forged to match: only the loader stands guard
        if "checkpoints/student_1.keras" in record["files"]:
            record["files"]["checkpoints/student_1.keras"] = file_digest(path)
    with open(progress_file, "w", encoding="utf-8") as f:
        json.dump(state, f)
    with pytest.raises(epkd_tf.DamagedRunError, match="TF-op layer") as err:
        compress(teacher, arrays, out)
    assert "\n" not in str(err.value)
    assert not os.path.exists(marker)


@pytest.mark.integration
def test_damage_is_refused_in_one_line(finished, teacher, arrays, copy_of):
    out = copy_of(finished)
    students = os.path.join(out, "students.csv")
    with open(students, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    row = lines[1].rstrip("\n").split(",")
    column = header.index("test_accuracy")
    row[column] = "0.9999"                  # an edited result of iteration 1
    lines[1] = ",".join(row) + "\n"
    with open(students, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    with pytest.raises(epkd_tf.DamagedRunError, match="students.csv") as err:
        compress(teacher, arrays, out)
    assert "\n" not in str(err.value) and "pass overwrite=True" in str(err.value)

    out = copy_of(finished, "flipped")
    checkpoint = os.path.join(out, "checkpoints", "student_1.keras")
    with open(checkpoint, "r+b") as f:
        f.seek(os.path.getsize(checkpoint) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(epkd_tf.DamagedRunError, match="student_1.keras"):
        compress(teacher, arrays, out)


# -- 4. one call per directory --------------------------------------------------------------
@pytest.mark.integration
def test_a_busy_directory_is_refused_before_anything_is_written(teacher, arrays, tmp_path):
    from epkd_tf.records import RunDir
    out = str(tmp_path / "busy")
    with RunDir(out).lock():        # held as another process's run holds it
        with pytest.raises(epkd_tf.DirectoryBusyError,
                           match=f"in use by another epkd_tf process \\(PID {os.getpid()}\\)"):
            compress(teacher, arrays, out)
        assert os.listdir(out) == [".lock"]


# -- 2. progress lines by default, silenced on request, the console restored ---------------
@pytest.mark.integration
def test_progress_lines_by_default_and_nothing_left_installed(teacher, arrays, capfd):
    from epkd_tf.console import _NATIVE_LINE
    logger = logging.getLogger("epkd_tf")
    handlers, fd2 = list(logger.handlers), os.fstat(2)
    train, test = arrays
    settings = dict(SETTINGS, iterations=1)
    epkd_tf.compress(teacher, train, test, **settings)
    err = capfd.readouterr().err
    assert "epkd_tf: Iteration 1 candidate #1 l1_filter" in err
    assert "epkd_tf: Iteration 1 distillation (T=50) epoch 1/1" in err
    assert "epkd_tf: Iteration 1/1 done; elapsed" in err and "ETA" in err
    assert not [line for line in err.splitlines() if _NATIVE_LINE.match(line)]
    assert logger.handlers == handlers and os.path.samestat(os.fstat(2), fd2)

    epkd_tf.compress(teacher, train, test, progress=False, **settings)
    err = capfd.readouterr().err
    assert "epkd_tf: Iteration" not in err and "candidate #1" not in err
    assert logger.handlers == handlers and os.path.samestat(os.fstat(2), fd2)


# -- the one settings record and comparison the command line and the API share ------------
@pytest.mark.unit
def test_the_command_line_and_the_api_read_each_others_settings_record():
    from absl import flags
    from epkd_tf.cli.common import differing_flags, flags_text
    from epkd_tf.config import RunConfig
    from epkd_tf.records.settings_record import differing_settings, settings_text
    from epkd_tf.settings import define_flags, from_flags, with_flags
    values = flags.FlagValues()
    names = define_flags(RunConfig(), values)
    values(["epkd", "--iterations=2", "--max_accuracy_drop=1", "--noexport_candidates",
            "--export_formats=", "--pruners=l1_filter,taylor"])
    cfg = from_flags(RunConfig(), values)
    cli, api = flags_text(cfg, values, names), settings_text(cfg, {"note": "x"})
    assert [line for line in api.splitlines() if not line.startswith("#")] == \
        cli.splitlines()                              # the same lines, in the same order
    assert differing_settings(cli, cfg) == differing_settings(api, cfg) == []
    assert differing_flags(api, cli, values, names) == []
    # As values: 1 and 1.0 are one float; the run's own directory never differs.
    assert differing_settings(cli.replace("=1.0\n", "=1\n"), cfg) == []
    assert differing_settings(cli, with_flags(cfg, output_dir="elsewhere")) == []
    assert differing_settings(cli, with_flags(cfg, max_accuracy_drop=1.5,
                                              export_candidates=True)) == \
        ["export_candidates", "max_accuracy_drop"]
    assert differing_settings(cli, with_flags(cfg, max_accuracy_drop=None)) == \
        ["max_accuracy_drop"]
    # A setting the record lacks (added to epkd_tf later) is its default.
    old = "".join(line + "\n" for line in cli.splitlines() if "latency_runs" not in line)
    assert differing_settings(old, cfg) == []
    assert differing_settings(old, with_flags(cfg, latency_runs=7)) == ["latency_runs"]
    # A setting the new settings leave unused (--drop_patience without the drop rule)
    # differs only when the record gave it another value than its default.
    patient = settings_text(with_flags(cfg, drop_patience=2), {})
    assert "--drop_patience=2" in patient.splitlines()
    assert differing_settings(patient, with_flags(cfg, max_accuracy_drop=None)) == \
        ["drop_patience", "max_accuracy_drop"]


@pytest.mark.unit
def test_an_empty_export_formats_means_no_exports_in_both_paths():
    from absl import flags
    from epkd_tf.config import RunConfig
    from epkd_tf.settings import define_flags, from_flags, with_flags
    values = flags.FlagValues()
    define_flags(RunConfig(), values)
    values(["epkd", "--export_formats="])
    assert from_flags(RunConfig(), values).export_formats == ()
    assert with_flags(RunConfig(), export_formats="").export_formats == ()
    assert with_flags(RunConfig(), export_formats=" tflite, ").export_formats == ("tflite",)
    with pytest.raises(epkd_tf.ConfigError, match="--export_formats='magic' is invalid"):
        with_flags(RunConfig(), export_formats="magic")


@pytest.mark.unit
def test_the_api_console_is_restored_after_the_call(capfd):
    import warnings
    from absl import logging as absl_logging
    from epkd_tf.console import api_console
    logger = logging.getLogger("epkd_tf")
    before = (list(logger.handlers), logger.level, logger.propagate,
              logging.getLogger("tensorflow").level, absl_logging.get_verbosity(),
              list(warnings.filters))
    fd2 = os.fstat(2)
    with api_console(progress=True, verbose=0):
        logger.info("a progress line")
        os.write(2, b"I0000 00:00:1.5 42 port.cc:153] a native line\nkept\n")
    with api_console(progress=False, verbose=0):
        logger.info("a silenced line")
        logger.warning("warning: a warning")
    err = capfd.readouterr().err
    assert "epkd_tf: a progress line" in err and "kept" in err
    assert "native line" not in err and "silenced" not in err and "a warning" in err
    assert (list(logger.handlers), logger.level, logger.propagate,
            logging.getLogger("tensorflow").level, absl_logging.get_verbosity(),
            list(warnings.filters)) == before
    assert os.path.samestat(os.fstat(2), fd2)
