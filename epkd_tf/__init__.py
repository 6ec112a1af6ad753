"""epkd_tf: Evolutionary Pruning and Knowledge Distillation for TensorFlow / Keras.

The Python API (see docs/api.md)::

    import epkd_tf
    result = epkd_tf.compress(teacher, (x_train, y_train), (x_test, y_test), iterations=3)
    smaller = epkd_tf.prune(model, 0.5, criterion="taylor", data=(x, y))

* :func:`compress` — EPKD on your model and data (the same run as ``python -m
  epkd_tf.main``); :func:`prune` — one-shot structured pruning with any criterion;
  :func:`analyze` — the channel dependency graph of a model;
* :class:`Distiller` — Hinton distillation as a tf_keras model;
* settings: :class:`RunConfig` and its parts, :func:`with_flags` (settings by their flag
  names);
* errors: :class:`EpkdError`, the base of every error the package raises on purpose
  (:class:`ConfigError`, :class:`ApiError`, :class:`DataError`, :class:`ModelFileError`,
  ... in :mod:`epkd_tf.errors`);
* registries (one :class:`~epkd_tf.registry.Registry` each): ``PRUNERS``, ``MODELS``,
  ``MEASURES``, ``RECIPES``; hooks ``register_pruner``, ``register_model``,
  ``register_rule`` (your own layer types), ``register_dataset``;
* data: :func:`from_arrays`, :func:`from_datasets`, :func:`load_data`; models:
  :func:`load_model` (safe loading of a model file, tf_keras or Keras 3).

Importing the package selects Keras 2 (``tf_keras``) for TensorFlow before TensorFlow is
imported anywhere: TF-MOT only works with Keras 2, and TF 2.21 otherwise binds
``tf.keras`` to Keras 3. Import ``epkd_tf`` before TensorFlow. Everything above is loaded
on first use, so ``import epkd_tf`` itself stays instant.
"""
import importlib
import os

# Must run before the first `import tensorflow` in the process.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"

# Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "compress": "epkd_tf.api", "prune": "epkd_tf.api", "analyze": "epkd_tf.api",
    "CompressionResult": "epkd_tf.api",
    "Distiller": "epkd_tf.distill.distiller",
    "RunConfig": "epkd_tf.config", "DataConfig": "epkd_tf.config",
    "TeacherConfig": "epkd_tf.config", "PruningConfig": "epkd_tf.config",
    "DistillConfig": "epkd_tf.config", "BudgetConfig": "epkd_tf.config",
    "with_flags": "epkd_tf.settings",
    "PRUNERS": "epkd_tf.pruning.registry", "register_pruner": "epkd_tf.pruning.registry",
    "MODELS": "epkd_tf.models.registry", "register_model": "epkd_tf.models.registry",
    "MEASURES": "epkd_tf.budget",
    "RECIPES": "epkd_tf.data", "register_dataset": "epkd_tf.data",
    "from_arrays": "epkd_tf.data", "from_datasets": "epkd_tf.data",
    "load_data": "epkd_tf.data",
    "register_rule": "epkd_tf.graph.rules",
    "load_model": "epkd_tf.api",
    # One error hierarchy: ``except epkd_tf.EpkdError`` catches whatever the package
    # refuses (bad input, ValueErrors) or cannot finish (RuntimeErrors).
    **{name: "epkd_tf.errors" for name in (
        "EpkdError", "InputError", "RunFailure", "ConfigError", "UsageError", "ApiError",
        "DataError", "ModelFileError", "Keras3ConversionError", "UnsafeConfigError",
        "UnsupportedLayerError", "UnknownNameError", "RunDirError", "DamagedRunError",
        "DirectoryBusyError", "PruningError", "NoCandidateError", "NonFiniteLossError")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        if name in ("PRUNERS", "MODELS"):
            importlib.import_module("epkd_tf.pruning" if name == "PRUNERS" else "epkd_tf.models")
        return getattr(module, name)
    raise AttributeError(f"module 'epkd_tf' has no attribute {name!r}")
