"""Linear interpolation of trained runs of any families: P(w | h) = sum_i lambda_i P_i(w | h).

A mixture is a model like any other (one interface, one scoring path), but it owns no weights of its
own: its config names the component run folders (absolute, relative to the mixture's folder, and as
given) with the vocabulary and protocol they were measured under, plus the lambdas fitted by EM on
the valid split (`fit_weights`). Loading re-loads every component through `runs.load_run` and refuses
one that is gone or no longer matches, so a mixture never silently mixes other models than it fitted.
Built by `lmkit mix` (lmkit.mixing), never by `lmkit train`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.vocab import Vocab
from ..errors import LmkitError, ModelError, UsageError
from ..protocol import Protocol
from .base import LanguageModel

EM_TOLERANCE = 1e-7  # stop when the valid NLL improves by less than this, relatively
EM_MAX_ITERATIONS = 200


@dataclass
class MixConfig:
    # one object per component run: path (absolute), relative (to the mixture's folder), given (as typed),
    # kind, label, vocab_id, protocol_hash, created (the component's run.json timestamp)
    components: list[dict] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # lambda_i fitted by EM on valid; they sum to 1


def logsumexp0(a: np.ndarray) -> np.ndarray:
    """log sum exp over axis 0, exact for rows that are -inf everywhere (they stay -inf)."""
    m = a.max(axis=0)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - shift).sum(axis=0)) + shift


def log_weights(weights: Sequence[float]) -> np.ndarray:
    """ln lambda (a weight of exactly 0 gives -inf: that component no longer contributes)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(weights, dtype=np.float64))


@dataclass
class EMResult:
    weights: np.ndarray  # (K,) lambdas, summing to 1
    nll: list[float]  # mean valid NLL per token (nats): [0] at the uniform start, then after each update
    excluded: int = 0  # tokens no component gives any probability (their NLL is infinite for every lambda)

    @property
    def iterations(self) -> int:
        return len(self.nll) - 1


def fit_weights(logprobs: np.ndarray, *, tol: float = EM_TOLERANCE, max_iter: int = EM_MAX_ITERATIONS) -> EMResult:
    """Mixture weights maximising the likelihood of the tokens in `logprobs` (K components, N tokens).

    EM: lambda_i <- mean over tokens of lambda_i P_i / sum_j lambda_j P_j, from uniform, until the mean
    NLL improves by less than `tol` relatively or `max_iter` updates. The NLL is convex in lambda and EM
    never raises it; a step that would (rounding, at convergence) is not taken and ends the fit."""
    L = np.asarray(logprobs, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] < 1:
        raise ValueError(f"expected (components, tokens) log-probabilities, got shape {L.shape}")
    if np.isnan(L).any() or np.isposinf(L).any():
        raise ModelError("a component returned NaN or +inf log-probabilities; cannot fit mixture weights")
    usable = np.isfinite(L).any(axis=0)
    L = L[:, usable]
    if L.shape[1] == 0:
        raise ModelError("no valid token has non-zero probability under any component; cannot fit weights")
    K = L.shape[0]
    weights = np.full(K, 1.0 / K)

    def nll_and_resp(w: np.ndarray) -> tuple[float, np.ndarray]:
        joint = L + log_weights(w)[:, None]  # (K, N) ln lambda_i P_i
        total = logsumexp0(joint)  # (N,) ln sum_j lambda_j P_j
        return float(-total.mean()), np.exp(joint - total)

    nll, resp = nll_and_resp(weights)
    history = [nll]
    for _ in range(max_iter):
        new = resp.mean(axis=1)
        new /= new.sum()  # exact in theory; removes rounding drift
        new_nll, new_resp = nll_and_resp(new)
        if new_nll > nll:  # only rounding can do this (EM is monotone): keep the better weights and stop
            break
        weights, resp = new, new_resp
        history.append(new_nll)
        improved = nll - new_nll
        nll = new_nll
        if improved < tol * abs(history[-2]):
            break
    return EMResult(weights, history, int((~usable).sum()))


class MixtureModel(LanguageModel):
    """Linear interpolation of trained runs (built by `lmkit mix`; weights fitted by EM on valid)."""

    kind = "mix"
    Config = MixConfig

    def __init__(self, config: MixConfig, vocab: Vocab, protocol: Protocol,
                 components: Sequence[LanguageModel] = ()):
        super().__init__(config, vocab, protocol)
        self.components = list(components)
        self.info: dict = {}
        if self.components and len(self.components) != len(config.weights):
            raise ModelError(f"mixture has {len(self.components)} components but {len(config.weights)} weights")
        self._logw = log_weights(config.weights)

    @property
    def label(self) -> str:
        return f"mix({'+'.join(c.get('label', '?') for c in self.config.components)})"

    def fit(self, train, valid, log=None) -> dict:
        raise UsageError("a mixture is not trained: build it from trained runs with `lmkit mix RUN RUN... -o OUT`")

    def fit_info(self) -> dict:
        return dict(self.info)

    def next_logprobs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """ln sum_i lambda_i P_i(. | context), rows in float64; <pad>/<s> stay -inf as in every component."""
        rows = np.stack([np.asarray(c.next_logprobs(contexts), dtype=np.float64) for c in self.components])
        return logsumexp0(rows + self._logw[:, None, None])

    def sequence_logprobs(self, sequences: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """Each component's own (batched) sequence_logprobs, mixed token by token in log space."""
        if not sequences:
            return []
        flat = np.stack([np.concatenate([np.asarray(lp, dtype=np.float64) for lp in c.sequence_logprobs(sequences)])
                         for c in self.components])  # (K, tokens incl. </s>)
        mixed = logsumexp0(flat + self._logw[:, None])
        cuts = np.cumsum([len(s) + 1 for s in sequences])[:-1]
        return np.split(mixed, cuts)

    def save(self, run_dir: Path) -> None:
        """Nothing to write: the component paths and weights are the config, which run.json holds."""

    # run folders are read by the runs layer above this one: it hands load() its two readers
    needs_run_reader = True

    @classmethod
    def load(cls, run_dir: Path, config: MixConfig, vocab: Vocab, protocol: Protocol, device: str = "cpu", *,
             read_record=None, load_run=None):
        """The mixture of the component runs its config names, each checked to be the run it was fitted on;
        `read_record`/`load_run` are lmkit.runs' (a model does not reach up into run folders itself)."""
        if read_record is None or load_run is None:
            raise ModelError(f"{run_dir}: a mixture is loaded from its run folder (lmkit.runs.load_run)")
        run_dir = Path(run_dir)
        w = config.weights
        valid = all(isinstance(x, (int, float)) and x >= 0 for x in w) and math.isclose(sum(w), 1.0, rel_tol=1e-9)
        if not config.components or len(w) != len(config.components) or not valid:
            raise ModelError(f"{run_dir}: run.json holds no valid mixture (components and weights summing to 1)")
        models = []
        for entry in config.components:
            path = _locate(run_dir, entry)
            try:
                record = read_record(path)
                if record.vocab_id != entry.get("vocab_id") or record.vocab_id != vocab.vocab_id:
                    raise ModelError(f"vocab_id is now {record.vocab_id}, the mixture was fitted with "
                                     f"{entry.get('vocab_id')}")
                have = Protocol.from_dict(record.protocol).hash
                if have != entry.get("protocol_hash") or have != protocol.hash:
                    raise ModelError(f"protocol hash is now {have}, the mixture was fitted with "
                                     f"{entry.get('protocol_hash')}")
                if entry.get("created") and record.created != entry["created"]:
                    raise ModelError(f"was retrained ({record.created}) after the mixture was fitted "
                                     f"({entry['created']})")
                model, _ = load_run(path, device=device)
            except LmkitError as exc:
                raise ModelError(f"{run_dir}: component {entry.get('given', path)}: {exc.message}; "
                                 "refit the mixture with lmkit mix") from None
            models.append(model)
        return cls(config, vocab, protocol, models)

    def num_parameters(self) -> int:
        return int(sum(c.num_parameters() for c in self.components))


def _locate(run_dir: Path, entry: dict) -> Path:
    """The component's folder: its absolute path, else relative to the mixture's folder (a moved tree),
    else as given on the command line (relative to the working directory)."""
    tried = []
    for key, base in (("path", None), ("relative", run_dir), ("given", None)):
        value = entry.get(key)
        if not value:
            continue
        p = Path(base, value) if base is not None else Path(value)
        if (p / "run.json").is_file():
            return p
        tried.append(str(p))
    raise ModelError(f"{run_dir}: component run {entry.get('given') or entry.get('path')} is missing "
                     f"(looked in {', '.join(dict.fromkeys(tried)) or 'nothing recorded'})")
