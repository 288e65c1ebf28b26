"""Recipes: `lmkit train --config FILE` takes every option a flag takes, flags override the file, bad files are one
usage line; every run folder's recipe.toml trains the same run again; the recipes/ of docs/results.md parse and
train (on a tiny corpus, with tiny sizes and budgets given as flags)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from clitools import cli, one_error_line
from familytools import train_params
from hypothesis import given
from hypothesis import strategies as st

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from lmkit.pipeline.recipe import (NOT_IN_RECIPES, REQUEST_FLAGS, TRAIN_FLAGS, dumps, flag_index, option_type,
                                   recipe_defaults)

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.toml"))

TRAIN = "the cat sat on the mat\nthe dog sat on the log\na cat saw a dog\nthe cat ate\nthe dog ate the mat\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    d.mkdir()
    (d / "train.txt").write_text(TRAIN)
    (d / "valid.txt").write_text("the dog sat on the mat\na cat sat\n")
    (d / "test.txt").write_text("the cat sat on the log\nthe bird sat\n")
    return d


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def ok(*args):
    r = cli(*args)
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    return r


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the TOML writer --------------------------------------------------------------------------------------
VALUES = st.one_of(st.text(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.booleans(),
                   st.lists(st.text(max_size=5), max_size=3))


@given(st.dictionaries(st.text(min_size=1, max_size=8), VALUES, max_size=5))
def test_dumps_reads_back_as_written(table):
    text = dumps(table, comment="a comment\nover two lines")
    assert tomllib.loads(text) == table


def test_dumps_special_values():
    table = {"s": 'quote " back \\ nl \n tab \t bell \x07 del \x7f é ☃', "inf": math.inf, "ninf": -math.inf,
             "tiny": 1e-05, "big": 2.5e16, "whole": 3.0, "neg0": -0.0, "key with space": 1, "none": None}
    back = tomllib.loads(dumps(table))
    assert back == {k: v for k, v in table.items() if v is not None}
    assert math.isnan(tomllib.loads(dumps({"x": math.nan}))["x"])
    assert isinstance(back["whole"], float) and math.copysign(1, back["neg0"]) == -1


# -- reading a recipe ---------------------------------------------------------------------------------------
def test_every_train_option_can_be_given_in_a_recipe(tmp_path: Path):
    """Each long flag of `lmkit train` is a key (with - or _), typed as the flag; only --config, --resume and
    --help are refused."""
    params = train_params().values()
    sample = {int: 1, float: 0.5, bool: True, str: "x", Path: "x"}
    keys = {}
    for name, param in flag_index(params).items():
        if name in NOT_IN_RECIPES:
            continue
        keys[name.replace("-", "_")] = ["a=1"] if param.multiple else sample[option_type(param)]
    keys.pop("bptt")  # --seq-len's other name
    keys.pop("vocab_size")  # --max-size's other name
    values = recipe_defaults(write(tmp_path / "all.toml", dumps(keys)), params)
    expected = {p.name for p in params
                if p.name not in ("config", "resume") and any(o.startswith("--") for o in p.opts)}
    assert set(values) == expected


def test_the_writer_only_writes_train_flags():
    flags = flag_index(train_params().values())
    written = set(REQUEST_FLAGS.values()) | set(TRAIN_FLAGS.values()) | {"set"}
    assert written <= set(flags), written - set(flags)
    from lmkit.models import flag_options

    assert {k.replace("_", "-") for k in flag_options()} <= set(flags)


@pytest.mark.parametrize("text, match", [
    ('modell = "ngram"\n', "unknown key 'modell'"),
    ('min-count = "2"\n', "min-count expects an integer"),
    ("min_count = 1.5\n", "min_count expects an integer"),
    ('lowercase = "yes"\n', "lowercase expects true or false"),
    ("set = [3]\n", "set expects a list of strings"),
    ("corpus = 3\n", "corpus expects a string"),
    ("seq-len = 3\nbptt = 4\n", "are the same option"),
    ('resume = "runs/x"\n', "key 'resume' is not allowed"),
    ('config = "other.toml"\n', "key 'config' is not allowed"),
    ("model = [\n", "not valid TOML"),
])
def test_a_bad_recipe_is_one_usage_line(tmp_path: Path, text: str, match: str):
    one_error_line(cli("train", "--config", write(tmp_path / "r.toml", text)), code=2, match=match)


def test_a_missing_recipe_is_one_usage_line(tmp_path: Path):
    one_error_line(cli("train", "--config", tmp_path / "nope.toml"), code=2, match="no such file")


def test_flags_override_the_file_and_dashes_or_underscores_both_work(corpus: Path, tmp_path: Path):
    recipe = write(tmp_path / "r.toml", f'model = "ngram:kn3"\ncorpus = "{corpus}"\nmin_count = 1\n'
                                        'context = "sentence"\nkeep-blank-lines = false\n')
    ok("train", "--config", recipe, "-o", tmp_path / "a")
    a = run_json(tmp_path / "a")
    assert (a["label"], a["protocol"]["context"]) == ("ngram:kn3", "sentence")
    assert json.loads((tmp_path / "a" / "vocab.json").read_text())["min_count"] == 1
    ok("train", "--config", recipe, "--model", "ngram:kn2", "--context", "stream", "-o", tmp_path / "b")
    b = run_json(tmp_path / "b")
    assert (b["label"], b["protocol"]["context"]) == ("ngram:kn2", "stream")
    assert b["vocab_id"] == a["vocab_id"]  # min_count from the file still applies


def test_config_beside_resume_is_refused(tmp_path: Path):
    recipe = write(tmp_path / "r.toml", 'model = "lstm"\n')
    one_error_line(cli("train", "--resume", tmp_path, "--config", recipe), code=2, match="--config")


# -- the recipe.toml of a run ---------------------------------------------------------------------------------
def test_an_ngram_runs_recipe_trains_the_same_run(corpus: Path, tmp_path: Path):
    ok("train", "--model", "ngram", "--order", "3", "--smoothing", "addk", "--k", "auto", "--corpus", corpus,
       "--lowercase", "--min-count", "1", "-o", tmp_path / "x")
    recipe = tmp_path / "x" / "recipe.toml"
    table = tomllib.loads(recipe.read_text())
    assert table["corpus"] == str(corpus.resolve()) and table["k"] == "auto" and table["lowercase"] is True
    assert (table["context"], table["level"], table["task"]) == ("stream", "word", "lm")  # defaults written out
    ok("train", "--config", recipe, "-o", tmp_path / "y")
    x, y = run_json(tmp_path / "x"), run_json(tmp_path / "y")
    for key in ("config", "protocol", "vocab_id", "data"):
        assert x[key] == y[key], key
    assert y["metrics"]["test"]["perplexity"] == x["metrics"]["test"]["perplexity"]
    assert (tmp_path / "y" / "recipe.toml").read_text() == recipe.read_text()


def test_a_run_with_a_given_vocabulary_names_its_own_copy(corpus: Path, tmp_path: Path):
    ok("vocab", "build", corpus / "train.txt", "--min-count", "1", "-o", tmp_path / "v.json")
    ok("train", "--model", "ngram:kn2", "--corpus", corpus, "--vocab", tmp_path / "v.json", "-o", tmp_path / "x")
    table = tomllib.loads((tmp_path / "x" / "recipe.toml").read_text())
    assert table["vocab"] == str((tmp_path / "x" / "vocab.json").resolve())
    assert "min-count" not in table and "level" not in table  # the vocabulary's own
    (tmp_path / "v.json").unlink()
    ok("train", "--config", tmp_path / "x" / "recipe.toml", "-o", tmp_path / "y")
    assert run_json(tmp_path / "y")["vocab_id"] == run_json(tmp_path / "x")["vocab_id"]


def test_a_neural_runs_recipe_trains_the_same_run(corpus: Path, tmp_path: Path):
    ok("train", "--model", "lstm", "--layers", "1", "--hidden", "8", "--embed", "8", "--max-tokens", "40",
       "--batch-size", "2", "--seq-len", "4", "--warmup", "1", "--time-budget", "2m", "--device", "cpu",
       "--set", "embed_dropout=0.1", "--corpus", corpus, "-q", "-o", tmp_path / "x")
    ok("train", "--config", tmp_path / "x" / "recipe.toml", "-q", "-o", tmp_path / "y")
    x, y = run_json(tmp_path / "x"), run_json(tmp_path / "y")
    for key in ("config", "protocol", "vocab_id", "train_config", "seed"):
        assert x[key] == y[key], key
    assert y["metrics"]["test"]["perplexity"] == x["metrics"]["test"]["perplexity"]  # CPU, same seed


def test_a_lineup_runs_recipe_holds_its_preset(corpus: Path, tmp_path: Path):
    """Options a lineup gives without a flag of their own (adaptive_cutoffs) become `set` entries."""
    from lmkit.pipeline.recipe import request_recipe
    from lmkit.pipeline.request import TrainRequest

    req = TrainRequest(model="lstm", corpus=corpus, options={"hidden": 8, "adaptive_cutoffs": (4, 6)},
                       train_options={"time_budget": 60.5, "batch_size": 2, "min_lr_ratio": 0.1})
    table = request_recipe(req)
    assert table["hidden"] == 8 and table["time-budget"] == "60.5s" and table["batch-size"] == 2
    assert table["set"] == ["adaptive_cutoffs=4,6", "min_lr_ratio=0.1"]


# -- recipes/ (docs/results.md) ---------------------------------------------------------------------------
def test_the_results_recipes_ship_as_files():
    names = {p.name for p in RECIPES}
    assert {"ptb-kn5.toml", "ptb-lstm.toml", "ptb-transformer.toml", "multi30k-transformer.toml"} <= names
    results = (REPO / "docs" / "results.md").read_text()
    for name in names:
        assert f"recipes/{name}" in results, name


@pytest.fixture(scope="module")
def big_vocab(tmp_path_factory) -> Path:
    """Language-model and parallel splits whose vocabulary (> 6,000 words seen twice) holds the recipes'
    adaptive-softmax cutoffs; valid and test are a few lines, so scoring is quick."""
    d = tmp_path_factory.mktemp("recipes")
    (d / "lm").mkdir()
    (d / "pairs").mkdir()
    words = [f"w{i}" for i in range(6200)]
    lines = [" ".join(words[i:i + 10]) for i in range(0, len(words), 10)] * 2
    for split, text in (("train", lines), ("valid", lines[:3]), ("test", lines[3:6])):
        (d / "lm" / f"{split}.txt").write_text("\n".join(text) + "\n")
        (d / "pairs" / f"{split}.de").write_text("\n".join(text) + "\n")
        (d / "pairs" / f"{split}.en").write_text("\n".join(reversed(text)) + "\n")
    return d


TINY = {"transformer": ["--layers", "1", "--d-model", "8", "--heads", "2", "--block-size", "8"],
        "lstm": ["--layers", "1", "--hidden", "8"], "mlp": ["--hidden", "8", "--embed", "8", "--window", "2"]}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_each_recipe_trains_on_a_tiny_budget(recipe: Path, big_vocab: Path, tmp_path: Path):
    table = tomllib.loads(recipe.read_text())
    assert recipe_defaults(recipe, train_params().values())  # parses against train's options
    family = table["model"].split(":")[0]
    tiny = ["--corpus", str(big_vocab / ("pairs" if table.get("task") == "translate" else "lm"))]
    if family != "ngram":
        tiny += TINY[family] + ["--max-tokens", "32", "--batch-size", "2"]
        if table.get("context", "stream") == "stream" and table.get("task") != "translate":
            tiny += ["--seq-len", "4"]
    ok("train", "--config", recipe, *tiny, "-q", "-o", tmp_path / "run")
    rec = run_json(tmp_path / "run")
    assert rec["status"] == "complete" and rec["label"].startswith(family)
    assert rec["protocol"]["context"] == table.get("context", "sentence" if table.get("task") == "translate" else
                                                   "stream")
    assert rec["protocol"]["level"] == table.get("level", "word")
    for flag in ("layers", "hidden", "d-model", "block-size"):  # the flags given beside the file won
        if f"--{flag}" in tiny:
            assert rec["config"][flag.replace("-", "_")] == int(tiny[tiny.index(f"--{flag}") + 1])


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_the_ptb_recipes_are_what_lmkit_verify_trains(family: str, tmp_path: Path, monkeypatch):
    """recipes/ptb-FAMILY.toml through the CLI gives the request of verify's ptb-FAMILY case (which swaps the time
    budget for a token budget). api.train is replaced by a recorder: the real run takes 12 minutes."""
    from lmkit import api, verify
    from lmkit.cli import app
    from typer.testing import CliRunner

    ours = verify.neural_request(family, tmp_path, tmp_path / "run")
    seen = []
    monkeypatch.setattr(api, "train", lambda req, log=None: seen.append(req) or tmp_path / "run")
    r = CliRunner().invoke(app, ["train", "--config", str(REPO / "recipes" / f"ptb-{family}.toml"), "--corpus",
                                 str(tmp_path), "--max-tokens", str(ours.train_options["max_tokens"]), "-q",
                                 "-o", str(tmp_path / "run")])
    assert r.exit_code == 0, r.stderr
    theirs = seen[0]
    for name in ("model", "context", "min_count", "seed", "sets"):
        assert getattr(ours, name) == getattr(theirs, name), name
    drop = lambda d: {k: v for k, v in d.items() if v is not None and k != "time_budget"}  # noqa: E731
    assert drop(ours.options) == drop(theirs.options)
    assert drop(ours.train_options) == drop(theirs.train_options)
    assert theirs.train_options["time_budget"] == "12m"  # the file's; the token budget ends first
