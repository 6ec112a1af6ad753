"""Benchmark: the accuracy / measured-speed frontier of EPKD students under each
``--allocation`` and ``--budget``, written to docs/benchmarks/frontier.md and
plots/frontier.png (an invocation on other datasets than Fashion-MNIST alone writes its
own section and plot, ``frontier_<datasets>``, so both stay side by side).

    python benchmarks/frontier.py [--networks=lenet5] [--datasets=fashion_mnist]
        [--budgets=latency,macs] [--allocations=importance,cost] [--seeds=0]
        [--drops=0.25,0.5,1.0] [--finetune_epochs=2] [--validation_split=0.1] [--keep_runs=DIR]
        [--fashion_dir=/usr/share/datasets/fashion-mnist] [--npz=../shared/data/mnist.npz]
        [--peer_drops=0.5] [--drop_patience=0]
    python benchmarks/frontier.py --whole [--keep_runs=DIR]

``--whole`` is the issue's frontier in one invocation: every network on every dataset,
both budgets, two seeds and the peer at the 0.5 rung of seed 0 (``WHOLE``), each network
under its own protocol (``PROTOCOLS``: the training and validation splits, teacher epochs,
iterations, ``--drop_patience`` and ``--keep_ratio`` of its earlier sections, whose runs it
reuses), in its own section and plot, ``frontier_whole``. A finished run in
``--keep_runs`` is reused only if it ran with every flag this invocation gives it (the
teacher's and the data's location aside); one with other settings is refused by name.

Networks: ``lenet5`` (28x28), ``resnet18`` (width 0.25) and ``mobilenet_v2`` (width 0.35),
both at 32x32. Datasets: Fashion-MNIST (Debian's ``dataset-fashion-mnist`` package, IDX
files, imported through the npz route; never a dependency of the package) and MNIST.

For every network, dataset and seed the teacher is trained once (that seed's first run)
and shared by the seed's other runs through ``--teacher_path``. Not across seeds: a run
draws its validation split with its ``--seed``, so another seed's validation examples are
training examples of this seed's teacher, and its validation accuracy there is inflated
(measured: LeNet-5 on Fashion-MNIST 93.3% against 91.5% on its own seed's split, 90.9% on
test; ResNet-18 on 20% of it 96.3% against 88.7%, 87.6% on test), so the stop rules, which
compare students with it, would stop that seed's runs early. For every budget,
allocation and seed one CLI run: ``--keep_ratio=0.8 --validation_split=0.1
--max_accuracy_drop=<largest drop>`` (``--validation_split`` to judge the drop on more
examples: a larger fraction, or a TFDS split string such as ``train[20%:40%]`` beside
``--train_split=train[:20%]``; ``--drop_patience=K`` for runs that stop only once K + 1
students in a row lose more than the drop; ``--keep_ratio`` for other steps). The runs are
deterministic, so a run with a smaller ``--max_accuracy_drop`` would make the same
students and stop earlier, where ``budget.stop``'s rule stops it: every rung of the drop
ladder is read off the one run (the cheapest student within the drop among those made).
Each rung reports test accuracy (mean over seeds, and the spread), MACs, parameters, and
the float and int8 TFLite batch-1 latency of the student, each timed side by side with its
teacher by this script.

Targets (issue #23), on Fashion-MNIST within 0.5 points of the teacher: ResNet-18 >= 3x,
MobileNetV2 >= 2.5x, LeNet-5 >= 8x faster (float TFLite).

``--peer_drops`` adds the issue's Torch-Pruning side for every network with a PyTorch port
(``PEERS``: LeNet-5, ``peer_torch_pruning.py``; ResNet-18, ``peer_torch_resnet.py``;
MobileNetV2, ``peer_torch_mobilenet.py``, skipped with its reason while that file does not
exist): global Taylor pruning + distillation in the peer's own virtual environment, on the
run's teacher, to each epkd_tf student's MACs at those rungs, in as many steps as its
iterations. The ResNet and MobileNetV2 peers train on the very examples the run trained on
(exported from the run's flags.txt) and refuse a port that does not compute the Keras
teacher's function (its point is then reported missing). The peer's widths are rebuilt
from the run's teacher with epkd_tf's own surgery, converted to float and int8 TFLite like
the students, and timed side by side with the teacher's files.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from benchmarks_md import cpu, page, replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "frontier"
#: Every run's --keep_ratio unless --keep_ratio says otherwise.
KEEP_RATIO = 0.8


def variant_flags(args) -> list:
    """The runs' settings that set an invocation's runs apart from the defaults'
    (``--drop_patience``, ``--keep_ratio``), as flags: what its command line and its
    section's heading add."""
    patience = getattr(args, "drop_patience", 0)
    keep = getattr(args, "keep_ratio", KEEP_RATIO)
    return ([f"--drop_patience={patience}"] if patience else []) + (
        [f"--keep_ratio={keep:g}"] if keep != KEEP_RATIO else [])


def variant(patience: int = 0, keep_ratio: float = KEEP_RATIO) -> str:
    """What the runs' non-default ``--drop_patience`` and ``--keep_ratio`` add to the names
    of their directories, page section and plot: ``_patience<K>``, ``_keep<digits>``
    (``_keep09`` for 0.9), so they sit beside, not over, the runs of the defaults."""
    suffix = f"_patience{patience}" if patience else ""
    if keep_ratio != KEEP_RATIO:
        suffix += "_keep" + re.sub(r"\W+", "", f"{keep_ratio:g}")
    return suffix


def section_name(networks, datasets, patience: int = 0,
                 keep_ratio: float = KEEP_RATIO) -> str:
    """The page section and plot name of an invocation on ``networks`` and ``datasets``:
    ``frontier`` for LeNet-5 on Fashion-MNIST, else ``frontier_<networks>_<datasets>``;
    then its :func:`variant` (runs with another ``--drop_patience`` or ``--keep_ratio``)."""
    extra = variant(patience, keep_ratio)
    if list(networks) == ["lenet5"] and list(datasets) == ["fashion_mnist"] and not extra:
        return SECTION
    return "_".join([SECTION, *networks, *datasets]) + extra


def section_of(args) -> str:
    """The page section and plot name of an invocation: ``frontier_whole`` for
    ``--whole``, else its :func:`section_name`."""
    if getattr(args, "whole", False):
        return WHOLE_SECTION
    return section_name(args.networks, args.datasets, getattr(args, "drop_patience", 0),
                        getattr(args, "keep_ratio", KEEP_RATIO))


def run_suffix(train_split, validation_split, patience: int = 0,
               keep_ratio: float = KEEP_RATIO) -> str:
    """What the run directories of an invocation add to ``<network>_<dataset>``: its
    ``--train_split``, non-default ``--validation_split`` (letters and digits only), then
    its :func:`variant`, so runs on other examples, with another stop rule or other steps
    never resume one another."""
    suffix = "" if train_split is None else "_" + re.sub(r"\W+", "", train_split)
    if validation_split != VALIDATION_SPLIT:
        suffix += "_val" + re.sub(r"\W+", "", validation_split)
    return suffix + variant(patience, keep_ratio)


def validation_words(validation_split: str) -> str:
    """How the page says where a run's validation examples come from: a fraction is carved
    from the training split by the seed, a split string is the same examples for every seed."""
    try:
        float(validation_split)
    except ValueError:
        return f"every seed judges on the same validation examples, `{validation_split}`"
    return "a seed draws its own validation split"


def patience_words(patience: int) -> str:
    """The page's words for the runs' --drop_patience (none for the default 0)."""
    return (f"and `--drop_patience={patience}` (it stops once {patience + 1} students in a "
            "row lose more) " if patience else "")


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
            "noise of the split (a run takes about 25 minutes)"),
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
IDX = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
       "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip): big-endian magic (type 0x08 = uint8, then the rank), the
    dimensions, then the data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def data_dir_for(dataset: str, args, work: str) -> str:
    """``work/tfds`` holding ``dataset`` as a TFDS dataset, imported once from an npz (the
    shared MNIST npz, or one written here from Fashion-MNIST's IDX files)."""
    data_dir = os.path.join(work, "tfds")
    if os.path.exists(os.path.join(data_dir, dataset)):
        return data_dir
    if dataset == "mnist":
        npz = args.npz
    else:
        missing = [name for name in IDX.values()
                   if not os.path.exists(os.path.join(args.fashion_dir, name))]
        if missing:
            sys.exit(f"error: Fashion-MNIST not found in {args.fashion_dir} ({missing[0]}); "
                     "apt-get install dataset-fashion-mnist, or pass --fashion_dir")
        npz = os.path.join(work, "fashion_mnist.npz")
        np.savez(npz, **{key: read_idx(os.path.join(args.fashion_dir, name))
                         for key, name in IDX.items()})
    subprocess.run([sys.executable, "-m", "epkd_tf.data", f"--import_npz={npz}",
                    f"--name={dataset}", f"--data_dir={data_dir}"], cwd=REPO, check=True)
    return data_dir


def teacher_flags(recipe, trained=None) -> list:
    """The teacher flags of a run: its network's ``recipe`` (train one), or with the path
    of the teacher its seed's first run ``trained``, that teacher (``--teacher_path``; the
    recipe's ``--image_size`` stays, the data's shape). Never another seed's teacher (the
    module docstring says why)."""
    if trained is None:
        return list(recipe)
    return [f for f in recipe if f.startswith("--image_size")] + [f"--teacher_path={trained}"]


def _same_value(mine: str, theirs: str) -> bool:
    """Whether two flag values are the same setting (``50`` and ``50.0`` are)."""
    try:
        return float(mine) == float(theirs)
    except ValueError:
        return mine == theirs


def stale_flag(flags, out: str) -> Optional[str]:
    """The first of ``flags`` that the finished run in ``out`` did not run with (its
    ``flags.txt``), as ``--name=wanted (the run: --name=had)``; None when it ran with
    every one. The teacher's flags are left out (a seed's later runs name its first run's
    teacher by path) and so is ``--data_dir`` (where the data sits, not which)."""
    recorded = {}
    for line in Path(out, "flags.txt").read_text().splitlines():
        name, _, value = line.partition("=")
        recorded[name] = value
    for flag in flags:
        name, _, value = flag.partition("=")
        if name.startswith("--teacher") or name == "--data_dir":
            continue
        if name not in recorded:
            return f"{flag} (the run: not set)"
        if not _same_value(value, recorded[name]):
            return f"{flag} (the run: {name}={recorded[name]})"
    return None


def run(flags, out: str) -> float:
    """One CLI run (skipped when ``out`` holds a finished one that ran with ``flags``; one
    that ran with other settings is refused, since its students are not this run's); its
    wall seconds."""
    wall = os.path.join(out, "wall_seconds.txt")
    if os.path.exists(os.path.join(out, "final.csv")):
        stale = stale_flag(flags, out)
        if stale:
            raise SystemExit(f"error: {out} holds a finished run with other settings: "
                             f"{stale}; move it away or use another --keep_runs")
    else:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "epkd_tf.main", *flags, f"--output_dir={out}"],
                       cwd=REPO, check=True)
        Path(wall).write_text(f"{time.perf_counter() - start:.1f}\n")
    return float(Path(wall).read_text())


def ladder(out: str, drops, budget: str = "params", patience: int = 0) -> list:
    """[(drop, iteration)]: the final student a run with ``--max_accuracy_drop=drop`` (and
    ``--drop_patience=patience``) would have chosen (0: the teacher), read off this run's
    tables with the package's own stop rules (``epkd_tf.budget.stop``): the run stops once
    ``patience + 1`` students in a row lose more than ``drop`` on the validation split,
    and the final one is chosen among those made. This run's own drop is the largest, and
    it ran with the same patience, so it made every student a smaller drop's run makes."""
    sys.path.insert(0, str(REPO))
    from epkd_tf.budget import make_measure
    from epkd_tf.budget.stop import StopRules
    from epkd_tf.config import BudgetConfig
    teacher = pd.read_csv(os.path.join(out, "teacher.csv"))
    students = pd.read_csv(os.path.join(out, "students.csv"))
    rungs = []
    for drop in drops:
        rules = StopRules(BudgetConfig(max_accuracy_drop=drop, drop_patience=patience),
                          make_measure(budget),
                          keep_ratio=KEEP_RATIO, validation=True)
        made = students
        for k in range(1, len(students) + 1):
            if rules.stop_reason(teacher, students.iloc[:k]):
                made = students.iloc[:k]
                break
        rungs.append((drop, rules.choose_final(teacher, made)))
    return rungs


def timed_side_by_side(out: str, iteration: int) -> dict:
    """Float and int8 batch-1 ms of the teacher and student ``iteration``, each pair timed
    side by side (interleaved rounds); the ratios are the speed-ups."""
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401
    from epkd_tf.deploy import tflite as metrics
    result = {}
    name = "teacher" if iteration == 0 else f"student_{iteration}"
    for suffix, key in (("", "float"), ("_int8", "int8")):
        files = [Path(out, "tflite", f"{model}{suffix}.tflite") for model in ("teacher", name)]
        if not all(f.exists() for f in files):
            result[key] = (np.nan, np.nan)
            continue
        (teacher, _), (student, _) = metrics.tflite_latency_side_by_side(
            [f.read_bytes() for f in files], runs=SIDE_BY_SIDE_RUNS,
            rounds=SIDE_BY_SIDE_ROUNDS)
        result[key] = (teacher, student)
    return result


def points(network: str, dataset: str, budget: str, allocation: str, seed: int, out: str,
           drops, wall: float, patience: int = 0) -> list:
    teacher = pd.read_csv(os.path.join(out, "teacher.csv")).iloc[0]
    students = pd.read_csv(os.path.join(out, "students.csv")).set_index("iteration")
    candidates = pd.read_csv(os.path.join(out, "candidates.csv"))
    made = candidates[candidates.skipped.isna()]          # read_csv makes "" NaN
    error = ((made.predicted_cost - made.cost).abs() / made.cost).median()
    rows = []
    for drop, iteration in ladder(out, drops, budget, patience):
        row = teacher if iteration == 0 else students.loc[iteration]
        times = timed_side_by_side(out, iteration)
        rows.append({
            "network": network, "dataset": dataset, "budget": budget,
            "allocation": allocation, "seed": seed, "drop_allowed": drop,
            "iteration": iteration, "iterations_run": len(students),
            "test_accuracy": float(row.test_accuracy),
            "teacher_accuracy": float(teacher.test_accuracy),
            "macs": int(row.macs), "teacher_macs": int(teacher.macs),
            "params": int(row.nonzero_params), "teacher_params": int(teacher.nonzero_params),
            "float_speedup": times["float"][0] / times["float"][1],
            "int8_speedup": times["int8"][0] / times["int8"][1],
            "float_ms": times["float"][1], "int8_ms": times["int8"][1],
            "teacher_float_ms": times["float"][0], "teacher_int8_ms": times["int8"][0],
            "model_error": float(error) if budget == "latency" else np.nan,
            "seconds": wall})
    return rows


PEER = "Torch-Pruning Taylor + KD"
HERE = Path(__file__).resolve().parent


class Peer(NamedTuple):
    """The Torch-Pruning side of one network: its script (run in the peer's virtual
    environment) and the protocol it runs, as the page states it."""

    script: str
    protocol: str

    @property
    def path(self) -> Path:
        return HERE / self.script


# The networks with a PyTorch port. LeNet-5's script has its own command line (the MNIST
# npz as it is stored, 2 epochs per step); the ResNet and MobileNetV2 ports share one
# contract (``peer_command``) and train on exactly the examples the epkd_tf run trained on.
_EXPORTED = ("the epkd_tf run's own training examples (its `--train_split`, less the "
             "`--validation_split` where that is carved from it, preprocessed by epkd_tf "
             "and exported) and `--finetune_epochs` epochs of distillation after each step; "
             "the port is checked first (test accuracy within 0.1 points of the Keras "
             "teacher's, logits within 1e-2, the same MACs in epkd_tf's count), BatchNorm "
             "statistics re-estimated on the run's `--bn_recalibration_batches` after each "
             "step and each distillation")
PEERS = {
    "lenet5": Peer("peer_torch_pruning.py",
                   "the first 54,000 examples of the stored training split, whatever the "
                   "run's `--train_split` (not exactly the run's own: it carves its "
                   "validation examples at random) and 2 epochs of distillation after each "
                   "step"),
    "resnet18": Peer("peer_torch_resnet.py", _EXPORTED),
    "mobilenet_v2": Peer("peer_torch_mobilenet.py", _EXPORTED),
}


def peer_command(network: str, row: dict, inputs: dict, result: str) -> list:
    """The peer's command line for the epkd_tf point ``row`` (its script and flags; the
    interpreter is the peer's): to the student's MACs in as many steps as its iterations.
    ``inputs``: ``teacher`` and ``data`` (files), and for the shared contract
    ``keras_test_accuracy``, ``keras_macs``, ``bn_recalibration_batches``, ``epochs``."""
    script = str(PEERS[network].path)
    if network == "lenet5":
        return [script, f"--teacher={inputs['teacher']}", f"--mnist={inputs['data']}",
                f"--target_macs={int(row['macs'])}", f"--steps={int(row['iteration'])}",
                f"--seed={int(row['seed'])}", f"--out={result}"]
    return [script, f"--teacher={inputs['teacher']}", f"--data={inputs['data']}",
            f"--target_macs={int(row['macs'])}", f"--steps={int(row['iteration'])}",
            f"--epochs={int(inputs['epochs'])}", f"--seed={int(row['seed'])}",
            f"--keras_test_accuracy={float(inputs['keras_test_accuracy']):.6f}",
            f"--keras_macs={int(inputs['keras_macs'])}",
            f"--bn_recalibration_batches={int(inputs['bn_recalibration_batches'])}",
            f"--out={result}"]


def teacher_weights(out: str) -> str:
    """The run's LeNet-5 teacher as the npz the peer loads (layer_kernel, layer_bias)."""
    from peers import teacher_weights_npz
    return teacher_weights_npz(os.path.join(out, "checkpoints", "teacher.keras"),
                               os.path.join(out, "teacher_weights.npz"))


def run_data_config(out: str, data_dir: str = None):
    """The DataConfig of the epkd_tf run in ``out``, read off its flags.txt (a setting
    missing there has its default, as epkd_tf assumes); ``data_dir`` replaces the
    recorded one when given."""
    sys.path.insert(0, str(REPO))
    from epkd_tf.config import DataConfig
    from epkd_tf.records.settings_record import recorded_settings
    cfg = recorded_settings(Path(out, "flags.txt").read_text(), DataConfig())
    return cfg.replace(data_dir=data_dir) if data_dir else cfg


def export_for_peer(out: str, data_dir: str, cache: str) -> tuple:
    """(weights, data) npz files of the run in ``out`` for the ResNet / MobileNetV2 peer,
    written once into ``cache``: the run's teacher (epkd_tf's safe loader) as
    ``residual.keras_weights``, and the very examples the run trained its students on (the
    run's training split less its validation split, as epkd_tf preprocessed them, training
    order), the whole test split and the teacher's logits on the first 512 test images."""
    weights_path = os.path.join(cache, "teacher_weights.npz")
    data_path = os.path.join(cache, "data.npz")
    if os.path.exists(weights_path) and os.path.exists(data_path):
        return weights_path, data_path
    os.makedirs(cache, exist_ok=True)
    sys.path.insert(0, str(REPO))
    import epkd_tf
    from epkd_tf.data import load_data
    from residual import keras_weights
    model = epkd_tf.load_model(os.path.join(out, "checkpoints", "teacher.keras"))
    data = load_data(run_data_config(out, data_dir))
    x_train, y_train = data.numpy_train()
    x_test, y_test = data.numpy_test()
    if len(x_train) != data.spec.num_train:
        raise RuntimeError(f"exported {len(x_train)} training examples, the run has "
                           f"{data.spec.num_train}")
    logits = model.predict(x_test[:512], batch_size=256, verbose=0)
    np.savez(data_path + ".tmp.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test, keras_test_logits=logits)
    np.savez(weights_path + ".tmp.npz", **keras_weights(model))
    os.replace(data_path + ".tmp.npz", data_path)
    os.replace(weights_path + ".tmp.npz", weights_path)
    return weights_path, data_path


def peer_inputs(network: str, dataset: str, out: str, work: str, args, data_dir: str) -> dict:
    """What ``peer_command`` needs for the run in ``out`` (files made once)."""
    if network == "lenet5":
        npz = args.npz if dataset == "mnist" else os.path.join(work, "fashion_mnist.npz")
        return {"teacher": teacher_weights(out), "data": npz}
    from residual import bn_recalibration_batches
    weights, data = export_for_peer(out, data_dir,
                                    os.path.join(work, "peer", os.path.basename(out)))
    teacher = pd.read_csv(os.path.join(out, "teacher.csv")).iloc[0]
    return {"teacher": weights, "data": data,
            "keras_test_accuracy": float(teacher.test_accuracy),
            "keras_macs": int(teacher.macs),
            "bn_recalibration_batches": bn_recalibration_batches(out),
            "epochs": args.finetune_epochs}


def rebuild_at_widths(model, widths: dict):
    """``model`` with each layer named in ``widths`` cut to that many output channels (the
    first ones: latency does not depend on which), by epkd_tf's own channel graph and
    surgery (``epkd_tf.graph.analyze``, ``remove_groups``); layers not named keep theirs.
    A group of coupled channels (a residual addition) is kept or removed whole, so the
    layers it couples must be given one width: a ValueError names them otherwise (and a
    layer whose width cannot be cut, or whose rebuilt width differs from the one asked,
    e.g. a depthwise conv whose input was cut to another width)."""
    sys.path.insert(0, str(REPO))
    from epkd_tf.graph import analyze, remove_groups
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(widths) - names)
    if unknown:
        raise ValueError(f"the model has no layer named {', '.join(unknown)}")
    graph = analyze(model)
    full = {name: int(model.get_layer(name).output_shape[-1]) for name in graph.producer_names}
    bad = sorted(name for name, width in widths.items()
                 if name in full and not 1 <= int(width) <= full[name])
    if bad:
        raise ValueError("widths out of range (1..the layer's own): " + ", ".join(
            f"{name} {widths[name]} of {full[name]}" for name in bad))
    asked = np.array([int(widths.get(name, full[name])) for name in graph.producer_names])
    keep = graph.unit_channel < asked[graph.unit_layer]
    fixed = sorted({graph.producer_names[graph.unit_layer[u]]
                    for u in np.flatnonzero((graph.group_of_unit < 0) & ~keep)})
    if fixed:
        raise ValueError(f"layers whose channels are fixed (they reach the output) cannot be "
                         f"cut: {', '.join(fixed)}")
    removed, clashes = [], set()
    for group, units in enumerate(graph.group_units):
        kept = keep[units]
        if not kept.all():
            removed.append(group)
            if kept.any():
                clashes.add(tuple(sorted(
                    f"{graph.producer_names[graph.unit_layer[u]]} "
                    f"{asked[graph.unit_layer[u]]}" for u in units)))
    if clashes:
        raise ValueError("coupled layers (their channels are added together) were given "
                         "different widths: " + "; ".join(", ".join(c) for c in
                                                           sorted(clashes)))
    rebuilt = remove_groups(graph, removed)
    wrong = [f"{name} {int(rebuilt.get_layer(name).output_shape[-1])} (asked {width})"
             for name, width in widths.items()
             if int(rebuilt.get_layer(name).output_shape[-1]) != int(width)]
    if wrong:
        raise ValueError("rebuilt widths differ from those asked: " + ", ".join(wrong))
    return rebuilt


def peer_widths(network: str, peer: dict) -> dict:
    """The peer's widths by Keras layer name (LeNet-5's script gives "conv1, conv2, fc1")."""
    if isinstance(peer["widths"], dict):
        return {name: int(width) for name, width in peer["widths"].items()}
    return dict(zip(("conv1", "conv2", "fc1"), (int(w) for w in peer["widths"].split(","))))


def peer_tflite(out: str, widths: dict, data_dir: str) -> tuple:
    """(float, int8 TFLite bytes, epkd_tf MACs) of the run's teacher rebuilt at the peer's
    widths, converted by epkd_tf's converter; int8 calibrated on the first test batch (the
    run's preprocessing) with the run's dense scales (per tensor unless its flags say
    ``--int8_dense_per_channel``)."""
    sys.path.insert(0, str(REPO))
    import epkd_tf
    from epkd_tf.data import load_data
    from epkd_tf.deploy import tflite as metrics
    from epkd_tf.graph.count import model_macs
    rebuilt = rebuild_at_widths(
        epkd_tf.load_model(os.path.join(out, "checkpoints", "teacher.keras")), widths)
    calibration = next(load_data(run_data_config(out, data_dir)).test().as_numpy_iterator())[0]
    # The run's int8 setting (flags.txt says --int8_dense_per_channel or --no...).
    per_channel = "--int8_dense_per_channel" in Path(out, "flags.txt").read_text().split()
    return (metrics.to_tflite(rebuilt),
            metrics.to_tflite(rebuilt, "tflite_int8", calibration,
                              dense_per_channel=per_channel),
            model_macs(rebuilt))


def peer_point(row: dict, out: str, work: str, args, data_dir: str) -> dict:
    """Torch-Pruning (global Taylor, in its own virtual environment) on the same teacher
    to the epkd_tf student's MACs, in as many pruning steps as the student's iterations,
    each followed by distillation (``PEERS``' protocol); its widths rebuilt from the
    run's teacher by epkd_tf's surgery, float and int8 files timed side by side with the
    teacher's. A point the peer could not make (no port, a port that fails its check) has
    ``peer_missing``: the reason."""
    from peers import peer_python
    sys.path.insert(0, str(REPO))
    from epkd_tf.deploy import tflite as metrics
    network = row["network"]
    base = {**row, "allocation": f"{PEER} at the MACs of {row['allocation']}", "peer": True,
            "of_allocation": row["allocation"]}
    if not PEERS[network].path.exists():
        reason = f"no PyTorch port (benchmarks/{PEERS[network].script} is not written)"
        print(f"{network}: peer skipped: {reason}", flush=True)
        return {**base, "peer_missing": reason}
    # Named after the run (its subset included), so a run on other data never reuses it.
    name = f"{os.path.basename(os.path.normpath(out))}_it{row['iteration']}.json"
    result = os.path.join(work, "peer", name)
    if not os.path.exists(result):
        os.makedirs(os.path.dirname(result), exist_ok=True)
        inputs = peer_inputs(network, row["dataset"], out, work, args, data_dir)
        status = subprocess.run(
            [peer_python(), *peer_command(network, row, inputs, result)]).returncode
        if status not in (0, 3):      # 3: the port check failed (recorded in the JSON)
            raise SystemExit(f"error: the {network} peer failed with exit status {status}")
    peer = json.loads(Path(result).read_text())
    if not peer.get("port_ok", True):
        reason = "port check failed: " + ", ".join(
            f"{what} {peer[key]:{form}}" for what, key, form in (
                ("PyTorch teacher test accuracy", "torch_teacher_test_accuracy", ".4f"),
                ("Keras", "keras_test_accuracy", ".4f"),
                ("largest logit difference", "port_max_logit_diff", ".1e"),
                ("PyTorch MACs", "teacher_macs", ","), ("Keras MACs", "keras_macs", ","))
            if isinstance(peer.get(key), (int, float)))
        print(f"{network}: peer point missing: {reason}", flush=True)
        return {**base, "peer_missing": reason}
    widths = peer_widths(network, peer)
    float_bytes, int8_bytes, rebuilt_macs = peer_tflite(out, widths, data_dir)
    macs = int(peer.get("lenet_macs", peer["macs"]))
    if rebuilt_macs != macs:
        print(f"warning: {network}: the rebuilt peer model counts {rebuilt_macs:,} MACs, the "
              f"peer {macs:,}", flush=True)
    (teacher_ms, _), (peer_ms, _) = metrics.tflite_latency_side_by_side(
        [Path(out, "tflite", "teacher.tflite").read_bytes(), float_bytes],
        runs=SIDE_BY_SIDE_RUNS, rounds=SIDE_BY_SIDE_ROUNDS)
    teacher_int8 = Path(out, "tflite", "teacher_int8.tflite")
    teacher_int8_ms = peer_int8_ms = np.nan
    if teacher_int8.exists():
        (teacher_int8_ms, _), (peer_int8_ms, _) = metrics.tflite_latency_side_by_side(
            [teacher_int8.read_bytes(), int8_bytes], runs=SIDE_BY_SIDE_RUNS,
            rounds=SIDE_BY_SIDE_ROUNDS)
    return {**base, "test_accuracy": peer["test_accuracy"], "macs": macs,
            "params": peer["params"], "float_speedup": teacher_ms / peer_ms,
            "int8_speedup": teacher_int8_ms / peer_int8_ms, "float_ms": peer_ms,
            "int8_ms": peer_int8_ms, "teacher_float_ms": teacher_ms,
            "teacher_int8_ms": teacher_int8_ms, "model_error": np.nan,
            "seconds": peer["seconds"], "peer_widths": json.dumps(widths)}


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Test accuracy change against measured float speed-up, one panel per network and
    dataset: a line per epkd_tf budget and allocation (its drop ladder, seed means), a
    square per peer point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = list(frame.groupby(["network", "dataset"], sort=False))
    # Up to three panels in a row; more (the whole frontier) a row per network.
    columns = len(groups) if len(groups) <= 3 else frame.dataset.nunique()
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 6.0 * rows),
                             squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, ((network, dataset), group) in zip(axes.flat, groups):
        for (budget, allocation, peer), line in group.groupby(
                ["budget", "allocation", "peer"], sort=False):
            mean = line.groupby("drop_allowed").agg(
                speedup=("float_speedup", "mean"), change=("change", "mean"))
            if peer:
                ax.plot(mean.speedup, mean.change, marker="s", linestyle="none",
                        label=f"{PEER}, MACs of --budget={budget} "
                        f"--allocation={line.of_allocation.iloc[0]}")
            else:
                ax.plot(mean.speedup, mean.change, marker="o",
                        label=f"epkd_tf --budget={budget} --allocation={allocation}")
        ax.axhline(-TARGET_DROP, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{NETWORKS[network][0]}, {dataset}")
        ax.set_xlabel("measured float TFLite speed-up (x)")
        ax.set_ylabel("test accuracy change (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def speedup(values: pd.Series) -> str:
    """Mean speed-up, or "-" where none was measured (the peer's int8 files)."""
    return "-" if values.isna().all() else f"{values.mean():.2f}x"


def reading_words(patience_words_: str) -> str:
    """The page's sentences on how a row is read: its rung, its speed-up, its change."""
    return ("A rung of the drop ladder is the final student a run with that "
            "`--max_accuracy_drop` (judged on the validation split) "
            f"{patience_words_}chooses. Speed-up: the teacher's and the student's TFLite "
            f"files timed side by side by this script ({SIDE_BY_SIDE_RUNS:,} invokes each in "
            f"{SIDE_BY_SIDE_ROUNDS} interleaved rounds, batch 1, one thread, medians). "
            "Test accuracy change: the full test split, mean over seeds (min..max in "
            "brackets when several).")


def header(args) -> list:
    """The section's heading and the paragraph saying how its runs were made."""
    names = ", ".join(NETWORKS[n][0] for n in args.networks)
    patience = getattr(args, "drop_patience", 0)
    keep = getattr(args, "keep_ratio", KEEP_RATIO)
    flags = "".join(f", `{flag}`" for flag in variant_flags(args))
    return [f"## Accuracy against measured speed, {names} on {', '.join(args.datasets)}"
            f"{flags} (`benchmarks/frontier.py`)", "",
            f"Measured {datetime.date.today()} on {cpu()}, {os.cpu_count()} "
            f"cores, CPU only. Invocation: `{invocation(args)}`. Every run: "
            f"`--keep_ratio={keep:g} {' '.join(COMMON)} "
            f"--validation_split={getattr(args, 'validation_split', VALIDATION_SPLIT)} "
            f"--iterations={getattr(args, 'iterations', ITERATIONS)} "
            f"--finetune_epochs={args.finetune_epochs}` plus its row's flags; one teacher per "
            "network, dataset and seed, shared by that seed's runs ("
            f"{validation_words(getattr(args, 'validation_split', VALIDATION_SPLIT))}). "
            f"{reading_words(patience_words(patience))} "
            f"![frontier](../../plots/{section_of(args)}.png)", ""]


WHOLE_PATIENCE = "and its network's `--drop_patience` "


def whole_header(args) -> list:
    """``--whole``'s heading and paragraph, with a table of each network's protocol."""
    names = ", ".join(NETWORKS[n][0] for n in args.networks)
    peer = (f"{PEER} at the {', '.join(f'{d:g}' for d in args.peer_drops)} rung of seed "
            f"{', '.join(map(str, args.peer_seeds))}")
    lines = [f"## The whole frontier: {names} on {', '.join(args.datasets)} "
             "(`benchmarks/frontier.py --whole`)", "",
             f"Measured {datetime.date.today()} on {cpu()}, {os.cpu_count()} "
             f"cores, CPU only. Invocation: `{invocation(args)}`: budgets "
             f"{', '.join(args.budgets)}, allocation {', '.join(args.allocations)}, seeds "
             f"{', '.join(map(str, args.seeds))}, {peer}. Every run: `{' '.join(COMMON)} "
             f"--finetune_epochs={args.finetune_epochs} "
             f"--max_accuracy_drop={max(args.drops):g}` plus its network's protocol "
             "(below) and its row's flags; one teacher per network, dataset and seed, "
             "shared by that seed's runs. "
             f"{reading_words(WHOLE_PATIENCE)} "
             f"![frontier](../../plots/{section_of(args)}.png)", "",
             "| network | `--train_split` | `--validation_split` | teacher epochs | "
             "`--iterations` (at most) | `--drop_patience` | `--keep_ratio` | why |",
             "|---|---|---|---|---|---|---|---|"]
    for network in args.networks:
        p = PROTOCOLS[network]
        epochs = p.teacher_epochs or next(
            int(f.split("=")[1]) for f in NETWORKS[network][1] if f.startswith("--teacher_epochs"))
        lines.append(f"| {NETWORKS[network][0]} | {p.train_split or 'train (all)'} | "
                     f"{p.validation_split} | {epochs} | {p.iterations} | {p.drop_patience} | "
                     f"{p.keep_ratio:g} | {p.why} |")
    return lines + [""]


def markdown(frame: pd.DataFrame, args, runs: pd.DataFrame,
             missing: pd.DataFrame = None) -> str:
    lines = (whole_header if getattr(args, "whole", False) else header)(args) + [
        "| network | dataset | budget | allocation | drop allowed | iteration | test acc "
        "change (points) | MACs (x fewer) | params (x fewer) | float speed-up | int8 "
        "speed-up |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = ["network", "dataset", "budget", "allocation", "drop_allowed"]
    for key, group in frame.groupby(keys, sort=False):
        network, dataset, budget, allocation, drop = key
        change = group.change
        spread = (f" ({change.min():+.2f}..{change.max():+.2f})" if len(group) > 1 else "")
        lines.append(
            f"| {NETWORKS[network][0]} | {dataset} | {budget} | {allocation} | {drop:g} | "
            f"{','.join(str(i) for i in group.iteration)} | {change.mean():+.2f}{spread} | "
            f"{group.macs.mean():,.0f} ({(group.teacher_macs / group.macs).mean():.1f}x) | "
            f"{group.params.mean():,.0f} ({(group.teacher_params / group.params).mean():.1f}x) | "
            f"{group.float_speedup.mean():.2f}x | {speedup(group.int8_speedup)} |")
    lines += ["", "Targets (issue #23: Fashion-MNIST, within "
              f"{TARGET_DROP} points of the teacher on test):", "",
              "| network | target | best within the drop | met |", "|---|---|---|---|"]
    ours = frame[~frame.peer]
    for network in args.networks:
        within = ours[(ours.network == network) & (ours.dataset == "fashion_mnist")]
        if within.empty:
            continue
        means = within.groupby(["budget", "allocation", "drop_allowed"]).agg(
            speedup=("float_speedup", "mean"), change=("change", "mean")).reset_index()
        ok = means[means.change >= -TARGET_DROP]
        best = ok.sort_values("speedup").iloc[-1] if not ok.empty else None
        what = ("none within the drop" if best is None else
                f"{best.speedup:.2f}x at {best.change:+.2f} points (--budget={best.budget} "
                f"--allocation={best.allocation}, drop allowed {best.drop_allowed:g})")
        met = best is not None and best.speedup >= TARGETS[network]
        lines.append(f"| {NETWORKS[network][0]} | >= {TARGETS[network]:g}x | {what} | "
                     f"{'yes' if met else '**no**'} |")
    peers = frame[frame.peer]
    missing = pd.DataFrame() if missing is None else missing
    if not peers.empty or not missing.empty:
        shown = [n for n in args.networks if n in PEERS
                 and (n in set(peers.network) or n in set(missing.get("network", [])))]
        by_protocol = {}
        for n in shown:              # networks sharing a protocol are named together
            by_protocol.setdefault(PEERS[n].protocol, []).append(NETWORKS[n][0])
        protocols = "; ".join(f"{', '.join(names)}: {protocol}"
                              for protocol, names in by_protocol.items())
        lines += ["", f"At equal MACs, {PEER} (its own virtual environment, the same teacher "
                  "weights, as many global-Taylor pruning steps as the epkd_tf student had "
                  f"iterations, each followed by distillation; {protocols}. Its widths are "
                  "cut from the teacher by epkd_tf's own surgery, converted to float and int8 "
                  "TFLite like the students and timed side by side with the teacher's "
                  "files):", "",
                  "| network | dataset | epkd_tf run | drop allowed | MACs | epkd_tf test "
                  "change | peer test change | epkd_tf float speed-up | peer float speed-up "
                  "| epkd_tf int8 speed-up | peer int8 speed-up |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        keys = ["network", "dataset", "budget", "of_allocation", "drop_allowed"]
        for key, group in peers.groupby(keys, sort=False):
            network, dataset, of_budget, of_allocation, drop = key
            mine = ours[(ours.network == network) & (ours.dataset == dataset)
                        & (ours.budget == of_budget) & (ours.allocation == of_allocation)
                        & (ours.drop_allowed == drop)
                        & ours.seed.isin(group.seed)]      # the seeds the peer ran (--peer_seeds)

            def spread(values):
                return (f"{values.mean():+.2f}" + (f" ({values.min():+.2f}..{values.max():+.2f})"
                                                   if len(values) > 1 else ""))
            lines.append(
                f"| {NETWORKS[network][0]} | {dataset} | --budget={of_budget} "
                f"--allocation={of_allocation} | {drop:g} | {group.macs.mean():,.0f} | "
                f"{spread(mine.change)} | {spread(group.change)} | "
                f"{mine.float_speedup.mean():.2f}x | {group.float_speedup.mean():.2f}x | "
                f"{speedup(mine.int8_speedup)} | {speedup(group.int8_speedup)} |")
        for r in missing.itertuples():
            lines.append(f"| {NETWORKS[r.network][0]} | {r.dataset} | --budget={r.budget} "
                         f"--allocation={r.of_allocation} | {r.drop_allowed:g} | "
                         f"{int(r.macs):,} (epkd_tf's) | "
                         f"{100 * (r.test_accuracy - r.teacher_accuracy):+.2f} | "
                         f"missing: {r.peer_missing} | "
                         f"{speedup(pd.Series([r.float_speedup]))} | - | "
                         f"{speedup(pd.Series([r.int8_speedup]))} | - |")
    lines += ["", "Runs (latency model error: the plan's predicted latency of every candidate "
              "against its measurement, median):", "",
              "| network | dataset | budget | allocation | seed | iterations run | "
              "teacher test acc | latency model error | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs.itertuples():
        error = "-" if np.isnan(r.model_error) else f"{100 * r.model_error:.1f}%"
        lines.append(f"| {NETWORKS[r.network][0]} | {r.dataset} | {r.budget} | "
                     f"{r.allocation} | {r.seed} | {r.iterations_run} | "
                     f"{100 * r.teacher_accuracy:.2f}% | {error} | {r.seconds:.0f} |")
    return "\n".join(lines)


def network_settings(args, network: str) -> argparse.Namespace:
    """The settings of ``network``'s runs: the invocation's, or under ``--whole`` the
    invocation's with the network's protocol (``PROTOCOLS``) in place of its run flags."""
    if not getattr(args, "whole", False):
        return args
    protocol = PROTOCOLS[network]._asdict()
    protocol.pop("why")
    return argparse.Namespace(**{**vars(args), **protocol})


def run_flags(settings) -> list:
    """The flags every run of ``settings`` shares (its network, data and seed aside)."""
    common = [f"--keep_ratio={settings.keep_ratio:g}", *COMMON,
              f"--validation_split={settings.validation_split}",
              f"--iterations={settings.iterations}",
              f"--finetune_epochs={settings.finetune_epochs}",
              f"--max_accuracy_drop={max(settings.drops):g}"]
    if settings.drop_patience:
        common.append(f"--drop_patience={settings.drop_patience}")
    if settings.train_split:
        common.append(f"--train_split={settings.train_split}")
    return common


def network_runs(network: str, dataset: str, settings, work: str) -> tuple:
    """Every run of ``network`` on ``dataset`` under ``settings`` (its budgets,
    allocations and seeds; each seed's first run trains the teacher its other runs share),
    with the peer's points where asked: (points, one row per run)."""
    data_dir = data_dir_for(dataset, settings, work)
    recipe = [f for f in NETWORKS[network][1]
              if settings.teacher_epochs is None or not f.startswith("--teacher_epochs")]
    if settings.teacher_epochs is not None:
        recipe.append(f"--teacher_epochs={settings.teacher_epochs}")
    subset = run_suffix(settings.train_split, settings.validation_split,
                        settings.drop_patience, settings.keep_ratio)
    common = run_flags(settings)
    rows, runs = [], []
    teachers = {}           # seed -> the teacher its first run trained
    for budget in settings.budgets:
        for allocation in settings.allocations:
            for seed in settings.seeds:
                out = os.path.join(work, f"{network}_{dataset}{subset}_{budget}_"
                                         f"{allocation}_seed{seed}")
                teacher = teacher_flags(recipe, teachers.get(seed))
                flags = [f"--dataset={dataset}", f"--data_dir={data_dir}", *teacher,
                         *common, f"--budget={budget}", f"--allocation={allocation}",
                         f"--seed={seed}"]
                wall = run(flags, out)
                got = points(network, dataset, budget, allocation, seed, out,
                             settings.drops, wall, settings.drop_patience)
                rows += got
                if network in PEERS:
                    rows += [peer_point(p, out, work, settings, data_dir) for p in got
                             if p["drop_allowed"] in settings.peer_drops
                             and p["iteration"] > 0
                             and (settings.peer_seeds is None or seed in settings.peer_seeds)]
                runs.append({**got[0], "iterations_run": got[0]["iterations_run"]})
                print(got, flush=True)
                teachers.setdefault(seed, os.path.join(out, "checkpoints", "teacher.keras"))
    return rows, runs


def make_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    listed = lambda kind: (lambda text: [kind(v) for v in text.split(",") if v])  # noqa: E731
    parser.add_argument("--networks", type=listed(str), default=["lenet5"])
    parser.add_argument("--datasets", type=listed(str), default=["fashion_mnist"])
    parser.add_argument("--budgets", type=listed(str), default=["latency", "macs"])
    parser.add_argument("--allocations", type=listed(str), default=["importance", "cost"])
    parser.add_argument("--seeds", type=listed(int), default=[0])
    parser.add_argument("--drops", type=listed(float), default=[0.25, 0.5, 1.0])
    parser.add_argument("--finetune_epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=ITERATIONS,
                        help="the runs' --iterations (at most this many; a run also stops at "
                        "the largest --drops)")
    parser.add_argument("--train_split", default=None,
                        help="the runs' --train_split (default: the whole training split)")
    parser.add_argument("--validation_split", default=VALIDATION_SPLIT,
                        help="the runs' --validation_split, a fraction of --train_split or a "
                        "TFDS split string such as 'train[20%%:40%%]' beside "
                        "--train_split='train[:20%%]' (more validation examples judge "
                        "--max_accuracy_drop more firmly; the run directories of another "
                        "value are named after it)")
    parser.add_argument("--teacher_epochs", type=int, default=None,
                        help="the teacher's epochs (default: the network's recipe)")
    parser.add_argument("--drop_patience", type=int, default=0,
                        help="the runs' --drop_patience (students in a row beyond the drop "
                        "before a run stops), also used to read the ladder's rungs")
    parser.add_argument("--keep_ratio", type=float, default=KEEP_RATIO,
                        help="the runs' --keep_ratio (each student's cost in the --budget "
                        "measure as a fraction of the last; the run directories and page "
                        "section of another value are named after it)")
    parser.add_argument("--peer_drops", type=listed(float), default=[],
                        help="every network with a PyTorch port (LeNet-5, ResNet-18, "
                        "MobileNetV2 once benchmarks/peer_torch_mobilenet.py exists): run "
                        "Torch-Pruning to the MACs of the epkd_tf students at these rungs "
                        "of the drop ladder")
    parser.add_argument("--peer_seeds", type=listed(int), default=None,
                        help="run the peer for these of --seeds only (default: every seed; "
                        "a ResNet or MobileNetV2 peer takes about as long as its epkd_tf run)")
    parser.add_argument("--whole", action="store_true",
                        help="the issue's whole frontier in one invocation: every network on "
                        "every dataset under its own protocol (PROTOCOLS), both budgets, "
                        "seeds 0 and 1, the peer at the 0.5 rung of seed 0 (WHOLE); finished "
                        "runs in --keep_runs are reused, once their flags are checked; "
                        f"section {WHOLE_SECTION}")
    parser.add_argument("--keep_runs", default=None, help="keep run directories here")
    parser.add_argument("--fashion_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--npz", default=str(REPO.parent / "shared" / "data" / "mnist.npz"))
    return parser


#: The flags ``--whole`` sets itself (its ``WHOLE`` and ``PROTOCOLS``).
WHOLE_SETS = (*WHOLE, *Protocol._fields[:-1], "networks", "datasets")


def given(argv, names) -> list:
    """Which of ``names`` (flag destinations) the command line ``argv`` sets, in the
    order of ``names``; a flag given with its default value counts."""
    unset = object()
    probe = make_parser()
    probe.set_defaults(**{name: unset for name in names})
    parsed = probe.parse_args(argv)
    return [name for name in names if getattr(parsed, name) is not unset]


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    for name, values, allowed in (("networks", args.networks, NETWORKS),
                                  ("datasets", args.datasets, DATASETS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"--{name}: {bad[0]!r} is not one of {', '.join(allowed)}")
    if not 0 < args.keep_ratio < 1:
        parser.error(f"--keep_ratio={args.keep_ratio:g} must lie in (0, 1)")
    if args.whole:
        clash = given(argv, WHOLE_SETS)
        if clash:
            parser.error(f"--{clash[0]} cannot be combined with --whole: it runs every "
                         "network under its own protocol (PROTOCOLS) and the issue's "
                         "settings (WHOLE); leave it out")
        args.networks, args.datasets = list(NETWORKS), list(DATASETS)
        vars(args).update(WHOLE)
    work = args.keep_runs or tempfile.mkdtemp(prefix="epkd_frontier_")
    rows, runs = [], []
    for network in args.networks:
        settings = network_settings(args, network)
        for dataset in args.datasets:
            got, made = network_runs(network, dataset, settings, work)
            rows += got
            runs += made
    frame = pd.DataFrame(rows)
    frame["peer"] = frame.get("peer", pd.Series(False, index=frame.index)).fillna(False) \
        .astype(bool)
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    name = section_of(args)
    frame.to_csv(os.path.join(work, f"{name}.csv"), index=False)
    # Peer points that could not be made are named on the page, not plotted.
    gone = frame.get("peer_missing", pd.Series(np.nan, index=frame.index)).notna()
    missing, frame = frame[gone], frame[~gone]
    plot(frame, REPO / "plots" / f"{name}.png")
    replace_section(name, markdown(frame, args, pd.DataFrame(runs), missing), page(__file__))
    print(f"wrote section {name} of {page(__file__)} and plots/{name}.png; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
