"""Where a neural training step's time goes, at a family's defaults on PTB (issue 20, part 3).

    python bench/profile_step.py                         # lstm and transformer at their defaults
    python bench/profile_step.py --only mlp --steps 30
    python bench/profile_step.py --set adaptive_cutoffs=none   # the same with a full softmax

For each model, built as `lmkit train --model M --corpus PTB` builds it (its defaults, the adaptive cutoffs
derived from the vocabulary), one process on an otherwise idle machine:

1. the training step taken apart, each part timed alone on the same batches (CPU work is synchronous):
   batch (numpy rows to tensors), forward (the model, through the one scoring call), loss, backward,
   gradient clipping, optimizer step; and inside the forward, the output layer alone on the final hidden
   states (forward and backward), so the output layer's share is measured, not guessed;
2. the whole step as lmkit's training loop runs it (lmkit.train.fit, no validation), tokens/s, and the loop's
   own cost: the loop's step time minus the sum of the parts;
3. the FLOP rate of the loop (FLOPs per token x tokens/s) as a fraction of a 2048^3 fp32 matmul's rate, with
   adaptive-softmax tails counted at their share of the targets (and at every position: flops_per_token's bound);
4. torch.profiler's ten most expensive operators (self CPU time) over a few loop steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402
from neural import matmul_peak  # noqa: E402

from lmkit.config import parse_sets  # noqa: E402
from lmkit.data.batching import stream_batches, stream_ids  # noqa: E402
from lmkit.data.corpus import count_tokens, encode, read_text  # noqa: E402
from lmkit.data.vocab import Vocab  # noqa: E402
from lmkit.models import family  # noqa: E402
from lmkit.models.adaptive import derived_cutoffs  # noqa: E402
from lmkit.models.torchlm import forward_target_logprobs  # noqa: E402
from lmkit.protocol import Protocol  # noqa: E402
from lmkit.train import TrainConfig, fit  # noqa: E402
from lmkit.training.config import resolve_train_config  # noqa: E402
from lmkit.training.optim import make_optimizer  # noqa: E402

PTB = Path(os.environ.get("LMKIT_SHARED", REPO.parent / "shared")) / "corpora" / "ptb"


def build(kind: str, sets: list[str]):
    protocol = Protocol(context="stream")
    text = read_text(PTB / "train.txt")
    vocab = Vocab.build(count_tokens(text, protocol), min_count=1)
    train = encode(text, vocab, protocol)
    cls = family(kind)
    config = cls.Config(**parse_sets(cls.Config, sets))
    if hasattr(config, "adaptive_cutoffs") and not any(s.startswith("adaptive_cutoffs") for s in sets):
        config = dataclasses.replace(config, adaptive_cutoffs=derived_cutoffs(vocab.counts))
    torch.manual_seed(0)
    model = cls(config, vocab, protocol, device="cpu")
    cfg = resolve_train_config(TrainConfig(max_tokens=10**9, eval_every=10**9, device="cpu"),
                               dict(cls.module.train_defaults))
    return model, train, cfg


def timed(fn, reps: int) -> float:
    """Median seconds of `fn()` over `reps` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def parts(model, train, cfg, steps: int) -> dict:
    """Seconds per step of each part of a training step, each timed alone on the same batch."""
    net = model.net
    net.train()
    seq = min(cfg.seq_len, model.history or cfg.seq_len) if not getattr(net, "stateful", False) else cfg.seq_len
    stream = stream_ids(train.sequences)
    first = stream_batches(stream, cfg.batch_size, seq)[0]
    x_np, y_np = first.x, first.y
    x, y = torch.as_tensor(x_np), torch.as_tensor(y_np)
    opt = make_optimizer(net, cfg, is_cuda=False)
    state = net.init_state(cfg.batch_size, "cpu")

    def forward():
        return forward_target_logprobs(net, x, y, state)[0]

    def loss_of():
        lp = forward()
        return -lp.sum() / lp.numel()

    def forward_backward():
        opt.zero_grad(set_to_none=True)
        loss_of().backward()

    out = {"batch": timed(lambda: (torch.as_tensor(x_np), torch.as_tensor(y_np)), steps),
           "forward": timed(forward, steps),
           "forward+loss+backward": timed(forward_backward, steps)}
    forward_backward()
    out["clip"] = timed(lambda: torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip), steps)
    out["optimizer"] = timed(opt.step, steps)
    head = getattr(net, "adaptive", None)
    hidden_width = head.cluster_weight.shape[1] if head is not None else None
    if head is not None:
        h = torch.randn(x.shape[0], x.shape[1], hidden_width, requires_grad=True)

        def head_fb():
            lp = head.target_logprobs(h, y)
            (-lp.sum()).backward()

        out["output layer (fwd+bwd)"] = timed(head_fb, steps)
    return out


def loop_rate(model, train, cfg, seconds: float) -> tuple[float, float]:
    """(tokens/s, seconds per step) of lmkit's own training loop."""
    def run(tokens: int):
        c = dataclasses.replace(cfg, max_tokens=tokens, warmup_steps=1, seed=0)
        info = fit(model, train, None, c, log=lambda _: None, progress=False)
        return info["tokens_seen"], info["train_seconds"], info.get("step") or info.get("steps")

    tok, sec, _ = run(4096)
    tok, sec, n = run(int(tok / max(sec, 1e-9) * seconds))
    return tok / sec, sec / max(n or 1, 1)


def unused_tail_flops(net, train) -> float:
    """FLOPs per token that flops_per_token counts for adaptive-softmax tails but training does not spend: a
    tail runs only at the positions whose target falls in it (its share of the training tokens)."""
    head = getattr(net, "adaptive", None)
    if head is None:
        return 0.0
    ids = torch.as_tensor(stream_ids(train.sequences))
    unused = 0.0
    for k, tail in enumerate(head.tails):
        share = ((ids >= head.bounds[k]) & (ids < head.bounds[k + 1])).double().mean().item()
        unused += 6 * (1 - share) * sum(p.numel() for p in tail.parameters())
    return unused


def top_ops(model, train, cfg, tokens: int) -> str:
    c = dataclasses.replace(cfg, max_tokens=tokens, warmup_steps=1, seed=0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fit(model, train, None, c, log=lambda _: None, progress=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=48)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="lstm,transformer")
    ap.add_argument("--steps", type=int, default=20, help="timed repetitions of each part")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed window of the loop")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="model setting key=value")
    args = ap.parse_args()
    if not (PTB / "train.txt").is_file():
        print(f"{PTB}: not found", file=sys.stderr)
        return 1
    peak = matmul_peak(torch.float32)
    print(f"# torch {torch.__version__}; {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}; "
          f"fp32 matmul peak {peak:.1f} GFLOP/s")
    for kind in args.only.split(","):
        model, train, cfg = build(kind, args.sets)
        net = model.net
        tokens_per_step = cfg.batch_size * min(cfg.seq_len, model.history or cfg.seq_len)
        print(f"\n## {kind}: {net.num_parameters():,} parameters, batch {cfg.batch_size} x {cfg.seq_len}, "
              f"config {dataclasses.asdict(model.config)}")
        p = parts(model, train, cfg, args.steps)
        total = p["batch"] + p["forward+loss+backward"] + p["clip"] + p["optimizer"]
        rate, per_step = loop_rate(model, train, cfg, args.seconds)
        for name, sec in p.items():
            print(f"  {name:<24} {sec * 1e3:8.1f} ms  {sec / per_step:6.1%} of the loop's step")
        print(f"  {'parts, summed':<24} {total * 1e3:8.1f} ms")
        overhead = max(per_step - total, 0) * 1e3
        print(f"  {'the loop step':<24} {per_step * 1e3:8.1f} ms  (loop overhead {overhead:.1f} ms)")
        bound = net.flops_per_token(cfg.seq_len)
        used = bound - unused_tail_flops(net, train)
        print(f"  loop: {rate:,.0f} tokens/s ({tokens_per_step} per step), {used * rate / 1e9:.1f} GFLOP/s = "
              f"{used * rate / 1e9 / peak:.0%} of the fp32 matmul peak (tails at their share of the targets; "
              f"{bound * rate / 1e9 / peak:.0%} counting every tail at every position, flops_per_token's bound)")
        print(top_ops(model, train, cfg, tokens_per_step * 8))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
