"""No command destroys what it did not create (docs/reliability.md, "Outputs and --force").

Each test reproduces one case of a hostile review in a real child process: `--force` on the working
directory, on a user's folder or on the corpus; replacing a run when the replacement is killed or
terminated; an output written over the command's own input; `-o` through a symbolic link; spill folders
left by a kill; SIGTERM. The assertion that matters is always the same: what was there is still there,
byte for byte, and the refusal is one line."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from clitools import one_line, run, snapshot, spawn, wait_for

# a tiny stateful stream LSTM: seconds to train, checkpoints every 5 steps
LSTM = ("--model", "lstm", "--layers", "1", "--hidden", "8", "--context", "stream", "--batch-size", "4",
        "--seq-len", "8", "--eval-every", "5", "--threads", "1", "--device", "cpu", "--seed", "1")
SHORT = ("--max-tokens", "400")
LONG = ("--epochs", "500")  # killed long before it ends


def _grammar(path: Path, lines: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    subj, verb, obj = ["the cat", "a dog", "my friend"], ["sees", "likes", "finds"], ["the ball", "a tree"]
    out = [" ".join((subj[rng.integers(3)], verb[rng.integers(3)], obj[rng.integers(2)])) for _ in range(lines)]
    path.write_text("\n".join(out) + "\n")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A working directory holding a corpus (corp/) and nothing else of lmkit's."""
    corp = tmp_path / "corp"
    corp.mkdir()
    for split, n, seed in (("train", 300, 1), ("valid", 30, 2), ("test", 30, 3)):
        _grammar(corp / f"{split}.txt", n, seed)
    return tmp_path


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def state_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def staging(folder: Path, name: str) -> Path | None:
    found = [p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")]
    return found[0] if found else None


# -- 1 and 7: --force never deletes what lmkit did not make --------------------------------------------
@pytest.mark.parametrize("target,reason", [(".", "is the working directory"), ("", "is the working directory"),
                                           ("..", "holds the working directory"), ("HOME", "is the home folder")])
def test_force_refuses_the_working_directory_its_ancestors_and_home(work, target, reason):
    """`-o .`, `-o ""`, `-o ..` run from inside the corpus folder; HOME pointed at the corpus folder."""
    corp = work / "corp"
    before = snapshot(work)
    env = {**os.environ, "HOME": str(corp), "NO_COLOR": "1"} if target == "HOME" else None
    code, out, err = run("train", "--model", "ngram:kn2", "--corpus", corp, "-o", corp if target == "HOME" else target,
                         "--force", cwd=work if target == "HOME" else corp, env=env)
    assert code == 2 and out == ""
    one_line(err, reason)
    assert snapshot(work) == before and temps(work) == [] and temps(corp) == []


@pytest.mark.parametrize("family", ["ngram", "lstm", "split"])
def test_force_refuses_a_folder_lmkit_did_not_make(work, family):
    mine = work / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work\n")
    before = snapshot(work)
    args = (("corpus", "split", work / "corp" / "train.txt") if family == "split" else
            ("train", *(("--model", "ngram:kn2") if family == "ngram" else LSTM + SHORT), "--corpus", work / "corp"))
    code, _, err = run(*args, "-o", mine, "--force")
    assert code == 2
    one_line(err, f"-o {mine}: not replaced, it is not a folder lmkit made")
    assert snapshot(work) == before and temps(work) == []


@pytest.mark.parametrize("family", ["ngram", "lstm", "split"])
def test_force_refuses_the_folder_holding_the_input(work, family):
    corp = work / "corp"
    before = snapshot(work)
    args = (("corpus", "split", corp / "train.txt") if family == "split" else
            ("train", *(("--model", "ngram:kn2") if family == "ngram" else LSTM + SHORT), "--corpus", corp))
    code, _, err = run(*args, "-o", corp, "--force")
    assert code == 2
    one_line(err, f"-o {corp}:")
    assert "input" in err
    assert snapshot(work) == before


def test_force_replaces_lmkit_folders_of_every_kind(work):
    run_dir, split_dir = work / "run", work / "split"
    for args in (("train", "--model", "ngram:kn2", "--corpus", work / "corp", "-o", run_dir),
                 ("corpus", "split", work / "corp" / "train.txt", "-o", split_dir)):
        assert run(*args, "-q")[0] == 0
        code, _, err = run(*args, "--force", "-q")
        assert code == 0, err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    assert (split_dir / ".lmkit").exists() and (split_dir / "train.txt").exists()
    assert temps(work) == []


def test_output_through_a_symlink_writes_the_folder_it_points_to(work):
    real_run = work / "real"
    assert run("train", "--model", "ngram:kn2", "--corpus", work / "corp", "-o", real_run, "-q")[0] == 0
    (work / "link").symlink_to(real_run)
    code, out, err = run("train", "--model", "ngram:kn3", "--corpus", work / "corp", "-o", work / "link",
                         "--force", "-q")
    assert code == 0, err
    assert (work / "link").is_symlink() and json.loads((real_run / "run.json").read_text())["label"] == "ngram:kn3"
    (work / "dangling").symlink_to(work / "nowhere")
    code, _, err = run("train", "--model", "ngram:kn2", "--corpus", work / "corp", "-o", work / "dangling")
    assert code == 2
    one_line(err, "is a symbolic link to nothing")
    assert not (work / "nowhere").exists() and temps(work) == []


# -- 3: output over input ---------------------------------------------------------------------------
def test_no_output_may_be_an_input_or_lie_inside_an_input_run(work):
    text = work / "corp" / "valid.txt"
    before = text.read_bytes()
    code, _, err = run("vocab", "build", text, "-o", text)
    assert code == 2
    one_line(err, f"-o {text}: is also an input of this command")
    assert text.read_bytes() == before
    run_dir = work / "run"
    assert run("train", "--model", "ngram:kn2", "--corpus", work / "corp", "-o", run_dir, "-q")[0] == 0
    kept = snapshot(run_dir)
    for args in (("export-arpa", run_dir, "-o", run_dir / "run.json"),
                 ("export-arpa", run_dir, "-o", run_dir / "model.arpa"),
                 ("mix", run_dir, run_dir, "-o", run_dir / "inner")):
        code, _, err = run(*args)
        assert code == 2, err
        one_line(err)
    assert snapshot(run_dir) == kept


# -- 2 and 9: replacing a neural run is atomic; SIGTERM behaves like SIGINT -----------------------------
def replacement_under_way(work: Path):
    """(run folder, its files, the process) once a `--force` replacement of a finished run has checkpointed
    in its temp folder."""
    out = work / "run"
    assert run("train", *LSTM, *SHORT, "--corpus", work / "corp", "-o", out, "-q")[0] == 0
    before = snapshot(out)
    p = spawn("train", *LSTM, *LONG, "--corpus", work / "corp", "-o", out, "--force", "-q")
    wait_for(p, lambda: (s := staging(work, "run")) is not None and state_step(s) >= 5)
    return out, before, p


def test_killed_replacement_leaves_the_previous_run_and_its_temp_is_removed_next_time(work):
    out, before, p = replacement_under_way(work)
    p.kill()
    p.wait(timeout=30)
    assert snapshot(out) == before  # the previous run, byte for byte
    assert len(temps(work)) == 1
    code, _, err = run("train", *LSTM, *SHORT, "--seed", "2", "--corpus", work / "corp", "-o", out, "--force")
    assert code == 0, err
    assert "removed 1 temporary item(s)" in err and "killed lmkit process" in err
    assert temps(work) == [] and snapshot(out) != before
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_sigterm_during_a_replacement_keeps_both_runs(work):
    out, before, p = replacement_under_way(work)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143
    kept = work / "run.new"
    one_line(err, "interrupted by SIGTERM", f"lmkit train --resume {kept}", f"{out} still holds the previous run")
    assert snapshot(out) == before
    record = json.loads((kept / "run.json").read_text())
    assert record["status"] == "interrupted" and state_step(kept) == record["fit_info"]["step"] >= 5
    assert temps(work) == [] and not (work / ".run.lock").exists()
    tokens = record["fit_info"]["tokens_seen"]
    code, _, err = run("train", "--resume", kept, "--max-tokens", tokens + 64, "-q")
    assert code == 0, err
    assert json.loads((kept / "run.json").read_text())["status"] == "complete"


def test_sigterm_during_training_checkpoints_and_says_how_to_resume(work):
    out = work / "run"
    p = spawn("train", *LSTM, *LONG, "--corpus", work / "corp", "-o", out, "-q")
    wait_for(p, lambda: state_step(out) >= 5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143
    one_line(err, "interrupted by SIGTERM", "checkpoint written", f"lmkit train --resume {out}")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["fit_info"]["step"] == state_step(out)
    assert not (work / ".run.lock").exists()


def test_sigterm_outside_the_training_loop_unwinds_and_releases_everything(work, tmp_path):
    """Counting n-grams (no training loop): SIGTERM still releases the lock, removes temp and spill
    folders, and exits 143 with one line."""
    big = work / "big.txt"
    big.write_text("".join((work / "corp" / "train.txt").read_text() for _ in range(300)))
    spill = tmp_path / "spill"
    spill.mkdir()
    out = work / "run"
    p = spawn("train", "--model", "ngram:kn5", "--train", big, "--valid", work / "corp" / "valid.txt",
              "--memory", "64K", "--tmp", spill, "-o", out, "-q")
    wait_for(p, lambda: any(spill.iterdir()))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not out.exists() and temps(work) == [] and not (work / ".run.lock").exists()
    assert list(spill.iterdir()) == []


# -- 8: spill folders left by a kill ----------------------------------------------------------------
def test_spill_folder_of_a_killed_count_is_removed_by_the_next_one(work, tmp_path):
    big = work / "big.txt"
    big.write_text("".join((work / "corp" / "train.txt").read_text() for _ in range(300)))
    spill = tmp_path / "spill"
    spill.mkdir()
    foreign = spill / "lmkit-ngram-otherhost-1-abc"  # another machine sharing --tmp: never touched
    foreign.mkdir()
    args = ("train", "--model", "ngram:kn5", "--train", big, "--valid", work / "corp" / "valid.txt",
            "--memory", "64K", "--tmp", spill)
    p = spawn(*args, "-o", work / "killed", "-q")
    wait_for(p, lambda: len(list(spill.iterdir())) > 1)
    p.kill()
    p.wait(timeout=30)
    left = [q.name for q in spill.iterdir() if q != foreign]
    assert len(left) == 1 and left[0].startswith("lmkit-ngram-")
    code, _, err = run("train", "--model", "ngram:kn2", "--corpus", work / "corp", "--memory", "64K",
                       "--tmp", spill, "-o", work / "next")
    assert code == 0, err
    assert f"removed 1 scratch folder(s) left in {spill} by a killed lmkit process: {left[0]}" in err
    assert [q.name for q in spill.iterdir()] == [foreign.name]
