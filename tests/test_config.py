"""Config validation names the field (= the flag) that is wrong."""
import dataclasses

import pytest

from epkd_tf.config import (ConfigError, DataConfig, DistillConfig, PruningConfig, RunConfig,
                            TeacherConfig, parse_rank_weights)

BAD = [
    (DataConfig, {"batch_size": 0}, "--batch_size"),
    (DataConfig, {"seed": -1}, "--seed"),
    (DataConfig, {"dataset": " "}, "--dataset"),
    (DataConfig, {"train_split": ""}, "--train_split"),
    (TeacherConfig, {"teacher_epochs": -1}, "--teacher_epochs"),
    (PruningConfig, {"keep_ratio": 1.0}, "--keep_ratio"),
    (PruningConfig, {"keep_ratio": 0.0}, "--keep_ratio"),
    (PruningConfig, {"pruners": ()}, "--pruners"),
    (PruningConfig, {"pruners": ("taylor", "taylor")}, "--pruners"),
    (PruningConfig, {"layer_floor": 0.0}, "--layer_floor"),
    (PruningConfig, {"oracle_examples": 0}, "--oracle_examples"),
    (PruningConfig, {"flops_weight": -0.1}, "--flops_weight"),
    (DistillConfig, {"alpha": -0.1}, "--alpha"),
    (DistillConfig, {"temperature_start": 0.0}, "--temperature_start"),
    (DistillConfig, {"temperature_min": 60.0}, "--temperature_min"),
    (DistillConfig, {"temperature_step": -1.0}, "--temperature_step"),
    (RunConfig, {"iterations": 0, "output_dir": "x"}, "--iterations"),
    (RunConfig, {"rank_weights": (0.0, 0.0), "output_dir": "x"}, "--rank_weights"),
    (RunConfig, {"rank_weights": (1.0, -1.0), "output_dir": "x"}, "--rank_weights"),
    (RunConfig, {"output_dir": ""}, "--output_dir"),
]


@pytest.mark.parametrize("cls,kwargs,flag", BAD, ids=[f for _, _, f in BAD])
def test_invalid_values_name_their_flag(cls, kwargs, flag):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert str(err.value).startswith(flag)
    assert "\n" not in str(err.value)


def test_defaults_are_valid_and_frozen():
    cfg = RunConfig(output_dir="out")
    assert cfg.pruning.keep_ratio == 0.9 and cfg.rank_weights == (1.0, 3.0)
    assert cfg.distill.temperature_start == 50.0 and cfg.iterations == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.iterations = 3


@pytest.mark.parametrize("text", ["1", "1,2,3", "a,b", ""])
def test_malformed_rank_weights(text):
    with pytest.raises(ConfigError, match="--rank_weights"):
        parse_rank_weights(text)


def test_rank_weights_parse():
    assert parse_rank_weights(" 1 , 3 ") == (1.0, 3.0)
