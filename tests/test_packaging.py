"""The wheel ships the bundled corpus, so `lmkit` works after a plain `pip install .`."""

import shutil
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
    src = tmp_path / "src"  # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "lmkit", "corpora"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (REPO / name).is_dir() else {}))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        str(src), "-w", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("lmkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for split in ("train", "valid", "test"):
        assert f"lmkit/corpora/shakespeare/{split}.txt" in names
    assert "lmkit/cli.py" in names and "lmkit/models/ngram/__init__.py" in names
    # every module of the package is in the wheel (pyproject lists the subpackages by hand)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "lmkit").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - names == set()
