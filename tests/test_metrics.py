"""Metrics and baselines against small hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest

import common as C
import metrics as M


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_recall_precision_hit_hand_computed():
    ranked = np.array([[1, 2, 3, 4, 5], [9, 8, 7, 6, 5]])
    truths = [np.array([2, 5, 10]), np.array([1])]
    m = C.per_user_metrics(ranked, truths, ks=(2, 5))
    # user 0: top-2 hits {2} -> 1/3; top-5 hits {2, 5} -> 2/3 (denominator = all 3 held-out items)
    assert m["recall@2"][0] == approx(1 / 3)
    assert m["recall@5"][0] == approx(2 / 3)
    assert m["precision@5"][0] == approx(2 / 5)
    assert m["hit@2"][0] == 1.0
    # user 1: no hit anywhere
    assert m["recall@5"][1] == 0.0 and m["hit@5"][1] == 0.0


def test_ndcg_binary_gain_and_ideal_over_min_truth_k():
    ranked = np.array([[1, 2, 3, 4]])
    # hits at ranks 2 and 4; |truth| = 3 > K=2 for the @2 case
    truths = [np.array([2, 4, 99])]
    m = C.per_user_metrics(ranked, truths, ks=(2, 4))
    dcg2 = 1 / math.log2(3)
    idcg2 = 1 / math.log2(2) + 1 / math.log2(3)  # min(3, 2) = 2 ideal hits
    assert m["ndcg@2"][0] == approx(dcg2 / idcg2)
    dcg4 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg4 = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # min(3, 4) = 3
    assert m["ndcg@4"][0] == approx(dcg4 / idcg4)
    # a perfect list scores exactly 1
    perfect = C.per_user_metrics(np.array([[2, 4, 99, 1]]), truths, ks=(4,))
    assert perfect["ndcg@4"][0] == approx(1.0)


def test_padding_and_empty_truth_are_excluded():
    ranked = np.array([[3, -1, -1], [-1, -1, -1]])
    truths = [np.array([3, 7]), np.array([], dtype=np.int64)]
    m = C.per_user_metrics(ranked, truths, ks=(3,))
    assert m["recall@3"][0] == approx(0.5)
    assert math.isnan(m["recall@3"][1])  # no held-out items: excluded, not zero
    # -1 never counts as a hit, even if someone put -1 in a truth array
    m2 = C.per_user_metrics(np.array([[-1, -1]]), [np.array([-1])], ks=(2,))
    assert m2["recall@2"][0] == 0.0


def test_precision_counts_padded_slots_as_misses():
    """Precision@K = hits in the top K / K: a list shorter than K (-1 slots) is not
    rewarded for being short."""
    ranked = np.array([[3, -1, -1, -1, -1], [3, 8, 7, -1, -1], [-1, -1, -1, -1, -1]])
    truths = [np.array([3, 7]), np.array([3, 7]), np.array([3])]
    m = C.per_user_metrics(ranked, truths, ks=(1, 2, 5))
    assert m["precision@1"].tolist() == [1.0, 1.0, 0.0]
    assert m["precision@2"][0] == approx(1 / 2) and m["precision@2"][1] == approx(1 / 2)
    assert m["precision@5"][0] == approx(1 / 5)  # not 1/1: four empty slots
    assert m["precision@5"][1] == approx(2 / 5)  # not 2/3
    assert m["precision@5"][2] == 0.0
    # a list given shorter than max(ks) is padded the same way
    short = C.per_user_metrics(np.array([[3, 7]]), [np.array([3, 7])], ks=(5,))
    assert short["precision@5"][0] == approx(2 / 5) and short["recall@5"][0] == approx(1.0)


def test_short_ranking_is_padded_to_max_k():
    m = C.per_user_metrics(np.array([[5]]), [np.array([5, 6])], ks=(1, 3))
    assert m["recall@3"][0] == approx(0.5)


def _toy_split_and_features():
    """3 users, 6 items; training history: u0 bought 0 (x2) and 1; u1 bought 2; u2 nothing."""
    rows = pd.DataFrame(
        {
            "user": [0, 0, 0, 1, 0, 1, 1],
            "item": [0, 0, 1, 2, 3, 4, 2],
            "order_id": [1, 2, 2, 3, 2, 3, 4],
            "order_number": [1, 2, 2, 1, 2, 1, 2],
            "add_to_cart_order": [1, 1, 2, 1, 3, 2, 1],
            "reordered": [0, 1, 0, 0, 0, 0, 1],
            "order_dow": 0,
            "order_hour_of_day": 10,
            "days_since_prior_order": 7.0,
        }
    )
    train, test = rows.iloc[[0, 1, 2, 3]], rows.iloc[[4, 5, 6]]
    truth = {0: np.array([3]), 1: np.array([2, 4])}
    split = C.Split(
        train.reset_index(drop=True), test.reset_index(drop=True), "interaction", 42, truth
    )
    items = pd.DataFrame(
        {
            "product_id": range(6),
            "product_name": [f"p{i}" for i in range(6)],
            "aisle_id": 1,
            "department_id": 1,
            "aisle": "a",
            "department": "d",
        }
    )
    ds = C.Dataset(rows, items, np.arange(3), 1, 1, "toy", {})
    return ds, split, C.build_features(ds, split.train)


def test_repeat_explore_breakdown():
    _, split, feats = _toy_split_and_features()
    users = split.eval_users()
    assert list(users) == [0, 1]
    ranked = np.array([[3, 0, 1], [2, 0, 1]])
    res = C.evaluate(ranked, users, split, feats, ks=(1, 3), n_boot=50)
    # u0: truth {3} is explore (never bought); u1: truth {2 repeat, 4 explore}
    assert res["repeat"]["n_users"] == 1 and res["explore"]["n_users"] == 2
    assert res["repeat"]["recall@1"] == approx(1.0)  # u1's repeat item 2 at rank 1
    assert res["explore"]["recall@1"] == approx(0.5)  # u0 hit, u1 missed item 4
    assert res["all"]["recall@1"] == approx((1.0 + 0.5) / 2)
    lo, hi = res["ci95"]["recall@1"]
    assert lo <= res["all"]["recall@1"] <= hi


def test_baselines():
    _, _, feats = _toy_split_and_features()
    users = np.array([0, 1, 2])
    pop = C.popularity_ranking(feats, users, k=3)
    assert list(pop[0]) == [0, 1, 2] or list(pop[0][:1]) == [0]  # item 0 bought twice
    assert (pop == pop[0]).all()
    tf = C.top_frequency_ranking(feats, users, k=3)
    assert list(tf[0]) == [0, 1, -1]  # count 2 first, then 1; short history -> -1
    assert list(tf[1]) == [2, -1, -1]
    assert list(tf[2]) == [-1, -1, -1]  # no training history
    padded = C.top_frequency_ranking(feats, users, k=3, pad_popular=True)
    assert list(padded[0][:2]) == [0, 1] and padded[0][2] not in (0, 1, -1)
    assert list(padded[2]) == list(pop[0])
    rnd = C.random_ranking(6, users, k=3, seed=1)
    assert all(len(set(r)) == 3 for r in rnd)
    assert (rnd == C.random_ranking(6, users, k=3, seed=1)).all()


def test_paired_gain():
    _, split, _ = _toy_split_and_features()
    users = split.eval_users()
    good = np.array([[3, 0, 1], [2, 4, 1]])  # every held-out item at the top
    bad = np.array([[0, 1, 5], [0, 1, 5]])  # no hit
    same = C.paired_gain(good, good, users, split, metrics=("recall@10",), n_boot=50)
    assert same["recall@10"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    g = C.paired_gain(good, bad, users, split, metrics=("recall@10", "ndcg@10"), n_boot=50)
    assert g["recall@10"]["mean"] == approx(1.0) and g["ndcg@10"]["mean"] == approx(1.0)
    assert (
        C.paired_gain(bad, good, users, split, metrics=("recall@10",), n_boot=50)["recall@10"][
            "mean"
        ]
        < 0
    )


def test_two_way_bootstrap_resamples_items_as_well_as_users():
    """Bug caught: an interval over users only where a finding must hold for other items too:
    every user gains on item 0 and loses nothing on item 1, so resampling users alone sees no
    spread at all; resampling the two items does."""
    ranked_a = np.array([[0, 9, 8], [0, 7, 6], [0, 5, 4], [0, 3, 2]])
    ranked_b = np.array([[9, 8, 7], [7, 6, 5], [5, 4, 3], [3, 2, 9]])
    truths = [np.array([0, 1])] * 4
    g = M.paired_recall_users_items(ranked_a, ranked_b, truths, k=3)
    a = C.per_user_metrics(ranked_a, truths, ks=(3,))["recall@3"]
    b = C.per_user_metrics(ranked_b, truths, ks=(3,))["recall@3"]
    assert g["mean"] == approx((a - b).mean()) == approx(0.5)
    assert (g["n_users"], g["n_items"]) == (4, 2)
    users_only = M.paired_mean_ci(a - b)["ci95"]
    assert users_only == [approx(0.5), approx(0.5)]
    lo, hi = g["ci95"]
    assert lo == approx(0.0) and hi == approx(1.0)  # both items drawn as 0 or as 1
