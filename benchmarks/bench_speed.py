#!/usr/bin/env python
"""Speed of the torch twin against TVB itself, measured in the same process.

    python benchmarks/bench_speed.py              # default run (eager and compile=True rows)
    python benchmarks/bench_speed.py --quick      # short smoke run
    python benchmarks/bench_speed.py --repeats 5 --write   # also write benchmarks/results.md
    python benchmarks/bench_speed.py --no-compile # eager rows only (no C++ compiler needed)
    python benchmarks/bench_speed.py --all        # + compiled fwd+bwd without checkpointing (slow to compile)
    python benchmarks/bench_speed.py --quick --profile     # + cProfile / torch.profiler of the batch-1 forward
    python benchmarks/bench_speed.py --tvboptim-python /work/venvs/tvboptim/bin/python   # + tvboptim (JAX) rows

Set-up: ReducedWongWangExcInh on TVB's bundled connectivity_76 (speed 3 mm/ms), Linear coupling,
HeunStochastic (dt 0.1 ms, Additive nsig 1e-4), Bold(period=720). The torch twin is
``TorchSimulator(read_simulator(sim), noise="torch", batch=B, dtype=..., compile=..., checkpoint=...)``
(what ``tvb_torchfit.from_tvb`` builds).

Every number is the MEDIAN over ``--repeats`` timed runs (time.perf_counter; process CPU time alongside),
each preceded by an untimed warm-up (numba compilation for TVB; block plans for torch; for compile=True the
one-off torch.compile, timed separately and reported in its own column, never in the steady-state figures).
Runs continue from where the previous one stopped (state, history and noise carry over), as in a long
simulation cut in pieces. "x TVB" is (TVB wall time per simulated second per sample) / (ours): above 1 is
faster than TVB; "x TVB cpu" the same with process CPU time (less sensitive to other load on the machine).
torch.set_num_threads is left at its default except in the rows marked "1 thread".

Compile times depend on the machine and on inductor's on-disk cache (/tmp/torchinductor_$USER): a first run
on a fresh machine compiles every graph (minutes on 2 busy cores, the backward graph most), later runs reuse
them (seconds). The default run takes about 2-3 minutes with a warm cache.

tvboptim (the JAX peer; rows T and R): measured in the same run by benchmarks/bench_tvboptim.py, run with the python
of a separate venv that has tvboptim (``python -m venv /work/venvs/tvboptim && /work/venvs/tvboptim/bin/pip install
tvboptim``; jax is never imported into this process). Found through --tvboptim-python, else $TVBOPTIM_PYTHON, else
/work/venvs/tvboptim/bin/python if it exists; otherwise skipped. This script writes the set-up (weights, TVB's
idelays, model parameters, coupling, noise, bounds and a deterministic TVB reference trajectory) to an npz the
other script reads; see its docstring for how tvboptim is configured. Rows R1-R3 compare tvboptim with the
compile=True rows, R5-R8 with the default path on one core (kernel rows K2s, K4s, K8 and K7: value and gradient
at batch 1 and 8). Adds about a minute, plus the float32
compiled fwd+bwd row C5f it is compared with (first compile on a fresh inductor cache: minutes).
"""
import argparse
import contextlib
import cProfile
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional

logging.disable(logging.WARNING)          # TVB's import-time warnings (psutil, hemispheres, ...)
warnings.filterwarnings("ignore")

import numpy as np
import torch

from tvb.simulator import coupling, integrators, models, monitors, noise, simulator
from tvb.datatypes import connectivity

import tvb_torchfit

HERE = os.path.dirname(os.path.abspath(__file__))
DT = 0.1                                   # ms


# ---------------------------------------------------------------------------- set-up
def build_tvb(coupling_a: float = 0.01, seed: int = 42) -> simulator.Simulator:
    """The configured TVB simulator of the issue's set-up."""
    conn = connectivity.Connectivity.from_file()
    conn.speed = np.array([3.0])
    sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh(),
        connectivity=conn,
        coupling=coupling.Linear(a=np.array([coupling_a])),
        integrator=integrators.HeunStochastic(
            dt=DT, noise=noise.Additive(nsig=np.array([1e-4]), noise_seed=seed)),
        monitors=(monitors.Bold(period=720.0),),
    )
    sim.configure()
    return sim


def n_steps_of(ms: float) -> int:
    return int(math.ceil(ms / DT))


def median_times(fn: Callable[[], None], repeats: int, cpu: Optional[List[float]] = None) -> List[float]:
    """Wall times of ``repeats`` calls; their process CPU times are appended to ``cpu`` if given."""
    out = []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return out


def make_twin(sim, batch: int, dtype: torch.dtype, compile: bool = False, checkpoint: Optional[bool] = None,
              kernel: Optional[bool] = False):
    """The twin as ``from_tvb`` builds it; ``kernel=None`` is the default path (the numba block kernel where it
    applies), ``False`` (this script's default, rows 2-5 and C) the eager / torch.compile paths."""
    from tvb_torchfit.simulator.adapter import read_simulator
    from tvb_torchfit.simulator.twin import TorchSimulator
    return TorchSimulator(read_simulator(sim), noise="torch", batch=batch, dtype=dtype, compile=compile,
                          checkpoint=checkpoint, kernel=kernel)


def eager_fallbacks(twin) -> List[str]:
    """Compiled calls of ``twin`` that failed to compile and now run eagerly (``CompiledOrEager.error``, from
    ``TorchSimulator.compiled_calls()``): a compiled row that fell back measures eager code, so the table says so."""
    return [f"{name}: {type(f.error).__name__}" for name, f in twin.compiled_calls().items() if f.error is not None]


def warm_up_twin(twin, n_steps: int) -> float:
    """Untimed run covering the block lengths a run of ``n_steps`` uses (plans are cached per block length;
    compile=True compiles here). Returns its wall time (the one-off compilation when compiled)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        twin.run(n_steps=twin.block + (n_steps % twin.block or twin.block))
    twin.detach_()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- measurements
def bench_tvb(sim, ms: float, repeats: int) -> Dict:
    sim.run(simulation_length=max(50.0, min(ms, 200.0)))     # warm-up: numba compilation, caches
    cpu: List[float] = []
    times = median_times(lambda: sim.run(simulation_length=ms), repeats, cpu)
    return dict(times=times, cpu=cpu, ms=ms, steps=n_steps_of(ms), batch=1)


def bench_forward(sim, ms: float, repeats: int, batch: int, dtype: torch.dtype, compile: bool = False,
                  kernel: Optional[bool] = False) -> Dict:
    twin = make_twin(sim, batch, dtype, compile, kernel=kernel)
    steps = n_steps_of(ms)
    t_warm = warm_up_twin(twin, steps)

    def once():
        with torch.no_grad():
            twin.run(simulation_length=ms)

    cpu: List[float] = []
    times = median_times(once, repeats, cpu)
    return dict(times=times, cpu=cpu, ms=ms, steps=steps, batch=batch, compile_s=t_warm if compile else None,
                fallbacks=eager_fallbacks(twin))


def _grad_run(twin, ms: float, backward: bool, saved: Optional[Dict[int, int]] = None, steps: bool = False):
    """One window with G requiring grad; loss = mean of S_e at the end of the window (``ms`` in steps if
    ``steps``)."""
    twin.detach_()
    G = twin.params["G"].detach().clone().requires_grad_(True)
    twin.set_param("G", G)
    hooks = contextlib.nullcontext()
    if saved is not None:
        def pack(t):
            st = t.untyped_storage()
            saved[st.data_ptr()] = st.nbytes()
            return t
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks:
        if steps:
            twin.run(n_steps=int(ms))
        else:
            twin.run(simulation_length=ms)
        loss = twin.state[0].mean()
    if backward:
        loss.backward()
        assert G.grad is not None and torch.isfinite(G.grad).all(), "no finite gradient w.r.t. G"
    return G


def bench_grad(sim, ms: float, repeats: int, dtype: torch.dtype = torch.float64, compile: bool = False,
               checkpoint: Optional[bool] = None, batch: int = 1, kernel: Optional[bool] = False) -> Dict:
    """fwd (no_grad), fwd (building the graph) and fwd+bwd on the same window, interleaved."""
    twin = make_twin(sim, batch, dtype, compile, checkpoint, kernel=kernel)
    steps = n_steps_of(ms)
    t_warm = warm_up_twin(twin, steps)
    t0 = time.perf_counter()
    _grad_run(twin, twin.block * 2, backward=True, steps=True)    # untimed: compiles the graph-mode blocks
    t_warm_grad = time.perf_counter() - t0
    mem = measure_memory(lambda saved: _grad_run(twin, ms, backward=True, saved=saved), ms)
    fwd, graph, both = [], [], []
    for _ in range(repeats):
        twin.detach_()
        t0 = time.perf_counter()
        with torch.no_grad():
            twin.run(simulation_length=ms)
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _grad_run(twin, ms, backward=False)
        graph.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _grad_run(twin, ms, backward=True)
        both.append(time.perf_counter() - t0)
    twin.detach_()
    return dict(fwd=fwd, graph=graph, both=both, ms=ms, steps=steps, mem=mem, checkpoint=twin.checkpoint, batch=batch,
                compile_s=(t_warm, t_warm_grad) if compile else None, fallbacks=eager_fallbacks(twin))


def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_memory(run_window: Callable[[Dict[int, int]], object], ms: float) -> Dict:
    """Peak RSS growth of one fwd+bwd window, and the bytes autograd saved for backward.

    RSS: Linux peak-RSS reset (write "5" to /proc/self/clear_refs), then VmHWM - VmRSS(before);
    fallback: resource.getrusage ru_maxrss delta (only sees growth beyond the process's earlier peak).
    Either way it is an RSS figure (allocator caching included); the saved-tensor bytes are exact.
    """
    method = "VmHWM - VmRSS (peak reset via /proc/self/clear_refs)"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kb("VmRSS")
    except OSError:
        before = None
    if before is None:
        method = "resource.getrusage ru_maxrss delta (lower bound)"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved: Dict[int, int] = {}
    run_window(saved)
    if method.startswith("VmHWM"):
        peak = _proc_status_kb("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(ms=ms, rss_mib=(peak - before) / 1024.0, saved_mib=sum(saved.values()) / 2 ** 20,
                n_saved=len(saved), method=method)


def fit_child(cfg: Dict) -> Dict:
    """In a fresh process (``--fit-child``): ``tvb_torchfit.fit`` on the benchmark's set-up (dt 0.1 ms, Bold
    TR 720 ms) for a session of ``cfg["trs"]`` TRs (``fc_window_trs`` = ``data_trs`` = trs); returns peak RSS
    (``_peak_rss_kb``: every allocation of the process, torch's CPU allocator included, which tracemalloc
    would not see) before and after the fit, and the wall time per fit step."""
    torch.set_num_threads(int(cfg.get("threads", 1)))
    sim = build_tvb()
    rng = np.random.RandomState(0)
    target = np.corrcoef(rng.randn(sim.connectivity.number_of_regions, 300))
    np.fill_diagonal(target, 1.0)
    rss0 = _peak_rss_kb()
    tr_ms = 720.0
    t0 = time.perf_counter()
    tvb_torchfit.fit(sim, target, {"G": (1.0, 3.0), "w_p": (1.0, 2.0)}, n_steps=cfg["n_steps"],
                     window_trs=cfg["window_trs"], fc_window_trs=cfg["trs"], data_trs=cfg["trs"],
                     batch=cfg["batch"], dtype=cfg["dtype"], compile=cfg["compile"],
                     warmup_ms=cfg["warmup_trs"] * tr_ms, progress=False)
    wall = time.perf_counter() - t0
    return dict(cfg, rss_setup_mib=rss0 / 1024.0, rss_peak_mib=_peak_rss_kb() / 1024.0, fit_s=wall)


def first_call_child(cfg: Dict) -> Dict:
    """In a fresh process (``--first-call-child``): ``from_tvb(sim)`` with no options and a ``cfg["ms"]`` run,
    timed from the twin's construction to the run's end (kernel compilation or cache load included)."""
    sim = build_tvb()
    t0 = time.perf_counter()
    twin = tvb_torchfit.from_tvb(sim)
    with torch.no_grad():
        twin.run(simulation_length=cfg["ms"])
    return dict(cfg, wall_s=time.perf_counter() - t0, path=type(twin.paths.free).__name__)


def bench_first_call(ms: float, cold: bool) -> Dict:
    """``first_call_child`` in a subprocess; ``cold``: with an empty kernel cache (numba compiles)."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if cold:
            env["TVB_TORCHFIT_CACHE"] = tmp
        args = [sys.executable, os.path.abspath(__file__), "--first-call-child", json.dumps(dict(ms=ms))]
        if not cold:                     # warm: the kernels this run needs are in the cache (an untimed run first)
            subprocess.run(args, capture_output=True, text=True, env=env)
        proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"first-call subprocess failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), cold=cold)


def fit_step_child(cfg: Dict) -> Dict:
    """In a fresh process (``--fit-step-child``): the demo's fit (``demo.FIT``: dt 1 ms, batch 8, 20-TR windows,
    float32, one thread) for ``cfg["n_steps"]`` optimiser steps on the demo's start simulator, against a
    random target FC; returns the fit's wall time."""
    from tvb_torchfit import demo
    torch.set_num_threads(1)
    start = demo.demo_simulator(G=0.05, w_p=0.42)
    rng = np.random.RandomState(0)
    target = np.corrcoef(rng.randn(start.connectivity.number_of_regions, 300))
    np.fill_diagonal(target, 1.0)
    t0 = time.perf_counter()
    tvb_torchfit.fit(start, target, demo.BOUNDS, rmse_weight=demo.RMSE_WEIGHT, compile=cfg["compile"],
                     progress=False, **dict(demo.FIT, n_steps=cfg["n_steps"]))
    return dict(cfg, fit_s=time.perf_counter() - t0)


def bench_fit_steps(compile: bool, steps=(2, 6), repeats: int = 2) -> Dict:
    """Seconds per optimiser step of the demo's fit: (wall(n2) - wall(n1)) / (n2 - n1), fresh processes (set-up,
    warm-up and compilation cancel out; an untimed run of the longer fit first fills the kernel cache, so that
    neither timed process compiles a kernel layout the other loads). Each fit length is run ``repeats`` times,
    alternating, and its shortest wall is used (one slow process — a compile, another job — would otherwise set
    the figure: a 6-step fit once took 12.3 s against 5.5–6.1 s in its neighbours)."""
    runs: Dict[int, List[float]] = {n: [] for n in steps}
    for i, n in enumerate((steps[-1],) + tuple(steps) * repeats):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--fit-step-child",
                               json.dumps(dict(n_steps=n, compile=compile))], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"fit subprocess failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        wall = json.loads(proc.stdout.strip().splitlines()[-1])["fit_s"]
        if i:                                        # the first run only fills the cache
            runs[n].append(wall)
    walls = [min(runs[n]) for n in steps]
    return dict(walls=walls, steps=list(steps), per_step=(walls[1] - walls[0]) / (steps[1] - steps[0]),
                compile=compile, all_walls={str(n): runs[n] for n in steps})


def _peak_rss_kb() -> int:
    """Peak RSS of this process in KiB: /proc/self/status VmHWM (this process image only), else ru_maxrss
    (which Linux carries over exec from the parent: a subprocess of a big parent would report its size)."""
    hwm = _proc_status_kb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_fit_memory(trs: int, window_trs: int, batch: int, n_steps: int = 2, warmup_trs: int = 2,
                     dtype: str = "float32", compile: bool = True) -> Dict:
    """Peak RSS of a whole ``tvb_torchfit.fit`` (``n_steps`` optimiser steps) in a subprocess of its own."""
    cfg = dict(trs=trs, window_trs=window_trs, batch=batch, n_steps=n_steps, warmup_trs=warmup_trs, dtype=dtype,
               compile=compile, threads=torch.get_num_threads())
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--fit-child", json.dumps(cfg)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fit subprocess failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["total_s"] = time.perf_counter() - t0
    return out


def bench_demo() -> Dict:
    """Wall time of ``tvb-torchfit demo`` end to end, in a subprocess (output to a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", "import sys; from tvb_torchfit.cli import main; "
                               "sys.exit(main(sys.argv[1:]))", "demo", "--out", tmp],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"demo failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return dict(wall_s=wall, tail=proc.stdout.strip().splitlines()[-6:])


def profile_forward(sim, ms: float, top: int = 12) -> str:
    """cProfile and torch.profiler of a batch-1 float64 no_grad forward of ``ms``."""
    twin = tvb_torchfit.from_tvb(sim, noise="torch", batch=1, dtype=torch.float64)
    warm_up_twin(twin, n_steps_of(ms))
    buf = io.StringIO()
    pr = cProfile.Profile()
    with torch.no_grad():
        pr.enable()
        twin.run(simulation_length=ms)
        pr.disable()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        twin.run(simulation_length=ms)
    buf.write("\ntorch.profiler, by self CPU time:\n")
    buf.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
    return buf.getvalue()


# ---------------------------------------------------------------------------- report
def one_thread(fn: Callable[[], Dict]) -> Dict:
    """Run ``fn`` with torch.set_num_threads(1), restoring the previous setting afterwards."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(prev)


def one_core(fn: Callable[[], Dict]) -> Dict:
    """Run ``fn`` with every noise draw on the calling thread (``TVB_TORCHFIT_DRAW_AHEAD=0``: the default path
    then uses one core, as TVB does), restoring the environment afterwards."""
    from tvb_torchfit.simulator.noise import DRAW_AHEAD_ENV
    prev = os.environ.get(DRAW_AHEAD_ENV)
    os.environ[DRAW_AHEAD_ENV] = "0"
    try:
        return fn()
    finally:
        if prev is None:
            del os.environ[DRAW_AHEAD_ENV]
        else:
            os.environ[DRAW_AHEAD_ENV] = prev


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> List[str]:
    def ver(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    cores = machine_cores()
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return [
        f"machine: {platform.platform()}; CPU: {cpu or 'unknown'}; os.cpu_count()={os.cpu_count()}, usable cores={cores}",
        f"python {platform.python_version()}; torch {torch.__version__} (threads {torch.get_num_threads()}); "
        f"tvb-library {ver('tvb-library')}; tvb-data {ver('tvb-data')}; numpy {np.__version__}; numba {ver('numba')}",
    ]


def optional_competitors() -> str:
    found = [m for m in ("tvboptim", "jax") if importlib.util.find_spec(m) is not None]
    if "tvboptim" in found:
        return "tvboptim importable (" + ", ".join(found) + "): not benchmarked by this script"
    if found:
        return "jax importable but tvboptim not installed: skipped"
    return "tvboptim not installed: skipped"


# ---------------------------------------------------------------------------- tvboptim (JAX peer), own venv
TVBOPTIM_DEFAULT_PYTHON = "/work/venvs/tvboptim/bin/python"
TVBOPTIM_PARAMS = ("a_e", "b_e", "d_e", "gamma_e", "tau_e", "w_p", "J_N", "W_e", "a_i", "b_i", "d_i", "gamma_i",
                   "tau_i", "J_i", "W_i", "I_o", "I_ext", "G", "lamda")
TVBOPTIM_REF_MS = 100.0


def find_tvboptim_python(arg: Optional[str]) -> Optional[str]:
    """--tvboptim-python, else $TVBOPTIM_PYTHON, else TVBOPTIM_DEFAULT_PYTHON if it exists; '' = skip."""
    if arg is None:
        arg = os.environ.get("TVBOPTIM_PYTHON")
    if arg is None:
        arg = TVBOPTIM_DEFAULT_PYTHON if os.path.exists(TVBOPTIM_DEFAULT_PYTHON) else ""
    return arg or None


def write_tvboptim_setup(sim, path: str, coupling_a: float, seed: int = 42) -> None:
    """The arrays bench_tvboptim.py builds tvboptim from, read off the configured TVB simulator ``sim``: weights,
    TVB's integer delays (idelays at dt), model parameters, Linear a/b, Additive nsig, state bounds, and a
    deterministic TVB reference (HeunDeterministic, Raw monitor, TVBOPTIM_REF_MS from a constant history at
    S_e = S_i = 0.001) that the script reproduces as a check of the set-up."""
    conn, model = sim.connectivity, sim.model
    init = np.array([0.001, 0.001])
    ref_sim = simulator.Simulator(
        model=models.ReducedWongWangExcInh(**{n: np.array(getattr(model, n)) for n in TVBOPTIM_PARAMS}),
        connectivity=conn, coupling=coupling.Linear(a=np.array(sim.coupling.a), b=np.array(sim.coupling.b)),
        integrator=integrators.HeunDeterministic(dt=sim.integrator.dt), monitors=(monitors.Raw(),),
        initial_conditions=np.broadcast_to(init[None, :, None, None],
                                           (conn.horizon, len(init), conn.number_of_regions, 1)).copy())
    ref_sim.configure()
    (_, ref), = ref_sim.run(simulation_length=TVBOPTIM_REF_MS)
    bounds = model.state_variable_boundaries
    np.savez(path, weights=np.asarray(conn.weights, dtype=np.float64), idelays=np.asarray(conn.idelays),
             dt=float(sim.integrator.dt), param_names=np.array(TVBOPTIM_PARAMS),
             param_values=np.array([float(np.asarray(getattr(model, n)).ravel()[0]) for n in TVBOPTIM_PARAMS]),
             coupling_a=float(np.asarray(sim.coupling.a).ravel()[0]),
             coupling_b=float(np.asarray(sim.coupling.b).ravel()[0]),
             nsig=float(np.asarray(sim.integrator.noise.nsig).ravel()[0]),
             bounds_lo=np.array([bounds[v][0] for v in model.state_variables], dtype=np.float64),
             bounds_hi=np.array([bounds[v][1] for v in model.state_variables], dtype=np.float64),
             initial=init, ref=np.asarray(ref[:, :, :, 0]), seed=seed)


def bench_tvboptim(python: str, setup_path: str, threads: str, fwd_ms: float, batch_ms: float, grad_ms: float,
                   repeats: int, batch: int = 64) -> Dict:
    """Run benchmarks/bench_tvboptim.py with tvboptim's venv ``python``; its last stdout line is one JSON object.
    threads "1": pinned to one core (the script does it) and OMP_NUM_THREADS=1; "default": XLA left alone."""
    env = dict(os.environ)
    if threads == "1":
        env["OMP_NUM_THREADS"] = "1"
    cmd = [python, os.path.join(HERE, "bench_tvboptim.py"), "--setup", setup_path, "--threads", threads,
           "--fwd-ms", str(fwd_ms), "--batch-ms", str(batch_ms), "--grad-ms", str(grad_ms),
           "--repeats", str(repeats), "--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"bench_tvboptim.py (rc {proc.returncode}) printed no JSON: {tail}") from None
    out["cmd"] = " ".join(cmd)
    return out


def fmt_row(cells: List[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def tvboptim_rows(lines: List[str], results: Dict, errors: Dict, modes: List[str], tvb_per_s: Optional[float],
                  tvb_cpu_per_s: Optional[float], python: str) -> List[str]:
    """Rows T (tvboptim, from bench_tvboptim.py's JSON) and R (time ours / time tvboptim); returns the notes."""
    main_cfg, default_cfg = "sparse-circular", "dense-roll"
    cfg_label = {main_cfg: "SparseDelayGraph + circular buffer", default_cfg: "tvboptim's default DenseDelayGraph "
                 "+ roll buffer"}
    mode_label = {"1": "1 core", "default": "XLA default threads"}
    runs = {m: results.get(f"tvboptim_{m}") for m in modes}

    def failed(idx, label, why):
        lines.append(fmt_row([idx, label, "", "FAILED", why, "", "", ""]))

    def part(mode, cfg, name):
        run = runs.get(mode)
        if run is None:
            return None, errors.get(f"tvboptim_{mode}", "not run")
        got = run.get("configs", {}).get(cfg, {}).get(name)
        return got, run.get("errors", {}).get(f"{cfg}/{name}", "not run")

    first = next((r for r in runs.values() if r), None)
    chk = first["configs"].get(main_cfg, {}).get("check") if first else None
    if chk:
        lines.append(fmt_row(["T0", f"tvboptim set-up check: deterministic {chk['ms']:g} ms from the same constant "
                              "history as TVB HeunDeterministic (same weights, idelays, parameters), float32",
                              "", f"max abs difference of S_e, S_i: **{chk['max_abs_diff']:.1e}** (values up to "
                              f"{chk['max_abs_ref']:.2f}); delays differing from TVB's idelays: "
                              f"{chk['delay_mismatch']}", "", "", "", ""]))
    suffix = {("1", main_cfg): "", ("default", main_cfg): "d", ("1", default_cfg): "r",
              ("default", default_cfg): "rd"}
    combos = [(m, c) for c in (main_cfg, default_cfg) for m in modes]

    def fwd_rows(idx, name, what):
        for mode, cfg in combos:
            i = idx + suffix[(mode, cfg)]
            label = f"tvboptim {what}, float32, {mode_label[mode]}, {cfg_label[cfg]}"
            r, why = part(mode, cfg, name)
            if r is None:
                failed(i, label, why)
                continue
            sec = r["ms"] / 1000.0
            per_sample_s = r["median_s"] / sec / r["batch"]
            cpu = statistics.median(r["cpu_s"]) / sec / r["batch"]
            spread = f"[{min(r['wall_s']) / sec / r['batch']:.3f}..{max(r['wall_s']) / sec / r['batch']:.3f}]"
            lines.append(fmt_row([i, label, f"{r['ms']:g} ms x {r['batch']}", f"{per_sample_s:.4f} {spread}",
                                  f"{r['us_per_sample_step']:.2f}",
                                  f"{tvb_per_s / per_sample_s:.2f}" if tvb_per_s else "n/a",
                                  f"{tvb_cpu_per_s / cpu:.2f}" if tvb_cpu_per_s else "n/a",
                                  f"{r['compile_s']:.1f}"]))

    def grad_rows_tvo(idx, loss, what):
        for mode, cfg in combos:
            i = idx + suffix[(mode, cfg)]
            label = f"tvboptim value_and_grad {what} / dG, float32, {mode_label[mode]}, {cfg_label[cfg]}"
            g, why = part(mode, cfg, "grad")
            if g is None or loss not in g:
                failed(i, label, why)
                continue
            g = g[loss]
            sec = g["ms"] / 1000.0
            vg, fwd = g["vg"]["median_s"], g["fwd"]["median_s"]
            lines.append(fmt_row([i, label, f"{g['ms']:g} ms x 1",
                                  f"{vg / sec:.3f} (forward, loss value only: {fwd / sec:.3f}; ratio "
                                  f"**{g['ratio_vg_fwd']:.2f}**)",
                                  f"{g['vg']['us_per_step']:.1f} (fwd {g['fwd']['us_per_step']:.1f})",
                                  f"{tvb_per_s / (vg / sec):.2f}" if tvb_per_s else "n/a", "",
                                  f"{g['compile_fwd_s']:.1f} + {g['compile_vg_s']:.1f}"]))

    fwd_rows("T1", "fwd", "forward (jit), batch 1")
    fwd_rows("T2", "batch", f"forward (jit + vmap over {first['batch'] if first else 64} noise keys), per sample")
    grad_rows_tvo("T3", "end", "d mean(S_e(end))")
    grad_rows_tvo("T4", "fc", "d FC-loss")

    # ours / tvboptim, same windows, same dtype (float32), same thread setting
    def ours_us(key):
        r = results.get(key)
        if r is None:
            return None
        if "both" in r:
            return statistics.median(r["both"]) / (r["steps"] * r["batch"]) * 1e6
        return statistics.median(r["times"]) / (r["steps"] * r["batch"]) * 1e6

    def ratio_row(idx, label, ours_key, ours_name, mode, name, loss=None):
        ours = ours_us(ours_key)
        cells = []
        for cfg in (main_cfg, default_cfg):
            r, _ = part(mode, cfg, name)
            if r is not None and loss is not None:
                r = r.get(loss, {}).get("vg") if loss else r.get("vg")
            if r is None or ours is None:
                cells.append(f"{cfg}: n/a")
                continue
            t = r["us_per_sample_step"]
            cells.append(f"{cfg}: {ours:.2f} / {t:.2f} = **{ours / t:.2f}**")
        lines.append(fmt_row([idx, label + f" ({ours_name} / tvboptim {mode_label[mode]})", "",
                              "; ".join(cells), "", "", "", ""]))

    if "1" in modes:
        ratio_row("R1", "time ours / tvboptim (< 1: ours faster), forward batch 1 float32, µs per step", "c_f32_1t",
                  "C2t", "1", "fwd")
        ratio_row("R2", "time ours / tvboptim, forward batch 64 float32, µs per sample-step", "c_b64_1t", "C3t",
                  "1", "batch")
    if "default" in modes:
        ratio_row("R2d", "time ours / tvboptim, forward batch 64 float32, µs per sample-step", "c_b64", "C3",
                  "default", "batch")
    if "1" in modes:
        ratio_row("R3", "time ours / tvboptim, fwd+bwd (value_and_grad) of d mean(S_e(end))/dG, float32, µs per "
                        "step", "c_grad_f32_1t", "C5f", "1", "grad", loss="end")
        g = results.get("c_grad_f32_1t")
        r, _ = part("1", main_cfg, "grad")
        if g is not None and r is not None and "end" in r:
            ours_ratio = statistics.median(b / f for b, f in zip(g["both"], g["fwd"]))
            lines.append(fmt_row(["R3b", "  fwd+bwd / forward on the same window: ours (C5f) vs tvboptim (T3)", "",
                                  f"{ours_ratio:.2f} vs {r['end']['ratio_vg_fwd']:.2f}", "", "", "", ""]))

    # the default path (the numba block kernel, rows K) against the same tvboptim figures
    if "1" in modes:
        ratio_row("R5", "time ours / tvboptim, forward batch 1 float32, one core each, µs per step", "k_f32_1c",
                  "K2s", "1", "fwd")
        ratio_row("R6", "time ours / tvboptim, forward batch 64 float32, one core each, µs per sample-step",
                  "k_b64_1c", "K4s", "1", "batch")
        ratio_row("R7", "time ours / tvboptim, value and gradient of d mean(S_e(end))/dG, batch 1 float32, µs per "
                        "step", "k_grad_f32", "K8", "1", "grad", loss="end")
        ratio_row("R8", "time ours / tvboptim, value and gradient of d mean(S_e(end))/dG, batch 8 float32, µs per "
                        "sample-step", "k_grad_b8", "K7", "1", "grad_batch", loss="")
        g = results.get("k_grad_b8")
        r, _ = part("1", main_cfg, "grad_batch")
        if g is not None and r is not None:
            ours_ratio = statistics.median(b / f for b, f in zip(g["both"], g["fwd"]))
            lines.append(fmt_row(["R8b", "  fwd+bwd / forward on the same window, batch 8: ours (K7) vs tvboptim",
                                  "", f"{ours_ratio:.2f} vs {r['ratio_vg_fwd']:.2f}", "", "", "", ""]))

    notes = []
    if first:
        v = first["versions"]
        notes.append(f"tvboptim rows: tvboptim {v['tvboptim']}, jax {v['jax']}, jaxlib {v['jaxlib']}, numpy "
                     f"{v['numpy']}, python {v['python']} ({python}), devices {', '.join(v['devices'])}, "
                     f"x64 {v['x64']}; run by benchmarks/bench_tvboptim.py in a subprocess per thread setting; "
                     f"medians over {first['repeats']} repeats after an untimed first call; compile = jit lower + "
                     "compile (seconds; for T3/T4: loss value + value_and_grad).")
        notes.append("tvboptim set-up: WongWangExcInh with TVB's parameters, DelayedLinearCoupling(S_e, a, b) into "
                     "the model's delayed input (G*J_N*c as in TVB), delays idelays*dt read back as rint(delays/dt) "
                     "= TVB's idelays, AdditiveNoise(sigma=sqrt(2 nsig)) on S_e and S_i, BoundedSolver(Heun, [0, 1]) "
                     "(clips only at the end of a step, TVB also clips the predictor), dt 0.1 ms, float32, coupling "
                     "once per step for both Heun stages (as TVB). Its forward returns the S_e/S_i trajectory and "
                     "has no BOLD (TVB and ours also feed the Bold monitor). T1/T2 restart from the initial state at "
                     "each call (pure function); ours continue. Loss 'end' = mean S_e at the window's end (ours in "
                     "C5/C5f); 'FC' = mean squared difference between corr(S_e over the window) and a fixed "
                     "random correlation matrix.")
        for m, run in runs.items():
            if run is None:
                continue
            for cfg in (main_cfg, default_cfg):
                g = run.get("configs", {}).get(cfg, {}).get("grad", {})
                if g:
                    notes.append(f"tvboptim gradient check ({mode_label[m]}, {cfg}): d/dG by AD vs central "
                                 "difference (h = 0.01, float32): " + "; ".join(
                                     f"{k} {g[k]['grad']:.4g} vs {g[k]['grad_fd']:.4g}" for k in ("end", "fc")
                                     if k in g) + f"; peak RSS of the run {run.get('peak_rss_mib', 0):.0f} MiB.")
                    break
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median; default 3)")
    ap.add_argument("--write", action="store_true", help="also write the table to benchmarks/results.md")
    ap.add_argument("--profile", action="store_true", help="print cProfile/torch.profiler of the batch-1 forward")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile=True rows")
    ap.add_argument("--all", action="store_true",
                    help="also the compiled fwd+bwd without checkpointing (its backward graph compiles for minutes)")
    ap.add_argument("--coupling-a", type=float, default=0.01, help="Linear coupling a (default 0.01)")
    ap.add_argument("--no-fit-memory", action="store_true",
                    help="skip the fit peak-memory rows (two fits in subprocesses)")
    ap.add_argument("--demo", action="store_true", help="also time `tvb-torchfit demo` end to end (minutes)")
    ap.add_argument("--tvboptim-python", default=None,
                    help="python of a venv with tvboptim installed (default: $TVBOPTIM_PYTHON, else "
                         f"{TVBOPTIM_DEFAULT_PYTHON} if it exists, else skipped; '' skips)")
    ap.add_argument("--tvboptim-threads", choices=("1", "default", "both"), default="both",
                    help="tvboptim runs: pinned to one core, XLA's default threads, or both (default)")
    ap.add_argument("--no-fit-steps", action="store_true",
                    help="skip the demo fit's cost per optimiser step (rows S; five fits in subprocesses)")
    ap.add_argument("--fit-child", help=argparse.SUPPRESS)
    ap.add_argument("--first-call-child", help=argparse.SUPPRESS)
    ap.add_argument("--fit-step-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fit_child:
        print(json.dumps(fit_child(json.loads(args.fit_child))))
        return 0
    if args.first_call_child:
        print(json.dumps(first_call_child(json.loads(args.first_call_child))))
        return 0
    if args.fit_step_child:
        print(json.dumps(fit_step_child(json.loads(args.fit_step_child))))
        return 0
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    sim_ms = 200.0 if args.quick else 1000.0       # rows 1-3, C1-C3
    one_thread_ms = 100.0 if args.quick else 250.0  # row 2t
    batch_ms = 50.0 if args.quick else 250.0       # rows 4, C4 (64 samples per step)
    grad_ms = 50.0 if args.quick else 250.0        # rows 5-6 (eager fwd+bwd costs ~5x fwd)
    cgrad_ms = 100.0 if args.quick else 500.0      # rows C5-C6
    R = args.repeats
    t_start = time.perf_counter()

    sim = build_tvb(args.coupling_a)
    print(f"TVB set-up: {type(sim.model).__name__}, connectivity_76 (N={sim.connectivity.number_of_regions}), "
          f"Linear(a={args.coupling_a}), HeunStochastic(dt={DT}, Additive nsig=1e-4), Bold(720); "
          f"repeats={R}{' (quick)' if args.quick else ''}", flush=True)

    results = {}
    errors = {}

    def attempt(key, fn):
        print(f"  measuring {key} ...", flush=True)
        t0 = time.perf_counter()
        try:
            results[key] = fn()
        except Exception as exc:          # report and go on: a failing row must not hide the others
            errors[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            print(f"    FAILED: {errors[key]}", flush=True)
        print(f"    ({time.perf_counter() - t0:.0f} s)", flush=True)

    f32, f64 = torch.float32, torch.float64
    load_start = os.getloadavg()
    attempt("tvb", lambda: bench_tvb(sim, sim_ms, R))
    attempt("grad", lambda: bench_grad(sim, grad_ms, R))    # early: less allocator history in the RSS figure
    if not args.no_compile:
        attempt("c_grad", lambda: bench_grad(sim, cgrad_ms, R, compile=True))            # checkpointed
        # the fit's own configuration (tvb_torchfit.fit: batch 8 noise realisations, float32, one thread)
        attempt("c_grad_b8", lambda: one_thread(lambda: bench_grad(sim, cgrad_ms, R, dtype=torch.float32,
                                                                   compile=True, batch=8)))
        if args.all:
            attempt("c_grad_nock", lambda: bench_grad(sim, cgrad_ms, R, compile=True, checkpoint=False))
    # the default path (from_tvb(sim) with no options: the numba block kernel and its adjoint)
    first_ms = 2000.0 if args.quick else 10000.0
    attempt("first_warm", lambda: bench_first_call(first_ms, cold=False))
    attempt("first_cold", lambda: bench_first_call(first_ms, cold=True))
    attempt("k_f64", lambda: bench_forward(sim, sim_ms, R, 1, f64, kernel=None))
    attempt("k_f32", lambda: bench_forward(sim, sim_ms, R, 1, f32, kernel=None))
    attempt("k_b8", lambda: one_thread(lambda: bench_forward(sim, batch_ms, R, 8, f32, kernel=None)))
    attempt("k_b64", lambda: one_thread(lambda: bench_forward(sim, batch_ms, R, 64, f32, kernel=None)))
    # the same on one core (no draw-ahead thread): like for like with TVB and tvboptim's one-core rows
    attempt("k_f64_1c", lambda: one_core(lambda: bench_forward(sim, sim_ms, R, 1, f64, kernel=None)))
    attempt("k_f32_1c", lambda: one_core(lambda: bench_forward(sim, sim_ms, R, 1, f32, kernel=None)))
    attempt("k_b64_1c", lambda: one_core(lambda: one_thread(lambda: bench_forward(sim, batch_ms, R, 64, f32,
                                                                                    kernel=None))))
    attempt("k_grad", lambda: bench_grad(sim, cgrad_ms, R, kernel=None))
    attempt("k_grad_b8", lambda: one_thread(lambda: bench_grad(sim, cgrad_ms, R, dtype=f32, batch=8, kernel=None)))
    if not args.no_fit_steps:
        attempt("fit_steps_kernel", lambda: bench_fit_steps(compile=False))
        if not args.no_compile:
            attempt("fit_steps_compile", lambda: bench_fit_steps(compile=True))
    attempt("f64", lambda: bench_forward(sim, sim_ms, R, 1, f64))
    attempt("f64_1t", lambda: one_thread(lambda: bench_forward(sim, one_thread_ms, R, 1, f64)))
    attempt("f32", lambda: bench_forward(sim, sim_ms, R, 1, f32))
    attempt("b64", lambda: bench_forward(sim, batch_ms, R, 64, f32))
    if not args.no_compile:
        attempt("c_f64", lambda: bench_forward(sim, sim_ms, R, 1, f64, compile=True))
        attempt("c_f64_1t", lambda: one_thread(lambda: bench_forward(sim, sim_ms, R, 1, f64, compile=True)))
        attempt("c_f32", lambda: bench_forward(sim, sim_ms, R, 1, f32, compile=True))
        attempt("c_f32_1t", lambda: one_thread(lambda: bench_forward(sim, sim_ms, R, 1, f32, compile=True)))
        attempt("c_b64", lambda: bench_forward(sim, batch_ms, R, 64, f32, compile=True))
        attempt("c_b64_1t", lambda: one_thread(lambda: bench_forward(sim, batch_ms, R, 64, f32, compile=True)))
    tvo_python = find_tvboptim_python(args.tvboptim_python)
    tvo_modes = [m for m in ("1", "default") if args.tvboptim_threads in (m, "both")]
    if tvo_python is not None:
        if not args.no_compile:       # like-for-like with tvboptim's float32 value_and_grad on one core
            attempt("c_grad_f32_1t", lambda: one_thread(lambda: bench_grad(sim, cgrad_ms, R, dtype=f32,
                                                                           compile=True)))
        # like-for-like with tvboptim's float32 value_and_grad at batch 1, on the default path (one thread)
        attempt("k_grad_f32", lambda: one_thread(lambda: bench_grad(sim, cgrad_ms, R, dtype=f32, kernel=None)))
        with tempfile.TemporaryDirectory() as tmp:
            setup_path = os.path.join(tmp, "tvboptim_setup.npz")
            attempt("tvboptim_setup", lambda: write_tvboptim_setup(sim, setup_path, args.coupling_a) or {})
            if "tvboptim_setup" in results:
                for mode in tvo_modes:
                    attempt(f"tvboptim_{mode}", lambda mode=mode: bench_tvboptim(
                        tvo_python, setup_path, mode, sim_ms, batch_ms, cgrad_ms, R))
    # peak memory of a whole fit at dt 0.1 ms: a 100-TR and a full HCP session (1200 TRs of 720 ms); the window
    # (window_trs TRs, 7200 steps each, fwd+bwd) is what costs memory, the session only sizes the FC buffer
    fit_window, fit_batch = (2, 4) if args.quick else (10, 8)
    if not args.no_fit_memory:
        for trs in (100, 1200):
            attempt(f"fit_{trs}", lambda trs=trs: bench_fit_memory(trs, fit_window, fit_batch))
    # TVB again at the end (same simulator, continuing): the machine's speed drifts over a long benchmark, so
    # every ratio uses the median of TVB's repeats at the start and at the end together
    attempt("tvb_end", lambda: bench_tvb(sim, sim_ms, R))
    if args.demo:
        attempt("demo", bench_demo)
    load_end = os.getloadavg()

    if "tvb" in results and "tvb_end" in results:
        a, b = results["tvb"], results["tvb_end"]
        results["tvb_start"] = dict(a)
        results["tvb"] = dict(a, times=a["times"] + b["times"], cpu=a["cpu"] + b["cpu"])
    tvb = results.get("tvb")
    tvb_per_s = statistics.median(tvb["times"]) / (tvb["ms"] / 1000.0) if tvb else None
    tvb_cpu_per_s = statistics.median(tvb["cpu"]) / (tvb["ms"] / 1000.0) if tvb else None

    lines = []
    lines += [f"# tvb_torchfit speed benchmark ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    lines += [f"- {m}" for m in machine_info()]
    lines += [f"- set-up: ReducedWongWangExcInh, connectivity_76, speed 3 mm/ms, Linear(a={args.coupling_a}), "
              f"HeunStochastic dt {DT} ms, Additive nsig 1e-4, Bold(720); torch twin noise='torch'",
              f"- medians over {R} repeats (min..max in brackets); 'x TVB' = TVB s per simulated s per sample "
              f"/ ours (> 1: faster than TVB), wall time and process CPU time; compile: the one-off "
              f"torch.compile of the first run, excluded from every other figure", ""]
    header = ["#", "what", "simulated", "wall s / simulated s (per sample)", "µs / step (per sample-step)",
              "x TVB", "x TVB cpu", "compile s"]
    lines += [fmt_row(header), fmt_row(["---"] * len(header))]

    def speed_row(idx, label, key):
        if key in errors or key not in results:
            lines.append(fmt_row([idx, label, "", "FAILED" if key in errors else "not run", errors.get(key, ""),
                                  "", "", ""]))
            return
        r = results[key]
        med = statistics.median(r["times"])
        per_sample_s = med / (r["ms"] / 1000.0) / r["batch"]
        us = med / (r["steps"] * r["batch"]) * 1e6
        ratio = f"{tvb_per_s / per_sample_s:.2f}" if tvb_per_s else "n/a"
        cpu = statistics.median(r["cpu"]) / (r["ms"] / 1000.0) / r["batch"]
        ratio_cpu = f"{tvb_cpu_per_s / cpu:.2f}" if tvb_cpu_per_s else "n/a"
        spread = f"[{min(r['times']) / (r['ms'] / 1000.0) / r['batch']:.3f}..{max(r['times']) / (r['ms'] / 1000.0) / r['batch']:.3f}]"
        comp = f"{r['compile_s']:.0f}" if r.get("compile_s") is not None else ""
        if r.get("fallbacks"):
            label += " **(EAGER FALLBACK: " + "; ".join(r["fallbacks"]) + ")**"
        lines.append(fmt_row([idx, label, f"{r['ms']:g} ms x {r['batch']}", f"{per_sample_s:.4f} {spread}",
                              f"{us:.2f}", ratio, ratio_cpu, comp]))

    def grad_rows(idx, label, key):
        if key not in results:
            lines.append(fmt_row([idx, label, "", "FAILED" if key in errors else "not run", errors.get(key, ""),
                                  "", "", ""]))
            return
        g = results[key]
        sec = g["ms"] / 1000.0
        fwd, graph, both = (statistics.median(g[k]) for k in ("fwd", "graph", "both"))
        # ratios paired per repeat (the three runs of a repeat follow each other), then the median:
        # less sensitive to load that changes during the benchmark than a ratio of medians
        r_fwd = statistics.median(b / f for b, f in zip(g["both"], g["fwd"]))
        r_graph = statistics.median(b / f for b, f in zip(g["both"], g["graph"]))
        nb = g.get("batch", 1)
        ratio = f"{tvb_per_s / (both / sec / nb):.2f}" if tvb_per_s else "n/a"
        comp = "{:.0f} + {:.0f}".format(*g["compile_s"]) if g.get("compile_s") else ""
        if g.get("fallbacks"):
            label += " **(EAGER FALLBACK: " + "; ".join(g["fallbacks"]) + ")**"
        lines.append(fmt_row([idx, label, f"{g['ms']:g} ms x {nb}", f"{both / sec / nb:.3f}",
                              f"{both / g['steps'] / nb * 1e6:.1f}", ratio, "", comp]))
        lines.append(fmt_row([idx + "a", "  same window: forward no_grad / forward building the graph", "",
                              f"{fwd / sec / nb:.3f} / {graph / sec / nb:.3f}", f"{fwd / g['steps'] / nb * 1e6:.1f} / "
                              f"{graph / g['steps'] / nb * 1e6:.1f}", "", "", ""]))
        lines.append(fmt_row([idx + "b", "  ratio fwd+bwd / fwd (no_grad); fwd+bwd / fwd (graph), median of paired "
                              "ratios", "", f"**{r_fwd:.2f}**; {r_graph:.2f}", "", "", "", ""]))
        m = g["mem"]
        lines.append(fmt_row([idx + "m", "  peak memory of one fwd+bwd window", f"{m['ms']:g} ms x {nb}",
                              f"RSS +{m['rss_mib']:.1f} MiB; autograd saved tensors {m['saved_mib']:.1f} MiB "
                              f"({m['saved_mib'] / (m['ms'] / 1000.0):.1f} MiB per simulated s)", "", "", "", ""]))

    speed_row("1", "TVB native sim.run (numba, after warm-up), repeats at the start and at the end pooled: the "
                   "reference of every ratio", "tvb")
    speed_row("1s", "  TVB at the start only", "tvb_start")
    speed_row("1e", "  TVB at the end only", "tvb_end")
    for key, label in (("first_warm", "kernel cache warm"), ("first_cold", "empty kernel cache: numba compiles")):
        if key in results:
            r = results[key]
            tvb_s = tvb_per_s * r["ms"] / 1000.0 if tvb_per_s else None
            lines.append(fmt_row(["F" + ("w" if key == "first_warm" else "c"),
                                  f"from_tvb(sim) with no options, first call in a fresh process ({label}; path "
                                  f"{r['path']}): construction + {r['ms'] / 1000:g} s run, vs TVB's steady run of it",
                                  f"{r['ms']:g} ms x 1", f"**{r['wall_s']:.2f} s** (TVB {tvb_s:.2f} s)" if tvb_s
                                  else f"{r['wall_s']:.2f} s", "", f"{tvb_s / r['wall_s']:.2f}" if tvb_s else "",
                                  "", ""]))
        elif key in errors:
            lines.append(fmt_row(["F", label, "", "FAILED", errors[key], "", "", ""]))
    ahead = " (next chunk's noise drawn on a second thread)"
    speed_row("K1", "default path (numba block kernel) forward, batch 1, float64 (no_grad)" + ahead, "k_f64")
    speed_row("K1s", "  same, one core (TVB_TORCHFIT_DRAW_AHEAD=0)", "k_f64_1c")
    speed_row("K2", "default path forward, batch 1, float32 (no_grad)" + ahead, "k_f32")
    speed_row("K2s", "  same, one core (TVB_TORCHFIT_DRAW_AHEAD=0)", "k_f32_1c")
    speed_row("K3", "default path forward, batch 8, float32, 1 torch thread, per sample" + ahead, "k_b8")
    speed_row("K4", "default path forward, batch 64, float32, 1 torch thread, per sample" + ahead, "k_b64")
    speed_row("K4s", "  same, one core (TVB_TORCHFIT_DRAW_AHEAD=0)", "k_b64_1c")
    grad_rows("K5", "default path fwd+bwd (kernel adjoint, checkpointed groups), batch 1, float64, "
                    "d mean(S_e(end)) / dG", "k_grad")
    grad_rows("K7", "default path fwd+bwd, batch 8, float32, 1 thread (the fit's configuration), per sample",
              "k_grad_b8")
    if "k_grad_f32" in results or "k_grad_f32" in errors:
        grad_rows("K8", "default path fwd+bwd, batch 1, float32, 1 thread (like-for-like with tvboptim's T3)",
                  "k_grad_f32")
    for key, label in (("fit_steps_kernel", "default path (kernel)"), ("fit_steps_compile", "compile=True")):
        if key in results:
            r = results[key]
            lines.append(fmt_row(["S" + ("k" if "kernel" in key else "c"),
                                  f"the demo's fit (dt 1 ms, batch 8, 20-TR windows, float32, 1 thread), {label}: "
                                  f"seconds per optimiser step = (wall({r['steps'][1]} steps) - wall({r['steps'][0]}))"
                                  f" / {r['steps'][1] - r['steps'][0]}, fresh processes, shortest of each length's "
                                  f"runs", "14400 steps x 8 per step",
                                  f"**{r['per_step']:.2f} s** per step (walls {r['walls'][0]:.1f} / "
                                  f"{r['walls'][1]:.1f} s; all: " + "; ".join(
                                      f"{n} steps " + ", ".join(f"{w:.1f}" for w in ws)
                                      for n, ws in r["all_walls"].items()) + ")", "", "", "", ""]))
        elif key in errors:
            lines.append(fmt_row(["S", label, "", "FAILED", errors[key], "", "", ""]))
    speed_row("2", "torch eager forward, batch 1, float64 (no_grad)", "f64")
    speed_row("2t", "  same as 2 with torch.set_num_threads(1)", "f64_1t")
    speed_row("3", "torch eager forward, batch 1, float32 (no_grad)", "f32")
    speed_row("4", "torch eager forward, batch 64, float32 (no_grad), per sample", "b64")
    grad_rows("5", "torch eager fwd+bwd, batch 1, float64, d mean(S_e(end)) / dG", "grad")
    if not args.no_compile:
        speed_row("C1", "compile=True forward, batch 1, float64 (no_grad)", "c_f64")
        speed_row("C1t", "  same as C1 with torch.set_num_threads(1)", "c_f64_1t")
        speed_row("C2", "compile=True forward, batch 1, float32 (no_grad)", "c_f32")
        speed_row("C2t", "  same as C2 with torch.set_num_threads(1)", "c_f32_1t")
        speed_row("C3", "compile=True forward, batch 64, float32 (no_grad), per sample", "c_b64")
        speed_row("C3t", "  same as C3 with torch.set_num_threads(1)", "c_b64_1t")
        grad_rows("C5", "compile=True fwd+bwd, batch 1, float64, checkpointed blocks (default)", "c_grad")
        grad_rows("C7", "compile=True fwd+bwd, batch 8, float32, checkpointed, torch.set_num_threads(1) (the "
                         "configuration of tvb_torchfit.fit), per sample", "c_grad_b8")
        if args.all:
            grad_rows("C6", "compile=True, checkpoint=False fwd+bwd, batch 1, float64 (autograd through the "
                            "compiled blocks)", "c_grad_nock")
        if "c_grad_f32_1t" in results or "c_grad_f32_1t" in errors:
            grad_rows("C5f", "compile=True fwd+bwd, batch 1, float32, checkpointed, torch.set_num_threads(1) "
                             "(compared with tvboptim in R3)", "c_grad_f32_1t")
    for i, trs in enumerate((100, 1200)):
        key = f"fit_{trs}"
        label = (f"peak RSS of tvb_torchfit.fit, session {trs} TRs (fc_window_trs = data_trs = {trs}), "
                 f"window {fit_window} TR, batch {fit_batch}, float32, compile, 2 steps")
        if key not in results:
            if not args.no_fit_memory:
                lines.append(fmt_row([f"M{i + 1}", label, "", "FAILED" if key in errors else "not run",
                                      errors.get(key, ""), "", "", ""]))
            continue
        r = results[key]
        lines.append(fmt_row([f"M{i + 1}", label, f"{fit_window * 720:g} ms x {fit_batch} per step",
                              f"**{r['rss_peak_mib']:.0f} MiB** peak (after set-up {r['rss_setup_mib']:.0f} MiB)",
                              f"{r['fit_s'] / r['n_steps']:.1f} s per fit step", "", "", ""]))
    if "demo" in results or "demo" in errors:
        d = results.get("demo")
        lines.append(fmt_row(["D", "`tvb-torchfit demo` end to end (subprocess)", "",
                              f"**{d['wall_s']:.0f} s**" if d else "FAILED", errors.get("demo", ""), "", "", ""]))
    tvo_notes: List[str] = []
    if tvo_python is None:
        lines.append(fmt_row(["7", "tvboptim / jax", "", optional_competitors() + " (no --tvboptim-python, "
                              f"$TVBOPTIM_PYTHON or {TVBOPTIM_DEFAULT_PYTHON})", "", "", "", ""]))
    else:
        tvo_notes = tvboptim_rows(lines, results, errors, tvo_modes, tvb_per_s, tvb_cpu_per_s, tvo_python)
    lines.append("")
    if "grad" in results:
        lines.append(f"Memory: RSS measured as {results['grad']['mem']['method']}; saved-tensor bytes counted "
                     f"with torch.autograd.graph.saved_tensors_hooks (unique storages). Compile column of grad "
                     f"rows: forward graph + graph-mode (backward) graphs, seconds.")
    if any(k.startswith("fit_") for k in results):
        lines.append("Fit memory (rows M): peak RSS (/proc/self/status VmHWM) of a fresh subprocess per case (whole "
                     "process: Python, TVB, torch and its CPU allocator; tracemalloc does not see torch tensors); "
                     "warm-up shortened to 2 TRs in both cases (the default, 20 s + fc_window_trs TRs, would "
                     "simulate 884 s of brain time for 1200 TRs): the session length then enters only the FC "
                     "settings and the detached BOLD buffer (at most fc_window_trs x batch x N floats).")
    lines += tvo_notes
    lines.append(f"Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_start)}, at end "
                 f"{'/'.join(f'{x:.2f}' for x in load_end)} on {machine_cores()} usable cores: other processes "
                 f"compete for the CPU if the 1-min figure exceeds ~1 (this benchmark itself).")
    lines.append(f"Total benchmark wall time: {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(lines)
    print()
    print(text)

    if args.profile:
        print("\n--- profile of the batch-1 float64 forward "
              f"({min(sim_ms, 250.0):g} ms simulated, no_grad) ---")
        print(profile_forward(sim, min(sim_ms, 250.0)))

    if args.write:
        path = os.path.join(HERE, "results.md")
        with open(path, "w") as f:
            f.write(text + "\n")
        print(f"\nwritten: {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
