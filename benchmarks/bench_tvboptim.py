#!/usr/bin/env python
"""tvboptim (the JAX peer) on the set-up of bench_speed.py, in its own virtual environment.

Run with the python of a venv that has tvboptim (and so jax) installed, never the project's own environment:

    python -m venv /work/venvs/tvboptim && /work/venvs/tvboptim/bin/pip install tvboptim
    OMP_NUM_THREADS=1 /work/venvs/tvboptim/bin/python benchmarks/bench_tvboptim.py --setup SETUP.npz

``benchmarks/bench_speed.py`` writes SETUP.npz from the configured TVB simulator (connectivity weights, TVB's
integer delays ``idelays`` at dt, the model's parameters, Linear coupling a/b, Additive nsig, state bounds and a
short deterministic TVB reference trajectory) and runs this script in a subprocess (``--tvboptim-python``).
The last line of stdout is ONE JSON object with the figures, versions and compile times.

Set-up in tvboptim 0.4 (tvboptim.experimental.network_dynamics): ``WongWangExcInh`` with TVB's parameter values,
``DelayedLinearCoupling(incoming_states="S_e", G=a, b=b)`` into the model's ``delayed`` input (the model
multiplies it by G*J_N, as TVB's ReducedWongWangExcInh does), a delay graph of (weights, idelays * dt) (see
``--configs``; tvboptim reads the delays back as rint(delays / dt) = idelays, checked), ``AdditiveNoise(sigma=sqrt(2 nsig))`` on both state variables
(TVB's Additive: g = sqrt(2 nsig), dW = sqrt(dt) N(0, 1)), ``BoundedSolver(Heun(), low=0, high=1)``: TVB's
state bounds, but clipped only at the end of each step (TVB's HeunStochastic also clips the predictor); dt from
the set-up (0.1 ms). float32 (JAX's default). The coupling is computed once per step and held over both Heun
stages, as TVB does. The history starts constant at the initial state (TVB starts from random initial
history; the timing does not depend on it).

Measurements (each: jax.jit, the one-off lower + compile timed separately, one untimed warm-up call, then the
median of ``--repeats`` timed calls, each ended by block_until_ready; process CPU time alongside):

* forward, batch 1: ``solve_fn(config).ys`` over ``--fwd-ms`` (the S_e/S_i trajectory at every step; no BOLD:
  TVB and the torch twin also run the Bold monitor's per-step accumulation);
* forward, batch ``--batch``: jax.vmap of the same over ``--batch`` noise keys (independent realisations);
* value and gradient w.r.t. the model's global coupling G of a loss over a ``--grad-ms`` window, interleaved
  with the forward (loss value only, same jit) on the same window: "fc" = mean squared difference between the
  correlation matrix of S_e over the window and a fixed target matrix; "end" = mean of S_e at the end of the
  window (the loss of bench_speed.py's grad rows). "grad_fd" in the JSON is a central difference (h = 0.01) of
  the same float32 loss, a rough check only: over longer windows float32 AD and the difference part (up to ~25%
  for "fc" over 200 ms, seen here), while with jax_enable_x64 the two agree to ~1e-8.

* value and gradient, batch ``--grad-batch`` (part grad_batch): the "end" loss averaged over that many noise
  realisations (jax.vmap over noise keys inside the loss), interleaved with its forward.

Each part is measured for each tvboptim configuration in ``--configs``: "dense-roll" is tvboptim's default
(DenseDelayGraph, buffer_strategy="roll": the whole history buffer shifts every step), "sparse-circular" the
fastest found here (SparseDelayGraph over the edges with weight > 0, buffer_strategy="circular": a write pointer).
Both are tvboptim's public API; neither changes the model, the delays or the integration.

Threads: with ``--threads 1`` (the default) the process is pinned to one core (os.sched_setaffinity, before jax
is imported: XLA's CPU client sizes its thread pool from the usable cores; in jax 0.10 the XLA_FLAGS
--xla_cpu_multi_thread_eigen=false / intra_op_parallelism_threads=1 do not stop it from using several, measured
with process CPU time > wall time) and XLA_FLAGS=--xla_cpu_multi_thread_eigen=false is set; ``--threads
default`` leaves both alone.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", required=True, help="npz written by bench_speed.py (weights, idelays, params, ...)")
    ap.add_argument("--fwd-ms", type=float, default=1000.0, help="window of the batch-1 forward (ms)")
    ap.add_argument("--batch-ms", type=float, default=250.0, help="window of the batched forward (ms)")
    ap.add_argument("--batch", type=int, default=64, help="batch of the vmapped forward")
    ap.add_argument("--grad-ms", type=float, default=500.0, help="window of the value-and-gradient (ms)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    ap.add_argument("--threads", choices=("1", "default"), default="1", help="XLA CPU threads")
    ap.add_argument("--configs", default="sparse-circular,dense-roll",
                    help="comma-separated GRAPH-BUFFER configurations, GRAPH in dense|sparse (DenseDelayGraph or "
                         "SparseDelayGraph over the edges with weight > 0), BUFFER in roll|circular (the "
                         "DelayedCoupling buffer_strategy); default: sparse-circular,dense-roll")
    ap.add_argument("--grad-batch", type=int, default=8, help="batch of the vmapped value-and-gradient (part "
                    "grad_batch; 0: skip it)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: fwd,batch,grad,grad_batch,check")
    return ap.parse_args(argv)


ARGS = parse()
CONFIGS = [tuple(c.strip().split("-")) for c in ARGS.configs.split(",") if c.strip()]
for _g, _b in CONFIGS:
    if _g not in ("dense", "sparse") or _b not in ("roll", "circular"):
        raise SystemExit(f"unknown configuration {_g}-{_b}: expected dense|sparse-roll|circular")
AFFINITY = None
if ARGS.threads == "1":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_ONE_THREAD).strip()
    if hasattr(os, "sched_setaffinity"):
        AFFINITY = [min(os.sched_getaffinity(0))]
        os.sched_setaffinity(0, AFFINITY)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import importlib.metadata  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

warnings.filterwarnings("ignore")

from tvboptim.experimental.network_dynamics import DenseDelayGraph, Network, SparseDelayGraph, prepare  # noqa: E402
from tvboptim.experimental.network_dynamics.coupling import DelayedLinearCoupling  # noqa: E402
from tvboptim.experimental.network_dynamics.dynamics.tvb import WongWangExcInh  # noqa: E402
from tvboptim.experimental.network_dynamics.noise import AdditiveNoise  # noqa: E402
from tvboptim.experimental.network_dynamics.solvers import BoundedSolver, Heun  # noqa: E402


def load_setup(path):
    z = np.load(path, allow_pickle=False)
    names = [str(n) for n in z["param_names"]]
    return dict(
        weights=np.asarray(z["weights"], dtype=np.float64),
        idelays=np.asarray(z["idelays"], dtype=np.int64),
        dt=float(z["dt"]),
        params={n: float(v) for n, v in zip(names, z["param_values"])},
        coupling_a=float(z["coupling_a"]), coupling_b=float(z["coupling_b"]),
        nsig=float(z["nsig"]), bounds_lo=np.asarray(z["bounds_lo"], dtype=np.float64),
        bounds_hi=np.asarray(z["bounds_hi"], dtype=np.float64),
        initial=np.asarray(z["initial"], dtype=np.float64),
        ref=np.asarray(z["ref"]) if "ref" in z.files else None,
        seed=int(z["seed"]) if "seed" in z.files else 42,
    )


def build(setup, cfg, ms, noise=True):
    """(solve_fn, config, n_delay_mismatch) of tvboptim for ``ms`` of simulated time; ``cfg`` = (graph, buffer)."""
    graph_kind, buffer = cfg
    dt = setup["dt"]
    delays = setup["idelays"] * dt
    if graph_kind == "sparse":
        graph = SparseDelayGraph(setup["weights"], delays, threshold=0.0)
    else:
        graph = DenseDelayGraph(setup["weights"], delays)
    # the integer delays tvboptim will use (its precompute(): rint(delays / dt) in float32)
    steps = np.asarray(jnp.rint(jnp.asarray(delays) / dt).astype(jnp.int32))
    mask = setup["weights"] != 0
    mismatch = int(np.sum(steps[mask] != setup["idelays"][mask]))
    p = setup["params"]
    dyn = WongWangExcInh(INITIAL_STATE=tuple(float(x) for x in setup["initial"]),
                         **{k: v for k, v in p.items() if k in WongWangExcInh.DEFAULT_PARAMS})
    coupling = DelayedLinearCoupling(incoming_states="S_e", G=setup["coupling_a"], b=setup["coupling_b"],
                                     buffer_strategy=buffer)
    nz = AdditiveNoise(sigma=float(np.sqrt(2.0 * setup["nsig"])), key=jax.random.key(setup["seed"])) \
        if noise else None
    net = Network(dyn, {"delayed": coupling}, graph, noise=nz)
    solver = BoundedSolver(Heun(), low=jnp.asarray(setup["bounds_lo"]), high=jnp.asarray(setup["bounds_hi"]))
    n_steps = int(round(ms / dt))
    fn, config = prepare(net, solver, t0=0.0, t1=n_steps * dt, dt=dt)
    return fn, config, mismatch


def with_params(config, G=None, key=None):
    cfg = jax.tree.map(lambda x: x, config)     # new containers, shared leaves (as tvboptim's _snapshot)
    if G is not None:
        cfg.dynamics.G = G
    if key is not None:
        cfg.noise.key = key
    return cfg


def timed(fn, repeats):
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def compile_jit(f, *args):
    """jax.jit(f) lowered and compiled for ``args``: (compiled, seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def summary(wall, cpu, n_steps, batch=1):
    med = statistics.median(wall)
    return dict(wall_s=wall, cpu_s=cpu, median_s=med, steps=n_steps, batch=batch,
                us_per_step=med / n_steps * 1e6, us_per_sample_step=med / (n_steps * batch) * 1e6,
                cpu_over_wall=statistics.median(c / w for c, w in zip(cpu, wall)))


def bench_forward(setup, cfg, ms, batch):
    fn, config, mismatch = build(setup, cfg, ms)
    G0 = jnp.float32(setup["params"]["G"])
    key = jax.random.key(setup["seed"])
    if batch == 1:
        f = lambda G, k: fn(with_params(config, G, k)).ys
        compiled, t_comp = compile_jit(f, G0, key)
        args = (G0, key)
    else:
        f = jax.vmap(lambda G, k: fn(with_params(config, G, k)).ys, in_axes=(None, 0))
        keys = jax.random.split(key, batch)
        compiled, t_comp = compile_jit(f, G0, keys)
        args = (G0, keys)
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))       # warm-up, untimed in the figures
    t_first = time.perf_counter() - t0
    assert bool(jnp.all(jnp.isfinite(out))), "non-finite trajectory"
    n_steps = out.shape[-3]
    wall, cpu = timed(lambda: compiled(*args), ARGS.repeats)
    r = summary(wall, cpu, n_steps, batch)
    r.update(ms=ms, compile_s=t_comp, first_call_s=t_first, delay_mismatch=mismatch, dtype=str(out.dtype),
             out_shape=list(out.shape), mean_S_e=float(jnp.mean(out[..., 0, :])))
    return r


def bench_grad(setup, cfg, ms):
    fn, config, mismatch = build(setup, cfg, ms)
    N = setup["weights"].shape[0]
    rng = np.random.RandomState(0)
    target = jnp.asarray(np.corrcoef(rng.randn(N, 300)), dtype=jnp.float32)
    key = jax.random.key(setup["seed"])
    G0 = jnp.float32(setup["params"]["G"])

    def traj(G):
        return fn(with_params(config, G, key)).ys

    def loss_fc(G):
        x = traj(G)[:, 0, :]                                   # S_e (steps, N)
        x = x - jnp.mean(x, axis=0)
        x = x / jnp.sqrt(jnp.sum(x * x, axis=0) + 1e-30)
        fc = x.T @ x
        return jnp.mean((fc - target) ** 2)

    def loss_end(G):
        return jnp.mean(traj(G)[-1, 0, :])

    out = {}
    for name, loss in (("fc", loss_fc), ("end", loss_end)):
        fwd, t_fwd = compile_jit(loss, G0)
        vg, t_vg = compile_jit(jax.value_and_grad(loss), G0)
        v0 = float(jax.block_until_ready(fwd(G0)))
        v1, g1 = jax.block_until_ready(vg(G0))
        assert np.isfinite(float(g1)), "non-finite gradient"
        # finite-difference check of the gradient (float32: loose; central difference on G)
        h = 1e-2
        fd = (float(fwd(G0 + h)) - float(fwd(G0 - h))) / (2 * h)
        f_w, f_c, b_w, b_c = interleaved(fwd, vg, G0)
        n_steps = int(round(ms / setup["dt"]))
        out[name] = dict(
            ms=ms, steps=n_steps, compile_fwd_s=t_fwd, compile_vg_s=t_vg, loss=v0, loss_vg=float(v1),
            grad=float(g1), grad_fd=fd, fwd=summary(f_w, f_c, n_steps), vg=summary(b_w, b_c, n_steps),
            ratio_vg_fwd=statistics.median(b / f for b, f in zip(b_w, f_w)), delay_mismatch=mismatch)
    return out


def interleaved(fwd, vg, G0):
    """Wall and CPU times of ``fwd(G0)`` and ``vg(G0)``, one call of each per repeat, interleaved."""
    f_w, f_c, b_w, b_c = [], [], [], []
    for _ in range(ARGS.repeats):
        w, c = timed(lambda: fwd(G0), 1)
        f_w += w
        f_c += c
        w, c = timed(lambda: vg(G0), 1)
        b_w += w
        b_c += c
    return f_w, f_c, b_w, b_c


def bench_grad_batch(setup, cfg, ms, batch):
    """value_and_grad w.r.t. G of the mean S_e at the window's end over ``batch`` noise realisations (jax.vmap over
    noise keys inside the loss; the loss of bench_speed.py's batched grad rows), interleaved with the forward."""
    fn, config, mismatch = build(setup, cfg, ms)
    keys = jax.random.split(jax.random.key(setup["seed"]), batch)
    G0 = jnp.float32(setup["params"]["G"])

    def loss_end(G):
        ys = jax.vmap(lambda k: fn(with_params(config, G, k)).ys)(keys)     # (batch, steps, 2, N)
        return jnp.mean(ys[:, -1, 0, :])

    fwd, t_fwd = compile_jit(loss_end, G0)
    vg, t_vg = compile_jit(jax.value_and_grad(loss_end), G0)
    jax.block_until_ready(fwd(G0))
    _, g1 = jax.block_until_ready(vg(G0))
    assert np.isfinite(float(g1)), "non-finite gradient"
    f_w, f_c, b_w, b_c = interleaved(fwd, vg, G0)
    n_steps = int(round(ms / setup["dt"]))
    return dict(ms=ms, steps=n_steps, batch=batch, compile_fwd_s=t_fwd, compile_vg_s=t_vg, grad=float(g1),
                fwd=summary(f_w, f_c, n_steps, batch), vg=summary(b_w, b_c, n_steps, batch),
                ratio_vg_fwd=statistics.median(b / f for b, f in zip(b_w, f_w)), delay_mismatch=mismatch)


def check_against_tvb(setup, cfg):
    """Deterministic (no noise) tvboptim from the same constant initial history as the TVB reference run that
    bench_speed.py stored: max |difference| of S_e and S_i over the reference steps."""
    ref = setup["ref"]                                         # (steps, 2, N): TVB Raw monitor, step 1..n
    n = ref.shape[0]
    fn, config, mismatch = build(setup, cfg, n * setup["dt"], noise=False)
    ys = np.asarray(jax.jit(lambda c: fn(c).ys)(config))
    d = np.abs(ys[:n].astype(np.float64) - ref)
    return dict(steps=n, ms=n * setup["dt"], max_abs_diff=float(d.max()), max_abs_diff_S_e=float(d[:, 0].max()),
                max_abs_ref=float(np.abs(ref).max()), final_mean_S_e_tvb=float(ref[-1, 0].mean()),
                final_mean_S_e_tvboptim=float(ys[n - 1, 0].mean()), delay_mismatch=mismatch)


def versions():
    def ver(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
    return dict(python=platform.python_version(), tvboptim=ver("tvboptim"), jax=ver("jax"), jaxlib=ver("jaxlib"),
                numpy=np.__version__, devices=[str(d) for d in jax.devices()],
                x64=bool(jax.config.read("jax_enable_x64")))


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def main():
    setup = load_setup(ARGS.setup)
    skip = set(s for s in ARGS.skip.split(",") if s)
    res = dict(versions=versions(), threads=ARGS.threads, affinity=AFFINITY,
               xla_flags=os.environ.get("XLA_FLAGS", ""), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
               dt=setup["dt"], n_nodes=int(setup["weights"].shape[0]), max_idelay=int(setup["idelays"].max()),
               n_edges=int(np.count_nonzero(setup["weights"])), repeats=ARGS.repeats,
               windows_ms=dict(fwd=ARGS.fwd_ms, batch=ARGS.batch_ms, grad=ARGS.grad_ms), batch=ARGS.batch,
               configs={}, errors={})
    t_start = time.perf_counter()
    for cfg in CONFIGS:
        name = "-".join(cfg)
        out = res["configs"][name] = {}
        parts = [("check", lambda: check_against_tvb(setup, cfg) if setup["ref"] is not None else None),
                 ("fwd", lambda: bench_forward(setup, cfg, ARGS.fwd_ms, 1)),
                 ("batch", lambda: bench_forward(setup, cfg, ARGS.batch_ms, ARGS.batch)),
                 ("grad", lambda: bench_grad(setup, cfg, ARGS.grad_ms))]
        if ARGS.grad_batch > 0:
            parts.append(("grad_batch", lambda: bench_grad_batch(setup, cfg, ARGS.grad_ms, ARGS.grad_batch)))
        for part, fn in parts:
            if part in skip:
                continue
            print(f"  tvboptim {name}: {part} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                out[part] = fn()
            except Exception as exc:          # report and go on
                res["errors"][f"{name}/{part}"] = \
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(f"    ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    res["total_s"] = time.perf_counter() - t_start
    res["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
