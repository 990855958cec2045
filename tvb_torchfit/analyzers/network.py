"""The network problem shared by the analyzers: a TVB simulation's vector field without delays, as tensors.

What is mirrored from TVB:

* ``tvb.simulator.models``: the model ports' ``dfun(state, c, p)`` (``tvb_torchfit.simulator.models``), the
  only place the equations live; every derivative here is torch autograd of it;
* ``tvb.simulator.coupling``: the coupling port's ``post`` on the coupling variable (state variable 0),
  ``c_k = post(gx_k)`` with ``gx = W @ x_0`` (rows of W are targets, weights as frozen at configure(); for
  ``Linear``, c = a gx + b). Conduction delays are ignored: at a fixed point they do not matter.

Three coupling inputs: ``CouplingInput`` on the whole network (gx = W @ x_0), the same with the homogeneous
mean-field closure (gx_k = (sum_j W_kj) x_0,k: every node assumes its afferents sit in its own state, so the
nodes decouple), and ``FixedInput`` (a given c). ``Problem`` is a model port, its parameters and one of these
inputs: F(x) = dfun(x, c(x_0), p) in 1/ms, on states (nvar, N, B) (or (nvar, ..., N, B)).

Parameters come from ``values.simulator_values`` (public layout in, ``registry.to_internal`` out).

The network's fixed point (``network_fixed_point``) and Jacobian (``network_jacobian``, ``NetworkSystem``):
A (nvar*N x nvar*N), rows/columns ordered (variable, node) variable-major,
``A = blockdiag_k(d dfun/d x at node k) + e_cvar-column (d dfun/d c) * (d post/d gx) * W``; the local blocks
come from nvar backward passes of dfun (nodes are independent given c). Everything is float64.

Stacked networks (``stack_networks``): B networks of the same model, coupling and node count, each with its own
weights and parameters, as one ``Network`` whose weights are (B, N, N) and whose parameters carry the batch axis
(N or 1, B): states (nvar, N, B), network b's coupling input ``gx[:, b] = W_b @ x_0[:, b]``, Jacobians (B, M, M)
(M = nvar N), one Newton system per network (``NetworkSystem.norm`` per network), and ``search_fixed_points``
reports each network's success or error on its own. One network is the case B = 1 with (N, N) weights.
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ParameterError
from ..simulator.adapter import SimulatorSpec
from ..simulator.integrators import euler_step
from .rootfind import FixedPoint, implicit_step, newton
from .values import DTYPE, coupling_values, simulator_values

Tensor = torch.Tensor

__all__ = ["FixedPointError", "UnstableFixedPointError", "CouplingInput", "FixedInput", "Problem", "Network",
           "network", "build_network", "stack_networks", "NetworkSystem", "network_dfun", "network_jacobian",
           "search_fixed_points", "network_fixed_point"]


class FixedPointError(ParameterError):
    """No fixed point was reached from the low start (or it lies outside the state bounds)."""


class UnstableFixedPointError(FixedPointError):
    """The fixed point reached is not linearly stable (max Re eigenvalue of the network Jacobian >= 0)."""


# --------------------------------------------------------------------------- coupling inputs
@dataclass
class CouplingInput:
    """What TVB's coupling delivers on the instantaneous state (delays ignored): c = port.post(gx, *params).

    ``weights`` (N, N), rows are targets: gx = W @ x_0 (the network); (B, N, N) for B stacked networks, network
    b's input from its own weights: gx[:, b] = W_b @ x_0[:, b]. With ``mean_field``, ``weights`` are
    the row sums (N, 1) and gx_k = (sum_j W_kj) x_0,k (homogeneous mean-field closure: nodes decouple).
    ``params``: the port's parameters in its ``parameter_names`` order, internal layout (N or 1, B or 1).
    """
    port: type
    params: Tuple[Tensor, ...]
    weights: Tensor
    mean_field: bool = False

    @property
    def local(self) -> bool:
        """Whether each node's input depends on its own state only (node-local Jacobians)."""
        return self.mean_field

    @property
    def stacked(self) -> bool:
        """Whether these are B stacked networks (weights (B, N, N))."""
        return self.weights.dim() == 3

    def gx(self, x0: Tensor) -> Tensor:
        if self.mean_field:
            return self.weights * x0
        if self.stacked:                                     # x0 (..., N, B): network b's nodes with its weights
            return (self.weights @ x0.transpose(-1, -2).unsqueeze(-1)).squeeze(-1).transpose(-1, -2)
        return self.weights @ x0

    def __call__(self, x0: Tensor) -> Tensor:
        return self.port.post(self.gx(x0), *self.params)

    def tensors(self) -> List[Tensor]:
        return [*self.params, self.weights]

    def detached(self) -> "CouplingInput":
        return replace(self, params=tuple(p.detach() for p in self.params), weights=self.weights.detach())

    def select(self, k: int) -> "CouplingInput":
        """The input of node k alone (mean-field closure only)."""
        if not self.mean_field:
            raise ValueError("only the mean-field input can be split into nodes.")
        return replace(self, params=tuple(_row(p, k) for p in self.params), weights=_row(self.weights, k))


@dataclass
class FixedInput:
    """A given coupling input c (N or 1, B or 1), independent of the state."""
    c: Tensor
    local = True

    def __call__(self, x0: Tensor) -> Tensor:
        return self.c

    def tensors(self) -> List[Tensor]:
        return [self.c]

    def detached(self) -> "FixedInput":
        return FixedInput(self.c.detach())

    def select(self, k: int) -> "FixedInput":
        return FixedInput(_row(self.c, k))


def _row(t: Tensor, k: int) -> Tensor:
    return t[k:k + 1] if t.shape[0] > 1 else t


Input = Union[CouplingInput, FixedInput]


class Problem:
    """One model port, its parameters (internal layout) and its coupling input: F(x) = dfun(x, c(x_0), p)."""

    def __init__(self, model, params: Mapping[str, Tensor], inp: Input):
        self.model = model
        self.params = dict(params)
        self.inp = inp
        self.nvar = len(model.state_variables)

    def F(self, x: Tensor) -> Tensor:
        """dfun at x (nvar, ..., N, B), 1/ms; the coupling input follows x[0] (the coupling variable)."""
        return self.model.dfun(x, self.inp(x[0]), self.params)

    def tensors(self) -> List[Tensor]:
        return list(self.params.values()) + self.inp.tensors()

    def needs_grad(self) -> bool:
        return any(t.requires_grad for t in self.tensors())

    def detached(self) -> "Problem":
        return Problem(self.model, {k: v.detach() for k, v in self.params.items()}, self.inp.detached())

    def select_node(self, k: int) -> "Problem":
        return Problem(self.model, {n: _row(v, k) for n, v in self.params.items()}, self.inp.select(k))

    def with_params(self, **values: Tensor) -> "Problem":
        """The same problem with some parameters replaced (internal-layout tensors)."""
        return Problem(self.model, {**self.params, **values}, self.inp)


# --------------------------------------------------------------------------- the network
@dataclass
class Network:
    """A simulator's network without delays: its ``problem`` (network coupling input, one parameter set),
    the integrator's state bounds ``lo``, ``hi`` (nvar, 1, 1) and the remaining ``params`` (internal layout,
    e.g. ``noise.nsig``)."""
    problem: Problem
    lo: Tensor
    hi: Tensor
    params: Dict[str, Tensor]

    @property
    def model(self):
        return self.problem.model

    @property
    def n_nodes(self) -> int:
        return self.problem.inp.weights.shape[-1]

    @property
    def batch(self) -> int:
        """The number of stacked networks (1 for one network)."""
        w = self.problem.inp.weights
        return w.shape[0] if w.dim() == 3 else 1

    @property
    def nvar(self) -> int:
        return self.problem.nvar


def network(spec_or_twin, values: Optional[Mapping[str, object]] = None) -> Network:
    """The ``Network`` of a ``SimulatorSpec`` / ``TorchSimulator`` with ``values`` (public layout) overriding
    its parameters; one parameter set (batch 1)."""
    if isinstance(spec_or_twin, Network):
        if values:
            raise ValueError("parameter values are given with the simulator, not with a built Network.")
        return spec_or_twin
    return build_network(*simulator_values(spec_or_twin, values, batch=1))


def build_network(spec: SimulatorSpec, p: Mapping[str, Tensor]) -> Network:
    """The ``Network`` of ``spec`` with the parameters ``p`` (internal layout, one set: ``simulator_values``)."""
    device = p[spec.model.parameter_names[0]].device
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
    inp = CouplingInput(spec.coupling, coupling_values(spec, p), t(spec.weights))
    problem = Problem(spec.model, {k: p[k] for k in spec.model.parameter_names}, inp)
    return Network(problem=problem, lo=t(spec.lo).view(-1, 1, 1), hi=t(spec.hi).view(-1, 1, 1), params=dict(p))


def _stack_param(values: Sequence[Tensor]) -> Tensor:
    """Internal-layout parameters of B networks, batch axis last and 1 (e.g. (N or 1, 1)) -> (N or 1, B)."""
    shape = torch.broadcast_shapes(*(v.shape for v in values))
    return torch.cat([v.expand(shape) for v in values], dim=-1)


def stack_networks(nets: Sequence[Network]) -> Network:
    """B ``Network``s of the same model, coupling and node count (one parameter set each) as one stacked network:
    weights (B, N, N), every parameter (N or 1, B); differentiable in every network's parameters."""
    first = nets[0]
    for k, net in enumerate(nets):
        if net.batch != 1 or net.problem.inp.mean_field:
            raise ParameterError(f"network {k}: only single networks with network coupling can be stacked.")
        same = (net.model is first.model and net.problem.inp.port is first.problem.inp.port
                and net.n_nodes == first.n_nodes and torch.equal(net.lo, first.lo) and torch.equal(net.hi, first.hi)
                and set(net.params) == set(first.params))
        if not same:
            raise ParameterError(f"network {k} ({net.model.tvb_class.__name__}, {net.problem.inp.port.__name__} "
                                 f"coupling, {net.n_nodes} nodes) cannot be stacked with network 0 "
                                 f"({first.model.tvb_class.__name__}, {first.problem.inp.port.__name__}, "
                                 f"{first.n_nodes} nodes): expected the same model, coupling, nodes and bounds.")
    if len(nets) == 1:
        return first
    model_params = {k: _stack_param([n.problem.params[k] for n in nets]) for k in first.problem.params}
    coupling = tuple(_stack_param(list(ps)) for ps in zip(*(n.problem.inp.params for n in nets)))
    weights = torch.stack([n.problem.inp.weights for n in nets])
    inp = replace(first.problem.inp, params=coupling, weights=weights)
    params = {k: _stack_param([n.params[k] for n in nets]) for k in first.params}
    return Network(problem=Problem(first.model, model_params, inp), lo=first.lo, hi=first.hi, params=params)


class NetworkSystem:
    """The coupled network as one system for ``rootfind.newton``: states (nvar, N, 1), dense Jacobian; for B
    stacked networks states (nvar, N, B), Jacobians (B, M, M) and one system per network."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.stacked = isinstance(problem.inp, CouplingInput) and problem.inp.stacked

    def residual(self, x: Tensor) -> Tensor:
        return self.problem.F(x)

    def linearize(self, x: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        """(F(x), A(x)), A the (nvar*N, nvar*N) Jacobian, variable-major (see the module docstring); (B, M, M)
        for stacked networks."""
        nvar = x.shape[0]
        inp, p = self.problem.inp, self.problem.params
        with torch.enable_grad():
            xv = x * 1.0 if x.requires_grad else x.detach().requires_grad_(True)
            cv = inp(x[0])
            cv = cv * 1.0 if cv.requires_grad else cv.detach().requires_grad_(True)
            F = self.problem.model.dfun(xv, cv, p)
            local, dc = [], []
            for i in range(nvar):
                gx, gc = torch.autograd.grad(F[i].sum(), (xv, cv), create_graph=create_graph, retain_graph=True)
                local.append(gx.movedim(-1, 1))              # (nvar, B, N): d F_i,k / d x_j,k
                dc.append(gc.transpose(0, 1).unsqueeze(-1))  # (B, N, 1):    d F_i,k / d c_k
            g = inp.gx(x[0])
            g = g * 1.0 if g.requires_grad else g.detach().requires_grad_(True)
            gain, = torch.autograd.grad(inp.port.post(g, *inp.params).sum(), g, create_graph=create_graph)
        weights = inp.weights if self.stacked else inp.weights.unsqueeze(0)
        coupled = gain.transpose(0, 1).unsqueeze(-1) * weights       # (B, N, N): d c_k / d x_0,l
        rows = []
        for i in range(nvar):
            blocks = [torch.diag_embed(local[i][j]) for j in range(nvar)]
            blocks[0] = blocks[0] + dc[i] * coupled
            rows.append(torch.cat(blocks, dim=-1))
        A = torch.cat(rows, dim=-2)
        A = A if self.stacked else A[0]
        return (F, A) if create_graph else (F.detach(), A.detach())

    def solve(self, A: Tensor, r: Tensor) -> Tensor:
        if not self.stacked:
            return torch.linalg.solve(A, r.reshape(-1)).reshape(r.shape)
        nvar, n, b = r.shape
        rb = r.permute(2, 0, 1).reshape(b, nvar * n, 1)
        return torch.linalg.solve(A, rb).reshape(b, nvar, n).permute(1, 2, 0)

    def norm(self, r: Tensor) -> Tensor:
        """max |r|: one value (a 0-d tensor), or one per stacked network (B,)."""
        return r.abs().amax(dim=(0, 1)) if self.stacked else r.abs().max()


def _column(x: Tensor) -> Tensor:
    return x.unsqueeze(-1) if x.dim() == 2 else x


def network_dfun(spec_or_twin, params: Optional[Mapping[str, object]] = None, x: Optional[Tensor] = None) -> Tensor:
    """F(x) = dfun(x, c(x_0)): the network's vector field (nvar, N) at x (nvar, N), 1/ms, delays ignored."""
    return network(_as_network(spec_or_twin), params).problem.F(_column(x))[..., 0]


def network_jacobian(spec_or_twin, params: Optional[Mapping[str, object]] = None, x: Optional[Tensor] = None, *,
                     create_graph: bool = True) -> Tensor:
    """A = dF/dx at x (nvar, N): (nvar*N, nvar*N), variable-major ((S_e of all nodes, then S_i ...)), 1/ms.

    With ``create_graph`` (default) A is differentiable w.r.t. x and every parameter. ``x`` defaults to the
    network's fixed point (``network_fixed_point``).
    """
    net = network(_as_network(spec_or_twin), params)
    if x is None:
        x = network_fixed_point(net).state
    return NetworkSystem(net.problem).linearize(_column(x), create_graph)[1]


def _as_network(obj):
    return obj.network if hasattr(obj, "network") and isinstance(obj.network, Network) else obj


def relax(net: Network, start=0.05, *, t_max: float = 20000.0, dt_relax: float = 0.5,
          relax_tol: float = 1e-7, frozen: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Explicit Euler relaxation (no noise, delays ignored, clipped to the state bounds, as TVB's
    ``EulerDeterministic``) from x = ``start`` in 500 ms chunks until max |F| < ``relax_tol`` 1/ms or
    ``t_max`` ms, each stacked network on its own (it stops moving once it is there; ``frozen`` (B,) bool: networks
    not relaxed at all). Returns (x (nvar, N, B), time relaxed per network in ms (B,), diverged (B,) bool: a
    non-finite state). No graph."""
    prob = net.problem.detached()
    b = net.batch
    x = torch.as_tensor(np.asarray(start, dtype=np.float64), device=net.lo.device)
    x = torch.broadcast_to(x.reshape(-1, 1, 1), (net.nvar, net.n_nodes, b)).clone()
    done = torch.zeros(b, dtype=torch.bool, device=x.device) if frozen is None else frozen.clone()
    diverged = torch.zeros_like(done)
    relaxed = torch.zeros(b, dtype=DTYPE)
    elapsed, chunk = 0.0, max(1, int(round(500.0 / dt_relax)))
    with torch.no_grad():
        while elapsed < t_max and not bool(done.all()):
            before = x
            for _ in range(chunk):
                x = euler_step(x, prob.F, dt_relax, None, net.lo, net.hi)
            x = torch.where(done, before, x)                 # a network that is there keeps its state
            elapsed += chunk * dt_relax
            relaxed = torch.where(done.cpu(), relaxed, torch.full_like(relaxed, elapsed))
            bad = ~torch.isfinite(x).flatten(0, 1).all(0)
            diverged = diverged | (bad & ~done)
            done = done | bad | (prob.F(x).abs().amax(dim=(0, 1)) < relax_tol)
    return x, relaxed, diverged


def _initial_states(net: Network, initial) -> Tuple[Tensor, List[bool]]:
    """Newton's start per network, (nvar, N, B), and which networks are given one (the others relax)."""
    nvar, n, b = net.nvar, net.n_nodes, net.batch
    if initial is None:
        initial = [None] * b
    elif torch.is_tensor(initial):
        t = initial.detach().to(DTYPE).reshape(nvar, n, -1)
        if t.shape[-1] not in (1, b):
            raise ParameterError(f"initial has shape {tuple(initial.shape)}; expected ({nvar}, {n}) or "
                                 f"({nvar}, {n}, {b}).")
        initial = [t[..., k if t.shape[-1] > 1 else 0] for k in range(b)]
    if len(initial) != b:
        raise ParameterError(f"initial: {len(initial)} states for {b} stacked networks; expected one each.")
    given = [x is not None for x in initial]
    x0 = torch.zeros((nvar, n, b), dtype=DTYPE, device=net.lo.device)
    for k, x in enumerate(initial):
        if x is not None:
            x0[..., k] = x.detach().to(DTYPE).reshape(nvar, n)
    return x0, given


def search_fixed_points(net: Network, *, start=0.05, initial=None, t_max: float = 20000.0, dt_relax: float = 0.5,
                        relax_tol: float = 1e-7, tol: float = 1e-13, max_newton: int = 50,
                        require_stable: bool = True) -> Tuple[Tensor, Tensor, List[Union[FixedPoint, FixedPointError]]]:
    """The low fixed point of each stacked network (``network_fixed_point``), without a graph.

    ``initial``: None, one state (nvar, N) / (nvar, N, B), or one per network (None: that one relaxes from the low
    start). Returns (x (nvar, N, B), A at x ((M, M), or (B, M, M) stacked), and per network a ``FixedPoint``
    (state (nvar, N), no graph) or the ``FixedPointError`` / ``UnstableFixedPointError`` that says why there is
    none). Each network's search is that of the network alone: its relaxation stops when it is there, its Newton
    iteration when its own residual is small.
    """
    nvar, n, b = net.nvar, net.n_nodes, net.batch
    name = net.model.tvb_class.__name__
    det = NetworkSystem(net.problem.detached())
    x0, given = _initial_states(net, initial)
    frozen = torch.tensor(given, device=x0.device)
    if bool(frozen.all()):
        x, relaxed, diverged = x0, torch.zeros(b, dtype=DTYPE), torch.zeros(b, dtype=torch.bool)
    else:
        x, relaxed, diverged = relax(net, start, t_max=t_max, dt_relax=dt_relax, relax_tol=relax_tol, frozen=frozen)
        x = torch.where(frozen, x0, x)
    found: List[Union[FixedPoint, FixedPointError, None]] = [None] * b
    for k in torch.nonzero(diverged).flatten().tolist():
        found[k] = FixedPointError(f"{name}: the relaxation from the low start diverged (non-finite state).")
    x = torch.where(diverged.to(x.device), torch.full_like(x, 0.05), x)       # (kept finite for the others)
    with torch.no_grad():
        result = newton(det, x, tol=tol, max_steps=max_newton, line_search=30)
        x = result.x
        res = result.residual.reshape(-1)
        outside = ((x < net.lo - 1e-9) | (x > net.hi + 1e-9)).flatten(0, 1).any(0)
        for k in range(b):
            r = float(res[k])
            where = "low start" if not given[k] else "given initial state"
            if found[k] is None and not r < max(tol, 1e-11):
                found[k] = FixedPointError(f"{name}: no fixed point reached from the {where} (max |dfun| = {r:.3g} "
                                           f"1/ms after {float(relaxed[k]):g} ms relaxation and {result.steps} Newton "
                                           "steps).")
            elif found[k] is None and bool(outside[k]):
                found[k] = FixedPointError(f"{name}: the fixed point found lies outside the state bounds "
                                           f"[{net.lo.flatten().tolist()}, {net.hi.flatten().tolist()}].")
        A = det.linearize(x)[1]
        ok = [k for k in range(b) if found[k] is None]
        if ok:
            As = A if not det.stacked else A[ok]
            lams = torch.linalg.eigvals(As).real.amax(-1).reshape(-1).tolist()
            for k, lam in zip(ok, lams):
                if require_stable and lam >= 0:
                    found[k] = UnstableFixedPointError(
                        f"{name}: the fixed point reached is not stable (max Re eigenvalue {lam:.4g} 1/ms >= 0; "
                        f"mean S = {x[..., k].mean(1).tolist()}).")
                else:
                    found[k] = FixedPoint(state=x[..., k], residual=float(res[k]), lambda_max=lam,
                                          relaxed_ms=float(relaxed[k]), newton_steps=result.steps)
    return x, A, found


def network_fixed_point(spec_or_twin, params: Optional[Mapping[str, object]] = None, *, start=0.05,
                        initial: Optional[Tensor] = None, t_max: float = 20000.0, dt_relax: float = 0.5,
                        relax_tol: float = 1e-7, tol: float = 1e-13, max_newton: int = 50,
                        require_stable: bool = True) -> FixedPoint:
    """The network's low fixed point F(x*) = 0 (delays ignored), differentiable w.r.t. the parameters.

    From x = ``start`` (a number, or one per state variable; 0.05 as ``low_state_initial_conditions``):
    ``relax`` (Euler, dt ``dt_relax`` ms, until max |F| < ``relax_tol`` 1/ms or ``t_max`` ms), then Newton
    (network Jacobian, backtracking on max |F|) to max |F| < ``tol``. ``initial`` (nvar, N): skip the
    relaxation and start Newton there (a warm start; it converges to the root nearest to it). It is the
    attractor reached from the low start: the low state whenever it exists and 0.05 lies in its basin.
    Gradients: ``rootfind.implicit_step`` (exact first derivatives). ``.state`` is (nvar, N).
    Raises ``FixedPointError`` when Newton does not converge or the root leaves the state bounds, and
    ``UnstableFixedPointError`` when ``require_stable`` and max Re eig(A) >= 0. (Stacked networks:
    ``search_fixed_points``.)
    """
    net = network(_as_network(spec_or_twin), params)
    if net.batch != 1:
        raise ParameterError(f"network_fixed_point takes one network; got {net.batch} stacked networks "
                             "(search_fixed_points finds each one's).")
    x, A, (found,) = search_fixed_points(net, start=start, initial=initial, t_max=t_max, dt_relax=dt_relax,
                                         relax_tol=relax_tol, tol=tol, max_newton=max_newton,
                                         require_stable=require_stable)
    if isinstance(found, FixedPointError):
        raise found
    if net.problem.needs_grad():
        x = implicit_step(NetworkSystem(net.problem), x, A)
    return replace(found, state=x[..., 0])
