"""apply_params / clone_simulator / low_state_initial_conditions on real TVB simulators.

A 6-node random connectome (tvb_builders.small_connectivity), ReducedWongWangExcInh, HeunStochastic
dt 0.5 ms and Bold(720 ms) + TemporalAverage(10 ms): configure() takes milliseconds, runs a few
simulated seconds. Every reference value comes from TVB itself.
"""
import copy

import numpy as np
import pytest
from tvb.simulator import integrators, models, monitors

from tvb_builders import build, heun_stochastic, small_connectivity

import tvb_torchfit
from tvb_torchfit.errors import ParameterError, UnsupportedTVBObject
from tvb_torchfit.roundtrip.writeback import (apply_params, clone_simulator, low_state_initial_conditions,
                                    model_parameter_names, read_params)

N = 6
NVAR = 2
DT = 0.5


def make_sim(model=None, nsig=1e-4, seed=42, stochastic=True, mons=None, ic=None, configure=True, a=0.5):
    integ = heun_stochastic(dt=DT, nsig=nsig, seed=seed) if stochastic else integrators.HeunDeterministic(dt=DT)
    sim = build(model=model if model is not None else models.ReducedWongWangExcInh(G=np.array([0.5]),
                                                                                  w_p=np.array([0.7])),
                conn=small_connectivity(N), integrator=integ, a=a,
                mons=mons if mons is not None else (monitors.Bold(period=720.0),
                                                    monitors.TemporalAverage(period=10.0)),
                configure=False)
    if ic is not None:
        sim.initial_conditions = ic
    return sim.configure() if configure else sim


def flat(x):
    return np.asarray(x).reshape(-1)


def assert_runs_equal(out_a, out_b):
    assert len(out_a) == len(out_b)
    for (ta, xa), (tb, xb) in zip(out_a, out_b):
        assert xa.shape == xb.shape and xa.size > 0
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(xa, xb)


# ---------------------------------------------------------------------------------------------- apply_params
GLOBAL = {"G": np.array([0.8]), "w_p": np.array([0.93]), "J_i": np.array([1.1]), "coupling.a": np.array([0.3]),
          "coupling.b": np.array([0.001]), "noise.nsig": np.array([2.5e-4])}
REGION = {"w_p": np.linspace(0.6, 0.9, N), "J_i": np.random.RandomState(1).uniform(0.8, 1.2, N),
          "I_o": np.full(N, 0.31), "coupling.a": np.array([0.27]),
          "noise.nsig": np.random.RandomState(2).uniform(1e-5, 1e-4, (NVAR, N))}


@pytest.mark.parametrize("params", [GLOBAL, REGION], ids=["global", "region-wise"])
@pytest.mark.parametrize("configure", [True, False])
@pytest.mark.parametrize("configured_before", [True, False])
def test_round_trip_bit_for_bit(params, configure, configured_before):
    sim = make_sim(configure=configured_before)
    out = apply_params(sim, params, configure=configure)
    assert out is sim
    for name, value in params.items():
        if name == "noise.nsig":
            stored = sim.integrator.noise.nsig
        elif name.startswith("coupling."):
            stored = getattr(sim.coupling, name.split(".", 1)[1])
        else:
            stored = getattr(sim.model, name)
        assert isinstance(stored, np.ndarray) and stored.dtype == np.float64
        np.testing.assert_array_equal(flat(stored), flat(value))
        # read_params gives TVB's user-facing shapes back
        np.testing.assert_array_equal(read_params(sim, [name])[name], value)
    if configure:
        assert sim.history is not None and sim.current_step == 0


def test_configured_shapes_after_configure():
    sim = apply_params(make_sim(), REGION)
    assert sim.integrator.noise.nsig.shape == (NVAR, N, 1)        # TVB's configured layout
    assert sim.model.w_p.shape == np.empty(N).reshape(sim.model.spatial_param_reshape).shape


def test_regionwise_nsig_runs_in_tvb():
    """A per-region nsig (N,) is stored as (nvar, N): TVB's stochastic Heun refuses the (1, N, 1) that its
    configure makes of (N,) for a two-variable model."""
    nsig = np.linspace(1e-5, 3e-5, N)
    sim = apply_params(make_sim(), {"noise.nsig": nsig})
    assert sim.integrator.noise.nsig.shape == (NVAR, N, 1)
    np.testing.assert_array_equal(read_params(sim, ["noise.nsig"])["noise.nsig"], np.tile(nsig, (NVAR, 1)))
    (t, y), = sim.run(simulation_length=5 * DT)[:1]
    assert np.isfinite(y).all()


def test_scalars_and_tensors_become_float64_arrays():
    import torch
    sim = apply_params(make_sim(), {"G": 0.7, "w_p": torch.tensor([0.8], requires_grad=True),
                                    "noise.nsig": np.float32(1e-4)})
    assert sim.model.G.shape == (1,) and sim.model.G.dtype == np.float64 and sim.model.G[0] == 0.7
    assert sim.model.w_p.dtype == np.float64 and sim.model.w_p[0] == np.float64(np.float32(0.8))
    assert sim.integrator.noise.nsig.shape == (1,)


def test_apply_without_configure_runs_like_a_fresh_build():
    """Values written into a configured simulator (configure=False) act exactly as if built in."""
    mons = (monitors.Raw(),)
    fitted = dict(REGION)
    fitted.pop("coupling.a")
    sim = apply_params(make_sim(mons=mons), fitted, configure=False)
    built = make_sim(model=models.ReducedWongWangExcInh(G=np.array([0.5]), w_p=fitted["w_p"], J_i=fitted["J_i"],
                                                        I_o=fitted["I_o"]),
                     nsig=fitted["noise.nsig"], mons=mons)
    assert_runs_equal(sim.run(simulation_length=100.0), built.run(simulation_length=100.0))


def test_reconfigure_restarts_like_a_fresh_build():
    ic = low_state_initial_conditions(make_sim())
    sim = make_sim(ic=ic)
    horizon = sim.connectivity.horizon
    assert sim.current_step == horizon - 1
    apply_params(sim, {"G": np.array([0.6])})
    apply_params(sim, {"G": np.array([0.6])})
    assert sim.current_step == horizon - 1       # TVB's configure() alone would count on: 3 * (horizon - 1)
    # full-length initial conditions draw nothing from the noise stream: the run equals a fresh build's
    fresh = make_sim(model=models.ReducedWongWangExcInh(G=np.array([0.6]), w_p=np.array([0.7])), ic=ic)
    assert_runs_equal(sim.run(simulation_length=1500.0), fresh.run(simulation_length=1500.0))


def test_twin_reads_written_values():
    sim = apply_params(make_sim(), REGION)
    twin = tvb_torchfit.from_tvb(sim)
    for name, value in REGION.items():
        np.testing.assert_array_equal(twin.params[name].detach().numpy().reshape(-1), flat(value))


def test_model_parameter_names():
    assert set(model_parameter_names(models.ReducedWongWangExcInh())) >= {"G", "w_p", "J_i", "J_N", "I_o",
                                                                          "lamda", "I_ext"}
    from tvb_torchfit.simulator.models import MODELS
    for tvb_cls, port in MODELS.items():          # every parameter of the torch ports can be written back
        assert set(model_parameter_names(tvb_cls())) >= set(port.parameter_names)
    assert "G" not in model_parameter_names(models.ReducedWongWang())


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name, fragment", [
    ("g", "has no parameter 'g'"),
    ("w", "has no parameter 'w'"),                 # a ReducedWongWang parameter, not ExcInh's
    ("coupling.c", "coupling Linear has no parameter 'c'"),
    ("noise.ntau", "unknown parameter 'noise.ntau'"),
    ("model.G", "unknown parameter 'model.G'"),
    ("", "has no parameter ''"),
])
def test_unknown_names(name, fragment):
    sim = make_sim()
    with pytest.raises(ParameterError, match="known parameters") as err:
        apply_params(sim, {name: np.array([1.0])})
    assert fragment in str(err.value)


def test_parameter_the_model_does_not_have():
    sim = make_sim(model=models.ReducedWongWang(), nsig=1e-6)
    with pytest.raises(ParameterError, match="model ReducedWongWang has no parameter 'G'"):
        apply_params(sim, {"G": np.array([1.0])})
    apply_params(sim, {"w": np.array([0.9]), "noise.nsig": np.array([1e-6])})   # RWW has one state variable
    assert sim.model.w[0] == 0.9


@pytest.mark.parametrize("name, value, fragment", [
    ("G", np.ones(3), r"shape \(3,\); expected \(1,\) \(global\) or \(6,\)"),
    ("w_p", np.ones((N, 1)), r"shape \(6, 1\)"),
    ("w_p", np.ones((2, N)), r"shape \(2, 6\)"),
    ("w_p", np.array([]), r"shape \(0,\)"),
    ("coupling.a", np.ones(N + 1), r"shape \(7,\)"),
    ("noise.nsig", np.ones(3) * 1e-4, r"'noise.nsig' has shape \(3,\)"),
    ("noise.nsig", np.ones((3, N)) * 1e-4, r"shape \(3, 6\)"),
    ("noise.nsig", np.ones((NVAR, N, 1)) * 1e-4, r"shape \(2, 6, 1\)"),
    ("noise.nsig", -np.ones(1), ">= 0"),
    ("G", np.array([np.nan]), "not finite"),
    ("w_p", np.r_[np.ones(N - 1), np.inf], "not finite"),
    ("noise.nsig", np.array([np.inf]), "not finite"),
    ("G", "abc", "cannot read"),
])
def test_bad_values(name, value, fragment):
    sim = make_sim()
    before = read_params(sim)
    with pytest.raises(ParameterError, match=fragment):
        apply_params(sim, {"J_i": np.array([1.3]), name: value})
    after = read_params(sim)                       # nothing was written: checks come first
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_nsig_on_deterministic_integrator():
    sim = make_sim(stochastic=False)
    with pytest.raises(ParameterError, match="HeunDeterministic is deterministic"):
        apply_params(sim, {"noise.nsig": np.array([1e-4])})


def test_not_a_dict_and_not_a_simulator():
    with pytest.raises(ParameterError, match="dict"):
        apply_params(make_sim(), [("G", 1.0)])
    with pytest.raises(TypeError, match="Simulator"):           # UnsupportedTVBObject is a TypeError
        apply_params(object(), {"G": np.array([1.0])})


# ---------------------------------------------------------------------------------------------- clone
def test_clone_runs_like_the_original_random_history():
    sim = make_sim(nsig=np.random.RandomState(3).uniform(5e-5, 2e-4, (NVAR, N)), seed=11)
    stream = copy.deepcopy(sim.integrator.noise.random_stream.get_state())
    clone = clone_simulator(sim)
    # the original is untouched by cloning (random stream, step), and shares no arrays with the clone
    assert all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(stream, sim.integrator.noise.random_stream.get_state()))
    assert clone is not sim and clone.connectivity is not sim.connectivity and clone.model is not sim.model
    assert not np.shares_memory(clone.connectivity.weights, sim.connectivity.weights)
    np.testing.assert_array_equal(clone.history.buffer, sim.history.buffer)
    assert_runs_equal(sim.run(simulation_length=3000.0), clone.run(simulation_length=3000.0))


def test_clone_with_seed_and_initial_conditions_equals_a_fresh_build():
    ic = low_state_initial_conditions(make_sim(), value=[0.05, 0.02])
    region_model = lambda: models.ReducedWongWangExcInh(G=np.array([0.5]), w_p=np.linspace(0.6, 0.8, N))
    reference = make_sim(model=region_model(), seed=123, ic=ic)
    clone = clone_simulator(make_sim(model=region_model(), seed=42), noise_seed=123, initial_conditions=ic)
    assert clone.current_step == reference.current_step == clone.connectivity.horizon - 1
    assert clone.integrator.noise.noise_seed == 123
    assert_runs_equal(reference.run(simulation_length=3000.0), clone.run(simulation_length=3000.0))


def test_clone_inherits_initial_conditions_and_copies_traits():
    from tvb.datatypes import equations
    ic = low_state_initial_conditions(make_sim())
    mons = (monitors.Bold(period=1440.0, hrf_kernel=equations.Gamma(), variables_of_interest=np.array([0])),
            monitors.SubSample(period=5.0), monitors.Raw())
    sim = make_sim(ic=ic, mons=mons)
    clone = clone_simulator(sim)
    np.testing.assert_array_equal(clone.initial_conditions, ic)
    np.testing.assert_array_equal(clone.history.buffer, sim.history.buffer)
    for name in ("weights", "tract_lengths", "speed", "delays", "idelays"):
        np.testing.assert_array_equal(getattr(clone.connectivity, name), getattr(sim.connectivity, name))
    assert type(clone.model) is type(sim.model) and type(clone.coupling) is type(sim.coupling)
    assert type(clone.integrator) is type(sim.integrator) and clone.integrator.dt == sim.integrator.dt
    for k, v in read_params(sim).items():
        np.testing.assert_array_equal(read_params(clone)[k], v)
    for m, c in zip(sim.monitors, clone.monitors):
        assert type(c) is type(m) and c.period == m.period and c is not m
        np.testing.assert_array_equal(c.voi, m.voi)
    assert type(clone.monitors[0].hrf_kernel) is equations.Gamma
    assert clone.monitors[0].hrf_kernel.parameters == sim.monitors[0].hrf_kernel.parameters
    np.testing.assert_array_equal(clone.monitors[0].hemodynamic_response_function,
                                  sim.monitors[0].hemodynamic_response_function)


def test_clone_deterministic_ignores_seed():
    # (without initial conditions TVB would draw a deterministic simulator's history from numpy's global state)
    # (shorter initial conditions are padded from that global state too)
    shape = low_state_initial_conditions(make_sim(stochastic=False, configure=False)).shape
    ic = np.random.RandomState(0).uniform(0.0, 0.3, shape)
    sim = make_sim(stochastic=False, mons=(monitors.TemporalAverage(period=5.0),), ic=ic)
    clone = clone_simulator(sim, noise_seed=5)
    assert_runs_equal(sim.run(simulation_length=200.0), clone.run(simulation_length=200.0))


def test_clone_rejects_bad_initial_conditions_and_stimulus():
    sim = make_sim()
    with pytest.raises(ParameterError, match=r"initial_conditions has shape \(10, 2, 5, 1\)"):
        clone_simulator(sim, initial_conditions=np.zeros((10, NVAR, N - 1, 1)))
    with pytest.raises(ParameterError, match="not finite"):
        clone_simulator(sim, initial_conditions=np.full((10, NVAR, N, 1), np.nan))
    sim.surface = None
    from tvb.datatypes import equations, patterns
    sim.stimulus = patterns.StimuliRegion(temporal=equations.Linear(), connectivity=sim.connectivity,
                                          weight=np.ones(N))
    with pytest.raises(UnsupportedTVBObject, match="stimulus"):
        clone_simulator(sim)


# ---------------------------------------------------------------------------------------------- low state
def test_low_state_initial_conditions():
    sim = make_sim()
    ic = low_state_initial_conditions(sim)
    assert ic.shape == (sim.connectivity.horizon, NVAR, N, 1) == sim.good_history_shape
    assert ic.dtype == np.float64 and (ic == 0.05).all()
    # an unconfigured simulator gets the horizon configure() would give it
    np.testing.assert_array_equal(low_state_initial_conditions(make_sim(configure=False)), ic)
    per_var = low_state_initial_conditions(sim, value=[0.1, 0.03])
    assert (per_var[:, 0] == 0.1).all() and (per_var[:, 1] == 0.03).all()
    started = make_sim(ic=ic)
    np.testing.assert_array_equal(started.current_state[..., 0], np.full((NVAR, N), 0.05))
    with pytest.raises(ParameterError, match="one per state variable"):
        low_state_initial_conditions(sim, value=[0.1, 0.2, 0.3])
    with pytest.raises(ParameterError, match="not finite"):
        low_state_initial_conditions(sim, value=np.nan)
