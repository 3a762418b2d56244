"""Experiment 5 (exp5_dual_head.py): dual-head item tower, gate, PCA head, 'destroyed?' metrics."""

import json

import numpy as np
import pytest
import torch

import common as C
import config
import exp5_dual_head as X
import metrics
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


def test_minilm_mlp_tower_reads_only_the_text(setup):
    text = setup[3]
    m = model(setup, "mlp")
    assert isinstance(m.item_tower, X.MiniLMItemTower) and m.item_tower.alpha() == 1.0
    v = m.embed_items()
    np.testing.assert_allclose(v, m.semantic_vectors(), atol=1e-6)  # its output is its space
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    m.item_x.mul_(0.0)  # the tabular item features do not reach it ...
    np.testing.assert_allclose(m.embed_items(), v, atol=1e-6)
    m.item_tower.text[:] = torch.as_tensor(text[::-1].copy())  # ... the MiniLM vectors do
    assert not np.allclose(m.embed_items(), v, atol=1e-3)
    assert sum(p.requires_grad for p in m.item_tower.parameters()) == 6  # a trainable MLP


def test_saved_tower_key_covers_the_item_text_and_text_model(setup):
    ds = setup[0]
    texts = T.item_template_texts(ds)
    key = X.text_variant(texts)
    assert key["text_model"] == T.TEXT_MODEL and len(key["text"]) == 12
    assert X.text_variant([t + " " for t in texts])["text"] != key["text"]


def smoke(small_sample_dir, tmp_path, monkeypatch, seeds="1"):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "r.json"
    argv = ["--data-dir", str(small_sample_dir), *TINY, "--dim", "16", "--hidden", "32"]
    X.main([*argv, "--seeds", seeds, "--out", str(out)])
    return json.loads(out.read_text())


def test_smoke_end_to_end(small_sample_dir, tmp_path, monkeypatch, capsys):
    r = smoke(small_sample_dir, tmp_path, monkeypatch)
    text = capsys.readouterr().out
    assert set(X.ARMS) <= set(r["metrics"])
    assert {f"{a} (cold items)" for a in X.ARMS} <= set(r["metrics"])
    assert all(len(c[0]) == 2 for c in r["alpha_curves"].values())  # one alpha per epoch
    assert r["alpha_curves"]["semantic only"][0] == [1.0, 1.0]
    sp = r["spaces"]["trainable semantic"][0]
    assert sp["head_before"]["overlap@10"] == pytest.approx(r["pca_space"]["overlap@10"])
    assert r["verdict"].startswith("verdict: inconclusive - ") and "alpha" in r["verdict"]
    assert "one seed, no interval" in r["verdict"]
    assert r["question"] == X.QUESTION and r["original_finding"] == X.ORIGINAL_FINDING
    assert "cold-start items" in text and "alpha by epoch" in text and "survival share" in text
    assert "seed plan: 1 seed" in text and r["findings"]["seed_plan"]["seeds"] == 1
    # what the verdict reads, with its margin beside the gain it reads (the report's plots)
    assert r["verdict_reads"]["recovery"]["margin"] == X.MIN_EFFECT
    assert r["gains_over_seeds"]["frozen semantic"]["margin"] == X.MIN_EFFECT
    # every saved tower that reads the text is keyed by the texts and the text model
    saved = [
        json.loads(p.read_text())["variant"]
        for p in (tmp_path / "cache" / "two_tower").glob("*/config.json")
    ]
    dual = [v for v in saved if v and "item_tower" in v]
    assert len(dual) == 2 * (len(X.ARMS) - 1)  # each arm and its cold-start twin
    assert all(v["text"] == r["text_key"]["text"] and v["text_model"] == T.TEXT_MODEL for v in dual)


def test_survival_is_measured_against_minilm_above_the_collaborative_floor(
    small_sample_dir, tmp_path, monkeypatch
):
    r = smoke(small_sample_dir, tmp_path, monkeypatch)
    # recompute the MiniLM MLP's space at init from scratch: the same seed's fresh model,
    # measured against the MiniLM vectors themselves
    ds = C.load_dataset(small_sample_dir, 80, 300, verbose=False)
    split = C.split_interactions(ds.interactions)
    feats = C.build_features(ds, split.train)
    text = T.embed_texts(T.item_template_texts(ds), progress=False)
    mean, comps = X.pca_projection(text, 16)
    cfg = C.TowerConfig(dim=16, hidden=32, epochs=2, batch_size=256, seed=r["seeds"][0])
    fresh = X.DualTwoTower(
        cfg, feats, ds.n_users, ds.n_items, mode="mlp", text=text, mean=mean, comps=comps
    )
    sample = np.sort(np.random.default_rng(C.RANDOM_SEED).permutation(ds.n_items)[: X.SPACE_ITEMS])
    init = r["spaces"]["MiniLM MLP"][0]["tower_before"]
    assert init["overlap@10"] == pytest.approx(
        X.neighbour_overlap(fresh.embed_items()[sample], text[sample])
    )
    assert init["cka"] == pytest.approx(X.linear_cka(fresh.embed_items()[sample], text[sample]))
    # the survival share: (value - floor) / (ceiling - floor); floor = collaborative only
    # after training (same seed), ceiling = the PCA projection's own overlap with MiniLM
    s = r["findings"]["survival"]["overlap@10"]
    after = r["spaces"]["MiniLM MLP"][0]["tower_after"]["overlap@10"]
    floor = r["spaces"]["collaborative only"][0]["tower_after"]["overlap@10"]
    ceiling = r["pca_space"]["overlap@10"]
    assert ceiling == pytest.approx(
        X.neighbour_overlap(((text - mean) @ comps.T)[sample], text[sample])
    )
    assert s["init"] == [init["overlap@10"]] and s["after"] == [after] and s["floor"] == [floor]
    assert s["share"]["mean"] == pytest.approx((after - floor) / (ceiling - floor))
    assert s["share_init"]["mean"] == pytest.approx(
        (init["overlap@10"] - floor) / (ceiling - floor)
    )


def test_survival_uses_each_seed_and_its_own_floor():
    def rep(init, after):
        return {
            "tower_before": {"overlap@10": init, "cka": init},
            "tower_after": {"overlap@10": after, "cka": after},
        }

    space = {
        "MiniLM MLP": [rep(0.5, 0.2), rep(0.6, 0.4)],
        "collaborative only": [rep(0.01, 0.1), rep(0.01, 0.2)],
    }
    s = X.survival(space, {"overlap@10": 0.6, "cka": 0.6})["overlap@10"]
    np.testing.assert_allclose(s["share"]["per_seed"], [0.2, 0.5])
    np.testing.assert_allclose(s["share_init"]["per_seed"], [0.8, 1.0])
    np.testing.assert_allclose(s["change"]["per_seed"], [-0.3, -0.2])
    # a ceiling that is not above the floor: the share is undefined, the verdict inconclusive
    s = X.survival(space, {"overlap@10": 0.15, "cka": 0.15})["overlap@10"]
    assert s["share"] is None and X.destroyed_word(s["share"]) == "inconclusive"


class VerdictOnly:
    """The one Experiment method verdict() calls."""

    def verdict(self, status, sentence, n_users=None):
        return f"verdict: {status} - {sentence}"


def findings(shares, alphas=(0.45, 0.47, 0.44), loss=(0.01, 0.02, 0.015)):
    g = lambda xs: metrics.seed_interval(list(xs))
    curves = {a: [[0.5, x] for x in alphas] for a in X.GATED}
    val = {a: [5.0] * len(loss) for a in X.ARMS}
    val["trainable semantic"] = [5.0 + d for d in loss]
    return {
        "survival": {
            "overlap@10": {
                "init": [0.5],
                "after": [0.2],
                "floor": [0.1],
                "ceiling": 0.7,
                "share": g(shares),
                "share_init": g([0.7] * len(shares)),
            }
        },
        "alpha": X.alpha_findings(curves),
        "val_loss": X.val_loss_findings(val),
    }


@pytest.mark.parametrize(
    "shares, word",
    [
        ([0.05, 0.1, 0.08], "confirmed"),  # little survives: destroyed
        ([0.6, 0.7, 0.65], "refuted"),  # most survives
        ([0.05, 0.6, 0.3], "inconclusive"),  # the interval spans the margin
        ([0.1], "inconclusive"),  # one seed: no interval
    ],
)
def test_verdict_follows_the_survival_share_over_seeds(shares, word):
    sg = {
        a: metrics.seed_interval([-0.001, 0.002, 0.0005]) for a in ("frozen semantic", "MiniLM MLP")
    }
    line = X.verdict(VerdictOnly(), sg, findings(shares))
    assert line.startswith(f"verdict: {word} - ")
    share = metrics.seed_interval(shares)
    assert X.fmt_seeds(share, 3, sign=False) in line
    assert "recovery refuted" in line  # frozen gain interval below MIN_EFFECT on every seed


def test_gate_and_validation_loss_findings_follow_the_numbers():
    f = findings([0.1, 0.1, 0.1])
    assert f["alpha"]["frozen semantic"]["prefers"] == "the collaborative head"
    assert not f["alpha"]["frozen semantic"]["original_inside"]
    assert f["val_loss"]["claim_lower_than_baseline"] == "refuted"  # trainable is higher
    g = findings([0.1, 0.1, 0.1], alphas=(0.9, 0.95, 0.99), loss=(-0.02, -0.03, -0.025))
    assert g["alpha"]["frozen semantic"]["prefers"] == "the semantic head"
    assert g["val_loss"]["claim_lower_than_baseline"] == "confirmed"
    assert g["val_loss"]["lowest_arm"] == "trainable semantic"
    h = findings([0.1, 0.1, 0.1], alphas=(0.45, 0.6, 0.52))  # the interval spans 0.5
    assert h["alpha"]["frozen semantic"]["prefers"].startswith("neither head")
    assert not h["alpha"]["trainable semantic"]["original_inside"]  # 0.889 > [0.34, 0.71]
    line = X.verdict(
        VerdictOnly(),
        {a: metrics.seed_interval([0.0, 0.001]) for a in ("frozen semantic", "MiniLM MLP")},
        g,
    )
    assert "lower-than-baseline claim confirmed" in line


def test_seed_plan_counts_the_seeds_the_frozen_clause_needs(capsys):
    from scipy import stats

    g = metrics.seed_interval([0.0013, 0.0048, 0.0026, 0.0006, -0.0066])
    plan = X.print_seed_plan({"frozen semantic": g}, None)
    n = plan["frozen_r10_seeds_needed"]
    assert stats.t.ppf(0.975, n - 1) * g["std"] / np.sqrt(n) <= X.TARGET_HALF_WIDTH
    assert stats.t.ppf(0.975, n - 2) * g["std"] / np.sqrt(n - 1) > X.TARGET_HALF_WIDTH
    assert f"{n} seeds give <= 0.0025 -> NOT enough" in capsys.readouterr().out


def test_dim_larger_than_pca_rank_is_a_config_error():
    with pytest.raises(C.ConfigError):
        X.pca_projection(np.zeros((10, 384), np.float32), 64)
