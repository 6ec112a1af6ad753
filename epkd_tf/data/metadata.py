"""A prepared TFDS dataset's metadata, checked before TFDS reads it.

TFDS rebuilds a dataset's features from the ``features.json`` (or the ``features`` of
``dataset_info.json``) of its directory, and imports the module each ``pythonClassName``
names so that a custom feature class can register itself: a prepared directory naming
``helpers.Image`` would make TFDS import a ``helpers.py`` lying in the working directory
(``python -m`` puts it first on ``sys.path``). :func:`check_prepared` reads those files as
JSON, without TFDS, and refuses every class name that is not one of TFDS's own feature
classes (:func:`tfds_feature_classes`), before any builder sees the directory.
"""
from __future__ import annotations

import json
import os
from typing import Any, FrozenSet, Iterator

from epkd_tf.data.source import DataError
from epkd_tf.files import not_regular, read_text

__all__ = ["check_prepared", "tfds_feature_classes"]

# The files of a prepared version directory TFDS restores features from.
METADATA_FILES = ("features.json", "dataset_info.json")
# Where a name's prepared versions lie: <name>/<version> or <name>/<config>/<version>.
_DEPTH = 2


def tfds_feature_classes() -> FrozenSet[str]:
    """The ``pythonClassName`` values a dataset's metadata may hold: TFDS's own feature
    classes (``tensorflow_datasets.core.features.image_feature.Image``...), those TFDS has
    registered on import, so restoring them imports nothing."""
    from epkd_tf import compat
    return compat.tfds_feature_classes()


def _class_names(node: Any) -> Iterator[str]:
    """Every feature class name a features JSON (either format) holds: ``pythonClassName``
    (``python_class_name`` in the proto's other JSON spelling) and the legacy ``type`` of
    a ``{"type": ..., "content": ...}`` entry, and its ``proto_cls``."""
    if isinstance(node, list):
        for item in node:
            yield from _class_names(item)
    elif isinstance(node, dict):
        for key in ("pythonClassName", "python_class_name"):
            if key in node:
                yield node[key]
        if "type" in node and "content" in node:
            yield node["type"]
        for value in node.values():
            yield from _class_names(value)


def _metadata_files(root: str, flag: str) -> Iterator[str]:
    """The metadata files below ``root`` (the dataset's directory), to the depth TFDS
    looks; linked directories are followed as TFDS follows them. DataError for any entry
    there that is not a directory or a regular file: TFDS would block opening a FIFO
    (a shard, ``label.labels.txt``...) or never finish reading a device."""
    for directory, dirs, files in os.walk(root, followlinks=True):
        depth = os.path.relpath(directory, root).count(os.sep) + (directory != root)
        if depth >= _DEPTH:
            dirs[:] = []
        for name in files:
            path = os.path.join(directory, name)
            problem = not_regular(path)
            if problem:
                raise DataError(f"{flag}: {path} {problem}; a prepared dataset holds "
                                f"regular files only.")
            if name in METADATA_FILES:
                yield path


def check_file(path: str, allowed: FrozenSet[str], flag: str = "--dataset") -> None:
    """DataError unless ``path`` (a features.json or dataset_info.json) is a regular UTF-8
    JSON file whose feature class names are all in ``allowed``."""
    try:
        content = json.loads(read_text(path))
    except ValueError as err:       # read_text's reasons; json.JSONDecodeError
        reason = str(err) if not isinstance(err, json.JSONDecodeError) \
            else f"is not valid JSON ({err.msg}, line {err.lineno})"
        raise DataError(f"{flag}: {path} {reason}; re-prepare the dataset.") from None
    if os.path.basename(path) == "dataset_info.json":
        content = content.get("features") if isinstance(content, dict) else None
    for name in _class_names(content):
        if name not in allowed:
            module = name.rsplit(".", 1)[0] if isinstance(name, str) else name
            raise DataError(f"{flag}: {path} names the feature class {name!r}, which is not "
                            f"one of TFDS's own (reading it would import {module!r}); "
                            f"only datasets of TFDS's built-in features are read.")


def check_prepared(data_dir: str, name: str, flag: str = "--dataset") -> None:
    """Checks the metadata of every prepared version of dataset ``name`` in ``data_dir``
    before TFDS reads any of it.

    Args:
        data_dir: the TFDS data directory.
        name: the dataset name as TFDS is given it (``name``, ``name:1.0.0``,
            ``name/config``).
        flag: how messages name the dataset.

    Raises:
        DataError: a ``features.json`` or ``dataset_info.json`` below
            ``data_dir/<name>`` is not a regular UTF-8 JSON file, or names a feature class
            that is not TFDS's own (one line naming the file and the class); another file
            there is not a regular file (a FIFO shard).
    """
    base = name.split(":")[0].split("/")[0].strip()
    root = os.path.join(data_dir, base)
    if not base or base.startswith(".") or not os.path.isdir(root):
        return
    allowed = tfds_feature_classes()
    for path in _metadata_files(root, flag):
        check_file(path, allowed, flag)
