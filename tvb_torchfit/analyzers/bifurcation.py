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
Newton steps on the full system (Jacobian from autograd on ``dfun``; ``low_state``, with the package's one
Newton iteration ``rootfind.newton``); the result is clamped to the state bounds [0, 1]. A plain damped
Newton iteration from a low start (S = 0.05) reaches the same point whenever the low state exists
(checked on the cases in the tests), but it cannot tell when it has converged to a higher root instead:
past the fold it silently lands on the high state (e.g. w_p = 2, J_i = 1, G = 0: S_e = 0.62 with
lambda_max < 0), which would make the penalty blind to a vanished low state. The bracket
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
  parameters and row sums are uniform; for a heterogeneous connectome it is a per-node approximation;
* a ``network.CouplingInput`` (mean-field) or ``network.FixedInput``: what ``from_spec`` builds from a
  simulator, through its coupling port (``spec.coupling.post`` and ``parameter_names``).

From a simulator
----------------
``from_spec(spec_or_twin, params)`` (a ``SimulatorSpec`` from ``simulator.read_simulator``, or a
``TorchSimulator``; ``params`` in the public layout (1,), (N,), (B, 1), (B, N), converted by
``registry.to_internal``) and ``from_twin(twin)`` return the keyword arguments of every function here:

    bifurcation_penalty(**from_spec(spec, {"w_p": w_p, "J_i": J_i}), target=-0.003, width=0.002)

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

Modules: ``node_problem`` (these keyword arguments -> a node-local ``network.Problem``), ``low_state`` (the
low fixed point and its ghost), ``stability`` (eigenvalues, lambda_eff), ``fold_curve`` (the curve, ``main``).
"""
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from ..simulator.models import ReducedWongWangExcInh
from .fold_curve import BifurcationCurve, Crossing, bifurcation_curve, main
from .low_state import low_state
from .network import CouplingInput
from .values import coupling_values, simulator_values
from .node_problem import MEAN_FIELD, Params, default_params, node_problem
from .rootfind import FixedPoint
from .stability import Eigs, node_eigs, stability_rate

Tensor = torch.Tensor

__all__ = ["default_params", "from_spec", "from_twin", "low_fixed_point", "jacobian_eigs", "lambda_eff",
           "bifurcation_penalty", "bifurcation_curve", "main", "FixedPoint", "Eigs", "Crossing",
           "BifurcationCurve", "MEAN_FIELD"]


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
    spec, p = simulator_values(spec_or_twin, params)
    out = {"model_port": spec.model, "params": {k: p[k] for k in spec.model.parameter_names}}
    if coupling_input == MEAN_FIELD:
        w = torch.as_tensor(np.asarray(spec.weights, dtype=np.float64), device=p[spec.model.parameter_names[0]].device)
        out["coupling_input"] = CouplingInput(spec.coupling, coupling_values(spec, p), w.sum(dim=1, keepdim=True),
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


# --------------------------------------------------------------------------- fixed point, eigenvalues
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
    return low_state(node_problem(model_port, params, coupling_input, weights, coupling_a, coupling_b),
                     grid, grad_steps)


def jacobian_eigs(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None, *,
                  weights=None, coupling_a=None, coupling_b=None, fixed_point: Optional[FixedPoint] = None,
                  grid: int = 513) -> Eigs:
    """Eigenvalues of each node's local Jacobian (autograd on ``dfun``) at its low fixed point.

    Same arguments as ``low_fixed_point`` (pass ``fixed_point`` to reuse one). For the 2x2 case the closed
    form tr/2 +- sqrt(tr^2/4 - det) is used: real where the discriminant is positive, a complex pair with
    real part tr/2 otherwise. ``.lam_max`` is the largest real part in 1/ms, differentiable.
    """
    prob = node_problem(model_port, params, coupling_input, weights, coupling_a, coupling_b)
    fp = fixed_point if fixed_point is not None else low_state(prob, grid)
    return node_eigs(prob, fp)


def lambda_eff(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None, *,
               weights=None, coupling_a=None, coupling_b=None, grid: int = 513) -> Tensor:
    """Signed stability rate (N, B), 1/ms: ``lambda_max`` at the low fixed point where it exists, the
    saddle-node normal-form escape rate of the ghost (> 0) where the low state has vanished."""
    prob = node_problem(model_port, params, coupling_input, weights, coupling_a, coupling_b)
    return stability_rate(prob, grid)[0]


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
    prob = node_problem(model_port, params, coupling_input, weights, coupling_a, coupling_b)
    lam, _ = stability_rate(prob, grid)
    pen = (torch.relu(lo - lam) ** 2 + torch.relu(lam - hi) ** 2) / width ** 2
    if reduction == "none":
        return pen
    if reduction == "sum":
        return pen.sum()
    if reduction == "mean":
        return pen.mean()
    raise ValueError(f"reduction={reduction!r}: expected 'mean', 'sum' or 'none'.")


if __name__ == "__main__":
    main()
