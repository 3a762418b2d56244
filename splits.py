"""The train / held-out split: one function, used by every experiment, and the two
restrictions of it that experiments need (truth on an item subset, cold-start items).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from config import RANDOM_SEED, SPLIT_SEED, ConfigError, DataError
from instacart import run_starts


@dataclass
class Split:
    """train/test rows of Dataset.interactions; `truth[u]` = distinct held-out items of user u."""

    train: pd.DataFrame
    test: pd.DataFrame
    mode: str
    seed: int
    truth: dict = field(default_factory=dict)

    def eval_users(self) -> np.ndarray:
        """Users with at least one held-out item, sorted: the users every metric averages over."""
        return np.array(sorted(self.truth), dtype=np.int64)


def split_interactions(
    inter: pd.DataFrame, mode: str = "interaction", seed: int = SPLIT_SEED, test_frac: float = 0.2
) -> Split:
    """Hold out rows for evaluation.

    interaction (default, the original study's protocol): a seeded random 20% of the
        interaction rows (user, item, order), exactly round(test_frac * n) of them.
        Which rows are held out depends only on the row count and the seed.
    temporal: each user's last prior order in the sample is held out (next-basket
        protocol); users with a single order keep it in training and are not evaluated.
    Ground truth per user = the distinct items of their held-out rows.
    """
    n = len(inter)
    if n == 0:
        raise DataError("cannot split an empty set of interactions")
    if mode == "interaction":
        test_mask = np.zeros(n, dtype=bool)
        test_mask[np.random.default_rng(seed).permutation(n)[: round(test_frac * n)]] = True
    elif mode == "temporal":
        last = inter.groupby("user")["order_number"].transform("max").to_numpy()
        first = inter.groupby("user")["order_number"].transform("min").to_numpy()
        test_mask = (inter["order_number"].to_numpy() == last) & (last > first)
    else:
        raise ConfigError(f"unknown split '{mode}' (interaction or temporal)")
    train, test = inter[~test_mask], inter[test_mask]
    # distinct (user, item) pairs of the test rows, as one sorted int64 key
    item = test["item"].to_numpy()
    width = int(item.max()) + 1 if len(item) else 1
    key = np.sort(test["user"].to_numpy(np.int64) * width + item)
    key = key[run_starts(key)]
    cuts = np.flatnonzero(np.diff(key // width)) + 1
    truth = dict(
        zip(
            (key[np.r_[0, cuts]] // width).tolist() if len(key) else [],
            np.split((key % width).astype(item.dtype), cuts),
        )
    )
    if not truth:  # nothing to score: every metric would be an empty mean
        why = (
            "every user of the sample has a single prior order (the temporal split holds out "
            "a user's last order only when there is an earlier one)"
            if mode == "temporal"
            else f"{n} interaction row(s) leave no held-out row"
        )
        raise DataError(f"split {mode}: no evaluation users: {why}")
    return Split(train.reset_index(drop=True), test.reset_index(drop=True), mode, seed, truth)


def restrict_truth(split: Split, items: np.ndarray) -> Split:
    """The same split scored on the held-out purchases of `items` only: each user's truth
    keeps those items, and users left with none drop out of the evaluation users."""
    keep = {}
    for u, t in split.truth.items():
        t = t[np.isin(t, items)]
        if len(t):
            keep[u] = t
    return Split(split.train, split.test, split.mode, split.seed, keep)


def cold_start_split(
    split: Split, frac: float = 0.1, seed: int = RANDOM_SEED, strata: int = 5
) -> tuple[Split, np.ndarray]:
    """Cold-start protocol shared by the experiments: a seeded `frac` of the items bought
    in training rows, drawn within `strata` popularity bands (so cold items span head and
    tail), lose ALL their training rows; the returned split trains on the rest and is
    scored only on held-out purchases of the cold items. Returns (split, cold items)."""
    counts = split.train["item"].value_counts()
    items = counts.index.to_numpy(np.int64)[
        np.lexsort((counts.index.to_numpy(), -counts.to_numpy()))
    ]
    rng = np.random.default_rng(seed)
    cold = np.concatenate(
        [b[rng.permutation(len(b))[: round(frac * len(b))]] for b in np.array_split(items, strata)]
    )
    cold = np.sort(cold)
    train = split.train[~split.train["item"].isin(cold)].reset_index(drop=True)
    out = restrict_truth(Split(train, split.test, split.mode, split.seed, split.truth), cold)
    return out, cold
