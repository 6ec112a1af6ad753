"""epkd_tf.compat against the installed libraries: they are the versions it was written for
(TensorFlow 2.21, tf_keras 2.21, TF-MOT >= 0.8.1), every private symbol it reaches exists
and behaves as it assumes, and no other module of the package reaches one itself.

When a TensorFlow release breaks one of these tests, fix the function of epkd_tf/compat.py
it names (and WRITTEN_FOR): the rest of the package goes through it. Cheap: tiny models,
no training, no TFLite conversion, no subprocess."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from epkd_tf import compat

pytestmark = pytest.mark.unit


# -- versions --------------------------------------------------------------------------------
def test_the_installed_versions_are_those_compat_was_written_for():
    problems = compat.version_problems()
    assert not problems, ("epkd_tf/compat.py reaches private parts of these libraries and "
                          "was checked against other versions:\n" + "\n".join(problems))


@pytest.mark.parametrize("installed, ok", [
    ({"tensorflow": "2.21.3", "tf_keras": "2.21.0", "tensorflow-model-optimization": "0.8.1"},
     True),
    ({"tensorflow": "2.22.0", "tf_keras": "2.21.0", "tensorflow-model-optimization": "0.9.0"},
     False),
    ({"tensorflow": "2.21.0", "tf_keras": "2.20.1", "tensorflow-model-optimization": "0.8.1"},
     False),
    ({"tensorflow": "2.21.0", "tf_keras": "2.21.0", "tensorflow-model-optimization": "0.8.0"},
     False),
    ({"tensorflow": "2.21.0rc1", "tf_keras": "2.21.0",
      "tensorflow-model-optimization": "0.8.1"}, True),
])
def test_the_version_check_names_what_differs(monkeypatch, installed, ok):
    from importlib import metadata
    monkeypatch.setattr(metadata, "version", lambda name: installed[name])
    problems = compat.version_problems()
    assert (problems == []) == ok, problems
    for line in problems:
        assert "epkd_tf.compat was written for" in line


# -- the call graph of a functional tf_keras model --------------------------------------------
@pytest.fixture(scope="module")
def graph():
    """A functional model with a layer called with a keyword argument, a tensor passed
    twice to one layer, and a layer also called outside the model."""
    import tf_keras
    inputs = tf_keras.Input((4,), name="x")
    hidden_layer = tf_keras.layers.Dense(3, name="hidden")
    hidden = hidden_layer(inputs)
    dropped = tf_keras.layers.Dropout(0.5, name="drop")(hidden, training=False)
    doubled = tf_keras.layers.Add(name="twice")([dropped, dropped])
    outputs = tf_keras.layers.Dense(2, name="logits")(doubled)
    model = tf_keras.Model(inputs, outputs)
    hidden_layer(tf_keras.Input((4,)))          # a second call, in no model
    return model


def test_is_functional_tells_graph_networks_from_subclassed_models(graph):
    import tf_keras

    class Subclassed(tf_keras.Model):
        def call(self, x):
            return x

    sequential = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    assert compat.is_functional(graph) and compat.is_functional(sequential)
    assert not compat.is_functional(Subclassed())


def test_layer_nodes_are_the_calls_of_this_model(graph):
    hidden = graph.get_layer("hidden")
    assert len(hidden.inbound_nodes) == 2                   # one more call, elsewhere
    nodes = compat.layer_nodes(graph, hidden)
    assert len(nodes) == 1 and compat.node_layer(nodes[0]) is hidden
    assert compat.node_outputs(nodes[0])[0] is graph.get_layer("drop").input
    for layer in graph.layers:
        assert len(compat.layer_nodes(graph, layer)) == 1, layer.name


def test_nodes_expose_their_layer_tensors_and_ids(graph):
    node_of = {layer.name: compat.layer_nodes(graph, layer)[0] for layer in graph.layers}
    assert compat.node_is_input(node_of["x"]) and not compat.node_is_input(node_of["hidden"])
    twice = node_of["twice"]
    dropped = graph.get_layer("drop").output
    assert compat.node_inputs(twice) == [dropped, dropped]
    assert compat.node_input_ids(twice) == [str(id(dropped))] * 2
    assert compat.node_outputs(twice) == [graph.get_layer("twice").output]
    assert compat.node_output_ids(twice) == [str(id(graph.get_layer("twice").output))]
    assert compat.node_input_ids(node_of["logits"]) == compat.node_output_ids(twice)


def test_tensor_origin_is_the_producing_layer(graph):
    layer, index = compat.tensor_origin(graph.outputs[0])
    assert layer is graph.get_layer("logits") and index == 0
    assert compat.tensor_origin(graph.inputs[0])[0] is graph.get_layer("x")


def test_node_call_arguments_rerun_the_model_layer_by_layer(graph):
    """Calling every layer with the arguments compat rebuilds gives the model's output;
    recorded keyword arguments come back (``training=False`` of the dropout)."""
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    values = {str(id(graph.inputs[0])): x}
    for layer in graph.layers[1:]:
        node = compat.layer_nodes(graph, layer)[0]
        args, kwargs = compat.node_call_arguments(node, values)
        if layer.name == "drop":
            assert kwargs == {"training": False}
        values[compat.node_output_ids(node)[0]] = layer(*args, **kwargs)
    np.testing.assert_allclose(values[str(id(graph.outputs[0]))], graph(x), rtol=1e-6)


def test_expects_training_arg_follows_the_call_signature(graph):
    assert compat.expects_training_arg(graph.get_layer("drop"))
    assert not compat.expects_training_arg(graph.get_layer("hidden"))


# -- loading model files safely ----------------------------------------------------------------
def test_safe_mode_scope_makes_the_legacy_loader_refuse_lambda_layers(tmp_path):
    import tf_keras
    model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Lambda(lambda t: t * 2)])
    path = str(tmp_path / "lambda.h5")
    with pytest.warns(UserWarning):                          # HDF5 is legacy
        model.save(path)
    with pytest.raises(ValueError, match="Lambda"):
        with compat.safe_mode_scope():
            tf_keras.models.load_model(path, compile=False)
    assert tf_keras.models.load_model(path, compile=False) is not None   # scope left


def test_keras_metadata_configs_reads_the_saved_metadata_protocol_buffer():
    from tf_keras.protobuf import saved_metadata_pb2
    metadata = saved_metadata_pb2.SavedMetadata()
    for text in ('{"class_name": "Dense"}', ""):
        metadata.nodes.add(metadata=text, identifier="_tf_keras_layer")
    assert compat.keras_metadata_configs(metadata.SerializeToString()) == [
        '{"class_name": "Dense"}', ""]


def test_tf_op_layers_and_the_functional_class_are_tf_keras_own():
    import tensorflow as tf
    import tf_keras
    inputs = tf_keras.Input((3,))
    model = tf_keras.Model(inputs, tf.math.multiply(inputs, 2.0)[:, :1])
    made = {type(layer).__name__: type(layer) for layer in model.layers}
    assert set(made) >= compat.TF_OP_LAYER_CLASSES
    for name in compat.TF_OP_LAYER_CLASSES:
        assert compat.tf_op_layer_class(name) is made[name]
    with pytest.raises(KeyError):
        compat.tf_op_layer_class("Lambda")
    assert type(model) is compat.functional_class()
    assert issubclass(compat.functional_class(), tf_keras.Model)


@pytest.mark.parametrize("name", sorted(compat.TF_KERAS_APPLICATION_LAYERS))
def test_tf_keras_application_layers_live_where_compat_says(name):
    import tf_keras
    cls = compat.application_layer_class(name)
    assert cls is not None and cls.__name__ == name
    assert cls.__module__ == compat.TF_KERAS_APPLICATION_LAYERS[name]
    assert issubclass(cls, tf_keras.layers.Layer)


def test_tensorflows_constant_initializer_is_recorded_under_its_private_module():
    import warnings
    import tensorflow as tf
    import tf_keras
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # "not a Keras initializer"
        recorded = tf_keras.initializers.serialize(tf.constant_initializer(0.0))
    assert (recorded["module"], recorded["class_name"]) in compat.TF_RECORDED_CLASSES


# -- Keras 3 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, args", [("LayerScale", (1e-6, 4)),
                                        ("CustomScaleLayer", (0.17,))])
def test_keras3_records_its_application_layers_under_compats_modules(name, args):
    keras = pytest.importorskip("keras")
    cls = compat.keras3_application_layer_class(name)
    assert cls.__name__ == name and issubclass(cls, keras.layers.Layer)
    recorded = keras.saving.serialize_keras_object(cls(*args))
    assert recorded["module"] == compat.KERAS3_APPLICATION_LAYERS[name]
    assert recorded["class_name"] == name


def test_keras3_records_operators_and_models_under_compats_modules():
    keras = pytest.importorskip("keras")
    a, b = keras.Input((2,)), keras.Input((2,))
    functional = keras.saving.serialize_keras_object(keras.Model([a, b], a + b))
    assert functional["module"] in compat.KERAS3_MODEL_MODULES[functional["class_name"]]
    ops = [layer for layer in functional["config"]["layers"] if layer["class_name"] == "Add"]
    assert [op["module"] for op in ops] == [compat.KERAS3_OPS_MODULE]
    sequential = keras.saving.serialize_keras_object(
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    assert sequential["module"] in compat.KERAS3_MODEL_MODULES["Sequential"]


# -- TF-MOT -----------------------------------------------------------------------------------
def test_tfmot_supports_the_layers_it_wraps():
    import tf_keras
    assert compat.tfmot_supports(tf_keras.layers.Dense(2))
    assert compat.tfmot_supports(tf_keras.layers.Conv2D(2, 3))
    assert not compat.tfmot_supports(tf_keras.layers.Rescaling(0.5))


@pytest.mark.parametrize("make, shape, count", [
    (lambda layers: layers.Dense(3), (None, 4), 1),
    (lambda layers: layers.Conv2D(2, 3), (None, 6, 6, 1), 1),
    (lambda layers: layers.DepthwiseConv2D(3), (None, 6, 6, 2), 0),   # wrapped, not pruned
])
def test_tfmot_prunable_weights_are_what_its_wrapper_prunes(make, shape, count):
    import tf_keras
    import tensorflow_model_optimization as tfmot
    layer = make(tf_keras.layers)
    layer.build(shape)
    wrapper = tfmot.sparsity.keras.prune_low_magnitude(layer)
    wrapper.build(shape)
    pruned = [weight for weight, _, _ in wrapper.pruning_vars]
    mine = compat.tfmot_prunable_weights(layer)
    assert len(mine) == len(pruned) == count
    assert all(a is b for a, b in zip(mine, pruned))
    assert not any(w is getattr(layer, "bias", None) for w in mine)


# -- TensorFlow Lite ------------------------------------------------------------------------
def test_the_dense_per_channel_switch_exists_and_is_set():
    import tensorflow as tf
    serve = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([1, 2])])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], tf.Module())
    name = "_experimental_disable_per_channel_quantization_for_dense_layers"
    assert getattr(converter, name) is False                # TF's default: per channel
    compat.set_dense_per_channel_quantization(converter, per_channel=False)
    assert getattr(converter, name) is True
    compat.set_dense_per_channel_quantization(converter, per_channel=True)
    assert getattr(converter, name) is False
    with pytest.raises(RuntimeError, match="compat"):
        compat.set_dense_per_channel_quantization(object(), per_channel=True)


def test_the_per_tensor_switch_exists_and_is_set():
    import tensorflow as tf
    serve = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([1, 2])])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], tf.Module())
    assert converter._experimental_disable_per_channel is False   # TF's default
    compat.set_per_tensor_quantization(converter, True)
    assert converter._experimental_disable_per_channel is True
    compat.set_per_tensor_quantization(converter, False)
    assert converter._experimental_disable_per_channel is False
    with pytest.raises(RuntimeError, match="compat"):
        compat.set_per_tensor_quantization(object(), True)


# -- tf.distribute ----------------------------------------------------------------------------
def test_in_multi_worker_mode_is_false_in_one_process():
    import tensorflow as tf
    from tensorflow.python.distribute import collective_all_reduce_strategy
    assert compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False
    assert compat.in_multi_worker_mode(tf.distribute.OneDeviceStrategy("/cpu:0")) is False
    # The strategy that can span a cluster answers through the method compat calls.
    assert callable(collective_all_reduce_strategy.CollectiveAllReduceExtended
                    ._in_multi_worker_mode)

    class Plain:                                            # no such method: one process
        extended = object()

    assert compat.in_multi_worker_mode(Plain()) is False


# -- TFDS ------------------------------------------------------------------------------------
def test_tfds_default_data_dir_is_tfds_own():
    import tensorflow_datasets as tfds
    expected = os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    assert compat.tfds_default_data_dir() == os.path.expanduser(expected)
    tfds_own = str(tfds.core.constants.DATA_DIR)
    assert compat.tfds_default_data_dir() == os.path.expanduser(tfds_own)


# -- nobody else reaches in -------------------------------------------------------------------
PACKAGE = Path(epkd_tf.__file__).resolve().parent
# Private modules (and TFDS's unexported ones): imported, named in a string, or reached
# as an attribute chain (``tfds.core.constants.DATA_DIR``) outside compat.
PRIVATE_MODULES = ("tf_keras.src", "tf_keras.protobuf", "keras.src", "tensorflow.python",
                   "tensorflow_model_optimization.python", "tensorflow_datasets.core.",
                   "tf.python", "tfmot.python", "tfds.core.constants", "tfds.core.registered")
# Private attributes of those libraries' objects that compat reads or sets.
PRIVATE_ATTRIBUTES = frozenset({
    "_is_graph_network", "_inbound_nodes", "_outbound_nodes", "_network_nodes",
    "_keras_history", "_flat_arguments", "_keras_inputs_ids_and_indices",
    "_expects_training_arg", "_weight_names", "_in_multi_worker_mode", "_keep_axis",
    "_experimental_disable_per_channel_quantization_for_dense_layers", "_keras_api_names",
    "_description", "_feature_spec", "_disable_shuffling", "_LAYERS_WEIGHTS_MAP"})


def _reaches(tree: ast.AST):
    """The sorted (line, what) of every private access in a module's syntax tree;
    docstrings and comments are prose and do not count."""
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute):
            names = [node.attr, ast.unparse(node)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            names = [node.value]
        else:
            continue
        found |= {(node.lineno, name) for name in names
                  if name in PRIVATE_ATTRIBUTES or name.startswith(PRIVATE_MODULES)}
    # An attribute chain is reported once, by its longest private prefix.
    return sorted((line, name) for line, name in found
                  if not any(other != name and other.startswith(name) and l2 == line
                             for l2, other in found))


def test_no_module_but_compat_reaches_into_private_internals():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
                  for line, name in _reaches(tree)]
    assert found == [], "use (or extend) epkd_tf.compat instead:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_access():
    planted = ast.parse('"""Mentions tf_keras.src in prose."""\n'
                        "from tf_keras.src.saving import serialization_lib\n"
                        "x = layer._inbound_nodes\n"
                        "y = getattr(model, '_is_graph_network', False)\n"
                        "z = tfds.core.constants.DATA_DIR\n")
    assert [name for _, name in _reaches(planted)] == [
        "tf_keras.src.saving.serialization_lib", "_inbound_nodes", "_is_graph_network",
        "tfds.core.constants.DATA_DIR"]
