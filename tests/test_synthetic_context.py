"""Experiment 4 (synthetic_context.py): occasion fractions, request-time context, LLM labels."""

import json

import numpy as np
import pytest
from fake_anthropic import FakeAnthropic

import common as C
import config
import experiment
import llm
import metrics
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
        pick = np.arange(12)
        codes, info = X.label_orders(client, ds, split, orders, pick)
        assert server.counts["POST /v1/messages/batches"] == 1
        assert info["orders_asked"] == 12 and (codes >= 0).sum() == info["orders_labelled"] > 0
        assert info["orders_sent"] == 12 and info["calls_per_order"] is not None
        assert (codes >= -1).all() and (codes < len(OCCASIONS)).all()
        # each prompt shows its order's TRAINING rows only: a held-out row never reaches it
        picked = orders["order_id"].to_numpy()[codes >= 0]
        n_train = split.train[split.train["order_id"].isin(picked)].groupby("order_id").size()
        lines = sum(
            len(r.prompt.split("(aisle):\n", 1)[1].split("\n\n")[0].splitlines()) for r in sent
        )
        assert lines == np.minimum(n_train, X.BASKET_ITEMS).sum()
        server.counts.clear()
        codes2, info2 = X.label_orders(client, ds, split, orders, pick)  # rerun: cache only
        assert server.total_requests == 0 and info2["orders_sent"] == 0
        np.testing.assert_array_equal(codes, codes2)


def run(argv, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "r.json"
    X.main([*argv, "--out", str(out)])
    return json.loads(out.read_text())


@pytest.fixture
def fake_llm(tmp_path, monkeypatch):
    """llm.client_from_args answers with a client of the loopback fake Messages API."""
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
        yield server


@pytest.fixture
def spy(monkeypatch):
    """Records the Experiment of a run and the label digest of every fraction arm trained."""
    seen = {"exp": None, "digests": []}
    real_init, real_arm = experiment.Experiment.__init__, X.train_fraction_arm

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        seen["exp"] = self

    def arm(exp, cfg, fractions):
        seen["digests"].append((cfg.seed, X.digest(fractions)))
        return real_arm(exp, cfg, fractions)

    monkeypatch.setattr(experiment.Experiment, "__init__", init)
    monkeypatch.setattr(X, "train_fraction_arm", arm)
    return seen


def test_smoke_generated_with_fake_llm(small_sample_dir, tmp_path, monkeypatch, capsys, fake_llm):
    r = run(["--data-dir", str(small_sample_dir), *TINY, "--llm-users", "6"], tmp_path, monkeypatch)
    text = capsys.readouterr().out
    arms = set(r["metrics"])
    assert {
        "two-tower",
        "random fractions",
        "true fractions",
        "context random",
        "context true",
        X.LLM_ARM,
        X.LLM_RANDOM,
        X.LLM_TRUE,
        X.LLM_BASE,
    } <= arms
    assert r["prompt_versions"] == {"occasion_label": TEMPLATES["occasion_label"].version}
    lab = r["llm_labels"]
    assert lab["users"] == 6 and lab["orders_asked"] > 6 and 0 <= lab["accuracy"] <= 1
    assert lab["calls_per_order"] == 1.0  # one model call per order
    assert np.sum(lab["confusion"]["counts"]) == lab["orders_labelled"]
    assert sum(p["n_true"] for p in lab["per_occasion"].values()) == lab["orders_labelled"]
    assert lab["agreement"]["orders"] == lab["orders_labelled"]
    assert r["verdict"].split(" - ")[0] in {f"verdict: {v}" for v in experiment.VERDICTS}
    assert "verdict:" in text and "confusion (rows truth" in text and "seed plan: 1 seed" in text
    assert r["verdict_reads"]["hurts"]["margin"] == X.MIN_EFFECT
    assert r["gains_over_seeds"]["random fractions"]["margin"] == X.MIN_EFFECT


def test_llm_arms_are_evaluated_on_the_users_whose_orders_were_labelled(
    small_sample_dir, tmp_path, monkeypatch, fake_llm, spy
):
    r = run(["--data-dir", str(small_sample_dir), *TINY, "--llm-users", "6"], tmp_path, monkeypatch)
    exp = spy["exp"]
    orders = X.training_orders(exp.split)
    users, idx = X.llm_subset(exp.users, orders, 6)
    # every training order of those users was labelled (the fake answers every request) ...
    assert set(orders["user"].to_numpy()[idx]) == set(users)
    assert len(idx) == (orders["user"].isin(users)).sum() == r["llm_labels"]["orders_asked"]
    assert r["llm_labels"]["orders_labelled"] == len(idx)
    # ... and the four arms on the LLM's users score exactly those users
    for arm in (X.LLM_ARM, X.LLM_RANDOM, X.LLM_TRUE, X.LLM_BASE):
        np.testing.assert_array_equal(exp.lists[arm][0], users)
        assert r["metrics"][arm]["all"]["n_users"] == len(users)
    assert r["gains_first_seed"][X.LLM_ARM]["n_users"] == len(users)


def test_random_labels_are_redrawn_per_seed(small_sample_dir, tmp_path, monkeypatch, spy):
    a, held_a = X.random_labels(500, 50, 42)
    b, held_b = X.random_labels(500, 50, 43)
    assert (a != b).mean() > 0.5 and (held_a != held_b).mean() > 0.5
    np.testing.assert_array_equal(a, X.random_labels(500, 50, 42)[0])  # seeded: reproducible
    assert a.max() < len(X.NAMED)
    argv = ["--data-dir", str(small_sample_dir), *TINY, "--seeds", "2", "--llm", "none"]
    run(argv, tmp_path, monkeypatch)
    # per seed: random fractions first, then true fractions
    (s1, rand1), (_, true1), (s2, rand2), (_, true2) = spy["digests"]
    assert (s1, s2) == (42, 43)
    assert rand1 != rand2  # the random labels differ between seeds ...
    assert true1 == true2  # ... the true ones do not


def test_llm_subset_is_nested_and_sent_user_by_user(setup):
    _, split = setup
    orders = X.training_orders(split)
    users = split.eval_users()
    small, idx_small = X.llm_subset(users, orders, 5)
    big, idx_big = X.llm_subset(users, orders, 10)
    assert len(small) == 5 and set(small) <= set(big)
    # the orders of the 5 users come first in the bigger run: a stopped run resumes as a
    # complete smaller subset
    np.testing.assert_array_equal(idx_big[: len(idx_small)], idx_small)
    u = orders["user"].to_numpy()[idx_big]
    assert (np.diff(np.flatnonzero(np.diff(u) != 0)) > 0).all()  # each user's orders together
    assert len(set(u)) == len(np.split(u, np.flatnonzero(np.diff(u) != 0) + 1))


def test_label_accuracy_per_occasion_and_confusion():
    truth = np.array([0, 0, 1, 1, 2, 2, 2])
    codes = np.array([0, 1, 1, 1, 2, -1, 0])
    acc = X.label_accuracy(truth, codes)
    assert acc["accuracy"] == pytest.approx(4 / 6)  # the failed order is left out
    assert acc["per_occasion"][OCCASIONS[0]]["recall"] == 0.5
    assert acc["per_occasion"][OCCASIONS[0]]["precision"] == 0.5
    assert acc["per_occasion"][OCCASIONS[2]]["recall"] == 0.5
    assert np.sum(acc["confusion"]["counts"]) == 6


def test_agreement_with_hour_day_and_aisles_on_rows_without_truth(setup):
    import dataclasses

    ds, split = setup
    ds = dataclasses.replace(ds, occasions=None)
    orders = X.training_orders(split).iloc[:300]
    hour = (
        split.train.drop_duplicates("order_id")
        .set_index("order_id")["order_hour_of_day"]
        .reindex(orders["order_id"])
        .to_numpy()
    )
    by_hour = np.where(hour < 11, 5, 1)  # labels that follow the hour: breakfast / dinner
    ag = X.label_agreement(ds, split, orders, by_hour)
    assert ag["orders"] == 300 and ag["hour_block"]["p"] < 0.01
    assert ag["hour_block"]["cramers_v"] > 0.5 > ag["hour_block"]["null_mean"]
    assert ag["per_label"][OCCASIONS[5]]["morning_share"] == 1.0
    shuffled = np.random.default_rng(0).permutation(by_hour)
    assert X.label_agreement(ds, split, orders, shuffled)["hour_block"]["p"] > 0.01
    # an aisle that names an occasion's aisle term matches it, word-aligned
    m = X.occasion_aisle_match(["beers coolers", "cereal", "dish detergents", "pasta", "tea"])
    assert m[0, OCCASIONS.index("party")] and m[1, OCCASIONS.index("breakfast")]
    assert m[2, OCCASIONS.index("household")] and not m[4].any()


def test_seeds_needed_reaches_the_half_width():
    from scipy import stats

    for std in (0.001, 0.005, 0.011):
        n = metrics.seeds_needed(std, X.TARGET_HALF_WIDTH)
        assert stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) <= X.TARGET_HALF_WIDTH
        if n > 2:
            assert stats.t.ppf(0.975, n - 2) * std / np.sqrt(n - 1) > X.TARGET_HALF_WIDTH
    assert metrics.seeds_needed(None, 0.01) is None and X.TARGET_HALF_WIDTH == pytest.approx(0.0025)


class VerdictOnly:
    """The parts of Experiment that verdict() reads."""

    def __init__(self):
        self.runs = {}

    def verdict(self, status, sentence, n_users=None):
        return f"verdict: {status} - {sentence}"


def verdict_for(per_seed):
    g = metrics.seed_interval(per_seed)
    paired = {X.METRIC: {"mean": float(np.mean(per_seed)), "ci95": [-0.02, 0.02]}}
    return X.verdict(
        VerdictOnly(), {"random fractions": paired}, {"random fractions": g}, X.seed_plan(g), None
    )


@pytest.mark.parametrize(
    "per_seed, word, noise, can",
    [
        # big seed noise, few seeds: the single run is within the noise, the verdict cannot land
        ([0.01, -0.012, 0.008, -0.009], "inconclusive", "within", "cannot"),
        # small noise, many seeds, no drop: refuted, and the original's drop is outside the noise
        ([0.0005, -0.0004, 0.0003, -0.0002, 0.0001, 0.0] * 2, "refuted", "outside", "can"),
        # small noise, a clear drop: confirmed
        ([-0.006, -0.0065, -0.0055, -0.006, -0.0062, -0.0058], "confirmed", "outside", "can"),
        # noise too big for a landing at the original's effect, but a gain far above it lands:
        # the sentence says both (it once said "cannot land" beside "refuted")
        ([0.004, 0.0, 0.006, 0.002, -0.001, 0.003], "refuted", "within", "lands"),
    ],
)
def test_verdict_sentence_follows_the_numbers(per_seed, word, noise, can):
    line = verdict_for(per_seed)
    g = metrics.seed_interval(per_seed)
    assert line.startswith(f"verdict: {word} - ")
    assert f"is {noise} seed noise" in line
    if can == "lands":
        assert f"the interval lands ({word}) though a run of this size cannot land" in line
    else:
        assert f"the verdict {can} land either way" in line
    assert f"{len(per_seed)} seeds, half-width {(g['ci95'][1] - g['ci95'][0]) / 2:.4f}" in line
    assert (
        f"({metrics.seeds_needed(g['std'], X.TARGET_HALF_WIDTH)} seeds needed at this std)" in line
    )
    assert experiment.format_interval({"mean": g["mean"], "ci95": g["ci95"]}, 4) in line


def test_verdict_with_one_seed_makes_no_seed_noise_claim():
    line = verdict_for([-0.003])
    assert "seed noise is not measured" in line and "within" not in line
    assert "paired over users, one seed" in line and "nan" not in line.lower()


def test_smoke_real_rows_skip_truth_arms(small_sample_dir, tmp_path, monkeypatch, capsys):
    # a copy of the sample without order_occasions.csv looks like real Kaggle rows
    import shutil

    real = tmp_path / "real"
    shutil.copytree(small_sample_dir, real)
    (real / C.OCCASIONS_FILE).unlink()
    r = run(["--data-dir", str(real), *TINY, "--llm", "none"], tmp_path, monkeypatch)
    assert "LLM labels (LLM users)" not in r["metrics"]
    assert "true fractions" not in r["metrics"] and "context true" not in r["metrics"]
    assert r["notes"]["true fractions"] == "skipped: no occasion truth"
    assert "context random" in r["metrics"]
    # exp.write records why the LLM arm was skipped, where evals/report.py looks for it
    assert r["llm"] == {"skipped": r["llm_skipped"]} and "--llm none" in r["llm_skipped"]
    assert r["notes"]["llm"] == f"skipped: {r['llm_skipped']}"
    assert "skipped: no occasion truth" in capsys.readouterr().out


def test_bad_option_is_a_config_error():
    with pytest.raises(C.ConfigError):
        X.parse_args(["--llm-users", "-1"])
