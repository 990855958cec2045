"""tvb_torchfit.analyzers.fic: feedback inhibition control (Deco et al. 2014) for ReducedWongWangExcInh.

The check is independent of the code under test: the excitatory rate H_e is recomputed from TVB's
ReducedWongWangExcInh equations (written out below from TVB's source, with the TVB model's own parameter
values) at the network fixed point that ``linear.network_fixed_point`` reaches from the low start, and the
fixed point itself is checked with TVB's numpy ``dfun``; the fixed point ``fic.fic_state`` returns is checked
the same way.
"""
import warnings

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", module="tvb")

from tests.test_linear import small_sim, tvb_network_dfun  # noqa: E402
from tvb_torchfit.analyzers import linear  # noqa: E402
from tvb_torchfit.analyzers import fic
from tvb_torchfit.simulator.adapter import read_simulator  # noqa: E402

T64 = dict(dtype=torch.float64)


def tvb_rate_e(sim, x: np.ndarray) -> np.ndarray:
    """H_e (Hz) of TVB's ReducedWongWangExcInh at state x (2, N), instantaneous Linear coupling."""
    m = sim.model
    w = np.asarray(sim.history.weights, dtype=np.float64)
    c = sim.coupling.a * (w @ x[0]) + sim.coupling.b
    x_e = m.a_e * (m.w_p * m.J_N * x[0] - m.J_i * x[1] + m.W_e * m.I_o + m.G * m.J_N * c + m.I_ext) - m.b_e
    return x_e / (1 - np.exp(-m.d_e * x_e))


def test_fic_network_fixed_point_fires_at_target():
    sim = small_sim("ExcInh")
    spec = read_simulator(sim)
    for target in (3.0, 2.0):
        J_i = fic.fic_J_i(spec, target_rate=target)
        assert J_i.shape == (spec.n_nodes,) and bool((J_i > 0).all())
        fp = linear.network_fixed_point(spec, {"J_i": J_i})
        x = fp.state.detach().numpy()
        sim.model.J_i = J_i.detach().numpy()
        assert np.abs(tvb_network_dfun(sim, x)).max() < 1e-10
        np.testing.assert_allclose(tvb_rate_e(sim, x), target, rtol=0, atol=1e-8)


def test_fic_state_is_tvbs_fixed_point_at_the_target_rate():
    """The (J_i, state) of ``fic_state``: a root of TVB's own dfun (with that J_i and TVB's Linear coupling on
    the state) where H_e is the target, region-wise G and w_p included."""
    sim = small_sim("ExcInh")
    spec = read_simulator(sim)
    G, w_p = np.array([0.3]), np.array([1.3, 1.4, 1.5, 1.4])
    J_i, x = fic.fic_state(spec, {"G": G, "w_p": w_p}, target_rate=2.5)
    assert x.shape == (2, spec.n_nodes)
    sim.model.G, sim.model.w_p, sim.model.J_i = G, w_p, J_i.detach().numpy()
    x = x.detach().numpy()
    assert np.abs(tvb_network_dfun(sim, x)).max() < 1e-13
    np.testing.assert_allclose(tvb_rate_e(sim, x), 2.5, rtol=0, atol=1e-10)


def test_fic_on_connectivity_76_demo_regime():
    from tvb_torchfit.demo import demo_simulator
    sim = demo_simulator(G=0.075, w_p=0.6)
    spec = read_simulator(sim)
    J_i = fic.fic_J_i(spec)
    fp = linear.network_fixed_point(spec, {"J_i": J_i})
    sim.model.J_i = J_i.detach().numpy()
    np.testing.assert_allclose(tvb_rate_e(sim, fp.state.detach().numpy()), 3.0, rtol=0, atol=1e-8)
    assert fp.lambda_max < 0
    fc, info = linear.linear_bold_fc(spec, {"J_i": J_i})        # FIC + linear FC compose
    assert torch.isfinite(fc).all()


def test_fic_gradcheck():
    spec = read_simulator(small_sim("ExcInh"))
    G = torch.tensor([0.2], **T64, requires_grad=True)
    w_p = torch.tensor([1.3, 1.4, 1.5, 1.4], **T64, requires_grad=True)
    a = torch.tensor([1.0], **T64, requires_grad=True)
    rate = torch.tensor([3.0], **T64, requires_grad=True)
    fn = lambda G, w_p, a, rate: fic.fic_J_i(spec, {"G": G, "w_p": w_p, "coupling.a": a}, rate)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (G, w_p, a, rate), eps=1e-6, atol=1e-7, rtol=1e-5)
    # FIC composed with the linear FC: gradient w.r.t. G through J_i(G) and the fixed point
    def fc_of(G):
        J_i = fic.fic_J_i(spec, {"G": G})
        return linear.linear_bold_fc(spec, {"G": G, "J_i": J_i})[0][0, 1:]
    assert torch.autograd.gradcheck(fc_of, (G,), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_fic_errors():
    spec = read_simulator(small_sim("ExcInh"))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(linear.ParameterError, match="positive"):
            fic.fic_J_i(spec, target_rate=bad)
    with pytest.raises(linear.ParameterError, match="no J_i"):
        fic.fic_J_i(read_simulator(small_sim("RWW")))
    with pytest.raises(linear.ParameterError, match="negative J_i"):
        fic.fic_J_i(spec, {"G": 0.0, "w_p": 0.1}, target_rate=50.0)
