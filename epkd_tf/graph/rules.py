"""How each Keras layer class moves, consumes or produces channels.

The dependency analysis tracks, for every tensor, which *unit* (an output channel of a
Conv/Dense layer) sits at each position of its last axis (``-1`` marks a position that can
never be removed, e.g. an input image channel). A rule tells, for one layer class:

* ``propagate``: the output positions given the input positions;
* ``produces``: whether the layer creates new units (its output channels);
* ``mixes``: whether the layer reads across channels with weights (Dense, Conv), so that
  removing a unit means deleting the rows that read it — the place where "a unit is
  removed" is defined;
* ``slice_weights``: the layer's weights once some input positions / output units are gone;
* ``count_tables``: per-layer tables from which the nonzero parameter count of any pruned
  version follows by two dot products (see ``graph.count``);
* ``zero_inputs``: (mixing layers) the weights once some input positions are no longer read,
  which is what removing a unit means (``surgery.zero_groups``);
* ``macs``, ``scored_kernel``, ``set_width`` / ``adapt_config``: the layer's work per
  example, the kernel a magnitude criterion reads, and its config at a new width.

Everything epkd_tf knows about a layer class is in its rule: the analysis, counting,
surgery, cost and criterion code only calls these methods. Rules live in the ``RULES``
registry, keyed by layer class name; users add theirs with :func:`register_rule`. Only
layers with a rule are supported; anything else raises UnsupportedLayerError naming the
layer, so a model is never rebuilt silently wrong.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Union

import numpy as np

from epkd_tf.registry import Registry
from epkd_tf.errors import ApiError, UnsupportedLayerError  # noqa: F401


def unsupported(layer, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"Layer {layer.name!r} ({type(layer).__name__}) cannot be pruned: {why}.")


@dataclasses.dataclass
class CountTables:
    """Nonzero-parameter tables of one layer.

    count = in_keep · pair · out_keep + out_vec · out_keep + in_vec · in_keep + const
    where in_keep / out_keep are 0/1 vectors over the layer's input positions and output
    units. ``pair`` is None for layers whose weights are per channel; ``const`` counts
    weights that no pruning removes (a Normalization layer's sample count, a LayerNorm
    that only sees fixed channels).
    """

    pair: Optional[np.ndarray] = None
    out_vec: Optional[np.ndarray] = None
    in_vec: Optional[np.ndarray] = None
    const: int = 0


class Rule:
    """Base rule: a layer without weights that passes every channel through unchanged.

    A rule for a new layer class overrides what differs: ``propagate`` (and ``produces``
    / ``out_units`` for a layer that creates units), and for a layer with weights
    ``slice_weights`` and ``count_tables`` (plus ``zero_inputs``, ``macs`` and
    ``scored_kernel`` when it reads channels through weights, ``mixes = True``).
    """

    #: The layer creates new units (its output channels): Dense, Conv.
    produces = False
    #: The layer reads across channels with weights; removing a unit deletes its rows here.
    mixes = False
    #: The inputs' channels at the same position are one channel (Add): coupled.
    couples = False
    #: The config key that holds a producer's width ("units", "filters").
    width_key: Optional[str] = None

    def check(self, layer) -> None:
        """Raises UnsupportedLayerError when this layer's settings are not handled."""

    def variant(self, layer) -> "Rule":
        """The rule for this layer's settings when they change how it treats channels
        (a Conv2D with one group per input channel is a depthwise convolution); self."""
        return self

    def out_units(self, layer) -> int:
        """Number of units a producer creates."""
        raise NotImplementedError

    def propagate(self, layer, in_pos: List[np.ndarray], in_shapes, new_units) -> np.ndarray:
        """The unit id at each last-axis position of the output, given those of each input
        (``in_pos``, ``-1`` for a fixed position) and the inputs' shapes. A producer
        returns ``new_units(n)``, n fresh unit ids for its output channels."""
        return in_pos[0]

    def slice_weights(self, layer, weights, in_keep: List[np.ndarray], out_keep):
        """``weights`` (``layer.get_weights()``) of the pruned layer: ``in_keep`` is a
        boolean mask over each input's last-axis positions, ``out_keep`` over a
        producer's units (None for other layers)."""
        return weights

    def couples_inputs(self, layer, in_shapes) -> bool:
        """Whether the units at the same position of every input form one group (Add
        does; Concatenate only when it stacks on another axis than the channels)."""
        return self.couples

    def set_width(self, config: dict, width: int) -> dict:
        """A producer's config at ``width`` units (the key is ``width_key``)."""
        if self.width_key is None:
            return config
        return {**config, self.width_key: int(width)}

    def zero_inputs(self, layer, weights, in_keep: np.ndarray):
        """Mixing layers: ``weights`` changed so that the input positions not in
        ``in_keep`` are no longer read (the layer keeps its shape). This defines removing
        a unit: the pruned model computes what the original computes with these weights."""
        raise NotImplementedError(
            f"{type(self).__name__} reads channels through weights (mixes=True) but does "
            "not say how to stop reading one (zero_inputs)")

    def needs_fixed_inputs(self, layer) -> Optional[str]:
        """Why every channel entering the layer must be fixed, or None if they need not.

        The analysis checks it once the model outputs have fixed their channels (a Softmax
        or LayerNorm on the logits is fine; on a prunable layer it is not).
        """
        return None

    def fixes_inputs(self, layer) -> bool:
        """Whether every channel entering the layer is kept for good (a LayerNorm over the
        channels: removing one would change the statistics of the others). The units
        behind them become fixed; the rest of the model is still pruned."""
        return False

    def adapt_config(self, layer, config: dict, in_keep: List[np.ndarray]) -> dict:
        """The layer's config once the input positions not in ``in_keep`` are gone.

        Only layers whose config spells out a channel count (Reshape's target shape,
        Normalization's mean) override it; producers change theirs in ``set_width``.
        """
        return config

    def count_tables(self, layer, weights) -> CountTables:
        """Tables giving the nonzero parameters of the pruned layer for any input / unit
        keep masks (see :class:`CountTables`); ``weights`` may be all ones (dense sizes)."""
        return CountTables()

    def macs(self, layer, kept_in: int, kept_out: int) -> int:
        """Multiply-accumulates of one example through the layer when ``kept_in`` input
        positions and ``kept_out`` output units (producers; otherwise ``kept_in``) remain:
        the layers that dominate inference (Dense, convolutions) count; element-wise
        layers, pooling and normalisation count 0."""
        return 0

    def scored_kernel(self, layer):
        """The kernel whose last axis indexes the units a producer creates (what a
        magnitude criterion such as L1 reads), or None."""
        return None


def _positions(layer) -> int:
    """Output positions per example (spatial size; 1 for a Dense layer on vectors)."""
    return int(np.prod(layer.output_shape[1:-1], dtype=np.int64))


def _kernel_spatial(kernel) -> int:
    return int(np.prod(kernel.shape[:-2], dtype=np.int64))


def _channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise unsupported(layer, f"data_format={fmt!r}; only channels_last is supported")


class Passthrough(Rule):
    """Activations, dropout, pooling, padding: channel c in is channel c out."""

    def check(self, layer):
        _channels_last(layer)
        if layer.weights:
            raise unsupported(layer, "it has weights that no rule knows how to slice")


class ChannelMixingWithoutWeights(Rule):
    """Layers that mix channels without weights (Softmax over channels, ...).

    They are fine when every channel reaching them is fixed; otherwise removing a channel
    would change what they compute, so they are refused.
    """

    def needs_fixed_inputs(self, layer):
        return "it mixes prunable channels without weights"


class WeightedProducer(Rule):
    """Dense and ConvND (groups=1): consume input positions, produce new units."""

    produces = True
    mixes = True
    width_key = "units"

    def check(self, layer):
        _channels_last(layer)
        if getattr(layer, "groups", 1) != 1:
            raise unsupported(layer, f"grouped convolution (groups={layer.groups})")

    def out_units(self, layer):
        return int(layer.kernel.shape[-1])

    def propagate(self, layer, in_pos, in_shapes, new_units):
        return new_units(self.out_units(layer))

    def slice_weights(self, layer, weights, in_keep, out_keep):
        kernel = weights[0][..., in_keep[0], :][..., out_keep]
        rest = [w[out_keep] for w in weights[1:]]  # the bias
        return [kernel] + rest

    def zero_inputs(self, layer, weights, in_keep):
        weights = list(weights)
        kernel = weights[0].copy()                  # (..., inputs, units)
        kernel[..., ~in_keep, :] = 0.0
        return [kernel] + weights[1:]

    def macs(self, layer, kept_in, kept_out):
        # A grouped convolution's output reads only its group's inputs.
        return (_positions(layer) * _kernel_spatial(layer.kernel) * kept_in * kept_out
                // int(getattr(layer, "groups", 1) or 1))

    def scored_kernel(self, layer):
        return layer.kernel

    def count_tables(self, layer, weights):
        kernel = weights[0]
        pair = np.count_nonzero(kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]), axis=0)
        out_vec = (weights[1] != 0).astype(np.int64) if len(weights) > 1 else None
        return CountTables(pair=pair.astype(np.int64), out_vec=out_vec)


class ConvProducer(WeightedProducer):
    width_key = "filters"

    def variant(self, layer):
        groups = int(getattr(layer, "groups", 1) or 1)
        if groups > 1 and groups == int(layer.input_shape[-1]):
            return _GROUPED_DEPTHWISE
        return self


class GroupedDepthwise(Rule):
    """A ConvND with one group per input channel (ConvNeXt's depthwise convolution):
    output channel c*m+k reads input channel c alone, like DepthwiseConv2D. Its kernel is
    (..., 1, C*m); removing input channel c removes its m filters, and ``filters`` and
    ``groups`` follow."""

    def check(self, layer):
        _channels_last(layer)

    @staticmethod
    def _multiplier(layer) -> int:
        return int(layer.kernel.shape[-1]) // int(layer.groups)

    def propagate(self, layer, in_pos, in_shapes, new_units):
        return np.repeat(in_pos[0], self._multiplier(layer))

    def macs(self, layer, kept_in, kept_out):
        return (_positions(layer) * _kernel_spatial(layer.kernel) * self._multiplier(layer)
                * kept_in)

    def slice_weights(self, layer, weights, in_keep, out_keep):
        keep = np.repeat(in_keep[0], self._multiplier(layer))
        return [weights[0][..., keep]] + [w[keep] for w in weights[1:]]

    def adapt_config(self, layer, config, in_keep):
        kept = int(np.count_nonzero(in_keep[0]))
        return {**config, "groups": kept, "filters": kept * self._multiplier(layer)}

    def count_tables(self, layer, weights):
        channels, multiplier = int(layer.groups), self._multiplier(layer)
        per_channel = np.count_nonzero(weights[0].reshape(-1, channels, multiplier),
                                       axis=(0, 2)).astype(np.int64)
        for w in weights[1:]:
            per_channel = per_channel + np.count_nonzero(w.reshape(channels, -1), axis=1)
        return CountTables(in_vec=per_channel)


_GROUPED_DEPTHWISE = GroupedDepthwise()


class PerChannel(Rule):
    """BatchNormalization-like layers: every weight vector is indexed by channel."""

    def check(self, layer):
        axis = getattr(layer, "axis", -1)
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        rank = len(layer.input_shape)
        if [a % rank for a in axes] != [rank - 1]:
            raise unsupported(layer, f"normalises over axis {axis}, not the channel axis")

    def slice_weights(self, layer, weights, in_keep, out_keep):
        return [w[in_keep[0]] for w in weights]

    def count_tables(self, layer, weights):
        return CountTables(in_vec=sum((w != 0).astype(np.int64) for w in weights))


class Depthwise(Rule):
    """DepthwiseConv2D: output channel c*m+k comes from input channel c alone."""

    def check(self, layer):
        _channels_last(layer)

    def propagate(self, layer, in_pos, in_shapes, new_units):
        return np.repeat(in_pos[0], layer.depth_multiplier)

    def macs(self, layer, kept_in, kept_out):
        kernel = layer.depthwise_kernel                        # (kh, kw, C, m)
        return _positions(layer) * _kernel_spatial(kernel) * int(kernel.shape[-1]) * kept_in

    def slice_weights(self, layer, weights, in_keep, out_keep):
        keep = in_keep[0]
        kernel = weights[0][:, :, keep, :]
        rest = [w.reshape(len(keep), -1)[keep].reshape(-1) for w in weights[1:]]
        return [kernel] + rest

    def count_tables(self, layer, weights):
        per_channel = np.count_nonzero(weights[0], axis=(0, 1, 3)).astype(np.int64)
        for w in weights[1:]:
            per_channel = per_channel + np.count_nonzero(
                w.reshape(len(per_channel), -1), axis=1)
        return CountTables(in_vec=per_channel)


class Flatten(Rule):
    """Flatten of (…, H, W, C): channel c appears at every one of the H·W spatial positions."""

    def check(self, layer):
        _channels_last(layer)

    def propagate(self, layer, in_pos, in_shapes, new_units):
        spatial = in_shapes[0][1:-1]
        if any(d is None for d in spatial):
            raise unsupported(layer, "its input has an unknown spatial size")
        return np.tile(in_pos[0], int(np.prod(spatial, dtype=np.int64)))


class Elementwise(Rule):
    """Add / Multiply / ...: position i of every input is the same channel of the output.

    Coupling is done by the analysis (``couples = True``): the units at the same position of
    all inputs form one group and are removed together.
    """

    couples = True


class Concatenate(Rule):
    """Concatenate on the channel axis stacks the inputs' positions; on another axis it
    couples them like Add."""

    def propagate(self, layer, in_pos, in_shapes, new_units):
        rank = len(in_shapes[0])
        if layer.axis % rank == rank - 1:
            return np.concatenate(in_pos)
        return in_pos[0]

    def couples_inputs(self, layer, in_shapes) -> bool:
        rank = len(in_shapes[0])
        return layer.axis % rank != rank - 1


class Separable(Rule):
    """SeparableConv1D/2D: a depthwise conv (multiplier m) then a 1x1 conv producing units.

    The depthwise kernel [..., Cin, m] is indexed by input position; the pointwise kernel
    [..., Cin*m, Cout] reads depthwise channel c*m+k from input position c, so removing an
    input position removes m of its rows, and removing a unit removes one of its columns.
    """

    produces = True
    mixes = True
    width_key = "filters"

    def check(self, layer):
        _channels_last(layer)

    def out_units(self, layer):
        return int(layer.pointwise_kernel.shape[-1])

    def zero_inputs(self, layer, weights, in_keep):
        # A removed input channel's depthwise filters output zeros (there is no depthwise
        # bias), so the pointwise rows reading them read nothing.
        weights = list(weights)
        depthwise = weights[0].copy()               # (..., inputs, multiplier)
        depthwise[..., ~in_keep, :] = 0.0
        return [depthwise] + weights[1:]

    def propagate(self, layer, in_pos, in_shapes, new_units):
        return new_units(self.out_units(layer))

    def macs(self, layer, kept_in, kept_out):
        depthwise = layer.depthwise_kernel                     # (..., C, m)
        multiplier = int(depthwise.shape[-1])
        positions = _positions(layer)
        return (positions * _kernel_spatial(depthwise) * multiplier * kept_in
                + positions * kept_in * multiplier * kept_out)

    def scored_kernel(self, layer):
        # Its units are the pointwise kernel's outputs; the depthwise kernel's last axis is
        # the depth multiplier, not the units.
        return layer.pointwise_kernel

    def slice_weights(self, layer, weights, in_keep, out_keep):
        depthwise, pointwise = weights[0], weights[1]
        multiplier = depthwise.shape[-1]
        depthwise = depthwise[..., in_keep[0], :]
        pointwise = pointwise[..., np.repeat(in_keep[0], multiplier), :][..., out_keep]
        return [depthwise, pointwise] + [w[out_keep] for w in weights[2:]]

    def count_tables(self, layer, weights):
        depthwise, pointwise = weights[0], weights[1]
        cin, multiplier = depthwise.shape[-2], depthwise.shape[-1]
        in_vec = np.count_nonzero(depthwise.reshape(-1, cin, multiplier), axis=(0, 2))
        rows = pointwise.reshape(cin, multiplier, pointwise.shape[-1])
        pair = np.count_nonzero(rows, axis=1)
        out_vec = (weights[2] != 0).astype(np.int64) if len(weights) > 2 else None
        return CountTables(pair=pair.astype(np.int64), out_vec=out_vec,
                           in_vec=in_vec.astype(np.int64))


class Reshape(Rule):
    """Reshape that keeps the channel axis last and whole, e.g. Squeeze-Excitation's
    (C,) -> (1, 1, C): position c in is position c out. Any other reshape moves channels
    into spatial positions (or back) and is refused."""

    def propagate(self, layer, in_pos, in_shapes, new_units):
        out_last = tuple(layer.compute_output_shape(in_shapes[0]))[-1]
        if out_last != in_shapes[0][-1]:
            raise unsupported(layer, f"it changes the last axis from {in_shapes[0][-1]} to "
                              f"{out_last} channels (only reshapes that keep it are traced)")
        return in_pos[0]

    def adapt_config(self, layer, config, in_keep):
        target = list(config["target_shape"])
        if target and target[-1] != -1:
            target[-1] = int(np.count_nonzero(in_keep[0]))
        return {**config, "target_shape": tuple(target)}


def _channel_axis_in(layer, axis) -> bool:
    """Whether ``axis`` (an int, a list, or None for "all") includes the last axis."""
    rank = len(layer.input_shape)
    if axis is None:
        return True
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return any(int(a) % rank == rank - 1 for a in axes)


class LastAxisVectors(Rule):
    """Channel-wise layers whose weights broadcast along the last axis (PReLU's alpha,
    Normalization's mean and variance): weights whose last axis is the channel axis are
    sliced there; the others (a scalar sample count, an alpha shared over channels) stay.
    """

    def check(self, layer):
        _channels_last(layer)

    def channel_weights(self, layer, weights, channels: int) -> List[bool]:
        """Which of ``weights`` are indexed by channel on their last axis."""
        raise NotImplementedError

    def slice_weights(self, layer, weights, in_keep, out_keep):
        mask = self.channel_weights(layer, weights, len(in_keep[0]))
        return [w[..., in_keep[0]] if is_channel else w for w, is_channel in zip(weights, mask)]

    def count_tables(self, layer, weights):
        channels = int(layer.input_shape[-1])
        mask = self.channel_weights(layer, weights, channels)
        in_vec = np.zeros(channels, dtype=np.int64)
        const = 0
        for w, is_channel in zip(weights, mask):
            if is_channel:
                in_vec += np.count_nonzero(w.reshape(-1, channels), axis=0)
            else:
                const += int(np.count_nonzero(w))
        return CountTables(in_vec=in_vec, const=const)


class PReLURule(LastAxisVectors):
    """PReLU: alpha has the input's shape (1 on shared axes); per channel unless the
    channel axis is shared."""

    def channel_weights(self, layer, weights, channels):
        shared = layer.shared_axes or []
        rank = len(layer.input_shape)
        channel_shared = any(int(a) % rank == rank - 1 for a in shared)
        return [not channel_shared and w.ndim >= 1 and w.shape[-1] == channels
                for w in weights]


class NormalizationRule(LastAxisVectors):
    """Normalization (preprocessing): mean/variance over the kept axes, a scalar count."""

    def _keeps_channels(self, layer) -> bool:
        # ``axis``: the axes the layer keeps (a tuple, possibly negative; () for none).
        rank = len(layer.input_shape)
        return any(int(a) % rank == rank - 1 for a in layer.axis)

    def channel_weights(self, layer, weights, channels):
        keeps = self._keeps_channels(layer)
        return [keeps and w.ndim >= 1 and w.shape[-1] == channels for w in weights]

    def adapt_config(self, layer, config, in_keep):
        # A Normalization built with mean=/variance= stores them in its config, not weights.
        config = dict(config)
        if self._keeps_channels(layer):
            for key in ("mean", "variance"):
                value = config.get(key)
                if value is not None and np.ndim(value) >= 1 \
                        and np.shape(value)[-1] == len(in_keep[0]):
                    config[key] = np.asarray(value)[..., in_keep[0]].tolist()
        return config


class ChannelNorm(Rule):
    """LayerNormalization / UnitNormalization. Over the channel axis they mix channels
    (every output depends on the statistics of all of them), so the channels reaching
    them are fixed (ConvNeXt's residual stream: its expansions are still pruned); over
    other axes channels stay independent and the weights (shaped by the normalised axes)
    never need slicing."""

    def check(self, layer):
        _channels_last(layer)

    def fixes_inputs(self, layer):
        return _channel_axis_in(layer, getattr(layer, "axis", -1))

    def count_tables(self, layer, weights):
        return CountTables(const=int(sum(np.count_nonzero(w) for w in weights)))


class LayerScaleRule(PerChannel):
    """ConvNeXt's LayerScale: one gamma per channel, sliced like BatchNormalization's;
    its config spells out the channel count (``projection_dim``)."""

    def adapt_config(self, layer, config, in_keep):
        return {**config, "projection_dim": int(np.count_nonzero(in_keep[0]))}


_PASSTHROUGH = [
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Rescaling", "InputLayer",
]

#: The rule of every supported layer class, by class name.
RULES: Registry[Rule] = Registry("layer rule")

# Rules added with register_rule (users' layers), by name: the class the name stands for
# when it was registered with a class, None when it was registered by name. Built-in names
# stand for the tf_keras layer of that name.
_USER: Dict[str, Optional[type]] = {}

_BUILTIN: Dict[str, Rule] = {name: Passthrough() for name in _PASSTHROUGH}
_BUILTIN.update({
    "Dense": WeightedProducer(),
    "Conv1D": ConvProducer(),
    "Conv2D": ConvProducer(),
    "Conv3D": ConvProducer(),
    "BatchNormalization": PerChannel(),
    "DepthwiseConv2D": Depthwise(),
    "Flatten": Flatten(),
    "Add": Elementwise(), "Subtract": Elementwise(), "Multiply": Elementwise(),
    "Average": Elementwise(), "Maximum": Elementwise(), "Minimum": Elementwise(),
    "Concatenate": Concatenate(),
    "Softmax": ChannelMixingWithoutWeights(),
    "SeparableConv1D": Separable(),
    "SeparableConv2D": Separable(),
    "Reshape": Reshape(),
    "PReLU": PReLURule(),
    "Normalization": NormalizationRule(),
    "LayerNormalization": ChannelNorm(),
    "UnitNormalization": ChannelNorm(),
    # keras.applications' own layers, as converted by epkd_tf (models/keras3_layers.py).
    "LayerScale": LayerScaleRule(),
    "CustomScaleLayer": Elementwise(),        # inputs[0] + inputs[1] * scale, like Add
})
for _name, _rule in _BUILTIN.items():
    RULES.register(_name, _rule)

#: Named kinds of rule that ``register_rule`` accepts instead of a Rule instance.
RULE_KINDS: Dict[str, Callable[[], Rule]] = {
    # Channel c in is channel c out, no weights (activations, pooling, resampling).
    "channel_preserving": Passthrough,
    # Several inputs combined position by position (like Add): their channels are coupled.
    "elementwise_merge": Elementwise,
    # Mixes channels without weights (like Softmax): only allowed on fixed channels.
    "fixed_channels_only": ChannelMixingWithoutWeights,
    # Every weight is a vector indexed by channel (like BatchNormalization).
    "per_channel": PerChannel,
    # A Dense layer in all but name: kernel (inputs, units) + bias, config key "units".
    "dense": WeightedProducer,
    # A ConvND in all but name: kernel (..., inputs, filters) + bias, key "filters".
    "conv": ConvProducer,
}


def _layer_key(layer) -> str:
    """The registry name of a layer class or class name."""
    if isinstance(layer, str):
        if not layer.strip():
            raise ApiError("A layer class name must be a non-empty string.")
        return layer
    if isinstance(layer, type):
        return layer.__name__
    raise TypeError(f"Expected a layer class or its class name, got {layer!r} "
                    f"({type(layer).__name__}); pass type(layer) for a layer instance.")


def _as_rule(rule) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, type) and issubclass(rule, Rule):
        return rule()
    if isinstance(rule, str) and rule in RULE_KINDS:
        return RULE_KINDS[rule]()
    raise ApiError(f"A rule must be a Rule instance or one of {', '.join(RULE_KINDS)}; "
                   f"got {rule!r}.")


def register_rule(layer: Union[type, str], rule: Union[Rule, str]) -> Rule:
    """Declares how structured pruning treats a layer class; returns the rule.

    A name is registered once (call :func:`unregister_rule` first to replace a rule). The
    class must also be deserialisable by tf_keras for a pruned model to be saved and
    reloaded (``get_config`` and, outside the process that defined it,
    ``tf_keras.utils.register_keras_serializable``).

    Args:
      layer: the layer class (layers of exactly that class get the rule, not its
        subclasses) or its class name (any class of that name, or the tf_keras layer of
        that name if there is one).
      rule: a :class:`Rule` instance (or subclass), or one of ``RULE_KINDS``:
        ``"channel_preserving"`` for a layer without weights whose channel c out depends
        only on channel c in (an activation, a resampling), ``"elementwise_merge"``,
        ``"fixed_channels_only"``, ``"per_channel"``, ``"dense"``, ``"conv"``.

    Returns:
      The registered :class:`Rule` instance.

    Raises:
      ApiError: ``layer`` names no class, ``rule`` is neither a Rule nor a known kind, or
        the class already has a rule.

    Example::

        import tensorflow as tf
        import tf_keras
        import epkd_tf

        class Swish(tf_keras.layers.Layer):       # channel c out depends on channel c in
            def call(self, x):
                return x * tf.sigmoid(x)

        epkd_tf.register_rule(Swish, "channel_preserving")
        inputs = tf_keras.Input((8,))
        hidden = Swish()(tf_keras.layers.Dense(16)(inputs))
        model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(hidden))
        print(epkd_tf.analyze(model).num_groups)             # 16: Dense's units
        smaller = epkd_tf.prune(model, 0.5, criterion="l1_filter")
    """
    name = _layer_key(layer)
    value = _as_rule(rule)
    if name in RULES:
        raise ApiError(f"A rule for layer class {name!r} is already registered; call "
                       f"unregister_rule({name!r}) first to replace it.")
    RULES.register(name, value)
    _USER[name] = layer if isinstance(layer, type) else None
    return value


def unregister_rule(layer: Union[type, str]) -> None:
    """Removes the rule of ``layer`` (a class or class name); nothing if it has none.
    Built-in layers can be unregistered too (then they are refused like unknown ones)."""
    name = _layer_key(layer)
    RULES.unregister(name)
    _USER.pop(name, None)


def _registered_class(name: str) -> Optional[type]:
    """The class a registered name stands for, or None when any class of that name does."""
    if _USER.get(name) is not None:
        return _USER[name]
    if name in _KERAS3_APPLICATION_LAYERS and name not in _USER:
        from epkd_tf.models.keras3_layers import LAYER_CLASSES
        return LAYER_CLASSES[name]
    import tf_keras  # the caller has a tf_keras layer, so this is already loaded
    found = getattr(tf_keras.layers, name, None)
    return found if isinstance(found, type) and found.__name__ == name else None


# Built-in rules for epkd_tf's own tf_keras layers, not tf_keras': they hold for exactly
# those classes (a user's class of the same name is not taken for them).
_KERAS3_APPLICATION_LAYERS = ("LayerScale", "CustomScaleLayer")


def builtin_rule_names() -> List[str]:
    """Names of the rules epkd_tf ships (every one has a template in
    tests/graph/test_rules_table.py), sorted; without the rules users registered."""
    return sorted(name for name in RULES.names() if name not in _USER)


def find_rule(layer) -> Optional[Rule]:
    """The rule registered for exactly ``layer``'s class, or None (no checks of its
    settings). A subclass of a supported layer has no rule of its own: it may compute
    something else, so it is not taken for its parent."""
    name = type(layer).__name__
    if name not in RULES:
        return None
    expected = _registered_class(name)
    if expected is not None and type(layer) is not expected:
        return None
    return RULES.get(name).variant(layer)


_HOW_TO_REGISTER = ("declare it with epkd_tf.graph.register_rule({cls}, "
                    "'channel_preserving') if channel c out depends only on channel c in "
                    "and it has no weights, or give it a Rule (docs/layer_rules.md)")


# Layer classes that wrap arbitrary functions (tensor operators in a functional model
# become TFOpLambda layers).
_ARBITRARY_CODE = ("Lambda", "TFOpLambda", "SlicingOpLambda", "ClassMethod",
                   "InstanceMethod", "InstanceProperty")


def rule_for(layer) -> Rule:
    """The rule of ``layer``'s class, its settings checked; UnsupportedLayerError names
    the layer (and says how to register a rule) otherwise."""
    rule = find_rule(layer)
    if rule is None:
        cls = type(layer)
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            raise unsupported(layer, "it is a nested model; build the network flat "
                              "(one functional model) so its channels can be traced")
        how = _HOW_TO_REGISTER.format(cls=cls.__name__)
        if cls.__name__ in _ARBITRARY_CODE:
            # Any function hides behind these classes: one rule cannot fit all of them.
            how = ("a Lambda or TF-op layer can compute anything: write it as a layer class "
                   "of its own and register a rule for that (docs/layer_rules.md)")
        if cls.__name__ in RULES:
            raise unsupported(layer, f"its class {cls.__module__}.{cls.__qualname__} is not "
                              f"the {cls.__name__} that has a channel rule (a subclass or "
                              f"another class of that name may compute something else); "
                              f"{how}")
        raise unsupported(layer, f"epkd_tf has no channel rule for this layer class; {how} "
                          f"(supported: {', '.join(RULES.names())})")
    rule.check(layer)
    return rule
