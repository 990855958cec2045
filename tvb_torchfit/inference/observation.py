"""Observation models for fitting: how the twin's neural activity becomes the BOLD that FC is computed from.

``"bold"`` (default) — TVB's ``Bold`` monitor as configured on the user's simulator (its HRF kernel, period
and variables of interest), run inside the twin (``monitors.py``): the same BOLD TVB itself produces.

``"balloon"`` — the Balloon–Windkessel model of TVB's analyzer ``tvb.analyzers.fmri_balloon.BalloonModel``
(``balloon.BalloonWindkessel``, TVB's defaults), driven by a ``TemporalAverage`` of the Bold monitor's first
variable of interest over ``period`` ms and sampled every TR (the Bold monitor's period). The Balloon
state starts at the fixed point of the first input sample and is carried across windows, like the monitor's.

Both give BOLD shaped (batch, time, nodes) and carry their state across ``run`` calls; ``detach_`` cuts the
graph for truncated back-propagation; ``state_dict`` / ``load_state_dict`` go into fit checkpoints.
"""
from typing import Dict, List

import numpy as np
import torch

from ..analyzers.balloon import BalloonWindkessel
from ..errors import ParameterError

OBSERVATIONS = ("bold", "balloon")


def _nodes(data: torch.Tensor, batch: int) -> torch.Tensor:
    """Twin monitor output (time, voi, nodes, modes), batch axis first when batch > 1 -> (batch, time, nodes)."""
    if batch == 1:
        data = data.unsqueeze(0)
    return data[:, :, 0, :, 0]


class BoldMonitorObservation:
    """BOLD from the twin's copy of the simulator's TVB ``Bold`` monitor."""

    def __init__(self, bold_monitor, tr_ms: float, batch: int):
        self.monitors: List = [bold_monitor]
        self.tr_ms, self.batch = tr_ms, batch

    def run(self, twin, n_steps: int) -> torch.Tensor:
        (_, bold), = twin.run(n_steps=n_steps)
        return _nodes(bold, self.batch)

    def detach_(self) -> None:
        pass                                     # the monitor's buffers live in the twin (twin.detach_)

    def state_dict(self) -> Dict:
        return {}

    def load_state_dict(self, d: Dict) -> None:
        pass


class BalloonObservation:
    """TemporalAverage(``period`` ms) of the neural state -> Balloon–Windkessel (TVB's BalloonModel) -> every TR."""

    def __init__(self, bold_monitor, tr_ms: float, batch: int, period: float = 10.0):
        from tvb.simulator import monitors
        if not period > 0 or abs(round(tr_ms / period) * period - tr_ms) > 1e-9 * tr_ms:
            raise ParameterError(f"balloon_period_ms={period}: expected a positive period that divides the TR "
                                 f"({tr_ms} ms).")
        voi = np.asarray(bold_monitor.variables_of_interest if bold_monitor.variables_of_interest is not None
                         else [0])[:1]
        self.monitors = [monitors.TemporalAverage(period=float(period), variables_of_interest=voi)]
        self.tr_ms, self.batch, self.period = tr_ms, batch, float(period)
        self.balloon = BalloonWindkessel(dt=self.period)

    def run(self, twin, n_steps: int) -> torch.Tensor:
        (_, neural), = twin.run(n_steps=n_steps)
        x = _nodes(neural, self.batch)
        if self.balloon.state is None and x.shape[1]:
            self.balloon.set_steady_state(x[:, 0].detach())
        return self.balloon(x, tr=self.tr_ms)

    def detach_(self) -> None:
        self.balloon.detach_()

    def state_dict(self) -> Dict:
        return self.balloon.state_dict()

    def load_state_dict(self, d: Dict) -> None:
        self.balloon.load_state_dict(d)


def make_observation(kind: str, bold_monitor, tr_ms: float, batch: int, balloon_period_ms: float = 10.0):
    """The observation model ``kind`` ("bold" or "balloon") for a fit whose TR is the Bold monitor's period."""
    if kind == "bold":
        return BoldMonitorObservation(bold_monitor, tr_ms, batch)
    if kind == "balloon":
        return BalloonObservation(bold_monitor, tr_ms, batch, balloon_period_ms)
    raise ParameterError(f"observation={kind!r}: expected one of {', '.join(OBSERVATIONS)}.")
