"""The model registry: the one list of model families, and spec strings such as 'ngram:kn5'.

Each family declares itself in its own model file (`FAMILY = Family(...)`, lmkit/models/family.py); the
registry names those files, in the order `lmkit models` and the default lineup show them. The CLI, the
option checks, lineups, `lmkit verify` and the test suite iterate `families()`: adding a family is its
model file plus one line below. Declarations are read from source, so nothing here imports torch."""

from __future__ import annotations

import functools
import importlib

from ..errors import UsageError
from .family import Family, read_family

# One line per family: the module whose FAMILY declares it.
FAMILY_MODULES: tuple[str, ...] = (
    "lmkit.models.ngram.model",
    "lmkit.models.mlp",
    "lmkit.models.rnn",
    "lmkit.models.transformer",
    "lmkit.models.cnn",
    "lmkit.models.seq2seq",
    "lmkit.models.transformer_seq2seq",
)
# Kinds built from other runs instead of trained (`lmkit mix`): a run folder of this kind loads like any
# other, but it is no --model spec and has no training options, so `lmkit models` does not list it.
DERIVED: dict[str, str] = {
    "mix": "lmkit.models.mix:MixtureModel",
}


@functools.cache
def families() -> tuple[Family, ...]:
    """Every registered family, in registry order."""
    found = tuple(read_family(module) for module in FAMILY_MODULES)
    kinds = [f.kind for f in found]
    if len(set(kinds)) != len(kinds) or set(kinds) & set(DERIVED):
        raise RuntimeError(f"model registry: a kind is declared twice ({', '.join(kinds)})")
    return found


def kinds() -> list[str]:
    return [f.kind for f in families()]


def descriptor(kind: str) -> Family:
    """The declaration of a registered (trainable) family."""
    for f in families():
        if f.kind == kind:
            return f
    raise UsageError(f"unknown model {kind!r}; choose one of {', '.join(sorted(kinds()))}")


def is_neural(kind: str | None) -> bool:
    """Trained by lmkit.train with a TrainConfig (False for n-grams, mixtures and unknown kinds)."""
    return any(f.kind == kind and f.neural for f in families())


def neural_kinds() -> list[str]:
    return [f.kind for f in families() if f.neural]


def flag_options() -> tuple[str, ...]:
    """Config fields some family lets `lmkit train` flags set: the union of the families' options."""
    return tuple(dict.fromkeys(o for f in families() for o in f.options))


def owners(option: str) -> list[str]:
    """Kinds of the families owning an `lmkit train` option (for help texts)."""
    return [f.kind for f in families() if option in f.options]


def family(kind: str):
    """The class registered for `kind`, trained or derived (imported on first use)."""
    if kind in DERIVED:
        module, _, name = DERIVED[kind].partition(":")
        return getattr(importlib.import_module(module), name)
    return descriptor(kind).model_class


def parse_spec(spec: str) -> tuple[str, dict]:
    """'ngram:kn5' -> ('ngram', {'smoothing': 'kn', 'order': 5}); 'lstm' -> ('lstm', {})."""
    kind, colon, variant = spec.strip().partition(":")
    if kind in DERIVED:
        raise UsageError(f"{kind!r} is not trained: build a mixture from trained runs with "
                         "lmkit mix RUN RUN... -o OUT")
    if kind not in kinds():
        hints = "; ".join(f.variant_hint for f in families() if f.variant_hint)
        raise UsageError(f"unknown model {spec!r}; choose one of {', '.join(sorted(kinds()))}"
                         + (f" ({hints})" if hints else ""))
    if not variant:
        if colon:
            raise UsageError(f"model spec {spec!r} ends in ':'; give a variant (ngram:kn5) or none (ngram)")
        return kind, {}
    fam = descriptor(kind)
    if fam.variant is None:
        raise UsageError(f"model {kind!r} takes no ':variant' (got {spec!r})")
    return kind, fam.parse_variant(spec, variant)
