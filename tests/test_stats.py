"""``stats.autocorrelation`` against an independent reference (numpy, loop over nodes) and a process whose
autocorrelation is known in closed form (AR(1): rho(k) = phi**k)."""
import numpy as np
import pytest
import torch

from tvb_torchfit import stats
from tvb_torchfit.errors import ParameterError


def _reference(x: np.ndarray, lag: int) -> np.ndarray:
    out = []
    for i in range(x.shape[1]):
        d = x[:, i] - x[:, i].mean()
        out.append(np.dot(d[lag:], d[:-lag]) / np.dot(d, d))
    return np.array(out)


@pytest.mark.parametrize("lag", [1, 3, 17])
def test_autocorrelation_matches_numpy_reference_with_batch_axes(lag):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 200, 5)).cumsum(axis=2)
    got = stats.autocorrelation(x, lag).numpy()
    assert got.shape == (2, 3, 5)
    for a in range(2):
        for b in range(3):
            np.testing.assert_allclose(got[a, b], _reference(x[a, b], lag), rtol=1e-7)   # the 1e-8 relative floor


def test_autocorrelation_of_an_ar1_process_is_phi_to_the_lag():
    rng = np.random.default_rng(1)
    phi, n = 0.8, 200_000
    e = rng.standard_normal((n, 2))
    x = np.zeros_like(e)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    for lag in (1, 2, 5):
        np.testing.assert_allclose(stats.autocorrelation(x, lag).numpy(), phi ** lag, atol=0.01)


def test_autocorrelation_constant_node_is_zero_and_gradient_finite():
    x = torch.randn(50, 3, dtype=torch.float64)
    x[:, 1] = 2.0
    x.requires_grad_(True)
    r = stats.autocorrelation(x, 2)
    assert r[1].item() == 0.0
    r.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("lag, shape, what", [(0, (10, 3), "lag"), (10, (10, 3), "shorter"), (1, (10,), "shaped"),
                                              (1.5, (10, 3), "lag")])
def test_autocorrelation_bad_input_is_named(lag, shape, what):
    with pytest.raises(ParameterError, match=what):
        stats.autocorrelation(np.ones(shape), lag)


def test_autocorrelation_refuses_non_finite_bold():
    x = np.random.default_rng(2).standard_normal((20, 3))
    x[4, 1] = np.nan
    with pytest.raises(ParameterError, match="bold"):
        stats.autocorrelation(x, 1)


def _fcd_reference(x: np.ndarray, window: int, step: int) -> np.ndarray:
    iu = np.triu_indices(x.shape[1], 1)
    ups = [np.corrcoef(x[s:s + window].T)[iu] for s in range(0, x.shape[0] - window + 1, step)]
    return np.corrcoef(np.array(ups))


@pytest.mark.parametrize("stretch", [9, 14, 30])
def test_fcd_values_in_stretches_pool_every_stretch(stretch):
    """Against an independent reference: the FCD (numpy) of every stretch of the session that starts on a window
    start, its upper triangle, concatenated; compared as sorted samples (the same multiset of values)."""
    x = np.random.default_rng(3).standard_normal((60, 6)).cumsum(axis=0)
    window, step = 5, 2
    pooled = []
    for start in range(0, x.shape[0] - stretch + 1, step):
        f = _fcd_reference(x[start:start + stretch], window, step)
        pooled.append(f[np.triu_indices(f.shape[0], 1)])
    want = np.sort(np.concatenate(pooled))
    got = np.sort(stats.fcd_values_in_stretches(x, window, step, stretch).numpy())
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_fcd_values_in_stretches_of_the_whole_session_are_its_fcd_values():
    x = np.random.default_rng(4).standard_normal((40, 5))
    np.testing.assert_array_equal(stats.fcd_values_in_stretches(x, 6, 3, 40).numpy(), stats.fcd_values(x, 6, 3).numpy())
    np.testing.assert_array_equal(stats.fcd_values_in_stretches(x, 6, 3, 400).numpy(),
                                  stats.fcd_values(x, 6, 3).numpy())
    with pytest.raises(ParameterError, match="stretch"):
        stats.fcd_values_in_stretches(x, 6, 3, 7)
