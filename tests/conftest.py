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


def _leftovers() -> set[str]:
    """What a run could leave outside its temporary folders: new entries at the checkout's top level and
    lmkit's own scratch names in the system temp folder."""
    import tempfile

    top = {p.name for p in REPO.iterdir()} - {".pytest_cache", "__pycache__"}
    scratch = {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith(("lmkit-", ".lmkit"))}
    return top | {f"tmp/{n}" for n in scratch}


@pytest.fixture(scope="session", autouse=True)
def leaves_nothing_behind():
    """The suite leaves no file outside its temporary folders (checked when the session ends)."""
    before = _leftovers()
    yield
    left = _leftovers() - before
    assert not left, f"the test suite left files behind: {sorted(left)}"
