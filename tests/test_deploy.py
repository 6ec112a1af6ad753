"""Deployment exports: raw-image SavedModel signature, models.config, TFLite formats."""
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tf_keras
from epkd_tf import training
from epkd_tf.deploy import exports as deploy
from epkd_tf.deploy import saved_model
from epkd_tf.deploy import tflite as metrics
from epkd_tf.config import DataConfig
from epkd_tf.data import load_data
from epkd_tf.models import build_model
from epkd_tf.records import TABLES, RunDir

TFLITE = ["tflite", "tflite_sparse", "tflite_int8_dynamic", "tflite_int8"]


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """tiny_digits (12x12x1 uint8, 4 classes) and a LeNet-300-100 trained on it."""
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=64))
    tf_keras.utils.set_random_seed(0)
    model = build_model("lenet300_100", data.spec.input_shape, data.spec.num_classes)
    training.train_classifier(model, data, epochs=10, learning_rate=1e-3)
    return data, model


def raw_test(data):
    """The test split as a client holds it: uint8 images at the stored size, labels."""
    xs, ys = zip(*data._test_base.as_numpy_iterator())
    return np.stack(xs), np.array(ys)


def sparse_copy(model, zeros=0.8):
    """``model`` with the smallest ``zeros`` fraction of every kernel set to exactly 0."""
    copy = tf_keras.models.clone_model(model)
    weights = []
    for w in model.get_weights():
        if w.ndim > 1:
            w = np.where(np.abs(w) < np.quantile(np.abs(w), zeros), 0.0, w).astype(w.dtype)
        weights.append(w)
    copy.set_weights(weights)
    return copy


@pytest.mark.integration
@pytest.mark.parametrize("batchable", [True, False], ids=["whole_batch", "per_image"])
def test_raw_image_signature_matches_keras(tiny, tmp_path, batchable):
    data, model = tiny
    assert saved_model.raw_image_shape(data) == (12, 12, 1)
    path = str(tmp_path / "sm")
    saved_model.export_saved_model(model, path, data.recipe.preprocess, saved_model.raw_image_shape(data),
                              batchable=batchable)
    loaded = tf.saved_model.load(path)
    raw, labels = raw_test(data)
    assert raw.dtype == np.uint8
    out = loaded.signatures["serving_default"](images=tf.constant(raw))
    x, y = data.numpy_test()                      # the same examples, preprocessed
    np.testing.assert_array_equal(y, labels)
    logits = model(x).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(logits).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-5)
    assert out["classes"].numpy().tolist() == logits.argmax(-1).tolist()
    float_out = loaded.signatures["serving_preprocessed"](images=tf.constant(x))
    np.testing.assert_allclose(float_out["logits"].numpy(), logits, atol=1e-5)
    # The Keras metadata is kept: the export CLI reloads it as a Keras model.
    np.testing.assert_allclose(tf_keras.models.load_model(path, compile=False)(x).numpy(),
                               logits, atol=1e-6)


@pytest.mark.integration
def test_without_preprocessing_the_signature_takes_float_images(tiny, tmp_path):
    _, model = tiny
    saved_model.export_saved_model(model, str(tmp_path / "sm"))
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["images"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 12, 12, 1]


CONFIG_RE = re.compile(r"config \{\s*name: '([^']+)'\s*base_path: '([^']+)'\s*"
                       r"model_platform: 'tensorflow'\s*\}")


@pytest.mark.integration
def test_models_config_names_teacher_and_student_with_existing_paths(tiny, tmp_path):
    data, model = tiny
    run = RunDir(str(tmp_path / "run"))
    deploy.export_model(run, model, "teacher", ["saved_model"], serving_name="teacher",
                        version=1, iteration=0, data=data)
    for k in (1, 2):
        deploy.export_model(run, model, f"student_{k}", ["saved_model"],
                            serving_name="student", version=k, iteration=k, data=data)
    text = open(run.path("serving", "models.config")).read()
    assert re.fullmatch(r"model_config_list \{\s*(" + CONFIG_RE.pattern + r"\s*)+\}\s*", text)
    configs = dict(CONFIG_RE.findall(text))
    assert configs == {"teacher": run.path("serving", "teacher"),
                       "student": run.path("serving", "student")}
    for base in configs.values():
        assert os.path.isabs(base) and os.path.isdir(base)
    assert sorted(os.listdir(configs["student"])) == ["1", "2"]   # newest version is served
    docker = dict(CONFIG_RE.findall(open(run.path("serving", "models.docker.config")).read()))
    assert docker == {"teacher": "/models/teacher", "student": "/models/student"}


@pytest.mark.integration
def test_every_format_converts_and_is_measured(tiny, tmp_path):
    data, model = tiny
    sparse = sparse_copy(model)
    run = RunDir(str(tmp_path / "run"))
    rows, float_bytes = deploy.export_model(run, sparse, "student_1", deploy.FORMATS,
                                            serving_name="student", version=1, iteration=1,
                                            data=data, latency_runs=5)
    assert list(rows.reindex(columns=TABLES["deployment"]).columns) == TABLES["deployment"]
    assert rows.format.tolist() == list(deploy.FORMATS)
    assert rows.path.tolist() == ["serving/student/1", "tflite/student_1.tflite",
                                  "tflite/student_1_sparse.tflite",
                                  "tflite/student_1_int8_dynamic.tflite",
                                  "tflite/student_1_int8.tflite", "keras3/student_1.keras"]
    for r in rows.itertuples():
        assert os.path.exists(run.path(r.path)) and r.bytes > 0 and 0 < r.gzip_bytes
    tfl = rows[rows.format.str.startswith("tflite")].set_index("format")
    for fmt, r in tfl.iterrows():     # gzip_bytes: the file at gzip's default level
        with open(run.path(r.path), "rb") as f:
            assert r.gzip_bytes == len(gzip.compress(f.read(), 6)), fmt
    assert (tfl.latency_ms_median > 0).all() and (tfl.latency_ms_p90 >= tfl.latency_ms_median).all()
    assert rows.latency_ms_median.isna().tolist() == [True, False, False, False, False, True]
    keras_accuracy = training.accuracy(sparse, data.test())
    assert rows.set_index("format").loc["saved_model", "test_accuracy"] == pytest.approx(
        keras_accuracy)
    # keras3: a Keras 3 file of the same model, its accuracy measured on it
    keras3 = rows.set_index("format").loc["keras3"]
    with open(run.path(keras3.path), "rb") as f:
        assert keras3.gzip_bytes == len(gzip.compress(f.read(), 6))
    assert keras3.test_accuracy == pytest.approx(keras_accuracy, abs=1e-9)
    assert keras_accuracy > 0.8
    # float TFLite computes the Keras model; int8 stays close on this easy task
    assert tfl.loc["tflite", "test_accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert abs(tfl.loc["tflite_int8_dynamic", "test_accuracy"] - keras_accuracy) <= 0.03
    assert abs(tfl.loc["tflite_int8", "test_accuracy"] - keras_accuracy) <= 0.05
    # an 80%-zero model: the sparse encoding is smaller, gzipped or not
    assert tfl.loc["tflite_sparse", "bytes"] < 0.6 * tfl.loc["tflite", "bytes"]
    assert tfl.loc["tflite_sparse", "gzip_bytes"] < tfl.loc["tflite", "gzip_bytes"]
    # int8 stores one byte per weight
    assert tfl.loc["tflite_int8", "bytes"] < 0.35 * tfl.loc["tflite", "bytes"]
    assert float_bytes == open(run.path("tflite/student_1.tflite"), "rb").read()


@pytest.mark.integration
def test_float_tflite_matches_keras_and_int8_has_int8_io(tiny):
    data, model = tiny
    x, _ = data.numpy_test()
    interpreter = metrics.make_interpreter(metrics.to_tflite(model, "tflite"))
    np.testing.assert_allclose(metrics.tflite_predict(interpreter, x), model(x).numpy(),
                               atol=1e-4)
    int8 = metrics.make_interpreter(metrics.to_tflite(model, "tflite_int8", x[:64]))
    assert int8.get_input_details()[0]["dtype"] == np.int8
    assert int8.get_output_details()[0]["dtype"] == np.int8
    agree = (metrics.tflite_predict(int8, x).argmax(-1) == model(x).numpy().argmax(-1)).mean()
    assert agree >= 0.95
    with pytest.raises(ValueError, match="representative"):
        metrics.to_tflite(model, "tflite_int8")


@pytest.mark.integration
def test_int8_calibration_batches_fit_the_memory_bound(tiny, monkeypatch):
    """The calibrator keeps every intermediate tensor of its batch: batches are cut to
    what fits CALIBRATION_MEMORY (here three examples), and quantise as batches of 32
    do."""
    from epkd_tf.activations import activation_values
    data, model = tiny
    x, _ = data.numpy_test()
    whole = metrics.to_tflite(model, "tflite_int8", x[:64])
    seen = []
    converter_class = metrics.tf.lite.TFLiteConverter

    class Spy(converter_class):
        def convert(self):
            feed = self.representative_dataset
            self.representative_dataset = lambda: (seen.append(len(b[0])) or b
                                                   for b in feed())
            return super().convert()
    monkeypatch.setattr(metrics.tf.lite, "TFLiteConverter", Spy)
    monkeypatch.setattr(metrics, "CALIBRATION_MEMORY", 4 * activation_values(model) * 3)
    small = metrics.to_tflite(model, "tflite_int8", x[:64])
    assert seen == [3] * 21 + [1]
    # The ranges are min/max over all values: the same scales (a float rounding apart;
    # the files differ in a few bytes).
    scales = [[float(t["quantization"][0]) for t in metrics.make_interpreter(f)
               .get_tensor_details() if t["dtype"] == np.int8] for f in (whole, small)]
    assert len(scales[0]) == len(scales[1])
    np.testing.assert_allclose(scales[1], scales[0], rtol=1e-4)
    int8 = metrics.make_interpreter(small)
    agree = (metrics.tflite_predict(int8, x).argmax(-1) == model(x).numpy().argmax(-1)).mean()
    assert agree >= 0.95


def dense_weight_zero_points(flatbuffer: bytes) -> list:
    """How many zero points each int8 Dense weight stores (1 = per tensor, units = per
    channel) and whether its scales take a single value."""
    interpreter = metrics.make_interpreter(flatbuffer)
    found = []
    for t in interpreter.get_tensor_details():
        if t["dtype"] == np.int8 and len(t["shape"]) == 2 and t["shape"][0] > 1:
            q = t["quantization_parameters"]
            found.append((len(q["zero_points"]), len(set(q["scales"].tolist())) == 1))
    return found


@pytest.mark.integration
def test_int8_dense_weights_are_per_tensor_unless_asked(tiny):
    data, model = tiny
    x, _ = data.numpy_test()
    per_tensor = metrics.to_tflite(model, "tflite_int8", x[:64])
    per_channel = metrics.to_tflite(model, "tflite_int8", x[:64], dense_per_channel=True)
    units = [layer.units for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)]
    assert dense_weight_zero_points(per_tensor) == [(1, True)] * len(units)
    assert sorted(n for n, _ in dense_weight_zero_points(per_channel)) == sorted(units)
    # Each dropped scale saved at least its float32 scale and int64 zero point.
    assert len(per_channel) - len(per_tensor) >= 12 * (sum(units) - len(units))


@pytest.mark.integration
def test_sparse_format_is_skipped_for_dense_models(tiny, tmp_path):
    data, model = tiny
    assert deploy.zero_fraction(model) < deploy.SPARSE_MIN_ZEROS
    rows, _ = deploy.export_model(RunDir(str(tmp_path)), model, "teacher",
                                  ["tflite", "tflite_sparse"], serving_name="teacher",
                                  version=1, iteration=0, data=data, latency_runs=2)
    assert rows.format.tolist() == ["tflite"]
    assert not (tmp_path / "tflite" / "teacher_sparse.tflite").exists()


@pytest.mark.integration
def test_keras3_skips_a_model_it_cannot_convert(tiny, tmp_path, caplog):
    data, _ = tiny
    inputs = tf_keras.Input(data.spec.input_shape)
    x = tf_keras.layers.ThresholdedReLU(0.5, name="gate")(tf_keras.layers.Flatten()(inputs))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(data.spec.num_classes)(x))
    with caplog.at_level("WARNING", logger="epkd_tf"):
        rows, _ = deploy.export_model(RunDir(str(tmp_path)), model, "teacher",
                                      ["tflite", "keras3"], serving_name="teacher", version=1,
                                      iteration=0, data=data, latency_runs=2)
    assert rows.format.tolist() == ["tflite"]
    assert "teacher: keras3 skipped" in caplog.text and "'gate' (ThresholdedReLU)" in caplog.text
    assert not (tmp_path / "keras3").exists()


@pytest.mark.integration
def test_latency_reports_median_and_p90(tiny):
    _, model = tiny
    median, p90 = metrics.tflite_latency(metrics.to_tflite(model), runs=20, warmup=2, threads=2)
    assert 0 < median <= p90


@pytest.mark.unit
def test_saved_model_sizes(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"\0" * 5000)
    (tmp_path / "d" / "sub" / "b").write_bytes(b"x" * 300)
    assert deploy.directory_bytes(str(tmp_path / "d")) == 5300
    assert 0 < deploy.gzip_tar_bytes(str(tmp_path / "d")) < 1000


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH")
def test_tensorflow_serving_answers_rest_predict(tiny, tmp_path):
    data, model = tiny
    run = RunDir(str(tmp_path / "run"))
    deploy.export_model(run, model, "teacher", ["saved_model"], serving_name="teacher",
                        version=1, iteration=0, data=data)
    deploy.export_model(run, model, "student_1", ["saved_model"], serving_name="student",
                        version=1, iteration=1, data=data)
    port = _free_port()
    server = subprocess.Popen(["tensorflow_model_server", f"--rest_api_port={port}",
                               f"--port={_free_port()}", "--rest_api_num_threads=1",
                               f"--model_config_file={run.path('serving', 'models.config')}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        raw, _ = raw_test(data)
        body = json.dumps({"instances": raw[:4].tolist()}).encode()
        url = f"http://127.0.0.1:{port}/v1/models/student:predict"
        deadline, answer = time.time() + 60, None
        while answer is None and time.time() < deadline:
            try:
                request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
                answer = json.load(urllib.request.urlopen(request, timeout=5))
            except OSError:
                time.sleep(0.5)
        assert answer is not None, "TF Serving did not answer within 60 s"
        predictions = answer["predictions"]
        x, _ = data.numpy_test()
        expected = tf.nn.softmax(model(x[:4])).numpy()
        np.testing.assert_allclose([p["probabilities"] for p in predictions], expected,
                                   atol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.unit
def test_resume_drops_deployment_rows_of_unfinished_stages(tmp_path):
    run = RunDir(str(tmp_path))
    rows = pd.DataFrame({"model": ["teacher", "student_1", "student_2"], "iteration": [0, 1, 2],
                         "format": "tflite"})
    run.tables.append("deployment", rows)
    run.stages.drop_unfinished()                  # killed while exporting the teacher
    assert run.tables.read("deployment").empty
    run.tables.append("deployment", rows)
    run.stages.mark(teacher_done=True, iterations_done=1)
    run.stages.drop_unfinished()                  # killed during iteration 2
    assert run.tables.read("deployment").model.tolist() == ["teacher", "student_1"]


@pytest.mark.unit
def test_tflite_file_names():
    run = RunDir("/r")
    assert run.keras3_path("student_3") == "/r/keras3/student_3.keras"
    assert run.tflite_path("teacher") == "/r/tflite/teacher.tflite"
    assert run.tflite_path("student_3", "tflite_int8") == "/r/tflite/student_3_int8.tflite"
    assert run.tflite_path("student_3", "tflite_sparse") == "/r/tflite/student_3_sparse.tflite"
    with pytest.raises(ValueError):
        run.tflite_path("teacher", "saved_model")


@pytest.mark.integration
def test_tflite_accuracy_batches_fit_the_memory_bound(tiny, monkeypatch, tmp_path):
    """Each interpreter allocates its whole batch's tensors and every format is measured
    in the same pass: the batch is cut so that one set of layer outputs per interpreter
    fits EVAL_MEMORY, with the same accuracies as at the full batch."""
    from epkd_tf.activations import activation_values
    data, model = tiny
    per_example = 4 * activation_values(model)          # float32 layer outputs
    assert deploy.accuracy_batch(model, 2) == deploy.EVAL_BATCH    # tiny: the full batch
    monkeypatch.setattr(deploy, "EVAL_MEMORY", per_example * 2 * 5)
    assert deploy.accuracy_batch(model, 2) == 5
    assert deploy.accuracy_batch(model, 1) == 10
    monkeypatch.setattr(deploy, "EVAL_MEMORY", per_example // 2)
    assert deploy.accuracy_batch(model, 3) == 1          # one example, whatever it costs
    flatbuffers = {fmt: metrics.to_tflite(model, fmt) for fmt in ("tflite", "tflite_sparse")}
    x, y = data.numpy_test()
    expected = float((model(x).numpy().argmax(-1) == y).mean())
    for batch in (deploy.EVAL_BATCH, 7):
        accuracies = deploy.tflite_accuracies(flatbuffers, data, batch)
        assert accuracies == pytest.approx({"tflite": expected, "tflite_sparse": expected},
                                           abs=1.5 / len(y))
    # export_model measures at the bounded batch.
    seen = []
    measure = deploy.tflite_accuracies
    monkeypatch.setattr(deploy, "tflite_accuracies",
                        lambda fbs, d, batch: seen.append(batch) or measure(fbs, d, batch))
    monkeypatch.setattr(deploy, "EVAL_MEMORY", per_example * 2 * 5)
    run = RunDir(str(tmp_path / "run"))
    deploy.export_model(run, model, "student_1", ("tflite", "tflite_int8_dynamic"),
                        serving_name="student", version=1, data=data, latency_runs=2)
    assert seen == [5]
