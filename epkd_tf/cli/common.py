"""Plumbing shared by the absl entry points (``main``, ``export``, ``study``, ``report``):
errors, logging, flag parsing and comparing a run's flags with the ones it was written with."""
import contextlib
import logging
import os
import re
import sys
from typing import Optional

from absl import flags
from epkd_tf.errors import (EXIT_BAD_INPUT, Terminated, UsageError,  # noqa: F401
                            exit_status)


def fail(problem, status: Optional[int] = None) -> int:
    """Prints the one-line ``error: ...`` users see and returns the exit status:
    ``status`` if given, else the error's own (:func:`epkd_tf.errors.exit_status`; a
    message alone is bad input, 2)."""
    if isinstance(problem, BaseException):
        message, own = str(problem), exit_status(problem)
    else:
        message, own = str(problem), EXIT_BAD_INPUT
    print(f"error: {message}", file=sys.stderr)
    return own if status is None else status


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not the stream of the
    first call: callers such as tests swap it between runs)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup_logging() -> None:
    """One concise ``HH:MM:SS epkd_tf: ...`` line per event on stderr."""
    logger = logging.getLogger("epkd_tf")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s epkd_tf: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


# How absl names a flag file, on the command line and inside a flag file (nested).
_FLAGFILE_PREFIXES = ("--flagfile=", "-flagfile=")
_FLAGFILE_ALONE = ("--flagfile", "-flagfile")


def _flagfile_names(args) -> list:
    """The flag files ``args`` name as absl reads them (``--flagfile=F``, ``-flagfile=F``,
    ``--flagfile F``; nothing after ``--``), ``~`` expanded as absl expands it."""
    names = []
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith(_FLAGFILE_PREFIXES):
            names.append(os.path.expanduser(arg.split("=", 1)[1].strip()))
        elif arg in _FLAGFILE_ALONE and i + 1 < len(args):
            names.append(os.path.expanduser(args[i + 1].strip()))
    return names


def check_flagfiles(argv) -> Optional[str]:
    """The one-line problem with the first flag file ``argv`` names, directly or nested
    in another flag file, that absl could not read as text; None if all are readable.

    absl opens a flag file as it is named: a FIFO blocks it forever, another encoding ends
    it in a UnicodeDecodeError traceback, a device never ends. Each must be a regular
    UTF-8 text file of sane size (:func:`epkd_tf.files.read_text`); nested ones (a line
    ``--flagfile=F`` inside one) are checked the same way, each once."""
    from epkd_tf.files import read_text
    pending = [(name, None) for name in _flagfile_names(argv[1:])]
    seen = set()
    while pending:
        name, parent = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            text = read_text(name)
        except ValueError as err:
            where = f" (named in {parent})" if parent else ""
            return f"--flagfile={name}{where} {err}: give a text file of flags, one a line."
        lines = [line.strip() for line in text.splitlines()]
        pending += [(nested, name) for nested in _flagfile_names(lines)]
    return None


def parse_or_exit(flag_values: flags.FlagValues, argv):
    """absl parsing, but a malformed or unknown flag, or a flag file absl could not read
    (:func:`check_flagfiles`), is one ``error:`` line and exit 2."""
    problem = check_flagfiles(argv)
    if problem:
        sys.exit(fail(problem))
    try:
        return flag_values(argv)
    except flags.Error as err:
        sys.exit(fail(str(err)))


HELP_ARGS = ("--help", "-h", "--helpfull", "--helpshort")


def parse_module_flags(flag_values: flags.FlagValues, argv, usage: str):
    """Parses an entry point's own ``FlagValues`` (reset first, so tests can call it
    repeatedly); ``--help`` prints ``usage`` and the flags and exits 0; a malformed or
    unknown flag is one ``error:`` line and exit 2."""
    if any(a in HELP_ARGS for a in argv[1:]):
        print(usage.rstrip() + "\n\n" + flag_values.get_help())
        sys.exit(0)
    flag_values.unparse_flags()
    return parse_or_exit(flag_values, argv)


def flag_lines(text: str, names) -> dict:
    """flags.txt → {flag name: its line}; ``--nofoo`` and ``--foo`` share the name foo."""
    result = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = line.split("=", 1)[0].lstrip("-")
            if "=" not in line and name.startswith("no") and name[2:] in names:
                name = name[2:]
            result[name] = line
    return result


def differing_flags(old_text: str, new_text: str, flag_values: flags.FlagValues,
                    names) -> list:
    """Names of the flags whose value differs between a run's flags.txt (``old_text``) and
    now. A flag added after the run was written is absent from its flags.txt: the run used
    that flag's default, so only a non-default value differs. ``--output_dir`` names the
    run's own directory however it is spelt, so it never differs."""
    old, new = flag_lines(old_text, names), flag_lines(new_text, names)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                  and k != "output_dir"
                  and not (k not in old and flag_values[k].value == flag_values[k].default))


def failure_message(err: BaseException, where: str = "") -> str:
    """One line for a failure on the way (exit status 1): a full disk, a read-only or
    vanished directory, memory running out, a TensorFlow runtime error. ``where`` names
    the directory being written (e.g. ``--output_dir=runs/a``) when the error does not."""
    import errno
    text = " ".join(str(getattr(err, "message", None) or err).split())[:300]
    if isinstance(err, OSError):
        where = f" ({err.filename or where})" if err.filename or where else ""
        if err.errno == errno.ENOSPC:
            return (f"no space left on the device{where}; the completed stages are kept: "
                    f"free some space and rerun the same command to resume.")
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return (f"cannot write{where}: {err.strerror}; the completed stages are kept: "
                    f"make the directory writable and rerun the same command to resume.")
        return f"{err.strerror or text}{where}; rerun the same command to resume."
    if isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError":
        return (f"out of memory ({text or 'MemoryError'}); lower --batch_size, "
                f"--teacher_width or --image_size.")
    return f"{type(err).__name__}: {text}"


def prepare_output_dir(path: str, flags_text: str, flag_values: flags.FlagValues, names,
                       overwrite: bool, kind: str = "run") -> None:
    """Before an entry point writes ``path`` (holding its lock): refuses a file, a
    non-empty directory that is not an epkd_tf ``kind`` (run, study), one written with
    different flags (naming them) and a finished one; with ``overwrite`` an existing one
    is emptied; an unfinished one with the same flags is left to resume. ``flags_text`` is
    what the entry point would write to flags.txt now. Raises UsageError (or
    ``records.DamagedRunError`` for an unreadable progress.json or flags.txt)."""
    import os
    from epkd_tf.records import RunDir
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise UsageError(f"--output_dir={path} exists and is not a directory.")
    run = RunDir(path)
    old_flags = run.read_flags()
    if old_flags is None:
        if run.entries():       # the lock file of this very process does not count
            raise UsageError(f"--output_dir={path} is a non-empty directory that holds no "
                             f"epkd_tf {kind}; choose a new or empty directory.")
        return
    if overwrite:
        run.clear()             # everything but the lock this process holds
        return
    differing = differing_flags(old_flags, flags_text, flag_values, names)
    if differing:
        raise UsageError(f"--output_dir={path} holds a {kind} with different flags "
                         f"({', '.join(differing)}); use another --output_dir or --overwrite.")
    if run.stages.progress().get("finished"):
        raise UsageError(f"--output_dir={path} holds a finished {kind}; pass --overwrite to "
                         "run it again.")


# -- a calm console ---------------------------------------------------------------------
#: Environment variable that turns the libraries' own output back on, like --verbose=1.
VERBOSE_ENV = "EPKD_VERBOSE"


def verbosity(flag_value: int) -> int:
    """The effective verbosity: ``--verbose`` or ``$EPKD_VERBOSE``, whichever is higher."""
    try:
        env = int(os.environ.get(VERBOSE_ENV, "0") or 0)
    except ValueError:
        env = 1
    return max(int(flag_value or 0), env)


def quiet_libraries(verbose: int) -> None:
    """By default the console shows epkd_tf's own lines only: TensorFlow's C++ log (its
    CUDA probe on a CPU machine, oneDNN notices), the INFO lines TensorFlow, TFDS and absl
    log from Python (a SavedModel save logs a dozen), and library warnings are silenced;
    ``--verbose`` / ``$EPKD_VERBOSE`` keeps them. Call before TensorFlow is imported (the
    C++ log level is read once), and again after, for the Python loggers."""
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import warnings
    warnings.filterwarnings("ignore")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in ("tensorflow", "absl", "tensorflow_datasets", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def interruptible():
    """While active, SIGTERM raises :class:`Terminated` (SIGINT raises KeyboardInterrupt,
    as always), so an entry point can end a run with one line instead of a traceback or a
    silent kill; the previous handler is restored afterwards."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_message(err: BaseException, kept: str, command: str) -> tuple:
    """(the one line, the exit status) after Ctrl-C (130) or SIGTERM (143)."""
    signal_name = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
    status = exit_status(err)
    return (f"interrupted ({signal_name}): {kept}; the same command resumes it: {command}",
            status)


# The native libraries (TensorFlow's C++ core, LiteRT) write their log lines straight to
# file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says about lines logged before absl's
# logging is initialised (TF 2.21 prints its oneDNN and CUDA-probe lines twice per start).
# F (fatal) lines are kept.
_NATIVE_LINE = re.compile(
    r"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|INFO: (?:Created|Initialized) TensorFlow Lite"
    # The TFLite converter's quantiser prints its settings for every int8 export.
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: )")


@contextlib.contextmanager
def native_log_filter(enabled: bool = True):
    """While active, lines the native libraries log on the process's standard error (file
    descriptor 2) are dropped and everything else is passed on in order: the console shows
    epkd_tf's own lines. A reader thread forwards what passes; leaving the context
    restores descriptor 2 and waits for the thread to finish."""
    if not enabled:
        yield
        return
    import threading
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _NATIVE_LINE.match(line.decode("utf-8", "replace")):
                    os.write(saved, line)

    thread = threading.Thread(target=forward, name="epkd-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except Exception:       # a closed or replaced stream: nothing to flush
            pass
        os.dup2(saved, 2)       # the pipe's last writer closes: the reader ends
        thread.join(timeout=5)
        os.close(saved)


def take_lock(held: contextlib.ExitStack, directory, flag_value: str) -> Optional[str]:
    """Takes ``directory``'s lock (a RunDir or StudyDir) into ``held``, for as long as the
    entry point runs (one process per directory); the one-line error (another process
    holds it, naming its PID; the directory cannot be written) or None."""
    from epkd_tf.records.locking import DirectoryBusyError
    try:
        held.enter_context(directory.lock())
    except DirectoryBusyError as err:
        return str(err)
    except OSError as err:
        return f"--output_dir={flag_value} cannot be written: {err.strerror}."
    return None


# -- what main and study check alike ------------------------------------------------------
def flags_text(cfg, flag_values: flags.FlagValues, names) -> str:
    """flags.txt: every flag of ``names`` the settings ``cfg`` use (not those they declare
    unused, e.g. the teacher-training flags with --teacher_path), as given."""
    from epkd_tf.settings import flag_values_of
    used = flag_values_of(cfg)
    return "".join(flag_values[name].serialize() + "\n" for name in names
                   if name in used and flag_values[name].value is not None)


def build_teacher(cfg, spec):
    """``--teacher`` (at ``--teacher_width``) built for the dataset's input shape and
    classes. Raises UsageError naming the teacher, the dataset and the reason."""
    from epkd_tf.models import build_model
    try:
        return build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                           width=cfg.teacher.width)
    except (ValueError, TypeError) as err:
        # Keras shape errors span several lines; the user gets one.
        reason = " ".join(str(err).split())[:300]
        raise UsageError(f"--teacher={cfg.teacher.teacher} cannot be built for "
                         f"--dataset={cfg.data.dataset} with input shape {spec.input_shape}: "
                         f"{reason}") from err


def check_prunable(model, flag: str, pruners):
    """The channel graph of ``model`` when one of ``pruners`` is structured (else None).
    Raises UsageError naming ``flag`` and the layer structured pruning cannot handle."""
    from epkd_tf.graph import UnsupportedLayerError, analyze
    from epkd_tf.pruning import StructuredPruner
    if not any(isinstance(p, StructuredPruner) for p in pruners):
        return None
    try:
        return analyze(model)
    except UnsupportedLayerError as err:
        raise UsageError(f"{flag}: {err}") from err
