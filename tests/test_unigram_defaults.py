"""Defaults that start where a unigram model ends: the output bias initialised to the log unigram of the training
targets, and adaptive-softmax cutoffs derived from the vocabulary's counts (docs/neural.md, "Defaults").

Families are taken from the registry: every one whose Config has `unigram_init` (and, for the adaptive head,
`adaptive_cutoffs`) is tested, so a family added later is covered without editing this file."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from familytools import TINY_BUDGET, neural_families
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app
from lmkit.data.batching import stream_ids, target_counts
from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import BOS, EOS, PAD, UNK, Vocab
from lmkit.errors import ModelError, UsageError
from lmkit.protocol import Protocol

K = 0.5  # the add-k of the unigram the bias starts from (docs/neural.md)


def fields(fam) -> set[str]:
    return {f.name for f in dataclasses.fields(fam.config_class)}


UNIGRAM_FAMILIES = [f for f in neural_families() if "unigram_init" in fields(f)]
ADAPTIVE_FAMILIES = [f for f in UNIGRAM_FAMILIES if "adaptive_cutoffs" in fields(f)]
CASES = [(f.kind, "full") for f in UNIGRAM_FAMILIES] + [(f.kind, "adaptive") for f in ADAPTIVE_FAMILIES]


def zipf_text(path: Path, words: int, lines: int, seed: int = 0, length: int = 8) -> Path:
    """A word-level text whose word frequencies fall off as 1/r^1.2 (a skewed unigram, far from uniform)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, words + 1) ** 1.2
    ids = rng.choice(words, size=(lines, length), p=p / p.sum())
    path.write_text("".join(" ".join(f"w{i}" for i in row) + "\n" for row in ids))
    return path


def targets(encoded) -> np.ndarray:
    """Every token of every line and its </s>: what a model predicts of this text."""
    return np.concatenate([np.append(np.asarray(s, dtype=np.int64), EOS) for s in encoded.sequences])


def unigram_perplexity(encoded, size: int) -> float:
    """The add-k unigram over the predictable ids, computed here from scratch, scored on its own training text."""
    ids = targets(encoded)
    counts = np.bincount(ids, minlength=size).astype(np.float64)
    p = counts + K
    p[[PAD, BOS]] = 0.0
    p /= p.sum()
    return float(np.exp(-np.log(p[ids]).mean()))


def model_perplexity(model, encoded) -> float:
    lp = np.concatenate(model.sequence_logprobs(list(encoded.sequences)))
    return float(np.exp(-lp.mean()))


@pytest.fixture(scope="module")
def zipf_data(tmp_path_factory):
    path = zipf_text(tmp_path_factory.mktemp("zipf") / "train.txt", words=40, lines=300)
    protocol = Protocol(context="sentence")
    text = read_text(path)
    vocab = Vocab.build(count_tokens(text, protocol), min_count=1)
    return vocab, protocol, encode(text, vocab, protocol)


@pytest.mark.parametrize("kind,head", CASES)
def test_a_fresh_model_scores_the_unigram_perplexity(kind, head, zipf_data):
    """Built and initialised as a fresh training run starts (unigram_init on): its perplexity on the training text
    is the add-k unigram's within 1 %; with `--set unigram_init=false` it is near uniform, far from it."""
    import torch

    vocab, protocol, encoded = zipf_data
    fam = next(f for f in UNIGRAM_FAMILIES if f.kind == kind)
    sets = ["adaptive_cutoffs=12,24"] if head == "adaptive" else []
    target = unigram_perplexity(encoded, len(vocab))
    seen = {}
    for init in ("true", "false"):
        cls, config = api.resolve_model(kind, dict(fam.tiny), sets + [f"unigram_init={init}"])  # as --set spells it
        torch.manual_seed(0)
        model = cls(config, vocab, protocol)
        assert model.init_unigram(encoded) == (init == "true")
        seen[init] = model_perplexity(model, encoded)
    assert seen["true"] == pytest.approx(target, rel=0.01), (seen, target)
    assert seen["false"] > 1.25 * target  # about uniform: far from the unigram


@pytest.mark.parametrize("kind,head", CASES)
def test_with_every_matrix_zero_the_output_is_exactly_the_add_k_unigram(kind, head, zipf_data):
    """The bias alone, whatever the noise of the other weights: every id, the unseen <unk> included (finite)."""
    import torch

    vocab, protocol, encoded = zipf_data
    fam = next(f for f in UNIGRAM_FAMILIES if f.kind == kind)
    cls, config = api.resolve_model(kind, dict(fam.tiny), ["adaptive_cutoffs=12,24"] if head == "adaptive" else [])
    model = cls(config, vocab, protocol)
    assert model.init_unigram(encoded)
    with torch.no_grad():
        for p in model.net.parameters():
            if p.dim() >= 2:
                p.zero_()
    counts = np.bincount(targets(encoded), minlength=len(vocab)).astype(np.float64)
    assert counts[UNK] == 0  # <unk> is never a target here: only the add-k keeps it finite
    want = np.log((counts + K) / (counts + K)[vocab.predictable_mask()].sum())
    rows = model.next_logprobs([[BOS], [BOS, 5, 6]])
    for row in rows:
        assert np.all(np.isneginf(row[[PAD, BOS]]))
        np.testing.assert_allclose(row[vocab.predictable_mask()], want[vocab.predictable_mask()], atol=1e-5)
    if head == "adaptive":  # each tail's biases are ln P(w | cluster): they sum to one in probability
        for tail in model.net.adaptive.tails:
            assert float(torch.logsumexp(tail[1].bias.detach(), 0)) == pytest.approx(0.0, abs=1e-5)


def test_target_counts_are_the_targets_the_loss_sees(zipf_data):
    vocab, _, encoded = zipf_data
    stream = stream_ids(list(encoded.sequences))
    np.testing.assert_array_equal(target_counts(encoded, len(vocab)), np.bincount(stream[1:], minlength=len(vocab)))
    np.testing.assert_array_equal(target_counts(encoded, len(vocab), chunk=7), target_counts(encoded, len(vocab)))
    pairs = dataclasses.replace(encoded, sequences=[np.array([5, 6, 4, 7, 8]), np.array([9, 4, 5])], score_from=[3, 2])
    counts = target_counts(pairs, len(vocab))  # the source side and <sep> are context only
    assert counts[[5, 6, 7, 8, 9, 4, EOS]].tolist() == [1, 0, 1, 1, 0, 0, 2]


# -- derived cutoffs ----------------------------------------------------------------------------------
def hand_vocab() -> Vocab:
    """1,000 words seen 91 times, 1,400 seen 4 times, 3,400 seen once: 100,000 tokens, 5,804 ids.

    90 % (90,000) is reached at the 990th word (id 993): prefix 994, rounded up to 1,024. 97 % (97,000) is
    reached 400 ids into the singletons (96,600 + 400; id 2,803): prefix 2,804, rounded up to 2,816. Both tails
    hold at least 1,024 ids (1,792 and 2,988)."""
    counts = Counter({f"a{i}": 91 for i in range(1000)})
    counts.update({f"b{i}": 4 for i in range(1400)})
    counts.update({f"c{i}": 1 for i in range(3400)})
    return Vocab.build(counts, min_count=1)


def test_derived_cutoffs_of_a_hand_made_vocabulary():
    from lmkit.models.adaptive import derived_cutoffs

    vocab = hand_vocab()
    assert len(vocab) == 5804 and sum(vocab.counts) == 100_000
    assert derived_cutoffs(vocab.counts) == (1024, 2816)
    import lmkit.models.adaptive as adaptive

    with pytest.MonkeyPatch.context() as mp:  # unrounded: the prefixes themselves
        mp.setattr(adaptive, "CUTOFF_MULTIPLE", 1)
        assert derived_cutoffs(vocab.counts) == (994, 2804)
    # 1,000 words seen 91 times and 3,200 seen 3 times (100,600 tokens, 4,204 ids): 90 % at prefix 999 -> 1,024,
    # 97 % (97,582) at prefix 3,198 -> 3,200, which would leave a last tail of 1,004 ids: one tail only
    one_tail = Counter({f"a{i}": 91 for i in range(1000)})
    one_tail.update({f"b{i}": 3 for i in range(3200)})
    assert derived_cutoffs(Vocab.build(one_tail, min_count=1).counts) == (1024,)


def test_no_cutoffs_for_a_small_vocabulary(zipf_data):
    from lmkit.models.adaptive import MIN_ADAPTIVE_VOCAB, derived_cutoffs

    assert derived_cutoffs(zipf_data[0].counts) == ()
    assert derived_cutoffs(Vocab.build(Counter({chr(97 + i): 10 for i in range(26)}), level="char").counts) == ()
    skewed = [0, 0, 0, 0] + [1000] * 200 + [1] * (MIN_ADAPTIVE_VOCAB - 205)  # a head of 192 ids would do...
    assert derived_cutoffs(skewed) == ()  # ...but below MIN_ADAPTIVE_VOCAB ids a full softmax is cheaper
    assert derived_cutoffs(skewed + [1]) == (192,)
    flat = Counter({f"w{i}": 3 for i in range(MIN_ADAPTIVE_VOCAB + 100)})  # uniform counts: the head would be most ids
    assert derived_cutoffs(Vocab.build(flat, min_count=1).counts) == ()


def skewed_text(path: Path, seed: int, frequent: int = 90_000, rare: int = 5000) -> Path:
    """200 frequent words (`frequent` tokens) and `rare` words seen twice each, shuffled into lines of 8."""
    rng = np.random.default_rng(seed)
    tokens = np.array([f"w{i}" for i in rng.integers(0, 200, frequent)] + [f"r{i}" for i in range(rare)] * 2)
    rng.shuffle(tokens)
    path.write_text("".join(" ".join(tokens[i:i + 8]) + "\n" for i in range(0, len(tokens), 8)))
    return path


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """A corpus with a vocabulary large enough for the adaptive softmax (5,204 ids at min-count 1)."""
    d = tmp_path_factory.mktemp("big")
    skewed_text(d / "train.txt", 1)
    skewed_text(d / "valid.txt", 2, frequent=200, rare=20)
    skewed_text(d / "test.txt", 3, frequent=200, rare=20)
    return d


def resolved(corpus: Path, model: str = "transformer", **fields):
    from lmkit.pipeline.job import resolve_job

    req = api.TrainRequest(model=model, corpus=corpus, min_count=1, **fields)  # no -o: nothing is written
    with ExitStack() as locks:
        job, _ = resolve_job(req, lambda msg: None, locks)
    return job


def test_the_pipeline_derives_cutoffs_unless_they_are_set(big_corpus):
    from lmkit.models.adaptive import derived_cutoffs

    for fam in ADAPTIVE_FAMILIES:
        job = resolved(big_corpus, fam.kind)
        assert len(job.vocab) > 4096 and job.config.adaptive_cutoffs == derived_cutoffs(job.vocab.counts) != ()
        assert resolved(big_corpus, fam.kind, sets=["adaptive_cutoffs=none"]).config.adaptive_cutoffs == ()
        assert resolved(big_corpus, fam.kind, sets=["adaptive_cutoffs=off"]).config.adaptive_cutoffs == ()
        assert resolved(big_corpus, fam.kind, sets=["adaptive_cutoffs=100,200"]).config.adaptive_cutoffs \
            == (100, 200)
        assert resolved(big_corpus, fam.kind,
                        options={"adaptive_cutoffs": (64,)}).config.adaptive_cutoffs == (64,)  # a library caller's
    assert not hasattr(resolved(big_corpus, "ngram").config, "adaptive_cutoffs")


def test_the_mlp_direct_connections_keep_the_full_softmax(big_corpus):
    """W x_t is added to every logit: with --set direct=true no cutoffs are derived, and asking for both is refused."""
    assert resolved(big_corpus, "mlp").config.adaptive_cutoffs != ()
    assert resolved(big_corpus, "mlp", sets=["direct=true"]).config.adaptive_cutoffs == ()
    with pytest.raises(UsageError, match="direct connections"):
        resolved(big_corpus, "mlp", sets=["direct=true", "adaptive_cutoffs=100"])


def test_derived_cutoffs_are_recorded_in_run_json(big_corpus, tmp_path):
    from lmkit.models.adaptive import derived_cutoffs

    fam = ADAPTIVE_FAMILIES[0]
    run = api.train(api.TrainRequest(model=fam.kind, corpus=big_corpus, min_count=1, options=dict(fam.tiny),
                                     train_options={**TINY_BUDGET, "epochs": None, "max_tokens": 256},
                                     output=tmp_path / "run", progress=False))
    record = json.loads((run / "run.json").read_text())
    vocab = Vocab.load(run / "vocab.json")
    assert tuple(record["config"]["adaptive_cutoffs"]) == derived_cutoffs(vocab.counts) != ()
    model, _ = api.load_model(run)
    assert model.net.adaptive is not None and model.net.adaptive.shortlist == record["config"]["adaptive_cutoffs"][0]


def test_the_lineup_leaves_the_cutoffs_to_the_shared_default():
    from lmkit.lineup import lineup_model_options

    for fam in ADAPTIVE_FAMILIES:
        assert "adaptive_cutoffs" not in lineup_model_options(fam.kind)


# -- fresh start only ---------------------------------------------------------------------------------
def test_a_fresh_run_is_initialised_and_a_resumed_one_is_not(tiny_corpus, tmp_path, monkeypatch):
    from lmkit.models.torchlm import TorchLM

    calls = []
    inner = TorchLM.init_unigram
    monkeypatch.setattr(TorchLM, "init_unigram", lambda self, train: calls.append(train.name) or inner(self, train))
    fam = UNIGRAM_FAMILIES[0]
    run = api.train(api.TrainRequest(model=fam.kind, corpus=tiny_corpus, options=dict(fam.tiny),
                                     train_options=dict(TINY_BUDGET), output=tmp_path / "run", progress=False))
    assert len(calls) == 1
    assert (run / "checkpoint" / "state.json").exists()
    api.resume(run, {"epochs": 2.0}, progress=False)
    assert len(calls) == 1  # continued from the checkpoint: its trained bias is kept
    api.load_model(run)
    assert len(calls) == 1


# -- old weights files --------------------------------------------------------------------------------
def rewrite_weights(path: Path, drop: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    del tensors[drop]
    save_file(tensors, str(path), metadata=meta)


def windowed_full_softmax_families():
    return [f for f in UNIGRAM_FAMILIES if "out_bias" in getattr(f.model_class.module, "zero_if_missing", ())]


@pytest.mark.parametrize("kind", [f.kind for f in windowed_full_softmax_families()])
def test_a_weights_file_without_the_new_bias_loads_with_a_zero_bias(kind, tiny_corpus, tmp_path):
    import torch

    fam = next(f for f in UNIGRAM_FAMILIES if f.kind == kind)
    run = api.train(api.TrainRequest(model=kind, corpus=tiny_corpus, options=dict(fam.tiny),
                                     train_options=dict(TINY_BUDGET), output=tmp_path / "run", progress=False))
    model, _ = api.load_model(run)
    assert model.net.out_bias is not None and torch.count_nonzero(model.net.out_bias) > 0  # trained from the unigram
    rewrite_weights(run / "model.safetensors", "out_bias")  # as a run folder written before the bias existed
    old, _ = api.load_model(run)
    assert torch.count_nonzero(old.net.out_bias) == 0
    assert np.isfinite(api.score(run, tiny_corpus / "test.txt").summary()["perplexity"])
    rewrite_weights(run / "model.safetensors", next(n for n, _ in old.net.named_parameters() if n != "out_bias"))
    with pytest.raises(ModelError, match=r"do not match the model in run.json \(missing 1"):
        api.load_model(run)  # any other missing tensor is still refused


def test_lmkit_models_says_why():
    r = CliRunner().invoke(app, ["models", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    rows = {row["family"]: {o["name"]: o for o in row["options"]} for row in json.loads(r.stdout)}
    for fam in UNIGRAM_FAMILIES:
        assert rows[fam.kind]["unigram_init"]["default"] is True and "unigram" in rows[fam.kind]["unigram_init"]["why"]
    for fam in ADAPTIVE_FAMILIES:
        option = rows[fam.kind]["adaptive_cutoffs"]
        assert option["default"] == "derived" and "none" in option["why"]
    table = CliRunner().invoke(app, ["models", "--format", "tsv"]).stdout
    assert any(line.split("\t")[1] == "unigram_init" and "unigram" in line for line in table.splitlines())


def test_both_defaults_can_be_switched_off_from_the_cli(big_corpus, tmp_path):
    """`--set adaptive_cutoffs=none --set unigram_init=false` reach run.json from the command line."""
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--model", "transformer", "--layers", "1", "--d-model", "16", "--heads", "2",
                                 "--block-size", "16", "--corpus", str(big_corpus), "--min-count", "1",
                                 "--max-tokens", "256", "--set", "adaptive_cutoffs=none", "--set",
                                 "unigram_init=false", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["adaptive_cutoffs"] == [] and config["unigram_init"] is False


def test_the_mlp_direct_and_adaptive_refusal_is_one_line_from_the_cli(big_corpus, tmp_path):
    """`--set direct=true --set adaptive_cutoffs=...` is refused before any data is read: exit 1, one line."""
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--model", "mlp", "--corpus", str(big_corpus), "--set", "direct=true",
                                 "--set", "adaptive_cutoffs=100", "--max-tokens", "64", "-o", str(out)])
    assert r.exit_code != 0 and not out.exists()
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "direct connections" in lines[0], r.output
