"""Benchmark: the accuracy / measured-speed frontier of EPKD students under each
``--allocation`` and ``--budget``, written to docs/benchmarks/frontier.md and
plots/frontier.png (an invocation on other datasets than Fashion-MNIST alone writes its
own section and plot, ``frontier_<datasets>``, so both stay side by side).

    python benchmarks/frontier.py [--networks=lenet5] [--datasets=fashion_mnist]
        [--budgets=latency,macs] [--allocations=importance,cost] [--seeds=0]
        [--drops=0.25,0.5,1.0] [--finetune_epochs=2] [--keep_runs=DIR]
        [--fashion_dir=/usr/share/datasets/fashion-mnist] [--npz=../shared/data/mnist.npz]

Networks: ``lenet5`` (28x28), ``resnet18`` (width 0.25) and ``mobilenet_v2`` (width 0.35),
both at 32x32. Datasets: Fashion-MNIST (Debian's ``dataset-fashion-mnist`` package, IDX
files, imported through the npz route; never a dependency of the package) and MNIST.

For every network and dataset the teacher is trained once (the first run) and shared by
every other run through ``--teacher_path``. Then for every budget, allocation and seed one
CLI run: ``--keep_ratio=0.8 --validation_split=0.1 --max_accuracy_drop=<largest drop>``.
The runs are deterministic, so a run with a smaller ``--max_accuracy_drop`` would make the
same students and stop at the first one that loses more than it on the validation split:
every rung of the drop ladder is read off the one run (``budget.stop``'s rule: the
cheapest student before that one). Each rung reports test accuracy (mean over seeds, and
the spread), MACs, parameters, and the float and int8 TFLite batch-1 latency of the
student, each timed side by side with its teacher by this script.

Targets (issue #23), on Fashion-MNIST within 0.5 points of the teacher: ResNet-18 >= 3x,
MobileNetV2 >= 2.5x, LeNet-5 >= 8x faster (float TFLite). The Torch-Pruning side of the
issue's frontier is not run here (see the page).
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks_md import page, replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "frontier"


def section_name(networks, datasets) -> str:
    """The page section and plot name of an invocation on ``networks`` and ``datasets``:
    ``frontier`` for LeNet-5 on Fashion-MNIST, else ``frontier_<networks>_<datasets>``."""
    if list(networks) == ["lenet5"] and list(datasets) == ["fashion_mnist"]:
        return SECTION
    return "_".join([SECTION, *networks, *datasets])


def invocation(args) -> str:
    """The command line that reproduces an invocation's section."""
    extra = "".join(f" --{name}={getattr(args, name)}" for name in ("train_split",
                                                                    "teacher_epochs")
                    if getattr(args, name) is not None)
    peer = f" --peer_drops={','.join(f'{d:g}' for d in args.peer_drops)}" if args.peer_drops else ""
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
COMMON = ["--keep_ratio=0.8", "--iterations=20", "--validation_split=0.1",
          "--pruners=l1_filter,taylor", "--export_formats=tflite,tflite_int8",
          "--export_every_student",   # every student's and the teacher's TFLite files are read
          "--latency_runs=100", "--alpha=0.1", "--temperature_schedule=linear",
          "--temperature_start=50", "--temperature_step=5", "--temperature_min=1",
          "--batch_size=128"]
SIDE_BY_SIDE_RUNS, SIDE_BY_SIDE_ROUNDS = 1000, 5
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


def run(flags, out: str) -> float:
    """One CLI run (skipped when ``out`` holds a finished one); its wall seconds."""
    wall = os.path.join(out, "wall_seconds.txt")
    if not os.path.exists(os.path.join(out, "final.csv")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "epkd_tf.main", *flags, f"--output_dir={out}"],
                       cwd=REPO, check=True)
        Path(wall).write_text(f"{time.perf_counter() - start:.1f}\n")
    return float(Path(wall).read_text())


def ladder(out: str, drops, budget: str = "params") -> list:
    """[(drop, iteration)]: the final student a run with ``--max_accuracy_drop=drop`` would
    have chosen (0: the teacher), read off this run's tables with the package's own stop
    rules (``epkd_tf.budget.stop``): the run stops after the first student that loses more
    than ``drop`` on the validation split, and the final one is chosen among those made."""
    sys.path.insert(0, str(REPO))
    from epkd_tf.budget import make_measure
    from epkd_tf.budget.stop import StopRules
    from epkd_tf.config import BudgetConfig
    teacher = pd.read_csv(os.path.join(out, "teacher.csv"))
    students = pd.read_csv(os.path.join(out, "students.csv"))
    rungs = []
    for drop in drops:
        rules = StopRules(BudgetConfig(max_accuracy_drop=drop), make_measure(budget),
                          keep_ratio=0.8, validation=True)
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
           drops, wall: float) -> list:
    teacher = pd.read_csv(os.path.join(out, "teacher.csv")).iloc[0]
    students = pd.read_csv(os.path.join(out, "students.csv")).set_index("iteration")
    candidates = pd.read_csv(os.path.join(out, "candidates.csv"))
    made = candidates[candidates.skipped.isna()]          # read_csv makes "" NaN
    error = ((made.predicted_cost - made.cost).abs() / made.cost).median()
    rows = []
    for drop, iteration in ladder(out, drops, budget):
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


def teacher_weights(out: str) -> str:
    """The run's LeNet-5 teacher as the npz the peer loads (layer_kernel, layer_bias)."""
    from peers import teacher_weights_npz
    return teacher_weights_npz(os.path.join(out, "checkpoints", "teacher.keras"),
                               os.path.join(out, "teacher_weights.npz"))


def lenet5_tflite(widths) -> bytes:
    """A float TFLite LeNet-5 at the peer's widths (conv1, conv2, fc1; random weights:
    latency does not depend on their values), converted like epkd_tf's students."""
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401
    import tf_keras
    from epkd_tf.deploy import tflite as metrics
    c1, c2, f1 = widths
    layers = tf_keras.layers
    x = tf_keras.Input((28, 28, 1))
    y = layers.MaxPooling2D(2)(layers.Conv2D(c1, 5, activation="relu")(x))
    y = layers.MaxPooling2D(2)(layers.Conv2D(c2, 5, activation="relu")(y))
    y = layers.Dense(f1, activation="relu")(layers.Flatten()(y))
    return metrics.to_tflite(tf_keras.Model(x, layers.Dense(10)(y)))


def peer_point(row: dict, out: str, npz: str, work: str) -> dict:
    """Torch-Pruning (global Taylor, in its own virtual environment) on the same teacher
    to the epkd_tf student's MACs, in as many pruning steps as the student's iterations,
    each followed by the same 2 epochs of distillation; its widths timed side by side with
    the teacher's file."""
    from peers import peer_python
    sys.path.insert(0, str(REPO))
    from epkd_tf.deploy import tflite as metrics
    name = (f"{row['network']}_{row['dataset']}_{row['budget']}_{row['allocation']}_s"
            f"{row['seed']}_it{row['iteration']}.json")
    result = os.path.join(work, "peer", name)
    if not os.path.exists(result):
        os.makedirs(os.path.dirname(result), exist_ok=True)
        subprocess.run([peer_python(), str(REPO / "benchmarks" / "peer_torch_pruning.py"),
                        f"--teacher={teacher_weights(out)}", f"--mnist={npz}",
                        f"--target_macs={row['macs']}", f"--steps={row['iteration']}",
                        f"--seed={row['seed']}", f"--out={result}"], check=True)
    peer = json.loads(Path(result).read_text())
    widths = [int(w) for w in peer["widths"].split(",")]
    (teacher_ms, _), (peer_ms, _) = metrics.tflite_latency_side_by_side(
        [Path(out, "tflite", "teacher.tflite").read_bytes(), lenet5_tflite(widths)],
        runs=SIDE_BY_SIDE_RUNS, rounds=SIDE_BY_SIDE_ROUNDS)
    return {**row, "allocation": f"{PEER} at the MACs of {row['allocation']}",
            "peer": True, "of_allocation": row["allocation"],
            "test_accuracy": peer["test_accuracy"], "macs": peer["lenet_macs"],
            "params": peer["params"], "float_speedup": teacher_ms / peer_ms,
            "int8_speedup": np.nan, "float_ms": peer_ms, "int8_ms": np.nan,
            "teacher_float_ms": teacher_ms, "teacher_int8_ms": np.nan,
            "model_error": np.nan, "seconds": peer["seconds"]}


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Test accuracy change against measured float speed-up, one panel per network and
    dataset: a line per epkd_tf budget and allocation (its drop ladder, seed means), a
    square per peer point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = list(frame.groupby(["network", "dataset"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 6.0), squeeze=False)
    for ax, ((network, dataset), group) in zip(axes[0], groups):
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


def markdown(frame: pd.DataFrame, args, runs: pd.DataFrame) -> str:
    lines = [f"## Accuracy against measured speed, {', '.join(args.datasets)} "
             "(`benchmarks/frontier.py`)", "",
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
             f"cores, CPU only. Invocation: `{invocation(args)}`. Every run: `{' '.join(COMMON)} "
             f"--finetune_epochs={args.finetune_epochs}` plus its row's flags; one teacher per "
             "network and dataset, shared. A rung of the drop ladder is the final student "
             "a run with that `--max_accuracy_drop` (judged on the validation split) "
             "chooses. Speed-up: the teacher's and the student's TFLite files timed side by "
             f"side by this script ({SIDE_BY_SIDE_RUNS:,} invokes each in "
             f"{SIDE_BY_SIDE_ROUNDS} interleaved rounds, batch 1, one thread, medians). "
             "Test accuracy change: the full test split, mean over seeds (min..max in "
             "brackets when several). "
             f"![frontier](../../plots/{section_name(args.networks, args.datasets)}.png)", "",
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
    if not peers.empty:
        lines += ["", f"At equal MACs, {PEER} (its own virtual environment, the same teacher "
                  "weights, the first 54,000 training examples, as many global-Taylor "
                  "pruning steps as the epkd_tf student had iterations, each followed by "
                  "the same 2 epochs of distillation; its widths rebuilt in tf_keras and "
                  "timed side by side with the teacher):", "",
                  "| network | dataset | epkd_tf run | drop allowed | MACs | epkd_tf test "
                  "change | peer test change | epkd_tf float speed-up | peer float speed-up |",
                  "|---|---|---|---|---|---|---|---|---|"]
        keys = ["network", "dataset", "budget", "of_allocation", "drop_allowed"]
        for key, group in peers.groupby(keys, sort=False):
            network, dataset, of_budget, of_allocation, drop = key
            mine = ours[(ours.network == network) & (ours.dataset == dataset)
                        & (ours.budget == of_budget) & (ours.allocation == of_allocation)
                        & (ours.drop_allowed == drop)]

            def spread(values):
                return (f"{values.mean():+.2f}" + (f" ({values.min():+.2f}..{values.max():+.2f})"
                                                   if len(values) > 1 else ""))
            lines.append(
                f"| {NETWORKS[network][0]} | {dataset} | --budget={of_budget} "
                f"--allocation={of_allocation} | {drop:g} | {group.macs.mean():,.0f} | "
                f"{spread(mine.change)} | {spread(group.change)} | "
                f"{mine.float_speedup.mean():.2f}x | {group.float_speedup.mean():.2f}x |")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    listed = lambda kind: (lambda text: [kind(v) for v in text.split(",") if v])  # noqa: E731
    parser.add_argument("--networks", type=listed(str), default=["lenet5"])
    parser.add_argument("--datasets", type=listed(str), default=["fashion_mnist"])
    parser.add_argument("--budgets", type=listed(str), default=["latency", "macs"])
    parser.add_argument("--allocations", type=listed(str), default=["importance", "cost"])
    parser.add_argument("--seeds", type=listed(int), default=[0])
    parser.add_argument("--drops", type=listed(float), default=[0.25, 0.5, 1.0])
    parser.add_argument("--finetune_epochs", type=int, default=2)
    parser.add_argument("--train_split", default=None,
                        help="the runs' --train_split (default: the whole training split)")
    parser.add_argument("--teacher_epochs", type=int, default=None,
                        help="the teacher's epochs (default: the network's recipe)")
    parser.add_argument("--peer_drops", type=listed(float), default=[],
                        help="LeNet-5 only: run Torch-Pruning to the MACs of the epkd_tf "
                        "students at these rungs of the drop ladder")
    parser.add_argument("--keep_runs", default=None, help="keep run directories here")
    parser.add_argument("--fashion_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--npz", default=str(REPO.parent / "shared" / "data" / "mnist.npz"))
    args = parser.parse_args()
    for name, values, allowed in (("networks", args.networks, NETWORKS),
                                  ("datasets", args.datasets, DATASETS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"--{name}: {bad[0]!r} is not one of {', '.join(allowed)}")
    work = args.keep_runs or tempfile.mkdtemp(prefix="epkd_frontier_")
    common = [*COMMON, f"--finetune_epochs={args.finetune_epochs}",
              f"--max_accuracy_drop={max(args.drops):g}"]
    if args.train_split:
        common.append(f"--train_split={args.train_split}")
    subset = "" if args.train_split is None else "_" + re.sub(r"\W+", "", args.train_split)
    rows, runs = [], []
    for network in args.networks:
        for dataset in args.datasets:
            data_dir = data_dir_for(dataset, args, work)
            teacher = [f for f in NETWORKS[network][1]
                       if args.teacher_epochs is None or not f.startswith("--teacher_epochs")]
            if args.teacher_epochs is not None:
                teacher.append(f"--teacher_epochs={args.teacher_epochs}")
            for budget in args.budgets:
                for allocation in args.allocations:
                    for seed in args.seeds:
                        out = os.path.join(work, f"{network}_{dataset}{subset}_{budget}_"
                                                 f"{allocation}_seed{seed}")
                        flags = [f"--dataset={dataset}", f"--data_dir={data_dir}", *teacher,
                                 *common, f"--budget={budget}", f"--allocation={allocation}",
                                 f"--seed={seed}"]
                        wall = run(flags, out)
                        got = points(network, dataset, budget, allocation, seed, out,
                                     args.drops, wall)
                        rows += got
                        if network == "lenet5":
                            npz = args.npz if dataset == "mnist" else os.path.join(
                                work, "fashion_mnist.npz")
                            rows += [peer_point(p, out, npz, work) for p in got
                                     if p["drop_allowed"] in args.peer_drops
                                     and p["iteration"] > 0]
                        runs.append({**got[0], "iterations_run": got[0]["iterations_run"]})
                        print(got, flush=True)
                        # Every later run distils from this first run's teacher.
                        teacher = [f for f in teacher if f.startswith("--image_size")] + [
                            f"--teacher_path={os.path.join(out, 'checkpoints', 'teacher.keras')}"]
    frame = pd.DataFrame(rows)
    frame["peer"] = frame.get("peer", pd.Series(False, index=frame.index)).fillna(False) \
        .astype(bool)
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    name = section_name(args.networks, args.datasets)
    frame.to_csv(os.path.join(work, f"{name}.csv"), index=False)
    plot(frame, REPO / "plots" / f"{name}.png")
    replace_section(name, markdown(frame, args, pd.DataFrame(runs)), page(__file__))
    print(f"wrote section {name} of {page(__file__)} and plots/{name}.png; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
