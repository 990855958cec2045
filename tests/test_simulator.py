"""The torch simulator itself: batching with per-member parameters, dtypes, time stamps, detach."""
import numpy as np
import pytest
import torch
from tvb.simulator import integrators, models, monitors

import tvb_torchfit
from tvb_torchfit.simulator.adjoint import CheckpointOptions, backward_chunks, segment_blocks
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


# ---------------------------------------------------------------- history layouts and checkpointed backward
def _stoch_sim():
    return build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.1, nsig=1e-4),
                 (monitors.Raw(), monitors.Bold(period=20.0), monitors.TemporalAverage(period=1.0)),
                 conn=small_connectivity(5), a=0.2)


def _graph_run(twin, lengths, G=None):
    """Runs with G requiring grad (autograd records): outputs of every run, G."""
    G = torch.tensor([[1.5], [2.0]], dtype=torch.float64, requires_grad=True) if G is None else G
    twin.set_param("G", G)
    return [twin.run(n_steps=n) for n in lengths], G


def test_in_place_history_equals_graph_history():
    """Without a graph the history is a buffer written in place (wrapping around several times here);
    with one it is concatenated per block. Same trajectory, monitors, history and state_dict."""
    sim = _stoch_sim()
    lengths = (301, 97, 1200, 33)
    free = tvb_torchfit.from_tvb(sim, batch=2, seed=4)
    free.set_param("G", torch.tensor([[1.5], [2.0]], dtype=torch.float64))
    with torch.no_grad():
        outs_free = [free.run(n_steps=n) for n in lengths]
    graph = tvb_torchfit.from_tvb(sim, batch=2, seed=4)
    outs_graph, _ = _graph_run(graph, lengths)
    for run_free, run_graph in zip(outs_free, outs_graph):
        for (t, x), (t1, x1) in zip(run_free, run_graph):
            assert torch.equal(t, t1) and torch.equal(x, x1.detach())
    assert torch.equal(free.history, graph.history.detach())
    a, b = free.state_dict(), graph.state_dict()
    assert torch.equal(a["history"], b["history"]) and torch.equal(a["state"], b["state"])
    for ma, mb in zip(a["monitors"], b["monitors"]):
        assert ma.keys() == mb.keys()
        for k in ma:
            assert torch.equal(ma[k], mb[k]) if torch.is_tensor(ma[k]) else ma[k] == mb[k]


def test_switching_between_graph_and_in_place_history_continues_identically():
    sim = _stoch_sim()
    ref = tvb_torchfit.from_tvb(sim, batch=2, seed=9)
    with torch.no_grad():
        expected = [ref.run(n_steps=n)[0][1] for n in (150, 150, 150)]
    twin = tvb_torchfit.from_tvb(sim, batch=2, seed=9)
    with torch.no_grad():
        first = twin.run(n_steps=150)[0][1]
    (second,), _ = _graph_run(twin, (150,), G=twin.params["G"].clone().requires_grad_(True))
    twin.detach_()
    with torch.no_grad():
        third = twin.run(n_steps=150)[0][1]
    for x, e in zip((first, second[0][1].detach(), third), expected):
        assert torch.equal(x, e)


def _checkpoint_grads(**kw):
    sim = _stoch_sim()
    twin = tvb_torchfit.TorchSimulator(tvb_torchfit.simulator.adapter.read_simulator(sim), batch=2, seed=3, block=4, **kw)
    nsig = torch.tensor([1e-4], dtype=torch.float64, requires_grad=True)
    w_p = torch.full((5,), 1.3, dtype=torch.float64, requires_grad=True)
    twin.set_param("noise.nsig", nsig)
    twin.set_param("w_p", w_p)
    outs, G = _graph_run(twin, (41, 30))           # two runs through one graph (no detach in between)
    loss = sum((x ** 2).sum() for out in outs for _, x in out) + twin.state.sum()
    loss.backward()
    return [x.detach() for out in outs for _, x in out], (G.grad, nsig.grad, w_p.grad), twin


def test_checkpointed_backward_equals_autograd():
    """checkpoint=True: blocks run without a graph and are recomputed in the backward; same outputs,
    same gradients (here through two runs and through the history carried between them)."""
    ref_out, ref_grads, _ = _checkpoint_grads(checkpoint=False)
    out, grads, twin = _checkpoint_grads(checkpoint=True, kernel=False)
    assert twin.checkpoint
    for x, y in zip(out, ref_out):
        assert torch.equal(x, y)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=0)


def test_checkpoint_refused_in_exact_mode():
    with pytest.raises(ValueError, match="checkpoint"):
        tvb_torchfit.TorchSimulator(tvb_torchfit.simulator.adapter.read_simulator(_det_sim()), exact=True, checkpoint=True)


def test_compiled_checkpointed_backward_equals_eager_autograd():
    """compile=True (checkpointed backward by default): compiled forward and backward blocks."""
    ref_out, ref_grads, _ = _checkpoint_grads(checkpoint=False)
    out, grads, twin = _checkpoint_grads(compile=True)
    assert twin.compiled and twin.checkpoint
    for x, y in zip(out, ref_out):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=0)


def test_failed_compilation_falls_back_to_eager_with_a_warning():
    from torch._inductor.exc import CppCompileError
    from tvb_torchfit.simulator.compiled import CompiledOrEager

    def broken(*args):
        raise CppCompileError(["g++"], "internal compiler error")
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.1, nsig=1e-4), (monitors.Raw(),),
                conn=small_connectivity(5), a=0.2)
    (_, eager), = tvb_torchfit.from_tvb(sim, block=4, seed=3).run(n_steps=41)
    twin = tvb_torchfit.from_tvb(sim, block=4, seed=3, compile=True)
    block = twin.paths.free.compiled_block
    assert isinstance(block, CompiledOrEager) and twin.compiled_calls() == {"forward block": block}
    block.compiled = broken
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        (_, x), = twin.run(n_steps=41)
    torch.testing.assert_close(x, eager, rtol=0, atol=1e-12)
    assert block.error is not None


def _subset_grads(grad_names, **kw):
    """Two runs through one graph with only the parameters ``grad_names`` requiring grad (the others set to
    the same values as constants); "state" makes the start state require grad. Outputs and gradients."""
    sim = _stoch_sim()
    twin = tvb_torchfit.TorchSimulator(tvb_torchfit.simulator.adapter.read_simulator(sim), batch=2, seed=3, block=4, **kw)
    values = {"G": torch.tensor([[1.5], [2.0]], dtype=torch.float64),
              "w_p": torch.linspace(1.2, 1.4, 5, dtype=torch.float64),
              "noise.nsig": torch.tensor([1e-4], dtype=torch.float64),
              "J_i": torch.tensor([[0.9], [1.1]], dtype=torch.float64)}
    leaves = {}
    for name, v in values.items():
        if name in grad_names:
            v = leaves[name] = v.clone().requires_grad_(True)
        twin.set_param(name, v)
    if "state" in grad_names:
        twin.state = leaves["state"] = twin.state.clone().requires_grad_(True)
    outs = [twin.run(n_steps=n) for n in (41, 30)]
    loss = sum((x ** 2).sum() for out in outs for _, x in out) + twin.state.sum()
    grads = torch.autograd.grad(loss, [leaves[n] for n in grad_names])
    return [x.detach() for out in outs for _, x in out], grads, twin


_SUBSETS = [("G",), ("w_p", "noise.nsig"), ("noise.nsig",), ("J_i", "G"), ("state",)]


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("grad_names", _SUBSETS, ids=["+".join(s) for s in _SUBSETS])
def test_checkpointed_backward_with_a_subset_of_parameters_requiring_grad(grad_names, compile):
    """The checkpointed backward differentiates only the parameters that require grad (one block vjp per
    set; the noise scale only when nsig requires grad): same gradients as plain autograd for every subset,
    the noise-scale gradient alone or beside a model parameter, and none at all (start state only)."""
    ref_out, ref_grads, _ = _subset_grads(grad_names, checkpoint=False)
    out, grads, twin = _subset_grads(grad_names, checkpoint=True, compile=compile, kernel=False)
    if compile:                                    # the compiled block vjp ran (no eager fallback)
        vjps = twin.paths.graph.compiled_vjps
        assert vjps and all(f.error is None for f in vjps.values())
    for x, y in zip(out, ref_out):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12 if compile else 0)
    for name, g, r in zip(grad_names, grads, ref_grads):
        assert g.shape == r.shape, name
        assert torch.count_nonzero(r) > 0, name
        torch.testing.assert_close(g, r, rtol=1e-9 if compile else 1e-12, atol=0, msg=name)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_checkpointed_backward_chunks_independent_of_forward_blocks(compile):
    """The checkpointed backward recomputes chunks of ``backward_block`` steps that need not coincide with the
    forward blocks (here blocks of 6, chunks of 4, runs of 41 and 30 steps: remainders on both sides)."""
    def grads(**kw):
        sim = _stoch_sim()
        twin = tvb_torchfit.TorchSimulator(tvb_torchfit.simulator.adapter.read_simulator(sim), batch=2, seed=3, block=6, **kw)
        nsig = torch.tensor([1e-4], dtype=torch.float64, requires_grad=True)
        twin.set_param("noise.nsig", nsig)
        outs, G = _graph_run(twin, (41, 30))
        loss = sum((x ** 2).sum() for out in outs for _, x in out) + twin.state.sum()
        loss.backward()
        return [x.detach() for out in outs for _, x in out], (G.grad, nsig.grad), twin
    ref_out, ref_grads, _ = grads(checkpoint=False)
    out, got, twin = grads(checkpoint=True, compile=compile, kernel=False)
    assert twin.block == 6 and twin.paths.graph.backward_block == 4
    if compile:
        vjps = twin.paths.graph.compiled_vjps
        assert vjps and all(f.error is None for f in vjps.values())
    for x, y in zip(out, ref_out):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12 if compile else 0)
    for g, r in zip(got, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9 if compile else 1e-12, atol=0)


@pytest.mark.parametrize("noise", ["torch", "tvb"])
def test_checkpointed_backward_replays_the_noise_per_segment(noise):
    """The checkpointed backward redraws the noise segment by segment from stream snapshots (not kept from the
    forward): with segments of a few blocks (several per run), gradients equal plain autograd's, for both
    noise sources, and the simulator's own stream continues as without checkpointing."""
    short = CheckpointOptions(segment_steps=8)            # blocks of 6, chunks of 4: segments of 2 blocks

    def grads(**kw):
        sim = _stoch_sim()
        twin = tvb_torchfit.TorchSimulator(tvb_torchfit.simulator.adapter.read_simulator(sim), batch=2, seed=3, block=6,
                                           noise=noise, **kw)
        nsig = torch.tensor([1e-4], dtype=torch.float64, requires_grad=True)
        twin.set_param("noise.nsig", nsig)
        outs, G = _graph_run(twin, (41, 30))
        loss = sum((x ** 2).sum() for out in outs for _, x in out) + twin.state.sum()
        loss.backward()
        with torch.no_grad():
            after = twin.run(n_steps=20)[0][1]                # the stream continues where the runs left it
        return [x.detach() for out in outs for _, x in out] + [after], (G.grad, nsig.grad), twin
    assert segment_blocks(6, 4, 8) == 2
    ref_out, ref_grads, _ = grads(checkpoint=False)
    out, got, twin = grads(checkpoint=short, kernel=False)
    assert twin.checkpoint and twin.paths.graph.segment_blocks == 2
    for x, y in zip(out, ref_out):
        assert torch.equal(x, y)
    for g, r in zip(got, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=0)


def test_backward_chunks_cover_every_step_once_last_first():
    """The backward's partition: segments of ``seg`` blocks, last first, each cut into chunks of at most
    ``backward_block`` steps from its end; together every step exactly once, in reverse order."""
    blocks = (6, 6, 6, 6, 6, 5)
    order = [(j, start, chunks) for j, start, chunks in backward_chunks(blocks, 2, 4)]
    assert [(j, start) for j, start, _ in order] == [(4, 24), (2, 12), (0, 0)]
    assert order[0][2] == [(31, 4), (27, 4), (24, 3)]                  # 11 steps: 4 + 4 + a first 3
    steps = [t for _, _, chunks in order for s, K in chunks for t in reversed(range(s, s + K))]
    assert steps == list(reversed(range(sum(blocks))))
    assert all(K <= 4 for _, _, chunks in order for _, K in chunks)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_checkpointed_run_in_several_autograd_groups_equals_autograd(compile):
    """A checkpointed run is a chain of autograd nodes of ``group_steps`` steps (here 12: runs of 41 and 30
    steps in 4 and 3 groups, blocks of 6 straddling no group, chunks of 4): same outputs, same gradients,
    through the state and history handed from group to group and from run to run."""
    def grads(**kw):
        sim = _stoch_sim()
        twin = tvb_torchfit.TorchSimulator(tvb_torchfit.simulator.adapter.read_simulator(sim), batch=2, seed=3, block=6, **kw)
        nsig = torch.tensor([1e-4], dtype=torch.float64, requires_grad=True)
        w_p = torch.full((5,), 1.3, dtype=torch.float64, requires_grad=True)
        twin.set_param("noise.nsig", nsig)
        twin.set_param("w_p", w_p)
        outs, G = _graph_run(twin, (41, 30))
        loss = sum((x ** 2).sum() for out in outs for _, x in out) + twin.state.sum()
        loss.backward()
        return [x.detach() for out in outs for _, x in out], (G.grad, nsig.grad, w_p.grad), twin
    ref_out, ref_grads, _ = grads(checkpoint=False)
    out, got, twin = grads(checkpoint=CheckpointOptions(group_steps=12), compile=compile, kernel=False)
    assert twin.checkpoint and twin.paths.graph.group_steps == 12
    for x, y in zip(out, ref_out):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12 if compile else 0)
    for g, r in zip(got, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9 if compile else 1e-12, atol=0)


def test_public_block_seams_step_as_run_does():
    """What benchmarks/profile_block.py drives: ``block_params()``, ``history_ring`` and
    ``paths.free.forward_block`` step the twin exactly as ``run`` does (same state, same history); the torch ring path (``kernel=False``)."""
    sim = _stoch_sim()
    ref, twin = (tvb_torchfit.from_tvb(sim, block=4, seed=2, kernel=False) for _ in range(2))
    with torch.no_grad():
        ref.run(n_steps=40)
        ref.run(n_steps=4)
        twin.run(n_steps=40)
    params, ring = twin.block_params(), twin.history_ring
    ring.make_room(4)
    states = twin.paths.free.forward_block(ring, twin.state, twin.noise.draw(4), params.noise_scale,
                                           params.packed, 4)
    assert torch.equal(states[-1], ref.state)
    assert torch.equal(ring.window().reshape(-1), ref.history)
    assert params.packed.shape[0] == len(twin.packed_names) == len(twin.params) - 1
