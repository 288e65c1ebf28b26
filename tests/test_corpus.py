"""Reading text: every unreadable input is one clear DataError; corpus discovery follows docs/protocol.md."""

import pytest

from lmkit.data.corpus import locate, read_text
from lmkit.errors import DataError, UsageError


def test_empty_binary_and_bad_utf8(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_text(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n")
    with pytest.raises(DataError, match="empty"):
        read_text(blank)
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(DataError, match="binary"):
        read_text(binary)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("ok line\nsecond\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: line 3: invalid UTF-8"):
        read_text(latin)
    with pytest.raises(DataError, match="not found"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="directory"):
        read_text(tmp_path)


def test_crlf_bom_and_trailing_newline(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"\xef\xbb\xbfa b\r\nc\r\n")
    t = read_text(f)
    assert t.lines == ["a b", "c"]
    assert len(t.sha256) == 64


def test_split_discovery(tmp_path):
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (tmp_path / name).write_text("x\n")
    files = locate(tmp_path)
    assert files.train.name == "ptb.train.txt" and files.valid.name == "ptb.valid.txt"
    d2 = tmp_path / "wiki"
    d2.mkdir()
    for name in ("wiki.train.tokens", "wiki.dev.tokens"):
        (d2 / name).write_text("x\n")
    files = locate(d2, need=("train", "valid"))
    assert files.valid.name == "wiki.dev.tokens" and files.test is None


def test_missing_split_and_ambiguity(tmp_path):
    (tmp_path / "train.txt").write_text("x\n")
    with pytest.raises(DataError, match="no valid split"):
        locate(tmp_path, need=("train", "valid"))
    (tmp_path / "a.train.txt").write_text("x\n")
    with pytest.raises(UsageError, match="several files"):
        locate(tmp_path)
    with pytest.raises(DataError, match="not found"):
        locate(tmp_path / "nope")
