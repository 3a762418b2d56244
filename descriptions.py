"""The LLM description of an item: one home shared by the experiments and the evals.

An item's description comes from the registry prompt `item_description` through llm/, so
it is cached by model identity + prompt version + prompt text (which the product fixes): a
rerun, or a second experiment, reuses every answer. Also here: the model-free description
statistics (words, distinct tokens, grounding in the true aisle / department, novel words,
contradiction flags, duplicates), matched on token boundaries, which experiment 1 reports
and evals/description_evals.py tabulates per model.

    texts, info = descriptions.describe_items(ds, items, client)   # {item: text}, cost
    rows = descriptions.cached_descriptions()                       # every cached answer
    stats = descriptions.description_stats(texts, names, aisles, departments)
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

import common as C
import llm
import text as T
from prompts import TEMPLATES  # the one home of prompt text (a leaf module)

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
    Read from the LLM cache through llm.Cache (read-only; no API call, no model load)."""
    out = []
    for row in llm.Cache.cached_answers(TEMPLATE, cache_path):
        m = _PROMPT.search(row["prompt"] or "")
        if m is None or row["data"] is None:
            continue
        out.append(
            {
                "model": model_name(row["model"]),
                "version": row["version"],
                "name": m["name"],
                "aisle": m["aisle"],
                "department": m["dept"],
                "text": description_text(row["data"]),
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
        "vocabulary": len(set().union(*sets)),  # distinct words over all the texts
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
    a = T.embed_texts(texts, progress=progress)
    b = T.embed_texts(templates, progress=progress)
    return float(np.mean(np.sum(a * b, axis=1)))
