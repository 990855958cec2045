"""Port of ``tvb.simulator.models.wong_wang_exc_inh.ReducedWongWangExcInh`` (Deco et al. 2014).

Two state variables S_e, S_i (excitatory / inhibitory NMDA/GABA gating, bounded to [0, 1]);
time in ms. Only S_e is coupled between regions.

    coupling = G * J_N * c
    x_e = a_e * (w_p * J_N * S_e - J_i * S_i + W_e * I_o + coupling + I_ext) - b_e
    H_e = x_e / (1 - exp(-d_e * x_e))
    dS_e/dt = -S_e / tau_e + (1 - S_e) * H_e * gamma_e
    x_i = a_i * (J_N * S_e - S_i + W_i * I_o + lamda * coupling) - b_i
    H_i = x_i / (1 - exp(-d_i * x_i))
    dS_i/dt = -S_i / tau_i + H_i * gamma_i

``c`` is TVB's coupling function output; G and the coupling's ``a`` act only as a product.
Operations follow TVB's numba ``_numba_dfun`` in order, so float64 values agree to rounding.
"""
from typing import Dict

import torch
from tvb.simulator.models.wong_wang_exc_inh import ReducedWongWangExcInh as TVBReducedWongWangExcInh

from .transfer import wong_wang_H


class ReducedWongWangExcInh:
    """Equations of TVB's ReducedWongWangExcInh, on tensors laid out (state variable, node, batch)."""

    tvb_class = TVBReducedWongWangExcInh
    state_variables = ("S_e", "S_i")
    parameter_names = ("a_e", "b_e", "d_e", "gamma_e", "tau_e", "w_p", "J_N", "W_e",
                       "a_i", "b_i", "d_i", "gamma_i", "tau_i", "W_i", "J_i",
                       "G", "lamda", "I_o", "I_ext")
    #: parameters the equations divide by (H's d_e, d_i, the time constants): 0 or below makes TVB's run NaN / inf
    positive_parameters = ("d_e", "d_i", "tau_e", "tau_i")

    @staticmethod
    def dfun(state: torch.Tensor, c: torch.Tensor, p: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(dS_e/dt, dS_i/dt) in 1/ms. ``state`` (2, N, B); ``c`` (N, B); parameters (N or 1, B or 1)."""
        S_e, S_i = state[0], state[1]
        cc = p["G"] * p["J_N"] * c
        jn_se = p["J_N"] * S_e
        x = p["w_p"] * jn_se - p["J_i"] * S_i + p["W_e"] * p["I_o"] + cc + p["I_ext"]
        h = wong_wang_H(p["a_e"] * x - p["b_e"], p["d_e"])
        dS_e = -(S_e / p["tau_e"]) + (1.0 - S_e) * h * p["gamma_e"]
        x = jn_se - S_i + p["W_i"] * p["I_o"] + p["lamda"] * cc
        h = wong_wang_H(p["a_i"] * x - p["b_i"], p["d_i"])
        dS_i = -(S_i / p["tau_i"]) + h * p["gamma_i"]
        return torch.stack((dS_e, dS_i))
