"""Registry of pruning methods, looked up by the names users pass to --pruners."""
from __future__ import annotations

from epkd_tf.registry import Registry

#: Every pruner class by name; a class is a frozen settings dataclass (its fields are its
#: own settings and flags, see epkd_tf.settings).
PRUNERS: Registry = Registry("pruner")


def register_pruner(name: str):
    """Class decorator: registers a pruning criterion under ``name`` (sets ``cls.name``),
    for ``--pruners``, :func:`epkd_tf.compress` and :func:`epkd_tf.prune`.

    The class is a frozen dataclass deriving from ``epkd_tf.pruning.Pruner`` (or
    ``StructuredPruner``, which only scores channel groups); its fields, declared with
    ``epkd_tf.settings.setting``, are its own settings and flags.

    Args:
      name: the criterion's name (not empty, not registered yet).

    Returns:
      The decorator; it returns the class unchanged.

    Raises:
      ApiError: ``name`` is empty or already registered.

    Example::

        import dataclasses
        import numpy as np
        import tf_keras
        import epkd_tf
        from epkd_tf.pruning import StructuredPruner
        from epkd_tf.settings import setting

        @epkd_tf.register_pruner("last_first")
        @dataclasses.dataclass(frozen=True)
        class LastFirst(StructuredPruner):    # a toy: the last channels go first
            needs_data = False
            power: float = setting(1.0, "Exponent of the position score.",
                                   flag="last_first_power")

            def score(self, graph, ctx):      # one score per group; higher: kept
                return -np.arange(graph.num_groups, dtype=float) ** self.power

        inputs = tf_keras.Input((8,))
        hidden = tf_keras.layers.Dense(16, activation="relu")(inputs)
        model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(hidden))
        smaller = epkd_tf.prune(model, 0.5, criterion="last_first", power=2.0)
        print(smaller.layers[1].units)        # fewer than 16
    """

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
