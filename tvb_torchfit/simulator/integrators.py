"""One integration step of TVB's integrators (``tvb.simulator.integrators``), model-agnostic.

``f`` is the model's derivative at fixed coupling (TVB uses the same coupling for both Heun
stages); ``z`` the noise increment (see ``noise.additive_increment``) or None; ``lo``/``hi`` the
state boundaries, applied by hard clipping exactly where TVB's ``integration_bound_and_clamp``
applies them (after the predictor and after the corrector). dt in ms.

    EulerDeterministic: X' = clip(X + dt * f(X))
    EulerStochastic:    X' = clip(X + dt * f(X) + z)
    HeunDeterministic:  I  = clip(X + dt * f(X));      X' = clip(X + (f(X) + f(I)) * dt / 2)
    HeunStochastic:     I  = clip(X + dt * f(X) + z);  X' = clip(X + (f(X) + f(I)) * dt / 2 + z)
"""
from typing import Callable, Optional

import torch

Dfun = Callable[[torch.Tensor], torch.Tensor]


def _clip(X: torch.Tensor, lo: Optional[torch.Tensor], hi: Optional[torch.Tensor]) -> torch.Tensor:
    if lo is None:
        return X
    return torch.clamp(X, lo, hi)


def euler_step(X: torch.Tensor, f: Dfun, dt: float, z: Optional[torch.Tensor],
               lo: Optional[torch.Tensor], hi: Optional[torch.Tensor]) -> torch.Tensor:
    """``EulerDeterministic`` (z None) / ``EulerStochastic`` scheme."""
    dX = f(X) * dt
    X_next = X + dX if z is None else X + dX + z
    return _clip(X_next, lo, hi)


def heun_step(X: torch.Tensor, f: Dfun, dt: float, z: Optional[torch.Tensor],
              lo: Optional[torch.Tensor], hi: Optional[torch.Tensor]) -> torch.Tensor:
    """``HeunDeterministic`` (z None) / ``HeunStochastic`` scheme."""
    m_dx_tn = f(X)
    inter = X + dt * m_dx_tn if z is None else X + dt * m_dx_tn + z
    inter = _clip(inter, lo, hi)
    dX = (m_dx_tn + f(inter)) * dt / 2.0
    X_next = X + dX if z is None else X + dX + z
    return _clip(X_next, lo, hi)


SCHEMES = {"HeunDeterministic": (heun_step, False), "HeunStochastic": (heun_step, True),
           "EulerDeterministic": (euler_step, False), "EulerStochastic": (euler_step, True)}
