"""The schema of a run configuration (pydantic v2 models, one per TOML section; ``extra="forbid"`` everywhere), the
one TR rule, and the names the checks share. Reading and merging the files is ``config``'s job."""
import dataclasses
import math
from typing import Dict, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, create_model, field_validator

from .. import checks
from ..errors import ConfigError
from ..inference.config import FitConfig
from ..inference.stages import FIC_MODES

MIN_TR_MS = checks.TR_SECONDS_BELOW
MAP_FC_GRADIENT = "fc_gradient"            # a map computed from the training FC (data.maps.fc_gradient)


def check_tr_ms(tr: float, where: str = "tr") -> float:
    """The package's one TR rule (``checks.tr_ms``) for a config key: a TR is in ms; below 20 it is read as
    seconds (converted, with a warning); not a positive finite number: ``ConfigError``."""
    if isinstance(tr, bool) or not isinstance(tr, (int, float)):
        raise ConfigError(f"{where}={tr!r}: expected a positive repetition time in ms (e.g. 720.0).")
    return checks.tr_ms(tr, where, error=ConfigError, fix=f"set {where} = {tr * 1000:g}")


# ------------------------------------------------------------------------------------------------ schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


Number = Union[float, List[float]]


class RunSection(_Strict):
    name: str
    seed: int
    device: str
    dtype: Literal["float64", "float32"]
    fic_rate: float


class DataSection(_Strict):
    hcp: Optional[str] = None                # an HCP subject id (data.datasets.load_hcp_subject)
    dataset: Literal["hcp", "gw"]
    hcp_connectivity: Literal["group", "subject"]
    weights: Optional[str] = None            # TVB .zip/.h5 connectivity, or an SC array file
    tract_lengths: Optional[str] = None
    region_labels: Optional[str] = None
    bold: Optional[str] = None
    bold_test: Optional[str] = None          # a second run/session: the test data (validation.split = "session")
    tr: Optional[float] = None               # ms
    orientation: Literal["auto", "time_regions", "regions_time"]
    speed: float                             # mm/ms

    @field_validator("hcp", mode="before")
    @classmethod
    def _id_as_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class PreprocessingSection(_Strict):
    drop_regions: Optional[Union[str, List[Union[int, str]]]] = None
    remove_self_connections: bool
    homotopic: float
    symmetrize: Union[bool, Literal["mean", "max"]]
    log1p: bool
    sc_normalize: Optional[Literal["max", "tract", "region", "none"]]
    discard_volumes: int
    detrend: Union[bool, Literal["linear", "constant"]]
    bandpass: Optional[Tuple[float, float]] = None     # Hz
    zscore: bool


class ModelSection(_Strict):
    name: str
    params: Dict[str, Number]


class CouplingSection(_Strict):
    name: Literal["Linear"]
    a: Number
    b: Number


class IntegratorSection(_Strict):
    name: Literal["HeunStochastic", "HeunDeterministic", "EulerStochastic", "EulerDeterministic"]
    dt: float                                # ms
    nsig: Number
    noise_seed: int


HRF_KERNELS = ("FirstOrderVolterra", "Gamma", "DoubleExponential", "MixtureOfGammas")


class MonitorSection(_Strict):
    name: Literal["Bold"]
    period: Optional[float] = None           # ms (default: the TR)
    hrf_kernel: Literal[HRF_KERNELS] = "FirstOrderVolterra"    # tvb.datatypes.equations class, its defaults


class MapsSection(_Strict):
    fc_gradient_sparsity: float


class ValidationSection(_Strict):
    split: Literal["halves", "session", "none"]
    length: float                            # ms
    seeds: List[int]
    discard: float                           # ms
    fcd_window: float                        # ms
    fcd_step: float                          # ms
    processes: int
    stages: Union[Literal["all"], List[str]]


class ParamSection(_Strict):
    low: float
    high: float
    regionwise: bool = False
    prior: Optional[Tuple[Union[float, str, List[float]], float]] = None
    log: Optional[bool] = None
    relative: Optional[Literal["G_c"]] = None
    maps: Optional[List[str]] = None          # files (one value per region) or "fc_gradient"


def _fit_settings_model():
    """A pydantic model of ``FitConfig``'s fields (all optional: unset ones keep FitConfig's defaults)."""
    fields = {}
    for f in dataclasses.fields(FitConfig):
        if f.name in ("method", "fic_rate"):
            continue                           # set from the stage's own method and fic
        typ = Optional[Union[f.type, Literal["none"]]] if f.name == "schedule" else Optional[f.type]
        fields[f.name] = (typ, None)
    return create_model("FitSettings", __config__=ConfigDict(extra="forbid", strict=True), **fields)


FitSettings = _fit_settings_model()


class StageSection(_Strict):
    name: str
    method: Literal["linear", "twin"]
    fic: Literal[FIC_MODES]                  # type: ignore[valid-type]
    G: Optional[float] = None                # G / G_c
    fit: FitSettings                         # type: ignore[valid-type]
    params: Dict[str, ParamSection]


class RunConfig(_Strict):
    run: RunSection
    data: DataSection
    preprocessing: PreprocessingSection
    model: ModelSection
    coupling: CouplingSection
    integrator: IntegratorSection
    monitor: MonitorSection
    maps: MapsSection
    validation: ValidationSection
    stages: List[StageSection]
    source: Optional[str] = None             # the config file this was read from (recorded)
