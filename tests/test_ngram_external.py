"""Out-of-core n-gram counting (--memory/--tmp) gives count_ngrams' arrays exactly, and spills cleanly.

Budgets far below the CLI's 64K floor are passed to count_external directly, so tiny corpora spill into
dozens of runs and need multi-pass merges: every path of the merge runs in well under a second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app
from lmkit.errors import UsageError
from lmkit.models.ngram import external
from lmkit.models.ngram import smoothing as sm
from lmkit.models.ngram.counts import count_ngrams
from lmkit.models.ngram.external import count_external
from lmkit.models.ngram.resources import MIN_MEMORY, CountingPlan, parse_memory
from lmkit.models.ngram.sorted_runs import merge_blocks, merge_rows

from conftest import shared_path

runner = CliRunner()


def assert_same_counts(a, b) -> None:
    """Every array count_ngrams hands to the estimators, equal in value and dtype (prefix ids and counts: in value
    and as integers; in memory they are int32 below 2^31 tokens, out of core int64, and the estimators only index
    with the ids and add or compare the counts)."""
    assert (a.tokens, a.units, a.order, a.vocab_size) == (b.tokens, b.units, b.order, b.vocab_size)
    for n in range(a.order):
        for name, x, y in (("keys", a.index.keys[n], b.index.keys[n]), ("counts", a.counts[n], b.counts[n]),
                           ("ctx", a.ctx[n], b.ctx[n])):
            if name in ("ctx", "counts"):
                assert x.dtype.kind == y.dtype.kind == "i", (name, n + 1)
            else:
                assert x.dtype == y.dtype, (name, n + 1)
            np.testing.assert_array_equal(x, y, err_msg=f"{name} of order {n + 1}")


def random_corpus(rng: np.random.Generator, sequences: int, vocab: int, longest: int) -> list[np.ndarray]:
    """Zipf-ish ids 4..V-1 (so n-grams repeat across chunks), empty sequences included."""
    weights = 1.0 / np.arange(1, vocab - 3)
    weights /= weights.sum()
    return [rng.choice(np.arange(4, vocab), size=int(rng.integers(0, longest + 1)), p=weights).astype(np.int32)
            for _ in range(sequences)]


@pytest.mark.parametrize("context", ["sentence", "stream"])
def test_external_equals_in_memory_on_random_corpora(context: str, tmp_path: Path):
    rng = np.random.default_rng(7)
    passes = spilled = 0
    for vocab, sequences in ((6, 300), (40, 400), (500, 300)):
        seqs = random_corpus(rng, sequences, vocab, longest=20)
        for order in (1, 2, 3, 4, 5):
            # 4K bytes: chunks of ~27 tokens, so every corpus here is dozens of spilled runs per order
            got, info = count_external(seqs, vocab, order, context, memory=4096, tmp=tmp_path)
            assert_same_counts(count_ngrams(seqs, vocab, order, context), got)
            assert info["chunks"] > 20
            spilled += info["spilled_runs"]
            passes += info["merge_passes"]
            assert list(tmp_path.iterdir()) == []  # the private spill folder is gone
    assert spilled > 500 and passes > 0  # runs were spilled, and some orders needed a multi-pass merge


@settings(max_examples=40, deadline=None)
@example(lines=[[]] * 6, order=3, context="sentence", memory=1500)  # chunks with no n-grams of an order
@given(st.lists(st.lists(st.integers(4, 9), max_size=8), min_size=1, max_size=40),
       st.integers(1, 5), st.sampled_from(["sentence", "stream"]), st.integers(1500, 4000))
def test_external_equals_in_memory_property(lines, order, context, memory):
    seqs = [np.array(line, dtype=np.int32) for line in lines]
    got, _ = count_external(seqs, 10, order, context, memory=memory)
    assert_same_counts(count_ngrams(seqs, 10, order, context), got)


def test_a_text_that_fits_is_counted_in_one_piece(tmp_path: Path):
    seqs = random_corpus(np.random.default_rng(1), 50, 30, longest=10)
    got, info = count_external(seqs, 30, 3, "sentence", memory=64 << 20, tmp=tmp_path)
    assert_same_counts(count_ngrams(seqs, 30, 3, "sentence"), got)
    assert (info["chunks"], info["spilled_runs"], info["spilled_bytes"]) == (1, 0, 0)
    assert list(tmp_path.iterdir()) == []


def test_ptb_at_8M_equals_in_memory():
    ptb = shared_path("corpora", "ptb")
    vocab = api.build_vocab(ptb / "train.txt")
    from lmkit.data.corpus import encode, read_text
    from lmkit.protocol import Protocol

    seqs = encode(read_text(ptb / "train.txt"), vocab, Protocol()).sequences
    got, info = count_external(seqs, len(vocab), 5, "sentence", memory=parse_memory("8M"))
    assert_same_counts(count_ngrams(seqs, len(vocab), 5, "sentence"), got)
    assert info["chunks"] > 10 and info["spilled_bytes"] > 10 << 20


@pytest.mark.parametrize("fault", [RuntimeError("injected"), KeyboardInterrupt()])
def test_spill_folder_removed_after_an_error(fault: BaseException, tmp_path: Path, monkeypatch):
    seqs = random_corpus(np.random.default_rng(3), 300, 50, longest=15)
    real = external.count_piece
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # a few runs are on disk by now
            assert any(tmp_path.glob("lmkit-ngram-*/*.npy"))
            raise fault
        return real(*args, **kwargs)

    monkeypatch.setattr(external, "count_piece", failing)
    with pytest.raises(type(fault)):
        count_external(seqs, 50, 3, "stream", memory=4096, tmp=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_spill_folder_removed_after_an_error_while_merging(tmp_path: Path, monkeypatch):
    seqs = random_corpus(np.random.default_rng(4), 300, 50, longest=15)

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(external, "assemble_spilled", broken)
    with pytest.raises(KeyboardInterrupt):
        count_external(seqs, 50, 3, "sentence", memory=4096, tmp=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_sentence_longer_than_the_budget_is_refused():
    seqs = [np.arange(4, 10, dtype=np.int32), np.full(200, 5, dtype=np.int32)]
    with pytest.raises(UsageError, match="raise --memory"):
        count_external(seqs, 10, 3, "sentence", memory=4096)
    got, _ = count_external(seqs, 10, 3, "stream", memory=4096)  # a stream is cut anywhere
    assert_same_counts(count_ngrams(seqs, 10, 3, "stream"), got)


def test_merge_moves_about_half_a_block_per_stream_per_step():
    """The k-way merge of many runs: the exact sorted union with summed counts and positions, in a number of
    steps set by the rows over (streams x half a block), not by the number of blocks."""
    rng = np.random.default_rng(2)
    streams = [np.unique(rng.integers(0, 10**6, size=640)) for _ in range(100)]
    blocks = [[(keys[i:i + 64], np.ones(keys[i:i + 64].size, dtype=np.int64)) for i in range(0, keys.size, 64)]
              for keys in streams]
    got = {i: [] for i in range(len(streams))}
    sinks = [got[i].extend for i in range(len(streams))]
    steps = list(merge_blocks([iter(b) for b in blocks], base=5, sinks=sinks))
    keys = np.concatenate([k for k, _ in steps])
    counts = np.concatenate([c for _, c in steps])
    union, multiplicity = np.unique(np.concatenate(streams), return_counts=True)
    assert np.array_equal(keys, union) and np.array_equal(counts, multiplicity)
    for i, stream in enumerate(streams):  # each key's recorded position is where it landed (from base 5)
        assert np.array_equal(keys[np.asarray(got[i]) - 5], stream)
    # 64,000 rows over (100 streams x 32 rows) is 20 steps, plus at most one per stream as each runs out;
    # refilling only the block that ran out would take a step per block (1,000)
    assert sum(len(b) for b in blocks) == 1000 and len(steps) <= 30 + len(streams)


ESTIMATORS = {
    "kn": lambda c, step, consume: sm.estimate_kn(c, True, (0.5, 1.0, 1.5), step, consume),
    "kn-basic": lambda c, step, consume: sm.estimate_kn(c, False, (0.5, 1.0, 1.5), step, consume),
    "wb": lambda c, step, consume: sm.estimate_wb(c, step, consume),
    "katz": lambda c, step, consume: sm.estimate_katz(c, 5, step, consume),
    "jm": lambda c, step, consume: sm.estimate_jm(c, [0.2, 0.4, 0.6, 0.7, 0.8], step, consume),
    "mle": lambda c, step, consume: sm.estimate_mle(c, step, consume),
    "stupid": lambda c, step, consume: sm.estimate_stupid(c, 0.4, step, consume),
    "addk": lambda c, step, consume: sm.estimate_additive(c, 0.1, step),
}


def tables_of(est) -> list[np.ndarray]:
    return est.counts + est.den if isinstance(est, sm.Additive) else est.logp + est.logbo


@pytest.mark.parametrize("context", ["sentence", "stream"])
@pytest.mark.parametrize("smoothing", list(ESTIMATORS))
def test_smoothing_in_blocks_equals_one_pass(smoothing: str, context: str):
    """Block-wise estimation (the blocks --memory sets) gives bit-identical tables at every block size, and
    consuming the counts as it goes changes nothing but what is left in them."""
    seqs = random_corpus(np.random.default_rng(5), 300, 300, longest=25)
    estimate = ESTIMATORS[smoothing]
    whole = estimate(count_ngrams(seqs, 300, 5, context), None, False)
    for step in (1, 3, 64, 1000):
        counts = count_ngrams(seqs, 300, 5, context)
        part = estimate(counts, step, step == 64)
        assert part.facts == whole.facts
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(tables_of(whole), tables_of(part)))
        if step == 64 and smoothing != "addk":
            assert counts.counts == [None] * 5 and counts.ctx == [None] * 5


def test_counting_finds_the_prefix_ids_the_index_would_search_for():
    seqs = random_corpus(np.random.default_rng(6), 300, 300, longest=25)
    counts = count_ngrams(seqs, 300, 5, "stream")
    fresh = count_ngrams(seqs, 300, 5, "stream").index
    for n in range(2, 6):
        assert np.array_equal(fresh.prefix(n), counts.ctx[n - 1])


@pytest.mark.parametrize("high", [6, 1 << 12, 1 << 20, (1 << 31) - 1])  # 1 to 5 ids per packed int64 key
def test_merge_rows_is_a_sorted_union(high: int):
    rng = np.random.default_rng(high)

    def run(m: int):  # distinct rows in key order (by the last column first), with counts
        rows = np.unique(rng.integers(0, high, size=(m, 5), dtype=np.int64), axis=0).astype(np.int32)
        rows = rows[np.lexsort(rows.T)]
        return rows, rng.integers(1, 9, size=rows.shape[0])

    a, b = run(400), run(300)
    b = (np.concatenate([b[0], a[0][::7]]), np.concatenate([b[1], a[1][::7]]))  # shared rows get summed
    b = (b[0][np.lexsort(b[0].T)], b[1][np.lexsort(b[0].T)])
    rows, counts = merge_rows(a, b)
    expected = {}
    for r, c in zip(np.concatenate([a[0], b[0]]).tolist(), np.concatenate([a[1], b[1]]).tolist()):
        expected[tuple(r)] = expected.get(tuple(r), 0) + c
    keys = sorted(expected, key=lambda r: r[::-1])
    assert rows.tolist() == [list(k) for k in keys]
    assert counts.tolist() == [expected[k] for k in keys]


@pytest.mark.parametrize("text, size", [("512K", 512 << 10), ("64M", 64 << 20), ("4G", 4 << 30),
                                        ("1.5G", 3 << 29), ("2gb", 2 << 30), ("3GiB", 3 << 30),
                                        ("1048576", 1 << 20), (" 8m ", 8 << 20)])
def test_parse_memory(text: str, size: int):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["0", "0K", "-5M", "abc", "4X", "1e400G", "nanG", "", "63K", "100"])
def test_parse_memory_refuses(text: str):
    with pytest.raises(UsageError, match="--memory"):
        parse_memory(text)
    assert MIN_MEMORY == 64 << 10


# -- the CLI ------------------------------------------------------------------------------------------------
def write_corpus(folder: Path, seed: int = 0) -> Path:
    """A few thousand Zipf-ish words per split: enough text for dozens of chunks at --memory 64K."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(300)])
    weights = 1.0 / np.arange(1, 301)
    weights /= weights.sum()
    folder.mkdir()
    for split, lines in (("train", 1500), ("valid", 100), ("test", 100)):
        text = "\n".join(" ".join(rng.choice(words, size=int(rng.integers(1, 25)), p=weights))
                         for _ in range(lines))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder


def train(*args) -> dict:
    result = runner.invoke(app, ["train", *map(str, args), "-q"])
    assert result.exit_code == 0, result.stderr
    return json.loads((Path(result.stdout.strip()) / "run.json").read_text())


@pytest.mark.parametrize("context", ["sentence", "stream"])
def test_cli_memory_gives_identical_perplexities(context: str, tmp_path: Path):
    corpus = write_corpus(tmp_path / "corpus")
    spill = tmp_path / "spill"
    spill.mkdir()
    plain = train("--model", "ngram:kn5", "--corpus", corpus, "--context", context, "-o", tmp_path / "a")
    bounded = train("--model", "ngram:kn5", "--corpus", corpus, "--context", context, "-o", tmp_path / "b",
                    "--memory", "64K", "--tmp", spill)
    for split in ("valid", "test"):
        for key in ("perplexity", "perplexity_excl_oov", "nll_nats", "tokens"):
            assert plain["metrics"][split][key] == bounded["metrics"][split][key]
    assert plain["config"] == bounded["config"]  # a resource, not a model setting: same config identity
    assert plain["parameters"] == bounded["parameters"]
    counting = bounded["fit_info"]["counting"]
    assert counting["engine"] == "external" and counting["memory_bytes"] == 64 << 10
    assert counting["chunks"] > 10 and counting["spilled_runs"] > 40 and counting["spilled_bytes"] > 0
    assert "counting" not in plain["fit_info"]
    assert list(spill.iterdir()) == []
    # under --memory the training-time checks skip the two that build model-sized structures, and say so
    statuses = [{name: r["status"] for name, r in run["checks"]["results"].items()}
                for run in (plain, bounded)]
    assert statuses[0] == {"normalisation": "pass", "causality": "n.a.", "batch-invariance": "pass",
                           "save-load": "pass"}
    assert statuses[1] == {**statuses[0], "normalisation": "n.a.", "save-load": "n.a."}
    assert "lmkit check RUN" in bounded["checks"]["results"]["save-load"]["evidence"]
    with np.load(tmp_path / "a" / "model.npz") as za, np.load(tmp_path / "b" / "model.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for name in za.files:
            if name != "meta":
                np.testing.assert_array_equal(za[name], zb[name], err_msg=name)


def fails(*args, code: int = 2, match: str = "") -> str:
    result = runner.invoke(app, ["train", *map(str, args)])
    assert result.exit_code == code, (result.exit_code, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


@pytest.mark.parametrize("args, match", [
    (["--memory", "0"], "--memory"), (["--memory", "-1G"], "--memory"), (["--memory", "lots"], "--memory"),
    (["--memory", "1K"], "too small"), (["--memory", "64M", "--tmp", "/nonexistent/folder"], "not a folder"),
    (["--tmp", "."], "give --memory too"), (["--engine", "spark"], "--engine"),
    (["--scheduler", "local:2"], "needs --engine dask"),
])
def test_cli_refuses_bad_counting_options(args: list[str], match: str, tiny_corpus: Path, tmp_path: Path):
    fails("--model", "ngram:kn3", "--corpus", tiny_corpus, "-o", tmp_path / "r", *args, match=match)
    assert not (tmp_path / "r").exists()


def test_cli_tmp_must_be_a_writable_folder(tiny_corpus: Path, tmp_path: Path):
    file = tmp_path / "file"
    file.write_text("x")
    fails("--corpus", tiny_corpus, "--memory", "1M", "--tmp", file, match="not a folder")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    import os

    if os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse
        pytest.skip("running as a user that can write to read-only folders")
    fails("--corpus", tiny_corpus, "--memory", "1M", "--tmp", locked, match="not writable")


@pytest.mark.parametrize("flag", [["--memory", "4G"], ["--engine", "dask"], ["--scheduler", "local:2"]])
def test_cli_counting_options_refused_for_neural_models(flag: list[str], tiny_corpus: Path):
    fails("--model", "lstm", "--corpus", tiny_corpus, *flag, match="only to n-gram counting")


def test_cli_engine_dask_without_dask_says_how_to_install(tiny_corpus: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    err = fails("--model", "ngram:kn3", "--corpus", tiny_corpus, "--engine", "dask", match="pip install 'lmkit[dask]'")
    assert "Dask" in err


def test_counting_plan_defaults():
    assert CountingPlan.from_options().in_memory
    plan = CountingPlan.from_options(memory="1M")
    assert (plan.engine, plan.memory, plan.in_memory) == ("local", 1 << 20, False)
