"""Bad input never gives a wrong answer: every public entry point refuses it, before any work, with the package's
own error naming the culprit (argument, setting, TVB attribute or file).

Each case is (the call, the error type, a fragment the message must contain: the culprit's name). Tiny networks
(4 regions) so that the refusals, which come before any simulation, take milliseconds.
"""
import os
import warnings

import numpy as np
import pytest
import torch
from tvb.simulator import models, monitors

import tvb_torchfit
from tvb_torchfit import DataError, ParameterError, preprocessing
from tvb_torchfit.errors import TVBTorchFitError
from tvb_builders import build, heun_stochastic, small_connectivity

N = 4
FAST = dict(n_steps=2, window_trs=2, fc_window_trs=4, batch=1, warmup_ms=0.0, progress=False)
PARAMS = {"G": (0.5, 3.0)}


def stochastic_sim(model=None, mons=None, conn=None, dt=2.0, nsig=1e-4):
    return build(model if model is not None else models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([1.0])),
                 heun_stochastic(dt=dt, nsig=nsig), mons if mons is not None else (monitors.Bold(period=360.0),),
                 conn=conn if conn is not None else small_connectivity(N), a=0.5)


@pytest.fixture(scope="module")
def sim():
    return stochastic_sim()


@pytest.fixture(scope="module")
def target():
    return np.corrcoef(np.random.RandomState(0).randn(N, 200))


@pytest.fixture(scope="module")
def bold():
    return np.random.RandomState(1).randn(60, N)


def refused(call, error, culprit):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, TVBTorchFitError), f"{type(info.value).__name__} is not the package's own error"
    assert culprit in str(info.value), f"{culprit!r} not named in: {info.value}"
    return str(info.value)


def unwritable(tmp_path):
    """A path that cannot be created even by root: below a regular file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return blocker / "sub"


# ---------------------------------------------------------------------------------------------- from_tvb
FROM_TVB = [
    (dict(noise="numpy"), "noise"), (dict(noise=None), "noise"), (dict(noise=1), "noise"),
    (dict(exact="yes"), "exact"), (dict(exact=1), "exact"),
    (dict(batch=2.5), "batch"), (dict(batch=0), "batch"), (dict(batch=-3), "batch"), (dict(batch="2"), "batch"),
    (dict(batch=True), "batch"), (dict(batch=None), "batch"),
    (dict(dtype=torch.float16), "dtype"), (dict(dtype="float16"), "dtype"), (dict(dtype=np.float64), "dtype"),
    (dict(dtype=torch.int64), "dtype"), (dict(dtype=torch.complex128), "dtype"),
    (dict(device="gpu"), "device"), (dict(device="cuda:99"), "device"), (dict(device=0.5), "device"),
    (dict(device="tpu"), "device"),
    (dict(block=0), "block"), (dict(block=2.5), "block"), (dict(block="4"), "block"),
    (dict(seed="abc"), "seed"), (dict(seed=-1), "seed"), (dict(seed=2.5), "seed"), (dict(seed=2 ** 40), "seed"),
    (dict(compile="yes"), "compile"), (dict(compile=None), "compile"),
    (dict(exact=True, dtype=torch.float32), "exact"),
]


@pytest.mark.parametrize("kwargs, culprit", FROM_TVB, ids=[repr(k) for k, _ in FROM_TVB])
def test_from_tvb_options(sim, kwargs, culprit):
    refused(lambda: tvb_torchfit.from_tvb(sim, **kwargs), ParameterError, culprit)


RUN = [
    (dict(simulation_length=-1.0), "simulation_length"), (dict(simulation_length=0.0), "simulation_length"),
    (dict(simulation_length=float("nan")), "simulation_length"),
    (dict(simulation_length=float("inf")), "simulation_length"), (dict(simulation_length="10"), "simulation_length"),
    (dict(simulation_length=[10.0]), "simulation_length"), (dict(simulation_length=1j), "simulation_length"),
    (dict(n_steps=2.5), "n_steps"), (dict(n_steps=-1), "n_steps"), (dict(n_steps="3"), "n_steps"),
    (dict(n_steps=True), "n_steps"), (dict(simulation_length=4.0, n_steps=2), "n_steps"), (dict(), "simulation_length"),
]


@pytest.mark.parametrize("kwargs, culprit", RUN, ids=[repr(k) for k, _ in RUN])
def test_run_arguments(sim, kwargs, culprit):
    twin = tvb_torchfit.from_tvb(sim)
    refused(lambda: twin.run(**kwargs), ParameterError, culprit)


SET_PARAM = [
    ("not_a_param", 1.0, "not_a_param"), (3, 1.0, "3"), ("G", "strong", "G"), ("G", 1j, "G"),
    ("G", np.ones(N + 1), "G"), ("noise.nsig", np.ones((5, N)), "noise.nsig"), ("w", 1.0, "'w'"),
]


@pytest.mark.parametrize("name, value, culprit", SET_PARAM, ids=[f"{n}={v!r}" for n, v, _ in SET_PARAM])
def test_set_param(sim, name, value, culprit):
    twin = tvb_torchfit.from_tvb(sim)
    refused(lambda: twin.set_param(name, value), ParameterError, culprit)


SET_THEN_RUN = [("d_e", 0.0), ("d_i", -1.0), ("tau_e", 0.0), ("tau_i", -5.0), ("G", float("nan")),
                ("noise.nsig", -1e-4), ("J_i", float("inf"))]


@pytest.mark.parametrize("name, value", SET_THEN_RUN, ids=[f"{n}={v}" for n, v in SET_THEN_RUN])
def test_singular_or_nonfinite_values_refused_at_run(sim, name, value):
    twin = tvb_torchfit.from_tvb(sim)
    twin.set_param(name, torch.tensor([value], dtype=torch.float64))
    refused(lambda: twin.run(simulation_length=4.0), ParameterError, name)


def _conn(**changes):
    conn = small_connectivity(N)
    for k, v in changes.items():
        setattr(conn, k, v)
    return conn


def _lengths(value):
    lengths = np.array(small_connectivity(N).tract_lengths)
    lengths[0, 1] = value
    return lengths


SIM_VALUES = [
    ("negative speed", lambda: stochastic_sim(conn=_conn(speed=np.array([-3.0]))), "speed"),
    ("negative tract length", lambda: stochastic_sim(conn=_conn(tract_lengths=_lengths(-5.0))), "tract_lengths"),
    ("d_e = 0", lambda: stochastic_sim(model=models.ReducedWongWangExcInh(d_e=np.array([0.0]))), "d_e"),
    ("d_i < 0", lambda: stochastic_sim(model=models.ReducedWongWangExcInh(d_i=np.array([-0.1]))), "d_i"),
    ("tau_e = 0", lambda: stochastic_sim(model=models.ReducedWongWangExcInh(tau_e=np.array([0.0]))), "tau_e"),
    ("RWW d = 0", lambda: stochastic_sim(model=models.ReducedWongWang(d=np.array([0.0]))), "'d'"),
    ("RWW tau_s = 0", lambda: stochastic_sim(model=models.ReducedWongWang(tau_s=np.array([0.0]))), "tau_s"),
    ("negative nsig", lambda: stochastic_sim(nsig=-1e-4), "nsig"),
    ("SubSample period < dt", lambda: stochastic_sim(mons=(monitors.SubSample(period=0.5),)), "SubSample"),
    ("TemporalAverage period < dt", lambda: stochastic_sim(mons=(monitors.TemporalAverage(period=0.5),)),
     "TemporalAverage"),
]


@pytest.mark.parametrize("make, culprit", [c[1:] for c in SIM_VALUES], ids=[c[0] for c in SIM_VALUES])
def test_simulator_values(make, culprit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = make()
    refused(lambda: tvb_torchfit.from_tvb(bad), ParameterError, culprit)


# ---------------------------------------------------------------------------------------------- fit
FIT_SETTINGS = [
    ("n_steps", 2.5), ("n_steps", 0), ("n_steps", "3"), ("n_steps", True), ("window_trs", 0), ("window_trs", 1.5),
    ("fc_window_trs", 4.0), ("batch", 0), ("batch", "2"), ("lr", float("inf")), ("lr", float("nan")),
    ("lr", -0.1), ("lr", 0.0), ("lr", "0.1"), ("optimizer", "Adamm"), ("optimizer", 3), ("optimizer", "Optimizer"),
    ("optimizer", "lr_scheduler"), ("schedule", "linear"), ("schedule", 1), ("loss", "mse"), ("loss", None),
    ("rmse_weight", -1.0), ("rmse_weight", float("nan")), ("rmse_weight", float("inf")), ("prior_weight", -1.0),
    ("prior_weight", float("inf")), ("warmup_ms", -5.0), ("warmup_ms", float("nan")), ("warmup_ms", "x"),
    ("initial_state", "high"), ("low_value", 1.5), ("low_value", -0.1), ("low_value", float("nan")),
    ("seed", "abc"), ("seed", -1), ("seed", 2.5), ("seed", 2 ** 40), ("dtype", "float16"), ("dtype", torch.float64),
    ("compile", "yes"), ("compile", 1), ("average_last", 0.0), ("average_last", 1.5), ("average_last", float("nan")),
    ("patience", 0), ("patience", 2.5), ("data_trs", 0), ("fic_rate", -3.0), ("fic_rate", float("nan")),
    ("fic_rate", float("inf")), ("stability_margin", -1.0), ("stability_margin", float("nan")), ("method", "exact"),
    ("observation", "eeg"), ("balloon_period_ms", 0.0), ("balloon_period_ms", float("inf")), ("fcd_weight", -1.0),
    ("fcd_weight", float("nan")), ("fcd_window_trs", 0), ("fcd_window_trs", 2.5), ("fcd_step_trs", 0),
    ("bifurcation_weight", -1.0), ("bifurcation_target", float("nan")), ("bifurcation_width", float("inf")),
]


@pytest.mark.parametrize("name, value", FIT_SETTINGS, ids=[f"{n}={v!r}" for n, v in FIT_SETTINGS])
def test_fit_settings(sim, target, name, value):
    refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, **dict(FAST, **{name: value})), ParameterError, name)


FIT_PARAMS = [
    (["G"], "params"), ("G", "params"), ({"G": ("low", 3.0)}, "low"), ({"G": (0.5, float("inf"))}, "high"),
    ({"G": {"low": 0.5, "hi": 3.0}}, "'G'"), ({"G": {"low": 0.5}}, "'G'"),
    ({"G": tvb_torchfit.Param(0.5, 3.0, regionwise="yes")}, "regionwise"),
    ({"G": tvb_torchfit.Param(0.5, 3.0, log=1)}, "log"),
    ({"G": tvb_torchfit.Param(0.5, 3.0, prior=(1.0, float("inf")))}, "prior"),
    ({"G": tvb_torchfit.Param(0.5, 3.0, prior=(1.0, 0.0))}, "prior"), ({"G": (1.0, 1.0)}, "'G'"),
]


@pytest.mark.parametrize("params, culprit", FIT_PARAMS, ids=[repr(p) for p, _ in FIT_PARAMS])
def test_fit_params(sim, target, params, culprit):
    refused(lambda: tvb_torchfit.fit(sim, target, params, **FAST), ParameterError, culprit)


FIT_ARGS = [
    (dict(checkpoint_every=0), "checkpoint_every"), (dict(checkpoint_every=1.5), "checkpoint_every"),
    (dict(resume="yes"), "resume"), (dict(resume="restart"), "resume"), (dict(progress=2), "progress"),
    (dict(checkpoint=3), "checkpoint"),
]


@pytest.mark.parametrize("kwargs, culprit", FIT_ARGS, ids=[repr(k) for k, _ in FIT_ARGS])
def test_fit_arguments(sim, target, kwargs, culprit):
    refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, **dict(FAST, **kwargs)), ParameterError, culprit)


def test_fit_checkpoint_paths_refused_up_front(sim, target, tmp_path, monkeypatch):
    """Unwritable or folder checkpoint paths are refused before the fit starts (no step is taken)."""
    from tvb_torchfit.inference import estimators
    monkeypatch.setattr(estimators.TwinEstimator, "warm_up", lambda *a: pytest.fail("work started"))
    refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, checkpoint=unwritable(tmp_path) / "x.ckpt", **FAST),
            ParameterError, "checkpoint")
    refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, checkpoint=tmp_path, **FAST), ParameterError, "folder")


def _fisher_z(fc):
    z = np.arctanh(np.clip(fc, -0.999, 0.999))
    np.fill_diagonal(z, 5.0)
    return z


TARGETS = [
    ("constant", lambda t: np.full((N, N), 0.3) + 0.7 * np.eye(N), "constant"),
    ("asymmetric", lambda t: t + np.triu(np.full((N, N), 0.1), 1), "symmetric"),
    ("zero diagonal", lambda t: t - np.eye(N), "diagonal"),
    ("Fisher z", _fisher_z, "diagonal"),
    ("out of range", lambda t: np.where(np.eye(N) > 0, 1.0, 1.5), "[-1, 1]"),
    ("list", lambda t: t.tolist(), "numpy array"),
]


@pytest.mark.parametrize("make, culprit", [c[1:] for c in TARGETS], ids=[c[0] for c in TARGETS])
def test_fit_target_fc(sim, target, make, culprit):
    refused(lambda: tvb_torchfit.fit(sim, make(target), PARAMS, **FAST), ParameterError, culprit)


@pytest.mark.parametrize("make, culprit", [c[1:] for c in TARGETS[1:5]], ids=[c[0] for c in TARGETS[1:5]])
def test_validate_checks_the_target_as_strictly_as_fit(sim, target, make, culprit):
    msg = refused(lambda: tvb_torchfit.validate(sim, make(target), simulation_length=4000.0), ParameterError, culprit)
    assert "target_fc" in msg


def test_fit_and_validate_refuse_a_bold_period_in_seconds(target):
    sim = stochastic_sim(mons=(monitors.Bold(period=8.0),), dt=0.5)
    refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, **FAST), ParameterError, "period")
    refused(lambda: tvb_torchfit.validate(sim, target, simulation_length=4000.0), ParameterError, "period")


FIT_BOLD = [
    ("constant region", lambda b: np.column_stack([b[:, :3], np.full(len(b), 2.0)]), "region(s) [3]"),
    ("1e200 scale", lambda b: b * 1e200, "absurd scale"),
    ("1e-200 scale", lambda b: b * 1e-200, "absurd scale"),
]


@pytest.mark.parametrize("make, culprit", [c[1:] for c in FIT_BOLD], ids=[c[0] for c in FIT_BOLD])
def test_fit_target_bold(sim, target, bold, make, culprit):
    settings = dict(FAST, fcd_weight=1.0, fcd_window_trs=2, fcd_step_trs=1)
    msg = refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, target_bold=make(bold), **settings),
                  ParameterError, culprit)
    assert "target_bold" in msg


# ---------------------------------------------------------------------------------------------- validate
VALIDATE = [
    (dict(seeds=(1, 1)), "seeds"), (dict(seeds=(3, 4, 3)), "seeds"), (dict(seeds=("abc",)), "seeds"),
    (dict(seeds=(-1,)), "seeds"), (dict(seeds=(1.5,)), "seeds"), (dict(seeds=7), "seeds"), (dict(seeds="12"), "seeds"),
    (dict(seeds=()), "seeds"), (dict(simulation_length=float("inf")), "simulation_length"),
    (dict(simulation_length=-1.0), "simulation_length"), (dict(simulation_length="1e4"), "simulation_length"),
    (dict(discard_ms=float("nan")), "discard_ms"), (dict(discard_ms=-1.0), "discard_ms"),
    (dict(fcd_window_ms=0.0), "fcd_window_ms"), (dict(fcd_step_ms=float("inf")), "fcd_step_ms"),
    (dict(processes=0), "processes"), (dict(processes=1.5), "processes"), (dict(history=[1, 2]), "history"),
    (dict(torch_fc=np.ones((N, N)) * 2), "torch_fc"),
]


@pytest.mark.parametrize("kwargs, culprit", VALIDATE, ids=[repr(k)[:60] for k, _ in VALIDATE])
def test_validate_arguments(sim, target, kwargs, culprit):
    kwargs = dict(dict(simulation_length=4000.0, discard_ms=0.0), **kwargs)
    refused(lambda: tvb_torchfit.validate(sim, target, **kwargs), ParameterError, culprit)


@pytest.mark.parametrize("make, culprit", [c[1:] for c in FIT_BOLD], ids=[c[0] for c in FIT_BOLD])
def test_validate_target_bold(sim, target, bold, make, culprit):
    refused(lambda: tvb_torchfit.validate(sim, target, simulation_length=4000.0, discard_ms=0.0,
                                          target_bold=make(bold)),
            ParameterError, culprit)


def test_validate_out_dir_refused_before_the_tvb_runs(sim, target, tmp_path, monkeypatch):
    from tvb_torchfit.roundtrip import validation
    monkeypatch.setattr(validation, "run_tvb_bold", lambda *a, **k: pytest.fail("TVB ran"))
    refused(lambda: tvb_torchfit.validate(sim, target, simulation_length=4000.0, discard_ms=0.0,
                                          out_dir=unwritable(tmp_path)),
            ParameterError, "out_dir")


def test_compare_arguments(sim):
    refused(lambda: tvb_torchfit.compare(sim, simulation_length=-5.0), ParameterError, "simulation_length")
    refused(lambda: tvb_torchfit.compare(sim, simulation_length=10.0, exact="no"), ParameterError, "exact")
    refused(lambda: tvb_torchfit.compare(sim, simulation_length=10.0, noise="np"), ParameterError, "noise")


# ---------------------------------------------------------------------------------------------- loaders
LOAD_BOLD = [
    (dict(tr=-1.0), "tr"), (dict(tr=float("nan")), "tr"), (dict(tr=float("inf")), "tr"), (dict(tr="720"), "tr"),
    (dict(tr=True), "tr"), (dict(tr=0.0), "tr"), (dict(orientation="sideways"), "orientation"),
]


@pytest.mark.parametrize("kwargs, culprit", LOAD_BOLD, ids=[repr(k) for k, _ in LOAD_BOLD])
def test_load_bold_arguments(bold, kwargs, culprit):
    refused(lambda: tvb_torchfit.load_bold(bold, **kwargs), DataError, culprit)


@pytest.mark.parametrize("make, culprit", [c[1:] for c in FIT_BOLD], ids=[c[0] for c in FIT_BOLD])
def test_load_bold_degenerate(bold, make, culprit):
    refused(lambda: tvb_torchfit.load_bold(make(bold), orientation="time_regions"), DataError, culprit)


def test_degenerate_bold_file_is_named(tmp_path, bold):
    path = tmp_path / "flat.npy"
    np.save(path, np.column_stack([bold[:, :3], np.zeros(len(bold))]))
    refused(lambda: tvb_torchfit.load_bold(path, orientation="time_regions"), DataError, "flat.npy")


def _sc():
    c = small_connectivity(N)
    return np.array(c.weights), np.array(c.tract_lengths)


LOAD_CONN = [
    (dict(speed=-3.0), "speed"), (dict(speed=float("nan")), "speed"), (dict(speed="fast"), "speed"),
    (dict(speed=0.0), "speed"),
]


@pytest.mark.parametrize("kwargs, culprit", LOAD_CONN, ids=[repr(k) for k, _ in LOAD_CONN])
def test_load_connectivity_arguments(kwargs, culprit):
    w, lengths = _sc()
    refused(lambda: tvb_torchfit.load_connectivity(w, lengths, **kwargs), DataError, culprit)


def test_load_fc_and_subject(tmp_path, bold):
    w, lengths = _sc()
    refused(lambda: tvb_torchfit.load_fc(np.full((N, N), 0.4) + 0.6 * np.eye(N)), DataError, "constant")
    refused(lambda: tvb_torchfit.load_subject(w, tract_lengths=lengths, fc=np.eye(N) * 0.5 + 0.5, tr=-2.0),
            DataError, "constant")
    refused(lambda: tvb_torchfit.load_subject(w, tract_lengths=lengths, fc=np.corrcoef(bold.T), tr=-2.0),
            DataError, "tr")
    refused(lambda: tvb_torchfit.load_subject(w, bold * 1e200, tract_lengths=lengths, tr=720.0), DataError, "absurd")


BANDPASS = [(dict(tr=-1.0), "tr"), (dict(tr="fast"), "tr"), (dict(low="a"), "low"), (dict(high=-0.1), "high"),
            (dict(low=float("nan")), "low")]


@pytest.mark.parametrize("kwargs, culprit", BANDPASS, ids=[repr(k) for k, _ in BANDPASS])
def test_bandpass_arguments(bold, kwargs, culprit):
    kwargs = dict(dict(tr=720.0), **kwargs)
    refused(lambda: preprocessing.bandpass(bold, **kwargs), DataError, culprit)


def test_hcp_loader_arguments():
    refused(lambda: tvb_torchfit.load_hcp_subject(None), DataError, "subject_id")
    refused(lambda: tvb_torchfit.load_hcp_subject("101309", bandpas=(0.01, 0.1)), DataError, "bandpas")


# ---------------------------------------------------------------------------------------------- the TR rule
def test_a_tr_below_20_is_read_as_seconds_with_a_warning_everywhere(bold):
    with pytest.warns(UserWarning, match="read as seconds"):
        assert tvb_torchfit.load_bold(bold, tr=0.72, orientation="time_regions").tr == 720.0
    with pytest.warns(UserWarning, match="read as seconds"):
        seconds = preprocessing.bandpass(bold, tr=0.72)
    np.testing.assert_array_equal(seconds, preprocessing.bandpass(bold, tr=720.0))
    w, lengths = _sc()
    with pytest.warns(UserWarning, match="read as seconds"):
        subject = tvb_torchfit.load_subject(w, bold, tract_lengths=lengths, tr=2.0)
    assert subject.tr == 2000.0


# ---------------------------------------------------------------------------------------------- FitResult
def test_fit_result_files(tmp_path):
    refused(lambda: tvb_torchfit.FitResult.load(tmp_path / "none"), DataError, "fit.json")
    (tmp_path / "fit.json").write_text("{not json")
    (tmp_path / "history.npz").write_bytes(b"PK\x03\x04 truncated")
    refused(lambda: tvb_torchfit.FitResult.load(tmp_path), DataError, "fit.json")
    (tmp_path / "fit.json").write_text('{"params": {}, "start": {}, "last_iterate": {}, "config": {}, '
                                       '"provenance": {}}')
    refused(lambda: tvb_torchfit.FitResult.load(tmp_path), DataError, "history.npz")
    result = tvb_torchfit.FitResult(params={}, history={"loss": [], "fc_corr": [], "params": {}}, config={})
    refused(lambda: result.save(unwritable(tmp_path)), ParameterError, "path")


def test_cli_arguments(capsys):
    from tvb_torchfit import cli
    for argv in (["compare", "--speed", "inf"], ["compare", "--nsig", "-1"], ["compare", "--seed", "-4"],
                 ["compare", "--dt", "nan"], ["demo", "--steps", "2.5"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        assert argv[1] in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- found by the probe
NOT_A_SIMULATOR = [
    ("from_tvb", lambda: tvb_torchfit.from_tvb(None)),
    ("fit", lambda: tvb_torchfit.fit(None, np.eye(N), PARAMS, **FAST)),
    ("validate", lambda: tvb_torchfit.validate("sim", np.eye(N), simulation_length=4000.0)),
    ("compare", lambda: tvb_torchfit.compare(42, simulation_length=10.0)),
]


@pytest.mark.parametrize("call", [c[1] for c in NOT_A_SIMULATOR], ids=[c[0] for c in NOT_A_SIMULATOR])
def test_not_a_simulator(call):
    refused(call, tvb_torchfit.UnsupportedTVBObject, "sim")


def test_bounds_outside_the_domain_and_writeback_of_singular_values(sim, target, bold):
    refused(lambda: tvb_torchfit.fit(sim, target, {"d_e": (-0.1, 0.3)}, **FAST), ParameterError, "d_e")
    refused(lambda: tvb_torchfit.fit(sim, target, {"noise.nsig": tvb_torchfit.Param(-1e-3, 1e-3, log=False)},
                                     **FAST), ParameterError, "noise.nsig")
    refused(lambda: tvb_torchfit.apply_params(tvb_torchfit.clone_simulator(sim), {"d_e": np.array([0.0])}),
            ParameterError, "d_e")
    refused(lambda: tvb_torchfit.fit(sim, target, PARAMS, target_bold="bold.npy", fcd_weight=1.0, fcd_window_trs=2,
                                     fcd_step_trs=1, **FAST), ParameterError, "target_bold")
