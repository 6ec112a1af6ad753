"""Offline stand-ins for real TFDS catalogue datasets (cifar10, imagenet2012) in tests.

``tfds.testing.mock_data`` (TFDS 4.9.10) replaces ``as_dataset`` with random examples
generated from the builder's *code* (features: 32x32x3 CIFAR images, variable-size
ImageNet images, 10 / 1000 classes); nothing is downloaded. How it is used here:

* ``MockPolicy.USE_CODE`` alone is not enough for ``epkd_tf.data.load_data``: the builder
  then points at a non-existing directory, so ``is_prepared()`` is False and
  ``info.splits`` is empty (load_data rightly refuses such a dataset).
* So :func:`write_metadata` writes the real builder's ``dataset_info.json`` +
  ``features.json`` with split sizes into ``data_dir/<name>/<version>/`` (no data files),
  and :func:`mocked` enters ``mock_data(policy=USE_FILES, data_dir=data_dir)``: builders
  are then "prepared", splits and sizes come from our metadata, and the examples come
  from the mock (the same ``num_examples`` examples for every split and slice; pass the
  same count to both so that split sizes match what is read).
* The patches are in-process only: run ``epkd_tf.main`` with ``run_in_process``, never
  as a subprocess, and iterate every pipeline inside the ``with`` block.
"""
import contextlib

import epkd_tf  # noqa: F401

import tensorflow_datasets as tfds

SPLITS = {"cifar10": ("train", "test"), "imagenet2012": ("train", "validation", "test")}


def write_metadata(data_dir, num_examples, names=("cifar10", "imagenet2012")):
    """Writes split metadata (``num_examples`` per split) of the real ``names`` builders."""
    for name in names:
        builder = tfds.builder(name, data_dir=str(data_dir))
        infos = [tfds.core.SplitInfo(
            name=split, shard_lengths=[num_examples], num_bytes=0,
            filename_template=tfds.core.naming.ShardedFileTemplate(
                data_dir=builder.data_path, dataset_name=name, split=split,
                filetype_suffix="tfrecord"))
            for split in SPLITS[name]]
        builder.info.set_splits(tfds.core.SplitDict(infos))
        builder.data_path.mkdir(parents=True, exist_ok=True)
        builder.info.write_to_directory(builder.data_path)
    return str(data_dir)


@contextlib.contextmanager
def mocked(data_dir, num_examples):
    """TFDS mocked: every builder reads its metadata from ``data_dir`` and yields
    ``num_examples`` deterministic random examples."""
    with tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(data_dir)):
        yield
