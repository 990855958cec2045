"""from_tvb refuses what it cannot reproduce, with errors a TVB user can act on.

Every test builds a real TVB Simulator (the 4-region ``paupau`` connectome of tvb-data, so that
``configure()`` takes milliseconds) and checks both the exception type and its message: the message
must name the offending TVB object (or argument) and say what is supported or expected.
"""
import re

import numpy as np
import pytest
import torch
from tvb.datatypes import cortex, equations, patterns
from tvb.datatypes.connectivity import Connectivity
from tvb.simulator import coupling, integrators, models, monitors, noise, simulator

import tvb_torchfit
from tvb_torchfit import NotConfiguredError, TVBTorchFitError, UnsupportedTVBObject

N_NODES = 4          # paupau
SUPPORTED_MODELS = ("ReducedWongWang", "ReducedWongWangExcInh")
SUPPORTED_INTEGRATORS = ("HeunDeterministic", "HeunStochastic", "EulerDeterministic", "EulerStochastic")
SUPPORTED_MONITORS = ("Raw", "SubSample", "TemporalAverage", "Bold")


def small_connectivity() -> Connectivity:
    conn = Connectivity.from_file("paupau.zip")
    conn.speed = np.array([3.0])
    return conn


def make_sim(model=None, cpl=None, integrator=None, mons=None, configure=True, **kwargs):
    """A small region simulator; every component explicit (TVB's defaults are never what we want)."""
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh() if model is None else model,
        connectivity=small_connectivity(),
        coupling=coupling.Linear(a=np.array([0.5])) if cpl is None else cpl,
        integrator=integrators.HeunDeterministic(dt=0.1) if integrator is None else integrator,
        monitors=(monitors.Raw(),) if mons is None else mons,
        simulation_length=2.0,
        **kwargs)
    if configure:
        sim.configure()
    return sim


def stochastic(cls=integrators.HeunStochastic, **noise_kwargs):
    noise_kwargs.setdefault("nsig", np.array([1e-5]))
    return cls(dt=0.1, noise=noise.Additive(**noise_kwargs))


def assert_names_all(message: str, names) -> None:
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", message), f"{name!r} missing from: {message}"


# ---------------------------------------------------------------------------------------------- positive control
@pytest.mark.parametrize("model", [models.ReducedWongWang, models.ReducedWongWangExcInh])
@pytest.mark.parametrize("integrator", [
    lambda: integrators.HeunDeterministic(dt=0.1), lambda: integrators.EulerDeterministic(dt=0.1),
    lambda: stochastic(integrators.HeunStochastic), lambda: stochastic(integrators.EulerStochastic)],
    ids=SUPPORTED_INTEGRATORS)
def test_supported_components_are_accepted(model, integrator):
    """Control for the tests below: every supported combination goes through and runs."""
    mons = (monitors.Raw(), monitors.SubSample(period=0.5), monitors.TemporalAverage(period=0.5),
            monitors.Bold(period=2.0))
    sim = make_sim(model=model(), integrator=integrator(), mons=mons)
    twin = tvb_torchfit.from_tvb(sim)
    out = twin.run(1.0)
    assert len(out) == len(mons)
    assert out[0][1].shape == (10, len(sim.model.variables_of_interest), N_NODES, 1)


# ---------------------------------------------------------------------------------------------- the simulator itself
def test_unconfigured_simulator():
    sim = make_sim(configure=False)
    with pytest.raises(NotConfiguredError) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "not configured" in msg
    assert "sim.configure()" in msg
    assert isinstance(info.value, TVBTorchFitError) and isinstance(info.value, RuntimeError)


def test_unconfigured_after_a_configured_one_is_still_fine():
    """Configuring afterwards makes the same object acceptable (the check is on state, not identity)."""
    sim = make_sim(configure=False)
    with pytest.raises(NotConfiguredError):
        tvb_torchfit.from_tvb(sim)
    sim.configure()
    assert tvb_torchfit.from_tvb(sim).n_nodes == N_NODES


@pytest.mark.parametrize("obj", [
    "simulator", None, 3.0, small_connectivity(), models.ReducedWongWangExcInh(), {"model": "RWW"}],
    ids=["str", "None", "float", "Connectivity", "Model", "dict"])
def test_not_a_simulator(obj):
    with pytest.raises(TypeError) as info:
        tvb_torchfit.from_tvb(obj)
    msg = str(info.value)
    assert "tvb.simulator.simulator.Simulator" in msg
    assert type(obj).__name__ in msg


# ---------------------------------------------------------------------------------------------- model
class SubclassedExcInh(models.ReducedWongWangExcInh):
    """A user subclass: it may override dfun, so it must not be taken for the parent."""


@pytest.mark.parametrize("model", [models.Generic2dOscillator, models.DecoBalancedExcInh, SubclassedExcInh,
                                   models.JansenRit],
                         ids=lambda c: c.__name__)
def test_unsupported_model(model):
    sim = make_sim(model=model())
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert msg.startswith(f"model {model.__name__} is not supported")
    assert "supported:" in msg
    assert_names_all(msg.split("supported:")[-1], SUPPORTED_MODELS)
    assert isinstance(info.value, TypeError)          # UnsupportedTVBObject is a TypeError too


def test_model_with_other_coupling_variable():
    sim = make_sim()
    sim.model.cvar = np.array([1], dtype=np.int32)
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "ReducedWongWangExcInh" in msg and "coupling variables" in msg and "state variable 0" in msg


def test_model_parameter_of_wrong_length():
    sim = make_sim(model=models.ReducedWongWangExcInh(G=np.array([1.0, 2.0, 3.0])))
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "ReducedWongWangExcInh.G" in msg and "3 values" in msg
    assert "expected 1" in msg and f"or {N_NODES}" in msg


# ---------------------------------------------------------------------------------------------- coupling
class SubclassedLinear(coupling.Linear):
    pass


@pytest.mark.parametrize("cpl", [
    lambda: coupling.Sigmoidal(), lambda: coupling.Difference(a=np.array([0.1])),
    lambda: coupling.HyperbolicTangent(), lambda: coupling.Scaling(a=np.array([0.1])),
    lambda: SubclassedLinear(a=np.array([0.1]))],
    ids=["Sigmoidal", "Difference", "HyperbolicTangent", "Scaling", "SubclassedLinear"])
def test_unsupported_coupling(cpl):
    cpl = cpl()
    sim = make_sim(cpl=cpl)
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert msg.startswith(f"coupling {type(cpl).__name__} is not supported")
    assert msg.endswith("supported: Linear.")


def test_coupling_parameter_of_wrong_length():
    sim = make_sim(cpl=coupling.Linear(a=np.array([0.1, 0.2, 0.3])))
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "Linear.a" in msg and "3 values" in msg and f"expected 1 or {N_NODES}" in msg


# ---------------------------------------------------------------------------------------------- integrator
class SubclassedHeun(integrators.HeunDeterministic):
    pass


class HeunDeterministic(integrators.HeunDeterministic):
    """Same name as TVB's class, different class: the name alone must not be trusted."""


@pytest.mark.parametrize("integ", [
    lambda: integrators.RungeKutta4thOrderDeterministic(dt=0.1), lambda: integrators.Identity(dt=0.1),
    lambda: integrators.IdentityStochastic(dt=0.1, noise=noise.Additive(nsig=np.array([1e-5]))),
    lambda: SubclassedHeun(dt=0.1), lambda: HeunDeterministic(dt=0.1)],
    ids=["RungeKutta4thOrderDeterministic", "Identity", "IdentityStochastic", "SubclassedHeun",
         "HeunDeterministic-lookalike"])
def test_unsupported_integrator(integ):
    integ = integ()
    sim = make_sim(integrator=integ)
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert msg.startswith(f"integrator {type(integ).__name__} is not supported")
    assert_names_all(msg.split("supported:")[-1], SUPPORTED_INTEGRATORS)


def test_clamped_state_variables():
    integ = integrators.HeunDeterministic(dt=0.1, clamped_state_variable_indices=np.array([1]),
                                          clamped_state_variable_values=np.array([0.1]))
    sim = make_sim(integrator=integ)
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "HeunDeterministic" in msg and "clamped state variables" in msg


# ---------------------------------------------------------------------------------------------- noise
class SubclassedAdditive(noise.Additive):
    pass


@pytest.mark.parametrize("noise_obj", [
    lambda: noise.Multiplicative(nsig=np.array([1e-5])), lambda: SubclassedAdditive(nsig=np.array([1e-5]))],
    ids=["Multiplicative", "SubclassedAdditive"])
@pytest.mark.parametrize("scheme", [integrators.HeunStochastic, integrators.EulerStochastic])
def test_unsupported_noise(noise_obj, scheme):
    noise_obj = noise_obj()
    sim = make_sim(integrator=scheme(dt=0.1, noise=noise_obj))
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert msg.startswith(f"noise {type(noise_obj).__name__} is not supported")
    assert msg.endswith("supported: Additive.")


def test_coloured_additive_noise():
    sim = make_sim(integrator=stochastic(nsig=np.array([1e-5]), ntau=1.5))
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "coloured noise" in msg and "Additive" in msg and "ntau=1.5" in msg
    assert "white noise (ntau=0)" in msg


def test_nsig_of_unusable_shape():
    """TVB itself only logs an error for nsig of shape (3,) on 4 nodes and keeps it; the twin refuses it."""
    sim = make_sim(integrator=stochastic(nsig=np.array([1e-5, 1e-5, 1e-5])))
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "noise.nsig" in msg and "(3,)" in msg
    assert "(1,)" in msg and f"(2, {N_NODES})" in msg


# ---------------------------------------------------------------------------------------------- monitors
class SubclassedRaw(monitors.Raw):
    pass


@pytest.mark.parametrize("mon", [
    lambda: monitors.SpatialAverage(period=0.1), lambda: monitors.GlobalAverage(period=0.1),
    lambda: monitors.AfferentCoupling(), lambda: monitors.AfferentCouplingTemporalAverage(period=0.5),
    lambda: monitors.RawVoi(), lambda: SubclassedRaw()],
    ids=["SpatialAverage", "GlobalAverage", "AfferentCoupling", "AfferentCouplingTemporalAverage", "RawVoi",
         "SubclassedRaw"])
@pytest.mark.parametrize("position", ["alone", "after_raw"])
def test_unsupported_monitor(mon, position):
    mon = mon()
    mons = (mon,) if position == "alone" else (monitors.Raw(), mon)
    sim = make_sim(mons=mons)
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert msg.startswith(f"monitor {type(mon).__name__} is not supported")
    assert_names_all(msg.split("supported:")[-1], SUPPORTED_MONITORS)


def test_bold_region_roi_monitor():
    """BoldRegionROI (a Bold subclass) cannot even be configured without a surface; put it in after
    configure() to check that being a subclass of a supported monitor is not enough."""
    sim = make_sim(mons=(monitors.Bold(period=2.0),))
    sim.monitors = (monitors.BoldRegionROI(period=2.0),)
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert msg.startswith("monitor BoldRegionROI is not supported")
    assert_names_all(msg.split("supported:")[-1], SUPPORTED_MONITORS)


# ---------------------------------------------------------------------------------------------- surface, stimulus
def test_surface_simulation():
    """A real cortical surface is heavy to configure; the check only looks at ``sim.surface``."""
    sim = make_sim()
    sim.surface = cortex.Cortex()
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "surface simulations are not supported" in msg and "region simulation" in msg


def test_stimulus():
    conn = small_connectivity()
    stim = patterns.StimuliRegion(temporal=equations.PulseTrain(), connectivity=conn,
                                  weight=np.ones(N_NODES))
    sim = simulator.Simulator(model=models.ReducedWongWangExcInh(), connectivity=conn,
                              coupling=coupling.Linear(a=np.array([0.5])),
                              integrator=integrators.HeunDeterministic(dt=0.1), monitors=(monitors.Raw(),),
                              stimulus=stim, simulation_length=2.0).configure()
    with pytest.raises(UnsupportedTVBObject) as info:
        tvb_torchfit.from_tvb(sim)
    msg = str(info.value)
    assert "stimulus StimuliRegion is not supported" in msg and "Simulator.stimulus to None" in msg


# ---------------------------------------------------------------------------------------------- from_tvb arguments
@pytest.fixture(scope="module")
def configured_sim():
    return make_sim(integrator=stochastic())


@pytest.mark.parametrize("value", ["foo", "numpy", None, "TVB"])
def test_bad_noise_argument(configured_sim, value):
    with pytest.raises(ValueError) as info:
        tvb_torchfit.from_tvb(configured_sim, noise=value)
    msg = str(info.value)
    assert f"noise={value!r}" in msg
    assert "'torch'" in msg and "'tvb'" in msg


@pytest.mark.parametrize("value", [0, -1, 1.5, "2"])
def test_bad_batch_argument(configured_sim, value):
    with pytest.raises(ValueError) as info:
        tvb_torchfit.from_tvb(configured_sim, batch=value)
    msg = str(info.value)
    assert f"batch={value!r}" in msg and "positive integer" in msg


def test_exact_needs_float64(configured_sim):
    with pytest.raises(ValueError) as info:
        tvb_torchfit.from_tvb(configured_sim, exact=True, dtype=torch.float32)
    msg = str(info.value)
    assert "exact=True" in msg and "torch.float64" in msg and "torch.float32" in msg


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.complex128])
def test_unsupported_dtype(configured_sim, dtype):
    with pytest.raises(ValueError) as info:
        tvb_torchfit.from_tvb(configured_sim, dtype=dtype)
    msg = str(info.value)
    assert f"dtype={dtype}" in msg and "torch.float64" in msg and "torch.float32" in msg


def test_refusals_leave_the_simulator_untouched(configured_sim):
    """A refused call must not have advanced or altered the TVB simulator."""
    step = configured_sim.current_step
    state = np.array(configured_sim.current_state)
    stream_state = configured_sim.integrator.noise.random_stream.get_state()[1].copy()
    for kwargs in ({"noise": "foo"}, {"batch": 0}, {"dtype": torch.float16}):
        with pytest.raises(ValueError):
            tvb_torchfit.from_tvb(configured_sim, **kwargs)
    assert configured_sim.current_step == step
    np.testing.assert_array_equal(configured_sim.current_state, state)
    np.testing.assert_array_equal(configured_sim.integrator.noise.random_stream.get_state()[1], stream_state)


# ---------------------------------------------------------------------------------------------- known gaps
def test_weights_edited_after_configure_are_not_silently_diverging():
    """TVB ignores ``connectivity.weights`` edits made after ``configure()``; the twin must either do the
    same or refuse. Start from an explicit history so both runs start identically."""
    probe = make_sim()
    horizon = probe.connectivity.horizon
    ic = np.random.RandomState(0).uniform(0.05, 0.3, size=(horizon, 2, N_NODES, 1))
    sim = make_sim(cpl=coupling.Linear(a=np.array([2.0])), initial_conditions=ic)
    sim.connectivity.weights = sim.connectivity.weights * 10.0
    try:
        twin = tvb_torchfit.from_tvb(sim)
    except TVBTorchFitError:
        return                                                   # refusing is fine too
    (_, twin_data), = twin.run(2.0)
    (_, tvb_data), = sim.run(simulation_length=2.0)
    np.testing.assert_allclose(twin_data.numpy(), tvb_data, rtol=0, atol=1e-6)
