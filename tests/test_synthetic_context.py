"""Experiment 4 (synthetic_context.py): occasion fractions, request-time context, LLM labels."""

import json

import numpy as np
import pytest
from fake_anthropic import FakeAnthropic

import common as C
import config
import experiment
import llm
import synthetic_context as X
from prompts import OCCASIONS, TEMPLATES

TINY = [
    "--users",
    "80",
    "--items",
    "300",
    "--epochs",
    "1",
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
    ds = C.load_dataset(small_sample_dir, 120, 600, verbose=False)
    split = C.split_interactions(ds.interactions, "temporal")
    yield ds, split
    mp.undo()


def test_fractions_skip_unlabelled_orders_and_sum_to_one():
    users = np.array([0, 0, 0, 1, 1, 2])
    codes = np.array([1, 1, 2, -1, 3, -1])
    f = X.user_fractions(4, users, codes)
    assert f.shape == (4, len(OCCASIONS))
    np.testing.assert_allclose(f[0, [1, 2]], [2 / 3, 1 / 3])
    np.testing.assert_allclose(f[1, 3], 1.0)  # the unlabelled order is not a vote
    assert f[2].sum() == 0 and f[3].sum() == 0  # no labelled order: a zero row


def test_labels_come_from_training_orders_and_contexts_align(setup):
    ds, split = setup
    orders = X.training_orders(split)
    # no held-out order is a training order (the fractions cannot see the evaluated basket)
    assert not set(orders["order_id"]) & set(split.test["order_id"])
    truth = X.true_codes(ds, orders["order_id"].to_numpy())
    occ = ds.occasions.set_index("order_id")["occasion"]
    ctx = X.row_contexts(split, orders, truth)
    expect = [OCCASIONS.index(o) for o in occ.reindex(split.train["order_id"]).to_numpy()]
    np.testing.assert_array_equal(ctx, expect)  # each row carries its own order's occasion
    users = split.eval_users()
    held = X.held_out_orders(split, users)
    last = split.test.groupby("user")["order_id"].first().reindex(users).to_numpy()
    np.testing.assert_array_equal(held, last)
    assert not np.isin(held, orders["order_id"]).any()


def test_true_codes_none_on_real_rows(setup):
    import dataclasses

    ds, _ = setup
    assert X.true_codes(dataclasses.replace(ds, occasions=None), np.array([1, 2])) is None


def test_llm_labels_through_fake_server_are_batched_cached_and_training_only(
    setup, tmp_path, monkeypatch
):
    ds, _ = setup
    split = C.split_interactions(ds.interactions, "interaction")  # orders lose some rows
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    monkeypatch.setattr(X, "BATCH_POLL_S", 0.01)
    orders = X.training_orders(split)
    with FakeAnthropic() as server:
        client = llm.LLM(
            api_key="sk-ant-test-0000",
            base_url=server.base_url,
            cache_path=tmp_path / "c.sqlite",
            timeout=5.0,
        )
        sent = []
        real_batch = client.run_batch
        monkeypatch.setattr(
            client, "run_batch", lambda reqs, **kw: sent.extend(reqs) or real_batch(reqs, **kw)
        )
        codes, info = X.label_orders(client, ds, split, orders, 12)
        assert server.counts["POST /v1/messages/batches"] == 1
        assert info["orders_asked"] == 12 and (codes >= 0).sum() == info["orders_labelled"] > 0
        assert (codes >= -1).all() and (codes < len(OCCASIONS)).all()
        # each prompt shows its order's TRAINING rows only: a held-out row never reaches it
        picked = orders["order_id"].to_numpy()[codes >= 0]
        n_train = split.train[split.train["order_id"].isin(picked)].groupby("order_id").size()
        lines = sum(
            len(r.prompt.split("(aisle):\n", 1)[1].split("\n\n")[0].splitlines()) for r in sent
        )
        assert lines == np.minimum(n_train, X.BASKET_ITEMS).sum()
        server.counts.clear()
        codes2, _ = X.label_orders(client, ds, split, orders, 12)  # rerun: cache only
        assert server.total_requests == 0
        np.testing.assert_array_equal(codes, codes2)


def run(argv, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "r.json"
    X.main([*argv, "--out", str(out)])
    return json.loads(out.read_text())


def test_smoke_generated_with_fake_llm(small_sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    monkeypatch.setattr(X, "BATCH_POLL_S", 0.01)
    with FakeAnthropic() as server:
        client = llm.LLM(
            api_key="sk-ant-test-0000",
            base_url=server.base_url,
            cache_path=tmp_path / "c.sqlite",
            timeout=5.0,
        )
        monkeypatch.setattr(llm, "client_from_args", lambda a, **kw: (client, "fake"))
        r = run(
            ["--data-dir", str(small_sample_dir), *TINY, "--orders", "30"], tmp_path, monkeypatch
        )
    text = capsys.readouterr().out
    arms = set(r["metrics"])
    assert {
        "two-tower",
        "random fractions",
        "true fractions",
        "context random",
        "context true",
    } <= arms
    assert any(a.startswith("LLM fractions") for a in arms)
    assert any(a.startswith("true fractions (same") for a in arms)
    assert r["prompt_versions"] == {"occasion_label": TEMPLATES["occasion_label"].version}
    lab = r["llm_labels"]
    assert lab["orders_asked"] == 30 and 0 <= lab["accuracy"] <= 1
    assert np.sum(lab["confusion"]["counts"]) == lab["orders_labelled"]
    assert r["verdict"].split(" - ")[0] in {f"verdict: {v}" for v in experiment.VERDICTS}
    assert "verdict:" in text and "confusion (rows truth" in text


def test_smoke_real_rows_skip_truth_arms(small_sample_dir, tmp_path, monkeypatch, capsys):
    # a copy of the sample without order_occasions.csv looks like real Kaggle rows
    import shutil

    real = tmp_path / "real"
    shutil.copytree(small_sample_dir, real)
    (real / C.OCCASIONS_FILE).unlink()
    r = run(["--data-dir", str(real), *TINY, "--llm", "none"], tmp_path, monkeypatch)
    assert "true fractions" not in r["metrics"] and "context true" not in r["metrics"]
    assert r["notes"]["true fractions"] == "skipped: no occasion truth"
    assert "context random" in r["metrics"]
    # exp.write records why the LLM arm was skipped, where evals/report.py looks for it
    assert r["llm"] == {"skipped": r["llm_skipped"]} and "--llm none" in r["llm_skipped"]
    assert r["notes"]["llm"] == f"skipped: {r['llm_skipped']}"
    assert "skipped: no occasion truth" in capsys.readouterr().out


def test_bad_option_is_a_config_error():
    with pytest.raises(C.ConfigError):
        X.parse_args(["--orders", "-1"])
