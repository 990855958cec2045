"""tvb_torchfit.analyzers.bifurcation: low fixed point, local Jacobian eigenvalues, penalty and fold curve.

References come from TVB itself, never from numbers the code under test produced: fixed points are roots
of TVB's own numpy ``_numpy_dfun`` found by ``scipy.optimize.root``, Jacobians are finite differences of it
and their eigenvalues come from ``numpy.linalg.eigvals``; the fold is the root of (dfun = 0, det J = 0) in
(S_e, S_i, J_i), again with scipy on TVB's dfun; and the fold curve is checked with real TVB ``Simulator``
runs (deterministic Heun, dt 1 ms, 2 s) on either side of it, from a low start (all S = 0.05).
"""
import warnings

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", module="tvb")
from tvb.datatypes.connectivity import Connectivity  # noqa: E402
from tvb.simulator import coupling, integrators, models, monitors, simulator  # noqa: E402

from scipy import optimize  # noqa: E402

from tvb_torchfit.analyzers import bifurcation as bf  # noqa: E402
from tvb_torchfit.simulator import read_simulator  # noqa: E402
from tvb_torchfit.simulator.models import ReducedWongWang, ReducedWongWangExcInh  # noqa: E402

EI = ReducedWongWangExcInh
T64 = dict(dtype=torch.float64)


def t(x):
    return torch.tensor(x, **T64)


# ----------------------------------------------------------------------------------------------- helpers
def tvb_model(port, params, n, b=0):
    """A TVB model with the given parameters of batch member b (region-wise arrays of length n), TVB's
    defaults for the others."""
    kw = {}
    for name in params:
        v = params[name].detach().numpy()
        v = v[:, b if v.shape[1] > 1 else 0]
        kw[name] = np.broadcast_to(v, (n,)).astype(np.float64).copy()
    m = port.tvb_class(**kw)
    m.configure()
    return m


def tvb_fd_jacobian(model, state, c, h=1e-6):
    """Central finite differences of TVB's _numpy_dfun(state (nvar, N), coupling (1, N)): (N, nvar, nvar)."""
    nvar, n = state.shape
    J = np.zeros((n, nvar, nvar))
    for j in range(nvar):
        e = np.zeros_like(state)
        e[j] = h
        d = (model._numpy_dfun(state + e, c) - model._numpy_dfun(state - e, c)) / (2 * h)   # (nvar, N)
        J[:, :, j] = d.T
    return J


def run_tvb(w_p, J_i, weights, a=0.0, G=0.0, start=0.05, length=2000.0):
    """Deterministic TVB run (Heun, dt 1 ms) of ExcInh from all S = start; returns S_e (time, nodes)."""
    n = weights.shape[0]
    conn = Connectivity(weights=np.asarray(weights, float), tract_lengths=np.zeros((n, n)),
                        region_labels=np.array([f"r{i}" for i in range(n)]), centres=np.zeros((n, 3)),
                        speed=np.array([3.0]))
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh(w_p=np.array([w_p]), J_i=np.array([J_i]), G=np.array([G])),
        connectivity=conn, coupling=coupling.Linear(a=np.array([a]), b=np.array([0.0])),
        integrator=integrators.HeunDeterministic(dt=1.0), monitors=(monitors.Raw(),),
        initial_conditions=np.full((1, 2, n, 1), start), simulation_length=length).configure()
    (_, x), = sim.run()
    return x[:, 0, :, 0]


def tvb_excinh(**params):
    """TVB's ReducedWongWangExcInh with scalar parameters (TVB defaults for the rest)."""
    m = models.ReducedWongWangExcInh(**{k: np.array([float(v)]) for k, v in params.items()})
    m.configure()
    return m


def tvb_node_dfun(m, x, c0=0.0, gain=0.0):
    """TVB's _numpy_dfun of one node at x (2,), coupling input c = gain * S_e + c0 (the mean-field closure)."""
    x = np.asarray(x, dtype=np.float64).reshape(2, 1)
    return m._numpy_dfun(x, np.array([[gain * x[0, 0] + c0]]))[:, 0]


def tvb_node_jacobian(m, x, h=1e-6, **inp):
    """Central finite differences of ``tvb_node_dfun`` (the mean-field feedback included)."""
    J = np.zeros((2, 2))
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        J[:, j] = (tvb_node_dfun(m, x + e, **inp) - tvb_node_dfun(m, x - e, **inp)) / (2 * h)
    return J


def tvb_low_state(m, **inp):
    """(lambda_max, fixed point) of one node: scipy root of TVB's dfun from the low start (0.05, 0.05),
    numpy eigenvalues of the finite-difference Jacobian there."""
    sol = optimize.root(lambda x: tvb_node_dfun(m, x, **inp), [0.05, 0.05], tol=1e-15)
    assert np.abs(sol.fun).max() < 1e-15
    return np.linalg.eigvals(tvb_node_jacobian(m, sol.x, **inp)).real.max(), sol.x


def tvb_fold(w_p, J_guess, **params):
    """The saddle-node of an isolated node along J_i: scipy root of (dfun = 0, 1e3 det J = 0) in (S_e, S_i, J_i)."""
    def eqs(z):
        m = tvb_excinh(w_p=w_p, J_i=z[2], **params)
        return [*tvb_node_dfun(m, z[:2]), 1e3 * np.linalg.det(tvb_node_jacobian(m, z[:2]))]
    x0 = tvb_low_state(tvb_excinh(w_p=w_p, J_i=J_guess, **params))[1]
    sol = optimize.root(eqs, [x0[0], x0[1], J_guess], tol=1e-14)
    assert sol.success and np.abs(sol.fun).max() < 1e-10
    return sol.x[2]


def mean_field_sim():
    from tvb_builders import build, small_connectivity
    return build(model=models.ReducedWongWangExcInh(G=np.array([0.5]), w_p=np.array([0.7])),
                 conn=small_connectivity(4), a=0.1, b=0.001)


def tvb_mean_field_lambda(sim, w_p_values, G, a=None):
    """lambda_max (N, len(w_p_values)) of every node of ``sim`` in the mean-field closure, from TVB's dfun:
    c_k = a (sum_j W_kj) S_e,k + b, with TVB's frozen weights and the simulator's Linear coupling."""
    W = np.asarray(sim.history.weights, dtype=np.float64)
    a = float(sim.coupling.a[0]) if a is None else a
    out = np.zeros((W.shape[0], len(w_p_values)))
    for j, w in enumerate(w_p_values):
        m = tvb_excinh(G=G, w_p=w)
        for k in range(W.shape[0]):
            out[k, j] = tvb_low_state(m, c0=float(sim.coupling.b[0]), gain=a * W[k].sum())[0]
    return out


def band_penalty(lam, target, width):
    lo, hi = target - width, target + width
    return (np.maximum(lo - lam, 0) ** 2 + np.maximum(lam - hi, 0) ** 2) / width ** 2


@pytest.fixture(scope="module")
def curve():
    """The fold J_i*(w_p) of an isolated node (TVB defaults, zero coupling input)."""
    return bf.bifurcation_curve("w_p", [1.0, 3.0], "J_i", (1.5, 2.5), n_y=11)


# ----------------------------------------------------------------------------------------------- fixed point
def test_fixed_point_is_a_root_batched_and_regionwise():
    N, B = 3, 2
    given = dict(w_p=t([[0.7], [1.4], [3.0]]), J_i=t([[1.0, 2.2]]), lamda=t([[0.2]]), G=t([[2.0]]))
    p = bf.default_params(EI, **given)
    c = t([[0.0, 0.05], [0.1, 0.0], [0.02, 0.03]])
    fp = bf.low_fixed_point(EI, p, c)
    assert fp.state.shape == (2, N, B) and fp.state.dtype == torch.float64
    full = p
    for b in range(B):              # a root of TVB's own dfun (TVB's defaults), every node and batch member
        m = tvb_model(EI, given, N, b=b)
        res = m._numpy_dfun(fp.state[:, :, b].numpy(), c[:, b].numpy()[None])
        assert np.abs(res).max() < 1e-12
    assert not fp.vanished.any()
    assert ((fp.state >= 0) & (fp.state <= 1)).all()
    # each batch element equals the same computation done alone
    for n in range(N):
        for b in range(B):
            pe = {k: v[n if v.shape[0] > 1 else 0, b if v.shape[1] > 1 else 0].view(1, 1) for k, v in full.items()}
            single = bf.low_fixed_point(EI, pe, c[n, b].view(1, 1)).state[:, 0, 0]
            assert torch.allclose(single, fp.state[:, n, b], atol=1e-13, rtol=0)
    # it is the *lowest* fixed point: with S_i on its nullcline (solved here with TVB's own dfun),
    # TVB's dS_e/dt is positive everywhere below it
    from scipy.optimize import brentq
    n, b = 2, 1
    m = tvb_model(EI, {k: v[n:n + 1] if v.shape[0] > 1 else v for k, v in given.items()}, 1, b=b)
    cc = np.array([[c[n, b].item()]])
    se = fp.state[0, n, b].item()
    for s in np.linspace(0.0, se * (1 - 1e-6), 30):
        si = brentq(lambda y: m._numpy_dfun(np.array([[s], [y]]), cc)[1, 0], 0.0, 1.0, xtol=1e-15)
        assert m._numpy_dfun(np.array([[s], [si]]), cc)[0, 0] > 0


def test_fixed_point_rww():
    given = dict(w=t([[0.6, 0.9]]), I_o=t([[0.33], [0.3]]))
    fp = bf.low_fixed_point(ReducedWongWang, given, t([[0.0], [0.1]]))
    assert fp.state.shape == (1, 2, 2)
    c = np.array([[0.0, 0.1]])
    for b in range(2):
        m = tvb_model(ReducedWongWang, given, 2, b=b)
        assert np.abs(m._numpy_dfun(fp.state[:, :, b].numpy(), c)).max() < 1e-12


# ----------------------------------------------------------------------------------------------- eigenvalues
@pytest.mark.parametrize("port,over,c", [
    (EI, dict(w_p=[[1.4]], J_i=[[1.0]]), [[0.0], [0.0]]),                               # TVB defaults, G = 0
    (EI, dict(w_p=[[0.7], [3.0]], J_i=[[2.0]], lamda=[[0.3]], I_ext=[[0.01]]), [[0.1], [0.02]]),
    (EI, dict(w_p=[[3.0]], J_i=[[1.995]]), [[0.0], [0.0]]),                             # next to the fold
    (ReducedWongWang, dict(w=[[0.6], [0.9]]), [[0.0], [0.3]]),
])
def test_eigenvalues_match_tvb_finite_difference_jacobian(port, over, c):
    p = bf.default_params(port, **{k: t(v) for k, v in over.items()})
    c = t(c)
    e = bf.jacobian_eigs(port, p, c)
    N = c.shape[0]
    m = tvb_model(port, {k: t(v).expand(N, 1) for k, v in over.items()}, N)     # TVB's defaults for the rest
    state = e.fixed_point.state[:, :, 0].detach().numpy()
    assert np.abs(m._numpy_dfun(state, c[:, 0].numpy()[None, :])).max() < 1e-12
    J = tvb_fd_jacobian(m, state, c[:, 0].numpy()[None, :])
    assert np.abs(J - e.jacobian[..., 0].detach().numpy().transpose(2, 0, 1)).max() < 1e-7
    for n in range(N):
        ref = np.linalg.eigvals(J[n])
        assert abs(ref.real.max() - e.lam_max[n, 0].item()) < 1e-7
        ours = np.sort_complex(e.re[:, n, 0].detach().numpy() + 1j * e.im[:, n, 0].detach().numpy())
        assert np.allclose(np.sort_complex(ref), ours, atol=1e-7)
    assert (e.lam_max < 0).all()


def test_gradcheck_lambda_max_wrt_w_p_and_J_i():
    c = t([[0.0, 0.02], [0.05, 0.0]])

    def lam(w_p, J_i):
        return bf.jacobian_eigs(EI, {"w_p": w_p, "J_i": J_i, "lamda": t([[0.2]])}, c).lam_max

    w_p = t([[0.8], [2.8]]).requires_grad_(True)              # region-wise
    J_i = t([[1.0, 2.5]]).requires_grad_(True)                # one per batch member
    assert torch.autograd.gradcheck(lam, (w_p, J_i), eps=1e-6, atol=1e-7, rtol=1e-4)

    # with the mean-field closure (network feedback inside the Jacobian) and coupling parameters
    W = t([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2], [0.3, 0.3, 0.0]])

    def lam_mf(w_p, J_i, a):
        return bf.jacobian_eigs(EI, {"w_p": w_p, "J_i": J_i, "G": t([[1.0]])}, "mean-field", weights=W,
                                coupling_a=a, coupling_b=t([[0.01]])).lam_max

    a = t([[0.4]]).requires_grad_(True)
    assert torch.autograd.gradcheck(lam_mf, (t([[1.0], [1.5], [2.0]]).requires_grad_(True),
                                             t([[2.0]]).requires_grad_(True), a), eps=1e-6, atol=1e-7, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- penalty
def test_penalty_zero_in_band_quadratic_outside_with_finite_gradients():
    J_i = t([[2.0, 3.0, 1.9]]).requires_grad_(True)      # in band / too stable / past the fold (w_p = 3)
    p = {"w_p": t([[3.0]]), "J_i": J_i}
    lam = bf.lambda_eff(EI, p)
    assert -0.003 < lam[0, 0].item() < -0.001            # -0.0013
    assert lam[0, 1].item() < -0.003
    assert lam[0, 2].item() > 0                          # the low state has vanished: ghost escape rate
    pen = bf.bifurcation_penalty(EI, p, target=-0.002, width=0.001, reduction="none")
    assert pen.shape == (1, 3)
    assert pen[0, 0].item() == 0.0
    assert pen[0, 1].item() > 0 and pen[0, 2].item() > 0
    pen.sum().backward()
    g = J_i.grad[0]
    assert torch.isfinite(g).all()
    assert g[0].item() == 0.0
    assert g[1].item() > 0          # too stable: lowering J_i (less inhibition) reduces the penalty
    assert g[2].item() < 0          # past the fold: raising J_i brings the low state back
    # quadratic outside the band
    lo, hi = -0.003, -0.001
    assert abs(pen[0, 1].item() - ((lo - lam[0, 1].item()) / 0.001) ** 2) < 1e-9
    assert abs(pen[0, 2].item() - ((lam[0, 2].item() - hi) / 0.001) ** 2) < 1e-9
    with pytest.raises(ValueError):
        bf.bifurcation_penalty(EI, p, target=-0.001, width=0.002)     # band reaching above 0


def test_penalty_default_band_and_twin_kwargs():
    """Default band [-0.015, -0.005]: TVB's default ExcInh (G = 0) sits inside it (lambda_max = -0.006).
    ``from_twin`` feeds a TorchSimulator's parameters (batched, differentiable) and network to the penalty."""
    assert bf.bifurcation_penalty(EI, None).item() == 0.0
    lam = bf.lambda_eff(EI, None).item()
    ref, _ = tvb_low_state(tvb_excinh())                         # -0.005982431288 (scipy + numpy on TVB)
    assert abs(lam - ref) < 1e-10

    import tvb_torchfit
    sim = mean_field_sim()
    twin = tvb_torchfit.from_tvb(sim, batch=2)
    w_p = t([[0.7], [1.0]]).requires_grad_(True)                 # public layout (batch, 1)
    twin.set_param("w_p", w_p)
    kw = bf.from_twin(twin)
    pen = bf.bifurcation_penalty(**kw, target=-0.003, width=0.002, reduction="none")
    assert pen.shape == (4, 2)
    ref = tvb_mean_field_lambda(sim, [0.7, 1.0], G=0.5)            # (4 nodes, 2 members), TVB's dfun
    np.testing.assert_allclose(bf.lambda_eff(**kw).detach().numpy(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pen.detach().numpy(), band_penalty(ref, -0.003, 0.002), rtol=1e-6, atol=1e-6)
    pen.sum().backward()
    assert torch.isfinite(w_p.grad).all() and (w_p.grad < 0).all()    # more recurrence -> closer to the fold


def test_from_spec_public_layout_matches_twin_and_tvb():
    """``from_spec``: a SimulatorSpec plus values in the public layout, no TorchSimulator. A batch (B, 1) gives
    what the twin gives; region-wise (N,) values and a coupling parameter give each node's own lambda_max,
    checked against TVB's dfun in the mean-field closure."""
    import tvb_torchfit
    sim = mean_field_sim()
    spec = read_simulator(sim)
    twin = tvb_torchfit.from_tvb(sim, batch=2)
    twin.set_param("w_p", t([[0.7], [1.0]]))
    from_spec = bf.lambda_eff(**bf.from_spec(spec, {"w_p": t([[0.7], [1.0]])}))
    assert torch.equal(from_spec, bf.lambda_eff(**bf.from_twin(twin)))
    w_p = np.array([0.7, 0.8, 0.9, 1.0])
    lam = bf.lambda_eff(**bf.from_spec(spec, {"w_p": w_p, "coupling.a": np.array([0.2])}))
    assert lam.shape == (4, 1)
    ref = [tvb_mean_field_lambda(sim, [w], G=0.5, a=0.2)[k, 0] for k, w in enumerate(w_p)]
    np.testing.assert_allclose(lam[:, 0].numpy(), ref, rtol=0, atol=1e-10)
    isolated = bf.lambda_eff(**bf.from_spec(spec, coupling_input=None))
    assert abs(isolated[0, 0].item() - tvb_low_state(tvb_excinh(G=0.5, w_p=0.7))[0]) < 1e-10


# ----------------------------------------------------------------------------------------------- curve
def test_curve_lambda_crosses_zero_and_tvb_agrees_on_both_sides(curve):
    assert np.isnan(curve.y[0, 0])               # w_p = 1.0: monostable at G = 0, lambda_max < 0 throughout
    assert curve.lam_max_peak[0, 0] < 0
    Jc = curve.y[1, 0]
    assert abs(Jc - tvb_fold(3.0, 2.0)) < 1e-7      # 1.98949: TVB's dfun, scipy, det J = 0
    (cross,) = curve.crossings[1][0]
    assert cross.kind == "saddle-node" and cross.direction == -1
    lam = bf.lambda_eff(EI, {"w_p": t([[3.0]]), "J_i": t([[Jc - 1e-7, Jc + 1e-7]])})[0]
    assert lam[0].item() > 0 > lam[1].item()
    assert lam.abs().max().item() < 1e-4
    fp_above = bf.low_fixed_point(EI, {"w_p": t([[3.0]]), "J_i": t([[Jc + 1e-7]])})
    fp_below = bf.low_fixed_point(EI, {"w_p": t([[3.0]]), "J_i": t([[Jc - 1e-7]])})
    assert not fp_above.vanished.any() and fp_below.vanished.all()
    # real TVB, two uncoupled nodes, from S = 0.05: above the curve S_e settles at the low fixed point,
    # below it S_e leaves the low state and jumps to the high one.
    d = 0.1
    low = bf.low_fixed_point(EI, {"w_p": t([[3.0]]), "J_i": t([[Jc + d]])}).state[0, 0, 0].item()
    high = bf.low_fixed_point(EI, {"w_p": t([[3.0]]), "J_i": t([[Jc - d]])}).state[0, 0, 0].item()
    s_above = run_tvb(3.0, Jc + d, np.zeros((2, 2)))
    s_below = run_tvb(3.0, Jc - d, np.zeros((2, 2)))
    assert np.abs(s_above[-1] - low).max() < 2e-3 and s_above.max() < 0.1
    assert np.abs(s_below[-1] - high).max() < 1e-2 and high > 0.5


def test_mean_field_curve_matches_tvb_network(curve):
    """Symmetric 2-node network: c = a * S_e(other) is the mean-field closure exactly. With G = a = 1 and
    unit weights the feedback adds J_N * S_e to w_p * J_N * S_e, so the fold at w_p = 2 is the isolated
    fold at w_p = 3."""
    W = np.array([[0.0, 1.0], [1.0, 0.0]])
    mf = bf.bifurcation_curve("w_p", [2.0], "J_i", (1.5, 2.5), params={"G": 1.0}, coupling_input="mean-field",
                              weights=W, coupling_a=1.0, coupling_b=0.0, n_y=11)
    assert np.allclose(mf.y[0], curve.y[1, 0], atol=1e-8)
    Jc = mf.y[0, 0]
    d = 0.1
    fp = bf.low_fixed_point(EI, {"w_p": t([[2.0]]), "J_i": t([[Jc + d]]), "G": t([[1.0]])}, "mean-field",
                            weights=W, coupling_a=1.0, coupling_b=0.0)
    s_above = run_tvb(2.0, Jc + d, W, a=1.0, G=1.0)
    s_below = run_tvb(2.0, Jc - d, W, a=1.0, G=1.0)
    assert np.abs(s_above[-1] - fp.state[0, :, 0].numpy()).max() < 2e-3
    assert s_below[-1].min() > 0.5


def test_errors():
    with pytest.raises(ValueError, match="mean-field"):
        bf.low_fixed_point(EI, None, "mean-field")
    with pytest.raises(ValueError, match="no parameter"):
        bf.default_params(EI, w=1.0)
    with pytest.raises(TypeError):
        bf.low_fixed_point(object, None)
