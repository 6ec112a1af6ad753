"""Training in epochs that survives interruption: teacher training and every distillation
go through :func:`fit_epochs`.

* Each epoch's batches are built from (``--seed``, epoch) alone (``batches(epoch)``), not
  from how many epochs a dataset object has already served, so a run resumed at epoch
  ``e`` sees the order an uninterrupted run sees there; resuming at step ``k`` skips the
  first ``k`` batches of that order (``.skip(k)``: the skipped batches are still read and
  augmented, which keeps the augmentation's random draws in step).
* A :class:`TrainingCheckpoint` is written after every epoch and, with
  ``--checkpoint_every``, every N steps or minutes inside one: the weights, the
  optimizer's variables, the epoch's metric accumulators (so the epoch's mean loss and
  training accuracy come out as without the kill), the epoch and step and the history so
  far. A resumed training continues from it, verified first; with op determinism on, the
  result equals the uninterrupted run's. Dropout is the exception: tf_keras' dropout draws
  from stateful random ops whose state lives in the process, so a model with dropout
  resumed inside a training gets other (equally random) masks from there on.
* :class:`StepProgress` logs a line inside long epochs (steps, examples per second, ETA).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import types
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tf_keras

from epkd_tf import faults
from epkd_tf.files import digest_mismatch, file_digest

log = logging.getLogger("epkd_tf")

FORMAT = 1


def _trained(model):
    """The model whose weights a training changes: a Distiller's student, else the model
    (a wrapper such as the study's MaskedClassifier shares its inner model's variables)."""
    return getattr(model, "student", model)


def _metric_variables(model) -> List:
    return [v for m in model.metrics for v in m.variables]


def _build_optimizer(model) -> None:
    """Creates the optimizer's variables (moments) now, as the first step would, so that a
    checkpoint's values can be assigned to them."""
    optimizer = model.optimizer
    with model.distribute_strategy.scope():
        optimizer.build(_trained(model).trainable_variables)


class TrainingCheckpoint:
    """The checkpoint of one unfinished training: ``checkpoints/partial/<name>.npz`` (the
    arrays) and ``<name>.json`` (epoch, step, history, the settings it belongs to and the
    SHA-256 of the arrays), each written atomically, the JSON last. Scratch: not a file of a
    completed stage; the stage ledger removes it when its stage completes.

    Args:
        run: the :class:`~epkd_tf.records.run_dir.RunDir`.
        name: the training (``teacher``, ``finetune_<k>``).
        identity: what the training depends on (epochs, steps per epoch, batch size,
            seed, learning rate...): a checkpoint written with another is not used.
        every: ``--checkpoint_every`` as (steps, seconds); (0, 0): after epochs only.
    """

    def __init__(self, run, name: str, identity: Dict, every: Tuple[int, float] = (0, 0.0)):
        self.run, self.name = run, name
        self.identity = json.loads(json.dumps(identity))     # as it reads back
        self.steps, self.seconds = every
        self.arrays = run.partial_checkpoint(name, "npz")
        self.meta = run.partial_checkpoint(name, "json")

    def save(self, model, epoch: int, step: int, history: Dict[str, list],
             metrics: Sequence[np.ndarray] = ()) -> None:
        """Writes the checkpoint of ``model`` (compiled, training) at ``step`` of epoch
        ``epoch`` (0-based; step 0: the epoch has not begun), atomically.

        Args:
            model: the model being fitted (its optimizer's variables are saved too).
            epoch: epochs completed.
            step: steps of epoch ``epoch`` completed.
            history: the per-epoch logs of the completed epochs.
            metrics: the epoch's metric accumulators (mid-epoch only).
        """
        weights = _trained(model).get_weights()
        optimizer = [v.numpy() for v in model.optimizer.variables]
        arrays = {f"w{i}": a for i, a in enumerate(weights)}
        arrays.update({f"o{i}": a for i, a in enumerate(optimizer)})
        arrays.update({f"m{i}": np.asarray(a) for i, a in enumerate(metrics)})
        self.run.write_array(self.arrays, **arrays)
        meta = {"format": FORMAT, "name": self.name, "identity": self.identity,
                "epoch": int(epoch), "step": int(step),
                "counts": [len(weights), len(optimizer), len(metrics)],
                "history": {k: [float(x) for x in v] for k, v in history.items()},
                "arrays": file_digest(self.arrays)}
        self.run.write_text(os.path.relpath(self.meta, self.run.root),
                            json.dumps(meta, indent=1))

    def remove(self) -> None:
        """Removes the checkpoint (its training is over)."""
        for path in (self.meta, self.arrays):
            if os.path.lexists(path):
                os.remove(path)

    def read(self, epochs: int, steps_per_epoch: int) -> Optional[dict]:
        """The checkpoint's record, or None when there is none.

        Raises:
            ValueError: it is damaged or belongs to other settings (why).
        """
        if not os.path.lexists(self.meta):
            return None
        try:
            with open(self.meta, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"not readable ({' '.join(str(err).split())[:80]})") from None
        fields = {"format": int, "name": str, "identity": dict, "epoch": int, "step": int,
                  "counts": list, "history": dict, "arrays": dict}
        if not (isinstance(meta, dict)
                and all(isinstance(meta.get(k), t) for k, t in fields.items())):
            raise ValueError("not a training checkpoint record")
        if meta["format"] != FORMAT or meta["name"] != self.name:
            raise ValueError(f"written for {meta['name']!r}, format {meta['format']}")
        if meta["identity"] != self.identity:
            raise ValueError("written with other settings")
        epoch, step = meta["epoch"], meta["step"]
        if not (0 <= epoch <= epochs and 0 <= step < steps_per_epoch
                and (step == 0 or epoch < epochs)):
            raise ValueError(f"epoch {epoch}, step {step} lie outside the training's "
                             f"{epochs} epochs of {steps_per_epoch} steps")
        problem = (digest_mismatch(self.arrays, meta["arrays"])
                   if os.path.isfile(self.arrays) else "missing")
        if problem:
            raise ValueError(f"its arrays are {problem}")
        return meta

    def restore(self, model, epochs: int, steps_per_epoch: int) -> Optional[dict]:
        """Loads the checkpoint into ``model`` (compiled; weights and optimizer state) when
        there is one that checks out; a damaged one, or one of other settings, is removed
        with a warning line (and the training's TensorBoard logs) and the training
        starts from its beginning.

        Returns:
            ``{"epoch", "step", "history", "metrics"}``, or None (start afresh).
        """
        try:
            meta = self.read(epochs, steps_per_epoch)
            if meta is None:
                return None
            return self._load(model, meta)
        except ValueError as err:
            log.warning("warning: %s is not usable (%s); %s training starts from its "
                        "beginning", os.path.relpath(self.meta, self.run.root), err,
                        self.name)
            self.remove()
            # The logs of the epochs it would have continued go too: they start again.
            board = self.run.tensorboard_dir(self.name)
            if os.path.isdir(board) and not os.path.islink(board):
                shutil.rmtree(board)
            return None

    def _load(self, model, meta: dict) -> dict:
        n_weights, n_optimizer, n_metrics = meta["counts"]
        try:
            with np.load(self.arrays, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"its arrays cannot be read ({err})") from None
        try:
            weights = [arrays[f"w{i}"] for i in range(n_weights)]
            optimizer = [arrays[f"o{i}"] for i in range(n_optimizer)]
            metrics = [arrays[f"m{i}"] for i in range(n_metrics)]
        except KeyError as err:
            raise ValueError(f"array {err} is missing") from None
        trained = _trained(model)
        expected = [tuple(w.shape) for w in trained.weights]
        if [tuple(w.shape) for w in weights] != expected:
            raise ValueError("its weights do not fit the model")
        _build_optimizer(model)
        variables = model.optimizer.variables
        if [tuple(a.shape) for a in optimizer] != [tuple(v.shape) for v in variables]:
            raise ValueError("its optimizer state does not fit the model")
        trained.set_weights(weights)
        for variable, value in zip(variables, optimizer):
            variable.assign(value)
        return {"epoch": meta["epoch"], "step": meta["step"],
                "history": {k: list(v) for k, v in meta["history"].items()},
                "metrics": metrics}


class StepProgress(tf_keras.callbacks.Callback):
    """A log line inside an epoch at most every :attr:`INTERVAL` seconds: steps done of
    the epoch, examples per second and the epoch's ETA. An epoch shorter than that prints
    none (its end is :class:`epkd_tf.training.EpochLog`'s line). Reads no tensor: the
    steps run on undisturbed.

    Args:
        what: what trains (``Teacher``, ``Iteration 2 distillation (T=4)``).
        epochs: the training's epochs.
        steps: steps per epoch.
        batch_size: examples per step.
    """

    INTERVAL = 60.0

    def __init__(self, what: str, epochs: int, steps: int, batch_size: int):
        super().__init__()
        self._supports_tf_logs = True
        self.what, self.epochs, self.steps, self.batch_size = what, epochs, steps, batch_size
        self.skip = 0
        self._epoch, self._started, self._last = 0, 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._started = self._last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last < self.INTERVAL:
            return
        self._last = now
        here = batch + 1 - self.skip          # steps this process ran in this epoch
        elapsed = max(now - self._started, 1e-9)
        eta = (self.steps - batch - 1) * elapsed / max(here, 1)
        log.info("%s epoch %d/%d: step %d/%d, %.0f examples/s, epoch ETA %.0f s",
                 self.what, self._epoch + 1, self.epochs, batch + 1, self.steps,
                 here * self.batch_size / elapsed, eta)


class _Callbacks(tf_keras.callbacks.Callback):
    """The caller's callbacks, seen as one training although :func:`fit_epochs` fits one
    epoch per ``fit``: ``on_train_begin`` is delivered once, ``on_train_end`` by
    :meth:`end`, and batch numbers count from the epoch's first step also after a
    resumed epoch's skipped ones (``offset``)."""

    def __init__(self, callbacks: Sequence):
        super().__init__()
        self._supports_tf_logs = True
        self.callbacks = list(callbacks)
        self.offset = 0
        self._begun = False

    def _logs(self, callback, logs):
        if logs and not getattr(callback, "_supports_tf_logs", False):
            return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in logs.items()}
        return logs

    def _each(self, hook: str, *args, logs=None):
        for callback in self.callbacks:
            getattr(callback, hook)(*args, logs=self._logs(callback, logs))

    def set_model(self, model):
        # Once: fit sets the same model every epoch, and a TensorBoard callback given it
        # again would start new event files.
        if model is not self.model:
            super().set_model(model)
            for callback in self.callbacks:
                callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        if not self._begun:
            self._begun = True
            self._each("on_train_begin", logs=logs)

    def end(self, logs=None):
        if self._begun:
            self._each("on_train_end", logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._each("on_epoch_begin", epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self._each("on_epoch_end", epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._each("on_train_batch_begin", batch + self.offset, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self._each("on_train_batch_end", batch + self.offset, logs=logs)

    def on_test_begin(self, logs=None):
        self._each("on_test_begin", logs=logs)

    def on_test_end(self, logs=None):
        self._each("on_test_end", logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._each("on_test_batch_begin", batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        self._each("on_test_batch_end", batch, logs=logs)


class _Steps(tf_keras.callbacks.Callback):
    """Per step of one epoch: puts a resumed epoch's metric accumulators back after its
    first step (they are only built by then; adding the saved sums to that step's
    reproduces the uninterrupted additions exactly), writes the mid-epoch checkpoints
    --checkpoint_every asks for, and is the fault-injection point
    ``<name>_epoch_<e>_step_<k>`` (after step k of epoch e, its checkpoint written)."""

    def __init__(self, name: str, epoch: int, skip: int, steps: int,
                 checkpoint: Optional[TrainingCheckpoint], history: Dict[str, list],
                 metrics: Optional[List[np.ndarray]], timer: List[float]):
        super().__init__()
        self._supports_tf_logs = True
        self.name, self.epoch, self.skip, self.steps = name, epoch, skip, steps
        self.checkpoint, self.history, self.metrics = checkpoint, history, metrics
        self.timer = timer      # [time of the last checkpoint], shared by the epochs

    def on_train_batch_end(self, batch, logs=None):
        step = self.skip + batch + 1
        if self.metrics is not None:
            variables = _metric_variables(self.model)
            if len(variables) != len(self.metrics):
                raise RuntimeError("the resumed epoch's metrics do not fit its checkpoint")
            for variable, saved in zip(variables, self.metrics):
                variable.assign_add(saved.astype(variable.dtype.as_numpy_dtype))
            self.metrics = None
        checkpoint = self.checkpoint
        if checkpoint is not None and step < self.steps and (
                (checkpoint.steps and step % checkpoint.steps == 0)
                or (checkpoint.seconds and
                    time.monotonic() - self.timer[0] >= checkpoint.seconds)):
            checkpoint.save(self.model, self.epoch, step, self.history,
                            [v.numpy() for v in _metric_variables(self.model)])
            self.timer[0] = time.monotonic()
        faults.reached(f"{self.name}_epoch_{self.epoch + 1}_step_{step}")


def fit_epochs(model, batches: Callable[[int], object], epochs: int, *, name: str,
               steps_per_epoch: int, batch_size: int, what: Optional[str] = None,
               callbacks: Sequence = (), validation_data=None, verbose: int = 0,
               checkpoint: Optional[TrainingCheckpoint] = None):
    """Fits the compiled ``model`` for ``epochs``, one ``fit`` per epoch on
    ``batches(epoch)``, resuming from ``checkpoint`` when it holds a usable one.

    Args:
        model: the compiled model (a classifier or a Distiller).
        batches: the training batches of epoch ``e`` (0-based), built from the seed and
            ``e`` only.
        epochs: the training's epochs.
        name: the training's name in fault points (``<name>_epoch_<e>`` after epoch e,
            its checkpoint written; ``<name>_epoch_<e>_step_<k>``) and log lines.
        steps_per_epoch: batches per epoch.
        batch_size: examples per batch (progress lines).
        what: how progress lines name the training (default ``name``).
        callbacks: Keras callbacks, called as for one ``fit`` of every epoch.
        validation_data: evaluated after every epoch, or None.
        verbose: Keras' verbosity.
        checkpoint: where the training's checkpoints go, or None (none written).

    Returns:
        An object with ``history`` (the per-epoch logs, as ``History.history``), covering
        every epoch, those before a resume included. Training stops after an epoch
        in which a callback set ``model.stop_training``.
    """
    start, skip, history, metrics = 0, 0, {}, None
    if checkpoint is not None:
        state = checkpoint.restore(model, epochs, steps_per_epoch)
        if state is not None:
            start, skip, history = state["epoch"], state["step"], state["history"]
            metrics = state["metrics"] if skip else None
            if start < epochs:
                log.info("%s: resumed at epoch %d/%d, step %d/%d (from its checkpoint)",
                         what or name, start + 1, epochs, skip, steps_per_epoch)
            else:
                log.info("%s: already trained (from its checkpoint)", what or name)
    wrapped = _Callbacks(callbacks)
    progress = StepProgress(what or name, epochs, steps_per_epoch, batch_size)
    timer = [time.monotonic()]
    logs = None
    for epoch in range(start, epochs):
        offset = skip if epoch == start else 0
        dataset = batches(epoch)
        if offset:
            dataset = dataset.skip(offset)
        wrapped.offset = progress.skip = offset
        steps = _Steps(name, epoch, offset, steps_per_epoch, checkpoint, history,
                       metrics if offset else None, timer)
        fitted = model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch,
                           validation_data=validation_data, verbose=verbose,
                           callbacks=[steps, wrapped, progress])
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        logs = {k: v[-1] for k, v in history.items()}
        if model.stop_training:
            break
        if checkpoint is not None:
            checkpoint.save(model, epoch + 1, 0, history)
            timer[0] = time.monotonic()
        faults.reached(f"{name}_epoch_{epoch + 1}")
    wrapped.end(logs)
    return types.SimpleNamespace(history=history)
