"""Experiment 2 (llm_user_narration.py): profiles from training rows only, category
precision, and the script end to end against the loopback fake Anthropic server (offline;
the sentence model is replaced by a deterministic hash embedding)."""

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
        "--no-train",
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
    # and the held-out rows do matter when they are (wrongly) included
    leaky = T.user_profile_facts(altered, altered.interactions, users)
    assert leaky != facts[1]


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


def test_script_with_fake_llm_then_rerun_makes_no_call(
    fake_llm_env, small_sample_dir, data, capsys
):
    """Bugs caught: narration arm missing or unlabelled, no paired verdict, cached item
    descriptions not used, a rerun that pays again."""
    server, tmp = fake_llm_env
    ds = data[0]
    client = llm.LLM()  # an earlier experiment 1 described 80 items
    D.describe_items(ds, np.arange(80), client, progress=False)
    client.close()
    out = tmp / "r.json"
    N.main(argv(small_sample_dir, out, "--llm", "claude", "--llm-users", "60"))
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    arms = res["metrics"]
    assert {
        "template profile x template items",
        "LLM narration x template items",
        "LLM narration x descriptions",
        "popularity",
        "top-frequency",
    } <= set(arms)
    assert res["produced_by"]["LLM narration x template items"] == llm.DEFAULT_MODEL
    assert arms["template profile x template items"]["all"]["n_users"] == 60
    assert "80 items with a cached" in printed
    cp = res["category_precision"]
    assert 0 <= cp["LLM narration x template items"]["mean"] <= 1
    assert "base rate (random catalogue item)" in cp
    assert res["verdict"].split()[1] in ("confirmed", "refuted", "inconclusive")
    assert "paired difference" in res["verdict"] and res["verdict"] in printed
    assert res["paired_template_minus_narration"]["users"] == res["narration"]["narrated"]
    # the report shows the question and the original finding; the prompts sent are versioned
    assert (res["question"], res["original_finding"]) == (N.QUESTION, N.ORIGINAL_FINDING)
    assert set(res["prompt_versions"]) == {"user_narration", "item_description"}
    # paired gains only between arms ranking the same items (the described subset has
    # another truth and denominator than the two-tower's whole catalogue)
    # (--no-train here: no tower arm; the description arms are compared among themselves)
    assert set(res["gains"]["template profile x descriptions"]) == {"LLM narration x descriptions"}
    for ref, arms in res["gains"].items():
        if ref != "template profile x descriptions":
            assert not [a for a in arms if a.endswith("x descriptions")], ref
    sent = server.counts.copy()
    N.main(argv(small_sample_dir, out, "--llm", "claude", "--llm-users", "60"))
    assert server.counts == sent
    # samples are nested: 70 users = the 60 above (narrations cached) + 10 new ones
    N.main(argv(small_sample_dir, out, "--llm", "claude", "--eval-users", "70"))
    usage = json.loads(out.read_text())["llm"]
    assert usage["requests"] - usage["cached"] == 10


def test_script_without_llm(fake_llm_env, small_sample_dir, capsys):
    server, tmp = fake_llm_env
    out = tmp / "r.json"
    N.main(argv(small_sample_dir, out, "--llm", "none", "--eval-users", "30"))
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "LLM arms skipped" in printed and "fewer than the 200" in printed
    assert not [a for a in res["metrics"] if "LLM" in a]
    assert res["verdict"].startswith("verdict: inconclusive")
    assert res["llm"] == {"skipped": "LLM arms disabled (--llm none)"}
    assert sum(server.counts.values()) == 0
