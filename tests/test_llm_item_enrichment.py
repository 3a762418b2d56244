"""Experiment 1 (llm_item_enrichment.py): the text tower, zero-shot vectors, the described items
and their placebos, the size guard, and the script end to end against the loopback fake
Anthropic server (offline, fast: the sentence model is replaced by a deterministic hash
embedding)."""

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
import text as T
from evals import plots as P
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


def test_described_items_span_popularity_not_the_top_n(data):
    """Bug caught: the described items are the N most bought (the original study's item
    world: the head only), not a seeded draw across popularity bands; samples not nested (a
    larger run would not reuse a smaller one's descriptions)."""
    ds, split, feats = data
    exp = SimpleNamespace(ds=ds, split=split, feats=feats)
    order = feats.popularity_order()
    got = E.described_sample(exp, 50)
    assert len(got) == 50 and len(np.unique(got)) == 50
    assert not np.array_equal(got, np.sort(order[:50]))
    for band in np.array_split(order, E.STRATA):  # the same number from every band
        assert np.isin(got, band).sum() == 50 // E.STRATA
    assert np.isin(E.described_sample(exp, 30), got).all()  # nested
    np.testing.assert_array_equal(E.described_sample(exp, 50), got)  # seeded
    assert len(E.described_sample(exp, 0)) == ds.n_items  # 0: every item


def fake_descriptions(items, seed=0) -> dict:
    """{item: a made-up description} of varied lengths (3 to 40 words)."""
    rng = np.random.default_rng(seed)
    return {int(i): " ".join(f"w{i}x{k}" for k in range(rng.integers(3, 41))) for i in items}


def test_every_source_is_built_like_the_description_arm(data, monkeypatch):
    """Bugs caught: a placebo built differently from the description arm: its appendix on
    other items than the described ones, of another length than the description (the
    filler padded to the template's length), an item keeping its own description in the
    shuffled placebo; or a placebo arm whose user vectors come from another source's
    embeddings than its item vectors. Arms may differ only in the described items' text."""
    ds, split, feats = data
    monkeypatch.setattr(T, "embed_texts", hash_embed)
    described = np.array([3, 8, 40, 41, 77, 120, 200, 333, 401])
    desc = fake_descriptions(described)
    template = T.item_template_texts(ds)
    texts = E.source_texts(template, desc)
    assert set(texts) == set(E.SOURCES)
    length_rank = {i: r for r, i in enumerate(sorted(desc, key=lambda i: E.n_words(desc[i])))}
    for s in E.SOURCES[1:]:
        appendix = {}
        for i, (t, x) in enumerate(zip(template, texts[s])):
            if i not in desc:
                assert x == t, (s, i)
            else:
                assert x.startswith(t + " ") and x != t, (s, i)
                appendix[i] = x[len(t) + 1 :]
        assert set(appendix) == set(desc)
        if s == "description":
            assert appendix == desc
        elif s == "placebo filler":  # the same words for every item, the description's length
            assert all(E.n_words(a) == E.n_words(desc[i]) for i, a in appendix.items())
            assert len({a.split()[0] for a in appendix.values()}) == 1
        else:  # another described item's description, of about the same length
            assert sorted(appendix.values()) == sorted(desc.values())
            owner = {d: i for i, d in desc.items()}
            assert all(owner[a] != i for i, a in appendix.items())
            assert all(
                abs(length_rank[owner[a]] - length_rank[i]) <= 2 for i, a in appendix.items()
            )
    # every source's arms: user and item vectors from that source's embeddings, the same way
    text = E.item_texts(ds, desc, "m", progress=False)
    users = split.eval_users()[:30]
    added = {}
    exp = SimpleNamespace(
        ds=ds,
        args=SimpleNamespace(quiet=True),
        add=lambda arm, ranked, *a, **k: added.setdefault(arm, ranked),
    )
    E.zero_shot_arms(exp, [E.Truth("", split, users, feats, "all")], text)
    profile = hash_embed(
        [T.profile_template_text(f) for f in T.user_profile_facts(ds, split.train, users)]
    )
    for s in E.SOURCES:
        emb = hash_embed(texts[s])
        np.testing.assert_allclose(text.emb[s], emb)
        want = C.search(E.purchase_vectors(feats, users, emb), emb)
        np.testing.assert_array_equal(added[f"zero-shot purchases x {s}"], want, err_msg=s)
        want = C.search(profile, emb)
        np.testing.assert_array_equal(added[f"zero-shot profile x {s}"], want, err_msg=s)


def test_verdict_guard_counts_described_items_as_well_as_users():
    """Bug caught: the size guard counting users only (a 60-item run with 1,107 users read
    'confirmed' in the issue)."""
    exp = SimpleNamespace(args=SimpleNamespace(quick=False))
    line = experiment.Experiment.verdict(exp, "confirmed", "x", n_users=1107, n_items=60)
    assert line.startswith("verdict: inconclusive - x [would read 'confirmed', but 60 described")
    assert "60 described items < 500" in line and "users <" not in line
    line = experiment.Experiment.verdict(exp, "refuted", "x", n_users=150, n_items=60)
    assert "150 users < 200 and 60 described items < 500" in line
    assert (
        experiment.Experiment.verdict(exp, "confirmed", "x", 200, 500) == "verdict: confirmed - x"
    )


def test_cold_items_are_drawn_inside_the_described_items(data):
    """Bugs caught: cold items outside the described set; items outside it losing their
    training rows (they stay negatives); cold truth holding warm items."""
    _, split, feats = data
    described = E.described_sample(SimpleNamespace(feats=feats), 100)
    cold, cold_items = E.cold_split(split, described, 0.1)
    assert len(cold_items) and np.isin(cold_items, described).all()
    assert not cold.train["item"].isin(cold_items).any()
    assert len(cold.train) == (~split.train["item"].isin(cold_items)).sum()
    assert all(np.isin(t, cold_items).all() for t in cold.truth.values())


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


def test_script_with_fake_llm_then_rerun_makes_no_call(
    fake_llm_env, small_sample_dir, capsys, monkeypatch
):
    """Bugs caught: no LLM or placebo arm / no label / no cost; the described-items truth
    missing or not restricted; the verdict not told how many items were described; what the
    verdict reads not in the JSON; a rerun that pays again."""
    server, tmp = fake_llm_env
    out = tmp / "r.json"
    sizes = []
    verdict = experiment.Experiment.verdict

    def recording(self, status, sentence, n_users=None, n_items=None):
        sizes.append((n_users, n_items))
        return verdict(self, status, sentence, n_users, n_items)

    monkeypatch.setattr(experiment.Experiment, "verdict", recording)
    E.main(argv(small_sample_dir, out, "--llm", "claude", "--llm-items", "60", "--no-train"))
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    m = res["metrics"]
    for s in E.SOURCES:
        for arm in (f"zero-shot purchases x {s}", f"described: zero-shot profile x {s}"):
            assert arm in m, arm
    assert "cold: zero-shot purchases x placebo filler" in m
    for s in ("description", *E.PLACEBOS):
        assert res["produced_by"][f"zero-shot purchases x {s}"] == llm.DEFAULT_MODEL
    assert res["cost"]["usd_per_1000_items_batches"] > 0
    assert res["item_set"]["items"] == 60 and res["item_set"]["world"] == 600
    assert "held-out purchases of the 60 described items only" in printed
    # the described-items truth: fewer users than every held-out purchase, same lists
    n_all, n_d = (m[f"{p}popularity"]["all"]["n_users"] for p in ("", "described: "))
    assert 0 < n_d < n_all
    assert m["described: zero-shot purchases x description"]["all"]["n_users"] == n_d
    # richness: words, distinct words, vocabulary, contradiction for every text
    stats = res["description_stats"]
    assert set(stats) == {
        "template",
        f"description [{llm.DEFAULT_MODEL}]",
        "placebo shuffled (appendix)",
        "placebo filler (appendix)",
    }
    assert all(
        {"words", "distinct_tokens", "vocabulary", "contradiction"} <= set(v)
        for v in stats.values()
    )
    filler = stats["placebo filler (appendix)"]["words"]
    assert filler == pytest.approx(stats[f"description [{llm.DEFAULT_MODEL}]"]["words"])
    # the verdict: sizes passed to the guard, what it reads, the gains it reads
    assert sizes == [(res["verdict_sizes"]["users"], 60)]
    reads = res["verdict_reads"]
    assert set(reads) == {"beats best placebo", "beats template"}
    for r in reads.values():
        g = res["gains"][r["gain"].removeprefix("gains.")]
        assert r["metric"] == E.TWO_WAY and g["margin"] == r["margin"] == 0.0
        assert g[E.TWO_WAY]["n_users"] == res["verdict_sizes"]["users"]
        assert 0 < g["n_items"] <= 60
    assert reads["beats best placebo"]["reference"].split(" x ")[-1] in E.PLACEBOS
    assert res["verdict"].startswith("verdict: ") and res["verdict"] in printed
    assert "60 described items" in res["verdict"] and "placebo gap" in res["verdict"]
    # the report's plot reads this JSON: the verdict's gains, in bold
    spec = P.FIGURES["llm_item_enrichment"](res)
    assert any(r.verdict for panel in spec.panels for r in panel.rows)
    assert P.plot_experiment("llm_item_enrichment", res, tmp) == "plot_llm_item_enrichment.png"
    # the question, the LLM's usage and prompt versions
    assert res["question"] == E.QUESTION and res["original_finding"] == E.ORIGINAL_FINDING
    assert res["prompt_versions"] == versions_used("item_description")
    assert res["llm"]["label"] == llm.DEFAULT_MODEL and not res.get("llm_skipped")
    sent = server.counts.copy()
    assert sum(sent.values()) > 0
    E.main(argv(small_sample_dir, out, "--llm", "claude", "--limit", "60", "--no-train"))
    assert server.counts == sent  # every description came from the cache
    assert json.loads(out.read_text())["metrics"] == res["metrics"]


def test_quick_describes_a_handful_in_a_large_item_world():
    """Bug caught: --quick describing hundreds of items (hours with the local model), or
    shrinking the item world the metrics run on to the described items."""
    args = E.parse_args(["--quick"])
    assert 2 <= args.llm_items <= 20 and args.items >= 1000
    assert E.parse_args(["--quick", "--limit", "30"]).llm_items == 30  # the old spelling


def test_script_without_llm_skips_the_llm_arms(fake_llm_env, small_sample_dir, capsys):
    """Bugs caught: an LLM arm run without an LLM; trained variants saved under one key (the
    text tower would load the plain tower's weights)."""
    server, tmp = fake_llm_env
    out = tmp / "r.json"
    E.main(
        argv(
            small_sample_dir,
            out,
            *("--no-llm", "--llm-items", "40", "--epochs", "1", "--hidden", "16", "--dim", "8"),
            *("--batch-size", "4096", "--users", "100", "--items", "300"),
        )
    )
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "LLM arms skipped" in printed and res["llm_skipped"]
    assert res["llm"] == {"skipped": res["llm_skipped"]} and "gains" not in res
    assert not [a for a in res["metrics"] if "description" in a or "placebo" in a]
    assert "two-tower + text x template" in res["metrics"]
    cold = res["cold_start"]["users"] > 0
    assert ("cold: two-tower + text x template" in res["metrics"]) == cold
    assert len(list((tmp / "cache" / "two_tower").glob("*/model.pt"))) == 2 + 2 * cold
    assert res["verdict"].startswith("verdict: inconclusive")
    assert sum(server.counts.values()) == 0


@pytest.mark.parametrize("value", ["1", "-3"])
def test_bad_option_is_one_line_error(fake_llm_env, small_sample_dir, capsys, value):
    with pytest.raises(SystemExit) as e:
        experiment.main_guard(lambda: E.main(argv(small_sample_dir, "x.json", "--limit", value)))
    assert e.value.code == 2 and "--llm-items" in capsys.readouterr().err
