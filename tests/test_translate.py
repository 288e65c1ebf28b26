"""Parallel corpora (docs/protocol.md): every family as a prefix LM over `source <sep> target`, scored and
trained on the target side only, with translation BLEU."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from clitools import cli, one_error_line

from lmkit import api
from lmkit.compare import compare_runs
from lmkit.data.batching import prefix_examples, sentence_batches
from lmkit.data.corpus import count_tokens, encode, locate_pairs, read_pair
from lmkit.data.vocab import BOS, EOS, PAD, SEP, UNK, Vocab
from lmkit.errors import DataError, IncomparableError, UsageError
from lmkit.protocol import Protocol
from clitools import lineup_table

WORDS = "a b c d e f".split()
# A tiny transformer learns this copy-with-mapping task in a couple of seconds (fixed length 4).
TF_OPTIONS = {"layers": 2, "d_model": 64, "heads": 4, "block_size": 32}
TF_TRAIN = {"epochs": 10, "batch_size": 32, "lr": 3e-3, "warmup_steps": 10, "eval_every": 1000, "device": "cpu",
            "threads": 1}


def write_pairs(d: Path, splits: dict[str, list[tuple[str, str]]], src: str = "src", tgt: str = "tgt") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        (d / f"{split}.{src}").write_text("".join(f"{s}\n" for s, _ in pairs))
        (d / f"{split}.{tgt}").write_text("".join(f"{t}\n" for _, t in pairs))
    return d


def mapping_pairs(n: int, seed: int, length: int = 4) -> list[tuple[str, str]]:
    """Source 'a c f b' -> target 'A C F B': a word-by-word mapping, in order."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(length)]
        pairs.append((" ".join(words), " ".join(w.upper() for w in words)))
    return pairs


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "toy", {"train": mapping_pairs(200, 0), "valid": mapping_pairs(20, 1),
                                          "test": mapping_pairs(20, 2)})


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory) -> Path:
    """A tiny transformer trained on the mapping task (a few seconds)."""
    d = write_pairs(tmp_path_factory.mktemp("tf") / "toy", {"train": mapping_pairs(400, 0),
                                                            "valid": mapping_pairs(30, 1),
                                                            "test": mapping_pairs(30, 2)})
    req = api.TrainRequest(model="transformer", corpus=d, options=TF_OPTIONS, train_options=dict(TF_TRAIN),
                           output=d.parent / "run", progress=False)
    return api.train(req)


# -- protocol, vocabulary, encoding -----------------------------------------------------------------
def test_protocol_task_field():
    assert Protocol().task == "lm" and Protocol(task="translate").hash != Protocol().hash
    # task joined the protocol later: an LM protocol hashes as it did before the field existed
    old = {k: v for k, v in Protocol().to_dict().items() if k != "task"}
    assert Protocol().hash == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    with pytest.raises(UsageError, match="sentence"):
        Protocol(task="translate", context="stream")
    with pytest.raises(UsageError, match="unknown task"):
        Protocol(task="summarise")


def test_pairs_encode_as_source_sep_target(tmp_path):
    d = write_pairs(tmp_path / "p", {"train": [("a b c", "A B C"), ("d <sep> e", "D E"), ("", "F"), ("f", "F")]})
    pair = read_pair(d / "train.src", d / "train.tgt")
    p = Protocol(task="translate")
    vocab = Vocab.build(count_tokens(pair, p), with_sep=True)
    assert vocab.tokens[SEP] == "<sep>" and vocab.has_sep
    enc = encode(pair, vocab, p)
    ids = vocab.index
    assert [s.tolist() for s in enc.sequences] == [
        [ids["a"], ids["b"], ids["c"], SEP, ids["A"], ids["B"], ids["C"]],
        [ids["d"], UNK, ids["e"], SEP, ids["D"], ids["E"]],  # a literal <sep> is text, not the separator
        [ids["f"], SEP, ids["F"]],
    ]
    assert enc.score_from == [4, 4, 2] and enc.line_numbers == [1, 2, 4]
    assert enc.skipped_blank_lines == 1 and enc.reserved_tokens == 1
    assert enc.num_tokens == (3 + 1) + (2 + 1) + (1 + 1)  # target tokens and </s> only
    # the pair's hash covers both files, in order
    expected = hashlib.sha256(f"{pair.source.sha256}\n{pair.target.sha256}".encode()).hexdigest()
    assert enc.sha256 == expected != read_pair(d / "train.tgt", d / "train.src").sha256


def test_line_count_mismatch_names_both_files(tmp_path):
    d = write_pairs(tmp_path / "p", {"train": [("a", "A"), ("b", "B")], "valid": [("a", "A")]})
    (d / "train.tgt").write_text("A\n")
    with pytest.raises(DataError, match=r"train\.src has 2 lines but .*train\.tgt has 1"):
        read_pair(d / "train.src", d / "train.tgt")
    err = one_error_line(cli("train", "--corpus", d, "-o", tmp_path / "run", "-q"), 1)
    assert "train.src" in err and "train.tgt" in err


def test_discovery_direction_and_split_names(tmp_path):
    d = write_pairs(tmp_path / "de-en", {"train": [("a", "A")], "val": [("b", "B")]}, "de", "en")
    files = locate_pairs(d, "de", "en", need=("train", "valid"))
    assert files.train == (d / "train.de", d / "train.en") and files.valid == (d / "val.de", d / "val.en")
    assert files.test is None
    with pytest.raises(UsageError, match="--src de --tgt en or --src en --tgt de"):
        locate_pairs(d)
    with pytest.raises(UsageError, match="both --src and --tgt"):
        locate_pairs(d, "de")
    (d / "test.de").write_text("c\n")
    with pytest.raises(DataError, match="test.de has no partner file ending in .en"):
        locate_pairs(d, "de", "en")


# -- scoring: only the target side ------------------------------------------------------------------
def test_perplexity_counts_only_target_tokens(toy, tmp_path):
    run = api.train(api.TrainRequest(model="ngram:kn3", corpus=toy, output=tmp_path / "kn3", progress=False))
    record = json.loads((run / "run.json").read_text())
    assert record["protocol"]["task"] == "translate"  # inferred from train.src + train.tgt
    assert record["data"]["test"]["source"].endswith("test.src")
    assert record["data"]["test"]["target"].endswith("test.tgt")
    pair = write_pairs(tmp_path / "hand", {"t": [("a b c d", "A B"), ("e", "E F A")]})
    res = api.score(run, src=pair / "t.src", tgt=pair / "t.tgt")
    summary = res.summary()
    # by hand: (2 target tokens + </s>) + (3 + </s>) = 7; the 4 + 1 source tokens and both <sep> are context
    assert summary["tokens"] == 7 and summary["sequences"] == 2 and summary["oov"] == 0
    model, _ = api.load_model(run)
    enc = encode(read_pair(pair / "t.src", pair / "t.tgt"), model.vocab, model.protocol)
    full = model.sequence_logprobs(enc.sequences)  # the model scores the whole sequence as usual ...
    assert [len(lp) for lp in full] == [4 + 1 + 2 + 1, 1 + 1 + 3 + 1]
    expected = -sum(float(lp[f:].sum()) for lp, f in zip(full, enc.score_from))  # ... only targets count
    assert summary["nll_nats"] == pytest.approx(expected)
    assert [row["tokens"] for row in res.score.per_line()] == [3, 4]
    tokens = [r["token"] for r in api.score(run, src=pair / "t.src", tgt=pair / "t.tgt",
                                            keep_words=True).score.per_token(
        [["A", "B"], ["E", "F", "A"]])]
    assert tokens == ["A", "B", "</s>", "E", "F", "A", "</s>"]


def test_char_level_bits_per_char_counts_target_characters(tmp_path):
    d = write_pairs(tmp_path / "c", {"train": [("ab", "xy")] * 3, "valid": [("ab", "xy")], "test": [("ab", "xyz")]})
    run = api.train(api.TrainRequest(model="ngram:kn2", corpus=d, level="char", output=tmp_path / "r",
                                     progress=False))
    test = json.loads((run / "run.json").read_text())["metrics"]["test"]
    assert test["tokens"] == 4  # x y z </s>
    assert test["bits_per_char"] == pytest.approx(test["nll_nats"] / np.log(2) / (3 + 1))


# -- training: loss on target positions only --------------------------------------------------------
def test_source_and_sep_targets_are_masked():
    seqs = [np.array([5, 6, SEP, 7, 8]), np.array([9, SEP, 7])]
    examples, ignore = prefix_examples(seqs, [3, 2], None)
    (batch,) = sentence_batches(examples, 8, None, ignore)
    assert batch.x.tolist() == [[BOS, 9, SEP, 7, PAD, PAD], [BOS, 5, 6, SEP, 7, 8]]
    # <s> -> 9 and 9 -> <sep> (source side) are context only; the target tokens and </s> are trained
    assert batch.y.tolist() == [[PAD, PAD, 7, EOS, PAD, PAD], [PAD, PAD, PAD, 7, 8, EOS]]
    assert batch.num_targets == 2 + 3
    # cut into pieces (max_len 3): a piece with no target-side prediction is dropped
    examples, ignore = prefix_examples([np.array([5, 6, SEP, 7, 8])], [3], 3)
    assert [e.tolist() for e in examples] == [[SEP, 7, 8, EOS]] and ignore == [0]


def test_epoch_batches_train_every_target_once(tf_run):
    from internals import epoch_batches
    from lmkit.train import TrainConfig

    model, record = api.load_model(tf_run)
    info = record.data["train"]
    enc = encode(read_pair(info["source"], info["target"]), model.vocab, model.protocol)
    batches = epoch_batches(model, enc, TrainConfig(batch_size=16, seed=0), 0)
    assert sum(b.num_targets for b in batches) == enc.num_tokens == 400 * (4 + 1)
    assert all((b.y[b.x == SEP] != PAD).all() for b in batches)  # the token after <sep> is trained


def test_tiny_transformer_learns_the_mapping(tf_run):
    record = json.loads((tf_run / "run.json").read_text())
    assert record["metrics"]["test"]["tokens"] == 30 * (4 + 1)
    assert record["metrics"]["test"]["perplexity"] < 1.5
    bleu = record["metrics"]["bleu"]
    assert bleu["score"] > 50 and bleu["signature"].startswith("nrefs:1|case:mixed")
    out = api.generate(tf_run, "a b c d").outputs[0]  # a prompt is a source sentence: <sep> is added
    assert out["text"] == out["continuation"] == "A B C D"


def test_resume_reads_the_pairs_again(toy, tmp_path):
    train = {**TF_TRAIN, "epochs": 1}
    run = api.train(api.TrainRequest(model="transformer", corpus=toy, options=TF_OPTIONS, train_options=train,
                                     output=tmp_path / "tf", progress=False))
    api.resume(run, {"epochs": 2}, progress=False)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["fit_info"]["step"] == 2 * 7  # 200 pairs / 32 per batch
    assert record["metrics"]["test"]["tokens"] == 20 * (4 + 1) and "bleu" in record["metrics"]


# -- BLEU ---------------------------------------------------------------------------------------------
def test_bleu_equals_sacrebleu_on_the_hypotheses(tf_run):
    report = api.bleu(tf_run)  # the run's own test pair
    res = report.result
    test = json.loads((tf_run / "run.json").read_text())["data"]["test"]
    assert res.references == Path(test["target"]).read_text().splitlines()  # raw reference lines
    assert res.prompts == Path(test["source"]).read_text().splitlines()
    direct = sacrebleu.corpus_bleu(res.hypotheses, [res.references])
    assert res.score == direct.score and res.precisions == list(direct.precisions)
    metric = sacrebleu.BLEU()
    metric.corpus_score(res.hypotheses, [res.references])
    assert res.signature == str(metric.get_signature())
    record = json.loads((tf_run / "run.json").read_text())
    assert record["metrics"]["bleu"]["score"] == res.score  # recorded at the end of training: greedy
    assert report.summary()["sha256"] == test["sha256"]
    beam = api.bleu(tf_run, src=test["source"], tgt=test["target"], beam=2).result
    assert len(beam.hypotheses) == 30 and beam.score > 50


def test_bleu_cli_on_a_translation_run(tf_run):
    r = cli("bleu", tf_run, "--format", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["lines"] == 30 and data["bleu"] > 50 and data["signature"].startswith("nrefs:1")
    err = one_error_line(cli("bleu", tf_run, "some.txt"), 2)
    assert "--src FILE --tgt FILE" in err


def test_ngram_kn3_end_to_end(toy, tmp_path):
    run = tmp_path / "kn3"
    r = cli("train", "--model", "ngram:kn3", "--corpus", toy, "--task", "translate", "-o", run, "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(run)
    record = json.loads((run / "run.json").read_text())
    assert set(record["metrics"]["bleu"]) >= {"score", "signature"}
    r = cli("score", run, "--src", toy / "test.src", "--tgt", toy / "test.tgt", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] == 20 * (4 + 1)
    r = cli("bleu", run)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("BLEU = ") and "nrefs:1" in r.stdout
    r = cli("generate", run, "--prompt", "a b c d", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert "<sep>" not in json.loads(r.stdout)[0]["text"]


# -- comparing ------------------------------------------------------------------------------------------
def test_translate_and_lm_runs_refuse_to_compare(toy, tiny_corpus, tmp_path):
    tr = api.train(api.TrainRequest(model="ngram:kn3", corpus=toy, output=tmp_path / "tr", progress=False))
    lm = api.train(api.TrainRequest(model="ngram:kn3", corpus=tiny_corpus, output=tmp_path / "lm", progress=False))
    with pytest.raises(IncomparableError, match="task translate vs lm"):
        compare_runs([tr, lm])
    err = one_error_line(cli("compare", lm, tr), 1)
    assert "task lm vs translate" in err


def test_lineup_on_a_parallel_corpus_records_bleu(tmp_path):
    d = write_pairs(tmp_path / "de-en", {"train": mapping_pairs(100, 0), "valid": mapping_pairs(10, 1),
                                         "test": mapping_pairs(10, 2)}, "de", "en")
    rows = lineup_table(d, ["ngram:kn3", "ngram:laplace2"], src="de", tgt="en", min_count=1,
                          runs_dir=tmp_path / "runs")
    assert sorted(r["model"] for r in rows) == ["ngram:kn3", "ngram:laplace2"]
    assert all(r["bleu"] is not None and r["bleu_signature"].startswith("nrefs:1") for r in rows)
    record = json.loads((tmp_path / "runs" / "ngram-kn3" / "run.json").read_text())
    assert record["protocol"]["task"] == "translate" and record["protocol"]["context"] == "sentence"


# -- one-line errors --------------------------------------------------------------------------------------
def test_usage_errors_are_one_line(toy, tiny_corpus, tmp_path):
    err = one_error_line(cli("train", "--corpus", toy, "--context", "stream", "-o", tmp_path / "a", "-q"), 2)
    assert "--context sentence" in err
    de_en = write_pairs(tmp_path / "de-en", {"train": [("a", "A")], "valid": [("a", "A")]}, "de", "en")
    err = one_error_line(cli("train", "--corpus", de_en, "-o", tmp_path / "b", "-q"), 2)
    assert "--src de --tgt en" in err
    err = one_error_line(cli("train", "--corpus", tiny_corpus, "--src", "de", "--tgt", "en", "-o", tmp_path / "c"), 1)
    assert "no train pair found (expected train.de and train.en)" in err
    err = one_error_line(cli("train", "--task", "translate", "--train", toy / "train.src", "--valid",
                             toy / "valid.src", "-o", tmp_path / "d"), 2)
    assert "--train, --valid name single files" in err
    lm = api.train(api.TrainRequest(model="ngram:kn2", corpus=tiny_corpus, output=tmp_path / "lm", progress=False))
    err = one_error_line(cli("bleu", lm, "--src", toy / "test.src", "--tgt", toy / "test.tgt"), 2)
    assert "language model" in err
    lm_vocab = tmp_path / "vocab.json"
    Vocab.build(count_tokens(read_pair(toy / "train.src", toy / "train.tgt"), Protocol())).save(lm_vocab)
    err = one_error_line(cli("train", "--corpus", toy, "--vocab", lm_vocab, "-o", tmp_path / "e", "-q"), 2)
    assert "<sep>" in err
