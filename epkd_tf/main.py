"""``python -m epkd_tf.main``: run EPKD (pruning + distillation) on a TFDS dataset.

Every flag is validated before any work: a bad value prints one line ``error: ...`` naming
the flag, exits with status 2 and leaves no output directory behind. Pointing
``--output_dir`` at an unfinished run with the same flags resumes it. A run that fails on
the way (a NaN/Inf teacher loss, or a distillation's with ``--fail_on_nan``) prints one
line ``error: ...`` and exits with status 1.

Runs are reproducible: ``--seed`` seeds Python, NumPy and TensorFlow (again per
iteration) and TensorFlow's op determinism is on, so the same flags give the same models
and accuracies on the same machine, also across an interrupted and resumed run.
"""
from __future__ import annotations

import datetime
import logging
import os
import shutil
import sys

from absl import app, flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli import (UsageError, fail, parse_or_exit, prepare_output_dir,
                         setup_logging)

FLAGS = flags.FLAGS

# -- data ---------------------------------------------------------------------------------
flags.DEFINE_string("dataset", "mnist", "TFDS dataset name (mnist, cifar10, imagenet2012 "
                    "alias imagenet, or any TFDS image-classification dataset prepared in "
                    "--data_dir).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets). "
                    "Nothing is downloaded: prepare it first, e.g. with "
                    "python -m epkd_tf.data --import_npz=...")
flags.DEFINE_string("train_split", "train", "TFDS split for training, e.g. train[:10%].")
flags.DEFINE_string("test_split", "test", "TFDS split for testing, e.g. test[:50%].")
flags.DEFINE_integer("batch_size", 128, "Batch size of every training and evaluation pass.")
flags.DEFINE_integer("seed", 0, "Seed of shuffling, initialisation and scoring subsets.")
flags.DEFINE_integer("image_size", None, "Square size (pixels per side) images are resized/"
                     "cropped to; required for datasets with variable image sizes such as "
                     "imagenet2012 (which defaults to 224); default: the dataset's own size.")
# -- teacher ------------------------------------------------------------------------------
flags.DEFINE_string("teacher", "lenet300_100", "Teacher architecture (see README).")
flags.DEFINE_integer("teacher_epochs", 10, "Epochs of teacher training.")
flags.DEFINE_float("teacher_learning_rate", 1e-3, "Adam learning rate of teacher training.")
flags.DEFINE_float("teacher_width", 1.0, "Width multiplier of the teacher's channels/units "
                   "(1 = the published architecture; e.g. 0.25 for a quick run).")
flags.DEFINE_string("teacher_path", None, "A trained model to use as the teacher instead of "
                    "training --teacher: a .keras file (tf_keras or Keras 3), an .h5 file or a "
                    "Keras SavedModel directory that outputs logits for the dataset's classes "
                    "(loaded in Keras safe mode; Lambda layers are refused). --teacher_epochs, "
                    "--teacher_learning_rate and --teacher_width are then unused.")
# -- pruning ------------------------------------------------------------------------------
flags.DEFINE_integer("iterations", 10, "Compression iterations.")
flags.DEFINE_float("keep_ratio", 0.9, "Nonzero parameters each iteration keeps, in (0, 1).")
flags.DEFINE_list("pruners", ["l1_filter", "taylor", "oracle", "poly_magnitude"],
                  "Pruning methods that make the candidates of every iteration.")
flags.DEFINE_float("layer_floor", 0.1, "Fraction of each layer's units structured pruning "
                   "never removes (at least one unit).")
flags.DEFINE_integer("taylor_batches", 8, "Batches of --batch_size the Taylor criterion "
                     "averages over.")
flags.DEFINE_integer("oracle_examples", 1024, "Training examples the oracle criterion "
                     "measures each loss change on.")
flags.DEFINE_integer("magnitude_epochs", 1, "Epochs of the poly_magnitude pruning fine-tune.")
flags.DEFINE_float("flops_weight", 0.0, "FLOPs regularisation of the structured pruners' "
                   "global ranking (Molchanov et al.): > 0 prefers removing units that cost "
                   "many multiply-accumulates, so latency falls with the parameters; 0 ranks "
                   "by importance alone.")
flags.DEFINE_string("rank_weights", "1,3", "Weights train,test of the candidates' ranking "
                    "score (w_train*train_acc + w_test*test_acc) / (w_train + w_test).")
# -- distillation -------------------------------------------------------------------------
flags.DEFINE_integer("finetune_epochs", 2, "Epochs of distillation fine-tuning per iteration.")
flags.DEFINE_float("finetune_learning_rate", 5e-4, "Adam learning rate of fine-tuning (also "
                   "of the poly_magnitude pruning fine-tune).")
flags.DEFINE_float("alpha", 0.1, "Weight of the hard-label loss; 1 - alpha weighs the "
                   "soft-target loss.")
flags.DEFINE_string("temperature_schedule", "linear", "linear: max(temperature_min, "
                    "temperature_start - temperature_step*(iteration-1)); constant: "
                    "temperature_start.")
flags.DEFINE_float("temperature_start", 50.0, "Distillation temperature of iteration 1.")
flags.DEFINE_float("temperature_step", 5.0, "Temperature decrease per iteration.")
flags.DEFINE_float("temperature_min", 1.0, "Lowest temperature.")
# -- outputs ------------------------------------------------------------------------------
flags.DEFINE_string("output_dir", None, "Run directory (default: "
                    "saved_models/<dataset>_<teacher>_<time>).")
flags.DEFINE_bool("export_candidates", False, "Also export every candidate as a SavedModel.")
flags.DEFINE_integer("latency_runs", 50, "Timed TFLite runs per latency measurement.")
flags.DEFINE_list("export_formats", ["saved_model", "tflite", "tflite_sparse",
                                     "tflite_int8_dynamic", "tflite_int8", "keras3"],
                  "Deployment formats written (and measured in deployment.csv) for the teacher "
                  "and every student; empty: none (see README, Deployment).")
flags.DEFINE_integer("tflite_threads", 1, "CPU threads of the TFLite latency measurements "
                     "in deployment.csv.")
flags.DEFINE_bool("int8_dense_per_channel", False, "tflite_int8: quantise Dense weights "
                  "per output unit instead of per tensor (larger file; see README, Deployment).")
flags.DEFINE_bool("fail_on_nan", False, "Stop the run (exit status 1) when a distillation "
                  "loss becomes NaN or Inf, instead of keeping the previous student for that "
                  "iteration and going on with a warning.")
flags.DEFINE_integer("eval_examples", 10_000, "Training examples (a fixed seeded subset) "
                     "whose accuracy ranks the candidates; 0: the whole training split.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train steps of teacher training "
                  "and distillation.")
flags.DEFINE_string("distribution", "default", "tf.distribute strategy: default (one "
                    "device), mirrored (all local GPUs), multi_worker_mirrored (a cluster "
                    "described by TF_CONFIG) or tpu. --batch_size is the global batch.")
flags.DEFINE_integer("logical_cpus", 0, "With --distribution=mirrored on a machine without "
                     "GPUs: mirror over this many logical CPU devices (for testing).")
flags.DEFINE_bool("overwrite", False, "Replace an existing finished run in --output_dir.")
flags.DEFINE_integer("verbose", 0, "Keras progress output (0 = one log line per phase).")

# Flags that describe the run (written to flags.txt, compared when resuming).
RUN_FLAGS = ("dataset", "data_dir", "train_split", "test_split", "batch_size", "seed",
             "image_size", "teacher", "teacher_epochs", "teacher_learning_rate",
             "teacher_width", "teacher_path", "iterations",
             "keep_ratio", "pruners", "layer_floor", "taylor_batches", "oracle_examples",
             "magnitude_epochs", "flops_weight", "rank_weights", "finetune_epochs",
             "finetune_learning_rate",
             "alpha", "temperature_schedule", "temperature_start", "temperature_step",
             "temperature_min", "output_dir", "export_candidates", "latency_runs",
             "export_formats", "tflite_threads", "int8_dense_per_channel", "fail_on_nan",
             "eval_examples", "jit_compile", "distribution", "logical_cpus")
# Flags that only describe how to build and train a teacher: unused with --teacher_path.
TEACHER_TRAINING_FLAGS = ("teacher", "teacher_epochs", "teacher_learning_rate", "teacher_width")



def _default_output_dir() -> str:
    """``saved_models/<dataset>_<teacher>_<time>``, one sanitised path component (the
    teacher is the --teacher_path file's name when given)."""
    from epkd_tf.models.user import model_stem
    from epkd_tf.records import safe_name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    teacher = model_stem(FLAGS.teacher_path) if FLAGS.teacher_path else FLAGS.teacher
    return os.path.join("saved_models", safe_name(f"{FLAGS.dataset}_{teacher}_{stamp}"))


def build_config():
    """FLAGS → RunConfig, once; raises ConfigError naming the bad flag."""
    from epkd_tf.config import (DataConfig, DistillConfig, PruningConfig, RunConfig,
                                TeacherConfig, parse_rank_weights)
    return RunConfig(
        data=DataConfig(dataset=FLAGS.dataset.strip(), data_dir=FLAGS.data_dir,
                        train_split=FLAGS.train_split, test_split=FLAGS.test_split,
                        batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                        image_size=FLAGS.image_size),
        teacher=TeacherConfig(teacher=FLAGS.teacher, teacher_epochs=FLAGS.teacher_epochs,
                              learning_rate=FLAGS.teacher_learning_rate,
                              width=FLAGS.teacher_width, teacher_path=FLAGS.teacher_path),
        pruning=PruningConfig(pruners=tuple(p.strip() for p in FLAGS.pruners),
                              keep_ratio=FLAGS.keep_ratio, layer_floor=FLAGS.layer_floor,
                              taylor_batches=FLAGS.taylor_batches,
                              oracle_examples=FLAGS.oracle_examples,
                              magnitude_epochs=FLAGS.magnitude_epochs,
                              flops_weight=FLAGS.flops_weight),
        distill=DistillConfig(finetune_epochs=FLAGS.finetune_epochs, alpha=FLAGS.alpha,
                              temperature_schedule=FLAGS.temperature_schedule,
                              temperature_start=FLAGS.temperature_start,
                              temperature_step=FLAGS.temperature_step,
                              temperature_min=FLAGS.temperature_min,
                              learning_rate=FLAGS.finetune_learning_rate),
        iterations=FLAGS.iterations,
        rank_weights=parse_rank_weights(FLAGS.rank_weights),
        output_dir=FLAGS.output_dir,
        export_candidates=FLAGS.export_candidates,
        latency_runs=FLAGS.latency_runs,
        export_formats=tuple(f.strip() for f in FLAGS.export_formats),
        tflite_threads=FLAGS.tflite_threads,
        int8_dense_per_channel=FLAGS.int8_dense_per_channel,
        fail_on_nan=FLAGS.fail_on_nan,
        eval_examples=FLAGS.eval_examples,
        jit_compile=FLAGS.jit_compile,
        distribution=FLAGS.distribution.strip(),
        logical_cpus=FLAGS.logical_cpus)


def check_names(cfg) -> None:
    """Unknown pruner / teacher / schedule names, before anything is loaded."""
    from epkd_tf.distill.temperature import SCHEDULES
    from epkd_tf.models import model_names
    from epkd_tf.pruning import pruner_names
    unknown = [p for p in cfg.pruning.pruners if p not in pruner_names()]
    if unknown:
        raise UsageError(f"--pruners: unknown pruner {unknown[0]!r}; choose from "
                         f"{', '.join(pruner_names())}.")
    if cfg.teacher.teacher_path and FLAGS["teacher"].present:
        raise UsageError(f"--teacher={cfg.teacher.teacher} and --teacher_path="
                         f"{cfg.teacher.teacher_path} both name the teacher; give one.")
    if cfg.teacher.teacher not in model_names():
        raise UsageError(f"--teacher={cfg.teacher.teacher!r} is unknown; choose from "
                         f"{', '.join(model_names())}.")
    if cfg.distill.temperature_schedule not in SCHEDULES:
        raise UsageError(f"--temperature_schedule={cfg.distill.temperature_schedule!r} is "
                         f"unknown; choose from {', '.join(sorted(SCHEDULES))}.")


def check_teacher(cfg, spec) -> None:
    """The teacher builds for the dataset (or --teacher_path loads and fits it) and
    structured pruners can trace it."""
    from epkd_tf.graph import UnsupportedLayerError, analyze
    from epkd_tf.pruning import StructuredPruner, make_pruner
    if cfg.teacher.teacher_path:
        from epkd_tf.models.user import check_fits, load_user_model
        flag = f"--teacher_path={cfg.teacher.teacher_path}"
        model = load_user_model(cfg.teacher.teacher_path, "teacher_path")
        check_fits(model, spec, "teacher_path", cfg.data.dataset)
    else:
        flag = f"--teacher={cfg.teacher.teacher}"
        model = _build_teacher(cfg, spec)
    if "keras3" in cfg.export_formats and FLAGS["export_formats"].present:
        # Asked for: refused now (students keep the teacher's layer classes). By default
        # keras3 is only skipped, with a warning, for a teacher it cannot convert.
        from epkd_tf.models.keras3 import Keras3ConversionError, check_keras3_export
        try:
            check_keras3_export(model)
        except Keras3ConversionError as err:
            raise UsageError(f"--export_formats=keras3: {err} Leave keras3 out of "
                             f"--export_formats.") from err
    if any(isinstance(make_pruner(p), StructuredPruner) for p in cfg.pruning.pruners):
        try:
            analyze(model)
        except UnsupportedLayerError as err:
            raise UsageError(f"{flag}: {err}") from err


def _build_teacher(cfg, spec):
    from epkd_tf.models import build_model
    try:
        model = build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                            width=cfg.teacher.width)
    except (ValueError, TypeError) as err:
        # Keras shape errors span several lines; the user gets one.
        reason = " ".join(str(err).split())[:300]
        raise UsageError(f"--teacher={cfg.teacher.teacher} cannot be built for "
                         f"--dataset={cfg.data.dataset} with input shape {spec.input_shape}: "
                         f"{reason}") from err
    return model


def flags_text() -> str:
    unused = TEACHER_TRAINING_FLAGS if FLAGS.teacher_path else ()
    return "".join(FLAGS[name].serialize() + "\n" for name in RUN_FLAGS
                   if FLAGS[name].value is not None and name not in unused)


def main(argv) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag.")
    from epkd_tf.config import ConfigError
    from epkd_tf.data import DataError, load_data
    from epkd_tf.models.user import ModelFileError
    if not FLAGS.output_dir:
        FLAGS.output_dir = _default_output_dir()
    try:
        cfg = build_config()
        # Before anything else touches TensorFlow: strategies configure the devices.
        strategy, chief = make_strategy(cfg)
        seed_everything(cfg.data.seed)
        check_names(cfg)
        data = load_data(cfg.data)
        check_teacher(cfg, data.spec)
        if chief:
            if (cfg.distribution == "multi_worker_mirrored" and not FLAGS.overwrite
                    and os.path.exists(os.path.join(cfg.output_dir, "flags.txt"))):
                # The other workers keep no state to resume from: they would start over
                # while the chief resumed, and their collective operations would not match.
                raise UsageError(f"--output_dir={cfg.output_dir} holds a run, and "
                                 "multi-worker runs cannot resume; pass --overwrite or "
                                 "choose a new --output_dir.")
            prepare_output_dir(cfg.output_dir, flags_text(), FLAGS, RUN_FLAGS, FLAGS.overwrite)
    except (ConfigError, DataError, ModelFileError, UsageError) as err:
        return fail(str(err))
    setup_logging()
    from epkd_tf.loop import NonFiniteLossError, run_epkd
    from epkd_tf.records import RunDir
    log = logging.getLogger("epkd_tf")
    if chief:
        run = RunDir(cfg.output_dir)
        run.write_text("flags.txt", flags_text())
    else:
        # Workers other than the chief run every step (collectives must match) but keep
        # their files in a scratch directory that is removed at the end.
        import tempfile
        scratch = tempfile.mkdtemp(prefix="epkd_worker_")
        run = RunDir(scratch)
    log.info("Run directory: %s (%s; %s, %d replica(s))", run.root, data.spec,
             cfg.distribution, strategy.num_replicas_in_sync)
    if cfg.teacher.teacher_path:
        unused = [f"--{n}" for n in TEACHER_TRAINING_FLAGS[1:] if FLAGS[n].present]
        if unused:
            log.info("--teacher_path given: %s unused", ", ".join(unused))
    try:
        with strategy.scope():
            students = run_epkd(cfg, data, run, verbose=FLAGS.verbose)
    except NonFiniteLossError as err:
        return fail(str(err), status=1)
    finally:
        if not chief:
            shutil.rmtree(run.root, ignore_errors=True)
    log.info("Done: %d students in %s", len(students), run.root)
    return 0


def make_strategy(cfg):
    """The run's tf.distribute strategy and whether this process writes the outputs."""
    from epkd_tf import distribute
    try:
        distribute.check_tf_config()
        strategy = distribute.make_strategy(cfg.distribution, cfg.logical_cpus)
    except ValueError as err:
        raise UsageError(str(err)) from err
    return strategy, distribute.is_chief(strategy)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and turns on TensorFlow's op determinism, so
    that the same flags reproduce a run (README, Reproducibility)."""
    import tensorflow as tf
    import tf_keras
    tf.config.experimental.enable_op_determinism()
    tf_keras.utils.set_random_seed(seed)



def parse_flags(argv):
    """absl's parser, but a malformed or unknown flag is one line and exit status 2."""
    return parse_or_exit(FLAGS, argv)


def run() -> None:
    """Console entry point."""
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
    run()
