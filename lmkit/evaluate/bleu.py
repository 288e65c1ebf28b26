"""Continuation BLEU for a monolingual test file and translation BLEU for a parallel one (docs/protocol.md).

Every line with at least MIN_TOKENS tokens (under the model's protocol) is cut in half: the first
floor(n/2) tokens are the prompt, the rest is the reference. The model continues the prompt greedily
until `</s>` or twice the reference length, and sacrebleu scores all continuations against all
references in one corpus BLEU. References are the line's own tokens (not their vocabulary ids), so a
generated `<unk>` never matches anything. Tokens are joined with spaces (char level: without), as
the text they came from. sacrebleu is imported here, lazily: n-gram commands never load it.

Translation BLEU (a model trained with --task translate, a prefix LM over `source <sep> target`):
the prompt of each pair is its source ids and `<sep>`; the model decodes (greedy, or beam search)
until `</s>` or 2 x source tokens + 10, and the space-joined output tokens are scored against the
raw reference lines, untokenised, so sacrebleu's own 13a tokenisation applies to both sides as in
MT papers. A lower-casing protocol scores case-insensitively (sacrebleu's lowercase, `case:lc` in
the signature), since such a model cannot produce capitals."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.corpus import ParallelText, Text, encode
from ..data.tokenize import detokenize, tokenize
from ..errors import DataError, UsageError
from .generate import Decoding, generate

MIN_TOKENS = 4


@dataclass
class BleuResult:
    """Corpus BLEU plus what it was computed on (kept for inspection and tests)."""

    score: float
    signature: str
    lines: int  # lines scored (>= MIN_TOKENS tokens)
    short_lines: int  # non-blank lines left out for having fewer tokens
    precisions: list[float]
    brevity_penalty: float
    hyp_len: int
    ref_len: int
    hypotheses: list[str] = field(repr=False)
    references: list[str] = field(repr=False)
    prompts: list[str] = field(repr=False)
    line_numbers: list[int] = field(repr=False)

    def summary(self) -> dict:
        return {"bleu": self.score, "signature": self.signature, "lines": self.lines,
                "short_lines": self.short_lines, "precisions": self.precisions,
                "brevity_penalty": self.brevity_penalty, "hyp_len": self.hyp_len, "ref_len": self.ref_len}


def continuation_bleu(model, text: Text) -> BleuResult:
    """Greedy continuation BLEU of `model` on `text`, under the model's protocol and vocabulary."""
    protocol, vocab = model.protocol, model.vocab
    enc = encode(text, vocab, protocol)
    prompts, prompt_texts, references, line_numbers = [], [], [], []
    for ids, ln in zip(enc.sequences, enc.line_numbers):
        n = len(ids)
        if n < MIN_TOKENS:
            continue
        tokens = tokenize(text.lines[ln - 1], protocol, vocab)  # the same split encode() made
        half = n // 2
        prompts.append(ids[:half])
        prompt_texts.append(detokenize(tokens[:half], protocol.level, vocab))
        references.append(tokens[half:])
        line_numbers.append(ln)
    if not prompts:
        raise DataError(f"{text.name}: no line has at least {MIN_TOKENS} tokens to cut in half for continuation BLEU")
    limits = [2 * len(ref) for ref in references]  # until </s> or twice the reference length
    outputs = generate(model, prompts, Decoding(strategy="greedy", max_tokens=max(limits)), limits=limits)
    hypotheses = [detokenize(vocab.decode(out[0].ids), protocol.level, vocab) for out in outputs]
    refs = [detokenize(ref, protocol.level, vocab) for ref in references]
    score, signature = corpus_bleu(hypotheses, refs)
    return BleuResult(
        score=float(score.score), signature=signature, lines=len(prompts),
        short_lines=len(enc.sequences) - len(prompts), precisions=[float(p) for p in score.precisions],
        brevity_penalty=float(score.bp), hyp_len=int(score.sys_len), ref_len=int(score.ref_len),
        hypotheses=hypotheses, references=refs, prompts=prompt_texts, line_numbers=line_numbers,
    )


def translation_limit(source_tokens: int) -> int:
    """Most output tokens for a source of this length (</s> included): 2 x source + 10."""
    return 2 * source_tokens + 10


def translation_bleu(model, pair: ParallelText, decoding: Decoding | None = None) -> BleuResult:
    """Corpus BLEU of `model`'s translations of `pair.source` against the raw lines of `pair.target`.

    `decoding` may choose beam search; its max_tokens is replaced by the per-pair length limit.
    Pairs with a blank side are skipped (as in scoring) and counted in `short_lines`."""
    protocol, vocab = model.protocol, model.vocab
    if protocol.task != "translate" or not vocab.has_sep:
        raise UsageError(f"{model.label} was not trained with --task translate: translation BLEU needs a model "
                         "of `source <sep> target`; use continuation BLEU on a monolingual file instead")
    enc = encode(pair, vocab, protocol)
    if not enc.sequences:
        raise DataError(f"{pair.name}: no pair with a non-blank source and target to translate")
    prompts = [seq[:first] for seq, first in zip(enc.sequences, enc.score_from)]  # source ids, then <sep>
    limits = [translation_limit(len(p) - 1) for p in prompts]
    d = decoding or Decoding()
    if d.strategy == "sample":
        raise UsageError("translation BLEU decodes with greedy or beam search, not sampling")
    d = Decoding(strategy=d.strategy, max_tokens=max(limits), beam=d.beam, length_penalty=d.length_penalty,
                 ban_unk=d.ban_unk)
    outputs = generate(model, prompts, d, limits=limits)
    hypotheses = [detokenize(vocab.decode(out[0].ids), protocol.level, vocab) for out in outputs]
    references = [pair.target.lines[ln - 1] for ln in enc.line_numbers]
    sources = [pair.source.lines[ln - 1] for ln in enc.line_numbers]
    score, signature = corpus_bleu(hypotheses, references, lowercase=protocol.lowercase)
    return BleuResult(
        score=float(score.score), signature=signature, lines=len(prompts), short_lines=enc.skipped_blank_lines,
        precisions=[float(p) for p in score.precisions], brevity_penalty=float(score.bp),
        hyp_len=int(score.sys_len), ref_len=int(score.ref_len), hypotheses=hypotheses, references=references,
        prompts=sources, line_numbers=list(enc.line_numbers),
    )


def corpus_bleu(hypotheses: list[str], references: list[str], lowercase: bool = False):
    """sacrebleu's corpus BLEU with its default settings (as `sacrebleu.corpus_bleu`) and signature.

    force=True only silences sacrebleu's "looks tokenized" warning (our text is space-joined tokens by
    the protocol's definition); it changes neither the score nor the signature."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(force=True, lowercase=lowercase)
    score = metric.corpus_score(hypotheses, [references])
    return score, str(metric.get_signature())
