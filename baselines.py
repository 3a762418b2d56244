"""Simple baselines, strong ones: random, popularity, personal top-frequency (padded with
popular items) and TIFU-KNN (Hu et al., SIGIR 2020). Personal top-frequency is the bar a
grocery recommender has to clear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from config import RANDOM_SEED
from features import Features
from metrics import K_MAX, per_user_metrics


def popularity_ranking(feats: Features, users: np.ndarray, k: int = K_MAX) -> np.ndarray:
    """The k most purchased training items, the same list for everyone."""
    top = feats.popularity_order()[:k]
    return np.tile(top, (len(users), 1))


def top_frequency_order(feats: Features) -> np.ndarray:
    """Permutation of feats.pairs grouped by user, each user's items in the top-frequency
    baseline's order: most bought, then more recent, then lower index (more popular)."""
    p = feats.pairs
    return np.lexsort(
        (
            p["item"].to_numpy(),
            p["ui_orders_since_last"].to_numpy(),
            -p["ui_count"].to_numpy(),
            p["user"].to_numpy(),
        )
    )


def top_frequency_ranking(
    feats: Features, users: np.ndarray, k: int = K_MAX, pad_popular: bool = False
) -> np.ndarray:
    """The user's own most bought training items (ties: more recent first, then more
    popular), -1 past the end of a short purchase list, or padded with the most popular
    items the user has not bought when pad_popular=True."""
    items_sorted = feats.pairs["item"].to_numpy()[top_frequency_order(feats)]
    popular = feats.popularity_order()[: 2 * k]
    out = -np.ones((len(users), k), dtype=np.int64)
    for j, u in enumerate(users):
        s, e = feats.bought_indptr[u], feats.bought_indptr[u + 1]
        own = items_sorted[s:e][:k]
        out[j, : len(own)] = own
        if pad_popular and len(own) < k:
            fill = popular[~np.isin(popular, own)][: k - len(own)]
            out[j, len(own) : len(own) + len(fill)] = fill
    return out


def random_ranking(
    n_items: int, users: np.ndarray, k: int = K_MAX, seed: int = RANDOM_SEED
) -> np.ndarray:
    """k distinct uniformly random items per user (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(n_items, size=min(k, n_items), replace=False) for _ in users])


@dataclass
class TifuConfig:
    """TIFU-KNN (Hu et al., SIGIR 2020), defaults = the paper's Instacart setting.
    A user's training baskets, oldest first, are cut into groups of `group_size` (the
    oldest group takes the remainder); inside a group basket j of m weighs
    within_decay^(m-1-j) and the group vector is the weighted sum / m; the user vector is
    sum_g group_decay^(G-1-g) * group_g / G. Prediction = alpha * own vector +
    (1 - alpha) * mean of the `neighbours` nearest users' vectors (euclidean).
    `pool` > 0 searches the neighbours among a seeded sample of that many users instead of
    all of them (the exact search costs users^2: hours at Kaggle's 206k users)."""

    neighbours: int = 900
    within_decay: float = 0.9
    group_decay: float = 0.7
    group_size: int = 3
    alpha: float = 0.9
    pool: int = 0  # 0: every user is a candidate neighbour (the paper's exact search)


TIFU_GRID = {"alpha": (0.5, 0.7, 0.9), "neighbours": (100, 300, 900)}  # tuned on training rows


def tifu_user_vectors(train: pd.DataFrame, n_users: int, n_items: int, cfg: TifuConfig):
    """Sparse [n_users, n_items] TIFU user vectors from `train` rows (baskets = orders)."""
    import scipy.sparse as sp

    o = train[["user", "order_number"]].drop_duplicates().sort_values(["user", "order_number"])
    u = o["user"].to_numpy(np.int64)
    n_b = np.bincount(u, minlength=n_users)[u]  # baskets of the user
    pos = o.groupby("user").cumcount().to_numpy()  # 0 = oldest basket
    n_g = -(-n_b // cfg.group_size)  # groups (ceil)
    rem = n_b - (n_g - 1) * cfg.group_size  # size of the oldest group
    g = np.where(pos < rem, 0, 1 + (pos - rem) // cfg.group_size)  # group index, 0 = oldest
    m = np.where(g == 0, rem, cfg.group_size)  # size of this basket's group
    j = np.where(g == 0, pos, (pos - rem) % cfg.group_size)  # place inside the group
    w = (cfg.within_decay ** (m - 1 - j) / m) * (cfg.group_decay ** (n_g - 1 - g) / n_g)
    key = pd.MultiIndex.from_arrays([o["user"], o["order_number"]])
    rows = pd.MultiIndex.from_arrays([train["user"], train["order_number"]])
    row_w = pd.Series(w, index=key).reindex(rows).to_numpy()
    # an item twice in one basket counts once: dedupe (user, order, item)
    d = pd.DataFrame(
        {
            "u": train["user"].to_numpy(),
            "o": train["order_number"].to_numpy(),
            "i": train["item"].to_numpy(),
            "w": row_w,
        }
    ).drop_duplicates(["u", "o", "i"])
    return sp.csr_matrix(
        (d["w"].to_numpy(np.float64), (d["u"].to_numpy(), d["i"].to_numpy())),
        shape=(n_users, n_items),
    )


def neighbour_pool(n_users: int, pool: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """The users TIFU-KNN searches for neighbours, sorted: all of them (pool 0, or a pool
    at least as large), else a seeded sample of `pool` users."""
    if pool <= 0 or pool >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng([seed, pool]).choice(n_users, pool, replace=False))


def _tifu_neighbours(
    vecs, users: np.ndarray, k: int, pool: np.ndarray | None = None, block: int = 1024
) -> np.ndarray:
    """Indices of the k nearest users (euclidean, self excluded) of each of `users`, among
    the sorted user indices `pool` (None: every user)."""
    sq = np.asarray(vecs.multiply(vecs).sum(1)).ravel()
    if pool is None:
        pool, pool_vecs_t, pool_sq = np.arange(vecs.shape[0]), vecs.T, sq
    else:
        pool = np.asarray(pool, np.int64)
        pool_vecs_t, pool_sq = vecs[pool].T, sq[pool]
    k = min(k, len(pool) - 1)
    out = np.zeros((len(users), max(k, 0)), np.int64)
    for s in range(0, len(users), block):
        b = users[s : s + block]
        d = sq[b, None] + pool_sq[None, :] - 2 * (vecs[b] @ pool_vecs_t).toarray()
        # a user is not its own neighbour (where it is in the pool)
        at = np.minimum(np.searchsorted(pool, b), len(pool) - 1)
        mine = pool[at] == b
        d[np.nonzero(mine)[0], at[mine]] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k > 0 else out[:0]
        out[s : s + len(b)] = pool[
            np.take_along_axis(
                part, np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable"), 1
            )
        ]
    return out


def _tifu_rank(
    vecs, nbrs: np.ndarray, users: np.ndarray, alpha: float, n_nbrs: int, k: int, block: int = 1024
) -> np.ndarray:
    import scipy.sparse as sp

    out = np.empty((len(users), k), np.int64)
    for s in range(0, len(users), block):
        b = users[s : s + block]
        own = vecs[b].toarray()
        nb = nbrs[s : s + len(b), :n_nbrs]
        # the neighbours' mean vector as one sparse product: rows of 1/n at the neighbours
        avg = sp.csr_matrix(
            (
                np.full(nb.size, 1.0 / max(n_nbrs, 1)),
                nb.ravel(),
                np.arange(0, nb.size + 1, max(n_nbrs, 1))[: len(b) + 1],
            ),
            shape=(len(b), vecs.shape[0]),
        )
        score = alpha * own + (1 - alpha) * (avg @ vecs).toarray()
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        out[s : s + len(b)] = np.take_along_axis(
            top, np.argsort(-np.take_along_axis(score, top, 1), axis=1, kind="stable"), 1
        )
    return out


def tifu_knn_ranking(
    train: pd.DataFrame,
    users: np.ndarray,
    n_users: int,
    n_items: int,
    k: int = K_MAX,
    tune: bool = True,
    cfg: TifuConfig | None = None,
    seed: int = RANDOM_SEED,
) -> tuple[np.ndarray, dict]:
    """TIFU-KNN top-k for `users` from `train` rows. With `tune`, alpha and the neighbour
    count are picked on TRAINING rows only: each user's last training order is held out,
    vectors are built from the earlier ones and Recall@k over those users chooses from
    TIFU_GRID (decays and group size keep the paper's values). Returns (ranked, config)."""
    cfg = cfg or TifuConfig()
    info = {"grid": None}
    pool = None if cfg.pool <= 0 else neighbour_pool(n_users, cfg.pool, seed)
    if tune:
        last = train.groupby("user")["order_number"].transform("max")
        first = train.groupby("user")["order_number"].transform("min")
        inner = train[(train["order_number"] < last) | (last == first)]
        held = train[(train["order_number"] == last) & (last > first)]
        tune_users = np.unique(held["user"].to_numpy())
        rng = np.random.default_rng(seed)
        tune_users = np.sort(rng.permutation(tune_users)[:2000])  # cost bound
        truth = [
            g.to_numpy()
            for _, g in held[held["user"].isin(tune_users)]
            .drop_duplicates(["user", "item"])
            .groupby("user")["item"]
        ]
        vecs = tifu_user_vectors(inner, n_users, n_items, cfg)
        nbrs = _tifu_neighbours(vecs, tune_users, max(TIFU_GRID["neighbours"]), pool)
        scores = {}
        for a in TIFU_GRID["alpha"]:
            for n in TIFU_GRID["neighbours"]:
                r = _tifu_rank(vecs, nbrs, tune_users, a, min(n, nbrs.shape[1]), k)
                scores[(a, n)] = float(np.nanmean(per_user_metrics(r, truth)[f"recall@{k}"]))
        best = max(scores, key=lambda x: (scores[x], x[0]))
        cfg = TifuConfig(**{**cfg.__dict__, "alpha": best[0], "neighbours": best[1]})
        info["grid"] = {f"alpha={a},neighbours={n}": round(v, 4) for (a, n), v in scores.items()}
    vecs = tifu_user_vectors(train, n_users, n_items, cfg)
    nbrs = _tifu_neighbours(vecs, users, cfg.neighbours, pool)
    ranked = _tifu_rank(vecs, nbrs, users, cfg.alpha, nbrs.shape[1], k)
    # items with zero score (a user with few neighbours) are still distinct; keep them
    return ranked, {**info, "config": dict(cfg.__dict__)}


def baseline_rankings(
    feats: Features,
    users: np.ndarray,
    n_items: int,
    k: int = K_MAX,
    train: pd.DataFrame | None = None,
    tifu_pool: int = 0,
) -> dict:
    """The reference rows of every table; TIFU-KNN too when the training rows are given
    (its neighbours among a seeded pool of `tifu_pool` users; 0: all, TifuConfig.pool)."""
    out = {
        "random": random_ranking(n_items, users, k),
        "popularity": popularity_ranking(feats, users, k),
        "top-frequency": top_frequency_ranking(feats, users, k),
        "top-frequency + popular": top_frequency_ranking(feats, users, k, pad_popular=True),
    }
    if train is not None:
        cfg = TifuConfig(pool=tifu_pool)
        out["tifu-knn"] = tifu_knn_ranking(train, users, len(feats.user), n_items, k, cfg=cfg)[0]
    return out
