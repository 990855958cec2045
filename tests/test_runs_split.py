"""tvb_torchfit.runs.inputs: the train/test split of the BOLD and the time steps applied to each part alone."""
import numpy as np
import pytest

from tests import runs_helpers as rh
from tvb_torchfit.data import preprocessing as pp
from tvb_torchfit.runs.config import load_config
from tvb_torchfit.runs.inputs import load_inputs


@pytest.fixture()
def folder(tmp_path):
    return rh.write_data(tmp_path, volumes=241)


def test_halves_are_the_first_and_second_half_after_discarding(folder):
    cfg = load_config(rh.write_config(folder), ["preprocessing.discard_volumes=5"])
    inp = load_inputs(cfg, "x")
    bold = np.load(folder / "bold.npy")[5:]
    half = bold.shape[0] // 2
    np.testing.assert_array_equal(inp.train_bold, bold[:half])
    np.testing.assert_array_equal(inp.test_bold, bold[half:2 * half])
    assert inp.tr == 720.0


def test_time_steps_are_applied_to_each_half_on_its_own(folder):
    cfg = load_config(rh.write_config(folder), ["preprocessing.bandpass=[0.01, 0.1]", "preprocessing.zscore=true"])
    inp = load_inputs(cfg, "x")
    bold = np.load(folder / "bold.npy")
    half = bold.shape[0] // 2
    for part, got in ((bold[:half], inp.train_bold), (bold[half:2 * half], inp.test_bold)):
        np.testing.assert_allclose(got, pp.zscore(pp.bandpass(part, 0.01, 0.1, tr=720.0)), rtol=1e-12, atol=1e-12)


def test_band_passed_halves_give_their_fc(folder):
    """Band-pass alone (sosfiltfilt's output has negative strides) and the FC of each half: the pipeline's
    train_fc/test_fc raised a torch stride error before stats accepted any strides."""
    cfg = load_config(rh.write_config(folder), ["preprocessing.bandpass=[0.01, 0.1]"])
    inp = load_inputs(cfg, "x")
    for bold, fc in ((inp.train_bold, inp.train_fc), (inp.test_bold, inp.test_fc)):
        np.testing.assert_allclose(fc, np.corrcoef(bold.T), atol=1e-12)


def test_second_session_and_no_split(folder):
    other = np.random.RandomState(5).standard_normal((100, rh.N))
    np.save(folder / "bold2.npy", other)
    cfg = load_config(rh.write_config(folder), ['data.bold_test="bold2.npy"', 'validation.split="session"'])
    inp = load_inputs(cfg, "x")
    np.testing.assert_array_equal(inp.train_bold, np.load(folder / "bold.npy"))
    np.testing.assert_array_equal(inp.test_bold, other)
    cfg = load_config(rh.write_config(folder), ['validation.split="none"'])
    inp = load_inputs(cfg, "x")
    np.testing.assert_array_equal(inp.train_bold, inp.test_bold)


def test_at_bounds_on_the_fit_scale():
    """A log-scale parameter (nsig) is at a bound when it is near it on the log scale it is fitted on; 1e-7
    inside (3e-10, 3e-4) is not (on a linear scale it would be within 0.1 % of the range)."""
    import types
    from tvb_torchfit.runs.pipeline import _at_bounds
    config = {"params": {"noise.nsig": {"low": 3e-10, "high": 3e-4, "log": True},
                         "G": {"low": 0.5, "high": 1.0, "log": False}}}
    result = types.SimpleNamespace(config=config, params={"noise.nsig": np.array([1e-7, 3.0001e-10, 2.9999e-4]),
                                                          "G": np.array([0.5001])})
    assert _at_bounds(result) == {"noise.nsig": 2, "G": 1}
