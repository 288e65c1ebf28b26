"""Shared fixtures: tiny corpora written into tmp folders, and the optional ../shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMKIT_SHARED", REPO.parent / "shared"))

TINY_TRAIN = """the cat sat on the mat
the dog sat on the log
a cat saw a dog

the cat ate
"""
TINY_VALID = "the dog sat on the mat\na cat sat\n"
TINY_TEST = "the cat sat on the log\nthe bird sat\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own lmkit cache: no test reads or fills the user's ~/.cache/lmkit."""
    root = tmp_path_factory.mktemp("lmkit-cache")
    monkeypatch.setenv("LMKIT_CACHE", str(root))
    return root


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "train.txt").write_text(TINY_TRAIN)
    (d / "valid.txt").write_text(TINY_VALID)
    (d / "test.txt").write_text(TINY_TEST)
    return d


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the reference data is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data not present: {p}")
    return p


# hypothesis keeps no example database in the checkout: a suite run writes only into temporary folders
try:
    from hypothesis import settings

    settings.register_profile("lmkit", database=None)
    settings.load_profile("lmkit")
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass


def _top_level() -> set[str]:
    return {p.name for p in REPO.iterdir()} - {".pytest_cache", "__pycache__"}


@pytest.fixture(scope="session", autouse=True)
def leaves_nothing_behind():
    """The suite leaves no file outside its temporary folders. The session (and every child process it
    starts) gets its own TMPDIR, removed at the end, in which no lmkit temp or scratch folder may remain;
    the checkout must have no new top-level entry."""
    import shutil
    import tempfile

    session_tmp = Path(tempfile.mkdtemp(prefix="lmkit-tests-"))
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"], tempfile.tempdir = str(session_tmp), None
    before = _top_level()
    yield
    # lmkit's own temp and scratch names must be gone; torch's (torchelastic_*, the inductor cache) are
    # its business, and go with the session's TMPDIR below
    left = sorted(p.name for p in session_tmp.iterdir() if p.name.startswith(("lmkit", ".lmkit", ".")))
    new_top = sorted(_top_level() - before)
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None
    shutil.rmtree(session_tmp, ignore_errors=True)
    assert not left and not new_top, f"the test suite left files behind: {left + new_top}"
