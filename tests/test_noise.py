"""Noise: TVB's own stream in TVB's order, seeded torch generators per batch member, and the increment
z = sqrt(dt) * N(0, 1) * sqrt(2 nsig) the twin adds (TVB's ``noise.Additive``)."""
import copy
import os
import time

import numpy as np
import pytest
import torch
from tvb.simulator import integrators, models, monitors
from tvb.simulator import noise as tvb_noise

import tvb_torchfit
from tvb_torchfit.simulator import monitors as monitors_module
from tvb_torchfit.simulator import noise
from tvb_torchfit.simulator.noise import TorchStream, TVBStream, additive_increment, diffusion_scale
from tvb_builders import build, heun_stochastic, small_connectivity


def test_tvb_stream_block_draws_equal_per_step_draws():
    ref = np.random.RandomState(11)
    per_step = np.stack([ref.normal(size=(2, 5, 1))[..., 0] for _ in range(7)])
    stream = TVBStream(np.random.RandomState(11), 0, (2, 5), 1, torch.float64, torch.device("cpu"))
    blocks = torch.cat((stream.draw(3), stream.draw(4)))[..., 0]
    np.testing.assert_array_equal(blocks.numpy(), per_step)


def test_torch_stream_member_independent_of_batch_size():
    one = TorchStream(3, (2, 4), 1, torch.float64, torch.device("cpu")).draw(10)
    four = TorchStream(3, (2, 4), 4, torch.float64, torch.device("cpu")).draw(10)
    assert torch.equal(one[..., 0], four[..., 0])
    assert not torch.equal(four[..., 0], four[..., 1])
    again = TorchStream(3, (2, 4), 4, torch.float64, torch.device("cpu")).draw(10)
    assert torch.equal(four, again)



def test_torch_stream_first_member_continues_a_larger_batch():
    """Members 2 and 3 drawn on their own (first_member=2) are members 2 and 3 of the batch of 4, to the bit."""
    cpu = torch.device("cpu")
    four = TorchStream(3, (2, 4), 4, torch.float64, cpu).draw_blocks(30, 7)
    tail = TorchStream(3, (2, 4), 2, torch.float64, cpu, first_member=2).draw_blocks(30, 7)
    torch.testing.assert_close(tail, four[..., 2:], rtol=0, atol=0)
    assert not torch.equal(tail[..., 0], four[..., 0])


def test_first_member_is_for_the_torch_stream_only():
    from tvb_torchfit.errors import ParameterError
    from tvb_torchfit.simulator.adapter import read_simulator
    from tvb_torchfit.simulator.twin import TorchSimulator
    from tests.test_linear import small_sim
    spec = read_simulator(small_sim("ExcInh"))
    with pytest.raises(ParameterError, match="first_member"):
        TorchSimulator(spec, noise="tvb", first_member=1)
    with pytest.raises(ParameterError, match="first_member"):
        TorchSimulator(spec, first_member=-1)

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_stream_draw_blocks_equal_successive_block_draws(dtype):
    """``draw_blocks(n, K)`` (one buffer, in-place draws per block) gives the numbers of ``draw`` called block by
    block, the last block shorter; blocks of 20 and 3 steps (torch's normal draws 16 at a time above 16 numbers)."""
    for block in (20, 3):
        blocks = TorchStream(5, (2, 7), 3, dtype, torch.device("cpu")).draw_blocks(50, block)
        ref = TorchStream(5, (2, 7), 3, dtype, torch.device("cpu"))
        steps = torch.cat([ref.draw(min(block, 50 - s)) for s in range(0, 50, block)])
        assert torch.equal(blocks, steps)


def _stochastic_sim():
    return build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.1, nsig=1e-4), (monitors.Raw(),),
                 conn=small_connectivity(5), a=0.2)


def test_batch_member_zero_reproduces_tvb_with_tvb_noise():
    sim = _stochastic_sim()
    twin = tvb_torchfit.from_tvb(sim, noise="tvb", exact=True, batch=3)
    (_, x), = twin.run(simulation_length=20.0)
    (_, ref), = sim.run(simulation_length=20.0)
    assert x.shape == (3,) + ref.shape
    np.testing.assert_allclose(x[0].numpy(), ref, rtol=0, atol=1e-13)
    assert (x[1] - x[0]).abs().max() > 1e-4 and (x[2] - x[1]).abs().max() > 1e-4


def _euler_stochastic_sim(nsig, n=5):
    return build(models.ReducedWongWangExcInh(),
                 integrators.EulerStochastic(dt=0.1, noise=tvb_noise.Additive(nsig=nsig, noise_seed=42)),
                 (monitors.Raw(),), conn=small_connectivity(n), a=0.2)


def _twin_increment(sim, **kw) -> torch.Tensor:
    """The increment z the twin adds in one EulerStochastic step, (nvar, N, B): the step from a state far from
    the bounds (S = 0.5) minus the same step with nsig = 0 (X' = X + dt f(X) + z, so the difference is z up to
    the rounding of X + dt f, ~1e-16)."""
    def step(nsig=None):
        twin = tvb_torchfit.from_tvb(sim, **kw)
        if nsig is not None:
            twin.set_param("noise.nsig", nsig)
        twin.state = torch.full_like(twin.state, 0.5)
        twin.run(n_steps=1)
        return twin.state
    return step() - step(0.0)


@pytest.mark.parametrize("nsig", [np.array([1e-4]), np.stack([np.linspace(1e-5, 1e-4, 5)] * 2)],
                         ids=["global", "regionwise"])
def test_increment_is_tvb_additive_generate_times_gfun(nsig):
    """The increment the twin adds is TVB's own: ``Additive.generate`` (sqrt(dt) * N(0, 1) from its stream) times
    ``Additive.gfun`` (sqrt(2 nsig)), computed here by a copy of the TVB noise object of the same simulator.
    A wrong factor (e.g. sqrt(nsig dt)) is off by 30 % of z, ~1e-3 here."""
    sim = _euler_stochastic_sim(nsig)
    tvb = copy.deepcopy(sim.integrator.noise)                       # the stream the twin copies, same state
    tvb.configure_white(sim.integrator.dt)                          # (a deep copy loses the configured dt)
    z_tvb = tvb.generate(sim.current_state.shape) * tvb.gfun(sim.current_state)     # (nvar, N, 1)
    z = _twin_increment(sim, noise="tvb", exact=True)
    np.testing.assert_allclose(z.numpy(), z_tvb, rtol=0, atol=1e-15)
    assert np.abs(z_tvb).max() > 1e-3


def test_increment_variance_is_2_nsig_dt():
    """Torch noise: the twin's increments have mean 0 and variance 2 nsig dt (nsig a diffusion coefficient, as
    TVB's), over 1024 batch members x 2 state variables x 5 nodes; the estimate's own error is ~1.4 %
    (sqrt(2 / 10240)), sqrt(nsig dt) would give a ratio of 0.5."""
    nsig, dt = 1e-4, 0.1
    z = _twin_increment(_euler_stochastic_sim(np.array([nsig])), noise="torch", batch=1024, seed=0)
    ratio = (z.var() / (2 * nsig * dt)).item()
    assert abs(ratio - 1) < 0.05, ratio
    assert abs(z.mean().item()) < 0.05 * np.sqrt(2 * nsig * dt)


def test_scaling_functions_are_tvb_gfun():
    """``noise.diffusion_scale`` is ``Additive.gfun`` and ``additive_increment`` its product with sqrt(dt) N(0,1)."""
    nsig = np.array([[1e-5], [3e-4]])
    tvb = tvb_noise.Additive(nsig=nsig)
    normal = torch.as_tensor(np.random.RandomState(3).normal(size=(2, 4)))
    np.testing.assert_array_equal(diffusion_scale(torch.as_tensor(nsig)).numpy(), tvb.gfun(None))
    np.testing.assert_array_equal(additive_increment(normal, 0.1, torch.as_tensor(nsig)).numpy(),
                                  np.sqrt(0.1) * normal.numpy() * tvb.gfun(None))


def test_seed_reproducible_and_seed_changes_run():
    sim = _stochastic_sim()
    runs = [tvb_torchfit.from_tvb(sim, noise="torch", seed=s).run(simulation_length=10.0)[0][1] for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


# ---------------------------------------------------------------- drawing the next chunk on a second thread
def _ahead_run(monkeypatch, setting):
    monkeypatch.setenv(noise.DRAW_AHEAD_ENV, setting)
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.1, nsig=1e-4),
                (monitors.Raw(), monitors.Bold(period=50.0)), conn=small_connectivity(5), a=0.2)
    twin = tvb_torchfit.from_tvb(sim, seed=3, batch=2)
    out = [twin.run(simulation_length=L) for L in (120.0, 57.3)]
    return out, twin.state_dict()["noise"]


@pytest.mark.skipif(not noise.draw_ahead_enabled(), reason="drawing ahead needs two usable CPUs")
def test_drawing_ahead_gives_the_numbers_drawn_in_turn(monkeypatch):
    """Runs of several kernel chunks with the next chunk's noise drawn on a worker thread: the same outputs, bit
    for bit, and the generators left in the same state as drawing each chunk in turn."""
    monkeypatch.setattr(monitors_module, "MONITOR_CHUNK", 64)            # several chunks per run
    ahead, state_ahead = _ahead_run(monkeypatch, "1")
    in_turn, state_in_turn = _ahead_run(monkeypatch, "0")
    for run_a, run_b in zip(ahead, in_turn):
        for (t, x), (t1, x1) in zip(run_a, run_b):
            assert torch.equal(t, t1) and torch.equal(x, x1)
    assert all(torch.equal(a, b) for a, b in zip(state_ahead["generators"], state_in_turn["generators"]))


class _SlowStream:
    """A stream whose draws take a while and say when they end."""
    def __init__(self):
        self.finished = []

    def draw_blocks(self, T, block):
        time.sleep(0.2)
        self.finished.append(T)
        return torch.zeros(T)


@pytest.mark.skipif(not noise.draw_ahead_enabled(), reason="drawing ahead needs two usable CPUs")
def test_leaving_early_waits_for_the_draw_in_flight():
    """An error while a chunk is stepped: on leaving, the next chunk's draw (already started) has finished, so no
    thread touches the stream afterwards; only this run's chunks are drawn."""
    stream = _SlowStream()
    with pytest.raises(RuntimeError, match="kernel failed"):
        with noise.ChunkDraws(stream, [5, 6, 7], 1) as draws:
            draws.next()
            raise RuntimeError("kernel failed")
    assert stream.finished == [5, 6]
    with noise.ChunkDraws(stream, [1, 2], 1) as draws:
        assert [draws.next().shape[0] for _ in range(2)] == [1, 2]
    assert stream.finished == [5, 6, 1, 2]


def _draw_in_child(_):
    noise._executor()
    if noise._EXECUTOR["pid"] != os.getpid():
        return "the parent's worker"                # drawing with it would wait forever
    stream = _SlowStream()
    with noise.ChunkDraws(stream, [3, 4], 1) as draws:
        return [draws.next().shape[0] for _ in range(2)]


@pytest.mark.skipif(not noise.draw_ahead_enabled(), reason="drawing ahead needs two usable CPUs")
def test_drawing_ahead_works_in_a_forked_child_after_the_parent_drew_ahead():
    """Threads do not survive ``fork``: a child makes its own worker (with the parent's, it would wait forever)."""
    from tvb_torchfit.roundtrip.forked import forked_map
    assert _draw_in_child(None) == [3, 4]                          # the parent's worker exists now
    assert forked_map(_draw_in_child, [0, 1], processes=2) == [[3, 4], [3, 4]]


def test_draw_ahead_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(noise.DRAW_AHEAD_ENV, "0")
    assert not noise.draw_ahead_enabled()
    assert not noise.ChunkDraws(_SlowStream(), [1, 2], 1).ahead
