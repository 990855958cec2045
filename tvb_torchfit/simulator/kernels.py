"""The block kernel: TVB's Heun / Euler steps with the delayed coupling, the noise scaling and the history write in
one numba loop nest over steps and (nodes, batch), and its hand-written discrete adjoint.

For step s of a run of T steps (state X_{s-1} -> X_s; x(m) the coupling variable, state variable 0, of step m,
and for m < 0 the history handed in), exactly the twin's ``blocks.integrate_block`` with TVB's scheme:

    gx_k(s) = sum_j W[k, j] x_j(s - 1 - idelays[k, j])            (``coupling.DelayedLinearCoupling``)
    c       = a * gx + b                                            (``coupling.Linear.post``)
    z       = (normal * sqrt(dt)) * sqrt(2 nsig)                    (``noise.scaled_increment``)
    Heun:   I = clip(X + dt f(X, c) + z);  X' = clip(X + (f(X, c) + f(I, c)) * dt / 2 + z)    (``integrators``)
    Euler:  X' = clip(X + f(X, c) * dt + z)

``forward`` writes the states, each step's coupling sum gx and the coupling variable into a node-major buffer
(the history window, then the run's steps). ``adjoint`` runs the same steps backwards, last first: the
gradient of X_s (from the monitors, from step s + 1, and from the coupling of later steps, *pulled* over
each node's out-edges from the coupling-sum gradients of steps s + 1 + d, already known), then the
vector-Jacobian product of the step — the predictor recomputed from X_{s-1} and gx(s), clipping included
(torch.clamp's convention: gradient 1 where lo <= v <= hi) — giving the gradients of X_{s-1}, gx(s), the
parameters and the noise scale; finally the gradients of the history rows handed in.

The model's equations are not copied here: the kernel's source is generated from the port's own
``equations`` and ``equations_vjp`` (``models/``) and the Wong-Wang transfer function of
``models/transfer.py`` (``wong_wang_H_scalar``, ``wong_wang_H_partials``), written into one module per content
hash under the kernel cache directory and compiled by numba with ``cache=True`` (a later process loads the
machine code; an edited equation gives another hash, never a stale kernel). ``TVB_TORCHFIT_CACHE`` sets the
directory (default ``~/.cache/tvb_torchfit``). One module per parameter layout (which parameters vary over
nodes or batch, and for the adjoint which gradients are recorded): a fit compiles at most a few, once per
machine. Each step's stage is one loop over (node, batch) that LLVM vectorises (``kernel_source``).
"""
import ast
import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from .models import transfer
from .registry import COUPLING_PREFIX

_LOCK = threading.Lock()
_MODULES = {}


def available() -> bool:
    """Whether numba can be imported (the kernel's only requirement besides a CPU device)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def supports(model, coupling, device: torch.device, exact: bool) -> bool:
    """Whether the kernel applies: numba present, CPU tensors, the default (not TVB-exact) mode, Linear coupling
    (``post`` c = a gx + b) and a model port that exposes ``equations`` / ``equations_vjp``."""
    return (device.type == "cpu" and not exact and getattr(coupling, "parameter_names", None) == ("a", "b")
            and hasattr(model, "equations") and hasattr(model, "equations_vjp") and available())


def _function_source(fn) -> str:
    return textwrap.dedent(inspect.getsource(fn))


class _TypedLiterals(ast.NodeTransformer):
    """Every int or float literal outside a subscript becomes ``F(literal)``."""

    def visit_Subscript(self, node):
        node.value = self.visit(node.value)
        return node

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Call(ast.Name("F", ast.Load()), [node], []), node)
        return node


def _typed_source(fn, dtype: str) -> str:
    """The source of ``fn`` as compiled for ``dtype``: verbatim for float64 (Python's literals are float64); for
    float32 with its literals typed (``_TypedLiterals``), its docstring dropped."""
    source = _function_source(fn)
    if dtype == "float64":
        return source
    tree = ast.parse(source)
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body.pop(0)
    return ast.unparse(ast.fix_missing_locations(_TypedLiterals().visit(tree))) + "\n"


def _constants(dtype: str) -> Tuple[str, ...]:
    """The module constants of the kernel's exp and transfer function, typed for ``dtype``."""
    t = transfer
    f32 = dtype == "float32"
    values = dict(SERIES_BAND=t.SERIES_BAND, LOG2_E=t.LOG2_E, LN2_HI=t.LN2_HI_F32 if f32 else t.LN2_HI,
                  LN2_LO=t.LN2_LO_F32 if f32 else t.LN2_LO,
                  EXP_UNDERFLOW=t.EXP_UNDERFLOW_F32 if f32 else t.EXP_UNDERFLOW)
    lines = [f"{name} = F({value!r})" for name, value in values.items()]
    return tuple(lines) + ("EXP_C = (" + ", ".join(f"F({c!r})" for c in t.EXP_C) + ")",)


def _join(names) -> str:
    return ", ".join(names)


def kernel_source(model, scheme: str, varying: Optional[Tuple[bool, ...]] = None,
                  grad: Optional[Tuple[bool, ...]] = None, grad_scale: bool = True, dtype: str = "float64") -> str:
    """The Python source of a kernel module for a model port, a TVB integrator scheme name and a parameter layout:
    ``forward`` if ``grad`` is None, else ``adjoint``.

    ``varying`` (kernel order: the model's ``parameter_names``, then the coupling's a, b; default all) marks the
    parameters that vary over (node, batch): they are read per element from ``pv`` (one row each, in order), the
    others once per call from ``pu``. ``grad`` marks those whose gradient the adjoint accumulates (rows of
    ``g_prm``, in order); ``grad_scale`` whether it accumulates the noise scale's. What is not asked for is not
    computed (numba drops the dead parts of the inlined vector-Jacobian product). ``dtype`` ("float64" or
    "float32") is the arithmetic's: for float32 every numeric literal of the copied functions is wrapped in
    ``F = np.float32`` (``_typed_source``; numba would otherwise promote to float64) and the exp's constants are
    float32 ones, so the stage runs in float32 lanes (twice as many per vector).

    Per step, the stage (drifts, noise, clipping; in the adjoint their vector-Jacobian products) runs as one loop
    over the flattened (node, batch) index ``j`` of arrays laid out (..., N, B), with no call left in it once numba
    inlines the model's equations and the plain-math ``exp`` of ``models/transfer.py``: LLVM vectorises it over
    nodes at batch 1 as well as over the batch. The noisy and the deterministic loop are generated separately."""
    V, P = len(model.state_variables), len(model.parameter_names)
    K = P + 2
    varying = tuple(varying) if varying is not None else (True,) * K
    heun = scheme.startswith("Heun")
    x = [f"x{v}" for v in range(V)]
    rows = list(np.cumsum(varying) - 1)
    value = [f"pv[{rows[i]}, j]" if varying[i] else f"u{i}" for i in range(K)]
    prm = value[:P]
    eq = lambda state, c: f"equations({_join(state)}, {c}, {_join(prm)})"
    vjp = lambda state, c, g: f"equations_vjp({_join(state)}, {c}, {_join(prm)}, {_join(g)})"
    lines = []
    add = lines.append
    ind = " " * 16

    def uniform_loads() -> None:
        """The uniform parameters and the bounds as scalars, read once per call."""
        for i in range(K):
            if not varying[i]:
                add(f"    u{i} = pu[{i}]")
        for v in range(V):
            add(f"    lo{v} = lo[{v}]")
            add(f"    hi{v} = hi[{v}]")

    def stage(noisy: bool, state: str = "xs[s, {v}, j]", draw: str = "nf[s, {v}, j]") -> None:
        """The lines both the forward and the adjoint (recomputing) need for flat index j from its coupling sum
        gx: the coupling c, the state x, the noise increment z, the drift f and, for Heun, the clipped predictor i
        (ir before clipping) with its drift h; then the step's unclipped end nr. ``state`` / ``draw``: how the
        step's start state and normal draws are read."""
        add(f"{ind}c = {value[P]} * gx + {value[P + 1]}")
        for v in range(V):
            add(f"{ind}x{v} = {state.format(v=v)}")
            if noisy:
                add(f"{ind}z{v} = {draw.format(v=v)} * sqdt * sf[{v}, j]")
        add(f"{ind}{_join(f'f{v}' for v in range(V))}, = {eq(x, 'c')}")
        noise = lambda v: f" + z{v}" if noisy else ""
        if heun:
            for v in range(V):
                add(f"{ind}ir{v} = x{v} + dt * f{v}{noise(v)}")
                add(f"{ind}i{v} = clip(ir{v}, lo{v}, hi{v})")
            add(f"{ind}{_join(f'h{v}' for v in range(V))}, = {eq([f'i{v}' for v in range(V)], 'c')}")
            for v in range(V):
                add(f"{ind}nr{v} = x{v} + (f{v} + h{v}) * dt / F(2.0){noise(v)}")
        else:
            for v in range(V):
                add(f"{ind}nr{v} = x{v} + f{v} * dt{noise(v)}")

    if grad is None:
        _forward_lines(add, ind, V, K, uniform_loads, stage)
    else:
        _adjoint_lines(add, ind, V, P, heun, value, rows, tuple(grad), grad_scale, x, vjp, uniform_loads, stage)
    fast = "cache=True, error_model='numpy', forceinline=True, fastmath=FAST"
    header = [
        '"""Generated by tvb_torchfit.simulator.kernels: do not edit (regenerated from the sources on change)."""',
        f"# compiled with LLVM's -vectorize-memory-check-threshold={VECTORIZE_MEMORY_CHECKS} (kernels.load)",
        "import numba", "import numpy as np", "from numba import types",
        "from numba.extending import intrinsic", "",
        f"F = np.{dtype}", "", *_constants(dtype), f"FAST = {FAST_MATH!r}", "",
        _function_source(_pow2_intrinsic), "pow2 = _pow2_intrinsic()", "",
        *(_typed_source(fn, dtype) for fn in (transfer.exp_nonpositive, transfer.wong_wang_H_scalar,
                                               transfer.wong_wang_H_partials)),
        f"exp_nonpositive = numba.njit({fast})(exp_nonpositive)",
        f"wong_wang_H_scalar = numba.njit({fast})(wong_wang_H_scalar)",
        f"wong_wang_H_partials = numba.njit({fast})(wong_wang_H_partials)",
        "wong_wang_H = wong_wang_H_scalar", "",
        _typed_source(model.equations, dtype), _typed_source(model.equations_vjp, dtype),
        f"equations = numba.njit({fast})(equations)",
        f"equations_vjp = numba.njit({fast})(equations_vjp)", "",
        _typed_source(clip, dtype), f"clip = numba.njit({fast})(clip)", "",
        _function_source(gather_coupling),
        "gather_coupling = numba.njit(cache=True, error_model='numpy')(gather_coupling)", "", ""]
    return "\n".join(header + lines) + "\n"


#: fast-math flags of the generated code: fused multiply-adds and reciprocals of loop-invariant divisors (each
#: within an ulp or two of the plain operation; no reassociation, so sums keep their order)
FAST_MATH = {"contract", "arcp"}
_JIT = "@numba.njit(cache=True, error_model='numpy', fastmath=FAST, nogil=True)"   # nogil: draws overlap it


def _forward_lines(add, ind, V, K, uniform_loads, stage) -> None:
    """``forward``: per step the gather of the coupling sums, the stage loop, the history write. ``traj`` holds the
    start state in row 0 and step s's state in row s + 1, so that step s reads row s: every array is reshaped
    once, before the loop (a view made per step costs more than a small network's stage)."""
    add(_JIT)
    add("def forward(buf, L, normal, scale, sqdt, pu, pv, far_ptr, far_src, far_delay, far_w, near_ptr,")
    add("            near_src, near_w, lo, hi, dt, traj, gxs):")
    add("    T = traj.shape[0] - 1")
    add("    V = traj.shape[1]")
    add("    N = traj.shape[2]")
    add("    B = traj.shape[3]")
    add("    M = N * B")
    add("    noisy = normal.shape[0] > 0")
    add("    R = buf.shape[1]")
    add("    flat = buf.reshape(-1)")
    add("    zero = buf.dtype.type(0)")
    add("    acc = np.zeros(B, buf.dtype)")
    add("    base = np.empty(far_src.shape[0], np.uint64)")
    add("    for e in range(far_src.shape[0]):")
    add("        base[e] = np.uint64(far_src[e] * R - far_delay[e])")
    add("    sf = scale.reshape(V, M)")
    add("    xs = traj.reshape(T + 1, V, M)")
    add("    gf = gxs.reshape(T, M)")
    add("    nf = normal.reshape(normal.shape[0], V, M)")
    add("    nxt = np.empty((V, M), traj.dtype)      # the step's new state: another array than the one it reads")
    uniform_loads()
    add("    for s in range(T):")
    add("        gather_coupling(buf, flat, L + s - 1, base, far_ptr, far_src, far_delay, far_w, near_ptr, near_src,")
    add("                        near_w, xs, s, gf, s, acc, zero)")
    for noisy in (True, False):
        add("        if noisy:" if noisy else "        else:")
        add("            for j in range(M):")
        add(f"{ind}gx = gf[s, j]")
        stage(noisy)
        for v in range(V):
            add(f"{ind}nxt[{v}, j] = clip(nr{v}, lo{v}, hi{v})")
    add("        for v in range(V):")
    add("            for j in range(M):")
    add("                xs[s + 1, v, j] = nxt[v, j]")
    add("        for k in range(N):")
    add("            for b in range(B):")
    add("                buf[k, L + s, b] = nxt[0, k * B + b]")


def _adjoint_lines(add, ind, V, P, heun, value, rows, grad, grad_scale, x, vjp, uniform_loads, stage) -> None:
    """``adjoint``: the steps backwards, last first: the pull of the coupling-sum gradients over the out-edges,
    the stage recomputed and its vector-Jacobian product; then the gradients of the start and the history."""
    add(_JIT)
    add("def adjoint(L, X0, traj, gxs, normal, scale, sqdt, pu, pv, out_ptr, out_dst, out_delay, out_w, lo, hi, dt,")
    add("            g_traj, g_hist, g_X0, g_hist0, g_prm, g_scale):")
    add("    T = traj.shape[0]")
    add("    V = X0.shape[0]")
    add("    N = X0.shape[1]")
    add("    B = X0.shape[2]")
    add("    M = N * B")
    add("    noisy = normal.shape[0] > 0")
    add("    ggx = np.zeros((N, T + L + 1, B), traj.dtype)")
    add("    gX = np.zeros((V, M), traj.dtype)")
    add("    gprev = np.zeros((V, M), traj.dtype)")
    add("    pulls = np.zeros((1, M), traj.dtype)")
    add("    pl = pulls.reshape(M)")
    add("    x0s = X0.reshape(1, V, M)")
    add("    gcs = np.zeros((N, B), traj.dtype)")
    add("    gcf = gcs.reshape(M)")
    add("    no_hist = np.zeros(M, traj.dtype)")
    add("    acc = np.zeros(B, traj.dtype)")
    add("    zero = traj.dtype.type(0)")
    # the pull is the forward's gather over the out-edges, reading ggx at rows s + 1 + delay (no near part)
    add("    R = ggx.shape[1]")
    add("    flat = ggx.reshape(-1)")
    add("    neg_delay = -out_delay")
    add("    base = np.empty(out_dst.shape[0], np.uint64)")
    add("    for e in range(out_dst.shape[0]):")
    add("        base[e] = np.uint64(out_dst[e] * R + out_delay[e])")
    add("    no_ptr = np.zeros(N + 1, np.int64)")
    add("    gp = g_prm.reshape(g_prm.shape[0], M)")
    add("    sf = scale.reshape(V, M)")
    add("    gs = g_scale.reshape(V, M)")
    uniform_loads()
    add("    for s in range(T - 1, -1, -1):")
    add("        prev = X0 if s == 0 else traj[s - 1]")
    add("        pf = prev.reshape(V, M)")
    add("        gt = g_traj[s].reshape(V, M)")
    add("        gf = gxs[s].reshape(M)")
    add("        r = L + s - T")
    add("        gh = g_hist[r].reshape(M) if r >= 0 else no_hist")
    add("        gather_coupling(ggx, flat, s + 1, base, out_ptr, out_dst, neg_delay, out_w, no_ptr, out_dst, out_w,")
    add("                        x0s, 0, pulls, 0, acc, zero)")
    g_rows = list(np.cumsum(grad) - 1)

    def accumulate(i: int, expr: str) -> None:
        if grad[i]:
            add(f"{ind}gp[{g_rows[i]}, j] += {expr}")

    for noisy in (True, False):
        add("        if noisy:" if noisy else "        else:")
        if noisy:
            add("            nf = normal[s].reshape(V, M)")
        add("            for j in range(M):")
        for v in range(V):
            extra = " + pl[j] + gh[j]" if v == 0 else ""
            add(f"{ind}G{v} = gX[{v}, j] + gt[{v}, j]{extra}")
        add(f"{ind}gx = gf[j]")
        stage(noisy, "pf[{v}, j]", "nf[{v}, j]")
        for v in range(V):
            add(f"{ind}gv{v} = G{v} if lo{v} <= nr{v} <= hi{v} else F(0.0)")
        if heun:
            # stage 2: f(I, c) with weight dt / 2
            add(f"{ind}r2 = {vjp([f'i{v}' for v in range(V)], 'c', [f'gv{v} * dt / F(2.0)' for v in range(V)])}")
            for v in range(V):
                add(f"{ind}gi{v} = r2[{v}] if lo{v} <= ir{v} <= hi{v} else F(0.0)")
            # stage 1: f(X, c) with weight dt / 2 (corrector) + dt * gI (predictor)
            add(f"{ind}r1 = {vjp(x, 'c', [f'gv{v} * dt / F(2.0) + gi{v} * dt' for v in range(V)])}")
            through = lambda v: f"gv{v} + gi{v}"             # noqa: E731  the gradient the step passes straight on
            total = lambda i: f"r1[{i}] + r2[{i}]"          # noqa: E731  both stages' VJPs
        else:
            add(f"{ind}r1 = {vjp(x, 'c', [f'gv{v} * dt' for v in range(V)])}")
            through = lambda v: f"gv{v}"                     # noqa: E731
            total = lambda i: f"r1[{i}]"                     # noqa: E731
        for v in range(V):
            add(f"{ind}gprev[{v}, j] = {through(v)} + r1[{v}]")
            if noisy and grad_scale:
                add(f"{ind}gs[{v}, j] += ({through(v)}) * (nf[{v}, j] * sqdt)")
        add(f"{ind}gc = {total(V)}")
        for i in range(P):
            accumulate(i, total(V + 1 + i))
        accumulate(P, "gc * gx")
        accumulate(P + 1, "gc")
        add(f"{ind}gcf[j] = gc * {value[P]}")
    add("        for k in range(N):")
    add("            for b in range(B):")
    add("                ggx[k, s, b] = gcs[k, b]")
    add("        gX, gprev = gprev, gX")
    # the start state: what the first step's state propagation sent, plus its zero-delay out-edges
    add("    g_X0[:] = gX.reshape(V, N, B)")
    add("    for k in range(N):")
    add("        for e in range(out_ptr[k], out_ptr[k + 1]):")
    add("            if out_delay[e] == 0:")
    add("                for b in range(B):")
    add("                    g_X0[0, k, b] += out_w[e] * ggx[out_dst[e], 0, b]")
    # the history rows handed in: far out-edges read by steps 0 .. T - 1, and rows handed on unchanged
    add("    for i in range(L):")
    add("        for k in range(N):")
    add("            for b in range(B):")
    add("                g_hist0[i, k, b] = 0.0")
    add("            for e in range(out_ptr[k], out_ptr[k + 1]):")
    add("                step = i - L + 1 + out_delay[e]")
    add("                if out_delay[e] > 0 and 0 <= step < T:")
    add("                    for b in range(B):")
    add("                        g_hist0[i, k, b] += out_w[e] * ggx[out_dst[e], step, b]")
    add("            if i >= T:")
    add("                for b in range(B):")
    add("                    g_hist0[i, k, b] += g_hist[i - T, k, b]")


def _pow2_intrinsic():
    """numba intrinsic ``pow2(k)``: 2**k for an integral float k (float64: [-1022, 1023]; float32: [-126, 127]) of
    the same type, built from its bits (the exponent field k + bias shifted into place; no call, so loops using
    it vectorise). Compiled into the kernel module, which imports ``intrinsic`` and ``types``."""
    @intrinsic
    def pow2(typingctx, k):
        wide = k.bitwidth == 64
        ity, fty = (types.int64, types.float64) if wide else (types.int32, types.float32)
        bias, shift = (1023, 52) if wide else (127, 23)

        def codegen(context, builder, signature, args):
            it = context.get_value_type(ity)
            bits = builder.shl(builder.add(builder.fptosi(args[0], it), it(bias)), it(shift))
            return builder.bitcast(bits, context.get_value_type(fty))
        return fty(fty), codegen
    return pow2


def clip(v, lo, hi):
    """min(max(v, lo), hi) as comparisons (numba's min and max are calls, which keep a loop from vectorising);
    NaN passes through as with min / max."""
    return lo if v < lo else (hi if v > hi else v)


def gather_coupling(buf, flat, row0, base, far_ptr, far_src, far_delay, far_w, near_ptr, near_src, near_w, xs, s,
                    out, t, acc, zero):
    """One step's coupling sums ``out[t, k * B + b] = sum_e w_e x_{src_e}(delayed)``: far edges read the node-major
    buffer ``buf`` (N, rows, B) at row ``row0 - delay`` (batch 1: its flattening ``flat`` at ``base[e] + row0``,
    ``base`` precomputed per edge, unsigned), near ones the previous state, ``xs[s, 0]`` (xs: (rows, V, N * B)). Batch 1
    sums each node's edges in four interleaved partial sums (independent chains the CPU overlaps); wider batches
    sum along the contiguous batch axis. Plain Python; compiled into the kernel module."""
    N = far_ptr.shape[0] - 1
    B = out.shape[1] // N
    if B == 1:
        # unsigned indices: numba then skips its negative-index wrap-around, a compare and select per array read
        # (twice the loop's speed); ``base`` is uint64, its entries for source 0 wrapped, exact modulo 2**64
        one = np.uint64(1)
        four = np.uint64(4)
        r0 = np.uint64(row0)
        for k in range(N):
            a0 = zero
            a1 = zero
            a2 = zero
            a3 = zero
            e = np.uint64(far_ptr[k])
            end = np.uint64(far_ptr[k + 1])
            while e + four <= end:
                e1 = e + one
                e2 = e1 + one
                e3 = e2 + one
                a0 += far_w[e] * flat[base[e] + r0]
                a1 += far_w[e1] * flat[base[e1] + r0]
                a2 += far_w[e2] * flat[base[e2] + r0]
                a3 += far_w[e3] * flat[base[e3] + r0]
                e += four
            while e < end:
                a0 += far_w[e] * flat[base[e] + r0]
                e += one
            for e in range(near_ptr[k], near_ptr[k + 1]):
                a1 += near_w[e] * xs[s, 0, near_src[e]]
            out[t, k] = (a0 + a1) + (a2 + a3)
        return
    for k in range(N):
        acc[:] = zero
        for e in range(far_ptr[k], far_ptr[k + 1]):
            row = row0 - far_delay[e]
            j = far_src[e]
            w = far_w[e]
            for b in range(B):
                acc[b] += w * buf[j, row, b]
        for e in range(near_ptr[k], near_ptr[k + 1]):
            j = near_src[e]
            w = near_w[e]
            for b in range(B):
                acc[b] += w * xs[s, 0, j * B + b]
        for b in range(B):
            out[t, k * B + b] = acc[b]


def cache_dir() -> str:
    """Where generated kernel modules and numba's compiled code are kept (``TVB_TORCHFIT_CACHE``)."""
    base = os.environ.get("TVB_TORCHFIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tvb_torchfit")
    path = os.path.join(base, "kernels")
    try:
        os.makedirs(path, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = os.path.join(tempfile.gettempdir(), f"tvb_torchfit-kernels-{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    return path


#: LLVM's loop vectoriser gives up on a loop that needs more than this many run-time overlap checks between the
#: arrays it reads and writes (default 128): the adjoint's stage loop reads and writes ~30 rows of arrays numba
#: cannot declare disjoint. Raised once per process before a kernel is compiled (numba's LLVM is process-wide; the
#: option only lets more loops be vectorised, each behind checks that fall back to the scalar loop on overlap).
VECTORIZE_MEMORY_CHECKS = 2048
_LLVM_OPTIONS_SET = []


def _raise_vectorizer_check_limit() -> None:
    if not _LLVM_OPTIONS_SET:
        import llvmlite.binding as llvm
        llvm.set_option("tvb_torchfit", f"-vectorize-memory-check-threshold={VECTORIZE_MEMORY_CHECKS}")
        _LLVM_OPTIONS_SET.append(True)


def load(model, scheme: str, varying: Optional[Tuple[bool, ...]] = None, grad: Optional[Tuple[bool, ...]] = None,
         grad_scale: bool = True, dtype: str = "float64"):
    """The compiled kernel module (``forward`` or, given ``grad``, ``adjoint``; with ``equations``,
    ``equations_vjp``) of a model port, scheme and parameter layout (``kernel_source``): generated, written once per
    content hash, imported (numba compiles on first call, or loads its cache)."""
    source = kernel_source(model, scheme, varying, grad, grad_scale, dtype)
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        _raise_vectorizer_check_limit()
        name = f"tvbtf_kernel_{key}"
        path = os.path.join(cache_dir(), name + ".py")
        if not os.path.exists(path):
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(source)
            os.replace(tmp, path)              # atomic: another process sees the old file or this one
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _MODULES[key] = module
        return module


@dataclass
class EdgePlan:
    """The connectome as the kernel reads it: in-edges per target for the forward (far: delay >= 1, read from the
    history buffer; near: delay 0, read from the previous state), out-edges per source for the adjoint's pull."""
    far: Tuple[np.ndarray, ...]
    near: Tuple[np.ndarray, ...]
    out: Tuple[np.ndarray, ...]


def _csr(key: np.ndarray, other: np.ndarray, delay: np.ndarray, w: np.ndarray, n: int, dtype):
    order = np.lexsort((other, key))                   # by key, then by the other end (edge order of the twin)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=n), out=ptr[1:])
    return (ptr, other[order].astype(np.int64), delay[order].astype(np.int64), w[order].astype(dtype))


def edge_plan(weights: np.ndarray, idelays: np.ndarray, dtype: torch.dtype) -> EdgePlan:
    """``EdgePlan`` of TVB's weights (rows are targets) and integer delays, weights in ``dtype``."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    k, j = np.nonzero(weights)
    d, w = idelays[k, j], weights[k, j]
    n = weights.shape[0]
    far, near = d > 0, d == 0
    f = _csr(k[far], j[far], d[far], w[far], n, np_dtype)
    nr = _csr(k[near], j[near], d[near], w[near], n, np_dtype)
    out = _csr(j, k, d, w, n, np_dtype)
    return EdgePlan(far=(f[0], f[1], f[2], f[3]), near=(nr[0], nr[1], nr[3]), out=out)


@dataclass(frozen=True)
class KernelParams:
    """The parameters as a kernel call reads them, in kernel order (the model's ``parameter_names``, then the
    coupling's a, b): ``layout[i]`` whether parameter i varies over (node, batch); ``uniform`` (K,) the value of
    each that does not (the others' entries unused); ``varying`` (Q, N * B) those that do, one row each."""
    uniform: np.ndarray
    varying: np.ndarray
    layout: Tuple[bool, ...]


class BlockKernel:
    """The compiled kernels of one twin: its model and scheme (``load``, one module per parameter layout), edge
    plan, bounds, dt and the order of the packed parameters (kernel order: the model's ``parameter_names`` then
    the coupling's a, b)."""

    def __init__(self, model, scheme: str, weights: np.ndarray, idelays: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray, dt: float, packed_names: Tuple[str, ...], dtype: torch.dtype):
        self.model, self.scheme = model, scheme
        self.plan = edge_plan(weights, idelays, dtype)
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self.lo = np.where(np.isfinite(lo), lo, -np.inf).astype(np_dtype)
        self.hi = np.where(np.isfinite(hi), hi, np.inf).astype(np_dtype)
        self.dt, self.dtype, self.np_dtype = np_dtype(dt), dtype, np_dtype     # typed: no float64 promotion
        self.sqdt = np_dtype(np.sqrt(dt))
        wanted = list(model.parameter_names) + [COUPLING_PREFIX + "a", COUPLING_PREFIX + "b"]
        index = {name: i for i, name in enumerate(packed_names)}
        self.order = torch.as_tensor([index[n] for n in wanted], dtype=torch.int64)
        self._modules = {}

    def module(self, layout: Tuple[bool, ...], grad: Optional[Tuple[bool, ...]] = None, grad_scale: bool = True):
        """The compiled module (``load``) of a parameter layout: ``forward``, or given ``grad``, ``adjoint``."""
        key = (layout, grad, grad_scale)
        if key not in self._modules:
            self._modules[key] = load(self.model, self.scheme, layout, grad, grad_scale,
                                      "float32" if self.dtype == torch.float32 else "float64")
        return self._modules[key]

    def in_kernel_order(self, mask: Optional[Tuple[bool, ...]]) -> Tuple[bool, ...]:
        """A per-parameter mask in the packed order (``BlockParams``) in kernel order; None: every parameter."""
        if mask is None:
            return (True,) * len(self.order)
        return tuple(bool(mask[i]) for i in self.order.tolist())

    def params(self, packed: torch.Tensor, N: int, B: int, varying: Optional[Tuple[bool, ...]] = None
               ) -> KernelParams:
        """The packed parameters (P, N or 1, B or 1) as the kernel reads them; ``varying`` (packed order) marks those
        given per node or batch member (``BlockParams.varying``; None: all of them)."""
        layout = self.in_kernel_order(varying)
        p = packed.detach()[self.order].expand(len(layout), N, B)
        rows = [i for i, v in enumerate(layout) if v]
        return KernelParams(np.ascontiguousarray(p[:, 0, 0].numpy()),
                            np.ascontiguousarray(p[rows].reshape(len(rows), N * B).numpy()), layout)

    def scale(self, noise_scale: Optional[torch.Tensor], V: int, N: int, B: int) -> np.ndarray:
        if noise_scale is None:
            return np.zeros((V, N, B), self.np_dtype)
        return np.ascontiguousarray(noise_scale.detach().expand(V, N, B).numpy())

    def empty_normal(self, V: int, N: int, B: int) -> np.ndarray:
        return np.zeros((0, V, N, B), self.np_dtype)

    def forward(self, window: torch.Tensor, X0: torch.Tensor, normal: Optional[torch.Tensor], scale: np.ndarray,
                prm: KernelParams, T: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T steps from X0 (V, N, B) and the history ``window`` (L, N, B): (trajectory (T, V, N, B), the history
        window after the run (L, N, B), a view), coupling sums gx (T, N, B)). The kernel's buffer is node-major,
        (N, L + T, B): the window, then each step's coupling variable; an edge then reads successive steps from
        adjacent memory."""
        L, N, B = window.shape
        V = X0.shape[0]
        buf = torch.empty((N, L + T, B), dtype=self.dtype)
        buf[:, :L] = window.detach().permute(1, 0, 2)
        states = torch.empty((T + 1, V, N, B), dtype=self.dtype)       # the start, then each step's state
        states[0] = X0.detach()
        gxs = torch.empty((T, N, B), dtype=self.dtype)
        nrm = self.empty_normal(V, N, B) if normal is None else np.ascontiguousarray(normal.detach().numpy())
        f, nr = self.plan.far, self.plan.near
        self.module(prm.layout).forward(
            buf.numpy(), L, nrm, scale, self.sqdt, prm.uniform, prm.varying, f[0], f[1], f[2], f[3], nr[0], nr[1],
            nr[2], self.lo, self.hi, self.dt, states.numpy(), gxs.numpy())
        return states[1:], buf[:, T:].permute(1, 0, 2), gxs

    def adjoint(self, L: int, X0: torch.Tensor, traj: torch.Tensor, gxs: torch.Tensor,
                normal: Optional[torch.Tensor], scale: np.ndarray, prm: KernelParams, g_traj: torch.Tensor,
                g_hist: torch.Tensor, grad: Optional[Tuple[bool, ...]], grad_scale: bool):
        """Gradients (X0 (V, N, B), history window (L, N, B), parameters (P, N, B) in kernel order or None,
        noise scale (V, N, B) or None) of the run ``forward`` made, given those of its trajectory and handed-on
        history. ``grad`` (packed order; None: none) marks the parameters whose gradient is wanted (the other rows
        are 0); ``grad_scale`` whether the noise scale's is."""
        T, V, N, B = traj.shape
        mask = self.in_kernel_order(grad) if grad is not None else (False,) * len(prm.layout)
        g_X0 = torch.empty((V, N, B), dtype=self.dtype)
        g_hist0 = torch.empty((L, N, B), dtype=self.dtype)
        g_rows = torch.zeros((sum(mask), N, B), dtype=self.dtype)
        g_scale = torch.zeros((V, N, B), dtype=self.dtype)
        nrm = self.empty_normal(V, N, B) if normal is None else np.ascontiguousarray(normal.detach().numpy())
        o = self.plan.out
        self.module(prm.layout, mask, grad_scale).adjoint(
            L, np.ascontiguousarray(X0.detach().numpy()), traj.numpy(), gxs.numpy(), nrm, scale, self.sqdt,
            prm.uniform, prm.varying, o[0], o[1], o[2], o[3], self.lo, self.hi, self.dt,
            np.ascontiguousarray(g_traj.detach().numpy()), np.ascontiguousarray(g_hist.detach().numpy()),
            g_X0.numpy(), g_hist0.numpy(), g_rows.numpy(), g_scale.numpy())
        g_prm = None
        if grad is not None:
            g_prm = torch.zeros((len(mask), N, B), dtype=self.dtype)
            g_prm[[i for i, m in enumerate(mask) if m]] = g_rows
        return g_X0, g_hist0, g_prm, (g_scale if grad_scale else None)
