"""The Wong-Wang input-output function, shared by both TVB Wong-Wang models.

    H(u) = u / (1 - exp(-d * u))

TVB evaluates exactly this expression (``tvb.simulator.models.wong_wang`` and
``wong_wang_exc_inh``, numba ``_numba_dfun``). It is 0/0 at u = 0 where its limit is 1/d.
TVB does not guard that point; a differentiable port must, for the value and the gradient.
Here, where |d*u| < ``SERIES_BAND`` the Taylor series 1/d + u/2 + d*u**2/12 (next term O(u**4))
is used, and everywhere else TVB's expression is evaluated operation for operation, so values
away from the band are bit-identical to TVB's formula. Inside the band TVB's own formula
loses about eps/|d*u| of relative precision (<= 1e-10); the series is accurate to ~1e-26.
"""
import torch

SERIES_BAND = 1e-6


def wong_wang_H(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """H(u) = u / (1 - exp(-d*u)), finite with a finite gradient at u = 0."""
    small = (d * u).abs() < SERIES_BAND
    u_safe = torch.where(small, torch.ones_like(u), u)
    exact = u_safe / (1 - torch.exp(-d * u_safe))
    series = 1.0 / d + u / 2 + d * u * u / 12
    return torch.where(small, series, exact)
