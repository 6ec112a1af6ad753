"""``--data_dir`` checks shared by loading, downloads and the imports, and the guard that
removes what a failed attempt created.

A data directory must be a directory (or not exist yet) on a storage file system: paths on
kernel pseudo-file systems (``/proc``, ``/sys``, ``/dev``...) are refused up front, because
TFDS would otherwise fail deep inside with a traceback or leave directories behind there.
Whether a directory is writable is decided by creating something in it (:func:`make_dirs`):
permission bits say nothing when running as root, and read-only mounts ignore them.
"""
from __future__ import annotations

import errno
import os
from typing import List, Optional, Tuple

from epkd_tf.data.source import DataError

__all__ = ["check_data_dir", "make_dirs", "NoLeftovers", "filesystem_type"]

# Kernel interfaces that look like directories but hold no files of ours.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "securityfs",
    "tracefs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "binfmt_misc", "efivarfs",
    "autofs", "rpc_pipefs", "nsfs"})
# Used where /proc/self/mounts cannot be read (not Linux).
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


def _mounts() -> List[Tuple[str, str]]:
    """(mount point, file system type) of every mount, or [] where unknown."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            # Spaces and other specials in mount points are octal escapes (\040).
            point = parts[1].encode().decode("unicode_escape")
            mounts.append((point, parts[2]))
    return mounts


def filesystem_type(path: str) -> Optional[str]:
    """The type of the file system ``path`` is (or would be created) on, e.g. ``ext4``,
    ``tmpfs``, ``proc``; None where the mount table cannot be read."""
    real = os.path.realpath(path)
    best, kind = "", None
    for point, fstype in _mounts():
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def _is_pseudo(path: str) -> Optional[str]:
    """The pseudo-file system ``path`` lies on, or None."""
    kind = filesystem_type(path)
    if kind is not None:
        return kind if kind in PSEUDO_FILESYSTEMS else None
    real = os.path.realpath(path)
    root = next((r for r in _PSEUDO_ROOTS if real == r or real.startswith(r + "/")), None)
    return root.strip("/") if root else None


def check_data_dir(data_dir: str, flag: str = "--data_dir") -> str:
    """``data_dir`` made absolute (``~`` expanded); DataError (one line naming ``flag``)
    if it is on a pseudo-file system or exists and is not a directory (or lies below a
    file). Creates nothing."""
    if not data_dir or not str(data_dir).strip():
        raise DataError(f"{flag} is empty: give a directory for TFDS datasets.")
    path = os.path.abspath(os.path.expanduser(str(data_dir)))
    kind = _is_pseudo(path)
    if kind:
        raise DataError(f"{flag}={path!r} is on the {kind} pseudo-file system (a kernel "
                        f"interface, not storage): give a directory on a disk.")
    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "is a file" if probe == path else f"lies below the file {probe}"
        raise DataError(f"{flag}={path!r} {where}: give a directory.")
    return path


def _os_reason(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return err.strerror or type(err).__name__


def make_dirs(path: str, flag: str = "--data_dir") -> None:
    """``os.makedirs(path, exist_ok=True)``, an OSError (unwritable, read-only...) turned
    into a one-line DataError naming ``flag``."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise DataError(f"{flag}={path!r} cannot be written ({_os_reason(err)}): give a "
                        f"writable directory.") from None


def writable_error(path: str, err: OSError, flag: str = "--data_dir") -> DataError:
    """The DataError for an OSError met while writing below ``path``."""
    return DataError(f"{flag}={path!r} cannot be written ({_os_reason(err)}): give a "
                     f"writable directory.")


class NoLeftovers:
    """Context manager: directories created below ``data_dir`` while it is active are
    removed again if they are empty when it exits (deepest first), and so are ``data_dir``
    and its parents that did not exist before -- validation, and failed downloads, leave
    nothing.

    Only ``watched`` subtrees of ``data_dir`` are walked (a data directory can hold
    millions of extracted files elsewhere): the dataset's own directory and TFDS's
    ``downloads`` directory. Files are never removed (a partial download may be resumed).
    """

    def __init__(self, data_dir: str, name: str):
        self.data_dir = data_dir
        base = name.split(":")[0].split("/")[0]
        self.roots = [os.path.join(data_dir, base), os.path.join(data_dir, "downloads")]

    def _snapshot(self) -> set:
        found = set()
        for root in self.roots:
            if os.path.isdir(root):
                found.add(root)
                for dirpath, dirnames, _ in os.walk(root):
                    found.update(os.path.join(dirpath, d) for d in dirnames)
        return found

    def __enter__(self):
        self.missing = []  # data_dir and its missing parents, deepest first
        path = self.data_dir
        while not os.path.exists(path) and os.path.dirname(path) != path:
            self.missing.append(path)
            path = os.path.dirname(path)
        self.before = self._snapshot()
        return self

    def __exit__(self, *exc):
        new_dirs = sorted(self._snapshot() - self.before, key=len, reverse=True)
        new_dirs += self.missing
        for path in new_dirs:  # deepest first; only empty directories are removed
            try:
                os.rmdir(path)
            except OSError:
                pass
        return False
