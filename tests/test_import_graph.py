"""The import graph of atf/, orchestration/ and reports/ has no cycle and keeps its layers.

Read statically with `ast`, so every import counts wherever it stands: at the top, under
`if TYPE_CHECKING:`, or inside a function. A lazy import delays a cost, not a dependency; two
modules that need each other are one idea split in two (issue 12), whichever of them imports late.
Edges go to the most specific module named (`from atf.synth import stats` is an edge to
`atf.synth.stats`, `from atf.models import build_model` one to the package `atf.models`); the
parent packages Python runs on the way in are not edges (a package `__init__` that re-exports its
modules would otherwise form a cycle with each of them).

Layers (docs/design.md, "Layers"):
  atf            imports nothing of orchestration or reports, and never ray, mlflow or optuna
                 (not even lazily: tests/test_core_isolation.py checks the import at run time)
  orchestration  imports nothing of reports
  reports        imports of orchestration only modules whose import loads no ray, mlflow or
                 optuna (module-level closure), so that listing sweep cells stays cheap

Run as a script to print the graph's cycles and the layer breaches: `python tests/test_import_graph.py`.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("atf", "orchestration", "reports")
HEAVY = ("ray", "mlflow", "optuna")

# Cycles still present while issue 12 is worked on, each with who removes it. A cycle not listed
# here fails the test; a listed one that is gone fails too, so this list only ever shrinks.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str        # importing module
    target: str        # imported module (project module, or a top-level third-party name)
    where: str         # "path:line"
    lazy: bool         # inside a function (runs when called, not when the module is imported)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is_package) for every .py file under PACKAGES."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _named(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """Dotted names an import statement refers to (submodules where `from x import y` names one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_pkg else module.split(".")[:-1]
        here = here[:len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def _resolve(name: str, known: set[str]) -> str:
    """The longest project module prefix of `name`, else its top-level (third-party) name."""
    probe = name
    while probe and probe not in known:
        probe = probe.rpartition(".")[0]
    return probe or name.split(".")[0]


class _Imports(ast.NodeVisitor):
    def __init__(self):
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
        self._depth = 0

    def _function(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node):
        self.found.append((node, self._depth > 0))

    visit_ImportFrom = visit_Import


def import_edges() -> list[Edge]:
    mods = _modules()
    known = set(mods)
    edges: dict[Edge, None] = {}     # ordered set: `from x import a, b` is one edge
    for module, (path, is_pkg) in mods.items():
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for node, lazy in visitor.found:
            for name in _named(module, is_pkg, node, known):
                target = _resolve(name, known)
                if target != module:
                    edges[Edge(module, target, f"{path.relative_to(ROOT)}:{node.lineno}", lazy)] = None
    return list(edges)


def _project(edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for e in edges:
        if e.target in graph:
            graph[e.source].add(e.target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module, each sorted (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def _shortest_cycle(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """Shortest path start -> ... -> start inside one component (breadth first)."""
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]


def describe_cycles(component: list[str], edges: list[Edge]) -> list[str]:
    """Each module's shortest cycle through the component as `a -> b -> a (where ...)`, once."""
    members = set(component)
    graph: dict[str, set[str]] = {m: set() for m in members}
    for e in edges:
        if e.source in members and e.target in members:
            graph[e.source].add(e.target)
    lines, seen = [], set()
    for m in component:
        cycle = _shortest_cycle(m, graph, members)
        steps = list(zip(cycle, cycle[1:]))
        key = frozenset(steps)
        if key in seen:
            continue
        seen.add(key)
        where = []
        for a, b in steps:
            hits = [e for e in edges if e.source == a and e.target == b]
            where += [f"{e.where}{' (in a function)' if e.lazy else ''}" for e in hits]
        lines.append(" -> ".join(cycle) + "   [" + "; ".join(where) + "]")
    return lines


def _top_level_closure(module: str, edges: list[Edge]) -> set[str]:
    """Everything importing `module` loads: module-level imports, followed through the project."""
    out, todo = set(), [module]
    while todo:
        m = todo.pop()
        for e in edges:
            if e.source == m and not e.lazy and e.target not in out:
                out.add(e.target)
                todo.append(e.target)
    return out


def layer_breaches(edges: list[Edge]) -> list[str]:
    out = []
    for e in edges:
        top_s, top_t = e.source.split(".")[0], e.target.split(".")[0]
        if top_s == "atf" and top_t in ("orchestration", "reports", *HEAVY):
            out.append(f"{e.where}: the core imports {e.target}")
        if top_s == "orchestration" and top_t == "reports":
            out.append(f"{e.where}: orchestration imports the report ({e.target})")
        if top_s == "reports" and top_t == "orchestration":
            heavy = sorted({t for t in _top_level_closure(e.target, edges) | {e.target}
                            if t.split(".")[0] in HEAVY})
            if heavy:
                out.append(f"{e.where}: the report imports {e.target}, whose import loads {', '.join(heavy)}")
    return out


# -- tests ----------------------------------------------------------------------------------

def test_the_walker_sees_every_kind_of_import():
    edges = {(e.source, e.target, e.lazy) for e in import_edges()}
    assert ("atf.train", "atf.config", False) in edges                # from atf.config import ...
    assert ("reports.cli", "reports.sweeps", False) in edges          # from .sweeps import ... (relative)
    assert ("atf.synth.generate", "atf.synth.presets", False) in edges  # from atf.synth import presets
    assert ("reports.sweeps", "orchestration.sweepfile", True) in edges  # inside a function
    assert ("orchestration.jobs", "ray", True) in edges               # third-party: its top-level name


def test_strongly_connected_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    edges = [Edge("a", "b", "a.py:1", False), Edge("b", "c", "b.py:2", True), Edge("c", "a", "c.py:3", False)]
    assert describe_cycles(["a", "b", "c"], edges)[0].startswith("a -> b -> c -> a   [a.py:1; b.py:2 (in a function)")


def test_no_import_cycles():
    edges = import_edges()
    found = strongly_connected(_project(edges))
    new = [c for c in found if frozenset(c) not in ALLOWED_CYCLES]
    report = [line for c in new for line in describe_cycles(c, edges)]
    assert not new, "import cycles (break each; see docs/design.md, one home per idea):\n" + "\n".join(report)


def test_allowed_cycles_are_still_cycles():
    """When a listed cycle is broken, take it off ALLOWED_CYCLES so it cannot come back."""
    found = {frozenset(c) for c in strongly_connected(_project(import_edges()))}
    stale = [sorted(c) for c in ALLOWED_CYCLES if c not in found]
    assert not stale, f"no longer cycles, remove from ALLOWED_CYCLES: {stale}"


def test_layers():
    breaches = layer_breaches(import_edges())
    assert not breaches, "layer rule broken (see the docstring):\n" + "\n".join(breaches)


if __name__ == "__main__":
    all_edges = import_edges()
    for comp in strongly_connected(_project(all_edges)):
        print("\n".join(describe_cycles(comp, all_edges)))
    print("\n".join(layer_breaches(all_edges)) or "layers: ok")
