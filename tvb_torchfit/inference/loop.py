"""The optimiser loop: one ``step`` per iteration, with what happens around it (history, early stopping,
progress bar, checkpoints) as callbacks.

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

from . import checkpoint as ckpt
from . import losses


@dataclass
class LoopState:
    step: int = 0
    best: float = math.inf          # early stopping: best smoothed loss so far
    since_best: int = 0


@dataclass
class StepRecord:
    loss: float
    fc_corr: float
    values: Dict[str, np.ndarray]   # the parameters after the step, TVB shapes
    fc: torch.Tensor                # the step's simulated FC (detached)
    coefficients: Dict[str, np.ndarray] = None   # mapped parameters: their coefficients after the step


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
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    estimator.accept(pred)
    fc = pred.fc.detach()
    return StepRecord(float(loss.detach()), float(losses.fc_corr(fc, objective.target)), pset.numpy(), fc,
                      pset.coefficients())


def optimise(step: Callable[[], Optional[StepRecord]], state: LoopState, n_steps: int,
             callbacks: Sequence = ()) -> None:
    try:
        while state.step < n_steps:
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
    stop = [bool(cb.on_step(state, record)) for cb in callbacks]
    return any(stop)


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
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, initial=initial, desc="fit", unit="step")

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
        if state.step % self.every == 0 or state.step == self.n_steps:
            ckpt.save(self.path, self.last)
        return False

    def on_interrupt(self, state):
        ckpt.save(self.path, self.last)
        if self.announce:
            print(f"\ninterrupted: fit state of step {self.last['loop']['step']} saved to {self.path}; "
                  "call fit again with the same arguments to resume.")
