"""Mixture edges mutation testing found unpinned (docs/testing.md, bench/mutation.py mix): EM on inputs with
a known optimum, its refusals, mixing in log space, and every refusal of MixtureModel.load (driven with
stand-ins for lmkit.runs' readers, which load takes as arguments)."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lmkit.data.vocab import Vocab
from lmkit.errors import ModelError
from lmkit.models.mix import MixConfig, MixtureModel, fit_weights, log_weights, logsumexp0
from lmkit.protocol import Protocol

NEG = -np.inf


# -- EM ----------------------------------------------------------------------------------------------------
def test_disjoint_components_get_the_share_of_tokens_they_explain():
    # A gives probability 1 to the first 3 tokens and 0 to the rest; B the opposite: the optimum is (0.3, 0.7)
    L = np.array([[0.0] * 3 + [NEG] * 7, [NEG] * 3 + [0.0] * 7])
    res = fit_weights(L)
    np.testing.assert_allclose(res.weights, [0.3, 0.7], rtol=1e-12)
    assert res.nll[0] == pytest.approx(math.log(2), rel=1e-12)  # uniform start: every token at 1/2
    assert res.nll[-1] == pytest.approx(-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)), rel=1e-12)
    assert res.excluded == 0 and res.iterations == len(res.nll) - 1 >= 1


def test_em_improves_monotonically_and_stops_at_max_iter():
    rng = np.random.default_rng(0)
    L = np.log(rng.dirichlet(np.ones(5), size=(3, 40))[..., 0])
    full = fit_weights(L)
    assert all(b <= a for a, b in zip(full.nll, full.nll[1:]))
    assert abs(sum(full.weights) - 1) < 1e-12
    one = fit_weights(L, max_iter=1)
    assert one.iterations == 1 and len(one.nll) == 2
    none = fit_weights(L, max_iter=0)
    np.testing.assert_array_equal(none.weights, [1 / 3] * 3)
    assert none.nll == full.nll[:1]
    loose = fit_weights(L, tol=1e-2)
    assert loose.iterations < full.iterations


def test_one_component_has_weight_one():
    res = fit_weights(np.log([[0.5, 0.25, 0.125]]))
    assert res.weights.tolist() == [1.0]


def test_tokens_no_component_can_explain_are_left_out_and_counted():
    L = np.array([[0.0, NEG, math.log(0.5)], [NEG, NEG, math.log(0.5)]])
    res = fit_weights(L)
    assert res.excluded == 1 and np.isfinite(res.nll).all()


@pytest.mark.parametrize("L, error, match", [
    (np.zeros(3), ValueError, r"expected \(components, tokens\) log-probabilities, got shape \(3,\)"),
    (np.zeros((0, 4)), ValueError, r"got shape \(0, 4\)"),
    (np.zeros((2, 0)), ModelError, "^no valid token has non-zero probability under any component; cannot fit "
                                   "weights$"),
    (np.full((2, 3), NEG), ModelError, "^no valid token has non-zero probability under any component"),
    (np.array([[0.0, np.nan]]), ModelError, r"^a component returned NaN or \+inf log-probabilities; cannot fit "
                                            "mixture weights$"),
    (np.array([[0.0, np.inf]]), ModelError, r"^a component returned NaN or \+inf log-probabilities"),
])
def test_em_refusals(L, error, match):
    with pytest.raises(error, match=match):
        fit_weights(L)


# -- log-space mixing --------------------------------------------------------------------------------------
def test_logsumexp_and_log_weights():
    a = np.array([[0.0, NEG, math.log(0.25)], [math.log(3.0), NEG, math.log(0.25)]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = logsumexp0(a)
        w = log_weights([0.0, 1.0])
    np.testing.assert_allclose(got, [math.log(4.0), NEG, math.log(0.5)], rtol=1e-15)
    assert w.tolist() == [NEG, 0.0]


class Part:
    """A component whose next-token row and per-token log-probabilities are fixed."""

    def __init__(self, p):
        self.p = np.asarray(p, dtype=np.float32)  # float32, as torch models return: mixed in float64

    def next_logprobs(self, contexts):
        return np.log(np.tile(self.p, (len(contexts), 1)))

    def sequence_logprobs(self, sequences):
        return [np.log(np.full(len(s) + 1, self.p[0], dtype=np.float32)) for s in sequences]


def mixture(weights, parts):
    config = MixConfig(components=[{"label": f"m{i}"} for i in range(len(parts))], weights=list(weights))
    return MixtureModel(config, Vocab(["<pad>", "<unk>", "<s>", "</s>", "a"], [0, 0, 0, 0, 1]), Protocol(), parts)


def test_mixture_mixes_probabilities_not_log_probabilities():
    m = mixture([0.25, 0.75], [Part([0.2, 0.8]), Part([0.6, 0.4])])
    rows = m.next_logprobs([[2], [2, 4]])
    assert rows.dtype == np.float64 and rows.shape == (2, 2)
    np.testing.assert_allclose(np.exp(rows[0]), [0.25 * 0.2 + 0.75 * 0.6, 0.25 * 0.8 + 0.75 * 0.4], rtol=1e-7)
    seqs = m.sequence_logprobs([np.array([4, 4]), np.array([4])])
    assert [len(s) for s in seqs] == [3, 2] and seqs[0].dtype == np.float64
    np.testing.assert_allclose(np.exp(np.concatenate(seqs)), 0.25 * 0.2 + 0.75 * 0.6, rtol=1e-7)
    assert m.sequence_logprobs([]) == []
    assert m.label == "mix(m0+m1)"


def test_mixture_needs_one_weight_per_component():
    with pytest.raises(ModelError, match="^mixture has 2 components but 3 weights$"):
        mixture([0.2, 0.3, 0.5], [Part([1.0]), Part([1.0])])


# -- loading: every refusal, with stand-ins for lmkit.runs' readers --------------------------------------
VOCAB = Vocab(["<pad>", "<unk>", "<s>", "</s>", "a"], [0, 0, 0, 0, 1])
PROTOCOL = Protocol()


def component(tmp: Path, name: str, **entry) -> dict:
    run = tmp / name
    run.mkdir(exist_ok=True)
    (run / "run.json").write_text("{}")
    return {"path": str(run), "given": name, "vocab_id": VOCAB.vocab_id, "protocol_hash": PROTOCOL.hash,
            "created": "t0", **entry}


def readers(**record):
    rec = SimpleNamespace(**{"vocab_id": VOCAB.vocab_id, "protocol": PROTOCOL.to_dict(), "created": "t0", **record})
    loaded = []

    def load_run(path, device):
        loaded.append((Path(path), device))
        return Part([1.0]), None

    return {"read_record": lambda path: rec, "load_run": load_run}, loaded


def load(tmp, components, weights, **record):
    kw, loaded = readers(**record)
    model = MixtureModel.load(tmp, MixConfig(components=components, weights=weights), VOCAB, PROTOCOL,
                              device="meta", **kw)
    return model, loaded


def test_a_valid_mixture_loads_its_components_on_the_device(tmp_path):
    comps = [component(tmp_path, "a"), component(tmp_path, "b")]
    model, loaded = load(tmp_path, comps, [0.0, 1.0])
    assert len(model.components) == 2
    assert loaded == [(tmp_path / "a", "meta"), (tmp_path / "b", "meta")]


def test_load_needs_the_run_readers(tmp_path):
    kw, _ = readers()
    for missing in ("read_record", "load_run"):
        with pytest.raises(ModelError, match=r"a mixture is loaded from its run folder \(lmkit.runs.load_run\)"):
            MixtureModel.load(tmp_path, MixConfig([component(tmp_path, "a")], [1.0]), VOCAB, PROTOCOL,
                              **{**kw, missing: None})


@pytest.mark.parametrize("weights, n", [([0.5, 0.5], 1), ([1.2, -0.2], 2), ([0.5, 0.6], 2), ([], 0),
                                        ([0.5 + 1e-6, 0.5], 2), (["x", 1.0], 2)])
def test_invalid_weights_are_refused(tmp_path, weights, n):
    comps = [component(tmp_path, f"r{i}") for i in range(n)]
    with pytest.raises(ModelError, match=r"holds no valid mixture \(components and weights summing to 1\)"):
        load(tmp_path, comps, weights)


@pytest.mark.parametrize("record, entry, match", [
    ({"vocab_id": "v2"}, {}, "vocab_id is now v2, the mixture was fitted with "),
    ({}, {"vocab_id": "v0"}, f"vocab_id is now {VOCAB.vocab_id}, the mixture was fitted with v0"),
    ({"protocol": Protocol(lowercase=True).to_dict()}, {},
     f"protocol hash is now {Protocol(lowercase=True).hash}, the mixture was fitted with {PROTOCOL.hash}"),
    ({}, {"protocol_hash": "p0"}, f"protocol hash is now {PROTOCOL.hash}, the mixture was fitted with p0"),
    ({"created": "t1"}, {}, r"was retrained \(t1\) after the mixture was fitted \(t0\)"),
])
def test_a_changed_component_is_refused_by_name(tmp_path, record, entry, match):
    comps = [component(tmp_path, "good"), component(tmp_path, "bad", **entry)]
    kw, _ = readers(**record)
    with pytest.raises(ModelError) as err:
        MixtureModel.load(tmp_path, MixConfig(comps, [0.5, 0.5]), VOCAB, PROTOCOL, **kw)
    assert re.search(match, str(err.value)), str(err.value)
    first = "bad" if entry else "good"  # a changed record (one reader for both) fails at the first component
    assert str(err.value).startswith(f"{tmp_path}: component {first}: ")
    assert str(err.value).endswith("; refit the mixture with lmkit mix")


def test_a_component_without_a_creation_time_is_not_checked_for_retraining(tmp_path):
    model, _ = load(tmp_path, [component(tmp_path, "a", created=None)], [1.0], created="t9")
    assert len(model.components) == 1


def test_components_are_found_by_absolute_path_then_relative_then_as_given(tmp_path, monkeypatch):
    mixdir = tmp_path / "mix"
    mixdir.mkdir()
    real = component(mixdir, "rel")  # tmp/mix/rel
    _, loaded = load(mixdir, [{**real, "path": str(tmp_path / "gone"), "relative": "rel"}], [1.0])
    assert loaded[0][0] == mixdir / "rel"
    monkeypatch.chdir(mixdir)
    _, loaded = load(mixdir, [{**real, "path": "", "relative": "nowhere", "given": "rel"}], [1.0])
    assert loaded[0][0] == Path("rel")
    _, loaded = load(tmp_path, [{**real, "relative": "nowhere"}], [1.0])
    assert loaded[0][0] == mixdir / "rel"


def test_a_missing_component_says_where_it_was_looked_for(tmp_path):
    entry = {"path": str(tmp_path / "x"), "relative": "y", "given": "z", "vocab_id": VOCAB.vocab_id,
             "protocol_hash": PROTOCOL.hash}
    with pytest.raises(ModelError) as err:
        load(tmp_path, [entry], [1.0])
    assert str(err.value) == (f"{tmp_path}: component run z is missing (looked in {tmp_path / 'x'}, "
                              f"{tmp_path / 'y'}, z)")
    with pytest.raises(ModelError) as err:
        load(tmp_path, [{"path": str(tmp_path / "x")}], [1.0])
    assert f"component run {tmp_path / 'x'} is missing" in str(err.value)
    with pytest.raises(ModelError) as err:
        load(tmp_path, [{"vocab_id": "v"}], [1.0])
    assert str(err.value).endswith("is missing (looked in nothing recorded)")


def test_float32_logprobs_are_fitted_in_float64():
    rng = np.random.default_rng(1)
    L = np.log(rng.dirichlet(np.ones(4), size=(3, 300))[..., 0]).astype(np.float32)
    a, b = fit_weights(L), fit_weights(L.astype(np.float64))
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.nll == b.nll


def test_em_stops_at_the_first_step_that_improves_less_than_tol():
    rng = np.random.default_rng(2)
    L = np.log(rng.dirichlet(np.ones(6), size=(3, 200))[..., 0])
    res = fit_weights(L, tol=1e-4)
    h = res.nll
    assert h[0] > 1  # |NLL| above one: a relative tolerance, not an absolute one
    for prev, cur in zip(h[:-2], h[1:-1]):
        assert prev - cur >= 1e-4 * abs(prev)
    assert h[-2] - h[-1] < 1e-4 * abs(h[-2])


def test_with_no_tolerance_em_stops_when_rounding_would_raise_the_nll():
    rng = np.random.default_rng(0)
    L = np.log(rng.dirichlet(np.ones(5), size=(3, 200))[..., 0])
    res = fit_weights(L, tol=0.0, max_iter=5000)
    assert res is not None and 0 < res.iterations < 5000
    assert all(b <= a for a, b in zip(res.nll, res.nll[1:]))


def test_logsumexp_keeps_columns_of_very_different_scale():
    a = np.array([[0.0, -1000.0], [0.0, -1000.0]])
    np.testing.assert_allclose(logsumexp0(a), [math.log(2), math.log(2) - 1000.0], rtol=1e-15)


def test_fit_info_and_fit():
    m = mixture([1.0], [Part([1.0])])
    assert m.fit_info() == {}
    with pytest.raises(Exception, match=r"^a mixture is not trained: build it from trained runs with "
                                        r"`lmkit mix RUN RUN\.\.\. -o OUT`$"):
        m.fit(None, None)


def test_components_load_on_the_cpu_by_default(tmp_path):
    kw, loaded = readers()
    MixtureModel.load(tmp_path, MixConfig([component(tmp_path, "a")], [1.0]), VOCAB, PROTOCOL, **kw)
    assert loaded == [(tmp_path / "a", "cpu")]


def test_a_component_without_a_given_name_is_named_by_its_path(tmp_path):
    entry = {k: v for k, v in component(tmp_path, "a", vocab_id="v0").items() if k != "given"}
    kw, _ = readers()
    with pytest.raises(ModelError, match=f"^{re.escape(str(tmp_path))}: component {re.escape(str(tmp_path / 'a'))}: "):
        MixtureModel.load(tmp_path, MixConfig([entry], [1.0]), VOCAB, PROTOCOL, **kw)
