"""Downloads: a catalogue dataset missing from --data_dir is downloaded and prepared through
epkd_tf's real load_data -> builder.download_and_prepare() path; offline (a simulated
network failure) or with --nodownload the one-line error says how to prepare it.

The catalogue dataset is ``epkd_test_download``, registered below: a small TFDS builder
whose ``_split_generators`` downloads an .npz through TFDS's download manager. The network
itself is replaced by a fake ``requests`` transport adapter (``HTTPAdapter.send``) that
serves the file or fails as an unreachable host does, so TFDS's whole download machinery
runs and nothing leaves the machine.
"""
import epkd_tf  # noqa: F401

import io
import os

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds

from data_helpers import ids, indexed_arrays, snapshot
from epkd_tf.config import DataConfig
from epkd_tf.data import DataError, load_data
from epkd_tf.data import tfds as tfds_lib

pytestmark = pytest.mark.unit

URL = "https://epkd-test.invalid/tiny.npz"
N_TRAIN, N_TEST = 12, 6


class EpkdTestDownload(tfds.core.GeneratorBasedBuilder):
    """A catalogue dataset that has to be downloaded (registered as epkd_test_download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(6, 6, 1)),
                "label": tfds.features.ClassLabel(num_classes=3)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        path = dl_manager.download(URL)
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        return {"train": self._generate_examples(arrays["x_train"], arrays["y_train"]),
                "test": self._generate_examples(arrays["x_test"], arrays["y_test"])}

    def _generate_examples(self, x, y):
        for i in range(len(x)):
            yield i, {"image": x[i][..., None], "label": int(y[i])}


def _payload() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **indexed_arrays(N_TRAIN, N_TEST, classes=3))
    return buffer.getvalue()


@pytest.fixture
def network(monkeypatch):
    """The fake network: ``network.online = False`` makes every request fail as DNS does
    without a network; ``network.requests`` counts the requests."""
    class Network:
        online = True
        requests = 0

    state = Network()
    payload = _payload()

    def send(adapter, request, **kwargs):
        state.requests += 1
        if not state.online:
            raise requests.exceptions.ConnectionError(
                f"HTTPSConnectionPool(host='epkd-test.invalid', port=443): Max retries "
                f"exceeded with url: /tiny.npz (Caused by NameResolutionError: Failed to "
                f"resolve 'epkd-test.invalid')")
        response = requests.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response.headers["Content-Length"] = str(len(payload))
        response.raw = io.BytesIO(payload)
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return state


def config(data_dir, **kw):
    return DataConfig(dataset="epkd_test_download", data_dir=data_dir, batch_size=4, **kw)


def test_a_missing_catalogue_dataset_is_downloaded_and_prepared(network, tmp_path):
    data_dir = tmp_path / "new" / "tfds"  # missing: created like tfds.load does
    d = load_data(config(str(data_dir)))
    assert network.requests == 1
    assert (d.spec.num_train, d.spec.num_test, d.spec.num_classes) == (N_TRAIN, N_TEST, 3)
    assert os.path.exists(data_dir / "epkd_test_download" / "1.0.0" / "dataset_info.json")
    x, y = d.numpy_test()
    arrays = indexed_arrays(N_TRAIN, N_TEST, classes=3)
    order = ids(x) - 200  # TFDS shuffled the examples when it prepared them
    assert sorted(order) == list(range(N_TEST))
    np.testing.assert_allclose(x[..., 0], arrays["x_test"][order] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, arrays["y_test"][order])
    # Prepared now: loading again needs no network.
    network.online = False
    assert load_data(config(str(data_dir))).spec.num_train == N_TRAIN
    assert network.requests == 1


def test_offline_the_error_says_how_to_prepare_the_dataset(network, tmp_path):
    network.online = False
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    with pytest.raises(DataError) as err:
        load_data(config(str(data_dir)))
    message = str(err.value)
    assert "\n" not in message and network.requests >= 1
    for fragment in ("--dataset='epkd_test_download'", str(data_dir), "ConnectionError",
                     "tfds build epkd_test_download --data_dir=", "--import_npz=",
                     "--import_folder="):
        assert fragment in message, (fragment, message)
    assert snapshot(data_dir) == set()  # no half-prepared dataset, no empty directories
    # A missing data_dir that the failed download would have created is gone again.
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match="tfds build"):
        load_data(config(str(missing)))
    assert not missing.exists()


def test_without_data_dir_the_default_directory_is_named(network, tmp_path, monkeypatch):
    default = tmp_path / "home" / "tensorflow_datasets"
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(default))
    assert tfds_lib.default_data_dir() == str(default)
    network.online = False
    with pytest.raises(DataError) as err:
        load_data(config(None))
    assert f"--data_dir={default}" in str(err.value) and "tfds build" in str(err.value)
    assert not default.exists()
    network.online = True  # with a network the missing default directory is simply created
    assert load_data(config(None)).spec.num_train == N_TRAIN
    assert (default / "epkd_test_download" / "1.0.0").is_dir()


def test_nodownload_refuses_without_touching_the_network(network, tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    with pytest.raises(DataError) as err:
        load_data(config(str(data_dir), download=False))
    message = str(err.value)
    assert "--nodownload" in message and "tfds build epkd_test_download" in message
    assert network.requests == 0 and snapshot(data_dir) == set()
    with pytest.raises(DataError, match="does not exist.*--nodownload"):
        load_data(config(str(tmp_path / "missing"), download=False))
    assert not (tmp_path / "missing").exists()


def test_imagenet_needs_its_manual_files(network, tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="imagenet", data_dir=str(data_dir),
                             test_split="validation"))
    message = str(err.value)
    assert "\n" not in message
    for fragment in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                     os.path.join(str(data_dir), "downloads", "manual"),
                     "tfds build imagenet2012", "--import_folder="):
        assert fragment in message, (fragment, message)
    assert snapshot(data_dir) == set()
