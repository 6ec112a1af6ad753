"""A latency model: a pruned model's batch-1 LiteRT latency predicted from its layers'
widths, each layer's latency measured on the runtime itself.

Pruning plans compare thousands of candidate widths; measuring each would take minutes.
Instead every costed layer (Dense, convolutions, depthwise and normalisation layers; the
same per-layer knowledge as MACs, ``epkd_tf.graph.rules``) is rebuilt alone at a few
widths, converted to TFLite in the run's format and timed on LiteRT with the run's
threads. The timings form a **lookup table** per layer (``epkd_tf.deploy.latency_table``):
the current widths and multiples of 8 below them down to about a quarter, because LiteRT's
kernels compute output channels in tiles and a layer's latency is a staircase of its
width that no smooth function follows. A width between timed ones costs what its width
rounded up to the tile costs, interpolated between timed neighbours. The plan picks its
prefix by the times as measured (sawtooth included); a copy made non-decreasing in both
widths tells it whether the target is reachable at all and answers when no prefix's
exact time gets there (a binary search needs a narrower model never predicted slower).
Narrower than the table reaches, a non-negative least-squares fit

    t(kept_in, kept_out) = a + b · MACs(kept_in, kept_out) + c · kept_in + d · kept_out

predicts it (capped by the table's narrowest time: still non-increasing). Tables are kept
on disk (``$EPKD_TF_CACHE/latency``, else ``~/.cache/epkd_tf/latency``), one JSON file per
layer signature, runtime version included, so later runs time only what is new.

What the layers alone do not see (the interpreter's fixed cost, pooling, fused
activations, cache effects) is one offset, calibrated per iteration so that the model
predicts the current student's measured latency exactly; candidates are then measured for
real and both figures are kept (``candidates.csv``: ``cost`` vs ``predicted_cost``).
"""
from __future__ import annotations

import copy
import time
import weakref
from typing import Dict, List, Optional, Tuple

import numpy as np

from epkd_tf.deploy import latency_table
from epkd_tf.deploy.latency_table import LayerTable, Point, TableCache


#: A layer whose weights take more than this fraction of a core's L2 cache is predicted
#: without its sawtooth's fast widths (see ``LatencyModel._beyond_cache``). Measured on
#: the benchmark machine (2 MB L2): 0.25 loses LeNet-300-100's real sawtooth, 0.75 keeps
#: LeNet-5's vanished one; 0.5 predicts both (docs/benchmarks/latency_model.md).
CACHE_FRACTION = 0.5


class LatencyModel:
    """Per-layer latency tables on LiteRT for one TFLite ``fmt`` (``tflite`` or
    ``tflite_int8``) and number of ``threads``; ``runs`` timed invokes per point.

    ``cache_dir``: where the tables are stored between runs; None: the default
    (:func:`epkd_tf.deploy.latency_table.default_cache_dir`), False: no disk cache.
    ``points_measured`` / ``points_reused`` count the points timed here and those read from
    the disk cache instead; ``seconds_measuring`` the time spent timing.
    """

    def __init__(self, fmt: str = "tflite", threads: int = 1, runs: int = 30,
                 seed: int = 0, cache_dir=None):
        self.fmt, self.threads, self.runs, self.seed = fmt, threads, runs, seed
        self.cache_dir = latency_table.resolve_cache_dir(cache_dir)
        self._cache = TableCache(self.cache_dir) if self.cache_dir else None
        self._runtime = latency_table.runtime()
        #: Bytes of one core's L2 cache (None: unknown; see :meth:`_beyond_cache`).
        self.cache_bytes = latency_table.l2_cache_bytes()
        #: signature key -> {(kept_in, kept_out): ms}, measured here or read from disk.
        self._points: Dict[str, Dict[Point, float]] = {}
        self._from_disk: Dict[str, set] = {}
        self._signatures: Dict[str, dict] = {}
        #: (signature key, width in, width out) -> the layer's table / its smooth fit.
        self._tables: Dict[Tuple[str, int, int], LayerTable] = {}
        self._fits: Dict[Tuple[str, int, int], np.ndarray] = {}
        # id(layer) -> (weak reference, table, key): a layer's signature is computed once
        # (its get_config is slow next to a lookup); no layer is kept alive.
        self._by_layer: Dict[int, tuple] = {}
        #: Points timed on LiteRT by this model.
        self.points_measured = 0
        #: Points a table needed that the disk cache held (each counted once).
        self.points_reused = 0
        #: Seconds spent converting and timing points.
        self.seconds_measuring = 0.0

    def signature(self, layer, rule) -> dict:
        """What ``layer``'s latency depends on besides its widths: its class, configuration
        without the width and input's spatial size, the format, the threads and the
        runtime (``ai-edge-litert`` and TensorFlow versions, CPU)."""
        return {"schema": latency_table.SCHEMA, "layer": _signature(layer, rule),
                "format": self.fmt, "threads": int(self.threads), "runtime": self._runtime}

    def layer_ms(self, layer, rule, kept_in: int, kept_out: int,
                 exact: bool = False) -> float:
        """Predicted milliseconds of ``layer`` with ``kept_in`` input channels and
        ``kept_out`` output units (producers) or channels.

        Args:
            layer: a costed layer of the current model (its widths are the table's top).
            rule: its channel rule.
            kept_in: input channels kept.
            kept_out: output units kept (per-channel layers: ``kept_in``).
            exact: the times as measured, where a narrower width can be slower (LiteRT's
                odd/even tiles), instead of their non-decreasing envelope.

        Returns:
            Milliseconds, non-decreasing in both widths unless ``exact``; 0 when either
            is 0.
        """
        if kept_in <= 0 or kept_out <= 0:
            return 0.0
        if exact and self._beyond_cache(layer, rule, kept_in, kept_out):
            exact = False
        table, key = self._table(layer, rule)
        ms, inside = table.predict(kept_in, kept_out, self._lookup_for(key[0], layer, rule),
                                   exact)
        if inside:
            return ms
        # Narrower than the table reaches: the smooth fit, capped by the table's time at
        # the nearest timed widths (the minimum of two non-decreasing functions is one).
        return min(ms, self._smooth(layer, rule, table, key, kept_in, kept_out))

    def exact_ms(self, layer, rule, kept_in: int, kept_out: int) -> float:
        """:meth:`layer_ms` with ``exact=True``: what the plan picks its prefix by."""
        return self.layer_ms(layer, rule, kept_in, kept_out, exact=True)

    def _beyond_cache(self, layer, rule, kept_in: int, kept_out: int) -> bool:
        """Whether the layer's weights at these widths take more than
        :data:`CACHE_FRACTION` of the core's L2 cache: timed alone, such a layer keeps
        them cached and its fast (even-tile) widths run fast; inside a model the other
        layers evict them and the fast widths lose their gain (measured: LeNet-5's
        800 x 500 Dense layer, 1.6 MB, is as slow at 500 units as its envelope predicts,
        while LeNet-300-100's 784 x 300, 0.94 MB, keeps its sawtooth in the model). Its
        exact prediction is then the envelope's."""
        if not self.cache_bytes:
            return False
        spatial = int(np.prod(layer.output_shape[1:-1])) if len(layer.output_shape) > 2 else 1
        per_weight = 1 if self.fmt == "tflite_int8" else 4
        weights = rule.macs(layer, kept_in, kept_out) / max(spatial, 1)
        return per_weight * weights > CACHE_FRACTION * self.cache_bytes

    def table(self, layer, rule) -> LayerTable:
        """``layer``'s table at its current widths (nothing is timed until it is asked).

        Args:
            layer: a costed layer; rule: its channel rule.

        Returns:
            The :class:`~epkd_tf.deploy.latency_table.LayerTable` shared by every layer of
            the same signature and widths.
        """
        return self._table(layer, rule)[0]

    def smooth_ms(self, layer, rule, kept_in: int, kept_out: int) -> float:
        """The smooth fit alone (``t = a + b·MACs + c·kept_in + d·kept_out``): what
        predicts widths narrower than the table reaches, and what the model predicted
        everywhere before it had tables (for comparison).

        Args:
            layer, rule, kept_in, kept_out: as for :meth:`layer_ms`.

        Returns:
            Milliseconds (non-decreasing in both widths).
        """
        table, key = self._table(layer, rule)
        return self._smooth(layer, rule, table, key, kept_in, kept_out)

    def _smooth(self, layer, rule, table, key, kept_in: int, kept_out: int) -> float:
        if key not in self._fits:
            self._fits[key] = self._fit(layer, rule, key[0], table)
        # Non-negative coefficients of non-decreasing features: never slower when narrower.
        return float(np.dot(_features(layer, rule, kept_in, kept_out), self._fits[key]))

    def _table(self, layer, rule):
        entry = self._by_layer.get(id(layer))
        if entry is not None and entry[0]() is layer:
            return entry[1], entry[2]
        signature = self.signature(layer, rule)
        sig_key = latency_table.signature_key(signature)
        self._signatures[sig_key] = signature
        width_in = int(layer.input_shape[-1])
        width_out = int(layer.output_shape[-1]) if rule.produces else width_in
        key = (sig_key, width_in, width_out)
        if key not in self._tables:
            self._tables[key] = LayerTable(width_in, width_out, not rule.produces)
        self._by_layer[id(layer)] = (weakref.ref(layer), self._tables[key], key)
        return self._tables[key], key

    def _lookup_for(self, sig_key: str, layer, rule):
        return lambda points: self._lookup(sig_key, layer, rule, points)

    def _stored(self, sig_key: str) -> Dict[Point, float]:
        """The points known for a signature, read from the disk cache on first use."""
        if sig_key not in self._points:
            found = self._cache.load(self._signatures[sig_key]) if self._cache else {}
            self._points[sig_key] = dict(found)
            self._from_disk[sig_key] = set(found)
        return self._points[sig_key]

    def _lookup(self, sig_key: str, layer, rule, points: List[Point]) -> np.ndarray:
        """Milliseconds of ``points``: known ones from memory or disk, the rest timed now
        (and the table stored)."""
        stored = self._stored(sig_key)
        from_disk = self._from_disk[sig_key]
        if self._cache is not None and any(p not in stored for p in points):
            # Another run sharing the cache may have timed them since it was read.
            fresh = {p: ms for p, ms in self._cache.load(self._signatures[sig_key]).items()
                     if p not in stored}
            stored.update(fresh)
            from_disk.update(fresh)
        missing = []
        for point in dict.fromkeys(points):
            if point in from_disk:
                from_disk.discard(point)            # counted once
                self.points_reused += 1
            elif point not in stored:
                missing.append(point)
        for kin, kout in missing:
            start = time.perf_counter()
            stored[(kin, kout)] = float(self.measure(layer, rule, kin, kout))
            self.seconds_measuring += time.perf_counter() - start
            self.points_measured += 1
        if missing and self._cache is not None:
            self._cache.save(self._signatures[sig_key], stored)
        return np.array([stored[p] for p in points], dtype=np.float64)

    def _fit(self, layer, rule, sig_key: str, table: LayerTable) -> np.ndarray:
        """Coefficients of the smooth fit on the table's fit points."""
        from scipy.optimize import nnls
        points = table.fit_points()
        times = self._lookup(sig_key, layer, rule, points)
        rows = [_features(layer, rule, kin, kout) for kin, kout in points]
        a = np.array(rows, dtype=np.float64)
        scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
        coef, _ = nnls(a / scale, np.asarray(times, dtype=np.float64))
        return coef / scale

    def measure(self, layer, rule, kept_in: int, kept_out: int) -> float:
        """Median batch-1 milliseconds of ``layer`` alone at these widths on LiteRT.

        Args:
            layer: the layer (its class and configuration are rebuilt, random weights).
            rule: its channel rule.
            kept_in: input channels.
            kept_out: output units (producers).

        Returns:
            The median of ``runs`` timed invokes after 5 untimed ones.
        """
        from epkd_tf.deploy import tflite as metrics
        model = single_layer_model(layer, rule, kept_in, kept_out)
        representative = None
        if self.fmt == "tflite_int8":
            shape = (16,) + tuple(model.input_shape[1:])
            representative = np.random.default_rng(self.seed).random(shape, dtype=np.float32)
        flatbuffer = metrics.to_tflite(model, self.fmt, representative)
        return metrics.tflite_latency(flatbuffer, runs=self.runs, warmup=5,
                                      threads=self.threads, seed=self.seed)[0]


def _features(layer, rule, kin: int, kout: int) -> np.ndarray:
    return np.array([1.0, float(rule.macs(layer, kin, kout)), float(kin), float(kout)])


def _signature(layer, rule) -> str:
    """What a layer's latency depends on besides its widths: its class, its input's
    spatial size and its configuration, less what the TFLite file does not depend on
    (its name, trainability, width and how its weights are initialised, regularised or
    constrained: a trained student and its teacher share their tables)."""
    config = dict(layer.get_config())
    for key in ("name", "trainable", rule.width_key):
        config.pop(key, None)
    for key in [k for k in config if k.endswith(("_initializer", "_regularizer",
                                                    "_constraint"))]:
        config.pop(key)
    return repr((type(layer).__name__, tuple(layer.input_shape[1:-1]), sorted(
        (k, repr(v)) for k, v in config.items())))


def single_layer_model(layer, rule, kept_in: int, kept_out: int):
    """``layer``'s class and configuration alone, at ``kept_in`` input channels and
    ``kept_out`` units (producers), on an input of the layer's own spatial size; random
    weights (latency does not depend on their values)."""
    import tf_keras
    config = copy.deepcopy(layer.get_config())
    config["name"] = f"timed_{layer.name}"
    if rule.produces:
        config = rule.set_width(config, kept_out)
    inputs = tf_keras.Input(tuple(layer.input_shape[1:-1]) + (int(kept_in),))
    clone = type(layer).from_config(config)
    return tf_keras.Model(inputs, clone(inputs))


def latency_cost(graph, model: LatencyModel, measured_ms: Optional[float] = None):
    """A :class:`~epkd_tf.graph.count.LayerwiseCost` predicting ``graph.model``'s pruned
    versions' latency in ms: non-decreasing in every width when called (whether a target
    is reachable, the plan's fallback search, the allocations' marginal savings), as
    measured by its ``exact_cost`` (odd/even tiles included, what the plan
    picks by and reports), with savings amortised over :data:`TILE` units (a unit's
    removal saves a share of its tile's time). ``measured_ms`` (the model's measured
    latency) calibrates both offsets so that the full model is predicted exactly."""
    from epkd_tf.graph.count import LayerwiseCost
    cost = LayerwiseCost(graph, model.layer_ms, step=latency_table.TILE)
    cost.exact_cost = LayerwiseCost(graph, model.exact_ms)
    if measured_ms is not None:
        cost.offset = float(measured_ms) - cost.full()
        cost.exact_cost.offset = float(measured_ms) - cost.exact_cost.full()
    return cost
