"""Subword levels against the word level on the same text: training the tokenizer, and encoding (issue 21).

    python bench/subword.py                       # PTB's train split, bpe and unigram at 8,000 ids
    python bench/subword.py --corpus DIR --vocab-size 16000

For each level, in this process, one after the other on an otherwise idle machine:
  vocabulary = building the vocabulary from the train split (word: counting; bpe/unigram: training the
               tokenizer and counting its pieces), the lines already in memory;
  encode     = encoding the train split with that vocabulary (lmkit.data.corpus.encode), median of 3.
Ratios are against the word level in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmkit.data.corpus import encode, read_text  # noqa: E402
from lmkit.pipeline.prepare import vocab_from  # noqa: E402
from lmkit.protocol import Protocol  # noqa: E402

PTB = REPO.parent / "shared" / "corpora" / "ptb"


def measure(text, level: str, size: int) -> dict:
    protocol = Protocol(level=level)
    start = time.perf_counter()
    vocab = vocab_from([text], protocol, max_size=size if level in ("bpe", "unigram") else None)
    built = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        enc = encode(text, vocab, protocol)
        times.append(time.perf_counter() - start)
    return {"level": level, "ids": len(vocab), "vocabulary_s": built, "encode_s": statistics.median(times),
            "tokens": enc.num_tokens, "bytes": enc.text_bytes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=PTB)
    ap.add_argument("--vocab-size", type=int, default=8000)
    args = ap.parse_args()
    text = read_text(args.corpus / "train.txt")
    print(f"# {args.corpus / 'train.txt'}; {os.cpu_count()} cpus; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [measure(text, level, args.vocab_size) for level in ("word", "bpe", "unigram")]
    word = rows[0]
    print("level\tids\tvocabulary s\tencode s\ttokens\tvocabulary + encode s\tencode vs word")
    for r in rows:
        print(f"{r['level']}\t{r['ids']:,}\t{r['vocabulary_s']:.2f}\t{r['encode_s']:.2f}\t{r['tokens']:,}\t"
              f"{r['vocabulary_s'] + r['encode_s']:.2f}\t{r['encode_s'] / word['encode_s']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
