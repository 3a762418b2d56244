"""Experiment 1 (llm_item_enrichment.py): the text tower, zero-shot vectors, the item set, and
the script end to end against the loopback fake Anthropic server (offline, fast: the sentence
model is replaced by a deterministic hash embedding)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import hash_embed
from fake_anthropic import answer_for

import common as C
import config
import descriptions as D
import experiment
import llm
import llm_item_enrichment as E
from prompts import versions_used


@pytest.fixture(scope="module")
def data(small_sample_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(config, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
    ds = C.load_dataset(small_sample_dir, n_users=300, n_items=600, verbose=False)
    split = C.split_interactions(ds.interactions)
    yield ds, split, C.build_features(ds, split.train)
    mp.undo()


def argv(small_sample_dir, out, *extra):
    return [
        "--data-dir",
        str(small_sample_dir),
        "--users",
        "300",
        "--items",
        "600",
        "--seeds",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--no-tifu",
        "--out",
        str(out),
        *extra,
    ]


def test_text_item_tower_reads_the_frozen_text(data):
    """Bug caught: the text input ignored (the tower would give the same vectors for any text)."""
    ds, _, feats = data
    cfg = C.TowerConfig(epochs=1, hidden=16, dim=8)
    rng = np.random.default_rng(0)
    a = E.TextTwoTower(
        cfg,
        feats,
        ds.n_users,
        ds.n_items,
        text_emb=rng.standard_normal((ds.n_items, 384)).astype(np.float32),
    )
    b = E.TextTwoTower(
        cfg,
        feats,
        ds.n_users,
        ds.n_items,
        text_emb=rng.standard_normal((ds.n_items, 384)).astype(np.float32),
    )
    assert not np.allclose(a.embed_items(), b.embed_items())
    # the text is frozen: not a parameter the optimiser would update
    assert not any(p is a.item_tower.text for p in a.item_tower.parameters())


def test_purchase_vectors_are_count_weighted_means(data):
    """Bug caught: an unweighted mean (counts ignored) or another user's items."""
    ds, _, feats = data
    emb = hash_embed([str(i) for i in range(ds.n_items)])
    users = np.array([3, 7])
    got = E.purchase_vectors(feats, users, emb)
    for u, g in zip(users, got):
        items, counts = feats.bought(u)
        v = (counts[:, None] * emb[items]).sum(0)
        np.testing.assert_allclose(g, v / np.linalg.norm(v), atol=1e-5)


def test_search_and_baselines_stay_inside_the_item_set(data):
    """Bug caught: --limit not applied to an arm or a baseline (items outside the set)."""
    ds, split, feats = data
    items = np.sort(feats.popularity_order()[:50])
    users = C.restrict_truth(split, items).eval_users()[:40]
    emb = hash_embed([str(i) for i in range(ds.n_items)])
    ranked = C.search(emb[users % ds.n_items], emb, items)
    assert np.isin(ranked, items).all()
    for name, r in E.baselines_on(feats, users, items).items():
        assert np.isin(r[r >= 0], items).all(), name
    # top-frequency keeps the user's own order (count, then recency) inside the set
    full = C.top_frequency_ranking(feats, users, k=C.K_MAX)
    top = E.baselines_on(feats, users, np.arange(ds.n_items))["top-frequency"]
    np.testing.assert_array_equal(top, full)


def test_cold_items_are_drawn_inside_the_item_set(data):
    """Bugs caught: cold items outside the --limit set; items outside the set losing their
    training rows (they stay negatives); cold truth holding warm items."""
    ds, split, feats = data
    exp = SimpleNamespace(ds=ds, split=split, feats=feats)
    args = SimpleNamespace(limit=60, cold_frac=0.1)
    items, scope, split_s, cold, cold_items = E.item_set_and_cold_split(exp, args)
    assert len(items) == 60 and "--limit" in scope
    assert len(cold_items) and np.isin(cold_items, items).all()
    assert not cold.train["item"].isin(cold_items).any()
    outside = ~split.train["item"].isin(items)
    assert cold.train["item"].isin(split.train["item"][outside]).any()
    assert len(cold.train) == (~split.train["item"].isin(cold_items)).sum()
    assert all(np.isin(t, cold_items).all() for t in cold.truth.values())
    assert all(np.isin(t, items).all() for t in split_s.truth.values())
    assert split_s.train is split.train


def test_descriptions_are_keyed_by_product_not_position(fake_llm_env, data):
    """Bug caught: descriptions matched to items by list position (the original's defect)."""
    _, tmp = fake_llm_env
    ds = data[0]
    client = llm.LLM(cache_path=tmp / "d.sqlite")
    try:
        items = np.array([5, 9, 2, 30])
        fwd, _ = D.describe_items(ds, items, client, progress=False)
        rev, info = D.describe_items(ds, items[::-1], client, progress=False)
        assert fwd == rev and set(fwd) == set(items.tolist())
        assert info["generated"] == 0  # the second call came from the cache
        for i, text in fwd.items():  # each text answers its own product's prompt
            prompt = D.description_request(*D.item_fields(ds, np.array([i]))[0]).prompt
            want = json.loads(answer_for(prompt))
            assert text == D.description_text(want)
    finally:
        client.close()


def test_script_with_fake_llm_then_rerun_makes_no_call(fake_llm_env, small_sample_dir, capsys):
    """Bugs caught: no LLM arm / no label / no cost; a rerun that pays again."""
    server, tmp = fake_llm_env
    out = tmp / "r.json"
    E.main(argv(small_sample_dir, out, "--llm", "claude", "--limit", "60", "--no-train"))
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "zero-shot purchases x description" in res["metrics"]
    assert "cold: zero-shot profile x both" in res["metrics"]
    assert res["produced_by"]["zero-shot purchases x description"] == llm.DEFAULT_MODEL
    assert res["cost"]["usd_per_1000_items_batches"] > 0
    assert res["item_set"]["items"] == 60 and "--limit" in printed
    assert res["verdict"].startswith("verdict: ") and res["verdict"] in printed
    # the question, the LLM's usage and prompt versions, the gains evals/report.py reads
    assert res["question"] == E.QUESTION and res["original_finding"] == E.ORIGINAL_FINDING
    assert res["prompt_versions"] == versions_used("item_description")
    assert res["llm"]["label"] == llm.DEFAULT_MODEL and not res.get("llm_skipped")
    gain = "zero-shot purchases x description vs zero-shot purchases x template"
    assert set(res["gains"][gain]) >= {"recall@10", "ndcg@10", "n_users"}
    assert "description - template, same arm:" in printed
    for arm in ("zero-shot purchases x description", "random"):  # restricted to the set
        assert res["metrics"][arm]["all"]["n_users"] == res["metrics"]["random"]["all"]["n_users"]
    sent = server.counts.copy()
    assert sum(sent.values()) > 0
    E.main(argv(small_sample_dir, out, "--llm", "claude", "--limit", "60", "--no-train"))
    assert server.counts == sent  # every description came from the cache
    assert json.loads(out.read_text())["metrics"] == res["metrics"]


def test_script_without_llm_skips_the_llm_arms(fake_llm_env, small_sample_dir, capsys):
    """Bugs caught: an LLM arm run without an LLM; trained variants saved under one key (the
    text tower would load the plain tower's weights)."""
    server, tmp = fake_llm_env
    out = tmp / "r.json"
    E.main(
        argv(
            small_sample_dir,
            out,
            "--no-llm",
            "--limit",
            "40",
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--dim",
            "8",
            "--batch-size",
            "4096",
            "--users",
            "100",
            "--items",
            "300",
        )
    )
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "LLM arms skipped" in printed and res["llm_skipped"]
    assert res["llm"] == {"skipped": res["llm_skipped"]} and "gains" not in res
    assert not [a for a in res["metrics"] if "description" in a or "both" in a]
    assert "two-tower + text x template" in res["metrics"]
    assert "cold: two-tower + text x template" in res["metrics"]
    assert len(list((tmp / "cache" / "two_tower").glob("*/model.pt"))) == 4
    assert res["verdict"].startswith("verdict: inconclusive")
    assert sum(server.counts.values()) == 0


def test_bad_option_is_one_line_error(fake_llm_env, small_sample_dir, capsys):
    with pytest.raises(SystemExit) as e:
        experiment.main_guard(lambda: E.main(argv(small_sample_dir, "x.json", "--limit", "3")))
    assert e.value.code == 2 and "--limit" in capsys.readouterr().err
