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
import functools
import math
import numbers
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from . import monitors as _monitors
from .adapter import SimulatorSpec
from .coupling import DelayedLinearCoupling, linear_post, max_block
from .errors import ParameterError
from .integrators import SCHEMES
from .noise import TorchStream, TVBStream, additive_increment

TensorLike = Union[torch.Tensor, np.ndarray, float, List[float]]
Output = List[Tuple[torch.Tensor, torch.Tensor]]

COUPLING_PARAMS = ("coupling.a", "coupling.b")
NOISE_PARAM = "noise.nsig"
_MONITOR_CHUNK = 1024        # steps handed to the monitors at once


def integrate_block(X: torch.Tensor, far: torch.Tensor, z: Optional[torch.Tensor], a: torch.Tensor,
                    b: torch.Tensor, p: Dict[str, torch.Tensor], *, dfun, step_fn, dt: float, near_fn,
                    lo: Optional[torch.Tensor], hi: Optional[torch.Tensor]) -> torch.Tensor:
    """K integration steps from state X (nvar, N, B): coupling -> model -> integrator, as TVB's loop.

    ``far`` (K, N, B) holds the delayed coupling sums gathered for the block; ``near_fn`` adds the
    zero-delay edges from the current state; ``z`` (K, nvar, N, B) the noise increments or None.
    Returns the K new states (K, nvar, N, B). Pure function: ``torch.compile`` fuses it.
    """
    states = []
    for tau in range(far.shape[0]):
        gx = far[tau] + near_fn(X[0]) if near_fn is not None else far[tau]
        c = linear_post(gx, a, b)
        X = step_fn(X, lambda Y: dfun(Y, c, p), dt, None if z is None else z[tau], lo, hi)
        states.append(X)
    return torch.stack(states)


class TorchSimulator:
    """A TVB region simulation as a torch computation. Build it with ``tvb_torchfit.from_tvb``."""

    def __init__(self, spec: SimulatorSpec, *, noise: str = "torch", exact: bool = False, batch: int = 1,
                 dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = "cpu",
                 block: Optional[int] = None, seed: Optional[int] = None, compile: bool = False):
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
        self.params["coupling.a"] = t(spec.coupling_a)
        self.params["coupling.b"] = t(spec.coupling_b)
        if self.stochastic:
            self.params[NOISE_PARAM] = t(spec.nsig)
        self._lo = t(spec.lo).view(-1, 1, 1)
        self._hi = t(spec.hi).view(-1, 1, 1)
        self._bounded = bool(np.isfinite(spec.lo).any() or np.isfinite(spec.hi).any())

        # starting point: TVB's current state and its history buffer, in time order (oldest first)
        self.state = t(spec.current_state).unsqueeze(-1).expand(-1, -1, B).contiguous()
        H = spec.horizon
        order = (spec.current_step + 1 + np.arange(H)) % H
        hist = torch.as_tensor(spec.history[order], dtype=hist_dtype, device=self.device)
        self.history = hist.unsqueeze(-1).expand(H, N, B).reshape(-1).contiguous()

        if self.stochastic:
            shape = (len(self.model.state_variables), N)
            if noise == "tvb":
                self.noise = TVBStream(spec.random_stream, spec.noise_seed, shape, B, dtype, self.device)
            else:
                self.noise = TorchStream(spec.noise_seed if seed is None else seed, shape, B, dtype, self.device)
        else:
            self.noise = None
        self.monitors = [self._build_monitor(m) for m in spec.monitors]
        near = self.coupling.near_sum if self.coupling.has_near else None
        self._block = functools.partial(
            integrate_block, dfun=self.model.dfun, step_fn=self._step_fn, dt=self.dt, near_fn=near,
            lo=self._lo if self._bounded else None, hi=self._hi if self._bounded else None)
        self.compiled = bool(compile)
        self._compiled_block = torch.compile(self._block, dynamic=False) if compile else None
        self._voi = torch.as_tensor(spec.model_voi, device=self.device)

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
        """A public parameter tensor in the internal layout: (N or 1, B or 1), nsig (V, N or 1, B or 1)."""
        N, B, V = self.n_nodes, self.batch, len(self.model.state_variables)
        value = self._as_tensor(name, value)
        target = (B, V, N) if name == NOISE_PARAM else (B, N)
        try:
            if value.dim() > len(target):
                raise RuntimeError
            full = torch.broadcast_shapes(tuple(value.shape), target)
            if full != target:
                raise RuntimeError
        except RuntimeError:
            if name == NOISE_PARAM:
                shapes = f"(1,), ({N},), ({V}, 1), ({V}, {N}), ({B}, 1, 1), ({B}, 1, {N}) or ({B}, {V}, {N})"
                layout = "(batch, nvar, nodes)"
            else:
                shapes = f"(1,), ({N},), ({B}, 1) or ({B}, {N})"
                layout = "(batch, nodes)"
            raise ParameterError(f"parameter {name!r} has shape {tuple(value.shape)}, which does not broadcast "
                                 f"against {layout} = {target}; use {shapes}.")
        while value.dim() < len(target):
            value = value.unsqueeze(0)
        return value.permute(*range(1, len(target)), 0)

    def set_param(self, name: str, value: TensorLike) -> None:
        """Set one parameter (a tensor may require grad); checks the name and the shape."""
        if name not in self.params:
            raise ParameterError(f"{name!r} is not a parameter of this simulator ({self.model.tvb_class.__name__} "
                                 f"with Linear coupling); known: {', '.join(self.params)}.")
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
        nsig = p.pop(NOISE_PARAM, None)
        if nsig is not None and (nsig < 0).any():
            raise ParameterError("parameter 'noise.nsig' must be >= 0 (it is a diffusion coefficient).")
        dt, N, B = self.dt, self.n_nodes, self.batch

        results = [([], []) for _ in self.monitors]
        pending: List[torch.Tensor] = []
        first_pending = self.current_step + 1
        done = 0
        while done < n_steps:
            K = min(self.block, n_steps - done)
            far = self.coupling.far_sums(self.history, K)
            if self.exact:
                far = far.to(torch.float64)
            z = additive_increment(self.noise.draw(K), dt, nsig) if self.stochastic else None
            block_fn = self._compiled_block if (self._compiled_block is not None and K == self.block) \
                else self._block
            states = block_fn(self.state, far, z, a, b, p)                  # (K, nvar, N, B)
            self.state = states[-1]
            new_hist = states[:, 0].to(self.history.dtype).reshape(-1)
            self.history = torch.cat((self.history[K * N * B:], new_hist))
            pending.append(states)
            done += K
            self.current_step += K
            if sum(s.shape[0] for s in pending) >= _MONITOR_CHUNK or done == n_steps:
                obs = torch.cat(pending).index_select(1, self._voi)
                for mon, (ts, xs) in zip(self.monitors, results):
                    t, x = mon.consume(obs, first_pending)
                    ts.append(t)
                    xs.append(x)
                pending = []
                first_pending = self.current_step + 1
        return [self._tvb_layout(ts, xs) for ts, xs in results]

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
        self.history = self.history.detach()
        for mon in self.monitors:
            mon.detach_()
        return self

    def state_dict(self) -> Dict:
        """Everything a later ``run`` depends on besides ``params`` (detached copies): for checkpoints."""
        mons = [{k: v.detach().clone() if torch.is_tensor(v) else v for k, v in vars(m).items()
                 if k in ("partial", "stock", "last_block")} for m in self.monitors]
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
