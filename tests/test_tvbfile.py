"""roundtrip.tvbfile: a TVB Simulator written to JSON + npz and rebuilt runs exactly as the original."""
import json

import numpy as np
import pytest

from tvb_builders import build, connectivity, heun_stochastic, small_connectivity
from tvb.simulator import integrators, models, monitors

from tvb_torchfit.errors import ParameterError, UnsupportedTVBObject
from tvb_torchfit.files import atomic_write
from tvb_torchfit.roundtrip.tvbfile import load_simulator, save_simulator
from tvb_torchfit.roundtrip.writeback import low_state_initial_conditions


def _runs_equal(a, b, length):
    out_a, out_b = a.run(simulation_length=length), b.run(simulation_length=length)
    assert len(out_a) == len(out_b)
    for (ta, xa), (tb, xb) in zip(out_a, out_b):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(xa, xb)


def _stochastic_sim(**model_params):
    conn = small_connectivity(6, seed=3)
    model = models.ReducedWongWangExcInh(**{k: np.atleast_1d(v) for k, v in model_params.items()})
    mons = (monitors.TemporalAverage(period=2.0), monitors.Bold(period=100.0))
    return build(model=model, integrator=heun_stochastic(dt=0.5, nsig=np.array([1e-4]), seed=9), mons=mons,
                 conn=conn, a=0.3)


def test_round_trip_runs_bit_identically(tmp_path):
    sim = _stochastic_sim(w_p=np.linspace(0.6, 0.9, 6), G=0.7)          # region-wise w_p
    save_simulator(sim, tmp_path)
    back = load_simulator(tmp_path)
    np.testing.assert_array_equal(back.model.w_p.reshape(-1), np.linspace(0.6, 0.9, 6))
    assert back.integrator.noise.noise_seed == 9 and back.integrator.dt == 0.5
    assert [type(m).__name__ for m in back.monitors] == ["TemporalAverage", "Bold"]
    np.testing.assert_array_equal(back.connectivity.region_labels, sim.connectivity.region_labels)
    _runs_equal(sim, back, 300.0)     # same random initial history from the same seed, same noise, same monitors


def test_initial_conditions_and_deterministic_integrator(tmp_path):
    sim = build(conn=connectivity("connectivity_66.zip"), integrator=integrators.EulerDeterministic(dt=0.2),
                mons=(monitors.Raw(),), a=0.01, configure=False)
    sim.initial_conditions = low_state_initial_conditions(sim, value=[0.1, 0.05])
    sim.configure()
    save_simulator(sim, tmp_path, stem="det")
    back = load_simulator(tmp_path, stem="det")
    np.testing.assert_array_equal(back.initial_conditions, sim.initial_conditions)
    _runs_equal(sim, back, 20.0)


def test_files_hold_no_pickle_and_name_tvb_classes(tmp_path):
    save_simulator(_stochastic_sim(), tmp_path)
    doc = json.loads((tmp_path / "simulator.json").read_text())
    assert doc["simulator"]["traits"]["model"]["$class"].endswith("ReducedWongWangExcInh")
    with np.load(tmp_path / "simulator.npz", allow_pickle=False) as npz:   # raises if anything were pickled
        assert "connectivity.weights" in npz.files


def test_a_file_naming_a_foreign_class_is_refused(tmp_path):
    save_simulator(_stochastic_sim(), tmp_path)
    doc = json.loads((tmp_path / "simulator.json").read_text())
    doc["simulator"]["traits"]["model"]["$class"] = "os.system"
    atomic_write(tmp_path / "simulator.json", lambda f: f.write(json.dumps(doc).encode()))
    with pytest.raises(ParameterError, match="not a TVB simulator or datatype class"):
        load_simulator(tmp_path)


@pytest.mark.parametrize("damage", ["missing json", "truncated json", "wrong format", "missing array"])
def test_damaged_files_give_clear_errors(tmp_path, damage):
    save_simulator(_stochastic_sim(), tmp_path)
    path = tmp_path / "simulator.json"
    if damage == "missing json":
        path.unlink()
    elif damage == "truncated json":
        path.write_text(path.read_text()[:100])
    elif damage == "wrong format":
        path.write_text(json.dumps({"format": "other"}))
    else:
        np.savez(tmp_path / "simulator.npz", nothing=np.zeros(1))
    with pytest.raises(ParameterError, match="simulator"):
        load_simulator(tmp_path)


def test_surface_or_stimulus_is_refused(tmp_path):
    from tvb.datatypes import equations, patterns
    sim = _stochastic_sim()
    sim.stimulus = patterns.StimuliRegion(temporal=equations.PulseTrain(), connectivity=sim.connectivity,
                                          weight=np.ones(6))
    with pytest.raises(UnsupportedTVBObject):
        save_simulator(sim, tmp_path)
