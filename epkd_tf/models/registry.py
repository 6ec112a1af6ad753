"""Registry of teacher architectures, built by name for a dataset's input shape and classes.

Besides the registered built-ins, ``applications.<Name>`` builds any
``tf_keras.applications`` model (``applications.ResNet50``, ``applications.MobileNetV2``)
untrained, with a logits head for the dataset's classes.
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Callable, Sequence

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from epkd_tf.registry import Registry

ModelBuilder = Callable[..., "tf_keras.Model"]  # noqa: F821
#: Teacher architectures by name: ``builder(input_shape, num_classes, width=1.0)``. The
#: zoo's modules import tf_keras inside their builders, so the names are known (and flags
#: validated) before TensorFlow loads.
MODELS: Registry = Registry("teacher")
APPLICATIONS_PREFIX = "applications."


def register_model(name: str):
    """Decorator: registers a teacher architecture, ``builder(input_shape, num_classes,
    width=1.0)``, as ``name`` for ``--teacher`` (and the study's teachers).

    The builder returns a flat functional tf_keras model for inputs of ``input_shape``
    (H, W, C) that outputs ``num_classes`` logits (no softmax); ``width`` multiplies the
    channel / unit count of every hidden layer.

    Args:
      name: the teacher's name (not empty, not registered yet).

    Returns:
      The decorator; it returns the builder unchanged.

    Raises:
      ApiError: ``name`` is empty or already registered.

    Example::

        import tf_keras
        import epkd_tf
        from epkd_tf.models import build_model

        @epkd_tf.register_model("tiny_mlp")
        def tiny_mlp(input_shape, num_classes, width=1.0):
            inputs = tf_keras.Input(input_shape)
            hidden = tf_keras.layers.Flatten()(inputs)
            hidden = tf_keras.layers.Dense(max(1, round(32 * width)), activation="relu")(hidden)
            return tf_keras.Model(inputs, tf_keras.layers.Dense(num_classes)(hidden))

        model = build_model("tiny_mlp", (8, 8, 1), num_classes=4, width=0.5)
        assert model.layers[2].units == 16
        config = epkd_tf.with_flags(epkd_tf.RunConfig(), teacher="tiny_mlp")   # a --teacher now
    """
    return MODELS.register(name)


def model_names() -> list:
    """Names of every registered (built-in) teacher, sorted; ``applications.*`` not included."""
    import epkd_tf.models  # noqa: F401  (the zoo registers itself on import)
    return MODELS.names()


def application_names() -> list:
    """Names of the ``tf_keras.applications`` model functions (``ResNet50``, ...), sorted."""
    # The model builders are the public capitalised callables; the lower-case attributes
    # are modules (``resnet``, ``mobilenet_v2``) holding preprocessing helpers.
    import tf_keras
    return sorted(name for name in dir(tf_keras.applications)
                  if name[:1].isupper() and callable(getattr(tf_keras.applications, name)))


def _check_width(width) -> float:
    try:
        value = float(width)
    except (TypeError, ValueError):
        raise ValueError(f"width must be a positive number, got {width!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}.")
    return value


def _build_application(app_name: str, input_shape, num_classes: int, width: float):
    known = application_names()
    if app_name not in known:
        close = difflib.get_close_matches(app_name, known, n=5, cutoff=0.5)
        examples = close or ["ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121",
                             "InceptionV3", "Xception"]
        raise ValueError(
            f"Unknown tf_keras application {app_name!r}; try e.g. "
            f"{', '.join(APPLICATIONS_PREFIX + n for n in examples)} "
            f"({len(known)} available, see tf_keras.applications).")
    import tf_keras
    fn = getattr(tf_keras.applications, app_name)
    kwargs = dict(weights=None, include_top=True, classes=num_classes,
                  input_shape=tuple(input_shape), classifier_activation=None)
    if "alpha" in inspect.signature(fn).parameters:
        kwargs["alpha"] = width          # MobileNet*: the width multiplier is their alpha
    elif width != 1.0:
        raise ValueError(f"width must be 1.0 for {APPLICATIONS_PREFIX}{app_name}: only the "
                         f"MobileNet applications take a width multiplier (alpha), got {width}.")
    # weights=None: nothing is downloaded; classifier_activation=None: logits, like the zoo.
    return fn(**kwargs)


def build_model(name: str, input_shape: Sequence[int], num_classes: int,
                width: float = 1.0) -> "tf_keras.Model":  # noqa: F821
    """Builds teacher ``name`` for inputs of ``input_shape`` (H, W, C) and ``num_classes``.

    ``name`` is a registered model (see :func:`model_names`) or ``applications.<Name>``
    for a ``tf_keras.applications`` model. ``width`` (> 0) multiplies every hidden layer's
    channel / unit count (rounded, at least 1); applications accept it only as the alpha
    of the MobileNets. Every model is a flat functional ``tf_keras`` model that outputs
    logits (no softmax), so distillation can soften them with a temperature.
    """
    width = _check_width(width)
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes, got {num_classes}.")
    shape = tuple(int(d) for d in input_shape)
    if name.startswith(APPLICATIONS_PREFIX):
        return _build_application(name[len(APPLICATIONS_PREFIX):], shape, int(num_classes),
                                  width)
    if name not in model_names():
        raise ValueError(f"{MODELS.unknown_message(name)}, or {APPLICATIONS_PREFIX}<Name> "
                         "for a tf_keras.applications model (e.g. applications.ResNet50).")
    return MODELS.get(name)(shape, int(num_classes), width=width)
