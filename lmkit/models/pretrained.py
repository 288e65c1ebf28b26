"""Pretrained causal language models from a local Hugging Face folder, scored as lmkit models: `hf:FOLDER`.

The folder holds what `save_pretrained` writes: config.json, the weights (safetensors only: pickled weights are
refused) and tokenizer.json (a fast tokenizer). A name that is no local folder but a hub repository id
(`hf:gpt2`, `hf:OWNER/NAME`) is fetched into the Hugging Face cache when online, or read from that cache; nothing
else is ever downloaded. `transformers` is an optional extra (`pip install 'lmkit[hf]'`), imported only when such
a model is loaded.

The protocol is lmkit's: every scored line is one sequence and its end is scored, `</s>` standing for the
newline, which such a model predicts as its newline token; the text is lmkit's default stream context (one
beginning-of-text token, context carried across lines) or sentence context (each line from it). Long text is
scored with a sliding window: the model's context length, moved by half of it, so that every token is scored
once with at least half a window of context. A pretrained model's tokens are its own, so only the
tokenisation-independent figures (bits per byte, word perplexity) compare it with other runs.

Ids: lmkit keeps ids 0-3 for <pad> <unk> <s> </s>, so the model's token i is lmkit id i + OFFSET; </s> (3)
stands for the newline token. Text is encoded by data/corpus.encode like any subword text: PretrainedVocab
gives it the model's tokenizer and the id shift.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..data.subword import Subword
from ..data.vocab import BOS, EOS
from ..errors import ModelError, UsageError
from ..protocol import Protocol

PREFIX = "hf:"
OFFSET = 4  # lmkit's reserved ids come first


def is_pretrained(name: str | Path) -> bool:
    return str(name).startswith(PREFIX)


def pretrained_label(name: str | Path) -> str:
    """How a pretrained model is named in tables: hf: and its folder's (or hub repository's) name."""
    return f"{PREFIX}{_given(name).rstrip('/').split('/')[-1]}"


def _given(name: str | Path) -> str:
    return str(name)[len(PREFIX):] if is_pretrained(name) else str(name)


# a hub repository id: NAME or OWNER/NAME, letters, digits and -_. only
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "*.safetensors", "*.safetensors.index.json"]  # never pickled weights


def model_folder(name: str | Path) -> Path:
    """The local folder of hf:NAME: a folder on disk, else a hub repository id fetched into the Hugging Face cache
    (only when online, or already cached; safetensors weights only)."""
    given = _given(name)
    folder = Path(given).expanduser()
    if folder.is_dir() or not _HUB_ID.match(given) or given in (".", ".."):
        return folder
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UsageError("hf: models need the optional extra: pip install 'lmkit[hf]' (transformers)") from None
    try:
        return Path(snapshot_download(given, allow_patterns=_HUB_FILES))
    except Exception as exc:  # the hub client raises many types: offline, unknown repository, gated, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelError(f"{name}: no such local folder, and the Hugging Face hub repository {given!r} could not "
                         f"be fetched ({first})") from None


def tokenizer_file(name: str | Path) -> Path:
    """A pretrained model's tokenizer.json; a folder without one is refused (a fast tokenizer is needed)."""
    path = model_folder(name) / "tokenizer.json"
    if not path.is_file():
        raise ModelError(f"{name}: not a Hugging Face model folder (tokenizer.json missing; a local folder written "
                         "by save_pretrained, with a fast tokenizer, is needed)")
    return path


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("hf: models need the optional extra: pip install 'lmkit[hf]' (transformers)") from None
    transformers.utils.logging.set_verbosity_error()  # stderr is lmkit's: its own progress, notes and errors
    transformers.utils.logging.disable_progress_bar()
    return transformers


class PretrainedLM:
    """A read-only causal LM scored through lmkit's one scoring path (evaluate/perplexity.score_encoded)."""

    kind = "pretrained"
    normalised = True

    def __init__(self, name: str, context: str = "stream", device: str = "cpu", window: int | None = None):
        folder = model_folder(name)
        for needed in ("config.json", "tokenizer.json"):
            if not (folder / needed).is_file():
                raise ModelError(f"{name}: not a Hugging Face model folder ({needed} missing; a local folder "
                                 "written by save_pretrained, with a fast tokenizer, is needed)")
        transformers = _transformers()
        try:  # safetensors only: loading never unpickles
            self.net = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                                         use_safetensors=True).float()
        except (OSError, ValueError) as exc:
            raise ModelError(f"{name}: cannot load the model ({str(exc).splitlines()[0][:160]})") from None
        self.net.eval().to(device)
        self.device = device
        self.tokens = Subword((folder / "tokenizer.json").read_text(encoding="utf-8"))
        config = self.net.config
        self.bos = config.bos_token_id if config.bos_token_id is not None else config.eos_token_id
        if self.bos is None:
            raise ModelError(f"{name}: the model config names no beginning- or end-of-text token to start from")
        newline = self.tokens.tokenizer.encode("\n", add_special_tokens=False).ids
        if len(newline) != 1:
            raise ModelError(f"{name}: its tokenizer has no single newline token, which </s> stands for")
        self.newline = newline[0]
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024
        self.window = int(window or limit)
        if self.window < 2:
            raise UsageError(f"{name}: a sliding window of {self.window} tokens cannot score anything")
        kind = (getattr(self.tokens.tokenizer.model, "__class__", type(None)).__name__ or "").lower()
        level = "unigram" if "unigram" in kind else "bpe"
        self.protocol = Protocol(level=level, context=context, tokenizer="pretrained")
        self.label = pretrained_label(name)
        self.name = str(name)
        self.vocab = PretrainedVocab(self.tokens, self.newline)

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))

    # -- scoring -------------------------------------------------------------------------------------------
    def sequence_logprobs(self, sequences: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """ln P of every token of every sequence and of its end (the newline token)."""
        pieces = [np.append(np.asarray(s, dtype=np.int64) - OFFSET, self.newline) for s in sequences]
        if self.protocol.context == "stream":
            stream = np.concatenate([[self.bos], *pieces]) if pieces else np.array([self.bos])
            scored = self.stream_logprobs(stream)
            cut = np.cumsum([len(p) for p in pieces])[:-1]
            return list(np.split(scored, cut)) if pieces else []
        return [self.stream_logprobs(np.concatenate([[self.bos], p])) for p in pieces]

    def stream_logprobs(self, ids: np.ndarray) -> np.ndarray:
        """ln P(ids[t] | ids[:t]) for t >= 1, in windows of `window` tokens moved by half a window: every target
        scored once, with at least half a window of context after the first window."""
        import torch

        n = len(ids)
        out = np.empty(max(n - 1, 0))
        step = max(1, self.window // 2)
        done = 1  # the next target position
        with torch.no_grad():
            while done < n:
                end = min(n, self.window if done == 1 else done + step)
                start = max(0, end - self.window)
                chunk = torch.as_tensor(ids[start:end], device=self.device)[None]
                logp = torch.log_softmax(self.net(chunk).logits[0].float(), dim=-1)
                targets = chunk[0, done - start:]
                rows = logp[done - start - 1:end - start - 1]
                out[done - 1:end - 1] = rows.gather(1, targets[:, None])[:, 0].cpu().numpy()
                done = end
        return out

    def next_logprobs(self, contexts) -> np.ndarray:
        """(len(contexts), len(vocab)) ln P of the next lmkit id after each context (lmkit ids, from <s>): the
        newline token's mass is </s>'s, the model's own end-of-text token is not a continuation (its mass is
        spread over the rest by renormalising), the reserved ids get none."""
        import torch

        rows = np.full((len(contexts), len(self.vocab)), -np.inf)
        with torch.no_grad():
            for r, context in enumerate(contexts):
                ids = [self.bos if i == BOS else self.newline if i == EOS else int(i) - OFFSET for i in context]
                chunk = torch.as_tensor(ids[-self.window:], device=self.device)[None]
                logp = torch.log_softmax(self.net(chunk).logits[0, -1].float(), dim=-1).cpu().numpy()
                rows[r, OFFSET:OFFSET + len(logp)] = logp
                rows[r, EOS] = logp[self.newline]
                rows[r, OFFSET + self.newline] = -np.inf
                rows[r, OFFSET + self.bos] = -np.inf
                rows[r] -= np.logaddexp.reduce(rows[r])
        return rows


class PretrainedVocab:
    """What generation needs of a vocabulary, for a pretrained model's own tokenizer: lmkit id = its id + OFFSET,
    </s> (EOS) for its newline token."""

    def __init__(self, tokens: Subword, newline: int):
        self.subword = tokens
        self.newline = newline
        self.size = OFFSET + tokens.tokenizer.get_vocab_size()

    def __len__(self) -> int:
        return self.size

    def encode_found(self, found: np.ndarray) -> tuple[np.ndarray, int]:
        """lmkit ids of the tokenizer's ids (data/corpus.encode calls this, as for any subword vocabulary): the
        text is encoded by the one encoder, none of its tokens is reserved."""
        return (np.asarray(found, dtype=np.int64) + OFFSET).astype(np.int32), 0

    def encode(self, pieces: list[str]) -> tuple[np.ndarray, int]:
        """lmkit ids of the tokenizer's pieces (no piece is unknown: they come from the same tokenizer)."""
        ids = [self.subword.tokenizer.token_to_id(p) for p in pieces]
        return np.array([EOS if i == self.newline else i + OFFSET for i in ids], dtype=np.int64), 0

    def decode(self, ids) -> list[str]:
        return [self.subword.tokenizer.id_to_token(self.newline if i == EOS else int(i) - OFFSET) for i in ids]
