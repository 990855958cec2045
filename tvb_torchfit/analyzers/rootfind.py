"""Roots of a vector field and their derivatives: one Newton iteration, one implicit step, one FixedPoint.

Every analyzer needs a point x* with F(x*; theta) = 0 and dx*/dtheta: the network's fixed point (``linear``),
each node's low fixed point (``bifurcation``), S_i on its nullcline and J_i at a target rate (``fic``).

* A *system* says what is solved: ``residual(x)`` = F(x), ``linearize(x)`` = (F(x), J(x)) without a graph,
  ``solve(J, r)`` = J^{-1} r and ``norm(r)``, the max |r| of each independent system (a scalar for one
  coupled network, one value per node for node-local systems). ``LocalSystem`` is the node-local one:
  F maps (nvar, ...) to (nvar, ...) and the trailing axes (nodes, batch, grid points) are independent, so
  J is (nvar, nvar, ...), one backward pass of autograd per row. The coupled network's dense system lives
  in ``network``.
* ``newton``: Newton's method without a graph, x <- x - t J(x)^{-1} F(x), each independent system
  stepping on its own (optional backtracking line search t = 1, 1/2, 1/4, ..., optional projection onto
  the state bounds and admissibility test).
* ``implicit_step``: from a converged, detached root x*, one Newton step *with* gradients and the Jacobian
  held constant, x = x* - J*^{-1} F(x*; theta). Its value is x* (F(x*) = 0) and its derivative is the implicit
  function theorem's, dx*/dtheta = -J*^{-1} dF/dtheta (exact first derivatives; second ones are not).
* ``FixedPoint``: what a fixed-point search returns, with ``Ghost`` for a low state that has passed its fold.
"""
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch

Tensor = torch.Tensor

__all__ = ["LocalSystem", "NewtonResult", "newton", "implicit_step", "solve_local", "FixedPoint", "Ghost"]


def solve_local(J: Tensor, r: Tensor) -> Tensor:
    """J^{-1} r for per-node systems: J (nvar, nvar, ...), r (nvar, ...). 1x1 and 2x2 in closed form
    (Cramer's rule), larger ones by ``torch.linalg.solve``."""
    if J.shape[0] == 1:
        return r / J[0, 0].unsqueeze(0)
    if J.shape[0] == 2:
        det = J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]
        return torch.stack(((J[1, 1] * r[0] - J[0, 1] * r[1]) / det, (J[0, 0] * r[1] - J[1, 0] * r[0]) / det))
    Jm = J.movedim((0, 1), (-2, -1))
    return torch.linalg.solve(Jm, r.movedim(0, -1).unsqueeze(-1))[..., 0].movedim(-1, 0)


class LocalSystem:
    """F(x), x (nvar, ...), with independent trailing axes: one nvar x nvar system per node (and batch member)."""

    def __init__(self, f: Callable[[Tensor], Tensor]):
        self.f = f

    def residual(self, x: Tensor) -> Tensor:
        return self.f(x)

    def jacobian(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """J[i, j] = d F_i / d x_j, (nvar, nvar, ...), by one backward pass of sum(F_i) per row i. With
        ``create_graph`` J is differentiable (in x if x carries a graph, and in what F depends on)."""
        return self.linearize(x, create_graph)[1]

    def linearize(self, x: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            F = self.f(x)
            rows = [torch.autograd.grad(F[i].sum(), x, create_graph=create_graph, retain_graph=True)[0]
                    for i in range(F.shape[0])]
        J = torch.stack(rows)
        return (F, J) if create_graph else (F.detach(), J.detach())

    @staticmethod
    def solve(J: Tensor, r: Tensor) -> Tensor:
        return solve_local(J, r)

    @staticmethod
    def norm(r: Tensor) -> Tensor:
        return r.abs().amax(0)


@dataclass
class NewtonResult:
    """``x`` the last iterate; ``residual`` the system norm of F there (per system; None for plain Newton
    without ``tol``, which never evaluates it); ``steps`` taken;
    ``converged``: the stopping criterion (``tol`` or ``step_tol``) was met by every system."""
    x: Tensor
    residual: Optional[Tensor]
    steps: int
    converged: bool


def newton(system, x0: Tensor, *, tol: float = 0.0, step_tol: float = 0.0, max_steps: int = 50,
           line_search: int = 0, strict: bool = True, project: Optional[Callable[[Tensor], Tensor]] = None,
           admissible: Optional[Callable[[Tensor], Tensor]] = None) -> NewtonResult:
    """Newton's method on ``system`` from ``x0``, without a graph; every independent system steps on its own.

    Each step is dx = J(x)^{-1} F(x). ``line_search`` = 0: the full step x - dx is always taken (then
    projected). ``line_search`` = k > 0: the step lengths t = 1, 1/2, ..., 2^(1-k) are tried in turn and
    the first candidate ``project(x - t dx)`` that is ``admissible`` and whose residual norm is finite and
    below (``strict``) or not above the current one is taken; a system with no such candidate keeps x.
    Stops when every system's residual norm is below ``tol``, when max |dx| <= ``step_tol`` * max(1, max |x|),
    when no system accepted a step, when x is not finite, or after ``max_steps`` steps.
    """
    x = x0.detach()
    res = system.norm(system.residual(x)) if tol > 0 or line_search > 0 else None
    steps = 0
    for _ in range(max_steps):
        active = None if res is None else res >= tol
        if active is not None and not bool(active.any()):
            return NewtonResult(x, res, steps, True)
        F, J = system.linearize(x)
        dx = system.solve(J, F)
        if line_search == 0:
            x = x - dx if project is None else project(x - dx)
            res = system.norm(system.residual(x)) if tol > 0 else None
            steps += 1
            if not bool(torch.isfinite(x).all()):
                return NewtonResult(x, res, steps, False)
        else:
            x, res, accepted = _backtrack(system, x, dx, res, active, line_search, strict, project, admissible)
            if not bool(accepted.any()):
                return NewtonResult(x, res, steps, False)
            steps += 1
        if step_tol > 0 and float(dx.abs().max()) <= step_tol * max(1.0, float(x.abs().max())):
            return NewtonResult(x, res, steps, True)
    return NewtonResult(x, res, steps, bool((res < tol).all()) if tol > 0 else False)


def _backtrack(system, x: Tensor, dx: Tensor, res: Tensor, active: Tensor, tries: int, strict: bool,
               project, admissible) -> Tuple[Tensor, Tensor, Tensor]:
    """Per system, the first of x - t dx, t = 1, 1/2, ... (``tries`` lengths) that is admissible and lowers
    (``strict``) or keeps the residual norm: (new x, new residual norm, accepted mask)."""
    t, accepted, new = 1.0, torch.zeros_like(res, dtype=torch.bool), x
    for _ in range(tries):
        cand = x - t * dx if project is None else project(x - t * dx)
        r = system.norm(system.residual(cand))
        better = r < res if strict else r <= res
        ok = active & ~accepted & torch.isfinite(r) & better
        if admissible is not None:
            ok = ok & admissible(cand)
        new = torch.where(ok, cand, new)
        res = torch.where(ok, r, res)
        accepted = accepted | ok
        if bool((accepted | ~active).all()):
            break
        t /= 2
    return new, res, accepted


def implicit_step(system, x_star: Tensor, J_star: Tensor) -> Tensor:
    """x* - J*^{-1} F(x*; theta): the converged root x* (detached) with the implicit function theorem's
    gradient, dx*/dtheta = -J*^{-1} dF/dtheta. ``system`` evaluates F with the graph of the parameters
    theta; ``J_star`` is its Jacobian at x*, held constant (no graph). (Applied again to its own result,
    which carries a graph, it is a chord Newton step.)"""
    return x_star - system.solve(J_star.detach(), system.residual(x_star))


@dataclass
class Ghost:
    """Where a node's low state has passed its saddle-node (fold); shapes (N, B) unless stated.

    vanished: the low state no longer exists: a positive minimum of the reduced field g (the "ghost",
              a bottleneck) lies below the fixed point returned.
    state:    (nvar, N, B) the ghost's location (the fixed point where not vanished); no grad.
    g_min:    the ghost's height dS_e/dt > 0 (1/ms), differentiable; 0 where not vanished.
    kappa:    g'' at the ghost (1/ms), no grad; 0 where not vanished.
    """
    vanished: Tensor
    state: Tensor
    g_min: Tensor
    kappa: Tensor


@dataclass
class FixedPoint:
    """A fixed point F(x*) = 0 of the model's vector field (1/ms), found without a graph and differentiable
    by ``implicit_step``.

    state:        (nvar, N) for the network, (nvar, N, B) per node; differentiable w.r.t. the parameters.
    residual:     max |F| at ``state`` (1/ms): a float for the network, (N, B) per node.
    lambda_max:   max Re eigenvalue of the Jacobian there (1/ms, float), None where not computed.
    newton_steps: Newton steps taken; ``relaxed_ms``: relaxation time before Newton (network search).
    ghost:        per-node search only: where the low state has vanished (``Ghost``).
    """
    state: Tensor
    residual: Union[float, Tensor]
    lambda_max: Optional[float] = None
    newton_steps: int = 0
    relaxed_ms: float = 0.0
    ghost: Optional[Ghost] = None

    @property
    def vanished(self) -> Tensor:
        """(N, B) bool: the low state has passed its fold (all False without ``ghost``)."""
        if self.ghost is None:
            return torch.zeros(self.state.shape[1:], dtype=torch.bool, device=self.state.device)
        return self.ghost.vanished
