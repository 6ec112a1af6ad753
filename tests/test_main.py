"""The CLI: a real end-to-end run on a slice of MNIST, bad flags, resuming."""
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from cli_helpers import error_lines, run_in_process
from epkd_tf.cli import main as epkd_main
from epkd_tf.deploy.exports import SPARSE_MIN_ZEROS
from epkd_tf.records import TABLES

SLICE = ["--train_split=train[:3%]", "--test_split=test[:10%]", "--teacher_epochs=2",
         "--iterations=2", "--finetune_epochs=1", "--latency_runs=3", "--oracle_examples=256",
         "--taylor_batches=2", "--batch_size=64"]


@pytest.fixture(scope="module")
def mnist_run(mnist_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "lenet300")
    code = run_in_process(epkd_main, [f"--data_dir={mnist_dir}", f"--output_dir={out}",
                                      "--export_candidates", "--export_every_student",
                                      *SLICE])
    assert code == 0
    return out


def read(out, table):
    return pd.read_csv(os.path.join(out, f"{table}.csv"))


@pytest.mark.e2e
def test_every_table_has_its_documented_columns_and_rows(mnist_run):
    for table in ["teacher_history", "candidates", "finetune_history", "students",
                  "criteria_correlation", "timings", "deployment"]:
        assert list(read(mnist_run, table).columns) == TABLES[table], table
    assert len(read(mnist_run, "teacher_history")) == 2
    candidates = read(mnist_run, "candidates")
    assert len(candidates) == 2 * 4
    assert sorted(candidates.pruner.unique()) == ["l1_filter", "oracle", "poly_magnitude",
                                                  "taylor"]
    students = read(mnist_run, "students")
    assert students.iteration.tolist() == [1, 2]
    assert students.temperature.tolist() == [50.0, 45.0]
    assert read(mnist_run, "finetune_history").temperature.tolist() == [50.0, 45.0]


@pytest.mark.e2e
def test_candidates_of_an_iteration_have_equal_nonzero_params(mnist_run):
    candidates = read(mnist_run, "candidates")
    teacher = tf.keras.models.load_model(os.path.join(mnist_run, "checkpoints", "teacher.keras"),
                                         compile=False)
    previous = sum(int(np.count_nonzero(w)) for w in teacher.get_weights())
    students = read(mnist_run, "students").set_index("iteration")
    for iteration, group in candidates.groupby("iteration"):
        target = round(0.9 * previous)
        # within 1% or one unit's worth (a fc1 unit of LeNet-300-100 holds 784+1+100 weights)
        tolerance = max(0.01 * target, 885)
        assert (abs(group.nonzero_params - target) <= tolerance).all(), group
        previous = students.loc[iteration, "nonzero_params"]


@pytest.mark.e2e
def test_ranking_follows_weighted_score_and_winner_becomes_student(mnist_run):
    candidates = read(mnist_run, "candidates")
    students = read(mnist_run, "students").set_index("iteration")
    for iteration, group in candidates.groupby("iteration"):
        expected = (group.train_sample_accuracy + 3 * group.test_accuracy) / 4
        np.testing.assert_allclose(group.weighted_score, expected, rtol=1e-9)
        assert group.sort_values("rank").weighted_score.is_monotonic_decreasing
        winner = group[group["rank"] == 1].iloc[0]
        assert students.loc[iteration, "pruner"] == winner.pruner
        assert students.loc[iteration, "test_accuracy_before_finetune"] == pytest.approx(
            winner.test_accuracy)


@pytest.mark.e2e
def test_correlations_against_oracle_are_recorded(mnist_run):
    corr = read(mnist_run, "criteria_correlation")
    assert set(corr.criterion) == {"l1_filter", "taylor"}
    assert {"global", "layer:fc1", "layer:fc2"} <= set(corr.scope)
    assert corr.spearman.between(-1, 1).all()


@pytest.mark.e2e
def test_exports_load_and_match_the_checkpoints(mnist_run):
    raw = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    x = raw.astype(np.float32) / 255.0            # the MNIST recipe's preprocessing
    for name, serving in [("teacher", "serving/teacher/1"), ("student_2", "serving/student/2")]:
        keras_path = os.path.join(mnist_run, "checkpoints", f"{name}.keras")
        model = tf.keras.models.load_model(keras_path, compile=False)
        loaded = tf.saved_model.load(os.path.join(mnist_run, serving))
        out = loaded.signatures["serving_default"](images=tf.constant(raw))
        np.testing.assert_allclose(out["logits"].numpy(), model(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(out["probabilities"].numpy(),
                                   tf.nn.softmax(model(x)).numpy(), atol=1e-5)
        assert out["classes"].numpy().tolist() == model(x).numpy().argmax(-1).tolist()
        out = loaded.signatures["serving_preprocessed"](images=tf.constant(x))
        np.testing.assert_allclose(out["logits"].numpy(), model(x).numpy(), atol=1e-5)
        assert os.path.getsize(os.path.join(mnist_run, "tflite", f"{name}.tflite")) > 0
    for pruner in ["l1_filter", "taylor", "oracle", "poly_magnitude"]:
        assert os.path.exists(os.path.join(mnist_run, "candidates", "1", pruner,
                                           "saved_model.pb"))
    assert json.load(open(os.path.join(mnist_run, "progress.json")))["finished"]
    config = open(os.path.join(mnist_run, "serving", "models.config")).read()
    for name in ("teacher", "student"):
        base = os.path.join(mnist_run, "serving", name)
        assert f"name: '{name}'" in config and f"base_path: '{base}'" in config


@pytest.mark.e2e
def test_every_exported_candidate_reproduces_its_candidates_row(mnist_run, mnist_dir):
    """Candidates are never changed after they are evaluated: each exported candidate
    (the winner included, which was distilled as a copy) has exactly the sizes and the
    test accuracy of its candidates.csv row."""
    import tf_keras
    from epkd_tf import training
    from epkd_tf.config import DataConfig
    from epkd_tf.data import load_data
    from epkd_tf.graph import dense_params, nonzero_params
    data = load_data(DataConfig(dataset="mnist", data_dir=mnist_dir, batch_size=64,
                                test_split="test[:10%]", train_split="train[:3%]"))
    candidates = read(mnist_run, "candidates")
    assert (candidates["rank"] == 1).sum() == 2          # a winner per iteration, checked too
    for row in candidates.itertuples():
        path = os.path.join(mnist_run, "candidates", str(row.iteration), row.pruner)
        model = tf_keras.models.load_model(path, compile=False)
        assert nonzero_params(model) == row.nonzero_params, (row.iteration, row.pruner)
        assert dense_params(model) == row.total_params, (row.iteration, row.pruner)
        assert training.accuracy(model, data.test()) == pytest.approx(row.test_accuracy,
                                                                      abs=1e-4)


@pytest.mark.e2e
def test_deployment_has_a_row_per_model_and_format(mnist_run):
    deployment = read(mnist_run, "deployment")
    assert list(deployment.columns) == TABLES["deployment"]
    assert deployment.model.unique().tolist() == ["teacher", "student_1", "student_2", "final"]
    # The final student (the last, smallest one: no stop rule) under its own name.
    final = deployment[deployment.model == "final"].reset_index(drop=True)
    last = deployment[deployment.model == "student_2"].reset_index(drop=True)
    latency = ["latency_ms_median", "latency_ms_p90"]
    pd.testing.assert_frame_equal(final.drop(columns=["model", "path", *latency]),
                                  last.drop(columns=["model", "path", *latency]))
    # Float and int8 TFLite: timed again, side by side with the teacher (final.csv); the
    # other formats keep the student's own timing.
    timed = read(mnist_run, "final").iloc[0]
    side_by_side = final.format.isin(["tflite", "tflite_int8"])
    assert final.set_index("format").loc["tflite", "latency_ms_median"] == \
        pytest.approx(timed.float_latency_ms)
    assert final.set_index("format").loc["tflite_int8", "latency_ms_median"] == \
        pytest.approx(timed.int8_latency_ms)
    assert timed.teacher_float_latency_ms > 0 and timed.teacher_int8_latency_ms > 0
    pd.testing.assert_frame_equal(final[~side_by_side][latency], last[~side_by_side][latency])
    deployment = deployment[deployment.model != "final"]
    assert deployment.groupby("model").iteration.first().to_dict() == {
        "teacher": 0, "student_1": 1, "student_2": 2}
    for model, group in deployment.groupby("model"):
        keras = tf.keras.models.load_model(
            os.path.join(mnist_run, "checkpoints", f"{model}.keras"), compile=False)
        zeros = 1 - (sum(int(np.count_nonzero(w)) for w in keras.get_weights())
                     / sum(w.size for w in keras.get_weights()))
        expected = ["saved_model", "tflite", "tflite_sparse", "tflite_int8_dynamic",
                    "tflite_int8", "keras3"]
        if zeros < SPARSE_MIN_ZEROS:                  # dense models get no sparse file
            expected.remove("tflite_sparse")
        assert group.format.tolist() == expected, model
    assert all(os.path.exists(os.path.join(mnist_run, p)) for p in deployment.path)
    assert (deployment.bytes > 0).all() and (deployment.gzip_bytes > 0).all()
    assert deployment.test_accuracy.between(0.5, 1).all()
    tflite = deployment[deployment.format.str.startswith("tflite")]
    assert (tflite.latency_ms_median > 0).all()
    assert deployment[~deployment.format.str.startswith("tflite")].latency_ms_median.isna().all()
    students = read(mnist_run, "students").set_index("iteration")
    saved = deployment[(deployment.format == "saved_model") & (deployment.iteration > 0)]
    for row in saved.itertuples():
        assert row.test_accuracy == pytest.approx(students.loc[row.iteration, "test_accuracy"])
    # The Keras 3 files, measured themselves, compute the students.
    keras3 = deployment[(deployment.format == "keras3") & (deployment.iteration > 0)]
    for row in keras3.itertuples():
        assert row.test_accuracy == pytest.approx(students.loc[row.iteration, "test_accuracy"])
    floats = tflite[tflite.format == "tflite"].set_index("model")
    for row in saved.itertuples():
        assert floats.loc[row.model, "test_accuracy"] == pytest.approx(row.test_accuracy,
                                                                       abs=2e-3)


@pytest.mark.e2e
def test_structured_students_are_physically_smaller(mnist_run):
    candidates = read(mnist_run, "candidates")
    structured = candidates[candidates.pruner != "poly_magnitude"]
    assert (structured.total_params < 266_610).all()
    magnitude = candidates[candidates.pruner == "poly_magnitude"]
    assert (magnitude.total_params == 266_610).all()
    assert (magnitude.nonzero_params < magnitude.total_params).all()


@pytest.mark.e2e
def test_flags_file_replays_the_run(mnist_run, capsys):
    text = open(os.path.join(mnist_run, "flags.txt")).read()
    assert "--keep_ratio=0.9" in text and "--pruners=l1_filter,taylor,oracle,poly_magnitude" in text
    # The same flags pointed at the finished run report it (status 0) rather than
    # overwriting or redoing it: nothing in the run changes.
    progress = open(os.path.join(mnist_run, "progress.json")).read()
    code = run_in_process(epkd_main, [f"--flagfile={os.path.join(mnist_run, 'flags.txt')}"])
    err = capsys.readouterr().err
    assert code == 0 and f"A finished run with these flags is in {mnist_run}" in err, err
    assert open(os.path.join(mnist_run, "progress.json")).read() == progress


@pytest.mark.e2e
def test_an_interrupted_run_resumes_without_duplicate_rows(mnist_run, tmp_path):
    out = str(tmp_path / "run")                  # a copy of the finished run, resumed
    shutil.copytree(mnist_run, out)
    flags_file = os.path.join(out, "flags.txt")
    with open(flags_file) as f:
        text = f.read().replace(mnist_run, out)
    with open(flags_file, "w") as f:
        f.write(text)
    args = [f"--flagfile={flags_file}"]
    before = {t: read(out, t) for t in ["students", "candidates", "finetune_history",
                                        "deployment"]}
    # Pretend the run was killed after iteration 1 had written some rows of iteration 2.
    progress = json.load(open(os.path.join(out, "progress.json")))
    progress.update(iterations_done=1, finished=False)
    json.dump(progress, open(os.path.join(out, "progress.json"), "w"))
    assert run_in_process(epkd_main, args) == 0
    for table, frame in before.items():
        after = read(out, table)
        assert after.iteration.tolist() == frame.iteration.tolist(), table
    assert read(out, "teacher_history").epoch.tolist() == [1, 2]


BAD_FLAGS = [
    (["--keep_ratio=1.5"], "--keep_ratio"),
    (["--keep_ratio=0"], "--keep_ratio"),
    (["--keep_ratio=abc"], "--keep_ratio"),
    (["--pruners=l1_filter,magic"], "magic"),
    (["--pruners="], "--pruners"),
    (["--teacher=resnet999"], "--teacher"),
    (["--dataset=no_such_dataset"], "no_such_dataset"),
    (["--temperature_start=0"], "--temperature_start"),
    (["--temperature_min=-1"], "--temperature_min"),
    (["--temperature_schedule=cosine"], "--temperature_schedule"),
    (["--rank_weights=1"], "--rank_weights"),
    (["--rank_weights=a,b"], "--rank_weights"),
    (["--rank_weights=0,0"], "--rank_weights"),
    (["--alpha=1.5"], "--alpha"),
    (["--iterations=0"], "--iterations"),
    (["--batch_size=0"], "--batch_size"),
    (["--train_split=validation"], "validation"),
    (["--layer_floor=1"], "--layer_floor"),
    (["--no_such_flag=1"], "no_such_flag"),
    # LeNet-5's two valid 5x5 convolutions and pools need more than tiny_digits' 12x12.
    (["--teacher=lenet5"], "--teacher=lenet5"),
    (["--teacher_width=0"], "--teacher_width"),
    (["--image_size=3"], "--image_size"),
    (["--export_formats=tflite,tflite_fp16"], "--export_formats"),
    (["--export_formats=tflite,tflite"], "--export_formats"),
    (["--tflite_threads=0"], "--tflite_threads"),
    (["--eval_examples=-1"], "--eval_examples"),
    (["--distribution=nccl"], "--distribution"),
    (["--logical_cpus=-1"], "--logical_cpus"),
    # Without TF_CONFIG there is no cluster to join.
    (["--distribution=multi_worker_mirrored"], "TF_CONFIG"),
    # --teacher_path: {models} is the directory of the teacher_files fixture.
    (["--teacher_path="], "--teacher_path"),
    (["--teacher_path={models}/missing.keras"], "missing.keras does not exist"),
    (["--teacher_path={models}/notes.txt"], "neither a .keras file, an .h5 file nor a SavedModel"),
    (["--teacher_path={models}/corrupt.keras"], "corrupt.keras is not a readable .keras file"),
    (["--teacher_path={models}/corrupt.h5"], "corrupt.h5 is not a readable .h5 file"),
    (["--teacher_path={models}/weights_only.h5"], "holds weights only"),
    (["--teacher_path={models}/plain_saved_model"], "not a Keras SavedModel"),
    (["--teacher_path={models}/lambda.keras"], "lambda.keras has a Lambda layer 'double'"),
    (["--teacher_path={models}/lambda.h5"], "lambda.h5 has a Lambda layer 'double'"),
    (["--teacher_path={models}/lambda_saved_model"], "has a Lambda layer 'double'"),
    (["--teacher_path={models}/mnist_shaped.keras"], "--teacher_path input shape (28, 28, 1)"),
    (["--teacher_path={models}/ten_classes.keras"], "--teacher_path predicts 10 classes"),
    (["--teacher_path={models}/softmax.keras"], "--teacher_path outputs probabilities"),
    (["--teacher_path={models}/rank3.keras"], "--teacher_path outputs shape (None, 2, 4)"),
    (["--teacher_path={models}/lstm.keras"], "(LSTM) cannot be pruned"),
    (["--teacher_path={models}/lstm.keras", "--pruners=poly_magnitude",
      "--export_formats=tflite,keras3"], "--export_formats=keras3: model"),
    (["--teacher_path={models}/sigmoid.keras"],
     "--teacher_path outputs probabilities (sigmoid in layer"),
    (["--teacher_path={models}/keras3_lambda.keras"], "keras3_lambda.keras is a Keras 3 model "
     "that epkd_tf cannot convert to tf_keras: layer 'double' (Lambda)"),
    (["--teacher_path={models}/good.keras", "--teacher=lenet5"], "both name the teacher"),
    # Issue #15: inputs that used to fail after work had started, or with a traceback.
    (["--teacher_path={models}/nan.keras"], "--teacher_path has non-finite weights"),
    (["--teacher_width=1e-9"], "--teacher_width=1e-09"),
    (["--keep_ratio=0.000000001"], "--keep_ratio=1e-09 with --iterations=10"),
    (["--keep_ratio=0.5", "--iterations=30", "--pruners=poly_magnitude"],
     "fewer than one in the end"),
    (["--keep_ratio=0.5", "--iterations=12", "--pruners=l1_filter"],
     "structured pruning cannot leave fewer than"),
    # Without a structured pruner nothing floors a removable step: still refused.
    (["--keep_ratio=0.5", "--iterations=30", "--pruners=poly_magnitude",
      "--keep_of=removable"], "fewer than one in the end"),
    (["--keep_of=all"], "unknown keep_of 'all'; choose from cost, removable"),
    (["--seed=4294967295"], "--seed=4294967295"),
    (["--seed=99999999999"], "--seed=99999999999"),
    (["--teacher_width=100000"], "--teacher_width"),
    (["--image_size=100000"], "--image_size"),
    (["--output_dir=/"], "--output_dir=/ is the file system's root"),
    (["--output_dir={models}/notes.txt/run"], "notes.txt, which is a file"),
    (["--output_dir=/tmp/" + "x" * 300], "is too long"),
    (["--output_dir=/proc/epkd_run"], "lies in /proc"),
]


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """User models for --teacher_path on tiny_digits (12x12x1, 4 classes): good ones and
    each kind of bad one."""
    import tf_keras
    from tf_keras import layers
    root = tmp_path_factory.mktemp("teachers")

    def model(*hidden, shape=(12, 12, 1), classes=4, activation=None, flatten=True):
        tf_keras.utils.set_random_seed(0)
        inputs = tf_keras.Input(shape)
        x = layers.Flatten()(inputs) if flatten else inputs
        for layer in hidden:
            x = layer(x)
        return tf_keras.Model(inputs, layers.Dense(classes, activation=activation)(x))

    good = model(layers.Dense(16, activation="relu"))
    good.save(root / "good.keras")
    good.save(root / "good.h5")
    good.save_weights(root / "weights_only.h5")
    lam = model(layers.Lambda(lambda t: 2.0 * t, name="double"))
    lam.save(root / "lambda.keras")
    lam.save(root / "lambda.h5")
    lam.save(root / "lambda_saved_model", save_format="tf")
    model(shape=(28, 28, 1)).save(root / "mnist_shaped.keras")
    model(classes=10).save(root / "ten_classes.keras")
    model(activation="softmax").save(root / "softmax.keras")
    diverged = model(layers.Dense(16))
    diverged.layers[-2].set_weights([np.full_like(w, np.nan)
                                     for w in diverged.layers[-2].get_weights()])
    diverged.save(root / "nan.keras")
    model(layers.Dense(8), layers.Reshape((2, 4)), classes=4).save(root / "rank3.keras")
    model(layers.Reshape((144, 1)), layers.LSTM(8, name="lstm"),
          flatten=False).save(root / "lstm.keras")
    model(layers.Reshape((144, 1)), layers.GRU(8, name="gru"),
          flatten=False).save(root / "gru.keras")
    model(activation="sigmoid").save(root / "sigmoid.keras")
    tf.saved_model.save(tf.Module(), str(root / "plain_saved_model"))
    import keras                                   # Keras 3, TF 2.21's default
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Lambda(lambda t: 2.0 * t, name="double")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(4)(x)).save(root / "keras3_lambda.keras")
    (root / "corrupt.keras").write_bytes(b"\x00 not a zip archive")
    (root / "corrupt.h5").write_bytes(b"\x00 not an HDF5 file")
    (root / "notes.txt").write_text("not a model")
    return str(root)


# Teachers TFLite cannot convert (the check converts them: integration tier). Issue 25:
# they used to pass the checks and fail at the run's first TFLite conversion.
UNCONVERTIBLE = [
    (["--teacher_path={models}/lstm.keras", "--pruners=poly_magnitude"],
     "lstm.keras: layer 'lstm' (LSTM) cannot be converted to TFLite"),
    (["--teacher_path={models}/gru.keras", "--pruners=poly_magnitude",
      "--export_formats=saved_model"], "gru.keras: layer 'gru' (GRU) cannot be converted"),
]


@pytest.mark.integration
@pytest.mark.parametrize("args,named", UNCONVERTIBLE,
                         ids=[" ".join(a) for a, _ in UNCONVERTIBLE])
def test_a_teacher_tflite_cannot_convert_stops_before_any_work(args, named, tiny_dir,
                                                              teacher_files, tmp_path, capsys):
    test_bad_flags_stop_before_any_work(args, named, tiny_dir, teacher_files, tmp_path, capsys)


@pytest.mark.unit
@pytest.mark.parametrize("args,named", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_stop_before_any_work(args, named, tiny_dir, teacher_files, tmp_path, capsys):
    out = tmp_path / "never"
    args = [a.format(models=teacher_files) for a in args]
    code = run_in_process(epkd_main, [f"--data_dir={tiny_dir}", "--dataset=tiny_digits",
                                      f"--output_dir={out}", *args])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


def tree(path):
    return sorted(os.path.relpath(os.path.join(root, n), path)
                  for root, dirs, names in os.walk(path) for n in dirs + names)


@pytest.mark.integration
def test_teacher_path_replaces_training_under_a_sanitised_default_run_name(
        teacher_files, tiny_dir, tmp_path, monkeypatch, capsys):
    import tf_keras
    user = tmp_path / "mine" / "my teacher (v2).h5"       # a name unfit for a path
    user.parent.mkdir()
    shutil.copy(os.path.join(teacher_files, "good.h5"), user)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data_before = tree(tiny_dir)
    args = [f"--data_dir={tiny_dir}", "--dataset=tiny_digits", f"--teacher_path={user}",
            "--iterations=1", "--pruners=l1_filter", "--finetune_epochs=1",
            "--batch_size=32", "--latency_runs=2", "--export_formats=tflite"]
    assert run_in_process(epkd_main, args) == 0
    # Everything went into one directory under ./saved_models, named from the dataset and
    # the teacher's file name (sanitised) and the time; nothing was written anywhere else.
    assert os.listdir(work) == ["saved_models"]
    (name,) = os.listdir(work / "saved_models")
    assert re.fullmatch(r"tiny_digits_my-teacher-v2-_\d{8}-\d{6}", name), name
    assert tree(tiny_dir) == data_before and os.listdir(user.parent) == [user.name]
    out = work / "saved_models" / name
    # The teacher is the user's model, checkpointed and recorded like a trained one.
    assert read(out, "teacher_history").empty
    assert list(read(out, "teacher_history").columns) == TABLES["teacher_history"]
    saved = tf_keras.models.load_model(out / "checkpoints" / "teacher.keras", compile=False)
    for a, b in zip(tf_keras.models.load_model(user, compile=False).get_weights(),
                    saved.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Only the final student is exported (no --export_every_student).
    assert read(out, "deployment").model.tolist() == ["final"]
    assert read(out, "students").iteration.tolist() == [1]
    flags_text = (out / "flags.txt").read_text()
    assert f"--teacher_path={user}" in flags_text and "--teacher=" not in flags_text
    # The same command naming the finished run (issue 25: it exited 2): reported as
    # without --output_dir, its records checked first; nothing changes.
    capsys.readouterr()
    before = {p: (out / p).read_bytes() for p in tree(out) if (out / p).is_file()}
    assert run_in_process(epkd_main, [*args, f"--output_dir={out}"]) == 0
    err = capsys.readouterr().err
    assert not error_lines(err)
    assert f"A finished run with these flags is in {out}; its report: {out}/report.md" in err
    assert "Teacher → final student" in err
    # A damaged file of the finished run: one line naming it, status 2, nothing changed.
    final = out / "tflite" / "final.tflite"
    final.write_bytes(final.read_bytes()[:100])
    before["tflite/final.tflite"] = final.read_bytes()
    assert run_in_process(epkd_main, [*args, f"--output_dir={out}"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "tflite/final.tflite is damaged" in lines[0], lines
    assert "--overwrite" in lines[0]
    assert {p: (out / p).read_bytes() for p in tree(out) if (out / p).is_file()} == before


NAN_ARGS = ["--dataset=tiny_digits", "--iterations=2", "--pruners=l1_filter",
            "--teacher_epochs=1", "--finetune_epochs=1", "--batch_size=32",
            "--latency_runs=2", "--export_formats="]


@pytest.mark.integration
def test_a_nan_distillation_keeps_the_previous_student(tiny_dir, tmp_path, capsys):
    import tf_keras
    out = tmp_path / "nan"
    # A learning rate of 1e30 blows the student's weights (and loss) up in a few steps.
    code = run_in_process(epkd_main, [f"--data_dir={tiny_dir}", f"--output_dir={out}",
                                      *NAN_ARGS, "--finetune_learning_rate=1e30"])
    err = capsys.readouterr().err
    assert code == 0 and not error_lines(err)
    for k in (1, 2):
        assert f"warning: iteration {k}: the distillation of the l1_filter candidate hit a " \
               f"non-finite loss nan" in err
    students = read(out, "students")
    assert students.kept_previous.tolist() == [True, True]
    teacher = tf_keras.models.load_model(out / "checkpoints" / "teacher.keras", compile=False)
    teacher_nonzero = sum(int(np.count_nonzero(w)) for w in teacher.get_weights())
    assert students.nonzero_params.tolist() == [teacher_nonzero] * 2
    assert read(out, "finetune_history").loss.isna().all()     # what happened, recorded
    assert read(out, "candidates").nonzero_params.lt(teacher_nonzero).all()


@pytest.mark.integration
def test_fail_on_nan_stops_the_run_with_one_line(tiny_dir, tmp_path, capsys):
    out = tmp_path / "nan"
    code = run_in_process(epkd_main, [f"--data_dir={tiny_dir}", f"--output_dir={out}",
                                      *NAN_ARGS, "--finetune_learning_rate=1e30",
                                      "--fail_on_nan"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1
    assert "iteration 1" in lines[0] and "--fail_on_nan" in lines[0], lines
    assert json.load(open(out / "progress.json"))["iterations_done"] == 0
    # A NaN teacher leaves nothing to compress: always an error.
    code = run_in_process(epkd_main, [f"--data_dir={tiny_dir}", f"--output_dir={out}_teacher",
                                      *NAN_ARGS, "--teacher_learning_rate=1e30"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "--teacher_learning_rate" in lines[0], lines


@pytest.mark.e2e
def test_different_flags_on_an_existing_run_are_refused(mnist_run, capsys):
    code = run_in_process(epkd_main, [f"--flagfile={os.path.join(mnist_run, 'flags.txt')}",
                                      "--keep_ratio=0.8"])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and "keep_ratio" in err[0]


@pytest.mark.e2e
def test_a_run_written_before_a_flag_existed_resumes_at_its_default(mnist_run, tmp_path,
                                                                   capsys):
    # A copy whose flags.txt lacks --int8_dense_per_channel (as runs written before it did).
    old = tmp_path / "old_run"
    shutil.copytree(mnist_run, old)
    lines = [l for l in (old / "flags.txt").read_text().splitlines()
             if "int8_dense_per_channel" not in l]
    (old / "flags.txt").write_text("\n".join(lines).replace(mnist_run, str(old)) + "\n")
    code = run_in_process(epkd_main, [f"--flagfile={old / 'flags.txt'}"])
    err = capsys.readouterr().err
    assert code == 0 and "A finished run with these flags" in err, err  # same flags: reported
    code = run_in_process(epkd_main, [f"--flagfile={old / 'flags.txt'}",
                                      "--int8_dense_per_channel"])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and "different flags (int8_dense_per_channel)" in err[0], err


@pytest.mark.integration
@pytest.mark.parametrize("teacher", ["mobilenet_v2", "alexnet", "inception", "resnet18"])
def test_the_pre_checks_build_every_zoo_teacher_under_op_determinism(teacher, monkeypatch):
    """The memory estimate builds the teacher in a fresh graph: random ops (Dropout,
    initializers) need the graph's seed there, since op determinism is on in a run."""
    from epkd_tf.budget import feasibility
    from epkd_tf.config import DataConfig, RunConfig, TeacherConfig
    from epkd_tf.data import DatasetSpec
    estimated, check_memory = [], feasibility.check_memory

    def spy(model, batch_size, flags, *args, **kwargs):
        estimated.append((flags, model.count_params()))
        return check_memory(model, batch_size, flags, *args, **kwargs)
    monkeypatch.setattr(feasibility, "check_memory", spy)
    tf.config.experimental.enable_op_determinism()    # as every run turns it on
    epkd_main.FLAGS.unparse_flags()
    epkd_main.FLAGS(["epkd"])
    cfg = RunConfig(data=DataConfig(image_size=32), export_formats=(),
                    teacher=TeacherConfig(teacher=teacher, width=0.25))
    spec = DatasetSpec("synthetic", (32, 32, 1), 10, 100, 10)
    epkd_main.check_teacher(cfg, spec)                # builds and estimates, no error
    [(flags, params)] = estimated
    assert flags == f"--teacher={teacher} --teacher_width=0.25 --image_size=32 " \
                    f"(input (32, 32, 1))" and params > 0


@pytest.mark.unit
def test_two_default_directories_of_the_same_second_are_two(tmp_path, monkeypatch):
    # Issue 25: both runs picked one name and the second was refused by the first's lock.
    import datetime
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(epkd_main, "_run_name_prefix", lambda: "tiny_lenet5_")
    now = datetime.datetime(2026, 12, 6, 12, 0, 0)
    paths = [epkd_main._new_output_dir(now) for _ in range(3)]
    assert paths == [os.path.join("saved_models", "tiny_lenet5_20261206-120000" + s)
                     for s in ("", "-2", "-3")]
    assert all(os.path.isdir(p) and not os.listdir(p) for p in paths)   # claimed, empty


@pytest.mark.unit
def test_a_refused_run_without_output_dir_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_in_process(epkd_main, [f"--data_dir={tmp_path}/none", "--dataset=tiny_digits",
                                      "--nodownload"])
    assert code == 2 and len(error_lines(capsys.readouterr().err)) == 1
    assert os.listdir(tmp_path) == []
