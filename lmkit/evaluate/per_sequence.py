"""Per-sequence test scores kept in a run folder (`test_scores.npz`) so `compare --bootstrap` never rescores.

Written when a run scores its test split (and by `lmkit score RUN TEST --save`): for every scored
sequence its total NLL in nats, its scored tokens and its OOV positions, plus the test file's sha256; and,
for test files of up to TOKEN_NLL_MAX tokens, every scored token's NLL (float64, so that buckets of them add up
to the recorded test NLL exactly), which lmkit analyze and lmkit report bucket without loading the model.
Plain numeric and string arrays only, read with allow_pickle=False: opening a file cannot run code.
A file is trusted only when it agrees with run.json (same test file, sequence and token counts, and a
total NLL equal to the recorded one), so a stale or edited file is refused rather than resampled."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import ModelError

TEST_SCORES_FILE = "test_scores.npz"
SCHEMA = 1
# Rescoring on another device or library version moves the total NLL in the last digits, never by more.
REL_TOL = 1e-6
TOKEN_NLL_MAX = 2_000_000  # tokens: per-token NLLs are kept up to 16 MB a run


@dataclass
class SequenceScores:
    """One entry per scored test sequence, in file order."""

    nll: np.ndarray  # (S,) float64 nats
    tokens: np.ndarray  # (S,) int64 scored tokens (incl. </s>)
    oov: np.ndarray  # (S,) int64 <unk> positions among them
    sha256: str  # of the test file (for a parallel pair: of the pair)
    token_nll: np.ndarray | None = None  # (tokens.sum(),) float64 nats per scored token; None: not kept

    @classmethod
    def from_score(cls, score, sha256: str) -> "SequenceScores":
        """From an evaluate.perplexity.Score (its per-sequence arrays, and its per-token NLLs when it has them
        for every token and there are at most TOKEN_NLL_MAX)."""
        lengths = np.asarray(score.sequence_tokens, np.int64)
        per_token = np.asarray(score.token_nll, np.float64)
        keep = per_token.size == int(lengths.sum()) and 0 < per_token.size <= TOKEN_NLL_MAX
        return cls(np.asarray(score.sequence_nll, dtype=np.float64), lengths, np.asarray(score.sequence_oov, np.int64),
                   sha256, per_token if keep else None)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.nll)))


def save_test_scores(run_dir: str | Path, scores: SequenceScores) -> Path:
    """Write `test_scores.npz` atomically (temp file + rename)."""
    path = Path(run_dir) / TEST_SCORES_FILE
    with atomic_open(path, "wb") as fh:
        extra = {} if scores.token_nll is None else {"token_nll": scores.token_nll}
        np.savez(fh, schema=np.int64(SCHEMA), nll=scores.nll, tokens=scores.tokens, oov=scores.oov,
                 sha256=np.str_(scores.sha256), **extra)
    return path


def _read(path: Path) -> SequenceScores:
    from ..artifacts import check_npz

    try:
        check_npz(path)
    except ModelError as exc:  # named like the other messages here: the caller adds the run folder
        raise ModelError(f"{TEST_SCORES_FILE}: {exc.message.split(': ', 1)[-1]}") from None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("schema", "nll", "tokens", "oov", "sha256")}
            token_nll = data["token_nll"] if "token_nll" in data.files else None
    except KeyError as exc:
        raise ModelError(f"{TEST_SCORES_FILE} is incomplete (no {exc.args[0]!r} array)") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # numpy refused to unpickle: a pickle is never loaded
            from ..artifacts import pickle_refusal

            raise ModelError(f"{TEST_SCORES_FILE}: {pickle_refusal(exc, 'per-sequence scores file')}") from None
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (not a readable .npz of plain arrays)") from None
    except (OSError, EOFError, zipfile.BadZipFile):
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (not a readable .npz of plain arrays)") from None
    schema = arrays["schema"]
    if schema.shape != () or schema.dtype.kind not in "iu":
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (schema is not an integer)")
    from ..artifacts import check_version

    check_version(TEST_SCORES_FILE, "per-sequence scores", int(schema), SCHEMA)
    nll, tokens, oov = arrays["nll"], arrays["tokens"], arrays["oov"]
    if (nll.ndim != 1 or nll.dtype.kind != "f" or tokens.dtype.kind not in "iu" or oov.dtype.kind not in "iu"
            or tokens.shape != nll.shape or oov.shape != nll.shape or arrays["sha256"].dtype.kind != "U"):
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (arrays of the wrong type or length)")
    if np.any(tokens < 1) or np.any(oov < 0) or np.any(oov > tokens):
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (impossible token counts)")
    return SequenceScores(nll.astype(np.float64), tokens.astype(np.int64), oov.astype(np.int64),
                          str(arrays["sha256"]), token_nll)


def _check_token_nll(token_nll: np.ndarray, nll: np.ndarray, tokens: np.ndarray) -> None:
    """Per-token NLLs are trusted only when there is one per scored token and they add up, sequence by sequence,
    to the per-sequence NLLs (which check_against_record ties to run.json)."""
    if token_nll.ndim != 1 or token_nll.dtype != np.float64 or token_nll.size != int(tokens.sum()):
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (per-token scores of the wrong type or length)")
    seq_of = np.repeat(np.arange(len(tokens)), tokens)
    with np.errstate(invalid="ignore"):
        sums = np.bincount(seq_of, weights=token_nll, minlength=len(tokens))
    finite = np.isfinite(nll)
    if not (np.array_equal(finite, np.isfinite(sums))
            and np.allclose(sums[finite], nll[finite], rtol=REL_TOL, atol=1e-9)):
        raise ModelError(f"{TEST_SCORES_FILE} is damaged (its per-token scores do not add up to its per-sequence "
                         "ones)")


def check_against_record(scores: SequenceScores, record) -> None:
    """ModelError naming the first disagreement between per-sequence scores and run.json's test entry."""
    test = record.data.get("test") if isinstance(record.data, dict) else None
    metrics = record.metrics.get("test") if isinstance(record.metrics, dict) else None
    if not isinstance(test, dict) or not isinstance(metrics, dict):
        raise ModelError("run.json records no test score")
    if scores.sha256 != test.get("sha256"):
        raise ModelError(f"{TEST_SCORES_FILE} was measured on another test file (sha256 differs)")
    if len(scores.nll) != test.get("sequences"):
        raise ModelError(f"{TEST_SCORES_FILE} holds {len(scores.nll)} sequences, run.json's test file "
                         f"{test.get('sequences')}")
    if int(scores.tokens.sum()) != metrics.get("tokens") or int(scores.oov.sum()) != metrics.get("oov"):
        raise ModelError(f"{TEST_SCORES_FILE} counts {int(scores.tokens.sum())} tokens / {int(scores.oov.sum())} "
                         f"OOV, run.json {metrics.get('tokens')} / {metrics.get('oov')}")
    total, recorded = float(scores.nll.sum()), metrics.get("nll_nats")
    if recorded is None:  # run.json stores an infinite NLL as null
        same = not math.isfinite(total)
    else:
        same = math.isfinite(total) and math.isclose(total, recorded, rel_tol=REL_TOL, abs_tol=1e-9)
    if not same:
        raise ModelError(f"{TEST_SCORES_FILE} adds up to a test NLL of {total:.6g} nats, run.json records "
                         f"{recorded if recorded is None else f'{recorded:.6g}'}")


def load_test_scores(run_dir: str | Path, record) -> SequenceScores | None:
    """The run's per-sequence test scores; None when the run has none (trained before they were stored).

    A file that cannot be read or disagrees with run.json is a ModelError with a one-line reason."""
    path = Path(run_dir) / TEST_SCORES_FILE
    if not path.is_file():
        return None
    scores = _read(path)
    check_against_record(scores, record)
    if scores.token_nll is not None:
        _check_token_nll(scores.token_nll, scores.nll, scores.tokens)
    return scores
