"""``python -m epkd_tf.study``: pruning vs distillation vs both, at equal compression.

    python -m epkd_tf.study --flagfile=flags/study_mnist_lenet300.cfg

trains one teacher, then for every method of ``--methods``, fraction of
``--fractions_removed`` and each of ``--seeds`` seeds makes a compressed model and writes
``study.csv``, ``comparisons.csv``, ``study.md`` and plots into ``--output_dir`` (README,
The compression study). Every finished cell is recorded as it completes: rerunning the
same command resumes an interrupted study. Bad input prints one line ``error: ...`` naming
the flag, exits with status 2 and writes nothing.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli import (UsageError, fail, parse_module_flags, prepare_output_dir,
                         setup_logging)
from epkd_tf.study.config import FRACTIONS, METHODS

FLAGS = flags.FlagValues()
_ = dict(flag_values=FLAGS)
# -- data and teacher (as in epkd_tf.main) -------------------------------------------------
flags.DEFINE_string("dataset", "mnist", "TFDS dataset name (as for epkd_tf.main).", **_)
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets).",
                    **_)
flags.DEFINE_string("train_split", "train", "TFDS split for training.", **_)
flags.DEFINE_string("test_split", "test", "TFDS split for testing and comparisons.", **_)
flags.DEFINE_integer("batch_size", 128, "Batch size of training and evaluation.", **_)
flags.DEFINE_integer("seed", 0, "First seed; the runs of a cell use --seed, --seed+1, ...", **_)
flags.DEFINE_integer("image_size", None, "Square image size (see epkd_tf.main).", **_)
flags.DEFINE_float("label_noise", 0.0, "Fraction of training labels replaced by another "
                   "random class (the same examples for every method and seed).", **_)
flags.DEFINE_string("teacher", "lenet300_100", "Teacher architecture.", **_)
flags.DEFINE_integer("teacher_epochs", 10, "Epochs of teacher training.", **_)
flags.DEFINE_float("teacher_learning_rate", 1e-3, "Adam learning rate of the teacher.", **_)
flags.DEFINE_float("teacher_width", 1.0, "Width multiplier of the teacher.", **_)
flags.DEFINE_string("output_dir", None, "Study directory (default: "
                    "saved_models/study_<dataset>_<teacher>).", **_)
flags.DEFINE_bool("overwrite", False, "Replace a finished study in --output_dir.", **_)
flags.DEFINE_integer("verbose", 0, "Keras progress output (0 = one log line per cell).", **_)
# -- the study ------------------------------------------------------------------------------
flags.DEFINE_list("methods", list(METHODS), f"Methods compared, from {', '.join(METHODS)}.",
                  **_)
flags.DEFINE_list("fractions_removed", [str(f) for f in FRACTIONS], "Fractions of the "
                  "teacher's parameters removed, increasing.", **_)
flags.DEFINE_integer("seeds", 2, "Runs (seeds) per cell, so the spread is visible.", **_)
flags.DEFINE_integer("epochs", 10, "Training budget per method and fraction (README: how "
                     "each method spends it).", **_)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (cosine-decayed) of every "
                   "method's training.", **_)
flags.DEFINE_float("prune_rate", 0.2, "Most of the remaining weights one pruning round "
                   "removes (prune, lottery, prune_distill, epkd).", **_)
flags.DEFINE_float("alpha", 0.1, "Hard-label loss weight of distillation.", **_)
flags.DEFINE_float("temperature", 4.0, "Distillation temperature of distill and "
                   "prune_distill (epkd uses the backbone's falling schedule).", **_)
flags.DEFINE_list("epkd_pruners", ["l1_filter", "taylor", "oracle", "poly_magnitude"],
                  "Pruners of the epkd method's candidates.", **_)

RUN_FLAGS = ("dataset", "data_dir", "train_split", "test_split", "batch_size", "seed",
             "image_size", "label_noise", "teacher", "teacher_epochs",
             "teacher_learning_rate", "teacher_width", "output_dir", "methods",
             "fractions_removed", "seeds", "epochs", "learning_rate", "prune_rate", "alpha",
             "temperature", "epkd_pruners")



def build_config():
    """FLAGS → StudyConfig, once; raises ConfigError naming the bad flag."""
    from epkd_tf.config import DataConfig, TeacherConfig
    from epkd_tf.study.config import StudyConfig, parse_fractions
    return StudyConfig(
        data=DataConfig(dataset=FLAGS.dataset.strip(), data_dir=FLAGS.data_dir,
                        train_split=FLAGS.train_split, test_split=FLAGS.test_split,
                        batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                        image_size=FLAGS.image_size, label_noise=FLAGS.label_noise),
        teacher=TeacherConfig(teacher=FLAGS.teacher, teacher_epochs=FLAGS.teacher_epochs,
                              learning_rate=FLAGS.teacher_learning_rate,
                              width=FLAGS.teacher_width),
        methods=tuple(m.strip() for m in FLAGS.methods),
        fractions_removed=parse_fractions(FLAGS.fractions_removed),
        seeds=FLAGS.seeds, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
        prune_rate=FLAGS.prune_rate, alpha=FLAGS.alpha, temperature=FLAGS.temperature,
        epkd_pruners=tuple(p.strip() for p in FLAGS.epkd_pruners),
        output_dir=FLAGS.output_dir)


def check_inputs(cfg, spec) -> None:
    """Names that the config cannot check alone, and that the models fit the dataset."""
    from epkd_tf.graph import UnsupportedLayerError, analyze
    from epkd_tf.graph import dense_params
    from epkd_tf.models import build_model, model_names
    from epkd_tf.pruning import StructuredPruner, make_pruner, pruner_names
    from epkd_tf.study.methods import method_names
    from epkd_tf.study.students import sized_student, student_family
    unknown = [m for m in cfg.methods if m not in method_names()]
    if unknown:
        raise UsageError(f"--methods: unknown method {unknown[0]!r}; choose from "
                         f"{', '.join(method_names())}.")
    if cfg.teacher.teacher not in model_names():
        raise UsageError(f"--teacher={cfg.teacher.teacher!r} is unknown; choose from "
                         f"{', '.join(model_names())}.")
    if "epkd" in cfg.methods:
        unknown = [p for p in cfg.epkd_pruners if p not in pruner_names()]
        if unknown:
            raise UsageError(f"--epkd_pruners: unknown pruner {unknown[0]!r}; choose from "
                             f"{', '.join(pruner_names())}.")
    try:
        teacher = build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                              width=cfg.teacher.width)
    except (ValueError, TypeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise UsageError(f"--teacher={cfg.teacher.teacher} cannot be built for --dataset="
                         f"{cfg.data.dataset} with input shape {spec.input_shape}: "
                         f"{reason}") from err
    if "epkd" in cfg.methods and any(isinstance(make_pruner(p), StructuredPruner)
                                     for p in cfg.epkd_pruners):
        try:
            analyze(teacher)
        except UnsupportedLayerError as err:
            raise UsageError(f"--teacher={cfg.teacher.teacher}: {err}") from err
    if {"distill", "scratch"} & set(cfg.methods):
        budget = int(round((1 - cfg.fractions_removed[-1]) * dense_params(teacher)))
        try:
            sized_student(cfg.teacher.teacher, spec.input_shape, spec.num_classes, budget)
        except ValueError as err:
            raise UsageError(f"--fractions_removed={cfg.fractions_removed[-1]}: {err} "
                             f"(student family {student_family(cfg.teacher.teacher)}); "
                             "remove less.") from err


def flags_text() -> str:
    return "".join(FLAGS[name].serialize() + "\n" for name in RUN_FLAGS
                   if FLAGS[name].value is not None)


def main(argv) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag.")
    from epkd_tf.config import ConfigError
    from epkd_tf.data import DataError, load_data
    if not FLAGS.output_dir:
        FLAGS.output_dir = os.path.join("saved_models",
                                        f"study_{FLAGS.dataset}_{FLAGS.teacher}".replace("/", "-"))
    try:
        cfg = build_config()
        data = load_data(cfg.data)
        check_inputs(cfg, data.spec)
        prepare_output_dir(cfg.output_dir, flags_text(), FLAGS, RUN_FLAGS, FLAGS.overwrite,
                               "study")
    except (ConfigError, DataError, UsageError) as err:
        return fail(str(err))
    setup_logging()
    from epkd_tf.study.layout import StudyDir
    from epkd_tf.study.runner import Study
    d = StudyDir(cfg.output_dir)
    d.write_text("flags.txt", flags_text())
    logging.getLogger("epkd_tf").info("Study directory: %s (%s)", d.root, data.spec)
    Study(cfg, data, d, verbose=FLAGS.verbose)()
    logging.getLogger("epkd_tf").info("Done: %s", d.path("study.md"))
    return 0


def parse_flags(argv):
    """Parses this module's flags; see :func:`epkd_tf.cli.parse_module_flags`."""
    return parse_module_flags(FLAGS, argv, __doc__.split("\n\n")[1])


def run() -> None:
    """Console entry point."""
    sys.exit(main(parse_flags(sys.argv)))


if __name__ == "__main__":
    run()
