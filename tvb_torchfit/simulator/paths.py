"""How a run is stepped: the twin's run paths, as objects chosen once per ``run``.

Every path integrates ``n_steps`` steps from the twin's ``state`` in blocks of at most ``block`` steps (the
noise of a block drawn at once, in TVB's order), keeps the delay history (``history.DelayHistory``) up to
date, hands the states to a ``monitors.Recording`` (what is saved) and advances ``state`` and
``current_step``. They differ in where the history lives and in how the gradient is taken:

* ``RingPath`` (default mode, no graph recorded): the history written in place in a node-major
  ``HistoryRing``; each full block one compiled call (``blocks.packed_block`` over ``blocks.ring_block``).
* ``GraphPath`` (default mode, autograd records, ``checkpoint=False``): a time-major history tensor rebuilt
  per block, through which autograd follows every step (``blocks.fused_block``).
* ``CheckpointedPath`` (default mode, autograd records, ``checkpoint=True``): the ring path's blocks inside
  ``adjoint.CheckpointedRun``, which recomputes them in the backward.
* ``KernelPath`` / ``KernelCheckpointedPath`` (default mode on CPU where numba is present): runs of many
  steps per call of the numba block kernel (``kernels.BlockKernel``), without a graph, or, while autograd
  records, as a chain of ``adjoint.KernelRun``s with the kernel's own adjoint (memory bounded by
  ``CheckpointOptions.keep_bytes`` and the group length).
* ``ExactPath`` (``exact=True``): TVB's float32 history and numpy-order float32 coupling sums
  (``DelayedLinearCoupling.far_sums``) outside the compiled steps; in place or as a graph tensor.

``build_paths`` makes the pair a twin needs (``Paths.free``, ``Paths.graph``); ``Paths.choose`` picks one.
"""
import functools
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch

from .adjoint import CheckpointedRun, CheckpointOptions, KernelRun, detached, segment_blocks, without_grad
from .blocks import Dynamics, Params, block_vjp, fused_block, integrate_block, packed_block
from .compiled import CompiledOrEager
from .coupling import DelayedLinearCoupling
from .history import DelayHistory, HistoryRing
from .monitors import Recording, chunk_steps
from .noise import ChunkDraws, additive_increment


@dataclass
class BlockParams:
    """One run's parameters in the internal layout (``registry.to_internal``): the model's (by name), the
    coupling's (in its port's order), nsig and the noise scale sqrt(2 nsig) (None when deterministic), and,
    in the default mode, model and coupling parameters stacked in one tensor (``packed[i]`` is
    ``TorchSimulator.packed_names[i]``, all broadcast to one shape), with, per packed parameter, whether it was
    given per node or batch member (``varying``) and whether autograd records it (``requires_grad``): the block
    kernel reads the others once per call and differentiates only those recorded."""
    model: Params
    coupling: Tuple[torch.Tensor, ...]
    nsig: Optional[torch.Tensor]
    noise_scale: Optional[torch.Tensor]
    packed: Optional[torch.Tensor]
    varying: Optional[Tuple[bool, ...]] = None
    requires_grad: Optional[Tuple[bool, ...]] = None


class BlockLoop:
    """The loop shared by the paths that step block by block: draw the block's noise, ``step_block``,
    hand the states on. Subclasses say where the history is (``begin``) and how a block is stepped."""

    def __init__(self, history: DelayHistory, coupling: DelayedLinearCoupling, dynamics: Dynamics, block: int,
                 noise):
        self.history, self.coupling, self.dynamics = history, coupling, dynamics
        self.block, self.noise = int(block), noise

    def begin(self) -> None:
        """Put the history into the form this path reads (once per run)."""

    def step_block(self, X: torch.Tensor, normal: Optional[torch.Tensor], params: BlockParams,
                   K: int) -> torch.Tensor:
        """K steps from X (nvar, N, B) with the draws ``normal`` (K, nvar, N, B) or None. Returns the K new
        states (K, nvar, N, B)."""
        raise NotImplementedError

    def push_history(self, states: torch.Tensor) -> None:
        """Take the block's coupling variable ``states[:, 0]`` into the history, unless ``step_block`` did."""

    def run(self, sim, n_steps: int, params: BlockParams, recording: Recording) -> None:
        """``n_steps`` steps from ``sim.state``, advancing ``sim.state`` and ``sim.current_step`` per block."""
        self.begin()
        done = 0
        while done < n_steps:
            K = min(self.block, n_steps - done)
            normal = self.noise.draw(K) if self.noise is not None else None
            states = self.step_block(sim.state, normal, params, K)
            sim.state = states[-1]
            self.push_history(states)           # after the state: autograd then sums gradients in a fixed order
            sim.current_step += K
            done += K
            recording.add(states)


class RingPath(BlockLoop):
    """Default mode without a graph: blocks on the node-major in-place history (``blocks.ring_block``).

    ``compiled_block`` (a ``CompiledOrEager``, or None without ``compile=True``) is called as
    ``compiled_block(ring.flat, ring.offset_tensor, X, normal, noise_scale, packed)`` for full blocks;
    ``forward_block`` is one block with its detaching, no_grad and ring bookkeeping (the seam the checkpointed
    run and ``benchmarks/profile_block.py`` use).
    """

    def __init__(self, history, coupling, dynamics, block, noise, names: Tuple[str, ...],
                 compile_options: Optional[Dict] = None, compile: bool = False):
        super().__init__(history, coupling, dynamics, block, noise)
        self.names = names
        self.ring_length = HistoryRing.steps_held(history.horizon, block)
        self._write_positions: Dict[int, torch.Tensor] = {}          # by block length (a last, shorter block)
        self.compiled_block = None
        if compile:
            fused = functools.partial(self._block_fn(self.block), unrolled=True)
            self.compiled_block = CompiledOrEager(fused, compile_options)

    def _block_fn(self, K: int):
        """``packed_block`` over ``ring_block`` for blocks of K steps (plans bound)."""
        src, w = self.coupling.node_major_plan(self.ring_length)
        if K not in self._write_positions:
            self._write_positions[K] = HistoryRing.write_positions(
                self.history.horizon, self.history.n_nodes, self.history.batch, self.ring_length, K,
                self.history.device)
        return functools.partial(packed_block, names=self.names, coupling_names=self.dynamics.coupling_names,
                                 src=src, w=w, write=self._write_positions[K], K=K, B=self.history.batch,
                                 **self.dynamics.step_kw())

    def begin(self) -> None:
        self.ring = self.history.as_ring()

    def step_block(self, X, normal, params, K):
        self.ring.make_room(K)
        return self.forward_block(self.ring, X, normal, params.noise_scale, params.packed, K)

    def forward_block(self, ring: HistoryRing, X: torch.Tensor, normal: Optional[torch.Tensor],
                      noise_scale: Optional[torch.Tensor], packed: torch.Tensor, K: int) -> torch.Tensor:
        """One block without recording a graph on the node-major ``ring`` (``make_room(K)`` first): the compiled
        block for full blocks, else the same function eagerly; the block's coupling variable is written into
        the ring, which is advanced by K."""
        X, normal, noise_scale, packed = detached((X, normal, noise_scale, packed))
        with torch.no_grad():
            if self.compiled_block is not None and K == self.block:
                states = self.compiled_block(ring.flat, ring.offset_tensor, X, normal, noise_scale, packed)
            else:
                states = self._block_fn(K)(ring.flat, ring.offset_tensor, X, normal, noise_scale, packed)
        ring.advance(K)
        return states


class GraphPath(BlockLoop):
    """Default mode while autograd records, without checkpointing: each block reads the time-major graph
    history (``blocks.fused_block``) and the history is rebuilt by concatenation, so that autograd follows
    every step. Compiled for full blocks with ``compile=True`` (``compiled_block``, built on first use)."""

    def __init__(self, history, coupling, dynamics, block, noise, names: Tuple[str, ...],
                 compile_options: Optional[Dict] = None, compile: bool = False):
        super().__init__(history, coupling, dynamics, block, noise)
        self.names, self.compile, self.compile_options = names, compile, compile_options
        self.compiled_block: Optional[CompiledOrEager] = None

    def block_fn(self, K: int):
        """The block of K steps, called as ``fn(history (horizon * N, B), None, X, normal, noise_scale, packed)``."""
        rows, w = self.coupling.padded_plan(K)
        kw = dict(names=self.names, coupling_names=self.dynamics.coupling_names, block_fn=fused_block,
                  rows=rows, w=w, **self.dynamics.step_kw())
        if self.compile and K == self.block:
            if self.compiled_block is None:
                self.compiled_block = CompiledOrEager(functools.partial(packed_block, unrolled=True, **kw),
                                                      self.compile_options)
            return self.compiled_block
        return functools.partial(packed_block, **kw)

    def begin(self) -> None:
        self.history.as_graph()

    def step_block(self, X, normal, params, K):
        h = self.history
        return self.block_fn(K)(h.graph.view(h.horizon * h.n_nodes, h.batch), None, X, normal,
                                params.noise_scale, params.packed)

    def push_history(self, states):
        self.history.push(states[:, 0])


class ExactPath(BlockLoop):
    """TVB-exact mode: the far-edge sums in numpy's float32 order from the float32 history
    (``DelayedLinearCoupling.far_sums``), the increments ``noise.additive_increment`` (per block, as the exact
    mode always did: the gradient of nsig is then summed in the same order), then the steps
    (``blocks.integrate_block``, compiled for full blocks when ``compiled_block`` is given). ``graph``: the
    history as a graph tensor (autograd records) instead of the time-major in-place ring."""

    def __init__(self, history, coupling, dynamics, block, noise, graph: bool,
                 compiled_block: Optional[CompiledOrEager] = None):
        super().__init__(history, coupling, dynamics, block, noise)
        self.graph, self.compiled_block = bool(graph), compiled_block
        self.eager_block = functools.partial(integrate_block, **dynamics.step_kw())

    def begin(self) -> None:
        if self.graph:
            self.history.as_graph()
        else:
            self.ring = self.history.as_ring()

    def step_block(self, X, normal, params, K):
        if not self.graph:
            self.ring.make_room(K)
        window = self.history.window()                                      # (L, N, B), oldest first
        far = self.coupling.far_sums(window.reshape(-1), K).to(torch.float64)
        z = additive_increment(normal, self.dynamics.dt, params.nsig) if normal is not None else None
        fn = self.compiled_block if (self.compiled_block is not None and K == self.block) else self.eager_block
        return fn(X, far, z, params.coupling, params.model)                 # (K, nvar, N, B)

    def push_history(self, states):
        if self.graph:
            self.history.push(states[:, 0])
        else:
            self.ring.append(states[:, 0])


class CheckpointedPath:
    """Default mode while autograd records, with checkpointing: the run as a chain of
    ``adjoint.CheckpointedRun``s of about ``group_steps`` steps each, running the ring path's blocks
    (``RingPath.forward_block``); same blocks, same draws.

    One autograd node per group, not per run: the backward then meets the trajectory gradient one group at
    a time (autograd calls the groups' backwards last first, each as soon as its monitors' gradients are
    in), so that the gradient of the whole trajectory never exists at once, and each group's far-sum
    gradient buffer is group-sized. The price is one history window (``horizon`` steps of the coupling
    variable) kept per group besides the trajectory. ``compiled_vjps``: the compiled backward chunks, by
    (differentiated parameters, noise scale differentiated).
    """

    def __init__(self, ring_path: RingPath, options: CheckpointOptions = CheckpointOptions(),
                 compile_options: Optional[Dict] = None, compile: bool = False):
        self.ring_path = ring_path
        self.history, self.coupling, self.dynamics = ring_path.history, ring_path.coupling, ring_path.dynamics
        self.block, self.noise, self.names = ring_path.block, ring_path.noise, ring_path.names
        self.options = options
        self.backward_block = min(self.block, options.backward_block)
        self.segment_blocks = segment_blocks(self.block, self.backward_block, options.segment_steps)
        self.group_steps = options.group_length(self.history.horizon)
        self.compile, self.compile_options = compile, compile_options
        self.compiled_vjps: Dict[Tuple, CompiledOrEager] = {}

    def new_ring(self) -> HistoryRing:
        """An empty node-major ring of the twin's sizes (the forward of each group reads its own)."""
        h = self.history
        return HistoryRing(h.horizon, h.n_nodes, h.batch, self.block, h.dtype, h.device, node_major=True)

    def forward_block(self, ring, X, normal, noise_scale, packed, K) -> torch.Tensor:
        """``RingPath.forward_block``."""
        return self.ring_path.forward_block(ring, X, normal, noise_scale, packed, K)

    def vjp_fn(self, K: int, var_idx: Tuple[int, ...], scale_grad: bool):
        """``blocks.block_vjp`` for chunks of K steps differentiating the parameters ``var_idx`` (and the noise
        scale if ``scale_grad``), pulling the history gradient from later steps (``coupling.pull_plan``): called
        as ``fn(window (horizon * N, B), X, normal, noise_scale, packed_var, packed_const, grad_states,
        grad_rows, grad_next, grad_far_later ((K + horizon) * N, B))`` under no_grad. Compiled (once per
        parameter set) for chunks of ``backward_block`` steps when ``compile=True``; eager otherwise."""
        names = self.names
        kw = dict(var_names=tuple(names[i] for i in var_idx),
                  const_names=tuple(n for i, n in enumerate(names) if i not in var_idx),
                  coupling_names=self.dynamics.coupling_names, scale_grad=scale_grad, **self.dynamics.step_kw())
        rows, w = self.coupling.padded_plan(K)
        pull_rows, pull_w = self.coupling.pull_plan(K)
        plans = dict(rows=rows, w=w, pull_rows=pull_rows, pull_w=pull_w.to(self.history.dtype))
        if self.compile and K == self.backward_block:
            key = (var_idx, scale_grad)
            if key not in self.compiled_vjps:
                self.compiled_vjps[key] = CompiledOrEager(functools.partial(block_vjp, **plans, **kw),
                                                          self.compile_options)
            return without_grad(self.compiled_vjps[key])
        return without_grad(functools.partial(block_vjp, unrolled=False, **plans, **kw))

    def run(self, sim, n_steps: int, params: BlockParams, recording: Recording) -> None:
        """``n_steps`` steps from ``sim.state`` (parameters requiring grad in ``sim.params`` differentiated)."""
        blocks, done = [], 0
        while done < n_steps:
            K = min(self.block, n_steps - done)
            blocks.append(K)
            done += K
        var_idx = tuple(i for i, name in enumerate(self.names) if sim.params[name].requires_grad)
        self.history.as_graph()
        i = 0
        while i < len(blocks):
            j, steps = i, 0
            while j < len(blocks) and steps < self.group_steps:
                steps += blocks[j]
                j += 1
            traj, self.history.graph = CheckpointedRun.apply(self, tuple(blocks[i:j]), var_idx, sim.state,
                                                             self.history.graph, params.noise_scale, params.packed)
            sim.state = traj[-1]
            sim.current_step += steps
            recording.add_trajectory(traj)
            i = j


class KernelPath(BlockLoop):
    """Default mode without a graph, on CPU with numba: chunks of about ``monitors.MONITOR_CHUNK`` steps (a
    multiple of ``block``) per call of the block kernel, the noise drawn block by block as every path draws it
    (the next chunk's on a second thread while the kernel steps this one: ``noise.ChunkDraws``);
    the history as a time-major tensor between chunks (``DelayHistory`` graph form, no graph)."""

    def __init__(self, history, coupling, dynamics, block, noise, kernel):
        super().__init__(history, coupling, dynamics, block, noise)
        self.kernel = kernel

    def chunk(self, values_per_step: int) -> int:
        """Steps per kernel call: ``monitors.chunk_steps`` rounded down to a multiple of ``block``."""
        return self.block * max(1, chunk_steps(self.block, values_per_step) // self.block)

    def run(self, sim, n_steps: int, params: BlockParams, recording: Recording) -> None:
        window = self.history.window()
        L, N, B = window.shape
        V = sim.state.shape[0]
        prm = self.kernel.params(params.packed, N, B, params.varying)
        scale = self.kernel.scale(params.noise_scale, V, N, B)
        chunk = self.chunk(V * N * B)
        sizes = [min(chunk, n_steps - done) for done in range(0, n_steps, chunk)]
        with ChunkDraws(self.noise, sizes, self.block) as draws:      # the next chunk's noise on a second core
            for T in sizes:
                traj, window, _ = self.kernel.forward(window, sim.state, draws.next(), scale, prm, T)
                sim.state = traj[-1]
                sim.current_step += T
                recording.add(traj)
        self.history.set(window.contiguous())


class KernelCheckpointedPath:
    """Default mode while autograd records, on CPU with numba: the run as a chain of ``adjoint.KernelRun``s of
    about ``group_steps`` steps (a multiple of ``block``), the first groups keeping their trajectories for the
    backward up to ``CheckpointOptions.keep_bytes``, the later ones only their start (integrated again in the
    backward). Memory: ``keep_bytes`` + one group + a start (state, history window) per group."""

    def __init__(self, history, block, noise, kernel, options: CheckpointOptions = CheckpointOptions()):
        self.history, self.block, self.noise, self.kernel, self.options = history, int(block), noise, kernel, options
        steps = options.group_length(history.horizon)
        self.group_steps = self.block * max(1, -(-steps // self.block))
        #: bytes kept by the last run's groups for their backward (``keep_bytes`` at most)
        self.kept_bytes = 0

    def group_bytes(self, T: int, V: int) -> int:
        """Bytes a group of T steps keeps when it keeps its trajectory: trajectory, draws, coupling sums."""
        h = self.history
        return T * (2 * V + 1) * h.n_nodes * h.batch * torch.empty((), dtype=h.dtype).element_size()

    def run(self, sim, n_steps: int, params: BlockParams, recording: Recording) -> None:
        hist = self.history.as_graph()
        budget, done, self.kept_bytes = self.options.keep_bytes, 0, 0
        V = sim.state.shape[0]
        while done < n_steps:
            T = min(self.group_steps, n_steps - done)
            size = self.group_bytes(T, V)
            keep = size <= budget              # a prefix of the groups: once one does not fit, none after it
            budget = budget - size if keep else -1
            if keep:
                self.kept_bytes += size
            traj, hist = KernelRun.apply(self, T, keep, sim.state, hist, params.noise_scale, params.packed,
                                         params.varying, params.requires_grad)
            sim.state = traj[-1]
            sim.current_step += T
            done += T
            recording.add_trajectory(traj)
        self.history.graph = hist


@dataclass
class Paths:
    """The two paths of a twin: ``free`` while no graph is recorded, ``graph`` while autograd records."""
    free: BlockLoop
    graph: Union[BlockLoop, "CheckpointedPath"]

    def choose(self, recording: bool):
        """The path of a run: ``graph`` if autograd records one, else ``free``."""
        return self.graph if recording else self.free

    def compiled_calls(self) -> Dict[str, CompiledOrEager]:
        """Every compiled call built so far, by a short name (to check for eager fallbacks: ``.error``)."""
        calls = {}
        for role, path in (("forward", self.free), ("graph", self.graph)):
            if getattr(path, "compiled_block", None) is not None:
                calls[f"{role} block"] = path.compiled_block
        for key, fn in getattr(self.graph, "compiled_vjps", {}).items():
            calls[f"backward chunk {key}"] = fn
        return calls


def build_paths(history: DelayHistory, coupling: DelayedLinearCoupling, dynamics: Dynamics, block: int, noise,
                names: Tuple[str, ...], *, exact: bool, checkpoint: Optional[CheckpointOptions], compile: bool,
                compile_options: Optional[Dict], kernel=None) -> Paths:
    """The paths of a twin: exact (TVB's float32 history); the block kernel's pair when a ``kernel``
    (``kernels.BlockKernel``) is given; or the default mode's ring path with a graph path or, when
    ``checkpoint`` options are given, a checkpointed path."""
    if kernel is not None:
        return Paths(KernelPath(history, coupling, dynamics, block, noise, kernel),
                     KernelCheckpointedPath(history, block, noise, kernel, checkpoint or CheckpointOptions()))
    if exact:
        compiled = None
        if compile:
            compiled = CompiledOrEager(functools.partial(integrate_block, **dynamics.step_kw()), compile_options)
        return Paths(ExactPath(history, coupling, dynamics, block, noise, graph=False, compiled_block=compiled),
                     ExactPath(history, coupling, dynamics, block, noise, graph=True, compiled_block=compiled))
    ring = RingPath(history, coupling, dynamics, block, noise, names, compile_options, compile)
    if checkpoint is not None:
        return Paths(ring, CheckpointedPath(ring, checkpoint, compile_options, compile))
    return Paths(ring, GraphPath(history, coupling, dynamics, block, noise, names, compile_options, compile))
