"""n-gram counting at scale: time and peak memory of `lmkit train --model ngram:kn5` from 1M to 100M tokens.

    python bench/ngram_scale.py                          # 1M and 10M tokens, --memory 64M (+ in memory)
    python bench/ngram_scale.py --sizes 1M,10M,100M      # 100M: counting alone (see --commands-max), ~20 min
    python bench/ngram_scale.py --memory 256M --in-memory-max 0 --keep /scratch/scale
    python bench/ngram_scale.py --sizes 1M --dask local:2     # adds a Dask row (a LocalCluster of 2 workers)

For each size a synthetic corpus is written to a temp folder: i.i.d. Zipfian words (s = 1.1 over
--types word types, seeded) in lines whose lengths follow PTB's (gamma, mean 21 words), plus 10,000-word
valid and test files. As for a real large run it is prepared once, outside the measurements:
`lmkit vocab build` and `lmkit encode` (a memory-mapped token file, in a private cache), so the training
text is never held in memory. Then every measurement runs in a process of its own:

1. the command, `lmkit train --model ngram:kn5 --corpus DIR --vocab vocab.json [--memory M --tmp SPILL]`:
   fit s (run.json train_seconds: counting + smoothing), wall s (start-up, scoring valid and test,
   writing the run included), seconds per million training tokens, peak RSS (os.wait4's ru_maxrss),
   stored n-grams and test perplexity (equal on every path);
2. counting alone, the same counting call NgramModel.fit makes on the token file (count_ngrams, or
   count_external with --memory): seconds, peak RSS, RSS before counting, the finished count tables'
   bytes, and peak - before - tables: the resident memory counting needed beyond its result, the figure
   --memory bounds.

The machine's load average is printed beside every row: on a shared machine these are not idle timings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LMKIT = [sys.executable, "-m", "lmkit"]
HELD_OUT_WORDS = 10_000
ORDER = 5


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def write_corpus(folder: Path, tokens: int, types: int, seed: int) -> None:
    """train/valid/test of i.i.d. Zipf(1.1) words in PTB-like lines; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, types + 1) ** 1.1
    cdf = np.cumsum(weights / weights.sum())
    words = np.array([f"w{i}" for i in range(types)], dtype=object)
    folder.mkdir(parents=True)
    for split, size in (("train", tokens), ("valid", HELD_OUT_WORDS), ("test", HELD_OUT_WORDS)):
        with open(folder / f"{split}.txt", "w", encoding="utf-8") as fh:
            left = size
            while left > 0:
                lengths = np.maximum(1, np.rint(rng.gamma(4.0, 5.3, size=20_000))).astype(np.int64)
                lengths = lengths[np.cumsum(lengths) <= left] if lengths.sum() > left else lengths
                if lengths.size == 0:
                    lengths = np.array([left])
                ids = np.searchsorted(cdf, rng.random(int(lengths.sum())))
                flat = words[np.minimum(ids, types - 1)]
                ends = np.cumsum(lengths)
                fh.write("".join(" ".join(flat[e - n:e]) + "\n" for n, e in zip(lengths.tolist(), ends.tolist())))
                left -= int(lengths.sum())


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(cmd: list[str], env: dict, stdin: Path | None = None) -> tuple[float, int, str, str]:
    """(wall seconds, peak RSS bytes, stdout, stderr) of one command in a process of its own, reading `stdin`
    (a file) if given.

    The child is reaped with os.wait4, whose rusage is that child's alone (output goes to temp files, so
    no pipe can fill up while we wait)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            open(stdin or os.devnull, "rb") as source:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=source, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{stderr}")
    return wall, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024), stdout, stderr


def mib(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f}"


# -- counting alone (run as `python bench/ngram_scale.py --count-only ...` in a child process) -------------
def count_only(corpus: Path, vocab_path: Path, memory: str | None, spill: Path) -> dict:
    from lmkit.data.tokenfile import lookup
    from lmkit.data.vocab import Vocab
    from lmkit.models.ngram.counts import count_ngrams
    from lmkit.models.ngram.external import count_external
    from lmkit.models.ngram.resources import parse_memory
    from lmkit.models.ngram.sorted_runs import current_rss_bytes, peak_rss_bytes, table_bytes
    from lmkit.protocol import Protocol

    vocab = Vocab.load(vocab_path)
    found = lookup(corpus / "train.txt", vocab, Protocol())
    if found is None:
        raise SystemExit("no token file for the training split (lmkit encode did not run?)")
    sequences = found.encoded().sequences
    before = current_rss_bytes()
    start = time.perf_counter()
    if memory is None:
        counts, info = count_ngrams(sequences, len(vocab), ORDER, "sentence"), {}
    else:
        counts, info = count_external(sequences, len(vocab), ORDER, "sentence", parse_memory(memory), spill)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "before": before, "peak": peak_rss_bytes(), "tables": table_bytes(counts),
            "chunks": info.get("chunks", 1), "spilled": info.get("spilled_bytes", 0)}


# -- the measurement ---------------------------------------------------------------------------------------
def measure(size: int, work: Path, args, env: dict) -> list[dict]:
    corpus = work / f"corpus-{size}"
    start = time.perf_counter()
    if not (corpus / "test.txt").exists():  # a corpus kept (--keep) by an earlier run is reused
        write_corpus(corpus, size, args.types, args.seed)
    vocab = work / f"vocab-{size}.json"
    subprocess.run(LMKIT + ["vocab", "build", str(corpus / "train.txt"), "-o", str(vocab)], env=env, check=True,
                   capture_output=True)
    subprocess.run(LMKIT + ["encode", "--corpus", str(corpus), "--vocab", str(vocab), "-q"], env=env, check=True,
                   capture_output=True)
    print(f"# {size:,} tokens: corpus, vocabulary and token files in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    paths = [("external", args.memory, ["--memory", args.memory, "--tmp", str(work / "spill")])]
    if size <= parse_size(args.in_memory_max):
        paths.insert(0, ("in memory", None, []))
    if args.dask:
        paths.append((f"dask {args.dask}", None, ["--engine", "dask", "--scheduler", args.dask]))
    rows = []
    for name, memory, extra in paths:
        out = work / f"run-{size}-{name.replace(' ', '-').replace(':', '')}"
        cmd = LMKIT + ["train", "--model", f"ngram:kn{ORDER}", "--corpus", str(corpus), "--vocab", str(vocab),
                       "-o", str(out), "--force", *extra]
        row = {"tokens": size, "path": name, "memory": memory or "–"}
        if size <= parse_size(args.commands_max):
            load = load_average()
            wall, peak, _, _ = run(cmd, env)
            record = json.loads((out / "run.json").read_text())
            row.update({"tokens": record["tokens_seen"], "fit_s": record["train_seconds"], "wall_s": wall,
                        "peak_rss": peak, "ngrams": sum(record["fit_info"]["ngrams"]),
                        "test_ppl": record["metrics"]["test"]["perplexity"], "load": load,
                        "command": "lmkit " + " ".join(cmd[3:])})
            row["s_per_M"] = row["fit_s"] / (row["tokens"] / 1e6)
            print(f"# {name}: {row['fit_s']:.1f} s fit, {wall:.1f} s wall, peak {mib(peak)} MiB", file=sys.stderr)
        if not name.startswith("dask"):
            only = [sys.executable, str(Path(__file__).resolve()), "--count-only", str(corpus), "--vocab-file",
                    str(vocab), "--spill", str(work / "spill")] + (["--memory", memory] if memory else [])
            row["count_load"] = load_average()
            _, count_peak, stdout, _ = run(only, env)
            row["count"] = {**json.loads(stdout), "peak": count_peak}
            print(f"# {name}, counting alone: {row['count']['seconds']:.1f} s, peak {mib(count_peak)} MiB",
                  file=sys.stderr)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return rows


def tables(rows: list[dict]) -> str:
    out = ["The command (lmkit train --model ngram:kn5 ... on the token file):", "",
           "| tokens | path | --memory | fit s | wall s | fit s / M tokens | peak RSS MiB | n-grams | test ppl "
           "| load avg 1/5/15 min |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if "fit_s" not in r:
            continue
        out.append(f"| {r['tokens']:,} | {r['path']} | {r['memory']} | {r['fit_s']:.1f} | {r['wall_s']:.1f} | "
                   f"{r['s_per_M']:.2f} | {mib(r['peak_rss'])} | {r['ngrams']:,} | {r['test_ppl']:.2f} | {r['load']} |")
    out += ["", "Counting alone (the call NgramModel.fit makes; peak - before - tables = what counting needed "
            "beyond its result):", "",
            "| tokens | path | --memory | count s | peak RSS MiB | before MiB | tables MiB "
            "| peak - before - tables MiB | chunks | spilled MiB | load avg 1/5/15 min |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        c = r.get("count")
        if c is None:
            continue
        work = c["peak"] - c["before"] - c["tables"] if c["before"] is not None else None
        out.append(f"| {r['tokens']:,} | {r['path']} | {r['memory']} | {c['seconds']:.1f} | {mib(c['peak'])} | "
                   f"{mib(c['before'])} | {mib(c['tables'])} | {mib(work)} | {c['chunks']:,} | {mib(c['spilled'])} | "
                   f"{r['count_load']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,10M", help="training tokens per corpus, comma-separated (1M,10M,100M)")
    ap.add_argument("--memory", default="64M", help="--memory for the out-of-core runs")
    ap.add_argument("--in-memory-max", default="10M", help="also run the in-memory path up to this size")
    ap.add_argument("--dask", default=None, metavar="SCHEDULER", help="also count on Dask, e.g. local:2")
    ap.add_argument("--commands-max", default="10M", help="above this size measure counting alone, not the whole "
                    "command (KN5 smoothing of 100M Zipfian tokens needs more RAM than the development VM has)")
    ap.add_argument("--types", type=int, default=100_000, help="word types of the Zipfian vocabulary")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep corpora and runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--count-only", type=Path, default=None, help=argparse.SUPPRESS)  # the child of step 2
    ap.add_argument("--vocab-file", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spill", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.count_only is not None:
        print(json.dumps(count_only(args.count_only, args.vocab_file, args.memory if "--memory" in sys.argv else None,
                                    args.spill)))
        return
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    work = args.keep or Path(tempfile.mkdtemp(prefix="lmkit-scale-"))
    (work / "spill").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LMKIT_CACHE": str(work / "cache"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rows = []
    try:
        for size in sizes:
            rows += measure(size, work, args, env)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"python bench/ngram_scale.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}, numpy {np.__version__}; "
          f"load average now {load_average()}\n")
    print(tables(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
