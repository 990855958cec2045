"""The Wong-Wang input-output function, shared by both TVB Wong-Wang models.

    H(u) = u / (1 - exp(-d * u))

TVB evaluates exactly this expression (``tvb.simulator.models.wong_wang`` and
``wong_wang_exc_inh``, numba ``_numba_dfun``). It is 0/0 at u = 0 where its limit is 1/d.
TVB does not guard that point; a differentiable port must, for the value and the gradient.
Here, where |d*u| < ``SERIES_BAND`` the Taylor series 1/d + u/2 + d*u**2/12 (next term O(u**4))
is used, and everywhere else TVB's expression is evaluated operation for operation, so values
away from the band are bit-identical to TVB's formula. Inside the band TVB's own formula
loses about eps/|d*u| of relative precision (<= 1e-10); the series is accurate to ~1e-26.

``wong_wang_H_scalar`` and ``wong_wang_H_partials`` are the same function for one value in plain math (Python
floats, or numba: ``simulator.kernels`` compiles their source into its block kernel), the latter with its two
partial derivatives; ``tests/test_kernels.py`` pins them to ``wong_wang_H`` and its autograd gradient.
"""
import math

import torch

SERIES_BAND = 1e-6


def wong_wang_H(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """H(u) = u / (1 - exp(-d*u)), finite with a finite gradient at u = 0."""
    small = (d * u).abs() < SERIES_BAND
    u_safe = torch.where(small, torch.ones_like(u), u)
    exact = u_safe / (1 - torch.exp(-d * u_safe))
    series = 1.0 / d + u / 2 + d * u * u / 12
    return torch.where(small, series, exact)


def wong_wang_H_scalar(u, d):
    """``wong_wang_H`` for one value: the same band, series and expression, in plain math."""
    if abs(d * u) < SERIES_BAND:
        return 1.0 / d + u / 2 + d * u * u / 12
    return u / (1 - math.exp(-d * u))


def wong_wang_H_partials(u, d):
    """(H, dH/du, dH/dd) for one value: H = u / (1 - e), e = exp(-d u); dH/du = (1 - e - d u e) / (1 - e)**2,
    dH/dd = -u**2 e / (1 - e)**2; in the band, the series' derivatives 1/2 + d u / 6 and -1/d**2 + u**2 / 12."""
    if abs(d * u) < SERIES_BAND:
        return 1.0 / d + u / 2 + d * u * u / 12, 0.5 + d * u / 6, -1.0 / (d * d) + u * u / 12
    e = math.exp(-d * u)
    den = 1 - e
    return u / den, (den - d * u * e) / (den * den), -u * u * e / (den * den)
