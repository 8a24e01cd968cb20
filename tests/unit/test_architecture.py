"""The house rules, checked on the source: no import cycles, data flowing one way, Prefect
and Ray where they belong, and no import inside a function except of a heavy dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

PACKAGES = ("cecq", "flows", "tasks")
# Third-party modules slow enough to import (measured here: sentence-transformers 13 s,
# mteb 8 s, torch 3 s, prefect 2 s, sklearn 2 s) that code may import them where used.
HEAVY = {
    "torch",
    "sentence_transformers",
    "transformers",
    "sklearn",
    "scipy",
    "ray",
    "prefect",
    "matplotlib",
    "mteb",
    "datasets",
    "tqdm",
    "faiss",
    "safetensors",
}
OPTIONAL = {"botocore", "aiohttp"}  # S3 client libraries, absent where only local stores are used
HEAVY_MARKER = "# heavy"  # a project import inside a function says why: it pulls a heavy dependency


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO_ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, module: str, modules: set[str]) -> list[tuple[str, int, bool, str]]:
    """(imported project module or top-level third-party name, line, inside a function, source line)."""
    tree = ast.parse(path.read_text(), str(path))
    lines = path.read_text().splitlines()
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                # `from pkg import sub` imports the submodule pkg.sub where there is one
                names = [
                    f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in modules else child.module
                    for a in child.names
                ]
            for name in names:
                out.append((name, child.lineno, in_function, lines[child.lineno - 1]))
            visit(child, inner)

    visit(tree, False)
    return out


SOURCES = _sources()
IMPORTS = {m: _imports(p, m, set(SOURCES)) for m, p in SOURCES.items()}


def _project(name: str) -> str | None:
    """The project module ``name`` refers to (itself, or the nearest package above it)."""
    while name and name not in SOURCES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in SOURCES}
    for module, imports in IMPORTS.items():
        for name, _, _, _ in imports:
            target = _project(name)
            if target and target != module:
                graph[module].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` meets, as a path that returns to its start.
    A package's ``__init__`` re-exporting its own submodules is not a cycle in the data flow."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    return [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]


def test_no_import_cycle_in_the_project():
    cycles = find_cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_cycles_and_spares_package_reexports():
    assert find_cycles({"cecq.cli": {"cecq.bench.quality"}, "cecq.bench.quality": {"cecq.cli"}}) == [
        ["cecq.bench.quality", "cecq.cli", "cecq.bench.quality"]
    ]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert (
        find_cycles({"cecq.quantization": {"cecq.quantization.base"}, "cecq.quantization.base": {"cecq.quantization"}})
        == []
    )
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# Layers, in the direction data flows: a module may import only its own layer or those before it.
LAYERS: list[tuple[str, ...]] = [
    ("cecq.errors", "cecq.killpoints", "cecq.plugins", "cecq.storage", "cecq.progress"),
    ("cecq.quantization",),
    ("cecq.config", "cecq.targets"),
    ("cecq.encoders",),
    ("cecq.decoder", "cecq.search", "cecq.index"),
    ("cecq.catalog",),
    ("cecq.pipeline",),
    ("cecq.eval",),
    ("cecq.bench",),
    ("tasks",),
    ("flows",),
    ("cecq.cli",),
]


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_data_flows_one_way_between_subpackages():
    wrong = []
    for module, targets in _graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if here is not None and there is not None and there > here:
                wrong.append(f"{module} imports {target} (a later layer)")
    assert not wrong, "\n".join(wrong)


def test_prefect_only_in_flows_and_tasks_and_ray_only_in_the_pool():
    wrong = []
    for module, imports in IMPORTS.items():
        for name, line, _, _ in imports:
            top = name.split(".")[0]
            if top == "prefect" and not module.startswith(("flows", "tasks")):
                wrong.append(f"{module}:{line} imports prefect")
            if top == "ray" and module != "cecq.pipeline.ray_pool":
                wrong.append(f"{module}:{line} imports ray")
            if top in ("flows", "tasks") and module.startswith("cecq") and module != "cecq.cli.pipeline":
                wrong.append(f"{module}:{line} imports {name} (the library knows nothing of Prefect)")
    assert not wrong, "\n".join(wrong)


def test_imports_inside_functions_are_only_of_heavy_dependencies():
    wrong = []
    for module, imports in IMPORTS.items():
        for name, line, in_function, text in imports:
            if not in_function:
                continue
            top = name.split(".")[0]
            if top in PACKAGES:
                if HEAVY_MARKER not in text:
                    wrong.append(
                        f"{module}:{line}: {text.strip()} (a project import inside a function, "
                        f"not marked {HEAVY_MARKER!r})"
                    )
            elif top not in HEAVY | OPTIONAL:
                wrong.append(f"{module}:{line}: {text.strip()} (import it at the top of the module)")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("cecq")))
def test_every_library_module_has_a_docstring(module):
    tree = ast.parse(SOURCES[module].read_text())
    assert ast.get_docstring(tree) or module.endswith("__main__"), f"{module} has no module docstring"
