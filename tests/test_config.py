"""Config validation names the flag that is wrong; every entry point's flags are the
settings' own (one source of truth)."""
import dataclasses
import importlib
import math
import re

import pytest

from epkd_tf.config import (ConfigError, DataConfig, DistillConfig, PruningConfig, RunConfig,
                            TeacherConfig)
from epkd_tf.settings import leaves, with_flags

pytestmark = pytest.mark.unit

BAD = [
    (DataConfig, {"batch_size": 0}, "--batch_size"),
    (DataConfig, {"seed": -1}, "--seed"),
    (DataConfig, {"seed": 2 ** 32 - 1}, "--seed"),
    (DataConfig, {"dataset": " "}, "--dataset"),
    (DataConfig, {"train_split": ""}, "--train_split"),
    (DataConfig, {"validation_split": "1.5"}, "--validation_split"),
    (DataConfig, {"batch_size": True}, "--batch_size"),
    (DataConfig, {"batch_size": 2.5}, "--batch_size"),
    (TeacherConfig, {"teacher_epochs": -1}, "--teacher_epochs"),
    (TeacherConfig, {"learning_rate": 0.0}, "--teacher_learning_rate"),
    (TeacherConfig, {"learning_rate": float("nan")}, "--teacher_learning_rate"),
    (TeacherConfig, {"width": 0.0}, "--teacher_width"),
    (TeacherConfig, {"teacher": "lenet"}, "--teacher"),
    (RunConfig, {"keep_ratio": 1.0}, "--keep_ratio"),
    (RunConfig, {"keep_ratio": 0.0}, "--keep_ratio"),
    (PruningConfig, {"pruners": ()}, "--pruners"),
    (PruningConfig, {"pruners": ("taylor", "taylor")}, "--pruners"),
    (PruningConfig, {"pruners": ("tayler",)}, "--pruners"),
    (PruningConfig, {"layer_floor": 0.0}, "--layer_floor"),
    (PruningConfig, {"flops_weight": -0.1}, "--flops_weight"),
    (PruningConfig, {"allocation": "knapsack"}, "--allocation"),
    (PruningConfig, {"allocation": "cost", "flops_weight": 0.2}, "--flops_weight"),
    (DistillConfig, {"alpha": -0.1}, "--alpha"),
    (DistillConfig, {"learning_rate": -1.0}, "--finetune_learning_rate"),
    (DistillConfig, {"temperature_start": 0.0}, "--temperature_start"),
    (DistillConfig, {"temperature_min": 60.0}, "--temperature_min"),
    (DistillConfig, {"temperature_step": -1.0}, "--temperature_step"),
    (DistillConfig, {"temperature_schedule": "cosine"}, "--temperature_schedule"),
    (RunConfig, {"iterations": 0}, "--iterations"),
    (RunConfig, {"rank_weights": (0.0, 0.0)}, "--rank_weights"),
    (RunConfig, {"rank_weights": (1.0, -1.0)}, "--rank_weights"),
    (RunConfig, {"rank_weights": (1.0,)}, "--rank_weights"),
    (RunConfig, {"rank_weights": ("a", "b")}, "--rank_weights"),
    (RunConfig, {"output_dir": ""}, "--output_dir"),
    (RunConfig, {"export_formats": ("tflite", "tflite")}, "--export_formats"),
]


@pytest.mark.parametrize("cls,kwargs,flag", BAD, ids=[f"{f}={k}" for _, k, f in BAD])
def test_invalid_values_name_their_flag(cls, kwargs, flag):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert str(err.value).startswith(flag + "=")
    assert "\n" not in str(err.value)


def test_criterion_settings_belong_to_their_pruner():
    cfg = with_flags(PruningConfig(), taylor_batches=3, oracle_examples=7, magnitude_epochs=2)
    assert cfg.criteria["taylor"].batches == 3 and cfg.criteria["oracle"].examples == 7
    assert cfg.criteria["poly_magnitude"].epochs == 2
    with pytest.raises(ConfigError, match=r"^--taylor_batches=0 is invalid"):
        with_flags(PruningConfig(), taylor_batches=0)
    with pytest.raises(ConfigError, match="did you mean 'taylor_batches'"):
        with_flags(PruningConfig(), taylor_batch=3)


def test_defaults_are_valid_and_frozen():
    cfg = RunConfig(output_dir="out")
    assert cfg.keep_ratio == 0.9 and cfg.rank_weights == (1.0, 3.0)
    assert cfg.distill.temperature_start == 50.0 and cfg.iterations == 10
    # One learning rate: the fine-tune's default is the flag's, not a second value.
    assert cfg.distill.learning_rate == 5e-4
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.iterations = 3


def test_did_you_mean_for_registered_names():
    with pytest.raises(ConfigError, match="did you mean 'taylor'"):
        PruningConfig(pruners=("tayler",))
    with pytest.raises(ConfigError, match="did you mean 'lenet5'"):
        TeacherConfig(teacher="lenet")


# ------------------------------------------------------------- every flag of every entry
ENTRY_POINTS = ["epkd_tf.cli.main", "epkd_tf.cli.study", "epkd_tf.cli.export"]


def _entry(name):
    module = importlib.import_module(name)
    defaults = next(getattr(module, f)() for f in ("_run_defaults", "_study_defaults",
                                                    "_export_defaults") if hasattr(module, f))
    flag_values = module.FLAGS
    return module, defaults, flag_values


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_flag_default_is_the_library_default(entry):
    module, defaults, flag_values = _entry(entry)
    seen = set()
    for leaf in leaves(defaults):
        assert leaf.flag in flag_values, leaf.flag
        flag = flag_values[leaf.flag]
        value = flag.default
        expected = leaf.default
        if isinstance(expected, tuple):
            assert [str(v) for v in expected] == value, leaf.flag
        else:
            assert value == expected, (leaf.flag, value, expected)
        assert flag.help == leaf.field.metadata["help"]
        seen.add(leaf.flag)
    assert set(module.RUN_FLAGS) == seen


# Values that break most settings; each error must name a flag the entry point has.
BAD_VALUES = [-1, 0, 10 ** 12, 1e9, -0.5, 1.5, float("nan"), "", "nonsense", True, ()]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_validation_error_names_a_flag_of_the_entry_point(entry):
    module, defaults, flag_values = _entry(entry)
    errors = 0
    for leaf in leaves(defaults):
        for bad in BAD_VALUES:
            try:
                with_flags(defaults, **{leaf.flag: bad})
            except ConfigError as err:
                errors += 1
                named = re.match(r"^--(\w+)=", str(err)).group(1)
                assert named in flag_values, (leaf.flag, bad, str(err))
                assert "\n" not in str(err)
    assert errors > len(list(leaves(defaults)))


def test_the_study_names_its_pruner_list_epkd_pruners():
    from epkd_tf.study.config import StudyConfig
    with pytest.raises(ConfigError, match=r"^--epkd_pruners="):
        with_flags(StudyConfig(), epkd_pruners=("magic",))
    assert StudyConfig().data.validation_split == "0.1"
