"""ARPA export and import: round trips, hand-computed back-off scoring, refusals and damaged files."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmkit.data.corpus import Encoded
from lmkit.data.vocab import BOS, PAD, SPECIALS, Vocab
from lmkit.errors import ModelError, UsageError
from lmkit.models.ngram import ArpaModel, NgramConfig, NgramModel, is_arpa_path, load_arpa, write_arpa
from lmkit.protocol import Protocol

LN10 = math.log(10)
TRAIN = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate", "a dog ate"]
TEST = ["the cat sat on the log", "the bird sat", "a dog", "zebra"]


def enc(lines, vocab):
    return Encoded("mem", "", [vocab.encode(s.split())[0] for s in lines], list(range(1, len(lines) + 1)))


def model(smoothing="kn", order=3, vocab=None):
    vocab = vocab or Vocab.build(Counter(w for s in TRAIN for w in s.split()))
    m = NgramModel(NgramConfig(order=order, smoothing=smoothing), vocab, Protocol())
    m.fit(enc(TRAIN, vocab), enc(TEST[:2], vocab))
    return m


def log10_scores(m, lines):
    return np.array([lp.sum() / LN10 for lp in m.sequence_logprobs(enc(lines, m.vocab).sequences)])


# -- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", ["kn", "kn-basic", "wb", "jm", "katz"])
@pytest.mark.parametrize("name", ["m.arpa", "m.arpa.gz"])
def test_round_trip_scores_like_the_model(tmp_path, smoothing, name):
    m = model(smoothing)
    write_arpa(m, tmp_path / name)
    if name.endswith(".gz"):
        assert (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"
    back = load_arpa(tmp_path / name)
    assert back.vocab.tokens == m.vocab.tokens  # written in id order, read in file order
    assert back.kind == "arpa" and back.label == f"arpa:{name}" and back.order == 3
    np.testing.assert_allclose(log10_scores(back, TEST), log10_scores(m, TEST), atol=1e-5)
    rows = back.next_logprobs([[BOS], [BOS, 4], [5, 6, 7]])
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-5)  # 7 digits in the file
    assert (rows[:, [PAD, BOS]] == -np.inf).all()
    assert back.num_parameters() == m.num_parameters()


def test_file_layout_follows_kenlm(tmp_path):
    write_arpa(model(order=2), tmp_path / "m.arpa")
    lines = (tmp_path / "m.arpa").read_text().splitlines()
    assert lines[0] == "\\data\\" and lines[-1] == "\\end\\"
    uni = lines[lines.index("\\1-grams:") + 1:]
    assert uni[0].split("\t")[1] == "<unk>"
    bos = next(ln for ln in uni if ln.split("\t")[1] == "<s>").split("\t")
    assert bos[0] == "0" and float(bos[2]) < 0  # dummy log10 p 0, real back-off weight
    assert not any("<pad>" in ln for ln in lines)
    bigrams = lines[lines.index("\\2-grams:") + 1: lines.index("\\end\\") - 1]
    assert all(len(ln.split("\t")) == 2 for ln in bigrams)  # highest order: no back-off column


def test_arpa_model_save_load_and_cannot_train(tmp_path):
    write_arpa(model(), tmp_path / "m.arpa")
    a = load_arpa(tmp_path / "m.arpa")
    a.save(tmp_path / "run")
    b = ArpaModel.load(tmp_path / "run", a.config, a.vocab, a.protocol)
    assert np.array_equal(log10_scores(a, TEST), log10_scores(b, TEST))
    with pytest.raises(UsageError):
        a.fit(None, None)


# -- hand-written files ------------------------------------------------------------------------------
# A trigram file that is not closed under suffixes (as pruned SRILM files can be): "<s> a a" is stored
# but "a a" is not. <s> has SRILM's -99; "b </s>" has no back-off column. The last three bigrams only
# give KenLM's probing hash room for the blank entry it inserts for "a a"; no test sentence uses them.
HAND = """
\\data\\
ngram 1=5
ngram 2=6
ngram 3=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.6\t</s>\t0
-0.4\ta\t-0.2
-0.8\tb\t-0.1

\\2-grams:
-0.3\t<s> a\t-0.05
-0.5\ta b\t-0.15
-0.7\tb </s>
-0.9\t<unk> a
-0.9\t<unk> b
-0.9\tb b

\\3-grams:
-0.2\t<s> a a
-0.25\ta b </s>

\\end\\
"""


@pytest.fixture
def hand(tmp_path) -> Path:
    p = tmp_path / "hand.arpa"
    p.write_text(HAND)
    return p


def test_hand_computed_backoff_scores(hand):
    m = load_arpa(hand)
    assert m.vocab.tokens == list(SPECIALS) + ["a", "b"]
    got = log10_scores(m, ["a a b", "b a a", "c"])
    # "a a b":  P(a|<s>) -0.3 (stored), P(a|<s> a) -0.2 (stored), P(b|a a) = "a b" -0.5 (context "a a"
    #           not stored: bo 0), P(</s>|a b) -0.25 (stored)                  -> -1.25
    # "b a a":  P(b|<s>) = bo(<s>) + P(b) = -0.5 - 0.8 = -1.3;  P(a|<s> b) = bo(b) + P(a) = -0.1 - 0.4;
    #           P(a|b a) = bo(a) + P(a) = -0.2 - 0.4;  P(</s>|a a) = bo(a) + P(</s>) = -0.2 - 0.6
    #                                                                           -> -3.2
    # "c" (OOV): P(<unk>|<s>) = -0.5 - 1.0;  P(</s>|<unk>) = 0 - 0.6            -> -2.1
    np.testing.assert_allclose(got, [-1.25, -3.2, -2.1], atol=1e-12)


def test_minus_99_is_log_zero_for_any_entry(tmp_path):
    """SRILM writes -99 for log 0: read as probability 0 exactly (not 1e-99), whichever entry holds it."""
    p = tmp_path / "zero.arpa"
    p.write_text(HAND.replace("-0.8\tb\t-0.1", "-99\tb\t-0.1").replace("-0.7\tb </s>", "-99.5\tb </s>"))
    m = load_arpa(p)
    b = m.vocab.index["b"]
    assert m.est.logp[0][b] == -np.inf
    assert m.next_logprobs([[BOS]])[0, b] == -np.inf  # backed off to the unigram: bo(<s>) + log 0
    assert np.isneginf(m.est.logp[1]).sum() == 1  # "b </s>" (below -99 too); the other bigrams stay finite
    assert np.isfinite(m.est.logp[0][m.vocab.index["a"]])


def test_kenlm_module_agrees_on_the_hand_file(hand):
    kenlm = pytest.importorskip("kenlm")
    ken = kenlm.Model(str(hand))
    ours = log10_scores(load_arpa(hand), ["a a b", "b a a", "c"])
    theirs = [ken.score(s, bos=True, eos=True) for s in ["a a b", "b a a", "c"]]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_protocol_argument_is_kept(hand):
    m = load_arpa(hand, Protocol(context="stream"))
    assert m.protocol.context == "stream"


# -- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", ["mle", "laplace", "addk", "stupid"])
def test_models_without_backoff_form_are_refused(tmp_path, smoothing):
    with pytest.raises(UsageError) as err:
        write_arpa(model(smoothing, order=2), tmp_path / "m.arpa")
    assert smoothing in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "m.arpa").exists()


def test_whitespace_tokens_are_refused(tmp_path):
    chars = Vocab.build(Counter("the cat sat"), level="char")
    m = NgramModel(NgramConfig(order=2), chars, Protocol(level="char"))
    m.fit(Encoded("c", "", [chars.encode(list("the cat sat"))[0]], [1]), None)
    with pytest.raises(UsageError) as err:
        write_arpa(m, tmp_path / "c.arpa")
    assert "whitespace" in str(err.value) and "\n" not in str(err.value)


# -- damaged files -----------------------------------------------------------------------------------
@pytest.fixture
def good(tmp_path) -> Path:
    p = tmp_path / "good.arpa"
    write_arpa(model(), p)
    return p


def _damage(path: Path, fn) -> Path:
    lines = path.read_text().split("\n")
    out = path.with_name("bad.arpa")
    out.write_text("\n".join(fn(lines)))
    return out


def _expect(path: Path, *needles: str) -> str:
    with pytest.raises(ModelError) as err:
        load_arpa(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for n in needles:
        assert n in msg
    return msg


def test_truncated_file(good):
    text = good.read_text()
    bad = good.with_name("bad.arpa")
    bad.write_text(text[: len(text) // 2])
    _expect(bad, "line", "\\end\\")


def test_truncated_gzip(tmp_path):
    p = tmp_path / "m.arpa.gz"
    write_arpa(model(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _expect(p)


def test_wrong_count_in_data_section(good):
    bad = _damage(good, lambda ls: [ln.replace("ngram 2=", "ngram 2=1") for ln in ls])
    _expect(bad, "line 3", "ngram 2=")


def test_non_numeric_probability(good):
    def edit(ls):
        i = ls.index("\\2-grams:") + 2
        ls[i] = "x.y" + ls[i][ls[i].index("\t"):]
        return ls
    msg = _expect(_damage(good, edit), "not a number")
    lineno = good.read_text().split("\n").index("\\2-grams:") + 3
    assert f"line {lineno}:" in msg


def test_non_numeric_backoff(good):
    def edit(ls):
        i = ls.index("\\1-grams:") + 3
        ls[i] = ls[i].rsplit("\t", 1)[0] + "\tNaN"
        return ls
    _expect(_damage(good, edit), "back-off weight")


def test_missing_end(good):
    _expect(_damage(good, lambda ls: [ln for ln in ls if ln != "\\end\\"]), "\\end\\")


def test_wrong_field_count_and_unknown_word(good):
    def extra(ls):
        i = ls.index("\\3-grams:") + 1
        ls[i] += "\t-0.5"
        return ls
    _expect(_damage(good, extra), "fields")

    def unknown(ls):
        i = ls.index("\\2-grams:") + 1
        p, w, b = ls[i].split("\t")
        ls[i] = f"{p}\tnever-heard {w.split()[1]}\t{b}"
        return ls
    _expect(_damage(good, unknown), "never-heard")


def test_not_an_arpa_file(tmp_path):
    p = tmp_path / "x.arpa"
    p.write_text("hello world\n")
    _expect(p, "\\data\\")
    with pytest.raises(ModelError):
        load_arpa(tmp_path / "missing.arpa")


def test_is_arpa_path(tmp_path, good):
    assert is_arpa_path("x.arpa") and is_arpa_path("dir/kn5.arpa.gz")
    renamed = tmp_path / "model.txt"
    renamed.write_text(good.read_text())
    assert is_arpa_path(renamed)
    gz = tmp_path / "model.bin"
    gz.write_bytes(gzip.compress(good.read_bytes()))
    assert is_arpa_path(gz)
    other = tmp_path / "train.txt"
    other.write_text("the cat sat\n")
    assert not is_arpa_path(other) and not is_arpa_path(tmp_path / "nothing")


# -- reading in chunks -----------------------------------------------------------------------------------
def test_reading_in_chunks_gives_the_same_model_and_the_same_error_lines(good, monkeypatch):
    """Sections of 2-grams and up are split CHUNK_LINES lines at a time (bounded memory on large files): with
    chunks of 2 lines the model and a damaged line's number are those of one pass."""
    import lmkit.models.ngram.arpa as arpa

    whole = load_arpa(good)
    monkeypatch.setattr(arpa, "CHUNK_LINES", 2)
    chunked = load_arpa(good)
    np.testing.assert_array_equal(log10_scores(chunked, TEST), log10_scores(whole, TEST))
    lines = good.read_text().split("\n")
    last_trigram = max(i for i, ln in enumerate(lines) if len(ln.split()) == 4)  # deep inside a later chunk
    assert last_trigram - lines.index("\\3-grams:") > 4
    bad = _damage(good, lambda ls: [ln.replace(ln.split("\t")[1], "a zebra cat") if i == last_trigram else ln
                                    for i, ln in enumerate(ls)])
    _expect(bad, f"line {last_trigram + 1}:", "'zebra' is not among the unigrams")
    lines[last_trigram] += "\t-0.5\t9"  # six fields
    _expect(_damage(good, lambda ls: lines), f"line {last_trigram + 1}:", "3-gram entry needs 4 fields")


def test_the_cycle_collector_is_paused_while_reading_and_restored_after(good, monkeypatch):
    """Reading pauses gc (twice as fast on PTB) and must hand it back as it was: on, after success or damage."""
    import gc

    from lmkit.models.ngram.arpa import cyclic_gc_paused

    paused = []
    real_disable = gc.disable
    monkeypatch.setattr(gc, "disable", lambda: (paused.append(True), real_disable()))
    assert gc.isenabled()
    load_arpa(good)
    assert paused and gc.isenabled()
    _expect(_damage(good, lambda ls: ls[: len(ls) // 2]), "line")  # truncated: refused, gc back on
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # an outer pause is kept
    assert gc.isenabled()


def test_a_trigram_whose_context_is_not_stored_gets_a_blank_context(tmp_path):
    """Not closed under prefixes: "b a b" is stored, its context "b a" is not. The context is added blank (log bo
    0, the probability back-off gives it), so P(a | <s> b) backs off through it and P(b | b a) is the stored one."""
    path = tmp_path / "prefix.arpa"
    path.write_text(HAND.replace("-0.2\t<s> a a\n", "").replace("-0.25\ta b </s>", "-0.25\ta b </s>\n-0.35\tb a b"))
    # "b a b": P(b|<s>) = -0.5 - 0.8; P(a|<s> b) = bo(b) + P(a) = -0.1 - 0.4 ("b a" blank: its back-off value);
    #          P(b|b a) = -0.35 (stored); P(</s>|a b) = -0.25 (stored)                      -> -2.4
    m = load_arpa(path)
    np.testing.assert_allclose(log10_scores(m, ["b a b"]), [-2.4], atol=1e-12)
    a, b = m.vocab.index["a"], m.vocab.index["b"]
    row = m.next_logprobs([[b, a]])[0]  # the full row after "b a" holds the stored extension "b a b"
    assert row[b] == pytest.approx(-0.35 * np.log(10))
