"""Per-dataset preprocessing ("recipes") and their registry.

A :class:`DatasetRecipe` maps a stored example ``(image uint8 HxWxC, label)`` to the model
input ``(float32 image, int32 label)``: ``preprocess`` for evaluation, ``augment`` for
training. Registered by TFDS name (:data:`RECIPES`, an :class:`epkd_tf.registry.Registry`):
``cifar10``/``cifar100`` (CIFAR mean/std normalisation; training: zero-pad 4 + random crop +
flip), ``imagenet2012`` (shorter side to round(1.14 x --image_size), random / central crop,
flip, ImageNet mean/std; --image_size defaults to 224), MNIST-likes and everything else
([0, 1] scaling, bilinear resize to --image_size if given). Adding one::

    @register_dataset("my_ds", augment=my_augment)     # fixed-size preprocessing
    def _my_ds(image, label): ...  # per-example (uint8 HxWxC, int) -> (float32, int32)

    @register_recipe("my_other_ds")                     # depends on --image_size
    def _factory(image_size): return DatasetRecipe(...)
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import dataclasses
from typing import Callable, List, Optional, Tuple

import tensorflow as tf

from epkd_tf.config import DATASET_ALIASES
from epkd_tf.errors import ApiError
from epkd_tf.registry import Registry

__all__ = ["DatasetRecipe", "Preprocess", "Augment", "RECIPES", "DATASET_ALIASES",
           "DEFAULT_RECIPE", "MODEL_INPUT_RECIPE", "register_recipe", "register_dataset",
           "get_recipe", "scale_to_unit", "resize_square", "with_resize", "normalize",
           "resize_shorter_side", "central_crop", "cifar_pad_crop_flip"]

Preprocess = Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]
Augment = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]


@dataclasses.dataclass(frozen=True)
class DatasetRecipe:
    """Per-dataset preprocessing, built for one image size.

    Both functions receive one *decoded* example ``(image uint8 HxWxC, label)`` -- the
    in-memory cache (if any) holds these raw uint8 images -- and return
    ``(image float32, label int32)`` at the model's input size.

    * ``preprocess`` is the evaluation transform (``train_eval``, ``test``, ``sample``); it
      must be deterministic.
    * ``augment`` (optional) is the training transform (``train`` only); it takes a third
      argument, a stateless seed (int64 tensor of shape [2]) that differs per example and
      epoch, and must draw all its randomness from it (``tf.image.stateless_random_*``)
      so that training is reproducible. Without it ``train`` uses ``preprocess``.
    * ``default_image_size``: the side used when ``--image_size`` is not given (needed by
      datasets whose images vary in size, e.g. 224 for imagenet2012).
    * ``batchable``: ``preprocess`` gives the same result on a batch ``(N, H, W, C)`` of
      equally sized images as on each image alone (element-wise arithmetic, batched
      resizes). The pipelines then batch first and preprocess whole batches: one op per
      batch instead of one per example, which made the input pipeline, not the model, the
      bottleneck of small models.
    """

    name: str
    preprocess: Preprocess
    augment: Optional[Augment] = None
    default_image_size: Optional[int] = None
    batchable: bool = False


def scale_to_unit(image: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Default preprocessing: float32 image scaled from [0, 255] to [0, 1], int32 label.
    Element-wise, so it also serves a batch of HxWxC images."""
    image = tf.cast(image, tf.float32) / 255.0
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    return image, tf.cast(label, tf.int32)


def resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear (antialiased when shrinking) resize of an HxWxC image (or a batch of them)
    to size x size; float32 output in the input's value range. The aspect ratio is not
    kept."""
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    return tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear",
                           antialias=True)


def with_resize(fn: Preprocess, size: Optional[int]) -> Preprocess:
    """``fn`` applied to the image resized to ``size`` x ``size`` (``fn`` itself if None)."""
    if size is None:
        return fn

    def resized(image, label):
        return fn(resize_square(image, size), label)

    resized.__name__ = f"{getattr(fn, '__name__', 'preprocess')}_resized_{size}"
    return resized


DEFAULT_RECIPE = DatasetRecipe(name="default", preprocess=scale_to_unit, batchable=True)


def as_model_input(image: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """In-memory data: the image already is the model input (float32, no scaling)."""
    return tf.cast(image, tf.float32), tf.cast(label, tf.int32)


# The recipe of in-memory data (:func:`epkd_tf.data.from_arrays`): arrays are the model's
# inputs as given, so evaluation "preprocessing" only fixes the dtypes.
MODEL_INPUT_RECIPE = DatasetRecipe(name="model_inputs", preprocess=as_model_input,
                                   batchable=True)

# A factory builds a dataset's recipe for one image size: factory(image_size or None).
RecipeFactory = Callable[[Optional[int]], DatasetRecipe]
#: TFDS dataset name -> recipe factory. A name is registered once (a second registration
#: is refused rather than silently replacing the first); ``RECIPES.unregister(name)`` first
#: to replace one on purpose.
RECIPES: Registry[RecipeFactory] = Registry("dataset recipe")

# DATASET_ALIASES (user-facing names that differ from the TFDS name) live in
# epkd_tf.config, which validates flags before TensorFlow loads.


def register_recipe(*names: str):
    """Decorator registering ``factory(image_size: Optional[int]) -> DatasetRecipe`` for
    TFDS ``names``; ``image_size`` is ``--image_size`` (None when not given). A name
    that already has a recipe is refused (ApiError)."""
    if not names:
        raise ApiError("register_recipe needs at least one TFDS dataset name.")

    def decorator(factory: RecipeFactory) -> RecipeFactory:
        for name in names:
            RECIPES.register(name, factory)
        return factory

    return decorator


def register_dataset(*names: str, augment: Optional[Augment] = None,
                     batchable: bool = False):
    """Decorator registering a per-example preprocessing function for TFDS ``names``.

    The decorated function maps ``(image uint8, label)`` to ``(float32 image, int32
    label)``; it replaces the default scaling to [0, 1] wherever those datasets are
    loaded (:func:`epkd_tf.load_data`, ``--dataset``). With ``--image_size`` the image it
    sees is already resized.

    Args:
      *names: the TFDS dataset names (or names of imported datasets) it applies to.
      augment: an optional train-only transform ``(image uint8, label, seed)`` drawing
        all its randomness from the stateless ``seed`` (see :class:`DatasetRecipe`).
      batchable: the function works unchanged on a batch of images (see
        :class:`DatasetRecipe`); the pipelines then preprocess whole batches.

    Returns:
      The decorator; it returns the function unchanged.

    Raises:
      ApiError: no name is given, or a name already has a recipe.

    Example::

        import tensorflow as tf
        import epkd_tf

        @epkd_tf.register_dataset("my_digits")
        def centred(image, label):                    # [0, 255] to [-1, 1]
            return tf.cast(image, tf.float32) / 127.5 - 1.0, tf.cast(label, tf.int32)

        recipe = epkd_tf.data.get_recipe("my_digits")     # what load_data will use
        image, label = recipe.preprocess(tf.fill([8, 8, 1], tf.constant(255, tf.uint8)), 2)
        assert float(tf.reduce_max(image)) == 1.0
    """
    if not names:
        raise ApiError("register_dataset needs at least one TFDS dataset name.")

    def decorator(fn: Preprocess) -> Preprocess:
        for name in names:
            plain = DatasetRecipe(name=name, preprocess=fn, augment=augment,
                                  batchable=batchable)

            def factory(image_size, plain=plain, fn=fn, name=name):
                if image_size is None:
                    return plain
                aug = None
                if augment is not None:
                    def aug(image, label, seed):
                        return augment(resize_square(image, image_size), label, seed)
                return DatasetRecipe(name=name, preprocess=with_resize(fn, image_size),
                                     augment=aug, batchable=batchable)

            RECIPES.register(name, factory)
        return fn

    return decorator


def get_recipe(name: str, image_size: Optional[int] = None) -> DatasetRecipe:
    """The recipe registered for TFDS ``name`` (or an alias of it; otherwise the default
    [0, 1] scaling recipe), built for ``image_size`` (None: the dataset's own size)."""
    name = DATASET_ALIASES.get(name, name)
    if name not in RECIPES:
        if image_size is None:
            return DEFAULT_RECIPE
        return DatasetRecipe(name="default", preprocess=with_resize(scale_to_unit, image_size),
                             batchable=True)
    return RECIPES.get(name)(image_size)


@register_dataset("mnist", "fashion_mnist", "kmnist", batchable=True)
def _grayscale_unit(image: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """MNIST-like datasets: 28x28x1 uint8 scaled to [0, 1]."""
    return scale_to_unit(image, label)


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
    """``(image / 255 - mean) / std`` per channel, float32."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _split_seed(seed: tf.Tensor, n: int) -> List[tf.Tensor]:
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n)
    return [seeds[i] for i in range(n)]


# CIFAR-10 training-set statistics (also used for CIFAR-100, as is customary).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_PAD = 4


def cifar_pad_crop_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """He et al. 2016 augmentation on a uint8 HxWxC image: zero-pad 4 px per side, random
    HxW crop, random horizontal flip; stateless, all randomness from ``seed``."""
    crop_seed, flip_seed = _split_seed(seed, 2)
    padded = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


@register_recipe("cifar10", "cifar100")
def _cifar_recipe(image_size: Optional[int]) -> DatasetRecipe:
    """CIFAR: per-channel normalisation with the CIFAR-10 training mean/std; training adds
    zero padding by 4 px + random crop back to 32x32 + random horizontal flip.
    ``--image_size`` (if given) resizes after augmentation, before normalisation."""

    def resize(image):
        return image if image_size is None else resize_square(image, image_size)

    def preprocess(image, label):
        return normalize(resize(image), CIFAR_MEAN, CIFAR_STD), tf.cast(label, tf.int32)

    def augment(image, label, seed):
        image = cifar_pad_crop_flip(image, seed)
        return normalize(resize(image), CIFAR_MEAN, CIFAR_STD), tf.cast(label, tf.int32)

    return DatasetRecipe(name="cifar", preprocess=preprocess, augment=augment, batchable=True)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_DEFAULT_SIZE = 224
IMAGENET_RESIZE_RATIO = 1.14  # shorter side resized to round(1.14 * image_size): 256 for 224


def resize_shorter_side(image: tf.Tensor, side: int) -> tf.Tensor:
    """Bilinear (antialiased) resize keeping the aspect ratio so that the shorter side is
    ``side`` pixels; float32 in the input's value range."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = tf.cast(side, tf.float64) / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), side)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), side)
    return tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]),
                           method="bilinear", antialias=True)


def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The central size x size window of an HxWxC image (offsets rounded down)."""
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top:top + size, left:left + size, :]


@register_recipe("imagenet2012")
def _imagenet_recipe(image_size: Optional[int]) -> DatasetRecipe:
    """ImageNet: shorter side resized to round(1.14 x image_size) (256 for 224), then a
    random image_size crop + random horizontal flip for training or the central crop for
    evaluation; pixels scaled to [0, 1] and normalised with the ImageNet mean/std."""
    size = IMAGENET_DEFAULT_SIZE if image_size is None else int(image_size)
    side = int(round(size * IMAGENET_RESIZE_RATIO))

    def finish(image, label):
        image = tf.ensure_shape(image, (size, size, 3))
        return normalize(image, IMAGENET_MEAN, IMAGENET_STD), tf.cast(label, tf.int32)

    def preprocess(image, label):
        return finish(central_crop(resize_shorter_side(image, side), size), label)

    def augment(image, label, seed):
        crop_seed, flip_seed = _split_seed(seed, 2)
        image = resize_shorter_side(image, side)
        image = tf.image.stateless_random_crop(image, (size, size, 3), seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return finish(image, label)

    return DatasetRecipe(name="imagenet2012", preprocess=preprocess, augment=augment,
                         default_image_size=IMAGENET_DEFAULT_SIZE)
