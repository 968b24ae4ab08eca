"""The package's floors (docs/architecture.md): a module imports only from its own floor or
the ones below, so the core never needs torch's engine, the engine never needs the server, and
no two modules need each other. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamo"
FLOORS = {
    # 0, the core: formats, conversion, video, metrics; no model
    **dict.fromkeys(("errors", "argtypes", "protocol", "annotation", "jsonfiles", "stats", "loss", "convert", "batch",
                     "video", "synth", "metrics", "ovobench", "instruct", "tiny_model", "cluster"), 0),
    # 1, what runs or trains a model on the core
    "engine": 1, "swift_plugin": 1,
    # 2, jobs over the engine
    "model_eval": 2, "fitting": 2, "ovobench_model": 2,
    # 3, the live layer
    "live": 3,
    # 4, the command line
    "commands": 4, "cli": 4,
}


def _part(module: str) -> str:
    """``streamo.engine.session`` -> ``engine``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        module = ".".join(parts if parts[-1] != "__init__" else parts[:-1])
        targets = found.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                targets.update([name] if node.module or not node.level else [f"{name}.{a.name}" for a in node.names])
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
    parts = {_part(module) for module in found}
    # ``from streamo import __version__`` names the package itself, which sits below every floor
    return {module: {t for t in targets if t.startswith("streamo.") and _part(t) in parts} for module, targets in found.items()}


def test_every_part_has_a_floor():
    parts = {_part(module) for module in _imports()} - {""}
    assert parts <= set(FLOORS), f"give {sorted(parts - set(FLOORS))} a floor here and in docs/architecture.md"


def test_no_import_from_a_lower_floor_to_a_higher_one():
    upward = sorted(f"{module} -> {target}" for module, targets in _imports().items() for target in targets
                    if _part(module) and _part(target) and FLOORS[_part(target)] > FLOORS[_part(module)])
    assert upward == []


def test_no_two_parts_need_each_other():
    graph: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        graph.setdefault(_part(module), set()).update(_part(t) for t in targets if _part(t) != _part(module))
    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))
    assert cycles == []


def test_no_two_modules_need_each_other():
    """Within a part too (``engine.backend`` and ``engine.model`` once did); a package's
    ``__init__`` naming its own modules is not a need."""
    found = _imports()
    modules = {module for module in found if not (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").exists()}

    def owner(target: str) -> str:
        while target not in found and "." in target:
            target = target.rsplit(".", 1)[0]
        return target

    needs = {module: {owner(t) for t in found[module]} & modules - {module} for module in modules}
    cycles = sorted(f"{a} <-> {b}" for a in needs for b in needs[a] if a < b and a in needs[b])
    assert cycles == []
