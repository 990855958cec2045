"""Builders of real TVB simulators for the tests (no numbers from our own code)."""
import warnings

import numpy as np

warnings.filterwarnings("ignore", module="tvb")
from tvb.datatypes.connectivity import Connectivity  # noqa: E402
from tvb.simulator import coupling, integrators, models, monitors, noise, simulator  # noqa: E402


def connectivity(name: str = "connectivity_76.zip", speed: float = 3.0) -> Connectivity:
    conn = Connectivity.from_file(name)
    conn.speed = np.array([speed])
    return conn


def small_connectivity(n: int = 5, seed: int = 0, speed: float = 3.0) -> Connectivity:
    """A random asymmetric n-node connectome with self-connections and delays of a few ms."""
    rng = np.random.RandomState(seed)
    w = rng.uniform(0.0, 1.0, (n, n)) * (rng.uniform(size=(n, n)) < 0.7)
    np.fill_diagonal(w, 0.5)
    lengths = rng.uniform(5.0, 30.0, (n, n))
    np.fill_diagonal(lengths, 0.0)
    conn = Connectivity(weights=w, tract_lengths=lengths, region_labels=np.array([f"r{i}" for i in range(n)]),
                        centres=rng.uniform(size=(n, 3)), speed=np.array([speed]))
    return conn


def build(model=None, integrator=None, mons=None, conn=None, a=0.02, b=0.0, configure=True, history_seed=None):
    """A TVB Simulator, configured unless ``configure=False``.

    ``history_seed``: TVB draws the random initial history of a *deterministic* integrator from numpy's global
    RNG (a stochastic one uses its noise stream, seeded by ``noise_seed``); with a seed that draw is
    reproducible (the global RNG's state is restored afterwards)."""
    sim = simulator.Simulator(
        model=model if model is not None else models.ReducedWongWangExcInh(),
        connectivity=conn if conn is not None else connectivity(),
        coupling=coupling.Linear(a=np.array([a]), b=np.array([b])),
        integrator=integrator if integrator is not None else integrators.HeunDeterministic(dt=0.1),
        monitors=mons if mons is not None else (monitors.Raw(),))
    if not configure:
        return sim
    if history_seed is None:
        return sim.configure()
    saved = np.random.get_state()
    np.random.seed(history_seed)
    try:
        return sim.configure()
    finally:
        np.random.set_state(saved)


def heun_stochastic(dt=0.1, nsig=1e-4, seed=42):
    return integrators.HeunStochastic(dt=dt, noise=noise.Additive(nsig=np.atleast_1d(nsig), noise_seed=seed))
