"""The settings of a fit (``FitConfig``: every keyword of ``fit`` besides its inputs) and their checks."""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .. import checks
from ..errors import ParameterError
from .objective import FC_LOSSES


@dataclass
class FitConfig:
    """Every setting of a fit (recorded in the result and checked on resume)."""
    n_steps: int = 60
    window_trs: int = 20
    fc_window_trs: int = 100
    batch: int = 4
    lr: float = 0.05
    optimizer: str = "Adam"                     # a torch.optim name; "LBFGS" (method="linear"): line search
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
    variance_weight: float = 0.0                # + weight * mean_i (log Var sim BOLD_i - log Var target_bold_i)**2 (0: off)
    fcd_window_trs: int = 40                    # FCD sliding window, TRs
    fcd_step_trs: int = 10                      # FCD window step, TRs
    bifurcation_weight: float = 0.0             # + weight * bifurcation.bifurcation_penalty (0: off)
    bifurcation_target: float = -0.003          # 1/ms: band centre for each node's lambda_eff (below 0)
    bifurcation_width: float = 0.002            # 1/ms: band half-width


def make_config(settings) -> FitConfig:
    """A checked ``FitConfig`` from ``fit``'s keyword settings (unknown names are refused, listing the known)."""
    known = [f.name for f in dataclasses.fields(FitConfig)]
    unknown = set(settings) - set(known)
    if unknown:
        raise ParameterError(f"unknown fit setting(s) {sorted(unknown)}; known: {', '.join(known)}.")
    cfg = FitConfig(**settings)
    check_config(cfg)
    return cfg


def _check_types(cfg: FitConfig) -> None:
    """Each setting on its own: type and range (``checks``: ParameterError naming the setting and its value)."""
    for name in ("n_steps", "window_trs", "fc_window_trs", "batch", "fcd_window_trs", "fcd_step_trs"):
        checks.integer(getattr(cfg, name), name, minimum=1)
    for name in ("patience", "data_trs"):
        checks.optional(checks.integer, getattr(cfg, name), name, minimum=1)
    checks.positive(cfg.lr, "lr")
    for name in ("rmse_weight", "prior_weight", "fcd_weight", "variance_weight", "bifurcation_weight"):
        checks.non_negative(getattr(cfg, name), name)
    checks.optional(checks.non_negative, cfg.warmup_ms, "warmup_ms", unit="ms")
    checks.positive(cfg.balloon_period_ms, "balloon_period_ms", unit="ms")
    checks.probability(cfg.low_value, "low_value")
    checks.seed(cfg.seed, "seed")
    checks.boolean(cfg.compile, "compile")
    checks.probability(cfg.average_last, "average_last", open_low=True)
    checks.finite(cfg.bifurcation_target, "bifurcation_target")
    checks.finite(cfg.bifurcation_width, "bifurcation_width")
    checks.optional(checks.finite, cfg.fic_rate, "fic_rate")
    checks.optional(checks.finite, cfg.stability_margin, "stability_margin")
    for name, options in (("method", ("twin", "linear")), ("observation", ("bold", "balloon")),
                          ("initial_state", ("low", "tvb")), ("dtype", ("float64", "float32")),
                          ("schedule", (None, "cosine")), ("loss", tuple(FC_LOSSES))):
        checks.choice(getattr(cfg, name), name, options)
    optimizer = getattr(torch.optim, cfg.optimizer, None) if isinstance(cfg.optimizer, str) else None
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)
            and optimizer is not torch.optim.Optimizer):
        raise ParameterError(f"optimizer={cfg.optimizer!r}: expected the name of a torch.optim optimiser, e.g. "
                             "'Adam' or 'SGD'.")


def check_config(cfg: FitConfig) -> None:
    """Every setting's type and range (``_check_types``), then the combinations that make no sense, with errors
    that say why."""
    _check_types(cfg)
    if cfg.method == "linear" and (cfg.fcd_weight or cfg.observation != "bold"):
        raise ParameterError("method='linear' gives the stationary FC of TVB's Bold monitor only: fcd_weight and "
                             "observation='balloon' need method='twin'.")
    if cfg.optimizer == "LBFGS" and (cfg.method != "linear" or cfg.schedule is not None):
        raise ParameterError(f"optimizer='LBFGS' with method={cfg.method!r}, schedule={cfg.schedule!r}: its line "
                             "search needs a deterministic loss (method='linear') and sets its own step lengths "
                             "(schedule=None, \"none\" in a run file; lr is the first trial step, 1.0 the usual).")
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
    if cfg.stability_margin is not None and not (cfg.stability_margin > 0 and cfg.method == "linear"):
        raise ParameterError(f"stability_margin={cfg.stability_margin}: expected a positive rate in 1/ms, with "
                             "method='linear'.")
    if cfg.fic_rate is not None and not (cfg.fic_rate > 0 and math.isfinite(cfg.fic_rate)):
        raise ParameterError(f"fic_rate={cfg.fic_rate}: expected a positive excitatory rate in Hz (e.g. 3.0), or None.")
    if cfg.bifurcation_weight and not (cfg.bifurcation_width > 0
                                       and cfg.bifurcation_target + cfg.bifurcation_width < 0):
        raise ParameterError(f"bifurcation band {cfg.bifurcation_target} +- {cfg.bifurcation_width} (1/ms): expected "
                             "width > 0 and the whole band below 0 (the low state must stay stable).")
