"""The optimiser loop: one ``step`` per iteration, with what happens around it (history, early stopping,
progress bar, checkpoints) as callbacks.

A step of a gradient optimiser (Adam, SGD, ...: ``optimiser_step``) evaluates the loss once and steps. A step of
``torch.optim.LBFGS`` (``LineSearchStep``, deterministic losses only) is one quasi-Newton iteration: a direction
from the curvature of the last steps and a strong-Wolfe line search along it, which evaluates the loss at trial
points; the loop stops once an iteration moves no unconstrained parameter by more than ``CONVERGED_STEP``.

``optimise(step, state, n_steps, callbacks)`` calls ``step()`` until ``state.step`` reaches ``n_steps``; a step
returns a ``StepRecord`` or None (rejected, e.g. the linear method took it back; it is retried and not counted).
After each accepted step every callback's ``on_step(state, record)`` runs in order; one that returns True stops
the loop (early stopping). On Ctrl-C each callback's ``on_interrupt(state)`` runs, then the interrupt goes on;
``close()`` always runs at the end.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..analyzers.linear import FixedPointError
from .. import progress
from . import checkpoint as ckpt
from . import losses


# LBFGS: an iteration that moves no unconstrained parameter (theta, ``parameters``) by more than this has converged
CONVERGED_STEP = 1e-7
# LBFGS: the loss the line search sees at a trial point with no stable low state or no finite gradient (a wall:
# it backs off towards the last good point)
BARRIER = 1e10
LINE_SEARCH_EVALUATIONS = 25          # at most, per LBFGS iteration (torch's strong-Wolfe default)


@dataclass
class LoopState:
    step: int = 0
    best: float = math.inf          # early stopping: best smoothed loss so far
    since_best: int = 0
    converged: bool = False         # LBFGS: the last iteration did not move (the loop ends)


@dataclass
class StepRecord:
    loss: float
    fc_corr: float
    values: Dict[str, np.ndarray]   # the parameters the step's loss was computed at (before the step), TVB shapes
    fc: torch.Tensor                # the step's simulated FC (detached)
    coefficients: Dict[str, np.ndarray] = None   # mapped parameters: their coefficients at the same point
    converged: bool = False         # the optimiser has converged: the loop ends after this step


def optimiser_step(estimator, objective, pset, optimizer, scheduler) -> Optional[StepRecord]:
    """One step: the estimator's prediction at the current values, the objective, backward, optimiser step."""
    values = estimator.model_values(pset)
    pred = estimator.predict(values)
    if pred is None:
        return None
    loss, _ = objective(pred)
    optimizer.zero_grad()
    loss.backward()
    return take_step(estimator, objective, pset, optimizer, scheduler, pred, loss)


def non_finite_gradients(pset) -> List[str]:
    """The names of the fitted parameters whose gradient has a non-finite entry after a backward pass."""
    return [name for name, p in zip(pset.names, pset.parameters())
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())]


def take_step(estimator, objective, pset, optimizer, scheduler, pred, loss: torch.Tensor) -> Optional[StepRecord]:
    """After the backward pass of ``loss``: the optimiser (and schedule) step, the estimator's ``accept``, the
    step's record. A non-finite gradient is never stepped on: the estimator's ``bad_gradient`` takes the step
    back (None: retried, not counted) or raises."""
    bad = non_finite_gradients(pset)
    if bad:
        return estimator.bad_gradient(bad)
    values, coefficients = pset.numpy(), pset.coefficients()      # where ``loss`` was computed
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    estimator.accept(pred)
    fc = pred.fc.detach()
    return StepRecord(float(loss.detach()), float(losses.fc_corr(fc, objective.target)), values, fc, coefficients)


def make_optimizer(cfg, parameters) -> torch.optim.Optimizer:
    """The torch optimiser ``cfg.optimizer`` at ``cfg.lr``; LBFGS one iteration per step, with the strong-Wolfe line
    search (``lr`` is its first trial step)."""
    if cfg.optimizer == "LBFGS":
        # max_eval: the iteration's own evaluation + torch's default line search length (its default of
        # max_iter * 5 // 4 would leave the line search no evaluation at all with max_iter=1)
        return torch.optim.LBFGS(parameters, lr=cfg.lr, max_iter=1, max_eval=1 + LINE_SEARCH_EVALUATIONS,
                                 line_search_fn="strong_wolfe")
    return getattr(torch.optim, cfg.optimizer)(parameters, lr=cfg.lr)


class LineSearchStep:
    """One ``torch.optim.LBFGS`` iteration per call (``max_iter=1``, strong-Wolfe line search) on the linear
    method's deterministic loss. The record is the iteration's first point (where it starts): its loss, values and
    FC; the line search's last point starts the next iteration and is not evaluated twice (the closure keeps the
    loss, gradient and FC of the last point it evaluated). Used with the linear estimator only (its ``accept`` is
    empty, so it is not called; the config refuses LBFGS for the twin).

    A trial point with no stable low state (past the bifurcation: no stationary FC) or no finite gradient is a wall
    to the line search: its loss is ``BARRIER`` with a zero gradient, and the search backs off towards the last good
    point (nothing is taken back, ``lr`` is kept). So every iteration starts at a good point (the line search's
    lowest), except the fit's first: a start without a stable low state or a finite gradient there is the
    estimator's ``FixedPointError`` (``count_retreat`` with nothing to go back to)."""

    def __init__(self, estimator, objective, pset, optimizer):
        self.estimator, self.objective, self.pset, self.optimizer = estimator, objective, pset, optimizer
        self.memo = None                 # {theta, loss, grads, fc} of the last good point evaluated
        self.at_wall = False             # the closure's last evaluation met the wall

    def theta(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.pset.parameters()])

    def closure(self) -> torch.Tensor:
        theta = self.theta()
        if self.memo is None or not torch.equal(self.memo["theta"], theta):
            self.optimizer.zero_grad()
            pred = self.estimator.predict(self.estimator.model_values(self.pset), retreat=False)
            if pred is not None:
                loss, _ = self.objective(pred)
                loss.backward()
            if pred is None or non_finite_gradients(self.pset):
                self.at_wall = True
                for p in self.pset.parameters():
                    p.grad = torch.zeros_like(p)
                return torch.tensor(BARRIER, dtype=torch.float64)
            self.memo = {"theta": theta, "loss": loss.detach(), "fc": pred.fc.detach(),
                         "grads": [p.grad.detach().clone() for p in self.pset.parameters()]}
        for p, g in zip(self.pset.parameters(), self.memo["grads"]):
            p.grad = g.clone()
        return self.memo["loss"]

    def __call__(self) -> Optional[StepRecord]:
        before, values, coefficients = self.theta(), self.pset.numpy(), self.pset.coefficients()
        self.at_wall = False
        self.closure()
        if self.at_wall:                                 # the fit's start: no direction from here
            self.estimator.count_retreat(FixedPointError("no stable low state or no finite gradient"))
            return None
        loss, fc = self.memo["loss"], self.memo["fc"]
        self.optimizer.step(self.closure)
        moved = float((self.theta() - before).abs().max())
        return StepRecord(float(loss), float(losses.fc_corr(fc, self.objective.target)), values, fc, coefficients,
                          converged=moved <= CONVERGED_STEP)

    def state_dict(self) -> Dict:
        """The last evaluation: a resumed fit reuses it as the uninterrupted one does (re-evaluating a point from
        another warm start of its fixed point differs in the last bits)."""
        return {"memo": self.memo}

    def load_state_dict(self, state: Dict) -> None:
        self.memo = state.get("memo")


def make_step(estimator, objective, pset, optimizer, scheduler) -> Callable[[], Optional[StepRecord]]:
    """The loop's step for this optimiser: ``LineSearchStep`` for LBFGS, else ``GradientStep`` (``optimiser_step``)."""
    if isinstance(optimizer, torch.optim.LBFGS):
        return LineSearchStep(estimator, objective, pset, optimizer)
    return GradientStep(estimator, objective, pset, optimizer, scheduler)


class GradientStep:
    """``optimiser_step`` as the loop's step (it keeps no state of its own between steps)."""

    def __init__(self, estimator, objective, pset, optimizer, scheduler):
        self.args = (estimator, objective, pset, optimizer, scheduler)

    def __call__(self) -> Optional[StepRecord]:
        return optimiser_step(*self.args)

    def state_dict(self) -> Dict:
        return {}

    def load_state_dict(self, state: Dict) -> None:
        pass


def optimise(step: Callable[[], Optional[StepRecord]], state: LoopState, n_steps: int,
             callbacks: Sequence = ()) -> None:
    try:
        while state.step < n_steps and not state.converged:
            record = step()
            if record is None:
                continue
            if count_step(state, record, callbacks):
                break
    except KeyboardInterrupt:
        for cb in callbacks:
            cb.on_interrupt(state)
        raise
    finally:
        for cb in callbacks:
            cb.close()


def count_step(state: LoopState, record: StepRecord, callbacks: Sequence) -> bool:
    """An accepted step: count it and run every callback's ``on_step``; True when one of them stops the loop."""
    state.step += 1
    state.converged = record.converged
    stop = [bool(cb.on_step(state, record)) for cb in callbacks]
    return any(stop) or record.converged


class Callback:
    def on_step(self, state: LoopState, record: StepRecord) -> bool:
        return False

    def on_interrupt(self, state: LoopState) -> None:
        pass

    def close(self) -> None:
        pass


class History(Callback):
    """The fit's history (loss, FC r and parameters per step) and its last FC."""

    def __init__(self, history: Dict):
        self.history, self.last_fc = history, None

    def on_step(self, state, record):
        self.history["loss"].append(record.loss)
        self.history["fc_corr"].append(record.fc_corr)
        for k, v in record.values.items():
            self.history["params"][k].append(v)
        for k, v in (record.coefficients or {}).items():
            self.history["coefficients"][k].append(v)
        self.last_fc = record.fc
        return False


class EarlyStopping(Callback):
    """Stop once the loss, smoothed over ``patience // 2`` steps, has not improved by 1e-4 for ``patience`` steps."""

    def __init__(self, history: Dict, patience: int):
        self.history, self.patience = history, patience
        self.stop = False

    def on_step(self, state, record):
        smoothed = float(np.mean(self.history["loss"][-max(1, self.patience // 2):]))
        if smoothed < state.best - 1e-4:
            state.best, state.since_best = smoothed, 0
        else:
            state.since_best += 1
        self.stop = state.since_best >= self.patience
        return False                      # the decision is taken after the checkpoint (``Stop``)


class Stop(Callback):
    """Ends the loop when ``EarlyStopping`` said so (last in the list, so that the step is checkpointed first)."""

    def __init__(self, early: EarlyStopping):
        self.early = early

    def on_step(self, state, record):
        return self.early.stop


class ProgressBar(Callback):
    """A tqdm bar with the loss, FC r and the parameters (a region-wise one as its mean)."""

    def __init__(self, total: int, initial: int):
        self.bar = progress.bar(total, "fit", "step", initial=initial)

    def on_step(self, state, record):
        fmt = lambda v: f"{v.item():.4g}" if v.size == 1 else f"<{v.mean():.3g}>"   # noqa: E731
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record.loss:.4f}", fc_r=f"{record.fc_corr:.3f}",
                             **{k: fmt(v) for k, v in record.values.items()})
        return False

    def close(self):
        self.bar.close()


class Checkpointing(Callback):
    """Keep a snapshot of every step boundary; write it every ``every`` steps, at the last step and on Ctrl-C."""

    def __init__(self, path, every: int, n_steps: int, snapshot: Callable[[], Dict], announce: bool):
        self.path, self.every, self.n_steps, self.snapshot, self.announce = path, every, n_steps, snapshot, announce
        self.last = snapshot()

    def on_step(self, state, record):
        self.last = self.snapshot()
        if state.step % self.every == 0 or state.step == self.n_steps or state.converged:
            ckpt.save(self.path, self.last)
        return False

    def on_interrupt(self, state):
        ckpt.save(self.path, self.last)
        if self.announce:
            print(f"\ninterrupted: fit state of step {self.last['loop']['step']} saved to {self.path}; "
                  "call fit again with the same arguments to resume.")
