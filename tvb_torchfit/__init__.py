"""tvb_torchfit: a configured TVB Simulator as a differentiable PyTorch simulation.

Public API:

* ``from_tvb(sim, ...)`` -> ``TorchSimulator``, the torch twin of a configured TVB ``Simulator``.
* ``compare(sim, simulation_length)`` -> ``Comparison``: run TVB and its twin from the same start and
  report, per monitor, the largest differences and the wall time of each.
* ``fit(sim, target_fc, params={...})`` -> ``FitResult`` (``.params``, ``.apply(sim)``, ``.save``, ``.load``).
* ``validate(sim, target_fc, simulation_length=...)`` -> ``ValidationReport``: TVB's own integrator and
  Bold monitor, fresh noise seeds, FC agreement with the target (``.fc_corr``) and a figure.
* ``load_hcp_subject(subject_id, **steps)`` / ``load_subject(weights, bold, ...)`` -> ``Subject``
  (``.connectivity``, ``.bold``, ``.tr`` in ms, ``.fc``, ``.preprocessing``): empirical data
  (``tvb_torchfit.datasets``), preprocessed by ``preprocess`` (``tvb_torchfit.preprocessing``).
"""
from typing import Union

import torch

from .adapter import read_simulator
from .balloon import BalloonWindkessel
from .compare import Comparison, compare
from .datasets import Subject, hcp_subjects, load_bold, load_connectivity, load_fc, load_hcp_subject, load_subject
from .errors import (DataError, MissingExtraError, NotConfiguredError, ParameterError, TVBTorchFitError,
                     UnsupportedTVBObject)
from .fitting import FitResult, fit
from .parameters import Param
from .preprocessing import preprocess
from .simulator import TorchSimulator
from .validation import ValidationReport, validate
from .writeback import apply_params, clone_simulator

__version__ = "0.1.0"


def from_tvb(sim, *, noise: str = "torch", exact: bool = False, batch: int = 1,
             dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = "cpu",
             block: Union[int, None] = None, seed: Union[int, None] = None,
             compile: bool = False) -> TorchSimulator:
    """The differentiable torch twin of a *configured* TVB ``Simulator``.

    Everything is read from the TVB objects (connectivity, model parameters, coupling, integrator,
    noise, monitors, current state and history); the TVB simulator is left untouched.

    noise:  ``"torch"`` (default) draws from seeded ``torch.Generator``s, one per batch member
            (seed: ``seed`` or the TVB noise's ``noise_seed``); ``"tvb"`` draws from a copy of the TVB
            noise object's ``random_stream`` in TVB's order, so a stochastic run reproduces TVB's.
    exact:  emulate TVB's float32 history buffer and float32 coupling sum (parity to the last digits);
            the default float64 mode is for fitting.
    batch:  number of independent simulations run in one pass (own noise streams; parameters may
            differ per member: give them a leading batch axis, e.g. shape (batch, 1)).
    block:  most steps whose delayed coupling is gathered at once (capped by the shortest delay).
    compile: fuse each block of steps with ``torch.compile`` (needs a C++ compiler; the first run of a
            given batch/dtype pays a one-off compilation of tens of seconds, then steps run ~20x faster).
    """
    return TorchSimulator(read_simulator(sim), noise=noise, exact=exact, batch=batch, dtype=dtype,
                          device=device, block=block, seed=seed, compile=compile)


__all__ = ["from_tvb", "compare", "Comparison", "TorchSimulator", "fit", "FitResult", "Param", "validate",
           "ValidationReport", "apply_params", "clone_simulator", "TVBTorchFitError", "UnsupportedTVBObject",
           "NotConfiguredError", "ParameterError", "Subject", "hcp_subjects", "load_hcp_subject", "load_subject",
           "load_connectivity", "load_bold", "load_fc", "preprocess", "DataError", "MissingExtraError",
           "BalloonWindkessel"]
