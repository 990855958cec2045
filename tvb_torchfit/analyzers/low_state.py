"""Each node's low-activity fixed point, and its ghost where it has vanished (Wong-Wang models).

A node-local ``network.Problem`` (a fixed or mean-field coupling input: every node is its own system) has,
for ExcInh, ``dS_i/dt`` strictly decreasing and convex in S_i (H is convex and increasing, S_i enters its
argument with a negative sign), so for every S_e there is exactly one S_i*(S_e) with dS_i/dt = 0, reached
monotonically by Newton's method from S_i = 0 (``slaved``). The node's fixed points are then the roots of
the reduced field ``g(S_e) = dS_e/dt(S_e, S_i*(S_e))`` (for RWW, g is dfun itself), with g(0) > 0 and
g(1) < 0. ``find_low`` brackets the smallest root on a grid of S_e in [0, 1] (first sign change), refines it
by bisection and polishes it by damped Newton steps on the full system (``rootfind.newton``, kept inside
the bracket); where g has a positive local minimum below the first sign change (the low state has passed
its fold) that minimum is the *ghost* (golden-section search), with its height g_min and curvature kappa.

``low_state`` returns it as a ``rootfind.FixedPoint`` with a ``rootfind.Ghost``: the state differentiable
by ``rootfind.implicit_step``, g_min differentiable through S_i on its nullcline (envelope theorem: g' = 0
at the ghost). States are (nvar, N, B), parameters (N or 1, B or 1); float64; everything in 1/ms.
"""
import math
from typing import Optional, Tuple

import torch

from .network import Problem
from .rootfind import FixedPoint, Ghost, LocalSystem, implicit_step, newton
from .values import DTYPE

Tensor = torch.Tensor
CHUNK = 16384            # elementwise work per call, so that large grids stay cache-sized

__all__ = ["CHUNK", "node_shape", "slaved", "reduced_field", "find_low", "low_state"]


def node_shape(prob: Problem) -> Tuple[int, int]:
    """(N, B): the broadcast shape of the parameters and the (node-local) coupling input."""
    try:
        shape = torch.broadcast_shapes(*[tuple(t.shape) for t in prob.tensors()])
    except RuntimeError as err:
        raise ValueError(f"parameters and coupling input do not broadcast to (N, B): {err}") from None
    if len(shape) != 2:
        raise ValueError(f"parameters broadcast to {shape}; expected (N, B).")
    return shape


def _clamp01(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def slaved(prob: Problem, s_e: Tensor, start: Optional[Tensor] = None) -> Optional[Tensor]:
    """S_i*(S_e): the unique root of dS_i/dt for given S_e (ExcInh; None for a one-variable model), by plain
    Newton from 0 or ``start`` (no grad): monotone from the left, and from the right after one step."""
    if prob.nvar == 1:
        return None
    s_e = s_e.detach()
    x0 = torch.zeros_like(s_e) if start is None else start.detach().expand_as(s_e).clone()
    system = LocalSystem(lambda x: prob.F(torch.stack((s_e, x[0])))[1:])
    return newton(system, x0.unsqueeze(0), step_tol=1e-12, max_steps=100, project=_clamp01).x[0]


def _state(prob: Problem, s_e: Tensor, start: Optional[Tensor] = None) -> Tensor:
    s_i = slaved(prob, s_e, start)
    return s_e.unsqueeze(0) if s_i is None else torch.stack((s_e, s_i))


def reduced_field(prob: Problem, s_e: Tensor, start: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """(g(S_e), S_i*(S_e)), g = dS_e/dt on the S_i-nullcline (no grad); ``start``: a warm start for S_i."""
    x = _state(prob, s_e, start)
    with torch.no_grad():
        return prob.F(x)[0], (x[1] if prob.nvar == 2 else None)


def _g(prob: Problem, s_e: Tensor) -> Tensor:
    return reduced_field(prob, s_e)[0]


def _golden_min(prob: Problem, a: Tensor, b: Tensor, iters: int = 32) -> Tuple[Tensor, Tensor]:
    """Vectorised golden-section minimisation of g on [a, b] (no grad): (argmin, min)."""
    r = (math.sqrt(5.0) - 1.0) / 2.0
    c = b - r * (b - a)
    d = a + r * (b - a)
    gc, s_i = reduced_field(prob, c)
    gd, s_i = reduced_field(prob, d, s_i)
    for _ in range(iters):
        left = gc < gd                     # minimum in [a, d]
        a, b = torch.where(left, a, c), torch.where(left, d, b)
        new = torch.where(left, b - r * (b - a), a + r * (b - a))
        gn, s_i = reduced_field(prob, new, s_i)
        c, d, gc, gd = (torch.where(left, new, d), torch.where(left, c, new),
                        torch.where(left, gn, gd), torch.where(left, gc, gn))
    s = torch.where(gc < gd, c, d)
    return s, _g(prob, s)


def _polish(prob: Problem, x: Tensor, lo: Tensor, hi: Tensor, steps: int = 8) -> Tensor:
    """Damped Newton steps on the full node system (no grad), each kept only if S_e stays in its bracket
    [lo, hi] and the residual does not grow (otherwise the step is halved, up to 4 times)."""
    return newton(LocalSystem(prob.F), x, step_tol=1e-13, max_steps=steps, line_search=5, strict=False,
                  project=_clamp01, admissible=lambda cand: (cand[0] >= lo) & (cand[0] <= hi)).x


def find_low(prob: Problem, grid: int = 513, bisections: int = 24) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """No-grad search: (low root state (nvar, N, B), vanished (N, B), ghost state, g_min, kappa)."""
    N, B = node_shape(prob)
    S = torch.linspace(0.0, 1.0, grid, dtype=DTYPE).view(grid, 1, 1).expand(grid, N, B).contiguous()
    step = max(1, CHUNK // (N * B))
    g = torch.cat([_g(prob, S[i:i + step]) for i in range(0, grid, step)])   # (grid, N, B)
    idx = torch.arange(grid).view(grid, 1, 1)
    # first sign change + -> <= 0 (g(0) > 0 and g(1) < 0 for these models)
    nonpos = g[1:] <= 0
    i0 = torch.where(nonpos.any(0), nonpos.int().argmax(0), torch.full((N, B), grid - 2))     # (N, B)
    # grid-local minima of g strictly before the first sign change (g > 0 there)
    interior = (g[1:-1] <= g[:-2]) & (g[1:-1] < g[2:])                        # index j = 1..grid-2
    cand = interior & (idx[1:-1] <= i0.unsqueeze(0)) & (g[1:-1] > 0)
    has_min = cand.any(0)
    jmin = torch.where(cand, g[1:-1], torch.full_like(g[1:-1], math.inf)).argmin(0) + 1      # (N, B)
    h = 1.0 / (grid - 1)
    lo = i0.to(DTYPE) * h
    hi = lo + h
    vanished = torch.zeros(N, B, dtype=torch.bool)
    s_ghost = torch.zeros(N, B, dtype=DTYPE)
    g_min = torch.zeros(N, B, dtype=DTYPE)
    if bool(has_min.any()):
        a, b = (jmin - 1).to(DTYPE) * h, (jmin + 1).to(DTYPE) * h
        s_m, g_m = _golden_min(prob, a, b)
        dips = has_min & (g_m <= 0)            # the minimum reaches 0: low root in [a, s_m]
        lo, hi = torch.where(dips, a, lo), torch.where(dips, s_m, hi)
        vanished = has_min & (g_m > 0)
        s_ghost = torch.where(vanished, s_m, s_ghost)
        g_min = torch.where(vanished, g_m, g_min)
    # bisection (g(lo) > 0 >= g(hi)), then Newton polish on the full system inside the bracket
    s_i = None
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        gm, s_i = reduced_field(prob, mid, s_i)
        pos = gm > 0
        lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
    x = _polish(prob, _state(prob, 0.5 * (lo + hi), s_i), lo, hi)
    kappa = torch.zeros(N, B, dtype=DTYPE)
    ghost = x.clone()
    if bool(vanished.any()):
        dh = 1e-4
        kappa = (_g(prob, s_ghost + dh) - 2 * _g(prob, s_ghost) + _g(prob, s_ghost - dh)) / dh ** 2
        kappa = torch.where(vanished, kappa.clamp_min(0.0), torch.zeros_like(kappa))
        ghost = torch.where(vanished.unsqueeze(0), _state(prob, s_ghost), x)
    return x, vanished, ghost, g_min, kappa


def low_state(prob: Problem, grid: int = 513, grad_steps: int = 1) -> FixedPoint:
    """Each node's low fixed point (``find_low``), with the implicit function theorem's gradient
    (``grad_steps`` chord Newton steps with gradients; 1 = ``rootfind.implicit_step``), clamped to [0, 1],
    and its ``Ghost`` (g_min differentiable) where it has vanished."""
    x0, vanished, ghost, _, kappa = find_low(prob.detached(), grid)
    system = LocalSystem(prob.F)
    x = x0
    for _ in range(grad_steps):
        x = implicit_step(system, x, system.jacobian(x.detach()))
    x = x.clamp(0.0, 1.0)
    g_min = torch.zeros(node_shape(prob), dtype=DTYPE)
    if bool(vanished.any()):
        xg = ghost.detach()
        if prob.nvar == 2:                  # S_i on its nullcline at the ghost's S_e, differentiable
            s_i = LocalSystem(lambda y: prob.F(torch.stack((xg[0], y[0])))[1:])
            xg = torch.stack((xg[0], implicit_step(s_i, xg[1:], s_i.jacobian(xg[1:]))[0]))
        g_min = torch.where(vanished, prob.F(xg)[0], torch.zeros_like(g_min))
    with torch.no_grad():
        residual = prob.F(x).abs().amax(0)
    return FixedPoint(state=x, residual=residual, ghost=Ghost(vanished=vanished, state=ghost, g_min=g_min,
                                                              kappa=kappa))
