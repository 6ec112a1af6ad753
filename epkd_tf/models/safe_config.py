"""Whether a stored model configuration is safe to deserialise.

Keras rebuilds a saved model from the JSON configuration the file stores, and several
entries of that JSON make it run or import code while it does:

* a ``Lambda`` layer carries marshalled Python bytecode (``.h5``, SavedModel);
* a TF-op layer (``TFOpLambda``, ``SlicingOpLambda``) names any TensorFlow function, which
  Keras calls with the arguments the file stores while it rebuilds the graph (constant
  arguments run it at once: ``tf.io.write_file``);
* a ``module`` field names a Python module that Keras imports to find the class
  (``"module": "this"``, or a ``helpers.py`` that sits beside the file);
* a ``registered_name`` or ``class_name`` that is not a Keras built-in is a custom object;
  from a SavedModel Keras revives it from the traced TensorFlow functions the file holds,
  which run whatever ops they contain when the model is called.

:func:`check_config` walks a stored configuration (``config.json`` of a ``.keras`` file,
the ``model_config`` of an ``.h5`` file, each node of a SavedModel's
``keras_metadata.pb``) **before Keras sees it** and raises :class:`UnsafeConfigError` for
anything outside an allow-list: the built-in tf_keras layers that epkd_tf's zoo, its graph
rules and ``tf_keras.applications`` use (and other plain built-in layers), built-in
initializers, regularizers, constraints, activations and metrics, modules of Keras itself,
TF-op layers only for the few pure tensor operations ``tf_keras.applications`` models
record (``x + y``, ``tf.math.multiply``...), and epkd_tf's own ``LayerScale``,
``CustomScaleLayer`` and ``hard_silu`` (:mod:`epkd_tf.models.keras3_layers`, in converted
Keras 3 models) recorded exactly as tf_keras records them. :func:`check_model` then checks
the loaded model: every layer must be an instance of exactly the built-in class its name
says, so a layer that Keras revived from a SavedModel's traced functions is refused before
it is ever called.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional
from epkd_tf import compat
from epkd_tf.errors import UnsafeConfigError  # noqa: F401

# Built-in tf_keras layers a model file may hold: every layer epkd_tf/graph/rules.py
# understands (named once, there), plus the zoo's and tf_keras.applications' other building
# blocks and other plain built-ins below (recurrent layers are loaded so that structured
# pruning can name them when it refuses them). Left out on purpose: Lambda (stored code),
# TF-op layers (checked apart, below), RNN/cell containers of arbitrary cells, lookup and
# text layers (they read vocabulary files named in the config), DenseFeatures
# (feature-column functions).
_BEYOND_RULES = frozenset({
    "EinsumDense", "Permute", "RepeatVector", "Identity", "Masking",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D",
    "LocallyConnected1D", "LocallyConnected2D", "GroupNormalization", "Resizing",
    "CenterCrop", "RandomFlip", "RandomCrop", "RandomRotation", "RandomTranslation",
    "RandomZoom", "RandomContrast", "RandomBrightness", "RandomHeight", "RandomWidth",
    "Dot", "Attention", "AdditiveAttention", "MultiHeadAttention", "Embedding",
    "LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
    "Bidirectional", "TimeDistributed",
})


def _builtin_layers() -> frozenset:
    from epkd_tf.graph.rules import builtin_rule_names
    return frozenset(builtin_rule_names()) | _BEYOND_RULES


LAYERS = _builtin_layers()

# Model containers: a functional model, a Sequential one (nested in ConvNeXt), Model.
MODELS = frozenset({"Functional", "Sequential", "Model"})

# Layers tf_keras.applications defines in its own modules (their code is tf_keras'):
# class name -> the module the loaded layer's class must come from.
APPLICATION_LAYERS = compat.TF_KERAS_APPLICATION_LAYERS

# epkd_tf's own tf_keras equivalents of Keras 3 layers and activations
# (epkd_tf.models.keras3_layers: a converted keras.applications model holds them). tf_keras
# records them as the module that defines them and the name epkd_tf registers them under;
# it resolves that registered name from tf_keras' custom objects, where epkd_tf put its
# own objects, before it would import any module. Allowed only as exactly these entries,
# and check_model then requires the loaded object to be epkd_tf's own.
EPKD_MODULE = "epkd_tf.models.keras3_layers"
EPKD_LAYERS = frozenset({"LayerScale", "CustomScaleLayer"})
EPKD_ACTIVATIONS = frozenset({"hard_silu"})

TF_OP_LAYERS = compat.TF_OP_LAYER_CLASSES

# TensorFlow functions a TF-op layer may call: pure tensor arithmetic, what the Keras
# functional API records for `x + y`, `x * y`, `x[...]` and the like in
# tf_keras.applications models (MobileNetV3, ConvNeXt, RegNet). Nothing that reads or
# writes files, prints, or calls Python.
TF_OP_FUNCTIONS = frozenset({
    "__operators__.add", "__operators__.getitem", "math.add", "math.subtract",
    "math.multiply", "math.truediv", "math.divide", "math.negative", "math.maximum",
    "math.minimum", "math.reduce_mean", "math.reduce_sum", "math.reduce_max",
    "math.sigmoid", "math.tanh", "nn.relu", "nn.relu6", "nn.sigmoid", "nn.softmax",
    "compat.v1.transpose", "reshape", "concat", "identity",
})

INITIALIZERS = frozenset({
    "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal",
    "VarianceScaling", "Orthogonal", "Identity", "GlorotNormal", "GlorotUniform",
    "HeNormal", "HeUniform", "LecunNormal", "LecunUniform",
})
REGULARIZERS = frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"})
CONSTRAINTS = frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "RadialConstraint", "UnitNorm"})
# A compiled model's SavedModel records its metrics (never used: models load uncompiled).
METRICS = frozenset({
    "Mean", "Sum", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
    "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy", "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy", "MeanSquaredError", "MeanAbsoluteError", "AUC",
    "Precision", "Recall",
})
# How the stored JSON encodes plain values (tuples, shapes, input specs, dtype policies).
VALUES = frozenset({"__tuple__", "TensorShape", "TypeSpec", "InputSpec", "Policy",
                    "DTypePolicy"})

ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid",
    "softmax", "log_softmax", "softplus", "softsign", "tanh", "exponential", "swish",
    "silu", "mish",
})

ALLOWED_CLASSES = (LAYERS | MODELS | frozenset(APPLICATION_LAYERS) | INITIALIZERS
                   | REGULARIZERS | CONSTRAINTS | METRICS | VALUES)

# (module, class) pairs outside Keras that Keras' own files record: EfficientNetV2's
# Constant initializer is TensorFlow's.
FOREIGN_CLASSES = compat.TF_RECORDED_CLASSES

# Keys whose content Keras never deserialises when a model is loaded uncompiled (as
# epkd_tf loads every model): only their module fields are checked.
UNCOMPILED = frozenset({"compile_config", "training_config"})


def keras_module(module: Any) -> bool:
    """Whether ``module`` (a config's ``module`` field) is Keras' own: ``keras``,
    ``tf_keras`` or a submodule of either. Keras imports any other module it is given."""
    return isinstance(module, str) and (module in ("keras", "tf_keras")
                                        or module.startswith(("keras.", "tf_keras.")))


def check_config(config: Any) -> None:
    """Raises :class:`UnsafeConfigError` for the first entry of a stored model
    configuration (parsed JSON) that is not on the allow-list; see the module docstring."""
    _walk(config, layer=None, classes=True)


def _layer_name(node: dict, default: Optional[str]) -> Optional[str]:
    inner = node.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    name = name if name is not None else node.get("name")
    return default if name is None else str(name)


def _walk(node: Any, layer: Optional[str], classes: bool) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, layer, classes)
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    if "class_name" in node and not isinstance(class_name, str):
        raise UnsafeConfigError(f"a malformed class name {class_name!r}",
                                "class names are strings")
    if class_name is not None:      # a layer, model or metric has a name; others do not
        layer = _layer_name(node, layer)
    where = f" (in {layer!r})" if layer else ""
    _check_module(node, class_name, where)
    if classes and "class_name" in node:
        _check_class(node, class_name, layer, where)
    for key, value in node.items():
        if key in ("activation", "recurrent_activation") and isinstance(value, str) \
                and classes and value not in ACTIVATIONS | EPKD_ACTIVATIONS:
            raise UnsafeConfigError(f"an unknown activation {value!r}{where}",
                                    "only Keras' built-in activations are loaded")
        _walk(value, layer, classes and key not in UNCOMPILED)


def _check_module(node: dict, class_name: Any, where: str) -> None:
    module = node.get("module")
    if _epkd_object(node):
        return
    if module is not None and not keras_module(module) \
            and (module, class_name) not in FOREIGN_CLASSES:
        raise UnsafeConfigError(
            f"an object of module {module!r}{where}",
            f"loading it would import {module!r}; only Keras' own modules are loaded")
    registered = node.get("registered_name")
    # Built-ins record no registered name or their class name; tf_keras.applications'
    # own layers are registered as "Custom>Name".
    allowed = [None, class_name]
    if class_name == "function":           # a function is registered under its name
        allowed.append(node.get("config"))
    if class_name in APPLICATION_LAYERS:
        allowed.append(f"Custom>{class_name}")
    if registered not in allowed:
        raise UnsafeConfigError(f"a custom object {registered!r}{where}",
                                "only Keras' built-in objects are loaded")


def _epkd_object(node: dict) -> bool:
    """Whether ``node`` is exactly how tf_keras records one of epkd_tf's own objects: a
    layer class of EPKD_LAYERS from EPKD_MODULE under its own registered name, or an
    activation of EPKD_ACTIVATIONS (a registered function: module ``builtins``)."""
    class_name, module, registered = (node.get("class_name"), node.get("module"),
                                      node.get("registered_name"))
    if class_name in EPKD_LAYERS:
        return module == EPKD_MODULE and registered == class_name
    return (class_name == "function" and module == "builtins"
            and registered == "function" and node.get("config") in EPKD_ACTIVATIONS)


def _check_class(node: dict, class_name: Any, layer: Optional[str], where: str) -> None:
    if class_name == "Lambda":
        raise UnsafeConfigError(f"a Lambda layer {layer!r}",
                                "its Python code would run on loading, and epkd_tf loads "
                                "models in Keras safe mode; rebuild the model with "
                                "built-in layers")
    if class_name in TF_OP_LAYERS:
        inner = node.get("config")
        function = inner.get("function") if isinstance(inner, dict) else None
        if function not in TF_OP_FUNCTIONS:
            raise UnsafeConfigError(
                f"a TF-op layer {layer!r} calling tf.{function}",
                "Keras would call that TensorFlow function while loading; only pure "
                "tensor arithmetic (such as x + y, tf.math.multiply) is loaded")
        return
    if _epkd_object(node):
        return
    if class_name == "function":
        inner = node.get("config")
        if inner not in ACTIVATIONS:
            raise UnsafeConfigError(f"a stored function {inner!r}{where}",
                                    "only Keras' built-in activations are loaded")
        return
    if class_name == "__lambda__":
        raise UnsafeConfigError(f"a stored Python lambda{where}",
                                "its code would run on loading")
    if class_name not in ALLOWED_CLASSES:
        raise UnsafeConfigError(
            f"an unknown class {class_name!r}{where}",
            "only built-in Keras layers are loaded (a custom class would be imported, or "
            "revived from the file's own TensorFlow functions)")


def expected_classes(name: str) -> tuple:
    """The classes a loaded layer whose class is called ``name`` may be exactly: the
    built-in one, and epkd_tf's own for EPKD_LAYERS (ConvNeXt's ``LayerScale`` is both a
    tf_keras.applications layer and epkd_tf's equivalent of Keras 3's)."""
    from epkd_tf.models import keras3_layers
    own = (keras3_layers.LAYER_CLASSES[name],) if name in EPKD_LAYERS else ()
    builtin = expected_class(name)
    return own + ((builtin,) if builtin is not None else ())


def expected_class(name: str):
    """The built-in class a loaded layer called ``name`` (its class name) must be
    exactly; None if ``name`` is not on the allow-list."""
    import tf_keras
    if name in APPLICATION_LAYERS:
        return compat.application_layer_class(name)
    if name in TF_OP_LAYERS:
        return compat.tf_op_layer_class(name)
    if name == "Functional":
        return compat.functional_class()
    if name == "Sequential":
        return tf_keras.Sequential
    if name == "Model":
        return tf_keras.Model
    if name in LAYERS:
        return getattr(tf_keras.layers, name, None)
    return None


def _layers(model) -> Iterable:
    yield model
    for layer in getattr(model, "layers", ()):
        yield from _layers(layer)
    for attribute in ("layer", "forward_layer", "backward_layer"):   # wrappers
        inner = getattr(model, attribute, None)
        if inner is not None and inner is not model and hasattr(inner, "get_config"):
            yield from _layers(inner)


def check_model(model) -> None:
    """Raises :class:`UnsafeConfigError` unless ``model`` and every layer in it are
    instances of exactly the built-in class their class name says (a layer Keras revived
    from a SavedModel's traced functions is not), and TF-op layers call only the allowed
    functions."""
    from epkd_tf.models import keras3_layers
    for layer in _layers(model):
        cls = type(layer)
        if not any(cls is allowed for allowed in expected_classes(cls.__name__)):
            raise UnsafeConfigError(
                f"a layer {layer.name!r} of class {cls.__module__}.{cls.__qualname__}",
                "it was not rebuilt as a built-in Keras layer (a SavedModel's own "
                "functions would run when it is called)")
        activation = getattr(layer, "activation", None)
        if getattr(activation, "__name__", None) in EPKD_ACTIVATIONS \
                and activation is not getattr(keras3_layers, activation.__name__):
            raise UnsafeConfigError(
                f"a layer {layer.name!r} with activation {activation.__name__!r} of "
                f"{getattr(activation, '__module__', None)}",
                f"only epkd_tf's own {activation.__name__} is loaded")
        if cls.__name__ in TF_OP_LAYERS:
            function = layer.get_config().get("function")
            if function not in TF_OP_FUNCTIONS:
                raise UnsafeConfigError(f"a TF-op layer {layer.name!r} calling tf.{function}",
                                        "only pure tensor arithmetic is loaded")
