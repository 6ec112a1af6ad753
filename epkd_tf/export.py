"""``python -m epkd_tf.export``: deployment formats of any student or user model.

    python -m epkd_tf.export --model=RUN/checkpoints/student_3.keras \\
        --formats=saved_model,tflite,tflite_int8 --output_dir=DIR \\
        [--dataset=mnist --data_dir=DIR --train_split=train --test_split=test]

writes the files of ``--formats`` into ``--output_dir`` (same layout as a run:
``serving/<name>/1/``, ``serving/models.config``, ``tflite/<name>*.tflite``,
``keras3/<name>.keras``) and a ``deployment.csv`` with one row per format. ``--model`` is a
``.keras`` file, an ``.h5`` file or a Keras SavedModel directory (written by epkd_tf or
``model.save``; a Keras 3 ``.keras`` file is converted, see ``epkd_tf/models/keras3.py``),
loaded in Keras safe mode (a model with a ``Lambda`` layer is refused; see
``epkd_tf/models/user.py``).
Without ``--dataset`` there is no test accuracy, the SavedModel's ``serving_default`` takes
float32 (already preprocessed) images, and ``tflite_int8`` (which needs calibration data) is
refused (left out of the default ``--formats``).

Bad input (missing model, unknown format, a model that does not fit the dataset...) prints
one line ``error: ...`` naming the flag, exits with status 2 and writes nothing.

The flags live in their own ``FlagValues`` so that this module and ``epkd_tf.main`` (which
defines --dataset, --output_dir... with other defaults) can be imported together.
"""
from __future__ import annotations

import logging
import os
import re
import sys

from absl import flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli import UsageError, fail, parse_module_flags, setup_logging
from epkd_tf.config import EXPORT_FORMATS

FLAGS = flags.FlagValues()

flags.DEFINE_string("model", None, "The model to export: a .keras file, an .h5 file or a "
                    "Keras SavedModel directory (e.g. RUN/checkpoints/student_3.keras); "
                    "loaded in safe mode, Lambda layers are refused.",
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
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise UsageError(f"--output_dir={path} exists and is not an empty directory.")


def main(argv) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag.")
    from epkd_tf.config import ConfigError, DataConfig, check_export_formats
    from epkd_tf.data import DataError, load_data
    from epkd_tf.models.user import ModelFileError, check_fits, load_user_model
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
        if FLAGS.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", FLAGS.name):
            raise UsageError(f"--name={FLAGS.name!r} is invalid: use letters, digits, _ . -")
        _check_output_dir(FLAGS.output_dir)
        model = load_user_model(FLAGS.model, "model")
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
    except (ConfigError, DataError, ModelFileError, UsageError) as err:
        return fail(str(err))
    setup_logging()
    log = logging.getLogger("epkd_tf")
    from epkd_tf import deploy
    from epkd_tf.records import RunDir
    name = FLAGS.name or _default_name(FLAGS.model)
    if data is None and "saved_model" in formats:
        log.info("No --dataset: serving_default takes float32 preprocessed images %s "
                 "(the raw uint8 signature needs the dataset's preprocessing)",
                 tuple(model.input_shape[1:]))
    run = RunDir(FLAGS.output_dir)
    calibration = (deploy.calibration_examples(data, FLAGS.seed)
                   if "tflite_int8" in formats else None)
    rows, _ = deploy.export_model(run, model, name, formats, serving_name=name, version=1,
                                  data=data, latency_runs=FLAGS.latency_runs,
                                  threads=FLAGS.tflite_threads, calibration=calibration,
                                  int8_dense_per_channel=FLAGS.int8_dense_per_channel)
    run.append("deployment", rows)
    log.info("Wrote %d formats of %s to %s", len(rows), name, run.root)
    return 0


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
