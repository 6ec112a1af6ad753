"""Plumbing shared by the absl entry points (``main``, ``export``): errors and logging."""
import logging
import sys

from absl import flags


def fail(message: str) -> int:
    """Prints the one-line ``error: ...`` users see for bad input; returns exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def setup_logging() -> None:
    """One concise ``HH:MM:SS epkd_tf: ...`` line per event on stderr."""
    logger = logging.getLogger("epkd_tf")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
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
