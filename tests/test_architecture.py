"""The layers of docs/architecture.md, enforced by reading the import graph (AST).

Every import counts, function-local ones included: a lazy import is still an edge, so it
can never hide a cycle or an upward import.  A function-local import must say why it is
lazy (``# lazy: <why>`` on its line or the line above); the only accepted reason is
start-up cost (torch and heavy optional libraries, or a zoo module that imports them).

A type-only import (under ``if TYPE_CHECKING:``, for annotations; it never runs) may name a
higher layer's type — the hook specs name the engine's ``RunContext`` — but it is still an
edge of the graph, so it can never hide a cycle either.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer or lower ones, never a higher one
LAYERS = [
    ("base", ["zoo.errors", "zoo.settings", "zoo.faults", "zoo.io"]),
    ("contract", ["zoo.hookspecs", "zoo.plugins", "zoo.registry", "zoo.jobspec",
                  "zoo.backbones", "zoo.strategy", "zoo.selection", "zoo.catalog",
                  "zoo.modelcache", "zoo"]),
    ("weights", ["zoo.weights"]),
    ("engine", ["zoo.engine"]),
    ("runs", ["zoo.runs"]),
    ("tools", ["zoo.tools"]),
    ("api", ["zoo.api"]),
    ("front", ["zoo.cli", "zoo.kit", "zoo.__main__"]),
    ("plugins", ["zoo_"]),
]
# public import paths kept where code moved (docs/hooks.md); nothing inside zoo imports them
COMPAT = {"zoo.runner", "zoo.loop", "zoo.features", "zoo.testing"}
# plugins may use the engine, but not the user-facing layers above it
PLUGIN_FORBIDDEN = ("zoo.api", "zoo.cli", "zoo.kit", "zoo.tools", "zoo.runs") + tuple(COMPAT)


def module_files() -> dict[str, Path]:
    out = {}
    files = list((ROOT / "zoo").rglob("*.py")) + [
        p for p in (ROOT / "plugins").rglob("*.py")
        if p.relative_to(ROOT / "plugins").parts[0].startswith("zoo_")]
    for p in files:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "plugins":
            parts = parts[1:]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = module_files()


def layer_of(mod: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            hit = mod == pre or mod.startswith(pre + ".") or (pre.endswith("_")
                                                                 and mod.startswith(pre))
            if hit and len(pre) > best_len:
                best, best_len = i, len(pre)
    assert best is not None, f"module {mod} is in no layer: add it to LAYERS"
    return best


def imports_of(mod: str, path: Path) -> list[tuple[str, int, bool]]:
    """``(target module, line, function-local)`` for every import of a project module."""
    tree = ast.parse(path.read_text())
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    local_lines = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    local_lines.add(node.lineno)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base) + ("." + node.module if node.module else "")
            else:
                target = node.module or ""
            # `from pkg import a, b`: an edge to each submodule named, else to pkg itself
            subs = [target + "." + a.name for a in node.names
                    if target + "." + a.name in MODULES]
            candidates = subs or [target]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for cand in candidates:
            name = cand  # the deepest project module the import names
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != mod:
                out.append((name, node.lineno, node.lineno in local_lines))
    return out


def type_only_lines(path: Path) -> set[int]:
    """Lines of the imports under ``if TYPE_CHECKING:`` (annotations only; never run)."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for inner in ast.walk(sub):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        lines.add(inner.lineno)
    return lines


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}
TYPE_ONLY = {m: type_only_lines(p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for mod in MODULES:
        if mod not in COMPAT:
            layer_of(mod)


def test_no_upward_imports():
    bad = []
    for mod, edges in GRAPH.items():
        if mod in COMPAT:
            continue
        for target, line, _ in edges:
            if target == "zoo":  # the package's lazy public API, imports nothing eagerly
                continue
            if line in TYPE_ONLY[mod] and target not in COMPAT:  # annotations, never run
                continue
            if target in COMPAT:
                bad.append(f"{mod}:{line} imports the compatibility alias {target}")
                continue
            if mod.startswith("zoo_") and target.startswith(PLUGIN_FORBIDDEN):
                bad.append(f"{mod}:{line} (a plugin) imports {target}")
            elif layer_of(target) > layer_of(mod):
                bad.append(f"{mod}:{line} ({LAYERS[layer_of(mod)][0]}) imports "
                           f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in e if t != "zoo"}) for m, e in GRAPH.items()}
    # a package's __init__ importing its submodules is not a cycle with them; a submodule
    # importing a sibling through the package is an edge to the package
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                strong(w)
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
                cycles.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


_LAZY = re.compile(r"#\s*lazy:\s*\S")


def test_function_local_imports_say_why():
    missing = []
    for mod, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here = lines[node.lineno - 1]
                    above = lines[node.lineno - 2] if node.lineno > 1 else ""
                    end = lines[(node.end_lineno or node.lineno) - 1]
                    if not (_LAZY.search(here) or _LAZY.search(above) or _LAZY.search(end)):
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {here.strip()}")
    assert not missing, (f"{len(missing)} function-local imports without '# lazy: <why>' "
                         "(move them to the top, or say why they are lazy):\n"
                         + "\n".join(missing[:60]))


def test_the_graph_test_can_fail(tmp_path):
    """A planted cycle and a planted upward import are both seen."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from zoo.api import run  # lazy: x\n")
    edges = imports_of("zoo.errors", a)
    assert edges == [("zoo.api", 2, True)]
    assert layer_of("zoo.api") > layer_of("zoo.errors")
    b = tmp_path / "b.py"
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from zoo.engine.context import RunContext\nfrom zoo.api import run\n")
    assert type_only_lines(b) == {3}  # the annotation-only import, not the real one


PUBLIC_PATHS = ROOT / "docs" / "hooks.md"


def public_names() -> list[tuple[str, str]]:
    """``(module, name)`` pairs from the 'Public import paths' table of docs/hooks.md."""
    text = PUBLIC_PATHS.read_text()
    section = text.split("## Public import paths", 1)[1].split("\n## ", 1)[0]
    out = []
    for line in section.splitlines():
        m = re.match(r"\|\s*`([\w.]+)`\s*\|\s*(.+?)\s*\|", line)
        if not m:
            continue
        for name in re.findall(r"`(\w+)`", m.group(2)):
            out.append((m.group(1), name))
    return out


def test_every_documented_public_name_imports():
    names = public_names()
    assert len(names) > 30
    for module, name in names:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.startswith("zoo")))
def test_module_size(mod):
    """No module over ~400 lines unless its docstring states why (``Size: ...``)."""
    path = MODULES[mod]
    text = path.read_text()
    n = len(text.splitlines())
    if n > 420:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "Size:" in doc, f"{path.relative_to(ROOT)} has {n} lines and no stated reason"


def test_cli_calls_only_the_api():
    """The CLI is a thin layer over zoo.api: it imports no other part of zoo."""
    allowed = ("zoo.api", "zoo.errors", "zoo.cli", "zoo.kit")
    bad = [f"{mod}:{line} imports {target}"
           for mod, edges in GRAPH.items() if mod.startswith("zoo.cli")
           for target, line, _ in edges
           if target != "zoo" and not target.startswith(allowed)]
    assert not bad, "the CLI reaches past zoo.api:\n" + "\n".join(bad)


MAX_FUNCTION_LINES = 80


def long_functions(path: Path) -> list[str]:
    """``file:line name (N lines)`` for each function of ``path`` over the limit (its
    docstring and decorators' lines count: what a reader has to read)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_in_zoo_is_over_80_lines():
    """A run reads top to bottom in short steps: no function in zoo/ (the plugin kit's
    contract checks included) is over 80 lines."""
    long = [f for mod, path in MODULES.items() if mod == "zoo" or mod.startswith("zoo.")
            for f in long_functions(path)]
    assert not long, "functions over 80 lines (split them):\n" + "\n".join(long)


def test_the_function_length_check_can_fail(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n" + "    x = 1\n" * 81 + "\n\ndef g():\n    return 1\n")
    assert long_functions(src) == ["m.py:1 f (82 lines)"]
