"""``fit_corrected``: the linear method's exact gradients, with the bias of the linearisation removed by the twin.

The analytic FC of ``method="linear"`` is deterministic (no sampling noise, exact gradients, seconds per fit) but it
is the FC of the network linearised around its low fixed point: it misses the nonlinearity and the delays, so its
FC and BOLD variance differ from what TVB's integrator gives at the same values (at the demo's truth, the linear BOLD
variance is ~12 % above TVB's). A fit of the linear model alone therefore lands where the *linear* statistics match
the target, not where TVB's do. ``fit_corrected`` removes that bias by iterated correction (the "defect
correction" / space-mapping idea): with ``S`` the simulated statistics (the stochastic twin: TVB's own equations,
delays and Bold monitor, ``correction_batch`` realisations of ``correction_ms``) and ``L`` the linear ones,

    round 0:  theta_0 = argmin loss(L(theta), D)
    round k:  d_k = S(theta_{k-1}) - L(theta_{k-1})           (Fisher z for FC, log for each node's variance)
              theta_k = argmin loss(L(theta) + d_k, D)  =  argmin loss(L(theta), D - d_k)

so that at the fixed point ``S(theta*)`` itself matches the target ``D``. The target is moved instead of the model
(``D - d_k``: FC ``tanh(atanh(D) - d_k)``, BOLD scaled per node by ``exp(-d_k / 2)``), so every round is an ordinary
``fit(method="linear")``. The twin runs with common random numbers (the same ``correction_seed`` every round), so
``d_k`` changes smoothly with theta; it stops early once no fitted value moves by more than ``tol`` (relative).
The result is the last round's ``FitResult``; ``provenance["corrections"]`` records every round (values, optimiser
steps taken, the twin's FC r against the target, mean FC and mean variance of twin, linear model and target).
"""
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from .. import checks, stats
from ..errors import ParameterError
from ..analyzers.linear import linear_bold_fc
from ..roundtrip.forked import WorkerError, forked_map
from ..roundtrip.validation import bold_sample_counts
from ..roundtrip.writeback import apply_params, clone_simulator, find_bold, monitor_list
from ..simulator.adapter import read_simulator
from ..simulator.twin import TorchSimulator
from .fitting import FitResult, fit
from .parameters import ParamSpec, inside_bounds
from .problem import BOLD_TRANSIENT_MS

__all__ = ["fit_corrected", "simulated_statistics", "linear_statistics"]

FISHER_CLIP = 1 - 1e-7                   # |r| kept below 1 before atanh
WARM_START_MARGIN = 0.01                 # a warm start at least 1 % of its range inside each bound (``inside_bounds``)
TWIN_OPTIONS = ("dtype", "kernel", "compile", "device", "block")     # TorchSimulator options of the correction runs


def check_twin_options(options: Optional[Mapping[str, Any]], name: str = "correction_twin") -> Dict[str, Any]:
    """``options`` as keyword arguments of ``TorchSimulator`` (only ``TWIN_OPTIONS``; the twin checks the values)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ParameterError(f"{name}={options!r}: expected a dict of TorchSimulator options "
                             f"({', '.join(TWIN_OPTIONS)}).")
    unknown = sorted(set(options) - set(TWIN_OPTIONS))
    if unknown:
        raise ParameterError(f"{name}: unknown option(s) {unknown}; expected some of {', '.join(TWIN_OPTIONS)}.")
    return dict(options)


def simulated_statistics(sim, *, length_ms: float, batch: int, seed: int, discard_ms: float = BOLD_TRANSIENT_MS,
                         processes: int = 1, **twin_options):
    """(mean FC (N, N), each node's BOLD variance (N,)) of the stochastic twin of ``sim`` (its own initial history),
    ``batch`` realisations of ``length_ms`` ms each, the first ``discard_ms`` ms of BOLD dropped; FC and variance
    are computed per realisation (``stats.fc``, ``stats.bold_variance``) and averaged over them. ``twin_options``:
    ``TorchSimulator`` keyword arguments (``TWIN_OPTIONS``; default float64, the block kernel where it applies).
    ``processes`` > 1: the realisations are split into that many contiguous parts, each run in a forked process
    (``roundtrip.forked.forked_map``) with the noise streams it has in the whole batch (``first_member``)."""
    bold_index = find_bold(sim)
    tr = float(monitor_list(sim)[bold_index].period)
    spec = read_simulator(sim)
    twin_options = check_twin_options(twin_options, "twin_options")
    processes = checks.integer(processes, "processes", minimum=1)
    if processes > 1 and torch.device(twin_options.get("device", "cpu")).type != "cpu":
        raise ParameterError(f"processes={processes} with device={twin_options['device']!r}: the forked processes "
                             "run on the CPU only (a GPU runs the realisations as one batch: processes=1).")
    n_samples, skip = bold_sample_counts(length_ms, float(sim.integrator.dt), tr, discard_ms)
    if n_samples - skip < 3:
        raise ParameterError(f"correction_ms={length_ms} ms leaves {n_samples - skip} BOLD samples after "
                             f"the {discard_ms} ms transient; give a longer correction_ms.")
    parts = [p for p in np.array_split(np.arange(batch), min(processes, batch)) if p.size]

    def run(members: np.ndarray):
        twin = TorchSimulator(spec, noise="torch", batch=int(members.size), seed=seed,
                              first_member=int(members[0]), **twin_options)
        with torch.no_grad():
            outputs = twin.run(simulation_length=length_ms)
        _, bold = outputs[bold_index]
        bold = bold.reshape(int(members.size), *bold.shape[-4:])[:, skip:, 0, :, 0].double()
        return stats.fc(bold).numpy(), stats.bold_variance(bold).numpy()

    try:
        per_part = forked_map(run, parts, len(parts))
    except WorkerError as err:
        raise RuntimeError(f"twin realisations {parts[err.index].tolist()} failed in their worker process: "
                           f"{err.message}") from None
    fcs = np.concatenate([fc for fc, _ in per_part])
    variances = np.concatenate([v for _, v in per_part])
    return fcs.mean(0), variances.mean(0)


def linear_statistics(sim):
    """(FC (N, N), each node's BOLD variance (N,)) of the linearised network of ``sim`` (``linear_bold_fc``)."""
    fc, info = linear_bold_fc(read_simulator(sim))
    return fc.detach().numpy(), torch.diagonal(info.covariance).detach().numpy()


def _fisher(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -FISHER_CLIP, FISHER_CLIP))


def corrected_targets(target_fc: np.ndarray, target_bold: Optional[np.ndarray], simulated, linear):
    """The targets of the next round: FC ``tanh(atanh(D) - (atanh(S) - atanh(L)))`` (diagonal 1) and BOLD scaled
    per node by ``sqrt(L_var / S_var)``, so that fitting the linear model to them fits ``L + (S - L)`` to ``D``."""
    (s_fc, s_var), (l_fc, l_var) = simulated, linear
    fc = np.tanh(_fisher(target_fc) - (_fisher(s_fc) - _fisher(l_fc)))
    np.fill_diagonal(fc, 1.0)
    bold = None if target_bold is None else np.asarray(target_bold) * np.sqrt(l_var / s_var)[None, :]
    return fc, bold


def fit_corrected(sim, target_fc, params: Mapping[str, ParamSpec], *, target_bold=None, rounds: int = 8,
                  correction_ms: float = 300e3, correction_batch: int = 4, correction_seed: int = 0,
                  tol: float = 0.005, correction_twin: Optional[Mapping[str, Any]] = None,
                  correction_processes: int = 1, warm_start: bool = True, progress: bool = True,
                  **settings) -> FitResult:
    """``fit(method="linear")`` with the linearisation's bias removed by the twin (module docstring).

    Arguments as ``fit``'s (``settings``: any ``FitConfig`` field; ``method`` is 'linear'), plus: ``rounds``, the
    most corrections; ``correction_ms`` (ms) and ``correction_batch``, the length and number of the twin runs that
    estimate each correction (the first 20 s of their BOLD dropped); ``correction_seed``, their noise seed (the same
    every round); ``tol``, the relative change of every fitted value below which the rounds stop;
    ``correction_twin``, ``TorchSimulator`` options of those runs (``dtype``, ``kernel``, ``compile``, ``device``,
    ``block``; default: float64 on the CPU, the block kernel where it applies); ``correction_processes``, how many
    forked processes share those runs (the same numbers as one process: ``simulated_statistics``); ``warm_start``,
    each round's fit starts where the last one ended (True; a value that ended within 1 % of its range of a bound
    starts that far inside it, where its gradient on the fit's scale has not vanished: ``parameters.inside_bounds``)
    or from ``sim``'s own values (False: every round's result then depends on its corrected target only, but a
    loss with several minima along a ridge may send a round to another one). ``target_bold``
    enters as in ``fit`` (the variance and FCD terms) and is corrected with the FC. ``sim`` is not changed."""
    rounds = checks.integer(rounds, "rounds", minimum=0)
    correction_ms = checks.positive(correction_ms, "correction_ms", unit="ms")
    correction_batch = checks.integer(correction_batch, "correction_batch", minimum=1)
    correction_seed = checks.seed(correction_seed, "correction_seed")
    tol = checks.positive(tol, "tol")
    twin_options = check_twin_options(correction_twin)
    correction_processes = checks.integer(correction_processes, "correction_processes", minimum=1)
    warm_start = checks.boolean(warm_start, "warm_start")
    if settings.get("method", "linear") != "linear":
        raise ParameterError(f"fit_corrected: method={settings['method']!r}; the corrected fit is a sequence of "
                             "linear fits (method='linear'); for the twin's own gradient use fit(method='twin').")
    settings["method"] = "linear"
    target = stats.check_target_fc(target_fc, sim.connectivity.number_of_regions).numpy()
    bold = None if target_bold is None else np.asarray(target_bold, dtype=np.float64)
    fc_k, bold_k, current = target, bold, sim
    record: List[Dict] = []
    previous: Optional[Dict[str, np.ndarray]] = None
    for k in range(rounds + 1):
        result = fit(current if warm_start else sim, fc_k, params, target_bold=bold_k, progress=progress, **settings)
        fitted = result.apply(clone_simulator(sim))
        moved = None if previous is None else max(          # relative change; a value at 0 counts absolutely
            float(np.max(np.abs(result.params[n] - previous[n]) / np.maximum(np.abs(previous[n]), 1.0e-12)))
            for n in previous)
        entry = {"round": k, "params": {n: v.tolist() for n, v in result.params.items()}, "moved": moved,
                 "steps": len(result.history["loss"])}
        record.append(entry)
        if k == rounds or (moved is not None and moved < tol):
            break
        simulated = simulated_statistics(fitted, length_ms=correction_ms, batch=correction_batch,
                                         seed=correction_seed, processes=correction_processes, **twin_options)
        linear = linear_statistics(fitted)
        entry.update(twin_r=stats.pearson_r(stats.upper(simulated[0]), stats.upper(target)),
                     twin_mean_fc=float(np.mean(stats.upper(simulated[0]))),
                     linear_mean_fc=float(np.mean(stats.upper(linear[0]))),
                     target_mean_fc=float(np.mean(stats.upper(target))),
                     twin_variance=float(np.mean(simulated[1])), linear_variance=float(np.mean(linear[1])),
                     target_variance=None if bold is None else float(np.mean(np.var(bold, axis=0))))
        fc_k, bold_k = corrected_targets(target, bold, simulated, linear)
        previous = result.params
        current = apply_params(clone_simulator(sim), inside_bounds(result.params, params, WARM_START_MARGIN))
    result.provenance["corrections"] = record
    result.provenance["correction"] = {"rounds": rounds, "correction_ms": correction_ms,
                                       "correction_batch": correction_batch, "correction_seed": correction_seed,
                                       "tol": tol, "correction_twin": {k: str(v) for k, v in twin_options.items()},
                                       "correction_processes": correction_processes, "warm_start": warm_start}
    return result
