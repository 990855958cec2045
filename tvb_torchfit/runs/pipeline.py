"""A run from its configuration to its folder: inputs, staged fits on the training FC, TVB validation of the fitted
values against the held-out FC and FCD, the report. Resumable: finished stages (``done.json``) and validations
(``report.json``) are kept, the running stage resumes from its fit checkpoint.

What the report calls what (per validated stage, TVB's own simulator at the fitted values, mean over seeds):

* ``in_sample_r``: r(TVB FC, training FC), the FC the stage was fitted to;
* ``held_out_r``: r(TVB FC, test FC), the other half (or session), never seen by any fit;
* ``ceiling_r``: r(training FC, test FC), the data's own agreement with itself: no model is expected above it;
* ``fcd_ks``: KS statistic between TVB's FCD values and those of the test BOLD;
* ``fcd_ks_ceiling``: KS statistic between the FCD values of the training and the test BOLD (the same windows): the
  data's own FCD agreement, about what a perfect model would score (None without a split or with too few windows);
* ``mean_fc``: the FC level, mean upper triangle, of TVB's FC and of the training and test FC.
"""
import importlib.metadata
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import stats
from ..errors import ConfigError
from ..inference.fitting import FitResult
from ..inference.parameters import Param, bounds_on_scale
from ..inference.stages import Stage, StageResult, fit_stages, fit_stages_batch
from ..roundtrip.tvbfile import save_simulator
from ..roundtrip.validation import fcd_distribution, fcd_window_samples, validate
from ..version import __version__
from . import folder as fs
from .config import RunConfig, config_to_dict, load_config
from .inputs import Inputs, build_simulator, load_inputs, stage_maps

BOUND_TOL = 1e-3                       # a fitted value within this fraction of the range from a bound is "at" it


def versions() -> Dict[str, str]:
    def dist(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return {"tvb_torchfit": __version__, "tvb-library": dist("tvb-library"), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": dist("scipy"), "pydantic": dist("pydantic"),
            "python": platform.python_version()}


def to_stages(cfg: RunConfig, maps: Dict[str, np.ndarray]) -> List[Stage]:
    """The ``inference.stages.Stage``s of a configuration (maps loaded); each stage's fit seed and dtype default
    to ``run.seed`` and ``run.dtype``."""
    out = []
    for s in cfg.stages:
        settings = {k: v for k, v in s.fit.model_dump().items() if v is not None}
        if settings.get("schedule") == "none":
            settings["schedule"] = None
        settings.setdefault("seed", cfg.run.seed)
        settings.setdefault("dtype", cfg.run.dtype)
        params = {}
        for name, p in s.params.items():
            spec = {k: v for k, v in p.model_dump().items() if v is not None and k != "maps"}
            if "prior" in spec:
                mean, sd = spec["prior"]
                spec["prior"] = (tuple(mean) if isinstance(mean, list) else mean, sd)
            if p.maps:
                spec["maps"] = maps[f"{s.name}.{name}"]
                spec["map_names"] = tuple(Path(m).stem if m != "fc_gradient" else m for m in p.maps)
            params[name] = spec
        out.append(Stage(name=s.name, params=params, method=s.method, settings=settings, G=s.G, fic=s.fic))
    return out


def _prepare(cfg: RunConfig, out: Path) -> None:
    """The run folder: refuse one that holds another configuration; write config and versions."""
    resolved = config_to_dict(cfg)
    if (out / "config.json").exists():
        old = fs.read_json(out / "config.json")
        if old != resolved:
            diff = sorted(k for k in set(old) | set(resolved) if old.get(k) != resolved.get(k))
            raise ConfigError(f"{cfg.source}: the run folder {str(out)!r} holds a run of another configuration "
                              f"(sections differing: {diff}); choose another --out, or remove the folder.")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{cfg.source}: the run folder {str(out)!r} is not writable ({err}).") from None
    fs.write_json(out / "config.json", resolved)
    fs.write_json(out / "versions.json", versions())


def fcd_ks_ceiling(cfg: RunConfig, inputs: Inputs) -> Optional[float]:
    """KS statistic between the FCD values of the training and the test BOLD, with the validation's windows
    (``validation.fcd_window`` / ``fcd_step``, ms, at the data's TR); None without a split or when a part holds
    fewer than 3 windows (as the validation's own rule)."""
    if cfg.validation.split == "none":
        return None
    window, step = fcd_window_samples(cfg.validation.fcd_window, cfg.validation.fcd_step, inputs.tr)
    parts = [fcd_distribution(b, window, step) for b in (inputs.train_bold, inputs.test_bold)]
    return None if any(p is None for p in parts) else stats.ks_statistic(*parts)


def _write_data(cfg: RunConfig, inputs: Inputs, out: Path) -> None:
    train_fc, test_fc = inputs.train_fc, inputs.test_fc
    fs.write_npz(out / "data.npz", {"train_bold": inputs.train_bold, "test_bold": inputs.test_bold,
                                    "train_fc": train_fc, "test_fc": test_fc})
    fs.write_json(out / "data.json", {
        "subject": inputs.subject.subject_id, "n_regions": inputs.subject.n_regions, "tr_ms": inputs.tr,
        "split": cfg.validation.split, "train_volumes": int(inputs.train_bold.shape[0]),
        "test_volumes": int(inputs.test_bold.shape[0]),
        "ceiling_r": float(stats.fc_corr(train_fc, test_fc)) if cfg.validation.split != "none" else None,
        "fcd_ks_ceiling": fcd_ks_ceiling(cfg, inputs),
        "mean_fc_train": float(np.mean(stats.upper(train_fc))), "mean_fc_test": float(np.mean(stats.upper(test_fc))),
        "sc_fc_r_train": float(inputs.subject.replace(bold=inputs.train_bold).sc_fc_corr()),
        "preprocessing": inputs.subject.preprocessing})


def _finished(out: Path, stages: Sequence[Stage]) -> Dict[str, FitResult]:
    done = {}
    for s in stages:
        d = fs.stage_dir(out, s.name)
        if not (d / "done.json").is_file():
            break                                  # stages after an unfinished one are refitted
        done[s.name] = FitResult.load(d)
    return done


def _at_bounds(result: FitResult) -> Dict[str, int]:
    """How many fitted values lie within ``BOUND_TOL`` of the range from a bound, per parameter, on the scale the
    fit moved them (log for log-scale parameters), from the resolved specs the fit recorded (bounds relative to
    G_c already applied)."""
    out = {}
    for name, spec in result.config["params"].items():
        low, high = bounds_on_scale(Param(**spec))
        v = np.asarray(result.params[name], dtype=float)
        v = np.log(v) if spec["log"] else v
        tol = BOUND_TOL * (high - low)
        out[name] = int(np.sum((v < low + tol) | (v > high - tol)))
    return out


def _stage_writer(out: Path, stages: Sequence[Stage], walls: Dict[str, float], G_c_box: List):
    by_name = {s.name: s for s in stages}

    def write(rec: StageResult) -> None:
        d = fs.stage_dir(out, rec.name)
        if (d / "done.json").is_file():
            return
        rec.result.save(d)
        values = {k: np.asarray(v) for k, v in rec.result.params.items()}
        coefs = {f"coef:{k}": np.asarray(v) for k, v in rec.result.coefficients.items()}
        fs.write_npz(d / "values.npz", dict(values, **coefs))
        doc = {"stage": rec.name, "params": values, "start": rec.start,
               "coefficients": rec.result.coefficients,
               "coefficient_names": {k: ["intercept"] + list(by_name[rec.name].params[k].get("map_names", ()))
                                     for k in rec.result.coefficients},
               "G_c": rec.G_c,
               "at_bounds": _at_bounds(rec.result),
               "fit_wall_s": walls.get(rec.name)}
        fs.write_json(d / "values.json", doc)
        save_simulator(rec.simulator, d, fs.SIMULATOR_STEM)
        fs.write_json(d / "done.json", {"stage": rec.name})
    return write


@dataclass
class RunSetup:
    """A run folder prepared for its fits (``setup_run``): the configuration, the folder, the inputs, the TVB
    simulator, the stages, the stages already finished and the callback that writes each finished stage."""
    cfg: RunConfig
    out: Path
    inputs: Inputs
    sim: object
    stages: List[Stage]
    done: Dict[str, FitResult]
    after: Callable[[StageResult], None]
    t0: float
    clock: Dict[str, float]                  # "t": when the running stage started; "share": runs fitted together


def setup_run(cfg: RunConfig, out_dir, *, on_stage: Optional[Callable[[StageResult], None]] = None,
              log: Callable[[str], None] = print) -> RunSetup:
    """Everything ``run_fit`` does before its fits: the folder, inputs, data files, simulator and stages."""
    out = Path(out_dir)
    _prepare(cfg, out)
    where = cfg.source or str(out / "config.json")
    t0 = time.perf_counter()
    inputs = load_inputs(cfg, where)
    maps = stage_maps(cfg, inputs, where)
    _write_data(cfg, inputs, out)
    sim = build_simulator(cfg, inputs)
    stages = to_stages(cfg, maps)
    done = _finished(out, stages)
    if done:
        log(f"resuming: stage(s) {list(done)} already fitted")
    walls: Dict[str, float] = {}
    writer = _stage_writer(out, stages, walls, [])
    clock = {"t": time.perf_counter(), "share": 1}

    def after(rec: StageResult) -> None:
        walls[rec.name] = (time.perf_counter() - clock["t"]) / clock["share"]   # batched: the group's time shared
        writer(rec)
        if rec.name not in done:
            log(f"stage {rec.name!r} fitted in {walls[rec.name]:.1f} s")
        if on_stage is not None:
            on_stage(rec)
        clock["t"] = time.perf_counter()
    return RunSetup(cfg=cfg, out=out, inputs=inputs, sim=sim, stages=stages, done=done, after=after, t0=t0,
                    clock=clock)


def finish_fit(run: RunSetup, results: Sequence[StageResult]) -> None:
    """The final stage's simulator and ``fit_done.json`` (the fit is complete)."""
    save_simulator(results[-1].simulator, run.out, fs.SIMULATOR_STEM)
    fs.write_json(run.out / "fit_done.json", {"stages": [r.name for r in results],
                                              "fit_wall_s": time.perf_counter() - run.t0})


def run_fit(cfg: RunConfig, out_dir, *, progress: bool = True, validate_after: bool = True,
            on_stage: Optional[Callable[[StageResult], None]] = None, log: Callable[[str], None] = print) -> Path:
    """Fit a configured run into ``out_dir`` (module docstring) and validate it; returns the run folder."""
    run = setup_run(cfg, out_dir, on_stage=on_stage, log=log)
    results = fit_stages(run.sim, run.inputs.train_fc, run.stages, fic_rate=cfg.run.fic_rate,
                         target_bold=run.inputs.train_bold, checkpoint_dir=run.out / "checkpoints", done=run.done,
                         progress=progress, on_stage=run.after)
    finish_fit(run, results)
    if validate_after:
        validate_run(run.out, log=log)
    return run.out


def linear_only(cfg: RunConfig) -> bool:
    """Whether every stage of the configuration is fitted by the linear method with a gradient optimiser (it can
    be batched: ``inference.batched``; LBFGS evaluates its own line search's trial points, subject by subject)."""
    return all(s.method == "linear" and s.fit.optimizer != "LBFGS" for s in cfg.stages)


def _batch_key(run: RunSetup):
    """Runs that can be fitted in one batch: same node count, dt, TR, FIC rate and stage names."""
    return (run.inputs.subject.n_regions, float(run.sim.integrator.dt), float(run.inputs.tr), run.cfg.run.fic_rate,
            tuple(s.name for s in run.stages))


def fit_runs_batch(cfgs: Sequence[RunConfig], out_dirs: Sequence, *, progress: bool = False,
                   logs: Optional[Sequence[Callable[[str], None]]] = None) -> List[Optional[Exception]]:
    """``run_fit(..., validate_after=False)`` of several linear-only runs, those with the same node count, dt, TR
    and stages fitted together (``inference.stages.fit_stages_batch``); every run folder is written exactly as
    ``run_fit`` writes it (a stage's ``fit_wall_s``: the group's time up to it / the group's size). Returns per run
    None (fitted) or the exception that stopped it (the others go on)."""
    n = len(cfgs)
    logs = list(logs) if logs is not None else [print] * n
    errors: List[Optional[Exception]] = [None] * n
    runs: Dict[int, RunSetup] = {}
    for k in range(n):
        try:
            if not linear_only(cfgs[k]):
                raise ConfigError(f"{cfgs[k].source}: a batched fit needs linear stages only.")
            runs[k] = setup_run(cfgs[k], out_dirs[k], log=logs[k])
        except Exception as err:
            errors[k] = err
    groups: Dict[tuple, List[int]] = {}
    for k, run in runs.items():
        groups.setdefault(_batch_key(run), []).append(k)
    for ks in groups.values():
        sel = [runs[k] for k in ks]
        for r in sel:
            r.clock.update(t=time.perf_counter(), share=len(sel))
        results = fit_stages_batch([r.sim for r in sel], [r.inputs.train_fc for r in sel], [r.stages for r in sel],
                                   fic_rate=sel[0].cfg.run.fic_rate, target_bolds=[r.inputs.train_bold for r in sel],
                                   done=[r.done for r in sel], progress=progress,
                                   on_stage=lambda j, rec: sel[j].after(rec))
        for k, run, res in zip(ks, sel, results):
            try:
                if isinstance(res, Exception):
                    raise res
                finish_fit(run, res)
            except Exception as err:
                errors[k] = err
    return errors


def _validated_stages(cfg: RunConfig) -> List[str]:
    names = [s.name for s in cfg.stages]
    if cfg.validation.stages == "all":
        return names
    chosen = set(cfg.validation.stages) | {names[-1]}
    return [n for n in names if n in chosen]


def validate_stage(run_dir: Path, cfg: RunConfig, stage: str, *, force: bool = False) -> Dict:
    """TVB's own simulator at a stage's fitted values against the test FC and FCD; the report's row."""
    d = fs.stage_dir(run_dir, stage) / "validation"
    if (d / "report.json").is_file() and not force:
        return fs.read_json(d / "report.json")["row"]
    data = np.load(run_dir / "data.npz")
    info = fs.read_json(run_dir / "data.json")
    sim = fs.load_fitted_simulator(run_dir, stage)
    v = cfg.validation
    result = FitResult.load(fs.stage_dir(run_dir, stage))
    rep = validate(sim, data["test_fc"], simulation_length=v.length, seeds=v.seeds, discard_ms=v.discard,
                   target_bold=data["test_bold"], fcd_window_ms=v.fcd_window, fcd_step_ms=v.fcd_step,
                   processes=v.processes, out_dir=d, history=result.history, target_period_ms=info["tr_ms"])
    in_sample = float(np.mean([float(stats.fc_corr(f, data["train_fc"])) for f in rep.tvb_fc_per_seed]))
    in_sample_all = float(stats.fc_corr(rep.tvb_fc, data["train_fc"]))
    values = fs.read_json(fs.stage_dir(run_dir, stage) / "values.json")
    row = {"stage": stage, "in_sample_r": in_sample, "held_out_r": rep.fc_corr,
           "in_sample_r_all_runs": in_sample_all, "held_out_r_all_runs": rep.fc_corr_of_mean,
           "tvb_runs": len(rep.fc_corr_per_seed), "ceiling_r": info["ceiling_r"],
           "fcd_ks": rep.fcd_ks, "fcd_ks_ceiling": info.get("fcd_ks_ceiling"), "mean_fc_sim": rep.mean_fc,
           "mean_fc_train": info["mean_fc_train"], "mean_fc_test": info["mean_fc_test"],
           "seed_to_seed_r": rep.seed_to_seed_fc_corr,
           "fit_wall_s": values.get("fit_wall_s"), "tvb_wall_s": rep.tvb_wall_s,
           "at_bounds": values.get("at_bounds"), "G_c": values.get("G_c")}
    G = values["params"].get("G")
    if G is not None and values.get("G_c"):
        row["G_over_G_c"] = float(np.mean(G)) / values["G_c"]
    fs.write_npz(d / "report.npz", {"tvb_fc_per_seed": rep.tvb_fc_per_seed, "tvb_fc": rep.tvb_fc})
    fs.write_json(d / "report.json", {"row": row, "report": rep.to_dict(), "target": "test FC (held out)"})
    return row


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def report_markdown(cfg: RunConfig, rows: List[Dict], info: Dict) -> str:
    cols = [("stage", "stage"), ("in_sample_r", "r in sample (train FC)"), ("held_out_r", "r held out (test FC)"),
            ("held_out_r_all_runs", "r held out, FC of all runs"), ("ceiling_r", "ceiling r (train vs test FC)"),
            ("fcd_ks", "FCD KS (test BOLD)"), ("fcd_ks_ceiling", "FCD KS ceiling (train vs test BOLD)"),
            ("mean_fc_sim", "mean FC TVB"), ("mean_fc_train", "mean FC train"), ("mean_fc_test", "mean FC test"),
            ("fit_wall_s", "fit (s)"), ("tvb_wall_s", "TVB (s)")]
    lines = [f"# Run {cfg.run.name}: subject {info['subject']}, {info['n_regions']} regions, TR {info['tr_ms']:g} ms",
             "", f"Split: {info['split']} ({info['train_volumes']} training / {info['test_volumes']} test volumes). "
             f"Validation: TVB's own simulator at the fitted values, {cfg.validation.length:g} ms per seed, seeds "
             f"{cfg.validation.seeds}, first {cfg.validation.discard:g} ms dropped.", "",
             "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c[0])) for c in cols) + " |")
    notes = [f"- stage {r['stage']}: {n} value(s) of {k} at a bound" for r in rows
             for k, n in (r.get("at_bounds") or {}).items() if n]
    if notes:
        lines += ["", "Parameters at a bound (within 0.1 % of the range):"] + notes
    lines += ["", "In sample: against the FC the stage was fitted to; held out: against the other half (or session); "
              "both per TVB run (mean over seeds). FC of all runs: TVB's FC averaged over the seeds' runs (the "
              "model's FC from their total length) against the test FC. Ceiling: the data's own train-vs-test "
              "agreement (two finite halves: a model FC from long runs can exceed it). FCD KS ceiling: the KS "
              "statistic between the FCD values of the training and the test BOLD, about what a model as good as the "
              "data scores."]
    return "\n".join(lines) + "\n"


def validate_run(run_dir, *, force: bool = False, log: Callable[[str], None] = print) -> List[Dict]:
    """Validate the configured stages of a fitted run (kept ones are reused unless ``force``); write the report."""
    run_dir = fs.check_run_dir(run_dir)
    cfg = load_config(run_dir / "config.json")
    if not (run_dir / "fit_done.json").is_file():
        raise ConfigError(f"{str(run_dir)!r}: the fit has not finished; run `tvb-torchfit fit` again to resume it.")
    rows = []
    for stage in _validated_stages(cfg):
        log(f"validating stage {stage!r} with TVB ({len(cfg.validation.seeds)} x {cfg.validation.length:g} ms)")
        rows.append(validate_stage(run_dir, cfg, stage, force=force))
    info = fs.read_json(run_dir / "data.json")
    fs.write_json(run_dir / "report.json", {"rows": rows, "data": {k: v for k, v in info.items()
                                                                   if k != "preprocessing"}})
    text = report_markdown(cfg, rows, info)
    fs.write_text(run_dir / "report.md", text)
    log(text)
    return rows
