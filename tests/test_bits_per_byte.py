"""Tokenisation-independent figures: bits per byte and word perplexity, and comparing runs across levels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clitools import cli, one_error_line
from lmkit import api
from lmkit.compare import compare_runs
from lmkit.data.corpus import encode, read_text
from lmkit.data.tokenfile import encode_file
from lmkit.data.vocab import Vocab
from lmkit.protocol import Protocol

LN2 = math.log(2)


def train(corpus: Path, out: Path, model: str, **kw) -> Path:
    return api.train(api.TrainRequest(model=model, corpus=corpus, output=out, progress=False, **kw))


def metrics_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["metrics"]["test"]


def test_bytes_are_wc_c_and_words_plus_ends_of_line(tmp_path, tiny_corpus):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat\ncaf\u00e9 \u00e9t\u00e9  au lait \n\nzebra\n", encoding="utf-8")
    run = train(tiny_corpus, tmp_path / "kn", "ngram:kn2")
    s = api.score(run, text).summary()
    blank_line_bytes = 1  # the skipped blank line is not scored: its newline is not counted
    assert s["bytes"] == text.stat().st_size - blank_line_bytes
    assert s["words"] == 3 + 4 + 1 + 3  # words, then one end of line per scored line
    assert s["bits_per_byte"] == pytest.approx(s["nll_nats"] / LN2 / s["bytes"], rel=1e-12)
    assert s["word_perplexity"] == pytest.approx(s["perplexity"], rel=1e-12)  # word level: words are tokens
    assert 0 < s["unk_byte_share"] < 1


def test_char_level_bits_per_byte_is_bits_per_char_on_ascii(tmp_path, tiny_corpus):
    m = metrics_of(train(tiny_corpus, tmp_path / "c", "ngram:kn3", level="char"))
    assert m["bits_per_byte"] == pytest.approx(m["bits_per_char"], rel=1e-12)
    assert m["word_perplexity"] > m["perplexity"]  # fewer words than characters share the same NLL


def test_a_neural_run_reports_the_same_nll_over_both_denominators(tmp_path, tiny_corpus):
    m = metrics_of(train(tiny_corpus, tmp_path / "mlp", "mlp",
                               train_options={"max_tokens": 400, "batch_size": 16, "device": "cpu"}))
    assert m["bits_per_byte"] * m["bytes"] * LN2 == pytest.approx(m["nll_nats"], rel=1e-9)
    assert m["cross_entropy_nats"] * m["tokens"] == pytest.approx(m["nll_nats"], rel=1e-9)
    assert math.log(m["word_perplexity"]) * m["words"] == pytest.approx(m["nll_nats"], rel=1e-9)


def test_token_files_carry_the_measures(tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path / "cache"))
    p = Protocol()
    vocab = Vocab.build(__import__("lmkit.data.corpus", fromlist=["count_tokens"]).count_tokens(
        read_text(tiny_corpus / "train.txt"), p))
    direct = encode(read_text(tiny_corpus / "test.txt"), vocab, p)
    tf, _ = encode_file(tiny_corpus / "test.txt", vocab, p, block_bytes=16)  # many blocks, summed
    mapped = tf.encoded()
    assert (mapped.text_bytes, mapped.words, mapped.unk_bytes) == (direct.text_bytes, direct.words, direct.unk_bytes)
    assert direct.text_bytes > 0 and direct.words > 0


def test_compare_across_levels_ranks_by_bits_per_byte(tmp_path, tiny_corpus):
    word = train(tiny_corpus, tmp_path / "word", "ngram:kn3")
    char = train(tiny_corpus, tmp_path / "char", "ngram:kn3", level="char")
    rows = compare_runs([word, char])
    assert {r["level"] for r in rows} == {"word", "char"} and all(r["vocab_size"] > 4 for r in rows)
    assert "test_ppl" not in rows[0] and "bits_per_char" not in rows[0]
    assert rows[0]["bits_per_byte"] <= rows[1]["bits_per_byte"] and [r["rank"] for r in rows] == [1, 2]
    out = cli("compare", word, char, "--format", "json")
    assert out.exit_code == 0 and [r["level"] for r in json.loads(out.stdout)] == [r["level"] for r in rows]
    one_error_line(cli("compare", word, char, "--bootstrap", "10"), code=2, match="bits per byte")
    other_context = "sentence" if json.loads((word / "run.json").read_text())["protocol"]["context"] == "stream" \
        else "stream"
    elsewise = train(tiny_corpus, tmp_path / "other", "ngram:kn3", level="char", context=other_context)
    line = one_error_line(cli("compare", word, elsewise))
    assert "protocol differs (context " in line and "bits per byte" in line


def test_runs_without_byte_counts_cannot_meet_other_levels(tmp_path, tiny_corpus):
    word = train(tiny_corpus, tmp_path / "word", "ngram:kn3")
    char = train(tiny_corpus, tmp_path / "char", "ngram:kn3", level="char")
    record = json.loads((char / "run.json").read_text())
    for key in ("bytes", "bits_per_byte", "words", "word_perplexity", "unk_byte_share"):
        del record["metrics"]["test"][key]
    (char / "run.json").write_text(json.dumps(record))
    line = one_error_line(cli("compare", word, char))
    assert f"{char} has no bits-per-byte figure" in line and "lmkit score" in line
