"""Every registered study method reaches its parameter target from a tiny teacher."""
import numpy as np
import pytest

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import training
from epkd_tf.config import DataConfig, TeacherConfig
from epkd_tf.data import load_data
from epkd_tf.graph import nonzero_params
from epkd_tf.models import build_model
from epkd_tf.study.config import METHODS, StudyConfig
from epkd_tf.study.layout import StudyDir
from epkd_tf.study.methods import (ReseededData, StudyContext, make_method, method_names,
                                   register_method)
from epkd_tf.study.runner import rounds_until, target_params
from epkd_tf.settings import with_flags


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    data = load_data(DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=64))
    tf_keras.utils.set_random_seed(0)
    teacher = build_model("lenet300_100", data.spec.input_shape, data.spec.num_classes)
    initial = teacher.get_weights()
    training.train_classifier(teacher, data, 3, 1e-3)
    cfg = with_flags(StudyConfig(data=data.cfg, teacher=TeacherConfig(teacher_epochs=3)),
                     epochs=1, prune_rate=0.5, epkd_pruners=("l1_filter", "poly_magnitude"),
                     output_dir=str(tmp_path_factory.mktemp("study")))
    ctx = StudyContext(cfg, ReseededData(data, 1), teacher, initial, StudyDir(cfg.output_dir))
    return ctx


@pytest.mark.unit
def test_every_configurable_method_is_registered():
    assert set(method_names()) == set(METHODS)
    assert method_names() == sorted(METHODS)


@pytest.mark.unit
def test_unknown_and_duplicate_methods_are_refused():
    with pytest.raises(ValueError, match="unknown study method 'epdk'; did you mean 'epkd'"):
        make_method("epdk")
    with pytest.raises(ValueError, match="'epkd' is registered twice"):
        register_method(type(make_method("epkd")))


@pytest.mark.integration
@pytest.mark.parametrize("name", method_names())
def test_method_reaches_its_parameter_target(setup, name):
    ctx = setup
    teacher_weights = ctx.teacher.get_weights()
    target = target_params(nonzero_params(ctx.teacher), 0.75)
    method = make_method(name)
    # Seeded like the runner seeds each cell, so that the outcome does not depend on which
    # methods' tests ran before (method_names() is sorted, not in registration order).
    tf_keras.utils.set_random_seed(1)
    step = method.make(ctx, ctx.teacher, target, seed=1, rounds_before=0)
    got = nonzero_params(step.model)
    if name in ("prune", "prune_distill"):
        assert got == target                      # exact: mask kept through retraining
    elif name == "lottery":
        # Biases reset to their initial zeros may stay zero (dead units): at most 1% less.
        assert 0.99 * target <= got <= target
    elif name == "epkd":
        assert abs(got - target) <= 0.02 * target  # whole units: within 2%
    else:
        assert 0.9 * target <= got <= target       # students sized to the budget
    assert step.epochs >= ctx.cfg.epochs and step.rounds >= 1
    # The method trained a model of its own: the shared teacher is unchanged.
    for before, after in zip(teacher_weights, ctx.teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert step.model is not ctx.teacher
    x, y = ctx.data.numpy_test()
    assert (step.model.predict(x, verbose=0).argmax(1) == y).mean() > 0.5


@pytest.mark.integration
def test_iterative_methods_continue_from_the_previous_fraction(setup):
    ctx = setup
    teacher_nonzero = nonzero_params(ctx.teacher)
    method = make_method("prune")
    assert method.from_previous and not make_method("distill").from_previous
    first = method.make(ctx, ctx.teacher, target_params(teacher_nonzero, 0.5), 1, 0).model
    second = method.make(ctx, first, target_params(teacher_nonzero, 0.75), 1, 1).model
    # Weights pruned at 50% stay pruned at 75% (one trajectory).
    for w1, w2 in zip(first.get_weights(), second.get_weights()):
        if w1.ndim > 1:
            assert (w2[w1 == 0] == 0).all()
    # Rounds are numbered from the grid alone: 0.5 at rate 0.5 is one round, 0.75 one more.
    assert rounds_until(teacher_nonzero, (0.5, 0.75, 0.9), 0.75, 0.5) == 1
    assert rounds_until(teacher_nonzero, (0.5, 0.75, 0.9), 0.9, 0.5) == 2


@pytest.mark.integration
def test_epkd_method_is_the_loops_step_with_the_studys_training_budget(setup, monkeypatch):
    """The study's epkd runs EPKD.step (the loop's iteration), fine-tunes at the study's
    --learning_rate with cosine decay, and counts every epoch any candidate or student of
    the cell trained (the poly_magnitude fine-tune too)."""
    import epkd_tf.loop as loop_module
    from epkd_tf import training as training_module
    ctx = setup
    steps, rates = [], []
    real_step, real_cosine = loop_module.EPKD.step, training_module.cosine_learning_rate

    def step(self, student, iteration, target):
        result = real_step(self, student, iteration, target)
        steps.append(result)
        return result

    def cosine(learning_rate, epochs, steps_per_epoch, **kwargs):
        rates.append((learning_rate, epochs))
        return real_cosine(learning_rate, epochs, steps_per_epoch, **kwargs)

    monkeypatch.setattr(loop_module.EPKD, "step", step)
    monkeypatch.setattr(training_module, "cosine_learning_rate", cosine)
    target = target_params(nonzero_params(ctx.teacher), 0.75)
    made = make_method("epkd").make(ctx, ctx.teacher, target, seed=1, rounds_before=0)
    rounds = len(steps)
    assert rounds == made.rounds >= 1
    per_round = max(1, round(ctx.cfg.epochs / rounds))
    magnitude = ctx.cfg.pruning.criteria["poly_magnitude"].epochs
    assert made.epochs == sum(r.epochs for r in steps) == rounds * (per_round + magnitude)
    # One cosine-decayed fine-tune per round, from the study's own learning rate.
    assert rates == [(ctx.cfg.learning_rate, per_round)] * rounds
    # Selection: the held-out validation split when the data has one.
    assert all(r.selection_column == ("validation_accuracy" if getattr(ctx.data, "has_validation", False)
                                      else "test_accuracy") for r in steps)


@pytest.mark.integration
def test_epkd_method_keeps_the_previous_model_when_distillation_diverges(setup):
    import dataclasses
    from epkd_tf.graph import dense_params
    ctx = setup
    blown = dataclasses.replace(ctx, cfg=with_flags(ctx.cfg, learning_rate=1e12))
    target = target_params(nonzero_params(ctx.teacher), 0.5)
    made = make_method("epkd").make(blown, ctx.teacher, target, seed=1, rounds_before=0)
    # Every round hit a non-finite loss: the cell keeps its predecessor's weights (a copy).
    assert made.model is not ctx.teacher
    assert dense_params(made.model) == dense_params(ctx.teacher)
    for a, b in zip(made.model.get_weights(), ctx.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
