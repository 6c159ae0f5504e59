"""The one import rule (see the architecture notes): the library never pulls in the applications built on it.

``objsearch/`` is the core; ``indexer/``, ``training/`` and ``benchmarks/`` are applications on top of it.
The static checks parse every module's imports (``ast``, any scope, relative imports resolved), so a
lazy import inside a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

#: The benchmarks that train models; the only modules outside training/ and tests/ that import ``training``.
TRAINING_BENCHMARKS = ("training_runs.py", "multitask_ablation.py", "data_scaling.py", "train_step.py")
APPLICATIONS = ("indexer", "training", "benchmarks")
_NOT_SOURCE = {"runs", "demo", "build", "dist", "node_modules", "__pycache__"}


def test_library_does_not_import_indexer_or_training():
    code = (
        "import sys, objsearch, objsearch.search, objsearch.embedders.bundled, objsearch.cli, objsearch.render;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('indexer', 'training', 'benchmarks')];"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _python_files() -> list[Path]:
    """Every .py file of the repository: root scripts and every top-level folder but data, builds and dot-folders."""
    files = sorted(REPO.glob("*.py"))
    for top in sorted(REPO.iterdir()):
        if top.is_dir() and not top.name.startswith(".") and top.name not in _NOT_SOURCE and not top.name.endswith(".egg-info"):
            files += sorted(f for f in top.rglob("*.py") if not any(p.startswith(".") or p in _NOT_SOURCE for p in f.relative_to(REPO).parts))
    return files


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, inside a function body) for every import statement in ``path``.

    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule); relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, in_function))
            found.extend((f"{base}.{alias.name}", in_function) for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _where(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.fixture(scope="module")
def all_imports() -> dict[str, list[tuple[str, bool]]]:
    """repository-relative path -> its imports, for every Python file in the repository."""
    return {_where(path): imports(path) for path in _python_files()}


def test_the_scan_sees_the_whole_repository(all_imports):
    for expected in ("objsearch/cli.py", "objsearch/model/text.py", "objsearch/datasets/synthetic.py",
                     "indexer/pipeline.py", "training/train.py", "benchmarks/throughput.py", "tests/conftest.py"):
        assert expected in all_imports
    assert ("objsearch.model.config.ObjEmbedConfig", False) in all_imports["objsearch/model/text.py"]


def test_nothing_outside_tests_imports_tests(all_imports):
    bad = {path: sorted({m for m, _ in found if _is(m, "tests")}) for path, found in all_imports.items() if not path.startswith("tests/")}
    assert not {path: mods for path, mods in bad.items() if mods}, "only tests/ may import tests (shared data belongs in objsearch.datasets)"


def test_library_imports_applications_only_in_cli_command_bodies(all_imports):
    bad = {}
    for path, found in all_imports.items():
        if not path.startswith("objsearch/"):
            continue
        allowed_lazily = path == "objsearch/cli.py"
        wrong = sorted({m for m, lazy in found if any(_is(m, app) for app in APPLICATIONS) and not (allowed_lazily and lazy)})
        if wrong:
            bad[path] = wrong
    assert not bad, "objsearch/ never imports indexer/training/benchmarks (cli.py only inside command bodies)"


def test_only_tests_and_training_benchmarks_import_training(all_imports):
    allowed = {f"benchmarks/{name}" for name in TRAINING_BENCHMARKS}
    bad = {}
    for path, found in all_imports.items():
        if path.startswith(("training/", "tests/")) or path in allowed:
            continue
        wrong = sorted({m for m, _ in found if _is(m, "training")})
        if wrong:
            bad[path] = wrong
    assert not bad, f"only tests/ and the training benchmarks ({', '.join(TRAINING_BENCHMARKS)}) import training"


def test_model_does_not_import_embedders(all_imports):
    bad = {path: sorted({m for m, _ in found if _is(m, "objsearch.embedders")})
           for path, found in all_imports.items() if path.startswith("objsearch/model/")}
    assert not {path: mods for path, mods in bad.items() if mods}, "objsearch/model must not import objsearch/embedders (embedders import model)"
