"""Experiment 3: does LLM reranking beat LightGBM, and does order context shift rankings
correctly?

Original finding (the original study): context-aware LLM reranking "demonstrably shifts
rankings" and its recall is "competitive with LightGBM" at much higher cost. Its LightGBM arm
was really the FAISS order, its LLM saw less than LightGBM did, and no control separated a
context effect from noise or position bias. Here every arm ranks the same candidates for the
same users:

    uv run llm_reranker.py --llm none                     # rankers only (LLM arms skipped)
    uv run llm_reranker.py --split temporal --llm local --llm-users 30
    uv run llm_reranker.py --data-dir DIR --split temporal  # real rows; Claude when a key is set
    uv run llm_reranker.py --quick                        # about a minute: a smoke run

Candidates per user: FAISS top-20 of the trained two-tower (the original setting) and the
pipeline's best set (faiss@50+bought) cut to its LightGBM top-20 (the LLM reorders what the
strongest stage proposes). Arms: candidate order, LightGBM, XGBoost (cross-fitted, every
training seed) and the LLM's conditions (first seed, --llm-users users), all filled into one
template with the same shopper facts (profile and recent orders, training rows only):
no context, context, a placebo context (a neutral sentence of the same length), on generated
data with --split temporal a random other occasion, and facts + context, whose candidate lines
also carry the facts LightGBM ranks on (orders with the item, their share, days since it was
last bought; training rows only): the fair arm, reported beside the bare context arm.
The context is what is known when the order is placed: on generated data with --split
temporal the held-out order's true occasion (the positive control), on real rows with
--split temporal the held-out order's day of week and hour, on the interaction split the time
of the user's last order (the original's setting: no truth to judge it against).

Verdicts, on every candidate set: "beats LightGBM" (facts + context - LightGBM, paired R@10
interval above 0), "competitive with LightGBM" (lower bound above -COMPETITIVE_MARGIN; refuted
only when the upper bound is below it) and "context shifts rankings correctly", judged only
against truth (true occasion beats the placebo and the random occasion; the held-out order's
time beats the placebo): movement without a gain is reported as movement. Controls (the
controls table): B seeded shuffles of each list aggregated by Borda count (position bias),
their agreement, the noise floor (the first users' no-context lists asked again with sampling,
a separate cache entry; n/a where sampling cannot change the answer), each condition's shift
from no context, and the share of the top-10 in aisles that fit the true occasion. An
unconstrained listwise arm (no id grammar; the first product's name and a one-line reason,
asked again with sampling) serves the evals. Every answer is saved (results/llm_reranker_
answers_*.jsonl) for evals/reranker_evals.py: a first line names the run (answers_header),
the file is replaced only when the run completes. Each arm's LLM cost (calls, seconds) is
printed and saved.
"""

import options

QUESTION = "Does LLM reranking beat LightGBM? Does context shift rankings correctly?"
ORIGINAL_FINDING = (
    'context-aware LLM reranking "demonstrably shifts rankings" and its recall is '
    '"competitive with LightGBM" at much higher cost'
)

# defaults (all overridable from the command line)
SEEDS = 3  # training seeds of the tower and the rankers
N_CANDIDATES = 20  # the list the LLM reorders (the original study's setting)
CANDIDATE_SETS = ("faiss@20", "faiss@50+bought")  # the original setting; the pipeline's best
RANKERS = ("lightgbm", "xgboost")
EVAL_USERS = 200  # users the LLM arms rank (seeded sample of the evaluation users)
SHUFFLES = 3  # seeded shuffles of each list (listwise: position bias, shuffle agreement)
FREE_USERS = 20  # users of the unconstrained listwise arm (first candidate set; the evals)
RECENT_ORDERS = 3  # training orders shown to the LLM, most recent first
RECENT_ITEMS = 8  # items listed per recent order
# the verdicts: the metric, and the margins (COMPETITIVE: LLM - LightGBM above -1 point)
VERDICT_METRIC = "recall@10"
COMPETITIVE_MARGIN = 0.01
BEATS_MARGIN = 0.0  # "beats" and "correctly": the paired interval above 0
INTERVAL = "95% paired bootstrap over users (first seed)"
QUICK = {
    "users": 400,
    "items": 1500,
    "epochs": 1,
    "seeds": 1,
    "llm_users": 2,
    "free_users": 1,
    "shuffles": 2,
    "no_tifu": True,
}
CONDITION_NAMES = {
    "none": "no context",
    "context": "context",
    "placebo": "placebo context",
    "random": "random occasion",
    "facts": "facts + context",
}
# where the context comes from, by data and split (order_contexts); only the first two have a
# truth to judge "correctly" against
CONTEXT_KINDS = {
    "occasion": "the held-out order's true occasion, the positive control",
    "time": "the held-out order's day of week and hour",
    "last order": "the time of the user's last order",
}


def parse_args(argv=None):
    p = options.script_parser(__doc__, seeds=SEEDS)
    g = p.add_argument_group("reranking")
    g.add_argument(
        "--candidate-sets",
        default=",".join(CANDIDATE_SETS),
        help="comma list: faiss@K (its top-20) and/or faiss@K+bought[N] (cut to its "
        f"LightGBM top-{N_CANDIDATES}); default %(default)s",
    )
    g.add_argument(
        "--llm-users",
        "--eval-users",
        "--reranker-users",
        dest="llm_users",
        type=int,
        default=EVAL_USERS,
        help="users the LLM arms rank, a seeded sample of the evaluation users "
        "(0 = all; --users is the data sample size; --eval-users and the original study's "
        "--reranker-users are the same option); default %(default)s",
    )
    g.add_argument(
        "--free-users",
        type=int,
        default=FREE_USERS,
        help="users of the unconstrained listwise arm (no id grammar; the first product's "
        "name and a one-line reason, asked again with sampling) on the first candidate set, "
        "for the evals' hallucination, reason alignment and noise floor (0: none); "
        "default %(default)s",
    )
    g.add_argument(
        "--shuffles",
        type=int,
        default=SHUFFLES,
        help="seeded shuffles of each candidate list (listwise: Borda aggregate; >= 2 "
        "gives the shuffle agreement); default %(default)s",
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
        "<data>_<split>_<time>_<hash>.jsonl, named like the run's results file)",
    )
    return options.parse_args_with_quick(p, argv, QUICK)


# --help answers here, before the heavy imports below (torch alone takes seconds)
options.help_before_imports(parse_args)

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import common as C
import config
import experiment
import llm
import llm_ranking as LR
import metrics
import prompts as P
import reranking
import text as T


def candidate_sets(args) -> list:
    """The parsed --candidate-sets, after every option check (a typo fails before any data
    is loaded)."""
    sets = [reranking.CandidateConfig.parse(c) for c in args.candidate_sets.split(",") if c.strip()]
    if not sets:
        raise C.ConfigError("--candidate-sets is empty")
    if args.shuffles < 1 or args.llm_users < 0 or args.free_users < 0:
        raise C.ConfigError("--shuffles must be >= 1, --llm-users and --free-users >= 0")
    if any(c.bought_n() == 0 and c.k < N_CANDIDATES for c in sets):
        raise C.ConfigError(f"a faiss@K candidate set needs K >= {N_CANDIDATES}")
    return sets


def ranking_mode(args) -> str:
    """listwise | pointwise: --mode, or for auto pointwise on the local backend (small local
    models, see --mode), else listwise."""
    if args.mode != "auto":
        return args.mode
    backend, _ = llm.resolve_backend(getattr(args, "llm", None))
    return "pointwise" if backend == "local" else "listwise"


# ---------------------------------------------------------------------------------------------
# what the LLM is told: the shopper (training rows), the context, the facts of the fair arm


def recent_orders_text(ds, train, user, n=RECENT_ORDERS, k=RECENT_ITEMS) -> str:
    """The user's last n TRAINING orders, most recent first, k item names each."""
    names = ds.items["product_name"].fillna("unknown product").to_numpy()
    return P.format_recent_orders(T.recent_orders(train[train["user"] == user], names, n, k))


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


def context_kind(ds, split) -> str:
    """Where the context comes from (CONTEXT_KINDS): the true occasion (generated data,
    temporal split), the held-out order's time (temporal split), else the last order's time."""
    if split.mode != "temporal":
        return "last order"
    return "occasion" if ds.occasions is not None else "time"


def order_contexts(exp, users, kind) -> tuple[dict, list | None]:
    """Per condition (none, context, placebo[, random], facts), the context text of each
    user's target order, and the true occasions (None unless kind is "occasion"). The
    placebo is as long as the context; `random` (occasions only) is another occasion drawn at
    random; the facts arm has the context's text."""
    tgt = target_orders(exp.ds, exp.split, users)
    if kind == "occasion":
        ctx = [P.occasion_context(o) for o in tgt["occasion"]]
    else:
        ctx = [
            P.time_context(int(r["order_dow"]), int(r["order_hour_of_day"]))
            for _, r in tgt.iterrows()
        ]
    contexts = {"none": [""] * len(users), "context": ctx}
    contexts["placebo"] = [P.placebo_context(len(t)) for t in ctx]
    if kind != "occasion":
        return {**contexts, "facts": ctx}, None
    occs = sorted(set(exp.ds.occasions["occasion"]))
    r2 = np.random.default_rng(C.RANDOM_SEED + 1)
    rand_occ = [r2.choice([o for o in occs if o != t]) for t in tgt["occasion"]]
    contexts["random"] = [P.occasion_context(o) for o in rand_occ]
    return {**contexts, "facts": ctx}, list(tgt["occasion"])


def candidate_facts(feats, train, users, cands) -> list[dict]:
    """Per user, {item: purchase facts} of each candidate (prompts.purchase_facts): the
    facts LightGBM ranks on (training orders with the item, their share of the user's
    training orders, days from its last purchase to the user's latest training order), from
    the training rows' features only."""
    pairs = feats.pairs
    keys = feats.pair_key(pairs["user"].to_numpy(), pairs["item"].to_numpy())
    n_orders = train.drop_duplicates("order_id").groupby("user").size()
    count = pairs["ui_count"].to_numpy()
    days = pairs["ui_days_since_last"].to_numpy()
    out = []
    for u, cand in zip(users, cands):
        k = feats.pair_key(np.full(len(cand), int(u)), np.asarray(cand))
        pos = np.minimum(np.searchsorted(keys, k), max(len(keys) - 1, 0))
        hit = keys[pos] == k if len(keys) else np.zeros(len(cand), bool)
        orders = int(n_orders.get(int(u), 0))
        out.append(
            {
                int(i): P.purchase_facts(int(count[p]), orders, float(days[p]))
                if h
                else P.purchase_facts(0, orders, None)
                for i, p, h in zip(cand, pos, hit)
            }
        )
    return out


def user_history(ds, feats, users) -> list[dict]:
    """Per user, what the training rows say they bought (the evals' facts true of the user):
    product names, aisles and departments."""
    it = ds.items
    out = []
    for u in users:
        items, _ = feats.bought(int(u))
        out.append(
            {
                "products": sorted(set(it["product_name"].to_numpy()[items])),
                "aisles": sorted(set(it["aisle"].fillna("unknown").to_numpy()[items])),
                "departments": sorted(set(it["department"].fillna("unknown").to_numpy()[items])),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# the controls of one candidate set: each condition's arm, shuffles, noise floor, shift


def control_rows(exp, name, res, lists: LR.UserLists, occasions, ceil, label, repeat=None):
    """Add each condition's Borda arm to the table; return the controls rows and the paired
    context-shift statistics (per-user agreement differences). The noise floor: each
    no-context answer against its sampled repeat (`repeat`: rankings of the first users, None
    where not measured); the shuffle agreement: shuffle 1 vs 2 of the same condition."""
    users, cands = lists.users, lists.cands
    truths = [exp.split.truth[int(u)] for u in users]
    rows, per_user = {}, {}
    for c in lists.contexts:
        ranked = pad(res[c]["borda"])
        exp.add(llm_arm(name, c), ranked, users, cand_recall=ceil, label=label)
        shuffle_r10 = []
        for answers in res[c]["shuffles"]:
            lists_s = [r if r is not None else cands[j] for j, r in enumerate(answers)]
            shuffle_r10.append(
                float(np.nanmean(C.per_user_metrics(pad(lists_s), truths)["recall@10"]))
            )
        shift = {}
        for other in ("none", "placebo"):
            if other != c and other in lists.contexts:
                shift[other], per_user[(c, other)] = LR.condition_shift(
                    res[c]["shuffles"], res[other]["shuffles"]
                )
        m = C.per_user_metrics(ranked, truths)
        sh = res[c]["shuffles"]
        rows[c] = {
            "R@10": float(np.nanmean(m["recall@10"])),
            "NDCG@10": float(np.nanmean(m["ndcg@10"])),
            "R@10 per shuffle": shuffle_r10,
            "shuffle spread": float(max(shuffle_r10) - min(shuffle_r10)),
            "noise floor": LR.mean_agreement(
                LR.noise_floor(sh, repeat) if c == "none" and repeat is not None else []
            ),
            "shuffle agreement": LR.mean_agreement(
                LR.noise_floor(sh, sh[1]) if len(sh) > 1 else []
            ),
            "vs none": shift.get("none"),
            "vs placebo": shift.get("placebo"),
            "fit share top-10": fit_share(exp.ds, ranked, occasions),
            "failed per 100": float(100 * res[c]["failed"].mean()),
            "cand. recall": ceil,
        }
    # the movement of the context claim: how much more the context moves the ranking away
    # from no-context than the placebo does (per-user RBO difference); movement, not a gain
    stats = {}
    if ("placebo", "none") in per_user and ("context", "none") in per_user:
        stats["extra_shift_context_vs_placebo"] = metrics.paired_mean_ci(
            per_user[("placebo", "none")] - per_user[("context", "none")]
        )
    nf = LR.noise_floor(res["none"]["shuffles"], repeat) if repeat is not None else []
    if nf:
        stats["noise_floor_rbo"] = float(np.mean([a["rbo"] for a in nf]))
        stats["noise_floor_users"] = len(nf)
    return rows, stats


def fit_share(ds, ranked, occasions) -> float | None:
    """Share of the top-10 in aisles that the true occasion boosts (None without true
    occasions)."""
    if occasions is None:
        return None
    import sample_generator as gen  # which aisles each occasion boosts

    aisle_of = ds.items["aisle"].fillna("").to_numpy()
    fit_aisles = [set(gen.OCCASION_AISLES.get(o, "").split("|")) - {""} for o in occasions]
    return float(
        np.mean(
            [
                np.mean([aisle_of[i] in fit_aisles[j] for i in ranked[j, :10] if i >= 0])
                for j in range(len(occasions))
            ]
        )
    )


def pad(lists, k=C.K_MAX) -> np.ndarray:
    """Ranked lists of unequal length (None: empty) as one [n, k] array, -1 padded."""
    out = -np.ones((len(lists), k), np.int64)
    for j, r in enumerate(lists):
        r = np.asarray(r if r is not None else [], np.int64)[:k]
        out[j, : len(r)] = r
    return out


def candidate_ceiling(exp, lists: np.ndarray, users) -> float:
    """R@20 of a candidate list, the ceiling of any reordering of it."""
    truths = [exp.split.truth[int(u)] for u in users]
    return float(np.nanmean(C.per_user_metrics(lists, truths)["recall@20"]))


def llm_arm(name: str, condition: str) -> str:
    """The arm of one LLM condition on candidate set `name`."""
    return f"{name}: LLM {CONDITION_NAMES[condition]}"


def order_arm(cc) -> str:
    """The candidate-order arm of a set: the FAISS order (faiss@K) or its LightGBM top-20."""
    if cc.bought_n() == 0:
        return f"{cc.name()}: candidate order (FAISS)"
    return f"{cc.name()}: candidate order (LightGBM top-{N_CANDIDATES})"


# ---------------------------------------------------------------------------------------------
# the two stages


def ranker_arms(exp, args, sets) -> dict:
    """Per training seed: the tower, its FAISS candidates and, per candidate set, the
    candidate order and the GBDT rankers (cross-fitted) as arms. Returns {set name: [len(
    exp.users), 20] candidate lists of the first seed}: the lists the LLM reorders."""
    k_max = max([C.K_MAX, *[c.k for c in sets]])
    cand_top = {}
    for seed in exp.seeds:
        model = exp.train(options.tower_config(args, seed))
        retrieved, scores = C.retrieve(model, exp.users, k_max)
        for cc in sets:
            faiss_only = cc.bought_n() == 0  # faiss@K: its own top-20 is the candidate list
            out = reranking.rerank(
                model,
                exp.users,
                exp.feats,
                exp.split,
                dataclasses.replace(cc, k=N_CANDIDATES) if faiss_only else cc,
                kinds=RANKERS,
                retrieved=(retrieved, scores),
                seed=seed,
            )
            top = (retrieved if faiss_only else out["lightgbm"][0])[:, :N_CANDIDATES]
            exp.add(order_arm(cc), top, cand_recall=candidate_ceiling(exp, top, exp.users))
            for kind, (ranked, info) in out.items():
                exp.add(f"{cc.name()}: {kind}", ranked, cand_recall=info["candidate_recall"])
            cand_top.setdefault(cc.name(), top)
    return cand_top


def llm_arms(exp, args, client, mode, sets, cand_top, llm_users, kind) -> dict:
    """The LLM arms on every candidate set (first seed's candidates, `llm_users`): the
    candidate order on those users and each condition's Borda arm in the table, their
    controls, and on the first set the free arm. Returns the results-JSON tables: controls,
    context_shift, llm_answers (answer stats per set), noise_floor_repeat, free_arm,
    llm_cost_per_arm ({set: {condition: llm_ranking.COST_FIELDS}}), answers_file (relative
    to the results JSON's folder) and answers_run (answers_header; both empty without an LLM), and
    answers_partial: (the answers under a partial name, their path) until publish_answers
    renames them."""
    out = {"controls": {}, "context_shift": {}, "llm_answers": {}, "noise_floor_repeat": {}}
    out.update(answers_file=None, free_arm=None, llm_cost_per_arm={}, occasions=None)
    n_llm = len(llm_users)
    if client is None or not n_llm:
        return out
    contexts, occasions = order_contexts(exp, llm_users, kind)
    out["occasions"] = occasions
    facts = T.user_profile_facts(exp.ds, exp.split.train, llm_users)
    profiles = [T.profile_template_text(f) for f in facts]
    recent = [recent_orders_text(exp.ds, exp.split.train, int(u)) for u in llm_users]
    history = user_history(exp.ds, exp.feats, llm_users)
    cat, llm_rows = LR.Catalog.of(exp.ds.items), np.searchsorted(exp.users, llm_users)
    path = answers_path(args, exp)
    out["answers_run"] = answers_header(exp, args, client, mode, sets, n_llm)
    n_sh = args.shuffles if mode == "listwise" else 1
    per_user = len(sets) * len(contexts) * n_sh * (1 if mode == "listwise" else N_CANDIDATES)
    print(
        f"LLM arms: {n_llm} users x {len(sets)} candidate sets x {len(contexts)} "
        f"conditions x {n_sh} shuffles = {per_user * n_llm:,} {mode} calls, + the noise "
        f"floor's repeat and the free arm ({client.label}; cached answers are not sent again)"
    )
    t0 = time.perf_counter()
    # a uniquely named partial file beside the answers file, renamed into place when the run
    # completes (publish_answers); a run that fails deletes it (the answers stay in the cache)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    out["answers_partial"] = (Path(tmp), path)
    with os.fdopen(fd, "w") as f, discard_on_error(out["answers_partial"]):
        f.write(json.dumps({"answers_run": out["answers_run"]}) + "\n")
        for ci, cc in enumerate(sets):
            name = cc.name()
            cands = [np.array([i for i in cand_top[name][r] if i >= 0]) for r in llm_rows]
            cfacts = candidate_facts(exp.feats, exp.split.train, llm_users, cands)
            lists = LR.UserLists(llm_users, cands, profiles, recent, contexts, cfacts, history)
            estimate = len(sets) if ci == 0 else 0
            res, out["llm_answers"][name], cost = LR.rerank_set(
                client, mode, cat, lists, args, name, f, estimate
            )
            ceil = candidate_ceiling(exp, pad(cands), llm_users)
            exp.add(f"{name}: candidate order [LLM users]", pad(cands), llm_users, cand_recall=ceil)
            repeat, out["noise_floor_repeat"][name] = LR.noise_repeat(
                client, mode, cat, lists, args, name, f
            )
            LR.add_cost(cost, out["noise_floor_repeat"][name].pop("cost", {}), "repeat ")
            if ci == 0:
                out["free_arm"] = {"set": name, **LR.free_arm(client, cat, lists, args, name, f)}
                LR.add_cost(cost, out["free_arm"].pop("cost", {}))
            out["llm_cost_per_arm"][name] = cost
            out["controls"][name], out["context_shift"][name] = control_rows(
                exp, name, res, lists, occasions, ceil, client.label, repeat
            )
    exp.timings["llm_s"] = round(time.perf_counter() - t0, 2)
    out["answers_file"] = os.path.relpath(path, exp.results_path().parent)  # from the JSON
    return out


def answers_header(exp, args, client, mode, sets, n_llm) -> dict:
    """What run an answers file belongs to (its first line, and the results JSON's
    answers_run): a unique run id, the data (experiment.SAME_DATA_KEYS), the split, the
    candidate sets, the options (every one; mode as resolved) and the LLM."""
    data, options = exp.ds.summary(), {k: v for k, v in vars(args).items() if k[0] != "_"}
    header = {
        "run_id": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(4).hex(),
        "data": {k: data.get(k) for k in experiment.SAME_DATA_KEYS},
        "split": {"mode": exp.split.mode, "seed": exp.split.seed},
        "candidate_sets": [cc.name() for cc in sets],
        "options": {**options, "mode": mode},
        "llm_users": n_llm,
        "llm": {"backend": client.backend, "model": client.model, "label": client.label},
    }
    plain = lambda v: v.item() if hasattr(v, "item") else str(v)  # numpy scalars, paths
    return json.loads(json.dumps(header, default=plain))  # as the results JSON holds it


@contextlib.contextmanager
def discard_on_error(partial: tuple | None):
    """Delete the partial answers file of `partial` (its path, the final path) when the
    block raises; a no-op for None."""
    try:
        yield
    except BaseException:
        if partial is not None:
            partial[0].unlink(missing_ok=True)
        raise


def publish_answers(arms: dict) -> None:
    """Rename the run's complete answers file into place (just before the results JSON that
    names it is written); a no-op without LLM answers."""
    if arms.get("answers_partial"):
        os.replace(*arms.pop("answers_partial"))


def answers_path(args, exp) -> Path:
    """--answers, or results/llm_reranker_answers_<data>_<split>_<time>_<hash>.jsonl, named
    like the run's results file (one per run; folder created)."""
    name = exp.run_name().replace("llm_reranker_", "llm_reranker_answers_", 1)
    path = Path(args.answers or config.RESULTS_DIR / f"{name}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def main(argv=None):
    args = parse_args(argv)
    sets = candidate_sets(args)  # options first, so a typo fails before any data is loaded

    # data, split, features, reference baselines
    exp = experiment.Experiment(
        "llm_reranker", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    exp.add_baselines()
    mode = ranking_mode(args)
    # pointwise on the local model: one slot, so the 20 calls of a list reuse one cached
    # prefix (4 slots each evaluate it again: 2.5 vs 3.1 calls/s measured on 2 cores)
    client = exp.start_llm(
        "reranker",
        "reranker_free",
        "rerank_pointwise",
        n_threads=args.threads,
        n_parallel=1 if mode == "pointwise" else 4,
    )
    if client:
        print(f"LLM mode: {mode}")
    # the LLM's users: a seeded sample of the evaluation users (nested across sizes)
    llm_users = experiment.sample_users(exp.users, args.llm_users)

    # stage 1: tower, candidates and the GBDT rankers, per training seed
    cand_top = ranker_arms(exp, args, sets)
    # stage 2: the LLM arms (first seed's candidates, llm_users) and their controls; the
    # context: the held-out order's true occasion (generated data, temporal split: the
    # positive control) or time (temporal split), else the last order's time
    kind = context_kind(exp.ds, exp.split)
    print(f"LLM context: {CONTEXT_KINDS[kind]}")
    arms = llm_arms(exp, args, client, mode, sets, cand_top, llm_users, kind)

    # report: arms table, paired gains, controls, cost, verdicts
    with discard_on_error(arms.get("answers_partial")):
        exp.print_table()
        gains = print_gain_tables(exp, sets, kind)
        for name, rows in arms["controls"].items():
            print_controls(name, rows, client.label, mode, args.shuffles)
        cost = print_cost(client, arms, len(llm_users)) if client else None
        verdict_lines, reads = state_verdicts(exp, sets, client, gains, arms, kind)
        publish_answers(arms)  # the run is complete: its answers replace the last complete ones
    exp.write(
        {
            "llm_mode": mode if client else None,
            "llm_users": len(llm_users),
            "shuffles": args.shuffles,
            "controls": arms["controls"],
            "context_shift": arms["context_shift"],
            "llm_answers": arms["llm_answers"],
            "noise_floor_repeat": arms["noise_floor_repeat"],
            "free_arm": arms["free_arm"],
            "cost": cost,
            "llm_cost_per_arm": arms["llm_cost_per_arm"],
            "gains": gains,
            "answers_file": arms["answers_file"],
            "answers_run": arms.get("answers_run"),
            "context_kind": kind,
            "positive_control": kind == "occasion",
            "verdicts": list(verdict_lines),
            "verdict_reads": reads,
            "reference_rows": [
                a for a in exp.runs if ": candidate order" in a and "[LLM users]" not in a
            ],
        }
    )
    return exp.summary()


# --- reporting: paired gains, the controls table, cost --------------------------------------


def print_gain_tables(exp, sets, kind) -> dict:
    """Print the paired gains over each set's LightGBM (rankers: every evaluation user; LLM
    arms: their users), over the candidate order on the LLM's users, of the facts arm over the
    bare context arm (what the facts are worth) and of the context arms over the placebo and
    the random occasion (the context verdict). Returns {reference: {arm: gain}} for the
    results JSON."""
    gains = {}
    for name in [c.name() for c in sets]:
        lgbm = f"{name}: lightgbm"
        rankers = [
            a
            for a in exp.runs
            if a.startswith(name)
            and a != lgbm
            and "[LLM" not in a
            and ": LLM" not in a
            and "(LightGBM top" not in a
        ]
        gains[lgbm] = exp.print_gains(rankers, lgbm)
        llm_rows = [a for a in exp.runs if a.startswith(f"{name}: LLM")]
        if not llm_rows:
            continue
        gains[f"{lgbm} (LLM users)"] = exp.print_gains(llm_rows, lgbm)
        order = f"{name}: candidate order [LLM users]"
        gains[order] = exp.print_gains(llm_rows, order)
        arm = lambda c, name=name: llm_arm(name, c)
        gains[arm("context")] = exp.print_gains([arm("facts")], arm("context"))
        against = [arm("context")] + ([arm("random")] if kind == "occasion" else [])
        gains[arm("placebo")] = exp.print_gains(against, arm("placebo"))
        if kind == "occasion":
            gains[arm("random")] = exp.print_gains([arm("context")], arm("random"))
    return gains


def print_controls(name, rows, label, mode, shuffles):
    """Print one candidate set's controls table (returns nothing)."""
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
        f"{'shuffles':>16}{'vs none':>16}{'vs placebo':>16}{'fit@10':>8}{'fail%':>7}"
        f"{'ceiling':>8}"
    )
    print(hdr)
    for c, r in rows.items():
        print(
            f"  {CONDITION_NAMES[c]:<17}{r['R@10']:>7.3f}{r['NDCG@10']:>8.3f}"
            f"{r['shuffle spread']:>8.3f}{ag(r['noise floor']):>16}"
            f"{ag(r['shuffle agreement']):>16}{ag(r['vs none']):>16}"
            f"{ag(r['vs placebo']):>16}{f(r['fit share top-10']):>8}"
            f"{r['failed per 100']:>7.1f}{r['cand. recall']:>8.3f}"
        )
    print(
        "  (spread: max - min R@10 over shuffles, position bias; noise floor: the first users' "
        "no-context answers against the same prompts asked again with sampling; shuffles: "
        "shuffle 1 vs 2 of one condition; vs none / vs placebo: same shuffle, other "
        "condition; fit@10: share of the top-10 in aisles of the true occasion; ceiling: "
        "candidate recall)"
    )


def print_cost(client, arms, n_users) -> dict:
    """Print and return the cost of the LLM arms: in all, tokens and dollars (Claude) or wall
    seconds (local) per 1,000 users; per arm (condition, noise floor's repeat, free arm) of
    each set, the calls sent and cached and their seconds."""
    llm_info = arms["llm_answers"]
    n_in = sum(s["input_tokens"] for s in llm_info.values())
    n_out = sum(s["output_tokens"] for s in llm_info.values())
    per_arm = arms["llm_cost_per_arm"]
    secs = sum(x["seconds"] for c in per_arm.values() for x in c.values())
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
    print("cost: " + ", ".join(f"{k} {v}" for k, v in out.items() if v is not None))
    for name, arm_cost in per_arm.items():
        print(f"LLM cost per arm, {name} ({client.label}; seconds of the calls this run made):")
        for c, x in arm_cost.items():
            rate = f", {x['sent'] / x['seconds']:.2f} calls/s" if x["sent"] and x["seconds"] else ""
            print(
                f"  {c:<28}{x['requests']:>7,} requests: {x['sent']:>7,} sent, "
                f"{x['cached']:>7,} cached, {x['seconds']:>9.1f} s{rate}"
            )
    return out


# --- the verdicts: on every candidate set, beats / competitive with LightGBM, and context ----


def state_verdicts(exp, sets, client, gains, arms, kind) -> tuple[list, dict]:
    """Print and return the verdict lines and what each reads (verdict_reads, for the report
    and its plots: {"<set>: <claim>[ (vs <reference>)]": {"gain": "gains.<reference key>.<arm>",
    arm, reference, metric, interval, claim, margin, the interval read, the line's index}}).
    On every candidate set: beats LightGBM, competitive with LightGBM, context shifts rankings
    correctly (it reads two gains with true occasions, none on the interaction split).
    Without LLM arms: one inconclusive line per claim, nothing read."""
    if client is None or not any(llm_arm(c.name(), "context") in exp.runs for c in sets):
        return skipped_verdicts(exp, sets)
    lines, reads = [], {}
    for cc in sets:
        shift = arms["context_shift"].get(cc.name(), {})
        for claim, verdict in (
            ("beats LightGBM", lightgbm_verdict),
            ("competitive with LightGBM", lightgbm_verdict),
            ("context shifts rankings correctly", context_verdict),
        ):
            status, text, n, read = verdict(exp, cc, claim, client.label, gains, shift, kind)
            lines.append(exp.verdict(status, text, n_users=n))
            for r in read:
                vs = f" (vs {r['reference'].split(': LLM ')[1]})" if len(read) > 1 else ""
                reads[f"{cc.name()}: {claim}{vs}"] = {**r, "verdict": len(lines) - 1}
    return lines, reads


def skipped_verdicts(exp, sets) -> tuple[list, dict]:
    """The three claims, inconclusive: the LLM arms were skipped (the reason said); the
    first line gives LightGBM minus the candidate order of every set (the original study's
    'LightGBM' arm was that order)."""
    why = exp.llm.note
    gaps = "; ".join(
        f"LightGBM minus the candidate order on {cc.name()}: R@10 "
        + experiment.format_interval(
            exp.gain(f"{cc.name()}: lightgbm", order_arm(cc))[VERDICT_METRIC]
        )
        for cc in sets
    )
    lines = [
        exp.verdict(
            "inconclusive",
            f"beats / competitive with LightGBM not measured: LLM arms skipped ({why}); {gaps} "
            "(the original study's 'LightGBM' arm was that candidate order)",
        ),
        exp.verdict("inconclusive", f"competitive with LightGBM not measured ({why})"),
        exp.verdict("inconclusive", f"context shift not measured: LLM arms skipped ({why})"),
    ]
    return lines, {}


def read_of(gains, key, arm, reference, claim, margin) -> dict:
    """What a verdict reads: gains[key][arm] (= arm - reference, VERDICT_METRIC, INTERVAL),
    the claim and its margin."""
    return {
        "gain": f"gains.{key}.{arm}",
        "arm": arm,
        "reference": reference,
        "metric": VERDICT_METRIC,
        "interval": INTERVAL,
        "claim": claim,
        "margin": margin,
        "mean": gains[key][arm][VERDICT_METRIC]["mean"],
        "ci95": gains[key][arm][VERDICT_METRIC]["ci95"],
    }


def half_width(g: dict) -> float:
    """Half the width of an interval: the smallest effect the run could detect."""
    return (g["ci95"][1] - g["ci95"][0]) / 2


def lightgbm_verdict(exp, cc, claim, label, gains, shift, kind):
    """'beats LightGBM' (interval above 0) or 'competitive with LightGBM' (lower bound
    above -COMPETITIVE_MARGIN; refuted only when the upper bound is below it) on one set,
    read on the facts arm (the LLM told what LightGBM ranks on) minus LightGBM; the bare
    context arm and what the facts are worth said beside. Returns (status, sentence,
    n_users, [what it reads: read_of])."""
    name, fi = cc.name(), experiment.format_interval
    key, ref = f"{name}: lightgbm (LLM users)", f"{name}: lightgbm"
    fair, bare = llm_arm(name, "facts"), llm_arm(name, "context")
    g = gains[key][fair]
    g["margin"] = COMPETITIVE_MARGIN  # the band the plot draws around the verdict's row
    r10, n = g[VERDICT_METRIC], g["n_users"]
    beats = claim.startswith("beats")
    word, margin = ("beats", BEATS_MARGIN) if beats else ("competitive", COMPETITIVE_MARGIN)
    rule = (
        "'beats' = interval above 0"
        if beats
        else f"'competitive' = lower bound above -{margin}, refuted only when the upper bound "
        f"is below -{margin}; margin {margin}"
    )
    text = (
        f"{name}: {claim}? LLM facts + context ({label}) minus LightGBM R@10 {fi(r10)} over "
        f"{n} users ({rule}; half-width {half_width(r10):.3f}); without the facts "
        f"{fi(gains[key][bare][VERDICT_METRIC])}, the facts worth "
        f"{fi(gains[bare][fair][VERDICT_METRIC])}"
    )
    if beats:
        gap = exp.gain(ref, order_arm(cc))[VERDICT_METRIC]
        text += f"; LightGBM minus the candidate order {fi(gap)} (all users)"
    status = experiment.verdict_word(r10["ci95"], word, margin)
    return status, text, n, [read_of(gains, key, fair, ref, word, margin)]


def context_verdict(exp, cc, claim, label, gains, shift, kind):
    """'context shifts rankings correctly' on one set, judged only against truth (R@10,
    paired): with true occasions, confirmed when the true occasion beats both the placebo and
    a random occasion; with the held-out order's time, when the context beats the placebo;
    refuted when one of them is reliably worse. On the interaction split there is no truth:
    inconclusive. The movement (RBO beyond the placebo's) is reported as movement. Returns
    (status, sentence, n_users, [what it reads: read_of])."""
    name, fi = cc.name(), experiment.format_interval
    arm = lambda c: llm_arm(name, c)
    pla = arm("placebo")
    sh, nf = shift.get("extra_shift_context_vs_placebo"), shift.get("noise_floor_rbo")
    movement = (
        "movement: the context moves the ranking more than a placebo by RBO "
        + (fi(sh) if sh and sh["n"] else "n/a")
        + " (movement, not a gain; noise floor "
        + (f"RBO {nf:.3f})" if nf is not None else "n/a)")
    )
    vs_placebo = gains[pla][arm("context")]
    g, n = vs_placebo[VERDICT_METRIC], vs_placebo["n_users"]
    if kind == "last order":
        text = (
            f"{name}: {claim}? not judged: the context ({CONTEXT_KINDS[kind]}) has no truth "
            f"on the interaction split (use --split temporal); context minus placebo R@10 "
            f"{fi(g)} over {n} users (reported, not judged); {movement}"
        )
        return "inconclusive", text, None, []
    vs_placebo["margin"] = BEATS_MARGIN
    reads = [read_of(gains, pla, arm("context"), pla, "beats", BEATS_MARGIN)]
    words = [experiment.verdict_word(g["ci95"], "beats", BEATS_MARGIN)]
    text = f"{name}: {claim}? context ({CONTEXT_KINDS[kind]}) minus placebo R@10 {fi(g)}"
    extra = ""
    if kind == "occasion":
        vs_random = gains[arm("random")][arm("context")]
        vs_random["margin"] = BEATS_MARGIN
        reads.append(
            read_of(gains, arm("random"), arm("context"), arm("random"), "beats", BEATS_MARGIN)
        )
        words.append(
            experiment.verdict_word(vs_random[VERDICT_METRIC]["ci95"], "beats", BEATS_MARGIN)
        )
        text += f", minus a random occasion {fi(vs_random[VERDICT_METRIC])}"
        extra = f"; random occasion minus placebo {fi(gains[pla][arm('random')][VERDICT_METRIC])}"
        n = min(n, vs_random["n_users"])
    rule = (
        "both above 0"
        if kind == "occasion"
        else "above 0: bought items move up more than under a placebo"
    )
    width = max(half_width(r) for r in reads)
    text += f" over {n} users (correct = {rule}, paired; half-width {width:.3f}){extra}; {movement}"
    return experiment.verdict_all(words), text, n, reads


if __name__ == "__main__":
    experiment.main_guard(main)
