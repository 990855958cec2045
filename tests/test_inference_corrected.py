"""inference/corrected.py: the linear fit with the linearisation's bias removed by the twin (``fit_corrected``).

References are independent of the code under test: the corrected targets against the formula written out, the twin's
statistics against ``numpy.corrcoef`` / ``numpy.var`` of a ``from_tvb`` run, and the fixed point of the correction
against a "twin" whose bias is known exactly (the linear model at 1.1 x G), where the corrected fit must land at
G_true / 1.1 while the plain linear fit lands at G_true.
"""
import warnings

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", module="tvb")

import tvb_torchfit  # noqa: E402
from tests.test_linear import small_sim  # noqa: E402
from tvb_torchfit.errors import ParameterError  # noqa: E402
from tvb_torchfit.inference import corrected  # noqa: E402
from tvb_torchfit.roundtrip.writeback import apply_params, clone_simulator, read_params  # noqa: E402

FIT = dict(n_steps=60, lr=0.1, rmse_weight=1.0, progress=False)
BOUNDS = {"G": (0.05, 0.6)}
G_TRUE = 0.2                                  # small_sim's ExcInh G


def test_corrected_targets_move_fc_in_fisher_z_and_variance_per_node():
    rng = np.random.default_rng(0)
    d, s, lin = (np.full((3, 3), v) for v in (0.5, 0.3, 0.2))
    for m in (d, s, lin):
        np.fill_diagonal(m, 1.0)
    bold = rng.standard_normal((50, 3))
    s_var, l_var = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0])
    fc, new_bold = corrected.corrected_targets(d, bold, (s, s_var), (lin, l_var))
    want = np.tanh(np.arctanh(0.5) - np.arctanh(0.3) + np.arctanh(0.2))
    np.testing.assert_allclose(fc[0, 1], want, rtol=1e-12)
    np.testing.assert_array_equal(np.diag(fc), 1.0)
    np.testing.assert_allclose(new_bold.var(axis=0), bold.var(axis=0) * l_var / s_var, rtol=1e-12)
    np.testing.assert_allclose(np.corrcoef(new_bold.T), np.corrcoef(bold.T), atol=1e-12)   # FC of the BOLD kept
    same_fc, same_bold = corrected.corrected_targets(d, bold, (lin, l_var), (lin, l_var))
    np.testing.assert_allclose(same_fc, d, atol=1e-7)
    np.testing.assert_allclose(same_bold, bold, rtol=1e-12)


def test_simulated_statistics_are_the_twins_fc_and_variance():
    sim = small_sim("ExcInh")
    fc, var = corrected.simulated_statistics(sim, length_ms=30e3, batch=2, seed=3, discard_ms=10e3)
    twin = tvb_torchfit.from_tvb(sim, batch=2, seed=3)
    with torch.no_grad():
        (_, bold), = twin.run(simulation_length=30e3)
    b = bold[:, int(np.ceil(10e3 / 720.0)):, 0, :, 0].numpy()
    np.testing.assert_allclose(fc, np.mean([np.corrcoef(x.T) for x in b], axis=0), atol=1e-7)
    np.testing.assert_allclose(var, np.mean([x.var(axis=0) for x in b], axis=0), rtol=1e-10)


def _at(sim, G):
    return apply_params(clone_simulator(sim), {"G": np.array([G])})


def _biased_twin(monkeypatch, factor):
    """The "twin" is the linear model at factor x G: a bias known exactly."""
    def fake(sim, **_):
        return corrected.linear_statistics(_at(sim, factor * float(read_params(sim)["G"][0])))
    monkeypatch.setattr(corrected, "simulated_statistics", fake)


def test_the_correction_lands_where_the_twin_matches_the_target(monkeypatch):
    truth = small_sim("ExcInh")
    target_fc, _ = corrected.linear_statistics(truth)
    start = _at(truth, 0.14)
    plain = tvb_torchfit.fit(start, target_fc, BOUNDS, method="linear", **FIT)
    assert float(plain.params["G"][0]) == pytest.approx(G_TRUE, rel=0.01)
    _biased_twin(monkeypatch, 1.1)
    result = corrected.fit_corrected(start, target_fc, BOUNDS, rounds=6, tol=1e-3, **FIT)
    assert float(result.params["G"][0]) == pytest.approx(G_TRUE / 1.1, rel=0.01)
    rounds = result.provenance["corrections"]
    assert rounds[0]["params"]["G"] == pytest.approx(plain.params["G"].tolist())   # round 0 is the plain fit
    assert len(rounds) >= 3 and rounds[-1]["moved"] < rounds[1]["moved"]


def test_without_bias_the_corrected_fit_is_the_linear_fit_and_stops(monkeypatch):
    truth = small_sim("ExcInh")
    target_fc, _ = corrected.linear_statistics(truth)
    start = _at(truth, 0.14)
    _biased_twin(monkeypatch, 1.0)
    result = corrected.fit_corrected(start, target_fc, BOUNDS, rounds=5, **FIT)
    plain = tvb_torchfit.fit(start, target_fc, BOUNDS, method="linear", **FIT)
    rounds = result.provenance["corrections"]
    assert len(rounds) == 2 and rounds[1]["moved"] < 0.01                  # stopped at the first unchanged round
    np.testing.assert_allclose(result.params["G"], plain.params["G"], rtol=1e-3)


@pytest.mark.parametrize("optimizer", [dict(), dict(optimizer="LBFGS", lr=1.0, schedule=None)], ids=["Adam", "LBFGS"])
def test_the_correction_with_either_optimiser_lands_at_the_same_place(monkeypatch, optimizer):
    truth = small_sim("ExcInh")
    target_fc, _ = corrected.linear_statistics(truth)
    _biased_twin(monkeypatch, 1.1)
    result = corrected.fit_corrected(_at(truth, 0.14), target_fc, BOUNDS, rounds=6, tol=1e-3,
                                     **dict(FIT, n_steps=200, **optimizer))
    assert float(result.params["G"][0]) == pytest.approx(G_TRUE / 1.1, rel=0.01)
    steps = [c["steps"] for c in result.provenance["corrections"]]
    assert steps[-1] == len(result.history["loss"])
    assert all(n < 200 for n in steps) if optimizer else all(n == 200 for n in steps)   # LBFGS stops by itself


@pytest.mark.parametrize("warm_start", [True, False])
def test_each_round_starts_where_warm_start_says(monkeypatch, warm_start):
    """warm_start: the last round's values (a value at its bound moved 1 % of the range inside); else sim's own."""
    truth = small_sim("ExcInh")
    target_fc, _ = corrected.linear_statistics(truth)
    _biased_twin(monkeypatch, 1.1)
    starts, fitted, original = [], [], corrected.fit

    def recording(sim, *args, **kwargs):
        starts.append(float(read_params(sim)["G"][0]))
        result = original(sim, *args, **kwargs)
        fitted.append(float(result.params["G"][0]))
        result.params["G"] = np.array([0.6 - 1e-9]) if len(fitted) == 1 else result.params["G"]   # "at its bound"
        return result
    monkeypatch.setattr(corrected, "fit", recording)
    corrected.fit_corrected(_at(truth, 0.14), target_fc, BOUNDS, rounds=2, tol=1e-9, warm_start=warm_start, **FIT)
    assert starts[0] == pytest.approx(0.14)
    if warm_start:
        assert starts[1] == pytest.approx(0.6 - 0.01 * (0.6 - 0.05))
        assert starts[2] == pytest.approx(min(max(fitted[1], 0.05 + 0.0055), 0.6 - 0.0055))
    else:
        assert starts[1:] == pytest.approx([0.14, 0.14])


@pytest.mark.parametrize("kwargs, match", [
    (dict(warm_start="yes"), "warm_start"),
    (dict(method="twin"), "method='twin'"),
    (dict(rounds=-1), "rounds"),
    (dict(correction_ms=0.0), "correction_ms"),
    (dict(correction_batch=0), "correction_batch"),
    (dict(tol=-1.0), "tol"),
    (dict(correction_twin="float32"), "correction_twin"),
    (dict(correction_twin={"nsig": 1e-3}), "unknown option"),
    (dict(correction_processes=0), "correction_processes"),
])
def test_bad_settings_are_refused(kwargs, match):
    sim = small_sim("ExcInh")
    fc, _ = corrected.linear_statistics(sim)
    with pytest.raises(ParameterError, match=match):
        corrected.fit_corrected(sim, fc, BOUNDS, progress=False, **kwargs)


def test_twin_options_reach_the_correction_runs():
    """The eager twin (kernel=False) and the block kernel draw the same noise: the statistics agree to rounding;
    an invalid option value is refused by the twin itself."""
    sim = small_sim("ExcInh")
    kw = dict(length_ms=30e3, batch=2, seed=3, discard_ms=10e3)
    kernel = corrected.simulated_statistics(sim, **kw)
    eager = corrected.simulated_statistics(sim, kernel=False, **kw)
    np.testing.assert_allclose(eager[0], kernel[0], atol=1e-12)
    np.testing.assert_allclose(eager[1], kernel[1], rtol=1e-12)
    with pytest.raises(ParameterError, match="dtype"):
        corrected.simulated_statistics(sim, dtype="float16", **kw)


def test_correction_runs_split_across_processes_give_the_same_statistics():
    """Three realisations run as parts of 2 + 1 in two forked processes (each part with its members' own noise
    streams) give what the whole batch gives in this process."""
    sim = small_sim("ExcInh")
    kw = dict(length_ms=30e3, batch=3, seed=3, discard_ms=10e3)
    whole = corrected.simulated_statistics(sim, **kw)
    split = corrected.simulated_statistics(sim, processes=2, **kw)
    np.testing.assert_allclose(split[0], whole[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(split[1], whole[1], rtol=1e-13)
    with pytest.raises(ParameterError, match="CPU only"):
        corrected.simulated_statistics(sim, processes=2, device="cuda", **kw)


def test_a_correction_run_too_short_for_the_transient_is_refused():
    sim = small_sim("ExcInh")
    with pytest.raises(ParameterError, match="correction_ms"):
        corrected.simulated_statistics(sim, length_ms=21e3, batch=1, seed=0)


def test_the_same_seed_gives_bit_identical_values_with_the_real_twin():
    """Same machine, same correction seed: the corrected fit (the twin's runs included) repeats to the last bit; another
    seed gives another correction."""
    truth = small_sim("ExcInh")
    target_fc, _ = corrected.linear_statistics(truth)
    start = _at(truth, 0.14)
    kw = dict(rounds=1, correction_ms=40e3, correction_batch=2, **dict(FIT, n_steps=10))
    a = corrected.fit_corrected(start, target_fc, BOUNDS, correction_seed=1, **kw)
    b = corrected.fit_corrected(start, target_fc, BOUNDS, correction_seed=1, **kw)
    c = corrected.fit_corrected(start, target_fc, BOUNDS, correction_seed=2, **kw)
    np.testing.assert_array_equal(a.params["G"], b.params["G"])
    assert a.provenance["corrections"][0]["twin_r"] == b.provenance["corrections"][0]["twin_r"]
    assert a.provenance["corrections"][0]["twin_r"] != c.provenance["corrections"][0]["twin_r"]
