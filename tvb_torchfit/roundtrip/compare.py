"""Run a TVB simulator and its torch twin from the same start and report their agreement.

This is the machinery the parity tests use; any TVB user can run it on their own set-up:

    >>> report = tvb_torchfit.compare(sim, simulation_length=1000.0)
    >>> print(report)

``compare`` runs ``sim`` itself, exactly as ``sim.run`` would (it is advanced by the run, like any
TVB run); the twin is built first, from the same starting point.
"""
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from .. import checks
from ..simulator import from_tvb
from ..simulator.adapter import monitor_name


@dataclass
class MonitorComparison:
    monitor: str
    samples_tvb: int
    samples_torch: int
    times_equal: bool
    max_abs: float          # max |torch - TVB|
    max_rel: float          # max |torch - TVB| / max |TVB|

    @property
    def same_shape(self) -> bool:
        return self.samples_tvb == self.samples_torch


@dataclass
class Comparison:
    simulation_length: float
    tvb_seconds: float
    torch_seconds: float
    monitors: List[MonitorComparison] = field(default_factory=list)
    settings: str = ""

    @property
    def max_abs(self) -> float:
        return max(m.max_abs for m in self.monitors)

    @property
    def max_rel(self) -> float:
        return max(m.max_rel for m in self.monitors)

    def __str__(self) -> str:
        lines = [f"TVB vs tvb_torchfit over {self.simulation_length:g} ms ({self.settings})",
                 f"wall time: TVB {self.tvb_seconds:.2f} s, torch {self.torch_seconds:.2f} s "
                 f"(ratio {self.tvb_seconds / max(self.torch_seconds, 1e-12):.2f}x)",
                 f"{'monitor':<40} {'samples':>13} {'times':>6} {'max abs diff':>13} {'max rel diff':>13}"]
        for m in self.monitors:
            samples = f"{m.samples_tvb}/{m.samples_torch}"
            lines.append(f"{m.monitor:<40} {samples:>13} {'same' if m.times_equal else 'DIFF':>6} "
                         f"{m.max_abs:>13.3e} {m.max_rel:>13.3e}")
        return "\n".join(lines)


def compare_outputs(tvb_out, torch_out, names: Optional[List[str]] = None) -> List[MonitorComparison]:
    """Per-monitor agreement of two ``Simulator.run`` results (TVB's numpy and the twin's torch)."""
    result = []
    for i, ((t_ref, x_ref), (t, x)) in enumerate(zip(tvb_out, torch_out)):
        t = t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
        x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        t_ref, x_ref = np.asarray(t_ref), np.asarray(x_ref)
        same = x.shape == x_ref.shape
        diff = np.abs(x - x_ref).max() if same and x.size else np.inf
        scale = np.abs(x_ref).max() if x_ref.size else 1.0
        result.append(MonitorComparison(
            monitor=names[i] if names else f"monitor {i}",
            samples_tvb=len(t_ref), samples_torch=len(t),
            times_equal=bool(t.shape == t_ref.shape and np.allclose(t, t_ref, rtol=0, atol=1e-9)),
            max_abs=float(diff), max_rel=float(diff / scale) if scale > 0 else float(diff)))
    return result


def compare(sim, simulation_length: float = 1000.0, *, exact: bool = False, noise: str = "tvb",
            dtype: torch.dtype = torch.float64, **twin_kwargs) -> Comparison:
    """Run ``sim`` (TVB's own integrator) and its torch twin from the same start; report the differences.

    ``sim`` must be configured. With ``noise="tvb"`` (default) a stochastic twin draws TVB's own random
    numbers, so the two runs are comparable step by step. The default (``exact=False``) checks the float64
    fitting mode on the twin's default (fast) path, which differs from TVB by TVB's float32 history (~1e-8);
    ``exact=True`` emulates that history and its summation order for last-digit agreement (eager, slower).
    """
    simulation_length = checks.positive(simulation_length, "simulation_length", unit="ms")
    checks.boolean(exact, "exact")
    twin = from_tvb(sim, exact=exact, noise=noise, dtype=dtype, **twin_kwargs)
    t0 = time.perf_counter()
    tvb_out = sim.run(simulation_length=simulation_length)
    t1 = time.perf_counter()
    with torch.no_grad():
        torch_out = twin.run(simulation_length=simulation_length)
    t2 = time.perf_counter()
    names = [monitor_name(m) for m in sim.monitors]
    settings = (f"{type(sim.model).__name__}, {type(sim.integrator).__name__}, dt={sim.integrator.dt} ms, "
                f"N={sim.connectivity.number_of_regions}, exact={exact}, noise={noise}")
    return Comparison(simulation_length=float(simulation_length), tvb_seconds=t1 - t0, torch_seconds=t2 - t1,
                      monitors=compare_outputs(tvb_out, torch_out, names), settings=settings)
