"""`lmkit check`: every check passes on real tiny runs of each family and catches its planted defect."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import cli
from internals import count_forward_rows

from lmkit import api
from lmkit.check import CheckReport, check_model
from lmkit.compare import compare_runs
from lmkit.data.corpus import encode, read_text

NEURAL = {"mlp": ["--window", "3", "--embed", "8", "--hidden", "16"],
          "lstm": ["--layers", "1", "--hidden", "16"],
          "transformer": ["--layers", "1", "--d-model", "16", "--heads", "2", "--block-size", "8",
                          "--context", "stream"]}  # stream context: sliding windows and carried context
SPECS = ["ngram:kn3", "ngram:stupid3", *NEURAL]
CHECKS = ["normalisation", "causality", "batch-invariance", "save-load"]


def _lines(rng: random.Random, n: int) -> str:
    subj, verb, obj = ["the cat", "a dog", "my friend", "the old man"], ["sees", "likes", "finds"], \
        ["the ball", "a tree", "some bread", "the moon"]
    return "\n".join(f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}" for _ in range(n)) + "\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run per family (a few seconds in all)."""
    root = tmp_path_factory.mktemp("check")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for split, n in (("train", 150), ("valid", 20), ("test", 20)):
        (corpus / f"{split}.txt").write_text(_lines(rng, n))
    out = {}
    for spec in SPECS:
        extra = NEURAL[spec] + ["--max-tokens", "1500", "--device", "cpu"] if spec in NEURAL else []
        path = root / spec.replace(":", "-")
        r = cli("train", "--model", spec, "--corpus", corpus, "--context", "sentence", "-o", path, "-q", *extra)
        assert r.exit_code == 0, r.stderr
        out[spec] = path
    return out


def _statuses(report: CheckReport) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


# -- real runs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_every_check_passes_on_real_runs(spec, runs):
    report = api.check(runs[spec])
    expected = dict.fromkeys(CHECKS, "pass")
    if spec.startswith("ngram"):
        expected["causality"] = "n.a."
    if spec == "ngram:stupid3":
        expected["normalisation"] = "n.a."
        assert "not normalised by design" in report.results[0].evidence
    assert _statuses(report) == expected, report.rows()
    assert report.ok and not report.quick and report.sample["sequences"] == 20


@pytest.mark.parametrize("spec", SPECS)
def test_train_records_quick_checks_in_run_json(spec, runs):
    checks = json.loads((runs[spec] / "run.json").read_text())["checks"]
    assert checks["ok"] is True and checks["quick"] is True
    assert list(checks["results"]) == CHECKS
    assert all(c["status"] in ("pass", "n.a.") and c["evidence"] for c in checks["results"].values())


# -- planted defects --------------------------------------------------------------------------------
def _loaded(run: Path):
    model, _ = api.load_model(run)
    return model, encode(read_text(Path(json.loads((run / "run.json").read_text())["data"]["test"]["path"])),
                         model.vocab, model.protocol)


def _wrap(model, cls):
    """The same trained model (weights, vocab, protocol) behind a subclass with one planted defect."""
    wrapped = object.__new__(cls)
    wrapped.__dict__.update(model.__dict__)
    return wrapped


def _only_failure(report: CheckReport) -> str:
    failed = [r.name for r in report.failed]
    assert len(failed) == 1, report.rows()
    return failed[0]


@pytest.mark.parametrize("spec", ["lstm", "transformer"])
def test_causality_catches_a_model_that_peeks_at_the_next_token(spec, runs):
    model, enc = _loaded(runs[spec])

    class Peeking(type(model)):
        def sequence_logprobs(self, sequences, batch_size=None):
            out = super().sequence_logprobs(sequences, batch_size)
            for lp, seq in zip(out, sequences):
                lp[:len(seq) - 1] += 1e-3 * np.asarray(seq[1:])  # log P(w_i) depends on w_{i+1}
            return out

    assert _only_failure(check_model(_wrap(model, Peeking), enc, quick=True)) == "causality"


@pytest.mark.parametrize("spec", ["ngram:kn3", "mlp"])
def test_normalisation_catches_rows_summing_to_0_9(spec, runs):
    model, enc = _loaded(runs[spec])

    class Leaking(type(model)):
        def next_logprobs(self, contexts):
            return super().next_logprobs(contexts) + np.log(0.9)

    report = check_model(_wrap(model, Leaking), enc, quick=True)
    assert _only_failure(report) == "normalisation"
    assert report.results[0].values["max_abs_sum_minus_1"] == pytest.approx(0.1, abs=1e-5)


def test_batch_invariance_catches_scores_that_depend_on_batch_size(runs):
    model, enc = _loaded(runs["lstm"])

    class Grouped(type(model)):
        def sequence_logprobs(self, sequences, batch_size=None):
            out = super().sequence_logprobs(sequences, batch_size)
            return [lp - 1e-4 * (batch_size or 0) for lp in out]

    assert _only_failure(check_model(_wrap(model, Grouped), enc, quick=True)) == "batch-invariance"


def test_save_load_catches_weights_that_change_on_the_way(runs):
    import torch

    model, enc = _loaded(runs["mlp"])

    class Drifting(type(model)):
        @classmethod
        def load(cls, *args, **kw):
            loaded = super().load(*args, **kw)
            with torch.no_grad():
                next(loaded.net.parameters()).add_(1e-3)
            return loaded

    report = check_model(_wrap(model, Drifting), enc, quick=True)
    assert _only_failure(report) == "save-load" and report.results[-1].values["max_abs_diff"] > 1e-6


def test_batch_size_really_bounds_the_rows_per_pass(runs):
    """Otherwise the batch-invariance check of the torch families would compare a pass with itself."""
    model, enc = _loaded(runs["lstm"])
    rows: list[int] = []
    count_forward_rows(model, rows)
    default = model.sequence_logprobs(enc.sequences)
    assert rows == [len(enc.sequences)]
    rows.clear()
    single = model.sequence_logprobs(enc.sequences, batch_size=7)
    assert max(rows) == 7 and sum(rows) == len(enc.sequences)
    assert sum(lp.sum() for lp in single) == pytest.approx(sum(lp.sum() for lp in default), rel=1e-6)


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_prints_a_table_and_exits_0(runs):
    r = cli("check", runs["ngram:kn3"], "--quick", "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["check"], row["status"]) for row in rows] == [
        ("normalisation", "pass"), ("causality", "n.a."), ("batch-invariance", "pass"), ("save-load", "pass")]
    r = cli("check", runs["mlp"], "-", "--format", "tsv")  # text from stdin
    assert r.exit_code == 1 and r.stderr.startswith("error:")  # empty stdin: nothing to check on


def test_cli_names_the_failing_check_in_one_error_line(runs, monkeypatch):
    from lmkit.models.torchlm import MLPModel

    real = MLPModel.next_logprobs
    monkeypatch.setattr(MLPModel, "next_logprobs", lambda self, contexts: real(self, contexts) + np.log(0.9))
    r = cli("check", runs["mlp"], "--quick", "-q", "--format", "tsv")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "check failed: normalisation" in lines[0]
    assert "normalisation\tfail" in r.stdout  # the table is printed before the error


def test_cli_missing_run_is_one_error_line(tmp_path):
    r = cli("check", tmp_path / "nope")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")


# -- compare ----------------------------------------------------------------------------------------
def test_compare_notes_unchecked_and_failed_runs(runs, tmp_path):
    a, b = (shutil.copytree(runs[s], tmp_path / s.replace(":", "-")) for s in ("ngram:kn3", "mlp"))
    record = json.loads((b / "run.json").read_text())
    del record["checks"]  # a record written before lmkit recorded checks still loads
    (b / "run.json").write_text(json.dumps(record))
    notes = {r["model"]: r["note"] for r in compare_runs([a, b])}
    assert notes == {"ngram:kn3": None, "mlp": "unchecked"}
    record["checks"] = {"ok": False, "quick": True, "results": {}}
    (b / "run.json").write_text(json.dumps(record))
    assert {r["model"]: r["note"] for r in compare_runs([a, b])}["mlp"] == "check failed"


def test_an_ngram_run_is_saved_once_and_its_save_load_check_reads_that_copy(tiny_corpus, tmp_path, monkeypatch):
    """The quick save-load check of an n-gram run loads the files written into the run folder (no second save of
    what can be a multi-GB model), and a copy that does not load back is a failed check in run.json."""
    from lmkit.models.ngram.model import NgramModel

    saves: list[Path] = []
    real_save = NgramModel.save

    def counted(self, folder):
        saves.append(Path(folder))
        return real_save(self, folder)

    monkeypatch.setattr(NgramModel, "save", counted)
    run = api.train(api.TrainRequest(model="ngram:kn3", corpus=tiny_corpus, output=tmp_path / "kn3", min_count=1,
                                     progress=False))
    checks = json.loads((run / "run.json").read_text())["checks"]
    assert len(saves) == 1 and checks["results"]["save-load"]["status"] == "pass"

    def broken(self, folder):  # writes files the loader refuses
        real_save(self, folder)
        for f in Path(folder).glob("model*"):
            f.write_bytes(b"not a model")

    monkeypatch.setattr(NgramModel, "save", broken)
    run = api.train(api.TrainRequest(model="ngram:kn3", corpus=tiny_corpus, output=tmp_path / "bad", min_count=1,
                                     progress=False))
    checks = json.loads((run / "run.json").read_text())["checks"]
    assert not checks["ok"] and checks["results"]["save-load"]["status"] == "fail"
