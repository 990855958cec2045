"""tvb_torchfit.analyzers.linear.linear_fc_batch (and analyzers.network's stacked networks): B networks with their
own weights and values in one pass equal each network computed alone by ``linear_fc`` (values and gradients);
a network without a stable fixed point gets the error ``linear_fc`` raises for it, the others their FC."""
import warnings

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", module="tvb")
from tvb.simulator import models, monitors  # noqa: E402

from tests import tvb_builders as tb  # noqa: E402
from tvb_torchfit.analyzers import linear  # noqa: E402
from tvb_torchfit.analyzers.network import UnstableFixedPointError, network_jacobian, stack_networks  # noqa: E402
from tvb_torchfit.errors import ParameterError  # noqa: E402
from tvb_torchfit.simulator.adapter import read_simulator  # noqa: E402


def spec(seed: int, n: int = 5):
    sim = tb.build(model=models.ReducedWongWangExcInh(G=np.array([0.2])), conn=tb.small_connectivity(n, seed=seed),
                   a=1.0, integrator=tb.heun_stochastic(dt=1.0, nsig=1e-4), mons=(monitors.Bold(period=720.0),))
    return read_simulator(sim)


SPECS = [spec(s) for s in (1, 2, 3)]
VALUES = [{"G": 0.15, "w_p": 1.3, "noise.nsig": 1e-4}, {"G": 0.22, "w_p": 1.1, "noise.nsig": 3e-4},
          {"G": 0.18, "w_p": 1.4, "noise.nsig": 2e-4}]
REGIONWISE_J = [np.linspace(0.9, 1.1, 5), np.full(5, 1.0), np.linspace(1.1, 0.95, 5)]


def leaves(k: int):
    """Subject k's values as leaf tensors (G, w_p global; J_i and nsig region-wise: a global nsig would cancel in
    FC), requiring grad."""
    v = {name: torch.tensor([x], dtype=torch.float64, requires_grad=True) for name, x in VALUES[k].items()}
    v["J_i"] = torch.tensor(REGIONWISE_J[k], dtype=torch.float64, requires_grad=True)
    v["noise.nsig"] = torch.tensor(VALUES[k]["noise.nsig"] * np.linspace(0.5, 1.5, 5), requires_grad=True)
    return v


def loss(fc, info):
    """A scalar that reads every entry of FC and lambda_max (weights fixed, different per entry)."""
    w = torch.arange(fc.numel(), dtype=torch.float64).reshape(fc.shape) / fc.numel()
    return (w * fc).sum() + info.lambda_max


@pytest.mark.parametrize("bold", [True, False])
def test_batch_equals_each_network_alone(bold):
    alone, grads_alone = [], []
    for k in range(3):
        v = leaves(k)
        fc, info = linear.linear_fc(SPECS[k], v, bold=bold)
        loss(fc, info).backward()
        alone.append((fc.detach(), info))
        grads_alone.append({n: t.grad.clone() for n, t in v.items()})
    vs = [leaves(k) for k in range(3)]
    out = linear.linear_fc_batch([linear.linear_network(SPECS[k], vs[k]) for k in range(3)], bold=bold)
    sum(loss(fc, info) for fc, info in out).backward()
    for k in range(3):
        fc, info = out[k]
        torch.testing.assert_close(fc.detach(), alone[k][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(info.fixed_point.detach(), alone[k][1].fixed_point.detach(), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(info.covariance.detach(), alone[k][1].covariance.detach(), rtol=1e-9, atol=0.0)
        assert float(info.lambda_max.detach()) == pytest.approx(float(alone[k][1].lambda_max.detach()), rel=1e-10)
        for name, t in vs[k].items():
            torch.testing.assert_close(t.grad, grads_alone[k][name], rtol=1e-8, atol=1e-14)
    assert not torch.allclose(out[0][0], out[1][0])                 # the networks do differ


def test_stacked_jacobian_is_each_network_jacobian():
    nets = [linear.linear_network(SPECS[k], VALUES[k]) for k in range(3)]
    xs = [linear.network_fixed_point(n.network).state for n in nets]
    stacked = stack_networks([n.network for n in nets])
    A = network_jacobian(stacked, x=torch.stack(xs, dim=-1), create_graph=False)
    assert A.shape == (3, 10, 10)
    for k in range(3):
        torch.testing.assert_close(A[k], network_jacobian(nets[k].network, x=xs[k], create_graph=False),
                                   rtol=1e-14, atol=1e-15)


def test_an_unstable_network_fails_alone_and_warm_starts_are_per_network():
    # isolated bistable nodes (w_p 3, J_i 2.2, G 0): Newton started next to the saddle converges to it
    unstable = dict(VALUES[1], G=0.0, w_p=3.0, J_i=2.2)
    middle = torch.tensor([[0.35] * 5, [0.056] * 5], dtype=torch.float64)
    with pytest.raises(UnstableFixedPointError) as alone:
        linear.linear_fc(SPECS[1], unstable, initial=middle)
    x0 = linear.network_fixed_point(SPECS[2], VALUES[2]).state.detach()
    nets = [linear.linear_network(SPECS[0], VALUES[0]), linear.linear_network(SPECS[1], unstable),
            linear.linear_network(SPECS[2], VALUES[2])]
    out = linear.linear_fc_batch(nets, initial=[None, middle, x0 + 1e-3])
    assert isinstance(out[1], UnstableFixedPointError) and str(out[1]) == str(alone.value)
    for k in (0, 2):
        torch.testing.assert_close(out[k][0], linear.linear_fc(SPECS[k], VALUES[k])[0], rtol=1e-10, atol=1e-12)


def test_networks_that_differ_are_not_stacked():
    other = spec(4, n=6)
    with pytest.raises(ParameterError, match=r"6 nodes\) cannot be stacked.*5 nodes"):
        linear.stack_linear([linear.linear_network(SPECS[0]), linear.linear_network(other)])
    with pytest.raises(ParameterError, match="takes one network"):
        linear.network_fixed_point(stack_networks([linear.linear_network(s).network for s in SPECS[:2]]))
