"""`lmkit verify`: the quick cases pass through the CLI, a wrong expectation or a planted defect fails
with exit 1, the registry lists and filters, the PTB KN cases measure what they claim on any corpus,
and (LMKIT_SLOW=1 with ../shared present) the KN full cases pass on real PTB."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmkit import api, verify
from lmkit.cli import app
from lmkit.verify import FULL, QUICK, Case, Env, Measurement, Tolerance, run_cases

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMKIT_SHARED", REPO.parent / "shared"))
PTB = SHARED / "corpora" / "ptb"
runner = CliRunner()
QUICK_NAMES = [c.name for c in verify.QUICK_CASES]
PTB_NAMES = ["ptb-kn5-published", "ptb-kn5-kenlm", "ptb-kn3-kenlm", "ptb-lstm", "ptb-transformer"]


def cli(*args):
    return runner.invoke(app, ["verify", *map(str, args)])


def by_name(name: str) -> Case:
    return next(c for c in verify.registry() if c.name == name)


# -- the quick cases --------------------------------------------------------------------------------
def test_quick_passes_lists_every_quick_case_and_never_imports_torch():
    """The user's command, in a fresh interpreter: `lmkit verify --quick --format json`."""
    code = ("import sys\nfrom lmkit.cli import app\ntry:\n    app(['verify', '--quick', '--format', 'json'])\n"
            "except SystemExit as exc:\n    code = exc.code\n"
            "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\nsys.exit(code)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["case"] for row in rows] == QUICK_NAMES
    assert {row["status"] for row in rows} == {"pass"}
    assert all(row["deviation_value"] <= row["tolerance_value"] for row in rows)
    assert "torch imported: False" in r.stderr
    n = len(QUICK_NAMES)
    assert re.search(rf"{n} cases in [\d.]+ s: {n} passed, 0 failed", r.stderr)


def test_quick_cases_cover_what_the_issue_asks_for():
    kinds = {c.name.split("-")[0] for c in verify.QUICK_CASES}
    assert {"hand", "nltk", "bleu", "char", "ppl"} <= kinds
    assert {c.name for c in verify.QUICK_CASES if c.name.startswith("hand-")} == \
        {"hand-mle2", "hand-laplace2", "hand-addk2", "hand-wb2", "hand-kn-basic2", "hand-kn2"}
    assert all(c.kind == QUICK and c.needs is None and c.tolerance.value <= 1e-9 for c in verify.QUICK_CASES)
    # live references carry no stored expectation: it is computed when the case runs
    assert {c.name for c in verify.QUICK_CASES if c.expected is None} == \
        {"nltk-mle3", "nltk-laplace2", "nltk-lidstone3", "bleu-papineni", "bleu-sacrebleu"}


def test_no_flags_runs_the_quick_cases_and_says_full_cases_need_corpus():
    r = cli("--format", "json")
    assert r.exit_code == 0, r.stderr
    assert [row["case"] for row in json.loads(r.stdout)] == QUICK_NAMES
    assert "full cases" in r.stderr and "--corpus" in r.stderr


def test_papineni_bleu_by_hand():
    """The in-house BLEU itself, on a pair small enough to count: hyp 'a b c d e' vs ref 'a b c d f g'.
    Matches 4/5, 3/4, 2/3, 1/2; BP = exp(1 - 6/5)."""
    expected = 100 * math.exp(1 - 6 / 5) * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert verify.papineni_bleu(["a b c d e"], ["a b c d f g"]) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        verify.papineni_bleu(["a b"], ["c d"])


# -- failures are reported ------------------------------------------------------------------------
def test_wrong_expectation_problem_and_crash_fail(tmp_path):
    good = by_name("hand-mle2")
    wrong = dataclasses.replace(good, name="wrong-mle", expected=0.5)  # the true value is 1/3
    flagged = dataclasses.replace(good, name="flagged", measure=lambda env: Measurement(1 / 3, problems=["bad count"]))
    crash = dataclasses.replace(good, name="crash", measure=lambda env: 1 / 0)
    results = run_cases([good, wrong, flagged, crash], Env(tmp_path))
    assert [r.status for r in results] == ["pass", "fail", "fail", "fail"]
    assert results[1].measured == pytest.approx(1 / 3) and results[1].deviation == pytest.approx(1 / 3)
    assert "exceeds" in results[1].note
    assert results[2].note == "bad count"
    assert results[3].note.startswith("error: ZeroDivisionError")


def test_cli_exits_1_with_the_table_when_a_case_fails(monkeypatch):
    wrong = dataclasses.replace(by_name("hand-laplace2"), name="wrong-laplace", expected=1 / 13)  # true: 1/14
    monkeypatch.setattr(verify, "QUICK_CASES", [by_name("hand-mle2"), wrong])
    r = cli("--quick", "--format", "json")
    assert r.exit_code == 1
    rows = json.loads(r.stdout)
    assert [(row["case"], row["status"]) for row in rows] == [("hand-mle2", "pass"), ("wrong-laplace", "fail")]
    error = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "1 of 2 verify cases failed: wrong-laplace" in error[0]
    assert "expected 0.0769231" in error[0]


def test_planted_defects_are_caught(monkeypatch, tmp_path):
    """Break lmkit on purpose: the cases that depend on the broken part fail, the others still pass."""
    from lmkit.evaluate import bleu
    from lmkit.models.ngram.model import NgramModel, TableModel

    def skewed(self, sequences):  # every log-probability 0.1 % too small
        return TableModel.flat_logprobs(self, sequences) * 1.001

    original = bleu.corpus_bleu
    monkeypatch.setattr(NgramModel, "flat_logprobs", skewed)
    monkeypatch.setattr(bleu, "corpus_bleu", lambda h, r, lowercase=False: original(h, r, lowercase=True))
    names = ["hand-kn2", "nltk-laplace2", "bleu-sacrebleu", "ppl-arithmetic"]
    results = run_cases([by_name(n) for n in names], Env(tmp_path))
    assert {r.case.name: r.status for r in results} == {"hand-kn2": "fail", "nltk-laplace2": "fail",
                                                        "bleu-sacrebleu": "fail", "ppl-arithmetic": "pass"}
    assert "per-position" in results[1].note  # ARPA models keep the true scorer: ppl-arithmetic unaffected


# -- the registry: --list and --case ---------------------------------------------------------------
def test_list_prints_the_registry_without_running():
    r = cli("--list", "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = {row["case"]: row for row in json.loads(r.stdout)}
    assert list(rows)[: len(QUICK_NAMES)] == QUICK_NAMES and set(PTB_NAMES) <= set(rows)
    assert rows["ptb-kn5-published"]["expected"] == 141.2 and rows["ptb-kn5-published"]["tolerance"] == "±1%"
    assert rows["ptb-kn5-kenlm"]["expected"] == 141.19 and rows["ptb-kn3-kenlm"]["tolerance"] == "±0.1%"
    assert rows["ptb-lstm"]["expected"] == 113.7 and rows["ptb-transformer"]["tolerance"] == "±3%"
    assert rows["ptb-lstm"]["neural"] is True and rows["ptb-lstm"]["needs"] == "corpus"
    assert "--max-tokens 5340000" in rows["ptb-lstm"]["protocol"] and rows["ptb-lstm"]["why"]
    assert rows["nltk-mle3"]["expected"] == "live"
    assert "cases in" not in r.stderr  # nothing ran
    r = cli("--list", "--case", "ptb-*", "--skip-neural", "--format", "json")
    assert [row["case"] for row in json.loads(r.stdout)] == PTB_NAMES[:3]


def test_case_filter_with_globs_keeps_registry_order():
    r = cli("--case", "char-bpc", "--case", "hand-kn*", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert [row["case"] for row in json.loads(r.stdout)] == ["hand-kn-basic2", "hand-kn2", "char-bpc"]


@pytest.mark.parametrize("args,message", [
    (["--case", "no-such-case"], "--case 'no-such-case' matches no case"),
    (["--case", "ptb-kn3-kenlm"], "ptb-kn3-kenlm needs the PTB folder"),
    (["--quick", "--corpus", "."], "--quick runs only the quick cases"),
    (["--corpus", "/no/such/folder"], "corpus directory not found"),
])
def test_usage_errors_are_one_line(args, message):
    r = cli(*args)
    assert r.exit_code == (1 if "not found" in message else 2)
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_keep_must_be_new_or_empty(tmp_path):
    (tmp_path / "x").write_text("mine")
    r = cli("--case", "hand-mle2", "--keep", tmp_path)
    assert r.exit_code == 2 and "not empty" in r.stderr


# -- full cases, parametrised by the corpus ---------------------------------------------------------
@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A slice of the bundled Shakespeare corpus standing in for PTB (a folder with train/valid/test)."""
    src = REPO / "corpora" / "shakespeare"
    d = tmp_path / "small"
    d.mkdir()
    for split, n in (("train", 3000), ("valid", 300), ("test", 300)):
        lines = (src / f"{split}.txt").read_text(encoding="utf-8").splitlines()[:n]
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def test_ptb_kn_cases_measure_test_perplexity_of_the_given_corpus(small_corpus, tmp_path):
    """On a corpus that is not PTB the cases run and fail on the 82,430-token check, and the number they
    report is the KN test perplexity under the PTB protocol, computed here without lmkit.api."""
    from lmkit.data.corpus import count_tokens, encode, read_text
    from lmkit.data.vocab import Vocab
    from lmkit.evaluate.perplexity import score_encoded
    from lmkit.models.ngram import NgramConfig, NgramModel
    from lmkit.protocol import Protocol

    report = api.verify(corpus=small_corpus, cases=["ptb-kn*"], keep=tmp_path / "keep")
    results = {r.case.name: r for r in report.results}
    assert list(results) == PTB_NAMES[:3] and not report.ok
    assert all("expected 82,430" in r.note for r in results.values())
    assert results["ptb-kn5-published"].measured == results["ptb-kn5-kenlm"].measured  # one KN5 run, shared
    assert (tmp_path / "keep" / "runs" / "ptb-kn5" / "run.json").is_file()
    p = Protocol()
    train = read_text(small_corpus / "train.txt")
    vocab = Vocab.build(count_tokens(train, p), min_count=1)
    test = encode(read_text(small_corpus / "test.txt"), vocab, p)
    for order, name in ((5, "ptb-kn5-kenlm"), (3, "ptb-kn3-kenlm")):
        m = NgramModel(NgramConfig(order=order, smoothing="kn"), vocab, p)
        m.fit(encode(train, vocab, p), None)
        assert results[name].measured == pytest.approx(score_encoded(m, test).perplexity, rel=1e-12)


def _docs_recipe(heading: str) -> list[str]:
    """The `lmkit train` command under a docs/results.md heading, as arguments."""
    text = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(lmkit train .*?)```", section, re.S).group(1)
    return shlex.split(block.replace("\\\n", " "))[2:]  # without "lmkit train"


@pytest.mark.parametrize("family,heading,max_tokens", [("lstm", "### PTB LSTM", 5_340_000),
                                                       ("transformer", "### PTB Transformer", 4_100_000)])
def test_neural_cases_use_the_docs_recipe_with_a_token_budget(family, heading, max_tokens, tmp_path, monkeypatch):
    """The CLI turns the docs command (time budget swapped for the token budget) into the very request
    the case trains with. api.train is replaced by a recorder here: the real run takes 12 minutes."""
    args = _docs_recipe(heading)
    i = args.index("--time-budget")
    args[i:i + 2] = ["--max-tokens", str(max_tokens)]
    args[args.index("--corpus") + 1] = str(tmp_path)
    args[args.index("-o") + 1] = str(tmp_path / "run")
    seen = []
    monkeypatch.setattr(api, "train", lambda req, log=None: seen.append(req) or tmp_path / "run")
    r = runner.invoke(app, ["train", *args, "-q"])
    assert r.exit_code == 0, r.stderr
    ours = verify.neural_request(family, tmp_path, tmp_path / "run")
    theirs = seen[0]
    drop_none = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    for name in ("model", "context", "min_count", "seed", "sets"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert drop_none(ours.options) == drop_none(theirs.options)
    assert drop_none(ours.train_options) == drop_none(theirs.train_options)
    assert ours.train_options["max_tokens"] == max_tokens and "time_budget" not in ours.train_options
    api.resolve_model(ours.model, ours.options, ours.sets)  # the recipe's settings exist


def test_kenlm_summary_parser(tmp_path):
    (tmp_path / "summary.txt").write_text("order 3\nPerplexity including OOVs:\t712.5\nOOVs:\t3\nTokens:\t10\n")
    assert verify.read_kenlm_summary(tmp_path / "summary.txt") == \
        {3: {"Perplexity including OOVs": 712.5, "OOVs": 3.0, "Tokens": 10.0}}
    with pytest.raises(verify.DataError):
        verify.kenlm_cases(tmp_path)  # no order 5


def test_tolerance_relative_and_absolute():
    rel, ab = Tolerance(0.01), Tolerance(1e-9, relative=False)
    assert rel.accepts(141.2, 141.19) and not rel.accepts(141.2, 143.0)
    assert rel.describe() == "±1%" and ab.describe() == "±1e-09"
    assert ab.accepts(100.0, 100.0 + 1e-12) and not ab.accepts(100.0, 100.1)
    assert not rel.accepts(1.0, math.nan) and not rel.accepts(1.0, math.inf) and rel.accepts(math.inf, math.inf)


# -- real PTB (slow) --------------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("LMKIT_SLOW") != "1", reason="slow: set LMKIT_SLOW=1")
@pytest.mark.skipif(not (PTB / "train.txt").exists(), reason=f"PTB not present under {SHARED}")
def test_kn_full_cases_pass_on_real_ptb():
    report = api.verify(corpus=PTB, cases=["ptb-kn*"])
    assert [r.case.name for r in report.results] == PTB_NAMES[:3]
    assert report.ok, report.rows()
    assert all(r.case.kind == FULL for r in report.results)
