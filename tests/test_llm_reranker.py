"""llm_reranker.py end to end on a small generated sample: --llm none, and the LLM arms
through the real anthropic SDK against the loopback fake API (offline)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import with_held_out_rows_altered
from fake_anthropic import FakeAnthropic

import common
import config
import experiment
import llm
import llm_ranking as LR
import llm_reranker as X
import prompts as P
import reranking
from evals import reranker_evals
from prompts import TEMPLATES

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
    assert out.count("verdict: inconclusive") == 3 and len(res["verdicts"]) == 3
    assert res["verdict_reads"] == {}  # nothing measured, nothing read
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
    main = [r for r in recs if r["arm"] == "main" and not r["repeat"]]
    # 4 users x 5 conditions (generated + temporal: positive control) x 2 shuffles, the noise
    # floor's sampled repeat (4 users' no-context lists, first shuffle) and the free arm
    # (4 users, asked and asked again)
    assert len(main) == 40 and len(recs) == 40 + 4 + 8 and sent == len(recs)
    assert {r["condition"] for r in main} == {"none", "context", "placebo", "random", "facts"}
    assert sum(r["repairs"]["duplicate"] for r in recs) == 2
    assert sum(r["repairs"]["missing"] for r in recs) == 2
    assert (
        res["llm_answers"]["faiss@20"]["duplicate"]
        + res["free_arm"]["answers"]["duplicate"]
        + res["noise_floor_repeat"]["faiss@20"]["duplicate"]
        == 2
    )
    for r in recs:  # every parsed ranking is a permutation of the candidates
        assert sorted(r["parsed"]) == sorted(r["candidates"])
        assert sorted(r["shown"]) == sorted(r["candidates"])
    # the same shuffle is shown under every condition; shuffles differ
    by = {(r["user"], r["condition"], r["shuffle"]): r["shown"] for r in main}
    u = main[0]["user"]
    assert by[(u, "none", 0)] == by[(u, "context", 0)] != by[(u, "none", 1)]
    # context: the held-out order's true occasion; placebo: same length, no occasion
    ctx = {(r["user"], r["condition"]): r["context"] for r in main}
    assert len(ctx[(u, "placebo")]) == len(ctx[(u, "context")]) == len(ctx[(u, "facts")])
    assert "order is for" in ctx[(u, "context")] and ctx[(u, "random")] != ctx[(u, "context")]
    assert "order is for" not in ctx[(u, "placebo")] and ctx[(u, "facts")] == ctx[(u, "context")]
    # Claude's listwise ids are held by no grammar; the free arm names its first product and
    # gives a reason, with the user's training-row facts beside it
    free = [r for r in recs if r["arm"] == "free"]
    assert all(not r["id_grammar"] for r in recs) and len(free) == 8
    assert all(r["reason"] and r["top_product"] and r["user_facts"]["products"] for r in free)
    # arms, controls, cost, labels, three verdict lines and what each reads
    assert "faiss@20: LLM context" in res["metrics"]
    assert "faiss@20: LLM facts + context" in res["metrics"]
    assert res["produced_by"]["faiss@20: LLM context"] == llm.DEFAULT_MODEL
    assert set(res["controls"]["faiss@20"]) == {"none", "context", "placebo", "random", "facts"}
    assert "tokens_per_1000_users" in res["cost"] and "usd_per_1000_users" in res["cost"]
    arm_cost = res["llm_cost_per_arm"]["faiss@20"]
    assert arm_cost["none"]["requests"] == 8 and arm_cost["none"]["sent"] == 8
    assert {"repeat none", "free context", "free repeat context"} <= set(arm_cost)
    assert out.count("verdict: ") == 3 and "controls, faiss@20" in out
    assert "LLM cost per arm, faiss@20" in out
    reads = res["verdict_reads"]
    assert list(reads) == [
        "faiss@20: beats LightGBM",
        "faiss@20: competitive with LightGBM",
        "faiss@20: context shifts rankings correctly (vs placebo context)",
        "faiss@20: context shifts rankings correctly (vs random occasion)",
    ]
    assert [r["verdict"] for r in reads.values()] == [0, 1, 2, 2]
    # the positive control's paired gains: true - placebo, random - placebo, true - random
    placebo = res["gains"]["faiss@20: LLM placebo context"]
    assert {"faiss@20: LLM context", "faiss@20: LLM random occasion"} <= set(placebo)
    assert placebo["faiss@20: LLM context"]["margin"] == 0.0
    ctx = [r for k, r in reads.items() if "context shifts" in k]
    assert [r["gain"] for r in ctx] == [
        "gains.faiss@20: LLM placebo context.faiss@20: LLM context",
        "gains.faiss@20: LLM random occasion.faiss@20: LLM context",
    ]
    fair = res["gains"]["faiss@20: lightgbm (LLM users)"]["faiss@20: LLM facts + context"]
    assert fair["margin"] == X.COMPETITIVE_MARGIN
    competitive = reads["faiss@20: competitive with LightGBM"]
    assert (competitive["margin"], competitive["claim"]) == (X.COMPETITIVE_MARGIN, "competitive")
    assert (
        competitive["gain"] == "gains.faiss@20: lightgbm (LLM users).faiss@20: LLM facts + context"
    )
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
    assert len(recs) == 2 * 5 + 2 + 2 * 2  # 2 users x 5 conditions, repeat, free arm
    # the evals, asked about this run (its results JSON), read exactly this file
    ev = reranker_evals.run(results=env / "r.json", out=None, verbose=False)
    assert (ev["answers"], ev["answers_run"]) == (16, run)


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
    main = [r for r in recs if r["arm"] == "main"]
    assert all(r["mode"] == "pointwise" for r in main)
    first, repeats = [r for r in main if not r["repeat"]], [r for r in main if r["repeat"]]
    assert len(first) == 2 * 5
    # the noise floor: each user's no-context list asked again, sent (not read from the cache:
    # other requests than the first answer's), as Claude samples every answer
    assert len(repeats) == 2 and {r["condition"] for r in repeats} == {"none"}
    key = {(r["user"], r["condition"]): r["key"] for r in first}
    assert all(r["key"] != key[(r["user"], "none")] and r["sampled"] for r in repeats)
    assert n_requests == (2 * 5 + 2) * 20 + 2 * 2  # + the free arm's listwise answers
    out = json.loads((env / "r.json").read_text())
    assert out["context_shift"]["faiss@20"]["noise_floor_users"] == 2
    assert out["controls"]["faiss@20"]["none"]["noise floor"]["rbo"] is not None
    r = first[0]
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
    assert LR.borda([[3, 1, 2], [3, 2, 1]], [1, 2, 3]) == [3, 1, 2]  # tie 1/2: candidate order
    assert LR.borda([], [5, 4]) == [5, 4]
    t = P.occasion_context("party")
    assert len(P.placebo_context(len(t))) == len(t) and "party" not in P.placebo_context(len(t))


# --- the verdicts: each claim's word from the numbers it reads -------------------------------

CC = reranking.CandidateConfig.parse("faiss@20")
ARM = lambda c: f"faiss@20: LLM {c}"


class StubExp:
    """What a verdict reads of an Experiment besides the gains: LightGBM over the candidate
    order (all users)."""

    def gain(self, arm, reference):
        return {"recall@10": {"mean": 0.05, "ci95": [0.04, 0.06]}, "n_users": 1000}


def gain(lo, hi, n=300):
    return {"recall@10": {"mean": (lo + hi) / 2, "ci95": [lo, hi]}, "n_users": n}


@pytest.mark.parametrize(
    "claim, ci, word",
    [
        # an interval inside (-margin, 0) is competitive: never refuted
        ("competitive with LightGBM", (-0.008, -0.001), "confirmed"),
        ("competitive with LightGBM", (-0.03, -0.012), "refuted"),
        ("competitive with LightGBM", (-0.02, 0.005), "inconclusive"),
        ("beats LightGBM", (0.002, 0.02), "confirmed"),
        ("beats LightGBM", (-0.008, -0.001), "refuted"),
        ("beats LightGBM", (-0.01, 0.01), "inconclusive"),
    ],
    ids=[
        "competitive-inside-margin",
        "competitive-below-margin",
        "competitive-straddles",
        "beats-above-0",
        "beats-below-0",
        "beats-straddles",
    ],
)
def test_lightgbm_verdicts_read_their_claim_and_margin(claim, ci, word):
    gains = {
        "faiss@20: lightgbm (LLM users)": {
            ARM("facts + context"): gain(*ci),
            ARM("context"): gain(-0.05, -0.02),
        },
        ARM("context"): {ARM("facts + context"): gain(0.0, 0.03)},
    }
    status, text, n, read = X.lightgbm_verdict(StubExp(), CC, claim, "m", gains, {}, "time")
    assert (status, n) == (word, 300)
    competitive = claim.startswith("competitive")
    margin = X.COMPETITIVE_MARGIN if competitive else 0.0
    # what it reads, for the plots: gains key and arm, reference, metric, interval, margin
    (r,) = read
    assert (r["gain"], r["arm"], r["reference"]) == (
        f"gains.faiss@20: lightgbm (LLM users).{ARM('facts + context')}",
        ARM("facts + context"),
        "faiss@20: lightgbm",
    )
    assert (r["metric"], r["claim"], r["margin"]) == (
        "recall@10",
        "competitive" if competitive else "beats",
        margin,
    )
    assert r["interval"] == X.INTERVAL and r["ci95"] == list(ci)
    assert gains["faiss@20: lightgbm (LLM users)"][ARM("facts + context")]["margin"] == (
        X.COMPETITIVE_MARGIN
    )
    assert (f"margin {margin}" in text) == competitive and "half-width" in text


SHIFT = {
    "extra_shift_context_vs_placebo": {"mean": 0.05, "ci95": [0.03, 0.07], "n": 300},
    "noise_floor_rbo": 0.95,
}


@pytest.mark.parametrize(
    "kind, true_placebo, true_random, word",
    [
        ("occasion", (0.01, 0.03), (0.005, 0.02), "confirmed"),
        ("occasion", (0.01, 0.03), (-0.01, 0.02), "inconclusive"),  # not above random
        ("occasion", (-0.03, -0.01), (0.005, 0.02), "refuted"),
        ("occasion", (-0.01, 0.01), (-0.01, 0.01), "inconclusive"),  # movement, no gain
        ("time", (0.01, 0.03), None, "confirmed"),
        ("time", (-0.01, 0.01), None, "inconclusive"),
        ("last order", (0.01, 0.03), None, "inconclusive"),  # interaction split: no truth
    ],
    ids=[
        "occasion-beats-both",
        "occasion-not-random",
        "occasion-below-placebo",
        "occasion-movement-only",
        "time-beats-placebo",
        "time-no-gain",
        "interaction-not-judged",
    ],
)
def test_context_verdict_is_judged_against_truth_only(kind, true_placebo, true_random, word):
    gains = {
        ARM("placebo context"): {
            ARM("context"): gain(*true_placebo),
            ARM("random occasion"): gain(-0.01, 0.01),
        }
    }
    if true_random:
        gains[ARM("random occasion")] = {ARM("context"): gain(*true_random)}
    claim = "context shifts rankings correctly"
    status, text, n, read = X.context_verdict(None, CC, claim, "m", gains, SHIFT, kind)
    assert status == word
    # the movement is reported, as movement; "correctly" is only the claim's own word
    assert "movement, not a gain" in text and text.count("correctly") == 1
    if kind == "last order":
        assert "not judged" in text and read == [] and n is None
    else:
        assert [r["reference"] for r in read] == [ARM("placebo context")] + (
            [ARM("random occasion")] if true_random else []
        )
        assert all(r["claim"] == "beats" and r["margin"] == 0.0 for r in read)


# --- the prompts of the conditions, the facts arm, the noise floor's repeat -----------------


def one_user_lists():
    """A catalog of three items and one user's lists under every condition."""
    cat = LR.Catalog(
        np.array([101, 102, 103]),
        np.array(["Milk", "Bread", "Eggs"]),
        np.array(["milk", "bread", "eggs"]),
        np.array(["dairy eggs", "bakery", "dairy eggs"]),
    )
    ctx = P.occasion_context("party")
    contexts = {
        "none": [""],
        "context": [ctx],
        "placebo": [P.placebo_context(len(ctx))],
        "random": [P.occasion_context("baby")],
        "facts": [ctx],
    }
    facts = [
        {
            0: P.purchase_facts(3, 10, 4.0),
            1: P.purchase_facts(0, 10, None),
            2: P.purchase_facts(1, 10, 0.0),
        }
    ]
    lists = LR.UserLists(
        np.array([7]),
        [np.array([0, 1, 2])],
        ["Shops mostly in dairy eggs (60%)."],
        ["- order 3: Milk, Eggs"],
        contexts,
        facts,
        [{}],
    )
    return cat, lists


@pytest.mark.parametrize("mode", ["listwise", "pointwise"])
def test_condition_prompts_differ_only_in_the_context_line(mode):
    cat, lists = one_user_lists()
    plan, reqs = LR.rerank_requests(mode, cat, lists, 2, 0, False)
    per = 1 if mode == "listwise" else 3
    prompts, pos = {}, 0
    for c, _, s, _ in plan:
        prompts[(s, c)] = [r.prompt for r in reqs[pos : pos + per]]
        pos += per
    assert len({(r.template, r.system) for r in reqs}) == 1  # one template for every arm
    for s in range(2):
        none = prompts[(s, "none")]
        assert all("Recent orders" in p and "Shops mostly" in p for p in none)
        for c in ("context", "placebo", "random"):
            line = P.context_line(lists.contexts[c][0])
            assert line and all(p.count(line) == 1 for p in prompts[(s, c)])
            assert [p.replace(line, "", 1) for p in prompts[(s, c)]] == none
        # the facts arm: the context's prompts with each candidate's facts, nothing else
        stripped = prompts[(s, "facts")]
        for f in lists.facts[0].values():
            stripped = [p.replace(f"; {f}", "") for p in stripped]
        assert stripped == prompts[(s, "context")] != prompts[(s, "facts")]


def test_a_noise_floor_repeat_is_sampled_and_never_the_cached_answer():
    req = TEMPLATES["reranker"].request(
        user_profile="p",
        recent_orders="- none",
        order_context="",
        candidates=P.format_candidates([(1, "a", "x"), (2, "b", "y")]),
        n_candidates=2,
    )
    for local in (True, False):
        again = LR.sampled(req, 1, local)
        assert llm.cache_key("m", again) != llm.cache_key("m", req)  # asked, not read back
        assert LR.decoding(again, local)["sampled"] and again.repeat == 1
    local = LR.sampled(req, 1, True)
    assert local.temperature == LR.REPEAT_TEMPERATURE > 0 and local.seed not in (None, 42)
    assert not LR.decoding(req, True)["sampled"]  # the local model's first answer is greedy
    assert LR.sampled(req, 0, True) is req


def test_the_facts_arm_reads_training_rows_only(small_sample_dir):
    """The facts arm's facts (orders with the item, share, days since last bought) come from
    the training rows: changing every held-out row moves none of them."""
    ds = common.load_dataset(small_sample_dir, 200, 1000)
    for mode in ("temporal", "interaction"):
        base, altered, _ = with_held_out_rows_altered(ds, mode)
        facts = []
        for d in (base, altered):
            split = common.split_interactions(d.interactions, mode)
            feats = common.build_features(d, split.train)
            users = split.eval_users()[:20]
            facts.append(X.candidate_facts(feats, split.train, users, [np.arange(40)] * 20))
        assert facts[0] == facts[1]
        assert any("bought in" in f for fs in facts[0] for f in fs.values())


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
