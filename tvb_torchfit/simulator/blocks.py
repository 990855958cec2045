"""Blocks of integration steps as pure functions: what ``torch.compile`` fuses, and their backward.

A block is K consecutive steps of TVB's loop (``Simulator._loop_compute_node_coupling`` then
``integrator.scheme``): for step tau of the block, with state X (nvar, N, B),

    gx = far[tau] + near(X[0])        delayed coupling sum (``coupling.DelayedLinearCoupling``)
    c  = post(gx, *coupling)          e.g. Linear: c = a * gx + b
    X  = step(X, dfun(., c, p), dt, z[tau])      (``integrators``; z from ``noise.scaled_increment``)

``far`` (K, N, B) gathers every edge with delay >= K - 1 from the history before the block; ``near`` adds the
zero-delay edges from the current state. ``Dynamics`` holds what is integrated (model, coupling, integrator,
bounds, dt); the functions here take its fields as keywords (``Dynamics.step_kw``). Parameters come as a
dict of model parameters and a tuple of coupling parameters (the coupling port's ``parameter_names``
order), all in the internal layout (N or 1, B or 1) of ``registry.to_internal``; ``split_coupling`` and
``unpack`` are the one place they are separated.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from .coupling import gather_far, gather_far_node_major
from .noise import scaled_increment

Params = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class Dynamics:
    """What is integrated, fixed for a simulator: model ``dfun(X, c, p)``, the coupling's ``post(gx, *coupling)``,
    the integrator's ``step_fn`` (``integrators.SCHEMES``), the zero-delay edge sum ``near_fn`` (or None), the
    state bounds ``lo``/``hi`` (nvar, 1, 1) or None, dt in ms, and the coupling parameters' names
    (``registry.coupling_parameter_names``)."""
    dfun: Callable
    post: Callable
    step_fn: Callable
    near_fn: Optional[Callable]
    lo: Optional[torch.Tensor]
    hi: Optional[torch.Tensor]
    dt: float
    coupling_names: Tuple[str, ...]

    def step_kw(self) -> Dict:
        """The keywords of ``integrate_block`` (all but the coupling names)."""
        return dict(dfun=self.dfun, post=self.post, step_fn=self.step_fn, near_fn=self.near_fn, lo=self.lo,
                    hi=self.hi, dt=self.dt)


def split_coupling(p: Params, coupling_names: Tuple[str, ...]) -> Tuple[Tuple[torch.Tensor, ...], Params]:
    """(the coupling parameters in ``coupling_names`` order, the remaining (model) parameters) of ``p``."""
    return tuple(p[n] for n in coupling_names), {k: v for k, v in p.items() if k not in coupling_names}


def unpack(packed: torch.Tensor, names: Tuple[str, ...],
           coupling_names: Tuple[str, ...]) -> Tuple[Tuple[torch.Tensor, ...], Params]:
    """``split_coupling`` of parameters stacked in one tensor (``packed[i]`` is parameter ``names[i]``)."""
    return split_coupling({name: packed[i] for i, name in enumerate(names)}, coupling_names)


def integrate_block(X: torch.Tensor, far: torch.Tensor, z: Optional[torch.Tensor],
                    coupling: Tuple[torch.Tensor, ...], p: Params, *, dfun, post, step_fn, dt: float, near_fn,
                    lo: Optional[torch.Tensor], hi: Optional[torch.Tensor]) -> torch.Tensor:
    """K integration steps from state X (nvar, N, B): coupling -> model -> integrator, as TVB's loop.

    ``far`` (K, N, B) holds the delayed coupling sums gathered for the block; ``near_fn`` adds the
    zero-delay edges from the current state; ``z`` (K, nvar, N, B) the noise increments or None.
    Returns the K new states (K, nvar, N, B).
    """
    states = []
    for tau in range(far.shape[0]):
        gx = far[tau] + near_fn(X[0]) if near_fn is not None else far[tau]
        c = post(gx, *coupling)
        X = step_fn(X, lambda Y: dfun(Y, c, p), dt, None if z is None else z[tau], lo, hi)
        states.append(X)
    return torch.stack(states)


def noisy_block(far: torch.Tensor, X: torch.Tensor, normal: Optional[torch.Tensor],
                noise_scale: Optional[torch.Tensor], coupling: Tuple[torch.Tensor, ...], p: Params, *,
                dt: float, **step_kw) -> torch.Tensor:
    """``integrate_block`` with the increments z = ``noise.scaled_increment(normal, dt, noise_scale)``
    (``noise_scale`` = sqrt(2 nsig); ``normal`` (K, nvar, N, B) standard normal draws, or None)."""
    z = None if normal is None else scaled_increment(normal, dt, noise_scale)
    return integrate_block(X, far, z, coupling, p, dt=dt, **step_kw)


def fused_block(history: torch.Tensor, offset: Optional[torch.Tensor], X: torch.Tensor,
                normal: Optional[torch.Tensor], noise_scale: Optional[torch.Tensor],
                coupling: Tuple[torch.Tensor, ...], p: Params, *, rows: torch.Tensor, w: torch.Tensor,
                unrolled: bool = False, **kw) -> torch.Tensor:
    """One whole block from a time-major history window (``history`` (horizon * N, B), a graph-carrying tensor
    while autograd records): far-edge gather (``coupling.gather_far``) and ``noisy_block``."""
    far = gather_far(history, rows, w, offset, unrolled=unrolled)
    return noisy_block(far, X, normal, noise_scale, coupling, p, **kw)


def ring_block(buffer: torch.Tensor, offset: torch.Tensor, X: torch.Tensor, normal: Optional[torch.Tensor],
               noise_scale: Optional[torch.Tensor], coupling: Tuple[torch.Tensor, ...], p: Params, *,
               src: torch.Tensor, w: torch.Tensor, write: torch.Tensor, K: int, B: int,
               unrolled: bool = False, **kw) -> torch.Tensor:
    """One whole block on the node-major in-place history (``history.HistoryRing``: flat ``buffer``, window
    start ``offset``): far-edge gather (``coupling.gather_far_node_major``), ``noisy_block``, and the block's
    coupling variable written into the buffer after the window (positions ``write`` + offset,
    ``HistoryRing.write_positions``; the caller then ``advance``s the ring). Inside a compiled block the write
    is one scatter into the buffer, not a separate call."""
    far = gather_far_node_major(buffer, offset, src, w, K, B, unrolled=unrolled)
    states = noisy_block(far, X, normal, noise_scale, coupling, p, **kw)
    buffer.index_put_((write + offset,), states[:, 0].permute(1, 0, 2).reshape(-1).to(buffer.dtype))
    return states


def packed_block(buffer: torch.Tensor, offset: Optional[torch.Tensor], X: torch.Tensor,
                 normal: Optional[torch.Tensor], noise_scale: Optional[torch.Tensor], packed: torch.Tensor, *,
                 names: Tuple[str, ...], coupling_names: Tuple[str, ...], block_fn=ring_block,
                 **kw) -> torch.Tensor:
    """``block_fn`` (``ring_block``, or ``fused_block`` for a time-major window) with the model and coupling
    parameters stacked in one tensor (``packed[i]`` is parameter ``names[i]``, all broadcast to a common shape):
    the compiled call then checks and unpacks one input instead of some twenty, which is a measurable part of a
    block's cost at small batch. What ``compile=True`` compiles, so that one compiled call covers a block."""
    coupling, p = unpack(packed, names, coupling_names)
    return block_fn(buffer, offset, X, normal, noise_scale, coupling, p, **kw)


def block_vjp(history: torch.Tensor, X: torch.Tensor, normal: Optional[torch.Tensor],
              noise_scale: Optional[torch.Tensor], packed_var: Optional[torch.Tensor], packed_const: torch.Tensor,
              grad_states: torch.Tensor, grad_rows: Optional[torch.Tensor] = None,
              grad_next: Optional[torch.Tensor] = None, grad_far_later: Optional[torch.Tensor] = None, *,
              rows: torch.Tensor, w: torch.Tensor, pull_rows: Optional[torch.Tensor] = None,
              pull_w: Optional[torch.Tensor] = None, var_names: Tuple[str, ...], const_names: Tuple[str, ...],
              coupling_names: Tuple[str, ...], scale_grad: bool, dt: float, unrolled: bool = True,
              **step_kw) -> Tuple[Optional[torch.Tensor], ...]:
    """Backward of one chunk of K steps, recomputed from its inputs (for ``adjoint.CheckpointedRun``).

    Gathers the far-edge sums from ``history`` (the chunk's (horizon * N, B) window), recomputes the K
    steps and returns the vector-Jacobian products of ``grad_states`` (K, nvar, N, B) with respect to
    (far sums (K, N, B), start state, the noise scale if ``scale_grad`` else None, the parameters
    ``var_names`` stacked in ``packed_var`` or None). Only those parameters are differentiated; the others
    (``packed_const``, ``const_names``) and the noise scale otherwise enter as constants. Differentiated
    parameters and noise scale come in full (P or nvar, N, B) shape, so their gradients need no reduction
    inside (the caller sums them to the parameters' shapes once per run). What ``compile=True`` compiles
    for the backward.

    The gradient reaching each step's coupling variable through the delayed coupling of later steps is
    pulled, inside the call, from ``grad_far_later`` (the far-sum gradients of the K + horizon steps from the
    chunk's first step on, (time * N, B), already known for every step it reads since all far delays are
    >= K - 1) by the transposed gather ``pull_rows``/``pull_w`` (``coupling.pull_plan``); ``grad_rows``
    (K, N, B), if given, is added to it (gradient arriving directly on the history the run hands on), and
    ``grad_next`` (nvar, N, B) to the last step's state (the gradient reaching the chunk's end state from
    later chunks). No scatter: the far-sum gradient of the chunk is returned for the caller to store.
    """
    if grad_far_later is not None:
        pulled = gather_far(grad_far_later, pull_rows, pull_w, None, unrolled=unrolled)
        grad_rows = pulled if grad_rows is None else grad_rows + pulled
    if grad_rows is not None:
        grad_states = torch.cat((grad_states[:, :1] + grad_rows.unsqueeze(1), grad_states[:, 1:]), dim=1)
    if grad_next is not None:
        grad_states = torch.cat((grad_states[:-1], (grad_states[-1] + grad_next).unsqueeze(0)))
    far = gather_far(history, rows, w, None, unrolled=unrolled)

    def steps(far, X, pv, scale):
        p = {name: packed_const[i] for i, name in enumerate(const_names)}
        for i, name in enumerate(var_names):
            p[name] = pv[i]
        coupling, p = split_coupling(p, coupling_names)
        return noisy_block(far, X, normal, scale, coupling, p, dt=dt, **step_kw)

    # fixed-arity closures (torch.compile traces torch.func.vjp of these without graph breaks)
    if var_names and scale_grad:
        _, vjp_fn = torch.func.vjp(steps, far, X, packed_var, noise_scale)
        g_far, g_X, g_pv, g_scale = vjp_fn(grad_states)
    elif var_names:
        _, vjp_fn = torch.func.vjp(lambda f, x, pv: steps(f, x, pv, noise_scale), far, X, packed_var)
        (g_far, g_X, g_pv), g_scale = vjp_fn(grad_states), None
    elif scale_grad:
        _, vjp_fn = torch.func.vjp(lambda f, x, sc: steps(f, x, None, sc), far, X, noise_scale)
        (g_far, g_X, g_scale), g_pv = vjp_fn(grad_states), None
    else:
        _, vjp_fn = torch.func.vjp(lambda f, x: steps(f, x, None, noise_scale), far, X)
        (g_far, g_X), g_pv, g_scale = vjp_fn(grad_states), None, None
    return g_far, g_X, g_scale, g_pv
