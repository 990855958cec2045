"""tvb_torchfit.analyzers.critical: the critical coupling G_c of the FIC state.

Independent check: at G just below and just above the returned G_c, J_i and the FIC state come from
``fic.fic_state`` (itself tested against TVB in test_fic.py), but the Jacobian is taken by central finite
differences of TVB's own numpy ``dfun`` with TVB's Linear coupling (``tvb_network_dfun``), not by our autograd.
"""
import numpy as np
import pytest
import torch

from tests.test_linear import small_sim, tvb_network_dfun
from tvb_torchfit.analyzers import critical, fic
from tvb_torchfit.errors import ParameterError
from tvb_torchfit.simulator.adapter import read_simulator


def tvb_lambda_max(sim, spec, G: float, rate: float = 3.0) -> float:
    J, x = fic.fic_state(spec, {"G": torch.tensor([G], dtype=torch.float64)}, target_rate=rate)
    sim.model.G = np.array([G])
    sim.model.J_i = J.detach().numpy()
    x = x.detach().numpy()
    n, h = x.size, 1e-7
    A = np.empty((n, n))
    for k in range(n):
        e = np.zeros(n)
        e[k] = h
        A[:, k] = ((tvb_network_dfun(sim, x + e.reshape(x.shape)) - tvb_network_dfun(sim, x - e.reshape(x.shape)))
                   / (2 * h)).reshape(-1)
    return float(np.linalg.eigvals(A).real.max())


@pytest.mark.parametrize("rate", [3.0, 2.5])
def test_critical_coupling_is_where_tvbs_jacobian_crosses_zero(rate):
    sim = small_sim("ExcInh")
    spec = read_simulator(sim)
    G_c = critical.critical_coupling(spec, fic_rate=rate, rtol=1e-7)
    assert G_c > 0
    assert tvb_lambda_max(sim, spec, G_c * (1 - 1e-3), rate) < 0
    assert tvb_lambda_max(sim, spec, G_c * (1 + 1e-3), rate) > 0
    assert critical.fic_lambda_max(spec, G_c, rate) < 0


def test_critical_coupling_moves_with_the_coupling_strength():
    """Doubling the Linear coupling's a halves G_c (the product G a enters the model)."""
    spec = read_simulator(small_sim("ExcInh"))
    G1 = critical.critical_coupling(spec, rtol=1e-8)
    G2 = critical.critical_coupling(spec, params={"coupling.a": torch.tensor([2 * float(spec.parameters()["coupling.a"][0])],
                                                                            dtype=torch.float64)}, rtol=1e-8)
    assert G2 == pytest.approx(G1 / 2, rel=1e-6)


def test_no_critical_coupling_below_the_cap_is_a_clear_error():
    spec = read_simulator(small_sim("ExcInh"))
    G_c = critical.critical_coupling(spec)
    with pytest.raises(ParameterError, match="still stable"):
        critical.critical_coupling(spec, start=G_c / 8, cap=G_c / 2)
    with pytest.raises(ParameterError, match="fic_rate"):
        critical.critical_coupling(spec, fic_rate=-1.0)
