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
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from typing import Optional, Tuple

from absl import flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli.common import (UsageError, fail, failure_message, parse_module_flags,
                                setup_logging, take_lock)
from epkd_tf.errors import EXIT_FAILED
from epkd_tf.config import EXPORT_FORMATS, DataConfig, RunConfig
from epkd_tf.settings import (DISTINCT, NON_EMPTY, NOT_BLANK, Settings, define_flags, one_of,
                              same_as, setting)

FLAGS = flags.FlagValues()


def _name_check():
    from epkd_tf.settings import Check

    def plain(name: str) -> bool:
        from epkd_tf.records import safe_name
        return safe_name(name, fallback="") == name

    # As every name the entry points turn into paths: one plain component (no "..", no
    # hidden or temporary name).
    return Check(plain, "use letters, digits, _ . - and do not start with a dot")


@dataclasses.dataclass(frozen=True)
class ExportConfig(Settings):
    """What ``python -m epkd_tf.export`` writes; the settings it shares with a run are the
    run's own (``same_as``: one help, one check)."""

    model: Optional[str] = setting(
        None, "The model to export: a .keras file (tf_keras or Keras 3), an .h5 file or a "
        "Keras SavedModel directory (e.g. RUN/checkpoints/student_3.keras); loaded without "
        "running code stored in it (Lambda layers, custom classes... are refused).",
        checks=[NOT_BLANK])
    formats: Tuple[str, ...] = same_as(
        RunConfig, "export_formats", flag="formats",
        help=f"Comma list of formats to write, from {', '.join(EXPORT_FORMATS)} (default: "
             f"all; without --dataset all but tflite_int8).",
        checks=[NON_EMPTY, DISTINCT, one_of(lambda: EXPORT_FORMATS, "format")])
    output_dir: Optional[str] = setting(None, "Directory to write (new or empty).",
                                        checks=[NOT_BLANK])
    name: Optional[str] = setting(None, "Model name in deployment.csv, the TFLite file names "
                                  "and serving/<name>/ (default: the --model file or "
                                  "directory name).", checks=[NOT_BLANK, _name_check()])
    dataset: Optional[str] = same_as(
        DataConfig, "dataset", default=None,
        help="TFDS dataset the model was trained on: test accuracy, int8 calibration and "
             "the raw-image serving signature need it.")
    data_dir: Optional[str] = same_as(DataConfig, "data_dir")
    train_split: str = same_as(DataConfig, "train_split",
                               help="Split the tflite_int8 calibration examples are drawn from.")
    test_split: Optional[str] = same_as(
        DataConfig, "test_split", help="Split test accuracy is measured on (default: test, "
        "or the labelled evaluation split of a dataset whose test split has no labels: "
        "validation for imagenet2012).")
    image_size: Optional[int] = same_as(DataConfig, "image_size",
                                        help="--image_size the model was trained with, if any.")
    seed: int = same_as(DataConfig, "seed", help="Seed of the calibration examples.")
    latency_runs: int = same_as(RunConfig, "latency_runs")
    tflite_threads: int = same_as(RunConfig, "tflite_threads")
    int8_dense_per_channel: bool = same_as(RunConfig, "int8_dense_per_channel")
    download: bool = same_as(DataConfig, "download")

    def data_config(self) -> DataConfig:
        """The DataConfig of --dataset (set)."""
        return DataConfig(dataset=self.dataset, data_dir=self.data_dir,
                          train_split=self.train_split, test_split=self.test_split,
                          seed=self.seed, image_size=self.image_size, download=self.download)


def _export_defaults():
    return ExportConfig()


# Every setting of ExportConfig is a flag with its default and help.
RUN_FLAGS = define_flags(_export_defaults(), FLAGS)


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
    from epkd_tf.config import ConfigError
    from epkd_tf.data import DataError, load_data
    from epkd_tf.errors import ModelFileError
    from epkd_tf.models.user import (check_finite, check_fits,
                                     load_user_model)
    from epkd_tf.records import RunDir, RunDirError
    from epkd_tf.settings import from_flags
    try:
        overrides = {}
        if not FLAGS["formats"].present and not FLAGS.dataset:
            # The default asks for every format, but tflite_int8 cannot be calibrated here.
            overrides["formats"] = [f for f in EXPORT_FORMATS if f != "tflite_int8"]
        cfg = from_flags(_export_defaults(), FLAGS, overrides)
        if cfg.model is None:
            raise UsageError("--model is required: a .keras file, an .h5 file or a SavedModel "
                             "directory.")
        if cfg.output_dir is None:
            raise UsageError("--output_dir is required: a new or empty directory.")
        formats = cfg.formats
        if "tflite_int8" in formats and cfg.dataset is None:
            raise UsageError("--formats=tflite_int8 needs --dataset (its calibration "
                             "examples come from the training split).")
        _check_output_dir(cfg.output_dir)
        model = load_user_model(cfg.model, "model")
        check_finite(model, "model")
        if "keras3" in formats and FLAGS["formats"].present:   # by default: skipped
            from epkd_tf.models.keras3 import Keras3ConversionError, check_keras3_export
            try:
                check_keras3_export(model)
            except Keras3ConversionError as err:
                raise UsageError(f"--formats=keras3: {err} Leave keras3 out of "
                                 f"--formats.") from err
        data = None
        if cfg.dataset:
            data = load_data(cfg.data_config())
            check_fits(model, data.spec, "model", cfg.dataset)
    except (ConfigError, DataError, ModelFileError, UsageError, RunDirError) as err:
        return fail(err)
    setup_logging()
    log = logging.getLogger("epkd_tf")
    name = cfg.name or _default_name(cfg.model)
    if data is None and "saved_model" in formats:
        log.info("No --dataset: serving_default takes float32 preprocessed images %s "
                 "(the raw uint8 signature needs the dataset's preprocessing)",
                 tuple(model.input_shape[1:]))
    out = RunDir(cfg.output_dir)
    with contextlib.ExitStack() as held:
        problem = take_lock(held, out, cfg.output_dir)
        if problem:
            return fail(problem)
        if out.entries():     # filled since it was checked, by a process now gone
            return fail(f"--output_dir={cfg.output_dir} exists and is not an empty "
                        f"directory.")
        try:
            rows = _export(out, model, name, cfg, data)
        except Exception as err:   # a failed conversion, a full disk...: nothing was kept
            return fail(f"exporting --model={cfg.model} failed, nothing was written: "
                        f"{failure_message(err)}", status=EXIT_FAILED)
    log.info("Wrote %d formats of %s to %s", len(rows), name, out.root)
    return 0


def _export(out, model, name: str, cfg, data):
    """Writes every format into a temporary directory inside ``out`` and moves the
    results into ``out`` (``deployment.csv`` last) once all are written; on any failure
    nothing of it stays. Returns the deployment rows."""
    from epkd_tf.deploy import exports as deploy
    from epkd_tf.deploy import saved_model
    from epkd_tf.records import TMP_PREFIX, RunDir
    staging = RunDir(tempfile.mkdtemp(dir=out.root, prefix=TMP_PREFIX))
    moved = []
    try:
        formats = cfg.formats
        calibration = (deploy.calibration_examples(data, cfg.seed)
                       if "tflite_int8" in formats else None)
        rows, _ = deploy.export_model(staging, model, name, formats, serving_name=name,
                                      version=1, data=data, latency_runs=cfg.latency_runs,
                                      threads=cfg.tflite_threads, calibration=calibration,
                                      int8_dense_per_channel=cfg.int8_dense_per_channel)
        staging.tables.append("deployment", rows)
        for entry in sorted(os.listdir(staging.root), key=lambda n: n == "deployment.csv"):
            os.replace(staging.path(entry), out.path(entry))
            moved.append(out.path(entry))
        if "saved_model" in formats:
            saved_model.write_models_config(out)     # base paths of the final place
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
    """Parses this module's flags; see :func:`epkd_tf.cli.common.parse_module_flags`."""
    return parse_module_flags(FLAGS, argv, __doc__.split("\n\n")[1])


def run() -> None:
    """Console entry point."""
    sys.exit(main(parse_flags(sys.argv)))


if __name__ == "__main__":
    run()
