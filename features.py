"""User, item and user x item features, computed from training rows only.

A held-out row never reaches a feature: tests change held-out rows and check that no
feature moves (tests/test_data.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from instacart import Dataset, index_of, run_starts
from text import item_template_texts


@dataclass
class Features:
    """Everything a model may know, all computed from Split.train.

    user: [n_users, F] float32 (names in user_names); item: [n_items, F] float32;
    item_aisle / item_dept: [n_items] int category indices (0 = unknown);
    pairs: one row per (user, item) bought in training, with purchase features
        (PAIR_COLUMNS), sorted by user then item;
    item_text: template text "name. aisle. department." per item (item_template_texts);
    bought_*: per user (CSR), the item indices bought in training and their counts.
    """

    user: np.ndarray
    user_names: list
    item: np.ndarray
    item_names: list
    item_aisle: np.ndarray
    item_dept: np.ndarray
    pairs: pd.DataFrame
    item_text: list
    bought_indptr: np.ndarray
    bought_items: np.ndarray
    bought_counts: np.ndarray

    def bought(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, counts) user u bought in training rows, items ascending."""
        s, e = self.bought_indptr[u], self.bought_indptr[u + 1]
        return self.bought_items[s:e], self.bought_counts[s:e]

    # named accessors: callers never index feature columns by position or undo a scaling
    def user_column(self, name: str) -> np.ndarray:
        return self.user[:, self.user_names.index(name)]

    def item_column(self, name: str) -> np.ndarray:
        return self.item[:, self.item_names.index(name)]

    def user_rows(self) -> np.ndarray:
        """Training rows (purchases) per user."""
        return np.expm1(self.user_column("log_rows"))

    def user_gap_days(self) -> np.ndarray:
        """Mean days between the user's training orders (15 where unknown)."""
        return self.user_column("gap_mean") * GAP_SCALE

    def popularity_order(self) -> np.ndarray:
        """Item indices by training purchases, most bought first (ties: lower index)."""
        return np.argsort(-self.item_column("log_pop"), kind="stable")

    def pair_key(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """One int64 per (user, item); ascending in the order of `pairs` (user, then item)."""
        return np.asarray(users, np.int64) * len(self.item) + np.asarray(items, np.int64)


GAP_SCALE = 30.0  # user gap features are days / GAP_SCALE (Instacart caps gaps at 30 days)
PAIR_COLUMNS = [
    "ui_count",
    "ui_share",
    "ui_orders_since_last",
    "ui_streak",
    "ui_rate_since_first",
    "ui_mean_cart",
    "ui_days_since_last",
]


def _shares(codes: np.ndarray, users: np.ndarray, n_users: int, n_codes: int) -> np.ndarray:
    cell = np.asarray(users, dtype=np.int64) * n_codes + codes
    m = np.bincount(cell, minlength=n_users * n_codes).reshape(n_users, n_codes).astype(np.float32)
    return m / np.maximum(m.sum(1, keepdims=True), 1.0)


def build_features(ds: Dataset, train: pd.DataFrame) -> Features:
    """User, item and user x item features from `train` rows only (never test rows)."""
    U, I = ds.n_users, ds.n_items
    u, i = train["user"].to_numpy(), train["item"].to_numpy()
    aisle = ds.items["aisle_id"].fillna(0).to_numpy(dtype=np.int64)
    dept = ds.items["department_id"].fillna(0).to_numpy(dtype=np.int64)

    # Orders are known only through their training rows: an order whose rows are all
    # held out does not exist for the features (its cadence stays unseen too).
    orders = train.drop_duplicates("order_id")[
        ["user", "order_id", "order_number", "days_since_prior_order"]
    ]
    pairs = _pair_features(train, orders)  # one row per distinct (user, item)
    n_orders = np.bincount(orders["user"], minlength=U).astype(np.float32)
    n_rows = np.bincount(u, minlength=U).astype(np.float32)
    n_distinct = np.bincount(pairs["user"], minlength=U)
    # Kaggle's `reordered` flag looked at the user's whole history, held-out rows included:
    # under the interaction split a training row flagged 1 can be the only trace of a held-out
    # purchase. So the flag is recomputed from the training rows (reordered_in_rows).
    reordered = reordered_in_rows(train)
    reorder = np.bincount(u, weights=reordered, minlength=U) / np.maximum(n_rows, 1)
    gap = orders.groupby("user")["days_since_prior_order"].agg(["mean", "std"]).reindex(range(U))
    basket = n_rows / np.maximum(n_orders, 1)
    user_num = np.column_stack(
        [
            np.log1p(n_orders),
            np.log1p(n_rows),
            np.log1p(basket),
            reorder,
            gap["mean"].fillna(15.0).to_numpy() / GAP_SCALE,
            gap["std"].fillna(0.0).to_numpy() / GAP_SCALE,
            n_distinct / np.maximum(n_rows, 1),
            np.log1p(n_distinct),
        ]
    ).astype(np.float32)
    user_feat = np.hstack(
        [
            user_num,
            _shares(dept[i], u, U, ds.n_departments + 1),
            _shares(aisle[i], u, U, ds.n_aisles + 1),
        ]
    )
    user_names = (
        [
            "log_orders",
            "log_rows",
            "log_basket",
            "reorder_rate",
            "gap_mean",
            "gap_std",
            "variety",
            "log_distinct",
        ]
        + [f"dept_share_{d}" for d in range(ds.n_departments + 1)]
        + [f"aisle_share_{a}" for a in range(ds.n_aisles + 1)]
    )

    item_feat, item_names = _item_features(train, pairs, reordered, I)

    bought_indptr = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs["user"], minlength=U), out=bought_indptr[1:])
    text = item_template_texts(ds)
    return Features(
        user_feat,
        user_names,
        item_feat,
        item_names,
        aisle,
        dept,
        pairs,
        text,
        bought_indptr,
        pairs["item"].to_numpy(np.int64),
        pairs["ui_count"].to_numpy(np.float32),
    )


def _item_features(
    train: pd.DataFrame, pairs: pd.DataFrame, reordered: np.ndarray, n_items: int
) -> tuple[np.ndarray, list]:
    """[n_items, 5] float32 item features from training rows, and their names: log
    purchases, log buyers, reorder rate (recomputed in training rows), log mean cart
    position, purchases per buyer."""
    i = train["item"].to_numpy()
    pop = np.bincount(i, minlength=n_items).astype(np.float32)
    n_buyers = np.bincount(pairs["item"], minlength=n_items)
    item_reorder = np.bincount(i, weights=reordered, minlength=n_items) / np.maximum(pop, 1)
    cart_sum = np.bincount(i, weights=train["add_to_cart_order"].to_numpy(), minlength=n_items)
    cart = cart_sum / np.maximum(pop, 1)
    item_feat = np.column_stack(
        [
            np.log1p(pop),
            np.log1p(n_buyers),
            item_reorder,
            np.log1p(cart),
            pop / np.maximum(n_buyers, 1),
        ]
    ).astype(np.float32)
    names = ["log_pop", "log_buyers", "item_reorder_rate", "log_mean_cart", "buys_per_buyer"]
    return item_feat, names


def reordered_in_rows(rows: pd.DataFrame) -> np.ndarray:
    """Kaggle's `reordered` flag computed within `rows` only: 1.0 where the row's user bought
    the row's item in an earlier order (smaller order_number) among `rows`, else 0.0."""
    user, item = rows["user"].to_numpy(np.int64), rows["item"].to_numpy(np.int64)
    num = rows["order_number"].to_numpy(np.int64)
    out = np.zeros(len(rows))
    if len(rows) == 0:
        return out
    pair = user * (int(item.max()) + 1) + item
    srt = np.lexsort((num, pair))  # by pair, then order number
    p, n = pair[srt], num[srt]
    starts = run_starts(p)
    first = np.repeat(n[starts], np.diff(np.r_[starts, len(p)]))
    out[srt] = n > first
    return out


def _pair_features(train: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """History of each (user, item) in training rows: the Kaggle reorder winners' features.

    Orders are ranked per user from the most recent training order (rank 0). For a pair:
    count = training orders containing it; share = count / user's training orders;
    orders_since_last = rank of the latest order containing it; streak = how many of
    the user's most recent orders in a row contain it; rate_since_first = count /
    (orders from the first one containing it to the latest); days_since_last = days
    from that order to the user's latest training order.
    """
    o = orders.sort_values(["user", "order_number"]).copy()
    o["rank"] = o.groupby("user").cumcount(ascending=False)
    days = o["days_since_prior_order"].fillna(0.0).to_numpy()
    # days elapsed from each order to the user's latest training order
    o["days_to_last"] = o.assign(d=days)[::-1].groupby("user")["d"].cumsum()[::-1].to_numpy() - days
    # each training row's order in o (a lookup, not a merge of 30M rows)
    at = index_of(o["order_id"].to_numpy(), train["order_id"].to_numpy())
    user, item, rank = train["user"].to_numpy(), train["item"].to_numpy(), o["rank"].to_numpy()[at]
    # Rows sorted by (user, item, rank) through one int64 key, keeping the first training row
    # of each (user, item, order). Training rows come sorted by user, so the stable sort is fast.
    n_i, n_r = int(item.max(initial=0)) + 1, int(rank.max(initial=0)) + 1
    key = (user.astype(np.int64) * n_i + item) * n_r + rank
    srt = np.argsort(key, kind="stable")
    srt = srt[run_starts(key[srt])]
    rank, pair = rank[srt], key[srt] // n_r
    starts = run_starts(pair)
    count = np.diff(np.r_[starts, len(pair)])
    k = np.arange(len(pair)) - np.repeat(starts, count)  # position within the pair's rows
    in_streak = (rank == k).astype(np.int64)  # ranks ascend, so a prefix
    first_rank = rank[np.r_[starts[1:], len(pair)] - 1] if len(pair) else rank
    n_orders = np.bincount(o["user"], minlength=int(user.max(initial=0)) + 1)
    p = pd.DataFrame(
        {
            "user": (pair[starts] // n_i).astype(user.dtype),
            "item": (pair[starts] % n_i).astype(item.dtype),
            "ui_count": count,
        }
    )

    def per_pair(ufunc, values):
        return ufunc.reduceat(values, starts) if len(starts) else values[:0]

    p["ui_share"] = count / n_orders[p["user"].to_numpy()]
    p["ui_orders_since_last"] = rank[starts]
    p["ui_streak"] = per_pair(np.add, in_streak)
    p["ui_rate_since_first"] = count / (first_rank + 1)
    cart = train["add_to_cart_order"].to_numpy()[srt].astype(np.float64)
    p["ui_mean_cart"] = per_pair(np.add, cart) / count
    p["ui_days_since_last"] = per_pair(np.minimum, o["days_to_last"].to_numpy()[at][srt])
    p[PAIR_COLUMNS] = p[PAIR_COLUMNS].astype(np.float32)
    return p[["user", "item", *PAIR_COLUMNS]]
