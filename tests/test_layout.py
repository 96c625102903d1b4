"""The code's shape, as the README's file map promises it: the chapters in one reading order (each file
imports only files before it, lazy imports included), a scorer that loads no model, chapter-sized files and
functions with few arguments."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The reading order, the same as the README's file list: what is predicted (schema), the method's idea (the
# tasks and the loss), what it is measured against (the data and the scorer), the machinery (tensors, LoRA,
# the network, run directories), extraction, and the loop that ties them together (over one process or
# several).
ORDER = ["schema", "tasks", "data", "evaluate", "tensors", "lora", "model", "run", "rmpl", "distributed",
         "train"]
MODULES = sorted(p.stem for p in ROOT.glob("*.py"))
TOY = sorted(p.name for p in (ROOT / "toy").glob("*.py"))  # the toy world: a package beside the chapters
MAX_PARAMS = 6      # state lives in objects; a function taking a loop's locals is a missing object
PARAM_EXCEPTIONS = {}  # "module.function": why more is clearer


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def imports(path: Path) -> set[str]:
    """Every project module or package that the file imports anywhere: at the top, or inside a function."""
    found = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & (set(MODULES) | {"toy"})


def test_every_top_level_file_is_a_chapter_in_the_order():
    assert set(MODULES) == set(ORDER)


@pytest.mark.parametrize("module", ORDER)
def test_a_chapter_imports_only_chapters_before_it(module):
    earlier = set(ORDER[:ORDER.index(module)]) | ({"toy"} if module == "train" else set())
    found = imports(ROOT / f"{module}.py") - {module}
    assert found <= earlier, f"{module} imports {sorted(found - earlier)}, which come later in the order"


@pytest.mark.parametrize("name", TOY)
def test_the_toy_world_needs_no_model(name):
    """The generator imports the schema alone; its tools read a world back through data.py and score with
    evaluate.py. No toy file imports a later chapter, so train.py may generate the world on first use."""
    allowed = {"schema", "data", "evaluate"} if name == "tools.py" else {"schema"}
    found = imports(ROOT / "toy" / name) - {"toy"}
    assert found <= allowed, f"toy/{name} imports {sorted(found - allowed)}"


def test_the_readme_lists_the_chapters_in_the_order():
    listed = re.findall(r"^\d+\. `(\w+)\.py`", (ROOT / "README.md").read_text(), re.M)
    assert listed == ORDER


@pytest.mark.parametrize("module, must_not_load", [
    ("evaluate", ["train", "rmpl", "model", "tensors", "torch"]),   # the scorer runs without a model
    ("toy", ["evaluate", "train", "rmpl", "model", "data", "torch"]),  # the generator needs no scorer
])
def test_what_an_import_loads(module, must_not_load):
    code = f"import sys, {module}; print(' '.join(m for m in {must_not_load!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"import {module} loads {loaded.stdout.strip()}"


def python_files() -> list[str]:
    return [f"{m}.py" for m in ORDER] + [f"toy/{name}" for name in TOY]


@pytest.mark.parametrize("name", python_files())
def test_chapter_sized(name):
    """Files of about 600 lines at most, functions that fit a screen, lines of at most 100 characters."""
    text = (ROOT / name).read_text()
    assert len(text.splitlines()) <= 620
    long_lines = [k + 1 for k, line in enumerate(text.splitlines()) if len(line) > 100]
    assert not long_lines, f"{name}: lines past 100 characters: {long_lines[:10]}"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= 62, f"{name}: {node.name} is {lines} lines"


@pytest.mark.parametrize("module", ORDER)
def test_functions_take_few_arguments(module):
    """At most MAX_PARAMS parameters (self and cls not counted) in the method's files."""
    for node in ast.walk(tree(ROOT / f"{module}.py")):
        if isinstance(node, ast.FunctionDef):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if f"{module}.{node.name}" not in PARAM_EXCEPTIONS:
                assert len(names) <= MAX_PARAMS, f"{module}.{node.name} takes {len(names)}: {names}"
