"""run_overnight.sh's helper: the answers the orchestrator needs from Python, one command each.

    python overnight.py backend CHOICE      # what `--llm CHOICE` resolves to, one line
    python overnight.py deps SCRIPT         # the repository files SCRIPT runs, one a line
    python overnight.py data-dir [DIR]      # the data folder the steps read ('' = the sample)
    python overnight.py stale-report PATH WHEN   # mark the report in place as older than a run

Run from the repository root (run_overnight.sh cds there). `deps`, `data-dir` and
`stale-report` import nothing outside the standard library (config.py is stdlib-only), so
run_overnight.sh runs them with a bare python3; `backend` imports llm, lazily, and needs the
project's environment.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path


def backend_line(choice: str) -> str:
    """The LLM backend `--llm CHOICE` resolves to (llm.resolve_backend: the one rule), or
    'none (why): LLM arms skipped'. This line is the LLM part of an LLM step's marker."""
    if choice == "none":
        return "none (--llm none): LLM arms skipped"
    import llm  # lazy: the other commands must not pay for it (nor need its packages)

    backend, why = llm.resolve_backend(choice)
    return backend or f"none ({why}): LLM arms skipped"


# ---------------------------------------------------------------------------------------------
# deps: what a step's results depend on in the repository, read with ast (nothing imported)


def module_files(base: Path, parts: list[str]) -> list[Path]:
    """The files that `import a.b.c` (parts, under folder `base`) may run: each enclosing
    package's __init__.py, then the module itself (a.b.c.py, or a package's __init__.py)."""
    packages = [base.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    *folders, last = parts
    return [*packages, base.joinpath(*folders, last + ".py"), base.joinpath(*parts, "__init__.py")]


def imported_files(node: ast.AST, source: Path, roots: list[Path]) -> list[Path]:
    """The candidate files of one import statement in file `source`. Absolute imports are
    looked up under each of `roots` (sys.path's repository entries); relative ones
    (`from .cache import X`, `from . import cache`) under source's own package. In
    `from M import name`, name may be a submodule, so M/name.py is a candidate too."""
    if isinstance(node, ast.Import):
        return [f for a in node.names for r in roots for f in module_files(r, a.name.split("."))]
    if not isinstance(node, ast.ImportFrom):
        return []
    bases = roots
    if node.level:  # relative: the package of `source`, then up one folder per extra dot
        base = source.parent
        for _ in range(node.level - 1):
            base = base.parent
        bases = [base]
    parts = node.module.split(".") if node.module else []
    out = []
    for base in bases:
        out += module_files(base, parts) if parts else [base / "__init__.py"]
        out += [f for a in node.names for f in module_files(base, [*parts, a.name])]
    return out


def deps(script: str | Path) -> list[str]:
    """The script and every repository module it imports, directly or not (paths relative to
    the current folder, sorted). Imports inside functions count (a lazy import still runs);
    an `import llm` reaches llm.py or the llm/ package, and the walk follows the package's own
    absolute and relative imports. Imports built at run time (importlib) are not seen."""
    script = Path(script)
    roots = list(dict.fromkeys([script.parent, Path(".")]))  # sys.path[0], the repository
    todo, seen = [script], set()
    while todo:
        f = todo.pop()
        if f in seen or not f.is_file():
            continue
        seen.add(f)
        try:
            tree = ast.parse(f.read_text())
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            todo += imported_files(node, f, roots)
    return sorted(map(str, seen))


# ---------------------------------------------------------------------------------------------
# data-dir: the folder whose CSVs the steps read


def data_dir(option: str = "") -> str:
    """The data folder the experiments read, in instacart.resolve_data_dir's order: the
    --data-dir option, then $INSTACART_DATA_DIR (config.DATA_ENV), then data/instacart/
    (config.KAGGLE_DIR) when it is a folder; '' when they use the generated sample."""
    import config  # stdlib-only: the names of the variable and of the folder live there

    if option:
        return option
    if os.environ.get(config.DATA_ENV):
        return os.environ[config.DATA_ENV]
    if config.KAGGLE_DIR.is_dir():
        try:
            return str(config.KAGGLE_DIR.relative_to(Path.cwd()))
        except ValueError:
            return str(config.KAGGLE_DIR)
    return ""


# ---------------------------------------------------------------------------------------------
# stale-report: the report in place predates the run that just started

STALE_BANNER = "> **Stale report.**"


def stale_report(path: str, when: str) -> str:
    """Put a first line in the report at `path` saying that a run started at `when`, after
    it was built (a previous such line is replaced): an interrupted or killed run leaves no
    report that passes for its own. The run's report step rebuilds the file without it."""
    import config

    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and lines[0].startswith(STALE_BANNER):  # the banner and its blank line
        lines = lines[2:] if len(lines) > 1 and not lines[1].strip() else lines[1:]
    banner = (
        f"{STALE_BANNER} run_overnight.sh started a run at {when}, after this report was "
        "built: the report below is from an earlier run until that run's report step "
        "rebuilds it. If that run was stopped, `uv run python evals/report.py` rebuilds it "
        "and names the stale steps.\n\n"
    )
    config.write_atomic(p, banner + "".join(lines))
    return f"{path}: marked stale"


COMMANDS = {
    "backend": (backend_line, "CHOICE"),
    "deps": (lambda script: "\n".join(deps(script)), "SCRIPT"),
    "data-dir": (data_dir, "[DIR]"),
    "stale-report": (stale_report, "PATH WHEN"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        usage = " | ".join(f"{c} {a}" for c, (_, a) in COMMANDS.items())
        print(f"usage: python overnight.py {usage}", file=sys.stderr)
        return 2
    fn, arg = COMMANDS[argv[0]]
    needed = [a for a in arg.split() if not a.startswith("[")]
    if not len(needed) <= len(argv) - 1 <= len(arg.split()):
        print(f"usage: python overnight.py {argv[0]} {arg}", file=sys.stderr)
        return 2
    print(fn(*argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
