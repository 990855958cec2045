"""inference.loop: the LBFGS step (a quasi-Newton iteration with a strong-Wolfe line search) on the linear method:
it converges and stops, agrees with a long gradient descent, survives trial points without a stable state or a
finite gradient, resumes bit for bit, and is refused where its line search cannot work."""
import numpy as np
import pytest
import torch
from tvb.simulator import models, monitors

import tvb_torchfit
from tvb_torchfit.analyzers.linear import FixedPointError, linear_bold_fc
from tvb_torchfit.errors import ParameterError
from tvb_torchfit.inference import estimators, loop
from tvb_torchfit.inference.batched import FitJob, fit_batch
from tvb_builders import build, heun_stochastic, small_connectivity

N = 4
TRUE = {"G": 1.6, "w_p": 0.8}
PARAMS = {"G": (0.5, 3.0), "w_p": (0.5, 1.0)}
LBFGS = dict(method="linear", optimizer="LBFGS", lr=1.0, schedule=None, n_steps=60, progress=False)


@pytest.fixture(scope="module")
def sim():
    return build(models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([1.0])),
                 heun_stochastic(dt=2.0, nsig=1e-4), (monitors.Bold(period=360.0),), conn=small_connectivity(N), a=0.5)


@pytest.fixture(scope="module")
def goal(sim):
    """The linear FC at TRUE: a target the linear model meets exactly."""
    fc, _ = linear_bold_fc(tvb_torchfit.from_tvb(sim), {k: torch.tensor([v], dtype=torch.float64)
                                                         for k, v in TRUE.items()})
    return fc.detach().numpy()


def test_lbfgs_finds_the_values_that_made_the_target_and_stops(sim, goal):
    res = tvb_torchfit.fit(sim, goal, PARAMS, **LBFGS)
    steps = len(res.history["loss"])
    assert steps < 60 and res.provenance["retreats"] == 0           # it stopped by itself
    for name, true in TRUE.items():
        assert res.params[name][0] == pytest.approx(true, rel=1e-3)
    assert res.history["loss"][-1] < res.history["loss"][0]


def test_lbfgs_and_adam_agree_where_both_converge(sim, goal):
    noise = np.random.RandomState(3).randn(N, N) * 0.05
    goal = np.clip(goal + noise + noise.T, -0.99, 0.99)               # not reachable: an interior minimum
    np.fill_diagonal(goal, 1.0)
    lbfgs = tvb_torchfit.fit(sim, goal, {"G": (0.5, 3.0)}, **LBFGS)
    adam = tvb_torchfit.fit(sim, goal, {"G": (0.5, 3.0)}, method="linear", lr=0.05, schedule="cosine", n_steps=300,
                            progress=False)
    assert lbfgs.params["G"][0] == pytest.approx(adam.params["G"][0], rel=1e-3)
    assert min(lbfgs.history["loss"]) <= min(adam.history["loss"]) + 1e-9
    assert len(lbfgs.history["loss"]) < 40


def test_a_trial_point_without_a_stable_state_is_a_wall_to_the_line_search(sim, goal, monkeypatch):
    """No low state at a trial point (FixedPointError): the line search backs off from it; nothing is taken back
    and the fit reaches the same optimum."""
    calls = {"n": 0}
    original = estimators.linear_bold_fc

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:                              # a trial point of the first line search
            raise FixedPointError("no stable low state (test)")
        return original(*args, **kwargs)
    monkeypatch.setattr(estimators, "linear_bold_fc", failing)
    res = tvb_torchfit.fit(sim, goal, PARAMS, **LBFGS)
    assert calls["n"] > 3 and res.provenance["retreats"] == 0
    assert res.history["params"]["G"][0][0] == pytest.approx(1.0)       # the start, recorded once
    for name, true in TRUE.items():
        assert res.params[name][0] == pytest.approx(true, rel=1e-3)


def test_a_trial_point_with_a_non_finite_gradient_is_a_wall_to_the_line_search(sim, goal, monkeypatch):
    original, seen = estimators.LinearEstimator.prediction, {"n": 0}

    def patched(self, values, *args):
        pred = original(self, values, *args)
        seen["n"] += 1
        if seen["n"] == 2:                               # the first trial point: a finite FC, a NaN gradient
            pred.fc = pred.fc + torch.sqrt(values["G"] - values["G"]).sum()
        return pred
    monkeypatch.setattr(estimators.LinearEstimator, "prediction", patched)
    res = tvb_torchfit.fit(sim, goal, PARAMS, **LBFGS)
    assert seen["n"] > 2 and res.provenance["retreats"] == 0
    assert all(np.isfinite(v).all() for v in res.params.values())
    for name, true in TRUE.items():
        assert res.params[name][0] == pytest.approx(true, rel=1e-3)


def test_a_start_without_a_finite_gradient_is_a_clear_error(sim, goal, monkeypatch):
    """The fit's own start has no usable gradient: no direction and nothing to go back to."""
    original = estimators.LinearEstimator.prediction

    def patched(self, values, *args):
        pred = original(self, values, *args)
        pred.fc = pred.fc + torch.sqrt(values["G"] - values["G"]).sum()
        return pred
    monkeypatch.setattr(estimators.LinearEstimator, "prediction", patched)
    with pytest.raises(FixedPointError, match="start from values where"):
        tvb_torchfit.fit(sim, goal, PARAMS, **LBFGS)


def test_each_point_is_evaluated_once(sim, goal, monkeypatch):
    """The line search's last point starts the next iteration: its loss and gradient are not computed again."""
    seen = []
    original = estimators.LinearEstimator.predict

    def counting(self, values, **kwargs):
        seen.append(tuple(float(v.detach()[0]) for v in values.values()))
        return original(self, values, **kwargs)
    monkeypatch.setattr(estimators.LinearEstimator, "predict", counting)
    tvb_torchfit.fit(sim, goal, PARAMS, **dict(LBFGS, n_steps=6))
    assert len(seen) == len(set(seen))


def test_interrupted_lbfgs_fit_resumes_bit_for_bit(sim, goal, tmp_path, monkeypatch):
    kw = dict(LBFGS, n_steps=8)
    full = tvb_torchfit.fit(sim, goal, PARAMS, **kw)
    ckpt = tmp_path / "fit.ckpt"
    calls = {"n": 0}
    original = estimators.LinearEstimator.predict

    def interrupting(self, values, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, values, **kwargs)
    monkeypatch.setattr(estimators.LinearEstimator, "predict", interrupting)
    with pytest.raises(KeyboardInterrupt):
        tvb_torchfit.fit(sim, goal, PARAMS, checkpoint=ckpt, checkpoint_every=1, **kw)
    monkeypatch.undo()
    resumed = tvb_torchfit.fit(sim, goal, PARAMS, checkpoint=ckpt, **kw)
    assert resumed.history["loss"] == full.history["loss"]
    for name in PARAMS:
        assert np.array_equal(resumed.params[name], full.params[name])


def test_a_converged_fit_resumed_from_its_checkpoint_takes_no_step(sim, goal, tmp_path, monkeypatch):
    """The converged step is checkpointed (though not a multiple of checkpoint_every) with the loop's converged
    state, so a rerun evaluates nothing and returns the same fit."""
    ckpt = tmp_path / "fit.ckpt"
    first = tvb_torchfit.fit(sim, goal, PARAMS, checkpoint=ckpt, checkpoint_every=1000, **LBFGS)
    assert ckpt.exists()
    calls = {"n": 0}
    original = estimators.LinearEstimator.predict

    def counting(self, values, **kwargs):
        calls["n"] += 1
        return original(self, values, **kwargs)
    monkeypatch.setattr(estimators.LinearEstimator, "predict", counting)
    again = tvb_torchfit.fit(sim, goal, PARAMS, checkpoint=ckpt, checkpoint_every=1000, **LBFGS)
    assert calls["n"] == 0 and again.history["loss"] == first.history["loss"]


@pytest.mark.parametrize("settings,match", [
    (dict(method="twin"), "deterministic loss"),
    (dict(method="linear", schedule="cosine"), "schedule=None"),
])
def test_lbfgs_where_its_line_search_cannot_work_is_refused(sim, goal, settings, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, goal, PARAMS, optimizer="LBFGS", progress=False, **settings)


def test_lbfgs_in_a_batched_fit_is_refused(sim, goal):
    settings = {k: v for k, v in LBFGS.items() if k != "progress"}
    out = fit_batch([FitJob(sim, goal, PARAMS, settings)], progress=False)
    assert isinstance(out[0], ParameterError) and "LBFGS" in str(out[0])


def test_the_optimiser_is_built_from_the_settings():
    from tvb_torchfit.inference.config import make_config
    p = [torch.nn.Parameter(torch.zeros(2))]
    lbfgs = loop.make_optimizer(make_config({k: v for k, v in LBFGS.items() if k != "progress"}), p)
    assert isinstance(lbfgs, torch.optim.LBFGS) and lbfgs.defaults["line_search_fn"] == "strong_wolfe"
    assert lbfgs.defaults["max_iter"] == 1
    assert isinstance(loop.make_optimizer(make_config(dict(lr=0.1)), p), torch.optim.Adam)
