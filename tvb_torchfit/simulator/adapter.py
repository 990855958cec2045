"""Read a configured TVB ``Simulator`` into plain arrays: the only module that reads TVB objects.

Everything comes from the TVB objects as TVB configured them (never from defaults of our own):
connectivity weights and integer delays for the simulator's dt and conduction speed, every model
parameter as TVB holds it, the coupling's a and b, the integrator's dt, scheme and state
boundaries, the noise's nsig and random stream, the monitors' periods, variables of interest and
buffers, and the exact starting point (current state, history buffer, current step).
Nothing is modified: arrays are copied and the random stream is deep-copied.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from tvb.datatypes import equations
from tvb.simulator import integrators as tvb_integrators
from tvb.simulator import monitors as tvb_monitors
from tvb.simulator import noise as tvb_noise
from tvb.simulator.simulator import Simulator

from .. import checks
from ..errors import NotConfiguredError, ParameterError, UnsupportedTVBObject
from .coupling import COUPLINGS
from .integrators import SCHEMES
from .models import MODELS
from .monitors import time_ordered_stock
from .registry import COUPLING_PREFIX, NOISE_NSIG

SUPPORTED_MONITORS = ("Raw", "SubSample", "TemporalAverage", "Bold")


@dataclass
class MonitorSpec:
    kind: str                              # one of SUPPORTED_MONITORS
    voi: np.ndarray                        # indices into the model's variables of interest
    istep: int = 1
    stock: Optional[np.ndarray] = None     # TemporalAverage / Bold interim stock (steps, voi, N, 1)
    interim_istep: int = 0                 # Bold
    bold_stock: Optional[np.ndarray] = None
    hrf_reversed: Optional[np.ndarray] = None
    k1_V0: Optional[float] = None
    tvb_name: str = ""


@dataclass
class SimulatorSpec:
    model: type                            # the torch port (tvb_torchfit.simulator.models)
    model_params: Dict[str, np.ndarray]    # TVB name -> (1,) or (N,)
    model_voi: np.ndarray                  # state-variable indices observed by monitors
    coupling: type                         # the torch port of the coupling (tvb_torchfit.simulator.coupling)
    coupling_params: Dict[str, np.ndarray]  # TVB attribute name ("a", "b") -> (1,) or (N,)
    weights: np.ndarray                    # (N, N), rows are targets
    idelays: np.ndarray                    # (N, N) int, in integration steps
    horizon: int
    dt: float
    scheme: str                            # key of integrators.SCHEMES
    stochastic: bool
    nsig: Optional[np.ndarray]             # broadcastable to (nvar, N)
    random_stream: Optional[np.random.RandomState]
    noise_seed: int
    lo: np.ndarray                         # (nvar,) state boundaries (-inf/inf where unbounded)
    hi: np.ndarray
    current_state: np.ndarray              # (nvar, N)
    history: np.ndarray                    # (horizon, N) coupling variable, TVB buffer order
    history_dtype: np.dtype
    current_step: int
    monitors: List[MonitorSpec] = field(default_factory=list)

    def parameters(self) -> Dict[str, np.ndarray]:
        """Every parameter by its canonical name (``registry``), in the twin's order: model, coupling, noise."""
        params = dict(self.model_params)
        params.update({COUPLING_PREFIX + k: v for k, v in self.coupling_params.items()})
        if self.stochastic:
            params[NOISE_NSIG] = self.nsig
        return params

    @property
    def n_nodes(self) -> int:
        return self.weights.shape[0]

    @property
    def nvar(self) -> int:
        return len(self.model.state_variables)


def _unsupported(what: str, obj, supported) -> UnsupportedTVBObject:
    names = ", ".join(supported)
    return UnsupportedTVBObject(f"{what} {type(obj).__name__} is not supported by tvb_torchfit; "
                                f"supported: {names}.")


def _check_configured(sim) -> None:
    if not isinstance(sim, Simulator):
        raise UnsupportedTVBObject(f"sim: expected a tvb.simulator.simulator.Simulator, got {type(sim).__name__}")
    if sim.history is None or getattr(sim.connectivity, "idelays", None) is None or sim.current_state is None:
        raise NotConfiguredError("the TVB Simulator is not configured: call sim.configure() before handing it "
                                 "to tvb_torchfit (the delays, history and initial state come from configure()).")


def _read_model(sim):
    port = MODELS.get(type(sim.model))
    if port is None:
        raise _unsupported("model", sim.model, [cls.__name__ for cls in MODELS])
    if sim.model.number_of_modes != 1:
        raise UnsupportedTVBObject(f"model {type(sim.model).__name__} with {sim.model.number_of_modes} modes; "
                                   "only single-mode models are supported.")
    if list(sim.model.cvar) != [0]:
        raise UnsupportedTVBObject(f"model {type(sim.model).__name__} with coupling variables "
                                   f"{list(sim.model.cvar)}; the port couples state variable 0 only.")
    params = _read_params("model", sim.model, port.parameter_names, sim.connectivity.number_of_regions)
    voi = np.array([port.state_variables.index(v) for v in sim.model.variables_of_interest], dtype=np.int64)
    return port, params, voi


def _read_params(what: str, obj, names, n: int) -> Dict[str, np.ndarray]:
    """The named parameters of a TVB model or coupling, flattened to (1,) global or (n,) region-wise."""
    params = {}
    for name in names:
        value = np.array(getattr(obj, name), dtype=np.float64).reshape(-1)
        if value.size not in (1, n):
            raise UnsupportedTVBObject(f"{what} parameter {type(obj).__name__}.{name} has {value.size} values; "
                                       f"expected 1 or {n} (global, or one per region).")
        params[name] = value
    return params


def _read_coupling(sim):
    port = COUPLINGS.get(type(sim.coupling))
    if port is None:
        raise _unsupported("coupling", sim.coupling, [cls.__name__ for cls in COUPLINGS])
    return port, _read_params("coupling", sim.coupling, port.parameter_names, sim.connectivity.number_of_regions)


def _read_integrator(sim, nvar: int):
    integ = sim.integrator
    name = type(integ).__name__
    if name not in SCHEMES or type(integ) is not getattr(tvb_integrators, name):
        raise _unsupported("integrator", integ, list(SCHEMES))
    if integ.clamped_state_variable_values is not None:
        raise UnsupportedTVBObject(f"integrator {name} with clamped state variables is not supported.")
    lo = np.full(nvar, -np.inf)
    hi = np.full(nvar, np.inf)
    if integ.state_variable_boundaries is not None:
        for idx, (l, h) in zip(integ.bounded_state_variable_indices, integ.state_variable_boundaries):
            lo[idx], hi[idx] = l, h
    stochastic = SCHEMES[name][1]
    nsig = stream = None
    seed = 0
    if stochastic:
        noise = integ.noise
        if type(noise) is not tvb_noise.Additive:
            raise _unsupported("noise", noise, ["Additive"])
        if noise.ntau > 0:
            raise UnsupportedTVBObject(f"coloured noise (Additive with ntau={noise.ntau}) is not supported; "
                                       "use white noise (ntau=0).")
        nsig = np.array(noise.nsig, dtype=np.float64)
        n = sim.connectivity.number_of_regions
        if nsig.ndim == 3:          # TVB's configured (nvar, N, modes)
            if nsig.shape[0] != nvar and nvar > 1:
                raise UnsupportedTVBObject(
                    f"noise.nsig was configured to shape {nsig.shape}, which TVB's own {type(integ).__name__} "
                    f"rejects at run time for {type(sim.model).__name__} ({nvar} state variables); give nsig "
                    f"shape (1,), ({nvar},) or ({nvar}, {n}).")
            nsig = nsig[..., 0]
        elif nsig.shape == (nvar,):
            nsig = nsig.reshape(nvar, 1)
        elif nsig.size != 1 and nsig.shape not in ((n,), (nvar, n)):
            raise UnsupportedTVBObject(f"noise.nsig of shape {nsig.shape}; expected (1,), ({nvar},), ({n},) "
                                       f"or ({nvar}, {n}).")
        stream = copy.deepcopy(noise.random_stream)
        seed = int(noise.noise_seed)
    return name, stochastic, lo, hi, nsig, stream, seed


def monitor_name(mon) -> str:
    """A short label for a TVB monitor (TVB's own ``str`` fails when no voi was given)."""
    return f"{type(mon).__name__}(period={mon.period:g} ms)"


def _read_monitor(mon, sim) -> MonitorSpec:
    kind = type(mon).__name__
    if kind not in SUPPORTED_MONITORS or type(mon) is not getattr(tvb_monitors, kind):
        raise _unsupported("monitor", mon, SUPPORTED_MONITORS)
    voi = np.array(mon.voi, dtype=np.int64)
    spec = MonitorSpec(kind=kind, voi=voi, istep=int(mon.istep), tvb_name=monitor_name(mon))
    step = int(sim.current_step)
    if kind == "TemporalAverage":
        spec.stock = np.array(mon._stock[: step % mon.istep])
    elif kind == "Bold":
        spec.interim_istep = int(mon._interim_istep)
        spec.stock = np.array(mon._interim_stock[: step % spec.interim_istep])
        spec.bold_stock = time_ordered_stock(np.array(mon._stock), step, spec.interim_istep)
        spec.hrf_reversed = np.array(mon.hemodynamic_response_function, dtype=np.float64)[0]
        if isinstance(mon.hrf_kernel, equations.FirstOrderVolterra):
            spec.k1_V0 = float(mon.hrf_kernel.parameters["k_1"] * mon.hrf_kernel.parameters["V_0"])
    return spec


def _check_values(sim) -> None:
    """The numbers TVB accepted at configure() but that would make its run (and the twin's) meaningless:
    dt, conduction speed, tract lengths, weights, the state, the monitors' periods (ParameterError naming them)."""
    dt = checks.positive(sim.integrator.dt, "integrator.dt", unit="ms")
    conn = sim.connectivity
    speed = np.asarray(conn.speed, dtype=np.float64).ravel()
    if speed.size == 0 or not (np.isfinite(speed).all() and (speed > 0).all()):
        raise ParameterError(f"connectivity.speed = {speed.tolist()}: expected a positive finite conduction speed "
                             "in mm/ms (TVB's default is 3.0).")
    for name in ("weights", "tract_lengths"):
        arr = np.asarray(getattr(conn, name), dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ParameterError(f"connectivity.{name} has {int((~np.isfinite(arr)).sum())} non-finite entries; "
                                 "expected finite values.")
    lengths = np.asarray(conn.tract_lengths, dtype=np.float64)
    if (lengths < 0).any():
        raise ParameterError(f"connectivity.tract_lengths has {int((lengths < 0).sum())} negative entries (min "
                             f"{lengths.min():g} mm); expected lengths >= 0 mm.")
    if not np.isfinite(np.asarray(sim.current_state, dtype=np.float64)).all():
        raise ParameterError("the simulator's current_state (initial conditions) is not finite.")
    for mon in sim.monitors:
        kind = type(mon).__name__
        supported = kind in SUPPORTED_MONITORS and type(mon) is getattr(tvb_monitors, kind)
        if supported and kind != "Raw" and not (float(mon.period) >= dt and int(mon.istep) >= 1):
            raise ParameterError(f"monitor {kind}(period={float(mon.period):g} ms) samples faster than the "
                                 f"integration step dt = {dt:g} ms; TVB refuses such a monitor at run time. Give "
                                 "a period >= dt (a multiple of dt).")


def _check_parameters(port, params: Dict[str, np.ndarray], owner: str) -> None:
    """Every parameter finite; those the port's equations divide by (``positive_parameters``) > 0."""
    for name, value in params.items():
        if not np.isfinite(value).all():
            raise ParameterError(f"{owner} parameter {name!r} = {value[:5].tolist()}: expected finite values.")
    for name in getattr(port, "positive_parameters", ()):
        if name in params and not (params[name] > 0).all():
            raise ParameterError(f"{owner} parameter {name!r} = {params[name][:5].tolist()}: expected values > 0 "
                                 f"(the equations divide by {name}; TVB's own run gives NaN or inf).")


def read_simulator(sim) -> SimulatorSpec:
    """Everything tvb_torchfit needs from a configured TVB Simulator, copied (the simulator is untouched)."""
    _check_configured(sim)
    if sim.surface is not None:
        raise UnsupportedTVBObject("surface simulations are not supported; use a region simulation "
                                   "(Simulator without surface).")
    if sim.stimulus is not None:
        raise UnsupportedTVBObject(f"stimulus {type(sim.stimulus).__name__} is not supported; "
                                   "set Simulator.stimulus to None.")
    _check_values(sim)
    port, params, voi = _read_model(sim)
    _check_parameters(port, params, "model " + type(sim.model).__name__)
    coupling, coupling_params = _read_coupling(sim)
    _check_parameters(coupling, coupling_params, "coupling " + type(sim.coupling).__name__)
    nvar = len(port.state_variables)
    scheme, stochastic, lo, hi, nsig, stream, seed = _read_integrator(sim, nvar)
    if nsig is not None and not (np.isfinite(nsig).all() and (nsig >= 0).all()):
        raise ParameterError(f"noise.nsig = {nsig.ravel()[:5]}: expected finite values >= 0 (a diffusion "
                             "coefficient).")
    buffer = np.asarray(sim.history.buffer)            # (horizon, ncvar, N, modes), float32 in TVB
    return SimulatorSpec(
        model=port, model_params=params, model_voi=voi, coupling=coupling, coupling_params=coupling_params,
        # TVB integrates with the weights and delays frozen into its history at configure() (float32
        # weights), not with later edits of sim.connectivity: read those.
        weights=np.array(sim.history.weights, dtype=np.float64),
        idelays=np.rint(np.asarray(sim.history.delays)).astype(np.int64),
        horizon=int(buffer.shape[0]), dt=float(sim.integrator.dt), scheme=scheme, stochastic=stochastic,
        nsig=nsig, random_stream=stream, noise_seed=seed, lo=lo, hi=hi,
        current_state=np.array(sim.current_state[..., 0], dtype=np.float64),
        history=np.array(buffer[:, 0, :, 0]), history_dtype=buffer.dtype,
        current_step=int(sim.current_step),
        monitors=[_read_monitor(m, sim) for m in sim.monitors])
