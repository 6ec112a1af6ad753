"""Importing a folder of class-named image folders as a TFDS dataset that loads by name::

    python -m epkd_tf.data --import_folder=DIR --name=NAME --data_dir=OUT [--overwrite]

``DIR`` holds one folder per split -- ``train/`` and ``test/`` are required, others (e.g.
``validation/``) are imported too -- and in each one folder per class, named after it,
holding ``.png`` / ``.jpg`` / ``.jpeg`` files (TFDS ImageFolder's layout)::

    DIR/train/cat/0001.png   DIR/train/dog/0002.jpg   DIR/test/cat/...   DIR/test/dog/...

* Classes are the class folder names, sorted (label 0 is the first); every split must have
  the same set, and every class at least one training image.
* Images keep their encoded bytes (JPEG stays JPEG). They are grey (1 channel) if every
  image is grey, else RGB (grey images are expanded, an alpha channel is dropped).
* Images of one size give a fixed-shape dataset (cached in memory when small); images of
  several sizes give a variable-size one, which ``load_data`` refuses without
  ``--image_size=N`` (images are then resized to N x N) and streams from disk, like
  ImageNet.
* Each split is written in a fixed shuffled order (the same on every import, as TFDS's
  ImageFolder does), so that slices such as ``train[:10%]`` hold every class.

Why not ``tfds.ImageFolder`` itself: it reads the image files at every load instead of
writing a dataset, an unreadable file stops an epoch without naming it, and splits with
different class sets pass silently. Everything is checked here first (every image is
decoded once); then the same ad-hoc builder as the npz import writes the dataset
atomically (``writer.py``).
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import os
import random
import re
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from epkd_tf.data.source import MAX_CLASSES, DataError
from epkd_tf.data.writer import refuse_existing, target_dir, write_dataset
from epkd_tf.files import not_regular

__all__ = ["import_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
REQUIRED_SPLITS = ("train", "test")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

Example = Tuple[str, int]  # (image path, class index)


def _subfolders(path: str) -> List[str]:
    return sorted(n for n in os.listdir(path)
                  if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))


def _images(path: str, shown: str) -> List[str]:
    """The image files of class folder ``path`` (``shown`` names it in messages); an entry
    named as an image that is not a regular file (a FIFO would block the import, a device
    never end) is refused, not skipped: the user meant it to be imported."""
    paths = sorted(os.path.join(path, n) for n in os.listdir(path)
                   if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS))
    for image in paths:
        problem = not_regular(image)
        if problem:
            raise DataError(f"{shown}{os.path.basename(image)} {problem}: every .png, .jpg "
                            f"or .jpeg entry of a class folder must be an image file.")
    return paths


def _listing(folder: str) -> Tuple[List[str], Dict[str, List[Example]]]:
    """(class names, split -> examples in the order to write); DataError for a layout
    that is not importable."""
    def bad(message: str) -> DataError:
        return DataError(f"--import_folder={folder!r}: {message}")

    if not os.path.isdir(folder):
        what = "is not a directory" if os.path.exists(folder) else "does not exist"
        raise DataError(f"--import_folder={folder!r} {what}: give a directory with train/ and "
                        f"test/ folders holding one folder of images per class.")
    splits = _subfolders(folder)
    missing = [s for s in REQUIRED_SPLITS if s not in splits]
    if missing:
        raise bad(f"has no {' or '.join(s + '/' for s in missing)} folder (has "
                  f"{', '.join(s + '/' for s in splits) or 'no folders'}); it needs train/ "
                  f"and test/, each with one folder of images per class.")
    odd = [s for s in splits if not re.match(r"^[A-Za-z0-9_]+$", s) or s == "all"]
    if odd:
        raise bad(f"the folder {odd[0]}/ is not a usable split name (letters, digits and "
                  f"underscores, not 'all'); rename it or move it out.")
    classes = {s: _subfolders(os.path.join(folder, s)) for s in splits}
    names = classes["train"]
    if len(names) < 2:
        raise bad(f"train/ has {len(names)} class folder(s) ({', '.join(names) or 'none'}); "
                  f"a classifier needs at least 2.")
    if len(names) > MAX_CLASSES:
        raise bad(f"train/ has {len(names)} class folders; at most {MAX_CLASSES} are allowed.")
    for split in splits:
        if classes[split] != names:
            only_here = sorted(set(classes[split]) - set(names))
            only_train = sorted(set(names) - set(classes[split]))
            parts = ([f"only in {split}/: {', '.join(only_here)}"] if only_here else []) + \
                    ([f"only in train/: {', '.join(only_train)}"] if only_train else [])
            raise bad(f"the class folders of {split}/ and train/ differ ({'; '.join(parts)}); "
                      f"every split needs the same classes.")
    examples: Dict[str, List[Example]] = {}
    for split in splits:
        found = []
        for index, name in enumerate(names):
            paths = _images(os.path.join(folder, split, name),
                            f"--import_folder={folder!r}: {split}/{name}/")
            if not paths and split == "train":
                raise bad(f"train/{name}/ holds no .png, .jpg or .jpeg image; every class needs "
                          f"training images.")
            found += [(p, index) for p in paths]
        if not found:
            raise bad(f"{split}/ holds no .png, .jpg or .jpeg images in its class folders.")
        # Classes mixed in a fixed order (seeded by the split name, as TFDS's ImageFolder).
        random.Random(split).shuffle(found)
        examples[split] = found
    return names, examples


def _decoded_shapes(paths: List[str]) -> Dict[int, Tuple[int, int, int]]:
    """index -> (H, W, channels as stored) of every image TensorFlow can decode; the
    indices of unreadable files are missing (read and decoded in parallel, errors
    skipped)."""
    def shape_of(i, path):
        data = tf.io.read_file(path)
        known = tf.logical_or(tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC),
                              tf.io.is_jpeg(data))
        with tf.control_dependencies([tf.debugging.Assert(known, [path])]):
            image = tf.image.decode_image(data, channels=0, expand_animations=False)
        return i, tf.shape(image)

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    ds = ds.map(shape_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    return {int(i): tuple(int(d) for d in shape) for i, shape in ds.as_numpy_iterator()}


def _examples(examples: List[Example]):
    for key, (path, label) in enumerate(examples):
        yield key, {"image": path, "label": label}


def import_folder(folder: str, name: str, data_dir: str, overwrite: bool = False) -> str:
    """Writes the image folder ``folder`` (``<split>/<class>/*.png|jpg``, see this module)
    as TFDS dataset ``name`` under ``data_dir`` so that ``load_data`` (and
    ``tfds.load(name, data_dir=data_dir)``) finds it; returns the dataset directory.

    Every image is decoded once first: a missing folder, a split without images,
    different class sets, or a file that is not a readable PNG or JPEG image is a one-line
    :class:`DataError` naming ``--import_folder`` (and the file), and nothing is written.
    The dataset is built in a temporary directory inside ``data_dir`` and moved into place
    when complete; an existing prepared dataset is only replaced if ``overwrite``.
    """
    data_dir, target = target_dir(name, data_dir)
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    names, examples = _listing(folder)
    refuse_existing(name, target, overwrite)  # before decoding every image
    paths = [p for split in examples.values() for p, _ in split]
    shapes = _decoded_shapes(paths)
    unreadable = [p for i, p in enumerate(paths) if i not in shapes]
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(f"--import_folder={folder!r}: {unreadable[0]} is not a readable PNG or "
                        f"JPEG image{more}; remove or replace it.")
    channels = 1 if all(c in (1, 2) for _, _, c in shapes.values()) else 3
    sizes = {(h, w) for h, w, _ in shapes.values()}
    height, width = next(iter(sizes)) if len(sizes) == 1 else (None, None)
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(height, width, channels), dtype=np.uint8),
        "label": tfds.features.ClassLabel(names=names),
    })
    return write_dataset(
        name, data_dir, target, features,
        {split: _examples(found) for split, found in examples.items()},
        description=f"Imported by epkd_tf.data.import_folder from {folder}.")
