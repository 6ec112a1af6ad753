"""What the frontier benchmark (``benchmarks/frontier.py``) runs and how it names it: the
networks and datasets, the flags every run shares, each network's protocol in the whole
frontier (``--whole``), the issue's targets, and the names of the run directories, page
sections and plots, and the invocation line that reproduces a section."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import NamedTuple, Optional

REPO = Path(__file__).resolve().parents[1]
SECTION = "frontier"
#: Every run's --keep_ratio unless --keep_ratio says otherwise.
KEEP_RATIO = 0.8
#: What the runs' --keep_ratio is a fraction of unless --keep_of says otherwise (the
#: package's default).
KEEP_OF = "cost"


def variant_flags(args) -> list:
    """The runs' settings that set an invocation's runs apart from the defaults'
    (``--drop_patience``, ``--keep_ratio``, ``--keep_of``), as flags: what its command
    line and its section's heading add."""
    patience = getattr(args, "drop_patience", 0)
    keep = getattr(args, "keep_ratio", KEEP_RATIO)
    keep_of = getattr(args, "keep_of", KEEP_OF)
    return ([f"--drop_patience={patience}"] if patience else []) + (
        [f"--keep_ratio={keep:g}"] if keep != KEEP_RATIO else []) + (
        [f"--keep_of={keep_of}"] if keep_of != KEEP_OF else [])


def variant(patience: int = 0, keep_ratio: float = KEEP_RATIO, keep_of: str = KEEP_OF) -> str:
    """What the runs' non-default ``--drop_patience``, ``--keep_ratio`` and ``--keep_of``
    add to the names of their directories, page section and plot: ``_patience<K>``,
    ``_keep<digits>`` (``_keep09`` for 0.9), ``_<keep_of>`` (``_removable``), so they sit
    beside, not over, the runs of the defaults."""
    suffix = f"_patience{patience}" if patience else ""
    if keep_ratio != KEEP_RATIO:
        suffix += "_keep" + re.sub(r"\W+", "", f"{keep_ratio:g}")
    if keep_of != KEEP_OF:
        suffix += f"_{keep_of}"
    return suffix


def section_name(networks, datasets, patience: int = 0,
                 keep_ratio: float = KEEP_RATIO, keep_of: str = KEEP_OF) -> str:
    """The page section and plot name of an invocation on ``networks`` and ``datasets``:
    ``frontier`` for LeNet-5 on Fashion-MNIST, else ``frontier_<networks>_<datasets>``;
    then its :func:`variant` (runs with another ``--drop_patience``, ``--keep_ratio`` or
    ``--keep_of``)."""
    extra = variant(patience, keep_ratio, keep_of)
    if list(networks) == ["lenet5"] and list(datasets) == ["fashion_mnist"] and not extra:
        return SECTION
    return "_".join([SECTION, *networks, *datasets]) + extra


def section_of(args) -> str:
    """The page section and plot name of an invocation: ``frontier_whole`` for
    ``--whole``, else its :func:`section_name`."""
    if getattr(args, "whole", False):
        return WHOLE_SECTION
    return section_name(args.networks, args.datasets, getattr(args, "drop_patience", 0),
                        getattr(args, "keep_ratio", KEEP_RATIO),
                        getattr(args, "keep_of", KEEP_OF))


def run_suffix(train_split, validation_split, patience: int = 0,
               keep_ratio: float = KEEP_RATIO, keep_of: str = KEEP_OF) -> str:
    """What the run directories of an invocation add to ``<network>_<dataset>``: its
    ``--train_split``, non-default ``--validation_split`` (letters and digits only), then
    its :func:`variant`, so runs on other examples, with another stop rule or other steps
    never resume one another."""
    suffix = "" if train_split is None else "_" + re.sub(r"\W+", "", train_split)
    if validation_split != VALIDATION_SPLIT:
        suffix += "_val" + re.sub(r"\W+", "", validation_split)
    return suffix + variant(patience, keep_ratio, keep_of)


def invocation(args) -> str:
    """The command line that reproduces an invocation's section."""
    if getattr(args, "whole", False):
        return "python benchmarks/frontier.py --whole"
    extra = "".join(f" --{name}={shlex.quote(str(getattr(args, name)))}"
                    for name in ("train_split", "teacher_epochs")
                    if getattr(args, name) is not None)
    if getattr(args, "iterations", ITERATIONS) != ITERATIONS:
        extra += f" --iterations={args.iterations}"
    if getattr(args, "validation_split", VALIDATION_SPLIT) != VALIDATION_SPLIT:
        extra += f" --validation_split={shlex.quote(args.validation_split)}"
    extra += "".join(f" {flag}" for flag in variant_flags(args))
    peer = f" --peer_drops={','.join(f'{d:g}' for d in args.peer_drops)}" if args.peer_drops else ""
    if args.peer_drops and getattr(args, "peer_seeds", None) is not None:
        peer += f" --peer_seeds={','.join(map(str, args.peer_seeds))}"
    return (f"python benchmarks/frontier.py --networks={','.join(args.networks)} "
            f"--datasets={','.join(args.datasets)} --budgets={','.join(args.budgets)} "
            f"--allocations={','.join(args.allocations)} "
            f"--seeds={','.join(map(str, args.seeds))} "
            f"--drops={','.join(f'{d:g}' for d in args.drops)} "
            f"--finetune_epochs={args.finetune_epochs}{extra}{peer}")
NETWORKS = {
    "lenet5": ("LeNet-5", ["--teacher=lenet5", "--teacher_epochs=8"]),
    "resnet18": ("ResNet-18 (0.25)", ["--teacher=resnet18", "--teacher_width=0.25",
                                      "--image_size=32", "--teacher_epochs=10"]),
    "mobilenet_v2": ("MobileNetV2 (0.35)", ["--teacher=mobilenet_v2", "--teacher_width=0.35",
                                            "--image_size=32", "--teacher_epochs=10"]),
}
DATASETS = ("fashion_mnist", "mnist")
#: Every run's --validation_split unless --validation_split says otherwise (a fraction
#: carved by seed from --train_split, or a TFDS split string such as train[20%:40%]).
VALIDATION_SPLIT = "0.1"
COMMON = ["--pruners=l1_filter,taylor", "--export_formats=tflite,tflite_int8",
          "--export_every_student",   # every student's and the teacher's TFLite files are read
          "--latency_runs=100", "--alpha=0.1", "--temperature_schedule=linear",
          "--temperature_start=50", "--temperature_step=5", "--temperature_min=1",
          "--batch_size=128"]
ITERATIONS = 20
SIDE_BY_SIDE_RUNS, SIDE_BY_SIDE_ROUNDS = 1000, 5


class Protocol(NamedTuple):
    """How one network's runs are made in the whole frontier (``--whole``): the run
    settings an invocation otherwise sets for all its networks, and why they are these."""

    train_split: Optional[str] = None
    validation_split: str = VALIDATION_SPLIT
    teacher_epochs: Optional[int] = None       # None: the network's recipe
    iterations: int = ITERATIONS
    drop_patience: int = 0
    keep_ratio: float = KEEP_RATIO
    why: str = ""


#: Each network's protocol in the whole frontier: the settings of its sections measured
#: before it (their runs are reused), since one protocol for all three does not fit in a
#: benchmark that has to run on 2 cores: a ResNet-18 run on the whole training split
#: takes about five times as long as on a fifth, a MobileNetV2 run longer still.
PROTOCOLS = {
    "lenet5": Protocol(why="the whole training split; a run takes about 10 minutes"),
    "resnet18": Protocol(
        "train[:20%]", "train[20%:40%]", 4, 12, 3,
        why="a fifth of the training split and 12,000 validation images to judge the drop "
            "on; `--drop_patience=3`, since single students beyond the drop were mostly "
            "noise of the split (a run takes about 20 minutes)"),
    "mobilenet_v2": Protocol(
        "train[:20%]", "train[20%:40%]", 8, 8,
        why="a fifth of the training split and 12,000 validation images; 8 iterations "
            "(a run takes about 47 minutes)"),
}
#: The rest of the whole frontier's settings (issue #23): both budgets, two seeds, the
#: peer at the 0.5 rung of seed 0 (a ResNet or MobileNetV2 peer takes about as long as
#: its epkd_tf run).
WHOLE = {"budgets": ["latency", "macs"], "allocations": ["importance"], "seeds": [0, 1],
         "drops": [0.25, 0.5, 1.0], "finetune_epochs": 2, "peer_drops": [0.5],
         "peer_seeds": [0]}
WHOLE_SECTION = SECTION + "_whole"
TARGETS = {"lenet5": 8.0, "resnet18": 3.0, "mobilenet_v2": 2.5}
TARGET_DROP = 0.5
