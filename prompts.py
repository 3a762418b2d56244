"""Prompt registry: every prompt template the experiments send, defined once, here.

Experiment scripts import a template from TEMPLATES and turn it into an `llm.Request` with
`TEMPLATES[name].request(**fields)`; nobody keeps a hand-written copy of a prompt.

A template's version is the short sha256 of everything that decides what the model sees and
what counts as a valid answer (system prompt, template text, JSON schema). It is computed from
the code, never stored by hand, so reverting a prompt gives back its old version. The file
prompt_versions.json keeps the history: name -> [{version, first_seen}], and a test
checks that it lists every current version.

    uv run python prompts.py            # show versions; exit 1 if the file is stale
    uv run python prompts.py --update   # record new versions in the file
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import llm
import sample_generator

VERSIONS_PATH = Path(__file__).resolve().parent / "prompt_versions.json"


@dataclass(frozen=True)
class Template:
    """One prompt: `text` is a str.format template; `{schema}` is filled with the JSON schema."""

    name: str
    text: str
    system: str = ""
    schema: dict | None = field(default=None, hash=False)
    max_tokens: int = 512
    # A check after the schema (a name in llm.VALIDATORS); "permutation" takes the candidate
    # ids from the `candidates` field ("[id] ..." lines, as format_candidates writes them).
    validator: str | None = None
    # May a truncated answer be accepted with its cut-off list closed? Never for rankings.
    repair_truncated: bool = False

    @property
    def version(self) -> str:
        """Short sha256 of system prompt + text + schema: the same text always gives the same id."""
        blob = json.dumps([self.system, self.text, self.schema], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def fields(self) -> set[str]:
        """Placeholders the caller must fill (`schema` is filled by the registry)."""
        names = {f for _, f, _, _ in string.Formatter().parse(self.text) if f}
        return names - {"schema"}

    def render(self, **values) -> str:
        """The exact user prompt text; a missing or unknown field is a one-line error."""
        missing, extra = self.fields - values.keys(), values.keys() - self.fields
        if missing or extra:
            raise ValueError(
                f"prompt {self.name}: missing fields {sorted(missing)}, "
                f"unknown fields {sorted(extra)}"
            )
        schema = json.dumps(self.schema, separators=(",", ":")) if self.schema else ""
        return self.text.format(schema=schema, **values)

    def request(self, *, max_tokens: int | None = None, **values) -> llm.Request:
        """The rendered prompt as an llm.Request that carries this template's name and version."""
        ids = None
        if self.validator == "permutation":
            ids = tuple(
                int(i)
                for i in re.findall(r"^\[(\d+)\]", str(values.get("candidates", "")), re.MULTILINE)
            )
        return llm.Request(
            prompt=self.render(**values),
            system=self.system,
            template=self.name,
            version=self.version,
            schema=self.schema,
            max_tokens=max_tokens or self.max_tokens,
            validator=self.validator,
            ids=ids,
            repair_truncated=self.repair_truncated,
        )


# ---------------------------------------------------------------------------------------------
# The reranker's pieces of text (experiment 3, llm_reranker.py): the candidate lines, the
# shopper's recent orders, the purchase facts of the fair arm and the context line. Every
# condition of a user (no context, context, placebo, random occasion, facts + context) fills
# the same template with the same shopper facts; they differ only in the context line (and,
# in the facts arm, the candidate lines).


def format_candidate(name: str, aisle: str, facts: str | None = None) -> str:
    """One candidate as the pointwise prompt shows it: 'name (aisle)', then its purchase
    facts (purchase_facts) in the facts arm."""
    return f"{name} ({aisle})" + (f"; {facts}" if facts else "")


def format_candidates(candidates, facts=None) -> str:
    """Numbered candidate list for the listwise prompts: one '[id] name (aisle)' line each,
    with the candidate's purchase facts after it when `facts` (one string per candidate)."""
    facts = facts or [None] * len(candidates)
    return "\n".join(
        f"[{pid}] {format_candidate(name, aisle, f)}"
        for (pid, name, aisle), f in zip(candidates, facts)
    )


def format_recent_orders(orders) -> str:
    """The shopper's recent orders, one '- order N: a, b, c (+k more)' line each, from
    (order number, [item names], k) tuples, most recent first."""
    lines = [
        f"- order {num}: " + ", ".join(names) + (f" (+{more} more)" if more else "")
        for num, names, more in orders
    ]
    return "\n".join(lines) or "- none"


def purchase_facts(times: int, orders: int, days_before_latest: float | None) -> str:
    """What the facts arm adds to a candidate: the facts LightGBM ranks it on (training rows
    only): in how many of the shopper's orders it was, that share, and how many days before
    their latest order they last bought it."""
    if not times:
        return "never bought by this shopper"
    last = (
        ""
        if days_before_latest is None
        else ", last in their latest order"
        if days_before_latest == 0
        else f", last {days_before_latest:.0f} days before their latest order"
    )
    return f"bought in {times} of their {orders} orders ({times / max(orders, 1):.0%}){last}"


PLACEBO_TEXT = (
    "This order is placed through the usual app in the usual way, like any other "
    "ordinary order on an ordinary day. "
)


def time_context(dow: int, hour: int) -> str:
    """The context of a real order: when it is placed (Instacart's day-of-week code, whose
    weekday the data does not name, and the hour)."""
    return f"the order is placed on day-of-week code {dow}, around {hour:02d}:00."


def occasion_context(occasion: str) -> str:
    """The context of a generated order: its occasion, as the shopper would state it."""
    return f"the shopper says this order is for: {occasion.replace('_', ' ')}."


def placebo_context(n: int) -> str:
    """A neutral sentence of n characters (the placebo of a context of that length)."""
    s = (PLACEBO_TEXT * (n // len(PLACEBO_TEXT) + 1))[: max(n - 1, 0)]
    return s + "." if n else ""


def context_line(text: str) -> str:
    """The one line in which the conditions of a reranker prompt differ: empty without a
    context, else 'Next order context: <text>' and a blank line."""
    return f"Next order context: {text}\n\n" if text else ""


# ---------------------------------------------------------------------------------------------
# The templates. Structured prompts show the schema (most end with it) so the model sees the
# exact contract that llm/ validates against.

_JSON_TAIL = "Reply with only a JSON object that matches this JSON Schema:\n{schema}"

ITEM_DESCRIPTION = Template(
    name="item_description",
    system=(
        "You are a grocery catalogue copywriter. You describe products factually and "
        "concisely for a recommender system. You answer with JSON only."
    ),
    text=(
        "Describe this grocery product for a recommendation system.\n\n"
        "Product: {product_name}\nAisle: {aisle}\nDepartment: {department}\n\n"
        "Write one or two plain sentences on what the product is and how it is typically "
        "used. List 3-8 short attributes (flavour, diet, form, format, price tier) and 1-5 "
        "occasions or uses (breakfast, baking, lunchbox, party). Do not invent brand facts "
        "you are unsure of.\n\n" + _JSON_TAIL
    ),
    schema={
        "type": "object",
        "properties": {
            "description": {"type": "string", "minLength": 1},
            "attributes": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
            "occasions": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        },
        "required": ["description", "attributes", "occasions"],
        "additionalProperties": False,
    },
    max_tokens=300,
    repair_truncated=True,  # a cut-off attributes/occasions list is still a usable answer
)

USER_NARRATION = Template(
    name="user_narration",
    system=(
        "You are an analyst who summarises grocery shoppers' tastes for a recommender "
        "system. You write short, neutral, third-person profiles."
    ),
    text=(
        "Here is a summary of one Instacart shopper's purchase history.\n\n"
        "{purchase_summary}\n\n"
        "In 3-5 sentences, describe this shopper's tastes and habits: the kinds of food they "
        "favour, dietary patterns, how they shop (staples or variety, hints of household "
        "size) and what they may want next. Do not list products verbatim and do not guess "
        "anything about the person's identity."
    ),
    max_tokens=250,
)

# Experiment 2's history arm: the LLM reads the purchase history itself (text.user_history,
# training rows only) instead of paraphrasing the template profile. The instructions come
# first and the history last, so a local model's slot reuses the KV cache of the shared part.
USER_HISTORY_PROFILE = Template(
    name="user_history_profile",
    system=USER_NARRATION.system,
    text=(
        "Below is one Instacart shopper's purchase history: the products they bought most "
        "often, with how many times, and their most recent orders.\n\n"
        "In 3-5 sentences, describe this shopper for a product search engine that will match "
        "your text against product names: the kinds of products and the specific products "
        "they buy again and again, the aisles and departments they shop, dietary patterns, "
        "and what they are likely to buy in their next order. Do not guess anything about "
        "the person's identity.\n\n"
        "Most bought products, as name (aisle): purchases:\n{top_items}\n\n"
        "Recent orders, most recent first:\n{recent_orders}"
    ),
    max_tokens=250,
)

_RANKING_SCHEMA = {
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "integer"}, "minItems": 1}},
    "required": ["ranking"],
}
_RERANK_SYSTEM = (
    "You are a grocery recommendation engine. You rank candidate products by how "
    "likely this shopper is to buy them in their next order. You answer with "
    "JSON only."
)
# What every reranker prompt tells about the shopper (training rows only): the same in every
# condition, so the conditions of one user differ only in the context line.
_SHOPPER = (
    "Shopper profile:\n{user_profile}\n\nRecent orders, most recent first:\n{recent_orders}\n\n"
)
# The listwise prompts: the instruction and the schema first, then the shopper, the context
# line and the candidates (the part that changes most often last: a local model's slot keeps
# the KV cache of the prefix it shares with the previous prompt).
_RANK_ALL = (
    "Rank the {n_candidates} candidate products below from most to least likely to be in "
    "this shopper's next order."
)
_LISTWISE_TAIL = "{order_context}Candidate products:\n{candidates}"


def _listwise(instruction: str) -> str:
    """A listwise reranker text: rank, `instruction`, the schema, the shopper, the context
    line, the candidates."""
    return f"{_RANK_ALL} {instruction}\n\n{_JSON_TAIL}\n\n{_SHOPPER}{_LISTWISE_TAIL}"


RERANKER = Template(
    name="reranker",
    system=_RERANK_SYSTEM,
    text=_listwise("Use every id exactly once."),
    schema=_RANKING_SCHEMA,
    max_tokens=400,
    validator="permutation",
)

# The unconstrained listwise arm of the reranker evals: no id grammar (the caller sends no ids),
# the name of the first product and a one-line reason, so that invented ids and names and the
# reason's facts can be counted.
RERANKER_FREE = Template(
    name="reranker_free",
    system=_RERANK_SYSTEM,
    text=_listwise(
        "Give their ids, then the name of the product you ranked first and, in one line, why "
        "this shopper will buy it."
    ),
    schema={
        "type": "object",
        "properties": {
            "ranking": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "top_product": {"type": "string", "minLength": 1, "maxLength": 120},
            "reason": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "required": ["ranking", "top_product", "reason"],
    },
    max_tokens=500,
)

DESCRIPTION_JUDGE = Template(
    name="description_judge",
    system=(
        "You are a strict evaluator of product descriptions in a grocery catalogue. "
        "You answer with JSON only."
    ),
    text=(
        "Product: {product_name}\nAisle: {aisle}\nDepartment: {department}\n\n"
        "Candidate description:\n{description}\n\n"
        "Score the description from 1 (poor) to 5 (excellent) for faithfulness (no invented "
        "facts), specificity and usefulness for recommending the product. Say whether it is "
        "faithful and give a one-sentence reason.\n\n" + _JSON_TAIL
    ),
    schema={
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "faithful": {"type": "boolean"},
            "reason": {"type": "string"},
        },
        "required": ["score", "faithful", "reason"],
    },
    max_tokens=200,
)

# Order occasions of the generated sample (defined once, by the generator), plus "other".
OCCASIONS = (*sample_generator.OCCASIONS, "other")

OCCASION_LABEL = Template(
    name="occasion_label",
    system=(
        "You label grocery orders with the shopping occasion they serve, for a "
        "recommender system. You answer with JSON only."
    ),
    # The basket comes last: a local model's slot keeps the KV cache of the shared prefix
    # (system, occasions, schema: ~250 of ~375 tokens), so each order evaluates only its items.
    text=(
        "Which occasion does the Instacart order below serve? weekly_restock: a broad "
        "stock-up of staples; weeknight_dinner: ingredients for cooking dinner; "
        "healthy_eating: fresh produce, lean and diet products; party: drinks, snacks and "
        "party food for guests; snacks: mostly snacks and sweets; breakfast: breakfast foods; "
        "household: cleaning, paper and personal care; baby: baby food and care; other: none "
        "of these. Give your confidence from 0 to 1.\n\n" + _JSON_TAIL + "\n\n"
        "Items in the order, as name (aisle):\n{basket}"
    ),
    schema={
        "type": "object",
        "properties": {
            "occasion": {"type": "string", "enum": list(OCCASIONS)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["occasion", "confidence"],
        "additionalProperties": False,
    },
    max_tokens=60,
)

# Pointwise reranking: one yes/no question per candidate, scored with llm.LLM.yes_probability
# (local: logprobs of Yes/No; Claude: a 0-10 score). Always gives a full ordering.
RERANK_POINTWISE = Template(
    name="rerank_pointwise",
    system=(
        "You are a grocery recommendation engine. You judge whether a shopper will buy "
        "a product in their next order. You answer Yes or No."
    ),
    # The shopper and the question first, then the context line, then the candidate: a local
    # model's slot keeps the KV cache of the common prefix, so each of a list's 20 calls
    # evaluates only the candidate's ~15 tokens, and each condition of a user only its context
    # line and the candidates (the shopper's ~200 tokens once per user).
    text=(
        _SHOPPER
        + "Will this shopper buy the product below in their next order? Answer Yes or No.\n\n"
        "{order_context}Product: {candidate}"
    ),
    max_tokens=1,
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        ITEM_DESCRIPTION,
        USER_NARRATION,
        USER_HISTORY_PROFILE,
        RERANKER,
        RERANKER_FREE,
        DESCRIPTION_JUDGE,
        OCCASION_LABEL,
        RERANK_POINTWISE,
    )
}


# ---------------------------------------------------------------------------------------------
# Version history


def current_versions() -> dict[str, str]:
    """name -> version of the templates as the code defines them now."""
    return {name: t.version for name, t in TEMPLATES.items()}


def versions_used(*names: str) -> dict[str, str]:
    """name -> version for the templates an experiment uses, for its results JSON."""
    return {n: TEMPLATES[n].version for n in names}


def load_history(path: Path | None = None) -> dict[str, list[dict]]:
    """The recorded history, name -> [{version, first_seen}]; empty if there is no file yet."""
    path = path or VERSIONS_PATH
    return json.loads(path.read_text()) if path.exists() else {}


def stale(path: Path | None = None) -> list[str]:
    """Names whose current version is not yet in the history file."""
    history = load_history(path)
    return [
        n
        for n, v in current_versions().items()
        if v not in {e["version"] for e in history.get(n, [])}
    ]


def record_versions(path: Path | None = None, today: str | None = None) -> list[str]:
    """Append every unseen current version to the history file; returns the names that changed.

    A reverted prompt hashes to a version already listed, so it adds nothing."""
    path = path or VERSIONS_PATH
    history = load_history(path)
    today = today or dt.date.today().isoformat()
    changed = stale(path)
    for name in changed:
        history.setdefault(name, []).append(
            {"version": TEMPLATES[name].version, "first_seen": today}
        )
    if changed or not path.exists():
        path.write_text(json.dumps(history, indent=2, sort_keys=True) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update", action="store_true", help="record new versions in the file")
    args = p.parse_args(argv)
    if args.update:
        changed = record_versions()
        print(f"recorded {len(changed)} new version(s): {', '.join(changed) or '-'}")
    todo = stale()
    history = load_history()
    for name, version in current_versions().items():
        seen = [e["version"] for e in history.get(name, [])]
        state = "NOT RECORDED" if name in todo else f"{len(seen)} version(s) in history"
        print(f"{name:20s} {version}  {state}")
    if todo:
        print(
            f"{VERSIONS_PATH} is stale; run: uv run python prompts.py --update",
            file=sys.stderr,
        )
    return 1 if todo else 0


if __name__ == "__main__":
    sys.exit(main())
