"""lmkit corpus list|download|split|path: the registry, downloads from a local HTTP server (no internet),
safe unpacking, the cache, and deterministic splitting. Every failure must leave no published corpus
folder and reach the user as one `error:` line."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from clitools import cli, one_error_line
from conftest import shared_path
from http_fixture import FileServer

from lmkit import api
from lmkit.data.corpus import is_parallel, locate_pairs
from lmkit.datasets import registry, store
from lmkit.datasets.download import MAX_DOWNLOAD_BYTES, download_bound, fetch, part_path
from lmkit.datasets.registry import Corpus, Output, RemoteFile, SplitRule
from lmkit.datasets.split import contiguous_bounds, parse_ratios, split_file
from lmkit.datasets.unpack import UnsafeArchive, cap_for, extract
from lmkit.errors import DataError, UsageError

TRAIN = "".join(f"the cat number {i} sat on the mat\n" for i in range(300))
VALID = "the dog sat on the log\na cat sat\n"
TEST = "the cat sat on the log\nthe bird sat\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def published(root: Path) -> list[str]:
    """What a failed download left in the corpora cache besides the resumable downloads folder."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.name != store.DOWNLOADS and not p.name.endswith(".lock"))


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


ZIP_BODY = make_zip({"tiny/wiki.train.tokens": TRAIN.encode(), "tiny/wiki.valid.tokens": VALID.encode(),
                     "tiny/wiki.test.tokens": TEST.encode(), "tiny/README": b"not wanted\n"})


def zip_corpus(name: str = "tiny-zip", body: bytes = ZIP_BODY, sha256: str | None = "auto",
               unpacked: int | None = 20_000) -> Corpus:
    """A WikiText-like entry: one zip whose members map to train/valid/test.txt."""
    return Corpus(
        name=name, description="test corpus", licence="test", source="generated",
        files=(RemoteFile(name=f"{name}.zip", urls=(f"https://upstream.invalid/{name}.zip",),
                          members={f"tiny/wiki.{s}.tokens": Output(f"{s}.txt") for s in ("train", "valid", "test")},
                          size=len(body), sha256=sha(body) if sha256 == "auto" else sha256, archive="zip",
                          unpacked_size=unpacked),))


@pytest.fixture
def server():
    srv = FileServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def mirror(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> FileServer:
    """Every corpus download goes to the local server: LMKIT_CORPUS_MIRROR=<server>/m."""
    monkeypatch.setenv("LMKIT_CORPUS_MIRROR", server.url + "/m")
    monkeypatch.delenv("LMKIT_OFFLINE", raising=False)
    return server


def register(monkeypatch: pytest.MonkeyPatch, corpus: Corpus) -> Corpus:
    monkeypatch.setitem(registry.CORPORA, corpus.name, corpus)
    return corpus


# -- the registry --------------------------------------------------------------------------------------------
def test_every_registry_entry_is_well_formed():
    assert len(registry.CORPORA) >= 5
    for corpus in registry.CORPORA.values():
        registry.check(corpus)
        assert corpus.licence and corpus.source and corpus.description
        for f in corpus.files:
            assert all(u.startswith("https://") for u in f.urls)
    assert registry.CORPORA["ptb"].verified == "sha256"
    assert registry.CORPORA["multi30k"].verified == "content"  # gz bytes unknown, gunzipped bytes known
    with pytest.raises(UsageError, match="unknown corpus 'nope'.*ptb"):
        registry.get("nope")


def test_manifest_hashes_match_the_shared_copies():
    """The sha256/sizes in the manifest are those of the upstream bytes kept in ../shared/corpora."""
    ptb = shared_path("corpora", "ptb")
    for f in registry.PTB.files:
        (out,) = f.members.values()
        data = (ptb / out.name).read_bytes()
        assert (len(data), sha(data)) == (f.size, f.sha256) == (out.size, out.sha256)
    ts = shared_path("corpora", "tinyshakespeare")
    whole = b"".join((ts / f"{s}.txt").read_bytes() for s in ("train", "valid", "test"))
    (f,) = registry.TINY_SHAKESPEARE.files
    assert (len(whole), sha(whole)) == (f.size, f.sha256)
    m30k = shared_path("corpora", "multi30k")
    for f in registry.MULTI30K.files:
        (out,) = f.members.values()
        data = (m30k / out.name).read_bytes()
        assert (len(data), sha(data)) == (out.size, out.sha256)


# -- download.fetch -------------------------------------------------------------------------------------------
def test_fetch_verifies_and_publishes(server: FileServer, tmp_path: Path):
    body = b"x" * 200_000
    url = server.serve("/f.bin", body)
    got = fetch([url], tmp_path / "f.bin", size=len(body), sha256=sha(body))
    assert got.verified and got.sha256 == sha(body) and (tmp_path / "f.bin").read_bytes() == body
    assert not part_path(tmp_path / "f.bin").exists()
    again = fetch([url], tmp_path / "f.bin", size=len(body), sha256=sha(body))  # reused, no new request
    assert again.url == "(already downloaded)" and len(server.requests) == 1


def test_fetch_checksum_mismatch_deletes_the_part(server: FileServer, tmp_path: Path):
    body = b"hello world\n" * 1000
    url = server.serve("/f.txt", body)
    with pytest.raises(DataError, match="checksum mismatch") as exc:
        fetch([url], tmp_path / "f.txt", size=len(body), sha256="0" * 64)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "f.txt").exists() and not part_path(tmp_path / "f.txt").exists()


def test_truncated_download_resumes_with_a_range_request(server: FileServer, tmp_path: Path):
    body = bytes(range(256)) * 1000
    url = server.serve("/big.bin", body, truncate_at=100_000)
    dest = tmp_path / "big.bin"
    with pytest.raises(DataError, match="truncated"):
        fetch([url], dest, size=len(body), sha256=sha(body))
    assert part_path(dest).stat().st_size == 100_000 and not dest.exists()
    server.serve("/big.bin", body)  # the server recovers
    got = fetch([url], dest, size=len(body), sha256=sha(body))
    assert server.ranges("/big.bin") == [None, "bytes=100000-"]
    assert got.verified and dest.read_bytes() == body


def test_server_ignoring_range_restarts_cleanly(server: FileServer, tmp_path: Path):
    body = b"abcdefgh" * 20_000
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(body[:5000])
    url = server.serve("/f.bin", body, ignore_range=True)
    messages: list[str] = []
    got = fetch([url], dest, size=len(body), sha256=sha(body), log=messages.append)
    assert server.ranges("/f.bin") == ["bytes=5000-"] and dest.read_bytes() == body and got.verified
    assert any("ignored the range request" in m for m in messages)


def test_stale_part_from_a_different_file_is_replaced(server: FileServer, tmp_path: Path):
    body = b"0123456789" * 100
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"garbage" * 500)  # longer than the file: not a prefix of it
    got = fetch([server.serve("/f.bin", body)], dest, size=len(body), sha256=sha(body))
    assert got.verified and dest.read_bytes() == body


def test_resumed_part_that_fails_verification_is_fetched_again(server: FileServer, tmp_path: Path):
    body = b"0123456789" * 100
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"X" * 300)  # a plausible prefix with the wrong bytes
    url = server.serve("/f.bin", body)
    got = fetch([url], dest, size=len(body), sha256=sha(body))
    assert server.ranges("/f.bin") == ["bytes=300-", None] and got.verified and dest.read_bytes() == body


def test_http_errors_and_mirror_fallback(server: FileServer, tmp_path: Path):
    body = b"payload\n" * 10
    missing, broken = server.url + "/missing", server.serve("/broken", status=500)
    with pytest.raises(DataError, match="HTTP 404.*HTTP 500"):
        fetch([missing, broken], tmp_path / "a", size=len(body), sha256=sha(body))
    good = server.serve("/good", body)
    got = fetch([missing, good], tmp_path / "a", size=len(body), sha256=sha(body))
    assert got.url == good and (tmp_path / "a").read_bytes() == body


def test_connection_refused_and_timeout(server: FileServer, tmp_path: Path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="connection refused"):
        fetch([f"http://127.0.0.1:{port}/x"], tmp_path / "x", timeout=5)
    slow = server.serve("/slow", b"late bytes", stall=1.5)
    with pytest.raises(DataError, match="timed out"):
        fetch([slow], tmp_path / "y", timeout=0.3)


def test_wrong_size_from_the_server_is_refused(server: FileServer, tmp_path: Path):
    url = server.serve("/f", b"short")
    with pytest.raises(DataError, match="expected 1,000"):
        fetch([url], tmp_path / "f", size=1000)
    assert not (tmp_path / "f").exists()


# -- unpack.extract ---------------------------------------------------------------------------------------------
def unpack(tmp_path: Path, data: bytes, fmt: str, wanted: dict[str, str], name: str = "a.bin", **caps) -> Path:
    src = tmp_path / name
    src.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir(exist_ok=True)
    extract(src, fmt, dest, wanted, max_bytes=caps.get("max_bytes", 10**9), max_ratio=caps.get("max_ratio", 100))
    return dest


def test_extracts_zip_tar_and_gz(tmp_path: Path):
    out = unpack(tmp_path, ZIP_BODY, "zip", {"tiny/wiki.train.tokens": "train.txt"})
    assert (out / "train.txt").read_text() == TRAIN and sorted(p.name for p in out.iterdir()) == ["train.txt"]
    for i, mode in enumerate(("w:gz", "w:bz2", "w:xz", "w")):
        (tmp_path / str(i)).mkdir()
        data = make_tar([("./d/valid.txt", VALID.encode())], mode)
        out = unpack(tmp_path / str(i), data, "tar", {"d/valid.txt": "valid.txt"})
        assert (out / "valid.txt").read_text() == VALID
    (tmp_path / "g").mkdir()
    out = unpack(tmp_path / "g", gzip.compress(TEST.encode()), "gz", {"a.bin": "test.de"})
    assert (out / "test.de").read_text() == TEST
    with pytest.raises(DataError, match="has no member 'tiny/wiki.nope'"):
        unpack(tmp_path / "g", ZIP_BODY, "zip", {"tiny/wiki.nope": "x.txt"}, name="b.zip")


def _link(name: str, kind: bytes, target: str = "/etc/passwd") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("case, data, fmt, match", [
    ("zip ..", make_zip({"../evil.txt": b"x", "ok.txt": b"y"}), "zip", "outside"),
    ("zip absolute", make_zip({"/abs.txt": b"x"}), "zip", "absolute"),
    ("tar ..", make_tar([("a/../../evil.txt", b"x")]), "tar", "outside"),
    ("tar absolute", make_tar([("/etc/evil", b"x")]), "tar", "absolute"),
    ("tar symlink", make_tar([_link("ok.txt", tarfile.SYMTYPE)]), "tar", "symbolic link"),
    ("tar hardlink", make_tar([_link("ok.txt", tarfile.LNKTYPE, "other")]), "tar", "hard link"),
    ("tar device", make_tar([_link("dev", tarfile.CHRTYPE, "")]), "tar", "device"),
    ("tar fifo", make_tar([_link("fifo", tarfile.FIFOTYPE, "")]), "tar", "FIFO"),
], ids=lambda v: v if isinstance(v, str) else "data")
def test_unsafe_members_are_refused(tmp_path: Path, case: str, data: bytes, fmt: str, match: str):
    with pytest.raises(UnsafeArchive, match=match):
        unpack(tmp_path, data, fmt, {"ok.txt": "train.txt"})
    assert list((tmp_path / "out").iterdir()) == []  # checked before any byte was written


def test_zip_symlink_member_is_refused(tmp_path: Path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("ok.txt")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        unpack(tmp_path, buf.getvalue(), "zip", {"ok.txt": "train.txt"})


BOMB = 4 << 20  # 4 MiB of zeros: a few kB compressed


@pytest.mark.parametrize("fmt", ["zip", "tar", "gz"])
def test_decompression_bombs_stop_at_the_caps(tmp_path: Path, fmt: str):
    zeros = bytes(BOMB)
    data = {"zip": lambda: make_zip({"m": zeros}), "tar": lambda: make_tar([("m", zeros)]),
            "gz": lambda: gzip.compress(zeros)}[fmt]()
    assert len(data) < 50_000
    wanted = {"a.bin" if fmt == "gz" else "m": "train.txt"}
    with pytest.raises(UnsafeArchive, match="expands more than 100x"):
        unpack(tmp_path, data, fmt, wanted)
    (tmp_path / "out" / "train.txt").unlink()
    with pytest.raises(UnsafeArchive, match="more than 100,000 bytes"):
        unpack(tmp_path, data, fmt, wanted, max_bytes=100_000, max_ratio=float("inf"))
    assert (tmp_path / "out" / "train.txt").stat().st_size <= 100_000 + (1 << 20)


# -- the cache: install, list, path, --corpus NAME ------------------------------------------------------------
def test_download_through_the_cli_then_list_path_and_train(mirror: FileServer, monkeypatch, tmp_path: Path):
    corpus = register(monkeypatch, zip_corpus())
    mirror.serve(f"/m/{corpus.name}/{corpus.name}.zip", ZIP_BODY)
    listed = {r["name"]: r for r in json.loads(cli("corpus", "list", "--format", "json").stdout)}
    assert listed[corpus.name]["cached"] is False and listed["ptb"]["licence"]
    r = cli("corpus", "download", corpus.name, "-q")
    assert r.exit_code == 0, r.stderr
    folder = Path(r.stdout.strip())
    assert folder == store.corpus_folder(corpus.name)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "test.txt", "train.txt", "valid.txt"]
    assert (folder / "train.txt").read_text() == TRAIN
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"][0]["checksum"] == "verified" and manifest["files"][0]["sha256"] == sha(ZIP_BODY)
    assert manifest["outputs"]["valid.txt"]["sha256"] == sha(VALID.encode())
    assert not (store.corpora_root() / store.DOWNLOADS / corpus.name).exists()  # archive removed once published
    listed = {r["name"]: r for r in json.loads(cli("corpus", "list", "-f", "json").stdout)}
    assert listed[corpus.name]["cached"] is True and listed[corpus.name]["path"] == str(folder)
    assert "tiny-zip" in cli("corpus", "list", "-f", "table").stdout
    assert cli("corpus", "path", corpus.name).stdout.strip() == str(folder)
    # cached: no request at all, even offline
    before = len(mirror.requests)
    assert cli("corpus", "download", corpus.name, "--offline").exit_code == 0
    assert len(mirror.requests) == before
    # --corpus NAME resolves to the cached folder (run from a folder without a local `tiny-zip`)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    r = cli("train", "--model", "ngram:kn3", "--corpus", corpus.name, "-o", out, "-q")
    assert r.exit_code == 0, r.stderr
    record = json.loads((out / "run.json").read_text())
    assert str(folder) in json.dumps(record)


def test_not_downloaded_name_and_offline_give_one_line(mirror: FileServer, monkeypatch, tmp_path: Path):
    corpus = register(monkeypatch, zip_corpus())
    mirror.serve(f"/m/{corpus.name}/{corpus.name}.zip", ZIP_BODY)
    monkeypatch.chdir(tmp_path)
    one_error_line(cli("train", "--model", "ngram:kn3", "--corpus", corpus.name, "-q"),
                   match=f"lmkit corpus download {corpus.name}")
    one_error_line(cli("corpus", "path", corpus.name), match=f"lmkit corpus download {corpus.name}")
    one_error_line(cli("corpus", "download", corpus.name, "--offline"), match="offline")
    monkeypatch.setenv("LMKIT_OFFLINE", "1")
    one_error_line(cli("corpus", "download", corpus.name), match="offline")
    assert mirror.requests == []  # offline never touched the network
    one_error_line(cli("corpus", "download", "no-such-corpus"), code=2, match="unknown corpus")


@pytest.mark.parametrize("failure", ["checksum", "404", "bomb", "unsafe", "refused"])
def test_failed_downloads_publish_nothing(mirror: FileServer, monkeypatch, failure: str):
    body = ZIP_BODY
    corpus = zip_corpus()
    if failure == "checksum":
        corpus = zip_corpus(sha256="f" * 64)
    elif failure == "bomb":
        body = make_zip({f"tiny/wiki.{s}.tokens": bytes(BOMB) for s in ("train", "valid", "test")})
        corpus = zip_corpus(body=body)
    elif failure == "unsafe":
        body = make_zip({"tiny/wiki.train.tokens": b"a\n", "../../escape": b"x"})
        corpus = zip_corpus(body=body)
    elif failure == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            monkeypatch.setenv("LMKIT_CORPUS_MIRROR", f"http://127.0.0.1:{s.getsockname()[1]}")
    register(monkeypatch, corpus)
    if failure != "404":
        mirror.serve(f"/m/{corpus.name}/{corpus.name}.zip", body)
    match = {"checksum": "checksum mismatch", "404": "HTTP 404", "bomb": "decompression bomb",
             "unsafe": "outside", "refused": "connection refused"}[failure]
    one_error_line(cli("corpus", "download", corpus.name, "-q"), match=match)
    assert store.cached_path(corpus.name) is None
    assert published(store.corpora_root()) == []
    downloads = store.corpora_root() / store.DOWNLOADS / corpus.name
    assert not downloads.exists() or list(downloads.iterdir()) == []  # bad bytes are not kept


def test_interrupted_corpus_download_resumes(mirror: FileServer, monkeypatch):
    body = make_zip({f"tiny/wiki.{s}.tokens": (TRAIN * 20).encode() for s in ("train", "valid", "test")})
    corpus = register(monkeypatch, zip_corpus(body=body, unpacked=len(TRAIN) * 60))
    path = f"/m/{corpus.name}/{corpus.name}.zip"
    mirror.serve(path, body, truncate_at=len(body) // 2)
    one_error_line(cli("corpus", "download", corpus.name, "-q"), match="truncated")
    assert published(store.corpora_root()) == []
    mirror.serve(path, body)
    r = cli("corpus", "download", corpus.name, "-q")
    assert r.exit_code == 0, r.stderr
    assert mirror.ranges(path) == [None, f"bytes={len(body) // 2}-"]
    assert (Path(r.stdout.strip()) / "test.txt").read_text() == TRAIN * 20


def test_trust_on_first_use_records_the_hash(mirror: FileServer, monkeypatch):
    text = (TRAIN + VALID).encode()
    corpus = register(monkeypatch, Corpus(
        name="tofu-gz", description="one gz file", licence="test", source="generated",
        files=(RemoteFile(name="all.txt.gz", urls=("https://upstream.invalid/all.txt.gz",),
                          members={"all.txt.gz": Output("all.txt")}, archive="gz", unpacked_size=len(text)),),
        split=SplitRule(source="all.txt", ratios=(80, 10, 10))))
    body = gzip.compress(text)
    mirror.serve("/m/tofu-gz/all.txt.gz", body)
    r = cli("corpus", "download", corpus.name)
    assert r.exit_code == 0, r.stderr
    assert f"sha256 {sha(body)} (trust on first use" in r.stderr
    folder = Path(r.stdout.strip())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"][0] == {"name": "all.txt.gz", "url": mirror.url + "/m/tofu-gz/all.txt.gz",
                                    "bytes": len(body), "sha256": sha(body), "checksum": "trust-on-first-use"}
    assert sorted(manifest["outputs"]) == ["test.txt", "train.txt", "valid.txt"]  # all.txt split, then removed
    joined = b"".join((folder / f"{s}.txt").read_bytes() for s in ("train", "valid", "test"))
    assert joined == text


def test_real_manifest_entries_against_shared_bytes(mirror: FileServer, tmp_path: Path):
    """The real PTB, tiny-shakespeare and Multi30k entries, served from ../shared through the mirror."""
    ptb, ts, m30k = (shared_path("corpora", c) for c in ("ptb", "tinyshakespeare", "multi30k"))
    for split in ("train", "valid", "test"):
        mirror.serve(f"/m/ptb/ptb.{split}.txt", (ptb / f"{split}.txt").read_bytes())
    whole = b"".join((ts / f"{s}.txt").read_bytes() for s in ("train", "valid", "test"))
    mirror.serve("/m/tiny-shakespeare/input.txt", whole)
    for stem, split in (("train", "train"), ("val", "valid"), ("test_2016_flickr", "test")):
        for lang in ("de", "en"):
            mirror.serve(f"/m/multi30k/{stem}.{lang}.gz", gzip.compress((m30k / f"{split}.{lang}").read_bytes()))
    splits = ["test.txt", "train.txt", "valid.txt"]
    pairs = [f"{s}.{x}" for s in ("test", "train", "valid") for x in ("de", "en")]
    for name, shared, files in (("ptb", ptb, splits), ("tiny-shakespeare", ts, splits), ("multi30k", m30k, pairs)):
        folder = api.corpus_download(name)
        assert sorted(p.name for p in folder.iterdir()) == sorted(files + ["manifest.json"])
        for f in files:  # byte-identical to the shared copies: tiny-shakespeare's 90/5/5 split included
            assert (folder / f).read_bytes() == (shared / f).read_bytes(), (name, f)
    assert api.corpus_path("ptb") == store.corpus_folder("ptb")
    named = store.resolve_corpus("multi30k")  # a corpus given by name is its downloaded folder
    assert named == folder and is_parallel(named) and locate_pairs(named, "de", "en").train[0].name == "train.de"
    # a file whose bytes differ from the manifest's (a fake WikiText zip) is refused
    mirror.serve("/m/wikitext-2/wikitext-2-v1.zip", b"x" * registry.WIKITEXT_2.files[0].size)
    with pytest.raises(DataError, match="checksum mismatch"):
        api.corpus_download("wikitext-2")
    assert store.cached_path("wikitext-2") is None


def test_file_url_mirror(monkeypatch, tmp_path: Path):
    corpus = register(monkeypatch, zip_corpus())
    (tmp_path / "mirror" / corpus.name).mkdir(parents=True)
    (tmp_path / "mirror" / corpus.name / f"{corpus.name}.zip").write_bytes(ZIP_BODY)
    folder = api.corpus_download(corpus.name, mirror=(tmp_path / "mirror").as_uri())
    assert (folder / "valid.txt").read_text() == VALID
    with pytest.raises(UsageError, match="mirror"):
        api.corpus_download(corpus.name, mirror="ftp://x", force=True)


# -- split ------------------------------------------------------------------------------------------------------
LINES = [f"line {i} " + "word " * (i % 7) for i in range(1000)]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    p = tmp_path / "raw.txt"
    p.write_text("\n".join(LINES) + "\n")
    return p


def read_split(folder: Path) -> dict[str, list[str]]:
    return {s: (folder / f"{s}.txt").read_text().splitlines() if (folder / f"{s}.txt").exists() else []
            for s in ("train", "valid", "test")}


def test_parse_ratios():
    assert parse_ratios("98/1/1") == parse_ratios("0.98/0.01/0.01") == parse_ratios("98,1,1")
    assert sum(parse_ratios("90/10/0")) == 1
    for bad in ("90/5", "90/5/6", "-1/51/50", "0/50/50", "a/b/c", "0.5/0.3/0.3"):
        with pytest.raises(UsageError):
            parse_ratios(bad)
    assert contiguous_bounds(40000, parse_ratios("90/5/5")) == (36000, 38000)


def test_contiguous_split_is_deterministic_and_exact(raw: Path, tmp_path: Path):
    rows = split_file(raw, tmp_path / "a", "98/1/1")
    assert [(r["split"], r["lines"]) for r in rows] == [("train", 980), ("valid", 10), ("test", 10)]
    assert rows[0]["tokens"] == sum(len(x.split()) for x in LINES[:980])
    parts = read_split(tmp_path / "a")
    assert parts["train"] + parts["valid"] + parts["test"] == LINES  # every line, in order
    split_file(raw, tmp_path / "b", "98/1/1")
    for s in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{s}.txt").read_bytes() == (tmp_path / "b" / f"{s}.txt").read_bytes()


def test_line_split_is_seeded_and_accounts_for_every_line(raw: Path, tmp_path: Path):
    split_file(raw, tmp_path / "a", "80/10/10", by="line", seed=1)
    split_file(raw, tmp_path / "b", "80/10/10", by="line", seed=1)
    split_file(raw, tmp_path / "c", "80/10/10", by="line", seed=2)
    a, b, c = (read_split(tmp_path / x) for x in "abc")
    assert a == b and a != c
    assert Counter(a["train"] + a["valid"] + a["test"]) == Counter(LINES)
    assert 720 <= len(a["train"]) <= 880 and 50 <= len(a["valid"]) <= 150  # 80/10/10 of 1000, by hash
    assert [x for x in LINES if x in set(a["test"])] == a["test"]  # file order kept within a split


def test_split_cli_output_folder_rules_and_errors(raw: Path, tmp_path: Path):
    out = tmp_path / "mine"
    r = cli("corpus", "split", raw, "--ratios", "90/5/5", "-o", out, "-f", "json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["lines"] for row in rows] == [900, 50, 50] and rows[0]["file"] == str(out / "train.txt")
    one_error_line(cli("corpus", "split", raw, "-o", out), code=2, match="--force")
    assert cli("corpus", "split", raw, "--ratios", "50/50/0", "-o", out, "--force", "-q").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [".lmkit", "train.txt", "valid.txt"]
    inside = out / "raw.txt"
    inside.write_text("a\nb\n")
    one_error_line(cli("corpus", "split", inside, "-o", out, "--force"), code=2, match="holds the input")
    assert inside.exists()
    for bad in ("90/5", "100/5/5", "0/50/50"):
        one_error_line(cli("corpus", "split", raw, "--ratios", bad, "-o", tmp_path / "x"), code=2, match="--ratios")
    one_error_line(cli("corpus", "split", raw, "--by", "word", "-o", tmp_path / "x"), code=2, match="--by")
    assert not (tmp_path / "x").exists()


def test_split_reads_like_read_text(tmp_path: Path):
    src = tmp_path / "crlf.txt"
    src.write_bytes(b"\xef\xbb\xbfone two\r\nthree\r\nfour five six\r\n")
    split_file(src, tmp_path / "ok", "34/33/33")
    assert (tmp_path / "ok" / "train.txt").read_bytes() == b"one two\n"
    assert (tmp_path / "ok" / "test.txt").read_bytes() == b"four five six\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nalso fine\nbroken \xff here\n")
    err = one_error_line(cli("corpus", "split", bad, "-o", tmp_path / "no"), match="line 3: invalid UTF-8")
    assert str(bad) in err and not (tmp_path / "no").exists()
    (tmp_path / "empty.txt").write_text("\n  \n")
    one_error_line(cli("corpus", "split", tmp_path / "empty.txt", "-o", tmp_path / "no"), match="empty")
    one_error_line(cli("corpus", "split", tmp_path / "none.txt", "-o", tmp_path / "no"), match="not found")
    assert not (tmp_path / "no").exists()
    # two lines cannot feed 98/1/1 with a non-empty train? they can: train gets both, valid/test warn
    (tmp_path / "two.txt").write_text("a b\nc d\n")
    r = cli("corpus", "split", tmp_path / "two.txt", "-o", tmp_path / "two")
    assert r.exit_code == 0 and "warning: the valid split is empty" in r.stderr


def test_split_stdin_by_line(tmp_path: Path):
    r = cli("corpus", "split", "-", "--by", "line", "-o", tmp_path / "s", "-f", "json", input="\n".join(LINES) + "\n")
    assert r.exit_code == 0, r.stderr
    assert sum(row["lines"] for row in json.loads(r.stdout)) == len(LINES)
    one_error_line(cli("corpus", "split", "-", "-o", tmp_path / "t", input="a\n"), code=2, match="--by line")


# -- failures of the machine: a full disk, Ctrl-C ---------------------------------------------------------------
CHILD = """
import json, sys
from lmkit.datasets import download, registry
from lmkit.datasets.registry import Corpus, Output, RemoteFile, SplitRule
spec = json.loads(sys.argv[1])
if sys.argv[2]:
    download.MAX_DOWNLOAD_BYTES = int(sys.argv[2])
files = tuple(RemoteFile(**{**f, "urls": tuple(f["urls"]),
                            "members": {k: Output(**o) for k, o in f["members"].items()}}) for f in spec["files"])
split = SplitRule(**{**spec["split"], "ratios": tuple(spec["split"]["ratios"])}) if spec["split"] else None
registry.CORPORA[spec["name"]] = Corpus(**{**spec, "files": files, "split": split})
from lmkit.cli import main
sys.argv = ["lmkit", *sys.argv[3:]]
main()
"""


def spawn_cli(server: FileServer, cache: Path, corpus: Corpus, *args, limit: int | None = None,
              max_download: int | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """`lmkit ARGS...` in a child process with `corpus` in its registry, its cache at `cache` and every download
    going to `server` (a file-size limit `limit` makes a write past it fail with EFBIG: a full disk)."""
    def preexec():
        if limit:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "LMKIT_CACHE": str(cache), "LMKIT_CORPUS_MIRROR": server.url + "/m"}
    env.pop("LMKIT_OFFLINE", None)
    spec = json.dumps(dataclasses.asdict(corpus))
    return subprocess.Popen([sys.executable, "-c", CHILD, spec, str(max_download or ""), *map(str, args)], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec, cwd=cwd)


def run_cli(server: FileServer, cache: Path, corpus: Corpus, *args, **kw) -> subprocess.CompletedProcess:
    proc = spawn_cli(server, cache, corpus, *args, **kw)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_child_error(result: subprocess.CompletedProcess, match: str = "") -> str:
    """A child's refusal: exit 1, exactly one stderr line `error: ...` containing `match`, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0] and result.stdout == "", (lines[0], result.stdout)
    return lines[0]


def plain_corpus(name: str, body: bytes, *, size: int | None = "auto", sha256: str | None = "auto",
                 unpacked: int | None = None) -> Corpus:
    """One plain file `<name>.txt` that becomes train.txt."""
    return Corpus(name=name, description="", licence="", source="", files=(RemoteFile(
        name=f"{name}.txt", urls=(f"https://upstream.invalid/{name}.txt",),
        members={f"{name}.txt": Output("train.txt")}, size=len(body) if size == "auto" else size,
        sha256=sha(body) if sha256 == "auto" else sha256, unpacked_size=unpacked),))


def spawn_download(server: FileServer, body: bytes, cache: Path, limit: int | None = None):
    return spawn_cli(server, cache, plain_corpus("big", body), "corpus", "download", "big", "-q", limit=limit)


def leftovers(root: Path) -> list[str]:
    """Every file and folder under the corpora cache `root` except lock files: what a failure left."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(".lock"))


def test_disk_full_and_interrupt_publish_nothing(server: FileServer, tmp_path: Path):
    body = b"some words on a line\n" * 20_000  # 420 kB
    server.serve("/m/big/big.txt", body)
    proc = spawn_download(server, body, tmp_path / "c1", limit=100_000)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: disk full") and out == ""
    assert published(tmp_path / "c1" / "corpora") == []

    server.serve("/m/big/big.txt", body, stall=30)
    seen = len(server.requests)  # the first download may have made more than one request
    proc = spawn_download(server, body, tmp_path / "c2")
    deadline = time.time() + 30
    while len(server.requests) == seen and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    for _ in range(60):  # Ctrl-C until it ends (a loaded machine may still be starting the child's handlers)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            continue
    assert proc.returncode == 130 and err.strip() == "interrupted", err
    assert published(tmp_path / "c2" / "corpora") == []


def test_force_replaces_and_a_second_downloader_is_refused(mirror: FileServer, monkeypatch):
    from lmkit.runlock import run_lock

    corpus = register(monkeypatch, zip_corpus())
    mirror.serve(f"/m/{corpus.name}/{corpus.name}.zip", ZIP_BODY)
    folder = api.corpus_download(corpus.name)
    (folder / "train.txt").write_text("tampered\n")  # detected and replaced (see test_a_damaged_cached_corpus...)
    assert api.corpus_download(corpus.name) == folder and (folder / "train.txt").read_text() == TRAIN
    (folder / "extra.txt").write_text("not a corpus file\n")  # files the manifest does not list are ignored...
    assert api.corpus_download(corpus.name) == folder and (folder / "extra.txt").exists()
    assert api.corpus_download(corpus.name, force=True) == folder  # ...and gone once --force replaces the folder
    assert not (folder / "extra.txt").exists()
    assert (folder / "train.txt").read_text() == TRAIN and published(store.corpora_root()) == [corpus.name]
    with run_lock(folder):  # another process holds the corpus
        with pytest.raises(DataError, match="another lmkit process is downloading it"):
            api.corpus_download(corpus.name, force=True)


# -- bounded downloads ------------------------------------------------------------------------------------------
def test_download_without_a_length_stops_at_the_registry_size(server: FileServer, tmp_path: Path):
    """No Content-Length and far more bytes than the registry records: the download stops one byte past the
    recorded size. The child may write 256 kB at most (RLIMIT_FSIZE): an unbounded download says `disk full`."""
    body = b"right bytes\n" * 100  # 1,200 bytes in the registry
    server.serve("/m/big/big.txt", body * 1000, send_length=False)  # 1.2 MB, no length
    r = run_cli(server, tmp_path / "c", plain_corpus("big", body), "corpus", "download", "big", limit=256_000)
    line = one_child_error(r, f"cannot download big.txt: {server.url}/m/big/big.txt: ")
    assert "more than 1,200 bytes (the size the registry records)" in line and "received 1,201" in line, line
    assert leftovers(tmp_path / "c" / "corpora") == []  # no .part, no temp folder, no corpus folder


def test_download_of_unknown_size_is_bounded_by_the_stated_maximum(server: FileServer, tmp_path: Path):
    """A registry entry with neither a size nor an unpacked size: MAX_DOWNLOAD_BYTES bounds it (lowered to
    50,000 in the child), with and without a Content-Length; an announced length past it is refused before
    the body is read (the server stalls 30 s before sending it)."""
    corpus = plain_corpus("big", b"", size=None, sha256=None)
    server.serve("/m/big/big.txt", b"x" * 200_000, send_length=False)
    r = run_cli(server, tmp_path / "c1", corpus, "corpus", "download", "big", "-q", max_download=50_000)
    line = one_child_error(r, f"{server.url}/m/big/big.txt: sent more than 50,000 bytes")
    assert "MAX_DOWNLOAD_BYTES" in line and "received 50,001" in line, line
    assert leftovers(tmp_path / "c1" / "corpora") == []
    server.serve("/m/big/big.txt", b"x" * 200_000, claim_length=10**10, stall=30)
    started = time.monotonic()
    r = run_cli(server, tmp_path / "c2", corpus, "corpus", "download", "big", "-q", max_download=50_000)
    line = one_child_error(r, "announces 10,000,000,000 bytes, more than 50,000")
    assert "refused before reading the body" in line and time.monotonic() - started < 20, line
    assert leftovers(tmp_path / "c2" / "corpora") == []


def test_download_bound_and_fetch_stop(server: FileServer, tmp_path: Path):
    """The bound: the registry's size (exact), else 1.5x the unpacked size + 1 MiB (the unpack cap), else
    MAX_DOWNLOAD_BYTES. fetch stops past it and deletes what it wrote."""
    assert download_bound(1000, 5000)[0] == 1000
    assert download_bound(None, 2_000_000)[0] == cap_for(2_000_000, MAX_DOWNLOAD_BYTES) == 4_048_576
    assert download_bound(None, None)[0] == MAX_DOWNLOAD_BYTES
    url = server.serve("/f.bin", b"y" * 300_000, send_length=False)
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match="sent more than 1,000 bytes .* received 1,001"):
        fetch([url], dest, size=1000)
    assert list(tmp_path.iterdir()) == []
    part_path(dest).write_bytes(b"y" * 600)  # a kept part is counted too: the body continues past the bound
    with pytest.raises(DataError, match="received 1,001"):
        fetch([server.serve("/f.bin", b"y" * 300_000, send_length=False, ignore_range=False)], dest, size=1000)
    assert list(tmp_path.iterdir()) == []


# -- re-verified caches -----------------------------------------------------------------------------------------
def flipped(data: bytes, at: int = 100) -> bytes:
    """`data` with one byte inverted: same size, other bytes."""
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def messages(result: subprocess.CompletedProcess, word: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if word in line]


def test_cached_download_with_flipped_bytes_is_downloaded_again(server: FileServer, tmp_path: Path):
    """A download kept from an earlier attempt (right size, one byte flipped) is re-hashed against the registry,
    deleted and fetched again, with one line; offline, the corpus is refused in one line without a request."""
    corpus = zip_corpus()
    path = f"/m/{corpus.name}/{corpus.name}.zip"
    server.serve(path, ZIP_BODY)
    cache = tmp_path / "c"
    kept = cache / "corpora" / store.DOWNLOADS / corpus.name / f"{corpus.name}.zip"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(flipped(ZIP_BODY))
    one_child_error(run_cli(server, cache, corpus, "corpus", "download", corpus.name, "--offline"), "offline")
    assert server.requests == []
    r = run_cli(server, cache, corpus, "corpus", "download", corpus.name)
    assert r.returncode == 0, r.stderr
    (line,) = messages(r, "downloading it again")
    assert line == (f"{corpus.name}.zip: the copy kept from an earlier attempt fails verification: checksum "
                    f"mismatch (sha256 {sha(flipped(ZIP_BODY))}, expected {sha(ZIP_BODY)}); deleted, downloading "
                    "it again")
    assert server.ranges(path) == [None] and (Path(r.stdout.strip()) / "train.txt").read_text() == TRAIN


def gz_corpus(name: str = "tiny-gz") -> Corpus:
    """Multi30k-like ("content" mode): a .gz with no known checksum whose unpacked bytes are known."""
    text = TRAIN.encode()
    return Corpus(name=name, description="", licence="", source="", files=(RemoteFile(
        name="train.txt.gz", urls=("https://upstream.invalid/train.txt.gz",),
        members={"train.txt.gz": Output("train.txt", len(text), sha(text))}, archive="gz",
        unpacked_size=len(text)),))


SAME_SIZE = TRAIN.replace("number 7 sat", "number 7 ate").encode()  # other bytes, same length


def test_content_mode_checks_unpacked_bytes_by_hash(server: FileServer, tmp_path: Path):
    """A same-size wrong payload is refused by the member's sha256, fresh or kept from an earlier attempt
    (then deleted and fetched again, with one line)."""
    corpus = gz_corpus()
    assert corpus.verified == "content" and len(SAME_SIZE) == len(TRAIN.encode())
    path = f"/m/{corpus.name}/train.txt.gz"
    server.serve(path, gzip.compress(SAME_SIZE))
    cache = tmp_path / "c"
    one_child_error(run_cli(server, cache, corpus, "corpus", "download", corpus.name, "-q"),
                    "train.txt.gz: unpacked train.txt fails its checksum")
    assert leftovers(cache / "corpora") == []
    kept = cache / "corpora" / store.DOWNLOADS / corpus.name / "train.txt.gz"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(gzip.compress(SAME_SIZE))
    server.serve(path, gzip.compress(TRAIN.encode()))
    r = run_cli(server, cache, corpus, "corpus", "download", corpus.name)
    assert r.returncode == 0, r.stderr
    (line,) = messages(r, "downloading it again")
    assert line == ("train.txt.gz: the copy kept from an earlier attempt does not unpack to the files the registry "
                    "describes; deleted, downloading it again")
    assert (Path(r.stdout.strip()) / "train.txt").read_text() == TRAIN


def test_a_damaged_cached_corpus_is_detected_on_use(server: FileServer, tmp_path: Path):
    """Flipped bytes in an installed corpus (same size, manifest.json edited to match): `corpus path`, `train
    --corpus NAME` and offline `corpus download` refuse in one line; `corpus download` downloads it again."""
    corpus = gz_corpus()
    path = f"/m/{corpus.name}/train.txt.gz"
    server.serve(path, gzip.compress(TRAIN.encode()))
    cache = tmp_path / "c"
    r = run_cli(server, cache, corpus, "corpus", "download", corpus.name, "-q")
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip())
    (folder / "train.txt").write_bytes(SAME_SIZE)
    manifest = json.loads((folder / "manifest.json").read_text())  # a copy whose record was "fixed" too:
    manifest["outputs"]["train.txt"]["sha256"] = sha(SAME_SIZE)    # the registry's hash still holds
    (folder / "manifest.json").write_text(json.dumps(manifest))
    damaged = (f"corpus {corpus.name}: the cached copy in {folder} is damaged (train.txt: sha256 "
               f"{sha(SAME_SIZE)}, expected {sha(TRAIN.encode())})")
    for args in (("corpus", "path", corpus.name), ("train", "--model", "ngram:kn3", "--corpus", corpus.name,
                                                   "-o", tmp_path / "run", "-q")):
        line = one_child_error(run_cli(server, cache, corpus, *args, cwd=tmp_path))
        assert line == f"error: {damaged}; run `lmkit corpus download {corpus.name}` to download it again"
    line = one_child_error(run_cli(server, cache, corpus, "corpus", "download", corpus.name, "--offline"))
    assert line.startswith(f"error: {damaged} and offline mode is on"), line
    assert server.ranges(path) == [None] and not (tmp_path / "run").exists()
    r = run_cli(server, cache, corpus, "corpus", "download", corpus.name)
    assert r.returncode == 0, r.stderr
    (line,) = messages(r, "downloading it again")
    assert line == (f"{corpus.name}: the cached copy is damaged (train.txt: sha256 {sha(SAME_SIZE)}, expected "
                    f"{sha(TRAIN.encode())}); downloading it again")
    assert (folder / "train.txt").read_bytes() == TRAIN.encode() and server.ranges(path) == [None, None]
    (folder / "train.txt").unlink()  # a missing file is damage too
    one_child_error(run_cli(server, cache, corpus, "corpus", "path", corpus.name), "damaged (train.txt is missing)")


def test_damaged_zip_corpus_is_checked_against_its_manifest(mirror: FileServer, monkeypatch):
    """Outputs without a registry hash (WikiText-like) are checked against the sha256 manifest.json recorded."""
    corpus = register(monkeypatch, zip_corpus())
    mirror.serve(f"/m/{corpus.name}/{corpus.name}.zip", ZIP_BODY)
    folder = api.corpus_download(corpus.name)
    (folder / "valid.txt").write_text(VALID[:-1])
    with pytest.raises(store.DamagedCorpus, match=rf"valid.txt has {len(VALID) - 1} bytes, expected {len(VALID)}"):
        api.corpus_path(corpus.name)
    logged: list[str] = []
    assert api.corpus_download(corpus.name, log=logged.append) == folder
    assert (folder / "valid.txt").read_text() == VALID and any("damaged" in m for m in logged)
    manifest = json.loads((folder / "manifest.json").read_text())
    for field, value in (("bytes", "12"), ("sha256", None)):  # hand-edited records: one line, not a crash
        record = manifest["outputs"]["train.txt"]
        (folder / "manifest.json").write_text(json.dumps({**manifest, "outputs": {
            **manifest["outputs"], "train.txt": {**record, field: value}}}))
        with pytest.raises(store.DamagedCorpus, match="manifest.json has a malformed record for 'train.txt'"):
            store.cached_path(corpus.name)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(store.DamagedCorpus, match="manifest.json is unreadable"):
        store.cached_path(corpus.name)


# -- a killed download ------------------------------------------------------------------------------------------
def test_temps_of_a_killed_download_are_removed_by_the_next_one(server: FileServer, tmp_path: Path):
    """SIGKILL while the body streams (the server stalls after 150 kB): the hidden temp corpus folder
    `.big.PID.RANDOM.tmp` stays; the next download removes it with one line and resumes the kept part."""
    body = bytes(range(256)) * 800  # 204,800 bytes
    corpus = plain_corpus("big", body)
    server.serve("/m/big/big.txt", body, stall_after=150_000, stall=30)
    cache = tmp_path / "c"
    part = part_path(cache / "corpora" / store.DOWNLOADS / "big" / "big.txt")
    proc = spawn_cli(server, cache, corpus, "corpus", "download", "big")
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    kept = part.stat().st_size
    (stale,) = [p.name for p in (cache / "corpora").iterdir() if p.name.endswith(".tmp")]
    assert stale.startswith(f".big.{proc.pid}.")
    server.serve("/m/big/big.txt", body)
    r = run_cli(server, cache, corpus, "corpus", "download", "big")
    assert r.returncode == 0, r.stderr
    (line,) = messages(r, "removed")
    assert line == f"removed 1 temporary item(s) left in {cache / 'corpora'} by a killed lmkit process: {stale}"
    assert [p for p in (cache / "corpora").rglob("*") if p.name.endswith((".tmp", ".part"))] == []
    assert (Path(r.stdout.strip()) / "train.txt").read_bytes() == body
    assert server.ranges("/m/big/big.txt") == [None, f"bytes={kept}-"]
