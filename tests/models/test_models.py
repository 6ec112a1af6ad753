"""The teacher registry builds logits models that adapt to the dataset."""
import numpy as np
import pytest

from epkd_tf.graph import analyze
from epkd_tf.models import build_model, model_names


@pytest.mark.unit
def test_lenet_parameter_counts_on_mnist():
    assert build_model("lenet300_100", (28, 28, 1), 10).count_params() == 266_610
    assert build_model("lenet5", (28, 28, 1), 10).count_params() == 431_080


@pytest.mark.integration
@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("shape,classes", [((28, 28, 1), 10), ((32, 32, 3), 7)])
def test_models_adapt_to_input_shape_and_classes(name, shape, classes):
    # A quarter of the width keeps the big zoo models fast; the structure is the same.
    model = build_model(name, shape, classes, width=0.25)
    out = model(np.zeros((2, *shape), np.float32))
    assert out.shape == (2, classes)
    assert model.layers[-1].get_config().get("activation") == "linear"   # logits
    assert analyze(model).num_groups > 0                                  # prunable


@pytest.mark.unit
def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="lenet5"):
        build_model("resnet999", (28, 28, 1), 10)


@pytest.mark.unit
def test_single_class_is_refused():
    with pytest.raises(ValueError, match="2 classes"):
        build_model("lenet5", (28, 28, 1), 1)
