"""Benchmark: EPKD at ImageNet's shape (issue #24 §4), into docs/benchmarks/scale.md.

    python benchmarks/scale.py [--networks=mobilenet_v2,resnet50] [--images=1000,500]
        [--classes=1000] [--image_size=224] [--teacher_width=1.0] [--batch_size=32]
        [--eval_images=200] [--work_dir=DIR] [--page=PATH] [--section=scale]
        [--jit_compile] [--distribution=mirrored] [--precision=mixed_float16]

What it does, every step through the public entry points:

1. **Data.** Writes seeded synthetic JPEGs, ImageNet-shaped -- ``--classes`` class folders
   (1,000 by default), images of varied sizes around 1.2 x ``--image_size`` (each class a
   procedural pattern: its own colours, stripe angle and frequency, plus noise) -- into
   ``--work_dir`` (default: a folder under the system's temporary directory, never the
   repository): ``max(--images)`` training images (at least one per class) and one image
   per class in each of ``test/`` and ``validation/`` (the import wants every split to
   hold every class). It imports them with ``python -m epkd_tf.data --import_folder=...
   --name=imagenet2012`` so that runs get the ImageNet recipe (shorter side to 1.14 x,
   random crop + flip for training: augmented, so the teacher runs on every distillation
   batch; central crop for evaluation) and stream the images from disk as ImageNet does.
2. **EPKD.** Per network of ``--networks`` (zoo teachers; ``--images`` gives each its
   number of training images, ``train[:N]``), ``python -m epkd_tf.main --dataset=imagenet
   --teacher=NET --teacher_epochs=1 --iterations=2`` with the ImageNet flagfile's pruners
   (``l1_filter,taylor,poly_magnitude``: oracle is left out at this scale) and
   ``--test_split=validation[:--eval_images]``, every other flag at its default (exports
   included), as a subprocess whose resident memory is sampled every 0.5 s from
   ``/proc/<pid>/status`` (VmRSS, and VmHWM, the kernel's own peak). Per phase: the
   ``peak_rss_mb`` column of ``timings.csv`` when the run writes one, else the peak of the
   samples taken before each console line (a line reports what just finished: an epoch, a
   candidate, an export). A run that does not finish (e.g. killed by the kernel's
   out-of-memory killer) still gets its section: how it stopped, its peak, its timings.
3. **Plain fit vs distillation, side by side.** In a subprocess of its own, the run's
   first student (``checkpoints/student_1.keras``) is trained from its checkpoint for as
   many epochs as one iteration's distillation on the same augmented pipeline, with the
   same per-epoch validation, by a plain ``tf_keras`` ``fit`` (Adam, cross-entropy) and by
   distillation as the run does it (``epkd_tf.distill.finetune.distil`` from the run's
   teacher, which runs on every batch: the cached logits cannot serve augmented images),
   in ``--rounds`` interleaved rounds (medians), so that both see the same load of a
   shared machine. Iteration 1's ``distillation`` row of ``timings.csv`` is reported too.

Reported per network: seconds and share of every phase, peak resident memory (whole run
and per phase), images per second of teacher training, distillation and the plain fit, and
each target of issue #24 §4 met / not met: peak resident memory <= 8 GB; exports
(``export`` + ``deployment_evaluation``) and ``scoring`` together <= 25% of the run;
distillation >= 0.9x the plain fit's images/s.

``--jit_compile``, ``--distribution`` and ``--precision`` (epkd_tf's own flags) are
passed to every run and the side-by-side fit (whose checkpoints carry the run's
precision): ``benchmarks/gpu_check.sh`` uses them on a GPU machine. The side-by-side
rounds also time the teacher's forward pass alone over the same augmented batches: what
distillation adds to a fit by construction. ``--page``/``--section`` write elsewhere (the tests do).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_md import cpu, page, replace_section  # noqa: E402

SECTION = "scale"
PRUNERS = "l1_filter,taylor,poly_magnitude"
EXPORTS = ("export", "deployment_evaluation")
SCORING = ("scoring",)
TARGET_RSS_MB = 8 * 1024
TARGET_EXPORT_SHARE = 0.25
TARGET_RATIO = 0.9


def listed(kind):
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


# ------------------------------------------------------------------------------- data
def write_images(root: Path, classes: int, train: int, size: int, seed: int) -> int:
    """Seeded synthetic JPEGs in ``root/{train,test,validation}/<class>/``; returns how
    many files were written. Each class is a pattern (colours, stripe angle and frequency)
    plus per-image noise, in sizes between 1.1 and 1.4 x ``size`` (varied, so the import
    makes a variable-size dataset streamed from disk, as ImageNet is)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    patterns = [(rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0, math.pi),
                 rng.uniform(2, 12)) for _ in range(classes)]
    counts = {"train": max(train, classes), "test": classes, "validation": classes}
    written = 0
    for split, count in counts.items():
        for index in range(count):
            label = index % classes
            first, second, angle, frequency = patterns[label]
            height, width = (int(size * rng.uniform(1.1, 1.4)) for _ in range(2))
            yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
            wave = 0.5 + 0.5 * np.sin(2 * math.pi * frequency *
                                      (xx * math.cos(angle) + yy * math.sin(angle)))
            image = wave[..., None] * first + (1 - wave[..., None]) * second
            image += rng.normal(0, 20, image.shape)
            folder = root / split / f"c{label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.clip(0, 255).astype("uint8")).save(
                folder / f"{index:06d}.jpg", quality=85)
            written += 1
    return written


# --------------------------------------------------------------------------- process
class Sampler:
    """Samples the resident memory of process ``pid`` every ``interval`` s (VmRSS and the
    kernel's peak VmHWM from /proc) and the console lines it writes, each with its time."""

    def __init__(self, process: subprocess.Popen, interval: float = 0.5):
        self.process, self.interval = process, interval
        self.samples: List[tuple] = []        # (time, rss_mb)
        self.lines: List[tuple] = []          # (time, text)
        self.hwm_mb = 0.0
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _sample(self):
        status = Path(f"/proc/{self.process.pid}/status")
        while self.process.poll() is None:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                              if ":" in line)
                rss = int(fields["VmRSS"].split()[0]) / 1024
                self.hwm_mb = max(self.hwm_mb, int(fields["VmHWM"].split()[0]) / 1024)
                self.samples.append((time.monotonic(), rss))
            except (OSError, KeyError, ValueError):
                pass          # the process is exiting: /proc no longer answers
            time.sleep(self.interval)

    def _read(self):
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self) -> int:
        code = self.process.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        return code

    def peak_mb(self) -> float:
        return max([self.hwm_mb] + [rss for _, rss in self.samples])

    def peaks_by_line(self) -> List[tuple]:
        """(console line, peak MB of the samples since the line before it), in order: the
        run's lines report what just finished (an epoch, a candidate, an export), so the
        time before a line belongs to it; samples after the last line are ``(exit)``."""
        marks = self.lines + [(float("inf"), "(exit)")]
        peaks: List[tuple] = []
        previous = 0.0
        for when, text in marks:
            inside = [rss for t, rss in self.samples if previous <= t < when]
            if inside:
                peaks.append((text, max(inside)))
            previous = when
        return peaks


def run_sampled(command: List[str], log: Path, env: Optional[dict] = None,
                must_succeed: bool = True) -> Dict:
    """Runs ``command`` (stderr into stdout), sampling its memory; writes its console to
    ``log``; returns seconds, exit code, peak MB and the sampler. A failure ends the
    benchmark when ``must_succeed``, else is returned (``code``: the exit status, or minus
    the signal that killed it)."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    sampler = Sampler(process)
    code = sampler.wait()
    seconds = time.monotonic() - start
    log.write_text("\n".join(text for _, text in sampler.lines) + "\n")
    if code != 0 and must_succeed:
        tail = "\n".join(text for _, text in sampler.lines[-30:])
        sys.exit(f"{shlex.join(command)} failed with exit status {code}:\n{tail}")
    return {"seconds": seconds, "peak_mb": sampler.peak_mb(), "sampler": sampler,
            "code": code}


def reused(saved: Path) -> Dict:
    """The result of an earlier run of this benchmark (``--reuse_runs``) from its saved
    memory samples and console lines (a file without its wall time or kernel peak: the
    span and the peak of its samples)."""
    record = json.loads(saved.read_text())
    sampler = Sampler.__new__(Sampler)
    sampler.samples = [tuple(x) for x in record["samples"]]
    sampler.lines = [tuple(x) for x in record["lines"]]
    sampler.hwm_mb = record.get("peak_mb", 0.0)
    seconds = record.get("seconds") or (sampler.samples[-1][0] - sampler.samples[0][0])
    return {"seconds": seconds, "peak_mb": sampler.peak_mb(), "sampler": sampler, "code": 0,
            "reused": True}


def environment(args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return env


def run_command(args) -> List[str]:
    """The command line a run starts with (its flags follow)."""
    return [sys.executable, "-m", "epkd_tf.main"] + (
        [f"--precision={args.precision}"] if args.precision != "float32" else [])


# --------------------------------------------------------------------------- plain fit
def plain_fit(args) -> None:
    """``--_plain_fit=RUN``: trains RUN's first student with a plain ``fit`` for one
    iteration's distillation epochs on the run's data; prints one JSON line."""
    import epkd_tf  # noqa: F401  (Keras 2 first)
    import tensorflow as tf
    import tf_keras
    from epkd_tf import training
    from epkd_tf.config import DataConfig
    from epkd_tf.data import load_data
    from epkd_tf.distill import finetune
    from epkd_tf.distribute import make_strategy
    import numpy as np
    from epkd_tf.models.user import load_user_model
    run = Path(args._plain_fit)
    flags = dict(line.split("=", 1) for line in (run / "flags.txt").read_text().splitlines()
                 if line.startswith("--") and "=" in line)
    tf_keras.utils.set_random_seed(int(flags.get("--seed", 0)))
    data = load_data(DataConfig(dataset="imagenet", data_dir=flags["--data_dir"],
                                image_size=int(flags["--image_size"]),
                                train_split=flags["--train_split"],
                                test_split=flags["--test_split"],
                                batch_size=int(flags["--batch_size"]), download=False))
    epochs = int(flags.get("--finetune_epochs", 2))
    lr = float(flags.get("--finetune_learning_rate", 5e-4))
    strategy = make_strategy(args.distribution)

    def fit_once() -> float:
        with strategy.scope():
            student = load_user_model(str(run / "checkpoints" / "student_1.keras"), None)
            training.compile_classifier(student, lr, jit_compile=args.jit_compile)
        start = time.perf_counter()
        student.fit(data.train(), epochs=epochs, validation_data=data.test(), verbose=0)
        return time.perf_counter() - start

    def distil_once() -> float:
        # As the run's iteration 1 does (epkd_tf/loop.py): the teacher on every batch (the
        # recipe augments), per-epoch validation, the run's alpha and batchnorm mode.
        with strategy.scope():
            student = load_user_model(str(run / "checkpoints" / "student_1.keras"), None)
            teacher = load_user_model(str(run / "checkpoints" / "teacher.keras"), None)
        start = time.perf_counter()
        finetune.distil(student, teacher, data, epochs=epochs, learning_rate=lr,
                        alpha=float(flags.get("--alpha", 0.1)), temperature=50.0,
                        batch_size=int(flags["--batch_size"]), cosine=False,
                        batchnorm=flags.get("--distill_batchnorm", "batch"),
                        validation_data=data.test(), track_accuracy=True,
                        jit_compile=args.jit_compile)
        return time.perf_counter() - start

    def teacher_once() -> float:
        # What distillation adds to a fit by construction: the teacher's forward pass
        # (inference mode) on every augmented training batch of the same epochs.
        with strategy.scope():
            teacher = load_user_model(str(run / "checkpoints" / "teacher.keras"), None)
        forward = tf.function(lambda x: teacher(x, training=False),
                              jit_compile=args.jit_compile or None)
        start = time.perf_counter()
        for _ in range(epochs):
            for x, _ in data.train():
                forward(x)
        return time.perf_counter() - start

    # Interleaved rounds, so that all three see the same load of a shared machine.
    fits, distils, teachers = [], [], []
    for _ in range(args.rounds):
        fits.append(fit_once())
        distils.append(distil_once())
        teachers.append(teacher_once())
    print(json.dumps({"seconds": float(np.median(fits)), "distil_seconds":
                      float(np.median(distils)), "teacher_seconds": float(np.median(teachers)),
                      "fit_rounds": fits, "distil_rounds": distils, "teacher_rounds": teachers,
                      "images": data.spec.num_train * epochs, "epochs": epochs}))


# ---------------------------------------------------------------------------- report
def phases(run: Path):
    import pandas as pd
    return pd.read_csv(run / "timings.csv")


def images_per_second(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")


def phase_peaks(timings, sampler: Sampler) -> Dict[str, float]:
    """Peak resident MB per phase: timings.csv's own column when the run writes one, else
    the console line's samples (a line naming a phase starts it)."""
    for column in ("peak_rss_mb", "peak_memory_mb", "rss_mb"):
        if column in timings.columns:
            return timings.groupby("phase")[column].max().dropna().to_dict()
    keys = [("teacher_training", r"Teacher epoch"),
            ("distillation", r"distillation \(T=.*epoch"),
            ("scoring, surgery, magnitude_finetune (console)", r"fine-tune epoch"),
            ("candidate_evaluation", r"candidate #"),
            ("export", r"(saved_model|tflite|keras3) |skipped \(")]
    peaks: Dict[str, float] = {}
    for text, peak in sampler.peaks_by_line():
        current = "(other: start-up, evaluation, logging; console)"
        for name, pattern in keys:
            if re.search(pattern, text):
                current = name
                break
        peaks[current] = max(peaks.get(current, 0.0), peak)
    return peaks


def failed_report(name: str, args, images: int, result: Dict, run: Path) -> tuple:
    """The figures of a run that did not finish (killed, e.g. by the kernel's out-of-memory
    killer, or stopped by an error): its peak memory and the ``timings.csv`` rows it wrote;
    the targets it did not reach the end of are not measured."""
    import signal
    code = result["code"]
    how = (f"killed by signal {-code} ({signal.Signals(-code).name}"
           + (": on Linux, typically the kernel's out-of-memory killer)" if -code == 9
              else ")") if code < 0 else f"exit status {code}")
    last = next((text for _, text in reversed(result["sampler"].lines)
                 if "epkd_tf:" in text or text.startswith("error")), "(no console line)")
    peak = result["peak_mb"]
    lines = [f"### {name} (width {args.teacher_width:g}), {images:,} training images at "
             f"{args.image_size} px: the run did not finish", "",
             f"The run stopped after {result['seconds']:.0f} s: {how}. Its last console line: "
             f"`{last.strip()}`. Peak resident memory until then: **{peak:,.0f} MB**.", ""]
    timings = run / "timings.csv"
    if timings.exists():
        frame = phases(run)
        lines += ["`timings.csv` as far as it was written:", "",
                  "| phase | seconds |", "|---|---|"]
        for phase, seconds in frame.groupby("phase")["seconds"].sum().sort_values(
                ascending=False).items():
            lines.append(f"| {phase} | {seconds:.1f} |")
        lines.append("")
    unfinished = (None, "not measured: the run did not finish")
    targets = {"peak resident memory <= 8 GB": (
                   False if peak > TARGET_RSS_MB else None,
                   f"{peak:,.0f} MB" + ("" if peak > TARGET_RSS_MB else " until it stopped")),
               "exports + scoring <= 25% of the run": unfinished,
               "distillation >= 0.9x plain fit images/s": unfinished}
    return lines, targets


def verdict(ok: Optional[bool]) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def network_report(name: str, args, images: int, result: Dict, fit: Dict, run: Path) -> tuple:
    timings = phases(run)
    total = timings["seconds"].sum()
    by_phase = timings.groupby("phase")["seconds"].sum().sort_values(ascending=False)
    teacher_s = by_phase.get("teacher_training", float("nan"))
    first = timings[(timings["phase"] == "distillation") & (timings["iteration"] == 1)]
    distill_s = first["seconds"].sum()
    ratio = fit["seconds"] / fit["distil_seconds"]     # images/s distillation / plain fit
    exports = sum(by_phase.get(p, 0.0) for p in EXPORTS)
    scoring = sum(by_phase.get(p, 0.0) for p in SCORING)
    share = (exports + scoring) / total
    peak = max(result["peak_mb"], fit["peak_mb"])
    peaks = phase_peaks(timings, result["sampler"])
    lines = [f"### {name} (width {args.teacher_width:g}), {images:,} training images at "
             f"{args.image_size} px", "",
             ("The EPKD run was made by an earlier invocation (`--reuse_runs`: its timings "
              "and memory samples are reused; the side-by-side figures are new). "
              if result.get("reused") else "") +
             f"The run: {result['seconds']:.0f} s of process wall time, {total:.0f} s in "
             f"`timings.csv`. Peak resident memory: **{peak:,.0f} MB** (the run "
             f"{result['peak_mb']:,.0f} MB, the plain fit {fit['peak_mb']:,.0f} MB).", "",
             "| phase | seconds | share of the run | peak resident MB |", "|---|---|---|---|"]
    for phase, seconds in by_phase.items():
        mb = peaks.get(phase)
        lines.append(f"| {phase} | {seconds:.1f} | {100 * seconds / total:.1f}% | "
                     f"{'' if mb is None else f'{mb:,.0f}'} |")
    extra = [k for k in peaks if k not in by_phase.index]
    for key in extra:
        lines.append(f"| {key} | | | {peaks[key]:,.0f} |")
    lines += ["", "| images/s | value |", "|---|---|",
              f"| teacher training (1 epoch) | {images_per_second(images, teacher_s):.2f} |",
              f"| distillation in the run (iteration 1, {fit['epochs']} epochs, teacher run "
              f"per batch) | {images_per_second(fit['images'], distill_s):.2f} |",
              f"| distillation of the first student, side by side ({fit['epochs']} epochs, "
              f"median of {len(fit['distil_rounds'])}) | "
              f"{images_per_second(fit['images'], fit['distil_seconds']):.2f} |",
              f"| plain `fit` of the first student, side by side ({fit['epochs']} epochs, "
              f"median of {len(fit['fit_rounds'])}) | "
              f"{images_per_second(fit['images'], fit['seconds']):.2f} |"]
    if "teacher_seconds" in fit:        # samples of earlier script versions have none
        lines.append(f"| the teacher's forward pass alone on the same batches, side by side "
                     f"(median of {len(fit['teacher_rounds'])}) | "
                     f"{images_per_second(fit['images'], fit['teacher_seconds']):.2f} |")
    lines += ["", "Side by side: one process trains the run's first student from its "
              "checkpoint by plain `fit` and by distillation (as the run does it: teacher on "
              "every batch, per-epoch validation) and runs the teacher alone over the same "
              "augmented batches, in interleaved rounds, so that all see the same load; "
              "rounds (s): fit " + ", ".join(f"{x:.1f}" for x in fit["fit_rounds"])
              + "; distillation " + ", ".join(f"{x:.1f}" for x in fit["distil_rounds"])
              + ("; teacher forward " + ", ".join(f"{x:.1f}" for x in fit["teacher_rounds"])
                 if "teacher_rounds" in fit else "") + "."]
    if "teacher_seconds" in fit:
        bound = fit["seconds"] / (fit["seconds"] + fit["teacher_seconds"])
        lines.append(f"Distillation cannot beat a fit plus the teacher's forward pass "
                     f"({fit['seconds']:.0f} + {fit['teacher_seconds']:.0f} s: "
                     f"{bound:.2f}x the fit's images/s, the ratio the cached logits would "
                     f"avoid without augmentation); it ran at {ratio:.2f}x, i.e. "
                     f"{fit['distil_seconds'] - fit['seconds'] - fit['teacher_seconds']:+.0f} s "
                     f"beyond fit + teacher.")
    lines.append("")
    targets = {"peak resident memory <= 8 GB": (peak <= TARGET_RSS_MB, f"{peak:,.0f} MB"),
               "exports + scoring <= 25% of the run": (
                   share <= TARGET_EXPORT_SHARE,
                   f"{100 * share:.1f}% (exports {exports:.0f} s, scoring {scoring:.0f} s "
                   f"of {total:.0f} s)"),
               "distillation >= 0.9x plain fit images/s": (
                   ratio >= TARGET_RATIO, f"{ratio:.2f}x (side by side; in the run "
                   f"{images_per_second(fit['images'], distill_s):.2f} images/s)")}
    return lines, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=listed(str), default=["mobilenet_v2", "resnet50"])
    parser.add_argument("--images", type=listed(int), default=[1000, 500],
                        help="training images per network (train[:N]), in --networks order")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--teacher_width", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--eval_images", type=int, default=200,
                        help="validation images of every evaluation (--test_split)")
    parser.add_argument("--pruners", default=PRUNERS)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of plain fit vs distillation (medians)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default=str(Path(tempfile.gettempdir()) / "epkd_scale"))
    parser.add_argument("--page", default=os.environ.get("EPKD_BENCHMARKS_PAGE"))
    parser.add_argument("--section", default=SECTION)
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--distribution", default="default")
    parser.add_argument("--precision", default="float32",
                        help="epkd_tf's --precision for every run, e.g. mixed_float16")
    parser.add_argument("--extra_flags", type=lambda s: shlex.split(s), default=[],
                        help="more epkd_tf.main flags for every run, e.g. "
                             "'--export_every_student'")
    parser.add_argument("--reuse_runs", action="store_true",
                        help="reuse finished EPKD runs of --work_dir (and their memory "
                             "samples) instead of running them again")
    parser.add_argument("--_plain_fit", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._plain_fit:
        return plain_fit(args)
    if len(args.images) != len(args.networks):
        parser.error(f"--images gives {len(args.images)} counts for {len(args.networks)} "
                     "--networks: give one per network")
    work = Path(args.work_dir)
    if REPO in work.resolve().parents or work.resolve() == REPO:
        parser.error(f"--work_dir={args.work_dir!r} is inside the repository: choose a "
                     "scratch folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    started = time.monotonic()

    folder, tfds_dir = work / "images", work / "tfds"
    marker = work / "images.json"
    wanted = {"classes": args.classes, "train": max(args.images), "size": args.image_size,
              "seed": args.seed}
    t = time.monotonic()
    if not marker.exists() or json.loads(marker.read_text()) != wanted:
        shutil.rmtree(folder, ignore_errors=True)
        count = write_images(folder, args.classes, max(args.images), args.image_size, args.seed)
        marker.write_text(json.dumps(wanted))
    else:
        count = sum(1 for _ in folder.rglob("*.jpg"))
    write_s = time.monotonic() - t
    imported = run_sampled([sys.executable, "-m", "epkd_tf.data", f"--import_folder={folder}",
                            "--name=imagenet2012", f"--data_dir={tfds_dir}", "--overwrite"],
                           work / "import.log", env)
    print(f"{count} images written in {write_s:.0f} s, imported in "
          f"{imported['seconds']:.0f} s", flush=True)

    sections, targets_all, commands = [], {}, []
    for name, images in zip(args.networks, args.images):
        run = work / "runs" / name
        saved = work / f"{name}_samples.json"
        if not (args.reuse_runs and (run / "final.csv").exists() and saved.exists()):
            shutil.rmtree(run, ignore_errors=True)
        command = run_command(args) + [
            "--dataset=imagenet", f"--data_dir={tfds_dir}", "--nodownload",
            f"--image_size={args.image_size}", f"--train_split=train[:{images}]",
            f"--test_split=validation[:{args.eval_images}]", f"--teacher={name}",
            f"--teacher_width={args.teacher_width}", "--teacher_epochs=1", "--iterations=2",
            f"--pruners={args.pruners}", f"--batch_size={args.batch_size}", f"--seed={args.seed}",
            f"--output_dir={run}"] + (["--jit_compile"] if args.jit_compile else []) + (
            [f"--distribution={args.distribution}"] if args.distribution != "default"
            else []) + args.extra_flags
        commands.append(command)
        print(f"{name}: {shlex.join(command)}", flush=True)
        if run.exists():
            result = reused(saved)
            print(f"{name}: reusing the finished run {run} and its memory samples", flush=True)
        else:
            result = run_sampled(command, work / f"{name}.log", env, must_succeed=False)
        if result["code"] != 0:
            lines, targets = failed_report(name, args, images, result, run)
            sections += lines
            targets_all[name] = targets
            print("\n".join(lines), flush=True)
            continue
        fit_command = [sys.executable, __file__, f"--_plain_fit={run}", f"--rounds={args.rounds}",
                       f"--distribution={args.distribution}"] + (
            ["--jit_compile"] if args.jit_compile else [])
        fitted = run_sampled(fit_command, work / f"{name}_fit.log", env)
        fit = json.loads([text for _, text in fitted["sampler"].lines
                          if text.startswith("{")][-1])
        fit["peak_mb"] = fitted["peak_mb"]
        lines, targets = network_report(name, args, images, result, fit, run)
        sections += lines
        targets_all[name] = targets
        print("\n".join(lines), flush=True)
        saved.write_text(json.dumps(
            {"samples": result["sampler"].samples, "lines": result["sampler"].lines,
             "seconds": result["seconds"], "peak_mb": result["peak_mb"]}))

    write_page(args, count, imported, write_s, sections, targets_all, commands,
               time.monotonic() - started)


def machine() -> str:
    cpus = os.cpu_count()
    model = cpu()
    memory = ""
    try:
        kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text()
                      .splitlines() if line.startswith("MemTotal")))
        memory = f", {kb / 1024 ** 2:.0f} GB memory"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import tensorflow as tf
        gpus = len(tf.config.list_physical_devices("GPU"))
    except Exception:     # noqa: BLE001  (the page still says what it could)
        gpus = 0
    return f"{model}, {cpus} cores{memory}, {gpus} GPU(s)"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_page(args, count, imported, write_s, sections, targets_all, commands, seconds):
    networks = ", ".join(f"{n} ({i:,} training images)"
                         for n, i in zip(args.networks, args.images))
    settings = ["`--jit_compile`" if args.jit_compile else "",
                f"`--distribution={args.distribution}`" if args.distribution != "default"
                else "", f"`--precision={args.precision}`" if args.precision != "float32" else ""]
    settings = ", ".join(s for s in settings if s) or "float32, no XLA, one device"
    body = [f"## ImageNet-shaped runs: {', '.join(args.networks)}"
            + (f" ({settings})" if settings != "float32, no XLA, one device" else ""), "",
            f"Measured {datetime.date.today()} on {machine()} (shared with other work: "
            f"absolute times are noisy), commit `{commit()}`, seed {args.seed}, one run per "
            f"network (no repeats: no medians), {settings}. "
            f"Whole benchmark {seconds / 60:.0f} min.", "",
            f"Command: `python benchmarks/scale.py --networks={','.join(args.networks)} "
            f"--images={','.join(map(str, args.images))} --classes={args.classes} "
            f"--image_size={args.image_size} --teacher_width={args.teacher_width:g} "
            f"--batch_size={args.batch_size} --eval_images={args.eval_images} "
            f"--seed={args.seed}"
            + (f" --pruners={args.pruners}" if args.pruners != PRUNERS else "")
            + (" --jit_compile" if args.jit_compile else "")
            + (f" --distribution={args.distribution}" if args.distribution != "default" else "")
            + (f" --precision={args.precision}" if args.precision != "float32" else "")
            + (f" --extra_flags={shlex.quote(shlex.join(args.extra_flags))}"
               if args.extra_flags else "") + "`", "",
            f"Data: {count:,} synthetic JPEGs ({args.classes:,} classes; training images "
            f"plus one per class in `test/` and `validation/`), written in {write_s:.0f} s "
            f"and imported (`python -m epkd_tf.data --import_folder=... "
            f"--name=imagenet2012`) in {imported['seconds']:.0f} s, peak "
            f"{imported['peak_mb']:,.0f} MB. Networks: {networks}; every run "
            f"`--teacher_epochs=1 --iterations=2 --pruners={args.pruners} "
            f"--test_split=validation[:{args.eval_images}]`, the rest at its defaults.", "",
            "| target (issue #24 §4) | " + " | ".join(targets_all) + " |",
            "|---|" + "---|" * len(targets_all)]
    names = list(next(iter(targets_all.values())))
    for target in names:
        body.append(f"| {target} | " + " | ".join(
            targets_all[n][target][1] if targets_all[n][target][1].startswith("not measured")
            else f"{verdict(targets_all[n][target][0])}: {targets_all[n][target][1]}"
            for n in targets_all) + " |")
    body += ["", *sections]
    replace_section(args.section, "\n".join(body), Path(args.page) if args.page
                    else page(__file__))


if __name__ == "__main__":
    main()
