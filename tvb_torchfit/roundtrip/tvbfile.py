"""A TVB ``Simulator`` written to files and rebuilt from them, without pickling live objects.

    save_simulator(sim, folder)        -> folder/simulator.json + folder/simulator.npz
    load_simulator(folder)             -> a configured tvb.simulator.simulator.Simulator

What is written is the simulator's declarative traits, recursively (TVB's own description of the object):
connectivity (weights, tract lengths, speed, labels, centres, ...), model, coupling, integrator with its noise,
monitors with their HRF kernels, conduction speed, simulation length and initial conditions. Arrays go to
the ``.npz`` (read back with ``allow_pickle=False``), everything else to the JSON, where each object is named by
its TVB class (``"tvb.simulator.models.wong_wang_exc_inh.ReducedWongWangExcInh"``). Loading only instantiates
classes defined in ``tvb.simulator`` and ``tvb.datatypes`` that derive from TVB's ``HasTraits``, so a file can
describe a simulator but cannot run code. Left out, because ``configure()`` recomputes them: delays, integer
delays, region and connection counts, the integrator's state-variable boundaries, and every object's ``gid``;
the noise's random stream restarts from its ``noise_seed`` as in any freshly built simulator.
"""
import importlib
import json
import os
from typing import Dict, Union

import numpy as np
from tvb.basic.neotraits.api import Final, HasTraits
from tvb.simulator.simulator import Simulator

from ..errors import ParameterError, UnsupportedTVBObject
from ..files import atomic_write

PathLike = Union[str, os.PathLike]
FORMAT = "tvb_torchfit.simulator/1"
_ALLOWED_PREFIXES = ("tvb.simulator.", "tvb.datatypes.")
# traits that configure() computes, or that are not part of what a simulator is
_SKIPPED = {"gid", "random_stream", "idelays", "delays", "number_of_regions", "number_of_connections",
            "bounded_state_variable_indices", "state_variable_boundaries"}


class _Writer:
    """Traits -> JSON-able structure, arrays collected under dotted keys."""

    def __init__(self):
        self.arrays: Dict[str, np.ndarray] = {}

    def value(self, key: str, value):
        if isinstance(value, HasTraits):
            return self.obj(key, value)
        if isinstance(value, np.ndarray):
            self.arrays[key] = np.array(value)
            return {"$array": key}
        if isinstance(value, (list, tuple)):
            return [self.value(f"{key}.{i}", v) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {str(k): self.value(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise UnsupportedTVBObject(f"cannot write {key} of type {type(value).__name__} to a simulator file.")

    def obj(self, key: str, obj: HasTraits) -> Dict:
        cls = type(obj)
        traits = {}
        for name in cls.declarative_attrs:
            if name in _SKIPPED or isinstance(getattr(cls, name, None), Final):
                continue
            value = getattr(obj, name, None)
            if value is not None:
                traits[name] = self.value(f"{key}.{name}" if key else name, value)
        return {"$class": f"{cls.__module__}.{cls.__qualname__}", "traits": traits}


def _tvb_class(path: str, where: str) -> type:
    module, _, name = path.rpartition(".")
    if not module.startswith(_ALLOWED_PREFIXES):
        raise ParameterError(f"{where}: class {path!r} is not a TVB simulator or datatype class; a simulator file "
                             "names only classes from tvb.simulator and tvb.datatypes.")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ParameterError(f"{where}: TVB has no class {path!r} (written by another TVB version?).") from None
    if not (isinstance(cls, type) and issubclass(cls, HasTraits)):
        raise ParameterError(f"{where}: {path!r} is not a TVB traits class.")
    return cls


class _Reader:
    def __init__(self, arrays, where: str):
        self.arrays, self.where = arrays, where

    def value(self, doc):
        if isinstance(doc, dict) and "$class" in doc:
            return self.obj(doc)
        if isinstance(doc, dict) and "$array" in doc:
            key = doc["$array"]
            if key not in self.arrays:
                raise ParameterError(f"{self.where}: array {key!r} is missing from the .npz file.")
            return np.array(self.arrays[key])
        if isinstance(doc, list):
            return [self.value(v) for v in doc]
        if isinstance(doc, dict):
            return {k: self.value(v) for k, v in doc.items()}
        return doc

    def obj(self, doc: Dict) -> HasTraits:
        cls = _tvb_class(doc["$class"], self.where)
        kwargs = {}
        for name, value in doc.get("traits", {}).items():
            if name not in cls.declarative_attrs:
                raise ParameterError(f"{self.where}: {cls.__name__} has no trait {name!r}.")
            kwargs[name] = self.value(value)
        return cls(**kwargs)


def _paths(folder: PathLike, stem: str):
    return os.path.join(folder, f"{stem}.json"), os.path.join(folder, f"{stem}.npz")


def save_simulator(sim: Simulator, folder: PathLike, stem: str = "simulator") -> str:
    """Write ``sim``'s description to ``folder/stem.json`` and ``folder/stem.npz`` (atomically); returns the JSON path.

    Surface simulations and stimuli are refused (``UnsupportedTVBObject``), as elsewhere in tvb_torchfit."""
    if not isinstance(sim, Simulator):
        raise TypeError(f"expected a tvb.simulator.simulator.Simulator, got {type(sim).__name__}.")
    if sim.surface is not None or sim.stimulus is not None:
        raise UnsupportedTVBObject("save_simulator writes region simulations without stimulus only.")
    writer = _Writer()
    doc = {"format": FORMAT, "simulator": writer.obj("", sim)}
    os.makedirs(folder, exist_ok=True)
    json_path, npz_path = _paths(folder, stem)
    atomic_write(npz_path, lambda f: np.savez(f, **writer.arrays))
    atomic_write(json_path, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    return json_path


def load_simulator(folder: PathLike, stem: str = "simulator", configure: bool = True) -> Simulator:
    """The TVB ``Simulator`` described by ``folder/stem.json`` + ``.npz``, configured (unless ``configure=False``)."""
    json_path, npz_path = _paths(folder, stem)
    for path in (json_path, npz_path):
        if not os.path.isfile(path):
            raise ParameterError(f"simulator file {path} does not exist (written by save_simulator).")
    try:
        with open(json_path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        raise ParameterError(f"{json_path}: not a readable simulator file ({err}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ParameterError(f"{json_path}: format {doc.get('format') if isinstance(doc, dict) else None!r}; "
                             f"expected {FORMAT!r}.")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise ParameterError(f"{npz_path}: not a readable array file ({err}).") from None
    sim = _Reader(arrays, json_path).obj(doc["simulator"])
    if not isinstance(sim, Simulator):
        raise ParameterError(f"{json_path}: describes a {type(sim).__name__}, not a Simulator.")
    return sim.configure() if configure else sim
