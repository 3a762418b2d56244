"""Re-ranking: a second stage over retrieval candidates. Candidates (the two-tower's FAISS
top-k, optionally plus the user's own purchases), their features (training rows only),
and LightGBM lambdarank / XGBoost rankers cross-fitted over users: a user's held-out
labels never train the model that scores that user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from baselines import top_frequency_order
from config import RANDOM_SEED, ConfigError
from features import PAIR_COLUMNS, Features
from metrics import K_MAX
from splits import Split
from towers import retrieve


# A second stage over retrieval candidates. Features come from Features (training
# rows only); labels from Split.truth, cross-fitted over users so that no user is
# ever scored by a model that saw that user's held-out items.
@dataclass
class CandidateConfig:
    """Which items a re-ranker sees per user.

    k: the FAISS top-k of the two-tower (the seed architecture used 20).
    bought: also add the user's own training items: False = none, True = all of
        them, an int N = the N most bought (ties: more recent, then lower index)."""

    k: int = K_MAX
    bought: bool | int = False

    def __post_init__(self):
        # faiss@0 would rank no candidate at all: a row of zeros, not an error, otherwise
        why = self.problem(self.k, self.bought)
        if why:
            raise ConfigError(f"bad candidate setting k={self.k}, bought={self.bought}: {why}")

    @staticmethod
    def problem(k: int, bought: bool | int) -> str | None:
        if k < 1:
            return "faiss@K needs K >= 1"
        if type(bought) is int and bought < 1:
            return "+boughtN needs N >= 1 (+bought: all of them)"
        return None

    def bought_n(self) -> int | None:
        """0 = no bought items, None = all of it, N = the top N."""
        if self.bought is True:
            return None
        return int(self.bought)

    def name(self) -> str:
        n = self.bought_n()
        return f"faiss@{self.k}" + ("" if n == 0 else "+bought" if n is None else f"+bought{n}")

    @classmethod
    def parse(cls, text: str) -> CandidateConfig:
        """The inverse of name(): 'faiss@20', 'faiss@50+bought', 'faiss@50+bought30'."""
        import re

        m = re.fullmatch(r"faiss@(\d+)(\+bought(\d*))?", text.strip())
        if not m:
            raise ConfigError(
                f"bad candidate setting '{text}' (faiss@K, faiss@K+bought or faiss@K+boughtN)"
            )
        bought = (int(m.group(3)) if m.group(3) else True) if m.group(2) else False
        why = cls.problem(int(m.group(1)), bought)
        if why:
            raise ConfigError(f"bad candidate setting '{text}': {why}")
        return cls(int(m.group(1)), bought)


CAND_COLUMNS = ["user", "item", "tt_score", "tt_rank", "from_faiss", "from_bought"]


def build_candidates(
    retrieved: np.ndarray,
    scores: np.ndarray,
    users: np.ndarray,
    feats: Features,
    cfg: CandidateConfig,
) -> pd.DataFrame:
    """One row per (user, candidate item), CAND_COLUMNS, users in the order of `users`.

    retrieved / scores: [len(users), >= cfg.k] from retrieve(), rows in the order of
    `users`; the first cfg.k columns are used and -1 slots dropped. tt_rank is the
    1-based FAISS rank (k + 1 for an item added from the bought items only; tt_score NaN
    there, filled by ranker_features when it is given the model). Within a user: the
    FAISS items by rank, then the bought items not retrieved in top-frequency order."""
    users = np.asarray(users, dtype=np.int64)
    if retrieved.shape[0] != len(users) or retrieved.shape[1] < cfg.k:
        raise ValueError(f"retrieved has shape {retrieved.shape}; need ({len(users)}, >= {cfg.k})")
    ret, sc = retrieved[:, : cfg.k].astype(np.int64), scores[:, : cfg.k].astype(np.float32)
    n, k = ret.shape
    pos = np.repeat(np.arange(n), k)
    f = pd.DataFrame(
        {
            "pos": pos,
            "user": np.repeat(users, k),
            "item": ret.ravel(),
            "tt_score": sc.ravel(),
            "tt_rank": np.tile(np.arange(1, k + 1), n).astype(np.float32),
            "from_faiss": True,
            "from_bought": False,
        }
    )
    f = f[f["item"] >= 0]
    hn = cfg.bought_n()
    if hn != 0:
        order = top_frequency_order(feats)
        p_user = feats.pairs["user"].to_numpy()[order]
        p_item = feats.pairs["item"].to_numpy()[order]
        ptr = feats.bought_indptr
        idx, hpos = [], []
        for j, u in enumerate(users):
            s, e = ptr[u], ptr[u + 1]
            e = e if hn is None else min(e, s + hn)
            idx.append(np.arange(s, e))
            hpos.append(np.full(e - s, j))
        idx = np.concatenate(idx) if idx else np.empty(0, np.int64)
        h = pd.DataFrame(
            {
                "pos": np.concatenate(hpos) if hpos else np.empty(0, np.int64),
                "user": p_user[idx].astype(np.int64),
                "item": p_item[idx].astype(np.int64),
                "tt_score": np.float32(np.nan),
                "tt_rank": np.float32(k + 1),
                "from_faiss": False,
                "from_bought": True,
                "h": np.arange(len(idx)),
            }
        )
        f["h"] = -1
        key_f = f["pos"].to_numpy() * (1 << 32) + f["item"].to_numpy()
        key_h = h["pos"].to_numpy() * (1 << 32) + h["item"].to_numpy()
        in_h = np.isin(key_f, key_h)
        f["from_bought"] = in_h
        h = h[~np.isin(key_h, key_f)]
        f = pd.concat([f, h], ignore_index=True)
        f = f.sort_values(["pos", "tt_rank", "h"], kind="stable").drop(columns="h")
    f = f.drop(columns="pos").reset_index(drop=True)
    return f[CAND_COLUMNS].astype(
        {
            "user": np.int64,
            "item": np.int64,
            "tt_score": np.float32,
            "tt_rank": np.float32,
            "from_faiss": bool,
            "from_bought": bool,
        }
    )


def candidate_labels(cands: pd.DataFrame, split: Split) -> np.ndarray:
    """1 where the candidate is one of its user's held-out items (Split.truth), else 0."""
    u, i = cands["user"].to_numpy(), cands["item"].to_numpy()
    tu = np.concatenate([np.full(len(t), u_, np.int64) for u_, t in split.truth.items()] or [[]])
    ti = np.concatenate([np.asarray(t, np.int64) for t in split.truth.values()] or [[]])
    big = np.int64(1) << 32
    return np.isin(u.astype(np.int64) * big + i, tu.astype(np.int64) * big + ti).astype(np.int32)


def candidate_recall(cands: pd.DataFrame, users: np.ndarray, split: Split) -> float:
    """Macro average over `users` with held-out items of |candidates ∩ truth| / |truth|:
    Recall@K's convention with K = all candidates, the best any re-ranker can reach."""
    hits = pd.Series(candidate_labels(cands, split)).groupby(cands["user"].to_numpy()).sum()
    vals = [
        hits.get(int(u), 0) / len(split.truth[int(u)])
        for u in users
        if len(split.truth.get(int(u), ())) > 0
    ]
    return float(np.mean(vals)) if vals else float("nan")


def ranker_features(
    cands: pd.DataFrame, feats: Features, model=None
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix [len(cands), F] float32 and its names, from training rows only.

    two-tower: score (cosine; with `model`, computed for every candidate, so bought-only
    candidates get one too), FAISS rank, source flags; user x item purchases (PAIR_COLUMNS;
    never-bought pairs: count 0, recency NaN) and derived: the item's place in the user's
    top-frequency list, its share of the user's purchases in its aisle, days since last
    over the user's mean gap, the user's reorder rate x share; the user's aisle and
    department share for the item's aisle / department; user and item features."""
    u = cands["user"].to_numpy(np.int64)
    i = cands["item"].to_numpy(np.int64)
    n_items = len(feats.item)
    cols: dict[str, np.ndarray] = {}
    score = cands["tt_score"].to_numpy(np.float32).copy()
    if model is not None:
        uniq, inv = np.unique(u, return_inverse=True)
        ue, ie = model.embed_users(uniq), model.embed_items()
        score = np.einsum("nd,nd->n", ue[inv], ie[i]).astype(np.float32)
    cols["tt_score"] = score
    cols["tt_rank"] = cands["tt_rank"].to_numpy(np.float32)
    cols["from_faiss"] = cands["from_faiss"].to_numpy(np.float32)
    cols["from_bought"] = cands["from_bought"].to_numpy(np.float32)

    # user x item purchases: look the pair up in feats.pairs (sorted by user, item)
    p = feats.pairs
    pkey = feats.pair_key(p["user"].to_numpy(), p["item"].to_numpy())
    ckey = feats.pair_key(u, i)
    at = np.minimum(np.searchsorted(pkey, ckey), max(len(pkey) - 1, 0))
    found = (pkey[at] == ckey) if len(pkey) else np.zeros(len(ckey), bool)
    for c in PAIR_COLUMNS:
        v = p[c].to_numpy(np.float32)[at] if len(pkey) else np.zeros(len(ckey), np.float32)
        zero = c in ("ui_count", "ui_share", "ui_streak", "ui_rate_since_first")
        cols[c] = np.where(found, v, 0.0 if zero else np.nan).astype(np.float32)
    # position in the user's top-frequency list (the strong baseline's order), 1-based
    order = top_frequency_order(feats)
    place = np.empty(len(p), np.float32)
    place[order] = np.arange(len(p)) - feats.bought_indptr[p["user"].to_numpy()[order]] + 1
    cols["ui_freq_place"] = np.where(found, place[at] if len(p) else 0, np.nan).astype(np.float32)
    n_hist = np.diff(feats.bought_indptr)[u].astype(np.float32)
    cols["ui_freq_place_frac"] = cols["ui_freq_place"] / np.maximum(n_hist, 1)
    cols["user_n_items"] = n_hist
    max_count = np.zeros(len(feats.user), np.float32)
    if len(p):
        np.maximum.at(max_count, p["user"].to_numpy(), p["ui_count"].to_numpy(np.float32))
    cols["ui_count_over_max"] = cols["ui_count"] / np.maximum(max_count[u], 1)

    names = feats.user_names
    uf = feats.user
    a0, d0 = names.index("aisle_share_0"), names.index("dept_share_0")
    aisle, dept = feats.item_aisle[i], feats.item_dept[i]
    cols["user_aisle_share"] = uf[u, a0 + aisle]
    cols["user_dept_share"] = uf[u, d0 + dept]
    n_rows = feats.user_rows()[u]
    cols["ui_share_in_aisle"] = cols["ui_count"] / np.maximum(cols["user_aisle_share"] * n_rows, 1)
    gap = np.maximum(feats.user_gap_days()[u], 1.0)
    cols["ui_days_over_gap"] = cols["ui_days_since_last"] / gap
    cols["reorder_x_share"] = feats.user_column("reorder_rate")[u] * cols["ui_share"]
    for j, nm in enumerate(names[: min(a0, d0)]):  # the numeric user columns
        cols[f"u_{nm}"] = uf[u, j]
    for j, nm in enumerate(feats.item_names):
        cols[f"i_{nm}"] = feats.item[i, j]
    pop_rank = np.empty(n_items, np.float32)
    pop_rank[feats.popularity_order()] = np.arange(1, n_items + 1)
    cols["i_pop_rank"] = pop_rank[i]
    cols["i_aisle"] = aisle.astype(np.float32)
    cols["i_dept"] = dept.astype(np.float32)
    # column by column, each freed once copied: at Kaggle's size (~20M candidates) the
    # columns and the matrix are ~4 GB each, so they never need to coexist
    names = list(cols)
    X = np.empty((len(cands), len(names)), np.float32)
    for j, c in enumerate(names):
        X[:, j] = cols.pop(c)
    return X, names


# A fixed thread count, not the machine's: same seed -> same ranker on any machine. On the
# default run two threads halve the fit time and gave bit-identical rankings to one thread.
GBDT_THREADS = 2
GBDT_PARAMS = {
    "lightgbm": {
        "objective": "lambdarank",
        "n_estimators": 150,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 50,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "lambdarank_truncation_level": K_MAX,
    },
    "xgboost": {
        "objective": "rank:ndcg",
        "n_estimators": 150,
        "learning_rate": 0.05,
        "max_depth": 4,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "tree_method": "hist",
        "lambdarank_pair_method": "topk",
        "lambdarank_num_pair_per_sample": K_MAX,
    },
}


def _make_ranker(kind: str, seed: int, n_jobs: int, params: dict | None):
    p = {**GBDT_PARAMS[kind], **(params or {})}
    if kind == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMRanker(
            **p,
            random_state=seed,
            n_jobs=n_jobs,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        ), p
    import xgboost as xgb

    return xgb.XGBRanker(**p, random_state=seed, n_jobs=n_jobs), p


def fold_of_users(users: np.ndarray, folds: int = 2, seed: int = RANDOM_SEED) -> np.ndarray:
    """Fold id of each user in `users`: a seeded shuffle dealt round-robin. It depends
    on the user list and the seed only, never on labels."""
    users = np.asarray(users, dtype=np.int64)
    order = np.argsort(users, kind="stable")  # independent of the order users come in
    perm = np.random.default_rng(seed).permutation(len(users))
    fold = np.empty(len(users), np.int64)
    fold[order[perm]] = np.arange(len(users)) % folds
    return fold


def fold_sample(train_user_rows: np.ndarray, n: int, seed: int, fold: int) -> np.ndarray:
    """A fold's training users (the distinct users of its training rows), or a seeded
    sample of n of them when there are more (drawn from the sorted distinct users, so it
    does not depend on the rows' order)."""
    g = np.unique(train_user_rows)
    if len(g) <= n:
        return g
    return np.sort(np.random.default_rng([seed, fold, n]).choice(g, n, replace=False))


def rank_with_gbdt(
    cands: pd.DataFrame,
    X: np.ndarray,
    names: list,
    users: np.ndarray,
    split: Split,
    kind: str = "lightgbm",
    folds: int = 2,
    seed: int = RANDOM_SEED,
    k: int = K_MAX,
    n_jobs: int = GBDT_THREADS,
    params: dict | None = None,
    train_users: int = 0,
) -> tuple[np.ndarray, dict]:
    """Cross-fitted learning to rank over the candidates of `users`.

    Users are dealt into `folds` seeded groups (fold_of_users). For each group, a ranker
    (LightGBM LGBMRanker lambdarank, or XGBoost XGBRanker rank:ndcg) is trained on the
    other groups' candidates, label = the candidate is in that user's Split.truth, and
    scores this group: a user's held-out items are never seen by the model that ranks
    them. Training skips users with no positive candidate (nothing to learn from);
    `train_users` > 0 trains each fold on a seeded sample of at most that many of the
    rest (the fit grows with its rows; at Kaggle's size a fold holds ~100k users); every
    user in `users` is scored. Returns ranked [len(users), k] item indices
    (-1 padded), rows in the order of `users`, and an info dict (top-10 gain
    importances summed over folds and normalised, timings, sizes, parameters)."""
    if kind not in GBDT_PARAMS:
        raise ValueError(f"unknown ranker '{kind}' (lightgbm or xgboost)")
    if folds < 2:
        raise ValueError(
            "folds must be >= 2: with one fold a user's labels would train its own ranker"
        )
    users = np.asarray(users, dtype=np.int64)
    cu = cands["user"].to_numpy(np.int64)
    if len(users) != len(np.unique(users)) or not np.isin(cu, users).all():
        raise ValueError("users must be distinct and cover every candidate's user")
    # rows grouped by user, users sorted (stable: keeps the candidate order within a user);
    # build_candidates' rows for sorted `users` already are, and X (GBs at Kaggle's size)
    # is then not copied
    ci, y = cands["item"].to_numpy(np.int64), candidate_labels(cands, split)
    if (np.diff(cu) < 0).any():
        order = np.argsort(cu, kind="stable")
        cu, ci, X, y = cu[order], ci[order], X[order], y[order]
    fold_u = fold_of_users(users, folds, seed)
    upos = np.searchsorted(np.sort(users), cu)
    fold_row = fold_u[np.argsort(users, kind="stable")][upos]
    pos_per_user = pd.Series(y).groupby(cu).transform("sum").to_numpy()
    scores = np.full(len(cu), -np.inf)
    gain = np.zeros(X.shape[1])
    info = {
        "kind": kind,
        "folds": folds,
        "seed": seed,
        "n_candidates": len(cu),
        "n_users": len(users),
        "n_features": int(X.shape[1]),
        "fold_train_users": [],
        "train_users_cap": train_users or None,
        "train_seconds": 0.0,
        "predict_seconds": 0.0,
    }
    for f in range(folds):
        tr = (fold_row != f) & (pos_per_user > 0)
        if train_users > 0:
            tr &= np.isin(cu, fold_sample(cu[tr], train_users, seed, f))
        te = fold_row == f
        if not te.any():
            info["fold_train_users"].append(0)
            continue
        g_users, g_sizes = np.unique(cu[tr], return_counts=True)
        info["fold_train_users"].append(len(g_users))
        if len(g_users) == 0:  # nothing to learn from: keep the candidate order
            scores[te] = -np.arange(te.sum(), dtype=float)
            continue
        model, info["params"] = _make_ranker(kind, seed, n_jobs, params)
        scores[te], fold_gain = _fit_and_score(model, kind, X, y, cu, tr, te, g_sizes, info)
        gain += fold_gain
    out = _top_k_per_user(cu, ci, scores, users, k)
    total = gain.sum()
    imp = sorted(zip(names, gain / total if total > 0 else gain), key=lambda t: -t[1])[:10]
    info["feature_importance"] = {n_: round(float(v), 4) for n_, v in imp}
    info["train_seconds"] = round(info["train_seconds"], 2)
    info["predict_seconds"] = round(info["predict_seconds"], 2)
    return out, info


def _fit_and_score(model, kind, X, y, cu, tr, te, g_sizes, info) -> tuple[np.ndarray, np.ndarray]:
    """Fit `model` on rows `tr` (grouped by user), score rows `te`; returns the scores and
    the features' gain importances of this fold. Adds the fit / predict seconds to info."""
    t0 = time.perf_counter()
    if kind == "lightgbm":
        model.fit(X[tr], y[tr], group=g_sizes)
    else:
        model.fit(X[tr], y[tr], qid=cu[tr])
    info["train_seconds"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = model.predict(X[te])
    info["predict_seconds"] += time.perf_counter() - t0
    if kind == "lightgbm":
        gain = model.booster_.feature_importance(importance_type="gain")
    else:
        fmap = model.get_booster().get_score(importance_type="total_gain")
        gain = np.array([fmap.get(f"f{j}", 0.0) for j in range(X.shape[1])])
    return scores, gain


def _top_k_per_user(cu, ci, scores, users, k) -> np.ndarray:
    """[len(users), k] items by descending score per user (rows in the order of `users`,
    -1 padded); ties keep the candidate order (tt_rank, then bought). `cu` is sorted."""
    rank_order = np.lexsort((np.arange(len(cu)), -scores, cu))
    su, si = cu[rank_order], ci[rank_order]
    starts = np.searchsorted(su, users[np.argsort(users)])
    row_of = np.argsort(np.argsort(users, kind="stable"))  # sorted position of each user
    ends = np.searchsorted(su, users[np.argsort(users)], side="right")
    out = -np.ones((len(users), k), dtype=np.int64)
    for j in range(len(users)):
        s, e = starts[row_of[j]], ends[row_of[j]]
        top = si[s : min(e, s + k)]
        out[j, : len(top)] = top
    return out


def rerank(
    model,
    users: np.ndarray,
    feats: Features,
    split: Split,
    cfg: CandidateConfig,
    kinds=("lightgbm", "xgboost"),
    retrieved: tuple | None = None,
    folds: int = 2,
    seed: int = RANDOM_SEED,
    k: int = K_MAX,
    params: dict | None = None,
    train_users: int = 0,
) -> dict:
    """The whole second stage for one candidate setting: retrieve (or reuse `retrieved`
    = (ranked, scores) with >= cfg.k columns), build candidates and features, rank with
    each of `kinds` (params: {kind: overrides of GBDT_PARAMS[kind]}; train_users: the
    rankers' training users per fold, rank_with_gbdt).
    Returns {kind: (ranked [len(users), k], info)}; each info also holds
    the candidate setting, the candidate recall, and the seconds spent on candidates +
    features (the ranking stage's added time is that plus train and predict seconds)."""
    t0 = time.perf_counter()
    ret, sc = retrieved if retrieved is not None else retrieve(model, users, max(cfg.k, 1))
    cands = build_candidates(ret, sc, users, feats, cfg)
    X, names = ranker_features(cands, feats, model)
    prep = time.perf_counter() - t0
    extra = {
        "candidates": cfg.name(),
        "candidate_recall": candidate_recall(cands, users, split),
        "candidates_per_user": len(cands) / max(len(users), 1),
        "features_seconds": round(prep, 2),
    }
    out = {}
    for kind in kinds:
        ranked, info = rank_with_gbdt(
            cands,
            X,
            names,
            users,
            split,
            kind,
            folds,
            seed,
            k,
            params=(params or {}).get(kind),
            train_users=train_users,
        )
        info.update(extra)
        info["stage_seconds"] = round(prep + info["train_seconds"] + info["predict_seconds"], 2)
        out[kind] = (ranked, info)
    return out
