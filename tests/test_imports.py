"""The import rules of docs/design.md ("Layout and import direction"), checked on the source.

Imports of eegfm modules run one way, from the contracts up to the command line, sit at module
level (not inside functions) and form no loop.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import eegfm

PACKAGE = Path(eegfm.__file__).parent
# each top-level part of the package and its tier: a part imports only from lower tiers (or
# from itself, or along one of the SAME_TIER pairs)
TIERS = {
    "__init__": 0, "config": 0, "configs": 0, "console": 0,
    "model_folder": 1, "montage": 1, "shards": 1,
    "prep": 2, "spiking": 2,
    "data": 3, "heads": 3,
    "models": 4,
    "checkpoint": 5,
    "export": 6,
    "evaluation": 6, "training": 6,
    "cli": 7,
    "__main__": 8,
}
SAME_TIER = {("training", "evaluation")}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The eegfm modules one import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "eegfm"]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + is_package]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if name.split(".")[0] != "eegfm":
            return []
        return [name] + [f"{name}.{a.name}" for a in node.names]
    return []


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(module: str, path: Path) -> tuple[list[str], list[str]]:
    """(module-level eegfm imports, eegfm imports inside functions or classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    top, nested = [], []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue  # annotations only: never executed
            names = _imported(child, module, is_package)
            (nested if inside else top).extend(names)
            visit(child, inside or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda))

    visit(tree, False)
    return top, nested


def _part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``eegfm.x.y.Name`` -> ``eegfm.x.y``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_every_part_has_a_tier() -> None:
    parts = {_part(m) for m in _modules()}
    assert parts <= set(TIERS), f"add {sorted(parts - set(TIERS))} to TIERS and docs/design.md"


def test_imports_run_one_way() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        source = _part(module)
        for name in _walk(module, path)[0]:
            target = _part(_resolve(name, modules) or name)
            if target == source or (source, target) in SAME_TIER:
                continue
            if TIERS[target] >= TIERS[source]:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_eegfm_imports_inside_functions() -> None:
    modules = _modules()
    nested = [f"{module}: {name}" for module, path in modules.items()
              for name in _walk(module, path)[1]]
    assert not nested, "\n".join(nested)


def test_no_import_loops() -> None:
    modules = _modules()
    graph = {module: set() for module in modules}
    for module, path in modules.items():
        for name in _walk(module, path)[0]:
            target = _resolve(name, modules)
            if target is not None and target != module:
                graph[module].add(target)
    # a package's __init__ importing its own submodules is how re-exports work; a submodule
    # importing its package back (for a name the __init__ holds) would be a loop, and is caught
    state: dict[str, int] = {}
    loops = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                if not (nxt in node.rsplit(".", 1)[0] and node.startswith(nxt + ".")):
                    loops.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not loops, "\n".join(loops)


# declared for a dependency's optional feature that eegfm uses, not imported by eegfm itself
USED_THROUGH_DEPENDENCIES = {"tensorboard", "mffpy", "defusedxml"}


def _dist(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_declared_dependencies_are_the_imported_ones() -> None:
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {_dist(r) for r in pyproject["project"]["dependencies"]}
    top = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                top.add(node.module.split(".")[0])
    third = {m for m in top if m not in sys.stdlib_module_names and m != "eegfm"}
    owners = importlib.metadata.packages_distributions()
    imported = {d.lower().replace("_", "-") for m in third for d in owners.get(m, [m])}
    assert imported - declared == set(), f"imported, not declared: {sorted(imported - declared)}"
    unused = declared - imported - USED_THROUGH_DEPENDENCIES
    assert unused == set(), f"declared, never imported: {sorted(unused)}"
