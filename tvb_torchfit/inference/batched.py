"""Linear fits of several subjects in one pass: ``fit_batch``.

B fits with ``method="linear"`` (each its own TVB simulator, target FC, parameters and settings; the same model,
node count, dt and Bold monitor) step together: at every iteration the FC of every subject still fitting is computed
by one ``analyzers.linear.linear_fc_batch`` (fixed points, Jacobians, eigen-decompositions and Bold covariances on
(B, ...) stacks), the objective of each subject is its own, and one backward pass of their sum gives every subject
the gradient of its own loss (the subjects share no parameter). Each subject keeps everything else of its own fit
(``fitting.prepare_fit``): its parameter set and optimiser (Adam is elementwise, so one optimiser per subject is one
optimiser with a parameter group per subject), its retreats (``LinearEstimator.retreat``: only its own parameters,
optimiser state and learning rate are restored / halved), its history, early stopping and best step. So each
subject's ``FitResult`` is the one ``fit`` gives for it alone (to round-off; same steps and retreats), and a subject
whose fit fails (bad data, no stable start, too many retreats) gets its error while the others go on.

No checkpoints are written during a batched fit (a linear stage takes seconds to minutes); ``fit`` with
``checkpoint=`` is the resumable form.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..analyzers.linear import FixedPointError, linear_bold_fc, linear_fc_batch, stack_linear
from ..errors import ParameterError
from ..progress import bar as progress_bar
from . import loop
from .fitting import FitResult, PreparedFit, prepare_fit
from .parameters import ParamSpec

__all__ = ["FitJob", "fit_batch"]


@dataclass
class FitJob:
    """One subject's fit: the arguments of ``fit(sim, target_fc, params, target_bold=..., **settings)``."""
    sim: Any
    target_fc: Any
    params: Mapping[str, ParamSpec]
    settings: Dict[str, Any] = field(default_factory=dict)
    target_bold: Any = None


def _prepare(job: FitJob) -> PreparedFit:
    run = prepare_fit(job.sim, job.target_fc, job.params, target_bold=job.target_bold, progress=False,
                      **job.settings)
    if run.cfg.method != "linear":
        raise ParameterError(f"fit_batch fits method='linear' only; got method={run.cfg.method!r} (use fit).")
    if run.cfg.optimizer == "LBFGS":
        raise ParameterError("fit_batch steps every subject once per pass; optimizer='LBFGS' evaluates trial points "
                             "of its own line search: use fit for it, or a gradient optimiser such as 'Adam'.")
    return run


def _fcs(runs: Sequence[PreparedFit], values: Sequence[Dict]) -> List:
    """Per run (FC, LinearInfo) or its FixedPointError, in one batched pass; subjects that cannot be stacked
    (another model, node count, dt or Bold monitor) one by one."""
    nets = [r.estimator.network(v) for r, v in zip(runs, values)]
    try:
        stack_linear(nets)
    except ParameterError:
        out = []
        for r, v in zip(runs, values):
            try:
                out.append(linear_bold_fc(r.estimator.spec, v, initial=r.estimator.fixed_point))
            except FixedPointError as err:
                out.append(err)
        return out
    return linear_fc_batch(nets, initial=[r.estimator.fixed_point for r in runs])


def _iteration(runs: Dict[int, PreparedFit], failed: Dict[int, Exception]) -> List[int]:
    """One step of every run in ``runs`` (failures go to ``failed``); returns the runs that have finished."""
    values, ready = {}, []
    for k, run in runs.items():
        try:
            values[k] = run.estimator.model_values(run.pset)
            ready.append(k)
        except Exception as err:
            failed[k] = err
    steps = {}
    for k, res in zip(ready, _fcs([runs[k] for k in ready], [values[k] for k in ready])):
        run = runs[k]
        try:
            if isinstance(res, FixedPointError):
                run.estimator.retreat(res)                   # taken back; retried at the next iteration
                continue
            pred = run.estimator.prediction(values[k], *res)
            steps[k] = (pred, run.objective(pred)[0])
        except Exception as err:
            failed[k] = err
    for k in steps:
        runs[k].optimizer.zero_grad()
    if steps:
        sum(loss for _, loss in steps.values()).backward()
    finished = [k for k in runs if k in failed]
    for k, (pred, loss) in steps.items():
        run = runs[k]
        try:
            record = loop.take_step(run.estimator, run.objective, run.pset, run.optimizer, run.scheduler, pred, loss)
        except Exception as err:
            failed[k] = err
            finished.append(k)
            continue
        if record is None:                               # taken back; retried at the next iteration
            continue
        if loop.count_step(run.state, record, run.callbacks) or run.state.step >= run.cfg.n_steps:
            finished.append(k)
    return finished


def fit_batch(jobs: Sequence[FitJob], *, progress: bool = True) -> List[Union[FitResult, Exception]]:
    """Fit the linear ``jobs`` together (module docstring); per job its ``FitResult``, or the exception its fit
    raised (the others are not affected)."""
    out: List[Optional[Union[FitResult, Exception]]] = [None] * len(jobs)
    runs: Dict[int, PreparedFit] = {}
    for k, job in enumerate(jobs):
        try:
            runs[k] = _prepare(job)
        except Exception as err:
            out[k] = err
    active = {k: r for k, r in runs.items() if r.state.step < r.cfg.n_steps}
    failed: Dict[int, Exception] = {}
    bar = progress_bar(sum(r.cfg.n_steps for r in runs.values()), f"fit ({len(jobs)} subjects)", "step",
                       disable=not progress)
    try:
        while active:
            before = sum(r.state.step for r in runs.values())
            for k in _iteration(active, failed):
                del active[k]
            bar.update(sum(r.state.step for r in runs.values()) - before)
    finally:
        bar.close()
        for run in runs.values():
            for cb in run.callbacks:
                cb.close()
    for k, run in runs.items():
        if k in failed:
            out[k] = failed[k]
            continue
        try:
            out[k] = run.result()
        except Exception as err:
            out[k] = err
    return out
