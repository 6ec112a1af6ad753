"""Converting models between Keras 3 and tf_keras (Keras 2).

TensorFlow 2.21's own Keras (``import keras``, ``tf.keras`` without
``TF_USE_LEGACY_KERAS``) is Keras 3; epkd_tf runs on tf_keras because TF-MOT needs it.
This module moves Functional and Sequential models of standard layers across:

* **Keras 3 → tf_keras** (:func:`load_keras3`, used by ``--teacher_path`` and
  ``export --model``): the ``.keras`` archive's ``config.json`` is read as plain JSON and
  checked against :data:`LAYERS`, the explicit table of supported layer classes, *before
  anything is built*. That table is the allow-list: a ``Lambda`` or TF-op layer, a custom
  or registered object, a ``module`` that is not Keras' own, an unknown setting... is
  refused in one line naming the layer. No Keras 3 deserialisation runs and no module
  named in the file is imported: the tf_keras layers are made from configs this module
  wrote, and the weights are read from ``model.weights.h5`` with h5py. Nested models are
  inlined (:func:`_flatten`), the ``+`` / ``*`` operators of :data:`OPS` become layers,
  and the few layers and activations of ``keras.applications`` that tf_keras lacks get
  epkd_tf's exact equivalents (:mod:`epkd_tf.models.keras3_layers`): every classifier of
  TF 2.21's ``keras.applications`` converts.
* **tf_keras → Keras 3** (:func:`to_keras3`, :func:`save_keras3`; the ``keras3`` export
  format): the same table, the other way round. The file loads in a plain TF 2.21 process
  with ``keras.models.load_model(path)`` (default safe mode, no custom objects).

Keras 3 can be imported next to tf_keras: ``TF_USE_LEGACY_KERAS`` only decides what
``tf.keras`` is, ``import keras`` is Keras 3 either way. It is imported only when a Keras 3
model is built (:func:`to_keras3`), never to read a file.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from epkd_tf import compat
from epkd_tf.models import keras3_layers
from epkd_tf.errors import ModelFileError
from epkd_tf.errors import Keras3ConversionError  # noqa: F401

log = logging.getLogger("epkd_tf")


class _Refusal(Exception):
    """Why one layer (or the model) cannot be converted; formatted by the public functions."""

    def __init__(self, reason: str, layer: Optional[str] = None,
                 class_name: Optional[str] = None):
        super().__init__(reason)
        self.reason, self.layer, self.class_name = reason, layer, class_name

    def __str__(self) -> str:
        if self.layer is None:
            return self.reason
        return f"layer {self.layer!r} ({self.class_name}): {self.reason}"


# -- the table --------------------------------------------------------------------------
# Value of a version-only setting that is dropped whatever it is: it changes nothing the
# converted model computes or learns (initial values of copied weights, unused arguments).
ANY = "any value"
_DROP = object()      # a converted setting left out: the layer's default applies
# The `module` of Keras 3's own layers in a .keras file.
KERAS3_LAYER_MODULE = "keras.layers"


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How one layer class's config maps between Keras 3 and tf_keras.

    ``keys``: settings with the same name and meaning in both (``name``, ``trainable`` and
    ``dtype`` are handled for every layer). ``renamed``: Keras 3 name → tf_keras name.
    ``keras3_only`` / ``tf_keras_only``: settings one version lacks, each with the values
    that behave like the other version's (the setting is then dropped; any other value is
    refused) or ``ANY``. Any setting not listed is refused: it may change behaviour.
    ``module``: the module a Keras 3 file must name for the class (``keras.layers``, or
    the ``keras.src.applications`` module that defines an application's own layer, whose
    tf_keras equivalent is in :mod:`epkd_tf.models.keras3_layers`).
    """

    keys: Tuple[str, ...] = ()
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    keras3_only: Mapping[str, object] = dataclasses.field(default_factory=dict)
    tf_keras_only: Mapping[str, object] = dataclasses.field(default_factory=dict)
    module: str = KERAS3_LAYER_MODULE


_CONV = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
         "groups", "activation", "use_bias", "kernel_initializer", "bias_initializer",
         "kernel_regularizer", "bias_regularizer", "activity_regularizer",
         "kernel_constraint", "bias_constraint")
_DEPTHWISE = ("depth_multiplier", "kernel_size", "strides", "padding", "data_format",
              "dilation_rate", "activation", "use_bias", "depthwise_initializer",
              "bias_initializer", "depthwise_regularizer", "bias_regularizer",
              "activity_regularizer", "depthwise_constraint", "bias_constraint")
_SEPARABLE = _DEPTHWISE + ("filters", "pointwise_initializer", "pointwise_regularizer",
                           "pointwise_constraint")
# Keras 3 low-rank adapters and quantisation add weights tf_keras has no place for.
_LORA = {"lora_rank": (None, 0), "lora_alpha": ANY}
_POOL = ("pool_size", "strides", "padding", "data_format")
_GLOBAL_POOL = ("data_format", "keepdims")
_CHANNELS_LAST = ("channels_last",)

LAYERS: Dict[str, LayerSpec] = {
    "InputLayer": LayerSpec(("sparse", "ragged", "optional"),
                            renamed={"batch_shape": "batch_input_shape"}),
    "Dense": LayerSpec(("units", "activation", "use_bias", "kernel_initializer",
                        "bias_initializer", "kernel_regularizer", "bias_regularizer",
                        "activity_regularizer", "kernel_constraint", "bias_constraint"),
                       keras3_only={"quantization_config": (None,), **_LORA}),
    **{f"Conv{d}D": LayerSpec(_CONV, keras3_only=_LORA) for d in (1, 2, 3)},
    "DepthwiseConv2D": LayerSpec(_DEPTHWISE, keras3_only=_LORA,
                                 tf_keras_only={"groups": (1,)}),
    # tf_keras' separable convolutions accept kernel_* arguments they never use.
    **{f"SeparableConv{d}D": LayerSpec(_SEPARABLE, keras3_only=_LORA, tf_keras_only={
        "groups": (1,), "kernel_initializer": ANY, "kernel_regularizer": ANY,
        "kernel_constraint": ANY}) for d in (1, 2)},
    # Batch renormalisation keeps extra weights; synchronized only changes how replicas
    # share batch statistics in training (both versions take it).
    "BatchNormalization": LayerSpec(
        ("axis", "momentum", "epsilon", "center", "scale", "beta_initializer",
         "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer",
         "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
         "synchronized"),
        keras3_only={"renorm": (False,), "renorm_clipping": ANY, "renorm_momentum": ANY}),
    "LayerNormalization": LayerSpec(
        ("axis", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
         "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"),
        keras3_only={"rms_scaling": (False,)}),
    "UnitNormalization": LayerSpec(("axis",)),
    "Activation": LayerSpec(("activation",)),
    "ReLU": LayerSpec(("max_value", "negative_slope", "threshold")),
    "LeakyReLU": LayerSpec(renamed={"negative_slope": "alpha"}),
    "ELU": LayerSpec(("alpha",)),
    "PReLU": LayerSpec(("alpha_initializer", "alpha_regularizer", "alpha_constraint",
                        "shared_axes")),
    "Softmax": LayerSpec(("axis",)),
    "Dropout": LayerSpec(("rate", "noise_shape", "seed")),
    # Keras 3's spatial dropouts take neither trainable nor noise_shape (their mask is
    # per channel by definition); tf_keras' take data_format without storing it.
    "SpatialDropout1D": LayerSpec(("rate", "seed"), tf_keras_only={
        "trainable": ANY, "noise_shape": (None,)}),
    **{f"SpatialDropout{d}D": LayerSpec(("rate", "seed", "data_format"), tf_keras_only={
        "trainable": ANY, "noise_shape": (None,)}) for d in (2, 3)},
    "GaussianNoise": LayerSpec(("stddev", "seed")),
    "GaussianDropout": LayerSpec(("rate", "seed")),
    "AlphaDropout": LayerSpec(("rate", "seed", "noise_shape")),
    "ActivityRegularization": LayerSpec(("l1", "l2")),
    **{f"{kind}Pooling{d}D": LayerSpec(_POOL)
       for kind in ("Max", "Average") for d in (1, 2, 3)},
    **{f"Global{kind}Pooling{d}D": LayerSpec(_GLOBAL_POOL)
       for kind in ("Max", "Average") for d in (1, 2, 3)},
    "ZeroPadding1D": LayerSpec(("padding",), keras3_only={"data_format": _CHANNELS_LAST}),
    **{f"ZeroPadding{d}D": LayerSpec(("padding", "data_format")) for d in (2, 3)},
    "Cropping1D": LayerSpec(("cropping",)),
    **{f"Cropping{d}D": LayerSpec(("cropping", "data_format")) for d in (2, 3)},
    "UpSampling1D": LayerSpec(("size",)),
    "UpSampling2D": LayerSpec(("size", "data_format", "interpolation")),
    "UpSampling3D": LayerSpec(("size", "data_format")),
    "Flatten": LayerSpec(("data_format",)),
    "Reshape": LayerSpec(("target_shape",)),
    "Rescaling": LayerSpec(("scale", "offset")),
    "Normalization": LayerSpec(("axis", "mean", "variance", "invert")),
    **{name: LayerSpec() for name in ("Add", "Subtract", "Multiply", "Average",
                                      "Maximum", "Minimum")},
    "Concatenate": LayerSpec(("axis",)),
    # keras.applications' own layers, accepted only from the module that defines them;
    # their tf_keras versions are epkd_tf's (models/keras3_layers.py), never the file's.
    "LayerScale": LayerSpec(("init_values", "projection_dim"),
                            module=compat.KERAS3_APPLICATION_LAYERS["LayerScale"]),
    "CustomScaleLayer": LayerSpec(("scale",),
                                  module=compat.KERAS3_APPLICATION_LAYERS["CustomScaleLayer"]),
}
# Layers that take a list of tensors.
MERGE_LAYERS = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                          "Concatenate", "CustomScaleLayer"})
# Activation names with the same function in both versions (hard_sigmoid differs: Keras 3
# uses relu6(x + 3) / 6, tf_keras clip(0.2 x + 0.5); several Keras 3 ones are missing).
# hard_silu is Keras 3's; tf_keras gets epkd_tf's exact copy (models/keras3_layers.py).
ACTIVATIONS = frozenset({"linear", "relu", "relu6", "sigmoid", "softmax", "log_softmax",
                         "tanh", "elu", "selu", "softplus", "softsign", "swish", "silu",
                         "gelu", "exponential", "mish", "leaky_relu", "hard_silu"})
# Tensor operators in a Keras 3 functional model (``x + y``, ``x * 0.5``) are stored as
# operations of this module, not layers; these convert to the tf_keras layer computing
# the same: two tensors to the merge layer of that name, a tensor and a number to a
# Rescaling (x * 1 + c is x + c, x * c + 0 is x * c, exactly).
KERAS3_OPS_MODULE = compat.KERAS3_OPS_MODULE
OPS = {"Add": lambda c: {"scale": 1.0, "offset": c},
       "Multiply": lambda c: {"scale": c, "offset": 0.0}}
# Built-in initializers, regularizers and constraints and the settings they share. The
# initializers' other settings only shape initial values, which the copied weights
# replace (Keras 3 adds e.g. input_axes); regularizers and constraints act in training,
# so theirs must all be known.
INITIALIZERS: Dict[str, Tuple[str, ...]] = {
    "Zeros": (), "Ones": (), "Constant": ("value",), "Identity": ("gain",),
    "RandomNormal": ("mean", "stddev", "seed"), "TruncatedNormal": ("mean", "stddev", "seed"),
    "RandomUniform": ("minval", "maxval", "seed"), "Orthogonal": ("gain", "seed"),
    "VarianceScaling": ("scale", "mode", "distribution", "seed"),
    **{name: ("seed",) for name in ("GlorotUniform", "GlorotNormal", "HeUniform",
                                    "HeNormal", "LecunUniform", "LecunNormal")},
}
REGULARIZERS: Dict[str, Tuple[str, ...]] = {
    "L1": ("l1",), "L2": ("l2",), "L1L2": ("l1", "l2"),
    "OrthogonalRegularizer": ("factor", "mode")}
CONSTRAINTS: Dict[str, Tuple[str, ...]] = {
    "MaxNorm": ("max_value", "axis"), "MinMaxNorm": ("min_value", "max_value", "rate", "axis"),
    "NonNeg": (), "UnitNorm": ("axis",)}
_OBJECTS = {"initializer": ("keras.initializers", INITIALIZERS),
            "regularizer": ("keras.regularizers", REGULARIZERS),
            "constraint": ("keras.constraints", CONSTRAINTS)}
DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "mixed_float16",
                    "mixed_bfloat16"})
INPUT_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "uint8", "int32",
                          "int64"})
# The `module` of Keras 3's own models in a .keras file.
KERAS3_MODEL_MODULES = compat.KERAS3_MODEL_MODULES


def supported_layers() -> List[str]:
    """The layer classes that convert both ways, sorted (the allow-list)."""
    return sorted(LAYERS)


def _supported_text() -> str:
    return "supported layers: " + ", ".join(supported_layers())


# -- recognising a Keras 3 file -----------------------------------------------------------
def _version_is_3(version) -> bool:
    return str(version or "").split(".")[0] == "3"


def is_keras3_file(path: str) -> bool:
    """True for a model file written by Keras 3: a ``.keras`` archive whose
    ``metadata.json`` says ``keras_version`` 3.x (without one, a ``config.json`` in Keras
    3's layout), or an ``.h5`` file with a 3.x ``keras_version``. Reads the metadata only:
    nothing is deserialised and Keras 3 is not imported; an unreadable file is not one."""
    try:
        if os.path.isdir(path):
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if "metadata.json" in names:
                    version = json.loads(archive.read("metadata.json")).get("keras_version")
                    if version:
                        return _version_is_3(version)
                if "config.json" in names:
                    return _keras3_layout(json.loads(archive.read("config.json")))
            return False
        import h5py
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
                return _version_is_3(version.decode() if isinstance(version, bytes)
                                     else version)
    except Exception:  # a damaged file: the tf_keras loader reports it
        return False
    return False


def _keras3_layout(config) -> bool:
    """Keras 3 stores a layer's calls as ``{"args": ..., "kwargs": ...}``; tf_keras as
    ``[[name, node, tensor, kwargs], ...]``."""
    layers = (config.get("config") or {}).get("layers") or []
    return any(isinstance(node, dict) and "args" in node
               for layer in layers if isinstance(layer, dict)
               for node in layer.get("inbound_nodes") or [])


# -- config conversion --------------------------------------------------------------------
def _plain(value) -> bool:
    """JSON made of numbers, strings, booleans, None and lists of them: a setting, not a
    stored object."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and all(_plain(v) for v in value)


def _dtype(value, where: Tuple[str, str]) -> str:
    """A layer's dtype policy (Keras 3 ``DTypePolicy`` dict, tf_keras ``Policy`` dict or a
    name) as its name, one of :data:`DTYPES`."""
    name = value
    if isinstance(value, dict):
        if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy", "Policy") \
                or value.get("registered_name") not in (None, value.get("class_name")):
            raise _Refusal(f"dtype policy {value.get('class_name')!r} is not supported "
                           f"(only {', '.join(sorted(DTYPES))})", *where)
        name = (value.get("config") or {}).get("name")
    if name not in DTYPES:
        raise _Refusal(f"dtype {name!r} is not supported (only {', '.join(sorted(DTYPES))})",
                       *where)
    return name


def _object(key: str, value, kind: str, where: Tuple[str, str], to_keras3: bool):
    """A built-in initializer, regularizer or constraint, in the serialised form both
    versions read; anything else (a custom or registered object, another module) is
    refused. Going to Keras 3 the source is a live tf_keras model, not a file: an
    initializer it names otherwise (TensorFlow's own ``Constant``, a custom one) is mapped
    by class name or dropped (``_DROP``), since it only made initial values."""
    if value is None:
        return None
    module, table = _OBJECTS[kind]
    if to_keras3 and kind == "initializer" and isinstance(value, dict):
        if value.get("class_name") not in table:
            return _DROP
        value = {**value, "module": module, "registered_name": None}
    if not isinstance(value, dict):
        raise _Refusal(f"{key}={value!r} is not a built-in {kind}", *where)
    class_name = value.get("class_name")
    if class_name not in table or value.get("module") not in (module, None) \
            or value.get("registered_name") not in (None, class_name) \
            or not isinstance(value.get("config") or {}, dict):
        raise _Refusal(f"{key} is {value.get('module')}.{class_name} (registered as "
                       f"{value.get('registered_name')!r}), not a built-in {kind} (only "
                       f"{', '.join(table)})", *where)
    config = {}
    for setting, v in (value.get("config") or {}).items():
        if setting in table[class_name] and _plain(v):
            config[setting] = v
        elif kind != "initializer":
            raise _Refusal(f"{key} {class_name} has the unsupported setting {setting!r}",
                           *where)
    if kind == "initializer" and not isinstance(config.get("seed"), (int, type(None))):
        config["seed"] = None
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": None}


def _setting(key: str, value, where: Tuple[str, str], to_keras3: bool):
    """One converted setting value: objects by their key's suffix, activations by name,
    plain JSON as it is."""
    for kind in _OBJECTS:
        if key.endswith("_" + kind):
            return _object(key, value, kind, where, to_keras3)
    if key == "activation":
        if to_keras3 and _is_hard_silu(value):
            return "hard_silu"
        if not isinstance(value, str):
            # A stored function (a lambda is {"value": [bytecode...]}, a custom one a
            # dict naming its module): code that would run on loading. A dict must not
            # reach the name lookup below (unhashable).
            raise _Refusal(f"activation is a stored {_stored_kind(value)}, not a built-in "
                           f"activation name (only {', '.join(sorted(ACTIVATIONS))}); "
                           "epkd_tf loads models in safe mode: use a built-in activation",
                           *where)
        if value not in ACTIVATIONS:
            raise _Refusal(f"activation {value!r} is not supported (only "
                           f"{', '.join(sorted(ACTIVATIONS))})", *where)
        return value
    if not _plain(value):
        raise _Refusal(f"{key} holds a stored object, not a plain setting", *where)
    return value


def _stored_kind(value) -> str:
    """What a non-name activation value holds, for the refusal: a lambda (Keras 3 writes
    its bytecode under ``value``, or a ``__lambda__`` class), a named function or object."""
    if isinstance(value, dict):
        if "value" in value or value.get("class_name") == "__lambda__" or \
                (isinstance(value.get("config"), dict) and "value" in value["config"]):
            return "lambda (Python bytecode)"
        return f"object {value.get('module')}.{value.get('class_name')}"
    return f"value of type {type(value).__name__}"


def _is_hard_silu(value) -> bool:
    """tf_keras writes an activation function that is not its own (epkd_tf's hard_silu)
    as a dict naming it; it is Keras 3's hard_silu only while that name still stands for
    epkd_tf's function in tf_keras (not for a user's own function registered under it)."""
    if value != {"module": "builtins", "class_name": "function", "config": "hard_silu",
                 "registered_name": "function"}:
        return False
    import tf_keras
    return tf_keras.activations.get("hard_silu") is keras3_layers.hard_silu


def convert_config(class_name: str, config: Mapping, to_keras3: bool,
                   layer: Optional[str] = None) -> dict:
    """A layer's config converted from tf_keras to Keras 3 (``to_keras3``) or back;
    ``class_name`` is one of :data:`LAYERS`.

    Raises ``_Refusal`` naming the layer for an unknown setting, a version-only setting
    with a value the other version cannot express, or a value that is not a plain setting
    or built-in object.
    """
    name = layer or str(config.get("name", "?"))
    where = (name, class_name)
    spec = LAYERS[class_name]
    renamed = ({v: k for k, v in spec.renamed.items()} if to_keras3 else dict(spec.renamed))
    only = spec.tf_keras_only if to_keras3 else spec.keras3_only
    out = {}
    for key, value in config.items():
        if key in only:
            allowed = only[key]
            if allowed is not ANY and value not in allowed:
                other = "Keras 3" if to_keras3 else "tf_keras"
                raise _Refusal(f"{key}={value!r} has no {other} equivalent (supported: "
                               f"{' or '.join(repr(a) for a in allowed)})", *where)
        elif key in ("name", "trainable"):
            out[key] = value
        elif key == "dtype":
            out[key] = (_dtype(value, where) if class_name != "InputLayer"
                        else _input_dtype(value, where))
        elif key in spec.keys or key in renamed:
            converted = _setting(key, value, where, to_keras3)
            if converted is not _DROP:
                out[renamed.get(key, key)] = converted
        else:
            raise _Refusal(f"setting {key!r} is not supported by the conversion", *where)
    if to_keras3 and class_name == "BatchNormalization" and isinstance(out.get("axis"), list):
        # tf_keras stores the axis as a list ([3]); Keras 3 takes one int.
        if len(out["axis"]) != 1:
            raise _Refusal(f"axis={out['axis']} (several axes) has no Keras 3 equivalent",
                           *where)
        out["axis"] = out["axis"][0]
    return out


def _input_dtype(value, where) -> str:
    if value not in INPUT_DTYPES:
        raise _Refusal(f"input dtype {value!r} is not supported (only "
                       f"{', '.join(sorted(INPUT_DTYPES))})", *where)
    return value


# -- the layer graph ----------------------------------------------------------------------
Ref = Tuple[str, int, int]     # (layer name, node index, tensor index)


@dataclasses.dataclass
class _Layer:
    name: str
    class_name: str
    config: dict                      # converted for the target version
    nodes: List[List[Ref]]            # the tensors each call reads
    input_shape: Optional[list] = None   # the batch shape stored with a first layer
    weights_path: Optional[str] = None   # its group in a Keras 3 model.weights.h5
    graph: Optional["_Graph"] = None     # a nested model's own graph, until inlined


@dataclasses.dataclass
class _Graph:
    name: str
    layers: List[_Layer]
    inputs: List[Ref]
    outputs: List[Ref]


def _refs(value, what: str) -> List[Ref]:
    """``[name, node, tensor]`` or a list of them (Keras 3 writes one input unnested)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not all(
            isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
            and isinstance(r[1], int) and isinstance(r[2], int) for r in value):
        raise _Refusal(f"its {what} are not a list of layer outputs (dict-structured inputs "
                       f"and outputs are not supported)")
    return [tuple(r) for r in value]


def _check_kwargs(kwargs, where) -> None:
    """Call arguments stored with a node: ``training`` is decided when the model runs, a
    ``mask`` of None is no mask; anything else would change the call."""
    for key, value in (kwargs or {}).items():
        if not (key == "training" or (key == "mask" and value is None)):
            raise _Refusal(f"it is called with {key}={value!r}, which the conversion does "
                           f"not support", *where)


def _keras3_node(node, where, several: Optional[bool] = None) -> List[Ref]:
    """A Keras 3 call: ``{"args": [tensor or [tensors]], "kwargs": {...}}``. ``several``:
    whether it takes a list of tensors (default: merge layers do); None for either."""
    if not isinstance(node, dict) or set(node) - {"args", "kwargs"} \
            or len(node.get("args") or []) != 1:
        raise _Refusal("it is called with arguments other than its input tensor(s)", *where)
    _check_kwargs(node.get("kwargs"), where)
    arg = node["args"][0]
    tensors = arg if isinstance(arg, list) else [arg]
    if several is None and where[1] not in ("Functional", "Sequential"):
        several = where[1] in MERGE_LAYERS
    if several is not None and isinstance(arg, list) != several:
        raise _Refusal("it is called with an unexpected number of inputs", *where)
    return [_keras3_tensor(tensor, where) for tensor in tensors]


def _keras3_tensor(tensor, where) -> Ref:
    """The layer output a stored Keras 3 tensor reference names."""
    history = ((tensor.get("config") or {}).get("keras_history")
               if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__"
               else None)
    if not (isinstance(history, list) and len(history) == 3
            and isinstance(history[0], str)
            and all(isinstance(i, int) for i in history[1:])):
        raise _Refusal("it is called with a constant or object instead of a layer's "
                       "output", *where)
    return tuple(history)


def _keras3_op(entry, layer: "_Layer") -> None:
    """Turns a stored operator (``x + y``, ``x * c``: see :data:`OPS`) into the tf_keras
    layer that computes it, reading its one call: two tensors, or a tensor and a number."""
    where = (layer.name, f"{KERAS3_OPS_MODULE}.{layer.class_name}")
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1 or not isinstance(nodes[0], dict) \
            or set(nodes[0]) - {"args", "kwargs"} or nodes[0].get("kwargs") \
            or not isinstance(nodes[0].get("args"), list) or len(nodes[0]["args"]) != 2:
        raise _Refusal("an operator is supported only as one call on two values", *where)
    args = nodes[0]["args"]
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    tensors = [_keras3_tensor(a, where) for a in args if a not in numbers]
    if len(tensors) == 2:
        layer.nodes = [tensors]
    elif len(tensors) == 1 and len(numbers) == 1:
        layer.config = {"name": layer.name, **OPS[layer.class_name](float(numbers[0]))}
        layer.class_name = "Rescaling"
        layer.nodes = [tensors]
    else:
        raise _Refusal("an operator is supported on two tensors or a tensor and a number",
                       *where)


def _tf_keras_node(node, where) -> List[Ref]:
    """A tf_keras call: ``[[name, node, tensor, kwargs], ...]``."""
    if not isinstance(node, list) or not node or (len(node) > 1) > (where[1] in MERGE_LAYERS):
        raise _Refusal("it is called with an unexpected number of inputs", *where)
    refs = []
    for entry in node:
        if not (isinstance(entry, list) and len(entry) in (3, 4) and isinstance(entry[0], str)
                and all(isinstance(i, int) for i in entry[1:3])):
            raise _Refusal("it is called with something other than a layer's output", *where)
        if len(entry) == 4:
            _check_kwargs(entry[3], where)
        refs.append(tuple(entry[:3]))
    return refs


def _graph(model_config: Mapping, from_keras3: bool, prefix: str = "") -> _Graph:
    """The layer graph of a Functional or Sequential model config, every layer's config
    converted to the other version. Pure JSON walking: raises _Refusal at the first layer
    outside the allow-list. A Keras 3 model's nested models are inlined (:func:`_flatten`);
    ``prefix`` is the model's group in ``model.weights.h5``."""
    class_name = model_config.get("class_name")
    if class_name not in ("Functional", "Sequential"):
        raise _Refusal(f"it is a {class_name!r} model (registered as "
                       f"{model_config.get('registered_name')!r}); only Functional and "
                       f"Sequential models of standard layers convert")
    if from_keras3 and (model_config.get("module") not in KERAS3_MODEL_MODULES.get(
            class_name, ()) or model_config.get("registered_name") not in (None, class_name)):
        raise _Refusal(f"its model class is {model_config.get('module')}.{class_name} "
                       f"(registered as {model_config.get('registered_name')!r}), not Keras' "
                       f"own Functional or Sequential")
    config = model_config.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise _Refusal("its configuration lists no layers")
    paths = _weights_paths(config["layers"], prefix) if from_keras3 else {}
    layers = []
    for index, entry in enumerate(config["layers"]):
        layer = _layer(entry, from_keras3)
        layer.weights_path = paths.get(index)
        if layer.class_name in ("Functional", "Sequential"):
            layer.graph = _graph(entry, from_keras3, layer.weights_path + "/")
            if (entry.get("config") or {}).get("trainable") is False:
                for inner in layer.graph.layers:     # a frozen block stays frozen inlined
                    inner.config["trainable"] = False
        layers.append(layer)
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise _Refusal("two layers have the same name")
    if class_name == "Sequential":
        return _flatten(_sequential(config, layers, from_keras3))
    for layer, entry in zip(layers, config["layers"]):
        where = (layer.name, layer.class_name)
        if layer.class_name in OPS and entry.get("module") == KERAS3_OPS_MODULE:
            _keras3_op(entry, layer)
            continue
        read = _keras3_node if from_keras3 else _tf_keras_node
        layer.nodes = [read(node, where) for node in entry.get("inbound_nodes") or []]
    return _flatten(_Graph(str(config.get("name", "model")), layers,
                           _refs(config.get("input_layers"), "inputs"),
                           _refs(config.get("output_layers"), "outputs")))


def _weights_paths(entries, prefix: str) -> Dict[int, str]:
    """Each stored layer's group in ``model.weights.h5``, by its index in ``entries``:
    Keras 3 keeps a model's layers under their class name in snake case, numbered per
    class in layer order (``layers/conv2d``, ``layers/conv2d_1``...), a nested model's
    under its own group. Operators (not layers) have none."""
    counts: Dict[str, int] = {}
    paths = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("module") == KERAS3_OPS_MODULE:
            continue
        stem = _snake_case(str(entry.get("class_name")))
        number = counts.get(stem, -1) + 1
        counts[stem] = number
        paths[index] = f"{prefix}layers/{stem}{'_' + str(number) if number else ''}"
    return paths


def _flatten(graph: _Graph) -> _Graph:
    """``graph`` with each nested model replaced by its layers (pruning traces channels
    through one flat model). A nested model must be called once; its input layers give
    way to the tensors it is called with, and outer references to its outputs read its
    output layers. An inner name taken elsewhere becomes ``<model>_<name>`` (``_`` added
    until unique); the weights keep their own groups."""
    if not any(layer.graph for layer in graph.layers):
        return graph
    taken = {layer.name for layer in graph.layers if layer.graph is None}
    alias: Dict[Tuple[str, int], Ref] = {}          # (model, output index) -> inner output
    flat: List[_Layer] = []
    for layer in graph.layers:
        if layer.graph is None:
            flat.append(layer)
            continue
        where, sub = (layer.name, layer.class_name), layer.graph
        if len(layer.nodes) != 1 or len(layer.nodes[0]) != len(sub.inputs):
            raise _Refusal(f"a nested model is inlined into the outer one, so it must be "
                           f"called once with its {len(sub.inputs)} input(s); it is called "
                           f"{len(layer.nodes)} time(s)", *where)
        fed = {name: ref for (name, _, _), ref in zip(sub.inputs, layer.nodes[0])}
        rename = {}
        for inner in sub.layers:
            if inner.name not in fed:
                new = inner.name if inner.name not in taken else f"{layer.name}_{inner.name}"
                while new in taken:
                    new += "_"
                taken.add(new)
                rename[inner.name] = new

        def inner_ref(ref, where=where, fed=fed, rename=rename):
            if ref[0] in fed:
                return fed[ref[0]]
            if ref[0] not in rename:
                raise _Refusal(f"it reads the unknown layer {ref[0]!r}", *where)
            return (rename[ref[0]],) + tuple(ref[1:])

        for inner in sub.layers:
            if inner.name in fed:
                continue
            if inner.class_name == "InputLayer":
                raise _Refusal("it has an input layer it is not called with", *where)
            inner.nodes = [[inner_ref(ref) for ref in refs] for refs in inner.nodes]
            inner.name = inner.config["name"] = rename[inner.name]
            flat.append(inner)
        for index, ref in enumerate(sub.outputs):
            alias[(layer.name, index)] = inner_ref(ref)

    nested = {layer.name for layer in graph.layers if layer.graph is not None}

    def resolve(ref: Ref) -> Ref:
        while ref[0] in nested:           # a nested model may read another one's output
            if ref[1] != 0 or (ref[0], ref[2]) not in alias:
                raise _Refusal(f"it reads output {ref[2]} of call {ref[1]} of the nested "
                               f"model {ref[0]!r}, which does not exist")
            ref = alias[(ref[0], ref[2])]
        return ref

    for layer in flat:
        layer.nodes = [[resolve(ref) for ref in refs] for refs in layer.nodes]
    return _Graph(graph.name, flat, [resolve(r) for r in graph.inputs],
                  [resolve(r) for r in graph.outputs])


def _layer(entry, from_keras3: bool) -> _Layer:
    """One stored layer, checked against the allow-list and converted."""
    if not isinstance(entry, dict):
        raise _Refusal("its layer list holds something that is not a layer")
    class_name = str(entry.get("class_name"))
    inner = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    name = str(entry.get("name") or inner.get("name") or "?")
    where = (name, class_name)
    if class_name == "Lambda":
        raise _Refusal("a Lambda layer stores Python code, which would run on loading; "
                       "epkd_tf loads models in safe mode: rebuild it with built-in layers",
                       *where)
    if class_name in ("TFOpLambda", "SlicingOpLambda") or class_name.startswith("TFOp"):
        raise _Refusal("a TensorFlow-op layer (a tf.* call on a tensor) is not supported; "
                       "use the equivalent Keras layer", *where)
    if from_keras3 and class_name in ("Functional", "Sequential"):
        # Inlined by _flatten once its own graph is read (the model checks of _graph
        # apply to it as to the outer model).
        return _Layer(name, class_name, {"name": name}, [])
    if class_name in ("Functional", "Sequential", "Model"):
        raise _Refusal("nested models are not supported: build one flat model", *where)
    if from_keras3 and entry.get("module") == KERAS3_OPS_MODULE:
        if class_name not in OPS or entry.get("registered_name") not in (None, class_name) \
                or set(inner) - {"name"}:
            raise _Refusal(f"this operator is not supported (only {', '.join(OPS)} of "
                           f"tensors or of a tensor and a number)", name,
                           f"{KERAS3_OPS_MODULE}.{class_name}")
        return _Layer(name, class_name, {"name": name}, [])    # made by _keras3_op
    if class_name not in LAYERS:
        raise _Refusal(f"this layer class is not supported; {_supported_text()}", *where)
    module = LAYERS[class_name].module
    # Keras' own layers are not registered; an application's own layer is registered
    # under its plain class name.
    names = (None,) if module == KERAS3_LAYER_MODULE else (None, class_name)
    if from_keras3 and (entry.get("module") != module
                        or entry.get("registered_name") not in names):
        raise _Refusal(f"its class comes from module {entry.get('module')!r} (registered as "
                       f"{entry.get('registered_name')!r}), not Keras' own "
                       f"{module}: a custom object", *where)
    shape = None
    if class_name != "InputLayer":
        # A layer made with input_shape= (or adapted before use) keeps its batch shape;
        # in a model the input decides it, only a Sequential's first layer needs it.
        inner = dict(inner)
        shape = inner.pop("batch_input_shape", None) or inner.pop("batch_shape", None)
        if not (shape is None or _plain(shape)):
            raise _Refusal("its stored input shape is not a list of sizes", *where)
    config = convert_config(class_name, inner, not from_keras3, name)
    config["name"] = name             # the name the graph's references use
    return _Layer(name, class_name, config, [], shape)


def _sequential(config, layers: List[_Layer], from_keras3: bool) -> _Graph:
    """A Sequential model as a chain from its InputLayer (or its build input shape)."""
    # The made-up InputLayer's config is in the target version's terms, like the others.
    shape_key = "batch_input_shape" if from_keras3 else "batch_shape"
    if layers and layers[0].class_name == "InputLayer":
        first, rest = layers[0], layers[1:]
    else:
        shape = (layers[0].input_shape if layers else None) or config.get("build_input_shape")
        if not (isinstance(shape, list) and _plain(shape)):
            raise _Refusal("it is a Sequential model without an input shape (never built); "
                           "give it a keras.Input")
        first = _Layer("input_layer", "InputLayer", {"name": "input_layer", shape_key: shape,
                                                      "dtype": "float32"}, [])
        rest = layers
    previous = first.name
    for layer in rest:
        layer.nodes = [[(previous, 0, 0)]]
        previous = layer.name
    return _Graph(str(config.get("name", "sequential")), [first] + rest,
                  [(first.name, 0, 0)], [(previous, 0, 0)])


def _build(graph: _Graph, lib, to_keras3: bool):
    """The functional model of ``graph`` with ``lib`` (``tf_keras`` or ``keras``), every
    layer made by its table class from its converted config. Returns (model, layers by
    name)."""
    shape_key = "batch_shape" if to_keras3 else "batch_input_shape"
    made, outputs = {}, {}
    pending = []
    for layer in graph.layers:
        if layer.class_name == "InputLayer":
            config = layer.config
            if config.get("sparse") or config.get("ragged") or config.get("optional"):
                raise _Refusal("sparse, ragged and optional inputs are not supported",
                               layer.name, "InputLayer")
            if not isinstance(config.get(shape_key), list):
                raise _Refusal("it stores no input shape", layer.name, "InputLayer")
            outputs[(layer.name, 0)] = lib.Input(batch_shape=tuple(config[shape_key]),
                                                 dtype=config.get("dtype", "float32"),
                                                 name=layer.name)
            continue
        try:
            made[layer.name] = _layer_class(lib, layer.class_name).from_config(layer.config)
        except Exception as err:    # a value the table let through but the layer rejects
            raise _Refusal(" ".join(str(err).split())[:300], layer.name,
                           layer.class_name) from err
        pending += [(layer, index, refs) for index, refs in enumerate(layer.nodes)]
    called = {}
    while pending:
        ready = [item for item in pending
                 if called.get(item[0].name, 0) == item[1]
                 and all((n, k) in outputs for n, k, _ in item[2])]
        if not ready:
            layer = pending[0][0]
            raise _Refusal("it reads a layer output that does not exist (or the graph has "
                           "a cycle)", layer.name, layer.class_name)
        for layer, index, refs in ready:
            if called.get(layer.name, 0) != index:      # an earlier call of it was ready too
                continue
            args = [_pick(outputs[(n, k)], t, layer) for n, k, t in refs]
            try:
                outputs[(layer.name, index)] = made[layer.name](
                    args if layer.class_name in MERGE_LAYERS else args[0])
            except Exception as err:     # e.g. shapes that do not fit
                raise _Refusal(" ".join(str(err).split())[:300], layer.name,
                               layer.class_name) from err
            called[layer.name] = index + 1
            pending.remove((layer, index, refs))
    ends = []
    for refs in (graph.inputs, graph.outputs):
        missing = [n for n, k, _ in refs if (n, k) not in outputs]
        if missing:
            raise _Refusal(f"its inputs or outputs name the unknown layer {missing[0]!r}")
        tensors = [_pick(outputs[(n, k)], t, None) for n, k, t in refs]
        ends.append(tensors[0] if len(tensors) == 1 else tensors)
    return lib.Model(ends[0], ends[1], name=graph.name), made


def _layer_class(lib, class_name: str):
    """The class of ``lib`` (``tf_keras`` or ``keras``) a table entry stands for: Keras'
    own layer of that name, or for an application's layer Keras 3's class in the module
    the table names (Keras' own code) and epkd_tf's tf_keras equivalent."""
    module = LAYERS[class_name].module
    if module == KERAS3_LAYER_MODULE:
        return getattr(lib.layers, class_name)
    if lib.__name__ == "keras":
        return compat.keras3_application_layer_class(class_name)
    return keras3_layers.LAYER_CLASSES[class_name]


def _pick(output, index: int, layer):
    if isinstance(output, (list, tuple)):
        return output[index]
    if index != 0:
        raise _Refusal(f"it reads output {index} of a layer with one output",
                       *((layer.name, layer.class_name) if layer else ()))
    return output


# -- Keras 3 -> tf_keras ------------------------------------------------------------------
def _snake_case(class_name: str) -> str:
    """A class name in snake case, as Keras 3 names weight groups (``conv2d``)."""
    text = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", text).lower()


def _keras3_weights(weights_file, graph: _Graph) -> Dict[str, list]:
    """Each layer's stored weights, by layer name, from ``model.weights.h5``."""
    import h5py
    weights = {}
    with h5py.File(weights_file, "r") as f:
        for layer in graph.layers:
            if layer.class_name == "InputLayer" or layer.weights_path is None:
                continue       # no weights (and a Sequential's may not be in the file)
            group = f.get(f"{layer.weights_path}/vars")
            values = [] if group is None else [group[str(i)][()] for i in range(len(group))]
            weights[layer.name] = values
    return weights


def _message(err: _Refusal, subject: str, action: str) -> str:
    return " ".join(f"{subject} {action}: {err}.".replace("..", ".").split())


def load_keras3(path: str, flag: Optional[str] = "teacher_path"):
    """The tf_keras model equivalent to the Keras 3 model file at ``path``, weights copied.

    Reads the archive's ``config.json`` and ``model.weights.h5`` without Keras 3: every
    layer is checked against :data:`LAYERS` first (one line naming the layer for anything
    else: Lambda, TF-op, custom or unknown layers, nested models, unsupported settings),
    then the tf_keras model is built from the converted configs and the weights are
    copied in each layer's weight order. ``flag`` names the command-line flag in messages
    (None: the path alone). Raises Keras3ConversionError (a ModelFileError).
    """
    import tf_keras
    subject = f"--{flag}={path}" if flag else path
    if not zipfile.is_zipfile(path):
        raise Keras3ConversionError(
            f"{subject} is a Keras 3 .h5 file; epkd_tf converts Keras 3 models from .keras "
            f"files: save it with model.save('model.keras') in Keras 3.")
    try:
        with zipfile.ZipFile(path) as archive:
            model_config = json.loads(archive.read("config.json"))
            names = archive.namelist()
            weights_bytes = (archive.read("model.weights.h5") if "model.weights.h5" in names
                             else None)
    except Exception as err:
        raise Keras3ConversionError(f"{subject} is not a readable Keras 3 .keras file: "
                                    f"{' '.join(str(err).split())[:200]}") from err
    action = "is a Keras 3 model that epkd_tf cannot convert to tf_keras"
    try:
        graph = _graph(model_config, from_keras3=True)     # the whole allow-list check
        if weights_bytes is None:
            raise _Refusal("the archive has no model.weights.h5 (sharded or missing "
                           "weights are not supported)")
        weights = _keras3_weights(io.BytesIO(weights_bytes), graph)
        model, made = _build(graph, tf_keras, to_keras3=False)
        for name, layer in made.items():
            _set_weights(layer, weights.get(name, []))
    except _Refusal as err:
        raise Keras3ConversionError(_message(err, subject, action)) from None
    except Exception as err:  # a config the table accepted but a layer rejected
        raise Keras3ConversionError(_message(_Refusal(" ".join(str(err).split())[:300]),
                                             subject, action)) from err
    log.info("%s: a Keras 3 model, converted to tf_keras (%d layers, %d weights)", subject,
             len(model.layers), model.count_params())
    return model


def _set_weights(layer, values: Sequence) -> None:
    """Copies ``values`` into ``layer`` (tf_keras or Keras 3) in its weight order, after
    checking their number and shapes."""
    expected = [tuple(w.shape) for w in layer.weights]
    got = [tuple(v.shape) for v in values]
    if expected != got:
        raise _Refusal(f"its stored weights have shapes {got}, the converted layer needs "
                       f"{expected}", layer.name, type(layer).__name__)
    if values:
        layer.set_weights(list(values))
        # Preprocessing layers (Normalization) compute what they apply from their weights
        # once, when adapted or loaded; set_weights alone would leave the old values.
        finalize = getattr(layer, "finalize_state", None)
        if finalize is not None:
            finalize()


# -- tf_keras -> Keras 3 ------------------------------------------------------------------
def _tf_keras_graph(model) -> _Graph:
    import tf_keras
    if not isinstance(model, tf_keras.Model):
        raise _Refusal(f"it is a {type(model).__name__}, not a tf_keras model")
    try:
        # The JSON form, as a file would hold it: tuples, shapes and NumPy values plain.
        stored = json.loads(model.to_json())
    except NotImplementedError:
        raise _Refusal("it is a subclassed model (no config); only Functional and "
                       "Sequential models convert") from None
    graph = _graph(stored, from_keras3=False)
    for layer in graph.layers:
        expected = keras3_layers.LAYER_CLASSES.get(layer.class_name)
        actual = type(model.get_layer(layer.name)) if expected else None
        if actual is not expected:
            # Another class of that name may compute something else than Keras 3's.
            raise _Refusal(f"its class {actual.__module__}.{actual.__qualname__} is not "
                           f"epkd_tf's {layer.class_name} (epkd_tf.models.keras3_layers)",
                           layer.name, layer.class_name)
    return graph


def _keras3_names(graph: _Graph) -> Dict[str, str]:
    """Renames layers for Keras 3, which refuses ``/`` in names (tf_keras.applications use
    it, e.g. ``conv1/conv``): ``_`` instead, kept unique. Returns {new name: old name}."""
    taken = {layer.name for layer in graph.layers}
    mapping = {}
    for layer in graph.layers:
        if "/" in layer.name:
            new = layer.name.replace("/", "_")
            while new in taken:
                new += "_"
            taken.add(new)
            mapping[layer.name] = new
    if mapping:
        def rename(refs):
            return [(mapping.get(n, n), k, t) for n, k, t in refs]
        for layer in graph.layers:
            layer.nodes = [rename(refs) for refs in layer.nodes]
            if layer.name in mapping:
                layer.name = layer.config["name"] = mapping[layer.name]
        graph.inputs, graph.outputs = rename(graph.inputs), rename(graph.outputs)
    return {new: old for old, new in mapping.items()}


def check_keras3_export(model) -> None:
    """Raises Keras3ConversionError if :func:`to_keras3` would refuse ``model`` (configs
    only: nothing is built, Keras 3 is not imported)."""
    try:
        _tf_keras_graph(model)
    except _Refusal as err:
        raise Keras3ConversionError(_message(err, f"model {getattr(model, 'name', '?')!r}",
                                             "cannot be written as Keras 3")) from None


def to_keras3(model):
    """The Keras 3 (``keras``) model equivalent to the tf_keras ``model``, weights copied.

    Functional and Sequential models of the layers in :data:`LAYERS` (the result is a
    Functional model). Raises Keras3ConversionError naming the layer otherwise.
    """
    try:
        graph = _tf_keras_graph(model)
        original = _keras3_names(graph)
        import keras
        converted, made = _build(graph, keras, to_keras3=True)
        for name, layer in made.items():
            _set_weights(layer, model.get_layer(original.get(name, name)).get_weights())
    except _Refusal as err:
        raise Keras3ConversionError(_message(err, f"model {getattr(model, 'name', '?')!r}",
                                             "cannot be written as Keras 3")) from None
    return converted


def save_keras3(model, path: str) -> None:
    """Writes the tf_keras ``model`` as a Keras 3 ``.keras`` file (see :func:`to_keras3`)
    that ``keras.models.load_model(path)`` loads in a plain TF 2.21 process."""
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: a Keras 3 model file must end in .keras.")
    to_keras3(model).save(path)
