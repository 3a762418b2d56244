"""Build results/REPORT.md and its PNG plots from the results JSONs of the study.

    uv run python evals/report.py                      # results/ -> results/REPORT.md + PNGs
    uv run python evals/report.py --results DIR --out DIR/REPORT.md

The header says which LLM backend and model each step used (from its results JSON's usage
reports, not the run's --llm flag), then the steps and the verdicts at a glance: one row per
verdict line, with its status word (a smoke run, --quick, says so; a word the script held back
says what it would read and why), the line's headline in at most glance.SENTENCE_CHARS characters,
the users, items and seeds it rests on, and the LLM the step used (both from
evals/glance.py; numbers and markdown tables from evals/tables.py).

One section per experiment (two_tower.py and the five experiments, in the order of
run_overnight.sh): its question and the original study's finding (the JSON's "question" and
"original_finding", which experiment.Experiment writes), our table (from the JSON: mean +- std
over seeds, the first seed's 95% bootstrap interval over users, so labelled), the full
verdict line, its plot (evals/plots.py: what the verdict decides) and the experiment's own
tables (description statistics, category precision, reranker controls, validation loss). Then
the evaluations (latest eval run of evals/run_evals.py and its comparison with the previous
one) and a cost table: wall time per step, LLM backend and model, calls, tokens and dollars,
read from the JSONs' LLM usage and timings. Nothing is recomputed: everything comes from the
files.

It degrades gracefully: a missing results file, a failed or interrupted step (read from the
step markers run_overnight.sh keeps in results/.overnight/), an unreadable JSON or a missing
key gives a section that says so, never a crash. It names the stale steps, whose results are
not from the last run_overnight.sh run (results/.overnight/run.marker): failed, interrupted,
not reached or not checked by that run (their marker carries an older run id), or, without
a marker, results older than the run's start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evals import draw, plots
from evals.draw import get  # one nested-dict reader for the report and its plots
from evals.glance import llm_header, llm_skipped, usage_dicts, verdict_table
from evals.tables import md_table, num

# (results name = script stem = step of run_overnight.sh, section title)
EXPERIMENTS = [
    ("two_tower", "Reference pipeline: two-tower retrieval + GBDT re-ranking"),
    ("llm_item_enrichment", "Experiment 1: LLM item descriptions"),
    ("llm_user_narration", "Experiment 2: LLM user narration"),
    ("llm_reranker", "Experiment 3: LLM re-ranker and context"),
    ("synthetic_context", "Experiment 4: synthetic occasion context"),
    ("exp5_dual_head", "Experiment 5: dual-head item tower"),
]
STEPS = [name for name, _ in EXPERIMENTS] + ["evals", "report"]
MARKER_DIR = ".overnight"
RUN_MARKER = "run.marker"  # the last run of run_overnight.sh: run id, start, steps, status
MAX_ARMS = 24  # rows of one metrics table (the plots draw every arm)
METRICS_HEADER = "arm|R@10|R@10 95% CI|R@20|NDCG@10|R@20 repeat|R@20 explore|cand. recall|users"
METRICS_HEADER = METRICS_HEADER.split("|")
METRICS_COLUMNS = [("all", "recall@20"), ("all", "ndcg@10")]
METRICS_COLUMNS += [("repeat", "recall@20"), ("explore", "recall@20")]


# ---------------------------------------------------------------------------------------------
# reading


def read_marker(path: Path) -> dict:
    """A step marker of run_overnight.sh: key=value lines (command, commit, status, ...)."""
    out = {}
    try:
        for line in path.read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v
    except OSError:
        pass
    return out


def read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"
    return (d, None) if isinstance(d, dict) else (None, "not a JSON object")


def find_results(results_dir: Path, name: str, marker: dict) -> Path | None:
    """The step's results JSON: the one its marker names, else the newest <name>_*.json."""
    if marker.get("results"):
        p = results_dir / Path(marker["results"]).name
        if p.is_file():
            return p
    files = sorted(results_dir.glob(f"{name}_*.json"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


# ---------------------------------------------------------------------------------------------
# formatting


def mean_std(s: dict, part: str, metric: str) -> str:
    m = get(s, part, metric, "mean")
    sd = get(s, part, metric, "std")
    if m is None:
        return "-"
    return f"{m:.3f} ± {sd:.3f}" if sd is not None else f"{m:.3f}"


def seconds(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    return f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min"


def pipeline_references(d: dict, results_dir: Path) -> dict:
    """two_tower.py's best pipeline row on the same data and split: the one the results
    file recorded, else looked up now (results written before the row existed)."""
    if isinstance(d.get("references"), dict):
        return d["references"]
    if d.get("experiment") == "two_tower" or not get(d, "data", "source"):
        return {}
    import experiment  # lazy: torch is imported only for this fallback

    ref = experiment.pipeline_reference(
        d["data"], get(d, "split", "mode"), get(d, "split", "seed"), results_dir
    )
    return {} if ref is None else {ref[0]: ref[1]}


def metrics_table(d: dict, results_dir: Path | None = None) -> str:
    metrics = d.get("metrics") or {}
    if not metrics:
        return "_No metrics in the results file._"
    labels, cands = d.get("produced_by") or {}, d.get("candidate_recall") or {}
    refs = pipeline_references(d, results_dir) if results_dir else d.get("references") or {}
    rows = []
    for arm, s in list({**refs, **metrics}.items())[: MAX_ARMS + len(refs)]:
        ci = get(s, "ci95_first_seed", "recall@10")
        name = arm + (f" [{labels[arm]}]" if arm in labels else "")
        rows.append(
            [name + (" (reference)" if arm in refs else ""), mean_std(s, "all", "recall@10")]
            + [f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"]
            + [mean_std(s, part, m) for part, m in METRICS_COLUMNS]
            + [num(cands.get(arm)), num(get(s, "all", "n_users"))]
        )
    more = len(metrics) - MAX_ARMS
    return md_table(metrics_header(len(d.get("seeds") or [])), rows) + (
        f"\n\n_{more} more arms in the JSON (the plot draws every arm)._" if more > 0 else ""
    )


def metrics_header(n_seeds: int) -> list[str]:
    """The metrics table's header: with several seeds, the means say they are over seeds and
    the interval says it is over the users of the first seed only."""
    if n_seeds <= 1:
        return METRICS_HEADER[:2] + ["R@10 95% CI over users"] + METRICS_HEADER[3:]
    head = [f"{h} (mean ± std, {n_seeds} seeds)" if h.startswith(("R@", "NDCG")) else h
            for h in METRICS_HEADER]  # fmt: skip
    head[2] = "R@10 95% CI over users, first seed only"
    return head


# ---------------------------------------------------------------------------------------------
# plots (evals/plots.py draws them)


def try_plot(fn, *a, notes: list | None = None):
    """A plot that fails (matplotlib missing, odd JSON) becomes a note, not a crash."""
    try:
        return fn(*a)
    except Exception as e:  # noqa: BLE001 - the report must still be written
        if notes is not None:
            notes.append(f"plot {fn.__name__} failed: {type(e).__name__}: {e}")
        return None


# ---------------------------------------------------------------------------------------------
# the experiment-specific blocks (each tolerant of missing keys; each returns markdown blocks)


def description_stats_block(d: dict) -> list[str]:
    """exp1's description statistics table (template vs LLM text), if the JSON has them."""
    stats = d.get("description_stats") or {}
    if not stats:
        return []
    header = (
        "text|words|distinct tokens|mentions aisle/dept|words not in name/aisle/dept|contradiction"
    )
    cols = ("distinct_tokens", "grounded", "novel_word_share", "contradiction")
    rows = [[k, num(v.get("words"), 1), *(num(v.get(c)) for c in cols)] for k, v in stats.items()]
    return ["Description statistics:\n\n" + md_table(header.split("|"), rows)]


def cost_block(d: dict) -> list[str]:
    """The experiment's own cost figures (e.g. dollars per 1,000 items) as one line."""
    if not d.get("cost"):
        return []
    return ["Cost: " + ", ".join(f"{k} {num(v)}" for k, v in d["cost"].items())]


def category_precision_block(d: dict) -> list[str]:
    """exp2's category precision@10 per arm with its interval over users."""
    cp = d.get("category_precision") or {}
    if not cp:
        return []
    rows = [
        [
            a,
            num(v.get("mean")),
            f"[{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v.get("ci95") else "-",
            num(v.get("users")),
        ]
        for a, v in cp.items()
    ]
    return [
        "Category precision@10 (share of the top 10 in the user's top "
        "categories; mean and 95% CI over users):\n\n"
        + md_table(["arm", "mean", "95% CI", "users"], rows)
    ]


def reranker_controls_block(d: dict) -> list[str]:
    """exp3's context controls, one table per candidate set: RBO against the noise floor,
    the shuffle agreement, no context and the placebo. The caption says what the JSON's noise
    floor is: a sampled repeat of the first users' no-context prompts, with the shuffle
    agreement (shuffle 1 vs 2) a column of its own; in older JSONs (no "shuffle agreement"),
    two shuffles of the same prompt."""
    out = []
    for cset, rows in (d.get("controls") or {}).items():
        if not rows:
            continue
        repeat = any("shuffle agreement" in r for r in rows.values())
        cols = ("noise floor", "shuffle agreement") if repeat else ("noise floor",)
        header = (
            ["condition", "R@10", "NDCG@10", "noise floor"]
            + (["shuffles"] if repeat else [])
            + ["vs none", "vs placebo", "fit@10", "failed per 100"]
        )
        table = [
            [c, num(r.get("R@10")), num(r.get("NDCG@10"))]
            + [num(get(r, k, "rbo")) for k in (*cols, "vs none", "vs placebo")]
            + [num(r.get("fit share top-10")), num(r.get("failed per 100"), 1)]
            for c, r in rows.items()
        ]
        if repeat:
            caption = f"Controls, {cset} (RBO agreement; {noise_floor_caption(d, cset)}):"
        else:
            caption = (
                f"Controls, {cset} (RBO agreement; noise floor = two shuffles of the same prompt):"
            )
        out.append(caption + "\n\n" + md_table(header, table))
    return out


def noise_floor_caption(d: dict, cset: str) -> str:
    """exp3's noise floor and shuffle columns, as the JSON holds them (noise_floor_repeat)."""
    rep = get(d, "noise_floor_repeat", cset) or {}
    if rep.get("not_measured"):
        floor = f"noise floor not measured ({rep['not_measured']})"
    else:
        users = f"the first {rep['users']:,} users'" if rep.get("users") else "the first users'"
        floor = (
            f"noise floor = {users} no-context answers against the same prompts asked again "
            "with sampling (a sampled repeat; no-context row only)"
        )
    return (
        f"{floor}; shuffles = shuffle 1 vs 2 of one condition (position bias); vs none / vs "
        "placebo = same shuffle, other condition"
    )


def val_loss_block(d: dict) -> list[str]:
    """exp5's validation loss and final gate alpha per arm (means over seeds)."""
    val = d.get("val_loss") or {}
    curves = d.get("alpha_curves") or {}
    if not val:
        return []
    rows = []
    for arm, v in val.items():
        vs = [x for x in (v if isinstance(v, list) else [v]) if x is not None]
        fin = [c[-1] for c in curves.get(arm) or [] if c]
        mean = lambda xs: num(sum(xs) / len(xs)) if xs else "-"
        rows.append([arm, mean(vs), mean(fin)])
    return [
        "Validation loss and final alpha (mean over seeds):\n\n"
        + md_table(["arm", "val loss", "final alpha"], rows)
    ]


def notes_block(d: dict) -> list[str]:
    """The JSON's free-form notes (a string, a list or a dict)."""
    notes = d.get("notes")
    if isinstance(notes, str) and notes:
        return [f"Notes: {notes}"]
    if isinstance(notes, list) and notes:
        return ["Notes:\n\n" + "\n".join(f"- {n}" for n in notes)]
    if isinstance(notes, dict) and notes:
        return ["Notes:\n\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items())]
    return []


# the blocks each experiment's section adds after its metrics table (notes_block: all of them)
EXTRA_BLOCKS = {
    "llm_item_enrichment": (description_stats_block, cost_block),
    "llm_user_narration": (category_precision_block,),
    "llm_reranker": (reranker_controls_block, cost_block),
    "exp5_dual_head": (val_loss_block,),
}


def extra_blocks(name: str, d: dict) -> list[str]:
    """The experiment's own tables, then its notes."""
    fns = (*EXTRA_BLOCKS.get(name, ()), notes_block)
    return [block for fn in fns for block in fn(d)]


# ---------------------------------------------------------------------------------------------
# the report


def step_status(marker: dict) -> tuple[str, str]:
    """(status word, detail) of a step from its marker."""
    st = marker.get("status")
    if marker.get("step") == "report" and st == "running":
        return "running", "this report"
    if st is None:
        return "no record", "run_overnight.sh has no record of this step"
    if st == "0":
        return "ok", ""
    if st == "running":
        return "interrupted", "the step was killed before it finished"
    if st.startswith("skipped"):
        return "skipped", marker.get("reason", st)
    reason = marker.get("reason", "")  # run_overnight.sh's reason may carry "exit N:" already
    if st.isdigit() and not reason.startswith(f"exit {st}"):
        reason = f"exit {st}: {reason}".strip()
    return "failed", reason or f"status {st}"


def _epoch(utc: str | None) -> float | None:
    """Seconds since the epoch of an ISO UTC time as run_overnight.sh writes it."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(utc)).timestamp()
    except ValueError:
        return None


def stale_reason(step: str, marker: dict, run: dict, results: Path | None) -> str | None:
    """Why the step's results are not from the last run_overnight.sh run `run` (its
    run.marker), or None: failed or interrupted; its marker carries an older run id (the run
    stopped before it, or did not select it); no marker and results older than the run."""
    status, _ = step_status(marker)
    if step == "report" or status in ("skipped",):
        return None
    if status in ("failed", "interrupted"):
        return f"{status} in its last run"
    if not run.get("run"):  # no record of the last run: nothing more to compare
        return None
    if not marker:
        started = _epoch(run.get("started"))
        old = results is not None and started and results.stat().st_mtime < started
        return "no marker; its results predate the last run" if old else None
    if marker.get("run") == run["run"]:
        return None
    if step in (run.get("steps") or "").split():
        return f"not reached: the last run {run_state(run)} before it"
    return "not checked by the last run: not among its --steps"


def stale_steps(results_dir: Path, evals_dir: Path, markers: dict, run: dict) -> dict:
    """{step: why its results are not from the last run} for every stale step."""
    out = {}
    for step in STEPS:
        res = None
        if step in dict(EXPERIMENTS):
            res = find_results(results_dir, step, markers[step])
        elif step == "evals":
            res = (latest_eval_runs(evals_dir) or [None])[-1]
        why = stale_reason(step, markers[step], run, res)
        if why:
            out[step] = why
    return out


def run_state(run: dict) -> str:
    """What became of the last run, in a few words."""
    states = {"done": "ended", "failed": "ended", "interrupted": "was interrupted"}
    return states.get(run.get("status", ""), "has not finished (still running, or killed)")


def stale_banner(run: dict, stale: dict, report_marker: dict) -> list[str]:
    """The report's warning that some steps' results are not from the last run."""
    mark = report_marker
    building = mark.get("status") == "running" and mark.get("run") == run.get("run")
    unfinished = run.get("status") not in ("done", "failed") and not building
    if not run.get("run") or not (stale or unfinished):
        return []
    state = "is building this report" if building else run_state(run)
    listed = "; ".join(f"`{s}` ({why})" for s, why in stale.items())
    return [
        f"> **Stale.** The last `run_overnight.sh` run ({run['run']}, started "
        f"{run.get('started', '?')}) {state}"
        + (f"; these steps' results are not from it: {listed}." if stale else "."),
        "",
    ]


def question_lines(d: dict | None) -> list[str]:
    """The question and the original finding, as the results JSON recorded them."""
    question = (d or {}).get("question")
    finding = (d or {}).get("original_finding")
    return [
        f"**Question.** {question or '_not recorded_'}",
        "",
        f"**Original finding.** {finding or '_not recorded_'}",
        "",
    ]


def status_lines(marker: dict, d: dict | None, stale: str | None = None) -> list[str]:
    """What the step's marker says when it did not end well (failed, interrupted, skipped)
    or its results are stale (`stale`: why, stale_reason), with a warning when the results
    shown come from an earlier run."""
    status, detail = step_status(marker)
    log_note = f" (log: `{marker['log']}`)" if marker.get("log") else ""
    if status in ("failed", "interrupted"):
        head = f"**Status: {status}** - {detail}"
    elif stale:
        head = f"**Stale** - {stale}"
    elif status == "skipped" and d is None:
        return [f"**Status: skipped** - {detail}.", ""]
    else:
        return []
    lines = [f"{head}{log_note}.", ""]
    if d is not None:
        when = get(d, "provenance", "time_utc", default="time unknown")
        lines += [f"> The results below are from an earlier run ({when}), not the last one.", ""]
    return lines


def run_line(path: Path, d: dict) -> str:
    """One line on the run behind the results: file, data, split, seeds, time, commit."""
    data = d.get("data") or {}
    split = d.get("split") or {}
    bits = [
        f"`{path.name}`",
        data.get("source", "data ?"),
        f"{num(data.get('users'))} users x {num(data.get('items'))} items",
        f"split {split.get('mode', '?')}",
        f"{num(split.get('eval_users'))} evaluation users",
        f"{len(d.get('seeds') or [])} seed(s)",
        "quick settings" if (d.get("options") or {}).get("quick") else None,
        f"{seconds(get(d, 'timings', 'total_s'))}",
        f"commit {str(get(d, 'provenance', 'git_commit') or '?')[:10]}"
        + (" (dirty)" if get(d, "provenance", "git_dirty") else ""),
    ]
    return "Run: " + " | ".join(b for b in bits if b)


def verdict_lines(d: dict) -> list[str]:
    """The verdict, or the list of verdicts of an experiment that states several."""
    verdicts = d.get("verdicts") if isinstance(d.get("verdicts"), list) else None
    if verdicts and len(verdicts) > 1:
        return ["**Verdicts.**", "", *[f"- `{v}`" for v in verdicts], ""]
    verdict = d.get("verdict")
    if verdict:
        return [f"**Verdict.** `{verdict}`", ""]
    return ["**Verdict.** _none recorded (a reference run states no verdict)_", ""]


def plot_lines(name: str, d: dict, made: dict, notes: list, plot_dir: Path) -> list[str]:
    """The experiment's plots (evals/plots.py; written to plot_dir, linked, recorded in
    `made`), or why one is missing."""
    lines = []
    main = try_plot(plots.plot_experiment, name, d, plot_dir, notes=notes)
    exp5 = name == "exp5_dual_head"
    alpha = try_plot(draw.plot_alpha, d, plot_dir, notes=notes) if exp5 else None
    for fname in (main, alpha):
        if fname:
            made.setdefault(name, []).append(fname)
            lines += [f"![{fname}]({fname})", ""]
    if main is None:
        lines += ["_No paired gains or arm metrics in the JSON: no plot._", ""]
    if name == "exp5_dual_head" and not d.get("alpha_curves"):
        lines += ["_No `alpha_curves` in the JSON: no alpha plot._", ""]
    return lines


def experiment_section(
    name: str,
    title: str,
    results_dir: Path,
    marker: dict,
    made: dict,
    notes: list,
    plot_dir: Path,
    stale: str | None = None,
) -> tuple[str, dict | None]:
    """One experiment's section of the report, and its results JSON (None if none);
    `stale`: why its results are not from the last run (stale_reason), if they are not."""
    path = find_results(results_dir, name, marker)
    d, err = read_json(path) if path else (None, None)
    lines = [f"## {title} (`{name}.py`)", "", *question_lines(d), *status_lines(marker, d, stale)]
    if path is None:
        if step_status(marker)[0] not in ("failed", "interrupted", "skipped"):
            lines += [f"**Status: not run** - no `{name}_*.json` in the results folder.", ""]
        return "\n".join(lines), None
    if d is None:
        lines += [f"**Status: results unreadable** - `{path.name}`: {err}.", ""]
        return "\n".join(lines), None
    lines += [run_line(path, d), "", *verdict_lines(d)]
    skipped = llm_skipped(d)
    if skipped:
        lines += [f"LLM arms skipped: {skipped}.", ""]
    lines += [metrics_table(d, results_dir), ""]
    lines += plot_lines(name, d, made, notes, plot_dir)
    for block in extra_blocks(name, d):
        lines += [block, ""]
    return "\n".join(lines), d


def latest_eval_runs(evals_dir: Path) -> list[Path]:
    return sorted(Path(evals_dir).glob("run_*.json"))


def evals_section(
    evals_dir: Path, marker: dict, stale: str | None = None
) -> tuple[str, dict | None]:
    """The evaluations' section (latest run of evals/run_evals.py, compared with the previous
    one), and that run's JSON (None if none)."""
    lines = ["## Evaluations (`evals/run_evals.py`)", ""]
    status, detail = step_status(marker)
    if status in ("failed", "interrupted") or stale:
        head = (
            f"**Stale** - {stale}"
            if stale and status not in ("failed", "interrupted")
            else (f"**Status: {status}** - {detail}")
        )
        lines += [head + (f" (log: `{marker['log']}`)." if marker.get("log") else "."), ""]
    runs = latest_eval_runs(evals_dir)
    if not runs:
        lines += ["**Status: not run** - no eval run in `evals/results/`.", ""]
        return "\n".join(lines), None
    d, err = read_json(runs[-1])
    if d is None:
        lines += [f"Latest eval run `{runs[-1].name}` unreadable: {err}.", ""]
        return "\n".join(lines), None
    lines += [
        f"Latest run `{runs[-1].name}` (commit "
        f"{str(get(d, 'provenance', 'git_commit') or '?')[:10]}; prompt versions "
        + ", ".join(f"{k} {v}" for k, v in (d.get("prompt_versions") or {}).items())
        + ").",
        "",
    ]
    parts = d.get("parts") or {}
    lines += description_evals_lines(parts.get("descriptions"))
    lines += reranker_evals_lines(parts.get("reranker"))
    if len(runs) > 1:
        lines += comparison_lines(runs[-2], d)
    return "\n".join(lines), d


def description_evals_lines(desc: dict | None) -> list[str]:
    """The description-quality table of an eval run (per backend/model, prompt version)."""
    if desc is None:
        return ["Descriptions: not evaluated in this run.", ""]
    if desc.get("skipped"):
        return [f"Descriptions: skipped - {desc['skipped']}.", ""]
    header = "model (version)|n|words|template words|distinct-2|grounded|contradicts|"
    header += "sim template|duplicates"
    cols = ("distinct_2", "grounded", "contradiction", "sim_template", "duplicates")
    rows = [
        [f"{m.get('model')} ({str(m.get('version'))[:6]})", num(m.get("n"))]
        + [num(m.get("words"), 1), num(m.get("template_words"), 1)]
        + [num(m.get(c)) for c in cols]
        for m in desc.get("models", [])
    ]
    table = md_table(header.split("|"), rows)
    return ["Description quality (per backend/model and prompt version):", "", table, ""]


def reranker_evals_lines(rr: dict | None) -> list[str]:
    """One paragraph on the reranker answers of an eval run: hallucination and repairs."""
    if rr is None:
        return ["Reranker answers: not evaluated in this run.", ""]
    if rr.get("skipped"):  # n/a: the run asked about has no answers (the reason)
        why = rr["skipped"]
        return [f"Reranker answers: {why if why.startswith('n/a') else 'skipped - ' + why}.", ""]
    h, rp = rr.get("hallucination") or {}, rr.get("repairs_per_100_answers") or {}
    run = rr.get("answers_run") or {}
    whose = f"run {run.get('run_id')}, " if run else "no run header, "
    return [
        f"Reranker answers ({whose}`{rr.get('answers_file')}`"
        + (f" of `{rr['results_file']}`" if rr.get("results_file") else "")
        + f"): {num(rr.get('answers'))} answers from "
        f"{num(rr.get('users'))} users ({', '.join(rr.get('models') or [])}); "
        "hallucination "
        + ", ".join(f"{k} {num(v)}" for k, v in h.items())
        + "; repairs per 100 answers "
        + ", ".join(f"{k} {num(v)}" for k, v in rp.items())
        + ".",
        "",
    ]


def comparison_lines(prev_path: Path, d: dict) -> list[str]:
    """The latest eval run against the previous one; a comparison that fails becomes a line."""
    try:
        return compared_runs_lines(prev_path, d)
    except Exception as e:  # noqa: BLE001 - the report must still be written
        return [f"Comparison with the previous run failed: {e}.", ""]


def compared_runs_lines(prev_path: Path, d: dict) -> list[str]:
    """evals.run_evals.compare_runs of the previous run and `d`: how many metrics changed,
    and a table of those outside the earlier 95% interval."""
    from evals.run_evals import compare_runs

    prev, _ = read_json(prev_path)
    rows = compare_runs(prev or {}, d)
    flagged = [r for r in rows if r["regression"]]
    changed = [r for r in rows if r["delta"] != 0]
    lines = [
        f"Against the previous run `{prev_path.name}`: {len(rows)} metrics, "
        f"{len(changed)} changed, {len(flagged)} outside the earlier 95% interval"
        + (":" if flagged else "."),
        "",
    ]
    if flagged:
        table = [
            [r["metric"], num(r["earlier"], 4), num(r["later"], 4), f"{r['delta']:+.4f}"]
            for r in flagged[:15]
        ]
        lines += [md_table(["metric", "earlier", "later", "delta"], table), ""]
    return lines


def cost_section(results: dict, markers: dict) -> str:
    """Wall time per step (marker, else the JSON's timings) and the LLM usage of each JSON."""
    rows, tot = [], {"wall": 0.0, "in": 0, "out": 0, "usd": 0.0, "calls": 0}
    for step in STEPS:
        m, d = markers.get(step, {}), results.get(step)
        wall = m.get("wall_s") or get(d or {}, "timings", "total_s")
        us = usage_dicts(d) if d else []
        backend = ", ".join(
            sorted({f"{u.get('backend')}: {u.get('label') or u.get('model')}" for u in us})
        ) or (f"skipped ({llm_skipped(d)})" if d and llm_skipped(d) else "-")
        s = lambda k, us=us: sum(int(u.get(k) or 0) for u in us)
        usd = [u.get("total_cost_usd") for u in us if u.get("total_cost_usd") is not None]
        tin = s("input_tokens") + s("batch_input_tokens")
        tout = s("output_tokens") + s("batch_output_tokens")
        busy = seconds(sum(float(u.get("busy_s") or 0) for u in us))
        llm_cells = [num(s("api_calls")), num(s("cached")), num(tin), num(tout)]
        rows.append(
            [step, step_status(m)[0], seconds(wall), backend]
            + (llm_cells if us else ["-"] * 4)
            + [f"${sum(usd):.4f}" if usd else "-", busy if us else "-"]
        )
        try:
            tot["wall"] += float(wall or 0)
        except ValueError:
            pass
        tot["in"], tot["out"] = tot["in"] + tin, tot["out"] + tout
        tot["calls"], tot["usd"] = tot["calls"] + s("api_calls"), tot["usd"] + sum(usd)
    rows.append(["total", "", seconds(tot["wall"]), "", num(tot["calls"]), ""])
    rows[-1] += [num(tot["in"]), num(tot["out"]), f"${tot['usd']:.4f}", ""]
    header = "step|status|wall time|LLM backend: model|API/model calls|cache hits|tokens in|"
    header += "tokens out|dollars|LLM busy"
    return (
        "## Cost: tokens, dollars and wall time per step\n\n"
        + md_table(header.split("|"), rows)
        + "\n\n(wall time: the step's own run as run_overnight.sh measured it, else the "
        "JSON's timings; a skipped step shows the time of the run that produced its "
        "results. Local model: dollars 0, its cost is the LLM busy time.)\n"
    )


def build_report(results_dir: Path, evals_dir: Path, out: Path | None = None) -> Path:
    results_dir, evals_dir = Path(results_dir), Path(evals_dir)
    out = Path(out) if out else results_dir / "REPORT.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    markers = {s: read_marker(results_dir / MARKER_DIR / f"{s}.marker") for s in STEPS}
    run = read_marker(results_dir / MARKER_DIR / RUN_MARKER)
    stale = stale_steps(results_dir, evals_dir, markers, run)
    notes: list[str] = []
    made: dict = {}
    sections, results = [], {}
    for name, title in EXPERIMENTS:
        text, d = experiment_section(
            name, title, results_dir, markers[name], made, notes, out.parent, stale.get(name)
        )
        sections.append(text)
        results[name] = d
    ev_text, ev = evals_section(evals_dir, markers["evals"], stale.get("evals"))
    desc_plot = try_plot(
        draw.plot_descriptions, results.get("llm_item_enrichment"), ev, out.parent, notes=notes
    )
    # header: how this report was produced
    llm_line = next((m["llm_status"] for m in markers.values() if m.get("llm_status")), None)
    modes = {m["mode"] for s, m in markers.items() if m.get("mode") and s in dict(EXPERIMENTS)}
    head = [
        "# Study report",
        "",
        f"Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `evals/report.py` "
        "from the results JSONs (nothing recomputed)."
        + (f" Settings: {' and '.join(sorted(modes))}." if modes else ""),
        "",
    ]
    head += llm_header(results, llm_line, [name for name, _ in EXPERIMENTS])
    if "quick" in modes:
        head += [
            (
                "> Quick settings (`run_overnight.sh --quick`): small samples, one or two "
                "seeds, a handful of LLM users. A first look, not the study's numbers."
            ),
            "",
        ]
    head += stale_banner(run, stale, markers["report"])
    step_rows = []
    for s in STEPS:
        m = markers[s]
        status, detail = step_status(m)
        if s in stale and status not in ("failed", "interrupted"):
            status, detail = "stale", stale[s]
        step_rows.append(
            [s, status, detail, seconds(m.get("wall_s")), f"`{m['log']}`" if m.get("log") else "-"]
        )
    head += [
        "## Steps",
        "",
        md_table(["step", "status", "detail", "wall time", "log"], step_rows),
        "",
    ]
    head += ["## Verdicts at a glance", "", verdict_table(results, stale, EXPERIMENTS), ""]
    body = "\n".join(head) + "\n" + "\n".join(sections) + "\n" + ev_text + "\n"
    if desc_plot:
        body += f"\n### Description statistics\n\n![{desc_plot}]({desc_plot})\n\n"
    body += "\n" + cost_section({**results, "evals": ev}, markers)
    if notes:
        body += "\n## Notes from the report builder\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(body)
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument(
        "--results",
        default=str(ROOT / "results"),
        help="folder of the results JSONs (and of the step markers); default results/",
    )
    p.add_argument(
        "--evals",
        default=str(ROOT / "evals" / "results"),
        help="folder of the eval runs (default evals/results/)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="report path (default <results>/REPORT.md); the PNGs go beside it",
    )
    args = p.parse_args(argv)
    if not Path(args.results).is_dir():
        print(f"error: no results folder {args.results}", file=sys.stderr)
        return 2
    out = build_report(Path(args.results), Path(args.evals), args.out)
    try:
        shown = out.resolve().relative_to(ROOT)
    except ValueError:
        shown = out
    print(f"report: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
