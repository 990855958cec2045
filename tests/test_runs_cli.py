"""tvb-torchfit fit / validate / simulate end to end on a tiny own-data run (5 regions, CSV/NPY files), the rerun
with the same seed, resuming after an interruption, and load_fitted_simulator against the validation's TVB run."""
import json

import numpy as np
import pytest

import tvb_torchfit
from tests import runs_helpers as rh
from tvb_torchfit import cli, stats
from tvb_torchfit.inference import loop
from tvb_torchfit.runs.config import load_config
from tvb_torchfit.runs.pipeline import run_fit

QUICK = ["validation.length=20000.0", "validation.seeds=[11]"]


def fit_args(cfg, out, *extra):
    sets = [a for s in QUICK for a in ("--set", s)]
    return ["fit", str(cfg), "--out", str(out), "--quiet", *sets, *extra]


def values(run_dir):
    out = {}
    for stage in ("global", "maps"):
        with np.load(run_dir / "stages" / stage / "values.npz") as z:
            out.update({f"{stage}/{k}": z[k] for k in z.files})
    return out


def _fcd_ks_reference(out, data) -> float:
    """KS between the training and test halves' FCD values, written out with numpy (sliding windows, np.corrcoef)
    and scipy's ks_2samp, with the run's validation windows (ms) at its TR."""
    from scipy.stats import ks_2samp
    cfg = json.loads((out / "config.json").read_text())["validation"]
    tr = json.loads((out / "data.json").read_text())["tr_ms"]
    window, step = int(round(cfg["fcd_window"] / tr)), int(round(cfg["fcd_step"] / tr))

    def values(bold):
        iu = np.triu_indices(bold.shape[1], 1)
        ups = [np.corrcoef(bold[s:s + window].T)[iu] for s in range(0, bold.shape[0] - window + 1, step)]
        return np.corrcoef(np.array(ups))[np.triu_indices(len(ups), 1)]
    return ks_2samp(values(data["train_bold"]), values(data["test_bold"])).statistic


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = rh.write_data(tmp_path_factory.mktemp("data"))
    cfg = rh.write_config(folder)
    out = folder / "out"
    assert cli.main(fit_args(cfg, out)) == 0
    return cfg, out


def test_fit_writes_the_run_folder(run):
    _, out = run
    for name in ("config.json", "versions.json", "data.json", "data.npz", "report.json", "report.md",
                 "simulator.json", "simulator.npz"):
        assert (out / name).is_file(), name
    for stage in ("global", "maps"):
        d = out / "stages" / stage
        for name in ("fit.json", "history.npz", "values.json", "values.npz", "simulator.json", "done.json",
                     "validation/report.json", "validation/validation.png"):
            assert (d / name).is_file(), f"{stage}/{name}"
    versions = json.loads((out / "versions.json").read_text())
    assert {"tvb_torchfit", "tvb-library", "torch", "numpy"} <= set(versions)
    report = json.loads((out / "report.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert set(rows) == {"global", "maps"}
    data = np.load(out / "data.npz")
    ceiling = float(stats.fc_corr(data["train_fc"], data["test_fc"]))
    for r in rows.values():
        assert r["ceiling_r"] == pytest.approx(ceiling)
        assert -1 <= r["in_sample_r"] <= 1 and -1 <= r["held_out_r"] <= 1 and r["fcd_ks"] is not None
        with np.load(out / "stages" / r["stage"] / "validation" / "report.npz") as z:
            all_runs = z["tvb_fc_per_seed"].mean(axis=0)
        assert r["tvb_runs"] == 1                        # QUICK: one seed (two: tests/test_validation.py)
        iu = np.triu_indices(rh.N, 1)
        for key, half in (("held_out_r_all_runs", "test_fc"), ("in_sample_r_all_runs", "train_fc")):
            assert r[key] == pytest.approx(np.corrcoef(all_runs[iu], data[half][iu])[0, 1], abs=1e-7), key
    fcd_ceiling = _fcd_ks_reference(out, data)
    assert all(r["fcd_ks_ceiling"] == pytest.approx(fcd_ceiling, abs=1e-6) for r in rows.values())
    md = (out / "report.md").read_text()
    assert "FCD KS ceiling" in md
    assert "r held out (test FC)" in md and "r held out, FC of all runs" in md and "ceiling r" in md
    maps = json.loads((out / "stages" / "maps" / "values.json").read_text())
    assert len(maps["coefficients"]["J_i"]) == 3 and len(maps["params"]["J_i"]) == rh.N
    assert maps["coefficient_names"]["J_i"] == ["intercept", "myelin", "fc_gradient"]
    glob = json.loads((out / "stages" / "global" / "values.json").read_text())
    assert 0.5 * glob["G_c"] < glob["params"]["G"][0] < 0.95 * glob["G_c"]


def test_load_fitted_simulator_runs_the_validation_run_bitwise(run, tmp_path):
    """`simulate` (load_fitted_simulator + TVB) with the validation's seed gives exactly the validation's FC."""
    _, out = run
    sim = tvb_torchfit.load_fitted_simulator(out)
    assert type(sim).__name__ == "Simulator"
    fitted = json.loads((out / "stages" / "maps" / "values.json").read_text())["params"]["J_i"]
    np.testing.assert_array_equal(np.ravel(sim.model.J_i), fitted)
    bold_file = tmp_path / "bold.npy"
    assert cli.main(["simulate", str(out), "--length", "20000", "--seed", "11", "--out", str(bold_file), "--quiet"]) == 0
    bold = np.load(bold_file)
    rep = json.loads((out / "stages" / "maps" / "validation" / "report.json").read_text())["report"]
    fc = np.corrcoef(bold[rep["discard_samples"]:].T)
    with np.load(out / "stages" / "maps" / "validation" / "report.npz") as z:
        np.testing.assert_array_equal(fc, z["tvb_fc_per_seed"][0])
    csv = tmp_path / "bold.csv"
    assert cli.main(["simulate", str(out), "--length", "3000", "--seed", "11", "--out", str(csv), "--quiet"]) == 0
    assert np.loadtxt(csv, delimiter=",").shape[1] == rh.N


def test_validate_again_gives_the_same_report(run):
    _, out = run
    before = json.loads((out / "report.json").read_text())["rows"]
    assert cli.main(["validate", str(out), "--force", "--quiet"]) == 0
    after = json.loads((out / "report.json").read_text())["rows"]
    for a, b in zip(before, after):
        assert a["held_out_r"] == b["held_out_r"] and a["in_sample_r"] == b["in_sample_r"]


def test_rerun_with_the_same_seed_gives_identical_values(run, tmp_path):
    """A run and its rerun, as a user runs them: the same command, each in a new process. (Runs inside one
    process differed in the last bit while the map coefficients' start came from LAPACK's gelsy, whose result
    depended on the heap; tests/test_param_maps.py guards the fix.)"""
    import os
    import subprocess
    import sys
    cfg, _ = run
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + sys.path))
    for name in ("first", "again"):
        done = subprocess.run([sys.executable, "-m", "tvb_torchfit.cli"] + fit_args(cfg, tmp_path / name,
                                                                                     "--no-validate"),
                              capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = values(tmp_path / "first"), values(tmp_path / "again")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_after_an_interruption_between_and_within_stages(run, tmp_path, monkeypatch):
    """Interrupted after the first stage (an exception from the stage callback), then inside the second stage
    (Ctrl-C at its second optimiser step): each rerun keeps what was done and ends at the uninterrupted values."""
    cfg_path, out = run
    cfg = load_config(cfg_path, QUICK)
    resumed = tmp_path / "resumed"

    def stop_after_global(rec):
        if rec.name == "global":
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError, match="interrupted"):
        run_fit(cfg, resumed, progress=False, validate_after=False, on_stage=stop_after_global, log=lambda m: None)
    assert (resumed / "stages" / "global" / "done.json").is_file()
    assert not (resumed / "stages" / "maps").exists()

    real_step, calls = loop.optimiser_step, {"n": 0}

    def ctrl_c_at_second_step(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_step(*args)
    monkeypatch.setattr(loop, "optimiser_step", ctrl_c_at_second_step)
    with pytest.raises(KeyboardInterrupt):
        run_fit(cfg, resumed, progress=False, validate_after=False, log=lambda m: None)
    monkeypatch.setattr(loop, "optimiser_step", real_step)
    assert (resumed / "checkpoints" / "maps.ckpt").is_file()
    assert not (resumed / "stages" / "maps" / "done.json").exists()
    run_fit(cfg, resumed, progress=False, validate_after=False, log=lambda m: None)
    a, b = values(out), values(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_folder_of_another_config_is_refused(run, capsys):
    cfg, out = run
    assert cli.main(fit_args(cfg, out, "--set", "run.seed=4")) == 2
    assert "another configuration" in capsys.readouterr().err


def test_help_states_units(capsys):
    for cmd in (["fit", "--help"], ["simulate", "--help"], ["--help"]):
        with pytest.raises(SystemExit):
            cli.main(cmd)
    text = capsys.readouterr().out
    assert "ms" in text and "--length MS" in text
