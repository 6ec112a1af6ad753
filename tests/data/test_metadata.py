"""A prepared dataset's metadata never makes TFDS import a module (epkd_tf/data/metadata.py).

TFDS imports the module of every ``pythonClassName`` a dataset's ``features.json`` (or
``dataset_info.json``) names; with ``python -m`` a ``helpers.py`` in the working directory
is importable. Each planted directory below names such a module; epkd_tf refuses it in one
line before TFDS reads the directory, and the module is never imported.
"""
import epkd_tf  # noqa: F401

import glob
import json
import os
import sys

import pytest

from cli_helpers import error_lines, run_subprocess
from data_helpers import indexed_arrays, write_npz
from epkd_tf.config import DataConfig
from epkd_tf.data import DataError, import_npz, load_data

PLANTED_MODULE = "epkd_planted_features"
IMAGE = "tensorflow_datasets.core.features.image_feature.Image"


def prepared(tmp_path, name="planted"):
    """A dataset prepared by import_npz in tmp_path/data; its version directory."""
    npz = write_npz(tmp_path / "in.npz", **indexed_arrays(8, 4, classes=2))
    import_npz(str(npz), name, str(tmp_path / "data"))
    (version,) = glob.glob(str(tmp_path / "data" / name / "*"))
    return version


def plant_module(directory, marker):
    """A module that creates ``marker`` when it is imported, in ``directory``."""
    with open(os.path.join(directory, f"{PLANTED_MODULE}.py"), "w") as f:
        f.write(f"open({marker!r}, 'w').close()\n")


def edit_json(path, edit):
    with open(path) as f:
        content = json.load(f)
    edit(content, os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(content, f)


def image_class(name):
    def edit(features, version=None):
        features["featuresDict"]["features"]["image"]["pythonClassName"] = name
    return edit


def info_features(content, version):
    """dataset_info.json's own copy of the features (TFDS reads it instead of
    features.json when it is there)."""
    with open(os.path.join(version, "features.json")) as f:
        features = json.load(f)
    image_class(f"{PLANTED_MODULE}.Image")(features)
    content["features"] = features


def legacy(content, version):
    """features.json in TFDS's legacy format: {"type": class, "content": ...}."""
    content.clear()
    content.update({"type": f"{PLANTED_MODULE}.FeaturesDict", "content": {}})


def config(tmp_path, name="planted"):
    return DataConfig(dataset=name, data_dir=str(tmp_path / "data"), batch_size=4,
                      download=False)


@pytest.mark.unit
@pytest.mark.parametrize("file,edit", [
    ("features.json", image_class(f"{PLANTED_MODULE}.Image")),
    ("dataset_info.json", info_features),
    ("features.json", legacy),
])
def test_a_feature_class_outside_tfds_is_never_imported(file, edit, tmp_path, monkeypatch):
    marker = str(tmp_path / "imported")
    version = prepared(tmp_path)
    load_data(config(tmp_path))                     # as prepared, it loads
    edit_json(os.path.join(version, file), edit)
    plant_module(str(tmp_path), marker)
    monkeypatch.syspath_prepend(str(tmp_path))      # as `python -m` run beside it
    with pytest.raises(DataError, match=rf"--dataset: .*{file} names the feature class "
                                        rf"'{PLANTED_MODULE}\.\w+', which is not one of "
                                        rf"TFDS's own") as err:
        load_data(config(tmp_path))
    assert "\n" not in str(err.value)
    assert PLANTED_MODULE not in sys.modules and not os.path.exists(marker)
    # TFDS itself imports it.
    import tensorflow_datasets as tfds
    with pytest.raises(Exception):
        tfds.builder_from_directory(version).info.features
    assert os.path.exists(marker)
    sys.modules.pop(PLANTED_MODULE, None)


@pytest.mark.unit
def test_tfds_own_feature_classes_are_allowed():
    from epkd_tf.data.metadata import tfds_feature_classes
    allowed = tfds_feature_classes()
    assert IMAGE in allowed
    assert "tensorflow_datasets.core.features.class_label_feature.ClassLabel" in allowed
    assert all(name.startswith("tensorflow_datasets.core.features.") for name in allowed)


@pytest.mark.unit
def test_unreadable_metadata_is_one_line_and_never_blocks(tmp_path):
    version = prepared(tmp_path)
    path = os.path.join(version, "features.json")
    with open(path, "wb") as f:
        f.write(b'{"pythonClassName": "\xff"}')
    with pytest.raises(DataError, match=r"features.json is not UTF-8 text"):
        load_data(config(tmp_path))
    os.remove(path)
    os.mkfifo(path)                 # TFDS would block opening it
    with pytest.raises(DataError, match=r"features.json is not a regular file"):
        load_data(config(tmp_path))
    os.remove(path)
    os.mkfifo(os.path.join(version, "label.labels.txt"))   # ClassLabel reads its names
    with pytest.raises(DataError, match=r"label.labels.txt is not a regular file"):
        load_data(config(tmp_path))


@pytest.mark.e2e
def test_the_command_line_never_imports_a_module_beside_it(tmp_path):
    marker = str(tmp_path / "imported")
    version = prepared(tmp_path)
    edit_json(os.path.join(version, "features.json"), image_class(f"{PLANTED_MODULE}.Image"))
    plant_module(str(tmp_path), marker)
    result = run_subprocess("epkd_tf.main", ["--data_dir=data", "--dataset=planted",
                                             f"--output_dir={tmp_path / 'never'}",
                                             "--nodownload"],
                            cwd=str(tmp_path), env={"PYTHONPATH": os.getcwd()}, timeout=120)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"names the feature class '{PLANTED_MODULE}.Image'" in lines[0]
    assert not os.path.exists(marker) and not (tmp_path / "never").exists()
