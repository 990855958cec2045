"""float64 standard normal draws on the CPU: torch's own numbers, the transform vectorised.

``torch.Tensor.normal_`` (and ``torch.randn``) on a contiguous CPU float64 tensor of n >= 16 elements fills it
with n uniforms u in [0, 1) from the generator, then turns each block of 16 into normals by Box-Muller,

    x_j = sqrt(-2 log(1 - u_j)) cos(2 pi u_{j+8}),   x_{j+8} = sqrt(-2 log(1 - u_j)) sin(2 pi u_{j+8}),   j < 8,

and, when 16 does not divide n, draws 16 more uniforms for the last 16 elements and transforms them the same
way. The transform runs one element at a time through libm (about 11 of its 15 ns per draw on the machines
measured; float32 has a vectorised path). ``normal_`` here draws the same uniforms in the same order (the
generator ends in the same state: ``uniform_`` runs torch's MT19937 on the generator's own state, read with
``get_state`` and written back with ``set_state``, bit for bit torch's numbers at about half its cost) and applies
the same transform in a numba loop that LLVM vectorises: ``log``,
``cos`` and ``sin`` in plain arithmetic (no call), each within 2 units in the last place of libm's, so the
draws equal torch's to rounding (``tests/test_normal.py`` compares them with ``torch.randn``). Before its first
use in a process, each part is checked against torch on a few hundred draws; if torch ever changes its transform
or its generator, the check fails and that part falls back to torch's own ``normal_`` / ``uniform_``.

The arithmetic below is numba functions (compiled on first call, ``cache=True``); ``log_unit`` reads a float's
bits through two numba intrinsics, so it runs compiled only.
"""
import math
import threading
import warnings

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

from .models.transfer import LN2_HI, LN2_LO

TWO_PI = 2.0 * math.pi                  # torch forms 2 pi u2 with this double (2.0f * pi<double>)
SQRT2 = math.sqrt(2.0)
# pi / 2 in three parts (Cody-Waite; each part pi/2's remainder rounded, the first two to 33 significant bits, so
# q * PIO2_1 and q * PIO2_2 are exact for q <= 4; ``tests/test_normal.py`` derives them again with mpmath)
PIO2_1 = 1.5707963267341256
PIO2_2 = 6.077100506303966e-11
PIO2_3 = 2.0222662487959506e-21
TWO_OVER_PI = 2.0 / math.pi
# Taylor coefficients: log m = 2 s sum_k s**(2k) / (2k + 1) (s = (m - 1) / (m + 1), |s| <= 0.172: 11 terms,
# truncation below 1e-18 relative); sin r and cos r for |r| <= pi / 4 to degrees 19 and 20 (below 1e-19)
LOG_C = tuple(1.0 / (2 * k + 1) for k in range(11))
SIN_C = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(10))
COS_C = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(11))

MIN_SIZE = 16                          # below this torch draws element by element (another algorithm)
EXP_SHIFT = 52
EXP_MASK = 0x7FF
EXP_BIAS = 1023.0
MANT_MASK = 0x000F_FFFF_FFFF_FFFF
ONE_BITS = 0x3FF0_0000_0000_0000
_INLINE = numba.njit(inline="always", fastmath={"contract"}, cache=True)


@intrinsic
def float_bits(typingctx, x):
    """A float64's bits as an int64 (a bitcast: no call, so a loop using it stays vectorisable)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@intrinsic
def bits_float(typingctx, b):
    """The float64 with these bits (int64)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


@_INLINE
def log_unit(x):
    """log(x) for 0 < x <= 1 (normal floats): x = 2**e m with m in [sqrt(2)/2, sqrt(2)), log m = 2 atanh(s),
    s = (m - 1) / (m + 1), by its series; e ln2 in two parts. e and m are read from x's bits."""
    b = float_bits(x)
    e = float((b >> EXP_SHIFT) & EXP_MASK) - EXP_BIAS
    m = bits_float((b & MANT_MASK) | ONE_BITS)
    big = m > SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    series = z * (LOG_C[1] + z * (LOG_C[2] + z * (LOG_C[3] + z * (LOG_C[4] + z * (LOG_C[5] + z * (
        LOG_C[6] + z * (LOG_C[7] + z * (LOG_C[8] + z * (LOG_C[9] + z * LOG_C[10])))))))))
    log_m = 2.0 * s + 2.0 * s * series
    return e * LN2_HI + (e * LN2_LO + log_m)


@_INLINE
def cos_sin(theta):
    """(cos theta, sin theta) for 0 <= theta < 2 pi: theta = q pi/2 + r, |r| <= pi/4 (Cody-Waite, three parts of
    pi/2), Taylor polynomials of sin r and cos r, and the quadrant q chosen by comparisons (no branch)."""
    q = np.floor(theta * TWO_OVER_PI + 0.5)
    r = ((theta - q * PIO2_1) - q * PIO2_2) - q * PIO2_3
    z = r * r
    s = r + r * z * (SIN_C[1] + z * (SIN_C[2] + z * (SIN_C[3] + z * (SIN_C[4] + z * (SIN_C[5] + z * (
        SIN_C[6] + z * (SIN_C[7] + z * (SIN_C[8] + z * SIN_C[9]))))))))
    c = 1.0 - 0.5 * z + z * z * (COS_C[2] + z * (COS_C[3] + z * (COS_C[4] + z * (COS_C[5] + z * (
        COS_C[6] + z * (COS_C[7] + z * (COS_C[8] + z * (COS_C[9] + z * COS_C[10]))))))))
    odd = (abs(q - 1.0) < 0.5) | (abs(q - 3.0) < 0.5)   # q in {0, 1, 2, 3, 4}; 4 is 0 again
    cos_abs = s if odd else c
    sin_abs = c if odd else s
    cos_t = -cos_abs if abs(q - 1.5) < 1.0 else cos_abs          # q = 1, 2: cos theta = -sin r, -cos r
    sin_t = -sin_abs if abs(q - 2.5) < 1.0 else sin_abs          # q = 2, 3: sin theta = -cos r, -sin r
    return cos_t, sin_t


#: blocks of 16 transformed per pass through the scratch arrays (4 KB each: they stay in the L1 cache)
CHUNK = 64


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)
def box_muller_16(uniform, out, n_blocks, first, second):
    """torch's transform of ``n_blocks`` blocks of 16 uniforms (float64, 1-d) into ``out``. Per chunk of blocks,
    the u_j and the u_{j+8} are first copied into two contiguous scratch arrays (``first``, ``second``: 8 * CHUNK
    each): a flat loop over them is what LLVM vectorises (a loop of 8 inside each block it does not)."""
    for i0 in range(0, n_blocks, CHUNK):
        m = min(CHUNK, n_blocks - i0)
        for i in range(m):
            for j in range(8):
                first[8 * i + j] = uniform[16 * (i0 + i) + j]
                second[8 * i + j] = uniform[16 * (i0 + i) + 8 + j]
        for k in range(8 * m):
            radius = np.sqrt(-2.0 * log_unit(1.0 - first[k]))
            c, s = cos_sin(TWO_PI * second[k])
            first[k] = radius * c
            second[k] = radius * s
        for i in range(m):
            for j in range(8):
                out[16 * (i0 + i) + j] = first[8 * i + j]
                out[16 * (i0 + i) + 8 + j] = second[8 * i + j]


# ---------------------------------------------------------------- torch's CPU generator, MT19937, in numba
# torch's CPU generator is the 32-bit Mersenne Twister (``at::mt19937``); a float64 uniform takes two outputs, hi
# then lo, and is ((hi mod 2**21) * 2**32 + lo) * 2**-53. A draw decrements ``left`` and, at 0, regenerates the 624
# words (``left`` = 624, ``next`` = 0) before reading ``state[next++]`` and tempering it. Its state travels in
# ``Generator.get_state()``: ``left`` (int32) at byte 8, ``next`` (uint64) at byte 16, the 624 words (as uint64)
# from byte 24. ``uniform_`` below produces the same numbers (checked by ``verified``), vectorised per 624 words.
MT_N = 624
MT_M = 397
MT_MATRIX_A = 0x9908B0DF
MT_UPPER = 0x80000000
MT_LOWER = 0x7FFFFFFF
STATE_LEFT, STATE_NEXT, STATE_WORDS = 8, 16, 24
TWO_POW_M53 = 1.0 / 9007199254740992.0


@numba.njit(cache=True, nogil=True)
def mt_regenerate(st):
    """The 624 new words from the old (``st``: uint32, in place)."""
    one = np.uint32(1)
    for i in range(MT_N - MT_M):
        y = (st[i] & np.uint32(MT_UPPER)) | (st[i + 1] & np.uint32(MT_LOWER))
        st[i] = st[i + MT_M] ^ (y >> one) ^ (np.uint32(MT_MATRIX_A) * (st[i + 1] & one))
    for i in range(MT_N - MT_M, MT_N - 1):
        y = (st[i] & np.uint32(MT_UPPER)) | (st[i + 1] & np.uint32(MT_LOWER))
        st[i] = st[i + MT_M - MT_N] ^ (y >> one) ^ (np.uint32(MT_MATRIX_A) * (st[i + 1] & one))
    y = (st[MT_N - 1] & np.uint32(MT_UPPER)) | (st[0] & np.uint32(MT_LOWER))
    st[MT_N - 1] = st[MT_M - 1] ^ (y >> one) ^ (np.uint32(MT_MATRIX_A) * (st[0] & one))


@numba.njit(cache=True, nogil=True)
def mt_temper(st, start, k, words, w):
    """words[w:w + k] = the tempered st[start:start + k]."""
    for i in range(k):
        y = st[start + i]
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        words[w + i] = y


@numba.njit(cache=True, nogil=True, error_model="numpy")
def mt_uniform53(st, left, nxt, out):
    """``out.uniform_(generator)`` for float64 from the generator state (``st`` uint32 words, ``left``, ``nxt``);
    returns the new (left, nxt), ``st`` advanced in place."""
    n = out.shape[0]
    words = np.empty(2 * n, np.uint32)
    w = 0
    while w < 2 * n:
        if left == 1:                                 # the next draw regenerates, then reads word 0
            mt_regenerate(st)
            left, nxt = MT_N + 1, 0
        k = min(left - 1, 2 * n - w)
        mt_temper(st, nxt, k, words, w)
        left -= k
        nxt += k
        w += k
    for i in range(n):                                # below 2**53: exact as a signed integer and as a double
        out[i] = float(((np.int64(words[2 * i]) & 0x1FFFFF) << 32) | np.int64(words[2 * i + 1])) * TWO_POW_M53
    return left, nxt


def uniform_(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``out.uniform_(generator=generator)`` for a contiguous CPU float64 ``out``: the same numbers, the generator
    left in the same state (its state read, advanced by ``mt_uniform53`` and written back)."""
    raw = generator.get_state()
    b = raw.numpy()
    left = int(b[STATE_LEFT:STATE_LEFT + 4].view(np.int32)[0])
    nxt = int(b[STATE_NEXT:STATE_NEXT + 8].view(np.uint64)[0])
    st = b[STATE_WORDS:STATE_WORDS + 8 * MT_N].view(np.uint64).astype(np.uint32)
    left, nxt = mt_uniform53(st, left, nxt, out.view(-1).numpy())
    b[STATE_LEFT:STATE_LEFT + 4].view(np.int32)[0] = left
    b[STATE_NEXT:STATE_NEXT + 8].view(np.uint64)[0] = nxt
    b[STATE_WORDS:STATE_WORDS + 8 * MT_N].view(np.uint64)[:] = st.astype(np.uint64)
    generator.set_state(raw)
    return out


def uniforms_per_piece(size: int) -> int:
    """Uniforms torch's ``normal_`` takes for ``size`` (>= 16) values: ``size``, and 16 more for the last 16
    values when 16 does not divide it."""
    return size + (16 if size % 16 else 0)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def transform_pieces(uniform, out, size, pieces, stride):
    """``pieces`` successive ``normal_`` calls of ``size`` values each: piece p's uniforms start at p * stride
    (``stride = uniforms_per_piece(size)``), its values at p * size; the last 16 values of a piece whose size 16
    does not divide come from the 16 uniforms after its own."""
    first = np.empty(8 * CHUNK)
    second = np.empty(8 * CHUNK)
    for p in range(pieces):
        box_muller_16(uniform[p * stride:], out[p * size:], size // 16, first, second)
        if size % 16:
            box_muller_16(uniform[p * stride + size:], out[p * size + size - 16:], 1, first, second)


def applies(out: torch.Tensor) -> bool:
    """Whether ``normal_`` takes its own path for ``out``: CPU float64, contiguous, no autograd record, and the
    path's agreement with torch checked in this process (``verified``)."""
    return (out.device.type == "cpu" and out.dtype == torch.float64 and out.is_contiguous()
            and not out.requires_grad and verified())


def _fill(out: torch.Tensor, generator: torch.Generator, pieces: int) -> torch.Tensor:
    size = out.numel() // pieces
    stride = uniforms_per_piece(size)
    uniform = torch.empty(pieces * stride, dtype=torch.float64)
    if generator.device.type == "cpu" and generator_verified():
        uniform_(uniform, generator)
    else:
        uniform.uniform_(generator=generator)
    transform_pieces(uniform.numpy(), out.view(-1).numpy(), size, pieces, stride)
    return out


def normal_(out: torch.Tensor, generator: torch.Generator, pieces: int = 1) -> torch.Tensor:
    """Standard normal draws in place: what ``pieces`` successive calls ``part.normal_(generator=generator)`` on
    the equal consecutive parts of ``out`` (flattened) draw, the generator advanced as they advance it. CPU float64
    parts of at least 16 values go through the vectorised transform (torch's numbers to rounding), anything else
    through torch."""
    n = out.numel()
    if pieces < 1 or n % pieces:
        raise ValueError(f"normal_: {n} values do not split into {pieces} equal pieces")
    if n // pieces < MIN_SIZE or not applies(out):
        parts = [out] if pieces == 1 else out.view(-1).chunk(pieces)     # view() refuses a non-contiguous out
        for part in parts:
            part.normal_(generator=generator)
        return out
    return _fill(out, generator, pieces)


_VERIFIED = []
_GENERATOR_VERIFIED = []
_LOCK = threading.RLock()           # verified() fills through generator_verified()


def _checked_once(flag: list, agrees, message: str, errors: tuple = ()) -> bool:
    """``agrees()`` once per process (its result kept in ``flag``); when it is false (or raises one of
    ``errors``), ``message`` is warned once and the result is False from then on."""
    with _LOCK:
        if not flag:
            try:
                ok = bool(agrees())
            except errors:
                ok = False
            if not ok:
                warnings.warn(f"tvb_torchfit: {message}")
            flag.append(ok)
        return flag[0]


def _same_seed_generators():
    return torch.Generator().manual_seed(20261205), torch.Generator().manual_seed(20261205)


def _generator_agrees() -> bool:
    ours, theirs = _same_seed_generators()
    ok = True
    for n in (1, 3, 311, 700, 1300):
        a = uniform_(torch.empty(n, dtype=torch.float64), ours)
        ok &= torch.equal(a, torch.empty(n, dtype=torch.float64).uniform_(generator=theirs))
    return ok and torch.equal(ours.get_state(), theirs.get_state())


def _transform_agrees() -> bool:
    ok = True
    for size, pieces in ((16, 1), (53, 1), (160, 1), (40, 3)):
        ours, theirs = _same_seed_generators()
        a = _fill(torch.empty(size * pieces, dtype=torch.float64), ours, pieces)
        b = torch.cat([torch.empty(size, dtype=torch.float64).normal_(generator=theirs) for _ in range(pieces)])
        ok &= bool(torch.allclose(a, b, rtol=1e-13, atol=1e-13))
        ok &= bool(torch.equal(ours.get_state(), theirs.get_state()))
    return ok


def generator_verified() -> bool:
    """Once per process: ``uniform_`` against torch's own ``uniform_`` (float64, CPU generator), bit for bit, on
    sizes across the 624-word regeneration, and the generator's whole state after; if they differ (a torch whose
    generator or state layout changed), a warning and torch's ``uniform_`` from then on."""
    return _checked_once(_GENERATOR_VERIFIED, _generator_agrees,
                         "torch's CPU generator no longer matches the MT19937 simulator.normal reproduces; drawing "
                         "uniforms with torch's own uniform_ (slower)", errors=(RuntimeError, ValueError, IndexError))


def verified() -> bool:
    """Once per process: the vectorised path against torch's ``normal_`` on sizes on and off a multiple of 16,
    in one piece and in three, from the same seed (values within 1e-13, the generator left in the same state)."""
    return _checked_once(_VERIFIED, _transform_agrees,
                         "torch's float64 normal_ no longer matches the transform simulator.normal reproduces; "
                         "drawing with torch's own normal_ (slower)")
