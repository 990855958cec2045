#!/usr/bin/env python
"""Where one block of the compiled forward spends its time (the batch-1 profile in README "Speed").

    python benchmarks/profile_block.py                 # float32, batch 1: per-block timings, min / median of 9
    python benchmarks/profile_block.py --dtype float64 --batch 8
    python benchmarks/profile_block.py --backward --batch 8     # checkpointed backward: the chunk calls' share
    python benchmarks/profile_block.py --kernel --batch 64      # the default path: the numba kernel's split
    python benchmarks/profile_block.py --loop 40 &     # a steady run() loop for `perf` to attach to:
    perf record -F 4000 -p <pid> -o perf.data -- sleep 12 && perf report -i perf.data --no-children --sort dso,sym

Same set-up as bench_speed.py (ReducedWongWangExcInh, connectivity_76, 3 mm/ms, HeunStochastic dt 0.1 ms,
Bold 720 ms), ``compile=True``, one torch thread. Timed in isolation, each many times: the compiled block call
alone (``twin.paths.free.compiled_block.compiled``), the noise draw, ``RingPath.forward_block`` (the call with
its detaching and no_grad), ``run()`` per block, and the Bold monitor per block; for the backward, the calls of
the functions ``CheckpointedPath.vjp_fn`` makes. Only public seams of the twin are used (``paths``,
``history_ring``, ``block_params()``): this is a profiling aid, not a test.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_speed  # noqa: E402  (same set-up)

from tvb_torchfit.simulator.adapter import read_simulator  # noqa: E402
from tvb_torchfit.simulator.twin import TorchSimulator  # noqa: E402


def timed(fn, n: int, repeats: int = 9):
    """(min, median) microseconds per call over ``repeats`` rounds of ``n`` calls."""
    per = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t) / n * 1e6)
    return min(per), statistics.median(per)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--loop", type=float, default=None, help="run() for this many seconds instead (for perf)")
    ap.add_argument("--backward", action="store_true",
                    help="time the checkpointed backward of d mean(S_e(end))/dG over 5000 steps instead")
    ap.add_argument("--kernel", action="store_true",
                    help="the default path instead: the numba kernel's forward with and without its edges, the "
                         "noise draws and run(), per sample-step")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.kernel:
        return kernel_split(args.batch, getattr(torch, args.dtype))
    twin = TorchSimulator(read_simulator(bench_speed.build_tvb()), noise="torch", batch=args.batch,
                          dtype=getattr(torch, args.dtype), compile=True)
    if args.backward:
        return backward_split(twin)
    K = twin.block
    with torch.no_grad():
        twin.run(n_steps=K * 200)                                   # compiles, fills the ring
        if args.loop is not None:
            print(f"pid {os.getpid()}: steady loop for {args.loop:g} s", flush=True)
            t = time.time()
            while time.time() - t < args.loop:
                twin.run(n_steps=K * 500)
            return 0
        ring, X, path = twin.history_ring, twin.state, twin.paths.free
        normal = twin.noise.draw(K)
        params = twin.block_params()
        packed, scale = params.packed, params.noise_scale

        def call():
            ring.make_room(K)
            path.compiled_block.compiled(ring.flat, ring.offset_tensor, X, normal, scale, packed)
            ring.advance(K)

        def forward_block():
            ring.make_room(K)
            path.forward_block(ring, X, normal, scale, packed, K)

        rows = [("compiled block call", timed(call, 300)),
                ("noise draw", timed(lambda: twin.noise.draw(K), 300)),
                ("forward_block (call + detach + no_grad)", timed(forward_block, 300)),
                ("run() per block (500 blocks per run)",
                 tuple(x / 500 for x in timed(lambda: twin.run(n_steps=K * 500), 1, 7)))]
        states = torch.rand(K * 60, *X.shape, dtype=X.dtype) * 0.1   # monitor fed on its own, last
        bold = twin.monitors[0]
        step = [twin.current_step]

        def feed():
            bold.consume(states, step[0] + 1)
            step[0] += states.shape[0]
        lo, med = timed(feed, 20)
        rows.append(("Bold monitor per block", (lo / 60, med / 60)))
    print(f"{args.dtype}, batch {args.batch}, block of {K} steps: microseconds per block, min / median")
    for name, (lo, med) in rows:
        print(f"  {name:<45} {lo:8.1f} / {med:8.1f}")
    return 0


def kernel_split(batch: int, dtype: torch.dtype) -> int:
    """The default path (``kernels.BlockKernel``): one kernel call of T steps with the connectome's edge plan and
    with an empty one (the stage alone; the difference is the coupling gather), the noise draws of those steps,
    and ``run()`` (kernel, draws, monitors); microseconds per sample-step, min / median of 9."""
    from tvb_torchfit.simulator import kernels
    twin = TorchSimulator(read_simulator(bench_speed.build_tvb()), noise="torch", batch=batch, dtype=dtype)
    path, kernel = twin.paths.free, twin.kernel
    T = 2000 if batch == 1 else max(100, 25600 // batch)
    per = T * batch                                                  # timed() gives microseconds per call
    with torch.no_grad():
        twin.run(n_steps=T)                                          # loads or compiles the kernel
        window, params = path.history.window(), twin.block_params()
        L, N, B = window.shape
        V = twin.state.shape[0]
        prm = kernel.params(params.packed, N, B, params.varying)
        scale = kernel.scale(params.noise_scale, V, N, B)
        normal = path.noise.draw_blocks(T, path.block)
        full = timed(lambda: kernel.forward(window, twin.state, normal, scale, prm, T), 1)
        plan = kernel.plan
        kernel.plan = kernels.edge_plan(np.zeros((N, N)), np.zeros((N, N), dtype=int), dtype)
        stage = timed(lambda: kernel.forward(window, twin.state, normal, scale, prm, T), 1)
        kernel.plan = plan
        draws = timed(lambda: path.noise.draw_blocks(T, path.block), 1)
        run = timed(lambda: twin.run(n_steps=T), 1)
    print(f"{dtype}, batch {batch}, {T} steps per call: microseconds per sample-step, min / median of 9")
    for name, (lo, med) in (("kernel forward", full), ("  stage alone (no edges)", stage),
                            ("noise draws", draws), ("run() (kernel, draws, monitors)", run)):
        print(f"  {name:<45} {lo / per:8.2f} / {med / per:8.2f}")
    print(f"  {'  gather (kernel - stage, medians)':<45} {'':8}   {(full[1] - stage[1]) / per:8.2f}")
    return 0


def backward_split(twin, n_steps: int = 5000) -> int:
    """The checkpointed backward's time, and the part of it spent inside the compiled chunk calls."""
    spent = {"s": 0.0}
    path = twin.paths.graph                          # the CheckpointedPath (compile=True checkpoints)
    make = path.vjp_fn

    def timed_vjp(*a, **k):
        fn = make(*a, **k)

        def call(*args):
            t = time.perf_counter()
            out = fn(*args)
            spent["s"] += time.perf_counter() - t
            return out
        return call
    path.vjp_fn = timed_vjp                          # the backward asks the path for its chunk functions
    G = torch.tensor([0.5], dtype=twin.dtype, requires_grad=True)

    def once():
        twin.detach_()
        twin.set_param("G", G)
        twin.run(n_steps=n_steps)
        loss = twin.state[0].mean()
        spent["s"] = 0.0
        t = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t, spent["s"]
    once()                                                           # compiles
    runs = [once() for _ in range(5)]
    with torch.no_grad():
        fwd = min(timed(lambda: twin.run(n_steps=n_steps), 1, 5))
    print(f"{twin.dtype}, batch {twin.batch}: microseconds per step (min of 5)")
    print(f"  forward (no_grad)                {fwd / n_steps:8.1f}")
    total, inside = min(runs)
    print(f"  backward                         {total / n_steps * 1e6:8.1f}")
    print(f"    inside the compiled chunk calls {inside / n_steps * 1e6:7.1f}  ({inside / total:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
