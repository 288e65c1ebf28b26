"""hf:FOLDER — a local pretrained causal LM scored as a model, checked against a direct transformers computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clitools import cli, one_error_line

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from lmkit import api  # noqa: E402
from lmkit.data.corpus import encode, read_text  # noqa: E402
from lmkit.errors import IncomparableError  # noqa: E402
from lmkit.models.pretrained import PretrainedLM  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LINES = ["the king is dead", "long live the king", "", "what say you , my lord ?"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


def tiny_gpt2(out: Path, vocab_size: int = 400) -> Path:
    """A tiny randomly initialised GPT-2 with a byte-level BPE tokenizer, written as save_pretrained writes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = (REPO / "corpora" / "shakespeare" / "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    eot = tok.token_to_id("<|endoftext|>")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                         eos_token="<|endoftext|>").save_pretrained(out)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=16, n_layer=1,
                                     n_head=2, bos_token_id=eot, eos_token_id=eot)
    transformers.GPT2LMHeadModel(config).save_pretrained(out)
    return out


def direct_logprobs(folder: Path, ids: list[int]) -> np.ndarray:
    """ln P(ids[t] | ids[:t]) straight from transformers, the whole sequence in one pass."""
    net = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).float().eval()
    with torch.no_grad():
        logp = torch.log_softmax(net(torch.tensor([ids])).logits[0], dim=-1)
    return logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()


def token_ids(folder: Path, line: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(line, add_special_tokens=False).ids


def test_score_matches_transformers_in_stream_and_sentence_context(folder, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    model = PretrainedLM(f"hf:{folder}")
    eot, nl = model.bos, model.newline
    scored = [ln for ln in LINES if ln.strip()]
    stream = [eot] + [i for ln in scored for i in token_ids(folder, ln) + [nl]]
    assert len(stream) <= 64  # one window: the direct pass sees what lmkit sees
    s = api.score(f"hf:{folder}", text).summary()
    assert s["nll_nats"] == pytest.approx(-direct_logprobs(folder, stream).sum(), rel=1e-5)
    assert s["tokens"] == len(stream) - 1 and s["oov"] == 0 and s["skipped_blank_lines"] == 1
    assert s["bytes"] == text.stat().st_size - 1 and s["words"] == sum(len(ln.split()) + 1 for ln in scored)
    assert s["bits_per_byte"] == pytest.approx(s["nll_nats"] / math.log(2) / s["bytes"], rel=1e-12)
    sentence = PretrainedLM(f"hf:{folder}", context="sentence")
    enc = encode(read_text(text), sentence.vocab, sentence.protocol)
    for lp, ln in zip(sentence.sequence_logprobs(enc.sequences), scored):
        np.testing.assert_allclose(lp, direct_logprobs(folder, [eot] + token_ids(folder, ln) + [nl]), rtol=1e-5)


def test_long_text_is_scored_once_per_token_in_sliding_windows(folder):
    model = PretrainedLM(f"hf:{folder}", window=16)
    ids = np.array([model.bos] + token_ids(folder, " ".join(LINES * 3)), dtype=np.int64)
    assert len(ids) > 40
    got = model.stream_logprobs(ids)
    assert got.shape == (len(ids) - 1,) and np.isfinite(got).all()
    np.testing.assert_allclose(got[:15], direct_logprobs(folder, ids[:16].tolist()), rtol=1e-5)  # first window
    later = direct_logprobs(folder, ids[16 - 8:24].tolist())  # the second window: 8 targets after 8 of context
    np.testing.assert_allclose(got[15:23], later[7:], rtol=1e-5)


def test_compare_text_ranks_runs_and_pretrained_models_by_bits_per_byte(folder, tiny_corpus, tmp_path):
    run = api.train(api.TrainRequest(model="ngram:kn2", corpus=tiny_corpus, output=tmp_path / "kn2", progress=False))
    text = tiny_corpus / "test.txt"
    rows = api.compare_text([run, f"hf:{folder}"], text)
    assert {r["kind"] for r in rows} == {"ngram", "pretrained"} and [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["bits_per_byte"] <= rows[1]["bits_per_byte"] and "test_ppl" not in rows[0]
    out = cli("compare", run, f"hf:{folder}", "--text", text, "--format", "json")
    assert out.exit_code == 0 and len(json.loads(out.stdout)) == 2
    one_error_line(cli("compare", run, f"hf:{folder}", "--text", text, "--bootstrap", "10"), 2, "--text")
    sentence = api.train(api.TrainRequest(model="ngram:kn2", corpus=tiny_corpus, output=tmp_path / "s",
                                          context="sentence", progress=False))
    with pytest.raises(IncomparableError, match="context"):
        api.compare_text([sentence, f"hf:{folder}"], text)  # the pretrained model reads it in stream context


def test_a_folder_that_is_not_a_model_is_one_error_line(tmp_path, tiny_corpus):
    one_error_line(cli("score", f"hf:{tmp_path}", tiny_corpus / "test.txt"), 1, "not a Hugging Face model folder")


def test_greedy_generation_follows_the_models_argmax(folder):
    """generate: each step is the model's most likely next token, its end-of-text token never chosen, its
    newline token ending the line as </s>."""
    out = api.generate(f"hf:{folder}", ["the king"], max_tokens=6)
    model = PretrainedLM(f"hf:{folder}")
    ids = [model.bos] + token_ids(folder, "the king")
    net = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).float().eval()
    expected = []
    with torch.no_grad():
        for _ in range(6):
            logits = net(torch.tensor([ids])).logits[0, -1]
            logits[model.bos] = -math.inf
            nxt = int(logits.argmax())
            if nxt == model.newline:
                break
            expected.append(nxt)
            ids.append(nxt)
    from tokenizers import Tokenizer

    text = Tokenizer.from_file(str(folder / "tokenizer.json")).decode(expected)
    assert out.outputs[0]["continuation"] == text and out.outputs[0]["text"] == "the king" + text
    rows = model.next_logprobs([[2, *(np.array(token_ids(folder, "the")) + 4)]])
    assert np.exp(rows).sum() == pytest.approx(1.0) and rows[0, :3].max() == -np.inf


def test_per_token_records_and_analyze(folder, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the king is dead\n", encoding="utf-8")
    out = cli("score", f"hf:{folder}", text, "--per-token", "--format", "json")
    rows = [json.loads(line) for line in out.stdout.splitlines()] if out.stdout.lstrip().startswith("{") else \
        json.loads(out.stdout)
    assert out.exit_code == 0 and rows[-1]["token"] == "</s>" and rows[0]["token"] == "the"


def test_analyze_buckets_a_pretrained_models_own_tokens(folder, tmp_path):
    """analyze hf:FOLDER --text T --train TR: every token's NLL is the model's (checked against transformers), each
    dimension's buckets partition the tokens, and context frequencies are counted in TR in the model's tokens."""
    text, train = tmp_path / "t.txt", tmp_path / "train.txt"
    text.write_text("the king is dead\nlong live the king\n", encoding="utf-8")
    train.write_text("the king is dead\nthe king\n", encoding="utf-8")
    out = cli("analyze", f"hf:{folder}", "--text", text, "--train", train, "--format", "json")
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    eot = transformers.AutoConfig.from_pretrained(folder).bos_token_id
    newline = token_ids(folder, "\n")
    ids = [eot, *token_ids(folder, "the king is dead"), *newline, *token_ids(folder, "long live the king"), *newline]
    expected = -direct_logprobs(folder, ids)
    (run,) = result["runs"]
    assert run["model"] == f"hf:{folder.name}" and run["kind"] == "pretrained" and run["tokens"] == len(expected)
    assert run["nll_nats"] == pytest.approx(expected.mean(), rel=1e-5)
    assert result["train"]["sha256"] and result["text"]["is_test_file"] is False
    for dim, buckets in result["by"].items():
        assert sum(b["tokens"] for b in buckets[:-1]) == len(expected), dim
    by_freq = {b["bucket"]: b["tokens"] for b in result["by"]["context-frequency"]}
    from lmkit.analyze import history_counts
    from lmkit.models.pretrained import PretrainedLM
    model = PretrainedLM(f"hf:{folder}")
    enc = encode(read_text(text), model.vocab, model.protocol)
    tr = encode(read_text(train), model.vocab, model.protocol)
    counts = history_counts(tr.sequences, enc.sequences, len(model.vocab), 3, "stream")
    assert by_freq["unseen"] == int((counts == 0).sum()) and by_freq["unseen"] < len(expected)
    assert by_freq["1"] + by_freq["2-9"] + by_freq["10+"] == int((counts > 0).sum()) > 0


def test_analyze_refuses_what_it_cannot_bucket_with_pretrained_models(folder, tiny_corpus, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the king is dead\n", encoding="utf-8")
    one_error_line(cli("analyze", f"hf:{folder}"), 2, "--text FILE")
    one_error_line(cli("analyze", f"hf:{folder}", "--text", text, "--by", "context-frequency"), 2, "--train FILE")
    run = tmp_path / "kn"
    assert cli("train", "--model", "ngram:kn3", "--corpus", tiny_corpus, "-o", run).exit_code == 0
    one_error_line(cli("analyze", run, f"hf:{folder}", "--text", text), 2, "compare --text")
    out = cli("analyze", f"hf:{folder}", "--text", text, "--format", "json")  # no --train: no frequencies
    assert out.exit_code == 0 and list(json.loads(out.stdout)["by"]) == ["length", "oov"]
    assert "no context-frequency buckets" in out.stderr
    other = tiny_gpt2(tmp_path / "other-gpt2", vocab_size=300)
    one_error_line(cli("analyze", f"hf:{folder}", f"hf:{other}", "--text", text), 1, "one tokenizer")


def test_a_hub_name_is_read_from_the_cache_offline_and_refused_in_one_line_when_absent(folder, tmp_path, monkeypatch):
    """hf:OWNER/NAME that is no local folder is a hub repository: read from the Hugging Face cache (here built by
    hand, offline) with the same scores as the folder; not cached and offline, one error line."""
    import shutil

    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    text = tmp_path / "t.txt"
    text.write_text("the king is dead\nlong live the king\n", encoding="utf-8")
    one_error_line(cli("score", "hf:nobody/no-such-model", text), 1, "could not be fetched")
    repo = tmp_path / "cache" / "models--lmkit-test--tiny-gpt2"
    revision = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    from_hub = json.loads(cli("score", "hf:lmkit-test/tiny-gpt2", text, "--format", "json").stdout)
    from_folder = json.loads(cli("score", f"hf:{folder}", text, "--format", "json").stdout)
    assert from_hub["model"] == "hf:tiny-gpt2" and from_hub["nll_nats"] == pytest.approx(from_folder["nll_nats"])


def test_pickled_weights_are_refused(folder, tmp_path):
    """Loading never unpickles: a folder whose weights are only a pickle (pytorch_model.bin) is one error line."""
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    weights = {k: v.clone() for k, v in transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    torch.save(weights, pickled / "pytorch_model.bin")
    text = tmp_path / "t.txt"
    text.write_text("the king\n", encoding="utf-8")
    one_error_line(cli("score", f"hf:{pickled}", text), 1, "cannot load the model")
