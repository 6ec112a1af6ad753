"""How differently two models behave on the test set.

For softmax output matrices ``P_a, P_b`` (test examples x classes):

* ``n_differ`` — test examples whose predicted class (argmax) differs;
* ``l2_distance`` — ``||P_a - P_b||_F``, the Frobenius norm of the difference over the
  whole test set (the square root of the summed squared differences of every example's
  class probabilities; 0 for identical outputs, at most ``sqrt(2 * examples)``);
* ``agreement`` — fraction of test examples with the same predicted class;
* ``weight_l2_distance`` — for two models of the same architecture (same weight shapes in
  the same order), ``sqrt(sum_w ||w_a - w_b||^2)`` over every weight; NaN otherwise.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Dict, Sequence

import numpy as np
import pandas as pd


def n_differ(p_a: np.ndarray, p_b: np.ndarray) -> int:
    return int(np.sum(np.argmax(p_a, axis=1) != np.argmax(p_b, axis=1)))


def l2_distance(p_a: np.ndarray, p_b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(p_a, np.float64) - np.asarray(p_b, np.float64)))


def agreement(p_a: np.ndarray, p_b: np.ndarray) -> float:
    return float(np.mean(np.argmax(p_a, axis=1) == np.argmax(p_b, axis=1)))


def weight_l2_distance(weights_a: Sequence[np.ndarray], weights_b: Sequence[np.ndarray]) -> float:
    if len(weights_a) != len(weights_b) or any(
            a.shape != b.shape for a, b in zip(weights_a, weights_b)):
        return math.nan
    return float(math.sqrt(sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2))
                               for a, b in zip(weights_a, weights_b))))


def compare_all(fraction: float, probabilities: Dict[str, np.ndarray],
                weights: Callable[[str], Sequence[np.ndarray]]) -> pd.DataFrame:
    """Every pair of the named models (in the given order) at one fraction removed:
    ``comparisons.csv`` rows. ``weights(name)`` returns a model's weights."""
    names = list(probabilities)
    loaded = {name: weights(name) for name in names}
    rows = [{"fraction_removed": fraction, "model_a": a, "model_b": b,
             "n_differ": n_differ(probabilities[a], probabilities[b]),
             "l2_distance": l2_distance(probabilities[a], probabilities[b]),
             "weight_l2_distance": weight_l2_distance(loaded[a], loaded[b])}
            for a, b in itertools.combinations(names, 2)]
    return pd.DataFrame(rows)
