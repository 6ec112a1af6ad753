"""Tests for epkd_tf.pruning.correlation.criteria_correlation against scipy."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import mlp_model, residual_model  # noqa: E402

from epkd_tf.graph import analyze  # noqa: E402
from epkd_tf.pruning import criteria_correlation  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def graph():
    return analyze(mlp_model(sizes=(7, 6)))       # blocks h1 (7 groups) and h2 (6 groups)


def _lookup(df, criterion, scope):
    rows = df[(df.criterion == criterion) & (df.scope == scope)]
    assert len(rows) == 1, (criterion, scope)
    return float(rows.spearman.iloc[0])


def test_matches_scipy_per_block_and_global(graph):
    rng = np.random.default_rng(0)
    n = graph.num_groups
    oracle = rng.normal(size=n)
    scores = {
        "oracle": oracle,
        "noisy": oracle + 0.5 * rng.normal(size=n),
        "ties": np.round(rng.normal(size=n)),     # ties are averaged ranks in scipy too
        "reversed": -oracle,
    }
    df = criteria_correlation(graph, scores, "oracle")
    assert list(df.columns) == ["criterion", "scope", "spearman"]
    assert set(df.criterion) == {"noisy", "ties", "reversed"}     # the reference is skipped
    assert len(df) == 3 * (1 + len(graph.blocks))
    for name in ("noisy", "ties", "reversed"):
        expected = stats.spearmanr(scores[name], oracle).statistic
        assert _lookup(df, name, "global") == pytest.approx(expected, abs=1e-12)
        for block in graph.blocks:
            g = block.groups
            expected = stats.spearmanr(scores[name][g], oracle[g]).statistic
            assert _lookup(df, name, f"layer:{block.name}") == pytest.approx(expected, abs=1e-12)
    assert _lookup(df, "reversed", "global") == pytest.approx(-1.0)
    assert {f"layer:{b.name}" for b in graph.blocks} == {"layer:h1", "layer:h2"}


def test_constant_scores_give_nan(graph):
    rng = np.random.default_rng(1)
    n = graph.num_groups
    h1 = graph.blocks[0].groups
    partly = rng.normal(size=n)
    partly[h1] = 3.0                      # constant within h1 only
    scores = {"oracle": rng.normal(size=n), "constant": np.ones(n), "partly": partly}
    df = criteria_correlation(graph, scores, "oracle")
    for scope in ["global"] + [f"layer:{b.name}" for b in graph.blocks]:
        assert math.isnan(_lookup(df, "constant", scope))
    assert math.isnan(_lookup(df, "partly", "layer:h1"))
    assert not math.isnan(_lookup(df, "partly", "layer:h2"))
    assert not math.isnan(_lookup(df, "partly", "global"))
    # A constant reference makes every correlation undefined.
    df = criteria_correlation(graph, {"oracle": np.zeros(n), "x": rng.normal(size=n)}, "oracle")
    assert df.spearman.isna().all()


def test_coupled_block_names():
    graph = analyze(residual_model())
    rng = np.random.default_rng(2)
    ref = rng.normal(size=graph.num_groups)
    other = rng.normal(size=graph.num_groups)
    df = criteria_correlation(graph, {"oracle": ref, "x": other}, "oracle")
    coupled = next(b for b in graph.blocks if len(b.layers) == 2)
    expected = stats.spearmanr(other[coupled.groups], ref[coupled.groups]).statistic
    assert _lookup(df, "x", f"layer:{coupled.name}") == pytest.approx(expected, abs=1e-12)
