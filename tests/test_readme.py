"""The README's commands work as written: the install block's and the quick tour's cheap commands run,
in order, in a temporary copy of the bundled corpus (no file beside the repository is needed).

Commands that train neural models, download, or read `../shared` are left out by SKIP (they are
minutes long or need data this test must not assume); at least MIN_RUN commands must run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from clitools import child_env

REPO = Path(__file__).resolve().parents[1]
SKIP = ("../shared", "torchrun", "--model mlp", "--model lstm", "--model transformer", "runs/tf", "runs/mlp",
        "runs/lstm", "corpus download", "verify", "curve", "--seeds", "--corpus ../", "runs/*", "big/",
        "wikitext", "my.txt", "pip install", "pytest", "lmkit compare --corpus", "lmkit bleu", "lmkit mix",
        "lmkit analyze", "lmkit check")
MIN_RUN = 10


def readme_blocks() -> list[list[str]]:
    """The `lmkit ...` lines of each of the README's bash blocks, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.replace("\\\n", " ").splitlines()]
        blocks.append([line for line in lines if line.startswith("lmkit ") or "| lmkit " in line])
    return blocks


def test_readme_commands_run_as_written(tmp_path):
    """In a fresh folder holding a copy of corpora/, as a user who follows the README has; a command the
    README repeats (the quick tour starts with the install block's training) runs once."""
    shutil.copytree(REPO / "corpora", tmp_path / "corpora")
    ran: list[str] = []
    for command in (c for block in readme_blocks() for c in block):
        if any(s in command for s in SKIP) or command in ran:
            continue
        shell = re.sub(r"(^|\|\s*)lmkit ", lambda m: f"{m.group(1)}{sys.executable} -m lmkit ", command)
        p = subprocess.run(shell, shell=True, cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, f"README command failed: {command}\n{p.stderr[-2000:]}"
        ran.append(command)
    assert len(ran) >= MIN_RUN, ran
    assert any("export-arpa" in c for c in ran) and any("| lmkit score" in c for c in ran)
