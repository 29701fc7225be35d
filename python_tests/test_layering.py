"""The import layering of the Python package (CONTRIBUTING.md, "Layers"): every import of a
sniper_ext module, read with `ast` (module tops and function bodies alike), points down or
sideways in the layer table, never up; the units of one layer import each other without cycles;
sniper_ext's own imports sit at module tops (a function-level import hides a dependency); and
nothing outside sniper_ext/cli imports the command line. The checker runs on a copy of the
package with a planted upward import, to show that it catches one."""

from __future__ import annotations

import ast
import os
import shutil
from collections import defaultdict

import pytest

import sniper_ext

PACKAGE_DIR = os.path.dirname(os.path.abspath(sniper_ext.__file__))

#: unit -> layer; a unit is a subpackage or a top-level module of sniper_ext ("" is the package
#: itself). A unit may import units of its own layer or below.
LAYERS: dict[str, int] = {
    **dict.fromkeys(("", "_loader", "_build_info", "_atomic", "errors", "ops", "info", "baselines"), 0),
    "chips": 1,
    **dict.fromkeys(("modeling", "config", "viz", "nn"), 2),
    **dict.fromkeys(("data", "runtime"), 3),
    **dict.fromkeys(("inference", "evaluation", "export"), 4),
    "engine": 5,
    "demo": 6,
    "cli": 7,
}

#: sniper_ext modules that may be imported inside a function, and why
LAZY_OK = {
    ("_loader", "_build_info"): "written by the build; its absence is reported, not an import error",
}


def _module_name(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
    rel = rel[: -len(".__init__")] if rel.endswith(".__init__") else ("" if rel == "__init__" else rel)
    return "sniper_ext" + ("." + rel if rel else "")


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_imports(root: str) -> list[tuple[str, str, int, bool]]:
    """(importing module, imported sniper_ext module, line, at module top) for every import of
    the package under ``root``."""
    out = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = _module_name(path, root)
            package = module if name == "__init__.py" else module.rsplit(".", 1)[0]
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            top = {id(n) for n in tree.body}
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                        stem = ".".join(base + ([node.module] if node.module else []))
                    elif node.module and node.module.split(".")[0] == "sniper_ext":
                        stem = node.module
                    else:
                        continue
                    # `from . import cli` imports the module sniper_ext.cli
                    for alias in node.names:
                        full = f"{stem}.{alias.name}"
                        sub = os.path.join(root, *full.split(".")[1:])
                        targets.append(full if os.path.isdir(sub) or os.path.isfile(sub + ".py") else stem)
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names if a.name.split(".")[0] == "sniper_ext"]
                for t in targets:
                    out.append((module, t, node.lineno, id(node) in top))
    return out


def layering_problems(root: str) -> list[str]:
    """Every violation of the rules of the module docstring, one line each."""
    problems = []
    edges = defaultdict(set)
    for src, dst, line, at_top in package_imports(root):
        s, d = _unit(src), _unit(dst)
        where = f"{src} (line {line}) imports {dst}"
        if s not in LAYERS or d not in LAYERS:
            problems.append(f"{where}: unit {s if s not in LAYERS else d!r} is not in the layer table")
            continue
        if LAYERS[d] > LAYERS[s]:
            problems.append(f"{where}: up the layers ({s or 'sniper_ext'} {LAYERS[s]} -> {d} {LAYERS[d]})")
        if d == "cli" and s != "cli":
            problems.append(f"{where}: only sniper_ext/cli may import the command line")
        if not at_top and (s, d) not in LAZY_OK and s != d:
            problems.append(f"{where}: inside a function (sniper_ext imports belong at the module top)")
        if s != d:
            edges[s].add(d)
    # no cycles between units (within a layer; across layers the table already forbids them)
    state: dict = {}

    def visit(u, path):
        state[u] = 1
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                problems.append("import cycle between units: " + " -> ".join([*path[path.index(v) :], v]))
            elif v not in state:
                visit(v, [*path, v])
        state[u] = 2

    for u in sorted(edges):
        if u not in state:
            visit(u, [u])
    return problems


def test_package_follows_the_layer_table():
    problems = layering_problems(PACKAGE_DIR)
    assert not problems, "\n".join(problems)


def test_every_unit_is_in_the_layer_table():
    units = {_unit(_module_name(os.path.join(PACKAGE_DIR, n), PACKAGE_DIR)) for n in os.listdir(PACKAGE_DIR)
             if n.endswith(".py")}  # fmt: skip
    units |= {n for n in os.listdir(PACKAGE_DIR) if os.path.isfile(os.path.join(PACKAGE_DIR, n, "__init__.py"))}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


@pytest.mark.parametrize(
    "file,planted,expected",
    [
        ("chips/planner.py", "from ..data import load_coco\n", "up the layers (chips 1 -> data 3)"),
        ("inference/merge.py", "from ..engine import train\n", "up the layers (inference 4 -> engine 5)"),
        ("runtime/precision.py", "from ..cli import main\n", "only sniper_ext/cli may import the command line"),
        ("data/images.py", "def f():\n    from ..chips import ChipDB\n", "inside a function"),
        ("config.py", "from . import viz\n", "import cycle between units"),
    ],
)
def test_checker_catches_a_planted_violation(tmp_path, file, planted, expected):
    copy = tmp_path / "sniper_ext"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    if file == "config.py":  # a cycle within layer 2: viz -> config as well as config -> viz
        with open(copy / "viz.py", "a", encoding="utf-8") as f:
            f.write("\nfrom .config import preset  # noqa\n")
    with open(copy / file, "a", encoding="utf-8") as f:
        f.write("\n" + planted)
    problems = layering_problems(str(copy))
    assert any(expected in p for p in problems), problems
