"""Experiment 2 (llm_user_narration.py): profiles and the history the LLM reads from training
rows only, category precision, the controls, the verdict on the question's metric, and the
script end to end against the loopback fake Anthropic server (offline; the sentence model is
replaced by a deterministic hash embedding)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import with_held_out_rows_altered

import common as C
import config
import descriptions as D
import llm
import llm_user_narration as N
import text as T
from evals import plots as P


@pytest.fixture(scope="module")
def data(small_sample_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(config, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
    ds = C.load_dataset(small_sample_dir, n_users=300, n_items=600, verbose=False)
    split = C.split_interactions(ds.interactions)
    yield ds, split
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


@pytest.mark.parametrize("mode", ["interaction", "temporal"])
def test_changing_a_held_out_row_changes_no_profile(data, mode):
    """Bug caught: profile facts read from all rows (or the held-out rows) instead of
    split.train: the altered held-out rows would change departments/products/cadence."""
    ds = data[0]
    base, altered, _ = with_held_out_rows_altered(ds, mode)
    users = np.arange(ds.n_users)
    facts = [
        T.user_profile_facts(d, C.split_interactions(d.interactions, mode).train, users)
        for d in (base, altered)
    ]
    assert facts[0] == facts[1]
    assert [T.profile_template_text(f) for f in facts[0]] == [
        T.profile_template_text(f) for f in facts[1]
    ]
    # the history the LLM reads too
    history = [
        T.user_history(d, C.split_interactions(d.interactions, mode).train, users)
        for d in (base, altered)
    ]
    assert history[0] == history[1]
    # and the held-out rows do matter when they are (wrongly) included
    leaky = T.user_profile_facts(altered, altered.interactions, users)
    assert leaky != facts[1]
    assert T.user_history(altered, altered.interactions, users) != history[1]


def test_top_department_and_category_precision_by_hand(data):
    """Bug caught: the top department taken from held-out rows or by the wrong argmax;
    -1 slots counted as hits; precision divided by the list length instead of 10."""
    ds, split = data
    dept = ds.items["department_id"].fillna(0).to_numpy(np.int64)
    users = np.array([1, 4, 10])
    top = N.top_departments(ds, split.train, users)
    for u, t in zip(users, top):
        rows = split.train[split.train["user"] == u]
        counts = np.bincount(dept[rows["item"].to_numpy()], minlength=dept.max() + 1)
        assert t == int(np.argmax(counts))
    # a tie between two departments goes to the lower department id
    a, b = np.flatnonzero(dept == dept.max())[0], np.flatnonzero(dept == dept.min())[0]
    tie = split.train.iloc[:0].reindex(range(2)).assign(user=[0, 0], item=[a, b])
    assert N.top_departments(ds, tie, np.array([0]))[0] == dept.min()
    # a list of 7 items (3 in the department) and 13 empty slots; the department is item 0's,
    # so an empty slot (-1) read as item 0 would count as a hit
    t = dept[:1]
    in_top = np.flatnonzero(dept == t[0])[1:4]
    other = np.flatnonzero(dept != t[0])[:4]
    ranked = np.full((1, 20), -1)
    ranked[0, :7] = np.r_[in_top, other]
    assert N.category_precision(ds, ranked, t)[0] == pytest.approx(3 / 10)


def test_history_arm_reads_the_purchase_history_not_the_template(data):
    """Bug caught: the history arm's prompt filled with the template profile (a paraphrase,
    as the narration) instead of the user's own history: most bought products with their
    counts and the last orders, from training rows."""
    ds, split = data
    users = np.array([2, 5, 11])
    facts = T.user_profile_facts(ds, split.train, users)
    template_texts = [T.profile_template_text(f) for f in facts]
    fields = N.llm_profile_fields(ds, split.train, users, template_texts)
    assert fields[N.NARRATION] == (
        "user_narration",
        [{"purchase_summary": t} for t in template_texts],
    )
    name, history = fields[N.HISTORY]
    assert name == "user_history_profile" and len(history) == len(users)
    names = ds.items["product_name"].to_numpy()
    for u, t, h in zip(users, template_texts, history):
        assert t not in h["top_items"] and t not in h["recent_orders"]
        rows = split.train[split.train["user"] == u]
        counts = rows["item"].value_counts()
        first = counts.index[np.lexsort((counts.index.to_numpy(), -counts.to_numpy()))][0]
        assert h["top_items"].splitlines()[0].startswith(f"- {names[first]} (")
        assert h["top_items"].splitlines()[0].endswith(f": {counts[first]} times")
        assert len(h["top_items"].splitlines()) == min(T.HISTORY_TOP_ITEMS, len(counts))
        last = rows["order_number"].max()
        assert h["recent_orders"].splitlines()[0].startswith(f"- order {last}: ")
        prompt = N.TEMPLATES[name].request(**h).prompt
        assert h["top_items"] in prompt and h["recent_orders"] in prompt


def test_placebo_gives_each_user_another_users_profile():
    users = np.arange(7)
    texts = [f"profile {u}" for u in users]
    got_users, got = N.another_users_profiles(users, texts)
    assert list(got_users) == list(users) and sorted(got) == sorted(texts)
    assert all(g != t for g, t in zip(got, texts))


def test_script_with_fake_llm_then_rerun_makes_no_call(
    fake_llm_env, small_sample_dir, data, capsys, monkeypatch
):
    """Bugs caught: an LLM arm missing or unlabelled; the verdict not on the question's metric
    (R@10 against the trained tower) or what it reads not in the JSON; category precision
    without its ceiling and base rate; cached item descriptions not used; a rerun that pays
    again; samples not nested."""
    server, tmp = fake_llm_env
    ds = data[0]
    client = llm.LLM()  # an earlier experiment 1 described 80 items
    D.describe_items(ds, np.arange(80), client, progress=False)
    client.close()
    sent_fields, profiles = {}, N.llm_profiles

    def recording(client, template, fields, users):
        sent_fields[template] = fields
        return profiles(client, template, fields, users)

    monkeypatch.setattr(N, "llm_profiles", recording)
    out = tmp / "r.json"
    tower = ("--epochs", "1", "--hidden", "16", "--dim", "8", "--batch-size", "4096")
    run = lambda *extra: N.main(argv(small_sample_dir, out, *tower, *extra))
    run("--llm", "claude", "--llm-users", "60")
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    arms = res["metrics"]
    assert {
        N.TEMPLATE_ARM,
        N.NARRATION_ARM,
        N.HISTORY_ARM,
        N.PLACEBO + N.ITEMS,
        N.NARRATION_PLACEBO + N.ITEMS,
        N.CEILING + N.ITEMS,
        "LLM narration x descriptions",
        N.TOWER,
        "popularity",
        "top-frequency",
    } <= set(arms)
    for a in (N.NARRATION_ARM, N.HISTORY_ARM, N.PLACEBO + N.ITEMS, N.NARRATION_PLACEBO + N.ITEMS):
        assert res["produced_by"][a] == llm.DEFAULT_MODEL
    assert "narration vs another user's narration (placebo)" in res["verdict"]
    assert arms[N.TEMPLATE_ARM]["all"]["n_users"] == 60
    assert "80 items with a cached" in printed
    # the question's metric decides: each text profile against the tower and top-frequency
    for ref in (N.TOWER, "top-frequency"):
        assert {N.TEMPLATE_ARM, N.NARRATION_ARM, N.HISTORY_ARM} <= set(res["gains"][ref])
    r = res["verdict_reads"]["replace"]
    assert (r["metric"], r["reference"], r["claim"]) == ("recall@10", N.TOWER, "competitive")
    ref, arm = r["gain"].removeprefix("gains.").split(".", 1)
    assert ref == N.TOWER and res["gains"][ref][arm]["margin"] == r["margin"] == N.MARGIN
    assert arm in r["candidates"] and N.CEILING + N.ITEMS not in r["candidates"]
    assert "vs the trained user tower" in res["verdict"] and res["verdict"] in printed
    # the report's plot reads this JSON: the verdict's gains, in bold
    spec = P.FIGURES["llm_user_narration"](res)
    assert any(r.verdict for panel in spec.panels for r in panel.rows)
    assert P.plot_experiment("llm_user_narration", res, tmp) == "plot_llm_user_narration.png"
    assert res["verdict"].split()[1] in ("confirmed", "refuted", "inconclusive")
    # the original's metric, with its ceiling control, base rate and what it rewards
    cp = res["category_precision"]
    assert N.CEILING + N.ITEMS in cp and N.BASE_RATE in cp  # (hash embeddings: no ceiling here)
    assert "ceiling" in res["category_precision_rewards"] and "ceiling" in printed
    assert (
        res["paired_template_minus_narration"]["users"] == res["profiles"][N.NARRATION]["profiled"]
    )
    assert res["profiles"][N.HISTORY]["profiled"] == 60
    # the history prompts sent carry purchase counts, not the template profile
    history = sent_fields["user_history_profile"]
    assert len(history) == 60 and all(" time" in h["top_items"] for h in history)
    assert not any("Shops mostly in" in v for h in history for v in h.values())
    # the report shows the question and the original finding; the prompts sent are versioned
    assert (res["question"], res["original_finding"]) == (N.QUESTION, N.ORIGINAL_FINDING)
    assert set(res["prompt_versions"]) == {
        "user_narration",
        "user_history_profile",
        "item_description",
    }
    # paired gains only between arms ranking the same items (the described subset has
    # another truth and denominator than the two-tower's whole catalogue)
    assert "LLM narration x descriptions" in res["gains"]["template profile x descriptions"]
    for ref, gained in res["gains"].items():
        if ref != "template profile x descriptions":
            assert not [a for a in gained if a.endswith("x descriptions")], ref
    sent = server.counts.copy()
    run("--llm", "claude", "--llm-users", "60")
    assert server.counts == sent
    # samples are nested: 70 users = the 60 above (profiles cached) + 10 new ones, 2 prompts each
    run("--llm", "claude", "--eval-users", "70")
    usage = json.loads(out.read_text())["llm"]
    assert usage["requests"] - usage["cached"] == 20


def test_script_without_llm(fake_llm_env, small_sample_dir, capsys):
    server, tmp = fake_llm_env
    out = tmp / "r.json"
    N.main(argv(small_sample_dir, out, "--no-train", "--llm", "none", "--eval-users", "30"))
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "LLM arms skipped" in printed and "fewer than the 200" in printed
    assert not [a for a in res["metrics"] if "LLM" in a]
    assert N.CEILING + N.ITEMS in res["metrics"]
    assert res["verdict"].startswith("verdict: inconclusive - no LLM arm")
    assert res["llm"] == {"skipped": "LLM arms disabled (--llm none)"}
    assert sum(server.counts.values()) == 0


@pytest.mark.skipif(
    not (llm.local_runtime_installed() and llm.local_model_installed(llm.TINY_LOCAL_MODEL)),
    reason="xllamacpp or the tiny model packages are not installed",
)
def test_history_profiles_with_the_tiny_local_model(data, tmp_path):
    """The history arm through the real local backend (the 0.5B test model): free text back
    for each user, its words and wall time counted, and a rerun from the cache."""
    ds, split = data
    users = np.array([2, 5])
    template = [T.profile_template_text(f) for f in T.user_profile_facts(ds, split.train, users)]
    name, fields = N.llm_profile_fields(ds, split.train, users, template)[N.HISTORY]
    client = llm.LLM(
        llm.TINY_LOCAL_MODEL, backend="local", cache_path=tmp_path / "c.sqlite", n_parallel=2
    )
    try:
        got = N.llm_profiles(client, name, fields, users)
        assert list(got["users"]) == list(users) and all(len(t.split()) > 3 for t in got["texts"])
        assert got["info"]["profiled"] == 2 and got["info"]["words"] > 3
        assert got["info"]["wall_s"] >= 0
        calls = client.usage_report()["api_calls"]
        assert N.llm_profiles(client, name, fields, users)["texts"] == got["texts"]
        assert client.usage_report()["api_calls"] == calls
    finally:
        client.close()
