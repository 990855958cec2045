"""The node-local problem of the bifurcation analysis, from its keyword arguments.

``bifurcation``'s functions take ``model_port``, ``params`` and a coupling input (None, a fixed tensor,
``"mean-field"`` with ``weights``/``coupling_a``/``coupling_b``, or a ``network.CouplingInput`` from
``bifurcation.from_spec``); ``node_problem`` turns them into a ``network.Problem`` whose nodes are independent.
Parameters here are tensors in the ports' internal layout (N or 1, B or 1), or numbers / TVB's (1,), (N,)
arrays (``registry.to_internal``, one batch column); missing ones take TVB's defaults. float64.
"""
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from ..simulator.coupling import Linear
from ..simulator.models import ReducedWongWang, ReducedWongWangExcInh
from .low_state import node_shape
from .network import CouplingInput, FixedInput, Problem
from .values import DTYPE, as_float64, internal

Tensor = torch.Tensor
Params = Mapping[str, Tensor]

__all__ = ["MEAN_FIELD", "SUPPORTED", "as_param", "default_params", "complete", "make_input", "node_problem"]

MEAN_FIELD = "mean-field"
SUPPORTED = (ReducedWongWangExcInh, ReducedWongWang)


def as_param(name: str, value) -> Tensor:
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
    check_port(model_port)
    unknown = set(overrides) - set(model_port.parameter_names)
    if unknown:
        raise ValueError(f"{model_port.__name__} has no parameter(s) {sorted(unknown)}; known: "
                         f"{', '.join(model_port.parameter_names)}.")
    tvb_model = model_port.tvb_class()
    out = {}
    for name in model_port.parameter_names:
        value = overrides[name] if name in overrides else np.asarray(getattr(tvb_model, name), dtype=np.float64)
        out[name] = as_param(name, value)
    return out


def check_port(model_port) -> None:
    """A TypeError unless ``model_port`` is one of ``SUPPORTED``."""
    if model_port not in SUPPORTED:
        raise TypeError(f"bifurcation analysis supports {', '.join(m.__name__ for m in SUPPORTED)}; "
                        f"got {getattr(model_port, '__name__', model_port)!r}.")


def complete(model_port, params: Optional[Params]) -> Dict[str, Tensor]:
    """params with TVB defaults for the missing names (other keys, e.g. 'coupling.a', are ignored)."""
    params = dict(params or {})
    return default_params(model_port, **{k: v for k, v in params.items() if k in model_port.parameter_names})


def make_input(coupling_input, weights=None, coupling_a=None, coupling_b=None, params=None):
    """The node-local coupling input: None (zero), a tensor (fixed c, (N or 1, B or 1)), ``"mean-field"``
    with ``weights`` and Linear's ``coupling_a``/``coupling_b`` (c_k = a (sum_j W_kj) S_e,k + b), or a
    ``network.CouplingInput`` / ``FixedInput`` built already (``bifurcation.from_spec``)."""
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
        return CouplingInput(Linear, (as_param("coupling_a", coupling_a), as_param("coupling_b", coupling_b)),
                             w.sum(dim=1, keepdim=True), mean_field=True)
    return FixedInput(as_param("coupling_input", coupling_input))


def node_problem(model_port=ReducedWongWangExcInh, params: Optional[Params] = None, coupling_input=None,
                 weights=None, coupling_a=None, coupling_b=None) -> Problem:
    """The node-local ``Problem`` of this package's bifurcation functions' keyword arguments (see
    ``bifurcation.low_fixed_point``): ``complete`` parameters and the coupling input of ``make_input``."""
    prob = Problem(model_port, complete(model_port, params),
                   make_input(coupling_input, weights, coupling_a, coupling_b, params))
    node_shape(prob)
    return prob
