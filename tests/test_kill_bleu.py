"""Translation BLEU plumbing mutation testing found unpinned (docs/testing.md, bench/mutation.py bleu): what
reaches the decoder (strategy, beam options, per-pair length limits), the refusals, lower-casing and the
summary keys. The decoder is replaced by a recorder (`generate` as the bleu module calls it), so the tests
see exactly what translation_bleu asks for."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmkit.data.corpus import read_pair
from lmkit.data.vocab import Vocab
from lmkit.errors import DataError, UsageError
from lmkit.evaluate import bleu
from lmkit.evaluate.generate import Decoding
from lmkit.protocol import Protocol

WORDS = {"a": 3, "b": 2, "c": 2, "X": 2, "Y": 2}


def model(lowercase=False, task="translate", sep=True, level="word"):
    vocab = Vocab.build(WORDS, with_sep=sep)
    return SimpleNamespace(vocab=vocab, protocol=Protocol(task=task, lowercase=lowercase, level=level), label="toy")


def pair(tmp: Path, src: list[str], tgt: list[str]):
    (tmp / "s.txt").write_text("".join(f"{x}\n" for x in src))
    (tmp / "t.txt").write_text("".join(f"{x}\n" for x in tgt))
    return read_pair(tmp / "s.txt", tmp / "t.txt")


@pytest.fixture
def recorder(monkeypatch):
    """Replaces the decoder: records its arguments and answers each prompt with the target words X Y X Y."""
    calls = []

    def generate(m, prompts, decoding, limits=None):
        calls.append(SimpleNamespace(prompts=[list(p) for p in prompts], decoding=decoding, limits=limits))
        ids = [m.vocab.index["X"], m.vocab.index["Y"]] * 2
        return [[SimpleNamespace(ids=ids)] for _ in prompts]

    monkeypatch.setattr(bleu, "generate", generate)
    return calls


def test_the_decoder_gets_the_strategy_beam_options_and_per_pair_limits(tmp_path, recorder):
    m = model()
    p = pair(tmp_path, ["a b c", "a", "", "b b"], ["X Y", "X", "Y", "X Y"])  # line 3: blank source, skipped
    d = Decoding(strategy="beam", beam=3, length_penalty=0.7, ban_unk=True, max_tokens=5)
    res = bleu.translation_bleu(m, p, d)
    (call,) = recorder
    assert call.limits == [2 * 3 + 10, 2 * 1 + 10, 2 * 2 + 10]  # 2 x source tokens + 10 (</s> included)
    got = call.decoding
    assert (got.strategy, got.beam, got.length_penalty, got.ban_unk, got.max_tokens) == ("beam", 3, 0.7, True, 16)
    sep = m.vocab.index["<sep>"]
    assert [pr[-1] for pr in call.prompts] == [sep] * 3 and [len(pr) for pr in call.prompts] == [4, 2, 3]
    assert res.hypotheses == ["X Y X Y"] * 3 and res.references == ["X Y", "X", "X Y"]
    assert res.prompts == ["a b c", "a", "b b"] and res.line_numbers == [1, 2, 4] and res.short_lines == 1
    summary = res.summary()
    assert list(summary) == ["bleu", "signature", "lines", "short_lines", "precisions", "brevity_penalty",
                             "hyp_len", "ref_len"]
    assert (summary["lines"], summary["hyp_len"], summary["ref_len"]) == (3, 12, 5)
    assert summary["brevity_penalty"] == 1.0


def test_default_decoding_is_greedy(tmp_path, recorder):
    bleu.translation_bleu(model(), pair(tmp_path, ["a"], ["X"]))
    assert recorder[0].decoding.strategy == "greedy" and recorder[0].decoding.max_tokens == 12


def test_lowercasing_protocol_scores_case_insensitively(tmp_path, recorder):
    p = pair(tmp_path, ["a b"], ["x y x y"])
    lower = bleu.translation_bleu(model(lowercase=True), p)
    cased = bleu.translation_bleu(model(), p)
    assert "case:lc" in lower.signature and lower.score == pytest.approx(100.0)
    assert "case:mixed" in cased.signature and cased.score < 100.0


def test_sampling_is_refused(tmp_path, recorder):
    with pytest.raises(UsageError, match="^translation BLEU decodes with greedy or beam search, not sampling$"):
        bleu.translation_bleu(model(), pair(tmp_path, ["a"], ["X"]), Decoding(strategy="sample"))
    assert recorder == []


@pytest.mark.parametrize("task, sep", [("lm", True), ("translate", False), ("lm", False)])
def test_only_a_translation_model_is_accepted(tmp_path, task, sep):
    with pytest.raises(UsageError, match=r"^toy was not trained with --task translate: translation BLEU needs a "
                                         r"model of `source <sep> target`; use continuation BLEU on a monolingual "
                                         r"file instead$"):
        bleu.translation_bleu(model(task=task, sep=sep), pair(tmp_path, ["a"], ["X"]))


def test_nothing_to_translate_is_refused(tmp_path):
    p = pair(tmp_path, ["", "a"], ["X", ""])
    with pytest.raises(DataError, match=f"^{re.escape(p.name)}: no pair with a non-blank source and target to "
                                        "translate$"):
        bleu.translation_bleu(model(), p)


def test_translation_limit():
    assert [bleu.translation_limit(n) for n in (0, 1, 7)] == [10, 12, 24]


def test_char_level_hypotheses_are_joined_without_spaces(tmp_path, recorder):
    res = bleu.translation_bleu(model(level="char"), pair(tmp_path, ["ab"], ["XYXY"]))
    assert res.hypotheses == ["XYXY"]


# -- continuation BLEU ---------------------------------------------------------------------------------------
def text(tmp: Path, lines: list[str]):
    from lmkit.data.corpus import read_text

    (tmp / "test.txt").write_text("".join(f"{x}\n" for x in lines))
    return read_text(tmp / "test.txt")


def test_continuation_halves_limits_and_greedy_decoding(tmp_path, recorder):
    m = model(task="lm", sep=False)
    # line 1 is too short (3 tokens) and comes first: the long lines after it are still scored
    t = text(tmp_path, ["a b c", "a b c a b", "c c a a", "a a a a a a a"])
    res = bleu.continuation_bleu(m, t)
    (call,) = recorder
    assert res.line_numbers == [2, 3, 4] and res.lines == 3 and res.short_lines == 1
    assert res.prompts == ["a b", "c c", "a a a"] and res.references == ["c a b", "a a", "a a a a"]
    assert call.limits == [6, 4, 8]  # twice the reference length
    assert call.decoding.strategy == "greedy" and call.decoding.max_tokens == 8
    assert res.hypotheses == ["X Y X Y"] * 3
    s = res.summary()
    assert (s["hyp_len"], s["ref_len"]) == (12, 9) and isinstance(s["hyp_len"], int)
    assert s["brevity_penalty"] == 1.0 and isinstance(s["brevity_penalty"], float)


def test_bleu_of_tokenised_text_logs_no_sacrebleu_warning(caplog):
    import logging

    lines = ["a , b ."] * 100  # sacrebleu warns about 100 lines ending in " ." unless told the text is tokens
    with caplog.at_level(logging.WARNING):
        bleu.corpus_bleu(lines, lines)
    assert not [r for r in caplog.records if "detokenize" in r.getMessage()]
