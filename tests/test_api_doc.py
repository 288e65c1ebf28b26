"""docs/api.md's example runs as written (issue 18, point 10): its python block is extracted and run in a
child process, in a temporary folder holding a shortened copy of the bundled corpus, with the LSTM's
one-minute budget replaced by a few hundred tokens of a small LSTM; what it prints is checked against
the vocabulary and run folders it wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from clitools import child_env

REPO = Path(__file__).resolve().parents[1]
BUDGET = 'train_options={"max_tokens": 300_000, "batch_size": 16}'
TINY = 'train_options={"max_tokens": 400, "batch_size": 16, "device": "cpu"}'
LINES = 300


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/api.md has one python example"
    assert blocks[0].count(BUDGET) == 1, f"the example's budget changed: update BUDGET ({BUDGET})"
    return blocks[0].replace(BUDGET, TINY)


def test_the_api_example_runs_and_prints_the_comparison(tmp_path):
    for split in ("train", "valid", "test"):
        target = tmp_path / "corpora" / "shakespeare" / f"{split}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(REPO / "corpora" / "shakespeare" / f"{split}.txt", encoding="utf-8") as f:
            target.write_text("".join(line for _, line in zip(range(LINES), f)), encoding="utf-8")
    (tmp_path / "example.py").write_text(example(), encoding="utf-8")
    p = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=child_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    size, first, second, keys = p.stdout.splitlines()
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert size == f"vocabulary: {vocab['size']:,} ids"
    records = {name: json.loads((tmp_path / "runs" / name / "run.json").read_text()) for name in ("kn5", "lstm")}
    assert {r["vocab_id"] for r in records.values()} == {vocab["vocab_id"]}  # both on the one vocabulary
    printed = {}
    for rank, line in enumerate((first, second), start=1):
        m = re.fullmatch(rf"{rank}\. (\S+) +test perplexity +([\d.]+), ([\d,]+) parameters", line)
        assert m, line
        printed[m.group(1)] = (float(m.group(2)), int(m.group(3).replace(",", "")))
    assert set(printed) == {"ngram:kn5", "lstm"}
    ppl = {model: value for model, (value, _) in printed.items()}
    assert first.split()[1] == min(ppl, key=ppl.get)  # best first
    for name, model in (("kn5", "ngram:kn5"), ("lstm", "lstm")):
        assert printed[model][0] == round(records[name]["metrics"]["test"]["perplexity"], 2), records[name]["metrics"]
        assert printed[model][1] == records[name]["parameters"]
    columns = json.loads(keys.replace("'", '"'))
    assert columns == sorted(columns) and {"model", "rank", "test_ppl", "valid_ppl", "parameters"} <= set(columns)
