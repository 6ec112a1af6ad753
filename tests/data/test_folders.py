"""The image-folder import (python -m epkd_tf.data --import_folder=DIR): class folders
become a TFDS dataset that loads by name; bad folders are one-line errors that write
nothing."""
import epkd_tf  # noqa: F401

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cli_helpers import error_lines, run_in_process
from data_helpers import snapshot
from epkd_tf.config import DataConfig
from epkd_tf.data import DataError, import_folder, load_data
from epkd_tf.cli import data as data_cli

pytestmark = pytest.mark.unit

CLASSES = ("cat", "dog", "eel")  # sorted: labels 0, 1, 2


def write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if path.endswith((".jpg", ".jpeg")) else tf.io.encode_png
    tf.io.write_file(path, encode(tf.constant(image, tf.uint8)))


def make_folder(root, per_class=(3, 2), size=6, channels=1, sizes=None, fmt="png"):
    """root/{train,test}/<class>/<n>.png whose pixel [0, 0] is 10 x class + n (so each image
    says which file it is); returns {(split, class index, n): image}."""
    images = {}
    for split, count in zip(("train", "test"), per_class):
        for c, name in enumerate(CLASSES):
            for n in range(count):
                h, w = sizes[(c + n) % len(sizes)] if sizes else (size, size)
                image = np.random.default_rng(c * 10 + n).integers(0, 256, (h, w, channels))
                image[0, 0] = 10 * c + n + (100 if split == "test" else 0)
                write_image(os.path.join(str(root), split, name, f"{n}.{fmt}"), image)
                images[(split, c, n)] = image.astype(np.uint8)
    return images


def test_a_folder_imports_and_loads_by_name(tmp_path):
    images = make_folder(tmp_path / "pics")
    data_dir = tmp_path / "tfds"
    path = import_folder(str(tmp_path / "pics"), "pets", str(data_dir))
    assert path == str(data_dir / "pets" / "1.0.0") and sorted(os.listdir(data_dir)) == ["pets"]
    d = load_data(DataConfig(dataset="pets", data_dir=str(data_dir), batch_size=4))
    assert (d.spec.input_shape, d.spec.num_classes) == ((6, 6, 1), 3)
    assert (d.spec.num_train, d.spec.num_test) == (9, 6) and d.cached["train"]
    info = tfds.builder_from_directory(path).info
    assert info.features["label"].names == list(CLASSES)
    x, y = d.numpy_train()
    found = set()
    for image, label in zip(np.rint(x * 255).astype(np.uint8), y):
        c, n = divmod(int(image[0, 0, 0]), 10)
        assert c == label  # the label is the class folder's index
        np.testing.assert_array_equal(image, images[("train", c, n)])  # PNG: lossless
        found.add((c, n))
    assert len(found) == 9
    # Written in a fixed shuffled order: classes mixed, the same on every import.
    assert list(y) != sorted(y)
    import_folder(str(tmp_path / "pics"), "pets_again", str(data_dir))
    again = load_data(DataConfig(dataset="pets_again", data_dir=str(data_dir), batch_size=4))
    np.testing.assert_array_equal(again.numpy_train()[0], x)


def test_images_of_several_sizes_need_image_size(tmp_path):
    make_folder(tmp_path / "pics", sizes=[(6, 6), (9, 5)], channels=3, fmt="jpg")
    data_dir = str(tmp_path / "tfds")
    import_folder(str(tmp_path / "pics"), "mixed", data_dir)
    with pytest.raises(DataError, match="--image_size"):
        load_data(DataConfig(dataset="mixed", data_dir=data_dir))
    d = load_data(DataConfig(dataset="mixed", data_dir=data_dir, image_size=8, batch_size=4))
    assert d.spec.input_shape == (8, 8, 3) and d.raw_image_shape == (None, None, 3)
    assert all_shapes(d.train()) == {(8, 8, 3)} and d.cached["train"] is False


def all_shapes(ds):
    return {tuple(x.shape[1:]) for x, _ in ds}


def test_grey_and_colour_images_become_rgb(tmp_path):
    make_folder(tmp_path / "pics", channels=1)
    write_image(str(tmp_path / "pics" / "train" / "cat" / "rgba.png"),
                np.full((6, 6, 4), 200, np.uint8))
    import_folder(str(tmp_path / "pics"), "colour", str(tmp_path / "tfds"))
    d = load_data(DataConfig(dataset="colour", data_dir=str(tmp_path / "tfds")))
    assert d.spec.input_shape == (6, 6, 3) and d.spec.num_train == 10


def _garbage(root):
    with open(os.path.join(root, "train", "dog", "broken.png"), "wb") as f:
        f.write(b"not an image at all")


def _truncated(root):
    path = os.path.join(root, "test", "eel", "0.png")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _gif_named_jpg(root):
    gif = tf.io.encode_png(tf.zeros((2, 2, 1), tf.uint8)).numpy()
    with open(os.path.join(root, "train", "cat", "fake.jpg"), "wb") as f:
        f.write(b"GIF89a" + gif)


def _fifo_named_png(root):
    os.mkfifo(os.path.join(root, "train", "dog", "pipe.png"))   # reading it would block


def _one_class(root):
    for split in ("train", "test"):
        for name in CLASSES[1:]:
            shutil.rmtree(os.path.join(root, split, name))


@pytest.mark.parametrize("damage, fragments", [
    (lambda root: os.rename(os.path.join(root, "test"), os.path.join(root, "tst")),
     ["has no test/ folder", "tst/"]),
    (lambda root: os.rename(os.path.join(root, "test", "eel"), os.path.join(root, "test", "emu")),
     ["class folders of test/ and train/ differ", "only in test/: emu", "only in train/: eel"]),
    (lambda root: [os.remove(os.path.join(root, "test", c, n))
                   for c in CLASSES for n in os.listdir(os.path.join(root, "test", c))],
     ["test/ holds no .png, .jpg or .jpeg images"]),
    (lambda root: [os.remove(os.path.join(root, "train", "dog", n))
                   for n in os.listdir(os.path.join(root, "train", "dog"))],
     ["train/dog/ holds no", "training images"]),
    (_garbage, ["broken.png is not a readable PNG or JPEG image"]),
    (_truncated, [os.path.join("test", "eel", "0.png") + " is not a readable"]),
    (_gif_named_jpg, ["fake.jpg is not a readable PNG or JPEG image"]),
    (_one_class, ["train/ has 1 class folder(s) (cat)", "at least 2"]),
    (_fifo_named_png, ["train/dog/pipe.png is not a regular file"]),
    (lambda root: os.makedirs(os.path.join(root, "my-val", "cat")),
     ["my-val/ is not a usable split name"]),
])
def test_unusable_folders_are_refused_and_nothing_is_written(tmp_path, damage, fragments):
    root = str(tmp_path / "pics")
    make_folder(root)
    damage(root)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError) as err:
        import_folder(root, "bad", str(data_dir))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--import_folder={root!r}")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not data_dir.exists()


def test_missing_folder_and_existing_dataset(tmp_path):
    with pytest.raises(DataError, match="--import_folder=.*nope.*does not exist"):
        import_folder(str(tmp_path / "nope"), "x", str(tmp_path / "tfds"))
    make_folder(tmp_path / "pics")
    data_dir = tmp_path / "tfds"
    import_folder(str(tmp_path / "pics"), "pets", str(data_dir))
    before = snapshot(data_dir)
    with pytest.raises(DataError, match="already prepared.*--overwrite"):
        import_folder(str(tmp_path / "pics"), "pets", str(data_dir))
    assert snapshot(data_dir) == before
    import_folder(str(tmp_path / "pics"), "pets", str(data_dir), overwrite=True)
    assert sorted(os.listdir(data_dir)) == ["pets"]


def test_command_line(tmp_path, capsys):
    make_folder(tmp_path / "pics")
    data_dir = tmp_path / "tfds"
    args = [f"--import_folder={tmp_path / 'pics'}", "--name=pets", f"--data_dir={data_dir}"]
    assert run_in_process(data_cli, args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(data_dir / "pets" / "1.0.0")
    for bad, fragment in [
            (args + [f"--import_npz={tmp_path / 'x.npz'}"], "exactly one of"),
            ([f"--import_folder={tmp_path / 'nope'}", "--name=other",
              f"--data_dir={data_dir}"], "does not exist"),
            (args, "--overwrite")]:
        assert run_in_process(data_cli, bad) == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and fragment in lines[0], lines
