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
  version follows by two dot products (see ``graph.count``).

Only layers with a rule are supported; anything else raises UnsupportedLayerError naming
the layer, so a model is never rebuilt silently wrong.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np


class UnsupportedLayerError(ValueError):
    """A layer cannot be analysed or pruned; the message names the layer and its class."""


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
    """Base rule: a layer without weights that passes every channel through unchanged."""

    produces = False
    mixes = False

    def check(self, layer) -> None:
        """Raises UnsupportedLayerError when this layer's settings are not handled."""

    def out_units(self, layer) -> int:
        """Number of units a producer creates."""
        raise NotImplementedError

    def propagate(self, layer, in_pos: List[np.ndarray], in_shapes, new_units) -> np.ndarray:
        return in_pos[0]

    def slice_weights(self, layer, weights, in_keep: List[np.ndarray], out_keep):
        return weights

    def set_width(self, config: dict, width: int) -> dict:
        return config

    def needs_fixed_inputs(self, layer) -> Optional[str]:
        """Why every channel entering the layer must be fixed, or None if they need not.

        The analysis checks it once the model outputs have fixed their channels (a Softmax
        or LayerNorm on the logits is fine; on a prunable layer it is not).
        """
        return None

    def adapt_config(self, layer, config: dict, in_keep: List[np.ndarray]) -> dict:
        """The layer's config once the input positions not in ``in_keep`` are gone.

        Only layers whose config spells out a channel count (Reshape's target shape,
        Normalization's mean) override it; producers change theirs in ``set_width``.
        """
        return config

    def count_tables(self, layer, weights) -> CountTables:
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

    def set_width(self, config, width):
        return {**config, self.width_key: int(width)}

    def macs(self, layer, kept_in, kept_out):
        return _positions(layer) * _kernel_spatial(layer.kernel) * kept_in * kept_out

    def scored_kernel(self, layer):
        return layer.kernel

    def count_tables(self, layer, weights):
        kernel = weights[0]
        pair = np.count_nonzero(kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]), axis=0)
        out_vec = (weights[1] != 0).astype(np.int64) if len(weights) > 1 else None
        return CountTables(pair=pair.astype(np.int64), out_vec=out_vec)


class ConvProducer(WeightedProducer):
    width_key = "filters"


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

    def check(self, layer):
        _channels_last(layer)

    def out_units(self, layer):
        return int(layer.pointwise_kernel.shape[-1])

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

    def set_width(self, config, width):
        return {**config, "filters": int(width)}

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
        rank = len(layer.input_shape)
        keep = getattr(layer, "_keep_axis", None) or []
        return any(int(a) % rank == rank - 1 for a in keep)

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
    (every output depends on the statistics of all of them), so they are allowed only
    where every channel reaching them is fixed; over other axes channels stay independent
    and the weights (shaped by the normalised axes) never need slicing."""

    def check(self, layer):
        _channels_last(layer)

    def needs_fixed_inputs(self, layer):
        if _channel_axis_in(layer, getattr(layer, "axis", -1)):
            return ("it normalises across prunable channels (removing one would change the "
                    "statistics of the others)")
        return None

    def count_tables(self, layer, weights):
        return CountTables(const=int(sum(np.count_nonzero(w) for w in weights)))


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

RULES: Dict[str, Rule] = {name: Passthrough() for name in _PASSTHROUGH}
RULES.update({
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
})


def rule_for(layer) -> Rule:
    """The rule of ``layer``'s class; UnsupportedLayerError names the layer otherwise."""
    rule = RULES.get(type(layer).__name__)
    if rule is None:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            raise unsupported(layer, "it is a nested model; build the network flat "
                              "(one functional model) so its channels can be traced")
        raise unsupported(layer, "epkd_tf has no channel rule for this layer class "
                          f"(supported: {', '.join(sorted(RULES))})")
    rule.check(layer)
    return rule
