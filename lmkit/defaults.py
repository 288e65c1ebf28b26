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


def context_for(task: str | None, context: str | None = None) -> str:
    """The context asked for, else the default for the task (translation: sentence, else CONTEXT)."""
    if context is not None:
        return context
    return TRANSLATE_CONTEXT if task == "translate" else CONTEXT


def min_count_or_default(min_count: int | None) -> int:
    return MIN_COUNT if min_count is None else min_count


def level_or_default(level: str | None) -> str:
    return LEVEL if level is None else level
