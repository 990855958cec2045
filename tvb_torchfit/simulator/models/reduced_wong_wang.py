"""Port of ``tvb.simulator.models.wong_wang.ReducedWongWang`` (Deco et al. 2013).

One state variable S (NMDA gating, dimensionless, bounded to [0, 1]); time in ms.

    x  = w * J_N * S + I_o + J_N * c
    H  = (a*x - b) / (1 - exp(-d * (a*x - b)))
    dS/dt = -S / tau_s + (1 - S) * H * gamma

``c`` is the long-range coupling delivered by the TVB coupling function (its ``a`` is the global
coupling; this model has no G of its own). Operations follow TVB's numba ``_numba_dfun`` in order so
that float64 results agree with TVB to rounding.
"""
from typing import Dict

import torch
from tvb.simulator.models.wong_wang import ReducedWongWang as TVBReducedWongWang

from .transfer import wong_wang_H


class ReducedWongWang:
    """Equations of TVB's ReducedWongWang, on tensors laid out (state variable, node, batch)."""

    tvb_class = TVBReducedWongWang
    state_variables = ("S",)
    parameter_names = ("a", "b", "d", "gamma", "tau_s", "w", "J_N", "I_o")
    #: parameters the equations divide by (H's d, the time constant): 0 or below makes TVB's run NaN / inf
    positive_parameters = ("d", "tau_s")

    @staticmethod
    def dfun(state: torch.Tensor, c: torch.Tensor, p: Dict[str, torch.Tensor]) -> torch.Tensor:
        """dS/dt in 1/ms. ``state`` (1, N, B); ``c`` (N, B); parameters (N or 1, B or 1)."""
        S = state[0]
        x = p["w"] * p["J_N"] * S + p["I_o"] + p["J_N"] * c
        h = wong_wang_H(p["a"] * x - p["b"], p["d"])
        dS = -(S / p["tau_s"]) + (1.0 - S) * h * p["gamma"]
        return dS.unsqueeze(0)
