"""The Wong-Wang input-output function, shared by both TVB Wong-Wang models.

    H(u) = u / (1 - exp(-d * u))

TVB evaluates exactly this expression (``tvb.simulator.models.wong_wang`` and
``wong_wang_exc_inh``, numba ``_numba_dfun``). It is 0/0 at u = 0 where its limit is 1/d.
TVB does not guard that point; a differentiable port must, for the value and the gradient.
Here, where |d*u| < ``SERIES_BAND`` the Taylor series 1/d + u/2 + d*u**2/12 (next term O(u**4))
is used, and where d*u < -``STABLE_BELOW`` (exp(-d*u) > 2e17: its square, in the gradient, would overflow
float32, and exp itself overflows float32 beyond 88) the same function in the form

    H(u) = u * exp(d*u) / expm1(d*u)            (numerator and denominator multiplied by exp(d*u))

which stays finite, value and gradient, for any d*u (H -> 0 there). Everywhere else TVB's expression is
evaluated operation for operation, so values there are bit-identical to TVB's formula; in the stable band
they agree with it to rounding where TVB's is finite. Inside the series band TVB's own formula loses about
eps/|d*u| of relative precision (<= 1e-10); the series is accurate to ~1e-26.
"""
import torch

SERIES_BAND = 1e-6
STABLE_BELOW = 40.0


def wong_wang_H(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """H(u) = u / (1 - exp(-d*u)), finite with a finite gradient at u = 0 and for large negative d*u."""
    z = d * u
    small = z.abs() < SERIES_BAND
    stable = z < -STABLE_BELOW
    u_safe = torch.where(small | stable, torch.ones_like(u), u)
    exact = u_safe / (1 - torch.exp(-d * u_safe))
    z_low = torch.where(stable, z, torch.full_like(z, -STABLE_BELOW))
    low = u * torch.exp(z_low) / torch.expm1(z_low)
    series = 1.0 / d + u / 2 + d * u * u / 12
    return torch.where(small, series, torch.where(stable, low, exact))
