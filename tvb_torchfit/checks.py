"""Small checkers for the arguments of every public entry point: one place for the rules, so that bad input
is refused *before* any work, with the package's own error naming the argument, its value and what was expected.

Every checker takes the value and the argument's name (as the user wrote it: ``"n_steps"``, ``"tr"``,
``"checkpoint"``) and returns the value in its canonical form (``int``, ``float``, ``torch.dtype``, ...), or
raises ``error`` (``ParameterError`` by default; the data loaders pass ``DataError``).

The TR rule (one rule, everywhere a TR enters as a number: ``load_bold(tr=)``, a file's ``TR`` variable,
``load_subject(tr=)``, ``load_hcp_subject(tr=)``, ``preprocessing.bandpass(tr=)``): TRs are in ms; a value
below ``TR_SECONDS_BELOW`` (20) is read as seconds, converted to ms, with a ``UserWarning`` saying so
(``tr_ms``). Where the TR is a TVB ``Bold`` monitor's period (``fit``, ``validate``), which TVB itself runs in
ms, a period below 20 ms is refused (``bold_period_ms``): changing it would make the twin differ from TVB.
"""
import math
import numbers
import os
import tempfile
import warnings
from typing import Optional, Sequence, Type, Union

import numpy as np
import torch

from .errors import ParameterError

TR_SECONDS_BELOW = 20.0          # a TR below this is not a TR in ms (fMRI TRs are 100 ms or more)
DTYPES = {"float64": torch.float64, "float32": torch.float32}
Error = Type[Exception]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def real(value, name: str, *, error: Error = ParameterError) -> float:
    """A real number (not a bool, not a string, not complex) as a float."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, torch.Tensor)):
        raise error(f"{name}={_show(value)}: expected a real number, got {type(value).__name__}.")
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if value.size != 1 if isinstance(value, np.ndarray) else value.numel() != 1:
            raise error(f"{name}={_show(value)}: expected one number, got an array of shape {tuple(value.shape)}.")
        if (np.iscomplexobj(value) if isinstance(value, np.ndarray) else value.is_complex()) or \
                (value.dtype == bool if isinstance(value, np.ndarray) else value.dtype == torch.bool):
            raise error(f"{name}={_show(value)}: expected a real number.")
        value = value.item()
    return float(value)


def finite(value, name: str, *, error: Error = ParameterError) -> float:
    """A finite real number."""
    v = real(value, name, error=error)
    if not math.isfinite(v):
        raise error(f"{name}={_show(value)}: expected a finite number.")
    return v


def positive(value, name: str, *, unit: str = "", error: Error = ParameterError) -> float:
    """A finite number > 0 (``unit`` is named in the message, e.g. "ms")."""
    v = finite(value, name, error=error)
    if not v > 0:
        raise error(f"{name}={_show(value)}: expected a positive number{' of ' + unit if unit else ''} (finite).")
    return v


def non_negative(value, name: str, *, unit: str = "", error: Error = ParameterError) -> float:
    """A finite number >= 0."""
    v = finite(value, name, error=error)
    if not v >= 0:
        raise error(f"{name}={_show(value)}: expected a finite number >= 0{' ' + unit if unit else ''}.")
    return v


def probability(value, name: str, *, open_low: bool = False, error: Error = ParameterError) -> float:
    """A fraction in [0, 1] (or (0, 1] with ``open_low``)."""
    v = finite(value, name, error=error)
    if not (0 < v <= 1 if open_low else 0 <= v <= 1):
        raise error(f"{name}={_show(value)}: expected a fraction in {'(0, 1]' if open_low else '[0, 1]'}.")
    return v


def integer(value, name: str, *, minimum: Optional[int] = None, error: Error = ParameterError) -> int:
    """An integer (a Python or numpy integer; not a bool, not 2.0 or 2.5, not "2"), >= ``minimum`` if given."""
    want = "a positive integer" if minimum == 1 else "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name}={_show(value)}: expected {want}, got {type(value).__name__}.")
    v = int(value)
    if minimum is not None and v < minimum:
        raise error(f"{name}={v}: expected {want}.")
    return v


def seed(value, name: str = "seed", *, error: Error = ParameterError) -> int:
    """A random seed: an integer in [0, 2**32) (what numpy's RandomState and torch.Generator both take)."""
    v = integer(value, name, minimum=0, error=error)
    if v >= 2 ** 32:
        raise error(f"{name}={v}: expected a seed in [0, 2**32).")
    return v


def device(value, name: str = "device", *, error: Error = ParameterError) -> torch.device:
    """A torch device string or ``torch.device`` that exists here ("cpu", "cuda", "cuda:0", ...)."""
    if not isinstance(value, (str, torch.device)):
        raise error(f"{name}={_show(value)}: expected a torch device such as 'cpu' or 'cuda', "
                    f"got {type(value).__name__}.")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError) as exc:
        raise error(f"{name}={_show(value)}: not a torch device ({exc}); expected e.g. 'cpu', 'cuda' or "
                    "'cuda:0'.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"{name}={_show(value)}: CUDA is not available on this machine; use device='cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise error(f"{name}={_show(value)}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise error(f"{name}={_show(value)}: device type {dev.type!r} is not supported; expected 'cpu' or 'cuda'.")
    return dev


def dtype(value, name: str = "dtype", *, error: Error = ParameterError) -> torch.dtype:
    """torch.float64 or torch.float32 (or their names "float64" / "float32")."""
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    if value in (torch.float64, torch.float32) if isinstance(value, torch.dtype) else False:
        return value
    raise error(f"{name}={_show(value)}: expected torch.float64 or torch.float32 (or 'float64' / 'float32').")


def boolean(value, name: str, *, error: Error = ParameterError) -> bool:
    """True or False (numpy bools too; not 0/1, not "yes")."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name}={_show(value)}: expected True or False, got {type(value).__name__}.")
    return bool(value)


def choice(value, name: str, options: Sequence, *, error: Error = ParameterError):
    """One of ``options``."""
    try:
        ok = value in options
    except TypeError:
        ok = False
    if not ok or isinstance(value, bool) and not any(isinstance(o, bool) for o in options):
        raise error(f"{name}={_show(value)}: expected one of {', '.join(repr(o) for o in options)}.")
    return value


def array(value, name: str, *, ndim: Optional[int] = None, shape: Optional[Sequence[Optional[int]]] = None,
          finite_values: bool = True, error: Error = ParameterError) -> np.ndarray:
    """A real float64 numpy array (a copy) of ``ndim`` dimensions / ``shape`` (None: any length), finite."""
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    try:
        arr = np.array(value)
    except Exception as exc:                    # ragged lists and odd objects
        raise error(f"{name}: cannot read it as an array of numbers ({exc}).") from None
    if arr.dtype.kind not in "biuf" or arr.dtype == bool:
        raise error(f"{name} must hold real numbers; got an array of dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise error(f"{name} must be {ndim}-D; got shape {arr.shape}.")
    if shape is not None and (arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape))):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise error(f"{name} has shape {arr.shape}; expected {want}.")
    if finite_values and not np.isfinite(arr).all():
        raise error(f"{name} must be finite; it has {int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} "
                    f"inf entries out of {arr.size}.")
    return arr


def tr_ms(value, name: str = "tr", *, error: Error = ParameterError, stacklevel: int = 3,
          fix: Optional[str] = None) -> float:
    """A repetition time in ms. Below ``TR_SECONDS_BELOW`` (20) it is read as seconds: converted to ms with a
    ``UserWarning``. Not positive and finite: ``error``."""
    v = positive(value, name, unit="ms", error=error)
    if v < TR_SECONDS_BELOW:
        fix = fix or f"pass {name}={v * 1000:g}"
        warnings.warn(f"{name}={v:g} is below {TR_SECONDS_BELOW:g}: read as seconds, i.e. {v * 1000:g} ms (TRs are "
                      f"in ms in tvb_torchfit; {fix} to silence this).", UserWarning, stacklevel=stacklevel)
        return v * 1000.0
    return v


def bold_period_ms(period, where: str, *, error: Error = ParameterError) -> float:
    """A TVB Bold monitor's period used as the TR: refused below 20 ms (TVB runs it in ms, so 0.72 would be a
    0.72 ms TR; give Bold(period=720.0))."""
    v = positive(period, f"{where} period", unit="ms", error=error)
    if v < TR_SECONDS_BELOW:
        raise error(f"{where} period={v:g} ms is below {TR_SECONDS_BELOW:g} ms: TVB's periods are in ms (a TR of "
                    f"{v:g} s is Bold(period={v * 1000:g})).")
    return v


def writable_folder(path, name: str, *, error: Error = ParameterError) -> str:
    """Create the folder ``path`` if needed and prove that a file can be written there (a temporary file is
    created and removed): refused up front, before the work whose results it will hold."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise error(f"{name}={_show(path)}: expected a folder path (str or os.PathLike).")
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tvb_torchfit_write_test"):
            pass
    except OSError as exc:
        raise error(f"{name}={path!r}: the folder cannot be written ({type(exc).__name__}: {exc.strerror or exc}); "
                    "choose a writable folder.") from None
    return path


def writable_file(path, name: str, *, error: Error = ParameterError) -> str:
    """A file path whose folder is writable (``writable_folder``) and which, if it exists, is a writable file."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise error(f"{name}={_show(path)}: expected a file path (str or os.PathLike).")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise error(f"{name}={path!r} is a folder; expected a file path.")
    writable_folder(os.path.dirname(os.path.abspath(path)), f"{name} (its folder)", error=error)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise error(f"{name}={path!r}: the file is read-only; make it writable or choose another path.")
    return path


ABSURD_SCALE = 1e100            # |BOLD| beyond this: squares overflow float64 (1e200 gives FC 0 in numpy)
CONSTANT_SD = 1e-6              # a region whose sd is below this fraction of the median sd is (near) constant


def signal(value, name: str, *, error: Error = ParameterError) -> np.ndarray:
    """A (time, regions) BOLD signal, checked for what makes its FC meaningless: non-finite values, an absurd
    scale (max |x| > 1e100 or below 1e-100: the squares over- or underflow), and constant or near-constant
    regions (sd below ``CONSTANT_SD`` of the median region's sd: their correlations are undefined or noise),
    each a clear ``error`` naming the regions."""
    arr = array(value, name, ndim=2, error=error)
    if arr.shape[0] < 2:
        raise error(f"{name} has {arr.shape[0]} time points; expected at least 2 (time, regions).")
    scale = float(np.abs(arr).max()) if arr.size else 0.0
    if scale > ABSURD_SCALE or 0 < scale < 1 / ABSURD_SCALE:
        raise error(f"{name} has an absurd scale (max |value| = {scale:.3g}): correlations of such numbers over- "
                    "or underflow; rescale it (e.g. divide by its standard deviation).")
    centred = arr - arr.mean(axis=0)
    sd = np.sqrt(np.mean(centred ** 2, axis=0))
    ref = float(np.median(sd))
    flat = np.flatnonzero(sd <= CONSTANT_SD * ref) if ref > 0 else np.arange(arr.shape[1])
    if flat.size:
        shown = flat[:10].tolist()
        raise error(f"{name}: region(s) {shown}{' ...' if flat.size > 10 else ''} ({flat.size} of {arr.shape[1]}) "
                    f"are constant or near-constant over time (sd {sd[flat[0]]:.3g} vs a median of {ref:.3g}): "
                    "their FC is undefined; drop them (preprocessing.drop_regions) or fix the data.")
    return arr


def informative_fc(fc: np.ndarray, name: str, *, error: Error = ParameterError) -> None:
    """Refuse an FC whose off-diagonal entries are all equal (a constant target: its correlation with any FC is
    undefined, a fit to it moves nothing and reports r = 0)."""
    fc = np.asarray(fc, dtype=np.float64)
    iu = np.triu_indices(fc.shape[0], 1)
    off = fc[iu]
    if off.size and float(off.max() - off.min()) <= 1e-12 * max(1.0, float(np.abs(off).max())):
        raise error(f"{name} is constant off the diagonal (every entry {off[0]:.6g}): it carries no FC pattern; "
                    "a correlation with it is undefined. Check how it was computed.")


def optional(check, value, *args, **kwargs):
    """``check(value, ...)`` unless ``value`` is None."""
    return None if value is None else check(value, *args, **kwargs)


Number = Union[int, float]
