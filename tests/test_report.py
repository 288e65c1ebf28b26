"""`lmkit report`: one self-contained HTML page of comparable runs, checked as HTML and in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import Browser, find_browser
from clitools import bundled_prefix, cli, one_error_line

from lmkit import api

NEURAL = {"batch_size": 8, "seq_len": 16, "warmup_steps": 1, "eval_every": 4, "max_tokens": 1600, "device": "cpu",
          "threads": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first lines of the bundled corpus: small enough to train four models in a few seconds."""
    return bundled_prefix(tmp_path_factory.mktemp("report") / "corpus", {"train": 1500, "valid": 80, "test": 80})


@pytest.fixture(scope="module")
def runs(corpus) -> list[Path]:
    out = corpus.parent / "runs"
    specs = [("kn3", "ngram:kn3", {}, {}), ("laplace2", "ngram:laplace2", {}, {}),
             ("mlp", "mlp", {"window": 3, "embed": 16, "hidden": 32}, NEURAL),
             ("lstm", "lstm", {"layers": 1, "embed": 16, "hidden": 32}, NEURAL)]
    return [api.train(api.TrainRequest(model=spec, corpus=corpus, output=out / name, options=options,
                                       train_options=dict(training), progress=False, min_count=2))
            for name, spec, options, training in specs]


class Page(HTMLParser):
    """What a test reads from the HTML without a browser: the comparison table's cells, the figures and their
    series ids, every external reference."""

    def __init__(self, html: str):
        super().__init__()
        self.cells: list[dict] = []  # data-col / data-value / text of each td of the comparison table
        self.figures: dict[str, dict] = {}
        self.ids: list[str] = []
        self.external: list[str] = []
        self._in_table = False
        self._cell = None
        self._figure = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "comparison-table":
            self._in_table = True
        if self._in_table and tag == "td":
            self._cell = {"col": a["data-col"], "value": json.loads(a["data-value"]), "text": ""}
        if tag == "figure":
            self._figure = a["id"]
            self.figures[a["id"]] = {"series": int(a["data-series"]), "ids": set(), "svg": 0}
        if tag == "svg" and self._figure:
            self.figures[self._figure]["svg"] += 1
        if a.get("id"):
            self.ids.append(a["id"])
            if self._figure and a["id"].startswith("series-"):
                self.figures[self._figure]["ids"].add("-".join(a["id"].split("-")[:len(self._figure.split("-")) + 2]))
        for attr in ("src", "href"):
            if a.get(attr) and not a[attr].startswith("#"):
                self.external.append(a[attr])
        if tag in ("link", "iframe", "object", "embed", "img"):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        if tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def compare_json(*args) -> list[dict]:
    out = cli("compare", *args, "--format", "json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def table_rows(page: Page, columns: int) -> list[dict]:
    return [{c["col"]: c["value"] for c in page.cells[i:i + columns]} for i in range(0, len(page.cells), columns)]


# -- the page, read as HTML ------------------------------------------------------------------------------
def test_the_page_holds_the_compare_table_curves_analysis_samples_and_provenance(runs, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", *runs, "-o", out)
    assert result.exit_code == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    expected = compare_json(*runs)
    shown = [c for c in expected[0] if c != "run" and any(r[c] is not None for r in expected)
             and (c != "status" or any(r[c] != "complete" for r in expected))]
    assert table_rows(page, len(shown)) == [{c: r[c] for c in shown} for r in expected]  # same rows, same order
    best = min(expected, key=lambda r: r["test_ppl"])
    assert f'{best["test_ppl"]:,.2f}' in [c["text"] for c in page.cells if c["col"] == "test_ppl"]
    # the neural runs have curves (one series each), the n-grams are named as having none
    assert page.figures["curve-tokens"]["series"] == len(page.figures["curve-tokens"]["ids"]) == 2
    assert page.figures["curve-time"]["series"] == 2
    assert "No learning curve for ngram:kn3, ngram:laplace2" in html
    for dim in ("context-frequency", "length"):  # analyze: one bar series per model
        figure = page.figures[f"buckets-{dim}"]
        assert figure["svg"] == 1 and figure["series"] == len(figure["ids"]) == 4
    assert len(page.ids) == len(set(page.ids)), "an id is used twice"
    assert page.external == [], page.external  # nothing outside the file
    assert "<script src" not in html and "http://" not in re.sub(r'xmlns(:\w+)?="[^"]+"', "", html)
    for run in runs:  # a section per model: run folder, command line, samples from the shared prompts
        record = json.loads((run / "run.json").read_text())
        assert str(run) in html and record["label"] in html
    prompts = [" ".join(line.split()[:3]) for line in (runs[0].parent.parent / "corpus" / "test.txt")
               .read_text().splitlines() if line.strip()][:3]
    samples = [unescape(t) for t in re.findall(r'<blockquote class="sample">(.*?)</blockquote>', html, re.S)]
    assert len(samples) == 3 * len(runs)  # every model continued the same prompts, in order
    assert all(s.startswith(prompts[i % 3]) for i, s in enumerate(samples)), (prompts, samples)
    assert "sacrebleu" in html and "lmkit" in html and "CPUs" in html
    assert html.count("passed (quick): normalisation pass, causality") == 4  # each run's check status


def test_bootstrap_intervals_are_the_tables_columns_and_error_bars(runs, tmp_path):
    out = tmp_path / "r.html"
    assert cli("report", *runs, "--bootstrap", 60, "--seed", 2, "--confidence", 0.9, "-o", out, "--samples", 0,
               "--no-analysis", "--device", "cpu").exit_code == 0
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    expected = compare_json(*runs, "--bootstrap", 60, "--seed", 2, "--confidence", 0.9)
    his = {c["value"] for c in page.cells if c["col"] == "test_ppl_hi"}
    assert his == {r["test_ppl_hi"] for r in expected} and None not in his
    assert page.figures["intervals"]["series"] == len(page.figures["intervals"]["ids"]) == len(expected)
    assert "90% percentile intervals, 60 paired resamples" in html
    assert "buckets-length" not in page.figures


def test_compare_report_writes_the_page_of_the_rows_it_printed(runs, tmp_path):
    out = tmp_path / "c.html"
    result = cli("compare", *runs, "--format", "json", "--report", out)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    page = Page(out.read_text(encoding="utf-8"))
    assert [c["value"] for c in page.cells if c["col"] == "model"] == [r["model"] for r in rows]
    assert "wrote" in result.stderr


def test_a_learning_curve_folder_gets_its_chart(corpus, tmp_path):
    folder = tmp_path / "curve"
    result = cli("curve", "--corpus", corpus, "--models", "ngram:kn3,ngram:laplace2", "--fractions", "0.5,1",
                 "--runs-dir", folder, "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "curve.html"
    assert cli("report", folder, "-o", out, "--samples", 0, "--no-analysis").exit_code == 0
    page = Page(out.read_text(encoding="utf-8"))
    assert page.figures["learning-curve"]["series"] == len(page.figures["learning-curve"]["ids"]) == 2
    assert len([c for c in page.cells if c["col"] == "model"]) == 4


def test_bad_input_is_one_line_or_a_marked_section(runs, tmp_path, corpus):
    one_error_line(cli("report", "-o", tmp_path / "r.html"), 2)  # no runs
    one_error_line(cli("report", *runs, "-o", tmp_path / "missing" / "r.html"), 2, "does not exist")
    one_error_line(cli("report", *runs, "-o", tmp_path), 2, "is a directory")
    for option, value in (("--seed", -1), ("--samples", -1), ("--samples", 10**6), ("--device", "gpu9"),
                          ("--bootstrap", 0)):
        one_error_line(cli("report", *runs, option, value, "-o", tmp_path / "r.html"), 2)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(corpus, elsewhere)
    (elsewhere / "test.txt").write_text("another test text\n")
    # another test file: compare refuses, so does report
    other = api.train(api.TrainRequest(model="ngram:kn3", corpus=elsewhere, output=tmp_path / "other",
                                       min_count=2, progress=False))
    refused = one_error_line(cli("compare", runs[0], other), 1)
    assert one_error_line(cli("report", runs[0], other, "-o", tmp_path / "r.html"), 1) == refused
    assert not (tmp_path / "r.html").exists()
    one_error_line(cli("compare", *runs, "--report", tmp_path / "missing" / "r.html"), 2, "does not exist")
    # a run folder without metrics.jsonl: its curve section says so, the page is still whole
    bare = tmp_path / "bare"
    shutil.copytree(runs[2], bare)
    (bare / "metrics.jsonl").unlink()
    out = tmp_path / "bare.html"
    assert cli("report", bare, runs[0], "-o", out, "--samples", 0, "--no-analysis").exit_code == 0
    html = out.read_text(encoding="utf-8")
    assert "No learning curve for" in html and "</html>" in html


def test_translation_runs_show_source_reference_hypothesis(tmp_path):
    d = tmp_path / "pairs"
    d.mkdir()
    words = "a b c d e f g h".split()
    for split, n in (("train", 300), ("valid", 20), ("test", 20)):
        src = [" ".join(words[(i + j) % 8] for j in range(4)) for i in range(n)]
        (d / f"{split}.src").write_text("\n".join(src) + "\n")
        (d / f"{split}.tgt").write_text("\n".join(s.upper() for s in src) + "\n")
    run = api.train(api.TrainRequest(model="ngram:kn3", corpus=d, output=tmp_path / "run", progress=False,
                                     min_count=1))
    out = tmp_path / "t.html"
    assert cli("report", run, "-o", out, "--no-analysis").exit_code == 0, "report of a translation run"
    html = out.read_text(encoding="utf-8")
    assert html.count(">source<") == 4 and html.count(">reference<") == 4 and html.count(">hypothesis<") == 4
    assert "A B C D" in html  # a reference of the test pairs
    (row,) = compare_json(run)
    assert row["bleu_signature"] and row["bleu_signature"] in html  # sacrebleu's signature, as compare shows it


# -- the page in a real browser --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium-family browser on PATH (.ci/run installs Debian's chromium; CHROME=... names one)")
    b = Browser(executable, tmp_path_factory.mktemp("profile"))
    yield b
    b.close()


def test_the_page_in_a_browser_offline(runs, tmp_path, browser):
    out = tmp_path / "report.html"
    assert cli("report", *runs, "-o", out).exit_code == 0
    browser.open(out)
    assert browser.errors() == []
    assert browser.requests() == [out.resolve().as_uri()]  # the page itself, nothing else
    expected = compare_json(*runs)
    rows = browser.evaluate("""Array.from(document.querySelectorAll('#comparison-table tbody tr')).map(tr =>
        Object.fromEntries(Array.from(tr.cells).map(td => [td.dataset.col, JSON.parse(td.dataset.value)])))""")
    assert [{k: r[k] for k in row} for row, r in zip(rows, expected)] == rows and len(rows) == len(expected)
    charts = browser.evaluate("""Array.from(document.querySelectorAll('figure.chart')).map(f => {
        const svg = f.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        const series = new Set(Array.from(f.querySelectorAll('[id^="series-"]')).map(e =>
            e.id.split('-').slice(0, f.id.split('-').length + 2).join('-')));
        return {id: f.id, expected: Number(f.dataset.series), series: series.size, width: box.width,
                height: box.height, drawn: svg ? svg.querySelectorAll('path, use, rect').length : 0}; })""")
    assert {c["id"] for c in charts} >= {"curve-tokens", "curve-time", "buckets-length"}
    for c in charts:
        assert c["series"] == c["expected"] > 0 and c["width"] > 200 and c["height"] > 100 and c["drawn"] > 10, c
    # sorting: a click on "test ppl" orders the rows by it, a second click reverses them
    order = """Array.from(document.querySelectorAll('#comparison-table tbody tr td[data-col="test_ppl"]'))
                 .map(td => JSON.parse(td.dataset.value))"""
    click = "document.querySelector('#comparison-table th[data-col=\"test_ppl\"] button').click()"
    browser.evaluate(click)
    assert browser.evaluate(order) == sorted(r["test_ppl"] for r in expected)
    browser.evaluate(click)
    assert browser.evaluate(order) == sorted((r["test_ppl"] for r in expected), reverse=True)
    browser.evaluate("document.querySelector('#comparison-table th[data-col=\"model\"] button').click()")
    names = browser.evaluate("""Array.from(document.querySelectorAll('#comparison-table tbody td[data-col="model"]'))
                               .map(td => td.textContent)""")
    assert names == sorted(names, key=str.lower) or names == sorted(names)
    # a model's name leads to its section
    target = browser.evaluate("document.querySelector('#comparison-table tbody a').getAttribute('href')")
    assert browser.evaluate(f"!!document.getElementById({json.dumps(target[1:])})")
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("LMKIT_DOCS_SCREENSHOT"):  # regenerating docs/img/report.png
        shutil.copy(shot, os.environ["LMKIT_DOCS_SCREENSHOT"])
    assert browser.errors() == []


def test_the_page_reads_dark_printed_and_without_javascript(runs, tmp_path, browser):
    import base64

    out = tmp_path / "report.html"
    assert cli("report", *runs, "-o", out, "--samples", 1).exit_code == 0
    background = "getComputedStyle(document.body).backgroundColor"
    browser.open(out)
    light = browser.evaluate(background)
    browser.call("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
                 session=True)
    dark = browser.evaluate(background)
    browser.call("Emulation.setEmulatedMedia", {"features": []}, session=True)
    assert light == "rgb(255, 255, 255)" and dark != light and sum(map(int, re.findall(r"\d+", dark))) < 150
    pdf = base64.b64decode(browser.call("Page.printToPDF", {}, session=True)["data"])
    assert pdf[:5] == b"%PDF-" and len(pdf) > 20_000
    browser.call("Emulation.setScriptExecutionDisabled", {"value": True}, session=True)
    try:
        browser.open(out)
        cells = browser.evaluate("document.querySelectorAll('#comparison-table tbody td').length")
        svgs = browser.evaluate("document.querySelectorAll('figure.chart svg').length")
    finally:
        browser.call("Emulation.setScriptExecutionDisabled", {"value": False}, session=True)
    assert cells == len(Page(out.read_text(encoding="utf-8")).cells) > 0 and svgs >= 4
    assert browser.errors() == []


def test_runs_of_different_levels_meet_on_bits_per_byte_and_are_not_bucketed(runs, corpus, tmp_path):
    char = api.train(api.TrainRequest(model="ngram:kn5", level="char", corpus=corpus, output=tmp_path / "char",
                                      progress=False, min_count=1))
    out = tmp_path / "levels.html"
    assert cli("report", runs[0], char, "-o", out, "--samples", 1).exit_code == 0
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    expected = compare_json(runs[0], char)
    assert [c["value"] for c in page.cells if c["col"] == "bits_per_byte"] == [r["bits_per_byte"] for r in expected]
    assert not any(c["col"] == "test_ppl" for c in page.cells)  # per-token columns left out, as compare does
    assert "ranked by bits per byte" in html and "Not analysed:" in html and "level word vs char" in html
