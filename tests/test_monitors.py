"""simulator.monitors: the Bold monitor's sample sequence (the parity of every monitor with TVB's is in
test_parity.py and test_simulator.py)."""
import numpy as np
import pytest
import torch

from tvb_torchfit.simulator.monitors import SampleSequence


def _chunks(seed, n_chunks, shape=(2, 3)):
    rng = np.random.default_rng(seed)
    return [torch.as_tensor(rng.standard_normal((int(k),) + shape)) for k in rng.integers(0, 40, n_chunks)]


@pytest.mark.parametrize("keep", [5, 50, 400])
def test_windows_are_the_appended_samples_whatever_the_chunking(keep):
    """Appended chunks of random lengths (0 included), the oldest forgotten after each: every window holds the
    samples a plain concatenation holds there, and ``len`` counts what is held."""
    first = torch.as_tensor(np.random.default_rng(9).standard_normal((keep, 2, 3)))
    seq, held = SampleSequence(first, keep), first
    for x in _chunks(1, 60):
        seq.append(x)
        held = torch.cat((held, x))
        assert len(seq) == held.shape[0]
        for start, stop in ((len(seq) - keep, len(seq)), (max(0, len(seq) - keep - 3), len(seq) - 2)):
            if stop > start:
                assert torch.equal(seq.window(start, stop), held[start:stop])
        seq.keep_last()
        held = held[held.shape[0] - len(seq):]
        assert len(seq) >= keep


def test_a_chunk_that_requires_grad_is_kept_as_a_piece_and_gets_its_gradient():
    """After samples without grad (held in the buffer), a chunk that requires grad: windows across both hold the
    right values, the gradient reaches the chunk, and appending more does not disturb the graph (written into the
    buffer, the chunk would be overwritten in place under a graph that still needs it)."""
    first = torch.arange(12.0, dtype=torch.float64).reshape(6, 2)
    seq = SampleSequence(first, 4)
    seq.append(torch.ones(3, 2, dtype=torch.float64))
    x = torch.full((2, 2), 2.0, dtype=torch.float64, requires_grad=True)
    seq.append(x)
    window = seq.window(len(seq) - 4, len(seq))
    loss = (window ** 2).sum()                  # used at once, as the monitor does; the square keeps the window
    seq.append(torch.zeros(2, 2, dtype=torch.float64))
    seq.keep_last()
    assert torch.equal(window.detach(), torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [2.0, 2.0]],
                                                     dtype=torch.float64))
    (g,) = torch.autograd.grad(loss, x)
    assert torch.equal(g, torch.full((2, 2), 4.0, dtype=torch.float64))


def test_bold_stock_handed_out_is_not_changed_by_later_runs():
    """The Bold monitor's ``stock`` (what ``state_dict`` saves) is a copy: runs after it move the buffer behind
    the windows (more than its 20 s of samples appended) without changing what was handed out."""
    from tvb.simulator import models, monitors
    import tvb_torchfit
    from tvb_builders import build, heun_stochastic, small_connectivity
    sim = build(models.ReducedWongWang(), heun_stochastic(dt=1.0, nsig=1e-4), (monitors.Bold(period=500.0),),
                conn=small_connectivity(3))
    twin = tvb_torchfit.from_tvb(sim, seed=2)
    twin.run(simulation_length=2000.0)
    saved = twin.state_dict()
    frozen = {k: v.clone() if torch.is_tensor(v) else v for k, v in saved["monitors"][0].items()}
    twin.run(simulation_length=50000.0)
    for k, v in frozen.items():
        assert torch.equal(saved["monitors"][0][k], v) if torch.is_tensor(v) else saved["monitors"][0][k] == v
