"""Decoding for every model family, driven only by `model.next_logprobs` (docs/protocol.md).

One module, no per-family code: a context is `<s>` followed by the prompt's ids and the tokens
generated so far, and every step asks the model for the next-token rows of all live hypotheses of all
prompts at once (in memory-bounded chunks), so decoding a whole test file costs one batched call per
step instead of one per line.

Strategies
- greedy: the most probable token at every step (ties go to the lowest id, as np.argmax).
- sample: temperature, then top-k, then top-p (nucleus) on the model's distribution; draws come from
  a numpy Generator seeded with `seed`, so the same seed and inputs give the same text.
- beam: keeps the `beam` best partial hypotheses by their *summed* log-probability. Finished
  hypotheses are ranked by logprob / length**length_penalty; the default penalty 0 ranks them by
  the plain sequence log-probability, i.e. beam search approximates the most probable continuation,
  which makes width 1 identical to greedy and beam scores comparable with greedy's. A positive penalty
  (GNMT style, e.g. 0.6-1.0) counteracts the preference of raw log-probabilities for short outputs.

`logprob` of an output is always the model's own ln P of its tokens (plus `</s>` when it finished),
before temperature, truncation or banning: it says how probable the text is under the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..data.vocab import BOS, EOS, UNK
from ..errors import UsageError, only_for
from ..validate import check_seed

STRATEGIES = ("greedy", "sample", "beam")
# Upper bounds: far beyond useful decoding, low enough that a typo fails at once instead of decoding for
# ever (a beam wider than the hypotheses it can reach never fills, so it never stops early) or overflowing
# the length normalisation (limit ** length_penalty).
MAX_DECODE_TOKENS = 1_000_000
MAX_BEAM = 1000
MAX_NUM = 10_000
MAX_LENGTH_PENALTY = 10.0
ROW_CELLS = 1 << 22  # (rows x V) floats per next_logprobs call: bounds memory, not a protocol choice


@dataclass(frozen=True)
class Decoding:
    """How to decode; validated on construction so bad options never reach the model."""

    strategy: str = "greedy"  # greedy, sample or beam
    max_tokens: int = 40  # decoding steps; </s> counts as one, so outputs have at most this many tokens
    temperature: float = 1.0  # sample: divides the log-probabilities (< 1 sharpens, > 1 flattens)
    top_k: int | None = None  # sample: keep the k most probable tokens (None: all)
    top_p: float | None = None  # sample: keep the smallest set with probability >= top_p (None: all)
    beam: int = 4  # beam: hypotheses kept per prompt
    length_penalty: float = 0.0  # beam: rank finished hypotheses by logprob / length**penalty
    ban_unk: bool = False  # never emit <unk>
    num: int = 1  # outputs per prompt: independent samples, or the n best beams
    seed: int | None = None  # sample: numpy seed (None: fresh randomness)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UsageError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not 1 <= self.max_tokens <= MAX_DECODE_TOKENS:
            raise UsageError(f"--max-tokens must be between 1 and {MAX_DECODE_TOKENS:,}, got {self.max_tokens}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UsageError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.beam <= MAX_BEAM:
            raise UsageError(f"--beam must be between 1 and {MAX_BEAM:,}, got {self.beam}")
        if not 0 <= self.length_penalty <= MAX_LENGTH_PENALTY:  # also refuses NaN
            raise UsageError(f"--length-penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g}, "
                             f"got {self.length_penalty}")
        if not 1 <= self.num <= MAX_NUM:
            raise UsageError(f"--num must be between 1 and {MAX_NUM:,}, got {self.num}")
        check_seed(self.seed)
        if self.strategy == "greedy" and self.num > 1:
            raise UsageError("greedy decoding has one output per prompt; use --strategy sample or beam for --num > 1")
        if self.strategy == "beam" and self.num > self.beam:
            raise UsageError(f"--num {self.num} exceeds --beam {self.beam}: a beam holds at most that many outputs")
        sampling_only = {"--temperature": self.temperature != 1.0, "--top-k": self.top_k is not None,
                         "--top-p": self.top_p is not None}
        given = [flag for flag, on in sampling_only.items() if on]
        if given and self.strategy != "sample":
            raise UsageError(only_for(given, "--strategy sample"))


@dataclass
class Output:
    """One decoded continuation of prompt number `prompt`."""

    prompt: int
    ids: list[int]  # generated ids, without </s>
    logprob: float  # model ln P of the ids (and of </s> when finished)
    finished: bool  # True: ended with </s>; False: stopped at max_tokens


def generate(model, prompts: Sequence[Sequence[int]], decoding: Decoding | None = None,
             limits: Sequence[int] | None = None) -> list[list[Output]]:
    """Continue every prompt (a list of ids without <s>); returns `decoding.num` outputs per prompt.

    `limits` gives each prompt its own max_tokens (continuation BLEU: twice the reference length),
    so one batched decode serves prompts with different budgets."""
    d = decoding or Decoding()
    prompts = [[int(t) for t in p] for p in prompts]
    limits = [d.max_tokens] * len(prompts) if limits is None else [int(n) for n in limits]
    if len(limits) != len(prompts):
        raise ValueError(f"{len(limits)} limits for {len(prompts)} prompts")
    if d.strategy == "beam":
        return _with_greedy(_beam(model, prompts, d, limits), model, prompts, d, limits)
    return _step_by_step(model, prompts, d, limits)


def _with_greedy(beams: list[list[Output]], model, prompts: list[list[int]], d: Decoding,
                 limits: list[int]) -> list[list[Output]]:
    """Beam outputs never rank below the greedy output: a beam can prune the greedy path early and end with
    worse hypotheses only, so greedy's (one more hypothesis, 1/beam of the cost) competes in each n-best list."""
    greedy = _step_by_step(model, prompts, Decoding(max_tokens=d.max_tokens, ban_unk=d.ban_unk), limits)
    alpha = d.length_penalty
    ranked = lambda h: h.logprob / max(1, len(h.ids) + h.finished) ** alpha  # noqa: E731
    out = []
    for hs, (g,) in zip(beams, greedy):
        if all(h.ids != g.ids or h.finished != g.finished for h in hs):
            hs = sorted([*hs, g], key=ranked, reverse=True)[:d.num]
        out.append(hs)
    return out


# -- shared plumbing --------------------------------------------------------------------------------
def _rows(model, contexts: list[list[int]]) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, rows) chunks of next_logprobs for `contexts`, each at most ROW_CELLS floats."""
    per_call = max(1, ROW_CELLS // max(1, len(model.vocab)))
    for start in range(0, len(contexts), per_call):
        rows = np.asarray(model.next_logprobs(contexts[start:start + per_call]), dtype=np.float64)
        yield start, rows


def _allowed(rows: np.ndarray, ban_unk: bool) -> np.ndarray:
    """The rows decoding may choose from: a copy with <unk> removed when it is banned."""
    if not ban_unk:
        return rows
    rows = rows.copy()
    rows[:, UNK] = -np.inf
    return rows


def _greedy_pick(rows: np.ndarray) -> np.ndarray:
    """argmax per row; a row with nothing to choose (all -inf) ends its hypothesis."""
    pick = rows.argmax(axis=1)
    pick[~np.isfinite(rows[np.arange(len(rows)), pick])] = EOS
    return pick


def _sample_pick(rows: np.ndarray, d: Decoding, rng: np.random.Generator) -> np.ndarray:
    """Draw one id per row after temperature, top-k and top-p, by inverse CDF on the sorted row."""
    z = rows / d.temperature  # (B, V); -inf stays -inf
    order = np.argsort(-z, axis=1, kind="stable")  # most probable first, ties by lowest id (as greedy)
    zs = np.take_along_axis(z, order, axis=1)
    if d.top_k is not None:
        zs[:, d.top_k:] = -np.inf
    dead = ~np.isfinite(zs[:, 0])
    zs[dead, 0] = 0.0  # keep the arithmetic finite; these rows end below
    p = np.exp(zs - zs[:, :1])  # (B, V) unnormalised, max 1
    p /= p.sum(axis=1, keepdims=True)
    if d.top_p is not None and d.top_p < 1:
        before = np.cumsum(p, axis=1) - p  # mass of the more probable tokens
        p = np.where(before < d.top_p, p, 0.0)  # the first token always stays (before = 0)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(len(rows)) * cdf[:, -1]  # (B,)
    col = np.argmax(cdf > u[:, None], axis=1)  # first column whose cumulative mass exceeds u
    pick = order[np.arange(len(rows)), col]
    pick[dead] = EOS
    return pick


# -- greedy and sampling ----------------------------------------------------------------------------
def _step_by_step(model, prompts: list[list[int]], d: Decoding, limits: list[int]) -> list[list[Output]]:
    rng = np.random.default_rng(d.seed)
    outs = [Output(pi, [], 0.0, False) for pi in range(len(prompts)) for _ in range(d.num)]
    live = list(range(len(outs)))
    for step in range(max(limits, default=0)):
        live = [i for i in live if limits[outs[i].prompt] > step]
        if not live:
            break
        contexts = [[BOS, *prompts[outs[i].prompt], *outs[i].ids] for i in live]
        still: list[int] = []
        for start, rows in _rows(model, contexts):
            allowed = _allowed(rows, d.ban_unk)
            picks = _greedy_pick(allowed) if d.strategy == "greedy" else _sample_pick(allowed, d, rng)
            for r, tok in enumerate(picks.tolist()):
                out = outs[live[start + r]]
                out.logprob += float(rows[r, tok])
                if tok == EOS:
                    out.finished = True
                else:
                    out.ids.append(tok)
                    still.append(live[start + r])
        live = still
    return [outs[pi * d.num:(pi + 1) * d.num] for pi in range(len(prompts))]


# -- beam search ------------------------------------------------------------------------------------
def _beam(model, prompts: list[list[int]], d: Decoding, limits: list[int]) -> list[list[Output]]:
    width, alpha = d.beam, d.length_penalty

    def ranked(h: Output) -> float:
        return h.logprob / max(1, len(h.ids) + h.finished) ** alpha

    live: list[list[Output]] = [[Output(pi, [], 0.0, False)] for pi in range(len(prompts))]
    done: list[list[Output]] = [[] for _ in prompts]
    per_call = max(1, ROW_CELLS // max(1, len(model.vocab)))
    for step in range(max(limits, default=0)):
        for pi in range(len(prompts)):
            if live[pi] and step >= limits[pi]:  # out of steps: compete unfinished, as they are
                done[pi].extend(live[pi])
                live[pi] = []
        active = [pi for pi, hs in enumerate(live) if hs]
        if not active:
            break
        for group in _groups(active, [len(live[pi]) for pi in active], per_call):
            hyps = [h for pi in group for h in live[pi]]
            rows = np.asarray(model.next_logprobs([[BOS, *prompts[h.prompt], *h.ids] for h in hyps]),
                              dtype=np.float64)
            allowed = _allowed(rows, d.ban_unk)
            at = 0
            for pi in group:
                hs, n = live[pi], len(live[pi])
                scores = np.array([h.logprob for h in hs])[:, None] + allowed[at:at + n]  # (hyps, V)
                live[pi] = _expand(hs, scores, rows[at:at + n], width, done[pi])
                at += n
                if len(done[pi]) >= width and live[pi]:
                    # Live scores only fall as they grow (log-probs <= 0), so logprob / limit**alpha
                    # bounds every later ranking of a live hypothesis: stop when it cannot beat the
                    # `width` finished ones.
                    kth = sorted((ranked(h) for h in done[pi]), reverse=True)[width - 1]
                    if max(h.logprob for h in live[pi]) / max(1, limits[pi]) ** alpha <= kth:
                        live[pi] = []
    for pi, hs in enumerate(live):
        done[pi].extend(hs)  # unfinished hypotheses that reached max_tokens compete as they are
    return [sorted(hs, key=ranked, reverse=True)[:d.num] for hs in done]


def _groups(items: list[int], sizes: list[int], budget: int) -> Iterator[list[int]]:
    """Consecutive runs of `items` whose sizes sum to at most `budget` (a run holds at least one)."""
    run: list[int] = []
    used = 0
    for item, size in zip(items, sizes):
        if run and used + size > budget:
            yield run
            run, used = [], 0
        run.append(item)
        used += size
    if run:
        yield run


def _expand(hs: list[Output], scores: np.ndarray, raw: np.ndarray, width: int, done: list[Output]) -> list[Output]:
    """The next live beam from the 2*width best extensions; </s> extensions ranked within the first
    `width` finish (so the beam never keeps a hypothesis worse than `width` better ones)."""
    V = scores.shape[1]
    flat = scores.ravel()
    top = np.argsort(-flat, kind="stable")[:2 * width]  # by score, ties by lowest (hypothesis, id)
    nxt: list[Output] = []
    if not math.isfinite(flat[top[0]]):  # nothing the model allows: the hypotheses end as they are
        done.extend(hs)
        return nxt
    for rank, idx in enumerate(top.tolist()):
        if not math.isfinite(flat[idx]) or len(nxt) == width:
            break
        h, tok = divmod(idx, V)
        logprob = hs[h].logprob + float(raw[h, tok])
        if tok == EOS:
            if rank < width:
                done.append(Output(hs[h].prompt, list(hs[h].ids), logprob, True))
        else:
            nxt.append(Output(hs[h].prompt, [*hs[h].ids, tok], logprob, False))
    return nxt
