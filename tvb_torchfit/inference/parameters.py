"""What is fitted: names, bounds, global vs region-wise, priors, and the unconstrained reparametrisation.

A fitted parameter is named as in TVB (see ``simulator.TorchSimulator.params``): any model parameter
(``"G"``, ``"w_p"``, ``"J_i"``, ...), ``"coupling.a"`` / ``"coupling.b"`` for the Linear coupling
(``"coupling_a"`` is accepted too) and ``"noise.nsig"`` (or ``"nsig"``) for Additive noise; names and aliases
are ``simulator.registry``'s.

The optimiser works on an unconstrained tensor theta and never leaves the bounds:

    value = low + (high - low) * sigmoid(theta)                      (linear scale)
    value = exp(log low + (log high - log low) * sigmoid(theta))     (log scale, the default for nsig)

Start values are read from the TVB objects (through the torch twin) and must lie strictly inside the
bounds. A Gaussian prior 0.5 * ((value - mean) / sd)**2 can be attached to any parameter (on log-scale
parameters, to log value: a log-normal prior).

Parametric heterogeneity (``Param(low, high, maps=...)``, after the pFIC idea of Zhang et al. 2024): a
region-wise parameter given by K + 1 coefficients and K maps m_k (one value per region),

    eta_i = c_0 + sum_k c_k z_k(i),    z_k = (m_k - mean(m_k)) / sd(m_k)    (standardised: zero mean, unit sd)
    value_i = low + (high - low) * sigmoid(eta_i)    (or its log-scale form, as above)

i.e. ``p_i = c_0 + sum_k c_k m_k(i)`` on the logit scale of the bounds: smooth, always inside (low, high), and
for small deviations linear in the maps. The coefficients c are what the optimiser moves (theta = c); being
on standardised maps they are comparable across maps (logit units per sd of the map). The start coefficients
are the least-squares fit of logit(start) on [1, z_1, ..., z_K] (c_0 = mean logit, c_k = 0 for a global start).
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
                 (e.g. J_i from feedback inhibition control). On a log-scale parameter the prior is
                 log-normal: 0.5*((log value - log mean)/sd)**2, the mean in TVB's units, sd in natural-log
                 units (sd 1: a factor e either way).
    log:         reparametrise on a log scale (default: True for noise.nsig, else False).
    maps:        optional region maps (K, N) (or one map (N,)): the parameter is then region-wise and given by
                 K + 1 coefficients on the standardised maps (module docstring); ``map_names`` label them.
    """
    low: float
    high: float
    regionwise: bool = False
    prior: Optional[Tuple[float, float]] = None
    log: Optional[bool] = None
    maps: Optional[Tuple[Tuple[float, ...], ...]] = None
    map_names: Optional[Tuple[str, ...]] = None


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
    if p.maps is not None:
        p = dataclasses.replace(p, regionwise=True)
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
    if p.maps is not None:
        maps = check_maps(name, p.maps)
        names = tuple(str(x) for x in p.map_names) if p.map_names is not None else \
            tuple(f"map{k}" for k in range(1, len(maps) + 1))
        if len(names) != len(maps):
            raise ParameterError(f"parameter {name!r}: {len(names)} map_names for {len(maps)} maps.")
        p = dataclasses.replace(p, regionwise=True, maps=tuple(tuple(m.tolist()) for m in maps), map_names=names)
    return p


def with_scale(name: str, p: Param) -> Param:
    """``p`` with its scale decided: ``log`` as given, else log for ``noise.nsig`` only (a copy: the caller's
    ``Param`` is never changed)."""
    return p if p.log is not None else dataclasses.replace(p, log=name == NOISE_NSIG)


def bounds_on_scale(p: Param) -> Tuple[float, float]:
    """``p``'s bounds on its fit scale (``log`` decided: ``with_scale``): (log low, log high) or (low, high)."""
    return (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)


def inside_bounds(values: Mapping[str, np.ndarray], params: Mapping[str, ParamSpec],
                  margin: float) -> Dict[str, np.ndarray]:
    """``values`` (TVB names) with each fitted one moved, where it is closer to a bound than ``margin`` x the
    range, to that distance (on the fit's scale: log for log-scale parameters); the rest unchanged. Where a fit
    starts from an earlier fit's values: on the logit scale a value at its bound has a vanishing gradient."""
    out = {name: np.array(v, dtype=np.float64) for name, v in values.items()}
    for raw, spec in params.items():
        name = canonical_name(raw)
        if name not in out:
            continue
        p = with_scale(name, as_param(name, spec))
        lo, hi = bounds_on_scale(p)
        x = np.log(out[name]) if p.log else out[name]
        x = np.clip(x, lo + margin * (hi - lo), hi - margin * (hi - lo))
        out[name] = np.exp(x) if p.log else x
    return out


def check_maps(name: str, maps, n_nodes: Optional[int] = None) -> np.ndarray:
    """Region maps as a (K, N) float64 array: finite, not constant, N = ``n_nodes`` when given."""
    try:
        arr = np.array(maps, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"parameter {name!r}: maps must be numbers, one per region (K maps: (K, N)); "
                             f"got {type(maps).__name__}.") from None
    arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ParameterError(f"parameter {name!r}: maps have shape {arr.shape}; expected (K, N) or (N,).")
    if n_nodes is not None and arr.shape[1] != n_nodes:
        raise ParameterError(f"parameter {name!r}: maps have {arr.shape[1]} values each; expected one per region "
                             f"({n_nodes}).")
    if not np.isfinite(arr).all():
        raise ParameterError(f"parameter {name!r}: maps have {int((~np.isfinite(arr)).sum())} non-finite values.")
    if (arr.std(axis=1) == 0).any():
        raise ParameterError(f"parameter {name!r}: map(s) {np.nonzero(arr.std(axis=1) == 0)[0].tolist()} are constant "
                             "over regions; a constant map adds nothing to the intercept.")
    return arr


def standardize_maps(maps: np.ndarray) -> np.ndarray:
    """(m - mean) / sd per map (population sd), so that coefficients of different maps are comparable."""
    maps = np.asarray(maps, dtype=np.float64)
    return (maps - maps.mean(axis=1, keepdims=True)) / maps.std(axis=1, keepdims=True)


class ParameterSet(torch.nn.Module):
    """The fitted parameters of a twin as unconstrained ``nn.Parameter``s, mapped into their bounds."""

    def __init__(self, specs: Mapping[str, ParamSpec], start: Mapping[str, torch.Tensor], n_nodes: int):
        super().__init__()
        self.n_nodes = n_nodes
        self.specs: Dict[str, Param] = {}
        self._names = []
        for i, (raw, spec) in enumerate(specs.items()):
            name = fittable_name(raw, start)
            p = with_scale(name, as_param(name, spec))
            if p.log and p.low <= 0:
                raise ParameterError(f"parameter {name!r}: a log-scale fit needs low > 0, got {p.low}.")
            value = start[name].detach().double().reshape(-1)
            if value.numel() > n_nodes and value.numel() % n_nodes == 0:
                rows = value.reshape(-1, n_nodes)      # one row per state variable (TVB's nsig after a region-wise
                if torch.equal(rows, rows[:1].expand_as(rows)):     # write-back): the same in each, one per node
                    value = rows[0]
            if value.numel() not in (1, n_nodes):
                per_variable = value.numel() % n_nodes == 0 and value.numel() > n_nodes
                raise ParameterError(f"parameter {name!r}: start value has {value.numel()} entries; expected 1 or "
                                     f"{n_nodes}" + (" (it differs between state variables; a region-wise fit has "
                                                     "one value per node: set the same value for every state "
                                                     "variable)" if per_variable else "") + ".")
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
            theta = self._to_theta(p, value)
            if p.maps is not None:
                design = self._design(name, p, n_nodes)
                self.register_buffer(f"design_{i}", design)
                # gelsd (SVD), not torch's CPU default gelsy: gelsy's result here depends on the state of the
                # heap (its last bits differ between calls on the same input), so a resumed or repeated fit
                # would not start from bit-identical coefficients (tests/test_param_maps.py)
                theta = torch.linalg.lstsq(design, theta.unsqueeze(1), driver="gelsd").solution[:, 0]
            self.register_parameter(f"theta_{i}", torch.nn.Parameter(theta))

    @staticmethod
    def _design(name: str, p: Param, n_nodes: int) -> torch.Tensor:
        """[1, z_1, ..., z_K]: (N, K + 1), the standardised maps with an intercept column."""
        z = standardize_maps(check_maps(name, p.maps, n_nodes))
        return torch.from_numpy(np.concatenate([np.ones((1, n_nodes)), z]).T.copy())

    def _to_theta(self, p: Param, value: torch.Tensor) -> torch.Tensor:
        lo, hi = bounds_on_scale(p)
        x = torch.log(value) if p.log else value
        u = ((x - lo) / (hi - lo)).clamp(1e-12, 1 - 1e-12)
        return torch.log(u) - torch.log1p(-u)

    def _from_theta(self, p: Param, theta: torch.Tensor) -> torch.Tensor:
        lo, hi = bounds_on_scale(p)
        x = lo + (hi - lo) * torch.sigmoid(theta)
        return torch.exp(x) if p.log else x

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self._names)

    @property
    def mapped_names(self) -> Tuple[str, ...]:
        """The parameters given by coefficients on maps."""
        return tuple(n for n in self._names if self.specs[n].maps is not None)

    def _predictor(self, i: int, theta: torch.Tensor) -> torch.Tensor:
        """The unconstrained value(s) of parameter i: theta itself, or eta = design @ c for a mapped one."""
        design = getattr(self, f"design_{i}", None)
        return theta if design is None else design.to(theta.dtype) @ theta

    def values(self) -> Dict[str, torch.Tensor]:
        """Current values, differentiable wrt the thetas: shape (1,) or (N,)."""
        return {name: self._from_theta(self.specs[name], self._predictor(i, getattr(self, f"theta_{i}")))
                for i, name in enumerate(self._names)}

    def coefficients(self) -> Dict[str, np.ndarray]:
        """The coefficients (c_0, c_1, ..., c_K) of every mapped parameter, float64 numpy."""
        return {name: getattr(self, f"theta_{i}").detach().cpu().double().numpy().copy()
                for i, name in enumerate(self._names) if self.specs[name].maps is not None}

    def values_from_coefficients_tensor(self, name: str, coefficients: torch.Tensor) -> torch.Tensor:
        """The region-wise values (N,) of mapped parameter ``name`` at ``coefficients`` (K + 1,), differentiable."""
        return self._from_theta(self.specs[name], self._predictor(self._names.index(name), coefficients))

    def values_from_coefficients(self, name: str, coefficients) -> np.ndarray:
        """``values_from_coefficients_tensor`` as float64 numpy."""
        c = torch.as_tensor(np.asarray(coefficients, dtype=np.float64))
        with torch.no_grad():
            return self.values_from_coefficients_tensor(name, c).numpy().copy()

    def prior_loss(self) -> torch.Tensor:
        """Sum over the parameters with a prior of ``losses.gaussian_prior`` (0.5 * sum(((value - mean) / sd)**2))."""
        total = torch.zeros((), dtype=torch.float64)
        for name, value in self.values().items():
            prior = self.specs[name].prior
            if prior is not None:
                if self.specs[name].log:               # log-normal: mean in TVB's units, sd in natural-log units
                    mean = torch.as_tensor(prior[0], dtype=value.dtype, device=value.device)
                    total = total + gaussian_prior(torch.log(value), torch.log(mean), prior[1])
                else:
                    total = total + gaussian_prior(value, prior[0], prior[1])
        return total

    def numpy(self) -> Dict[str, np.ndarray]:
        """Current values as TVB-shaped float64 numpy arrays."""
        return {k: v.detach().cpu().double().numpy().copy() for k, v in self.values().items()}
