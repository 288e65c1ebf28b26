"""One exception family so the CLI can turn every expected failure into one line and an exit code."""

from __future__ import annotations


class LmkitError(Exception):
    """An expected failure with a message meant for the user (no traceback)."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(LmkitError):
    """Bad options or option combinations (exit code 2, like argument parsing errors)."""

    exit_code = 2


class DataError(LmkitError):
    """Input text that cannot be read: missing, empty, binary, badly encoded."""


class ModelError(LmkitError):
    """A run folder, checkpoint or ARPA file that is missing, truncated or inconsistent."""


class IncomparableError(LmkitError):
    """Numbers that were not measured the same way and must not be put side by side."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, `kill`) outside the training loop: unwinds like Ctrl-C, so locks
    are released and temp files removed, and the command exits with 143 (128 + SIGTERM)."""

    exit_code = 143


def on_sigterm(signum, frame) -> None:
    """The process-wide SIGTERM handler the CLI installs (the training loop installs its own)."""
    raise Terminated()


def only_for(flags: list[str], target: str) -> str:
    """'--a applies only to X' / '--a, --b apply only to X': one wording for every misplaced option."""
    return f"{', '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} only to {target}"
