"""A subject's data as ``fit`` takes it: :class:`Subject` (a TVB ``Connectivity``, BOLD, TR, FC and the record
of how they were made), and ``make_connectivity`` (a TVB ``Connectivity`` from arrays).

The loaders (``datasets``) make Subjects, the steps of ``preprocessing`` transform them; both import this
module, which imports neither.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from .. import checks, stats
from ..errors import DataError, ParameterError

__all__ = ["Subject", "make_connectivity"]


# ----------------------------------------------------------------------------------------------------
# Subject
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Subject:
    """One subject's structural and functional data, ready for a TVB ``Simulator`` and ``fit``.

    connectivity:  ``tvb.datatypes.connectivity.Connectivity`` (not yet configured; ``Simulator.configure``
                   does it), weights with rows as targets, tract lengths in mm.
    bold:          (time, regions) float64 array, or None when only an FC was given.
    tr:            repetition time in ms (None if unknown).
    subject_id:    a name.
    preprocessing: list of dicts, one per step applied, in order: ``{"step": name, **arguments}``;
                   the first ones record where the data came from (files, keys, assumed orientation).
    fc_given:      a precomputed FC (regions, regions), used only when there is no BOLD.

    ``fc`` is the Pearson FC of ``bold`` (``tvb_torchfit.stats.fc``) or ``fc_given``.
    """

    connectivity: Any
    bold: Optional[np.ndarray] = None
    tr: Optional[float] = None
    subject_id: str = ""
    preprocessing: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    fc_given: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if self.tr is not None:                         # the TR rule: below 20 read as seconds, with a warning
            self.tr = checks.tr_ms(self.tr, f"subject {self.subject_id!r}: tr", error=DataError, stacklevel=4)
        n = self.n_regions
        if self.bold is not None and (self.bold.ndim != 2 or self.bold.shape[1] != n):
            raise DataError(f"subject {self.subject_id!r}: bold must be shaped (time, {n} regions) like the "
                            f"connectivity; got {self.bold.shape}")
        if self.fc_given is not None and self.fc_given.shape != (n, n):
            raise DataError(f"subject {self.subject_id!r}: the FC must be shaped ({n}, {n}) like the "
                            f"connectivity; got {self.fc_given.shape}")
        if self.bold is None and self.fc_given is None:
            raise DataError(f"subject {self.subject_id!r} has neither BOLD nor FC; give one of them")

    @property
    def n_regions(self) -> int:
        return int(self.connectivity.weights.shape[0])

    @property
    def region_labels(self) -> np.ndarray:
        return self.connectivity.region_labels

    @property
    def n_volumes(self) -> Optional[int]:
        """Number of BOLD volumes (TRs), None without BOLD."""
        return None if self.bold is None else int(self.bold.shape[0])

    @property
    def duration(self) -> Optional[float]:
        """Length of the BOLD recording in ms (n_volumes * tr), None if unknown."""
        return None if self.bold is None or self.tr is None else self.n_volumes * self.tr

    @property
    def fc(self) -> np.ndarray:
        """(regions, regions) Pearson FC of ``bold`` (or the precomputed FC when there is no BOLD)."""
        if self.bold is None:
            return self.fc_given.copy()
        return stats.fc(self.bold).numpy()

    def sc_fc_corr(self, transform: str = "log1p") -> float:
        """Pearson r between structure and function over the region pairs i < j.

            r = corr(f(W_sym)_ij, FC_ij),  W_sym = (W + W.T) / 2,  f = log1p (default) or identity ("none")
        """
        if transform not in ("log1p", "none"):
            raise ParameterError(f"transform must be 'log1p' or 'none'; got {transform!r}")
        w = np.asarray(self.connectivity.weights, dtype=np.float64)
        w = (w + w.T) / 2
        if transform == "log1p":
            w = np.log1p(w)
        i, j = np.triu_indices(self.n_regions, k=1)
        return float(np.corrcoef(w[i, j], self.fc[i, j])[0, 1])

    def replace(self, **changes) -> "Subject":
        """A copy with some fields replaced (the record list is copied, never shared)."""
        changes.setdefault("preprocessing", list(self.preprocessing))
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        bold = "none" if self.bold is None else f"{self.bold.shape[0]} volumes"
        tr = "unknown" if self.tr is None else f"{self.tr:g} ms"
        steps = [r["step"] for r in self.preprocessing]
        return (f"Subject({self.subject_id!r}, {self.n_regions} regions, bold {bold}, TR {tr}, "
                f"steps {steps})")


def make_connectivity(weights: np.ndarray, tract_lengths: np.ndarray, region_labels: np.ndarray,
                      centres: np.ndarray, speed: Optional[float] = None, template: Any = None,
                      keep: Optional[np.ndarray] = None):
    """A TVB ``Connectivity`` from arrays (copied). ``template``'s speed and its optional region-wise
    attributes (cortical, hemispheres, areas, orientations) are carried over, restricted to the region
    indices ``keep`` when given."""
    from tvb.datatypes.connectivity import Connectivity
    kwargs = dict(weights=np.array(weights, dtype=np.float64), tract_lengths=np.array(tract_lengths, dtype=np.float64),
                  region_labels=np.array(region_labels), centres=np.array(centres, dtype=np.float64))
    if speed is not None:
        kwargs["speed"] = np.array([float(speed)])
    elif template is not None and getattr(template, "speed", None) is not None:
        kwargs["speed"] = np.array(template.speed, dtype=np.float64)
    n = kwargs["weights"].shape[0]
    if template is not None:
        n_template = np.shape(template.weights)[0]
        for name in ("cortical", "hemispheres", "areas", "orientations"):
            value = getattr(template, name, None)
            if value is not None and np.ndim(value) > 0 and len(value) == n_template:
                value = np.array(value) if keep is None else np.array(value)[keep]
                if len(value) == n:
                    kwargs[name] = value
    return Connectivity(**kwargs)
