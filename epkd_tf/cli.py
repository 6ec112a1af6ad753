"""Plumbing shared by the absl entry points (``main``, ``export``): errors and logging."""
import logging
import sys

from absl import flags


def fail(message: str, status: int = 2) -> int:
    """Prints the one-line ``error: ...`` users see; returns the exit status (2: bad
    input, the default; 1: a run that failed on the way)."""
    print(f"error: {message}", file=sys.stderr)
    return status


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


def parse_or_exit(flag_values: flags.FlagValues, argv):
    """absl parsing, but a malformed or unknown flag is one ``error:`` line and exit 2."""
    try:
        return flag_values(argv)
    except flags.Error as err:
        sys.exit(fail(str(err)))
