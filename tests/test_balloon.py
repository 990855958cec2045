"""Balloon–Windkessel observation model (tvb_torchfit.analyzers.balloon) against TVB's ``BalloonModel`` analyzer.

Every reference BOLD here is computed by TVB's own ``tvb.analyzers.fmri_balloon.BalloonModel.evaluate()``
in the test, from a TVB ``TimeSeriesRegion``: the output of a short TVB simulation, or a smooth random signal.
TVB's output sample 0 is the rest state (its input sample 0 is unused), so the port is fed samples 1.. .
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tvb.analyzers.fmri_balloon import BalloonModel, BoldModels, NeuralInputTransformations
from tvb.datatypes.time_series import TimeSeriesRegion
from tvb.simulator import integrators, models, monitors

from tvb_builders import build, heun_stochastic, small_connectivity
from tvb_torchfit.analyzers.balloon import BalloonWindkessel, neural_input
from tvb_torchfit.errors import ParameterError, UnsupportedTVBObject

F64 = torch.float64


def _smooth(T: int, voi: int, N: int, seed: int = 0) -> np.ndarray:
    """A smooth positive random signal shaped like TVB monitor output (time, voi, nodes, modes)."""
    rng = np.random.RandomState(seed)
    walk = np.cumsum(rng.randn(T, voi, N, 1), axis=0)
    return 0.3 + 0.01 * walk


def _tvb_and_port(data: np.ndarray, sample_period: float, **options):
    """TVB's BOLD (time, nodes) and the port's (time - 1, nodes) on the same TimeSeriesRegion."""
    T = data.shape[0]
    ts = TimeSeriesRegion(data=data, time=np.arange(T) * sample_period, sample_period=sample_period,
                          sample_period_unit="ms")
    analyzer = BalloonModel(time_series=ts, **options)
    ref = analyzer.evaluate().data                                       # (time, 1, nodes, modes)
    bw = BalloonWindkessel.from_tvb(analyzer)
    x = neural_input(torch.tensor(data[None, ..., 0]), bw.neural_input_transformation, bw.normalize_neural_input)
    return ref, bw(x[:, 1:])[0].numpy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------------- TVB parity

def test_parity_with_tvb_on_a_tvb_simulation():
    """ExcInh on a 5-node connectome, TemporalAverage(1 ms) of S_e and S_i over 4 s, TVB defaults."""
    sim = build(model=models.ReducedWongWangExcInh(G=np.array([1.0])), conn=small_connectivity(5),
                integrator=heun_stochastic(dt=0.5, nsig=1e-3), mons=(monitors.TemporalAverage(period=1.0),))
    (t, data), = sim.run(simulation_length=4000.0)
    ref, got = _tvb_and_port(data, 1.0)
    assert ref.shape == (4000, 1, 5, 1) and np.all(ref[0] == 0)
    assert _rel(got, ref[1:, 0, :, 0]) < 1e-13                            # measured 7.8e-16


@pytest.mark.parametrize("sample_period,options", [
    pytest.param(0.5, {}, id="defaults"),
    pytest.param(0.5, dict(bold_model=BoldModels.LINEAR, RBM=False), id="linear-classical"),
    pytest.param(1.0, dict(bold_model=BoldModels.LINEAR), id="linear-revised"),
    pytest.param(0.5, dict(neural_input_transformation=NeuralInputTransformations.ABS_DIFF), id="abs_diff"),
    pytest.param(2.0, dict(neural_input_transformation=NeuralInputTransformations.SUM, normalize_neural_input=True,
                           integrator=integrators.EulerDeterministic(), tau_s=1.2, alpha=0.35, E0=0.34,
                           epsilon=np.array([1.2]), V0=0.04, TE=0.03), id="sum-normalised-euler-2ms"),
])
def test_parity_with_tvb_options(sample_period, options):
    ref, got = _tvb_and_port(_smooth(3000, 3, 4), sample_period, **options)
    assert np.all(ref[0] == 0)
    assert _rel(got, ref[1:, 0, :, 0]) < 1e-12                            # measured 0 .. 6.5e-15


def test_regionwise_epsilon_is_tvbs_intended_result():
    """TVB broadcasts an (N,) epsilon against the modes axis, giving (time, 1, N, N); its diagonal is the
    region-wise BOLD, which the port returns."""
    eps = np.linspace(0.5, 2.0, 4)
    ref, got = _tvb_and_port(_smooth(2000, 1, 4, seed=1), 1.0, epsilon=eps)
    assert ref.shape == (2000, 1, 4, 4)
    assert _rel(got, ref[1:, 0, np.arange(4), np.arange(4)]) < 1e-12


def test_from_tvb_rejects_other_integrators():
    analyzer = BalloonModel(integrator=integrators.HeunStochastic())
    with pytest.raises(UnsupportedTVBObject, match="HeunStochastic"):
        BalloonWindkessel.from_tvb(analyzer, dt=1.0)
    with pytest.raises(ParameterError, match="dt"):
        BalloonWindkessel.from_tvb(BalloonModel())


# ------------------------------------------------------------------------------------ streaming

def _x(batch=2, T=300, N=3, seed=0) -> torch.Tensor:
    return torch.tensor(_smooth(T, batch, N, seed)[..., 0].transpose(1, 0, 2))      # (batch, time, nodes)


def test_streaming_windows_equal_one_call_with_and_without_tr():
    x = _x()
    whole = BalloonWindkessel(dt=10.0)(x)
    at_tr = BalloonWindkessel(dt=10.0)(x, tr=70.0)
    assert torch.equal(at_tr, whole[:, 6::7])                             # t = 70, 140, ... ms from rest
    for cuts in ([0, 1, 50, 51, 123, 300], [0, 7, 14, 200, 300], [0, 299, 300]):
        bw, bw_tr = BalloonWindkessel(dt=10.0), BalloonWindkessel(dt=10.0)
        parts = [bw(x[:, a:b]) for a, b in zip(cuts, cuts[1:])]
        parts_tr = [bw_tr(x[:, a:b], tr=70.0) for a, b in zip(cuts, cuts[1:])]
        assert torch.equal(torch.cat(parts, dim=1), whole)
        assert torch.equal(torch.cat(parts_tr, dim=1), at_tr)
    assert bw.step == 300


def test_state_dict_round_trip_and_reset():
    x = _x()
    bw = BalloonWindkessel(dt=10.0)
    bw(x[:, :100])
    saved = bw.state_dict()
    tail = bw(x[:, 100:], tr=50.0)
    other = BalloonWindkessel(dt=10.0)
    other.load_state_dict(saved)
    assert torch.equal(other(x[:, 100:], tr=50.0), tail)
    bw.reset()
    assert torch.equal(bw(x), BalloonWindkessel(dt=10.0)(x))


def test_per_member_parameters_equal_separate_runs():
    x = _x(batch=2)
    tau_s = torch.tensor([[1.54], [1.1]], dtype=F64)
    both = BalloonWindkessel(dt=10.0, tau_s=tau_s, epsilon=torch.tensor([0.5, 1.0, 1.5], dtype=F64))(x)
    for b in range(2):
        one = BalloonWindkessel(dt=10.0, tau_s=float(tau_s[b, 0]),
                                epsilon=torch.tensor([0.5, 1.0, 1.5], dtype=F64))(x[b:b + 1])
        torch.testing.assert_close(both[b:b + 1], one, rtol=1e-14, atol=1e-15)


def test_steady_state_stays_put_and_zero_input_is_rest():
    x0 = torch.tensor([[0.1, 0.3], [0.0, 0.5]], dtype=F64)
    bw = BalloonWindkessel(dt=5.0)
    bw.set_steady_state(x0)
    y = bw(x0[:, None, :].expand(2, 400, 2))
    torch.testing.assert_close(y, y[:, :1].expand_as(y), rtol=0, atol=1e-12)
    rest = BalloonWindkessel(dt=5.0)
    rest.set_steady_state(torch.zeros(1, 3, dtype=F64))
    assert torch.equal(rest.state, torch.tensor([[[0.0] * 3, [1.0] * 3, [1.0] * 3, [1.0] * 3]], dtype=F64))


@settings(deadline=None, max_examples=25)
@given(batch=st.integers(1, 3), nodes=st.integers(1, 4), lengths=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       istep=st.integers(1, 5), dt=st.sampled_from([0.1, 0.5, 1.0, 720.0 / 7]))
def test_shapes_and_tr_counts(batch, nodes, lengths, istep, dt):
    bw, bw_tr = BalloonWindkessel(dt=dt), BalloonWindkessel(dt=dt)
    total = 0
    for n in lengths:
        x = torch.full((batch, n, nodes), 0.2, dtype=torch.float32)
        y, y_tr = bw(x), bw_tr(x, tr=istep * dt)
        assert y.shape == (batch, n, nodes) and y.dtype == torch.float32
        assert y_tr.shape == (batch, (total + n) // istep - total // istep, nodes)
        total += n


# ------------------------------------------------------------------------------------ gradients

def test_gradcheck_input_and_parameters():
    x = _x(batch=1, T=6, N=2).requires_grad_()
    tau_s = torch.tensor([1.54], dtype=F64, requires_grad=True)
    eps = torch.tensor([0.5, 0.9], dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.32, dtype=F64, requires_grad=True)

    def f(x, tau_s, eps, alpha):
        bw = BalloonWindkessel(dt=200.0, tau_s=tau_s, epsilon=eps, alpha=alpha)
        first = bw(x[:, :4])
        return torch.cat((first, bw(x[:, 4:], tr=400.0)), dim=1)

    assert torch.autograd.gradcheck(f, (x, tau_s, eps, alpha))


def test_detach_cuts_the_graph_between_windows():
    x = _x(batch=1, T=20, N=2).requires_grad_()
    bw = BalloonWindkessel(dt=100.0)
    bw(x[:, :10])
    bw.detach_()
    bw(x[:, 10:]).sum().backward()
    assert torch.all(x.grad[:, :10] == 0) and torch.any(x.grad[:, 10:] != 0)


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make,call,match", [
    (lambda: BalloonWindkessel(dt=0.0), None, "dt must be a finite positive"),
    (lambda: BalloonWindkessel(dt=-1.0), None, "dt must be a finite positive"),
    (lambda: BalloonWindkessel(dt=float("nan")), None, "dt must be a finite positive"),
    (lambda: BalloonWindkessel(dt=1.0, tau_s=-1.0), None, "tau_s must be > 0"),
    (lambda: BalloonWindkessel(dt=1.0, E0=1.5), None, r"E0 must be in \(0, 1\)"),
    (lambda: BalloonWindkessel(dt=1.0, bold_model="quadratic"), None, "bold_model must be"),
    (lambda: BalloonWindkessel(dt=1.0, integrator="rk4"), None, "integrator must be"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw(torch.zeros(5, 3, dtype=F64)), r"\(batch, time, nodes\)"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw(np.zeros((1, 5, 3))), r"\(batch, time, nodes\)"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw(torch.zeros(1, 5, 3, dtype=torch.int64)), "floating"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw(torch.full((1, 5, 3), float("nan"))), "x must be finite"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw(torch.zeros(1, 5, 3), tr=2.5), "tr must be a multiple of dt"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw(torch.zeros(1, 5, 3), tr=0.0), "tr must be a finite positive"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: (bw(torch.zeros(1, 5, 3)), bw(torch.zeros(1, 5, 4))),
     "call reset"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: bw.set_steady_state(torch.full((1, 3), -5.0)), "x0 must be"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: neural_input(torch.zeros(1, 5, 3)), r"\(batch, time, voi, nodes\)"),
    (lambda: BalloonWindkessel(dt=1.0), lambda bw: neural_input(torch.zeros(1, 5, 2, 3), "max"), "transformation"),
])
def test_bad_inputs_name_the_argument(make, call, match):
    with pytest.raises(ParameterError, match=match):
        bw = make()
        call(bw)
