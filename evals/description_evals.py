"""Model-free quality of the cached LLM item descriptions (prompt `item_description`).

Reads every cached answer of the `item_description` prompt from the LLM cache (SQLite; no API
call, no model load) and measures, per backend/model and prompt version:

    words        mean words per description (description sentence + attributes + occasions)
    distinct-1/2 distinct unigrams / bigrams over all tokens of that model's descriptions
    TTR          mean per-description type/token ratio
    grounded     share mentioning the true aisle or department (the full name, or one of
                 its content words), matched on token boundaries ("tea" never in "steak")
    novel words  mean share of a description's content words not in name/aisle/department
    contradicts  share naming a department word of ANOTHER department and not its own
                 (e.g. "frozen" for a dairy product), or claiming "organic" for a product
                 whose name does not say organic
    sim template mean cosine (MiniLM) between the description and the template text
                 "name. aisle. department." of the same product
    duplicates   share of descriptions whose text is identical to another product's
Optional LLM judge (`--judge N`, prompt `description_judge`): N sampled descriptions per
model are scored 1-5 for faithfulness/specificity; mean score, faithful share and its cost.

The product, aisle and department are read back from each cached prompt, so the evals need
no dataset. `evaluate_descriptions()` is what `evals/run_evals.py --descriptions` calls.

    uv run python -m evals.description_evals                 # cached descriptions, no API call
    uv run python -m evals.description_evals --judge 50 --llm local
Output: a table and evals/results/description_evals.json (git-ignored).

The description helpers and measures themselves live in descriptions.py (shared with the
experiments); this module runs the evaluation over the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python evals/description_evals.py` as well as `-m`
    sys.path.insert(0, str(ROOT))

import common as C
import config
import experiment
import llm
from descriptions import (
    TEMPLATE,
    cached_descriptions,
    description_stats,
    template_similarity,
)
from prompts import TEMPLATES

RESULTS_PATH = ROOT / "evals" / "results" / "description_evals.json"


# ---------------------------------------------------------------------------------------------
# The evaluation run


def judge(rows: list[dict], client, n: int, seed: int = C.RANDOM_SEED) -> dict:
    """LLM judge (prompt `description_judge`) on a seeded sample of n rows: mean score,
    share judged faithful, failures and the judge's cost."""
    rng = np.random.default_rng(seed)
    sample = [rows[j] for j in sorted(rng.choice(len(rows), min(n, len(rows)), replace=False))]
    reqs = [
        TEMPLATES["description_judge"].request(
            product_name=r["name"],
            aisle=r["aisle"],
            department=r["department"],
            description=r["text"],
        )
        for r in sample
    ]
    before = client.usage_report()
    res = client.complete_many(reqs, progress=True)
    after = client.usage_report()
    ok = [r.data for r in res if r.ok and isinstance(r.data, dict)]
    cost = (
        None
        if after["total_cost_usd"] is None
        else round(after["total_cost_usd"] - (before["total_cost_usd"] or 0.0), 6)
    )
    return {
        "judge": client.label,
        "n": len(sample),
        "answered": len(ok),
        "score": float(np.mean([d["score"] for d in ok])) if ok else float("nan"),
        "faithful": float(np.mean([bool(d["faithful"]) for d in ok])) if ok else float("nan"),
        "cost_usd": cost,
        "seconds": round(after["busy_s"] - before["busy_s"], 2),
    }


def evaluate_descriptions(
    cache_path: str | Path | None = None,
    judge_n: int = 0,
    client=None,
    out: str | Path | None = RESULTS_PATH,
    progress: bool = True,
    print_table: bool = True,
) -> dict:
    """Quality of every cached description, per backend/model (+ prompt version). No API call
    unless judge_n > 0 and a client is given. Writes `out` (JSON) unless it is None."""
    rows = cached_descriptions(cache_path)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["version"]), []).append(r)
    report = {
        "cache": str(Path(cache_path or llm.default_cache_path()).name),
        "current_version": TEMPLATES[TEMPLATE].version,
        "models": [],
    }
    for (model, version), g in sorted(groups.items()):
        names = [r["name"] for r in g]
        aisles, depts = [r["aisle"] for r in g], [r["department"] for r in g]
        texts = [r["text"] for r in g]
        stats = description_stats(texts, names, aisles, depts)
        stats["sim_template"] = template_similarity(
            texts, [f"{n}. {a}. {d}." for n, a, d in zip(names, aisles, depts)], progress
        )
        tmpl = description_stats(
            [f"{n}. {a}. {d}." for n, a, d in zip(names, aisles, depts)], names, aisles, depts
        )
        entry = {"model": model, "version": version, **stats, "template_words": tmpl["words"]}
        if judge_n and client is not None:
            entry["judge"] = judge(g, client, judge_n)
        report["models"].append(entry)
    if print_table:
        print(format_report(report))
    if out is not None:
        path = experiment.write_results(out, {**report, "provenance": experiment.provenance()})
        print(f"results: {path}")
    return report


def format_report(report: dict) -> str:
    if not report["models"]:
        return "no cached item descriptions (run llm_item_enrichment.py with an LLM first)"
    rows = {}
    for m in report["models"]:
        name = f"{m['model']} ({m['version'][:6]})"
        rows[name] = {
            "n": m["n"],
            "words": m["words"],
            "tmpl words": m["template_words"],
            "distinct-1": m["distinct_1"],
            "distinct-2": m["distinct_2"],
            "TTR": m["ttr"],
            "grounded": m["grounded"],
            "novel": m["novel_word_share"],
            "contradict": m["contradiction"],
            "sim tmpl": m["sim_template"],
            "dupes": m["duplicates"],
        }
        if "judge" in m:
            rows[name].update(
                {"judge 1-5": m["judge"]["score"], "faithful": m["judge"]["faithful"]}
            )
    cols = list(next(iter(rows.values())).keys())
    fmt = lambda v: f"{v:.0f}" if isinstance(v, int) else f"{v:.3f}"
    return experiment.format_table(rows, cols, fmt=fmt, first="backend/model (prompt version)")


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:22]),
    )
    p.add_argument(
        "--cache",
        default=None,
        help="LLM cache file to read (default $LLM_CACHE_PATH, else data/cache/llm_cache.sqlite)",
    )
    p.add_argument(
        "--judge",
        type=int,
        default=0,
        metavar="N",
        help="also ask the LLM judge (prompt description_judge) about N sampled "
        "descriptions per model; needs --llm (default 0: no LLM call)",
    )
    p.add_argument("--out", default=str(RESULTS_PATH), help="results JSON path")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    llm.add_llm_args(p)
    config.add_log_level_arg(p)
    args = p.parse_args(argv)
    config.apply_log_level(args)
    if args.judge < 0:
        raise C.ConfigError("--judge must be >= 0")
    client = None
    if args.judge:
        client, reason = llm.client_from_args(args)
        print(reason if client else f"LLM judge skipped: {reason}")
    try:
        evaluate_descriptions(args.cache, args.judge, client, args.out, not args.quiet)
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    experiment.main_guard(main)
