"""Evaluations of saved LLM reranker answers (experiment 3, llm_reranker.py).

    uv run python -m evals.reranker_evals      # the newest llm_reranker run in results/
    uv run python -m evals.reranker_evals --results results/llm_reranker_<...>.json
    uv run python -m evals.reranker_evals --answers FILE.jsonl   # a file, evaluated as it is
    uv run python -m evals.reranker_evals --users 10             # the first 10 users only

Evaluates the answers of the run it is asked about: the answers file that an llm_reranker.py
results JSON names (answers_file), checked against it: the file's first line, its run
header (run id, data, split, candidate sets, options, LLM), must equal the JSON's
answers_run. Without --results, the newest llm_reranker run in results/, when its results
JSONs are all of one data and split. When the
run has no answers (LLM arms skipped), or its file is missing, has no run header or is from
another run, the answer is n/a with the reason (NoAnswers), never another file such as the
newest one.

Reads the JSONL that llm_reranker.py writes (after the run header, one line per answer: user,
candidate set, condition, shuffle, the candidate ids in their original order, the order
shown, the context, the raw answer, the parsed ranking and its repair counts) and reports,
without any LLM call:

- hallucination: answers naming an id (or a product name) that is not among the candidates;
- repairs per 100 answers: unknown ids dropped, duplicates removed, missing ids appended, and
  failures (more than half the ids missing: not a ranking);
- reasoning alignment, when the answer gives a reason: does the reason name an attribute of
  its top item (a word of its name, its aisle or department), matched at token boundaries;
- position bias: Kendall tau between the order shown and the answer (1 = the model echoed
  the list) and the agreement between shuffles of the same prompt;
- context sensitivity against the noise floor: agreement (RBO, Jaccard@10, Kendall tau)
  between the no-context and each context condition on the same shuffle, beside the
  agreement between two shuffles, or a repeat, of the same condition (the noise floor).

Writes evals/results/reranker_evals.json and prints a table. The ranking-agreement measures
(`rbo`, `jaccard_at`, `kendall_tau`, `agreement`) live in metrics.py and the permutation
repair (`repair_permutation`, where repairs are counted) in llm/jsonrepair.py, beside
llm_reranker.py's use of them; this module imports nothing from the experiment scripts.
`evals/run_evals.py --reranker [--reranker-results JSON] --reranker-users N` calls
`run(users=N, results=JSON)`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

import config
import runs
from common import agreement, jaccard_at, kendall_tau, rbo  # noqa: F401 (re-exported)
from experiment import SAME_DATA_KEYS
from llm import Repair, repair_permutation  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"  # where llm_reranker.py writes its results JSON and answers
OUT_PATH = Path(__file__).resolve().parent / "results" / "reranker_evals.json"
RESULTS_GLOB = "llm_reranker_*.json"  # llm_reranker.py's results JSONs (one per run)
NO_CONTEXT = "none"  # the condition every context condition is compared with


class NoAnswers(Exception):
    """The run asked about has no answers to evaluate: n/a, with the reason."""


class ChooseRun(Exception):
    """Several llm_reranker results JSONs and none named: which run is meant?"""


# ---------------------------------------------------------------------------------------------
# Which answers: those of the run asked about


def _show(path) -> str:
    """A path relative to the repository when it is inside it (no machine paths in output)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_answers(path: str | Path) -> tuple[dict | None, list[dict]]:
    """(the run header, the answer records) of an answers file; header None when its first
    line names no run (a file written before answers files named their run)."""
    path = Path(path)
    if not path.is_file():
        raise NoAnswers(f"no reranker answers at {_show(path)} (run llm_reranker.py with an LLM)")
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if recs and "answers_run" in recs[0] and "user" not in recs[0]:
        return recs[0]["answers_run"], recs[1:]
    return None, recs


def load_answers(path: str | Path, users: int | None = None) -> list[dict]:
    """The answer records of one file; with `users`, those of its first N users only."""
    recs = read_answers(path)[1]
    if users is not None:
        keep = set(list(dict.fromkeys(r["user"] for r in recs))[:users])
        recs = [r for r in recs if r["user"] in keep]
    return recs


def pick_results(results_dir: str | Path) -> Path:
    """The newest llm_reranker run in `results_dir` when all its llm_reranker results JSONs
    are of one data and split (one series, runs.series_of); NoAnswers: none; ChooseRun:
    several data or splits, which the caller must name."""
    files = sorted(Path(results_dir).glob(RESULTS_GLOB), key=lambda p: p.stat().st_mtime)
    if not files:
        raise NoAnswers(
            f"no llm_reranker results JSON in {_show(results_dir)} (run llm_reranker.py first)"
        )
    series = sorted({runs.series_of(f.name) for f in files})
    if len(series) > 1:
        names = ", ".join(f"{s}_*.json" for s in series)
        raise ChooseRun(
            f"{len(files)} llm_reranker results JSONs of {len(series)} data / splits in "
            f"{_show(results_dir)} ({names})"
        )
    return files[-1]


def answers_of_run(results: str | Path) -> tuple[Path, dict]:
    """The answers file of the llm_reranker run whose results JSON is `results`, and its run
    header, once the file's run header matches the JSON (answers_run, data, split). NoAnswers
    with the reason otherwise: no LLM answers in that run, file missing, no run header, or
    the answers of another run."""
    results = Path(results)
    if not results.is_file():
        raise NoAnswers(f"no llm_reranker results JSON at {_show(results)}")
    try:
        d = json.loads(results.read_text())
    except (OSError, ValueError) as e:
        raise NoAnswers(f"llm_reranker results {_show(results)} unreadable ({e})") from None
    name = d.get("answers_file") if isinstance(d, dict) else None
    if not name:
        why = (d.get("llm") or {}).get("skipped") if isinstance(d, dict) else None
        raise NoAnswers(
            f"the llm_reranker run of {results.name} made no LLM answers"
            + (f" (LLM arms skipped: {why})" if why else "")
        )
    run = d.get("answers_run")
    if not run:
        raise NoAnswers(
            f"{results.name} records no answers run (written before answers files named "
            "their run): rerun llm_reranker.py"
        )
    path = results.parent / name  # answers_file is relative to the results JSON's folder
    if not path.is_file():
        raise NoAnswers(f"{name}, the answers of {results.name}, is missing")
    header = read_answers(path)[0]
    if header is None:
        raise NoAnswers(f"{name} has no run header: not known to be the answers of {results.name}")
    diff = [k for k in sorted(set(run) | set(header)) if run.get(k) != header.get(k)]
    data, split = d.get("data") or {}, d.get("split") or {}
    if any(data.get(k) != (header.get("data") or {}).get(k) for k in SAME_DATA_KEYS):
        diff.append("data")
    if [split.get("mode"), split.get("seed")] != [
        (header.get("split") or {}).get(k) for k in ("mode", "seed")
    ]:
        diff.append("split")
    if diff:
        raise NoAnswers(
            f"{name} is from another run than {results.name} (differs in "
            f"{', '.join(dict.fromkeys(diff))}): rerun llm_reranker.py"
        )
    return path, header


# ---------------------------------------------------------------------------------------------
# Evaluations over saved answers


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def attribute_words(name: str, aisle: str, department: str = "") -> set[str]:
    """Words a reason may use to name an item's attributes: its aisle, department and the
    words of its name of 4+ letters."""
    words = {w for w in _tokens(name) if len(w) >= 4}
    return words | _tokens(aisle) | _tokens(department)


def names_attribute(reason: str, words: set[str]) -> bool:
    """Does `reason` contain one of `words` as a whole token (token-boundary match: 'tea'
    is not found in 'steak')?"""
    return any(
        re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", reason.lower()) for w in words
    )


def _hallucinated_names(rec: dict) -> int:
    """String values in the parsed answer (other than a reason) that are no candidate name."""
    try:
        data = json.loads(rec.get("raw") or "")
    except (json.JSONDecodeError, TypeError):
        return 0
    names = {str(n).lower() for n in rec.get("names") or []}
    strings = [v for k, v in data.items() if k != "reason"] if isinstance(data, dict) else []
    flat = [x for v in strings for x in (v if isinstance(v, list) else [v])]
    return sum(1 for x in flat if isinstance(x, str) and x.lower() not in names)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and np.isnan(x))]
    return float(np.mean(xs)) if xs else None


def _agree_mean(pairs) -> dict:
    ags = [agreement(a, b) for a, b in pairs]
    return {m: _mean([g[m] for g in ags]) for m in ("rbo", "jaccard@10", "tau")} | {
        "pairs": len(ags)
    }


def evaluate_answers(recs: list[dict]) -> dict:
    """Every evaluation over answer records, per (mode, candidate set) and overall."""
    listwise = [r for r in recs if r.get("mode", "listwise") == "listwise"]
    n = len(listwise)
    out: dict = {
        "answers": len(recs),
        "listwise_answers": n,
        "users": len({r["user"] for r in recs}),
        "models": sorted({r.get("model", "?") for r in recs}),
    }
    per100 = lambda k: (
        round(100 * sum(int(r["repairs"].get(k, 0) > 0) for r in listwise) / n, 2) if n else None
    )
    out["hallucination"] = {
        "answers_with_unknown_ids_pct": per100("unknown"),
        "unknown_ids_per_100_answers": round(
            100 * sum(r["repairs"].get("unknown", 0) for r in listwise) / n, 2
        )
        if n
        else None,
        "answers_with_unknown_names_pct": round(
            100 * sum(_hallucinated_names(r) > 0 for r in listwise) / n, 2
        )
        if n
        else None,
    }
    out["repairs_per_100_answers"] = {k: per100(k) for k in ("unknown", "duplicate", "missing")} | {
        "failed": round(100 * sum(bool(r["repairs"].get("failed")) for r in listwise) / n, 2)
        if n
        else None,
        "llm_error": round(100 * sum(bool(r.get("error")) for r in listwise) / n, 2) if n else None,
    }
    # reasoning alignment (only answers that carry a reason)
    with_reason = [r for r in recs if r.get("reason") and r.get("parsed")]
    aligned = []
    for r in with_reason:
        top = r["parsed"][0]
        j = r["candidates"].index(top)
        words = attribute_words(
            r["names"][j], r["aisles"][j], (r.get("departments") or [""] * len(r["names"]))[j]
        )
        aligned.append(names_attribute(r["reason"], words))
    out["reasoning_alignment"] = {
        "answers_with_reason": len(with_reason),
        "share_naming_top_item_attribute": _mean(aligned),
    }
    # position bias and context sensitivity, per candidate set
    pointwise = [r for r in recs if r.get("mode") == "pointwise"]
    if pointwise:
        out["pointwise"] = {
            "answers": len(pointwise),
            "failed_pct": round(
                100 * sum(bool(r["repairs"].get("failed")) for r in pointwise) / len(pointwise), 2
            ),
            "unscored_candidates_per_answer": _mean(
                [r["repairs"].get("no_score", 0) for r in pointwise]
            ),
        }
    out["per_set"] = agreement_per_set(recs)
    return out


def agreement_per_set(recs: list[dict]) -> dict:
    """Per (candidate set, mode): how far the answer echoes the shown order (Kendall tau),
    the noise floor (agreement between shuffles or repeats of one condition) and each
    context's shift against the no-context answer on the same shuffle."""
    # every answer with a ranking (pointwise ones have one shuffle)
    by_key: dict = {}
    for r in recs:
        if r.get("parsed"):
            s = f"{r['set']} ({r.get('mode', 'listwise')})"
            # a repeat (the same prompt asked again) is its own slot beside the shuffles
            by_key.setdefault((s, r["condition"], r["user"]), {})[
                (r["shuffle"], r.get("repeat", 0))
            ] = r
    sets = sorted({k[0] for k in by_key})
    per_set = {}
    for s in sets:
        conds = sorted({k[1] for k in by_key if k[0] == s})
        users = sorted({k[2] for k in by_key if k[0] == s})
        block = {"echo_tau": {}, "noise_floor": {}, "shift_vs_none": {}}
        for c in conds:
            shown = [
                (r["shown"], r["parsed"]) for u in users for r in by_key.get((s, c, u), {}).values()
            ]
            block["echo_tau"][c] = _mean([kendall_tau(a, b) for a, b in shown])
            pairs = [
                (g[x]["parsed"], g[y]["parsed"])
                for u in users
                if (g := by_key.get((s, c, u)))
                for x, y in combinations(sorted(g), 2)
            ]
            block["noise_floor"][c] = _agree_mean(pairs)
            if c != NO_CONTEXT:
                pairs = [
                    (g0[sh]["parsed"], g[sh]["parsed"])
                    for u in users
                    if (g0 := by_key.get((s, NO_CONTEXT, u))) and (g := by_key.get((s, c, u)))
                    for sh in sorted(set(g0) & set(g))
                ]
                block["shift_vs_none"][c] = _agree_mean(pairs)
        per_set[s] = block
    return per_set


def format_report(res: dict) -> str:
    """The printed table of evaluate_answers()."""
    f = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = [
        run_line(res),
        (
            f"reranker answers: {res['answers']} ({res['listwise_answers']} listwise) from "
            f"{res['users']} users, model(s) {', '.join(res['models'])}"
        ),
    ]
    h, rp = res["hallucination"], res["repairs_per_100_answers"]
    lines.append("hallucination: " + ", ".join(f"{k} {f(v)}" for k, v in h.items()))
    lines.append("repairs per 100 answers: " + ", ".join(f"{k} {f(v)}" for k, v in rp.items()))
    ra = res["reasoning_alignment"]
    lines.append(
        f"reasoning alignment: {ra['answers_with_reason']} answers with a reason; share "
        f"naming an attribute of the top item {f(ra['share_naming_top_item_attribute'])}"
    )
    if "pointwise" in res:
        lines.append("pointwise: " + ", ".join(f"{k} {f(v)}" for k, v in res["pointwise"].items()))
    for s, b in res["per_set"].items():
        lines.append(f"\ncandidate set {s}: agreement (RBO / Jaccard@10 / tau; pairs)")
        lines.append(
            f"  {'condition':<24}{'echo tau':>9}  {'noise floor (shuffles)':>28}"
            f"  {'shift vs no context':>28}"
        )
        for c in b["echo_tau"]:
            nf, sh = b["noise_floor"][c], b["shift_vs_none"].get(c)
            cell = lambda a: (
                "-"
                if not a or not a["pairs"]
                else f"{f(a['rbo'])} / {f(a['jaccard@10'])} / {f(a['tau'])}; {a['pairs']}"
            )
            lines.append(f"  {c:<24}{f(b['echo_tau'][c]):>9}  {cell(nf):>28}  {cell(sh):>28}")
    lines.append(
        "(echo tau: order shown vs answer, 1 = the list echoed; a context shift is "
        "real only where it is well below the noise floor's agreement)"
    )
    return "\n".join(lines)


def run(
    answers: str | Path | None = None,
    users: int | None = None,
    out: str | Path | None = OUT_PATH,
    verbose: bool = True,
    results: str | Path | None = None,
    results_dir: str | Path | None = None,
) -> dict:
    """Evaluate the answers of one llm_reranker run; write JSON, print table.

    `results`: the run's results JSON (default: the newest llm_reranker run in results_dir,
    default results/), whose answers file is read once its run header matches (answers_of_run);
    or `answers`: a file named explicitly, evaluated as it is. Raises NoAnswers (n/a, with
    the reason) or ChooseRun (several results JSONs, none named). The entry point for
    evals/run_evals.py --reranker."""
    if answers:
        path, results_name = Path(answers), None
        header = read_answers(path)[0]
    else:
        results = Path(results) if results else pick_results(results_dir or RESULTS_DIR)
        (path, header), results_name = answers_of_run(results), results.name
    res = {
        "answers_file": path.name,
        "results_file": results_name,
        "answers_run": header,
        "users_limit": users,
        **evaluate_answers(load_answers(path, users)),
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2, default=float) + "\n")
    if verbose:
        print(format_report(res))
        if out:
            print(f"results: {out}")
    return res


def run_line(res: dict) -> str:
    """Whose answers these are: the run header of the file (or that it has none)."""
    r = res.get("answers_run")
    if not r:
        return f"answers file {res['answers_file']} (no run header: its run is unknown)"
    d, sp = r.get("data") or {}, r.get("split") or {}
    return (
        f"answers of run {r.get('run_id')} ({res['answers_file']}"
        + (f", results {res['results_file']}" if res.get("results_file") else "")
        + f"): {d.get('source')}, {d.get('users')} users x {d.get('items')} items, "
        f"{d.get('rows')} rows; split {sp.get('mode')} seed {sp.get('seed')}; sets "
        f"{', '.join(r.get('candidate_sets') or [])}; {(r.get('llm') or {}).get('label')}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--results",
        default=None,
        help="results JSON of the llm_reranker.py run whose answers are evaluated (default: "
        f"the one {RESULTS_GLOB} in --results-dir)",
    )
    which.add_argument(
        "--answers", default=None, help="an answers JSONL, evaluated as it is (no run check)"
    )
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="default %(default)s")
    p.add_argument(
        "--users",
        type=int,
        default=None,
        help="evaluate only the first N users of the file (default: all)",
    )
    p.add_argument("--out", default=str(OUT_PATH), help="results JSON path")
    config.add_log_level_arg(p)
    args = p.parse_args(argv)
    config.apply_log_level(args)
    if args.users is not None and args.users < 1:
        print("error: --users must be >= 1", file=sys.stderr)
        return 2
    try:
        run(args.answers, args.users, args.out, results=args.results, results_dir=args.results_dir)
    except NoAnswers as e:
        print(f"error: n/a: {e}", file=sys.stderr)
        return 2
    except ChooseRun as e:
        print(f"error: {e}: choose one with --results", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
