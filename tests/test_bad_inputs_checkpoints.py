"""Checkpoints bound to their problem, crafted and damaged checkpoints, degenerate data flagged, and the numerics
of the transfer function and the noise at the edges of TVB's parameter domain."""
import os

import numpy as np
import pytest
import torch
from tvb.simulator import models, monitors

import tvb_torchfit
from tvb_torchfit.errors import CheckpointError
from tvb_torchfit.simulator.models import ReducedWongWangExcInh
from tvb_torchfit.simulator.models.transfer import wong_wang_H
from tvb_builders import build, heun_stochastic, small_connectivity

N = 4
FAST = dict(n_steps=2, window_trs=2, fc_window_trs=4, batch=1, warmup_ms=0.0, progress=False)
PARAMS = {"G": (0.5, 3.0)}


def make_sim(speed=3.0, seed=0):
    return build(models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([1.0])), heun_stochastic(dt=2.0),
                 (monitors.Bold(period=360.0),), conn=small_connectivity(N, seed=seed, speed=speed), a=0.5)


def fc_of(seed):
    return np.corrcoef(np.random.RandomState(seed).randn(N, 200))


@pytest.fixture(scope="module")
def sim():
    return make_sim()


@pytest.fixture(scope="module")
def written(sim, tmp_path_factory):
    """A checkpoint of problem A (sim, fc_of(0))."""
    path = tmp_path_factory.mktemp("ckpt") / "a.ckpt"
    result = tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=path, **FAST)
    return path, result


def copy_of(path, tmp_path, name="copy.ckpt"):
    out = tmp_path / name
    out.write_bytes(path.read_bytes())
    return out


@pytest.mark.parametrize("change, part", [
    (lambda: (make_sim(), fc_of(1), {}), "target FC"),
    (lambda: (make_sim(speed=6.0), fc_of(0), {}), "delays"),
    (lambda: (make_sim(seed=5), fc_of(0), {}), "network weights"),
    (lambda: (make_sim(), fc_of(0), dict(lr=0.01)), "settings"),
    (lambda: (make_sim(), fc_of(0), dict(params={"G": (0.4, 3.0)})), "fitted parameters' specs"),
], ids=["other-target", "other-speed", "other-weights", "other-settings", "other-bounds"])
def test_a_checkpoint_is_refused_for_another_problem(written, tmp_path, change, part):
    """A's checkpoint is refused for B with a message naming what differs (never A's fit for B, never a shape
    error from deep inside)."""
    sim_b, fc_b, extra = change()
    params = extra.pop("params", PARAMS)
    path = copy_of(written[0], tmp_path)
    with pytest.raises(CheckpointError) as info:
        tvb_torchfit.fit(sim_b, fc_b, params, checkpoint=path, **dict(FAST, **extra))
    msg = str(info.value)
    assert part in msg and "copy.ckpt" in msg and "resume=False" in msg


def test_same_problem_resumes_and_resume_false_starts_afresh(sim, written, tmp_path):
    path, result_a = written
    again = tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=copy_of(path, tmp_path), **FAST)
    assert again.history["loss"] == result_a.history["loss"]            # resumed at the end: nothing recomputed
    other = copy_of(path, tmp_path, "b.ckpt")
    fresh = tvb_torchfit.fit(sim, fc_of(1), PARAMS, checkpoint=other, resume=False, **FAST)
    plain = tvb_torchfit.fit(sim, fc_of(1), PARAMS, **FAST)
    assert fresh.history["loss"] == plain.history["loss"]
    resumed_b = tvb_torchfit.fit(sim, fc_of(1), PARAMS, checkpoint=other, **FAST)   # now B's checkpoint
    assert resumed_b.history["loss"] == plain.history["loss"]


class Payload:
    """Unpickling it would create ``marker`` (the classic ``__reduce__`` attack, harmless here)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_is_refused_and_its_payload_never_runs(sim, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.ckpt"
    torch.save({"format": 3, "fingerprint": {}, "config": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="crafted.ckpt") as info:
        tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=path, **FAST)
    assert "refused without running" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage, fragment", [
    (lambda b: b[: len(b) // 2], "truncated or corrupt"),
    (lambda b: b"", "truncated or corrupt"),
    (lambda b: b"not a checkpoint at all" * 10, "truncated or corrupt"),
], ids=["truncated", "empty", "garbage"])
def test_damaged_checkpoints_give_a_clear_error(sim, written, tmp_path, damage, fragment):
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(damage(written[0].read_bytes()))
    with pytest.raises(CheckpointError, match=fragment) as info:
        tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=path, **FAST)
    assert "damaged.ckpt" in str(info.value)


@pytest.mark.parametrize("doc, fragment", [([1, 2, 3], "holds a list"), ({"format": 2}, "another version"),
                                           ({"params": {}}, "another version")], ids=["list", "format-2", "no-format"])
def test_foreign_checkpoints_give_a_clear_error(sim, tmp_path, doc, fragment):
    path = tmp_path / "foreign.ckpt"
    torch.save(doc, path)
    with pytest.raises(CheckpointError, match=fragment):
        tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=path, **FAST)


def test_a_checkpoint_with_the_right_fingerprint_but_damaged_state(sim, written, tmp_path):
    doc = torch.load(written[0], weights_only=True)
    del doc["optimizer"]
    path = tmp_path / "half.ckpt"
    torch.save(doc, path)
    with pytest.raises(CheckpointError, match="damaged"):
        tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=path, **FAST)


def test_leftover_temporary_files_are_removed(sim, tmp_path):
    path = tmp_path / "fit.ckpt"
    stale = tmp_path / "fit.ckpt.tmp4194303"                 # above Linux's pid_max default: no such process
    stale.write_bytes(b"half a checkpoint")
    tvb_torchfit.fit(sim, fc_of(0), PARAMS, checkpoint=path, **FAST)
    assert path.exists() and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fit.ckpt"]


# ---------------------------------------------------------------------------------------------- degenerate data
def test_validate_records_a_constant_target_and_refuses_a_repeated_seed(sim):
    rep = tvb_torchfit.validate(sim, np.full((N, N), 0.5) + 0.5 * np.eye(N), simulation_length=4000.0,
                                discard_ms=0.0, seeds=(1, 2))
    assert any("constant off the diagonal" in w for w in rep.warnings)
    assert "WARNING" in str(rep)
    with pytest.raises(tvb_torchfit.ParameterError, match=r"seed\(s\) \[1\] listed more than once"):
        tvb_torchfit.validate(sim, fc_of(0), simulation_length=4000.0, discard_ms=0.0, seeds=(1, 1))


def test_fit_refuses_a_constant_target(sim):
    with pytest.raises(tvb_torchfit.ParameterError, match="constant off the diagonal"):
        tvb_torchfit.fit(sim, np.full((N, N), 0.2) + 0.8 * np.eye(N), PARAMS, **FAST)


# ---------------------------------------------------------------------------------------------- numerics
def tvb_H(u, d):
    return u / (1 - np.exp(-d * u))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_H_finite_value_and_gradient_for_large_negative_input(dtype):
    u = torch.tensor([-1e6, -5000.0, -800.0, -300.0, -251.0, -249.0, -10.0, 3.0, 1e4], dtype=dtype, requires_grad=True)
    d = torch.tensor(0.16, dtype=dtype, requires_grad=True)
    h = wong_wang_H(u, d)
    gu, gd = torch.autograd.grad(h.sum(), (u, d))
    assert torch.isfinite(h).all() and torch.isfinite(gu).all() and torch.isfinite(gd).all()
    with np.errstate(over="ignore"):
        ref = tvb_H(u.detach().double().numpy(), 0.16)
    ok = np.isfinite(ref)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(h.detach().double().numpy()[ok], ref[ok], rtol=rtol, atol=torch.finfo(dtype).tiny)


def test_exc_inh_float32_gradients_finite_at_a_i_1000():
    """a_i = 1000, b_i = 0, J_i = 2 (inside TVB's domain): at S_i = 1 the inhibitory input is ~ -700, exp overflows
    float32 in TVB's expression; the port's gradients stay finite."""
    p = {k: torch.tensor([float(np.asarray(getattr(models.ReducedWongWangExcInh(), k))[0])], dtype=torch.float32)
         .reshape(1, 1) for k in ReducedWongWangExcInh.parameter_names}
    p.update(a_i=torch.tensor([[1000.0]]), b_i=torch.tensor([[0.0]]), J_i=torch.tensor([[2.0]], requires_grad=True))
    p["a_i"].requires_grad_(True)
    state = torch.tensor([[[0.0], [0.5], [1.0]], [[1.0], [1.0], [0.0]]], dtype=torch.float32)   # (2, 3, 1)
    dfun = ReducedWongWangExcInh.dfun(state, torch.zeros(3, 1), p)
    g = torch.autograd.grad(dfun.sum(), (p["J_i"], p["a_i"]))
    assert torch.isfinite(dfun).all() and all(torch.isfinite(x).all() for x in g)


def test_nsig_zero_has_a_finite_gradient():
    sim = build(models.ReducedWongWangExcInh(), heun_stochastic(dt=0.5, nsig=0.0), (monitors.Raw(),),
                conn=small_connectivity(N))
    twin = tvb_torchfit.from_tvb(sim)
    nsig = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    twin.set_param("noise.nsig", nsig)
    (_, x), = twin.run(simulation_length=10.0)
    x.sum().backward()
    assert torch.isfinite(nsig.grad).all()
