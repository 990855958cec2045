"""``fit``: parameters of a TVB simulator's torch twin fitted to a target BOLD FC.

After Griffiths et al. (2022): the brain network is a deep net that receives noise on its input and emits
BOLD; the FC of the simulated BOLD is compared with the empirical FC and the parameters are moved by a PyTorch
optimiser. ``fit`` composes the pieces, each in its own module:

* ``config``: the settings (``FitConfig``) and their checks;
* ``problem``: the simulator, targets and TR, checked; the spec the estimator simulates;
* ``parameters``: what is fitted (``ParameterSet``: bounds, priors, the unconstrained reparametrisation);
* ``estimators``: the FC at the current values, from the stochastic twin over sliding windows with truncated
  back-propagation (``method="twin"``) or analytically from the linearised network (``method="linear"``);
* ``objective``: the named, weighted loss terms (``losses``), combined once;
* ``loop``: the optimiser loop with history, early stopping, progress bar and checkpoints as callbacks;
* ``checkpoint``: atomic, resumable checkpoints (``fit(..., checkpoint=path)`` resumes to the bit-identical
  result on CPU, also after a crash);
* ``result``: ``FitResult`` and the choice of the reported values.

Nothing here draws from torch's global random generator: the twin's noise comes from its own seeded
``torch.Generator``s (``seed``), so a fit neither depends on nor changes the caller's global RNG state.
"""
import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import numpy as np
import torch

from .. import checks
from .. import files as ckpt_files
from ..errors import ParameterError
from ..version import __version__
from ..simulator.adapter import read_simulator
from ..simulator.twin import TorchSimulator
from . import checkpoint as ckpt
from . import loop
from .config import FitConfig, make_config
from .estimators import LinearEstimator, TwinEstimator
from .objective import Objective
from .observation import make_observation
from .parameters import ParamSpec, ParameterSet
from .problem import FitProblem, define, spec_params, twin_spec
from .result import FitResult, provenance, select_values

__all__ = ["fit", "prepare_fit", "PreparedFit", "FitConfig", "FitResult"]


def fit(sim, target_fc, params: Mapping[str, ParamSpec], *, target_bold=None,
        checkpoint: Optional[Union[str, os.PathLike]] = None, checkpoint_every: int = 5, resume: bool = True,
        progress: bool = True, **settings) -> FitResult:
    """Fit ``params`` of the configured TVB simulator ``sim`` so that its BOLD FC matches ``target_fc``.

    ``params`` maps TVB names to bounds or ``Param``s, e.g. ``{"G": (0.5, 4.0), "w_p": (0.8, 2.0),
    "J_i": Param(0.5, 1.5, regionwise=True, prior=(1.0, 0.2)), "nsig": (1e-5, 1e-3)}``. Start values
    come from the TVB objects. ``sim`` needs a Bold monitor (its period is the TR). Any field of
    ``FitConfig`` can be given as a keyword (``n_steps``, ``window_trs``, ``batch``, ``lr``, ...).
    ``sim`` itself is not modified; use ``FitResult.apply(sim)`` to write the fitted values back.
    ``target_bold`` (time, nodes), sampled at the TR, is needed only for the FCD term (``fcd_weight`` > 0):
    the distribution of its FCD values (windows of ``fcd_window_trs`` every ``fcd_step_trs``, taken in every
    ``fc_window_trs``-long stretch of it, ``stats.fcd_values_in_stretches``, so that they hold the window lags the
    simulated FC window holds; choose ``fc_window_trs`` near the session's length for the FCD over all lags) is
    compared with the simulated one by the exact Wasserstein-1 distance; and for the
    variance term (``variance_weight`` > 0): each node's BOLD variance, in the units of the simulator's Bold
    monitor (meaningful where the target comes from TVB or is in those units).
    """
    run = prepare_fit(sim, target_fc, params, target_bold=target_bold, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume, progress=progress, **settings)
    loop.optimise(run.step, run.state, run.cfg.n_steps, run.callbacks)
    return run.result()


@dataclass
class PreparedFit:
    """A fit ready to run (what ``fit`` does between its checks and its loop): the checked problem, the parameter
    set, estimator, optimiser and schedule, history and loop state, the objective and the loop's callbacks.
    ``step()`` is one optimiser step (``loop.make_step``); ``result()`` the ``FitResult`` of the steps taken.
    Batched fits (``inference.batched``) drive several of them in one pass."""
    sim: object
    problem: FitProblem
    pset: ParameterSet
    estimator: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    objective: Objective
    history: dict
    state: loop.LoopState
    start: dict
    config_doc: dict
    recorder: loop.History
    callbacks: list
    stepper: object                  # the loop's step for this optimiser (``loop.make_step``)

    @property
    def cfg(self) -> FitConfig:
        return self.problem.cfg

    def step(self):
        return self.stepper()

    def result(self) -> FitResult:
        history, cfg, pset = self.history, self.cfg, self.pset
        fitted, selected, coefficients = select_values(history, cfg, self.estimator.fic_J_i,
                                                       pset.values_from_coefficients)
        last_fc = self.recorder.last_fc
        prov = provenance(self.sim, self.problem, len(history["loss"]), selected)
        if cfg.method == "linear":
            prov["retreats"] = self.estimator.retreats
        return FitResult(params=fitted, history=history, config=self.config_doc, start=self.start,
                         last_iterate=pset.numpy(), coefficients=coefficients, provenance=prov,
                         fc=None if last_fc is None else last_fc.cpu().numpy())


def prepare_fit(sim, target_fc, params: Mapping[str, ParamSpec], *, target_bold=None,
                checkpoint: Optional[Union[str, os.PathLike]] = None, checkpoint_every: int = 5, resume: bool = True,
                progress: bool = True, **settings) -> PreparedFit:
    """Everything ``fit`` does before its loop (same arguments): checks, the problem, the parameter set, the
    estimator and optimiser, a resumed checkpoint or the warm-up, the callbacks."""
    cfg = make_config(settings)
    if not isinstance(params, Mapping):
        raise ParameterError(f"params={params!r}: expected a dict of TVB names to (low, high) bounds or Params, "
                             "e.g. {'G': (0.5, 4.0)}.")
    checkpoint_every = checks.integer(checkpoint_every, "checkpoint_every", minimum=1)
    resume, progress = checks.boolean(resume, "resume"), checks.boolean(progress, "progress")
    if checkpoint is not None:
        checkpoint = checks.writable_file(checkpoint, "checkpoint")      # up front, before the work
    problem = define(sim, target_fc, target_bold, cfg)
    if not params:
        raise ParameterError("params is empty: name at least one parameter to fit, e.g. {'G': (0.5, 4.0)}.")
    pset, estimator, optimizer = _build(problem, params)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.n_steps) \
        if cfg.schedule == "cosine" else None
    history = {"loss": [], "fc_corr": [], "params": {k: [] for k in pset.names},
               "coefficients": {k: [] for k in pset.mapped_names}}
    state, start = loop.LoopState(), pset.numpy()
    config_doc = dict(dataclasses.asdict(cfg), params={k: dataclasses.asdict(v) for k, v in pset.specs.items()},
                      tr_ms=problem.tr_ms, dt=float(sim.integrator.dt), n_nodes=problem.n_nodes,
                      model=type(sim.model).__name__)
    objective = Objective(cfg, problem.target, pset, problem.target_fcd, problem.target_variance)
    stepper = loop.make_step(estimator, objective, pset, optimizer, scheduler)
    prints = None
    if checkpoint is not None:
        ckpt_files.remove_stale_temporaries(checkpoint)
        prints = ckpt.fingerprint(problem_parts(problem, config_doc, target_bold))
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        ckpt.restore(checkpoint, config_doc, pset, optimizer, scheduler, estimator, history, state, prints, stepper)
    else:
        estimator.warm_up(pset)
    recorder = loop.History(history)
    callbacks = [recorder]
    if cfg.patience is not None:
        early = loop.EarlyStopping(history, cfg.patience)
        callbacks += [early]
    callbacks += [loop.ProgressBar(cfg.n_steps, state.step)] if progress else []
    if checkpoint is not None:
        snapshot = lambda: ckpt.payload(config_doc, pset, optimizer, scheduler, estimator, history, state,  # noqa
                                          prints, stepper)
        callbacks.append(loop.Checkpointing(checkpoint, checkpoint_every, cfg.n_steps, snapshot, progress))
    callbacks += [loop.Stop(early)] if cfg.patience is not None else []
    return PreparedFit(sim=sim, problem=problem, pset=pset, estimator=estimator, optimizer=optimizer,
                       scheduler=scheduler, objective=objective, history=history, state=state, start=start,
                       config_doc=config_doc, recorder=recorder, callbacks=callbacks,
                       stepper=stepper)


def problem_parts(problem: FitProblem, config_doc, target_bold) -> dict:
    """What a fit checkpoint is bound to (``checkpoint.fingerprint``), part by part: each named in the message
    when a resume finds it changed."""
    spec = read_simulator(problem.sim)
    conn = problem.sim.connectivity
    settings = {k: v for k, v in config_doc.items() if k != "params"}
    return {"network weights": spec.weights,
            "delays (tract lengths, speed)": [np.asarray(conn.tract_lengths), np.asarray(conn.speed),
                                             spec.idelays],
            "target FC": problem.target, "target BOLD": None if target_bold is None else np.asarray(target_bold),
            "simulator parameters": [spec.parameters()[k] for k in sorted(spec.parameters())] +
                                    [np.array(sorted(spec.parameters()), dtype=str)],
            "fitted parameters' specs": config_doc["params"], "settings": settings,
            "dt, model and monitors": [spec.dt, type(problem.sim.model).__name__, type(problem.sim.integrator).__name__,
                                       [f"{type(m).__name__}({float(m.period)})" for m in problem.sim.monitors]],
            "start state": [spec.current_state, spec.history] if problem.cfg.initial_state == "tvb" else "low",
            "package version": __version__}


def _build(problem: FitProblem, params):
    """(ParameterSet, estimator, optimiser) for the problem's method; start values read from the TVB objects."""
    cfg = problem.cfg
    if cfg.method == "linear":
        spec = read_simulator(problem.sim)
        pset = _parameter_set(params, spec_params(spec), problem, spec.model)
        optimizer = loop.make_optimizer(cfg, pset.parameters())
        return pset, LinearEstimator(spec, cfg, pset, optimizer), optimizer
    obs = make_observation(cfg.observation, problem.sim.monitors[problem.bold_index], problem.tr_ms, cfg.batch,
                           cfg.balloon_period_ms)
    twin = TorchSimulator(twin_spec(problem, obs.monitors), noise="torch", batch=cfg.batch,
                          dtype=getattr(torch, cfg.dtype), seed=cfg.seed, compile=cfg.compile)
    pset = _parameter_set(params, twin.params, problem, twin.model)
    optimizer = loop.make_optimizer(cfg, pset.parameters())
    return pset, TwinEstimator(twin, obs, cfg, problem.tr_steps), optimizer


def _parameter_set(params, start, problem: FitProblem, model_port) -> ParameterSet:
    pset = ParameterSet(params, start, problem.n_nodes)
    positive = set(getattr(model_port, "positive_parameters", ())) | {"noise.nsig"}
    for name, p in pset.specs.items():
        if name in positive and p.low < 0:
            raise ParameterError(f"parameter {name!r}: bounds ({p.low}, {p.high}) reach below 0, outside its domain "
                                 f"({name} > 0{' or = 0' if name == 'noise.nsig' else ''}); give low >= 0.")
    if problem.cfg.fic_rate is not None and "J_i" in pset.names:
        raise ParameterError("J_i is set by feedback inhibition control (fic_rate=...); do not also fit it.")
    return pset
