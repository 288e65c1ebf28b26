"""Pins for stream context in the torch families, computed independently of lmkit's own loops.

1. Stream scoring: a stream several internal scoring chunks long, scored through the public path, must
   equal one pass of the model's torch module over the whole stream (LSTM: the state carried by the
   test itself; Transformer: every token scored in the sliding window docs/neural.md defines).
2. Stream training: the one training loop must carry the detached recurrent state from one batch to
   the next; checked by a hook on the module and by a hand-written loop that reproduces the losses and
   the weights of the first steps."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmkit import api
from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import BOS, EOS, PAD, UNK, Vocab
from lmkit.evaluate.perplexity import score_encoded
from lmkit.models.torchlm import RNNModel, TransformerModel
from lmkit.protocol import Protocol
from lmkit.train import TrainConfig, fit

WORDS = "the cat dog bird sees likes chases a tree river moon bread old young runs sleeps".split()
STREAM = Protocol(context="stream")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny sequential models run fastest on one thread (and the machine is shared); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_lines(path: Path, lines: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
                              for _ in range(lines)) + "\n")
    return path


@pytest.fixture(scope="module")
def long_text(tmp_path_factory) -> tuple[Vocab, object, np.ndarray]:
    """(vocabulary, encoded text, the stream `<s> line1 </s> line2 </s> ...` built here by hand)."""
    path = write_lines(tmp_path_factory.mktemp("stream") / "long.txt", 1300, 7)
    text = read_text(path)
    vocab = Vocab.build(count_tokens(text, STREAM))
    enc = encode(text, vocab, STREAM)
    ids = [BOS]
    for line in text.lines:
        ids += [vocab.index[w] for w in line.split()] + [EOS]
    stream = np.array(ids, dtype=np.int64)
    assert len(stream) - 1 > 3 * 2048  # longer than three internal scoring chunks
    return vocab, enc, stream


def scramble(net: torch.nn.Module, std: float, seed: int) -> None:
    """Large random weights: the state / the far context changes every prediction visibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ln P(target) over the predictable set (vocabulary minus <pad> and <s>), written here."""
    logits = logits.double().clone()
    logits[..., PAD] = -math.inf
    logits[..., BOS] = -math.inf
    return torch.gather(F.log_softmax(logits, dim=-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def flat(score) -> np.ndarray:
    return np.concatenate(score.logprobs)


def assert_same_score(score, ref: np.ndarray) -> None:
    lp = flat(score)
    assert lp.shape == ref.shape
    np.testing.assert_allclose(lp, ref, rtol=0, atol=2e-5)
    assert score.tokens == len(ref)
    assert score.perplexity == pytest.approx(math.exp(-ref.sum() / len(ref)), rel=1e-5)


# -- 1. stream scoring ------------------------------------------------------------------------------------
def test_lstm_stream_score_equals_one_pass_with_carried_state(long_text):
    vocab, enc, stream = long_text
    torch.manual_seed(0)
    model = RNNModel(RNNModel.Config(layers=2, hidden=16, dropout=0.0, embed_dropout=0.0), vocab, STREAM)
    scramble(model.net, 0.4, 1)
    score = score_encoded(model, enc)

    net = model.net.eval()
    x = torch.as_tensor(stream[:-1])[None]
    y = torch.as_tensor(stream[1:])[None]
    with torch.no_grad():
        logits, _ = net(x, net.init_state(1, "cpu"))  # one pass: the module carries its state itself
    ref = log_probs(logits, y)[0].numpy()
    assert_same_score(score, ref)

    # the same, read in pieces of 1000 with the state handed on by the test (none of lmkit's chunking)
    parts, state = [], None
    with torch.no_grad():
        for i in range(0, x.shape[1], 1000):
            logits, state = net(x[:, i:i + 1000], state)
            parts.append(log_probs(logits, y[:, i:i + 1000])[0].numpy())
    np.testing.assert_allclose(np.concatenate(parts), ref, rtol=0, atol=2e-5)


def test_lstm_run_folder_stream_score_carries_state(tmp_path: Path):
    """The public path end to end: a trained stream-context LSTM run scored with api.score on a long file."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_lines(corpus / "train.txt", 120, 1)
    write_lines(corpus / "valid.txt", 10, 3)
    test = write_lines(tmp_path / "test.txt", 1300, 2)
    run = api.train(api.TrainRequest(model="lstm", corpus=corpus, output=tmp_path / "run", context="stream",
                                     options={"layers": 1, "hidden": 16}, progress=False,
                                     train_options={"max_tokens": 200, "batch_size": 4, "seq_len": 16,
                                                    "lr": 0.05, "warmup_steps": 1, "device": "cpu"}))
    result = api.score(run, test)
    model, _ = api.load_model(run)
    text = read_text(test)
    ids = [BOS]
    for line in text.lines:
        ids += [model.vocab.index.get(w, UNK) for w in line.split()] + [EOS]
    stream = torch.tensor(ids)
    net = model.net.eval()
    with torch.no_grad():
        logits, _ = net(stream[None, :-1], None)
    ref = log_probs(logits, stream[None, 1:])[0].numpy()
    assert len(ref) > 3 * 2048
    assert_same_score(result.score, ref)


def window_start(t: int, length: int, block: int, stride: int) -> int:
    """Where the window that scores input position t starts (docs/neural.md, sliding-window scoring):
    the first window [0, block) scores all its tokens; window k >= 1 starts at k*stride (the last one at
    length - block) and scores the positions after the previous window's end."""
    if t < block or length <= block:
        return 0
    k = (t - (block - stride)) // stride
    return min(k * stride, length - block)


@pytest.mark.parametrize("stride", [None, 1, 5])
def test_transformer_stream_score_equals_its_sliding_windows(long_text, stride):
    vocab, enc, stream = long_text
    torch.manual_seed(0)
    block = 16
    model = TransformerModel(TransformerModel.Config(layers=1, d_model=16, heads=2, block_size=block, dropout=0.0),
                             vocab, STREAM)
    scramble(model.net, 0.3, 2)
    model.stride = stride
    score = score_encoded(model, enc)

    x, y = stream[:-1], stream[1:]
    L = len(x)
    s = stride or block // 2
    starts = np.array([window_start(t, L, block, s) for t in range(L)])
    # sanity of the rule itself: after the first window every token sees at least block - s tokens before it
    assert np.all(np.arange(L)[block:] - starts[block:] >= block - s)
    assert np.all(starts + block >= np.arange(L) + 1)
    uniq = np.unique(starts)
    net = model.net.eval()
    ref = np.empty(L)
    with torch.no_grad():
        for i in range(0, len(uniq), 2048):
            group = uniq[i:i + 2048]
            xb = torch.as_tensor(np.stack([x[g:g + block] for g in group]))
            yb = torch.as_tensor(np.stack([y[g:g + block] for g in group]))
            lp = log_probs(net(xb)[0], yb).numpy()
            for row, g in enumerate(group):
                at = np.flatnonzero(starts == g)
                ref[at] = lp[row, at - g]
    assert_same_score(score, ref)


# -- 2. stream training -----------------------------------------------------------------------------------
def test_lstm_stream_training_carries_the_detached_state(tmp_path: Path):
    """Three steps of lmkit.train.fit on a stateful stream, against a loop written here: batch k's rows
    continue batch k-1's rows, so its state is the (detached) state batch k-1 ended with."""
    B, T = 2, 8
    words = "a b c d e f g".split()
    rng = random.Random(3)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(12)]
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    text = read_text(path)
    vocab = Vocab.build(count_tokens(text, STREAM))
    enc = encode(text, vocab, STREAM)
    stream = [BOS]
    for line in lines:
        stream += [vocab.index[w] for w in line.split()] + [EOS]
    n = (len(stream) - 1) // B
    steps = math.ceil(n / T)
    assert steps == 3, (len(stream), n)  # the corpus gives exactly three windows per epoch
    rows_x = [stream[r * n:(r + 1) * n] for r in range(B)]
    rows_y = [stream[r * n + 1:(r + 1) * n + 1] for r in range(B)]
    batches = [(torch.tensor([rx[k * T:(k + 1) * T] for rx in rows_x]),
                torch.tensor([ry[k * T:(k + 1) * T] for ry in rows_y])) for k in range(steps)]

    # unigram_init off: the twin below starts from the very weights fit() trains (the init is pinned elsewhere)
    cfg = RNNModel.Config(layers=1, hidden=8, dropout=0.0, embed_dropout=0.0, unigram_init=False)
    torch.manual_seed(0)
    model = RNNModel(cfg, vocab, STREAM)
    twin = copy.deepcopy(model.net)  # identical initial weights for the hand-written loop
    lr = 0.5

    seen = []  # (idx, state in, logits, state out) of every training forward

    def hook(module, args, kwargs, output):
        if module.training:
            state_in = args[1] if len(args) > 1 else kwargs.get("state")
            seen.append((args[0].clone(), tuple(s.clone() for s in state_in) if state_in is not None else None,
                         output[0].detach().clone(), tuple(s.detach().clone() for s in output[1]),
                         state_in is not None and any(s.requires_grad for s in state_in)))

    handle = model.net.register_forward_hook(hook, with_kwargs=True)
    try:
        fit(model, enc, None, TrainConfig(optimizer="sgd", lr=lr, weight_decay=0.0, batch_size=B, seq_len=T,
                                          epochs=1, warmup_steps=0, schedule="constant", clip=0.0, seed=0,
                                          device="cpu"),
            log=lambda _: None, progress=False)
    finally:
        handle.remove()
    assert len(seen) == steps

    # the hand-written loop: plain SGD, state carried and detached between batches
    state = None
    losses = []
    for k, (x, y) in enumerate(batches):
        fx, state_in, _, _, _ = seen[k]
        assert torch.equal(fx, x), f"batch {k + 1}: not the stream rows laid out by hand"
        if k == 0:
            assert state_in is None or all(torch.count_nonzero(s) == 0 for s in state_in)
        else:
            assert state_in is not None, f"batch {k + 1} starts from no state"
            for got, prev in zip(state_in, seen[k - 1][3]):
                assert torch.count_nonzero(prev) > 0
                torch.testing.assert_close(got, prev, rtol=0, atol=0,
                                           msg=f"batch {k + 1} does not start from the state batch {k} ended with")
            assert not seen[k][4], f"batch {k + 1}'s state is not detached"
        twin.train()
        logits, state = twin(x, state)
        loss = -log_probs(logits, y).sum() / (y != PAD).sum()
        twin.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in twin.parameters():
                p -= lr * p.grad
        state = tuple(s.detach() for s in state)
        losses.append(float(loss.detach()))
        got_loss = float(-log_probs(seen[k][2], y).sum() / (y != PAD).sum())
        assert got_loss == pytest.approx(losses[-1], rel=1e-5, abs=1e-6), f"loss of step {k + 1}"
    for (name, p), q in zip(model.net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=f"{name} after {steps} steps")
