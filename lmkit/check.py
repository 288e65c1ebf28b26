"""`lmkit check`: evidence that a run's numbers can be trusted.

A perplexity means something only if the distribution behind it is a real, causal, reproducible one,
and each of those properties can break silently when a family is added or the scoring path is
optimised. Four checks measure them on a seeded sample of real test sequences and report numbers:

- normalisation: next_logprobs rows sum to 1 over the predictable set, <pad> and <s> get 0;
- causality: log P at a position never moves when later tokens change, nor (sentence context) when
  other lines share the batch;
- batch invariance: the total NLL does not depend on how the scorer groups sequences;
- save/load: the files `save` writes give back exactly the scores of the model in memory.

No torch import here: n-gram runs are checked without it."""

from __future__ import annotations

import itertools
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .data.corpus import Encoded
from .data.vocab import BOS, PAD
from .errors import DataError, LmkitError, UsageError
from .memory import release_free_memory

PASS, FAIL, NA = "pass", "fail", "n.a."
BATCH_SIZES = (1, 7, 64)
SUM_TOL = 1e-6  # |sum of a row's probabilities - 1| for float64 models (n-grams)
SUM_TOL_FLOAT32 = 1e-4  # torch families: a float32 softmax over 10k-100k ids is off by up to ~2e-5 (measured)
NLL_RTOL = 1e-6  # relative change of the total NLL between batch sizes
POSITION_ATOL = 1e-4  # per-position log P: float32 forwards of differently shaped batches differ by ~5e-6
SAVE_ATOL = 1e-12  # save -> load must give the same weights, hence the same numbers
SEED = 0
CONTEXT_POOL = 256  # contexts drawn from the first scored positions: in stream context a context is
# all the text before it, and a recurrent model runs over all of it for one row


@dataclass(frozen=True)
class Budget:
    """How much of the text each check looks at (quick: the version `lmkit train` runs every time)."""

    contexts: int  # next_logprobs rows for the normalisation check
    groups: int  # perturbed groups of sequences for the causality check
    alone: int  # sequences scored alone vs in the batch (sentence context)
    sequences: int  # sequences scored at every batch size and after save -> load
    tokens: int  # ... and at most this many scored tokens of them


QUICK = Budget(contexts=32, groups=2, alone=4, sequences=16, tokens=1024)
FULL = Budget(contexts=64, groups=8, alone=16, sequences=128, tokens=8192)


@dataclass
class CheckResult:
    name: str
    status: str  # pass | fail | n.a.
    evidence: str  # one line with the numbers behind the status
    values: dict = field(default_factory=dict)


@dataclass
class CheckReport:
    model: str
    quick: bool
    sample: dict  # file, sequences, tokens
    results: list[CheckResult]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    def rows(self) -> list[dict]:
        return [{"check": r.name, "status": r.status, "evidence": r.evidence} for r in self.results]

    def to_dict(self) -> dict:
        """The form stored in run.json (`checks`) and printed by `lmkit check --format json`."""
        return {"ok": self.ok, "quick": self.quick, "model": self.model, "sample": self.sample,
                "seconds": self.seconds,
                "results": {r.name: {"status": r.status, "evidence": r.evidence, **r.values}
                            for r in self.results}}


# -- sampling ---------------------------------------------------------------------------------------
def sample_sequences(sequences: Sequence[np.ndarray], n: int, max_tokens: int, seed: int = SEED) -> list[np.ndarray]:
    """Up to n sequences holding at most max_tokens scored tokens, drawn with a fixed seed, in text order
    (order matters in stream context). The shortest sequence stands in when none fits."""
    if not len(sequences):
        return []
    order = np.random.default_rng(seed).permutation(len(sequences))
    picked, tokens = [], 0
    for i in order:
        if len(picked) >= n:
            break
        cost = len(sequences[i]) + 1
        if tokens + cost <= max_tokens:
            picked.append(int(i))
            tokens += cost
    if not picked:
        picked = [min(range(len(sequences)), key=lambda i: len(sequences[i]))]
    return [np.asarray(sequences[i], dtype=np.int64) for i in sorted(picked)]


def _flat(logprobs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(lp, dtype=np.float64) for lp in logprobs]) if logprobs else np.zeros(0)


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest per-position |difference|; inf when the shapes differ or one side is NaN."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return float("inf")
    fa, fb = _flat(a), _flat(b)
    if fa.size == 0:
        return 0.0
    same = (fa == fb) | (np.isnan(fa) & np.isnan(fb))  # equal infinities (MLE) are equal
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(fa - fb))
    return float(np.nan_to_num(diff, nan=np.inf).max())


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    """Row-wise ln sum exp in float64 (rows of -inf give -inf)."""
    top = rows.max(axis=1, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (safe + np.log(np.exp(rows - safe).sum(axis=1, keepdims=True)))[:, 0]


def _float32(model) -> bool:
    """Whether rows come out of float32 arithmetic: torch families, or a mixture holding one."""
    return hasattr(model, "net") or any(_float32(c) for c in getattr(model, "components", ()))


def is_ngram(model) -> bool:
    """n-gram tables (trained or read from ARPA) look only at the previous n-1 ids by construction."""
    return getattr(model, "kind", "") in ("ngram", "arpa")


# -- the four checks --------------------------------------------------------------------------------
def check_normalisation(model, sequences: list[np.ndarray], n: int, *, normalised: bool = True,
                        seed: int = SEED) -> CheckResult:
    """Rows of next_logprobs for a seeded sample of the text's real contexts."""
    name = "normalisation"
    contexts = [ctx for _, _, ctx in itertools.islice(model.contexts_for(sequences), CONTEXT_POOL)]
    if not contexts:
        return CheckResult(name, NA, "no contexts in the sample")
    pick = np.sort(np.random.default_rng(seed).choice(len(contexts), size=min(n, len(contexts)), replace=False))
    rows = np.asarray(model.next_logprobs([contexts[i] for i in pick]), dtype=np.float64)
    special = float(np.exp(rows[:, [PAD, BOS]]).max())
    lse = _logsumexp(np.delete(rows, [PAD, BOS], axis=1))
    deviation = float(np.nan_to_num(np.abs(np.expm1(lse)), nan=np.inf).max())
    tol = SUM_TOL_FLOAT32 if _float32(model) else SUM_TOL
    values = {"contexts": len(pick), "max_abs_sum_minus_1": deviation, "max_special_prob": special}
    if special > 0:
        return CheckResult(name, FAIL, f"<pad>/<s> get probability up to {special:.3g} "
                                       f"({len(pick)} contexts)", values)
    if not normalised:
        sums = np.exp(lse)
        return CheckResult(name, NA, f"not normalised by design: row sums {sums.min():.3g} .. {sums.max():.3g} "
                                     f"over {len(pick)} contexts; <pad>/<s> get 0", values)
    status = PASS if deviation <= tol else FAIL
    return CheckResult(name, status, f"max |sum p - 1| = {deviation:.1e} over {len(pick)} contexts "
                                     f"(tolerance {tol:.0e}); <pad>/<s> get 0", values)


def _perturb(group: list[np.ndarray], rng: np.random.Generator, first_id: int, vocab_size: int):
    """(perturbed copy, cut): every token scored after flat position `cut` replaced by another id.

    The cut is chosen so that the next scored position holds a token (not </s>), so a model that
    peeks at the next id sees a different one. None when no token follows another position."""
    lengths = [len(s) for s in group]
    offsets = np.cumsum([0] + [n + 1 for n in lengths])  # flat index of each sequence's first target
    token_positions = np.concatenate([offsets[i] + np.arange(n) for i, n in enumerate(lengths)] + [np.zeros(0)])
    token_positions = token_positions[token_positions > 0].astype(np.int64)
    if token_positions.size == 0:
        return None, -1
    cut = int(rng.choice(token_positions)) - 1  # positions <= cut must not move
    out = []
    for i, seq in enumerate(group):
        seq = np.array(seq, dtype=np.int64)
        later = offsets[i] + np.arange(len(seq)) > cut
        draw = rng.integers(first_id, vocab_size - 1, size=int(later.sum()))
        seq[later] = draw + (draw >= seq[later])  # uniform over the other ids (<unk> maps above it)
        out.append(seq)
    return out, cut


def check_causality(model, sequences: list[np.ndarray], budget: Budget, together: list[np.ndarray], *,
                    seed: int = SEED) -> CheckResult:
    """Later tokens never change earlier log P; in sentence context neither does the rest of the batch."""
    name = "causality"
    if is_ngram(model):
        return CheckResult(name, NA, "not applicable: an n-gram sees only the previous n-1 tokens by construction")
    vocab_size = len(model.vocab)
    first_id = 5 if getattr(model.vocab, "has_sep", False) else 4  # ordinary words only
    if vocab_size - first_id < 2 or not sequences:
        return CheckResult(name, NA, "too few words in the vocabulary or sample to perturb")
    rng = np.random.default_rng(seed)
    worst, tried = 0.0, 0
    for _ in range(budget.groups):
        start = int(rng.integers(len(sequences)))
        group = sequences[start:start + 3]
        perturbed, cut = _perturb(group, rng, first_id, vocab_size)
        if perturbed is None:
            continue
        before = _flat(model.sequence_logprobs(group))[:cut + 1]
        after = _flat(model.sequence_logprobs(perturbed))[:cut + 1]
        worst = max(worst, _max_diff([before], [after]))
        tried += 1
    values = {"perturbed_groups": tried, "max_abs_diff_before_cut": worst}
    parts = [f"{tried} groups with their tail replaced: max |delta log P| before the cut {worst:.1e}"]
    if model.protocol.context == "sentence":
        chosen = np.sort(rng.choice(len(sequences), size=min(budget.alone, len(sequences)), replace=False))
        alone = [model.sequence_logprobs([sequences[i]])[0] for i in chosen]
        leak = _max_diff(alone, [together[i] for i in chosen])
        values.update(alone_sequences=len(chosen), max_abs_diff_alone_vs_batch=leak)
        parts.append(f"{len(chosen)} lines alone vs in a batch: {leak:.1e}")
        worst = max(worst, leak)
    status = PASS if worst <= POSITION_ATOL else FAIL
    return CheckResult(name, status, "; ".join(parts) + f" (tolerance {POSITION_ATOL:.0e})", values)


def check_batch_invariance(model, sequences: list[np.ndarray], default: list[np.ndarray]) -> CheckResult:
    """The total NLL at batch sizes 1, 7 and 64 against the default scoring pass."""
    name = "batch-invariance"
    totals = {"default": -float(_flat(default).sum())}
    shapes_ok = True
    for size in BATCH_SIZES:
        lps = model.sequence_logprobs(sequences, batch_size=size)
        shapes_ok &= len(lps) == len(default) and all(len(a) == len(b) for a, b in zip(lps, default))
        totals[str(size)] = -float(_flat(lps).sum())
    ref = totals["default"]
    if all(t == ref for t in totals.values()):
        rel = 0.0
    elif all(np.isfinite(t) for t in totals.values()):
        rel = max(abs(t - ref) for t in totals.values()) / max(abs(ref), 1e-300)
    else:
        rel = float("inf")
    values = {"tokens": int(_flat(default).size), "nll": totals, "max_rel_diff": rel}
    status = PASS if shapes_ok and rel <= NLL_RTOL else FAIL
    sizes = ", ".join(map(str, BATCH_SIZES))
    what = "" if shapes_ok else "; the batch sizes give different numbers of scores"
    return CheckResult(name, status, f"total NLL {ref:.6g} nats over {values['tokens']} tokens; batch sizes {sizes}: "
                                     f"max relative difference {rel:.1e} (tolerance {NLL_RTOL:.0e}){what}", values)


def check_save_load(model, sequences: list[np.ndarray], default: list[np.ndarray],
                    saved: Path | None = None) -> CheckResult:
    """Save into a temporary folder (or read `saved`, a folder the model was just saved in: the run folder being
    written), load with the family's own loader, score the same sample."""
    name = "save-load"
    with nullcontext(saved) if saved is not None else tempfile.TemporaryDirectory(prefix="lmkit-check-") as folder:
        if saved is None:
            model.save(Path(folder))
        release_free_memory()  # the copy loaded next comes on top of the model: not on top of freed blocks too
        try:
            loaded = type(model).load(Path(folder), model.config, model.vocab, model.protocol,
                                      device=getattr(model, "device", "cpu"))
        except LmkitError as exc:  # what save wrote cannot be read back: that is this check failing
            return CheckResult(name, FAIL, f"the saved model does not load: {exc.message}")
    for attr in ("placement", "stride"):  # how the model runs, not what it learned: same as the original
        if hasattr(model, attr):
            setattr(loaded, attr, getattr(model, attr))
    net = getattr(model, "net", None)
    if net is not None and hasattr(net, "_orig_mod"):  # torch.compile: compare against the plain module
        model.net = net._orig_mod
        try:
            default = model.sequence_logprobs(sequences)
        finally:
            model.net = net
    diff = _max_diff(default, loaded.sequence_logprobs(sequences))
    values = {"tokens": int(_flat(default).size), "max_abs_diff": diff}
    status = PASS if diff <= SAVE_ATOL else FAIL
    return CheckResult(name, status, f"max |delta log P| after save -> load {diff:.1e} over {values['tokens']} tokens "
                                     f"(tolerance {SAVE_ATOL:.0e})", values)


# -- entry points -----------------------------------------------------------------------------------
def check_model(model, encoded_sample: Encoded | Sequence[np.ndarray], *, quick: bool,
                normalised: bool | None = None, seed: int = SEED, skip: dict[str, str] | None = None,
                saved: Path | None = None) -> CheckReport:
    """Run the four checks on a bounded, seeded sample of `encoded_sample` (an Encoded text or sequences).

    `normalised=False` (e.g. from a run record) marks a model whose scores are not probabilities by
    design; by default the model's own `normalised` attribute says so. `skip` maps a check's name to why it
    is not run this time (recorded as n.a. with that reason). `saved`: a folder the model is saved in already
    (the save-load check reads it back instead of saving again)."""
    start = time.perf_counter()
    budget = QUICK if quick else FULL
    seqs = encoded_sample.sequences if isinstance(encoded_sample, Encoded) else list(encoded_sample)
    sample = sample_sequences(seqs, budget.sequences, budget.tokens, seed)
    if normalised is None:
        normalised = bool(getattr(model, "normalised", True))
    default = model.sequence_logprobs(sample)
    checks = {
        "normalisation": lambda: check_normalisation(model, sample, budget.contexts, normalised=normalised, seed=seed),
        "causality": lambda: check_causality(model, sample, budget, default, seed=seed),
        "batch-invariance": lambda: check_batch_invariance(model, sample, default),
        "save-load": lambda: check_save_load(model, sample, default, saved),
    }
    skip = skip or {}
    results = [CheckResult(name, NA, skip[name]) if name in skip else run() for name, run in checks.items()]
    info = {"file": getattr(encoded_sample, "name", None), "sequences": len(sample),
            "tokens": int(sum(len(s) + 1 for s in sample))}
    return CheckReport(model.label, quick, info, results, time.perf_counter() - start)


def check_run(path: str | Path, text: str | Path | None = None, quick: bool = False,
              device: str = "cpu") -> CheckReport:
    """Check a run folder (or ARPA file) on `text`, by default the test file the run was scored on."""
    from .pipeline.use import load_model
    from .data.corpus import encode, read_recorded, read_text

    model, record = load_model(path, device=device)
    data = record.data if record is not None else {}
    if text is not None:
        loaded = read_text(text)
    else:
        split = "test" if data.get("test") else "valid" if data.get("valid") else None
        if split is None:
            raise UsageError(f"{path}: no test file recorded; give the TEXTFILE to check on")
        loaded = read_recorded(data[split], path, split, "give the TEXTFILE to check on")
    encoded = encode(loaded, model.vocab, model.protocol)
    if not encoded.sequences:
        raise DataError(f"{loaded.name}: has no non-blank lines to check on")
    recorded = [m.get("normalised") for m in ((record.metrics if record else {}) or {}).values()
                if isinstance(m, dict) and "normalised" in m]
    normalised = False if False in recorded else None
    return check_model(model, encoded, quick=quick, normalised=normalised)
