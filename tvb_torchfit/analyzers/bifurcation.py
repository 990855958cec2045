"""Bifurcation constraint: keep the Wong-Wang E/I parameters near the point where the low state loses stability.

Griffiths et al. (2022) optionally constrain the fitted E/I parameters to lie near the bifurcation of the
neural mass, where the low-activity state is still stable but only just: the node relaxes slowly, noise
drives large slow fluctuations (metastability), and BOLD FC carries structure. This module implements that
constraint for TVB's ``ReducedWongWangExcInh`` and ``ReducedWongWang``, using the model ports' own ``dfun``
(``tvb_torchfit.simulator.models``; the equations are not re-written here).

What is penalised
-----------------
The largest real part ``lambda_max`` (1/ms) of the eigenvalues of each node's local Jacobian
``J = d dfun / d state`` (2x2 for ExcInh, 1x1 for RWW) at the node's *low-activity fixed point*.
``lambda_max < 0``: the low state is stable and ``-1/lambda_max`` is its relaxation time (ms);
``lambda_max -> 0-``: the low state is about to lose stability (critical slowing down).
``bifurcation_penalty`` acts on ``lambda_eff`` (below), which equals ``lambda_max`` wherever the low state
exists and is positive where it has vanished, and is zero inside a band [target - width, target + width]
below 0, quadratic outside. Scale: the bare decay of S_e is 1/tau_e = 0.01 1/ms, and TVB's default ExcInh
(G = 0) has lambda_max = -0.0060 1/ms, so the default band [-0.015, -0.005] means "no more stable than an
unconnected node"; a band hugging the fold is e.g. target -0.002 to -0.003, width 0.001 to 0.002 (0.1 in
J_i above the fold at w_p = 3 gives lambda_max = -0.004, 0.02 gives -0.0018).

How the low fixed point and the bifurcation are found (TVB's equations)
-----------------------------------------------------------------------
For ExcInh, ``dS_i/dt`` is strictly decreasing and convex in S_i (H is convex and increasing, S_i enters
its argument with a negative sign), so for every S_e there is exactly one S_i*(S_e) with dS_i/dt = 0,
reached monotonically by Newton's method from S_i = 0. The fixed points of a node are then the roots of the
one-dimensional function ``g(S_e) = dS_e/dt(S_e, S_i*(S_e))`` (for RWW, g is dfun itself), with
``g(0) > 0`` (H > 0) and ``g(1) = -1/tau_e < 0``. The *low fixed point* is the smallest root of g: it
is bracketed on a grid of S_e in [0, 1] (first sign change), refined by bisection and polished by damped
Newton steps on the full system (Jacobian from autograd on ``dfun``); the result is clamped to the state
bounds [0, 1]. A plain damped Newton iteration from a low start (S = 0.05) reaches the same point whenever
the low state exists (checked on the cases in the tests), but it cannot tell when it has converged to a
higher root instead: past the fold it silently lands on the high state (e.g. w_p = 2, J_i = 1, G = 0:
S_e = 0.62 with lambda_max < 0), which would make the penalty blind to a vanished low state. The bracket
guarantees the *lowest* root and exposes the ghost (below).

Since ``g'(S_e*) = det J / J_ii`` with ``J_ii = d(dS_i/dt)/dS_i < 0``, a zero eigenvalue of J is exactly a
double root of g: the low state dies in a **saddle-node (fold)**, where it merges with the middle (saddle)
fixed point. For TVB's ExcInh the trace of J stays well below 0 (for an isolated node J_ee <= -1/tau_e +
gamma_e*a_e*w_p*J_N ~ 0.03*w_p - 0.01 as H' <= 1, while J_ii <= -1/tau_i = -0.1; measured at the low fixed
points for w_p in [0.2, 4], J_i in [0, 3]: tr J <= -0.206 1/ms, eigenvalues always real), so no Hopf
bifurcation occurs there; the closed form below would report one (complex pair, real part tr/2) if a
coupling setting produced it.

Past the fold the low fixed point no longer exists: g keeps a positive local minimum (the "ghost", a
bottleneck) below the next fixed point. To give the penalty a value and a gradient there too, the signed
rate ``lambda_eff`` continues ``lambda_max`` through the fold with the saddle-node normal form
``dx/dt = mu + kappa/2 x^2``: before the fold the low root has ``g' = -sqrt(2 kappa |mu|)``, after it the
ghost has escape rate ``+sqrt(2 kappa g_min)`` (g_min the ghost's height, kappa = g'' there), mapped to the
2D eigenvalue scale by ``J_ii / tr J`` (as lambda ~ det/tr = g' J_ii / tr near the fold). ``lambda_eff``
is continuous across the fold (0 on both sides). It can jump where the ghost itself vanishes (g's local
minimum merging with its local maximum), i.e. where the high state continuously becomes the only state.

The bifurcation curve ``bifurcation_curve(param_x, xs, param_y, y_range)`` is, for each x, the y at which
``lambda_eff`` changes sign continuously (scipy ``brentq`` on a no-grad function, after a grid scan in y;
crossings where lambda_eff jumps rather than passes through 0 are discarded). A crossing where the low
state vanishes on the positive side is a saddle-node. What TVB's defaults give (measured, G = 0 /
zero coupling input): an isolated ExcInh node has no fold for w_p <= 2.22 (J_i in [0, 3]): its fixed point
is unique and moves continuously with J_i; lambda_max stays negative (closest to 0: -0.0062 1/ms at
w_p = 1.0). For w_p >= 1.2 there is a J_i window where that unique state is high with a ghost below it (e.g.
w_p = 1.4, J_i in [0.15, 0.43]); lambda_eff is positive there and jumps back to negative where the ghost
disappears (g's local minimum merging with its local maximum, not a fold). The fold curve starts at a cusp
near w_p = 2.23, J_i = 1.48 and rises: J_i* = 1.486 (w_p 2.24), 1.756 (2.6), 1.989 (3.0), 2.427 (4.0). With
network input (the ``"mean-field"`` option) the recurrent excitation G*J_N*a*sum_j W_kj adds to w_p*J_N
and brings the fold into the usual w_p range (connectivity_76 weights / max, a = 1, G = 0.1: J_i* = 1.551
at w_p 1.0, 1.825 at w_p 1.4). Near the cusp the window between the fold and the ghost's disappearance
is narrower than a coarse y grid: raise ``n_y`` there.
``python -m tvb_torchfit.analyzers.bifurcation`` prints those curves.

Coupling input
--------------
``coupling_input`` is what TVB's Linear coupling delivers to the model (c = a * sum_j W_kj S_e,j + b):

* ``None``: zero input (isolated nodes; equivalent to G = 0);
* a tensor (N or 1, B or 1): a fixed input;
* ``"mean-field"`` with ``weights`` (N, N) and ``coupling_a``, ``coupling_b``: the homogeneous mean-field
  closure c_k = a * (sum_j W_kj) * S_e,k + b, i.e. every node assumes its afferents sit in its own state.
  The fixed point is then self-consistent by construction, and the node's Jacobian includes the network
  feedback (d dfun/dc * a * sum_j W_kj in the S_e column). This is exact for the network's uniform mode when
  parameters and row sums are uniform; for a heterogeneous connectome it is a per-node approximation.

Differentiability
-----------------
Fixed points are found without gradients; then ``grad_steps`` (default 1) Newton steps are taken *with*
gradients from the converged, detached point, with the Jacobian held constant. At a converged point one
such step is exactly implicit differentiation: d x*/d theta = -J^{-1} d dfun/d theta. The eigenvalues use
the closed form for 2x2 matrices (trace and determinant) on a Jacobian computed by autograd with
``create_graph=True``, so lambda_max is differentiable with respect to every parameter (and the coupling
input) through both the fixed point and the Jacobian. On the ghost branch the gradient flows through g_min
(exact by the envelope theorem, since g' = 0 there); kappa and the 2D scale factor are held constant.

Shapes: parameters (N or 1, B or 1), as in the model ports (``default_params`` builds them); missing
parameters take TVB's defaults. States are (nvar, N, B). Everything is float64.
"""
import argparse
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..simulator.coupling import Linear
from ..simulator.models import ReducedWongWang, ReducedWongWangExcInh
from .low_state import CHUNK, low_state, node_shape
from .network import DTYPE, CouplingInput, FixedInput, Problem, as_float64, coupling_params, internal, parameters
from .rootfind import FixedPoint, LocalSystem

Tensor = torch.Tensor
Params = Mapping[str, Tensor]

__all__ = ["default_params", "from_spec", "from_twin", "low_fixed_point", "jacobian_eigs", "lambda_eff",
           "bifurcation_penalty", "bifurcation_curve", "FixedPoint", "Eigs", "Crossing", "BifurcationCurve",
           "MEAN_FIELD"]

MEAN_FIELD = "mean-field"
SUPPORTED = (ReducedWongWangExcInh, ReducedWongWang)


# --------------------------------------------------------------------------- parameters and inputs
def _as_param(name: str, value) -> Tensor:
    """A 2-D tensor is taken as the ports' internal layout (N or 1, B or 1); a number or TVB's (1,) / (N,)
    goes through ``registry.to_internal`` (one batch column)."""
    t = as_float64(name, value)
    if t.dim() == 2:
        return t
    if t.dim() > 2:
        raise ValueError(f"parameter {name!r} has shape {tuple(t.shape)}; expected (N or 1, B or 1).")
    return internal(name, t, n_nodes=max(1, t.numel()))


def default_params(model_port=ReducedWongWangExcInh, **overrides) -> Dict[str, Tensor]:
    """TVB's default parameters of ``model_port`` as float64 tensors (1, 1); ``overrides`` replace some.

    An override may be a number, a TVB-shaped array (1,) or (N,) (becomes (N, 1)), or a tensor (N or 1,
    B or 1) (kept as given, so it may require grad).
    """
    _check_port(model_port)
    unknown = set(overrides) - set(model_port.parameter_names)
    if unknown:
        raise ValueError(f"{model_port.__name__} has no parameter(s) {sorted(unknown)}; known: "
                         f"{', '.join(model_port.parameter_names)}.")
    tvb_model = model_port.tvb_class()
    out = {}
    for name in model_port.parameter_names:
        value = overrides[name] if name in overrides else np.asarray(getattr(tvb_model, name), dtype=np.float64)
        out[name] = _as_param(name, value)
    return out


def _check_port(model_port):
    if model_port not in SUPPORTED:
        raise TypeError(f"bifurcation analysis supports {', '.join(m.__name__ for m in SUPPORTED)}; "
                        f"got {getattr(model_port, '__name__', model_port)!r}.")


def _complete(model_port, params: Optional[Params]) -> Dict[str, Tensor]:
    """params with TVB defaults for the missing names (other keys, e.g. 'coupling.a', are ignored)."""
    params = dict(params or {})
    return default_params(model_port, **{k: v for k, v in params.items() if k in model_port.parameter_names})


def _make_input(coupling_input, weights=None, coupling_a=None, coupling_b=None, params=None):
    if coupling_input is None:
        return FixedInput(torch.zeros(1, 1, dtype=DTYPE))
    if isinstance(coupling_input, (CouplingInput, FixedInput)):
        if not coupling_input.local:
            raise ValueError("coupling_input: the network's coupling couples the nodes; use its mean-field "
                             "closure (from_spec) or a fixed input.")
        return coupling_input
    if isinstance(coupling_input, str):
        if coupling_input != MEAN_FIELD:
            raise ValueError(f"coupling_input={coupling_input!r}: expected None, a tensor (N or 1, B or 1) or "
                             f"{MEAN_FIELD!r}.")
        if weights is None:
            raise ValueError("coupling_input='mean-field' needs weights= (N, N), rows are targets, as TVB's.")
        params = params or {}
        if coupling_a is None:
            coupling_a = params.get("coupling.a", params.get("coupling_a"))
        if coupling_b is None:
            coupling_b = params.get("coupling.b", params.get("coupling_b", 0.0))
        if coupling_a is None:
            raise ValueError("coupling_input='mean-field' needs coupling_a= (TVB Linear coupling's a).")
        w = as_float64("weights", weights)
        if w.dim() != 2:
            raise ValueError(f"weights has shape {tuple(w.shape)}; expected (N, N) (or (n, N): rows of the "
                             "nodes analysed).")
        return CouplingInput(Linear, (_as_param("coupling_a", coupling_a), _as_param("coupling_b", coupling_b)),
                             w.sum(dim=1, keepdim=True), mean_field=True)
    return FixedInput(_as_param("coupling_input", coupling_input))


def _problem(model_port, params, coupling_input, weights, coupling_a, coupling_b) -> Problem:
    prob = Problem(model_port, _complete(model_port, params),
                   _make_input(coupling_input, weights, coupling_a, coupling_b, params))
    node_shape(prob)
    return prob


def from_spec(spec_or_twin, params: Optional[Mapping[str, object]] = None,
              coupling_input: Optional[str] = MEAN_FIELD) -> Dict[str, object]:
    """Keyword arguments for this module's functions from a ``SimulatorSpec``
    (``tvb_torchfit.simulator.read_simulator``) or a ``TorchSimulator``, with ``params`` overriding its values.

    ``params``: TVB names as in ``TorchSimulator.params``, in the public layout (1,), (N,), (B, 1), (B, N)
    (tensors may require grad); the rest are TVB's configured values (spec) or the twin's current params.
    ``coupling_input="mean-field"``: the simulator's coupling (port and parameters) in the homogeneous
    mean-field closure of its weights; ``None``: isolated nodes.

        penalty = bifurcation_penalty(**from_spec(spec, {"w_p": w_p}), target=-0.003, width=0.002)
    """
    spec, p = parameters(spec_or_twin, params)
    out = {"model_port": spec.model, "params": {k: p[k] for k in spec.model.parameter_names}}
    if coupling_input == MEAN_FIELD:
        w = torch.as_tensor(np.asarray(spec.weights, dtype=np.float64), device=p[spec.model.parameter_names[0]].device)
        out["coupling_input"] = CouplingInput(spec.coupling, coupling_params(spec, p), w.sum(dim=1, keepdim=True),
                                              mean_field=True)
    elif coupling_input is not None:
        raise ValueError(f"coupling_input={coupling_input!r}: expected 'mean-field' or None.")
    return out


def from_twin(twin, coupling_input: Optional[str] = MEAN_FIELD,
              params: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
    """``from_spec`` for a ``TorchSimulator`` (``tvb_torchfit.from_tvb``): its model port, its current
    parameters (differentiable if they require grad; public layout turned into (N or 1, B or 1), float64)
    and, for ``coupling_input="mean-field"``, its coupling in the mean-field closure of its weights.

        penalty = bifurcation_penalty(**from_twin(twin), target=-0.003, width=0.002)
    """
    return from_spec(twin, params, coupling_input)


# --------------------------------------------------------------------------- fixed point
def low_fixed_point(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None, *,
                    weights=None, coupling_a=None, coupling_b=None, grid: int = 513,
                    grad_steps: int = 1) -> FixedPoint:
    """The low-activity fixed point of every node, differentiable with respect to the parameters.

    model_port:      ``tvb_torchfit.simulator.models.ReducedWongWangExcInh`` or ``ReducedWongWang``.
    params:          dict of tensors (N or 1, B or 1), TVB names; missing ones take TVB's defaults.
    coupling_input:  None (zero input), a tensor (N or 1, B or 1), or ``"mean-field"`` (with ``weights``,
                     ``coupling_a``, ``coupling_b``: c_k = a * sum_j W_kj * S_e,k + b, self-consistent).
    grid:            S_e grid points used to bracket the lowest root.
    grad_steps:      Newton steps taken with gradients from the converged point (1 = implicit differentiation).
    Returns a ``FixedPoint`` (``.state`` is (nvar, N, B)).
    """
    return low_state(_problem(model_port, params, coupling_input, weights, coupling_a, coupling_b),
                     grid, grad_steps)


# --------------------------------------------------------------------------- eigenvalues
@dataclass
class Eigs:
    """Eigenvalues (1/ms) of the local Jacobian at the low fixed point; shapes (N, B) unless stated.

    lam_max:   largest real part (differentiable). re, im: (nvar, N, B), sorted by real part (descending).
    trace, det: of the Jacobian. jacobian: (nvar, nvar, N, B). fixed_point: the ``FixedPoint`` used.
    """
    lam_max: Tensor
    re: Tensor
    im: Tensor
    trace: Tensor
    det: Tensor
    jacobian: Tensor
    fixed_point: FixedPoint


def _eigs_2x2(J: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    if J.shape[0] == 1:
        lam = J[0, 0]
        return lam, lam.unsqueeze(0), torch.zeros_like(lam).unsqueeze(0), lam, lam
    tr = J[0, 0] + J[1, 1]
    det = J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]
    disc = tr * tr / 4 - det
    real = disc > 0
    sq = torch.sqrt(torch.where(real, disc, torch.ones_like(disc)))
    sq_im = torch.sqrt(torch.where(real, torch.ones_like(disc), -disc))
    half = tr / 2
    l1 = torch.where(real, half + sq, half)
    l2 = torch.where(real, half - sq, half)
    im = torch.where(real, torch.zeros_like(disc), sq_im)
    return l1, torch.stack((l1, l2)), torch.stack((im, -im)), tr, det


def _eigs(prob: Problem, fp: FixedPoint) -> Eigs:
    J = LocalSystem(prob.F).jacobian(fp.state, create_graph=prob.needs_grad() or fp.state.requires_grad)
    lam, re, im, tr, det = _eigs_2x2(J)
    return Eigs(lam_max=lam, re=re, im=im, trace=tr, det=det, jacobian=J, fixed_point=fp)


def jacobian_eigs(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None, *,
                  weights=None, coupling_a=None, coupling_b=None, fixed_point: Optional[FixedPoint] = None,
                  grid: int = 513) -> Eigs:
    """Eigenvalues of each node's local Jacobian (autograd on ``dfun``) at its low fixed point.

    Same arguments as ``low_fixed_point`` (pass ``fixed_point`` to reuse one). For the 2x2 case the closed
    form tr/2 +- sqrt(tr^2/4 - det) is used: real where the discriminant is positive, a complex pair with
    real part tr/2 otherwise. ``.lam_max`` is the largest real part in 1/ms, differentiable.
    """
    prob = _problem(model_port, params, coupling_input, weights, coupling_a, coupling_b)
    fp = fixed_point if fixed_point is not None else low_state(prob, grid)
    return _eigs(prob, fp)


def _lambda_eff(prob: Problem, grid: int = 513) -> Tuple[Tensor, Eigs]:
    e = _eigs(prob, low_state(prob, grid))
    fp = e.fixed_point
    if not bool(fp.vanished.any()):
        return e.lam_max, e
    if prob.nvar == 2:                       # 2D scale of the reduced rate: lambda ~ g' * J_ii / tr J
        Jg = LocalSystem(prob.F).jacobian(fp.ghost.state)
        scale = (Jg[1, 1] / (Jg[0, 0] + Jg[1, 1])).detach()
    else:
        scale = torch.ones_like(fp.ghost.kappa)
    g = torch.where(fp.vanished, fp.ghost.g_min, torch.ones_like(fp.ghost.g_min)).clamp_min(1e-300)
    rate = scale * torch.sqrt(2 * fp.ghost.kappa.clamp_min(1e-30) * g)
    return torch.where(fp.vanished, rate, e.lam_max), e


def lambda_eff(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None, *,
               weights=None, coupling_a=None, coupling_b=None, grid: int = 513) -> Tensor:
    """Signed stability rate (N, B), 1/ms: ``lambda_max`` at the low fixed point where it exists, the
    saddle-node normal-form escape rate of the ghost (> 0) where the low state has vanished."""
    prob = _problem(model_port, params, coupling_input, weights, coupling_a, coupling_b)
    return _lambda_eff(prob, grid)[0]


# --------------------------------------------------------------------------- penalty
def bifurcation_penalty(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None,
                        *, weights=None, coupling_a=None, coupling_b=None, target: float = -0.01,
                        width: float = 0.005, reduction: str = "mean", grid: int = 513) -> Tensor:
    """Penalty keeping each node's low state just below its loss of stability.

    With lambda = ``lambda_eff`` (``lambda_max`` at the low fixed point, continued past the saddle-node by
    the ghost's escape rate), the band is [target - width, target + width] (must lie below 0):

        penalty = (relu(lo - lambda)^2 + relu(lambda - hi)^2) / width^2

    i.e. 0 inside the band and quadratic outside: too stable (fast relaxation, lambda < lo) or too close
    to / past the fold (lambda > hi, including a vanished low state). Continuous first derivative.
    reduction: "mean" (scalar over nodes and batch), "sum", or "none" ((N, B)).
    """
    lo, hi = target - width, target + width
    if not width > 0:
        raise ValueError(f"width={width}: expected > 0.")
    if hi >= 0:
        raise ValueError(f"band [{lo}, {hi}] must lie below 0 (the low state must stay stable): lower target or "
                         "width.")
    prob = _problem(model_port, params, coupling_input, weights, coupling_a, coupling_b)
    lam, _ = _lambda_eff(prob, grid)
    pen = (torch.relu(lo - lam) ** 2 + torch.relu(lam - hi) ** 2) / width ** 2
    if reduction == "none":
        return pen
    if reduction == "sum":
        return pen.sum()
    if reduction == "mean":
        return pen.mean()
    raise ValueError(f"reduction={reduction!r}: expected 'mean', 'sum' or 'none'.")


# --------------------------------------------------------------------------- bifurcation curve
@dataclass
class Crossing:
    """One zero crossing of lambda_eff along y: y, kind ('saddle-node', 'hopf' or 'real'), the low S_e on
    the stable side, and the sign of d lambda_eff/dy (-1: the low state is stable above y)."""
    y: float
    kind: str
    s_e: float
    direction: int


@dataclass
class BifurcationCurve:
    """``y[i, k]``: the first crossing for ``x[i]`` and node k (NaN where lambda_eff keeps one sign in
    y_range); ``crossings[i][k]``: all continuous crossings; ``lam_max_peak[i, k]``: the largest
    lambda_eff on the scanned y grid (how close to the bifurcation the scan came)."""
    param_x: str
    param_y: str
    x: np.ndarray
    y: np.ndarray
    crossings: List[List[List[Crossing]]]
    lam_max_peak: np.ndarray
    y_range: Tuple[float, float]

    def table(self) -> str:
        lines = [f"{self.param_x:>8s}  critical {self.param_y} (node 0)  kind          max lambda on grid (1/ms)"]
        for i, x in enumerate(self.x):
            cs = self.crossings[i][0]
            y = "none in [%g, %g]" % self.y_range if not cs else ", ".join(f"{c.y:.6f}" for c in cs)
            kind = ", ".join(c.kind for c in cs) or "-"
            lines.append(f"{x:8.3f}  {y:>26s}  {kind:12s}  {self.lam_max_peak[i, 0]:+.3e}")
        return "\n".join(lines)


def _lambda_eff_np(prob: Problem, grid: int) -> Tuple[np.ndarray, Eigs]:
    with torch.no_grad():
        lam, e = _lambda_eff(prob.detached(), grid)
    return lam.detach().numpy(), e


def bifurcation_curve(param_x: str = "w_p", xs: Sequence[float] = (0.6, 0.8, 1.0, 1.2, 1.4), param_y: str = "J_i",
                      y_range: Tuple[float, float] = (0.0, 3.0), *, model_port=ReducedWongWangExcInh,
                      params: Optional[Params] = None, coupling_input=None, weights=None, coupling_a=None,
                      coupling_b=None, n_y: int = 121, grid: int = 513, xtol: float = 1e-10,
                      continuity_tol: float = 1e-3) -> BifurcationCurve:
    """For each x in ``xs`` (other parameters fixed), the y in ``y_range`` where ``lambda_eff`` crosses 0.

    ``lambda_eff`` is evaluated on ``n_y`` values of y at once (as a batch), every sign change is refined
    with ``scipy.optimize.brentq`` (no grad), and kept only if lambda_eff is within ``continuity_tol``
    (1/ms) of 0 on both sides of the root (a continuous crossing, not a jump where a ghost vanishes).
    With region-wise parameters or a mean-field input there is one curve per node.
    """
    from scipy.optimize import brentq

    base = _problem(model_port, params, coupling_input, weights, coupling_a, coupling_b).detached()
    for name in (param_x, param_y):
        if name not in model_port.parameter_names:
            raise ValueError(f"{name!r} is not a parameter of {model_port.__name__}.")
    N, B = node_shape(base)
    if B != 1:
        raise ValueError("bifurcation_curve needs parameters without a batch axis (B = 1).")
    ys = np.linspace(y_range[0], y_range[1], n_y)
    Y = np.full((len(xs), N), np.nan)
    peak = np.full((len(xs), N), np.nan)
    crossings: List[List[List[Crossing]]] = []
    for i, x in enumerate(xs):
        px = base.with_params(**{param_x: torch.tensor([[float(x)]], dtype=DTYPE)})
        chunk = max(1, CHUNK // (grid * N))          # one batch of y values per chunk
        lam = np.concatenate([_lambda_eff_np(px.with_params(**{param_y: torch.tensor(ys[j:j + chunk], dtype=DTYPE)
                                                                   .view(1, -1)}), grid)[0]
                              for j in range(0, n_y, chunk)], axis=1)      # (N, n_y)
        peak[i] = lam.max(axis=1)
        row = []
        for k in range(N):
            node = px.select_node(k) if N > 1 else px

            def f(y, node=node):
                return float(_lambda_eff_np(node.with_params(**{param_y: torch.tensor([[y]], dtype=DTYPE)}),
                                            grid)[0][0, 0])

            found = []
            s = np.sign(lam[k])
            for m in np.nonzero(s[:-1] * s[1:] < 0)[0]:
                a, b, fa = ys[m], ys[m + 1], lam[k, m]
                for _ in range(12):                 # bisect first: a jump (not a crossing) is dropped early
                    mid = 0.5 * (a + b)
                    fm = f(mid)
                    if fm * fa > 0:
                        a, fa = mid, fm
                    else:
                        b = mid
                if max(abs(fa), abs(f(b))) > continuity_tol:
                    continue
                r = brentq(f, a, b, xtol=xtol, rtol=4 * np.finfo(float).eps)
                eps = max(10 * xtol, 1e-9 * abs(r))
                below, above = f(r - eps), f(r + eps)
                if max(abs(below), abs(above)) > continuity_tol or below * above > 0:
                    continue
                y_stable = r - eps if below < 0 else r + eps
                pn = node.with_params(**{param_y: torch.tensor([[y_stable]], dtype=DTYPE)})
                _, e = _lambda_eff_np(pn, grid)
                y_unst = r + eps if below < 0 else r - eps
                _, e2 = _lambda_eff_np(node.with_params(**{param_y: torch.tensor([[y_unst]], dtype=DTYPE)}), grid)
                if bool(e2.fixed_point.vanished.all()):
                    kind = "saddle-node"
                elif float(e.im.abs().max()) > 0:
                    kind = "hopf"
                else:
                    kind = "real"
                found.append(Crossing(y=float(r), kind=kind, s_e=float(e.fixed_point.state[0, 0, 0]),
                                      direction=1 if above > below else -1))
            row.append(found)
            if found:
                Y[i, k] = found[0].y
        crossings.append(row)
    return BifurcationCurve(param_x=param_x, param_y=param_y, x=np.asarray(xs, dtype=float), y=Y,
                            crossings=crossings, lam_max_peak=peak, y_range=tuple(y_range))


# --------------------------------------------------------------------------- demo
def _mean_row_sum(name: str = "connectivity_76.zip") -> float:
    from tvb.datatypes.connectivity import Connectivity
    w = np.asarray(Connectivity.from_file(name).weights, dtype=np.float64)
    return float((w / w.max()).sum(axis=1).mean())


def main(argv=None):
    """Print the fold curve J_i*(w_p) of TVB's ExcInh at its defaults: isolated (G = 0), and with the
    mean-field input of connectivity_76 (weights / max, Linear coupling a = 1, b = 0, mean row sum)."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--w_p", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.2, 1.4, 2.6, 3.0, 3.5, 4.0])
    ap.add_argument("--J_i", type=float, nargs=2, default=[0.0, 3.0], help="J_i range scanned")
    ap.add_argument("--G", type=float, nargs="*", default=[0.1, 0.2], help="G values for the mean-field curves")
    ap.add_argument("--n_y", type=int, default=61, help="J_i grid points scanned before brentq")
    ap.add_argument("--plot", default=None, help="save a figure of the curves to this path (e.g. "
                                                 "demos/out/bifurcation_curve.png)")
    args = ap.parse_args(argv)
    t0 = time.time()
    curves = []
    print("ReducedWongWangExcInh, TVB defaults, zero coupling input (G = 0): critical J_i (lambda_eff = 0; "
          "the low state exists above it)")
    c0 = bifurcation_curve("w_p", args.w_p, "J_i", tuple(args.J_i), n_y=args.n_y)
    print(c0.table())
    curves.append(("G = 0 (isolated node)", c0))
    if args.G:
        R = _mean_row_sum()
        for G in args.G:
            c = bifurcation_curve("w_p", args.w_p, "J_i", tuple(args.J_i), params={"G": G}, n_y=args.n_y,
                                  coupling_input=MEAN_FIELD, weights=np.array([[R]]), coupling_a=1.0,
                                  coupling_b=0.0)
            print(f"\nmean-field input, connectivity_76 (weights / max, mean row sum {R:.2f}), a = 1, G = {G}:")
            print(c.table())
            curves.append((f"mean field, G = {G}, row sum {R:.1f}", c))
    print(f"\n{time.time() - t0:.1f} s")
    if args.plot:
        import os
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for label, c in curves:
            ax.plot(c.x, c.y[:, 0], "o-", label=label)
        ax.set_xlabel("w_p")
        ax.set_ylabel("critical J_i")
        ax.set_ylim(*args.J_i)
        ax.legend(fontsize=8)
        ax.set_title("ExcInh: low state exists above the curve", fontsize=10)
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print("wrote", args.plot)


if __name__ == "__main__":
    main()
