"""Datasets for EPKD: TFDS loading (with downloads), in-memory data, imports, recipes.

Every loader returns a :class:`Data` (the :class:`DataSource` interface) whose pipelines
yield ``(x float32, y int32)`` batches:

* ``load_data(DataConfig)`` -- a TFDS dataset by name from ``--data_dir``, downloaded and
  prepared first if missing (unless ``--nodownload``); ``--validation_split`` holds out
  validation examples (``tfds.py``, ``downloads.py``, ``holdout.py``);
* ``from_arrays(x_train, y_train, x_test, y_test, ...)`` / ``from_datasets(train, test,
  ...)`` -- data already in memory (``memory.py``);
* ``import_npz`` / ``import_folder`` write an .npz file or a folder of class folders as a
  TFDS dataset that loads by name (``npz.py``, ``folders.py``, ``writer.py``), also from
  the command line::

      python -m epkd_tf.data --import_npz=PATH --name=NAME --data_dir=DIR [--overwrite]
      python -m epkd_tf.data --import_folder=DIR --name=NAME --data_dir=OUT [--overwrite]

Per-dataset preprocessing is a registered :class:`DatasetRecipe` (``recipes.py``); the
pipelines themselves are in ``pipeline.py``.
"""
from epkd_tf.data.source import MAX_CLASSES, DataError, DatasetSpec, DataSource
from epkd_tf.data.recipes import (DATASET_ALIASES, DEFAULT_RECIPE, MODEL_INPUT_RECIPE,
                                  RECIPES, DatasetRecipe, get_recipe, register_dataset,
                                  register_recipe)
from epkd_tf.data.pipeline import CACHE_LIMIT_BYTES, PREPROCESSED_CACHE_LIMIT_BYTES, Data
from epkd_tf.data.tfds import load_data
from epkd_tf.data.memory import MEMORY_LIMIT_BYTES, from_arrays, from_datasets
from epkd_tf.data.npz import import_npz
from epkd_tf.data.folders import import_folder

__all__ = [
    "DataError",
    "DatasetSpec",
    "DataSource",
    "DatasetRecipe",
    "Data",
    "DATASET_ALIASES",
    "DEFAULT_RECIPE",
    "MODEL_INPUT_RECIPE",
    "RECIPES",
    "register_dataset",
    "register_recipe",
    "get_recipe",
    "CACHE_LIMIT_BYTES",
    "PREPROCESSED_CACHE_LIMIT_BYTES",
    "MEMORY_LIMIT_BYTES",
    "MAX_CLASSES",
    "load_data",
    "from_arrays",
    "from_datasets",
    "import_npz",
    "import_folder",
]
