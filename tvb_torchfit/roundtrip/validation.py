"""Validate fitted parameters with TVB itself: native TVB runs, their BOLD FC (and FCD) against a target.

After a fit with the torch twin, the parameters are written onto a TVB ``Simulator`` (see
``tvb_torchfit.roundtrip.writeback.apply_params``) and ``validate`` runs TVB natively — its own integrator, noise
and Bold monitor, nothing from torch — for a few noise seeds, and compares the resulting functional
connectivity (FC, ``numpy.corrcoef`` of BOLD over nodes, as TVB's own adapters compute it) with the
target FC. The spread between seeds (``seed_to_seed_fc_corr``) is the noise ceiling: no fit can be
expected to match the target better than two TVB runs with the same parameters match each other.

FCD (functional connectivity dynamics): sliding-window FC over ``fcd_window_ms`` windows moved by
``fcd_step_ms``; the FCD matrix is the correlation between the windows' FC upper triangles, and FCD
distributions are compared with the Kolmogorov-Smirnov statistic of their upper-triangle values.
A target FC alone carries no dynamics, so ``fcd_ks`` is ``None`` unless ``target_bold`` (time, N) is
given (sampled at the Bold monitor's period); ``fcd_ks_seed_to_seed`` (the KS statistic between the
FCD distributions of the TVB runs themselves) is reported whenever two or more runs are long enough.
"""
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import checks, stats
from .figure import FIGURE_NAME, plot_validation  # noqa: F401  (FIGURE_NAME: re-exported)
from .forked import WorkerError, forked_map
from ..errors import ParameterError
from .writeback import check_simulator, clone_simulator, find_bold, is_stochastic, monitor_list, n_regions



# ---------------------------------------------------------------------------------------------- FC, FCD
def _as_numpy(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name}: cannot read it as an array of numbers ({exc}).") from None


def _bold_nodes(bold) -> np.ndarray:
    """(time, N) from TVB's (time, voi, N, modes) Bold output (voi 0, mode 0), or from (time, N)."""
    bold = _as_numpy("bold", bold)
    if bold.ndim == 4:
        return bold[:, 0, :, 0]
    if bold.ndim == 2:
        return bold
    raise ParameterError(f"bold has shape {bold.shape}; expected TVB's Bold output (time, voi, nodes, modes) "
                         "or a (time, nodes) array.")


def bold_fc(bold: np.ndarray, discard: int) -> np.ndarray:
    """FC (``numpy.corrcoef`` over nodes) of a TVB Bold output (time, voi, N, modes), voi 0, after dropping
    the first ``discard`` samples. A (time, N) array is accepted too. Constant nodes give NaN rows."""
    ts = _bold_nodes(bold)
    if not isinstance(discard, (int, np.integer)) or discard < 0:
        raise ParameterError(f"discard={discard!r}: expected a number of samples >= 0.")
    if ts.shape[0] - discard < 2:
        raise ParameterError(f"only {ts.shape[0]} BOLD samples, {discard} to discard: at least 2 must remain "
                             "to compute an FC; simulate longer or discard less.")
    return stats.corrcoef_fc(ts[discard:])


def bold_sample_counts(simulation_length: float, dt: float, period: float, discard_ms: float) -> Tuple[int, int]:
    """(BOLD samples a TVB run of ``simulation_length`` ms gives, how many of them fall in its first ``discard_ms``
    ms): TVB integrates ceil(length / dt) steps of ``dt`` ms and its Bold monitor samples every ``period`` ms."""
    n = int(math.ceil(simulation_length / dt - 1e-9) * dt // period)
    return n, int(math.ceil(discard_ms / period - 1e-9))


def fcd_window_samples(window_ms: float, step_ms: float, period_ms: float) -> Tuple[int, int]:
    """(window, step) in samples of a series sampled every ``period_ms``, for FCD windows of ``window_ms`` moved by
    ``step_ms`` (rounded; at least 2 samples per window and 1 per step)."""
    return max(2, int(round(window_ms / period_ms))), max(1, int(round(step_ms / period_ms)))


def fcd_distribution(ts: np.ndarray, window: int, step: int, min_windows: int = 3) -> Optional[np.ndarray]:
    """FCD values (``stats.fcd_values``) of a (time, N) series, windows in samples, as a numpy array; None when
    fewer than ``min_windows`` windows fit (a KS statistic over one FCD value means nothing)."""
    if stats.n_windows(ts.shape[0], window, step) < min_windows:
        return None
    return stats.fcd_values(ts, window, step).numpy()


# ---------------------------------------------------------------------------------------------- report
@dataclass
class ValidationReport:
    """What ``validate`` measured. Correlations are Pearson r between FC upper triangles (k=1)."""
    fc_corr: float                         # mean over seeds of r(TVB FC, target FC)
    fc_corr_per_seed: List[float]
    fc_rmse: float                         # mean over seeds of the RMS difference of the upper triangles
    fcd_ks: Optional[float]                # mean over seeds of KS(FCD TVB, FCD target_bold); None without target_bold
    seed_to_seed_fc_corr: Optional[float]  # mean r between the FCs of the TVB runs: the noise ceiling
    torch_tvb_fc_corr: Optional[float]     # r(torch_fc, mean TVB FC), None without torch_fc
    mean_fc: float                         # mean upper-triangle value of the mean TVB FC
    target_mean_fc: float = float("nan")
    fc_rmse_per_seed: List[float] = field(default_factory=list)
    fcd_ks_per_seed: Optional[List[float]] = None
    fcd_ks_seed_to_seed: Optional[float] = None  # mean KS between FCD distributions of the TVB runs
    torch_target_fc_corr: Optional[float] = None  # r(torch_fc, target FC)
    fc_corr_of_mean: float = float("nan")  # r(mean TVB FC over seeds, target FC): the model's FC from all runs
    seeds: List[int] = field(default_factory=list)
    simulation_length: float = 0.0         # ms per run
    bold_period: float = 0.0               # ms
    discard_samples: int = 0
    bold_samples: int = 0                  # BOLD samples per run used for FC (after discarding)
    tvb_wall_s: float = 0.0                # wall time of all TVB runs
    figure: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)   # what makes a number above doubtful (degenerate data)
    tvb_fc: Optional[np.ndarray] = field(default=None, repr=False)           # (N, N) mean over seeds
    tvb_fc_per_seed: Optional[np.ndarray] = field(default=None, repr=False)  # (seeds, N, N)

    def to_dict(self, arrays: bool = False) -> Dict:
        """Plain Python values (JSON-ready); the FC matrices as nested lists only with ``arrays=True``."""
        def plain(v):
            if v is None or isinstance(v, (str, bool)):
                return v
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, (np.integer, int)):
                return int(v)
            return float(v)
        out = {}
        for name in self.__dataclass_fields__:
            if name in ("tvb_fc", "tvb_fc_per_seed") and not arrays:
                continue
            out[name] = plain(getattr(self, name))
        return out

    def __str__(self) -> str:
        def fmt(v):
            if v is None:
                return "—"
            if isinstance(v, (list, tuple)):
                return ", ".join(fmt(x) for x in v)
            return f"{v:.4f}"
        rows = [
            ("FC r(TVB, target), mean over seeds", fmt(self.fc_corr)),
            ("FC r per seed", fmt(self.fc_corr_per_seed)),
            ("FC r(mean TVB FC over seeds, target)", fmt(self.fc_corr_of_mean)),
            ("FC RMSE(TVB, target)", fmt(self.fc_rmse)),
            ("FC r seed-to-seed (noise ceiling)", fmt(self.seed_to_seed_fc_corr)),
            ("mean FC: TVB / target", f"{fmt(self.mean_fc)} / {fmt(self.target_mean_fc)}"),
            ("FCD KS(TVB, target BOLD)", fmt(self.fcd_ks)),
            ("FCD KS seed-to-seed", fmt(self.fcd_ks_seed_to_seed)),
            ("FC r(torch, mean TVB)", fmt(self.torch_tvb_fc_corr)),
            ("FC r(torch, target)", fmt(self.torch_target_fc_corr)),
        ]
        width = max(len(r[0]) for r in rows)
        seeds = ", ".join(str(s) for s in self.seeds) or "— (deterministic)"
        head = (f"TVB validation: {len(self.fc_corr_per_seed)} run(s) of {self.simulation_length:g} ms "
                f"(seeds {seeds}); Bold period {self.bold_period:g} ms, {self.discard_samples} samples discarded, "
                f"{self.bold_samples} used; TVB wall {self.tvb_wall_s:.1f} s")
        lines = [head, "-" * (width + 20)] + [f"{k:<{width}}  {v}" for k, v in rows]
        if self.figure:
            lines.append(f"{'figure':<{width}}  {self.figure}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- checks
def _check_square(name: str, value, n: int) -> np.ndarray:
    m = _as_numpy(name, value)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ParameterError(f"{name} has shape {m.shape}; expected a square (N, N) FC matrix.")
    if m.shape[0] != n:
        raise ParameterError(f"{name} is {m.shape[0]} x {m.shape[0]}, but the simulator's connectivity has "
                             f"{n} regions; give a {n} x {n} FC in the connectivity's region order.")
    if not np.isfinite(m).all():
        raise ParameterError(f"{name} has non-finite values (NaN or inf); clean it before validating.")
    return stats.check_target_fc(m, n, name=name).numpy()     # as strictly as fit: symmetric, unit diagonal, [-1, 1]


# ---------------------------------------------------------------------------------------------- validate
def _run_bold(clone, simulation_length: float) -> np.ndarray:
    (_, bold), = clone.run(simulation_length=float(simulation_length))
    return _bold_nodes(bold)


def run_tvb_bold(sim, *, simulation_length: float, seeds: Sequence[Optional[int]], initial_conditions=None,
                 processes: int = 1, bold_index: Optional[int] = None) -> List[np.ndarray]:
    """TVB's own runs of ``sim``, one clone per noise seed (``clone_simulator(sim, noise_seed=seed,
    initial_conditions=...)``, first Bold monitor only): the BOLD of each as (time, N), in the order of
    ``seeds`` (None: the clone keeps ``sim``'s noise seed). ``sim`` itself is not run or changed.

    ``processes`` > 1 runs up to that many seeds at once, each in a forked child process (``forked.forked_map``:
    TVB's loop is single-threaded Python and numba, so on a machine with several cores the seeds' runs overlap;
    the numbers are those of the serial runs). Where the ``fork`` start method is not available the runs are serial.
    """
    if bold_index is None:
        bold_index = find_bold(sim)
    processes = checks.integer(processes, "processes", minimum=1)
    clones = [clone_simulator(sim, noise_seed=seed, initial_conditions=initial_conditions, monitor_indices=[bold_index])
              for seed in seeds]                       # configured here: bad input is refused before any run
    try:
        return forked_map(lambda clone: _run_bold(clone, simulation_length), clones, processes)
    except WorkerError as err:
        raise RuntimeError(f"TVB run with noise seed {seeds[err.index]} failed in its worker process: "
                           f"{err.message}") from None


def validate(sim, target_fc, *, simulation_length: float, seeds: Sequence[int] = (1001, 1002),
             discard_ms: float = 20000.0, torch_fc=None, initial_conditions=None, out_dir=None,
             history: Optional[Dict] = None, target_bold=None, fcd_window_ms: float = 60000.0,
             fcd_step_ms: float = 2000.0, processes: int = 1,
             target_period_ms: Optional[float] = None) -> ValidationReport:
    """Run TVB natively (one clone of ``sim`` per noise seed) and compare its BOLD FC with ``target_fc``.

    Each run is ``clone_simulator(sim, noise_seed=seed, initial_conditions=initial_conditions)`` keeping only
    the first Bold monitor of ``sim`` (other monitors do not change the dynamics), run for
    ``simulation_length`` ms; the first ``ceil(discard_ms / period)`` BOLD samples are dropped (TVB's BOLD
    buffer starts at zero: ~20 s of transient). ``initial_conditions`` default to ``sim.initial_conditions``
    (see ``low_state_initial_conditions``). A deterministic integrator is run once (seeds are ignored).
    ``sim`` itself is not run or changed. ``processes`` > 1: up to that many seeds run at once, in forked
    worker processes (``run_tvb_bold``).

    ``torch_fc``: the twin's FC, compared with the mean TVB FC and with the target. ``target_bold``:
    (time, N) target BOLD for the FCD comparison, sampled every ``target_period_ms`` (default: the Bold monitor's
    period; the FCD windows, in ms, are converted to samples with each series' own period). ``out_dir``: write
    ``validation.png`` there (FC matrices on one colour scale, FC scatter, and — with ``history``
    ``{'loss': [...], 'params': {name: [...]}}`` — the fit's loss and parameter trajectories).
    """
    inp = _Inputs.check(sim, target_fc, torch_fc, target_bold, simulation_length, discard_ms)
    seeds, notes = _seeds(sim, seeds)
    fcd_window_ms = checks.positive(fcd_window_ms, "fcd_window_ms", unit="ms")
    fcd_step_ms = checks.positive(fcd_step_ms, "fcd_step_ms", unit="ms")
    processes = checks.integer(processes, "processes", minimum=1)
    target_period = inp.period if target_period_ms is None else checks.positive(target_period_ms,
                                                                                  "target_period_ms", unit="ms")
    if history is not None and not isinstance(history, dict):
        raise ParameterError(f"history={type(history).__name__}: expected None or a dict "
                             "{'loss': [...], 'params': {name: [...]}} (FitResult.history).")
    if out_dir is not None:
        checks.writable_folder(out_dir, "out_dir")             # up front, before the TVB runs
    warned = _target_warnings(inp.target)
    t0 = time.perf_counter()
    runs = run_tvb_bold(sim, simulation_length=simulation_length, seeds=seeds or [None],
                        initial_conditions=initial_conditions, processes=processes, bold_index=inp.bold_index)
    wall = time.perf_counter() - t0
    fcs = np.stack([bold_fc(ts, inp.discard) for ts in runs])
    series = [ts[inp.discard:] for ts in runs]
    window, step = fcd_window_samples(fcd_window_ms, fcd_step_ms, inp.period)
    target_windows = fcd_window_samples(fcd_window_ms, fcd_step_ms, target_period)
    report = ValidationReport(
        **fc_metrics(fcs, inp.target, inp.torch_fc, notes),
        **fcd_metrics(series, inp.target_bold, window, step, notes, target_windows=target_windows),
        seeds=list(seeds), simulation_length=float(simulation_length), bold_period=inp.period,
        discard_samples=inp.discard, bold_samples=int(series[0].shape[0]), tvb_wall_s=wall, notes=notes,
        warnings=warned + _fc_warnings(fcs))
    if out_dir is not None:
        report.figure = plot_validation(report, inp.target, inp.torch_fc, history, out_dir)
    return report


@dataclass
class _Inputs:
    """validate's inputs, checked: target and torch FC, target BOLD, the Bold monitor, samples to discard."""
    target: np.ndarray
    torch_fc: Optional[np.ndarray]
    target_bold: Optional[np.ndarray]
    bold_index: int
    period: float
    discard: int

    @classmethod
    def check(cls, sim, target_fc, torch_fc, target_bold, simulation_length, discard_ms) -> "_Inputs":
        check_simulator(sim)
        n = n_regions(sim)
        target = _check_square("target_fc", target_fc, n)
        torch_m = None if torch_fc is None else _check_square("torch_fc", torch_fc, n)
        tbold = None
        if target_bold is not None:
            tbold = _as_numpy("target_bold", target_bold)
            if tbold.ndim != 2 or tbold.shape[1] != n:
                raise ParameterError(f"target_bold has shape {tbold.shape}; expected (time, {n}).")
            if not np.isfinite(tbold).all():
                raise ParameterError("target_bold has non-finite values (NaN or inf).")
            checks.signal(tbold, "target_bold")               # constant regions, absurd scale
        simulation_length = checks.positive(simulation_length, "simulation_length", unit="ms")
        discard_ms = checks.non_negative(discard_ms, "discard_ms", unit="ms")
        bold_index = find_bold(sim)
        period = checks.bold_period_ms(monitor_list(sim)[bold_index].period, "the Bold monitor's (the TR's)")
        n_expected, discard = bold_sample_counts(simulation_length, sim.integrator.dt, period, discard_ms)
        if n_expected - discard < 3:
            raise ParameterError(f"simulation_length={simulation_length:g} ms gives about {n_expected} BOLD samples "
                                 f"(period {period:g} ms), {discard} of them discarded (discard_ms={discard_ms:g}): "
                                 "at least 3 must remain; simulate longer or discard less.")
        return cls(target, torch_m, tbold, bold_index, period, discard)


def _target_warnings(target: np.ndarray) -> List[str]:
    try:
        checks.informative_fc(target, "target_fc")
    except ParameterError as exc:
        return [f"{exc} fc_corr against it is NaN."]
    return []


def _fc_warnings(fcs: np.ndarray) -> List[str]:
    """Nodes whose TVB FC is NaN (constant BOLD) in some run: the correlations leave them out."""
    bad = sorted({int(i) for f in fcs for i in np.flatnonzero(~np.isfinite(f).all(axis=0))})
    return [f"TVB's BOLD of node(s) {bad[:10]} is constant in some run: its FC is undefined and left out of the "
            "correlations (the network may sit at a fixed point; check the parameters)."] if bad else []


def _seeds(sim, seeds) -> Tuple[List[int], List[str]]:
    """The noise seeds to run (none for a deterministic integrator: one run) and the notes that says so."""
    if not is_stochastic(sim):
        return [], ["deterministic integrator: one run, seeds ignored, no seed-to-seed noise ceiling."]
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ParameterError(f"seeds={seeds!r}: expected a sequence of integer noise seeds, e.g. (1001, 1002).")
    seeds = [checks.seed(s, "seeds entry") for s in seeds]
    if not seeds:
        raise ParameterError("seeds is empty: give at least one noise seed.")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ParameterError(f"seeds={seeds}: seed(s) {twice} listed more than once; identical runs would report "
                             "a noise ceiling of 1. Give distinct seeds.")
    return seeds, []


def _pairs(k: int) -> List[Tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def fc_metrics(fcs: np.ndarray, target: np.ndarray, torch_fc: Optional[np.ndarray], notes: List[str]) -> Dict:
    """The FC fields of a ``ValidationReport`` from the runs' FCs (runs, N, N): Pearson r (``stats.pearson_r``,
    NaN entries left out) and RMSE of the upper triangles against the target, between runs, and of the twin's."""
    if not np.isfinite(fcs).all():
        notes.append("some TVB FC entries are NaN (a node's BOLD is constant or non-finite): those entries are "
                     "left out of the correlations.")
    up, mean_fc, tu = stats.upper, np.mean(fcs, axis=0), stats.upper(target)
    per_seed_r = [stats.pearson_r(up(f), tu) for f in fcs]
    per_seed_rmse = [float(np.sqrt(np.nanmean((up(f) - tu) ** 2))) for f in fcs]
    pairs = _pairs(len(fcs))
    return dict(
        fc_corr=float(np.nanmean(per_seed_r)) if np.isfinite(per_seed_r).any() else float("nan"),
        fc_corr_per_seed=per_seed_r, fc_rmse=float(np.mean(per_seed_rmse)), fc_rmse_per_seed=per_seed_rmse,
        seed_to_seed_fc_corr=float(np.mean([stats.pearson_r(up(fcs[i]), up(fcs[j])) for i, j in pairs]))
        if pairs else None,
        torch_tvb_fc_corr=None if torch_fc is None else stats.pearson_r(up(torch_fc), up(mean_fc)),
        torch_target_fc_corr=None if torch_fc is None else stats.pearson_r(up(torch_fc), tu),
        fc_corr_of_mean=stats.pearson_r(up(mean_fc), tu),
        mean_fc=float(np.nanmean(up(mean_fc))), target_mean_fc=float(np.mean(tu)), tvb_fc=mean_fc, tvb_fc_per_seed=fcs)


def fcd_metrics(series: List[np.ndarray], target_bold: Optional[np.ndarray], window: int, step: int,
                notes: List[str], target_windows: Optional[Tuple[int, int]] = None) -> Dict:
    """The FCD fields of a ``ValidationReport``: KS statistics between the FCD value distributions of the runs
    (time, N) and of ``target_bold``, and between runs; None (with a note) where they cannot be computed."""
    out = dict(fcd_ks=None, fcd_ks_per_seed=None, fcd_ks_seed_to_seed=None)
    fcd_runs = [fcd_distribution(ts, window, step) for ts in series]
    if any(v is None for v in fcd_runs):
        notes.append(f"FCD not computed: fewer than 3 windows of {window} samples fit into {series[0].shape[0]} "
                     "BOLD samples; simulate longer or shorten the window (fcd_window_ms).")
        return out
    if target_bold is None:
        notes.append("fcd_ks is None: the target is an FC only (give target_bold for an FCD comparison).")
    else:
        t_window, t_step = target_windows or (window, step)
        fcd_target = fcd_distribution(target_bold, t_window, t_step)
        if fcd_target is None:
            notes.append(f"FCD of target_bold not computed: fewer than 3 windows of {t_window} samples fit "
                         f"into its {target_bold.shape[0]} samples.")
        else:
            out["fcd_ks_per_seed"] = [stats.ks_statistic(v, fcd_target) for v in fcd_runs]
            out["fcd_ks"] = float(np.mean(out["fcd_ks_per_seed"]))
    pairs = _pairs(len(fcd_runs))
    if pairs:
        out["fcd_ks_seed_to_seed"] = float(np.mean([stats.ks_statistic(fcd_runs[i], fcd_runs[j]) for i, j in pairs]))
    return out
