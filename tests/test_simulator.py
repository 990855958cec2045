"""The torch simulator itself: batching with per-member parameters, dtypes, time stamps, detach."""
import numpy as np
import pytest
import torch
from tvb.simulator import integrators, models, monitors

import tvb_torchfit
from tvb_builders import build, heun_stochastic, small_connectivity


def _det_sim(**kw):
    return build(models.ReducedWongWangExcInh(), integrators.HeunDeterministic(dt=0.1),
                 (monitors.Raw(), monitors.TemporalAverage(period=1.0)), conn=small_connectivity(5), a=0.2, **kw)


def test_batch_members_with_own_parameters_equal_separate_runs():
    sim = _det_sim()
    G = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    twin = tvb_torchfit.from_tvb(sim, batch=3)
    twin.set_param("G", G)
    out = twin.run(simulation_length=30.0)
    for b in range(3):
        single = tvb_torchfit.from_tvb(sim)
        single.set_param("G", G[b, :1])
        ref = single.run(simulation_length=30.0)
        for (t, x), (t1, x1) in zip(out, ref):
            assert torch.equal(t, t1)
            torch.testing.assert_close(x[b], x1, rtol=0, atol=1e-14)


def test_regionwise_batched_parameter_layout():
    sim = _det_sim()
    twin = tvb_torchfit.from_tvb(sim, batch=2)
    J_i = torch.stack([torch.linspace(0.8, 1.2, 5), torch.linspace(1.2, 0.8, 5)]).double()
    twin.set_param("J_i", J_i)
    (_, x), _ = twin.run(n_steps=20)
    single = tvb_torchfit.from_tvb(sim)
    single.set_param("J_i", J_i[1])
    (_, x1), _ = single.run(n_steps=20)
    torch.testing.assert_close(x[1], x1, rtol=0, atol=1e-14)


def test_float32_close_to_float64():
    sim = _det_sim()
    (_, x64), _ = tvb_torchfit.from_tvb(sim).run(simulation_length=50.0)
    (_, x32), _ = tvb_torchfit.from_tvb(sim, dtype=torch.float32).run(simulation_length=50.0)
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), x64, rtol=0, atol=1e-5)


def test_block_size_does_not_change_the_result():
    """With blocks > 1, zero-delay edges read the float64 state instead of TVB's float32 history copy of it
    (the only difference), so results agree to float32 rounding of the coupling, not bit for bit."""
    sim = _det_sim()
    runs = [tvb_torchfit.from_tvb(sim, block=k).run(n_steps=199)[0][1] for k in (1, 3, 32)]   # remainders 1 and 7
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-9)
    torch.testing.assert_close(runs[1], runs[2], rtol=0, atol=1e-14)


def test_detach_cuts_graph_and_keeps_trajectory():
    sim = build(models.ReducedWongWang(), heun_stochastic(nsig=1e-5), (monitors.Bold(period=100.0),),
                conn=small_connectivity(3), a=0.3)
    ref = tvb_torchfit.from_tvb(sim, seed=1)
    ref_out = torch.cat([ref.run(simulation_length=200.0)[0][1] for _ in range(2)])
    twin = tvb_torchfit.from_tvb(sim, seed=1)
    w = torch.tensor([0.6], dtype=torch.float64, requires_grad=True)
    twin.set_param("w", w)
    first = twin.run(simulation_length=200.0)[0][1]
    twin.detach_()
    second = twin.run(simulation_length=200.0)[0][1]
    (g,) = torch.autograd.grad(second.sum(), w)
    assert torch.isfinite(g).all()
    assert twin.state.grad_fn is not None        # new graph from w, starting at the cut
    torch.testing.assert_close(torch.cat((first, second)).detach(), ref_out, rtol=0, atol=0)


def test_times_match_tvb_stamps():
    sim = build(models.ReducedWongWang(), integrators.EulerDeterministic(dt=0.25),
                (monitors.Raw(), monitors.TemporalAverage(period=2.0), monitors.SubSample(period=1.5)),
                conn=small_connectivity(3))
    twin = tvb_torchfit.from_tvb(sim)
    out = twin.run(simulation_length=10.0)
    ref = sim.run(simulation_length=10.0)
    for (t, _), (t_ref, _) in zip(out, ref):
        np.testing.assert_array_equal(t.numpy(), t_ref)


def test_compiled_blocks_equal_eager():
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.1, nsig=1e-4), (monitors.Raw(),),
                conn=small_connectivity(5), a=0.2)
    (_, eager), = tvb_torchfit.from_tvb(sim, block=4, seed=3).run(n_steps=41)
    compiled = tvb_torchfit.from_tvb(sim, block=4, seed=3, compile=True)
    assert compiled.compiled
    (_, fused), = compiled.run(n_steps=41)
    torch.testing.assert_close(fused, eager, rtol=0, atol=1e-12)


def test_state_dict_round_trip_continues_identically():
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.5, nsig=1e-4),
                (monitors.Bold(period=200.0), monitors.TemporalAverage(period=3.0)), conn=small_connectivity(4))
    for noise in ("torch", "tvb"):
        a = tvb_torchfit.from_tvb(sim, noise=noise, batch=2)
        a.run(simulation_length=301.0)
        saved = a.state_dict()
        ref = a.run(simulation_length=450.0)
        b = tvb_torchfit.from_tvb(sim, noise=noise, batch=2).load_state_dict(saved)
        out = b.run(simulation_length=450.0)
        for (t, x), (t1, x1) in zip(ref, out):
            assert torch.equal(t, t1) and torch.equal(x, x1)
