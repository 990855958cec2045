"""The differentiable twin of a TVB ``Simulator``: same steps, same monitors, same time stamps.

``TorchSimulator.run(simulation_length)`` mirrors ``tvb.simulator.simulator.Simulator.run``:
it integrates ``ceil(simulation_length / dt)`` steps from where the previous call stopped
(state, delay history, monitor buffers, noise stream and step counter all carry over) and returns
one ``(times, data)`` pair per monitor, times in ms, data shaped (time, voi, nodes, modes) as TVB's,
with a leading batch axis when ``batch > 1``. All outputs are torch tensors that carry gradients
with respect to ``params``.

Parameters (``TorchSimulator.params``) are named as in TVB: every parameter of the model
(``"G"``, ``"w_p"``, ``"J_i"``, ...), ``"coupling.a"`` and ``"coupling.b"`` for the Linear
coupling and ``"noise.nsig"`` for Additive noise. Model and coupling parameters broadcast against
(batch, nodes): (1,) global, (N,) region-wise, (B, 1) one value per batch member, (B, N) both.
``noise.nsig`` broadcasts against (batch, nvar, nodes).

Internally tensors are laid out (state variable, node, batch): the batch axis sits where TVB
keeps its modes, so per-step arithmetic is the same as TVB's.
"""
import copy
import functools
import math
import numbers
import warnings
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from . import monitors as _monitors
from .adapter import SimulatorSpec
from .coupling import DelayedLinearCoupling, gather_far, gather_far_node_major, max_block, near_padded
from .registry import COUPLING_PREFIX, NOISE_NSIG, resolve, to_internal
from .history import HistoryRing
from ..errors import ParameterError
from .integrators import SCHEMES
from .noise import TorchStream, TVBStream, additive_increment

TensorLike = Union[torch.Tensor, np.ndarray, float, List[float]]
Output = List[Tuple[torch.Tensor, torch.Tensor]]

_MONITOR_CHUNK = 1024        # steps handed to the monitors at once
_BACKWARD_BLOCK = 4          # steps per compiled call of the checkpointed backward (at most the block)
_CPU_COMPILE_OPTIONS = {"cpp_wrapper": True}     # inductor options of compile=True on CPU (see __init__)


class _CompiledOrEager:
    """``torch.compile(fn)``, falling back to ``fn`` itself for good if compilation fails (a C++ compiler
    that is missing or crashes on the generated code: seen with g++ on some block lengths), with a warning."""

    def __init__(self, fn, options: Optional[Dict] = None):
        self.fn = fn

        def call(*args):
            return fn(*args)
        # A code object of its own: dynamo keeps compiled graphs, and counts recompilations against its limit
        # (8), per code object; torch.compile of a functools.partial would share one wrapper code object
        # between every simulator of the process and silently run eagerly once 8 variants (dtype, batch,
        # thread count, forward / backward ...) exist. Per instance, recompilations stay few.
        call.__code__ = call.__code__.replace()
        self.compiled = torch.compile(call, dynamic=False, options=options)
        self.error: Optional[BaseException] = None

    def __call__(self, *args):
        if self.error is None:
            try:
                return self.compiled(*args)
            except _COMPILE_ERRORS as err:
                self.error = err
                warnings.warn(f"tvb_torchfit: torch.compile failed ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}); "
                              "these blocks run eagerly from now on.", RuntimeWarning, stacklevel=2)
        return self.fn(*args)


def _compile_errors():
    errors = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed
        errors.append(BackendCompilerFailed)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import CppCompileError
        errors.append(CppCompileError)
    except ImportError:
        pass
    return tuple(errors) or (RuntimeError,)


_COMPILE_ERRORS = _compile_errors()


def integrate_block(X: torch.Tensor, far: torch.Tensor, z: Optional[torch.Tensor], a: torch.Tensor,
                    b: torch.Tensor, p: Dict[str, torch.Tensor], *, dfun, post, step_fn, dt: float, near_fn,
                    lo: Optional[torch.Tensor], hi: Optional[torch.Tensor]) -> torch.Tensor:
    """K integration steps from state X (nvar, N, B): coupling -> model -> integrator, as TVB's loop.

    ``far`` (K, N, B) holds the delayed coupling sums gathered for the block; ``near_fn`` adds the
    zero-delay edges from the current state; ``z`` (K, nvar, N, B) the noise increments or None.
    Returns the K new states (K, nvar, N, B). Pure function: ``torch.compile`` fuses it.
    """
    states = []
    for tau in range(far.shape[0]):
        gx = far[tau] + near_fn(X[0]) if near_fn is not None else far[tau]
        c = post(gx, a, b)
        X = step_fn(X, lambda Y: dfun(Y, c, p), dt, None if z is None else z[tau], lo, hi)
        states.append(X)
    return torch.stack(states)


def noisy_block(far: torch.Tensor, X: torch.Tensor, normal: Optional[torch.Tensor],
                noise_scale: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor, p: Dict[str, torch.Tensor], *,
                dt: float, **step_kw) -> torch.Tensor:
    """Noise increments z = N(0,1) * sqrt(dt) * sqrt(2 nsig) (``noise_scale`` = sqrt(2 nsig), TVB's order of
    operations) and ``integrate_block`` on the block's far-edge sums ``far`` (K, N, B)."""
    z = None if normal is None else normal * math.sqrt(dt) * noise_scale
    return integrate_block(X, far, z, a, b, p, dt=dt, **step_kw)


def fused_block(history: torch.Tensor, offset: Optional[torch.Tensor], X: torch.Tensor,
                normal: Optional[torch.Tensor], noise_scale: Optional[torch.Tensor], a: torch.Tensor,
                b: torch.Tensor, p: Dict[str, torch.Tensor], *, rows: torch.Tensor, w: torch.Tensor,
                dt: float, unrolled: bool = False, **step_kw) -> torch.Tensor:
    """One whole block from a time-major history window (``history`` (horizon * N, B), a graph-carrying tensor
    while autograd records): far-edge gather (``coupling.gather_far``) and ``noisy_block``."""
    far = gather_far(history, rows, w, offset, unrolled=unrolled)
    return noisy_block(far, X, normal, noise_scale, a, b, p, dt=dt, **step_kw)


def ring_block(buffer: torch.Tensor, offset: torch.Tensor, X: torch.Tensor, normal: Optional[torch.Tensor],
               noise_scale: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor, p: Dict[str, torch.Tensor], *,
               src: torch.Tensor, w: torch.Tensor, write: torch.Tensor, K: int, B: int, dt: float,
               unrolled: bool = False, **step_kw) -> torch.Tensor:
    """One whole block on the node-major in-place history (``history.HistoryRing``: flat ``buffer``, window
    start ``offset``): far-edge gather (``coupling.gather_far_node_major``), ``noisy_block``, and the block's
    coupling variable written into the buffer after the window (positions ``write`` + offset,
    ``HistoryRing.write_positions``; the caller then ``advance``s the ring). Inside a compiled block the write
    is one scatter into the buffer, not a separate call."""
    far = gather_far_node_major(buffer, offset, src, w, K, B, unrolled=unrolled)
    states = noisy_block(far, X, normal, noise_scale, a, b, p, dt=dt, **step_kw)
    buffer.index_put_((write + offset,), states[:, 0].permute(1, 0, 2).reshape(-1).to(buffer.dtype))
    return states


def packed_block(buffer: torch.Tensor, offset: Optional[torch.Tensor], X: torch.Tensor,
                 normal: Optional[torch.Tensor], noise_scale: Optional[torch.Tensor], packed: torch.Tensor, *,
                 names: Tuple[str, ...], block_fn=ring_block, **kw) -> torch.Tensor:
    """``block_fn`` (``ring_block``, or ``fused_block`` for a time-major window) with the model and coupling
    parameters stacked in one tensor (``packed[i]`` is parameter ``names[i]``, all broadcast to a common shape):
    the compiled call then checks and unpacks one input instead of some twenty, which is a measurable part of a
    block's cost at small batch. What ``compile=True`` compiles, so that one compiled call covers a block."""
    p = {name: packed[i] for i, name in enumerate(names)}
    a, b = p.pop("coupling.a"), p.pop("coupling.b")
    return block_fn(buffer, offset, X, normal, noise_scale, a, b, p, **kw)


def block_vjp(history: torch.Tensor, X: torch.Tensor, normal: Optional[torch.Tensor],
              noise_scale: Optional[torch.Tensor], packed_var: Optional[torch.Tensor], packed_const: torch.Tensor,
              grad_states: torch.Tensor, grad_rows: Optional[torch.Tensor] = None,
              grad_next: Optional[torch.Tensor] = None, grad_far_later: Optional[torch.Tensor] = None, *,
              rows: torch.Tensor, w: torch.Tensor, pull_rows: Optional[torch.Tensor] = None,
              pull_w: Optional[torch.Tensor] = None, var_names: Tuple[str, ...], const_names: Tuple[str, ...],
              scale_grad: bool, dt: float, unrolled: bool = True, **step_kw) -> Tuple[Optional[torch.Tensor], ...]:
    """Backward of one chunk of K steps, recomputed from its inputs (for ``_CheckpointedRun``).

    Gathers the far-edge sums from ``history`` (the chunk's (horizon * N, B) window), recomputes the K
    steps and returns the vector-Jacobian products of ``grad_states`` (K, nvar, N, B) with respect to
    (far sums (K, N, B), start state, the parameters ``var_names`` stacked in ``packed_var`` or None, the
    noise scale if ``scale_grad`` else None). Only those parameters are differentiated; the others
    (``packed_const``, ``const_names``) and the noise scale otherwise enter as constants. Differentiated
    parameters and noise scale come in full (P or nvar, N, B) shape, so their gradients need no reduction
    inside (the caller sums them to the parameters' shapes once per run). What ``compile=True`` compiles
    for the backward.

    The gradient reaching each step's coupling variable through the delayed coupling of later steps is
    pulled, inside the call, from ``grad_far_later`` (the far-sum gradients of the K + horizon steps from the
    chunk's first step on, (time * N, B), already known for every step it reads since all far delays are
    >= K - 1) by the transposed gather ``pull_rows``/``pull_w`` (``coupling.pull_plan``); ``grad_rows``
    (K, N, B), if given, is added to it (gradient arriving directly on the history the run hands on), and
    ``grad_next`` (nvar, N, B) to the last step's state (the gradient reaching the chunk's end state from
    later chunks). No scatter: the far-sum gradient of the chunk is returned for the caller to store.
    """
    if grad_far_later is not None:
        pulled = gather_far(grad_far_later, pull_rows, pull_w, None, unrolled=unrolled)
        grad_rows = pulled if grad_rows is None else grad_rows + pulled
    if grad_rows is not None:
        grad_states = torch.cat((grad_states[:, :1] + grad_rows.unsqueeze(1), grad_states[:, 1:]), dim=1)
    if grad_next is not None:
        grad_states = torch.cat((grad_states[:-1], (grad_states[-1] + grad_next).unsqueeze(0)))
    far = gather_far(history, rows, w, None, unrolled=unrolled)

    def steps(far, X, pv, scale):
        p = {name: packed_const[i] for i, name in enumerate(const_names)}
        for i, name in enumerate(var_names):
            p[name] = pv[i]
        a, b = p.pop("coupling.a"), p.pop("coupling.b")
        z = None if normal is None else normal * math.sqrt(dt) * scale
        return integrate_block(X, far, z, a, b, p, dt=dt, **step_kw)

    # fixed-arity closures (torch.compile traces torch.func.vjp of these without graph breaks)
    if var_names and scale_grad:
        _, vjp_fn = torch.func.vjp(steps, far, X, packed_var, noise_scale)
        g_far, g_X, g_pv, g_scale = vjp_fn(grad_states)
    elif var_names:
        _, vjp_fn = torch.func.vjp(lambda f, x, pv: steps(f, x, pv, noise_scale), far, X, packed_var)
        (g_far, g_X, g_pv), g_scale = vjp_fn(grad_states), None
    elif scale_grad:
        _, vjp_fn = torch.func.vjp(lambda f, x, sc: steps(f, x, None, sc), far, X, noise_scale)
        (g_far, g_X, g_scale), g_pv = vjp_fn(grad_states), None
    else:
        _, vjp_fn = torch.func.vjp(lambda f, x: steps(f, x, None, noise_scale), far, X)
        (g_far, g_X), g_pv, g_scale = vjp_fn(grad_states), None, None
    return g_far, g_X, g_scale, g_pv


_SEGMENT_STEPS = 1024        # steps of noise replayed at once by the checkpointed backward
_GROUP_STEPS = 4096          # steps per autograd node of a checkpointed run (see ``_run_checkpointed``)


def _segment_blocks(block: int, bwd_block: int) -> int:
    """Blocks per noise-replay segment of the checkpointed backward: about ``_SEGMENT_STEPS`` steps, and a
    multiple of ``bwd_block`` steps when its blocks are full (so that only the run's last segment, holding a
    shorter block, can need a chunk shorter than ``bwd_block``)."""
    unit = bwd_block // math.gcd(block, bwd_block)
    return unit * max(1, _SEGMENT_STEPS // (block * unit))


def _detached(args):
    """The arguments with tensors detached: a compiled call guards on ``requires_grad``, and inside a checkpointed
    run's forward and backward the same tensors arrive requiring grad or not (first group or later, start state or
    trajectory), which would compile the same graph again for each combination."""
    return tuple(a.detach() if torch.is_tensor(a) else a for a in args)


def _no_grad(fn):
    def call(*args):
        with torch.no_grad():
            return fn(*_detached(args))
    return call


class _CheckpointedRun(torch.autograd.Function):
    """A whole ``run`` under autograd, differentiated block by block with recomputation.

    Forward: every block is integrated without recording a graph (the compiled no-grad block, reading an
    in-place ``HistoryRing``), and each step's coupling variable is also written to an append-only time-major
    buffer holding the start history then the run's steps (the backward's history windows); kept for
    the backward are the block inputs only: the start state and history, the parameters, the state
    trajectory (no per-step intermediates) and snapshots of the noise stream every ``_SEGMENT_STEPS`` steps
    or so, from which the backward redraws the noise segment by segment (not the draws themselves). Backward: chunks of ``sim._bwd_block`` steps in
    reverse order (any partition works, since the trajectory holds every step's start state; chunks shorter
    than the forward blocks keep the compiled backward graph small: a 17-step one made g++ 12 crash with an
    internal compiler error, and compiles ~12 s per step), each recomputed and differentiated by one compiled
    call (``block_vjp``, with respect to the parameters ``var_idx`` of ``packed`` only: those that require
    grad); gradients with respect to the history rows a chunk read are accumulated in a buffer of the same
    layout and handed to the chunks that wrote those rows. Memory: O(steps * nvar * N * B), independent of
    the model's intermediates.
    """

    @staticmethod
    def forward(ctx, sim, blocks, var_idx, X0, hist0, noise_scale, packed):
        L, N, B = hist0.shape
        T = sum(blocks)
        buf = hist0.new_empty((L + T, N, B))
        buf[:L] = hist0
        traj = X0.new_empty((T,) + tuple(X0.shape))
        # the noise is drawn here, block by block as ``run`` does, and not kept: the backward replays it per
        # segment of ``seg`` blocks from a snapshot of the stream taken at the segment's start (saves a
        # (steps, nvar, N, B) tensor); a segment spans a multiple of the backward chunk when blocks are full
        seg = _segment_blocks(sim.block, sim._bwd_block)
        snapshots = []
        ring = sim._new_ring()                 # the forward reads the history from the in-place buffer
        ring.load(hist0)
        X, s = X0, 0
        for i, K in enumerate(blocks):
            normal = None
            if sim.stochastic:
                if i % seg == 0:
                    snapshots.append(sim.noise.state_dict())
                normal = sim.noise.draw(K)
            ring.make_room(K)
            states = sim._forward_block(ring, X, normal, noise_scale, packed, K)     # writes the ring, advances it
            traj[s:s + K] = states
            buf[L + s:L + s + K] = states[:, 0]
            X, s = states[-1], s + K
        ctx.sim, ctx.blocks, ctx.var_idx, ctx.seg, ctx.snapshots = sim, blocks, var_idx, seg, snapshots
        ctx.save_for_backward(X0, noise_scale, packed, traj, buf)   # buf is never written again
        return traj, buf[T:]

    @staticmethod
    def backward(ctx, g_traj, g_hist):
        sim, var_idx, blocks, seg = ctx.sim, ctx.var_idx, ctx.blocks, ctx.seg
        X0, noise_scale, packed, traj, buf = ctx.saved_tensors
        L = buf.shape[0] - traj.shape[0]
        T, V, N, B = traj.shape
        # far-sum gradient of every step, time-major, with `L` zero steps before the run and `L` after it:
        # row block L + n holds step n; the chunk starting at step s pulls from steps s .. s + K + L - 1
        gfar = buf.new_zeros((L + T + L, N, B))
        if g_traj is None:
            g_traj = torch.zeros_like(traj)
        scale_grad = noise_scale is not None and ctx.needs_input_grad[5]
        if not ctx.needs_input_grad[6]:
            var_idx = ()
        const_idx = tuple(i for i in range(packed.shape[0]) if i not in var_idx)
        packed_var = packed[list(var_idx)].expand(len(var_idx), N, B).contiguous() if var_idx else None
        packed_const = packed[list(const_idx)]
        scale = noise_scale.expand(V, N, B).contiguous() if scale_grad else noise_scale
        g_pv = None if packed_var is None else torch.zeros_like(packed_var)
        g_scale = torch.zeros_like(scale) if scale_grad else None
        gX = torch.zeros_like(X0)
        replay = copy.deepcopy(sim.noise) if sim.stochastic else None    # leaves the simulator's stream alone
        starts = np.concatenate(([0], np.cumsum(blocks)))                 # step of each block's start
        kb = sim._bwd_block
        fns = {}                                  # chunk length -> vjp function
        zero_rows = {}
        for j in reversed(range(0, len(blocks), seg)):                    # segments, last first
            seg_start, seg_end = int(starts[j]), int(starts[min(j + seg, len(blocks))])
            normals = None
            if replay is not None:
                replay.load_state_dict(ctx.snapshots[j // seg])
                normals = torch.cat([replay.draw(K) for K in blocks[j:j + seg]])
            s = seg_end
            while s > seg_start:
                K = min(kb, s - seg_start)       # full chunks from the segment's end; a shorter first one if any
                s -= K
                if K not in fns:
                    fns[K] = sim._vjp_fn(K, var_idx, scale_grad)
                    zero_rows[K] = buf.new_zeros((K, N, B))
                X_start = X0 if s == 0 else traj[s - 1]
                # the gradient arriving on the history handed on (rows T .. T + L - 1 of buf: steps T - L ..)
                rows = zero_rows[K]
                if g_hist is not None and s + K > T - L:
                    lo = max(s, T - L)
                    rows = rows.clone()
                    rows[lo - s:] = g_hist[lo - (T - L):s + K - (T - L)]
                g_far, gX, g_sc, g_p = fns[K](
                    buf[s:s + L].view(L * N, B), X_start,
                    None if normals is None else normals[s - seg_start:s - seg_start + K],
                    scale, packed_var, packed_const, g_traj[s:s + K], rows, gX,
                    gfar[L + s:L + s + K + L].view((K + L) * N, B))
                gfar[L + s:L + s + K] = g_far
                if g_pv is not None:
                    g_pv += g_p
                if g_scale is not None:
                    g_scale += g_sc
        g_hist0 = None
        if ctx.needs_input_grad[4]:               # the start history: its rows are the "steps" -L .. -1
            pull_rows, pull_w = sim.coupling.pull_plan(L)
            g_hist0 = gather_far(gfar[:2 * L].reshape(2 * L * N, B), pull_rows, pull_w.to(gfar.dtype))
            if g_hist is not None and T < L:      # history rows handed on unchanged
                g_hist0[T:] += g_hist[:L - T]
        g_packed = None
        if g_pv is not None:
            g_packed = packed.new_zeros(packed.shape)
            g_packed[list(var_idx)] = g_pv.sum_to_size((len(var_idx),) + tuple(packed.shape[1:]))
        return (None, None, None, gX, g_hist0,
                g_scale.sum_to_size(noise_scale.shape) if g_scale is not None else None, g_packed)


class TorchSimulator:
    """A TVB region simulation as a torch computation. Build it with ``tvb_torchfit.from_tvb``.

    Options beyond ``from_tvb``'s documentation:

    * ``compile=True``: each full block of ``block`` steps (at most the shortest non-zero delay + 1) is one
      ``torch.compile``d call (far-edge gather, noise scaling, steps; C++ wrapper on CPU); a shorter last
      block runs eagerly. The first call of each variant (dtype, batch, thread count, forward / backward)
      compiles once, tens of seconds for the forward and for the backward (chunks of 4 steps, one per set of
      parameters requiring grad) on a small CPU (inductor keeps them on disk for later processes). If
      compilation fails the blocks run eagerly, with a warning.
    * ``checkpoint`` (default: on with ``compile=True``, off otherwise; never in the TVB-exact mode): while
      autograd records, integrate without a graph and recompute each block in the backward
      (``_CheckpointedRun``). Same values and gradients; memory O(steps * nvar * N * batch) instead of every
      step's intermediates; with ``compile=True`` the forward runs at no-grad speed.

    Small problems (batch up to ~8 on a few cores) usually run faster with ``torch.set_num_threads(1)``
    (set by the caller; the library leaves torch's threads alone).
    """

    def __init__(self, spec: SimulatorSpec, *, noise: str = "torch", exact: bool = False, batch: int = 1,
                 dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = "cpu",
                 block: Optional[int] = None, seed: Optional[int] = None, compile: bool = False,
                 checkpoint: Optional[bool] = None):
        if noise not in ("torch", "tvb"):
            raise ValueError(f"noise={noise!r}: expected 'torch' (seeded torch.Generator) or 'tvb' "
                             "(TVB's own random stream).")
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise ValueError(f"batch={batch!r}: expected a positive integer.")
        if exact and dtype != torch.float64:
            raise ValueError("exact=True reproduces TVB's float64 state with its float32 history; "
                             f"it needs dtype=torch.float64, not {dtype}.")
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype={dtype}: expected torch.float64 or torch.float32.")
        self.spec = spec
        self.model = spec.model
        self.dt = spec.dt
        self.batch = batch
        self.dtype = dtype
        self.device = torch.device(device)
        self.exact = exact
        self.noise_source = noise
        self.current_step = spec.current_step
        self._step_fn, self.stochastic = SCHEMES[spec.scheme]
        N, B = spec.n_nodes, batch
        hist_dtype = torch.float32 if exact else dtype
        default_block = 1 if exact else 32
        self.block = max(1, min(block or default_block, max_block(spec.weights, spec.idelays)))
        self.coupling = DelayedLinearCoupling(spec.weights, spec.idelays, spec.horizon, B, hist_dtype, self.device,
                                              block=self.block, numpy_order=exact)

        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)
        self.params: Dict[str, torch.Tensor] = {name: t(v) for name, v in spec.model_params.items()}
        self.params.update({COUPLING_PREFIX + k: t(v) for k, v in spec.coupling_params.items()})
        if self.stochastic:
            self.params[NOISE_NSIG] = t(spec.nsig)
        self._lo = t(spec.lo).view(-1, 1, 1)
        self._hi = t(spec.hi).view(-1, 1, 1)
        self._bounded = bool(np.isfinite(spec.lo).any() or np.isfinite(spec.hi).any())

        # starting point: TVB's current state and its history buffer, in time order (oldest first)
        self.state = t(spec.current_state).unsqueeze(-1).expand(-1, -1, B).contiguous()
        H = spec.horizon
        order = (spec.current_step + 1 + np.arange(H)) % H
        hist = torch.as_tensor(spec.history[order], dtype=hist_dtype, device=self.device)
        # The delay history lives in one of two forms (see ``history``): while autograd records (without
        # checkpointing), a time-major (horizon, N, B) tensor rebuilt each block by concatenation (cheap to
        # differentiate); otherwise a ``HistoryRing`` written in place (node-major, time-major in the exact mode).
        self._hist_dtype = hist_dtype
        self._ring: Optional[HistoryRing] = None
        self._flat: Optional[torch.Tensor] = hist.unsqueeze(-1).expand(H, N, B).contiguous()

        if self.stochastic:
            shape = (len(self.model.state_variables), N)
            if noise == "tvb":
                self.noise = TVBStream(spec.random_stream, spec.noise_seed, shape, B, dtype, self.device)
            else:
                self.noise = TorchStream(spec.noise_seed if seed is None else seed, shape, B, dtype, self.device)
        else:
            self.noise = None
        self.monitors = [self._build_monitor(m) for m in spec.monitors]
        if self.coupling.has_near:
            near = functools.partial(near_padded, idx=self.coupling.near_idx,
                                     w=self.coupling.near_weights(dtype))
        else:
            near = None
        step_kw = dict(dfun=self.model.dfun, post=spec.coupling.post, step_fn=self._step_fn, near_fn=near,
                       lo=self._lo if self._bounded else None, hi=self._hi if self._bounded else None)
        self._block = functools.partial(integrate_block, dt=self.dt, **step_kw)
        self._fused = None
        self._ring_length = HistoryRing.steps_held(spec.horizon, self.block)
        if not exact:
            src, w = self.coupling.node_major_plan(self._ring_length)
            self._packed_names = tuple(name for name in self.params if name != NOISE_NSIG)
            write = HistoryRing.write_positions(spec.horizon, N, B, self._ring_length, self.block, self.device)
            self._write_positions = {self.block: write}          # by block length (a last, shorter block)
            self._fused = functools.partial(packed_block, names=self._packed_names, src=src, w=w, write=write,
                                            K=self.block, B=B, dt=self.dt, unrolled=True, **step_kw)
        self.compiled = bool(compile)
        # compile=True: one compiled call per full block (shapes fixed: dynamic=False); a shorter last block
        # runs eagerly. The default mode compiles gather + noise + steps; the exact mode keeps its numpy-order
        # float32 coupling sum outside and compiles the steps.
        self._compiled_block = None
        # cpp_wrapper: the compiled call's wrapper (buffer allocation, argument checks) in C++ instead of
        # Python, a large part of a block's cost at small batch on CPU
        options = dict(_CPU_COMPILE_OPTIONS) if self.device.type == "cpu" else None
        if compile:
            self._compiled_block = _CompiledOrEager(self._block if exact else self._fused, options)
        self._compiled_graph_block = None      # compile=True, checkpoint=False: the time-major block, built when used
        # checkpoint: while autograd records, run blocks without a graph and recompute each in the backward
        # (``_CheckpointedRun``); default on with compile=True (TVB-exact mode: never)
        if checkpoint and exact:
            raise ValueError("checkpoint=True is not available with exact=True (the TVB-exact mode).")
        self.checkpoint = bool(compile and not exact) if checkpoint is None else bool(checkpoint)
        self._compile_options = options
        self._compiled_vjps: Dict[Tuple, _CompiledOrEager] = {}    # by differentiated parameters, built lazily
        # steps per chunk of the checkpointed backward (see ``_CheckpointedRun``): compile time and code size
        # grow with it, the per-step cost falls slowly (measured, f64 batch 1: 46/31/25/21 us per step at 1/2/4/8)
        self._bwd_block = min(self.block, _BACKWARD_BLOCK)
        # steps per autograd node of a checkpointed run; each keeps a history window of its own besides the
        # trajectory, so at least a few horizons
        self._group_steps = max(_GROUP_STEPS, 4 * spec.horizon)
        self._step_kw = step_kw
        voi = np.asarray(spec.model_voi, dtype=np.int64)
        n_var = len(self.model.state_variables)
        # observed variables: no selection (copy) when they are all the state variables, in order
        self._voi = None if np.array_equal(voi, np.arange(n_var)) else torch.as_tensor(voi, device=self.device)
        # steps handed to the monitors at once: up to _MONITOR_CHUNK, fewer for large batches (about 2**20
        # state values per chunk keeps the chunk's concatenation and averaging in cache)
        self._chunk = max(self.block, min(_MONITOR_CHUNK, (1 << 20) // (n_var * N * B)))

    # ------------------------------------------------------------------ set-up helpers
    def _build_monitor(self, m) -> _monitors.Monitor:
        B = self.batch
        as_batched = lambda a: torch.as_tensor(np.asarray(a)[..., 0], dtype=self.dtype, device=self.device) \
            .unsqueeze(-1).expand(*np.asarray(a).shape[:-1], B).contiguous()
        if m.kind == "Raw":
            return _monitors.Raw(np.arange(len(self.spec.model_voi)), self.dt)
        if m.kind == "SubSample":
            return _monitors.SubSample(m.voi, self.dt, m.istep)
        if m.kind == "TemporalAverage":
            return _monitors.TemporalAverage(m.voi, self.dt, m.istep, as_batched(m.stock))
        return _monitors.Bold(m.voi, self.dt, m.istep, m.interim_istep, m.hrf_reversed, m.k1_V0,
                              as_batched(m.stock), as_batched(m.bold_stock),
                              self.current_step // m.interim_istep)

    @property
    def parameter_names(self) -> Tuple[str, ...]:
        return tuple(self.params)

    @property
    def n_nodes(self) -> int:
        return self.spec.n_nodes

    def _internal(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A public parameter tensor in the internal layout (``registry.to_internal``)."""
        return to_internal(name, self._as_tensor(name, value), n_nodes=self.n_nodes, batch=self.batch,
                           nvar=len(self.model.state_variables))

    def set_param(self, name: str, value: TensorLike) -> None:
        """Set one parameter (a tensor may require grad); checks the name and the shape."""
        name = resolve(name, self.params, f"this simulator ({self.model.tvb_class.__name__} with "
                                          f"{self.spec.coupling.__name__} coupling)")
        value = self._as_tensor(name, value)
        self._internal(name, value)                 # validates the shape before anything is kept
        self.params[name] = value

    def _as_tensor(self, name: str, value: TensorLike) -> torch.Tensor:
        if (value.is_complex() if torch.is_tensor(value) else np.iscomplexobj(value)):
            raise ParameterError(f"parameter {name!r} must be real, got a complex value.")
        try:
            return torch.as_tensor(value, dtype=self.dtype, device=self.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ParameterError(f"parameter {name!r} must be a number, array or tensor of numbers; "
                                 f"got {type(value).__name__} ({err}).") from None

    # ------------------------------------------------------------------ integration
    def run(self, simulation_length: Optional[float] = None, n_steps: Optional[int] = None) -> Output:
        """Integrate ``simulation_length`` ms (or ``n_steps`` steps) and return TVB's monitor outputs."""
        if n_steps is None:
            if simulation_length is None or not simulation_length > 0:
                raise ValueError(f"simulation_length={simulation_length!r}: expected a positive length in ms.")
            n_steps = int(math.ceil(float(simulation_length) / self.dt))
        for name in self.params:
            if not torch.isfinite(torch.as_tensor(self.params[name])).all():
                raise ParameterError(f"parameter {name!r} is not finite: {self.params[name]}")
        p = {name: self._internal(name, v) for name, v in self.params.items()}
        a, b = p.pop("coupling.a"), p.pop("coupling.b")
        nsig = p.pop(NOISE_NSIG, None)
        if nsig is not None and (nsig < 0).any():
            raise ParameterError("parameter 'noise.nsig' must be >= 0 (it is a diffusion coefficient).")
        N, B, L = self.n_nodes, self.batch, self.coupling.horizon
        noise_scale = torch.sqrt(2.0 * nsig) if nsig is not None else None
        # history in place (ring buffer) unless autograd records a graph through it
        recording = torch.is_grad_enabled() and (
            self.state.requires_grad or any(v.requires_grad for v in self.params.values())
            or (self._flat is not None and self._flat.requires_grad))
        if recording:
            self._to_flat()
        else:
            self._to_ring()
        compiled = self._compiled_block
        packed = None
        if not self.exact:
            both = dict(p, **{"coupling.a": a, "coupling.b": b})
            packed = torch.stack(torch.broadcast_tensors(*(both[n] for n in self._packed_names)))

        results = [([], []) for _ in self.monitors]
        if recording and self.checkpoint:
            return self._run_checkpointed(n_steps, noise_scale, packed, results)
        pending: List[torch.Tensor] = []
        n_pending = 0
        first_pending = self.current_step + 1
        done = 0
        while done < n_steps:
            K = min(self.block, n_steps - done)
            normal = self.noise.draw(K) if self.stochastic else None
            ring = self._ring
            if not recording:
                ring.make_room(K)
            if self.exact:
                window = self._flat if recording else ring.window()                  # (L, N, B), oldest first
                far = self.coupling.far_sums(window.reshape(-1), K).to(torch.float64)
                z = additive_increment(normal, self.dt, nsig) if normal is not None else None
                block_fn = compiled if (compiled is not None and K == self.block) else self._block
                states = block_fn(self.state, far, z, a, b, p)              # (K, nvar, N, B)
            elif recording:
                block_fn = self._graph_block(K)
                states = block_fn(self._flat.view(L * N, B), None, self.state, normal, noise_scale, packed)
            else:
                states = self._forward_block(ring, self.state, normal, noise_scale, packed, K)   # writes the ring
            self.state = states[-1]
            if recording:
                self._flat = torch.cat((self._flat[K:], states[:, 0].to(self._hist_dtype)))
            elif self.exact:
                ring.append(states[:, 0])
            pending.append(states)
            n_pending += K
            done += K
            self.current_step += K
            if n_pending >= self._chunk or done == n_steps:
                self._feed_monitors(torch.cat(pending) if len(pending) > 1 else pending[0], first_pending, results)
                pending = []
                n_pending = 0
                first_pending = self.current_step + 1
        return [self._tvb_layout(ts, xs) for ts, xs in results]

    def _feed_monitors(self, states: torch.Tensor, first_step: int, results) -> None:
        obs = states if self._voi is None else states.index_select(1, self._voi)
        for mon, (ts, xs) in zip(self.monitors, results):
            t, x = mon.consume(obs, first_step)
            ts.append(t)
            xs.append(x)

    def _run_checkpointed(self, n_steps: int, noise_scale, packed, results) -> Output:
        """``run`` while autograd records, as a chain of ``_CheckpointedRun``s (see there) of about
        ``_GROUP_STEPS`` steps each; same blocks, same draws.

        One autograd node per group, not per run: the backward then meets the trajectory gradient one group at
        a time (autograd calls the groups' backwards last first, each as soon as its monitors' gradients are
        in), so that the gradient of the whole trajectory never exists at once, and each group's far-sum
        gradient buffer is group-sized. The price is one history window (``horizon`` steps of the coupling
        variable) kept per group besides the trajectory.
        """
        blocks, done = [], 0
        while done < n_steps:
            K = min(self.block, n_steps - done)
            blocks.append(K)
            done += K
        group = self._group_steps
        var_idx = tuple(i for i, name in enumerate(self._packed_names) if self.params[name].requires_grad)
        first, i = self.current_step + 1, 0
        while i < len(blocks):
            j, steps = i, 0
            while j < len(blocks) and steps < group:
                steps += blocks[j]
                j += 1
            traj, self._flat = _CheckpointedRun.apply(self, tuple(blocks[i:j]), var_idx, self.state, self._flat,
                                                      noise_scale, packed)
            self.state = traj[-1]
            # split, not slices: one SplitBackward assembles the gradient of traj once, where each slice's
            # SliceBackward would allocate (and accumulate) a zero-filled tensor of the group's size
            for c, part in zip(range(0, steps, self._chunk), traj.split(self._chunk)):
                self._feed_monitors(part, first + c, results)
            first += steps
            i = j
        self.current_step += n_steps
        return [self._tvb_layout(ts, xs) for ts, xs in results]

    def _unpack(self, packed: torch.Tensor):
        p = {name: packed[i] for i, name in enumerate(self._packed_names)}
        return p.pop("coupling.a"), p.pop("coupling.b"), p

    def _new_ring(self) -> HistoryRing:
        return HistoryRing(self.coupling.horizon, self.n_nodes, self.batch, self.block, self._hist_dtype,
                           self.device, node_major=not self.exact)

    def _forward_block(self, ring: HistoryRing, X, normal, noise_scale, packed, K: int) -> torch.Tensor:
        """One block without recording a graph on the node-major ``ring`` (the run loop's and the checkpointed
        forward's; ``make_room(K)`` first): the compiled block for full blocks, else the same function eagerly;
        the block's coupling variable is written into the ring, which is advanced by K."""
        X, normal, noise_scale, packed = _detached((X, normal, noise_scale, packed))
        with torch.no_grad():
            if self._compiled_block is not None and K == self.block:
                states = self._compiled_block(ring.flat, ring.offset_tensor, X, normal, noise_scale, packed)
            else:
                a, b, p = self._unpack(packed)
                src, w = self.coupling.node_major_plan(ring.length)
                if K not in self._write_positions:
                    self._write_positions[K] = HistoryRing.write_positions(ring.horizon, self.n_nodes, self.batch,
                                                                           ring.length, K, self.device)
                write = self._write_positions[K]
                states = ring_block(ring.flat, ring.offset_tensor, X, normal, noise_scale, a, b, p, src=src, w=w,
                                    write=write, K=K, B=self.batch, dt=self.dt, **self._step_kw)
        ring.advance(K)
        return states

    def _graph_block(self, K: int):
        """The block while autograd records without checkpointing, from the time-major graph history: called
        as ``fn(history (horizon * N, B), None, X, normal, noise_scale, packed)``; compiled for full blocks
        when ``compile=True`` (a variant of its own, built on first use)."""
        rows, w = self.coupling.padded_plan(K)
        kw = dict(names=self._packed_names, block_fn=fused_block, rows=rows, w=w, dt=self.dt, **self._step_kw)
        if self.compiled and K == self.block:
            if self._compiled_graph_block is None:
                self._compiled_graph_block = _CompiledOrEager(functools.partial(packed_block, unrolled=True, **kw),
                                                              self._compile_options)
            return self._compiled_graph_block
        return functools.partial(packed_block, **kw)

    def _vjp_fn(self, K: int, var_idx: Tuple[int, ...], scale_grad: bool):
        """``block_vjp`` for chunks of K steps differentiating the parameters ``var_idx`` (and the noise scale if
        ``scale_grad``), pulling the history gradient from later steps (``coupling.pull_plan``): called as
        ``fn(window (horizon * N, B), X, normal, noise_scale, packed_var, packed_const, grad_states, grad_rows,
        grad_next, grad_far_later ((K + horizon) * N, B))`` under no_grad. Compiled (once per parameter set)
        for chunks of ``_bwd_block`` steps when ``compile=True``; eager otherwise."""
        names = self._packed_names
        kw = dict(var_names=tuple(names[i] for i in var_idx),
                  const_names=tuple(n for i, n in enumerate(names) if i not in var_idx),
                  scale_grad=scale_grad, dt=self.dt, **self._step_kw)
        rows, w = self.coupling.padded_plan(K)
        pull_rows, pull_w = self.coupling.pull_plan(K)
        plans = dict(rows=rows, w=w, pull_rows=pull_rows, pull_w=pull_w.to(self.dtype))
        if self.compiled and K == self._bwd_block:
            key = (var_idx, scale_grad)
            if key not in self._compiled_vjps:
                self._compiled_vjps[key] = _CompiledOrEager(
                    functools.partial(block_vjp, **plans, **kw), self._compile_options)
            return _no_grad(self._compiled_vjps[key])
        return _no_grad(functools.partial(block_vjp, unrolled=False, **plans, **kw))

    def _to_ring(self) -> None:
        """Move the history into the in-place buffer (no autograd graph through it)."""
        if self._flat is None:
            return
        if self._ring is None:
            self._ring = self._new_ring()
        self._ring.load(self._flat.detach())
        self._flat = None

    def _to_flat(self) -> None:
        """Move the history out of the buffer into a tensor that autograd can follow."""
        if self._flat is None:
            self._flat = self._ring.window().clone(memory_format=torch.contiguous_format)

    @property
    def history(self) -> torch.Tensor:
        """The delay history, time-ordered and flat: ``history[t * N * B + j * B + b]`` is the coupling variable
        of node j, batch member b, t-th of the last ``horizon`` steps (oldest first). Possibly a view of an
        internal buffer that later runs overwrite: clone it to keep it."""
        if self._flat is not None:
            return self._flat.reshape(-1)
        return self._ring.window().reshape(-1)

    @history.setter
    def history(self, value: torch.Tensor) -> None:
        self._flat = value.reshape(self.coupling.horizon, self.n_nodes, self.batch)

    def _tvb_layout(self, ts, xs) -> Tuple[torch.Tensor, torch.Tensor]:
        times = torch.cat(ts) if ts else torch.zeros(0, dtype=torch.float64)
        data = torch.cat(xs)                                             # (T, voi, N, B)
        if self.batch == 1:
            return times, data                                           # B sits where TVB has modes
        return times, data.permute(3, 0, 1, 2).unsqueeze(-1)

    # ------------------------------------------------------------------ state
    @property
    def current_state(self) -> torch.Tensor:
        """The state as TVB holds it: (nvar, N, 1), or (B, nvar, N, 1) when batch > 1."""
        return self.state if self.batch == 1 else self.state.permute(2, 0, 1).unsqueeze(-1)

    def detach_(self) -> "TorchSimulator":
        """Cut the autograd graph at the present step (state, history, monitor buffers)."""
        self.state = self.state.detach()
        if self._flat is not None:           # the in-place buffer never carries a graph
            self._flat = self._flat.detach()
        for mon in self.monitors:
            mon.detach_()
        return self

    def state_dict(self) -> Dict:
        """Everything a later ``run`` depends on besides ``params`` (detached copies): for checkpoints."""
        mons = [{k: v.detach().clone() if torch.is_tensor(v) else v
                 for k, v in ((k, getattr(m, k)) for k in ("partial", "stock", "last_block") if hasattr(m, k))}
                for m in self.monitors]
        return {"current_step": self.current_step, "state": self.state.detach().clone(),
                "history": self.history.detach().clone(), "monitors": mons,
                "noise": self.noise.state_dict() if self.noise is not None else None}

    def load_state_dict(self, state: Dict) -> "TorchSimulator":
        """Restore what ``state_dict`` returned (same simulator layout: nodes, batch, monitors)."""
        if tuple(state["state"].shape) != tuple(self.state.shape) or len(state["monitors"]) != len(self.monitors):
            raise ValueError(f"state_dict of shape {tuple(state['state'].shape)} with {len(state['monitors'])} "
                             f"monitors does not fit this simulator {tuple(self.state.shape)} / {len(self.monitors)}.")
        self.current_step = int(state["current_step"])
        self.state = state["state"].to(self.device, self.dtype).clone()
        self.history = state["history"].to(self.device).clone()
        for mon, saved in zip(self.monitors, state["monitors"]):
            for k, v in saved.items():
                setattr(mon, k, v.clone() if torch.is_tensor(v) else v)
        if self.noise is not None:
            self.noise.load_state_dict(state["noise"])
        return self

    def __repr__(self) -> str:
        return (f"TorchSimulator({self.model.tvb_class.__name__}, {self.spec.scheme}, N={self.n_nodes}, "
                f"dt={self.dt} ms, batch={self.batch}, dtype={self.dtype}, exact={self.exact}, "
                f"noise={self.noise_source if self.stochastic else None}, step={self.current_step})")
