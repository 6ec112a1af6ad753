"""One process per output directory: an exclusive lock held for a whole run.

:func:`hold` takes ``fcntl.flock`` on a lock file inside the directory (``LOCK_NAME``)
without waiting: a second process on the same directory is refused at once with
:class:`DirectoryBusyError`, whose message names the holder's PID (written into the lock
file). The operating system releases the lock when its process ends, however it ends
(SIGKILL, out of memory...), so a lock file that a dead process left is simply taken
over. ``flock`` locks the open file, not the name: a holder removes the file only while it
still holds the lock, and a newcomer that locked a file which was removed meanwhile tries
again with the new one, so two processes never both believe they hold the lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator
from epkd_tf.errors import DirectoryBusyError  # noqa: F401

# Hidden, so that it is no run file; ignored wherever a directory is checked for content.
LOCK_NAME = ".lock"


def _holder(fd: int) -> str:
    """The PID the holder wrote, read from the lock file (it writes it just after locking,
    so a newcomer that arrives in between waits a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


@contextlib.contextmanager
def hold(directory: str, what: str) -> Iterator[None]:
    """Holds the exclusive lock of ``directory`` (created if missing; removed again at the
    end if this call created it and it is still empty). ``what`` names the directory in
    the refusal (e.g. ``--output_dir=runs/a``). Raises DirectoryBusyError, or OSError
    when the directory or its lock file cannot be written."""
    created = not os.path.isdir(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = _lock(path, what)
    except BaseException:
        if created:
            _remove_if_empty(directory)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)          # still locked: a newcomer cannot have taken it
        os.close(fd)
        if created:
            _remove_if_empty(directory)


def _lock(path: str, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DirectoryBusyError(
                f"{what} is in use by another epkd_tf process (PID {holder}); wait for it "
                f"to finish or choose another directory.") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)     # the previous holder removed this file as we locked it: again


def _remove_if_empty(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(directory)
