"""What the CLI tests share: invoke the app in-process, the one-error-line refusal contract, a quick run."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lmkit import api

runner = CliRunner()


def cli(*args, input: bytes | str | None = None):
    """`lmkit ARGS...` in this process (arguments may be paths or numbers)."""
    from lmkit.cli import app

    return runner.invoke(app, [str(a) for a in args], input=input)


def one_error_line(result, code: int = 1, match: str = "") -> str:
    """The refusal contract: exit `code`, exactly one stderr line starting 'error: ', no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


def train(corpus: Path, out: Path, model: str, **kw) -> Path:
    """A run trained through the library API, without progress output, under the protocol the tests that use it
    pin their numbers in: KenLM's conventions, sentence context and every training word kept (min-count 1),
    unless a test asks otherwise. lmkit's own defaults (lmkit.defaults) are held by tests/test_defaults.py."""
    kw.setdefault("context", "sentence")
    if kw.get("vocab") is None:
        kw.setdefault("min_count", 1)
    return api.train(api.TrainRequest(model=model, corpus=corpus, output=out, progress=False, **kw))


# -- lmkit in a real child process (signals, kills, exit codes, file-size limits) ----------------------
REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict:
    """The environment of a child `lmkit`: this checkout importable, no colour."""
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "NO_COLOR": "1", **extra}


def spawn(*args, cwd: Path | None = None, env: dict | None = None, preexec_fn=None):
    """`lmkit ARGS` started in a new process (stdout and stderr piped, text)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "lmkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env or child_env(),
                            preexec_fn=preexec_fn)


def run(*args, cwd: Path | None = None, timeout: float = 180, **kw) -> tuple[int, str, str]:
    """`lmkit ARGS` in a new process, waited for: (exit code, stdout, stderr)."""
    p = spawn(*args, cwd=cwd, **kw)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def one_line(err: str, *fragments: str) -> None:
    """A child's refusal: exactly one stderr line starting 'error: ', with each fragment in it."""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


def wait_for(proc, predicate, timeout: float = 90) -> None:
    """Poll until `predicate()` holds while `proc` runs; fail (and kill it) when it ends or times out."""
    import time

    import pytest

    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"process ended early (rc {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("timed out waiting for the process")
        time.sleep(0.01)


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) with its bytes: 'nothing was touched' made checkable."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def lineup_table(*args, sort: str | None = None, **kwargs) -> list[dict]:
    """Train a lineup (lmkit.lineup.train_lineup's arguments, incl. per-family options) and compare it."""
    from lmkit.compare import compare_trained
    from lmkit.lineup import train_lineup

    return compare_trained(train_lineup(*args, sort=sort, **kwargs), sort=sort)


def word_corpus(d: Path, step: tuple[int, int] = (7, 3), lengths: tuple[int, int] = (4, 5)) -> Path:
    """A tiny deterministic corpus folder (train 120, valid 12, test 12 lines over 12 words): line i, word j
    is words[(i*step[0] + j*step[1]) mod 12], lines of lengths[0] + i mod lengths[1] words."""
    d.mkdir(parents=True, exist_ok=True)
    words = "the cat sat on a mat dog log bird saw ate ran".split()
    for name, n in (("train", 120), ("valid", 12), ("test", 12)):
        lines = [" ".join(words[(i * step[0] + j * step[1]) % len(words)] for j in range(lengths[0] + i % lengths[1]))
                 for i in range(n)]
        (d / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return d


def bundled_prefix(folder: Path, lines: dict[str, int]) -> Path:
    """A corpus folder holding the first `lines[split]` lines of each split of the bundled Shakespeare corpus."""
    folder.mkdir(parents=True)
    for split, n in lines.items():
        text = (REPO / "corpora" / "shakespeare" / f"{split}.txt").read_text(encoding="utf-8").splitlines()[:n]
        (folder / f"{split}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    return folder
