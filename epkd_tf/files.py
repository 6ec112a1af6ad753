"""Files every layer writes and checks: one harmless path component from any text (a
run's, model's or dataset's name), writes that are atomic (a file or a whole directory
appears complete under its name or not at all), the digests a run records of what it
wrote and the check of a file against such a record.

This is the bottom layer: it imports nothing of the package but the test-only fault
points (:mod:`epkd_tf.faults`), so models, data and records can all use it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from typing import Callable, Dict, List, Optional

from epkd_tf import faults

# Prefix of every temporary file or directory a write creates next to its target.
TMP_PREFIX = ".tmp-"


def safe_name(text: str, fallback: str = "run") -> str:
    """``text`` as one harmless path component: runs of anything but letters, digits,
    ``_ . -`` become ``-``, leading dots go (no ``..``, hidden or temporary names);
    ``fallback`` if nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).lstrip(".")
    return name or fallback


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both as given: no link is resolved,
    so pass ``os.path.realpath`` of both to check where a write would really go)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# Largest text file epkd_tf reads whole (a flag file, flags.txt, TFDS metadata): far above
# any real one, so that a huge or endless file is refused instead of filling the memory.
TEXT_LIMIT = 16 << 20


def not_regular(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as a file, in words for after its name: ``does not
    exist``, ``is a directory``, ``is not a regular file (a FIFO, socket or device)``;
    None for a regular file (or a link to one). Nothing is opened: opening a FIFO would
    block until something writes into it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror or type(err).__name__})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


def read_bytes(path: str, limit: int = TEXT_LIMIT) -> bytes:
    """The whole content of the regular file ``path``, never blocking on a FIFO.

    Args:
        path: the file.
        limit: the largest size accepted, in bytes.

    Returns:
        Its bytes.

    Raises:
        ValueError: it is not a regular file, cannot be read or is larger than ``limit``;
            the message is the reason, in words to follow the file's name.
    """
    problem = not_regular(path)
    if problem:
        raise ValueError(problem)
    try:
        # O_NONBLOCK: a FIFO put in the file's place since the check opens at once.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        reason = "permission denied" if err.errno in (errno.EACCES, errno.EPERM) \
            else err.strerror or type(err).__name__
        raise ValueError(f"cannot be read ({reason})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file (a FIFO, socket or device)")
        if info.st_size > limit:
            raise ValueError(f"is {info.st_size} bytes, larger than any such file "
                             f"({limit} bytes at most)")
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise ValueError(f"cannot be read ({err.strerror or type(err).__name__})") \
                from None
    if len(data) > limit:
        raise ValueError(f"is larger than any such file ({limit} bytes at most)")
    return data


def read_text(path: str, limit: int = TEXT_LIMIT) -> str:
    """The content of the regular UTF-8 text file ``path`` (:func:`read_bytes`).

    Args:
        path: the file.
        limit: the largest size accepted, in bytes.

    Returns:
        Its text.

    Raises:
        ValueError: as :func:`read_bytes`, or it is not UTF-8 text (a binary file, another
            encoding); the message is the reason, in words to follow the file's name.
    """
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"is not UTF-8 text (byte {err.start} is "
                         f"0x{data[err.start]:02x})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Writes a file atomically: calls ``write(tmp_path)`` for a temporary next to ``path``
    (named ``TMP_PREFIX...``), gives it the mode a plain ``open()`` would and renames it
    onto ``path``. Creates the parent directories.

    Args:
        path: the file to write (replaced if it exists).
        write: writes the whole content into the file it is given.

    Raises:
        Whatever ``write`` or the file system raises (OSError: a full disk, a read-only
        file system); the temporary is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would,
        # so that e.g. a TF Serving container running as another user can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        faults.reached(faults.write_point(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_directory(path: str, write: Callable[[str], None]) -> None:
    """Writes a directory atomically (e.g. a SavedModel): calls ``write(target)`` for a
    path inside a temporary directory next to ``path`` (named ``TMP_PREFIX...``), then
    replaces ``path`` by the finished directory. Creates the parent directories.

    Args:
        path: the directory to write (an existing one is replaced).
        write: creates the directory it is given, complete.

    Raises:
        Whatever ``write`` or the file system raises; the temporary directory is removed.
    """
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX)
    try:
        target = os.path.join(tmp, "out")
        write(target)
        faults.reached(faults.write_point(path))
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: str) -> Dict[str, object]:
    """What a run records of a regular file it wrote.

    Args:
        path: the file.

    Returns:
        ``{"bytes": size, "sha256": hex digest}``.

    Raises:
        OSError if the file cannot be read.
    """
    return prefix_digest(path, os.path.getsize(path))


def prefix_digest(path: str, size: int) -> Dict[str, object]:
    """Size and SHA-256 of the first ``size`` bytes of a file (a table that has grown
    since: what it was when a stage recorded it).

    Args:
        path: the file.
        size: how many bytes to hash (fewer if the file is shorter).

    Returns:
        ``{"bytes": size, "sha256": hex digest}``.

    Raises:
        OSError if the file cannot be read.
    """
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            sha.update(block)
            left -= len(block)
    return {"bytes": size, "sha256": sha.hexdigest()}


def digest_mismatch(path: str, recorded: dict, prefix: bool = False) -> Optional[str]:
    """Why a file differs from what was recorded of it.

    Args:
        path: the file.
        recorded: its :func:`file_digest` when it was written.
        prefix: the file may have grown since (a table later stages appended to): only
            its first ``recorded["bytes"]`` bytes are compared.

    Returns:
        None when it is what was recorded; otherwise the problem in words (``missing``,
        ``not a regular file``, its size, or that its content changed).
    """
    if not os.path.isfile(path):
        return "missing" if not os.path.lexists(path) else "not a regular file"
    size, want = os.path.getsize(path), int(recorded["bytes"])
    if size < want or (size > want and not prefix):
        return f"{size} bytes, {want} were written"
    if prefix_digest(path, want)["sha256"] != recorded["sha256"]:
        return "its content changed (SHA-256 differs from what was written)"
    return None


def files_under(path: str) -> List[str]:
    """``path`` if it is a file, every file below it (in sorted order, depth first) if it
    is a directory, nothing if it does not exist."""
    if os.path.isfile(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)]
    return found
