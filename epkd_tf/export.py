"""``python -m epkd_tf.export``: deployment formats of any student or user model.

    python -m epkd_tf.export --model=RUN/checkpoints/student_3.keras \\
        --formats=saved_model,tflite,tflite_int8 --output_dir=DIR \\
        [--dataset=mnist --data_dir=DIR --train_split=train --test_split=test]

writes the files of ``--formats`` into ``--output_dir`` (same layout as a run:
``serving/<name>/1/``, ``serving/models.config``, ``tflite/<name>*.tflite``,
``keras3/<name>.keras``) and a ``deployment.csv`` with one row per format. ``--model`` is a
``.keras`` file, an ``.h5`` file or a Keras SavedModel directory (written by epkd_tf or
``model.save``; a Keras 3 ``.keras`` file is converted, see ``epkd_tf/models/keras3.py``),
loaded without running code stored in it (a ``Lambda`` layer, a custom class... is
refused; see ``epkd_tf/models/user.py``).
Without ``--dataset`` there is no test accuracy, the SavedModel's ``serving_default`` takes
float32 (already preprocessed) images, and ``tflite_int8`` (which needs calibration data) is
refused (left out of the default ``--formats``).

Bad input (missing model, unknown format, a model that does not fit the dataset, a
``--name`` that is not one plain file name, an ``--output_dir`` that cannot be written...)
prints one line ``error: ...`` naming the flag, exits with status 2 and writes nothing.
Everything is written into a temporary directory inside ``--output_dir`` and moved into
place once every format is done, so an export that fails on the way (a TFLite conversion
that fails, a full disk: one line, exit status 1) leaves nothing behind. The output
directory is locked for the export (one process at a time).

The flags live in their own ``FlagValues`` so that this module and ``epkd_tf.main`` (which
defines --dataset, --output_dir... with other defaults) can be imported together.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile

from absl import flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli import UsageError, fail, failure_message, parse_module_flags, setup_logging
from epkd_tf.config import EXPORT_FORMATS

FLAGS = flags.FlagValues()

flags.DEFINE_string("model", None, "The model to export: a .keras file, an .h5 file or a "
                    "Keras SavedModel directory (e.g. RUN/checkpoints/student_3.keras); "
                    "loaded without running code stored in it (Lambda layers, custom "
                    "classes... are refused).",
                    flag_values=FLAGS)
flags.DEFINE_list("formats", list(EXPORT_FORMATS), f"Comma list of formats to write, from "
                  f"{', '.join(EXPORT_FORMATS)} (default: all; without --dataset all but "
                  f"tflite_int8).", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Directory to write (new or empty).",
                    flag_values=FLAGS)
flags.DEFINE_string("name", None, "Model name in deployment.csv, the TFLite file names and "
                    "serving/<name>/ (default: the --model file or directory name).",
                    flag_values=FLAGS)
flags.DEFINE_string("dataset", None, "TFDS dataset the model was trained on: test accuracy, "
                    "int8 calibration and the raw-image serving signature need it.",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets).",
                    flag_values=FLAGS)
flags.DEFINE_string("train_split", "train", "Split the tflite_int8 calibration examples are "
                    "drawn from.", flag_values=FLAGS)
flags.DEFINE_string("test_split", "test", "Split test accuracy is measured on.",
                    flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "--image_size the model was trained with, if any.",
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the calibration examples.", flag_values=FLAGS)
flags.DEFINE_integer("latency_runs", 50, "Timed TFLite runs per latency figure.",
                     flag_values=FLAGS)
flags.DEFINE_integer("tflite_threads", 1, "CPU threads of the TFLite latency measurements.",
                     flag_values=FLAGS)
flags.DEFINE_bool("int8_dense_per_channel", False, "tflite_int8: quantise Dense weights per "
                  "output unit instead of per tensor (larger file).", flag_values=FLAGS)





def _check_output_dir(path: str) -> None:
    """``path`` can be written and is new or empty (a lock file aside); UsageError or
    RunDirError naming --output_dir otherwise."""
    from epkd_tf.records import RunDir, check_output_dir
    check_output_dir(path)
    if os.path.exists(path) and (not os.path.isdir(path) or RunDir(path).entries()):
        raise UsageError(f"--output_dir={path} exists and is not an empty directory.")


def main(argv) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag.")
    from epkd_tf.config import ConfigError, DataConfig, check_export_formats
    from epkd_tf.data import DataError, load_data
    from epkd_tf.locking import DirectoryBusyError
    from epkd_tf.models.user import (ModelFileError, check_finite, check_fits,
                                     load_user_model)
    from epkd_tf.records import RunDir, RunDirError, safe_name
    try:
        if not FLAGS.model:
            raise UsageError("--model is required: a .keras file, an .h5 file or a SavedModel "
                             "directory.")
        if not FLAGS.output_dir:
            raise UsageError("--output_dir is required: a new or empty directory.")
        formats = tuple(f.strip() for f in FLAGS.formats)
        if not formats:
            raise UsageError(f"--formats is empty; choose from {', '.join(EXPORT_FORMATS)}.")
        check_export_formats(formats, "formats")
        if not FLAGS["formats"].present and not FLAGS.dataset:
            # The default asks for every format, but tflite_int8 cannot be calibrated here.
            formats = tuple(f for f in formats if f != "tflite_int8")
        if "tflite_int8" in formats and not FLAGS.dataset:
            raise UsageError("--formats=tflite_int8 needs --dataset (its calibration "
                             "examples come from the training split).")
        for flag in ("latency_runs", "tflite_threads"):
            if FLAGS[flag].value < 1:
                raise UsageError(f"--{flag}={FLAGS[flag].value} is invalid: must be a "
                                 f"positive integer.")
        if FLAGS.name is not None and safe_name(FLAGS.name, fallback="") != FLAGS.name:
            # As for every name the entry points turn into paths: one plain component
            # (no "..", no hidden or temporary name).
            raise UsageError(f"--name={FLAGS.name!r} is invalid: use letters, digits, "
                             f"_ . - and do not start with a dot.")
        _check_output_dir(FLAGS.output_dir)
        model = load_user_model(FLAGS.model, "model")
        check_finite(model, "model")
        if "keras3" in formats and FLAGS["formats"].present:   # by default: skipped
            from epkd_tf.models.keras3 import Keras3ConversionError, check_keras3_export
            try:
                check_keras3_export(model)
            except Keras3ConversionError as err:
                raise UsageError(f"--formats=keras3: {err} Leave keras3 out of "
                                 f"--formats.") from err
        data = None
        if FLAGS.dataset:
            data = load_data(DataConfig(dataset=FLAGS.dataset.strip(), data_dir=FLAGS.data_dir,
                                        train_split=FLAGS.train_split,
                                        test_split=FLAGS.test_split, seed=FLAGS.seed,
                                        image_size=FLAGS.image_size))
            check_fits(model, data.spec, "model", FLAGS.dataset)
    except (ConfigError, DataError, ModelFileError, UsageError, RunDirError) as err:
        return fail(str(err))
    setup_logging()
    log = logging.getLogger("epkd_tf")
    name = FLAGS.name or _default_name(FLAGS.model)
    if data is None and "saved_model" in formats:
        log.info("No --dataset: serving_default takes float32 preprocessed images %s "
                 "(the raw uint8 signature needs the dataset's preprocessing)",
                 tuple(model.input_shape[1:]))
    out = RunDir(FLAGS.output_dir)
    with contextlib.ExitStack() as held:
        try:      # one process per output directory, for the whole export
            held.enter_context(out.lock())
        except DirectoryBusyError as err:
            return fail(str(err))
        except OSError as err:
            return fail(f"--output_dir={FLAGS.output_dir} cannot be written: {err.strerror}.")
        if out.entries():     # filled since it was checked, by a process now gone
            return fail(f"--output_dir={FLAGS.output_dir} exists and is not an empty "
                        f"directory.")
        try:
            rows = _export(out, model, name, formats, data)
        except Exception as err:   # a failed conversion, a full disk...: nothing was kept
            return fail(f"exporting --model={FLAGS.model} failed, nothing was written: "
                        f"{failure_message(err)}", status=1)
    log.info("Wrote %d formats of %s to %s", len(rows), name, out.root)
    return 0


def _export(out, model, name: str, formats, data):
    """Writes every format into a temporary directory inside ``out`` and moves the
    results into ``out`` (``deployment.csv`` last) once all are written; on any failure
    nothing of it stays. Returns the deployment rows."""
    from epkd_tf import deploy
    from epkd_tf.records import TMP_PREFIX, RunDir
    staging = RunDir(tempfile.mkdtemp(dir=out.root, prefix=TMP_PREFIX))
    moved = []
    try:
        calibration = (deploy.calibration_examples(data, FLAGS.seed)
                       if "tflite_int8" in formats else None)
        rows, _ = deploy.export_model(staging, model, name, formats, serving_name=name,
                                      version=1, data=data, latency_runs=FLAGS.latency_runs,
                                      threads=FLAGS.tflite_threads, calibration=calibration,
                                      int8_dense_per_channel=FLAGS.int8_dense_per_channel)
        staging.append("deployment", rows)
        for entry in sorted(os.listdir(staging.root), key=lambda n: n == "deployment.csv"):
            os.replace(staging.path(entry), out.path(entry))
            moved.append(out.path(entry))
        if "saved_model" in formats:
            deploy.write_models_config(out)     # base paths of the final place
        return rows
    except BaseException:
        for path in moved:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        raise
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)


def _default_name(path: str) -> str:
    from epkd_tf.models.user import model_stem
    return model_stem(path)




def parse_flags(argv):
    """Parses this module's flags; see :func:`epkd_tf.cli.parse_module_flags`."""
    return parse_module_flags(FLAGS, argv, __doc__.split("\n\n")[1])


def run() -> None:
    """Console entry point."""
    sys.exit(main(parse_flags(sys.argv)))


if __name__ == "__main__":
    run()
