"""Run the evaluations of the LLM outputs and compare eval runs.

    uv run python evals/run_evals.py --descriptions          # cached descriptions, no API call
    uv run python evals/run_evals.py --reranker --reranker-users 10   # saved reranker answers
    uv run python evals/run_evals.py --reranker --reranker-results results/llm_reranker_X.json
    uv run python evals/run_evals.py --descriptions --reranker        # both, one run file
    python evals/run_evals.py --compare                      # latest run vs the previous one
    python evals/run_evals.py --compare RUN_A RUN_B          # two named runs (id or path)
    uv run python evals/run_evals.py --compare results/A.json results/B.json   # two experiment
                                                 # runs (or @-2 @-1: rows of results/index.jsonl)
    python evals/run_evals.py --list                         # the runs on file

Each run writes one timestamped JSON, evals/results/run_<YYYYmmdd-HHMMSS>.json (git-ignored),
holding every part it ran (`descriptions`: evals/description_evals.py; `reranker`:
evals/reranker_evals.py), a snapshot of the study's headline metrics (`study`: R@10, R@20 and
NDCG@10 of every arm of the newest run of each experiment series <script>_<data>_<split> in
results/, with the 95% bootstrap interval of the first seed),
the prompt versions, the model and backend of the answers evaluated (and of the judge, when
--judge calls one), and the git commit (experiment.provenance()). A part whose input is missing
(no cached description, no answers file) is recorded as skipped, with the reason. The reranker
part evaluates the answers of one llm_reranker.py run, named by its results JSON
(--reranker-results; run_overnight.sh passes the one its llm_reranker step wrote, or 'none'),
else the newest llm_reranker run in --results-dir: a run without answers is n/a, never
another run's answers (evals/reranker_evals.py).

--compare prints each metric of two runs with its delta, and flags a regression when the later
value leaves the earlier run's 95% interval (metrics that carry one: the study snapshot);
metrics without an interval get no flag, and the study arms found in only one run are listed.
It needs only the standard library, so plain `python` works. Given two experiment results
files instead (or @N rows of results/index.jsonl), --compare pairs them over the users both
scored (runs.paired_run_gains: needs the project's environment): per arm in both, the gain in
recall@10 and ndcg@10 with a 95% bootstrap interval, and the arms added or removed. The
measures themselves live in the evals modules; this file only runs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python evals/run_evals.py` as well as `-m evals.run_evals`
    sys.path.insert(0, str(ROOT))

RUNS_DIR = ROOT / "evals" / "results"
RESULTS_DIR = ROOT / "results"
RUN_GLOB = "run_*.json"
STUDY_METRICS = ("recall@10", "recall@20", "ndcg@10")
DESCRIPTION_PROMPTS = ("item_description", "description_judge")
RERANKER_PROMPTS = ("reranker", "reranker_free", "rerank_pointwise")


class EvalError(Exception):
    """A bad option or missing run, reported as one line (exit 2)."""


# ---------------------------------------------------------------------------------------------
# the parts of a run


def descriptions_part(
    judge_n: int = 0, client=None, cache: str | None = None, progress: bool = True
) -> dict:
    """evals/description_evals.py over the cached descriptions (no API call unless judging)."""
    try:
        from evals import description_evals as D
    except ImportError as e:
        return {"skipped": f"not available yet: evals/description_evals.py ({e})"}
    rep = D.evaluate_descriptions(
        cache, judge_n, client, out=None, progress=progress, print_table=True
    )
    if not rep.get("models"):
        rep["skipped"] = "no cached item descriptions (run llm_item_enrichment.py with an LLM)"
    return rep


def reranker_part(
    users: int | None = None,
    answers: str | None = None,
    results: str | None = None,
    results_dir: Path = RESULTS_DIR,
) -> dict:
    """evals/reranker_evals.py over the answers of one llm_reranker.py run: the one whose
    results JSON is `results` ("none": no completed run to evaluate), else the newest
    llm_reranker run in `results_dir`; or the `answers` file named. A run without
    answers of its own is n/a, with the reason (never another run's answers)."""
    try:
        from evals import reranker_evals as R
    except ImportError as e:
        return {"skipped": f"not available yet: evals/reranker_evals.py ({e})"}
    if results == "none":
        return {
            "skipped": "n/a: no completed llm_reranker run to evaluate (--reranker-results "
            "none: its step failed, was interrupted or did not run)"
        }
    try:
        return R.run(
            answers, users=users, out=None, verbose=True, results=results, results_dir=results_dir
        )
    except R.NoAnswers as e:
        return {"skipped": "n/a: " + str(e).replace(str(ROOT) + "/", "")}
    except R.ChooseRun as e:
        raise EvalError(f"{e}: choose one with --reranker-results") from None


def _first(d: dict, *keys):
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        else:
            return None
    return d


def newest_per_series(results_dir: Path) -> list[tuple[str, Path]]:
    """(series, file) of the newest results JSON (by time written) of each series,
    <script>_<data>_<split> (runs.series_of: one file per run, the time and options hash
    in its name), sorted by series."""
    import runs

    newest = {}
    for path in sorted(Path(results_dir).glob("*.json"), key=lambda p: p.stat().st_mtime):
        newest[runs.series_of(path.name)] = path
    return sorted(newest.items())


def study_part(results_dir: Path = RESULTS_DIR) -> dict:
    """Headline metrics of the newest run of every experiment series (<script>_<data>_<split>
    .json: the same key from one eval run to the next): {series: {arm: {metric: {mean,
    ci95}}}}, read from the files (nothing recomputed), with the file and the data they were
    measured on (the keys by which experiment.pipeline_reference matches data) as one string."""
    import experiment

    out = {}
    for series, path in newest_per_series(results_dir):
        key = f"{series}.json"
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            out[key] = {"unreadable": str(e), "file": path.name}
            continue
        if not isinstance(d, dict) or not isinstance(d.get("metrics"), dict):
            continue
        arms = {}
        for arm, s in d["metrics"].items():
            ci = s.get("ci95_first_seed") or {}
            arms[arm] = {
                m: {"mean": _first(s, "all", m, "mean"), "ci95": ci.get(m)}
                for m in STUDY_METRICS
                if _first(s, "all", m, "mean") is not None
            }
        data = d.get("data") if isinstance(d.get("data"), dict) else {}
        out[key] = {
            "file": path.name,
            "data": " ".join(f"{k}={data.get(k)}" for k in experiment.SAME_DATA_KEYS),
            "verdict": d.get("verdict"),
            "commit": _first(d, "provenance", "git_commit"),
            "arms": arms,
        }
    return out


def run(args) -> Path:
    """Run the selected parts and write one timestamped run JSON; returns its path."""
    import experiment
    import llm
    from prompts import current_versions, versions_used

    client, judge = None, None
    if args.descriptions and args.judge:
        client, reason = llm.client_from_args(args)
        print(reason if client else f"LLM judge skipped: {reason}")
        judge = client.usage_report() if client else {"skipped": reason}
    parts, models = {}, {}
    try:
        if args.descriptions:
            print("== descriptions (evals/description_evals.py)")
            parts["descriptions"] = descriptions_part(
                args.judge, client, args.cache, not args.quiet
            )
            models["descriptions"] = sorted(
                {m["model"] for m in parts["descriptions"].get("models", [])}
            )
            if client is not None:
                judge = client.usage_report()
        if args.reranker:
            print("== reranker answers (evals/reranker_evals.py)")
            parts["reranker"] = reranker_part(
                args.reranker_users, args.answers, args.reranker_results, Path(args.results_dir)
            )
            models["reranker"] = parts["reranker"].get("models", [])
    finally:
        if client is not None:
            client.close()
    for name, part in parts.items():
        if "skipped" in part:
            print(f"{name}: skipped: {part['skipped']}")
    parts["study"] = study_part(Path(args.results_dir))
    used = [
        *(DESCRIPTION_PROMPTS if args.descriptions else ()),
        *(RERANKER_PROMPTS if args.reranker else ()),
    ]
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out_dir) / f"run_{run_id}.json"
    if out.exists():  # two runs in the same second
        run_id += f"-{time.time_ns() % 1000:03d}"
        out = out.with_name(f"run_{run_id}.json")
    backend = judge.get("backend") if judge and "backend" in judge else None
    model = judge.get("model") if judge and "model" in judge else None
    experiment.write_results(
        out,
        {
            "run_id": run_id,
            "parts": parts,
            "prompt_versions": versions_used(*used),
            "current_prompt_versions": current_versions(),
            "models_evaluated": models,
            "backend": backend or "none (no LLM call: evaluations of saved answers)",
            "model": model,
            "judge": judge,
            "options": {
                "descriptions": args.descriptions,
                "judge": args.judge,
                "reranker": args.reranker,
                "reranker_users": args.reranker_users,
                "answers": Path(args.answers).name if args.answers else None,
                "reranker_results": args.reranker_results and Path(args.reranker_results).name,
            },
        },
    )
    print(f"results: {_show(out)}")
    return out


# ---------------------------------------------------------------------------------------------
# comparing two runs (standard library only)


def _show(path) -> str:
    """A path relative to the repository when it is inside it (no machine paths in output)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def list_runs(runs_dir: Path = RUNS_DIR) -> list[Path]:
    """Run files, oldest first (the timestamp in the name sorts them)."""
    return sorted(Path(runs_dir).glob(RUN_GLOB))


def resolve_run(name: str, runs_dir: Path = RUNS_DIR) -> Path:
    """A run by path, file name or run id (20260101-120000)."""
    for cand in (
        Path(name),
        Path(runs_dir) / name,
        Path(runs_dir) / f"run_{name}.json",
        Path(runs_dir) / f"{name}.json",
    ):
        if cand.is_file():
            return cand
    raise EvalError(f"no eval run {name!r} (see --list)")


def flatten(tree, prefix: str = "") -> dict:
    """{path: (value, ci95 or None)} of every numeric leaf; a {mean, ci95} dict is one metric
    with its interval; lists of dicts with a 'model' key are keyed by model (and version)."""
    out = {}
    if isinstance(tree, dict):
        if (
            "mean" in tree
            and isinstance(tree.get("mean"), (int, float))
            and not isinstance(tree.get("mean"), bool)
        ):
            ci = tree.get("ci95")
            ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
            out[prefix] = (float(tree["mean"]), list(ci) if ok else None)
            return out
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            key = str(i)
            if isinstance(v, dict) and "model" in v:
                key = str(v["model"]) + (f"@{v['version']}" if "version" in v else "")
            out.update(flatten(v, f"{prefix}/{key}" if prefix else key))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix] = (float(tree), None)
    return out


def compare_runs(a: dict, b: dict) -> list[dict]:
    """One row per metric present in both runs: earlier, later, delta, earlier interval,
    regression (later value outside the earlier run's 95% interval; None without one, and
    None where the study file was measured on other data in the two runs: data_changed)."""
    fa, fb = flatten(a.get("parts", {})), flatten(b.get("parts", {}))
    sa, sb = (r.get("parts", {}).get("study", {}) for r in (a, b))
    moved = {f for f in set(sa) & set(sb) if sa[f].get("data") != sb[f].get("data")}
    rows = []
    for key in sorted(set(fa) & set(fb)):
        (va, ci), (vb, _) = fa[key], fb[key]
        parts = key.split("/")
        data_changed = parts[0] == "study" and len(parts) > 1 and parts[1] in moved
        left = None if ci is None or data_changed else not (ci[0] <= vb <= ci[1])
        rows.append(
            {
                "metric": key,
                "earlier": va,
                "later": vb,
                "delta": vb - va,
                "earlier_ci95": ci,
                "regression": left,
                "data_changed": data_changed,
            }
        )
    return rows


def format_compare(rows: list[dict], name_a: str, name_b: str, show_all: bool = False) -> str:
    changed = [r for r in rows if r["delta"] != 0 or r["regression"] or r["data_changed"]]
    flagged = [r for r in rows if r["regression"]]
    moved = [r for r in rows if r["data_changed"]]
    shown = rows if show_all else changed
    lines = [
        (
            f"compare {name_a} (earlier) -> {name_b} (later): {len(rows)} metrics in both, "
            f"{len(changed)} changed, {len(flagged)} left the earlier 95% interval"
            + (f", {len(moved)} measured on other data (not compared)" if moved else "")
        )
    ]
    if shown:
        w = max(len("metric"), *(len(r["metric"]) for r in shown))
        lines.append(
            f"{'metric':<{w}}  {'earlier':>9}  {'later':>9}  {'delta':>9}  "
            f"{'earlier 95% CI':>19}  flag"
        )
        for r in shown:
            ci = (
                "-"
                if r["earlier_ci95"] is None
                else f"[{r['earlier_ci95'][0]:.4f}, {r['earlier_ci95'][1]:.4f}]"
            )
            flag = (
                "DATA CHANGED"
                if r["data_changed"]
                else "REGRESSION?"
                if r["regression"]
                else "-"
                if r["regression"] is None
                else "ok"
            )
            lines.append(
                f"{r['metric']:<{w}}  {r['earlier']:>9.4f}  {r['later']:>9.4f}  "
                f"{r['delta']:>+9.4f}  {ci:>19}  {flag}"
            )
    lines.append(
        "(flag: REGRESSION? = the later value is outside the earlier run's 95% "
        "interval, in either direction; DATA CHANGED = the two runs' results file was "
        "measured on other data, so no flag; '-' = the metric has no interval)"
    )
    return "\n".join(lines)


def study_arms_changed(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """(added, removed): the study snapshot's arms (series/arm) and series found in only the
    later (added) or only the earlier (removed) of two eval runs."""
    sa, sb = (r.get("parts", {}).get("study", {}) or {} for r in (a, b))

    def arms(study: dict) -> set[str]:
        out = set()
        for series, part in study.items():
            names = (part.get("arms") or {}) if isinstance(part, dict) else {}
            out |= {f"{series}/{arm}" for arm in names} or {series}
        return out

    arms_a, arms_b = arms(sa), arms(sb)
    return sorted(arms_b - arms_a), sorted(arms_a - arms_b)


def compare(
    names: list[str],
    runs_dir: Path = RUNS_DIR,
    show_all: bool = False,
    results_dir: Path = RESULTS_DIR,
) -> list[dict] | dict:
    """Two eval runs (none named: the latest two), or two experiment results files (paths,
    names in `results_dir` or @N rows of its index: compare_results)."""
    if names and len(names) == 2 and all(is_results(n, results_dir) for n in names):
        return compare_results(names, results_dir)
    if names:
        if len(names) != 2:
            raise EvalError("--compare takes no run (latest vs previous) or exactly two runs")
        pa, pb = (resolve_run(n, runs_dir) for n in names)
    else:
        runs = list_runs(runs_dir)
        if len(runs) < 2:
            raise EvalError(
                f"--compare needs two eval runs in {_show(runs_dir)}, found "
                f"{len(runs)} (run --descriptions or --reranker first)"
            )
        pa, pb = runs[-2], runs[-1]
    try:
        a, b = (json.loads(p.read_text()) for p in (pa, pb))
    except json.JSONDecodeError as e:
        raise EvalError(f"unreadable run file: {e}") from None
    rows = compare_runs(a, b)
    print(format_compare(rows, pa.stem, pb.stem, show_all))
    added, removed = study_arms_changed(a, b)
    print(f"study arms added: {', '.join(added) or '-'}")
    print(f"study arms removed: {', '.join(removed) or '-'}")
    return rows


# ---------------------------------------------------------------------------------------------
# comparing two experiment runs: paired intervals over the users both scored (runs.py)


def is_results(name: str, results_dir: Path = RESULTS_DIR) -> bool:
    """Whether `name` names an experiment's results JSON (a path, a name in results_dir, an
    index row @N) rather than an eval run (standard library only: read, not imported)."""
    if name.startswith("@"):
        return True
    path = next((p for p in (Path(name), Path(results_dir) / name) if p.is_file()), None)
    try:
        d = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and isinstance(d.get("metrics"), dict) and "parts" not in d


def compare_results(names: list[str], results_dir: Path = RESULTS_DIR) -> dict:
    """Two experiment runs, earlier then later: the arms added and removed, and per arm in
    both the paired gain later - earlier of recall@10 and ndcg@10 with its 95% bootstrap
    interval over the users both runs scored (runs.paired_run_gains, from their saved
    per-user metrics). Printed; returns {"added", "removed", "gains", "notes", "files"}."""
    import runs

    paths = [runs.resolve_results(n, results_dir) for n in names]
    for n, p in zip(names, paths):
        if p is None:
            raise EvalError(f"no experiment results {n!r} (a results JSON, or @N of the index)")
    res = runs.paired_run_gains(*paths)
    res["files"] = [p.name for p in paths]
    print(format_results_compare(res))
    return res


def format_results_compare(res: dict) -> str:
    (a, b), gains = res["files"], res["gains"]
    lines = [
        (
            f"compare {a} (earlier) -> {b} (later): {len(gains)} arms in both, "
            f"{len(res['added'])} added, {len(res['removed'])} removed"
        ),
        f"arms added: {', '.join(res['added']) or '-'}",
        f"arms removed: {', '.join(res['removed']) or '-'}",
    ]
    if gains:
        w = max(len("arm"), *(len(arm) for arm in gains))
        lines.append("paired gain later - earlier (first seed; 95% bootstrap over the users both")
        lines.append("runs scored for the arm):")
        lines.append(f"{'arm':<{w}}  {'metric':<9}  {'gain [95% CI]':>25}  users")
        for arm, by_metric in gains.items():
            for m, g in by_metric.items():
                cell = "no per-user metrics" if g is None else _interval(g)
                n = "-" if g is None else g["n"]
                lines.append(f"{arm:<{w}}  {m:<9}  {cell:>25}  {n}")
    lines += [f"note: {n}" for n in res["notes"]]
    return "\n".join(lines)


def _interval(g: dict) -> str:
    if not g["n"]:
        return "no shared user"
    lo, hi = g["ci95"]
    return f"{g['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument(
        "--descriptions",
        action="store_true",
        help="quality of the cached LLM item descriptions (no API call)",
    )
    p.add_argument(
        "--judge",
        type=int,
        default=0,
        metavar="N",
        help="with --descriptions: ask the LLM judge about N descriptions per model "
        "(API or local model calls; needs --llm)",
    )
    p.add_argument("--cache", default=None, help="LLM cache file (default: the llm/ cache's)")
    p.add_argument(
        "--reranker",
        action="store_true",
        help="evaluate the saved answers of llm_reranker.py (no API call)",
    )
    p.add_argument(
        "--reranker-users",
        type=int,
        default=None,
        metavar="N",
        help="with --reranker: only the first N users of the answers file",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--reranker-results",
        default=None,
        metavar="JSON",
        help="with --reranker: the llm_reranker.py results JSON whose run's answers are "
        "evaluated ('none': no run to evaluate, n/a; default: the newest llm_reranker_*.json "
        "in --results-dir)",
    )
    which.add_argument(
        "--answers", default=None, help="with --reranker: an answers JSONL, evaluated as it is"
    )
    p.add_argument(
        "--compare",
        nargs="*",
        metavar="RUN",
        default=None,
        help="compare the latest eval run with the previous one, or two named runs; two "
        "experiment results files (paths, names in --results-dir, or @N rows of its "
        "index.jsonl, @-1 the newest): arms added / removed and paired intervals",
    )
    p.add_argument("--all", action="store_true", help="with --compare: show unchanged metrics too")
    p.add_argument("--list", action="store_true", help="list the eval runs on file")
    p.add_argument("--out-dir", default=str(RUNS_DIR), help="where run JSONs go and are read from")
    p.add_argument(
        "--results-dir",
        default=str(RESULTS_DIR),
        help="experiment results read for the study snapshot and by --compare",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--llm",
        choices=["auto", "claude", "local", "none"],
        default=None,
        help="backend of the --judge calls (default $LLM_BACKEND, else auto)",
    )
    p.add_argument(
        "--no-llm", dest="llm", action="store_const", const="none", help="same as --llm none"
    )
    p.add_argument("--llm-model", default=None, help="model of the --judge calls")
    import config

    config.add_log_level_arg(p)
    args = p.parse_args(argv)
    config.apply_log_level(args)
    return check_args(p, args)


def check_args(p: argparse.ArgumentParser, args):
    """The option checks argparse cannot do (p.error: one line, exit 2)."""
    if args.reranker_users is not None and args.reranker_users < 1:
        p.error("--reranker-users must be >= 1")
    if args.judge < 0:
        p.error("--judge must be >= 0")
    for opt in ("reranker_users", "reranker_results", "answers"):
        if getattr(args, opt) is not None and not args.reranker:
            p.error(f"--{opt.replace('_', '-')} goes with --reranker")
    if not (args.descriptions or args.reranker or args.compare is not None or args.list):
        p.error("choose --descriptions, --reranker, --compare or --list")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            runs = list_runs(Path(args.out_dir))
            print("\n".join(p.name for p in runs) if runs else "no eval runs yet")
        if args.descriptions or args.reranker:
            try:
                run(args)
            except Exception as e:  # common's one-line errors (bad data / option)
                if type(e).__name__ not in ("ConfigError", "DataError"):
                    raise
                raise EvalError(str(e)) from None
        if args.compare is not None:
            compare(args.compare, Path(args.out_dir), args.all, Path(args.results_dir))
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
