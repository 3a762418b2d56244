"""Experiment 5 (exp5_dual_head.py): dual-head item tower, gate, PCA head, 'destroyed?' metrics."""

import json

import numpy as np
import pytest
import torch

import common as C
import config
import exp5_dual_head as X
import text as T

TINY = [
    "--users",
    "80",
    "--items",
    "300",
    "--epochs",
    "2",
    "--seeds",
    "1",
    "--batch-size",
    "256",
    "--threads",
    "1",
    "--no-tifu",
    "--quiet",
]


@pytest.fixture(scope="module")
def setup(small_sample_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(config, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
    ds = C.load_dataset(small_sample_dir, 80, 300, verbose=False)
    split = C.split_interactions(ds.interactions)
    feats = C.build_features(ds, split.train)
    text = T.embed_texts(T.item_template_texts(ds), progress=False)
    mean, comps = X.pca_projection(text, 16)
    cfg = C.TowerConfig(dim=16, hidden=32, epochs=2, batch_size=256, seed=3)
    yield ds, split, feats, text, {"text": text, "mean": mean, "comps": comps}, cfg
    mp.undo()


def model(setup, mode):
    ds, _, feats, _, kw, cfg = setup
    return X.DualTwoTower(cfg, feats, ds.n_users, ds.n_items, mode=mode, **kw)


def test_overlap_and_cka_reference_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert X.neighbour_overlap(a, a) == 1.0 and X.neighbour_overlap(a, 3 * a @ q) == 1.0
    assert X.linear_cka(a, 3 * a @ q) == pytest.approx(1.0)  # rotation and scale invariant
    b = rng.normal(size=(300, 20))
    assert X.neighbour_overlap(a, b) < 0.08 and X.linear_cka(a, b) < 0.3


def test_semantic_head_starts_as_the_pca_projection_not_random(setup):
    _, _, _, text, kw, _ = setup
    m = model(setup, "frozen")
    head = m.semantic_vectors()
    pca = (text - kw["mean"]) @ kw["comps"].T
    np.testing.assert_allclose(head, pca / np.linalg.norm(pca, axis=1, keepdims=True), atol=1e-5)
    assert X.neighbour_overlap(head, text) > 0.4  # a random matrix gives ~0.05


def test_heads_are_normalised_before_the_gate(setup):
    m = model(setup, "trainable")
    before = m.embed_items()
    with torch.no_grad():  # a scale gap between the heads ...
        m.item_tower.semantic.weight.mul_(50.0)
        m.item_tower.semantic.bias.mul_(50.0)
    np.testing.assert_allclose(m.embed_items(), before, atol=1e-5)  # ... must not move the mix
    assert m.item_tower.alpha() == pytest.approx(0.5)  # gate starts neutral


def test_frozen_head_stays_fixed_trainable_moves_and_alpha_is_logged(setup):
    _, split, _, _, _, cfg = setup
    out = {}
    for mode in ("frozen", "trainable"):
        m = model(setup, mode)
        w0 = m.item_tower.semantic.weight.detach().clone()
        m.fit(split.train.iloc[:3000], progress=False)  # a few steps are enough
        out[mode] = (w0, m)
        alphas = [e["alpha"] for e in m.training_log["epochs"]]
        assert len(alphas) == cfg.epochs and all(0 < a < 1 for a in alphas)
        assert alphas[-1] != 0.5  # the gate learns
    w0, m = out["frozen"]
    assert torch.equal(m.item_tower.semantic.weight, w0)
    w0, m = out["trainable"]
    assert not torch.equal(m.item_tower.semantic.weight, w0)


def test_smoke_end_to_end(small_sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "r.json"
    X.main(
        [
            "--data-dir",
            str(small_sample_dir),
            *TINY,
            "--dim",
            "16",
            "--hidden",
            "32",
            "--out",
            str(out),
        ]
    )
    r = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert set(X.ARMS) <= set(r["metrics"])
    assert {f"{a} (cold items)" for a in X.ARMS} <= set(r["metrics"])
    assert all(len(c[0]) == 2 for c in r["alpha_curves"].values())  # one alpha per epoch
    assert r["alpha_curves"]["semantic only"][0] == [1.0, 1.0]
    sp = r["spaces"]["trainable semantic"][0]
    assert sp["head_before"]["overlap@10"] == pytest.approx(r["pca_space"]["overlap@10"])
    assert r["verdict"].startswith("verdict: ") and "alpha" in r["verdict"]
    assert r["question"] == X.QUESTION and r["original_finding"] == X.ORIGINAL_FINDING
    assert "cold-start items" in text and "alpha by epoch" in text


class VerdictOnly:
    """The one Experiment method verdict() calls."""

    def verdict(self, status, sentence, n_users=None):
        return f"verdict: {status} - {sentence}"


@pytest.mark.parametrize(
    "ci, seeds, word",
    [
        ((0.001, 0.02), [0.01, 0.02], "confirmed"),
        ((0.001, 0.02), [0.01, -0.001], "inconclusive"),  # one seed loses
        ((-0.01, 0.004), [0.001, 0.002], "refuted"),  # no gain of MIN_EFFECT
        ((-0.01, 0.004), [0.001, 0.006], "inconclusive"),  # one seed reaches it
    ],
)
def test_verdict_needs_the_interval_and_every_seed(ci, seeds, word):
    head = {"head ovl@10 init": (0.84, 0.0), "head ovl@10 after": (0.83, 0.0)}
    rows = {
        "collaborative only": {"val loss": (5.0, 0.0), "alpha by epoch": "0.000"},
        "frozen semantic": {"val loss": (4.9, 0.0), "alpha by epoch": "0.5 0.6"},
        "trainable semantic": {"val loss": (4.8, 0.0), "alpha by epoch": "0.5 0.4", **head},
    }
    gains = {
        "frozen semantic": {"recall@10": {"mean": 0.01, "ci95": list(ci), "per_seed": seeds}},
        "trainable semantic": {"recall@10": {"mean": 0.005}},
    }
    line = X.verdict(VerdictOnly(), gains, rows)
    assert line.startswith(f"verdict: {word} - ") and "final alpha 0.6 frozen / 0.4" in line


def test_dim_larger_than_pca_rank_is_a_config_error():
    with pytest.raises(C.ConfigError):
        X.pca_projection(np.zeros((10, 384), np.float32), 64)
