"""The package's layers (docs/architecture.md): imports only go down, no cycle, no method imports another.

Every import statement of every module is read (those inside functions too), so a lazy import
cannot hide an upward edge.
"""

import ast
from pathlib import Path

import distill3d

ROOT = Path(distill3d.__file__).parent
LAYERS = {
    # the base: plain types and helpers that everything may use
    "distill3d": 0, "errors": 0, "devices": 0, "cameras": 0, "atomic_files": 0, "configs": 0, "metrics": 0,
    "render_output": 0, "model_folder": 0, "optim": 0, "random_streams": 0,
    "world": 1,                                                       # the truth
    "scene": 2, "render": 2, "data": 2, "camera_sampling": 2,         # 3D things and how they become images
    "export": 3,                                                      # scenes written out
    "diffusion": 4,                                                   # the diffusion core, free of the world
    "world_models": 5,                                                # the world's networks and their training
    "teacher_loading": 6,                                             # a teacher by name: world or diffusers
    "guidance": 7,
    "training": 8,                                                    # run folders, the loops
    "methods": 9,
    "eval": 10,
    "viewer": 11,                                                     # the browser viewer: reads any run's output
    "cli": 12, "__main__": 12,
}


def unit(module: str) -> str:
    """'distill3d.scene.factory' -> 'scene'; 'distill3d.cameras' -> 'cameras'; 'distill3d' -> 'distill3d'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> list[tuple[str, str]]:
    """(importing module, imported distill3d module) for every import in the package."""
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges += [(name, t) for t in targets if t.split(".")[0] == "distill3d" and _is_module(t)]
    return edges


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def test_every_unit_has_a_layer():
    units = {unit(module_name(p)) for p in ROOT.rglob("*.py")}
    assert units <= LAYERS.keys(), f"give these a layer in tests/test_layers.py: {sorted(units - LAYERS.keys())}"


def test_imports_only_go_down():
    upward = sorted({f"{a} -> {b}" for a, b in imports() if LAYERS[unit(b)] > LAYERS[unit(a)]})
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_cycle_between_units():
    graph: dict[str, set[str]] = {}
    for a, b in imports():
        if unit(a) != unit(b):
            graph.setdefault(unit(a), set()).add(unit(b))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(u for u in graph if reaches(u, u, {u}))
    assert not cycles, f"units on an import cycle: {cycles}"


def test_no_method_imports_another_method():
    def method(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "methods" else None

    crossing = sorted({f"{a} -> {b}" for a, b in imports()
                       if method(a) and method(b) and method(a) != method(b)})
    assert not crossing, "a method imports another:\n" + "\n".join(crossing)


def test_the_walk_sees_lazy_imports():
    """The check reads imports inside functions: the CLI's lazy imports of the methods are edges."""
    edges = imports()
    assert ("distill3d.cli.text_to_3d", "distill3d.methods.consistent3d") in edges
    assert any(a.startswith("distill3d.methods.") and unit(b) == "training" for a, b in edges)
