"""The study: one teacher, then every (method, fraction removed, seed) cell of the grid.

    teacher = train(teacher)                       # its initial weights kept (lottery)
    for seed in seeds:
        for method in methods:
            model = teacher
            for fraction in fractions_removed:     # increasing
                model = method(predecessor = model if iterative else teacher,
                               target = (1 - fraction) * nonzero_params(teacher))
                record(cell)                       # study.csv row, model, test softmax
    comparisons.csv, study.md, plots               # from the recorded cells
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import training
from epkd_tf.graph import nonzero_params
from epkd_tf.models import build_model
from epkd_tf.seeds import derive_seed
from epkd_tf.study import compare, sparsity
from epkd_tf.study.layout import StudyDir, cell_name
from epkd_tf.study.methods import ReseededData, StudyContext, make_method

log = logging.getLogger("epkd_tf")


def test_probabilities(model: tf_keras.Model, data) -> np.ndarray:
    """Softmax outputs of ``model`` (logits) on the whole test split, in file order."""
    x, _ = data.numpy_test()
    logits = model.predict(x, batch_size=512, verbose=0)
    return tf.nn.softmax(logits).numpy().astype(np.float32)


def rounds_until(teacher_nonzero: int, fractions, fraction: float, prune_rate: float) -> int:
    """Pruning rounds an iterative trajectory makes before reaching ``fraction`` of the
    grid (the rounds are a function of the grid alone, so a resumed study numbers them
    the same)."""
    rounds, current = 0, teacher_nonzero
    for f in fractions:
        if f >= fraction:
            break
        target = target_params(teacher_nonzero, f)
        rounds += len(sparsity.round_targets(current, target, prune_rate))
        current = target
    return rounds


def target_params(teacher_nonzero: int, fraction: float) -> int:
    return int(round((1.0 - fraction) * teacher_nonzero))


class Study:
    """One compression study over ``cfg`` (a StudyConfig) on loaded ``data``."""

    def __init__(self, cfg, data, study_dir: StudyDir, verbose: int = 0):
        self.cfg, self.data, self.dir, self.verbose = cfg, data, study_dir, verbose

    def __call__(self) -> pd.DataFrame:
        cfg = self.cfg
        teacher, initial = self.teacher()
        teacher_nonzero = nonzero_params(teacher)
        self.teacher_probs = np.load(self.dir.teacher_probabilities())
        cells = len(cfg.methods) * len(cfg.fractions_removed) * cfg.seeds
        started, done_now = time.perf_counter(), 0
        for seed in cfg.seed_values():
            ctx = StudyContext(cfg, ReseededData(self.data, seed), teacher, initial, self.dir,
                               self.verbose)
            for name in cfg.methods:
                method = make_method(name)
                previous, previous_path = teacher, None
                for fraction in cfg.fractions_removed:
                    if (name, round(fraction, 6), seed) in self.dir.finished_cells():
                        previous_path = self.dir.cell_checkpoint(name, fraction, seed)
                        continue
                    if method.from_previous and previous_path is not None:
                        previous = self.dir.stages.load_checkpoint(previous_path)
                    target = target_params(teacher_nonzero, fraction)
                    tf_keras.utils.set_random_seed(derive_seed(seed,
                                                               int(round(fraction * 1000))))
                    start = time.perf_counter()
                    step = method.make(ctx, previous, target, seed,
                                       rounds_until(teacher_nonzero, cfg.fractions_removed,
                                                    fraction, cfg.prune_rate))
                    self.record(name, fraction, seed, step, time.perf_counter() - start)
                    previous, previous_path = step.model, None
                    done_now += 1
                    left = cells - len(self.dir.finished_cells())
                    log.info("Study: %d/%d cells done; elapsed %.0f s, ETA %.0f s",
                             cells - left, cells, time.perf_counter() - started,
                             left * (time.perf_counter() - started) / done_now)
        self.write_comparisons(teacher)
        self.write_example_images()
        from epkd_tf.study.report import write_report
        write_report(self.dir)
        self.dir.stages.mark(finished=True)
        return self.dir.tables.read("study")

    # -- stages --------------------------------------------------------------------------
    def teacher(self):
        """Trains the teacher once (or reloads it); returns it and its initial weights."""
        d, cfg = self.dir, self.cfg
        if d.teacher_done():
            log.info("Teacher: reloaded from %s", d.teacher_checkpoint())
            return (d.stages.load_checkpoint(d.teacher_checkpoint()),
                    d.stages.load_checkpoint(d.teacher_initial_checkpoint()).get_weights())
        tf_keras.utils.set_random_seed(cfg.data.seed)
        spec = self.data.spec
        model = build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                            width=cfg.teacher.width)
        initial = model.get_weights()
        d.save_checkpoint(model, d.teacher_initial_checkpoint())
        log.info("Teacher: %s, %d params, training %d epochs on %d examples%s",
                 cfg.teacher.teacher, model.count_params(), cfg.teacher.teacher_epochs,
                 spec.num_train, f" ({len(self.data.flipped_indices)} labels replaced by "
                 f"--label_noise)" if cfg.data.label_noise else "")
        history = training.train_teacher(
            model, self.data, cfg.teacher.teacher_epochs, cfg.teacher.learning_rate,
            callbacks=[training.EpochLog("Teacher", cfg.teacher.teacher_epochs)],
            verbose=self.verbose)
        d.save_checkpoint(model, d.teacher_checkpoint())
        d.write_array(d.teacher_probabilities(), array=test_probabilities(model, self.data))
        d.tables.replace("teacher_history", history)
        d.stages.mark(teacher_done=True)
        return model, initial

    def record(self, method: str, fraction: float, seed: int, step, seconds: float) -> None:
        """The cell's model and test softmax, then its study.csv row (the commit)."""
        d, model = self.dir, step.model
        probs = test_probabilities(model, self.data)
        _, y = self.data.numpy_test()
        row = {"method": method, "fraction_removed": fraction, "seed": seed,
               "nonzero_params": nonzero_params(model),
               "test_accuracy": float(np.mean(probs.argmax(1) == y)),
               "train_accuracy": training.accuracy(model, self.data.train_eval()),
               "agreement_with_teacher": compare.agreement(probs, self.teacher_probs),
               "total_params": model.count_params(), "epochs": step.epochs,
               "seconds": round(seconds, 1)}
        d.save_checkpoint(model, d.cell_checkpoint(method, fraction, seed))
        d.write_array(d.cell_probabilities(method, fraction, seed), array=probs)
        d.tables.append("study", pd.DataFrame([row]))
        log.info("Study cell %s: nonzero %d, test %.4f, train %.4f, agrees with teacher %.4f "
                 "(%d epochs, %.0f s)", cell_name(method, fraction, seed),
                 row["nonzero_params"], row["test_accuracy"], row["train_accuracy"],
                 row["agreement_with_teacher"], step.epochs, seconds)

    def write_example_images(self, per_method: int = 8) -> None:
        """test_images.npz: the stored test images that the report's grid shows (the first
        ``per_method`` each method misclassifies at the largest fraction, first seed)."""
        d, cfg = self.dir, self.cfg
        fraction, seed = cfg.fractions_removed[-1], cfg.seed_values()[0]
        _, y = self.data.numpy_test()
        chosen = set()
        for name in cfg.methods:
            predicted = np.load(d.cell_probabilities(name, fraction, seed)).argmax(1)
            chosen.update(np.flatnonzero(predicted != y)[:per_method].tolist())
        index = np.array(sorted(chosen), dtype=np.int64)
        x, labels = self.data.raw_test_images(index)
        d.write_array(d.test_images(), index=index, x=x, y=labels)

    def write_comparisons(self, teacher) -> None:
        """comparisons.csv: every pair of models (and the teacher) at each fraction."""
        d, cfg = self.dir, self.cfg
        frames = []
        for fraction in cfg.fractions_removed:
            probs: Dict[str, np.ndarray] = {"teacher": self.teacher_probs}
            paths: Dict[str, Optional[str]] = {"teacher": None}
            for name in cfg.methods:
                for seed in cfg.seed_values():
                    key = cell_name(name, fraction, seed)
                    probs[key] = np.load(d.cell_probabilities(name, fraction, seed))
                    paths[key] = d.cell_checkpoint(name, fraction, seed)

            def weights(key, paths=paths):
                if paths[key] is None:
                    return teacher.get_weights()
                return d.stages.load_checkpoint(paths[key]).get_weights()

            frames.append(compare.compare_all(fraction, probs, weights))
        d.tables.replace("comparisons", pd.concat(frames, ignore_index=True))
