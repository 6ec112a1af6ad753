"""Knowledge-distillation training wrapper (Hinton et al. 2015) for tf_keras models.

Adapted from the keras-io "Knowledge Distillation" example: :class:`Distiller` wraps a
(possibly pruned) student and a frozen teacher and trains the student on

    loss = alpha * CE(labels, student_logits)
           + (1 - alpha) * T**2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))

Both models must output logits. Temperature and alpha live in non-trainable
``tf.Variable`` s so they can be changed between ``fit`` calls without retracing.

BatchNormalization. The teacher's logits are those of its inference mode (moving
statistics): the function it is deployed as. With ``batchnorm="frozen"`` the student's
BatchNormalization layers normalise with their moving statistics too while it is
trained, and keep them (their scale and offset are still trained; dropout still drops):
the student is optimised as the function it will be deployed as, and a student equal to
its teacher is a fixed point of distillation. In Keras' training mode
(``batchnorm="batch"``) the student normalises with each batch's statistics instead;
where the teacher's moving statistics lag its weights (a short-trained teacher: momentum
0.99 keeps 72% of the initial statistics after 32 steps) the student is then asked to
reproduce, through batch statistics, a function that only the stale statistics give,
and it cannot: measured on a residual BatchNorm teacher trained one epoch on 4,000 MNIST
images (86% test), self-distillation (alpha 0, T 1, one epoch, Adam 5e-4) fell to 13% in
training mode and stayed at 86% frozen. ``batchnorm="auto"`` (the default) freezes the
statistics of a student that has been trained (a pruned or pretrained model) and trains
a student whose statistics are still Keras' initial ones (zero mean, unit variance in
every layer: a model that never saw data, distilled from scratch) in batch mode, since
frozen initial statistics would leave its normalisation layers plain affine maps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from typing import Dict, List, Optional, Tuple

import epkd_tf  # noqa: F401  (must precede TensorFlow: selects Keras 2)

import tensorflow as tf
import tf_keras

from epkd_tf import precision
from epkd_tf.config import BATCHNORM_MODES, DistillConfig
from epkd_tf.errors import ApiError
from epkd_tf.settings import default_of

#: The default weight of the hard-label loss: ``--alpha``'s.
DEFAULT_ALPHA = default_of(DistillConfig, "alpha")


@dataclasses.dataclass(frozen=True)
class _ZeroMasks:
    """(variable, 0/1 mask) pairs.

    Held in a plain (non-trackable) object so Keras' automatic attribute tracking does
    not register the student's variables a second time under the Distiller.
    """

    pairs: Tuple[Tuple[tf.Variable, tf.Tensor], ...]


@dataclasses.dataclass(frozen=True)
class _FrozenStatistics:
    """The student's trainable BatchNormalization layers, switched to inference mode
    while the student is called in a train step.

    A plain (non-trackable) holder, like :class:`_ZeroMasks`. tf_keras normalises with
    the moving statistics (and leaves them alone) exactly when a BatchNormalization layer
    is not trainable, and reads that flag when the train step is traced. Turning it off
    only around the student's call keeps every other layer (dropout) in training mode;
    the variables to differentiate are listed after the flag is back on, so the layers'
    scale and offset are still trained (the tape watches every trainable variable read).
    """

    layers: Tuple[tf_keras.layers.Layer, ...]

    @contextlib.contextmanager
    def inference_mode(self):
        for layer in self.layers:
            layer.trainable = False
        try:
            yield
        finally:
            for layer in self.layers:
                layer.trainable = True


def _resolve_batchnorm(mode: str, student) -> str:
    """``mode``, with "auto" made "batch" for a student that has trainable
    BatchNormalization layers all holding Keras' initial statistics (or not built yet),
    and "frozen" otherwise (a model without such layers is not affected either way)."""
    if mode != "auto":
        return mode
    from epkd_tf.distill.batchnorm import batchnorm_layers

    def initial(layer) -> bool:
        return not layer.built or (bool(tf.reduce_all(layer.moving_mean == 0.0))
                                   and bool(tf.reduce_all(layer.moving_variance == 1.0)))

    layers = batchnorm_layers(student)
    return "batch" if layers and all(initial(layer) for layer in layers) else "frozen"


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ApiError(f"temperature={temperature!r} is invalid: must be a real number > 0.")
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ApiError(f"temperature={temperature!r} is invalid: must be finite and > 0.")
    return float(temperature)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ApiError(f"alpha={alpha!r} is invalid: must be a real number in [0, 1].")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ApiError(f"alpha={alpha!r} is invalid: must lie in [0, 1].")
    return float(alpha)


def _per_example(fn):
    """``fn`` returning one loss per example: a tf_keras ``Loss`` is rebuilt with
    ``reduction=NONE`` (reduced losses are refused under tf.distribute and would hide the
    global batch); any other callable must already return per-example losses."""
    if isinstance(fn, tf_keras.losses.Loss) and fn.reduction != tf_keras.losses.Reduction.NONE:
        config = dict(fn.get_config(), reduction=tf_keras.losses.Reduction.NONE)
        return type(fn).from_config(config)
    return fn


def sparse_cross_entropy(labels, logits):
    """Per-example cross-entropy of integer ``labels`` (shape ``[batch]`` or
    ``[batch, 1]``) and ``logits``: the default hard-label loss."""
    labels = tf.reshape(tf.cast(labels, tf.int32), tf.shape(logits)[:-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def soft_target_kl(teacher_probs, student_probs):
    """Per-example KL(teacher || student) of two probability batches: the default
    soft-target loss. The Distiller computes this default from log-probabilities instead
    (:func:`soft_target_kl_from_logits`); this form serves callers holding probabilities."""
    teacher_probs = tf.convert_to_tensor(teacher_probs)
    ratio = tf.math.xlogy(teacher_probs, teacher_probs) - tf.math.xlogy(teacher_probs,
                                                                       student_probs)
    return tf.reduce_sum(ratio, axis=-1)


def soft_target_kl_from_logits(teacher_logits, student_logits, temperature):
    """Per-example KL(softmax(teacher / T) || softmax(student / T)), from log-softmaxes:
    exact (no clipping of small probabilities) and a few ops fewer than going through
    probabilities, which matters per step for small students.

    Its gradient with respect to the student's logits is the closed form
    ``(softmax(student / T) - softmax(teacher / T)) / T``, both terms from the same op, so
    it is exactly zero where the student's logits equal the teacher's. Autodiff of the
    value leaves round-off of about 1e-8 there, and Adam, which divides each step by the
    gradient's running scale, turns that into steps of a sizeable fraction of the
    learning rate (measured: a student equal to its teacher drifted by 0.005 per weight
    in one epoch and lost 1.2 points).

    The closed form is attached without ``tf.custom_gradient``: in a traced train step
    that registers a gradient function process-wide which TensorFlow never drops, and it
    kept every distilled student's graph, weights and optimizer slots alive for the rest
    of the run. Instead ``surrogate - stop_gradient(surrogate)`` (exactly 0 forward)
    carries the gradient: ``surrogate`` is linear in the student's logits with the closed
    form as its constant coefficients."""
    teacher_logits = tf.convert_to_tensor(teacher_logits)
    student_logits = tf.convert_to_tensor(student_logits)
    temperature = tf.cast(temperature, teacher_logits.dtype)
    log_teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    log_student = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    value = tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    gradient = tf.stop_gradient(
        (tf.nn.softmax(student_logits / temperature, axis=-1)
         - tf.nn.softmax(teacher_logits / temperature, axis=-1)) / temperature)
    surrogate = tf.reduce_sum(gradient * student_logits, axis=-1)
    return tf.stop_gradient(value) + (surrogate - tf.stop_gradient(surrogate))


def _batch_mean(per_example, sample_weight=None):
    """Mean over the (replica's) batch, weighted like Keras' SUM_OVER_BATCH_SIZE:
    ``sum(loss * weight) / examples``."""
    per_example = tf.convert_to_tensor(per_example)
    if sample_weight is not None:
        per_example = per_example * tf.cast(sample_weight, per_example.dtype)
    return tf.reduce_mean(per_example)


class Distiller(tf_keras.Model):
    """Trains ``student`` to match hard labels and a frozen ``teacher``'s soft targets.

    Batches given to ``fit``/``evaluate`` may be either

    * ``(x, y)`` - the teacher is run on ``x`` on the fly (``training=False``), or
    * ``(x, (y, teacher_logits))`` - ``teacher_logits`` are precomputed (a cache, e.g.
      from ``teacher.predict``) and the teacher is not run at all.

    A third element (sample weights) is accepted as in ordinary Keras.

    Reported metrics: training logs ``loss`` (total, plus any student regularisation
    losses), ``student_loss``, ``distillation_loss`` and the compiled metrics computed on
    the student's logits; ``evaluate``/validation logs ``loss`` (= student cross-entropy on
    hard labels) and the compiled metrics.

    Args:
      student: the tf_keras model being trained; outputs logits.
      teacher: the frozen tf_keras model; outputs logits. May be ``None`` if every batch
        supplies cached teacher logits.
      batchnorm: how the student's BatchNormalization layers normalise while it is
        trained: ``"frozen"`` with their moving statistics, which stay as they are (scale
        and offset are trained), as the student is deployed and as the teacher's logits
        are computed; ``"batch"`` with each batch's statistics, updating the moving
        averages (Keras' training mode); ``"auto"`` (default) frozen unless every such
        layer still holds its initial statistics (a student never trained), then batch.
        The mode chosen is :attr:`batchnorm`. See the module docstring.
      preserve_zeros: if True, every student variable (kernels, biases, normalisation
        parameters and statistics) that contains at least one exact 0.0 (a pruned weight)
        gets a 0/1 mask recorded now; after each optimizer step the variable is multiplied
        by its mask so every zero stays exactly zero and the student keeps the nonzero
        count it was made with. Variables without zeros are left alone.
      name: Keras model name.

    Raises:
      ApiError: ``student`` or ``teacher`` is not a tf_keras model, they are the same
        object, ``batchnorm`` is unknown, ``preserve_zeros`` is not a bool (or the
        student has no variables to mask); from :meth:`compile`, an invalid ``alpha``,
        ``temperature`` or loss function.
      ValueError: in ``fit``/``evaluate``, batches without labels, without teacher logits
        when ``teacher`` is None, or with logits of another class count. A built-in
        ValueError, not an EpkdError: TensorFlow's tracing of the train step re-raises
        built-in exception types only (any other becomes a StagingError).

    Example::

        import numpy as np
        import tf_keras
        import epkd_tf

        rng = np.random.default_rng(0)
        x = rng.normal(size=(128, 8)).astype("float32")
        y = (x[:, 0] > 0).astype("int32")

        def mlp(units):
            inputs = tf_keras.Input((8,))
            hidden = tf_keras.layers.Dense(units, activation="relu")(inputs)
            return tf_keras.Model(inputs, tf_keras.layers.Dense(2)(hidden))   # logits

        teacher, student = mlp(32), mlp(4)
        teacher.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(x, y, epochs=2, verbose=0)
        distiller = epkd_tf.Distiller(student, teacher)
        distiller.compile(tf_keras.optimizers.Adam(1e-3), alpha=0.1, temperature=4.0,
                          metrics=[tf_keras.metrics.SparseCategoricalAccuracy("accuracy")])
        history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
        print(sorted(history.history))   # accuracy, distillation_loss, loss, student_loss
    """

    def __init__(self, student, teacher=None, preserve_zeros: bool = False,
                 batchnorm: str = "auto", name: str = "distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(student, tf_keras.layers.Layer):
            raise ApiError(f"student={student!r} is invalid: must be a tf_keras model "
                           f"(build it with tf_keras, not keras).")
        if teacher is not None and not isinstance(teacher, tf_keras.layers.Layer):
            raise ApiError(f"teacher={teacher!r} is invalid: must be a tf_keras model or "
                           f"None (build it with tf_keras, not keras).")
        if teacher is student:
            raise ApiError("teacher is invalid: it is the same object as student; "
                           "distil from a separate (frozen) model.")
        if not isinstance(preserve_zeros, bool):
            raise ApiError(f"preserve_zeros={preserve_zeros!r} is invalid: must be a bool.")
        if batchnorm not in ("auto",) + BATCHNORM_MODES:
            raise ApiError(f"batchnorm={batchnorm!r} is invalid: must be one of "
                           f"{', '.join(('auto',) + BATCHNORM_MODES)}.")
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            # Belt and braces: train_step only differentiates w.r.t. the student anyway.
            teacher.trainable = False
        self.preserve_zeros = preserve_zeros
        #: The BatchNormalization mode in use, "frozen" or "batch" ("auto" resolved).
        self.batchnorm = _resolve_batchnorm(batchnorm, student)

        # Non-trainable variables (not Python floats) so a change between two `fit`
        # calls is seen by the already-traced train function.
        self._temperature = tf.Variable(3.0, trainable=False, dtype=tf.float32,
                                        name="temperature")
        self._alpha = tf.Variable(DEFAULT_ALPHA, trainable=False, dtype=tf.float32,
                                  name="alpha")

        self.student_loss_fn = sparse_cross_entropy
        self.distillation_loss_fn = soft_target_kl

        self._loss_tracker = tf_keras.metrics.Mean(name="loss")
        self._student_loss_tracker = tf_keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = tf_keras.metrics.Mean(name="distillation_loss")

        self._zero_masks = _ZeroMasks(self._record_zero_masks() if preserve_zeros else ())
        self._frozen = self._frozen_statistics() if self.batchnorm == "frozen" else None

    # ------------------------------------------------------------------ configuration
    def compile(self, optimizer="adam", metrics=None, student_loss_fn=None,
                distillation_loss_fn=None, alpha: float = DEFAULT_ALPHA,
                temperature: float = 3.0,
                **kwargs):
        """Configures training.

        Args:
          optimizer: a tf_keras optimizer (or its name).
          metrics: metrics computed on the student's logits against hard labels, e.g.
            ``[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]``.
          student_loss_fn: hard-label loss ``fn(y, student_logits)`` (a tf_keras Loss, or a
            callable returning one loss per example); default
            ``SparseCategoricalCrossentropy(from_logits=True)``.
          distillation_loss_fn: soft-target loss ``fn(teacher_probs, student_probs)``;
            default :func:`soft_target_kl`, KL(teacher || student) (computed from
            log-softmaxes).
          alpha: weight of the hard-label loss, in [0, 1]; default ``--alpha``'s.
          temperature: softmax temperature, > 0.
          **kwargs: forwarded to ``tf_keras.Model.compile`` (e.g. ``run_eagerly``);
            ``loss`` is not allowed.

        Raises:
          ApiError: ``loss`` is given, a loss function is not callable, or ``alpha`` or
            ``temperature`` is out of range.
        """
        if "loss" in kwargs:
            raise ApiError("loss is not accepted by Distiller.compile: use "
                           "student_loss_fn and distillation_loss_fn.")
        if student_loss_fn is not None and not callable(student_loss_fn):
            raise ApiError(f"student_loss_fn={student_loss_fn!r} is invalid: must be callable.")
        if distillation_loss_fn is not None and not callable(distillation_loss_fn):
            raise ApiError(f"distillation_loss_fn={distillation_loss_fn!r} is invalid: "
                           f"must be callable.")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        if student_loss_fn is not None:
            self.student_loss_fn = _per_example(student_loss_fn)
        if distillation_loss_fn is not None:
            self.distillation_loss_fn = _per_example(distillation_loss_fn)
        self.set_alpha(alpha)
        self.set_temperature(temperature)

    def set_temperature(self, temperature: float) -> None:
        """Sets the softmax temperature (> 0); takes effect at the next train step."""
        self._temperature.assign(_check_temperature(temperature))

    def set_alpha(self, alpha: float) -> None:
        """Sets the hard-label loss weight (in [0, 1]); takes effect at the next train step."""
        self._alpha.assign(_check_alpha(alpha))

    @property
    def temperature(self) -> float:
        """Current softmax temperature."""
        return float(self._temperature.numpy())

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.set_temperature(value)

    @property
    def alpha(self) -> float:
        """Current weight of the hard-label loss."""
        return float(self._alpha.numpy())

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.set_alpha(value)

    @property
    def masked_variables(self) -> List[tf.Variable]:
        """Student variables whose zeros are re-imposed after every optimizer step."""
        return [v for v, _ in self._zero_masks.pairs]

    @property
    def metrics(self):
        """Loss trackers followed by the compiled metrics (all reset by Keras per epoch)."""
        metrics = [self._loss_tracker, self._student_loss_tracker,
                   self._distillation_loss_tracker]
        compiled = getattr(self, "compiled_metrics", None)
        if compiled is not None:
            metrics += compiled.metrics
        return metrics

    # ------------------------------------------------------------------ sparsity masks
    def _record_zero_masks(self):
        # Unbuilt Sequential models raise on variable access; subclassed ones return [].
        variables = self.student.variables if self.student.built else []
        if not variables:
            raise ApiError("student is invalid for preserve_zeros=True: it has no "
                           "variables yet; build it (call it once) before distilling.")
        pairs = []
        for var in variables:
            # Every exact zero a pruner left is kept, biases and normalisation parameters
            # included: a bias that woke up would put the student above the size its
            # candidate was ranked at.
            mask = tf.cast(tf.not_equal(var, 0), var.dtype)
            if bool(tf.reduce_any(tf.equal(mask, 0))):
                pairs.append((var, tf.constant(mask)))
        return tuple(pairs)

    def _frozen_statistics(self) -> Optional[_FrozenStatistics]:
        from epkd_tf.distill.batchnorm import batchnorm_layers
        layers = tuple(batchnorm_layers(self.student))
        return _FrozenStatistics(layers) if layers else None

    def _apply_zero_masks(self) -> None:
        for var, mask in self._zero_masks.pairs:
            var.assign(var * mask)

    # ------------------------------------------------------------------ losses
    def call(self, inputs, training=None):
        """Returns the student's logits."""
        return self.student(inputs, training=training)

    def _teacher_logits(self, x):
        if self.teacher is None:
            raise ValueError("teacher is None, so every batch must be (x, (y, "
                             "teacher_logits)) with cached teacher logits.")
        return tf.stop_gradient(self.teacher(x, training=False))

    def compute_losses(self, x, y, teacher_logits=None, sample_weight=None,
                       training: bool = False) -> Dict[str, tf.Tensor]:
        """Computes the distillation objective on one batch (used by ``train_step``).

        Args:
          x: student (and teacher) input batch.
          y: integer hard labels.
          teacher_logits: precomputed teacher logits; if None the teacher is run on ``x``.
          sample_weight: optional per-example weights passed to both losses.
          training: passed to the student call.

        Returns:
          dict with scalar ``loss``, ``student_loss``, ``distillation_loss`` (the latter
          already multiplied by T**2, before the (1 - alpha) weight) and the tensors
          ``student_logits`` and ``teacher_logits``.
        """
        if teacher_logits is None:
            teacher_logits = self._teacher_logits(x)
        else:
            teacher_logits = tf.stop_gradient(tf.convert_to_tensor(teacher_logits))
        student_logits = self.student(x, training=training)
        s_dim, t_dim = student_logits.shape[-1], teacher_logits.shape[-1]
        if s_dim is not None and t_dim is not None and s_dim != t_dim:
            raise ValueError(f"teacher_logits has {t_dim} classes but the student outputs "
                             f"{s_dim}; they must match.")
        dtype = student_logits.dtype
        temperature = tf.cast(self._temperature, dtype)
        alpha = tf.cast(self._alpha, dtype)
        teacher_logits = tf.cast(teacher_logits, dtype)

        student_loss = _batch_mean(self.student_loss_fn(y, student_logits), sample_weight)
        # T**2 keeps the soft-target gradient magnitude comparable across temperatures
        # (Hinton et al. 2015, section 2).
        if self.distillation_loss_fn is soft_target_kl:
            # The default, from log-softmaxes: same value, exact and cheaper per step.
            soft = soft_target_kl_from_logits(teacher_logits, student_logits, temperature)
        else:
            soft = self.distillation_loss_fn(tf.nn.softmax(teacher_logits / temperature, -1),
                                             tf.nn.softmax(student_logits / temperature, -1))
        distillation_loss = _batch_mean(soft, sample_weight) * tf.square(temperature)
        loss = alpha * student_loss + (1.0 - alpha) * distillation_loss
        return {"loss": loss, "student_loss": student_loss,
                "distillation_loss": distillation_loss,
                "student_logits": student_logits, "teacher_logits": teacher_logits}

    @staticmethod
    def _unpack(data):
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("batches must contain labels: (x, y) or (x, (y, teacher_logits)).")
        teacher_logits = None
        if isinstance(y, (tuple, list)):
            if len(y) != 2:
                raise ValueError(f"y has {len(y)} parts; give labels y or the pair "
                                 f"(y, teacher_logits).")
            y, teacher_logits = y
        return x, y, teacher_logits, sample_weight

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        """One optimizer step on the student; the teacher is only run in inference mode."""
        x, y, teacher_logits, sample_weight = self._unpack(data)
        if teacher_logits is None:
            # Outside the tape: the teacher's activations need not be recorded.
            teacher_logits = self._teacher_logits(x)
        frozen = self._frozen.inference_mode() if self._frozen else contextlib.nullcontext()
        with tf.GradientTape() as tape:
            with frozen:
                losses = self.compute_losses(x, y, teacher_logits,
                                             sample_weight=sample_weight, training=True)
            total = losses["loss"]
            if self.student.losses:  # weight regularisers of the student, as Keras would
                total = total + tf.add_n(self.student.losses)
            # Under tf.distribute each replica sees 1/n of the global batch and the
            # optimizer sums the replicas' gradients: dividing the replica's mean by n makes
            # that sum the gradient of the global-batch mean (1 without a strategy).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / tf.cast(replicas, total.dtype)
            # A float16 student's optimizer scales the loss (epkd_tf.precision).
            scaled = precision.scale_loss(self.optimizer, scaled)
        variables = self.student.trainable_variables
        gradients = precision.unscale_gradients(self.optimizer,
                                                tape.gradient(scaled, variables))
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._apply_zero_masks()

        batch = tf.shape(losses["student_logits"])[0]
        self._loss_tracker.update_state(total, sample_weight=batch)
        self._student_loss_tracker.update_state(losses["student_loss"], sample_weight=batch)
        self._distillation_loss_tracker.update_state(losses["distillation_loss"],
                                                     sample_weight=batch)
        self.compiled_metrics.update_state(y, losses["student_logits"], sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """Evaluates the student on hard labels: ``loss`` = student loss, plus compiled metrics."""
        x, y, _, sample_weight = self._unpack(data)
        logits = self.student(x, training=False)
        loss = _batch_mean(self.student_loss_fn(y, logits), sample_weight)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(logits)[0])
        self.compiled_metrics.update_state(y, logits, sample_weight)
        results = {"loss": self._loss_tracker.result()}
        results.update({m.name: m.result() for m in self.compiled_metrics.metrics})
        return results
