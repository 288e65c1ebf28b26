"""A short time budget trains each neural family's short-budget shape (its lineup preset) with the short-budget
training settings, unless the user chooses them (lmkit.defaults.SHORT_BUDGET_SECONDS, docs/neural.md "Defaults").

Families come from the registry, so a family added later is covered without editing this file."""

from __future__ import annotations

import json

import pytest
from familytools import neural_families
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app
from lmkit.defaults import SHORT_BUDGET_SECONDS, SHORT_BUDGET_TRAIN, is_short_budget
from lmkit.pipeline.request import TrainRequest, check_request, with_budget_defaults

SHAPED = [f for f in neural_families() if f.lineup.options]


def resolved(kind: str, options: dict | None = None, train: dict | None = None, sets: list[str] | None = None):
    req = TrainRequest(model=kind, options=options or {}, train_options=train or {}, sets=sets or [])
    cls, config, tcfg = check_request(req)
    return with_budget_defaults(cls, config, tcfg, req)


def test_the_threshold_is_inclusive_and_needs_a_time_budget():
    assert is_short_budget(SHORT_BUDGET_SECONDS) and is_short_budget(40.0)
    assert not is_short_budget(SHORT_BUDGET_SECONDS + 1) and not is_short_budget(None)


@pytest.mark.parametrize("fam", SHAPED, ids=lambda f: f.kind)
def test_a_short_budget_trains_the_shape_and_the_short_settings(fam):
    config, tcfg, filled = resolved(fam.kind, train={"time_budget": "40s"})
    for key, value in fam.lineup.options.items():
        assert getattr(config, key) == value, key
    for key, value in SHORT_BUDGET_TRAIN.items():
        assert getattr(tcfg, key) == value, key
    assert filled == {**fam.lineup.options, **SHORT_BUDGET_TRAIN}


@pytest.mark.parametrize("budget", [{"time_budget": "10m"}, {"epochs": 1.0}, {"max_tokens": 1000}])
@pytest.mark.parametrize("fam", SHAPED, ids=lambda f: f.kind)
def test_a_long_budget_or_none_keeps_the_full_defaults(fam, budget):
    default_config = fam.config_class()
    config, tcfg, filled = resolved(fam.kind, train=budget)
    assert filled == {}
    assert config == default_config
    assert all(getattr(tcfg, key) is None for key in SHORT_BUDGET_TRAIN)


def test_setting_one_shape_option_keeps_the_full_shape_but_still_the_short_settings():
    """--hidden 64 chooses the size: no 1-layer shape around it; batch and warm-up still follow the budget."""
    config, tcfg, filled = resolved("lstm", options={"hidden": 64}, train={"time_budget": "40s"})
    full = neural_family("lstm").config_class()
    assert config.hidden == 64 and config.layers == full.layers and config.tie_weights == full.tie_weights
    assert tcfg.batch_size == SHORT_BUDGET_TRAIN["batch_size"]
    assert set(filled) == set(SHORT_BUDGET_TRAIN)


def test_a_set_pair_counts_as_choosing_the_shape():
    config, _, filled = resolved("transformer", sets=["d_model=64"], train={"time_budget": "40s"})
    assert config.d_model == 64 and config.layers == neural_family("transformer").config_class().layers
    assert "layers" not in filled


def test_explicit_training_settings_win():
    _, tcfg, filled = resolved("mlp", train={"time_budget": "40s", "batch_size": 7})
    assert tcfg.batch_size == 7 and tcfg.warmup_steps == SHORT_BUDGET_TRAIN["warmup_steps"]
    assert "batch_size" not in filled


def neural_family(kind: str):
    return next(f for f in neural_families() if f.kind == kind)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shortcorpus")
    line = "the cat sat on the mat and the dog ran to the cat\n"
    for split, n in (("train", 40), ("valid", 4), ("test", 4)):
        (root / f"{split}.txt").write_text(line * n)
    return root


def test_the_cli_records_and_announces_the_short_budget_shape(corpus, tmp_path):
    """`lmkit train --time-budget 60s`: run.json holds the shape and settings used; the log names them."""
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--model", "lstm", "--corpus", str(corpus), "--min-count", "1",
                                 "--time-budget", "60s", "--max-tokens", "64", "--device", "cpu", "-o", str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "run.json").read_text())
    shape = neural_family("lstm").lineup.options
    assert {k: record["config"][k] for k in shape} == dict(shape)
    assert record["train_config"]["batch_size"] == SHORT_BUDGET_TRAIN["batch_size"]
    assert "short budget (60 s" in r.output and "layers=1" in r.output


def test_lmkit_models_says_why_for_the_short_budget_options():
    rows = {r["family"]: {o["name"]: o for o in r["options"]} for r in api.list_models()}
    lstm = rows["lstm"]
    assert "--time-budget <=" in lstm["layers"].get("why", "")
    assert "--time-budget <=" in lstm["batch_size"].get("why", "")
    assert "why" not in lstm["cell"]
    assert "why" not in rows["ngram"]["order"]
