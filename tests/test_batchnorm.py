"""BatchNormalization statistics re-estimated after training and surgery (epkd_tf.batchnorm),
checked against NumPy, and where the loop applies them."""
import numpy as np
import pytest

import tf_keras

from epkd_tf.distill import batchnorm
from epkd_tf.config import DataConfig, DistillConfig, PruningConfig, RunConfig
from epkd_tf.data import load_data
from epkd_tf.loop import EPKD
from epkd_tf.settings import with_flags


def _dense_bn(seed=0):
    tf_keras.utils.set_random_seed(seed)
    x = inputs = tf_keras.Input((6,))
    x = tf_keras.layers.Dense(5, name="d1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.ReLU()(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(x))


def _batches(n, size=16, shape=(6,), seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(2.0, 3.0, (size, *shape)).astype(np.float32) for _ in range(n)]


@pytest.mark.unit
def test_moving_statistics_become_the_mean_of_the_batches_statistics():
    model = _dense_bn()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(5, 40.0, np.float32))           # stale, far off
    batches = _batches(4)
    used = batchnorm.recalibrate(model, batches + _batches(2, seed=9), num_batches=4)
    assert used == 4
    # Independent: the BN input is d1's output; per batch its mean and (biased) variance.
    w, b = model.get_layer("d1").get_weights()
    hidden = [x @ w + b for x in batches]
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([h.mean(0) for h in hidden], 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([h.var(0) for h in hidden], 0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99                                    # restored


@pytest.mark.unit
def test_one_batch_makes_inference_equal_training_on_it():
    tf_keras.utils.set_random_seed(0)
    x = inputs = tf_keras.Input((8, 8, 2))
    x = tf_keras.layers.Conv2D(4, 3, name="c1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn1")(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.Conv2D(4, 3, name="c2")(x)
    x = tf_keras.layers.BatchNormalization(name="bn2")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x))
    [batch] = _batches(1, size=64, shape=(8, 8, 2))
    assert not np.allclose(model(batch, training=False), model(batch, training=True),
                           atol=1e-2)
    batchnorm.recalibrate(model, [batch], 1)
    # Convolutions keep Keras' unbiased moving variance (n / (n - 1), n = 64*6*6 values
    # per channel in bn1): inference then matches training to that factor.
    np.testing.assert_allclose(model(batch, training=False), model(batch, training=True),
                               rtol=1e-2, atol=1e-3)


@pytest.mark.unit
def test_models_without_batchnorm_and_zero_batches_are_left_alone():
    x = inputs = tf_keras.Input((6,))
    plain = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x))
    before = [w.copy() for w in plain.get_weights()]
    assert batchnorm.recalibrate(plain, _batches(3), 3) == 0
    model = _dense_bn()
    stats = model.get_layer("bn").moving_mean.numpy().copy()
    assert batchnorm.recalibrate(model, _batches(3), 0) == 0
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), stats)
    for a, b in zip(before, plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def _conv_bn_teacher(classes):
    tf_keras.utils.set_random_seed(0)
    x = inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.Conv2D(8, 3, name="conv")(x)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.Flatten()(x)
    x = tf_keras.layers.Dense(16, activation="relu", name="fc")(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(classes, name="logits")(x))


@pytest.mark.integration
@pytest.mark.parametrize("batches,mode", [(0, "batch"), (3, "batch"), (3, "frozen")])
def test_the_loop_recalibrates_candidates_and_distilled_students(tiny_dir, batches, mode):
    cfg = RunConfig(data=DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32),
                    pruning=with_flags(PruningConfig(), pruners=("l1_filter",)),
                    distill=DistillConfig(finetune_epochs=1, batchnorm=mode), keep_ratio=0.6,
                    iterations=1, latency_runs=2, bn_recalibration_batches=batches)
    data = load_data(cfg.data)
    teacher = _conv_bn_teacher(data.spec.num_classes)
    epkd = EPKD(cfg, data, None, teacher=teacher)
    x = np.concatenate(epkd.samples.bn_batches()) if batches else None
    assert (len(epkd.samples.bn_batches()), 0 if x is None else len(x)) == (batches, 32 * batches)

    def expected_mean(model):
        # Independent: the mean of the conv layer's per-batch channel means.
        conv = tf_keras.Model(model.inputs, model.get_layer("conv").output)
        return np.mean([conv(b).numpy().mean((0, 1, 2)) for b in epkd.samples.bn_batches()], 0)

    [candidate] = epkd.make_candidates(teacher, 0.6 * teacher.count_params(), 1)
    kept = candidate.model.get_layer("bn").moving_mean.numpy()
    assert candidate.model.count_params() < teacher.count_params()
    student, _, problem = epkd.distil(candidate.model, 1)
    assert problem is None
    if batches:
        np.testing.assert_allclose(kept, expected_mean(candidate.model), rtol=1e-4, atol=1e-5)
    if batches and mode == "batch":
        np.testing.assert_allclose(student.get_layer("bn").moving_mean.numpy(),
                                   expected_mean(student), rtol=1e-4, atol=1e-5)
    elif batches:   # frozen: distilled with the candidate's statistics, which it keeps
        np.testing.assert_array_equal(student.get_layer("bn").moving_mean.numpy(), kept)
        assert not np.allclose(student.get_layer("conv").get_weights()[0],
                               candidate.model.get_layer("conv").get_weights()[0])
    else:   # as surgery left them: the teacher's untouched initial statistics, sliced
        np.testing.assert_array_equal(kept, np.zeros_like(kept))
    # The candidate stays as it was evaluated: distillation trained a copy.
    np.testing.assert_array_equal(candidate.model.get_layer("bn").moving_mean.numpy(), kept)


@pytest.mark.integration
def test_a_trained_teacher_is_recalibrated(tiny_dir):
    from epkd_tf import training
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32))
    teacher = _conv_bn_teacher(data.spec.num_classes)
    [batch] = batchnorm.sample_batches(data, 1, seed=5)
    training.train_teacher(teacher, data, 1, 1e-3, bn_batches=[batch])
    conv = tf_keras.Model(teacher.inputs, teacher.get_layer("conv").output)
    np.testing.assert_allclose(teacher.get_layer("bn").moving_mean.numpy(),
                               conv(batch).numpy().mean((0, 1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.integration
def test_a_teachers_last_epoch_test_accuracy_is_the_recalibrated_teachers(tiny_dir):
    """Each epoch's test accuracy is measured with statistics re-estimated on the
    recalibration batches: after the last epoch that is the final teacher's accuracy,
    whatever the moving averages were."""
    from epkd_tf import training
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32))
    teacher = _conv_bn_teacher(data.spec.num_classes)
    norm = teacher.get_layer("bn")
    norm.momentum = 1.0                  # moving averages that never move, far off:
    gamma, beta, mean, variance = norm.get_weights()   # every channel saturated
    norm.set_weights([gamma, beta, mean - 50.0, variance * 1e-4])
    batches = batchnorm.sample_batches(data, 2, seed=5)
    history = training.train_teacher(teacher, data, 2, 3e-3, bn_batches=batches)
    assert len(history) == 2
    assert history["test_accuracy"].iloc[-1] == pytest.approx(
        training.accuracy(teacher, data.test()), abs=1e-9)
    conv = tf_keras.Model(teacher.inputs, teacher.get_layer("conv").output)
    expected = np.mean([conv(b).numpy().mean((0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(teacher.get_layer("bn").moving_mean.numpy(), expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("batches", [None, 0])
def test_prune_recalibrates_with_data_unless_told_not_to(batches):
    import epkd_tf
    model = _conv_bn_teacher(4)
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (96, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)
    pruned = epkd_tf.prune(model, 0.7, criterion="l1_filter", data=(x, y), batch_size=32,
                           bn_recalibration_batches=batches)
    stats = pruned.get_layer("bn").moving_mean.numpy()
    if batches == 0:
        np.testing.assert_array_equal(stats, np.zeros_like(stats))
    else:   # default: 20 batches wanted, the 96 examples make 3 of 32
        conv = tf_keras.Model(pruned.inputs, pruned.get_layer("conv").output)
        from epkd_tf.data import from_arrays
        data = from_arrays(x, y, x, y, batch_size=32, seed=0)
        expected = np.mean([conv(b).numpy().mean((0, 1, 2))
                            for b in batchnorm.sample_batches(data, 20, seed=0)], 0)
        np.testing.assert_allclose(stats, expected, rtol=1e-4, atol=1e-5)
