"""The Python API, notebook-style: an own tf_keras model on NumPy arrays, every pruner,
compress, export; bad arguments get one clear error."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import os

import numpy as np
import pytest

import tf_keras

CLASSES, SIDE = 4, 12


def quadrant_data(n, seed):
    """Learnable images: the class is the bright quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.uniform(0, 0.3, (n, SIDE, SIDE, 1)).astype(np.float32)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * 6:(r + 1) * 6, c * 6:(c + 1) * 6] += 0.6
    return x, y


@pytest.fixture(scope="module")
def arrays():
    return quadrant_data(384, 0), quadrant_data(128, 1)


@pytest.fixture(scope="module")
def teacher(arrays):
    """A user's own model: a small convnet trained with plain tf_keras."""
    (x, y), _ = arrays
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((SIDE, SIDE, 1))
    h = tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = tf_keras.layers.MaxPooling2D()(h)
    h = tf_keras.layers.Flatten()(h)
    h = tf_keras.layers.Dense(32, activation="relu")(h)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(CLASSES)(h))
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model


@pytest.mark.e2e
def test_the_api_is_importable_without_tensorflow():
    import subprocess
    import sys
    code = ("import sys, epkd_tf; names = epkd_tf.__all__; "
            "assert 'compress' in names and 'prune' in names; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


@pytest.mark.integration
@pytest.mark.parametrize("criterion", ["l1_filter", "taylor", "oracle", "poly_magnitude"])
def test_prune_with_every_criterion_on_numpy_arrays(teacher, arrays, criterion):
    from epkd_tf.graph import dense_params, nonzero_params
    (x, y), _ = arrays
    before = [w.copy() for w in teacher.get_weights()]
    target = int(0.5 * nonzero_params(teacher))
    smaller = epkd_tf.prune(teacher, target, criterion=criterion, data=(x, y),
                            **({"batches": 2} if criterion == "taylor" else {}))
    assert abs(nonzero_params(smaller) - target) <= 0.05 * target
    if criterion == "poly_magnitude":
        assert dense_params(smaller) == dense_params(teacher)
    else:
        assert dense_params(smaller) < dense_params(teacher)
    assert smaller.predict(x[:4], verbose=0).shape == (4, CLASSES)
    for a, b in zip(before, teacher.get_weights()):           # the input is not changed
        np.testing.assert_array_equal(a, b)


@pytest.mark.integration
def test_prune_to_a_fraction_of_macs_without_data(teacher):
    from epkd_tf.budget import multiply_accumulates
    smaller = epkd_tf.prune(teacher, 0.5, criterion="l1_filter", budget="macs")
    assert multiply_accumulates(smaller) <= 0.55 * multiply_accumulates(teacher)


@pytest.mark.integration
@pytest.mark.parametrize("call, message", [
    (lambda m, d: epkd_tf.prune(m, 0.5, criterion="tayler", data=d), "did you mean 'taylor'"),
    (lambda m, d: epkd_tf.prune(m, 0.5, criterion="taylor"), "pass data=(x, y)"),
    (lambda m, d: epkd_tf.prune(m, -3, criterion="l1_filter"), "target=-3 is invalid"),
    (lambda m, d: epkd_tf.prune(m, 0.5, criterion="taylor", data=d, batchez=2),
     "not settings of 'taylor'"),
    (lambda m, d: epkd_tf.prune(m, 0.5, criterion="poly_magnitude", data=d, budget="latency"),
     "cannot lower latency"),
    (lambda m, d: epkd_tf.prune("no/such/model.keras", 0.5), "does not exist"),
    (lambda m, d: epkd_tf.prune(42, 0.5), "model is a int"),
])
def test_prune_refuses_bad_arguments_with_one_line(teacher, arrays, call, message):
    (x, y), _ = arrays
    import re
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        call(teacher, (x, y))
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def compressed(teacher, arrays):
    (x, y), test = arrays
    return epkd_tf.compress(teacher, (x, y), test, iterations=2, keep_ratio=0.6,
                            finetune_epochs=1, taylor_batches=2, oracle_examples=64,
                            batch_size=32, latency_runs=3, validation_split="0.2")


@pytest.mark.integration
def test_compress_on_numpy_arrays_with_every_pruner(compressed, teacher):
    from epkd_tf.graph import nonzero_params
    result = compressed
    assert result.output_dir is None                     # kept in memory, nothing on disk
    assert len(result.students) == 2 and result.final is result.students[-1]
    candidates = result.tables["candidates"]
    assert set(candidates.pruner) == {"l1_filter", "taylor", "oracle", "poly_magnitude"}
    assert candidates.validation_accuracy.notna().all()   # ranked on the held-out split
    students = result.tables["students"]
    assert result.tables["final"].iteration.tolist() == [2] and result.final_iteration == 2
    assert nonzero_params(result.final) == students.nonzero_params.iloc[-1]
    assert nonzero_params(result.final) < 0.5 * nonzero_params(teacher)
    assert "Teacher → final student" in result.headline
    assert "Files of" not in result.headline              # its directory is gone
    assert students.test_accuracy.iloc[-1] > 0.8


@pytest.mark.integration
def test_the_result_exports_its_final_student(compressed, tmp_path):
    rows = compressed.export(str(tmp_path / "out"), formats=("saved_model", "tflite"))
    assert rows.format.tolist() == ["saved_model", "tflite"]
    assert (tmp_path / "out" / "tflite" / "final.tflite").exists()
    assert (tmp_path / "out" / "serving" / "final" / "1" / "saved_model.pb").exists()
    assert rows.test_accuracy.notna().all()


@pytest.mark.integration
def test_compress_keeps_a_run_directory_when_asked(teacher, arrays, tmp_path):
    """... and its headline names the final model's files in it (a run in a temporary
    directory, removed afterwards, names none: test_compress_on_numpy_arrays...). An
    accuracy rule within the split's noise is warned about through the epkd_tf logger,
    as on the command line."""
    import logging
    (x, y), test = arrays
    out = tmp_path / "run"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("epkd_tf")
    logger.addHandler(handler)
    try:
        result = epkd_tf.compress(teacher, (x, y), test, output_dir=str(out), iterations=1,
                                  pruners=("l1_filter",), finetune_epochs=1, batch_size=64,
                                  latency_runs=2, export_formats=("tflite",),
                                  max_accuracy_drop=0.5)
    finally:
        logger.removeHandler(handler)
    assert result.output_dir == str(out)
    assert (out / "students.csv").exists() and (out / "tflite" / "final.tflite").exists()
    assert "* TFLite float32: `tflite/final.tflite`" in result.headline
    noise = [r.getMessage() for r in records if "is judged on the" in r.getMessage()]
    assert len(noise) == 1 and "--max_accuracy_drop=0.5" in noise[0], noise


@pytest.mark.integration
@pytest.mark.parametrize("kwargs, message", [
    (dict(keep_ratio=1.5), "--keep_ratio=1.5 is invalid"),
    (dict(pruners=("magic",)), "unknown pruner 'magic'"),
    (dict(no_such_setting=1), "no such setting"),
    (dict(validation_split="train[90%:]"), "fraction"),
])
def test_compress_refuses_bad_settings_before_any_work(teacher, arrays, kwargs, message):
    (x, y), test = arrays
    with pytest.raises(ValueError, match=message):
        epkd_tf.compress(teacher, (x, y), test, **kwargs)


@pytest.mark.integration
def test_compress_refuses_data_that_does_not_fit_the_teacher(teacher, arrays):
    (x, y), test = arrays
    with pytest.raises(ValueError, match="input shape"):
        epkd_tf.compress(teacher, (x[:, :8, :8], y), (test[0][:, :8, :8], test[1]))
    with pytest.raises(ValueError, match="teacher predicts 4 classes but the data has 104"):
        epkd_tf.compress(teacher, (x, y + 100), (test[0], test[1] + 100))


@pytest.mark.integration
def test_compress_accepts_a_keras3_model_and_gives_keras3_models_back(arrays, tmp_path):
    """A model built and trained with Keras 3 (TF 2.21's own keras) is converted in, and
    the result's models are Keras 3 ones again: saved with Keras 3, they load with it."""
    import keras
    (x, y), test = arrays
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(CLASSES)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, verbose=0)
    result = epkd_tf.compress(model, (x, y), test, iterations=1, pruners=("l1_filter",),
                              finetune_epochs=1, batch_size=64, latency_runs=2)
    assert result.keras == "keras3"
    for made in [result.teacher, result.final, *result.students]:
        assert isinstance(made, keras.Model) and not isinstance(made, tf_keras.Model)
    np.testing.assert_allclose(result.teacher.predict(x[:8], verbose=0),
                               model.predict(x[:8], verbose=0), atol=1e-5)
    # The Keras 3 final student computes what the run's own tf_keras one does...
    np.testing.assert_allclose(result.final.predict(x[:8], verbose=0),
                               result.tf_keras_models["final"].predict(x[:8], verbose=0),
                               atol=1e-5)
    # ... and round-trips through Keras 3's own file format in safe mode.
    path = str(tmp_path / "student.keras")
    result.final.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x[:8], verbose=0),
                               result.final.predict(x[:8], verbose=0), atol=1e-6)
    rows = result.export(str(tmp_path / "out"), formats=("tflite",))   # the tf_keras model
    assert rows.test_accuracy.notna().all()


@pytest.mark.integration
def test_compress_refuses_a_teacher_tflite_cannot_convert_before_any_work(arrays, tmp_path):
    """A recurrent teacher (not unrolled) fails LiteRT's conversion, which every run needs
    for its latencies: refused up front naming the layer, as on the command line, and no
    run directory is left."""
    (x, y), (xt, yt) = arrays
    inputs = tf_keras.Input((SIDE, SIDE, 1))
    rows = tf_keras.layers.Reshape((SIDE, SIDE))(inputs)      # rows as time steps
    lstm = tf_keras.layers.LSTM(8, name="rows")(rows)
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(CLASSES)(lstm))
    out = tmp_path / "run"
    with pytest.raises(epkd_tf.ApiError, match="layer 'rows' \\(LSTM\\) cannot be converted "
                                               "to TFLite") as err:
        epkd_tf.compress(teacher, (x, y), (xt, yt), output_dir=str(out),
                         pruners=("poly_magnitude",), iterations=1)
    assert "\n" not in str(err.value) and not out.exists()
