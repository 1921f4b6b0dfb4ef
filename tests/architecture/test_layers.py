"""The layers import one way (README "Layout"): base ← models ← export ← contract ← device side
(runtime) | server side (server) ← training ← experiments ← cli. The device side never imports
the server side (nor the reverse), and neither the device side nor the contract imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> (package, rank); a module may import only packages of a lower or equal rank.
LAYERS = {
    "mobdistill": ("mobdistill", 0),  # errors, files, video: shared by every layer
    "models": ("mobdistill.models", 1),
    "export": ("mobdistill.export", 2),
    "contract": ("mobdistill.contract", 3),
    "runtime": ("mobdistill.runtime", 4),
    "server": ("mobdistill.server", 4),
    "training": ("mobdistill.training", 5),  # the seeds' training systems (teachers from server)
    "experiments": ("mobdistill.experiments", 6),
    "report": ("mobdistill.report", 7),  # reads run folders; only the CLI imports it
    "mobdistill/cli": ("mobdistill.cli", 8),
}
FORBIDDEN_THIRD_PARTY = {"runtime": {"torch"}, "contract": {"torch"}}


def _layer_of(module: str) -> str | None:
    """The layer folder of a `mobdistill...` module name (the longest package prefix)."""
    best = None
    for folder, (package, _) in LAYERS.items():
        if module == package or module.startswith(package + "."):
            if best is None or len(package) > len(LAYERS[best][0]):
                best = folder
    return best


def _modules(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    if folder == "mobdistill":  # the CLI (and `python -m mobdistill`) is the top layer
        files = [f for f in files if "cli" not in f.relative_to(ROOT / folder).parts
                 and f.name != "__main__.py"]
    return files


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in `path`, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from mobdistill import server` names a package, not an attribute
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names
                      if name == "mobdistill"]
    return found


def _violations(folder: str) -> list[str]:
    package, rank = LAYERS[folder]
    bad = []
    for path in _modules(folder):
        sub = path.relative_to(ROOT / folder).with_suffix("").parts
        module_package = ".".join([package, *sub[:-1]])
        for line, name in _imports(path, module_package):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            top = name.split(".")[0]
            if top in FORBIDDEN_THIRD_PARTY.get(folder, set()):
                bad.append(f"{where} ({folder} must not depend on {top})")
            if top != "mobdistill":
                continue
            target = _layer_of(name)
            if target is None or target == folder:
                continue
            target_rank = LAYERS[target][1]
            if target_rank > rank or (target_rank == rank and target != folder):
                bad.append(f"{where} (layer {folder} may not import {target})")
    return bad


@pytest.mark.parametrize("folder", list(LAYERS))
def test_layer_imports_only_downwards(folder):
    assert _violations(folder) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """A device-side module importing the server side is reported (the check can fail)."""
    fake = tmp_path / "runtime"
    fake.mkdir()
    (fake / "leak.py").write_text("import torch\nfrom mobdistill.server import session\n"
                                  "from ..experiments import stream\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = _violations("runtime")
    assert len(found) == 3, found
    assert any("must not depend on torch" in v for v in found)
    assert any("may not import server" in v for v in found)
    assert any("may not import experiments" in v for v in found)
