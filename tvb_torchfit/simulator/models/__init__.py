"""Torch ports of TVB models: equations written once, parameters named as in TVB.

``MODELS`` maps each supported TVB model class to its port. Adding a model means adding its
file here and one line to ``MODELS``; the parity tests pick it up from this registry.
"""
from .reduced_wong_wang import ReducedWongWang
from .reduced_wong_wang_exc_inh import ReducedWongWangExcInh

MODELS = {port.tvb_class: port for port in (ReducedWongWang, ReducedWongWangExcInh)}

__all__ = ["MODELS", "ReducedWongWang", "ReducedWongWangExcInh"]
