"""The Wong-Wang input-output function, shared by both TVB Wong-Wang models.

    H(u) = u / (1 - exp(-d * u))

TVB evaluates exactly this expression (``tvb.simulator.models.wong_wang`` and
``wong_wang_exc_inh``, numba ``_numba_dfun``). It is 0/0 at u = 0 where its limit is 1/d.
TVB does not guard that point; a differentiable port must, for the value and the gradient.
Here, where |d*u| < ``SERIES_BAND`` the Taylor series 1/d + u/2 + d*u**2/12 (next term O(u**4))
is used, and where d*u < -``STABLE_BELOW`` (float32: 40, where exp(-d*u) > 2e17, whose square in the gradient
would overflow float32, and exp itself overflows float32 beyond 88; float64: ``STABLE_BELOW_F64`` = 300, below
which the square overflows float64) the same function in the form

    H(u) = u * exp(d*u) / expm1(d*u)            (numerator and denominator multiplied by exp(d*u))

which stays finite, value and gradient, for any d*u (H -> 0 there). Everywhere else TVB's expression is
evaluated operation for operation, so values there are bit-identical to TVB's formula (in float64, TVB's own
precision, for every d*u above -300: the exact mode's parity is untouched); in the stable band they agree with it
to rounding where TVB's is finite. Inside the series band TVB's own formula loses about
eps/|d*u| of relative precision (<= 1e-10); the series is accurate to ~1e-26.

``wong_wang_H_scalar`` and ``wong_wang_H_partials`` are the same function for one value in plain math (Python
floats, or numba: ``simulator.kernels`` compiles their source into its block kernel), the latter with its two
partial derivatives, the same three branches; ``tests/test_kernels.py`` pins them to ``wong_wang_H`` and its
autograd gradient.
"""
import math

import torch

SERIES_BAND = 1e-6
STABLE_BELOW = 40.0
STABLE_BELOW_F64 = 300.0


def wong_wang_H(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """H(u) = u / (1 - exp(-d*u)), finite with a finite gradient at u = 0 and for large negative d*u."""
    z = d * u
    small = z.abs() < SERIES_BAND
    below = STABLE_BELOW_F64 if z.dtype == torch.float64 else STABLE_BELOW
    stable = z < -below
    u_safe = torch.where(small | stable, torch.ones_like(u), u)
    exact = u_safe / (1 - torch.exp(-d * u_safe))
    z_low = torch.where(stable, z, torch.full_like(z, -below))
    low = u * torch.exp(z_low) / torch.expm1(z_low)
    series = 1.0 / d + u / 2 + d * u * u / 12
    return torch.where(small, series, torch.where(stable, low, exact))


def wong_wang_H_scalar(u, d):
    """``wong_wang_H`` for one value: the same bands, series and expressions, in plain math."""
    z = d * u
    if abs(z) < SERIES_BAND:
        return 1.0 / d + u / 2 + d * u * u / 12
    if z < -STABLE_BELOW:
        return u * math.exp(z) / math.expm1(z)
    return u / (1 - math.exp(-z))


def wong_wang_H_partials(u, d):
    """(H, dH/du, dH/dd) for one value: H = u / (1 - e), e = exp(-d u); dH/du = (1 - e - d u e) / (1 - e)**2,
    dH/dd = -u**2 e / (1 - e)**2; in the band, the series' derivatives 1/2 + d u / 6 and -1/d**2 + u**2 / 12;
    below -STABLE_BELOW the same with numerator and denominator times q**2, q = exp(d u) (finite in float32)."""
    z = d * u
    if abs(z) < SERIES_BAND:
        return 1.0 / d + u / 2 + d * u * u / 12, 0.5 + d * u / 6, -1.0 / (d * d) + u * u / 12
    if z < -STABLE_BELOW:
        q = math.exp(z)
        m = math.expm1(z)
        return u * q / m, q * (q - 1 - z) / (m * m), -u * u * q / (m * m)
    e = math.exp(-z)
    den = 1 - e
    return u / den, (den - z * e) / (den * den), -u * u * e / (den * den)
