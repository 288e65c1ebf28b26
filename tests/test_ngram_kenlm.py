"""KenLM as an exact oracle for interpolated modified Kneser-Ney, and the kenlm module for interop.

Reference data: ../shared/reference/kenlm/tinyshakespeare (see its README.md): lmplz -o 3/-o 5 on the
train split with blank lines removed, no min-count, nothing lower-cased; query -v sentence/summary on the
test split. lmkit uses the same protocol: sentence context, min-count 1, word level. Skipped cleanly
when the reference data (or the kenlm module) is absent."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest

from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import Vocab
from lmkit.evaluate.perplexity import score_encoded
from lmkit.models.ngram import NgramConfig, NgramModel, load_arpa, write_arpa
from lmkit.protocol import Protocol

SHARED = Path(os.environ.get("LMKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REF = SHARED / "reference" / "kenlm" / "tinyshakespeare"
CORPUS = SHARED / "corpora" / "tinyshakespeare"
LN10 = math.log(10)

needs_ref = pytest.mark.skipif(not (REF / "kn5.arpa.gz").exists() or not (CORPUS / "train.txt").exists(),
                               reason=f"KenLM reference data not present under {SHARED}")


@pytest.fixture(scope="module")
def shakespeare():
    p = Protocol()
    train = read_text(CORPUS / "train.txt")
    vocab = Vocab.build(count_tokens(train, p), min_count=1)
    return p, vocab, encode(train, vocab, p), read_text(CORPUS / "test.txt")


@pytest.fixture(scope="module")
def fitted(shakespeare):
    p, vocab, train, _ = shakespeare
    models = {}
    for order in (3, 5):
        m = NgramModel(NgramConfig(order=order, smoothing="kn"), vocab, p)
        m.fit(train, None)
        models[order] = m
    return models


def read_arpa_entries(path: Path) -> dict:
    """'order words' -> (log10 p, log10 bo): a plain parser, independent of lmkit's loader."""
    entries, n = {}, 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("\\"):
                n = int(line[1:].split("-")[0]) if line.endswith("-grams:") else n
                continue
            if not line or line.startswith("ngram "):
                continue
            f = line.split("\t")
            entries[(n, f[1])] = (float(f[0]), float(f[2]) if len(f) > 2 else 0.0)
    return entries


@needs_ref
@pytest.mark.parametrize("order", [3, 5])
def test_sentence_scores_match_kenlm_query(shakespeare, fitted, order):
    p, vocab, _, test = shakespeare
    score = score_encoded(fitted[order], encode(test, vocab, p))
    ref = np.loadtxt(REF / f"test-sentences-kn{order}.tsv", ndmin=2)
    ours = np.array([lp.sum() / LN10 for lp in score.logprobs])
    oov = np.array([int((t == 1).sum()) for t in score.targets])
    assert ours.shape == (ref.shape[0],)
    np.testing.assert_allclose(ours, ref[:, 0], rtol=0, atol=1e-4)
    assert (oov == ref[:, 1]).all()


@needs_ref
@pytest.mark.parametrize("order", [3, 5])
def test_exported_arpa_matches_kenlm_entry_by_entry(fitted, tmp_path, order):
    write_arpa(fitted[order], tmp_path / f"kn{order}.arpa")
    ours = read_arpa_entries(tmp_path / f"kn{order}.arpa")
    ref = read_arpa_entries(REF / f"kn{order}.arpa.gz")
    assert ours.keys() == ref.keys()
    ref_v = np.array([ref[k] for k in ref])
    our_v = np.array([ours[k] for k in ref])
    np.testing.assert_allclose(our_v, ref_v, rtol=0, atol=1e-4)


def _summary() -> dict:
    out, order = {}, None
    for line in (REF / "summary.txt").read_text().splitlines():
        if line.startswith("order"):
            order = int(line.split()[1])
        elif ":" in line:
            key, val = line.split(":")
            out[(order, key.strip())] = float(val)
    return out


@needs_ref
@pytest.mark.parametrize("order", [3, 5])
def test_kenlm_arpa_loaded_and_scored_gives_kenlm_perplexity(shakespeare, order):
    p, _, _, test = shakespeare
    model = load_arpa(REF / f"kn{order}.arpa.gz")
    assert model.label == f"arpa:kn{order}.arpa.gz" and model.order == order
    s = score_encoded(model, encode(test, model.vocab, p))
    ref = _summary()
    assert (s.tokens, s.oov) == (10056, 1171) == (ref[(order, "Tokens")], ref[(order, "OOVs")])
    assert s.perplexity == pytest.approx(ref[(order, "Perplexity including OOVs")], rel=1e-5)
    assert s.perplexity_excl_oov == pytest.approx(ref[(order, "Perplexity excluding OOVs")], rel=1e-5)


# -- the kenlm module reads lmkit's ARPA files ---------------------------------------------------------
@needs_ref
@pytest.mark.parametrize("smoothing", ["kn", "wb", "katz", "jm"])
def test_kenlm_module_scores_our_arpa_like_lmkit(shakespeare, fitted, tmp_path, smoothing):
    kenlm = pytest.importorskip("kenlm")
    p, vocab, train, test = shakespeare
    if smoothing == "kn":
        m = fitted[3]
    else:
        m = NgramModel(NgramConfig(order=3, smoothing=smoothing), vocab, p)
        valid = encode(read_text(CORPUS / "valid.txt"), vocab, p)
        m.fit(train, valid)
    path = tmp_path / f"{smoothing}3.arpa.gz"
    write_arpa(m, path)
    ken = kenlm.Model(str(path))
    enc = encode(test, vocab, p)
    ours = [lp.sum() / LN10 for lp in m.sequence_logprobs(enc.sequences)]
    lines = [" ".join(test.lines[i - 1].split()) for i in enc.line_numbers]
    theirs = [ken.score(line, bos=True, eos=True) for line in lines]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
