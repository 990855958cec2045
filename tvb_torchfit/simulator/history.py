"""The delay history written in place, as TVB's ``tvb.simulator.history.SparseHistory`` keeps it between steps.

``HistoryRing`` holds the coupling variable of the last ``horizon`` integration steps in a buffer of
``2 * (horizon + block)`` steps: the window of the last ``horizon`` steps starts at ``offset`` and slides
forward by each block written after it; when the next block would not fit, the window is copied back to
the start of the buffer. No block copies the whole history, and the buffer never moves, so a compiled
block reads it at an offset passed as a 0-d tensor (same shapes at every call).

Two layouts of the same values:

* node-major, ``(N, R, B)`` (the default mode): each far edge reads, for the K steps of a block, one
  contiguous run of K * B values (``coupling.gather_far_node_major``), which the compiler turns into
  vector loads; with a large batch the history no longer fits in cache and this layout reads it about
  twice as fast as the time-major one (measured, batch 64 float32: 546 vs 1159 us per 17-step gather).
* time-major, ``(R, N, B)`` (the TVB-exact mode, whose float32 row sums in numpy's order gather from a
  flat time-major window, ``DelayedLinearCoupling.far_sums``).

``window()`` gives the last ``horizon`` steps time-major, oldest first, in either layout (a view).
"""
from typing import List

import torch


class HistoryRing:
    """The last ``horizon`` steps of the coupling variable (N nodes, B batch members), written in place."""

    def __init__(self, horizon: int, n_nodes: int, batch: int, block: int, dtype: torch.dtype,
                 device: torch.device, node_major: bool):
        self.horizon, self.n_nodes, self.batch = int(horizon), int(n_nodes), int(batch)
        self.node_major = bool(node_major)
        self.length = self.steps_held(self.horizon, block)      # R, steps held by the buffer
        shape = ((self.n_nodes, self.length, self.batch) if self.node_major
                 else (self.length, self.n_nodes, self.batch))
        self.buffer = torch.empty(shape, dtype=dtype, device=device)
        self.offset = 0                                        # step of the window's oldest entry
        # the window's start as 0-d tensors, one per offset, in elements along the flat buffer's time stride
        # (node-major: offset * B), made once: a compiled block takes it as an input, not as a constant
        stride = self.batch if self.node_major else self.n_nodes * self.batch
        self._offsets: List[torch.Tensor] = [torch.tensor(o * stride, device=device)
                                             for o in range(self.length)]

    @staticmethod
    def steps_held(horizon: int, block: int) -> int:
        """R, the steps a ring for this horizon and block holds: 2 * (horizon + block)."""
        return 2 * (int(horizon) + int(block))

    @property
    def flat(self) -> torch.Tensor:
        """The whole buffer as one flat tensor (a view)."""
        return self.buffer.view(-1)

    @property
    def offset_tensor(self) -> torch.Tensor:
        return self._offsets[self.offset]

    def window(self) -> torch.Tensor:
        """The last ``horizon`` steps, time-major (horizon, N, B), oldest first: a view of the buffer."""
        L, o = self.horizon, self.offset
        if self.node_major:
            return self.buffer[:, o:o + L].permute(1, 0, 2)
        return self.buffer[o:o + L]

    def load(self, window: torch.Tensor) -> None:
        """Set the last ``horizon`` steps from a time-major (horizon, N, B) tensor."""
        L = self.horizon
        if window.untyped_storage().data_ptr() == self.buffer.untyped_storage().data_ptr():
            window = window.clone()                     # a view of this buffer (``window()``): may overlap
        if self.node_major:
            self.buffer[:, :L].copy_(window.permute(1, 0, 2))
        else:
            self.buffer[:L].copy_(window)
        self.offset = 0

    def make_room(self, K: int) -> None:
        """Make sure K more steps fit after the window (copy the window back to the start if not)."""
        L, o = self.horizon, self.offset
        if o + L + K <= self.length:
            return
        # here o > horizon + block (the buffer holds 2 * (horizon + block) steps): source and target never overlap
        if self.node_major:
            self.buffer[:, :L].copy_(self.buffer[:, o:o + L])
        else:
            self.buffer[:L].copy_(self.buffer[o:o + L])
        self.offset = 0

    @staticmethod
    def write_positions(horizon: int, n_nodes: int, batch: int, length: int, K: int,
                        device: torch.device) -> torch.Tensor:
        """Flat positions in a node-major buffer of ``length`` steps of the K steps after a window starting
        at step 0, in the order of a (K, N, B) block permuted to (N, K, B): add ``offset_tensor`` for the
        current window. A block written there in place is then taken in with ``advance(K)``."""
        j = torch.arange(n_nodes, device=device).view(-1, 1, 1)
        tau = torch.arange(K, device=device).view(1, -1, 1)
        b = torch.arange(batch, device=device).view(1, 1, -1)
        return ((j * length + horizon + tau) * batch + b).reshape(-1)

    def advance(self, K: int) -> None:
        """Take in K steps already written after the window (see ``write_positions``)."""
        self.offset += K

    def append(self, rows: torch.Tensor) -> None:
        """Write K new steps (K, N, B) after the window and slide it forward by K (``make_room`` first)."""
        K, L, o = rows.shape[0], self.horizon, self.offset
        if self.node_major:
            self.buffer[:, o + L:o + L + K].copy_(rows.permute(1, 0, 2))
        else:
            self.buffer[o + L:o + L + K].copy_(rows)
        self.offset = o + K


class DelayHistory:
    """The twin's delay history (the last ``horizon`` steps of the coupling variable) in one of two forms.

    * ``graph``: a time-major (horizon, N, B) tensor, rebuilt per block by concatenation (``push``), through
      which autograd can follow (used while a run records a graph without checkpointing, and as the
      checkpointed run's input and output);
    * ``ring``: a ``HistoryRing`` written in place (no graph; node-major, time-major in the TVB-exact mode).

    ``as_graph()`` / ``as_ring()`` move the values into the form a run needs; ``window()`` reads them in either.
    """

    def __init__(self, start: torch.Tensor, block: int, node_major: bool):
        self.horizon, self.n_nodes, self.batch = start.shape
        self.block, self.node_major = int(block), bool(node_major)
        self.dtype, self.device = start.dtype, start.device
        self.graph: "torch.Tensor | None" = start
        self.ring: "HistoryRing | None" = None

    @property
    def requires_grad(self) -> bool:
        """Whether the history carries an autograd graph (only the graph form can)."""
        return self.graph is not None and self.graph.requires_grad

    def as_ring(self) -> HistoryRing:
        """The history in the in-place buffer (values moved there, detached, if they were a graph tensor)."""
        if self.graph is not None:
            if self.ring is None:
                self.ring = HistoryRing(self.horizon, self.n_nodes, self.batch, self.block, self.dtype,
                                        self.device, node_major=self.node_major)
            self.ring.load(self.graph.detach())
            self.graph = None
        return self.ring

    def as_graph(self) -> torch.Tensor:
        """The history as a time-major (horizon, N, B) tensor autograd can follow (copied out of the ring)."""
        if self.graph is None:
            self.graph = self.ring.window().clone(memory_format=torch.contiguous_format)
        return self.graph

    def push(self, rows: torch.Tensor) -> None:
        """Graph form: the K newest steps (K, N, B) in, the K oldest out (a new tensor, graph kept)."""
        self.graph = torch.cat((self.graph[rows.shape[0]:], rows.to(self.dtype)))

    def window(self) -> torch.Tensor:
        """The last ``horizon`` steps, time-major (horizon, N, B), oldest first (possibly a view)."""
        return self.graph if self.graph is not None else self.ring.window()

    def set(self, value: torch.Tensor) -> None:
        """Replace the values (any shape holding horizon * N * B values, time-major): graph form from now on."""
        self.graph = value.reshape(self.horizon, self.n_nodes, self.batch)

    def detach_(self) -> None:
        """Cut the graph through the history (the ring never carries one)."""
        if self.graph is not None:
            self.graph = self.graph.detach()
