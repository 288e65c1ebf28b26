"""Does --time-budget hold? Wall time of a whole `lmkit train --time-budget` command per neural family.

    python bench/budget.py                     # every family, --time-budget 20s, on corpora/shakespeare
    python bench/budget.py --budget 60s --only mlp,transformer
    python bench/budget.py --corpus ../shared/corpora/ptb -- --threads 1   # extra train options after --

Each family runs as a user runs it, in its own process (`python -m lmkit train --model M --corpus C
--time-budget B -o TMP --log-format json`), timed from start to exit. The goal (issue 18): every command
ends within budget + 10 % + 5 s. Per family it prints the wall time, the limit, what the run reserved
for the final measurement (fit_info.budget in run.json), the training seconds and steps, and OK or OVER.
The RNN cells (lstm, gru, rnn) are one family with `--cell`. A benchmark, not a test: run it on an
otherwise idle machine (a loaded one slows scoring down after the reserve was estimated).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmkit.training.config import parse_duration  # noqa: E402

FAMILIES = {"mlp": ["--model", "mlp"], "lstm": ["--model", "lstm"], "gru": ["--model", "lstm", "--cell", "gru"],
            "rnn": ["--model", "lstm", "--cell", "rnn"], "transformer": ["--model", "transformer"]}


def run_one(name: str, corpus: Path, budget: str, extra: list[str], work: Path) -> dict:
    """One timed `lmkit train` in a child process; what its run.json says about the budget."""
    out = work / name
    cmd = [sys.executable, "-m", "lmkit", "train", *FAMILIES[name], "--corpus", str(corpus), "--time-budget", budget,
           "-o", str(out), "--log-format", "json", *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.monotonic() - start
    row = {"family": name, "exit": proc.returncode, "wall_s": wall}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    record = json.loads((out / "run.json").read_text())
    fit, b = record["fit_info"], record["fit_info"].get("budget", {})
    row.update(train_s=fit.get("train_seconds"), steps=fit.get("step"), reserve_s=b.get("reserve_seconds"),
               checks=b.get("checks"), valid_ppl=record["metrics"].get("valid", {}).get("perplexity"))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="20s")
    ap.add_argument("--corpus", type=Path, default=REPO / "corpora" / "shakespeare")
    ap.add_argument("--only", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("extra", nargs="*", help="more `lmkit train` options (after --)")
    args = ap.parse_args()
    seconds = parse_duration(args.budget)
    limit = seconds * 1.10 + 5
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"error: unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}", file=sys.stderr)
        return 2
    print(f"--time-budget {args.budget} on {args.corpus}: each command must end within {limit:.1f} s")
    print(f"{'family':<12} {'wall s':>7} {'limit s':>7} {'reserve s':>9} {'train s':>8} {'steps':>6} "
          f"{'checks':>6} {'valid ppl':>10}  verdict")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="lmkit-budget-") as tmp:
        for name in names:
            r = run_one(name, args.corpus, args.budget, args.extra, Path(tmp))
            ok = r["exit"] == 0 and r["wall_s"] <= limit
            failed += not ok
            if r["exit"] != 0:
                print(f"{name:<12} {r['wall_s']:7.1f} {limit:7.1f}  failed (exit {r['exit']}): {r['error']}")
                continue
            ppl = f"{r['valid_ppl']:10.1f}" if r["valid_ppl"] is not None else f"{'-':>10}"
            print(f"{name:<12} {r['wall_s']:7.1f} {limit:7.1f} {r['reserve_s'] or 0:9.1f} {r['train_s']:8.1f} "
                  f"{r['steps']:6d} {str(r['checks']):>6} {ppl}  {'OK' if ok else 'OVER'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
