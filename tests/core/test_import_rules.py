"""The layering of the pack, read from its imports with ``ast`` (nothing is imported).

Core floors, bottom up: the bottom files (errors, residuals, family, assembly) -> layers/ -> families/ ->
loading/ -> the package ``__init__``; injection/ and refine/ stand beside them on the bottom files alone. A
family imports layers/ and the bottom files (the declared variants union/ and control_lora/ also the
classic controlnet/). Nodes: base files -> bindings/ -> sampler_wrapper -> node files, which never import
each other. No import hides in a function body, and no circle exists.
"""
import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

CORE_BOTTOM = {"errors", "residuals", "family", "assembly"}
VARIANTS = {"union", "control_lora"}
NODE_BASE = {"base", "compat", "model_info", "control", "validation", "conversions"}
NODE_FILES = {"controlnet_nodes", "family_nodes", "crop_nodes", "inpaint_nodes", "sampling_nodes", "keyframe_nodes"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _exists(name: str) -> bool:
    base = REPO_ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path):
    """``(target module, in a function body)`` for every import of the pack's own modules in ``path``."""
    tree = ast.parse(path.read_text())
    own = _module_name(path)
    package = own if _is_package(path) else own.rpartition(".")[0]
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        root = ".".join(base + ([node.module] if node.module else []))
        for alias in node.names:
            sub = f"{root}.{alias.name}"
            yield (sub if _exists(sub) else root), id(node) in local


def _graph():
    files = [p for top in ("controlnet_core", "nodes") for p in (REPO_ROOT / top).rglob("*.py")]
    return {_module_name(p): list(_imports(p)) for p in files}


GRAPH = _graph()


def _core_place(name: str):
    parts = name.split(".")[1:]
    if not parts:
        return ("init",)
    if parts[0] in CORE_BOTTOM:
        return ("bottom",)
    if parts[0] == "families" and len(parts) > 1:
        return ("family", parts[1])
    return (parts[0],)


def _core_allowed(source: str, target: str) -> bool:
    src, dst = _core_place(source), _core_place(target)
    if dst == ("bottom",) or src == ("init",):
        return True
    if src == ("bottom",):
        return False
    if src[0] == "family":
        same = dst == src or dst == ("families",)
        return same or dst == ("layers",) or (src[1] in VARIANTS and dst == ("family", "controlnet"))
    if src[0] in ("layers", "injection", "refine"):
        return dst == src
    if src[0] == "loading":
        return dst[0] in ("loading", "family", "families", "layers")
    if src[0] == "families":
        return dst[0] == "family"
    return False


def _node_rank(name: str) -> int:
    parts = name.split(".")[1:]
    if not parts:
        return 4
    if parts[0] in NODE_BASE:
        return 0
    if parts[0] == "bindings":
        return 1
    if parts[0] == "sampler_wrapper":
        return 2
    if parts[0] in NODE_FILES:
        return 3
    raise AssertionError(f"{name} is in no floor of nodes/: add it to the rules of this test")


def test_the_graph_covers_the_whole_pack():
    assert {"controlnet_core.family", "controlnet_core.loading.registry", "nodes.bindings.registry",
            "nodes.sampler_wrapper"} <= set(GRAPH)
    assert sum(len(edges) for edges in GRAPH.values()) > 100


def test_no_pack_import_hides_in_a_function_body():
    hidden = [(src, dst) for src, edges in GRAPH.items() for dst, local in edges if local]
    assert hidden == []


@pytest.mark.parametrize("source", sorted(n for n in GRAPH if n.startswith("controlnet_core")))
def test_each_core_module_imports_only_its_floor_or_below(source):
    wrong = [dst for dst, _ in GRAPH[source] if dst.startswith("controlnet_core") and not _core_allowed(source, dst)]
    assert wrong == []


def test_the_core_never_imports_the_node_layer():
    assert [(s, d) for s, edges in GRAPH.items() if s.startswith("controlnet_core")
            for d, _ in edges if d.startswith("nodes")] == []


@pytest.mark.parametrize("source", sorted(n for n in GRAPH if n.startswith("nodes")))
def test_each_node_module_imports_only_lower_floors(source):
    rank = _node_rank(source)
    wrong = []
    for dst, _ in GRAPH[source]:
        if not dst.startswith("nodes"):
            continue
        other = _node_rank(dst)
        same_floor_ok = other == rank and rank in (0, 1)
        if other > rank or (other == rank and not same_floor_ok):
            wrong.append(dst)
    assert wrong == []


def test_only_the_loading_registry_lists_the_families():
    listing = {s for s, edges in GRAPH.items()
               if len({d.split(".")[2] for d, _ in edges if d.startswith("controlnet_core.families.")}) > 2}
    assert listing == {"controlnet_core.loading.registry"}


def test_there_is_no_import_circle():
    edges = {s: {d for d, _ in e if d in GRAPH and d != s} for s, e in GRAPH.items()}
    state, circles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert circles == []
