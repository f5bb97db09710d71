"""The layers of README's architecture map hold: the import contracts in pyproject.toml (import-linter, imports
inside functions included), no import cycle, no function with more than 6 positional parameters, no file over
400 lines. Each check is shown to fail on a planted violation."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from helpers import ROOT

CODE_DIRS = ("collm_udf", "jobs", "benchmarks", "tests")
MAX_LINES = 400
MAX_POSITIONAL = 6


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's contracts of pyproject.toml over the package tree under `root`."""
    if root != ROOT:
        shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command(['--no-cache']))"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_hold():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 3 kept, 0 broken." in r.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("core/prompt.py", "import pyspark", "the core imports neither pyspark nor yaml"),
    ("core/signals.py", "import yaml", "the core imports neither pyspark nor yaml"),
    ("config/base.py", "from collm_udf.spark import tables", "entry points > spark > services > config > core"),
    ("core/metrics.py", "def f():\n    from collm_udf.config import load_config",  # a lazy import counts too
     "entry points > spark > services > config > core"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "collm_udf", tmp_path / "collm_udf", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "collm_udf" / module
    target.write_text(target.read_text() + "\n" + line + "\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout
    assert broken in " ".join(r.stdout.split())


def cycles(package: str) -> list[list[str]]:
    """The import cycles among the modules of `package` (strongly connected components of more than one module,
    or a module importing itself), imports inside functions and TYPE_CHECKING blocks included."""
    graph = grimp.build_graph(package, cache_dir=None)
    index: dict = {}
    low: dict = {}
    stack: list = []
    on: set = set()
    out: list = []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
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
            if len(comp) > 1 or v in graph.find_modules_directly_imported_by(v):
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle():
    assert cycles("collm_udf") == []


def test_a_lazy_import_that_closes_a_cycle_is_found(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyc import a  # lazy: hides the cycle at import time\n")
    (pkg / "c.py").write_text("from cyc import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cycles("cyc") == [["cyc.a", "cyc.b"]]


def python_files():
    for d in CODE_DIRS:
        yield from sorted((ROOT / d).rglob("*.py"))


def positional(fn: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> int:
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if in_class and names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


def wide_functions(source: str) -> list[str]:
    """Functions of `source` taking more than MAX_POSITIONAL positional parameters (self/cls not counted;
    pytest's test functions and fixtures, whose parameters pytest passes by name, are exempt)."""
    tree = ast.parse(source)
    out = []
    classes = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
        if node.name.startswith("test_") or fixture:
            continue
        if positional(node, id(node) in classes) > MAX_POSITIONAL:
            out.append(f"{node.name} (line {node.lineno})")
    return out


def test_no_function_takes_more_than_6_positional_parameters():
    wide = {str(p.relative_to(ROOT)): w for p in python_files() if (w := wide_functions(p.read_text()))}
    assert wide == {}


def test_the_positional_check_sees_methods_and_keyword_only_parameters():
    src = ("def f(a, b, c, d, e, f, g): pass\n"
           "def ok(a, b, c, d, e, f, *, g): pass\n"
           "class C:\n    def m(self, a, b, c, d, e, f): pass\n    def n(self, a, b, c, d, e, f, g): pass\n")
    assert wide_functions(src) == ["f (line 1)", "n (line 5)"]


def test_no_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in python_files()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_core_imports_without_pyspark_sklearn_or_pandas():
    # GPU scoring machines have no JVM, and need neither sklearn nor pandas to score: every core module imports
    code = ("import sys, pkgutil, importlib\n"
            "sys.modules['pyspark'] = sys.modules['sklearn'] = sys.modules['pandas'] = sys.modules['yaml'] = None\n"
            "import collm_udf.core as core\n"
            "mods = [m.name for m in pkgutil.iter_modules(core.__path__, 'collm_udf.core.')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "assert len(mods) >= 10, mods\n"
            "assert not any(m.startswith('pyspark') for m in sys.modules if sys.modules[m] is not None)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def named_paths(text: str) -> set[str]:
    """Project paths a text names: tokens under the project's top folders (collm_udf/..., jobs/..., ...), and the
    files the architecture map lists beside a folder (`  pipeline.py` under `collm_udf/spark/`)."""
    import re

    tops = "collm_udf|jobs|tests|benchmarks|conf|notebooks"
    found = {m.group(0).rstrip(".,:;)") for m in re.finditer(rf"\b(?:{tops})/[\w./<>*-]*", text)}
    return {p for p in found if "<" not in p and "*" not in p}


def test_every_path_the_readme_names_exists():
    import re

    text = (ROOT / "README.md").read_text()
    paths = named_paths(text)
    assert len(paths) > 15
    made = ("benchmarks/.work/",)  # written by the commands the README shows (git-ignored)
    missing = [p for p in paths if not p.startswith(made) and not list(ROOT.glob(p + "*"))]  # [-tag] suffixes
    assert sorted(missing) == []
    # the architecture map: each file listed under a folder of the tree exists in that folder
    block = text.split("## Architecture", 1)[1].split("```")[1]
    folder, listed = None, []
    for line in block.splitlines():
        head = re.split(r"\s{2,}", line.strip())[0] if line.strip() else ""
        if head.startswith("collm_udf/"):
            folder = ROOT / head.split(",")[0].strip()
            folder = folder if folder.is_dir() else folder.parent
            names = [n.strip() for n in head.split(",")]
        elif head:
            names = [n.strip() for n in head.split(",")]
        else:
            continue
        listed += [folder / n for n in names if n.endswith((".py", "/")) and not n.startswith("collm_udf/")]
    assert len(listed) > 15
    assert sorted(str(p.relative_to(ROOT)) for p in listed if not p.exists()) == []


@pytest.mark.parametrize("doc", ["benchmarks/README.md", "docs/scorer.md", "docs/operations.md",
                                 "docs/scheduling.md", "docs/training.md"])
def test_every_path_the_other_docs_name_exists(doc):
    """What moved out of the README still points at files that exist (results, modules, confs)."""
    text = (ROOT / doc).read_text()
    made = ("benchmarks/.work/",)
    missing = [p for p in named_paths(text) if not p.startswith(made) and not list(ROOT.glob(p + "*"))]
    results = {m for m in re.findall(r"\b([\w.-]+\.(?:json|md))\b", text) if "-" in m and m != "README.md"}
    # what a target writes that no run has committed yet: the GPU session's files, the full ml-latest-small replay
    pending = ("gpu-core-", "gpu-train-", "quality-ml-100k-full-", "ranking-ml-latest-small-validate.json")
    missing += [r for r in results if not (ROOT / "benchmarks" / "results" / r).exists() and not r.startswith(pending)]
    assert sorted(missing) == []


def test_the_readme_is_documentation_of_at_most_250_lines():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for section in ("## Two commands", "## Daily mode and benchmark mode", "## The table contract",
                    "## Your own tables", "## Running and scheduling", "## Architecture", "## Results"):
        assert section in text, section
    assert "benchmarks/README.md" in text
