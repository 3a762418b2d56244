"""llm_reranker.py end to end on a small generated sample: --llm none, and the LLM arms
through the real anthropic SDK against the loopback fake API (offline)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_anthropic import FakeAnthropic

import common
import config
import experiment
import llm
import llm_reranker as X
from evals import reranker_evals

KEY = "sk-ant-test-reranker-0123456789"
# the listwise LLM run: 4 users, 2 shuffles
LISTWISE = ("--llm", "claude", "--eval-users", "4", "--shuffles", "2", "--mode", "listwise")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One data + tower cache for the module: the tower trains once, not once per test."""
    return tmp_path_factory.mktemp("reranker_cache")


@pytest.fixture
def env(tmp_path, monkeypatch, shared_cache):
    monkeypatch.setattr(config, "CACHE_DIR", shared_cache)
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    monkeypatch.setenv("LLM_CACHE_PATH", str(tmp_path / "llm.sqlite"))
    for var in ("LLM_MODEL", "LLM_BACKEND", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def answer_records(path: Path) -> tuple[dict, list[dict]]:
    """(the run header, the answer records) of an answers file: its first line names the
    run, every other line is one answer."""
    head, *lines = path.read_text().splitlines()
    return json.loads(head)["answers_run"], [json.loads(x) for x in lines]


def argv(data_dir, tmp, *extra):
    return [
        "--data-dir",
        str(data_dir),
        "--users",
        "200",
        "--items",
        "1000",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--no-tifu",
        "--threads",
        "1",
        "--quiet",
        "--split",
        "temporal",
        "--candidate-sets",
        "faiss@20",
        "--out",
        str(tmp / "r.json"),
        "--answers",
        str(tmp / "answers.jsonl"),
        *extra,
    ]


def test_llm_none_still_compares_the_rankers(small_sample_dir, env, capsys):
    X.main(argv(small_sample_dir, env, "--llm", "none"))
    out = capsys.readouterr().out
    res = json.loads((env / "r.json").read_text())
    assert "LLM arms skipped" in out and res["llm"]["skipped"].startswith("LLM arms disabled")
    assert (res["question"], res["original_finding"]) == (X.QUESTION, X.ORIGINAL_FINDING)
    for arm in ("faiss@20: candidate order (FAISS)", "faiss@20: lightgbm", "faiss@20: xgboost"):
        assert arm in res["metrics"]
    assert out.count("verdict: inconclusive") == 2 and len(res["verdicts"]) == 2
    # the ceiling of the FAISS top-20 arms is their candidate order's R@20
    order = res["metrics"]["faiss@20: candidate order (FAISS)"]["all"]["recall@20"]["mean"]
    assert res["candidate_recall"]["faiss@20: lightgbm"] == pytest.approx(order)


def test_llm_arms_through_the_fake_api_with_malformed_permutations(
    small_sample_dir, env, monkeypatch, capsys
):
    with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        # two answers with a duplicated and a missing id: repaired and counted, not re-asked
        server.add_fault("bad_ranking", times=2)
        X.main(argv(small_sample_dir, env, *LISTWISE))
        sent = server.total_requests
    out = capsys.readouterr().out
    res = json.loads((env / "r.json").read_text())
    recs = answer_records(env / "answers.jsonl")[1]
    # 4 users x 4 conditions (generated + temporal: positive control) x 2 shuffles
    assert len(recs) == 32 and sent == 32
    assert {r["condition"] for r in recs} == {"none", "context", "placebo", "random"}
    assert sum(r["repairs"]["duplicate"] for r in recs) == 2
    assert sum(r["repairs"]["missing"] for r in recs) == 2
    assert res["llm_answers"]["faiss@20"]["duplicate"] == 2
    for r in recs:  # every parsed ranking is a permutation of the candidates
        assert sorted(r["parsed"]) == sorted(r["candidates"])
        assert sorted(r["shown"]) == sorted(r["candidates"])
    # the same shuffle is shown under every condition; shuffles differ
    by = {(r["user"], r["condition"], r["shuffle"]): r["shown"] for r in recs}
    u = recs[0]["user"]
    assert by[(u, "none", 0)] == by[(u, "context", 0)] != by[(u, "none", 1)]
    # context: the held-out order's true occasion; placebo: same length, no occasion
    ctx = {(r["user"], r["condition"]): r["context"] for r in recs}
    assert len(ctx[(u, "placebo")]) == len(ctx[(u, "context")])
    assert "order is for" in ctx[(u, "context")] and ctx[(u, "random")] != ctx[(u, "context")]
    assert "order is for" not in ctx[(u, "placebo")]
    # arms, controls, cost, labels, two verdict lines
    assert "faiss@20: LLM context" in res["metrics"]
    assert res["produced_by"]["faiss@20: LLM context"] == llm.DEFAULT_MODEL
    assert set(res["controls"]["faiss@20"]) == {"none", "context", "placebo", "random"}
    assert "tokens_per_1000_users" in res["cost"] and "usd_per_1000_users" in res["cost"]
    assert out.count("verdict: ") == 2 and "controls, faiss@20" in out
    # a rerun of the unchanged experiment makes no LLM call
    with FakeAnthropic() as server2:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server2.base_url)
        X.main(argv(small_sample_dir, env, *LISTWISE))
        assert server2.total_requests == 0


SMALL = ("--llm", "claude", "--reranker-users", "2", "--shuffles", "1", "--mode", "listwise")


def test_answers_file_names_its_run(small_sample_dir, env, monkeypatch):
    """The answers file's first line names its run (data, split, candidate sets, options,
    LLM), as the results JSON records it."""
    with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        X.main(argv(small_sample_dir, env, *SMALL))
    res = json.loads((env / "r.json").read_text())
    run, recs = answer_records(env / "answers.jsonl")
    assert res["answers_run"] == run and res["answers_file"] == "answers.jsonl"
    assert run["data"] == {k: res["data"][k] for k in experiment.SAME_DATA_KEYS}
    assert run["split"] == {"mode": "temporal", "seed": res["split"]["seed"]}
    assert run["candidate_sets"] == ["faiss@20"] and run["run_id"]
    assert (run["options"]["llm_users"], run["options"]["shuffles"]) == (2, 1)
    assert run["options"]["mode"] == "listwise" and run["llm_users"] == 2
    assert run["llm"]["backend"] == "fake" and run["llm"]["model"] == llm.DEFAULT_MODEL  # loopback
    assert len(recs) == 2 * 4  # 2 users x 4 conditions x 1 shuffle
    # the evals, asked about this run (its results JSON), read exactly this file
    ev = reranker_evals.run(results=env / "r.json", out=None, verbose=False)
    assert (ev["answers"], ev["answers_run"]) == (8, run)


def test_a_crashed_run_keeps_the_last_complete_answers_file(small_sample_dir, env, monkeypatch):
    """A run that crashes mid-way (a fatal 401 from the API) leaves the last complete answers
    file as it was, and no partial file beside it."""
    with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        X.main(argv(small_sample_dir, env, *SMALL))
        before = (env / "answers.jsonl").read_bytes()
        # the next run, with more users (new prompts are sent): the API refuses the key
        server.add_fault("401", times=10_000)
        with pytest.raises(llm.LLMFatal):
            X.main(argv(small_sample_dir, env, *SMALL[:3], "4", *SMALL[4:]))
    assert (env / "answers.jsonl").read_bytes() == before
    assert sorted(p.name for p in env.iterdir() if "answers" in p.name) == ["answers.jsonl"]


def test_pointwise_mode_scores_every_candidate(small_sample_dir, env, monkeypatch):
    with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        X.main(
            argv(
                small_sample_dir, env, "--llm", "claude", "--eval-users", "2", "--mode", "pointwise"
            )
        )
        n_requests = server.total_requests
    recs = answer_records(env / "answers.jsonl")[1]
    assert all(r["mode"] == "pointwise" for r in recs)
    main, repeats = [r for r in recs if not r["repeat"]], [r for r in recs if r["repeat"]]
    assert len(main) == 2 * 4
    # the noise floor: each user's no-context list scored again, sent (not read from the cache)
    assert len(repeats) == 2 and {r["condition"] for r in repeats} == {"none"}
    assert n_requests == (2 * 4 + 2) * 20
    out = json.loads((env / "r.json").read_text())
    assert out["context_shift"]["faiss@20"]["noise_floor_users"] == 2
    assert out["controls"]["faiss@20"]["none"]["noise floor"]["rbo"] is not None
    r = recs[0]
    scores = {int(k): v for k, v in r["scores"].items()}
    assert set(scores) == set(r["candidates"])
    # the ranking is the candidates sorted by score, ties in candidate order
    want = sorted(r["candidates"], key=lambda c: (-scores[c], r["candidates"].index(c)))
    assert r["parsed"] == want


def test_quick_fills_only_the_options_not_given():
    args = X.parse_args(["--quick", "--eval-users", "5"])
    assert args.llm_users == 5  # given: kept
    assert (args.users, args.items, args.seeds, args.no_tifu) == (400, 1500, 1, True)
    assert X.parse_args([]).users != 400


def test_borda_and_placebo_helpers():
    assert X.borda([[3, 1, 2], [3, 2, 1]], [1, 2, 3]) == [3, 1, 2]  # tie 1/2: candidate order
    assert X.borda([], [5, 4]) == [5, 4]
    t = "the shopper says this order is for: party."
    assert len(X.placebo_like(t)) == len(t) and "party" not in X.placebo_like(t)


def test_context_verdict_rules():
    m = X.SHIFT_MARGIN
    # the shift alone: above 0 confirms, wholly below the margin refutes
    assert X.shift_status((0.001, m / 2)) == "confirmed"
    assert X.shift_status((-0.01, m / 2)) == "refuted"
    assert X.shift_status((-0.01, m * 2)) == "inconclusive"
    # with the positive control both must hold; a shift below the margin refutes even
    # when it is above 0, and so does a true occasion that lowers R@10
    assert X.shift_status((0.001, m * 2), (0.001, 0.05)) == "confirmed"
    assert X.shift_status((0.001, m / 2), (-0.01, 0.05)) == "refuted"
    assert X.shift_status((0.001, m * 2), (-0.05, -0.01)) == "refuted"
    assert X.shift_status((-0.01, m * 2), (0.001, 0.05)) == "inconclusive"


def test_bad_options_fail_in_one_line(small_sample_dir, env, capsys):
    for bad in (
        ["--candidate-sets", "faiss@10"],
        ["--shuffles", "0"],
        ["--candidate-sets", "bogus"],
    ):
        with pytest.raises(SystemExit) as e:
            experiment.main_guard(
                lambda bad=bad: X.main(["--data-dir", str(small_sample_dir), *bad])
            )
        assert e.value.code == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_target_order_context_comes_from_the_held_out_order_not_its_items(small_sample_dir, env):
    ds = common.load_dataset(small_sample_dir, 200, 1000)
    split = common.split_interactions(ds.interactions, "temporal")
    users = split.eval_users()[:5]
    tgt = X.target_orders(ds, split, users)
    held = split.test.groupby("user")["order_id"].first()
    assert (tgt["order_id"].to_numpy() == held.reindex(users).to_numpy()).all()
    occ = ds.occasions.set_index("order_id")["occasion"]
    assert (tgt["occasion"].to_numpy() == occ.reindex(held.reindex(users)).to_numpy()).all()
    # recent orders come from training rows only: the held-out order is never listed
    text = X.recent_orders_text(ds, split.train, int(users[0]))
    last = int(split.test.loc[split.test["user"] == users[0], "order_number"].iloc[0])
    assert f"order {last}:" not in text and np.all(text != "- none")
