"""The package's imports point one way (docs/architecture.md): cli → api → experiments → reporting →
pipeline → training and runs → evaluate → models → datasets → data → core.

Every import of every module is read with `ast` (also those inside functions: a lazy import is still a
dependency), and three rules are checked: no module imports a higher layer, no import circle, and no
private name (`_x`) imported from another module (tests included, except through tests/internals.py).
ALLOWED (upward imports tolerated during a move) is empty."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmkit"
TESTS = Path(__file__).resolve().parent

# layer of a module: the longest matching prefix wins; higher layers may import lower ones only
LAYERS = [
    ("core", ["lmkit", "lmkit.errors", "lmkit.protocol", "lmkit.defaults", "lmkit.config", "lmkit.validate",
              "lmkit.atomic", "lmkit.artifacts", "lmkit.cache", "lmkit.device", "lmkit.outputs", "lmkit.logs",
              "lmkit.render", "lmkit.runlock", "lmkit.memory", "lmkit.npzmap"]),
    ("data", ["lmkit.data"]),
    ("datasets", ["lmkit.datasets"]),
    ("models", ["lmkit.models"]),
    ("evaluate", ["lmkit.evaluate"]),
    ("training", ["lmkit.train", "lmkit.training", "lmkit.distributed", "lmkit.runs", "lmkit.runwriter"]),
    ("pipeline", ["lmkit.pipeline", "lmkit.check"]),
    ("reporting", ["lmkit.compare", "lmkit.analyze", "lmkit.plot", "lmkit.report_charts"]),
    ("experiments", ["lmkit.lineup", "lmkit.curve", "lmkit.mixing", "lmkit.verify", "lmkit.report"]),
    ("api", ["lmkit.api"]),
    ("cli", ["lmkit.cli", "lmkit.__main__"]),
]
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}

# upward imports tolerated while a move is in progress: the list may only shrink (it is empty)
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    best = max((p for p in RANK if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return RANK[best]


def is_module(dotted: str) -> bool:
    base = PACKAGE.parent / dotted.replace(".", "/")
    return base.is_dir() or base.with_suffix(".py").exists()


def imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every lmkit import in the file."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "lmkit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lmkit":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if is_module(f"{target}.{n}")]
            found += [(m, []) for m in submodules]
            rest = [n for n in names if f"{target}.{n}" not in submodules]
            if rest:
                found.append((target, rest))
    return found


def graph() -> dict[str, list[tuple[str, list[str]]]]:
    return {module_name(p): imports(p, module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def known(module: str, modules: set[str]) -> str:
    """The package module an import names (an import of a name inside a module maps to that module)."""
    while module not in modules and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def test_imports_point_down_the_layers():
    g = graph()
    upward = set()
    for importer, edges in g.items():
        for target, _ in edges:
            target = known(target, set(g))
            if target != importer and layer(target) > layer(importer):
                upward.add((importer, target))
    assert upward <= ALLOWED, "imports of a higher layer: " + ", ".join(f"{a} -> {b}" for a, b in
                                                                      sorted(upward - ALLOWED))


def test_no_import_circles():
    g = graph()
    edges = {m: {known(t, set(g)) for t, _ in e} - {m} for m, e in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_no_private_name_crosses_a_module_boundary():
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for target, names in imports(path, module_name(path)):
            crossing += [f"{module_name(path)} imports {n} from {target}" for n in names
                         if n.startswith("_") and not n.startswith("__")]
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "internals.py":
            continue
        for target, names in imports(path, "tests." + path.stem):
            crossing += [f"tests/{path.name} imports {n} from {target}" for n in names if n.startswith("_")
                         and not n.startswith("__")]
    assert crossing == [], crossing


def test_the_checker_sees_a_violation():
    """The rules above are not vacuous: an upward import and a private import are found in a sample."""
    sample = PACKAGE / "data" / "_layering_sample.py"
    sample.write_text("from ..api import _quiet\n", encoding="utf-8")
    try:
        edges = imports(sample, module_name(sample))
    finally:
        sample.unlink()
    assert edges == [("lmkit.api", ["_quiet"])]
    assert layer("lmkit.api") > layer("lmkit.data.vocab")


MAX_FUNCTION_LINES = 80


def test_api_is_a_thin_facade_nothing_inside_imports():
    assert len((PACKAGE / "api.py").read_text(encoding="utf-8").splitlines()) <= 300
    g = graph()
    users = sorted(m for m, edges in g.items() if m not in ("lmkit.cli", "lmkit.api")
                   and any(known(t, set(g)) == "lmkit.api" for t, _ in edges))
    assert users == [], f"lmkit.api is imported inside the package by {users}"


def test_no_function_is_longer_than_a_screen():
    """No function over MAX_FUNCTION_LINES lines; the CLI's commands are measured from their body (their
    typer signatures are one option per line by design)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.body[0].lineno if path.name == "cli.py" else node.lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{module_name(path)}.{node.name} ({node.end_lineno - start + 1} lines)")
    assert long == []
