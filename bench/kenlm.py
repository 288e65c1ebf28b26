"""lmkit against KenLM on the same n-gram work, side by side in one run: whole processes, wall and peak memory.

    python bench/kenlm.py --kenlm-bin ~/kenlm/build/bin                 # PTB, then a 10M-token corpus
    python bench/kenlm.py --kenlm-bin DIR --sizes ptb,10M,100M --memory 2G --pairs 5

KenLM is not a dependency and is never built by CI: build `lmplz`, `query` and `build_binary` from KenLM's
source once (docs/benchmarks.md, "lmkit against KenLM", says how) and pass their folder. Without it the
KenLM column is skipped with a note and only lmkit's figures are printed.

For each corpus (PTB, its `<unk>` renamed `<oov>` in a copy both read, because lmplz refuses a literal `<unk>`;
or a synthetic Zipfian corpus of the given size written as bench/ngram_scale.py does),
the two pipelines do the same work -- a modified Kneser-Ney 5-gram over every word (sentence context, min-count
1: KenLM's conventions), the test set scored -- as a user runs them:

- train:  `lmkit train --model ngram:kn5 --context sentence --min-count 1 --corpus DIR` (fit, valid and test
          scoring, checks; a fresh, empty token cache) against `lmplz -o 5 < train.txt > model.arpa` followed
          by `query model.arpa < test.txt` (wall = the sum, peak = the larger of the two processes);
- load:   scoring a one-line text with the ARPA file lmplz wrote, `lmkit score model.arpa one.txt` against
          `query model.arpa < one.txt`: almost all of it is reading the model;
- score:  tokens per second of scoring the test set repeated --score-repeat times (so that scoring, not the
          load, dominates): (whole run - load run) for each tool on the same ARPA file, and, where `build_binary`
          sits beside `query`, for query on KenLM's probing binary of that file too: its load is short enough
          that the difference of the two runs is not lost in the load's noise, as it can be on a large ARPA file.

Each measurement is the median of --pairs runs, lmkit and KenLM alternating so that a change in the machine's
load hits both. With --memory both get the same bound (lmplz -S, lmkit --memory); without it lmplz is given
-S 1G. Perplexities are printed beside the times: the two must agree (they do to 0.1 %, docs/ngram.md).
A benchmark, not a test: run it on an otherwise idle machine; the load average is printed with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from ngram_scale import LMKIT, REPO, load_average, mib, parse_size, run, write_corpus  # noqa: E402

PTB = REPO.parent / "shared" / "corpora" / "ptb"
TOOLS = ("lmplz", "query")


def kenlm_tools(folder: Path | None) -> dict[str, Path] | None:
    """lmplz and query from --kenlm-bin, else from PATH; None when either is missing."""
    found = {}
    for tool in TOOLS:
        path = (folder / tool) if folder else (Path(p) if (p := shutil.which(tool)) else None)
        if path is None or not path.is_file():
            return None
        found[tool] = path
    binary = (folder / "build_binary") if folder else (Path(p) if (p := shutil.which("build_binary")) else None)
    if binary is not None and binary.is_file():  # optional: query on KenLM's own binary format too
        found["build_binary"] = binary
    return found


def query_perplexity(stdout: str) -> float | None:
    """KenLM query's 'Perplexity including OOVs:' figure."""
    hit = re.search(r"Perplexity including OOVs:\s*([0-9.eE+-]+)", stdout)
    return float(hit.group(1)) if hit else None


def lmkit_train(corpus: Path, work: Path, memory: str | None, env: dict) -> dict:
    out = work / "lmkit-run"
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))  # a cold token cache for every run
    cmd = [*LMKIT, "train", "--model", "ngram:kn5", "--context", "sentence", "--min-count", "1",
           "--corpus", str(corpus), "-o", str(out), "--force", "-q"]
    if memory:
        cmd += ["--memory", memory, "--tmp", str(work)]
    wall, peak, _, _ = run(cmd, {**env, "LMKIT_CACHE": str(cache)})
    shutil.rmtree(cache, ignore_errors=True)
    record = json.loads((out / "run.json").read_text())
    return {"wall": wall, "peak": peak, "ppl": record["metrics"]["test"]["perplexity"]}


def kenlm_train(tools: dict, corpus: Path, work: Path, memory: str | None, env: dict) -> dict:
    arpa = work / "kenlm.arpa"
    # --discount_fallback: a large synthetic corpus may have no n-gram of some count-of-counts class, where
    # lmplz stops and lmkit falls back to fixed discounts by itself (with a warning); both then use 0.5 1 1.5
    wall_fit, peak_fit, _, _ = run([str(tools["lmplz"]), "-o", "5", "-S", memory or "1G", "-T", str(work),
                                    "--discount_fallback", "--arpa", str(arpa)], env, stdin=corpus / "train.txt")
    wall_q, peak_q, stdout, _ = run([str(tools["query"]), str(arpa)], env, stdin=corpus / "test.txt")
    return {"wall": wall_fit + wall_q, "peak": max(peak_fit, peak_q), "ppl": query_perplexity(stdout)}


def scoring(tools: dict | None, arpa: Path, lmkit_reads_arpa: bool, run_dir: Path, text: Path, one: Path,
            env: dict) -> dict:
    """Load and scoring figures on the same n-grams: lmkit on the ARPA file (if `lmkit_reads_arpa`) and on its
    own run folder, KenLM's query on the ARPA file."""
    out = {}
    models = {"lmkit run folder": run_dir, **({"lmkit": arpa} if lmkit_reads_arpa else {})}
    for name, model in models.items():
        lm_load, lm_load_peak, _, _ = run([*LMKIT, "score", str(model), str(one), "--format", "json"], env)
        lm_all, lm_peak, _, _ = run([*LMKIT, "score", str(model), str(text), "--format", "json"], env)
        out[name] = {"load": lm_load, "score": lm_all - lm_load, "peak": max(lm_load_peak, lm_peak)}
    if tools is not None:
        binary = arpa.with_suffix(".binary")
        for name, model in (("kenlm", arpa), ("kenlm binary", binary)):
            if not model.exists():
                continue
            q_load, q_load_peak, _, _ = run([str(tools["query"]), str(model)], env, stdin=one)
            q_all, q_peak, _, _ = run([str(tools["query"]), str(model)], env, stdin=text)
            out[name] = {"load": q_load, "score": q_all - q_load, "peak": max(q_load_peak, q_peak)}
    return out


def rate(tokens: int, seconds: float) -> str:
    """Tokens per second of the scoring time (whole run minus load run); n/a when noise hid it."""
    return f"{tokens / seconds:,.0f} tokens/s" if seconds > 0 else "n/a tokens/s"


def median_of(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) if isinstance(rows[0][k], (int, float)) else rows[0][k]
            for k in rows[0]}


def measure(name: str, corpus: Path, tools: dict | None, args, work: Path, env: dict) -> list[str]:
    """The printed lines of one corpus: train pairs, then load and score pairs on KenLM's (or lmkit's) ARPA."""
    test_lines = (corpus / "test.txt").read_text().splitlines()
    big = work / "test-repeated.txt"
    big.write_text("\n".join(test_lines * args.score_repeat) + "\n")
    test_tokens = sum(len(line.split()) + 1 for line in test_lines) * args.score_repeat
    lines = [f"## {name}: {corpus} (load average before: {load_average()})"]
    lm_rows, ken_rows = [], []
    for _ in range(args.pairs):
        lm_rows.append(lmkit_train(corpus, work, args.memory, env))
        if tools is not None:
            ken_rows.append(kenlm_train(tools, corpus, work, args.memory, env))
    lm = median_of(lm_rows)
    lines.append(f"train  lmkit  wall {lm['wall']:.2f} s  peak {mib(lm['peak'])} MiB  test ppl {lm['ppl']:.2f}")
    print(lines[-1], flush=True)
    if tools is None:
        arpa = work / "lmkit.arpa"
        run([*LMKIT, "export-arpa", str(work / "lmkit-run"), "-o", str(arpa)], env)
    else:
        ken = median_of(ken_rows)
        lines.append(f"train  kenlm  wall {ken['wall']:.2f} s  peak {mib(ken['peak'])} MiB  test ppl {ken['ppl']:.2f}")
        lines.append(f"train  ratio lmkit/kenlm  wall {lm['wall'] / ken['wall']:.2f}x  "
                     f"peak {lm['peak'] / ken['peak']:.2f}x")
        print("\n".join(lines[-2:]), flush=True)
        arpa = work / "kenlm.arpa"
        if "build_binary" in tools:  # KenLM's probing binary: query loads it in a fraction of the ARPA's time
            run([str(tools["build_binary"]), str(arpa), str(arpa.with_suffix(".binary"))], env)
    one = work / "one.txt"
    one.write_text((corpus / "test.txt").read_text().splitlines()[0] + "\n")
    arpa_mb = arpa.stat().st_size / 2**20
    lmkit_arpa = arpa_mb <= args.arpa_max_mb
    if not lmkit_arpa:
        lines.append(f"note: lmkit's ARPA reader skipped ({arpa_mb:,.0f} MiB > --arpa-max-mb {args.arpa_max_mb}): it "
                     "is skipped above this size to keep the bench short")
    pairs = [scoring(tools, arpa, lmkit_arpa, work / "lmkit-run", big, one, env)
             for _ in range(args.score_pairs or args.pairs)]
    for tool in pairs[0]:
        m = median_of([p[tool] for p in pairs])
        lines.append(f"score  {tool:<16}  load {m['load']:.2f} s  score {rate(test_tokens, m['score'])}  "
                     f"peak {mib(m['peak'])} MiB  ({arpa_mb:,.0f} MiB ARPA)")
    for ken_name, ken_model in (("kenlm", "the ARPA"), ("kenlm binary", "its binary")):
        if ken_name not in pairs[0]:
            continue
        ken_s = median_of([p[ken_name] for p in pairs])
        # own format against own format: query's binary is compared with lmkit's run folder only
        for name in (n for n in pairs[0] if n.startswith("lmkit") and (ken_name == "kenlm" or n != "lmkit")):
            lm_s = median_of([p[name] for p in pairs])
            speed = (f"{ken_s['score'] / lm_s['score']:.2f}x" if min(ken_s["score"], lm_s["score"]) > 0
                     else "n/a (scoring hidden by the load's noise: raise --score-repeat)")
            lines.append(f"score  ratio {name}/kenlm query on {ken_model}  load {lm_s['load'] / ken_s['load']:.2f}x  "
                         f"scoring speed {speed}")
    lines.append(f"(load average after: {load_average()})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kenlm-bin", type=Path, default=None, help="folder holding lmplz and query (else PATH)")
    ap.add_argument("--sizes", default="ptb,10M", help="ptb and/or token counts of synthetic corpora (10M, 100M)")
    ap.add_argument("--types", type=int, default=50_000, help="word types of a synthetic corpus")
    ap.add_argument("--memory", default=None, help="the same memory bound for both (lmplz -S, lmkit --memory)")
    ap.add_argument("--pairs", type=int, default=5, help="runs of each tool per measurement (median)")
    ap.add_argument("--score-pairs", type=int, default=None, help="runs per load/score measurement (default: --pairs)")
    ap.add_argument("--arpa-max-mb", type=float, default=4000.0,
                    help="skip lmkit's ARPA reader on larger files (it needs ~4x the file in memory)")
    ap.add_argument("--score-repeat", type=int, default=20, help="copies of the test set scored for speed")
    ap.add_argument("--keep", type=Path, default=None, help="write corpora and models here (kept)")
    args = ap.parse_args()
    tools = kenlm_tools(args.kenlm_bin)
    if tools is None:
        print("note: KenLM's lmplz/query not found (--kenlm-bin DIR or PATH): the KenLM column is skipped; "
              "docs/benchmarks.md says how to build them", file=sys.stderr)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(f"# python {sys.version.split()[0]}; {os.cpu_count()} cpus; pairs {args.pairs}; memory {args.memory}")
    with tempfile.TemporaryDirectory(prefix="lmkit-kenlm-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for size in args.sizes.split(","):
            work = root / size
            work.mkdir(exist_ok=True)
            if size.lower() == "ptb":
                if not (PTB / "train.txt").is_file():
                    print(f"note: {PTB} not found: PTB skipped", file=sys.stderr)
                    continue
                corpus = work / "corpus"
                if not corpus.exists():  # lmplz refuses a literal <unk> in its input: the same renamed copy for both
                    corpus.mkdir()
                    for split in ("train", "valid", "test"):
                        text = (PTB / f"{split}.txt").read_text(encoding="utf-8")
                        (corpus / f"{split}.txt").write_text(text.replace("<unk>", "<oov>"), encoding="utf-8")
            else:
                corpus = work / "corpus"
                if not corpus.exists():
                    write_corpus(corpus, parse_size(size), args.types, seed=0)
            print("\n".join(measure(size, corpus, tools, args, work, env)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
