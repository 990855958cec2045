"""Region maps for parametric heterogeneity (``Param(maps=...)``): one value per region, from the user's files or
computed from an FC matrix.

* ``load_map(source, n_regions)``: a map from a ``.npy``, ``.npz`` (one array), ``.csv``, ``.tsv`` or ``.txt`` file
  (one number per region, in the connectivity's region order, one per line or in one row) or an array; checked for
  length, NaN/inf and constancy (``DataError`` naming the file).
* ``fc_gradient(fc, k=1)``: the principal gradient(s) of functional connectivity (Margulies et al. 2016), as
  BrainSpace computes it by default: each row of the FC (diagonal removed) is thresholded to its top 10 %
  (others set to 0), the affinity between regions is the cosine similarity of those rows (negative values set to
  0), and the gradients are the leading non-trivial eigenvectors of the diffusion map of that affinity
  (anisotropic diffusion, alpha = 0.5, diffusion time 0: each eigenvector scaled by lambda / (1 - lambda)).
  The sign of each gradient is fixed so that its entry of largest magnitude is positive.
"""
import os
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import DataError

__all__ = ["load_map", "fc_gradient"]

MAP_EXTENSIONS = (".npy", ".npz", ".csv", ".tsv", ".txt")


def _read(path: Path) -> np.ndarray:
    ext = path.suffix.lower()
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if len(z.files) != 1:
                raise DataError(f"map file {str(path)!r} holds {len(z.files)} arrays ({z.files}); expected one.")
            return z[z.files[0]]
    delimiter = "," if ext == ".csv" else None
    with open(path) as f:
        text = f.read()
    rows = [line for line in text.replace("\t", " ").splitlines() if line.strip()]
    try:
        return np.array([float(v) for line in rows for v in (line.split(delimiter) if delimiter else line.split())
                         if v.strip()], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"map file {str(path)!r}: not numbers only ({err}); expected one number per region, no "
                        "header.") from None


def load_map(source: Union[str, os.PathLike, np.ndarray, list], n_regions: int, name: str = "map") -> np.ndarray:
    """A region map (n_regions,) float64 from a file (``MAP_EXTENSIONS``) or an array, checked."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"{name} file {str(path)!r}"
        if not path.is_file():
            raise DataError(f"{where} does not exist.")
        if path.suffix.lower() not in MAP_EXTENSIONS:
            raise DataError(f"{where}: unknown extension {path.suffix!r}; expected one of {', '.join(MAP_EXTENSIONS)}.")
        try:
            arr = _read(path)
        except (OSError, ValueError) as err:
            raise DataError(f"{where}: unreadable ({err}).") from None
    else:
        where = name
        try:
            arr = np.array(source, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: expected numbers, one per region; got {type(source).__name__}.") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.shape[0] != n_regions:
        raise DataError(f"{where} has shape {arr.shape}; expected one value per region ({n_regions},).")
    if not np.isfinite(arr).all():
        raise DataError(f"{where} has {int((~np.isfinite(arr)).sum())} NaN/inf value(s); expected finite values.")
    if arr.std() == 0:
        raise DataError(f"{where} is constant over regions; a map must vary.")
    return arr


def _affinity(fc: np.ndarray, sparsity: float) -> np.ndarray:
    """Cosine similarity of the rows of ``fc`` kept at their top (1 - sparsity) fraction, negatives set to 0."""
    x = fc.copy()
    np.fill_diagonal(x, 0.0)
    thresholds = np.percentile(x, 100 * sparsity, axis=1, keepdims=True)
    x[x < thresholds] = 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError("fc_gradient: a region has no positive connection above its row threshold.")
    x = x / norms
    a = x @ x.T
    return np.clip(a, 0.0, None)


def fc_gradient(fc, k: int = 1, sparsity: float = 0.9, alpha: float = 0.5) -> np.ndarray:
    """The ``k`` leading gradients of an FC matrix (N, N): shape (N,) for k = 1, else (k, N) (module docstring).

    Each gradient_j(i) = lambda_j / (1 - lambda_j) * psi_j(i), psi_j the j-th non-trivial right eigenvector of the
    diffusion operator of the thresholded cosine affinity, sign fixed (largest |entry| positive)."""
    fc = np.asarray(fc, dtype=np.float64)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
        raise DataError(f"fc_gradient: fc has shape {fc.shape}; expected a square (N, N) FC matrix.")
    if not np.isfinite(fc).all():
        raise DataError("fc_gradient: fc has NaN/inf values.")
    n = fc.shape[0]
    if not (isinstance(k, int) and 1 <= k < n - 1):
        raise DataError(f"fc_gradient: k={k!r}; expected an integer between 1 and {n - 2}.")
    if not 0 <= sparsity < 1:
        raise DataError(f"fc_gradient: sparsity={sparsity!r}; expected a fraction in [0, 1).")
    a = _affinity(fc, sparsity)
    d = a.sum(axis=1)
    l_alpha = a / np.outer(d ** alpha, d ** alpha)            # anisotropic normalisation
    d_alpha = l_alpha.sum(axis=1)
    s = l_alpha / np.sqrt(np.outer(d_alpha, d_alpha))        # symmetric form of the Markov operator
    lam, v = np.linalg.eigh(s)
    order = np.argsort(lam)[::-1]
    lam, v = lam[order], v[:, order]
    if lam[1] > 1 - 1e-9:
        raise DataError(f"fc_gradient: the thresholded affinity graph (top {100 * (1 - sparsity):g} % of each row) "
                        "falls apart into several components, so the gradient is not defined; lower sparsity (keep "
                        "more connections per region), e.g. for small networks.")
    psi = v / v[:, [0]]                                      # right eigenvectors of the Markov operator
    grads = (psi[:, 1:k + 1] * (lam[1:k + 1] / (1 - lam[1:k + 1]))).T
    for g in grads:
        if g[np.argmax(np.abs(g))] < 0:
            g *= -1
    return grads[0] if k == 1 else grads
