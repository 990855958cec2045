"""tvb_torchfit: a configured TVB Simulator as a differentiable PyTorch simulation.

Public API:

* ``from_tvb(sim, ...)`` -> ``TorchSimulator``, the torch twin of a configured TVB ``Simulator``.
* ``compare(sim, simulation_length)`` -> ``Comparison``: run TVB and its twin from the same start and
  report, per monitor, the largest differences and the wall time of each.
* ``fit(sim, target_fc, params={...})`` -> ``FitResult`` (``.params``, ``.apply(sim)``, ``.save``, ``.load``).
* ``fit_corrected(sim, target_fc, params={...}, target_bold=...)`` -> ``FitResult``: linear fits whose bias against
  the stochastic twin is measured and removed round by round (``tvb_torchfit.inference.corrected``).
* ``validate(sim, target_fc, simulation_length=...)`` -> ``ValidationReport``: TVB's own integrator and
  Bold monitor, fresh noise seeds, FC agreement with the target (``.fc_corr``) and a figure.
* ``load_hcp_subject(subject_id, **steps)`` / ``load_subject(weights, bold, ...)`` -> ``Subject``
  (``.connectivity``, ``.bold``, ``.tr`` in ms, ``.fc``, ``.preprocessing``): empirical data
  (``tvb_torchfit.data.datasets``), preprocessed by ``preprocess`` (``tvb_torchfit.data.preprocessing``).
* ``load_fitted_simulator(RUN_DIR)``: the configured TVB ``Simulator`` at the fitted values of a config-file run
  (``tvb-torchfit fit run.toml``; ``tvb_torchfit.runs``).
"""
from .analyzers.balloon import BalloonWindkessel
from .data import datasets, preprocessing
from .data.datasets import Subject, hcp_subjects, load_bold, load_connectivity, load_fc, load_hcp_subject, load_subject
from .data.preprocessing import preprocess
from .errors import (ConfigError, DataError, MissingExtraError, NotConfiguredError, ParameterError, TVBTorchFitError,
                     UnsupportedTVBObject)
from .inference.corrected import fit_corrected
from .inference.fitting import FitResult, fit
from .inference.parameters import Param
from .roundtrip.compare import Comparison, compare
from .roundtrip.validation import ValidationReport, validate
from .roundtrip.writeback import apply_params, clone_simulator
from .runs.folder import load_fitted_simulator
from .simulator import TorchSimulator, from_tvb, read_simulator
from .version import __version__

__all__ = ["from_tvb", "compare", "Comparison", "TorchSimulator", "fit", "fit_corrected", "FitResult", "Param", "validate",
           "ValidationReport", "apply_params", "clone_simulator", "TVBTorchFitError", "UnsupportedTVBObject",
           "NotConfiguredError", "ParameterError", "Subject", "hcp_subjects", "load_hcp_subject", "load_subject",
           "load_connectivity", "load_bold", "load_fc", "preprocess", "DataError", "MissingExtraError",
           "BalloonWindkessel", "load_fitted_simulator", "ConfigError"]
