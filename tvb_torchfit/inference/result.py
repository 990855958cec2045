"""What a fit returns: ``FitResult`` (fitted values in TVB's names and shapes, history, settings, provenance),
how the reported values are chosen from the iterates, and where they came from.

Reported values: ``method="twin"`` (a stochastic loss) the mean of the iterates over the last ``average_last``
fraction of steps (Polyak averaging, which removes most of the step-to-step noise); ``method="linear"`` (a
deterministic loss) the iterate with the lowest loss. With ``fic_rate`` the J_i that feedback inhibition control
gives at the reported values is added, for write-back. A parameter given by coefficients on maps
(``Param(maps=...)``) is chosen by its coefficients (their mean, or the best step's), and its reported region-wise
values are the map model at those coefficients (``FitResult.coefficients`` holds them).
"""
import datetime
import json
import os
import platform
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from .. import checks
from ..errors import DataError
from ..roundtrip.writeback import apply_params
from ..version import __version__
from ..files import atomic_write


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
    coefficients: Dict[str, np.ndarray] = field(default_factory=dict)   # mapped parameters: (c_0, c_1, ..., c_K)

    def apply(self, sim, *, configure: bool = True):
        """Set the fitted values on a TVB Simulator (TVB's shapes, numpy arrays) and configure it."""
        return apply_params(sim, self.params, configure=configure)

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write ``path/fit.json`` (parameters, config, provenance) and ``path/history.npz``."""
        checks.writable_folder(path, "path")
        doc = {"params": {k: v.tolist() for k, v in self.params.items()},
               "start": {k: v.tolist() for k, v in self.start.items()},
               "last_iterate": {k: v.tolist() for k, v in self.last_iterate.items()},
               "coefficients": {k: v.tolist() for k, v in self.coefficients.items()},
               "config": self.config, "provenance": self.provenance,
               "final_loss": self.history["loss"][-1] if self.history.get("loss") else None}
        atomic_write(os.path.join(path, "fit.json"), lambda f: f.write(json.dumps(doc, indent=2).encode()))
        arrays = {"loss": np.asarray(self.history["loss"]), "fc_corr": np.asarray(self.history["fc_corr"])}
        arrays.update({f"param:{k}": np.asarray(v) for k, v in self.history["params"].items()})
        arrays.update({f"coef:{k}": np.asarray(v) for k, v in self.history.get("coefficients", {}).items()})
        if self.fc is not None:
            arrays["fc"] = self.fc
        atomic_write(os.path.join(path, "history.npz"), lambda f: np.savez(f, **arrays))
        return str(path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "FitResult":
        """Read what ``save`` wrote (JSON and an npz read with ``allow_pickle=False``: no code runs); a missing,
        truncated or foreign file raises ``DataError`` naming it."""
        if not isinstance(path, (str, os.PathLike)):
            raise DataError(f"path={path!r}: expected the folder FitResult.save wrote.")
        files = {name: os.path.join(path, name) for name in ("fit.json", "history.npz")}
        for name, full in files.items():
            if not os.path.isfile(full):
                raise DataError(f"{full!r} does not exist: {str(path)!r} is not a folder written by FitResult.save "
                                "(expected fit.json and history.npz).")
        try:
            with open(files["fit.json"]) as f:
                doc = json.load(f)
            arr = lambda d: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}  # noqa: E731
            params, start, last = arr(doc["params"]), arr(doc["start"]), arr(doc["last_iterate"])
            coefficients = arr(doc.get("coefficients", {}))
            config, prov = doc["config"], doc["provenance"]
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise DataError(f"{files['fit.json']!r} is not a readable FitResult file ({type(exc).__name__}: "
                            f"{str(exc)[:200]}).") from None
        try:
            with np.load(files["history.npz"], allow_pickle=False) as npz:
                history = {"loss": npz["loss"].tolist(), "fc_corr": npz["fc_corr"].tolist(),
                           "params": {k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith("param:")},
                           "coefficients": {k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith("coef:")}}
                fc = npz["fc"] if "fc" in npz.files else None
        except Exception as exc:                       # truncated zip, garbage, missing arrays
            raise DataError(f"{files['history.npz']!r} is not a readable FitResult history ({type(exc).__name__}: "
                            f"{str(exc)[:200]}).") from None
        return cls(params=params, history=history, config=config, provenance=prov, start=start,
                   last_iterate=last, coefficients=coefficients, fc=fc)


def select_values(history: Dict, cfg, fic_J_i=None, from_coefficients=None):
    """(reported values, which step they are: an index or a description, coefficients of the mapped parameters);
    ``fic_J_i(values)`` for FIC; ``from_coefficients(name, c)`` the values of a mapped parameter."""
    n_done = len(history["loss"])
    k = max(1, int(round(cfg.average_last * n_done)))
    pick = lambda traj: np.mean(np.stack(traj[-k:]), axis=0)      # noqa: E731
    selected = f"mean of the last {k} iterates"
    if cfg.method == "linear" and n_done:                  # deterministic loss: the best iterate
        best = int(np.argmin(history["loss"]))
        pick = lambda traj: np.asarray(traj[best])         # noqa: E731
        selected = best
    fitted = {name: pick(traj) for name, traj in history["params"].items()}
    coefficients = {name: pick(traj) for name, traj in history.get("coefficients", {}).items() if traj}
    for name, c in coefficients.items():                   # the map model at the chosen coefficients
        fitted[name] = from_coefficients(name, c)
    if cfg.fic_rate is not None:                          # J_i that FIC gives at the fitted values, for write-back
        with torch.no_grad():
            fitted_t = {name: torch.as_tensor(v, dtype=torch.float64) for name, v in fitted.items()}
            fitted["J_i"] = fic_J_i(fitted_t).cpu().numpy()
    return fitted, selected, coefficients


def provenance(sim, problem, n_done: int, selected) -> Dict[str, object]:
    return {"tvb_torchfit": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "tvb_simulator": f"{type(sim.model).__name__}, {type(sim.integrator).__name__} dt="
                             f"{float(sim.integrator.dt)} ms, {problem.n_nodes} regions, Bold TR={problem.tr_ms} ms",
            "steps_done": n_done, "selected_step": selected}
