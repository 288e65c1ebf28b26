"""`lmkit verify`: lmkit's numbers against references it does not compute itself.

A registry of cases, each with its source, protocol, expected value and a stated tolerance. Quick
cases take seconds and need no data: probabilities computed by hand (the arithmetic is written out
in the case), nltk.lm and sacrebleu run live beside lmkit, a BLEU written here from Papineni et al.'s
definition, char-level and perplexity arithmetic. Full cases need the PTB folder (`--corpus`): KN5
against the published 141.2, KN5/KN3 against KenLM's lmplz, and every family's verify recipe (Family.recipe
in its model file: the LSTM and Transformer recipes of docs/results.md); and, when KenLM's reference folder
is present, KN3/KN5 on tiny-shakespeare against KenLM's `query` summary. Full cases train through the
public API (`lmkit.pipeline.fit.train`), the path users take, into a temporary folder (or `keep`).

No torch import here: the neural cases import it through the API when they run."""

from __future__ import annotations

import fnmatch
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .atomic import atomic_open
from .errors import DataError, LmkitError, UsageError
from .logs import Log, quiet
from .pipeline import fit as pipeline_fit
from .pipeline import use as pipeline_use
from .pipeline.request import TrainRequest

QUICK, FULL = "quick", "full"
PASS, FAIL = "pass", "fail"
PTB_TEST_TOKENS = 82_430  # 78,669 words + 3,761 </s> of the Mikolov PTB test split
REFERENCE_PARTS = ("reference", "kenlm", "tinyshakespeare")



# -- the registry's types ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How far a measurement may be from its expectation: a fraction of it (relative) or absolute."""

    value: float
    relative: bool = True

    def deviation(self, expected: float, measured: float) -> float:
        if not (math.isfinite(expected) and math.isfinite(measured)):
            return 0.0 if expected == measured else math.inf
        diff = abs(measured - expected)
        return diff / abs(expected) if self.relative else diff

    def accepts(self, expected: float, measured: float) -> bool:
        return self.deviation(expected, measured) <= self.value

    def describe(self) -> str:
        return "±" + self.format(self.value)

    def format(self, x: float) -> str:
        """A value in this tolerance's units: per cent when relative and >= 0.01 %."""
        if not math.isfinite(x):
            return str(x)
        if self.relative and self.value >= 1e-4:
            return f"{x * 100:.3g}%"
        return f"{x:.2g}" + (" rel" if self.relative else "")


@dataclass
class Measurement:
    """What a case measured; `expected` for cases whose reference is computed live (nltk, sacrebleu)."""

    value: float
    expected: float | None = None
    problems: list[str] = field(default_factory=list)  # side conditions that failed (token counts, ...)
    detail: str = ""  # one line of context shown in the note column when nothing failed


@dataclass
class Env:
    """What measuring functions may use: scratch space, the corpora, progress output, a cache."""

    workdir: Path
    corpus: Path | None = None  # the PTB folder
    reference: Path | None = None  # KenLM's tiny-shakespeare reference folder
    log: Log = quiet
    progress: bool = False
    cache: dict = field(default_factory=dict)  # e.g. one KN5 run shared by two cases


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # quick | full
    source: str  # where the expected value comes from
    protocol: str  # what is measured, how
    expected: float | None  # None: computed live by `measure` from the reference implementation
    tolerance: Tolerance
    measure: Callable[[Env], Measurement]
    why: str = ""  # why this tolerance
    needs: str | None = None  # None | "corpus" (PTB folder) | "reference" (KenLM reference folder)
    neural: bool = False
    citation: str = ""  # the full reference behind `source`, when there is more to say

    def describe(self) -> dict:
        return {"case": self.name, "kind": self.kind, "needs": self.needs or "", "neural": self.neural,
                "expected": self.expected if self.expected is not None else "live",
                "tolerance": self.tolerance.describe(), "source": self.source, "protocol": self.protocol,
                "why": self.why, "citation": self.citation}


@dataclass
class Result:
    case: Case
    expected: float | None
    measured: float | None
    deviation: float | None
    passed: bool
    seconds: float
    note: str = ""

    @property
    def status(self) -> str:
        return PASS if self.passed else FAIL

    def row(self, numbers: bool = False) -> dict:
        """One table row; `numbers` adds the raw deviation/tolerance for json output."""
        tol = self.case.tolerance
        row = {"case": self.case.name, "kind": self.case.kind, "expected": self.expected,
               "measured": self.measured,
               "deviation": tol.format(self.deviation) if self.deviation is not None else None,
               "tolerance": tol.describe(), "status": self.status, "seconds": round(self.seconds, 2),
               "source": self.case.source, "note": self.note}
        if numbers:
            row.update(deviation_value=self.deviation, tolerance_value=tol.value, relative=tol.relative)
        return row


def run_cases(cases: list[Case], env: Env) -> list[Result]:
    """Measure every case; a case that raises is a failure with the error as its note, never a crash."""
    results = []
    for i, case in enumerate(cases, 1):
        if case.kind == FULL:
            env.log(f"[{i}/{len(cases)}] {case.name}: {case.protocol}")
        start = time.perf_counter()
        try:
            m = case.measure(env)
        except KeyboardInterrupt:
            raise
        except LmkitError as exc:
            results.append(Result(case, case.expected, None, None, False, time.perf_counter() - start,
                                  f"error: {exc.message}"))
            continue
        except Exception as exc:  # a broken case is a failed verification, reported like one
            results.append(Result(case, case.expected, None, None, False, time.perf_counter() - start,
                                  f"error: {exc.__class__.__name__}: {exc}"))
            continue
        seconds = time.perf_counter() - start
        expected = case.expected if case.expected is not None else m.expected
        if expected is None:
            results.append(Result(case, None, m.value, None, False, seconds, "error: no expected value"))
            continue
        deviation = case.tolerance.deviation(expected, m.value)
        outside = not deviation <= case.tolerance.value
        passed = not outside and not m.problems
        tol = case.tolerance
        reasons = [f"deviation {tol.format(deviation)} exceeds {tol.describe()}"] if outside else []
        note = m.detail if passed else "; ".join(reasons + m.problems)
        results.append(Result(case, expected, m.value, deviation, passed, seconds, note))
        if case.kind == FULL:
            env.log(f"  {PASS if passed else FAIL}: measured {m.value:.6g}, expected {expected:.6g} "
                    f"{case.tolerance.describe()} ({seconds:.1f} s)")
    return results


# -- small helpers shared by the cases --------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    with atomic_open(path) as fh:
        fh.write(text)
    return path


def _corpus_dir(env: Env, name: str, lines: list[str], valid: list[str] | None = None,
                test: list[str] | None = None) -> Path:
    """A tiny corpus folder in the scratch space (train/valid/test files)."""
    d = env.workdir / "inputs" / name
    d.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", lines), ("valid", valid or lines), ("test", test or lines)):
        _write(d / f"{split}.txt", "\n".join(text) + "\n")
    return d


def _train(env: Env, run: str, **request) -> dict:
    """Train through lmkit.api.train (the user path) into the scratch space; the run's record as a dict."""
    from .runs import read_record

    out = env.workdir / "runs" / run
    req = TrainRequest(output=out, progress=env.progress, **request)
    pipeline_fit.train(req, log=env.log)
    return read_record(out).to_dict()


# -- quick: probabilities computed by hand ----------------------------------------------------------
# The corpus "a b" / "b a b", bigram models, sentence context. The vocabulary's predictable set is
# P = {<unk>, </s>, a, b}, |P| = 4. Scored units: "<s> a b </s>", "<s> b a b </s>".
#   bigram counts: <s> a 1, <s> b 1, a b 2, b </s> 2, b a 1;  c(<s> .) = 2, c(a .) = 2, c(b .) = 3
#   unigram targets: a 2, b 3, </s> 2 (N = 7); continuation counts N1+(. w): a 2, b 2, </s> 1 (sum 5)
# Each case gives P("a b") = P(a | <s>) P(b | a) P(</s> | b), written out below.
HAND_TRAIN = ["a b", "b a b"]
HAND_TEST = "a b"

# Witten-Bell unigrams: (c(w) + t/|P|) / (N + t), t = 3 seen words: a (2 + .75)/10, b (3 + .75)/10,
# </s> (2 + .75)/10. Then P(w | h) = (c(h w) + t(h) P(w)) / (c(h .) + t(h)).
_WB_A, _WB_B, _WB_EOS = 2.75 / 10, 3.75 / 10, 2.75 / 10
# Kneser-Ney, one discount per order (kn-basic): D1 = n1/(n1 + 2 n2) over continuation counts {2, 2, 1}
# = 1/5; D2 over bigram counts {1, 1, 2, 2, 1} = 3/(3 + 2*2) = 3/7. Unigrams (a - D1)/5 + gamma/|P| with
# gamma = 3 * D1 / 5 = 0.12: a = b = 1.8/5 + .03 = .39, </s> = .8/5 + .03 = .19.
_KNB_A, _KNB_B, _KNB_EOS = 1.8 / 5 + 0.03, 1.8 / 5 + 0.03, 0.8 / 5 + 0.03
# Modified Kneser-Ney (kn): no count of 3 anywhere, so the discounts fall back to 0.5/1/1.5 (as lmplz
# --discount_fallback). Unigrams: gamma = (.5 * 1 + 1 * 2)/5 = .5 -> a = b = (2 - 1)/5 + .5/4 = .325,
# </s> = (1 - .5)/5 + .125 = .225. Bigram gammas: <s>: (.5 + .5)/2, a: 1/2, b: (1 + .5)/3, all .5.
_KN_A, _KN_B, _KN_EOS = 1 / 5 + 0.125, 1 / 5 + 0.125, 0.5 / 5 + 0.125
HAND_EXPECTED = {
    "mle": (1 / 2) * (2 / 2) * (2 / 3),
    "laplace": ((1 + 1) / (2 + 4)) * ((2 + 1) / (2 + 4)) * ((2 + 1) / (3 + 4)),
    "addk": ((1 + 0.5) / (2 + 0.5 * 4)) * ((2 + 0.5) / (2 + 0.5 * 4)) * ((2 + 0.5) / (3 + 0.5 * 4)),
    "wb": ((1 + 2 * _WB_A) / (2 + 2)) * ((2 + 1 * _WB_B) / (2 + 1)) * ((2 + 2 * _WB_EOS) / (3 + 2)),
    "kn-basic": (((1 - 3 / 7) / 2 + (3 / 7 * 2) / 2 * _KNB_A) * ((2 - 3 / 7) / 2 + (3 / 7 * 1) / 2 * _KNB_B)
                 * ((2 - 3 / 7) / 3 + (3 / 7 * 2) / 3 * _KNB_EOS)),
    "kn": (((1 - 0.5) / 2 + 0.5 * _KN_A) * ((2 - 1) / 2 + 0.5 * _KN_B) * ((2 - 1) / 3 + 0.5 * _KN_EOS)),
}
HAND_FORMULAS = {
    "mle": "1/2 * 2/2 * 2/3",
    "laplace": "(1+1)/(2+4) * (2+1)/(2+4) * (2+1)/(3+4)",
    "addk": "k=0.5: (1+.5)/(2+2) * (2+.5)/(2+2) * (2+.5)/(3+2)",
    "wb": "(1+2*.275)/4 * (2+.375)/3 * (2+2*.275)/5",
    "kn-basic": "D=1/5, 3/7: ((4/7)/2 + (3/7)*.39) * ((11/7)/2 + (3/14)*.39) * ((11/7)/3 + (2/7)*.19)",
    "kn": "fallback D 0.5/1/1.5: (.25 + .5*.325) * (.5 + .5*.325) * (1/3 + .5*.225)",
}


def _hand_measure(smoothing: str) -> Callable[[Env], Measurement]:
    def measure(env: Env) -> Measurement:
        from .data.corpus import Encoded
        from .data.vocab import Vocab
        from .evaluate.perplexity import score_encoded
        from .models.ngram import NgramConfig, NgramModel
        from .protocol import Protocol

        vocab = Vocab.build(Counter(w for line in HAND_TRAIN for w in line.split()))

        def enc(lines: list[str]) -> Encoded:
            seqs = [vocab.encode(line.split())[0] for line in lines]
            return Encoded("hand", "", seqs, list(range(1, len(seqs) + 1)))

        model = NgramModel(NgramConfig(order=2, smoothing=smoothing, k=0.5), vocab, Protocol())
        model.fit(enc(HAND_TRAIN), None)
        score = score_encoded(model, enc([HAND_TEST]))  # the one scoring path: P = exp(-NLL)
        return Measurement(math.exp(-score.nll_nats), detail=HAND_FORMULAS[smoothing])
    return measure


def _hand_cases() -> list[Case]:
    names = {"mle": "MLE", "laplace": "Laplace (add-one)", "addk": "add-k, k = 0.5", "wb": "Witten-Bell",
             "kn-basic": "interpolated Kneser-Ney, one discount", "kn": "interpolated modified Kneser-Ney"}
    return [Case(f"hand-{sm}2", QUICK, "hand (docs/ngram.md)",
                 f"{names[sm]} bigram on 'a b' / 'b a b': P('a b' </s>) through the scorer; "
                 f"{HAND_FORMULAS[sm]}", HAND_EXPECTED[sm], Tolerance(1e-9),
                 _hand_measure(sm), why="float64 rounding only (~1e-16); any real error is > 1e-3")
            for sm in HAND_EXPECTED]


# -- quick: perplexity arithmetic and the char level ------------------------------------------------
# A unigram ARPA file written here: P(a) = .4, P(b) = .2, P(</s>) = .3, P(<unk>) = .1 (sum 1).
# Text "a b" / "b c a" / "" / "a": scored tokens a b </s> b <unk> a </s> a </s> (9, one OOV; the blank
# line is skipped), so ppl = 10^(-sum log10 p / 9) = (.4^3 .2^2 .3^3 .1)^(-1/9), and excluding the OOV
# position (.4^3 .2^2 .3^3)^(-1/8).
ARPA_PROBS = {"<unk>": 0.1, "</s>": 0.3, "a": 0.4, "b": 0.2}
ARPA_TEXT = "a b\nb c a\n\na\n"
PPL_EXPECTED = 10 ** (-(3 * math.log10(0.4) + 2 * math.log10(0.2) + 3 * math.log10(0.3) + math.log10(0.1)) / 9)
PPL_EXCL_EXPECTED = (0.4 ** 3 * 0.2 ** 2 * 0.3 ** 3) ** (-1 / 8)


def _arpa_score(env: Env) -> dict:
    if "arpa" not in env.cache:

        d = env.workdir / "inputs" / "arpa"
        d.mkdir(parents=True, exist_ok=True)
        entries = "".join(f"{math.log10(p)!r}\t{w}\n" for w, p in ARPA_PROBS.items())
        arpa = _write(d / "unigram.arpa", "\\data\\\nngram 1=5\n\n\\1-grams:\n" + entries + "0\t<s>\n\n\\end\\\n")
        text = _write(d / "text.txt", ARPA_TEXT)
        env.cache["arpa"] = pipeline_use.score(arpa, text).summary()
    return env.cache["arpa"]


def _measure_ppl(env: Env) -> Measurement:
    s = _arpa_score(env)
    problems = [] if (s["tokens"], s["oov"]) == (9, 1) else [f"scored {s['tokens']} tokens, {s['oov']} OOV; "
                                                            "expected 9 and 1"]
    return Measurement(s["perplexity"], problems=problems, detail="9 tokens, 1 OOV")


def _measure_ppl_excl(env: Env) -> Measurement:
    return Measurement(_arpa_score(env)["perplexity_excl_oov"], detail="8 tokens (OOV dropped from sum and count)")


# Char level, MLE unigram trained on "aab" / "ab": a 3, b 2, </s> 2 (N = 7). Test "ab" / "b": tokens
# a b </s> b </s>, P = 3/7 (2/7)^4; bits per char = -log2 P / (3 characters + 2 line ends).
CHAR_TRAIN, CHAR_TEST = ["aab", "ab"], ["ab", "b"]
BPC_EXPECTED = -math.log2((3 / 7) * (2 / 7) ** 4) / (3 + 2)
# Char level, Jelinek-Mercer unigram with lambda 0: exactly the uniform distribution over the
# predictable set {a, b, c, ' ', <unk>, </s>} of "abc ab" / "ca b", so perplexity |P| = 6 on any text
# (the test holds an OOV 'd') and bits per char log2 6 (every character and line end is one token).
UNIFORM_TRAIN, UNIFORM_TEST = ["abc ab", "ca b"], ["abcd", "b a"]
UNIFORM_EXPECTED = 4 + 2


def _score_char_run(env: Env, name: str, model: str, train: list[str], test: list[str], sets: list[str]) -> dict:

    corpus = _corpus_dir(env, name, train, test=test)
    run = env.workdir / "runs" / name
    pipeline_fit.train(TrainRequest(model=model, corpus=corpus, level="char", min_count=1, context="sentence",
                                    sets=sets, output=run, progress=False))  # the hand arithmetic's protocol
    return pipeline_use.score(run, corpus / "test.txt").summary()


def _measure_bpc(env: Env) -> Measurement:
    s = _score_char_run(env, "char-mle1", "ngram:mle1", CHAR_TRAIN, CHAR_TEST, [])
    return Measurement(s["bits_per_char"], detail="-log2(3/7 * (2/7)^4) / (3 + 2)")


def _measure_uniform(env: Env) -> Measurement:
    s = _score_char_run(env, "char-uniform", "ngram:jm1", UNIFORM_TRAIN, UNIFORM_TEST, ["jm_lambdas=0"])
    problems = []
    if abs(s["bits_per_char"] - math.log2(UNIFORM_EXPECTED)) > 1e-9:
        problems.append(f"bits/char {s['bits_per_char']:.12g}, expected log2 6 = {math.log2(6):.12g}")
    return Measurement(s["perplexity"], problems=problems, detail=f"bits/char {s['bits_per_char']:.6g} = log2 6")


# -- quick: nltk.lm, live ---------------------------------------------------------------------------
# Conventions are aligned as in tests/test_ngram_nltk.py: nltk pads n-1 <s> (the same counts for these
# estimators) and counts <s> in its vocabulary, so lmkit's vocabulary gets one never-seen word and the
# add-k denominators c(h) + k|V| coincide; unigram models get an explicit </s> per sentence in nltk.
# Only the positions lmkit scores are compared (each word and the first </s>).
NLTK_TRAIN = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate the fish",
              "a dog ate", "the mat sat on a dog", "on the log the cat sat"]
NLTK_TEST = ["the cat sat on the log", "the bird sat on a cat", "a dog saw the fish", "zebra", "the the the"]
NLTK_POSITION_TOL = 1e-9


def _nltk_measure(smoothing: str, order: int, k: float, test: list[str]) -> Callable[[Env], Measurement]:
    def measure(env: Env) -> Measurement:
        import nltk
        from nltk import lm as nltk_lm
        from nltk.lm.preprocessing import pad_both_ends, padded_everygram_pipeline
        from nltk.util import everygrams, ngrams

        from .data.corpus import Encoded
        from .data.vocab import Vocab
        from .evaluate.perplexity import score_encoded
        from .models.ngram import NgramConfig, NgramModel
        from .protocol import Protocol

        train = [s.split() for s in NLTK_TRAIN]
        sents = [s.split() for s in test]
        if order > 1:
            data, vocab_text = padded_everygram_pipeline(order, train)
        else:
            data = [everygrams(s + ["</s>"], max_len=1) for s in train]
            vocab_text = [w for s in train for w in s + ["</s>"]]
        theirs_lm = {"mle": lambda: nltk_lm.MLE(order), "laplace": lambda: nltk_lm.Laplace(order),
                     "addk": lambda: nltk_lm.Lidstone(k, order)}[smoothing]()
        theirs_lm.fit(data, vocab_text)
        theirs = []
        for sent in sents:
            grams = list(ngrams(pad_both_ends(sent, n=order), order)) if order > 1 else \
                [(w,) for w in sent + ["</s>"]]
            theirs += [math.log(theirs_lm.score(g[-1], list(g[:-1]))) for g in grams[: len(sent) + 1]]

        counts = Counter(w for s in train for w in s)
        vocab = Vocab.build(counts + (Counter({"~never-seen~": 1}) if order > 1 else Counter()))
        model = NgramModel(NgramConfig(order=order, smoothing=smoothing, k=k), vocab, Protocol())

        def enc(ss: list[list[str]]) -> Encoded:
            return Encoded("nltk", "", [vocab.encode(s)[0] for s in ss], list(range(1, len(ss) + 1)))

        model.fit(enc(train), None)
        score = score_encoded(model, enc(sents))
        ours = [float(x) for lp in score.logprobs for x in lp]
        problems = []
        if smoothing != "mle" and vocab.num_predictable != len(theirs_lm.vocab):
            problems.append(f"|V| not aligned: lmkit {vocab.num_predictable}, nltk {len(theirs_lm.vocab)}")
        if len(ours) != len(theirs):
            problems.append(f"lmkit scored {len(ours)} positions, nltk {len(theirs)}")
        else:
            worst = max(abs(a - b) for a, b in zip(ours, theirs))
            if worst > NLTK_POSITION_TOL:
                problems.append(f"largest per-position |ln p difference| {worst:.2g} > {NLTK_POSITION_TOL:g}")
        expected = math.exp(-sum(theirs) / len(theirs))
        return Measurement(score.perplexity, expected=expected, problems=problems,
                           detail=f"{len(theirs)} positions agree (nltk {nltk.__version__})")
    return measure


def _nltk_cases() -> list[Case]:
    cases = []
    for name, sm, order, k, test, what in (
            ("nltk-mle3", "mle", 3, 1.0, NLTK_TRAIN[:4], "MLE trigram, test = 4 training sentences (all seen)"),
            ("nltk-laplace2", "laplace", 2, 1.0, NLTK_TEST, "Laplace bigram, 5 test sentences with OOVs"),
            ("nltk-lidstone3", "addk", 3, 0.1, NLTK_TEST, "Lidstone (add-k, k = 0.1) trigram, with OOVs")):
        cases.append(Case(name, QUICK, "nltk.lm (live)", f"{what}; expected = nltk's perplexity over "
                          "the same positions, and every position's ln p within 1e-9", None, Tolerance(1e-9),
                          _nltk_measure(sm, order, k, test), why="the same arithmetic in float64"))
    return cases


# -- quick: BLEU ------------------------------------------------------------------------------------
BLEU_HYPS = ["the cat sat on the mat", "there is a cat on the mat", "a dog sat under the tree"]
BLEU_REFS = ["the cat is sitting on the mat", "there is a cat on the red mat today", "the dog sat under the old tree"]
# With punctuation and case, so sacrebleu's 13a tokenisation and defaults matter.
SACRE_HYPS = ["The cat sat on the mat.", "It's raining, isn't it?", "Dogs (and cats) sleep a lot!",
              "A quick brown fox jumps over the lazy dog", "hello world"]
SACRE_REFS = ["The cat is on the mat.", "It is raining, isn't it?", "Dogs and cats sleep a lot.",
              "The quick brown fox jumped over the lazy dog.", "Hello, world!"]


def papineni_bleu(hypotheses: list[str], references: list[str], max_n: int = 4) -> float:
    """Corpus BLEU from the definition (Papineni et al. 2002): clipped n-gram precisions summed over the
    corpus, their geometric mean, times the brevity penalty exp(1 - r/c) when c <= r. Whitespace tokens,
    one reference, no smoothing: an order without matches is an error here."""
    matches, totals, hyp_len, ref_len = [0] * max_n, [0] * max_n, 0, 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, max_n + 1):
            hc = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if not all(matches):
        raise ValueError("an n-gram order has no matches; BLEU without smoothing is 0")
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * brevity * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n)


def _measure_bleu_hand(env: Env) -> Measurement:
    from .evaluate.bleu import corpus_bleu

    score, _ = corpus_bleu(BLEU_HYPS, BLEU_REFS)
    return Measurement(float(score.score), expected=papineni_bleu(BLEU_HYPS, BLEU_REFS),
                       detail="3 sentences, brevity penalty < 1")


def _measure_sacrebleu(env: Env) -> Measurement:
    import sacrebleu

    from .evaluate.bleu import corpus_bleu

    ours, signature = corpus_bleu(SACRE_HYPS, SACRE_REFS)
    metric = sacrebleu.BLEU()  # sacrebleu's defaults, as `sacrebleu.corpus_bleu` and the sacrebleu CLI
    theirs = metric.corpus_score(SACRE_HYPS, [SACRE_REFS])
    default = str(metric.get_signature())
    problems = [] if signature == default else [f"signature {signature} differs from sacrebleu's default {default}"]
    return Measurement(float(ours.score), expected=float(theirs.score), problems=problems, detail=signature)


# Lines of distinct words: every word has one successor, so a bigram MLE model continues each
# first half greedily into exactly its second half and </s>, and continuation BLEU is 100.
DETERMINISTIC = [" ".join(f"l{i}w{j}" for j in range(8)) for i in range(6)]


def _measure_continuation(env: Env) -> Measurement:

    corpus = _corpus_dir(env, "deterministic", DETERMINISTIC)
    run = env.workdir / "runs" / "deterministic"
    pipeline_fit.train(TrainRequest(model="ngram:mle2", corpus=corpus, min_count=1, context="sentence", output=run,
                                    progress=False))  # every word once: each line its own, every word kept
    result = pipeline_use.bleu(run, corpus / "test.txt").result
    problems = [] if result.lines == len(DETERMINISTIC) else [f"{result.lines} lines scored, expected 6"]
    return Measurement(result.score, problems=problems, detail=f"{result.lines} lines, {result.signature}")


def _bleu_cases() -> list[Case]:
    return [
        Case("bleu-papineni", QUICK, "Papineni et al. 2002",
             "lmkit's corpus BLEU (sacrebleu defaults) vs a plain implementation on 3 lower-case sentences "
             "without punctuation (13a tokenisation = whitespace)", None, Tolerance(1e-9, relative=False),
             _measure_bleu_hand, why="BLEU points; the same formula in float64",
             citation="BLEU written here from its definition: Papineni et al. 2002, ACL"),
        Case("bleu-sacrebleu", QUICK, "sacrebleu (live)",
             "lmkit's corpus BLEU vs sacrebleu's own defaults on 5 sentences with case and punctuation; "
             "signatures equal", None, Tolerance(1e-9, relative=False), _measure_sacrebleu,
             why="BLEU points; lmkit calls sacrebleu, so anything above rounding is a settings difference"),
        Case("bleu-continuation", QUICK, "construction",
             "continuation BLEU (lmkit bleu) of a bigram MLE run on its own training lines of distinct words: "
             "greedy continuations equal the references", 100.0, Tolerance(1e-9, relative=False),
             _measure_continuation, why="BLEU points; identical text scores exactly 100"),
    ]


def _arith_cases() -> list[Case]:
    return [
        Case("ppl-arithmetic", QUICK, "hand", "lmkit score on a unigram ARPA file written here "
             "(P a .4, b .2, </s> .3, <unk> .1): ppl = 10^(-sum log10 p / N) = (.4^3 .2^2 .3^3 .1)^(-1/9)",
             PPL_EXPECTED, Tolerance(1e-9), _measure_ppl, why="float64 rounding only"),
        Case("ppl-excl-oov", QUICK, "hand", "the same, excluding the OOV position from sum and "
             "count (as KenLM): (.4^3 .2^2 .3^3)^(-1/8)", PPL_EXCL_EXPECTED, Tolerance(1e-9),
             _measure_ppl_excl, why="float64 rounding only"),
        Case("char-bpc", QUICK, "hand", "char-level MLE unigram on 'aab' / 'ab', scored on 'ab' / "
             "'b': bits/char = -log2(3/7 (2/7)^4) / (3 chars + 2 line ends)", BPC_EXPECTED, Tolerance(1e-9),
             _measure_bpc, why="float64 rounding only"),
        Case("char-uniform", QUICK, "construction", "char-level Jelinek-Mercer unigram "
             "with lambda 0 (the uniform distribution over a, b, c, space, <unk>, </s>): perplexity 6 and "
             "bits/char log2 6 on a text with an OOV", UNIFORM_EXPECTED, Tolerance(1e-9), _measure_uniform,
             why="float64 rounding only"),
    ]


QUICK_CASES: list[Case] = [*_hand_cases(), *_arith_cases(), *_nltk_cases(), *_bleu_cases()]


# -- full: PTB --------------------------------------------------------------------------------------
def _ptb_test(record: dict) -> tuple[float, list[str]]:
    test = record["metrics"].get("test") or {}
    problems = [] if test.get("tokens") == PTB_TEST_TOKENS else \
        [f"scored {test.get('tokens')} test tokens, expected {PTB_TEST_TOKENS:,} (not the Mikolov PTB split?)"]
    return float(test.get("perplexity", math.nan)), problems


def _ptb_ngram(order: int) -> Callable[[Env], Measurement]:
    def measure(env: Env) -> Measurement:
        key = f"ptb-kn{order}"
        if key not in env.cache:  # one KN5 run serves the published and the KenLM case
            env.cache[key] = _train(env, key, model=f"ngram:kn{order}", corpus=env.corpus, min_count=1,
                                    context="sentence")
        ppl, problems = _ptb_test(env.cache[key])
        return Measurement(ppl, problems=problems, detail=f"{PTB_TEST_TOKENS:,} test tokens")
    return measure


def neural_request(family: str, corpus: Path | str, output: Path | str | None = None, progress: bool = False):
    """The TrainRequest of a neural full case: the family's verify recipe (Family.recipe, declared in its model
    file) on `corpus` (what the recipe's `command` asks the CLI for)."""
    from .models import descriptor

    recipe = descriptor(family).recipe
    if recipe is None:
        raise UsageError(f"model {family!r} has no verify recipe")
    fields = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
              for k, v in recipe.request.items()}
    return TrainRequest(corpus=corpus, output=output, progress=progress, **fields)


def _ptb_recipe(family: str) -> Callable[[Env], Measurement]:
    def measure(env: Env) -> Measurement:
        from .runs import read_record

        out = env.workdir / "runs" / f"ptb-{family}"
        pipeline_fit.train(neural_request(family, env.corpus, out, env.progress), log=env.log)
        record = read_record(out).to_dict()
        ppl, problems = _ptb_test(record)
        return Measurement(ppl, problems=problems, detail=f"{record['tokens_seen']:,} tokens trained, "
                                                          f"{record['train_seconds']:.0f} s")
    return measure


NEURAL_WHY = ("±3 %: the recipe's 12-minute runs are replaced by their token budget, so the LR schedule "
              "spans a slightly different number of steps, and seed-0 float32 numerics differ across CPUs "
              "and torch builds")
NGRAM_PTB_CASES: list[Case] = [
    Case("ptb-kn5-published", FULL, "Mikolov et al. 2011", "lmkit train --model ngram:kn5 --corpus PTB "
         "(sentence context, min-count 1): test perplexity, 82,430 scored tokens", 141.2, Tolerance(0.01),
         _ptb_ngram(5), why="±1 %: the published toolkit's KN5 (SRILM) differs from lmplz's in details",
         needs="corpus", citation="Mikolov, Deoras, Kombrink, Burget, Cernocky 2011, 'Empirical evaluation and "
         "combination of advanced language modeling techniques' (Interspeech): KN5 141.2 on the Mikolov PTB split"),
    Case("ptb-kn5-kenlm", FULL, "KenLM lmplz", "the same KN5 run against KenLM's test perplexity", 141.19,
         Tolerance(0.001), _ptb_ngram(5), why="±0.1 %: the same estimator (lmkit reproduces lmplz entry by entry)",
         needs="corpus", citation="KenLM lmplz -o 5 on PTB: 141.19 (docs/results.md, tests/test_ngram_ptb.py)"),
    Case("ptb-kn3-kenlm", FULL, "KenLM lmplz",
         "lmkit train --model ngram:kn3 --corpus PTB (sentence context, min-count 1): test perplexity",
         148.28, Tolerance(0.001), _ptb_ngram(3), why="±0.1 %: the same estimator", needs="corpus",
         citation="KenLM lmplz -o 3 on PTB: 148.28 (docs/results.md, tests/test_ngram_ptb.py)"),
]


def recipe_cases() -> list[Case]:
    """One PTB case per family that declares a verify recipe (Family.recipe), in registry order; listing them
    reads the declarations only, so `lmkit verify --list` imports no torch."""
    from .models import families

    return [Case(f"ptb-{fam.kind}", FULL, "docs/results.md", f"{fam.recipe.command} (about 12 min on a 2-core CPU)",
                 fam.recipe.expected, Tolerance(0.03), _ptb_recipe(fam.kind), why=NEURAL_WHY, needs="corpus",
                 neural=fam.neural, citation=fam.recipe.citation)
            for fam in families() if fam.recipe is not None]


# -- full: KenLM's tiny-shakespeare reference -------------------------------------------------------
def read_kenlm_summary(path: Path) -> dict[int, dict[str, float]]:
    """order -> {key: value} from KenLM `query -v summary` output as stored in summary.txt."""
    out: dict[int, dict[str, float]] = {}
    order = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    for line in lines:
        if line.startswith("order"):
            order = int(line.split()[1])
            out[order] = {}
        elif ":" in line and order is not None:
            key, _, val = line.partition(":")
            try:
                out[order][key.strip()] = float(val)
            except ValueError:
                raise DataError(f"{path}: not a KenLM summary line: {line[:60]!r}") from None
    if not out:
        raise DataError(f"{path}: no 'order N' sections (expected KenLM query -v summary output)")
    return out


def default_reference() -> Path | None:
    """KenLM's tiny-shakespeare reference folder, if present: $LMKIT_SHARED, ../shared from here or
    from the checkout (the layout of the project's machines)."""
    roots = [Path(os.environ["LMKIT_SHARED"])] if os.environ.get("LMKIT_SHARED") else []
    roots += [Path.cwd().parent / "shared", Path(__file__).resolve().parents[2] / "shared"]
    for root in roots:
        candidate = root.joinpath(*REFERENCE_PARTS)
        if (candidate / "summary.txt").is_file():
            return candidate
    return None


def shakespeare_corpus(reference: Path) -> Path:
    """The corpus the reference was made from: ../../../corpora/tinyshakespeare (its README.md)."""
    return reference.resolve().parents[2] / "corpora" / "tinyshakespeare"


def _kenlm_measure(order: int, summary: dict[str, float]) -> Callable[[Env], Measurement]:
    def measure(env: Env) -> Measurement:
        record = _train(env, f"shakespeare-kn{order}", model=f"ngram:kn{order}",
                        corpus=shakespeare_corpus(env.reference), min_count=1, context="sentence")
        test = record["metrics"]["test"]
        problems = []
        if (test["tokens"], test["oov"]) != (summary["Tokens"], summary["OOVs"]):
            problems.append(f"{test['tokens']} tokens / {test['oov']} OOVs, KenLM {summary['Tokens']:.0f} / "
                            f"{summary['OOVs']:.0f}")
        excl, ref_excl = test["perplexity_excl_oov"], summary["Perplexity excluding OOVs"]
        if abs(excl - ref_excl) > 1e-5 * ref_excl:
            problems.append(f"perplexity excl. OOV {excl:.6f}, KenLM {ref_excl:.6f}")
        return Measurement(test["perplexity"], problems=problems,
                           detail=f"excl. OOV {excl:.3f} (KenLM {ref_excl:.3f}), {test['tokens']:,} tokens")
    return measure


def kenlm_cases(reference: Path) -> list[Case]:
    """KN3/KN5 on tiny-shakespeare vs KenLM `query` (expected values read from the folder's summary.txt)."""
    summary = read_kenlm_summary(reference / "summary.txt")
    cases = []
    for order in (3, 5):
        if order not in summary or "Perplexity including OOVs" not in summary[order]:
            raise DataError(f"{reference / 'summary.txt'}: no order {order} perplexity")
        cases.append(Case(
            f"kenlm-shakespeare-kn{order}", FULL, "KenLM query",
            f"lmkit train --model ngram:kn{order} on tiny-shakespeare (sentence context, min-count 1): test "
            "perplexity incl. OOV; tokens, OOVs and excl.-OOV perplexity must match too",
            summary[order]["Perplexity including OOVs"], Tolerance(1e-5), _kenlm_measure(order, summary[order]),
            why="1e-5 relative: the same estimator; KenLM's summary is exact, lmkit agrees to 7 digits",
            needs="reference", citation=f"KenLM lmplz -o {order} + query -v summary: {reference}/summary.txt"))
    return cases


def registry(reference: Path | None = None) -> list[Case]:
    """Every case: quick, PTB full cases, and the KenLM reference cases when `reference` is given."""
    kenlm = kenlm_cases(reference) if reference is not None else []
    return [*QUICK_CASES, *NGRAM_PTB_CASES, *recipe_cases(), *kenlm]


# -- choosing and running ---------------------------------------------------------------------------
@dataclass
class Plan:
    cases: list[Case]
    notes: list[str]
    corpus: Path | None
    reference: Path | None


def _match(cases: list[Case], patterns: list[str]) -> list[Case]:
    chosen = set()
    for pat in patterns:
        hits = {c.name for c in cases if fnmatch.fnmatchcase(c.name, pat)}
        if not hits:
            names = ", ".join(c.name for c in cases)
            raise UsageError(f"--case {pat!r} matches no case; known cases: {names} (see lmkit verify --list)")
        chosen |= hits
    return [c for c in cases if c.name in chosen]


def plan(*, quick: bool = False, corpus: str | Path | None = None, reference: str | Path | None = None,
         names: list[str] | None = None, skip_neural: bool = False, listing: bool = False) -> Plan:
    """Which cases run (or are listed), and one-line notes about those that do not."""
    from .data.corpus import locate
    from .datasets.store import resolve_corpus

    if quick and (corpus is not None or reference is not None):
        given = "--corpus" if corpus is not None else "--reference"
        raise UsageError(f"--quick runs only the quick cases; {given} adds full cases: give one or the other")
    corpus = Path(resolve_corpus(corpus)) if corpus is not None else None  # a downloaded corpus by name too
    if corpus is not None and not listing:
        locate(corpus, need=("train", "valid", "test"))  # a bad folder fails before anything runs
    notes: list[str] = []
    ref = Path(reference) if reference is not None else None
    if ref is not None:
        if not (ref / "summary.txt").is_file():
            raise DataError(f"{ref}: no summary.txt (expected KenLM's reference folder, e.g. "
                            f"../shared/{'/'.join(REFERENCE_PARTS)})")
        if not listing:
            locate(shakespeare_corpus(ref), need=("train", "valid", "test"))
    elif not quick and (corpus is not None or listing or names):
        ref = default_reference()  # present on the project's machines: its cases join the full ones
        if ref is not None and not (shakespeare_corpus(ref) / "train.txt").is_file():
            notes.append(f"KenLM reference cases not run: {shakespeare_corpus(ref)} is missing")
            ref = None
        elif ref is None and corpus is not None:
            notes.append("KenLM reference cases not run: no ../shared/reference/kenlm/tinyshakespeare "
                         "(give --reference DIR)")
    cases = registry(ref)
    if listing:
        chosen = _match(cases, names) if names else cases
        return Plan([c for c in chosen if not (skip_neural and c.neural)], [], corpus, ref)
    if names:
        chosen = _match(cases, names)
        if quick and any(c.kind == FULL for c in chosen):
            raise UsageError(f"--quick runs only quick cases, but --case chose "
                             f"{', '.join(c.name for c in chosen if c.kind == FULL)}")
        lacking = [c.name for c in chosen if c.needs == "corpus" and corpus is None]
        if lacking:
            verb = "needs" if len(lacking) == 1 else "need"
            raise UsageError(f"{', '.join(lacking)} {verb} the PTB folder: give --corpus DIR "
                             "(e.g. ../shared/corpora/ptb)")
    else:
        chosen = [c for c in cases if c.kind == QUICK or (c.needs == "corpus" and corpus is not None)
                  or c.needs == "reference"]
        if corpus is None and not quick:
            notes.append("full cases (PTB: KN5/KN3 vs published and KenLM, LSTM, Transformer) not run: "
                         "give --corpus DIR (e.g. ../shared/corpora/ptb)")
    if skip_neural:
        chosen = [c for c in chosen if not c.neural]
    return Plan(chosen, notes, corpus, ref)


@dataclass
class VerifyReport:
    results: list[Result]
    notes: list[str]
    seconds: float
    workdir: Path | None = None  # kept run folders (None: a temporary folder, removed)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failed

    def rows(self, numbers: bool = False) -> list[dict]:
        return [r.row(numbers) for r in self.results]


def verify(*, quick: bool = False, corpus: str | Path | None = None, reference: str | Path | None = None,
           names: list[str] | None = None, skip_neural: bool = False, keep: str | Path | None = None,
           log: Log = quiet, progress: bool = False) -> VerifyReport:
    """Choose the cases (see `plan`), run them in a scratch folder (kept in `keep` if given)."""
    from .outputs import check_output_dir

    chosen = plan(quick=quick, corpus=corpus, reference=reference, names=names, skip_neural=skip_neural)
    for note in chosen.notes:
        log(note)
    if keep is not None:
        keep = Path(keep)
        check_output_dir(keep, force=False)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lmkit-verify-") as tmp:
        workdir = keep if keep is not None else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        env = Env(workdir, chosen.corpus, chosen.reference, log=log, progress=progress)
        results = run_cases(chosen.cases, env)
    seconds = time.perf_counter() - start
    passed = sum(r.passed for r in results)
    log(f"{len(results)} cases in {seconds:.1f} s: {passed} passed, {len(results) - passed} failed")
    return VerifyReport(results, chosen.notes, seconds, keep)
