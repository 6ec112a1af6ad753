"""Students sized to a parameter budget."""
import pytest

import epkd_tf  # noqa: F401

from epkd_tf.models import build_model
from epkd_tf.study.students import sized_student, student_family


@pytest.mark.integration
@pytest.mark.parametrize("teacher,shape,budget", [
    ("lenet300_100", (28, 28, 1), 26_661),
    ("lenet5", (28, 28, 1), 43_108),
    ("resnet34", (32, 32, 3), 200_000),
])
def test_widest_student_within_budget(teacher, shape, budget):
    model, width = sized_student(teacher, shape, 10, budget)
    assert model.count_params() <= budget
    # Slightly wider is over budget: the bisection found the edge.
    wider = build_model(student_family(teacher), shape, 10, width=width * 1.02)
    assert wider.count_params() > budget
    assert model.count_params() >= 0.9 * budget


@pytest.mark.unit
def test_resnet_students_are_plain_convnets_at_the_issue_sizes():
    assert student_family("resnet34") == "plain_convnet"
    for width, params in [(0.58, 0.2e6), (1.3, 1.0e6), (2.1, 2.6e6)]:
        model = build_model("plain_convnet", (32, 32, 3), 10, width=width)
        assert abs(model.count_params() - params) < 0.05 * params
        convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
        dense = [l for l in model.layers if l.__class__.__name__ == "Dense"]
        assert len(convs) == 4 and len(dense) == 2


@pytest.mark.unit
def test_budget_below_the_narrowest_student_is_refused():
    with pytest.raises(ValueError, match="no lenet300_100 student fits in 100 parameters"):
        sized_student("lenet300_100", (28, 28, 1), 10, 100)
