"""Feedback inhibition control (Deco et al. 2014) for TVB's ReducedWongWangExcInh, differentiable.

FIC sets each node's local inhibitory weight J_i so that, at the network's fixed point, every node's
excitatory population fires at the same target rate H_e = ``target_rate`` (3 Hz in Deco et al. 2014),
whatever its long-range input. With the coupling of TVB's ``coupling.Linear`` (c = a W S_e + b, delays
irrelevant at a fixed point) the fixed point with H_e = r everywhere is known in closed form, node by node:

1. S_e from the rate, by the excitatory equation of the port at dS_e/dt = 0 with H_e = r (Hz):
   ``0 = -S_e / tau_e + (1 - S_e) r gamma_e``  =>  ``S_e = r gamma_e tau_e / (1 + r gamma_e tau_e)``
   (tau_e in ms, gamma_e in 1/(ms Hz), so r gamma_e tau_e is dimensionless; 3 Hz with TVB's defaults:
   S_e = 0.1613).
2. The long-range input c = a * (W @ S_e) + b (TVB's Linear coupling, weights as TVB froze them).
3. S_i from the port's own inhibitory equation dS_i/dt(S_e, S_i, c) = 0 (it does not contain J_i),
   by Newton's method in S_i from 0 (``rootfind.newton``): dS_i/dt is strictly decreasing and convex in S_i, so
   Newton converges monotonically (``tvb_torchfit.analyzers.low_state`` uses the same fact).
4. J_i from the port's own excitatory equation dS_e/dt(S_e, S_i, c; J_i) = 0: it is strictly decreasing
   and convex in J_i (J_i * S_i enters H_e's argument with a minus sign), so Newton converges from any
   start (after at most one step it approaches from the left).

Steps 3 and 4 evaluate only ``ReducedWongWangExcInh.dfun`` (derivatives by autograd), so every model
parameter (a_e, b_e, d_e, W_e, I_o, G, lamda, ...) comes from ``params`` as the port uses it; nothing is
re-typed. Only step 1 writes the leak/gain structure of dS_e/dt, with the parameters tau_e and gamma_e.

Gradients: both Newton solves run without a graph; then one Newton step each is taken with gradients
from the converged root with the derivative held constant (``rootfind.implicit_step``, the implicit
function theorem: exact first derivatives w.r.t. G, w_p, the coupling a, W-independent parameters, and
the target rate).
"""
from typing import Mapping, Optional, Tuple

import torch

from ..errors import ParameterError
from .network import FixedInput, Problem, network
from .values import DTYPE
from .rootfind import LocalSystem, implicit_step, newton

Tensor = torch.Tensor

__all__ = ["fic_J_i", "fic_state"]


def _root(system: LocalSystem, graph: LocalSystem, x0: Tensor, what: str) -> Tensor:
    """The root of a node-wise scalar equation (x (1, N, 1)) by plain Newton (no graph), then
    ``implicit_step`` with ``graph`` (the same equation with the parameters' graph)."""
    result = newton(system, x0, step_tol=1e-12, max_steps=100)
    if not result.converged:
        raise ParameterError(f"FIC: Newton's method for {what} did not converge; check the model parameters.")
    return implicit_step(graph, result.x, system.jacobian(result.x))


def _s_i_equation(prob: Problem, s_e: Tensor) -> LocalSystem:
    """dS_i/dt(S_e, S_i = x) = 0, x (1, N, 1)."""
    return LocalSystem(lambda x: prob.F(torch.stack((s_e, x[0])))[1:])


def _j_i_equation(prob: Problem, s_e: Tensor, s_i: Tensor) -> LocalSystem:
    """dS_e/dt(S_e, S_i; J_i = x) = 0, x (1, N, 1)."""
    return LocalSystem(lambda x: prob.with_params(J_i=x[0]).F(torch.stack((s_e, s_i)))[:1])


def fic_state(spec_or_twin, params: Optional[Mapping[str, object]] = None,
              target_rate=3.0) -> Tuple[Tensor, Tensor]:
    """(J_i (N,), fixed point (2, N)) with H_e = ``target_rate`` (Hz) at every node; see ``fic_J_i``."""
    net = network(spec_or_twin, params)
    model = net.model
    if "J_i" not in model.parameter_names or model.state_variables != ("S_e", "S_i"):
        raise ParameterError(f"feedback inhibition control sets J_i of ReducedWongWangExcInh; "
                             f"{model.tvb_class.__name__} has no J_i.")
    n, device = net.n_nodes, net.lo.device
    r = target_rate if torch.is_tensor(target_rate) else torch.as_tensor(target_rate, dtype=DTYPE)
    r = r.to(device=device, dtype=DTYPE).reshape(-1)
    if r.numel() not in (1, n) or not bool(torch.isfinite(r).all()) or bool((r <= 0).any()):
        raise ParameterError(f"target_rate={target_rate!r}: expected positive, finite firing rate(s) in Hz, "
                             f"one global value or one per node ({n}).")
    p = net.problem.params
    # 1. S_e from H_e = r at dS_e/dt = 0
    k = r.unsqueeze(1) * p["gamma_e"] * p["tau_e"]
    s_e = torch.broadcast_to(k / (1.0 + k), (n, 1))
    # 2. long-range input: the simulator's coupling on S_e (delays ignored)
    c = net.problem.inp(s_e)

    graph = Problem(model, p, FixedInput(c))
    plain = graph.detached()
    # 3. S_i: root of dS_i/dt (J_i does not enter it); 4. J_i: root of dS_e/dt in J_i
    zeros, ones = (torch.full((1, n, 1), v, dtype=DTYPE, device=device) for v in (0.0, 1.0))
    s_i = _root(_s_i_equation(plain, s_e.detach()), _s_i_equation(graph, s_e), zeros, "S_i")[0]
    j_i = _root(_j_i_equation(plain, s_e.detach(), s_i.detach()), _j_i_equation(graph, s_e, s_i), ones, "J_i")
    j_i = j_i[0, :, 0]
    if bool((j_i.detach() < 0).any()):
        bad = torch.nonzero(j_i.detach() < 0).flatten().tolist()
        raise ParameterError(f"FIC: target_rate {r.tolist()} Hz needs negative J_i at node(s) {bad[:10]}: their "
                             "rate without local inhibition is already below the target; lower the target or "
                             "raise the excitation (G, w_p).")
    return j_i, torch.stack((s_e, s_i))[..., 0]


def fic_J_i(spec_or_twin, params: Optional[Mapping[str, object]] = None, target_rate=3.0) -> Tensor:
    """J_i (N,) (nA) such that every node's excitatory rate H_e is ``target_rate`` Hz at the network's fixed
    point (Deco et al. 2014 FIC), for the model/coupling of ``spec_or_twin`` (``SimulatorSpec`` or
    ``TorchSimulator``) with ``params`` (TVB names, (1,) or (N,) tensors, may require grad) overriding it.
    Any J_i in ``params`` is ignored (it is what is computed). Differentiable w.r.t. the other parameters and
    ``target_rate`` (implicit function theorem). Raises ``ParameterError`` for a model without J_i, a
    non-positive rate, or a target that would need J_i < 0. Whether that fixed point is the stable low state
    is for ``tvb_torchfit.analyzers.linear.network_fixed_point`` / ``linear_fc`` to say.
    """
    return fic_state(spec_or_twin, params, target_rate)[0]
