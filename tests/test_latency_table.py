"""The latency model's per-layer lookup tables (epkd_tf.deploy.latency_table): which widths
are timed, the prediction from them (exact on LiteRT-like staircases, never slower when
narrower), and the disk cache (reused only for the same signature and runtime, corrupt
files ignored, atomic writes). Timings are faked except in the one integration test."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import json
import logging
import math
import os

import numpy as np
import pytest

import tf_keras
from epkd_tf import files
from epkd_tf.budget import MeasureContext
from epkd_tf.deploy import latency_table
from epkd_tf.deploy.latency import LatencyModel, latency_cost
from epkd_tf.deploy.latency_table import TableCache, axis_widths
from epkd_tf.graph import analyze
from epkd_tf.graph.rules import find_rule



def dense_layer(kin=64, units=40):
    model = tf_keras.Sequential([tf_keras.Input((kin,)),
                                 tf_keras.layers.Dense(units, activation="relu")])
    layer = model.layers[0]
    return layer, find_rule(layer)


def batchnorm_layer(channels=48):
    model = tf_keras.Sequential([tf_keras.Input((4, 4, channels)),
                                 tf_keras.layers.BatchNormalization()])
    layer = model.layers[0]
    return layer, find_rule(layer)


def staircase(kin, kout):
    """A LiteRT-like Dense cost: output units computed in tiles of 16, linear in inputs."""
    return 0.01 + 1e-4 * kin * math.ceil(kout / 16) * 16


class FakeTimer:
    """Replaces LatencyModel.measure with ``cost(kin, kout)``, counting the calls."""

    def __init__(self, monkeypatch, cost=staircase):
        self.calls = []
        self.cost = cost
        timer = self

        def measure(model, layer, rule, kept_in, kept_out):
            timer.calls.append((kept_in, kept_out))
            return timer.cost(kept_in, kept_out)

        monkeypatch.setattr(LatencyModel, "measure", measure)


def sawtooth(kin, kout):
    """Non-monotone in both widths: odd tiles of 16 outputs cost 1.5x (as LiteRT's Dense
    kernels on AVX-512), plus per-point noise."""
    tiles = math.ceil(kout / 16)
    noise = np.random.default_rng(kin * 1000 + kout).random() * 0.02
    return 0.01 + 1e-4 * kin * tiles * 16 * (1.5 if tiles % 2 else 1.0) + noise


# -- which widths are timed ----------------------------------------------------------

@pytest.mark.unit
def test_timed_widths_are_the_width_and_multiples_of_the_tile_down_to_a_quarter():
    assert axis_widths(40, 6) == [40, 32, 24, 16, 8]
    assert axis_widths(100, 6) == [100, 96, 88, 64, 48, 24]      # dense near 100
    assert axis_widths(6, 6) == [6] and axis_widths(9, 6) == [9, 8] and axis_widths(1, 6) == [1]
    assert axis_widths(300, 2) == [300, 72] and axis_widths(20, 2) == [20, 8]   # inputs
    for width in (17, 100, 300, 784, 2048):
        widths = axis_widths(width, 6)
        assert widths[0] == width and len(widths) <= 6
        assert widths == sorted(set(widths), reverse=True)
        assert all(w % latency_table.TILE == 0 for w in widths[1:])
        assert widths[-1] <= max(latency_table.TILE, width / 4)


@pytest.mark.unit
@pytest.mark.parametrize("width", [20, 64, 300, 500, 1280, 2048])
def test_output_widths_are_dense_below_the_width_then_whole_periods(width):
    """Every multiple of 8 right below the width, then whole periods of the sawtooth (one
    width of every residue modulo 32), down to about a quarter of the width."""
    tile, period = latency_table.TILE, latency_table.PERIOD
    widths = latency_table.output_widths(width)
    assert widths[0] == width and widths == sorted(set(widths), reverse=True)
    assert len(widths) <= latency_table.MAX_OUT
    assert all(w % tile == 0 for w in widths[1:])
    assert widths[-1] <= max(tile, width / 4 + period)
    dense = [w for w in range((width - 1) // tile * tile, 0, -tile)][:latency_table.MAX_DENSE]
    assert widths[1:1 + len(dense)] == dense[:len(widths) - 1]
    spread = widths[1 + latency_table.MAX_DENSE:]
    for w in spread:                    # every spread width has its whole period timed
        top = -(-w // period) * period
        assert all(v in widths for v in range(top, top - period, -tile) if v >= tile)


@pytest.mark.unit
def test_the_exact_prediction_between_spread_widths_keeps_the_tile_parity(monkeypatch,
                                                                          tmp_path):
    """Far below the width (the spread periods), an untimed width is interpolated between
    timed widths of its own residue modulo 32: an even-tile width is predicted fast, an
    odd-tile one slow, as measured."""
    def cost(kin, kout):
        tiles = math.ceil(kout / 16)
        return 1e-3 * kin * tiles * (1.5 if tiles % 2 else 1.0)

    FakeTimer(monkeypatch, cost)
    layer, rule = dense_layer(64, 500)
    model = LatencyModel(cache_dir=tmp_path)
    timed = set(model.table(layer, rule).outs)
    untimed = [w for w in range(136, 400, 8) if w not in timed]
    assert len(untimed) > 10
    for kout in untimed:
        assert model.exact_ms(layer, rule, 64, kout) == pytest.approx(cost(64, kout),
                                                                      rel=0.1), kout


@pytest.mark.unit
def test_a_layer_is_timed_at_a_few_points_and_only_when_asked(monkeypatch, tmp_path):
    timer = FakeTimer(monkeypatch)
    layer, rule = dense_layer(64, 40)
    model = LatencyModel(cache_dir=tmp_path)
    table = model.table(layer, rule)
    assert timer.calls == []                                  # nothing timed yet
    model.layer_ms(layer, rule, 64, 40)
    # The current input width's column only: a layer whose inputs are never pruned (the
    # first one) is timed at its output widths alone.
    assert timer.calls == [(64, w) for w in table.outs]
    model.layer_ms(layer, rule, 20, 30)                       # every column now
    assert len(table.points()) <= latency_table.MAX_POINTS
    assert sorted(timer.calls) == sorted(table.points())
    model.layer_ms(layer, rule, 2, 2)                         # below the table: the fit
    assert len(timer.calls) <= latency_table.MAX_POINTS + 3
    assert model.points_measured == len(timer.calls) == len(set(timer.calls))
    assert model.points_reused == 0


# -- the prediction ------------------------------------------------------------------

@pytest.mark.unit
def test_the_table_reproduces_a_staircase_that_the_smooth_fit_misses(monkeypatch, tmp_path):
    FakeTimer(monkeypatch, staircase)
    layer, rule = dense_layer(64, 40)
    model = LatencyModel(cache_dir=tmp_path)
    table = model.table(layer, rule)
    # At and between the timed widths (every output width, input widths within reach).
    queries = [(kin, kout) for kin in range(table.ins[-1], 65) for kout in range(1, 41)]
    truth = np.array([staircase(kin, kout) for kin, kout in queries])
    predicted = np.array([model.layer_ms(layer, rule, kin, kout) for kin, kout in queries])
    smooth = np.array([model.smooth_ms(layer, rule, kin, kout) for kin, kout in queries])
    np.testing.assert_allclose(predicted, truth, rtol=1e-12)
    table_error = np.abs(predicted - truth) / truth
    smooth_error = np.abs(smooth - truth) / truth
    assert table_error.max() < 1e-9
    assert np.median(smooth_error) > 0.05 and smooth_error.max() > 0.2


@pytest.mark.unit
def test_per_channel_layers_are_looked_up_on_their_channels(monkeypatch, tmp_path):
    timer = FakeTimer(monkeypatch, lambda kin, kout: 0.002 * math.ceil(kin / 16))
    layer, rule = batchnorm_layer(48)
    model = LatencyModel(cache_dir=tmp_path)
    for k in range(12, 49):
        assert model.layer_ms(layer, rule, k, k) == pytest.approx(0.002 * math.ceil(k / 16))
    assert all(kin == kout for kin, kout in timer.calls)
    assert len(timer.calls) <= latency_table.MAX_OUT


@pytest.mark.unit
@pytest.mark.parametrize("make_layer", [lambda: dense_layer(64, 40),
                                        lambda: dense_layer(300, 100),
                                        lambda: batchnorm_layer(48)])
def test_predictions_never_rise_when_a_width_falls(monkeypatch, tmp_path, make_layer):
    """On a noisy sawtooth (narrower is sometimes slower), inside the table and below it
    (the smooth fit), whatever order the columns were timed in."""
    FakeTimer(monkeypatch, sawtooth)
    layer, rule = make_layer()
    width_in = int(layer.input_shape[-1])
    width_out = int(layer.output_shape[-1])
    model = LatencyModel(cache_dir=tmp_path)
    first = model.layer_ms(layer, rule, width_in, width_out)  # the top column alone
    ins = sorted({1, 2, 3} | set(range(1, width_in + 1, max(1, width_in // 40))) | {width_in})
    outs = range(1, width_out + 1)
    grid = np.array([[model.layer_ms(layer, rule, kin, kout) for kout in outs] for kin in ins])
    assert (np.diff(grid, axis=0) >= 0).all()                 # in kept_in
    assert (np.diff(grid, axis=1) >= 0).all()                 # in kept_out
    assert (grid >= 0).all()
    # Timing the lower columns changed nothing already predicted.
    assert model.layer_ms(layer, rule, width_in, width_out) == first


def _two_layer_graph():
    inputs = tf_keras.Input((20,))
    x = tf_keras.layers.Dense(40, activation="relu")(inputs)
    x = tf_keras.layers.Dense(24, activation="relu")(x)
    return analyze(tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x)))


@pytest.mark.unit
def test_latency_cost_and_its_group_costs_use_the_tables(monkeypatch, tmp_path):
    """LayerwiseCost over the model's tables: falls along any removal order; a unit saves
    its share of its tile's time (amortised over the units down to the tile boundary
    below) plus its exact share of the layer reading it."""
    FakeTimer(monkeypatch, sawtooth)
    graph = _two_layer_graph()
    model = LatencyModel(cache_dir=tmp_path)
    cost = latency_cost(graph, model, measured_ms=1.0)
    full = np.ones(graph.num_units, bool)
    assert cost(full) == pytest.approx(1.0) and cost.exact_cost(full) == pytest.approx(1.0)
    order = np.random.default_rng(0).permutation(graph.num_groups)
    previous = cost(full)
    for k in range(1, len(order)):
        now = cost(graph.unit_keep(order[:k]))
        assert now <= previous + 1e-12
        previous = now
    keep = graph.unit_keep(order[:5])
    # The reference, per layer from the model's own per-layer times.
    dense1, dense2, head = [layer for layer in graph.model.layers if layer.weights]
    rule = find_rule(dense1)
    k1 = int(keep[graph.unit_layer == 0].sum())
    k2 = int(keep[graph.unit_layer == 1].sum())
    ms = model.layer_ms
    tile = latency_table.TILE

    def share(kin, kout, layer):                   # amortised down to the tile below
        s = kout - (kout - 1) // tile * tile
        return (ms(layer, rule, kin, kout) - ms(layer, rule, kin, kout - s)) / s

    per_unit = np.where(graph.unit_layer == 0,
                        share(20, k1, dense1) + ms(dense2, rule, k1, k2)
                        - ms(dense2, rule, k1 - 1, k2),
                        share(k1, k2, dense2) + ms(head, rule, k2, 3) - ms(head, rule, k2 - 1, 3))
    expected = [per_unit[graph.group_units[g]].sum() if keep[graph.group_units[g]].any()
                else 0.0 for g in range(graph.num_groups)]
    np.testing.assert_allclose(cost.group_costs(keep), expected, atol=1e-12)
    # A tile's units together save what emptying the tile saves.
    assert share(20, 40, dense1) * 8 == pytest.approx(ms(dense1, rule, 20, 40)
                                                      - ms(dense1, rule, 20, 32))


@pytest.mark.unit
def test_step_one_group_costs_are_the_exact_differences_of_the_cost(monkeypatch, tmp_path):
    from epkd_tf.graph.count import LayerwiseCost
    FakeTimer(monkeypatch, sawtooth)
    graph = _two_layer_graph()
    cost = LayerwiseCost(graph, LatencyModel(cache_dir=tmp_path).layer_ms)
    keep = graph.unit_keep(np.random.default_rng(1).permutation(graph.num_groups)[:5])
    expected = [cost(keep) - cost(keep & (graph.group_of_unit != g))
                if keep[graph.group_units[g]].any() else 0.0 for g in range(graph.num_groups)]
    np.testing.assert_allclose(cost.group_costs(keep), expected, atol=1e-12)


@pytest.mark.unit
def test_the_exact_prediction_keeps_the_sawtooth_the_envelope_flattens(monkeypatch, tmp_path):
    """At timed widths the exact prediction is the measured time, an odd number of
    16-wide tiles slower than the next even one; the envelope predicts the even width at
    its slower neighbour's time."""
    FakeTimer(monkeypatch, lambda kin, kout: 1e-3 * kin * math.ceil(kout / 16)
              * (1.5 if math.ceil(kout / 16) % 2 else 1.0))
    layer, rule = dense_layer(64, 300)
    model = LatencyModel(cache_dir=tmp_path)
    timed = model.table(layer, rule).outs
    assert all(w in timed for w in (288, 272, 256, 240, 224))      # the dense run
    for kout in (288, 272, 256, 240):
        tiles = math.ceil(kout / 16)
        truth = 1e-3 * 64 * tiles * (1.5 if tiles % 2 else 1.0)
        assert model.exact_ms(layer, rule, 64, kout) == pytest.approx(truth)
    assert model.exact_ms(layer, rule, 64, 288) < model.exact_ms(layer, rule, 64, 272)
    assert model.layer_ms(layer, rule, 64, 288) == pytest.approx(
        model.exact_ms(layer, rule, 64, 272))


# -- the disk cache ------------------------------------------------------------------

def _query_all(model, layer, rule):
    return [model.layer_ms(layer, rule, kin, kout) for kin in (64, 50, 30, 16, 4)
            for kout in (40, 33, 20, 9, 2)]


@pytest.mark.unit
def test_a_second_model_reads_the_tables_and_times_nothing(monkeypatch, tmp_path):
    timer = FakeTimer(monkeypatch, sawtooth)
    layer, rule = dense_layer()
    first = LatencyModel(cache_dir=tmp_path)
    predicted = _query_all(first, layer, rule)
    measured = first.points_measured
    assert measured == len(timer.calls) > 0
    (name,) = os.listdir(tmp_path)
    assert name == latency_table.signature_key(first.signature(layer, rule)) + ".json"
    stored = json.loads((tmp_path / name).read_text())
    assert stored["signature"] == first.signature(layer, rule)
    assert len(stored["points"]) == measured

    timer.calls.clear()
    second = LatencyModel(cache_dir=tmp_path)
    assert _query_all(second, layer, rule) == predicted
    assert timer.calls == [] and second.points_measured == 0
    assert second.points_reused == measured
    # Another layer of the same kind and widths (the next iteration's student) too.
    other, _ = dense_layer()
    assert second.layer_ms(other, rule, 30, 20) == first.layer_ms(layer, rule, 30, 20)
    assert timer.calls == []


@pytest.mark.unit
@pytest.mark.parametrize("change", ["format", "threads", "litert", "tensorflow"])
def test_tables_of_another_format_threads_or_runtime_are_not_reused(monkeypatch, tmp_path,
                                                                     change):
    timer = FakeTimer(monkeypatch)
    layer, rule = dense_layer()
    LatencyModel(cache_dir=tmp_path).layer_ms(layer, rule, 64, 40)
    timer.calls.clear()
    kwargs = {"cache_dir": tmp_path}
    if change == "format":
        kwargs["fmt"] = "tflite_int8"
    elif change == "threads":
        kwargs["threads"] = 2
    else:
        real = latency_table.runtime()
        monkeypatch.setattr(latency_table, "runtime", lambda: {**real, change: "0.0.1"})
    model = LatencyModel(**kwargs)
    model.layer_ms(layer, rule, 64, 40)
    assert len(timer.calls) > 0 and model.points_reused == 0
    assert len(os.listdir(tmp_path)) == 2                     # one file per signature


@pytest.mark.unit
@pytest.mark.parametrize("content", [
    "{not json", "", b"\xff\xfe\x00 not UTF-8", "[]", '{"schema": 1}',
    "mismatch",                       # valid JSON, another signature
    "bad_point",                      # the right signature, a negative time
    "wrong_schema"])
def test_a_corrupt_or_mismatched_table_is_ignored_and_measured_again(monkeypatch, tmp_path,
                                                                      content):
    timer = FakeTimer(monkeypatch)
    layer, rule = dense_layer()
    reference = LatencyModel(cache_dir=False)
    signature = reference.signature(layer, rule)
    path = TableCache(str(tmp_path)).path(signature)
    good = {"schema": latency_table.SCHEMA, "signature": signature,
            "points": [[64, 40, 123.0]]}
    if content == "mismatch":
        content = json.dumps({**good, "signature": {**signature, "format": "tflite_int8"}})
    elif content == "bad_point":
        content = json.dumps({**good, "points": [[64, 40, -1.0]]})
    elif content == "wrong_schema":
        content = json.dumps({**good, "schema": latency_table.SCHEMA + 1})
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    model = LatencyModel(cache_dir=tmp_path)
    assert model.layer_ms(layer, rule, 64, 40) == pytest.approx(staircase(64, 40))
    assert model.points_reused == 0 and (64, 40) in timer.calls
    # Replaced by a valid table of this signature.
    assert TableCache(str(tmp_path)).load(signature)[(64, 40)] == staircase(64, 40)


@pytest.mark.unit
def test_a_fifo_in_place_of_a_table_is_ignored_without_blocking(tmp_path):
    import threading
    layer, rule = dense_layer()
    signature = LatencyModel(cache_dir=False).signature(layer, rule)
    cache = TableCache(str(tmp_path))
    os.mkfifo(cache.path(signature))                # open() would wait for a writer
    found = []
    reader = threading.Thread(target=lambda: found.append(cache.load(signature)),
                              daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive() and found == [{}]


@pytest.mark.unit
def test_writes_are_atomic_and_merge_what_another_process_stored(monkeypatch, tmp_path):
    FakeTimer(monkeypatch)
    layer, rule = dense_layer()
    one, two = LatencyModel(cache_dir=tmp_path), LatencyModel(cache_dir=tmp_path)
    one.layer_ms(layer, rule, 64, 40)                         # the top column
    two.layer_ms(layer, rule, 64, 40)                         # read from disk
    one.layer_ms(layer, rule, 20, 20)                         # the lower columns: saved
    two.layer_ms(layer, rule, 4, 2)                           # read again; the fit: saved
    table = one.table(layer, rule)
    assert two.points_reused == len(table.points())
    assert two.points_measured == len(set(table.fit_points()) - set(table.points()))
    (name,) = os.listdir(tmp_path)
    assert not name.startswith(files.TMP_PREFIX)
    stored = TableCache(str(tmp_path)).load(two.signature(layer, rule))
    assert set(table.points()) | set(table.fit_points()) <= set(stored)


@pytest.mark.unit
def test_an_unwritable_cache_is_logged_and_otherwise_ignored(monkeypatch, tmp_path, caplog):
    FakeTimer(monkeypatch)
    layer, rule = dense_layer()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    model = LatencyModel(cache_dir=blocker)                   # not a directory
    with caplog.at_level(logging.WARNING, logger="epkd_tf"):
        assert model.layer_ms(layer, rule, 64, 40) == pytest.approx(staircase(64, 40))
        model.layer_ms(layer, rule, 2, 2)
    assert caplog.text.count("Cannot store latency tables") == 1


@pytest.mark.unit
def test_cache_directory_default_explicit_and_off(monkeypatch, tmp_path):
    timer = FakeTimer(monkeypatch)
    monkeypatch.setenv("EPKD_TF_CACHE", str(tmp_path / "env"))
    assert LatencyModel().cache_dir == str(tmp_path / "env" / "latency")
    monkeypatch.delenv("EPKD_TF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert LatencyModel().cache_dir == str(tmp_path / "home" / ".cache" / "epkd_tf" / "latency")
    assert LatencyModel(cache_dir=tmp_path / "x").cache_dir == str(tmp_path / "x")
    layer, rule = dense_layer()
    off = LatencyModel(cache_dir=False)
    assert off.cache_dir is None
    off.layer_ms(layer, rule, 64, 40)
    assert len(timer.calls) > 0
    assert sorted(os.listdir(tmp_path)) == []                 # nothing written anywhere
    context = MeasureContext(latency_cache=str(tmp_path / "ctx"))
    assert context.model_for_latency().cache_dir == str(tmp_path / "ctx")
    assert MeasureContext(latency_cache=False).model_for_latency().cache_dir is None


@pytest.mark.unit
def test_the_test_session_never_uses_the_home_cache():
    """tests/conftest.py points EPKD_TF_CACHE at the session's temporary directory."""
    assert os.environ.get("EPKD_TF_CACHE")
    home = os.path.join(os.path.expanduser("~"), ".cache")
    assert not LatencyModel().cache_dir.startswith(home + os.sep)


# -- for real ------------------------------------------------------------------------

@pytest.mark.integration
def test_tables_measured_on_litert_round_trip_through_the_disk_cache(tmp_path):
    layer, rule = dense_layer(16, 12)
    first = LatencyModel(runs=5, cache_dir=tmp_path)
    full = first.layer_ms(layer, rule, 16, 12)
    narrow = first.layer_ms(layer, rule, 16, 2)
    assert 0 < narrow <= full
    assert first.points_measured == len(first.table(layer, rule).outs) == 2
    assert first.seconds_measuring > 0
    second = LatencyModel(runs=5, cache_dir=tmp_path)
    assert second.layer_ms(layer, rule, 16, 12) == full
    assert second.layer_ms(layer, rule, 16, 2) == narrow
    assert second.points_measured == 0 and second.points_reused == 2
    assert [n for n in os.listdir(tmp_path) if not n.endswith(".json")] == []


@pytest.mark.unit
def test_a_layer_beyond_half_the_l2_cache_is_predicted_without_its_fast_widths(
        monkeypatch, tmp_path):
    """Inside a model a layer whose weights take more than half a core's L2 cache loses
    its fast even-tile widths (LeNet-5's 1.6 MB Dense layer): its exact prediction is the
    envelope's. Under the limit, or with the cache size unknown, it keeps the sawtooth."""
    FakeTimer(monkeypatch, lambda kin, kout: 1e-3 * kin * math.ceil(kout / 16)
              * (1.5 if math.ceil(kout / 16) % 2 else 1.0))
    layer, rule = dense_layer(64, 300)                 # 64 x 288 float weights: 73.7 kB
    model = LatencyModel(cache_dir=tmp_path)
    model.cache_bytes = None
    sawtooth = model.exact_ms(layer, rule, 64, 288)
    assert sawtooth < model.layer_ms(layer, rule, 64, 288)
    model.cache_bytes = 2 * 64 * 288 * 4 + 8               # exactly fits: the sawtooth
    assert model.exact_ms(layer, rule, 64, 288) == sawtooth
    model.cache_bytes = 2 * 64 * 288 * 4 - 8               # beyond half: the envelope
    assert model.exact_ms(layer, rule, 64, 288) == model.layer_ms(layer, rule, 64, 288)
    assert model.exact_ms(layer, rule, 64, 256) == pytest.approx(1e-3 * 64 * 16)  # fits


@pytest.mark.unit
def test_the_l2_cache_size_is_read_or_unknown():
    size = latency_table.l2_cache_bytes()
    assert size is None or (isinstance(size, int) and size >= 64 * 1024)
