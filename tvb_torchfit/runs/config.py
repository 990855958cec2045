"""A run's configuration: a TOML (or the resolved JSON) file merged onto ``defaults.toml``, ``--set`` overrides,
validated by a pydantic schema and by the checks that need the model and the files — all before any work.

Why pydantic (v2): unknown keys (``extra="forbid"``) and wrong types are refused with the *location* of the key
(``stages.1.params.J_i.low``), which is what a user needs to fix a file; dataclasses would need that machinery
written by hand. Every refusal is a ``ConfigError`` naming the config file, the dotted key and what was expected.

    cfg = load_config("run.toml", overrides=["stages.global.fit.n_steps=5", "validation.length=60000"])
    cfg.model_dump()              # the resolved configuration (paths absolute), JSON-ready

``--set`` keys are dotted; a stage is addressed by its index or its name (``stages.0...`` or ``stages.global...``);
values are read as TOML (``5``, ``0.5``, ``[1, 2]``, ``"text"``), a bare word that is not TOML as a string.
"""
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from pydantic import ValidationError

from ..errors import ConfigError
from .checks import check_config
from .schema import MAP_FC_GRADIENT, MIN_TR_MS, RunConfig, check_tr_ms  # noqa: F401  (re-exported)

if sys.version_info >= (3, 11):
    import tomllib
else:                                                   # pragma: no cover
    import tomli as tomllib

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")


# ------------------------------------------------------------------------------------------------ reading
def read_file(path: Path) -> Dict[str, Any]:
    """A TOML or JSON config file as a dict; ``ConfigError`` naming the file if it is missing or malformed."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(path.read_text())
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({err}).") from None


def _merge(base: Dict, over: Dict) -> Dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _key_parts(key: str, where: str) -> List[str]:
    """A dotted TOML key's parts, quoted parts kept whole (``stages.regional.params."noise.nsig".low``)."""
    try:
        node = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{where}: --set {key}: not a dotted TOML key (quote a part with dots in it: "
                          'stages.regional.params."noise.nsig".low).') from None
    parts = []
    while isinstance(node, dict):
        (part, node), = node.items()
        parts.append(part)
    return parts


def apply_override(doc: Dict, item: str, where: str) -> None:
    """Set ``key=value`` (dotted key; a stage by index or name) in ``doc``."""
    if "=" not in item:
        raise ConfigError(f"{where}: --set {item!r}: expected key=value (e.g. validation.length=60000).")
    key, text = item.split("=", 1)
    parts = _key_parts(key.strip(), where)
    node = doc
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            names = [s.get("name") for s in node if isinstance(s, dict)]
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif part in names:
                node = node[names.index(part)]
            else:
                raise ConfigError(f"{where}: --set {key}: no entry {part!r} in {'.'.join(parts[:i])} "
                                  f"(indices 0-{len(node) - 1} or names {names}).")
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{where}: --set {key}: {'.'.join(parts[:i + 1])} is a value, not a table.")
    node[parts[-1]] = _parse_value(text.strip())


def _dotted(loc) -> str:
    return ".".join(str(x) for x in loc)


def schema_error(path, err: ValidationError) -> ConfigError:
    """A pydantic ``ValidationError`` as the ``ConfigError`` a user reads: the file, the dotted key, what was
    expected and what was given (the first problem; how many more)."""
    e = err.errors()[0]
    key = _dotted(e["loc"])
    what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    got = "" if e["type"] in ("extra_forbidden", "missing") else f", got {e.get('input')!r}"
    return ConfigError(f"{path}: key '{key}': {what}{got}{more}.")


def resolve_path(value: Optional[str], base: Path) -> Optional[str]:
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> RunConfig:
    """The validated ``RunConfig`` of a run file (TOML, or a run folder's resolved ``config.json``) with
    ``overrides``; every check of ``check_config`` is done. ``ConfigError`` names the file and the key."""
    path = Path(path).resolve()
    user = read_file(path)
    defaults = read_file(DEFAULTS_PATH)
    stage_defaults = defaults.pop("stage_defaults")
    user_stages = user.pop("stages", None)
    user.pop("stage_defaults", None) if "stage_defaults" in user else None
    doc = _merge(defaults, user)
    if user_stages is not None:
        if not isinstance(user_stages, list) or not all(isinstance(s, dict) for s in user_stages):
            raise ConfigError(f"{path}: key 'stages': expected an array of tables ([[stages]]).")
        doc["stages"] = [_merge(stage_defaults, s) for s in user_stages]
    else:
        doc["stages"] = [_merge(stage_defaults, s) for s in doc["stages"]]
    for item in overrides:
        apply_override(doc, item, str(path))
    doc.setdefault("source", str(path))
    try:
        cfg = RunConfig.model_validate(doc)
    except ValidationError as err:
        raise schema_error(path, err) from None
    base = path.parent
    d = cfg.data
    for field in ("weights", "tract_lengths", "region_labels", "bold", "bold_test"):
        setattr(d, field, resolve_path(getattr(d, field), base))
    for stage in cfg.stages:
        for p in stage.params.values():
            if p.maps:
                p.maps = [m if m == MAP_FC_GRADIENT else resolve_path(m, base) for m in p.maps]
    check_config(cfg, str(path))
    return cfg


def config_to_dict(cfg: RunConfig) -> Dict[str, Any]:
    """The resolved configuration as plain JSON values (re-read by ``load_config`` to give the same run)."""
    doc = cfg.model_dump(mode="json")
    for stage in doc["stages"]:
        stage["fit"] = {k: v for k, v in stage["fit"].items() if v is not None}
        for p in stage["params"].values():
            for k in [k for k, v in p.items() if v is None]:
                del p[k]
    for section in ("data", "preprocessing", "monitor"):
        doc[section] = {k: v for k, v in doc[section].items() if v is not None}
    doc.pop("source", None)
    return doc
