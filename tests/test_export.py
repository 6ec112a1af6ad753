"""``python -m epkd_tf.export``: any .keras / SavedModel model into deployment formats."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tf_keras
from cli_helpers import error_lines, run_in_process
from epkd_tf import training
from epkd_tf.cli import export
from epkd_tf.config import DataConfig
from epkd_tf.data import load_data
from epkd_tf.models import build_model
from epkd_tf.records import TABLES


@pytest.fixture(scope="module")
def student(tiny_dir, tmp_path_factory):
    """A LeNet-300-100 trained on tiny_digits, saved as .keras."""
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=64))
    tf_keras.utils.set_random_seed(0)
    model = build_model("lenet300_100", data.spec.input_shape, data.spec.num_classes)
    training.train_classifier(model, data, epochs=3, learning_rate=1e-3)
    path = str(tmp_path_factory.mktemp("model") / "student_7.keras")
    model.save(path)
    return path, data, model


@pytest.mark.integration
def test_export_writes_formats_and_deployment_csv(student, tiny_dir, tmp_path):
    path, data, model = student
    out = tmp_path / "out"
    code = run_in_process(export, [f"--model={path}", f"--output_dir={out}",
                                   "--formats=saved_model,tflite,tflite_int8",
                                   "--dataset=tiny_digits", f"--data_dir={tiny_dir}",
                                   "--latency_runs=3"])
    assert code == 0
    rows = pd.read_csv(out / "deployment.csv")
    assert list(rows.columns) == TABLES["deployment"]
    assert rows.model.unique().tolist() == ["student_7"]
    assert rows.format.tolist() == ["saved_model", "tflite", "tflite_int8"]
    assert rows.path.tolist() == ["serving/student_7/1", "tflite/student_7.tflite",
                                  "tflite/student_7_int8.tflite"]
    assert all((out / p).exists() for p in rows.path) and (rows.bytes > 0).all()
    expected = training.accuracy(model, data.test())
    assert rows.test_accuracy.tolist()[:2] == pytest.approx([expected, expected], abs=1e-6)
    assert "'student_7'" in (out / "serving" / "models.config").read_text()
    # The raw-image signature: uint8 images at the stored 12x12x1.
    signature = tf.saved_model.load(str(out / "serving/student_7/1")).signatures["serving_default"]
    raw = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 1)).astype(np.uint8)
    logits = signature(images=tf.constant(raw))["logits"].numpy()
    np.testing.assert_allclose(logits, model(raw / 255.0).numpy(), atol=1e-5)

    # The SavedModel just written is itself a valid --model (no dataset: float signature).
    again = tmp_path / "again"
    code = run_in_process(export, [f"--model={out / 'serving/student_7/1'}", "--name=copy",
                                   f"--output_dir={again}", "--formats=saved_model,tflite",
                                   "--latency_runs=2"])
    assert code == 0
    rows = pd.read_csv(again / "deployment.csv")
    assert rows.format.tolist() == ["saved_model", "tflite"] and rows.test_accuracy.isna().all()
    signature = tf.saved_model.load(str(again / "serving/copy/1")).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.float32


@pytest.fixture(scope="module")
def mnist_shaped(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("m28") / "m28.keras")
    build_model("lenet300_100", (28, 28, 1), 4).save(path)
    return path


BAD = [
    (lambda p, m: [f"--model={p}.missing.keras", "--formats=tflite"], "--model"),
    (lambda p, m: [f"--model={p}", "--formats=tflite,tflite_fp16"], "--formats"),
    (lambda p, m: [f"--model={m}", "--formats=tflite"], "--model input shape"),
    (lambda p, m: [f"--model={p}", "--formats=tflite_int8", "--dataset="], "--dataset"),
]


@pytest.mark.integration
@pytest.mark.parametrize("make_args,named", BAD, ids=["missing", "format", "shape", "int8"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(make_args, named, student,
                                                          mnist_shaped, tiny_dir, tmp_path,
                                                          capsys):
    out = tmp_path / "never"
    args = make_args(student[0], mnist_shaped)
    dataset = [] if any(a.startswith("--dataset") for a in args) else [
        "--dataset=tiny_digits", f"--data_dir={tiny_dir}"]
    code = run_in_process(export, [*args, *dataset, f"--output_dir={out}"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


@pytest.mark.integration
def test_keras3_model_in_keras3_file_out(tiny_dir, tmp_path):
    import keras     # Keras 3: a model trained and saved the TF 2.21 default way
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=64))
    keras.utils.set_random_seed(0)
    source = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(),
                               keras.layers.Dense(16, activation="relu"),
                               keras.layers.Dense(4)])
    x, y = data.numpy_test()
    source.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    source.fit(x, y, epochs=3, verbose=0)
    path = str(tmp_path / "k3.keras")
    source.save(path)
    out = tmp_path / "out"
    code = run_in_process(export, [f"--model={path}", f"--output_dir={out}",
                                   "--formats=keras3,tflite", "--dataset=tiny_digits",
                                   f"--data_dir={tiny_dir}", "--latency_runs=2"])
    assert code == 0
    rows = pd.read_csv(out / "deployment.csv").set_index("format")
    assert rows.index.tolist() == ["tflite", "keras3"]
    assert rows.loc["keras3", "path"] == "keras3/k3.keras"
    expected = training.accuracy(source, data.test())
    assert rows.test_accuracy.tolist() == pytest.approx([expected, expected], abs=1e-9)
    again = keras.models.load_model(str(out / "keras3" / "k3.keras"))
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(source(x)), atol=1e-5)


@pytest.mark.unit
def test_keras3_format_refuses_what_keras3_lacks(tiny_dir, tmp_path, capsys):
    inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.ThresholdedReLU(0.5, name="gate")(tf_keras.layers.Flatten()(inputs))
    path = str(tmp_path / "gate.keras")
    tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x)).save(path)
    out = tmp_path / "never"
    code = run_in_process(export, [f"--model={path}", f"--output_dir={out}",
                                   "--formats=tflite,keras3", "--dataset=tiny_digits",
                                   f"--data_dir={tiny_dir}"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert "--formats=keras3" in lines[0] and "layer 'gate' (ThresholdedReLU)" in lines[0]
    assert not out.exists()
