"""Differentiability: gradcheck through whole simulations, and the guarded H(x) at x = 0.

The gradchecks use ``fast_mode=True``: finite differences and the backward are compared along random
directions of inputs and outputs (one backward pass instead of one per output value), which still fails on
any wrong derivative except with probability zero."""
import numpy as np
import pytest
import torch
from tvb.simulator import integrators, models, monitors
from tvb.simulator.models.wong_wang_exc_inh import _numba_dfun as tvb_exc_inh_dfun

import tvb_torchfit
from tvb_torchfit.simulator.models import ReducedWongWangExcInh
from tvb_torchfit.simulator.models.transfer import wong_wang_H
from tvb_builders import build, heun_stochastic, small_connectivity

N = 4


def _sim(stochastic=False):
    integ = heun_stochastic(dt=0.1, nsig=1e-4) if stochastic else integrators.HeunDeterministic(dt=0.1)
    return build(models.ReducedWongWangExcInh(), integ, (monitors.Raw(), monitors.TemporalAverage(period=0.5)),
                 conn=small_connectivity(N, speed=10.0), a=0.2)


def _run(sim, values: dict, steps=30):
    twin = tvb_torchfit.from_tvb(sim, noise="torch", seed=5)
    for name, v in values.items():
        twin.set_param(name, v)
    (_, raw), (_, tavg) = twin.run(n_steps=steps)
    return torch.cat((raw.reshape(-1), tavg.reshape(-1)))


@pytest.mark.parametrize("regionwise", [False, True], ids=["global", "regionwise"])
def test_gradcheck_G_wp_Ji_coupling_a(regionwise):
    sim = _sim()
    shape = (N,) if regionwise else (1,)
    rng = np.random.RandomState(1)
    inputs = tuple(torch.tensor(rng.uniform(lo, hi, shape), requires_grad=True)
                   for lo, hi in ((1.5, 2.5), (1.2, 1.5), (0.8, 1.2)))
    a = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)

    def f(G, w_p, J_i, coupling_a):
        return _run(sim, {"G": G, "w_p": w_p, "J_i": J_i, "coupling.a": coupling_a})

    assert torch.autograd.gradcheck(f, inputs + (a,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_nsig_and_coupling_b_stochastic():
    sim = _sim(stochastic=True)
    nsig = torch.tensor([1e-4], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.01], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, bb: _run(sim, {"noise.nsig": s, "coupling.b": bb}),
                                    (nsig, b), eps=1e-8, atol=1e-7, rtol=1e-3, fast_mode=True)


def test_gradient_every_model_parameter_is_finite_and_nonzero():
    sim = _sim(stochastic=True)
    twin = tvb_torchfit.from_tvb(sim)
    for name in list(twin.params):
        twin.set_param(name, twin.params[name].clone().requires_grad_(True))
    (_, raw), _ = twin.run(n_steps=50)
    raw.sum().backward()
    for name, p in twin.params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    moving = [n for n in ("G", "w_p", "J_i", "J_N", "I_o", "W_e", "W_i", "a_e", "b_e", "tau_e", "coupling.a", "noise.nsig")
              if twin.params[n].grad.abs().sum() > 0]
    assert len(moving) == 12


def test_H_is_tvb_expression_away_from_zero():
    u = torch.linspace(-3.0, 3.0, 2001, dtype=torch.float64)
    u = u[u.abs() > 1e-3]
    d = torch.tensor(0.16, dtype=torch.float64)
    assert torch.equal(wong_wang_H(u, d), u / (1 - torch.exp(-d * u)))


def test_H_value_and_gradient_at_zero():
    d = torch.tensor([0.16, 0.087, 154.0], dtype=torch.float64, requires_grad=True)
    u = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    h = wong_wang_H(u, d)
    torch.testing.assert_close(h, 1 / d.detach())
    gu, gd = torch.autograd.grad(h.sum(), (u, d))
    torch.testing.assert_close(gu, torch.full_like(gu, 0.5))          # dH/du at 0 = 1/2
    torch.testing.assert_close(gd, -1 / d.detach() ** 2)              # d(1/d)/dd
    # continuity across the series band edge
    for x in (9.9e-7, 1.01e-6):
        uu = torch.tensor([x / 0.16, -x / 0.16], dtype=torch.float64)
        exact = uu / (-torch.expm1(-0.16 * uu))
        torch.testing.assert_close(wong_wang_H(uu, torch.tensor(0.16, dtype=torch.float64)), exact, rtol=1e-9, atol=0)


def _zero_crossing_params():
    """ExcInh parameters with x_e = 0 and x_i = 0 exactly at S_e = S_i = 0 and no coupling."""
    p = {k: float(np.asarray(getattr(models.ReducedWongWangExcInh(), k))[0])
         for k in ReducedWongWangExcInh.parameter_names}
    p["b_e"] = p["a_e"] * (p["W_e"] * p["I_o"] + p["I_ext"])
    p["b_i"] = p["a_i"] * (p["W_i"] * p["I_o"])
    return p


def test_exc_inh_dfun_finite_where_tvb_gives_nan():
    p = _zero_crossing_params()
    state = np.zeros((1, 2))
    c = np.zeros((1, 1))
    args = [np.array([p[k]]) for k in ("a_e", "b_e", "d_e", "gamma_e", "tau_e", "w_p", "W_e", "J_N", "a_i", "b_i",
                                       "d_i", "gamma_i", "tau_i", "W_i", "J_i", "G", "lamda", "I_o", "I_ext")]
    tvb = tvb_exc_inh_dfun(state, c, *args)
    assert np.isnan(tvb).all()                       # TVB's own dfun: 0/0 at x_e = x_i = 0
    tp = {k: torch.tensor([[v]], dtype=torch.float64, requires_grad=True) for k, v in p.items()}
    out = ReducedWongWangExcInh.dfun(torch.zeros(2, 1, 1, dtype=torch.float64),
                                     torch.zeros(1, 1, dtype=torch.float64), tp)
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), list(tp.values()), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    # H_e(0) = 1/d_e: dS_e/dt = (1 - 0) * gamma_e / d_e
    torch.testing.assert_close(out[0, 0, 0].detach(), torch.tensor(p["gamma_e"] / p["d_e"], dtype=torch.float64))


def test_gradcheck_through_zero_crossing():
    p = _zero_crossing_params()
    rest = {k: torch.tensor([[v]], dtype=torch.float64) for k, v in p.items() if k not in ("J_i", "w_p")}

    def f(w_p, J_i):
        return ReducedWongWangExcInh.dfun(torch.zeros(2, 1, 1, dtype=torch.float64),
                                          torch.zeros(1, 1, dtype=torch.float64), dict(rest, w_p=w_p, J_i=J_i))
    inputs = (torch.tensor([[p["w_p"]]], dtype=torch.float64, requires_grad=True),
              torch.tensor([[p["J_i"]]], dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(f, inputs)
