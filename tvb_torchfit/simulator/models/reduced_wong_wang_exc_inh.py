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

The equations are written once, in ``equations``, in plain arithmetic on its arguments: the torch port's
``dfun`` calls it on tensors, and ``simulator.kernels`` compiles its source with numba on scalars (with
``wong_wang_H`` bound to ``transfer.wong_wang_H_scalar``). ``equations_vjp`` is its vector-Jacobian product,
written by hand for the kernel's adjoint; ``tests/test_kernels.py`` pins it to torch's autograd of ``dfun``.
"""
from typing import Dict

import torch
from tvb.simulator.models.wong_wang_exc_inh import ReducedWongWangExcInh as TVBReducedWongWangExcInh

from .transfer import wong_wang_H, wong_wang_H_partials


def equations(S_e, S_i, c, a_e, b_e, d_e, gamma_e, tau_e, w_p, J_N, W_e, a_i, b_i, d_i, gamma_i, tau_i, W_i, J_i,
              G, lamda, I_o, I_ext):
    """(dS_e/dt, dS_i/dt) in 1/ms from the state, the coupling c and the parameters (``parameter_names`` order)."""
    cc = G * J_N * c
    jn_se = J_N * S_e
    x = w_p * jn_se - J_i * S_i + W_e * I_o + cc + I_ext
    h = wong_wang_H(a_e * x - b_e, d_e)
    dS_e = -(S_e / tau_e) + (1.0 - S_e) * h * gamma_e
    x = jn_se - S_i + W_i * I_o + lamda * cc
    h = wong_wang_H(a_i * x - b_i, d_i)
    dS_i = -(S_i / tau_i) + h * gamma_i
    return dS_e, dS_i


def equations_vjp(S_e, S_i, c, a_e, b_e, d_e, gamma_e, tau_e, w_p, J_N, W_e, a_i, b_i, d_i, gamma_i, tau_i, W_i,
                  J_i, G, lamda, I_o, I_ext, g_e, g_i):
    """The gradients (S_e, S_i, c, then each parameter in ``parameter_names`` order) of
    g_e * dS_e/dt + g_i * dS_i/dt (``equations``), in plain math."""
    cc = G * J_N * c
    jn_se = J_N * S_e
    x_e = w_p * jn_se - J_i * S_i + W_e * I_o + cc + I_ext
    h_e, dh_e_du, dh_e_dd = wong_wang_H_partials(a_e * x_e - b_e, d_e)
    x_i = jn_se - S_i + W_i * I_o + lamda * cc
    h_i, dh_i_du, dh_i_dd = wong_wang_H_partials(a_i * x_i - b_i, d_i)
    gh_e = g_e * (1.0 - S_e) * gamma_e
    gu_e = gh_e * dh_e_du
    gx_e = gu_e * a_e
    gh_i = g_i * gamma_i
    gu_i = gh_i * dh_i_du
    gx_i = gu_i * a_i
    g_cc = gx_e + lamda * gx_i
    g_jn_se = w_p * gx_e + gx_i
    g_S_e = -g_e / tau_e - g_e * h_e * gamma_e + J_N * g_jn_se
    g_S_i = -J_i * gx_e - gx_i - g_i / tau_i
    return (g_S_e, g_S_i, G * J_N * g_cc,
            gu_e * x_e, -gu_e, gh_e * dh_e_dd, g_e * (1.0 - S_e) * h_e, g_e * S_e / (tau_e * tau_e),  # a_e..tau_e
            gx_e * jn_se, g_jn_se * S_e + g_cc * G * c, gx_e * I_o,                                  # w_p, J_N, W_e
            gu_i * x_i, -gu_i, gh_i * dh_i_dd, g_i * h_i, g_i * S_i / (tau_i * tau_i),               # a_i..tau_i
            gx_i * I_o, -gx_e * S_i, g_cc * J_N * c, gx_i * cc,                                     # W_i, J_i, G, lamda
            gx_e * W_e + gx_i * W_i, gx_e)                                                          # I_o, I_ext


class ReducedWongWangExcInh:
    """Equations of TVB's ReducedWongWangExcInh, on tensors laid out (state variable, node, batch)."""

    tvb_class = TVBReducedWongWangExcInh
    state_variables = ("S_e", "S_i")
    parameter_names = ("a_e", "b_e", "d_e", "gamma_e", "tau_e", "w_p", "J_N", "W_e",
                       "a_i", "b_i", "d_i", "gamma_i", "tau_i", "W_i", "J_i",
                       "G", "lamda", "I_o", "I_ext")
    #: parameters the equations divide by (H's d_e, d_i, the time constants): 0 or below makes TVB's run NaN / inf
    positive_parameters = ("d_e", "d_i", "tau_e", "tau_i")
    #: the plain-math equations and their vector-Jacobian product (for ``simulator.kernels``)
    equations = staticmethod(equations)
    equations_vjp = staticmethod(equations_vjp)

    @staticmethod
    def dfun(state: torch.Tensor, c: torch.Tensor, p: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(dS_e/dt, dS_i/dt) in 1/ms. ``state`` (2, N, B); ``c`` (N, B); parameters (N or 1, B or 1)."""
        names = ReducedWongWangExcInh.parameter_names
        return torch.stack(equations(state[0], state[1], c, *(p[n] for n in names)))
