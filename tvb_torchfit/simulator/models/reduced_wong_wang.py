"""Port of ``tvb.simulator.models.wong_wang.ReducedWongWang`` (Deco et al. 2013).

One state variable S (NMDA gating, dimensionless, bounded to [0, 1]); time in ms.

    x  = w * J_N * S + I_o + J_N * c
    H  = (a*x - b) / (1 - exp(-d * (a*x - b)))
    dS/dt = -S / tau_s + (1 - S) * H * gamma

``c`` is the long-range coupling delivered by the TVB coupling function (its ``a`` is the global
coupling; this model has no G of its own). Operations follow TVB's numba ``_numba_dfun`` in order so
that float64 results agree with TVB to rounding. ``equations`` (plain arithmetic, used by ``dfun`` on tensors and
compiled by ``simulator.kernels`` on scalars) and ``equations_vjp`` (hand-written, pinned to autograd by
``tests/test_kernels.py``) as in ``reduced_wong_wang_exc_inh``.
"""
from typing import Dict

import torch
from tvb.simulator.models.wong_wang import ReducedWongWang as TVBReducedWongWang

from .transfer import wong_wang_H, wong_wang_H_partials


def equations(S, c, a, b, d, gamma, tau_s, w, J_N, I_o):
    """(dS/dt,) in 1/ms from the state, the coupling c and the parameters (``parameter_names`` order)."""
    x = w * J_N * S + I_o + J_N * c
    h = wong_wang_H(a * x - b, d)
    dS = -(S / tau_s) + (1.0 - S) * h * gamma
    return (dS,)


def equations_vjp(S, c, a, b, d, gamma, tau_s, w, J_N, I_o, g):
    """The gradients (S, c, then each parameter in ``parameter_names`` order) of g * dS/dt, in plain math."""
    x = w * J_N * S + I_o + J_N * c
    h, dh_du, dh_dd = wong_wang_H_partials(a * x - b, d)
    gh = g * (1.0 - S) * gamma
    gu = gh * dh_du
    gx = gu * a
    return (-g / tau_s - g * h * gamma + gx * w * J_N, gx * J_N,
            gu * x, -gu, gh * dh_dd, g * (1.0 - S) * h, g * S / (tau_s * tau_s),   # a, b, d, gamma, tau_s
            gx * J_N * S, gx * (w * S + c), gx)                                     # w, J_N, I_o


class ReducedWongWang:
    """Equations of TVB's ReducedWongWang, on tensors laid out (state variable, node, batch)."""

    tvb_class = TVBReducedWongWang
    state_variables = ("S",)
    parameter_names = ("a", "b", "d", "gamma", "tau_s", "w", "J_N", "I_o")
    #: parameters the equations divide by (H's d, the time constant): 0 or below makes TVB's run NaN / inf
    positive_parameters = ("d", "tau_s")
    #: the plain-math equations and their vector-Jacobian product (for ``simulator.kernels``)
    equations = staticmethod(equations)
    equations_vjp = staticmethod(equations_vjp)

    @staticmethod
    def dfun(state: torch.Tensor, c: torch.Tensor, p: Dict[str, torch.Tensor]) -> torch.Tensor:
        """dS/dt in 1/ms. ``state`` (1, N, B); ``c`` (N, B); parameters (N or 1, B or 1)."""
        names = ReducedWongWang.parameter_names
        return torch.stack(equations(state[0], c, *(p[n] for n in names)))
