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
partial derivatives. They are written for the kernel's vectorised loop: no call (``exp_nonpositive``, a
polynomial ``exp`` within an ulp of libm's) and no branch but selects — outside the series band, with
w = exp(-|d*u|) <= 1, H = u / (1 - w) where d*u >= 0 and -u w / (1 - w) below (TVB's expression with numerator
and denominator multiplied by w: finite for any d*u, no separate stable band). ``tests/test_kernels.py`` pins them
to ``wong_wang_H`` and its autograd gradient in every band.
"""
import math

import numpy as np
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


# exp(x) for x <= 0 in plain arithmetic, so that a compiled loop over nodes and batch can be vectorised (a call of
# libm's exp cannot: numba's LLVM has no vector maths library). Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2
# (ln2 split in a high part with trailing zero bits and a low part), the Taylor polynomial of exp(r) to degree 13
# (truncation below 1e-17 relative), times 2**k; 0 below EXP_UNDERFLOW (where exp(x) is subnormal).
LOG2_E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
EXP_UNDERFLOW = -708.0
# the same for float32 (the kernel's float32 stage): ln2's high part with 16 significant bits, exp(-87) > 2**-126
LN2_HI_F32 = 45426.0 / 65536.0
LN2_LO_F32 = math.log(2.0) - LN2_HI_F32
EXP_UNDERFLOW_F32 = -87.0
EXP_C = tuple(1.0 / math.factorial(i) for i in range(14))     # Taylor coefficients 1 / i!


def pow2(k):
    """2**k for an integral float k in [-1022, 0] (the kernel compiles a bit-level version, ``kernels``)."""
    return math.ldexp(1.0, int(k))


def exp_nonpositive(x):
    """exp(x) for x <= 0, float64, within about one unit in the last place of libm's (``tests/test_kernels.py``)."""
    y = x if x > EXP_UNDERFLOW else EXP_UNDERFLOW
    k = np.floor(y * LOG2_E + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    r2 = r * r                               # 1 + r + r**2 (1/2! + r/3! + ...), the bracket by Estrin's scheme
    r4 = r2 * r2
    q = ((EXP_C[2] + r * EXP_C[3]) + r2 * (EXP_C[4] + r * EXP_C[5])) + r4 * (
        ((EXP_C[6] + r * EXP_C[7]) + r2 * (EXP_C[8] + r * EXP_C[9]))
        + r4 * ((EXP_C[10] + r * EXP_C[11]) + r2 * (EXP_C[12] + r * EXP_C[13])))
    p = 1.0 + (r + r2 * q)
    return p * pow2(k) if x > EXP_UNDERFLOW else 0.0


def wong_wang_H_scalar(u, d):
    """``wong_wang_H`` for one value in plain math, branch-free outside the series band: with w = exp(-|d u|)
    (never above 1, so nothing overflows), H = u / (1 - w) for d u >= 0 and -u w / (1 - w) below (TVB's
    expression with numerator and denominator times w); the series in the band."""
    z = d * u
    w = exp_nonpositive(-abs(z))
    num = u if z >= 0 else -u * w
    if abs(z) < SERIES_BAND:
        return 1.0 / d + u / 2 + d * u * u / 12
    return num / (1.0 - w)


def wong_wang_H_partials(u, d):
    """(H, dH/du, dH/dd) for one value, the same form as ``wong_wang_H_scalar``: with den = 1 - w,
    for d u >= 0: H = u / den, dH/du = (den - d u w) / den**2; below: H = -u w / den, dH/du = -w (den + d u) / den**2;
    dH/dd = -u**2 w / den**2 in both; in the band, the series and its derivatives 1/2 + d u / 6, -1/d**2 + u**2 / 12."""
    z = d * u
    w = exp_nonpositive(-abs(z))
    den = 1.0 - w
    num = u if z >= 0 else -u * w
    num_u = den - z * w if z >= 0 else -w * (den + z)
    if abs(z) < SERIES_BAND:
        return 1.0 / d + u / 2 + d * u * u / 12, 0.5 + d * u / 6, -1.0 / (d * d) + u * u / 12
    den2 = den * den
    return num / den, num_u / den2, -u * u * w / den2
