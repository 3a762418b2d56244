"""Experiment 3: does LLM reranking beat LightGBM, and does order context shift rankings
correctly?

Original finding (the original study): context-aware LLM reranking "demonstrably shifts
rankings" and its recall is "competitive with LightGBM" at much higher cost. Its LightGBM arm
was really the FAISS order, and no control separated a context effect from noise or position
bias. Here every arm ranks the same candidates for the same users:

    uv run llm_reranker.py --llm none                     # rankers only (LLM arms skipped)
    uv run llm_reranker.py --split temporal --llm local --eval-users 30 --mode pointwise
    uv run llm_reranker.py --data-dir DIR --items 5000    # real rows; Claude when a key is set
    uv run llm_reranker.py --quick                        # about a minute: a smoke run

Candidates per user: FAISS top-20 of the trained two-tower (the original setting) and the
pipeline's best set (faiss@50+bought) cut to its LightGBM top-20 (the LLM reorders what the
strongest stage proposes). Arms: candidate order, LightGBM, XGBoost (cross-fitted, every
training seed), LLM without context, LLM with context (first seed, --eval-users users).
Controls (rows and columns of the controls table): B seeded shuffles of each user's list,
aggregated by Borda count, with the spread between shuffles (position bias); agreement of
two shuffles of the same prompt (noise floor: RBO, Jaccard@10, Kendall tau); a placebo
context (a neutral sentence of the same length); the shift from no context to context
against the noise floor and the placebo, and the share of the top-10 in aisles that fit the
order's occasion; on generated data with --split temporal, the positive control: context =
the held-out order's true occasion, and a random occasion that must not raise the metrics.
Every answer is saved (results/llm_reranker_answers_*.jsonl) for evals/reranker_evals.py.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import common as C
import llm
from common import agreement
from evals.prompt_registry import TEMPLATES, format_candidates, versions_used
from llm import repair_permutation

# defaults (all overridable from the command line)
SEEDS = 3  # training seeds of the tower and the rankers
N_CANDIDATES = 20  # the list the LLM reorders (the original study's setting)
CANDIDATE_SETS = ("faiss@20", "faiss@50+bought")  # the original setting; the pipeline's best
RANKERS = ("lightgbm", "xgboost")
EVAL_USERS = 200  # users the LLM arms rank (seeded sample of the evaluation users)
SHUFFLES = 3  # seeded shuffles of each list (position bias, noise floor)
# pointwise: the no-context lists of this many users are scored a second time (a separate
# cache entry), the noise floor of a mode whose shuffles all send the same prompts
REPEAT_USERS = 20
RECENT_ORDERS = 3  # training orders shown with the context, most recent first
RECENT_ITEMS = 8  # items listed per recent order
COMPETITIVE_MARGIN = 0.01  # "competitive": LLM - LightGBM R@10 interval above -1 point
SHIFT_MARGIN = 0.02  # context shift no larger than the placebo's by more than this RBO
PLACEBO_TEXT = (
    "This order is placed through the usual app in the usual way, like any other "
    "ordinary order on an ordinary day. "
)
QUICK = {
    "users": 400,
    "items": 1500,
    "epochs": 1,
    "seeds": 1,
    "eval_users": 2,
    "shuffles": 2,
    "no_tifu": True,
}
CONDITION_NAMES = {
    "none": "no context",
    "context": "context",
    "placebo": "placebo context",
    "random": "random occasion",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    C.add_data_args(p)
    C.add_tower_args(p)
    C.add_experiment_args(p, seeds=SEEDS)
    llm.add_llm_args(p)
    g = p.add_argument_group("reranking")
    g.add_argument(
        "--candidate-sets",
        default=",".join(CANDIDATE_SETS),
        help="comma list: faiss@K (its top-20) and/or faiss@K+bought[N] (cut to its "
        f"LightGBM top-{N_CANDIDATES}); default %(default)s",
    )
    g.add_argument(
        "--eval-users",
        type=int,
        default=EVAL_USERS,
        help="users the LLM arms rank, a seeded sample of the evaluation users "
        "(0 = all; --users is the data sample size); default %(default)s",
    )
    g.add_argument(
        "--shuffles",
        type=int,
        default=SHUFFLES,
        help="seeded shuffles of each candidate list (Borda aggregate; >= 2 gives "
        "the noise floor); default %(default)s",
    )
    g.add_argument(
        "--mode",
        choices=["auto", "listwise", "pointwise"],
        default="auto",
        help="listwise: one ranking answer per list; pointwise: one yes/no "
        "likelihood per candidate (small local models); auto: pointwise "
        "for the local backend, else listwise",
    )
    g.add_argument(
        "--answers",
        default=None,
        help="JSONL of every LLM answer (default results/llm_reranker_answers_"
        "<data>_<split>.jsonl)",
    )
    return C.parse_args_with_quick(p, argv, QUICK)


# ---------------------------------------------------------------------------------------------
# helpers (candidates for common.py: recent_orders_text, order_context_text)


def recent_orders_text(ds, train, user, n=RECENT_ORDERS, k=RECENT_ITEMS) -> str:
    """The user's last n TRAINING orders, most recent first, k item names each."""
    rows = train[train["user"] == user]
    names = ds.items["product_name"].to_numpy()
    lines = []
    for num in sorted(rows["order_number"].unique())[::-1][:n]:
        items = rows.loc[rows["order_number"] == num, "item"].to_numpy()
        more = f" (+{len(items) - k} more)" if len(items) > k else ""
        lines.append(f"- order {num}: " + ", ".join(names[items[:k]]) + more)
    return "\n".join(lines) or "- none"


def target_orders(ds, split, users) -> pd.DataFrame:
    """Per user, the order the lists are for: the held-out order (temporal split) or the
    user's most recent order (interaction split); its timing and, on generated data, its
    occasion. Timing and occasion are request-time facts, never the held-out items."""
    rows = split.test if split.mode == "temporal" else ds.interactions
    rows = rows[rows["user"].isin(users)].sort_values(["user", "order_number"])
    last = rows.groupby("user").tail(1).set_index("user")
    cols = ["order_id", "order_dow", "order_hour_of_day", "days_since_prior_order"]
    out = last.reindex(users)[cols]
    if ds.occasions is not None:
        occ = ds.occasions.set_index("order_id")["occasion"]
        out["occasion"] = occ.reindex(out["order_id"]).to_numpy()
    return out


def time_text(row) -> str:
    days = row["days_since_prior_order"]
    gap = "first order" if pd.isna(days) else f"{days:.0f} days after the previous order"
    return (
        f"day-of-week code {int(row['order_dow'])}, around "
        f"{int(row['order_hour_of_day']):02d}:00, {gap}"
    )


def occasion_text(occasion: str) -> str:
    return f"the shopper says this order is for: {occasion.replace('_', ' ')}."


def placebo_like(text: str) -> str:
    """A neutral sentence of the same length as `text` (the placebo context)."""
    n = len(text)
    s = (PLACEBO_TEXT * (n // len(PLACEBO_TEXT) + 1))[: max(n - 1, 0)]
    return s + "." if n else ""


def borda(rankings, candidates) -> list:
    """Borda aggregate of rankings (each a permutation of candidates); ties keep the
    candidate order. No ranking: the candidate order."""
    pts = {c: 0.0 for c in candidates}
    for r in rankings:
        for pos, c in enumerate(r):
            pts[c] += len(r) - pos
    return sorted(candidates, key=lambda c: (-pts[c], candidates.index(c)))


def paired_mean_ci(d: np.ndarray, seed: int = C.RANDOM_SEED) -> dict:
    """Mean of per-user differences and its 95% bootstrap interval (NaN dropped)."""
    d = np.asarray(d, float)
    d = d[~np.isnan(d)]
    if not len(d):
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    ci = C.bootstrap_ci({"d": d}, seed=seed)["d"]
    return {"mean": float(d.mean()), "ci95": ci, "n": len(d)}


def fmt_ci(g: dict, digits: int = 3) -> str:
    return f"{g['mean']:+.{digits}f} [{g['ci95'][0]:+.{digits}f}, {g['ci95'][1]:+.{digits}f}]"


# ---------------------------------------------------------------------------------------------
# the LLM arms on one candidate set


def llm_rerank(
    client,
    mode,
    ds,
    split,
    users,
    cands,
    contexts,
    recent,
    shuffles,
    set_name,
    answers_f,
    progress,
    repeat=0,
):
    """Rank each user's candidates (item indices, candidate order) under every condition;
    `repeat` > 0 asks every prompt again as a separate cache entry (noise floor).

    Returns {condition: {"borda": [u][list], "shuffles": [[u][list] per shuffle],
    "failed": [u][shuffle] bool}} and the stats of the answers (repairs, failures)."""
    items = ds.items
    pid = items["product_id"].to_numpy()
    item_of = {int(p): i for i, p in enumerate(pid)}
    names, aisles = items["product_name"].to_numpy(), items["aisle"].fillna("unknown").to_numpy()
    depts = items["department"].fillna("unknown").to_numpy()
    facts = C.user_profile_facts(ds, split.train, users)
    profiles = [C.profile_template_text(f) for f in facts]
    n_sh = shuffles if mode == "listwise" else 1
    conds = list(contexts)
    plan, reqs = [], []  # (condition, user row, shuffle, shown items) per request
    for j, u in enumerate(users):
        cand = cands[j]
        for s in range(n_sh):
            shown = cand[np.random.default_rng([C.RANDOM_SEED, int(u), s]).permutation(len(cand))]
            for c in conds:
                ctx = contexts[c][j]
                if mode == "listwise":
                    lines = format_candidates([(pid[i], names[i], aisles[i]) for i in shown])
                    if c == "none":
                        req = TEMPLATES["reranker"].request(
                            user_profile=profiles[j], candidates=lines, n_candidates=len(shown)
                        )
                    else:
                        req = TEMPLATES["reranker_context"].request(
                            user_profile=profiles[j],
                            order_context=ctx,
                            recent_orders=recent[j],
                            candidates=lines,
                            n_candidates=len(shown),
                        )
                    # the ids still constrain a local model's answer, but the permutation
                    # check and its counted repairs are ours (repair_permutation), so a
                    # near-permutation is kept, not re-asked
                    reqs.append(dataclasses.replace(req, validator=None, repeat=repeat))
                else:
                    for i in shown:
                        req = TEMPLATES["rerank_pointwise"].request(
                            user_profile=profiles[j],
                            order_context=ctx or "not given",
                            candidate=f"{names[i]} ({aisles[i]})",
                        )
                        reqs.append(dataclasses.replace(req, repeat=repeat))
                plan.append((c, j, s, shown))
    t0 = time.perf_counter()
    if mode == "listwise":
        results = client.complete_many(reqs, progress=progress)
    else:
        results = client.yes_probability(reqs, progress=progress)
    seconds = time.perf_counter() - t0
    out = {
        c: {
            "shuffles": [[None] * len(users) for _ in range(n_sh)],
            "failed": np.zeros((len(users), n_sh), bool),
        }
        for c in conds
    }
    stats = {
        "answers": 0,
        "unknown": 0,
        "duplicate": 0,
        "missing": 0,
        "failed": 0,
        "llm_errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    pos = 0
    for c, j, s, shown in plan:
        cand = [int(pid[i]) for i in cands[j]]
        rec = {
            "user": int(users[j]),
            "set": set_name,
            "condition": c,
            "shuffle": s,
            "mode": mode,
            "model": client.label,
            "candidates": cand,
            "shown": [int(pid[i]) for i in shown],
            "names": [str(names[i]) for i in cands[j]],
            "aisles": [str(aisles[i]) for i in cands[j]],
            "departments": [str(depts[i]) for i in cands[j]],
            "context": contexts[c][j],
            "repeat": repeat,
        }
        stats["answers"] += 1
        if mode == "listwise":
            res = results[pos]
            pos += 1
            stats["input_tokens"] += res.input_tokens
            stats["output_tokens"] += res.output_tokens
            answer = res.data.get("ranking") if res.ok and isinstance(res.data, dict) else None
            rep = repair_permutation(answer, cand) if res.ok else None
            failed = rep is None or rep.failed
            rec.update(
                raw=res.text, error=res.error, repairs=rep.counts() if rep else {"failed": True}
            )
            stats["llm_errors"] += int(not res.ok)
            if rep:
                for k in ("unknown", "duplicate", "missing"):
                    stats[k] += getattr(rep, k)
            ranking = None if failed else [item_of[x] for x in rep.ranking]
        else:
            scores = results[pos : pos + len(shown)]
            pos += len(shown)
            by_item = {int(i): sc for i, sc in zip(shown, scores)}
            n_none = sum(sc is None for sc in scores)
            failed = n_none > len(scores) / 2
            order = list(cands[j])
            ranking = (
                None
                if failed
                else sorted(
                    order,
                    key=lambda i: (
                        -(by_item[int(i)] if by_item[int(i)] is not None else -1.0),
                        order.index(i),
                    ),
                )
            )
            rec.update(
                scores={str(pid[i]): by_item[int(i)] for i in cands[j]},
                repairs={"no_score": n_none, "failed": failed},
                raw=None,
                error=None,
            )
            stats["llm_errors"] += n_none
        stats["failed"] += int(failed)
        rec["parsed"] = None if ranking is None else [int(pid[i]) for i in ranking]
        answers_f.write(json.dumps(rec) + "\n")
        out[c]["shuffles"][s][j] = ranking
        out[c]["failed"][j, s] = failed
    for c in conds:
        out[c]["borda"] = [
            np.array(
                borda(
                    [
                        out[c]["shuffles"][s][j]
                        for s in range(n_sh)
                        if out[c]["shuffles"][s][j] is not None
                    ],
                    list(cands[j]),
                )
            )
            for j in range(len(users))
        ]
    stats["seconds"] = round(seconds, 2)
    return out, stats


def pad(lists, k=C.K_MAX) -> np.ndarray:
    out = -np.ones((len(lists), k), np.int64)
    for j, r in enumerate(lists):
        r = np.asarray(r if r is not None else [], np.int64)[:k]
        out[j, : len(r)] = r
    return out


def main(argv=None):
    args = parse_args(argv)
    # options first, so a typo fails before any data is loaded
    sets = [C.CandidateConfig.parse(c) for c in args.candidate_sets.split(",") if c.strip()]
    if not sets:
        raise C.ConfigError("--candidate-sets is empty")
    if args.shuffles < 1 or args.eval_users < 0:
        raise C.ConfigError("--shuffles must be >= 1 and --eval-users >= 0")
    if any(c.bought_n() == 0 and c.k < N_CANDIDATES for c in sets):
        raise C.ConfigError(f"a faiss@K candidate set needs K >= {N_CANDIDATES}")
    if args.seeds < 1:
        raise C.ConfigError("--seeds must be >= 1")

    # data, split, features, reference baselines
    exp = C.Experiment("llm_reranker", args)
    exp.add_baselines()
    backend, _ = llm.resolve_backend(getattr(args, "llm", None))
    mode = args.mode if args.mode != "auto" else ("pointwise" if backend == "local" else "listwise")
    # pointwise on the local model: one slot, so the 20 calls of a list reuse one cached
    # prefix (4 slots each evaluate it again: 2.5 vs 3.1 calls/s measured on 2 cores)
    client, why = llm.client_from_args(
        args, n_threads=args.threads, n_parallel=1 if mode == "pointwise" else 4
    )
    print(f"LLM: {why}" + (f"; mode {mode}" if client else "; LLM arms skipped"))

    # the LLM's users: a seeded sample of the evaluation users (nested across sizes)
    llm_users = C.sample_users(exp.users, args.eval_users)
    n_llm = len(llm_users)
    llm_rows = np.searchsorted(exp.users, llm_users)

    # stage 1: tower, candidates and the GBDT rankers, per training seed
    k_max = max([C.K_MAX, *[c.k for c in sets]])
    cand_top = {}  # set name -> [len(exp.users), 20] candidate order (first seed)
    for seed in exp.seeds:
        model = exp.train(C.tower_config(args, seed))
        retrieved, scores = C.retrieve(model, exp.users, k_max)
        for cc in sets:
            name = cc.name()
            faiss_only = cc.bought_n() == 0  # faiss@K: its own top-20 is the candidate list
            out = C.rerank(
                model,
                exp.users,
                exp.feats,
                exp.split,
                dataclasses.replace(cc, k=N_CANDIDATES) if faiss_only else cc,
                kinds=RANKERS,
                retrieved=(retrieved, scores),
                seed=seed,
            )
            if faiss_only:
                top = retrieved[:, :N_CANDIDATES]
                order_arm = f"{name}: candidate order (FAISS)"
            else:
                top = out["lightgbm"][0][:, :N_CANDIDATES]
                order_arm = f"{name}: candidate order (LightGBM top-{N_CANDIDATES})"
            ceil = float(
                np.nanmean(
                    C.per_user_metrics(top, [exp.split.truth[int(u)] for u in exp.users])[
                        "recall@20"
                    ]
                )
            )
            exp.add(order_arm, top, cand_recall=ceil)
            for kind, (ranked, info) in out.items():
                exp.add(f"{name}: {kind}", ranked, cand_recall=info["candidate_recall"])
            cand_top.setdefault(name, (top, order_arm, ceil))

    # stage 2: the LLM arms (first seed's candidates, llm_users)
    llm_info, controls, shift_stats, repeat_info = {}, {}, {}, {}
    has_occ = exp.ds.occasions is not None and exp.split.mode == "temporal"
    answers_path = None
    if client is not None and n_llm:
        tgt = target_orders(exp.ds, exp.split, llm_users)
        if has_occ:
            true_ctx = [occasion_text(o) for o in tgt["occasion"]]
            occs = sorted(set(exp.ds.occasions["occasion"]))
            r2 = np.random.default_rng(C.RANDOM_SEED + 1)
            rand_occ = [r2.choice([o for o in occs if o != t]) for t in tgt["occasion"]]
            contexts = {
                "none": [""] * n_llm,
                "context": true_ctx,
                "placebo": [placebo_like(t) for t in true_ctx],
                "random": [occasion_text(o) for o in rand_occ],
            }
        else:
            ctx = [time_text(r) for _, r in tgt.iterrows()]
            contexts = {
                "none": [""] * n_llm,
                "context": ctx,
                "placebo": [placebo_like(t) for t in ctx],
            }
        recent = [recent_orders_text(exp.ds, exp.split.train, int(u)) for u in llm_users]
        src = "generated" if "generated" in exp.ds.source else "csv"
        answers_path = Path(
            args.answers or C.RESULTS_DIR / f"llm_reranker_answers_{src}_{exp.split.mode}.jsonl"
        )
        answers_path.parent.mkdir(parents=True, exist_ok=True)
        # measure one user, then print the estimate for the rest (EXPERIMENTS.md)
        n_sh = args.shuffles if mode == "listwise" else 1
        per_user = len(sets) * len(contexts) * n_sh * (1 if mode == "listwise" else N_CANDIDATES)
        print(
            f"LLM arms: {n_llm} users x {len(sets)} candidate sets x {len(contexts)} "
            f"conditions x {n_sh} shuffles = {per_user * n_llm:,} {mode} calls "
            f"({client.label}; cached answers are not sent again)"
        )
        with open(answers_path, "w") as f:
            t0 = time.perf_counter()
            for ci, cc in enumerate(sets):
                name = cc.name()
                top, order_arm, _ = cand_top[name]
                cands = [np.array([i for i in top[r] if i >= 0]) for r in llm_rows]
                parts, stats_all = [], []
                for lo, hi in [(0, 1), (1, n_llm)] if ci == 0 and n_llm > 1 else [(0, n_llm)]:
                    sub = {c: v[lo:hi] for c, v in contexts.items()}
                    res, st = llm_rerank(
                        client,
                        mode,
                        exp.ds,
                        exp.split,
                        llm_users[lo:hi],
                        cands[lo:hi],
                        sub,
                        recent[lo:hi],
                        args.shuffles,
                        name,
                        f,
                        progress=not args.quiet and hi - lo > 1,
                    )
                    parts.append(res)
                    stats_all.append(st)
                    if ci == 0 and lo == 0 and n_llm > 1:
                        s1 = time.perf_counter() - t0
                        print(
                            f"LLM: first user took {s1:.1f}s -> estimate "
                            f"{s1 * n_llm * len(sets) / 60:.1f} min for {n_llm} users "
                            f"(less where answers are cached)"
                        )
                res = {
                    c: {
                        "borda": [x for p in parts for x in p[c]["borda"]],
                        "shuffles": [
                            [x for p in parts for x in p[c]["shuffles"][s]] for s in range(n_sh)
                        ],
                        "failed": np.vstack([p[c]["failed"] for p in parts]),
                    }
                    for c in contexts
                }
                st = {k: sum(s[k] for s in stats_all) for k in stats_all[0]}
                llm_info[name] = st
                ceil = float(
                    np.nanmean(
                        C.per_user_metrics(
                            pad(cands), [exp.split.truth[int(u)] for u in llm_users]
                        )["recall@20"]
                    )
                )
                exp.add(
                    f"{name}: candidate order [LLM users]", pad(cands), llm_users, cand_recall=ceil
                )
                repeat = None
                if mode == "pointwise":
                    # the noise floor: the first users' no-context prompts asked again
                    k = min(REPEAT_USERS, n_llm)
                    rep, st_rep = llm_rerank(
                        client,
                        mode,
                        exp.ds,
                        exp.split,
                        llm_users[:k],
                        cands[:k],
                        {"none": contexts["none"][:k]},
                        recent[:k],
                        1,
                        name,
                        f,
                        progress=not args.quiet,
                        repeat=1,
                    )
                    repeat = rep["none"]["shuffles"][0]
                    repeat_info[name] = {"users": k, **st_rep}
                controls[name], shift_stats[name] = control_rows(
                    exp,
                    name,
                    res,
                    cands,
                    llm_users,
                    contexts,
                    tgt if has_occ else None,
                    n_sh,
                    ceil,
                    client.label,
                    repeat,
                )
        exp.timings["llm_s"] = round(time.perf_counter() - t0, 2)

    # report: arms table, paired gains, controls, cost, verdicts
    exp.print_table()
    refs = [a for a in exp.runs if ": candidate order" in a and "[LLM users]" not in a]
    gains = {}
    for name in [c.name() for c in sets]:
        lgbm = f"{name}: lightgbm"
        arms = [
            a
            for a in exp.runs
            if a.startswith(name)
            and a != lgbm
            and "[LLM" not in a
            and ": LLM" not in a
            and "(LightGBM top" not in a
        ]
        gains[lgbm] = exp.print_gains(arms, lgbm)
        llm_arms = [a for a in exp.runs if a.startswith(f"{name}: LLM")]
        if llm_arms:
            gains[f"{lgbm} (LLM users)"] = exp.print_gains(llm_arms, lgbm)
            order = f"{name}: candidate order [LLM users]"
            gains[f"{order}"] = exp.print_gains(llm_arms, order)
    for name, rows in controls.items():
        print_controls(name, rows, client.label, mode, args.shuffles)
    cost = cost_report(client, llm_info, n_llm) if client is not None else None
    if cost:
        print("cost: " + ", ".join(f"{k} {v}" for k, v in cost.items() if v is not None))
    v1, v2 = verdicts(exp, sets, client, why, shift_stats, has_occ, gains)
    exp.write(
        {
            "llm": client.usage_report() if client else {"skipped": why},
            "llm_mode": mode if client else None,
            "llm_users": int(n_llm),
            "shuffles": args.shuffles,
            "controls": controls,
            "context_shift": shift_stats,
            "llm_answers": llm_info,
            "noise_floor_repeat": repeat_info,
            "cost": cost,
            "gains": gains,
            "answers_file": answers_path.name if answers_path else None,
            "positive_control": has_occ,
            "verdicts": [v1, v2],
            "prompt_versions": versions_used("reranker", "reranker_context", "rerank_pointwise"),
            "reference_rows": refs,
        }
    )
    if client is not None:
        client.close()
    return exp.summary()


def control_rows(exp, name, res, cands, users, contexts, tgt, n_sh, ceil, label, repeat=None):
    """Add each condition's Borda arm to the table; return the controls rows and the paired
    context-shift statistics (per-user agreement differences). The noise floor: shuffle 1 vs
    2 of the same prompt, or (`repeat`, the first users' no-context lists scored again) the
    no-context answer vs its repeat."""
    truths = [exp.split.truth[int(u)] for u in users]
    fit_aisles = None
    if tgt is not None:
        import sample_generator as gen  # which aisles each occasion boosts

        aisle_of = exp.ds.items["aisle"].fillna("").to_numpy()
        fit_aisles = [
            set(gen.OCCASION_AISLES.get(o, "").split("|")) - {""} for o in tgt["occasion"]
        ]
    rows, per_user = {}, {}
    for c in contexts:
        arm = f"{name}: LLM {CONDITION_NAMES[c]}"
        ranked = pad(res[c]["borda"])
        exp.add(arm, ranked, users, cand_recall=ceil, label=label)
        shuffle_r10 = []
        for s in range(n_sh):
            lists = [r if r is not None else cands[j] for j, r in enumerate(res[c]["shuffles"][s])]
            shuffle_r10.append(
                float(np.nanmean(C.per_user_metrics(pad(lists), truths)["recall@10"]))
            )
        noise = noise_floor(res[c]["shuffles"], repeat if c == "none" else None)
        shift = {}
        for other in ("none", "placebo"):
            if other == c or other not in contexts:
                continue
            per = np.full(len(users), np.nan)
            ags = []
            for j in range(len(users)):
                a = [
                    agreement(res[c]["shuffles"][s][j], res[other]["shuffles"][s][j])
                    for s in range(n_sh)
                    if res[c]["shuffles"][s][j] is not None
                    and res[other]["shuffles"][s][j] is not None
                ]
                if a:
                    ags.append({m: np.mean([x[m] for x in a]) for m in a[0]})
                    per[j] = ags[-1]["rbo"]
            shift[other] = {
                m: float(np.mean([g[m] for g in ags])) if ags else None
                for m in ("rbo", "jaccard@10", "tau")
            }
            per_user[(c, other)] = per
        fit = None
        if fit_aisles is not None:
            fit = float(
                np.mean(
                    [
                        np.mean([aisle_of[i] in fit_aisles[j] for i in ranked[j, :10] if i >= 0])
                        for j in range(len(users))
                    ]
                )
            )
        m = C.per_user_metrics(ranked, truths)
        rows[c] = {
            "R@10": float(np.nanmean(m["recall@10"])),
            "NDCG@10": float(np.nanmean(m["ndcg@10"])),
            "R@10 per shuffle": shuffle_r10,
            "shuffle spread": float(max(shuffle_r10) - min(shuffle_r10)),
            "noise floor": {
                mm: float(np.mean([g[mm] for g in noise])) if noise else None
                for mm in ("rbo", "jaccard@10", "tau")
            },
            "vs none": shift.get("none"),
            "vs placebo": shift.get("placebo"),
            "fit share top-10": fit,
            "failed per 100": float(100 * res[c]["failed"].mean()),
            "cand. recall": ceil,
        }
    # the paired statistic of the context-sensitivity claim: how much more the context moves
    # the ranking away from no-context than the placebo does (per-user RBO difference)
    stats = {}
    if ("placebo", "none") in per_user and ("context", "none") in per_user:
        stats["extra_shift_context_vs_placebo"] = paired_mean_ci(
            per_user[("placebo", "none")] - per_user[("context", "none")]
        )
    nf = noise_floor(res["none"]["shuffles"], repeat)
    if nf:
        stats["noise_floor_rbo"] = float(np.mean([a["rbo"] for a in nf]))
        stats["noise_floor_users"] = len(nf)
    return rows, stats


def noise_floor(shuffles, repeat=None) -> list:
    """Per-user agreement between two answers to the same prompts: shuffle 1 vs 2, or the
    first shuffle vs `repeat` (lists of the first len(repeat) users); failed answers skipped."""
    second = repeat if repeat is not None else shuffles[1] if len(shuffles) > 1 else []
    return [agreement(a, b) for a, b in zip(shuffles[0], second) if a is not None and b is not None]


def print_controls(name, rows, label, mode, shuffles):
    print(
        f"\ncontrols, {name} ({label}, {mode}; Borda over {shuffles if mode == 'listwise' else 1}"
        " shuffle(s); agreement = RBO / Jaccard@10 / tau):"
    )
    f = lambda v: "-" if v is None else f"{v:.3f}"
    ag = lambda a: (
        "-"
        if not a or a.get("rbo") is None
        else f"{a['rbo']:.2f}/{a['jaccard@10']:.2f}/{a['tau']:.2f}"
    )
    hdr = (
        f"  {'condition':<17}{'R@10':>7}{'NDCG@10':>8}{'spread':>8}{'noise floor':>16}"
        f"{'vs none':>16}{'vs placebo':>16}{'fit@10':>8}{'fail%':>7}{'ceiling':>8}"
    )
    print(hdr)
    for c, r in rows.items():
        print(
            f"  {CONDITION_NAMES[c]:<17}{r['R@10']:>7.3f}{r['NDCG@10']:>8.3f}"
            f"{r['shuffle spread']:>8.3f}{ag(r['noise floor']):>16}{ag(r['vs none']):>16}"
            f"{ag(r['vs placebo']):>16}{f(r['fit share top-10']):>8}"
            f"{r['failed per 100']:>7.1f}{r['cand. recall']:>8.3f}"
        )
    print(
        "  (spread: max - min R@10 over shuffles, position bias; noise floor: shuffle 1 vs 2 "
        "of the same prompt (pointwise: the first users' no-context prompts asked again); "
        "vs none / vs placebo: same shuffle, other condition; fit@10: "
        "share of the top-10 in aisles of the true occasion; ceiling: candidate recall)"
    )


def cost_report(client, llm_info, n_users) -> dict:
    """Tokens and dollars (Claude) or wall seconds (local) per 1,000 users."""
    n_in = sum(s["input_tokens"] for s in llm_info.values())
    n_out = sum(s["output_tokens"] for s in llm_info.values())
    secs = sum(s["seconds"] for s in llm_info.values())
    usage = client.usage_report()
    per_k = 1000 / max(n_users, 1)
    out = {
        "users": n_users,
        "answers": sum(s["answers"] for s in llm_info.values()),
        "api_calls": usage.get("api_calls"),
        "cache_hits": usage.get("cached"),
        "tokens_per_1000_users": int((n_in + n_out) * per_k) if n_in + n_out else None,
        "wall_s_this_run": round(secs, 1),
    }
    if client.backend == "local":
        out["wall_s_per_1000_users"] = round(secs * per_k, 1) if not usage.get("cached") else None
    else:
        d = llm.dollars(client.model, n_in, n_out)
        out["usd_per_1000_users"] = None if d is None else round(d * per_k, 3)
    return out


def verdicts(exp, sets, client, why, shift_stats, has_occ, gains):
    """One verdict line for each of the original study's two claims."""
    first = sets[0].name()
    lgbm = f"{first}: lightgbm"
    order = (
        f"{first}: candidate order (FAISS)"
        if sets[0].bought_n() == 0
        else f"{first}: candidate order (LightGBM top-{N_CANDIDATES})"
    )
    g_order = exp.gain(lgbm, order)["recall@10"]
    base = f"LightGBM minus the candidate order on {first}: R@10"
    ctx_arm = f"{first}: LLM context"
    if client is None or ctx_arm not in exp.runs:
        s1 = exp.verdict(
            "inconclusive",
            f"LLM arms skipped ({why}); {base} "
            f"{fmt_ci(g_order)} "
            "(the original study's 'LightGBM' arm was that candidate order)",
        )
        s2 = exp.verdict("inconclusive", f"context shift not measured: LLM arms skipped ({why})")
        return s1, s2
    g = exp.gain(ctx_arm, lgbm)["recall@10"]
    lo, hi = g["ci95"]
    status = "refuted" if hi < 0 else "confirmed" if lo > -COMPETITIVE_MARGIN else "inconclusive"
    s1 = exp.verdict(
        status,
        f"LLM with context ({client.label}) minus LightGBM on {first}, "
        f"R@10 {fmt_ci(g)} over {exp.gain(ctx_arm, lgbm)['n_users']} users "
        f"('competitive' = interval above -{COMPETITIVE_MARGIN}); {base} "
        f"{fmt_ci(g_order)}",
        n_users=exp.gain(ctx_arm, lgbm)["n_users"],
    )
    st = shift_stats.get(first, {})
    sh = st.get("extra_shift_context_vs_placebo")
    if sh is None or sh["n"] == 0:
        s2 = exp.verdict("inconclusive", "context shift not measured (no context arms)")
        return s1, s2
    real = sh["ci95"][0] > 0
    nf = st.get("noise_floor_rbo")
    text = f"context moves the ranking more than a placebo by RBO {fmt_ci(sh)} (noise floor " + (
        f"RBO {nf:.3f})" if nf is not None else "n/a: one answer per prompt)"
    )
    if has_occ:
        pc = exp.gain(ctx_arm, f"{first}: LLM placebo context")["recall@10"]
        rnd = exp.gain(f"{first}: LLM random occasion", f"{first}: LLM placebo context")
        text += (
            f"; true occasion minus placebo R@10 {fmt_ci(pc)}, random occasion minus "
            f"placebo {fmt_ci(rnd['recall@10'])}"
        )
        status = (
            "confirmed"
            if real and pc["ci95"][0] > 0
            else "refuted"
            if (sh["ci95"][1] < SHIFT_MARGIN or pc["ci95"][1] < 0)
            else "inconclusive"
        )
    else:
        status = (
            "confirmed" if real else "refuted" if sh["ci95"][1] < SHIFT_MARGIN else "inconclusive"
        )
        text += " (no positive control on these rows: no true occasions)"
    s2 = exp.verdict(status, text, n_users=sh["n"])
    return s1, s2


if __name__ == "__main__":
    C.main_guard(main)
