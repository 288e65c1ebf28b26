"""Faults (issue 7, part B): signals during training and during writes, two writers of one run folder, a full
disk, and `compare` over many runs. Real processes and real signals (subprocess), tiny models on CPU.
docs/reliability.md lists these cases."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clitools import one_line, wait_for
from lmkit import api
from lmkit.cli import app

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO / "corpora" / "shakespeare"
# a tiny stateful model in stream context with dropout: resuming it exactly needs the data position, the
# RNG state, the optimizer state and the carried hidden state all restored
LSTM = ("--model", "lstm", "--layers", "1", "--hidden", "16", "--context", "stream", "--batch-size", "4",
        "--seq-len", "10", "--dropout", "0.2", "--epochs", "2", "--eval-every", "10", "--threads", "1",
        "--device", "cpu", "--seed", "3")


def _grammar(path: Path, lines: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    subj = ["the cat", "the dog", "a bird", "my friend", "the old man", "a child"]
    verb = ["sees", "likes", "chases", "finds", "hears"]
    obj = ["the ball", "a tree", "the river", "some bread", "the moon"]
    out = [" ".join((subj[rng.integers(6)], verb[rng.integers(5)], obj[rng.integers(5)])) for _ in range(lines)]
    path.write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("grammar")
    for split, n, seed in (("train", 400, 1), ("valid", 50, 2), ("test", 50, 3)):
        _grammar(d / f"{split}.txt", n, seed)
    return d


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict:
    """The uninterrupted run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = CliRunner().invoke(app, ["train", *LSTM, "--corpus", str(corpus), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    return {"path": out, "record": json.loads((out / "run.json").read_text())}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "NO_COLOR": "1"}


def _file_limit(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def spawn(*args, limit: int | None = None, script: str | None = None) -> subprocess.Popen:
    """`lmkit ARGS` (or `python -c SCRIPT ARGS`) in a new process, optionally under a file-size limit."""
    cmd = [sys.executable, "-c", script] if script else [sys.executable, "-m", "lmkit.cli"]
    return subprocess.Popen([*cmd, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), preexec_fn=_file_limit(limit) if limit else None)


def run(*args, limit: int | None = None, timeout: float = 120) -> tuple[int, str, str]:
    p = spawn(*args, limit=limit)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def resume(run_dir: Path) -> dict:
    r = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "-q"])
    assert r.exit_code == 0, r.stderr
    return json.loads((run_dir / "run.json").read_text())


def same_result(a: dict, b: dict) -> None:
    for split in ("valid", "test"):
        assert a["metrics"][split]["nll_nats"] == pytest.approx(b["metrics"][split]["nll_nats"], rel=1e-9, abs=0)
        assert a["metrics"][split]["perplexity"] == pytest.approx(b["metrics"][split]["perplexity"], rel=1e-9)
    assert a["fit_info"]["step"] == b["fit_info"]["step"] and a["tokens_seen"] == b["tokens_seen"]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- signals during training ------------------------------------------------------------------------
def test_sigint_during_training_checkpoints_marks_interrupted_and_resumes(corpus, reference, tmp_path):
    out = tmp_path / "run"
    p = spawn("train", *LSTM, "--corpus", corpus, "-o", out, "-q")
    wait_for(p, lambda: checkpoint_step(out) >= 10)
    p.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    one_line(err, "interrupted at step", "checkpoint written", f"lmkit train --resume {out}")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert 10 <= record["fit_info"]["step"] < reference["record"]["fit_info"]["step"]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["stopped"] == "interrupted" and state["step"] == record["fit_info"]["step"]
    assert not (tmp_path / ".run.lock").exists()  # the lock went with the process
    r = CliRunner().invoke(app, ["score", str(out), str(corpus / "test.txt")])  # partly trained: still scores
    assert r.exit_code == 0, r.stderr
    same_result(resume(out), reference["record"])


def test_sigkill_during_training_then_resume_gives_the_same_numbers(corpus, reference, tmp_path):
    out = tmp_path / "run"
    p = spawn("train", *LSTM, "--corpus", corpus, "-o", out, "-q")
    wait_for(p, lambda: checkpoint_step(out) >= 20)
    p.kill()  # SIGKILL: no handler runs, the folder is left as it was at that instant
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert json.loads((out / "run.json").read_text())["status"] == "training"
    r = CliRunner().invoke(app, ["score", str(out), str(corpus / "test.txt")])
    assert r.exit_code == 1
    one_line(r.stderr, "status 'training'", f"lmkit train --resume {out}")
    resumed = resume(out)
    assert resumed["status"] == "complete"
    same_result(resumed, reference["record"])
    from safetensors.numpy import load_file

    a, b = load_file(str(out / "model.safetensors")), load_file(str(reference["path"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not [n for n in os.listdir(out) if n.startswith(".") or n.startswith("checkpoint.")]


def test_killed_before_its_first_checkpoint_resumes_from_the_start(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference["path"], out)
    shutil.rmtree(out / "checkpoint")  # what a kill before the first evaluation leaves
    (out / "model.safetensors").unlink()
    (out / "test_scores.npz").unlink()
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "status": "training", "metrics": {}}))
    r = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert r.exit_code == 0 and "starting from the beginning" in r.stderr, r.stderr
    same_result(json.loads((out / "run.json").read_text()), reference["record"])


@pytest.mark.parametrize("moment", ["old moved aside, new complete", "new half-written"])
def test_kill_inside_the_checkpoint_swap(reference, tmp_path, moment):
    """A checkpoint is written as checkpoint.new and swapped in; a kill between any two steps of the swap
    leaves one complete checkpoint that --resume finds."""
    out = tmp_path / "run"
    shutil.copytree(reference["path"], out)
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "status": "training"}))
    if moment == "old moved aside, new complete":
        shutil.copytree(out / "checkpoint", out / "checkpoint.old")
        (out / "checkpoint").rename(out / "checkpoint.new")
    else:
        shutil.copytree(out / "checkpoint", out / "checkpoint.new")
        (out / "checkpoint.new" / "state.json").unlink()  # state.json is written last
        (out / "checkpoint.new" / "trainer.pt").write_bytes(b"half")
    same_result(resume(out), reference["record"])
    assert (out / "checkpoint" / "state.json").exists()


# -- kills during artifact writes -------------------------------------------------------------------
SLOW_FILE_WRITER = textwrap.dedent("""
    import sys, time
    from lmkit.atomic import atomic_open
    with atomic_open(sys.argv[1]) as fh:
        fh.write('{"schema": 1, "half": ')
        fh.flush()
        print("writing", flush=True)
        time.sleep(120)
""")
SLOW_DIR_WRITER = textwrap.dedent("""
    import sys, time
    from lmkit.atomic import atomic_dir
    with atomic_dir(sys.argv[1], replace=True) as tmp:
        (tmp / "run.json").write_text("{")
        print("writing", flush=True)
        time.sleep(120)
""")


@pytest.fixture(scope="module")
def ngram_run(corpus, tmp_path_factory) -> Path:
    return api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, progress=False, context="sentence",
                                      output=tmp_path_factory.mktemp("ng") / "kn3"))  # exported as ARPA below


def test_sigkill_during_a_file_write_keeps_the_previous_file(ngram_run, corpus, tmp_path):
    run_dir = tmp_path / "kn3"
    shutil.copytree(ngram_run, run_dir)
    before = (run_dir / "run.json").read_bytes()
    p = spawn(run_dir / "run.json", script=SLOW_FILE_WRITER)
    assert p.stdout.readline().strip() == "writing"
    live = temps(run_dir)
    assert live and all(n.startswith(f".run.json.{p.pid}.") for n in live)  # recognisable: name, pid, .tmp
    from lmkit.atomic import clean_stale_temps, write_json

    assert clean_stale_temps(run_dir) == []  # a live writer's temp file is never touched
    p.kill()
    p.wait(timeout=30)
    assert (run_dir / "run.json").read_bytes() == before
    code, _, err = run("score", run_dir, corpus / "test.txt")  # the leftover is not mistaken for an artifact
    assert code == 0, err
    assert temps(run_dir) == live
    write_json(run_dir / "run.json", json.loads(before))  # the next write of that file cleans up
    assert temps(run_dir) == []


def test_sigkill_while_replacing_a_run_folder_keeps_the_previous_folder(ngram_run, corpus, tmp_path):
    run_dir = tmp_path / "kn3"
    shutil.copytree(ngram_run, run_dir)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    p = spawn(run_dir, script=SLOW_DIR_WRITER)
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait(timeout=30)
    assert {q.name: q.read_bytes() for q in run_dir.iterdir()} == files
    assert len(temps(tmp_path)) == 1
    r = CliRunner().invoke(app, ["compare", str(run_dir)])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(app, ["train", "--model", "ngram:kn2", "--corpus", str(corpus), "-o", str(run_dir),
                                 "--force", "-q"])
    assert r.exit_code == 0, r.stderr
    assert temps(tmp_path) == []  # cleaned by the next write of that folder


# -- two writers ------------------------------------------------------------------------------------
def test_second_writer_is_refused_by_the_lock(corpus, reference, tmp_path):
    """flock locks belong to an open file, so a second open in this very process is refused like another
    process would be (test_sigkill_during_training... checks two real processes)."""
    from lmkit.runlock import run_lock

    out = tmp_path / "run"
    train = ["train", "--model", "ngram:kn2", "--corpus", str(corpus), "-o", str(out)]
    with run_lock(out):
        for extra in ([], ["--force"]):
            r = CliRunner().invoke(app, train + extra)
            assert r.exit_code == 1
            one_line(r.stderr, f"another lmkit process (pid {os.getpid()}) is writing this run folder")
    assert not out.exists()
    assert not (tmp_path / ".run.lock").exists()  # released and removed
    r = CliRunner().invoke(app, train + ["-q"])
    assert r.exit_code == 0, r.stderr
    neural = tmp_path / "neural"
    shutil.copytree(reference["path"], neural)
    with run_lock(neural):
        r = CliRunner().invoke(app, ["train", "--resume", str(neural), "--epochs", "3"])
        assert r.exit_code == 1
        one_line(r.stderr, f"pid {os.getpid()}")


def test_lock_held_by_another_process_then_killed(corpus, tmp_path):
    """A live holder in another process refuses writers (naming its pid); once SIGKILLed its stale lock
    file no longer blocks anyone."""
    out = tmp_path / "run"
    holder = textwrap.dedent("""
        import sys, time
        from lmkit.runlock import run_lock
        held = run_lock(sys.argv[1])
        held.__enter__()
        print("locked", flush=True)
        time.sleep(120)
    """)
    p = spawn(out, script=holder)
    assert p.stdout.readline().strip() == "locked"
    code, _, err = run("train", "--model", "ngram:kn2", "--corpus", corpus, "-o", out, "--force")
    assert code == 1
    one_line(err, f"another lmkit process (pid {p.pid}) is writing this run folder")
    assert not out.exists()
    p.kill()
    p.wait(timeout=30)
    assert (tmp_path / ".run.lock").read_text().strip() == str(p.pid)  # the file stays, the flock does not
    r = CliRunner().invoke(app, ["train", "--model", "ngram:kn2", "--corpus", str(corpus), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / ".run.lock").exists()


def test_two_trainings_into_one_folder_at_once(tmp_path):
    out = tmp_path / "run"
    args = ("train", "--model", "ngram:kn3", "--train", SHAKESPEARE / "valid.txt", "--valid",
            SHAKESPEARE / "test.txt", "-o", out, "-q")
    procs = [spawn(*args), spawn(*args)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] in (1, 2), results  # exactly one wins
    loser = next(err for code, _, err in results if code != 0)
    assert loser.count("\n") == 1 and loser.startswith("error: ")
    assert ("is writing this run folder" in loser) or ("not empty" in loser), loser
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "model.npz", "recipe.toml", "run.json",
                                                     "vocab.json"]
    r = CliRunner().invoke(app, ["score", str(out), str(SHAKESPEARE / "test.txt"), "--format", "json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["perplexity"] == pytest.approx(
        json.loads((out / "run.json").read_text())["metrics"]["valid"]["perplexity"], rel=1e-12)
    assert [n for n in os.listdir(tmp_path) if n != "run"] == []


# -- full disk --------------------------------------------------------------------------------------
LIMIT = 4000  # bytes: vocab.json and run.json of the grammar corpus fit, model tables do not


def test_disk_full_writing_a_new_run_folder(corpus, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run("train", "--model", "ngram:kn3", "--corpus", corpus, "-o", out, "-q", limit=LIMIT)
    assert code == 1 and stdout == ""
    one_line(err, "disk full or file too large while writing", str(out / "model.npz"))
    assert os.listdir(tmp_path) == []  # no folder, no temp folder, no lock file


def test_disk_full_replacing_a_run_folder_keeps_the_previous_one(ngram_run, corpus, tmp_path):
    out = tmp_path / "kn3"
    shutil.copytree(ngram_run, out)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run("train", "--model", "ngram:kn4", "--corpus", corpus, "-o", out, "--force", "-q",
                       limit=LIMIT)
    assert code == 1
    one_line(err, "disk full or file too large", "previous version")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert os.listdir(tmp_path) == ["kn3"]


@pytest.mark.parametrize("command", ["vocab", "export-arpa"])
def test_disk_full_replacing_a_file_keeps_the_previous_one(ngram_run, tmp_path, command):
    target = tmp_path / ("v.json" if command == "vocab" else "m.arpa")
    target.write_text("previous good version\n")
    args = (("vocab", "build", SHAKESPEARE / "valid.txt", "-o", target) if command == "vocab"
            else ("export-arpa", ngram_run, "-o", target))
    code, _, err = run(*args, limit=2000)
    assert code == 1
    one_line(err, f"disk full or file too large while writing {target}")
    assert target.read_text() == "previous good version\n"
    assert os.listdir(tmp_path) == [target.name]


def test_disk_full_during_neural_training(corpus, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run("train", *LSTM, "--hidden", "64", "--corpus", corpus, "-o", out, "-q", limit=6000)
    assert code == 1 and stdout == ""
    one_line(err, "disk full or file too large while writing", str(out))
    assert json.loads((out / "run.json").read_text())["status"] == "training"  # never claims to be complete
    assert [n for n in os.listdir(out) if n.startswith(".") or n.endswith(".new")] == []
    assert not (out / "model.safetensors").exists() or (out / "model.safetensors").stat().st_size > 0


def test_disk_full_on_stdout(ngram_run, corpus, tmp_path):
    target = tmp_path / "out.jsonl"
    with open(target, "w") as fh:
        p = subprocess.run([sys.executable, "-m", "lmkit.cli", "score", str(ngram_run), str(corpus / "test.txt"),
                            "--per-token", "--format", "jsonl"], stdout=fh, stderr=subprocess.PIPE, text=True,
                           env=_env(), preexec_fn=_file_limit(1000), timeout=120)
    assert p.returncode == 1
    one_line(p.stderr, "disk full or file too large while writing")


# -- compare of many runs ---------------------------------------------------------------------------
N_RUNS = 150
MEMORY_PROBE = textwrap.dedent("""
    import json, sys, tracemalloc
    from lmkit import api
    paths = sys.argv[2:]
    tracemalloc.start()
    api.compare(paths[:2], bootstrap=50)  # imports and caches outside the measurement
    out = {}
    for k in (20, len(paths)):
        for boot in (None, 200):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            rows = api.compare(paths[:k], bootstrap=boot)
            assert len(rows) == k and (boot is None or all(r["test_ppl_lo"] is not None for r in rows))
            out[f"{k}/{boot}"] = tracemalloc.get_traced_memory()[1] - base
            del rows
    print(json.dumps(out))
""")


def test_compare_of_many_runs_reads_records_only_and_memory_stays_small(ngram_run, tmp_path):
    paths = []
    for i in range(N_RUNS):
        p = tmp_path / f"r{i:03d}"
        shutil.copytree(ngram_run, p)
        (p / "model.npz").unlink()  # compare never opens weights or vocabularies: they may be gone
        (p / "vocab.json").unlink()
        paths.append(p)
    p = spawn("_", *paths, script=MEMORY_PROBE)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    peak = json.loads(out)
    per_run = (peak[f"{N_RUNS}/None"] - peak["20/None"]) / (N_RUNS - 20)
    per_run_boot = (peak[f"{N_RUNS}/200"] - peak["20/200"]) / (N_RUNS - 20)
    run_json = (ngram_run / "run.json").stat().st_size
    # what a run costs is a few copies of its run.json and per-sequence scores, never its model
    assert per_run < 10 * run_json and per_run_boot < 20 * run_json, peak
    assert peak[f"{N_RUNS}/200"] < 16e6, peak
