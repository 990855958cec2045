"""simulator.normal: float64 normal draws with torch's numbers, the transform vectorised."""
import warnings

import numpy as np
import pytest
import torch

from tvb_torchfit.simulator import normal

EPS = np.finfo(np.float64).eps


def test_pi_over_2_parts_are_pi_over_2_rounded_in_pieces():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 300
    half_pi = mpmath.pi / 2

    def rounded(x, bits):
        m, e = mpmath.frexp(x)
        return float(mpmath.ldexp(mpmath.nint(mpmath.ldexp(m, bits)), e - bits))
    p1 = rounded(half_pi, 33)
    p2 = rounded(half_pi - p1, 33)
    assert (normal.PIO2_1, normal.PIO2_2, normal.PIO2_3) == (p1, p2, float(half_pi - p1 - p2))
    for q in range(5):                         # the products the reduction takes as exact
        assert mpmath.mpf(q * normal.PIO2_1) == q * mpmath.mpf(normal.PIO2_1)
        assert mpmath.mpf(q * normal.PIO2_2) == q * mpmath.mpf(normal.PIO2_2)


def test_log_unit_within_two_ulp_of_numpy():
    x = np.random.default_rng(0).random(20000)
    edges = [1.0, 2.0 ** -53, 0.5, 1 - 2.0 ** -53, np.sqrt(0.5), np.nextafter(np.sqrt(0.5), 1), 0.75, 1e-300]
    x = np.concatenate([1.0 - x, np.array(edges), np.geomspace(1e-16, 1.0, 500)])
    ours = np.array([normal.log_unit(v) for v in x])
    ref = np.log(x)
    assert np.all(np.abs(ours - ref) <= 2 * EPS * np.maximum(np.abs(ref), 0)), np.max(np.abs(ours - ref) / np.abs(ref))
    assert normal.log_unit(1.0) == 0.0


def test_cos_sin_within_an_ulp_of_numpy_in_every_quadrant():
    theta = normal.TWO_PI * np.random.default_rng(1).random(20000)
    quarter = np.pi / 2
    edges = [0.0, quarter, np.pi, 3 * quarter, normal.TWO_PI * (1 - 2.0 ** -53), np.pi / 4, 3 * np.pi / 4,
             np.nextafter(np.pi / 4, 0), np.nextafter(np.pi / 4, 4)]
    theta = np.concatenate([theta, np.array(edges)])
    cs = np.array([normal.cos_sin(t) for t in theta])
    assert np.max(np.abs(cs[:, 0] - np.cos(theta))) <= 2 * EPS
    assert np.max(np.abs(cs[:, 1] - np.sin(theta))) <= 2 * EPS


@pytest.mark.parametrize("size,pieces", [(16, 1), (17, 1), (31, 1), (160, 1), (2584, 5), (152, 7), (40, 3),
                                         (8, 3), (1, 1), (15, 4)])
def test_normal_equals_torch_normal_piece_by_piece(size, pieces):
    """The same numbers as torch's ``normal_`` on each consecutive piece (to rounding: the transform's log, cos
    and sin are not libm's), the generator left in the same state; below 16 values per piece, torch's own."""
    ours, theirs = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    a = normal.normal_(torch.empty(pieces, size, dtype=torch.float64), ours, pieces=pieces)
    b = torch.stack([torch.empty(size, dtype=torch.float64).normal_(generator=theirs) for _ in range(pieces)])
    torch.testing.assert_close(a, b, rtol=4 * EPS, atol=4 * EPS)
    assert torch.equal(ours.get_state(), theirs.get_state())
    if size < normal.MIN_SIZE:
        assert torch.equal(a, b)


@pytest.mark.parametrize("make", [
    lambda: torch.empty(64, dtype=torch.float32),                       # float32: torch's own (vectorised) path
    lambda: torch.empty(8, 16, dtype=torch.float64).t(),                # not contiguous
    lambda: torch.empty(12, dtype=torch.float64),                       # below 16 values
])
def test_tensors_the_path_does_not_take_are_drawn_by_torch(make):
    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = make(), make()
    normal.normal_(a, ours)
    b.normal_(generator=theirs)
    assert torch.equal(a, b)


def test_pieces_must_split_the_tensor():
    with pytest.raises(ValueError, match="7 equal pieces"):
        normal.normal_(torch.empty(30, dtype=torch.float64), torch.Generator(), pieces=7)


def _broken_transform(uniform, out, size, pieces, stride):
    out[:] = 0.0


def _broken_generator(st, left, nxt, out):
    out[:] = 0.5
    return left, nxt


@pytest.mark.parametrize("flag,part,broken,message", [
    ("_VERIFIED", "transform_pieces", _broken_transform, "no longer matches the transform"),
    ("_GENERATOR_VERIFIED", "mt_uniform53", _broken_generator, "MT19937"),
])
def test_a_part_that_disagrees_with_torch_is_not_used(monkeypatch, flag, part, broken, message):
    """The once-per-process checks: if the vectorised transform or the generator did not reproduce torch's
    numbers, ``normal_`` warns and uses torch's own ``normal_`` / ``uniform_`` for that part."""
    monkeypatch.setattr(normal, flag, [])
    monkeypatch.setattr(normal, part, broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, theirs = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        a = normal.normal_(torch.empty(100, dtype=torch.float64), ours)
    assert any(message in str(w.message) for w in caught)
    torch.testing.assert_close(a, torch.empty(100, dtype=torch.float64).normal_(generator=theirs), rtol=4 * EPS,
                               atol=4 * EPS)


def test_the_vectorised_path_is_in_use_with_this_torch():
    """With the installed torch both checks pass, so float64 draws take the vectorised transform and the numba
    generator (a fallback would only be slower: this test says when that happens)."""
    assert normal.verified()
    assert normal.generator_verified()
    assert normal.applies(torch.empty(32, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 7, 2 ** 40 + 3])
@pytest.mark.parametrize("sizes", [[1], [2, 3], [311, 1, 624, 625], [5000, 7]])
def test_uniform_is_torchs_generator_bit_for_bit(seed, sizes):
    """The MT19937 on the generator's own state: the same float64 uniforms as torch's ``uniform_`` after any
    earlier draws (here 17), across the 624-word regeneration, and the whole generator state the same after."""
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for g in (ours, theirs):
        torch.rand(17, dtype=torch.float64, generator=g)
    for n in sizes:
        a = normal.uniform_(torch.empty(n, dtype=torch.float64), ours)
        assert torch.equal(a, torch.empty(n, dtype=torch.float64).uniform_(generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert torch.equal(torch.randn(40, generator=ours), torch.randn(40, generator=theirs))
