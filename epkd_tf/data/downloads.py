"""Preparing a TFDS catalogue dataset that is not in ``--data_dir`` yet, as ``tfds.load``
does (``builder.download_and_prepare()``), and saying how to prepare it where that fails.

Without a network TFDS retries each file for a few minutes before it gives up; the error
then names the dataset, the directory and the ways to prepare that dataset elsewhere
(``tfds build`` on a machine with a network, the manual files ImageNet needs, the npz and
image-folder imports). ``--nodownload`` (``DataConfig.download=False``) refuses at once with
the same instructions.
"""
from __future__ import annotations

import errno
import logging
import os

import tensorflow_datasets as tfds

from epkd_tf.data.dirs import make_dirs, writable_error
from epkd_tf.data.source import DataError

__all__ = ["download_and_prepare", "how_to_prepare", "MANUAL_FILES"]

log = logging.getLogger("epkd_tf")

# Datasets TFDS cannot download: the files to place in <data_dir>/downloads/manual/.
MANUAL_FILES = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}
# Longest exception text quoted in an error line.
_REASON_CHARS = 160


def needs_manual_download(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether TFDS needs files placed by hand to build the dataset."""
    return (builder.info.name in MANUAL_FILES
            or bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)))


def how_to_prepare(name: str, data_dir: str, manual: bool = False) -> str:
    """How to prepare dataset ``name`` in ``data_dir`` without a download here (the end
    of an error line)."""
    manual_dir = os.path.join(data_dir, "downloads", "manual")
    if manual:
        files = MANUAL_FILES.get(name)
        what = (" and ".join(files) + (" (from image-net.org)" if name == "imagenet2012" else "")
                if files else "the files its TFDS catalogue page lists")
        build = (f"place {what} in {manual_dir}/ and run `tfds build {name} "
                 f"--data_dir={data_dir}`")
    else:
        build = (f"on a machine with a network run `tfds build {name} --data_dir=DIR` and "
                 f"copy DIR/{name}/ to {data_dir}/{name}/")
    return (f"{build}, or import your own copy with `python -m epkd_tf.data "
            f"--import_npz=FILE.npz --name={name} --data_dir={data_dir}` (or "
            f"--import_folder=DIR)")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _write_failure(err: BaseException):
    """The local write failure (an OSError) behind ``err``, if it is one, else None."""
    while err is not None:
        if isinstance(err, PermissionError) or (
                isinstance(err, OSError) and err.errno in (errno.EROFS, errno.ENOSPC)):
            return err
        err = err.__cause__ or err.__context__
    return None


def download_and_prepare(builder: tfds.core.DatasetBuilder, name: str, data_dir: str) -> None:
    """``builder.download_and_prepare()`` into ``data_dir`` (created if missing); any
    failure becomes one DataError line saying how to prepare ``name`` instead (the
    original exception is chained for debugging)."""
    manual = needs_manual_download(builder)
    make_dirs(data_dir)
    log.info("%s is not prepared in %s: downloading and preparing it with TFDS "
             "(--nodownload refuses instead)", name, data_dir)
    try:
        builder.download_and_prepare()
    except Exception as err:  # network, checksum, missing manual files, builder errors
        if isinstance(err, DataError):
            raise
        failure = _write_failure(err)
        if failure is not None:
            raise writable_error(data_dir, failure) from err
        what = ("TFDS cannot download it (manual download)" if manual
                else f"downloading it failed ({_reason(err)})")
        raise DataError(f"--dataset={name!r} is not prepared in --data_dir={data_dir} and "
                        f"{what}: {how_to_prepare(name, data_dir, manual)}.") from err
