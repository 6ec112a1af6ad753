"""The Python API's refusals of unusable models: one line, an ApiError (the package's
error base), never a raw TypeError/ValueError from deep inside Keras."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import pytest

import tf_keras

from epkd_tf.errors import ApiError, EpkdError

pytestmark = pytest.mark.unit


def one_line(err) -> str:
    text = str(err.value)
    assert isinstance(err.value, EpkdError) and "\n" not in text
    return text


@pytest.mark.parametrize("path", [None, 3, ["model.keras"]])
def test_load_model_of_something_that_is_no_path(path):
    with pytest.raises(ApiError) as err:
        epkd_tf.load_model(path)
    assert f"path is a {type(path).__name__}" in one_line(err)


def test_an_unbuilt_model_is_refused_by_name():
    unbuilt = tf_keras.Sequential([tf_keras.layers.Dense(2)])
    for call, argument in [(lambda: epkd_tf.prune(unbuilt, 0.5, criterion="l1_filter"),
                            "model"),
                           (lambda: epkd_tf.analyze(unbuilt), "model")]:
        with pytest.raises(ApiError) as err:
            call()
        assert one_line(err).startswith(f"{argument} is not built")


def test_an_unbuilt_keras3_model_is_refused_by_name():
    import keras
    with pytest.raises(ApiError) as err:
        epkd_tf.analyze(keras.Sequential([keras.layers.Dense(2)]))
    assert one_line(err).startswith("model is not built")


def keras3_file(tmp_path, activation):
    """A Keras 3 file whose Dense layer stores ``activation`` (a lambda is written as its
    bytecode: code that would run on loading)."""
    import warnings
    import keras
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation=activation)(inputs))
    path = str(tmp_path / "lambda.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # Keras warns that a lambda is unsafe
        model.save(path)
    return path


def test_a_keras3_lambda_activation_is_refused_as_stored_code(tmp_path):
    path = keras3_file(tmp_path, lambda t: t * 2)
    with pytest.raises(ApiError) as err:
        epkd_tf.load_model(path)
    message = one_line(err)
    assert "(Dense): activation is a stored lambda (Python bytecode)" in message
    assert "unhashable" not in message
    assert message.startswith(f"path={path} is a Keras 3 model")     # not --path=...


@pytest.mark.parametrize("kind", ["file", "number"])
def test_compress_refuses_an_output_dir_that_is_no_directory(kind, tmp_path):
    """Checked before the teacher or data are even looked at: one line, nothing written."""
    from epkd_tf.errors import RunDirError
    target = tmp_path / "a_file"
    target.write_text("mine")
    output_dir = str(target) if kind == "file" else 7
    with pytest.raises(RunDirError if kind == "file" else ApiError) as err:
        epkd_tf.compress(object(), None, None, output_dir=output_dir)
    message = one_line(err)
    assert ("exists and is not a directory" if kind == "file" else
            "output_dir is a int") in message
    assert target.read_text() == "mine" and sorted(tmp_path.iterdir()) == [target]
