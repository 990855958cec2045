"""Balloon–Windkessel haemodynamics, as in TVB's analyzer ``tvb.analyzers.fmri_balloon.BalloonModel``.

TVB's ``Bold`` *monitor* convolves with a fixed kernel (see ``monitors.py``); the Balloon–Windkessel ODE
exists in TVB only as this analyzer, which turns a finished neural ``TimeSeries`` into BOLD. Here it is
a streaming, batched, differentiable observation model: feed it neural input window by window and it
carries its state (s, f, v, q per node) from call to call, like the Bold monitor port.

Equations (TVB's ``balloon_dfun``, Stephan et al. 2007 eqs. 4–10; **time in seconds**: tau_s, tau_f,
tau_o in s, and the step is ``dt_ms / 1000`` s, exactly as TVB sets ``integrator.dt = 1 / sample_rate``)::

    ds/dt = x - s / tau_s - (f - 1) / tau_f          x: neural input as given, unscaled (TVB applies no gain)
    df/dt = s                                        f: inflow, 1 at rest
    dv/dt = (f - v**(1/alpha)) / tau_o               v: venous volume, 1 at rest
    dq/dt = (f * (1 - (1 - E0)**(1/f)) / E0 - v**(1/alpha) * q / v) / tau_o      q: deoxyhaemoglobin, 1 at rest

    BOLD, "nonlinear" (default):  y = V0 * (k1 (1 - q) + k2 (1 - q/v) + k3 (1 - v))
    BOLD, "linear":               y = V0 * ((k1 + k2)(1 - q) + (k3 - k2)(1 - v))
    RBM=True (revised, default):  k1 = 4.3 nu_0 E0 TE,  k2 = epsilon r_0 E0 TE,  k3 = 1 - epsilon
    RBM=False (classical):        k1 = 7 E0,            k2 = 2 E0,               k3 = 1 - epsilon

Defaults are TVB's: tau_s 1.54 s, tau_f 1.44 s, tau_o 0.98 s, alpha 0.32, TE 0.04 s, V0 4.0 (so y is
scaled like a percentage), E0 0.4, epsilon 0.5, nu_0 40.3 Hz, r_0 25 Hz.

Integration, as TVB: ``HeunDeterministic`` (default) or ``EulerDeterministic`` (the simulator's own
``integrators.heun_step`` / ``euler_step``, without noise or bounds), one step per input sample, the
input held at the *new* sample for the whole step (TVB steps state[n-1] -> state[n] with neural_activity[n]).
TVB starts at rest (s=0, f=v=q=1) at sample 0, so its output sample 0 is the rest BOLD (0) and its input
sample 0 is never used. Here the rest state lies *before* the first sample fed:
output k is the state after consuming input k. Hence TVB's ``evaluate()`` on x_0..x_{T-1} equals
[0] followed by this model on x_1..x_{T-1}.

With ``tr`` the output keeps only the samples whose global index k = 1, 2, ... (counted from rest,
at time k * dt ms) is a multiple of ``tr / dt``: the samples at t = TR, 2 TR, ... as with the Bold
monitor, whatever the window lengths.

TVB quirks, not reproduced: an (N,) ``epsilon`` broadcasts against TVB's modes axis and yields
(time, 1, N, N) (the port returns its diagonal, the region-wise BOLD); ``abs_diff`` returns the differences
of the time stamps as its time axis. Everything else matches TVB to ~1e-15 relative in float64.

With the twin: feed the neural state (e.g. S_e) as a TemporalAverage over ``dt`` ms (a few ms is plenty:
10 ms block means change the BOLD by ~1e-5 relative to 0.5 ms input); each call's autograd graph grows with
its number of samples (8 x 76 nodes, 720 samples: ~140 MB).
"""
from typing import Dict, Optional, Union

import numpy as np
import torch

from ..errors import ParameterError, UnsupportedTVBObject
from ..simulator.integrators import euler_step, heun_step

Number = Union[float, torch.Tensor]

DEFAULTS: Dict[str, float] = dict(tau_s=1.54, tau_f=1.44, tau_o=0.98, alpha=0.32, TE=0.04, V0=4.0,
                                  E0=0.4, epsilon=0.5, nu_0=40.3, r_0=25.0)
_POSITIVE = ("tau_s", "tau_f", "tau_o", "alpha", "TE", "V0", "nu_0", "r_0")


def _check_float(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a positive float in ms; got {value!r}") from None
    if not (value > 0 and value < float("inf")):
        raise ParameterError(f"{name} must be a finite positive float in ms; got {value!r}")
    return value


def neural_input(data: torch.Tensor, transformation: str = "none", normalize: bool = False) -> torch.Tensor:
    """TVB's ``BalloonModel.input_transformation`` (+ ``normalize_neural_input``) on (batch, time, voi, nodes).

    ``"none"``: the first variable; ``"sum"``: the sum over variables; ``"abs_diff"``: |first difference|
    of the first variable (one sample fewer; TVB differences every variable but only uses the first;
    note that TVB then also returns the *differences of the time stamps* as its time axis).
    ``normalize`` subtracts the mean over time (a whole-series operation: not for streaming windows).
    Returns (batch, time, nodes).
    """
    if not isinstance(data, torch.Tensor) or data.ndim != 4:
        raise ParameterError("data must be a torch.Tensor shaped (batch, time, voi, nodes); got "
                             f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
    if transformation == "none":
        x = data[:, :, 0]
    elif transformation == "sum":
        x = data.sum(dim=2)
    elif transformation == "abs_diff":
        x = (data[:, 1:, 0] - data[:, :-1, 0]).abs()
    else:
        raise ParameterError(f"transformation must be 'none', 'sum' or 'abs_diff' (TVB's "
                             f"NeuralInputTransformations); got {transformation!r}")
    return x - x.mean(dim=1, keepdim=True) if normalize else x


class BalloonWindkessel:
    """Streaming torch port of TVB's ``BalloonModel`` (see the module docstring for the equations).

    dt: sample period of the neural input, in ms (converted to s for the equations).
    Parameters use TVB's names and defaults; each may be a float or a tensor broadcastable against
    (batch, nodes) — (1,), (N,), (B, 1), (B, N) — and may require grad.
    """

    def __init__(self, dt: float, *, tau_s: Number = 1.54, tau_f: Number = 1.44, tau_o: Number = 0.98,
                 alpha: Number = 0.32, TE: Number = 0.04, V0: Number = 4.0, E0: Number = 0.4,
                 epsilon: Number = 0.5, nu_0: Number = 40.3, r_0: Number = 25.0, RBM: bool = True,
                 bold_model: str = "nonlinear", integrator: str = "heun"):
        self.dt = _check_float("dt", dt)
        self.params: Dict[str, torch.Tensor] = {}
        given = dict(tau_s=tau_s, tau_f=tau_f, tau_o=tau_o, alpha=alpha, TE=TE, V0=V0, E0=E0,
                     epsilon=epsilon, nu_0=nu_0, r_0=r_0)
        for name, value in given.items():
            t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
            if not t.is_floating_point():
                t = t.to(torch.float64)
            v = t.detach()
            ok = torch.isfinite(v).all() and (
                (v > 0).all() if name in _POSITIVE else ((v > 0) & (v < 1)).all() if name == "E0" else True)
            if not ok:
                what = "in (0, 1)" if name == "E0" else "> 0" if name in _POSITIVE else "finite"
                raise ParameterError(f"{name} must be {what}; got {value!r}")
            self.params[name] = t
        if bold_model not in ("nonlinear", "linear"):
            raise ParameterError(f"bold_model must be 'nonlinear' or 'linear' (TVB's BoldModels); got {bold_model!r}")
        if integrator not in ("heun", "euler"):
            raise ParameterError(f"integrator must be 'heun' (HeunDeterministic, TVB's default) or 'euler' "
                                 f"(EulerDeterministic); got {integrator!r}")
        self.RBM, self.bold_model, self.integrator = bool(RBM), bold_model, integrator
        self.state: Optional[torch.Tensor] = None      # (batch, 4, nodes): s, f, v, q; None = at rest
        self.step = 0                                  # input samples consumed since rest

    @classmethod
    def from_tvb(cls, balloon, dt: Optional[float] = None) -> "BalloonWindkessel":
        """The port of a TVB ``BalloonModel`` instance (its parameters, BOLD variant and integrator).

        dt (ms) defaults to the sample period of ``balloon.time_series``. Its input options
        (``neural_input_transformation``, ``normalize_neural_input``) concern the input: apply them with
        ``neural_input(data, bw.neural_input_transformation, bw.normalize_neural_input)``.
        """
        from tvb.simulator.integrators import EulerDeterministic, HeunDeterministic
        integ = balloon.integrator
        kind = {HeunDeterministic: "heun", EulerDeterministic: "euler"}.get(type(integ))
        if kind is None or integ.state_variable_boundaries is not None or integ.clamped_state_variable_values is not None:
            raise UnsupportedTVBObject(f"BalloonModel.integrator {type(integ).__name__}: supported are "
                                       "HeunDeterministic and EulerDeterministic without boundaries or clamping")
        if dt is None:
            ts = balloon.__dict__.get("time_series")            # reading an unset required trait raises
            if ts is None:
                raise ParameterError("dt (ms) must be given when the BalloonModel has no time_series")
            dt = ts.sample_period_ms
        params = {name: getattr(balloon, name) for name in DEFAULTS}
        params["epsilon"] = torch.tensor(np.array(params["epsilon"], dtype=np.float64))     # TVB: NArray (1,) or (N,)
        bw = cls(dt, RBM=balloon.RBM, bold_model=balloon.bold_model.value, integrator=kind, **params)
        bw.neural_input_transformation = balloon.neural_input_transformation.value
        bw.normalize_neural_input = bool(balloon.normalize_neural_input)
        return bw

    # ------------------------------------------------------------------------------------------ maths
    def coefficients(self, p: Optional[Dict[str, torch.Tensor]] = None):
        """k1, k2, k3 of the BOLD equation (TVB's ``compute_derived_parameters``)."""
        p = self.params if p is None else p
        if self.RBM:
            return 4.3 * p["nu_0"] * p["E0"] * p["TE"], p["epsilon"] * p["r_0"] * p["E0"] * p["TE"], 1 - p["epsilon"]
        return 7.0 * p["E0"], 2.0 * p["E0"], 1 - p["epsilon"]

    def dfun(self, X: torch.Tensor, x: torch.Tensor, p: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """d(s, f, v, q)/dt in 1/s; X (batch, 4, nodes), x (batch, nodes)."""
        p = self.params if p is None else p
        s, f, v, q = X.unbind(1)
        v_pow = v ** (1.0 / p["alpha"])
        ds = x - (1.0 / p["tau_s"]) * s - (1.0 / p["tau_f"]) * (f - 1)
        dv = (1.0 / p["tau_o"]) * (f - v_pow)
        dq = (1.0 / p["tau_o"]) * ((f * (1.0 - (1.0 - p["E0"]) ** (1.0 / f)) / p["E0"]) - v_pow * (q / v))
        return torch.stack((ds, s, dv, dq), dim=1)

    def bold(self, X: torch.Tensor, p: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """BOLD of states X ([time,] batch, 4, nodes) -> ([time,] batch, nodes)."""
        p = self.params if p is None else p
        k1, k2, k3 = self.coefficients(p)
        _, _, v, q = X.unbind(-2)
        V0 = p["V0"]
        if self.bold_model == "nonlinear":
            return V0 * (k1 * (1.0 - q) + k2 * (1.0 - q / v) + k3 * (1.0 - v))
        return V0 * ((k1 + k2) * (1.0 - q) + (k3 - k2) * (1.0 - v))

    # -------------------------------------------------------------------------------------- streaming
    def forward(self, x: torch.Tensor, tr: Optional[float] = None) -> torch.Tensor:
        """Consume neural input x (batch, time, nodes), one sample every dt ms; return BOLD.

        Returns (batch, time, nodes), or with ``tr`` (ms, a multiple of dt) only the samples at
        t = TR, 2 TR, ... counted from rest (consistent across calls). The state carries over.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ParameterError(f"x must be a floating torch.Tensor shaped (batch, time, nodes); got {got}")
        if not torch.isfinite(x.detach()).all():
            raise ParameterError("x must be finite; it has NaN or inf entries")
        istep = None
        if tr is not None:
            tr = _check_float("tr", tr)
            istep = round(tr / self.dt)
            if istep < 1 or abs(istep * self.dt - tr) > 1e-9 * tr:
                raise ParameterError(f"tr must be a multiple of dt = {self.dt} ms; got tr = {tr} ms")
        batch, n_time, nodes = x.shape
        if self.state is None:
            self.state = torch.ones(batch, 4, nodes, dtype=x.dtype, device=x.device)
            self.state[:, 0] = 0.0
        elif self.state.shape != (batch, 4, nodes):
            raise ParameterError(f"x has batch {batch} and {nodes} nodes but the carried state is for batch "
                                 f"{self.state.shape[0]}, {self.state.shape[2]} nodes; call reset() first")
        p = {k: v.to(dtype=x.dtype, device=x.device) for k, v in self.params.items()}
        dt = 1.0 / (1000.0 / self.dt)                     # s, computed as TVB's integrator.dt = 1 / sample_rate
        step = heun_step if self.integrator == "heun" else euler_step
        X, states = self.state, []
        for n in range(n_time):
            xn = x[:, n]
            X = step(X, lambda X: self.dfun(X, xn, p), dt, None, None, None)
            states.append(X)
        self.state = X
        first = self.step
        self.step += n_time
        if istep is not None:
            states = [X for n, X in enumerate(states) if (first + n + 1) % istep == 0]
        if not states:
            return x.new_zeros((batch, 0, nodes))
        return self.bold(torch.stack(states), p).transpose(0, 1)     # (time, batch, ...) -> (batch, time, nodes)

    __call__ = forward

    def reset(self) -> None:
        """Back to rest (s=0, f=v=q=1) before the next sample; the TR phase restarts."""
        self.state, self.step = None, 0

    def set_steady_state(self, x0: torch.Tensor) -> None:
        """Start from the fixed point for a constant input x0 (batch, nodes) instead of rest (x0 = 0).

        s = 0, f = 1 + tau_f x0, v = f**alpha, q = v (1 - (1 - E0)**(1/f)) / E0. Not something TVB's
        analyzer does (it starts at rest, and a non-zero mean input then rings for tens of seconds);
        the TR phase counter is left as it is.
        """
        if not isinstance(x0, torch.Tensor) or x0.ndim != 2 or not x0.is_floating_point():
            raise ParameterError("x0 must be a floating torch.Tensor shaped (batch, nodes); got "
                                 f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")
        p = {k: v.to(dtype=x0.dtype, device=x0.device) for k, v in self.params.items()}
        f = 1.0 + p["tau_f"] * x0
        if not (torch.isfinite(f.detach()).all() and (f.detach() > 0).all()):
            raise ParameterError("x0 must be finite and > -1/tau_f everywhere (the inflow f must stay positive)")
        v = f ** p["alpha"]
        q = v * (1.0 - (1.0 - p["E0"]) ** (1.0 / f)) / p["E0"]
        self.state = torch.stack(torch.broadcast_tensors(torch.zeros_like(f), f, v, q), dim=1)

    def detach_(self) -> None:
        """Cut the autograd graph held in the carried state (truncated back-propagation)."""
        if self.state is not None:
            self.state = self.state.detach()

    def state_dict(self) -> dict:
        return {"state": None if self.state is None else self.state.detach().clone(), "step": self.step}

    def load_state_dict(self, d: dict) -> None:
        self.state, self.step = d["state"], int(d["step"])
