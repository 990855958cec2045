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
1. ``network_fixed_point`` (``analyzers.network``): x* with F(x*) = 0 for the whole network,
   ``F(x) = dfun(x, c(x), p)`` in 1/ms, reached the way TVB reaches it from its low start (Euler
   relaxation from 0.05, then Newton with the network Jacobian: ``rootfind.newton``). No convergence, a
   point outside the state bounds, or (by default) a Jacobian with max Re(eigenvalue) >= 0 raise
   ``FixedPointError`` / ``UnstableFixedPointError`` (``ParameterError``s), never NaN. *Gradients*: one
   Newton step from the detached x* with the Jacobian held constant (``rootfind.implicit_step``: the
   implicit function theorem, ``dx*/dtheta = -A^{-1} dF/dtheta``, first derivatives exact).
2. ``network_jacobian`` (``analyzers.network``): A (nvar*N x nvar*N), variable-major,
   ``A = blockdiag_k(d dfun/d x at node k) + e_cvar-column (d dfun/d c) * (d post/d gx) * W`` (for Linear
   coupling d post/d gx = a), differentiable in x and the parameters.
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
   ``torch.linalg.eig``'s backward needs distinct eigenvalues; identical nodes (unconnected regions, symmetric
   toy networks) have equal ones, so the eigendecomposition's backward here (``_Eig``) gives degenerate pairs a
   zero weight instead of inf / NaN.

Batches (``linear_fc_batch``): B networks of the same model, node count, dt and Bold kernel, each with its own
weights and parameter values (``linear_network`` of each), in one pass: ``analyzers.network.stack_networks``,
``search_fixed_points`` (each network's own search and its own error), then the Jacobians, ``torch.linalg.eig`` and
the covariances above on (B, ...) stacks. The same functions compute one network (B = 1); a network without a stable
fixed point gets its error and the others their FC.

Caller's side (``fit``): ``linear_bold_fc(twin, {"G": G, "w_p": w_p, "J_i": J_i})`` with tensors in
TVB's layout (1,) global or (N,) region-wise (they may require grad); names as ``TorchSimulator.params``
(model parameter names, ``"coupling.a"``, ``"coupling.b"``, ``"noise.nsig"``); anything not given is
taken from the twin's current params (or, for a ``SimulatorSpec``, from TVB's configured values).
Everything is float64 and CPU/any device of the given tensors (the spec's arrays go to that device).
Time in ms, rates in 1/ms; eigenvalues in 1/ms.
"""
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ParameterError
from ..simulator.registry import NOISE_NSIG
from .network import (FixedPointError, Network, NetworkSystem, UnstableFixedPointError, build_network, network_dfun,
                      network_fixed_point, network_jacobian, search_fixed_points, stack_networks)
from .values import simulator_values
from .rootfind import FixedPoint, implicit_step

DTYPE = torch.float64
Tensor = torch.Tensor

__all__ = ["FixedPointError", "UnstableFixedPointError", "LinearNetwork", "FixedPoint", "LinearInfo",
           "linear_network", "network_dfun", "network_fixed_point", "network_jacobian", "linear_fc",
           "linear_bold_fc", "linear_fc_batch", "stack_linear", "bold_filter_autocorrelation"]


# --------------------------------------------------------------------------- the network, as tensors
@dataclass
class LinearNetwork:
    """What the linearisation needs from a simulator, as float64 tensors.

    ``network``: the vector field and state bounds (``analyzers.network.Network``, one parameter set, or B
    stacked networks: ``stack_linear``); ``nsig`` (nvar, N) the noise's diffusion coefficients ((B, nvar, N) stacked); ``dt`` the integration step (ms); ``bold``: the
    Bold monitor's (weights newest block first, interim_istep, k1_V0) or None; ``variable``: the index of
    the state variable observed.
    """
    network: Network
    nsig: Tensor
    dt: float
    bold: Optional[Tuple[np.ndarray, int, Optional[float]]]
    variable: int

    @property
    def model(self) -> type:
        return self.network.model

    @property
    def n_nodes(self) -> int:
        return self.network.n_nodes

    @property
    def nvar(self) -> int:
        return self.network.nvar


def _bold_and_variable(spec, variable: Optional[str]):
    bold, voi = None, None
    for mon in spec.monitors:
        if mon.kind == "Bold":
            newest_first = np.roll(np.asarray(mon.hrf_reversed, dtype=np.float64), -1)[::-1].copy()
            bold = (newest_first, int(mon.interim_istep), mon.k1_V0)
            voi = int(spec.model_voi[int(mon.voi[0])])
            break
    model = spec.model
    if variable is not None:
        if variable not in model.state_variables:
            raise ParameterError(f"variable={variable!r}: {model.tvb_class.__name__} has state variables "
                                 f"{', '.join(model.state_variables)}.")
        voi = model.state_variables.index(variable)
    elif voi is None:
        voi = int(spec.model_voi[0])
    return bold, voi


def linear_network(spec_or_twin, params: Optional[Mapping[str, object]] = None,
                   variable: Optional[str] = None) -> LinearNetwork:
    """Collect model, coupling, noise, bounds and Bold kernel of a ``SimulatorSpec`` or ``TorchSimulator``.

    ``params`` (name -> number/array/tensor in the public layout, (1,) or (N,); TVB names as in
    ``TorchSimulator.params``) override the spec's configured values / the twin's current params.
    ``variable``: the observed state variable by name; default the Bold monitor's (first) variable of
    interest, else the model's first one. A deterministic simulator gets unit noise (FC is scale-free).
    """
    spec, p = simulator_values(spec_or_twin, params, batch=1)
    net = build_network(spec, p)
    nsig = p.get(NOISE_NSIG)
    shape = (net.nvar, net.n_nodes)
    nsig = torch.ones(shape, dtype=DTYPE, device=net.lo.device) if nsig is None else torch.broadcast_to(nsig[..., 0],
                                                                                                      shape)
    bold, voi = _bold_and_variable(spec, variable)
    return LinearNetwork(network=net, nsig=nsig, dt=float(spec.dt), bold=bold, variable=voi)


def stack_linear(nets: Sequence[LinearNetwork]) -> LinearNetwork:
    """B ``LinearNetwork``s of the same model, nodes, dt, Bold kernel and observed variable as one stacked one
    (``analyzers.network.stack_networks``; nsig (B, nvar, N))."""
    first = nets[0]
    for k, net in enumerate(nets):
        same_bold = (net.bold is None) == (first.bold is None) and (net.bold is None or (
            net.bold[1:] == first.bold[1:] and np.array_equal(net.bold[0], first.bold[0])))
        if net.dt != first.dt or net.variable != first.variable or not same_bold:
            raise ParameterError(f"network {k} cannot be batched with network 0: expected the same integration step "
                                 f"(dt {net.dt} vs {first.dt} ms), observed variable and Bold monitor (kernel, period).")
    if len(nets) == 1:
        return first
    return LinearNetwork(network=stack_networks([n.network for n in nets]), nsig=torch.stack([n.nsig for n in nets]),
                         dt=first.dt, bold=first.bold, variable=first.variable)


def _net(spec_or_twin, params, variable=None) -> LinearNetwork:
    return spec_or_twin if isinstance(spec_or_twin, LinearNetwork) else linear_network(spec_or_twin, params, variable)


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


EIG_BROADENING = 1e-12              # relative to max |lambda|: eigenvalue gaps below it count as degenerate


class _Eig(torch.autograd.Function):
    """``torch.linalg.eig`` whose backward stays finite where eigenvalues coincide.

    The reverse-mode formula is torch's own (``gA = V^{-H} (diag(g_lambda) + (V^H gV - V^H V diag(Re V^H gV)) / E*)
    V^H``, E_ij = lambda_j - lambda_i, the real part for a real A) with ``1 / E*_ij`` replaced by
    ``E_ij / (|E_ij|^2 + delta^2)``, delta = ``EIG_BROADENING`` x max |lambda|: the same away from degeneracy, 0 at it.
    Exactly equal eigenvalues are not rare here: identical nodes (e.g. two unconnected regions, as connectivity_76's
    37 and 75) have identical local eigenvalues, and LAPACK returns them equal or 1 ulp apart depending on the last
    bits of A, where torch's backward gives inf / NaN. The covariance computed from them does not depend on the basis
    chosen inside a degenerate eigenspace, so those pairs contribute nothing (numerator and broadened weight ~0)."""

    @staticmethod
    def forward(ctx, A):
        lam, V = torch.linalg.eig(A)
        ctx.save_for_backward(lam, V)
        ctx.real_input = not A.is_complex()
        return lam, V

    @staticmethod
    def backward(ctx, g_lam, g_V):
        lam, V = ctx.saved_tensors
        Vh = V.conj().transpose(-1, -2)
        inner = torch.zeros_like(V)
        if g_V is not None:
            E = lam.unsqueeze(-2) - lam.unsqueeze(-1)                            # E_ij = lambda_j - lambda_i
            delta = EIG_BROADENING * lam.abs().amax(dim=-1, keepdim=True).unsqueeze(-1)
            VhgV = Vh @ g_V
            inner = (VhgV - (Vh @ V) * VhgV.diagonal(dim1=-2, dim2=-1).real.unsqueeze(-2)) * (
                E / (E.abs() ** 2 + delta ** 2))
        if g_lam is not None:
            inner = inner + torch.diag_embed(g_lam)
        gA = torch.linalg.solve(Vh, inner @ Vh)
        return gA.real if ctx.real_input else gA


class _Rho(torch.autograd.Function):
    """rho(lambda) = R(0)/2 + sum_{m>=1} R(m) exp(lambda m dt), holomorphic, and rho'(lambda).

    Lags are split as m = q C + j (C ~ sqrt(L)), ``exp(lambda m dt) = exp(lambda q C dt) exp(lambda j dt)``, so
    ``rho = sum_q exp(lambda q C dt) sum_j R(q C + j) exp(lambda j dt)``: about 2 sqrt(L) exponentials per
    eigenvalue and one matrix product instead of L exponentials (Re lambda < 0 at a stable point, so every factor
    has modulus <= 1).
    """

    @staticmethod
    def _eval(lam: Tensor, R: Tensor, dt: float, deriv: bool):
        L = R.shape[0]
        C = max(1, int(np.ceil(np.sqrt(L))))
        Q = -(-L // C)
        m = torch.arange(Q * C, dtype=DTYPE, device=lam.device)
        w = torch.zeros(Q * C, dtype=DTYPE, device=lam.device)
        w[:L] = R
        w[0] = 0.5 * R[0]                                                   # the m = 0 term: R(0)/2
        steps = torch.arange(C, dtype=DTYPE, device=lam.device) * dt
        within = torch.exp(lam.unsqueeze(1) * steps.to(lam.dtype))          # (modes, C): exp(lambda j dt)
        starts = torch.arange(Q, dtype=DTYPE, device=lam.device) * (C * dt)
        blocks = torch.exp(lam.unsqueeze(1) * starts.to(lam.dtype))         # (modes, Q): exp(lambda q C dt)

        def weighted(weights: Tensor) -> Tensor:                            # sum_m weights(m) exp(lambda m dt)
            return (blocks * (within @ weights.reshape(Q, C).transpose(0, 1).to(lam.dtype))).sum(dim=1)
        val = weighted(w)
        der = weighted(w * m * dt) if deriv else torch.zeros_like(lam)
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


def _covariance(net: LinearNetwork, state: Tensor, bold: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(FC, covariance, eigenvalues of A) at the fixed point ``state`` (nvar, N, B) (differentiable); shapes (N, N),
    (N, N), (M,) for one network, with a leading B for stacked ones (module docstring, 3.)."""
    A = NetworkSystem(net.network.problem).linearize(state, create_graph=True)[1]
    lam, V = _Eig.apply(A)
    n, v = net.n_nodes, net.variable
    Vinv = torch.linalg.inv(V)
    q = (2.0 * net.nsig).flatten(-2).to(V.dtype)                                # Q = diag(2 nsig)
    H = lambda X: X.conj().transpose(-1, -2)                                    # noqa: E731
    M = (Vinv * q.unsqueeze(-2)) @ H(Vinv)
    K = -M / (lam.unsqueeze(-1) + lam.conj().unsqueeze(-2))
    if bold:
        R = torch.as_tensor(bold_filter_autocorrelation(net), device=A.device)
        rho = _Rho.apply(lam.reshape(-1), R, net.dt).reshape(lam.shape)
        K = K * (rho.unsqueeze(-1) + rho.conj().unsqueeze(-2))
    Vv = V[..., v * n:(v + 1) * n, :]
    C = (Vv @ K @ H(Vv)).real
    C = 0.5 * (C + C.transpose(-1, -2))
    sd = torch.sqrt(torch.diagonal(C, dim1=-2, dim2=-1))
    return C / (sd.unsqueeze(-1) * sd.unsqueeze(-2)), C, lam


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
    fc, C, lam = _covariance(net, fp.state.unsqueeze(-1), bold)
    info = LinearInfo(fixed_point=fp.state, lambda_max=lam.real.max(), eigenvalues=lam, covariance=C,
                      variable=net.model.state_variables[net.variable], residual=fp.residual)
    return fc, info


def linear_fc_batch(nets: Sequence[LinearNetwork], *, bold: bool = True,
                    initial: Optional[Sequence[Optional[Tensor]]] = None,
                    **fixed_point_options) -> List[Union[Tuple[Tensor, LinearInfo], FixedPointError]]:
    """``linear_fc`` of B networks in one pass: per network (FC (N, N), ``LinearInfo``), or the
    ``FixedPointError`` that ``linear_fc`` would raise for it alone (the others are computed without it).

    ``nets``: ``linear_network(spec_b, values_b)`` of each (same model, nodes, dt, Bold kernel; own weights and
    values, which may require grad: gradients reach each network's own values). ``initial``: one warm start
    (nvar, N) or None per network. Options of ``network_fixed_point`` pass through.
    """
    nets = list(nets)
    if not nets:
        return []
    stacked = stack_linear(nets)
    x, A, found = search_fixed_points(stacked.network, initial=None if initial is None else list(initial),
                                      **fixed_point_options)
    ok = [k for k, f in enumerate(found) if not isinstance(f, FixedPointError)]
    out: List = list(found)
    if not ok:
        return out
    sub = stack_linear([nets[k] for k in ok])
    xs, As = x[..., ok], (A[ok] if A.dim() == 3 else A)
    if As.dim() == 3 and len(ok) == 1:                      # one network left: unstacked
        As = As[0]
    if sub.network.problem.needs_grad():
        xs = implicit_step(NetworkSystem(sub.network.problem), xs, As)
    fc, C, lam = _covariance(sub, xs, bold)
    if len(ok) == 1:
        fc, C, lam = fc.unsqueeze(0), C.unsqueeze(0), lam.unsqueeze(0)
    names = stacked.model.state_variables
    for j, k in enumerate(ok):
        out[k] = (fc[j], LinearInfo(fixed_point=xs[..., j], lambda_max=lam[j].real.max(), eigenvalues=lam[j],
                                    covariance=C[j], variable=names[stacked.variable], residual=found[k].residual))
    return out


def linear_bold_fc(spec_or_twin, params: Optional[Mapping[str, object]] = None, **options) -> Tuple[Tensor, LinearInfo]:
    """``linear_fc(..., bold=True)``: FC of TVB's Bold monitor for the linearised network."""
    return linear_fc(spec_or_twin, params, bold=True, **options)
