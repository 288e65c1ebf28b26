"""lmkit.npzmap: an uncompressed .npz read once (CRC, values checked block by block) and used memory-mapped."""

from __future__ import annotations

import mmap
import pickle
import zipfile

import numpy as np
import pytest

from lmkit.models.ngram.model import TableChecks
from lmkit.npzmap import PickledMember, map_npz


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"keys": np.sort(rng.choice(10**9, 5000, replace=False)).astype(np.int64),
            "floats": rng.normal(size=3001), "empty": np.zeros(0), "meta": np.array('{"a": 1}'),
            "fortran": np.asfortranarray(rng.integers(0, 9, (7, 5)).astype(np.int32)),
            "small": np.arange(3, dtype=np.uint16)}


def saved(tmp_path, **kw) -> tuple:
    data = arrays()
    path = tmp_path / "a.npz"
    np.savez(path, **data, **kw)
    return path, data


def mapped_from(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, mmap.mmap):
            return True
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return False


@pytest.mark.parametrize("block_bytes", [16, 1000, 1 << 24])
def test_every_array_equals_np_load_and_is_read_only_and_mapped(tmp_path, block_bytes):
    path, data = saved(tmp_path)
    seen: dict[str, list] = {}
    got = map_npz(path, lambda name, block, first: seen.setdefault(name, []).append((first, block.copy())),
                  block_bytes=block_bytes)
    assert set(got) == set(data)
    for name, ref in data.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
        np.testing.assert_array_equal(got[name], ref)
        if ref.size:
            blocks = seen[name]
            assert [first for first, _ in blocks] == list(np.cumsum([0] + [len(b) for _, b in blocks[:-1]]))
            np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]),
                                          ref.ravel(order="F" if name == "fortran" else "C"))
    assert mapped_from(got["keys"]) and not got["keys"].flags.writeable
    if block_bytes == 16:
        assert len(seen["keys"]) == 2500  # two values a block: the checks really ran block by block


def test_compressed_archives_are_left_to_np_load(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **arrays())
    assert map_npz(path) is None


def test_a_changed_byte_fails_the_crc(tmp_path):
    path, _ = saved(tmp_path)
    raw = bytearray(path.read_bytes())
    at = raw.index(np.float64(arrays()["floats"][100]).tobytes())
    raw[at] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        map_npz(path)


def test_a_truncated_archive_is_refused(tmp_path):
    path, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises((ValueError, zipfile.BadZipFile)):  # the n-gram loader words both as damage
        map_npz(path)


def test_object_arrays_are_refused_unread(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, evil=np.array([{"a": 1}, pickle.dumps(1)], dtype=object))
    with pytest.raises(PickledMember):
        map_npz(path)


def test_key_order_is_checked_across_block_boundaries(tmp_path):
    keys = np.arange(0, 400, dtype=np.int64)
    keys[200] = keys[199]  # a repeat exactly where two 16-value blocks meet... and inside one
    path = tmp_path / "k.npz"
    np.savez(path, keys_2=keys, logp_1=np.zeros(4))
    with pytest.raises(ValueError, match="sorted"):
        map_npz(path, TableChecks(), block_bytes=8 * 200)  # 199 ends one block, 200 starts the next
    np.savez(path, keys_2=np.arange(10, dtype=np.int64), logp_1=np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        map_npz(path, TableChecks())
