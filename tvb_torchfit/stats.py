"""Statistics of BOLD signals and FC matrices, written once: for the losses (``inference.losses``), TVB's
validation (``roundtrip.validation``) and the data loaders (``data.datasets``) alike.

Two kinds of functions, kept apart on purpose:

* **Differentiable** (torch tensors in and out; numpy arrays are accepted and become float64 tensors):
  ``fc``, ``upper``, ``fc_corr``, ``fc_rmse``, ``fcd``, ``fcd_values``, ``fcd_values_in_stretches``,
  ``bold_variance``, ``autocorrelation``, ``wasserstein``, ``smooth_ks``. A BOLD array is shaped
  ``(..., time, nodes)``, an FC ``(..., nodes, nodes)``; ``...`` are batch axes. Correlations carry a small
  *relative* variance floor (see :func:`fc`): a constant node gets correlation 0 with finite gradients instead of
  NaN, and non-finite inputs raise :class:`~tvb_torchfit.errors.ParameterError`.
* **For reports** (numpy in, numpy or float out, not differentiable): ``corrcoef_fc`` and ``pearson_r`` are
  exactly ``numpy.corrcoef`` (as TVB's own adapters compute FC), NaN for a constant signal, and ``pearson_r``
  leaves non-finite pairs out; ``ks_statistic`` is scipy's two-sample KS statistic. ``upper`` works on both
  (numpy in, numpy out).

``check_target_fc`` validates a user's target FC (shape, finiteness, symmetry, unit diagonal, range).

FCD (:func:`fcd_values`) has one behaviour: fewer than 2 windows raise ``ParameterError`` (never None);
callers that want a softer rule count the windows first with :func:`n_windows`.
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .errors import ParameterError

ArrayLike = Union[Tensor, np.ndarray]

__all__ = ["fc", "upper", "fc_corr", "fc_rmse", "corrcoef_fc", "pearson_r", "fcd", "n_windows", "fcd_values",
           "fcd_values_in_stretches", "bold_variance", "autocorrelation", "wasserstein", "smooth_ks", "ks_statistic",
           "check_target_fc"]

_DEFAULT_EPS = 1e-8


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------

def _as_tensor(x: ArrayLike, name: str) -> Tensor:
    """``x`` as a floating-point tensor (numpy arrays and integer tensors become float64)."""
    if isinstance(x, Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    if isinstance(x, (np.ndarray, np.generic, float, int)) and not isinstance(x, bool):
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise ParameterError(f"{name} must hold real numbers; got a numpy array of dtype {arr.dtype}")
        return torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float64))   # any strides (e.g. sosfiltfilt's)
    raise ParameterError(f"{name} must be a torch.Tensor or a numpy array; got {type(x).__name__}")


def _nonfinite_counts(x: Tensor) -> tuple:
    """(number of NaN entries, number of +-inf entries) of ``x``."""
    return int(torch.isnan(x).sum()), int(torch.isinf(x).sum())


def _require_finite(x: Tensor, name: str) -> None:
    """Raise ParameterError if ``x`` has NaN or inf entries, saying how many of each."""
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = _nonfinite_counts(x)
        raise ParameterError(f"{name} must be finite; it has {n_nan} NaN and {n_inf} inf entries "
                             f"out of {x.numel()} (shape {tuple(x.shape)})")


def _require_int(value, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum`` (bools and floats are refused)."""
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer >= {minimum}; got the bool {value!r}")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise ParameterError(f"{name} must be an integer >= {minimum}; got {value!r} "
                             f"({type(value).__name__})") from None
    if ivalue < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}; got {ivalue}")
    return ivalue


def _resolve_eps(eps: Optional[float], dtype: torch.dtype) -> float:
    """The relative variance floor: ``eps`` if given, else max(1e-8, 10 * machine epsilon of dtype)."""
    if eps is None:
        return max(_DEFAULT_EPS, 10.0 * torch.finfo(dtype).eps)
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ParameterError(f"eps must be a finite positive float; got {eps!r}")
    return float(eps)


def _variance_floor(var: Tensor, eps: float) -> Tensor:
    """eps * (mean variance over the rows, dim -1 of ``var``) + the smallest normal number of the dtype.

    Relative to the data's own scale (so correlations stay scale invariant); the absolute term only
    matters when every row is constant, where it keeps 0 / 0 away.
    """
    return eps * var.mean(dim=-1, keepdim=True) + torch.finfo(var.dtype).tiny


def _corr_rows(x: Tensor, eps: float) -> Tensor:
    """Pearson correlation between the rows of ``x`` (..., R, L) -> (..., R, R), with a unit diagonal.

        xc_r = x_r - mean(x_r),  v_r = mean(xc_r**2),  f = eps * mean_r(v_r) + tiny
        C_rs = mean(xc_r * xc_s) / sqrt((v_r + f) * (v_s + f)),   C_rr := 1
    """
    xc = x - x.mean(dim=-1, keepdim=True)
    var = (xc * xc).mean(dim=-1)                                       # (..., R)
    sd = torch.sqrt(var + _variance_floor(var, eps))
    z = xc / sd.unsqueeze(-1)
    c = z @ z.transpose(-1, -2) / x.shape[-1]
    eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device)
    return c * (1 - eye) + eye


def _pearson_last(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """Pearson correlation along the last axis of two broadcastable tensors, floored as in _corr_rows.

        r = mean(ac * bc) / sqrt((va + f) * (vb + f)),  f = eps * (va + vb) / 2 + tiny
    """
    ac = a - a.mean(dim=-1, keepdim=True)
    bc = b - b.mean(dim=-1, keepdim=True)
    va = (ac * ac).mean(dim=-1)
    vb = (bc * bc).mean(dim=-1)
    floor = _variance_floor(torch.stack(torch.broadcast_tensors(va, vb), dim=-1), eps).squeeze(-1)
    return (ac * bc).mean(dim=-1) / torch.sqrt((va + floor) * (vb + floor))


def _check_square(m: Tensor, name: str) -> int:
    """Number of nodes N of an (..., N, N) tensor, else ParameterError."""
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ParameterError(f"{name} must be shaped (..., nodes, nodes); got shape {tuple(m.shape)}")
    return m.shape[-1]


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x >= 0 with gradient 0 (not inf/NaN) where x == 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))),
                       torch.zeros_like(x))


# ----------------------------------------------------------------------------------------------------
# functional connectivity
# ----------------------------------------------------------------------------------------------------

def fc(bold: ArrayLike, eps: Optional[float] = None) -> Tensor:
    """Pearson functional connectivity of a BOLD array: (..., time, nodes) -> (..., nodes, nodes).

        x_i = bold[..., :, i] - mean_t,   v_i = mean_t(x_i**2)
        FC_ij = mean_t(x_i * x_j) / sqrt((v_i + f) * (v_j + f)),   FC_ii = 1
        f = eps * mean_k(v_k) + tiny   (per batch member)

    The variance floor ``f`` is *relative* to the mean node variance, so FC does not depend on the
    units of BOLD (fc(c * bold) == fc(bold)); ``tiny`` (the dtype's smallest normal number) only acts
    when every node is constant. ``eps`` defaults to max(1e-8, 10 * machine epsilon): in float64 the
    off-diagonal entries of a node with the mean variance shrink by a relative 1e-8 compared with
    ``numpy.corrcoef``. A constant node gets FC 0 with every other node (numpy gives NaN) and finite
    gradients; the diagonal is set to exactly 1. Entries lie in [-1, 1].
    """
    x = _as_tensor(bold, "bold")
    if x.ndim < 2:
        raise ParameterError(f"bold must be shaped (..., time, nodes); got shape {tuple(x.shape)}")
    if x.shape[-2] < 2:
        raise ParameterError(f"bold needs at least 2 time points to compute FC; got shape {tuple(x.shape)} "
                             f"(time is the second-to-last axis)")
    _require_finite(x, "bold")
    return _corr_rows(x.transpose(-1, -2), _resolve_eps(eps, x.dtype))


def upper(m: ArrayLike) -> ArrayLike:
    """Upper-triangle values (above the diagonal, k=1), row by row: (..., N, N) -> (..., N(N-1)/2).

    A tensor gives a tensor (differentiable); a numpy array gives a numpy array of the same dtype.
    """
    if isinstance(m, np.ndarray):
        if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
            raise ParameterError(f"m must be shaped (..., nodes, nodes); got shape {tuple(m.shape)}")
        i, j = np.triu_indices(m.shape[-1], k=1)
        return m[..., i, j]
    t = _as_tensor(m, "m")
    n = _check_square(t, "m")
    i, j = torch.triu_indices(n, n, offset=1, device=t.device)
    return t[..., i, j]


def _fc_pair_upper(fc_sim: ArrayLike, fc_target: ArrayLike) -> tuple:
    """Checked upper triangles (sim, target) of two FC stacks with the same number of nodes (>= 3)."""
    sim = _as_tensor(fc_sim, "fc_sim")
    target = _as_tensor(fc_target, "fc_target")
    n_sim = _check_square(sim, "fc_sim")
    n_target = _check_square(target, "fc_target")
    if n_sim != n_target:
        raise ParameterError(f"fc_sim has {n_sim} nodes but fc_target has {n_target}; they must match")
    if n_sim < 3:
        raise ParameterError(f"comparing FC matrices needs at least 3 nodes (3 upper-triangle values); "
                             f"got {n_sim}")
    try:
        torch.broadcast_shapes(sim.shape, target.shape)
    except RuntimeError:
        raise ParameterError(f"the batch axes of fc_sim {tuple(sim.shape)} and fc_target "
                             f"{tuple(target.shape)} do not broadcast") from None
    _require_finite(sim, "fc_sim")
    _require_finite(target, "fc_target")
    target = target.to(device=sim.device, dtype=torch.promote_types(sim.dtype, target.dtype))
    return upper(sim), upper(target)


def fc_corr(fc_sim: ArrayLike, fc_target: ArrayLike, eps: Optional[float] = None) -> Tensor:
    """Pearson correlation between the upper triangles (k=1) of two FC matrices.

        r = mean(a * b) / sqrt((v_a + f) * (v_b + f)),   a, b = centred upper(fc_sim), upper(fc_target)
        f = eps * (v_a + v_b) / 2 + tiny

    ``fc_sim`` (..., N, N) and ``fc_target`` (N, N) or (..., N, N) broadcast; the result has their
    broadcast batch shape (a 0-d tensor without batch axes). The floor ``f`` (``eps`` as in :func:`fc`)
    makes a constant simulated FC give r = 0 with finite gradients instead of NaN.
    """
    a, b = _fc_pair_upper(fc_sim, fc_target)
    return _pearson_last(a, b, _resolve_eps(eps, a.dtype))


def fc_rmse(fc_sim: ArrayLike, fc_target: ArrayLike) -> Tensor:
    """rmse = sqrt(mean_k (upper(fc_sim)_k - upper(fc_target)_k)**2), root-mean-square FC difference.

    0 for identical FC (where the gradient is taken as 0, not NaN). Shape as fc_corr.
    """
    a, b = _fc_pair_upper(fc_sim, fc_target)
    return _safe_sqrt(((a - b) ** 2).mean(dim=-1))



# ----------------------------------------------------------------------------------------------------
# for reports: numpy.corrcoef, as TVB's adapters compute FC
# ----------------------------------------------------------------------------------------------------

def corrcoef_fc(ts: np.ndarray) -> np.ndarray:
    """FC of a (time, nodes) numpy series: exactly ``numpy.corrcoef`` over nodes (NaN rows for constant nodes)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(ts, rowvar=False)


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two 1-D numpy samples (``numpy.corrcoef``) over the pairs where both are finite; NaN when
    fewer than 2 such pairs remain or a sample is constant. For reports (not differentiable, no floor)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(x[ok], y[ok])[0, 1])

# ----------------------------------------------------------------------------------------------------
# functional connectivity dynamics
# ----------------------------------------------------------------------------------------------------

def fcd(bold: ArrayLike, window: int, step: int, eps: Optional[float] = None) -> Tensor:
    """Functional connectivity dynamics (Hansen et al. 2015): (..., time, nodes) -> (..., W, W).

    Window w covers samples [w*step, w*step + window), for w = 0 .. W-1, W = (time - window) // step + 1
    (a trailing partial window is dropped). With u_w = upper(fc(bold[..., window w, :])):

        FCD_vw = Pearson(u_v, u_w)      (floored as in fc, FCD_ww = 1)

    ``window`` and ``step`` are in samples (BOLD time points), not ms.
    """
    x = _as_tensor(bold, "bold")
    if x.ndim < 2:
        raise ParameterError(f"bold must be shaped (..., time, nodes); got shape {tuple(x.shape)}")
    n_time, n_nodes = x.shape[-2], x.shape[-1]
    window = _require_int(window, "window", 2)
    step = _require_int(step, "step", 1)
    if n_nodes < 3:
        raise ParameterError(f"FCD needs at least 3 nodes (3 FC values per window); bold has {n_nodes}")
    if window > n_time:
        raise ParameterError(f"window ({window} samples) is longer than bold ({n_time} time points)")
    n_windows = (n_time - window) // step + 1
    if n_windows < 2:
        raise ParameterError(f"FCD needs at least 2 windows; window={window} and step={step} fit "
                             f"{n_windows} into {n_time} time points")
    _require_finite(x, "bold")
    eps = _resolve_eps(eps, x.dtype)
    windows = x.unfold(-2, window, step)                  # (..., W, nodes, window)
    window_fc = _corr_rows(windows, eps)                  # (..., W, nodes, nodes)
    return _corr_rows(upper(window_fc), eps)              # (..., W, W)


def n_windows(n_time: int, window: int, step: int) -> int:
    """Number of sliding windows [w*step, w*step + window) that fit into ``n_time`` samples (0 if none)."""
    return 0 if window > n_time else (n_time - window) // step + 1


def fcd_values(bold: ArrayLike, window: int, step: int, eps: Optional[float] = None) -> Tensor:
    """Upper-triangle (k=1) values of :func:`fcd`: (..., time, nodes) -> (..., W(W-1)/2).

    Fewer than 2 windows raise ``ParameterError`` (count them first with :func:`n_windows` where that
    should not be an error). Note that overlapping windows (step < window) correlate trivially; drop nearby
    pairs yourself if that matters for your comparison.
    """
    return upper(fcd(bold, window, step, eps=eps))


def fcd_values_in_stretches(bold: ArrayLike, window: int, step: int, stretch: int,
                            eps: Optional[float] = None) -> Tensor:
    """The FCD values of every ``stretch``-sample part of ``bold`` (time, nodes), pooled: (n,) values.

    A simulated window of ``stretch`` samples holds W_s = :func:`n_windows` (stretch, window, step) FCD windows, so
    its FCD values are pairs of windows at most W_s - 1 steps apart (mostly overlapping ones, which correlate
    trivially); the FCD of a whole session holds every lag. To compare like with like, this takes the W_s x W_s
    block of the session's FCD at every window start i = 0 .. W - W_s and pools their upper triangles: pair (a, b),
    a < b, b - a < W_s, appears once for every block that holds it. With ``stretch`` >= the session's length it is
    :func:`fcd_values` of the session. ``window``, ``step``, ``stretch`` in samples."""
    x = _as_tensor(bold, "bold")
    stretch = _require_int(stretch, "stretch", 2)
    full = fcd(x, window, step, eps=eps)                        # (W, W)
    W, Ws = full.shape[-1], n_windows(min(stretch, x.shape[-2]), window, step)
    if Ws < 2:
        raise ParameterError(f"stretch={stretch} samples holds {Ws} FCD window(s) of {window} samples every {step}; "
                             "at least 2 are needed.")
    a, b = torch.triu_indices(W, W, offset=1, device=full.device)
    keep = (b - a) < Ws
    a, b = a[keep], b[keep]
    count = a.clamp(max=W - Ws) - (b - Ws + 1).clamp(min=0) + 1          # the blocks holding (a, b)
    return torch.repeat_interleave(full[..., a, b], count, dim=-1)


def bold_variance(bold: ArrayLike) -> Tensor:
    """Each node's variance over time, (..., time, nodes) -> (..., nodes): mean_t (x_t - mean_t x)**2 (the
    signal's units squared). At least 2 time points; non-finite values raise ``ParameterError``."""
    x = _as_tensor(bold, "bold")
    if x.ndim < 2 or x.shape[-2] < 2:
        raise ParameterError(f"bold has shape {tuple(x.shape)}; expected (..., time, nodes) with at least 2 time "
                             "points.")
    _require_finite(x, "bold")
    return ((x - x.mean(dim=-2, keepdim=True)) ** 2).mean(dim=-2)


def autocorrelation(bold: ArrayLike, lag: int) -> Tensor:
    """Each node's autocorrelation at ``lag`` samples, (..., time, nodes) -> (..., nodes):

        rho_i(k) = sum_t (x_t - m)(x_{t+k} - m) / sum_t (x_t - m)**2      (m: the node's mean over all t)

    the standard (biased) estimator, as in Box & Jenkins; ``lag`` in samples (TRs), 1 <= lag < time. It says how
    slowly a BOLD signal decorrelates, which sets how much sliding-window FC (FCD) wanders. A constant node gets 0
    (the relative floor of :func:`fc`)."""
    x = _as_tensor(bold, "bold")
    if x.ndim < 2:
        raise ParameterError(f"bold must be shaped (..., time, nodes); got shape {tuple(x.shape)}")
    lag = _require_int(lag, "lag", 1)
    if lag >= x.shape[-2]:
        raise ParameterError(f"lag ({lag} samples) must be shorter than bold ({x.shape[-2]} time points)")
    _require_finite(x, "bold")
    d = x - x.mean(dim=-2, keepdim=True)
    var = (d * d).sum(dim=-2)
    var = var + _variance_floor(var, _resolve_eps(None, x.dtype))
    return (d[..., lag:, :] * d[..., :-lag, :]).sum(dim=-2) / var


# ----------------------------------------------------------------------------------------------------
# distances between distributions of values
# ----------------------------------------------------------------------------------------------------

def _wasserstein_sorted(a: Tensor, b: Tensor) -> Tensor:
    """Exact W1 between the empirical distributions of a (..., n) and b (..., m).

        W1 = integral_0^1 |Q_a(p) - Q_b(p)| dp

    Q_a, Q_b are step functions with breaks at i/n and j/m; on the merged breaks (integers in units
    of 1/(n m)) both are constant, so the integral is an exact finite sum of sorted values.
    """
    n, m = a.shape[-1], b.shape[-1]
    a_sorted = torch.sort(a, dim=-1).values
    b_sorted = torch.sort(b, dim=-1).values
    breaks = torch.unique(torch.cat((torch.arange(0, n * m + 1, m), torch.arange(0, n * m + 1, n))))
    starts, widths = breaks[:-1], (breaks[1:] - breaks[:-1]).to(a.dtype) / (n * m)
    ia, ib = (starts // m).to(a.device), (starts // n).to(a.device)
    return (widths.to(a.device) * (a_sorted[..., ia] - b_sorted[..., ib]).abs()).sum(dim=-1)


def _smooth_cdf_gap(g: Tensor, a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """|F_a(g) - F_b(g)| at grid points g (..., G), F_a(g) = mean_i sigmoid((g - a_i) / temperature)."""
    g = g.unsqueeze(-1)
    cdf_a = torch.sigmoid((g - a.unsqueeze(-2)) / temperature).mean(dim=-1)
    cdf_b = torch.sigmoid((g - b.unsqueeze(-2)) / temperature).mean(dim=-1)
    return (cdf_a - cdf_b).abs()


def _smooth_ks(a: Tensor, b: Tensor, temperature: float, n_grid: int, chunk: int = 1 << 22) -> Tensor:
    """max_g |F_a(g) - F_b(g)| with F_a(g) = mean_i sigmoid((g - a_i) / temperature).

    The grid g is the midpoints between consecutive sorted pooled values (where the empirical CDFs
    are constant), thinned to at most ``n_grid`` evenly spaced ones; it moves with the values.
    The maximising grid point is found without autograd, a chunk of grid points at a time, and only
    that point is re-evaluated with autograd: same value and gradient as a plain max over the grid,
    with memory O(n + m) per batch member instead of O(n_grid * (n + m)).
    """
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    a = a.expand(*shape, a.shape[-1])
    b = b.expand(*shape, b.shape[-1])
    pooled = torch.sort(torch.cat((a, b), dim=-1), dim=-1).values
    grid = 0.5 * (pooled[..., 1:] + pooled[..., :-1])
    if grid.shape[-1] > n_grid:
        idx = torch.linspace(0, grid.shape[-1] - 1, n_grid, device=grid.device).round().long().unique()
        grid = grid[..., idx]
    with torch.no_grad():
        per_chunk = max(1, chunk // max(1, pooled[..., 0].numel() * pooled.shape[-1]))
        gaps = torch.cat([_smooth_cdf_gap(grid[..., k:k + per_chunk], a, b, temperature)
                          for k in range(0, grid.shape[-1], per_chunk)], dim=-1)
        best = gaps.argmax(dim=-1, keepdim=True)
    return _smooth_cdf_gap(grid.gather(-1, best), a, b, temperature).squeeze(-1)



def _sample_pair(a: ArrayLike, b: ArrayLike, names: Tuple[str, str]) -> Tuple[Tensor, Tensor]:
    """Checked samples (..., n), (..., m) with broadcastable batch axes, in one dtype on one device."""
    a = _as_tensor(a, names[0])
    b = _as_tensor(b, names[1])
    for t, name in ((a, names[0]), (b, names[1])):
        if t.ndim < 1 or t.shape[-1] < 1:
            raise ParameterError(f"{name} must be shaped (..., samples) with at least one sample; "
                                 f"got shape {tuple(t.shape)}")
        _require_finite(t, name)
    try:
        torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError:
        raise ParameterError(f"the batch axes of {names[0]} {tuple(a.shape)} and {names[1]} "
                             f"{tuple(b.shape)} do not broadcast (samples are the last axis)") from None
    b = b.to(device=a.device, dtype=torch.promote_types(a.dtype, b.dtype))
    return a.to(b.dtype), b


def wasserstein(a: ArrayLike, b: ArrayLike, *, names: Tuple[str, str] = ("a", "b")) -> Tensor:
    """Exact Wasserstein-1 distance between the empirical distributions of ``a`` (..., n) and ``b`` (..., m),
    differentiable (torch.sort is): W1 = integral_0^1 |Q_a(p) - Q_b(p)| dp, equal to
    ``scipy.stats.wasserstein_distance`` for any n, m. Batch axes broadcast. ``names``: for error messages."""
    return _wasserstein_sorted(*_sample_pair(a, b, names))


def smooth_ks(a: ArrayLike, b: ArrayLike, temperature: float = 0.01, n_grid: int = 512, *,
              names: Tuple[str, str] = ("a", "b")) -> Tensor:
    """Differentiable Kolmogorov-Smirnov surrogate D = max_g |F_a(g) - F_b(g)|, F(g) = mean_i sigmoid((g - x_i) /
    temperature), over at most ``n_grid`` midpoints between consecutive sorted pooled values (see
    ``inference.losses.fcd_distance``). As temperature -> 0 it tends to :func:`ks_statistic`."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ParameterError(f"temperature must be a finite positive float for kind='ks'; got {temperature!r}")
    n_grid = _require_int(n_grid, "n_grid", 1)
    a, b = _sample_pair(a, b, names)
    return _smooth_ks(a, b, float(temperature), n_grid)


def ks_statistic(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| via scipy.stats.ks_2samp.

    Not differentiable: for reporting. ``a`` and ``b`` are 1-D samples (tensors are detached).
    """
    from scipy.stats import ks_2samp

    arrays = []
    for x, name in ((a, "a"), (b, "b")):
        t = _as_tensor(x, name)
        if t.ndim != 1 or t.shape[0] < 1:
            raise ParameterError(f"{name} must be a non-empty 1-D sample; got shape {tuple(t.shape)}")
        _require_finite(t, name)
        arrays.append(t.detach().cpu().to(torch.float64).numpy())
    return float(ks_2samp(arrays[0], arrays[1]).statistic)



# ----------------------------------------------------------------------------------------------------
# a user's target FC
# ----------------------------------------------------------------------------------------------------

def check_target_fc(target: ArrayLike, n_nodes: int, atol: float = 1e-5, name: str = "target FC") -> Tensor:
    """Validate a user-provided target FC and return it as a float64 tensor (a copy, on the CPU
    for numpy input, on the input's device for a tensor).

    Checks, in order, raising ParameterError with the offending numbers: 2-D and square; ``n_nodes``
    nodes; no NaN or inf (how many of each); symmetric within ``atol`` (max |A - A.T|); a correlation
    matrix: diagonal within ``atol`` of 1 and every entry in [-1 - atol, 1 + atol].
    """
    n_nodes = _require_int(n_nodes, "n_nodes", 1)
    if isinstance(target, Tensor):
        t = target.detach().to(torch.float64).clone()
    elif isinstance(target, np.ndarray):
        if target.dtype.kind not in "biuf":
            raise ParameterError(f"{name} must hold real numbers; got a numpy array of dtype {target.dtype}")
        t = torch.tensor(target, dtype=torch.float64)
    else:
        raise ParameterError(f"{name} must be a numpy array or a torch.Tensor; got {type(target).__name__}")
    if t.ndim != 2:
        raise ParameterError(f"{name} must be 2-D (nodes, nodes); got {t.ndim}-D with shape {tuple(t.shape)}")
    if t.shape[0] != t.shape[1]:
        raise ParameterError(f"{name} must be square (nodes, nodes); got shape {tuple(t.shape)}")
    if t.shape[0] != n_nodes:
        raise ParameterError(f"{name} has {t.shape[0]} nodes but the simulation has {n_nodes} nodes")
    if not bool(torch.isfinite(t).all()):
        n_nan, n_inf = _nonfinite_counts(t)
        raise ParameterError(f"{name} must be finite; it has {n_nan} NaN and {n_inf} inf entries "
                             f"out of {t.numel()}")
    asym = float((t - t.T).abs().max())
    if asym > atol:
        raise ParameterError(f"{name} is not symmetric: max |FC - FC.T| = {asym:.3g} > atol = {atol:g}")
    diag_err = float((torch.diagonal(t) - 1).abs().max())
    if diag_err > atol:
        raise ParameterError(f"{name} is not a correlation matrix: its diagonal must be 1, but "
                             f"max |diag - 1| = {diag_err:.3g} (min diag {float(torch.diagonal(t).min()):.3g}); "
                             f"if the diagonal was zeroed, set it back to 1")
    outside = (t.abs() > 1 + atol)
    if bool(outside.any()):
        raise ParameterError(f"{name} is not a correlation matrix: {int(outside.sum())} entries are "
                             f"outside [-1, 1] (min {float(t.min()):.3g}, max {float(t.max()):.3g}); "
                             f"if it is Fisher z-transformed, apply tanh first")
    return t
