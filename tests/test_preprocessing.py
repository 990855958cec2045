"""Preprocessing: each step's defining property, on arrays and on Subjects, and its record.

Reference values come from TVB itself (``Connectivity.scaled_weights``), from closed forms (a line, a
sine of known frequency) or from numpy, never from this package's own output.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tvb_torchfit.data import preprocessing as P
from tvb_torchfit.data.datasets import Subject, load_connectivity, load_subject
from tvb_torchfit.errors import DataError

warnings.filterwarnings("ignore", module="tvb")
from tvb.datatypes.connectivity import Connectivity  # noqa: E402

TR = 720.0                      # ms
FS = 1000.0 / TR                # Hz
N = 6

square = st.integers(2, 8).flatmap(
    lambda n: arrays(np.float64, (n, n), elements=st.floats(0, 1e6, allow_nan=False, allow_infinity=False)))


def subject(n_time=400, fc_only=False, seed=0):
    rng = np.random.RandomState(seed)
    w = rng.uniform(0, 5, (N, N))
    np.fill_diagonal(w, 3.0)
    lengths = rng.uniform(10, 100, (N, N))
    labels = ["Precentral_L", "Cerebelum_Crus1_L", "Vermis_3", "Thalamus_R", "Cuneus_L", "Insula_R"]
    bold = rng.standard_normal((n_time, N))
    kwargs = dict(fc=np.corrcoef(bold.T)) if fc_only else dict(bold=bold, tr=TR)
    return load_subject(w, tract_lengths=lengths, region_labels=labels, centres=rng.uniform(size=(N, 3)),
                        orientation="time_regions" if not fc_only else "auto", subject_id="s", **kwargs)


# ----------------------------------------------------------------------------------------------------
# structural connectivity
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["tract", "region", "none"])
def test_normalize_weights_is_tvbs_scaled_weights(mode):
    s = subject()
    ref = Connectivity(weights=s.connectivity.weights.copy()).scaled_weights(mode=mode)
    np.testing.assert_array_equal(P.normalize_weights(s.connectivity.weights, mode), ref)
    out = P.normalize_weights(s, mode)
    np.testing.assert_array_equal(out.connectivity.weights, ref)
    assert out.preprocessing[-1] == {"step": "normalize_weights", "mode": mode}


def test_normalize_weights_formulas():
    w = subject().connectivity.weights
    assert P.normalize_weights(w, "max").max() == 1.0
    assert P.normalize_weights(w, "tract").max() == 1.0
    assert np.abs(P.normalize_weights(w, "region").sum(axis=1)).max() == pytest.approx(1.0)
    with pytest.raises(DataError, match=r"mode must be one of \('tract', 'region', 'none', 'max'\); got 'l2'"):
        P.normalize_weights(w, "l2")
    with pytest.raises(DataError, match="all weights zero"):
        P.normalize_weights(np.zeros((3, 3)), "max")


@settings(max_examples=30, deadline=None)
@given(square)
def test_sc_steps_properties(w):
    s = P.symmetrize(w)
    np.testing.assert_array_equal(s, s.T)
    np.testing.assert_array_equal(P.symmetrize(w, "max"), P.symmetrize(w, "max").T)
    assert (P.symmetrize(w, "max") >= w).all()
    d = P.remove_self_connections(w)
    assert not np.diag(d).any()
    off = ~np.eye(len(w), dtype=bool)
    np.testing.assert_array_equal(d[off], w[off])
    expected = np.where(w > 1e-6, np.log(1 + w), w - w ** 2 / 2)        # series for tiny w
    np.testing.assert_allclose(P.log1p_weights(w), expected, rtol=1e-9)
    assert ((P.log1p_weights(w) == 0) == (w == 0)).all()
    if w.max() > 0:
        assert P.normalize_weights(w, "max").max() == 1.0


def test_sc_steps_on_a_subject_keep_everything_else():
    s = subject()
    out = P.remove_self_connections(P.symmetrize(s))
    w = out.connectivity.weights
    np.testing.assert_array_equal(w, w.T)
    assert not np.diag(w).any()
    np.testing.assert_array_equal(out.connectivity.tract_lengths, s.connectivity.tract_lengths)
    assert list(out.region_labels) == list(s.region_labels) and out.bold is s.bold
    assert [r["step"] for r in out.preprocessing][-2:] == ["symmetrize", "remove_self_connections"]
    assert np.diag(s.connectivity.weights).all() and len(s.preprocessing) == 2        # input untouched


# ----------------------------------------------------------------------------------------------------
# regions
# ----------------------------------------------------------------------------------------------------

def test_cerebellum_helper():
    labels = subject().region_labels
    assert P.cerebellum_regions(labels) == [1, 2]
    assert P.regions_matching(labels, ["thalamus", "INSULA"]) == [3, 5]


def test_drop_regions_on_a_subject_is_consistent():
    s = subject()
    out = P.preprocess(s, drop_regions="cerebellum")
    keep = [0, 3, 4, 5]
    c, c0 = out.connectivity, s.connectivity
    assert out.n_regions == 4 and list(out.region_labels) == [s.region_labels[i] for i in keep]
    np.testing.assert_array_equal(c.weights, c0.weights[np.ix_(keep, keep)])
    np.testing.assert_array_equal(c.tract_lengths, c0.tract_lengths[np.ix_(keep, keep)])
    np.testing.assert_array_equal(c.centres, c0.centres[keep])
    np.testing.assert_array_equal(out.bold, s.bold[:, keep])
    np.testing.assert_allclose(out.fc, s.fc[np.ix_(keep, keep)], atol=1e-12)
    assert out.preprocessing[-1] == {"step": "drop_regions", "indices": [1, 2],
                                     "labels": ["Cerebelum_Crus1_L", "Vermis_3"], "n_regions": 4}
    by_label = P.drop_regions(s, ["Vermis_3", 1])
    np.testing.assert_array_equal(by_label.connectivity.weights, c.weights)
    c.configure()                                                       # still a valid TVB connectivity


def test_drop_regions_keeps_tvb_region_attributes():
    conn = load_connectivity("paupau.zip")
    s = Subject(connectivity=conn, fc_given=np.eye(4), subject_id="p")
    out = P.drop_regions(s, [0])
    for name in ("cortical", "hemispheres", "areas"):
        if getattr(conn, name) is not None:
            np.testing.assert_array_equal(getattr(out.connectivity, name), getattr(conn, name)[1:])
    np.testing.assert_array_equal(out.fc, np.eye(3))


def test_drop_regions_arrays_and_errors():
    w = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(P.drop_regions(w, [1]), w[np.ix_([0, 2, 3], [0, 2, 3])])
    b = np.ones((10, 4))
    assert P.drop_regions(b, -1, axes=1).shape == (10, 3)
    assert P.drop_regions(w, "c", region_labels="abcd").shape == (3, 3)
    with pytest.raises(DataError, match="give axes="):
        P.drop_regions(b, 0)
    with pytest.raises(DataError, match="region index 9 is out of range for 4 regions"):
        P.drop_regions(w, 9)
    with pytest.raises(DataError, match="no region labelled 'Nope'"):
        P.drop_regions(subject(), "Nope")
    with pytest.raises(DataError, match="would leave fewer than 2"):
        P.drop_regions(w, [0, 1, 2])


# ----------------------------------------------------------------------------------------------------
# BOLD
# ----------------------------------------------------------------------------------------------------

def _amplitude(x, f, t):
    """Amplitude of the f-Hz component of x (least-squares fit of a sine and a cosine)."""
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    coef = np.linalg.lstsq(basis, x, rcond=None)[0]
    return float(np.hypot(*coef))


def test_bandpass_removes_an_out_of_band_sine():
    t = np.arange(1200) * TR / 1000.0                       # s
    inside, below, above = 0.05, 0.002, 0.3                 # Hz
    x = np.sin(2 * np.pi * inside * t) + np.sin(2 * np.pi * below * t) + np.sin(2 * np.pi * above * t)
    y = P.bandpass(np.stack([x, 2 * x], axis=1), 0.01, 0.1, tr=TR)[:, 0]
    mid = slice(200, 1000)                                  # away from the edges
    assert _amplitude(y[mid], above, t[mid]) < 0.01
    assert _amplitude(y[mid], below, t[mid]) < 0.05
    assert _amplitude(y[mid], inside, t[mid]) == pytest.approx(1.0, abs=0.05)
    lowpassed = P.bandpass(x[:, None], None, 0.1, tr=TR)[mid, 0]
    assert _amplitude(lowpassed, above, t[mid]) < 0.01 and _amplitude(lowpassed, below, t[mid]) > 0.9


def test_bandpass_on_a_subject_uses_its_tr_and_records():
    s = P.bandpass(subject(), 0.01, 0.1)
    assert s.preprocessing[-1] == {"step": "bandpass", "low_hz": 0.01, "high_hz": 0.1, "order": 2, "tr_ms": TR,
                                   "filter": "Butterworth, zero-phase (scipy sosfiltfilt)"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(low=0.01, high=0.9, tr=TR), r"high=0.9 Hz must lie in \(0, 0.6944\) Hz, the Nyquist frequency for TR 720 ms"),
    (dict(low=0.1, high=0.05, tr=TR), "low .* must be below high"),
    (dict(low=0.01, high=0.1), "needs the repetition time tr in ms"),
    (dict(low=None, high=None, tr=TR), "give low and/or high"),
])
def test_bandpass_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        P.bandpass(np.ones((100, 3)), **kwargs)


def test_bandpass_errors_on_subjects():
    with pytest.raises(DataError, match="too few"):
        P.bandpass(np.random.RandomState(0).standard_normal((8, 3)), 0.01, 0.1, tr=TR)
    with pytest.raises(DataError, match="tr=2000 ms was given but subject 's' has TR 720 ms"):
        P.bandpass(subject(), 0.01, 0.1, tr=2000.0)
    with pytest.raises(DataError, match="subject 's' has no BOLD .* the step 'bandpass' needs a BOLD signal"):
        P.bandpass(subject(fc_only=True), 0.01, 0.1, tr=TR)


@settings(max_examples=20, deadline=None)
@given(st.floats(-100, 100), st.floats(-10, 10), st.integers(3, 200))
def test_detrend_removes_a_line(a, b, n):
    t = np.arange(n, dtype=float)
    x = np.stack([a + b * t, b - a * t], axis=1)
    np.testing.assert_allclose(P.detrend(x), 0, atol=1e-9 * (1 + abs(a) + abs(b)) * n)
    np.testing.assert_allclose(P.detrend(x, "constant").mean(axis=0), 0, atol=1e-9 * (1 + abs(a) + abs(b)) * n)


def test_detrend_keeps_a_zero_mean_sine():
    t = np.arange(400.0)
    sine = np.sin(2 * np.pi * t / 40)                        # 10 whole periods: no linear part
    out = P.detrend((sine + 3 + 0.5 * t)[:, None])[:, 0]
    np.testing.assert_allclose(out, sine - np.polyval(np.polyfit(t, sine, 1), t), atol=1e-10)


def test_zscore_and_discard():
    s = P.zscore(P.discard_volumes(subject(), 5))
    assert s.bold.shape == (395, N)
    np.testing.assert_allclose(s.bold.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(s.bold.std(axis=0), 1, atol=1e-12)
    assert s.preprocessing[-2:] == [{"step": "discard_volumes", "n": 5, "ms": 3600.0}, {"step": "zscore"}]
    x = np.random.RandomState(0).standard_normal((50, 3))
    x[:, 1] = 7.0
    with pytest.warns(UserWarning, match=r"regions \[1\] are constant"):
        z = P.zscore(x)
    assert not z[:, 1].any()
    with pytest.raises(DataError, match="leaves fewer than 2"):
        P.discard_volumes(x, 49)
    with pytest.raises(DataError, match="n must be an integer >= 0"):
        P.discard_volumes(x, -1)


# ----------------------------------------------------------------------------------------------------
# the chain
# ----------------------------------------------------------------------------------------------------

def test_preprocess_order_and_record():
    s0 = subject()
    s = P.preprocess(s0, zscore=True, bandpass=(0.01, 0.1), detrend=True, discard_volumes=4, sc_normalize="max",
                     log1p=True, symmetrize=True, remove_self_connections=True, drop_regions=[0])
    steps = [r["step"] for r in s.preprocessing]
    assert steps == ["load_connectivity", "load_bold", "drop_regions", "remove_self_connections", "symmetrize",
                     "log1p_weights", "normalize_weights", "discard_volumes", "detrend", "bandpass", "zscore"]
    w = s.connectivity.weights
    assert w.shape == (5, 5) and w.max() == 1.0 and not np.diag(w).any() and np.array_equal(w, w.T)
    assert s.bold.shape == (396, 5) and np.isfinite(s.fc).all()
    assert len(s0.preprocessing) == 2 and s0.bold.shape == (400, N)                     # untouched
    assert P.preprocess(s0).preprocessing == s0.preprocessing
    with pytest.raises(DataError, match="bandpass must be \\(low, high\\) in Hz"):
        P.preprocess(s0, bandpass=0.1)
    with pytest.raises(DataError, match="preprocess takes a Subject"):
        P.preprocess(np.ones((3, 3)), log1p=True)


def test_homotopic_pairs_and_boost():
    from tvb_torchfit import preprocessing as pp
    from tvb_torchfit.errors import DataError
    labels = ["A_L", "A_R", "B_L", "B_R", "lC", "rC", "Vermis"]
    pairs = pp.homotopic_pairs(labels)
    assert sorted(pairs) == [(0, 1), (2, 3), (4, 5)]
    w = np.random.RandomState(0).rand(7, 7)
    out = pp.add_homotopic(w, 0.5, pairs)
    diff = out - w
    expected = np.zeros((7, 7))
    for i, j in pairs:
        expected[i, j] = expected[j, i] = 0.5 * w.max()
    assert np.allclose(diff, expected)
    with pytest.raises(DataError, match="pairs="):
        pp.add_homotopic(w, 0.5)
    with pytest.raises(DataError, match="distinct regions"):
        pp.add_homotopic(w, 0.5, [(0, 9)])
    with pytest.raises(DataError, match=">= 0"):
        pp.add_homotopic(w, -1.0, pairs)
