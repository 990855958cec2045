"""TorchSimulator parameters: names, shapes, values, and the output shapes they lead to.

Real TVB simulators on the 4-region ``paupau`` connectome (milliseconds to configure); simulations of a few
ms. Parameter layouts (see tvb_torchfit.simulator.twin): model and coupling parameters broadcast against
(batch, nodes): (), (1,), (N,), (B, 1), (B, N); ``noise.nsig`` against (batch, nvar, nodes).
Outputs: (T, voi, N, 1) for batch 1, (B, T, voi, N, 1) otherwise, T as TVB itself gives it.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvb.datatypes.connectivity import Connectivity
from tvb.simulator import coupling, integrators, models, monitors, noise, simulator

import tvb_torchfit
from tvb_torchfit import ParameterError

N = 4            # paupau
NVAR = 2         # ReducedWongWangExcInh: S_e, S_i
VOI = 2          # its default variables of interest
DT = 0.1


def make_sim(model=None, stochastic=True, dt=DT, mons=None, scheme=None, nsig=1e-5):
    conn = Connectivity.from_file("paupau.zip")
    conn.speed = np.array([3.0])
    if scheme is None:
        scheme = integrators.HeunStochastic if stochastic else integrators.HeunDeterministic
    if scheme in (integrators.HeunStochastic, integrators.EulerStochastic):
        integ = scheme(dt=dt, noise=noise.Additive(nsig=np.array([nsig])))
    else:
        integ = scheme(dt=dt)
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh() if model is None else model,
        connectivity=conn, coupling=coupling.Linear(a=np.array([0.5])), integrator=integ,
        monitors=(monitors.Raw(),) if mons is None else mons, simulation_length=1.0)
    return sim.configure()


@pytest.fixture(scope="module")
def stoch_sim():
    return make_sim(stochastic=True)


@pytest.fixture(scope="module")
def det_sim():
    return make_sim(stochastic=False)


def expected_shape(batch, T, voi=VOI):
    return (T, voi, N, 1) if batch == 1 else (batch, T, voi, N, 1)


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["g", "noise.sigma", "coupling.c", "noise", "a_e ", ""])   # "nsig": an alias
def test_unknown_parameter_name(stoch_sim, name):
    twin = tvb_torchfit.from_tvb(stoch_sim)
    with pytest.raises(ParameterError) as info:
        twin.set_param(name, 1.0)
    msg = str(info.value)
    assert f"{name!r} is not a parameter" in msg
    assert "ReducedWongWangExcInh" in msg
    known = msg.split("known:")[-1]
    for expected in ("G", "w_p", "J_i", "coupling.a", "coupling.b", "noise.nsig"):
        assert expected in known
    assert isinstance(info.value, ValueError)


def test_noise_parameter_of_a_deterministic_simulator(det_sim):
    twin = tvb_torchfit.from_tvb(det_sim)
    assert "noise.nsig" not in twin.parameter_names
    with pytest.raises(ParameterError) as info:
        twin.set_param("noise.nsig", 1e-5)
    msg = str(info.value)
    assert "'noise.nsig' is not a parameter" in msg and "coupling.a" in msg
    assert "noise.nsig" not in msg.split("known:")[-1]


def test_parameter_names_follow_tvb(stoch_sim):
    twin = tvb_torchfit.from_tvb(stoch_sim)
    port_names = set(tvb_torchfit.simulator.models.MODELS[models.ReducedWongWangExcInh].parameter_names)
    assert set(twin.parameter_names) == port_names | {"coupling.a", "coupling.b", "noise.nsig"}
    for name in port_names:                          # values as TVB holds them
        np.testing.assert_array_equal(twin.params[name].numpy(), np.asarray(getattr(stoch_sim.model, name)))


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("batch,name,shape", [
    (1, "G", (N + 1,)), (1, "G", (2, N)), (1, "G", (1, 1, N)), (1, "coupling.a", (N - 1,)),
    (2, "G", (3, N)), (2, "G", (3, 1)), (2, "G", (2, N + 1)), (2, "w_p", (N, 2)), (2, "coupling.b", (1, 2, N)),
    (3, "J_i", (2, 1)), (3, "G", (0,)),
])
def test_model_parameter_of_wrong_shape(stoch_sim, batch, name, shape):
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=batch)
    before = twin.params[name].clone()
    with pytest.raises(ParameterError) as info:
        twin.set_param(name, torch.full(shape, 0.5, dtype=torch.float64))
    msg = str(info.value)
    assert f"parameter {name!r} has shape {shape}" in msg
    assert f"(batch, nodes) = {(batch, N)}" in msg
    assert f"(1,), ({N},), ({batch}, 1) or ({batch}, {N})" in msg
    torch.testing.assert_close(twin.params[name], before)        # a refused value is not kept


@pytest.mark.parametrize("batch,shape", [
    (1, (N + 1,)), (1, (3, N)), (2, (3, N)), (2, (NVAR, N + 1)), (2, (3, NVAR, N)), (2, (1, 2, NVAR, N)),
])
def test_nsig_of_wrong_shape(stoch_sim, batch, shape):
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=batch)
    with pytest.raises(ParameterError) as info:
        twin.set_param("noise.nsig", np.full(shape, 1e-5))
    msg = str(info.value)
    assert f"parameter 'noise.nsig' has shape {shape}" in msg
    assert f"(batch, nvar, nodes) = {(batch, NVAR, N)}" in msg
    assert f"({NVAR}, {N}), ({batch}, 1, 1), ({batch}, 1, {N}) or ({batch}, {NVAR}, {N})" in msg


def test_nsig_error_message_offers_only_shapes_that_work(stoch_sim):
    batch = 3
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=batch)
    with pytest.raises(ParameterError) as info:
        twin.set_param("noise.nsig", np.full((batch, 1), 1e-5))
    offered = str(info.value).split("; use ", 1)[1]
    assert f"({batch}, 1)" not in offered.replace(f"({batch}, 1, 1)", "")   # not offered what was just refused


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("name", ["G", "w_p", "coupling.a", "coupling.b"])
@pytest.mark.parametrize("layout", ["scalar", "(1,)", "(N,)", "(B,1)", "(B,N)"])
def test_valid_model_parameter_shapes(det_sim, batch, name, layout):
    shape = {"scalar": (), "(1,)": (1,), "(N,)": (N,), "(B,1)": (batch, 1), "(B,N)": (batch, N)}[layout]
    twin = tvb_torchfit.from_tvb(det_sim, batch=batch)
    value = float(twin.params[name].reshape(-1)[0])
    twin.set_param(name, torch.full(shape, value, dtype=torch.float64))
    times, data = twin.run(0.5)[0]
    assert tuple(data.shape) == expected_shape(batch, 5)
    assert times.shape == (5,)
    assert torch.isfinite(data).all()


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("layout", ["(1,)", "(N,)", "(nvar,1)", "(nvar,N)", "(B,nvar,N)", "(B,1,1)", "(B,1,N)"])
def test_valid_nsig_shapes(stoch_sim, batch, layout):
    shape = {"(1,)": (1,), "(N,)": (N,), "(nvar,1)": (NVAR, 1), "(nvar,N)": (NVAR, N),
             "(B,nvar,N)": (batch, NVAR, N), "(B,1,1)": (batch, 1, 1), "(B,1,N)": (batch, 1, N)}[layout]
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=batch)
    twin.set_param("noise.nsig", torch.full(shape, 1e-5, dtype=torch.float64))
    _, data = twin.run(0.5)[0]
    assert tuple(data.shape) == expected_shape(batch, 5)
    assert torch.isfinite(data).all()


def test_batch_layouts_mean_what_they_say(det_sim):
    """(B, 1) is one value per batch member, (B, N) one per member and node: member b of a batched run equals
    an unbatched run with member b's values (deterministic integrator, same start)."""
    G = torch.tensor([[0.5], [3.0]], dtype=torch.float64)
    w_p = torch.tensor([[1.4, 1.3, 1.2, 1.1], [1.0, 1.4, 1.4, 0.9]], dtype=torch.float64)
    batched = tvb_torchfit.from_tvb(det_sim, batch=2)
    batched.set_param("G", G)
    batched.set_param("w_p", w_p)
    _, data = batched.run(1.0)[0]
    assert not torch.allclose(data[0], data[1])
    for b in range(2):
        single = tvb_torchfit.from_tvb(det_sim)
        single.set_param("G", G[b])
        single.set_param("w_p", w_p[b])
        _, ref = single.run(1.0)[0]
        torch.testing.assert_close(data[b], ref, rtol=1e-12, atol=1e-14)


def test_region_wise_equal_values_equal_global(det_sim):
    outs = []
    for value in (torch.tensor([2.0]), torch.full((N,), 2.0), torch.full((1, N), 2.0), torch.tensor(2.0)):
        twin = tvb_torchfit.from_tvb(det_sim)
        twin.set_param("G", value)
        outs.append(twin.run(0.5)[0][1])
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=0, atol=0)


def test_per_member_nsig(stoch_sim):
    """nsig of shape (B, nvar, N): member 0 sees only its own nsig (torch noise: member b's draws depend
    on (seed, b) only, so member 0 matches an unbatched run)."""
    nsig = torch.stack([torch.full((NVAR, N), 1e-4), torch.zeros(NVAR, N)]).double()
    batched = tvb_torchfit.from_tvb(stoch_sim, batch=2, seed=7)
    batched.set_param("noise.nsig", nsig)
    _, data = batched.run(1.0)[0]
    single = tvb_torchfit.from_tvb(stoch_sim, seed=7)
    single.set_param("noise.nsig", nsig[0])
    torch.testing.assert_close(data[0], single.run(1.0)[0][1], rtol=1e-12, atol=1e-14)
    det = tvb_torchfit.from_tvb(stoch_sim, batch=1)
    det.set_param("noise.nsig", 0.0)
    torch.testing.assert_close(data[1], det.run(1.0)[0][1], rtol=1e-12, atol=1e-14)   # nsig 0 = no noise


def test_batched_parameters_carry_gradients(det_sim):
    G = torch.tensor([[1.0], [2.0]], dtype=torch.float64, requires_grad=True)
    twin = tvb_torchfit.from_tvb(det_sim, batch=2)
    twin.set_param("G", G)
    _, data = twin.run(0.5)[0]
    data.sum().backward()
    assert G.grad is not None and G.grad.shape == (2, 1) and torch.isfinite(G.grad).all()


def test_batch_with_zero_delay_edges_matches_block_one(det_sim):
    """paupau (like connectivity_76) has zero-delay self-connections; the default block gathers them as
    'near' edges. Batched runs must agree with the step-by-step (block=1) path."""
    assert (det_sim.connectivity.weights[det_sim.connectivity.idelays == 0] != 0).any()
    ref = tvb_torchfit.from_tvb(det_sim, batch=2, block=1).run(1.0)[0][1]
    out = tvb_torchfit.from_tvb(det_sim, batch=2).run(1.0)[0][1]
    # only the summation order differs (near edges added after far ones): float64 rounding, amplified by the
    # model's steep transfer function, stays far below the ~1e-9 the twin keeps from TVB's float32 history
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name,bad", [("G", math.nan), ("G", math.inf), ("w_p", -math.inf),
                                      ("coupling.a", math.nan), ("noise.nsig", math.nan)])
def test_non_finite_parameter(stoch_sim, batch, name, bad):
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=batch)
    step = twin.current_step
    with pytest.raises(ParameterError) as info:
        twin.set_param(name, torch.tensor([bad], dtype=torch.float64))
        twin.run(0.5)
    msg = str(info.value)
    assert repr(name) in msg and "not finite" in msg
    assert twin.current_step == step                  # nothing was integrated


def test_nan_in_one_batch_member_only(stoch_sim):
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=3)
    value = torch.full((3, N), 2.0, dtype=torch.float64)
    value[2, 1] = math.nan
    twin.set_param("G", value)
    with pytest.raises(ParameterError, match=r"parameter 'G' is not finite"):
        twin.run(0.5)


@pytest.mark.parametrize("batch,value", [
    (1, torch.tensor([-1e-5])), (1, torch.full((NVAR, N), 1e-5).index_fill(1, torch.tensor([2]), -1e-9)),
    (2, torch.stack([torch.full((NVAR, N), 1e-5), torch.full((NVAR, N), -1e-5)])),
])
def test_negative_nsig(stoch_sim, batch, value):
    twin = tvb_torchfit.from_tvb(stoch_sim, batch=batch)
    step = twin.current_step
    with pytest.raises(ParameterError) as info:
        twin.set_param("noise.nsig", value.double())
        twin.run(0.5)
    msg = str(info.value)
    assert "'noise.nsig'" in msg and ">= 0" in msg and "diffusion coefficient" in msg
    assert twin.current_step == step


def test_run_length_must_be_positive(det_sim):
    twin = tvb_torchfit.from_tvb(det_sim)
    for bad in (0.0, -1.0, None, math.nan):
        with pytest.raises(ValueError, match="simulation_length"):
            twin.run(bad)


# ---------------------------------------------------------------------------------------------- property
MODEL_PARAMS = {models.ReducedWongWang: {"w": (0.5, 1.0), "I_o": (0.2, 0.4)},
                models.ReducedWongWangExcInh: {"G": (0.5, 3.0), "w_p": (1.0, 1.6)}}
MODEL_LAYOUTS = ["scalar", "(1,)", "(N,)", "(B,1)", "(B,N)"]
NSIG_LAYOUTS = ["(1,)", "(N,)", "(nvar,1)", "(nvar,N)", "(B,nvar,N)", "(B,1,1)"]
SCHEMES = [integrators.HeunDeterministic, integrators.HeunStochastic, integrators.EulerDeterministic,
           integrators.EulerStochastic]


def layout_shape(layout, batch, nvar):
    return {"scalar": (), "(1,)": (1,), "(N,)": (N,), "(B,1)": (batch, 1), "(B,N)": (batch, N),
            "(nvar,1)": (nvar, 1), "(nvar,N)": (nvar, N), "(B,nvar,N)": (batch, nvar, N),
            "(B,1,1)": (batch, 1, 1)}[layout]


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.integers(1, 4),
       model=st.sampled_from(sorted(MODEL_PARAMS, key=lambda c: c.__name__)),
       scheme=st.sampled_from(SCHEMES),
       dt=st.sampled_from([0.1, 0.25, 0.5]),
       length=st.floats(0.05, 3.0, allow_nan=False),
       layouts=st.lists(st.sampled_from(MODEL_LAYOUTS), min_size=3, max_size=3),
       nsig_layout=st.sampled_from(NSIG_LAYOUTS),
       noise_source=st.sampled_from(["torch", "tvb"]),
       seed=st.integers(0, 2**31 - 1))
def test_output_shapes_follow_tvb(batch, model, scheme, dt, length, layouts, nsig_layout, noise_source, seed):
    mons = (monitors.Raw(), monitors.SubSample(period=2 * dt), monitors.TemporalAverage(period=2 * dt))
    sim = make_sim(model=model(), scheme=scheme, dt=dt, mons=mons)
    nvar = len(sim.model.state_variables)
    rng = np.random.RandomState(seed)
    twin = tvb_torchfit.from_tvb(sim, batch=batch, noise=noise_source)     # built before TVB runs: same start
    ranges = dict(MODEL_PARAMS[model], **{"coupling.a": (0.1, 1.0)})
    for (name, (lo, hi)), layout in zip(ranges.items(), layouts):
        twin.set_param(name, rng.uniform(lo, hi, size=layout_shape(layout, batch, nvar)))
    if "noise.nsig" in twin.parameter_names:
        twin.set_param("noise.nsig", rng.uniform(0.0, 1e-4, size=layout_shape(nsig_layout, batch, nvar)))

    outputs = twin.run(length)
    tvb_outputs = sim.run(simulation_length=length)

    n_steps = math.ceil(length / dt)
    assert tvb_outputs[0][1].shape[0] == n_steps                  # TVB's Raw: ceil(L / dt) samples
    assert twin.current_step == sim.current_step == n_steps
    for mon, (times, data), (tvb_times, tvb_data) in zip(sim.monitors, outputs, tvb_outputs):
        T, n_voi = len(tvb_times), len(mon.voi)        # a monitor without samples: TVB returns an empty (0,) array
        if T:
            assert tvb_data.shape == (T, n_voi, N, 1)
        assert tuple(data.shape) == expected_shape(batch, T, n_voi)
        np.testing.assert_allclose(times.numpy(), tvb_times, rtol=0, atol=1e-9)
        assert torch.isfinite(data).all()


def test_regionwise_prior_mean_per_region():
    import torch
    from tvb_torchfit.errors import ParameterError
    from tvb_torchfit.inference.parameters import Param, ParameterSet
    start = {"J_i": torch.ones(3, dtype=torch.float64)}
    mean = [0.9, 1.0, 1.2]
    ps = ParameterSet({"J_i": Param(0.5, 2.0, regionwise=True, prior=(mean, 0.1))}, start, 3)
    expected = 0.5 * (((np.ones(3) - np.array(mean)) / 0.1) ** 2).sum()
    assert abs(float(ps.prior_loss()) - expected) < 1e-9
    with pytest.raises(ParameterError, match="one per region"):
        ParameterSet({"J_i": Param(0.5, 2.0, regionwise=True, prior=([1.0, 1.0], 0.1))}, start, 3)
    with pytest.raises(ParameterError, match="regionwise=True"):
        ParameterSet({"J_i": Param(0.5, 2.0, prior=(mean, 0.1))}, {"J_i": torch.ones(1, dtype=torch.float64)}, 3)


def test_the_callers_param_is_never_changed():
    """ParameterSet fills in the default scale (log for noise.nsig) on a copy: the user's Param keeps log=None, so
    the same object reused for another parameter does not carry nsig's log scale over."""
    import torch
    from tvb_torchfit.inference.parameters import Param, ParameterSet
    shared = Param(1e-6, 2.0)
    start = {"noise.nsig": torch.tensor([1e-5], dtype=torch.float64), "G": torch.tensor([1.0], dtype=torch.float64)}
    first = ParameterSet({"nsig": shared}, start, 3)
    assert first.specs["noise.nsig"].log is True and shared.log is None and first.specs["noise.nsig"] is not shared
    second = ParameterSet({"G": shared}, start, 3)
    assert second.specs["G"].log is False
    # linear scale: value = low + (high - low) * sigmoid(theta); at theta = 0 the midpoint of the bounds
    with torch.no_grad():
        second.theta_0.zero_()
    assert float(second.values()["G"]) == pytest.approx((1e-6 + 2.0) / 2, rel=1e-12)


def test_one_gaussian_prior():
    """ParameterSet.prior_loss is losses.gaussian_prior summed over the parameters with a prior: 0.5 * z**2."""
    import torch
    from tvb_torchfit.inference.losses import gaussian_prior
    from tvb_torchfit.inference.parameters import Param, ParameterSet
    start = {"G": torch.tensor([1.5], dtype=torch.float64), "w_p": torch.tensor([0.7], dtype=torch.float64)}
    ps = ParameterSet({"G": Param(0.5, 3.0, prior=(1.0, 0.25)), "w_p": (0.5, 1.0)}, start, 3)
    assert float(ps.prior_loss()) == pytest.approx(0.5 * ((1.5 - 1.0) / 0.25) ** 2, rel=1e-12)      # = 2.0
    assert float(gaussian_prior(torch.tensor([1.5, 0.5], dtype=torch.float64), 1.0, 0.25)) == pytest.approx(4.0)


def test_log_scale_prior_is_log_normal():
    """On a log-scale parameter (nsig) the prior is 0.5 * ((log v - log mean) / sd)**2: a factor e above the
    mean costs what a factor e below does."""
    import math
    import torch
    from tvb_torchfit.inference.parameters import Param, ParameterSet
    mean = 1e-6
    for v in (mean * math.e, mean / math.e):
        start = {"noise.nsig": torch.tensor([v], dtype=torch.float64)}
        ps = ParameterSet({"nsig": Param(1e-9, 1e-3, prior=(mean, 0.5))}, start, 3)
        assert float(ps.prior_loss()) == pytest.approx(0.5 * (1 / 0.5) ** 2, rel=1e-9)      # = 2.0


def test_inside_bounds_moves_only_values_near_a_bound_on_the_fit_scale():
    """inside_bounds: a value closer to a bound than margin x range goes to that distance (log scale for nsig,
    aliases resolved); interior values, region-wise ones inside and names not fitted are unchanged."""
    from tvb_torchfit.inference.parameters import Param, inside_bounds
    values = {"G": np.array([0.5]), "w_p": np.array([0.3, 0.65, 0.999999]), "noise.nsig": np.array([1e-9]),
              "J_i": np.array([1.0])}
    out = inside_bounds(values, {"G": (0.1, 1.0), "w_p": Param(0.3, 1.0, regionwise=True), "nsig": (1e-9, 1e-3)},
                        0.01)
    assert out["G"][0] == 0.5 and out["J_i"][0] == 1.0
    np.testing.assert_allclose(out["w_p"], [0.3 + 0.007, 0.65, 1.0 - 0.007], rtol=1e-12)
    assert out["noise.nsig"][0] == pytest.approx(math.exp(math.log(1e-9) + 0.01 * math.log(1e6)), rel=1e-12)
    assert values["w_p"][0] == 0.3                                       # the caller's arrays are not changed
