"""Data-parallel training (torchrun + DDP, gloo on CPU) against one process with the same global batch.

Two processes must follow the single-process run step for step: the same tokens per step, the same
training-loss and validation-perplexity curve and the same final scores, written once, by rank 0. Not
bit for bit: each process sums the gradient of its own rows and the ranks then add those sums, where one
process sums all rows at once. Float addition is not associative, so the runs differ by rounding (about
1e-8 relative after a few dozen steps here), far inside the 1e-4 asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lmkit.cli import app  # noqa: E402
from lmkit.data.batching import Batch, pad_examples  # noqa: E402
from lmkit.data.vocab import PAD  # noqa: E402
from lmkit.distributed import (Launch, check_global_batch, device_for_rank, error_line, launch_from_env,  # noqa: E402
                               rank_seed, shard_rows)
from lmkit.errors import UsageError  # noqa: E402

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")
TOL = 1e-4
LSTM = ["--model", "lstm", "--hidden", "32", "--embed", "16", "--layers", "1", "--dropout", "0",
        "--set", "embed_dropout=0", "--lr", "0.01", "--warmup", "5", "--schedule", "constant",
        "--device", "cpu", "--set", "threads=1", "--seed", "3"]
runner = CliRunner()


# -- the row split and the loss normalisation, without processes ------------------------------------------------
def _sentence_batch(lengths: list[int]) -> Batch:
    rng = np.random.default_rng(0)
    return pad_examples([rng.integers(4, 30, size=n) for n in lengths])


def test_shard_rows_blocks_cover_the_global_batch() -> None:
    b = _sentence_batch([3, 5, 4, 7])
    parts = [shard_rows(b.x, b.y, r, 2, 4) for r in range(2)]
    assert [len(x) for x, _ in parts] == [2, 2]
    assert np.array_equal(np.concatenate([x for x, _ in parts]), b.x)  # rank order is row order
    assert sum(Batch(x, y).num_targets for x, y in parts) == b.num_targets
    assert shard_rows(b.x, b.y, 0, 1, 4)[0] is b.x  # one process: the batch itself


def test_shard_rows_short_last_batch_gives_an_empty_pad_row() -> None:
    b = _sentence_batch([3, 6])  # a last batch of 2 rows: rank 0's block of the global 4 is full, rank 1's empty
    x0, y0 = shard_rows(b.x, b.y, 0, 2, 4)
    x1, y1 = shard_rows(b.x, b.y, 1, 2, 4)
    assert np.array_equal(x0, b.x) and x1.shape == (1, b.x.shape[1])
    assert (x1 == PAD).all() and Batch(x1, y1).num_targets == 0  # no target: adds nothing anywhere


def test_global_token_normalisation_gives_the_single_process_gradient() -> None:
    """Per-rank loss = -sum(ln P of its targets) / (targets of the GLOBAL batch); summing the ranks'
    gradients then gives the one-process gradient. Averaging per-rank means (DDP's default with a
    per-rank mean loss) does not, when the ranks' rows hold different numbers of tokens."""
    from lmkit.models.rnn import RNNLM
    from lmkit.models.torchlm import forward_target_logprobs

    torch.manual_seed(0)
    net = RNNLM(RNNLM.Config(embed=8, hidden=8, layers=1, dropout=0.0, embed_dropout=0.0), 30)
    b = _sentence_batch([2, 9, 3, 12])  # rank 0's rows hold 1 + 8 targets, rank 1's 2 + 11
    n_global = b.num_targets

    def grads(x: np.ndarray, y: np.ndarray, denominator: int) -> list[torch.Tensor]:
        net.zero_grad()
        lp, _ = forward_target_logprobs(net, torch.as_tensor(x), torch.as_tensor(y), net.init_state(len(x), "cpu"))
        (-lp.sum() / denominator).backward()
        return [p.grad.clone() for p in net.parameters()]

    full = grads(b.x, b.y, n_global)
    shards = [shard_rows(b.x, b.y, r, 2, 4) for r in range(2)]
    summed = [sum(g) for g in zip(*(grads(x, y, n_global) for x, y in shards))]
    for a, c in zip(full, summed):
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-7)
    averaged = [sum(g) / 2 for g in zip(*(grads(x, y, Batch(x, y).num_targets) for x, y in shards))]
    assert not all(torch.allclose(a, c, rtol=1e-3, atol=1e-6) for a, c in zip(full, averaged))


@pytest.mark.parametrize("shuffled", [False, True])
def test_rank_stream_batches_read_only_their_rows_of_a_token_file(shuffled: bool, tmp_path: Path) -> None:
    """From a token file each rank builds only its rows of the stream layout (its shard of the file): the
    same windows as the global layout's rows, in the same seeded order, with the global target count."""
    from lmkit.data.batching import rank_stream_batches, stream_batches, stream_ids
    from lmkit.protocol import Protocol
    from lmkit.data.tokenfile import encode_file
    from lmkit.data.vocab import Vocab

    corpus = _corpus(tmp_path)
    counts: dict[str, int] = {}
    for w in (corpus / "train.txt").read_text().split():
        counts[w] = counts.get(w, 0) + 1
    vocab = Vocab.build(counts)
    view = encode_file(corpus / "train.txt", vocab, Protocol(context="stream"))[0].encoded().sequences
    seed = [3, 0]
    full = stream_batches(stream_ids(view), 4, 6, np.random.default_rng(seed) if shuffled else None)
    for rank in range(2):
        mine = rank_stream_batches(view, 4, 6, rank, 2, np.random.default_rng(seed) if shuffled else None)
        assert len(mine) == len(full)
        for m, f in zip(mine, full):
            fx, fy = shard_rows(f.x, f.y, rank, 2, 4)
            assert np.array_equal(m.x, fx) and np.array_equal(m.y, fy)
            assert m.global_targets == f.num_targets
        assert mine[0].x.base is not None and mine[0].x.base.size < 0.6 * stream_ids(view).size  # half, not all


def test_launch_and_batch_checks() -> None:
    assert launch_from_env({}) == Launch(0, 1, 0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "host0"}
    assert launch_from_env(env) == Launch(3, 4, 1)
    with pytest.raises(UsageError, match="MASTER_ADDR"):
        launch_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="inconsistent"):
        launch_from_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
    check_global_batch(6, 2)
    with pytest.raises(UsageError, match="use 4 or 6"):
        check_global_batch(5, 2)
    two = Launch(1, 2, 1)
    assert device_for_rank("cpu", two) == "cpu" and device_for_rank("cuda:1", Launch()) == "cuda:1"
    with pytest.raises(UsageError, match="cuda:LOCAL_RANK"):
        device_for_rank("cuda:1", two)
    with pytest.raises(UsageError, match="MPS"):
        device_for_rank("mps", two)
    assert rank_seed(7, 0) == 7 and len({rank_seed(7, r) for r in range(4)}) == 4  # rank 0 = one process


def test_error_lines_come_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("RANK", "1")
    assert error_line("bad option", same_on_every_rank=True) is None
    assert error_line("disk full", same_on_every_rank=False) == "error: rank 1: disk full"
    monkeypatch.setenv("RANK", "0")
    assert error_line("bad option", same_on_every_rank=True) == "error: bad option"


@pytest.mark.parametrize("rank", ["0", "1"])
def test_refusals_under_torchrun_before_any_file(rank: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The torchrun environment without torchrun: refusals come before the process group (and any file);
    rank 0 prints the one line, rank 1 only exits with the same code."""
    corpus = _corpus(tmp_path)
    for key, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    for args, match in (([*LSTM, "--batch-size", "5"], "--batch-size 5 is the global batch"),
                        (["--model", "ngram:kn3"], "ngram:kn3: n-gram models are counted in one process")):
        r = runner.invoke(app, ["train", *args, "--corpus", str(corpus), "-o", str(tmp_path / "run")])
        assert r.exit_code == 2, r.output
        if rank == "0":
            assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"error: {match}"), r.stderr
        else:
            assert r.stderr == ""
        assert r.stdout == "" and not (tmp_path / "run").exists()


# -- two processes under torchrun against one --------------------------------------------------------------------
def _corpus(root: Path) -> Path:
    """Tiny pseudo-text; 101 training lines, so batches of 4 leave a last batch of one row (rank 1 gets none)."""
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(30)]

    def text(lines: int) -> str:
        return "".join(" ".join(words[j] for j in rng.zipf(1.6, rng.integers(2, 10)) % 30) + "\n"
                       for _ in range(lines))

    d = root / "corpus"
    if not d.exists():
        d.mkdir()
        for split, lines in (("train", 101), ("valid", 20), ("test", 20)):
            (d / f"{split}.txt").write_text(text(lines))
    return d


def _torchrun_command(*args: str) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lmkit", "train", *args]
    return cmd, {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd, env = _torchrun_command(*args)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_process(*args: str) -> None:
    r = runner.invoke(app, ["train", *args, "-q"])
    assert r.exit_code == 0, r.output


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= TOL * abs(b))


def _assert_same_run(ddp: Path, single: Path, *, losses: bool = True) -> None:
    rows, ref = _rows(ddp), _rows(single)
    assert [(r["step"], r["tokens_seen"]) for r in rows] == [(r["step"], r["tokens_seen"]) for r in ref]
    for r, s in zip(rows, ref):
        assert _close(r["valid_ppl"], s["valid_ppl"]), (r, s)
        assert not losses or _close(r["train_loss"], s["train_loss"]), (r, s)
    a, b = (json.loads((p / "run.json").read_text()) for p in (ddp, single))
    for split in ("valid", "test"):
        assert _close(a["metrics"][split]["perplexity"], b["metrics"][split]["perplexity"]), split
    assert a["tokens_seen"] == b["tokens_seen"] and a["fit_info"]["step"] == b["fit_info"]["step"]


@needs_gloo
def test_two_processes_from_a_token_file_match_one(tmp_path: Path) -> None:
    """With the corpus encoded (lmkit encode), each rank reads only its rows' stretch of the token file;
    the run still follows the one-process run from the same file step for step."""
    corpus = _corpus(tmp_path)
    vocab = tmp_path / "vocab.json"
    for args in (["vocab", "build", str(corpus / "train.txt"), "-o", str(vocab), "-q"],
                 ["encode", "--corpus", str(corpus), "--vocab", str(vocab), "-q"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    args = [*LSTM, "--corpus", str(corpus), "--vocab", str(vocab), "--context", "stream", "--batch-size", "4",
            "--seq-len", "6", "--epochs", "1", "--eval-every", "5"]
    done = _torchrun(tmp_path, *args, "-o", "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tokens: reusing" in done.stderr
    _one_process(*args, "-o", str(tmp_path / "one"))
    _assert_same_run(tmp_path / "ddp", tmp_path / "one")


@needs_gloo
@pytest.mark.parametrize("context", ["stream", "sentence"])
def test_two_processes_match_one(context: str, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    args = [*LSTM, "--corpus", str(corpus), "--context", context, "--batch-size", "4", "--epochs", "1",
            "--eval-every", "5", *(["--seq-len", "6"] if context == "stream" else [])]
    done = _torchrun(tmp_path, *args, "-o", "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "ddp\n"  # the run folder, printed once (rank 0)
    assert "data parallel: 2 processes (DDP over gloo), global batch 4 = 2 x 2 rows" in done.stderr
    assert "Traceback" not in done.stderr and "error" not in done.stderr
    assert done.stderr.count("training lstm") == done.stderr.count("test perplexity") == 1  # rank 1 is silent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "ddp"]  # no lock left, no second run
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("run.json")] == [Path("ddp/run.json")]
    record = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert record["status"] == "complete" and record["device"].endswith("x 2 processes")
    assert record["fit_info"]["parallel"] == {"world_size": 2, "backend": "gloo", "global_batch": 4,
                                              "rows_per_process": 2}
    assert record["train_config"]["batch_size"] == 4

    _one_process(*args, "-o", str(tmp_path / "one"))
    _assert_same_run(tmp_path / "ddp", tmp_path / "one")
    assert len(_rows(tmp_path / "one")) >= 4  # a curve, not one point

    if context == "stream":  # both ranks' recurrent states are checkpointed: one process resumes the 2-process run
        for name in ("ddp", "one"):  # ... exactly as it resumes its own run
            r = runner.invoke(app, ["train", "--resume", str(tmp_path / name), "--epochs", "2", "--threads", "1", "-q"])
            assert r.exit_code == 0, r.output
        _assert_same_run(tmp_path / "ddp", tmp_path / "one")
        assert _rows(tmp_path / "ddp")[-1]["epoch"] == 2.0


@needs_gloo
def test_batch_not_divisible_is_one_line(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    done = _torchrun(tmp_path, *LSTM, "--corpus", str(corpus), "--batch-size", "5", "-o", "ddp")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --batch-size 5 is the global batch and must be divisible by the 2 processes "
                      "(--nnodes x --nproc-per-node); use 4 or 6"]
    assert f"{os.sep}lmkit{os.sep}" not in "".join(line for line in done.stderr.splitlines() if "File " in line)
    assert done.stdout == "" and not (tmp_path / "ddp").exists()


@needs_gloo
def test_ctrl_c_stops_every_rank_and_rank_0_checkpoints(tmp_path: Path) -> None:
    """Ctrl-C reaches torchrun, which passes SIGINT to both ranks: they agree on the step to stop at, rank 0
    writes the checkpoint (with both ranks' recurrent state) and says so once; one process then resumes."""
    corpus = _corpus(tmp_path)
    cmd, env = _torchrun_command(*LSTM, "--corpus", str(corpus), "--context", "stream", "--batch-size", "4",
                                 "--seq-len", "6", "--epochs", "1000", "--eval-every", "5", "-o", "ddp")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "ddp" / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "training ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    record = json.loads((tmp_path / "ddp" / "run.json").read_text())
    state = json.loads((tmp_path / "ddp" / "checkpoint" / "state.json").read_text())
    assert record["status"] == "interrupted" and state["stopped"] == "interrupted"
    assert state["step"] == record["fit_info"]["step"] > 5
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: interrupted at step {state['step']}; checkpoint written — resume with: lmkit train --resume ddp"]
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "ddp"), "--max-tokens",
                            str(state["tokens_seen"] + 50), "--threads", "1", "-q"])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert record["status"] == "complete" and record["fit_info"]["step"] > state["step"]
