"""Exceptions raised by tvb_torchfit.

Every error names the offending TVB object (or argument) and says what is supported or expected,
so that a TVB user never has to read a stack trace from deep inside torch.
"""


class TVBTorchFitError(Exception):
    """Base class of every error tvb_torchfit raises on purpose."""


class UnsupportedTVBObject(TVBTorchFitError, TypeError):
    """A TVB component (model, coupling, integrator, noise, monitor, ...) has no torch port."""


class NotConfiguredError(TVBTorchFitError, RuntimeError):
    """The TVB Simulator was handed over before ``Simulator.configure()`` was called."""


class ParameterError(TVBTorchFitError, ValueError):
    """A parameter name or value does not fit the simulator it is meant for."""


class DataError(TVBTorchFitError, ValueError):
    """An empirical data file or array (connectivity, tract lengths, BOLD, FC) is missing, unreadable or
    malformed; the message names the file (or argument) and what was expected."""


class MissingExtraError(TVBTorchFitError, ImportError):
    """An optional extra of tvb_torchfit is not installed; the message gives the pip command."""


class ConfigError(TVBTorchFitError, ValueError):
    """A run configuration (``tvb-torchfit fit run.toml``) is malformed; the message names the config file, the
    key and what was expected."""


class CheckpointError(ParameterError):
    """A fit checkpoint cannot be used: unreadable, truncated, of another format, not a tvb_torchfit checkpoint,
    or written for another problem (network, delays, target, parameters, settings); the message says which."""
