"""Writing examples as a TFDS dataset in ``data_dir`` that loads by name, atomically: the
common end of the npz and image-folder imports.

The dataset is built by TFDS's ad-hoc builder in a temporary directory inside ``data_dir``
and renamed into place only when complete, so a failure at any point (bad input found
while writing, a full disk, an interrupt) leaves ``data_dir`` as it was -- including not
creating it. Callers validate everything they can *before* calling :func:`write_dataset`.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import errno
import os
import re
import shutil
import tempfile
from typing import Dict, Iterable, Tuple

import tensorflow_datasets as tfds

from epkd_tf.data.dirs import check_data_dir, writable_error
from epkd_tf.data.source import DataError

__all__ = ["SupervisedAdhocBuilder", "check_name", "target_dir", "refuse_existing",
           "write_dataset"]

# Version written by the imports: "mnist" must match the TFDS catalogue version so that the
# registered MNIST builder finds it; other names are loaded from their directory.
CATALOGUE_VERSIONS = {"mnist": "3.0.1"}
DEFAULT_VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class SupervisedAdhocBuilder(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
    """AdhocBuilder that also records supervised keys, so ``as_supervised=True`` loads.

    ``_info`` is the hook every TFDS builder defines (the documented builder interface);
    what it describes is kept here rather than read back from AdhocBuilder's private
    attributes."""

    def __init__(self, *, features, description=None, disable_shuffling=False, **kwargs):
        self._supervised_info = dict(
            description=description or "Dataset built without a DatasetBuilder class.",
            features=features, disable_shuffling=disable_shuffling)
        super().__init__(features=features, description=description,
                         disable_shuffling=disable_shuffling, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"),
                                     **self._supervised_info)


def check_name(name) -> str:
    """``name`` if it is a valid dataset name, else DataError naming ``--name``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DataError(f"--name={name!r} is not a valid dataset name: use lower-case letters, "
                        f"digits and underscores, starting with a letter (e.g. my_digits).")
    return name


def target_dir(name: str, data_dir: str) -> Tuple[str, str]:
    """(absolute data_dir, the version directory dataset ``name`` will occupy); DataError
    for a bad name or data_dir. Creates nothing."""
    check_name(name)
    data_dir = check_data_dir(data_dir)
    version = CATALOGUE_VERSIONS.get(name, DEFAULT_VERSION)
    return data_dir, os.path.join(data_dir, name, version)


def refuse_existing(name: str, target: str, overwrite: bool) -> None:
    """DataError if a prepared dataset is at ``target`` and not to be overwritten."""
    if os.path.exists(os.path.join(target, "dataset_info.json")) and not overwrite:
        raise DataError(f"--name={name!r} is already prepared at {target}: pass --overwrite "
                        f"(overwrite=True) to replace it or choose another name.")


def write_dataset(name: str, data_dir: str, target: str, features: tfds.features.FeaturesDict,
                  splits: Dict[str, Iterable[Tuple[object, dict]]], description: str) -> str:
    """Writes ``splits`` (split name -> iterable of ``(key, {"image": ..., "label": ...})``
    in the order to keep) with ``features`` as dataset ``name`` at ``target`` (from
    :func:`target_dir`), replacing what is there; returns ``target``.

    Nothing is left behind on failure: the build happens in ``data_dir/.import_<name>_*``
    and directories created for it (``data_dir`` itself included) are removed again. An
    OSError writing becomes a DataError naming ``--data_dir``; other errors (e.g. a
    DataError raised by an example generator) propagate unchanged.
    """
    created = []  # directories this call created, deepest first
    path = data_dir
    while not os.path.exists(path) and os.path.dirname(path) != path:
        created.append(path)
        path = os.path.dirname(path)
    tmp = None
    try:
        try:
            os.makedirs(data_dir, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".import_{name}_", dir=data_dir)
        except OSError as err:
            raise writable_error(data_dir, err) from None
        version = os.path.basename(target)
        builder = SupervisedAdhocBuilder(
            name=name, version=version, features=features, split_datasets=splits,
            data_dir=tmp, description=description, disable_shuffling=True)
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
                raise writable_error(data_dir, err) from None
            raise
        built = os.path.join(tmp, name, version)
        if not os.path.exists(os.path.join(built, "dataset_info.json")):
            raise RuntimeError(f"TFDS did not write {built}/dataset_info.json.")
        _move_into_place(built, target, os.path.join(tmp, "replaced"), created, data_dir)
        created = []
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for path in created:  # only what this call made, and only if empty
            try:
                os.rmdir(path)
            except OSError:
                pass
    return target


def _move_into_place(built: str, target: str, aside: str, created: list,
                     data_dir: str) -> None:
    """Renames ``built`` to ``target``; a dataset already at ``target`` is moved to
    ``aside`` first (and back if the rename fails)."""
    parent = os.path.dirname(target)
    moved = False
    try:
        if not os.path.isdir(parent):
            os.makedirs(parent)
            created.insert(0, parent)
        if os.path.exists(target):  # overwrite (or a stray, unprepared directory)
            os.rename(target, aside)
            moved = True
        os.rename(built, target)
    except OSError as err:
        if moved and not os.path.exists(target):
            os.rename(aside, target)
        raise writable_error(data_dir, err) from None
