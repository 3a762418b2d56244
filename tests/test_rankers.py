"""Tests for the re-ranking stage (reranking.py): candidates, candidate recall,
features, and cross-fitted LightGBM / XGBoost rankers without label leakage."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import with_held_out_rows_altered

import common as c
import config
import reranking

SMALL = {"n_estimators": 40, "num_leaves": 15, "min_child_samples": 10}  # lightgbm, for speed
SMALL_XGB = {"n_estimators": 40, "max_depth": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_sample_dir):
    """A small generated sample, split and featurised; nothing written into data/."""
    tmp = tmp_path_factory.mktemp("rank")
    mp = pytest.MonkeyPatch()
    mp.setattr(config, "CACHE_DIR", tmp / "cache")
    ds = c.load_dataset(small_sample_dir, n_users=300, n_items=1500, verbose=False)
    split = c.split_interactions(ds.interactions)
    feats = c.build_features(ds, split.train)
    users = split.eval_users()
    # a fake retrieval: per user 20 seeded random items with descending scores
    rng = np.random.default_rng(0)
    ret = np.stack([rng.choice(ds.n_items, 20, replace=False) for _ in users]).astype(np.int64)
    sc = np.sort(rng.random((len(users), 20)).astype(np.float32), axis=1)[:, ::-1]
    yield SimpleNamespace(ds=ds, split=split, feats=feats, users=users, ret=ret, sc=sc)
    mp.undo()


@pytest.fixture(scope="module")
def ranked_setup(data):
    feats, users, ret, sc = data.feats, data.users, data.ret, data.sc
    cands = reranking.build_candidates(
        ret, sc, users, feats, reranking.CandidateConfig(20, bought=True)
    )
    X, names = reranking.ranker_features(cands, feats)
    return cands, X, names


def test_candidate_config_names():
    assert reranking.CandidateConfig().name() == "faiss@20"
    assert reranking.CandidateConfig(50, bought=True).name() == "faiss@50+bought"
    assert reranking.CandidateConfig(50, bought=30).name() == "faiss@50+bought30"


def test_candidates_faiss_only_and_bought(data):
    feats, users, ret, sc = data.feats, data.users, data.ret, data.sc
    only = reranking.build_candidates(ret, sc, users, feats, reranking.CandidateConfig(10))
    assert list(only.columns) == reranking.CAND_COLUMNS
    assert len(only) == 10 * len(users) and only["from_faiss"].all()
    assert np.array_equal(only["user"].to_numpy(), np.repeat(users, 10))
    assert np.array_equal(only["item"].to_numpy().reshape(len(users), 10), ret[:, :10])
    assert np.array_equal(only["tt_rank"].to_numpy().reshape(len(users), 10)[0], np.arange(1, 11))
    both = reranking.build_candidates(
        ret, sc, users, feats, reranking.CandidateConfig(10, bought=True)
    )
    assert not both.duplicated(["user", "item"]).any()
    for j in (0, len(users) // 2, len(users) - 1):
        u = users[j]
        got = both[both["user"] == u]
        hist = feats.bought(int(u))[0]
        assert set(got["item"]) == set(ret[j, :10]) | set(hist)  # every bought item is in
        assert set(got.loc[got["from_bought"], "item"]) == set(hist)
        h_only = got[~got["from_faiss"]]
        assert (h_only["tt_rank"] == 11).all() and h_only["tt_score"].isna().all()
        assert list(got["item"][:10]) == list(ret[j, :10])  # FAISS order first
    # the top-N variant: the user's N most bought items, as the top-frequency baseline orders them
    top5 = reranking.build_candidates(
        ret, sc, users, feats, reranking.CandidateConfig(10, bought=5)
    )
    tf = c.top_frequency_ranking(feats, users, k=5)
    for j in (0, 7):
        got = set(top5.loc[top5["user"] == users[j], "item"])
        assert set(tf[j][tf[j] >= 0]) <= got and len(got) <= 15
    # -1 slots from FAISS are dropped
    ret2 = ret.copy()
    ret2[0, 5:] = -1
    short = reranking.build_candidates(ret2, sc, users, feats, reranking.CandidateConfig(10))
    assert (short["user"] == users[0]).sum() == 5 and (short["item"] >= 0).all()


def test_candidate_recall_hand_check(data):
    ds, split, feats, users, ret, sc = (
        data.ds,
        data.split,
        data.feats,
        data.users,
        data.ret,
        data.sc,
    )
    u0, u1 = int(users[0]), int(users[1])
    t0, t1 = split.truth[u0], split.truth[u1]
    other = np.setdiff1d(np.arange(ds.n_items), np.concatenate([t0, t1]))[:3]
    cands = pd.DataFrame({"user": [u0, u0, u0, u1], "item": [t0[0], other[0], other[1], other[2]]})
    # u0 finds 1 of its |t0| items, u1 none: recall = (1/|t0| + 0) / 2
    assert reranking.candidate_recall(cands, np.array([u0, u1]), split) == pytest.approx(
        1 / len(t0) / 2
    )
    full = pd.DataFrame({"user": np.repeat(u0, len(t0)), "item": t0})
    assert reranking.candidate_recall(full, np.array([u0]), split) == 1.0
    # the same number Recall@K gives a list holding exactly the candidates
    cands = reranking.build_candidates(ret, sc, users, feats, reranking.CandidateConfig(20))
    r = c.per_user_metrics(ret[:, :20], [split.truth[int(u)] for u in users])["recall@20"]
    assert reranking.candidate_recall(cands, users, split) == pytest.approx(np.nanmean(r))


def test_feature_matrix_and_pair_counts_from_training_rows(data, ranked_setup):
    split, feats, users = data.split, data.feats, data.users
    cands, X, names = ranked_setup
    assert X.shape == (len(cands), len(names)) and X.dtype == np.float32
    assert len(set(names)) == len(names)
    # the pair features equal Features.pairs (training rows), 0 for never-bought pairs
    col = X[:, names.index("ui_count")]
    bought_items = {int(u): set(feats.bought(int(u))[0]) for u in users[:20]}
    for row in np.flatnonzero(np.isin(cands["user"], users[:20]))[:400]:
        u, i = int(cands["user"].iat[row]), int(cands["item"].iat[row])
        n_train = ((split.train["user"] == u) & (split.train["item"] == i)).sum()
        assert (col[row] > 0) == (i in bought_items[u]) == (n_train > 0)


def same_matrix(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(np.nan_to_num(a, nan=-7), np.nan_to_num(b, nan=-7))


@pytest.mark.parametrize("mode", ["interaction", "temporal"])
def test_ranker_features_ignore_held_out_rows(data, mode):
    """The leakage test of the ranking stage: the held-out rows are altered inside the
    Dataset (items, carts, days, reorder flags recomputed as Kaggle did), features are
    rebuilt from the new split, and no column of ranker_features moves for the same
    candidates. Control: altering one training row does move it."""
    ds = data.ds
    base, alt, held = with_held_out_rows_altered(ds, mode, seed=1)
    split = c.split_interactions(base.interactions, mode)
    feats = c.build_features(base, split.train)
    users = split.eval_users()
    rng = np.random.default_rng(0)
    ret = np.stack([rng.choice(ds.n_items, 20, replace=False) for _ in users]).astype(np.int64)
    sc = np.sort(rng.random((len(users), 20)).astype(np.float32), axis=1)[:, ::-1]
    cands = reranking.build_candidates(
        ret, sc, users, feats, reranking.CandidateConfig(20, bought=True)
    )
    model = _FakeTowers(ds.n_users, ds.n_items)
    X, names = reranking.ranker_features(cands, feats, model)

    alt_split = c.split_interactions(alt.interactions, mode)
    assert len(alt_split.test) == len(held)
    X_alt, names_alt = reranking.ranker_features(
        cands, c.build_features(alt, alt_split.train), model
    )
    assert names_alt == names
    moved = [n for j, n in enumerate(names) if not same_matrix(X[:, j], X_alt[:, j])]
    assert not moved, f"held-out rows moved ranker features {moved}"

    train_rows = np.setdiff1d(np.arange(len(ds.interactions)), held)
    ctl = base.interactions.copy()
    row = train_rows[len(train_rows) // 3]
    ctl.loc[row, "item"] = (ctl.loc[row, "item"] + 1) % ds.n_items
    ctl_split = c.split_interactions(ctl, mode)
    X_ctl, _ = reranking.ranker_features(
        cands, c.build_features(replace(ds, interactions=ctl), ctl_split.train), model
    )
    assert not same_matrix(X, X_ctl)


@pytest.mark.parametrize("kind,params", [("lightgbm", SMALL), ("xgboost", SMALL_XGB)])
def test_both_kinds_run_shapes_padding_determinism(data, ranked_setup, kind, params):
    split, feats, users, ret, sc = data.split, data.feats, data.users, data.ret, data.sc
    cands, X, names = ranked_setup
    r1, info = reranking.rank_with_gbdt(cands, X, names, users, split, kind, params=params)
    assert r1.shape == (len(users), c.K_MAX) and r1.dtype == np.int64
    for j in (0, 5, len(users) - 1):  # each list: distinct candidates of that user
        row = r1[j][r1[j] >= 0]
        assert len(row) == len(set(row))
        assert set(row) <= set(cands.loc[cands["user"] == users[j], "item"])
    assert info["n_candidates"] == len(cands) and len(info["feature_importance"]) == 10
    assert set(info["feature_importance"]) <= set(names)
    r2, _ = reranking.rank_with_gbdt(cands, X, names, users, split, kind, params=params)
    assert np.array_equal(r1, r2)  # same seed -> same lists
    # a user with fewer than k candidates gets -1 padding; a shuffled `users` gives the same rows
    few = reranking.build_candidates(ret, sc, users, feats, reranking.CandidateConfig(8))
    Xf, nf = reranking.ranker_features(few, feats)
    rf, _ = reranking.rank_with_gbdt(few, Xf, nf, users, split, kind, k=10, params=params)
    assert rf.shape == (len(users), 10) and (rf[:, 8:] == -1).all() and (rf[:, :8] >= 0).all()
    perm = np.random.default_rng(3).permutation(len(users))
    rp, _ = reranking.rank_with_gbdt(few, Xf, nf, users[perm], split, kind, k=10, params=params)
    assert np.array_equal(rp, rf[perm])


def test_ranker_beats_random_order(data, ranked_setup):
    """A sanity check that labels are used: on bought candidates, LightGBM beats the
    FAISS order of a random retrieval by a wide margin."""
    split, feats, users, ret = data.split, data.feats, data.users, data.ret
    cands, X, names = ranked_setup
    r, _ = reranking.rank_with_gbdt(cands, X, names, users, split, "lightgbm", params=SMALL)
    m = c.evaluate(r, users, split, feats, n_boot=10)["all"]
    base = c.evaluate(ret, users, split, feats, n_boot=10)["all"]
    assert m["ndcg@10"] > base["ndcg@10"] + 0.1


def test_users_without_truth_are_scored_but_not_trained_on(data, ranked_setup):
    split, users = data.split, data.users
    cands, X, names = ranked_setup
    dropped = users[:10]
    sp2 = replace(split, truth={u: t for u, t in split.truth.items() if u not in set(dropped)})
    r, info = reranking.rank_with_gbdt(cands, X, names, users, sp2, "lightgbm", params=SMALL)
    assert (r[:10, 0] >= 0).all()
    fold = reranking.fold_of_users(users)
    n_pos = (
        pd.Series(reranking.candidate_labels(cands, sp2)).groupby(cands["user"].to_numpy()).sum()
    )
    for f in range(2):
        trainable = [u for u in users[fold != f] if n_pos.get(int(u), 0) > 0]
        assert info["fold_train_users"][f] == len(trainable)


def test_ranker_training_user_cap_samples_each_fold(data, ranked_setup):
    """--ranker-train-users: each fold's ranker trains on at most that many of its users, a
    seeded sample (the same lists twice), and the lists change (the cap is used); every user
    is still scored. A cap above the fold's users changes nothing."""
    split, users = data.split, data.users
    cands, X, names = ranked_setup
    full, info = reranking.rank_with_gbdt(cands, X, names, users, split, params=SMALL)
    cap = min(info["fold_train_users"]) // 3
    r1, i1 = reranking.rank_with_gbdt(cands, X, names, users, split, params=SMALL, train_users=cap)
    r2, _ = reranking.rank_with_gbdt(cands, X, names, users, split, params=SMALL, train_users=cap)
    assert i1["fold_train_users"] == [cap, cap] and i1["train_users_cap"] == cap
    assert np.array_equal(r1, r2) and not np.array_equal(r1, full)
    assert (r1[:, 0] >= 0).all()
    big = max(info["fold_train_users"])
    rb, ib = reranking.rank_with_gbdt(cands, X, names, users, split, params=SMALL, train_users=big)
    assert np.array_equal(rb, full) and ib["fold_train_users"] == info["fold_train_users"]
    # the sample is drawn from the fold's own trainable users
    cu = cands["user"].to_numpy()
    picked = reranking.fold_sample(cu, 5, 42, 0)
    assert len(picked) == 5 and set(picked) <= set(cu) and (np.diff(picked) > 0).all()


@pytest.mark.parametrize("kind,params", [("lightgbm", SMALL), ("xgboost", SMALL_XGB)])
def test_no_label_leakage_cross_fitting(data, ranked_setup, kind, params):
    """The held-out items of the users in fold A are replaced by other items (their
    truth and their test rows): fold A's lists must not change at all, because the
    model scoring fold A never saw fold A's labels. Control: fold B's lists, ranked by
    a model trained on fold A's (now different) labels, do change."""
    split, users = data.split, data.users
    cands, X, names = ranked_setup
    fold = reranking.fold_of_users(users, 2)
    assert set(fold) == {0, 1} and abs((fold == 0).sum() - (fold == 1).sum()) <= 1
    fold_a = {int(u) for u in users[fold == 0]}
    rng = np.random.default_rng(7)
    truth2, test2 = {}, split.test.copy()
    for u, t in split.truth.items():
        if u in fold_a:  # new held-out items: random candidates of that user, not its old truth
            mine = cands.loc[cands["user"] == u, "item"].to_numpy()
            new = rng.choice(np.setdiff1d(mine, t), size=min(len(t), 5), replace=False)
            truth2[u] = np.sort(new)
            rows = test2.index[test2["user"] == u]
            test2.loc[rows, "item"] = rng.choice(new, size=len(rows)).astype(test2["item"].dtype)
        else:
            truth2[u] = t
    split2 = replace(split, test=test2, truth=truth2)
    assert any(not np.array_equal(split.truth[u], truth2[u]) for u in fold_a)
    r1, _ = reranking.rank_with_gbdt(cands, X, names, users, split, kind, params=params)
    r2, _ = reranking.rank_with_gbdt(cands, X, names, users, split2, kind, params=params)
    a = fold == 0
    assert np.array_equal(r1[a], r2[a])  # fold A: untouched by its own labels
    assert not np.array_equal(r1[~a], r2[~a])  # control: the test can fail
    # and one fold: all users trained and scored by one model, which does leak
    # (guarded: folds must be >= 2)
    with pytest.raises(ValueError):
        reranking.rank_with_gbdt(cands, X, names, users, split, kind, folds=1, params=params)


class _FakeTowers:
    """Stands in for a trained TwoTower: fixed random unit embeddings."""

    def __init__(self, n_users, n_items, seed=0):
        rng = np.random.default_rng(seed)
        ue, ie = rng.normal(size=(n_users, 8)), rng.normal(size=(n_items, 8))
        self.ue = (ue / np.linalg.norm(ue, axis=1, keepdims=True)).astype(np.float32)
        self.ie = (ie / np.linalg.norm(ie, axis=1, keepdims=True)).astype(np.float32)

    def embed_users(self, users):
        return self.ue[np.asarray(users)]

    def embed_items(self):
        return self.ie


def test_rerank_end_to_end_with_model_scores(data):
    ds, split, feats, users = data.ds, data.split, data.feats, data.users
    model = _FakeTowers(ds.n_users, ds.n_items)
    sc = model.embed_users(users) @ model.embed_items().T
    ret = np.argsort(-sc, axis=1, kind="stable")[:, :30]
    sc = np.take_along_axis(sc, ret, 1)
    cfg = reranking.CandidateConfig(30, bought=True)
    out = reranking.rerank(
        model,
        users,
        feats,
        split,
        cfg,
        retrieved=(ret, sc),
        params={"lightgbm": SMALL, "xgboost": SMALL_XGB},
    )
    assert set(out) == {"lightgbm", "xgboost"}
    for ranked, info in out.values():
        assert ranked.shape == (len(users), c.K_MAX)
        assert info["candidates"] == "faiss@30+bought" and 0 < info["candidate_recall"] <= 1
        assert info["stage_seconds"] >= info["train_seconds"]
    # with the model, bought-only candidates get the same cosine FAISS would give them
    cands = reranking.build_candidates(ret, sc, users, feats, cfg)
    X, names = reranking.ranker_features(cands, feats, model)
    u, i = cands["user"].to_numpy(), cands["item"].to_numpy()
    want = np.einsum("nd,nd->n", model.ue[u], model.ie[i])
    assert np.allclose(X[:, names.index("tt_score")], want, atol=1e-5)
    assert not np.isnan(X[:, names.index("tt_score")]).any()
