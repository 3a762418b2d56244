"""Metrics: one implementation for every table in the project (conventions in
per_user_metrics' docstring), bootstrap intervals over users (and over users and items
together: two_way_bootstrap), paired gains, intervals over seeds, and the agreement between
two rankings (RBO, Jaccard@10, Kendall tau).
"""

from __future__ import annotations

import numpy as np

from config import RANDOM_SEED
from features import Features
from splits import Split

KS = (5, 10, 20)  # cut-offs reported everywhere; K_MAX = 20 = retrieval candidates
K_MAX = max(KS)


def per_user_metrics(ranked: np.ndarray, truths: list, ks=KS) -> dict:
    """Per-user metric arrays for ranked lists against sets of relevant items.

    ranked: [n_users, >= max(ks)] item indices, best first; -1 marks an empty slot
        (a list shorter than K), which never counts as a hit.
    truths: per user, an array of the distinct relevant items (held-out items).
        Users with an empty truth get NaN and are excluded from every average.
    Conventions (binary relevance, train items NOT removed from the ranking):
      Recall@K    = |top-K ∩ truth| / |truth|   (denominator: all of the user's
                    distinct held-out items, even when |truth| > K; the original study's definition)
      Precision@K = |top-K ∩ truth| / K
      HitRate@K   = 1 if |top-K ∩ truth| > 0 else 0
      NDCG@K      = DCG@K / IDCG@K, DCG@K = sum_{r=1..K} rel_r / log2(r + 1), and
                    IDCG@K = sum_{r=1..min(|truth|, K)} 1 / log2(r + 1)
    """
    kmax = max(ks)
    if ranked.shape[1] < kmax:
        ranked = np.hstack([ranked, -np.ones((len(ranked), kmax - ranked.shape[1]), ranked.dtype)])
    ranked = ranked[:, :kmax]
    hits = np.zeros(ranked.shape, dtype=bool)
    sizes = np.zeros(len(ranked))
    for j, t in enumerate(truths):
        sizes[j] = len(t)
        if len(t):
            hits[j] = np.isin(ranked[j], t) & (ranked[j] >= 0)
    valid = sizes > 0
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            h = hits[:, :k].sum(1)
            out[f"recall@{k}"] = np.where(valid, h / sizes, np.nan)
            out[f"precision@{k}"] = np.where(valid, h / k, np.nan)
            out[f"hit@{k}"] = np.where(valid, (h > 0).astype(float), np.nan)
            dcg = (hits[:, :k] * disc[:k]).sum(1)
            out[f"ndcg@{k}"] = np.where(
                valid, dcg / ideal[np.minimum(sizes, k).astype(int)], np.nan
            )
    return out


def split_truth(split: Split, feats: Features, users: np.ndarray) -> dict:
    """Ground truth of `users`, whole and split into repeat items (bought by the user
    in training rows) and explore items (not bought by the user before)."""
    full, rep, exp = [], [], []
    for u in users:
        t = split.truth.get(int(u), np.empty(0, np.int64))
        h = feats.bought(int(u))[0]
        m = np.isin(t, h)
        full.append(t)
        rep.append(t[m])
        exp.append(t[~m])
    return {"all": full, "repeat": rep, "explore": exp}


def evaluate(
    ranked: np.ndarray,
    users: np.ndarray,
    split: Split,
    feats: Features,
    ks=KS,
    n_boot: int = 1000,
    seed: int = RANDOM_SEED,
) -> dict:
    """Macro-averaged metrics over `users` (the evaluation users, those with >= 1
    held-out item), for all held-out items and for the repeat / explore subsets.
    A subset's average runs over users with >= 1 item in that subset; the ranking
    is the same list in all three. 95% bootstrap intervals (users resampled, seeded)
    are given for the 'all' metrics."""
    truths = split_truth(split, feats, users)
    out = {}
    for part, t in truths.items():
        per = per_user_metrics(ranked, t, ks)
        n = int(np.sum([len(x) > 0 for x in t]))
        out[part] = {
            "n_users": n,
            **{m: float(np.nanmean(v)) if n else float("nan") for m, v in per.items()},
        }
        if part == "all":
            out["ci95"] = bootstrap_ci(per, n_boot, seed)
    return out


def paired_gain(
    ranked_a: np.ndarray,
    ranked_b: np.ndarray,
    users: np.ndarray,
    split: Split,
    metrics=("recall@10", "ndcg@10"),
    n_boot: int = 1000,
    seed: int = RANDOM_SEED,
) -> dict:
    """Mean per-user difference metric(a) - metric(b) over `users` with >= 1 held-out item,
    and its 95% interval from resampling users (the same resample for both lists, so
    the spread between users cancels: tighter than comparing two unpaired intervals)."""
    truths = [split.truth.get(int(u), np.empty(0, np.int64)) for u in users]
    a, b = per_user_metrics(ranked_a, truths), per_user_metrics(ranked_b, truths)
    out = {}
    for m in metrics:
        d = (a[m] - b[m])[~np.isnan(a[m])]
        ci = bootstrap_ci({m: d}, n_boot, seed)[m]
        out[m] = {"mean": float(d.mean()), "ci95": ci}
    return out


def bootstrap_ci(per_user: dict, n_boot: int = 1000, seed: int = RANDOM_SEED) -> dict:
    """95% percentile interval of each metric's mean over users, resampling users."""
    rng = np.random.default_rng(seed)
    ci = {}
    for m, v in per_user.items():
        v = v[~np.isnan(v)]
        if len(v) == 0:
            continue
        means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
        ci[m] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return ci


# ranking agreement: how much two rankings of the same candidates differ (reranker controls)
RBO_P = 0.9  # RBO persistence: the top ~10 ranks carry ~86% of the weight
JACCARD_K = 10


def rbo(a, b, p: float = RBO_P) -> float:
    """Extrapolated rank-biased overlap (Webber et al. 2010) of two rankings, in [0, 1].

    RBO_ext = (1-p) * sum_{d<=k} p^(d-1) A_d + p^k A_k, A_d = |a[:d] & b[:d]| / d, k = the
    shorter length. Identical lists give 1, disjoint ones 0."""
    a, b = list(a), list(b)
    k = min(len(a), len(b))
    if k == 0:
        return float("nan")
    seen_a, seen_b, overlap, total = set(), set(), 0, 0.0
    for d in range(1, k + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += p ** (d - 1) * overlap / d
    return float((1 - p) * total + p**k * overlap / k)


def jaccard_at(a, b, k: int = JACCARD_K) -> float:
    """|top-k(a) & top-k(b)| / |top-k(a) | top-k(b)|."""
    sa, sb = set(list(a)[:k]), set(list(b)[:k])
    return float(len(sa & sb) / len(sa | sb)) if sa | sb else float("nan")


def kendall_tau(a, b) -> float:
    """Kendall tau-a between two orderings of the items they share (1 = same order)."""
    pos_b = {x: i for i, x in enumerate(b)}
    r = np.array([pos_b[x] for x in a if x in pos_b])
    n = len(r)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    s = np.sign(r[j] - r[i])
    return float(s.sum() / len(s))


def agreement(a, b) -> dict:
    """RBO, Jaccard@10 and Kendall tau of two rankings."""
    return {"rbo": rbo(a, b), "jaccard@10": jaccard_at(a, b), "tau": kendall_tau(a, b)}


# ----------------------------------------------------------------------------
# a two-way bootstrap: users and items resampled together (a finding about item text must
# hold for other items as well as for other users)
def recall_pairs(ranked: np.ndarray, truths: list, k: int = 10) -> tuple:
    """(user row, item, hit) for every (user, held-out item) pair of `truths` (one array per
    row of `ranked`): hit = 1.0 when the item is in the row's top k. A user's Recall@k is the
    mean of its pairs' hits (per_user_metrics' definition)."""
    rows, items, hits = [], [], []
    for j, t in enumerate(truths):
        t = np.unique(np.asarray(t, np.int64))
        top = ranked[j, :k]
        rows.append(np.full(len(t), j, np.int64))
        items.append(t)
        hits.append(np.isin(t, top[top >= 0]).astype(float))
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)
    return cat(rows, np.int64), cat(items, np.int64), cat(hits, float)


def two_way_bootstrap(
    rows: np.ndarray,
    items: np.ndarray,
    values: np.ndarray,
    n_boot: int = 1000,
    seed: int = RANDOM_SEED,
    chunk: int = 100,
) -> dict:
    """Mean over users of each user's mean `values` over its (user, item) pairs, with a 95%
    interval from resampling users AND items together (Owen's two-way "pigeonhole" bootstrap):
    in each replicate every user and every item gets a multinomial weight, a user's mean is
    weighted by its items' weights, and users without a drawn item drop out. Conservative
    for crossed effects; with one item per user it is the bootstrap over users.
    Paired gains pass values = hit_a - hit_b (Recall@k of two lists over the same pairs).
    Returns {"mean", "ci95", "n_users", "n_items"}."""
    from scipy import sparse

    rows, items, values = np.asarray(rows), np.asarray(items), np.asarray(values, float)
    if not len(values):
        nan = float("nan")
        return {"mean": nan, "ci95": [nan, nan], "n_users": 0, "n_items": 0}
    u_ids, u = np.unique(rows, return_inverse=True)
    i_ids, i = np.unique(items, return_inverse=True)
    n_u, n_i = len(u_ids), len(i_ids)
    val = sparse.csr_matrix((values, (u, i)), shape=(n_u, n_i))
    has = sparse.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_u, n_i))
    per_user = np.asarray(val.sum(1)).ravel() / np.asarray(has.sum(1)).ravel()
    rng = np.random.default_rng(seed)

    def weights(c: int, n: int) -> np.ndarray:  # c multinomial resamples of n units
        draws = rng.integers(0, n, size=(c, n)) + (np.arange(c) * n)[:, None]
        return np.bincount(draws.ravel(), minlength=c * n).reshape(c, n).astype(float)

    means = []
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        w_i, w_u = weights(c, n_i).T, weights(c, n_u).T  # [n_i, c], [n_u, c]
        num, den = val @ w_i, has @ w_i  # per user and replicate
        ok = den > 0
        r = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
        w = w_u * ok
        means.append((w * r).sum(0) / np.maximum(w.sum(0), 1e-12))
    means = np.concatenate(means)
    return {
        "mean": float(per_user.mean()),
        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
        "n_users": int(n_u),
        "n_items": int(n_i),
    }


def paired_recall_users_items(
    ranked_a: np.ndarray,
    ranked_b: np.ndarray,
    truths: list,
    k: int = 10,
    n_boot: int = 1000,
    seed: int = RANDOM_SEED,
) -> dict:
    """Recall@k of list a - list b over the same users and held-out items, with the two-way
    bootstrap interval over users and items (two_way_bootstrap)."""
    rows, items, hit_a = recall_pairs(ranked_a, truths, k)
    _, _, hit_b = recall_pairs(ranked_b, truths, k)
    return two_way_bootstrap(rows, items, hit_a - hit_b, n_boot, seed)


# ----------------------------------------------------------------------------
# intervals the experiments share: over users (paired) and over training seeds
def paired_mean_ci(d: np.ndarray, seed: int = RANDOM_SEED) -> dict:
    """Mean of per-user differences `d` and its 95% bootstrap interval over users (NaN
    entries, users without a value, are dropped): {"mean", "ci95", "n"}."""
    d = np.asarray(d, float)
    d = d[~np.isnan(d)]
    if not len(d):
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    ci = bootstrap_ci({"d": d}, seed=seed)["d"]
    return {"mean": float(d.mean()), "ci95": ci, "n": len(d)}


def seed_interval(diffs) -> dict:
    """Per-seed differences (arm - reference, each on the same seed) with their mean, std
    (ddof 1) and a 95% t interval over seeds (n - 1 degrees of freedom); std and interval
    are None with one seed."""
    from scipy import stats

    d = np.asarray(diffs, float)
    if len(d) < 2:
        return {"per_seed": d.tolist(), "mean": float(d.mean()), "std": None, "ci95": None}
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {
        "per_seed": d.tolist(),
        "mean": float(d.mean()),
        "std": float(d.std(ddof=1)),
        "ci95": [float(d.mean() - half), float(d.mean() + half)],
    }


def seeds_needed(std: float | None, half_width: float, cap: int = 2000) -> int | None:
    """Smallest n >= 2 whose 95% t interval over n seeds, t(n-1) * std / sqrt(n), is no wider
    than `half_width` each side (None when std is unknown or n would exceed `cap`)."""
    from scipy import stats

    if std is None or not np.isfinite(std):
        return None
    if std == 0:
        return 2
    for n in range(2, cap + 1):
        if stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) <= half_width:
            return n
    return None


def seed_plan(sgain: dict, target_half_width: float) -> dict:
    """The seed count of a run against the count a verdict needs, from the per-seed gains
    `sgain` (seed_interval) of the arm the verdict reads: half_width is the run's own t
    half-width, needed the seeds at which it would reach `target_half_width`."""
    ci = sgain["ci95"]
    half = None if ci is None else (ci[1] - ci[0]) / 2
    return {
        "seeds": len(sgain["per_seed"]),
        "std": sgain["std"],
        "half_width": half,
        "target_half_width": target_half_width,
        "needed": seeds_needed(sgain["std"], target_half_width),
        "enough": half is not None and half <= target_half_width,
    }
