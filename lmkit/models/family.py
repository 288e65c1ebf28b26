"""What a model family declares about itself, once, in its own model file.

Each family's model file holds one `FAMILY = Family(...)`: its kind, its LanguageModel class, the
`lmkit train` flags it owns, its size limits, training defaults, lineup preset, smoke-test size and
`lmkit verify` recipe. The registry (lmkit/models/__init__.py) lists those files; the CLI, option checks,
lineups, verify and the tests iterate it instead of keeping family lists of their own.

A declaration is written in literals (and nested Lineup / Recipe calls), so `read_family` can take it from
the source without running the file: listing families, building `lmkit train --help` or `lmkit verify
--list` must not import torch (3 s) for an n-gram user. The class is named as "module:Class" and imported on
first use. tests/test_family_contract.py checks that the source reading equals the imported object."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping


def _frozen(value: Mapping) -> Mapping:
    """A read-only copy: descriptors are shared by every caller, so none may edit another's view."""
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class Lineup:
    """A family's part in `lmkit compare`'s default lineup, and the settings every lineup gives it."""

    specs: tuple[str, ...] | None = None  # --model specs it adds to the default lineup (None: its kind; (): none)
    options: Mapping[str, Any] = field(default_factory=dict)  # model options of a lineup run (~1 min, 2 cores)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _frozen(self.options))
        if self.specs is not None:
            object.__setattr__(self, "specs", tuple(self.specs))


@dataclass(frozen=True)
class Recipe:
    """A `lmkit verify` full case: train on PTB as `request` says and expect `expected` test perplexity."""

    expected: float  # the test perplexity the recipe reached (docs/results.md)
    command: str  # the `lmkit train` command the request stands for, as users would type it
    citation: str  # where `expected` comes from
    request: Mapping[str, Any]  # TrainRequest fields besides corpus and output (model, options, sets, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "request", _frozen(self.request))


@dataclass(frozen=True)
class Family:
    """One model family as the rest of lmkit sees it (see the module docstring)."""

    kind: str  # the --model name, run.json's "kind" and the registry key
    model: str  # "module:Class" of its LanguageModel, imported on first use (torch stays lazy)
    neural: bool  # trained by lmkit.train: TrainConfig options, checkpoints, --resume
    options: tuple[str, ...]  # Config fields its `lmkit train` flags set (--order, --layers, ...); others refused
    limits: Mapping[str, int]  # upper bounds on Config size fields (lmkit.validate.check_model_config)
    defaults: Mapping[str, Any]  # training defaults: TrainConfig fields a flag may override (neural only)
    lineup: Lineup  # default-lineup specs and lineup-run settings (lmkit.lineup)
    tiny: Mapping[str, Any]  # model options of a model that trains in about a second (the contract tests)
    recipe: Recipe | None = None  # its `lmkit verify` full case on PTB, if it has one
    variant: str | None = None  # "module:function" parsing the part after 'kind:' (ngram:kn5); None: no variants
    variant_hint: str = ""  # how a variant is spelled, for the unknown-model message
    examples: tuple[str, ...] = ()  # --model spellings for `lmkit train --help` (default: the kind)

    def __post_init__(self) -> None:
        for name in ("limits", "defaults", "tiny"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "examples", tuple(self.examples))

    @property
    def model_class(self) -> type:
        """The LanguageModel class (imports its module: torch for a neural family)."""
        return _resolve(self.model)

    @property
    def config_class(self) -> type:
        return self.model_class.Config

    @property
    def default_specs(self) -> tuple[str, ...]:
        """What the family adds to the default lineup."""
        return (self.kind,) if self.lineup.specs is None else self.lineup.specs

    @property
    def spellings(self) -> tuple[str, ...]:
        return self.examples or (self.kind,)

    def parse_variant(self, spec: str, variant: str) -> dict[str, Any]:
        """Config values named by 'kind:variant' (the family's own parser, which words its own errors)."""
        return _resolve(self.variant)(spec, variant)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# -- reading a declaration without running the file ----------------------------------------------------
_DECLARATIONS = {cls.__name__: cls for cls in (Family, Lineup, Recipe)}


def _evaluate(node: ast.expr) -> Any:
    """A literal, or a keyword-only call of one of the declaration classes (Lineup(...) inside Family(...))."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DECLARATIONS:
        if node.args or any(kw.arg is None for kw in node.keywords):
            raise ValueError("declarations take keyword arguments only")
        return _DECLARATIONS[node.func.id](**{kw.arg: _evaluate(kw.value) for kw in node.keywords})
    return ast.literal_eval(node)


def source_of(module: str) -> Path | None:
    """The .py file of a dotted module name, found without importing it or its parent packages."""
    head, *rest = module.split(".")
    spec = importlib.util.find_spec(head)
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        for path in (Path(root, *rest).with_suffix(".py"), Path(root, *rest, "__init__.py")):
            if rest and path.is_file():
                return path
    return None


def _statement(text: str) -> str | None:
    """The source of the top-level `FAMILY = ...` statement: only it is parsed (every CLI start reads the
    registry; parsing whole model files would cost ~10x more)."""
    found = re.search(r"^FAMILY\s*=", text, re.M)
    if found is None:
        return None
    rest = text[found.start():]
    lines = rest.splitlines(keepends=True)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(rest).readline):
            if tok.type == tokenize.NEWLINE:  # the end of the logical line, brackets closed
                row, col = tok.end
                return "".join(lines[:row - 1]) + lines[row - 1][:col]
    except (tokenize.TokenError, SyntaxError):
        return None
    return None


def declared_family(module: str) -> Family | None:
    """The module's FAMILY read from its source; None when the file is not found or the declaration is
    not plain literals (the caller then imports the module)."""
    path = source_of(module)
    statement = _statement(path.read_text(encoding="utf-8")) if path is not None else None
    if statement is None:
        return None
    try:
        node = ast.parse(statement, str(path)).body[0]
        value = _evaluate(node.value) if isinstance(node, ast.Assign) else None
    except (ValueError, TypeError, SyntaxError):
        return None
    return value if isinstance(value, Family) else None


def read_family(module: str) -> Family:
    """A registered module's descriptor: from its source when possible, else by importing the module."""
    found = declared_family(module)
    if found is not None:
        return found
    value = getattr(importlib.import_module(module), "FAMILY", None)
    if not isinstance(value, Family):
        raise TypeError(f"{module} declares no FAMILY = Family(...); every registered model file must")
    return value
