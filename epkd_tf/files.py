"""File names every layer makes: one harmless path component from any text (a run's,
model's or dataset's name). Imports nothing of the package, so models, data and records
can all use it."""
from __future__ import annotations

import re


def safe_name(text: str, fallback: str = "run") -> str:
    """``text`` as one harmless path component: runs of anything but letters, digits,
    ``_ . -`` become ``-``, leading dots go (no ``..``, hidden or temporary names);
    ``fallback`` if nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).lstrip(".")
    return name or fallback
