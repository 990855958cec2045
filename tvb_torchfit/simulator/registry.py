"""One registry of parameter names: canonical TVB name, aliases, owning component, and the two layouts.

Every parameter tvb_torchfit reads, fits or writes back is named as TVB names it:

* a model parameter by its attribute name on the TVB model (``"G"``, ``"w_p"``, ``"J_i"``, ...; the port's
  ``parameter_names``),
* a coupling parameter as ``"coupling." + attribute`` (``"coupling.a"``, ``"coupling.b"`` for ``Linear``;
  the coupling port's ``parameter_names``),
* the noise's diffusion coefficient as ``"noise.nsig"`` (TVB's ``noise.Additive.nsig``).

Aliases accepted wherever a name is given: ``"nsig"``, ``"coupling_a"``, ``"coupling_b"``.

Layouts. The *public* layout is TVB's plus an optional leading batch axis: model and coupling parameters
``(1,)`` global, ``(N,)`` region-wise, ``(B, 1)`` per batch member, ``(B, N)`` both; ``noise.nsig``
``(1,)``, ``(N,)``, ``(nvar, 1)``, ``(nvar, N)`` or with a leading batch axis ``(B, nvar or 1, N or 1)``.
The *internal* layout, in which the equations are evaluated, puts the batch axis last, where TVB keeps its
modes: ``(N or 1, B or 1)`` and, for nsig, ``(nvar or 1, N or 1, B or 1)``. ``to_internal`` is the one
converter between the two.
"""
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import ParameterError

NOISE_NSIG = "noise.nsig"
COUPLING_PREFIX = "coupling."
ALIASES = {"nsig": NOISE_NSIG, "coupling_a": "coupling.a", "coupling_b": "coupling.b"}

MODEL, COUPLING, NOISE = "model", "coupling", "noise"


@dataclass(frozen=True)
class ParameterName:
    """A canonical parameter name split into the TVB component that owns it and the attribute there."""
    name: str              # canonical, e.g. "G", "coupling.a", "noise.nsig"
    component: str         # MODEL, COUPLING or NOISE
    attribute: str         # the attribute on the TVB object: "G", "a", "nsig"


def canonical_name(name: str) -> str:
    """The canonical spelling of ``name`` (aliases resolved); a ``ParameterError`` if it is not a string."""
    if not isinstance(name, str):
        raise ParameterError(f"parameter names are strings, got {name!r}.")
    return ALIASES.get(name, name)


def parse(name: str) -> ParameterName:
    """``ParameterName`` of a (possibly aliased) name; which component owns it follows from its spelling."""
    full = canonical_name(name)
    if full == NOISE_NSIG:
        return ParameterName(full, NOISE, "nsig")
    if full.startswith(COUPLING_PREFIX):
        return ParameterName(full, COUPLING, full[len(COUPLING_PREFIX):])
    return ParameterName(full, MODEL, full)


def coupling_parameter_names(coupling_port) -> Tuple[str, ...]:
    """The canonical names of a coupling port's parameters, in its ``parameter_names`` order
    (``("coupling.a", "coupling.b")`` for ``coupling.Linear``)."""
    return tuple(COUPLING_PREFIX + a for a in coupling_port.parameter_names)


def simulator_parameter_names(model_port, coupling_port, stochastic: bool) -> Tuple[str, ...]:
    """Every parameter of a simulator built from these ports, in the twin's order: model, coupling, noise."""
    names = tuple(model_port.parameter_names) + coupling_parameter_names(coupling_port)
    return names + ((NOISE_NSIG,) if stochastic else ())


def resolve(name: str, known: Iterable[str], owner: str = "this simulator") -> str:
    """The canonical name of ``name`` if it is among ``known``, else a ``ParameterError`` listing them."""
    full = canonical_name(name)
    known = tuple(known)
    if full not in known:
        raise ParameterError(f"{name!r} is not a parameter of {owner}; known: {', '.join(known)}.")
    return full


def as_tensor(name: str, value, *, dtype: torch.dtype,
              device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """A parameter value (number, array or tensor) as a real tensor of ``dtype`` (a tensor keeps its graph and,
    with ``device`` None, its device); a complex or non-numeric value raises a ``ParameterError`` naming it."""
    if value.is_complex() if torch.is_tensor(value) else np.iscomplexobj(value):
        raise ParameterError(f"parameter {name!r} must be real, got a complex value.")
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ParameterError(f"parameter {name!r} must be a number, array or tensor of numbers; "
                             f"got {type(value).__name__} ({err}).") from None


def _shapes_hint(name: str, n: int, batch: int, nvar: int) -> Tuple[Tuple[int, ...], str, str]:
    if name == NOISE_NSIG:
        shapes = f"(1,), ({n},), ({nvar}, 1), ({nvar}, {n}), ({batch}, 1, 1), ({batch}, 1, {n}) or ({batch}, {nvar}, {n})"
        return (batch, nvar, n), "(batch, nvar, nodes)", shapes
    return (batch, n), "(batch, nodes)", f"(1,), ({n},), ({batch}, 1) or ({batch}, {n})"


def to_internal(name: str, value: torch.Tensor, *, n_nodes: int, batch: int = 1, nvar: int = 1) -> torch.Tensor:
    """A parameter tensor from the public layout to the internal one (batch axis last), as a view.

    Model and coupling parameters: public (1,), (N,), (B, 1), (B, N) -> (N or 1, B or 1); ``noise.nsig``:
    (1,), (N,), (nvar, 1), (nvar, N), (B, nvar or 1, N or 1) -> (nvar or 1, N or 1, B or 1). A shape that does
    not broadcast against (batch, [nvar,] nodes) raises a ``ParameterError`` naming the parameter and the
    shapes accepted.
    """
    target, layout, shapes = _shapes_hint(name, n_nodes, batch, nvar)
    ok = value.dim() <= len(target)
    if ok:
        try:
            ok = torch.broadcast_shapes(tuple(value.shape), target) == target
        except RuntimeError:
            ok = False
    if not ok:
        raise ParameterError(f"parameter {name!r} has shape {tuple(value.shape)}, which does not broadcast "
                             f"against {layout} = {target}; use {shapes}.")
    while value.dim() < len(target):
        value = value.unsqueeze(0)
    return value.permute(*range(1, len(target)), 0)
