"""Analytic FC of a TVB simulation linearised around its low fixed point (delays ignored), differentiable.

For the Wong-Wang models in the low-activity regime TVB's stochastic BOLD is, to a good approximation,
the output of a *linear* system driven by white noise: the network sits near its low fixed point x*
and the noise only jiggles it. Its FC then has a closed form that needs no simulation, has no
finite-window noise and is differentiable in every parameter. What is mirrored from TVB:

* ``tvb.simulator.models`` (the ports' ``dfun(state, c, p)``, the only place the equations live; every
  derivative here is torch autograd of it);
* ``tvb.simulator.coupling.Linear`` with the coupling variable (state variable 0):
  ``c_k = a * sum_l W_kl x_0,l + b`` (rows of W are targets, as TVB's, weights as frozen at configure());
  conduction delays are ignored: at a fixed point they do not matter, and for the slow BOLD band
  (periods of seconds vs delays of tens of ms) they barely change the covariance;
* ``tvb.simulator.noise.Additive`` (white): TVB adds ``sqrt(dt) * N(0, 1) * sqrt(2 * nsig)`` per step,
  i.e. the SDE ``dx = F(x) dt + sqrt(2 nsig) dW`` with diffusion matrix ``Q = diag(2 nsig)`` (state**2/ms);
* ``tvb.simulator.monitors.Bold``: the observed variable is averaged over blocks of
  ``interim_istep = round(4 ms / dt)`` steps and the block averages are convolved with TVB's
  precomputed 20 s kernel ``hemodynamic_response_function`` (then ``(. - 1) * k_1 * V_0`` for the
  FirstOrderVolterra kernel; the offset does not change covariances).

The linear model
----------------
1. ``network_fixed_point``: x* with F(x*) = 0 for the whole network,
   ``F(x) = dfun(x, c(x), p)`` in 1/ms. Found the way TVB reaches it from its low start: explicit Euler
   relaxation (no noise, delays ignored) from x = ``start`` (0.05, the package's low-state initial
   condition), in chunks of 500 ms until max |F| < ``relax_tol`` (or ``t_max`` ms), clamped to the
   integrator's state bounds, then Newton's method with the network Jacobian (backtracking on max |F|)
   to max |F| < ``tol``. It is the attractor reached from the low start: the low state whenever it exists
   and 0.05 lies in its basin. No convergence, a point outside the state bounds, or (by default) a
   Jacobian with max Re(eigenvalue) >= 0 raise ``FixedPointError`` / ``UnstableFixedPointError``
   (``ParameterError``s), never NaN.
   *Gradients*: x* is found without a graph; then ONE Newton step is taken with gradients from the
   detached x*, with the Jacobian A* held constant: ``x = x* - A*^{-1} F(x*; theta)``. At a converged
   point this is exactly the implicit function theorem, ``dx*/dtheta = -A^{-1} dF/dtheta`` (first
   derivatives exact; second derivatives are not).
2. ``network_jacobian``: A (nvar*N x nvar*N), rows/columns ordered (variable, node) variable-major:
   ``A = blockdiag_k(d dfun/d x at node k) + e_cvar-column (d dfun/d c) * a * W``. The local blocks
   come from nvar backward passes of dfun (nodes are independent given c), with ``create_graph`` so that
   A is differentiable in x and the parameters.
3. ``linear_fc``: with A = V diag(lambda) V^{-1} (``torch.linalg.eig``) and modes z = V^{-1} x,
   ``M = V^{-1} Q V^{-H}``, the stationary mode covariance is ``K0_ab = -M_ab / (lambda_a + conj lambda_b)``
   and the lagged one ``E[z_a(t + tau) conj z_b(t)] = exp(lambda_a tau) K0_ab`` (tau >= 0).
   * neural (``bold=False``): Cov(x_v) = Re(V_v K0 V_v^H) for the observed variable v.
   * BOLD (``bold=True``): the Bold monitor is a linear filter over integration steps,
     ``y(t) = sum_s h_s x_v(t - s dt)`` with ``h_s = w_{s // n} / n`` (n = interim_istep, w the kernel
     weights newest block first, scaled by k_1 V_0). With R(m) = sum_s h_s h_{s+m} (exact, from TVB's
     kernel array), ``Cov(y) = Re(V_v K V_v^H)``, ``K_ab = K0_ab (rho(lambda_a) + conj rho(lambda_b))``,
     ``rho(lambda) = R(0)/2 + sum_{m >= 1} R(m) exp(lambda m dt)``. This is the exact BOLD covariance of
     the continuous linear SDE sampled every dt (no frequency grid); rho is evaluated in chunks by a small
     autograd Function (rho is holomorphic, its backward uses rho').
   FC = Cov / sqrt(diag diag^T). For FC only relative noise between variables matters (nsig's scale
   cancels), but nsig is differentiable anyway.
   ``torch.linalg.eig``'s backward needs distinct eigenvalues; a generic heterogeneous connectome has
   them, exactly symmetric toy networks may not.

Caller's side (``fit``): ``linear_bold_fc(twin, {"G": G, "w_p": w_p, "J_i": J_i})`` with tensors in
TVB's layout (1,) global or (N,) region-wise (they may require grad); names as ``TorchSimulator.params``
(model parameter names, ``"coupling.a"``, ``"coupling.b"``, ``"noise.nsig"``); anything not given is
taken from the twin's current params (or, for a ``SimulatorSpec``, from TVB's configured values).
Everything is float64 and CPU/any device of the given tensors (the spec's arrays go to that device).
Time in ms, rates in 1/ms; eigenvalues in 1/ms.
"""
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..simulator.adapter import SimulatorSpec
from ..errors import ParameterError

DTYPE = torch.float64
Tensor = torch.Tensor
NOISE_PARAM = "noise.nsig"
COUPLING_PARAMS = ("coupling.a", "coupling.b")

__all__ = ["FixedPointError", "UnstableFixedPointError", "LinearNetwork", "FixedPoint", "LinearInfo",
           "linear_network", "network_dfun", "network_fixed_point", "network_jacobian", "linear_fc",
           "linear_bold_fc", "bold_filter_autocorrelation"]


class FixedPointError(ParameterError):
    """No fixed point was reached from the low start (or it lies outside the state bounds)."""


class UnstableFixedPointError(FixedPointError):
    """The fixed point reached is not linearly stable (max Re eigenvalue of the network Jacobian >= 0)."""


# --------------------------------------------------------------------------- the network, as tensors
@dataclass
class LinearNetwork:
    """What the linearisation needs from a simulator, as float64 tensors.

    ``params``: model parameters (N or 1, 1), the ports' internal layout with one batch column;
    ``a``, ``b``: Linear coupling (N or 1,); ``weights`` (N, N), rows are targets; ``nsig`` (nvar, N);
    ``lo``, ``hi`` (nvar, 1) state bounds; ``bold``: the Bold monitor's (weights newest block first,
    interim_istep, k1_V0) or None; ``variable``: the state-variable index observed.
    """
    model: type
    params: Dict[str, Tensor]
    a: Tensor
    b: Tensor
    weights: Tensor
    nsig: Tensor
    lo: Tensor
    hi: Tensor
    dt: float
    bold: Optional[Tuple[np.ndarray, int, Optional[float]]]
    variable: int

    @property
    def n_nodes(self) -> int:
        return self.weights.shape[0]

    @property
    def nvar(self) -> int:
        return len(self.model.state_variables)


def _vector(name: str, value, n: int, device) -> Tensor:
    """A parameter in TVB's public layout (scalar, (1,) or (N,); a batch of one (1, N) too) -> (1,) or (N,)."""
    t = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    if t.is_complex():
        raise ParameterError(f"parameter {name!r} must be real, got a complex value.")
    t = t.to(device=device, dtype=DTYPE).reshape(-1)
    if t.numel() not in (1, n):
        raise ParameterError(f"parameter {name!r} has {t.numel()} values; the linearisation takes one parameter "
                             f"set: (1,) global or ({n},) region-wise (no batch axis).")
    return t


def linear_network(spec_or_twin, params: Optional[Mapping[str, object]] = None,
                   variable: Optional[str] = None) -> LinearNetwork:
    """Collect model, coupling, noise, bounds and Bold kernel of a ``SimulatorSpec`` or ``TorchSimulator``.

    ``params`` (name -> number/array/tensor, TVB names as in ``TorchSimulator.params``) override the
    spec's configured values / the twin's current params. ``variable``: the observed state variable by
    name; default the Bold monitor's (first) variable of interest, else the model's first one.
    """
    if isinstance(spec_or_twin, SimulatorSpec):
        spec, base = spec_or_twin, dict(spec_or_twin.model_params)
        base["coupling.a"], base["coupling.b"] = spec.coupling_a, spec.coupling_b
        if spec.nsig is not None:
            base[NOISE_PARAM] = spec.nsig
    elif hasattr(spec_or_twin, "spec") and hasattr(spec_or_twin, "params"):
        spec, base = spec_or_twin.spec, dict(spec_or_twin.params)
    else:
        raise TypeError(f"expected a SimulatorSpec or a TorchSimulator (tvb_torchfit.from_tvb), "
                        f"got {type(spec_or_twin).__name__}.")
    model, n = spec.model, spec.n_nodes
    params = dict(params or {})
    known = set(model.parameter_names) | set(COUPLING_PARAMS) | {NOISE_PARAM}
    unknown = set(params) - known
    if unknown:
        raise ParameterError(f"unknown parameter(s) {sorted(unknown)} for {model.tvb_class.__name__} with Linear "
                             f"coupling; known: {', '.join(sorted(known))}.")
    base.update(params)
    device = next((v.device for v in params.values() if torch.is_tensor(v)), torch.device("cpu"))
    p = {name: _vector(name, base[name], n, device).unsqueeze(1) for name in model.parameter_names}
    nvar = len(model.state_variables)
    nsig = base.get(NOISE_PARAM, 1.0)       # a deterministic simulator: unit noise (FC is scale-free)
    nsig_t = nsig if torch.is_tensor(nsig) else torch.as_tensor(np.asarray(nsig, dtype=np.float64))
    nsig_t = nsig_t.to(device=device, dtype=DTYPE)
    try:
        nsig_t = torch.broadcast_to(nsig_t.reshape(nsig_t.shape[-2:] if nsig_t.dim() > 2 else nsig_t.shape), (nvar, n))
    except RuntimeError:
        raise ParameterError(f"noise.nsig of shape {tuple(nsig_t.shape)} does not broadcast to (nvar, N) = "
                             f"({nvar}, {n}); use (1,), ({n},), ({nvar}, 1) or ({nvar}, {n}).") from None
    bold, voi = None, None
    for mon in spec.monitors:
        if mon.kind == "Bold":
            newest_first = np.roll(np.asarray(mon.hrf_reversed, dtype=np.float64), -1)[::-1].copy()
            bold = (newest_first, int(mon.interim_istep), mon.k1_V0)
            voi = int(spec.model_voi[int(mon.voi[0])])
            break
    if variable is not None:
        if variable not in model.state_variables:
            raise ParameterError(f"variable={variable!r}: {model.tvb_class.__name__} has state variables "
                                 f"{', '.join(model.state_variables)}.")
        voi = model.state_variables.index(variable)
    elif voi is None:
        voi = int(spec.model_voi[0])
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
    return LinearNetwork(model=model, params=p, a=_vector("coupling.a", base["coupling.a"], n, device),
                         b=_vector("coupling.b", base["coupling.b"], n, device), weights=t(spec.weights),
                         nsig=nsig_t, lo=t(spec.lo).reshape(-1, 1), hi=t(spec.hi).reshape(-1, 1), dt=float(spec.dt),
                         bold=bold, variable=voi)


def _net(spec_or_twin, params, variable=None) -> LinearNetwork:
    return spec_or_twin if isinstance(spec_or_twin, LinearNetwork) else linear_network(spec_or_twin, params, variable)


# --------------------------------------------------------------------------- vector field and Jacobian
def _coupling(net: LinearNetwork, x: Tensor) -> Tensor:
    """TVB's Linear coupling on the instantaneous state: c = a * (W @ x_cvar) + b, shape (N,)."""
    return net.a * (net.weights @ x[0]) + net.b


def _dfun(net: LinearNetwork, x: Tensor, c: Tensor) -> Tensor:
    """The port's dfun on (nvar, N) states and (N,) coupling: (nvar, N) in 1/ms."""
    return net.model.dfun(x.unsqueeze(-1), c.unsqueeze(-1), net.params)[..., 0]


def network_dfun(spec_or_twin, params=None, x: Optional[Tensor] = None) -> Tensor:
    """F(x) = dfun(x, a W x_0 + b): the network's vector field (nvar, N), 1/ms, delays ignored."""
    net = _net(spec_or_twin, params)
    return _dfun(net, x, _coupling(net, x))


def _jacobian(net: LinearNetwork, x: Tensor, create_graph: bool) -> Tensor:
    nvar, n = net.nvar, net.n_nodes
    with torch.enable_grad():
        xv = x * 1.0 if x.requires_grad else x.detach().requires_grad_(True)
        cv = _coupling(net, x)
        cv = cv * 1.0 if cv.requires_grad else cv.detach().requires_grad_(True)
        F = _dfun(net, xv, cv)
        local, dc = [], []
        for i in range(nvar):
            gx, gc = torch.autograd.grad(F[i].sum(), (xv, cv), create_graph=create_graph, retain_graph=True)
            local.append(gx)                                 # (nvar, N): d F_i,k / d x_j,k
            dc.append(gc)                                    # (N,):      d F_i,k / d c_k
    rows = []
    coupled = net.a.unsqueeze(1) * net.weights               # (N, N): d c_k / d x_0,l
    for i in range(nvar):
        blocks = [torch.diag(local[i][j]) for j in range(nvar)]
        blocks[0] = blocks[0] + dc[i].unsqueeze(1) * coupled
        rows.append(torch.cat(blocks, dim=1))
    A = torch.cat(rows, dim=0)
    return A if create_graph else A.detach()


def network_jacobian(spec_or_twin, params=None, x: Optional[Tensor] = None, *, create_graph: bool = True) -> Tensor:
    """A = dF/dx at x (nvar, N): (nvar*N, nvar*N), variable-major ((S_e of all nodes, then S_i ...)), 1/ms.

    A = blockdiag(local d dfun/d x) + [d dfun/d c] * a * W in the coupling variable's columns. With
    ``create_graph`` (default) A is differentiable w.r.t. x and every parameter. ``x`` defaults to the
    network's fixed point (``network_fixed_point``).
    """
    net = _net(spec_or_twin, params)
    if x is None:
        x = network_fixed_point(net).state
    return _jacobian(net, x, create_graph)


# --------------------------------------------------------------------------- fixed point
@dataclass
class FixedPoint:
    """The network's fixed point: ``state`` (nvar, N), differentiable (implicit function theorem);
    ``residual`` max |F| (1/ms); ``lambda_max`` max Re eigenvalue of A (1/ms, float);
    ``relaxed_ms`` the relaxation time used; ``newton_steps``."""
    state: Tensor
    residual: float
    lambda_max: float
    relaxed_ms: float
    newton_steps: int


def _max_abs(t: Tensor) -> float:
    return float(t.abs().max())


def network_fixed_point(spec_or_twin, params: Optional[Mapping[str, object]] = None, *, start=0.05,
                        initial: Optional[Tensor] = None, t_max: float = 20000.0, dt_relax: float = 0.5,
                        relax_tol: float = 1e-7, tol: float = 1e-13, max_newton: int = 50,
                        require_stable: bool = True) -> FixedPoint:
    """The network's low fixed point F(x*) = 0 (delays ignored), differentiable w.r.t. the parameters.

    From x = ``start`` (a number, or one per state variable; 0.05 as ``low_state_initial_conditions``):
    explicit Euler relaxation with ``dt_relax`` ms, clamped to the state bounds, in 500 ms chunks until
    max |F| < ``relax_tol`` 1/ms or ``t_max`` ms; then Newton (network Jacobian, backtracking) to max |F|
    < ``tol``. ``initial`` (nvar, N): skip the relaxation and start Newton there (a warm start, e.g. the
    previous optimisation step's point; it converges to the root nearest to it). Gradients: one Newton step
    from the detached root with the Jacobian held constant (exact first derivatives, see module docstring).
    Raises ``FixedPointError`` when Newton does not converge or the root leaves the state bounds, and
    ``UnstableFixedPointError`` when ``require_stable`` and max Re eig(A) >= 0.
    """
    net = _net(spec_or_twin, params)
    nvar, n = net.nvar, net.n_nodes
    name = net.model.tvb_class.__name__
    with torch.no_grad():
        det = LinearNetwork(**{**net.__dict__, "params": {k: v.detach() for k, v in net.params.items()},
                               "a": net.a.detach(), "b": net.b.detach(), "nsig": net.nsig.detach()})
        relaxed = 0.0
        if initial is None:
            x = torch.as_tensor(np.asarray(start, dtype=np.float64), device=net.weights.device)
            x = torch.broadcast_to(x.reshape(-1, 1), (nvar, n)).clone()
            chunk = max(1, int(round(500.0 / dt_relax)))
            while relaxed < t_max:
                for _ in range(chunk):
                    x = torch.minimum(torch.maximum(x + dt_relax * network_dfun(det, None, x), det.lo), det.hi)
                relaxed += chunk * dt_relax
                if not torch.isfinite(x).all():
                    raise FixedPointError(f"{name}: the relaxation from the low start diverged (non-finite state).")
                if _max_abs(network_dfun(det, None, x)) < relax_tol:
                    break
        else:
            x = initial.detach().to(DTYPE).reshape(nvar, n).clone()
        res = _max_abs(network_dfun(det, None, x))
        steps = 0
        while res >= tol and steps < max_newton:
            A = _jacobian(det, x, create_graph=False)
            dx = torch.linalg.solve(A, network_dfun(det, None, x).reshape(-1)).reshape(nvar, n)
            t = 1.0
            for _ in range(30):                              # backtracking: accept the first decrease
                cand = x - t * dx
                r = _max_abs(network_dfun(det, None, cand))
                if np.isfinite(r) and r < res:
                    break
                t /= 2
            else:
                break
            x, res, steps = cand, r, steps + 1
        if not res < max(tol, 1e-11):
            raise FixedPointError(f"{name}: no fixed point reached from the "
                                  f"{'low start' if initial is None else 'given initial state'} (max |dfun| = "
                                  f"{res:.3g} 1/ms after {relaxed:g} ms relaxation and {steps} Newton steps).")
        if bool((x < det.lo - 1e-9).any() or (x > det.hi + 1e-9).any()):
            raise FixedPointError(f"{name}: the fixed point found lies outside the state bounds "
                                  f"[{det.lo.flatten().tolist()}, {det.hi.flatten().tolist()}].")
        A = _jacobian(det, x, create_graph=False)
        lam = float(torch.linalg.eigvals(A).real.max())
    if require_stable and lam >= 0:
        raise UnstableFixedPointError(f"{name}: the fixed point reached is not stable (max Re eigenvalue "
                                      f"{lam:.4g} 1/ms >= 0; mean S = {x.mean(1).tolist()}).")
    needs_grad = any(t.requires_grad for t in (*net.params.values(), net.a, net.b))
    if needs_grad:                                           # implicit function theorem, one Newton step
        with torch.enable_grad():
            x = x - torch.linalg.solve(A, network_dfun(net, None, x).reshape(-1)).reshape(nvar, n)
    return FixedPoint(state=x, residual=res, lambda_max=lam, relaxed_ms=relaxed, newton_steps=steps)


# --------------------------------------------------------------------------- Bold filter
def bold_filter_autocorrelation(net: LinearNetwork) -> np.ndarray:
    """R(m) = sum_s h_s h_{s+m}, m = 0 .. L-1 (lags in integration steps), of TVB's Bold filter over steps:
    h_s = k_1 V_0 * w_{s // n} / n (block average of n = interim_istep steps, kernel newest block first)."""
    if net.bold is None:
        raise ParameterError("bold=True needs a Bold monitor on the simulator (its HRF kernel is used); "
                             "use bold=False for the FC of the neural variable.")
    w, n, k1v0 = net.bold
    h = np.repeat(w, n) / n * (1.0 if k1v0 is None else k1v0)
    L = h.size
    size = 1 << int(np.ceil(np.log2(2 * L)))
    f = np.fft.rfft(h, size)
    return np.fft.irfft(f * np.conj(f), size)[:L]


class _Rho(torch.autograd.Function):
    """rho(lambda) = R(0)/2 + sum_{m>=1} R(m) exp(lambda m dt), holomorphic; chunked over m."""

    @staticmethod
    def _eval(lam: Tensor, R: Tensor, dt: float, deriv: bool):
        val = torch.full_like(lam, 0.5) * R[0]
        der = torch.zeros_like(lam)
        L, chunk = R.shape[0], 4096
        for m0 in range(1, L, chunk):
            m = torch.arange(m0, min(m0 + chunk, L), dtype=DTYPE, device=lam.device) * dt
            E = torch.exp(lam.unsqueeze(1) * m.unsqueeze(0))                     # (modes, chunk)
            r = R[m0:m0 + chunk].to(lam.dtype)
            val = val + E @ r
            if deriv:
                der = der + E @ (r * m.to(lam.dtype))
        return val, der

    @staticmethod
    def forward(ctx, lam: Tensor, R: Tensor, dt: float) -> Tensor:
        val, der = _Rho._eval(lam, R, dt, deriv=True)
        ctx.save_for_backward(der)
        return val

    @staticmethod
    def backward(ctx, grad):
        der, = ctx.saved_tensors
        return grad * der.conj(), None, None


# --------------------------------------------------------------------------- linear FC
@dataclass
class LinearInfo:
    """``fixed_point`` (nvar, N) differentiable; ``lambda_max`` max Re eigenvalue of A (1/ms, tensor,
    differentiable); ``eigenvalues`` of A; ``covariance`` (N, N) of the observed signal (BOLD units with
    k_1 V_0 for bold=True, state**2 for bold=False); ``variable`` the observed state variable's name."""
    fixed_point: Tensor
    lambda_max: Tensor
    eigenvalues: Tensor
    covariance: Tensor
    variable: str
    residual: float


def linear_fc(spec_or_twin, params: Optional[Mapping[str, object]] = None, *, bold: bool = True,
              variable: Optional[str] = None, initial: Optional[Tensor] = None,
              **fixed_point_options) -> Tuple[Tensor, LinearInfo]:
    """FC (N, N) of the network linearised around its low fixed point, and ``LinearInfo``.

    ``bold=True``: FC of TVB's Bold monitor output (its kernel and block averaging, exact in time domain);
    ``bold=False``: FC of the neural state variable itself (stationary Lyapunov covariance).
    Differentiable w.r.t. every tensor in ``params`` that requires grad (model parameters global or
    region-wise, ``coupling.a``/``b``, ``noise.nsig``). Raises ``UnstableFixedPointError`` when the
    fixed point is not stable (max Re eig >= 0), ``FixedPointError`` when none is reached; options of
    ``network_fixed_point`` (``initial``, ``t_max``, ...) pass through.
    """
    net = _net(spec_or_twin, params, variable)
    fp = network_fixed_point(net, initial=initial, **fixed_point_options)
    A = _jacobian(net, fp.state, create_graph=True)
    lam, V = torch.linalg.eig(A)
    n, v = net.n_nodes, net.variable
    Vinv = torch.linalg.inv(V)
    q = (2.0 * net.nsig).reshape(-1).to(V.dtype)                                 # Q = diag(2 nsig)
    M = (Vinv * q.unsqueeze(0)) @ Vinv.conj().transpose(0, 1)
    K = -M / (lam.unsqueeze(1) + lam.conj().unsqueeze(0))
    if bold:
        R = torch.as_tensor(bold_filter_autocorrelation(net), device=A.device)
        rho = _Rho.apply(lam, R, net.dt)
        K = K * (rho.unsqueeze(1) + rho.conj().unsqueeze(0))
    Vv = V[v * n:(v + 1) * n]
    C = (Vv @ K @ Vv.conj().transpose(0, 1)).real
    C = 0.5 * (C + C.transpose(0, 1))
    sd = torch.sqrt(torch.diagonal(C))
    fc = C / (sd.unsqueeze(1) * sd.unsqueeze(0))
    info = LinearInfo(fixed_point=fp.state, lambda_max=lam.real.max(), eigenvalues=lam, covariance=C,
                      variable=net.model.state_variables[v], residual=fp.residual)
    return fc, info


def linear_bold_fc(spec_or_twin, params: Optional[Mapping[str, object]] = None, **options) -> Tuple[Tensor, LinearInfo]:
    """``linear_fc(..., bold=True)``: FC of TVB's Bold monitor for the linearised network."""
    return linear_fc(spec_or_twin, params, bold=True, **options)
