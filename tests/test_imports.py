"""The package's import graph has no cycle (issue 17 item 7) and goes only downward (issue 19 item 2).

Walks src/statespaces with ``ast`` and builds module -> module edges for the package's own imports
at module level (``import statespaces.x``, ``from . import x``, ``from ..x import y`` -- to the
submodule ``y`` if it is one, else to ``x``), then asserts the graph is acyclic. A second check
covers the kernel-selection layer with function-level (lazy) imports included: the ops, the
policy module and the Triton kernels must not reach each other in a circle even lazily. With
function-level imports included, the whole package has no circle either, and no module imports one
on a higher floor (:data:`FLOORS`: kernels < layers < blocks < models < data/train < analysis/reproduce
< cli).
"""
import ast
import functools
import pathlib
from typing import Dict, List, Set, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1] / "src"
PKG = "statespaces"

#: Cycles outside the kernel-selection slice that are known and not yet removed (each as the sorted
#: list of its modules). Empty: there are none today.
KNOWN_CYCLES: List[List[str]] = []


def _modules() -> Dict[str, pathlib.Path]:
    mods = {}
    for p in (ROOT / PKG).rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _is_package(mods, name: str) -> bool:
    return mods.get(name, pathlib.Path()).name == "__init__.py"


def _resolve(mods, current: str, node) -> List[str]:
    out = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name == PKG or a.name.startswith(PKG + "."):
                out.append(a.name)
        return out
    if node.level:
        base = current.split(".") if _is_package(mods, current) else current.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not (target == PKG or target.startswith(PKG + ".")):
        return out
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if sub in mods else target)
    return out


@functools.lru_cache(maxsize=None)   # parsed once per session; callers copy before changing it
def _graph(lazy: bool) -> Dict[str, Set[str]]:
    mods = _modules()
    g: Dict[str, Set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        nodes = _runtime_nodes(tree) if lazy else _module_level(tree)
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _resolve(mods, name, node):
                    if t in mods and t != name:
                        g[name].add(t)
    return g


def _runtime_nodes(tree):
    """Every node that can run (function bodies included), but not ``if TYPE_CHECKING:`` blocks, which
    only type checkers read."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _module_level(tree):
    """Import statements executed at import time: the module body, including if/try blocks, but not
    function or class bodies (and not ``if TYPE_CHECKING:`` blocks)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                stack.append(child)
            elif isinstance(child, ast.excepthandler):
                stack.extend(child.body)


def _cycles(g: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for v in sorted(g):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(old)
    return out


def test_walker_sees_the_package():
    g = _graph(lazy=False)
    assert "statespaces.backend" in g and "statespaces.kernels.vandermonde" in g
    assert "statespaces.backend" in g["statespaces.kernels.vandermonde"]
    assert g["statespaces.backend"] == set(), "the policy module must sit at the bottom of the package"


def test_module_level_import_graph_is_acyclic():
    cycles = [c for c in _cycles(_graph(lazy=False)) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles at module level:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_kernel_selection_layer_has_no_cycle_even_with_lazy_imports():
    layer = {"statespaces.backend", "statespaces.kernels.dispatch", "statespaces.kernels.vandermonde",
             "statespaces.kernels.cauchy", "statespaces.kernels.reference", "statespaces.ops.scan",
             "statespaces.ops._amp", "statespaces.ops._cauchy_args"}
    layer |= {m for m in _modules() if m.startswith("statespaces.ops.triton")}
    full = _graph(lazy=True)
    g = {m: {t for t in full[m] if t in layer} for m in layer}
    assert not _cycles(g), _cycles(g)


# --- floors (issue 19 item 2) ----------------------------------------------------------------------
#: Each module's floor, by the longest matching prefix: a module may import its own floor and the
#: floors below, never one above (lazy, function-level imports included). ``statespaces`` itself
#: (the package ``__init__``) re-exports the library and sits just below the harnesses.
FLOORS = {
    "statespaces._version": 0, "statespaces._checks": 0, "statespaces._config": 0, "statespaces.backend": 0,
    "statespaces._linalg": 0,
    "statespaces.hippo": 0, "statespaces.discretize": 0, "statespaces.ops": 0, "statespaces.kernels": 0,
    "statespaces.serialization": 1, "statespaces.layers": 1, "statespaces.optim": 1, "statespaces.export": 1,
    "statespaces.blocks": 2,
    "statespaces.models": 3,
    "statespaces.data": 4, "statespaces.train": 4,
    "statespaces": 5,
    "statespaces.analysis": 6, "statespaces.reproduce": 6,
    "statespaces.cli": 7, "statespaces.__main__": 7,
}
FLOOR_NAMES = ["kernels", "layers", "blocks", "models", "data/train", "package", "analysis/reproduce", "cli"]

#: Upward imports that are known and not yet removed, as (importer, imported): none left
#: (``load_pretrained`` reaches the trainer through a loader the package ``__init__`` registers).
KNOWN_UPWARD: Set[Tuple[str, str]] = set()


def floor_of(module: str) -> int:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise KeyError(f"{module} has no floor in FLOORS; add it (or its package) there")


def _package_of(module: str) -> str:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in FLOORS:
            return ".".join(parts[:k])
    return module


def upward_imports(g: Dict[str, Set[str]]) -> List[str]:
    """``"a -> b (floor x -> y)"`` for every edge of ``g`` from a lower floor to a higher one."""
    out = []
    for a in sorted(g):
        for b in sorted(g[a]):
            fa, fb = floor_of(a), floor_of(b)
            if fb > fa and (_package_of(a), _package_of(b)) not in KNOWN_UPWARD:
                out.append(f"{a} -> {b} ({FLOOR_NAMES[fa]} -> {FLOOR_NAMES[fb]})")
    return out


def test_every_module_has_a_floor():
    for m in _modules():
        floor_of(m)


def _without_known_upward(g: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    return {a: {b for b in t if (_package_of(a), _package_of(b)) not in KNOWN_UPWARD} for a, t in g.items()}


def test_whole_package_is_acyclic_with_lazy_imports():
    """Every lazy import included (a known upward import, reported by the floor test, left out)."""
    cycles = _cycles(_without_known_upward(_graph(lazy=True)))
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_goes_up_a_floor():
    bad = upward_imports(_graph(lazy=True))
    assert not bad, "imports from a lower floor to a higher one:\n" + "\n".join(bad)


def test_floor_check_catches_a_violation_and_a_cycle():
    """The checks can fail: an upward edge and a lazy cycle planted into a copy of the real graph."""
    g = {m: set(t) for m, t in _graph(lazy=True).items()}
    g["statespaces.layers.s4d"].add("statespaces.reproduce.registry")
    assert upward_imports(g) == ["statespaces.layers.s4d -> statespaces.reproduce.registry (layers -> "
                                 "analysis/reproduce)"]
    g["statespaces.blocks"].add("statespaces")
    assert any({"statespaces", "statespaces.blocks"} <= set(c) for c in _cycles(_without_known_upward(g)))
    assert floor_of("statespaces.ops.triton.scan") == 0 and floor_of("statespaces.cli") == 7
