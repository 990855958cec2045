"""Where does BOLD FC carry information? Sweep G x w_p of ReducedWongWangExcInh on connectivity_76.

The torch twin runs every (G, w_p) pair and two noise realisations of each in one batch (no gradients),
from the low state (all S = 0.05), for ``--length`` ms, and reports per pair: mean S_e, mean BOLD FC,
FC-SC correlation (log weights), and the noise ceiling: the FC correlation between the two
realisations, which no fit can beat. Writes demos/out/regime_sweep.csv.

    python demos/regime_sweep.py --length 300000
"""
import argparse
import itertools
import os
import time
import warnings

import numpy as np
import torch

import tvb_torchfit
from tvb_torchfit import stats
from tvb_torchfit.demo import demo_simulator

warnings.filterwarnings("ignore", module="tvb")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=float, default=300000.0)
    ap.add_argument("--G", type=float, nargs="+", default=[0.05, 0.06, 0.07, 0.08, 0.09, 0.1])
    ap.add_argument("--w_p", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--nsig", type=float, default=1e-4)
    ap.add_argument("--discard", type=float, default=21600.0, help="ms of BOLD dropped (transient)")
    args = ap.parse_args()
    sim = demo_simulator(G=args.G[0], w_p=args.w_p[0], nsig=args.nsig)      # low start; G, w_p set per member
    pairs = list(itertools.product(args.G, args.w_p))
    B = 2 * len(pairs)
    twin = tvb_torchfit.from_tvb(sim, batch=B, dtype=torch.float32, seed=11)
    twin.set_param("G", torch.tensor([[g] for g, _ in pairs for _ in range(2)]))
    twin.set_param("w_p", torch.tensor([[w] for _, w in pairs for _ in range(2)]))
    t0 = time.time()
    with torch.no_grad():
        (t, bold), = twin.run(simulation_length=args.length)
    bold = bold[:, t >= args.discard, 0, :, 0].double()              # (B, T, N)
    fcs = stats.fc(bold)
    sc = np.log1p(sim.connectivity.weights * 1e3)
    state = twin.state.double()
    os.makedirs("demos/out", exist_ok=True)
    rows = ["G,w_p,mean_S_e_end,mean_fc,fc_sc_r,ceiling_r"]
    print(f"{len(pairs)} pairs x 2 realisations, {args.length / 1e3:.0f} s each, {time.time() - t0:.0f} s wall")
    print(f"{'G':>5} {'w_p':>5} {'S_e':>6} {'meanFC':>7} {'FC-SC r':>8} {'ceiling r':>9}")
    for i, (g, w) in enumerate(pairs):
        a, b = fcs[2 * i], fcs[2 * i + 1]
        mean_fc = float(stats.upper((a + b) / 2).mean())
        fcsc = float(stats.fc_corr((a + b) / 2, torch.as_tensor(sc)))
        ceil = float(stats.fc_corr(a, b))
        se = float(state[0, :, 2 * i:2 * i + 2].mean())
        rows.append(f"{g},{w},{se:.4f},{mean_fc:.4f},{fcsc:.4f},{ceil:.4f}")
        print(f"{g:5.2f} {w:5.2f} {se:6.3f} {mean_fc:7.4f} {fcsc:8.3f} {ceil:9.3f}")
    with open("demos/out/regime_sweep.csv", "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
