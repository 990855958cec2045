"""The torch twin of ``tvb.simulator``: one module per TVB concept.

``adapter`` reads a configured TVB ``Simulator`` into plain specs (the only reader of TVB's simulator
objects); ``models/`` (equations), ``coupling``, ``history``, ``integrators``, ``noise`` and ``monitors`` mirror
TVB's modules of the same names; ``registry`` names every parameter; ``twin`` holds ``TorchSimulator``, which
steps them. How it steps them, after diffrax's split: ``blocks`` (what is integrated: ``Dynamics`` and the pure
block functions), ``paths`` (how a run is stepped: in place, graph, checkpointed or TVB-exact, one path chosen
per run), ``monitors.Recording`` (what is saved), ``adjoint`` (how the gradient of a checkpointed run is
taken), ``kernels`` (the numba block kernel and its adjoint, the default on CPU) and ``compiled``
(``torch.compile`` with an eager fallback).
"""
from typing import Optional, Union

import torch

from .adapter import SimulatorSpec, read_simulator
from .twin import TorchSimulator

def from_tvb(sim, *, noise: str = "torch", exact: bool = False, batch: int = 1,
             dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = "cpu",
             block: Optional[int] = None, seed: Optional[int] = None,
             compile: bool = False, kernel: Optional[bool] = None) -> TorchSimulator:
    """The differentiable torch twin of a *configured* TVB ``Simulator``.

    Everything is read from the TVB objects (connectivity, model parameters, coupling, integrator,
    noise, monitors, current state and history); the TVB simulator is left untouched.

    noise:  ``"torch"`` (default) draws from seeded ``torch.Generator``s, one per batch member
            (seed: ``seed`` or the TVB noise's ``noise_seed``); ``"tvb"`` draws from a copy of the TVB
            noise object's ``random_stream`` in TVB's order, so a stochastic run reproduces TVB's.
    exact:  emulate TVB's float32 history buffer and float32 coupling sum (parity to the last digits);
            the default float64 mode is for fitting.
    batch:  number of independent simulations run in one pass (own noise streams; parameters may
            differ per member: give them a leading batch axis, e.g. shape (batch, 1)).
    block:  most steps whose delayed coupling is gathered at once (capped by the shortest delay).
    compile: fuse each block of steps with ``torch.compile`` (needs a C++ compiler; the first run of a
            given batch/dtype pays a one-off compilation of tens of seconds, then steps run ~20x faster).
    kernel: None (default) steps with the numba block kernel wherever it applies (CPU, default mode, Linear
            coupling; compiled once, cached on disk across processes) and records gradients through its own
            checkpointed adjoint; ``False``: the eager torch paths; ``True``: the kernel or an error.
    """
    TorchSimulator._check_options(noise, exact, batch, dtype, device, block, seed, compile, None)  # before any work
    return TorchSimulator(read_simulator(sim), noise=noise, exact=exact, batch=batch, dtype=dtype,
                          device=device, block=block, seed=seed, compile=compile, kernel=kernel)


__all__ = ["from_tvb", "read_simulator", "SimulatorSpec", "TorchSimulator"]
