"""The optimisation loop: fit parameters of a TVB simulator's torch twin to a target BOLD FC.

After Griffiths et al. (2022): the brain network is a deep net that receives noise on its input and
emits BOLD; the FC of the simulated BOLD is compared with the empirical FC and the parameters are
moved by a PyTorch optimiser. Concretely, for each optimiser step:

1. the twin (``batch`` noise realisations, torch noise streams) integrates ``window_trs`` TRs and its
   BOLD is observed through the simulator's TVB Bold monitor (``observation="bold"``, default) or the
   Balloon-Windkessel model of TVB's BalloonModel analyzer (``observation="balloon"``; ``observation.py``);
2. the BOLD of the window is appended to the detached BOLD of the preceding windows, and FC is
   computed over the last ``fc_window_trs`` TRs of each realisation, then averaged over realisations;
3. the loss (``losses``: -log(0.5 + 0.5 r) by default, plus ``rmse_weight`` * FC RMSE, priors and,
   with ``bifurcation_weight`` > 0, ``bifurcation.bifurcation_penalty``: each node's low state kept
   in the band ``bifurcation_target`` +- ``bifurcation_width`` (1/ms) of its Jacobian's largest
   eigenvalue, mean-field coupling input) is back-propagated through the window only (truncated
   back-propagation): state, delay history and Bold buffers are carried from window to window, detached;
4. the optimiser (Adam by default) and an optional learning-rate schedule step.

``method="linear"`` replaces steps 1-2 by the analytic BOLD FC of the network linearised around its low
fixed point (``linear.py``: no noise, no windows, exact gradients; delays ignored): a deterministic fit in
seconds, as a fit of its own or to start a twin fit. A step that crosses the bifurcation (no stable low
state) is taken back with a halved learning rate.

Before the first step the twin runs ``warmup_ms`` without gradients, so that the Bold monitor's 20 s
buffer is filled and the dynamics have left their initial transient; the warm-up's BOLD after those
20 s fills the FC window of the first steps. The fitted values reported are
the mean of the iterates over the last ``average_last`` fraction of steps (Polyak averaging, which
removes most of the step-to-step noise of a stochastic gradient); the last iterate is kept too.

Progress is shown with tqdm; a checkpoint (parameters, optimiser, scheduler, twin state including
its noise generators, BOLD buffer, history, torch RNG) is written atomically every
``checkpoint_every`` steps and on Ctrl-C; ``fit(..., checkpoint=path)`` resumes from it and reaches
the same result, bit for bit on CPU, as an uninterrupted run.
"""
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Union

import numpy as np
import torch

from . import losses
from ..analyzers.bifurcation import bifurcation_penalty, from_twin
from ..analyzers.fic import fic_J_i
from ..analyzers.linear import FixedPointError, linear_bold_fc
from .observation import make_observation
from ..simulator.adapter import read_simulator
from ..errors import ParameterError
from ..version import __version__
from .parameters import ParamSpec, ParameterSet
from ..simulator.twin import TorchSimulator
from ..roundtrip.writeback import find_bold
from ..roundtrip.writeback import apply_params, clone_simulator, low_state_initial_conditions

FC_LOSSES = {"log_corr": losses.loss_log_corr, "neg_corr": losses.loss_neg_corr, "rmse": losses.loss_rmse}


@dataclass
class FitConfig:
    """Every setting of a fit (recorded in the result and checked on resume)."""
    n_steps: int = 60
    window_trs: int = 20
    fc_window_trs: int = 100
    batch: int = 4
    lr: float = 0.05
    optimizer: str = "Adam"
    schedule: Optional[str] = "cosine"          # None or "cosine"
    loss: str = "log_corr"                      # key of FC_LOSSES
    rmse_weight: float = 0.0                    # + rmse_weight * RMSE(FC): pins the FC level, not only its pattern
    prior_weight: float = 1.0
    warmup_ms: Optional[float] = None           # default: 20 s Bold buffer + fc_window_trs TRs
    initial_state: str = "low"                  # "low" (all S = low_value) or "tvb" (the simulator's own start)
    low_value: float = 0.05
    seed: int = 0
    dtype: str = "float64"
    compile: bool = False
    average_last: float = 0.25
    patience: Optional[int] = None
    data_trs: Optional[int] = None              # length of the empirical session, in TRs (checked if given)
    fic_rate: Optional[float] = None            # Hz: J_i by feedback inhibition control (fic.py) at every step
    stability_margin: Optional[float] = None    # 1/ms, method="linear": penalise lambda_max > -margin (network Jacobian)
    method: str = "twin"                        # "twin": stochastic twin, truncated BPTT; "linear": analytic FC (linear.py)
    observation: str = "bold"                   # "bold": the simulator's TVB Bold monitor; "balloon": Balloon-Windkessel
    balloon_period_ms: float = 10.0             # "balloon": TemporalAverage period of its neural input, ms
    fcd_weight: float = 0.0                     # + weight * W1(FCD values sim, FCD values of target_bold) (0: off)
    fcd_window_trs: int = 40                    # FCD sliding window, TRs
    fcd_step_trs: int = 10                      # FCD window step, TRs
    bifurcation_weight: float = 0.0             # + weight * bifurcation.bifurcation_penalty (0: off)
    bifurcation_target: float = -0.003          # 1/ms: band centre for each node's lambda_eff (below 0)
    bifurcation_width: float = 0.002            # 1/ms: band half-width


@dataclass
class FitResult:
    """Fitted values in TVB's names and shapes, the fit's history, and what produced it."""
    params: Dict[str, np.ndarray]
    history: Dict[str, object]
    config: Dict[str, object]
    provenance: Dict[str, object] = field(default_factory=dict)
    start: Dict[str, np.ndarray] = field(default_factory=dict)
    last_iterate: Dict[str, np.ndarray] = field(default_factory=dict)
    fc: Optional[np.ndarray] = None             # torch-simulated FC of the last window (mean over realisations)

    def apply(self, sim, *, configure: bool = True):
        """Set the fitted values on a TVB Simulator (TVB's shapes, numpy arrays) and configure it."""
        return apply_params(sim, self.params, configure=configure)

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write ``path/fit.json`` (parameters, config, provenance) and ``path/history.npz``."""
        os.makedirs(path, exist_ok=True)
        doc = {"params": {k: v.tolist() for k, v in self.params.items()},
               "start": {k: v.tolist() for k, v in self.start.items()},
               "last_iterate": {k: v.tolist() for k, v in self.last_iterate.items()},
               "config": self.config, "provenance": self.provenance,
               "final_loss": self.history["loss"][-1] if self.history.get("loss") else None}
        _atomic_write(os.path.join(path, "fit.json"), lambda f: f.write(json.dumps(doc, indent=2).encode()))
        arrays = {"loss": np.asarray(self.history["loss"]), "fc_corr": np.asarray(self.history["fc_corr"])}
        arrays.update({f"param:{k}": np.asarray(v) for k, v in self.history["params"].items()})
        if self.fc is not None:
            arrays["fc"] = self.fc
        _atomic_write(os.path.join(path, "history.npz"), lambda f: np.savez(f, **arrays))
        return str(path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "FitResult":
        with open(os.path.join(path, "fit.json")) as f:
            doc = json.load(f)
        npz = np.load(os.path.join(path, "history.npz"))
        history = {"loss": npz["loss"].tolist(), "fc_corr": npz["fc_corr"].tolist(),
                   "params": {k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith("param:")}}
        arr = lambda d: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}
        return cls(params=arr(doc["params"]), history=history, config=doc["config"],
                   provenance=doc["provenance"], start=arr(doc["start"]), last_iterate=arr(doc["last_iterate"]),
                   fc=npz["fc"] if "fc" in npz.files else None)


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _bold_period_steps(sim, bold_index: int) -> int:
    period, dt = float(sim.monitors[bold_index].period), float(sim.integrator.dt)
    steps = period / dt
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ParameterError(f"the Bold monitor's period (TR) {period} ms is not a multiple of the integration "
                             f"step dt = {dt} ms; choose dt dividing the TR (e.g. {period / math.ceil(steps):g} ms).")
    return int(round(steps))


def _check_config(cfg: FitConfig) -> None:
    for name in ("n_steps", "window_trs", "fc_window_trs", "batch"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name}={v!r}: expected a positive integer.")
    if cfg.method not in ("twin", "linear"):
        raise ParameterError(f"method={cfg.method!r}: expected 'twin' (the stochastic twin) or 'linear' (analytic FC "
                             "of the network linearised around its low fixed point).")
    if cfg.method == "linear" and (cfg.fcd_weight or cfg.observation != "bold"):
        raise ParameterError("method='linear' gives the stationary FC of TVB's Bold monitor only: fcd_weight and "
                             "observation='balloon' need method='twin'.")
    if cfg.fc_window_trs < cfg.window_trs:
        raise ParameterError(f"fc_window_trs={cfg.fc_window_trs} is shorter than window_trs={cfg.window_trs}; "
                             "FC is estimated over at least one window.")
    if cfg.fcd_weight and cfg.fc_window_trs < cfg.fcd_window_trs + cfg.fcd_step_trs:
        raise ParameterError(f"fc_window_trs={cfg.fc_window_trs} holds fewer than two FCD windows "
                             f"(fcd_window_trs={cfg.fcd_window_trs}, fcd_step_trs={cfg.fcd_step_trs}).")
    if cfg.fc_window_trs < 3:
        raise ParameterError("fc_window_trs must be at least 3 TRs to estimate a correlation.")
    if cfg.data_trs is not None and cfg.window_trs > cfg.data_trs:
        raise ParameterError(f"window_trs={cfg.window_trs} is longer than the data ({cfg.data_trs} TRs).")
    if cfg.loss not in FC_LOSSES:
        raise ParameterError(f"loss={cfg.loss!r}: expected one of {', '.join(FC_LOSSES)}.")
    if not hasattr(torch.optim, cfg.optimizer):
        raise ParameterError(f"optimizer={cfg.optimizer!r} is not in torch.optim.")
    if cfg.schedule not in (None, "cosine"):
        raise ParameterError(f"schedule={cfg.schedule!r}: expected None or 'cosine'.")
    if cfg.stability_margin is not None and not (cfg.stability_margin > 0 and cfg.method == "linear"):
        raise ParameterError(f"stability_margin={cfg.stability_margin}: expected a positive rate in 1/ms, with "
                             "method='linear'.")
    if cfg.fic_rate is not None and not (cfg.fic_rate > 0 and math.isfinite(cfg.fic_rate)):
        raise ParameterError(f"fic_rate={cfg.fic_rate}: expected a positive excitatory rate in Hz (e.g. 3.0), or None.")
    if cfg.initial_state not in ("low", "tvb"):
        raise ParameterError(f"initial_state={cfg.initial_state!r}: expected 'low' or 'tvb'.")
    if cfg.bifurcation_weight < 0 or not math.isfinite(cfg.bifurcation_weight):
        raise ParameterError(f"bifurcation_weight={cfg.bifurcation_weight}: expected a finite value >= 0.")
    if cfg.bifurcation_weight and not (cfg.bifurcation_width > 0
                                       and cfg.bifurcation_target + cfg.bifurcation_width < 0):
        raise ParameterError(f"bifurcation band {cfg.bifurcation_target} +- {cfg.bifurcation_width} (1/ms): expected "
                             "width > 0 and the whole band below 0 (the low state must stay stable).")
    if not 0 < cfg.average_last <= 1:
        raise ParameterError(f"average_last={cfg.average_last}: expected a fraction in (0, 1].")


def _linear_fc_or_retreat(twin: TorchSimulator, values: Dict[str, torch.Tensor], pset: ParameterSet, optimizer,
                          state: Dict, max_retreats: int = 20):
    """``method="linear"``: the analytic BOLD FC at ``values`` (``linear.linear_bold_fc``).

    Where the low fixed point is unstable or not reached (a step went past the bifurcation), the step is
    taken back: the last accepted parameters and optimiser state are restored, the learning rate is
    halved, and None is returned (the caller retries). Accepted points are remembered in ``state``.
    Returns (FC, lambda_max of the network Jacobian in 1/ms, differentiable).
    """
    try:
        fc, info = linear_bold_fc(twin, values, initial=state.get("linear_x"))
    except FixedPointError as err:
        last = state.get("linear_last")
        state["retreats"] = state.get("retreats", 0) + 1
        if last is None or state["retreats"] > max_retreats:
            raise FixedPointError(f"method='linear': {err} (at {pset.numpy()}); start from values where the low "
                                  "state is stable, or narrow the bounds.") from err
        pset.load_state_dict(copy.deepcopy(last[0]))
        optimizer.load_state_dict(copy.deepcopy(last[1]))
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        state["linear_x"] = None                           # next try relaxes from the low start again
        return None
    state["linear_last"] = (copy.deepcopy(pset.state_dict()), copy.deepcopy(optimizer.state_dict()))
    state["linear_x"] = info.fixed_point.detach()          # warm start of the next step's fixed point
    return fc, info.lambda_max


def _cut_level_gradient(window: torch.Tensor) -> torch.Tensor:
    """The window's BOLD (batch, time, nodes) with the same values but no gradient through its mean level.

        x' = x - mean_t(x) + stop_gradient(mean_t(x))

    The FC window joins this window to the detached BOLD of earlier ones; a parameter change shifts the
    new window's mean BOLD level (e.g. mean S_e), and that step against the past would act on FC like a
    fluctuation common to all nodes: a gradient that is an artefact of truncation (over a long stationary
    run the level does not enter FC at all). Only the fluctuations within the window keep their gradient.
    """
    level = window.mean(dim=1, keepdim=True)
    return window - level + level.detach()


def _target_fcd(target_bold, cfg: FitConfig, n: int) -> torch.Tensor:
    """FCD values of the empirical BOLD (time, nodes) for the FCD term, with clear errors."""
    if target_bold is None:
        raise ParameterError(f"fcd_weight={cfg.fcd_weight} needs target_bold= (the empirical BOLD, shaped (time, "
                             "nodes), sampled at the TR) to compare FCD distributions.")
    bold = np.asarray(target_bold, dtype=np.float64)
    if bold.ndim != 2 or bold.shape[1] != n:
        raise ParameterError(f"target_bold has shape {bold.shape}; expected (time, {n}) (time by nodes, at the TR).")
    if not np.isfinite(bold).all():
        raise ParameterError(f"target_bold has {int((~np.isfinite(bold)).sum())} non-finite values; expected finite.")
    if bold.shape[0] < cfg.fcd_window_trs + cfg.fcd_step_trs:
        raise ParameterError(f"target_bold has {bold.shape[0]} TRs: too short for two FCD windows of "
                             f"{cfg.fcd_window_trs} TRs {cfg.fcd_step_trs} apart.")
    return losses.fcd_values(torch.as_tensor(bold), cfg.fcd_window_trs, cfg.fcd_step_trs)


def fit(sim, target_fc, params: Mapping[str, ParamSpec], *, target_bold=None,
        checkpoint: Optional[Union[str, os.PathLike]] = None, checkpoint_every: int = 5, resume: bool = True,
        progress: bool = True, **settings) -> FitResult:
    """Fit ``params`` of the configured TVB simulator ``sim`` so that its BOLD FC matches ``target_fc``.

    ``params`` maps TVB names to bounds or ``Param``s, e.g. ``{"G": (0.5, 4.0), "w_p": (0.8, 2.0),
    "J_i": Param(0.5, 1.5, regionwise=True, prior=(1.0, 0.2)), "nsig": (1e-5, 1e-3)}``. Start values
    come from the TVB objects. ``sim`` needs a Bold monitor (its period is the TR). Any field of
    ``FitConfig`` can be given as a keyword (``n_steps``, ``window_trs``, ``batch``, ``lr``, ...).
    ``sim`` itself is not modified; use ``FitResult.apply(sim)`` to write the fitted values back.
    ``target_bold`` (time, nodes), sampled at the TR, is needed only for the FCD term (``fcd_weight`` > 0):
    the distribution of its FCD values (``losses.fcd_values``, windows of ``fcd_window_trs`` every
    ``fcd_step_trs``) is compared with the simulated one by the exact Wasserstein-1 distance.
    """
    unknown = set(settings) - {f.name for f in dataclasses.fields(FitConfig)}
    if unknown:
        raise ParameterError(f"unknown fit setting(s) {sorted(unknown)}; known: "
                             f"{', '.join(f.name for f in dataclasses.fields(FitConfig))}.")
    cfg = FitConfig(**settings)
    _check_config(cfg)
    read_simulator(sim)                                   # clear errors for unsupported / unconfigured
    bold_index = find_bold(sim)
    tr_steps = _bold_period_steps(sim, bold_index)
    n = sim.connectivity.number_of_regions
    target = losses.check_target_fc(target_fc, n)
    dtype = {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]
    target_fcd = _target_fcd(target_bold, cfg, n) if cfg.fcd_weight else None
    if not params:
        raise ParameterError("params is empty: name at least one parameter to fit, e.g. {'G': (0.5, 4.0)}.")

    ic = low_state_initial_conditions(sim, cfg.low_value) if cfg.initial_state == "low" else None
    batch = cfg.batch if cfg.method == "twin" else 1          # "linear": the twin only holds the parameters
    obs = make_observation(cfg.observation, sim.monitors[bold_index], tr_steps * float(sim.integrator.dt),
                           batch, cfg.balloon_period_ms)
    fit_sim = clone_simulator(sim, initial_conditions=ic, monitors=obs.monitors)
    twin = TorchSimulator(read_simulator(fit_sim), noise="torch", batch=batch, dtype=dtype,
                          seed=cfg.seed, compile=cfg.compile and cfg.method == "twin")
    torch.manual_seed(cfg.seed)
    pset = ParameterSet(params, twin.params, n)
    if cfg.fic_rate is not None and "J_i" in pset.names:
        raise ParameterError("J_i is set by feedback inhibition control (fic_rate=...); do not also fit it.")
    start = pset.numpy()
    optimizer = getattr(torch.optim, cfg.optimizer)(pset.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.n_steps) \
        if cfg.schedule == "cosine" else None
    tr_ms = tr_steps * twin.dt
    history = {"loss": [], "fc_corr": [], "params": {k: [] for k in pset.names}}
    state = dict(step=0, buffer=None, best=math.inf, since_best=0)

    config_doc = dict(dataclasses.asdict(cfg), params={k: dataclasses.asdict(v) for k, v in pset.specs.items()},
                      tr_ms=tr_ms, dt=twin.dt, n_nodes=n, model=type(sim.model).__name__)
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        _restore(checkpoint, config_doc, pset, optimizer, scheduler, twin, history, state)
        obs.load_state_dict(state.pop("observation"))
    elif cfg.method == "twin":
        warmup = cfg.warmup_ms if cfg.warmup_ms is not None else 20000.0 + cfg.fc_window_trs * tr_ms
        with torch.no_grad():
            _set_params(twin, _model_values(twin, pset, cfg.fic_rate))
            bold = obs.run(twin, int(math.ceil(warmup / twin.dt / tr_steps)) * tr_steps)
        twin.detach_()
        obs.detach_()
        # the first FC windows are filled with the warm-up's BOLD (after the Bold monitor's 20 s transient)
        skip = int(math.ceil(20000.0 / tr_ms))
        warm = bold[:, skip:]
        state["buffer"] = warm[:, -cfg.fc_window_trs:] if warm.shape[1] else None

    # the last consistent (step-boundary) snapshot: what Ctrl-C writes, whatever point it interrupts
    snapshot = _payload(config_doc, pset, optimizer, scheduler, twin, obs, history, state) if checkpoint else None

    def save_checkpoint():
        if checkpoint is not None:
            _write_payload(checkpoint, snapshot)

    bar = _progress(cfg.n_steps, state["step"], progress)
    fc_mean = None
    try:
        while state["step"] < cfg.n_steps:
            values = _model_values(twin, pset, cfg.fic_rate)
            _set_params(twin, values)
            if cfg.method == "linear":
                got = _linear_fc_or_retreat(twin, values, pset, optimizer, state)
                if got is None:
                    continue
                fc_mean, lambda_max = got
            else:
                seq = _cut_level_gradient(obs.run(twin, cfg.window_trs * tr_steps))
                if state["buffer"] is not None:
                    seq = torch.cat((state["buffer"], seq), dim=1)
                seq = seq[:, -cfg.fc_window_trs:]
                fc_mean = losses.fc(seq).mean(dim=0)
            loss = FC_LOSSES[cfg.loss](fc_mean, target)
            if cfg.rmse_weight:
                loss = loss + cfg.rmse_weight * losses.loss_rmse(fc_mean, target)
            if any(p.prior is not None for p in pset.specs.values()):
                loss = loss + cfg.prior_weight * pset.prior_loss()
            if target_fcd is not None:
                sim_fcd = losses.fcd_values(seq, cfg.fcd_window_trs, cfg.fcd_step_trs).reshape(-1)
                loss = loss + cfg.fcd_weight * losses.fcd_distance(sim_fcd, target_fcd.to(sim_fcd.dtype))
            if cfg.method == "linear" and cfg.stability_margin:
                # quadratic wall once the slowest mode is closer than the margin to the instability
                loss = loss + 10.0 * (torch.relu(lambda_max + cfg.stability_margin) / cfg.stability_margin) ** 2
            if cfg.bifurcation_weight:
                loss = loss + cfg.bifurcation_weight * bifurcation_penalty(
                    **from_twin(twin), target=cfg.bifurcation_target, width=cfg.bifurcation_width)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            twin.detach_()
            obs.detach_()
            if cfg.method == "twin":
                state["buffer"] = seq.detach()
            state["step"] += 1
            r = float(losses.fc_corr(fc_mean.detach(), target))
            history["loss"].append(float(loss.detach()))
            history["fc_corr"].append(r)
            for k, v in pset.numpy().items():
                history["params"][k].append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", fc_r=f"{r:.3f}",
                                **{k: _fmt(v) for k, v in pset.numpy().items()})
            if checkpoint is not None:
                snapshot = _payload(config_doc, pset, optimizer, scheduler, twin, obs, history, state)
                if state["step"] % checkpoint_every == 0 or state["step"] == cfg.n_steps:
                    save_checkpoint()
            if cfg.patience is not None and _stop_early(history["loss"], state, cfg.patience):
                break
    except KeyboardInterrupt:
        save_checkpoint()
        if checkpoint is not None and progress:
            print(f"\ninterrupted: fit state of step {snapshot['state']['step']} saved to {checkpoint}; "
                  "call fit again with the same arguments to resume.")
        raise
    finally:
        if bar is not None:
            bar.close()

    n_done = len(history["loss"])
    k = max(1, int(round(cfg.average_last * n_done)))
    fitted = {name: np.mean(np.stack(traj[-k:]), axis=0) for name, traj in history["params"].items()}
    selected = f"mean of the last {k} iterates"
    if cfg.method == "linear" and n_done:                  # deterministic loss: the best iterate
        best = int(np.argmin(history["loss"]))
        fitted = {name: np.asarray(traj[best]) for name, traj in history["params"].items()}
        selected = best
    if cfg.fic_rate is not None:                          # J_i that FIC gives at the fitted values, for write-back
        with torch.no_grad():
            fitted_t = {name: torch.as_tensor(v, dtype=torch.float64) for name, v in fitted.items()}
            fitted["J_i"] = fic_J_i(twin, fitted_t, target_rate=cfg.fic_rate).cpu().numpy()
    provenance = {"tvb_torchfit": __version__, "torch": torch.__version__, "numpy": np.__version__,
                  "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "tvb_simulator": f"{type(sim.model).__name__}, {type(sim.integrator).__name__} dt={twin.dt} ms, "
                                   f"{n} regions, Bold TR={tr_ms} ms", "steps_done": n_done,
                  "selected_step": selected}
    return FitResult(params=fitted, history=history, config=config_doc, provenance=provenance, start=start,
                     last_iterate=pset.numpy(),
                     fc=None if fc_mean is None else fc_mean.detach().cpu().numpy())


def _model_values(twin: TorchSimulator, pset: ParameterSet, fic_rate: Optional[float]) -> Dict[str, torch.Tensor]:
    """The fitted values (TVB names, public shapes), plus J_i from feedback inhibition control if ``fic_rate``."""
    values = pset.values()
    if fic_rate is not None:                 # (the twin's J_i of the last step, graph freed, must not enter)
        values["J_i"] = fic_J_i(twin, dict(values, J_i=twin.params["J_i"].detach()), target_rate=fic_rate)
    return values


def _set_params(twin: TorchSimulator, values: Dict[str, torch.Tensor]) -> None:
    for name, value in values.items():
        twin.set_param(name, value)


def _fmt(v: np.ndarray) -> str:
    return f"{v.item():.4g}" if v.size == 1 else f"<{v.mean():.3g}>"


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="fit", unit="step")


def _stop_early(loss_history, state, patience: int) -> bool:
    smoothed = float(np.mean(loss_history[-max(1, patience // 2):]))
    if smoothed < state["best"] - 1e-4:
        state["best"], state["since_best"] = smoothed, 0
        return False
    state["since_best"] += 1
    return state["since_best"] >= patience


def _payload(config_doc, pset, optimizer, scheduler, twin, obs, history, state) -> Dict:
    """Everything needed to continue the fit from this step boundary (copies, safe to keep)."""
    return copy.deepcopy({"config": config_doc, "params": pset.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict() if scheduler is not None else None,
                          "twin": twin.state_dict(), "history": history,
                          "state": dict(state, observation=obs.state_dict()),
                          "torch_rng": torch.get_rng_state()})


def _write_payload(path, payload) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _atomic_write(str(path), lambda f: torch.save(payload, f))


def _restore(path, config_doc, pset, optimizer, scheduler, twin, history, state) -> None:
    payload = torch.load(path, weights_only=False)
    if json.dumps(payload["config"], sort_keys=True, default=str) != json.dumps(config_doc, sort_keys=True, default=str):
        raise ParameterError(f"checkpoint {path} was written by a fit with other settings; remove it or pass "
                             "resume=False to start afresh.")
    pset.load_state_dict(payload["params"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(payload["scheduler"])
    twin.load_state_dict(payload["twin"])
    history.update(payload["history"])
    state.update(payload["state"])
    torch.set_rng_state(payload["torch_rng"])
