"""Test-only fault injection: how the tests kill a real run at a chosen moment.

With the environment variable ``EPKD_TEST_KILL_AT=<point>`` the process sends itself
SIGKILL (no cleanup, no ``finally``: what a crash, the OOM killer or a pulled plug does)
when it reaches ``<point>``:

* ``teacher_epoch_<n>`` / ``finetune_<k>_epoch_<n>`` — after epoch ``n`` of teacher
  training / of iteration ``k``'s distillation, its checkpoint written;
* ``teacher_epoch_<n>_step_<s>`` / ``finetune_<k>_epoch_<n>_step_<s>`` — after step ``s``
  of that epoch (and its checkpoint, when ``--checkpoint_every`` asks for one there);
* ``iteration_<k>_done`` — right after iteration ``k`` is recorded as completed;
* ``write:<dir>/<name>`` — when a file or directory write (``records``) has its complete
  temporary but has not renamed it onto ``<dir>/<name>`` yet (the last two components of
  the target, e.g. ``write:student/2`` for ``serving/student/2``).

A point may end in ``#n``: the n-th time the process reaches it (``write:run/progress.json#4``
is the fourth commit of a run, the one after its last iteration).

With ``EPKD_TEST_FAIL_AT=<ERRNO>@<point>`` (e.g. ``ENOSPC@write:checkpoints/teacher.keras``)
the process instead raises ``OSError(<ERRNO>)`` there, as a full disk (``ENOSPC``) or a
file system turned read-only (``EROFS``) would.

Unset (always, outside tests), every check is two dictionary lookups and does nothing.
"""
import errno
import os
import signal

ENV = "EPKD_TEST_KILL_AT"
FAIL_ENV = "EPKD_TEST_FAIL_AT"
_times: dict = {}     # point -> how often this process reached it (only while a test asks)


def _matches(wanted: str, point: str) -> bool:
    name, _, nth = wanted.partition("#")
    if name != point:
        return False
    _times[wanted] = _times.get(wanted, 0) + 1
    return not nth or _times[wanted] == int(nth)


def reached(point: str) -> None:
    """Kills this process with SIGKILL if ``point`` is the one ``EPKD_TEST_KILL_AT`` names;
    raises the OSError ``EPKD_TEST_FAIL_AT`` names for it."""
    kill = os.environ.get(ENV)
    if kill and _matches(kill, point):
        os.kill(os.getpid(), signal.SIGKILL)
    failure = os.environ.get(FAIL_ENV)
    if failure and _matches(failure.partition("@")[2], point):
        code = getattr(errno, failure.partition("@")[0])
        raise OSError(code, os.strerror(code), point.partition(":")[2])


def write_point(path: str) -> str:
    """The point name of a write onto ``path``: ``write:<parent dir>/<name>``."""
    parts = os.path.normpath(path).split(os.sep)
    return "write:" + "/".join(parts[-2:])
