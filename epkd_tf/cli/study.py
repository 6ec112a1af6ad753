"""``python -m epkd_tf.study``: pruning vs distillation vs both, at equal compression.

    python -m epkd_tf.study --flagfile=flags/study_mnist_lenet300.cfg

trains one teacher, then for every method of ``--methods``, fraction of
``--fractions_removed`` and each of ``--seeds`` seeds makes a compressed model and writes
``study.csv``, ``comparisons.csv``, ``study.md`` and plots into ``--output_dir``
(docs/study.md). Every finished cell is recorded as it completes: rerunning the
same command resumes an interrupted study. Bad input prints one line ``error: ...`` naming
the flag, exits with status 2 and writes nothing; a study that runs out of disk space or
write permission on the way prints one line and exits with status 1 (the finished cells
are kept). One process at a time writes a study directory (a lock held throughout).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys

from absl import flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli.common import build_teacher, check_prunable
from epkd_tf.cli.common import flags_text as common_flags_text
from epkd_tf.cli.common import (Terminated, UsageError, fail, failure_message,
                                interrupted_message, interruptible, native_log_filter,
                                parse_module_flags, prepare_output_dir, quiet_libraries,
                                settings_topics, setup_logging, take_lock, verbosity)
from epkd_tf.errors import EXIT_FAILED, is_environment_failure

FLAGS = flags.FlagValues()


def _study_defaults():
    from epkd_tf.study.config import StudyConfig
    return StudyConfig()


# Every setting of StudyConfig is a flag with its default and help (epkd_tf.study.config).
from epkd_tf.settings import define_flags  # noqa: E402

RUN_FLAGS = define_flags(_study_defaults(), FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace a finished study in --output_dir.",
                  flag_values=FLAGS)
flags.DEFINE_integer("verbose", 0, "Keras progress output (0 = one log line per cell).",
                     flag_values=FLAGS)


def build_config():
    """FLAGS → StudyConfig, once (``--test_split`` resolved for the dataset, see
    :func:`epkd_tf.cli.common.apply_test_split_default`); raises ConfigError naming the
    bad flag."""
    from epkd_tf.cli.common import apply_test_split_default
    from epkd_tf.settings import from_flags
    apply_test_split_default(FLAGS)
    return from_flags(_study_defaults(), FLAGS)


def check_inputs(cfg, spec) -> None:
    """Names that the config cannot check alone, and that the models fit the dataset."""
    from epkd_tf.graph import dense_params
    from epkd_tf.study.students import sized_student, student_family
    teacher = build_teacher(cfg, spec)
    if "epkd" in cfg.methods:
        check_prunable(teacher, f"--teacher={cfg.teacher.teacher}",
                       cfg.pruning.make_pruners())
    if {"distill", "scratch"} & set(cfg.methods):
        budget = int(round((1 - cfg.fractions_removed[-1]) * dense_params(teacher)))
        try:
            sized_student(cfg.teacher.teacher, spec.input_shape, spec.num_classes, budget)
        except ValueError as err:
            raise UsageError(f"--fractions_removed={cfg.fractions_removed[-1]}: {err} "
                             f"(student family {student_family(cfg.teacher.teacher)}); "
                             "remove less.") from err


def flags_text(cfg) -> str:
    """flags.txt of this study (:func:`epkd_tf.cli.common.flags_text`)."""
    return common_flags_text(cfg, FLAGS, RUN_FLAGS)


def main(argv) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag.")
    verbose = verbosity(FLAGS.verbose)
    quiet_libraries(verbose)
    from epkd_tf.config import ConfigError
    if not FLAGS.output_dir:
        FLAGS.output_dir = os.path.join("saved_models",
                                        f"study_{FLAGS.dataset}_{FLAGS.teacher}".replace("/", "-"))
    try:              # the settings first, before TensorFlow loads: a typo is answered at once
        build_config()
    except ConfigError as err:
        return fail(err)
    with interruptible():
        try:
            return _study(verbose)
        except (KeyboardInterrupt, Terminated) as err:
            line, status = interrupted_message(
                err, f"the finished cells are kept in {FLAGS.output_dir or 'saved_models/'}",
                "python -m epkd_tf.study " + " ".join(shlex.quote(a) for a in _ARGV))
            print(line, file=sys.stderr)
            return status


def _study(verbose: int) -> int:
    from epkd_tf.config import ConfigError
    from epkd_tf.data import DataError, load_data
    from epkd_tf.records import RunDirError, check_output_dir
    from epkd_tf.study.layout import StudyDir
    try:
        cfg = build_config()
        check_output_dir(cfg.output_dir)
        data = load_data(cfg.data)
        check_inputs(cfg, data.spec)
    except (ConfigError, DataError, UsageError, RunDirError) as err:
        return fail(err)
    d = StudyDir(cfg.output_dir)
    with contextlib.ExitStack() as held:
        problem = take_lock(held, d, cfg.output_dir)
        if problem:
            return fail(problem)
        try:
            prepare_output_dir(cfg.output_dir, flags_text(cfg), FLAGS, RUN_FLAGS,
                               FLAGS.overwrite, "study")
            d.stages.check_links()
        except (UsageError, RunDirError) as err:
            return fail(err)
        setup_logging()
        from epkd_tf.study.runner import Study
        try:
            d.write_text("flags.txt", flags_text(cfg))
            logging.getLogger("epkd_tf").info("Study directory: %s (%s)", d.root, data.spec)
            quiet_libraries(verbose)
            Study(cfg, data, d, verbose=verbose)()
        except RunDirError as err:     # a model file of the study that cannot be trusted
            return fail(err)
        except Exception as err:       # the machine: a full disk, memory, TensorFlow runtime
            if not is_environment_failure(err):
                raise
            return fail(failure_message(err, f"--output_dir={cfg.output_dir}"),
                        status=EXIT_FAILED)
    logging.getLogger("epkd_tf").info("Done: %s", d.path("study.md"))
    return 0


# The command line as given (for the one line that tells how to resume).
_ARGV = []


def parse_flags(argv):
    """Parses this module's flags; see :func:`epkd_tf.cli.common.parse_module_flags`."""
    global _ARGV
    _ARGV = list(argv[1:])
    topics = settings_topics(_study_defaults(), "Study: methods, fractions, seeds and "
                                                "training") + [("Command line",
                                                                ["overwrite", "verbose"])]
    return parse_module_flags(FLAGS, argv, __doc__.split("\n\n")[1], topics)


def run() -> None:
    """Console entry point: the native libraries' log lines are filtered out of the
    console unless --verbose / $EPKD_VERBOSE."""
    argv = parse_flags(sys.argv)
    with native_log_filter(enabled=not verbosity(FLAGS.verbose)):
        status = main(argv)
    sys.exit(status)


if __name__ == "__main__":
    run()
