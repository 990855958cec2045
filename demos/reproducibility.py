#!/usr/bin/env python
"""What moves the corrected fit's result besides the data: the arithmetic of the twin's correction runs.

The demo's protocol (``demo.CORRECTED``) on one recovery-study target (connectivity_76, the demo's truth, target seed
7, start 30 % low in both parameters, correction seed 0), with the correction runs of the stochastic twin done three
ways: the numba block kernel in float64 (the default), the eager torch twin in float64 (same noise stream, another
order of operations: the kind of difference another machine or library version makes) and the block kernel in
float32 (another precision, and torch draws another noise stream in float32). Prints the fitted values of each and
their relative differences to the default.

    python demos/reproducibility.py --out out/recovery_v2          # reuses the recovery study's cached target

Units: ms.
"""
import argparse
import multiprocessing
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recovery_study as rs  # noqa: E402

VARIANTS = {"kernel float64 (default)": None, "eager float64": {"kernel": False},
            "kernel float32": {"dtype": "float32"}}


def one(job):
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(1)
    from tvb_torchfit import demo
    from tvb_torchfit.inference.corrected import fit_corrected
    name, options, bold, truth = job
    start = {"G": truth["G"] * 0.7, "w_p": truth["w_p"] * 0.7}
    result = fit_corrected(rs.simulator(rs.REFERENCE, **start), np.corrcoef(bold.T),
                           {k: rs.BOUNDS[k] for k in ("G", "w_p")}, target_bold=bold, progress=False,
                           correction_twin=options, **demo.CORRECTED)
    return name, {k: float(np.ravel(v)[0]) for k, v in result.params.items()}, len(result.provenance["corrections"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/recovery", help="the recovery study's folder (its target is reused)")
    ap.add_argument("--target-seed", type=int, default=7)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging
    logging.disable(logging.WARNING)
    truth = rs.truth_for(rs.REFERENCE)
    bold, ceiling = rs.targets(os.path.join(args.out, "connectivity_76"), rs.REFERENCE, truth, args.target_seed, 600e3)
    jobs = [(name, options, bold, truth) for name, options in VARIANTS.items()]
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
        rows = pool.map(one, jobs)
    base = rows[0][1]
    print("| correction runs | G | w_p | rounds | G vs default | w_p vs default |\n|---|---|---|---|---|---|")
    for name, fitted, rounds in rows:
        d = {k: fitted[k] / base[k] - 1 for k in fitted}
        print(f"| {name} | {fitted['G']:.6g} | {fitted['w_p']:.6g} | {rounds} | {d['G']:+.2e} | {d['w_p']:+.2e} |")
    print(f"truth G {truth['G']}, w_p {truth['w_p']}; target seed {args.target_seed}, ceiling r {ceiling:.3f}")


if __name__ == "__main__":
    main()
