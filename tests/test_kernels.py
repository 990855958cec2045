"""The numba block kernel (``simulator.kernels``) and its adjoint (``simulator.adjoint.KernelRun``).

Pinned here: the kernel's compiled transfer function, equations and their hand-written vector-Jacobian product
against the torch ports and torch's autograd (machine precision, random states and parameters); the adjoint by
``torch.autograd.gradcheck`` (finite differences, float64, tiny network) and against the eager twin's autograd;
the memory bound (what a run keeps for its backward does not grow with its length); the path selection.
"""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tvb.simulator import integrators, models, monitors

import tvb_torchfit
from tvb_torchfit.simulator import kernels
from tvb_torchfit.simulator.adjoint import CheckpointOptions, KernelRun
from tvb_torchfit.simulator.models import MODELS, transfer
from tvb_torchfit.simulator.twin import TorchSimulator
from tvb_torchfit.simulator.adapter import read_simulator

from tvb_builders import build, heun_stochastic, small_connectivity

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

PORTS = list(MODELS.values())


def _random_inputs(port, n, rng):
    """Random states in [0, 1], coupling and parameters around TVB's defaults (x 0.5 .. 1.5)."""
    tvb = port.tvb_class()
    state = [rng.uniform(0, 1, n) for _ in port.state_variables]
    c = rng.uniform(-0.5, 2.0, n)
    params = [float(np.asarray(getattr(tvb, name)).ravel()[0]) * rng.uniform(0.5, 1.5, n) + 0.01 * rng.uniform(0, 1, n)
              for name in port.parameter_names]
    return state, c, params


def test_transfer_scalar_forms_match_the_torch_function_and_its_gradient():
    rng = np.random.RandomState(0)
    u = np.concatenate((rng.normal(0, 20, 200), rng.normal(0, 1e-7, 50), [0.0]))
    d = rng.uniform(0.05, 1.0, u.size)
    ut = torch.tensor(u, requires_grad=True)
    dt_ = torch.tensor(d, requires_grad=True)
    H = transfer.wong_wang_H(ut, dt_)
    gu, gd = torch.autograd.grad(H.sum(), (ut, dt_))
    kern = kernels.load(PORTS[0], "HeunStochastic")
    for i in range(u.size):
        for fn in (transfer.wong_wang_H_scalar, kern.wong_wang_H_scalar):
            assert fn(u[i], d[i]) == pytest.approx(H[i].item(), rel=1e-14, abs=1e-300)
        for fn in (transfer.wong_wang_H_partials, kern.wong_wang_H_partials):
            h, hu, hd = fn(u[i], d[i])
            assert h == pytest.approx(H[i].item(), rel=1e-14)
            assert hu == pytest.approx(gu[i].item(), rel=1e-9, abs=1e-12)
            assert hd == pytest.approx(gd[i].item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.__name__)
def test_kernel_equations_and_their_vjp_match_the_torch_port_and_autograd(port):
    rng = np.random.RandomState(1)
    n = 64
    state, c, params = _random_inputs(port, n, rng)
    kern = kernels.load(port, "HeunStochastic")
    X = torch.tensor(np.stack(state)[:, :, None], requires_grad=True)
    ct = torch.tensor(c[:, None], requires_grad=True)
    p = {name: torch.tensor(v[:, None], requires_grad=True) for name, v in zip(port.parameter_names, params)}
    f = port.dfun(X, ct, p)
    g = rng.normal(size=f.shape)
    grads = torch.autograd.grad((f * torch.tensor(g)).sum(), [X, ct] + list(p.values()))
    V = len(port.state_variables)
    for i in range(n):
        args = [s[i] for s in state] + [c[i]] + [v[i] for v in params]
        values = kern.equations(*args)
        for v in range(V):
            assert values[v] == pytest.approx(f[v, i, 0].item(), rel=1e-14, abs=1e-15)
        vjp = kern.equations_vjp(*args, *g[:, i, 0])
        expected = [grads[0][v, i, 0].item() for v in range(V)] + [grads[1][i, 0].item()]
        expected += [gp[i, 0].item() for gp in grads[2:]]
        assert len(vjp) == len(expected)
        for got, want in zip(vjp, expected):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-13)


def _tiny(scheme="HeunStochastic", model=None, dt=0.5, nsig=1e-3, mons=None):
    integ = heun_stochastic(dt=dt, nsig=nsig) if scheme == "HeunStochastic" else getattr(integrators, scheme)(dt=dt)
    return build(model=model, integrator=integ, conn=small_connectivity(4, seed=3), a=0.3,
                 mons=mons or (monitors.Raw(),), history_seed=5)


class _Stepper:
    """What ``KernelRun`` needs, with a noise stream that restarts at every forward (for finite differences)."""

    def __init__(self, twin):
        self.kernel, self.block, self._noise = twin.kernel, twin.block, twin.noise

    @property
    def noise(self):
        return copy.deepcopy(self._noise) if self._noise is not None else None


@pytest.mark.parametrize("scheme", ["HeunStochastic", "EulerDeterministic"])
def test_kernel_adjoint_gradcheck(scheme):
    sim = _tiny(scheme)
    twin = tvb_torchfit.from_tvb(sim, batch=2, seed=1)
    assert twin.kernel is not None
    params = twin.block_params()
    stepper = _Stepper(twin)
    X0 = twin.state.clone().requires_grad_(True)
    hist = twin._history.window().clone().requires_grad_(True)
    packed = params.packed.clone().requires_grad_(True)
    inputs = [X0, hist, packed]
    scale = None
    if params.noise_scale is not None:
        scale = (params.noise_scale.expand(2, 4, 2) * 30).clone().requires_grad_(True)   # noise that matters
        inputs.append(scale)

    def run(X0, hist, packed, scale=None):
        traj, out = KernelRun.apply(stepper, 9, True, X0, hist, scale, packed)
        return traj, out

    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["HeunStochastic", "HeunDeterministic", "EulerStochastic"])
@pytest.mark.parametrize("model", [models.ReducedWongWangExcInh, models.ReducedWongWang], ids=lambda m: m.__name__)
def test_kernel_gradients_equal_the_eager_twin(scheme, model):
    """Several parameters, two runs (the history handed on), a monitor: the kernel's gradients are the eager
    twin's autograd (rounding only); clipping is exercised by a large noise."""
    sim = _tiny(scheme, model=model(), nsig=2e-2, mons=(monitors.TemporalAverage(period=2.0),))
    names = ["coupling.a", "I_o"] + (["noise.nsig"] if "Stochastic" in scheme else [])
    grads, values = {}, {}
    for kernel in (False, True):
        twin = tvb_torchfit.from_tvb(sim, batch=2, seed=4, kernel=kernel)
        ps = {n: twin.params[n].clone().requires_grad_(True) for n in names}
        for n, v in ps.items():
            twin.set_param(n, v)
        (_, a), = twin.run(simulation_length=20.0)
        (_, b), = twin.run(simulation_length=15.0)
        loss = (b[:, :, 0] ** 2).mean() + a.mean() + twin.state.sum()
        loss.backward()
        grads[kernel] = [ps[n].grad for n in names]
        values[kernel] = b
    assert type(twin.paths.graph).__name__ == "KernelCheckpointedPath"
    torch.testing.assert_close(values[True], values[False], rtol=0, atol=1e-13)
    for g_kernel, g_eager in zip(grads[True], grads[False]):
        torch.testing.assert_close(g_kernel, g_eager, rtol=1e-10, atol=1e-12)
    clipped = (values[True] == 0).any() or (values[True] == 1).any()
    assert clipped or "Stochastic" not in scheme or model is models.ReducedWongWang


def _run_with_grad(sim, length, options):
    twin = TorchSimulator(read_simulator(sim), batch=2, seed=2, checkpoint=options)
    G = twin.params["coupling.a"].clone().requires_grad_(True)
    twin.set_param("coupling.a", G)
    (_, x), = twin.run(simulation_length=length)
    x.pow(2).mean().backward()
    return twin.paths.graph, G.grad


def test_kernel_run_memory_is_bounded_by_keep_bytes_and_the_group_not_by_run_length():
    """What a run keeps for its backward stops at ``keep_bytes``; a 4x longer run keeps no more; groups past the
    budget are integrated again in the backward and give the same gradient as kept ones."""
    sim = _tiny()
    options = CheckpointOptions(group_steps=20, keep_bytes=16000)   # two groups (24 steps: 7680 bytes each)
    short, _ = _run_with_grad(sim, 50.0, options)
    long_path, _ = _run_with_grad(sim, 200.0, options)
    assert short.kept_bytes == 2 * short.group_bytes(short.group_steps, 2) <= options.keep_bytes
    assert long_path.kept_bytes == short.kept_bytes
    _, g_kept = _run_with_grad(sim, 60.0, CheckpointOptions(group_steps=20))
    _, g_recomputed = _run_with_grad(sim, 60.0, CheckpointOptions(group_steps=20, keep_bytes=0))
    torch.testing.assert_close(g_recomputed, g_kept, rtol=1e-14, atol=0)


def test_default_path_is_the_kernel_and_explicit_options_keep_the_eager_paths():
    sim = _tiny()
    twin = tvb_torchfit.from_tvb(sim)
    assert type(twin.paths.free).__name__ == "KernelPath"
    assert type(twin.paths.graph).__name__ == "KernelCheckpointedPath"
    assert tvb_torchfit.from_tvb(sim, kernel=False).kernel is None
    assert tvb_torchfit.from_tvb(sim, exact=True).kernel is None
    assert TorchSimulator(read_simulator(sim), checkpoint=False).kernel is None
    with pytest.raises(ValueError, match="kernel=True"):
        tvb_torchfit.from_tvb(sim, exact=True, kernel=True)


def test_kernel_source_is_generated_from_the_ports_equations():
    """One source of truth: the kernel module's text holds the port's ``equations`` and the transfer function
    as written in ``models/``; its file name is the hash of that text."""
    import inspect
    port = MODELS[models.ReducedWongWangExcInh]
    src = kernels.kernel_source(port, "HeunStochastic")
    assert inspect.getsource(port.equations) in src
    assert inspect.getsource(transfer.wong_wang_H_partials) in src


def test_scalar_transfer_matches_torch_in_every_band():
    """The kernel's plain-math H and its partials equal the torch port's value and autograd gradient in all three
    bands: the series around u = 0, TVB's expression, and the float32-stable form below d*u = -STABLE_BELOW."""
    import torch
    from tvb_torchfit.simulator.models import transfer
    for u, d in ((1e-9, 0.16), (3.0, 0.16), (-0.5, 0.16), (-400.0, 0.16), (-2000.0, 0.087)):
        ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
        dt = torch.tensor(d, dtype=torch.float64, requires_grad=True)
        h = transfer.wong_wang_H(ut, dt)
        gu, gd = torch.autograd.grad(h, (ut, dt))
        H, dHdu, dHdd = transfer.wong_wang_H_partials(u, d)
        assert H == pytest.approx(float(h), rel=1e-12, abs=1e-300)
        assert transfer.wong_wang_H_scalar(u, d) == pytest.approx(float(h), rel=1e-12, abs=1e-300)
        assert dHdu == pytest.approx(float(gu), rel=1e-10, abs=1e-300)
        assert dHdd == pytest.approx(float(gd), rel=1e-10, abs=1e-300)


def _twelve(scheme="HeunStochastic"):
    """12 nodes, ~8 in-edges each (the batch-1 gather's unrolled four-edge loop runs, with a remainder)."""
    integ = heun_stochastic(dt=0.5, nsig=2e-2) if scheme == "HeunStochastic" else getattr(integrators, scheme)(dt=0.5)
    return build(integrator=integ, conn=small_connectivity(12, seed=7), a=0.3, mons=(monitors.Raw(),),
                 history_seed=5)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("scheme", ["HeunStochastic", "EulerDeterministic"])
def test_kernel_gather_and_pull_equal_the_eager_twin_at_batch_one_and_wider(batch, scheme):
    """The coupling gather (batch 1: four interleaved partial sums over flat offsets; wider: along the batch axis)
    and the adjoint's pull over out-edges (the same helper): values and gradients equal the eager twin's."""
    sim = _twelve(scheme)
    names = ["coupling.a", "G", "w_p"]
    grads, values = {}, {}
    for kernel in (False, True):
        twin = tvb_torchfit.from_tvb(sim, batch=batch, seed=4, kernel=kernel)
        ps = {n: twin.params[n].clone().requires_grad_(True) for n in names}
        for n, v in ps.items():
            twin.set_param(n, v)
        (_, a), = twin.run(simulation_length=30.0)
        loss = (a[:, 0] ** 2).mean() + twin.state.sum()
        loss.backward()
        grads[kernel] = [ps[n].grad for n in names]
        values[kernel] = a
    far_ptr = twin.kernel.plan.far[0]
    assert np.diff(far_ptr).max() >= 5 and (np.diff(far_ptr) % 4 != 0).any()
    torch.testing.assert_close(values[True], values[False], rtol=0, atol=1e-13)
    for g_kernel, g_eager in zip(grads[True], grads[False]):
        torch.testing.assert_close(g_kernel, g_eager, rtol=1e-10, atol=1e-12)


def test_kernel_adjoint_gradcheck_batch_one():
    """gradcheck of the adjoint where the batch-1 gather and pull (unrolled over four edges) run."""
    sim = _twelve("HeunStochastic")
    twin = tvb_torchfit.from_tvb(sim, batch=1, seed=1)
    params = twin.block_params()
    stepper = _Stepper(twin)
    X0 = twin.state.clone().requires_grad_(True)
    hist = twin._history.window().clone().requires_grad_(True)
    packed = params.packed.clone().requires_grad_(True)
    scale = params.noise_scale.expand(2, 12, 1).clone().requires_grad_(True)

    def run(X0, hist, packed, scale):
        return KernelRun.apply(stepper, 7, True, X0, hist, scale, packed)

    assert torch.autograd.gradcheck(run, [X0, hist, packed, scale], eps=1e-6, atol=1e-7, rtol=1e-5)


def test_exp_nonpositive_is_within_an_ulp_of_libm_in_python_and_compiled():
    """The kernel's own exp (no libm call, so its loop vectorises): within 2 ulp of math.exp on x <= 0 down to
    the underflow cut, exactly 1 at 0 and 0 below the cut; the compiled function (bit-built 2**k) agrees."""
    import math
    rng = np.random.RandomState(1)
    x = -np.concatenate((rng.uniform(0, 1e-6, 200), rng.uniform(0, 1, 2000), rng.uniform(0, 60, 2000),
                         rng.uniform(0, 707.9, 500), [0.0, 5e-324, 0.5 * math.log(2), 707.9]))
    kern = kernels.load(PORTS[0], "HeunStochastic")
    for fn in (transfer.exp_nonpositive, kern.exp_nonpositive):
        got = np.array([fn(v) for v in x])
        want = np.exp(x)
        assert np.max(np.abs(got - want) / want) <= 4.5e-16
        assert fn(0.0) == 1.0 and fn(-708.5) == 0.0 and fn(-1e4) == 0.0
    kern32 = kernels.load(PORTS[0], "HeunStochastic", dtype="float32")       # float32 constants and 2**k
    x32 = np.float32(x[x > -86.9])
    got = np.array([kern32.exp_nonpositive(v) for v in x32])
    import numba
    assert {sig.return_type for sig in kern32.exp_nonpositive.nopython_signatures} == {numba.float32}
    assert np.max(np.abs(got - np.exp(x32.astype(np.float64))) / np.exp(x32.astype(np.float64))) <= 1.5e-7
    assert kern32.exp_nonpositive(np.float32(-87.5)) == 0.0


def test_kernel_parameter_layouts_give_the_generic_kernels_values_and_gradients():
    """A layout that reads uniform parameters once per call and differentiates only some (what the twin passes:
    ``BlockParams.varying`` / ``requires_grad``) gives the values and gradients of the generic layout (every
    parameter per element, every gradient); the rows not recorded are zero."""
    sim = _tiny("HeunStochastic")
    twin = tvb_torchfit.from_tvb(sim, batch=2, seed=1)
    twin.set_param("w_p", torch.linspace(1.2, 1.6, 4, dtype=torch.float64))   # per node
    twin.set_param("G", torch.tensor([[1.8], [2.2]], dtype=torch.float64))    # per batch member
    params = twin.block_params()
    names = twin.packed_names
    assert [names[i] for i, v in enumerate(params.varying) if v] == ["w_p", "G"]
    stepper = _Stepper(twin)
    recorded = tuple(n in ("G", "J_i", "coupling.a") for n in names)
    out = {}
    for layout in ((None, None), (params.varying, recorded)):
        X0 = twin.state.clone().requires_grad_(True)
        hist = twin._history.window().clone().requires_grad_(True)
        packed = params.packed.clone().requires_grad_(True)
        scale = (params.noise_scale.expand(2, 4, 2) * 30).clone().requires_grad_(True)
        traj, window = KernelRun.apply(stepper, 9, True, X0, hist, scale, packed, *layout)
        ((traj ** 2).sum() + window.sum()).backward()
        out[layout[0] is None] = (traj.detach(), X0.grad, hist.grad, packed.grad, scale.grad)
    generic, special = out[True], out[False]
    torch.testing.assert_close(special[0], generic[0], rtol=0, atol=1e-14)
    for g, s in zip(generic[1:3] + generic[4:], special[1:3] + special[4:]):
        torch.testing.assert_close(s, g, rtol=1e-12, atol=1e-15)
    rows = torch.tensor(recorded)
    torch.testing.assert_close(special[3][rows], generic[3][rows], rtol=1e-12, atol=1e-15)
    assert (special[3][~rows] == 0).all() and (generic[3][~rows] != 0).any()


def test_kernel_with_region_and_batch_wise_parameters_equals_the_eager_twin():
    """Through the twin: a region-wise w_p and a per-batch G (read per element), the rest uniform; gradients of
    both and of a uniform parameter equal the eager twin's autograd."""
    sim = _twelve("HeunStochastic")
    values, grads = {}, {}
    for kernel in (False, True):
        twin = tvb_torchfit.from_tvb(sim, batch=2, seed=3, kernel=kernel)
        ps = {"w_p": torch.linspace(1.1, 1.5, 12, dtype=torch.float64).requires_grad_(True),
              "G": torch.tensor([[1.5], [2.5]], dtype=torch.float64).requires_grad_(True),
              "J_i": twin.params["J_i"].clone().requires_grad_(True)}
        for n, v in ps.items():
            twin.set_param(n, v)
        (_, a), = twin.run(simulation_length=25.0)
        ((a[:, 0] ** 2).mean() + twin.state.sum()).backward()
        values[kernel], grads[kernel] = a, [ps[n].grad for n in ps]
    assert twin.block_params().varying.count(True) == 2
    torch.testing.assert_close(values[True], values[False], rtol=0, atol=1e-13)
    for g_kernel, g_eager in zip(grads[True], grads[False]):
        torch.testing.assert_close(g_kernel, g_eager, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scheme", ["HeunDeterministic", "HeunStochastic"])
def test_float32_kernel_is_as_accurate_as_the_eager_float32_twin(scheme):
    """The float32 kernel computes in float32 (its literals typed, its own float32 exp): deterministic, its
    values and gradient are as close to the float64 run as the eager float32 twin's are (within 3x of its
    error); with noise (the same float32 stream) it agrees with the eager float32 twin to float32 rounding."""
    sim = _twelve(scheme)

    def run(dtype, kernel):
        twin = tvb_torchfit.from_tvb(sim, batch=2, seed=4, dtype=dtype, kernel=kernel)
        G = torch.tensor(2.0, dtype=dtype, requires_grad=True)
        twin.set_param("G", G)
        (_, a), = twin.run(simulation_length=40.0)
        (a[:, 0] ** 2).mean().backward()
        return a.detach().double(), G.grad.double()

    k32, e32 = run(torch.float32, True), run(torch.float32, False)
    if scheme == "HeunStochastic":
        torch.testing.assert_close(k32[0], e32[0], rtol=0, atol=2e-6)
        torch.testing.assert_close(k32[1], e32[1], rtol=1e-5, atol=0)
        return
    ref = run(torch.float64, False)
    for i in (0, 1):
        err_kernel = (k32[i] - ref[i]).abs().max().item()
        err_eager = (e32[i] - ref[i]).abs().max().item()
        assert err_kernel <= 3 * err_eager + 1e-7 * ref[i].abs().max().item(), (i, err_kernel, err_eager)
