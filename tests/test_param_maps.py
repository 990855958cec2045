"""Parametric heterogeneity: a region-wise parameter given by coefficients on standardised maps
(``Param(maps=...)``, inference/parameters.py)."""
import numpy as np
import pytest
import torch

from tests.test_linear import small_sim
import tvb_torchfit
from tvb_torchfit.analyzers.fic import fic_J_i
from tvb_torchfit.analyzers.linear import linear_bold_fc
from tvb_torchfit.errors import ParameterError
from tvb_torchfit.inference.parameters import Param, ParameterSet
from tvb_torchfit import stats
from tvb_torchfit.simulator.adapter import read_simulator

N = 4
MAPS = np.array([[0.1, 0.5, 0.2, 0.9], [3.0, 1.0, 2.0, 0.0]])


def start(value):
    return {"J_i": torch.as_tensor(np.broadcast_to(value, (N,)).copy(), dtype=torch.float64)}


def test_values_are_the_bounded_map_model_of_the_coefficients():
    ps = ParameterSet({"J_i": Param(0.5, 2.0, maps=MAPS)}, start(1.0), N)
    c = torch.tensor([0.3, -0.7, 0.4], dtype=torch.float64)
    with torch.no_grad():
        ps.theta_0.copy_(c)
    z = (MAPS - MAPS.mean(1, keepdims=True)) / MAPS.std(1, keepdims=True)
    eta = 0.3 - 0.7 * z[0] + 0.4 * z[1]
    np.testing.assert_allclose(ps.numpy()["J_i"], 0.5 + 1.5 / (1 + np.exp(-eta)), rtol=1e-14)
    np.testing.assert_allclose(ps.coefficients()["J_i"], c.numpy())
    assert ps.mapped_names == ("J_i",)


def test_start_coefficients_fit_the_start_values():
    """A global start: c_0 = logit of it, map coefficients 0; a start on the map model is reproduced exactly."""
    ps = ParameterSet({"J_i": Param(0.5, 2.0, maps=MAPS)}, start(1.0), N)
    u = 0.5 / 1.5
    np.testing.assert_allclose(ps.coefficients()["J_i"], [np.log(u / (1 - u)), 0, 0], atol=1e-12)
    z = (MAPS[0] - MAPS[0].mean()) / MAPS[0].std()
    on_model = 0.5 + 1.5 / (1 + np.exp(-(0.2 + 0.5 * z)))
    ps = ParameterSet({"J_i": Param(0.5, 2.0, maps=MAPS[0])}, start(on_model), N)
    np.testing.assert_allclose(ps.coefficients()["J_i"], [0.2, 0.5], atol=1e-10)
    np.testing.assert_allclose(ps.numpy()["J_i"], on_model, rtol=1e-12)


def test_map_coefficient_gradient_passes_gradcheck():
    """d loss / d coefficients through the map model, the bounded transform, FIC-free linear BOLD FC and the FC
    correlation: torch.autograd.gradcheck in float64 (finite differences of the whole chain)."""
    spec = read_simulator(small_sim("ExcInh"))
    J0 = fic_J_i(spec).detach()
    target = stats.fc(torch.randn(200, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ps = ParameterSet({"J_i": Param(0.3, 3.0, maps=MAPS)}, {"J_i": J0}, N)

    def loss(c):
        values = {"J_i": ps.values_from_coefficients_tensor("J_i", c)}
        fc, _ = linear_bold_fc(spec, values)
        return stats.fc_corr(fc, target)
    c0 = ps.theta_0.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (c0,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_fit_reports_coefficients_and_regionwise_values(tmp_path):
    sim = small_sim("ExcInh")
    spec = read_simulator(sim)
    J0 = fic_J_i(spec).detach().numpy()
    sim = tvb_torchfit.apply_params(sim, {"J_i": J0})
    target = stats.fc(torch.randn(300, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).numpy()
    res = tvb_torchfit.fit(sim, target, {"J_i": Param(0.3, 3.0, maps=MAPS, map_names=("myelin", "gradient"))},
                           method="linear", n_steps=4, lr=0.05, progress=False)
    c = res.coefficients["J_i"]
    assert c.shape == (3,)
    assert res.params["J_i"].shape == (N,)
    ps = ParameterSet({"J_i": Param(0.3, 3.0, maps=MAPS)}, {"J_i": torch.as_tensor(J0)}, N)
    np.testing.assert_allclose(res.params["J_i"], ps.values_from_coefficients("J_i", c), rtol=1e-12)
    assert len(res.history["coefficients"]["J_i"]) == 4
    res.save(tmp_path)
    back = tvb_torchfit.FitResult.load(tmp_path)
    np.testing.assert_allclose(back.coefficients["J_i"], c)
    np.testing.assert_allclose(back.history["coefficients"]["J_i"], np.stack(res.history["coefficients"]["J_i"]))


@pytest.mark.parametrize("maps, match", [(MAPS[:, :3], "one per region"), ([[1, 1, 1, 1]], "constant"),
                                         ([[1, np.nan, 2, 3]], "non-finite"), ("abc", "numbers")])
def test_bad_maps_are_refused(maps, match):
    with pytest.raises(ParameterError, match=match):
        ParameterSet({"J_i": Param(0.5, 2.0, maps=maps)}, start(1.0), N)


def test_start_coefficients_are_bit_identical_whatever_the_heap():
    """The start coefficients of a mapped parameter (a least-squares fit of the start values) are the same bits on
    every construction, whatever was allocated before: a resumed fit and a rerun start where the first run did.
    (torch's default CPU driver, gelsy, gave another last bit on ~2 % of calls here.)"""
    rng = np.random.default_rng(3)
    n, maps = 94, rng.standard_normal((3, 94))
    value = {"J_i": torch.as_tensor(0.8 + 0.3 * rng.random(n), dtype=torch.float64)}
    first = ParameterSet({"J_i": Param(0.5, 2.0, maps=maps)}, value, n).coefficients()["J_i"]
    junk = []
    for i in range(300):
        junk.append(torch.empty(int(rng.integers(1, 500)), dtype=torch.float64).fill_(float(rng.standard_normal())))
        again = ParameterSet({"J_i": Param(0.5, 2.0, maps=maps)}, value, n).coefficients()["J_i"]
        np.testing.assert_array_equal(again, first, err_msg=f"construction {i}")
