"""--validation_split: a seeded random subset (or a TFDS split) held out of every training
pipeline, with counts and errors."""
import epkd_tf  # noqa: F401

import numpy as np
import pytest

from data_helpers import all_batches, ids, snapshot
from epkd_tf.config import ConfigError, DataConfig
from epkd_tf.data import DataError, load_data
from epkd_tf.data import holdout
from epkd_tf.data import pipeline as pipeline_lib

pytestmark = pytest.mark.unit

N_TRAIN, N_TEST, CLASSES = 60, 20, 5


def config(data_dir, **kw):
    kw.setdefault("dataset", "indexed")
    kw.setdefault("batch_size", 16)
    return DataConfig(data_dir=data_dir, **kw)


def split_ids(d):
    """(training ids in training order, validation ids in validation order)."""
    return ids(d.numpy_train()[0]), ids(all_batches(d.validation())[0])


def test_fraction_is_a_seeded_random_subset_disjoint_from_training(indexed_dir):
    d = load_data(config(indexed_dir["data_dir"], validation_split="0.2", seed=1))
    assert d.has_validation
    assert (d.spec.num_train, d.spec.num_validation, d.spec.num_test) == (48, 12, N_TEST)
    train, held = split_ids(d)
    assert len(set(train)) == 48 and len(set(held)) == 12
    assert set(train) | set(held) == set(range(N_TRAIN)) and not set(train) & set(held)
    # Both keep the stored order; the held-out examples are spread, not the last 12.
    assert list(train) == sorted(train) and list(held) == sorted(held)
    assert set(held) != set(range(N_TRAIN - 12, N_TRAIN))
    # The training labels are sorted by class: a random subset still holds several classes.
    _, y_val = all_batches(d.validation())
    assert len(set(y_val)) >= 3
    np.testing.assert_array_equal(y_val, indexed_dir["arrays"]["y_train"][held])
    # Evaluation preprocessing, the same order every pass.
    x_val, _ = all_batches(d.validation())
    np.testing.assert_allclose(x_val[..., 0], indexed_dir["arrays"]["x_train"][held] / 255.0,
                               atol=1e-6)
    np.testing.assert_array_equal(all_batches(d.validation())[0], x_val)
    # Same seed, same examples; another seed, others.
    again = load_data(config(indexed_dir["data_dir"], validation_split="0.2", seed=1))
    np.testing.assert_array_equal(split_ids(again)[1], held)
    other = load_data(config(indexed_dir["data_dir"], validation_split="0.2", seed=2))
    assert set(split_ids(other)[1]) != set(held)
    assert d.cached == {"train": True, "0.2": True, "test": True}


def test_every_training_pipeline_excludes_the_validation_examples(indexed_dir):
    d = load_data(config(indexed_dir["data_dir"], validation_split="0.25", seed=3,
                         label_noise=0.5))
    train, held = split_ids(d)
    kept = set(train)
    assert len(kept) == 45 and not kept & set(held)
    for pipeline in (d.train(), d.train(shuffle=False), d.train(seed=9), d.train_eval()):
        x, _ = all_batches(pipeline)
        assert sorted(ids(x)) == sorted(kept)
    assert set(ids(d.sample(45)[0])) == kept
    logits = np.arange(45 * CLASSES, dtype=np.float32).reshape(45, CLASSES)
    batches = list(d.train(teacher_logits=logits))
    xs = np.concatenate([x.numpy() for x, _ in batches])
    rows = np.concatenate([t.numpy() for _, (_, t) in batches])
    assert sorted(ids(xs)) == sorted(kept)
    # Each row travels with its example (training order = train_eval order).
    position = {i: k for k, i in enumerate(train)}
    np.testing.assert_array_equal(rows, logits[[position[i] for i in ids(xs)]])
    # Label noise: positions of the training order only; validation labels stay true.
    assert len(d.flipped_indices) == round(0.5 * 45) and d.flipped_indices.max() < 45
    _, y_val = all_batches(d.validation())
    np.testing.assert_array_equal(y_val, indexed_dir["arrays"]["y_train"][held])


def test_without_a_validation_split(indexed_dir):
    d = load_data(config(indexed_dir["data_dir"]))
    assert not d.has_validation and d.spec.num_validation == 0
    with pytest.raises(DataError, match="--validation_split"):
        d.validation()


def test_a_split_string_is_used_as_it_is(indexed_dir):
    d = load_data(config(indexed_dir["data_dir"], train_split="train[:75%]",
                         validation_split="train[75%:]"))
    assert (d.spec.num_train, d.spec.num_validation) == (45, 15)
    train, held = split_ids(d)
    assert list(train) == list(range(45)) and list(held) == list(range(45, 60))
    # Another split of the dataset works too (the test split here).
    d = load_data(config(indexed_dir["data_dir"], validation_split="test[:5]",
                         test_split="test[5:]"))
    assert d.spec.num_validation == 5 and list(split_ids(d)[1]) == [200, 201, 202, 203, 204]


@pytest.mark.parametrize("kw, fragments", [
    (dict(validation_split="train"), ["--validation_split='train'", "shares examples"]),
    (dict(validation_split="train[50%:]"), ["shares examples", "--train_split='train'"]),
    (dict(train_split="train[:50%]", validation_split="train[40%:]"), ["shares examples"]),
    (dict(validation_split="valid"), ["--validation_split='valid'", "no such split",
                                      "test, train"]),
    (dict(validation_split="train[:abc]"), ["--validation_split='train[:abc]'"]),
    (dict(validation_split="test[5:5]"), ["--validation_split='test[5:5]'", "0 examples"]),
    (dict(validation_split="0.001"), ["--validation_split=0.001", "0 validation"]),
    (dict(train_split="train[:3]", validation_split="0.9"),
     ["--validation_split=0.9", "0 training"]),
])
def test_unusable_validation_splits_are_refused(indexed_dir, kw, fragments):
    data_dir = indexed_dir["data_dir"]
    before = snapshot(data_dir)
    with pytest.raises(DataError) as err:
        load_data(config(data_dir, **kw))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert snapshot(data_dir) == before


@pytest.mark.parametrize("bad", ["1.5", "0", "-0.2", "1"])
def test_fractions_outside_the_unit_interval_are_invalid_settings(bad):
    with pytest.raises(ConfigError, match="--validation_split"):
        DataConfig(validation_split=bad)


def test_a_streamed_training_split_holds_out_seeded_blocks(indexed_dir, monkeypatch):
    """Too large to cache: the validation examples are seeded blocks read with TFDS split
    arithmetic; the shuffled, streamed training pipeline still never yields them."""
    monkeypatch.setattr(pipeline_lib, "CACHE_LIMIT_BYTES", 10)
    monkeypatch.setattr(holdout, "BLOCKS", 12)
    d = load_data(config(indexed_dir["data_dir"], validation_split="0.25", seed=4))
    assert d.cached == {"train": False, "0.25": False, "test": False}
    assert (d.spec.num_train, d.spec.num_validation) == (45, 15)
    train, held = split_ids(d)
    assert set(train) | set(held) == set(range(N_TRAIN)) and not set(train) & set(held)
    assert list(held) == sorted(held) and set(held) != set(range(45, 60))
    assert sorted(ids(all_batches(d.train())[0])) == sorted(train)
    assert set(ids(d.sample(10, seed=1)[0])) <= set(train)
    again = load_data(config(indexed_dir["data_dir"], validation_split="0.25", seed=4))
    np.testing.assert_array_equal(split_ids(again)[1], held)
    other = load_data(config(indexed_dir["data_dir"], validation_split="0.25", seed=5))
    assert set(split_ids(other)[1]) != set(held)


@pytest.mark.parametrize("n, count", [(10, 1), (60, 15), (101, 50), (1000, 999), (7, 3)])
def test_carving_gives_exact_disjoint_counts(n, count):
    kept, held = holdout.carve_positions(n, count, seed=0)
    assert len(held) == count and len(kept) == n - count
    assert sorted(set(kept) | set(held)) == list(range(n))
    train_ranges, val_ranges = holdout.carve_blocks(n, count, seed=0)
    covered = [i for a, b in train_ranges for i in range(a, b)]
    validated = [i for a, b in val_ranges for i in range(a, b)]
    assert len(validated) == count and sorted(covered + validated) == list(range(n))


# -- splits that share examples (issue 25) -----------------------------------------------
SIZES = {"train": 97, "test": 23}


def _bound(rng, n):
    """A random slice bound as TFDS writes one: empty, absolute (maybe negative, within
    the split) or a percentage (maybe negative); its NumPy position."""
    kind = rng.integers(3)
    if kind == 0:
        return "", None
    if kind == 1:
        value = int(rng.integers(-n, n + 1))
        return str(value), value
    percent = int(rng.integers(-100, 101))
    # TFDS's "closest" rounding of a percentage boundary (tfds.core.ReadInstruction).
    return f"{percent}%", int(round(percent * n / 100))


def _random_split(rng):
    """A random split string (one to three parts joined by +) and the (split, index)
    pairs it selects, computed with NumPy slicing alone."""
    parts, chosen = [], set()
    for _ in range(int(rng.integers(1, 4))):
        name = str(rng.choice(list(SIZES)))
        n = SIZES[name]
        if rng.random() < 0.2:
            parts.append(name)
            chosen |= {(name, i) for i in range(n)}
            continue
        start, stop = _bound(rng, n), _bound(rng, n)
        if start[0] and stop[0] and start[0].endswith("%") != stop[0].endswith("%"):
            stop = ("", None)       # TFDS slices use one unit
        if not start[0] and not stop[0]:
            start = ("1", 1)
        parts.append(f"{name}[{start[0]}:{stop[0]}]")
        chosen |= {(name, int(i)) for i in np.arange(n)[start[1]:stop[1]]}
    return "+".join(parts), chosen


def test_shared_split_agrees_with_numpy_index_sets():
    import tensorflow_datasets as tfds
    splits = tfds.core.SplitDict([
        tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0, filename_template=None)
        for name, n in SIZES.items()])
    rng = np.random.default_rng(25)
    checked = shared = 0
    while checked < 600:
        (a, in_a), (b, in_b) = _random_split(rng), _random_split(rng)
        if not in_a or not in_b:
            continue            # an empty slice: TFDS refuses it before this check
        both = in_a & in_b
        try:
            found = holdout.shared_split(splits, a, b)
        except ValueError as err:
            pytest.fail(f"{a} / {b}: {err}")
        assert (found is not None) == bool(both), (a, b, found, sorted(both)[:5])
        if found is not None:
            assert found in {name for name, _ in both}, (a, b, found)
            shared += 1
        checked += 1
    assert 100 < shared < 500       # both outcomes were drawn often


@pytest.mark.parametrize("kw, flags, split", [
    (dict(train_split="test"), ("--train_split='test'", "--test_split='test'"), "test"),
    (dict(train_split="train[:50]+test[:10]", test_split="test[5:]"),
     ("--train_split='train[:50]+test[:10]'", "--test_split='test[5:]'"), "test"),
    (dict(train_split="train[:50%]", test_split="train[-40:]"),
     ("--train_split='train[:50%]'", "--test_split='train[-40:]'"), "train"),
    (dict(train_split="train[:45]", validation_split="train[45:]", test_split="train[50:]+test"),
     ("--validation_split='train[45:]'", "--test_split='train[50:]+test'"), "train"),
])
def test_a_test_split_sharing_training_or_validation_examples_is_refused(indexed_dir, kw,
                                                                         flags, split):
    data_dir = indexed_dir["data_dir"]
    before = snapshot(data_dir)
    with pytest.raises(DataError) as err:
        load_data(config(data_dir, **kw))
    message = str(err.value)
    assert "\n" not in message and f"examples of the {split!r} split" in message, message
    for flag in flags:
        assert flag in message, (flag, message)
    assert snapshot(data_dir) == before
    # Disjoint slices of one split are fine.
    d = load_data(config(data_dir, train_split="train[:50%]", test_split="train[50%:]"))
    assert (d.spec.num_train, d.spec.num_test) == (30, 30)
