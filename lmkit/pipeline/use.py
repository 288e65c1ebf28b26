"""Using a trained model: load (a run folder or any ARPA file), score a text, generate, BLEU, export ARPA."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from ..data.corpus import (ParallelText, Text, encode, read_pair, read_recorded, read_text)
from ..data.subword import SUBWORD_LEVELS
from ..models.pretrained import PretrainedLM, is_pretrained
from ..data.vocab import SEP
from ..errors import ModelError, UsageError, only_for
from ..evaluate.perplexity import Score, score_encoded
from ..runs import RUN_FILE, RunRecord, load_run, read_record, write_record
from ..validate import (check_device_name, check_output_file)
from ..logs import Log, quiet
from .prepare import cached_split


def load_model(path: str | Path, device: str = "cpu"):
    """(model, record or None): a run folder, an ARPA file from any tool, or hf:FOLDER (a pretrained model)."""
    from ..models.ngram.arpa import is_arpa_path, load_arpa

    check_device_name(device)  # also for models that never use it (n-grams), so a typo is never ignored
    if is_pretrained(path):
        from ..device import resolve_device

        return PretrainedLM(str(path), device=resolve_device(device)), None
    p = Path(path)
    if p.is_file() and is_arpa_path(p):
        return load_arpa(p), None
    return load_run(p, device=device)


@dataclass
class ScoreResult:
    score: Score
    model: str
    protocol: dict
    file: str
    sha256: str
    words: list[list[str]] | None = None
    saved: Path | None = None  # test_scores.npz written by score(..., save=True)
    run: str | None = None  # the run folder or ARPA file as given
    kind: str | None = None  # the model's family (ngram, arpa, lstm, pretrained, ...)
    vocab_size: int | None = None  # ids of its vocabulary (a pretrained model: of its tokenizer)
    parameters: int | None = None

    def summary(self) -> dict:
        return {**self.score.summary(), "model": self.model, "protocol": self.protocol,
                "file": self.file, "sha256": self.sha256}


def _eval_text(model, record: RunRecord | None, model_path, text_path, src, tgt) -> Text | ParallelText:
    """The text a model is evaluated on: a file for an LM; for a translation model a pair given as
    src/tgt files, by default the run's own test pair (verified against its recorded sha256)."""
    if model.protocol.task != "translate":
        if src is not None or tgt is not None:
            raise UsageError(f"--src/--tgt give a translation pair, but {model.label} is a language model (task lm); "
                             "give one FILE")
        if text_path is None:
            raise UsageError("give the FILE to evaluate ('-' reads stdin)")
        return read_text(text_path)
    if text_path is not None:
        raise UsageError(f"{model.label} translates (task translate): give a pair with --src FILE --tgt FILE, "
                         "or nothing for the run's test pair")
    if src is None and tgt is None:
        test = (record.data if record is not None else {}).get("test") or {}
        if "source" not in test:
            raise UsageError("this run has no test pair; give one with --src FILE --tgt FILE")
        return read_recorded(test, model_path, "test", "give a pair with --src FILE --tgt FILE")
    elif src is None or tgt is None:
        raise UsageError("give both --src FILE and --tgt FILE")
    return read_pair(src, tgt)


def score(model_path: str | Path, text_path: str | Path | None = None, *, src: str | Path | None = None,
          tgt: str | Path | None = None, device: str = "auto", keep_words: bool = False,
          stride: int | None = None, save: bool = False, log: Log = quiet) -> ScoreResult:
    """Score a text file (or '-') with a run folder or ARPA file under the model's stored protocol.

    A file with a cached token file (`lmkit encode`) is scored from it, the same ids without reading text.
    A translation run scores a pair (src/tgt files, default: its test pair), target side only.
    `stride` (bounded-context neural models) moves the sliding window; it is reported with the score.
    `save`: the text is the run's own test file; store its per-sequence scores in the run folder for
    compare --bootstrap (runs trained before lmkit stored them), if they reproduce run.json's test score.
    `device`: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps; n-grams ignore it."""
    model, record = load_model(model_path, device=device)
    return _score_loaded(model, record, model_path, text_path, None, src=src, tgt=tgt, keep_words=keep_words,
                         stride=stride, save=save, log=log)


def score_many(model_paths: Sequence[str | Path], text_paths: Sequence[str | Path] = (), *,
               src: str | Path | None = None, tgt: str | Path | None = None, device: str = "auto",
               keep_words: bool = False, stride: int | None = None, save: bool = False,
               log: Log = quiet) -> list[ScoreResult]:
    """One ScoreResult per (model, text) pair, models outer, texts inner, in the order given.

    Each model is loaded once; stdin ('-', at most once) is read once and scored by every model. No texts:
    each model's own evaluation (a translation run's test pair, or src/tgt)."""
    if not model_paths:
        raise UsageError("give at least one run folder or ARPA file to score")
    texts = list(text_paths) or [None]
    if sum(str(t) == "-" for t in texts) > 1:
        raise UsageError("'-' (stdin) is given twice; stdin can be read once")
    stdin = read_text("-") if "-" in map(str, texts) else None
    results = []
    for model_path in model_paths:
        model, record = load_model(model_path, device=device)
        for text_path in texts:
            given = stdin if text_path is not None and str(text_path) == "-" else None
            results.append(_score_loaded(model, record, model_path, text_path, given, src=src, tgt=tgt,
                                         keep_words=keep_words, stride=stride, save=save, log=log))
    return results


def split_models_texts(paths: Sequence[str], texts: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """`lmkit score PATH... [--text FILE...]`: (models, texts). The first PATH is a model; a later one is a
    model when it is a run folder (it holds run.json) or an ARPA file, else a text (so `--text a.txt b.txt`
    also reads b.txt, and any other folder is refused as a text: "is a directory")."""
    from ..models.ngram.arpa import is_arpa_path

    models, more = list(paths[:1]), []
    for p in paths[1:]:
        is_model = p != "-" and ((Path(p) / RUN_FILE).is_file() or is_arpa_path(p) or is_pretrained(p))
        (models if is_model else more).append(p)
    return models, [*texts, *more]


def _score_loaded(model, record: RunRecord | None, model_path, text_path, text: Text | None, *, src, tgt,
                  keep_words: bool, stride: int | None, save: bool, log: Log) -> ScoreResult:
    """score() of a model already loaded; `text`: the text already read (stdin shared by several models)."""
    pretrained = isinstance(model, PretrainedLM)
    if save and record is None:
        raise UsageError(f"--save stores per-sequence scores in a run folder; {model_path} is "
                         f"{'a pretrained model' if pretrained else 'an ARPA file'}")
    if save and stride is not None:
        raise UsageError("--save stores the run's own test score; --stride would change it")
    if stride is not None:
        if stride < 1:
            raise UsageError(f"--stride must be at least 1, got {stride}")
        if getattr(model, "max_len", None) is None:
            raise UsageError(f"--stride applies to models with a bounded context (transformer), not {model.label}")
        model.stride = stride
    enc = None
    if text is None and src is None and tgt is None and not keep_words and not pretrained:
        enc = cached_split(text_path, model.vocab, model.protocol, log)  # per-token records need the words
    if text is None or model.protocol.task == "translate" or src is not None or tgt is not None:
        text = enc or _eval_text(model, record, model_path, text_path, src, tgt)  # refuses what does not fit
    if save and (record.data.get("test") or {}).get("sha256") != text.sha256:
        recorded = (record.data.get("test") or {}).get("path") or "none recorded"
        raise UsageError(f"--save needs the test file this run was measured on ({recorded}); {text.name} "
                         "is not that file (sha256 differs)")
    enc = enc or encode(text, model.vocab, model.protocol)
    words = None
    if keep_words:
        from ..data.tokenize import tokenize

        lines = text.target.lines if isinstance(text, ParallelText) else text.lines  # the scored side
        words = [tokenize(lines[ln - 1], model.protocol, model.vocab) for ln in enc.line_numbers]
    result = score_encoded(model, enc)
    label = model.label if stride is None else f"{model.label} (stride {stride})"
    saved = _save_rescored(Path(model_path), record, result, text.sha256) if save else None
    return ScoreResult(result, label, model.protocol.to_dict(), text.name, text.sha256, words, saved,
                       str(model_path), model.kind, len(model.vocab), model.num_parameters())


def _save_rescored(run_dir: Path, record: RunRecord, result: Score, sha256: str) -> Path:
    """test_scores.npz for an older run, written only when the rescore reproduces its recorded test score."""
    from ..evaluate.per_sequence import SequenceScores, check_against_record, save_test_scores

    scores = SequenceScores.from_score(result, sha256)
    try:
        check_against_record(scores, record)
    except ModelError as exc:
        raise ModelError(f"{run_dir}: this score does not reproduce the run's recorded test score "
                         f"({exc.message}); nothing saved") from None
    return save_test_scores(run_dir, scores)


def export_arpa(run_path: str | Path, output: str | Path, out: BinaryIO | None = None, log: Log = quiet) -> Path:
    """Write a run's n-gram model as an ARPA file (plain or .gz) readable by KenLM and SRILM.

    `output` '-' writes plain ARPA text to `out` (default: stdout): the file is completed in a temporary
    folder first and then copied, so a failure never leaves half a model in a pipe. Every ARPA reader scores
    line by line from <s>, so a stream-context run is exported with a warning: its file scores differently."""
    from ..models.ngram.arpa import write_arpa

    to_stdout = str(output) == "-"
    if not to_stdout:
        check_output_file(output, inputs=[run_path], run_folders=[run_path] if Path(run_path).is_dir() else [])
    model, record = load_model(run_path)
    if model.kind not in ("ngram", "arpa"):
        raise UsageError(f"{run_path}: only n-gram models export to ARPA (this is a {model.kind} model)")
    if record is not None and record.protocol.get("context") == "stream":
        log(f"warning: {run_path} was trained in stream context, but ARPA readers (KenLM, SRILM, lmkit score "
            "FILE.arpa) score each line on its own from <s>, so the file will not reproduce the run's perplexity; "
            "train with --context sentence for an ARPA model")
    if model.protocol.level in SUBWORD_LEVELS:
        log(f"warning: {run_path} is a {model.protocol.level}-level model: its ARPA words are byte-level pieces "
            "(Ġ marks a leading space), so text must be cut into the same pieces (its vocab.json's tokenizer) "
            "before an ARPA reader scores it; lmkit score reads ARPA text as words")
    if not to_stdout:
        write_arpa(model, output)
        return Path(output)
    with tempfile.TemporaryDirectory(prefix="lmkit-arpa-") as tmp:
        path = Path(tmp) / "model.arpa"
        write_arpa(model, path)
        copy_to(path, out)
    return Path(output)


def copy_to(path: Path, out: BinaryIO | None = None) -> None:
    """A finished file's bytes onto `out` (default: stdout), flushed."""
    import shutil
    import sys

    out = out or sys.stdout.buffer
    with open(path, "rb") as fh:
        shutil.copyfileobj(fh, out, 1 << 20)
    out.flush()


@dataclass
class GenerateResult:
    model: str
    protocol: dict
    decoding: dict
    outputs: list[dict]  # one per (prompt, sample): prompt, sample, continuation, text, tokens, logprob, finished


def _join_prompt(prompt: str, continuation: str, level: str) -> str:
    if level != "word" or not prompt.strip() or not continuation:  # char and subword text carries its spaces
        return prompt + continuation
    return f"{prompt.rstrip()} {continuation}"


def generate(model_path: str | Path, prompts: list[str] | str | None = None, *,
             prompt_file: str | Path | None = None, max_tokens: int = 40, strategy: str | None = None,
             temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
             beam: int | None = None, length_penalty: float | None = None, seed: int | None = None,
             ban_unk: bool = False, num: int = 1, device: str = "cpu", log: Log = quiet) -> GenerateResult:
    """Continue prompts (strings, and/or one per line of `prompt_file`, '-' = stdin) with a model.

    Prompts are tokenised under the model's protocol; no prompt at all means one unconditional
    generation from <s>. Without a strategy, a sampling option (temperature, top_k, top_p) means
    `sample`, a beam option (beam, length_penalty) `beam`, else `greedy`; an option of another strategy
    than the one chosen is refused. Options are checked before the model is loaded (see evaluate.generate)."""
    from ..data.tokenize import detokenize, tokenize
    from ..evaluate.generate import Decoding
    from ..evaluate.generate import generate as decode

    beam_options = [flag for flag, v in (("--beam", beam), ("--length-penalty", length_penalty)) if v is not None]
    if strategy is None:
        strategy = ("sample" if any(v is not None for v in (temperature, top_k, top_p))
                    else "beam" if beam_options else "greedy")
    if beam_options and strategy != "beam":
        raise UsageError(only_for(list(beam_options), "--strategy beam"))
    temperature = 1.0 if temperature is None else temperature
    decoding = Decoding(strategy=strategy, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, beam=4 if beam is None else beam,
                        length_penalty=0.0 if length_penalty is None else length_penalty, ban_unk=ban_unk,
                        num=num, seed=seed)
    texts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if prompt_file is not None:
        texts += read_text(prompt_file).lines
    texts = texts or [""]
    model, _record = load_model(model_path, device=device)
    translate = model.protocol.task == "translate"  # a prompt is a source sentence: <sep> follows it
    ids, reserved = [], 0
    for text in texts:
        encoded, n = model.vocab.encode(tokenize(text, model.protocol, model.vocab))
        ids.append([*encoded.tolist(), SEP] if translate else encoded)
        reserved += n
    if reserved:
        log(f"warning: {reserved} literal <s>/</s>/<pad> tokens in the prompts read as <unk>")
    outputs = []
    for text, outs in zip(texts, decode(model, ids, decoding)):
        for j, out in enumerate(outs):
            continuation = detokenize(model.vocab.decode(out.ids), model.protocol.level, model.vocab)
            outputs.append({"prompt": text, "sample": j, "continuation": continuation,
                            "text": continuation if translate else _join_prompt(text, continuation,
                                                                                 model.protocol.level),
                            "tokens": len(out.ids), "logprob": out.logprob, "finished": out.finished})
    return GenerateResult(model.label, model.protocol.to_dict(), asdict(decoding), outputs)


@dataclass
class BleuReport:
    result: Any  # evaluate.bleu.BleuResult (hypotheses, references, prompts kept there)
    model: str
    protocol: dict
    file: str
    sha256: str

    def summary(self) -> dict:
        return {**self.result.summary(), "model": self.model, "protocol": self.protocol,
                "file": self.file, "sha256": self.sha256}


def bleu(model_path: str | Path, text_path: str | Path | None = None, *, src: str | Path | None = None,
         tgt: str | Path | None = None, beam: int | None = None, length_penalty: float = 0.0,
         device: str = "cpu") -> BleuReport:
    """BLEU of a model (docs/protocol.md, evaluate.bleu): continuation BLEU on a monolingual text file or '-';
    for a translation run, translation BLEU on a pair (src/tgt files; default: the run's test pair),
    greedy unless `beam` gives a beam width."""
    from ..evaluate.generate import Decoding

    decoding = Decoding(strategy="greedy") if beam is None else Decoding(strategy="beam", beam=beam,
                                                                         length_penalty=length_penalty)
    model, record = load_model(model_path, device=device)
    return _bleu_report(model, _eval_text(model, record, model_path, text_path, src, tgt), decoding, beam)


def _bleu_report(model, text: Text | ParallelText, decoding, beam: int | None) -> BleuReport:
    """BLEU of a loaded model on a text already read: translation BLEU for a pair, else continuation BLEU."""
    from ..evaluate.bleu import continuation_bleu, translation_bleu

    if isinstance(text, ParallelText):
        result = translation_bleu(model, text, decoding)
    else:
        if beam is not None:
            raise UsageError("--beam applies to translation BLEU; continuation BLEU is greedy by definition")
        result = continuation_bleu(model, text)
    return BleuReport(result, model.label, model.protocol.to_dict(), text.name, text.sha256)


def record_bleu(run: str | Path, *, device: str = "cpu", beam: int | None = None, length_penalty: float = 0.0,
                log: Log = quiet) -> dict:
    """BLEU of a run on the test file it was scored on, stored in its run.json so it is decoded once.

    Greedy (metrics['bleu']): continuation BLEU for a monolingual corpus (translation runs store theirs at
    training). With `beam` (translation runs only): beam-search BLEU in metrics['bleu_beam'], with its width
    and length penalty; a stored value for another width or penalty is decoded again and replaced.
    Refused when the test file is gone or no longer the file the run was measured on."""
    run = Path(run)
    record = read_record(run)
    key = "bleu" if beam is None else "bleu_beam"
    stored = record.metrics.get(key)
    if stored and (beam is None or (stored.get("beam") == beam and stored.get("length_penalty") == length_penalty)):
        return stored
    from ..evaluate.generate import Decoding

    text = read_recorded(record.data.get("test"), run, "test", "BLEU not added")
    if beam is not None and not isinstance(text, ParallelText):
        raise UsageError(f"{run}: beam-search BLEU is for translation runs; continuation BLEU is greedy by "
                         "definition")
    start = time.perf_counter()
    model, _ = load_model(run, device=device)
    decoding = Decoding(strategy="greedy") if beam is None else Decoding(strategy="beam", beam=beam,
                                                                         length_penalty=length_penalty)
    result = _bleu_report(model, text, decoding, beam).result
    entry = {"score": result.score, "signature": result.signature, "decoding": decoding.strategy,
             "lines": result.lines}
    if beam is not None:
        entry.update(beam=beam, length_penalty=length_penalty)
    record.metrics[key] = entry
    write_record(run, record)
    what = "continuation BLEU" if beam is None else f"BLEU, beam {beam}"
    log(f"{run}: {what} {result.score:.2f} ({result.lines} lines, {time.perf_counter() - start:.0f} s)")
    return entry
