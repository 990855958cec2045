"""Stability of each node's low state: eigenvalues of its Jacobian, and lambda_eff continued past the fold.

``node_eigs``: the eigenvalues of the node-local Jacobian (``rootfind.LocalSystem``, autograd on the port's
``dfun``) at the low fixed point, in closed form (1x1, 2x2), differentiable. ``stability_rate``: the signed
rate ``lambda_eff`` of ``bifurcation`` (its docstring has the saddle-node normal form). 1/ms throughout.
"""
from dataclasses import dataclass
from typing import Tuple

import torch

from .low_state import low_state
from .network import Problem
from .rootfind import FixedPoint, LocalSystem

Tensor = torch.Tensor

__all__ = ["Eigs", "eigenvalues_2x2", "node_eigs", "stability_rate"]


@dataclass
class Eigs:
    """Eigenvalues (1/ms) of the local Jacobian at the low fixed point; shapes (N, B) unless stated.

    lam_max:   largest real part (differentiable). re, im: (nvar, N, B), sorted by real part (descending).
    trace, det: of the Jacobian. jacobian: (nvar, nvar, N, B). fixed_point: the ``FixedPoint`` used.
    """
    lam_max: Tensor
    re: Tensor
    im: Tensor
    trace: Tensor
    det: Tensor
    jacobian: Tensor
    fixed_point: FixedPoint


def eigenvalues_2x2(J: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(lam_max, re, im, trace, det) of J (nvar, nvar, ...), nvar 1 or 2: tr/2 +- sqrt(tr^2/4 - det),
    real where the discriminant is positive, a complex pair with real part tr/2 otherwise."""
    if J.shape[0] == 1:
        lam = J[0, 0]
        return lam, lam.unsqueeze(0), torch.zeros_like(lam).unsqueeze(0), lam, lam
    tr = J[0, 0] + J[1, 1]
    det = J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]
    disc = tr * tr / 4 - det
    real = disc > 0
    sq = torch.sqrt(torch.where(real, disc, torch.ones_like(disc)))
    sq_im = torch.sqrt(torch.where(real, torch.ones_like(disc), -disc))
    half = tr / 2
    l1 = torch.where(real, half + sq, half)
    l2 = torch.where(real, half - sq, half)
    im = torch.where(real, torch.zeros_like(disc), sq_im)
    return l1, torch.stack((l1, l2)), torch.stack((im, -im)), tr, det


def node_eigs(prob: Problem, fp: FixedPoint) -> Eigs:
    """Eigenvalues of each node's Jacobian (autograd on ``dfun``, with a graph where anything needs one) at ``fp``."""
    J = LocalSystem(prob.F).jacobian(fp.state, create_graph=prob.needs_grad() or fp.state.requires_grad)
    lam, re, im, tr, det = eigenvalues_2x2(J)
    return Eigs(lam_max=lam, re=re, im=im, trace=tr, det=det, jacobian=J, fixed_point=fp)


def stability_rate(prob: Problem, grid: int = 513) -> Tuple[Tensor, Eigs]:
    """(lambda_eff (N, B) in 1/ms, ``Eigs`` at the low state): ``lambda_max`` where the low state exists,
    the ghost's saddle-node escape rate sqrt(2 kappa g_min) (scaled by J_ii / tr J for ExcInh) where it
    has vanished; see ``bifurcation``."""
    e = node_eigs(prob, low_state(prob, grid))
    fp = e.fixed_point
    if not bool(fp.vanished.any()):
        return e.lam_max, e
    if prob.nvar == 2:                       # 2D scale of the reduced rate: lambda ~ g' * J_ii / tr J
        Jg = LocalSystem(prob.F).jacobian(fp.ghost.state)
        scale = (Jg[1, 1] / (Jg[0, 0] + Jg[1, 1])).detach()
    else:
        scale = torch.ones_like(fp.ghost.kappa)
    g = torch.where(fp.vanished, fp.ghost.g_min, torch.ones_like(fp.ghost.g_min)).clamp_min(1e-300)
    rate = scale * torch.sqrt(2 * fp.ghost.kappa.clamp_min(1e-30) * g)
    return torch.where(fp.vanished, rate, e.lam_max), e
