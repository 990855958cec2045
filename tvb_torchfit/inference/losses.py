"""The loss terms of a fit: differentiable functions of torch tensors, batch-friendly.

The statistics they are built from (FC, FCD, Pearson, upper triangle, W1, KS, the target check) live in
``tvb_torchfit.stats``, shared with TVB's validation and the data loaders; they are re-exported here for
convenience. The weighted combination of terms is ``inference.objective``.

* ``loss_neg_corr``, ``loss_log_corr``, ``loss_rmse``: FC losses (``loss_log_corr`` is Griffiths
  et al. 2022's).
* ``fcd_distance``: distance between FCD value distributions (exact W1, or a smooth KS surrogate).
* ``loss_log_variance``: mean squared log ratio of the nodes' BOLD variances (the signal's amplitude, which FC,
  a normalised statistic, does not see).
* ``gaussian_prior``: the negative log of a Gaussian prior (``ParameterSet.prior_loss`` uses it).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from ..errors import ParameterError
from ..stats import (ArrayLike, bold_variance, check_target_fc, fc, fc_corr, fc_rmse, fcd, fcd_values, ks_statistic,
                     smooth_ks, upper, wasserstein)

__all__ = ["fc", "upper", "fc_corr", "loss_neg_corr", "loss_log_corr", "loss_rmse", "fcd", "fcd_values",
           "fcd_distance", "bold_variance", "loss_log_variance", "ks_statistic", "gaussian_prior", "check_target_fc"]


def loss_neg_corr(fc_sim: ArrayLike, fc_target: ArrayLike) -> Tensor:
    """loss = -r, r = fc_corr(fc_sim, fc_target); in [-1, 1], -1 for a perfect match. Shape as fc_corr."""
    return -fc_corr(fc_sim, fc_target)


def loss_log_corr(fc_sim: ArrayLike, fc_target: ArrayLike) -> Tensor:
    """loss = -log(0.5 + 0.5 r), r = fc_corr(fc_sim, fc_target) (Griffiths et al. 2022).

    0 for a perfect match, log 2 for r = 0, growing without bound as r -> -1 (the argument of the
    log is clamped at the dtype's smallest normal number, so r = -1 gives a large finite loss, not inf).
    Shape as fc_corr.
    """
    r = fc_corr(fc_sim, fc_target)
    return -torch.log(torch.clamp(0.5 + 0.5 * r, min=torch.finfo(r.dtype).tiny))


def loss_rmse(fc_sim: ArrayLike, fc_target: ArrayLike) -> Tensor:
    """loss = ``stats.fc_rmse``: sqrt(mean_k (upper(fc_sim)_k - upper(fc_target)_k)**2), 0 for identical FC
    (gradient 0 there, not NaN). Shape as fc_corr."""
    return fc_rmse(fc_sim, fc_target)


def loss_log_variance(var_sim: ArrayLike, var_target: ArrayLike) -> Tensor:
    """loss = mean_i (log var_sim_i - log var_target_i)**2 over the nodes (last axis), 0 for equal variances.
    Both positive (nodes,) (or (..., nodes)); a non-positive variance raises ``ParameterError``."""
    a, b = torch.as_tensor(var_sim), torch.as_tensor(var_target)
    for x, name in ((a, "var_sim"), (b, "var_target")):
        if not bool((x.detach() > 0).all()):
            raise ParameterError(f"{name} has {int((x.detach() <= 0).sum())} non-positive value(s); the log-variance "
                                 "loss needs positive BOLD variances (a constant region has none).")
    return ((torch.log(a) - torch.log(b.to(a.dtype))) ** 2).mean(dim=-1)


def fcd_distance(values_sim: ArrayLike, values_target: ArrayLike, kind: str = "wasserstein",
                 temperature: float = 0.01, n_grid: int = 512) -> Tensor:
    """Differentiable distance between two distributions of values (e.g. :func:`fcd_values`).

    ``values_sim`` (..., n) and ``values_target`` (m,) or (..., m): samples along the last axis (n and
    m may differ), batch axes broadcast; the result has the broadcast batch shape.

    kind="wasserstein":  ``stats.wasserstein``, W1 = integral_0^1 |Q_sim(p) - Q_target(p)| dp, Q the empirical
        quantile functions (sorted values; torch.sort is differentiable), evaluated exactly on the union of
        their quantile breaks {i/n} U {j/m} (= scipy.stats.wasserstein_distance). ``temperature`` and
        ``n_grid`` are unused.
    kind="ks":  ``stats.smooth_ks``, a smooth Kolmogorov-Smirnov surrogate
            D = max_g |F_sim(g) - F_target(g)|,   F(g) = mean_i sigmoid((g - x_i) / temperature)
        over a grid g of midpoints between consecutive sorted pooled values (at most ``n_grid`` of
        them, evenly spaced in rank; cost O(n_grid * (n + m)) time, O(n + m) memory). It uses a
        plain max (gradient through the maximising grid point only): the smoothing is in the CDFs,
        and a soft-max would add its own upward bias of up to (its temperature) * log(n_grid). As
        temperature -> 0 (with every midpoint on the grid) D tends to the two-sample KS statistic.
        ``temperature`` is in the units of the values (FCD values lie in [-1, 1]).
    """
    names = ("values_sim", "values_target")
    if kind == "wasserstein":
        return wasserstein(values_sim, values_target, names=names)
    if kind == "ks":
        return smooth_ks(values_sim, values_target, temperature, n_grid, names=names)
    raise ParameterError(f"kind must be 'wasserstein' or 'ks'; got {kind!r}")


def gaussian_prior(value: Tensor, mean: Union[Tensor, float], sd: Union[Tensor, float],
                   dim: Union[None, int, Sequence[int]] = None) -> Tensor:
    """Negative log of a Gaussian prior, up to a constant: 0.5 * sum(((value - mean) / sd)**2).

    ``mean`` and ``sd`` broadcast against ``value``; ``sd`` must be > 0 everywhere. The sum runs over
    every element (a 0-d tensor) unless ``dim`` names the axes to sum (e.g. ``dim=-1`` keeps a
    leading batch axis).
    """
    v = value if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)
    mu = torch.as_tensor(mean, dtype=v.dtype, device=v.device)
    s = torch.as_tensor(sd, dtype=v.dtype, device=v.device)
    if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(s).all())):
        raise ParameterError(f"the prior's mean and sd must be finite; got mean {mu.tolist()}, sd {s.tolist()}")
    if bool((s <= 0).any()):
        raise ParameterError(f"sd must be > 0 everywhere; {int((s <= 0).sum())} of its {s.numel()} "
                             f"entries are <= 0 (min {float(s.min()):g})")
    try:
        torch.broadcast_shapes(v.shape, mu.shape, s.shape)
    except RuntimeError:
        raise ParameterError(f"value {tuple(v.shape)}, mean {tuple(mu.shape)} and sd {tuple(s.shape)} "
                             f"do not broadcast") from None
    sq = ((v - mu) / s) ** 2
    return 0.5 * (sq.sum() if dim is None else sq.sum(dim=dim))
