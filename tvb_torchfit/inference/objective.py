"""The objective of a fit: named loss terms, each with its weight, summed once (``combine``).

Terms (in this order; a term is present only when its setting switches it on):

===============  ==========================  =====================================================================
name             weight                      term
===============  ==========================  =====================================================================
``fc``           1                           ``loss`` of the mean simulated FC against the target (``FC_LOSSES``)
``fc_rmse``      ``rmse_weight``             RMS difference of the FC upper triangles (pins the FC level)
``prior``        ``prior_weight``            ``ParameterSet.prior_loss``: the Gaussian priors of the ``Param``s
``fcd``          ``fcd_weight``              exact W1 between simulated and target FCD value distributions
``variance``     ``variance_weight``         ``losses.loss_log_variance``: the nodes' BOLD variances (amplitude)
``stability``    10                          ``method="linear"`` with ``stability_margin``: a quadratic wall once
                                             the network's slowest mode is closer than the margin to instability
``bifurcation``  ``bifurcation_weight``      ``analyzers.bifurcation.bifurcation_penalty`` (band around lambda_eff)
===============  ==========================  =====================================================================

What each term reads comes from the estimator's ``Prediction`` (FC, the FC window's BOLD, lambda_max, the
inputs of the bifurcation analyzer); the objective itself holds no simulation.
"""
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import Tensor

from ..analyzers.bifurcation import bifurcation_penalty
from ..errors import ParameterError
from . import losses

FC_LOSSES = {"log_corr": losses.loss_log_corr, "neg_corr": losses.loss_neg_corr, "rmse": losses.loss_rmse}
STABILITY_WEIGHT = 10.0


@dataclass
class Prediction:
    """What an estimator gives for one optimiser step: the mean simulated FC (N, N), the BOLD of the FC window
    (batch, time, nodes; twin only), each node's BOLD variance (nodes,: the linear covariance's diagonal, or
    the window's variance over time averaged over the twin's realisations), lambda_max of the network Jacobian (1/ms; linear only) and the keyword
    arguments of ``bifurcation_penalty`` at this step's values (built only when that term asks for them)."""
    fc: Tensor
    bold: Optional[Tensor] = None
    variance: Optional[Tensor] = None
    lambda_max: Optional[Tensor] = None
    bifurcation_inputs: Optional[Callable[[], Dict]] = None


def combine(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Weighted sum of loss terms: sum_k weights[k] * terms[k], over the names in ``weights``, in their order.

    Every weight must name a term (ParameterError listing the available ones otherwise) and be a
    finite number; terms without a weight are left out (they can still be logged). Terms broadcast
    together (0-d or per batch member); a non-finite term raises ParameterError naming it.
    """
    if not weights:
        raise ParameterError(f"weights is empty; give at least one of the terms {sorted(terms)}")
    total = None
    for name, w in weights.items():
        if name not in terms:
            raise ParameterError(f"weight {name!r} has no term; the terms are {sorted(terms)}")
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
            raise ParameterError(f"weight {name!r} must be a finite number; got {w!r}")
        term = terms[name]
        if not isinstance(term, Tensor):
            raise ParameterError(f"term {name!r} must be a torch.Tensor; got {type(term).__name__}")
        if not bool(torch.isfinite(term.detach()).all()):
            t = term.detach()
            raise ParameterError(f"term {name!r} must be finite; it has {int(torch.isnan(t).sum())} NaN and "
                                 f"{int(torch.isinf(t).sum())} inf entries out of {t.numel()}")
        total = w * term if total is None else total + w * term
    return total


class Objective:
    """The weighted terms of a fit, from its ``FitConfig``; ``objective(prediction)`` -> (total, terms)."""

    def __init__(self, cfg, target: Tensor, pset, target_fcd: Optional[Tensor] = None,
                 target_variance: Optional[Tensor] = None):
        self.cfg, self.target, self.pset, self.target_fcd = cfg, target, pset, target_fcd
        self.target_variance = target_variance
        weights = {"fc": 1.0}
        if cfg.rmse_weight:
            weights["fc_rmse"] = cfg.rmse_weight
        if any(p.prior is not None for p in pset.specs.values()):
            weights["prior"] = cfg.prior_weight
        if target_fcd is not None:
            weights["fcd"] = cfg.fcd_weight
        if target_variance is not None:
            weights["variance"] = cfg.variance_weight
        if cfg.method == "linear" and cfg.stability_margin:
            weights["stability"] = STABILITY_WEIGHT
        if cfg.bifurcation_weight:
            weights["bifurcation"] = cfg.bifurcation_weight
        self.weights = weights

    def terms(self, pred: Prediction) -> Dict[str, Tensor]:
        cfg, out = self.cfg, {}
        for name in self.weights:
            if name == "fc":
                out[name] = FC_LOSSES[cfg.loss](pred.fc, self.target)
            elif name == "fc_rmse":
                out[name] = losses.loss_rmse(pred.fc, self.target)
            elif name == "prior":
                out[name] = self.pset.prior_loss()
            elif name == "fcd":
                sim_fcd = losses.fcd_values(pred.bold, cfg.fcd_window_trs, cfg.fcd_step_trs).reshape(-1)
                out[name] = losses.fcd_distance(sim_fcd, self.target_fcd.to(sim_fcd.dtype))
            elif name == "variance":
                out[name] = losses.loss_log_variance(pred.variance, self.target_variance)
            elif name == "stability":
                out[name] = (torch.relu(pred.lambda_max + cfg.stability_margin) / cfg.stability_margin) ** 2
            elif name == "bifurcation":
                out[name] = bifurcation_penalty(**pred.bifurcation_inputs(), target=cfg.bifurcation_target,
                                                width=cfg.bifurcation_width)
        return out

    def __call__(self, pred: Prediction):
        terms = self.terms(pred)
        return combine(terms, self.weights), terms
