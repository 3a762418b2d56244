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
candidate set, condition, shuffle, repeat, arm, the candidate ids in their original order, the
order shown, the context, how it was decoded, an id of its requests, the raw answer, the parsed
ranking and its repair counts; the free arm's also its first product's name, its reason and
the user's training-row facts) and reports, without any LLM call:

- hallucination, on the listwise answers produced without the id grammar (Claude's, and the
  free arm's of any backend): answers with ids outside the candidates, and a first product's
  name that no candidate has (invented) or that is not the first id's; n/a where every answer
  was held to the candidate ids (0 by construction);
- repairs per 100 answers: unknown ids dropped, duplicates removed, missing ids appended, and
  failures (more than half the ids missing: not a ranking);
- reasoning alignment, over the answers that give a reason (only those): the share whose
  reason cites a fact true of the user (a product, aisle or department of their training
  rows) or of the context, matched at token boundaries, beside the same share against another
  user's facts (chance);
- the noise floor: agreement between an answer and the same prompts asked again with sampling
  (temperature > 0, another seed; a separate request, never the cached first answer read
  back: such a repeat, or one not sampled, is left out and counted);
- position bias: Kendall tau between the order shown and the answer (1 = the model echoed
  the list) and the agreement between shuffles of the same prompt;
- context sensitivity: agreement (RBO, Jaccard@10, Kendall tau) between the no-context and
  each context condition on the same shuffle, to be read against the noise floor.

A metric the run cannot measure is n/a with the reason ("not_measured"), never 0.

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
import prompts as P
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
# Evaluations over saved answers. A metric that a run cannot measure is None, with the reason
# in "not_measured" (printed as n/a), never 0.

# words no fact is told by: a reason's glue, and Instacart's placeholder aisle names
STOP_WORDS = {"and", "the", "for", "with", "from", "this", "that", "they", "their", "them"}
STOP_WORDS |= {"have", "will", "next", "other", "missing", "unknown", "aisle", "department"}
# the words of the context sentences' frame (not facts): those of prompts.py's sentences
CONTEXT_FRAME = {
    w
    for t in (P.time_context(0, 0), P.occasion_context(""), P.PLACEBO_TEXT)
    for w in re.findall(r"[a-z]+", t.lower())
}


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


def fact_words(user_facts: dict | None, context: str = "") -> set[str]:
    """What is true of a user or of their order's context, as the words a reason may cite:
    the words of 4+ letters of the products they bought in training rows, those of 3+ letters
    of their aisles and departments (user_facts, written by llm_reranker.py from training
    rows; STOP_WORDS out), the context's words of 4+ letters outside its sentence frame, and
    its times ('14:00')."""
    facts = user_facts or {}
    words = {
        w
        for texts, shortest in (
            (facts.get("products", []), 4),
            ([*facts.get("aisles", []), *facts.get("departments", [])], 3),
        )
        for t in texts
        for w in _tokens(t)
        if len(w) >= shortest and w not in STOP_WORDS
    }
    words |= {w for w in _tokens(context) if len(w) >= 4 and w not in CONTEXT_FRAME}
    return words | set(re.findall(r"\b\d{1,2}:\d{2}\b", context))


def reason_of(rec: dict) -> str | None:
    """The answer's one-line reason, or None when it gave none (missing or blank)."""
    reason = rec.get("reason")
    return reason.strip() if isinstance(reason, str) and reason.strip() else None


def reasoning_alignment(recs: list[dict]) -> tuple[dict, str | None]:
    """How many reasons cite a fact that is true of the user (training rows) or of the
    context, over the answers that carry a reason only (an answer without one is no evidence
    either way); beside it the same share against another user's facts and context (the
    next user of the file: what a reason scores by chance). Returns the figures and the
    reason they are n/a (None when measured)."""
    asked = [r for r in recs if "reason" in r]  # the arm that asks for a reason
    given = [r for r in asked if reason_of(r)]
    out = {
        "answers_asked": len(asked),
        "answers_with_reason": len(given),
        "share_citing_a_true_fact": None,
        "share_citing_another_users_fact": None,
    }
    if not given:
        why = (
            "no answer asks for a reason (the free listwise arm did not run: --free-users 0)"
            if not asked
            else f"none of the {len(asked)} answers that were asked for a reason gave one"
        )
        return out, why
    facts = {r["user"]: (r.get("user_facts"), r.get("context") or "") for r in given}
    users = sorted(facts)
    other = {u: facts[users[(i + 1) % len(users)]] for i, u in enumerate(users)}
    cites = lambda r, f: names_attribute(reason_of(r), fact_words(*f))
    out["share_citing_a_true_fact"] = _mean([cites(r, facts[r["user"]]) for r in given])
    if len(users) > 1:
        out["share_citing_another_users_fact"] = _mean([cites(r, other[r["user"]]) for r in given])
    return out, None


def hallucination(recs: list[dict]) -> tuple[dict, str | None]:
    """Hallucination on the listwise answers produced without the id grammar (id_grammar
    false: Claude's, and the free arm's of any backend): answers with ids outside the
    candidates, such ids per 100 answers, and (free arm) a first product's name that is no
    candidate's (invented) or not the name of the id ranked first. Where every answer was
    held to the candidates' ids (pointwise scores, a local model's grammar), n/a: 0 by
    construction. Returns the figures and the reason they are n/a (None when measured)."""
    free = [
        r for r in recs if r.get("mode", "listwise") == "listwise" and r.get("id_grammar") is False
    ]
    named = [r for r in free if "top_product" in r]
    n, m = len(free), len(named)
    pct = lambda k, rs: round(100 * k / len(rs), 2) if rs else None
    out = {
        "answers": n,
        "answers_with_unknown_ids_pct": pct(
            sum(r["repairs"].get("unknown", 0) > 0 for r in free), free
        ),
        "unknown_ids_per_100_answers": pct(sum(r["repairs"].get("unknown", 0) for r in free), free),
        "answers_naming_a_first_product": m,
        "invented_product_names_pct": pct(sum(_invented(r) for r in named), named),
        "first_name_not_the_first_id_pct": pct(sum(_misnamed(r) for r in named), named),
    }
    if n:
        return out, None
    return out, (
        "every answer's ids were held to the candidates (pointwise scores, or listwise ids "
        "constrained by the local model's grammar): 0 by construction; the free listwise arm "
        "(--free-users) answers without the grammar"
    )


def _name(x) -> str:
    """A product name as compared: lower case, one space, without a leading '[id]' or a
    trailing '(aisle)' (the way the prompt's candidate lines write it)."""
    x = re.sub(r"^\[\d+\]\s*|\s*\([^()]*\)$", "", " ".join(str(x or "").lower().split()))
    return x.strip()


def _named_candidate(rec: dict) -> int | None:
    """The position among the candidates of the answer's first product (its name, or its
    id written as the name); None when it names no candidate: an invented product."""
    top = _name(rec.get("top_product"))
    names = [_name(n) for n in rec.get("names") or []]
    if top in names:
        return names.index(top)
    ids = [str(c) for c in rec.get("candidates") or []]
    return ids.index(top) if top in ids else None


def _invented(rec: dict) -> bool:
    """The answer's first product is no candidate."""
    return _named_candidate(rec) is None


def _misnamed(rec: dict) -> bool:
    """The first product is a candidate, but not the one the answer ranked first (its first
    id among the candidates)."""
    j = _named_candidate(rec)
    ids = [x for x in _ranking_ids(rec) if x in rec["candidates"]]
    return j is not None and bool(ids) and rec["candidates"][j] != ids[0]


def _ranking_ids(rec: dict) -> list:
    """The ids of the raw answer's ranking, as the model wrote them (before any repair)."""
    try:
        data = json.loads(rec.get("raw") or "")
    except (json.JSONDecodeError, TypeError):
        return []
    ranking = data.get("ranking") if isinstance(data, dict) else None
    return [x for x in ranking if isinstance(x, int)] if isinstance(ranking, list) else []


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and np.isnan(x))]
    return float(np.mean(xs)) if xs else None


def _agree_mean(pairs) -> dict:
    ags = [agreement(a, b) for a, b in pairs]
    return {m: _mean([g[m] for g in ags]) for m in ("rbo", "jaccard@10", "tau")} | {
        "pairs": len(ags)
    }


def evaluate_answers(recs: list[dict]) -> dict:
    """Every evaluation over answer records, per (candidate set, mode, arm) and overall;
    what a run cannot measure is None, its reason in "not_measured"."""
    listwise = [
        r for r in recs if r.get("mode", "listwise") == "listwise" and r.get("arm") != "free"
    ]
    n = len(listwise)
    out: dict = {
        "answers": len(recs),
        "listwise_answers": n,
        "users": len({r["user"] for r in recs}),
        "models": sorted({r.get("model", "?") for r in recs}),
        "not_measured": {},
    }
    per100 = lambda k: (
        round(100 * sum(int(r["repairs"].get(k, 0) > 0) for r in listwise) / n, 2) if n else None
    )
    out["hallucination"], why = hallucination(recs)
    if why:
        out["not_measured"]["hallucination"] = why
    out["repairs_per_100_answers"] = {k: per100(k) for k in ("unknown", "duplicate", "missing")} | {
        "failed": round(100 * sum(bool(r["repairs"].get("failed")) for r in listwise) / n, 2)
        if n
        else None,
        "llm_error": round(100 * sum(bool(r.get("error")) for r in listwise) / n, 2) if n else None,
    }
    if not n:
        out["not_measured"]["repairs_per_100_answers"] = (
            "no listwise answer of the ranking arms (a pointwise run; the free arm's are under "
            "hallucination)"
        )
    out["reasoning_alignment"], why = reasoning_alignment(recs)
    if why:
        out["not_measured"]["reasoning_alignment"] = why
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
    out["per_set"], out["noise_floor"] = agreement_per_set(recs)
    if not out["noise_floor"]["pairs"]:
        repeats = sum(bool(r.get("repeat")) for r in recs)
        out["not_measured"]["noise_floor"] = noise_floor_na(out["noise_floor"], repeats)
    return out


def noise_floor_na(nf: dict, repeats: int) -> str:
    """Why no noise floor was measured: no repeat, only repeats that cannot differ, or no
    pair of usable rankings."""
    if nf["cached_repeats"]:
        return (
            f"{nf['cached_repeats']} repeat(s) are the cached first answer (same requests): "
            "agreement 1 by construction, not a noise floor"
        )
    if nf["unsampled_repeats"]:
        return f"{nf['unsampled_repeats']} repeat(s) were not sampled (temperature 0): not noise"
    if repeats:
        return f"{repeats} repeat(s), but no pair of usable rankings (failed answers)"
    return (
        "no answer was asked again with sampling in this run (a local pointwise run has none: "
        "sampling does not change P(yes); its free arm's repeat is the model's)"
    )


def set_key(r: dict) -> str:
    """The group of an answer: candidate set, mode and (the free arm) arm."""
    arm = ", free arm" if r.get("arm") == "free" else ""
    return f"{r['set']} ({r.get('mode', 'listwise')}{arm})"


def is_noise_pair(first: dict, repeat: dict) -> str:
    """'ok' when `repeat` is a sampled asking again of `first`'s prompts (sampled, other
    requests than the first answer's: never the cached first answer read back), else why not:
    'cached' or 'unsampled'."""
    if repeat.get("key") is None or repeat.get("key") == first.get("key"):
        return "cached"
    return "ok" if repeat.get("sampled") else "unsampled"


def agreement_per_set(recs: list[dict]) -> tuple[dict, dict]:
    """Per (candidate set, mode, arm): how far the answer echoes the shown order (Kendall
    tau), the shuffle agreement (two shuffles of one condition), the noise floor (an answer
    against the same prompts asked again with sampling: is_noise_pair) and each context's
    shift against the no-context answer on the same shuffle. Returns the blocks and the noise
    floor over every set (its pairs, and the repeats left out as cached or unsampled)."""
    # every answer with a ranking (pointwise ones have one shuffle)
    by_key: dict = {}
    for r in recs:
        if r.get("parsed"):
            # a repeat (the same prompt asked again) is its own slot beside the shuffles
            by_key.setdefault((set_key(r), r["condition"], r["user"]), {})[
                (r["shuffle"], r.get("repeat", 0))
            ] = r
    sets = sorted({k[0] for k in by_key})
    per_set, all_pairs, left_out = {}, [], {"cached": 0, "unsampled": 0}
    for s in sets:
        conds = sorted({k[1] for k in by_key if k[0] == s})
        users = sorted({k[2] for k in by_key if k[0] == s})
        block = {"echo_tau": {}, "shuffle_agreement": {}, "noise_floor": {}, "shift_vs_none": {}}
        for c in conds:
            groups = [g for u in users if (g := by_key.get((s, c, u)))]
            shown = [(r["shown"], r["parsed"]) for g in groups for r in g.values()]
            block["echo_tau"][c] = _mean([kendall_tau(a, b) for a, b in shown])
            firsts = lambda g: sorted(k for k in g if k[1] == 0)
            block["shuffle_agreement"][c] = _agree_mean(
                (g[x]["parsed"], g[y]["parsed"])
                for g in groups
                for x, y in combinations(firsts(g), 2)
            )
            pairs = []
            for g in groups:
                for (sh, rep), r in g.items():
                    if rep and (sh, 0) in g:
                        why = is_noise_pair(g[(sh, 0)], r)
                        if why == "ok":
                            pairs.append((g[(sh, 0)]["parsed"], r["parsed"]))
                        else:
                            left_out[why] += 1
            block["noise_floor"][c] = _agree_mean(pairs)
            all_pairs += pairs
            if c != NO_CONTEXT:
                pairs = [
                    (g0[sh]["parsed"], g[sh]["parsed"])
                    for u in users
                    if (g0 := by_key.get((s, NO_CONTEXT, u))) and (g := by_key.get((s, c, u)))
                    for sh in sorted(set(g0) & set(g))
                ]
                block["shift_vs_none"][c] = _agree_mean(pairs)
        per_set[s] = block
    floor = _agree_mean(all_pairs) | {
        "cached_repeats": left_out["cached"],
        "unsampled_repeats": left_out["unsampled"],
    }
    return per_set, floor


def format_report(res: dict) -> str:
    """The printed table of evaluate_answers(): n/a with the reason where a metric was not
    measured."""
    f = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    na = res.get("not_measured") or {}
    line = lambda name, d: (
        f"{name}: n/a ({na[name]})"
        if name in na
        else f"{name}: " + ", ".join(f"{k} {f(v)}" for k, v in d.items())
    )
    lines = [
        run_line(res),
        (
            f"reranker answers: {res['answers']} ({res['listwise_answers']} listwise) from "
            f"{res['users']} users, model(s) {', '.join(res['models'])}"
        ),
        line("hallucination", res["hallucination"]),
        line("repairs_per_100_answers", res["repairs_per_100_answers"]),
        line("reasoning_alignment", res["reasoning_alignment"]),
        line("noise_floor", res["noise_floor"]),
    ]
    if "pointwise" in res:
        lines.append("pointwise: " + ", ".join(f"{k} {f(v)}" for k, v in res["pointwise"].items()))
    cell = lambda a: (
        "-"
        if not a or not a["pairs"]
        else f"{f(a['rbo'])} / {f(a['jaccard@10'])} / {f(a['tau'])}; {a['pairs']}"
    )
    for s, b in res["per_set"].items():
        lines.append(f"\ncandidate set {s}: agreement (RBO / Jaccard@10 / tau; pairs)")
        lines.append(
            f"  {'condition':<12}{'echo tau':>9}  {'noise floor (sampled)':>26}"
            f"  {'shuffles':>26}  {'shift vs no context':>26}"
        )
        for c in b["echo_tau"]:
            lines.append(
                f"  {c:<12}{f(b['echo_tau'][c]):>9}  {cell(b['noise_floor'][c]):>26}"
                f"  {cell(b['shuffle_agreement'][c]):>26}"
                f"  {cell(b['shift_vs_none'].get(c)):>26}"
            )
    lines.append(
        "(echo tau: order shown vs answer, 1 = the list echoed; noise floor: an answer against "
        "the same prompts asked again with sampling; a context shift is real only where it "
        "is well below the noise floor's agreement)"
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
