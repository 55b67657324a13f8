"""The package's import graph, read from the source with ``ast`` (nothing is imported): modules do not import each
other in a circle, and a module uses only another module's public names (a leading underscore is that file's own
business). Imports inside functions count; those under ``if TYPE_CHECKING:`` and the lazy ``importlib`` maps of the
packages' ``__init__`` do not, as neither runs an import when the module is loaded or called."""

from __future__ import annotations

import ast
from pathlib import Path

# The source next to these tests, read as text: importing the package would load transformers for nothing.
ROOT = Path(__file__).resolve().parent.parent / "liteasr_hf"
PACKAGE = ROOT.name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of ``node``'s ``from`` module, as seen from ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """The ``id`` of every node under an ``if TYPE_CHECKING:``."""
    skipped = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or
                                         isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            skipped |= {id(inner) for child in node.body for inner in ast.walk(child)}
    return skipped


def _scan(module: str) -> tuple[set[str], list[str]]:
    """The liteasr_hf modules that ``module`` imports, and its uses of another module's private names
    (``file:line: name``)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    skipped = _type_checking_blocks(tree)
    imported: set[str] = set()
    private: list[str] = []
    aliases: dict[str, str] = {}  # local name -> liteasr_hf module it is bound to
    where = str(MODULES[module].relative_to(ROOT.parent))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    imported.add(alias.name)
                    # `import liteasr_hf.x` binds the name liteasr_hf; `import liteasr_hf.x as y` binds y to x.
                    aliases[alias.asname or PACKAGE] = alias.name if alias.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if not _ours(source):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:  # `from . import x`: x's code runs, the (already loading) package's is not
                    imported.add(submodule)
                    aliases[alias.asname or alias.name] = submodule
                else:
                    imported.add(source)
                    if _private(alias.name) and source != module:
                        private.append(f"{where}:{node.lineno}: {alias.name} from {source}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and _private(node.attr) and aliases[node.value.id] != module):
            private.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr} of {aliases[node.value.id]}")
    return {m for m in imported if m in MODULES and m != module}, private


SCANS = {module: _scan(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` through each group of modules that import each other (Tarjan's strongly
    connected components, each with more than one module or importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while not group or member != node:
                member = stack.pop()
                group.add(member)
            if len(group) > 1 or node in graph[node]:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the first (by name) module of ``group``, a strongly connected group of ``graph``."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_the_scan_sees_imports_inside_functions_and_relative_ones():
    graph = {module: imported for module, (imported, _) in SCANS.items()}
    assert f"{PACKAGE}.models.lite_whisper.modeling_lite_whisper" in graph[f"{PACKAGE}.compression.compressor"]
    assert PACKAGE in graph[f"{PACKAGE}.checkpoints.loading"]  # `import liteasr_hf` inside a function
    assert f"{PACKAGE}.data.speech" in graph[f"{PACKAGE}.evaluation.benchmark"]  # `from ..data.speech` in one


def test_no_module_imports_itself_in_a_circle():
    graph = {module: imported for module, (imported, _) in SCANS.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_uses_another_modules_private_names():
    private = [use for _, uses in SCANS.values() for use in uses]
    assert not private, "private names used across modules:\n" + "\n".join(private)


def test_cycle_finder():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}) == [["a", "b", "c", "a"], ["d", "d"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
