"""Tests for the baselines' TIFU-KNN neighbour search (baselines.py): the exact search
against a dense brute force, and the seeded neighbour pool that makes Kaggle's size
affordable."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import baselines as B


def brute_neighbours(dense: np.ndarray, users, k, pool):
    """The k nearest pool users of each user by dense euclidean distance, self excluded."""
    out = []
    for u in users:
        d = ((dense[pool] - dense[u]) ** 2).sum(1)
        d[pool == u] = np.inf
        out.append(pool[np.argsort(d, kind="stable")[:k]])
    return np.array(out)


@pytest.fixture(scope="module")
def vecs():
    rng = np.random.default_rng(0)
    dense = rng.random((60, 40)) * (rng.random((60, 40)) < 0.2)
    return sp.csr_matrix(dense), dense


@pytest.mark.parametrize("pool_size", [0, 25])
def test_neighbours_match_a_dense_brute_force(vecs, pool_size):
    m, dense = vecs
    pool = B.neighbour_pool(60, pool_size) if pool_size else None
    users = np.arange(0, 60, 3)
    got = B._tifu_neighbours(m, users, 5, pool, block=7)  # several blocks
    want = brute_neighbours(dense, users, 5, np.arange(60) if pool is None else pool)
    assert np.array_equal(got, want)
    assert not (got == users[:, None]).any()  # never the user itself
    if pool is not None:
        assert np.isin(got, pool).all() and len(pool) == 25


def test_neighbour_pool_is_seeded_and_all_users_when_large():
    a, b = B.neighbour_pool(1000, 100), B.neighbour_pool(1000, 100)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    assert np.array_equal(B.neighbour_pool(50, 0), np.arange(50))
    assert np.array_equal(B.neighbour_pool(50, 80), np.arange(50))


def test_tifu_ranking_with_a_pool_of_every_user_is_the_exact_one():
    """A pool as large as the users is the exact search (same lists); a small pool changes
    them (it is used)."""
    rng = np.random.default_rng(1)
    rows = []
    for u in range(80):
        for o in range(1, 5):
            for i in rng.choice(30, 4, replace=False):
                rows.append((u, o, int(i)))
    train = pd.DataFrame(rows, columns=["user", "order_number", "item"])
    users = np.arange(80)
    exact, _ = B.tifu_knn_ranking(train, users, 80, 30, k=10, tune=False)
    same, _ = B.tifu_knn_ranking(train, users, 80, 30, k=10, tune=False, cfg=B.TifuConfig(pool=80))
    small, info = B.tifu_knn_ranking(
        train, users, 80, 30, k=10, tune=False, cfg=B.TifuConfig(pool=10, neighbours=5)
    )
    exact5, _ = B.tifu_knn_ranking(
        train, users, 80, 30, k=10, tune=False, cfg=B.TifuConfig(neighbours=5)
    )
    assert np.array_equal(exact, same)
    assert not np.array_equal(small, exact5) and info["config"]["pool"] == 10
