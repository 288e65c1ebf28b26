"""Distributed n-gram counting on Dask gives count_ngrams' arrays exactly (skipped without Dask).

One LocalCluster (2 single-threaded worker processes) serves the library tests through its tcp address,
the way a remote scheduler is reached; the CLI test starts its own with `--scheduler local:2`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from typer.testing import CliRunner  # noqa: E402

from lmkit.cli import app  # noqa: E402
from lmkit.models.ngram import dask_engine  # noqa: E402
from lmkit.models.ngram.counts import count_ngrams  # noqa: E402
from lmkit.models.ngram.dask_engine import (count_dask, count_shard, make_shards, merge_shards,  # noqa: E402
                                            plan_shards)
from lmkit.models.ngram.sorted_runs import assemble  # noqa: E402

from test_ngram_external import assert_same_counts, random_corpus, write_corpus  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory):
    import logging

    import dask
    from distributed import LocalCluster

    scratch = tmp_path_factory.mktemp("dask")
    with dask.config.set({"temporary-directory": str(scratch)}), \
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                         silence_logs=logging.ERROR, local_directory=scratch) as cluster:
        yield cluster.scheduler_address


def counted_in_shards(seqs, vocab: int, order: int, context: str, target: int):
    """The map/reduce of count_dask run in this process (no cluster): the algorithm, without the transport."""
    shards = make_shards(seqs, plan_shards(seqs, target), context, order)
    total = reduce(merge_shards, [count_shard(s, vocab, order, context) for s in shards])
    return assemble(vocab, order, total.unigrams, total.runs, total.tokens, total.units)


@pytest.mark.parametrize("context", ["sentence", "stream"])
def test_sharded_counts_equal_in_memory(context: str):
    rng = np.random.default_rng(11)
    for vocab in (6, 300):
        seqs = random_corpus(rng, 200, vocab, longest=12)
        for order in (1, 2, 3, 5):
            for target in (1, 7, 100, 10**9):  # from one sequence per shard to a single shard
                got = counted_in_shards(seqs, vocab, order, context, target)
                assert_same_counts(count_ngrams(seqs, vocab, order, context), got)


@pytest.mark.parametrize("context", ["sentence", "stream"])
def test_local_cluster_counts_equal_single_process(context: str, scheduler: str):
    seqs = random_corpus(np.random.default_rng(5), 1500, 400, longest=20)
    for order in (3, 5):
        got, info = count_dask(seqs, 400, order, context, scheduler, memory=64 << 10)
        assert_same_counts(count_ngrams(seqs, 400, order, context), got)
        assert info["engine"] == "dask" and info["workers"] == 2 and info["shards"] >= 4


def test_token_file_shards_travel_by_reference(tmp_path: Path, scheduler: str):
    from lmkit import api
    from lmkit.data.tokenfile import TokenFile

    corpus = write_corpus(tmp_path / "corpus")
    vocab = len(api.build_vocab(corpus / "train.txt", output=tmp_path / "vocab.json"))
    found = api.encode_corpus(corpus, tmp_path / "vocab.json", splits="train")[0]
    view = TokenFile.open(found.path).sequences
    shard = next(make_shards(view, [(3, 9)], "stream", 5))
    assert shard.ids is None and shard.source is not None and shard.source.start == 3  # a path, not ids
    assert [list(s) for s in shard.sequences()] == [list(s) for s in view[3:9]]
    plain = [np.asarray(s) for s in view]
    got, _ = count_dask(view, vocab, 4, "stream", scheduler, memory=64 << 10)
    assert_same_counts(count_ngrams(plain, vocab, 4, "stream"), got)


def test_cli_local_cluster_gives_identical_perplexity(tmp_path: Path):
    corpus = write_corpus(tmp_path / "corpus")
    runs = {}
    for name, extra in (("plain", []), ("dask", ["--engine", "dask", "--scheduler", "local:2"])):
        out = tmp_path / name
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "lmkit.cli", "train", "--model", "ngram:kn5", "--corpus",
                               str(corpus), "-o", str(out), *extra], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(out)
        assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
        runs[name] = json.loads((out / "run.json").read_text())
    for split in ("valid", "test"):
        assert runs["plain"]["metrics"][split] | {"score_seconds": 0, "tokens_per_second": 0} == \
            runs["dask"]["metrics"][split] | {"score_seconds": 0, "tokens_per_second": 0}
    assert runs["plain"]["config"] == runs["dask"]["config"]
    counting = runs["dask"]["fit_info"]["counting"]
    assert (counting["engine"], counting["scheduler"], counting["workers"]) == ("dask", "local:2", 2)


def test_unreachable_scheduler_is_one_line(tiny_corpus: Path, monkeypatch):
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", 1)
    result = runner.invoke(app, ["train", "--model", "ngram:kn3", "--corpus", str(tiny_corpus), "--engine", "dask",
                                 "--scheduler", "tcp://127.0.0.1:9", "-q"])
    err = result.stderr.strip()
    assert result.exit_code == 1, err
    assert err.startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9") and "\n" not in err


@pytest.mark.parametrize("value, match", [("foo", "--scheduler expects"), ("local:0", "1 <= N"),
                                          ("local:x", "--scheduler expects")])
def test_bad_scheduler_is_a_usage_error(value: str, match: str, tiny_corpus: Path):
    result = runner.invoke(app, ["train", "--corpus", str(tiny_corpus), "--engine", "dask", "--scheduler", value])
    assert result.exit_code == 2 and match in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_tmp_is_refused_with_dask(tiny_corpus: Path):
    result = runner.invoke(app, ["train", "--corpus", str(tiny_corpus), "--engine", "dask", "--tmp", "."])
    assert result.exit_code == 2 and "Dask workers count their shards in memory" in result.stderr
