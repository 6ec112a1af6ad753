"""Teacher training helpers: history columns, decayed learning rate, accuracy."""
import numpy as np
import pytest

from epkd_tf.config import DataConfig
from epkd_tf.data import load_data
from epkd_tf.models import build_model
from epkd_tf.training import HISTORY_COLUMNS, accuracy, train_classifier


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32))


@pytest.mark.integration
def test_training_logs_every_epoch_and_decays_the_rate_to_one_percent(tiny):
    model = build_model("lenet300_100", tiny.spec.input_shape, tiny.spec.num_classes)
    history = train_classifier(model, tiny, epochs=3, learning_rate=2e-3)
    assert list(history.columns) == HISTORY_COLUMNS
    assert history.epoch.tolist() == [1, 2, 3]
    assert history.test_accuracy.between(0, 1).all()
    steps = int(model.optimizer.iterations.numpy())
    assert steps == 3 * int(np.ceil(tiny.spec.num_train / 32))
    # The rate of the last step taken: between the 1% floor and 2% of the initial rate
    # (an undecayed Adam would still be at 2e-3).
    final_rate = float(model.optimizer.learning_rate.numpy())
    assert 0.01 * 2e-3 <= final_rate < 0.02 * 2e-3
    assert history.test_accuracy.iloc[-1] > 0.5          # the quadrant task is learnable


@pytest.mark.unit
def test_accuracy_equals_numpy_argmax(tiny):
    model = build_model("lenet300_100", tiny.spec.input_shape, tiny.spec.num_classes)
    x, y = tiny.numpy_test()
    expected = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert accuracy(model, tiny.test()) == pytest.approx(expected)


@pytest.mark.integration
def test_jit_compiled_training_learns_like_the_default(tiny_dir):
    import tf_keras
    from epkd_tf import training
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=64))
    accuracies = []
    for jit in (False, True):
        tf_keras.utils.set_random_seed(0)
        model = build_model("lenet300_100", data.spec.input_shape, data.spec.num_classes)
        training.train_classifier(model, data, 2, 1e-3, validate=False, jit_compile=jit)
        assert model.jit_compile is jit
        accuracies.append(training.accuracy(model, data.test()))
    assert abs(accuracies[0] - accuracies[1]) <= 0.02 and accuracies[1] > 0.9
