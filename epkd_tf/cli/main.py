"""``python -m epkd_tf.main``: run EPKD (pruning + distillation) on a TFDS dataset.

Every flag is validated before any work: a bad value prints one line ``error: ...`` naming
the flag, exits with status 2 and leaves no output directory behind. Pointing
``--output_dir`` at an unfinished run with the same flags resumes it; at a finished one,
reports it (after checking its records) unless ``--overwrite``. A run that fails on
the way (a NaN/Inf teacher loss, or a distillation's with ``--fail_on_nan``) prints one
line ``error: ...`` and exits with status 1, as does one that runs out of disk space,
memory or write permission (its completed stages are kept: the same command resumes).
Targets pruning cannot reach and teachers too large for the memory are refused before
any work (``epkd_tf.budget.feasibility``). One process at a time writes a run directory (a lock
held for the whole run; a second is refused naming the first's PID), and a resumed run
is first checked against what its completed stages recorded (``StageLedger.prepare_resume``).

Runs are reproducible: ``--seed`` seeds Python, NumPy and TensorFlow (again per
iteration) and TensorFlow's op determinism is on, so the same flags give the same models
and accuracies on the same machine, also across an interrupted and resumed run.
"""
from __future__ import annotations

import contextlib
import datetime
import glob
import logging
import os
import shlex
import shutil
import sys
from typing import Optional

from absl import app, flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli.common import build_teacher, check_prunable
from epkd_tf.cli.common import flags_text as common_flags_text
from epkd_tf.cli.common import (Terminated, UsageError, fail,
                                failure_message, interrupted_message, interruptible,
                                native_log_filter, parse_or_exit, prepare_output_dir,
                                print_help_and_exit, quiet_libraries, settings_topics,
                                setup_logging, take_lock, verbosity)
from epkd_tf.errors import EXIT_FAILED, is_environment_failure

FLAGS = flags.FLAGS


def _run_defaults():
    from epkd_tf.config import RunConfig
    return RunConfig()


# Every setting of RunConfig is a flag with its default and help (epkd_tf.config); these
# are the flags that describe the run (written to flags.txt, compared when resuming).
from epkd_tf.settings import define_flags  # noqa: E402

RUN_FLAGS = define_flags(_run_defaults(), FLAGS)
# Flags of the command line alone (how to run, not what the run is): (name, default, help).
CLI_FLAGS = (
    ("overwrite", False, "Run again over a finished run with these flags (in --output_dir, "
                         "or the latest such run under saved_models/ without it)."),
    ("verbose", 0, "0: epkd_tf's own lines only (one per epoch, phase and iteration); 1: "
                   "also Keras progress bars and the libraries' log (TensorFlow, TFDS); "
                   "also set by $EPKD_VERBOSE."),
)
flags.DEFINE_bool(CLI_FLAGS[0][0], CLI_FLAGS[0][1], CLI_FLAGS[0][2])
flags.DEFINE_integer(CLI_FLAGS[1][0], CLI_FLAGS[1][1], CLI_FLAGS[1][2])

# The command line as given (for the one line that tells how to resume).
_ARGV = []


RUNS_DIR = "saved_models"


def _run_name_prefix() -> str:
    """``<dataset>_<teacher>_`` (the teacher is the --teacher_path file's name when
    given), sanitised: what every default run directory of these flags starts with."""
    from epkd_tf.models.user import model_stem
    from epkd_tf.records import safe_name
    teacher = model_stem(FLAGS.teacher_path) if FLAGS.teacher_path else FLAGS.teacher
    return safe_name(f"{FLAGS.dataset.strip()}_{teacher}_")


def _new_output_dir(now: Optional[datetime.datetime] = None) -> str:
    """``saved_models/<dataset>_<teacher>_<time>`` (``-2``, ``-3``... appended when taken),
    one sanitised path component, claimed by creating it: ``os.mkdir`` fails for all but
    one process, so two runs started within one second get two directories (instead of
    the second being refused by the first's lock). The caller removes it again if the run
    stops before writing anything (:func:`main`).

    Args:
        now: the time the name is made of (default: now).

    Returns:
        The directory, created and empty.

    Raises:
        RunDirError: ``saved_models/`` cannot be written.
    """
    from epkd_tf.records import RunDirError
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    prefix = _run_name_prefix()
    suffix = 1
    while True:
        path = os.path.join(RUNS_DIR, prefix + stamp + (f"-{suffix}" if suffix > 1 else ""))
        try:
            os.makedirs(RUNS_DIR, exist_ok=True)
            os.mkdir(path)
            return path
        except FileExistsError:
            suffix += 1             # another run (of the same second) has it
        except FileNotFoundError:
            continue                # saved_models/ was removed meanwhile (an empty one)
        except OSError as err:
            raise RunDirError(f"{os.path.abspath(RUNS_DIR)} cannot be written "
                              f"({err.strerror}): give --output_dir.") from None


def default_output_dir(cfg):
    """Without --output_dir the same command continues where it stopped: the newest run
    under saved_models/ written with these flags is resumed if unfinished, or reported if
    finished (None is returned then; --overwrite runs it again); otherwise a new
    timestamped directory. (path or None, the line to say about it)."""
    from epkd_tf.records.settings_record import differing_settings
    for path in sorted(glob.glob(os.path.join(RUNS_DIR, glob.escape(_run_name_prefix()) + "*")),
                       reverse=True):
        from epkd_tf.records import DamagedRunError, RunDir
        try:
            old_flags = RunDir(path).read_flags()
        except DamagedRunError:     # not a run of these flags that could be resumed
            continue
        if old_flags is None or differing_settings(old_flags, cfg):
            continue
        if not RunDir(path).stages.progress().get("finished"):
            return path, (f"Resuming {path}: an unfinished run with the same flags "
                          f"(give --output_dir for a new run).")
        if FLAGS.overwrite:
            return path, f"Running {path} again (--overwrite): a finished run with the same flags."
        return None, path
    return _new_output_dir(), None


def finished_with_these_flags(path: str, cfg) -> bool:
    """Whether ``path`` holds a finished run written with the flags of ``cfg`` (what the
    same command finds there); False for anything else (no run, other flags, unreadable
    records), which :func:`prepare_run` then accepts or refuses."""
    from epkd_tf.records import RunDir, RunDirError
    from epkd_tf.records.settings_record import differing_settings
    run = RunDir(path)
    try:
        old_flags = run.read_flags()
        if old_flags is None or differing_settings(old_flags, cfg):
            return False
        return bool(run.stages.progress().get("finished"))
    except (OSError, UnicodeDecodeError, RunDirError):
        return False


def report_finished(path: str) -> int:
    """Prints what a finished run with the same flags made, instead of redoing it: its
    report's path and its headline, after checking that every file and table is what its
    stages wrote (the check a resume makes).

    Args:
        path: the run directory.

    Returns:
        0; 2 after one ``error:`` line naming the first damaged file (or a damaged
        progress.json, a link out of the run).
    """
    from epkd_tf.records import RunDir, RunDirError
    from epkd_tf.records.report import headline_text
    run = RunDir(path)
    try:
        run.stages.check_links(f"--output_dir={path}")
        damage = run.stages.verify()
        if damage is None:
            headline = headline_text(run)
    except RunDirError as err:
        return fail(err)
    if damage is not None:
        return fail(f"--output_dir={path} holds a finished run with these flags, but "
                    f"{damage['path']} is damaged ({damage['problem']}; not what the "
                    f"{damage['name']} stage wrote): `python -m epkd_tf.report {path}` lists "
                    f"what is; pass --overwrite to run it again.")
    print(f"A finished run with these flags is in {path}; its report: "
          f"{os.path.join(path, 'report.md')}. Pass --overwrite to run it again or "
          f"another --output_dir for a new run.", file=sys.stderr)
    for line in headline:
        print(line, file=sys.stderr)
    return 0


def command_line() -> str:
    """The command that was run (the one that resumes it)."""
    return "python -m epkd_tf.main " + shlex.join(_ARGV)


def kept_summary(output_dir: str) -> str:
    """What an interrupted run has kept, e.g. ``the teacher and iterations 1-2 are kept in
    DIR``."""
    from epkd_tf.records import RunDir
    try:
        state = RunDir(output_dir).stages.progress()
    except Exception:           # an unreadable state: nothing to claim
        return f"what was completed is kept in {output_dir}"
    if not state.get("teacher_done"):
        return f"nothing was completed yet ({output_dir} is kept)"
    done = state.get("iterations_done", 0)
    iterations = (f" and iteration{'s 1-' + str(done) if done > 1 else ' 1'}"
                  if done else "")
    return f"the teacher{iterations} are kept in {output_dir}"


# What apply_dataset_defaults chose for the flags not given (logged once the run starts).
_DATASET_NOTES = []


def apply_dataset_defaults() -> None:
    """Sets the flags that ``--dataset`` gives a default and the command line leaves out:
    ``--test_split`` (the dataset's labelled evaluation split, e.g. validation for
    ImageNet, whose test split has no labels), ``--teacher`` (resnet50 for ImageNet,
    unless --teacher_path is given) and ``--pruners`` (no oracle on ImageNet). The flags
    then hold the values the run uses, so flags.txt records them and a resume compares
    them; :data:`_DATASET_NOTES` keeps a line for each choice that differs from the
    general default."""
    from epkd_tf.cli.common import apply_test_split_default
    from epkd_tf.config import DATASET_PRUNERS, DATASET_TEACHERS, canonical_dataset
    _DATASET_NOTES.clear()
    given = FLAGS.dataset.strip()
    dataset = canonical_dataset(given)
    _DATASET_NOTES.extend(filter(None, [apply_test_split_default(FLAGS)]))
    teacher = DATASET_TEACHERS.get(dataset)
    if teacher and not FLAGS["teacher"].present and not FLAGS.teacher_path:
        FLAGS.teacher = teacher
        _DATASET_NOTES.append(f"--dataset={given}: teacher {teacher}, trained here (give "
                              f"--teacher or --teacher_path to choose)")
    pruners = DATASET_PRUNERS.get(dataset)
    if pruners and not FLAGS["pruners"].present:
        FLAGS.pruners = list(pruners)
        _DATASET_NOTES.append(f"--dataset={given}: pruners {','.join(pruners)} (the oracle "
                              f"re-evaluates the network once per channel group: give "
                              f"--pruners to choose)")


def build_config():
    """FLAGS → RunConfig, once (after :func:`apply_dataset_defaults`); raises ConfigError
    naming the bad flag."""
    from epkd_tf.settings import from_flags
    apply_dataset_defaults()
    return from_flags(_run_defaults(), FLAGS)


def check_names(cfg) -> None:
    """What the settings cannot check alone: --teacher and --teacher_path together."""
    if cfg.teacher.teacher_path and FLAGS["teacher"].present:
        raise UsageError(f"--teacher={cfg.teacher.teacher} and --teacher_path="
                         f"{cfg.teacher.teacher_path} both name the teacher; give one.")


def check_teacher(cfg, spec) -> None:
    """The teacher builds for the dataset (or --teacher_path loads and fits it, with
    finite weights), its training fits in memory, TFLite can convert it, structured
    pruners can trace it and the parameter targets are reachable
    (``epkd_tf.budget.feasibility``)."""
    import tensorflow as tf
    from epkd_tf.budget import feasibility
    gpus = bool(tf.config.list_physical_devices("GPU"))
    width_flag = ""
    if cfg.teacher.teacher_path:
        from epkd_tf.models.user import check_finite, check_fits, load_user_model
        flag = f"--teacher_path={cfg.teacher.teacher_path}"
        model = load_user_model(cfg.teacher.teacher_path, "teacher_path")
        check_fits(model, spec, "teacher_path", cfg.data.dataset)
        check_finite(model, "teacher_path")
        feasibility.check_memory(model, cfg.data.batch_size, flag, gpus)
    else:
        flag = f"--teacher={cfg.teacher.teacher}"
        width_flag = f"--teacher_width={cfg.teacher.width:g}" if cfg.teacher.width != 1 else ""
        made = " ".join(filter(None, [flag, width_flag, f"--image_size={cfg.data.image_size}"
                                      if cfg.data.image_size else ""]))
        with tf.Graph().as_default():       # sizes only: no weights are allocated
            # A graph-level seed: with op determinism on, a random op without one (a
            # Dropout, an initializer) refuses to be built in a fresh graph.
            tf.compat.v1.set_random_seed(cfg.data.seed)
            feasibility.check_memory(build_teacher(cfg, spec), cfg.data.batch_size,
                                     f"{made} (input {spec.input_shape})", gpus)
        model = build_teacher(cfg, spec)
    if "keras3" in cfg.export_formats and FLAGS["export_formats"].present:
        # Asked for: refused now (students keep the teacher's layer classes). By default
        # keras3 is only skipped, with a warning, for a teacher it cannot convert.
        from epkd_tf.models.keras3 import Keras3ConversionError, check_keras3_export
        try:
            check_keras3_export(model)
        except Keras3ConversionError as err:
            raise UsageError(f"--export_formats=keras3: {err} Leave keras3 out of "
                             f"--export_formats.") from err
    graph = check_prunable(model, flag, cfg.pruning.make_pruners())
    from epkd_tf.deploy.tflite import check_tflite_convertible
    check_tflite_convertible(model, flag)
    # Other measures are checked as they are met. With --keep_of=removable and a
    # structured pruner (``graph``) no target is below the floor network's cost.
    if cfg.budget.budget == "params" and (cfg.keep_of == "cost" or graph is None):
        feasibility.check_targets(cfg.keep_ratio, cfg.iterations, cfg.pruning.layer_floor,
                                  model, graph, width_flag,
                                  goal=float(cfg.budget.target_params or 0),
                                  floor_of_teacher=cfg.pruning.layer_floor_of == "teacher",
                                  upper_bound=cfg.budget.max_accuracy_drop is not None)


def flags_text(cfg) -> str:
    """flags.txt of this run (:func:`epkd_tf.cli.common.flags_text`)."""
    return common_flags_text(cfg, FLAGS, RUN_FLAGS)


def main(argv) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag.")
    verbose = verbosity(FLAGS.verbose)
    quiet_libraries(verbose)
    # The settings first, before TensorFlow loads: a typo is answered at once.
    from epkd_tf.config import ConfigError
    from epkd_tf.records import RunDirError
    try:
        explicit = bool(FLAGS.output_dir)
        cfg = build_config()
        check_names(cfg)
        note = claimed = None
        if explicit and not FLAGS.overwrite and finished_with_these_flags(cfg.output_dir,
                                                                            cfg):
            return report_finished(cfg.output_dir)
        if not explicit:
            path, note = default_output_dir(cfg)
            if path is None:
                return report_finished(note)
            claimed = None if note else path        # a new directory, made just now
            FLAGS.output_dir = path
            cfg = build_config()
    except (ConfigError, UsageError, RunDirError) as err:
        return fail(err)
    try:
        with interruptible():
            try:
                return _prepare_and_run(cfg, verbose, note)
            except (KeyboardInterrupt, Terminated) as err:
                line, status = interrupted_message(err, kept_summary(cfg.output_dir),
                                                   command_line())
                print(line, file=sys.stderr)
                return status
    finally:
        if claimed:
            # A run refused before it wrote anything leaves no directory behind.
            for empty in (claimed, RUNS_DIR):
                with contextlib.suppress(OSError):
                    os.rmdir(empty)


def _prepare_and_run(cfg, verbose: int, note) -> int:
    """Everything that needs TensorFlow: the devices, the data, the teacher's checks, the
    run directory (locked), then the run."""
    from epkd_tf.config import ConfigError
    from epkd_tf.data import DataError, load_data
    from epkd_tf.errors import ModelFileError
    from epkd_tf.records import RunDir, RunDirError, check_output_dir
    try:
        # Before anything else touches TensorFlow: strategies configure the devices.
        strategy, chief = make_strategy(cfg)
        quiet_libraries(verbose)         # TensorFlow's Python loggers exist now
        from epkd_tf.seeds import seed_everything
        # XLA has no deterministic max-pooling gradient: it refuses to compile the train
        # step of a network with max pooling (ResNet-50's stem) while determinism is on.
        seed_everything(cfg.data.seed, deterministic=not cfg.jit_compile)
        if chief:
            check_output_dir(cfg.output_dir)
        data = load_data(cfg.data)
        check_teacher(cfg, data.spec)
    except (ConfigError, DataError, ModelFileError, UsageError, RunDirError) as err:
        return fail(err)
    setup_logging()
    for line in _DATASET_NOTES:
        logging.getLogger("epkd_tf").info("%s", line)
    if note:
        logging.getLogger("epkd_tf").info("%s", note)
    if not chief:
        # Workers other than the chief run every step (collectives must match) but keep
        # their files in a scratch directory that is removed at the end.
        import tempfile
        scratch = tempfile.mkdtemp(prefix="epkd_worker_")
        try:
            return _run(cfg, data, RunDir(scratch), strategy, verbose)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    run = RunDir(cfg.output_dir)
    with contextlib.ExitStack() as held:
        problem = take_lock(held, run, cfg.output_dir)
        if problem:
            return fail(problem)
        try:
            warning = prepare_run(cfg, run)
        except (UsageError, RunDirError) as err:
            return fail(err)
        except OSError as err:
            return fail(failure_message(err, f"--output_dir={cfg.output_dir}"),
                        status=EXIT_FAILED)
        if warning:
            logging.getLogger("epkd_tf").warning(warning)
        return _run(cfg, data, run, strategy, verbose)


def prepare_run(cfg, run) -> str:
    """Holding the run directory's lock: refuses a directory that this run cannot use,
    empties it with --overwrite, checks a run to resume (a warning line when its last stage
    is to be redone) and writes flags.txt. Raises UsageError or RunDirError."""
    if (cfg.distribution == "multi_worker_mirrored" and not FLAGS.overwrite
            and os.path.exists(run.flags_file)):
        # The other workers keep no state to resume from: they would start over
        # while the chief resumed, and their collective operations would not match.
        raise UsageError(f"--output_dir={cfg.output_dir} holds a run, and "
                         "multi-worker runs cannot resume; pass --overwrite or "
                         "choose a new --output_dir.")
    from epkd_tf.records.settings_record import differing_settings
    # Compared as values, by the rule the Python API uses (a run either wrote resumes).
    prepare_output_dir(cfg.output_dir, flags_text(cfg), FLAGS, RUN_FLAGS, FLAGS.overwrite,
                       differing=lambda old: differing_settings(old, cfg))
    warning = run.stages.prepare_resume()
    run.write_text("flags.txt", flags_text(cfg))
    return warning


def _run(cfg, data, run, strategy, verbose: int = 0) -> int:
    """Runs (or resumes) EPKD into ``run``; the exit status."""
    from epkd_tf.errors import NonFiniteLossError
    from epkd_tf.loop import run_epkd
    from epkd_tf.records import RunDirError
    log = logging.getLogger("epkd_tf")
    log.info("Run directory: %s (%s; %s, %d replica(s))", run.root, data.spec,
             cfg.distribution, strategy.num_replicas_in_sync)
    if cfg.jit_compile:
        log.info("--jit_compile: TensorFlow's op determinism is off (XLA has no "
                 "deterministic max-pooling gradient); the same --seed may give slightly "
                 "different weights")
    if cfg.precision != "float32":
        log.info("--precision=%s: layers compute in %s with float32 variables and "
                 "logits; exports are float32", cfg.precision, cfg.precision[6:])
    if cfg.teacher.teacher_path:
        from epkd_tf.settings import flag_values_of
        used = flag_values_of(cfg)
        unused = [f"--{n}" for n in RUN_FLAGS if FLAGS[n].present and n not in used
                  and n != "teacher"]
        if unused:
            log.info("--teacher_path given: %s unused", ", ".join(unused))
    try:
        with strategy.scope():
            students = run_epkd(cfg, data, run, verbose=verbose)
    except NonFiniteLossError as err:
        return fail(err)
    except RunDirError as err:      # a checkpoint that cannot be trusted
        return fail(err)
    except Exception as err:        # the machine: a full disk, memory, a TensorFlow runtime
        if not is_environment_failure(err):
            raise
        return fail(failure_message(err, f"--output_dir={cfg.output_dir}"),
                    status=EXIT_FAILED)
    from epkd_tf.records.report import console_path, headline_text
    log.info("Done: %d students in %s (report: %s)", len(students), console_path(run, ""),
             console_path(run, "report.md"))
    for line in headline_text(run):
        log.info("%s", line)
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


#: What ``--help`` shows first, after the usage line.
EXAMPLES = (
    "python -m epkd_tf.main --dataset=mnist --teacher=lenet300_100 --iterations=3",
    "python -m epkd_tf.main --flagfile=flags/mnist_lenet5.cfg --data_dir=data/tfds",
    "python -m epkd_tf.main --teacher_path=my_model.keras --dataset=cifar10 "
    "--budget=latency --max_accuracy_drop=0.5 --validation_split=0.1",
)


def help_topics():
    """The run's flags by topic (title, flag names): one per part of RunConfig (Data,
    Teacher, Pruning, Distill, Budget), the run's own settings, then the command line's."""
    return settings_topics(_run_defaults(), "Run: iterations, ranking, outputs, exports "
                                            "and devices") + [
        ("Command line", [name for name, _, _ in CLI_FLAGS])]


def parse_flags(argv):
    """absl's parser, but a malformed or unknown flag is one line and exit status 2, and
    ``--help`` (also ``-h``, ``--helpshort``) prints the usage, examples and epkd_tf's
    flags by topic and exits 0; ``--helpfull`` adds absl's own flags."""
    global _ARGV
    _ARGV = list(argv[1:])
    usage = (__doc__.split("\n\n")[0] + "\n\nUsage: python -m epkd_tf.main [--flag=value ...]\n"
             "       (--flagfile=FILE reads flags one per line, e.g. a run's flags.txt)")
    print_help_and_exit(FLAGS, argv, usage, help_topics(), EXAMPLES)
    return parse_or_exit(FLAGS, argv)


def console_main(argv) -> int:
    """:func:`main` with the native libraries' log lines filtered out of the console
    (unless --verbose / $EPKD_VERBOSE)."""
    with native_log_filter(enabled=not verbosity(FLAGS.verbose)):
        return main(argv)


def run() -> None:
    """Console entry point."""
    app.run(lambda argv: sys.exit(console_main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
    run()
