"""Two-tower model: the in-batch loss, determinism, saving, FAISS retrieval, the script."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import common as C
import config
import experiment


@pytest.fixture(scope="module")
def setup(small_sample_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(config, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
    ds = C.load_dataset(small_sample_dir, n_users=300, n_items=1500, verbose=False)
    split = C.split_interactions(ds.interactions)
    feats = C.build_features(ds, split.train)
    yield ds, split, feats
    mp.undo()


TINY = {"epochs": 1, "batch_size": 256, "hidden": 32, "dim": 16}


def test_a_training_step_never_waits_for_the_host(setup, monkeypatch):
    """The step keeps its work on the device: the batch is sliced from tensors already
    there and the loss is summed there, so an epoch syncs (.item()) only for its total and
    its validation batches, never once per step (progress off)."""
    import torch

    ds, split, feats = setup
    model = C.TwoTower(C.TowerConfig(**TINY), feats, ds.n_users, ds.n_items)
    calls = []
    item = torch.Tensor.item

    def counted(t):  # .item() called from the tower code (the optimiser's own CPU steps aside)
        if sys._getframe(1).f_code.co_filename.endswith("towers.py"):
            calls.append(1)
        return item(t)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    model.fit(split.train, progress=False)
    n_val = int(len(split.train) * model.cfg.val_frac)
    steps = (len(split.train) - n_val) // TINY["batch_size"]
    val_batches = -(-n_val // TINY["batch_size"])
    assert steps > 20 and len(calls) == 1 + val_batches


def test_epoch_rows_trains_each_epoch_on_a_fresh_sample(setup, monkeypatch):
    """--epoch-rows N: each epoch takes N // batch steps over a fresh seeded sample of the
    rows (the two epochs' rows differ); N at least the rows is the plain fit, to the bit."""
    ds, split, feats = setup
    bs = TINY["batch_size"]
    cfg = C.TowerConfig(**{**TINY, "epochs": 2, "epoch_rows": 3 * bs + 10})
    model = C.TwoTower(cfg, feats, ds.n_users, ds.n_items)
    seen, loss = [], C.TwoTower._loss

    def counted(self, users, items, log_q, context=None):
        if self.user_tower.training:  # training steps, not the validation batches
            seen.append(users.cpu().numpy() * ds.n_items + items.cpu().numpy())
        return loss(self, users, items, log_q, context)

    monkeypatch.setattr(C.TwoTower, "_loss", counted)
    model.fit(split.train, progress=False)
    assert len(seen) == 6 and all(len(b) == bs for b in seen)
    # (user, item) keys of the two epochs: fresh samples of ~3% of the rows share few
    first, second = np.concatenate(seen[:3]), np.concatenate(seen[3:])
    assert len(split.train) > 20 * len(first) and np.isin(first, second).mean() < 0.5
    monkeypatch.undo()
    plain = C.TwoTower(C.TowerConfig(**TINY), feats, ds.n_users, ds.n_items)
    plain.fit(split.train, progress=False)
    big = C.TwoTower(
        C.TowerConfig(**{**TINY, "epoch_rows": len(split.train)}), feats, ds.n_users, ds.n_items
    )
    big.fit(split.train, progress=False)
    np.testing.assert_array_equal(plain.embed_items(), big.embed_items())


@pytest.mark.parametrize("purchases", ["none", "bag", "centroid"])
def test_repeated_items_and_users_are_not_negatives(setup, purchases):
    ds, _, feats = setup
    model = C.TwoTower(C.TowerConfig(purchases=purchases, **TINY), feats, ds.n_users, ds.n_items)
    # a batch made of one (user, item) pair repeated: every off-diagonal logit is the same
    # item (or user), so all are masked and both cross-entropies are exactly 0
    same = model._loss(np.full(8, 3), np.full(8, 5), None)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    # distinct pairs: real negatives, positive loss
    diff = model._loss(np.arange(8), np.arange(8), None)
    assert diff.item() > 0.1


def test_logq_changes_the_loss(setup):
    import torch

    ds, _, feats = setup
    model = C.TwoTower(C.TowerConfig(**TINY), feats, ds.n_users, ds.n_items)
    u, i = np.arange(16), np.arange(16) * 3
    log_q = torch.log(torch.linspace(0.001, 0.1, ds.n_items))
    assert model._loss(u, i, log_q).item() != pytest.approx(model._loss(u, i, None).item())


def infonce_by_hand(ue, ie, users, items, temperature, log_q=None) -> float:
    """The symmetric in-batch InfoNCE written out in float64 numpy. Row r's positive is
    column r; a column holding the same item (user->item) or the same user (item->user)
    as row r is not a negative of row r. logQ (if given) is subtracted from every
    user->item logit of the column's item."""
    ue, ie = ue.astype(np.float64), ie.astype(np.float64)
    n = len(users)
    logits = ue @ ie.T / temperature
    u2i = logits - (0 if log_q is None else np.asarray(log_q, np.float64)[items][None, :])

    def cross_entropy(scores, same):
        total = 0.0
        for r in range(n):
            cols = [j for j in range(n) if j == r or not same[r, j]]
            total += np.log(np.exp(scores[r, cols]).sum()) - scores[r, r]
        return total / n

    return (
        cross_entropy(u2i, items[:, None] == items[None, :])
        + cross_entropy(logits.T, users[:, None] == users[None, :])
    ) / 2


@pytest.mark.parametrize("purchases", ["none", "centroid"])
def test_infonce_and_logq_by_hand_on_three_rows(setup, purchases):
    import torch

    ds, _, feats = setup
    torch.manual_seed(0)
    model = C.TwoTower(C.TowerConfig(purchases=purchases, **TINY), feats, ds.n_users, ds.n_items)
    ie_all = model.embed_items()
    rng = np.random.default_rng(0)
    log_q = np.log(rng.dirichlet(np.full(ds.n_items, 0.3)) + 1e-6).astype(np.float32)
    log_q_t = torch.as_tensor(log_q)
    batches = {
        "distinct": (np.array([3, 7, 11]), np.array([0, 40, 9])),
        "repeated item": (np.array([3, 7, 11]), np.array([40, 9, 40])),
        "repeated user": (np.array([7, 3, 7]), np.array([0, 40, 9])),
    }
    for name, (u, i) in batches.items():
        ue, ie = model.embed_users(u), ie_all[i]
        for lq, lq_t in ((None, None), (log_q, log_q_t)):
            want = infonce_by_hand(ue, ie, u, i, model.cfg.temperature, lq)
            got = model._loss(u, i, lq_t).item()
            assert got == pytest.approx(want, rel=1e-4, abs=1e-5), (name, lq is not None)
        # logQ moves the loss by a margin here, and in a direction its sign decides
        plus = infonce_by_hand(ue, ie, u, i, model.cfg.temperature, -log_q)
        minus = infonce_by_hand(ue, ie, u, i, model.cfg.temperature, log_q)
        assert abs(plus - minus) > 0.05, name


def test_centroid_is_the_weighted_mean_of_the_users_training_items(setup):
    """The user tower's centroid input, checked by hand: for each user (any order, repeats
    allowed) the log(1 + count)-weighted mean of the item tower's vectors of exactly that
    user's training items, weights summing to 1."""
    ds, _, feats = setup
    model = C.TwoTower(C.TowerConfig(purchases="centroid", **TINY), feats, ds.n_users, ds.n_items)
    users = np.array([7, 2, 11, 2, 0, 150])
    seen = []
    hook = model.user_tower.register_forward_pre_hook(lambda m, a: seen.append(a[5].numpy()))
    model.embed_users(users)
    hook.remove()
    ie, ptr = model.embed_items(), feats.bought_indptr
    for r, u in enumerate(users):
        items = feats.bought_items[ptr[u] : ptr[u + 1]]
        w = np.log1p(feats.bought_counts[ptr[u] : ptr[u + 1]])
        assert len(items) > 0
        np.testing.assert_allclose(seen[0][r], (w / w.sum()) @ ie[items], rtol=1e-5, atol=1e-6)


def test_same_seed_same_numbers_and_saved_model_reloads(setup):
    ds, split, feats = setup
    users = split.eval_users()
    cfg = C.TowerConfig(**TINY)
    a = C.train_two_tower(ds, split, feats, cfg, use_saved=False, progress=False)
    b = C.train_two_tower(ds, split, feats, cfg, use_saved=False, progress=False)
    np.testing.assert_array_equal(a.embed_items(), b.embed_items())
    np.testing.assert_array_equal(a.embed_users(users), b.embed_users(users))
    assert a.training_log["epochs"][0]["val_loss"] == b.training_log["epochs"][0]["val_loss"]
    other = C.train_two_tower(
        ds, split, feats, C.TowerConfig(**{**TINY, "seed": 7}), use_saved=False, progress=False
    )
    assert not np.array_equal(a.embed_items(), other.embed_items())
    loaded = C.train_two_tower(ds, split, feats, cfg, use_saved=True, progress=False)
    assert loaded.loaded_from is not None
    np.testing.assert_array_equal(loaded.embed_users(users), a.embed_users(users))
    saved = np.load(loaded.loaded_from / "item_embeddings.npy")
    np.testing.assert_array_equal(saved, a.embed_items())


def test_saved_towers_are_keyed_by_the_tower_code(setup):
    """Editing the training code retrains: towers saved by other code are not loaded."""
    ds, split, feats = setup
    cfg = C.TowerConfig(**TINY)

    class Plain(C.TwoTower):
        pass

    class Edited(C.TwoTower):
        def _loss(self, *a, **k):
            return 2 * super()._loss(*a, **k)

    Plain.__name__ = Edited.__name__ = "Variant"  # same name and settings: only the code differs
    C.train_two_tower(ds, split, feats, cfg, model_cls=Plain, progress=False)
    assert (
        C.train_two_tower(ds, split, feats, cfg, model_cls=Edited, progress=False).loaded_from
        is None
    )
    assert C.train_two_tower(ds, split, feats, cfg, model_cls=Plain, progress=False).loaded_from


def test_embeddings_are_unit_norm_and_faiss_is_exact(setup):
    ds, split, feats = setup
    users = split.eval_users()
    model = C.train_two_tower(
        ds, split, feats, C.TowerConfig(**TINY), use_saved=False, progress=False
    )
    ue, ie = model.embed_users(users), model.embed_items()
    assert ue.shape == (len(users), 16) and ie.shape == (ds.n_items, 16)
    np.testing.assert_allclose(np.linalg.norm(ie, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ue, axis=1), 1.0, atol=1e-5)
    ranked, scores = C.retrieve(model, users, k=20)
    brute = ue @ ie.T
    np.testing.assert_allclose(scores, np.take_along_axis(brute, ranked, 1), atol=1e-5)
    np.testing.assert_allclose(scores[:, 0], brute.max(1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_script_runs_end_to_end(small_sample_dir, tmp_path):
    """two_tower.py end to end, one seed (determinism is checked in-process above), in a
    temp cache; needs no .git folder (a source copy has none: the commit is then null)."""
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        "two_tower.py",
        "--data-dir",
        str(small_sample_dir),
        "--users",
        "300",
        "--items",
        "1500",
        "--epochs",
        "1",
        "--hidden",
        "32",
        "--seeds",
        "1",
        "--quiet",
        "--retrain",
        "--no-cache",
        "--rankers",
        "lightgbm",
        "--candidates",
        "faiss@20+bought",
        "--out",
        str(out),
    ]
    env = {**os.environ, "INSTACART_CACHE_DIR": str(tmp_path / "cache")}  # not the repo's data/
    p = subprocess.run(
        cmd, cwd=C.REPO, capture_output=True, text=True, timeout=300, check=False, env=env
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "top-frequency + popular" in p.stdout and "two-tower" in p.stdout
    a = json.loads(out.read_text())
    assert a["seeds"] == [42] and len(a["metrics"]["two-tower"]["per_seed"]) == 1
    assert "git_commit" in a["provenance"] and a["provenance"]["versions"]["torch"]
    assert "ci95_first_seed" in a["metrics"]["two-tower"]
    assert any("lightgbm" in name for name in a["metrics"])


def test_llm_verdict_below_the_minimum_users_is_inconclusive(capsys):
    """Bug caught: a smoke run's 'confirmed' / 'refuted' reported as a finding."""
    exp = object.__new__(experiment.Experiment)  # verdict() needs no data
    line = exp.verdict("refuted", "LLM minus LightGBM -0.08", n_users=2)
    assert line.startswith("verdict: inconclusive - ") and "2 users < 200" in line
    assert exp.verdict("refuted", "x", n_users=experiment.MIN_VERDICT_USERS).startswith(
        "verdict: refuted"
    )
    assert exp.verdict("confirmed", "x").startswith("verdict: confirmed")  # training arms
    with pytest.raises(C.ConfigError):
        exp.verdict("maybe", "x")


def test_pipeline_reference_is_the_best_row_on_the_same_data_and_split(tmp_path):
    """Every experiment table carries two_tower.py's best pipeline row, but only from a
    run on the same data and split: another sample or split must give no row."""

    def arm(ndcg):
        return {"all": {"ndcg@10": {"mean": ndcg, "std": 0.0}}}

    data = {"source": "generated sample (v)", "sampling": {"n_users": 9}, "users": 9}
    data.update(items=5, rows=40, orders=7, load_seconds=0.1)
    results = {
        "data": {**data, "load_seconds": 3.0},  # load time is not part of "same data"
        "split": {"mode": "interaction", "seed": 42},
        "metrics": {
            "top-frequency": arm(0.9),  # a baseline, not a pipeline row
            "two-tower": arm(0.3),
            "two-tower faiss@50+bought + lightgbm": arm(0.5),
            "two-tower faiss@20 + xgboost": arm(0.4),
        },
    }
    (tmp_path / "two_tower_generated_interaction.json").write_text(json.dumps(results))
    label, summary, path = experiment.pipeline_reference(data, "interaction", 42, tmp_path)
    assert path.name == "two_tower_generated_interaction.json"
    assert label == "two_tower.py best: two-tower faiss@50+bought + lightgbm"
    assert summary["all"]["ndcg@10"]["mean"] == 0.5
    assert experiment.pipeline_reference({**data, "rows": 41}, "interaction", 42, tmp_path) is None
    assert experiment.pipeline_reference(data, "interaction", 7, tmp_path) is None
    assert experiment.pipeline_reference(data, "temporal", 42, tmp_path) is None


def test_quick_keeps_an_explicit_value_equal_to_the_default():
    """`--quick --seeds 3` runs 3 seeds (the default) and `--quick --epochs 4` 4 epochs:
    --quick fills only the options not written on the command line, whatever their value."""
    import two_tower

    args = two_tower.parse_args(["--quick", "--seeds", "3", "--epochs", "4"])
    assert (args.seeds, args.epochs) == (3, 4)
    assert (args.users, args.items) == (two_tower.QUICK["users"], two_tower.QUICK["items"])
    plain = two_tower.parse_args(["--seeds", "3"])  # defaults restored after the probe
    assert (plain.users, plain.epochs) == (C.DEFAULT_USERS, C.TowerConfig().epochs)
