"""`lmkit mix`: EM weights, the mixture as a model (rows, scoring, save/load), refusals, and the CLI."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line, train

from lmkit import api
from lmkit.data.corpus import encode, read_text
from lmkit.data.vocab import BOS, PAD
from lmkit.errors import IncomparableError, ModelError, UsageError
from lmkit.models.base import LanguageModel
from lmkit.models.mix import MixtureModel, fit_weights
from lmkit.runs import load_run


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def valid_nll(run: Path) -> float:
    return record(run)["metrics"]["valid"]["cross_entropy_nats"]


@pytest.fixture(scope="module")
def grammar(tmp_path_factory) -> Path:
    """A small grammar corpus on which a trigram model and a briefly trained MLP are about equally good
    but differently wrong, so the best mixture lies strictly inside the simplex (with one component far
    better than the other, EM creeps towards that vertex and stops within its tolerance of it)."""
    d = tmp_path_factory.mktemp("mixgrammar")
    words = {"S": [["NP", "V", "NP"], ["NP", "V", "NP", "ADV"]], "NP": [["the", "N"], ["a", "ADJ", "N"]],
             "N": [[f"noun{i}"] for i in range(10)], "ADJ": [[f"adj{i}"] for i in range(5)],
             "V": [[f"verb{i}"] for i in range(5)], "ADV": [["today"], ["again"], ["at", "night"]]}

    def expand(sym: str, rng: random.Random) -> list[str]:
        if sym not in words:
            return [sym]
        return [w for s in rng.choice(words[sym]) for w in expand(s, rng)]

    for name, n, seed in (("train", 150, 1), ("valid", 40, 2), ("test", 40, 3)):
        rng = random.Random(seed)
        (d / f"{name}.txt").write_text("\n".join(" ".join(expand("S", rng)) for _ in range(n)) + "\n")
    return d


@pytest.fixture(scope="module")
def pair(grammar, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(kn3 run, tiny mlp run, their mixture) under one protocol and one vocabulary file."""
    root = tmp_path_factory.mktemp("mixruns")
    vocab = root / "vocab.json"
    api.build_vocab(grammar / "train.txt", output=vocab)
    kn3 = train(grammar, root / "kn3", "ngram:kn3", vocab=vocab)
    mlp = train(grammar, root / "mlp", "mlp", vocab=vocab, options={"window": 2, "embed": 16, "hidden": 32},
                train_options={"epochs": 3, "device": "cpu", "batch_size": 16, "lr": 5e-2})
    return kn3, mlp, api.mix([kn3, mlp], root / "mix")


# -- EM ----------------------------------------------------------------------------------------------------
def test_em_update_is_the_responsibility_mean():
    # tokens with P1 = (0.8, 0.2), P2 = (0.2, 0.2), lambda = (1/2, 1/2):
    # responsibilities of 1: 0.4/0.5 = 0.8 and 0.1/0.2 = 0.5 -> lambda_1 = (0.8 + 0.5) / 2 = 0.65
    em = fit_weights(np.log([[0.8, 0.2], [0.2, 0.2]]), max_iter=1)
    np.testing.assert_allclose(em.weights, [0.65, 0.35], rtol=1e-12)
    assert em.iterations == 1
    assert em.nll[0] == pytest.approx(-(math.log(0.5) + math.log(0.2)) / 2)


def test_em_is_monotone_and_weights_sum_to_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500, 7)) * np.array([0.5, 2.0, 4.0])[:, None, None]
    rows = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))  # three random distributions
    L = rows[:, np.arange(500), rng.integers(0, 7, 500)]
    em = fit_weights(L)
    assert em.weights.sum() == pytest.approx(1.0, abs=1e-12) and (em.weights >= 0).all()
    assert all(b <= a for a, b in zip(em.nll, em.nll[1:]))
    assert em.nll[-1] <= min(-L.mean(axis=1)) and 1 <= em.iterations <= 200
    assert em.iterations == 200 or em.nll[-2] - em.nll[-1] < 1e-7 * em.nll[-2]


def test_em_ignores_tokens_no_component_can_explain():
    with np.errstate(divide="ignore"):
        L = np.log([[0.5, 0.0, 0.25], [0.25, 0.0, 0.5]])
    em = fit_weights(L)
    assert em.excluded == 1 and math.isfinite(em.nll[-1])
    np.testing.assert_allclose(em.weights, [0.5, 0.5])


# -- the mixture as a run -----------------------------------------------------------------------------------
def test_mix_with_itself_is_that_model(tiny_corpus, tmp_path):
    kn3 = train(tiny_corpus, tmp_path / "kn3", "ngram:kn3")
    out = api.mix([kn3, kn3], tmp_path / "self")
    mixed, base = record(out), record(kn3)
    assert mixed["kind"] == "mix" and mixed["label"] == "mix(ngram:kn3+ngram:kn3)"
    assert mixed["fit_info"]["weights"] == [0.5, 0.5]
    for split in ("valid", "test"):
        for key in ("perplexity", "perplexity_excl_oov", "nll_nats"):
            assert mixed["metrics"][split][key] == pytest.approx(base["metrics"][split][key], rel=1e-9)
    assert mixed["parameters"] == 2 * base["parameters"]
    assert mixed["data"] == base["data"] and mixed["vocab_id"] == base["vocab_id"]


def test_mix_across_families_is_at_least_as_good_as_each(pair):
    kn3, mlp, mix = pair
    rec = record(mix)
    assert rec["label"] == "mix(ngram:kn3+mlp)" and rec["status"] == "complete"
    assert valid_nll(mix) <= min(valid_nll(kn3), valid_nll(mlp))
    info = rec["fit_info"]
    assert sum(info["weights"]) == pytest.approx(1.0, abs=1e-12) and min(info["weights"]) > 0
    nll = info["valid_nll_per_iteration"]
    assert len(nll) == info["em_iterations"] + 1 and all(b <= a for a, b in zip(nll, nll[1:]))
    assert nll[-1] == pytest.approx(valid_nll(mix), rel=1e-9)  # EM's objective is the recorded valid metric
    assert rec["parameters"] == record(kn3)["parameters"] + record(mlp)["parameters"]
    assert rec["data"]["valid"]["sha256"] == record(kn3)["data"]["valid"]["sha256"]
    assert rec["data"]["train"] == record(mlp)["data"]["train"]
    assert rec["config"]["weights"] == info["weights"]
    assert [c["label"] for c in rec["config"]["components"]] == ["ngram:kn3", "mlp"]
    assert rec["config"]["components"][0]["path"] == str(kn3.resolve())


def test_rows_normalise_and_scoring_matches_the_reference_loop(pair, grammar):
    model, _ = load_run(pair[2])
    assert isinstance(model, MixtureModel) and model.normalised
    enc = encode(read_text(grammar / "test.txt"), model.vocab, model.protocol)
    rows = model.next_logprobs([[BOS], [BOS, 5, 6], [BOS, *enc.sequences[0]]])
    assert rows.dtype == np.float64 and np.all(np.isneginf(rows[:, [PAD, BOS]]))
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-9)
    seqs = enc.sequences[:6]
    for fast, slow in zip(model.sequence_logprobs(seqs), LanguageModel.sequence_logprobs(model, seqs), strict=True):
        np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_save_load_score_is_identical(pair, grammar):
    mix = pair[2]
    test = record(mix)["metrics"]["test"]
    again = api.score(mix, grammar / "test.txt").score.summary()
    assert again["nll_nats"] == pytest.approx(test["nll_nats"], rel=1e-12)
    assert again["tokens"] == test["tokens"]


def test_score_generate_and_compare_read_a_mix_run(pair, grammar):
    kn3, mlp, mix = pair
    r = cli("score", mix, grammar / "test.txt", "--format", "json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "mix(ngram:kn3+mlp)"
    assert out["perplexity"] == pytest.approx(record(mix)["metrics"]["test"]["perplexity"], rel=1e-9)
    r = cli("compare", kn3, mlp, mix, "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = {row["model"]: row for row in json.loads(r.stdout)}
    assert rows["mix(ngram:kn3+mlp)"]["kind"] == "mix" and rows["mix(ngram:kn3+mlp)"]["rank"] is not None
    r = cli("compare", kn3, mix, "--bootstrap", "20", "--format", "json")  # per-sequence test scores stored
    assert r.exit_code == 0, r.stderr
    assert all(row["test_ppl_lo"] is not None for row in json.loads(r.stdout))
    r = cli("generate", mix, "--prompt", "a adj2", "--max-tokens", "5", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)[0]["continuation"].startswith("noun")


def test_cli_prints_folder_on_stdout_and_weights_on_stderr(pair, tmp_path):
    kn3, mlp, _ = pair
    r = cli("mix", kn3, mlp, "-o", tmp_path / "m", "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "m")
    assert "weights: ngram:kn3 " in r.stderr and "mlp " in r.stderr
    one_error_line(cli("mix", kn3, mlp, "-o", tmp_path / "m"), code=2)  # exists: --force replaces it
    assert cli("mix", kn3, mlp, "-o", tmp_path / "m", "--force", "-q").exit_code == 0


# -- refusals ------------------------------------------------------------------------------------------------
def test_mismatched_vocabulary_or_protocol_refused(tiny_corpus, tmp_path):
    kn3 = train(tiny_corpus, tmp_path / "kn3", "ngram:kn3")
    other_vocab = train(tiny_corpus, tmp_path / "mc2", "ngram:kn3", min_count=2)
    stream = train(tiny_corpus, tmp_path / "stream", "ngram:kn3", context="stream")
    line = one_error_line(cli("mix", kn3, other_vocab, "-o", tmp_path / "x"))
    assert "vocabulary differs" in line and str(other_vocab) in line
    line = one_error_line(cli("mix", kn3, stream, "-o", tmp_path / "x"))
    assert "protocol differs" in line and "context sentence vs stream" in line
    with pytest.raises(IncomparableError):
        api.mix([kn3, stream], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_other_refusals(tiny_corpus, tmp_path):
    kn3 = train(tiny_corpus, tmp_path / "kn3", "ngram:kn3")
    stupid = train(tiny_corpus, tmp_path / "stupid", "ngram:stupid3")
    with pytest.raises(UsageError, match="at least two"):
        api.mix([kn3], tmp_path / "x")
    with pytest.raises(UsageError, match="not normalised"):
        api.mix([kn3, stupid], tmp_path / "x")
    with pytest.raises(UsageError, match="cannot be one of the mixed runs"):
        api.mix([kn3, stupid], kn3, force=True)
    assert "not trained" in one_error_line(cli("train", "--model", "mix", "--corpus", tiny_corpus, "-o",
                                               tmp_path / "t"), code=2)
    r = cli("models", "--format", "json")
    assert r.exit_code == 0 and "mix" not in {row["family"] for row in json.loads(r.stdout)}


def test_missing_or_changed_component_refused_in_one_line(tiny_corpus, tmp_path):
    kn3 = train(tiny_corpus, tmp_path / "runs" / "kn3", "ngram:kn3")
    lap = train(tiny_corpus, tmp_path / "runs" / "lap2", "ngram:laplace2")
    mix = api.mix([kn3, lap], tmp_path / "runs" / "mix")
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "runs", moved)  # the whole tree moved: found relative to the mixture's folder
    assert cli("score", moved / "mix", tiny_corpus / "test.txt").exit_code == 0
    shutil.rmtree(moved / "lap2")
    line = one_error_line(cli("score", moved / "mix", tiny_corpus / "test.txt"))
    assert "lap2" in line and "missing" in line
    train(tiny_corpus, moved / "lap2", "ngram:laplace2", min_count=2)  # same place, other vocabulary
    line = one_error_line(cli("score", moved / "mix", tiny_corpus / "test.txt"))
    assert "vocab_id" in line and "lap2" in line
    with pytest.raises(ModelError):
        load_run(moved / "mix")
    assert mix.name == "mix"
