"""Fuzzing the CLI (issue 7, part A): hypothesis feeds random bytes as corpus/test/prompt files and random
combinations of the real options (read from the typer app, so new commands and options join in) to
commands run in-process. Whatever comes in: no exception escapes, the exit code is 0 (the input was
valid), 1 or 2, and a refusal is one 'error: ' line on stderr.

Bounded: deterministic examples (derandomize) and small max_examples keep the file well under a minute.
A longer campaign with fresh randomness: LMKIT_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_cli.py"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app

EXAMPLES = int(os.environ.get("LMKIT_FUZZ_EXAMPLES", "0"))
runner = CliRunner()


def fuzz_settings(examples: int):
    return settings(max_examples=EXAMPLES or examples, deadline=None, derandomize=not EXAMPLES, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("fuzz")
    corpus = base / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("the cat sat on the mat\nthe dog sat on the log\na cat saw a dog\n" * 4)
    (corpus / "valid.txt").write_text("the dog sat on the mat\na cat sat\n")
    (corpus / "test.txt").write_text("the cat sat on the log\nthe bird sat on the mat today\n")
    kn3 = api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, output=base / "kn3", progress=False))
    kn2 = api.train(api.TrainRequest(model="ngram:kn2", corpus=corpus, output=base / "kn2", progress=False))
    return {"base": base, "corpus": corpus, "kn3": kn3, "kn2": kn2, "vocab": kn3 / "vocab.json",
            "test": corpus / "test.txt", "counter": [0]}


def fresh(fx: dict, name: str) -> Path:
    """A new path under the module's folder (outputs of one example never meet another's)."""
    fx["counter"][0] += 1
    return fx["base"] / "ex" / f"{fx['counter'][0]}-{name}"


@pytest.fixture(scope="module", autouse=True)
def _build_the_app_once():
    """typer's runner rebuilds the click command on every call (~65 ms); the examples share one here."""
    import typer.testing

    if not hasattr(typer.testing, "_get_command"):
        yield
        return
    original, command = typer.testing._get_command, get_command(app)
    typer.testing._get_command = lambda _app: command
    yield
    typer.testing._get_command = original


def invoke(args: list, stdin: bytes | None, fx: dict):
    """One in-process run in an empty working directory, with a watchdog against hangs."""
    def hang(*_):
        raise TimeoutError(f"no answer in 60 s: lmkit {' '.join(map(str, args))}")

    work = fresh(fx, "cwd")
    work.mkdir(parents=True)
    old_cwd, old_alarm = os.getcwd(), signal.signal(signal.SIGALRM, hang)
    os.chdir(work)  # commands that default to ./runs write here
    signal.alarm(60)
    try:
        return runner.invoke(app, [str(a) for a in args], input=stdin)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        os.chdir(old_cwd)


def contract(r, args: list) -> None:
    what = "lmkit " + " ".join(map(str, args))
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{what}: {r.exception!r}"
    assert r.exit_code in (0, 1, 2), f"{what}: exit {r.exit_code}: {r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, f"{what}: {r.stderr}"
    if r.exit_code:
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], f"{what}: {r.stderr}"


# -- random bytes as text ---------------------------------------------------------------------------
TEXTISH = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from([b"the", b"cat", b"sat", b"\xef\xbb\xbf", b"\r\n", b"\n", b" ", b"\x00", b"\xff",
                              b"\xc3", "é".encode(), "e\u0301".encode(), "👩\u200d👧".encode(), b"\t", b"\r"]),
             max_size=60).map(b"".join),
)
READERS = ("vocab build", "vocab show", "score", "generate", "bleu", "check", "train --train", "train --valid",
           "train --test", "analyze")


def reader_args(which: str, f, fx: dict) -> list:
    c, out = fx["corpus"], fresh(fx, "out")
    return {
        "vocab build": ["vocab", "build", f, "-o", out, "-q"],
        "vocab show": ["vocab", "show", fx["vocab"], "--coverage", f],
        "score": ["score", fx["kn3"], f, "--per-token"],
        "generate": ["generate", fx["kn3"], "--prompt-file", f, "--max-tokens", "3"],
        "bleu": ["bleu", fx["kn3"], f],
        "check": ["check", fx["kn3"], f, "-q"],
        "train --train": ["train", "--train", f, "--valid", c / "valid.txt", "-o", out, "-q"],
        "train --valid": ["train", "--train", c / "train.txt", "--valid", f, "--level", "char", "-o", out, "-q"],
        "train --test": ["train", "--model", "ngram:wb2", "--train", c / "train.txt", "--valid", c / "valid.txt",
                         "--test", f, "-o", out, "-q"],
        "analyze": ["analyze", fx["kn3"], fx["kn2"], "--text", f, "-q"],
    }[which]


def test_random_bytes_as_text_files(fx):
    has_analyze = "analyze" in commands()

    @fuzz_settings(120)
    @given(data=TEXTISH, which=st.sampled_from(READERS), via_stdin=st.booleans())
    def run(data, which, via_stdin):
        if which == "analyze" and not has_analyze:
            return
        if via_stdin:
            args, stdin = reader_args(which, "-", fx), data
        else:
            f = fresh(fx, "input.txt")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
            args, stdin = reader_args(which, f, fx), None
        contract(invoke(args, stdin, fx), args)

    run()


# -- random option combinations ---------------------------------------------------------------------
INTS = st.one_of(st.sampled_from(["-1", "0", "1", "2", "3", str(10**30), str(2**63), "1e3", "abc", "", "0x10"]),
                 st.integers(-5, 12).map(str))
FLOATS = st.one_of(st.sampled_from(["nan", "inf", "-inf", "0", "-1", "0.5", "1e308", "1e-300", "abc", "", "1,5"]),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
JUNK = st.text(max_size=10)
CHOICES = {  # option name -> plausible values (valid and not); anything else gets JUNK
    "model": ["ngram", "ngram:kn2", "ngram:addk2", "ngram:mle1", "ngram:wb3", "ngram:kn-basic2", "ngram:stupid2",
              "ngram:katz2", "ngram:jm2", "ngram:laplace1", "lstm", "mlp", "transformer", "ngram:kn0", "mix", "foo"],
    "models": ["ngram:kn2", "ngram:kn2,ngram:wb2", "ngram:kn2,lstm", "ngram:kn2,mlp", ",", "foo", "ngram:kn2,kn2"],
    "context": ["sentence", "stream", "both"], "level": ["word", "char", "byte"],
    "normalize": ["NFC", "NFD", "NFKC", "nfc"], "task": ["lm", "translate", "mt"],
    "smoothing": ["kn", "kn-basic", "addk", "mle", "laplace", "katz", "stupid", "jm", "wb", "good-turing"],
    "k": ["auto", "0.5", "0", "-1", "nan", "x"], "cell": ["lstm", "gru", "rnn", "tcn"],
    "positions": ["learned", "sinusoidal", "rope"], "optimizer": ["adamw", "sgd", "lion"],
    "schedule": ["cosine", "linear", "constant", "step"], "device": ["cpu", "auto", "cuda", "cuda:1", "tpu"],
    "precision": ["auto", "fp32", "bf16", "fp16", "fp8"], "time_budget": ["1s", "0s", "-1s", "inf", "soon", "2m"],
    "fmt": ["table", "tsv", "csv", "json", "jsonl", "markdown", "text", "xml"],
    "strategy": ["greedy", "sample", "beam", "nucleus"], "sort": ["test_ppl", "-valid_ppl", "model", "bogus"],
    "by": ["context-frequency", "length", "oov", "length,oov", "colour"], "src": ["de", "en", "src"],
    "tgt": ["en", "de", "tgt"], "fractions": ["0.5,1", "1", "0", "2", "0.5,0.5", "abc"],
    "sets": ["layers=1", "unknown=1", "k=auto", "order=2", "betas=0.9", "lstm.layers=1", "hidden=4", "=", "x"],
    "prompt": ["the", "", "the cat", "<s>", "</s> <unk>", "👩\u200d👧 é"],
}
SKIP = {"compile_", "help", "version", "list_"}  # torch.compile costs minutes; help/version are not inputs


_COMMANDS: dict = {}


def commands() -> dict:
    """Every leaf command by its name ('vocab build'), built once."""
    if _COMMANDS:
        return _COMMANDS
    out = _COMMANDS

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            out[" ".join(path)] = cmd

    walk(get_command(app), [])
    return out


def annotation(p):
    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    if ann is not None:
        return ann
    return {"integer": int, "float": float, "boolean": bool, "path": Path}.get(getattr(p.type, "name", ""), str)


def random_file(draw, fx: dict) -> Path:
    f = fresh(fx, "rand.txt")
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(draw(TEXTISH))
    return f


def occupied(fx: dict) -> Path:
    """An existing non-empty folder as an output: refused, or replaced under --force (so never a fixture)."""
    d = fresh(fx, "occupied")
    d.mkdir(parents=True)
    (d / "keep.txt").write_text("x\n")
    return d


def value_for(draw, p, fx: dict):
    name, ann = p.name, annotation(p)
    paths = {
        "corpus": lambda: draw(st.sampled_from([fx["corpus"], fx["base"] / "missing", fx["test"]])),
        "vocab": lambda: draw(st.sampled_from([fx["vocab"], fx["test"], fx["base"] / "missing.json"])),
        "resume": lambda: draw(st.sampled_from([fx["base"] / "missing", fx["corpus"], fx["kn3"]])),
    }
    if name in paths:
        return paths[name]()
    if name in ("output", "runs_dir", "keep"):
        return fresh(fx, "out") if draw(st.booleans()) else occupied(fx)
    if name in ("train_file", "valid_file", "test_file", "prompt_file", "coverage", "text", "reference"):
        return draw(st.sampled_from(["-", fx["test"], fx["base"] / "missing.txt"])) if draw(st.booleans()) \
            else random_file(draw, fx)
    if name in CHOICES:
        return draw(st.one_of(st.sampled_from(CHOICES[name]), JUNK))
    if ann is int:
        return draw(INTS)
    if ann is float:
        return draw(FLOATS)
    return draw(JUNK)


def positional(draw, p, fx: dict) -> list:
    n = p.name.lower()
    if n == "runs":
        return draw(st.sampled_from([[fx["kn3"], fx["kn2"]], [fx["kn3"]], [fx["kn3"], fx["base"] / "missing"],
                                     [fx["corpus"], fx["kn2"]]]))
    if "vocab" in n:
        return [draw(st.sampled_from([fx["vocab"], fx["test"]]))]
    if "run" in n or "model" in n:
        return [draw(st.sampled_from([fx["kn3"], fx["kn2"], fx["test"], fx["base"] / "missing"]))]
    if not p.required and draw(st.booleans()):
        return []
    return [draw(st.sampled_from(["-", fx["test"]])) if draw(st.booleans()) else random_file(draw, fx)]


@st.composite
def invocations(draw, fx: dict, names: list[str]):
    cmds = commands()
    name = draw(st.sampled_from([n for n in names if n in cmds]))
    cmd = cmds[name]
    args: list = name.split()
    for p in cmd.params:
        if p.param_type_name == "argument":
            args += positional(draw, p, fx)
    options = [p for p in cmd.params if p.param_type_name == "option" and p.name not in SKIP]
    chosen = draw(st.lists(st.sampled_from(options), max_size=6, unique_by=lambda p: p.name)) if options else []
    chosen += [p for p in options if p.required and p not in chosen]
    for p in chosen:
        if getattr(p, "is_flag", False) or annotation(p) is bool:
            flags = list(p.opts) + list(getattr(p, "secondary_opts", []))
            args.append(draw(st.sampled_from(flags)))
            continue
        for _ in range(draw(st.integers(1, 2)) if getattr(p, "multiple", False) else 1):
            args += [p.opts[0], value_for(draw, p, fx)]
    stdin = draw(TEXTISH) if "-" in args else None
    return name, args, stdin


def bounded(name: str, args: list, fx: dict) -> list:
    """Budgets appended last (the last value of an option wins) so an accepted neural run or lineup trains
    for seconds, on the tiny corpus; refusals are unaffected."""
    if name == "train":
        models = [a for i, a in enumerate(args) if i and args[i - 1] in ("--model", "-m")]
        if models and models[-1].split(":")[0] in ("lstm", "mlp", "transformer"):
            return args + ["--max-tokens", "16", "--time-budget", "2s"]
    if name in ("compare", "curve") and not any(isinstance(a, Path) and (a / "run.json").exists() for a in args):
        return args + ["--corpus", fx["corpus"], "--max-tokens", "16", "--time-budget", "2s"]
    if name == "verify":
        return args + ["--list"]  # the registry only: running the cases takes minutes
    return args


FAST = ["vocab build", "vocab show", "models", "score", "generate", "bleu", "mix", "export-arpa", "check",
        "compare", "plot", "analyze", "verify"]


def _fuzz_options(fx, names, data):
    name, args, stdin = data.draw(invocations(fx, names))
    args = bounded(name, args, fx)
    contract(invoke(args, stdin, fx), args)


def test_random_option_combinations(fx):
    @fuzz_settings(150)
    @given(data=st.data())
    def run(data):
        _fuzz_options(fx, FAST + [n for n in commands() if n not in FAST + ["train", "curve"]], data)

    run()


def test_random_training_options(fx):
    @fuzz_settings(60)
    @given(data=st.data())
    def run(data):
        _fuzz_options(fx, ["train", "curve"], data)

    run()
