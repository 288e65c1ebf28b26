"""Every registered family and every n-gram smoothing keeps the contract the rest of lmkit relies on.

Parametrised over the registry (lmkit/models/__init__.py) and the smoothing table
(lmkit/models/ngram/smoothing.py): a family or smoothing added there is tested here without editing this
file. A family's declaration (`FAMILY` in its model file) is complete and agrees with its class and Config;
a tiny model trains through lmkit.api.train in about a second, scores, and scores the same after loading;
`lmkit models` lists it; `lmkit train` accepts its options and refuses a flag it does not own in one line.
A smoothing normalises where it says so and exports to ARPA where it says so."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import math
import re
import shlex
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line
from familytools import TINY_BUDGET, as_flags, train_params
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app
from lmkit.data.vocab import BOS
from lmkit.errors import UsageError
from lmkit.models import FAMILY_MODULES, families, flag_options, parse_spec
from lmkit.models.base import LanguageModel
from lmkit.models.family import declared_family
from lmkit.models.ngram.model import NgramConfig
from lmkit.models.ngram.smoothing import SMOOTHINGS

PACKAGE = Path(__file__).resolve().parents[1] / "lmkit"
FAMILIES = {f.kind: f for f in families()}
TRAIN_PARAMS = train_params()


def config_fields(fam) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(fam.config_class)}


def int_fields(fam) -> set[str]:
    """Config fields typed int or int | None (sizes and counts)."""
    hints = typing.get_type_hints(fam.config_class)
    union = lambda h: typing.get_args(h) if typing.get_origin(h) in (typing.Union, types.UnionType) else (h,)  # noqa: E731
    return {name for name in config_fields(fam) if int in union(hints[name])}


# -- the declaration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("module", FAMILY_MODULES)
def test_declaration_reads_from_source_as_it_imports(module):
    """The registry reads FAMILY without running the file (no torch for listing): it must equal the object."""
    static = declared_family(module)
    assert static is not None, f"{module}: FAMILY must be keyword literals (and Lineup/Recipe calls)"
    assert static == importlib.import_module(module).FAMILY


@pytest.mark.parametrize("kind", FAMILIES)
def test_declaration_agrees_with_class_and_config(kind):
    fam = FAMILIES[kind]
    cls = fam.model_class
    assert issubclass(cls, LanguageModel) and cls.kind == kind
    from lmkit.models.torchlm import TorchLM  # what lmkit.train trains: neural families are TorchLM adapters

    assert issubclass(cls, TorchLM) == fam.neural
    fields = config_fields(fam)
    # options: exactly the `lmkit train` flags that name one of its Config fields
    assert fam.options and set(fam.options) == set(fields) & set(TRAIN_PARAMS), fam.options
    # limits: every integer option is bounded (a typo such as --hidden 6000000 is refused before torch runs)
    assert set(fam.limits) <= int_fields(fam)
    assert int_fields(fam) & set(fam.options) <= set(fam.limits), "an integer option without a limit"
    assert all(isinstance(v, int) and v >= 1 for v in fam.limits.values())
    # training defaults: TrainConfig fields, for neural families only
    from lmkit.training.config import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert (set(fam.defaults) <= train_fields and fam.defaults) if fam.neural else not fam.defaults
    if fam.neural:
        assert cls.module.train_defaults == fam.defaults  # what the training loop reads is the declaration


@pytest.mark.parametrize("kind", FAMILIES)
def test_lineup_tiny_and_examples_resolve(kind):
    fam = FAMILIES[kind]
    for spec in fam.default_specs:
        assert parse_spec(spec)[0] == kind
        api.resolve_model(spec, {}, [])
    api.resolve_model(kind, dict(fam.lineup.options), [])
    assert set(fam.tiny) <= set(fam.options)  # a tiny model can be asked for with flags
    api.resolve_model(kind, dict(fam.tiny), [])
    for example in fam.spellings:
        assert parse_spec(example.split()[0])[0] == kind
    with pytest.raises(UsageError, match=re.escape(kind)):
        parse_spec(f"{kind}:x" if fam.variant else f"{kind}:1")


@pytest.mark.parametrize("kind", [k for k, f in FAMILIES.items() if f.recipe is not None])
def test_verify_recipe_is_its_command(kind, tmp_path, monkeypatch):
    """The recipe's `lmkit train` command, given to the CLI, makes the very request the verify case trains."""
    from lmkit import verify

    args = shlex.split(FAMILIES[kind].recipe.command)[2:]
    args[args.index("--corpus") + 1] = str(tmp_path)
    seen = []
    monkeypatch.setattr(api, "train", lambda req, log=None: seen.append(req) or tmp_path / "run")
    r = CliRunner().invoke(app, ["train", *args, "-o", str(tmp_path / "run"), "-q"])
    assert r.exit_code == 0, r.stderr
    ours, theirs = verify.neural_request(kind, tmp_path, tmp_path / "run"), seen[0]
    given = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    for name in ("model", "context", "min_count", "seed", "sets", "corpus", "output"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert given(ours.options) == given(theirs.options) and given(ours.train_options) == given(theirs.train_options)
    case = next(c for c in verify.registry() if c.name == f"ptb-{kind}")
    assert case.expected == FAMILIES[kind].recipe.expected and case.neural == FAMILIES[kind].neural


# -- a tiny model through the library -----------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_tiny_model_trains_scores_and_reloads_with_identical_scores(kind, tiny_corpus, tmp_path):
    fam = FAMILIES[kind]
    run = api.train(api.TrainRequest(model=kind, corpus=tiny_corpus, options=dict(fam.tiny), output=tmp_path / "run",
                                     train_options=dict(TINY_BUDGET) if fam.neural else {}, progress=False))
    record = json.loads((run / "run.json").read_text())
    assert record["kind"] == kind and record["status"] == "complete"
    assert record["train_seconds"] < 20  # "tiny": seconds, or the contract tests would take minutes
    trained = record["metrics"]["test"]["perplexity"]  # scored by the model in memory, before it was saved
    assert math.isfinite(trained) and trained > 1
    loaded = api.score(run, tiny_corpus / "test.txt").summary()
    assert loaded["perplexity"] == pytest.approx(trained, rel=1e-9)
    model, _ = api.load_model(run)
    assert isinstance(model, fam.model_class)
    again, _ = api.load_model(run)
    seqs = [np.array([5, 6, 7]), np.array([4])]
    for a, b in zip(model.sequence_logprobs(seqs), again.sequence_logprobs(seqs)):
        np.testing.assert_array_equal(a, b)


# -- the command line ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models_listing() -> dict:
    r = CliRunner().invoke(app, ["models", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    return {row["family"]: row for row in json.loads(r.stdout)}


@pytest.mark.parametrize("kind", FAMILIES)
def test_lmkit_models_lists_it(kind, models_listing):
    assert list(models_listing) == list(FAMILIES)  # registry order, derived kinds (mix) not listed
    names = {o["name"] for o in models_listing[kind]["options"]}
    assert set(FAMILIES[kind].options) <= names


def sample_value(option: str) -> list[str]:
    """A value of a model flag that its owners accept, as arguments: their Config default."""
    for fam in families():
        default = config_fields(fam).get(option)
        if option in fam.options and default is not None and default.default not in (None, dataclasses.MISSING):
            return as_flags({option: default.default})
    return as_flags({option: 2})


@pytest.mark.parametrize("kind", FAMILIES)
def test_train_accepts_its_options_and_refuses_a_foreign_flag_in_one_line(kind, tiny_corpus, tmp_path):
    fam = FAMILIES[kind]
    budget = as_flags(TINY_BUDGET) if fam.neural else []
    r = cli("train", "--model", kind, *as_flags(fam.tiny), *budget, "--corpus", tiny_corpus, "-o", tmp_path / "ok",
            "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "ok")
    foreign = [o for o in flag_options() if o not in fam.options]
    assert foreign, "every family leaves some flag to others (else this test proves nothing)"
    for option in foreign:
        out = tmp_path / f"no-{option}"
        line = one_error_line(cli("train", "--model", kind, *sample_value(option), "--corpus", tiny_corpus,
                                  "-o", out, "-q"), 2)
        assert f"{option} do not apply to {fam.config_class.__name__}" in line
        assert not out.exists()


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_config_field_the_family_does_not_own_as_a_flag_is_refused(kind, monkeypatch):
    """The declaration, not the Config, decides: a family that stops owning one of its flags refuses it."""
    import lmkit.pipeline.request as request

    fam = FAMILIES[kind]
    dropped, field = fam.options[0], config_fields(fam)[fam.options[0]]
    narrowed = dataclasses.replace(fam, options=fam.options[1:])
    monkeypatch.setattr(request, "descriptor", lambda k: narrowed if k == kind else FAMILIES[k])
    with pytest.raises(UsageError, match=rf"option\(s\) {dropped} do not apply to {fam.config_class.__name__}"):
        api.resolve_model(kind, {dropped: field.default}, [])


# -- the registry is the only family list -------------------------------------------------------------
def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)}


def test_no_module_keeps_a_list_of_families():
    """Two or more family names in one literal collection, or listed in one message, outside the registry
    and the model files: a second family list that a new family would have to be added to."""
    kinds = set(FAMILIES)
    listed = re.compile(rf"\b({'|'.join(kinds)})\b(, ?| and | or |,)({'|'.join(kinds)})\b")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if isinstance(node, (ast.Dict, ast.Tuple, ast.List, ast.Set)):
                named = [i.value for i in items if isinstance(i, ast.Constant) and i.value in kinds]
                if len(named) >= 2:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {named}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if listed.search(node.value):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value[:60]!r}")
    assert not found, found


# -- the smoothing table --------------------------------------------------------------------------------
# values of options whose NgramConfig default is None (trigram models below)
SAMPLES = {"jm_lambdas": (0.5, 0.5, 0.5)}


def _option_value(option: str):
    default = next(f.default for f in dataclasses.fields(NgramConfig) if f.name == option)
    return SAMPLES[option] if default is None else default


@pytest.mark.parametrize("name", SMOOTHINGS)
def test_smoothing_normalises_and_exports_as_declared(name, tiny_corpus, tmp_path):
    entry = SMOOTHINGS[name]
    assert parse_spec(f"ngram:{name}3") == ("ngram", {"smoothing": name, "order": 3})
    # sentence context: an ARPA file is scored line by line, so only then does it score like the run
    run = api.train(api.TrainRequest(model=f"ngram:{name}3", corpus=tiny_corpus, output=tmp_path / "run",
                                     context="sentence", min_count=1, progress=False))
    model, _ = api.load_model(run)
    assert model.normalised == entry.normalised
    the = model.vocab.index["the"]
    sums = np.exp(model.next_logprobs([[BOS], [BOS, the], [BOS, the, model.vocab.index["cat"]]])).sum(axis=1)
    if entry.normalised:
        np.testing.assert_allclose(sums, 1.0, atol=1e-9)
    else:
        assert not np.allclose(sums, 1.0, atol=1e-6)
    arpa = tmp_path / "model.arpa"
    if entry.arpa:
        api.export_arpa(run, arpa)
        ours = api.score(run, tiny_corpus / "test.txt").summary()["perplexity"]
        assert api.score(arpa, tiny_corpus / "test.txt").summary()["perplexity"] == pytest.approx(ours, rel=1e-5)
    else:
        with pytest.raises(UsageError, match="cannot be written as ARPA"):
            api.export_arpa(run, arpa)
        assert not arpa.exists()


@pytest.mark.parametrize("name", SMOOTHINGS)
def test_smoothing_options_apply_to_it_alone(name):
    entry = SMOOTHINGS[name]
    fields = {f.name for f in dataclasses.fields(NgramConfig)}
    assert set(entry.options) <= fields
    for option in entry.options:
        api.resolve_model(f"ngram:{name}3", {option: _option_value(option)}, [])
        for other in (s for s in SMOOTHINGS if option not in SMOOTHINGS[s].options):
            with pytest.raises(UsageError, match=f"applies to .*{re.escape(name)}.* smoothing, not {other}$"):
                api.resolve_model(f"ngram:{other}3", {option: _option_value(option)}, [])
