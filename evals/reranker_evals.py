"""Evaluations of saved LLM reranker answers (experiment 3, llm_reranker.py).

    uv run python -m evals.reranker_evals                        # newest answers file in results/
    uv run python -m evals.reranker_evals \
        --answers results/llm_reranker_answers_generated_temporal.jsonl
    uv run python -m evals.reranker_evals --users 10             # the first 10 users only

Reads the JSONL that llm_reranker.py writes (one line per answer: user, candidate set,
condition, shuffle, the candidate ids in their original order, the order shown, the context,
the raw answer, the parsed ranking and its repair counts) and reports, without any LLM call:

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
`evals/run_evals.py --reranker --reranker-users N` calls `run(users=N)`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

from common import agreement, jaccard_at, kendall_tau, rbo  # noqa: F401 (re-exported)
from llm import Repair, repair_permutation  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"  # where llm_reranker.py writes answers
OUT_PATH = Path(__file__).resolve().parent / "results" / "reranker_evals.json"
ANSWERS_GLOB = "llm_reranker_answers_*.jsonl"
NO_CONTEXT = "none"  # the condition every context condition is compared with


# ---------------------------------------------------------------------------------------------
# Evaluations over saved answers


def load_answers(path: str | Path, users: int | None = None) -> list[dict]:
    """The records of one answers file; with `users`, those of its first N users only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no reranker answers at {path} (run llm_reranker.py with an LLM first)"
        )
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if users is not None:
        keep = list(dict.fromkeys(r["user"] for r in recs))[:users]
        recs = [r for r in recs if r["user"] in set(keep)]
    return recs


def latest_answers(results_dir: Path = RESULTS_DIR) -> Path:
    files = sorted(Path(results_dir).glob(ANSWERS_GLOB), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(
            f"no {ANSWERS_GLOB} in {results_dir} (run llm_reranker.py with an LLM first)"
        )
    return files[-1]


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
        (
            f"reranker answers: {res['answers']} ({res['listwise_answers']} listwise) from "
            f"{res['users']} users, model(s) {', '.join(res['models'])}"
        )
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
) -> dict:
    """Evaluate an answers file (default: the newest in results/); write JSON, print table.

    The entry point for evals/run_evals.py --reranker --reranker-users N."""
    path = Path(answers) if answers else latest_answers()
    res = {
        "answers_file": path.name,
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--answers",
        default=None,
        help=f"answers JSONL from llm_reranker.py (default: newest {ANSWERS_GLOB} in results/)",
    )
    p.add_argument(
        "--users",
        type=int,
        default=None,
        help="evaluate only the first N users of the file (default: all)",
    )
    p.add_argument("--out", default=str(OUT_PATH), help="results JSON path")
    args = p.parse_args(argv)
    if args.users is not None and args.users < 1:
        print("error: --users must be >= 1", file=sys.stderr)
        return 2
    try:
        run(args.answers, args.users, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
