"""A calm console for every entry point and the Python API: epkd_tf's own progress lines
(``HH:MM:SS epkd_tf: ...`` on stderr) and none of the native libraries' noise.

The command-line tools install these for the life of their process
(:func:`setup_logging`, :func:`quiet_libraries`, :func:`native_log_filter`);
:func:`epkd_tf.compress` installs them for one call only (:func:`api_console`) and
restores everything it changed when the call returns.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Iterator

#: Environment variable that turns the libraries' own output back on, like --verbose=1.
VERBOSE_ENV = "EPKD_VERBOSE"

#: The loggers of the libraries whose INFO lines the default console leaves out.
LIBRARY_LOGGERS = ("tensorflow", "absl", "tensorflow_datasets", "h5py", "matplotlib")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not the stream of the
    first call: callers such as tests swap it between runs)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _handler() -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s epkd_tf: %(message)s", "%H:%M:%S"))
    return handler


def setup_logging() -> None:
    """One concise ``HH:MM:SS epkd_tf: ...`` line per event on stderr."""
    logger = logging.getLogger("epkd_tf")
    if not logger.handlers:
        logger.addHandler(_handler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


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
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


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
def native_log_filter(enabled: bool = True) -> Iterator[None]:
    """While active, lines the native libraries log on the process's standard error (file
    descriptor 2) are dropped and everything else is passed on in order: the console shows
    epkd_tf's own lines. A reader thread forwards what passes; leaving the context
    restores descriptor 2 and waits for the thread to finish.

    Where descriptor 2 cannot be swapped (it is closed, or the process may not make
    pipes) nothing is filtered: the work goes on with the console as it is.
    """
    if not enabled:
        yield
        return
    import threading
    try:
        sys.stderr.flush()
    except Exception:           # a closed or replaced stream: nothing to flush
        pass
    try:
        saved = os.dup(2)
    except OSError:             # no descriptor 2 (a daemon, some notebook kernels)
        yield
        return
    try:
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        os.close(saved)
        yield
        return

    def forward():
        try:
            with os.fdopen(read_end, "rb") as pipe:
                for line in pipe:
                    if not _NATIVE_LINE.match(line.decode("utf-8", "replace")):
                        os.write(saved, line)
        except OSError:         # the console went away: drop the rest
            pass

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
        if not thread.is_alive():
            # A reader still alive (a child process kept the pipe open) keeps its copy:
            # closing it could let the reader write into a descriptor reused meanwhile.
            os.close(saved)


@contextlib.contextmanager
def api_console(progress: bool, verbose: int) -> Iterator[None]:
    """The console of one Python API call: with ``progress`` epkd_tf's lines (iterations,
    candidates, distillation epochs, ETA) on stderr as the command line shows them; without
    it only its warnings. Unless ``verbose``, the libraries' log lines and warnings are
    silenced and the native libraries' lines filtered out of descriptor 2
    (:func:`native_log_filter`). Handlers the caller added to the ``epkd_tf`` logger
    receive every line (INFO and up) either way.
    Everything changed (the loggers' handlers and levels, absl's verbosity, the warning
    filters, descriptor 2) is restored on leaving.
    """
    import warnings
    from absl import logging as absl_logging
    logger = logging.getLogger("epkd_tf")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    libraries = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    absl_level = absl_logging.get_verbosity()
    verbose = verbosity(verbose)
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        try:
            # The user's own handlers on the epkd_tf logger (a log file, a notebook's)
            # keep receiving every line; ours only decides what reaches stderr.
            console = _handler()
            console.setLevel(logging.INFO if progress else logging.WARNING)
            logger.handlers = [h for h in saved[0] if not isinstance(h, _StderrHandler)] \
                + [console]
            logger.setLevel(logging.INFO)
            logger.propagate = False
            if not verbose:
                warnings.filterwarnings("ignore")
                absl_logging.set_verbosity(absl_logging.ERROR)
                for name in LIBRARY_LOGGERS:
                    logging.getLogger(name).setLevel(logging.ERROR)
            stack.enter_context(native_log_filter(enabled=not verbose))
            yield
        finally:
            logger.handlers, level, logger.propagate = saved
            logger.setLevel(level)
            for name, level in libraries.items():
                logging.getLogger(name).setLevel(level)
            absl_logging.set_verbosity(absl_level)
