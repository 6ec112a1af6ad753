"""Every access to a private part of TensorFlow, tf_keras, TF-MOT, TFDS and Keras 3.

epkd_tf needs a few things their public APIs do not offer: the call graph of a functional
tf_keras model, the loaders' safe mode, which weights TF-MOT prunes, one TFLite converter
switch, and the module paths Keras files record. Each such access is a small function or
constant here, with what it reaches into and why the public API does not suffice, so that
a TensorFlow release that moves one of them is answered by changing this module alone
(``tests/test_compat.py`` checks each of them against the installed versions, and that
those are the versions this module was written for: :data:`WRITTEN_FOR`).

Nothing heavy is imported at module level (TensorFlow, tf_keras, TF-MOT, TFDS and Keras 3
are imported by the function that needs them), so importing this module stays instant.
Callers hold objects from those libraries (a model, a layer, a converter); the functions
only read or set what the library does not expose.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

# The releases this module was checked against (tests/test_compat.py): distribution name ->
# (lowest version, the release series it must belong to, or None for "or later").
WRITTEN_FOR: Dict[str, Tuple[str, Optional[str]]] = {
    "tensorflow": ("2.21.0", "2.21"),
    "tf_keras": ("2.21.0", "2.21"),
    "tensorflow-model-optimization": ("0.8.1", None),
}


def _version_tuple(text: str) -> Tuple[int, ...]:
    """The leading numbers of a version: "2.21.0" -> (2, 21, 0), "0.8.1rc1" -> (0, 8, 1)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def version_problems() -> List[str]:
    """One line per installed distribution of :data:`WRITTEN_FOR` that is missing or not
    the version this module was written for; empty when all match. Reads the installed
    package metadata only (nothing is imported)."""
    from importlib import metadata
    problems = []
    for name, (lowest, series) in WRITTEN_FOR.items():
        wanted = f"{series}.x" if series else f">= {lowest}"
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed; epkd_tf.compat was written for {wanted}")
            continue
        version = _version_tuple(installed)
        in_series = series is None or version[:2] == _version_tuple(series)
        if not in_series or version < _version_tuple(lowest):
            problems.append(f"{name} {installed} is installed; epkd_tf.compat was written for "
                            f"{wanted}: check each access in epkd_tf/compat.py against it "
                            f"(python -m pytest tests/test_compat.py) and update WRITTEN_FOR")
    return problems


# -- tf_keras: the call graph of a functional model --------------------------------------
# tf_keras has no public view of a functional model's graph: ``model.layers`` lists the
# layers but not how they are called, and ``get_config()`` describes calls by layer name,
# without the tensors. Channel tracing (epkd_tf.graph.analysis), layer-by-layer evaluation
# (epkd_tf.graph.executor) and the output check of a loaded model (epkd_tf.models.user)
# need the graph itself: the Node objects (tf_keras.src.engine.node.Node) that record each
# call, and the history each symbolic tensor carries back to its node.

def is_functional(model) -> bool:
    """Whether ``model`` is a graph network (a functional or Sequential tf_keras model),
    as opposed to a subclassed model whose ``call`` is arbitrary Python.

    Reads ``Model._is_graph_network``: an instance check cannot tell, since a subclass of
    ``tf_keras.Model`` may or may not be built from inputs and outputs, and the
    ``Functional`` class is not exported (:func:`functional_class`)."""
    return bool(getattr(model, "_is_graph_network", False))


def layer_nodes(model, layer) -> list:
    """The nodes (calls) of ``layer`` that belong to ``model``'s graph, in call order.

    Reads ``Layer._inbound_nodes`` (every call of the layer, in any model) and
    ``Functional._network_nodes`` (the keys ``"<layer name>_ib-<index>"`` of the calls
    that are part of this model). The public ``Layer.inbound_nodes`` returns the same
    list but is undocumented, and nothing public says which of them a model uses."""
    return [node for index, node in enumerate(layer._inbound_nodes)
            if f"{layer.name}_ib-{index}" in model._network_nodes]


def tensor_origin(tensor) -> Tuple[Any, int]:
    """(the layer that produced the symbolic tensor ``tensor``, the index of ``tensor``
    among that layer's outputs).

    Reads ``KerasTensor._keras_history`` (``KerasHistory(layer, node_index,
    tensor_index)``); tf_keras offers no public way back from a symbolic tensor to the
    layer that made it."""
    history = tensor._keras_history
    return history.layer, history.tensor_index


def node_layer(node):
    """The layer a node calls (``Node.layer``; ``Node`` is not exported)."""
    return node.layer


def node_is_input(node) -> bool:
    """Whether a node is the ``Input`` of a model (``Node.is_input``)."""
    return bool(node.is_input)


def node_inputs(node) -> list:
    """The symbolic tensors a node was called on, in argument order (``Node.keras_inputs``)."""
    return list(node.keras_inputs)


def node_outputs(node) -> list:
    """The symbolic tensors a node produced, flattened into a list (``Node.outputs``: a
    tensor or a structure of them)."""
    import tensorflow as tf
    return tf.nest.flatten(node.outputs)


def node_input_ids(node) -> List[str]:
    """Ids of the tensors a node reads, in argument order (``Node.flat_input_ids``): the
    keys under which a functional model passes values between layers."""
    return list(node.flat_input_ids)


def node_output_ids(node) -> List[str]:
    """Ids of the tensors a node produces (``Node.flat_output_ids``)."""
    return list(node.flat_output_ids)


def node_call_arguments(node, values: Dict[str, Any]) -> Tuple[tuple, dict]:
    """(args, kwargs) that call ``node``'s layer as the functional model does, with
    ``values[tensor id]`` (ids of :func:`node_input_ids`) in place of its symbolic inputs
    and every other argument as recorded (constants, ``training=...``, ...).

    Reads ``Node._flat_arguments`` (the call's arguments, flattened) and
    ``Node._keras_inputs_ids_and_indices`` (where the symbolic tensors sit in them), and
    packs them back like ``Node.map_arguments``, which cannot be used as it is: it pops
    values from per-id lists built for a whole model run and fails when one tensor is
    passed twice (``Add()([x, x])``)."""
    import tensorflow as tf
    flat = list(node._flat_arguments)
    for tensor_id, index in node._keras_inputs_ids_and_indices:
        flat[index] = values[tensor_id]
    args, kwargs = tf.nest.pack_sequence_as(
        (node.call_args, list(node.call_kwargs.values())), flat)
    return tuple(args), dict(zip(node.call_kwargs.keys(), kwargs))


def expects_training_arg(layer) -> bool:
    """Whether ``layer.call`` takes a ``training`` argument (``Layer._expects_training_arg``,
    which tf_keras derives from the call signature, ``**kwargs`` included, when the layer
    is made; the public API does not expose it and re-deriving it from ``inspect`` would
    miss tf_keras' own wrapping of ``call``)."""
    return bool(getattr(layer, "_expects_training_arg", False))


# -- tf_keras: loading model files safely ---------------------------------------------------
# epkd_tf checks a model file's stored configuration before Keras sees it (epkd_tf.models
# .safe_config) and loads it in Keras' safe mode (epkd_tf.models.user).

def safe_mode_scope():
    """A context manager in which tf_keras' legacy loaders (``.h5``, Keras SavedModel)
    refuse to deserialise Lambda layers (stored Python bytecode).

    ``tf_keras.models.load_model(..., safe_mode=True)`` applies safe mode to ``.keras``
    files only; the legacy loaders read the flag of
    ``tf_keras.src.saving.serialization_lib.SafeModeScope``, which is not exported."""
    from tf_keras.src.saving import serialization_lib
    return serialization_lib.SafeModeScope(True)


def keras_metadata_configs(data: bytes) -> List[str]:
    """The JSON metadata of every object a Keras SavedModel's ``keras_metadata.pb``
    (``data``, its bytes) records: the layer and model configurations tf_keras rebuilds
    the model from, to be checked before it does.

    Parses the ``SavedMetadata`` protocol buffer of ``tf_keras.protobuf.saved_metadata_pb2``,
    which tf_keras does not export; the public loader rebuilds the model straight away."""
    return [metadata for _, metadata in keras_metadata_nodes(data)]


def keras_metadata_nodes(data: bytes) -> List[Tuple[str, str]]:
    """``(node_path, JSON metadata)`` of every object a Keras SavedModel's
    ``keras_metadata.pb`` (``data``) records; the root object (the model) is ``"root"``.
    Same protocol buffer as :func:`keras_metadata_configs`."""
    from tf_keras.protobuf import saved_metadata_pb2
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString(data)
    return [(node.node_path, node.metadata) for node in metadata.nodes]


#: TF-op layer classes (``tf.math.multiply(x, 2)`` and ``x[...]`` on a symbolic tensor
#: become one); :func:`tf_op_layer_class` gives the class.
TF_OP_LAYER_CLASSES: FrozenSet[str] = frozenset({"TFOpLambda", "SlicingOpLambda"})


def tf_op_layer_class(name: str) -> type:
    """The tf_keras class of a TF-op layer called ``name`` (one of
    :data:`TF_OP_LAYER_CLASSES`), whose instances a loaded model must be exactly.

    They live in ``tf_keras.src.layers.core.tf_op_layer``; tf_keras does not export them
    (they are made by the functional API, never by users)."""
    if name not in TF_OP_LAYER_CLASSES:
        raise KeyError(f"{name!r} is not a TF-op layer class ({sorted(TF_OP_LAYER_CLASSES)})")
    from tf_keras.src.layers.core import tf_op_layer
    return getattr(tf_op_layer, name)


def functional_class() -> type:
    """The class of a functional tf_keras model (``tf_keras.Model(inputs, outputs)``
    returns an instance of it): ``tf_keras.src.engine.functional.Functional``, which
    tf_keras does not export."""
    from tf_keras.src.engine import functional
    return functional.Functional


#: Layers ``tf_keras.applications`` defines in its own (private) modules: class name ->
#: the module that defines it, which a loaded layer of that name must come from.
TF_KERAS_APPLICATION_LAYERS: Dict[str, str] = {
    "CustomScaleLayer": "tf_keras.src.applications.inception_resnet_v2",
    "LayerScale": "tf_keras.src.applications.convnext",
    "StochasticDepth": "tf_keras.src.applications.convnext",
}


def application_layer_class(name: str) -> Optional[type]:
    """The ``tf_keras.applications`` layer class called ``name`` (a key of
    :data:`TF_KERAS_APPLICATION_LAYERS`), or None if its module no longer defines it.
    Imported from the private module that defines it: ``tf_keras.applications`` exports
    only the model functions."""
    return getattr(importlib.import_module(TF_KERAS_APPLICATION_LAYERS[name]), name, None)


#: (module, class) pairs outside Keras that tf_keras' own model files record: the
#: ``Constant`` initializer ``tf_keras.applications.EfficientNetV2`` takes from
#: TensorFlow (``tf.constant_initializer``) is serialised under TensorFlow's private
#: module path.
TF_RECORDED_CLASSES: FrozenSet[Tuple[str, str]] = frozenset({
    ("tensorflow.python.ops.init_ops_v2", "Constant")})


# -- Keras 3: what its .keras files record ------------------------------------------------
# A Keras 3 ``.keras`` file names the module of every object; for Keras' own layers that is
# ``keras.layers``, but a few objects are recorded under Keras 3's private ``keras.src``
# modules. epkd_tf.models.keras3 reads and writes such files without Keras deserialising
# anything, so it must know those paths.

#: Layers of ``keras.applications`` (Keras 3) defined in its private modules: class
#: name -> the module a .keras file records for it (and that defines it).
KERAS3_APPLICATION_LAYERS: Dict[str, str] = {
    "LayerScale": "keras.src.applications.convnext",
    "CustomScaleLayer": "keras.src.applications.inception_resnet_v2",
}

#: The module a Keras 3 file records for a tensor operator of a functional model
#: (``x + y`` is stored as the operation ``Add`` of this module, not as a layer).
KERAS3_OPS_MODULE = "keras.src.ops.numpy"

#: The modules a Keras 3 file may record for its own model classes.
KERAS3_MODEL_MODULES: Dict[str, Tuple[str, ...]] = {
    "Functional": ("keras.src.models.functional", "keras.models", "keras"),
    "Sequential": ("keras.src.models.sequential", "keras.models", "keras"),
}


def keras3_application_layer_class(name: str) -> type:
    """Keras 3's own class of the application layer ``name`` (a key of
    :data:`KERAS3_APPLICATION_LAYERS`), to build a Keras 3 model that holds one; Keras 3
    exports only the application model functions, not these layers."""
    return getattr(importlib.import_module(KERAS3_APPLICATION_LAYERS[name]), name)


# -- TF-MOT: which weights magnitude pruning prunes ----------------------------------------

def _prune_registry():
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
    return prune_registry.PruneRegistry


def tfmot_supports(layer) -> bool:
    """Whether ``tfmot.sparsity.keras.prune_low_magnitude`` can wrap ``layer`` (a built-in
    layer it knows, such as Dense or Conv2D).

    ``PruneRegistry.supports`` of ``tensorflow_model_optimization.python.core.sparsity
    .keras.prune_registry``: TF-MOT's public API only raises when it is given a layer it
    does not support, and epkd_tf wraps the supported layers alone (a model's Rescaling or
    LayerScale holds nothing to prune)."""
    return bool(_prune_registry().supports(layer))


def tfmot_prunable_weights(layer) -> list:
    """The weights of ``layer`` (a layer :func:`tfmot_supports`) that TF-MOT prunes (the
    kernel of Dense and Conv layers; biases are left whole), as variables of ``layer``.

    Reads the attribute names TF-MOT's ``PruneRegistry`` prunes for the layer's class
    (``_weight_names``; the public API exposes them only on a wrapped, built copy, and
    ``make_prunable`` would modify the layer): for a recurrent layer (LSTM, GRU,
    SimpleRNN, RNN) its cells' kernels and recurrent kernels
    (``_RNN_CELLS_WEIGHTS_MAP``), for MultiHeadAttention its projections' kernels (dotted
    names), for a ``PrunableLayer`` what it says.

    Raises:
        ValueError: naming the layer, where TF-MOT cannot say (a recurrent layer whose
            cell it does not know).
    """
    from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
    registry = _prune_registry()
    if isinstance(layer, prunable_layer.PrunableLayer):
        return list(layer.get_prunable_weights())
    if registry._is_rnn_layer(layer):
        weights = []
        for cell in registry._get_rnn_cells(layer):
            names = registry._RNN_CELLS_WEIGHTS_MAP.get(cell.__class__)
            if names is not None:
                weights += [getattr(cell, name) for name in names]
            elif isinstance(cell, prunable_layer.PrunableLayer):
                weights += list(cell.get_prunable_weights())
            else:
                raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}): TF-MOT "
                                 f"cannot prune its cell {type(cell).__name__}.")
        return weights

    def attribute(name):                     # MultiHeadAttention: "_query_dense.kernel"
        owner = layer
        for part in name.split("."):
            owner = getattr(owner, part)
        return owner
    return [attribute(name) for name in registry._weight_names(layer)]


# -- TensorFlow Lite ------------------------------------------------------------------------

_PER_CHANNEL_DENSE = "_experimental_disable_per_channel_quantization_for_dense_layers"


_PER_CHANNEL = "_experimental_disable_per_channel"


def set_per_tensor_quantization(converter, per_tensor: bool) -> None:
    """Makes full-integer conversion by ``converter`` quantise every convolution's weights
    per tensor (``per_tensor``) instead of per output channel, TFLite's default.

    Sets the converter's ``_experimental_disable_per_channel``: the converter has no public
    switch for it (TF 2.21). Raises RuntimeError if the converter no longer has that
    attribute, rather than setting one it would ignore."""
    if not hasattr(converter, _PER_CHANNEL):
        raise RuntimeError(f"{type(converter).__name__} has no {_PER_CHANNEL} in this "
                           "TensorFlow: update epkd_tf/compat.py")
    setattr(converter, _PER_CHANNEL, bool(per_tensor))


def set_dense_per_channel_quantization(converter, per_channel: bool) -> None:
    """Makes full-integer conversion by ``converter`` (a ``tf.lite.TFLiteConverter``)
    quantise Dense weights per output unit (``per_channel``) or per tensor.

    Sets the converter's ``_experimental_disable_per_channel_quantization_for_dense_layers``:
    the converter has no public switch for it (TF 2.21). Raises RuntimeError if the
    converter no longer has that attribute, rather than setting one it would ignore."""
    if not hasattr(converter, _PER_CHANNEL_DENSE):
        raise RuntimeError(f"{type(converter).__name__} has no {_PER_CHANNEL_DENSE} in this "
                           "TensorFlow: update epkd_tf/compat.py")
    setattr(converter, _PER_CHANNEL_DENSE, not per_channel)


# -- tf.distribute --------------------------------------------------------------------------

def in_multi_worker_mode(strategy) -> bool:
    """Whether ``strategy`` spans several workers of a cluster (a MultiWorkerMirrored or
    parameter-server strategy configured by TF_CONFIG), as opposed to one process.

    Calls ``strategy.extended._in_multi_worker_mode()``; strategies without it are one
    process. The public ``cluster_resolver`` exists for single-worker strategies too, and
    ``extended.should_checkpoint`` answers whether to write, not whether there is a
    cluster, and by a rule that also elects evaluators."""
    method = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(method()) if method is not None else False


# -- TensorFlow Datasets --------------------------------------------------------------------

def tfds_feature_classes() -> FrozenSet[str]:
    """The ``pythonClassName`` of every feature class of TFDS's own (its module lies in
    ``tensorflow_datasets.core.features``: ``...image_feature.Image``...) that TFDS has
    registered on import: the names it restores without importing anything. TFDS keeps
    them in ``FeatureConnector._registered_features``, which it does not export; a
    class some other module registered in this process is left out."""
    import tensorflow_datasets as tfds
    return frozenset(name for name in tfds.features.FeatureConnector._registered_features
                     if name.startswith("tensorflow_datasets.core.features."))


def tfds_default_data_dir() -> str:
    """TFDS's default data directory (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``),
    user directory expanded.

    ``tensorflow_datasets.core.constants.DATA_DIR``: TFDS resolves it when ``data_dir``
    is not given, but does not export it; epkd_tf names the directory in messages and
    checks it before TFDS writes there."""
    import os
    import tensorflow_datasets as tfds
    return os.path.expanduser(str(tfds.core.constants.DATA_DIR))


__all__ = [
    "WRITTEN_FOR", "version_problems", "is_functional", "layer_nodes", "tensor_origin",
    "node_layer", "node_is_input", "node_inputs", "node_outputs", "node_input_ids",
    "node_output_ids", "node_call_arguments", "expects_training_arg", "safe_mode_scope",
    "keras_metadata_configs", "keras_metadata_nodes", "TF_OP_LAYER_CLASSES", "tf_op_layer_class",
    "functional_class", "TF_KERAS_APPLICATION_LAYERS", "application_layer_class",
    "TF_RECORDED_CLASSES", "KERAS3_APPLICATION_LAYERS", "KERAS3_OPS_MODULE",
    "KERAS3_MODEL_MODULES", "keras3_application_layer_class", "tfmot_supports",
    "tfmot_prunable_weights", "set_dense_per_channel_quantization",
    "in_multi_worker_mode", "tfds_default_data_dir", "tfds_feature_classes"
]


def set_op_determinism(enabled: bool) -> None:
    """Turns TensorFlow's op determinism on or off for the process: the public API
    (``tf.config.experimental.enable_op_determinism``) can only turn it on, and a process
    may hold it from an earlier run (tests, notebooks)."""
    from tensorflow.python.framework import config as tf_config
    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (see :func:`set_op_determinism`)."""
    from tensorflow.python.framework import config as tf_config
    return tf_config.is_op_determinism_enabled()
