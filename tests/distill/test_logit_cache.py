"""Teacher logits computed once and paired with the training data give the same
distillation losses as running the teacher on every batch."""
import epkd_tf  # noqa: F401

import numpy as np
import pytest
import tf_keras

from epkd_tf.config import DataConfig
from epkd_tf.data import load_data
from epkd_tf.distill import Distiller
from epkd_tf.distill.cache import teacher_logits_for
from epkd_tf.models import build_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def models(tiny_dir):
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32))
    tf_keras.utils.set_random_seed(0)
    teacher = build_model("lenet300_100", data.spec.input_shape, data.spec.num_classes)
    student = build_model("lenet300_100", data.spec.input_shape, data.spec.num_classes,
                          width=0.2)
    return data, teacher, student


def test_cached_and_on_the_fly_losses_are_equal(models):
    data, teacher, student = models
    logits = teacher_logits_for(teacher, data)
    assert logits.shape == (data.spec.num_train, data.spec.num_classes)
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(alpha=0.3, temperature=7.0)
    cached = data.train(seed=3, teacher_logits=logits)
    live = data.train(seed=3)
    for (x, (y, t)), (x2, y2) in zip(cached, live):
        np.testing.assert_array_equal(x.numpy(), x2.numpy())   # same seeded order
        with_cache = distiller.compute_losses(x, y, teacher_logits=t)
        on_the_fly = distiller.compute_losses(x2, y2)
        for key in ("loss", "student_loss", "distillation_loss"):
            np.testing.assert_allclose(with_cache[key].numpy(), on_the_fly[key].numpy(),
                                       rtol=1e-5, atol=1e-6)


def test_augmented_data_gets_no_cache(models, monkeypatch):
    data, teacher, _ = models
    monkeypatch.setattr(type(data), "can_pair_teacher_logits", property(lambda self: False))
    assert teacher_logits_for(teacher, data) is None
