"""The layer contract of issue 25, as a check to run: imports only go down (or sideways within
a layer, without a cycle), function-level imports included. Read from the source with `ast`, so
an import inside a function counts as much as one at the top.

    python scripts/check_layers.py      # prints every upward import and cycle; exit 1 if any

tests/test_layers.py runs it in the suite: any upward import or cycle fails it.

    layer 0  errors, defaults, fileio, images, results, query: no model, no torch
    layer 1  backbone, features, models/*; the demo world (data: attributes, phrasing, demo, triplets)
    layer 2  hub (resolve, download), items, reader, catalog; public data set readers (data/*);
             the parts of a page (widgets, charts, viz, thumbnails, gpu), which each mode's tab uses
    layer 3  modes/*
    layer 4  search (the retriever), evaluate, indexing, model_folder (model index, cards, push)
    layer 5  cli, ui, space, training/*: the entry points and the front
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "hsl_demo"

LAYERS: dict[str, int] = {
    "errors": 0, "defaults": 0, "fileio": 0, "images": 0, "results": 0, "query": 0,
    "backbone": 1, "features": 1, "models": 1,
    "data.attributes": 1, "data.phrasing": 1, "data.phrasing_heldout": 1, "data.demo": 1, "data.triplets": 1,
    "hub": 2, "items": 2, "reader": 2, "catalog": 2, "data": 2,
    "charts": 2, "viz": 2, "thumbnails": 2, "gpu": 2, "widgets": 2,
    "modes": 3,
    "search": 4, "evaluate": 4, "indexing": 4, "model_folder": 4, "convert_weights": 4,
    "cli": 5, "ui": 5, "space": 5, "training": 5, "__main__": 5,
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    """The layer of a module: its own entry, else its package's (models.hsl -> models); the
    package itself (hsl_demo/__init__.py) is the top."""
    if module == "":
        return 5
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"hsl_demo.{module} has no layer: add it to LAYERS")


def imports(path: Path, package_root: Path = PACKAGE) -> set[str]:
    """The package modules `path` imports, anywhere in it (TYPE_CHECKING blocks excepted: they
    never run)."""
    tree = ast.parse(path.read_text())
    here = module_name(path, package_root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.startswith("hsl_demo"):
                target = node.module.removeprefix("hsl_demo").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import modes` names a module
                candidate = f"{target}.{alias.name}".strip(".")
                found.add(candidate if _exists(candidate, package_root) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("hsl_demo.") for a in node.names if a.name.startswith("hsl_demo."))
    return {m for m in found if m and m != module_name(path, package_root)}


def _exists(module: str, package: Path = PACKAGE) -> bool:
    path = package.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    return {module_name(p, package): imports(p, package) for p in package.rglob("*.py")}


def upward_imports(package: Path = PACKAGE) -> list[str]:
    return sorted(f"hsl_demo.{m} (layer {layer(m)}) imports hsl_demo.{t} (layer {layer(t)})"
                  for m, targets in graph(package).items() for t in targets if layer(t) > layer(m))


def import_cycles(package: Path = PACKAGE) -> list[str]:
    deps = graph(package)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(deps.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(deps):
        if module not in state:
            visit(module, [module])
    return cycles


if __name__ == "__main__":
    import sys

    found = [f"upward: {u}" for u in upward_imports()] + [f"cycle: {c}" for c in import_cycles()]
    print("\n".join(found) or "the layer contract holds")
    sys.exit(1 if found else 0)
