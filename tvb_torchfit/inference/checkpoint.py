"""Fit checkpoints: everything needed to continue a fit from a step boundary, written atomically, bound to the
problem they belong to.

A checkpoint holds the parameters, optimiser and scheduler, the estimator's state (twin state with its noise
generators, observation state, the FC window's BOLD; or the linear method's last accepted step), the history
and the loop counters, and a **fingerprint** of its problem (``fingerprint``): SHA-256 hashes of the network's
weights, of its delays (tract lengths, conduction speed, integer delays), of the target FC (and target BOLD),
of the simulator's parameter values and the fitted parameters' specs, of the fit's settings, of dt, the model
and its monitors, of the start state, and the package version. A resume compares every part and refuses a
checkpoint of another problem with a ``CheckpointError`` naming the parts that differ; ``fit(...,
resume=False)`` starts afresh instead (and overwrites the file).

It is read with ``torch.load(weights_only=True)``: only tensors and plain Python containers and numbers are
stored (the history's numpy arrays as float64 tensors), so loading a checkpoint never runs code — a file holding
any other pickled object (a crafted ``__reduce__`` payload included) is refused before anything in it is
called. A truncated, corrupt or foreign file gives a ``CheckpointError`` naming the file.
"""
import copy
import hashlib
import json
import os
import pickle
from typing import Dict, Mapping

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import atomic_write

TRAJECTORIES = ("params", "coefficients")     # history entries: name -> list of arrays, one per step
FORMAT = 3                       # 1: pickled numpy, torch RNG; 2: no fingerprint
RESTART_HINT = "pass resume=False to start afresh (it overwrites the file), or give another checkpoint path"


def _digest(value) -> str:
    h = hashlib.sha256()
    if value is None:
        h.update(b"None")
    elif isinstance(value, (np.ndarray, torch.Tensor)) or (isinstance(value, (list, tuple)) and value
                                                          and isinstance(value[0], (np.ndarray, torch.Tensor))):
        for arr in (value if isinstance(value, (list, tuple)) else [value]):
            a = arr.detach().cpu().numpy() if torch.is_tensor(arr) else np.asarray(arr)
            a = np.ascontiguousarray(a.astype(np.float64) if a.dtype.kind in "biuf" else a.astype(str))
            h.update(str(a.shape).encode() + a.tobytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(parts: Mapping[str, object]) -> Dict[str, str]:
    """{part name: SHA-256 of its value} (arrays by shape and float64 bytes, the rest as sorted JSON)."""
    return {name: _digest(value) for name, value in parts.items()}


def payload(config_doc: Dict, pset, optimizer, scheduler, estimator, history: Dict, loop_state,
            prints: Dict[str, str], stepper=None) -> Dict:
    """Deep copies of the fit state at this step boundary (safe to keep while the fit goes on)."""
    hist = dict(history, **{key: {k: [torch.from_numpy(np.array(v, dtype=np.float64)) for v in traj]
                                  for k, traj in history[key].items()} for key in TRAJECTORIES if key in history})
    return copy.deepcopy({"format": FORMAT, "fingerprint": dict(prints), "config": config_doc,
                          "params": pset.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict() if scheduler is not None else None,
                          "estimator": estimator.state_dict(), "history": hist, "loop": vars(loop_state),
                          "step": stepper.state_dict() if stepper is not None else {}})


def save(path, doc: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(str(path), lambda f: torch.save(doc, f))


def read(path) -> Dict:
    """The checkpoint document at ``path``, read without running code; ``CheckpointError`` for a file that is
    truncated, corrupt, holds objects other than tensors and containers, or is of another format."""
    try:
        doc = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line
                       or "Unsupported" in line), "")
        if "Unsupported global" not in detail:         # not a pickle of allowed things, nor of forbidden ones
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: it is truncated or corrupt "
                                  f"({detail[:200] or 'not a torch file'}); {RESTART_HINT}.") from None
        raise CheckpointError(f"checkpoint {str(path)!r} holds objects other than tensors, numbers and containers; "
                              f"it was refused without running them (torch.load weights_only=True: "
                              f"{detail[detail.find('Unsupported'):][:160]}). It is not a tvb_torchfit checkpoint; "
                              f"{RESTART_HINT}.") from None
    except Exception as exc:                           # truncated zip, garbage bytes, empty file, ...
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: it is truncated or corrupt "
                              f"({type(exc).__name__}: {str(exc)[:200]}); {RESTART_HINT}.") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(doc).__name__}, not a tvb_torchfit "
                              f"checkpoint; {RESTART_HINT}.")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by another version of tvb_torchfit (format "
                              f"{doc.get('format')!r}, expected {FORMAT}); remove it or {RESTART_HINT}.")
    return doc


def mismatch(saved: Mapping[str, str], current: Mapping[str, str]):
    """The names of the fingerprint parts that differ (present in one only included)."""
    return [name for name in list(current) + [n for n in saved if n not in current]
            if saved.get(name) != current.get(name)]


def restore(path, config_doc: Dict, pset, optimizer, scheduler, estimator, history: Dict, loop_state,
            prints: Dict[str, str], stepper=None) -> None:
    """Load a checkpoint of this very problem (``prints`` = its fingerprint) into the fit's objects."""
    doc = read(path)
    differ = mismatch(doc.get("fingerprint") or {}, prints)
    if differ:
        what = "other settings" if differ == ["settings"] else "another problem"
        raise CheckpointError(f"checkpoint {str(path)!r} was written by a fit of {what}: its {', '.join(differ)} "
                              f"differ from this fit's; {RESTART_HINT}.")
    try:
        pset.load_state_dict(doc["params"])
        optimizer.load_state_dict(doc["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(doc["scheduler"])
        estimator.load_state_dict(doc["estimator"])
        hist = doc["history"]
        history.update(hist, **{key: {k: [v.numpy() for v in traj] for k, traj in hist[key].items()}
                                for key in TRAJECTORIES if key in hist})
        vars(loop_state).update(doc["loop"])
        if stepper is not None:
            stepper.load_state_dict(doc.get("step", {}))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} matches this fit's fingerprint but its state does not fit "
                              f"({type(exc).__name__}: {str(exc)[:200]}); it is damaged; {RESTART_HINT}.") from None
