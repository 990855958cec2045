#!/usr/bin/env python
"""How far can the stochastic twin move the FCD of a fitted subject? A scan, with an oracle bound and the data's own
ceiling (issue #16, item 3).

For each subject: the pipeline's recipe (``demos/hcp_subject.toml``; the run folder ``OUT/<subject>`` is fitted
with ``--no-validate`` when it is not there yet) gives the regional fit (region-wise nsig at 0.85 G_c, J_i by FIC).
From there the twin (TVB's equations, delays and Bold monitor, the block kernel) is run over a grid of the global
knobs that move the FCD — G / G_c (J_i by FIC at each G) and a factor on every region's nsig — with common random
numbers (the same seed at every point), ``--realisations`` runs as long as a data half each. Per point: FCD KS
against the training and the test half (60 s windows every 2 s, as the validation), FC r, mean FC, and the BOLD
autocorrelation at 3.6 s (``stats.autocorrelation``: how slowly the signal decorrelates, which sets how much
windowed FC wanders).

* **twin-selected**: the point with the lowest *training* FCD KS among those whose training FC r is no more than
  0.01 below the regional fit's: what a twin stage fitted to FC + FCD over these knobs could reach (a scan stands in
  for its gradient: the objective is a noisy function of two numbers);
* **oracle**: the lowest *test* FCD KS with test FC r no more than 0.01 below the regional fit's, chosen on the test
  half itself: an upper bound for any fit of these knobs;
* **data's own FCD KS**: training half vs test half, the ceiling a perfect model would score about;
* ``--validate``: TVB's own simulator at the regional and the twin-selected point (``validation`` seeds and length
  of the run config) scored against the test half: the figures to quote.

    python demos/fcd_bound.py --out out/fcd_bound                    # 7 HCP subjects
    python demos/fcd_bound.py --out out/fcd_bound --subjects 101309 --validate

Units: ms (lengths, TR); G as a fraction of G_c.
"""
import argparse
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hcp_subject.toml")
G_GRID = (0.78, 0.82, 0.85, 0.88, 0.91)
NSIG_FACTORS = (0.5, 1.0, 2.0)
AC_LAG_MS = 3600.0
R_TOLERANCE = 0.01


def fitted_run(subject: str, overrides, out: Path) -> Path:
    """The subject's run folder with the recipe's fits (fitted here when missing; no TVB validation)."""
    from tvb_torchfit.runs.config import load_config
    from tvb_torchfit.runs.pipeline import run_fit
    run_dir = out / subject
    if not (run_dir / "fit_done.json").is_file():
        cfg = load_config(CONFIG, [f'data.hcp="{subject}"', f'run.name="{subject}"', *overrides])
        run_fit(cfg, run_dir, progress=False, validate_after=False, log=lambda _: None)
    return run_dir


def twin_bold(sim, length_ms: float, realisations: int, seed: int, discard_ms: float) -> np.ndarray:
    """(realisations, time, nodes) BOLD of the twin of ``sim``, the first ``discard_ms`` dropped."""
    import torch
    import tvb_torchfit
    twin = tvb_torchfit.from_tvb(sim, batch=realisations, seed=seed)
    with torch.no_grad():
        (t, bold), = twin.run(simulation_length=discard_ms + length_ms)
    bold = bold.reshape(realisations, *bold.shape[-4:])[:, :, 0, :, 0].numpy()
    return bold[:, t.numpy() > discard_ms]


def point_metrics(bold: np.ndarray, data, window: int, step: int, lag: int) -> dict:
    from tvb_torchfit import stats
    fcd_train = stats.fcd_values(data["train_bold"], window, step).numpy()
    fcd_test = stats.fcd_values(data["test_bold"], window, step).numpy()
    rows = []
    for b in bold:
        f = stats.fcd_values(b, window, step).numpy()
        fc = stats.fc(b).numpy()
        rows.append(dict(ks_train=stats.ks_statistic(f, fcd_train), ks_test=stats.ks_statistic(f, fcd_test),
                         r_train=stats.pearson_r(stats.upper(fc), stats.upper(data["train_fc"])),
                         r_test=stats.pearson_r(stats.upper(fc), stats.upper(data["test_fc"])),
                         mean_fc=float(stats.upper(fc).mean()), fcd_mean=float(f.mean()), fcd_sd=float(f.std()),
                         ac=float(stats.autocorrelation(b, lag).mean())))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    fcds = [stats.fcd_values(b, window, step).numpy() for b in bold]
    out["ks_seed_to_seed"] = float(np.mean([stats.ks_statistic(fcds[i], fcds[j]) for i in range(len(fcds))
                                            for j in range(i + 1, len(fcds))])) if len(fcds) > 1 else float("nan")
    return out


def scan(subject: str, run_dir: Path, realisations: int, seed: int) -> dict:
    from tvb_torchfit import stats
    from tvb_torchfit.inference.stages import with_fic
    from tvb_torchfit.roundtrip.writeback import apply_params, clone_simulator, read_params
    from tvb_torchfit.runs import folder as fs
    from tvb_torchfit.runs.config import load_config
    cfg = load_config(run_dir / "config.json")
    data = dict(np.load(run_dir / "data.npz"))
    tr = fs.read_json(run_dir / "data.json")["tr_ms"]
    window = max(2, int(round(cfg.validation.fcd_window / tr)))
    step = max(1, int(round(cfg.validation.fcd_step / tr)))
    lag = max(1, int(round(AC_LAG_MS / tr)))
    values = fs.read_json(fs.stage_dir(run_dir, "regional") / "values.json")
    base = fs.load_fitted_simulator(run_dir, "regional")
    G_c, nsig = values["G_c"], np.asarray(read_params(base)["noise.nsig"])
    G_reg = float(np.asarray(read_params(base)["G"]).ravel()[0]) / G_c
    length = data["test_bold"].shape[0] * tr
    points = []
    for g in sorted(set(G_GRID) | {round(G_reg, 4)}):
        for k in NSIG_FACTORS:
            sim = with_fic(apply_params(clone_simulator(base), {"G": np.array([g * G_c]), "noise.nsig": nsig * k}),
                           cfg.run.fic_rate)
            m = point_metrics(twin_bold(sim, length, realisations, seed, cfg.validation.discard), data, window,
                              step, lag)
            points.append(dict(G_rel=g, nsig_factor=k, **m))
            print(f"  {subject} G {g:.3f} G_c, nsig x{k:g}: FCD KS train {m['ks_train']:.3f} test {m['ks_test']:.3f}"
                  f" | FC r train {m['r_train']:.3f} test {m['r_test']:.3f} | mean FC {m['mean_fc']:.3f}"
                  f" | ac {m['ac']:.2f}", flush=True)
    regional = next(p for p in points if p["G_rel"] == round(G_reg, 4) and p["nsig_factor"] == 1.0)
    ok_train = [p for p in points if p["r_train"] >= regional["r_train"] - R_TOLERANCE]
    ok_test = [p for p in points if p["r_test"] >= regional["r_test"] - R_TOLERANCE]
    fcd_train = stats.fcd_values(data["train_bold"], window, step).numpy()
    fcd_test = stats.fcd_values(data["test_bold"], window, step).numpy()
    return dict(subject=subject, regional=regional, selected=min(ok_train, key=lambda p: p["ks_train"]),
                oracle=min(ok_test, key=lambda p: p["ks_test"]), points=points,
                data_ks=stats.ks_statistic(fcd_train, fcd_test),
                data_fcd=[float(fcd_test.mean()), float(fcd_test.std())],
                data_ac=[float(stats.autocorrelation(data[k], lag).mean()) for k in ("train_bold", "test_bold")],
                G_c=G_c)


def tvb_validate(run_dir: Path, point: dict) -> dict:
    """TVB's own simulator at a scanned point against the test half (the run config's validation settings)."""
    from tvb_torchfit.inference.stages import with_fic
    from tvb_torchfit.roundtrip.validation import validate
    from tvb_torchfit.roundtrip.writeback import apply_params, clone_simulator, read_params
    from tvb_torchfit.runs import folder as fs
    from tvb_torchfit.runs.config import load_config
    cfg = load_config(run_dir / "config.json")
    data = np.load(run_dir / "data.npz")
    G_c = fs.read_json(fs.stage_dir(run_dir, "regional") / "values.json")["G_c"]
    base = fs.load_fitted_simulator(run_dir, "regional")
    nsig = np.asarray(read_params(base)["noise.nsig"]) * point["nsig_factor"]
    sim = with_fic(apply_params(clone_simulator(base), {"G": np.array([point["G_rel"] * G_c]), "noise.nsig": nsig}),
                   cfg.run.fic_rate)
    v = cfg.validation
    rep = validate(sim, data["test_fc"], simulation_length=v.length, seeds=v.seeds, discard_ms=v.discard,
                   target_bold=data["test_bold"], fcd_window_ms=v.fcd_window, fcd_step_ms=v.fcd_step,
                   processes=v.processes)
    return dict(r_test=rep.fc_corr, r_test_all_runs=rep.fc_corr_of_mean, fcd_ks=rep.fcd_ks,
                fcd_ks_seed_to_seed=rep.fcd_ks_seed_to_seed, mean_fc=rep.mean_fc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder: run folders per subject and fcd_bound.json")
    ap.add_argument("--subjects", nargs="+", default=None, help="ids (default: datasets.hcp_subjects())")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run-config override")
    ap.add_argument("--realisations", type=int, default=2, help="twin runs per grid point (each a half long)")
    ap.add_argument("--seed", type=int, default=5, help="the twin's noise seed (the same at every point)")
    ap.add_argument("--validate", action="store_true", help="TVB-validate the regional and twin-selected points")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)                 # TVB's reader warnings on every connectivity
    from tvb_torchfit.data import datasets
    from tvb_torchfit.runs import folder as fs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "fcd_bound.json"
    results = fs.read_json(results_path) if results_path.is_file() else {}
    for s in args.subjects or datasets.hcp_subjects():
        t0 = time.perf_counter()
        run_dir = fitted_run(s, args.set, out)
        if s not in results:                         # a rerun reuses finished subjects
            results[s] = scan(s, run_dir, args.realisations, args.seed)
        if args.validate and "tvb" not in results[s]:
            results[s]["tvb"] = {k: tvb_validate(run_dir, results[s][k]) for k in ("regional", "selected")}
        results[s].setdefault("wall_s", time.perf_counter() - t0)
        fs.write_json(results_path, results)
    print(table(results))


def table(results: dict) -> str:
    head = ("| subject | data's own FCD KS (train vs test) | regional: twin FCD KS test (TVB) | FC r test (TVB) | "
            "twin-selected: G / G_c, nsig x | FCD KS train / test (TVB) | FC r test (TVB) | oracle FCD KS test | "
            "BOLD autocorr. 3.6 s: model / data | twin seed-to-seed FCD KS |\n|" + "---|" * 10)
    lines = [head]

    def tvb(r, point, key):
        return f" ({r['tvb'][point][key]:.3f})" if "tvb" in r else ""
    for s, r in results.items():
        reg, sel, orc = r["regional"], r["selected"], r["oracle"]
        lines.append(f"| {s} | {r['data_ks']:.3f} | {reg['ks_test']:.3f}{tvb(r, 'regional', 'fcd_ks')} | "
                     f"{reg['r_test']:.3f}{tvb(r, 'regional', 'r_test')} | {sel['G_rel']:.2f}, {sel['nsig_factor']:g} | "
                     f"{sel['ks_train']:.3f} / {sel['ks_test']:.3f}{tvb(r, 'selected', 'fcd_ks')} | "
                     f"{sel['r_test']:.3f}{tvb(r, 'selected', 'r_test')} | {orc['ks_test']:.3f} | "
                     f"{reg['ac']:.2f} / {np.mean(r['data_ac']):.2f} | {reg['ks_seed_to_seed']:.3f} |")
    mean = lambda f: np.mean([f(r) for r in results.values()])                      # noqa: E731
    lines.append(f"| **mean** (n={len(results)}) | {mean(lambda r: r['data_ks']):.3f} | "
                 f"{mean(lambda r: r['regional']['ks_test']):.3f} | {mean(lambda r: r['regional']['r_test']):.3f} | | "
                 f"{mean(lambda r: r['selected']['ks_train']):.3f} / {mean(lambda r: r['selected']['ks_test']):.3f} | "
                 f"{mean(lambda r: r['selected']['r_test']):.3f} | {mean(lambda r: r['oracle']['ks_test']):.3f} | "
                 f"{mean(lambda r: r['regional']['ac']):.2f} / {mean(lambda r: np.mean(r['data_ac'])):.2f} | "
                 f"{mean(lambda r: r['regional']['ks_seed_to_seed']):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
