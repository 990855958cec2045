"""The layout's rules, read from the source (README "Architecture"): which layer may import which, no import
cycles (function-level imports included), and no module using another module's underscore names."""
import ast
import pathlib
from typing import Dict, Iterator, Set, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG_DIR = ROOT / "tvb_torchfit"
PKG = "tvb_torchfit"

# layer -> the layers its modules may import (besides their own); README "Architecture" draws the same
LAYERS = {
    "errors": set(),
    "version": set(),
    "files": set(),
    "progress": set(),
    "stats": {"errors"},
    "checks": {"errors"},
    "simulator": {"checks", "errors"},
    "analyzers": {"checks", "simulator", "errors"},
    "roundtrip": {"checks", "simulator", "stats", "errors", "files"},
    "data": {"checks", "stats", "errors"},
    "inference": {"checks", "simulator", "analyzers", "roundtrip", "stats", "errors", "version", "files", "progress"},
    # the applications, written against the public API (the package root) like a user's script
    "runs": {"checks", "simulator", "analyzers", "roundtrip", "inference", "stats", "data", "errors", "version",
             "files", "progress", "__init__"},
    "demo": {"checks", "simulator", "analyzers", "roundtrip", "inference", "stats", "data", "errors", "version", "files",
             "__init__"},
    "cli": {"checks", "simulator", "analyzers", "roundtrip", "inference", "stats", "data", "errors", "version", "files",
            "demo", "runs", "__init__"},
}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(base: pathlib.Path = PKG_DIR) -> Dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(base.rglob("*.py"))}


def layer(mod: str) -> str:
    parts = mod.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _resolve(mod: str, is_package: bool, level: int, target: str) -> str:
    if level == 0:
        return target
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(mod: str, path: pathlib.Path, known: Set[str]) -> Iterator[Tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a package module, anywhere in the file.
    ``from pkg import name`` yields the submodule ``pkg.name`` when it is one, else ``pkg`` with the name."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PKG:
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(mod, is_package, node.level, node.module or "")
            if src.split(".")[0] != PKG:
                continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                yield (sub, "", node.lineno) if sub in known else (src, alias.name, node.lineno)


def private_uses(mod: str, path: pathlib.Path, known: Set[str]) -> Iterator[str]:
    """Underscore names of *other* package modules that ``mod`` imports or reads as ``module._name``."""
    tree = ast.parse(path.read_text())
    aliases = {}                                  # local name -> package module it is bound to
    for target, name, line in imports(mod, path, known):
        if name.startswith("_") and not name.startswith("__") and target != mod:
            yield f"{mod}:{line} imports {target}.{name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = _resolve(mod, path.name == "__init__.py", node.level, node.module or "")
            for alias in node.names:
                if f"{src}.{alias.name}" in known:
                    aliases[alias.asname or alias.name] = f"{src}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PKG and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and aliases[node.value.id] != mod):
            yield f"{mod}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}"


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {t for t, _, _ in imports(m, p, known) if t in known and t != m} for m, p in mods.items()}


def find_cycle(edges: Dict[str, Set[str]]):
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(n):
        colour[n] = "grey"
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if colour.get(m) == "grey":
                return stack[stack.index(m):] + [m]
            if m not in colour:
                found = visit(m)
                if found:
                    return found
        colour[n] = "black"
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in colour:
            found = visit(n)
            if found:
                return found
    return None


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in modules()} <= set(LAYERS) | {"__init__"}


def test_no_module_uses_another_modules_private_names():
    mods = modules()
    known = set(mods)
    found = [use for m, p in mods.items() for use in private_uses(m, p, known)]
    assert not found, "\n".join(found)


def private_attributes(path: pathlib.Path, root: pathlib.Path = ROOT) -> Iterator[str]:
    """Every ``obj._name`` read in a file (dunders aside): scripts outside the package use public seams only."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            yield f"{path.relative_to(root)}:{node.lineno} reads .{node.attr}"


def test_benchmarks_and_demos_use_no_private_names():
    mods = modules()
    known = set(mods)
    found = []
    for folder in ("benchmarks", "demos"):
        for path in sorted((ROOT / folder).glob("*.py")):
            found += list(private_uses(f"{folder}.{path.stem}", path, known)) + list(private_attributes(path))
    assert not found, "\n".join(found)


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_layers_import_only_downwards():
    bad = []
    for mod, targets in graph().items():
        here = layer(mod)
        if here == "__init__":
            continue
        allowed = LAYERS[here] | {here}
        bad += [f"{mod} imports {t}" for t in sorted(targets) if layer(t) not in allowed]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------ the checks themselves can fail
def _write(tmp_path, files: Dict[str, str]) -> Dict[str, pathlib.Path]:
    out = {}
    for name, text in files.items():
        path = tmp_path / PKG / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out[f"{PKG}.{name[:-3]}".replace("/", ".").replace(".__init__", "")] = path
    return out


def test_private_use_is_detected(tmp_path):
    mods = _write(tmp_path, {"__init__.py": "", "a.py": "_x = 1\ny = 2\n",
                             "b.py": "from .a import _x, y\nfrom . import a\nz = a._x\nw = a.__name__\n"})
    known = set(mods)
    found = list(private_uses(f"{PKG}.b", mods[f"{PKG}.b"], known))
    assert len(found) == 2 and "imports tvb_torchfit.a._x" in found[0] and "reads tvb_torchfit.a._x" in found[1]


def test_cycle_through_a_function_level_import_is_detected(tmp_path):
    mods = _write(tmp_path, {"__init__.py": "", "a.py": "from .b import f\n",
                             "b.py": "def f():\n    from .a import g\n"})
    known = set(mods)
    edges = {m: {t for t, _, _ in imports(m, p, known) if t in known and t != m} for m, p in mods.items()}
    assert find_cycle(edges) in ([f"{PKG}.a", f"{PKG}.b", f"{PKG}.a"], [f"{PKG}.b", f"{PKG}.a", f"{PKG}.b"])


def test_private_attribute_is_detected(tmp_path):
    path = tmp_path / "bench.py"
    path.write_text("twin._ring.flat\nx.__class__\n")
    assert list(private_attributes(path, tmp_path)) == ["bench.py:1 reads ._ring"]


@pytest.mark.parametrize("level, target, expected", [(1, "x", "tvb_torchfit.sub.x"), (2, "y", "tvb_torchfit.y"),
                                                      (2, "", "tvb_torchfit")])
def test_relative_imports_resolve(level, target, expected):
    assert _resolve("tvb_torchfit.sub.mod", False, level, target) == expected
