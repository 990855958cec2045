"""A synthetic cohort for throughput measurements: SC perturbations of an HCP subject, each with a BOLD whose FC is
the linear model's FC at a known G (README "Cohorts").

Subject i's SC: HCP 101309's DTI weights (self connections removed, homotopic left-right weights raised by 1 x max,
weights / max: the recipe's preprocessing, done here once) with every existing edge multiplied by exp(0.3 z_ij),
z_ij ~ N(0, 1) symmetric, then / max; tract lengths the subject's. Its truth: G = g_i x G_c with g_i uniform in
[0.6, 0.9] (G_c and J_i by FIC of that SC, the recipe's model: ReducedWongWangExcInh w_p 0.8, nsig 3e-7, dt 1 ms,
Bold at TR 720 ms). Its BOLD: 1200 independent Gaussian volumes whose correlation is the linear model's BOLD FC
there (``analyzers.linear.linear_bold_fc``) — the FC is the linear model's, the time course is not a BOLD
time course (FCD means nothing on it). Written: ``OUT/subjects/sub-XXX/{sc.csv, lengths.npy, labels.txt,
bold.npy, truth.json}``, ``OUT/run.toml`` (a cheap subject: the recipe's global stage only, G in 0.5-0.95 G_c from
0.8 G_c, J_i following FIC, linear, 10 steps instead of 25; one 30 s TVB validation, first 10 s dropped) and
``OUT/cohort.toml``.

    python demos/synthetic_cohort.py --n 200 --out out/synth200            # (or --part 0/2 and --part 1/2 at once)
    tvb-torchfit cohort out/synth200/cohort.toml --workers 2 --out out/synth200/cohort
"""
import argparse
import json
import os
import textwrap
import warnings

import numpy as np
import torch
from tqdm import tqdm

from tvb_torchfit.analyzers.critical import critical_coupling
from tvb_torchfit.analyzers.linear import linear_bold_fc
from tvb_torchfit.data import datasets
from tvb_torchfit.data import preprocessing as pp
from tvb_torchfit.inference.stages import with_fic
from tvb_torchfit.roundtrip.writeback import apply_params, clone_simulator
from tvb_torchfit.simulator.adapter import read_simulator

TR = 720.0
RUN = """
[run]
name = "synthetic"

[data]
tr = 720.0

[preprocessing]
homotopic = 0.0               # done in the synthetic SC already

[validation]
length = 30000.0
discard = 10000.0
fcd_window = 7200.0
fcd_step = 1440.0
seeds = [1001]

[[stages]]
name = "global"
method = "linear"
fic = "follow"
G = 0.8
[stages.fit]
n_steps = 10
lr = 0.1
stability_margin = 0.001
[stages.params.G]
low = 0.5
high = 0.95
relative = "G_c"
"""
COHORT = """
[cohort]
name = "synthetic"
config = "run.toml"

[subjects]
folders = "subjects/sub-*"
[subjects.files]
weights = "sc.csv"
tract_lengths = "lengths.npy"
region_labels = "labels.txt"
bold = "bold.npy"
"""


def base_connectivity(subject: str = "101309"):
    s = datasets.load_hcp_subject(subject)
    s = pp.preprocess(s, remove_self_connections=True)
    s = pp.add_homotopic(s, 1.0)
    s = pp.preprocess(s, sc_normalize="max")
    return s.connectivity


def simulator(weights, lengths, labels, centres):
    from tvb.simulator import coupling, integrators, models, monitors, noise, simulator as tvb_sim
    conn = datasets.make_connectivity(weights, lengths, labels, centres)
    conn.speed = np.array([3.0])
    return tvb_sim.Simulator(model=models.ReducedWongWangExcInh(w_p=np.array([0.8])), connectivity=conn,
                             coupling=coupling.Linear(a=np.array([1.0])),
                             integrator=integrators.HeunStochastic(dt=1.0, noise=noise.Additive(nsig=np.array([3e-7]))),
                             monitors=(monitors.Bold(period=TR),)).configure()


def make_subject(folder, i: int, base, rng) -> None:
    w0 = np.asarray(base.weights, dtype=float)
    z = rng.standard_normal(w0.shape)
    z = (z + z.T) / np.sqrt(2)
    w = w0 * np.exp(0.3 * z)
    w /= w.max()
    sim = simulator(w, base.tract_lengths, base.region_labels, base.centres)
    G_c = critical_coupling(read_simulator(sim), 3.0)
    g = float(rng.uniform(0.6, 0.9))
    sim = with_fic(apply_params(clone_simulator(sim), {"G": np.array([g * G_c])}), 3.0)
    fc = linear_bold_fc(read_simulator(sim))[0].detach().numpy()
    chol = np.linalg.cholesky(fc + 1e-10 * np.eye(fc.shape[0]))
    bold = rng.standard_normal((1200, fc.shape[0])) @ chol.T
    os.makedirs(folder, exist_ok=True)
    np.savetxt(os.path.join(folder, "sc.csv"), w, delimiter=",")
    np.save(os.path.join(folder, "lengths.npy"), np.asarray(base.tract_lengths))
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(str(x) for x in base.region_labels) + "\n")
    np.save(os.path.join(folder, "bold.npy"), bold)
    with open(os.path.join(folder, "truth.json"), "w") as f:
        json.dump({"G_over_G_c": g, "G": g * G_c, "G_c": G_c}, f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="subjects")
    ap.add_argument("--out", default="out/synth200")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", default="0/1", help="K/P: make only subjects i with i %% P == K (P processes at once)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module="tvb")
    torch.set_num_threads(1)
    base = base_connectivity()
    k, p = (int(x) for x in args.part.split("/"))
    for i in tqdm(range(k, args.n, p), desc="subjects"):
        folder = os.path.join(args.out, "subjects", f"sub-{i:03d}")
        if not os.path.exists(os.path.join(folder, "truth.json")):       # subject i's draws: RandomState([seed, i])
            make_subject(folder, i, base, np.random.RandomState([args.seed, i]))
    for name, text in (("run.toml", RUN), ("cohort.toml", COHORT)):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(textwrap.dedent(text).lstrip())
    print(f"{args.n} subjects in {args.out}/subjects; run: tvb-torchfit cohort {args.out}/cohort.toml --workers 2")


if __name__ == "__main__":
    main()
