"""The corpus cache: `<cache>/corpora/<name>/` holds train/valid/test files and a manifest.json.

A corpus folder appears only complete: files are downloaded into `<cache>/corpora/.downloads/<name>/`
(resumable `.part` files), verified, unpacked into a hidden temp folder beside the target and renamed into
place with their manifest.json. A folder without manifest.json is not a cached corpus. A cached corpus is
hashed again on every use (cached_path): files edited, truncated or rotted since the download are
DamagedCorpus, which `install` answers by downloading the corpus again."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .. import __version__
from ..atomic import atomic_dir, remove_if_empty, write_json
from ..cache import cache_dir
from ..errors import DataError, UsageError
from .download import DEFAULT_TIMEOUT, Fetched, fetch, sha256_file
from .registry import CORPORA, Corpus, RemoteFile
from .unpack import DEFAULT_MAX_RATIO, cap_for
from ..logs import Log, quiet

MANIFEST = "manifest.json"
SCHEMA = 1
DOWNLOADS = ".downloads"




def corpora_root() -> Path:
    return cache_dir("corpora")


def corpus_folder(name: str) -> Path:
    """Where corpus `name` is (or would be) cached."""
    return corpora_root() / name


class DamagedCorpus(DataError):
    """A cached corpus whose files no longer match what was verified when it was downloaded."""

    def __init__(self, name: str, folder: Path, reason: str):
        self.name, self.folder, self.reason = name, folder, reason
        super().__init__(f"corpus {name}: the cached copy in {folder} is damaged ({reason}); "
                         f"run `lmkit corpus download {name}` to download it again")


def resolve_corpus(corpus: str | Path | None) -> str | Path | None:
    """`--corpus` as a folder: a known corpus name with no local folder of that name is its downloaded
    copy (refused with one line when it is not downloaded yet); anything else is returned as given."""
    if corpus is None or Path(corpus).exists() or str(corpus) not in CORPORA:
        return corpus
    cached = cached_path(str(corpus))
    if cached is None:
        raise DataError(f"corpus {corpus} is not downloaded yet; run `lmkit corpus download {corpus}`")
    return cached


def cached_path(name: str) -> Path | None:
    """The cached folder of corpus `name`, or None when it has not been downloaded (completely).

    Its files are hashed again first (a verified download can be edited or rot on disk later):
    DamagedCorpus when one differs from the registry or its manifest.json (see find_damage)."""
    folder = corpus_folder(name)
    if not (folder / MANIFEST).is_file():
        return None
    reason = find_damage(name, folder)
    if reason is not None:
        raise DamagedCorpus(name, folder, reason)
    return folder


def find_damage(name: str, folder: Path) -> str | None:
    """Why the cached corpus in `folder` is not what was downloaded (None: every file checks out).

    Each file manifest.json lists must have its recorded size and sha256; where the registry knows an
    output's size or sha256 (PTB, Multi30k), that value is the one checked, so an edited manifest.json
    cannot vouch for an edited file. Files the manifest does not list are not looked at."""
    try:
        outputs = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["outputs"]
        expected = {file: (rec["bytes"], rec["sha256"]) for file, rec in outputs.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return f"{MANIFEST} is unreadable or has no list of its files"
    for file, (size, digest) in expected.items():
        if "/" in file or file in ("", ".", "..") or type(size) is not int or not isinstance(digest, str):
            return f"{MANIFEST} has a malformed record for {file!r}"
    corpus = CORPORA.get(name)
    for remote in corpus.files if corpus is not None else ():
        for out in remote.members.values():
            if corpus.split is None or out.name != corpus.split.source:  # a split source is not kept
                size, digest = expected.get(out.name, (None, None))
                expected[out.name] = (out.size if out.size is not None else size, out.sha256 or digest)
    for file, (size, _) in sorted(expected.items()):  # sizes first: a missing or cut file costs no hashing
        path = folder / file
        if not path.is_file():
            return f"{file} is missing"
        if size is not None and path.stat().st_size != size:
            return f"{file} has {path.stat().st_size:,} bytes, expected {size:,}"
    for file, (_, digest) in sorted(expected.items()):
        if digest is None:
            continue
        try:
            got = sha256_file(folder / file)
        except OSError as exc:
            return f"{file} cannot be read ({exc.strerror or exc})"
        if got != digest:
            return f"{file}: sha256 {got}, expected {digest}"
    return None


def read_manifest(name: str) -> dict | None:
    """The manifest.json of a cached corpus (None when absent or unreadable; DamagedCorpus, see cached_path)."""
    folder = cached_path(name)
    if folder is None:
        return None
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def offline_requested(offline: bool | None = None) -> bool:
    """--offline, else env LMKIT_OFFLINE (1/true/yes/on)."""
    if offline is not None:
        return offline
    return os.environ.get("LMKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def mirror_base(mirror: str | None = None) -> str | None:
    """The local-mirror base URL: the argument, else env LMKIT_CORPUS_MIRROR (None: upstream URLs)."""
    base = mirror if mirror is not None else os.environ.get("LMKIT_CORPUS_MIRROR", "")
    base = base.strip()
    if not base:
        return None
    if not base.startswith(("http://", "https://", "file://")):
        raise UsageError(f"corpus mirror {base!r} must be an http://, https:// or file:// URL")
    return base.rstrip("/")


def file_urls(corpus: Corpus, remote: RemoteFile, mirror: str | None) -> tuple[str, ...]:
    """Upstream URLs (canonical first, then mirrors), or `<mirror>/<corpus>/<file name>` alone."""
    if mirror is None:
        return remote.urls
    return (f"{mirror}/{corpus.name}/{remote.name}",)


def install(corpus: Corpus, *, offline: bool | None = None, force: bool = False, mirror: str | None = None,
            timeout: float = DEFAULT_TIMEOUT, max_unpack_bytes: int | None = None,
            max_ratio: float = DEFAULT_MAX_RATIO, log: Log = quiet, progress: bool = False) -> Path:
    """Download, verify, unpack and publish `corpus` into the cache; the folder's path.

    Already cached and intact: returned at once (`force` downloads it again and replaces it once the new
    copy is complete). Cached but damaged (cached_path): downloaded again, with one line. Offline and not
    cached, or damaged: DataError, and no connection is attempted."""
    from ..runlock import LockedError, run_lock

    target = corpus_folder(corpus.name)
    damaged = None
    if not force:
        try:
            if cached_path(corpus.name):
                log(f"{corpus.name}: already downloaded ({target})")
                return target
        except DamagedCorpus as exc:
            damaged = exc
    if offline_requested(offline):
        if damaged is not None:
            raise DataError(f"corpus {corpus.name}: the cached copy in {target} is damaged ({damaged.reason}) "
                            "and offline mode is on (--offline or LMKIT_OFFLINE); run "
                            f"`lmkit corpus download {corpus.name}` with network access to download it again")
        raise DataError(f"{corpus.name} is not downloaded and offline mode is on (--offline or LMKIT_OFFLINE); "
                        f"run `lmkit corpus download {corpus.name}` with network access first")
    base = mirror_base(mirror)
    if damaged is not None:
        log(f"{corpus.name}: the cached copy is damaged ({damaged.reason}); downloading it again")
        force = True  # replace the damaged folder once the new copy is complete
    try:
        with run_lock(target):
            if not force and _intact(corpus.name):  # another process finished it while we waited
                return target
            _install(corpus, target, base, force, timeout, max_unpack_bytes, max_ratio, log, progress)
    except LockedError:
        raise DataError(f"{corpus.name}: another lmkit process is downloading it right now; "
                        "wait for it to finish") from None
    finally:  # only empty folders go: resumable .part files stay
        remove_if_empty([corpora_root() / DOWNLOADS / corpus.name, corpora_root() / DOWNLOADS])
    return target


def _intact(name: str) -> bool:
    """Cached and undamaged (a damaged copy is replaced, not reported, by the install under way)."""
    try:
        return cached_path(name) is not None
    except DamagedCorpus:
        return False


def _install(corpus: Corpus, target: Path, mirror: str | None, force: bool, timeout: float,
             max_unpack_bytes: int | None, max_ratio: float, log: Log, progress: bool) -> None:
    downloads = corpora_root() / DOWNLOADS / corpus.name
    fetched: list[tuple[RemoteFile, Fetched]] = []
    # the temp folder of a killed download of this corpus is removed first, with one line
    with atomic_dir(target, replace=force, log=log) as tmp:
        for remote in corpus.files:
            got = _fetch_unpacked(file_urls(corpus, remote, mirror), downloads / remote.name, remote, tmp,
                                  timeout, max_unpack_bytes, max_ratio, log, progress)
            fetched.append((remote, got))
            if not got.verified:
                checked = "; its unpacked files are checked against known hashes" \
                    if all(out.sha256 for out in remote.members.values()) else ""
                log(f"{remote.name}: no published checksum; sha256 {got.sha256} (trust on first use, "
                    f"recorded in {MANIFEST}){checked}")
        split = None
        if corpus.split is not None:
            from .split import split_into

            rule = corpus.split
            rows = split_into(tmp / rule.source, tmp, rule.ratios, by=rule.by, seed=rule.seed)
            (tmp / rule.source).unlink()
            split = {"source": rule.source, "ratios": list(rule.ratios), "by": rule.by, "seed": rule.seed,
                     "lines": {r["split"]: r["lines"] for r in rows}}
        write_json(tmp / MANIFEST, _manifest(corpus, fetched, tmp, split))
    shutil.rmtree(downloads, ignore_errors=True)  # published: the archives are no longer needed
    log(f"{corpus.name}: ready in {target}")


def _fetch_unpacked(urls: tuple[str, ...], dest: Path, remote: RemoteFile, folder: Path, timeout: float,
                    max_unpack_bytes: int | None, max_ratio: float, log: Log, progress: bool) -> Fetched:
    """Download `remote` to `dest`, extract what it maps into `folder` and check that against the registry.

    Bytes that fail are deleted, so the next attempt downloads them again. A copy kept from an earlier
    attempt is downloaded again at once (one line): without a download checksum (Multi30k's .gz files)
    what it unpacks to is the only check it gets, and failing it says the copy, not the server, is bad."""
    from .unpack import extract

    wanted = {member: out.name for member, out in remote.members.items()}
    while True:
        got = fetch(urls, dest, size=remote.size, sha256=remote.sha256, unpacked_size=remote.unpacked_size,
                    timeout=timeout, progress=progress, log=log)
        try:
            extract(got.path, remote.archive, folder, wanted, max_ratio=max_ratio,
                    max_bytes=cap_for(remote.unpacked_size or remote.size, max_unpack_bytes))
            _check_outputs(remote, folder)
            return got
        except DataError:
            got.path.unlink(missing_ok=True)
            if not got.reused:  # fresh bytes: nothing better to try
                raise
        log(f"{remote.name}: the copy kept from an earlier attempt does not unpack to the files the registry "
            "describes; deleted, downloading it again")
        for output in wanted.values():
            (folder / output).unlink(missing_ok=True)


def _check_outputs(remote: RemoteFile, folder: Path) -> None:
    """Known sizes/sha256 of what unpacking produced (e.g. gunzipped files without a download checksum)."""
    for out in remote.members.values():
        path = folder / out.name
        if out.size is not None and path.stat().st_size != out.size:
            raise DataError(f"{remote.name}: unpacked {out.name} has {path.stat().st_size:,} bytes, expected "
                            f"{out.size:,} (a different or corrupt file); nothing published")
        if out.sha256 is not None and sha256_file(path) != out.sha256:
            raise DataError(f"{remote.name}: unpacked {out.name} fails its checksum (sha256 expected "
                            f"{out.sha256}); nothing published")


def _manifest(corpus: Corpus, fetched: list[tuple[RemoteFile, Fetched]], folder: Path, split: dict | None) -> dict:
    outputs = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST:
            outputs[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {
        "schema": SCHEMA,
        "name": corpus.name,
        "description": corpus.description,
        "licence": corpus.licence,
        "source": corpus.source,
        "layout": corpus.layout,
        "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lmkit_version": __version__,
        "files": [{"name": remote.name, "url": got.url, "bytes": got.size, "sha256": got.sha256,
                   "checksum": "verified" if got.verified else "trust-on-first-use"} for remote, got in fetched],
        "split": split,
        "outputs": outputs,
    }
