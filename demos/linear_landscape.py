"""What BOLD FC identifies, without sampling noise: the analytic FC of the linearised network on a grid.

TVB simulates the demo's ground truth (``tvb_torchfit.demo.TRUTH``) and its FC is the target; for each grid
point (G x w_p, and G x J_i) ``tvb_torchfit.analyzers.linear.linear_bold_fc`` gives the expected BOLD FC of the model
linearised around its low fixed point (autograd of the model ports, TVB's Bold kernel; delays ignored), and
this script prints and plots its correlation with the target and its mean FC. Points past the bifurcation
(no stable low state) are left blank.

    python demos/linear_landscape.py [--target-ms 600000] [--out out/linear_landscape]
"""
import argparse
import os
import warnings

import numpy as np
import torch

import tvb_torchfit
from tvb_torchfit.demo import SETTINGS, TRUTH, demo_simulator
from tvb_torchfit.analyzers.linear import FixedPointError, linear_bold_fc
from tvb_torchfit.roundtrip.validation import bold_fc


def grid(twin, target, name, values, Gs):
    iu = np.triu_indices(target.shape[0], 1)
    r = np.full((len(Gs), len(values)), np.nan)
    level = np.full_like(r, np.nan)
    for i, G in enumerate(Gs):
        for j, v in enumerate(values):
            p = {"G": torch.tensor([G], dtype=torch.float64), name: torch.tensor([v], dtype=torch.float64)}
            try:
                fc, _ = linear_bold_fc(twin, p)
            except FixedPointError:
                continue
            fc = fc.detach().numpy()
            r[i, j] = np.corrcoef(fc[iu], target[iu])[0, 1]
            level[i, j] = fc[iu].mean()
    return r, level


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-ms", type=float, default=600e3)
    ap.add_argument("--out", default="out/linear_landscape")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module="tvb")
    os.makedirs(args.out, exist_ok=True)
    sim = demo_simulator(**TRUTH, **{k: SETTINGS[k] for k in ("J_i", "nsig", "dt", "tr")}, seed=7)
    (_, bold), = sim.run(simulation_length=args.target_ms)
    target = bold_fc(bold, int(np.ceil(20000.0 / SETTINGS["tr"])))
    twin = tvb_torchfit.from_tvb(sim)
    Gs = np.linspace(0.06, 0.09, 7)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for row, (name, values) in enumerate((("w_p", np.linspace(0.4, 0.8, 9)), ("J_i", np.linspace(0.7, 1.3, 9)))):
        r, level = grid(twin, target, name, values, Gs)
        print(f"\nFC correlation with the TVB target (rows G {Gs.round(4).tolist()}, columns {name} "
              f"{values.round(3).tolist()}; truth G {TRUTH['G']}, {name} "
              f"{TRUTH.get(name, SETTINGS.get(name))}):\n{np.round(r, 3)}\nmean FC:\n{np.round(level, 3)}")
        np.savetxt(os.path.join(args.out, f"r_G_{name}.csv"), r, delimiter=",", fmt="%.5f")
        np.savetxt(os.path.join(args.out, f"meanfc_G_{name}.csv"), level, delimiter=",", fmt="%.5f")
        for col, (data, title) in enumerate(((r, "FC correlation with target"), (level, "mean FC"))):
            ax = axes[row, col]
            im = ax.imshow(data, origin="lower", aspect="auto",
                           extent=(values[0], values[-1], Gs[0], Gs[-1]))
            ax.plot(TRUTH.get(name, SETTINGS.get(name)), TRUTH["G"], "r*", ms=12)
            ax.set(xlabel=name, ylabel="G", title=f"{title} (linearised)")
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "linear_landscape.png"), dpi=100)
    print(f"\nfigure: {os.path.join(args.out, 'linear_landscape.png')}")


if __name__ == "__main__":
    main()
