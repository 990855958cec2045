"""Noise sources: TVB's own stream in TVB's order, and seeded torch generators per batch member."""
import numpy as np
import torch
from tvb.simulator import models, monitors

import tvb_torchfit
from tvb_torchfit.simulator.noise import TorchStream, TVBStream
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


def test_torch_noise_statistics_match_tvb_convention():
    """Increment std = sqrt(2 nsig dt): a free S with bounds far away diffuses as TVB's would."""
    sim = _stochastic_sim()
    twin = tvb_torchfit.from_tvb(sim, noise="torch", batch=256)
    z = twin.noise.draw(200)
    assert abs(z.std().item() - 1.0) < 0.01 and abs(z.mean().item()) < 0.01


def test_seed_reproducible_and_seed_changes_run():
    sim = _stochastic_sim()
    runs = [tvb_torchfit.from_tvb(sim, noise="torch", seed=s).run(simulation_length=10.0)[0][1] for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
