"""The wheel ships the bundled corpus, so `lmkit` works after a plain `pip install .`."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lmkit.data.corpus import bundled_corpus

REPO = Path(__file__).resolve().parents[1]


def test_bundled_corpus_is_found():
    d = bundled_corpus()
    assert all((d / f"{s}.txt").stat().st_size > 100_000 for s in ("train", "valid", "test"))


def test_wheel_contains_corpus(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        str(REPO), "-w", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("lmkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for split in ("train", "valid", "test"):
        assert f"lmkit/corpora/shakespeare/{split}.txt" in names
    assert "lmkit/cli.py" in names and "lmkit/models/ngram/__init__.py" in names
