"""Noise for stochastic integration, as ``tvb.simulator.noise.Additive`` (white, ntau = 0).

TVB draws, once per integration step, a standard normal array of shape (nvar, nodes, modes) from
``noise.random_stream`` (a ``numpy.random.RandomState``), and the increment added to the state is

    z = sqrt(dt) * N(0, 1) * sqrt(2 * nsig)

``nsig`` is a diffusion coefficient (units of state**2 / ms), not a standard deviation.

Two sources of the N(0, 1) draws:

* ``TVBStream``: a copy of the TVB noise object's own ``RandomState``, drawn in TVB's order and
  shapes, so batch member 0 reproduces TVB's stochastic run. Further batch members draw from
  ``RandomState(noise_seed + b)``. The TVB object itself is never advanced.
* ``TorchStream``: one seeded ``torch.Generator`` per batch member, on the simulator's device (torch's
  numbers; float64 on the CPU transformed by ``normal.normal_``, a vectorised copy of torch's transform).
  Member b's draws depend only on (seed, b), not on the batch size; ``first_member`` = k makes a stream of
  members k, k + 1, ... (a batch split into parts draws what the whole batch draws).
"""
import copy
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Optional

import numpy as np
import torch

from .normal import normal_ as standard_normal_


def diffusion_scale(nsig: torch.Tensor) -> torch.Tensor:
    """g = sqrt(2 nsig): TVB's ``noise.Additive.gfun`` (nsig a diffusion coefficient, state**2 / ms).

    At nsig = 0 the value is 0 and the gradient is taken as 0 (sqrt's derivative is infinite there), so that a
    noise-free member or region gives finite gradients; for nsig > 0 it is sqrt(2 nsig), bit for bit."""
    zero = nsig <= 0
    return torch.where(zero, torch.zeros_like(nsig), torch.sqrt(2.0 * torch.where(zero, torch.ones_like(nsig), nsig)))


def scaled_increment(normal: torch.Tensor, dt: float, scale: torch.Tensor) -> torch.Tensor:
    """z = (sqrt(dt) * N(0,1)) * g, g = ``diffusion_scale(nsig)``, dt in ms: the increment every stochastic
    step adds, in TVB's order of operations (``Additive.generate`` -> ``white``: sqrt(dt) * N(0,1); then the
    integrator multiplies by ``gfun``). The one place this scaling is written."""
    return normal * math.sqrt(dt) * scale


def additive_increment(normal: torch.Tensor, dt: float, nsig: torch.Tensor) -> torch.Tensor:
    """z = sqrt(dt) * N(0,1) * sqrt(2 nsig): ``scaled_increment`` with ``diffusion_scale(nsig)``; variance
    2 * nsig * dt per step."""
    return scaled_increment(normal, dt, diffusion_scale(nsig))


class TVBStream:
    """Standard normal draws from copies of TVB's ``RandomState`` (member 0: the TVB stream itself)."""

    def __init__(self, random_stream: np.random.RandomState, noise_seed: int, shape, batch: int,
                 dtype: torch.dtype, device: torch.device):
        self.streams = [copy.deepcopy(random_stream)]
        self.streams += [np.random.RandomState(noise_seed + b) for b in range(1, batch)]
        self.shape, self.dtype, self.device = tuple(shape), dtype, device

    def draw(self, n_steps: int) -> torch.Tensor:
        """(n_steps, nvar, N, B): the same numbers as n_steps successive TVB draws."""
        per_member = [s.normal(size=(n_steps,) + self.shape + (1,))[..., 0] for s in self.streams]
        return torch.as_tensor(np.stack(per_member, axis=-1), dtype=self.dtype, device=self.device)

    def draw_blocks(self, n_steps: int, block: int) -> torch.Tensor:
        """``draw(n_steps)``: numpy's normal stream is the same however it is cut into blocks."""
        return self.draw(n_steps)

    def state_dict(self):
        return {"streams": [s.get_state() for s in self.streams]}

    def load_state_dict(self, state):
        for s, st in zip(self.streams, state["streams"]):
            s.set_state(st)


class TorchStream:
    """Standard normal draws from one seeded ``torch.Generator`` per batch member."""

    def __init__(self, seed: int, shape, batch: int, dtype: torch.dtype, device: torch.device, first_member: int = 0):
        # member b's generator is seeded from word first_member + b of the seed's SeedSequence (a prefix-stable
        # stream), so members first_member .. first_member + batch - 1 of a larger batch are drawn here as there
        seeds = np.random.SeedSequence(seed).generate_state(first_member + batch, dtype=np.uint64)[first_member:]
        self.generators = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF)
            self.generators.append(g)
        self.shape, self.dtype, self.device = tuple(shape), dtype, device

    def draw(self, n_steps: int) -> torch.Tensor:
        """(n_steps, nvar, N, B) independent standard normal draws.

        Each member's draws are written straight into its slice of a member-major buffer (the same
        numbers as ``torch.randn(size, generator=g)``; float64 on the CPU through ``normal.normal_``, the same to
        rounding and about three times as fast); the result is a permuted view of that buffer,
        so no copy is made to put the batch axis last.
        """
        size = (n_steps,) + self.shape
        out = torch.empty((len(self.generators),) + size, dtype=self.dtype, device=self.device)
        for b, g in enumerate(self.generators):
            standard_normal_(out[b], g)
        return out.permute(*range(1, len(size) + 1), 0)

    def draw_blocks(self, n_steps: int, block: int) -> torch.Tensor:
        """(n_steps, nvar, N, B): the draws of ``draw(K)`` called for successive blocks of ``block`` steps (the
        last one shorter), in one buffer (torch's generator gives other numbers when the same count is drawn in
        other pieces, so a path that steps many blocks at once still draws block by block)."""
        size = (n_steps,) + self.shape
        out = torch.empty((len(self.generators),) + size, dtype=self.dtype, device=self.device)
        full = n_steps // block * block
        for b, g in enumerate(self.generators):
            # what normal_ on each block's contiguous slice draws (torch.randn(out=) draws the same), in one call
            if full:
                standard_normal_(out[b, :full], g, pieces=full // block)
            if full < n_steps:
                standard_normal_(out[b, full:], g)
        return out.permute(*range(1, len(size) + 1), 0)

    def state_dict(self):
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state):
        for g, st in zip(self.generators, state["generators"]):
            g.set_state(st)


#: environment variable: "0" keeps every draw on the calling thread (``ChunkDraws``)
DRAW_AHEAD_ENV = "TVB_TORCHFIT_DRAW_AHEAD"
_EXECUTOR = {}
_EXECUTOR_LOCK = threading.Lock()


def draw_ahead_enabled() -> bool:
    """Whether ``ChunkDraws`` draws ahead on a second thread: at least two CPUs usable by this process and
    ``TVB_TORCHFIT_DRAW_AHEAD`` not "0"."""
    if os.environ.get(DRAW_AHEAD_ENV, "1") == "0":
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:                       # not on Linux
        return (os.cpu_count() or 1) >= 2


def _executor() -> ThreadPoolExecutor:
    """One worker thread per process (a forked child makes its own: threads do not survive ``fork``)."""
    with _EXECUTOR_LOCK:
        pid = os.getpid()
        if _EXECUTOR.get("pid") != pid:
            _EXECUTOR.update(pid=pid, executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvbtf-draws"))
        return _EXECUTOR["executor"]


class ChunkDraws:
    """The noise of successive chunks of ``sizes`` steps (``stream.draw_blocks(T, block)`` for each T, in order:
    the same numbers as drawing them one after the other), for a run that steps chunk after chunk.

    With ``draw_ahead_enabled()`` chunk i + 1's noise is drawn on a worker thread while the caller steps chunk i
    (the block kernel and the draws release the GIL): on two cores the draws' time hides behind the stepping.
    Only chunks of this run are drawn, so the stream ends where drawing them in turn would leave it. Use as a
    context manager: on leaving, a draw still running is waited for, so nothing touches the stream afterwards."""

    def __init__(self, stream, sizes, block: int):
        self.stream, self.sizes, self.block = stream, list(sizes), int(block)
        self.ahead = stream is not None and len(self.sizes) > 1 and draw_ahead_enabled()
        self._next, self._pending = 0, None

    def __enter__(self) -> "ChunkDraws":
        return self

    def next(self) -> Optional[torch.Tensor]:
        """The next chunk's draws, (T, nvar, N, B), or None without noise (the first on the calling thread; with
        draw-ahead, each later one was started on the worker when the one before it was handed out)."""
        i = self._next
        self._next += 1
        if self.stream is None:
            return None
        if self._pending is None:
            normal = self.stream.draw_blocks(self.sizes[i], self.block)
        else:
            normal = self._pending.result()
            self._pending = None
        if self.ahead and i + 1 < len(self.sizes):
            self._pending = _executor().submit(self.stream.draw_blocks, self.sizes[i + 1], self.block)
        return normal

    def __exit__(self, *exc) -> None:
        if self._pending is not None:
            wait([self._pending])
            self._pending = None
