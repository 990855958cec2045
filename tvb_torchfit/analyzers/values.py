"""Parameter values of a simulator for the analyzers: TVB's public layout in, the ports' internal layout out.

Callers give values in TVB's public layout ((1,), (N,), (B, 1), (B, N); ``noise.nsig`` also (nvar, 1),
(nvar, N), (B, nvar or 1, N or 1)), named as in ``TorchSimulator.params`` (``simulator.registry``: model
parameter names, ``"coupling." + attribute``, ``"noise.nsig"``; aliases accepted). ``simulator_values``
completes them from a ``SimulatorSpec`` (TVB's configured values) or a ``TorchSimulator`` (its current
params) and converts each with ``registry.to_internal`` (the one converter) to (N or 1, B or 1), float64.
"""
from typing import Dict, Mapping, Optional, Tuple

import torch

from ..errors import ParameterError
from ..simulator.adapter import SimulatorSpec
from ..simulator.registry import NOISE_NSIG, as_tensor, canonical_name, coupling_parameter_names, to_internal

DTYPE = torch.float64
Tensor = torch.Tensor

__all__ = ["DTYPE", "as_float64", "internal", "simulator_values", "coupling_values"]


def as_float64(name: str, value, device=None) -> Tensor:
    """A number, array or tensor as a float64 tensor (``registry.as_tensor``: a tensor keeps its graph; complex
    or non-numeric values are refused)."""
    return as_tensor(name, value, dtype=DTYPE, device=device)


def internal(name: str, value, *, n_nodes: int, batch: int = 1, nvar: int = 1, device=None) -> Tensor:
    """A parameter in the public layout as float64 in the internal one (``registry.to_internal``):
    (1,), (N,), (B, 1), (B, N) -> (N or 1, B or 1); ``noise.nsig`` -> (nvar or 1, N or 1, B or 1)."""
    return to_internal(name, as_float64(name, value, device), n_nodes=n_nodes, batch=batch, nvar=nvar)


def _spec_and_values(spec_or_twin) -> Tuple[SimulatorSpec, Dict[str, object]]:
    if isinstance(spec_or_twin, SimulatorSpec):
        return spec_or_twin, spec_or_twin.parameters()
    if hasattr(spec_or_twin, "spec") and hasattr(spec_or_twin, "params"):
        return spec_or_twin.spec, dict(spec_or_twin.params)
    raise TypeError(f"expected a SimulatorSpec (tvb_torchfit.simulator.read_simulator) or a TorchSimulator "
                    f"(tvb_torchfit.from_tvb), got {type(spec_or_twin).__name__}.")


def _batch_of(name: str, value) -> int:
    shape = tuple(value.shape) if hasattr(value, "shape") else ()
    batched = 3 if name == NOISE_NSIG else 2
    return shape[0] if len(shape) == batched else 1


def simulator_values(spec_or_twin, values: Optional[Mapping[str, object]] = None, *,
                     batch: Optional[int] = None) -> Tuple[SimulatorSpec, Dict[str, Tensor]]:
    """(spec, every simulator parameter in the internal layout, float64), ``values`` overriding the spec's
    configured values / the twin's current params.

    ``values``: name -> number, array or tensor (may require grad) in the public layout; names as in
    ``TorchSimulator.params`` (aliases accepted; ``noise.nsig`` also for a deterministic simulator).
    ``batch``: the number of parameter sets; None: the leading axis of the batched values (1 without).
    Tensors go to the device of the first tensor given.
    """
    spec, base = _spec_and_values(spec_or_twin)
    given = {canonical_name(k): v for k, v in (values or {}).items()}
    known = set(base) | set(spec.model.parameter_names) | {NOISE_NSIG}
    known |= set(coupling_parameter_names(spec.coupling))
    unknown = set(given) - known
    if unknown:
        raise ParameterError(f"unknown parameter(s) {sorted(unknown)} for {spec.model.tvb_class.__name__} with "
                             f"{spec.coupling.__name__} coupling; known: {', '.join(sorted(known))}.")
    base.update(given)
    if batch is None:
        batch = max([_batch_of(k, v) for k, v in base.items()] + [1])
    device = next((v.device for v in given.values() if torch.is_tensor(v)), torch.device("cpu"))
    return spec, {k: internal(k, v, n_nodes=spec.n_nodes, batch=batch, nvar=spec.nvar, device=device)
                  for k, v in base.items()}


def coupling_values(spec: SimulatorSpec, params: Mapping[str, Tensor]) -> Tuple[Tensor, ...]:
    """The coupling port's parameters from ``params`` (canonical names), in its ``parameter_names`` order."""
    return tuple(params[name] for name in coupling_parameter_names(spec.coupling))
