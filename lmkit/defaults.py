"""The defaults every command shares: one place, so `train`, `compare`, `curve`, `vocab build` and `encode`
measure the same way unless told otherwise (docs/guide.md, "Defaults").

Measured on the bundled Shakespeare corpus (docs/results.md, "One set of defaults"): stream context lowers every
family's perplexity (each model may use the lines before, up to its own reach), and min-count 2 gives the neural
models `<unk>` events to learn from (with min-count 1 no training token is `<unk>`, so a neural model cannot
predict the test set's unseen words) and an output layer a CPU can afford. Translation keeps sentence context:
each pair is scored on its own, from `<s>` through its source and `<sep>`."""

from __future__ import annotations

LEVEL = "word"  # word: ASCII-whitespace split; char: every code point
MIN_COUNT = 2  # vocabulary: tokens seen fewer times in the train split become <unk>
CONTEXT = "stream"  # language models: context carried across line ends
TRANSLATE_CONTEXT = "sentence"  # --task translate: every pair scored on its own (the protocol requires it)

# A short time budget buys a few hundred updates on a CPU, too few for a family's full-size model: at or below
# SHORT_BUDGET_SECONDS a neural family trains its short-budget shape (its descriptor's `lineup` preset, the
# model `lmkit compare` trains) unless the request sets one of that shape's options, and SHORT_BUDGET_TRAIN
# (~1k tokens per step, a warm-up that ends early) unless it sets those. Measured: docs/results.md, "Defaults
# at a short budget" (bench/defaults.py).
SHORT_BUDGET_SECONDS = 180.0
SHORT_BUDGET_TRAIN = {"batch_size": 16, "warmup_steps": 20}


def context_for(task: str | None, context: str | None = None) -> str:
    """The context asked for, else the default for the task (translation: sentence, else CONTEXT)."""
    if context is not None:
        return context
    return TRANSLATE_CONTEXT if task == "translate" else CONTEXT


def min_count_or_default(min_count: int | None) -> int:
    return MIN_COUNT if min_count is None else min_count


def level_or_default(level: str | None) -> str:
    return LEVEL if level is None else level


def is_short_budget(time_budget: float | None) -> bool:
    """A time budget small enough for the short-budget shape and training settings (SHORT_BUDGET_SECONDS)."""
    return time_budget is not None and time_budget <= SHORT_BUDGET_SECONDS
