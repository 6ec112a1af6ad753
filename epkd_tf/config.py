"""Frozen, validated settings of an EPKD run: the one place where a setting, its default,
its help and its validation live (see :mod:`epkd_tf.settings`).

Entry points derive their flags from these classes (``settings.define_flags``) and build
them back once (``settings.from_flags``); library code receives these objects and never
reads ``FLAGS``. Every error names the flag that sets the value. Each pruning criterion
owns its settings (``epkd_tf/pruning/<criterion>.py``); they appear here through
``PruningConfig.criteria``.

Nothing here imports TensorFlow: flags are validated before it loads.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from epkd_tf.precision import PRECISIONS
from epkd_tf.settings import (DISTINCT, NON_EMPTY, NON_NEGATIVE, NOT_BLANK, POSITIVE, Check,
                              ConfigError, Settings, at_least, between, documented, nested,
                              one_of, per_name, setting)

__all__ = ["ConfigError", "DataConfig", "TeacherConfig", "PruningConfig", "DistillConfig",
           "BudgetConfig", "RunConfig", "EXPORT_FORMATS", "DISTRIBUTIONS", "BATCHNORM_MODES",
           "check_export_formats", "DATASET_ALIASES", "UNLABELLED_TEST_SPLITS",
           "DATASET_TEACHERS", "DATASET_PRUNERS", "canonical_dataset", "default_test_split"]

# Deployment formats a run can write per model (see deploy.py and docs/deployment.md).
EXPORT_FORMATS: Tuple[str, ...] = ("saved_model", "tflite", "tflite_sparse",
                                   "tflite_int8_dynamic", "tflite_int8", "keras3")

# tf.distribute strategies (the registry lives in epkd_tf/distribute.py, which imports
# TensorFlow; the names are repeated here so that configs validate without it).
DISTRIBUTIONS: Tuple[str, ...] = ("default", "mirrored", "multi_worker_mirrored", "tpu")

#: How a student's BatchNormalization layers normalise while it is distilled
#: (``--distill_batchnorm``; see :class:`epkd_tf.Distiller`, which also takes ``auto``):
#: ``frozen``, with their moving statistics, kept as they are; ``batch``, with each batch's
#: statistics (Keras' training mode).
BATCHNORM_MODES: Tuple[str, ...] = ("frozen", "batch")

# Seeds go to NumPy's legacy seeding (< 2**32) and are offset per iteration and per study
# cell (see epkd_tf.seeds), so they are kept well inside it.
MAX_SEED = 2 ** 31 - 1
#: What --keep_ratio is a fraction of (RunConfig.keep_of).
KEEP_OF = ("cost", "removable")

_INTEGER_PIXELS = Check(lambda v: 8 <= v <= 4096, "must be an integer from 8 to 4096 (pixels "
                                                  "per side), or unset for the dataset's own "
                                                  "size")


# User-facing dataset names that differ from the TFDS name.
DATASET_ALIASES = {"imagenet": "imagenet2012"}

#: TFDS datasets whose "test" split has no labels (all -1) -> the labelled split a run
#: tests on when --test_split is not given (and which the refusal of ``test`` names).
UNLABELLED_TEST_SPLITS = {"imagenet2012": "validation"}

#: The teacher the command line trains for a dataset when neither --teacher nor
#: --teacher_path is given, where the general default (an MLP for MNIST) makes no sense:
#: ImageNet's recipe is a 224 px ResNet-50 (flags/imagenet_resnet50.cfg).
DATASET_TEACHERS = {"imagenet2012": "resnet50"}

#: The pruners the command line runs for a dataset when --pruners is not given, where the
#: general default does not scale: the oracle re-evaluates the network once per channel
#: group on --oracle_examples images (ResNet-50 has 11,456 groups, MobileNetV2 9,128: at
#: 224 px millions of forward passes per iteration, days on a CPU).
DATASET_PRUNERS = {"imagenet2012": ("l1_filter", "taylor", "poly_magnitude")}


def canonical_dataset(name: str) -> str:
    """The TFDS name of ``--dataset`` ``name`` (its alias resolved, blanks stripped)."""
    name = name.strip()
    return DATASET_ALIASES.get(name, name)


def default_test_split(dataset: str) -> str:
    """The split a run on ``dataset`` tests on when ``--test_split`` is not given: ``test``,
    or the labelled evaluation split of a dataset whose test split has no labels
    (``validation`` for imagenet2012)."""
    return UNLABELLED_TEST_SPLITS.get(canonical_dataset(dataset), "test")


def _pruner_names():
    from epkd_tf.pruning.registry import PRUNERS
    return PRUNERS.names()


def _allocation_names():
    from epkd_tf.pruning.allocation import allocation_names
    return allocation_names()


def _pruner_entries():
    from epkd_tf.pruning.registry import PRUNERS
    return PRUNERS.items()


def _teacher_names():
    from epkd_tf.models.registry import model_names
    return model_names()


def _is_teacher(name: str) -> bool:
    from epkd_tf.models.registry import APPLICATIONS_PREFIX
    return name.startswith(APPLICATIONS_PREFIX) or name in _teacher_names()


def _schedule_names():
    from epkd_tf.distill.temperature import SCHEDULES
    return SCHEDULES.names()


@documented
@dataclasses.dataclass(frozen=True)
class DataConfig(Settings):
    """Which dataset to load, how to split and batch it (the data part of a
    :class:`RunConfig`; :func:`epkd_tf.load_data` loads what it names).

    Example::

        import epkd_tf

        data = epkd_tf.DataConfig(dataset="cifar10", batch_size=64, validation_split="0.1")
        assert data.replace(seed=3).seed == 3
        try:
            epkd_tf.DataConfig(batch_size=0)
        except epkd_tf.ConfigError as err:
            print(err)      # --batch_size=0 is invalid: must lie in [1, 65536] (...).
    """

    dataset: str = setting("mnist", "TFDS dataset name (mnist, cifar10, imagenet2012 alias "
                           "imagenet, or any TFDS image-classification dataset).",
                           checks=[NOT_BLANK])
    data_dir: Optional[str] = setting(None, "TFDS data directory (default: "
                                      "~/tensorflow_datasets).")
    train_split: str = setting("train", "TFDS split for training, e.g. train[:90%].",
                               checks=[NOT_BLANK])
    test_split: Optional[str] = setting(
        None, "TFDS split for testing, e.g. test[:50%]. Default: test, or the labelled "
        "evaluation split of a dataset whose test split has no labels (validation for "
        "imagenet2012).", checks=[NOT_BLANK])
    validation_split: Optional[str] = setting(
        None, "Held-out split on which candidates are ranked (and stop rules judged) "
        "instead of the test split: a TFDS split string such as train[90%:] (use it with "
        "--train_split=train[:90%]) or a fraction such as 0.1 carved reproducibly (by "
        "--seed) from the training split. Unset: the seed's definition, ranking on the "
        "test split (its accuracies of selected students are then optimistic).",
        checks=[NOT_BLANK])
    batch_size: int = setting(128, "Batch size of every training and evaluation pass.",
                              checks=[between(1, 65536, what="examples per batch")])
    seed: int = setting(0, "Seed of shuffling, initialisation and scoring subsets.",
                        checks=[between(0, MAX_SEED)])
    shuffle_buffer: int = setting(10_000, "Examples in the shuffle buffer of a streamed "
                                  "(uncached) training split.", checks=[at_least(1)])
    image_size: Optional[int] = setting(None, "Square size (pixels per side) images are "
                                        "resized/cropped to; required for datasets with "
                                        "variable image sizes (imagenet2012 defaults to "
                                        "224); default: the dataset's own size.",
                                        checks=[_INTEGER_PIXELS])
    label_noise: float = setting(0.0, "Fraction of training labels replaced by another "
                                 "random class (a fixed seeded set of examples).",
                                 checks=[between(0, 1, open_upper=True,
                                                 what="training labels replaced")])
    download: bool = setting(True, "Download and prepare a TFDS dataset that is not in "
                             "--data_dir yet (as tfds.load does); --nodownload refuses "
                             "instead, saying how to prepare it.")

    @property
    def evaluation_split(self) -> str:
        """The split tested on: ``test_split``, or when unset the dataset's default
        (:func:`default_test_split`)."""
        return self.test_split if self.test_split is not None \
            else default_test_split(self.dataset)

    def validate(self):
        fraction = validation_fraction(self.validation_split)
        if fraction is not None and not 0.0 < fraction < 1.0:
            raise self.invalid("validation_split", "a fraction must lie in (0, 1)")


def validation_fraction(split: Optional[str]) -> Optional[float]:
    """The fraction of the training split a ``validation_split`` such as "0.1" carves out;
    None for a TFDS split string (or no validation split)."""
    if split is None:
        return None
    try:
        return float(split)
    except ValueError:
        return None


@documented
@dataclasses.dataclass(frozen=True)
class TeacherConfig(Settings):
    """Which teacher to build and how long to train it (or a trained one to load): the
    teacher part of a :class:`RunConfig`.

    Example::

        import epkd_tf

        teacher = epkd_tf.TeacherConfig(teacher="lenet5", teacher_epochs=2)
        assert teacher.learning_rate == 1e-3          # --teacher_learning_rate
        given = epkd_tf.TeacherConfig(teacher_path="my_teacher.keras")
        assert "teacher_epochs" in given.inactive()   # unused with a trained teacher
    """

    teacher: str = setting("lenet300_100", "Teacher architecture: a zoo name (see "
                           "docs/teachers.md) or applications.<Name> for a "
                           "tf_keras.applications model. On the command line "
                           "--dataset=imagenet defaults it to resnet50.",
                           checks=[NOT_BLANK])
    teacher_epochs: int = setting(10, "Epochs of teacher training.", checks=[NON_NEGATIVE])
    learning_rate: float = setting(1e-3, "Adam learning rate of teacher training "
                                   "(cosine-decayed to 1%).", flag="teacher_learning_rate",
                                   checks=[POSITIVE])
    width: float = setting(1.0, "Width multiplier of the teacher's channels/units (1 = the "
                           "published architecture; e.g. 0.25 for a quick run).",
                           flag="teacher_width",
                           checks=[between(0, 16, open_lower=True,
                                           what="1 = the architecture's published width")])
    teacher_path: Optional[str] = setting(
        None, "A trained model to use as the teacher instead of training --teacher: a "
        ".keras file (tf_keras or Keras 3), an .h5 file or a Keras SavedModel directory that "
        "outputs logits for "
        "the dataset's classes (loaded in Keras safe mode; Lambda layers are refused). "
        "--teacher_epochs, --teacher_learning_rate and --teacher_width are then unused.",
        checks=[NOT_BLANK])

    def validate(self):
        if not _is_teacher(self.teacher):
            reason = one_of(_teacher_names, "teacher").failure(self.teacher)
            raise self.invalid("teacher", f"{reason}, or applications.<Name>")

    def inactive(self):
        return ("teacher", "teacher_epochs", "learning_rate", "width") if self.teacher_path \
            else ()


@documented
@dataclasses.dataclass(frozen=True)
class PruningConfig(Settings):
    """How each iteration makes its candidates: which criteria, and the shared rules that
    turn their scores into a removal plan. Each criterion's own settings live in its class
    (``criteria[name]``).

    Example::

        import epkd_tf

        pruning = epkd_tf.PruningConfig(pruners=("l1_filter", "taylor"), layer_floor=0.2)
        pruning = epkd_tf.with_flags(pruning, taylor_batches=4)   # a criterion's setting
        assert pruning.criteria["taylor"].batches == 4
        assert [p.name for p in pruning.make_pruners()] == ["l1_filter", "taylor"]
    """

    pruners: Tuple[str, ...] = setting(
        ("l1_filter", "taylor", "oracle", "poly_magnitude"),
        "Pruning methods that make the candidates of every iteration.",
        checks=[NON_EMPTY, DISTINCT, one_of(_pruner_names, "pruner")])
    layer_floor: float = setting(0.1, "Fraction of each layer's units structured pruning "
                                 "never removes (at least one unit).",
                                 checks=[between(0, 1, open_lower=True, open_upper=True)])
    layer_floor_of: str = setting("teacher", "What --layer_floor is a fraction of: teacher "
                                  "(each layer's width in the original teacher, so the floor "
                                  "does not compound over iterations) or current (its width "
                                  "in the model being pruned, as before).",
                                  checks=[one_of(lambda: ("teacher", "current"), "choice")])
    flops_weight: float = setting(0.0, "FLOPs regularisation of the structured pruners' "
                                  "global ranking (Molchanov et al.): > 0 prefers removing "
                                  "units that cost many multiply-accumulates, so latency "
                                  "falls with the parameters; 0 ranks by importance alone.",
                                  checks=[NON_NEGATIVE])
    allocation: str = setting("importance", "How structured pruning chooses the units "
                              "to remove: importance (the criterion's ranking alone, "
                              "with --flops_weight) or cost (importance per unit of the "
                              "budget's cost - parameters, MACs, milliseconds or bytes - "
                              "re-costed as the model shrinks, a greedy knapsack as in "
                              "HALP and NetAdapt).",
                              checks=[one_of(_allocation_names, "allocation")])
    channel_multiple: int = setting(1, "Structured pruning keeps every pruned layer's "
                                    "channel count a multiple of this (or the layer's whole "
                                    "width): SIMD kernels of some runtimes like multiples "
                                    "of 4, 8 or 16. 1: any width.",
                                    checks=[between(1, 1024)])
    scoring_memory_mb: int = setting(1024, "Memory (MB) the data-driven criteria's "
                                     "layer outputs may take at once: Taylor's activations "
                                     "and gradients, the oracle's re-evaluations. Examples "
                                     "are processed in chunks that fit; the scores do not "
                                     "depend on it (a 224 px ResNet-50 needs about 144 MB "
                                     "per example).",
                                     checks=[between(16, 1_048_576)])
    criteria: object = per_name(_pruner_entries)

    def make_pruners(self):
        """The pruner objects of ``pruners``, in order, each with its own settings."""
        return [self.criteria[name] for name in self.pruners]

    def validate(self):
        if self.flops_weight > 0 and self.allocation != "importance":
            raise self.invalid("flops_weight", f"is a weight of the importance ranking; "
                               f"--allocation={self.allocation} costs units itself, so use "
                               "--flops_weight=0 with it")
        missing = [p for p in self.pruners if p not in self.criteria]
        if missing:
            raise self.invalid("pruners", f"{missing[0]!r} has no settings (registered after "
                               "this config was made); make the config again")


@documented
@dataclasses.dataclass(frozen=True)
class DistillConfig(Settings):
    """How the winning candidate is fine-tuned by distillation from the original teacher
    (the distillation part of a :class:`RunConfig`).

    Example::

        import epkd_tf

        distill = epkd_tf.DistillConfig(temperature_start=10.0, temperature_step=4.0,
                                        temperature_min=2.0)
        schedule = distill.schedule()                 # iteration (1-based) -> temperature
        assert [schedule(i) for i in (1, 2, 3, 4)] == [10.0, 6.0, 2.0, 2.0]
    """

    finetune_epochs: int = setting(2, "Epochs of distillation fine-tuning per iteration.",
                                   checks=[NON_NEGATIVE])
    learning_rate: float = setting(5e-4, "Adam learning rate of fine-tuning (also of the "
                                   "poly_magnitude pruning fine-tune).",
                                   flag="finetune_learning_rate", checks=[POSITIVE])
    learning_rate_schedule: str = setting(
        "constant", "constant: --finetune_learning_rate throughout; cosine: decayed to 1% "
        "over each fine-tune.", flag="finetune_schedule",
        checks=[one_of(lambda: ("constant", "cosine"), "schedule")])
    alpha: float = setting(0.1, "Weight of the hard-label loss; 1 - alpha weighs the "
                           "soft-target loss.", checks=[between(0, 1)])
    batchnorm: str = setting(
        "batch", "How the student's BatchNormalization layers normalise while it is "
        "distilled: batch (Keras' training mode: each batch's statistics, re-estimated "
        "after distillation; measured ahead on ResNet-18 and MobileNetV2) or frozen (with "
        "their moving statistics, kept as they are; scale and offset trained: the student "
        "is trained as it is deployed and as the teacher's logits are computed).",
        flag="distill_batchnorm", checks=[one_of(lambda: BATCHNORM_MODES, "mode")])
    temperature_schedule: str = setting(
        "linear", "linear: max(temperature_min, temperature_start - temperature_step * "
        "(iteration - 1)); constant: temperature_start.",
        checks=[one_of(_schedule_names, "temperature schedule")])
    temperature_start: float = setting(50.0, "Distillation temperature of iteration 1.",
                                       checks=[POSITIVE])
    temperature_step: float = setting(5.0, "Temperature decrease per iteration.",
                                      checks=[NON_NEGATIVE])
    temperature_min: float = setting(1.0, "Lowest temperature.", checks=[POSITIVE])

    def validate(self):
        if self.temperature_min > self.temperature_start:
            raise self.invalid("temperature_min", f"must not exceed --temperature_start="
                                                  f"{self.temperature_start:g}")

    def schedule(self):
        """The temperature schedule: iteration (1-based) -> T."""
        from epkd_tf.distill.temperature import schedule_from_settings
        return schedule_from_settings(self.temperature_schedule, self.temperature_start,
                                      self.temperature_step, self.temperature_min)


def _measure_names():
    from epkd_tf.budget import MEASURES
    return MEASURES.names()


@documented
@dataclasses.dataclass(frozen=True)
class BudgetConfig(Settings):
    """In which measure a run shrinks the network, and when it stops (docs/budgets.md):
    the budget part of a :class:`RunConfig`.

    Example::

        import epkd_tf

        budget = epkd_tf.BudgetConfig(budget="macs", target_macs=1_000_000,
                                      max_accuracy_drop=1.0)
        assert [(goal.measure, goal.value) for goal in budget.goals()] == [
            ("macs", 1e6)]
    """

    budget: str = setting("params", "What each iteration shrinks by --keep_ratio: params "
                          "(nonzero parameters, the seed's definition), macs "
                          "(multiply-accumulates per example), latency (batch-1 TFLite "
                          "latency on LiteRT, --latency_format, --tflite_threads) or size "
                          "(bytes of the float TFLite file).",
                          checks=[one_of(_measure_names, "budget")])
    latency_format: str = setting("tflite", "The TFLite file whose latency --budget=latency "
                                  "and --target_latency_ms measure: tflite (float32) or "
                                  "tflite_int8 (full-integer).",
                                  checks=[one_of(lambda: ("tflite", "tflite_int8"),
                                                 "format")])
    target_params: Optional[int] = setting(None, "Stop once a student has at most this "
                                           "many nonzero parameters.", checks=[at_least(1)])
    target_macs: Optional[int] = setting(None, "Stop once a student needs at most this many "
                                         "multiply-accumulates per example.",
                                         checks=[at_least(1)])
    target_latency_ms: Optional[float] = setting(None, "Stop once a student's measured "
                                                 "latency (--latency_format) is at most "
                                                 "this many milliseconds.", checks=[POSITIVE])
    target_size_mb: Optional[float] = setting(None, "Stop once a student's float TFLite "
                                              "file is at most this many MB.",
                                              checks=[POSITIVE])
    max_accuracy_drop: Optional[float] = setting(
        None, "Stop when a student falls more than this many accuracy points (percent) "
        "below the teacher on the selection split (--validation_split, else the test "
        "split; with --drop_patience=K, once K more students in a row do too) and keep the "
        "cheapest student within it as the final one.",
        checks=[between(0, 100)])
    drop_patience: int = setting(
        0, "With --max_accuracy_drop: how many students in a row may lose more than it "
        "before the run stops; 0 stops at the first. Each next student is pruned from the "
        "last and distilled from the teacher, so one beyond the drop can recover (on few "
        "validation examples it may be there by noise alone); the final student is still "
        "the cheapest within the drop.", checks=[at_least(0)])

    def validate(self):
        if self.drop_patience and self.max_accuracy_drop is None:
            raise self.invalid("drop_patience", "needs --max_accuracy_drop (the drop it "
                                                "waits on)")

    def inactive(self):
        # Without the drop rule patience means nothing: it is not recorded in flags.txt.
        return ("drop_patience",) if self.max_accuracy_drop is None else ()

    def goals(self):
        """The --target_* stop rules given, as budget.Goal objects (all must be met)."""
        from epkd_tf.budget import Goal
        goals = [("params", self.target_params), ("macs", self.target_macs),
                 ("latency", self.target_latency_ms),
                 ("size", None if self.target_size_mb is None else self.target_size_mb * 1e6)]
        return [Goal(name, float(value)) for name, value in goals if value is not None]


def _rank_weights_check(weights) -> bool:
    return len(weights) == 2 and all(w >= 0 for w in weights) and sum(weights) > 0


@documented
@dataclasses.dataclass(frozen=True)
class RunConfig(Settings):
    """Everything one EPKD run needs: the settings of ``python -m epkd_tf.main``, whose
    flags are made from these classes, and of :func:`epkd_tf.compress`'s ``config``.

    Settings are immutable and validated when made; :meth:`~Settings.replace` changes
    fields, :func:`epkd_tf.with_flags` changes any setting by its flag name.

    Example::

        import epkd_tf

        config = epkd_tf.RunConfig(iterations=3, keep_ratio=0.8)
        config = epkd_tf.with_flags(config, batch_size=64, finetune_learning_rate=1e-3)
        assert config.data.batch_size == 64 and config.distill.learning_rate == 1e-3
        try:
            config.replace(keep_ratio=1.5)
        except epkd_tf.ConfigError as err:
            print(err)      # --keep_ratio=1.5 is invalid: must lie in (0, 1).
    """

    data: DataConfig = nested(DataConfig)
    teacher: TeacherConfig = nested(TeacherConfig)
    pruning: PruningConfig = nested(PruningConfig)
    distill: DistillConfig = nested(DistillConfig)
    budget: BudgetConfig = nested(BudgetConfig)
    iterations: int = setting(10, "Compression iterations (an upper bound when a --target_* "
                              "or --max_accuracy_drop stop rule is given).",
                              checks=[at_least(1)])
    keep_ratio: float = setting(0.9, "Fraction of the current student's cost in the --budget "
                                "measure (nonzero parameters by default) each iteration's "
                                "candidates keep, in (0, 1). Under --budget=latency stay near "
                                "the default: a TFLite invoke's fixed costs do not shrink, so "
                                "a latency step removes a larger share of the network the "
                                "smaller it gets (docs/budgets.md).",
                                checks=[between(0, 1, open_lower=True, open_upper=True)])
    keep_of: str = setting("cost", "What --keep_ratio is a fraction of: cost (the current "
                           "student's whole cost in the --budget measure) or removable (the "
                           "part pruning can still remove: its cost above that of the same "
                           "network with every layer at its --layer_floor, measured as the "
                           "students are). Under --budget=latency the floor is the runtime's "
                           "fixed cost, so removable steps keep a steady share of the work "
                           "where cost steps remove a growing one (docs/budgets.md).",
                           checks=[one_of(lambda: KEEP_OF, "keep_of")])
    rank_weights: Tuple[float, ...] = setting(
        (1.0, 3.0), "Weights train,selection of the candidates' ranking score "
        "(w_train*train_acc + w_sel*selection_acc) / (w_train + w_sel); the selection split "
        "is --validation_split if set, else the test split.",
        checks=[Check(_rank_weights_check, "give two non-negative weights train,selection "
                                           "(e.g. 1,3), not both zero")])
    output_dir: Optional[str] = setting(None, "Run directory (default: "
                                        "saved_models/<dataset>_<teacher>_<time>).",
                                        checks=[NOT_BLANK])
    export_candidates: bool = setting(False, "Also export every candidate as a SavedModel.")
    latency_runs: int = setting(50, "Timed TFLite runs per latency measurement.",
                                checks=[between(1, 100_000)])
    export_formats: Tuple[str, ...] = setting(
        EXPORT_FORMATS, "Deployment formats the final student is written in (and measured "
        "in deployment.csv) at the end of the run, and with --export_every_student the "
        "teacher and every student; empty: none (see docs/deployment.md).",
        checks=[DISTINCT, one_of(lambda: EXPORT_FORMATS, "format")])
    export_every_student: bool = setting(
        False, "Also export the teacher and every iteration's student in every "
        "--export_formats format as it is made (serving/student/<k>, "
        "tflite/student_<k>*.tflite, keras3/student_<k>.keras). Off: only the final "
        "student is exported (conversions can take longer than training); every student "
        "keeps its checkpoint, which python -m epkd_tf.export exports on request.")
    tflite_threads: int = setting(1, "CPU threads of the TFLite latency measurements in "
                                  "deployment.csv.", checks=[between(1, 256)])
    int8_dense_per_channel: bool = setting(False, "tflite_int8: quantise Dense weights per "
                                           "output unit instead of per tensor (larger file; "
                                           "see docs/deployment.md).")
    fail_on_nan: bool = setting(False, "Stop the run (exit status 1) when a distillation "
                                "loss becomes NaN or Inf, instead of keeping the previous "
                                "student for that iteration and going on with a warning.")
    eval_examples: int = setting(10_000, "Training examples (a fixed seeded subset) whose "
                                 "accuracy ranks the candidates (train_sample_accuracy); "
                                 "0: the whole training split.", checks=[NON_NEGATIVE])
    selection_examples: int = setting(
        10_000, "Examples of the selection split (--validation_split, else the test split) "
        "and of the test split (a fixed seeded subset of each, the same every iteration) on "
        "which every candidate and the kept-candidate check are evaluated; students, the "
        "teacher and the final student are always measured on the whole splits. 0: the "
        "whole splits.", checks=[NON_NEGATIVE])
    bn_recalibration_batches: int = setting(
        20, "Training batches whose statistics replace every BatchNormalization layer's "
        "moving mean and variance after the teacher is trained and before each of its "
        "epochs' test evaluation (a given teacher: when that "
        "makes it more accurate on the selection split by more than one standard error), "
        "after each candidate is made and after each student is distilled with "
        "--distill_batchnorm=batch (short training and the removal of upstream units "
        "leave them stale); 0: never. Models without such layers are not affected.",
        checks=[NON_NEGATIVE])
    checkpoint_every: str = setting(
        "0", "Checkpoint teacher training and each distillation inside an epoch too, every N "
        "steps (e.g. 500) or every N minutes (e.g. 10min), so that a killed run resumes at "
        "that step; 0: after every epoch only (always done).",
        checks=[Check(lambda v: parse_checkpoint_every(v) is not None,
                      "give a number of steps (e.g. 500), of minutes (e.g. 10min) or 0 "
                      "(after every epoch only)")])
    jit_compile: bool = setting(False, "XLA-compile the train steps of teacher training and "
                                "distillation.")
    precision: str = setting("float32", "Compute type of every training and evaluation: "
                             "float32, mixed_float16 (GPUs with tensor cores; loss scaling "
                             "on) or mixed_bfloat16 (TPUs, recent CPUs): Keras' mixed "
                             "precision, float32 variables and logits. Exports are always "
                             "float32.", checks=[one_of(lambda: PRECISIONS, "precision")])
    distribution: str = setting("default", "tf.distribute strategy: default (one device), "
                                "mirrored (all local GPUs), multi_worker_mirrored (a cluster "
                                "described by TF_CONFIG) or tpu. --batch_size is the global "
                                "batch.", checks=[one_of(lambda: DISTRIBUTIONS,
                                                         "distribution")])
    logical_cpus: int = setting(0, "With --distribution=mirrored on a machine without GPUs: "
                                "mirror over this many logical CPU devices (for testing).",
                                checks=[between(0, 64)])

    @property
    def schedule(self):
        return self.distill.schedule()


def parse_checkpoint_every(value) -> Optional[Tuple[int, float]]:
    """``--checkpoint_every`` as (steps, seconds) between checkpoints inside an epoch, 0
    where not by that measure: ``"500"`` is (500, 0), ``"10min"`` (0, 600), ``"0"`` or ``""``
    (0, 0); None when ``value`` is none of these."""
    import re
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("", "0"):
        return 0, 0.0
    if text is None:
        return None
    if re.fullmatch(r"[1-9][0-9]{0,9}", text):
        return int(text), 0.0
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*min", text)
    if match and 0 < float(match.group(1)) <= 10_000:
        return 0, float(match.group(1)) * 60.0
    return None


def check_export_formats(formats, flag: str) -> None:
    """Each of ``formats`` is a known deployment format, none twice (empty: no exports);
    raises ConfigError naming ``--flag``."""
    for check in (DISTINCT, one_of(lambda: EXPORT_FORMATS, "format")):
        reason = check.failure(tuple(formats))
        if reason:
            raise ConfigError(flag, tuple(formats), reason)


def default_bn_batches() -> int:
    """The default of ``--bn_recalibration_batches``: what teacher training, the study's
    teachers and :func:`epkd_tf.prune` re-estimate BatchNorm statistics on."""
    return RunConfig().bn_recalibration_batches
