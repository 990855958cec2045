"""validate(): native TVB runs, their BOLD FC and FCD against a target, the report and the figure.

A 6-node random connectome, ReducedWongWangExcInh (G 0.5, w_p 0.7), HeunStochastic dt 0.5 ms, Bold(720 ms),
started from a low state. The target FC (and target BOLD) come from one TVB run with another noise seed;
validate runs 2 more seeds of 24 s each (~15 s of TVB in total for this file).
"""
import json
import math

import numpy as np
import pytest
from tvb.simulator import integrators, models, monitors

from tvb_builders import build, heun_stochastic, small_connectivity

from tvb_torchfit import stats
from tvb_torchfit.errors import ParameterError
from tvb_torchfit.roundtrip.validation import ValidationReport, bold_fc, fcd_distribution, validate
from tvb_torchfit.stats import fcd_values
from tvb_torchfit.roundtrip.writeback import clone_simulator, low_state_initial_conditions

N = 6
LENGTH = 24e3        # ms per TVB run
DISCARD = 5000.0     # ms of BOLD dropped
PERIOD = 720.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_sim(stochastic=True, mons=None, ic=None):
    integ = heun_stochastic(dt=0.5, nsig=1e-4) if stochastic else integrators.HeunDeterministic(dt=0.5)
    sim = build(model=models.ReducedWongWangExcInh(G=np.array([0.5]), w_p=np.array([0.7])),
                conn=small_connectivity(N), integrator=integ, a=1.0,
                mons=mons if mons is not None else (monitors.TemporalAverage(period=10.0), monitors.Bold(period=PERIOD)),
                configure=False)
    if ic is not None:
        sim.initial_conditions = ic
    return sim.configure()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    sim = make_sim()
    ic = low_state_initial_conditions(sim)
    (_, target_bold), = clone_simulator(make_sim(mons=(monitors.Bold(period=PERIOD),)), noise_seed=7,
                                        initial_conditions=ic).run(simulation_length=LENGTH)
    discard = math.ceil(DISCARD / PERIOD)
    target = bold_fc(target_bold, discard)
    noise = np.random.RandomState(0).normal(0, 0.05, (N, N))
    torch_fc = np.clip(target + (noise + noise.T) / 2, -1, 1)
    np.fill_diagonal(torch_fc, 1.0)
    history = {"loss": [0.9, 0.5, 0.35, 0.3], "params": {"G": [0.4, 0.45, 0.5, 0.5],
                                                         "w_p": [[0.6] * N, [0.65] * N, [0.7] * N, [0.7] * N]}}
    out_dir = tmp_path_factory.mktemp("validation")
    report = validate(sim, target, simulation_length=LENGTH, seeds=(1001, 1002), discard_ms=DISCARD,
                      torch_fc=torch_fc, initial_conditions=ic, out_dir=out_dir, history=history,
                      target_bold=target_bold[discard:, 0, :, 0], fcd_window_ms=7200.0, fcd_step_ms=PERIOD)
    return dict(sim=sim, ic=ic, target=target, target_bold=target_bold, torch_fc=torch_fc, report=report,
                out_dir=out_dir, discard=discard)


# ---------------------------------------------------------------------------------------------- bold_fc
def test_bold_fc_is_numpy_corrcoef_of_voi_0():
    rng = np.random.RandomState(1)
    bold = rng.normal(size=(40, 2, N, 1))
    fc = bold_fc(bold, 5)
    np.testing.assert_array_equal(fc, np.corrcoef(bold[5:, 0, :, 0].T))
    np.testing.assert_array_equal(bold_fc(bold[:, 0, :, 0], 5), fc)
    with pytest.raises(ParameterError, match="at least 2 must remain"):
        bold_fc(bold, 39)
    with pytest.raises(ParameterError, match="discard"):
        bold_fc(bold, -1)
    with pytest.raises(ParameterError, match="shape"):
        bold_fc(bold[:, 0], 0)


def test_fcd_values():
    ts = np.random.RandomState(2).normal(size=(50, N))
    vals = fcd_values(ts, window=10, step=5)
    n_win = len(range(0, 50 - 10 + 1, 5))
    assert vals.shape == (n_win * (n_win - 1) // 2,)
    assert fcd_distribution(ts, window=30, step=20) is None    # 2 windows: no distribution to compare
    with pytest.raises(ParameterError, match="at least 2 windows"):
        fcd_values(ts, window=40, step=20)


# ---------------------------------------------------------------------------------------------- closed forms
# Signals built so that their statistics are known exactly: a window of w samples whose N columns are
# sqrt(w) * (centred orthonormal columns) @ L.T has sample covariance = correlation = L @ L.T = C, to rounding.
def exact_window(C, w, seed):
    z = np.random.RandomState(seed).normal(size=(w, C.shape[0]))
    q, _ = np.linalg.qr(z - z.mean(axis=0))                   # centred, orthonormal columns
    return np.sqrt(w) * q @ np.linalg.cholesky(C).T


HADAMARD = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, -1, 1, -1, 1, -1, 1, -1], [1, 1, -1, -1, 1, 1, -1, -1],
                     [1, -1, -1, 1, 1, -1, -1, 1], [1, 1, 1, 1, -1, -1, -1, -1]], dtype=float)
NC, EPS = 5, 0.1                                               # 5 nodes: 10 upper-triangle entries


def pattern(k, angle=None):
    """FC matrix whose upper triangle is EPS * h_k (h_k: Hadamard row k on entries 0..7, zeros on 8, 9): the h_k,
    k = 1..4, sum to zero and are mutually orthogonal, so Pearson r between any two of them is exactly 0.
    With ``angle`` (degrees): EPS * (cos(angle) h_1 + sin(angle) h_2), whose r with another angle's pattern is
    cos(difference)."""
    u = np.zeros(NC * (NC - 1) // 2)
    a = None if angle is None else np.radians(angle)
    u[:8] = EPS * (HADAMARD[k] if a is None else np.cos(a) * HADAMARD[1] + np.sin(a) * HADAMARD[2])
    C = np.eye(NC)
    C[np.triu_indices(NC, 1)] = u
    return np.triu(C, 1) + np.triu(C, 1).T + np.eye(NC)


def test_bold_fc_of_signals_with_a_known_correlation():
    C = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.0], [-0.3, 0.0, 1.0]])
    ts = np.vstack((np.full((4, 3), 7.0), exact_window(C, 50, seed=3)))     # 4 samples of junk, then the signal
    np.testing.assert_allclose(bold_fc(ts, 4), C, atol=1e-12)
    assert stats.pearson_r(np.array([1.0, 2.0, 3.0, np.nan]), np.array([2.0, 4.0, 6.0, 1.0])) == pytest.approx(1.0)
    assert stats.pearson_r(stats.upper(pattern(1)), stats.upper(pattern(2))) == pytest.approx(0.0, abs=1e-15)


def test_ks_statistic_of_two_known_samples():
    # F_a - F_b is largest on [3, 3.5): F_a = 3/4, F_b = 0; disjoint samples give 1; identical ones 0
    assert stats.ks_statistic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 4.5, 5.5, 6.5])) == 0.75
    assert stats.ks_statistic(np.array([0.0, 0.1]), np.array([0.5, 0.6, 0.7])) == 1.0
    assert stats.ks_statistic(np.array([0.2, 0.4, 0.4]), np.array([0.4, 0.2, 0.4])) == 0.0


def series(patterns, w=10, junk=7, angles=False):
    """``junk`` samples to be discarded, then one exact window of w samples per pattern (node mean 0, variance 1
    in each window: the FC of the whole series is the mean of the windows' FCs); ``angles``: patterns are angles."""
    mats = [pattern(1, angle=k) if angles else pattern(k) for k in patterns]
    return np.vstack([np.full((junk, NC), 3.0)] + [exact_window(m, w, seed=11 * j) for j, m in enumerate(mats)])


def test_fcd_of_windows_with_known_fc():
    same, orthogonal = series([1, 1, 1, 1])[7:], series([1, 2, 3, 4])[7:]
    np.testing.assert_allclose(fcd_distribution(same, 10, 10), 1.0, atol=1e-6)        # 6 pairs, all r = 1
    np.testing.assert_allclose(fcd_distribution(orthogonal, 10, 10), 0.0, atol=1e-6)  # 6 pairs, all r = 0
    rotating = series([0, 50, 100, 150], angles=True)[7:]                           # r = cos(angle difference)
    np.testing.assert_allclose(np.sort(fcd_distribution(rotating, 10, 10)),
                               np.sort(np.cos(np.radians([50, 100, 150, 50, 100, 50]))), atol=1e-6)
    assert fcd_distribution(same, 10, 10).shape == (6,)


def test_report_values_in_closed_form(monkeypatch):
    """validate's arithmetic on BOLD whose statistics are known exactly (TVB's runs replaced by constructed series).

    seed 1: four windows of pattern 1 -> FC = P1, FCD values all 1.
    seed 2: windows of patterns 1, 2, 3, 4 -> FC = (P1 + P2 + P3 + P4) / 4, FCD values all 0.
    target BOLD: windows rotating by 50 degrees -> FCD values cos 50 (x3), cos 100 (x2), cos 150: all below 1
    (KS 1 against seed 1) and, against seed 2's zeros, F_seed2 - F_target = 1 - 1/2 just above 0 (KS 1/2).
    With u_k = upper(P_k) = EPS h_k (centred, orthogonal, |h_k|^2 = 8) and s = h_1 + ... + h_4:
      r(seed 2, target) = <s, h_1> / (|s| |h_1|) = 8 / (sqrt(32) sqrt(8)) = 1/2; r(seed 1, target) = 1;
      RMSE(seed 2) = EPS / 4 * |h_2 + h_3 + h_4 - 3 h_1| / sqrt(10) = EPS / 4 * sqrt(96 / 10);
      seed-to-seed r = 1/2; torch FC = target: r(torch, mean TVB) = r(h_1, 5 h_1 + h_2 + h_3 + h_4) = 5 / sqrt(28);
      FCD KS: 1 for seed 1, 1/2 for seed 2 (their mean 3/4), 1 between the seeds (disjoint).
    """
    import tvb_torchfit.roundtrip.validation as validation
    runs = [series([1, 1, 1, 1]), series([1, 2, 3, 4])]
    monkeypatch.setattr(validation, "run_tvb_bold", lambda sim, **kw: [r.copy() for r in runs])
    sim = build(model=models.ReducedWongWangExcInh(), conn=small_connectivity(NC), integrator=heun_stochastic(dt=0.5),
                mons=(monitors.Bold(period=PERIOD),))
    target = pattern(1)
    rep = validation.validate(sim, target, simulation_length=47 * PERIOD, seeds=(1, 2), discard_ms=5000.0,
                              torch_fc=target, target_bold=series([0, 50, 100, 150], angles=True)[7:],
                              fcd_window_ms=10 * PERIOD,
                              fcd_step_ms=10 * PERIOD)
    assert rep.discard_samples == 7 and rep.bold_samples == 40
    np.testing.assert_allclose(rep.fc_corr_per_seed, [1.0, 0.5], atol=1e-12)
    assert rep.fc_corr == pytest.approx(0.75, abs=1e-12)
    np.testing.assert_allclose(rep.fc_rmse_per_seed, [0.0, EPS / 4 * np.sqrt(9.6)], atol=1e-12)
    assert rep.seed_to_seed_fc_corr == pytest.approx(0.5, abs=1e-12)
    assert rep.torch_target_fc_corr == pytest.approx(1.0, abs=1e-12)
    assert rep.torch_tvb_fc_corr == pytest.approx(5 / np.sqrt(28), abs=1e-12)
    assert rep.mean_fc == pytest.approx(0.0, abs=1e-12) and rep.target_mean_fc == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(rep.tvb_fc, (pattern(1) + (pattern(1) + pattern(2) + pattern(3) + pattern(4)) / 4) / 2,
                               atol=1e-12)
    assert rep.fcd_ks_per_seed == [1.0, 0.5] and rep.fcd_ks == 0.75 and rep.fcd_ks_seed_to_seed == 1.0
    # the same target BOLD sampled twice as often (each sample twice: the same correlations) with its own period:
    # the FCD windows (ms) become twice as many of its samples, and the KS statistics are the same
    fine = np.repeat(series([0, 50, 100, 150], angles=True)[7:], 2, axis=0)
    again = validation.validate(sim, target, simulation_length=47 * PERIOD, seeds=(1, 2), discard_ms=5000.0,
                                target_bold=fine, target_period_ms=PERIOD / 2, fcd_window_ms=10 * PERIOD,
                                fcd_step_ms=10 * PERIOD)
    assert again.fcd_ks_per_seed == [1.0, 0.5]
    wrong = validation.validate(sim, target, simulation_length=47 * PERIOD, seeds=(1, 2), discard_ms=5000.0,
                                target_bold=fine, fcd_window_ms=10 * PERIOD, fcd_step_ms=10 * PERIOD)
    assert wrong.fcd_ks_per_seed != [1.0, 0.5]             # read at the monitor's period: other windows
    with pytest.raises(ParameterError, match="target_period_ms"):
        validation.validate(sim, target, simulation_length=47 * PERIOD, target_bold=fine, target_period_ms=0.0)


# ---------------------------------------------------------------------------------------------- validate
def test_report_fields(setup):
    """The report of real TVB runs: its bookkeeping (the values themselves are checked in closed form below)."""
    rep, sim = setup["report"], setup["sim"]
    assert isinstance(rep, ValidationReport)
    assert len(rep.fc_corr_per_seed) == 2 and len(rep.fc_rmse_per_seed) == 2 and len(rep.fcd_ks_per_seed) == 2
    assert rep.fc_corr == pytest.approx(np.mean(rep.fc_corr_per_seed), abs=1e-15)
    assert rep.target_mean_fc == pytest.approx(setup["target"][np.triu_indices(N, 1)].mean(), abs=1e-15)
    assert rep.seeds == [1001, 1002] and rep.bold_period == PERIOD and rep.simulation_length == LENGTH
    assert rep.discard_samples == setup["discard"] == 7
    assert rep.bold_samples == setup["target_bold"].shape[0] - setup["discard"]
    assert rep.tvb_fc.shape == (N, N) and rep.tvb_fc_per_seed.shape == (2, N, N)
    np.testing.assert_array_equal(rep.tvb_fc, rep.tvb_fc_per_seed.mean(axis=0))
    iu = np.triu_indices(N, 1)
    assert rep.fc_corr_of_mean == pytest.approx(
        np.corrcoef(rep.tvb_fc_per_seed.mean(axis=0)[iu], setup["target"][iu])[0, 1], abs=1e-12)
    assert rep.tvb_wall_s > 0
    # sim itself was neither run nor changed
    assert sim.current_step == 0


def test_runs_are_tvb_runs(setup):
    """The per-seed FC is exactly the FC of a TVB clone run with that seed."""
    rep = setup["report"]
    clone = clone_simulator(make_sim(mons=(monitors.Bold(period=PERIOD),)), noise_seed=1002,
                            initial_conditions=setup["ic"])
    (_, bold), = clone.run(simulation_length=LENGTH)
    fc = bold_fc(bold, setup["discard"])
    np.testing.assert_array_equal(rep.tvb_fc_per_seed[1], fc)
    iu = np.triu_indices(N, 1)
    assert rep.fc_corr_per_seed[1] == pytest.approx(np.corrcoef(fc[iu], setup["target"][iu])[0, 1], abs=1e-12)


def test_figure_is_a_png(setup):
    rep = setup["report"]
    assert rep.figure == str(setup["out_dir"] / "validation.png")
    with open(rep.figure, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    import matplotlib.image
    img = matplotlib.image.imread(rep.figure)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400


def test_str_and_to_dict(setup):
    rep = setup["report"]
    text = str(rep)
    for label in ("FC r(TVB, target)", "seed-to-seed", "FCD KS", "FC r(torch, mean TVB)", "validation.png"):
        assert label in text
    d = rep.to_dict()
    json.dumps(d)
    for key in ("fc_corr", "fc_corr_per_seed", "fc_rmse", "fcd_ks", "seed_to_seed_fc_corr", "torch_tvb_fc_corr",
                "mean_fc", "figure"):
        assert key in d
    assert "tvb_fc" not in d and np.array(rep.to_dict(arrays=True)["tvb_fc"]).shape == (N, N)


def test_deterministic_without_target_bold(tmp_path):
    """One run for a deterministic integrator; no FCD target: fcd_ks is None, and that is said."""
    ic = low_state_initial_conditions(make_sim(stochastic=False))
    ic[:, 0, ::2] = 0.3                                    # an uneven start, so that BOLD varies across nodes
    sim = make_sim(stochastic=False, ic=ic)
    rep = validate(sim, np.eye(N) * 0.5 + 0.5, simulation_length=12e3, discard_ms=2000.0, fcd_window_ms=3600.0)
    assert rep.seeds == [] and len(rep.fc_corr_per_seed) == 1
    assert rep.seed_to_seed_fc_corr is None and rep.fcd_ks is None and rep.fcd_ks_seed_to_seed is None
    assert rep.torch_tvb_fc_corr is None and rep.figure is None
    assert any("deterministic" in n for n in rep.notes) and any("target_bold" in n for n in rep.notes)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("target, fragment", [
    (np.eye(N + 1), "7 x 7, but the simulator's connectivity has 6 regions"),
    (np.eye(N - 1), "5 x 5"),
    (np.ones((N, N + 1)), "square"),
    (np.ones(N), "square"),
    (np.where(np.eye(N) > 0, np.nan, 0.1), "non-finite"),
])
def test_bad_target_fc(target, fragment):
    with pytest.raises(ParameterError, match=fragment):
        validate(make_sim(), target, simulation_length=LENGTH)


def test_other_errors():
    sim = make_sim()
    good = np.eye(N)
    with pytest.raises(ParameterError, match="torch_fc is 5 x 5"):
        validate(sim, good, simulation_length=LENGTH, torch_fc=np.eye(N - 1))
    with pytest.raises(ParameterError, match=r"target_bold has shape \(30, 5\)"):
        validate(sim, good, simulation_length=LENGTH, target_bold=np.zeros((30, N - 1)))
    with pytest.raises(ParameterError, match="no Bold monitor.*TemporalAverage"):
        validate(make_sim(mons=(monitors.TemporalAverage(period=10.0),)), good, simulation_length=LENGTH)
    with pytest.raises(ParameterError, match="at least 3 must remain"):
        validate(sim, good, simulation_length=21e3, discard_ms=20e3)
    with pytest.raises(ParameterError, match="simulation_length"):
        validate(sim, good, simulation_length=-1.0)
    with pytest.raises(ParameterError, match="seeds is empty"):
        validate(sim, good, simulation_length=LENGTH, seeds=())


# ---------------------------------------------------------------------------------------------- processes
def test_validate_in_worker_processes_gives_the_serial_report(setup):
    """processes=2: the seeds run in forked workers at once; the report is the serial one, number for number."""
    par = validate(setup["sim"], setup["target"], simulation_length=LENGTH, seeds=(1001, 1002), discard_ms=DISCARD,
                   initial_conditions=setup["ic"], processes=2)
    ser = setup["report"]
    np.testing.assert_array_equal(par.tvb_fc_per_seed, ser.tvb_fc_per_seed)
    assert par.fc_corr_per_seed == ser.fc_corr_per_seed and par.seed_to_seed_fc_corr == ser.seed_to_seed_fc_corr


def test_run_tvb_bold_reports_a_failing_worker_and_refuses_bad_input_before_running(setup, monkeypatch):
    import tvb_torchfit.roundtrip.validation as validation
    with pytest.raises(ParameterError, match="processes"):
        validation.run_tvb_bold(setup["sim"], simulation_length=LENGTH, seeds=(1, 2), processes=0)
    with pytest.raises(ParameterError, match="initial_conditions has shape"):      # in this process, no worker
        validation.run_tvb_bold(setup["sim"], simulation_length=LENGTH, seeds=(1, 2), processes=2,
                                initial_conditions=np.zeros((3, 3)))

    def broken(clone, simulation_length):
        raise FloatingPointError("TVB blew up")
    monkeypatch.setattr(validation, "_run_bold", broken)                     # the forked workers inherit it
    with pytest.raises(RuntimeError, match="noise seed 1 failed in its worker process: FloatingPointError: TVB blew up"):
        validation.run_tvb_bold(setup["sim"], simulation_length=LENGTH, seeds=(1, 2), processes=2)


@pytest.mark.parametrize("length", [3 * PERIOD + 0.25, 4 * PERIOD, 4 * PERIOD - 0.25])
def test_bold_sample_counts_are_what_tvb_records(length):
    """``bold_sample_counts`` (validation's and the twin correction's count, one formula) against TVB's own Bold
    monitor: the same number of samples for lengths on, just above and just below a multiple of the period (and of
    dt: 0.25 ms is half a step); the discard count rounds up, exact multiples not pushed past by rounding."""
    from tvb_torchfit.roundtrip.validation import bold_sample_counts
    sim = make_sim(stochastic=False, mons=(monitors.Bold(period=PERIOD),))
    (_, bold), = sim.run(simulation_length=length)
    assert bold_sample_counts(length, sim.integrator.dt, PERIOD, 0.0)[0] == bold.shape[0]
    assert bold_sample_counts(length, 0.5, PERIOD, 3 * PERIOD)[1] == 3
    assert bold_sample_counts(length, 0.5, PERIOD, PERIOD * (1 + 1e-15))[1] == 1   # rounding error: still 1
    assert bold_sample_counts(length, 0.5, PERIOD, PERIOD + 1.0)[1] == 2
