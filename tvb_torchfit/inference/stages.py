"""Staged fits (the recipe of ``demos/fit_hcp.py`` as library code): a list of ``Stage``s, each fitted with
``fit`` from the previous stage's fitted values, with the FIC state written into the TVB simulator where asked.

A stage says what is fitted (TVB names: any model parameter, ``coupling.a``, ``noise.nsig``; global, region-wise,
or on maps: ``Param``), how (``method`` 'linear' or 'twin' and any ``FitConfig`` setting) and how the simulator is
set before it:

* ``G``: the model's G set to ``G x G_c`` (G_c: ``analyzers.critical.critical_coupling`` of the simulator as given
  to ``fit_stages``, computed once) before the stage; bounds of a parameter given with ``relative="G_c"`` are
  fractions of G_c too (``{"G": {"low": 0.5, "high": 0.95, "relative": "G_c"}}``);
* ``fic``: ``"none"`` (J_i as the previous stage left it), ``"start"`` (J_i by feedback inhibition control at the
  stage's start values, then fitted or kept) or ``"follow"`` (J_i follows FIC at every step, ``fit(fic_rate=...)``;
  J_i cannot then be fitted). With ``"start"`` and ``"follow"`` the simulator's initial history is the FIC state
  (``with_fic``);
* a prior mean ``"start"`` (``{"prior": ["start", 0.3]}``) is the stage's start value (e.g. J_i's FIC values).

``fit_stages`` returns one ``StageResult`` per stage: the ``FitResult`` and the configured TVB simulator at the
fitted values (``FitResult.apply`` on the stage's start simulator, FIC state as initial history where FIC holds).
Finished stages can be handed in (``done``) to resume: they are not refitted, their values are used as they are.

``fit_stages_batch``: the same for B subjects whose stages are all linear, each stage fitted for all of them in one
pass (``inference.batched``), every subject failing or succeeding on its own.
"""
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..analyzers.critical import critical_coupling
from ..analyzers.fic import fic_state
from ..errors import ParameterError
from ..roundtrip.writeback import apply_params, clone_simulator, low_state_initial_conditions, read_params
from ..simulator.adapter import read_simulator
from ..simulator.registry import canonical_name
from .fitting import FitResult, fit
from .parameters import Param, ParamSpec

__all__ = ["Stage", "StageResult", "with_fic", "fit_stages", "fit_stages_batch", "stage_params", "FIC_MODES"]

FIC_MODES = ("none", "start", "follow")
RELATIVE = ("G_c",)


@dataclass
class Stage:
    """One fit of a staged recipe (module docstring). ``settings``: ``FitConfig`` fields (n_steps, lr, losses and
    weights, stability_margin, ...); ``fic_rate`` and ``method`` are set from the stage's own fields."""
    name: str
    params: Mapping[str, Union[ParamSpec, Dict[str, Any]]]
    method: str = "linear"
    settings: Dict[str, Any] = field(default_factory=dict)
    G: Optional[float] = None                 # G / G_c set before the stage (None: keep)
    fic: str = "none"                         # "none", "start" or "follow"


@dataclass
class StageResult:
    name: str
    result: FitResult
    simulator: Any                            # the configured TVB Simulator at the fitted values
    start: Dict[str, np.ndarray]              # the stage's start values of its parameters
    G_c: Optional[float] = None               # the critical coupling the stage's G and bounds refer to


def with_fic(sim, fic_rate: float = 3.0):
    """A clone of ``sim`` with J_i by feedback inhibition control (every node at ``fic_rate`` Hz at the network's
    fixed point, ``analyzers.fic.fic_state``) and its initial history at that state (mean over nodes of each state
    variable, ``low_state_initial_conditions``)."""
    J, x = fic_state(read_simulator(sim), {}, target_rate=fic_rate)
    sim = apply_params(clone_simulator(sim), {"J_i": J.detach().numpy()})
    ic = low_state_initial_conditions(sim, x.detach().numpy().mean(axis=1))
    return clone_simulator(sim, initial_conditions=ic)


def _needs_G_c(stages: Sequence[Stage]) -> bool:
    return any(s.G is not None or any(isinstance(p, Mapping) and p.get("relative") for p in s.params.values())
               for s in stages)


def stage_params(stage: Stage, start: Mapping[str, np.ndarray], G_c: Optional[float]) -> Dict[str, Param]:
    """The stage's ``Param``s with relative bounds scaled by G_c and prior means ``"start"`` resolved."""
    out = {}
    for name, spec in stage.params.items():
        if isinstance(spec, Mapping):
            spec = dict(spec)
            rel = spec.pop("relative", None)
            if rel is not None:
                if rel not in RELATIVE:
                    raise ParameterError(f"stage {stage.name!r}, parameter {name!r}: relative={rel!r}; expected one "
                                         f"of {RELATIVE}.")
                spec["low"], spec["high"] = spec["low"] * G_c, spec["high"] * G_c
            prior = spec.get("prior")
            if prior is not None and isinstance(prior[0], str):
                if prior[0] != "start":
                    raise ParameterError(f"stage {stage.name!r}, parameter {name!r}: prior mean {prior[0]!r}; "
                                         "expected a number, one per region, or 'start'.")
                mean = np.asarray(start[canonical_name(name)], dtype=np.float64)
                spec["prior"] = (float(mean[0]) if mean.size == 1 else tuple(mean.tolist()), prior[1])
            spec = Param(**spec)
        out[name] = spec
    return out


def _start_simulator(sim, stage: Stage, G_c: Optional[float], fic_rate: float):
    if stage.G is not None:
        sim = apply_params(clone_simulator(sim), {"G": np.array([stage.G * G_c])})
    if stage.fic in ("start", "follow"):
        sim = with_fic(sim, fic_rate)
    return sim


def _check(stages: Sequence[Stage]) -> None:
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ParameterError(f"stage names must be distinct; got {names}.")
    for s in stages:
        if s.fic not in FIC_MODES:
            raise ParameterError(f"stage {s.name!r}: fic={s.fic!r}; expected one of {FIC_MODES}.")
        if s.fic == "follow" and "J_i" in s.params:
            raise ParameterError(f"stage {s.name!r}: J_i follows FIC (fic='follow'); it cannot also be fitted.")
        if s.G is not None and not (isinstance(s.G, (int, float)) and math.isfinite(s.G) and s.G > 0):
            raise ParameterError(f"stage {s.name!r}: G={s.G!r}; expected a positive fraction of G_c.")


def fit_stages(sim, train_fc, stages: Sequence[Stage], *, fic_rate: float = 3.0, target_bold=None,
               G_c: Optional[float] = None, checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
               done: Optional[Mapping[str, FitResult]] = None, progress: bool = True,
               on_stage: Optional[Callable[[StageResult], None]] = None) -> List[StageResult]:
    """Fit ``stages`` in order to ``train_fc``, each from the previous one's fitted values (module docstring).

    ``G_c``: given, or computed when a stage needs it (``critical_coupling(read_simulator(sim), fic_rate)``).
    ``checkpoint_dir``: each stage's fit checkpoint is ``checkpoint_dir/<name>.ckpt`` (a rerun resumes it).
    ``done``: FitResults of stages already finished (by name): not refitted. ``on_stage`` is called after every
    stage (finished or reused) with its ``StageResult``. ``sim`` itself is not changed.
    """
    _check(stages)
    done = dict(done or {})
    if G_c is None and _needs_G_c(stages):
        G_c = critical_coupling(read_simulator(sim), fic_rate)
    out: List[StageResult] = []
    current = sim
    for stage in stages:
        start_sim = _start_simulator(current, stage, G_c, fic_rate)
        start = read_params(start_sim)
        if stage.name in done:
            result = done[stage.name]
        else:
            ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, f"{stage.name}.ckpt")
            result = fit(start_sim, train_fc, stage_params(stage, start, G_c), target_bold=target_bold,
                         checkpoint=ckpt, progress=progress, **_settings(stage, fic_rate))
        record = _stage_result(stage, result, start_sim, start, G_c, fic_rate)
        out.append(record)
        if on_stage is not None:
            on_stage(record)
        current = record.simulator
    return out


def _settings(stage: Stage, fic_rate: float) -> Dict[str, Any]:
    settings = dict(stage.settings, method=stage.method)
    if stage.fic == "follow":
        settings["fic_rate"] = fic_rate
    return settings


def _stage_result(stage: Stage, result: FitResult, start_sim, start, G_c, fic_rate: float) -> StageResult:
    fitted = result.apply(clone_simulator(start_sim))
    if stage.fic == "follow":                  # the FIC state at the fitted values as the initial history
        fitted = with_fic(fitted, fic_rate)
    return StageResult(stage.name, result, fitted, {k: v for k, v in start.items() if k in result.params}, G_c)


def fit_stages_batch(sims: Sequence[Any], train_fcs: Sequence[Any],
                     stages: Union[Sequence[Stage], Sequence[Sequence[Stage]]], *,
                     fic_rate: float = 3.0, target_bolds: Optional[Sequence[Any]] = None,
                     G_cs: Optional[Sequence[Optional[float]]] = None,
                     done: Optional[Sequence[Mapping[str, FitResult]]] = None, progress: bool = True,
                     on_stage: Optional[Callable[[int, StageResult], None]] = None
                     ) -> List[Union[List[StageResult], Exception]]:
    """``fit_stages`` of B subjects whose stages are all linear, each stage fitted for all of them together
    (``inference.batched.fit_batch``: every subject's result is its own ``fit_stages``'s, to round-off).

    Per subject (lists in the subjects' order): its simulator, training FC, BOLD (``target_bolds``), G_c (computed
    when None and needed) and finished stages (``done``). ``stages``: one list for all, or one list per subject (e.g.
    with the subject's own maps) with the same stage names. Returns per subject its ``StageResult``s, or the exception
    that stopped its stages (the others go on without it). ``on_stage(k, record)`` after every stage of subject k
    (an exception there is subject k's). No fit checkpoints are written.
    """
    from .batched import FitJob, fit_batch
    n = len(sims)
    per = [list(stages)] * n if not stages or isinstance(stages[0], Stage) else [list(x) for x in stages]
    for ss in per:
        _check(ss)
        if [s.name for s in ss] != [s.name for s in per[0]] or len(per) != n:
            raise ParameterError(f"stages: expected one list for all subjects or one per subject ({n}) with the "
                                 f"same names; got {[[s.name for s in x] for x in per]}.")
        for s in ss:
            if s.method != "linear":
                raise ParameterError(f"stage {s.name!r}: method={s.method!r}; batched stages are linear only "
                                     "(fit_stages fits the others).")
    target_bolds = list(target_bolds) if target_bolds is not None else [None] * n
    G_cs = list(G_cs) if G_cs is not None else [None] * n
    done = [dict(d or {}) for d in done] if done is not None else [{} for _ in range(n)]
    out: List[Union[List[StageResult], Exception]] = [[] for _ in range(n)]
    current = list(sims)
    for k in range(n):
        if G_cs[k] is None and _needs_G_c(per[k]):
            try:
                G_cs[k] = critical_coupling(read_simulator(sims[k]), fic_rate)
            except Exception as err:
                out[k] = err
    alive = lambda: [k for k in range(n) if not isinstance(out[k], Exception)]      # noqa: E731

    def finish(k, stage, result, start_sim, start):
        try:
            record = _stage_result(stage, result, start_sim, start, G_cs[k], fic_rate)
            if on_stage is not None:
                on_stage(k, record)
        except Exception as err:
            out[k] = err
            return
        out[k].append(record)
        current[k] = record.simulator

    for i in range(len(per[0]) if n else 0):
        jobs, fitted = [], []
        for k in alive():
            stage = per[k][i]
            try:
                start_sim = _start_simulator(current[k], stage, G_cs[k], fic_rate)
                start = read_params(start_sim)
                if stage.name in done[k]:
                    finish(k, stage, done[k][stage.name], start_sim, start)
                    continue
                job = FitJob(start_sim, train_fcs[k], stage_params(stage, start, G_cs[k]), _settings(stage, fic_rate),
                             target_bolds[k])
            except Exception as err:
                out[k] = err
                continue
            jobs.append(job)
            fitted.append((k, start_sim, start))
        for (k, start_sim, start), result in zip(fitted, fit_batch(jobs, progress=progress)):
            if isinstance(result, Exception):
                out[k] = result
            else:
                finish(k, per[k][i], result, start_sim, start)
    return out
