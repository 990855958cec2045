"""The critical coupling G_c of the FIC state: the largest global coupling at which the network's fixed point with
every node at ``fic_rate`` Hz (feedback inhibition control, ``fic.fic_state``) is linearly stable.

For TVB's ReducedWongWangExcInh with J_i set by FIC, the FIC state exists for every G (J_i absorbs the long-range
input) but loses stability as G grows: the largest real part of the eigenvalues of the network Jacobian
(``network.network_jacobian``, delays ignored, 1/ms)

    lambda_max(G) = max Re eig A(x_FIC(G), J_i(G), G)

crosses zero at G_c. Above ~0.9 G_c TVB's noise pushes the network out of the low state, so G_c sets the scale
of the coupling in a fit (bounds as fractions of G_c). ``critical_coupling`` brackets the crossing by doubling
from ``start`` and bisects it; the returned G is on the stable side (lambda_max(G) < 0).
"""
import math
from typing import Mapping, Optional

import torch

from ..errors import ParameterError
from .fic import fic_state
from .network import network_jacobian

__all__ = ["fic_lambda_max", "critical_coupling"]


def fic_lambda_max(spec_or_twin, G: float, fic_rate: float = 3.0,
                   params: Optional[Mapping[str, object]] = None) -> float:
    """lambda_max (1/ms): the largest real part of the network Jacobian's eigenvalues at the FIC state for global
    coupling ``G`` (the model's ``G``; J_i by FIC at ``fic_rate`` Hz; ``params`` override the simulator's)."""
    p = dict(params or {})
    p["G"] = torch.tensor([float(G)], dtype=torch.float64)
    with torch.no_grad():
        J, x = fic_state(spec_or_twin, p, target_rate=fic_rate)
    A = network_jacobian(spec_or_twin, dict(p, J_i=J), x=x, create_graph=False)
    return float(torch.linalg.eigvals(A.detach()).real.max())


def critical_coupling(spec_or_twin, fic_rate: float = 3.0, params: Optional[Mapping[str, object]] = None, *,
                      start: float = 1.0, cap: float = 1e3, rtol: float = 1e-6, max_iter: int = 100) -> float:
    """G_c: the largest G (TVB's ``model.G``) at which the FIC state (every node at ``fic_rate`` Hz) is stable.

    ``spec_or_twin``: a ``SimulatorSpec`` (``read_simulator(sim)``) or ``TorchSimulator`` of ReducedWongWangExcInh;
    ``params`` override its parameters (w_p, coupling.a, ...; G and J_i are set here). The crossing is bracketed by
    doubling from ``start`` up to ``cap`` and bisected to a relative width ``rtol``; the lower end of the final
    bracket is returned (lambda_max < 0 there, >= 0 at G (1 + rtol)). ``ParameterError`` if the FIC state is
    unstable already at G -> 0 or still stable at ``cap``.
    """
    if not (isinstance(fic_rate, (int, float)) and math.isfinite(fic_rate) and fic_rate > 0):
        raise ParameterError(f"fic_rate={fic_rate!r}: expected a positive excitatory rate in Hz (e.g. 3.0).")
    if not (0 < start < cap and math.isfinite(cap)):
        raise ParameterError(f"start={start!r}, cap={cap!r}: expected 0 < start < cap, both finite.")
    lam = lambda G: fic_lambda_max(spec_or_twin, G, fic_rate, params)   # noqa: E731
    lo, hi = 1e-9 * float(start), float(start)
    if lam(lo) >= 0:
        raise ParameterError(f"the FIC state at {fic_rate} Hz is unstable already at G -> 0: no critical coupling "
                             "(lower fic_rate or w_p).")
    while lam(hi) < 0:
        lo, hi = hi, 2.0 * hi
        if hi > cap:
            raise ParameterError(f"the FIC state at {fic_rate} Hz is still stable at G = {lo:g}: no critical coupling "
                                 f"below cap={cap:g} (are the weights normalised? raise cap).")
    for _ in range(max_iter):
        if hi - lo <= rtol * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if lam(mid) < 0 else (lo, mid)
    return lo
