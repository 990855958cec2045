"""What is fitted to what: a configured TVB simulator, a target FC (and BOLD) and the parameters, checked and
turned into the pieces a fit is made of (the simulator spec it simulates, the target tensors, the TR).

For ``method="twin"`` the spec is that of a clone of the user's simulator with the fit's start (all state
variables at ``low_value``, ``initial_state="low"``) and the observation's monitors (``clone_simulator``: TVB
itself configures the history, its float32 buffer and the fresh monitors). For ``method="linear"`` the spec is
the user's simulator as configured: the analytic FC needs only its parameters, weights and Bold kernel.
"""
import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from .. import checks, stats
from ..errors import ParameterError
from ..roundtrip.writeback import clone_simulator, find_bold, low_state_initial_conditions, monitor_list
from ..simulator.adapter import SimulatorSpec, read_simulator
from .config import FitConfig

BOLD_TRANSIENT_MS = 20000.0             # TVB's Bold monitor: its 20 s buffer starts at zero


@dataclass
class FitProblem:
    """The checked inputs of a fit."""
    cfg: FitConfig
    sim: object                          # the user's TVB Simulator (never changed)
    target: torch.Tensor                 # (N, N) float64
    target_fcd: Optional[torch.Tensor]   # FCD values of target_bold, when the FCD term is on
    target_variance: Optional[torch.Tensor]   # (N,) each node's variance of target_bold, when the variance term is on
    bold_index: int                      # the Bold monitor among sim.monitors
    tr_steps: int                        # integration steps per TR
    n_nodes: int

    @property
    def tr_ms(self) -> float:
        return self.tr_steps * float(self.sim.integrator.dt)


def define(sim, target_fc, target_bold, cfg: FitConfig) -> FitProblem:
    """Check the simulator (supported, configured, with a Bold monitor whose period is a multiple of dt) and
    the targets; ``ParameterError`` / ``UnsupportedTVBObject`` say what is wrong."""
    read_simulator(sim)                                   # clear errors for unsupported / unconfigured
    bold_index = find_bold(sim)
    tr_steps = bold_period_steps(sim, bold_index)
    n = sim.connectivity.number_of_regions
    target = stats.check_target_fc(target_fc, n)
    checks.informative_fc(target.numpy(), "target FC")
    fcd = target_fcd(target_bold, cfg, n) if cfg.fcd_weight else None
    var = stats.bold_variance(checked_bold(target_bold, n, f"variance_weight={cfg.variance_weight}")) \
        if cfg.variance_weight else None
    return FitProblem(cfg=cfg, sim=sim, target=target, target_fcd=fcd, target_variance=var, bold_index=bold_index,
                      tr_steps=tr_steps, n_nodes=n)


def bold_period_steps(sim, bold_index: int) -> int:
    period, dt = float(monitor_list(sim)[bold_index].period), float(sim.integrator.dt)
    checks.bold_period_ms(period, "the Bold monitor's (the TR's)")
    steps = period / dt
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ParameterError(f"the Bold monitor's period (TR) {period} ms is not a multiple of the integration "
                             f"step dt = {dt} ms; choose dt dividing the TR (e.g. {period / math.ceil(steps):g} ms).")
    return int(round(steps))


def checked_bold(target_bold, n: int, needed_by: str) -> np.ndarray:
    """The empirical BOLD (time, nodes), checked, for a term (``needed_by``) that reads it."""
    if target_bold is None:
        raise ParameterError(f"{needed_by} needs target_bold= (the empirical BOLD, shaped (time, nodes), sampled at "
                             "the TR).")
    bold = checks.array(target_bold, "target_bold", finite_values=False)
    if bold.ndim != 2 or bold.shape[1] != n:
        raise ParameterError(f"target_bold has shape {bold.shape}; expected (time, {n}) (time by nodes, at the TR).")
    if not np.isfinite(bold).all():
        raise ParameterError(f"target_bold has {int((~np.isfinite(bold)).sum())} non-finite values; expected finite.")
    checks.signal(bold, "target_bold")                    # constant regions, absurd scale
    return bold


def target_fcd(target_bold, cfg: FitConfig, n: int) -> torch.Tensor:
    """FCD values of the empirical BOLD (time, nodes) for the FCD term, with clear errors: those of every
    ``fc_window_trs``-long stretch of it, pooled (``stats.fcd_values_in_stretches``), so that they hold the same
    window lags as the simulated FC window's FCD they are compared with."""
    bold = checked_bold(target_bold, n, f"fcd_weight={cfg.fcd_weight} (to compare FCD distributions)")
    if bold.shape[0] < cfg.fcd_window_trs + cfg.fcd_step_trs:
        raise ParameterError(f"target_bold has {bold.shape[0]} TRs: too short for two FCD windows of "
                             f"{cfg.fcd_window_trs} TRs {cfg.fcd_step_trs} apart.")
    return stats.fcd_values_in_stretches(torch.as_tensor(bold), cfg.fcd_window_trs, cfg.fcd_step_trs,
                                         cfg.fc_window_trs)


def twin_spec(problem: FitProblem, monitors) -> SimulatorSpec:
    """The spec the twin starts from: the user's simulator with the fit's start and ``monitors``."""
    cfg, sim = problem.cfg, problem.sim
    ic = low_state_initial_conditions(sim, cfg.low_value) if cfg.initial_state == "low" else None
    return read_simulator(clone_simulator(sim, initial_conditions=ic, monitors=monitors))


def spec_params(spec: SimulatorSpec) -> Dict[str, torch.Tensor]:
    """The parameters of a spec in the twin's public layout and names (``TorchSimulator.params``), float64."""
    return {name: torch.as_tensor(v, dtype=torch.float64) for name, v in spec.parameters().items()}
