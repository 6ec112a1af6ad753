"""tf.distribute strategies for a run (``--distribution``), in a registry.

* ``default`` — one device (TensorFlow's default strategy);
* ``mirrored`` — every local GPU (or, with ``logical_cpus`` > 1, that many logical CPU
  devices, as the tests use), synchronous data parallelism;
* ``multi_worker_mirrored`` — the same across machines: each worker runs the same command
  with its ``TF_CONFIG`` (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
  "worker", "index": i}}``), the standard TensorFlow cluster mechanism;
* ``tpu`` — a TPU (``TPUClusterResolver`` finds it from the environment).

``--batch_size`` is the *global* batch: Keras splits each batch over the replicas, and
every loss is the mean over the global batch (the Distiller scales by the replica count).
Models, optimizers and the Distiller are created inside ``strategy.scope()``. Every worker
runs the whole program (the collective operations must match), but only the chief writes
the run directory: the others write to a temporary directory that is removed at the end.
"""
from __future__ import annotations

import json
import os
from typing import Callable, List

import tensorflow as tf

from epkd_tf import compat
from epkd_tf.registry import Registry

#: Strategy factories ``(logical_cpus) -> tf.distribute.Strategy`` by name.
STRATEGIES: Registry[Callable[..., tf.distribute.Strategy]] = Registry("distribution strategy")


def register_strategy(name: str):
    """Decorator: registers a strategy factory under ``name`` (ValueError if taken)."""
    return STRATEGIES.register(name)


def strategy_names() -> List[str]:
    """Every registered strategy name, sorted."""
    return STRATEGIES.names()


def use_logical_cpus(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (before TensorFlow initialises them)."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


@register_strategy("default")
def _default(logical_cpus: int = 0) -> tf.distribute.Strategy:
    return tf.distribute.get_strategy()


@register_strategy("mirrored")
def _mirrored(logical_cpus: int = 0) -> tf.distribute.Strategy:
    if tf.config.list_physical_devices("GPU") or logical_cpus <= 1:
        return tf.distribute.MirroredStrategy()
    use_logical_cpus(logical_cpus)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


@register_strategy("multi_worker_mirrored")
def _multi_worker(logical_cpus: int = 0) -> tf.distribute.Strategy:
    if "TF_CONFIG" not in os.environ:
        raise ValueError("--distribution=multi_worker_mirrored needs the TF_CONFIG "
                         "environment variable describing the cluster and this worker.")
    return tf.distribute.MultiWorkerMirroredStrategy()


@register_strategy("tpu")
def _tpu(logical_cpus: int = 0) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str, logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The strategy ``name``; ValueError naming --distribution for an unknown one."""
    if name not in STRATEGIES:
        raise ValueError(f"--distribution={name!r} is unknown; choose from "
                         f"{', '.join(STRATEGIES.names())}.")
    return STRATEGIES.get(name)(logical_cpus)


def check_tf_config() -> None:
    """A malformed TF_CONFIG is one clear error instead of a TensorFlow traceback."""
    text = os.environ.get("TF_CONFIG")
    if text is None:
        return
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        assert isinstance(cluster, dict) and task["type"] in cluster
        assert 0 <= int(task["index"]) < len(cluster[task["type"]])
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ValueError("TF_CONFIG is not a valid cluster description: expected JSON "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
                         '"worker", "index": i}}.') from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except on the non-chief workers of
    a multi-worker cluster (the chief is task ``chief``, or worker 0 when there is none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not compat.in_multi_worker_mode(strategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().jobs)
