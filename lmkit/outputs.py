"""What a command may write over: the one rule for `-o` folders, `--force` and outputs beside inputs.

lmkit replaces a folder only when lmkit made it (a run folder with its run.json, or a folder carrying
lmkit's marker file) and it is not a place whose loss would hurt: the working directory or one of its
ancestors, the home folder, a filesystem root, or a folder holding an input of the same command. An
output path may never equal or contain an input path (or sit inside an input run folder). Every refusal
is one line naming the folder and why, raised before any work, so nothing is touched.
docs/reliability.md ("Outputs and --force") describes the rule for users."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from .errors import UsageError

RUN_FILE = "run.json"
MARKER_FILE = ".lmkit"  # written into folders lmkit makes that have no run.json (e.g. `corpus split`)


def real(path: str | Path) -> Path:
    """The absolute path with every symbolic link resolved (what a write would really reach)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def write_marker(folder: str | Path, kind: str) -> None:
    """Mark a folder as lmkit's own (`--force` may replace it later)."""
    (Path(folder) / MARKER_FILE).write_text(json.dumps({"lmkit": kind}) + "\n", encoding="utf-8")


def made_by_lmkit(folder: str | Path) -> bool:
    """True for a run folder whose run.json lmkit wrote (also a partial, still-training one) or a marked
    folder. A file that merely has that name, or JSON of another shape, does not count."""
    folder = Path(folder)
    for name, keys in ((RUN_FILE, ("schema", "kind", "protocol")), (MARKER_FILE, ("lmkit",))):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(data, dict) and all(k in data for k in keys):
            return True
    return False


def protected_reason(folder: str | Path) -> str | None:
    """Why `folder` must never be replaced or written over as a whole, or None."""
    target = real(folder)
    cwd = real(os.getcwd())
    if target == cwd:
        return "it is the working directory"
    if cwd.is_relative_to(target):
        return "it holds the working directory"
    if target == real(Path.home()):
        return "it is the home folder"
    if target == target.parent or os.path.ismount(target):
        return "it is a filesystem root"
    return None


def check_distinct(output: str | Path, inputs: Iterable[str | Path | None] = (), *,
                   flag: str = "-o", run_folders: Iterable[str | Path] = ()) -> None:
    """An output may not be an input, hold an input, or lie inside an input run folder.

    `inputs` are files or folders the command reads ('-' and None are skipped); `run_folders` are input
    folders whose inside is off limits too (a run folder must stay as lmkit wrote it)."""
    out = real(output)
    for given in inputs:
        if given is None or str(given) == "-":
            continue
        path = real(given)
        if path == out:
            raise UsageError(f"{flag} {output}: is also an input of this command ({given}); writing it would "
                             "destroy the input, choose another output")
        if path.is_relative_to(out):
            raise UsageError(f"{flag} {output}: holds the input {given}; writing there could destroy it, "
                             "choose another output")
    for folder in run_folders:
        if out.is_relative_to(real(folder)):
            raise UsageError(f"{flag} {output}: is inside the input run folder {folder}; lmkit does not write "
                             "into a run folder it reads, choose another output")


def check_output_dir(path: str | Path, force: bool, *, inputs: Iterable[str | Path | None] = (),
                     run_folders: Iterable[str | Path] = (), flag: str = "-o") -> Path:
    """Check an output folder before any work; returns the folder to write (a symlink resolved).

    An existing non-empty folder is refused without `force`; with it, replaced only when lmkit made it
    and it is not protected (see the module docstring)."""
    given = Path(path)
    if str(path) in ("", "."):
        given = Path(".")
    if given.is_symlink():
        if not given.exists():
            raise UsageError(f"{flag} {path}: is a symbolic link to nothing; give a real folder")
        given = real(given)
    if given.exists() and not given.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    reason = protected_reason(given) if given.exists() else None
    if reason:
        raise UsageError(f"{flag} {str(path) or repr('')}: refused, {reason}; lmkit writes into a folder of its own "
                         "(e.g. -o runs/NAME)")
    check_distinct(given, inputs, flag=flag, run_folders=run_folders)
    if given.exists():
        if any(given.iterdir()):
            if not force:
                raise UsageError(f"{flag} {path}: folder exists and is not empty (use --force to replace it)")
            if not made_by_lmkit(given):
                raise UsageError(f"{flag} {path}: not replaced, it is not a folder lmkit made (no run.json or "
                                 f"{MARKER_FILE} written by lmkit); --force replaces only lmkit's own folders")
    return given
