"""One source of defaults: every keyword of the Python API that stands for a run setting
defaults to that setting's declared default (epkd_tf/config.py), and every keyword named
like a setting is either such a keyword or differs on purpose, for a reason given here."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import inspect

import pytest

from epkd_tf.config import BudgetConfig, DataConfig, DistillConfig, PruningConfig, RunConfig
from epkd_tf.settings import default_of, leaves

pytestmark = pytest.mark.unit


def _callables():
    """Public callable -> the function whose keywords it takes (name, function)."""
    from epkd_tf.api import CompressionResult, analyze, compress, load_model, prune
    from epkd_tf.data import from_arrays, from_datasets, load_data, register_dataset
    from epkd_tf.distill.distiller import Distiller
    from epkd_tf.graph.rules import register_rule
    from epkd_tf.models.registry import register_model
    from epkd_tf.pruning.registry import register_pruner
    from epkd_tf.settings import with_flags
    return {"compress": compress, "prune": prune, "analyze": analyze,
            "load_model": load_model, "Distiller": Distiller.__init__,
            "Distiller.compile": Distiller.compile, "from_arrays": from_arrays,
            "from_datasets": from_datasets, "load_data": load_data, "with_flags": with_flags,
            "register_pruner": register_pruner, "register_model": register_model,
            "register_rule": register_rule, "register_dataset": register_dataset,
            "CompressionResult.export": CompressionResult.export}


# (callable, keyword) -> (settings class, field) whose default it takes.
FROM_SETTINGS = {
    ("prune", "budget"): (BudgetConfig, "budget"),
    ("prune", "layer_floor"): (PruningConfig, "layer_floor"),
    ("prune", "flops_weight"): (PruningConfig, "flops_weight"),
    ("prune", "allocation"): (PruningConfig, "allocation"),
    ("prune", "channel_multiple"): (PruningConfig, "channel_multiple"),
    ("prune", "batch_size"): (DataConfig, "batch_size"),
    ("prune", "seed"): (DataConfig, "seed"),
    ("prune", "learning_rate"): (DistillConfig, "learning_rate"),   # --finetune_learning_rate
    ("prune", "bn_recalibration_batches"): (RunConfig, "bn_recalibration_batches"),
    ("Distiller.compile", "alpha"): (DistillConfig, "alpha"),
    **{(function, keyword): (DataConfig, keyword)
       for function in ("from_arrays", "from_datasets")
       for keyword in ("batch_size", "seed", "label_noise", "shuffle_buffer",
                       "validation_split")},
}

# Keywords named like a setting whose default differs from it on purpose.
DIFFERENT_ON_PURPOSE = {
    ("compress", "output_dir"): "None runs in a temporary directory and keeps the results "
                                "in memory; the setting's None names a new run directory",
    ("Distiller", "teacher"): "a teacher model (None: cached teacher logits in every batch), "
                              "not the --teacher architecture name",
    ("Distiller", "batchnorm"): "the Distiller also takes 'auto' (decided from the "
                                "student's statistics), which the run setting does not",
}


@pytest.mark.parametrize("function, keyword", sorted(FROM_SETTINGS))
def test_an_api_default_is_the_settings_default(function, keyword):
    settings_class, field = FROM_SETTINGS[(function, keyword)]
    parameter = inspect.signature(_callables()[function]).parameters[keyword]
    expected = default_of(settings_class, field)
    assert parameter.default == expected and type(parameter.default) is type(expected), (
        f"{function}({keyword}={parameter.default!r}) but the setting "
        f"{settings_class.__name__}.{field} defaults to {expected!r}")


@pytest.mark.parametrize("field, settings_class, setting", [
    ("seed", DataConfig, "seed"), ("batch_size", DataConfig, "batch_size"),
    ("learning_rate", DistillConfig, "learning_rate")])
def test_the_pruning_context_defaults_are_the_settings_defaults(field, settings_class,
                                                                setting):
    """poly_magnitude's fine-tune in a run uses --finetune_learning_rate (epkd_tf/loop.py);
    a PruningContext made without one uses the same rate."""
    from epkd_tf.pruning import PruningContext
    context = PruningContext(None, PruningConfig())
    assert getattr(context, field) == default_of(settings_class, setting)


def test_the_distillers_initial_alpha_is_the_settings_default():
    import tf_keras
    from epkd_tf.distill.distiller import Distiller
    student = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(2)])
    assert Distiller(student).alpha == pytest.approx(default_of(DistillConfig, "alpha"))


def test_every_keyword_named_like_a_setting_is_accounted_for():
    """A new keyword named like a setting must take the setting's default (add it to
    FROM_SETTINGS) or say why it does not (DIFFERENT_ON_PURPOSE)."""
    setting_names = {leaf.path[-1] for leaf in leaves(RunConfig())} | {
        leaf.flag for leaf in leaves(RunConfig())}
    unaccounted = []
    for function, fn in _callables().items():
        for keyword, parameter in inspect.signature(fn).parameters.items():
            if parameter.default is inspect.Parameter.empty or keyword not in setting_names:
                continue
            if (function, keyword) not in FROM_SETTINGS | DIFFERENT_ON_PURPOSE:
                unaccounted.append(f"{function}({keyword}={parameter.default!r})")
    assert unaccounted == []


def test_default_of_reads_the_declaration():
    assert default_of(DistillConfig, "learning_rate") == 5e-4    # --finetune_learning_rate
    assert default_of(RunConfig, "iterations") == RunConfig().iterations
    with pytest.raises(KeyError, match="no setting 'finetune_learning_rate'"):
        default_of(DistillConfig, "finetune_learning_rate")     # a flag, not a field
    with pytest.raises(KeyError):
        default_of(RunConfig, "data")                            # nested settings
