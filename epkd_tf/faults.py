"""Test-only fault injection: how the tests kill a real run at a chosen moment.

With the environment variable ``EPKD_TEST_KILL_AT=<point>`` the process sends itself
SIGKILL (no cleanup, no ``finally``: what a crash, the OOM killer or a pulled plug does)
when it reaches ``<point>``:

* ``teacher_epoch_<n>`` / ``finetune_<k>_epoch_<n>`` — after epoch ``n`` of teacher
  training / of iteration ``k``'s distillation;
* ``iteration_<k>_done`` — right after iteration ``k`` is recorded as completed;
* ``write:<dir>/<name>`` — when a file or directory write (``records``) has its complete
  temporary but has not renamed it onto ``<dir>/<name>`` yet (the last two components of
  the target, e.g. ``write:student/2`` for ``serving/student/2``).

Unset (always, outside tests), every check is one dictionary lookup and does nothing.
"""
import os
import signal

ENV = "EPKD_TEST_KILL_AT"


def reached(point: str) -> None:
    """Kills this process with SIGKILL if ``point`` is the one ``EPKD_TEST_KILL_AT`` names."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def write_point(path: str) -> str:
    """The point name of a write onto ``path``: ``write:<parent dir>/<name>``."""
    parts = os.path.normpath(path).split(os.sep)
    return "write:" + "/".join(parts[-2:])
