"""A run's inputs from its configuration: the subject (connectivity and BOLD, preprocessed), the train/test split,
the region maps, and the configured TVB ``Simulator``.

The split (``validation.split``): ``"halves"`` cuts the BOLD (after ``discard_volumes``) into two halves of equal
length, the first for fitting (train), the second for testing; ``"session"`` takes ``data.bold_test`` (a second run
or session) as the test data; ``"none"`` uses all of it for both (in-sample only). The BOLD steps that act along
time (detrend, band-pass, z-score) are applied to each part on its own, so that nothing of the test data enters the
training FC.
"""
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .. import stats
from ..data import datasets, maps as maps_
from ..data import preprocessing as pp
from ..data.subject import Subject
from ..errors import ConfigError, DataError
from .schema import MAP_FC_GRADIENT, RunConfig


@dataclass
class Inputs:
    subject: Subject                  # the connectivity (preprocessed) and the whole BOLD
    train_bold: np.ndarray            # (time, regions)
    test_bold: np.ndarray
    tr: float                         # ms

    @property
    def train_fc(self) -> np.ndarray:
        return stats.fc(self.train_bold).numpy()

    @property
    def test_fc(self) -> np.ndarray:
        return stats.fc(self.test_bold).numpy()


def _structure(cfg: RunConfig, s: Subject, where: str) -> Subject:
    p = cfg.preprocessing
    s = pp.preprocess(s, drop_regions=p.drop_regions, remove_self_connections=p.remove_self_connections,
                      symmetrize=p.symmetrize, log1p=p.log1p)
    if p.homotopic:
        if not pp.homotopic_pairs(s.connectivity.region_labels):
            raise ConfigError(f"{where}: key 'preprocessing.homotopic': {p.homotopic} but the region labels have no "
                              "left/right pairs (e.g. 'X_L'/'X_R' or 'lX'/'rX'); set it to 0 or give "
                              "data.region_labels.")
        s = pp.add_homotopic(s, p.homotopic)
    if p.sc_normalize is not None:
        s = pp.preprocess(s, sc_normalize=p.sc_normalize)
    return s


def _time_steps(cfg: RunConfig, bold: np.ndarray, tr: float) -> np.ndarray:
    p = cfg.preprocessing
    if p.detrend:
        bold = pp.detrend(bold, "linear" if p.detrend is True else p.detrend)
    if p.bandpass is not None:
        bold = pp.bandpass(bold, p.bandpass[0], p.bandpass[1], tr=tr)
    if p.zscore:
        bold = pp.zscore(bold)
    return np.asarray(bold, dtype=np.float64)


def load_inputs(cfg: RunConfig, where: str) -> Inputs:
    """The subject and the train/test BOLD of a run (module docstring); ``DataError`` is reported as a
    ``ConfigError`` naming the data key."""
    d = cfg.data
    try:
        if d.hcp is not None:
            s = datasets.load_hcp_subject(d.hcp, dataset=d.dataset, tr=d.tr)
            if d.hcp_connectivity == "group":
                group = datasets.hcp_group_connectivity(dataset=d.dataset)
                s = s.replace(connectivity=group)
                s.preprocessing.append({"step": "group_connectivity", "dataset": d.dataset,
                                        "weights": "mean of weights / max", "tract_lengths": "mean"})
        else:
            s = datasets.load_subject(d.weights, d.bold, tract_lengths=d.tract_lengths, tr=d.tr,
                                      region_labels=d.region_labels, orientation=d.orientation)
        s.connectivity.speed = np.array([float(d.speed)])
        s = _structure(cfg, s, where)
        if cfg.preprocessing.discard_volumes:
            s = pp.discard_volumes(s, cfg.preprocessing.discard_volumes)
        bold, tr = s.bold, float(s.tr)
        if cfg.validation.split == "halves":
            half = bold.shape[0] // 2
            train, test = bold[:half], bold[half:2 * half]
        elif cfg.validation.split == "session":
            other = datasets.load_bold(d.bold_test, tr=tr, orientation=d.orientation, n_regions=s.n_regions)
            train, test = bold, pp.discard_volumes(other.data, cfg.preprocessing.discard_volumes) \
                if cfg.preprocessing.discard_volumes else other.data
        else:
            train, test = bold, bold
    except DataError as err:
        raise ConfigError(f"{where}: key 'data': {err}") from None
    return Inputs(subject=s, train_bold=_time_steps(cfg, train, tr), test_bold=_time_steps(cfg, test, tr), tr=tr)


def stage_maps(cfg: RunConfig, inputs: Inputs, where: str) -> Dict[str, Dict[str, np.ndarray]]:
    """For each stage parameter with maps: {stage.param: (K, N) maps, in the order given}; ``"fc_gradient"`` is the
    principal gradient of the training FC (``data.maps.fc_gradient``)."""
    out = {}
    n = inputs.subject.n_regions
    for i, stage in enumerate(cfg.stages):
        for name, p in stage.params.items():
            if not p.maps:
                continue
            rows: List[np.ndarray] = []
            for j, m in enumerate(p.maps):
                key = f"stages.{i}.params.{name}.maps.{j}"
                try:
                    sparsity = cfg.maps.fc_gradient_sparsity
                    rows.append(maps_.fc_gradient(inputs.train_fc, sparsity=sparsity) if m == MAP_FC_GRADIENT
                                else maps_.load_map(m, n, name=key))
                except DataError as err:
                    raise ConfigError(f"{where}: key '{key}': {err}") from None
            out[f"{stage.name}.{name}"] = np.stack(rows)
    return out


def build_simulator(cfg: RunConfig, inputs: Inputs):
    """The configured TVB ``Simulator`` of a run: the subject's connectivity, the model with its fixed parameters,
    Linear coupling, the integrator with Additive noise, a Bold monitor at the TR (or ``monitor.period``) with the
    HRF kernel ``monitor.hrf_kernel`` (a ``tvb.datatypes.equations`` class with TVB's default parameters)."""
    from tvb.datatypes import equations
    from tvb.simulator import coupling, integrators, models, monitors, noise, simulator
    n = inputs.subject.n_regions
    arr = lambda v: np.array(v, dtype=np.float64).reshape(-1)        # noqa: E731
    params = {k: arr(v) for k, v in cfg.model.params.items()}
    for k, v in params.items():
        if v.size not in (1, n):
            raise ConfigError(f"{cfg.source}: key 'model.params.{k}': {v.size} values; expected 1 or one per region "
                              f"({n}).")
    model = getattr(models, cfg.model.name)(**params)
    integ_cls = getattr(integrators, cfg.integrator.name)
    if "Stochastic" in cfg.integrator.name:
        integ = integ_cls(dt=cfg.integrator.dt, noise=noise.Additive(nsig=arr(cfg.integrator.nsig),
                                                                     noise_seed=cfg.integrator.noise_seed))
    else:
        integ = integ_cls(dt=cfg.integrator.dt)
    period = cfg.monitor.period if cfg.monitor.period is not None else inputs.tr
    sim = simulator.Simulator(model=model, connectivity=inputs.subject.connectivity,
                              coupling=coupling.Linear(a=arr(cfg.coupling.a), b=arr(cfg.coupling.b)),
                              integrator=integ, monitors=(monitors.Bold(period=float(period),
                                                                        hrf_kernel=getattr(equations,
                                                                                           cfg.monitor.hrf_kernel)()),))
    return sim.configure()
