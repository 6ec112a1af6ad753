"""Frozen, validated configuration of an EPKD run.

Entry points (``main.py`` ...) convert absl flags into these dataclasses exactly once;
library code receives configs and never reads ``FLAGS``. Every field name equals the
flag that sets it, so a validation error names the flag the user has to fix.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple


# Deployment formats a run can write per model (see deploy.py and README "Deployment").
EXPORT_FORMATS: Tuple[str, ...] = ("saved_model", "tflite", "tflite_sparse",
                                   "tflite_int8_dynamic", "tflite_int8", "keras3")


# tf.distribute strategies (the registry lives in epkd_tf/distribute.py, which imports
# TensorFlow; the names are repeated here so that configs validate without it).
DISTRIBUTIONS: Tuple[str, ...] = ("default", "mirrored", "multi_worker_mirrored", "tpu")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field (= the flag)."""


def _require(condition: bool, field: str, message: str, value) -> None:
    if not condition:
        raise ConfigError(f"--{field}={value!r} is invalid: {message}.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which TFDS dataset to load and how to batch it."""

    dataset: str = "mnist"
    data_dir: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    batch_size: int = 128
    seed: int = 0
    shuffle_buffer: int = 10_000
    # Square side images are resized/cropped to; None: the dataset's own size (224 for
    # imagenet2012). Required for other datasets whose images vary in size.
    image_size: Optional[int] = None
    # Fraction of training labels replaced by a different, random class (a seeded, fixed
    # set of examples; see Data.flipped_indices). 0: the labels as stored.
    label_noise: float = 0.0

    def __post_init__(self):
        _require(bool(self.dataset and self.dataset.strip()), "dataset",
                 "give a TFDS dataset name such as mnist or cifar10", self.dataset)
        _require(bool(self.train_split.strip()), "train_split",
                 "give a TFDS split such as train or train[:10%]", self.train_split)
        _require(bool(self.test_split.strip()), "test_split",
                 "give a TFDS split such as test or test[:50%]", self.test_split)
        _require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size",
                 "must be a positive integer", self.batch_size)
        _require(isinstance(self.seed, int) and self.seed >= 0, "seed",
                 "must be a non-negative integer", self.seed)
        _require(isinstance(self.shuffle_buffer, int) and self.shuffle_buffer >= 1,
                 "shuffle_buffer", "must be a positive integer", self.shuffle_buffer)
        _require(self.image_size is None or (isinstance(self.image_size, int)
                                             and not isinstance(self.image_size, bool)
                                             and self.image_size >= 8),
                 "image_size", "must be an integer of at least 8 (pixels per side) or unset "
                 "for the dataset's own size", self.image_size)
        _require(isinstance(self.label_noise, (int, float)) and not isinstance(
            self.label_noise, bool) and 0.0 <= self.label_noise < 1.0, "label_noise",
            "must be a fraction in [0, 1) of training labels to replace", self.label_noise)


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Which teacher to build and how long to train it."""

    teacher: str = "lenet300_100"
    teacher_epochs: int = 10
    learning_rate: float = 1e-3
    width: float = 1.0  # channel/unit width multiplier of the teacher architecture
    # A user's trained model (.keras, .h5 or SavedModel directory) used as the teacher
    # instead of building and training ``teacher`` (see epkd_tf/models/user.py).
    teacher_path: Optional[str] = None

    def __post_init__(self):
        _require(self.teacher_path is None or (isinstance(self.teacher_path, str)
                                               and bool(self.teacher_path.strip())),
                 "teacher_path", "give the path of a .keras file, an .h5 file or a "
                 "SavedModel directory", self.teacher_path)
        _require(isinstance(self.teacher_epochs, int) and self.teacher_epochs >= 0,
                 "teacher_epochs", "must be a non-negative integer", self.teacher_epochs)
        _require(self.learning_rate > 0 and math.isfinite(self.learning_rate),
                 "learning_rate", "must be a positive number", self.learning_rate)
        _require(isinstance(self.width, (int, float)) and not isinstance(self.width, bool)
                 and self.width > 0 and math.isfinite(self.width), "teacher_width",
                 "must be a positive number (1 = the architecture's published width)",
                 self.width)


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """How each iteration makes its candidate students."""

    pruners: Tuple[str, ...] = ("l1_filter", "taylor", "oracle", "poly_magnitude")
    keep_ratio: float = 0.9
    layer_floor: float = 0.1
    taylor_batches: int = 8
    oracle_examples: int = 1024
    magnitude_epochs: int = 1
    flops_weight: float = 0.0

    def __post_init__(self):
        _require(len(self.pruners) >= 1, "pruners", "name at least one pruner", ",".join(self.pruners))
        _require(len(set(self.pruners)) == len(self.pruners), "pruners",
                 "a pruner is named twice", ",".join(self.pruners))
        _require(0.0 < self.keep_ratio < 1.0, "keep_ratio",
                 "must lie strictly between 0 and 1", self.keep_ratio)
        _require(0.0 < self.layer_floor < 1.0, "layer_floor",
                 "must lie strictly between 0 and 1 (the fraction of a layer's units "
                 "that is never pruned)", self.layer_floor)
        _require(isinstance(self.taylor_batches, int) and self.taylor_batches >= 1,
                 "taylor_batches", "must be a positive integer", self.taylor_batches)
        _require(isinstance(self.oracle_examples, int) and self.oracle_examples >= 1,
                 "oracle_examples", "must be a positive integer", self.oracle_examples)
        _require(isinstance(self.magnitude_epochs, int) and self.magnitude_epochs >= 1,
                 "magnitude_epochs", "must be a positive integer", self.magnitude_epochs)
        _require(self.flops_weight >= 0 and math.isfinite(self.flops_weight), "flops_weight",
                 "must be zero (rank by importance only) or positive", self.flops_weight)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """How the winning candidate is fine-tuned by distillation from the original teacher."""

    finetune_epochs: int = 2
    alpha: float = 0.1
    temperature_schedule: str = "linear"
    temperature_start: float = 50.0
    temperature_step: float = 5.0
    temperature_min: float = 1.0
    learning_rate: float = 1e-3

    def __post_init__(self):
        _require(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0,
                 "finetune_epochs", "must be a non-negative integer", self.finetune_epochs)
        _require(0.0 <= self.alpha <= 1.0, "alpha",
                 "must lie in [0, 1] (the weight of the hard-label loss)", self.alpha)
        _require(self.temperature_start > 0 and math.isfinite(self.temperature_start),
                 "temperature_start", "must be a positive number", self.temperature_start)
        _require(self.temperature_step >= 0 and math.isfinite(self.temperature_step),
                 "temperature_step", "must be zero or positive", self.temperature_step)
        _require(self.temperature_min > 0 and math.isfinite(self.temperature_min),
                 "temperature_min", "must be a positive number", self.temperature_min)
        _require(self.temperature_min <= self.temperature_start, "temperature_min",
                 f"must not exceed --temperature_start={self.temperature_start}",
                 self.temperature_min)
        _require(self.learning_rate > 0 and math.isfinite(self.learning_rate),
                 "finetune_learning_rate", "must be a positive number", self.learning_rate)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one EPKD run needs."""

    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    pruning: PruningConfig = PruningConfig()
    distill: DistillConfig = DistillConfig()
    iterations: int = 10
    rank_weights: Tuple[float, float] = (1.0, 3.0)
    output_dir: str = ""
    export_candidates: bool = False
    latency_runs: int = 50
    export_formats: Tuple[str, ...] = EXPORT_FORMATS
    tflite_threads: int = 1
    int8_dense_per_channel: bool = False
    # A NaN/Inf distillation loss stops the run (instead of keeping the previous student).
    fail_on_nan: bool = False
    # Training examples (a fixed seeded subset, shared with the criteria's samples) whose
    # accuracy ranks the candidates; 0: the whole training split.
    eval_examples: int = 10_000
    # XLA-compiled train steps (teacher training and distillation).
    jit_compile: bool = False
    # tf.distribute strategy (epkd_tf/distribute.py) and, for "mirrored" on a machine
    # without GPUs, how many logical CPU devices to mirror over (0: one).
    distribution: str = "default"
    logical_cpus: int = 0

    def __post_init__(self):
        _require(isinstance(self.iterations, int) and self.iterations >= 1, "iterations",
                 "must be a positive integer", self.iterations)
        _require(len(self.rank_weights) == 2, "rank_weights",
                 "give two weights: train,test (e.g. 1,3)", self.rank_weights)
        _require(all(w >= 0 and math.isfinite(w) for w in self.rank_weights), "rank_weights",
                 "weights must be non-negative numbers", self.rank_weights)
        _require(sum(self.rank_weights) > 0, "rank_weights",
                 "at least one weight must be positive", self.rank_weights)
        _require(bool(self.output_dir), "output_dir", "must name a directory", self.output_dir)
        _require(isinstance(self.latency_runs, int) and self.latency_runs >= 1, "latency_runs",
                 "must be a positive integer", self.latency_runs)
        check_export_formats(self.export_formats, "export_formats")
        _require(isinstance(self.tflite_threads, int) and self.tflite_threads >= 1,
                 "tflite_threads", "must be a positive integer", self.tflite_threads)
        _require(isinstance(self.eval_examples, int) and self.eval_examples >= 0,
                 "eval_examples", "must be 0 (the whole training split) or a positive "
                 "number of examples", self.eval_examples)
        _require(self.distribution in DISTRIBUTIONS, "distribution",
                 f"choose from {', '.join(DISTRIBUTIONS)}", self.distribution)
        _require(isinstance(self.logical_cpus, int) and 0 <= self.logical_cpus <= 64,
                 "logical_cpus", "must be 0 (one device) or a number of logical CPU "
                 "devices up to 64", self.logical_cpus)


def parse_rank_weights(text: str) -> Tuple[float, float]:
    """Parses ``"1,3"`` into ``(1.0, 3.0)``; raises ConfigError naming --rank_weights."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    _require(len(values) == 2, "rank_weights", "give two numbers: train,test (e.g. 1,3)", text)
    return values  # validated further by RunConfig


def check_export_formats(formats, flag: str) -> None:
    """Each of ``formats`` is a known deployment format, none twice (empty: no exports);
    raises ConfigError naming ``--flag``."""
    for name in formats:
        _require(name in EXPORT_FORMATS, flag, f"unknown format {name!r}; choose from "
                 f"{', '.join(EXPORT_FORMATS)}", ",".join(formats))
    _require(len(set(formats)) == len(formats), flag, "a format is named twice",
             ",".join(formats))
