"""Surgery: rebuild a physically smaller functional model without the removed groups."""
from __future__ import annotations

import copy

import numpy as np

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf.graph.analysis import ChannelGraph, keep_of_positions


def remove_groups(graph: ChannelGraph, removed_groups) -> tf_keras.Model:
    """Returns a new model without ``removed_groups``, surviving weights copied.

    Layer names, classes, configs (except the width of pruned layers) and connections are
    those of ``graph.model``; kernels, biases and BatchNorm statistics of the surviving
    channels are copied. The new model computes exactly what the original computes when
    every removed channel is not read by its consumers (see ``zero_groups``).
    """
    model = graph.model
    unit_keep = graph.unit_keep(removed_groups)
    for info in graph.layers:
        if len(info.units) and not unit_keep[info.units].any():
            raise ValueError(f"Removing these groups would empty layer {info.name!r}; "
                             "keep at least one unit per layer.")
    config = copy.deepcopy(model.get_config())
    by_name = {entry["config"]["name"]: entry for entry in config["layers"]}
    for info in graph.layers:
        entry = by_name[info.name]
        if len(info.units):
            entry["config"] = info.rule.set_width(entry["config"],
                                                  int(unit_keep[info.units].sum()))
        in_keep = [keep_of_positions(p, unit_keep) for p in info.in_positions]
        if not all(k.all() for k in in_keep):
            # Layers that spell out their channel count (Reshape) follow their input.
            model_layer = model.get_layer(info.name)
            entry["config"] = info.rule.adapt_config(model_layer, entry["config"], in_keep)
    # Layer classes that are not tf_keras's own (user layers with a registered rule) by
    # name, so that they rebuild without also being registered as Keras serialisables.
    # Deserialised that way a layer is built from its "build_config" (its input shape in
    # the unpruned model), which pruning makes stale: the rebuilt model builds every layer
    # from its actual inputs instead.
    classes = {type(layer).__name__: type(layer) for layer in model.layers
               if not type(layer).__module__.startswith("tf_keras.")}
    for entry in config["layers"]:
        entry.pop("build_config", None)
    with tf_keras.utils.custom_object_scope(classes):
        pruned = model.__class__.from_config(config)
    for info in graph.layers:
        old = model.get_layer(info.name)
        weights = old.get_weights()
        if not weights:
            continue
        in_keep = [keep_of_positions(p, unit_keep) for p in info.in_positions]
        out_keep = unit_keep[info.units] if len(info.units) else None
        new_weights = info.rule.slice_weights(old, weights, in_keep, out_keep)
        pruned.get_layer(info.name).set_weights(new_weights)
    return pruned


def zero_groups(graph: ChannelGraph, removed_groups) -> tf_keras.Model:
    """Returns a copy of the model in which no consumer reads the removed groups.

    Every layer that reads channels through weights stops reading the removed ones (the
    rows of a Dense/Conv kernel are zeroed; each rule's ``zero_inputs`` says how); the
    model keeps its shape. It computes what ``remove_groups`` computes, which is the definition
    of removing a unit that the oracle criterion and the surgery tests rely on.
    """
    model = graph.model
    clone = tf_keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    unit_keep = graph.unit_keep(removed_groups)
    for info in graph.mixing_layers():
        in_keep = keep_of_positions(info.in_positions[0], unit_keep)
        if in_keep.all():
            continue
        layer = clone.get_layer(info.name)
        layer.set_weights(info.rule.zero_inputs(layer, layer.get_weights(), in_keep))
    return clone
