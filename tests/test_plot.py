"""`lmkit plot`: learning curves as an image, a clear error without matplotlib, comparable runs only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from clitools import cli, train

from lmkit.errors import IncomparableError, ModelError, UsageError
from lmkit.plot import plot_runs, read_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs(tiny_corpus: Path, tmp_path: Path) -> list[Path]:
    """An n-gram run (one point) and a tiny MLP run (a curve of several validations)."""
    kn = train(tiny_corpus, tmp_path / "kn3", "ngram:kn3")
    mlp = train(tiny_corpus, tmp_path / "mlp", "mlp", options={"window": 2, "embed": 8, "hidden": 16},
                train_options={"max_tokens": 120, "batch_size": 4, "eval_every": 2, "device": "cpu"})
    return [kn, mlp]


def test_plot_writes_a_png(runs, tmp_path):
    assert len(read_curve(runs[1])) >= 2 and len(read_curve(runs[0])) == 1
    out = tmp_path / "figs" / "curves.png"
    assert plot_runs(runs, out) == out
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # written atomically, no temp left


def test_plot_cli(runs, tmp_path):
    out = tmp_path / "c.png"
    r = cli("plot", *runs, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and out.read_bytes()[:8] == PNG_MAGIC
    r = cli("plot", *runs, "-o", tmp_path / "c.txt")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and ".png" in r.stderr


def test_missing_matplotlib_is_a_clear_error(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(UsageError, match=r"lmkit plot needs matplotlib: pip install 'lmkit\[plot\]'"):
        plot_runs(runs, tmp_path / "x.png")
    r = cli("plot", *runs, "-o", tmp_path / "x.png")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: lmkit plot needs matplotlib: pip install 'lmkit[plot]'"
    assert not (tmp_path / "x.png").exists()


def test_plot_refuses_incomparable_runs_and_missing_curves(tiny_corpus, tmp_path):
    a = train(tiny_corpus, tmp_path / "a", "ngram:kn3")
    b = train(tiny_corpus, tmp_path / "b", "ngram:kn3", context="stream")
    with pytest.raises(IncomparableError, match=r"protocol differs \(context sentence vs stream\)"):
        plot_runs([a, b], tmp_path / "x.png")
    (a / "metrics.jsonl").unlink()
    with pytest.raises(ModelError, match="no metrics.jsonl"):
        plot_runs([a], tmp_path / "x.png")
