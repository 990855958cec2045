"""How the gradient of a checkpointed run is taken: ``CheckpointedRun``, a whole group of blocks as one
``torch.autograd.Function`` with a hand-written, recomputing backward.

The forward integrates without recording a graph; the backward recomputes the run chunk by chunk, last first,
and differentiates each chunk with ``blocks.block_vjp``. Its knobs are ``CheckpointOptions``; the blocks it
runs and differentiates come from the ``stepper`` it is given (``paths.CheckpointedPath``).
"""
import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from .coupling import gather_far


@dataclass(frozen=True)
class CheckpointOptions:
    """Sizes of a checkpointed run (``TorchSimulator(..., checkpoint=CheckpointOptions(...))``).

    * ``backward_block``: steps per (compiled) call of the backward, at most the forward block. Compile time
      and code size grow with it, the per-step cost falls slowly (measured, f64 batch 1: 46/31/25/21 us per
      step at 1/2/4/8; a 17-step chunk made g++ 12 crash with an internal compiler error).
    * ``segment_steps``: steps of noise redrawn at once by the backward (from a snapshot of the stream).
    * ``group_steps``: steps per autograd node; None: ``DEFAULT_GROUP_STEPS``, raised to 4 horizons (each
      node keeps a history window of its own besides the trajectory).
    * ``keep_bytes`` (the block kernel's ``KernelRun``): most bytes of trajectories, coupling sums and noise draws
      one run keeps for its backward; groups beyond it keep only their start (state, history window, noise
      stream) and are integrated again in the backward, so that memory is bounded by this and the group
      length, not by the run's length.
    """
    backward_block: int = 4
    segment_steps: int = 1024
    group_steps: Optional[int] = None
    keep_bytes: int = 512 * 2 ** 20

    def group_length(self, horizon: int) -> int:
        """Steps per autograd node for a history of ``horizon`` steps."""
        return self.group_steps if self.group_steps is not None else max(DEFAULT_GROUP_STEPS, 4 * horizon)


DEFAULT_GROUP_STEPS = 4096


def segment_blocks(block: int, backward_block: int, segment_steps: int) -> int:
    """Blocks per noise-replay segment of the checkpointed backward: about ``segment_steps`` steps, and a
    multiple of ``backward_block`` steps when its blocks are full (so that only the run's last segment, holding
    a shorter block, can need a chunk shorter than ``backward_block``)."""
    unit = backward_block // math.gcd(block, backward_block)
    return unit * max(1, segment_steps // (block * unit))


def detached(args: Tuple) -> Tuple:
    """The arguments with tensors detached: a compiled call guards on ``requires_grad``, and inside a checkpointed
    run's forward and backward the same tensors arrive requiring grad or not (first group or later, start state or
    trajectory), which would compile the same graph again for each combination."""
    return tuple(a.detach() if torch.is_tensor(a) else a for a in args)


def without_grad(fn: Callable) -> Callable:
    """``fn`` called under ``torch.no_grad`` on ``detached`` arguments."""
    def call(*args):
        with torch.no_grad():
            return fn(*detached(args))
    return call


def backward_chunks(blocks: Sequence[int], seg: int, backward_block: int):
    """The checkpointed backward's partition of a run of ``blocks``, in the order it runs: for each noise-replay
    segment of ``seg`` blocks (last first), its first block's index, its first step and its chunks
    ``(start step, length)`` of ``backward_block`` steps taken from the segment's end (a shorter first one if
    the segment's length is no multiple of it)."""
    starts = np.concatenate(([0], np.cumsum(blocks)))                     # step of each block's start
    for j in reversed(range(0, len(blocks), seg)):
        seg_start, s = int(starts[j]), int(starts[min(j + seg, len(blocks))])
        chunks = []
        while s > seg_start:
            K = min(backward_block, s - seg_start)
            s -= K
            chunks.append((s, K))
        yield j, seg_start, chunks


def handed_on_rows(zero: torch.Tensor, g_hist: Optional[torch.Tensor], s: int, T: int) -> torch.Tensor:
    """The gradient arriving directly on the rows a chunk of ``zero.shape[0]`` steps from step ``s`` wrote into
    the history a run of T steps hands on (its last L = ``g_hist.shape[0]`` steps, T - L .. T - 1): (K, N, B),
    ``zero`` itself where the chunk wrote none of them."""
    K = zero.shape[0]
    if g_hist is None or s + K <= T - g_hist.shape[0]:
        return zero
    first = T - g_hist.shape[0]
    lo = max(s, first)
    rows = zero.clone()
    rows[lo - s:] = g_hist[lo - first:s + K - first]
    return rows


class CheckpointedRun(torch.autograd.Function):
    """A group of blocks under autograd, differentiated block by block with recomputation.

    ``apply(stepper, blocks, var_idx, X0, hist0, noise_scale, packed) -> (trajectory, history)``; ``stepper``
    provides ``block``, ``backward_block``, ``segment_blocks``, ``noise`` (or None), ``coupling``,
    ``new_ring()``, ``forward_block(ring, X, normal, noise_scale, packed, K)`` and
    ``vjp_fn(K, var_idx, scale_grad)`` (``paths.CheckpointedPath``).

    Forward: every block is integrated without recording a graph (the compiled no-grad block, reading an
    in-place ``HistoryRing``), and each step's coupling variable is also written to an append-only time-major
    buffer holding the start history then the run's steps (the backward's history windows); kept for the
    backward are the block inputs only: the start state and history, the parameters, the state trajectory
    (no per-step intermediates) and snapshots of the noise stream every ``segment_steps`` steps or so, from
    which the backward redraws the noise segment by segment (not the draws themselves). Backward: chunks of
    ``backward_block`` steps in reverse order (any partition works, since the trajectory holds every step's
    start state), each recomputed and differentiated by one compiled call (``blocks.block_vjp``, with respect
    to the parameters ``var_idx`` of ``packed`` only: those that require grad); gradients with respect to the
    history rows a chunk read are accumulated in a buffer of the same layout and handed to the chunks that
    wrote those rows. Memory: O(steps * nvar * N * B), independent of the model's intermediates.
    """

    @staticmethod
    def forward(ctx, stepper, blocks, var_idx, X0, hist0, noise_scale, packed):
        L, N, B = hist0.shape
        T = sum(blocks)
        buf = hist0.new_empty((L + T, N, B))
        buf[:L] = hist0
        traj = X0.new_empty((T,) + tuple(X0.shape))
        # the noise is drawn here, block by block as ``run`` does, and not kept: the backward replays it per
        # segment of ``seg`` blocks from a snapshot of the stream taken at the segment's start (saves a
        # (steps, nvar, N, B) tensor); a segment spans a multiple of the backward chunk when blocks are full
        seg = stepper.segment_blocks
        snapshots = []
        ring = stepper.new_ring()              # the forward reads the history from the in-place buffer
        ring.load(hist0)
        X, s = X0, 0
        for i, K in enumerate(blocks):
            normal = None
            if stepper.noise is not None:
                if i % seg == 0:
                    snapshots.append(stepper.noise.state_dict())
                normal = stepper.noise.draw(K)
            ring.make_room(K)
            states = stepper.forward_block(ring, X, normal, noise_scale, packed, K)   # writes the ring, advances it
            traj[s:s + K] = states
            buf[L + s:L + s + K] = states[:, 0]
            X, s = states[-1], s + K
        ctx.stepper, ctx.blocks, ctx.var_idx, ctx.seg, ctx.snapshots = stepper, blocks, var_idx, seg, snapshots
        ctx.save_for_backward(X0, noise_scale, packed, traj, buf)   # buf is never written again
        return traj, buf[T:]

    @staticmethod
    def backward(ctx, g_traj, g_hist):
        stepper, var_idx, blocks, seg = ctx.stepper, ctx.var_idx, ctx.blocks, ctx.seg
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
        replay = copy.deepcopy(stepper.noise) if stepper.noise is not None else None   # the stream left alone
        fns, zero_rows = {}, {}                   # by chunk length: vjp function, zero history-gradient rows
        for j, seg_start, chunks in backward_chunks(blocks, seg, stepper.backward_block):
            normals = None
            if replay is not None:
                replay.load_state_dict(ctx.snapshots[j // seg])
                normals = torch.cat([replay.draw(K) for K in blocks[j:j + seg]])
            for s, K in chunks:
                if K not in fns:
                    fns[K] = stepper.vjp_fn(K, var_idx, scale_grad)
                    zero_rows[K] = buf.new_zeros((K, N, B))
                g_far, gX, g_sc, g_p = fns[K](
                    buf[s:s + L].view(L * N, B), X0 if s == 0 else traj[s - 1],
                    None if normals is None else normals[s - seg_start:s - seg_start + K],
                    scale, packed_var, packed_const, g_traj[s:s + K], handed_on_rows(zero_rows[K], g_hist, s, T),
                    gX, gfar[L + s:L + s + K + L].view((K + L) * N, B))
                gfar[L + s:L + s + K] = g_far
                if g_pv is not None:
                    g_pv += g_p
                if g_scale is not None:
                    g_scale += g_sc
        g_hist0 = None
        if ctx.needs_input_grad[4]:               # the start history: its rows are the "steps" -L .. -1
            pull_rows, pull_w = stepper.coupling.pull_plan(L)
            g_hist0 = gather_far(gfar[:2 * L].reshape(2 * L * N, B), pull_rows, pull_w.to(gfar.dtype))
            if g_hist is not None and T < L:      # history rows handed on unchanged
                g_hist0[T:] += g_hist[:L - T]
        g_packed = None
        if g_pv is not None:
            g_packed = packed.new_zeros(packed.shape)
            g_packed[list(var_idx)] = g_pv.sum_to_size((len(var_idx),) + tuple(packed.shape[1:]))
        return (None, None, None, gX, g_hist0,
                g_scale.sum_to_size(noise_scale.shape) if g_scale is not None else None, g_packed)


class KernelRun(torch.autograd.Function):
    """A group of T steps of the block kernel (``kernels.BlockKernel``) under autograd, with its hand-written
    adjoint.

    ``apply(stepper, T, keep, X0, hist0, noise_scale, packed[, varying, recorded]) -> (trajectory (T, V, N, B),
    history (L, N, B))``; ``varying`` / ``recorded`` (``BlockParams``; default: every parameter) say which packed
    parameters the kernel reads per element and which it differentiates;
    ``stepper`` provides ``kernel``, ``noise`` (or None) and ``block`` (the noise is drawn block by block, as
    every path draws it: ``noise.TorchStream.draw_blocks``). Forward: the kernel without a graph; kept for
    the backward are the start (state, history window, parameters, a snapshot of the noise stream) and, if
    ``keep``, the trajectory, the coupling sums and the draws. Backward: if they were not kept, the group is
    integrated again from its start (same draws, replayed from the snapshot, same values); then
    ``kernels.BlockKernel.adjoint`` gives the gradients of the start state, the history window, the
    parameters (``packed``: the twin's ``BlockParams.packed``) and the noise scale.
    """

    @staticmethod
    def forward(ctx, stepper, T, keep, X0, hist0, noise_scale, packed, varying=None, recorded=None):
        kernel, noise = stepper.kernel, stepper.noise
        L, N, B = hist0.shape
        V = X0.shape[0]
        ctx.snapshot = noise.state_dict() if noise is not None else None
        normal = noise.draw_blocks(T, stepper.block) if noise is not None else None
        prm = kernel.params(packed, N, B, varying)
        traj, window, gxs = kernel.forward(hist0, X0, normal, kernel.scale(noise_scale, V, N, B), prm, T)
        ctx.stepper, ctx.T, ctx.varying, ctx.recorded = stepper, T, varying, recorded
        ctx.kept = (gxs, normal) if keep else None
        ctx.save_for_backward(X0, hist0, noise_scale, packed, traj if keep else None)
        return traj, window.contiguous()

    @staticmethod
    def backward(ctx, g_traj, g_hist):
        stepper, T = ctx.stepper, ctx.T
        kernel = stepper.kernel
        X0, hist0, noise_scale, packed, traj = ctx.saved_tensors
        L, N, B = hist0.shape
        V = X0.shape[0]
        prm = kernel.params(packed, N, B, ctx.varying)
        scale = kernel.scale(noise_scale, V, N, B)
        if ctx.kept is not None:
            gxs, normal = ctx.kept
        else:                                      # integrate the group again from its start
            normal = None
            if ctx.snapshot is not None:
                replay = copy.deepcopy(stepper.noise)
                replay.load_state_dict(ctx.snapshot)
                normal = replay.draw_blocks(T, stepper.block)
            traj, _, gxs = kernel.forward(hist0, X0, normal, scale, prm, T)
        if g_traj is None:
            g_traj = torch.zeros_like(traj)
        if g_hist is None:
            g_hist = hist0.new_zeros((L, N, B))
        want_params, want_scale = ctx.needs_input_grad[6], ctx.needs_input_grad[5]
        grad = (ctx.recorded if ctx.recorded is not None else (True,) * packed.shape[0]) if want_params else None
        g_X0, g_hist0, g_prm, g_scale = kernel.adjoint(L, X0, traj, gxs, normal, scale, prm, g_traj, g_hist,
                                                       grad, want_scale)
        g_packed = None
        if want_params:
            full = packed.new_zeros((packed.shape[0], N, B))
            full[kernel.order] = g_prm.to(packed.dtype)
            g_packed = full.sum_to_size(packed.shape)
        g_sc = g_scale.sum_to_size(noise_scale.shape) if want_scale else None
        return (None, None, None, g_X0 if ctx.needs_input_grad[3] else None,
                g_hist0 if ctx.needs_input_grad[4] else None, g_sc, g_packed, None, None)
