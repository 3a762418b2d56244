"""Experiment 4: do occasion labels in the features improve the two-tower?

Question: does knowing a shopping occasion (weeknight dinner, party, breakfast, ...) improve
two-tower retrieval, and was the original study's negative result about the labels being
synthetic or about noise?
Original finding (2,000 heaviest users, 5,000 items): random occasion labels per order, turned
into per-user occasion fractions in the user features, moved R@20 0.1298 -> 0.1273 in one run,
read as "synthetic labels add noise".

    uv run synthetic_context.py                       # generated sample, temporal split
    uv run synthetic_context.py --data-dir DIR --llm none
    uv run synthetic_context.py --llm local --llm-users 100   # arm 4: local model, 100 users
    uv run synthetic_context.py --quick               # smoke run (about a minute)

Arms (each trained over --seeds seeds; the reference is the standard two-tower, same seeds):
  1. random fractions   the original protocol: a random occasion per training order ->
                        per-user occasion fractions appended to the user features. The labels
                        are drawn afresh on every training seed (seeded by it), so the interval
                        over seeds holds the label noise too.
  2. true fractions     the same with the generator's true occasions (order_occasions.csv;
                        generated data only, "skipped: no occasion truth" on real rows)
  3. context            request time: the held-out order's occasion is a query-side input of
                        the user tower (TowerConfig.n_contexts; each training row carries its
                        own order's occasion). Random (per seed) vs true labels. Temporal split.
  4. LLM labels         an LLM labels EVERY training order of a seeded subset of --llm-users
                        evaluation users (prompts.py: occasion_label; one call per order,
                        cached, so a killed run resumes). Evaluated on THOSE users, beside the
                        same users' random and true labels: the three arms differ only in the
                        labels of those users' orders (the other users' orders keep their true
                        labels on generated data; they stay unlabelled on real rows). Generated
                        data: accuracy against the true occasions and the confusion table. Real
                        rows: agreement of the labels with the order's hour and day (which the
                        LLM does not see) and with its aisles (which it does).
Every arm's gain over the two-tower is given twice: paired bootstrap over users (first seed)
and the per-seed differences (mean, std, 95% t interval over seeds), which decide. The seed
count: the per-seed std of the random-fraction gain is measured, and the run says how many
seeds a verdict needs to land either way at the original's -0.0025 (seed_plan).
"""

import options

QUESTION = "Do occasion labels in the features improve the two-tower?"
ORIGINAL_FINDING = (
    "2,000 heaviest users, 5,000 items: random occasion labels per order, as per-user occasion "
    "fractions in the user features, moved R@20 0.1298 -> 0.1273 in one run, read as "
    '"synthetic labels add noise"'
)

# defaults (all overridable from the command line)
# SEEDS, chosen from the measured seed noise on the real sample (1,445 users, temporal split,
# 2 epochs): an 8-seed pilot gave a per-seed std of the random-fraction R@20 gain of 0.0051
# (seeds_needed: 19, +25% -> 24); the 24-seed run measured 0.0060 (seeds_needed: 25), +20%
# -> 30. Each run prints its own seed plan (seed_plan) from the std it measures.
SEEDS = 30  # training seeds per arm
EPOCHS = 2  # training epochs per arm (the tower's default is 4; see README)
LLM_USERS = 100  # evaluation users whose every training order the LLM labels (arm 4)
LOCAL_S_PER_LABEL = 3.5  # measured: s per label, local 1.5B, basket last, 1 thread, busy 2 cores
BASKET_ITEMS = 25  # items shown per basket in the labelling prompt
LABEL_MAX_TOKENS = 60  # the occasion_label answer: {"occasion": ..., "confidence": ...}
BATCH_POLL_S = 30.0  # seconds between polls of a Claude message batch
ORIGINAL_EFFECT = -0.0025  # the original's single-run R@20 change
MIN_EFFECT = 0.005  # R@20 drop that matters ("hurts" is refuted when lo > -MIN_EFFECT)
# A "hurts" verdict lands either way at the original's effect when the interval around it can
# lie below 0 (confirmed) or above -MIN_EFFECT (refuted): a half-width <= 0.0025.
TARGET_HALF_WIDTH = min(-ORIGINAL_EFFECT, MIN_EFFECT + ORIGINAL_EFFECT)
METRIC = "recall@20"
CONTROL = {"true fractions": "random fractions", "context true": "context random"}
LLM_ARM, LLM_RANDOM, LLM_TRUE, LLM_BASE = (
    f"{a} (LLM users)" for a in ("LLM labels", "random labels", "true labels", "two-tower")
)
QUICK = {"users": 300, "items": 1500, "epochs": 1, "seeds": 2, "llm_users": 2}


def parse_args(argv=None):
    p = options.script_parser(__doc__, seeds=SEEDS)
    g = p.add_argument_group("experiment 4")
    g.add_argument(
        "--llm-users",
        type=int,
        default=LLM_USERS,
        help="evaluation users (seeded draw) whose every training order the LLM labels for "
        "arm 4; the LLM arms are evaluated on them (0: no LLM arm)",
    )
    g.add_argument(
        "--label-only",
        action="store_true",
        help="only label the orders (arm 4) and report the label checks; no training (a long "
        "local labelling run in the background; the full run then reads the cache)",
    )
    p.set_defaults(epochs=EPOCHS, split="temporal")
    args = options.parse_args_with_quick(p, argv, QUICK)
    if args.llm_users < 0:
        raise C.ConfigError("--llm-users must be >= 0")
    return args


# --help answers here, before the heavy imports below (torch alone takes seconds)
options.help_before_imports(parse_args)

import dataclasses
import hashlib
import time

import numpy as np
import pandas as pd

import common as C
import experiment
import metrics
from prompts import OCCASIONS, TEMPLATES
from sample_generator import OCCASION_AISLES

NAMED = [o for o in OCCASIONS if o != "other"]  # occasions a random label is drawn from


# ----------------------------------------------------------------------------
# labels per training order
def training_orders(split: C.Split) -> pd.DataFrame:
    """One row per training order: order_id, user (sorted by order_id)."""
    return (
        split.train[["order_id", "user"]]
        .drop_duplicates("order_id")
        .sort_values("order_id")
        .reset_index(drop=True)
    )


def true_codes(ds: C.Dataset, order_ids: np.ndarray) -> np.ndarray | None:
    """Index in OCCASIONS of each order's true occasion ("other" if unknown); None on real rows."""
    if ds.occasions is None:
        return None
    occ = ds.occasions.set_index("order_id")["occasion"]
    names = occ.reindex(order_ids).fillna("other").to_numpy()
    pos = {o: i for i, o in enumerate(OCCASIONS)}
    return np.array([pos.get(n, pos["other"]) for n in names], np.int64)


def random_labels(n_orders: int, n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a random occasion per training order, one per evaluation user's held-out order), a
    fresh draw per training seed: the label noise varies with the seed like the tower's."""
    rng = np.random.default_rng([seed, 4])
    return rng.integers(0, len(NAMED), n_orders), rng.integers(0, len(NAMED), n_users)


def row_contexts(split: C.Split, orders: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
    """The label of each training row's own order (`codes` aligned with `orders`)."""
    return codes[np.searchsorted(orders["order_id"].to_numpy(), split.train["order_id"].to_numpy())]


def held_out_orders(split: C.Split, users: np.ndarray) -> np.ndarray:
    """The held-out order of each user (temporal split: each user's last order)."""
    first = split.test.drop_duplicates("user").set_index("user")["order_id"]
    return first.reindex(users).to_numpy()


def user_fractions(n_users: int, users: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[n_users, len(OCCASIONS)] share of each user's labelled orders per occasion; codes < 0
    mean unlabelled and are left out; a user with no labelled order gets a zero row."""
    keep = codes >= 0
    k = len(OCCASIONS)
    counts = np.bincount(users[keep] * k + codes[keep], minlength=n_users * k).reshape(n_users, k)
    tot = counts.sum(1, keepdims=True)
    return (counts / np.maximum(tot, 1)).astype(np.float32)


def with_user_columns(feats: C.Features, extra: np.ndarray, prefix: str) -> C.Features:
    """A Features copy whose user matrix carries `extra` columns (the user tower reads
    feats.user)."""
    return dataclasses.replace(
        feats,
        user=np.hstack([feats.user, extra]).astype(np.float32),
        user_names=[*feats.user_names, *[f"{prefix}_{o}" for o in OCCASIONS]],
    )


def retrieve_with_context(
    model: C.TwoTower, users: np.ndarray, context: np.ndarray, k: int = C.K_MAX
) -> np.ndarray:
    """C.retrieve with a request context per user."""
    index = C.faiss_index(model.embed_items())
    _, ranked = index.search(np.ascontiguousarray(model.embed_users(users, context=context)), k)
    return ranked.astype(np.int64)


def digest(a: np.ndarray) -> str:
    """Short content hash of a label array: part of a saved tower's key."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


def seed_gain(exp: experiment.Experiment, arm: str, ref: str, metric: str = METRIC) -> dict:
    """Per-seed difference arm - ref of the mean metric (same seed, same users), with a 95% t
    interval over seeds (metrics.seed_interval)."""
    diffs = [a["all"][metric] - b["all"][metric] for a, b in zip(exp.runs[arm], exp.runs[ref])]
    return metrics.seed_interval(diffs)


# ----------------------------------------------------------------------------
# how many seeds: the verdict must be able to land either way at the original's effect
def seed_plan(sgain: dict) -> dict:
    """The seed count of this run against the count the verdict needs (metrics.seed_plan at
    TARGET_HALF_WIDTH), from the per-seed gains of the arm the verdict reads."""
    return metrics.seed_plan(sgain, TARGET_HALF_WIDTH)


# ----------------------------------------------------------------------------
# arm 4: the LLM labels every training order of a seeded subset of evaluation users
@dataclasses.dataclass
class LLMLabels:
    users: np.ndarray  # the evaluation users whose orders were labelled (sorted)
    orders: np.ndarray  # bool over training_orders(): the orders of those users
    codes: np.ndarray  # LLM occasion code per training order (-1: not labelled or failed)
    info: dict  # counts, calls, time, cost, accuracy or agreement (the results JSON entry)


def llm_subset(users: np.ndarray, orders: pd.DataFrame, n: int):
    """(`n` evaluation users with training orders, sorted; the indices into `orders` of
    their training orders). The users are a prefix of one seeded permutation and their
    orders come user by user in that order, so the subsets are nested and a labelling run
    stopped after k users has labelled the whole subset of k users."""
    o_user = orders["user"].to_numpy()
    with_orders = np.intersect1d(users, o_user)
    drawn = np.random.default_rng(C.RANDOM_SEED).permutation(with_orders)[:n]
    rank = np.full(o_user.max() + 1, len(drawn), np.int64)
    rank[drawn] = np.arange(len(drawn))
    idx = np.flatnonzero(rank[o_user] < len(drawn))
    idx = idx[np.lexsort((orders["order_id"].to_numpy()[idx], rank[o_user[idx]]))]
    return np.sort(drawn), idx


def basket_texts(ds: C.Dataset, split: C.Split, order_ids: np.ndarray) -> pd.Series:
    """order_id -> its TRAINING rows' items as 'name (aisle)' lines, cart order, at most
    BASKET_ITEMS."""
    rows = split.train[split.train["order_id"].isin(order_ids)]
    rows = rows.sort_values(["order_id", "add_to_cart_order"])
    names = (
        ds.items["product_name"].fillna("unknown product")
        + " ("
        + ds.items["aisle"].fillna("unknown aisle")
        + ")"
    ).to_numpy()
    return rows.groupby("order_id")["item"].apply(
        lambda s: "\n".join(names[s.to_numpy()[:BASKET_ITEMS]])
    )


def label_orders(client, ds: C.Dataset, split: C.Split, orders: pd.DataFrame, pick: np.ndarray):
    """LLM occasion code per training order (-1 where not picked or failed) for the orders
    `pick` (indices into `orders`, sent in that order), one request per order, and the run's
    counts: orders asked, sent (not cached), model calls, calls per sent order, failures,
    seconds."""
    ids = orders["order_id"].to_numpy()[pick]
    baskets = basket_texts(ds, split, ids)
    tmpl = TEMPLATES["occasion_label"]
    reqs = [tmpl.request(basket=baskets[o], max_tokens=LABEL_MAX_TOKENS) for o in ids]
    before = client.usage_report()
    # what will be sent: distinct requests (orders with the same basket share one) not cached
    keys = {llm_key(client, q) for q in reqs}
    sent = sum(client.cache.get(k) is None for k in keys)
    est = ""
    if client.backend == "local":
        est = f"; estimate {sent * LOCAL_S_PER_LABEL / 60:.0f} min at {LOCAL_S_PER_LABEL} s a label"
    print(
        f"arm 4: {client.label} labels {len(reqs):,} training orders: {len(reqs) - len(keys)} "
        f"share a basket, {len(keys) - sent} cached, {sent} to send{est}"
    )
    t0 = time.perf_counter()
    res = client.run_batch(reqs, poll_interval=BATCH_POLL_S)
    wall = time.perf_counter() - t0
    after = client.usage_report()
    pos = {o: i for i, o in enumerate(OCCASIONS)}
    ok = np.array([pos[r.data["occasion"]] if r.ok and r.data else -1 for r in res], np.int64)
    codes = np.full(len(orders), -1, np.int64)
    codes[pick] = ok
    counts = ("api_calls", "batch_requests", "reasks")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in counts}
    delta["api_calls"] += delta["batch_requests"]  # a batch item is one model call too
    info = {
        "orders_asked": len(reqs),
        "orders_labelled": int((ok >= 0).sum()),
        "failed": int((ok < 0).sum()),
        "orders_sent": sent,
        "duplicate_baskets": len(reqs) - len(keys),
        "api_calls": delta["api_calls"],
        "reasks": delta["reasks"],
        "calls_per_order": round(delta["api_calls"] / sent, 3) if sent else None,
        "wall_s": round(wall, 1),
        "s_per_label": round(wall / sent, 2) if sent else None,
    }
    return codes, info


def llm_key(client, req) -> str:
    """The LLM cache's key of a request (llm.cache_key)."""
    import llm

    return llm.cache_key(client.identity, req)


def run_llm_labels(exp, client, orders: pd.DataFrame, truth) -> LLMLabels:
    """Arm 4's labels: every training order of --llm-users evaluation users, the label
    checks (accuracy on generated data, agreement with hour / day / aisles everywhere)."""
    users, idx = llm_subset(exp.users, orders, exp.args.llm_users)
    mask = np.zeros(len(orders), bool)
    mask[idx] = True
    codes, info = label_orders(client, exp.ds, exp.split, orders, idx)
    info["users"] = len(users)
    info["orders_per_user"] = round(mask.sum() / max(len(users), 1), 1)
    if truth is not None:
        info.update(label_accuracy(truth[mask], codes[mask]))
    info["agreement"] = label_agreement(exp.ds, exp.split, orders[mask], codes[mask])
    info["usage"] = client.usage_report()
    n = max(info["orders_asked"], 1)
    info["per_1000_orders"] = {
        "usd": round(info["usage"].get("total_cost_usd", 0.0) * 1000 / n, 4),
        "wall_s": round(info["wall_s"] * 1000 / n, 1),
    }
    exp.labels[LLM_ARM] = client.label
    return LLMLabels(users, mask, codes, info)


def confusion(truth: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Counts of (true, LLM) occasion pairs over the occasions that occur in either."""
    k = len(OCCASIONS)
    m = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k)
    used = (m.sum(0) + m.sum(1)) > 0
    short = [o[:9] for o in OCCASIONS]
    return pd.DataFrame(
        m[np.ix_(used, used)], index=np.array(OCCASIONS)[used], columns=np.array(short)[used]
    )


def label_accuracy(truth: np.ndarray, codes: np.ndarray) -> dict:
    """The LLM's labels (`codes`, -1 = failed) against the true occasions of the same orders:
    accuracy over the labelled ones, per true occasion (recall) and per LLM label (precision),
    the majority-class and chance accuracies beside it, and the confusion counts."""
    labelled = codes >= 0
    t, pred = truth[labelled], codes[labelled]
    cm = confusion(t, pred)
    per = {
        o: {
            "n_true": int((t == i).sum()),
            "recall": float(np.mean(pred[t == i] == i)) if (t == i).any() else None,
            "n_llm": int((pred == i).sum()),
            "precision": float(np.mean(t[pred == i] == i)) if (pred == i).any() else None,
        }
        for i, o in enumerate(OCCASIONS)
    }
    return {
        "accuracy": float(np.mean(t == pred)) if len(t) else None,
        "majority_class_accuracy": float(np.bincount(truth).max() / max(len(truth), 1)),
        "chance_accuracy": 1 / len(NAMED),
        "per_occasion": per,
        "confusion": {
            "rows_truth": list(cm.index),
            "cols_pred": list(cm.columns),
            "counts": cm.to_numpy().tolist(),
        },
    }


# --- what can be checked without true occasions
def occasion_aisle_match(aisles) -> np.ndarray:
    """[n_aisles, len(OCCASIONS)] bool: an aisle name belongs to an occasion when one of the
    occasion's aisle terms (sample_generator.OCCASION_AISLES) contains it or is contained in
    it, word-aligned ('beer' ~ 'beers coolers', 'cereal' ~ 'cold cereal')."""
    out = np.zeros((len(aisles), len(OCCASIONS)), bool)
    for j, occ in enumerate(OCCASIONS):
        terms = [t for t in OCCASION_AISLES.get(occ, "").split("|") if t]
        for i, a in enumerate(aisles):
            a = f" {str(a).lower()} "
            out[i, j] = any(f" {t} " in a or a in f" {t} " or f" {t}" in a for t in terms)
    return out


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two categorical arrays (0: independent, 1: one determines the other)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    obs = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(obs, (ai, bi), 1)
    exp = obs.sum(1, keepdims=True) * obs.sum(0, keepdims=True) / obs.sum()
    chi2 = np.nansum((obs - exp) ** 2 / np.where(exp > 0, exp, np.nan))
    k = min(obs.shape) - 1
    return float(np.sqrt(chi2 / (obs.sum() * k))) if k > 0 else float("nan")


def association(labels: np.ndarray, other: np.ndarray, n_perm: int = 200) -> dict:
    """Cramér's V of labels vs `other` and its permutation p-value (labels shuffled, seeded)."""
    v = cramers_v(labels, other)
    rng = np.random.default_rng(C.RANDOM_SEED)
    null = np.array([cramers_v(rng.permutation(labels), other) for _ in range(n_perm)])
    return {"cramers_v": v, "null_mean": float(null.mean()), "p": float((null >= v).mean())}


def label_agreement(ds: C.Dataset, split: C.Split, orders: pd.DataFrame, codes: np.ndarray):
    """How the LLM's labels of `orders` line up with what the LLM did not see (the order's
    hour and day: Cramér's V and permutation p, morning and weekend shares per label) and
    with what it saw (the share of the order's items in the label's aisles, against the
    share in the same aisles over all labelled orders)."""
    ok = codes >= 0
    orders, codes = orders[ok], codes[ok]
    if not len(codes):
        return {"orders": 0}
    rows = split.train[split.train["order_id"].isin(orders["order_id"])]
    meta = rows.drop_duplicates("order_id").set_index("order_id").reindex(orders["order_id"])
    hour, dow = meta["order_hour_of_day"].to_numpy(), meta["order_dow"].to_numpy()
    match = occasion_aisle_match(ds.items["aisle"].fillna("").to_numpy())
    pos = np.searchsorted(orders["order_id"].to_numpy(), rows["order_id"].to_numpy())
    share = np.zeros((len(orders), len(OCCASIONS)))
    np.add.at(share, pos, match[rows["item"].to_numpy()])
    share /= np.bincount(pos, minlength=len(orders))[:, None]
    per = {}
    for i, o in enumerate(OCCASIONS):
        m = codes == i
        if m.any():
            per[o] = {
                "n": int(m.sum()),
                "mean_hour": float(hour[m].mean()),
                "morning_share": float(np.mean(hour[m] < 11)),
                "weekend_share": float(np.mean(np.isin(dow[m], (0, 1)))),
                "aisle_share": float(share[m, i].mean()),
                "aisle_share_all_orders": float(share[:, i].mean()),
            }
    own = share[np.arange(len(codes)), codes]
    return {
        "orders": len(codes),
        "hour_block": association(codes, np.digitize(hour, [6, 11, 15, 19])),
        "day": association(codes, dow),
        "own_aisle_share": float(own.mean()),
        "own_aisle_share_shuffled": float(
            share[np.arange(len(codes)), np.random.default_rng(0).permutation(codes)].mean()
        ),
        "per_label": per,
    }


# ----------------------------------------------------------------------------
# training: every arm on one seed
def train_fraction_arm(exp, cfg: C.TowerConfig, fractions: np.ndarray) -> np.ndarray:
    """Ranked lists of a two-tower whose user features carry the occasion fractions."""
    feats = with_user_columns(exp.feats, fractions, "occ")
    variant = {"arm": "user_fractions", "labels": digest(fractions)}
    return C.retrieve(exp.train(cfg, feats=feats, variant=variant), exp.users)[0]


def train_context_arm(exp, seed: int, orders, labels: np.ndarray, held: np.ndarray):
    """Ranked lists of a two-tower whose user tower reads the occasion at request time: each
    training row its own order's label, each evaluation user its held-out order's (`held`)."""
    cfg = options.tower_config(exp.args, seed, n_contexts=len(OCCASIONS))
    model = exp.train(
        cfg,
        context=row_contexts(exp.split, orders, labels),
        variant={"arm": "context", "labels": digest(labels)},
    )
    return retrieve_with_context(model, exp.users, held)


def train_seed(exp, seed: int, orders: pd.DataFrame, truth, lab: LLMLabels | None) -> None:
    """Every arm on one training seed; random labels are drawn from this seed."""
    ds, split, users = exp.ds, exp.split, exp.users
    cfg = options.tower_config(exp.args, seed)
    o_user = orders["user"].to_numpy(np.int64)
    rand, held_rand = random_labels(len(orders), len(users), seed)
    fractions = lambda codes: user_fractions(ds.n_users, o_user, codes)
    ranked = {"two-tower": C.retrieve(exp.train(cfg), users)[0]}
    ranked["random fractions"] = train_fraction_arm(exp, cfg, fractions(rand))
    if truth is not None:
        ranked["true fractions"] = train_fraction_arm(exp, cfg, fractions(truth))
    if split.mode == "temporal":
        ranked["context random"] = train_context_arm(exp, seed, orders, rand, held_rand)
        if truth is not None:
            held_true = true_codes(ds, held_out_orders(split, users))
            ranked["context true"] = train_context_arm(exp, seed, orders, truth, held_true)
    for name, r in ranked.items():
        exp.add(name, r)
    if lab is None:
        return
    # arm 4 on the LLM's users: the arms differ only in the labels of those users' orders
    rows = np.searchsorted(users, lab.users)
    exp.add(LLM_BASE, ranked["two-tower"][rows], users=lab.users)
    base = truth if truth is not None else np.full(len(orders), -1, np.int64)
    arms = {LLM_ARM: lab.codes, LLM_RANDOM: rand}
    if truth is not None:
        arms[LLM_TRUE] = truth
    for name, codes in arms.items():
        labels = np.where(lab.orders, np.where(lab.codes >= 0, codes, -1), base)
        exp.add(name, train_fraction_arm(exp, cfg, fractions(labels))[rows], users=lab.users)


# ----------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)

    # data, temporal split, features from training rows, reference baselines
    exp = experiment.Experiment(
        "synthetic_context", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    client = exp.start_llm("occasion_label")
    exp.add_baselines()
    orders = training_orders(exp.split)
    truth = true_codes(exp.ds, orders["order_id"].to_numpy())  # None on real rows

    # arms that cannot run are reported as skipped, with the reason
    notes = {}
    if exp.split.mode != "temporal":
        notes["context"] = "skipped: request-time context needs --split temporal"
    if truth is None:
        notes["true fractions"] = "skipped: no occasion truth"
        notes["context true"] = "skipped: no occasion truth"

    # arm 4: an LLM labels every training order of --llm-users evaluation users
    lab = None
    if client is None:
        notes["llm"] = f"skipped: {exp.llm.note}"
    elif args.llm_users == 0:
        notes["llm"] = "skipped: --llm-users 0"
    else:
        lab = run_llm_labels(exp, client, orders, truth)
    if args.label_only:
        return label_only_report(exp, lab, notes)

    # train: baseline and every arm over the same seeds (random labels redrawn per seed)
    for seed in exp.seeds:
        train_seed(exp, seed, orders, truth, lab)

    # report: the table, gains over the two-tower (paired over users, then over seeds)
    exp.print_table(title=f"experiment 4 ({exp.split.mode} split, R@K over held-out items)")
    for name, note in notes.items():
        print(f"  {name}: {note}")
    trained = [a for a in exp.runs if a in (*CONTROL, *CONTROL.values())]
    refs = {a: "two-tower" for a in trained}
    if lab is not None:
        refs.update({a: LLM_BASE for a in (LLM_ARM, LLM_RANDOM, LLM_TRUE) if a in exp.runs})
        refs.update({f"{LLM_ARM} vs {r}": r for r in (LLM_RANDOM, LLM_TRUE) if r in exp.runs})
    gains = print_paired_gains(exp, refs)
    sgains = print_seed_gains(exp, refs)
    plan = seed_plan(sgains["random fractions"])
    print_seed_plan(plan, exp)
    if lab is not None:
        print_llm_labels(lab.info, client.label)

    verdict(exp, gains, sgains, plan, lab.info if lab else None)
    exp.write(
        {
            "verdict_reads": verdict_reads(sgains),
            "tower_config": {
                **options.tower_config(args, exp.seeds[0]).key(),
                "seed": exp.seeds,
            },
            "random_labels": "drawn afresh per training seed (random_labels(seed))",
            "gains_first_seed": gains,
            "gains_over_seeds": sgains,
            "seed_plan": plan,
            "notes": notes,
            "occasions": list(OCCASIONS),
            "llm_labels": lab.info if lab else None,
        }
    )
    return exp.summary()


# --- reporting: gains, the seed plan, the LLM's labels, the verdict
def verdict_reads(sgains: dict) -> dict:
    """What the verdict reads (for the report and its plots), with its margin also written
    into the gain dict it reads ("margin")."""
    sgains["random fractions"]["margin"] = MIN_EFFECT
    return {
        "hurts": {
            "gain": "gains_over_seeds.random fractions",
            "metric": METRIC,
            "reference": "two-tower",
            "interval": "t over seeds (one seed: paired bootstrap over users)",
            "claim": "hurts",
            "margin": MIN_EFFECT,
        }
    }


def label_only_report(exp, lab: LLMLabels | None, notes: dict) -> dict:
    """--label-only: the label checks and a results JSON of their own; no arm is trained."""
    if lab is not None:
        print_llm_labels(lab.info, exp.llm.client.label)
    path = exp.results_path()
    if exp.args.out is None:
        exp.args.out = str(path.with_name(path.name.replace("synthetic_context", "exp4_labels")))
    exp.verdict("inconclusive", "label-only run (--label-only): no arm trained, no finding")
    exp.write({"notes": notes, "llm_labels": lab.info if lab else None})
    return {}


def arm_and_ref(name: str, ref: str) -> tuple[str, str]:
    """'A vs B' names a comparison of two arms; a plain name an arm against `ref`."""
    return (name.split(" vs ")[0], ref) if " vs " in name else (name, ref)


def print_paired_gains(exp, refs: dict) -> dict:
    """Prints and returns the paired bootstrap gains over users (first seed) of each
    {arm (or 'A vs B'): reference}."""
    print("gain (first seed; 95% paired bootstrap over the users both arms share):")
    out = {}
    for name, ref in refs.items():
        arm, ref = arm_and_ref(name, ref)
        out[name] = g = exp.gain(arm, ref, ("recall@20", "recall@10", "ndcg@10"))
        cells = "  ".join(
            f"{m} {experiment.format_interval(v, 4)}" for m, v in g.items() if m != "n_users"
        )
        print(f"  {name:<50} - {ref:<24}{cells}  ({g['n_users']} users)")
    return out


def print_seed_gains(exp, refs: dict) -> dict:
    """Prints and returns {arm: seed_gain over its reference} ({arm: reference} as above)."""
    print(f"gain per training seed ({METRIC}, same seed, same users; mean, std, 95% t interval):")
    out = {}
    for name, ref in refs.items():
        arm, ref = arm_and_ref(name, ref)
        out[name] = g = seed_gain(exp, arm, ref)
        ci = "-" if g["ci95"] is None else f"[{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]"
        per = " ".join(f"{x:+.4f}" for x in g["per_seed"][:12])
        more = " ..." if len(g["per_seed"]) > 12 else ""
        print(f"  {name:<50}{g['mean']:+.4f} ± {g['std'] or 0:.4f} {ci}  per seed {per}{more}")
    return out


def print_seed_plan(plan: dict, exp) -> None:
    """Prints the seed count against the count the verdict needs, and the tower's seed std."""
    runs = exp.runs["two-tower"]
    base = np.std([r["all"][METRIC] for r in runs], ddof=1) if len(runs) > 1 else float("nan")
    plan["two_tower_std"] = None if np.isnan(base) else float(base)
    if plan["std"] is None:
        print("seed plan: 1 seed; the seed std is not measured (run --seeds >= 2)")
        return
    need = plan["needed"]
    print(
        f"seed plan: {plan['seeds']} seeds; per-seed std of the random-fraction {METRIC} gain "
        f"{plan['std']:.4f} (two-tower alone {base:.4f}); half-width {plan['half_width']:.4f}; "
        f"landing either way at the original's {ORIGINAL_EFFECT} needs a half-width <= "
        f"{TARGET_HALF_WIDTH:.4f}: {need if need else 'more than 2000'} seeds at this std -> "
        + ("enough" if plan["enough"] else "NOT enough")
    )


def print_llm_labels(info: dict, label: str) -> None:
    """Prints the LLM's labelling: coverage, calls, time, cost; on generated data, accuracy
    (per occasion) and the confusion table; everywhere, agreement with hour, day, aisles."""
    per_1000 = info["per_1000_orders"]
    print(
        f"\nLLM occasion labels [{label}]: every training order of {info['users']} users: "
        f"{info['orders_labelled']}/{info['orders_asked']} orders labelled "
        f"({info['orders_sent']} sent, {info['api_calls']} model calls = "
        f"{info['calls_per_order']} per sent order), {info['wall_s']}s "
        f"({info['s_per_label']} s per label), per 1,000 orders ${per_1000['usd']} / "
        f"{per_1000['wall_s']}s"
    )
    if info.get("accuracy") is not None:
        print(
            f"label accuracy {info['accuracy']:.3f} (majority class "
            f"{info['majority_class_accuracy']:.3f}, chance {1 / len(NAMED):.3f}); per true "
            "occasion (recall / precision): "
            + ", ".join(
                f"{o} {_f(p['recall'])}/{_f(p['precision'])} (n {p['n_true']})"
                for o, p in info["per_occasion"].items()
                if p["n_true"] or p["n_llm"]
            )
        )
        cm = info["confusion"]
        print("confusion (rows truth, columns LLM):")
        print(
            pd.DataFrame(cm["counts"], index=cm["rows_truth"], columns=cm["cols_pred"]).to_string()
        )
    ag = info["agreement"]
    if ag.get("orders"):
        hb, day = ag["hour_block"], ag["day"]
        print(
            f"agreement over {ag['orders']} labelled orders: label vs hour block Cramér's V "
            f"{hb['cramers_v']:.3f} (shuffled {hb['null_mean']:.3f}, p {hb['p']:.3f}); vs day "
            f"{day['cramers_v']:.3f} (shuffled {day['null_mean']:.3f}, p {day['p']:.3f}); share "
            f"of an order's items in its label's aisles {ag['own_aisle_share']:.3f} (labels "
            f"shuffled {ag['own_aisle_share_shuffled']:.3f})"
        )
        rows = {
            o: {k: v for k, v in p.items() if k != "aisle_share_all_orders"}
            for o, p in ag["per_label"].items()
        }
        print(experiment.format_table(rows, list(next(iter(rows.values()))), first="LLM label"))


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def truth_helps(exp, arm: str, gains: dict, sgains: dict) -> bool:
    """Whether a true-label arm shows a real occasion signal: its interval over seeds (the
    paired one with one seed) lies above 0 with every seed above 0, and it beats its
    random-label control, paired over users (a random context can "help" too, through extra
    capacity or noise)."""
    ci = sgains[arm]["ci95"] or gains[arm][METRIC]["ci95"]
    if experiment.verdict_word(ci, "beats", seeds=sgains[arm]["per_seed"]) != "confirmed":
        return False
    control = CONTROL[arm]
    if control not in exp.runs:
        return True
    vs_control = exp.gain(arm, control, (METRIC,))[METRIC]["ci95"]
    return experiment.verdict_word(vs_control, "beats") == "confirmed"


def seed_ci(gains: dict, sgains: dict, arm: str):
    """The deciding interval of an arm: over seeds; with one seed, the paired one."""
    return sgains[arm]["ci95"] or gains[arm][METRIC]["ci95"]


def fmt_gain(gains: dict, sgains: dict, arm: str) -> str:
    over = experiment.format_interval(
        {"mean": sgains[arm]["mean"], "ci95": seed_ci(gains, sgains, arm)}, 4
    )
    where = "over seeds" if sgains[arm]["ci95"] else "paired over users, one seed"
    return f"{over} {where}"


def noise_clause(plan: dict) -> str:
    """What the measured seed noise says about the original's single run."""
    if plan["std"] is None:
        return (
            "one seed: the seed noise is not measured, so the original's single run is not judged"
        )
    two = 2 * plan["std"]
    where = "within" if abs(ORIGINAL_EFFECT) <= two else "outside"
    return (
        f"one run's gain varies by ±{two:.4f} (2 std over seeds), so the original's single-run "
        f"{ORIGINAL_EFFECT} is {where} seed noise"
    )


def seeds_clause(plan: dict, status: str) -> str:
    """How many seeds the run used against the count the verdict needs at the original's
    effect: enough or not, and where the interval landed anyway (an effect far from the
    original's can decide with fewer seeds), that it did."""
    if plan["std"] is None:
        return "1 seed"
    need = plan["needed"] or "more than 2000"
    head = (
        f"{plan['seeds']} seeds, half-width {plan['half_width']:.4f} (the smallest effect this "
        f"run can detect)"
    )
    if plan["enough"] or status == "inconclusive":
        can = "can" if plan["enough"] else "cannot"
        return (
            f"{head}: the verdict {can} land either way at the original's {ORIGINAL_EFFECT} "
            f"({need} seeds needed at this std)"
        )
    return (
        f"{head}: the interval lands ({status}) though a run of this size cannot land either "
        f"way at an effect of exactly the original's {ORIGINAL_EFFECT} ({need} seeds needed "
        "at this std)"
    )


def verdict(exp, gains: dict, sgains: dict, plan: dict, llm_info: dict | None) -> str:
    """The verdict line. Original claim: synthetic (random) occasion fractions lower R@20
    (claim "hurts", margin MIN_EFFECT), decided on the interval over seeds (with one seed,
    the paired interval): confirmed below 0, refuted when it rules out a drop of MIN_EFFECT,
    else inconclusive. Each clause follows from the numbers: the seed plan, the seed noise,
    the true-occasion arms (truth_helps) and the LLM labels against the same users' random
    and true labels."""
    ci = seed_ci(gains, sgains, "random fractions")
    status = experiment.verdict_word(ci, "hurts", MIN_EFFECT)
    s = (
        f"random occasion fractions (redrawn per seed) change R@20 by "
        f"{fmt_gain(gains, sgains, 'random fractions')}; {seeds_clause(plan, status)}; "
        f"{noise_clause(plan)}"
    )
    truth_arms = [a for a in ("true fractions", "context true") if a in gains]
    if truth_arms:
        s += "; true occasions: " + ", ".join(
            f"{a} {fmt_gain(gains, sgains, a)}" for a in truth_arms
        )
        s += (
            " - a real occasion signal helps, so the original negative result is about random "
            "labels (noise), not about labels being synthetic"
            if any(truth_helps(exp, a, gains, sgains) for a in truth_arms)
            else " - no arm with true occasions beats both the baseline and its random control"
        )
    if "context random" in gains:
        s += f"; context random {fmt_gain(gains, sgains, 'context random')}"
    if llm_info is not None:
        s += "; " + llm_clause(gains, sgains, llm_info)
    return exp.verdict(status, s)


def llm_clause(gains: dict, sgains: dict, info: dict) -> str:
    """The LLM arm in the verdict: its users and orders, accuracy, and its R@20 against the
    same users' random and true labels."""
    acc = (
        f", accuracy {info['accuracy']:.3f} vs majority class {info['majority_class_accuracy']:.3f}"
        if info.get("accuracy") is not None
        else ""
    )
    n = f"{info['users']} users ({info['orders_labelled']} orders{acc})"
    s = f"LLM labels on every order of {n}:"
    vs = [k for k in (f"{LLM_ARM} vs {LLM_RANDOM}", f"{LLM_ARM} vs {LLM_TRUE}") if k in sgains]
    parts = [f"R@20 {fmt_gain(gains, sgains, LLM_ARM)} vs their two-tower"]
    parts += [f"{fmt_gain(gains, sgains, k)} vs {k.split(' vs ')[1].split(' (')[0]}" for k in vs]
    return s + " " + ", ".join(parts)


if __name__ == "__main__":
    experiment.main_guard(main)
