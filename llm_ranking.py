"""The LLM as a ranker of candidate lists (experiment 3's LLM arms, on one candidate set).

- `Catalog` (the item columns prompts show) and `UserLists` (what the LLM sees per user:
  candidates, profile, recent orders, the context per condition, the facts arm's purchase
  facts, the evals' history).
- `rerank_set`: every condition's ranking of every user's list, listwise (one answer per
  seeded shuffle, Borda-aggregated) or pointwise (a yes-probability per candidate), with
  each condition's cost; every answer written as one JSON record (the evals read them).
  Prompts of the conditions come from one template and differ only in the context line
  (and the facts arm's candidate lines).
- `noise_repeat` / `free_arm`: the same lists asked again with sampling (a separate cache
  entry) and the unconstrained listwise arm (a product name and a reason, no id grammar).
- Agreement between two conditions' rankings (RBO, Jaccard@10, Kendall tau).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time

import numpy as np
import pandas as pd

import config
import llm
import prompts as P
from config import RANDOM_SEED
from llm import repair_permutation
from metrics import agreement
from prompts import TEMPLATES

# the noise floor: the no-context lists of this many users asked again with sampling (a
# separate cache entry): the local model at REPEAT_TEMPERATURE with another seed; Claude,
# whose answers are sampled at the API's default temperature, asked again
REPEAT_USERS = 20
REPEAT_TEMPERATURE = 0.7
# local pointwise: P(yes) is read from the first answer token's log-probabilities, which no
# temperature or seed enters (a second asking differs only by the numerics of the slots' KV
# caches, up to ~0.01 with the 0.5B model): sampling cannot give this mode a noise floor
NO_POINTWISE_NOISE = (
    "n/a: pointwise P(yes) comes from the first token's log-probabilities, which sampling "
    "does not change (temperature and seed do not enter them); see the free listwise arm's"
)


@dataclasses.dataclass
class Catalog:
    """The item columns that prompts and answer records show, by item index."""

    pid: np.ndarray
    names: np.ndarray
    aisles: np.ndarray
    depts: np.ndarray

    @classmethod
    def of(cls, items: pd.DataFrame) -> Catalog:
        return cls(
            items["product_id"].to_numpy(),
            items["product_name"].to_numpy(),
            items["aisle"].fillna("unknown").to_numpy(),
            items["department"].fillna("unknown").to_numpy(),
        )

    def __post_init__(self):
        self.item_of = {int(p): i for i, p in enumerate(self.pid)}


@dataclasses.dataclass
class UserLists:
    """What the LLM sees for a group of users, row j for users[j]: the candidates (item
    indices, candidate order), the template profile, the recent orders, per condition the
    context text, the purchase facts of each candidate (the facts arm) and what the user
    bought in training (the evals' facts, written with the free arm's answers)."""

    users: np.ndarray
    cands: list
    profiles: list
    recent: list
    contexts: dict  # condition -> [text per user]
    facts: list  # [{item: purchase facts}] per user
    history: list  # [{"products", "aisles", "departments"}] per user

    def rows(self, lo: int, hi: int, conditions=None) -> UserLists:
        """Users lo..hi-1 (and only `conditions`, default all)."""
        return UserLists(
            self.users[lo:hi],
            self.cands[lo:hi],
            self.profiles[lo:hi],
            self.recent[lo:hi],
            {c: self.contexts[c][lo:hi] for c in conditions or self.contexts},
            self.facts[lo:hi],
            self.history[lo:hi],
        )


ANSWER_STATS = ("answers", "unknown", "duplicate", "missing", "failed", "llm_errors")
ANSWER_STATS += ("input_tokens", "output_tokens")
COST_FIELDS = ("requests", "sent", "cached", "seconds", "input_tokens", "output_tokens")


def llm_rerank(
    client, mode, cat, lists: UserLists, shuffles, set_name, answers_f, progress, repeat=0
):
    """Rank each user's candidates under every condition of `lists` (mode listwise,
    pointwise, or free: the unconstrained listwise arm); `repeat` > 0 asks every prompt
    again with sampling, as a separate cache entry (the noise floor). Every answer goes to
    `answers_f`.

    Returns {condition: {"borda": [u][list], "shuffles": [[u][list] per shuffle],
    "failed": [u][shuffle] bool}}, the stats of the answers (repairs, failures) and the LLM
    cost of each condition (COST_FIELDS)."""
    n_sh = shuffles if mode != "pointwise" else 1
    local = client.backend == "local"
    plan, reqs = rerank_requests(mode, cat, lists, n_sh, repeat, local)
    results, cost = send_by_condition(client, mode, plan, reqs, progress)
    keys = [llm.cache_key(client.identity, r) for r in reqs]
    out, stats = collect_answers(
        plan, results, reqs, keys, mode, cat, lists, n_sh, set_name, client, answers_f
    )
    for c in out:
        out[c]["borda"] = [
            np.array(borda([sh[j] for sh in out[c]["shuffles"] if sh[j] is not None], list(cand)))
            for j, cand in enumerate(lists.cands)
        ]
    stats["seconds"] = round(sum(x["seconds"] for x in cost.values()), 2)
    return out, stats, cost


def shuffled(cand: np.ndarray, user, s: int) -> np.ndarray:
    """Shuffle `s` of a user's candidates, seeded by user and shuffle: the list shown under
    every condition."""
    return cand[np.random.default_rng([RANDOM_SEED, int(user), s]).permutation(len(cand))]


def rerank_requests(mode, cat, lists: UserLists, n_sh, repeat, local) -> tuple[list, list]:
    """Every request of a run, in order, and its plan: one (condition, user row, shuffle,
    shown items) per answer (listwise: one request; pointwise: one per shown item). Per
    user, every shuffle and condition in turn: a local slot keeps the user's shared prefix
    (the shopper) in its KV cache, and each condition evaluates only its context line on."""
    plan, reqs = [], []
    for j, u in enumerate(lists.users):
        for s in range(n_sh):
            shown = shuffled(lists.cands[j], u, s)
            for c in lists.contexts:
                if mode == "pointwise":
                    reqs += [
                        sampled(r, repeat, local)
                        for r in pointwise_requests(cat, lists, j, c, shown)
                    ]
                else:
                    reqs.append(
                        sampled(listwise_request(mode, cat, lists, j, c, shown), repeat, local)
                    )
                plan.append((c, j, s, shown))
    return plan, reqs


def shown_facts(lists: UserLists, j, condition, shown) -> list:
    """The purchase facts of the shown items in the facts arm; None each elsewhere."""
    if condition != "facts":
        return [None] * len(shown)
    return [lists.facts[j][int(i)] for i in shown]


def pointwise_requests(cat, lists: UserLists, j, condition, shown) -> list:
    """The yes/no prompts of user row j's shown items under `condition`: one template for
    every condition, differing only in the context line (and the facts arm's candidate
    facts)."""
    facts = shown_facts(lists, j, condition, shown)
    return [
        TEMPLATES["rerank_pointwise"].request(
            user_profile=lists.profiles[j],
            recent_orders=lists.recent[j],
            order_context=P.context_line(lists.contexts[condition][j]),
            candidate=P.format_candidate(cat.names[i], cat.aisles[i], f),
        )
        for i, f in zip(shown, facts)
    ]


def listwise_request(mode, cat, lists: UserLists, j, condition, shown):
    """The ranking prompt of user row j's shown list under `condition`: the reranker
    template for every condition (they differ only in the context line, and the facts arm
    in its candidate lines), or in the free arm the reranker_free template (no ids: no id
    grammar; the first product's name and a one-line reason)."""
    lines = P.format_candidates(
        [(cat.pid[i], cat.names[i], cat.aisles[i]) for i in shown],
        shown_facts(lists, j, condition, shown),
    )
    name = "reranker_free" if mode == "free" else "reranker"
    req = TEMPLATES[name].request(
        user_profile=lists.profiles[j],
        recent_orders=lists.recent[j],
        order_context=P.context_line(lists.contexts[condition][j]),
        candidates=lines,
        n_candidates=len(shown),
    )
    # the ids still constrain a local model's answer (free arm: none are sent), but the
    # permutation check and its counted repairs are ours (repair_permutation), so a
    # near-permutation is kept, not re-asked
    return dataclasses.replace(req, validator=None)


def sampled(req, repeat: int, local: bool):
    """`req` as the noise floor's repeat number `repeat` (0: unchanged): a separate cache
    entry, sampled: the local model at REPEAT_TEMPERATURE with another seed; Claude (whose
    answers are sampled at the API's default temperature) simply asked again."""
    if not repeat:
        return req
    if local:
        return dataclasses.replace(
            req, repeat=repeat, temperature=REPEAT_TEMPERATURE, seed=RANDOM_SEED + repeat
        )
    return dataclasses.replace(req, repeat=repeat)


def decoding(req, local: bool) -> dict:
    """How an answer was decoded, for its record: temperature (local: 0.0 = greedy when
    unset; Claude: None = the API's default, sampled), seed (local) and whether it is a
    sample (a repeat of a sampled answer can differ from it)."""
    if local:
        t = 0.0 if req.temperature is None else req.temperature
        return {"temperature": t, "seed": req.seed, "sampled": t > 0}
    return {"temperature": req.temperature, "seed": None, "sampled": req.temperature != 0}


def send_by_condition(client, mode, plan, reqs, progress) -> tuple[list, dict]:
    """Every request's answer (pointwise: P(yes)), in request order, and the LLM cost of
    each condition: requests, calls sent (re-asks included), cache hits, seconds, tokens.
    The local model's pointwise prompts go one answer (a list's 20) at a time in plan order
    (its one slot keeps the user's prefix); everything else one condition at a time (the
    calls of a condition run in parallel: Claude's workers, the local model's slots)."""
    spans, pos = [], 0
    for c, _, _, shown in plan:
        n = len(shown) if mode == "pointwise" else 1
        spans.append((c, list(range(pos, pos + n))))
        pos += n
    if not (mode == "pointwise" and client.backend == "local"):
        conds = dict.fromkeys(c for c, _ in spans)
        spans = [(c, [i for c2, idx in spans if c2 == c for i in idx]) for c in conds]
    ask = client.yes_probability if mode == "pointwise" else client.complete_many
    results, cost = [None] * len(reqs), {}
    bar = config.progress(total=len(reqs), desc=client.label, unit="call", disable=not progress)
    with quiet_llm_info(), contextlib.closing(bar):
        for c, idx in spans:
            before, t0 = client.usage_report(), time.perf_counter()
            answers = ask([reqs[i] for i in idx])
            seconds, after = time.perf_counter() - t0, client.usage_report()
            for i, a in zip(idx, answers):
                results[i] = a
            x = cost.setdefault(c, dict.fromkeys(COST_FIELDS, 0))
            x["requests"] += len(idx)
            x["sent"] += after["api_calls"] - before["api_calls"]
            x["cached"] += after["cached"] - before["cached"]
            x["seconds"] = round(x["seconds"] + seconds, 2)
            for k in ("input_tokens", "output_tokens"):
                x[k] += after[k] - before[k]
            bar.update(len(idx))
    return results, cost


@contextlib.contextmanager
def quiet_llm_info():
    """The llm logger's INFO lines muted (one per chunk sent: one per answer on the local
    model) while send_by_condition runs; its warnings and failures still log, and a logger
    set to DEBUG is left alone."""
    log = logging.getLogger("llm")
    level = log.level
    if log.getEffectiveLevel() == logging.INFO:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def answer_key(keys: list) -> str:
    """A short id of the requests behind one answer (their cache keys): two answers with the
    same id are one cached answer, never two askings."""
    return hashlib.sha256("".join(keys).encode()).hexdigest()[:16]


def collect_answers(plan, results, reqs, keys, mode, cat, lists, n_sh, set_name, client, f):
    """Turn the answers into rankings (item indices) and write one record per answer.

    Returns {condition: {"shuffles": [[u][ranking or None] per shuffle], "failed": [u][shuffle]
    bool}} and the answer stats (ANSWER_STATS)."""
    n, local = len(lists.users), client.backend == "local"
    out = {
        c: {"shuffles": [[None] * n for _ in range(n_sh)], "failed": np.zeros((n, n_sh), bool)}
        for c in lists.contexts
    }
    stats = dict.fromkeys(ANSWER_STATS, 0)
    pos = 0
    for c, j, s, shown in plan:
        cand = lists.cands[j]
        width = len(shown) if mode == "pointwise" else 1
        req = reqs[pos]
        rec = {
            "user": int(lists.users[j]),
            "set": set_name,
            "condition": c,
            "shuffle": s,
            "mode": "listwise" if mode == "free" else mode,
            "arm": "free" if mode == "free" else "main",
            "model": client.label,
            "candidates": [int(cat.pid[i]) for i in cand],
            "shown": [int(cat.pid[i]) for i in shown],
            "names": [str(cat.names[i]) for i in cand],
            "aisles": [str(cat.aisles[i]) for i in cand],
            "departments": [str(cat.depts[i]) for i in cand],
            "context": lists.contexts[c][j],
            "repeat": req.repeat,
            "key": answer_key(keys[pos : pos + width]),
            # the ids of a listwise answer are held to the candidates by a grammar only on the
            # local backend, and only when the request names them (never in the free arm)
            "id_grammar": mode != "pointwise" and local and bool(req.ids),
            **decoding(req, local),
        }
        stats["answers"] += 1
        if mode == "pointwise":
            ranking, failed = read_pointwise(
                results[pos : pos + width], shown, cand, cat, rec, stats
            )
        else:
            ranking, failed = read_listwise(results[pos], cand, cat, rec, stats)
        if mode == "free":
            data = results[pos].data if isinstance(results[pos].data, dict) else {}
            rec.update(
                top_product=data.get("top_product"),
                reason=data.get("reason"),
                user_facts=lists.history[j],
            )
        pos += width
        stats["failed"] += int(failed)
        rec["parsed"] = None if ranking is None else [int(cat.pid[i]) for i in ranking]
        f.write(json.dumps(rec) + "\n")
        out[c]["shuffles"][s][j] = ranking
        out[c]["failed"][j, s] = failed
    return out, stats


def read_listwise(res, cand, cat, rec, stats) -> tuple[list | None, bool]:
    """A ranking answer -> (item indices, failed): repaired into a permutation of the
    candidates (repairs counted in `stats` and `rec`), None when unusable."""
    ids = [int(cat.pid[i]) for i in cand]
    stats["input_tokens"] += res.input_tokens
    stats["output_tokens"] += res.output_tokens
    answer = res.data.get("ranking") if res.ok and isinstance(res.data, dict) else None
    rep = repair_permutation(answer, ids) if res.ok else None
    failed = rep is None or rep.failed
    rec.update(raw=res.text, error=res.error, repairs=rep.counts() if rep else {"failed": True})
    stats["llm_errors"] += int(not res.ok)
    if rep:
        for k in ("unknown", "duplicate", "missing"):
            stats[k] += getattr(rep, k)
    return (None if failed else [cat.item_of[x] for x in rep.ranking]), failed


def read_pointwise(scores, shown, cand, cat, rec, stats) -> tuple[list | None, bool]:
    """Yes-probabilities of the shown items -> (the candidates sorted by score, ties and
    unscored items in candidate order; failed when more than half have no score)."""
    by_item = {int(i): sc for i, sc in zip(shown, scores)}
    n_none = sum(sc is None for sc in scores)
    failed = n_none > len(scores) / 2
    order = list(cand)
    score = lambda i: by_item[int(i)] if by_item[int(i)] is not None else -1.0
    ranking = None if failed else sorted(order, key=lambda i: (-score(i), order.index(i)))
    rec.update(
        scores={str(cat.pid[i]): by_item[int(i)] for i in cand},
        repairs={"no_score": n_none, "failed": failed},
        raw=None,
        error=None,
    )
    stats["llm_errors"] += n_none
    return ranking, failed


def borda(rankings, candidates) -> list:
    """Borda aggregate of rankings (each a permutation of candidates); ties keep the
    candidate order. No ranking: the candidate order."""
    pts = {c: 0.0 for c in candidates}
    for r in rankings:
        for pos, c in enumerate(r):
            pts[c] += len(r) - pos
    return sorted(candidates, key=lambda c: (-pts[c], candidates.index(c)))


def add_cost(total: dict, cost: dict, prefix: str = "") -> dict:
    """Add per-condition LLM costs into `total` (keys prefixed by `prefix`)."""
    for c, x in cost.items():
        t = total.setdefault(prefix + c, dict.fromkeys(COST_FIELDS, 0))
        for k in COST_FIELDS:
            t[k] = round(t[k] + x[k], 2) if k == "seconds" else t[k] + x[k]
    return total


def rerank_set(client, mode, cat, lists: UserLists, args, set_name, answers_f, estimate_sets=0):
    """llm_rerank on one candidate set. With `estimate_sets` (the first set) the first user
    is ranked alone and the time it took gives the estimate for that many sets, printed
    before the rest (EXPERIMENTS.md). Returns the answers, stats and per-condition cost of
    all users."""
    n = len(lists.users)
    spans = [(0, 1), (1, n)] if estimate_sets and n > 1 else [(0, n)]
    parts, stats, cost, t0 = [], [], {}, time.perf_counter()
    for lo, hi in spans:
        progress = not args.quiet and hi - lo > 1
        res, st, co = llm_rerank(
            client, mode, cat, lists.rows(lo, hi), args.shuffles, set_name, answers_f, progress
        )
        parts.append(res)
        stats.append(st)
        add_cost(cost, co)
        if len(spans) > 1 and lo == 0:
            s1 = time.perf_counter() - t0
            print(
                f"LLM: first user took {s1:.1f}s -> estimate "
                f"{s1 * n * estimate_sets / 60:.1f} min for {n} users "
                f"(less where answers are cached)"
            )
    merged = {
        c: {
            "borda": [x for p in parts for x in p[c]["borda"]],
            "shuffles": [
                [x for p in parts for x in p[c]["shuffles"][s]]
                for s in range(len(parts[0][c]["shuffles"]))
            ],
            "failed": np.vstack([p[c]["failed"] for p in parts]),
        }
        for c in parts[0]
    }
    return merged, {k: sum(s[k] for s in stats) for k in stats[0]}, cost


def noise_repeat(client, mode, cat, lists: UserLists, args, set_name, answers_f):
    """The noise floor: the first REPEAT_USERS users' no-context lists (first shuffle) asked
    again with sampling (`sampled`: a separate cache entry, never the first answer read
    back). Returns their rankings (None where it cannot be measured) and a summary: users,
    answer stats and cost, or not_measured with the reason (local pointwise: sampling does not
    change P(yes))."""
    if mode == "pointwise" and client.backend == "local":
        return None, {"users": 0, "not_measured": NO_POINTWISE_NOISE + " noise floor"}
    k = min(REPEAT_USERS, len(lists.users))
    rows = lists.rows(0, k, ["none"])
    rep, st, cost = llm_rerank(
        client, mode, cat, rows, 1, set_name, answers_f, not args.quiet, repeat=1
    )
    return rep["none"]["shuffles"][0], {"users": k, **st, "cost": cost}


def free_arm(client, cat, lists: UserLists, args, set_name, answers_f) -> dict:
    """The unconstrained listwise arm of the evals: the first --free-users users' lists
    under the context (first shuffle), ranked without the id grammar, with the first
    product's name and a one-line reason, then asked again with sampling (its noise floor).
    Returns its answer stats, cost and agreement with its sampled repeat."""
    k = min(args.free_users, len(lists.users))
    if not k:
        return {"users": 0}
    rows = lists.rows(0, k, ["context"])
    first, st, cost = llm_rerank(client, "free", cat, rows, 1, set_name, answers_f, False)
    again, st2, cost2 = llm_rerank(
        client, "free", cat, rows, 1, set_name, answers_f, False, repeat=1
    )
    floor = noise_floor(first["context"]["shuffles"], again["context"]["shuffles"][0])
    return {
        "users": k,
        "answers": st,
        "repeat_answers": st2,
        "cost": add_cost(add_cost({}, cost, "free "), cost2, "free repeat "),
        "noise_floor": {**mean_agreement(floor), "users": len(floor)},
    }


# ---------------------------------------------------------------------------------------------
# agreement between rankings
AGREEMENT = ("rbo", "jaccard@10", "tau")


def mean_agreement(ags: list) -> dict:
    """The mean of each agreement measure over users (None without any)."""
    return {m: float(np.mean([g[m] for g in ags])) if ags else None for m in AGREEMENT}


def condition_shift(shuffles, other_shuffles) -> tuple[dict, np.ndarray]:
    """How far one condition's rankings are from another's, same shuffle against same
    shuffle: the mean agreement over users and each user's RBO (NaN where no shuffle of
    both was answered)."""
    n = len(shuffles[0])
    per = np.full(n, np.nan)
    ags = []
    for j in range(n):
        a = [
            agreement(r[j], o[j])
            for r, o in zip(shuffles, other_shuffles)
            if r[j] is not None and o[j] is not None
        ]
        if a:
            ags.append({m: np.mean([x[m] for x in a]) for m in a[0]})
            per[j] = ags[-1]["rbo"]
    return mean_agreement(ags), per


def noise_floor(shuffles, second) -> list:
    """Per-user agreement between the first shuffle's answers and `second` (answers of the
    first len(second) users: a sampled repeat, or another shuffle); failed answers skipped."""
    return [agreement(a, b) for a, b in zip(shuffles[0], second) if a is not None and b is not None]
