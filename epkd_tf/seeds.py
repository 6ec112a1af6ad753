"""Seeds: the process seeded once per run (:func:`seed_everything`), and seeds derived
from the run's --seed for nested loops (study cells, their rounds)."""
from __future__ import annotations

import contextlib

import numpy as np


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2**31) determined by ``parts`` (e.g. the study's seed, the cell's
    fraction in thousandths): NumPy's SeedSequence mixes them, so distinct parts give
    unrelated streams, and unlike ``seed * 1000 + k`` it never overflows the 32-bit range
    that NumPy's and Keras' seeding accepts."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy and TensorFlow and turns TensorFlow's op determinism on, so
    that the same flags reproduce a run (docs/outputs.md, Reproducibility), or off.

    Args:
        seed: the run's --seed.
        deterministic: op determinism on (False: off, e.g. for XLA, which has no
            deterministic max-pooling gradient and refuses to compile one).
    """
    import tf_keras
    from epkd_tf import compat
    compat.set_op_determinism(deterministic)
    tf_keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def xla_determinism(jit_compile: bool):
    """Inside: TensorFlow's op determinism off when ``jit_compile`` (XLA has no
    deterministic max-pooling gradient and refuses to compile one while it is on), as
    the command line runs; on exit the process's setting as it was (the Python API
    changes nothing of its caller's process)."""
    from epkd_tf import compat
    was = compat.op_determinism_enabled()
    if jit_compile and was:
        compat.set_op_determinism(False)
    try:
        yield
    finally:
        if compat.op_determinism_enabled() != was:
            compat.set_op_determinism(was)
