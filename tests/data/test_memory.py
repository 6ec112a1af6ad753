"""In-memory data (from_arrays, from_datasets): the same interface as TFDS-backed data, the
arrays as given, a seeded validation split, up-front one-line errors naming the argument,
and the pipeline parts that use data (training, teacher logits, a pruner, the exports)."""
import epkd_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from data_helpers import all_batches
from epkd_tf.data import (MAX_CLASSES, Data, DataError, DataSource, from_arrays,
                          from_datasets)
from epkd_tf.data import memory as memory_lib

N_TRAIN, N_TEST, SIZE, CLASSES = 64, 24, 8, 4


def arrays(dtype=np.uint8, channels=None, seed=0):
    """Images whose pixel [0, 0] is their index (test: 100 + index), learnable labels."""
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE) if channels is None else (SIZE, SIZE, channels)
    x_train = rng.integers(0, 50, (N_TRAIN,) + shape).astype(dtype)
    x_test = rng.integers(0, 50, (N_TEST,) + shape).astype(dtype)
    y_train = np.arange(N_TRAIN) % CLASSES
    y_test = np.arange(N_TEST) % CLASSES
    for x, y in ((x_train, y_train), (x_test, y_test)):
        for i, label in enumerate(y):     # a bright quadrant per class
            r, c = divmod(int(label), 2)
            x[i, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 150
    x_train[:, 0, 0] = np.arange(N_TRAIN)[:, None] if channels else np.arange(N_TRAIN)
    x_test[:, 0, 0] = (100 + np.arange(N_TEST))[:, None] if channels else 100 + np.arange(N_TEST)
    return x_train, y_train, x_test, y_test


def ids(x):
    return np.rint(np.asarray(x)[:, 0, 0, 0]).astype(int)


@pytest.mark.unit
def test_arrays_are_the_model_inputs_as_given():
    x_train, y_train, x_test, y_test = arrays()
    d = from_arrays(x_train, y_train, x_test, y_test, batch_size=16, seed=1)
    assert isinstance(d, Data) and isinstance(d, DataSource)
    assert (d.spec.name, d.spec.input_shape, d.spec.num_classes) == ("arrays", (SIZE, SIZE, 1),
                                                                    CLASSES)
    assert (d.spec.num_train, d.spec.num_test, d.spec.num_validation) == (N_TRAIN, N_TEST, 0)
    assert d.raw_image_shape == (SIZE, SIZE, 1) and not d.has_validation
    # uint8 is cast to float32, not scaled.
    x, y = d.numpy_test()
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], x_test.astype(np.float32))
    np.testing.assert_array_equal(y, y_test)
    np.testing.assert_array_equal(d.numpy_train()[0][..., 0], x_train)
    for ds in (d.train(), d.train_eval(), d.test()):
        assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int32
        assert int(ds.cardinality()) == len(list(ds))
    # Shuffled (seeded, reshuffled each epoch), a permutation of the training set.
    ds = d.train()
    e1, e2 = all_batches(ds), all_batches(ds)
    assert sorted(ids(e1[0])) == list(range(N_TRAIN)) and not np.array_equal(e1[0], e2[0])
    np.testing.assert_array_equal(all_batches(from_arrays(
        x_train, y_train, x_test, y_test, batch_size=16, seed=1).train())[0], e1[0])
    sampled, _ = d.sample(10, seed=3)
    assert len(set(ids(sampled))) == 10
    raw, labels = d.raw_test_images([3, 0])
    np.testing.assert_array_equal(raw[..., 0], x_test[[3, 0]])
    np.testing.assert_array_equal(labels, y_test[[3, 0]])
    assert d.cached == {"x_train": True, "x_test": True}


@pytest.mark.unit
def test_float_rgb_arrays_and_whole_number_float_labels():
    x_train, y_train, x_test, y_test = arrays(np.float64, channels=3)
    d = from_arrays(x_train / 255.0, y_train.astype(np.float32), x_test / 255.0,
                    y_test.reshape(-1, 1), num_classes=6, seed=np.int64(2),
                    batch_size=np.int32(8))
    assert d.spec.input_shape == (SIZE, SIZE, 3) and d.spec.num_classes == 6
    np.testing.assert_allclose(d.numpy_test()[0], (x_test / 255.0).astype(np.float32))
    # The caller's arrays are copied: changing them later does not change the data.
    x_test[:] = 0
    assert d.numpy_test()[0].max() > 0


@pytest.mark.unit
def test_validation_fraction_is_seeded_and_kept_out_of_training():
    x_train, y_train, x_test, y_test = arrays()
    d = from_arrays(x_train, y_train, x_test, y_test, validation_split=0.25, seed=5,
                    batch_size=16, label_noise=0.25)
    assert (d.spec.num_train, d.spec.num_validation) == (48, 16) and d.has_validation
    held = ids(all_batches(d.validation())[0])
    train = ids(d.numpy_train()[0])
    assert not set(held) & set(train) and set(held) | set(train) == set(range(N_TRAIN))
    assert list(held) == sorted(held) and set(held) != set(range(48, 64))
    assert sorted(ids(all_batches(d.train())[0])) == sorted(train)
    np.testing.assert_array_equal(all_batches(d.validation())[1], y_train[held])
    assert len(d.flipped_indices) == 12 and d.flipped_indices.max() < 48
    again = from_arrays(x_train, y_train, x_test, y_test, validation_split=0.25, seed=5)
    np.testing.assert_array_equal(ids(all_batches(again.validation())[0]), held)
    other = from_arrays(x_train, y_train, x_test, y_test, validation_split=0.25, seed=6)
    assert set(ids(all_batches(other.validation())[0])) != set(held)


@pytest.mark.unit
def test_datasets_of_examples_batches_or_dicts():
    x_train, y_train, x_test, y_test = arrays()
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    test = tf.data.Dataset.from_tensor_slices({"image": x_test, "label": y_test}).batch(5)
    d = from_datasets(train, test, batch_size=16, validation_split="0.5")
    assert (d.spec.num_train, d.spec.num_validation, d.spec.num_test) == (32, 32, N_TEST)
    np.testing.assert_array_equal(d.numpy_test()[0][..., 0], x_test)
    assert d.spec.name == "datasets"


def _two_sizes():
    def examples():
        yield np.zeros((8, 8), np.float32), 0
        yield np.zeros((4, 4), np.float32), 1
    return tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((), tf.int64)))


@pytest.mark.unit
@pytest.mark.parametrize("make, fragments", [
    (lambda a: [a[0].tolist(), a[1]], ["train is a list", "tf.data.Dataset"]),
    (lambda a: [tf.data.Dataset.from_tensor_slices(a).repeat(), a], ["train is infinite"]),
    (lambda a: [tf.data.Dataset.from_tensor_slices(a[0]), a], ["train yields", "(image, label)"]),
    (lambda a: [tf.data.Dataset.from_tensor_slices(a).take(0), a], ["train is empty"]),
    (lambda a: [_two_sizes(), a], ["train has images of different shapes", "resize"]),
    (lambda a: [tf.data.Dataset.from_tensor_slices(a),
                tf.data.Dataset.from_tensor_slices((a[0][:3] + np.nan, a[1][:3]))],
     ["test (images)[0] has NaN"]),
])
def test_bad_datasets_are_refused(make, fragments):
    x_train, y_train, _, _ = arrays(np.float32)
    train, test = make((x_train, y_train))
    if not isinstance(test, tf.data.Dataset):
        test = tf.data.Dataset.from_tensor_slices(test)
    with pytest.raises(DataError) as err:
        from_datasets(train, test)
    assert "\n" not in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))


@pytest.mark.unit
def test_the_memory_limit_is_enforced_while_reading(monkeypatch):
    x_train, y_train, x_test, y_test = arrays()
    monkeypatch.setattr(memory_lib, "MEMORY_LIMIT_BYTES", SIZE * SIZE * 4 * 10)
    endless_enough = tf.data.Dataset.from_tensor_slices((x_train, y_train)).repeat(1000)
    with pytest.raises(DataError, match="train holds more than the in-memory limit"):
        from_datasets(endless_enough, tf.data.Dataset.from_tensor_slices((x_test, y_test)))
    with pytest.raises(DataError, match="above the in-memory limit.*load_data"):
        from_arrays(x_train, y_train, x_test, y_test)


def _nan(a):
    a = a.astype(np.float32)
    a[7, 1, 1] = np.nan
    return a


@pytest.mark.unit
@pytest.mark.parametrize("change, fragments", [
    (dict(x_train=lambda x: x[0]), ["x_train has shape (8, 8)", "N x H x W"]),
    (dict(x_train=lambda x: x.astype(bool)), ["x_train has dtype bool", "numeric"]),
    (dict(x_train=lambda x: x.astype(str)), ["x_train has dtype <U", "numeric"]),
    (dict(x_train=lambda x: x[:0]), ["x_train is empty"]),
    (dict(x_test=lambda x: x[:, :0]), ["x_test has shape (24, 0, 8)", "at least 1"]),
    (dict(x_train=_nan), ["x_train[7] has NaN or infinite values"]),
    (dict(x_train=lambda x: x.astype(np.float64) * 1e300), ["x_train[", "infinite"]),
    (dict(x_test=lambda x: x[:, :4]), ["x_train images are (8, 8, 1)", "x_test images are "
                                       "(4, 8, 1)", "same shape"]),
    (dict(y_train=lambda y: y + 0.5), ["y_train has non-integer values"]),
    (dict(y_train=lambda y: y.astype(bool)), ["y_train has dtype bool", "integer"]),
    (dict(y_train=lambda y: np.eye(CLASSES)[y]), ["y_train has shape (64, 4)", "not one-hot"]),
    (dict(y_test=lambda y: y[:-1]), ["y_test has 23 labels but x_test has 24 images"]),
    (dict(y_test=lambda y: y - 1), ["y_test has the negative label -1"]),
    (dict(y_train=lambda y: np.where(y == 0, 10 ** 9, y)),
     ["y_train has the label 1000000000", f"below {MAX_CLASSES}"]),
    (dict(y_train=lambda y: np.full(len(y), 2 ** 63, np.uint64)),
     ["y_train has the label 9223372036854775808"]),
    (dict(y_train=lambda y: y * 0, y_test=lambda y: y * 0), ["only hold class 0"]),
    (dict(num_classes=3), ["y_train has the label 3, but num_classes=3", "[0, 2]"]),
    (dict(num_classes=1), ["num_classes=1 is invalid", "from 2 to"]),
    (dict(num_classes=True), ["num_classes=True is invalid"]),
    (dict(num_classes=MAX_CLASSES + 1), [f"num_classes={MAX_CLASSES + 1} is invalid"]),
    (dict(batch_size=0), ["batch_size=0 is invalid"]),
    (dict(seed=-1), ["seed=-1 is invalid"]),
    (dict(label_noise=1.0), ["label_noise=1.0 is invalid"]),
    (dict(shuffle_buffer=0), ["shuffle_buffer=0 is invalid"]),
    (dict(validation_split=1.5), ["validation_split=1.5 is invalid", "fraction in (0, 1)"]),
    (dict(validation_split="train[90%:]"), ["validation_split='train[90%:]' is invalid"]),
    (dict(validation_split=True), ["validation_split=True is invalid"]),
    (dict(validation_split=0.001), ["validation_split=0.001", "0 validation", "x_train"]),
    (dict(name=""), ["name='' is invalid"]),
])
def test_bad_arrays_are_refused_naming_the_argument(change, fragments):
    x_train, y_train, x_test, y_test = arrays()
    args = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    kwargs = {}
    for key, value in change.items():
        if key in args:
            args[key] = value(args[key])
        else:
            kwargs[key] = value
    with pytest.raises(DataError) as err:
        from_arrays(**args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.integration
def test_training_distillation_pruning_and_exports_use_in_memory_data(tmp_path):
    """What a run does with its data, on from_arrays: teacher training, the teacher-logit
    cache and distillation, a pruner's candidate, and the exports (raw-image signature,
    TFLite accuracy, int8 calibration)."""
    from epkd_tf import training
    from epkd_tf.deploy import exports as deploy
    from epkd_tf.config import PruningConfig
    from epkd_tf.distill import Distiller
    from epkd_tf.distill.cache import teacher_logits_for
    from epkd_tf.graph import nonzero_params
    from epkd_tf.models import build_model
    from epkd_tf.pruning import PruningContext
    from epkd_tf.records import RunDir

    x_train, y_train, x_test, y_test = arrays()
    d = from_arrays(x_train, y_train, x_test, y_test, batch_size=16, validation_split=0.25)
    tf_keras.utils.set_random_seed(0)
    teacher = build_model("lenet300_100", d.spec.input_shape, d.spec.num_classes)
    history = training.train_classifier(teacher, d, epochs=3, learning_rate=1e-3)
    assert len(history) == 3
    assert training.accuracy(teacher, d.validation()) > 0.5

    logits = teacher_logits_for(teacher, d)
    assert logits.shape == (d.spec.num_train, CLASSES)
    student = build_model("lenet300_100", d.spec.input_shape, d.spec.num_classes, width=0.2)
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer=tf_keras.optimizers.Adam(1e-3), alpha=0.3, temperature=4.0)
    distiller.fit(d.train(teacher_logits=logits), epochs=1, verbose=0)

    ctx = PruningContext(d, PruningConfig(), seed=0, batch_size=16)
    target = int(0.8 * nonzero_params(teacher))
    candidate = ctx.config.criteria["taylor"].make_candidate(teacher, target, ctx)
    assert nonzero_params(candidate.model) < nonzero_params(teacher)

    rows, _ = deploy.export_model(RunDir(str(tmp_path / "run")), teacher, "teacher",
                                  ["saved_model", "tflite", "tflite_int8"],
                                  serving_name="teacher", version=1, iteration=0, data=d,
                                  latency_runs=2)
    accuracy = training.accuracy(teacher, d.test())
    by_format = rows.set_index("format").test_accuracy
    assert by_format["saved_model"] == pytest.approx(accuracy)
    assert by_format["tflite"] == pytest.approx(accuracy, abs=1e-6)
    # serving_default takes uint8 images and only casts them: right for uint8 arrays.
    loaded = tf.saved_model.load(str(tmp_path / "run" / "serving" / "teacher" / "1"))
    out = loaded.signatures["serving_default"](images=tf.constant(x_test[..., None]))
    np.testing.assert_allclose(out["logits"].numpy(),
                               teacher(x_test[..., None].astype(np.float32)).numpy(),
                               atol=1e-4)
