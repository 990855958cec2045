"""The differentiable twin of a TVB ``Simulator``: same steps, same monitors, same time stamps.

``TorchSimulator.run(simulation_length)`` mirrors ``tvb.simulator.simulator.Simulator.run``:
it integrates ``ceil(simulation_length / dt)`` steps from where the previous call stopped
(state, delay history, monitor buffers, noise stream and step counter all carry over) and returns
one ``(times, data)`` pair per monitor, times in ms, data shaped (time, voi, nodes, modes) as TVB's,
with a leading batch axis when ``batch > 1``. All outputs are torch tensors that carry gradients
with respect to ``params``.

Parameters (``TorchSimulator.params``) are named as in TVB (``simulator.registry``): every parameter of the
model (``"G"``, ``"w_p"``, ``"J_i"``, ...), ``"coupling.a"`` and ``"coupling.b"`` for the Linear coupling and
``"noise.nsig"`` for Additive noise. Model and coupling parameters broadcast against (batch, nodes): (1,)
global, (N,) region-wise, (B, 1) one value per batch member, (B, N) both. ``noise.nsig`` broadcasts against
(batch, nvar, nodes).

Internally tensors are laid out (state variable, node, batch): the batch axis sits where TVB
keeps its modes, so per-step arithmetic is the same as TVB's.

The pieces, after diffrax: what is integrated is ``blocks.Dynamics``; how it is stepped, a run path of
``paths`` (chosen once per run: the numba block kernel by default on CPU, else in place, graph, checkpointed or
TVB-exact); what is saved, a ``monitors.Recording``; how the gradient is taken, the kernel's adjoint
(``adjoint.KernelRun``), autograd or ``adjoint.CheckpointedRun``.
"""
import functools
import math
import numbers
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .. import checks
from ..errors import ParameterError
from .adapter import SimulatorSpec
from .adjoint import CheckpointOptions
from .blocks import Dynamics, split_coupling
from .compiled import CompiledOrEager, compile_options
from .coupling import DelayedLinearCoupling, max_block, near_padded
from .history import DelayHistory, HistoryRing
from . import kernels
from .integrators import SCHEMES
from .kernels import BlockKernel
from .monitors import Recording, build_monitor, chunk_steps
from .noise import TorchStream, TVBStream, diffusion_scale
from .paths import BlockParams, build_paths
from .registry import NOISE_NSIG, as_tensor, coupling_parameter_names, resolve, to_internal

TensorLike = Union[torch.Tensor, np.ndarray, float, List[float]]
Output = List[Tuple[torch.Tensor, torch.Tensor]]


class TorchSimulator:
    """A TVB region simulation as a torch computation. Build it with ``tvb_torchfit.from_tvb``.

    Options beyond ``from_tvb``'s documentation:

    * ``compile=True``: each full block of ``block`` steps (at most the shortest non-zero delay + 1) is one
      ``torch.compile``d call (far-edge gather, noise scaling, steps; C++ wrapper on CPU); a shorter last
      block runs eagerly. The first call of each variant (dtype, batch, thread count, forward / backward)
      compiles once, tens of seconds for the forward and for the backward (chunks of 4 steps, one per set of
      parameters requiring grad) on a small CPU (inductor keeps them on disk for later processes). If
      compilation fails the blocks run eagerly, with a warning.
    * ``kernel`` (default None: wherever it applies): runs stepped by the numba block kernel
      (``kernels.BlockKernel``: on CPU, default mode, Linear coupling), many steps per call, and while autograd
      records its hand-written adjoint (``adjoint.KernelRun``, checkpointed: memory bounded by
      ``CheckpointOptions.keep_bytes`` and the group length). Not used with ``compile=True`` (the torch.compile
      route, for GPUs), ``exact=True`` or ``checkpoint=False`` (the eager paths); ``kernel=False`` refuses it.
    * ``checkpoint`` (default: on with ``compile=True`` or the kernel, off otherwise; never in the TVB-exact mode): while
      autograd records, integrate without a graph and recompute each block in the backward
      (``adjoint.CheckpointedRun``). Same values and gradients; memory O(steps * nvar * N * batch) instead of
      every step's intermediates; with ``compile=True`` the forward runs at no-grad speed. A
      ``CheckpointOptions`` turns it on with other chunk, segment and group sizes.

    * ``first_member`` = k (noise="torch"): the batch members are members k .. k + batch - 1 of a larger batch
      with the same seed (their noise streams), so a batch can be run in parts, e.g. in several processes.

    ``paths`` holds the run paths (``paths.Paths``: ``free`` without a graph, ``graph`` while autograd
    records); ``compiled_calls()`` the compiled calls built so far. Small problems (batch up to ~8 on a few
    cores) usually run faster with ``torch.set_num_threads(1)`` (set by the caller; the library leaves
    torch's threads alone).
    """

    def __init__(self, spec: SimulatorSpec, *, noise: str = "torch", exact: bool = False, batch: int = 1,
                 dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = "cpu",
                 block: Optional[int] = None, seed: Optional[int] = None, compile: bool = False,
                 checkpoint: Union[None, bool, CheckpointOptions] = None, kernel: Optional[bool] = None,
                 first_member: int = 0):
        self._check_options(noise, exact, batch, dtype, device, block, seed, compile, checkpoint)
        self.first_member = checks.integer(first_member, "first_member", minimum=0)
        if first_member and noise != "torch":
            raise ParameterError(f"first_member={first_member}: only noise='torch' draws per-member streams that a "
                                 "batch split into parts can continue; noise='tvb' follows TVB's own stream.")
        if not (kernel is None or isinstance(kernel, bool)):
            raise ParameterError(f"kernel={kernel!r}: expected None (the block kernel where it applies), True or False.")
        dtype = checks.dtype(dtype)
        self.spec, self.model, self.dt = spec, spec.model, spec.dt
        self.batch, self.dtype, self.device = batch, dtype, torch.device(device)
        self.exact, self.noise_source, self.current_step = exact, noise, spec.current_step
        step_fn, self.stochastic = SCHEMES[spec.scheme]
        N, B, H = spec.n_nodes, batch, spec.horizon
        hist_dtype = torch.float32 if exact else dtype
        self.block = max(1, min(block or (1 if exact else 32), max_block(spec.weights, spec.idelays)))
        self.coupling = DelayedLinearCoupling(spec.weights, spec.idelays, H, B, hist_dtype, self.device,
                                              block=self.block, numpy_order=exact)
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)
        self.params: Dict[str, torch.Tensor] = {name: t(v) for name, v in spec.parameters().items()}
        #: the model and coupling parameters in the order of ``BlockParams.packed``
        self.packed_names = tuple(name for name in self.params if name != NOISE_NSIG)

        # starting point: TVB's current state and its history buffer, in time order (oldest first)
        self.state = t(spec.current_state).unsqueeze(-1).expand(-1, -1, B).contiguous()
        order = (spec.current_step + 1 + np.arange(H)) % H
        hist = torch.as_tensor(spec.history[order], dtype=hist_dtype, device=self.device)
        self._history = DelayHistory(hist.unsqueeze(-1).expand(H, N, B).contiguous(), self.block,
                                     node_major=not exact)
        self.noise = self._build_noise(seed) if self.stochastic else None
        n_voi = len(spec.model_voi)
        self.monitors = [build_monitor(m, self.dt, B, dtype, self.device, self.current_step, n_voi)
                         for m in spec.monitors]
        near = None
        if self.coupling.has_near:
            near = functools.partial(near_padded, idx=self.coupling.near_idx, w=self.coupling.near_weights(dtype))
        bounded = bool(np.isfinite(spec.lo).any() or np.isfinite(spec.hi).any())
        self.dynamics = Dynamics(dfun=self.model.dfun, post=spec.coupling.post, step_fn=step_fn, near_fn=near,
                                 lo=t(spec.lo).view(-1, 1, 1) if bounded else None,
                                 hi=t(spec.hi).view(-1, 1, 1) if bounded else None, dt=self.dt,
                                 coupling_names=coupling_parameter_names(spec.coupling))
        self.compiled = bool(compile)
        self.kernel = self._build_kernel(kernel, checkpoint)
        if checkpoint is None:
            checkpoint = (self.compiled or self.kernel is not None) and not exact
        options = checkpoint if isinstance(checkpoint, CheckpointOptions) else (
            CheckpointOptions() if checkpoint else None)
        self.checkpoint = options is not None
        self.paths = build_paths(self._history, self.coupling, self.dynamics, self.block, self.noise,
                                 self.packed_names, exact=exact, checkpoint=options, compile=self.compiled,
                                 compile_options=compile_options(self.device), kernel=self.kernel)
        voi = np.asarray(spec.model_voi, dtype=np.int64)
        n_var = len(self.model.state_variables)
        # observed variables: no selection (copy) when they are all the state variables, in order
        self._voi = None if np.array_equal(voi, np.arange(n_var)) else torch.as_tensor(voi, device=self.device)
        self._chunk = chunk_steps(self.block, n_var * N * B)

    def _build_kernel(self, kernel: Optional[bool], checkpoint) -> Optional[BlockKernel]:
        """The numba block kernel (``kernels.BlockKernel``) if it is to be used: ``kernel=True`` asks for it (an
        error where it does not apply), ``False`` refuses it, None (default) uses it wherever it applies and no
        other path was asked for (``compile=True``, ``exact=True``, ``checkpoint=False``)."""
        applies = kernels.supports(self.model, self.spec.coupling, self.device, self.exact)
        if kernel is None:
            kernel = applies and not self.compiled and checkpoint is not False
        elif kernel and not applies:
            raise ValueError("kernel=True: the block kernel needs numba, device='cpu', exact=False, Linear coupling "
                             f"and a model port with plain-math equations (here {self.model.__name__}, "
                             f"{self.spec.coupling.__name__}, device {self.device}, exact={self.exact}).")
        elif kernel and (self.compiled or checkpoint is False):
            raise ValueError("kernel=True cannot be combined with compile=True or checkpoint=False.")
        if not kernel:
            return None
        return BlockKernel(self.model, self.spec.scheme, self.spec.weights, self.spec.idelays, self.spec.lo,
                           self.spec.hi, self.dt, self.packed_names, self.dtype)

    @staticmethod
    def _check_options(noise, exact, batch, dtype, device, block, seed, compile, checkpoint) -> None:
        """Every option of ``from_tvb`` checked before any work (``checks``: ParameterError naming it)."""
        checks.choice(noise, "noise", ("torch", "tvb"))
        checks.boolean(exact, "exact")
        checks.integer(batch, "batch", minimum=1)
        checks.dtype(dtype, "dtype")
        checks.device(device, "device")
        checks.optional(checks.integer, block, "block", minimum=1)
        checks.optional(checks.seed, seed, "seed")
        checks.boolean(compile, "compile")
        if not (checkpoint is None or isinstance(checkpoint, (bool, CheckpointOptions))):
            raise ParameterError(f"checkpoint={checkpoint!r}: expected None, True, False or a CheckpointOptions.")
        if exact and dtype != torch.float64:
            raise ParameterError("exact=True reproduces TVB's float64 state with its float32 history; "
                                 f"it needs dtype=torch.float64, not {dtype}.")
        if exact and (checkpoint is True or isinstance(checkpoint, CheckpointOptions)):
            raise ParameterError("checkpoint=True is not available with exact=True (the TVB-exact mode).")

    def _build_noise(self, seed: Optional[int]):
        shape = (len(self.model.state_variables), self.spec.n_nodes)
        if self.noise_source == "tvb":
            return TVBStream(self.spec.random_stream, self.spec.noise_seed, shape, self.batch, self.dtype,
                             self.device)
        return TorchStream(self.spec.noise_seed if seed is None else seed, shape, self.batch, self.dtype,
                           self.device, first_member=self.first_member)

    # ------------------------------------------------------------------ parameters
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
        return as_tensor(name, value, dtype=self.dtype, device=self.device)

    def block_params(self) -> BlockParams:
        """``params`` checked (finite; nsig >= 0) and in the layout the blocks use (``paths.BlockParams``)."""
        for name in self.params:
            if not torch.isfinite(torch.as_tensor(self.params[name])).all():
                raise ParameterError(f"parameter {name!r} is not finite: {self.params[name]}")
        p = {name: self._internal(name, v) for name, v in self.params.items()}
        for name in getattr(self.model, "positive_parameters", ()):
            if name in p and not bool((p[name].detach() > 0).all()):
                raise ParameterError(f"parameter {name!r} = {self.params[name]} must be > 0: "
                                     f"{self.model.tvb_class.__name__}'s equations divide by it (TVB's own run "
                                     "gives NaN or inf).")
        nsig = p.pop(NOISE_NSIG, None)
        if nsig is not None and (nsig < 0).any():
            raise ParameterError("parameter 'noise.nsig' must be >= 0 (it is a diffusion coefficient).")
        scale = diffusion_scale(nsig) if nsig is not None else None
        packed, varying, recorded = None, None, None
        if not self.exact:
            packed = torch.stack(torch.broadcast_tensors(*(p[n] for n in self.packed_names)))
            varying = tuple(p[n].numel() > 1 for n in self.packed_names)
            recorded = tuple(p[n].requires_grad for n in self.packed_names)
        coupling, model = split_coupling(p, self.dynamics.coupling_names)
        return BlockParams(model, coupling, nsig, scale, packed, varying, recorded)

    # ------------------------------------------------------------------ integration
    def run(self, simulation_length: Optional[float] = None, n_steps: Optional[int] = None) -> Output:
        """Integrate ``simulation_length`` ms (or ``n_steps`` steps) and return TVB's monitor outputs."""
        if n_steps is None:
            if simulation_length is None:
                raise ParameterError("run() needs simulation_length= (ms) or n_steps=.")
            length = checks.positive(simulation_length, "simulation_length", unit="ms")
            n_steps = int(math.ceil(length / self.dt))
        else:
            if simulation_length is not None:
                raise ParameterError(f"run(simulation_length={simulation_length!r}, n_steps={n_steps!r}): give one "
                                     "of them, not both.")
            n_steps = checks.integer(n_steps, "n_steps", minimum=1)
        params = self.block_params()
        recording = Recording(self.monitors, self._voi, self._chunk, self.current_step + 1, self.batch)
        self.paths.choose(self.records_graph()).run(self, n_steps, params, recording)
        return recording.result()

    def records_graph(self) -> bool:
        """Whether a run now records an autograd graph (grad mode on, and the state, a parameter or the
        history requires grad): the run then takes ``paths.graph``, else ``paths.free``."""
        return torch.is_grad_enabled() and (self.state.requires_grad or self._history.requires_grad
                                            or any(v.requires_grad for v in self.params.values()))

    def compiled_calls(self) -> Dict[str, CompiledOrEager]:
        """The compiled calls built so far (``paths.Paths.compiled_calls``): ``.error`` says which fell back."""
        return self.paths.compiled_calls()

    @property
    def history_ring(self) -> HistoryRing:
        """The in-place history buffer (the history moved into it if it was a graph tensor)."""
        return self._history.as_ring()

    # ------------------------------------------------------------------ state
    @property
    def history(self) -> torch.Tensor:
        """The delay history, time-ordered and flat: ``history[t * N * B + j * B + b]`` is the coupling variable
        of node j, batch member b, t-th of the last ``horizon`` steps (oldest first). Possibly a view of an
        internal buffer that later runs overwrite: clone it to keep it."""
        return self._history.window().reshape(-1)

    @history.setter
    def history(self, value: torch.Tensor) -> None:
        self._history.set(value)

    @property
    def current_state(self) -> torch.Tensor:
        """The state as TVB holds it: (nvar, N, 1), or (B, nvar, N, 1) when batch > 1."""
        return self.state if self.batch == 1 else self.state.permute(2, 0, 1).unsqueeze(-1)

    def detach_(self) -> "TorchSimulator":
        """Cut the autograd graph at the present step (state, history, monitor buffers)."""
        self.state = self.state.detach()
        self._history.detach_()
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
