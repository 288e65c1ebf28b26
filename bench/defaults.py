"""Do the defaults win? Every neural family with no flag but a short time budget, against the unigram.

    python bench/defaults.py                          # --time-budget 40s on corpora/shakespeare
    python bench/defaults.py --budget 60s --only lstm,transformer
    python bench/defaults.py --corpus ../shared/corpora/ptb -- --context stream   # extra train options after --
    python bench/defaults.py --translate-corpus ''    # no translation rows

Issue 20's first target: `lmkit train --model M --corpus corpora/shakespeare --time-budget 40s`, with no
other flag, scores a test perplexity of at most 0.6 x the unigram model's (`ngram:mle1`, trained on the same
split in the same run) for every neural family of the registry (the RNN cells as `--cell`). The encoder-decoder
families are translation models: they are measured on their task instead (--translate-corpus, Multi30k de->en,
against `ngram:mle1` trained as a translation model on the same corpus: both score the English side). Each
command runs
as a user runs it, in its own process, one after the other; the table gives test perplexity, its ratio to the
unigram's, OK or MISS, and the wall time of the whole command. A benchmark, not a test: run it on an
otherwise idle machine and say so next to the figures (docs/results.md).
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

from lmkit.models import families  # noqa: E402

TARGET_RATIO = 0.6  # issue 20: test perplexity <= 0.6 x the unigram's
CELLS = {"lstm": ["--cell", "gru"]}  # the RNN family also runs as a GRU


TRANSLATE = ["--task", "translate", "--src", "de", "--tgt", "en"]


def is_translation_family(fam) -> bool:
    from lmkit.models.encdec import EncoderDecoderLM

    return issubclass(fam.model_class, EncoderDecoderLM)


def lineup(translation: bool) -> dict[str, list[str]]:
    """name -> `lmkit train` model flags: the neural language-model families of the registry plus the GRU cell,
    or (translation) the encoder-decoder families."""
    out = {}
    for fam in families():
        if fam.neural and is_translation_family(fam) == translation:
            out[fam.kind] = ["--model", fam.kind]
            if fam.kind in CELLS:
                out["gru"] = ["--model", fam.kind, *CELLS[fam.kind]]
    return out


def run_one(name: str, flags: list[str], corpus: Path, extra: list[str], work: Path) -> dict:
    """One whole `lmkit train` command in a child process, timed; its test perplexity from run.json."""
    out = work / name.replace(":", "-")
    cmd = [sys.executable, "-m", "lmkit", "train", *flags, "--corpus", str(corpus), "-o", str(out), "-q", *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    row = {"model": name, "wall_s": time.monotonic() - start, "exit": proc.returncode}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    record = json.loads((out / "run.json").read_text())
    row["test_ppl"] = record["metrics"].get("test", {}).get("perplexity")
    row["steps"] = (record.get("fit_info") or {}).get("step")
    return row


def table(models: dict, corpus: Path, budget: str, task: list[str], extra: list[str], work: Path) -> int:
    """Print the unigram and every model's row for one corpus (`task`: flags of both); the number of misses."""
    unigram = run_one("ngram:mle1", ["--model", "ngram:mle1"], corpus, task, work)
    if unigram.get("test_ppl") is None:
        print(f"unigram failed: {unigram.get('error')}", file=sys.stderr)
        return 1
    base = unigram["test_ppl"]
    print(f"{corpus}: unigram (ngram:mle1) test perplexity {base:.2f}; target: <= {TARGET_RATIO} x = "
          f"{TARGET_RATIO * base:.2f}")
    print(f"{'model':<22} {'test ppl':>10} {'x unigram':>10} {'steps':>7} {'wall s':>7}  verdict")
    missed = 0
    for name, flags in models.items():
        row = run_one(name, flags + ["--time-budget", budget], corpus, task + extra, work)
        ppl = row.get("test_ppl")
        if ppl is None:
            missed += 1
            print(f"{name:<22} {'-':>10} {'-':>10} {'-':>7} {row['wall_s']:7.1f}  FAILED: {row.get('error')}")
            continue
        ratio = ppl / base
        ok = ratio <= TARGET_RATIO
        missed += not ok
        print(f"{name:<22} {ppl:10.2f} {ratio:10.3f} {row.get('steps') or 0:7d} {row['wall_s']:7.1f}  "
              f"{'OK' if ok else 'MISS'}", flush=True)
    return missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="40s")
    ap.add_argument("--corpus", type=Path, default=REPO / "corpora" / "shakespeare")
    ap.add_argument("--translate-corpus", default=str(REPO.parent / "shared" / "corpora" / "multi30k"),
                    help="parallel corpus (train.de/train.en ...) for the encoder-decoder families; '' skips them")
    ap.add_argument("--only", default=None, help="comma-separated names (default: every neural family and gru)")
    ap.add_argument("extra", nargs="*", help="more `lmkit train` options for the neural runs (after --)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    missed = 0
    with tempfile.TemporaryDirectory(prefix="lmkit-defaults-") as tmp:
        for translation in (False, True):
            models = {k: v for k, v in lineup(translation).items() if only is None or k in only}
            corpus = Path(args.translate_corpus) if translation else args.corpus
            if not models or (translation and not args.translate_corpus):
                continue
            if translation and not (corpus / "train.en").is_file():
                print(f"note: {corpus} has no train.en: the encoder-decoder families are skipped", file=sys.stderr)
                continue
            work = Path(tmp) / ("translate" if translation else "lm")
            work.mkdir()
            missed += table(models, corpus, args.budget, TRANSLATE if translation else [], args.extra, work)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
