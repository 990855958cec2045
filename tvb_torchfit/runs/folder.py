"""A run folder: where each file of a run lives, how it is written (atomically) and read back.

    RUN_DIR/config.json                 the resolved configuration (re-read by ``tvb-torchfit fit`` to rerun)
    RUN_DIR/versions.json               tvb_torchfit, TVB, torch, numpy, scipy, python
    RUN_DIR/data.json, data.npz         preprocessing record, split, TR, G_c; train/test BOLD and FC
    RUN_DIR/checkpoints/<stage>.ckpt    the fit checkpoint of a stage (a rerun resumes it)
    RUN_DIR/stages/<stage>/             fit.json + history.npz (FitResult.save: loss and parameter histories),
                                        values.json + values.npz (fitted values, coefficients of map parameters),
                                        simulator.json + .npz (the TVB Simulator at the fitted values), done.json
    RUN_DIR/stages/<stage>/validation/  report.json, report.npz (TVB FC per seed), validation.png
    RUN_DIR/report.json, report.md      in-sample / held-out r, ceiling, FCD KS, mean FC, per validated stage
    RUN_DIR/simulator.json + .npz       the final stage's TVB Simulator: ``load_fitted_simulator(RUN_DIR)``
"""
import json
import os
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from ..errors import ParameterError
from ..files import atomic_write
from ..roundtrip.tvbfile import load_simulator

PathLike = Union[str, os.PathLike]
SIMULATOR_STEM = "simulator"


def stage_dir(run_dir: PathLike, stage: str) -> Path:
    return Path(run_dir) / "stages" / stage


def write_json(path: PathLike, doc) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(doc, indent=2, default=_plain) + "\n").encode()))


def write_text(path: PathLike, text: str) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def write_npz(path: PathLike, arrays: Dict[str, np.ndarray]) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def read_json(path: PathLike):
    with open(path) as f:
        return json.load(f)


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return str(v)


def check_run_dir(run_dir: PathLike) -> Path:
    """``run_dir`` as a Path, or a clear error if it is not a finished or started run folder."""
    p = Path(run_dir)
    if not (p / "config.json").is_file():
        raise ParameterError(f"{str(p)!r} is not a run folder (no config.json; made by `tvb-torchfit fit`).")
    return p


def load_fitted_simulator(run_dir: PathLike, stage: Optional[str] = None, configure: bool = True):
    """The configured TVB ``Simulator`` of a run at its fitted values: the final stage's (``RUN_DIR/simulator``),
    or that of ``stage``. Rebuilt from JSON + npz (``roundtrip.tvbfile.load_simulator``; no pickle), with the
    run's connectivity, model, coupling, integrator and noise seed, Bold monitor and initial conditions: a run of
    ``clone_simulator(sim, noise_seed=s)`` is TVB's validation run for seed ``s``."""
    p = check_run_dir(run_dir)
    folder = p if stage is None else stage_dir(p, stage)
    if not (folder / f"{SIMULATOR_STEM}.json").is_file():
        what = "the run has not finished its last stage" if stage is None else f"stage {stage!r} has not finished"
        raise ParameterError(f"{str(folder)!r} holds no fitted simulator: {what}.")
    return load_simulator(folder, SIMULATOR_STEM, configure=configure)
