"""The verdicts at a glance (one short row per verdict line of every experiment) and the LLM
each step used, read from the results JSONs only; evals/report.py puts them at the top of
REPORT.md.
"""

from __future__ import annotations

import json
import re

from evals.draw import get
from evals.tables import md_table, num

SENTENCE_CHARS = 160  # the longest verdict sentence of the verdicts-at-a-glance table


def usage_dicts(tree) -> list[dict]:
    """Every llm.usage_report() found in a results JSON (any key), each once."""
    found, seen = [], set()

    def walk(x):
        if isinstance(x, dict):
            if "backend" in x and "input_tokens" in x:
                key = json.dumps(x, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    found.append(x)
                return
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(tree)
    return found


def llm_skipped(d: dict) -> str | None:
    """Why the experiment skipped its LLM arms, wherever its JSON says it."""
    note = get(d, "notes", "llm")
    note = (
        note[len("skipped: ") :] if isinstance(note, str) and note.startswith("skipped") else None
    )
    return (
        d.get("llm_skipped") or get(d, "llm", "skipped") or get(d, "llm_labels", "skipped") or note
    )


# ---------------------------------------------------------------------------------------------
# the verdicts at a glance, and the LLM each step used

VERDICT_RE = re.compile(r"^\s*verdict:\s*(\w+)\s*-\s*(.*)$", re.DOTALL)
SMOKE_RE = re.compile(r"^smoke run \(--quick\), not a finding \(would read (\w+)\):\s*")
# the size guard of Experiment.verdict: "N users < 200", "N described items < 500", or both
GUARD_RE = re.compile(r"\s*\[would read '(\w+)', but ([^\]]+?): not a finding\]")
GUARD_USERS_RE = re.compile(r"([\d,]+) users < \d+")


def parse_verdict(line: str) -> dict:
    """A verdict line -> {"status", "text", "would" (the word a smoke run or a too-small LLM
    sample held back, else None), "why" (that reason), "guard_users" (that sample's users)}."""
    m = VERDICT_RE.match(line or "")
    out = {"status": "-", "text": (line or "").strip(), "would": None, "why": None}
    out["guard_users"] = None
    if not m:
        return out
    status, text = m.group(1), m.group(2).strip()
    would = why = users = None
    sm = SMOKE_RE.match(text)
    if sm:
        would, why, text = sm.group(1), "smoke run", text[sm.end() :]
    g = GUARD_RE.search(text)
    if g:
        would = would or g.group(1)
        why = why or g.group(2)
        gu = GUARD_USERS_RE.search(g.group(2))
        users = int(gu.group(1).replace(",", "")) if gu else None
        text = text[: g.start()] + text[g.end() :]
    out.update(status=status, text=text.strip(), would=would, why=why, guard_users=users)
    return out


def first_clause(text: str) -> str:
    """A verdict's headline: the text up to its first '; ' outside brackets, and inside each
    (...) aside only its first clause too."""
    out, depth, skip = [], 0, None  # skip: the depth whose '; ...' rest is being dropped
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if skip is not None and depth < skip:
                skip = None
        elif text.startswith("; ", i) and skip is None:
            if depth == 0:
                break
            skip = depth
        if skip is None:
            out.append(ch)
    return "".join(out)


def without_parentheses(text: str) -> str:
    """The text without its (...) asides (the [...] intervals stay)."""
    out, depth = [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return re.sub(r"\s+([,;:])", r"\1", re.sub(r"\s{2,}", " ", "".join(out))).strip()


def short_sentence(text: str, limit: int = SENTENCE_CHARS) -> str:
    """A verdict's headline in at most `limit` characters: its first clause, without its
    asides if too long, then cut at a word."""
    s = first_clause(text).strip()
    if len(s) > limit:
        s = without_parentheses(s)
    if len(s) > limit:
        s = s[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return s


def llm_used(d: dict | None) -> str:
    """The LLM backend and model a step's results JSON says it used (its usage reports), or
    why it used none."""
    if not d:
        return "-"
    us = usage_dicts(d)
    if us:
        names = {f"{u.get('backend')}: {u.get('label') or u.get('model')}" for u in us}
        return ", ".join(sorted(names))
    return "none (LLM arms skipped)" if llm_skipped(d) else "not used"


def verdict_size(name: str, d: dict, text: str, users: int | None = None) -> str:
    """What a verdict rests on: its users (`users`, else the number its headline states, else
    the LLM's users
    for exp3's context verdict, else the users its arms are scored on), the items and the
    training seeds (the line's 'over N seeds', else the run's seeds)."""
    m = re.search(r"([\d,]+) users", first_clause(text))
    if users is None and m:
        users = int(m.group(1).replace(",", ""))
    if users is None and name == "llm_reranker" and "placebo" in text and usage_dicts(d):
        users = d.get("llm_users")
    if users is None:
        users = d.get("eval_users") if isinstance(d.get("eval_users"), int) else None
    if users is None:  # the users the arms are scored on (those with a held-out item)
        scored = [get(s, "all", "n_users") for s in (d.get("metrics") or {}).values()]
        users = max([n for n in scored if isinstance(n, int)], default=None)
    if users is None:
        users = get(d, "split", "eval_users")
    m = re.search(r"over (\d+) seeds", text)
    seeds = int(m.group(1)) if m else len(d.get("seeds") or []) or None
    items = get(d, "item_set", "items") or get(d, "data", "items")
    bits = [f"{num(users)} users" if users is not None else None]
    bits += [f"{num(items)} items" if items is not None else None]
    bits += [f"{seeds} seed{'s' if seeds != 1 else ''}" if seeds else None]
    return " · ".join(b for b in bits if b) or "-"


def verdict_rows(name: str, title: str, d: dict | None, stale: str | None) -> list[list]:
    """One row per verdict line of a step: status word (with a smoke run or a held-back word
    said), a short sentence, the size it rests on, the LLM the step used."""
    late = f"; stale: {stale}" if stale else ""
    if d is None:
        return [[title, "no results" + late, "-", "-", "-"]]
    lines = d.get("verdicts") if isinstance(d.get("verdicts"), list) else None
    lines = lines or ([d["verdict"]] if d.get("verdict") else [])
    smoke = bool(get(d, "options", "quick"))
    if not lines:
        status = "no verdict" + (" (smoke run, --quick)" if smoke else "") + late
        size = verdict_size(name, d, "")
        return [[title, status, "reference run: states no verdict", size, llm_used(d)]]
    rows = []
    for line in lines:
        v = parse_verdict(line)
        notes = ["smoke run, --quick"] if smoke or v["why"] == "smoke run" else []
        if v["would"] and v["would"] != v["status"]:
            held = f"would read {v['would']}"
            notes.append(held if v["why"] == "smoke run" else f"{held}: {v['why']}")
        status = f"**{v['status']}**" + (f" ({'; '.join(notes)})" if notes else "") + late
        text, users = v["text"], v["guard_users"]
        size = verdict_size(name, d, text, users)
        rows.append([title, status, short_sentence(text), size, llm_used(d)])
    return rows


def verdict_table(results: dict, stale: dict, experiments: list) -> str:
    """The verdicts at a glance: every step of `experiments` ((name, title) pairs), every
    verdict line, short (the full line is in the experiment's section)."""
    rows = [
        row
        for name, title in experiments
        for row in verdict_rows(name, title, results.get(name), stale.get(name))
    ]
    header = ["experiment", "status", "verdict, short (full line in the section)", "rests on"]
    return md_table(header + ["LLM used (from the JSON)"], rows)


def llm_header(results: dict, run_llm: str | None, steps: list) -> list[str]:
    """The report's LLM line: the backend and model each step's JSON says it used; the last
    run_overnight.sh run's --llm resolution beside it (it may differ: a step can be up to
    date from an earlier run). `steps`: the experiments' names, in report order."""
    used: dict = {}
    for name in steps:
        d = results.get(name)
        if d is not None:
            used.setdefault(llm_used(d), []).append(name)
    parts = [f"{k}: {', '.join(v)}" for k, v in used.items() if k not in ("-", "not used")]
    lines = ["LLM used, per the results JSONs: " + ("; ".join(parts) or "none") + "."]
    if run_llm:
        lines.append(f"The last `run_overnight.sh` run resolved `--llm` to: {run_llm}.")
    return [" ".join(lines), ""]
