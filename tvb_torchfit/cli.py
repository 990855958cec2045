"""``tvb-torchfit``: command-line entry point.

    tvb-torchfit demo        synthetic recovery on connectivity_76: TVB target, fit, write back, TVB validation
                             (also as ``fit-demo``)
    tvb-torchfit parity      TVB and its torch twin side by side on connectivity_76 (parity table)
    tvb-torchfit compare     one comparison, on settings given as options (see --help)
    tvb-torchfit fit run.toml [--set key=value ...] [--out DIR]
                             a config-file run: staged fits on the training half of the BOLD, TVB validation
                             against the held-out half, a run folder (tvb_torchfit.runs)
    tvb-torchfit validate RUN_DIR      TVB validation of a fitted run (again, with --force)
    tvb-torchfit simulate RUN_DIR --length MS [--seed N] [--out FILE]
                             TVB's own simulator at the fitted values; BOLD (time x regions) to .npy or .csv
    tvb-torchfit cohort cohort.toml [--scheduler ADDRESS] [--workers N] [--threads-per-worker T] [--set ...]
                             every subject of a cohort, one Dask task each (a local cluster, or a running one):
                             a run folder per subject, summary.csv / .md / .png (tvb_torchfit.runs.cohort)

Units: every time is in ms (dt, TR, Bold period, simulation and validation lengths, FCD windows); speed in mm/ms;
rates and band edges in Hz.
"""
import argparse
import sys
import warnings
from typing import List, Optional

import numpy as np


def build_simulator(model: str = "ReducedWongWangExcInh", integrator: str = "HeunDeterministic",
                    connectivity: str = "connectivity_76.zip", speed: float = 3.0, dt: float = 0.1,
                    coupling_a: float = 0.02, nsig: float = 1e-4, seed: int = 42,
                    monitors_: Optional[List[str]] = None, period: float = 720.0, **model_params):
    """A configured TVB Simulator from plain settings (TVB names and units: ms, mm/ms)."""
    from tvb.datatypes.connectivity import Connectivity
    from tvb.simulator import coupling, integrators, models, monitors, noise, simulator
    conn = Connectivity.from_file(connectivity)
    conn.speed = np.array([speed])
    integ_cls = getattr(integrators, integrator)
    integ = integ_cls(dt=dt, noise=noise.Additive(nsig=np.array([nsig]), noise_seed=seed)) \
        if "Stochastic" in integrator else integ_cls(dt=dt)
    mons = []
    for name in monitors_ or ["Raw"]:
        cls = getattr(monitors, name)
        mons.append(cls() if name == "Raw" else cls(period=period))
    model_obj = getattr(models, model)(**{k: np.atleast_1d(v) for k, v in model_params.items()})
    sim = simulator.Simulator(model=model_obj, connectivity=conn, coupling=coupling.Linear(a=np.array([coupling_a])),
                              integrator=integ, monitors=mons).configure()
    if "Stochastic" not in integrator:
        # TVB draws a deterministic integrator's random initial history from numpy's global generator, unseeded:
        # drawn the same way from RandomState(seed) instead, every run of these settings starts alike
        sim.initial_conditions = sim.model.initial(dt, sim.good_history_shape, np.random.RandomState(seed))
        sim.configure()
    return sim


DEMO_CASES = [
    dict(title="deterministic Heun, 1 s, Raw (TVB-exact mode)", length=1000.0, exact=True,
         sim=dict(integrator="HeunDeterministic", dt=0.1)),
    dict(title="deterministic Heun, 1 s, Raw (float64 fitting mode)", length=1000.0, exact=False,
         sim=dict(integrator="HeunDeterministic", dt=0.1)),
    dict(title="HeunStochastic with TVB's noise stream, 10 s, TemporalAverage(1 ms)", length=10000.0, exact=True,
         sim=dict(integrator="HeunStochastic", dt=0.1, nsig=1e-4, monitors_=["TemporalAverage"], period=1.0)),
    dict(title="HeunStochastic, 30 s, Bold(720 ms) on S_e and S_i", length=30000.0, exact=True,
         sim=dict(integrator="HeunStochastic", dt=0.5, nsig=1e-4, monitors_=["Bold"], period=720.0,
                  coupling_a=1.0 / 3.0, w_p=0.7, G=0.5)),
]


def _parity(args) -> int:
    import tvb_torchfit
    print("tvb_torchfit parity: TVB's own Simulator and its torch twin, from the same start, on connectivity_76\n")
    worst = 0.0
    for case in DEMO_CASES[: 2 if args.quick else None]:
        sim = build_simulator(**case["sim"])
        report = tvb_torchfit.compare(sim, case["length"], exact=case["exact"], noise="tvb")
        print(f"== {case['title']}\n{report}\n")
        worst = max(worst, report.max_rel)
    print(f"largest relative difference over all cases: {worst:.3e}")
    return 0


def _demo_fit(args) -> int:
    from .demo import run
    from . import checks
    checks.writable_folder(args.out, "--out")
    lengths = {k: v for k, v in (("target_ms", args.target_ms), ("validate_ms", args.validate_ms),
                                 ("n_steps", args.steps)) if v is not None}
    run(args.out, quick=args.quick, processes=args.processes, **lengths)
    return 0


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not (value > 0 and np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value
    return parse


def _finite(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32), got {text}")
    return value


def _compare(args) -> int:
    import tvb_torchfit
    sim = build_simulator(model=args.model, integrator=args.integrator, connectivity=args.connectivity,
                          speed=args.speed, dt=args.dt, coupling_a=args.coupling_a, nsig=args.nsig, seed=args.seed,
                          monitors_=args.monitor, period=args.period)
    print(tvb_torchfit.compare(sim, args.length, exact=not args.float64, noise=args.noise))
    return 0


def _log(args):
    return (lambda msg: None) if getattr(args, "quiet", False) else (lambda msg: print(msg, flush=True))


def _fit_run(args) -> int:
    from .runs.config import load_config
    from .runs.pipeline import run_fit
    cfg = load_config(args.config, args.set or [])
    out = args.out if args.out is not None else f"runs/{cfg.run.name}"
    run_fit(cfg, out, progress=not args.quiet, validate_after=not args.no_validate, log=_log(args))
    _log(args)(f"run folder: {out}")
    return 0


def _validate_run(args) -> int:
    from .runs.pipeline import validate_run
    validate_run(args.run_dir, force=args.force, log=_log(args))
    return 0


def _simulate_run(args) -> int:
    import os
    import tvb_torchfit
    from .files import atomic_write
    sim = tvb_torchfit.load_fitted_simulator(args.run_dir, args.stage)
    sim = tvb_torchfit.clone_simulator(sim, noise_seed=args.seed)
    (t, bold), = sim.run(simulation_length=args.length)
    bold = bold[:, 0, :, 0]
    out = args.out or os.path.join(args.run_dir, f"simulated_seed{sim.integrator.noise.noise_seed}.npy"
                                   if hasattr(sim.integrator, "noise") else "simulated.npy")
    if out.endswith(".csv"):
        atomic_write(out, lambda f: np.savetxt(f, bold, delimiter=","))
    elif out.endswith(".npy"):
        atomic_write(out, lambda f: np.save(f, bold))
    else:
        raise SystemExit(f"--out {out}: expected a .npy or .csv file name")
    _log(args)(f"TVB BOLD {bold.shape} (time x regions, one sample per {float(sim.monitors[0].period):g} ms) -> {out}")
    return 0


def _cohort(args) -> int:
    from .runs.cohort import run_cohort
    from .runs.cohort_config import load_cohort
    cohort = load_cohort(args.config, args.set or [], out=args.out, torch_threads=args.threads_per_worker)
    run_cohort(cohort, scheduler=args.scheduler, workers=args.workers, progress=not args.quiet, log=_log(args))
    return 0


def _add_cohort_command(sub) -> None:
    co = sub.add_parser("cohort", help="a cohort: every subject fitted and validated (one Dask task each), a summary",
                        description="Fit every subject of a cohort file (see tvb_torchfit/runs/cohort_config.py): a "
                                    "run folder per subject (OUT/subjects/<name>), summary.csv, summary.md and "
                                    "summary.png in OUT. A rerun skips complete subjects and resumes the others.")
    co.add_argument("config", help="cohort configuration (.toml)")
    co.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (e.g. tcp://host:8786); "
                                                           "default: an embedded LocalCluster on this machine")
    co.add_argument("--workers", type=_positive(int), metavar="N",
                    help="worker processes of the embedded cluster (default: cores // threads per worker)")
    co.add_argument("--threads-per-worker", type=_positive(int), default=1, metavar="T",
                    help="torch threads per worker (default 1)")
    co.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key: cohort.*, subjects.*, overrides.* of the cohort file, any other key of "
                         "every subject's run config (as `fit --set`, e.g. validation.length=60000, ms); repeatable")
    co.add_argument("--out", metavar="DIR", help="cohort folder (default cohorts/<cohort.name>); a rerun resumes it")
    co.add_argument("--quiet", action="store_true", help="no progress bar or messages (batch systems)")
    co.set_defaults(func=_cohort)


def _add_run_commands(sub) -> None:
    fit = sub.add_parser("fit", help="a config-file run (TOML): staged fits, TVB validation, a run folder",
                         description="Fit a run configured in a TOML file (see demos/hcp_subject.toml and "
                                     "tvb_torchfit/runs/defaults.toml for every key and its unit: ms for tr, dt, "
                                     "periods, lengths and FCD windows).")
    fit.add_argument("config", help="run configuration (.toml; or a run folder's resolved config.json)")
    fit.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a key (dotted, TOML value; stages by index or name), e.g. "
                          "--set validation.length=60000 (ms) --set stages.global.fit.n_steps=5; repeatable")
    fit.add_argument("--out", metavar="DIR", help="run folder (default runs/<run.name>); a rerun resumes it")
    fit.add_argument("--no-validate", action="store_true", help="fit only (validate later with `validate`)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    fit.set_defaults(func=_fit_run)
    val = sub.add_parser("validate", help="TVB validation of a fitted run (in-sample and held-out r, FCD KS)")
    val.add_argument("run_dir", metavar="RUN_DIR")
    val.add_argument("--force", action="store_true", help="validate again even where a report exists")
    val.add_argument("--quiet", action="store_true", help="no messages")
    val.set_defaults(func=_validate_run)
    sim = sub.add_parser("simulate", help="TVB's own simulator at a run's fitted values; BOLD to a file")
    sim.add_argument("run_dir", metavar="RUN_DIR")
    sim.add_argument("--length", type=_positive(float), required=True, metavar="MS", help="simulation length, ms")
    sim.add_argument("--seed", type=int, default=None, help="TVB noise_seed (default: the run's integrator.noise_seed)")
    sim.add_argument("--stage", default=None, help="a stage's fitted values (default: the final stage)")
    sim.add_argument("--out", metavar="FILE", help="BOLD file, .npy or .csv, time x regions, one row per Bold period "
                                                   "(default RUN_DIR/simulated_seed<seed>.npy)")
    sim.add_argument("--quiet", action="store_true", help="no messages")
    sim.set_defaults(func=_simulate_run)


def main(argv: Optional[List[str]] = None) -> int:
    warnings.filterwarnings("ignore", module="tvb")
    parser = argparse.ArgumentParser(prog="tvb-torchfit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("demo", "fit-demo"):
        fit_demo = sub.add_parser(name, help="synthetic recovery on connectivity_76: TVB target, fit, write back, "
                                             "TVB validation" + (" (alias of demo)" if name != "demo" else ""))
        fit_demo.add_argument("--out", default="out/demo", help="output folder (figure, fit.json, summary.json)")
        fit_demo.add_argument("--quick", action="store_true", help="a short smoke run (not a meaningful fit)")
        fit_demo.add_argument("--processes", type=_positive(int), default=2,
                              help="runs at once in forked processes (TVB's target with ceiling, the twin's "
                                   "correction runs, TVB's validation seeds)")
        fit_demo.add_argument("--target-ms", type=_positive(float), metavar="MS",
                              help="length of TVB's target and ceiling runs, ms (default 600000)")
        fit_demo.add_argument("--validate-ms", type=_positive(float), metavar="MS",
                              help="length of each TVB validation run, ms (default 600000)")
        fit_demo.add_argument("--steps", type=_positive(int), help="optimiser steps of each linear fit (default 60)")
        fit_demo.set_defaults(func=_demo_fit)
    parity = sub.add_parser("parity", help="TVB and its torch twin side by side on connectivity_76")
    parity.add_argument("--quick", action="store_true", help="only the two 1 s deterministic cases")
    parity.set_defaults(func=_parity)
    cmp_ = sub.add_parser("compare", help="compare TVB and the torch twin on chosen settings")
    cmp_.add_argument("--model", default="ReducedWongWangExcInh", choices=["ReducedWongWang", "ReducedWongWangExcInh"])
    cmp_.add_argument("--integrator", default="HeunStochastic",
                      choices=["HeunDeterministic", "HeunStochastic", "EulerDeterministic", "EulerStochastic"])
    cmp_.add_argument("--connectivity", default="connectivity_76.zip", help="a tvb-data connectivity file")
    cmp_.add_argument("--speed", type=_positive(float), default=3.0, help="conduction speed, mm/ms")
    cmp_.add_argument("--dt", type=_positive(float), default=0.1, help="integration step, ms")
    cmp_.add_argument("--length", type=_positive(float), default=1000.0, help="simulation length, ms")
    cmp_.add_argument("--coupling-a", type=_finite, default=0.02, help="Linear coupling a (global coupling)")
    cmp_.add_argument("--nsig", type=_non_negative, default=1e-4, help="Additive noise nsig (diffusion coefficient)")
    cmp_.add_argument("--seed", type=_seed, default=42, help="TVB noise_seed (a deterministic integrator: the seed of "
                                                               "the random initial history)")
    cmp_.add_argument("--monitor", action="append", choices=["Raw", "SubSample", "TemporalAverage", "Bold"],
                      help="monitor(s) to compare (repeatable; default Raw)")
    cmp_.add_argument("--period", type=_positive(float), default=720.0, help="monitor period, ms")
    cmp_.add_argument("--noise", default="tvb", choices=["tvb", "torch"])
    cmp_.add_argument("--float64", action="store_true", help="float64 fitting mode instead of TVB-exact mode")
    cmp_.set_defaults(func=_compare)
    _add_run_commands(sub)
    _add_cohort_command(sub)
    args = parser.parse_args(argv)
    from .errors import TVBTorchFitError
    try:
        return args.func(args)
    except TVBTorchFitError as exc:                   # bad input: the message, not a traceback
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
