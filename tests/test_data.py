"""Tests of epkd_tf.data: npz import, TFDS loading, pipelines and validation errors."""
import epkd_tf  # noqa: F401

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from epkd_tf import data as data_lib
from epkd_tf.data import pipeline as pipeline_lib
from epkd_tf.data.writer import SupervisedAdhocBuilder
from epkd_tf.config import ConfigError, DataConfig
from epkd_tf.data import DataError, DatasetSpec, import_npz, load_data

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_NPZ = REPO_ROOT.parent / "shared" / "data" / "mnist.npz"

N_TRAIN, N_TEST, SIZE, CLASSES = 60, 20, 8, 5


# --------------------------------------------------------------------------- helpers


def make_arrays(seed=0, n_train=N_TRAIN, n_test=N_TEST, shape=(SIZE, SIZE), classes=CLASSES):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train,) + shape, dtype=np.uint8),
        "y_train": rng.integers(0, classes, n_train).astype(np.int64),
        "x_test": rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8),
        "y_test": rng.integers(0, classes, n_test).astype(np.int64),
    }
    # Make sure the largest label occurs so num_classes == classes.
    arrays["y_train"][0] = classes - 1
    # Pixel extremes so normalisation reaches exactly 0 and 1.
    arrays["x_train"][0].flat[0], arrays["x_train"][0].flat[1] = 0, 255
    return arrays


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def snapshot(root):
    """Every path below root (relative), to check that nothing was left behind."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, n), root))
    return found


def cfg(data_dir, **kw):
    kw.setdefault("dataset", "synth")
    kw.setdefault("batch_size", 16)
    return DataConfig(data_dir=str(data_dir), **kw)


def first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def all_batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small dataset 'synth' (60 train / 20 test, 8x8 grey, 5 classes) imported once."""
    root = tmp_path_factory.mktemp("synth")
    arrays = make_arrays()
    npz = write_npz(root / "synth.npz", **arrays)
    data_dir = root / "tfds"
    path = import_npz(npz, "synth", str(data_dir))
    return {"data_dir": data_dir, "arrays": arrays, "path": path, "npz": npz}


# --------------------------------------------------------------------------- import + load


@pytest.mark.unit
def test_import_npz_round_trip(synth):
    data_dir, arrays = synth["data_dir"], synth["arrays"]
    assert synth["path"] == str(data_dir / "synth" / "1.0.0")
    # Only the finished dataset is left: no temporary build directories.
    assert sorted(os.listdir(data_dir)) == ["synth"]
    assert sorted(os.listdir(data_dir / "synth")) == ["1.0.0"]

    d = load_data(cfg(data_dir, train_split="train[:50%]"))
    assert d.spec == DatasetSpec(name="synth", input_shape=(SIZE, SIZE, 1), num_classes=CLASSES,
                                 num_train=30, num_test=N_TEST)
    x, y = all_batches(d.train_eval())
    np.testing.assert_allclose(x[..., 0], arrays["x_train"][:30] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, arrays["y_train"][:30])
    xt, yt = d.numpy_test()
    np.testing.assert_allclose(xt[..., 0], arrays["x_test"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(yt, arrays["y_test"])
    # Also loadable by plain tfds.load with the name (supervised keys recorded).
    ds = tfds.load("synth", data_dir=str(data_dir), split="test", as_supervised=True,
                   download=False)
    img, lab = next(iter(ds))
    assert img.shape == (SIZE, SIZE, 1) and int(lab) == arrays["y_test"][0]


@pytest.mark.unit
def test_normalisation_and_dtypes(synth):
    d = load_data(cfg(synth["data_dir"]))
    for ds in (d.train(), d.train_eval(), d.test()):
        assert ds.element_spec[0].dtype == tf.float32
        assert ds.element_spec[1].dtype == tf.int32
        assert tuple(ds.element_spec[0].shape[1:]) == (SIZE, SIZE, 1)
    x, y = all_batches(d.train_eval())
    assert x.min() == 0.0 and x.max() == 1.0
    assert x.shape == (N_TRAIN, SIZE, SIZE, 1) and y.dtype == np.int32
    assert first_batch(d.test())[0].shape[0] == 16


@pytest.mark.unit
def test_train_shuffle_is_seeded(synth):
    a = load_data(cfg(synth["data_dir"], seed=3))
    b = load_data(cfg(synth["data_dir"], seed=3))
    c = load_data(cfg(synth["data_dir"], seed=4))
    ya, yb, yc = first_batch(a.train())[1], first_batch(b.train())[1], first_batch(c.train())[1]
    xa, xb, xc = first_batch(a.train())[0], first_batch(b.train())[0], first_batch(c.train())[0]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    # Reshuffled each epoch; still a permutation of the training set.
    ds = a.train()
    e1, e2 = all_batches(ds), all_batches(ds)
    assert not np.array_equal(e1[0], e2[0])
    ref = all_batches(a.train_eval())
    np.testing.assert_array_equal(np.sort(e1[1]), np.sort(ref[1]))
    # Unshuffled training pipeline is the file order.
    np.testing.assert_array_equal(all_batches(a.train(shuffle=False))[0], ref[0])


@pytest.mark.unit
def test_train_eval_and_test_are_deterministic(synth):
    d = load_data(cfg(synth["data_dir"]))
    for make in (d.train_eval, d.test):
        ds = make()
        x1, y1 = all_batches(ds)
        x2, y2 = all_batches(ds)
        x3, _ = all_batches(make())
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x3)


@pytest.mark.unit
def test_sample_is_seeded_and_sized(synth):
    d = load_data(cfg(synth["data_dir"], seed=7))
    x, y = d.sample(10)
    assert x.shape == (10, SIZE, SIZE, 1) and x.dtype == np.float32 and y.dtype == np.int32
    x2, y2 = d.sample(10)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = d.sample(10, seed=8)
    assert not np.array_equal(x, x3)
    # Distinct training examples.
    train_x, _ = d.numpy_train()
    flat = train_x.reshape(len(train_x), -1)
    idx = [int(np.where((flat == row).all(axis=1))[0][0]) for row in x.reshape(10, -1)]
    assert len(set(idx)) == 10
    assert d.sample(N_TRAIN)[0].shape[0] == N_TRAIN
    for bad in (0, N_TRAIN + 1):
        with pytest.raises(DataError, match=f"n={bad}"):
            d.sample(bad)


@pytest.mark.unit
def test_rgb_images_and_catalogue_name_with_other_version(tmp_path):
    """A catalogue name (fashion_mnist) imported as 1.0.0 still loads; RGB keeps 3 channels."""
    arrays = make_arrays(shape=(SIZE, SIZE, 3), classes=3)
    npz = write_npz(tmp_path / "rgb.npz", **arrays)
    path = import_npz(npz, "fashion_mnist", str(tmp_path / "tfds"))
    assert path.endswith(os.path.join("fashion_mnist", "1.0.0"))
    d = load_data(cfg(tmp_path / "tfds", dataset="fashion_mnist"))
    assert d.spec.input_shape == (SIZE, SIZE, 3) and d.spec.num_classes == 3
    assert d.recipe.preprocess is data_lib.get_recipe("mnist").preprocess
    x, _ = d.numpy_test()
    np.testing.assert_allclose(x, arrays["x_test"] / 255.0, atol=1e-6)


@pytest.mark.unit
def test_recipes_and_aliases():
    assert data_lib.get_recipe("kmnist").preprocess is data_lib.get_recipe("mnist").preprocess
    assert data_lib.get_recipe("some_unknown_ds") is data_lib.DEFAULT_RECIPE
    assert data_lib.DATASET_ALIASES["imagenet"] == "imagenet2012"


def _recipes():
    names = data_lib.RECIPES.names() + ["some_unknown_ds"]
    return [(name, size) for name in names for size in (None, 20)]


@pytest.mark.unit
@pytest.mark.parametrize("name,size", _recipes())
def test_batchable_recipes_preprocess_a_batch_like_each_image(name, size):
    """A recipe marked batchable gives on a whole batch exactly what it gives per image
    (the pipelines rely on it to preprocess a batch at a time)."""
    recipe = data_lib.get_recipe(name, size)
    if not recipe.batchable:
        pytest.skip(f"{name}'s recipe preprocesses one image at a time")
    channels = 1 if "mnist" in name else 3
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 12, channels), np.uint8)
    labels = np.arange(5, dtype=np.int64)
    batch_x, batch_y = recipe.preprocess(tf.constant(images), tf.constant(labels))
    singles = [recipe.preprocess(tf.constant(x), tf.constant(y)) for x, y in zip(images, labels)]
    np.testing.assert_allclose(batch_x.numpy(), np.stack([x.numpy() for x, _ in singles]),
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(batch_y.numpy(), [int(y) for _, y in singles])
    assert batch_x.dtype == tf.float32 and batch_y.dtype == tf.int32


@pytest.mark.unit
def test_batched_preprocessing_gives_the_per_example_pipelines(synth, monkeypatch):
    """Batch-first pipelines yield the same batches as preprocessing example by example."""
    import dataclasses
    fast = load_data(cfg(synth["data_dir"], seed=5))
    slow = load_data(cfg(synth["data_dir"], seed=5))
    slow.recipe = dataclasses.replace(slow.recipe, batchable=False)
    assert fast.preprocesses_batches and not slow.preprocesses_batches
    # The fast one keeps both splits preprocessed in memory; the slow one cannot.
    assert all(ds is not None for ds in fast._ready.values())
    for pipeline in (fast.train(), fast.test(), fast.train(teacher_logits=np.zeros(
            (N_TRAIN, CLASSES), np.float32))):   # Keras ends its epochs on the cardinality
        assert int(pipeline.cardinality()) == len(list(pipeline))
    slow._ready = {role: None for role in slow._ready}
    logits = np.random.default_rng(0).normal(size=(N_TRAIN, CLASSES)).astype(np.float32)
    for pipeline in (lambda d: d.train(), lambda d: d.train(shuffle=False), lambda d: d.test(),
                     lambda d: d.train_eval(), lambda d: d.train(teacher_logits=logits)):
        for _ in range(2):      # the first pass fills the caches, the second reads them
            for a, b in zip(pipeline(fast), pipeline(slow), strict=True):
                tf.nest.map_structure(
                    lambda u, v: np.testing.assert_array_equal(u.numpy(), v.numpy()), a, b)
    # Only up to the limit: beyond it the uint8 images are preprocessed batch by batch.
    monkeypatch.setattr(pipeline_lib, "PREPROCESSED_CACHE_LIMIT_BYTES",
                        N_TRAIN * SIZE * SIZE * 4 - 1)
    limited = load_data(cfg(synth["data_dir"], seed=5))
    assert limited._ready["train"] is None and limited._ready["test"] is not None
    for a, b in zip(limited.train(), fast.train(), strict=True):
        tf.nest.map_structure(lambda u, v: np.testing.assert_array_equal(u.numpy(), v.numpy()),
                              a, b)


# --------------------------------------------------------------------------- load validation


def _assert_error_leaves_nothing(data_dir, config, *fragments):
    before = snapshot(data_dir)
    with pytest.raises(DataError) as err:
        load_data(config)
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    assert snapshot(data_dir) == before
    return msg


@pytest.mark.unit
@pytest.mark.parametrize("noise", [0.0, 0.1, 0.5, 0.9])
def test_label_noise_replaces_the_requested_fraction(synth, noise):
    arrays = synth["arrays"]
    d = load_data(cfg(synth["data_dir"], label_noise=noise, seed=3))
    _, noisy = all_batches(d.train_eval())
    changed = np.flatnonzero(noisy != arrays["y_train"])
    assert len(changed) == round(noise * N_TRAIN)
    np.testing.assert_array_equal(changed, d.flipped_indices)
    assert ((noisy >= 0) & (noisy < CLASSES)).all()
    # The shuffled training batches carry the same replaced labels; the test split none.
    x_shuffled, y_shuffled = all_batches(d.train())
    x_eval, _ = all_batches(d.train_eval())
    position = {x.tobytes(): i for i, x in enumerate(x_eval)}
    order = [position[x.tobytes()] for x in x_shuffled]
    np.testing.assert_array_equal(y_shuffled, noisy[order])
    np.testing.assert_array_equal(d.numpy_test()[1], arrays["y_test"])
    # Same seed, same flips; another seed, other examples.
    again = load_data(cfg(synth["data_dir"], label_noise=noise, seed=3))
    np.testing.assert_array_equal(again.flipped_indices, d.flipped_indices)
    if noise == 0.5:
        other = load_data(cfg(synth["data_dir"], label_noise=noise, seed=4))
        assert not np.array_equal(other.flipped_indices, d.flipped_indices)


@pytest.mark.unit
def test_teacher_logits_travel_with_their_examples_through_the_shuffle(synth):
    d = load_data(cfg(synth["data_dir"], seed=5))
    assert d.can_pair_teacher_logits
    x_eval, y_eval = all_batches(d.train_eval())
    logits = np.random.default_rng(0).normal(size=(N_TRAIN, CLASSES)).astype(np.float32)
    position = {x.tobytes(): i for i, x in enumerate(x_eval)}
    batches = list(d.train(teacher_logits=logits))
    xs = np.concatenate([x.numpy() for x, _ in batches])
    ys = np.concatenate([y.numpy() for _, (y, _) in batches])
    rows = np.concatenate([t.numpy() for _, (_, t) in batches])
    order = [position[x.tobytes()] for x in xs]
    assert sorted(order) == list(range(N_TRAIN)) and order != list(range(N_TRAIN))
    np.testing.assert_array_equal(rows, logits[order])
    np.testing.assert_array_equal(ys, y_eval[order])
    with pytest.raises(ValueError, match="one row per training example"):
        d.train(teacher_logits=logits[:10])


@pytest.mark.unit
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True])
def test_label_noise_must_be_a_fraction(bad):
    with pytest.raises(ConfigError, match="--label_noise"):
        DataConfig(label_noise=bad)


@pytest.mark.unit
def test_unknown_dataset(synth):
    msg = _assert_error_leaves_nothing(synth["data_dir"], cfg(synth["data_dir"], dataset="mnits"),
                                       "'mnits'")
    assert "mnist" in msg  # difflib suggestion
    # Close to a locally imported name.
    msg = _assert_error_leaves_nothing(synth["data_dir"], cfg(synth["data_dir"], dataset="synthh"),
                                       "'synthh'", "synth")


@pytest.mark.unit
def test_a_misspelt_dataset_is_suggested_with_or_without_its_data_dir(synth, tmp_path,
                                                                      monkeypatch):
    """``--dataset=fashion_mnst`` suggests fashion_mnist whether --data_dir exists (a
    prepared directory) or not (the default ~/tensorflow_datasets of a fresh machine),
    offline: the catalogue's names come from the installed builders."""
    import requests
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send",
                        lambda *a, **k: pytest.fail("no network"))
    missing = tmp_path / "no_such_dir"
    for data_dir in (synth["data_dir"], missing):
        msg = _assert_error_leaves_nothing(data_dir, cfg(data_dir, dataset="fashion_mnst"),
                                           "--dataset='fashion_mnst'")
        assert "did you mean fashion_mnist" in msg, msg
    assert not missing.exists()
    # A name close to nothing still gets the plain refusal.
    msg = _assert_error_leaves_nothing(missing, cfg(missing, dataset="qqqqqqqqqq"), "qqqq")
    assert "did you mean" not in msg


@pytest.mark.unit
def test_known_but_not_prepared(synth, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for data_dir in (empty, synth["data_dir"]):
        msg = _assert_error_leaves_nothing(data_dir, cfg(data_dir, dataset="cifar10",
                                                         download=False), "'cifar10'",
                                           str(data_dir), "python -m epkd_tf.data --import_npz=",
                                           "--nodownload", "tfds build cifar10")
        assert "cifar10" in msg
    _assert_error_leaves_nothing(empty, cfg(empty, dataset="mnist:9.9.9"), "'mnist:9.9.9'",
                                 "9.9.9")
    assert os.listdir(empty) == []


@pytest.mark.unit
def test_not_prepared_cleans_directories_created_during_validation(tmp_path, monkeypatch):
    """Directories the TFDS check itself creates are removed again."""
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    real_builder = tfds.builder

    def builder_that_litters(name, **kw):
        os.makedirs(os.path.join(kw["data_dir"], name, "3.0.2"), exist_ok=True)
        return real_builder(name, **kw)

    monkeypatch.setattr(tfds, "builder", builder_that_litters)
    with pytest.raises(DataError, match="cifar10"):
        load_data(cfg(data_dir, dataset="cifar10", download=False))
    assert os.listdir(data_dir) == []


@pytest.mark.unit
def test_bad_splits(synth):
    d = synth["data_dir"]
    msg = _assert_error_leaves_nothing(d, cfg(d, train_split="validation"),
                                       "--train_split='validation'", "test, train")
    _assert_error_leaves_nothing(d, cfg(d, test_split="test[:abc]"), "--test_split='test[:abc]'",
                                 "test, train")
    _assert_error_leaves_nothing(d, cfg(d, train_split="train[10:10]"),
                                 "--train_split='train[10:10]'", "0 examples")
    _assert_error_leaves_nothing(d, cfg(d, train_split="train[:500]"), "'train[:500]'")
    assert "split" in msg


@pytest.mark.unit
def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as err:
        load_data(cfg(missing))
    assert str(missing) in str(err.value)
    assert not missing.exists()


@pytest.mark.unit
def test_variable_image_size_is_rejected(tmp_path):
    data_dir = tmp_path / "tfds"
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 1)),
        "label": tfds.features.ClassLabel(num_classes=2),
    })
    x = np.zeros((4, 5, 5, 1), np.uint8)
    examples = [(i, {"image": x[i], "label": i % 2}) for i in range(4)]
    SupervisedAdhocBuilder(name="varsize", version="1.0.0", features=features,
                           split_datasets={"train": examples, "test": examples},
                           data_dir=str(data_dir), disable_shuffling=True).download_and_prepare()
    _assert_error_leaves_nothing(data_dir, cfg(data_dir, dataset="varsize"), "'varsize'",
                                 "image size must be set")


# --------------------------------------------------------------------------- import validation


@pytest.mark.unit
@pytest.mark.parametrize("change, fragment", [
    (lambda a: a.pop("y_test"), "y_test"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "uint8"),
    (lambda a: a.update(x_train=a["x_train"][:, 0]), "shape"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "counts must be equal"),
    (lambda a: a["y_test"].__setitem__(0, -1), "negative label"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "integer"),
    (lambda a: a.update(x_test=np.zeros((N_TEST, 4, 4), np.uint8)), "same shape"),
])
def test_import_npz_rejects_bad_files(tmp_path, change, fragment):
    arrays = make_arrays()
    change(arrays)
    npz = write_npz(tmp_path / "bad.npz", **arrays)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError) as err:
        import_npz(npz, "bad", str(data_dir))
    msg = str(err.value)
    assert fragment in msg and npz in msg and "\n" not in msg
    assert not data_dir.exists()


@pytest.mark.unit
def test_import_npz_rejects_bad_path_and_name(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_npz(str(tmp_path / "missing.npz"), "x", str(tmp_path))
    (tmp_path / "garbage.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable"):
        import_npz(str(tmp_path / "garbage.npz"), "x", str(tmp_path))
    npz = write_npz(tmp_path / "ok.npz", **make_arrays())
    with pytest.raises(DataError, match="'My-Data'"):
        import_npz(npz, "My-Data", str(tmp_path / "tfds"))


@pytest.mark.unit
def test_import_npz_refuses_overwrite_and_is_atomic(tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    first = make_arrays(seed=1)
    import_npz(write_npz(tmp_path / "a.npz", **first), "digits", str(data_dir))
    second = make_arrays(seed=2, n_train=40)
    npz2 = write_npz(tmp_path / "b.npz", **second)
    with pytest.raises(DataError, match="already prepared.*--overwrite"):
        import_npz(npz2, "digits", str(data_dir))

    # A crash while building leaves the old dataset untouched and no temporary directory.
    def crash(self, *a, **kw):
        raise RuntimeError("simulated crash")

    before = snapshot(data_dir)
    with monkeypatch.context() as m:
        m.setattr(SupervisedAdhocBuilder, "download_and_prepare", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            import_npz(npz2, "digits", str(data_dir), overwrite=True)
        with pytest.raises(RuntimeError, match="simulated crash"):
            import_npz(npz2, "other", str(data_dir))
    assert snapshot(data_dir) == before

    import_npz(npz2, "digits", str(data_dir), overwrite=True)
    assert sorted(os.listdir(data_dir)) == ["digits"]
    d = load_data(cfg(data_dir, dataset="digits"))
    assert d.spec.num_train == 40
    np.testing.assert_array_equal(d.numpy_train()[1], second["y_train"])


# --------------------------------------------------------------------------- CLI


@pytest.mark.unit
def test_cli(tmp_path, capsys):
    """``python -m epkd_tf.data``'s main, in this process (the real command's exit status:
    data/test_import_validation.py's test_exit_status_of_the_real_command)."""
    from cli_helpers import error_lines, run_in_process
    from epkd_tf.cli import data as data_cli
    npz = write_npz(tmp_path / "small.npz", **make_arrays(n_train=10, n_test=5))
    data_dir = tmp_path / "tfds"
    assert run_in_process(data_cli, [f"--import_npz={npz}", "--name=small",
                                     f"--data_dir={data_dir}"]) == 0
    ok = capsys.readouterr()
    assert ok.out.strip().splitlines()[-1] == str(data_dir / "small" / "1.0.0"), ok.err
    assert load_data(cfg(data_dir, dataset="small")).spec.num_train == 10

    assert run_in_process(data_cli, [f"--import_npz={tmp_path / 'nope.npz'}", "--name=small",
                                     f"--data_dir={data_dir}"]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "nope.npz" in errors[0], errors

    assert run_in_process(data_cli, [f"--import_npz={npz}", "--name=small",
                                     f"--data_dir={data_dir}"]) == 2
    assert "--overwrite" in capsys.readouterr().err


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.integration
@pytest.mark.skipif(not MNIST_NPZ.exists(), reason=f"real MNIST not found at {MNIST_NPZ}")
def test_real_mnist_import(tmp_path):
    path = import_npz(str(MNIST_NPZ), "mnist", str(tmp_path))  # ~10 s for 70k images
    assert path == str(tmp_path / "mnist" / "3.0.1")
    d = load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path), train_split="train[:1%]"))
    assert d.spec == DatasetSpec(name="mnist", input_shape=(28, 28, 1), num_classes=10,
                                 num_train=600, num_test=10000)
    x, y = d.numpy_train()
    with np.load(MNIST_NPZ) as f:
        np.testing.assert_array_equal(y, f["y_train"][:600])
        np.testing.assert_allclose(x[..., 0], f["x_train"][:600] / 255.0, atol=1e-6)
