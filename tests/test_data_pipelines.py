"""The dataset recipes through the real load_data path: CIFAR-10 and ImageNet (mocked TFDS,
see mock_tfds.py), resizing of a generic dataset, caching rule, seeded augmentation."""
import epkd_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from epkd_tf import data as data_lib
from epkd_tf.data import pipeline as pipeline_lib
from epkd_tf.data.writer import SupervisedAdhocBuilder
from epkd_tf.config import ConfigError, DataConfig, TeacherConfig
from epkd_tf.data import DataError, load_data
from mock_tfds import mocked, write_metadata

pytestmark = pytest.mark.unit

N = 12  # mock examples per split
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def meta_dir(tmp_path_factory):
    return write_metadata(tmp_path_factory.mktemp("tfds_meta"), N)


def config(data_dir, **kw):
    kw.setdefault("batch_size", 5)
    return DataConfig(data_dir=str(data_dir), **kw)


def all_batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def raw(data_dir, name, split):
    """The mock's raw uint8 images and labels, read with plain tfds.load."""
    ds = tfds.load(name, split=split, data_dir=str(data_dir), as_supervised=True,
                   download=False)
    pairs = list(tfds.as_numpy(ds))
    return [p[0] for p in pairs], np.array([p[1] for p in pairs])


def is_crop_of_padded(out, image, pad=4):
    """``out`` (normalised) is a crop of the zero-padded ``image``, possibly flipped."""
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)]).astype(np.float32) / 255.0
    padded = (padded - CIFAR_MEAN) / CIFAR_STD
    h, w = image.shape[:2]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[dy:dy + h, dx:dx + w]
            for candidate in (window, window[:, ::-1]):
                if np.allclose(out, candidate, atol=1e-5):
                    return True
    return False


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_spec_and_normalisation(meta_dir):
    with mocked(meta_dir, N):
        d = load_data(config(meta_dir, dataset="cifar10"))
        images, labels = raw(meta_dir, "cifar10", "test")
        x, y = d.numpy_test()
        x_train, _ = all_batches(d.train_eval())
    assert d.spec == data_lib.DatasetSpec(name="cifar10", input_shape=(32, 32, 3),
                                          num_classes=10, num_train=N, num_test=N)
    expected = (np.stack(images).astype(np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD
    np.testing.assert_allclose(x, expected, atol=1e-5)
    np.testing.assert_allclose(x_train, expected, atol=1e-5)  # mock: same examples per split
    np.testing.assert_array_equal(y, labels)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert d.cached == {"train": True, "test": True}


def test_cifar10_augmentation_is_train_only_pad_crop_flip(meta_dir):
    with mocked(meta_dir, N):
        d = load_data(config(meta_dir, dataset="cifar10"))
        images, _ = raw(meta_dir, "cifar10", "train")
        augmented, y_aug = all_batches(d.train(shuffle=False))
        plain, y_plain = all_batches(d.train_eval())
        sampled, _ = d.sample(N)
    np.testing.assert_array_equal(y_aug, y_plain)
    assert augmented.shape == plain.shape == (N, 32, 32, 3)
    assert not np.allclose(augmented, plain)  # augmentation happened somewhere
    for i in range(N):
        assert is_crop_of_padded(augmented[i], images[i]), i
    # sample() uses evaluation preprocessing: its rows are rows of train_eval.
    flat = plain.reshape(N, -1)
    for row in sampled.reshape(N, -1):
        assert np.any(np.all(np.isclose(flat, row, atol=1e-6), axis=1))


def test_cifar10_training_is_reproducible_and_varies_by_epoch(meta_dir):
    with mocked(meta_dir, N):
        a = load_data(config(meta_dir, dataset="cifar10", seed=1))
        b = load_data(config(meta_dir, dataset="cifar10", seed=1))
        c = load_data(config(meta_dir, dataset="cifar10", seed=2))
        ds = a.train()
        epoch1, epoch2 = all_batches(ds), all_batches(ds)
        ds_b = b.train()
        run2_epoch1, run2_epoch2 = all_batches(ds_b), all_batches(ds_b)
        other = all_batches(c.train())
        # Unshuffled training still augments differently per epoch but identically per run.
        u1, u2 = all_batches(a.train(shuffle=False)), all_batches(b.train(shuffle=False))
    np.testing.assert_array_equal(epoch1[0], run2_epoch1[0])
    np.testing.assert_array_equal(epoch2[0], run2_epoch2[0])
    np.testing.assert_array_equal(epoch1[1], run2_epoch1[1])
    assert not np.array_equal(epoch1[0], epoch2[0])
    assert not np.array_equal(epoch1[0], other[0])
    np.testing.assert_array_equal(u1[0], u2[0])


def test_evaluation_pipelines_are_deterministic(meta_dir):
    with mocked(meta_dir, N):
        d = load_data(config(meta_dir, dataset="cifar10"))
        for make in (d.train_eval, d.test):
            ds = make()
            first, second, fresh = all_batches(ds), all_batches(ds), all_batches(make())
            np.testing.assert_array_equal(first[0], second[0])
            np.testing.assert_array_equal(first[0], fresh[0])


def test_uncached_split_streams_with_the_same_results(meta_dir, monkeypatch):
    """Above CACHE_LIMIT_BYTES a split is streamed (shuffled encoded, decoded later)."""
    with mocked(meta_dir, N):
        cached = load_data(config(meta_dir, dataset="cifar10"))
        reference = all_batches(cached.train_eval())
        ref_sample = cached.sample(5, seed=3)
        monkeypatch.setattr(pipeline_lib, "CACHE_LIMIT_BYTES", 32 * 32 * 3 * N - 1)
        d = load_data(config(meta_dir, dataset="cifar10"))
        assert d.cached == {"train": False, "test": False}
        np.testing.assert_array_equal(all_batches(d.train_eval())[0], reference[0])
        x, y = d.sample(5, seed=3)
        e1 = all_batches(d.train())
        e1_again = all_batches(load_data(config(meta_dir, dataset="cifar10")).train())
    np.testing.assert_allclose(x, ref_sample[0], atol=1e-6)
    np.testing.assert_array_equal(y, ref_sample[1])
    np.testing.assert_array_equal(np.sort(e1[1]), np.sort(reference[1]))
    np.testing.assert_array_equal(e1[0], e1_again[0])


def _positions(rows, whole):
    """Where each of ``rows`` is in ``whole`` (each must be there exactly once)."""
    found = [[k for k, row in enumerate(whole) if np.array_equal(row, r)] for r in rows]
    assert all(len(f) == 1 for f in found)
    return [f[0] for f in found]


def test_evaluation_subset_is_a_fixed_seeded_subset_cached_or_streamed(meta_dir,
                                                                       monkeypatch):
    """--selection_examples' subsets: n distinct examples of the split in stored order,
    the same for the same seed and whether the split is cached or streamed; the whole
    split when n is 0 or at least its size."""
    with mocked(meta_dir, N):
        d = load_data(config(meta_dir, dataset="cifar10"))
        whole = all_batches(d.test())
        subset = all_batches(d.evaluation_subset("test", 5, seed=3))
        again = all_batches(d.evaluation_subset("test", 5, seed=3))
        other = all_batches(d.evaluation_subset("test", 5, seed=4))
        for n in (0, N, N + 1):
            np.testing.assert_array_equal(all_batches(d.evaluation_subset("test", n))[0],
                                          whole[0])
        with pytest.raises(DataError, match="no validation split"):
            d.evaluation_subset("validation", 5)
        monkeypatch.setattr(pipeline_lib, "CACHE_LIMIT_BYTES", 32 * 32 * 3 * N - 1)
        streamed = load_data(config(meta_dir, dataset="cifar10"))
        assert streamed.cached == {"train": False, "test": False}
        streamed_subset = all_batches(streamed.evaluation_subset("test", 5, seed=3))
    positions = _positions(subset[0], whole[0])
    assert len(set(positions)) == 5 and positions == sorted(positions)
    np.testing.assert_array_equal(subset[1], whole[1][positions])
    np.testing.assert_array_equal(again[0], subset[0])
    assert _positions(other[0], whole[0]) != positions
    np.testing.assert_allclose(streamed_subset[0], subset[0], atol=1e-6)


def test_sample_never_holds_the_whole_training_split(meta_dir, monkeypatch):
    """A sample of a cached split keeps only the chosen examples: it no longer goes through
    numpy_train (the whole split as float32, kept for the run's life)."""
    with mocked(meta_dir, N):
        d = load_data(config(meta_dir, dataset="cifar10"))
        reference = all_batches(d.train_eval())

        def whole_split():
            raise AssertionError("sample materialised the whole training split")
        monkeypatch.setattr(d, "numpy_train", whole_split)
        x, y = d.sample(5, seed=3)
    positions = _positions(x, reference[0])
    assert len(set(positions)) == 5
    np.testing.assert_array_equal(y, reference[1][positions])
    assert d._numpy == {}


# --------------------------------------------------------------------------- ImageNet


def imagenet_eval_reference(image, size):
    side = int(round(size * 1.14))
    h, w = image.shape[:2]
    scale = side / min(h, w)
    new_h, new_w = max(int(round(h * scale)), side), max(int(round(w * scale)), side)
    resized = tf.image.resize(image.astype(np.float32), [new_h, new_w], method="bilinear",
                              antialias=True).numpy()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top:top + size, left:left + size] / 255.0
    return (crop - IMAGENET_MEAN) / IMAGENET_STD


def test_imagenet_alias_spec_and_recipe(meta_dir):
    size = 24
    with mocked(meta_dir, N):
        d = load_data(config(meta_dir, dataset="imagenet", test_split="validation",
                             image_size=size))
        default = load_data(config(meta_dir, dataset="imagenet2012", test_split="validation"))
        images, labels = raw(meta_dir, "imagenet2012", "validation")
        x, y = d.numpy_test()
        ds = d.test()
        again = all_batches(ds)[0]
        train = all_batches(d.train(shuffle=False))[0]
        sampled, sampled_y = d.sample(4, seed=1)
        sampled_again, _ = d.sample(4, seed=1)
        x_train, y_train = d.numpy_train()
    assert d.spec == data_lib.DatasetSpec(name="imagenet2012", input_shape=(size, size, 3),
                                          num_classes=1000, num_train=N, num_test=N)
    assert default.spec.input_shape == (224, 224, 3)
    assert len({im.shape for im in images}) > 1  # the mock has variable image sizes
    assert d.cached == {"train": False, "validation": False}  # never cached in memory
    expected = np.stack([imagenet_eval_reference(im, size) for im in images])
    np.testing.assert_allclose(x, expected, atol=1e-4)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x, again)
    assert train.shape == (N, size, size, 3) and not np.allclose(train, x)
    assert np.isfinite(train).all() and train.min() >= -2.2 and train.max() <= 2.7
    # sample() streams the uncached split, decoding only the chosen JPEGs. (The mock's
    # JPEG bytes decode to other pixels than its directly generated images, so only labels
    # are compared here; the streamed values are checked on lossless CIFAR PNGs above.)
    idx = np.random.default_rng(1).choice(N, size=4, replace=False)
    np.testing.assert_array_equal(sampled_y, y_train[idx])
    np.testing.assert_array_equal(sampled, sampled_again)
    assert sampled.shape == (4, size, size, 3) and sampled.dtype == np.float32


def test_imagenet_unlabelled_test_split_is_refused(meta_dir):
    with mocked(meta_dir, N):
        with pytest.raises(DataError) as err:
            load_data(config(meta_dir, dataset="imagenet", image_size=16, test_split="test"))
    assert "--test_split='test'" in str(err.value) and "validation" in str(err.value)


def test_imagenet_without_a_test_split_tests_on_validation(meta_dir):
    """--test_split unset: ImageNet's labelled evaluation split, validation."""
    with mocked(meta_dir, N):
        data = load_data(config(meta_dir, dataset="imagenet", image_size=16))
        assert data.cfg.test_split is None and data.cfg.evaluation_split == "validation"
        assert data.spec.num_test == N and list(data.cached) == ["train", "validation"]
        labels = np.concatenate([y for _, y in data.test().as_numpy_iterator()])
    assert len(labels) == N and (labels >= 0).all()


# --------------------------------------------------------------------------- generic


def test_generic_dataset_is_resized_to_image_size(tiny_dir):
    d = load_data(config(tiny_dir, dataset="tiny_digits", image_size=16))
    native = load_data(config(tiny_dir, dataset="tiny_digits"))
    assert d.spec.input_shape == (16, 16, 1) and native.spec.input_shape == (12, 12, 1)
    images = np.stack([im for im, _ in tfds.as_numpy(tfds.load(
        "tiny_digits", split="test", data_dir=tiny_dir, as_supervised=True,
        download=False))])
    expected = tf.image.resize(images.astype(np.float32), [16, 16], method="bilinear").numpy()
    x, _ = d.numpy_test()
    np.testing.assert_allclose(x, expected / 255.0, atol=1e-5)
    assert x.shape == (128, 16, 16, 1) and 0.0 <= x.min() and x.max() <= 1.0
    assert all_batches(d.train())[0].shape == (256, 16, 16, 1)


def test_variable_size_error_names_image_size(tmp_path):
    data_dir = tmp_path / "tfds"
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 1)),
        "label": tfds.features.ClassLabel(num_classes=2),
    })
    examples = [(i, {"image": np.full((5 + i, 7, 1), 40 * i, np.uint8), "label": i % 2})
                for i in range(4)]
    SupervisedAdhocBuilder(name="varsize", version="1.0.0", features=features,
                           split_datasets={"train": examples, "test": examples},
                           data_dir=str(data_dir), disable_shuffling=True).download_and_prepare()
    with pytest.raises(DataError, match="--image_size"):
        load_data(config(data_dir, dataset="varsize"))
    d = load_data(config(data_dir, dataset="varsize", image_size=8, batch_size=4))
    x, y = d.numpy_test()
    assert x.shape == (4, 8, 8, 1) and d.cached == {"train": False, "test": False}
    np.testing.assert_allclose(x[:, :, :, 0].mean(axis=(1, 2)), 40 * np.arange(4) / 255.0,
                               atol=1e-5)


def test_config_validation_names_the_flags():
    for bad in (3, 7, 0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="--image_size"):
            DataConfig(image_size=bad)
    assert DataConfig(image_size=8).image_size == 8
    for bad in (0, -0.5, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--teacher_width"):
            TeacherConfig(width=bad)
    assert TeacherConfig(width=0.25).width == 0.25
