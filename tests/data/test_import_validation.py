"""Inputs the imports used to accept or crash on (#15 section 4): labels beyond the class
limit, zero-sized images, --data_dir on /proc, /sys or /dev, below a file or unwritable.
Each is one ``error:`` line naming the input, exit status 2 from ``python -m
epkd_tf.data``, and nothing written (no empty data directory either)."""
import epkd_tf  # noqa: F401

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from cli_helpers import error_lines, run_in_process
from data_helpers import indexed_arrays, snapshot, write_npz
from epkd_tf.config import DataConfig
from epkd_tf.data import MAX_CLASSES, DataError, import_npz, load_data
from epkd_tf.cli import data as data_cli
from epkd_tf.data import dirs as dirs_lib

REPO_ROOT = Path(__file__).resolve().parents[2]


def npz_with(tmp_path, **changes):
    arrays = indexed_arrays(10, 4, classes=2)
    for key, change in changes.items():
        arrays[key] = change(arrays[key])
    return write_npz(tmp_path / "in.npz", **arrays)


def cli_error(capsys, *args):
    """(exit status, the one error line) of python -m epkd_tf.data run in-process."""
    status = run_in_process(data_cli, list(args))
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return status, lines[0]


@pytest.mark.unit
@pytest.mark.parametrize("change, fragments", [
    (dict(y_train=lambda y: np.full(len(y), 2 ** 63, np.uint64)),
     ["y_train has the label 9223372036854775808", f"below {MAX_CLASSES}"]),
    (dict(y_test=lambda y: np.where(y == 1, 10 ** 9, y)),
     ["y_test has the label 1000000000", f"at most {MAX_CLASSES} classes"]),
    (dict(x_train=lambda x: np.zeros((10, 0, 0), np.uint8),
          x_test=lambda x: np.zeros((4, 0, 0), np.uint8)),
     ["x_train has shape (10, 0, 0)", "at least 1 x 1 pixels"]),
    (dict(x_test=lambda x: np.zeros((4, 6, 0), np.uint8)), ["x_test has shape (4, 6, 0)"]),
    (dict(x_train=lambda x: np.zeros((10, 6, 6, 0), np.uint8)),
     ["x_train has shape (10, 6, 6, 0)", "C in 1..4"]),
])
def test_npz_inputs_beyond_the_limits_are_refused(tmp_path, capsys, change, fragments):
    npz = npz_with(tmp_path, **change)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError) as err:
        import_npz(npz, "bad", str(data_dir))
    for fragment in fragments + [f"--import_npz={npz!r}"]:
        assert fragment in str(err.value), (fragment, str(err.value))
    status, line = cli_error(capsys, f"--import_npz={npz}", "--name=bad",
                             f"--data_dir={data_dir}")
    assert status == 2 and fragments[0] in line
    assert not data_dir.exists()


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_npz_that_is_not_a_regular_file_is_refused_without_blocking(kind, tmp_path,
                                                                       capsys):
    npz = str(tmp_path / "pipe.npz")
    if kind == "fifo":
        os.mkfifo(npz)                      # np.load would block opening it
    else:
        npz = os.devnull
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError, match=rf"--import_npz={npz!r} is not a regular file"):
        import_npz(npz, "bad", str(data_dir))
    status, line = cli_error(capsys, f"--import_npz={npz}", "--name=bad",
                             f"--data_dir={data_dir}")
    assert status == 2 and "is not a regular file" in line
    assert not data_dir.exists()


@pytest.fixture
def inputs(tmp_path):
    """An importable npz and image folder."""
    npz = npz_with(tmp_path)
    folder = tmp_path / "pics"
    import tensorflow as tf
    for split in ("train", "test"):
        for name in ("a", "b"):
            os.makedirs(folder / split / name)
            tf.io.write_file(str(folder / split / name / "0.png"),
                             tf.io.encode_png(tf.zeros((4, 4, 1), tf.uint8)))
    return {"import_npz": npz, "import_folder": str(folder)}


SPECIAL = [("/proc/epkd_test_data", "proc"), ("/proc/self", "proc"),
           ("/sys/epkd_test_data", "sysfs"), ("/dev/epkd_test_data", "devtmpfs")]


@pytest.mark.unit
@pytest.mark.parametrize("flag", ["import_npz", "import_folder"])
@pytest.mark.parametrize("data_dir, kind", SPECIAL)
def test_imports_refuse_pseudo_file_systems(inputs, capsys, flag, data_dir, kind):
    if dirs_lib.filesystem_type(data_dir) != kind:
        pytest.skip(f"{data_dir} is not on {kind} here")
    existed = os.path.exists(data_dir)
    status, line = cli_error(capsys, f"--{flag}={inputs[flag]}", "--name=x",
                             f"--data_dir={data_dir}")
    assert status == 2 and f"--data_dir={data_dir!r} is on the {kind} pseudo-file" in line
    assert os.path.exists(data_dir) == existed


@pytest.mark.unit
@pytest.mark.parametrize("data_dir, kind", SPECIAL)
def test_loading_refuses_pseudo_file_systems(data_dir, kind):
    if dirs_lib.filesystem_type(data_dir) != kind:
        pytest.skip(f"{data_dir} is not on {kind} here")
    with pytest.raises(DataError, match=f"--data_dir={data_dir!r} is on the {kind}"):
        load_data(DataConfig(dataset="mnist", data_dir=data_dir))


@pytest.mark.unit
@pytest.mark.parametrize("flag", ["import_npz", "import_folder"])
def test_imports_refuse_a_data_dir_below_a_file(inputs, tmp_path, capsys, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    status, line = cli_error(capsys, f"--{flag}={inputs[flag]}", "--name=x",
                             f"--data_dir={blocker / 'tfds'}")
    assert status == 2 and f"lies below the file {blocker}" in line
    status, line = cli_error(capsys, f"--{flag}={inputs[flag]}", "--name=x",
                             f"--data_dir={blocker}")
    assert status == 2 and "is a file" in line
    assert blocker.read_text() == "x"


@pytest.mark.unit
@pytest.mark.parametrize("flag", ["import_npz", "import_folder"])
def test_an_unwritable_data_dir_is_one_line_and_left_as_it_was(inputs, tmp_path, capsys,
                                                               monkeypatch, flag):
    """(Permission bits do not stop root, so the refusal is simulated where the imports
    first write: the temporary build directory.)"""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    data_dir = tmp_path / "new" / "tfds"
    status, line = cli_error(capsys, f"--{flag}={inputs[flag]}", "--name=x",
                             f"--data_dir={data_dir}")
    assert status == 2 and f"--data_dir={str(data_dir)!r} cannot be written (permission " \
                           f"denied)" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.unit
def test_a_download_into_an_unwritable_data_dir_is_refused(tmp_path, monkeypatch):
    def offline(*args, **kwargs):  # never reached: the directory is refused first
        raise requests.exceptions.ConnectionError("no network in this test")

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", offline)
    monkeypatch.setattr(dirs_lib.os, "makedirs", refuse)
    data_dir = tmp_path / "ro" / "tfds"
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="mnist", data_dir=str(data_dir)))
    assert "cannot be written (read-only file system)" in str(err.value)
    assert not (tmp_path / "ro").exists()


@pytest.mark.unit
def test_npz_import_leaves_nothing_when_writing_fails_late(tmp_path, monkeypatch):
    """A failure inside TFDS's writing (here: a full disk) removes the temporary build and
    the data directory it created."""
    from epkd_tf.data.writer import SupervisedAdhocBuilder

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SupervisedAdhocBuilder, "download_and_prepare", disk_full)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError, match="cannot be written \\(no space left"):
        import_npz(npz_with(tmp_path), "x", str(data_dir))
    assert not data_dir.exists()
    existing = tmp_path / "existing"
    (existing / "other").mkdir(parents=True)
    before = snapshot(existing)
    with pytest.raises(DataError):
        import_npz(npz_with(tmp_path), "x", str(existing))
    assert snapshot(existing) == before


@pytest.mark.e2e
def test_exit_status_of_the_real_command(inputs):
    result = subprocess.run(
        [sys.executable, "-m", "epkd_tf.data", f"--import_npz={inputs['import_npz']}",
         "--name=x", "--data_dir=/proc/epkd_test_data"],
        capture_output=True, text=True, timeout=120, cwd=str(REPO_ROOT),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "--data_dir='/proc/epkd_test_data'" in lines[0], result.stderr


# -- prepared data the run could not read (issue 25: tracebacks after the run directory) --
@pytest.mark.unit
def test_a_file_imported_under_a_catalogue_name_of_another_shape_is_refused(tmp_path,
                                                                           capsys):
    from epkd_tf.cli import main as epkd_main
    data_dir = str(tmp_path / "tfds")
    import_npz(write_npz(tmp_path / "in.npz", **indexed_arrays(10, 4, classes=2)), "cifar10",
               data_dir)
    with pytest.raises(DataError, match=r"^--dataset='cifar10' holds images of shape "
                                        r"\(6, 6, 1\), but the preprocessing of cifar10 .* "
                                        r"makes model inputs of shape \(6, 6, 3\)"):
        load_data(DataConfig(dataset="cifar10", data_dir=data_dir, download=False))
    out = tmp_path / "run"
    status = run_in_process(epkd_main, [f"--data_dir={data_dir}", "--dataset=cifar10",
                                        f"--output_dir={out}", "--nodownload"])
    lines = error_lines(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1 and "holds images of shape" in lines[0], lines
    assert not out.exists()
    # Under a name of its own it gets the default preprocessing and loads.
    import_npz(str(tmp_path / "in.npz"), "my_cifar10", data_dir)
    assert load_data(DataConfig(dataset="my_cifar10", data_dir=data_dir)).spec.input_shape \
        == (6, 6, 1)


@pytest.mark.unit
def test_prepared_files_in_a_format_the_loader_cannot_read_are_refused(tmp_path, capsys):
    import json
    from epkd_tf.cli import main as epkd_main
    data_dir = str(tmp_path / "tfds")
    target = import_npz(npz_with(tmp_path), "digits", data_dir)
    info_file = os.path.join(target, "dataset_info.json")
    info = json.load(open(info_file))
    assert info["fileFormat"] == "tfrecord"
    info["fileFormat"] = "array_record"
    json.dump(info, open(info_file, "w"))
    with pytest.raises(DataError, match=r"^--dataset='digits': .*dataset_info.json gives "
                                        r"fileFormat 'array_record', which epkd_tf cannot "
                                        r"read"):
        load_data(DataConfig(dataset="digits", data_dir=data_dir))
    out = tmp_path / "run"
    status = run_in_process(epkd_main, [f"--data_dir={data_dir}", "--dataset=digits",
                                        f"--output_dir={out}"])
    lines = error_lines(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1 and "fileFormat 'array_record'" in lines[0], lines
    assert not out.exists()
