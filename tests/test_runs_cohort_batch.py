"""tvb-torchfit cohort with batching ([cohort] batch): 3 tiny subjects (their own SC and BOLD, the global linear
stage) and one with malformed data on an embedded LocalCluster of 2 workers, fitted in one batched group, give the
run folders of the unbatched cohort (the reference: each subject fitted alone by run_fit); the bad subject fails
alone; a rerun submits nothing."""
import csv
import json

import numpy as np
import pytest

from tests import runs_helpers as rh
from tvb_torchfit import cli
from tvb_torchfit.errors import ConfigError
from tvb_torchfit.runs.cohort_config import load_cohort
from tvb_torchfit.runs.folder import load_fitted_simulator

pytest.importorskip("distributed", reason='the [cohort] extra is not installed: pip install "tvb_torchfit[cohort]"')

GOOD = ("sub-0", "sub-1", "sub-2")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort_batch")
    path = rh.write_cohort_with_bad_subject(folder)          # + "bad": a NaN in its BOLD
    codes = {}
    for name, batch in (("alone", 1), ("batched", 4)):
        codes[name] = cli.main(["cohort", str(path), "--workers", "2", "--out", str(folder / name), "--quiet",
                                "--set", f"cohort.batch={batch}"])
    return path, folder, codes


def summary(out):
    with open(out / "summary.csv", newline="") as f:
        return {r["subject"]: r for r in csv.DictReader(f)}


def test_batched_cohort_writes_the_run_folders_of_the_unbatched_one(cohorts):
    _, folder, codes = cohorts
    assert codes == {"alone": 0, "batched": 0}
    runs = json.loads((folder / "batched" / "cohort_runs.json").read_text())
    assert runs[-1]["batched"] == [list(GOOD) + ["bad"]]
    for s in GOOD:
        a, b = folder / "alone" / "subjects" / s, folder / "batched" / "subjects" / s
        assert sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if "checkpoints" not in p.parts) == \
            sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if "checkpoints" not in p.parts)
        va = json.loads((a / "stages" / "global" / "values.json").read_text())
        vb = json.loads((b / "stages" / "global" / "values.json").read_text())
        assert vb["G_c"] == pytest.approx(va["G_c"], rel=1e-12)
        for k in va["params"]:
            np.testing.assert_allclose(vb["params"][k], va["params"][k], rtol=1e-8)
        ha, hb = np.load(a / "stages" / "global" / "history.npz"), np.load(b / "stages" / "global" / "history.npz")
        np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-8)
        ra = json.loads((a / "report.json").read_text())["rows"][0]
        rb = json.loads((b / "report.json").read_text())["rows"][0]
        assert rb["held_out_r"] == pytest.approx(ra["held_out_r"], abs=1e-6)   # TVB at the same values and seed
        np.testing.assert_allclose(load_fitted_simulator(b).model.J_i, load_fitted_simulator(a).model.J_i, rtol=1e-8)
        rec = json.loads((b / "cohort_task.json").read_text())
        assert rec["status"] == "ok" and [x["part"] for x in rec["attempts"]] == ["fit (batched)", "validation"]
    rows = summary(folder / "batched")
    assert [rows[s]["status"] for s in GOOD] == ["ok"] * 3
    for s in GOOD:
        assert float(rows[s]["global.G"]) == pytest.approx(float(summary(folder / "alone")[s]["global.G"]), rel=1e-8)


def test_the_bad_subject_fails_alone(cohorts):
    _, folder, _ = cohorts
    row = summary(folder / "batched")["bad"]
    assert row["status"] == "failed" and "NaN" in row["error"] and "bold.npy" in row["error"]
    assert row["error"] == summary(folder / "alone")["bad"]["error"]


def test_rerun_submits_nothing(cohorts):
    path, folder, _ = cohorts
    out = folder / "batched"
    code = cli.main(["cohort", str(path), "--workers", "2", "--out", str(out), "--quiet", "--set", "cohort.batch=4",
                     "--set", "subjects.list=[]"])
    assert code == 0
    runs = json.loads((out / "cohort_runs.json").read_text())
    assert runs[-1]["submitted"] == [] and sorted(runs[-1]["skipped"]) == list(GOOD)


def test_batch_must_be_a_positive_size(tmp_path):
    path = rh.write_cohort(tmp_path, n_subjects=1, text=rh.COHORT.replace("retries = 3", "retries = 3\nbatch = 0"))
    with pytest.raises(ConfigError, match="'cohort.batch'"):
        load_cohort(path)
