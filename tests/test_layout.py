"""The code's shape, as the README's file map promises it: an import graph without cycles (lazy imports
included) in the order of the method, a scorer that loads no model, and chapter-sized files."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in ROOT.glob("*.py"))
TOY = sorted(p.name for p in (ROOT / "toy").glob("*.py"))  # the toy world, a package


def imports(module: str, path: Path | None = None) -> set[str]:
    """Every project module that ``module`` imports anywhere: at the top, or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((path or ROOT / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES) - {module}


def test_no_import_cycle():
    graph = {m: imports(m) for m in MODULES}
    done, visiting = set(), []

    def visit(m):
        if m in visiting:
            pytest.fail("import cycle: " + " -> ".join(visiting[visiting.index(m):] + [m]))
        if m not in done:
            visiting.append(m)
            for n in sorted(graph[m]):
                visit(n)
            visiting.pop()
            done.add(m)

    for m in MODULES:
        visit(m)


# The method's order: a file imports only files before it (evaluate's scorer sits beside data, since
# train.py scores its dev F1 with it; evaluate's command line runs a model through rmpl.py).
ORDER = ["schema", "data", "evaluate", "tensors", "lora", "model", "rmpl", "checkpoints", "train"]


@pytest.mark.parametrize("module", [m for m in ORDER if m != "evaluate"])
def test_imports_follow_the_method_order(module):
    earlier = set(ORDER[:ORDER.index(module)])
    assert imports(module) <= earlier, f"{module} imports {sorted(imports(module) - earlier)}"


@pytest.mark.parametrize("name", TOY)
def test_the_toy_world_imports_only_the_schema(name):
    """The generator needs no reader, scorer or model; its tools read a world back through data.py
    and evaluate.py."""
    allowed = {"schema", "data", "evaluate"} if name == "tools.py" else {"schema"}
    found = imports(name[:-3], ROOT / "toy" / name)
    assert found <= allowed, f"toy/{name} imports {sorted(found - allowed)}"


@pytest.mark.parametrize("module, must_not_load", [
    ("evaluate", ["train", "rmpl", "model", "tensors", "torch"]),   # the scorer runs without a model
    ("toy", ["evaluate", "train", "rmpl", "model", "data", "torch"]),  # the generator needs no scorer
])
def test_what_an_import_loads(module, must_not_load):
    code = f"import sys, {module}; print(' '.join(m for m in {must_not_load!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"import {module} loads {loaded.stdout.strip()}"


def test_every_module_is_in_the_order():
    assert set(MODULES) == set(ORDER)


@pytest.mark.parametrize("module", MODULES + [f"toy/{name[:-3]}" for name in TOY])
def test_chapter_sized(module):
    """Files of about 600 lines at most, functions that fit a screen, lines of at most 100 characters."""
    text = (ROOT / f"{module}.py").read_text()
    assert len(text.splitlines()) <= 620
    long_lines = [k + 1 for k, line in enumerate(text.splitlines()) if len(line) > 100]
    assert not long_lines, f"{module}.py: lines past 100 characters: {long_lines[:10]}"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= 62, f"{module}.{node.name} is {lines} lines"
