"""Benchmark: EPKD beyond LeNets, on real data (issue #14 §3), into its page
docs/benchmarks/residual.md.

ResNet-18 and MobileNetV2 on MNIST compressed 5x, side by side with Torch-Pruning on
ResNet-18; and the seed's ResNet-34 protocol as a ready-to-run study. Written to the
section ``residual`` of docs/benchmarks/residual.md.

    python benchmarks/residual.py [--npz=../shared/data/mnist.npz] [--keep_runs=DIR]
        [--smoke] [--page=PATH] [--skip_peer]
    python benchmarks/residual.py --protocol=resnet34 [--dataset=cifar10 --data_dir=DIR]

**1. The zoo on real MNIST** (``--protocol=zoo`` or the default ``all``). MNIST resized to
32x32 (``--image_size=32``: both nets use their CIFAR stems below 100 px), trained on
``train[:20%]`` of which ``--validation_split=0.1`` is held out (10,800 training examples,
1,200 on which epkd_tf ranks its candidates), reported on the full 10,000-image test split.

* Teachers: ResNet-18 at width 0.25 (703,578 params) and MobileNetV2 at width 0.35
  (310,934 params), each trained 4 epochs by epkd_tf's own teacher training
  (``epkd_tf.training.train_teacher``: Adam 1e-3 cosine-decayed to 1%, batch 128, seed 0,
  op determinism on, exactly what ``python -m epkd_tf.main`` does for ``--teacher``), saved
  and handed to the CLI with ``--teacher_path`` so that the Torch-Pruning peer starts from
  the very weights epkd_tf distils from (the teacher's own row in each run's
  ``teacher.csv`` measures it as the CLI does).
* EPKD through the real CLI (``python -m epkd_tf.main``, one subprocess per network):
  ``--pruners=l1_filter,taylor,oracle``, ``--target_params`` = teacher / 5 reached in 6
  iterations (``--keep_ratio`` = 5^(-1/6)), 1 epoch of distillation per iteration (alpha
  0.1, T = 50, 45, ..., Adam 5e-4 constant, batch 128), ``--eval_examples=2000``,
  ``--oracle_examples=128``, ``--export_formats=tflite``.
* Reported per network: teacher and final student parameters, MACs, test accuracy, and the
  float TFLite batch-1 latency of both, measured side by side in this process in
  interleaved rounds (``peers.interleaved_latency``), and the speed-up.

**2. The peer on ResNet-18**: Torch-Pruning 1.6 in its own virtual environment
(``peers.peer_python()``) runs ``benchmarks/peer_torch_resnet.py``: a PyTorch port of the
same ResNet-18 loaded with the Keras teacher's weights (checked first: the PyTorch
teacher's test accuracy must be within 0.1 points of the Keras one and its logits within
1e-2 of the Keras logits, else the peer is not reported), then the same protocol on the
same 10,800 preprocessed training examples: as many pruning steps as epkd_tf made, each
to the parameter count epkd_tf's student had at that iteration, global
``TaylorImportance``, the logits layer ignored, 1 epoch of distillation each, and
BatchNorm statistics re-estimated as epkd_tf re-estimates them (after each pruning step and
after each distillation, on as many seeded batches as the epkd_tf run's
``--bn_recalibration_batches``: the same examples). A cached peer result made with another
number of batches (or before the peer re-estimated) is run again.
MobileNetV2 is epkd_tf only (no PyTorch weight port is written for it).

**3. The seed's ResNet-34 protocol** (``--protocol=resnet34``, also part of ``all``):
``python -m epkd_tf.study --flagfile=flags/study_cifar10_resnet34_seed.cfg``: methods
prune, distill, prune_distill, epkd and scratch at 20/40/60/80% of the parameters removed,
the distill/scratch students plain 4-conv + 2-dense convnets (the study's student family
of ResNets). ``--dataset=cifar10 --data_dir=DIR`` runs the protocol as written (section
``residual_resnet34_cifar10``); on MNIST (the default: CIFAR-10 cannot be downloaded on
this project's machines) it runs on a slice that fits: ResNet-34 at width 0.125, 32x32,
``train[:5%]``, ``test[:20%]``, 2 teacher epochs, 1 epoch per cell, one seed -- a plumbing
check of the pipeline, not a measurement of the protocol, and the section says so.

**Time: about 50 minutes on 2 idle cores** (never measured whole: extrapolated from each
phase's throughput measured on this machine under load -- training / inference ~400 /
1,000 examples/s for ResNet-18, ~150 / 680 for MobileNetV2, oracle scoring of the
MobileNetV2 teacher on 128 examples ~2.5 min, PyTorch training ~80 examples/s -- and
divided by ~1.7 for idle cores): ResNet-18 teacher ~2 min + EPKD ~7 min; MobileNetV2
teacher ~4 min + EPKD ~17 min; the peer ~8 min; the ResNet-34 plumbing study ~11 min;
exports and latency ~1 min. ``--smoke`` runs every part on 1,200 training and 200 test
examples, 1 epoch, 2 iterations to 2x fewer parameters, the study at 20% and 40% removed
(~9 minutes on this machine under load): a check of the plumbing whose figures mean
nothing, and its section says so. ``--page=PATH`` (or ``$EPKD_BENCHMARKS_PAGE``) writes
the sections into another file instead of the repository's docs/benchmarks/residual.md
(the tests do), and ``--skip_peer`` leaves the peer out (no PyTorch environment is made).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

import benchmarks_md
from benchmarks_md import replace_section
from compression_setup import finished
from mnist_epkd import mnist_arguments, mnist_data_dir
from peers import interleaved_latency, peer_python

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SECTION = "residual"
SEED = 0
IMAGE_SIZE = 32
VALIDATION = "0.1"
TEACHER_LEARNING_RATE = 1e-3
PRUNERS = "l1_filter,taylor,oracle"
# The distillation protocol of the peer comparisons (issue #14), one epoch per step here.
PROTOCOL = ["--finetune_epochs=1", "--alpha=0.1", "--temperature_start=50",
            "--temperature_step=5", "--finetune_learning_rate=5e-4",
            "--finetune_schedule=constant", "--batch_size=128", "--export_formats=tflite",
            "--export_every_student"]       # zoo_section times tflite/teacher.tflite
MAX_DROP_POINTS = 0.5           # "accuracy kept": the final student within this of its teacher
PORT_TOLERANCE_POINTS = 0.1
STUDY_FLAGFILE = "flags/study_cifar10_resnet34_seed.cfg"


@dataclasses.dataclass(frozen=True)
class Network:
    title: str
    name: str
    width: float
    peer: bool                   # a PyTorch port exists (peer_torch_resnet.py)


NETWORKS = (Network("ResNet-18", "resnet18", 0.25, True),
            Network("MobileNetV2", "mobilenet_v2", 0.35, False))


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much data and training each part gets: the benchmark's or the smoke run's."""

    train_split: str
    test_split: str
    teacher_epochs: int
    ratio: float                 # teacher params / final student params
    steps: int                   # EPKD iterations (and peer steps) to reach it
    eval_examples: int
    oracle_examples: int
    latency_runs: int            # per measurement inside the EPKD runs
    interleave_runs: int         # per file, side by side at the end
    study: tuple                 # the ResNet-34 study's flags on MNIST


FULL = Scale("train[:20%]", "test", 4, 5.0, 6, 2000, 128, 50, 300, study=(
    "--teacher_width=0.125", "--train_split=train[:5%]", "--test_split=test[:20%]",
    "--teacher_epochs=2", "--epochs=1", "--seeds=1"))
# Taylor scoring draws --taylor_batches (8) x 128 = 1,024 training examples: the smoke
# slice keeps 1,080 of its 1,200 for training.
SMOKE = Scale("train[:1200]", "test[:200]", 1, 2.0, 2, 200, 16, 5, 10, study=(
    "--teacher_width=0.125", "--train_split=train[:1200]", "--test_split=test[:200]",
    "--teacher_epochs=1", "--epochs=1", "--seeds=1", "--fractions_removed=0.2,0.4",
    "--prune_rate=0.5"))


def output_path(args) -> Path:
    """The page this run writes: --page, $EPKD_BENCHMARKS_PAGE or the repository's
    docs/benchmarks/residual.md."""
    # EPKD_BENCHMARKS_MD: its name before the benchmarks had pages of their own.
    chosen = (args.page or os.environ.get("EPKD_BENCHMARKS_PAGE")
              or os.environ.get("EPKD_BENCHMARKS_MD"))
    return Path(chosen) if chosen else benchmarks_md.page(__file__)


def run(command: List[str], **kwargs) -> None:
    print("+ " + " ".join(shlex.quote(c) for c in command), flush=True)
    subprocess.run(command, cwd=REPO, check=True, **kwargs)


def data_config(data_dir: str, scale: Scale):
    """The DataConfig every part-1 step uses (the same examples everywhere)."""
    from epkd_tf.config import DataConfig
    return DataConfig(dataset="mnist", data_dir=data_dir, train_split=scale.train_split,
                      validation_split=VALIDATION, test_split=scale.test_split,
                      image_size=IMAGE_SIZE, seed=SEED, batch_size=128)


def data_flags(data_dir: str, scale: Scale) -> List[str]:
    return ["--dataset=mnist", f"--data_dir={data_dir}", f"--image_size={IMAGE_SIZE}",
            f"--train_split={scale.train_split}", f"--validation_split={VALIDATION}",
            f"--test_split={scale.test_split}", f"--seed={SEED}"]


# ----------------------------------------------------------------------------- teachers
def train_teacher_here(spec: dict) -> int:
    """The teacher stage of ``python -m epkd_tf.main`` for one zoo network (run in its own
    process by :func:`teacher`): seeds and op determinism, the model, train_teacher, saved
    as .keras, with its nonzero parameters and wall time in a .json next to it."""
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401  (Keras 2 before TensorFlow loads)
    from epkd_tf.cli.common import native_log_filter, quiet_libraries, verbosity
    verbose = verbosity(0)           # $EPKD_VERBOSE keeps the libraries' log, as in the CLI
    quiet_libraries(verbose)
    with native_log_filter(enabled=not verbose):
        return _train_teacher(spec, verbose)


def _train_teacher(spec: dict, verbose: int) -> int:
    from epkd_tf.cli.common import quiet_libraries, setup_logging
    from epkd_tf.seeds import seed_everything
    seed_everything(SEED)
    quiet_libraries(verbose)
    setup_logging()
    from epkd_tf import training
    from epkd_tf.data import load_data
    from epkd_tf.graph import nonzero_params
    from epkd_tf.models import build_model
    scale = Scale(**{**spec["scale"], "study": tuple(spec["scale"]["study"])})
    data = load_data(data_config(spec["data_dir"], scale))
    model = build_model(spec["name"], data.spec.input_shape, data.spec.num_classes,
                        width=spec["width"])
    start = time.perf_counter()
    history = training.train_teacher(
        model, data, scale.teacher_epochs, TEACHER_LEARNING_RATE,
        callbacks=[training.EpochLog(f"Teacher {spec['name']}", scale.teacher_epochs)],
        verbose=verbose)
    seconds = time.perf_counter() - start
    out = spec["out"]
    model.save(out + ".tmp.keras")
    history.to_csv(out.replace(".keras", "_history.csv"), index=False)
    Path(out.replace(".keras", ".json")).write_text(json.dumps(
        {"nonzero_params": nonzero_params(model), "total_params": model.count_params(),
         "train_examples": data.spec.num_train, "seconds": seconds}))
    os.replace(out + ".tmp.keras", out)
    return 0


def teacher(work: str, data_dir: str, net: Network, scale: Scale) -> dict:
    """The trained teacher of ``net``: its .keras path and facts (trained once)."""
    out = os.path.join(work, "teachers", f"{net.name}.keras")
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        spec = {"name": net.name, "width": net.width, "data_dir": data_dir, "out": out,
                "scale": dataclasses.asdict(scale)}
        run([sys.executable, str(Path(__file__).resolve()), f"--_train_teacher={json.dumps(spec)}"])
    return {"path": out, **json.loads(Path(out.replace(".keras", ".json")).read_text())}


# ----------------------------------------------------------------------------- EPKD
def run_epkd(work: str, data_dir: str, net: Network, scale: Scale) -> dict:
    """epkd_tf on ``net``'s teacher to ``scale.ratio`` x fewer parameters in
    ``scale.steps`` iterations, through the CLI; the run's tables and wall time."""
    made = teacher(work, data_dir, net, scale)
    target = int(round(made["nonzero_params"] / scale.ratio))
    keep = (1.0 / scale.ratio) ** (1.0 / scale.steps)
    out = os.path.join(work, "runs", net.name)
    wall_file = os.path.join(out, "wall_seconds.txt")
    if not finished(out):
        start = time.perf_counter()
        # Exactly ``steps`` iterations: the last lands on the target within one group of
        # units (above or below); a bound of one more would spend a whole iteration
        # (candidates, distillation, exports) on the last few dozen parameters.
        run([sys.executable, "-m", "epkd_tf.main", *data_flags(data_dir, scale),
             f"--output_dir={out}", f"--teacher_path={made['path']}",
             f"--pruners={PRUNERS}", f"--target_params={target}", f"--keep_ratio={keep:.6f}",
             f"--iterations={scale.steps}", f"--eval_examples={scale.eval_examples}",
             f"--oracle_examples={scale.oracle_examples}",
             f"--latency_runs={scale.latency_runs}", *PROTOCOL])
        Path(wall_file).write_text(f"{time.perf_counter() - start:.1f}\n")
    table = lambda name: pd.read_csv(os.path.join(out, f"{name}.csv"))  # noqa: E731
    return {"net": net, "out": out, "teacher": table("teacher").iloc[0],
            "final": table("final").iloc[0], "students": table("students"),
            "target": target, "keep_ratio": keep, "teacher_seconds": made["seconds"],
            "train_examples": made["train_examples"],
            "bn_recalibration_batches": bn_recalibration_batches(out),
            "seconds": float(Path(wall_file).read_text())}


def bn_recalibration_batches(run_dir: str) -> int:
    """The ``--bn_recalibration_batches`` an epkd_tf run used, read from its flags.txt (a
    flag missing there had its default, as epkd_tf itself assumes when resuming), so that
    the peer re-estimates on as many batches."""
    for line in Path(run_dir, "flags.txt").read_text().splitlines():
        if line.strip().startswith("--bn_recalibration_batches="):
            return int(line.split("=", 1)[1])
    sys.path.insert(0, str(REPO))
    from epkd_tf.config import default_bn_batches
    return default_bn_batches()


# ----------------------------------------------------------------------------- the peer
def export_for_peer(work: str, data_dir: str, scale: Scale, teacher_path: str) -> tuple:
    """The Keras teacher's weights (``layer/weight`` keys) and the exact preprocessed
    training and test examples epkd_tf used, plus the Keras teacher's logits on the first
    test images, as .npz files the peer loads (no TensorFlow in the peer's environment)."""
    weights_path = os.path.join(work, "peer", "teacher_weights.npz")
    data_path = os.path.join(work, "peer", "data.npz")
    if os.path.exists(weights_path) and os.path.exists(data_path):
        return weights_path, data_path
    os.makedirs(os.path.dirname(weights_path), exist_ok=True)
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401
    import tf_keras
    from epkd_tf.data import load_data
    model = tf_keras.models.load_model(teacher_path, compile=False)
    np.savez(weights_path, **keras_weights(model))
    data = load_data(data_config(data_dir, scale))
    x_train, y_train = data.numpy_train()
    x_test, y_test = data.numpy_test()
    keras_logits = model.predict(x_test[:512], batch_size=256, verbose=0)
    np.savez(data_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             keras_test_logits=keras_logits)
    return weights_path, data_path


def keras_weights(model) -> Dict[str, np.ndarray]:
    """Every weight of ``model`` by ``layer/weight`` (``stage2_block1_conv1/kernel``,
    ``stem_conv_bn/moving_mean``...): the names the PyTorch port loads by."""
    arrays = {}
    for layer in model.layers:
        for variable, value in zip(layer.weights, layer.get_weights()):
            short = variable.name.split("/")[-1].split(":")[0]
            arrays[f"{layer.name}/{short}"] = value
    return arrays


def run_peer(work: str, python: str, weights: str, data: str, epkd: dict) -> dict:
    """Torch-Pruning on the ported teacher, one step per epkd_tf iteration to the same
    parameter counts, BatchNorm statistics re-estimated on as many batches as epkd_tf's run;
    its JSON (``port_ok`` false: the port was refused). A cached JSON is reused only if it
    was made with that number of batches (one written before the peer re-estimated has
    none)."""
    out = os.path.join(work, "peer", "resnet18.json")
    bn_batches = epkd["bn_recalibration_batches"]
    cached = json.load(open(out)).get("bn_recalibration_batches") if os.path.exists(out) else None
    if os.path.exists(out) and cached != bn_batches:
        print(f"{out} was made with --bn_recalibration_batches={cached} (epkd_tf's run: "
              f"{bn_batches}): running the peer again", flush=True)
    if cached != bn_batches:
        targets = ",".join(str(int(p)) for p in epkd["students"].nonzero_params)
        # --seed is also epkd_tf's data seed: the peer draws the same re-estimation batches.
        command = [python, str(HERE / "peer_torch_resnet.py"), f"--teacher={weights}",
                   f"--data={data}", f"--targets={targets}",
                   f"--keras_test_accuracy={float(epkd['teacher'].test_accuracy):.6f}",
                   f"--bn_recalibration_batches={bn_batches}", f"--seed={SEED}", f"--out={out}"]
        print("+ " + " ".join(shlex.quote(c) for c in command), flush=True)
        status = subprocess.run(command, cwd=REPO).returncode
        if status not in (0, 3):      # 3: the port check failed (recorded in the JSON)
            raise SystemExit(f"error: the peer failed with exit status {status}")
    return json.load(open(out))


# ----------------------------------------------------------------------------- ResNet-34
def study_flags(dataset: str, data_dir: Optional[str], scale: Scale, smoke: bool) -> List[str]:
    """The study's command-line flags after the flagfile: the MNIST slice (or, with
    --smoke, the tiny one on any dataset); nothing more for the real protocol."""
    flags = [f"--flagfile={STUDY_FLAGFILE}"] + ([f"--data_dir={data_dir}"] if data_dir else [])
    if dataset == "mnist":
        flags += ["--dataset=mnist", f"--image_size={IMAGE_SIZE}", *scale.study]
    elif smoke:
        flags += [f"--dataset={dataset}", *scale.study]
    else:
        flags += [f"--dataset={dataset}"]
    return flags


def run_resnet34(work: str, dataset: str, data_dir: Optional[str], scale: Scale,
                 smoke: bool) -> dict:
    out = os.path.join(work, f"study_resnet34_{dataset}")
    flags = study_flags(dataset, data_dir, scale, smoke)
    wall_file = os.path.join(out, "wall_seconds.txt")
    if not finished(out):
        start = time.perf_counter()
        run([sys.executable, "-m", "epkd_tf.study", *flags, f"--output_dir={out}"])
        Path(wall_file).write_text(f"{time.perf_counter() - start:.1f}\n")
    return {"out": out, "flags": flags, "seconds": float(Path(wall_file).read_text()),
            "study": pd.read_csv(os.path.join(out, "study.csv")),
            "teacher": pd.read_csv(os.path.join(out, "teacher_history.csv"))}


def resnet34_section(result: dict, dataset: str, smoke: bool) -> str:
    study, history = result["study"], result["teacher"]
    teacher_acc = 100 * history.test_accuracy.iloc[-1]
    real = dataset != "mnist" and not smoke
    cifar = "python benchmarks/residual.py --protocol=resnet34 --dataset=cifar10 --data_dir=DIR"
    shown = " ".join(f for f in result["flags"] if not f.startswith("--data_dir"))
    title = {"mnist": "MNIST", "cifar10": "CIFAR-10"}.get(dataset, dataset)
    lines = [f"### The seed's ResNet-34 protocol on {title} (`{STUDY_FLAGFILE}`)", ""]
    if real:
        lines += [f"Measured {datetime.date.today()} on {platform.machine()}, "
                  f"{os.cpu_count()} cores, with `python -m epkd_tf.study {shown}` "
                  f"({result['seconds'] / 3600:.1f} h).", ""]
    else:
        lines += ["**A plumbing check, not a measurement of the protocol.** "
                  + ("(`--smoke`: a tiny slice, 1 epoch.) " if smoke else "")
                  + f"`python -m epkd_tf.study {shown}` ran the protocol's methods and "
                  "grid end to end on a slice of MNIST that fits this machine (ResNet-34 at "
                  "width 0.125, a few epochs, one seed); its accuracies say nothing about "
                  "the protocol. The protocol's real-data figures (CIFAR-10) are **not "
                  "measurable here**: CIFAR-10 cannot be downloaded on this project's "
                  "machines (no network). Where it is prepared ([data](../data.md#preparing-cifar-10-"
                  "and-imagenet)), run", "",
                  f"    {cifar}", "",
                  f"which runs `python -m epkd_tf.study --flagfile={STUDY_FLAGFILE} "
                  "--data_dir=DIR --dataset=cifar10` (hours on a GPU) and writes its figures "
                  "to the section `residual_resnet34_cifar10` of `docs/benchmarks/residual.md`.", ""]
    mean = study.groupby(["method", "fraction_removed"]).test_accuracy.mean().unstack() * 100
    params = study.groupby(["method", "fraction_removed"]).nonzero_params.mean().unstack()
    order = [m for m in ("prune", "distill", "prune_distill", "epkd", "scratch", "lottery")
             if m in mean.index]
    lines += [f"Teacher test accuracy {teacher_acc:.2f}% after {len(history)} epoch(s). Test "
              f"accuracy (mean over {study.seed.nunique()} seed(s)) and nonzero parameters "
              f"by fraction of the teacher's parameters removed; {result['seconds']:.0f} s "
              "in all:", "",
              "| method | " + " | ".join(f"{100 * f:g}% removed" for f in mean.columns) + " |",
              "|---|" + "---|" * len(mean.columns)]
    for method in order:
        lines.append(f"| {method} | " + " | ".join(
            f"{mean.loc[method, f]:.2f}% ({int(params.loc[method, f]):,})"
            for f in mean.columns) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report
def verdict(ok: bool, smoke: bool) -> str:
    if smoke:
        return "not judged (`--smoke`)"
    return "yes" if ok else "**no**"


def points(a: float, b: float) -> str:
    return f"{100 * (b - a):+.2f}"


def zoo_section(results: List[dict], peer: Optional[dict], peer_note: str,
                latency: Dict[str, float], scale: Scale, smoke: bool) -> List[str]:
    lines = ["## Beyond LeNets: ResNet-18 and MobileNetV2 on real MNIST "
             "(`benchmarks/residual.py`)", ""]
    if smoke:
        lines += ["**`--smoke` run: a check of the plumbing on a tiny slice with 1 epoch; "
                  "none of these figures is a measurement.**", ""]
    first = results[0]
    test_words = "the full 10,000-image test split" if scale.test_split == "test" else "a slice"
    lines += [f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
              "cores, CPU only, in one invocation. MNIST resized to 32x32, every method "
              f"trained on the same {first['train_examples']:,} examples of "
              f"`{scale.train_split}` (`--validation_split={VALIDATION}` held out for "
              f"epkd_tf's ranking), reported on `{scale.test_split}` ({test_words}). "
              f"Teachers trained {scale.teacher_epochs} epoch(s) by epkd_tf "
              "(Adam 1e-3 cosine, batch 128) and passed with `--teacher_path`. epkd_tf: "
              f"`python -m epkd_tf.main --pruners={PRUNERS} --target_params=<teacher/"
              f"{scale.ratio:g}> --keep_ratio={first['keep_ratio']:.4f} "
              f"--eval_examples={scale.eval_examples} --oracle_examples="
              f"{scale.oracle_examples} {' '.join(PROTOCOL)}` ({scale.steps} iterations "
              f"planned to {scale.ratio:g}x fewer parameters). Latency: float TFLite, "
              "batch 1, one thread, LiteRT, teacher and student files timed side by side in "
              f"interleaved rounds ({scale.interleave_runs} runs each). One seed.", ""]
    rows, checks = [], []
    for r in results:
        t, f, net = r["teacher"], r["final"], r["net"]
        t_file = os.path.join(r["out"], "tflite", "teacher.tflite")
        s_file = os.path.join(r["out"], "tflite", "final.tflite")
        t_ms, s_ms = latency[t_file], latency[s_file]
        rows.append(f"| {net.title} ({net.width:g}) | epkd_tf | {int(t.nonzero_params):,} -> "
                    f"{int(f.nonzero_params):,} ({t.nonzero_params / f.nonzero_params:.2f}x) | "
                    f"{int(t.macs):,} -> {int(f.macs):,} ({t.macs / f.macs:.2f}x) | "
                    f"{100 * t.test_accuracy:.2f} -> {100 * f.test_accuracy:.2f} "
                    f"({points(t.test_accuracy, f.test_accuracy)}) | {t_ms:.3f} -> "
                    f"{s_ms:.3f} (**{t_ms / s_ms:.2f}x**) | "
                    f"{','.join(r['students'].pruner)} | {r['seconds']:.0f} |")
        drop = 100 * (t.test_accuracy - f.test_accuracy)
        ratio = t.nonzero_params / f.nonzero_params
        checks.append((f"{net.title}: epkd_tf's student at {ratio:.1f}x fewer params within "
                       f"{MAX_DROP_POINTS} points of its teacher",
                       drop <= MAX_DROP_POINTS, f"{100 * f.test_accuracy:.2f}% vs "
                       f"{100 * t.test_accuracy:.2f}% ({-drop:+.2f} points)"))
        if net.peer and port_verified(peer):
            rows.append(f"| {net.title} ({net.width:g}) | Torch-Pruning Taylor + KD | "
                        f"{peer['teacher_params']:,} -> {peer['params']:,} "
                        f"({peer['teacher_params'] / peer['params']:.2f}x) | "
                        f"{peer['teacher_macs']:,} -> {peer['macs']:,} "
                        f"({peer['teacher_macs'] / peer['macs']:.2f}x) | "
                        f"{100 * peer['teacher_test_accuracy']:.2f} -> "
                        f"{100 * peer['test_accuracy']:.2f} "
                        f"({points(peer['teacher_test_accuracy'], peer['test_accuracy'])}) "
                        f"| - | - | {peer['seconds']:.0f} |")
            checks.append((f"{net.title}: epkd_tf at least as accurate as Torch-Pruning "
                           "Taylor + KD at the same parameter count",
                           f.test_accuracy >= peer["test_accuracy"],
                           f"{100 * f.test_accuracy:.2f}% vs "
                           f"{100 * peer['test_accuracy']:.2f}%"))
    lines += ["| target | result | met |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {verdict(ok, smoke)} |" for what, ok, value in checks]
    lines += ["", "| network (width) | method | params teacher -> student | MACs | test acc "
              "% (points) | TFLite ms teacher -> student (speed-up) | winners per iteration "
              "| seconds |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    lines += [peer_note, ""]
    resnet = next((r for r in results if r["net"].peer), None)
    if resnet is not None:
        lines += [f"Per iteration on {resnet['net'].title} (the peer's steps go to epkd_tf's "
                  "parameter counts):", "",
                  "| step | T | epkd_tf params | winner | epkd_tf test % | Torch-Pruning "
                  "params | Torch-Pruning test % |", "|---|---|---|---|---|---|---|"]
        steps = {s["step"]: s for s in (peer or {}).get("steps", [])}
        for s in resnet["students"].itertuples():
            p = steps.get(int(s.iteration))
            lines.append(f"| {s.iteration} | {s.temperature:g} | {int(s.nonzero_params):,} | "
                         f"{s.pruner} | {100 * s.test_accuracy:.2f} | "
                         + (f"{p['params']:,} | {100 * p['test_accuracy']:.2f} |" if p
                            else "- | - |"))
        lines.append("")
    lines += ["Teacher training (s): " + ", ".join(
        f"{r['net'].title} {r['teacher_seconds']:.0f}" for r in results) + "; the epkd_tf "
        "column `seconds` is the whole CLI run (teacher evaluation and export, every "
        "iteration's three candidates with their evaluation on the training sample, the "
        "held-out split and the test split, distillation, exports)."]
    return lines


def port_verified(peer: Optional[dict]) -> bool:
    """The peer is reported only if its PyTorch teacher is the Keras one: the peer's own
    check passed and the two test accuracies are within PORT_TOLERANCE_POINTS."""
    return bool(peer and peer.get("port_ok") and abs(
        peer["teacher_test_accuracy"] - peer["keras_test_accuracy"]) * 100
        <= PORT_TOLERANCE_POINTS + 1e-9)


def peer_note_for(peer: Optional[dict], skipped: Optional[str]) -> str:
    common = ("MobileNetV2 is compressed by epkd_tf only: no PyTorch port of its weights is "
              "written (its depthwise convolutions, ReLU6 and TensorFlow's asymmetric 'same' "
              "padding of strided layers would each need porting and checking as "
              "ResNet-18's were).")
    if skipped:
        return f"Torch-Pruning peer on ResNet-18: not run ({skipped}). {common}"
    if not port_verified(peer):
        return (f"**Torch-Pruning peer on ResNet-18 not reported**: its PyTorch port of the "
                f"teacher scores {100 * peer['teacher_test_accuracy']:.2f}% where the Keras "
                f"teacher scores {100 * peer['keras_test_accuracy']:.2f}% (at most "
                f"{PORT_TOLERANCE_POINTS} points apart allowed) and their logits differ by up "
                f"to {peer['port_max_logit_diff']:.2e} (at most 1e-2 allowed): it would "
                "compress another function. "
                + common)
    return (f"Torch-Pruning {peer['torch_pruning']} on PyTorch {peer['torch']} "
            "(`benchmarks/peer_torch_resnet.py`, in its own virtual environment): a PyTorch "
            "port of the same ResNet-18 loaded with the Keras teacher's weights; port check: "
            f"test accuracy {100 * peer['teacher_test_accuracy']:.2f}% in PyTorch vs "
            f"{100 * peer['keras_test_accuracy']:.2f}% in Keras (largest logit difference "
            f"{peer['port_max_logit_diff']:.1e} on the first test images; Torch-Pruning counts "
            f"{peer['teacher_macs']:,} MACs for the teacher). Same training "
            "examples (exported from epkd_tf's pipeline), one pruning step per epkd_tf "
            "iteration to epkd_tf's parameter count (BatchNorm moving statistics counted on "
            "both sides), global TaylorImportance (MetaPruner, DepGraph couples the "
            "residual channels), logits layer kept, no per-layer floor, then 1 epoch of "
            "distillation (alpha 0.1, the same T, Adam 5e-4, batch 128). "
            + peer_batchnorm_note(peer) + " Its MACs are Torch-Pruning's count; no TFLite "
            "file is made on that side. " + common)


def peer_batchnorm_note(peer: dict) -> str:
    """What the peer's JSON says it did with the BatchNorm running statistics."""
    batches, examples = (peer.get("bn_recalibration_batches") or 0,
                         peer.get("bn_recalibration_examples") or 0)
    if not batches or not examples:
        return ("BatchNorm running statistics not re-estimated on that side (PyTorch's "
                "exponential average, momentum 0.01, as Keras' 0.99).")
    return ("BatchNorm running statistics re-estimated as epkd_tf re-estimates them, after "
            "each pruning step and after each distillation: every layer's running mean and "
            "variance set to the average of its per-batch statistics over "
            f"`--bn_recalibration_batches={batches}` batches of 128 training examples "
            f"({examples:,} examples, drawn with epkd_tf's seed and sampling: the same "
            "batches; unbiased variances on both sides).")


# ----------------------------------------------------------------------------- main
def parse_args():
    parser = mnist_arguments(__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="every part on a tiny slice with 1 epoch: a plumbing check")
    parser.add_argument("--protocol", choices=["all", "zoo", "resnet34"], default="all",
                        help="all: parts 1-3; zoo: ResNet-18/MobileNetV2 and the peer; "
                        "resnet34: the seed's ResNet-34 study only")
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist",
                        help="dataset of --protocol=resnet34 (part 1 is MNIST)")
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data directory of --dataset (MNIST: imported from --npz "
                        "when not given)")
    parser.add_argument("--page", "--benchmarks_md", dest="page", default=None,
                        help="file to write the sections into (default: "
                        "$EPKD_BENCHMARKS_PAGE or docs/benchmarks/residual.md)")
    parser.add_argument("--skip_peer", action="store_true",
                        help="leave out the Torch-Pruning peer (no PyTorch environment)")
    parser.add_argument("--_train_teacher", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dataset != "mnist" and args.protocol != "resnet34":
        parser.error("--dataset=cifar10 is for --protocol=resnet34 (part 1 runs on MNIST)")
    return args


def main() -> int:
    args = parse_args()
    if args._train_teacher:
        return train_teacher_here(json.loads(args._train_teacher))
    scale = SMOKE if args.smoke else FULL
    path = output_path(args)
    work = args.keep_runs or tempfile.mkdtemp(prefix="epkd_residual_")
    os.makedirs(work, exist_ok=True)
    needs_mnist = args.protocol != "resnet34" or args.dataset == "mnist"
    data_dir = args.data_dir
    if needs_mnist and not data_dir:
        if not os.path.exists(args.npz):
            print(f"error: MNIST not found at {args.npz}; pass --npz=PATH", file=sys.stderr)
            return 2
        data_dir = mnist_data_dir(args.npz, work)
    started = time.perf_counter()
    if args.protocol in ("all", "zoo"):
        results = [run_epkd(work, data_dir, net, scale) for net in NETWORKS]
        peer, skipped = None, None
        resnet = next(r for r in results if r["net"].peer)
        if args.skip_peer:
            skipped = "--skip_peer"
        else:
            weights, data = export_for_peer(work, data_dir, scale,
                                            teacher(work, data_dir, resnet["net"], scale)["path"])
            peer = run_peer(work, peer_python(), weights, data, resnet)
        files = []
        for r in results:
            files += [os.path.join(r["out"], "tflite", f"{name}.tflite")
                      for name in ("teacher", "final")]
        latency = interleaved_latency(files, runs=scale.interleave_runs)
        body = zoo_section(results, peer, peer_note_for(peer, skipped), latency, scale,
                           args.smoke)
        if args.protocol == "all":
            study = run_resnet34(work, "mnist", data_dir, scale, args.smoke)
            # Its own markers inside this section, so that a later
            # `--protocol=resnet34` run replaces only this part.
            body += ["", f"<!-- {SECTION}_resnet34_mnist:start -->",
                     resnet34_section(study, "mnist", args.smoke),
                     f"<!-- {SECTION}_resnet34_mnist:end -->"]
        parts = [("teachers", sum(r["teacher_seconds"] for r in results)),
                 ("epkd_tf runs", sum(r["seconds"] for r in results)),
                 ("peer", peer["seconds"] if port_verified(peer) else 0.0)]
        if args.protocol == "all":
            parts.append(("ResNet-34 study", study["seconds"]))
        body += ["", "Wall time of the parts: " + ", ".join(
            f"{what} {seconds / 60:.1f} min" for what, seconds in parts)
            + f" ({sum(s for _, s in parts) / 60:.1f} min in all; this invocation "
            f"{(time.perf_counter() - started) / 60:.1f} min, parts found finished in "
            "--keep_runs being reused)."]
        replace_section(SECTION, "\n".join(body), path)
        print(f"wrote section {SECTION} of {path}; runs in {work}")
    else:
        study = run_resnet34(work, args.dataset, data_dir, scale, args.smoke)
        name = f"{SECTION}_resnet34_{args.dataset}"
        replace_section(name, resnet34_section(study, args.dataset, args.smoke), path)
        print(f"wrote section {name} of {path}; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
