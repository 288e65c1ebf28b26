"""Bad options (issue 7, part A): every numeric option of every command (found by walking the typer app, so
commands added later are covered) at 0, -1, 10**30 and 'abc' (floats also NaN and inf); unknown model
names and variants; contradictory options. Refusals are ONE stderr line, exit 2 for usage (1 for data),
never a traceback, nothing left behind. docs/reliability.md lists these cases under "Options"."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app

runner = CliRunner()
HUGE = str(10**30)
INT_PROBES = ("0", "-1", HUGE, "abc")
FLOAT_PROBES = INT_PROBES + ("nan", "inf")
MISSING = "/nonexistent/lmkit-sentinel.txt"  # options that pass validation then fail here: "file not found"

# Probe values a command may accept (its validation lets them through): legitimate extremes, such as
# seed 0, dropout 0 or a budget of 10**30 that another budget ends. Any other accepted probe is a bug.
ALLOWED = {
    ("train", "--seed"): {"0"}, ("train", "--min-count"): {HUGE}, ("train", "--max-size"): {HUGE},
    ("train", "--dropout"): {"0"}, ("train", "--epochs"): {HUGE}, ("train", "--max-tokens"): {HUGE},
    ("train", "--batch-size"): {HUGE}, ("train", "--seq-len"): {HUGE}, ("train", "--eval-every"): {HUGE},
    ("train", "--patience"): {HUGE}, ("train", "--warmup"): {"0", HUGE}, ("train", "--clip"): {"0", HUGE},
    ("train", "--weight-decay"): {"0"},
    ("train", "--order"): set(), ("train", "--layers"): set(), ("train", "--hidden"): set(),
    ("train", "--embed"): set(), ("train", "--d-model"): set(), ("train", "--heads"): set(),
    ("train", "--window"): set(), ("train", "--block-size"): set(), ("train", "--lr"): set(),
    ("train", "--threads"): set(),
    ("generate", "--max-tokens"): set(), ("generate", "--temperature"): {HUGE}, ("generate", "--top-k"): {HUGE},
    ("generate", "--top-p"): set(), ("generate", "--beam"): set(), ("generate", "--length-penalty"): {"0"},
    ("generate", "--seed"): {"0"}, ("generate", "--num"): set(),
    ("score", "--stride"): {HUGE}, ("bleu", "--beam"): set(),
    ("compare", "--seed"): {"0"}, ("compare", "--max-tokens"): {HUGE}, ("compare", "--min-count"): {HUGE},
    ("compare", "--bootstrap"): set(), ("compare", "--confidence"): set(), ("compare", "--seeds"): set(),
    ("vocab build", "--min-count"): {HUGE}, ("vocab build", "--max-size"): {HUGE},
    ("vocab show", "--top"): {"0", HUGE},
}


@pytest.fixture(autouse=True)
def _build_the_app_once(monkeypatch):
    """typer's runner rebuilds the click command on every call (~65 ms); hundreds of calls share one here."""
    import typer.testing

    if hasattr(typer.testing, "_get_command"):
        command = get_command(app)
        monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)


def cli(*args, input: str | None = None):
    """Invoke in-process with a watchdog: a hang is a failure, not a stuck suite."""
    def hang(*_):
        raise TimeoutError(f"no answer in 60 s: lmkit {' '.join(map(str, args))}")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        return runner.invoke(app, [str(a) for a in args], input=input)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def contract(r, what: str) -> str | None:
    """Exit 0, or exit 1/2 with exactly one 'error: ' line; never a traceback. The error line, if any."""
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{what}: {r.exception!r}"
    assert r.exit_code in (0, 1, 2), f"{what}: exit {r.exit_code}: {r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, f"{what}: {r.stderr}"
    if r.exit_code == 0:
        return None
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {r.stderr}"
    return lines[0]


def one_error_line(r, code: int, match: str) -> str:
    line = contract(r, match)
    assert r.exit_code == code and line is not None and match in line, f"exit {r.exit_code}: {r.stderr}"
    return line


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("options")
    corpus = base / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("the cat sat on the mat\nthe dog sat on the log\na cat saw a dog\n" * 3)
    (corpus / "valid.txt").write_text("the dog sat on the mat\na cat sat\n")
    (corpus / "test.txt").write_text("the cat sat on the log\nthe bird sat on the mat today\n")
    kn3 = api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, output=base / "kn3", progress=False))
    kn2 = api.train(api.TrainRequest(model="ngram:kn2", corpus=corpus, output=base / "kn2", progress=False))
    tf = api.train(api.TrainRequest(model="transformer", corpus=corpus, output=base / "tf", progress=False,
                                    options={"layers": 1, "d_model": 8, "heads": 2, "block_size": 4},
                                    train_options={"max_tokens": 16, "device": "cpu", "threads": 1}))
    return {"base": base, "corpus": corpus, "kn3": kn3, "kn2": kn2, "tf": tf, "test": corpus / "test.txt",
            "vocab": kn3 / "vocab.json"}


def commands() -> list[tuple[str, object]]:
    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            out.append((" ".join(path), cmd))

    walk(get_command(app), [])
    return out


def numeric_kind(param) -> type | None:
    """int or float for a numeric option (typer >= 0.22 and the click-based typer alike)."""
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if ann in (int, float):
        return ann
    name = getattr(getattr(param, "type", None), "name", "")
    return {"integer": int, "int": int, "float": float}.get(name)


def train_families(param) -> list[str]:
    """The families whose configs have this option (each checks its own); a TrainConfig option is checked
    the same way for every neural family, so once; an option of no config (seed, min-count) with two."""
    from dataclasses import fields

    from lmkit.train import TrainConfig

    if param.name in {f.name for f in fields(TrainConfig)}:
        return ["lstm"]
    families = [row["family"] for row in api.list_models() if param.name in {o["name"] for o in row["options"]}]
    return families or ["ngram", "lstm"]


def bases(name: str, cmd, fx: dict, out: Path, param=None) -> dict[str, list]:
    """Valid invocations of `name` (or, for training, valid up to reading data: MISSING)."""
    known = {
        "train": {fam: ["train", "--model", fam, "--train", MISSING, "--valid", MISSING, "-o", out, "-q"]
                  for fam in (train_families(param) if param is not None else ("ngram", "lstm"))},
        "score": {"transformer": ["score", fx["tf"], fx["test"]]},
        "generate": {s: ["generate", fx["kn3"], "--max-tokens", "5", "--strategy", s]
                     for s in ("greedy", "sample", "beam")},
        "bleu": {"ngram": ["bleu", fx["kn3"], fx["test"]]},
        "compare": {"runs": ["compare", fx["kn3"], fx["kn2"]],
                    "lineup": ["compare", "--corpus", MISSING, "--models", "ngram:kn2,lstm", "-o", out, "-q"]},
        "vocab build": {"file": ["vocab", "build", fx["corpus"] / "train.txt", "-o", out / "v.json", "-q"]},
        "vocab show": {"file": ["vocab", "show", fx["vocab"]]},
        "curve": {"lineup": ["curve", "--corpus", MISSING, "--models", "ngram:kn2,lstm", "--runs-dir", out, "-q"]},
    }
    if name in known:
        return known[name]
    args: list = name.split()  # a command added later: fill its arguments and required options by name
    for p in cmd.params:
        if p.param_type_name == "argument" and p.required:
            n = p.name.lower()
            if n == "runs":
                args += [fx["kn3"], fx["kn2"]]
            elif "vocab" in n:
                args.append(fx["vocab"])
            elif "run" in n or "model" in n:
                args.append(fx["kn3"])
            else:
                args.append(fx["test"])
        elif p.param_type_name == "option" and p.required:
            args += [p.opts[0], out / "output"]
    return {"generic": args}


def test_every_numeric_option_at_zero_negative_huge_and_not_a_number(fx, tmp_path):
    seen, accepted, invocations = set(), {}, 0
    for name, cmd in commands():
        for param in cmd.params:
            kind = numeric_kind(param)
            if param.param_type_name != "option" or kind is None:
                continue
            flag = max(param.opts, key=len)
            seen.add((name, flag))
            for base_name, base in bases(name, cmd, fx, tmp_path / "out", param).items():
                for value in (FLOAT_PROBES if kind is float else INT_PROBES):
                    what = f"lmkit {name} [{base_name}] {flag} {value}"
                    r = cli(*base, flag, value)
                    invocations += 1
                    line = contract(r, what)
                    if value == "abc":
                        assert r.exit_code == 2 and flag in line, f"{what}: {r.stderr}"
                    sentinel = line is not None and "lmkit-sentinel.txt" in line
                    if r.exit_code == 0 or sentinel:
                        accepted.setdefault((name, flag), set()).add(value)
                    elif r.exit_code != 0:
                        assert not (tmp_path / "out").exists(), f"{what}: left {tmp_path / 'out'}"
                    if (tmp_path / "out").exists():
                        import shutil

                        shutil.rmtree(tmp_path / "out")
    assert invocations > 250 and {("train", "--lr"), ("generate", "--beam"), ("compare", "--bootstrap")} <= seen
    wrong = {key: values - ALLOWED[key] for key, values in accepted.items() if key in ALLOWED
             and values - ALLOWED[key]}
    assert not wrong, f"nonsense values accepted: {wrong}"


def test_accepted_extremes_really_train(fx, tmp_path):
    """The extremes the option check lets through (previous test) work end to end, neural families too."""
    c = fx["corpus"]
    common = ["--corpus", c, "--seed", "0", "--min-count", "1", "--max-size", HUGE, "--dropout", "0",
              "--warmup", "0", "--clip", "0", "--weight-decay", "0", "--eval-every", HUGE, "--patience", HUGE,
              "--epochs", HUGE, "--max-tokens", "32", "-q"]
    for i, (model, extra) in enumerate((("lstm", ["--context", "stream", "--hidden", "4", "--embed", "4",
                                                  "--batch-size", "2", "--seq-len", HUGE]),
                                        ("transformer", ["--d-model", "8", "--heads", "2", "--layers", "1",
                                                         "--context", "sentence", "--batch-size", HUGE]),
                                        ("mlp", ["--hidden", "4", "--embed", "4", "--window", "2", "--context",
                                                 "stream", "--batch-size", "3", "--seq-len", HUGE]))):
        r = cli("train", "--model", model, *common, *extra, "-o", tmp_path / f"r{i}")
        assert r.exit_code == 0, f"{model}: {r.stderr}"
    r = cli("train", "--model", "lstm", "--corpus", c, "--hidden", "4", "--embed", "4", "--epochs", "0.5",
            "--max-tokens", HUGE, "--warmup", HUGE, "--clip", HUGE, "-q", "-o", tmp_path / "r3")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "r3" / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("spec, match", [
    ("ngram:kn0", "order must be between 1 and 10"), ("ngram:kn11", "order must be between 1 and 10"),
    ("ngram:foo3", "bad n-gram spec"), ("ngram:kn", "bad n-gram spec"), ("ngram:", "ends in ':'"),
    ("ngram:kn5:x", "bad n-gram spec"), ("ngram:kn99999999999999999999", "order must be between"),
    ("lstmx", "unknown model 'lstmx'"), ("NGRAM", "unknown model"), ("", "unknown model"),
    ("transformer:abc", "takes no ':variant'"), ("lstm:2", "takes no ':variant'"), ("mix", "is not trained"),
])
def test_unknown_model_names_and_variants(fx, tmp_path, spec, match):
    one_error_line(cli("train", "--model", spec, "--corpus", fx["corpus"], "-o", tmp_path / "o", "-q"), 2, match)
    if spec:  # in a lineup an empty name is an empty list item, skipped like a trailing comma
        one_error_line(cli("compare", "--models", f"ngram:kn2,{spec}", "--corpus", fx["corpus"], "-o",
                           tmp_path / "o", "-q"), 2, match)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, match", [
    (["--set", "unknown=1"], "unknown setting 'unknown'"),
    (["--model", "lstm", "--set", "layers=-1"], "layers must be at least 1"),
    (["--model", "lstm", "--set", "layers=abc"], "layers expects int"),
    (["--model", "lstm", "--set", "noequals"], "unknown setting 'noequals'"),
    (["--model", "lstm", "--set", "betas=0.9"], "betas needs two numbers"),
    (["--model", "lstm", "--set", "betas=0.9,1.5"], "betas needs two numbers"),
    (["--model", "lstm", "--set", "min_lr_ratio=nan"], "min_lr_ratio must be a finite number"),
    (["--model", "lstm", "--set", "seed=-5"], "--seed must be a whole number"),
    (["--model", "lstm", "--set", "embed_dropout=2"], "embed_dropout must be in [0, 1)"),
    (["--model", "lstm", "--set", "device=tpu"], "unknown --device 'tpu'"),
    (["--model", "lstm", "--time-budget", "inf"], "--time-budget must be a finite number"),
    (["--model", "lstm", "--time-budget", "1e400"], "--time-budget must be a finite number"),
    (["--model", "lstm", "--time-budget", "-5s"], "--time-budget must be positive"),
    (["--model", "lstm", "--time-budget", "soon"], "--time-budget expects a duration"),
    (["--model", "lstm", "--hidden", "600000"], "hidden 600000 is beyond lmkit's limit"),
    (["--model", "ngram:addk3", "--k", "nan"], "k must be a finite number"),
    (["--model", "ngram:addk3", "--k", "-1"], "k must be a finite number"),
    (["--model", "ngram:addk3", "--k", "lots"], "--k expects a number or 'auto'"),
])
def test_bad_set_values_and_budgets(fx, tmp_path, args, match):
    one_error_line(cli("train", *args, "--corpus", fx["corpus"], "-o", tmp_path / "o", "-q"), 2, match)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, match", [
    # train: an option the chosen model or run cannot honour
    (["train", "--model", "ngram:kn3", "--k", "0.5"], "--k applies to addk smoothing, not kn"),
    (["train", "--model", "ngram:kn3", "--set", "alpha=0.5"], "--set alpha applies to stupid smoothing"),
    (["train", "--model", "ngram:kn3", "--order", "4"], "--order 4 contradicts --model ngram:kn3"),
    (["train", "--model", "ngram:kn3", "--set", "order=4"], "--set order=4 contradicts --model ngram:kn3"),
    (["train", "--model", "ngram:addk3", "--k", "2", "--set", "k=3"], "--set k=3.0 contradicts --k"),
    (["train", "--model", "ngram:kn3", "--epochs", "2"], "--epochs applies only to neural models"),
    (["train", "--model", "ngram", "--layers", "3"], "do not apply to NgramConfig"),
    (["train", "--model", "lstm", "--order", "3"], "do not apply to RNNConfig"),
    (["train", "--model", "lstm", "--window", "3"], "do not apply to RNNConfig"),
    (["train", "--model", "transformer", "--cell", "gru"], "do not apply to TransformerConfig"),
    (["train", "--model", "lstm", "--tie-weights", "--embed", "4", "--hidden", "8"], "tie_weights needs embed"),
    (["train", "--model", "transformer", "--d-model", "10", "--heads", "3"], "divisible by heads"),
    (["train", "--context", "stream", "--task", "translate"], "--task translate needs --context sentence"),
    (["train", "--src", "de"], "give both --src and --tgt"),
    (["train", "--src", "de", "--tgt", "en", "--task", "lm"], "apply to --task translate"),
    (["train", "--model", "lstm", "--context", "sentence", "--seq-len", "35"],
     "--seq-len sets the window of --context stream"),
    (["train", "--model", "lstm", "--context", "stream", "--batch-size", "100000"], "more rows than the training"),
    (["train", "--model", "lstm", "--device", "cuda:7"], "--device cuda:7"),
    (["train", "--model", "lstm", "--device", "cpu", "--precision", "fp16"], "--precision fp16 needs a CUDA GPU"),
    # generate: an option of another decoding strategy
    (["generate", "KN3", "--strategy", "greedy", "--temperature", "0.5"], "only to --strategy sample"),
    (["generate", "KN3", "--strategy", "sample", "--beam", "8"], "--beam applies only to --strategy beam"),
    (["generate", "KN3", "--top-k", "5", "--length-penalty", "1"], "--length-penalty applies only to --strategy beam"),
    (["generate", "KN3", "--strategy", "greedy", "--num", "2"], "greedy decoding has one output"),
    (["generate", "KN3", "--strategy", "beam", "--beam", "2", "--num", "3"], "exceeds --beam"),
    # score, bleu, compare
    (["score", "KN3", "TEST", "--per-line", "--per-token"], "choose one of --per-line and --per-token"),
    (["score", "KN3", "TEST", "--stride", "2"], "--stride applies to models with a bounded context"),
    (["score", "KN3", "TEST", "--device", "gpu0"], "unknown --device 'gpu0'"),
    (["score", "KN3", "TEST", "--src", "a", "--tgt", "b"], "is a language model"),
    (["bleu", "KN3", "TEST", "--beam", "3"], "--beam applies to translation BLEU"),
    (["compare", "KN3", "KN2", "--confidence", "0.9"], "give --bootstrap N too"),
    (["compare", "KN3", "KN2", "--bootstrap", "10", "--confidence", "1"], "--confidence must be between 0 and 1"),
    (["compare", "KN3", "KN2", "--corpus", "CORPUS"], "do not apply to existing run folders"),
    (["compare", "--models", ",", "--corpus", "CORPUS"], "--models lists no model"),
    (["compare", "--models", "ngram:kn2", "--time-budget", "soon", "--corpus", "CORPUS"], "--time-budget expects"),
    (["compare", "--models", "ngram:kn2", "--context", "both", "--corpus", "CORPUS"], "unknown context"),
])
def test_contradictory_options_are_usage_errors(fx, tmp_path, args, match):
    names = {"KN3": fx["kn3"], "KN2": fx["kn2"], "TEST": fx["test"], "CORPUS": fx["corpus"]}
    args = [names.get(a, a) for a in args]
    if args[0] in ("train", "compare") and "--corpus" not in args:
        args += ["--corpus", fx["corpus"]]
    if args[0] in ("train", "compare") and fx["kn3"] not in args:
        args += ["-o", tmp_path / "o", "-q"]
    one_error_line(cli(*args), 2, match)
    assert not (tmp_path / "o").exists()


def test_vocab_options_with_a_given_vocabulary(fx, tmp_path):
    for extra in (["--min-count", "3"], ["--max-size", "10"]):
        one_error_line(cli("train", "--vocab", fx["vocab"], *extra, "--corpus", fx["corpus"], "-o", tmp_path / "o",
                           "-q"), 2, "with --vocab that vocabulary is used as it is")
    char = tmp_path / "char.json"
    assert cli("vocab", "build", fx["corpus"] / "train.txt", "--level", "char", "-o", char, "-q").exit_code == 0
    one_error_line(cli("train", "--vocab", char, "--level", "word", "--corpus", fx["corpus"], "-o", tmp_path / "o",
                       "-q"), 2, "--vocab was built with level=char")
    one_error_line(cli("train", "--vocab", char, "--lowercase", "--corpus", fx["corpus"], "-o", tmp_path / "o",
                       "-q"), 2, "lowercase")
    assert not (tmp_path / "o").exists()


def test_resume_refuses_options_that_would_be_ignored(fx, tmp_path):
    run = tmp_path / "lstm"
    r = cli("train", "--model", "lstm", "--corpus", fx["corpus"], "--hidden", "4", "--embed", "4",
            "--max-tokens", "16", "-o", run, "-q")
    assert r.exit_code == 0, r.stderr
    before = (run / "run.json").read_text()
    one_error_line(cli("train", "--resume", run, "--model", "ngram:kn3", "--corpus", fx["corpus"]), 2,
                   "--model, --corpus cannot change a resumed run")
    one_error_line(cli("train", "--resume", run, "--set", "lr=1"), 2, "--set cannot change a resumed run")
    one_error_line(cli("train", "--resume", run, "--lr", "1e30"), 2, "--lr must be a finite number")
    assert (run / "run.json").read_text() == before  # refused before the run was touched
    r = cli("train", "--resume", run, "--max-tokens", "32", "-q")  # budgets may change
    assert r.exit_code == 0, r.stderr


def test_click_parse_errors_are_one_line(fx):
    for args, match in ((["train", "--bogus"], "No such option: --bogus"), (["nosuch"], "No such command"),
                        (["--bogus"], "No such option"), (["score"], "Missing argument"),
                        (["bleu", fx["kn3"], fx["test"], "extra"], "unexpected extra argument"),  # score takes many
                        (["train", "--order"], "requires an argument"),
                        (["generate", fx["kn3"], "--format", "xml"], "--format 'xml'")):
        line = one_error_line(cli(*args), 2, match)
        assert "╭" not in line and "│" not in line
        if match in ("No such option: --bogus", "Missing argument"):  # typer's parse errors point at the help
            assert line.endswith(" -h'"), line
