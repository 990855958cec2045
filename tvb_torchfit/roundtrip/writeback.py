"""Write fitted parameters back into TVB, and rebuild TVB simulators from their traits.

The twin's parameters use TVB's names (see ``tvb_torchfit.simulator``): model parameters by name
(``"G"``, ``"w_p"``, ...), ``"coupling.a"``, ``"coupling.b"`` and ``"noise.nsig"``. The functions here
close the loop: a fitted set of values goes back onto a real TVB ``Simulator`` (``apply_params``), a
simulator can be rebuilt with another noise seed or another starting history (``clone_simulator``),
and a low-state starting history can be made for the bistable Wong-Wang models
(``low_state_initial_conditions``).

Notes on TVB 2.10 that shape this module:

* ``Simulator.configure()`` reshapes region-wise model parameters to ``model.spatial_param_reshape``
  (``(N,)`` for the Wong-Wang models, ``(N, 1)`` for some others) and ``noise.nsig`` to
  ``(nintvar, N, 1)`` / ``(nintvar, 1, 1)`` / ``(1, N, 1)``. ``apply_params`` writes values in the
  shapes a freshly configured simulator would hold, so that an already configured simulator keeps
  working even without configuring it again.
* ``copy.deepcopy`` of a configured ``Simulator`` loses state TVB keeps outside its traits, so
  ``clone_simulator`` builds every component anew from its declarative traits.
* ``configure()`` with initial conditions advances ``current_step`` by ``len(initial_conditions) - 1``
  *on top of* the current value; ``apply_params(..., configure=True)`` therefore resets
  ``current_step`` to 0 first, so that the reconfigured simulator starts exactly where a freshly built
  one would.
"""
import copy
from typing import Dict, Mapping, Optional, Tuple, Sequence

import numpy as np
from tvb.basic.neotraits.api import Final, NArray
from tvb.simulator import integrators as tvb_integrators
from tvb.simulator.simulator import Simulator

from tvb.simulator import monitors as tvb_monitors

from ..simulator.models import MODELS
from ..errors import ParameterError, UnsupportedTVBObject
from ..simulator.registry import COUPLING_PREFIX, NOISE_NSIG

# declarative attributes of TVB models that are arrays but not parameters
_MODEL_NON_PARAMS = ("state_variable_range", "state_variable_boundaries", "variables_of_interest",
                     "noise", "psi_table", "nerf_table", "gid", "state_variable_dfuns",
                     "parameter_names", "coupling_terms")
# connectivity attributes that configure() computes (never copied into a clone)
_CONN_COMPUTED = ("gid", "idelays", "delays", "number_of_regions", "number_of_connections")


# ---------------------------------------------------------------------------------------------- helpers
def check_simulator(sim) -> None:
    """A TVB region ``Simulator`` with a connectivity, or a ``TypeError`` / ``ParameterError`` /
    ``UnsupportedTVBObject`` saying what is wrong (it need not be configured)."""
    if not isinstance(sim, Simulator):
        raise UnsupportedTVBObject(f"sim: expected a tvb.simulator.simulator.Simulator, got {type(sim).__name__}")
    if sim.connectivity is None or sim.connectivity.weights is None:
        raise ParameterError("the Simulator has no connectivity (weights): cannot tell the number of regions.")
    if sim.surface is not None:
        raise UnsupportedTVBObject("surface simulations are not supported; use a region simulation "
                                   "(Simulator without surface).")


def n_regions(sim) -> int:
    """Number of regions of a TVB simulator's connectivity."""
    return int(np.asarray(sim.connectivity.weights).shape[0])


def _is_configured(sim) -> bool:
    return sim.history is not None and getattr(sim, "number_of_nodes", None) is not None


def is_stochastic(sim) -> bool:
    """Whether the simulator's integrator is one of TVB's stochastic integrators."""
    return isinstance(sim.integrator, tvb_integrators.IntegratorStochastic)


def monitor_list(sim) -> list:
    """The simulator's monitors as a list (TVB allows a single monitor object too)."""
    return list(sim.monitors) if isinstance(sim.monitors, (list, tuple)) else [sim.monitors]


def find_bold(sim) -> int:
    """Index of the simulator's first ``Bold`` monitor, or a ``ParameterError`` naming the monitors it has."""
    mons = monitor_list(sim)
    for i, m in enumerate(mons):
        if isinstance(m, tvb_monitors.Bold):
            return i
    names = ", ".join(type(m).__name__ for m in mons) or "none"
    raise ParameterError(f"the Simulator has no Bold monitor (monitors: {names}); fit and validate compare BOLD "
                         "FC: add e.g. monitors.Bold(period=720.0).")


def _array_params(obj, exclude=()) -> Tuple[str, ...]:
    """Names of the float NArray declarative traits of a TVB object (its numeric parameters)."""
    cls = type(obj)
    names = []
    for name in cls.declarative_attrs:
        if name in exclude:
            continue
        trait = getattr(cls, name, None)
        if isinstance(trait, NArray) and np.issubdtype(np.dtype(trait.dtype), np.floating):
            names.append(name)
    return tuple(names)


def model_parameter_names(model) -> Tuple[str, ...]:
    """The parameters of a TVB model, by TVB name (its float array traits)."""
    return _array_params(model, _MODEL_NON_PARAMS)


def _as_float_array(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):                               # a torch tensor, possibly with grad
        value = value.detach().cpu().numpy()
    try:
        arr = np.array(value, dtype=np.float64)                # always a fresh copy
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"parameter {name!r}: cannot read {value!r} as float numbers ({exc}).") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if not np.isfinite(arr).all():
        raise ParameterError(f"parameter {name!r} is not finite: {arr}")
    return arr


def _check_region_shape(name: str, arr: np.ndarray, n: int) -> np.ndarray:
    if arr.ndim != 1 or arr.size not in (1, n):
        raise ParameterError(f"parameter {name!r} has shape {arr.shape}; expected (1,) (global) or ({n},) "
                             f"(one value per region).")
    return arr


def _check_nsig_shape(sim, arr: np.ndarray, n: int) -> np.ndarray:
    nvar = len(sim.model.state_variables)
    nint = int(getattr(sim.model, "nintvar", nvar) or nvar)
    good = {(1,), (nvar,), (nint,), (n,), (nvar, n), (nint, n)}
    if arr.shape not in good:
        raise ParameterError(f"parameter 'noise.nsig' has shape {arr.shape}; expected (1,), ({nvar},) "
                             f"(per state variable), ({n},) (per region) or ({nvar}, {n}) "
                             f"for {type(sim.model).__name__} on {n} regions.")
    if (arr < 0).any():
        raise ParameterError("parameter 'noise.nsig' must be >= 0 (it is a diffusion coefficient).")
    if arr.shape == (n,) and n != nvar and nvar > 1:
        # TVB's configure turns (N,) into (1, N, 1), which its stochastic schemes then refuse for a model with
        # several state variables ("Got shape (1, N, 1) for noise but require (nvar, N)"): the same per-region
        # value for every state variable, as (nvar, N), is what TVB runs.
        arr = np.tile(arr, (nvar, 1))
    return arr


def _configured_nsig(sim, nsig: np.ndarray) -> np.ndarray:
    """nsig in the shape TVB's ``Simulator._configure_integrator_noise`` gives it (same rules, same order)."""
    model, n = sim.model, sim.number_of_nodes
    nvar, nint = model.nvar, model.nintvar
    modes = model.number_of_modes
    mask = model.state_variable_mask
    if nsig.shape in ((nint, n, modes), (1,)):
        return nsig
    if nsig.shape == (nvar,):
        return nsig[mask].reshape((nint, 1, 1))
    if nsig.shape == (nint,):
        return nsig.reshape((nint, 1, 1))
    if nsig.shape == (n,):
        return nsig.reshape((1, n, 1))
    if nsig.shape == (nvar, n):
        return nsig[mask].reshape((nint, n, 1))
    return nsig.reshape((nint, n, 1))                          # (nint, n)


def _user_nsig(sim, nsig) -> np.ndarray:
    """Undo TVB's configure-time reshape of nsig: a shape that TVB's Additive accepts from a user."""
    nsig = np.array(nsig, dtype=np.float64)
    if nsig.ndim != 3:
        return nsig
    a, b = nsig.shape[:2]
    if a == 1 and b == 1:
        return nsig.reshape(1)
    if b == 1:
        return nsig.reshape(a)
    if a == 1:
        return nsig.reshape(b)
    return nsig[..., 0].copy()


def _resolve(sim, name: str):
    """(kind, owner, attribute) for a parameter name, or a ParameterError that says what exists."""
    if not isinstance(name, str):
        raise ParameterError(f"parameter names are strings, got {name!r}.")
    model_names = model_parameter_names(sim.model)
    model_cls = type(sim.model).__name__
    if name == NOISE_NSIG:
        if not is_stochastic(sim):
            raise ParameterError(f"'noise.nsig' given, but the integrator {type(sim.integrator).__name__} is "
                                 "deterministic and has no noise; use a stochastic integrator "
                                 "(e.g. HeunStochastic with noise.Additive) or drop 'noise.nsig'.")
        if not hasattr(sim.integrator.noise, "nsig"):
            raise ParameterError(f"noise {type(sim.integrator.noise).__name__} has no nsig.")
        return "nsig", sim.integrator.noise, "nsig"
    if name.startswith(COUPLING_PREFIX):
        attr = name[len(COUPLING_PREFIX):]
        known = _array_params(sim.coupling, ("gid",))
        if attr not in known:
            raise ParameterError(f"{name!r}: coupling {type(sim.coupling).__name__} has no parameter {attr!r}; "
                                 f"known parameters of the coupling: "
                                 f"{', '.join(COUPLING_PREFIX + k for k in known)}.")
        return "region", sim.coupling, attr
    if name in model_names:
        return "region", sim.model, name
    known = list(model_names) + [COUPLING_PREFIX + k for k in _array_params(sim.coupling, ("gid",))]
    if is_stochastic(sim):
        known.append(NOISE_NSIG)
    if "." in name:
        reason = f"unknown parameter {name!r}"
    else:
        reason = f"model {model_cls} has no parameter {name!r}"
    raise ParameterError(f"{reason}; known parameters of this simulator: {', '.join(known)}.")


# ---------------------------------------------------------------------------------------------- apply_params
def apply_params(sim: Simulator, params: Mapping[str, np.ndarray], *, configure: bool = True) -> Simulator:
    """Set parameter values (TVB names, TVB shapes) onto a TVB ``Simulator``; configure it; return it.

    ``params`` maps names to values: model parameters by their TVB name (shape (1,) or (N,)),
    ``"coupling.a"`` / ``"coupling.b"`` (Linear coupling; (1,) or (N,)) and ``"noise.nsig"``
    ((1,), (nvar,), (N,) or (nvar, N); stochastic integrators only). Scalars and torch tensors are
    accepted and stored as float64 numpy arrays (TVB's traits reject bare floats). Every value is
    checked before anything is changed; a bad name, size or value raises ``ParameterError``.

    On a simulator that is already configured the values are stored in the shape ``configure()``
    would have given them, so the simulator stays runnable with ``configure=False``. With
    ``configure=True`` (default), ``current_step`` is reset to 0 and ``sim.configure()`` is called:
    delays, history (from ``sim.initial_conditions`` or TVB's random draw) and monitors start afresh,
    exactly as for a newly built simulator; the noise stream is left where it is.
    """
    check_simulator(sim)
    if not isinstance(params, Mapping):
        raise ParameterError(f"params must be a dict of name -> array, got {type(params).__name__}.")
    n = n_regions(sim)
    plan = []
    for name, value in params.items():
        kind, owner, attr = _resolve(sim, name)
        arr = _as_float_array(name, value)
        arr = _check_nsig_shape(sim, arr, n) if kind == "nsig" else _check_region_shape(name, arr, n)
        port = MODELS.get(type(sim.model))
        if owner is sim.model and attr in getattr(port, "positive_parameters", ()) and not (arr > 0).all():
            raise ParameterError(f"parameter {name!r} = {arr[:5].tolist()}: expected values > 0 (the equations of "
                                 f"{type(sim.model).__name__} divide by {attr}; TVB's run would give NaN or inf).")
        plan.append((kind, owner, attr, arr))

    configured = _is_configured(sim)
    for kind, owner, attr, arr in plan:
        if configured and not configure:
            if kind == "nsig":
                arr = _configured_nsig(sim, arr)
            elif owner is sim.model and arr.size == sim.number_of_nodes:
                arr = arr.reshape(sim.model.spatial_param_reshape)
        setattr(owner, attr, arr)

    if configure:
        sim.current_step = 0
        sim.configure()
    return sim


def read_params(sim: Simulator, names=None) -> Dict[str, np.ndarray]:
    """The current values of named parameters (all model and coupling parameters, and nsig if
    stochastic, by default), flattened to 1-D (nsig to (nvar, N) when it is per variable and region)."""
    check_simulator(sim)
    if names is None:
        names = list(model_parameter_names(sim.model))
        names += [COUPLING_PREFIX + k for k in _array_params(sim.coupling, ("gid",))]
        if is_stochastic(sim):
            names.append(NOISE_NSIG)
    out = {}
    for name in names:
        kind, owner, attr = _resolve(sim, name)
        value = np.array(getattr(owner, attr), dtype=np.float64)
        out[name] = _user_nsig(sim, value) if kind == "nsig" else value.reshape(-1)
    return out


# ---------------------------------------------------------------------------------------------- cloning
def _copy_traits(obj, exclude=(), **overrides):
    """A new object of the same class, built from deep copies of the declarative traits that are set.

    ``Final`` traits (e.g. a model's ``state_variable_range``) cannot be written again and are shared
    class-level values anyway: they are left to the class default."""
    cls = type(obj)
    kwargs = {}
    for name in cls.declarative_attrs:
        if name in exclude or name in overrides or isinstance(getattr(cls, name, None), Final):
            continue
        value = getattr(obj, name, None)
        if value is None:
            continue
        kwargs[name] = copy.deepcopy(value)
    kwargs.update(overrides)
    return cls(**kwargs)


def _clone_integrator(sim, noise_seed: Optional[int]):
    integ = sim.integrator
    if not is_stochastic(sim):
        return _copy_traits(integ, exclude=("gid",))
    noise = integ.noise
    seed = int(noise.noise_seed) if noise_seed is None else int(noise_seed)
    overrides = {"noise_seed": seed}
    if hasattr(noise, "nsig"):
        overrides["nsig"] = _user_nsig(sim, noise.nsig)
    new_noise = _copy_traits(noise, exclude=("gid", "random_stream"), **overrides)
    return _copy_traits(integ, exclude=("gid",), noise=new_noise)


def _check_initial_conditions(sim, ic) -> np.ndarray:
    ic = _as_float_array("initial_conditions", ic)
    n = n_regions(sim)
    nvar = len(sim.model.state_variables)
    modes = sim.model.number_of_modes
    if ic.ndim != 4 or ic.shape[1:] != (nvar, n, modes) or ic.shape[0] < 1:
        raise ParameterError(f"initial_conditions has shape {ic.shape}; expected TVB's history shape "
                             f"(time, {nvar}, {n}, {modes}) = (time, state variables, regions, modes).")
    return ic


def clone_simulator(sim: Simulator, *, noise_seed: Optional[int] = None,
                    initial_conditions: Optional[np.ndarray] = None,
                    monitor_indices: Optional[Sequence[int]] = None, monitors: Optional[Sequence] = None) -> Simulator:
    """A new, configured TVB ``Simulator`` built from ``sim``'s traits (``sim`` is not touched).

    Same connectivity (weights, tract lengths, speed, labels, ...), a model of the same class with the
    same parameter values, the same coupling, a fresh integrator of the same class and dt with fresh
    noise of the same class and nsig, seeded with ``noise_seed`` (default: the original's
    ``noise_seed``; the stream starts afresh from that seed, it does not continue the original's), and
    fresh monitors of the same classes, periods, variables of interest (and HRF kernel for Bold).
    ``initial_conditions`` (TVB shape (time, nvar, N, modes)) default to the original's
    ``initial_conditions`` trait; when that is unset TVB draws the random initial history from the new
    noise stream, as for any freshly built simulator. ``noise_seed`` is ignored for deterministic
    integrators; note that for those TVB draws the random initial history from numpy's *global* random
    state, so without initial conditions neither a clone nor any fresh build repeats the original's start.

    ``copy.deepcopy`` of a configured Simulator does not work in TVB 2.10 (state kept outside the
    traits is lost), hence this function. Surface simulations and stimuli are not supported.
    ``monitor_indices`` keeps only those of ``sim.monitors`` (all by default); ``monitors`` (TVB monitor
    objects, copied) replaces them instead.
    """
    check_simulator(sim)
    if sim.stimulus is not None:
        raise UnsupportedTVBObject(f"stimulus {type(sim.stimulus).__name__} is not supported by clone_simulator; "
                                   "set Simulator.stimulus to None.")
    if initial_conditions is None:
        initial_conditions = sim.initial_conditions
    ic = None if initial_conditions is None else _check_initial_conditions(sim, initial_conditions)
    mons = monitor_list(sim)
    if monitor_indices is not None:
        mons = [mons[i] for i in monitor_indices]
    if monitors is not None:
        mons = list(monitors)
    conn = _copy_traits(sim.connectivity, exclude=_CONN_COMPUTED)
    kwargs = dict(
        connectivity=conn,
        model=_copy_traits(sim.model, exclude=("gid",)),
        coupling=_copy_traits(sim.coupling, exclude=("gid",)),
        integrator=_clone_integrator(sim, noise_seed),
        monitors=tuple(_copy_traits(m, exclude=("gid",)) for m in mons),
        simulation_length=float(sim.simulation_length),
    )
    if sim.conduction_speed is not None:
        kwargs["conduction_speed"] = float(sim.conduction_speed)
    if ic is not None:
        kwargs["initial_conditions"] = ic
    return type(sim)(**kwargs).configure()


# ---------------------------------------------------------------------------------------------- low state
def _horizon(sim) -> int:
    conn = sim.connectivity
    if _is_configured(sim) and getattr(conn, "idelays", None) is not None:
        return int(conn.horizon)
    if conn.tract_lengths is None or conn.speed is None:
        raise ParameterError("cannot compute the delay horizon: configure the simulator first "
                             "(the connectivity has no tract lengths or speed yet).")
    delays = np.asarray(conn.tract_lengths) / np.asarray(conn.speed)        # as Connectivity.configure
    return int(np.rint(delays / sim.integrator.dt).astype(np.int32).max()) + 1   # as set_idelays


def low_state_initial_conditions(sim: Simulator, value=0.05) -> np.ndarray:
    """A constant ('low state') initial history for ``sim``: shape (horizon, nvar, N, modes).

    ``value`` is a number (every state variable) or one number per state variable. The horizon is
    ``sim.connectivity.horizon`` (``idelays.max() + 1``) of the configured simulator, or computed the
    way ``configure()`` would for an unconfigured one. TVB's default random initial history leaves
    nodes of the bistable Wong-Wang models stuck in the high state; fitting starts from a low state.
    Use it as ``Simulator(..., initial_conditions=ic)`` or ``clone_simulator(sim, initial_conditions=ic)``.
    """
    check_simulator(sim)
    nvar = len(sim.model.state_variables)
    values = _as_float_array("value", value)
    if values.shape not in ((1,), (nvar,)):
        raise ParameterError(f"value has shape {values.shape}; expected a number or {nvar} numbers "
                             f"(one per state variable of {type(sim.model).__name__}).")
    shape = (_horizon(sim), nvar, n_regions(sim), int(sim.model.number_of_modes))
    ic = np.empty(shape, dtype=np.float64)
    ic[...] = values.reshape(1, -1, 1, 1)
    return ic
