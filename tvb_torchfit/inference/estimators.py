"""How the FC of a parameter set is estimated at each optimiser step: ``TwinEstimator`` (``method="twin"``) and
``LinearEstimator`` (``method="linear"``). Both give a ``Prediction`` for the objective, ``accept`` a step
once the optimiser has taken it, and hand their state to checkpoints.

``TwinEstimator``: the stochastic torch twin (``batch`` noise realisations) integrates ``window_trs`` TRs per
step, observed through TVB's Bold monitor or the Balloon-Windkessel model (``observation``); the window's BOLD
is appended to the detached BOLD of earlier windows and FC is taken over the last ``fc_window_trs`` TRs of each
realisation, then averaged over realisations. The gradient flows through the window only (truncated
back-propagation): state, delay history and Bold buffers are carried over, detached. A warm-up without
gradients (``warmup_ms``, default the Bold monitor's 20 s transient plus one FC window) comes first; its BOLD
after the transient fills the first FC window.

``LinearEstimator``: the analytic BOLD FC of the network linearised around its low fixed point
(``analyzers.linear.linear_bold_fc`` on the ``SimulatorSpec`` and the step's values: no noise, no twin, exact
gradients). A step past the bifurcation (no stable low state reached) is taken back: the last accepted
parameters and optimiser state are restored, the learning rate halved, and the step retried.
"""
import copy
import math
from typing import Dict, Optional

import torch

from ..analyzers.bifurcation import from_spec, from_twin
from ..analyzers.fic import fic_J_i, fic_state
from ..analyzers.linear import FixedPointError, LinearInfo, LinearNetwork, linear_bold_fc, linear_network
from ..errors import ParameterError
from ..simulator.adapter import SimulatorSpec
from . import losses
from .objective import Prediction
from .problem import BOLD_TRANSIENT_MS

MAX_RETREATS = 20


def set_params(twin, values: Dict[str, torch.Tensor]) -> None:
    """Set every value (TVB names, public layout) on the twin."""
    for name, value in values.items():
        twin.set_param(name, value)


def cut_level_gradient(window: torch.Tensor) -> torch.Tensor:
    """The window's BOLD (batch, time, nodes) with the same values but no gradient through its mean level.

        x' = x - mean_t(x) + stop_gradient(mean_t(x))

    The FC window joins this window to the detached BOLD of earlier ones; a parameter change shifts the
    new window's mean BOLD level (e.g. mean S_e), and that step against the past would act on FC like a
    fluctuation common to all nodes: a gradient that is an artefact of truncation (over a long stationary
    run the level does not enter FC at all). Only the fluctuations within the window keep their gradient.
    """
    level = window.mean(dim=1, keepdim=True)
    return window - level + level.detach()


class TwinEstimator:
    """FC of ``batch`` stochastic twin realisations over a sliding window of TRs (truncated BPTT)."""

    def __init__(self, twin, observation, cfg, tr_steps: int):
        self.twin, self.obs, self.cfg, self.tr_steps = twin, observation, cfg, tr_steps
        self.buffer: Optional[torch.Tensor] = None          # detached BOLD of the FC window so far

    def model_values(self, pset) -> Dict[str, torch.Tensor]:
        """The fitted values, plus J_i by feedback inhibition control when ``fic_rate`` is set."""
        values = pset.values()
        if self.cfg.fic_rate is not None:    # (the twin's J_i of the last step, graph freed, must not enter)
            values["J_i"] = fic_J_i(self.twin, dict(values, J_i=self.twin.params["J_i"].detach()),
                                    target_rate=self.cfg.fic_rate)
        return values

    def warm_up(self, pset) -> None:
        cfg, tr_ms = self.cfg, self.tr_steps * self.twin.dt
        warmup = cfg.warmup_ms if cfg.warmup_ms is not None else BOLD_TRANSIENT_MS + cfg.fc_window_trs * tr_ms
        steps = int(math.ceil(warmup / self.twin.dt / self.tr_steps)) * self.tr_steps
        if steps == 0:                                   # warmup_ms=0: no warm-up, the first FC window fills itself
            self.buffer = None
            return
        with torch.no_grad():
            set_params(self.twin, self.model_values(pset))
            bold = self.obs.run(self.twin, steps)
        self.twin.detach_()
        self.obs.detach_()
        warm = bold[:, int(math.ceil(BOLD_TRANSIENT_MS / tr_ms)):]
        self.buffer = warm[:, -cfg.fc_window_trs:] if warm.shape[1] else None

    def predict(self, values: Dict[str, torch.Tensor]) -> Prediction:
        set_params(self.twin, values)
        seq = cut_level_gradient(self.obs.run(self.twin, self.cfg.window_trs * self.tr_steps))
        if self.buffer is not None:
            seq = torch.cat((self.buffer, seq), dim=1)
        seq = seq[:, -self.cfg.fc_window_trs:]
        return Prediction(fc=losses.fc(seq).mean(dim=0), bold=seq, variance=losses.bold_variance(seq).mean(dim=0),
                          bifurcation_inputs=lambda: from_twin(self.twin))

    def accept(self, pred: Prediction) -> None:
        self.twin.detach_()
        self.obs.detach_()
        self.buffer = pred.bold.detach()

    def bad_gradient(self, names) -> None:
        raise ParameterError(f"method='twin': the gradient of {', '.join(names)} is not finite at this step; the "
                             "twin's BOLD may have diverged: narrow the bounds, lower lr, or use float64.")

    def fic_J_i(self, values: Dict[str, torch.Tensor]) -> torch.Tensor:
        return fic_J_i(self.twin, values, target_rate=self.cfg.fic_rate)

    def state_dict(self) -> Dict:
        return {"twin": self.twin.state_dict(), "observation": self.obs.state_dict(), "buffer": self.buffer}

    def load_state_dict(self, state: Dict) -> None:
        self.twin.load_state_dict(state["twin"])
        self.obs.load_state_dict(state["observation"])
        self.buffer = state["buffer"]


class LinearEstimator:
    """Analytic BOLD FC of the network linearised around its low fixed point, with the retreat past it."""

    def __init__(self, spec: SimulatorSpec, cfg, pset, optimizer):
        self.spec, self.cfg, self.pset, self.optimizer = spec, cfg, pset, optimizer
        self.last = None                 # (pset, optimizer) state dicts at the last accepted step's point
        self.before_last = None          # the same one step earlier: where a non-finite gradient goes back to
        self.fixed_point: Optional[torch.Tensor] = None      # warm start of the next step's fixed point
        self.retreats = 0

    def model_values(self, pset) -> Dict[str, torch.Tensor]:
        values = pset.values()
        if self.cfg.fic_rate is not None:
            values["J_i"], state = fic_state(self.spec, values, target_rate=self.cfg.fic_rate)
            if self.fixed_point is None:     # FIC's state is the network's fixed point at these J_i: Newton starts
                self.fixed_point = state.detach()      # there instead of relaxing from the low start
        return values

    def warm_up(self, pset) -> None:
        pass

    def predict(self, values: Dict[str, torch.Tensor], retreat: bool = True) -> Optional[Prediction]:
        """The FC at ``values``, or None where there is no stable low state: after taking the step back
        (``retreat``), or with nothing changed (``retreat=False``: a line search's trial point)."""
        try:
            fc, info = linear_bold_fc(self.spec, values, initial=self.fixed_point)
        except FixedPointError as err:
            return self.retreat(err) if retreat else None
        return self.prediction(values, fc, info)

    def network(self, values: Dict[str, torch.Tensor]) -> LinearNetwork:
        """The linearised network at ``values`` (what ``predict`` computes the FC of; for batches of subjects)."""
        return linear_network(self.spec, values)

    def retreat(self, err: FixedPointError) -> None:
        """Take the step back: restore the last accepted parameters and optimiser state and halve the learning
        rate (``FixedPointError`` once there is nothing to go back to or after ``MAX_RETREATS``); None."""
        self.count_retreat(err)
        self.pset.load_state_dict(copy.deepcopy(self.last[0]))
        self.optimizer.load_state_dict(copy.deepcopy(self.last[1]))
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        self.fixed_point = None                          # next try relaxes from the low start again
        return None

    def count_retreat(self, err: Exception) -> None:
        """Count a step taken back; ``FixedPointError`` once there is nothing to go back to (the start itself has
        no stable low state or no finite gradient) or after ``MAX_RETREATS``."""
        self.retreats += 1
        if self.last is None or self.retreats > MAX_RETREATS:
            raise FixedPointError(f"method='linear': {err} (at {self.pset.numpy()}); start from values where "
                                  "the low state is stable, or narrow the bounds.") from err

    def bad_gradient(self, names) -> None:
        """A non-finite gradient of ``names`` (e.g. eig's backward at nearly equal eigenvalues) belongs to the current
        point, the last accepted one: going back there would meet it again. The step that reached it is taken back
        instead (``retreat`` to the point before, with a halved learning rate, so the next step lands elsewhere);
        None. At the start point there is nothing to go back to (``FixedPointError``)."""
        self.last = self.before_last
        return self.retreat(FixedPointError(f"non-finite gradient of {', '.join(names)}"))

    def prediction(self, values: Dict[str, torch.Tensor], fc: torch.Tensor, info: LinearInfo) -> Prediction:
        """The step's ``Prediction`` from the FC and ``LinearInfo`` at ``values``; the step is remembered as the
        last accepted one and its fixed point warm-starts the next."""
        self.before_last = self.last
        self.last = (copy.deepcopy(self.pset.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        self.fixed_point = info.fixed_point.detach()
        return Prediction(fc=fc, variance=torch.diagonal(info.covariance), lambda_max=info.lambda_max,
                          bifurcation_inputs=lambda: from_spec(self.spec, values))

    def accept(self, pred: Prediction) -> None:
        pass

    def fic_J_i(self, values: Dict[str, torch.Tensor]) -> torch.Tensor:
        return fic_J_i(self.spec, values, target_rate=self.cfg.fic_rate)

    def state_dict(self) -> Dict:
        return {"last": self.last, "before_last": self.before_last, "fixed_point": self.fixed_point,
                "retreats": self.retreats}

    def load_state_dict(self, state: Dict) -> None:
        self.last, self.fixed_point, self.retreats = state["last"], state["fixed_point"], int(state["retreats"])
        self.before_last = state.get("before_last")
