"""A cohort's summary, read back from its subjects' run folders (never from what the workers returned, so that it
says what the folders hold): one row per subject in ``summary.csv`` and ``summary.md``, and a group figure
``summary.png`` (the distributions of the fitted values and of the TVB-validated r).

Columns: ``subject``, ``status`` (``ok``, ``failed``, ``not run``), ``n_regions``, ``ceiling_r`` (the data's own
train-vs-test FC r), ``fcd_ks_ceiling`` (the data's own train-vs-test FCD KS), per validated stage
``<stage>.in_sample_r``, ``<stage>.held_out_r`` (per TVB run), ``<stage>.held_out_r_all_runs`` (the FC of all runs),
``<stage>.fcd_ks``, ``<stage>.mean_fc_sim``, ``.mean_fc_test`` and ``<stage>.G_over_G_c``, per fitted parameter
``<stage>.<param>`` (one value) or ``<stage>.<param>.mean`` and ``.sd`` (region-wise), ``wall_s`` (the wall time of
the attempt that finished the subject, s), ``attempts`` and ``error`` (the failed subject's message).
"""
import csv
import io
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..files import atomic_write
from . import folder as fs

TASK_RECORD = "cohort_task.json"         # in each run folder: the worker's record of its attempts and the status
STAGE_COLUMNS = ("in_sample_r", "held_out_r", "held_out_r_all_runs", "fcd_ks", "mean_fc_sim", "mean_fc_test", "G_over_G_c")


def read_record(run_dir) -> Optional[Dict]:
    p = Path(run_dir) / TASK_RECORD
    return fs.read_json(p) if p.is_file() else None


def subject_row(name: str, run_dir) -> Dict:
    """The summary row of one subject, from its run folder."""
    run_dir = Path(run_dir)
    rec = read_record(run_dir) or {}
    row: Dict = {"subject": name, "status": rec.get("status", "not run")}
    if (run_dir / "data.json").is_file():
        data = fs.read_json(run_dir / "data.json")
        row["n_regions"], row["ceiling_r"] = data["n_regions"], data["ceiling_r"]
        row["fcd_ks_ceiling"] = data.get("fcd_ks_ceiling")       # absent in folders written before it existed
    report = fs.read_json(run_dir / "report.json") if (run_dir / "report.json").is_file() else {"rows": []}
    for r in report["rows"]:
        for k in STAGE_COLUMNS:
            if r.get(k) is not None:
                row[f"{r['stage']}.{k}"] = r[k]
    stages = [s["name"] for s in fs.read_json(run_dir / "config.json")["stages"]] \
        if (run_dir / "config.json").is_file() else []
    for stage in stages:
        values = fs.stage_dir(run_dir, stage) / "values.json"
        if not values.is_file():
            continue
        for pname, v in fs.read_json(values)["params"].items():
            v = np.asarray(v, dtype=float)
            if v.size == 1:
                row[f"{stage}.{pname}"] = float(v.reshape(-1)[0])
            else:
                row[f"{stage}.{pname}.mean"], row[f"{stage}.{pname}.sd"] = float(v.mean()), float(v.std())
    row["wall_s"] = rec.get("wall_s")
    row["attempts"] = len(rec.get("attempts", []))
    row["error"] = rec.get("error")
    return row


def columns(rows: Sequence[Dict]) -> List[str]:
    """Every key of the rows, in the order of first appearance, ``wall_s``, ``attempts`` and ``error`` last."""
    seen: List[str] = []
    for r in rows:
        seen += [k for k in r if k not in seen]
    tail = ["wall_s", "attempts", "error"]
    return [k for k in seen if k not in tail] + [k for k in tail if k in seen]


def write_csv(path, rows: Sequence[Dict]) -> None:
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    fs.write_text(path, buf.getvalue())


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    text = str(v).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def numeric(rows: Sequence[Dict], key: str) -> np.ndarray:
    vals = [r.get(key) for r in rows if r.get("status") == "ok"]
    return np.array([v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)], dtype=float)


def markdown(title: str, rows: Sequence[Dict]) -> str:
    cols = columns(rows)
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = [f"# Cohort {title}: {len(ok)} of {len(rows)} subjects fitted", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in cols) + " |")
    if ok:
        means = []
        for k in cols:
            v = numeric(ok, k)
            means.append(f"**mean** (n={len(ok)})" if k == "subject" else _fmt(float(v.mean())) if v.size and
                         k not in ("n_regions", "attempts") else "")
        lines.append("| " + " | ".join(means) + " |")
    lines += ["", "r in sample: TVB's FC at the fitted values vs the training FC; held out: vs the test FC; ceiling: "
              "the data's own train-vs-test r; FCD KS vs the test BOLD (fcd_ks_ceiling: the training BOLD's FCD vs "
              "the test BOLD's); wall_s: the attempt that finished the subject."]
    return "\n".join(lines) + "\n"


def figure(path, title: str, rows: Sequence[Dict]) -> Optional[Path]:
    """The group figure: one panel per fitted value (its distribution over the subjects fitted) and one of the r
    columns side by side; None when no subject is fitted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("status") == "ok"]
    cols = columns(ok)
    r_cols = [k for k in cols if k.endswith(("_r",)) and k != "ceiling_r"] + \
        (["ceiling_r"] if "ceiling_r" in cols else [])
    skip = set(r_cols) | {"subject", "status", "n_regions", "attempts", "error", "wall_s"}
    skip |= {k for k in cols if k.endswith((".sd", ".fcd_ks"))}
    fitted = [k for k in cols if k not in skip and numeric(ok, k).size]
    if not ok:
        return None
    panels = fitted + ["r"]
    ncol = min(4, len(panels))
    nrow = int(math.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    rng = np.random.RandomState(0)
    for ax, key in zip(axes.flat, panels):
        keys = r_cols if key == "r" else [key]
        data = [numeric(ok, k) for k in keys]
        ax.boxplot(data, showfliers=False)
        for i, d in enumerate(data):
            ax.plot(i + 1 + rng.uniform(-0.12, 0.12, d.size), d, "o", ms=3, alpha=0.6)
        ax.set_xticks(range(1, len(keys) + 1))
        ax.set_xticklabels([k.replace(".", "\n") for k in keys], fontsize=7, rotation=30 if len(keys) > 2 else 0)
        ax.set_title("TVB-validated FC r" if key == "r" else key, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"cohort {title}: {len(ok)} subjects fitted")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return Path(path)


def write_summary(out, title: str, rows: Sequence[Dict]) -> Dict[str, Path]:
    """``summary.csv``, ``summary.md`` and ``summary.png`` in ``out`` (atomically)."""
    out = Path(out)
    write_csv(out / "summary.csv", rows)
    fs.write_text(out / "summary.md", markdown(title, rows))
    paths = {"csv": out / "summary.csv", "md": out / "summary.md"}
    png = figure(out / "summary.png", title, rows)
    if png is not None:
        paths["png"] = png
    return paths
