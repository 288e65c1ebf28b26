"""Model registry: spec strings such as 'ngram:kn5' -> (family class, config).

Families are imported lazily so n-gram commands never import torch."""

from __future__ import annotations

import importlib
import re

from ..errors import UsageError

# kind -> "module:Class"; adding a family is one file plus one line here.
REGISTRY: dict[str, str] = {
    "ngram": "lmkit.models.ngram.model:NgramModel",
    "mlp": "lmkit.models.torchlm:MLPModel",
    "lstm": "lmkit.models.torchlm:RNNModel",
    "transformer": "lmkit.models.torchlm:TransformerModel",
}
# Kinds built from other runs instead of trained (`lmkit mix`): a run folder of this kind loads like any
# other, but it is no --model spec and has no training options, so `lmkit models` does not list it.
DERIVED: dict[str, str] = {
    "mix": "lmkit.models.mix:MixtureModel",
}

NGRAM_SMOOTHINGS = ("mle", "laplace", "addk", "katz", "stupid", "jm", "wb", "kn", "kn-basic")
_NGRAM_SPEC = re.compile(r"^(?P<smoothing>[a-z]+(?:-basic)?)(?P<order>\d+)$")


def family(kind: str):
    """The class registered for `kind` (imported on first use)."""
    if kind not in REGISTRY and kind not in DERIVED:
        raise UsageError(f"unknown model {kind!r}; choose one of {', '.join(sorted(REGISTRY))}")
    module, _, name = (REGISTRY.get(kind) or DERIVED[kind]).partition(":")
    return getattr(importlib.import_module(module), name)


def parse_spec(spec: str) -> tuple[str, dict]:
    """'ngram:kn5' -> ('ngram', {'smoothing': 'kn', 'order': 5}); 'lstm' -> ('lstm', {})."""
    kind, colon, variant = spec.strip().partition(":")
    if kind in DERIVED:
        raise UsageError(f"{kind!r} is not trained: build a mixture from trained runs with "
                         "lmkit mix RUN RUN... -o OUT")
    if kind not in REGISTRY:
        raise UsageError(f"unknown model {spec!r}; choose one of {', '.join(sorted(REGISTRY))} "
                         "(n-grams as ngram:<smoothing><order>, e.g. ngram:kn5)")
    if not variant:
        if colon:
            raise UsageError(f"model spec {spec!r} ends in ':'; give a variant (ngram:kn5) or none (ngram)")
        return kind, {}
    if kind != "ngram":
        raise UsageError(f"model {kind!r} takes no ':variant' (got {spec!r})")
    m = _NGRAM_SPEC.match(variant)
    if not m or m.group("smoothing") not in NGRAM_SMOOTHINGS:
        raise UsageError(f"bad n-gram spec {spec!r}; expected ngram:<smoothing><order> with smoothing one of "
                         f"{', '.join(NGRAM_SMOOTHINGS)}, e.g. ngram:kn5")
    return kind, {"smoothing": m.group("smoothing"), "order": int(m.group("order"))}
