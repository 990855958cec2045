"""Loss-landscape slices: which of G and w_p does BOLD FC identify? (evidence for the fit-demo)

TVB simulates the fit-demo's ground truth (``tvb_torchfit.demo.TRUTH``) and its FC is the target; the torch
twin then evaluates a grid of (G, w_p) with ``--realisations`` noise realisations each, all in one batch
(no gradients), and reports the FC correlation with the target and the FC RMSE at every grid point, plus
the two 1-D slices through the truth. Writes demos/out/landscape.csv and demos/out/landscape.png.

    python demos/landscape.py --length 200000
"""
import argparse
import itertools
import os
import warnings

import numpy as np
import torch

import tvb_torchfit
from tvb_torchfit.inference import losses
from tvb_torchfit.demo import SETTINGS, TRUTH, demo_simulator
from tvb_torchfit.roundtrip.validation import bold_fc

warnings.filterwarnings("ignore", module="tvb")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=float, default=200000.0, help="ms simulated per grid point")
    ap.add_argument("--G", type=float, nargs="+", default=[0.06, 0.065, 0.07, 0.075, 0.08, 0.085, 0.09])
    ap.add_argument("--w_p", type=float, nargs="+", default=[0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75])
    ap.add_argument("--realisations", type=int, default=1)
    args = ap.parse_args()
    kw = {k: SETTINGS[k] for k in ("J_i", "nsig", "dt", "tr")}
    discard = int(np.ceil(20000.0 / SETTINGS["tr"]))
    truth = demo_simulator(**TRUTH, **kw, seed=7)
    (_, bold), = truth.run(simulation_length=args.length)
    target = torch.as_tensor(bold_fc(bold, discard))
    grid = list(itertools.product(args.G, args.w_p))
    R = args.realisations
    twin = tvb_torchfit.from_tvb(demo_simulator(**TRUTH, **kw), batch=len(grid) * R, dtype=torch.float32, seed=3)
    twin.set_param("G", torch.tensor([[g] for g, _ in grid for _ in range(R)]))
    twin.set_param("w_p", torch.tensor([[w] for _, w in grid for _ in range(R)]))
    with torch.no_grad():
        (t, sim_bold), = twin.run(simulation_length=args.length)
    fcs = losses.fc(sim_bold[:, discard:, 0, :, 0].double()).view(len(grid), R, 76, 76).mean(1)
    r = losses.fc_corr(fcs, target).numpy().reshape(len(args.G), len(args.w_p))
    rmse = losses.loss_rmse(fcs, target).numpy().reshape(len(args.G), len(args.w_p))
    os.makedirs("demos/out", exist_ok=True)
    with open("demos/out/landscape.csv", "w") as f:
        f.write("G,w_p,fc_corr,fc_rmse\n")
        for i, g in enumerate(args.G):
            for j, w in enumerate(args.w_p):
                f.write(f"{g},{w},{r[i, j]:.4f},{rmse[i, j]:.4f}\n")
    print(f"FC correlation with the target (truth G={TRUTH['G']}, w_p={TRUTH['w_p']}); rows G, columns w_p")
    print("      " + "".join(f"{w:>7.3f}" for w in args.w_p))
    for i, g in enumerate(args.G):
        print(f"{g:6.3f}" + "".join(f"{v:7.3f}" for v in r[i]))
    print("FC RMSE")
    for i, g in enumerate(args.G):
        print(f"{g:6.3f}" + "".join(f"{v:7.3f}" for v in rmse[i]))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, z, title in ((axes[0], r, "FC correlation with target"), (axes[1], rmse, "FC RMSE")):
        im = ax.imshow(z, origin="lower", aspect="auto", extent=(args.w_p[0], args.w_p[-1], args.G[0], args.G[-1]))
        ax.plot([TRUTH["w_p"]], [TRUTH["G"]], "r*", ms=12, label="truth")
        ax.set_xlabel("w_p"), ax.set_ylabel("G"), ax.set_title(title), ax.legend()
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig("demos/out/landscape.png", dpi=100)


if __name__ == "__main__":
    main()
