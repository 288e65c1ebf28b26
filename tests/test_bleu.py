"""Continuation BLEU (docs/protocol.md): the halves, the greedy continuation, and sacrebleu's own numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from clitools import cli

from lmkit import api
from lmkit.data.corpus import read_text
from lmkit.errors import DataError
from lmkit.evaluate.bleu import continuation_bleu

# Lines with their own words, so a model trained on them can only continue each one one way.
MEMO = ["alpha beta gamma delta epsilon", "one two three four", "red green blue cyan magenta yellow black",
        "north south east west up down"]


def _train(corpus: Path, out: Path, *extra: str) -> Path:
    r = cli("train", "--corpus", corpus, "-o", out, "-q", *extra)
    assert r.exit_code == 0, r.stderr
    return out


@pytest.fixture
def kn3(tiny_corpus, tmp_path) -> Path:
    return _train(tiny_corpus, tmp_path / "kn3", "--model", "ngram:kn3")


def test_halves_and_greedy_continuations(kn3, tmp_path):
    test = tmp_path / "test.txt"
    # 6 tokens -> prompt 3 + reference 3; 5 -> 2 + 3; 3 tokens: too short; blank: not a sequence
    test.write_text("the cat sat on the log\nthe dog saw a bird\nthe bird sat\n\n")
    res = api.bleu(kn3, test).result
    assert res.lines == 2 and res.short_lines == 1 and res.line_numbers == [1, 2]
    assert res.prompts == ["the cat sat", "the dog"]
    assert res.references == ["on the log", "saw a bird"]
    for prompt, ref, hyp in zip(res.prompts, res.references, res.hypotheses):
        # the continuation is greedy decoding of the prompt, capped at twice the reference length
        out = api.generate(kn3, prompt, max_tokens=2 * len(ref.split())).outputs[0]
        assert hyp == out["continuation"] and len(hyp.split()) <= 2 * len(ref.split())


def test_score_equals_sacrebleu_called_directly(kn3, tiny_corpus):
    report = api.bleu(kn3, tiny_corpus / "train.txt")
    res = report.result
    direct = sacrebleu.corpus_bleu(res.hypotheses, [res.references])
    assert res.score == direct.score and res.precisions == list(direct.precisions)
    metric = sacrebleu.BLEU()
    metric.corpus_score(res.hypotheses, [res.references])
    assert res.signature == str(metric.get_signature())
    assert f"version:{sacrebleu.__version__}" in res.signature and "nrefs:1" in res.signature
    summary = report.summary()
    assert summary["model"] == "ngram:kn3" and summary["sha256"] == read_text(tiny_corpus / "train.txt").sha256


def test_a_model_that_memorised_the_lines_scores_100(tmp_path):
    d = tmp_path / "memo"
    d.mkdir()
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text("\n".join(MEMO) + "\n")
    res = api.bleu(_train(d, tmp_path / "kn5", "--model", "ngram:kn5", "--min-count", "1"), d / "test.txt").result
    assert res.hypotheses == res.references == ["gamma delta epsilon", "three four", "cyan magenta yellow black",
                                                "west up down"]
    assert res.score == pytest.approx(100.0)


def test_char_level_joins_without_spaces(tmp_path):
    d = tmp_path / "chars"
    d.mkdir()
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text("\n".join(MEMO) + "\n")
    run = _train(d, tmp_path / "char", "--model", "ngram:kn9", "--level", "char", "--min-count", "1")
    res = api.bleu(run, d / "test.txt").result
    assert res.lines == len(MEMO)
    for line, prompt, ref in zip(MEMO, res.prompts, res.references):
        half = len(line) // 2  # characters, the space included
        assert (prompt, ref) == (line[:half], line[half:])
    assert res.hypotheses == res.references  # memorised: the continuation is the rest of the line


def test_neural_model_through_the_same_path(tiny_corpus):
    """An untrained Transformer (no run folder needed): any family goes through the one decoder."""
    import torch

    from lmkit.data.corpus import count_tokens
    from lmkit.data.vocab import Vocab
    from lmkit.models.torchlm import TransformerModel
    from lmkit.protocol import Protocol

    protocol = Protocol()
    text = read_text(tiny_corpus / "train.txt")
    torch.manual_seed(0)
    model = TransformerModel(TransformerModel.Config(layers=1, d_model=16, heads=2, block_size=4),
                             Vocab.build(count_tokens(text, protocol)), protocol)
    res = continuation_bleu(model, text)
    assert res.lines == 3 and res.score == sacrebleu.corpus_bleu(res.hypotheses, [res.references]).score
    assert all(len(h.split()) <= 2 * len(r.split()) for h, r in zip(res.hypotheses, res.references))


def test_no_line_long_enough_is_a_data_error(kn3, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the cat\na dog sat\n")
    with pytest.raises(DataError, match="at least 4 tokens"):
        api.bleu(kn3, short)
    r = cli("bleu", kn3, short)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_cli_bleu_text_json_and_stdin(kn3, tiny_corpus):
    lib = api.bleu(kn3, tiny_corpus / "train.txt").summary()
    r = cli("bleu", kn3, tiny_corpus / "train.txt")
    assert r.exit_code == 0, r.stderr
    first, counts, signature = r.stdout.splitlines()  # the breakdown's format: tests/test_output.py
    assert first.startswith(f"BLEU = {lib['bleu']:.2f} ") and counts.startswith("3 lines scored")
    assert "; ngram:kn3 on " in counts and signature == lib["signature"]
    r = cli("bleu", kn3, "-", "--format", "json", input=(tiny_corpus / "train.txt").read_text())
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["bleu"] == lib["bleu"] and data["signature"] == lib["signature"] and data["lines"] == 3
    r = cli("bleu", kn3, tiny_corpus / "train.txt", "--format", "tsv")
    header, row = r.stdout.splitlines()
    assert header.split("\t")[:3] == ["bleu", "signature", "lines"]
    r = cli("bleu", kn3, tiny_corpus / "train.txt", "--format", "yaml")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
