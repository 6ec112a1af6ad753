"""Mixed precision (epkd_tf.precision, --precision): layers compute in a half type with
float32 variables and logits, float16 training scales its loss, pruning and checkpoints
keep the policy, and every export is a float32 copy that computes what the model does."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from cli_helpers import run_in_process
from epkd_tf import precision

MIXED = ("mixed_float16", "mixed_bfloat16")


def conv_net(seed=0):
    """Conv + BatchNorm + max pooling + Dense: every kind of layer a CNN teacher has."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.ReLU(name="relu")(x)
    x = tf_keras.layers.MaxPooling2D(name="pool")(x)
    x = tf_keras.layers.Flatten(name="flat")(x)
    x = tf_keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(4, name="logits")(x))


def images(n=16, seed=0):
    return np.random.default_rng(seed).random((n, 12, 12, 1), dtype=np.float32)


def policies(model):
    return {layer.name: layer.dtype_policy.name for layer in model.layers[1:]}


@pytest.mark.unit
@pytest.mark.parametrize("policy", MIXED)
def test_with_policy_sets_every_layer_and_keeps_logits_float32(policy):
    model = conv_net()
    mixed = precision.with_policy(model, policy)
    assert policies(mixed) == {name: "float32" if name == "logits" else policy
                               for name in policies(model)}
    assert precision.model_precision(mixed) == policy
    assert precision.model_precision(model) == "float32"
    x = images()
    assert mixed(x).dtype == tf.float32
    # The same weights: outputs within the half type's rounding.
    tolerance = 0.05 if policy == "mixed_bfloat16" else 0.01
    np.testing.assert_allclose(mixed(x).numpy(), model(x).numpy(), atol=tolerance)
    for a, b in zip(mixed.get_weights(), model.get_weights()):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert precision.with_policy(mixed, policy) is mixed       # nothing to change


@pytest.mark.unit
def test_float32_copy_computes_the_float32_function():
    model = conv_net()
    assert precision.float32_copy(model) is model
    copy = precision.float32_copy(precision.with_policy(model, "mixed_float16"))
    assert set(policies(copy).values()) == {"float32"}
    x = images()
    np.testing.assert_allclose(copy(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.with_policy(model, "float8")


@pytest.mark.unit
def test_only_float16_training_scales_its_loss():
    model = conv_net()
    adam = tf_keras.optimizers.Adam()
    assert precision.optimizer_for(model, adam) is adam
    assert precision.optimizer_for(precision.with_policy(model, "mixed_bfloat16"), adam) \
        is adam
    scaled = precision.optimizer_for(precision.with_policy(model, "mixed_float16"), adam)
    assert isinstance(scaled, tf_keras.mixed_precision.LossScaleOptimizer)
    assert precision.optimizer_for(model, scaled) is scaled
    loss = tf.constant(2.0)
    assert float(precision.scale_loss(adam, loss)) == 2.0
    assert float(precision.scale_loss(scaled, loss)) == 2.0 * float(scaled.loss_scale)
    grads = [tf.constant([float(scaled.loss_scale)])]
    assert float(precision.unscale_gradients(scaled, grads)[0][0]) == 1.0


@pytest.mark.unit
def test_exports_of_a_mixed_model_are_its_float32_function(tmp_path):
    """LiteRT cannot convert float16 kernels: the flatbuffer is the float32 copy's; the
    SavedModel's signature takes and returns float32."""
    from epkd_tf.deploy.saved_model import export_saved_model
    from epkd_tf.deploy.tflite import make_interpreter, tflite_predict, to_tflite
    model = conv_net()
    mixed = precision.with_policy(model, "mixed_float16")
    x = images(4)
    got = tflite_predict(make_interpreter(to_tflite(mixed)), x)
    np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)
    export_saved_model(mixed, str(tmp_path / "sm"))
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    out = serve(tf.constant(x))
    assert out["logits"].dtype == out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(out["logits"].numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert mixed.layers[1].dtype_policy.name == "mixed_float16"   # the model is unchanged


@pytest.mark.unit
def test_pruning_and_checkpoints_keep_the_policy(tmp_path):
    from epkd_tf.graph import analyze, remove_groups
    from epkd_tf.models.user import load_user_model
    mixed = precision.with_policy(conv_net(), "mixed_float16")
    graph = analyze(mixed)
    pruned = remove_groups(graph, [0, 1])
    assert precision.model_precision(pruned) == "mixed_float16"
    assert pruned.get_layer("logits").dtype_policy.name == "float32"
    path = str(tmp_path / "student.keras")
    pruned.save(path)
    reloaded = load_user_model(path, "teacher_path")          # the safe loader
    assert policies(reloaded) == policies(pruned)
    x = images(4)
    np.testing.assert_allclose(reloaded(x).numpy(), pruned(x).numpy(), rtol=1e-6)


@pytest.mark.unit
def test_float16_distillation_trains_with_a_scaled_loss():
    """The Distiller's own train step scales the loss of a float16 student (its optimizer
    is a LossScaleOptimizer) and learns: finite losses, changed weights."""
    from epkd_tf.data import from_arrays
    from epkd_tf.distill.finetune import distil
    teacher = conv_net(seed=1)
    student = precision.with_policy(conv_net(seed=2), "mixed_float16")
    before = [w.copy() for w in student.get_weights()]
    x, y = images(48), np.arange(48) % 4
    data = from_arrays(x[:32], y[:32], x[32:], y[32:], batch_size=8)
    history = distil(student, teacher, data, epochs=1, alpha=0.5, temperature=4.0,
                     learning_rate=1e-3, batch_size=8)
    assert np.isfinite(np.asarray(history.history["loss"], dtype=float)).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))


@pytest.mark.unit
def test_precision_is_a_validated_setting():
    from epkd_tf.config import ConfigError, RunConfig
    from epkd_tf.settings import with_flags
    assert RunConfig().precision == "float32"
    assert with_flags(RunConfig(), precision="mixed_bfloat16").precision == "mixed_bfloat16"
    with pytest.raises(ConfigError, match="precision"):
        with_flags(RunConfig(), precision="float16")


@pytest.fixture
def determinism_restored():
    """The process's op determinism as it was before the test (a --jit_compile run turns
    it off for the process; later tests in this worker may rely on it)."""
    from epkd_tf import compat
    enabled = compat.op_determinism_enabled()
    yield
    compat.set_op_determinism(enabled)


@pytest.mark.unit
def test_seed_everything_turns_determinism_on_and_off(determinism_restored):
    from epkd_tf import compat
    from epkd_tf.seeds import seed_everything
    seed_everything(0, deterministic=False)
    assert not compat.op_determinism_enabled()
    seed_everything(0)
    assert compat.op_determinism_enabled()


@pytest.mark.e2e
def test_a_mixed_float16_run_trains_prunes_distils_and_exports_float32(tiny_dir, tmp_path,
                                                                       determinism_restored):
    """The command line with --precision=mixed_float16 (and XLA, which needs op
    determinism off for max pooling's gradient): every student computes in float16 with
    float32 logits (poly_magnitude's TF-MOT fine-tune runs on a float32 copy and gives a
    mixed candidate back), the files it writes are float32."""
    from epkd_tf.cli import main as epkd_main
    from epkd_tf.deploy.tflite import make_interpreter
    from epkd_tf.models.user import load_user_model
    out = tmp_path / "run"
    code = run_in_process(epkd_main, [
        f"--data_dir={tiny_dir}", "--dataset=tiny_digits", "--image_size=28",
        "--teacher=lenet5", "--teacher_width=0.25",
        "--teacher_epochs=1", "--iterations=1", "--finetune_epochs=1",
        "--pruners=l1_filter,taylor,poly_magnitude", "--taylor_batches=1",
        "--batch_size=32", "--latency_runs=2", "--export_formats=tflite,saved_model",
        "--precision=mixed_float16", "--jit_compile", f"--output_dir={out}"])
    assert code == 0
    student = load_user_model(str(out / "checkpoints" / "student_1.keras"), "student")
    assert precision.model_precision(student) == "mixed_float16"
    interpreter = make_interpreter((out / "tflite" / "final.tflite").read_bytes())
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    tensor_types = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.float16 not in tensor_types
    assert "--precision=mixed_float16\n" in (out / "flags.txt").read_text()
    assert os.path.isdir(out / "serving")


@pytest.mark.integration
def test_the_api_compiles_max_pooling_with_xla_and_restores_determinism(determinism_restored):
    """compress(jit_compile=True) in a process with op determinism on (a user's choice)
    trains a network with max pooling (XLA refuses its gradient under determinism) and
    leaves the process's determinism on afterwards; precision="mixed_bfloat16" gives a
    mixed final student."""
    from epkd_tf import compat
    tf_keras.utils.set_random_seed(0)
    x = images(96)
    # Four classes: which quadrant is the brightest.
    quadrants = [x[:, :6, :6], x[:, :6, 6:], x[:, 6:, :6], x[:, 6:, 6:]]
    y = np.argmax([q.mean(axis=(1, 2, 3)) for q in quadrants], axis=0)
    teacher = conv_net()
    teacher.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, verbose=0)
    compat.set_op_determinism(True)
    result = epkd_tf.compress(teacher, (x[:64], y[:64]), (x[64:], y[64:]), iterations=1,
                              keep_ratio=0.6, pruners=("l1_filter",), finetune_epochs=1,
                              batch_size=32, latency_runs=2, jit_compile=True,
                              precision="mixed_bfloat16", progress=False)
    assert compat.op_determinism_enabled()
    assert precision.model_precision(result.final) == "mixed_bfloat16"
    assert precision.model_precision(teacher) == "float32"          # the caller's model
