"""What is fitted: names, bounds, global vs region-wise, priors, and the unconstrained reparametrisation.

A fitted parameter is named as in TVB (see ``simulator.TorchSimulator.params``): any model parameter
(``"G"``, ``"w_p"``, ``"J_i"``, ...), ``"coupling.a"`` / ``"coupling.b"`` for the Linear coupling
(``"coupling_a"`` is accepted too) and ``"noise.nsig"`` (or ``"nsig"``) for Additive noise; names and aliases
are ``simulator.registry``'s.

The optimiser works on an unconstrained tensor theta and never leaves the bounds:

    value = low + (high - low) * sigmoid(theta)                      (linear scale)
    value = exp(log low + (log high - log low) * sigmoid(theta))     (log scale, the default for nsig)

Start values are read from the TVB objects (through the torch twin) and must lie strictly inside the
bounds. A Gaussian prior 0.5 * ((value - mean) / sd)**2 can be attached to any parameter.
"""
import math
import dataclasses
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from .. import checks
from ..errors import ParameterError
from ..simulator.registry import NOISE_NSIG, canonical_name
from .losses import gaussian_prior


@dataclass
class Param:
    """How one parameter is fitted.

    low, high:   bounds (in TVB's units); the start value (read from TVB) must lie strictly inside.
    regionwise:  one value per region (shape (N,)) instead of one global value (shape (1,)).
    prior:       optional Gaussian prior (mean, sd), added to the loss as 0.5*((value-mean)/sd)**2,
                 summed over regions; for a region-wise parameter the mean may be one value per region
                 (e.g. J_i from feedback inhibition control).
    log:         reparametrise on a log scale (default: True for noise.nsig, else False).
    """
    low: float
    high: float
    regionwise: bool = False
    prior: Optional[Tuple[float, float]] = None
    log: Optional[bool] = None


ParamSpec = Union[Param, Tuple[float, float], Mapping]


def fittable_name(name: str, known) -> str:
    """The canonical TVB name of a fitted parameter (``registry.canonical_name``: aliases resolved), or a clear
    error naming what can be fitted."""
    full = canonical_name(name)
    if full not in known:
        raise ParameterError(f"cannot fit {name!r}: the simulator has no such parameter. Fittable: "
                             f"{', '.join(sorted(known))}.")
    return full


def as_param(name: str, spec: ParamSpec) -> Param:
    if isinstance(spec, Param):
        p = dataclasses.replace(spec)          # a copy: the caller's Param is never changed or shared
    elif isinstance(spec, Mapping):
        known = [f.name for f in dataclasses.fields(Param)]
        unknown = sorted(set(spec) - set(known))
        if unknown or not {"low", "high"} <= set(spec):
            raise ParameterError(f"parameter {name!r}: a dict spec takes the keys {known} (low and high required); "
                                 f"got {sorted(spec)}.")
        p = Param(**spec)
    else:
        try:
            low, high = spec
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {name!r}: expected (low, high) bounds or a tvb_torchfit.Param, "
                                 f"got {spec!r}.") from None
        p = Param(low, high)
    p = dataclasses.replace(p, low=checks.finite(p.low, f"parameter {name!r}: low"),
                            high=checks.finite(p.high, f"parameter {name!r}: high"),
                            regionwise=checks.boolean(p.regionwise, f"parameter {name!r}: regionwise"),
                            log=checks.optional(checks.boolean, p.log, f"parameter {name!r}: log"))
    if not p.low < p.high:
        raise ParameterError(f"parameter {name!r}: bounds ({p.low}, {p.high}) are inverted or empty; "
                             "expected low < high.")
    if p.prior is not None:
        try:
            mean, sd = p.prior
            mean = np.asarray(mean, dtype=np.float64)
            ok = math.isfinite(float(sd)) and float(sd) > 0 and np.isfinite(mean).all() and mean.ndim <= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"parameter {name!r}: prior must be (mean, sd) with sd > 0 and a finite mean "
                                 f"(a number, or one per region), got {p.prior}.")
        if mean.ndim == 1 and not p.regionwise:
            raise ParameterError(f"parameter {name!r}: a prior mean per region needs regionwise=True.")
        p = dataclasses.replace(p, prior=(float(mean) if mean.ndim == 0 else tuple(mean.tolist()), float(sd)))
    return p


class ParameterSet(torch.nn.Module):
    """The fitted parameters of a twin as unconstrained ``nn.Parameter``s, mapped into their bounds."""

    def __init__(self, specs: Mapping[str, ParamSpec], start: Mapping[str, torch.Tensor], n_nodes: int):
        super().__init__()
        self.n_nodes = n_nodes
        self.specs: Dict[str, Param] = {}
        self._names = []
        for i, (raw, spec) in enumerate(specs.items()):
            name = fittable_name(raw, start)
            p = as_param(name, spec)
            if p.log is None:                        # a copy: the caller's Param is never changed
                p = dataclasses.replace(p, log=name == NOISE_NSIG)
            if p.log and p.low <= 0:
                raise ParameterError(f"parameter {name!r}: a log-scale fit needs low > 0, got {p.low}.")
            value = start[name].detach().double().reshape(-1)
            if value.numel() not in (1, n_nodes):
                raise ParameterError(f"parameter {name!r}: start value has {value.numel()} entries; expected 1 or "
                                     f"{n_nodes}.")
            if not p.regionwise and value.numel() != 1:
                if torch.allclose(value, value[:1].expand_as(value)):
                    value = value[:1]
                else:
                    raise ParameterError(f"parameter {name!r} is region-wise in the TVB model; fit it with "
                                         "Param(low, high, regionwise=True).")
            if p.regionwise:
                value = value.expand(n_nodes).clone()
            if p.prior is not None and isinstance(p.prior[0], tuple) and len(p.prior[0]) != n_nodes:
                raise ParameterError(f"parameter {name!r}: the prior mean has {len(p.prior[0])} values; expected one "
                                     f"per region ({n_nodes}).")
            if not bool(((value > p.low) & (value < p.high)).all()):
                raise ParameterError(f"parameter {name!r}: start value {value.numpy().round(6).tolist()[:5]} (read from "
                                     f"the TVB simulator) lies outside the bounds ({p.low}, {p.high}); widen the "
                                     "bounds or set a start value inside them on the TVB object.")
            self.specs[name] = p
            self._names.append(name)
            self.register_parameter(f"theta_{i}", torch.nn.Parameter(self._to_theta(p, value)))

    @staticmethod
    def _scale(p: Param):
        return (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)

    def _to_theta(self, p: Param, value: torch.Tensor) -> torch.Tensor:
        lo, hi = self._scale(p)
        x = torch.log(value) if p.log else value
        u = ((x - lo) / (hi - lo)).clamp(1e-12, 1 - 1e-12)
        return torch.log(u) - torch.log1p(-u)

    def _from_theta(self, p: Param, theta: torch.Tensor) -> torch.Tensor:
        lo, hi = self._scale(p)
        x = lo + (hi - lo) * torch.sigmoid(theta)
        return torch.exp(x) if p.log else x

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self._names)

    def values(self) -> Dict[str, torch.Tensor]:
        """Current values, differentiable wrt the thetas: shape (1,) or (N,)."""
        return {name: self._from_theta(self.specs[name], getattr(self, f"theta_{i}"))
                for i, name in enumerate(self._names)}

    def prior_loss(self) -> torch.Tensor:
        """Sum over the parameters with a prior of ``losses.gaussian_prior`` (0.5 * sum(((value - mean) / sd)**2))."""
        total = torch.zeros((), dtype=torch.float64)
        for name, value in self.values().items():
            prior = self.specs[name].prior
            if prior is not None:
                total = total + gaussian_prior(value, prior[0], prior[1])
        return total

    def numpy(self) -> Dict[str, np.ndarray]:
        """Current values as TVB-shaped float64 numpy arrays."""
        return {k: v.detach().cpu().double().numpy().copy() for k, v in self.values().items()}
