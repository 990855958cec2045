"""Write a data set "of your own kind" for demos/own_data.toml: CSV/NPY files as a user would bring them.

The SC is tvb-data's connectivity_76 (weights / max, tract lengths in mm, labels); the BOLD is simulated by TVB
itself (ReducedWongWangExcInh, J_i by feedback inhibition control, G at 0.85 of its critical value, a region-wise
w_p that follows a smooth map, HeunStochastic, Bold at 720 ms), so the run has something to recover. A
"myelin-like" map (the w_p map plus noise) is written too.

    python demos/make_own_data.py [--out demos/own_data] [--length-ms 600000]
"""
import argparse
import os
import warnings

import numpy as np

import tvb_torchfit
from tvb_torchfit.analyzers.critical import critical_coupling
from tvb_torchfit.inference.stages import with_fic


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "own_data"))
    ap.add_argument("--length-ms", type=float, default=600000.0, help="length of the simulated BOLD, ms")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module="tvb")
    from tvb.datatypes.connectivity import Connectivity
    from tvb.simulator import coupling, integrators, models, monitors, noise, simulator
    conn = Connectivity.from_file("connectivity_76.zip")
    conn.weights = conn.weights / conn.weights.max()
    conn.speed = np.array([3.0])
    n = conn.weights.shape[0]
    y = conn.centres[:, 1]
    w_map = (y - y.mean()) / y.std()                          # an anterior-posterior axis
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh(w_p=0.8 + 0.05 * w_map), connectivity=conn,
        coupling=coupling.Linear(a=np.array([1.0])),
        integrator=integrators.HeunStochastic(dt=1.0, noise=noise.Additive(nsig=np.array([3e-7]),
                                                                           noise_seed=args.seed)),
        monitors=(monitors.Bold(period=720.0),)).configure()
    G_c = critical_coupling(tvb_torchfit.read_simulator(sim))
    sim = with_fic(tvb_torchfit.apply_params(sim, {"G": np.array([0.85 * G_c])}))
    print(f"G_c = {G_c:.4f}; simulating {args.length_ms / 1000:g} s of BOLD with TVB ...", flush=True)
    (_, bold), = sim.run(simulation_length=args.length_ms)
    bold = bold[28:, 0, :, 0]                                 # the Bold monitor's first 20 s dropped
    os.makedirs(args.out, exist_ok=True)
    np.savetxt(os.path.join(args.out, "weights.csv"), conn.weights, delimiter=",")
    np.savetxt(os.path.join(args.out, "tract_lengths.csv"), conn.tract_lengths, delimiter=",")
    with open(os.path.join(args.out, "labels.txt"), "w") as f:
        f.write("\n".join(str(x) for x in conn.region_labels) + "\n")
    np.save(os.path.join(args.out, "bold.npy"), bold)
    rng = np.random.RandomState(args.seed)
    np.savetxt(os.path.join(args.out, "myelin_like.csv"), w_map + 0.3 * rng.standard_normal(n), delimiter=",")
    print(f"wrote {args.out}: weights.csv, tract_lengths.csv, labels.txt, bold.npy {bold.shape}, myelin_like.csv")


if __name__ == "__main__":
    main()
