"""Mutation testing of the modules whose output is a number a user reads (docs/testing.md).

    python bench/mutation.py                    # every module below, one after the other
    python bench/mutation.py perplexity         # one module (or several, by name)
    python bench/mutation.py --list             # modules, the functions mutated, their test files
    python bench/mutation.py --report           # scores of the last runs, without running anything
    python bench/mutation.py smoothing --show   # and the diff of every mutant that was not killed
    python bench/mutation.py compare --fresh    # forget cached results and test every mutant again
    python bench/mutation.py smoothing --retest # after adding tests: run again only the mutants not killed

Not run by CI. The tool is mutmut 3 (pyproject.toml [tool.mutmut] holds its shared settings). Each module
gets its own work folder, mutants/<name>/, holding links to lmkit/, tests/ and corpora/ and a pyproject.toml
made from the repository's: the same [tool.mutmut] settings, restricted to that module's source file and to
that module's test files (MODULES below). mutmut copies the working tree into mutants/<name>/mutants/,
collects which test calls which function, then runs each mutant against only the tests that call the
mutated function, fastest first, stopping at the first failure. Results are cached per function: a re-run
tests only the mutants of functions whose source changed (and of new tests' functions).

Politeness on a shared 2-core machine: one mutant at a time (--max-children 1), `nice -n 10`, and one
BLAS/OpenMP thread per test process.

Score = (killed + timeout) / all mutants of the module's selected functions; "no tests" (no selected test
calls the function) and "survived" count against it ("not checked": never run, e.g. an interrupted run, is
left out and shown). mutmut 3 does not mutate decorated functions
(@property ...) nor module-level code: those are pinned by tests directly (docs/testing.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "mutants"
LINKED = ("lmkit", "tests", "corpora")  # the work folder sees the working tree through these links


@dataclass(frozen=True)
class Module:
    source: str  # the file mutated, relative to the repository
    tests: tuple[str, ...]  # test files (globs; a glob that matches nothing is skipped)
    functions: tuple[str, ...] = field(default=())  # only these functions' mutants count (default: all)


# The fast tests relevant to each module. tests/test_kill_<name>.py holds the tests written to kill this
# module's mutants; tests/test_pins_*.py pin exact values (another engineer's), mapped where they belong.
MODULES: dict[str, Module] = {
    "perplexity": Module(
        "lmkit/evaluate/perplexity.py",
        ("tests/test_kill_perplexity.py", "tests/test_pins_scoring.py", "tests/test_pins_stream.py",
         "tests/test_ngram_model.py", "tests/test_bootstrap.py", "tests/test_cli.py", "tests/test_translate.py")),
    "smoothing": Module(
        "lmkit/models/ngram/smoothing.py",
        ("tests/test_kill_smoothing.py", "tests/test_pins_ngram.py", "tests/test_ngram_model.py",
         "tests/test_ngram_properties.py", "tests/test_ngram_nltk.py", "tests/test_ngram_external.py",
         "tests/test_arpa.py")),
    "batching": Module(
        "lmkit/data/batching.py",
        ("tests/test_kill_batching.py", "tests/test_pins_batching.py", "tests/test_pins_stream.py",
         "tests/test_translate.py", "tests/test_tokenfile.py")),
    # not tests/test_distributed.py: its torchrun ranks are subprocesses importing the mutated copy, and they
    # fail under mutmut's stats pass (and would run two processes at once). Not tests/test_neural.py: it
    # trains models for 10 s (45 s under mutmut's tracing) and checks batches only through the loss
    "bootstrap": Module(
        "lmkit/evaluate/bootstrap.py",
        ("tests/test_kill_bootstrap.py", "tests/test_bootstrap.py")),
    "mix": Module(
        "lmkit/models/mix.py",
        ("tests/test_kill_mix.py", "tests/test_mix.py")),
    "compare": Module(
        "lmkit/compare.py",
        ("tests/test_kill_compare.py", "tests/test_compare.py", "tests/test_compare_seeds.py",
         "tests/test_bootstrap.py"),
        # the rules: what may be compared, how rows are filled, ranked, sorted, aggregated and intervals
        # attached (not: lineup training, table rendering)
        ("read_runs", "_file", "_sha", "_protocol", "_describe_protocol", "_describe_file", "check_comparable",
         "_finite", "_row", "_rank", "_default_order", "check_sort_column", "sort_rows", "check_bootstrap",
         "_add_note", "_bootstrap_input", "add_intervals", "compare_runs", "check_seeds", "_seed_row",
         "compare_seeded", "compare_trained", "best_cells")),
    "bleu": Module(
        "lmkit/evaluate/bleu.py",
        ("tests/test_kill_bleu.py", "tests/test_bleu.py", "tests/test_translate.py")),
}

KILLED = ("killed", "timeout")
STATUS_ORDER = ("killed", "timeout", "survived", "no tests", "suspicious", "segfault", "skipped",
                "caught by type check", "check was interrupted by user", "not checked")


def dotted(source: str) -> str:
    return source[:-3].replace("/", ".")


EXCLUDE: list[str] = []  # --exclude-tests globs: measure what the other tests alone kill


def test_files(module: Module) -> list[str]:
    files: list[str] = []
    for pattern in module.tests:
        for path in sorted(REPO.glob(pattern)):
            rel = path.relative_to(REPO).as_posix()
            if rel not in files and not any(fnmatch.fnmatch(rel, x) for x in EXCLUDE):
                files.append(rel)
    return files


def selected(module: Module, key: str) -> bool:
    """Does mutant `key` (lmkit.x.x_func__mutmut_3, lmkit.x.xǁClassǁmethod__mutmut_1) count for `module`?"""
    if not module.functions:
        return True
    func = key.rsplit(".", 1)[-1].split("__mutmut_")[0]
    func = func.split("ǁ")[-1] if "ǁ" in func else func.removeprefix("x_")
    return func in module.functions


def mutant_globs(module: Module) -> list[str]:
    """mutmut name filters for the selected functions (none: every mutant of the file)."""
    return [f"{dotted(module.source)}.x_{f}__mutmut_*" for f in module.functions]


# -- the work folder ---------------------------------------------------------------------------------------
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())


def prepare(name: str, module: Module) -> Path:
    """mutants/<name>/: links to the working tree and a pyproject.toml for this module alone."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = work / entry
        if not link.is_symlink():
            link.symlink_to(REPO / entry, target_is_directory=True)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    settings = dict(project["tool"]["mutmut"])
    settings["only_mutate"] = [module.source]
    settings["pytest_add_cli_args_test_selection"] = test_files(module)
    text = (f"# written by bench/mutation.py for {module.source}: do not edit, edit [tool.mutmut] in "
            f"{REPO / 'pyproject.toml'}\n\n" + _toml_table("tool.mutmut", settings) + "\n"
            + _toml_table("tool.pytest.ini_options", project["tool"].get("pytest", {}).get("ini_options", {})))
    target = work / "pyproject.toml"
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return work


def environment(work: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    if work is not None:
        # a private temp folder: the suite checks that it leaves nothing in the temp folder, and other people's
        # runs in the shared /tmp would otherwise fail that check now and then -- a mutant "killed" by chance
        tmp = work / "tmp"
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
        # torch.compile's cache would otherwise appear in the suite's session temp folder, which must stay empty
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "inductor"))
    # tests find ../shared from their own location, which is inside the work folder: point them at the real one
    env.setdefault("LMKIT_SHARED", str(REPO.parent / "shared"))
    return env


def mutmut_command() -> list[str]:
    exe = Path(sys.executable).parent / "mutmut"
    return [str(exe) if exe.exists() else (shutil.which("mutmut") or "mutmut")]


def run(name: str, module: Module, fresh: bool, retest: bool, log) -> float:
    work = prepare(name, module)
    if fresh and (work / "mutants").exists():
        shutil.rmtree(work / "mutants")
    copy = work / "mutants" / module.source
    if copy.exists() and copy.stat().st_size == 0:
        # a run stopped while mutmut was writing the mutated copy leaves it empty but newer than the source, and
        # mutmut would then take it as up to date ("0 files mutated") and fail on every import: write it again
        copy.unlink()
    names = mutant_globs(module)
    if retest:
        # mutmut keeps a verdict until the function's source changes; a survivor meant to be killed by a new
        # test is re-run only when named
        names = summary(name, module)["not_killed"] if summary(name, module) else names
        if not names:
            log(f"[{name}] nothing to retest: every mutant was killed")
            return 0.0
    cmd = ["nice", "-n", "10", *mutmut_command(), "run", "--max-children", "1", *names]
    log(f"[{name}] {module.source}: {len(test_files(module))} test files; in {work}")
    start = time.perf_counter()
    for attempt in range(1, RETRIES + 1):
        with open(work / "run.log", "w", encoding="utf-8") as out:
            proc = subprocess.run(cmd, cwd=work, env=environment(work), stdout=out, stderr=subprocess.STDOUT)
        tail = log_tail(work / "run.log")
        if proc.returncode == 0 or not any(s in tail for s in CLEAN_FAILURES) or attempt == RETRIES:
            break
        # the tests failed WITHOUT a mutant: mutmut copied the working tree while someone's edit was half done
        # (or a test is broken). Copy again in a while.
        log(f"[{name}] the unmutated tests failed (attempt {attempt}); retrying in {RETRY_WAIT} s")
        time.sleep(RETRY_WAIT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        log(f"[{name}] FAILED: mutmut exited {proc.returncode} after {seconds:.0f} s; end of {work / 'run.log'}:"
            f"\n{log_tail(work / 'run.log')}\n(a failing test? run the tests above in {work / 'mutants'} with "
            "MUTANT_UNDER_TEST= set to nothing); going on with the next module")
        FAILED.append(name)
        return seconds
    changed = drifted(work, module)
    if changed:
        log(f"[{name}] note: {', '.join(changed)} changed in the working tree during the run; the results are for "
            "the copy mutmut made at its start")
    (work / "last_run.json").write_text(json.dumps({"seconds": round(seconds, 1),
                                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                    "tests": test_files(module)}, indent=1))
    log(f"[{name}] done in {seconds:.0f} s")
    return seconds


RETRIES, RETRY_WAIT = 3, 60
FAILED: list[str] = []  # modules whose run did not complete
CLEAN_FAILURES = ("failed to collect stats", "Failed to run clean test")


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of mutmut's output without its spinner lines."""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip() and not SPINNER.match(line)]
    return "\n".join(kept[-lines:])


SPINNER = re.compile(r"^[\u2800-\u28ff] ")


def drifted(work: Path, module: Module) -> list[str]:
    """Source files whose copy in the work folder no longer equals the working tree (the mutated one aside)."""
    copy = work / "mutants"
    out = []
    for path in sorted((REPO / "lmkit").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        other = copy / rel
        if rel != module.source and other.exists() and other.read_bytes() != path.read_bytes():
            out.append(rel)
    return out


# -- results -----------------------------------------------------------------------------------------------
def results(name: str, module: Module) -> dict[str, str]:
    """mutant name -> status, for the module's selected functions (empty if it never ran)."""
    from mutmut.stats import status_by_exit_code

    meta = WORK / name / "mutants" / (module.source + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {k: status_by_exit_code[v] for k, v in codes.items() if selected(module, k)}


def summary(name: str, module: Module) -> dict | None:
    status = results(name, module)
    if not status:
        return None
    counts = {s: 0 for s in STATUS_ORDER}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    killed = sum(counts[s] for s in KILLED)
    total = len(status) - counts["not checked"]  # never run (an interrupted run): not counted either way
    last = WORK / name / "last_run.json"
    info = json.loads(last.read_text()) if last.exists() else {}
    return {"module": name, "source": module.source, "killed": killed, "total": total,
            "score": 100.0 * killed / total if total else 0.0, "counts": {k: v for k, v in counts.items() if v},
            "not_killed": sorted((k for k, s in status.items() if s not in KILLED + ("not checked",)), key=_natural),
            "status": status, "seconds": info.get("seconds"), "finished": info.get("finished")}


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def show(name: str, key: str) -> str:
    proc = subprocess.run([*mutmut_command(), "show", key], cwd=WORK / name, env=environment(),
                          capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()


def report(names: list[str], diffs: bool, out) -> None:
    rows = [s for s in (summary(n, MODULES[n]) for n in names) if s]
    if not rows:
        out("no results yet: run python bench/mutation.py first")
        return
    out("| module | file | killed / total | score | not killed | run time | finished |")
    out("|---|---|---|---|---|---|---|")
    for r in rows:
        other = ", ".join(f"{n} {k}" for k, n in r["counts"].items() if k not in KILLED) or "-"
        secs = f"{r['seconds']:.0f} s" if r["seconds"] is not None else "?"
        out(f"| {r['module']} | {r['source']} | {r['killed']} / {r['total']} | {r['score']:.1f} % | {other} "
            f"| {secs} | {r['finished'] or '?'} |")
    for r in rows:
        if not r["not_killed"]:
            continue
        out(f"\n{r['module']}: {len(r['not_killed'])} not killed")
        for key in r["not_killed"]:
            out(f"  {r['status'][key]:10s} {key}")
            if diffs:
                out("\n".join("      " + line for line in show(r["module"], key).splitlines()))
    (WORK / "summary.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "status"} for r in rows], indent=1, ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"module names (default: all): {', '.join(MODULES)}")
    ap.add_argument("--list", action="store_true", help="show the modules, functions and test files, then stop")
    ap.add_argument("--report", action="store_true", help="report the last results without running mutmut")
    ap.add_argument("--show", action="store_true", help="print the diff of every mutant that was not killed")
    ap.add_argument("--fresh", action="store_true", help="delete cached results of these modules first")
    ap.add_argument("--retest", action="store_true",
                    help="run again only the mutants that were not killed (after adding tests that should kill them)")
    ap.add_argument("--exclude-tests", action="append", default=[], metavar="GLOB",
                    help="leave these test files out (e.g. 'tests/test_kill_*'; changes the cached results)")
    args = ap.parse_args(argv)
    EXCLUDE.extend(args.exclude_tests)
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES and not any(fnmatch.fnmatch(m, n) for m in MODULES)]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    names = list(dict.fromkeys(m for n in names for m in MODULES if m == n or fnmatch.fnmatch(m, n)))  # as given

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.list:
        for n in names:
            m = MODULES[n]
            print(f"{n}: {m.source}" + (f" (functions: {', '.join(m.functions)})" if m.functions else ""))
            for t in test_files(m):
                print(f"    {t}")
        return 0
    if not args.report:
        total = 0.0
        for n in names:
            total += run(n, MODULES[n], args.fresh, args.retest, log)
        log(f"all done in {total / 60:.1f} min" + (f"; FAILED: {', '.join(FAILED)}" if FAILED else ""))
    report(names, args.show, print)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
