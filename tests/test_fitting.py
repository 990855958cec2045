"""fit(): reproducibility, interrupt-and-resume, write-back, and clear errors for bad inputs."""
import numpy as np
import pytest
import torch
from tvb.simulator import integrators, models, monitors

import tvb_torchfit
from tvb_torchfit.inference import estimators
from tvb_torchfit.errors import ParameterError
from tvb_builders import build, heun_stochastic, small_connectivity

N = 4
FAST = dict(n_steps=4, window_trs=2, fc_window_trs=4, batch=2, warmup_ms=1500.0, progress=False)


@pytest.fixture(scope="module")
def sim():
    return build(models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([1.0])),
                 heun_stochastic(dt=2.0, nsig=1e-4), (monitors.Bold(period=360.0),), conn=small_connectivity(N), a=0.5)


@pytest.fixture(scope="module")
def target():
    return np.corrcoef(np.random.RandomState(0).randn(N, 200))


PARAMS = {"G": (0.5, 3.0), "w_p": (0.5, 1.0)}


def test_same_seed_same_fit_bit_for_bit(sim, target):
    a = tvb_torchfit.fit(sim, target, PARAMS, seed=3, **FAST)
    b = tvb_torchfit.fit(sim, target, PARAMS, seed=3, **FAST)
    c = tvb_torchfit.fit(sim, target, PARAMS, seed=4, **FAST)
    assert a.history["loss"] == b.history["loss"]
    for k in PARAMS:
        assert np.array_equal(a.params[k], b.params[k])
    assert a.history["loss"] != c.history["loss"]


def test_parameters_move_and_stay_in_bounds(sim, target):
    res = tvb_torchfit.fit(sim, target, {"G": (0.9, 1.1), "nsig": (1e-5, 1e-3)}, lr=0.5, **FAST)
    traj = np.stack(res.history["params"]["G"])
    assert np.all((traj > 0.9) & (traj < 1.1))
    assert not np.allclose(traj, 1.0)
    assert res.params["noise.nsig"].shape == (1,) and 1e-5 < res.params["noise.nsig"][0] < 1e-3


def _interrupting(monkeypatch, at_call, exc):
    calls = {"n": 0}
    original = estimators.set_params

    def flaky(twin, values):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise exc
        return original(twin, values)
    monkeypatch.setattr(estimators, "set_params", flaky)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("killed")], ids=["ctrl-c", "crash"])
def test_interrupt_and_resume_equals_uninterrupted(sim, target, tmp_path, monkeypatch, exc):
    full = tvb_torchfit.fit(sim, target, PARAMS, seed=1, **FAST)
    ckpt = tmp_path / "fit.ckpt"
    _interrupting(monkeypatch, at_call=4, exc=exc)        # call 1 = warm-up, interrupts during step 3
    with pytest.raises(type(exc)):
        tvb_torchfit.fit(sim, target, PARAMS, seed=1, checkpoint=ckpt, checkpoint_every=1, **FAST)
    monkeypatch.undo()
    assert ckpt.exists()
    resumed = tvb_torchfit.fit(sim, target, PARAMS, seed=1, checkpoint=ckpt, **FAST)
    assert resumed.history["loss"] == full.history["loss"]
    for k in PARAMS:
        assert np.array_equal(resumed.params[k], full.params[k])


def test_checkpoint_from_other_settings_is_refused(sim, target, tmp_path):
    ckpt = tmp_path / "fit.ckpt"
    tvb_torchfit.fit(sim, target, PARAMS, checkpoint=ckpt, **FAST)
    with pytest.raises(ParameterError, match="other settings"):
        tvb_torchfit.fit(sim, target, PARAMS, checkpoint=ckpt, **dict(FAST, lr=0.01))


def test_writeback_puts_exactly_the_fitted_values(sim, target, tmp_path):
    res = tvb_torchfit.fit(sim, target, dict(PARAMS, J_i=tvb_torchfit.Param(0.5, 1.5, regionwise=True)), **FAST)
    fresh = build(models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([1.0])),
                  heun_stochastic(dt=2.0, nsig=1e-4), (monitors.Bold(period=360.0),), conn=small_connectivity(N), a=0.5)
    applied = res.apply(fresh)
    assert np.array_equal(np.asarray(applied.model.G).ravel(), res.params["G"])
    assert np.array_equal(np.asarray(applied.model.w_p).ravel(), res.params["w_p"])
    assert np.array_equal(np.asarray(applied.model.J_i).ravel(), res.params["J_i"]) and res.params["J_i"].shape == (N,)
    applied.run(simulation_length=10.0)                  # configured and runnable
    res.save(tmp_path / "out")
    back = tvb_torchfit.FitResult.load(tmp_path / "out")
    for k, v in res.params.items():
        assert np.array_equal(back.params[k], v)
    assert back.history["loss"] == res.history["loss"]


@pytest.mark.parametrize("bad,match", [
    (np.ones((N, N + 1)), "square"),
    (np.eye(N + 1), str(N + 1)),
    (np.where(np.eye(N) > 0, 1.0, np.nan), "NaN"),
    (np.eye(N) + np.triu(np.full((N, N), 0.3), 1), "symmetric"),
    (np.full((N, N), 2.0), "correlation"),
], ids=["not-square", "wrong-node-count", "nan", "not-symmetric", "not-correlation"])
def test_bad_target_fc(sim, bad, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, bad, PARAMS, **FAST)


@pytest.mark.parametrize("params,match", [
    ({"not_a_param": (0, 1)}, "no such parameter"),
    ({"w": (0.1, 1.0)}, "no such parameter"),                    # ReducedWongWang's w, not ExcInh's
    ({"G": (3.0, 0.5)}, "inverted"),
    ({"G": (2.0, 3.0)}, "outside the bounds"),                   # start G = 1.0
    ({"G": "wide"}, "bounds"),
    ({}, "empty"),
], ids=["unknown", "other-model", "inverted", "excludes-start", "not-bounds", "empty"])
def test_bad_params(sim, target, params, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, target, params, **FAST)


def test_window_longer_than_data(sim, target):
    with pytest.raises(ParameterError, match="longer than the data"):
        tvb_torchfit.fit(sim, target, PARAMS, **dict(FAST, data_trs=1))


def test_tr_not_multiple_of_dt(target):
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.7, nsig=1e-4), (monitors.Bold(period=720.0),),
                conn=small_connectivity(N))
    with pytest.raises(ParameterError, match="not a multiple"):
        tvb_torchfit.fit(sim, target, PARAMS, **FAST)


def test_no_bold_monitor_and_unknown_setting(target):
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=1.0), (monitors.Raw(),), conn=small_connectivity(N))
    with pytest.raises(ParameterError, match="Bold"):
        tvb_torchfit.fit(sim, target, PARAMS, **FAST)
    with pytest.raises(ParameterError, match="unknown fit setting"):
        tvb_torchfit.fit(sim, target, PARAMS, learning_rate=0.1)


def test_bifurcation_penalty_pulls_towards_its_band(sim, target):
    """With a dominant bifurcation term, w_p moves so that the nodes' lambda_eff approaches the band.

    The band asks for a *more* stable low state than the start's, while the FC term alone drives w_p up
    here (measured): w_p must go down, and only the penalty can make it.
    """
    from tvb_torchfit.analyzers.bifurcation import bifurcation_penalty, from_twin
    band = dict(bifurcation_target=-0.02, bifurcation_width=0.002)

    def penalty(w_p):
        twin = tvb_torchfit.from_tvb(sim)
        twin.set_param("w_p", torch.tensor([float(w_p)], dtype=torch.float64))
        return float(bifurcation_penalty(**from_twin(twin), target=band["bifurcation_target"],
                                         width=band["bifurcation_width"]))

    start = penalty(0.7)
    assert start > 0                                                     # the start is outside the band
    res = tvb_torchfit.fit(sim, target, {"w_p": (0.3, 1.5)}, bifurcation_weight=100.0, lr=0.3,
                           **dict(FAST, n_steps=6), **band)
    without = tvb_torchfit.fit(sim, target, {"w_p": (0.3, 1.5)}, lr=0.3, **dict(FAST, n_steps=6), **band)
    assert res.params["w_p"][0] < 0.7
    assert penalty(res.params["w_p"][0]) < start
    assert without.params["w_p"][0] > 0.7                                # FC alone goes the other way
    assert penalty(res.params["w_p"][0]) < penalty(without.params["w_p"][0])


@pytest.mark.parametrize("settings,match", [
    (dict(bifurcation_weight=-1.0), "bifurcation_weight"),
    (dict(bifurcation_weight=1.0, bifurcation_target=-0.001, bifurcation_width=0.002), "below 0"),
])
def test_bad_bifurcation_settings(sim, target, settings, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, target, PARAMS, **dict(FAST, **settings))


FCD = dict(fc_window_trs=8, fcd_window_trs=4, fcd_step_trs=2, warmup_ms=None)   # warm-up fills the FC window


def test_fcd_term_adds_the_fcd_distance(sim, target):
    bold = np.random.RandomState(1).randn(60, N)
    plain = tvb_torchfit.fit(sim, target, PARAMS, seed=2, **dict(FAST, **FCD))
    with_fcd = tvb_torchfit.fit(sim, target, PARAMS, seed=2, target_bold=bold, fcd_weight=1.0,
                                **dict(FAST, **FCD))
    assert with_fcd.history["loss"][0] > plain.history["loss"][0]          # same first window, + W1 > 0
    assert with_fcd.history["fc_corr"][0] == plain.history["fc_corr"][0]


def test_fcd_target_holds_the_lags_of_the_simulated_window():
    """The FCD term's target values are those of every fc_window_trs-long stretch of target_bold (pooled), not the
    whole session's: a window of 8 TRs holds FCD windows (4 TRs, every 2) at most 2 steps apart, and so do they."""
    from tvb_torchfit.inference.config import make_config
    from tvb_torchfit.inference.problem import target_fcd
    from tvb_torchfit import stats
    bold = np.random.RandomState(1).randn(60, N)
    cfg = make_config(dict({k: v for k, v in FAST.items() if k != "progress"}, fcd_weight=1.0, **FCD))
    got = np.sort(target_fcd(bold, cfg, N).numpy())
    stretches = [stats.fcd_values(bold[s:s + 8], 4, 2).numpy() for s in range(0, 60 - 8 + 1, 2)]
    np.testing.assert_allclose(got, np.sort(np.concatenate(stretches)), atol=1e-7)
    assert got.size < stats.fcd_values(bold, 4, 2).numel() * 3 and got.size != stats.fcd_values(bold, 4, 2).numel()


def test_variance_term_compares_bold_variances(sim, target):
    """The twin's first window is the same with and without the term; the term is the mean squared log ratio of
    the window's BOLD variance (mean over realisations) to the target's, > 0 for a target 100x too loud; it
    needs target_bold."""
    plain = tvb_torchfit.fit(sim, target, PARAMS, seed=2, **FAST)
    loud = np.random.RandomState(1).randn(60, N) * 10.0
    with_var = tvb_torchfit.fit(sim, target, PARAMS, seed=2, target_bold=loud, variance_weight=1.0, **FAST)
    assert with_var.history["fc_corr"][0] == plain.history["fc_corr"][0]
    assert with_var.history["loss"][0] > plain.history["loss"][0] + 1.0
    with pytest.raises(ParameterError, match="variance_weight=1.0 needs target_bold"):
        tvb_torchfit.fit(sim, target, PARAMS, variance_weight=1.0, **FAST)


@pytest.mark.parametrize("bold,match", [
    (None, "needs target_bold"),
    (np.zeros((60, N + 1)), r"expected \(time, 4\)"),
    (np.full((60, N), np.nan), "non-finite"),
    (np.random.RandomState(0).randn(5, N), "too short"),
], ids=["missing", "wrong-nodes", "nan", "too-short"])
def test_bad_fcd_inputs(sim, target, bold, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, target, PARAMS, target_bold=bold, fcd_weight=1.0, **dict(FAST, **FCD))


BALLOON = dict(observation="balloon", balloon_period_ms=40.0, warmup_ms=None, fc_window_trs=6)


def test_balloon_observation_fits_and_resumes(sim, target, tmp_path, monkeypatch):
    """observation="balloon": TemporalAverage -> Balloon-Windkessel; resume (its state checkpointed) is exact."""
    full = tvb_torchfit.fit(sim, target, PARAMS, seed=1, **dict(FAST, **BALLOON))
    assert all(np.isfinite(full.history["loss"]))
    assert not np.allclose(np.stack(full.history["params"]["G"]), 1.0)
    plain = tvb_torchfit.fit(sim, target, PARAMS, seed=1, **dict(FAST, warmup_ms=None, fc_window_trs=6))
    assert full.history["loss"] != plain.history["loss"]                  # a different observation model
    ckpt = tmp_path / "fit.ckpt"
    _interrupting(monkeypatch, at_call=4, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        tvb_torchfit.fit(sim, target, PARAMS, seed=1, checkpoint=ckpt, checkpoint_every=1, **dict(FAST, **BALLOON))
    monkeypatch.undo()
    resumed = tvb_torchfit.fit(sim, target, PARAMS, seed=1, checkpoint=ckpt, **dict(FAST, **BALLOON))
    assert resumed.history["loss"] == full.history["loss"]


@pytest.mark.parametrize("settings,match", [
    (dict(observation="ballon"), "observation"),
    (dict(observation="balloon", balloon_period_ms=7.0), "divides the TR"),
])
def test_bad_observation_settings(sim, target, settings, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, target, PARAMS, **dict(FAST, **settings))


def test_linear_method_is_deterministic_and_raises_fc_correlation(sim):
    """method="linear": analytic FC (linear.py); fitting to the linear FC of other parameters raises r."""
    from tvb_torchfit.analyzers.linear import linear_bold_fc
    twin = tvb_torchfit.from_tvb(sim)
    goal, _ = linear_bold_fc(twin, {"G": torch.tensor([1.6], dtype=torch.float64)})
    goal = goal.detach().numpy()
    kw = dict(method="linear", n_steps=6, lr=0.2, progress=False)
    a = tvb_torchfit.fit(sim, goal, {"G": (0.5, 3.0)}, **kw)
    b = tvb_torchfit.fit(sim, goal, {"G": (0.5, 3.0)}, **kw)
    assert a.history["loss"] == b.history["loss"]                          # no noise: the same fit
    assert a.history["fc_corr"][-1] > a.history["fc_corr"][0]
    assert a.params["G"][0] > 1.0                                          # moved towards 1.6


def test_the_reported_linear_values_are_where_the_lowest_loss_was_computed(sim, target):
    """method="linear" reports the iterate with the lowest loss: each step's record pairs its loss with the values
    it was computed at (the values after the step were recorded before, one step off)."""
    kw = dict(method="linear", lr=0.3, progress=False)
    res = tvb_torchfit.fit(sim, target, PARAMS, n_steps=8, **kw)
    best = int(np.argmin(res.history["loss"]))
    there = res.apply(tvb_torchfit.clone_simulator(sim))
    again = tvb_torchfit.fit(there, target, PARAMS, n_steps=1, **kw)
    assert again.history["loss"][0] == pytest.approx(res.history["loss"][best], rel=1e-12)
    for name in PARAMS:
        assert np.array_equal(res.history["params"][name][0], res.start[name])     # the first record: the start


def test_a_region_wise_nsig_written_back_starts_the_next_fit(sim, target):
    """TVB configures a region-wise nsig written back as (N,) into one row per state variable; the next fit (a later
    stage, a corrected fit's next round) reads it back as one value per node (it failed with 'start value has 2N
    entries'). A per-variable nsig that differs between the variables is refused, naming why."""
    params = {"nsig": tvb_torchfit.Param(1e-6, 1e-2, regionwise=True)}
    first = tvb_torchfit.fit(sim, target, params, method="linear", n_steps=2, progress=False)
    written = first.apply(tvb_torchfit.clone_simulator(sim))
    again = tvb_torchfit.fit(written, target, params, method="linear", n_steps=1, progress=False)
    np.testing.assert_allclose(again.start["noise.nsig"], first.params["noise.nsig"], rtol=1e-12)
    other = tvb_torchfit.clone_simulator(sim)
    other.integrator.noise.nsig = np.array([[1e-4] * N, [2e-4] * N])
    other.configure()
    with pytest.raises(ParameterError, match="differs between state variables"):
        tvb_torchfit.fit(other, target, params, method="linear", n_steps=1, progress=False)


def test_fic_sets_J_i_and_writes_it_back(sim, target):
    res = tvb_torchfit.fit(sim, target, {"G": (0.5, 3.0)}, method="linear", fic_rate=3.0, n_steps=2, lr=0.05,
                           progress=False)
    assert res.params["J_i"].shape == (N,) and np.all(res.params["J_i"] > 0)
    with pytest.raises(ParameterError, match="feedback inhibition"):
        tvb_torchfit.fit(sim, target, {"J_i": (0.5, 3.0)}, method="linear", fic_rate=3.0, n_steps=2, progress=False)
    with pytest.raises(ParameterError, match="fic_rate"):
        tvb_torchfit.fit(sim, target, {"G": (0.5, 3.0)}, fic_rate=-1.0, **FAST)


@pytest.mark.parametrize("settings,match", [
    (dict(method="mcmc"), "method"),
    (dict(method="linear", fcd_weight=1.0), "method='linear'"),
])
def test_bad_method_settings(sim, target, settings, match):
    with pytest.raises(ParameterError, match=match):
        tvb_torchfit.fit(sim, target, PARAMS, **dict(FAST, **settings))


def test_window_level_carries_no_gradient():
    """cut_level_gradient: same values; a shift of the window's mean level gets no gradient, fluctuations do."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    y = estimators.cut_level_gradient(x)
    assert torch.allclose(y, x, rtol=0, atol=1e-14)                   # the same values, up to rounding
    (g_level,) = torch.autograd.grad(y.sum(), x)                      # d(sum)/dx acts only through the level
    assert torch.allclose(g_level, torch.zeros_like(x), atol=1e-12)
    (g_fluct,) = torch.autograd.grad((y ** 2).sum(), x)
    assert g_fluct.abs().max() > 0


def test_fit_neither_uses_nor_changes_the_global_rng(sim, target):
    """The twin's noise comes from its own seeded generators: the fit is the same whatever the caller's global
    torch RNG state, and leaves that state where it was."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = tvb_torchfit.fit(sim, target, PARAMS, seed=3, **FAST)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)
    b = tvb_torchfit.fit(sim, target, PARAMS, seed=3, **FAST)
    assert a.history["loss"] == b.history["loss"]


# ---------------------------------------------------------------------------------------------- recovery
def recovery_simulator(G: float):
    """The first 10 regions of connectivity_76 (weights / max, 3 mm/ms), ReducedWongWangExcInh (w_p 0.6, J_i 1),
    Linear a = 1, HeunStochastic dt 5 ms, nsig 1e-4, Bold 720 ms, from the low state (all S = 0.05)."""
    from tvb.datatypes.connectivity import Connectivity
    from tvb.simulator import coupling, noise, simulator
    from tvb_builders import connectivity
    from tvb_torchfit.roundtrip.writeback import clone_simulator, low_state_initial_conditions
    full, idx = connectivity("connectivity_76.zip"), np.arange(10)
    w = full.weights[np.ix_(idx, idx)]
    conn = Connectivity(weights=w / w.max(), tract_lengths=full.tract_lengths[np.ix_(idx, idx)],
                        region_labels=full.region_labels[idx], centres=full.centres[idx], speed=np.array([3.0]))
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh(G=np.array([G]), w_p=np.array([0.6]), J_i=np.array([1.0])),
        connectivity=conn, coupling=coupling.Linear(a=np.array([1.0])),
        integrator=integrators.HeunStochastic(dt=5.0, noise=noise.Additive(nsig=np.array([1e-4]))),
        monitors=(monitors.Bold(period=720.0),)).configure()
    return clone_simulator(sim, initial_conditions=low_state_initial_conditions(sim))


RECOVERY = dict(n_steps=12, window_trs=8, fc_window_trs=40, batch=16, lr=0.4, loss="rmse", seed=0, progress=False)


def test_twin_fit_recovers_G_of_a_tvb_target():
    """fit(method="twin") recovers the coupling G that produced a TVB-simulated target FC, from 30 % below it.

    Target: TVB's own HeunStochastic and Bold monitor at G = 0.25 for 150 s (noise seed 7, first 28 TRs dropped).
    The linearised model (analyzers.linear) puts this 10-region network's mean BOLD FC on a steep rise with G
    (0.03 at G 0.1, 0.09 at 0.2, 0.24 at 0.3, 0.30 at 0.4, falling beyond as the low state bends back), so the
    bounds (0.1, 0.4) keep the fit on the identifiable side; loss="rmse" fits pattern and level at once (the pattern
    of 10 regions over 150 s is noisy: TVB's seed-to-seed FC r is 0.45). Measured: fit seeds 0 and 1 end at
    +2.8 % and -3.6 %; the tolerance is 10 %. About 55 s on one core (TVB 7 s, the fit 45 s).
    """
    from tvb_torchfit.roundtrip.validation import bold_fc, run_tvb_bold
    truth, start = 0.25, 0.175
    (bold,) = run_tvb_bold(recovery_simulator(truth), simulation_length=150e3, seeds=(7,))
    target = bold_fc(bold, 28)
    res = tvb_torchfit.fit(recovery_simulator(start), target, {"G": (0.1, 0.4)}, **RECOVERY)
    assert abs(res.params["G"][0] - truth) / truth < 0.10, np.concatenate(res.history["params"]["G"])


class _NotATensor:
    pass


def test_checkpoints_are_loaded_without_running_code(sim, target, tmp_path):
    """Checkpoints are read with torch.load(weights_only=True): an arbitrary pickled object is refused, and a
    checkpoint of the earlier format (no "format" key) is refused with a clear message."""
    from tvb_torchfit.errors import CheckpointError
    bad = tmp_path / "foreign.ckpt"
    torch.save({"format": 3, "config": {}, "payload": _NotATensor()}, bad)
    with pytest.raises(CheckpointError, match="foreign.ckpt"):
        tvb_torchfit.fit(sim, target, PARAMS, checkpoint=bad, **FAST)
    old = tmp_path / "old.ckpt"
    torch.save({"config": {}, "params": {}}, old)
    with pytest.raises(ParameterError, match="another version"):
        tvb_torchfit.fit(sim, target, PARAMS, checkpoint=old, **FAST)


def test_linear_method_builds_no_twin(sim, monkeypatch):
    """method="linear" works from the SimulatorSpec and a value dict: no TorchSimulator is built to hold parameters."""
    from tvb_torchfit.inference import fitting

    def no_twin(*args, **kwargs):
        raise AssertionError("method='linear' built a TorchSimulator")
    monkeypatch.setattr(fitting, "TorchSimulator", no_twin)
    goal = np.corrcoef(np.random.RandomState(5).randn(N, 300))
    res = tvb_torchfit.fit(sim, goal, {"G": (0.5, 3.0)}, method="linear", fic_rate=3.0, n_steps=2, progress=False)
    assert len(res.history["loss"]) == 2 and res.params["J_i"].shape == (N,)


def test_resume_with_early_stopping_equals_uninterrupted(sim, target, tmp_path, monkeypatch):
    """The checkpoint of a step holds that step's early-stopping counters, so a resumed fit stops where the
    uninterrupted one does."""
    kw = dict(FAST, n_steps=8, patience=2, loss="neg_corr")
    full = tvb_torchfit.fit(sim, target, PARAMS, seed=0, **kw)
    assert len(full.history["loss"]) < 8                              # it did stop early
    ckpt = tmp_path / "fit.ckpt"
    _interrupting(monkeypatch, at_call=4, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        tvb_torchfit.fit(sim, target, PARAMS, seed=0, checkpoint=ckpt, checkpoint_every=1, **kw)
    monkeypatch.undo()
    resumed = tvb_torchfit.fit(sim, target, PARAMS, seed=0, checkpoint=ckpt, **kw)
    assert resumed.history["loss"] == full.history["loss"]


def _nan_gradient_once(monkeypatch, cls, method, at_call):
    """Patch ``cls.method`` so that its ``at_call``-th Prediction's FC has a finite value but a NaN gradient in G
    (sqrt(G - G) at 0: value 0, derivative inf * 0)."""
    original, calls = getattr(cls, method), {"n": 0}

    def patched(self, values, *args):
        pred = original(self, values, *args)
        calls["n"] += 1
        if pred is not None and calls["n"] == at_call:
            pred.fc = pred.fc + torch.sqrt(values["G"] - values["G"]).sum()
        return pred
    monkeypatch.setattr(cls, method, patched)


def test_non_finite_gradient_is_taken_back_by_the_linear_method(sim, target, monkeypatch):
    _nan_gradient_once(monkeypatch, estimators.LinearEstimator, "prediction", at_call=3)
    res = tvb_torchfit.fit(sim, target, PARAMS, method="linear", n_steps=6, lr=0.05, progress=False)
    G = np.concatenate(res.history["params"]["G"])
    assert G.size == 6 and np.isfinite(G).all() and np.isfinite(res.params["G"]).all()
    assert res.provenance["retreats"] == 1


def test_a_point_with_a_non_finite_gradient_is_left_by_going_back_a_step(sim, target, monkeypatch):
    """A non-finite gradient that belongs to a point (as eig's backward at a degenerate spectrum does), not to a call:
    going back to that same point would meet it again (the fit failed after MAX_RETREATS); the step that reached it
    is taken back, and the fit goes on elsewhere."""
    original, seen = estimators.LinearEstimator.prediction, {"n": 0, "bad": None}

    def patched(self, values, *args):
        pred = original(self, values, *args)
        seen["n"] += 1
        if seen["n"] == 3:                             # the third point visited has no usable gradient, ever
            seen["bad"] = values["G"].detach().clone()
        if seen["bad"] is not None and torch.equal(values["G"].detach(), seen["bad"]):
            pred.fc = pred.fc + torch.sqrt(values["G"] - values["G"]).sum()
        return pred
    monkeypatch.setattr(estimators.LinearEstimator, "prediction", patched)
    res = tvb_torchfit.fit(sim, target, PARAMS, method="linear", n_steps=6, lr=0.05, progress=False)
    G = np.concatenate(res.history["params"]["G"])
    assert G.size == 6 and np.isfinite(G).all() and res.provenance["retreats"] == 1
    assert not np.any(G == float(seen["bad"][0]))      # its loss was never recorded, and it was never stepped from


def test_non_finite_gradient_of_the_twin_is_a_clear_error(sim, target, monkeypatch):
    _nan_gradient_once(monkeypatch, estimators.TwinEstimator, "predict", at_call=2)
    with pytest.raises(ParameterError, match="gradient of G.* is not finite"):
        tvb_torchfit.fit(sim, target, PARAMS, seed=2, **FAST)
