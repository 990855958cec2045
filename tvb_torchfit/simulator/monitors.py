"""Monitors, as in ``tvb.simulator.monitors``: Raw, SubSample, TemporalAverage and Bold.

Each monitor consumes the observed states of a chunk of consecutive integration steps,
``obs`` shaped (steps, voi, N, B), and returns the samples that TVB's monitor would have produced
during those steps: ``(times, data)`` with times in ms (float64) and data (samples, voi, N, B).
They carry their state (partial averaging windows, the Bold buffer) from chunk to chunk and from
``run`` to ``run``, starting from the TVB monitor's own buffers.

TVB conventions reproduced here:

* Raw: every step, t = step * dt, every variable of interest of the model.
* SubSample(period): every ``istep = round(period/dt)`` steps, t = step * dt.
* TemporalAverage(period): mean over the ``istep`` steps ending at step % istep == 0,
  stamped at the window centre t = (step - istep/2) * dt.
* Bold(period): the observed state is averaged over blocks of ``round(4 ms / dt)`` steps
  (``_interim_stock``), the averages are kept in a 20 s buffer (``_stock``, 5000 samples at 4 ms)
  and, at step % istep == 0, t = step * dt, convolved with TVB's precomputed, time-reversed
  haemodynamic kernel ``hemodynamic_response_function``; with the FirstOrderVolterra kernel
  (the default), bold = k_1 * V_0 * (sum(G_rev * stock) - 1). TVB pairs the buffer's circular slots
  with the kernel through ``numpy.roll``; in time order this gives the newest sample the weight
  G_rev[0] and the sample k blocks older the weight G(k-1 blocks), which is what is applied here.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

Sample = Tuple[torch.Tensor, torch.Tensor]


def _block_means(partial: torch.Tensor, chunk: torch.Tensor, period: int):
    """Split partial+chunk into complete windows of ``period`` steps: (means, remainder).

    Only the window that straddles ``partial`` and ``chunk`` is concatenated; the others are averaged
    in place (a reduction over the same ``period`` values in the same order either way).
    """
    P = partial.shape[0]
    if P + chunk.shape[0] < period:                        # no window completes in this chunk
        return chunk.new_zeros((0,) + chunk.shape[1:]), torch.cat((partial, chunk)) if P else chunk.clone()
    head = None
    if P:
        head = torch.cat((partial, chunk[:period - P])).unsqueeze(0).mean(dim=1)
        chunk = chunk[period - P:]
    n = chunk.shape[0] // period
    means = chunk[: n * period].reshape((n, period) + chunk.shape[1:]).mean(dim=1)
    if head is not None:
        means = torch.cat((head, means)) if n else head
    return means, chunk[n * period:].clone()


def _partial_from_stock(stock: np.ndarray, current_step: int, period: int) -> np.ndarray:
    """Entries of a TVB averaging stock written since the last completed window, oldest first.

    TVB writes the sample of step s to slot (s % period) - 1, so after ``current_step`` the slots
    0 .. (current_step % period) - 1 hold the steps since the last window boundary.
    """
    return stock[: current_step % period]


def _times(steps: np.ndarray, dt: float, offset: float = 0.0) -> torch.Tensor:
    return torch.as_tensor((steps - offset) * dt, dtype=torch.float64)


class Monitor:
    """Base: selection of variables of interest (indices into the model's observed variables)."""

    def __init__(self, voi: np.ndarray, dt: float):
        voi = np.asarray(voi, dtype=np.int64)
        self.voi = torch.as_tensor(voi)
        self.dt = dt
        self._all_in_order = voi.size   # obs with this many variables needs no selection when voi = 0..n-1
        if not np.array_equal(voi, np.arange(voi.size)):
            self._all_in_order = -1
        self._voi_dev = {}

    def _select(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[1] == self._all_in_order:
            return obs
        if obs.device not in self._voi_dev:
            self._voi_dev[obs.device] = self.voi.to(obs.device)
        return obs.index_select(1, self._voi_dev[obs.device])

    def consume(self, obs: torch.Tensor, first_step: int) -> Optional[Sample]:
        raise NotImplementedError

    def detach_(self) -> None:
        """Cut the autograd graph held in the carried state (truncated back-propagation)."""


class Raw(Monitor):
    """``monitors.Raw``: every step, every variable of interest of the model."""

    def consume(self, obs, first_step):
        steps = np.arange(first_step, first_step + obs.shape[0])
        return _times(steps, self.dt), obs


class SubSample(Monitor):
    """``monitors.SubSample``: the state every ``istep`` steps."""

    def __init__(self, voi, dt, istep: int):
        super().__init__(voi, dt)
        self.istep = istep

    def consume(self, obs, first_step):
        steps = np.arange(first_step, first_step + obs.shape[0])
        keep = np.nonzero(steps % self.istep == 0)[0]
        return _times(steps[keep], self.dt), self._select(obs)[torch.as_tensor(keep, device=obs.device)]


class TemporalAverage(Monitor):
    """``monitors.TemporalAverage``: window means, stamped at the window centre."""

    def __init__(self, voi, dt, istep: int, partial: torch.Tensor):
        super().__init__(voi, dt)
        self.istep = istep
        self.partial = partial            # (steps since last boundary, voi, N, B)

    def consume(self, obs, first_step):
        n_before = self.partial.shape[0]
        means, self.partial = _block_means(self.partial, self._select(obs), self.istep)
        first_end = first_step - n_before + self.istep - 1
        ends = first_end + self.istep * np.arange(means.shape[0])
        return _times(ends, self.dt, self.istep / 2.0), means

    def detach_(self):
        self.partial = self.partial.detach()


class Bold(Monitor):
    """``monitors.Bold`` with any TVB HRF kernel (its precomputed ``hemodynamic_response_function``)."""

    def __init__(self, voi, dt, istep: int, interim_istep: int, hrf_reversed: np.ndarray,
                 k1_V0: Optional[float], partial: torch.Tensor, stock: torch.Tensor, last_block: int):
        super().__init__(voi, dt)
        self.istep, self.interim_istep = istep, interim_istep
        self.n_stock = hrf_reversed.shape[0]
        # weights in time order: oldest ... newest (see module docstring)
        weights = np.roll(hrf_reversed, -1)
        self.weights = torch.as_tensor(weights, dtype=stock.dtype, device=stock.device)
        self.k1_V0 = k1_V0
        self.partial = partial            # interim samples since the last 4 ms boundary
        self.stock = stock                # (n_stock, voi, N, B), time order, newest last
        self.last_block = last_block      # global index (step // interim_istep) of stock[-1]

    # The stock is a ``SampleSequence``: the newest n_stock of its samples are the stock; a chunk appends its few
    # new samples instead of copying the whole 20 s buffer.
    @property
    def stock(self) -> torch.Tensor:
        """The newest n_stock samples: a view, valid until the next chunk (``state_dict`` copies it)."""
        return self._seq.window(len(self._seq) - self.n_stock, len(self._seq))

    @stock.setter
    def stock(self, value: torch.Tensor) -> None:
        self._seq = SampleSequence(value, self.n_stock)

    def consume(self, obs, first_step):
        means, self.partial = _block_means(self.partial, self._select(obs), self.interim_istep)
        self._seq.append(means)
        total = len(self._seq)
        newest_block = self.last_block + means.shape[0]          # global block index of the last sample
        first_block_in_seq = newest_block - total + 1
        steps = np.arange(first_step, first_step + obs.shape[0])
        out_steps = steps[steps % self.istep == 0]
        bold = []
        for step in out_steps:
            newest = step // self.interim_istep - first_block_in_seq
            window = self._seq.window(newest - self.n_stock + 1, newest + 1)
            value = torch.tensordot(self.weights, window, dims=1)
            bold.append((value - 1.0) * self.k1_V0 if self.k1_V0 is not None else value)
        self.last_block = newest_block
        self._seq.keep_last()
        if bold:
            data = torch.stack(bold)
        else:
            data = means.new_zeros((0,) + means.shape[1:])
        return _times(out_steps, self.dt), data

    def detach_(self):
        self.partial = self.partial.detach()
        self._seq.detach_()


class SampleSequence:
    """Samples (time, ...) appended chunk by chunk, of which windows of consecutive samples are read.

    Without autograd (nothing appended requires grad) the samples live in one buffer with room to append: a
    window is a view and a chunk's append copies only its own samples (when the room runs out, the newest
    ``keep`` move to the front). While autograd records, the chunks are kept as a list of pieces (writing
    into a buffer would modify tensors the graph holds) and a window across pieces is their concatenation.
    Either way a window holds the same values, so what is computed from it does not depend on the chunking."""

    MAX_PIECES = 64
    #: room to append beyond ``keep`` samples, as a fraction 1 / ROOM of ``keep``: the buffer holds 1.25 x the
    #: samples kept, and moves them to its front once per keep / 4 samples appended
    ROOM = 4

    def __init__(self, first: torch.Tensor, keep: int):
        self._pieces = [first]
        self._buf, self._len, self._start = None, first.shape[0], 0
        self.keep = keep

    def __len__(self) -> int:
        return self._len

    def append(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        if x.requires_grad and self._buf is not None:           # autograd records from here: back to pieces
            self._pieces = [self._buf[self._start:self._start + self._len]]   # the buffer is not written again
            self._buf = None
        if self._buf is None and (x.requires_grad or any(p.requires_grad for p in self._pieces)):
            self._pieces.append(x)
        else:
            self._to_buffer(x.shape[0])
            end = self._start + self._len
            self._buf[end:end + x.shape[0]] = x
        self._len += x.shape[0]

    def _to_buffer(self, extra: int) -> None:
        """Make room for ``extra`` more samples in the buffer (created from the pieces on first use)."""
        if self._buf is None:
            seq = torch.cat(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
            room = max(self.keep // self.ROOM, extra)
            self._buf = seq.new_empty((max(self.keep, seq.shape[0]) + room,) + seq.shape[1:])
            self._buf[:seq.shape[0]] = seq
            self._pieces, self._start = [], 0
        if self._start + self._len + extra > self._buf.shape[0]:
            if self._len + extra > self._buf.shape[0]:
                grown = self._buf.new_empty((2 * (self._len + extra),) + self._buf.shape[1:])
                grown[:self._len] = self._buf[self._start:self._start + self._len]
                self._buf = grown
            else:
                self._buf[:self._len] = self._buf[self._start:self._start + self._len].clone()
            self._start = 0

    def window(self, start: int, stop: int) -> torch.Tensor:
        """Samples start..stop-1 (0 = the oldest held): a view of the buffer, or of one piece, or a concatenation."""
        if self._buf is not None:
            return self._buf[self._start + start:self._start + stop]
        parts, pos = [], 0
        for piece in self._pieces:
            n = piece.shape[0]
            lo, hi = max(start - pos, 0), min(stop - pos, n)
            if lo < hi:
                parts.append(piece if (lo == 0 and hi == n) else piece[lo:hi])
            pos += n
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def keep_last(self) -> None:
        """Forget samples older than the newest ``keep`` (whole pieces only; pieces are merged when many)."""
        n = self.keep
        if self._buf is not None:
            drop = max(0, self._len - n)
            self._start, self._len = self._start + drop, self._len - drop
            return
        while self._len - self._pieces[0].shape[0] >= n:
            self._len -= self._pieces.pop(0).shape[0]
        if len(self._pieces) > self.MAX_PIECES:
            self._pieces = [torch.cat(self._pieces)]

    def detach_(self) -> None:
        """Cut the graph: the held samples as tensors without history (the buffer holds no graph)."""
        if self._buf is None:
            self._pieces = [piece.detach() for piece in self._pieces]


def time_ordered_stock(stock: np.ndarray, current_step: int, interim_istep: int) -> np.ndarray:
    """TVB's circular Bold ``_stock`` in time order (newest last), as of ``current_step``.

    TVB writes the average of block q = step // interim_istep to slot (q % n) - 1.
    """
    n = stock.shape[0]
    newest_slot = (current_step // interim_istep % n) - 1
    return np.roll(stock, -(newest_slot + 1), axis=0)


MONITOR_CHUNK = 1024        # most steps handed to the monitors at once


def chunk_steps(block: int, values_per_step: int) -> int:
    """Steps handed to the monitors at once: up to ``MONITOR_CHUNK``, fewer for large batches (about 2**20
    state values per chunk keeps the chunk's concatenation and averaging in cache), at least one block."""
    return max(block, min(MONITOR_CHUNK, (1 << 20) // values_per_step))


def build_monitor(spec, dt: float, batch: int, dtype: torch.dtype, device: torch.device, current_step: int,
                  n_voi: int) -> Monitor:
    """The monitor of an ``adapter.MonitorSpec`` (TVB's buffers copied to every batch member); ``n_voi`` the
    model's number of variables of interest (what Raw records)."""
    def as_batched(a):
        a = np.asarray(a)
        return torch.as_tensor(a[..., 0], dtype=dtype, device=device).unsqueeze(-1).expand(
            *a.shape[:-1], batch).contiguous()
    if spec.kind == "Raw":
        return Raw(np.arange(n_voi), dt)
    if spec.kind == "SubSample":
        return SubSample(spec.voi, dt, spec.istep)
    if spec.kind == "TemporalAverage":
        return TemporalAverage(spec.voi, dt, spec.istep, as_batched(spec.stock))
    return Bold(spec.voi, dt, spec.istep, spec.interim_istep, spec.hrf_reversed, spec.k1_V0,
                as_batched(spec.stock), as_batched(spec.bold_stock), current_step // spec.interim_istep)


class Recording:
    """What one ``run`` saves: the states of its steps handed to the monitors in chunks of about ``chunk``
    steps, and the samples collected per monitor, returned in TVB's layout by ``result()``.

    ``voi`` (a tensor of state-variable indices, or None for all of them in order) selects the observed
    variables; ``first_step`` is the number of the run's first step (the twin's ``current_step + 1``).
    """

    def __init__(self, monitors: Sequence[Monitor], voi: Optional[torch.Tensor], chunk: int, first_step: int,
                 batch: int):
        self.monitors, self.voi, self.chunk, self.batch = list(monitors), voi, int(chunk), int(batch)
        self.next_step = int(first_step)                 # step number of the next state not yet fed
        self.pending: List[torch.Tensor] = []
        self.n_pending = 0
        self.samples = [([], []) for _ in self.monitors]

    def add(self, states: torch.Tensor) -> None:
        """Keep a block of states (K, nvar, N, B); feed the monitors once ``chunk`` steps are pending, or before
        this block would take the pending steps past ``chunk`` (so blocks of about ``chunk`` steps are fed one by
        one, never concatenated)."""
        if self.pending and self.n_pending + states.shape[0] > self.chunk:
            self.flush()
        self.pending.append(states)
        self.n_pending += states.shape[0]
        if self.n_pending >= self.chunk:
            self.flush()

    def add_trajectory(self, traj: torch.Tensor) -> None:
        """Feed a long trajectory (T, nvar, N, B) now, in chunks (after anything pending). ``split``, not
        slices: one SplitBackward assembles the gradient of ``traj`` once, where each slice's SliceBackward
        would allocate (and accumulate) a zero-filled tensor of its size."""
        self.flush()
        for part in traj.split(self.chunk):
            self._feed(part)

    def flush(self) -> None:
        """Feed whatever is pending."""
        if self.pending:
            self._feed(torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0])
            self.pending, self.n_pending = [], 0

    def _feed(self, states: torch.Tensor) -> None:
        obs = states if self.voi is None else states.index_select(1, self.voi)
        for mon, (ts, xs) in zip(self.monitors, self.samples):
            t, x = mon.consume(obs, self.next_step)
            ts.append(t)
            xs.append(x)
        self.next_step += states.shape[0]

    def result(self) -> List[Sample]:
        """One (times, data) pair per monitor: times in ms, data (time, voi, N, 1) as TVB's, or
        (batch, time, voi, N, 1) when batch > 1 (the batch axis sits where TVB keeps its modes)."""
        self.flush()
        out = []
        for ts, xs in self.samples:
            times = torch.cat(ts) if ts else torch.zeros(0, dtype=torch.float64)
            data = torch.cat(xs)                                             # (T, voi, N, B)
            out.append((times, data) if self.batch == 1 else (times, data.permute(3, 0, 1, 2).unsqueeze(-1)))
        return out
