#!/usr/bin/env python
"""The paper's bifurcation constraint with and without, on the same subjects (issue #16, item 3).

Griffiths et al. (2022) optionally keep each node's low state near its loss of stability (``FitConfig``
``bifurcation_weight``: ``analyzers.bifurcation.bifurcation_penalty``, a band around each node's ``lambda_eff``, by
default -0.003 +- 0.002 1/ms, with the network's input in the mean-field closure). In the recipe
(``demos/hcp_subject.toml``) it can act on the global stage only: the regional stage fits the noise's nsig, which
does not move the fixed point, so the penalty is a constant there. This script fits the global stage (G, J_i by FIC)
of each subject with the penalty's weight at each of ``--weights`` and reports G / G_c, the penalty and the median
``lambda_eff`` at the fitted values, and the held-out r of the linearised FC (``analyzers.linear.linear_bold_fc``,
the proxy the fits use: TVB's own runs are not made here).

    python demos/bifurcation_effect.py                       # the 7 HCP subjects, weights 0, 1, 10
    python demos/bifurcation_effect.py --subjects 101309 --weights 0 100

Units: lambda_eff in 1/ms; G as a fraction of G_c.
"""
import argparse
import logging
import os
import warnings

import numpy as np

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hcp_subject.toml")


def global_fit(subject: str, weight: float, overrides) -> dict:
    import torch
    from tvb_torchfit import stats
    from tvb_torchfit.analyzers import bifurcation
    from tvb_torchfit.analyzers.linear import linear_bold_fc
    from tvb_torchfit.inference.stages import fit_stages
    from tvb_torchfit.runs.config import load_config
    from tvb_torchfit.runs.inputs import build_simulator, load_inputs, stage_maps
    from tvb_torchfit.runs.pipeline import to_stages
    from tvb_torchfit.simulator.adapter import read_simulator
    cfg = load_config(CONFIG, [f'data.hcp="{subject}"', f"stages.global.fit.bifurcation_weight={weight}", *overrides])
    inputs = load_inputs(cfg, "bifurcation_effect")
    stage = [s for s in to_stages(cfg, stage_maps(cfg, inputs, "bifurcation_effect")) if s.name == "global"]
    rec = fit_stages(build_simulator(cfg, inputs), inputs.train_fc, stage, fic_rate=cfg.run.fic_rate,
                     progress=False)[0]
    spec = read_simulator(rec.simulator)
    with torch.no_grad():
        fc = linear_bold_fc(spec)[0].numpy()
        band = bifurcation.from_spec(spec)
        lam = bifurcation.lambda_eff(**band).numpy().ravel()
        penalty = float(bifurcation.bifurcation_penalty(**band, target=-0.003, width=0.002))
    return dict(G_rel=float(np.ravel(rec.result.params["G"])[0]) / rec.G_c, penalty=penalty,
                lambda_median=float(np.median(lam)), lambda_range=(float(lam.min()), float(lam.max())),
                r_test=stats.pearson_r(stats.upper(fc), stats.upper(inputs.test_fc)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", nargs="+", default=None, help="ids (default: datasets.hcp_subjects())")
    ap.add_argument("--weights", nargs="+", type=float, default=[0.0, 1.0, 10.0], help="bifurcation_weight values")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run-config override")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)                 # TVB's reader warnings on every connectivity
    from tvb_torchfit.data import datasets
    subjects = args.subjects or datasets.hcp_subjects()
    print("| subject | weight | G / G_c | penalty | median lambda_eff (1/ms) | lambda_eff range | linear held-out r |\n"
          "|---|---|---|---|---|---|---|")
    rows = {w: [] for w in args.weights}
    for s in subjects:
        for w in args.weights:
            r = global_fit(s, w, args.set)
            rows[w].append(r)
            lo, hi = r["lambda_range"]
            print(f"| {s} | {w:g} | {r['G_rel']:.3f} | {r['penalty']:.4f} | {r['lambda_median']:.4f} | "
                  f"{lo:.4f} – {hi:.4f} | {r['r_test']:.3f} |", flush=True)
    for w, rs in rows.items():
        mean = lambda k: np.mean([r[k] for r in rs])                    # noqa: E731
        print(f"| **mean** (n={len(rs)}) | {w:g} | {mean('G_rel'):.3f} | {mean('penalty'):.4f} | "
              f"{mean('lambda_median'):.4f} | | {mean('r_test'):.3f} |")


if __name__ == "__main__":
    main()
