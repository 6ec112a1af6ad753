"""Every error epkd_tf raises on purpose, under one base, and the exit status of each.

``except epkd_tf.EpkdError`` catches anything the package refuses or cannot finish; the
message is always the one line a user sees (naming the flag, argument or file, and what
is allowed). Two families:

* bad input (:class:`InputError`, also a ``ValueError``; exit status 2): a setting, flag,
  API argument, dataset, model file or run directory that cannot be used. Nothing was
  written when one is raised before work starts.
* a failure on the way (:class:`RunFailure`, also a ``RuntimeError``; exit status 1):
  the work started and cannot go on (a NaN loss, no candidate of the target).

The entry points map an exception to an exit status with :func:`exit_status` only, so
the command line and the Python API agree on what is whose fault. This module imports
nothing of the package: every layer can raise these.
"""
from __future__ import annotations

from typing import Any

#: Exit statuses of the command-line tools.
EXIT_OK = 0
EXIT_FAILED = 1          # the work started and failed on the way (disk full, NaN loss)
EXIT_BAD_INPUT = 2       # a flag, file or directory is unusable; nothing was started
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143    # SIGTERM (128 + SIGTERM)


class EpkdError(Exception):
    """Base of every error epkd_tf raises on purpose; the message is one line."""

    #: What a command-line tool exits with when this error ends it.
    exit_status = EXIT_FAILED


class InputError(EpkdError, ValueError):
    """An input is unusable (a flag, an API argument, a file, a directory)."""

    exit_status = EXIT_BAD_INPUT


class RunFailure(EpkdError, RuntimeError):
    """Work that started cannot go on; the message says why and what to change."""

    exit_status = EXIT_FAILED


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return repr(",".join(str(v) for v in value))
    return repr(value)


class ConfigError(InputError):
    """An invalid setting; the message is one line naming the flag that sets it.

    ``flag`` is the flag's name, so a caller that exposes the setting under another flag
    can re-word the message (:meth:`renamed`).
    """

    def __init__(self, flag: str, value: Any, reason: str):
        self.flag, self.value, self.reason = flag, value, reason
        super().__init__(f"--{flag}={_show(value)} is invalid: {reason.rstrip('.')}.")

    def renamed(self, flag: str) -> "ConfigError":
        return ConfigError(flag, self.value, self.reason)


class UsageError(InputError):
    """A combination of flags or inputs cannot work (a teacher that does not fit the
    dataset, a target structured pruning cannot reach, a run directory of another run)."""


class ApiError(InputError):
    """An argument of the Python API is unusable; the message names it."""


class UnknownNameError(InputError):
    """A name that is not registered; the message lists the registered ones."""


class DataError(InputError):
    """A dataset name, directory, split or input is unusable; the message is one line
    naming the flag or argument and what is allowed."""


class ModelFileError(InputError):
    """The model file is unusable; the message is the one line the user sees."""


class Keras3ConversionError(ModelFileError):
    """A model cannot be converted between Keras 3 and tf_keras; the message is one line
    naming the file (or model) and the layer."""


class UnsafeConfigError(InputError):
    """A stored configuration holds something that would run or import code.

    ``found`` names it (``a Lambda layer 'double'``), ``reason`` says why it is refused;
    the message is both, for one line after the file's name."""

    def __init__(self, found: str, reason: str):
        self.found, self.reason = found, reason
        super().__init__(f"{found}: {reason}")


class UnsupportedLayerError(InputError):
    """A layer cannot be analysed or pruned; the message names the layer and its class."""


class RunDirError(InputError):
    """The run directory cannot be used as it is; the message is the one line users see."""


class DamagedRunError(RunDirError):
    """A file of the run directory is not what the run wrote; the message names it."""


class DirectoryBusyError(InputError):
    """Another process holds the directory's lock; the message is the one line users see."""


class PruningError(InputError):
    """A parameter target cannot be met; the message says which limit stops it."""


class NoCandidateError(PruningError):
    """No pruner can make a candidate of an iteration's target (every one is at its
    per-layer floors or cannot lower the budget's measure)."""


class NonFiniteLossError(RunFailure):
    """Training produced a NaN or Inf loss and the run cannot go on (the teacher's, or a
    distillation's with ``--fail_on_nan``); the message is the one line the user sees."""


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler or ``kill`` ending the run). A BaseException, as
    KeyboardInterrupt is: ``except Exception`` must not swallow it."""


def exit_status(err: BaseException) -> int:
    """The exit status a command-line tool ends with after ``err``: 2 for bad input,
    1 for a failure on the way (an epkd_tf failure, a full disk, memory running out),
    130 after Ctrl-C and 143 after SIGTERM."""
    if isinstance(err, EpkdError):
        return err.exit_status
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, Terminated):
        return EXIT_TERMINATED
    return EXIT_FAILED


#: How a user resumes after a failure on the way, for the command line and the API.
RESUME_CLI = "rerun the same command to resume"
RESUME_API = "call again with the same output_dir to resume"


def failure_message(err: BaseException, where: str = "", resume: str = RESUME_CLI) -> str:
    """One line for a failure on the way (exit status 1): a full disk, a read-only or
    vanished directory, memory running out, a TensorFlow runtime error.

    Args:
        err: the exception.
        where: the directory being written (e.g. ``--output_dir=runs/a``), named when the
            error does not name a file.
        resume: how to resume (:data:`RESUME_CLI` or :data:`RESUME_API`).

    Returns:
        The line, without a trailing newline.
    """
    import errno
    text = " ".join(str(getattr(err, "message", None) or err).split())[:300]
    if isinstance(err, OSError):
        where = f" ({err.filename or where})" if err.filename or where else ""
        if err.errno == errno.ENOSPC:
            return (f"no space left on the device{where}; the completed stages are kept: "
                    f"free some space and {resume}.")
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return (f"cannot write{where}: {err.strerror}; the completed stages are kept: "
                    f"make the directory writable and {resume}.")
        return f"{err.strerror or text}{where}; {resume}."
    if isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError":
        return (f"out of memory ({text or 'MemoryError'}); lower --batch_size, "
                f"--teacher_width or --image_size.")
    return f"{type(err).__name__}: {text}"


def is_environment_failure(err: BaseException) -> bool:
    """Whether ``err`` is the machine failing the work (a file system error, memory, a
    TensorFlow runtime error) rather than a bug or a refusal of the package's own."""
    if isinstance(err, EpkdError):
        return False
    return isinstance(err, (OSError, MemoryError)) or \
        type(err).__module__.startswith("tensorflow")
