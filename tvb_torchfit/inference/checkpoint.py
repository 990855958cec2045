"""Fit checkpoints: everything needed to continue a fit from a step boundary, written atomically.

A checkpoint holds the parameters, optimiser and scheduler, the estimator's state (twin state with its noise
generators, observation state, the FC window's BOLD; or the linear method's last accepted step), the history
and the loop counters, with the fit's configuration to refuse a resume under other settings. It is read with
``torch.load(weights_only=True)``: only tensors and plain Python containers and numbers are stored (the
history's numpy arrays as float64 tensors), so loading a checkpoint cannot run code.
"""
import copy
import json
import os
from typing import Dict

import numpy as np
import torch

from ..errors import ParameterError
from ..files import atomic_write

TRAJECTORIES = ("params", "coefficients")     # history entries: name -> list of arrays, one per step
FORMAT = 2                       # 1: tvb_torchfit <= the subpackage layout (pickled numpy, torch RNG)


def payload(config_doc: Dict, pset, optimizer, scheduler, estimator, history: Dict, loop_state) -> Dict:
    """Deep copies of the fit state at this step boundary (safe to keep while the fit goes on)."""
    hist = dict(history, **{key: {k: [torch.from_numpy(np.array(v, dtype=np.float64)) for v in traj]
                                  for k, traj in history[key].items()} for key in TRAJECTORIES if key in history})
    return copy.deepcopy({"format": FORMAT, "config": config_doc, "params": pset.state_dict(),
                          "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict() if scheduler is not None else None,
                          "estimator": estimator.state_dict(), "history": hist, "loop": vars(loop_state)})


def save(path, doc: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(str(path), lambda f: torch.save(doc, f))


def restore(path, config_doc: Dict, pset, optimizer, scheduler, estimator, history: Dict, loop_state) -> None:
    """Load a checkpoint written by a fit with the same settings into the fit's objects."""
    doc = torch.load(path, weights_only=True)
    if doc.get("format") != FORMAT:
        raise ParameterError(f"checkpoint {path} was written by another version of tvb_torchfit; remove it or pass "
                             "resume=False to start afresh.")
    if json.dumps(doc["config"], sort_keys=True, default=str) != json.dumps(config_doc, sort_keys=True, default=str):
        raise ParameterError(f"checkpoint {path} was written by a fit with other settings; remove it or pass "
                             "resume=False to start afresh.")
    pset.load_state_dict(doc["params"])
    optimizer.load_state_dict(doc["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(doc["scheduler"])
    estimator.load_state_dict(doc["estimator"])
    hist = doc["history"]
    history.update(hist, **{key: {k: [v.numpy() for v in traj] for k, traj in hist[key].items()}
                            for key in TRAJECTORIES if key in hist})
    vars(loop_state).update(doc["loop"])
