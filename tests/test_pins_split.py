"""`lmkit corpus split` with asymmetric shares: each file's line count, and that the three files partition
the input. `--by line` shares are exact only in expectation (a keyed hash per line, docs/scale.md), so its
counts are checked against a binomial band narrow enough that swapping two shares lands far outside it;
`--by contiguous` counts are exact (round half up of n times the cumulative shares)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from clitools import cli

LINES = 3000


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """3,000 distinct lines, then 30 repeats of earlier ones (a repeat must follow its first copy)."""
    lines = [f"line {i} says {'abcdefghij'[i % 10]} {i * 7919 % 1000}" for i in range(LINES)]
    lines += [lines[i * 97] for i in range(30)]
    path = tmp_path_factory.mktemp("split") / "all.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def split(source: Path, out: Path, ratios: str, by: str, seed: int = 0) -> tuple[dict, dict]:
    r = cli("corpus", "split", source, "--ratios", ratios, "--by", by, "--seed", seed, "-o", out,
            "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = {row["split"]: row for row in json.loads(r.stdout)}
    files = {s: (out / f"{s}.txt").read_text().splitlines() if (out / f"{s}.txt").exists() else []
             for s in ("train", "valid", "test")}
    return rows, files


def assert_partition(source: Path, rows: dict, files: dict) -> None:
    """The files hold the input's lines, each exactly as often as in the input; the printed counts match."""
    lines = source.read_text().splitlines()
    assert Counter(files["train"] + files["valid"] + files["test"]) == Counter(lines)  # nothing lost or added
    for name, got in files.items():
        assert rows[name]["lines"] == len(got)
        assert rows[name]["tokens"] == sum(len(x.split()) for x in got)


@pytest.mark.parametrize("ratios,shares", [("70/20/10", (0.7, 0.2, 0.1)), ("60/10/30", (0.6, 0.1, 0.3)),
                                           ("0.5/0.35/0.15", (0.5, 0.35, 0.15))])
@pytest.mark.parametrize("seed", [0, 1])
def test_line_split_follows_asymmetric_shares(source, tmp_path, ratios, shares, seed):
    rows, files = split(source, tmp_path / "out", ratios, "line", seed)
    assert_partition(source, rows, files)
    lines = source.read_text().splitlines()
    for got in files.values():
        placed = set(got)
        assert [x for x in lines if x in placed] == got  # input order kept; every copy of a line in one split
    distinct = LINES  # the repeats follow their first copy, so the hash decides LINES independent lines
    for name, share in zip(("train", "valid", "test"), shares):
        got = len(set(files[name]))
        band = 4.5 * math.sqrt(distinct * share * (1 - share))  # 4.5 sigma: swapped shares sit 9+ sigma away
        assert abs(got - distinct * share) <= band, (name, got, distinct * share, band)


@pytest.mark.parametrize("ratios,counts", [("70/20/10", (2121, 606, 303)), ("60/10/30", (1818, 303, 909)),
                                           ("50/35/15", (1515, 1061, 454))])
def test_contiguous_split_counts_are_exact(source, tmp_path, ratios, counts):
    """n = 3030 lines: valid starts at round_half_up(n * train), test at round_half_up(n * (train + valid)).
    70/20/10: 2121, 2727 -> 2121 / 606 / 303; 60/10/30: 1818, 2121 -> 1818 / 303 / 909;
    50/35/15: 1515, 2575.5 -> 2576 -> 1515 / 1061 / 454."""
    rows, files = split(source, tmp_path / "out", ratios, "contiguous")
    assert tuple(len(files[s]) for s in ("train", "valid", "test")) == counts
    lines = source.read_text().splitlines()
    assert files["train"] + files["valid"] + files["test"] == lines  # cat train valid test is the input
    assert_partition(source, rows, files)
