"""What a pruning method is: something that turns a network into a smaller candidate.

Structured criteria only *score* groups of channels (see ``graph.analysis``); the shared
``make_candidate`` of ``StructuredPruner`` turns scores into a removal plan with the same
parameter budget for every criterion and performs the surgery. A criterion never sees the
budget and never rebuilds a model.

A pruner class is a frozen settings dataclass (``epkd_tf.settings``): its fields are its
own settings, each naming the flag that sets it, so adding a criterion is one small class
that owns its settings. Heavy modules (TensorFlow, the graph package) are imported when a
pruner runs, not when it is registered.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, Optional

import numpy as np

from epkd_tf.settings import Settings, default_of

if TYPE_CHECKING:  # pragma: no cover
    import tf_keras
    from epkd_tf.config import PruningConfig
    from epkd_tf.graph import ChannelGraph


def _setting_default(settings_class: str, name: str):
    """A dataclass field defaulting to the setting ``name`` of ``epkd_tf.config``'s
    ``settings_class``, read when an instance is made: the config module validates the
    registered pruners when it loads, so it cannot be imported while they register."""
    def default():
        from epkd_tf import config
        return default_of(getattr(config, settings_class), name)
    return dataclasses.field(default_factory=default)


@dataclasses.dataclass
class PruningContext:
    """What criteria may use besides the model: data, the shared settings and a cache.

    The defaults of ``seed``, ``batch_size`` and ``learning_rate`` are those of the
    settings they stand for (``--seed``, ``--batch_size``, ``--finetune_learning_rate``),
    read from :mod:`epkd_tf.config`."""

    data: Any                      # a loaded dataset (epkd_tf.data)
    config: "PruningConfig"        # layer floor, FLOPs weight (the plan's settings)
    seed: int = _setting_default("DataConfig", "seed")
    batch_size: int = _setting_default("DataConfig", "batch_size")
    #: Adam rate of any training a pruner does (poly_magnitude's fine-tune): the run's
    #: fine-tuning rate, ``--finetune_learning_rate``.
    learning_rate: float = _setting_default("DistillConfig", "learning_rate")
    cache: Dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ``clock(phase, pruner)`` → a context manager timing that phase (timings.csv); None:
    #: untimed. Phases: scoring, surgery, magnitude_finetune.
    clock: Optional[Callable[[str, str], ContextManager]] = None
    #: The budget's measure (epkd_tf.budget; None: nonzero parameters), how it measures
    #: (latency format, threads...), and the measured cost of the model being pruned
    #: (which calibrates modelled measures such as latency).
    measure: Any = None
    measure_context: Any = None
    current_cost: Optional[float] = None
    #: Prefix of the progress lines a long criterion or fine-tune logs (e.g. "Iteration
    #: 3"); None: it logs none.
    progress: Optional[str] = None
    #: Units of every producing layer of the original teacher (layer name -> units): what
    #: --layer_floor is a fraction of with --layer_floor_of=teacher.
    teacher_widths: Optional[Dict[str, int]] = None

    def floor_widths(self) -> Optional[Dict[str, int]]:
        """The widths the per-layer floor refers to (None: the current model's)."""
        return self.teacher_widths if self.config.layer_floor_of == "teacher" else None

    def cost_of(self, graph: "ChannelGraph"):
        """``cost(unit_keep)`` of ``graph.model``'s pruned versions in the budget's measure."""
        if self.measure is None:
            from epkd_tf.graph import ParamCounter
            return ParamCounter(graph).count
        return self.measure.planner(graph, self.measure_context, self.current_cost)

    def callbacks(self, what: str, epochs: int) -> list:
        """Keras callbacks of a training a pruner does: one progress line per epoch."""
        if self.progress is None:
            return []
        from epkd_tf.training import EpochLog
        return [EpochLog(f"{self.progress} {what}", epochs)]

    def phase(self, name: str, pruner: str) -> ContextManager:
        """Times ``name`` of ``pruner`` with the run's clock, if there is one."""
        return self.clock(name, pruner) if self.clock else contextlib.nullcontext()

    def sample(self, n: int):
        """A fixed, seeded subset of n training examples, shared by every criterion."""
        key = ("sample", n)
        if key not in self.cache:
            self.cache[key] = self.data.sample(min(n, self.data.spec.num_train), seed=self.seed)
        return self.cache[key]


@dataclasses.dataclass
class Candidate:
    """A pruned network and how it was obtained."""

    pruner: str
    model: "tf_keras.Model"
    graph: Optional["ChannelGraph"] = None   # the graph the scores refer to
    scores: Optional[np.ndarray] = None      # one score per group (structured criteria)
    structured: bool = True
    #: Training epochs spent making the candidate (a pruning fine-tune), for budgets.
    epochs: int = 0
    #: Its cost in the budget's measure as the plan predicted it (exact for parameters
    #: and MACs; the latency model's prediction for latency).
    predicted_cost: Optional[float] = None


class Pruner(Settings, abc.ABC):
    """A pruning method; ``name`` is set by ``register_pruner``. Subclasses are frozen
    dataclasses whose fields are the method's settings."""

    name = "unregistered"
    #: The criterion other criteria are compared with (Spearman) when it runs.
    reference = False
    #: Whether it removes whole units (and so lowers MACs, latency and file size), rather
    #: than zeroing weights.
    structured = False
    #: Whether it needs training data (to score or to fine-tune).
    needs_data = True

    @abc.abstractmethod
    def make_candidate(self, model: "tf_keras.Model", target: float,
                       ctx: PruningContext) -> Candidate:
        """Returns a new candidate whose cost in the budget's measure (``ctx.measure``;
        nonzero parameters by default) is ``target`` (within one unit); ``model`` itself
        is never changed."""


class StructuredPruner(Pruner):
    """Removes whole channels; subclasses implement only ``score``."""

    structured = True

    @abc.abstractmethod
    def score(self, graph: "ChannelGraph", ctx: PruningContext) -> np.ndarray:
        """Importance of every group of ``graph`` (higher = keep); shape (num_groups,)."""

    def make_candidate(self, model, target, ctx):
        from epkd_tf.graph import analyze, remove_groups
        from epkd_tf.pruning.plan import plan_removal
        with ctx.phase("scoring", self.name):
            graph = analyze(model)
            scores = np.asarray(self.score(graph, ctx), dtype=np.float64)
        if scores.shape != (graph.num_groups,):
            raise ValueError(f"Pruner {self.name!r} returned {scores.shape} scores for "
                             f"{graph.num_groups} groups.")
        with ctx.phase("surgery", self.name):
            plan = plan_removal(graph, scores, target, ctx.config.layer_floor,
                                flops_weight=ctx.config.flops_weight, cost=ctx.cost_of(graph),
                                channel_multiple=ctx.config.channel_multiple,
                                reference_widths=ctx.floor_widths(),
                                allocation=ctx.config.allocation)
            student = remove_groups(graph, plan.removed_groups)
        return Candidate(self.name, student, graph, scores, predicted_cost=plan.cost)


def producer_widths(model) -> Dict[str, int]:
    """Units of every layer of ``model`` that produces prunable units (name -> count)."""
    from epkd_tf.graph import analyze
    graph = analyze(model)
    return {info.name: len(info.units) for info in graph.layers if len(info.units)}


def unit_to_group_mean(graph: "ChannelGraph", unit_scores: np.ndarray) -> np.ndarray:
    """Group score = mean of its member units' scores (one unit per group in plain chains)."""
    return np.array([unit_scores[units].mean() for units in graph.group_units])


def normalise_per_block(graph: "ChannelGraph", scores: np.ndarray,
                        how: str = "l2") -> np.ndarray:
    """Divides each block's scores by their L2 norm (``l2``) or their mean (``mean``),
    making layers comparable; ``none`` leaves them."""
    out = np.array(scores, dtype=np.float64)
    if how == "none":
        return out
    for block in graph.blocks:
        values = out[block.groups]
        norm = np.linalg.norm(values) if how == "l2" else np.mean(np.abs(values))
        if norm > 0:
            out[block.groups] /= norm
    return out
