"""tvb_torchfit.data.maps: region maps from files, and the principal gradient of an FC matrix."""
import numpy as np
import pytest
from scipy import stats as sps

from tvb_torchfit.data import maps
from tvb_torchfit.errors import DataError


def gradient_fc(n=40, seed=0):
    """An FC whose structure is one known axis: FC_ij = exp(-(x_i - x_j)^2 / 0.05) + noise, x_i in [0, 1]."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(size=n)
    fc = np.exp(-(x[:, None] - x[None, :]) ** 2 / 0.05) + 0.05 * rng.standard_normal((n, n))
    fc = (fc + fc.T) / 2
    np.fill_diagonal(fc, 1.0)
    return fc, x


def test_principal_gradient_recovers_the_axis_of_a_synthetic_fc():
    fc, x = gradient_fc()
    g = maps.fc_gradient(fc)
    assert g.shape == (40,)
    assert abs(sps.spearmanr(g, x)[0]) > 0.95


def test_gradient_sign_is_fixed_and_follows_a_permutation_of_regions():
    fc, _ = gradient_fc()
    g = maps.fc_gradient(fc)
    assert g[np.argmax(np.abs(g))] > 0
    perm = np.random.RandomState(3).permutation(40)
    np.testing.assert_allclose(maps.fc_gradient(fc[np.ix_(perm, perm)]), g[perm], atol=1e-10)
    two = maps.fc_gradient(fc, k=2)
    assert two.shape == (2, 40)
    np.testing.assert_allclose(two[0], g, atol=1e-12)


def test_gradient_is_a_diffusion_map_eigenvector():
    """Independent of the code's own normalisation: psi is a right eigenvector of the row-normalised
    alpha-normalised affinity (scipy's eig of the non-symmetric Markov matrix)."""
    fc, _ = gradient_fc(n=60, seed=1)
    x = fc.copy()
    np.fill_diagonal(x, 0)
    x[x < np.percentile(x, 90, axis=1, keepdims=True)] = 0
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    a = np.clip(xn @ xn.T, 0, None)
    d = a.sum(1)
    la = a / np.sqrt(np.outer(d, d))
    m = la / la.sum(1, keepdims=True)
    w, v = np.linalg.eig(m)
    order = np.argsort(-w.real)
    assert w.real[order[1]] < 1 - 1e-6                 # one connected component: lambda_1 < 1
    lam1, psi1 = w.real[order[1]], v[:, order[1]].real
    g = maps.fc_gradient(fc)
    assert abs(np.corrcoef(g, psi1)[0, 1]) > 1 - 1e-9
    np.testing.assert_allclose(m @ g, lam1 * g, atol=1e-10)


@pytest.mark.parametrize("ext", [".npy", ".csv", ".txt", ".npz"])
def test_load_map_from_files(tmp_path, ext):
    m = np.linspace(-1, 2, 7)
    path = tmp_path / f"m{ext}"
    if ext == ".npy":
        np.save(path, m)
    elif ext == ".npz":
        np.savez(path, myelin=m)
    else:
        np.savetxt(path, m, delimiter="," if ext == ".csv" else " ")
    np.testing.assert_allclose(maps.load_map(path, 7), m)


def test_load_map_from_a_csv_row(tmp_path):
    path = tmp_path / "row.csv"
    path.write_text("1,2,3,4\n")
    np.testing.assert_allclose(maps.load_map(path, 4), [1, 2, 3, 4])


@pytest.mark.parametrize("content, match", [("1\n2\n3\n", "shape"), ("1\nnan\n3\n4\n", "NaN"),
                                            ("2\n2\n2\n2\n", "constant"), ("label\n1\n2\n3\n", "numbers only")])
def test_bad_map_files_are_refused_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        maps.load_map(path, 4)
    assert "bad.txt" in str(err.value)


def test_missing_map_file_and_bad_fc():
    with pytest.raises(DataError, match="does not exist"):
        maps.load_map("/nonexistent/map.npy", 4)
    with pytest.raises(DataError, match="square"):
        maps.fc_gradient(np.ones((3, 4)))
