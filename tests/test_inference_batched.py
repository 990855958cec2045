"""tvb_torchfit.inference.batched.fit_batch and inference.stages.fit_stages_batch: subjects fitted together give
each subject the result of its own ``fit`` / ``fit_stages`` (the unbatched path is the reference): same values (to
round-off), steps, retreats, histories and selected step; a subject whose fit fails gets its error alone."""
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", module="tvb")
from tvb.simulator import models, monitors  # noqa: E402

from tests import tvb_builders as tb  # noqa: E402
from tvb_torchfit.analyzers.critical import critical_coupling  # noqa: E402
from tvb_torchfit.errors import ParameterError  # noqa: E402
from tvb_torchfit.inference.batched import FitJob, fit_batch  # noqa: E402
from tvb_torchfit.inference.fitting import fit  # noqa: E402
from tvb_torchfit.inference.parameters import Param  # noqa: E402
from tvb_torchfit.inference.stages import Stage, fit_stages, fit_stages_batch, with_fic  # noqa: E402
from tvb_torchfit.roundtrip.writeback import apply_params, clone_simulator  # noqa: E402
from tvb_torchfit.simulator.adapter import read_simulator  # noqa: E402

N = 5


def subject(seed: int):
    """A small ExcInh network (its own SC) and a target FC with some structure."""
    sim = tb.build(model=models.ReducedWongWangExcInh(), conn=tb.small_connectivity(N, seed=seed), a=1.0,
                   integrator=tb.heun_stochastic(dt=1.0, nsig=3e-7), mons=(monitors.Bold(period=720.0),))
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((200, N)) + 0.8 * rng.standard_normal((200, 1))
    return sim, np.corrcoef(x.T)


SUBJECTS = [subject(s) for s in (1, 2, 3)]
STAGES = [Stage("global", {"G": {"low": 0.5, "high": 0.95, "relative": "G_c"}}, G=0.8, fic="follow",
                settings=dict(n_steps=6, lr=0.1, stability_margin=0.001)),
          Stage("regional", {"noise.nsig": Param(3e-9, 3e-5, regionwise=True)}, G=0.85, fic="start",
                settings=dict(n_steps=4, lr=0.1, rmse_weight=1.0, stability_margin=0.001))]


def assert_same_history(a, b):
    assert a.provenance["steps_done"] == b.provenance["steps_done"]
    assert a.provenance["retreats"] == b.provenance["retreats"]
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-8)
    for k, traj in a.history["params"].items():
        np.testing.assert_allclose(np.stack(traj), np.stack(b.history["params"][k]), rtol=1e-8)


def assert_same(a, b):
    assert_same_history(a, b)
    assert a.provenance["selected_step"] == b.provenance["selected_step"]
    assert set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-8)
        np.testing.assert_allclose(a.last_iterate.get(k, 0.0), b.last_iterate.get(k, 0.0), rtol=1e-8)
    np.testing.assert_allclose(a.fc, b.fc, rtol=1e-8, atol=1e-12)


def test_fit_stages_batch_equals_fit_stages_of_each_subject():
    alone = [fit_stages(sim, fc, STAGES, progress=False) for sim, fc in SUBJECTS]
    together = fit_stages_batch([s for s, _ in SUBJECTS], [fc for _, fc in SUBJECTS], STAGES, progress=False)
    for a, b in zip(alone, together):
        assert [r.name for r in a] == [r.name for r in b] == ["global", "regional"]
        for ra, rb in zip(a, b):
            assert ra.G_c == pytest.approx(rb.G_c, rel=1e-12)
            assert_same(ra.result, rb.result)
            np.testing.assert_allclose(rb.simulator.model.J_i, ra.simulator.model.J_i, rtol=1e-8)
            np.testing.assert_allclose(rb.simulator.integrator.noise.nsig, ra.simulator.integrator.noise.nsig,
                                       rtol=1e-8)


def test_retreats_are_per_subject():
    """G allowed past G_c with a large learning rate: steps lose the low state and retreat, each subject its own
    (only its own parameters, optimiser state and learning rate go back). Compared: steps, retreats and the whole
    history. (Not the selected step: a retreat recomputes the loss of the last accepted point, so the history holds
    exact ties whose order is round-off.)"""
    settings = dict(method="linear", n_steps=6, lr=0.5, fic_rate=3.0)
    jobs = []
    for sim, fc in SUBJECTS:
        G_c = critical_coupling(read_simulator(sim), 3.0)
        start = with_fic(apply_params(clone_simulator(sim), {"G": np.array([0.9 * G_c])}))
        jobs.append(FitJob(start, fc, {"G": (0.5 * G_c, 1.3 * G_c)}, settings))
    alone = [fit(j.sim, j.target_fc, j.params, progress=False, **j.settings) for j in jobs]
    together = fit_batch(jobs, progress=False)
    retreats = [r.provenance["retreats"] for r in alone]
    assert max(retreats) > 0 and min(retreats) < max(retreats)        # some subjects retreat, not all alike
    for a, b in zip(alone, together):
        assert_same_history(a, b)


def test_a_failing_subject_fails_alone():
    sim, fc = SUBJECTS[1]
    G_c = critical_coupling(read_simulator(sim), 3.0)
    past = with_fic(apply_params(clone_simulator(sim), {"G": np.array([1.5 * G_c])}))     # no stable start
    jobs = [FitJob(sim, fc, {"w_p": (0.5, 2.0)}, dict(method="linear", n_steps=3, lr=0.05)),
            FitJob(past, fc, {"w_p": (0.5, 2.0)}, dict(method="linear", n_steps=3, lr=0.05, fic_rate=3.0)),
            FitJob(sim, fc[:3, :3], {"w_p": (0.5, 2.0)}, dict(method="linear", n_steps=3)),     # bad target
            FitJob(sim, fc, {"w_p": (0.5, 2.0)}, dict(method="twin", n_steps=3))]
    out = fit_batch(jobs, progress=False)
    assert_same(out[0], fit(sim, fc, {"w_p": (0.5, 2.0)}, method="linear", n_steps=3, lr=0.05, progress=False))
    with pytest.raises(ParameterError) as alone:
        fit(past, fc, {"w_p": (0.5, 2.0)}, method="linear", n_steps=3, lr=0.05, fic_rate=3.0, progress=False)
    assert type(out[1]) is type(alone.value) and str(out[1]) == str(alone.value)
    assert isinstance(out[2], ParameterError) and "target" in str(out[2]).lower()
    assert isinstance(out[3], ParameterError) and "method='linear' only" in str(out[3])
