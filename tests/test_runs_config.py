"""tvb_torchfit.runs.config and checks: the resolved config round trip, --set overrides, the TR rule, and bad
configs refused before any work, each naming the key and the file."""
import json
import textwrap

import numpy as np
import pytest

from tests import runs_helpers as rh
from tvb_torchfit import cli
from tvb_torchfit.errors import ConfigError, TVBTorchFitError
from tvb_torchfit.runs import pipeline
from tvb_torchfit.runs.config import check_tr_ms, config_to_dict, load_config


@pytest.fixture()
def folder(tmp_path):
    return rh.write_data(tmp_path)


def test_resolved_config_reads_back_as_the_same_run(folder):
    cfg = load_config(rh.write_config(folder), ["stages.maps.fit.lr=0.02"])
    doc = config_to_dict(cfg)
    path = folder / "resolved.json"
    path.write_text(json.dumps(doc))
    again = load_config(path)
    assert config_to_dict(again) == doc
    maps = {"maps.J_i": np.ones((2, rh.N))}
    assert repr(pipeline.to_stages(again, maps)) == repr(pipeline.to_stages(cfg, maps))
    assert doc["stages"][1]["fit"]["lr"] == 0.02
    assert doc["data"]["bold"] == str(folder / "bold.npy")                  # paths resolved against the file
    assert doc["model"]["params"] == {"w_p": 0.8}                          # from defaults.toml


def test_overrides_by_index_and_name_with_toml_values(folder):
    cfg = load_config(rh.write_config(folder), ["stages.0.fit.n_steps=7", "validation.seeds=[1, 2, 3]",
                                                "run.name=other", "stages.global.params.G.high=0.9"])
    assert cfg.stages[0].fit.n_steps == 7 and cfg.validation.seeds == [1, 2, 3] and cfg.run.name == "other"
    assert cfg.stages[0].params["G"].high == 0.9


def test_override_of_a_quoted_key_with_dots(folder):
    """A parameter name with a dot in it ("noise.nsig", "coupling.a") is one part of the dotted key when quoted."""
    cfg = load_config(rh.write_config(folder), ['stages.global.params."coupling.a"={low=0.5, high=2.0}'])
    assert cfg.stages[0].params["coupling.a"].low == 0.5 and cfg.stages[0].params["coupling.a"].high == 2.0
    with pytest.raises(ConfigError, match="not a dotted TOML key"):
        load_config(rh.write_config(folder), ['stages..fit.n_steps=3'])


def test_default_recipe_comes_from_defaults_toml(folder):
    text = rh.CONFIG.split("[[stages]]")[0]                  # no stages: the default recipe
    cfg = load_config(rh.write_config(folder, text))
    import pathlib, tomllib
    import tvb_torchfit.runs
    defaults = tomllib.loads((pathlib.Path(tvb_torchfit.runs.__file__).parent / "defaults.toml").read_text())
    assert [s.name for s in cfg.stages] == [s["name"] for s in defaults["stages"]]
    for stage, default in zip(cfg.stages, defaults["stages"]):
        for name, param in default["params"].items():
            assert stage.params[name].low == param["low"] and stage.params[name].high == param["high"]
            assert stage.params[name].prior == (tuple(param["prior"]) if "prior" in param else None)


def test_the_tr_rule():
    assert check_tr_ms(720.0) == 720.0
    with pytest.warns(UserWarning, match="read as seconds"):
        assert check_tr_ms(0.72, "data.tr") == pytest.approx(720.0)
    with pytest.raises(ConfigError, match="data.tr"):
        check_tr_ms(-1.0, "data.tr")


def _replace(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


BASE = textwrap.dedent(rh.CONFIG)
BAD = [
    ("unknown top-level key", BASE + "\n[extra]\nx = 1\n", "extra"),
    ("unknown key in a section", _replace(BASE, "seed = 3", "seed = 3\nsed = 4"), "run.sed"),
    ("wrong type", _replace(BASE, "seed = 3", 'seed = "three"'), "run.seed"),
    ("missing BOLD file", _replace(BASE, 'bold = "bold.npy"', 'bold = "nothere.npy"'), "data.bold"),
    ("missing SC file", _replace(BASE, 'weights = "sc.csv"', 'weights = "nosc.csv"'), "data.weights"),
    ("TR negative", _replace(BASE, "tr = 720.0", "tr = -720.0"), "data.tr"),
    ("TR missing", _replace(BASE, "tr = 720.0", ""), "data.tr"),
    ("parameter the model lacks", _replace(BASE, "[stages.params.G]", "[stages.params.G_x]"), "stages.0.params.G_x"),
    ("fixed parameter the model lacks", BASE + "\n[model.params]\nw_q = 1.0\n", "model.params.w_q"),
    ("bounds exclude the start", BASE.replace("[[stages]]\nname = \"maps\"", "[[stages]]\nname = \"wp\"\n"
                                              "[stages.params.w_p]\nlow = 0.9\nhigh = 1.2\n\n[[stages]]\n"
                                              "name = \"maps\""), "stages.1.params.w_p.low"),
    ("inverted bounds", _replace(BASE, "low = 0.5\nhigh = 0.95", "low = 0.95\nhigh = 0.5"), "stages.0.params.G.low"),
    ("unknown method", _replace(BASE, 'fic = "follow"', 'fic = "follow"\nmethod = "adjoint"'), "stages.0.method"),
    ("unknown fic mode", _replace(BASE, 'fic = "follow"', 'fic = "always"'), "stages.0.fic"),
    ("fit setting out of range", _replace(BASE, "n_steps = 3", "n_steps = 0"), "stages.0.fit"),
    ("unknown fit setting", _replace(BASE, "n_steps = 3", "n_steps = 3\nnsteps = 4"), "stages.0.fit.nsteps"),
    ("J_i fitted while it follows FIC", _replace(BASE, "[stages.params.G]", "[stages.params.J_i]\nlow = 0.1\n"
                                                 "high = 3.0\n[stages.params.G]"), "stages.0.params.J_i"),
    ("missing map file", _replace(BASE, '"myelin.csv"', '"nomap.csv"'), "stages.1.params.J_i.maps.0"),
    ("duplicate stage names", _replace(BASE, 'name = "maps"', 'name = "global"'), "stages.1.name"),
    ("session split without a second session", _replace(BASE, "[validation]", '[validation]\nsplit = "session"'),
     "validation.split"),
    ("unknown split", _replace(BASE, "[validation]", '[validation]\nsplit = "thirds"'), "validation.split"),
    ("validation of an unknown stage", _replace(BASE, "[validation]", '[validation]\nstages = ["nope"]'),
     "validation.stages.0"),
    ("discard longer than the run", _replace(BASE, "discard = 5000.0", "discard = 50000.0"), "validation.discard"),
    ("repeated seeds", _replace(BASE, "seeds = [11, 12]", "seeds = [11, 11]"), "validation.seeds"),
    ("unknown model", BASE + '\n[model]\nname = "Kuramoto"\n', "model.name"),
    ("dt not dividing the TR", BASE + "\n[integrator]\ndt = 0.7\n", "integrator.dt"),
    ("GPU device", _replace(BASE, "seed = 3", 'seed = 3\ndevice = "cuda"'), "run.device"),
    ("bad dtype", _replace(BASE, "seed = 3", 'seed = 3\ndtype = "float16"'), "run.dtype"),
    ("two data sources", _replace(BASE, 'weights = "sc.csv"', 'weights = "sc.csv"\nhcp = "101309"'), "data.hcp"),
    ("prior mean word", _replace(BASE, 'prior = ["start", 0.3]', 'prior = ["fic", 0.3]'), "stages.1.params.J_i.prior"),
    ("negative speed", _replace(BASE, "tr = 720.0", "tr = 720.0\nspeed = -3.0"), "data.speed"),
    ("bandpass inverted", _replace(BASE, "homotopic = 0.0", "homotopic = 0.0\nbandpass = [0.1, 0.01]"),
     "preprocessing.bandpass"),
    ("not TOML", "[run\nname = 1", "TOML"),
    ("unknown HRF kernel", BASE + '\n[monitor]\nhrf_kernel = "Glover"\n', "monitor.hrf_kernel"),
    ("FCD term with the Bold monitor off the TR", _replace(_replace(BASE, 'name = "global"', 'name = "global"\n'
                                                                     'method = "twin"'), "stability_margin = 0.001",
                                                            "fcd_weight = 1.0") + "\n[monitor]\nperiod = 360.0\n",
     "monitor.period"),
    ("LBFGS under a cosine schedule", _replace(BASE, "n_steps = 3", 'n_steps = 3\noptimizer = "LBFGS"\n'
                                               'schedule = "cosine"'), "stages.0.fit"),
]


@pytest.mark.parametrize("what, text, key", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_naming_key_and_file(folder, what, text, key):
    path = rh.write_config(folder, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert key in msg, msg
    assert isinstance(err.value, TVBTorchFitError)


def test_bad_override_and_cli_exit_code(folder, capsys):
    path = rh.write_config(folder)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["validation.length"])
    with pytest.raises(ConfigError, match="no entry 'nope'"):
        load_config(path, ["stages.nope.fit.lr=0.1"])
    assert cli.main(["fit", str(path), "--set", "validation.length=-5", "--out", str(folder / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "validation.length" in err and str(path) in err
    assert not (folder / "o").exists()                      # refused before any work


@pytest.mark.parametrize("kernel", ["FirstOrderVolterra", "MixtureOfGammas"])
def test_hrf_kernel_reaches_tvb_and_round_trips(folder, tmp_path, kernel):
    """monitor.hrf_kernel builds TVB's Bold monitor with that tvb.datatypes.equations kernel; the run folder's
    simulator file rebuilds it (the kernel TVB computes from it is the same array)."""
    from tvb.datatypes import equations
    from tvb_torchfit.roundtrip.tvbfile import load_simulator, save_simulator
    from tvb_torchfit.runs.inputs import build_simulator, load_inputs
    cfg = load_config(rh.write_config(folder), [f'monitor.hrf_kernel="{kernel}"'])
    sim = build_simulator(cfg, load_inputs(cfg, "x"))
    bold = sim.monitors[0]
    assert type(bold.hrf_kernel) is getattr(equations, kernel)
    save_simulator(sim, tmp_path)
    again = load_simulator(tmp_path)
    assert type(again.monitors[0].hrf_kernel) is getattr(equations, kernel)
    np.testing.assert_array_equal(again.monitors[0].hemodynamic_response_function, bold.hemodynamic_response_function)


def test_a_stage_fitted_by_lbfgs_is_not_batched(folder):
    """The cohort batches linear-only runs (``pipeline.linear_only``); an LBFGS stage evaluates its own line search's
    trial points, which a batched pass cannot: such a run is fitted on its own."""
    path = rh.write_config(folder)
    assert pipeline.linear_only(load_config(path, ['stages.0.method="linear"', 'stages.1.method="linear"']))
    cfg = load_config(path, ['stages.0.method="linear"', 'stages.1.method="linear"',
                             'stages.0.fit.optimizer="LBFGS"', 'stages.0.fit.schedule="none"', "stages.0.fit.lr=1.0"])
    assert cfg.stages[0].fit.optimizer == "LBFGS" and not pipeline.linear_only(cfg)


def test_a_twin_stage_with_the_fcd_term_at_the_tr_is_accepted(folder):
    """The counterpart of the refused "FCD term with the Bold monitor off the TR": the same stage at the TR loads."""
    text = _replace(_replace(BASE, 'name = "global"', 'name = "global"\nmethod = "twin"'), "stability_margin = 0.001",
                    "fcd_weight = 1.0")
    assert load_config(rh.write_config(folder, text)).stages[0].fit.fcd_weight == 1.0
