"""The one way epkd_tf reads a user's file (epkd_tf/files.py): a regular file only, never
blocking on a FIFO, text only as UTF-8 and of sane size."""
import os

import pytest

from epkd_tf.files import not_regular, read_bytes, read_text

pytestmark = pytest.mark.unit


def test_not_regular_names_what_the_path_is_without_opening_it(tmp_path):
    regular, fifo = tmp_path / "a.txt", tmp_path / "pipe"
    regular.write_text("x")
    os.mkfifo(fifo)
    os.symlink(regular, tmp_path / "link")
    assert not_regular(str(regular)) is None and not_regular(str(tmp_path / "link")) is None
    assert not_regular(str(fifo)) == "is not a regular file (a FIFO, socket or device)"
    assert not_regular(os.devnull) == "is not a regular file (a FIFO, socket or device)"
    assert not_regular(str(tmp_path)) == "is a directory"
    assert not_regular(str(tmp_path / "missing")) == "does not exist"


def test_read_text_refuses_what_is_not_a_small_utf8_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="^is not a regular file"):
        read_text(str(fifo))                    # open() would block until a writer came
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"^is not UTF-8 text \(byte 3 is 0xe9\)"):
        read_text(str(latin))
    big = tmp_path / "big.txt"
    big.write_text("x" * 101)
    with pytest.raises(ValueError, match="^is 101 bytes, larger than any such file"):
        read_text(str(big), limit=100)
    assert read_text(str(big), limit=101) == "x" * 101
    assert read_bytes(str(latin)) == b"caf\xe9"
