"""The one writer of run folders: n-gram, neural, mixture and resumed runs all publish through RunWriter.

A whole run (n-gram, mixture) is built in a hidden temp folder and swapped in at once. A neural run is
written as it trains: its folder appears with vocab.json and run.json (status 'training') together, the
training loop adds checkpoints, and `finish` writes the final scores. A neural run replacing an existing
one (--force, checked by lmkit.outputs.check_output_dir) trains in a hidden sibling folder that is
swapped in only when complete; interrupted, it is kept beside the old one as OUT.new (resumable); killed,
its temp folder is removed by the next command that writes OUT. docs/reliability.md, "Outputs and --force"."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from .atomic import atomic_dir, atomic_open, publish_dir, staging_dir
from .logs import Log, quiet
from .runs import VOCAB_FILE, RunRecord, append_metrics, write_record

RECIPE_FILE = "recipe.toml"


def save_test_scores(run_dir: Path, scores: dict, data: dict) -> None:
    """Per-sequence test NLLs next to run.json: compare --bootstrap resamples them without rescoring."""
    from .evaluate.per_sequence import SequenceScores
    from .evaluate.per_sequence import save_test_scores as save

    if "test" in scores and (data.get("test") or {}).get("sha256"):
        save(run_dir, SequenceScores.from_score(scores["test"], data["test"]["sha256"]))


class RunWriter:
    """Writes one run folder `out`; `replace` (--force) lets it replace an lmkit run already there."""

    def __init__(self, out: str | Path, *, replace: bool = False, log: Log = quiet, recipe: str | None = None):
        self.out, self.replace, self.log = Path(out), replace, log
        self.recipe = recipe  # recipe.toml's text (lmkit.pipeline.recipe): trains the run again; None: no file
        self.work = self.out  # where files go: `out`, or the temp folder of a replacement
        self.replacing = False

    # -- a whole run at once (n-gram, mixture) ----------------------------------------------------------
    def publish(self, vocab, model, record: RunRecord, scores: dict, metrics_row: dict,
                checks: Callable[[Path], dict] | None = None) -> Path:
        """vocab.json, the model's files, metrics.jsonl, test scores and run.json, all or nothing. `checks`, given
        the folder the model was just saved in, gives run.json's check results (its save-load check reads that
        copy back rather than saving the model a second time)."""
        with atomic_dir(self.out, replace=self.replace, log=self.log) as tmp:
            vocab.save(tmp / VOCAB_FILE)
            model.save(tmp)
            if checks is not None:
                record.checks = checks(tmp)
            append_metrics(tmp, [metrics_row])
            save_test_scores(tmp, scores, record.data)
            self.write_recipe(tmp)
            write_record(tmp, record)
        return self.out

    # -- a run written as it trains (neural) ------------------------------------------------------------
    def begin(self, vocab, record: RunRecord) -> Path:
        """Create the folder training writes into (a replacement's temp folder when a run is there)."""
        self.replacing = self.out.exists() and any(self.out.iterdir())
        self.work = staging_dir(self.out, self.log) if self.replacing else self.out
        with atomic_dir(self.work, log=self.log) as tmp:  # vocab.json and run.json appear together
            vocab.save(tmp / VOCAB_FILE)
            self.write_recipe(tmp)
            write_record(tmp, record)
        return self.work

    def write_recipe(self, folder: Path) -> None:
        if self.recipe is not None:
            with atomic_open(folder / RECIPE_FILE) as f:
                f.write(self.recipe)

    def resume(self) -> Path:
        """Continue an existing run in place (train --resume)."""
        self.work, self.replacing = self.out, False
        return self.work

    def update(self, record: RunRecord) -> None:
        write_record(self.work, record)

    def finish(self, record: RunRecord, scores: dict) -> Path:
        """The final scores and record; a replacement is swapped in now, in one step."""
        save_test_scores(self.work, scores, record.data)
        write_record(self.work, record)
        if self.replacing:
            publish_dir(self.work, self.out, replace=True)
        return self.out

    def abandon(self) -> None:
        """A replacement that failed goes; the run it was to replace is untouched."""
        if self.replacing:
            shutil.rmtree(self.work, ignore_errors=True)

    def keep_interrupted(self) -> Path:
        """Move an interrupted replacement to a visible sibling OUT.new (OUT.new-2, ... when taken) so it can
        be resumed; the run it was to replace stays where it is."""
        for n in range(1, 1000):
            kept = self.out.with_name(f"{self.out.name}.new" + (f"-{n}" if n > 1 else ""))
            if not kept.exists() and not kept.is_symlink():
                self.work.replace(kept)
                return kept
        return self.work

    def where(self) -> str:
        """How the training log line names the folder being written."""
        if self.replacing:
            return (f"into a temporary folder that replaces {self.out} once complete (until then {self.out} is "
                    "untouched)")
        return f"into {self.work} (after a crash: lmkit train --resume {self.work})"
