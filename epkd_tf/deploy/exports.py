"""Deployment exports: a run's models in every format, and their measurements.

``export_model`` writes one model in every requested format into a run directory and
returns its ``deployment.csv`` rows (see docs/deployment.md):

* ``saved_model`` — ``serving/<serving_name>/<version>/`` (TF Serving's layout) with the
  signature ``serving_default``: raw uint8 images ``[batch, H, W, C]`` at the dataset's
  stored size → ``logits``, ``probabilities``, ``classes``; the dataset recipe's
  evaluation preprocessing runs inside. ``serving_preprocessed`` takes the float32 model
  input instead. ``serving/models.config`` (and ``models.docker.config``) name every model.
* ``tflite``, ``tflite_sparse``, ``tflite_int8_dynamic``, ``tflite_int8`` — see
  :func:`epkd_tf.deploy.tflite.to_tflite`; ``tflite_sparse`` is only written for models with at
  least ``SPARSE_MIN_ZEROS`` exact zeros (a dense model has nothing to encode).
* ``keras3`` — ``keras3/<name>.keras``: the model as a Keras 3 file that plain TF 2.21
  (``keras.models.load_model``) loads, see :mod:`epkd_tf.models.keras3`; its test accuracy
  is measured on the converted model.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tarfile
from typing import Callable, ContextManager, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import precision
from epkd_tf.deploy import tflite as metrics
from epkd_tf.deploy.saved_model import (export_saved_model, raw_image_shape,
                                        write_models_config)
from epkd_tf.activations import chunk_examples
from epkd_tf.config import EXPORT_FORMATS
from epkd_tf.graph import dense_params, nonzero_params

log = logging.getLogger("epkd_tf")

FORMATS = EXPORT_FORMATS
# tflite_sparse is written only for models with at least this fraction of exact zeros:
# TF 2.21's converter leaves a weight tensor with fewer than ~30% zeros dense (measured on
# LeNet-300-100: 20% zeros gives the float file byte for byte), so below this the "sparse"
# file would be a copy of the float one.
SPARSE_MIN_ZEROS = 0.30
# Training examples (Data.sample, the run's seed) the tflite_int8 ranges are calibrated on.
CALIBRATION_EXAMPLES = 256
# Batch of the TFLite interpreters that measure test accuracy, at most; and what their
# intermediate tensors may take together. Each interpreter allocates its whole batch's
# tensors: at batch 256 one float interpreter of a 224 px ResNet-50 would take gigabytes,
# and the formats are measured side by side in one pass.
EVAL_BATCH = 256
EVAL_MEMORY = 512 * 2 ** 20


# -- sizes --------------------------------------------------------------------------------
def directory_bytes(path: str) -> int:
    """Total size of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def gzip_tar_bytes(path: str) -> int:
    """Size of ``path`` as a gzipped tar (``metrics.GZIP_LEVEL``), the way a directory is
    shipped."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=metrics.GZIP_LEVEL) as tar:
        tar.add(path, arcname=os.path.basename(path))
    return buffer.tell()


def zero_fraction(model: tf_keras.Model) -> float:
    """Fraction of the model's weights that are exactly zero."""
    total = dense_params(model)
    return 1.0 - nonzero_params(model) / total if total else 0.0


# -- measurements -------------------------------------------------------------------------
def calibration_examples(data, seed: Optional[int] = None) -> np.ndarray:
    """The float32 training inputs ``tflite_int8`` is calibrated on (seeded, fixed)."""
    return data.sample(min(CALIBRATION_EXAMPLES, data.spec.num_train), seed=seed)[0]


def accuracy_batch(model: tf_keras.Model, interpreters: int) -> int:
    """The batch :func:`tflite_accuracies` runs ``interpreters`` flatbuffers of ``model``
    at: ``EVAL_BATCH``, or fewer examples where their layer outputs, one set per
    interpreter, would exceed ``EVAL_MEMORY`` (at least 1)."""
    return min(EVAL_BATCH, chunk_examples(model, EVAL_MEMORY, copies=max(1, interpreters)))


def tflite_accuracies(flatbuffers: Dict[str, bytes], data,
                      batch: int = EVAL_BATCH) -> Dict[str, float]:
    """Top-1 test accuracy of each flatbuffer, in one pass over the test split at ``batch``
    examples per call (interpreters on every CPU core: accuracy does not depend on
    threads); :func:`accuracy_batch` bounds it by memory."""
    threads = os.cpu_count() or 1
    interpreters = {f: metrics.make_interpreter(b, threads) for f, b in flatbuffers.items()}
    correct = dict.fromkeys(flatbuffers, 0)
    seen = 0
    for x, y in data.test().unbatch().batch(batch).as_numpy_iterator():
        for fmt, interpreter in interpreters.items():
            correct[fmt] += int(np.sum(metrics.tflite_predict(interpreter, x).argmax(-1) == y))
        seen += len(y)
    return {f: correct[f] / max(seen, 1) for f in flatbuffers}


def export_model(run, model: tf_keras.Model, name: str, formats: Sequence[str], *,
                 serving_name: str, version: int, iteration=None, data=None,
                 latency_runs: int = 50, threads: int = 1,
                 test_accuracy: Optional[float] = None,
                 calibration: Optional[np.ndarray] = None,
                 preprocess_signature: bool = True,
                 int8_dense_per_channel: bool = False,
                 measuring: Optional[Callable[[], ContextManager]] = None
                 ) -> Tuple[pd.DataFrame, Optional[bytes]]:
    """Writes ``model`` in ``formats`` into ``run`` (a :class:`epkd_tf.records.RunDir`) and
    measures each file; returns its ``deployment.csv`` rows and the float TFLite bytes
    (None if ``tflite`` is not among ``formats``).

    ``name`` is the model column and TFLite file stem (``teacher``, ``student_3``); the
    SavedModel goes to ``serving/<serving_name>/<version>/``. ``data`` (a loaded
    :class:`epkd_tf.data.Data`) gives the raw-image signature, the test accuracies and the
    ``tflite_int8`` calibration (``calibration`` if given, else ``calibration_examples``);
    without it accuracy is left empty and ``tflite_int8`` is refused. ``test_accuracy``:
    the Keras model's, if already known (the SavedModel computes the same function).
    ``int8_dense_per_channel``: see :func:`epkd_tf.deploy.tflite.to_tflite`. ``measuring()``, if
    given, is entered around the measurements (test accuracies and latencies of the written
    files), so that a caller can time them apart from the writing.
    """
    measuring = measuring or contextlib.nullcontext
    model = precision.float32_copy(model)    # every format is float32 (epkd_tf.precision)
    formats = [f for f in FORMATS if f in formats]
    if "tflite_int8" in formats and data is None and calibration is None:
        raise ValueError("tflite_int8 needs data (or calibration examples) to calibrate on.")
    rows = []

    def row(fmt, path, size, gzip_size, accuracy=np.nan, latency=(np.nan, np.nan)):
        rows.append({"model": name, "iteration": iteration, "format": fmt,
                     "path": os.path.relpath(path, run.root), "bytes": int(size),
                     "gzip_bytes": int(gzip_size), "test_accuracy": accuracy,
                     "latency_ms_median": latency[0], "latency_ms_p90": latency[1]})

    if "saved_model" in formats:
        preprocess = raw_shape = None
        batchable = False
        if data is not None and preprocess_signature:
            preprocess, raw_shape = data.recipe.preprocess, raw_image_shape(data)
            batchable = data.recipe.batchable
        path = run.serving_dir(serving_name, version)
        run.write_directory(path, lambda tmp: export_saved_model(model, tmp, preprocess,
                                                                 raw_shape, batchable))
        write_models_config(run)
        if test_accuracy is None and data is not None:
            from epkd_tf.training import accuracy
            with measuring():
                test_accuracy = accuracy(model, data.test())
        row("saved_model", path, directory_bytes(path), gzip_tar_bytes(path),
            np.nan if test_accuracy is None else test_accuracy)

    flatbuffers = {}
    for fmt in formats:
        if not fmt.startswith("tflite"):
            continue
        if fmt == "tflite_sparse" and zero_fraction(model) < SPARSE_MIN_ZEROS:
            log.info("%s: tflite_sparse skipped (%.2f%% exact zeros < %.0f%%)", name,
                     100 * zero_fraction(model), 100 * SPARSE_MIN_ZEROS)
            continue
        if fmt == "tflite_int8" and calibration is None:
            calibration = calibration_examples(data)
        flatbuffers[fmt] = metrics.to_tflite(model, fmt, calibration,
                                             dense_per_channel=int8_dense_per_channel)
        run.write_bytes(os.path.relpath(run.tflite_path(name, fmt), run.root), flatbuffers[fmt])
    with measuring():
        accuracies = (tflite_accuracies(flatbuffers, data,
                                        accuracy_batch(model, len(flatbuffers)))
                      if data is not None and flatbuffers else {})
        latencies = {fmt: metrics.tflite_latency(flatbuffer, runs=latency_runs, threads=threads)
                     for fmt, flatbuffer in flatbuffers.items()}
    for fmt, flatbuffer in flatbuffers.items():
        row(fmt, run.tflite_path(name, fmt), len(flatbuffer), metrics.gzip_bytes(flatbuffer),
            accuracies.get(fmt, np.nan), latencies[fmt])
    converted = None
    if "keras3" in formats:
        from epkd_tf.models.keras3 import Keras3ConversionError, to_keras3
        try:
            converted = to_keras3(model)
        except Keras3ConversionError as err:
            # Entry points refuse such a model up front when keras3 is asked for; as a
            # default format it is skipped, like tflite_sparse for a dense model.
            log.warning("warning: %s: keras3 skipped: %s", name, err)
    if converted is not None:
        path = run.keras3_path(name)
        run.save_checkpoint(converted, path)
        keras3_accuracy = np.nan
        if data is not None:
            from epkd_tf.training import accuracy
            with measuring():     # on the Keras 3 model itself: the row vouches for it
                keras3_accuracy = accuracy(converted, data.test())
        with open(path, "rb") as f:
            written = f.read()
        row("keras3", path, len(written), metrics.gzip_bytes(written), keras3_accuracy)
    frame = pd.DataFrame(rows)
    for r in frame.itertuples():
        # Quantities a format does not have (a SavedModel's latency, accuracy without a
        # dataset) are shown as "-", not nan.
        accuracy = "-" if pd.isna(r.test_accuracy) else f"{r.test_accuracy:.4f}"
        latency = ("-" if pd.isna(r.latency_ms_median) else
                   f"{r.latency_ms_median:.3f} / {r.latency_ms_p90:.3f} ms")
        log.info("%s %-19s %9.3f MB (gzip %8.3f MB)  test acc %s  latency %s", name,
                 r.format, r.bytes / 1e6, r.gzip_bytes / 1e6, accuracy, latency)
    return frame, flatbuffers.get("tflite")


def remove_exports(run, name: str) -> None:
    """Removes every export of model ``name`` (``serving/<name>``, ``tflite/<name>*``,
    ``keras3/<name>.keras``): a stage that writes them again after an interruption starts
    from nothing, so no file of the interrupted attempt counts."""
    import shutil
    shutil.rmtree(run.path("serving", name), ignore_errors=True)
    for fmt in FORMATS:
        if fmt != "saved_model" and os.path.exists(run.export_path(name, fmt)):
            os.remove(run.export_path(name, fmt))


def copy_exports(run, source: str, name: str, iteration: int) -> pd.DataFrame:
    """Copies every export of model ``source`` (``teacher``, ``student_3``) under the name
    ``name`` (``serving/<name>/1``, ``tflite/<name>*.tflite``) and returns its
    deployment.csv rows (the source's, with the new paths): the final student is shipped
    under a name that does not change with the iteration that produced it."""
    import shutil
    rows = run.tables.read("deployment")
    rows = rows[rows["model"] == source].copy()
    remove_exports(run, name)
    paths = []
    for row in rows.itertuples():
        source_path = run.path(row.path)
        target = run.export_path(name, row.format)
        if os.path.isdir(source_path):
            run.write_directory(target, lambda tmp, src=source_path: shutil.copytree(src, tmp))
        else:
            with open(source_path, "rb") as f:
                run.write_bytes(os.path.relpath(target, run.root), f.read())
        paths.append(os.path.relpath(target, run.root))
    if "saved_model" in set(rows["format"]):
        write_models_config(run)
    rows["model"], rows["iteration"], rows["path"] = name, iteration, paths
    return rows.reset_index(drop=True)
