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
    """A run trained through the library API, without progress output."""
    return api.train(api.TrainRequest(model=model, corpus=corpus, output=out, progress=False, **kw))
