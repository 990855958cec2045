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
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import ParameterError
from ..simulator.adapter import SimulatorSpec
from ..simulator.integrators import euler_step
from .rootfind import FixedPoint, implicit_step, newton
from .values import DTYPE, coupling_values, simulator_values

Tensor = torch.Tensor

__all__ = ["FixedPointError", "UnstableFixedPointError", "CouplingInput", "FixedInput", "Problem", "Network",
           "network", "build_network", "NetworkSystem", "network_dfun", "network_jacobian", "network_fixed_point"]


class FixedPointError(ParameterError):
    """No fixed point was reached from the low start (or it lies outside the state bounds)."""


class UnstableFixedPointError(FixedPointError):
    """The fixed point reached is not linearly stable (max Re eigenvalue of the network Jacobian >= 0)."""


# --------------------------------------------------------------------------- coupling inputs
@dataclass
class CouplingInput:
    """What TVB's coupling delivers on the instantaneous state (delays ignored): c = port.post(gx, *params).

    ``weights`` (N, N), rows are targets: gx = W @ x_0 (the network). With ``mean_field``, ``weights`` are
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

    def gx(self, x0: Tensor) -> Tensor:
        return self.weights * x0 if self.mean_field else self.weights @ x0

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
        return self.problem.inp.weights.shape[0]

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


class NetworkSystem:
    """The coupled network as one system for ``rootfind.newton``: states (nvar, N, 1), dense Jacobian."""

    def __init__(self, problem: Problem):
        self.problem = problem

    def residual(self, x: Tensor) -> Tensor:
        return self.problem.F(x)

    def linearize(self, x: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        """(F(x), A(x)), A the (nvar*N, nvar*N) Jacobian, variable-major (see the module docstring)."""
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
                local.append(gx[..., 0])                     # (nvar, N): d F_i,k / d x_j,k
                dc.append(gc)                                # (N, 1):    d F_i,k / d c_k
            g = inp.gx(x[0])
            g = g * 1.0 if g.requires_grad else g.detach().requires_grad_(True)
            gain, = torch.autograd.grad(inp.port.post(g, *inp.params).sum(), g, create_graph=create_graph)
        coupled = gain * inp.weights                         # (N, N): d c_k / d x_0,l
        rows = []
        for i in range(nvar):
            blocks = [torch.diag(local[i][j]) for j in range(nvar)]
            blocks[0] = blocks[0] + dc[i] * coupled
            rows.append(torch.cat(blocks, dim=1))
        A = torch.cat(rows, dim=0)
        return (F, A) if create_graph else (F.detach(), A.detach())

    @staticmethod
    def solve(A: Tensor, r: Tensor) -> Tensor:
        return torch.linalg.solve(A, r.reshape(-1)).reshape(r.shape)

    @staticmethod
    def norm(r: Tensor) -> Tensor:
        return r.abs().max()


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


def _max_abs(t: Tensor) -> float:
    return float(t.abs().max())


def relax(net: Network, start=0.05, *, t_max: float = 20000.0, dt_relax: float = 0.5,
          relax_tol: float = 1e-7) -> Tuple[Tensor, float]:
    """Explicit Euler relaxation (no noise, delays ignored, clipped to the state bounds, as TVB's
    ``EulerDeterministic``) from x = ``start`` in 500 ms chunks until max |F| < ``relax_tol`` 1/ms or
    ``t_max`` ms; returns (x (nvar, N, 1), time relaxed in ms). No graph."""
    prob = net.problem.detached()
    x = torch.as_tensor(np.asarray(start, dtype=np.float64), device=net.lo.device)
    x = torch.broadcast_to(x.reshape(-1, 1, 1), (net.nvar, net.n_nodes, 1)).clone()
    relaxed, chunk = 0.0, max(1, int(round(500.0 / dt_relax)))
    with torch.no_grad():
        while relaxed < t_max:
            for _ in range(chunk):
                x = euler_step(x, prob.F, dt_relax, None, net.lo, net.hi)
            relaxed += chunk * dt_relax
            if not torch.isfinite(x).all():
                raise FixedPointError(f"{net.model.tvb_class.__name__}: the relaxation from the low start diverged "
                                      "(non-finite state).")
            if _max_abs(prob.F(x)) < relax_tol:
                break
    return x, relaxed


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
    ``UnstableFixedPointError`` when ``require_stable`` and max Re eig(A) >= 0.
    """
    net = network(_as_network(spec_or_twin), params)
    nvar, n = net.nvar, net.n_nodes
    name = net.model.tvb_class.__name__
    det = NetworkSystem(net.problem.detached())
    if initial is None:
        x, relaxed = relax(net, start, t_max=t_max, dt_relax=dt_relax, relax_tol=relax_tol)
    else:
        x, relaxed = initial.detach().to(DTYPE).reshape(nvar, n, 1).clone(), 0.0
    with torch.no_grad():
        result = newton(det, x, tol=tol, max_steps=max_newton, line_search=30)
        x, res = result.x, float(result.residual)
        if not res < max(tol, 1e-11):
            raise FixedPointError(f"{name}: no fixed point reached from the "
                                  f"{'low start' if initial is None else 'given initial state'} (max |dfun| = "
                                  f"{res:.3g} 1/ms after {relaxed:g} ms relaxation and {result.steps} Newton steps).")
        if bool((x < net.lo - 1e-9).any() or (x > net.hi + 1e-9).any()):
            raise FixedPointError(f"{name}: the fixed point found lies outside the state bounds "
                                  f"[{net.lo.flatten().tolist()}, {net.hi.flatten().tolist()}].")
        A = det.linearize(x)[1]
        lam = float(torch.linalg.eigvals(A).real.max())
    if require_stable and lam >= 0:
        raise UnstableFixedPointError(f"{name}: the fixed point reached is not stable (max Re eigenvalue "
                                      f"{lam:.4g} 1/ms >= 0; mean S = {x[..., 0].mean(1).tolist()}).")
    if net.problem.needs_grad():
        x = implicit_step(NetworkSystem(net.problem), x, A)
    return FixedPoint(state=x[..., 0], residual=res, lambda_max=lam, relaxed_ms=relaxed, newton_steps=result.steps)
