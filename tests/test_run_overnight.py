"""run_overnight.sh: order, statuses, resumability. The real script runs in a temporary copy
of the repository layout whose steps are tiny fake scripts (OVERNIGHT_PYTHON = this Python),
so each test takes about a second and needs neither data nor models."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = [
    "two_tower",
    "llm_item_enrichment",
    "llm_user_narration",
    "llm_reranker",
    "synthetic_context",
    "exp5_dual_head",
]
LLM_STEPS = {"llm_item_enrichment", "llm_user_narration", "llm_reranker", "synthetic_context"}

FAKE = r"""
import json, os, signal, sys, time
from pathlib import Path
sys.path.insert(0, os.getcwd())
import common  # noqa: F401,E402 (a repository module: its edits must rerun the step)
name = Path(sys.argv[0]).stem
with open("calls.log", "a") as f:
    f.write(" ".join([name, *sys.argv[1:]]) + "\n")
if os.environ.get("FAKE_KILL") == name:          # the orchestrator dies mid-step (kill -9)
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(137)
if os.environ.get("FAKE_SLEEP") == name:         # a long step, for a signal to stop
    time.sleep(60)
if os.environ.get("FAKE_FAIL") == name:
    print("error: fake failure of " + name)
    sys.exit(3)
if name == "run_evals":
    out = Path("evals/results") / f"run_{time.time_ns()}.json"
elif name == "report":
    out = Path("results/REPORT.md")
else:
    out = Path("results") / f"{name}_generated_interaction.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"experiment": name, "argv": sys.argv[1:], "t": time.time_ns()}))
"""


# an llm/ package stand-in, wired like the real one: __init__ re-exports with a relative
# import, a module imports a sibling absolutely (llm.cache) and relatively (from . import)
LLM_PACKAGE = {
    "__init__.py": "from .selection import resolve_backend  # noqa: F401\n",
    "selection.py": (
        "import os\n"
        "from llm.cache import CACHE_VERSION  # noqa: F401\n"
        "from . import request  # noqa: F401\n"
        "def resolve_backend(choice):\n"
        "    if choice == 'none':\n        return None, 'LLM arms disabled (--llm none)'\n"
        "    if choice in ('auto', 'local') and os.environ.get('FAKE_LOCAL'):\n"
        "        return 'local', ''\n"
        "    return None, 'local model not installed'\n"
    ),
    "cache.py": "CACHE_VERSION = 1\n",
    "request.py": "# requests\n",
}


@pytest.fixture
def repo(tmp_path):
    """A temporary repository: run_overnight.sh and its helper overnight.py (with config.py),
    fake steps (the LLM ones import llm), common.py and llm/ package stand-ins."""
    for name in ("run_overnight.sh", "overnight.py", "config.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "evals").mkdir()
    for name in EXPERIMENTS:
        uses_llm = "import llm  # noqa: F401,E402\n" if name in LLM_STEPS else ""
        (tmp_path / f"{name}.py").write_text(FAKE + uses_llm)
    for name in ("run_evals", "report"):
        (tmp_path / "evals" / f"{name}.py").write_text(FAKE)
    (tmp_path / "common.py").write_text("# shared code\n")
    # run_overnight.sh asks llm.resolve_backend (through overnight.py) what --llm means
    (tmp_path / "llm").mkdir()
    for name, text in LLM_PACKAGE.items():
        (tmp_path / "llm" / name).write_text(text)
    return tmp_path


def run(repo, *args, env=None, check=True):
    e = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FAKE_", "LLM_BACKEND", "ANTHROPIC_API_KEY"))
    }
    e.update({"OVERNIGHT_PYTHON": sys.executable, **(env or {})})
    p = subprocess.run(
        ["bash", str(repo / "run_overnight.sh"), *args],
        cwd=repo,
        env=e,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def calls(repo) -> list[str]:
    """Step names run so far (fake scripts log themselves), then clear the log."""
    log = repo / "calls.log"
    out = [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return out


def status_lines(out: str) -> dict:
    """{step: status line} from the orchestrator's stdout ('[i/n] step: status')."""
    res = {}
    for line in out.splitlines():
        if line.startswith("[") and "]: " not in line and ": " in line:
            head, _, rest = line.partition(": ")
            step = head.split("] ")[-1]
            if not rest.startswith("running"):
                res[step] = rest
    return res


ALL = [*EXPERIMENTS, "run_evals", "report"]


def test_runs_every_step_in_order_and_a_failure_does_not_stop_the_others(repo):
    p = run(repo, "--llm", "none", env={"FAKE_FAIL": "llm_reranker"}, check=False)
    assert calls(repo) == ALL
    st = status_lines(p.stdout)
    assert st["llm_reranker"].startswith("failed: exit 3: error: fake failure of llm_reranker")
    assert all(st[s].startswith("ok") for s in EXPERIMENTS if s != "llm_reranker")
    summary = (repo / "logs/overnight_summary.txt").read_text()
    assert "llm_reranker: failed" in summary and "exp5_dual_head: ok" in summary
    assert "error: fake failure" in (repo / "logs/llm_reranker.log").read_text()


def test_a_failed_step_makes_the_run_exit_1_and_its_last_line_says_so(repo):
    p = run(repo, "--llm", "none", env={"FAKE_FAIL": "llm_reranker"}, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED: 1 of 8 steps failed (llm_reranker)"), last
    assert (repo / "logs/overnight_summary.txt").read_text().strip().splitlines()[-1] == last
    marker = (repo / "results/.overnight/run.marker").read_text()
    assert "status=failed" in marker and "failed=llm_reranker" in marker
    # the rerun redoes the failed step and ends well: up-to-date skips and "LLM arms skipped"
    # are no failure
    p = run(repo, "--llm", "none")
    assert p.stdout.strip().splitlines()[-1].startswith("done: 8 steps ok or up to date")
    assert "status=done" in (repo / "results/.overnight/run.marker").read_text()
    # a failing report step counts too
    p = run(repo, "--llm", "none", env={"FAKE_FAIL": "report"}, check=False)
    assert p.returncode == 1 and "FAILED: 1 of 8 steps failed (report)" in p.stdout


def test_rerun_skips_finished_steps_and_redoes_the_failed_one(repo):
    run(repo, "--llm", "none", env={"FAKE_FAIL": "llm_reranker"}, check=False)
    calls(repo)
    p = run(repo, "--llm", "none")
    # the failed step runs again; the evals follow because their inputs changed; the report
    # is always rebuilt; every finished experiment is skipped
    assert calls(repo) == ["llm_reranker", "run_evals", "report"]
    st = status_lines(p.stdout)
    assert st["two_tower"].startswith("skipped: up to date")
    p = run(repo, "--llm", "none")
    assert calls(repo) == ["report"]


def test_killed_run_resumes_where_it_stopped(repo):
    run(repo, "--llm", "none")  # results of other settings are already there
    calls(repo)
    p = run(repo, "--quick", "--llm", "none", env={"FAKE_KILL": "llm_user_narration"}, check=False)
    assert p.returncode == -signal.SIGKILL
    assert calls(repo) == ["two_tower", "llm_item_enrichment", "llm_user_narration"]
    # the report of the earlier run is still there, and says that a newer run started after it
    report = (repo / "results/REPORT.md").read_text()
    assert report.startswith("> **Stale report.** run_overnight.sh started a run at ")
    assert "status=running" in (repo / "results/.overnight/run.marker").read_text()
    wait_until_unlocked(repo)
    run(repo, "--quick", "--llm", "none")
    assert calls(repo) == ALL[2:]  # the killed step is not taken as done


def test_an_interrupted_run_says_so_and_rebuilds_the_report(repo):
    """SIGTERM in the middle of a step: the step keeps no ok marker, the run marker says
    interrupted, the report is rebuilt (report.py names the stale steps) and the exit is 130."""
    run(repo, "--llm", "none")
    calls(repo)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "LLM_BACKEND"))}
    e.update({"OVERNIGHT_PYTHON": sys.executable, "FAKE_SLEEP": "exp5_dual_head"})
    proc = subprocess.Popen(
        ["bash", str(repo / "run_overnight.sh"), "--llm", "none", "--force"],
        cwd=repo,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log, deadline = repo / "calls.log", time.monotonic() + 30
    while not (log.exists() and "exp5_dual_head" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert calls(repo)[-2:] == ["exp5_dual_head", "report"]  # the report, rebuilt
    marker = (repo / "results/.overnight/run.marker").read_text()
    assert "status=interrupted" in marker
    assert "status=running" in (repo / "results/.overnight/exp5_dual_head.marker").read_text()
    assert out.strip().splitlines()[-1].startswith("interrupted")


def wait_until_unlocked(repo, timeout: float = 10.0) -> None:
    """Until no process holds the orchestrator's lock: the killed run's step inherited it and
    exits only just after its parent (on a loaded machine, after the next run would start)."""
    deadline = time.monotonic() + timeout
    with open(repo / "results/.overnight/lock", "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the killed run's lock was never released"
                time.sleep(0.05)


def test_changed_options_rerun(repo):
    run(repo, "--quick", "--llm", "none")
    calls(repo)
    run(repo, "--llm", "none")  # full settings after quick: a new configuration
    assert calls(repo) == ALL
    p = run(repo, "--llm", "local", "--dry-run")
    assert "two_tower: skipped: up to date" in p.stdout
    assert "llm_reranker: would run (other options)" in p.stdout


def test_llm_backend_that_auto_resolves_to_reruns_only_the_llm_steps(repo):
    run(repo, "--llm", "auto")  # no key, no local model: LLM arms skipped
    calls(repo)
    p = run(repo, "--llm", "auto", env={"FAKE_LOCAL": "1"})  # same options, now local
    assert "LLM: local" in p.stdout
    assert "llm_reranker: running" in p.stdout
    # the backend --llm auto resolves to reaches only the LLM steps
    assert calls(repo) == [*[s for s in EXPERIMENTS if s in LLM_STEPS], "run_evals", "report"]


def test_edited_code_reruns_the_steps_that_run_it(repo):
    run(repo, "--llm", "none")
    calls(repo)
    with open(repo / "exp5_dual_head.py", "a") as f:
        f.write("# edited\n")  # an uncommitted edit of one script
    p = run(repo, "--llm", "none")
    assert "exp5_dual_head: running" in p.stdout and "two_tower: skipped: up to date" in p.stdout
    assert calls(repo) == ["exp5_dual_head", "run_evals", "report"]
    (repo / "common.py").write_text("# shared code, edited\n")  # shared code: every step
    run(repo, "--llm", "none")
    assert calls(repo) == ALL
    # a module inside the llm package, reached through `import llm` and the package's own
    # imports: the LLM steps rerun, the others do not
    llm_steps = [s for s in EXPERIMENTS if s in LLM_STEPS]
    for module in ("cache.py", "request.py"):  # `from llm.cache import`, `from . import`
        with open(repo / "llm" / module, "a") as f:
            f.write("# edited\n")
        p = run(repo, "--llm", "none")
        assert calls(repo) == [*llm_steps, "run_evals", "report"], module
        assert "two_tower: skipped: up to date" in p.stdout


def test_missing_or_overwritten_results_rerun(repo):
    run(repo, "--llm", "none")
    calls(repo)
    (repo / "results/two_tower_generated_interaction.json").unlink()
    run(repo, "--llm", "none")
    assert calls(repo) == ["two_tower", "run_evals", "report"]
    # overwritten by another run of the script (other options): no longer this step's results
    (repo / "results/exp5_dual_head_generated_interaction.json").write_text("{}")
    run(repo, "--llm", "none")
    assert calls(repo) == ["exp5_dual_head", "run_evals", "report"]


def test_a_commit_without_code_changes_reruns_nothing(repo):
    """Resume is keyed on the code and options, not on the commit: an empty commit keeps
    every step up to date; an edit of a script reruns that step (and the evals)."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "a"], cwd=repo, check=True)
    run(repo, "--llm", "none")
    calls(repo)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "b"], cwd=repo, check=True)
    run(repo, "--llm", "none")
    assert calls(repo) == ["report"]
    with open(repo / "exp5_dual_head.py", "a") as f:
        f.write("# edited\n")
    run(repo, "--llm", "none")
    assert calls(repo) == ["exp5_dual_head", "run_evals", "report"]


def test_options_reach_the_steps(repo, tmp_path):
    data = tmp_path / "csvs"
    data.mkdir()
    run(repo, "--quick", "--llm", "none", "--data-dir", str(data), "--threads", "1")
    lines = {ln.split()[0]: ln.split()[1:] for ln in (repo / "calls.log").read_text().splitlines()}
    for s in EXPERIMENTS:
        args = lines[s]
        assert args[args.index("--data-dir") + 1] == str(data)
        assert args[args.index("--threads") + 1] == "1"
        assert ("--llm" in args) == (s in LLM_STEPS)
        assert "--quick" in args
    assert "--reranker-users" in lines["run_evals"]


def test_missing_script_is_skipped_with_reason_and_steps_selection(repo):
    (repo / "synthetic_context.py").unlink()
    p = run(repo, "--llm", "none")
    assert "synthetic_context: skipped: synthetic_context.py not found" in p.stdout
    assert "synthetic_context" not in calls(repo)
    run(repo, "--llm", "none", "--steps", "exp5_dual_head,two_tower", "--force")
    assert calls(repo) == ["two_tower", "exp5_dual_head"]


def test_dry_run_runs_nothing_and_bad_options_fail_in_one_line(repo):
    p = run(repo, "--dry-run", "--llm", "none")
    assert calls(repo) == [] and "would run" in p.stdout
    for bad in (["--llm", "gpt"], ["--steps", "nope"], ["--what"], ["--threads", "x"]):
        p = run(repo, *bad, check=False)
        assert p.returncode == 2 and p.stderr.startswith("error: ")
        assert len(p.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# overnight.py, the helper, on its own


def helper(repo, *args, env=None) -> list[str]:
    """The lines overnight.py prints for one command, run as run_overnight.sh runs it."""
    e = {k: v for k, v in os.environ.items() if k != "INSTACART_DATA_DIR"}
    p = subprocess.run(
        [sys.executable, "overnight.py", *args],
        cwd=repo,
        env={**e, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return p.stdout.strip().splitlines()


def test_deps_follow_the_llm_package_and_import_nothing(repo):
    files = helper(repo, "deps", "llm_reranker.py")
    assert files == sorted(files)
    assert {"llm_reranker.py", "common.py", "llm/__init__.py", "llm/selection.py"} <= set(files)
    assert {"llm/cache.py", "llm/request.py"} <= set(files)  # absolute and relative imports
    assert not any(f.startswith("llm/") for f in helper(repo, "deps", "two_tower.py"))
    # a step's deps stay cheap: the walk reads files, it imports neither torch nor llm
    probe = (
        "import sys, overnight; overnight.deps('llm_reranker.py'); "
        "print(sorted({'torch', 'llm', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_data_dir_order_option_then_environment_then_kaggle_folder(repo, tmp_path):
    assert helper(repo, "data-dir", "") == []  # nothing: the generated sample
    (repo / "data" / "instacart").mkdir(parents=True)  # config.KAGGLE_DIR of this copy
    assert helper(repo, "data-dir", "") == ["data/instacart"]
    env = {"INSTACART_DATA_DIR": str(tmp_path / "env")}
    assert helper(repo, "data-dir", "", env=env) == [str(tmp_path / "env")]
    assert helper(repo, "data-dir", "/opt/csvs", env=env) == ["/opt/csvs"]
    assert helper(repo, "backend", "none") == ["none (--llm none): LLM arms skipped"]
    assert helper(repo, "backend", "auto") == ["none (local model not installed): LLM arms skipped"]


def test_every_step_a_run_ran_or_found_up_to_date_carries_its_run_id(repo):
    """The report tells current results from stale ones by the run id in each marker: a step
    skipped as up to date gets the new run's id too; a step outside --steps keeps its own."""
    marker = lambda name: dict(
        line.split("=", 1)
        for line in (repo / f"results/.overnight/{name}.marker").read_text().splitlines()
    )
    run(repo, "--llm", "none")
    first = marker("run")["run"]
    assert {marker(s)["run"] for s in [*EXPERIMENTS, "evals", "report"]} == {first}
    run(repo, "--llm", "none", "--steps", "two_tower,exp5_dual_head,report")
    second = marker("run")["run"]
    assert second != first and marker("run")["status"] == "done"
    assert marker("two_tower")["run"] == marker("exp5_dual_head")["run"] == second
    assert marker("two_tower")["status"] == "0"  # skipped as up to date: still ok
    assert marker("llm_reranker")["run"] == first


def test_the_evals_read_the_answers_of_this_studys_reranker_run(repo):
    """The evals step is told which llm_reranker results to read: the file its step wrote,
    or 'none' when that step did not succeed (n/a, never an older run's answers)."""

    def evals_args() -> list[str]:
        lines = (repo / "calls.log").read_text().splitlines()
        calls(repo)
        args = next(ln.split()[1:] for ln in lines if ln.startswith("run_evals"))
        return args[args.index("--reranker-results") + 1 :][:1]

    run(repo, "--llm", "none", env={"FAKE_FAIL": "llm_reranker"}, check=False)
    assert evals_args() == ["none"]
    run(repo, "--llm", "none")
    assert evals_args() == ["results/llm_reranker_generated_interaction.json"]


def test_stale_report_marks_the_report_once(repo):
    (repo / "REPORT.md").write_text("# Study report\n\nbody\n")
    helper(repo, "stale-report", "REPORT.md", "2026-01-01T00:00:00Z")
    helper(repo, "stale-report", "REPORT.md", "2026-01-02T00:00:00Z")
    text = (repo / "REPORT.md").read_text()
    assert text.count("Stale report") == 1 and "2026-01-02T00:00:00Z" in text
    assert text.endswith("\n\n# Study report\n\nbody\n")
