"""The torch families through the one interface: contract, training, protocol, checkpoints, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app
from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import BOS, PAD, Vocab
from lmkit.models.base import LanguageModel
from lmkit.models import kinds
from lmkit.models.torchlm import MLPModel, RNNModel, TransformerModel
from lmkit.protocol import Protocol
from familytools import neural_families

# name -> (class, config): chosen sizes and variants, then every other registered neural family at its `tiny`
FAMILIES = {
    "mlp": (MLPModel, {"window": 3, "embed": 8, "hidden": 16}),
    "lstm": (RNNModel, {"layers": 2, "hidden": 16}),
    "gru": (RNNModel, {"cell": "gru", "layers": 1, "hidden": 16}),
    "transformer": (TransformerModel, {"layers": 2, "d_model": 16, "heads": 2, "block_size": 8}),
    "lstm-adaptive": (RNNModel, {"layers": 1, "hidden": 16, "tie_weights": True, "adaptive_cutoffs": (10, 20)}),
    "transformer-adaptive": (TransformerModel, {"layers": 1, "d_model": 16, "heads": 2, "block_size": 8,
                                                "adaptive_cutoffs": (12,)}),
}
for _fam in neural_families():
    FAMILIES.setdefault(_fam.kind, (_fam.model_class, dict(_fam.tiny)))
TINY = {"mlp": ["--window", "3", "--embed", "16", "--hidden", "64"],
        "lstm": ["--layers", "1", "--hidden", "48"],
        "transformer": ["--layers", "2", "--d-model", "48", "--heads", "2", "--block-size", "16"],
        "lstm-adaptive": ["--layers", "1", "--hidden", "48", "--tie-weights", "--set", "adaptive_cutoffs=10,20"]}


def grammar_corpus(path: Path, lines: int, seed: int) -> None:
    """Sentences from a tiny grammar: the next word depends strongly on the previous ones, so any
    model that learns context beats the unigram distribution by a wide margin."""
    rng = random.Random(seed)
    subj = ["the cat", "the dog", "a bird", "my friend", "the old man", "a child"]
    verb = ["sees", "likes", "chases", "finds", "hears"]
    obj = ["the ball", "a tree", "the river", "some bread", "the moon"]
    tail = ["today", "again", "at night", "in the park", ""]
    out = []
    for _ in range(lines):
        out.append(" ".join(w for w in (rng.choice(subj), rng.choice(verb), rng.choice(obj), rng.choice(tail)) if w))
    path.write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def grammar(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("grammar")
    grammar_corpus(d / "train.txt", 400, 1)
    grammar_corpus(d / "valid.txt", 60, 2)
    grammar_corpus(d / "test.txt", 60, 3)
    return d


def _model(name: str, context: str, grammar: Path):
    cls, cfg = FAMILIES[name]
    protocol = Protocol(context=context)
    text = read_text(grammar / "train.txt")
    vocab = Vocab.build(count_tokens(text, protocol))
    torch.manual_seed(0)
    model = cls(cls.Config(**cfg), vocab, protocol)
    model.net.eval()
    return model, encode(read_text(grammar / "test.txt"), vocab, protocol)


@pytest.mark.parametrize("context", ["sentence", "stream"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_batched_scoring_equals_reference_loop(name, context, grammar):
    model, enc = _model(name, context, grammar)
    model.stride = 1  # a window per token: every token sees exactly `history` tokens, as the loop does
    seqs = enc.sequences[:12]
    fast = model.sequence_logprobs(seqs)
    slow = LanguageModel.sequence_logprobs(model, seqs)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_rows_normalise_over_predictable_set(name, grammar):
    model, enc = _model(name, "sentence", grammar)
    rows = model.next_logprobs([[BOS], [BOS, 5, 6], [BOS] + list(enc.sequences[0])])
    assert np.all(np.isneginf(rows[:, [PAD, BOS]]))
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_sentence_context_never_leaks_across_lines(name, grammar):
    model, enc = _model(name, "sentence", grammar)
    together = model.sequence_logprobs(enc.sequences[:8])
    for i in range(8):
        alone = model.sequence_logprobs([enc.sequences[i]])[0]
        np.testing.assert_allclose(alone, together[i], atol=1e-5)


def test_transformer_sliding_window_gives_every_token_left_context(grammar):
    model, enc = _model("transformer", "stream", grammar)  # block_size 8
    seqs = enc.sequences[:20]
    half = model.sequence_logprobs(seqs)  # default stride = block_size / 2
    model.stride = 1
    exact = model.sequence_logprobs(seqs)
    flat_half, flat_exact = np.concatenate(half), np.concatenate(exact)
    # the first window's tokens are scored identically; later ones see >= 4 tokens of context
    np.testing.assert_allclose(flat_half[:8], flat_exact[:8], atol=1e-5)
    assert flat_half.shape == flat_exact.shape and np.all(np.isfinite(flat_half))


def _train(grammar: Path, out: Path, name: str, *extra: str) -> dict:
    r = CliRunner().invoke(app, ["train", "--model", name.removesuffix("-adaptive"), "--corpus", str(grammar),
                                 "-o", str(out), "-q", "--device", "cpu", *TINY[name], *extra])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    return json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("name", ["mlp", "lstm", "transformer", "lstm-adaptive"])
def test_tiny_model_learns_and_cli_equals_library(name, grammar, tmp_path):
    uni = tmp_path / "uni"
    # sentence context: batches of 16 lines give enough updates in 6 epochs of this tiny corpus (stream windows of
    # the default seq_len would be a few dozen)
    CliRunner().invoke(app, ["train", "--model", "ngram:laplace1", "--corpus", str(grammar), "--context", "sentence",
                             "-o", str(uni), "-q"])
    unigram_ppl = json.loads((uni / "run.json").read_text())["metrics"]["valid"]["perplexity"]
    rec = _train(grammar, tmp_path / name, name, "--epochs", "6", "--batch-size", "16", "--lr", "1e-2",
                 "--warmup", "5", "--context", "sentence")
    assert rec["status"] == "complete" and rec["kind"] in (name, "lstm")
    assert rec["metrics"]["valid"]["perplexity"] < 0.5 * unigram_ppl  # e.g. ~5 against ~20
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and all(json.loads(x)["schema"] == 1 for x in lines)
    out = CliRunner().invoke(app, ["score", str(tmp_path / name), str(grammar / "test.txt"), "--format", "json"])
    assert out.exit_code == 0, out.stderr
    lib = api.score(tmp_path / name, grammar / "test.txt").summary()
    cli = json.loads(out.stdout)
    assert cli["perplexity"] == lib["perplexity"] == rec["metrics"]["test"]["perplexity"]
    assert cli["tokens"] == lib["tokens"]


def test_stream_context_lstm_and_same_seed_same_numbers(grammar, tmp_path):
    args = ("--context", "stream", "--epochs", "2", "--batch-size", "4", "--seq-len", "12", "--dropout", "0.2")
    a = _train(grammar, tmp_path / "a", "lstm", *args)
    b = _train(grammar, tmp_path / "b", "lstm", *args)
    assert a["protocol"]["context"] == "stream"
    assert a["metrics"]["test"]["nll_nats"] == b["metrics"]["test"]["nll_nats"]
    c = _train(grammar, tmp_path / "c", "lstm", *args, "--seed", "1")
    assert c["metrics"]["test"]["nll_nats"] != a["metrics"]["test"]["nll_nats"]


def test_sigint_checkpoint_and_bit_for_bit_resume(grammar, tmp_path, monkeypatch):
    import os
    import signal

    import lmkit.train as train_mod
    from safetensors.torch import load_file

    args = ("--context", "stream", "--epochs", "3", "--batch-size", "4", "--seq-len", "10",
            "--eval-every", "7", "--dropout", "0.3")
    full = _train(grammar, tmp_path / "full", "lstm", *args)

    calls = {"n": 0}
    real = train_mod.score_encoded

    def interrupt_on_second_eval(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered mid-run
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "score_encoded", interrupt_on_second_eval)
    r = CliRunner().invoke(app, ["train", "--model", "lstm", "--corpus", str(grammar), "-o", str(tmp_path / "cut"),
                                 "-q", "--device", "cpu", *TINY["lstm"], *args])
    assert r.exit_code == 130 and "resume with" in r.stderr and "Traceback" not in r.stderr
    rec = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert rec["status"] == "interrupted"
    monkeypatch.setattr(train_mod, "score_encoded", real)
    r = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut"), "-q"])
    assert r.exit_code == 0, r.stderr
    resumed = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert resumed["status"] == "complete"
    assert resumed["metrics"]["test"]["nll_nats"] == full["metrics"]["test"]["nll_nats"]
    w1 = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "cut" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_device_errors_and_damaged_weights(grammar, tmp_path):
    r = CliRunner().invoke(app, ["train", "--model", "mlp", "--corpus", str(grammar), "--device", "cuda",
                                 "-o", str(tmp_path / "x")])
    if not torch.cuda.is_available():
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "CUDA is not available" in r.stderr
        assert not (tmp_path / "x").exists()
    _train(grammar, tmp_path / "m", "mlp", "--epochs", "1")
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    r = CliRunner().invoke(app, ["score", str(tmp_path / "m"), str(grammar / "test.txt")])
    assert r.exit_code == 1 and "damaged or truncated" in r.stderr and "Traceback" not in r.stderr
    r = CliRunner().invoke(app, ["train", "--model", "transformer", "--heads", "3", "--d-model", "16",
                                 "--corpus", str(grammar), "-o", str(tmp_path / "y")])
    assert r.exit_code == 2 and "divisible" in r.stderr


def test_models_command_lists_every_family():
    r = CliRunner().invoke(app, ["models", "--format", "json"])
    assert r.exit_code == 0
    rows = {row["family"]: row for row in json.loads(r.stdout)}
    assert list(rows) == kinds()  # every registered family, in registry order
    names = {o["name"] for o in rows["transformer"]["options"]}
    assert {"block_size", "d_model", "heads", "lr", "epochs", "time_budget"} <= names


def test_score_stride_option(grammar, tmp_path):
    _train(grammar, tmp_path / "tf", "transformer", "--epochs", "1", "--context", "stream", "--block-size", "8")
    outs = {}
    for stride in ("1", "4", "8"):
        r = CliRunner().invoke(app, ["score", str(tmp_path / "tf"), str(grammar / "test.txt"), "--stride", stride,
                                     "--format", "json"])
        assert r.exit_code == 0, r.stderr
        outs[stride] = json.loads(r.stdout)
    assert outs["1"]["tokens"] == outs["8"]["tokens"]
    assert outs["1"]["nll_nats"] != outs["8"]["nll_nats"]  # more left context changes the numbers
    assert "stride 1" in outs["1"]["model"]
    r = CliRunner().invoke(app, ["score", str(tmp_path / "tf"), str(grammar / "test.txt"), "--stride", "0"])
    assert r.exit_code == 2 and "stride" in r.stderr


def test_bf16_on_cpu_without_native_support_is_refused(grammar, tmp_path):
    from lmkit.device import cpu_has_bf16

    if cpu_has_bf16():
        pytest.skip("this CPU has native bf16")
    r = CliRunner().invoke(app, ["train", "--model", "mlp", "--corpus", str(grammar), "--precision", "bf16",
                                 "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "bfloat16" in r.stderr and r.stderr.count("\n") == 1
