"""Registry of pruning methods, looked up by the names users pass to --pruners."""
from __future__ import annotations

from typing import Dict, Type

_PRUNERS: Dict[str, Type] = {}


def register_pruner(name: str):
    """Class decorator: registers a Pruner subclass under ``name`` (sets ``cls.name``)."""

    def decorate(cls):
        if name in _PRUNERS:
            raise ValueError(f"Pruner {name!r} is registered twice.")
        cls.name = name
        _PRUNERS[name] = cls
        return cls

    return decorate


def pruner_names() -> list:
    """Every registered pruner name, sorted."""
    return sorted(_PRUNERS)


def make_pruner(name: str):
    """A new instance of the pruner registered as ``name``."""
    if name not in _PRUNERS:
        raise ValueError(f"Unknown pruner {name!r}; choose from: {', '.join(pruner_names())}.")
    return _PRUNERS[name]()
