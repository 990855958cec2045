"""Run your TVB simulator and its tvb_torchfit twin side by side, then take a gradient.

Copy this script and replace the simulator with your own configured one.
    python demos/compare_with_tvb.py
"""
import warnings

import numpy as np
import torch
from tvb.datatypes.connectivity import Connectivity
from tvb.simulator import coupling, integrators, models, monitors, noise, simulator

import tvb_torchfit

warnings.filterwarnings("ignore", module="tvb")

conn = Connectivity.from_file("connectivity_76.zip")
conn.speed = np.array([3.0])                                   # mm/ms; sets the delays
sim = simulator.Simulator(
    model=models.ReducedWongWangExcInh(w_p=np.array([0.7]), G=np.array([0.5])),
    connectivity=conn,
    coupling=coupling.Linear(a=np.array([1.0 / 3.0])),         # TVB's default a = 1/256: set it
    integrator=integrators.HeunStochastic(dt=0.5, noise=noise.Additive(nsig=np.array([1e-4]), noise_seed=42)),
    monitors=(monitors.Bold(period=720.0), monitors.TemporalAverage(period=10.0)),
).configure()

# 1. the promise, measured: TVB and the twin from the same start, TVB's own random numbers
print(tvb_torchfit.compare(sim, simulation_length=30e3, exact=True, noise="tvb"))

# 2. the twin in the float64 fitting mode, 8 noise realisations at once, gradient of a BOLD statistic wrt G
twin = tvb_torchfit.from_tvb(sim, noise="torch", batch=8)
G = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
twin.set_param("G", G)
(bold_t, bold), (tavg_t, tavg) = twin.run(simulation_length=30e3)
print("Bold", tuple(bold.shape), "(batch, time, voi, nodes, modes); times (ms):", bold_t[:3].tolist(), "...")
loss = bold[:, 10:, 0, :, 0].var(dim=1).mean()                # mean BOLD variance of S_e after the transient
loss.backward()
print(f"d(mean BOLD variance)/dG = {G.grad.item():.4e}")
