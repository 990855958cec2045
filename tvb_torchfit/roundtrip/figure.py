"""The validation figure: target, TVB and torch FC on one colour scale, the FC scatter, and the fit's history."""
import math
import os
from typing import Dict, Optional

import numpy as np

from .. import stats
from ..errors import ParameterError

FIGURE_NAME = "validation.png"


def _check_history(history) -> Dict:
    if not isinstance(history, dict):
        raise ParameterError(f"history must be a dict with 'loss' (list of floats) and 'params' "
                             f"(dict name -> list of floats), got {type(history).__name__}.")
    params = history.get("params", {}) or {}
    if not isinstance(params, dict):
        raise ParameterError("history['params'] must be a dict name -> list of values.")
    return {"loss": history.get("loss"), "params": params}


def plot_validation(report, target: np.ndarray, torch_fc: Optional[np.ndarray] = None,
                    history: Optional[Dict] = None, out_dir=".") -> str:
    """Draw the validation figure (Agg, no pyplot state touched) and return the path of the PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    hist = None if history is None else _check_history(history)
    mats = [("target FC", target), (f"TVB FC (mean of {len(report.fc_corr_per_seed)} run(s))", report.tvb_fc)]
    if torch_fc is not None:
        mats.append(("torch FC", torch_fc))
    off = np.concatenate([stats.upper(m) for _, m in mats] + [m[np.tril_indices(m.shape[0], -1)] for _, m in mats])
    off = off[np.isfinite(off)]
    vmax = float(np.max(np.abs(off))) if off.size else 1.0
    vmax = vmax if vmax > 0 else 1.0

    n_top = len(mats) + 1
    hist_panels = []
    if hist is not None:
        if hist["loss"] is not None and len(hist["loss"]):
            hist_panels.append(("loss", np.asarray(hist["loss"], dtype=np.float64)))
        for name, values in hist["params"].items():
            hist_panels.append((name, np.asarray(values, dtype=np.float64)))
    ncols = max(n_top, min(4, len(hist_panels)) if hist_panels else 0)
    nrows = 1 + math.ceil(len(hist_panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.9 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(nrows, ncols)

    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    im = None
    axes = []
    for k, (title, m) in enumerate(mats):
        ax = fig.add_subplot(gs[0, k])
        shown = np.array(m, dtype=np.float64)
        np.fill_diagonal(shown, np.nan)
        im = ax.imshow(shown, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(title + " (diagonal hidden)" if k == 0 else title)
        ax.set_xlabel("region")
        ax.set_ylabel("region")
        axes.append(ax)
    fig.colorbar(im, ax=axes, shrink=0.8, label="FC")

    ax = fig.add_subplot(gs[0, len(mats)])
    tu, vu = stats.upper(target), stats.upper(report.tvb_fc)
    r_mean = stats.pearson_r(vu, tu)
    ax.scatter(tu, vu, s=10, alpha=0.7, label="TVB (mean FC)")
    if torch_fc is not None:
        ax.scatter(tu, stats.upper(torch_fc), s=10, alpha=0.5, marker="x", label="torch")
    lim = [np.nanmin(np.r_[tu, vu, -0.05]), np.nanmax(np.r_[tu, vu, 0.05])]
    ax.plot(lim, lim, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("target FC")
    ax.set_ylabel("simulated FC")
    ax.set_title(f"r = {r_mean:.3f} (per-seed mean {report.fc_corr:.3f})")
    ax.legend(fontsize="small", loc="upper left")

    for k, (name, values) in enumerate(hist_panels):
        ax = fig.add_subplot(gs[1 + k // ncols, k % ncols])
        it = np.arange(values.shape[0])
        ax.plot(it, values.reshape(values.shape[0], -1), lw=1.0)
        if name == "loss" and k == 0 and values.size and (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("iteration")

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), FIGURE_NAME)
    fig.savefig(path, dpi=110)
    return path
