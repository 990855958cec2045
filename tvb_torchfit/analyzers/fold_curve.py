"""The fold (bifurcation) curve of the Wong-Wang node in a plane of two parameters, and the demo printing it.

``bifurcation_curve(param_x, xs, param_y, y_range)``: for each x, the y at which ``lambda_eff``
(``stability.stability_rate``) changes sign continuously: a grid scan in y (as one batch), bisection, then
``scipy.optimize.brentq`` on a no-grad function; crossings where lambda_eff jumps rather than passes
through 0 are discarded. ``main`` (``python -m tvb_torchfit.analyzers.bifurcation``) prints the curves of
TVB's ExcInh at its defaults. See ``bifurcation`` for what the curves are and what TVB's defaults give.
"""
import argparse
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..simulator.models import ReducedWongWangExcInh
from .low_state import CHUNK, node_shape
from .network import Problem
from .node_problem import MEAN_FIELD, Params, node_problem
from .stability import Eigs, stability_rate
from .values import DTYPE

__all__ = ["Crossing", "BifurcationCurve", "bifurcation_curve", "mean_row_sum", "main"]


@dataclass
class Crossing:
    """One zero crossing of lambda_eff along y: y, kind ('saddle-node', 'hopf' or 'real'), the low S_e on
    the stable side, and the sign of d lambda_eff/dy (-1: the low state is stable above y)."""
    y: float
    kind: str
    s_e: float
    direction: int


@dataclass
class BifurcationCurve:
    """``y[i, k]``: the first crossing for ``x[i]`` and node k (NaN where lambda_eff keeps one sign in
    y_range); ``crossings[i][k]``: all continuous crossings; ``lam_max_peak[i, k]``: the largest
    lambda_eff on the scanned y grid (how close to the bifurcation the scan came)."""
    param_x: str
    param_y: str
    x: np.ndarray
    y: np.ndarray
    crossings: List[List[List[Crossing]]]
    lam_max_peak: np.ndarray
    y_range: Tuple[float, float]

    def table(self) -> str:
        lines = [f"{self.param_x:>8s}  critical {self.param_y} (node 0)  kind          max lambda on grid (1/ms)"]
        for i, x in enumerate(self.x):
            cs = self.crossings[i][0]
            y = "none in [%g, %g]" % self.y_range if not cs else ", ".join(f"{c.y:.6f}" for c in cs)
            kind = ", ".join(c.kind for c in cs) or "-"
            lines.append(f"{x:8.3f}  {y:>26s}  {kind:12s}  {self.lam_max_peak[i, 0]:+.3e}")
        return "\n".join(lines)


def _lambda_eff_np(prob: Problem, grid: int) -> Tuple[np.ndarray, Eigs]:
    with torch.no_grad():
        lam, e = stability_rate(prob.detached(), grid)
    return lam.detach().numpy(), e


def _at(prob: Problem, name: str, y) -> Problem:
    """``prob`` with parameter ``name`` = y (a number, or a row of values: one batch member each)."""
    return prob.with_params(**{name: torch.tensor(y, dtype=DTYPE).view(1, -1)})


def _scan(prob: Problem, param_y: str, ys: np.ndarray, grid: int) -> np.ndarray:
    """lambda_eff (N, n_y) on the y grid, the y values as batch members, in chunks."""
    N = node_shape(prob)[0]
    chunk = max(1, CHUNK // (grid * N))
    return np.concatenate([_lambda_eff_np(_at(prob, param_y, ys[j:j + chunk]), grid)[0]
                           for j in range(0, len(ys), chunk)], axis=1)


def _crossing(node: Problem, param_y: str, a: float, b: float, fa: float, grid: int, xtol: float,
              continuity_tol: float) -> Optional[Crossing]:
    """The continuous zero of lambda_eff(y) in [a, b] (lambda_eff(a) = fa, sign change), or None for a jump:
    12 bisections first (a jump is dropped early), then ``brentq``; then its kind and direction."""
    from scipy.optimize import brentq

    def f(y):
        return float(_lambda_eff_np(_at(node, param_y, [y]), grid)[0][0, 0])

    for _ in range(12):
        mid = 0.5 * (a + b)
        fm = f(mid)
        if fm * fa > 0:
            a, fa = mid, fm
        else:
            b = mid
    if max(abs(fa), abs(f(b))) > continuity_tol:
        return None
    r = brentq(f, a, b, xtol=xtol, rtol=4 * np.finfo(float).eps)
    eps = max(10 * xtol, 1e-9 * abs(r))
    below, above = f(r - eps), f(r + eps)
    if max(abs(below), abs(above)) > continuity_tol or below * above > 0:
        return None
    _, e = _lambda_eff_np(_at(node, param_y, [r - eps if below < 0 else r + eps]), grid)        # stable side
    _, e2 = _lambda_eff_np(_at(node, param_y, [r + eps if below < 0 else r - eps]), grid)       # unstable side
    if bool(e2.fixed_point.vanished.all()):
        kind = "saddle-node"
    elif float(e.im.abs().max()) > 0:
        kind = "hopf"
    else:
        kind = "real"
    return Crossing(y=float(r), kind=kind, s_e=float(e.fixed_point.state[0, 0, 0]),
                    direction=1 if above > below else -1)


def bifurcation_curve(param_x: str = "w_p", xs: Sequence[float] = (0.6, 0.8, 1.0, 1.2, 1.4), param_y: str = "J_i",
                      y_range: Tuple[float, float] = (0.0, 3.0), *, model_port=ReducedWongWangExcInh,
                      params: Optional[Params] = None, coupling_input=None, weights=None, coupling_a=None,
                      coupling_b=None, n_y: int = 121, grid: int = 513, xtol: float = 1e-10,
                      continuity_tol: float = 1e-3) -> BifurcationCurve:
    """For each x in ``xs`` (other parameters fixed), the y in ``y_range`` where ``lambda_eff`` crosses 0.

    ``lambda_eff`` is evaluated on ``n_y`` values of y at once (as a batch), every sign change is refined
    with ``scipy.optimize.brentq`` (no grad), and kept only if lambda_eff is within ``continuity_tol``
    (1/ms) of 0 on both sides of the root (a continuous crossing, not a jump where a ghost vanishes).
    With region-wise parameters or a mean-field input there is one curve per node.
    """
    base = node_problem(model_port, params, coupling_input, weights, coupling_a, coupling_b).detached()
    for name in (param_x, param_y):
        if name not in model_port.parameter_names:
            raise ValueError(f"{name!r} is not a parameter of {model_port.__name__}.")
    N, B = node_shape(base)
    if B != 1:
        raise ValueError("bifurcation_curve needs parameters without a batch axis (B = 1).")
    ys = np.linspace(y_range[0], y_range[1], n_y)
    Y = np.full((len(xs), N), np.nan)
    peak = np.full((len(xs), N), np.nan)
    crossings: List[List[List[Crossing]]] = []
    for i, x in enumerate(xs):
        px = _at(base, param_x, [float(x)])
        lam = _scan(px, param_y, ys, grid)                                      # (N, n_y)
        peak[i] = lam.max(axis=1)
        row = []
        for k in range(N):
            node = px.select_node(k) if N > 1 else px
            s = np.sign(lam[k])
            found = [c for m in np.nonzero(s[:-1] * s[1:] < 0)[0]
                     if (c := _crossing(node, param_y, ys[m], ys[m + 1], lam[k, m], grid, xtol,
                                        continuity_tol)) is not None]
            row.append(found)
            if found:
                Y[i, k] = found[0].y
        crossings.append(row)
    return BifurcationCurve(param_x=param_x, param_y=param_y, x=np.asarray(xs, dtype=float), y=Y,
                            crossings=crossings, lam_max_peak=peak, y_range=tuple(y_range))


# --------------------------------------------------------------------------- demo
def mean_row_sum(name: str = "connectivity_76.zip") -> float:
    """Mean row sum of a tvb-data connectome's weights divided by their maximum."""
    from tvb.datatypes.connectivity import Connectivity
    w = np.asarray(Connectivity.from_file(name).weights, dtype=np.float64)
    return float((w / w.max()).sum(axis=1).mean())


def main(argv=None):
    """Print the fold curve J_i*(w_p) of TVB's ExcInh at its defaults: isolated (G = 0), and with the
    mean-field input of connectivity_76 (weights / max, Linear coupling a = 1, b = 0, mean row sum)."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--w_p", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.2, 1.4, 2.6, 3.0, 3.5, 4.0])
    ap.add_argument("--J_i", type=float, nargs=2, default=[0.0, 3.0], help="J_i range scanned")
    ap.add_argument("--G", type=float, nargs="*", default=[0.1, 0.2], help="G values for the mean-field curves")
    ap.add_argument("--n_y", type=int, default=61, help="J_i grid points scanned before brentq")
    ap.add_argument("--plot", default=None, help="save a figure of the curves to this path (e.g. "
                                                 "demos/out/bifurcation_curve.png)")
    args = ap.parse_args(argv)
    t0 = time.time()
    curves = []
    print("ReducedWongWangExcInh, TVB defaults, zero coupling input (G = 0): critical J_i (lambda_eff = 0; "
          "the low state exists above it)")
    c0 = bifurcation_curve("w_p", args.w_p, "J_i", tuple(args.J_i), n_y=args.n_y)
    print(c0.table())
    curves.append(("G = 0 (isolated node)", c0))
    if args.G:
        R = mean_row_sum()
        for G in args.G:
            c = bifurcation_curve("w_p", args.w_p, "J_i", tuple(args.J_i), params={"G": G}, n_y=args.n_y,
                                  coupling_input=MEAN_FIELD, weights=np.array([[R]]), coupling_a=1.0,
                                  coupling_b=0.0)
            print(f"\nmean-field input, connectivity_76 (weights / max, mean row sum {R:.2f}), a = 1, G = {G}:")
            print(c.table())
            curves.append((f"mean field, G = {G}, row sum {R:.1f}", c))
    print(f"\n{time.time() - t0:.1f} s")
    if args.plot:
        import os
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for label, c in curves:
            ax.plot(c.x, c.y[:, 0], "o-", label=label)
        ax.set_xlabel("w_p")
        ax.set_ylabel("critical J_i")
        ax.set_ylim(*args.J_i)
        ax.legend(fontsize=8)
        ax.set_title("ExcInh: low state exists above the curve", fontsize=10)
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print("wrote", args.plot)
