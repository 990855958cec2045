"""Parity with TVB's own Simulator: same start, same steps, same monitors, same time stamps.

Every reference number here comes from running a real TVB ``Simulator`` in the test.
"""
import numpy as np
import pytest
import torch
from tvb.simulator import integrators, models, monitors

import tvb_torchfit
from tvb_builders import build, connectivity, heun_stochastic, small_connectivity

N76 = 76


def _exc_inh_regionwise():
    return models.ReducedWongWangExcInh(w_p=np.linspace(0.8, 1.4, N76), J_i=np.linspace(0.8, 1.2, N76),
                                        lamda=np.array([0.3]), I_ext=np.array([0.01]), G=np.array([1.5]))


DETERMINISTIC = [
    pytest.param(models.ReducedWongWangExcInh, integrators.HeunDeterministic, id="ExcInh-Heun"),
    pytest.param(models.ReducedWongWangExcInh, integrators.EulerDeterministic, id="ExcInh-Euler"),
    pytest.param(models.ReducedWongWang, integrators.HeunDeterministic, id="RWW-Heun"),
    pytest.param(models.ReducedWongWang, integrators.EulerDeterministic, id="RWW-Euler"),
]


@pytest.mark.parametrize("model_cls,integ_cls", DETERMINISTIC)
@pytest.mark.parametrize("exact,tol", [(True, 1e-7), (False, 1e-5)], ids=["exact", "float64"])
def test_deterministic_raw_1s_connectivity_76(model_cls, integ_cls, exact, tol):
    sim = build(model_cls(), integ_cls(dt=0.1), (monitors.Raw(),), b=0.001)
    report = tvb_torchfit.compare(sim, 1000.0, exact=exact)
    m, = report.monitors
    assert m.samples_tvb == m.samples_torch == 10000 and m.times_equal
    assert m.max_abs <= tol, str(report)


def test_regionwise_parameters_lamda_iext_coupling_b():
    sim = build(_exc_inh_regionwise(), integrators.HeunDeterministic(dt=0.1), (monitors.Raw(),), b=0.002)
    report = tvb_torchfit.compare(sim, 1000.0, exact=True)
    assert report.max_abs <= 1e-7, str(report)
    assert report.monitors[0].times_equal


@pytest.mark.parametrize("nsig", [np.array([1e-4]), np.stack([np.linspace(1e-5, 1e-4, N76)] * 2)],
                         ids=["global-nsig", "regionwise-nsig"])
def test_heun_stochastic_tvb_noise_10s(nsig):
    sim = build(_exc_inh_regionwise(), heun_stochastic(dt=0.5, nsig=nsig, seed=7),
                (monitors.TemporalAverage(period=5.0),))
    report = tvb_torchfit.compare(sim, 10000.0, exact=True, noise="tvb")
    m, = report.monitors
    assert m.samples_tvb == m.samples_torch == 2000 and m.times_equal
    assert m.max_abs <= 1e-5, str(report)


def test_euler_stochastic_rww_regionwise_nsig():
    sim = build(models.ReducedWongWang(w=np.array([0.9]), I_o=np.array([0.3])),
                integrators.EulerStochastic(dt=0.1, noise=heun_stochastic(nsig=np.full(N76, 1e-5)).noise),
                (monitors.Raw(),), a=0.1)
    report = tvb_torchfit.compare(sim, 500.0, exact=True, noise="tvb")
    assert report.max_abs <= 1e-7, str(report)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "float64"])
def test_bold_and_temporal_average_30s(exact):
    sim = build(models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([0.5])),
                heun_stochastic(dt=0.5, nsig=1e-4, seed=3),
                (monitors.Bold(period=720.0), monitors.TemporalAverage(period=10.0)), a=1.0 / 3.0)
    # the float64 fitting mode through the compiled blocks users run (and 30 s of eager steps saved)
    report = tvb_torchfit.compare(sim, 30000.0, exact=exact, noise="tvb", compile=not exact)
    bold, tavg = report.monitors
    assert bold.samples_tvb == bold.samples_torch == 41 and bold.times_equal
    assert tavg.samples_tvb == tavg.samples_torch == 3000 and tavg.times_equal
    assert bold.max_rel <= 1e-5 and tavg.max_rel <= 1e-5, str(report)


def test_bold_period_not_multiple_of_interim_and_voi():
    """dt 0.3 ms: interim block of round(4/0.3) = 13 steps; Bold period 2001 ms (6 samples); S_i only."""
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.3, nsig=1e-5),
                (monitors.Bold(period=2001.0, variables_of_interest=np.array([1])),
                 monitors.SubSample(period=3.0)), conn=connectivity("connectivity_66.zip"))
    report = tvb_torchfit.compare(sim, 12500.0, exact=True, noise="tvb")
    for m in report.monitors:
        assert m.samples_tvb == m.samples_torch > 0 and m.times_equal
        assert m.max_rel <= 1e-9, str(report)


def test_continues_across_runs_like_tvb():
    """Two successive run() calls, and a twin made from a TVB simulator that has already run."""
    mons = (monitors.TemporalAverage(period=7.0), monitors.Bold(period=500.0))
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.5, nsig=1e-4),
                mons, conn=small_connectivity(6), a=0.3)
    sim.run(simulation_length=1003.5)                 # leaves partial averaging windows behind
    twin = tvb_torchfit.from_tvb(sim, exact=True, noise="tvb")
    for length in (2501.0, 777.0):
        ref = sim.run(simulation_length=length)
        out = twin.run(simulation_length=length)
        for (t_ref, x_ref), (t, x) in zip(ref, out):
            assert np.array_equal(t_ref, t.numpy())
            np.testing.assert_allclose(x.detach().numpy(), x_ref, rtol=0, atol=1e-12)
    assert twin.current_step == sim.current_step


def test_from_tvb_leaves_tvb_untouched():
    def fresh():
        return build(models.ReducedWongWang(), heun_stochastic(nsig=1e-5), (monitors.Raw(),),
                     conn=small_connectivity(4))
    untouched = fresh().run(simulation_length=50.0)[0][1]
    sim = fresh()
    twin = tvb_torchfit.from_tvb(sim, noise="tvb", exact=True)
    twin.run(simulation_length=50.0)
    after = sim.run(simulation_length=50.0)[0][1]
    np.testing.assert_array_equal(untouched, after)


def test_other_connectome_speed_and_seed():
    """Parity is not tuned to connectivity_76: 192 regions, 6 mm/ms, another seed and period."""
    sim = build(models.ReducedWongWangExcInh(G=np.array([0.8])), heun_stochastic(dt=0.2, nsig=3e-5, seed=123),
                (monitors.TemporalAverage(period=1.0),), conn=connectivity("connectivity_192.zip", speed=6.0), a=0.05)
    report = tvb_torchfit.compare(sim, 300.0, exact=True, noise="tvb")
    assert report.max_abs <= 1e-7, str(report)
