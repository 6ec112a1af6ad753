"""Registry of pruning methods, looked up by the names users pass to --pruners."""
from __future__ import annotations

from epkd_tf.registry import Registry

#: Every pruner class by name; a class is a frozen settings dataclass (its fields are its
#: own settings and flags, see epkd_tf.settings).
PRUNERS: Registry = Registry("pruner")


def register_pruner(name: str):
    """Class decorator: registers a Pruner class under ``name`` (sets ``cls.name``)."""

    def decorate(cls):
        cls.name = name
        return PRUNERS.register(name, cls)

    return decorate


def pruner_names() -> list:
    """Every registered pruner name, sorted."""
    return PRUNERS.names()


def make_pruner(name: str, **settings):
    """A pruner registered as ``name`` with ``settings`` (its defaults otherwise);
    ValueError naming the known pruners for an unknown name."""
    return PRUNERS.get(name)(**settings)
