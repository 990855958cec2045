"""HistoryRing (the in-place delay history) in both layouts, and the node-major far-edge gather it serves."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from tvb_torchfit.simulator.coupling import DelayedLinearCoupling, gather_far, gather_far_node_major
from tvb_torchfit.simulator.history import HistoryRing

CPU = torch.device("cpu")


@settings(max_examples=40, deadline=None)
@given(node_major=st.booleans(), horizon=st.integers(1, 9), block=st.integers(1, 4),
       blocks=st.lists(st.integers(1, 4), min_size=1, max_size=30), seed=st.integers(0, 2 ** 16))
def test_window_is_the_last_horizon_steps_through_wrap_arounds(node_major, horizon, block, blocks, seed):
    """Whatever the block lengths (<= the ring's block), the window is the last ``horizon`` steps written,
    oldest first, after every append and every copy back to the buffer's start; ``write_positions`` +
    ``advance`` (a block written in place, as the compiled block does) is the same as ``append``."""
    blocks = [min(k, block) for k in blocks]
    N, B = 3, 2
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(horizon, N, B, generator=g, dtype=torch.float64)
    ring = HistoryRing(horizon, N, B, block, torch.float64, CPU, node_major)
    ring.load(start)
    seen = list(start)
    for i, K in enumerate(blocks):
        rows = torch.randn(K, N, B, generator=g, dtype=torch.float64)
        ring.make_room(K)
        if node_major and i % 2:
            pos = HistoryRing.write_positions(horizon, N, B, ring.length, K, CPU) + ring.offset_tensor
            ring.flat.index_put_((pos,), rows.permute(1, 0, 2).reshape(-1))
            ring.advance(K)
        else:
            ring.append(rows)
        seen.extend(rows)
        assert torch.equal(ring.window(), torch.stack(seen[-horizon:]))


def test_load_from_its_own_window_view():
    """``load`` of a view of the same buffer (what ``history`` hands out) must not read what it overwrites."""
    for node_major in (False, True):
        ring = HistoryRing(4, 2, 1, 3, torch.float64, CPU, node_major)
        ring.load(torch.arange(8.0, dtype=torch.float64).view(4, 2, 1))
        for k in range(5):                                  # move the window off the buffer's start
            ring.make_room(1)
            ring.append(torch.full((1, 2, 1), 100.0 + k, dtype=torch.float64))
        expected = ring.window().clone()
        ring.load(ring.window())
        assert torch.equal(ring.window(), expected) and ring.offset == 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 16), batch=st.integers(1, 3), K=st.integers(1, 4))
def test_node_major_gather_equals_time_major_gather(seed, batch, K):
    """The far-edge sums of a block read from the node-major ring equal ``gather_far`` on the time-major window
    (random weights and delays >= K - 1, zero-delay self-connections left to the step loop)."""
    rng = np.random.RandomState(seed)
    N, horizon = 5, 12
    weights = rng.rand(N, N) * (rng.rand(N, N) < 0.6)
    idelays = rng.randint(K - 1, horizon - 1, size=(N, N))
    np.fill_diagonal(idelays, 0)
    coupling = DelayedLinearCoupling(weights, idelays, horizon, batch, torch.float64, CPU, block=K)
    window = torch.as_tensor(rng.randn(horizon, N, batch))
    ring = HistoryRing(horizon, N, batch, K, torch.float64, CPU, node_major=True)
    ring.load(window)
    for _ in range(3):                                      # a window away from the buffer's start
        ring.make_room(K)
        ring.append(torch.as_tensor(rng.randn(K, N, batch)))
    rows, w = coupling.padded_plan(K)
    ref = gather_far(ring.window().reshape(horizon * N, batch), rows, w)
    src, w2 = coupling.node_major_plan(ring.length)
    for unrolled in (False, True):
        got = gather_far_node_major(ring.flat, ring.offset_tensor, src, w2, K, batch, unrolled=unrolled)
        torch.testing.assert_close(got, ref, rtol=1e-14, atol=1e-14)
