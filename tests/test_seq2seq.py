"""The encoder-decoder families (seq2seq, transformer-seq2seq): the same `source <sep> target` rows, the same
scored tokens, teacher forcing == incremental decoding, padding invariance, decoding, a copy task, the CLI."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import cli

from lmkit import api
from lmkit.data.vocab import BOS, EOS, PAD, SEP, Vocab
from lmkit.evaluate.generate import Decoding, generate
from lmkit.models.seq2seq import Seq2SeqModel
from lmkit.models.transformer_seq2seq import TransformerSeq2SeqModel
from lmkit.protocol import Protocol
from lmkit.training.config import TrainConfig
from lmkit.training.optim import lr_factor

WORDS = "a b c d e f g h".split()
FAMILIES = {
    "seq2seq": (Seq2SeqModel, {"hidden": 16, "embed": 16}),
    "transformer-seq2seq": (TransformerSeq2SeqModel, {"layers": 2, "d_model": 16, "heads": 2}),
}
# options and training that learn the copy task below in a few seconds on one CPU thread
COPY = {
    "seq2seq": ({"hidden": 64, "embed": 64, "dropout": 0.0},
                {"epochs": 12, "batch_size": 32, "lr": 1e-2, "warmup_steps": 10}),
    "transformer-seq2seq": ({"layers": 2, "d_model": 64, "heads": 4, "dropout": 0.0},
                            {"epochs": 12, "batch_size": 32, "lr": 2e-3, "warmup_steps": 20}),
}


def vocab() -> Vocab:
    return Vocab.build(Counter({w: 5 for w in WORDS}), with_sep=True)


def tiny(kind: str, seed: int = 0, **extra):
    cls, options = FAMILIES[kind]
    torch.manual_seed(seed)
    model = cls(cls.Config(**{**options, **extra}), vocab(), Protocol(task="translate"))
    model.net.eval()
    return model


def random_pairs(n: int, seed: int, lo: int = 1, hi: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    first = SEP + 1
    out = []
    for _ in range(n):
        src = rng.integers(first, first + len(WORDS), size=rng.integers(lo, hi))
        tgt = rng.integers(first, first + len(WORDS), size=rng.integers(lo, hi))
        out.append(np.concatenate([src, [SEP], tgt]).astype(np.int64))
    return out


def incremental(model, seq: np.ndarray) -> np.ndarray:
    """ln P of every target token and </s>, decoding one token at a time with the decoder alone."""
    net = model.net
    sep = int(np.flatnonzero(seq == SEP)[0])
    src = torch.as_tensor(np.concatenate([[BOS], seq[:sep]]))[None]
    targets = [*seq[sep + 1:].tolist(), EOS]
    with torch.no_grad():
        memory = net.encode(src, torch.ones_like(src, dtype=torch.bool))
        state, prev, out = None, SEP, []
        for tok in targets:
            logits, state = net.step(torch.tensor([prev]), memory, torch.ones_like(src, dtype=torch.bool), state)
            logits[:, [0, BOS]] = float("-inf")
            out.append(float(torch.log_softmax(logits.double(), dim=-1)[0, tok]))
            prev = tok
    return np.array(out)


# -- the same rows, the same scored tokens ------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_teacher_forcing_equals_incremental_decoding(kind):
    model = tiny(kind)
    seqs = random_pairs(12, 1)
    batched = model.sequence_logprobs(seqs)
    for seq, lp in zip(seqs, batched):
        sep = int(np.flatnonzero(seq == SEP)[0])
        step = incremental(model, seq)
        np.testing.assert_allclose(lp[sep + 1:], step, atol=1e-5)
        assert float(lp[sep + 1:].sum()) == pytest.approx(float(step.sum()), abs=1e-5)


@pytest.mark.parametrize("kind", FAMILIES)
def test_padding_invariance_batch_of_one_equals_batch_of_many(kind):
    model = tiny(kind)
    seqs = random_pairs(40, 2, 1, 12)  # very different source lengths: lots of source padding
    together = model.sequence_logprobs(seqs, batch_size=64)
    for seq, lp in zip(seqs, together):
        np.testing.assert_allclose(model.sequence_logprobs([seq])[0], lp, atol=1e-5)


@pytest.mark.parametrize("kind", FAMILIES)
def test_next_logprobs_of_a_context_alone_equal_those_in_a_batch(kind):
    """Decoding asks for contexts of many source lengths at once: source padding must not leak into any row."""
    model = tiny(kind)
    contexts = [[BOS, *s[:int(np.flatnonzero(s == SEP)[0]) + 1 + k].tolist()] for k, s in
                zip([0, 1, 2, 0, 3, 1], random_pairs(6, 5, 1, 10))]
    together = model.next_logprobs(contexts)
    for ctx, row in zip(contexts, together):
        np.testing.assert_allclose(model.next_logprobs([ctx])[0], row, atol=1e-5)


@pytest.mark.parametrize("kind", FAMILIES)
def test_source_side_is_never_scored_and_next_logprobs_agree(kind):
    model = tiny(kind)
    seq = random_pairs(1, 3, 3, 4)[0]
    lp = model.sequence_logprobs([seq])[0]
    ctx = [BOS, *seq.tolist()]
    rows = model.next_logprobs([ctx[:i + 1] for i in range(len(seq) + 1)])
    targets = [*seq.tolist(), EOS]
    np.testing.assert_allclose([rows[i, t] for i, t in enumerate(targets)], lp, atol=1e-5)
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-5)
    sep = int(np.flatnonzero(seq == SEP)[0])
    # source positions (and <sep>) get the uniform distribution: they carry no model information
    np.testing.assert_allclose(lp[:sep + 1], -np.log(len(model.vocab) - 2))


@pytest.mark.parametrize("kind", FAMILIES)
def test_label_smoothing_changes_the_training_loss_never_the_scores(kind):
    plain, smooth = tiny(kind, label_smoothing=0.0), tiny(kind, label_smoothing=0.1)
    smooth.net.load_state_dict(plain.net.state_dict())
    seqs = random_pairs(6, 4)
    for a, b in zip(plain.sequence_logprobs(seqs), smooth.sequence_logprobs(seqs)):
        np.testing.assert_array_equal(a, b)
    from lmkit.data.batching import pad_examples, prefix_examples

    examples, ignore = prefix_examples(seqs, [int(np.flatnonzero(s == SEP)[0]) + 1 for s in seqs], None)
    batch = pad_examples(examples, ignore)
    x, y = torch.as_tensor(batch.x), torch.as_tensor(batch.y)
    plain.net.train()
    smooth.net.train()
    torch.manual_seed(0)
    lp_plain, _ = plain.net(x, None, targets=y)
    torch.manual_seed(0)
    lp_smooth, _ = smooth.net(x, None, targets=y)
    assert float(lp_plain.detach().sum()) != pytest.approx(float(lp_smooth.detach().sum()), abs=1e-3)
    assert (lp_smooth[y == 0] == 0).all()  # source side and padding never enter the loss


def test_label_smoothing_equals_its_definition_values_and_gradients():
    """The one-softmax formula in encdec.smoothed_logprobs against the textbook mixture, computed directly."""
    from lmkit.models.encdec import smoothed_logprobs

    torch.manual_seed(3)
    V, eps = 11, 0.1
    logits = torch.randn(7, V, dtype=torch.float64)
    targets = torch.tensor([5, 6, PAD, 7, 8, 9, 10])  # one <pad> target
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = smoothed_logprobs(a, targets, eps)
    predictable = [v for v in range(V) if v not in (PAD, BOS)]
    logp = torch.log_softmax(b.float().index_fill(-1, torch.tensor([PAD, BOS]), float("-inf")), dim=-1)
    exact = logp.gather(-1, targets[:, None]).squeeze(-1)
    want = (1 - eps) * exact + eps * logp[:, predictable].mean(dim=-1)
    want = torch.where(targets == PAD, torch.zeros_like(want), want)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-6)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(a.grad.double(), b.grad.double(), rtol=1e-4, atol=1e-6)


def test_inverse_sqrt_schedule():
    cfg = TrainConfig(warmup_steps=4, schedule="inverse_sqrt")
    cfg.validate()
    factors = [lr_factor(s, 0.0, cfg) for s in range(16)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[15] == pytest.approx(0.5)  # sqrt(4 / 16)


def test_inverse_sqrt_schedule_from_the_cli(tmp_path):
    from clitools import word_corpus

    corpus = word_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    result = cli("train", "--model", "lstm", "--corpus", corpus, "-o", out, "-q", "--layers", "1", "--hidden", "8",
                 "--embed", "8", "--max-tokens", "400", "--batch-size", "4", "--seq-len", "8", "--warmup", "2",
                 "--schedule", "inverse_sqrt", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "run.json").read_text())
    assert "inverse_sqrt" in json.dumps(record)


# -- decoding -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_beam_one_is_greedy_and_beam_never_scores_below_greedy(kind):
    for seed in range(2):
        model = tiny(kind, seed)
        prompts = [[*s[:int(np.flatnonzero(s == SEP)[0])].tolist(), SEP] for s in random_pairs(5, 10 + seed)]
        limits = [len(p) + 4 for p in prompts]
        greedy = generate(model, prompts, Decoding(max_tokens=max(limits)), limits=limits)
        beam1 = generate(model, prompts, Decoding(strategy="beam", beam=1, max_tokens=max(limits)), limits=limits)
        beam4 = generate(model, prompts, Decoding(strategy="beam", beam=4, max_tokens=max(limits)), limits=limits)
        for g, b1, b4 in zip(greedy, beam1, beam4):
            assert b1[0].ids == g[0].ids and b1[0].logprob == pytest.approx(g[0].logprob, abs=1e-5)
            assert b4[0].logprob >= g[0].logprob - 1e-5  # (length penalty 0: ranked by model score)


def write_pairs(d: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        (d / f"{split}.src").write_text("".join(f"{s}\n" for s, _ in pairs))
        (d / f"{split}.tgt").write_text("".join(f"{t}\n" for _, t in pairs))
    return d


def copy_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        out.append((words, words))
    return out


@pytest.fixture(scope="module")
def copy_corpus(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("copy") / "copy", {
        "train": copy_pairs(600, 0), "valid": copy_pairs(30, 1), "test": copy_pairs(40, 2)})


@pytest.fixture(scope="module")
def copy_runs(copy_corpus, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for kind, (options, training) in COPY.items():
        out = tmp_path_factory.mktemp(kind) / "run"
        runs[kind] = api.train(api.TrainRequest(
            model=kind, corpus=copy_corpus, options=options, output=out, progress=False,
            train_options={**training, "device": "cpu", "threads": 1, "eval_every": 1000, "seed": 0}))
    return runs


@pytest.mark.parametrize("kind", FAMILIES)
def test_copy_task_reaches_bleu_90(kind, copy_runs, copy_corpus):
    record = json.loads((copy_runs[kind] / "run.json").read_text())
    assert record["kind"] == kind and record["train_seconds"] < 30
    for beam in (1, 4):
        res = api.bleu(copy_runs[kind], src=copy_corpus / "test.src", tgt=copy_corpus / "test.tgt", beam=beam)
        assert res.result.score >= 90, (beam, res.result.score, res.result.hypotheses[:3])


# -- the command line ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_run_folder_trains_scores_resumes_checks_and_compares(kind, copy_corpus, tmp_path):
    cls, options = FAMILIES[kind]
    flags = ["--hidden", "16", "--embed", "16"] if kind == "seq2seq" else ["--layers", "1", "--d-model", "16",
                                                                          "--heads", "2"]
    run = tmp_path / "run"
    r = cli("train", "--model", kind, *flags, "--corpus", copy_corpus, "--epochs", "1", "--batch-size", "32",
            "--device", "cpu", "-o", run, "-q")
    assert r.exit_code == 0, r.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["protocol"]["task"] == "translate"
    r = cli("train", "--resume", run, "--epochs", "2", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads((run / "run.json").read_text())["fit_info"]["epoch"] >= 1
    r = cli("score", run, "--src", copy_corpus / "test.src", "--tgt", copy_corpus / "test.tgt", "--format", "json")
    assert r.exit_code == 0, r.stderr
    r = cli("check", run, "--format", "json")
    assert r.exit_code == 0, r.stdout + r.stderr
    prefix = tmp_path / "prefix"
    r = cli("train", "--model", "ngram:kn3", "--corpus", copy_corpus, "-o", prefix, "-q")
    assert r.exit_code == 0, r.stderr
    r = cli("compare", run, prefix, "--format", "json")
    assert r.exit_code == 0, r.stderr
    r = cli("generate", run, "--prompt", "a b c", "--format", "json")
    assert r.exit_code == 0, r.stderr


def test_compare_beam_adds_a_stored_beam_bleu_column(copy_runs, copy_corpus, tmp_path):
    runs = [copy_runs[k] for k in FAMILIES]
    r = cli("compare", *runs, "--beam", "3", "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = {row["kind"]: row for row in json.loads(r.stdout)}
    for kind, run in copy_runs.items():
        want = api.bleu(run, src=copy_corpus / "test.src", tgt=copy_corpus / "test.tgt", beam=3).result.score
        assert rows[kind]["beam"] == 3 and rows[kind]["bleu_beam"] == pytest.approx(want)
        stored = json.loads((run / "run.json").read_text())["metrics"]["bleu_beam"]
        assert (stored["beam"], stored["length_penalty"], stored["score"]) == (3, 0.0, pytest.approx(want))
    # runs decoded with different widths never share the column
    from lmkit.pipeline.use import record_bleu

    record_bleu(runs[0], beam=2)
    r = cli("compare", *runs, "--format", "json")
    assert r.exit_code != 0 and "beam 2" in r.stderr and "beam 3" in r.stderr and "Traceback" not in r.stderr
    r = cli("compare", *runs, "--beam", "3", "--format", "json")  # decoded again at one width: comparable
    assert r.exit_code == 0, r.stderr
    assert {row["beam"] for row in json.loads(r.stdout)} == {3}


def test_compare_beam_refuses_language_models_and_bad_widths(copy_runs, copy_corpus, tmp_path):
    lm_corpus = tmp_path / "lm"
    lm_corpus.mkdir()
    for split in ("train", "valid", "test"):
        (lm_corpus / f"{split}.txt").write_text("a b c d\nb c d e\n" * 20)
    lm = tmp_path / "kn3"
    assert cli("train", "--model", "ngram:kn3", "--corpus", lm_corpus, "-o", lm, "-q").exit_code == 0
    r = cli("compare", lm, "--beam", "4")
    assert r.exit_code != 0 and "language model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("compare", copy_runs["seq2seq"], "--beam", "0")
    assert r.exit_code != 0 and "at least 1" in r.stderr
