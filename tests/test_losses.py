"""FC, FCD, their losses and distances, priors, target validation (tvb_torchfit.inference.losses).

References are numpy/scipy computations written independently here; gradients are checked with
torch.autograd.gradcheck on small float64 inputs, including a constant (zero-variance) node.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import ks_2samp, pearsonr, wasserstein_distance

from tvb_torchfit.errors import ParameterError
from tvb_torchfit.inference.objective import combine
from tvb_torchfit.inference.losses import (bold_variance, check_target_fc, fc, fc_corr, fcd, fcd_distance, fcd_values,
                                 gaussian_prior, ks_statistic, loss_log_corr, loss_log_variance, loss_neg_corr,
                                 loss_rmse, upper)

F64 = torch.float64


def _bold(shape, seed=0):
    """Correlated random BOLD-like data (..., time, nodes) as a float64 tensor."""
    rng = np.random.RandomState(seed)
    x = rng.randn(*shape)
    x = x + 0.7 * x[..., :1]                              # shared component: non-trivial FC
    return torch.tensor(x, dtype=F64)


def _np_fcd(x: np.ndarray, window: int, step: int) -> np.ndarray:
    """Straightforward FCD of one (time, nodes) array: loop over windows, corrcoef, corrcoef."""
    n_time, n = x.shape
    iu = np.triu_indices(n, 1)
    vecs = [np.corrcoef(x[s:s + window].T)[iu] for s in range(0, n_time - window + 1, step)]
    return np.corrcoef(np.array(vecs))


# ---------------------------------------------------------------------------------------------- fc

def test_fc_matches_numpy_corrcoef_with_batch_axes():
    x = _bold((2, 3, 40, 6))
    got = fc(x)
    assert got.shape == (2, 3, 6, 6)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(got[i, j].numpy(), np.corrcoef(x[i, j].numpy().T), atol=1e-7)


def test_fc_accepts_numpy_and_is_scale_invariant():
    x = _bold((30, 5), seed=1)
    np.testing.assert_allclose(fc(x.numpy()).numpy(), fc(x).numpy(), atol=0)
    np.testing.assert_allclose(fc(1e-6 * x + 3.0).numpy(), fc(x).numpy(), atol=1e-12)


def test_fc_constant_node_gives_zero_correlation_and_unit_diagonal():
    x = _bold((25, 4), seed=2)
    x[:, 2] = 0.3
    c = fc(x)
    assert torch.isfinite(c).all()
    assert torch.all(c[2, [0, 1, 3]] == 0) and torch.all(c[[0, 1, 3], 2] == 0)
    assert torch.all(torch.diagonal(c) == 1)
    assert torch.all(fc(torch.ones(10, 3, dtype=F64)) == torch.eye(3, dtype=F64))   # all constant


def test_fc_gradcheck_including_a_constant_node():
    x = _bold((12, 4), seed=3)
    x[:, 1] = 0.5
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(fc, (x,))


@settings(deadline=None, max_examples=30)
@given(arrays(np.float64, st.tuples(st.integers(2, 10), st.integers(1, 6)),
              elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)))
def test_fc_property_symmetric_unit_diagonal_bounded(x):
    c = fc(x)
    assert c.shape == (x.shape[1], x.shape[1])
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c, c.T, rtol=0, atol=1e-12)
    assert torch.all(torch.diagonal(c) == 1)
    assert c.min() >= -1 and c.max() <= 1


# ------------------------------------------------------------------------------------ upper, fc_corr

def test_upper_order_and_batch():
    m = torch.arange(16, dtype=F64).reshape(4, 4)
    iu = np.triu_indices(4, 1)
    np.testing.assert_array_equal(upper(m).numpy(), m.numpy()[iu])
    assert upper(torch.zeros(2, 3, 5, 5)).shape == (2, 3, 10)


def test_fc_corr_matches_scipy_pearsonr_batched():
    sims = fc(_bold((3, 40, 7), seed=4))
    target = fc(_bold((40, 7), seed=5))
    r = fc_corr(sims, target)
    assert r.shape == (3,)
    iu = np.triu_indices(7, 1)
    for b in range(3):
        ref = pearsonr(sims[b].numpy()[iu], target.numpy()[iu])[0]
        assert abs(r[b].item() - ref) < 1e-7
    assert abs(fc_corr(sims[0], target.numpy()).item() - r[0].item()) < 1e-15   # numpy target


def test_losses_at_known_values():
    c = fc(_bold((50, 6), seed=6))
    assert abs(loss_neg_corr(c, c).item() + 1) < 1e-7
    assert abs(loss_log_corr(c, c).item()) < 1e-7
    assert loss_rmse(c, c).item() == 0
    other = fc(_bold((50, 6), seed=7))
    r = fc_corr(c, other).item()
    assert abs(loss_log_corr(c, other).item() + np.log(0.5 + 0.5 * r)) < 1e-12
    iu = np.triu_indices(6, 1)
    rmse = np.sqrt(np.mean((c.numpy()[iu] - other.numpy()[iu]) ** 2))
    assert abs(loss_rmse(c, other).item() - rmse) < 1e-12
    # batched: one value per member
    assert loss_log_corr(torch.stack((c, other)), c).shape == (2,)


def test_bold_variance_and_log_variance_loss():
    x = _bold((3, 40, 5), seed=8)
    np.testing.assert_allclose(bold_variance(x).numpy(), np.var(x.numpy(), axis=1), rtol=1e-12)
    v = bold_variance(x[0])
    assert loss_log_variance(v, v).item() == 0
    w = v * torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0], dtype=F64)
    assert abs(loss_log_variance(w, v).item() - 2 * np.log(2.0) ** 2 / 5) < 1e-12
    assert loss_log_variance(bold_variance(x), v).shape == (3,)
    with pytest.raises(ParameterError, match="var_target has 1 non-positive"):
        loss_log_variance(v, torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0], dtype=F64))
    with pytest.raises(ParameterError, match="at least 2 time points"):
        bold_variance(x[:, :1])


def test_loss_gradients_finite_at_degenerate_points():
    c = fc(_bold((30, 5), seed=8))
    for loss in (loss_neg_corr, loss_log_corr, loss_rmse):
        sim = c.clone().requires_grad_(True)
        loss(sim, c).backward()
        assert torch.isfinite(sim.grad).all(), loss.__name__
    flat = torch.eye(5, dtype=F64, requires_grad=True)             # constant simulated FC
    value = loss_log_corr(flat, c)
    value.backward()
    assert abs(value.item() - np.log(2)) < 1e-12 and torch.isfinite(flat.grad).all()


def test_gradcheck_fc_corr_and_loss_log_corr():
    sim = fc(_bold((20, 5), seed=9)).requires_grad_(True)
    target = fc(_bold((20, 5), seed=10))
    assert torch.autograd.gradcheck(lambda s: fc_corr(s, target), (sim,))
    assert torch.autograd.gradcheck(lambda s: loss_log_corr(s, target), (sim,))
    bold = _bold((15, 4), seed=11).requires_grad_(True)             # through fc as well
    assert torch.autograd.gradcheck(lambda x: loss_log_corr(fc(x), target[:4, :4]), (bold,))


# ---------------------------------------------------------------------------------------------- FCD

@pytest.mark.parametrize("window,step", [(10, 3), (8, 8), (20, 1)])
def test_fcd_matches_numpy_reference(window, step):
    x = _bold((2, 47, 5), seed=12)
    got = fcd(x, window, step)
    for b in range(2):
        ref = _np_fcd(x[b].numpy(), window, step)
        assert got[b].shape == ref.shape
        np.testing.assert_allclose(got[b].numpy(), ref, atol=1e-7)
    w = got.shape[-1]
    assert fcd_values(x, window, step).shape == (2, w * (w - 1) // 2)


def test_fcd_gradcheck():
    x = _bold((16, 4), seed=13).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda b: fcd_values(b, 6, 3), (x,))


@pytest.mark.parametrize("n,m", [(40, 40), (30, 17)])
def test_wasserstein_matches_scipy(n, m):
    rng = np.random.RandomState(14)
    a, b = rng.randn(n), 0.5 * rng.randn(m) + 0.3
    got = fcd_distance(torch.tensor(a), torch.tensor(b), kind="wasserstein").item()
    assert abs(got - wasserstein_distance(a, b)) < 1e-12


def test_wasserstein_batched_and_zero_for_identical():
    rng = np.random.RandomState(15)
    a = torch.tensor(rng.randn(3, 20))
    b = torch.tensor(rng.randn(25))
    d = fcd_distance(a, b)
    assert d.shape == (3,)
    for i in range(3):
        assert abs(d[i].item() - wasserstein_distance(a[i].numpy(), b.numpy())) < 1e-12
    assert fcd_distance(b, b.flip(0)).item() == 0


def test_smooth_ks_approaches_scipy_as_temperature_goes_to_zero():
    rng = np.random.RandomState(16)
    a, b = rng.randn(50), rng.randn(35) + 0.4
    ref = ks_2samp(a, b).statistic
    errors = [abs(fcd_distance(torch.tensor(a), torch.tensor(b), kind="ks", temperature=t).item() - ref)
              for t in (0.3, 0.03, 1e-3, 1e-9)]
    assert errors[-1] < 1e-9
    assert errors[0] > errors[1] > errors[-1]
    assert abs(ks_statistic(torch.tensor(a), b) - ref) < 1e-15


def test_smooth_ks_thinned_grid_and_batch():
    rng = np.random.RandomState(17)
    a, b = torch.tensor(rng.randn(2, 300)), torch.tensor(rng.randn(300) + 0.2)
    d = fcd_distance(a, b, kind="ks", temperature=1e-9, n_grid=64)
    assert d.shape == (2,)
    for i in range(2):                                   # a subset of grid points: a lower bound
        ref = ks_2samp(a[i].numpy(), b.numpy()).statistic
        assert 0.7 * ref < d[i].item() <= ref + 1e-12


def test_smooth_ks_chunked_argmax_equals_plain_max_over_grid():
    from tvb_torchfit.stats import _smooth_cdf_gap, _smooth_ks
    rng = np.random.RandomState(22)
    a = torch.tensor(rng.randn(3, 40), requires_grad=True)
    b = torch.tensor(rng.randn(25) + 0.3)
    got = _smooth_ks(a, b, 0.05, n_grid=1000, chunk=7)       # 1-element chunks
    pooled = torch.sort(torch.cat((a, b.expand(3, 25)), dim=-1), dim=-1).values
    grid = 0.5 * (pooled[..., 1:] + pooled[..., :-1])
    ref = _smooth_cdf_gap(grid, a, b.expand(3, 25), 0.05).amax(dim=-1)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-15)
    (g_got,), (g_ref,) = (torch.autograd.grad(v.sum(), a) for v in (got, ref))
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["wasserstein", "ks"])
def test_gradcheck_fcd_distance(kind):
    rng = np.random.RandomState(18)
    a = torch.tensor(rng.randn(9), requires_grad=True)
    b = torch.tensor(rng.randn(7) + 0.2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: fcd_distance(x, y, kind=kind, temperature=0.5), (a, b))


def test_fcd_distance_end_to_end_gradient_from_bold():
    bold = _bold((2, 40, 5), seed=19).requires_grad_(True)
    target = fcd_values(_bold((40, 5), seed=20), 10, 5)
    for kind in ("wasserstein", "ks"):
        bold.grad = None
        fcd_distance(fcd_values(bold, 10, 5), target, kind=kind).sum().backward()
        assert torch.isfinite(bold.grad).all() and bold.grad.abs().sum() > 0


# --------------------------------------------------------------------------------- prior, combine

def test_gaussian_prior():
    v = torch.tensor([[1.0, 2.0], [0.0, 4.0]], dtype=F64, requires_grad=True)
    p = gaussian_prior(v, torch.tensor([1.0, 2.0], dtype=F64), 2.0)
    assert abs(p.item() - 0.5 * (0.25 + 1.0)) < 1e-15
    p.backward()
    torch.testing.assert_close(v.grad, (v.detach() - torch.tensor([1.0, 2.0], dtype=F64)) / 4)
    assert gaussian_prior(v, 0.0, 1.0, dim=-1).shape == (2,)
    with pytest.raises(ParameterError, match=r"sd must be > 0.*1 of its 2"):
        gaussian_prior(v, 0.0, torch.tensor([1.0, 0.0], dtype=F64))


def test_combine():
    terms = {"fc": torch.tensor(2.0), "fcd": torch.tensor([1.0, 3.0]), "logged": torch.tensor(100.0)}
    torch.testing.assert_close(combine(terms, {"fc": 1.0, "fcd": 0.5}), torch.tensor([2.5, 3.5]))
    with pytest.raises(ParameterError, match=r"'prior' has no term.*'fc', 'fcd', 'logged'"):
        combine(terms, {"fc": 1.0, "prior": 0.1})
    with pytest.raises(ParameterError, match="empty"):
        combine(terms, {})
    with pytest.raises(ParameterError, match=r"weight 'fc' must be a finite number"):
        combine(terms, {"fc": float("nan")})
    with pytest.raises(ParameterError, match=r"term 'fc'.*1 NaN"):
        combine({"fc": torch.tensor(float("nan"))}, {"fc": 1.0})


# ------------------------------------------------------------------------------------ validation

def _good_fc(n=6):
    return np.corrcoef(np.random.RandomState(21).randn(30, n).T)


def test_check_target_fc_accepts_and_returns_float64_copy():
    a = _good_fc().astype(np.float32)
    t = check_target_fc(a, 6)
    assert isinstance(t, torch.Tensor) and t.dtype == F64 and t.shape == (6, 6)
    a[0, 1] = 5.0
    assert t[0, 1].item() != 5.0                           # a copy
    assert check_target_fc(torch.tensor(_good_fc()), 6).dtype == F64


def _bad(kind):
    a = _good_fc()
    if kind == "nan":
        a[0, 1] = a[1, 0] = np.nan
        a[2, 3] = np.inf
    elif kind == "asym":
        a[0, 1] += 0.25
    elif kind == "diag":
        np.fill_diagonal(a, 0.0)
    elif kind == "range":
        a[0, 1] = a[1, 0] = 1.5
    return a


@pytest.mark.parametrize("target,n_nodes,pattern", [
    (np.zeros((3, 3, 3)), 3, r"2-D.*\(3, 3, 3\)"),
    (np.zeros(4), 4, r"2-D"),
    (np.zeros((4, 5)), 4, r"square.*\(4, 5\)"),
    (_good_fc(6), 76, r"6 nodes.*76 nodes"),
    (_bad("nan"), 6, r"2 NaN and 1 inf"),
    (_bad("asym"), 6, r"not symmetric.*0\.25"),
    (_bad("diag"), 6, r"diagonal must be 1.*max \|diag - 1\| = 1"),
    (_bad("range"), 6, r"2 entries are outside \[-1, 1\].*max 1\.5"),
    ([[1.0, 0.0], [0.0, 1.0]], 2, r"numpy array or a torch.Tensor; got list"),
    (_good_fc(6), 0, r"n_nodes must be an integer >= 1"),
], ids=["3d", "1d", "not-square", "node-count", "nan-inf", "asymmetric", "diagonal", "range", "list",
        "n_nodes"])
def test_check_target_fc_errors(target, n_nodes, pattern):
    with pytest.raises(ParameterError, match=pattern):
        check_target_fc(target, n_nodes)


@pytest.mark.parametrize("call,pattern", [
    (lambda: fc(torch.zeros(5)), r"bold must be shaped \(\.\.\., time, nodes\)"),
    (lambda: fc(torch.zeros(1, 4)), r"at least 2 time points"),
    (lambda: fc(torch.tensor([[0.0, float("nan")], [1.0, 2.0]])), r"bold must be finite.*1 NaN and 0 inf"),
    (lambda: fc_corr(torch.eye(4), torch.eye(5)), r"4 nodes but fc_target has 5"),
    (lambda: fc_corr(torch.eye(2), torch.eye(2)), r"at least 3 nodes"),
    (lambda: loss_rmse(torch.zeros(3, 4)[None], torch.eye(3)), r"fc_sim must be shaped"),
    (lambda: fcd(torch.zeros(20, 4), 30, 2), r"window \(30 samples\) is longer than bold \(20"),
    (lambda: fcd(torch.zeros(20, 4), 15, 10), r"at least 2 windows.*1 into 20"),
    (lambda: fcd(torch.zeros(20, 4), 5, 0), r"step must be an integer >= 1; got 0"),
    (lambda: fcd(torch.zeros(20, 4), 5.0, 2), r"window must be an integer"),
    (lambda: fcd_distance(torch.zeros(5), torch.zeros(5), kind="kl"), r"'wasserstein' or 'ks'; got 'kl'"),
    (lambda: fcd_distance(torch.zeros(5), torch.zeros(5), kind="ks", temperature=0),
     r"temperature must be a finite positive"),
    (lambda: fcd_distance(torch.zeros(0), torch.zeros(5)), r"values_sim.*at least one sample"),
    (lambda: ks_statistic(torch.zeros(2, 3), torch.zeros(3)), r"a must be a non-empty 1-D"),
])
def test_argument_errors(call, pattern):
    with pytest.raises(ParameterError, match=pattern):
        call()
