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

Its parts: ``frontier_protocol.py`` (the networks, datasets, shared flags, protocols,
targets and names), ``frontier_peer.py`` (the Torch-Pruning side), ``frontier_page.py`` (the
page section and plot); this file runs the runs and reads their rungs.
"""
from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from benchmarks_md import page, replace_section
from frontier_page import markdown, plot
from frontier_peer import PEERS, peer_point
from frontier_protocol import (COMMON, DATASETS, ITERATIONS, KEEP_OF, KEEP_RATIO, NETWORKS,
                               PROTOCOLS, REPO, SIDE_BY_SIDE_ROUNDS, SIDE_BY_SIDE_RUNS,
                               VALIDATION_SPLIT, WHOLE, WHOLE_SECTION, Protocol, run_suffix,
                               section_of)

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
    if settings.keep_of != KEEP_OF:
        common.append(f"--keep_of={settings.keep_of}")
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
                        settings.drop_patience, settings.keep_ratio,
                        settings.keep_of)
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
    parser.add_argument("--keep_of", choices=("cost", "removable"), default=KEEP_OF,
                        help="the runs' --keep_of (what --keep_ratio is a fraction of; the "
                        "run directories and page section of removable are named after it)")
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
WHOLE_SETS = (*WHOLE, *Protocol._fields[:-1], "keep_of", "networks", "datasets")


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
