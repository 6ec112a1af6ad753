"""Budgets: the measure in which EPKD shrinks a network, and when it stops.

A measure (``--budget``) says what "size" means: ``params`` (nonzero parameters, the
seed's definition), ``macs`` (multiply-accumulates per example), ``latency`` (batch-1
LiteRT latency of the float or int8 TFLite file, as ``deployment.csv`` measures it) or
``size`` (bytes of the float TFLite file). Each iteration's candidates are made to
``keep_ratio`` × the current student's cost in that measure. A measure

* measures a model (``of``): exactly for params, MACs and size, on the runtime for
  latency (timed side by side with the run's teacher, see :class:`MeasureContext`);
* gives the pruning plan a cost of any structured-pruned version (``planner``): exact for
  params and MACs, the dense byte count plus a calibrated file overhead for size, the
  per-layer latency tables measured on LiteRT (``epkd_tf.deploy.latency``) for latency;
* says whether unstructured sparsity lowers it (``lowered_by_sparsity``): zeros lower the
  nonzero count, but a magnitude-pruned network still runs and stores its dense kernels,
  so ``poly_magnitude`` is left out of MACs, latency and size iterations with a reason.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Optional

import numpy as np

from epkd_tf.registry import Registry

MEASURES: Registry = Registry("budget")


@dataclasses.dataclass
class MeasureContext:
    """How latency and size are measured in this run (the deployment settings).

    ``reference`` (the run's teacher, when known) makes latency a side-by-side
    measurement: a model and the teacher are timed in interleaved rounds and the model's
    latency is the ratio of the two medians × the teacher's latency (``reference_costs``:
    as the run recorded it, else measured once). On a shared machine two medians taken
    minutes apart differ by tens of percent for one file; ratios measured side by side do
    not, and every target of a run is a ratio of its teacher's latency."""

    latency_format: str = "tflite"          # tflite or tflite_int8
    threads: int = 1
    runs: int = 50
    calibration: Optional[np.ndarray] = None  # int8 calibration inputs
    # Draws them when an int8 file is first needed (a run's seeded training examples).
    calibration_source: Optional[Callable[[], np.ndarray]] = None
    seed: int = 0
    latency_model: object = None            # epkd_tf.deploy.latency.LatencyModel, made on demand
    # Where the latency model stores its per-layer tables between runs: None, the default
    # ($EPKD_TF_CACHE/latency, else ~/.cache/epkd_tf/latency); False, nowhere; or a path.
    latency_cache: object = None
    reference: object = None                # the teacher (a tf_keras model) or None
    reference_costs: dict = dataclasses.field(default_factory=dict)  # measure -> its cost
    _reference_files: dict = dataclasses.field(default_factory=dict)  # format -> bytes

    def calibration_inputs(self) -> Optional[np.ndarray]:
        """The int8 calibration inputs, drawn from ``calibration_source`` on first need
        (None while every file measured is float)."""
        if (self.calibration is None and self.calibration_source is not None
                and self.latency_format == "tflite_int8"):
            self.calibration = self.calibration_source()
        return self.calibration

    def reference_file(self, fmt: str) -> bytes:
        """The reference model's TFLite file in ``fmt`` (converted once)."""
        if fmt not in self._reference_files:
            from epkd_tf.deploy import tflite
            self._reference_files[fmt] = tflite.to_tflite(self.reference, fmt,
                                                          self.calibration_inputs())
        return self._reference_files[fmt]

    def model_for_latency(self):
        if self.latency_model is None:
            from epkd_tf.deploy.latency import LatencyModel
            self.latency_model = LatencyModel(self.latency_format, self.threads,
                                              runs=max(10, min(self.runs, 30)),
                                              seed=self.seed, cache_dir=self.latency_cache)
        return self.latency_model


def multiply_accumulates(model) -> int:
    """Multiply-accumulates of one forward pass on one example (FLOPs ≈ 2 × MACs): Dense
    (per position it is applied at), ConvND, DepthwiseConv2D and SeparableConv1D/2D, each
    as its channel rule counts it (``epkd_tf.graph.rules``). Element-wise layers, pooling
    and normalisation are left out."""
    from epkd_tf.graph.count import model_macs
    return model_macs(model)


class Measure(abc.ABC):
    """One budget measure; ``name`` is set by registration."""

    name = "unregistered"
    unit = ""
    #: Whether exact zeros (unstructured sparsity) lower it.
    lowered_by_sparsity = False
    #: Whether ``planner`` is exact (otherwise a model calibrated on the current model).
    exact = True

    @abc.abstractmethod
    def of(self, model, ctx: MeasureContext) -> float:
        """The model's cost in this measure."""

    @abc.abstractmethod
    def planner(self, graph, ctx: MeasureContext,
                current: Optional[float] = None) -> Callable[[np.ndarray], float]:
        """``cost(unit_keep)`` of ``graph.model``'s structured-pruned versions;
        ``current`` (its measured cost) calibrates measures that are modelled."""

    def lowered_by(self, pruner) -> bool:
        """Whether ``pruner``'s candidates can have a lower cost in this measure."""
        return bool(getattr(pruner, "structured", False)) or self.lowered_by_sparsity

    def why_not(self, pruner) -> str:
        return (f"{pruner.name} cannot lower {self.name}: its zeros are stored and computed "
                f"as dense weights (only --budget=params counts them)")

    def format(self, value: float) -> str:
        """``value`` with its unit, for log lines (e.g. ``42,791 params``)."""
        return f"{value:,.0f} {self.unit}".strip()

    def target(self, value: float) -> float:
        """A cost to aim a candidate at, as this measure counts (whole parameters)."""
        return float(value)

    def from_costs(self, costs, macs: float) -> Optional[float]:
        """The cost read off what every evaluation measures anyway (``costs``: a
        :class:`epkd_tf.deploy.tflite.Costs` of the model's float TFLite file; ``macs``);
        None when it must be measured on its own (:meth:`of`)."""
        return None

    def cost(self, model, ctx: MeasureContext, costs=None, macs: Optional[float] = None
             ) -> float:
        """The model's cost: read off ``costs``/``macs`` when they hold it, else measured."""
        known = None if costs is None else self.from_costs(costs, macs)
        return float(known) if known is not None else self.of(model, ctx)


def register_measure(name: str):
    def decorate(cls):
        cls.name = name
        return MEASURES.register(name, cls)
    return decorate


@register_measure("params")
class Params(Measure):
    """Nonzero parameters (the seed's definition)."""

    unit = "params"
    lowered_by_sparsity = True

    def of(self, model, ctx):
        from epkd_tf.graph import nonzero_params
        return float(nonzero_params(model))

    def planner(self, graph, ctx, current=None):
        from epkd_tf.graph import ParamCounter
        return ParamCounter(graph).count

    def target(self, value):
        return int(round(value))

    def from_costs(self, costs, macs):
        return float(costs.nonzero_params)


@register_measure("macs")
class Macs(Measure):
    """Multiply-accumulates of one example (dense: zeros are still multiplied)."""

    unit = "MACs"

    def of(self, model, ctx):
        return float(multiply_accumulates(model))

    def planner(self, graph, ctx, current=None):
        from epkd_tf.graph.count import macs_cost
        return macs_cost(graph)

    def from_costs(self, costs, macs):
        return None if macs is None else float(macs)


@register_measure("latency")
class Latency(Measure):
    """Median batch-1 LiteRT latency (ms) of the model's TFLite file, timed side by side
    with the run's teacher when the context has it (see MeasureContext)."""

    unit = "ms"
    exact = False

    def of(self, model, ctx):
        """Alone without a reference (or for the reference itself); else side by side
        with it, as the ratio of the two medians × the reference's latency."""
        from epkd_tf.deploy import tflite
        flatbuffer = tflite.to_tflite(model, ctx.latency_format, ctx.calibration_inputs())
        if ctx.reference is None or model is ctx.reference:
            return tflite.tflite_latency(flatbuffer, runs=ctx.runs, threads=ctx.threads,
                                         seed=ctx.seed)[0]
        reference = ctx.reference_file(ctx.latency_format)
        if self.name not in ctx.reference_costs:
            ctx.reference_costs[self.name] = tflite.tflite_latency(
                reference, runs=ctx.runs, threads=ctx.threads, seed=ctx.seed)[0]
        (mine, _), (theirs, _) = tflite.tflite_latency_side_by_side(
            [flatbuffer, reference], runs=ctx.runs, threads=ctx.threads, seed=ctx.seed)
        return ctx.reference_costs[self.name] * mine / theirs

    def planner(self, graph, ctx, current=None):
        from epkd_tf.deploy.latency import latency_cost
        return latency_cost(graph, ctx.model_for_latency(), current)

    def format(self, value):
        return f"{value:.4f} ms"


@register_measure("size")
class Size(Measure):
    """Bytes of the float32 TFLite file (zeros included: a plain file stores them)."""

    unit = "bytes"
    exact = False

    def of(self, model, ctx):
        from epkd_tf.deploy import tflite
        return float(len(tflite.to_tflite(model)))

    def planner(self, graph, ctx, current=None):
        # Four bytes per stored weight, plus the flatbuffer's own overhead (graph, tensor
        # metadata), calibrated on the current model's measured file.
        from epkd_tf.graph import ParamCounter
        from epkd_tf.graph.count import AffineCost
        dense = ParamCounter(graph, dense=True)
        full = 4.0 * dense.count_all()
        offset = (float(current) - full) if current is not None else 0.0
        return AffineCost(dense, 4.0, offset)

    def format(self, value):
        return f"{value / 1e6:.4f} MB"

    def from_costs(self, costs, macs):
        return costs.size_mb * 1e6


def make_measure(name: str) -> Measure:
    return MEASURES.get(name)()
