"""Tests for epkd_tf.distill.distiller.Distiller."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from epkd_tf.distill import Distiller

N, D, C = 32, 8, 4


def _mlp(seed, hidden=16, name=None):
    """Tiny logits-output MLP, built, with deterministic weights."""
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential([
        tf_keras.layers.Dense(hidden, activation="relu", input_shape=(D,)),
        tf_keras.layers.Dense(C),
    ], name=name)
    return model


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.integers(0, C, size=(N,)).astype("int32")
    return x, y


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def distillation_loss_numpy(labels, student_logits, teacher_logits, alpha, temperature):
    """Independent reference: alpha*CE + (1-alpha)*T^2*KL(p_teacher || p_student), batch mean."""
    s = np.asarray(student_logits, np.float64)
    t = np.asarray(teacher_logits, np.float64)
    labels = np.asarray(labels).astype(int)
    ce = -_log_softmax(s)[np.arange(len(labels)), labels].mean()
    log_pt = _log_softmax(t / temperature)
    log_ps = _log_softmax(s / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1).mean()
    return alpha * ce + (1.0 - alpha) * temperature ** 2 * kl


def _distiller(student=None, teacher=None, lr=0.0, alpha=0.3, temperature=2.0, **kw):
    student = student if student is not None else _mlp(1, name="student")
    teacher = teacher if teacher is not None else _mlp(2, hidden=32, name="teacher")
    dist = Distiller(student, teacher, **kw)
    dist.compile(optimizer=tf_keras.optimizers.SGD(learning_rate=lr),
                 metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                 alpha=alpha, temperature=temperature)
    return dist


@pytest.mark.unit
@pytest.mark.parametrize("alpha,temperature", [(0.1, 3.0), (0.5, 1.0), (0.0, 5.0),
                                               (1.0, 2.0), (0.7, 10.0)])
def test_compute_losses_matches_numpy(alpha, temperature):
    x, y = _data()
    dist = _distiller(alpha=alpha, temperature=temperature)
    out = dist.compute_losses(x, y)
    expected = distillation_loss_numpy(y, dist.student(x).numpy(), dist.teacher(x).numpy(),
                                       alpha, temperature)
    assert abs(float(out["loss"]) - expected) < 1e-5
    ce_only = distillation_loss_numpy(y, dist.student(x).numpy(), dist.teacher(x).numpy(),
                                      1.0, temperature)
    assert abs(float(out["student_loss"]) - ce_only) < 1e-5


@pytest.mark.integration
def test_fit_loss_metric_matches_numpy_and_temperature_change_takes_effect():
    x, y = _data()
    dist = _distiller(lr=0.0, alpha=0.2, temperature=2.0)  # lr=0: weights stay fixed
    s, t = dist.student(x).numpy(), dist.teacher(x).numpy()
    h1 = dist.fit(x, y, batch_size=N, epochs=1, verbose=0).history
    assert abs(h1["loss"][0] - distillation_loss_numpy(y, s, t, 0.2, 2.0)) < 1e-5

    dist.set_temperature(6.0)
    assert dist.temperature == 6.0
    h2 = dist.fit(x, y, batch_size=N, epochs=1, verbose=0).history
    expected = distillation_loss_numpy(y, s, t, 0.2, 6.0)
    assert abs(h2["loss"][0] - expected) < 1e-5
    assert abs(h2["loss"][0] - h1["loss"][0]) > 1e-3

    dist.set_alpha(0.9)
    h3 = dist.fit(x, y, batch_size=N, epochs=1, verbose=0).history
    assert abs(h3["loss"][0] - distillation_loss_numpy(y, s, t, 0.9, 6.0)) < 1e-5


@pytest.mark.integration
def test_one_step_trains_student_and_freezes_teacher():
    x, y = _data()
    dist = _distiller(lr=0.5)
    student_before = [w.copy() for w in dist.student.get_weights()]
    teacher_before = [w.copy() for w in dist.teacher.get_weights()]
    logs = dist.train_step((tf.constant(x), tf.constant(y)))
    assert set(logs) >= {"loss", "student_loss", "distillation_loss", "accuracy"}
    student_after = dist.student.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(student_before, student_after))
    for a, b in zip(teacher_before, dist.teacher.get_weights()):
        assert np.array_equal(a, b)
    assert not dist.teacher.trainable


@pytest.mark.integration
def test_teacher_unchanged_even_if_trainable_flag_flipped_back():
    # Gradients are taken w.r.t. the student only, so the flag is not load-bearing.
    x, y = _data()
    dist = _distiller(lr=0.5)
    dist.teacher.trainable = True
    before = [w.copy() for w in dist.teacher.get_weights()]
    dist.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(before, dist.teacher.get_weights()):
        assert np.array_equal(a, b)


def _zeroed_student():
    student = _mlp(1, name="student")
    kernel, bias, kernel2, bias2 = student.get_weights()
    kernel[np.abs(kernel) < np.median(np.abs(kernel))] = 0.0  # magnitude pruning, 50 %
    kernel2[:, 0] = 0.0
    # Trained biases are nonzero, except e.g. a dead unit's, which stays exactly 0.
    bias = np.linspace(0.1, 0.2, bias.size).astype(bias.dtype)
    bias[0] = 0.0
    bias2 = np.full_like(bias2, 0.05)
    student.set_weights([kernel, bias, kernel2, bias2])
    return student


@pytest.mark.integration
def test_preserve_zeros_keeps_pruned_weights_at_zero():
    x, y = _data()
    student = _zeroed_student()
    zero_masks = [w == 0.0 for w in student.get_weights()]
    before = [w.copy() for w in student.get_weights()]
    dist = _distiller(student=student, lr=0.5, preserve_zeros=True)
    # Both kernels and the bias with a zero; the bias without zeros is left alone.
    assert len(dist.masked_variables) == 3
    nonzero_before = sum(int(np.count_nonzero(w)) for w in before)
    dist.fit(x, y, batch_size=8, epochs=2, verbose=0)
    after = student.get_weights()
    for i in (0, 1, 2):
        assert np.all(after[i][zero_masks[i]] == 0.0)
        assert not np.array_equal(after[i][~zero_masks[i]], before[i][~zero_masks[i]])
    # Every zero kept: the student keeps exactly the nonzero count it started with.
    assert sum(int(np.count_nonzero(w)) for w in after) == nonzero_before


@pytest.mark.integration
def test_without_preserve_zeros_pruned_weights_regrow():
    x, y = _data()
    student = _zeroed_student()
    zero_mask = student.get_weights()[0] == 0.0
    dist = _distiller(student=student, lr=0.5, preserve_zeros=False)
    assert dist.masked_variables == []
    dist.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.any(student.get_weights()[0][zero_mask] != 0.0)


@pytest.mark.unit
def test_preserve_zeros_without_zeros_records_no_mask():
    student = _mlp(1, name="student")
    student.set_weights([w + 0.01 for w in student.get_weights()])   # no exact zeros
    dist = _distiller(student=student, preserve_zeros=True)
    assert dist.masked_variables == []


@pytest.mark.unit
def test_preserve_zeros_requires_built_student():
    unbuilt = tf_keras.Sequential([tf_keras.layers.Dense(C)])
    with pytest.raises(ValueError, match="student"):
        Distiller(unbuilt, _mlp(2), preserve_zeros=True)


@pytest.mark.integration
def test_cached_teacher_logits_match_on_the_fly():
    x, y = _data()
    dist = _distiller(lr=0.0, alpha=0.4, temperature=4.0)
    t = dist.teacher.predict(x, verbose=0)
    direct = dist.compute_losses(x, y)
    cached = dist.compute_losses(x, y, teacher_logits=t)
    for key in ("loss", "student_loss", "distillation_loss"):
        assert abs(float(direct[key]) - float(cached[key])) < 1e-6
    h_fly = dist.fit(x, y, batch_size=N, epochs=1, verbose=0).history
    h_cache = dist.fit(x, (y, t), batch_size=N, epochs=1, verbose=0).history
    for key in ("loss", "student_loss", "distillation_loss"):
        assert abs(h_fly[key][0] - h_cache[key][0]) < 1e-6


@pytest.mark.integration
def test_cached_logits_allow_no_teacher():
    x, y = _data()
    teacher = _mlp(2, hidden=32)
    t = teacher(x).numpy()
    student = _mlp(1)
    dist = Distiller(student, None)
    dist.compile(optimizer=tf_keras.optimizers.SGD(0.0), alpha=0.5, temperature=3.0)
    h = dist.fit(x, (y, t), batch_size=N, epochs=1, verbose=0).history
    assert abs(h["loss"][0] - distillation_loss_numpy(y, student(x).numpy(), t, 0.5, 3.0)) < 1e-5
    with pytest.raises(ValueError, match="teacher"):
        dist.fit(x, y, batch_size=N, epochs=1, verbose=0)


@pytest.mark.integration
def test_fit_with_validation_and_evaluate():
    x, y = _data()
    xv, yv = _data(seed=1)
    dist = _distiller(lr=0.1)
    history = dist.fit(x, y, batch_size=8, epochs=2, validation_data=(xv, yv), verbose=0)
    assert {"loss", "student_loss", "distillation_loss", "accuracy",
            "val_loss", "val_accuracy"} <= set(history.history)
    result = dist.evaluate(xv, yv, batch_size=N, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    logits = dist(xv).numpy()
    assert abs(result["loss"] - distillation_loss_numpy(yv, logits, logits, 1.0, 1.0)) < 1e-5
    assert abs(result["accuracy"] - np.mean(logits.argmax(-1) == yv)) < 1e-6


@pytest.mark.unit
def test_call_returns_student_logits():
    x, _ = _data()
    dist = _distiller()
    np.testing.assert_array_equal(dist(x).numpy(), dist.student(x).numpy())


@pytest.mark.unit
@pytest.mark.parametrize("kwargs,arg", [({"temperature": 0.0}, "temperature"),
                                        ({"temperature": -1.0}, "temperature"),
                                        ({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha")])
def test_invalid_compile_arguments(kwargs, arg):
    dist = Distiller(_mlp(1), _mlp(2))
    with pytest.raises(ValueError, match=arg):
        dist.compile(optimizer="sgd", **kwargs)


@pytest.mark.unit
def test_invalid_constructor_arguments():
    student = _mlp(1)
    with pytest.raises(ValueError, match="student"):
        Distiller("not a model", _mlp(2))
    with pytest.raises(ValueError, match="teacher"):
        Distiller(student, student)
    with pytest.raises(ValueError, match="set_temperature|temperature"):
        Distiller(student, _mlp(2)).set_temperature(0)


@pytest.mark.unit
def test_soft_target_gradient_is_the_closed_form_and_zero_at_the_teacher():
    """d KL / d student logits = (softmax(s / T) - softmax(t / T)) / T, exactly 0 where the
    student's logits equal the teacher's (Adam amplified autodiff's 1e-8 round-off)."""
    from epkd_tf.distill.distiller import soft_target_kl_from_logits
    rng = np.random.default_rng(3)
    t = rng.normal(size=(N, C)).astype("float32") * 3
    s = rng.normal(size=(N, C)).astype("float32") * 3
    s[:4] = t[:4]                                           # four rows at the teacher
    upstream = rng.uniform(0.5, 2.0, size=N).astype("float32")
    student = tf.constant(s)
    with tf.GradientTape() as tape:
        tape.watch(student)
        value = soft_target_kl_from_logits(t, student, 2.0)
        weighted = tf.reduce_sum(value * upstream)
    gradient = tape.gradient(weighted, student).numpy()

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    expected = upstream[:, None] * (softmax(s / 2.0) - softmax(t / 2.0)) / 2.0
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-7)
    assert np.all(gradient[:4] == 0.0)
    assert np.all(value.numpy()[:4] == 0.0)
    log_pt, log_ps = _log_softmax(t / 2.0), _log_softmax(s / 2.0)
    np.testing.assert_allclose(value.numpy(), (np.exp(log_pt) * (log_pt - log_ps)).sum(-1),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.unit
def test_a_distilled_student_and_its_optimizer_are_freed():
    """Distillation's traced train step holds nothing process-wide (a tf.custom_gradient
    in the KL kept every distilled student's weights and Adam slots alive)."""
    import gc
    import weakref
    from epkd_tf import optimizers

    teacher = _mlp(1)

    def distil_and_drop():
        student = _mlp(2)
        distiller = Distiller(student, teacher)
        distiller.compile(optimizer=optimizers.adam(1e-3, student), alpha=0.3,
                          temperature=2.0)
        x, y = _data()
        distiller.fit(x, y, epochs=1, batch_size=8, verbose=0)
        return [weakref.ref(v.handle)
                for v in student.variables + distiller.optimizer.variables]

    refs = distil_and_drop()
    gc.collect()
    alive = [ref for ref in refs if ref() is not None]
    assert refs and not alive, f"{len(alive)} of {len(refs)} variables outlived distillation"


@pytest.mark.unit
def test_loss_kwarg_rejected():
    with pytest.raises(ValueError, match="loss"):
        Distiller(_mlp(1), _mlp(2)).compile(optimizer="sgd", loss="mse")


@pytest.mark.unit
def test_default_losses_match_numpy_and_custom_losses_receive_probabilities():
    """The default losses (computed from logits) equal the NumPy reference; a custom
    soft-target loss gets temperature-softened probabilities; tf_keras' own KLDivergence
    (which clips probabilities at 1e-7) agrees with the default to float precision."""
    from epkd_tf.distill.distiller import (soft_target_kl, soft_target_kl_from_logits,
                                           sparse_cross_entropy)
    x, y = _data()
    s = np.random.default_rng(1).normal(size=(N, C)).astype("float32") * 3
    t = np.random.default_rng(2).normal(size=(N, C)).astype("float32") * 3
    log_s, log_ps, log_pt = _log_softmax(s), _log_softmax(s / 2.0), _log_softmax(t / 2.0)
    np.testing.assert_allclose(sparse_cross_entropy(y[:, None], s).numpy(),
                               -log_s[np.arange(N), y], rtol=1e-5)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
    np.testing.assert_allclose(soft_target_kl_from_logits(t, s, 2.0).numpy(), kl,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(soft_target_kl(np.exp(log_pt), np.exp(log_ps)).numpy(), kl,
                               rtol=1e-4, atol=1e-6)
    seen = []

    def recording_kl(teacher_probs, student_probs):
        seen.append((teacher_probs, student_probs))
        return tf_keras.losses.KLDivergence(reduction="none")(teacher_probs, student_probs)

    default, custom = _distiller(), _distiller()
    custom.compile(optimizer="sgd", distillation_loss_fn=recording_kl, alpha=0.3,
                   temperature=2.0)
    ref = default.compute_losses(x, y)["loss"].numpy()
    got = custom.compute_losses(x, y)
    np.testing.assert_allclose(got["loss"].numpy(), ref, rtol=1e-5)
    teacher_probs, student_probs = seen[-1]
    np.testing.assert_allclose(teacher_probs.numpy(),
                               np.exp(_log_softmax(got["teacher_logits"].numpy() / 2.0)),
                               rtol=1e-5)
    np.testing.assert_allclose(student_probs.numpy().sum(-1), 1.0, rtol=1e-5)
