"""The import floors of the project, read from the source with ast (nothing is imported).

Bottom to top: shared modules in SHARED_FLOORS order (each imports only modules on a lower
floor), then the scripts (they import shared modules, never each other), then evals/ on top.
An import inside a function counts like one at the top of the file: a lazy import is still
an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# shared modules, bottom floor first; a module may import only those listed before it
SHARED_FLOORS = [
    "config",
    "sample_generator",
    "llm",
    "prompts",
    "instacart",
    "options",
    "text",
    "splits",
    "features",
    "metrics",
    "runs",
    "baselines",
    "towers",
    "common",
    "reranking",
    "experiment",
    "descriptions",
    "llm_ranking",
]
SCRIPTS = [
    "two_tower",
    "llm_item_enrichment",
    "llm_user_narration",
    "llm_reranker",
    "synthetic_context",
    "exp5_dual_head",
    "calibration",
    "benchmark",
    "overnight",
]


def project_modules() -> set[str]:
    """Top-level names that are this project's modules (files and packages at the root)."""
    names = {p.stem for p in ROOT.glob("*.py")}
    names |= {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}
    return names


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Project module names `path` imports anywhere in its body (first dotted part; a
    relative import inside a package names that package's own submodule as pkg.sub)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level and package:
                base = package + (f".{node.module}" if node.module else "")
                found |= {base} if node.module else {f"{package}.{a.name}" for a in node.names}
            elif node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def file_of(module: str) -> Path:
    return ROOT / f"{module}.py" if (ROOT / f"{module}.py").is_file() else ROOT / module


def project_imports(module: str) -> set[str]:
    """Project modules (top-level names) imported by a module or by any file of a package."""
    path = file_of(module)
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    mods = project_modules()
    out = set()
    for f in files:
        out |= {top(n) for n in imports_of(f, module if path.is_dir() else None)}
    return {n for n in out if n in mods and n != module}


def test_every_module_has_a_floor():
    """A new module at the root must be placed: shared (which floor) or script."""
    unplaced = project_modules() - set(SHARED_FLOORS) - set(SCRIPTS) - {"evals"}
    assert not unplaced, f"place these in SHARED_FLOORS or SCRIPTS: {sorted(unplaced)}"


@pytest.mark.parametrize("module", SHARED_FLOORS)
def test_shared_modules_import_only_lower_floors(module):
    """No arrow back up, so no circle: a shared module imports no script, nothing in evals/,
    and only shared modules on a lower floor."""
    below = set(SHARED_FLOORS[: SHARED_FLOORS.index(module)])
    bad = project_imports(module) - below
    assert not bad, f"{module} imports {sorted(bad)} (allowed: lower floors {sorted(below)})"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if file_of(s).exists()])
def test_scripts_import_shared_modules_only(script):
    bad = project_imports(script) - set(SHARED_FLOORS)
    assert not bad, f"{script} imports {sorted(bad)}: scripts import shared modules only"


def test_llm_package_has_no_circle():
    """Inside llm/, each submodule imports only submodules that do not import it back."""
    pkg = ROOT / "llm"
    graph = {}
    for f in pkg.glob("*.py"):
        names = imports_of(f, "llm")
        graph[f.stem] = {
            n.split(".")[1] for n in names if n.startswith("llm.") and n.count(".") == 1
        } & {p.stem for p in pkg.glob("*.py")} - {f.stem}
    # every submodule's imports, followed transitively, never lead back to it
    for start, direct in graph.items():
        seen, todo = set(), list(direct)
        while todo:
            m = todo.pop()
            assert m != start or start == "__init__", f"llm/{start}.py is on an import circle"
            if m not in seen:
                seen.add(m)
                todo += [x for x in graph.get(m, ()) if x != "__init__"]


def test_evals_sit_on_top():
    """evals/ may import anything but a script; nothing outside evals/ imports evals/."""
    for f in (ROOT / "evals").glob("*.py"):
        bad = {top(n) for n in imports_of(f)} & set(SCRIPTS)
        assert not bad, f"evals/{f.name} imports scripts {sorted(bad)}"
    for module in [*SHARED_FLOORS, *SCRIPTS]:
        if file_of(module).exists():
            assert "evals" not in project_imports(module), f"{module} imports evals/"


def test_the_checker_sees_an_arrow_back_up(tmp_path):
    """The parser itself: a lazy import inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    import experiment\n    from towers import retrieve\n")
    assert {"experiment", "towers"} <= {top(n) for n in imports_of(f)}


def test_two_tower_starts_without_the_anthropic_sdk():
    """The main job imports no LLM client: experiment.py imports llm only when an experiment
    asks for one (start_llm)."""
    import subprocess
    import sys

    code = "import sys, two_tower; print('anthropic' in sys.modules, 'llm' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"], out.stdout


# every command-line program (overnight.py is run_overnight.sh's helper: no options)
CLIS = [*(s for s in SCRIPTS if s != "overnight"), "sample_generator"]


@pytest.mark.parametrize("script", CLIS)
def test_help_answers_before_torch_is_imported(script):
    """`--help` prints the options without importing torch or the anthropic SDK (seconds
    each): each experiment script builds its parser from options.py and calls
    options.help_before_imports before its heavy imports; the others import them lazily."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        f"sys.argv = [{script + '.py'!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({script + '.py'!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('loaded:', sorted({'torch', 'anthropic', 'faiss'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout, out.stdout[-500:]
    assert out.stdout.rstrip().endswith("loaded: []"), out.stdout[-300:]
