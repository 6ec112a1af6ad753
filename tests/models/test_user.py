"""A user's model file: loaded in safe mode from .keras, .h5 and SavedModel, checked."""
import os

import numpy as np
import pytest

import tf_keras
from epkd_tf.data import DatasetSpec
from epkd_tf.models.user import (ModelFileError, check_fits, load_user_model, model_stem)

pytestmark = pytest.mark.unit


def small_model(activation=None, classes=4, shape=(12, 12, 1)):
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input(shape)
    x = tf_keras.layers.Flatten()(inputs)
    x = tf_keras.layers.Dense(8, activation="relu")(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(classes, activation=activation)(x))


def save_all(model, directory, stem):
    """The model as .keras, .h5 and a SavedModel directory."""
    paths = [str(directory / f"{stem}.keras"), str(directory / f"{stem}.h5"),
             str(directory / f"{stem}_saved_model")]
    model.save(paths[0])
    model.save(paths[1])
    model.save(paths[2], save_format="tf")
    return paths


def test_every_format_loads_with_its_weights(tmp_path):
    model = small_model()
    for path in save_all(model, tmp_path, "good"):
        loaded = load_user_model(path, "teacher_path")
        for a, b in zip(model.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert loaded.trainable


def test_lambda_code_never_runs(tmp_path):
    # Code in a Lambda layer runs when Keras rebuilds the model: it would create `marker`.
    marker = str(tmp_path / "code_ran")
    inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.Flatten()(inputs)
    x = tf_keras.layers.Lambda(lambda t, m=marker: (open(m, "w").close(), t)[1],
                               name="sneaky")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x))
    paths = save_all(model, tmp_path, "lambda")
    os.remove(marker)                      # building and saving the model ran it here
    for path in paths:
        with pytest.raises(ModelFileError, match=r"--teacher_path=.* Lambda layer 'sneaky'"):
            load_user_model(path, "teacher_path")
        assert not os.path.exists(marker), path
    # Plain load_model would have run it: safe_mode does not cover .h5 (nor SavedModels).
    tf_keras.models.load_model(paths[1], compile=False)
    assert os.path.exists(marker)


def test_checks_name_the_problem(tmp_path):
    spec = DatasetSpec(name="tiny", input_shape=(12, 12, 1), num_classes=4, num_train=8,
                       num_test=8)
    check_fits(small_model(), spec, "teacher_path", "tiny")
    for model, message in [(small_model(classes=10), "predicts 10 classes"),
                           (small_model(shape=(28, 28, 1)), "input shape"),
                           (small_model(activation="softmax"), "outputs probabilities")]:
        with pytest.raises(ModelFileError, match=message):
            check_fits(model, spec, "teacher_path", "tiny")
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    with pytest.raises(ModelFileError, match="broken.keras is not a readable .keras file"):
        load_user_model(str(tmp_path / "broken.keras"), "teacher_path")


@pytest.mark.parametrize("activation,layer", [("sigmoid", "dense"), ("hard_sigmoid", "dense"),
                                              ("tanh", "dense"), ("sigmoid", "activation")])
def test_a_squashing_output_is_refused_like_a_softmax(activation, layer):
    # Distillation takes the teacher's outputs as logits: sigmoid/tanh outputs would be
    # distilled from silently (issue 25); refused like a softmax, naming the layer.
    spec = DatasetSpec(name="tiny", input_shape=(12, 12, 1), num_classes=4, num_train=8,
                       num_test=8)
    model = small_model(activation=activation if layer == "dense" else None)
    if layer == "activation":
        model = tf_keras.Model(model.inputs, tf_keras.layers.Activation(
            activation, name="squash")(model.outputs[0]))
    name = model.layers[-1].name
    with pytest.raises(ModelFileError, match=rf"^--teacher_path outputs .*\({activation} "
                                             rf"in layer '{name}'\); epkd_tf needs logits"):
        check_fits(model, spec, "teacher_path", "tiny")
    check_fits(small_model(activation="linear"), spec, "teacher_path", "tiny")


def test_model_stem_is_a_safe_name():
    assert model_stem("/x/my teacher (v2).h5") == "my-teacher-v2-"
    assert model_stem("runs/../saved/") == "saved"
    assert model_stem("/x/...keras") == "model"
