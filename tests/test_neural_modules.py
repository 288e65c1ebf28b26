"""The nn.Module contract every torch family implements (docs/neural.md), checked on tiny CPU models.

forward(idx (B, T), state) -> (raw logits (B, T, V), state); logits[:, t] may depend on idx[:, :t+1]
(and the incoming state) only; `history` bounds how far back they look (MLP: window)."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

torch = pytest.importorskip("torch")

from lmkit.models.mlp import MLPConfig, MLPLM  # noqa: E402
from lmkit.models.rnn import RNNConfig, RNNLM  # noqa: E402
from lmkit.models.transformer import TransformerConfig, TransformerLM, sinusoidal_table  # noqa: E402
from familytools import neural_families  # noqa: E402

V = 23  # tiny vocabulary: 4 specials + 19 words

# name -> (class, small config); every family and every cell/position variant.
TINY = {
    "mlp": (MLPLM, MLPConfig(window=3, embed=8, hidden=16)),
    "mlp-direct": (MLPLM, MLPConfig(window=3, embed=8, hidden=16, direct=True)),
    "lstm": (RNNLM, RNNConfig(cell="lstm", layers=2, hidden=16, embed=8)),
    "gru": (RNNLM, RNNConfig(cell="gru", layers=2, hidden=16, embed=8)),
    "rnn": (RNNLM, RNNConfig(cell="rnn", layers=1, hidden=16, embed=8)),
    "lstm-tied": (RNNLM, RNNConfig(cell="lstm", layers=2, hidden=16, tie_weights=True)),
    "transformer": (TransformerLM, TransformerConfig(layers=2, d_model=16, heads=2, block_size=16)),
    "transformer-sin": (TransformerLM, TransformerConfig(layers=2, d_model=16, heads=2, block_size=16,
                                                         positions="sinusoidal", tie_weights=False, bias=False)),
    "lstm-adaptive": (RNNLM, RNNConfig(layers=1, hidden=16, tie_weights=True, adaptive_cutoffs=(8, 15))),
    "transformer-adaptive": (TransformerLM, TransformerConfig(layers=1, d_model=16, heads=2, block_size=16,
                                                              adaptive_cutoffs=(10,))),
}
# every registered neural family is covered: those not sized above at their declared `tiny` options
FAMILY_NAMES = [f.kind for f in neural_families()]
for _fam in neural_families():
    _module = _fam.model_class.module
    TINY.setdefault(_fam.kind, (_module, _module.Config(**_fam.tiny)))


def make(name: str, seed: int = 0):
    cls, config = TINY[name]
    torch.manual_seed(seed)
    return cls(config, V)


def ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g)


@pytest.mark.parametrize("name", TINY)
def test_shapes_and_state(name):
    model = make(name).eval()
    B, T = 3, 7
    logits, state = model(ids(B, T))
    assert logits.shape == (B, T, V)
    assert logits.dtype == torch.float32
    cfg = model.config
    if isinstance(model, RNNLM):
        assert model.stateful and model.history is None
        parts = state if cfg.cell == "lstm" else (state,)
        assert isinstance(state, tuple) == (cfg.cell == "lstm")
        assert all(p.shape == (cfg.layers, B, cfg.hidden) for p in parts)
        init = model.init_state(B, "cpu")
        init_parts = init if cfg.cell == "lstm" else (init,)
        assert all(p.shape == (cfg.layers, B, cfg.hidden) and not p.any() for p in init_parts)
        # A zero state is the same as no state.
        assert torch.equal(model(ids(B, T), init)[0], logits)
    else:
        assert state is None and not model.stateful
        assert model.init_state(B, "cpu") is None and model.detach_state(None) is None
        bound = {MLPLM: "window", TransformerLM: "block_size"}.get(type(model))  # other families: any bound
        assert model.history == getattr(cfg, bound) if bound else model.history is None or model.history >= 1


@pytest.mark.parametrize("name", TINY)
def test_causal(name):
    """Changing idx[:, j] never changes logits[:, t] for t < j (bit for bit, dropout off)."""
    model = make(name).eval()
    T = 10
    x = ids(2, T)
    with torch.no_grad():
        base, _ = model(x)
        for j in range(T):
            y = x.clone()
            y[:, j] = (y[:, j] + 1) % V
            out, _ = model(y)
            assert torch.equal(out[:, :j], base[:, :j]), f"position < {j} saw token {j}"
            assert not torch.equal(out[:, j], base[:, j]), f"position {j} ignored its own input"


@pytest.mark.parametrize("name", ["mlp", "mlp-direct"])
def test_mlp_window(name):
    """logits[:, t] depend on idx[:, t-window+1 : t+1] only; before the start it is <pad> (id 0)."""
    model = make(name).eval()
    w, T = model.config.window, 12
    x = ids(2, T)
    with torch.no_grad():
        base, _ = model(x)
        for j in range(T):
            y = x.clone()
            y[:, j] = (y[:, j] + 1) % V
            out, _ = model(y)
            for t in range(T):
                same = torch.equal(out[:, t], base[:, t])
                assert same == (not j <= t < j + w), (j, t)
        # Position 0 sees <pad> x (w-1) then idx[:, 0]: the same as an explicit left pad.
        padded, _ = model(torch.cat([torch.zeros(2, w - 1, dtype=torch.long), x], dim=1))
        assert torch.equal(padded[:, w - 1:], base)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "lstm-tied"])
def test_rnn_state_carry(name):
    """One call over the whole sequence == two calls passing the state along."""
    model = make(name).eval()
    x = ids(3, 12)
    with torch.no_grad():
        whole, s_whole = model(x)
        first, s = model(x[:, :5])
        second, s_two = model(x[:, 5:], model.detach_state(s))
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5)
    flat = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    for a, b in zip(flat(s_whole), flat(s_two)):
        assert torch.allclose(a, b, atol=1e-5)


def test_rnn_detach_state_cuts_the_graph():
    model = make("lstm")
    _, state = model(ids(2, 4))
    assert all(s.requires_grad for s in state)
    detached = model.detach_state(state)
    assert isinstance(detached, tuple) and not any(s.requires_grad for s in detached)
    assert all(torch.equal(a, b) for a, b in zip(state, detached))
    h = make("gru")(ids(2, 4))[1]
    assert not make("gru").detach_state(h).requires_grad


@pytest.fixture(autouse=True)
def one_thread():
    """These models are so small that thread hand-offs cost more than the arithmetic (10x slower on a
    busy 2-core machine); restore the setting afterwards for the rest of the suite."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["mlp", "lstm", "gru", "rnn", "lstm-tied", "transformer", "transformer-sin"])
def test_overfits_a_repeated_sequence(name):
    """Gradients reach every part: ~100 Adam steps memorise a short repeated pattern."""
    cls, config = TINY[name]
    no_dropout = {k: 0.0 for k in ("dropout", "embed_dropout") if hasattr(config, k)}
    torch.manual_seed(0)
    model = cls(dataclasses.replace(config, **no_dropout), V).train()
    pattern = torch.tensor([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])  # a cycle: each token fixes the next
    x = pattern.repeat(2).unsqueeze(0).repeat(4, 1)[:, :16]  # (4, 16)
    inp, tgt = x[:, :-1], x[:, 1:]
    # A high rate: the LSTM's small uniform(-0.1, 0.1) init makes its first steps slow at this size.
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        logits, _ = model(inp)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits, _ = model(inp)
        final = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1)).item()
    assert final < 0.15 * math.log(V), f"{name}: loss {final:.3f} vs ln V = {math.log(V):.3f}"


@pytest.mark.parametrize("name", TINY)
def test_deterministic_given_seed(name):
    a, b = make(name, seed=7), make(name, seed=7)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = ids(2, 6)
    torch.manual_seed(3)
    out_a = a.train()(x)[0]  # dropout on: the seed fixes the masks too
    torch.manual_seed(3)
    out_b = b.train()(x)[0]
    assert torch.equal(out_a, out_b)
    c = make(name, seed=8)
    assert any(not torch.equal(sa[k], c.state_dict()[k]) for k in sa if sa[k].numel() > 1)


def test_initial_predictions_are_near_uniform():
    """Init choices documented in the files: the first loss is close to ln V, not a confident guess."""
    for name in FAMILY_NAMES:
        model = make(name).eval()
        x = ids(4, 10)
        with torch.no_grad():
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        assert abs(loss.item() - math.log(V)) < 0.1, name


# -- configuration -----------------------------------------------------------------------------

def test_config_errors_are_value_errors_with_clear_messages():
    with pytest.raises(ValueError, match="embed == hidden"):
        RNNConfig(hidden=32, embed=16, tie_weights=True)
    RNNConfig(hidden=32, embed=None, tie_weights=True)  # None means = hidden: fine
    RNNConfig(hidden=32, embed=32, tie_weights=True)
    with pytest.raises(ValueError, match="cell"):
        RNNConfig(cell="transformer")
    with pytest.raises(ValueError, match="divisible by heads"):
        TransformerConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="positions"):
        TransformerConfig(positions="rotary")
    with pytest.raises(ValueError, match="window"):
        MLPConfig(window=0)
    with pytest.raises(ValueError, match="dropout"):
        MLPConfig(dropout=1.0)


def test_config_errors_are_also_usage_errors():
    """So the CLI prints them as one line with exit code 2, like every other bad option."""
    from lmkit.errors import UsageError

    with pytest.raises(UsageError):
        TransformerConfig(d_model=30, heads=4)


def test_transformer_refuses_more_than_block_size():
    model = make("transformer").eval()
    model(ids(1, 16))  # exactly block_size is fine
    with pytest.raises(ValueError, match="block_size"):
        model(ids(1, 17))


def test_every_config_default_is_usable():
    """Default configs build with a real vocabulary size and produce logits."""
    x = ids(1, 5)
    for cls in (f.model_class.module for f in neural_families()):
        torch.manual_seed(0)
        model = cls(cls.Config(), V).eval()
        assert model(x)[0].shape == (1, 5, V)
        assert {"optimizer", "lr", "batch_size", "seq_len", "weight_decay"} <= set(cls.train_defaults)


# -- positions, tying, accounting --------------------------------------------------------------

def test_sinusoidal_positions():
    table = sinusoidal_table(8, 6)
    assert table.shape == (8, 6)
    assert torch.allclose(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    # PE[t, 2i] = sin(t / 10000^(2i/d)): t = 3, i = 1, d = 6 -> sin(3 / 10000^(1/3))
    assert math.isclose(table[3, 2].item(), math.sin(3 / 10000 ** (2 / 6)), rel_tol=1e-5)
    assert sinusoidal_table(4, 5).shape == (4, 5)  # odd widths work too
    model = make("transformer-sin")
    assert "pos_table" not in model.state_dict()  # a function of the config, not a weight
    assert not any("pos" in n for n, _ in model.named_parameters())
    learned = make("transformer")
    assert learned.pos_emb.weight.shape == (16, 16)
    # Positions matter: the same token at different positions gets different logits.
    for m in (model.eval(), learned.eval()):
        out, _ = m(torch.full((1, 4), 5))
        assert not torch.equal(out[0, 1], out[0, 2])


def test_tied_weights_share_storage():
    tf = make("transformer")
    assert tf.config.tie_weights and tf.lm_head is None
    assert tf.output_weight.data_ptr() == tf.tok_emb.weight.data_ptr()
    assert not any(k.startswith("lm_head") for k in tf.state_dict())  # stored once
    # The gradient of the output layer lands in the embedding matrix.
    x = ids(2, 6)
    tf(x)[0][..., 7].sum().backward()
    assert tf.tok_emb.weight.grad[7].abs().sum() > 0
    untied = make("transformer-sin")
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    tied = make("lstm-tied")
    untied = RNNLM(dataclasses.replace(tied.config, tie_weights=False), V)
    assert tied.head is None and untied.head is not None
    assert untied.num_parameters() - tied.num_parameters() == V * 16
    assert not any(k.startswith("head.") for k in tied.state_dict())


def test_num_parameters_counts_tied_once():
    tf = make("transformer")
    assert tf.num_parameters() == sum(v.numel() for v in tf.state_dict().values())
    untied = TransformerLM(TransformerConfig(layers=2, d_model=16, heads=2, block_size=16, tie_weights=False), V)
    assert untied.num_parameters() - tf.num_parameters() == V * 16


def test_flops_per_token():
    # MLP: 6 * (window*E*hidden + hidden + hidden*V + V) = 6 * (3*8*16 + 16 + 16*23 + 23) = 6 * 791
    assert make("mlp").flops_per_token() == 6 * 791
    # Tied transformer: 6 * (params - position table) + 12 * layers * d_model * T
    tf = make("transformer")
    n = tf.num_parameters() - 16 * 16
    assert tf.flops_per_token() == 6 * n + 12 * 2 * 16 * 16
    assert tf.flops_per_token(seq_len=8) == 6 * n + 12 * 2 * 16 * 8
    # LSTM untied: 6 * (params - embedding); 4 gates: layer 1 4*16*(8+16+2), layer 2 4*16*(16+16+2)
    lstm = make("lstm")
    assert lstm.flops_per_token() == 6 * (4 * 16 * 26 + 4 * 16 * 34 + 16 * V + V)


def test_optim_groups_cover_every_parameter_once():
    for name in FAMILY_NAMES:
        model = make(name)
        groups = model.optim_groups(0.1)
        seen = [id(p) for g in groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in model.parameters())
        assert all(p.dim() >= 2 for p in groups[0]["params"]) and groups[1]["weight_decay"] == 0.0


# -- precision and compilation -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "lstm", "gru", "transformer"])
def test_bf16_autocast_on_cpu(name):
    model = make(name).eval()
    x = ids(2, 8)
    with torch.no_grad():
        ref, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = model(x)
            if model.stateful:  # the state from an autocast call can be fed back in
                model(x, state)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1


@pytest.mark.skipif(not os.environ.get("LMKIT_SLOW_TESTS"), reason="torch.compile takes ~10 s per model; "
                    "set LMKIT_SLOW_TESTS=1")
@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_compiles_without_graph_breaks(name):
    torch._dynamo.reset()
    model = make(name).eval()
    x = ids(2, 8)
    compiled = torch.compile(model, fullgraph=True)
    assert torch.allclose(compiled(x)[0], model(x)[0], atol=1e-5)


# -- adaptive softmax (rnn adaptive_cutoffs) ---------------------------------------------------------
def adaptive_net(family: str, V: int, **kw):
    if family == "rnn":
        return RNNLM(RNNConfig(hidden=16, **kw), V)
    return TransformerLM(TransformerConfig(layers=1, d_model=16, heads=2, block_size=16, **kw), V)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
@pytest.mark.parametrize("tie", [False, True])
def test_adaptive_softmax_is_a_normalised_distribution_and_scores_targets_exactly(family, tie):
    torch.manual_seed(0)
    V = 60
    net = adaptive_net(family, V, adaptive_cutoffs=(12, 30), tie_weights=tie).eval()
    x = torch.randint(0, V, (3, 9))
    y = torch.randint(3, V, (3, 9))
    y[1, -2:] = 0  # <pad> targets give 0
    with torch.no_grad():
        full, _ = net(x)
        lp, _ = net(x, targets=y)
    assert full.shape == (3, 9, V)
    assert torch.allclose(full.exp().sum(-1), torch.ones(3, 9), atol=1e-5)
    assert torch.isneginf(full[..., 0]).all() and torch.isneginf(full[..., 2]).all()  # <pad>, <s>
    expected = full.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(y == 0, 0.0)
    assert torch.allclose(lp, expected, atol=1e-5)
    # every tail cluster and the head were actually used by these targets
    assert ((y > 0) & (y < 12)).any() and ((y >= 12) & (y < 30)).any() and (y >= 30).any()


@pytest.mark.parametrize("tie", [False, True])
def test_adaptive_softmax_target_gradients_equal_the_full_distributions(tie):
    """The fast path's own backward (PickedLogSoftmax) gives the gradients autograd gives through the full
    (N, V) log-probabilities, for every parameter and the hidden states; <pad> targets send none back."""
    from lmkit.models.adaptive import AdaptiveHead

    torch.manual_seed(0)
    V, H = 80, 8
    emb = torch.nn.Parameter(torch.randn(V, H)) if tie else None
    head = AdaptiveHead(H, V, (16, 40), shortlist_weight=emb)
    h = torch.randn(4, 7, H, requires_grad=True)
    y = torch.randint(3, V, (4, 7))
    y[0, :3] = 0  # <pad>
    y[1, :3] = torch.tensor([5, 20, 60])  # the head and both tails
    weight = torch.randn(4, 7)
    params = [h] + list(head.parameters())
    fast = torch.autograd.grad((head.target_logprobs(h, y) * weight).sum(), params)
    full = head(h).gather(-1, y.unsqueeze(-1)).squeeze(-1).masked_fill(y == 0, 0.0)
    slow = torch.autograd.grad((full * weight).sum(), params)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert fast[0][0, :3].abs().max() == 0  # nothing flows back from <pad> targets
    assert head.head_bias.grad is None and fast[-1].abs().sum() > 0  # (the bias of the last tail was reached)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_adaptive_softmax_tied_shares_the_embedding_rows(family):
    net = adaptive_net(family, 40, adaptive_cutoffs=(10,), tie_weights=True).eval()
    untied = adaptive_net(family, 40, adaptive_cutoffs=(10,), tie_weights=False)
    assert untied.num_parameters() - net.num_parameters() == 10 * 16  # the shortlist matrix is not stored
    emb = net.embed.weight if family == "rnn" else net.tok_emb.weight
    with torch.no_grad():
        emb[5].fill_(0.0)
        before = net(torch.tensor([[4]]))[0][0, 0].clone()
        emb[5].fill_(3.0)
        after = net(torch.tensor([[4]]))[0][0, 0]
    assert before[5] != after[5]  # the embedding row is the head's output row for id 5


def test_adaptive_cutoffs_are_checked():
    with pytest.raises(ValueError, match="cutoffs"):
        RNNLM(RNNConfig(hidden=8, adaptive_cutoffs=(30, 20)), 50)
    with pytest.raises(ValueError, match="cutoffs"):
        RNNLM(RNNConfig(hidden=8, adaptive_cutoffs=(10, 50)), 50)


@pytest.mark.parametrize("name", TINY)
def test_last_only_equals_the_last_position_of_the_full_output(name):
    net = make(name).eval()
    x = ids(3, 9)
    with torch.no_grad():
        full, _ = net(x, net.init_state(3, "cpu"))
        last, _ = net(x, net.init_state(3, "cpu"), last_only=True)
    assert last.shape == (3, 1, full.size(-1))
    assert torch.allclose(last, full[:, -1:], atol=1e-6)


def test_target_logprobs_values_and_gradients_match_a_plain_masked_softmax():
    from lmkit.models.torchlm import target_logprobs

    torch.manual_seed(0)
    base = torch.randn(3, 5, V, requires_grad=True)
    targets = torch.randint(3, V, (3, 5))
    targets[0, -1] = 0  # <pad>: contributes nothing
    got = target_logprobs(base * 1.0, targets)  # a non-leaf, as a module's output is
    got.sum().backward()
    grad_fast = base.grad.clone()
    base.grad = None
    blocked = torch.zeros(V, dtype=torch.bool)
    blocked[0] = blocked[2] = True
    ref_lp = torch.log_softmax((base * 1.0).masked_fill(blocked, float("-inf")), dim=-1)
    ref = ref_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(targets == 0, 0.0)
    ref.sum().backward()
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(grad_fast, base.grad, atol=1e-6)
    assert (grad_fast[..., 0] == 0).all() and (grad_fast[..., 2] == 0).all()
