"""Neural training throughput on this machine: matmul peak, tokens/s and FLOP rate per family.

    python bench/neural.py                 # all configs, fp32 and bf16 (~6 minutes on 2 cores)
    python bench/neural.py --seconds 20    # longer timed windows per config
    python bench/neural.py --only lstm-ref

What is measured, in one process, one config at a time (run it on an otherwise idle machine):
  * the peers' own training steps, re-created minimally in this file (the word_language_model
    example's LSTM loop; nanoGPT's GPT and AdamW step) on the same shapes, so each lmkit figure has a
    same-process reference (the published peer figures were measured on another day);
  * matmul peak: GFLOP/s of a 2048x2048 fp32 and bf16 matrix multiply (torch.mm), best of 5;
  * each config: the real training loop (lmkit.train.fit) on real data with evaluation switched off,
    for a fixed number of target tokens after a warm-up; tokens/s = target tokens / training seconds;
    FLOP rate = tokens/s * the module's flops_per_token() (forward + backward, 6N + attention), and
    that as a fraction of the matmul peak of the same precision.
Reference configs are the peers' published CPU setups: the PyTorch word_language_model example's
LSTM 2x200 (batch 20, bptt 35) on PTB, and nanoGPT's README CPU config (4 layers, 4 heads, d 128,
block 64, batch 12) on tiny-shakespeare characters.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("LMKIT_SHARED", REPO.parent / "shared"))

import torch  # noqa: E402

from lmkit.data.corpus import count_tokens, encode, read_text  # noqa: E402
from lmkit.data.vocab import Vocab  # noqa: E402
from lmkit.device import place  # noqa: E402
from lmkit.models import family  # noqa: E402
from lmkit.protocol import Protocol  # noqa: E402
from lmkit.train import TrainConfig, fit  # noqa: E402

PEERS = {"lstm-ref": ("PyTorch word_language_model LSTM 2x200", 6685.0),
         "transformer-ref": ("nanoGPT README CPU config", 17600.0)}

CONFIGS = {
    # name: (corpus, level, family, model config, train overrides)
    "mlp-default": ("ptb", "word", "mlp", {}, {}),
    "lstm-default": ("ptb", "word", "lstm", {}, {}),
    "transformer-default": ("ptb", "word", "transformer", {}, {}),
    "lstm-ref": ("ptb", "word", "lstm", {"layers": 2, "hidden": 200, "dropout": 0.2, "embed_dropout": 0.2},
                 {"batch_size": 20, "seq_len": 35, "optimizer": "sgd", "lr": 20.0, "clip": 0.25, "weight_decay": 0.0}),
    # the same shape and recipe with lmkit's adaptive softmax (2000, 5000) instead of the full 10k softmax
    "lstm-ref-adaptive": ("ptb", "word", "lstm", {"layers": 2, "hidden": 200, "dropout": 0.2, "embed_dropout": 0.2,
                                                   "adaptive_cutoffs": (2000, 5000)},
                          {"batch_size": 20, "seq_len": 35, "optimizer": "sgd", "lr": 20.0, "clip": 0.25,
                           "weight_decay": 0.0}),
    "transformer-ref": ("tinyshakespeare", "char", "transformer",
                        {"layers": 4, "heads": 4, "d_model": 128, "block_size": 64, "dropout": 0.0},
                        {"batch_size": 12, "seq_len": 64}),
}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


class _WlmLSTM(torch.nn.Module):
    """The PyTorch word_language_model example's RNNModel (LSTM, untied), time-major as there."""

    def __init__(self, ntoken: int, nhid: int = 200, nlayers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.drop = torch.nn.Dropout(dropout)
        self.encoder = torch.nn.Embedding(ntoken, nhid)
        self.rnn = torch.nn.LSTM(nhid, nhid, nlayers, dropout=dropout)
        self.decoder = torch.nn.Linear(nhid, ntoken)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        decoded = self.decoder(self.drop(out)).view(-1, self.decoder.out_features)
        return torch.nn.functional.log_softmax(decoded, dim=1), hidden


class _NanoBlock(torch.nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc, self.out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class _NanoGPT(torch.nn.Module):
    """nanoGPT's GPT at its README CPU config (4 layers, 4 heads, d 128, block 64), no dropout."""

    def __init__(self, vocab: int, d: int = 128, layers: int = 4, heads: int = 4, block: int = 64):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(vocab, d), torch.nn.Embedding(block, d)
        self.blocks = torch.nn.ModuleList(_NanoBlock(d, heads) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.blocks:
            x = b(x)
        logits = torch.nn.functional.linear(self.ln(x), self.wte.weight)
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def peer_rate(name: str, seconds: float) -> float:
    """Tokens/s of the peer's own training step on random data of the same shapes."""
    torch.manual_seed(0)
    if name == "lstm-ref":
        V, B, T = 10002, 20, 35
        net = _WlmLSTM(V)
        x, y = torch.randint(0, V, (T, B)), torch.randint(0, V, (T * B,))

        def step():
            hidden = tuple(h.detach() for h in (torch.zeros(2, B, 200), torch.zeros(2, B, 200)))
            net.zero_grad()
            out, hidden = net(x, hidden)
            torch.nn.functional.nll_loss(out, y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.25)
            for p in net.parameters():
                p.data.add_(p.grad, alpha=-20.0)
    else:
        V, B, T = 65, 12, 64
        net = _NanoGPT(V)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
        x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

        def step():
            loss = net(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    for _ in range(3):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * B * T / (time.perf_counter() - start)


def measure(name: str, precision: str, seconds: float) -> dict:
    corpus, level, kind, model_cfg, overrides = CONFIGS[name]
    d = SHARED / "corpora" / corpus
    protocol = Protocol(level=level, context="stream")
    train_text = read_text(d / "train.txt")
    vocab = Vocab.build(count_tokens(train_text, protocol), level=level)
    train = encode(train_text, vocab, protocol)
    cls = family(kind)
    placement = place("cpu", precision)
    torch.manual_seed(0)
    model = cls(cls.Config(**model_cfg), vocab, protocol, device=placement.device)
    model.placement = placement
    net = model.net

    def run(tokens: int) -> tuple[int, float]:
        cfg = TrainConfig(max_tokens=tokens, eval_every=10**9, warmup_steps=1, seed=0, **overrides)
        info = fit(model, train, None, cfg, log=lambda _: None, progress=False)
        return info["tokens_seen"], info["train_seconds"]

    # calibrate: a short warm-up run, then one run sized to take about `seconds`
    tok, sec = run(4096)
    rate = tok / max(sec, 1e-9)
    tok, sec = run(int(rate * seconds))
    tps = tok / sec
    seq_len = overrides.get("seq_len") or getattr(net, "train_defaults", {}).get("seq_len")
    flops = net.flops_per_token(seq_len) * tps
    return {"config": name, "precision": precision, "params": net.num_parameters(), "tokens_per_s": tps,
            "gflops": flops / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="timed window per config")
    ap.add_argument("--only", nargs="*", help="config names", choices=list(CONFIGS))
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"])
    args = ap.parse_args()
    if not (SHARED / "corpora" / "ptb").exists():
        sys.exit(f"reference corpora not found under {SHARED}/corpora")
    print(f"# torch {torch.__version__}; {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}")
    from lmkit.device import cpu_has_bf16

    # emulated bf16 runs ~500x slower: measure it on a small matrix so the bench still finishes
    peak = {"fp32": matmul_peak(torch.float32),
            "bf16": matmul_peak(torch.bfloat16, *((2048, 10) if cpu_has_bf16() else (256, 3)))}
    print(f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s (2048^3), bf16 {peak['bf16']:.1f} GFLOP/s"
          f"{'' if cpu_has_bf16() else ' (256^3, no native bf16)'}")
    if "bf16" in args.precisions and not cpu_has_bf16():
        print("# this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 matmul is emulated; skipping bf16 runs")
        args.precisions = [p for p in args.precisions if p != "bf16"]
    print("config\tprecision\tparams\ttokens/s\tGFLOP/s\tof matmul peak\tpeer same-process tokens/s"
          "\tlmkit/peer\tpeer published tokens/s")
    results = {}
    for name in args.only or CONFIGS:
        for prec in args.precisions:
            r = measure(name, prec, args.seconds)
            results[(name, prec)] = r
            peer_name = name.removesuffix("-adaptive")  # an adaptive variant is measured against the same peer
            peer = PEERS.get(peer_name)
            same = peer_rate(peer_name, args.seconds) if peer and prec == "fp32" else None
            ratio = f"{r['tokens_per_s'] / same:.2f}x" if same else "-"
            print(f"{name}\t{prec}\t{r['params']:,}\t{r['tokens_per_s']:,.0f}\t{r['gflops']:.1f}\t"
                  f"{r['gflops'] / peak[prec]:.0%}\t{f'{same:,.0f}' if same else '-'}\t{ratio}\t"
                  f"{f'{peer[1]:,.0f}' if peer else '-'}", flush=True)
    for name in args.only or CONFIGS:
        if (name, "fp32") in results and (name, "bf16") in results:
            speedup = results[(name, "bf16")]["tokens_per_s"] / results[(name, "fp32")]["tokens_per_s"]
            print(f"bf16/fp32 {name}: {speedup:.2f}x")


if __name__ == "__main__":
    main()
