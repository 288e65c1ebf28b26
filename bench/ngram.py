"""n-gram speed and memory on PTB: lmkit against nltk.lm on the same work.

    python bench/ngram.py                      # full run (nltk part takes ~5 minutes)
    python bench/ngram.py --skip-nltk          # lmkit only
    python bench/ngram.py --corpus DIR --nltk-kn-sentences 5

Every measurement runs in its own subprocess so its peak memory (ru_maxrss) is its own. Both systems
start from the text lines already in memory (file reading is not timed):
  fit   = tokenise + vocabulary + encode + estimate  (nltk: padded_everygram_pipeline + fit)
  score = tokenise + encode + log-probability of every test token incl. </s>  (nltk: pad + ngrams +
          logscore per token)
nltk's KneserNeyInterpolated rescans its counts for every query, so scoring all 82,430 PTB test tokens
would take hours: it is fitted on the full training set, scored on the first --nltk-kn-sentences test
sentences, and its scoring time is extrapolated linearly to the whole test set (marked '~').
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ptb"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_baseline(corpus: Path, **_) -> dict:
    """Interpreter + numpy + lmkit + the text in memory: the floor under every lmkit number."""
    import numpy  # noqa: F401

    import lmkit.models.ngram  # noqa: F401
    _lines(corpus / "train.txt"), _lines(corpus / "test.txt")
    return {}


def work_lmkit(corpus: Path, smoothing: str, order: int, **_) -> dict:
    from lmkit.data.corpus import Text, count_tokens, encode
    from lmkit.data.vocab import Vocab
    from lmkit.evaluate.perplexity import score_encoded
    from lmkit.models.ngram import NgramConfig, NgramModel
    from lmkit.protocol import Protocol

    train = Text("train", _lines(corpus / "train.txt"), "")
    test = Text("test", _lines(corpus / "test.txt"), "")
    p = Protocol()
    t0 = time.perf_counter()
    vocab = Vocab.build(count_tokens(train, p), min_count=1)
    m = NgramModel(NgramConfig(order=order, smoothing=smoothing), vocab, p)
    encoded = encode(train, vocab, p)
    te = time.perf_counter()
    m.fit(encoded, None)
    t1 = time.perf_counter()
    s = score_encoded(m, encode(test, vocab, p))
    t2 = time.perf_counter()
    return {"fit_s": t1 - t0, "score_s": t2 - t1, "tokens": s.tokens, "perplexity": s.perplexity,
            "estimate_s": t1 - te}


def work_nltk(corpus: Path, smoothing: str, order: int, sentences: int | None = None, **_) -> dict:
    from nltk.lm import KneserNeyInterpolated, Laplace
    from nltk.lm.preprocessing import pad_both_ends, padded_everygram_pipeline
    from nltk.util import ngrams

    train_lines = _lines(corpus / "train.txt")
    test_lines = _lines(corpus / "test.txt")
    t0 = time.perf_counter()
    train = [ln.split() for ln in train_lines if ln.strip()]
    data, vocab_text = padded_everygram_pipeline(order, train)
    lm = Laplace(order) if smoothing == "laplace" else KneserNeyInterpolated(order)
    lm.fit(data, vocab_text)
    t1 = time.perf_counter()
    test = [ln.split() for ln in test_lines if ln.strip()]
    total_tokens = sum(len(s) + 1 for s in test)
    subset = test if sentences is None else test[:sentences]
    scored, logp = 0, 0.0
    for sent in subset:
        grams = list(ngrams(pad_both_ends(sent, n=order), order))[: len(sent) + 1]
        for g in grams:  # each word and the first </s>, as lmkit and KenLM score
            logp += lm.logscore(g[-1], list(g[:-1]))
            scored += 1
    t2 = time.perf_counter()
    out = {"fit_s": t1 - t0, "score_s": (t2 - t1) * total_tokens / scored, "tokens": total_tokens,
           "scored": scored, "extrapolated": scored < total_tokens}
    if scored == total_tokens:
        out["perplexity"] = 2 ** (-logp / scored)
    return out


WORKERS = {"baseline": work_baseline, "lmkit": work_lmkit, "nltk": work_nltk}


def run(job: dict) -> dict:
    """Run one measurement in a fresh interpreter; returns its numbers plus its peak RSS."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True,
                          text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"bench job {job} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--skip-nltk", action="store_true")
    ap.add_argument("--nltk-kn-sentences", type=int, default=5, help="test sentences nltk KN scores")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        res = WORKERS[job.pop("system")](Path(job.pop("corpus")), **job)
        res["peak_mb"] = _peak_mb()
        print(json.dumps(res))
        return

    corpus = str(args.corpus)
    if not (args.corpus / "train.txt").exists():
        raise SystemExit(f"{args.corpus}: no train.txt (pass --corpus)")
    print(f"# corpus {args.corpus}; python {sys.version.split()[0]}; {os.cpu_count()} cpus; "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    base = run({"system": "baseline", "corpus": corpus})
    rows = []
    plan = [("lmkit", "kn", 3, None), ("lmkit", "kn", 5, None), ("lmkit", "laplace", 3, None)]
    if not args.skip_nltk:
        plan += [("nltk", "laplace", 3, None), ("nltk", "kn", 3, args.nltk_kn_sentences),
                 ("nltk", "kn", 5, args.nltk_kn_sentences)]
    for system, smoothing, order, sentences in plan:
        print(f"# running {system} {smoothing}{order} ...", file=sys.stderr, flush=True)
        job = {"system": system, "corpus": corpus, "smoothing": smoothing, "order": order}
        if sentences is not None:
            job["sentences"] = sentences
        rows.append((system, f"{smoothing}{order}", run(job)))

    print(f"baseline (python + numpy + lmkit + text in memory): peak {base['peak_mb']:.0f} MB")
    print("system\tmodel\tfit_s\t(estimate_s)\tscore_s\ttotal_s\tpeak_MB\tperplexity")
    by = {}
    for system, name, r in rows:
        by[(system, name)] = r
        mark = "~" if r.get("extrapolated") else ""
        ppl = f"{r['perplexity']:.2f}" if r.get("perplexity") else "-"
        est = f"{r['estimate_s']:.2f}" if r.get("estimate_s") is not None else "-"
        print(f"{system}\t{name}\t{r['fit_s']:.2f}\t{est}\t{mark}{r['score_s']:.2f}\t"
              f"{mark}{r['fit_s'] + r['score_s']:.2f}"
              f"\t{r['peak_mb']:.0f}\t{ppl}")
    if not args.skip_nltk:
        print("ratios nltk/lmkit (same smoothing and order)\tfit\tscore\ttotal\tpeak memory")
        for name in ("laplace3", "kn3", "kn5"):
            a, b = by.get(("lmkit", name)), by.get(("nltk", name))
            if a and b:
                mark = "~" if b.get("extrapolated") else ""
                print(f"{name}\t{b['fit_s'] / a['fit_s']:.0f}x\t{mark}{b['score_s'] / a['score_s']:.0f}x\t"
                      f"{mark}{(b['fit_s'] + b['score_s']) / (a['fit_s'] + a['score_s']):.0f}x\t"
                      f"{b['peak_mb'] / a['peak_mb']:.1f}x")
        n = by[("nltk", "kn3")].get("scored")
        print(f"(~ nltk KneserNeyInterpolated scored {n} tokens of the test set; its score time is "
              "extrapolated linearly to all of them)")


if __name__ == "__main__":
    main()
