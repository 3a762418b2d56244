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

The experiments share the description helpers below (`description_request`,
`description_text`, `describe_items`, `cached_descriptions`, `description_stats`): one home
for "the LLM description of an item".
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python evals/description_evals.py` as well as `-m`
    sys.path.insert(0, str(ROOT))

import common as C
import llm
from evals.prompt_registry import TEMPLATES

RESULTS_PATH = ROOT / "evals" / "results" / "description_evals.json"
TEMPLATE = "item_description"
STOP = frozenset(
    (  # words that say nothing about the product
        "a",
        "also",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "for",
        "from",
        "good",
        "great",
        "has",
        "have",
        "ideal",
        "in",
        "into",
        "is",
        "it",
        "it's",
        "its",
        "of",
        "often",
        "on",
        "or",
        "perfect",
        "that",
        "the",
        "their",
        "them",
        "these",
        "they",
        "this",
        "those",
        "to",
        "typically",
        "use",
        "used",
        "uses",
        "using",
        "with",
        "you",
        "your",
    )
)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PROMPT = re.compile(r"Product: (?P<name>.*)\nAisle: (?P<aisle>.*)\nDepartment: (?P<dept>.*)\n")
# words of a department name that are specific enough to flag another department's product
DEPT_FLAG_WORDS = {
    "frozen": {"frozen"},
    "alcohol": {"alcohol", "alcoholic"},
    "pets": {"pet", "pets", "dog", "cat"},
    "babies": {"baby", "babies", "infant"},
    "personal care": {"shampoo", "deodorant", "toothpaste"},
    "household": {"detergent", "cleaning", "cleaner"},
}


# ---------------------------------------------------------------------------------------------
# The description of an item: request, text, bulk generation, cache lookup


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; matching on these is matching on token boundaries."""
    return _TOKEN.findall(text.lower())


def description_request(name: str, aisle: str, department: str) -> llm.Request:
    """The `item_description` request of one product (the cache key follows from it)."""
    return TEMPLATES[TEMPLATE].request(product_name=name, aisle=aisle, department=department)


def description_text(data: dict) -> str:
    """One embeddable text from an `item_description` answer: the sentence(s), then the
    attributes and the occasions."""
    parts = [str(data.get("description", "")).strip()]
    for key in ("attributes", "occasions"):
        vals = [str(v).strip() for v in data.get(key) or [] if str(v).strip()]
        if vals:
            parts.append(", ".join(vals) + ".")
    return " ".join(p for p in parts if p)


def item_fields(ds: C.Dataset, items: np.ndarray) -> list[tuple[str, str, str]]:
    """(name, aisle, department) of item indices, as the prompt shows them."""
    it = ds.items
    name = it["product_name"].fillna("unknown product").to_numpy()
    aisle = it["aisle"].fillna("unknown aisle").to_numpy()
    dept = it["department"].fillna("unknown department").to_numpy()
    return [(str(name[i]), str(aisle[i]), str(dept[i])) for i in items]


def describe_items(
    ds: C.Dataset, items: np.ndarray, client, progress: bool = True, cached_only: bool = False
) -> tuple[dict, dict]:
    """{item: description text} for `items` through `client` (Claude: Message Batches; local:
    parallel with progress + ETA); cached answers cost nothing. cached_only: look up the
    cache and send nothing. Returns (texts, info): info has counts, tokens, seconds."""
    reqs = [description_request(*f) for f in item_fields(ds, items)]
    t0 = time.perf_counter()
    if cached_only:
        results = [client.cache.get(llm.cache_key(client.identity, r)) for r in reqs]
    else:
        before = client.usage_report()
        results = client.run_batch(reqs)
    texts, n_in, n_out = {}, 0, 0
    for i, res in zip(items, results):
        if res is not None and res.ok and isinstance(res.data, dict):
            texts[int(i)] = description_text(res.data)
            n_in, n_out = n_in + res.input_tokens, n_out + res.output_tokens
    info = {
        "items": len(items),
        "described": len(texts),
        "input_tokens": n_in,
        "output_tokens": n_out,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if not cached_only:
        after = client.usage_report()
        info["generated"] = (
            (after["api_calls"] - before["api_calls"])
            if client.backend == "local"
            else (
                after["batch_requests"]
                - before["batch_requests"]
                + after["api_calls"]
                - before["api_calls"]
            )
        )
        info["failed"] = after["failed"] - before["failed"]
    return texts, info


def cached_descriptions(cache_path: str | Path | None = None) -> list[dict]:
    """Every cached `item_description` answer: model, version, name, aisle, department, text.
    Read straight from the SQLite cache (read-only; no API call, no model load)."""
    path = Path(cache_path or llm.default_cache_path())
    if not path.is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT model, version, prompt, data FROM responses WHERE template=?", (TEMPLATE,)
        ).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        db.close()
    out = []
    for model, version, prompt, data in rows:
        m = _PROMPT.search(prompt or "")
        if m is None or not data:
            continue
        out.append(
            {
                "model": model_name(model),
                "version": version,
                "name": m["name"],
                "aisle": m["aisle"],
                "department": m["dept"],
                "text": description_text(json.loads(data)),
            }
        )
    return out


def model_name(identity: str) -> str:
    """'local:<sha256>' -> 'local <model name>'; 'claude:<id>' as it is."""
    kind, _, rest = identity.partition(":")
    if kind == "local":
        for name, spec in llm.LOCAL_MODELS.items():
            if spec["sha256"] == rest:
                return f"local {name}"
        return f"local {rest[:12]}"
    return f"{kind} {rest}"


# ---------------------------------------------------------------------------------------------
# Measures (model-free)


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in STOP and not w.isdigit()]


def grounded(text_tokens: set, aisle: str, department: str) -> bool:
    """Does the description mention the true aisle or department (the whole name or one of
    its content words), on token boundaries?"""
    words = set(_content(tokens(aisle))) | set(_content(tokens(department)))
    return bool(words & text_tokens)


def contradiction(text_tokens: set, name: str, department: str) -> str | None:
    """The first contradiction flag of a description, or None: 'organic' claimed for a
    product whose name does not say organic; a flag word of another department while the
    product's own department words are absent."""
    name_tokens = set(tokens(name))
    if "organic" in text_tokens and "organic" not in name_tokens:
        return "organic"
    own = set(tokens(department)) | name_tokens
    for dept, flags in DEPT_FLAG_WORDS.items():
        if dept != department.lower() and (text_tokens & flags) - own:
            return f"department:{dept}"
    return None


def distinct_n(docs: list[list[str]], n: int) -> float:
    grams = [tuple(d[i : i + n]) for d in docs for i in range(len(d) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def description_stats(
    texts: list[str], names: list[str], aisles: list[str], departments: list[str]
) -> dict:
    """The model-free measures over parallel lists (one entry per product)."""
    if not texts:
        return {"n": 0}
    docs = [tokens(t) for t in texts]
    sets = [set(d) for d in docs]
    novel = []
    for d, n, a, dp in zip(docs, names, aisles, departments):
        c = _content(d)
        known = set(tokens(n)) | set(tokens(a)) | set(tokens(dp))
        novel.append(np.mean([w not in known for w in c]) if c else 0.0)
    flags = [contradiction(s, n, dp) for s, n, dp in zip(sets, names, departments)]
    counts = Counter(texts)
    return {
        "n": len(texts),
        "words": float(np.mean([len(d) for d in docs])),
        "distinct_tokens": float(np.mean([len(s) for s in sets])),
        "distinct_1": distinct_n(docs, 1),
        "distinct_2": distinct_n(docs, 2),
        "ttr": float(np.mean([len(s) / len(d) if d else 0.0 for s, d in zip(sets, docs)])),
        "grounded": float(
            np.mean([grounded(s, a, dp) for s, a, dp in zip(sets, aisles, departments)])
        ),
        "novel_word_share": float(np.mean(novel)),
        "contradiction": float(np.mean([f is not None for f in flags])),
        "contradiction_kinds": dict(Counter(f.split(":")[0] for f in flags if f)),
        "duplicates": float(np.mean([counts[t] > 1 for t in texts])),
    }


def template_similarity(texts: list[str], templates: list[str], progress: bool = False) -> float:
    """Mean cosine between each description and its product's template text (MiniLM)."""
    if not texts:
        return float("nan")
    a = C.embed_texts(texts, progress=progress)
    b = C.embed_texts(templates, progress=progress)
    return float(np.mean(np.sum(a * b, axis=1)))


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
        path = C.write_results(out, {**report, "provenance": C.provenance()})
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
    return C.format_table(rows, cols, fmt=fmt, first="backend/model (prompt version)")


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
    args = p.parse_args(argv)
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
    C.main_guard(main)
