"""A fresh clone works from the README alone (issue 18, point 7): every `lmkit` command of its bash blocks
that is cheap enough runs, in order, as written, in a temporary folder holding nothing but a copy of the
bundled corpus: no file beside the repository (`../shared`), no network, no home folder of the user.

What is left out, and why, is listed in SKIP; everything else must run and exit 0. The copy of the corpus
keeps the first LINES lines of each split, so the tour takes seconds (the commands do not change)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from clitools import child_env

REPO = Path(__file__).resolve().parents[1]
LINES = 3000
SKIP = {  # reason -> what marks such a command
    "trains or reads a neural model (minutes)": r"--model (mlp|lstm|transformer)|runs/(tf|mlp|lstm)\b|--resume|"
                                                r"--models \S*(mlp|lstm|transformer)|^torchrun|^lmkit compare --report",
    "downloads, or reads a downloaded corpus": r"corpus download|--corpus (ptb|multi30k|wikitext-2)\b",
    "needs a corpus, cluster or disk of the user's": r"big/|/scratch|tcp://",
    "needs a pretrained model folder of the user's": r"\bhf:",
    "installs or runs the test suite": r"^pip |pytest",
}
MUST_RUN = ("lmkit vocab show", "lmkit export-arpa", "| lmkit score", "lmkit score kn5.arpa", "lmkit bleu",
            "lmkit compare runs/*", "lmkit plot", "lmkit verify --quick", "lmkit corpus split", "lmkit generate",
            "lmkit --install-completion", "lmkit models", "lmkit corpus list", "lmkit report")


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks, in order, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


def skipped(command: str) -> str | None:
    return next((why for why, mark in SKIP.items() if re.search(mark, command)), None)


def test_readme_needs_nothing_beside_the_repository():
    commands = readme_commands()
    assert commands and not [c for c in commands if "../" in c], "the README must not assume files beside it"
    assert all(c.startswith(("lmkit ", "cat ", "pip ", "python ", "torchrun ")) for c in commands), commands


def test_readme_commands_run_as_written(tmp_path):
    """In a folder with a copy of corpora/ (shortened), a `my.txt` of the user's own, and its own HOME, cache
    and SHELL; offline. A command the README repeats (the quick tour starts with the install block's
    training) runs once."""
    for split in ("train", "valid", "test"):
        target = tmp_path / "corpora" / "shakespeare" / f"{split}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(REPO / "corpora" / "shakespeare" / f"{split}.txt", encoding="utf-8") as f:
            target.write_text("".join(line for _, line in zip(range(LINES), f)), encoding="utf-8")
    shutil.copy(tmp_path / "corpora" / "shakespeare" / "valid.txt", tmp_path / "my.txt")
    (tmp_path / "home").mkdir()
    env = child_env(HOME=str(tmp_path / "home"), SHELL="/bin/bash", LMKIT_OFFLINE="1",
                    LMKIT_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    ran: list[str] = []
    for command in readme_commands():
        if skipped(command) or command in ran:
            continue
        shell = re.sub(r"(^|\|\s*)lmkit ", lambda m: f"{m.group(1)}{sys.executable} -m lmkit ", command)
        p = subprocess.run(shell, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"README command failed: {command}\n{p.stderr[-2000:]}"
        ran.append(command)
    missing = [m for m in MUST_RUN if not any(m in c for c in ran)]
    assert not missing, f"README commands that must run did not: {missing}\nran: {ran}"
    assert (tmp_path / "kn5.arpa").stat().st_size > 0 and (tmp_path / "corpora" / "mine" / "train.txt").exists()
    assert "| model" in (tmp_path / "results.md").read_text()  # compare runs/* --format markdown > results.md
    assert "</html>" in (tmp_path / "report.html").read_text()  # lmkit report runs/* -o report.html
    assert (tmp_path / "home" / ".bash_completions" / "lmkit.sh").exists()  # --install-completion, for $SHELL
