"""evals/reranker_evals.py: agreement measures, permutation repair, evaluations of answers."""

import json

import numpy as np
import pytest

from evals import reranker_evals as R


def test_rbo_identical_disjoint_and_top_weighted():
    a = list(range(20))
    assert R.rbo(a, a) == pytest.approx(1.0)
    assert R.rbo(a, list(range(100, 120))) == pytest.approx(0.0)
    top_swap = [1, 0, *a[2:]]
    tail_swap = [*a[:18], 19, 18]
    assert R.rbo(a, top_swap) < R.rbo(a, tail_swap) < 1.0  # the top weighs more


def test_jaccard_and_kendall_tau():
    a = list(range(20))
    assert R.jaccard_at(a, a[::-1], 10) == 0.0
    assert R.jaccard_at(a, [*a[:5], *range(50, 55), *a[10:]], 10) == pytest.approx(5 / 15)
    assert R.kendall_tau(a, a) == 1.0 and R.kendall_tau(a, a[::-1]) == -1.0
    assert R.kendall_tau([0, 1, 2], [1, 0, 2]) == pytest.approx(1 / 3)


def test_repair_counts_each_kind_and_appends_in_candidate_order():
    cands = [10, 20, 30, 40, 50, 60]
    rep = R.repair_permutation([30, 99, 30, 10, 50, "x"], cands)
    assert rep.ranking == [30, 10, 50, 20, 40, 60]  # missing appended in candidate order
    assert (rep.unknown, rep.duplicate, rep.missing, rep.failed) == (2, 1, 3, False)
    ok = R.repair_permutation([60, 50, 40, 30, 20, 10], cands)
    assert ok.ranking == [60, 50, 40, 30, 20, 10] and not ok.repaired


def test_more_than_half_missing_is_a_failure_not_a_ranking():
    cands = list(range(10))
    assert R.repair_permutation([0, 1, 2, 3], cands).failed  # 6 of 10 missing
    assert not R.repair_permutation([0, 1, 2, 3, 4], cands).failed  # exactly half
    assert R.repair_permutation(None, cands).ranking is None


def test_reason_matching_is_token_bounded():
    words = R.attribute_words("Green Tea Bags", "tea", "beverages")
    assert R.names_attribute("because they drink Tea daily", words)
    assert not R.names_attribute("a steak dinner", {"tea"})  # 'tea' inside 'steak'
    assert not R.names_attribute("greenery", words)


def _rec(user, cond, shuffle, shown, parsed, repairs=None, **kw):
    cands = [1, 2, 3, 4, 5, 6]
    return {
        "user": user,
        "set": "faiss@20",
        "condition": cond,
        "shuffle": shuffle,
        "mode": "listwise",
        "model": "fake",
        "candidates": cands,
        "shown": shown,
        "names": [f"item {i}" for i in cands],
        "aisles": ["tea"] * 6,
        "departments": ["beverages"] * 6,
        "context": "",
        "raw": json.dumps({"ranking": parsed}),
        "parsed": parsed,
        "repairs": repairs or {"unknown": 0, "duplicate": 0, "missing": 0, "failed": False},
        "arm": "main",
        "id_grammar": False,  # Claude's listwise answers: no grammar holds their ids
        "repeat": 0,
        "key": f"k-{user}-{cond}-{shuffle}",
        "sampled": True,
        **kw,
    }


def test_evaluate_answers_rates_shuffles_and_shift(tmp_path):
    a, b = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    recs = [
        _rec(0, "none", 0, a, a),
        _rec(0, "none", 1, b, a),  # stable across shuffles: agreement 1
        _rec(0, "context", 0, a, b, {"unknown": 1, "duplicate": 0, "missing": 1, "failed": False}),
        _rec(0, "context", 1, b, b),
        _rec(1, "none", 0, a, None, {"failed": True}),
        _rec(1, "none", 1, b, b),
    ]
    res = R.evaluate_answers(recs)
    assert res["hallucination"]["answers_with_unknown_ids_pct"] == pytest.approx(100 / 6, abs=0.01)
    assert res["repairs_per_100_answers"]["failed"] == pytest.approx(100 / 6, abs=0.01)
    assert res["repairs_per_100_answers"]["missing"] == pytest.approx(100 / 6, abs=0.01)
    blk = res["per_set"]["faiss@20 (listwise)"]
    assert blk["shuffle_agreement"]["none"]["rbo"] == pytest.approx(1.0)
    assert blk["shift_vs_none"]["context"]["tau"] == pytest.approx(-1.0)
    assert blk["echo_tau"]["context"] == pytest.approx(0.0)  # one echo (+1), one reversal (-1)
    # no repeat, no reason in this run: n/a with the reason, never 0
    assert res["noise_floor"]["pairs"] == 0 and res["noise_floor"]["rbo"] is None
    assert set(res["not_measured"]) == {"noise_floor", "reasoning_alignment"}
    assert res["reasoning_alignment"]["share_citing_a_true_fact"] is None
    text = R.format_report({"answers_file": "a.jsonl", **res})
    assert "noise_floor: n/a (no answer was asked again with sampling" in text
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = R.run(path, users=1, out=tmp_path / "e.json", verbose=False)
    assert out["users"] == 1 and json.loads((tmp_path / "e.json").read_text())["answers"] == 4


def test_pointwise_repeat_is_the_noise_floor_and_does_not_replace_the_answer():
    a, b = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    pw = {"mode": "pointwise", "set": "faiss@20"}
    recs = [
        {**_rec(0, "none", 0, a, a), **pw},
        {**_rec(0, "none", 0, a, b, repeat=1, key="k-again"), **pw},  # asked again, sampled
        {**_rec(0, "context", 0, a, a), **pw},
    ]
    res = R.evaluate_answers(recs)
    blk = res["per_set"]["faiss@20 (pointwise)"]
    assert blk["noise_floor"]["none"]["tau"] == pytest.approx(-1.0)
    assert blk["shift_vs_none"]["context"]["tau"] == pytest.approx(1.0)  # vs the first answer
    assert res["noise_floor"]["pairs"] == 1 and "noise_floor" not in res["not_measured"]


@pytest.mark.parametrize(
    "repeat_kw, why",
    [
        ({"key": "k-0-none-0"}, "cached first answer"),  # the first answer's own requests
        ({"key": "k-again", "sampled": False}, "not sampled"),  # greedy: cannot differ
    ],
    ids=["cached-repeat", "unsampled-repeat"],
)
def test_no_noise_floor_from_a_repeat_that_cannot_differ(repeat_kw, why):
    a, b = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    recs = [_rec(0, "none", 0, a, a), _rec(0, "none", 0, a, b, repeat=1, **repeat_kw)]
    res = R.evaluate_answers(recs)
    assert res["noise_floor"]["pairs"] == 0 and res["noise_floor"]["rbo"] is None
    assert why in res["not_measured"]["noise_floor"]
    assert res["per_set"]["faiss@20 (listwise)"]["noise_floor"]["none"]["pairs"] == 0


def _free(
    user, reason, top="item 1", ranking=(1, 2, 3, 4, 5, 6), facts=("Green Tea",), aisle="tea"
):
    """An answer of the free arm: no id grammar, its first product's name and a reason."""
    ranking = list(ranking)
    parsed = R.repair_permutation(ranking, [1, 2, 3, 4, 5, 6])
    rec = _rec(user, "context", 0, [1, 2, 3, 4, 5, 6], parsed.ranking, parsed.counts())
    rec.update(
        arm="free",
        raw=json.dumps({"ranking": ranking, "top_product": top, "reason": reason}),
        top_product=top,
        reason=reason,
        context="the shopper says this order is for: weeknight dinner.",
        user_facts={"products": list(facts), "aisles": [aisle], "departments": ["beverages"]},
    )
    return rec


def test_reason_alignment_counts_only_the_answers_that_give_a_reason():
    recs = [
        _free(0, "They often buy green tea."),  # a product of their training rows
        _free(1, "A good choice for anyone.", facts=("Bananas",), aisle="fresh fruits"),
        _free(2, None),  # asked, gave no reason: no evidence either way
        _free(3, "   "),
    ]
    ra = R.evaluate_answers(recs)["reasoning_alignment"]
    assert (ra["answers_asked"], ra["answers_with_reason"]) == (4, 2)
    assert ra["share_citing_a_true_fact"] == pytest.approx(0.5)  # 1 of 2, not 1 of 4
    # by chance: user 0's reason against user 1's facts, user 1's against user 0's
    assert ra["share_citing_another_users_fact"] == pytest.approx(0.0)
    # the context counts as a fact ("dinner"), its sentence frame ("shopper", "order") not
    assert R.names_attribute("for a weeknight dinner", R.fact_words({}, recs[0]["context"]))
    assert not R.names_attribute("this shopper's order", R.fact_words({}, recs[0]["context"]))


def test_hallucination_only_where_no_grammar_held_the_ids():
    a = [1, 2, 3, 4, 5, 6]
    held = [_rec(0, "none", 0, a, a, id_grammar=True)]  # a local model's grammar: 0 by construction
    res = R.evaluate_answers(held)
    assert res["hallucination"]["answers_with_unknown_ids_pct"] is None
    assert "0 by construction" in res["not_measured"]["hallucination"]
    assert "hallucination: n/a (" in R.format_report({"answers_file": "a.jsonl", **res})
    free = [
        _free(0, "tea", ranking=(1, 2, 99, 3, 4, 5, 6)),  # an id outside the candidates
        _free(1, "tea", top="Moon Cheese"),  # an invented product name
        _free(2, "tea", top="item 2"),  # a candidate's name, but not the first id's
        _free(3, "tea", top="[1] Item 1 (tea)"),  # the candidate line, copied: no invention
    ]
    h = R.evaluate_answers(held + free)["hallucination"]
    assert h["answers"] == 4 and h["answers_with_unknown_ids_pct"] == pytest.approx(25.0)
    assert h["invented_product_names_pct"] == pytest.approx(25.0)
    assert h["first_name_not_the_first_id_pct"] == pytest.approx(25.0)


def test_missing_answers_file_is_a_one_line_error(tmp_path, capsys):
    assert R.main(["--answers", str(tmp_path / "none.jsonl")]) == 2
    assert "no reranker answers" in capsys.readouterr().err
    assert np.isnan(R.rbo([], []))


# ---------------------------------------------------------------------------------------------
# which answers are evaluated: those of the llm_reranker run asked about, never "the newest"

DATA = {"source": "generated sample", "sampling": "all", "users": 300, "items": 1500, "rows": 9}


def answers_run(run_id: str = "r1", **kw) -> dict:
    run = {
        "run_id": run_id,
        "data": dict(DATA),
        "split": {"mode": "temporal", "seed": 42},
        "candidate_sets": ["faiss@20"],
        "options": {"eval_users": 1, "shuffles": 2, "mode": "listwise"},
        "llm": {"backend": "claude", "model": "claude-haiku", "label": "claude-haiku"},
    }
    return {**run, **kw}


def write_run(folder, name="llm_reranker_generated_temporal", run=None, header="same", recs=None):
    """A results JSON of llm_reranker.py and the answers file it names (header: the run
    header written in the file: "same" = the results JSON's, None = no header line)."""
    folder.mkdir(parents=True, exist_ok=True)
    run = answers_run() if run is None else run
    answers = f"llm_reranker_answers_{name.split('_', 2)[2]}.jsonl"
    res = {
        "experiment": "llm_reranker",
        "data": {**DATA, "orders": 3},
        "split": {"mode": "temporal", "seed": 42},
        "answers_file": answers if run else None,
        "answers_run": run or None,
    }
    if not run:
        res["llm"] = {"skipped": "LLM arms disabled (--llm none)"}
    (folder / f"{name}.json").write_text(json.dumps(res))
    a, b = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    recs = recs or [_rec(0, "none", 0, a, a), _rec(0, "none", 1, b, a)]
    head = run if header == "same" else header
    lines = ([json.dumps({"answers_run": head})] if head else []) + [json.dumps(r) for r in recs]
    if run:
        (folder / answers).write_text("\n".join(lines) + "\n")
    return folder / f"{name}.json", folder / answers


def test_the_answers_of_the_run_asked_about_are_read_when_they_match(tmp_path):
    results, answers = write_run(tmp_path)
    res = R.run(results=results, out=None, verbose=False)
    assert res["answers"] == 2 and res["answers_file"] == answers.name
    assert res["results_file"] == results.name and res["answers_run"]["run_id"] == "r1"
    # the header line is no answer
    header, recs = R.read_answers(answers)
    assert header["run_id"] == "r1" and len(recs) == 2


@pytest.mark.parametrize(
    "case, why",
    [
        ("llm-skipped", "made no LLM answers"),
        ("other-run", "from another run"),
        ("other-data", "differs in data"),
        ("missing", "is missing"),
        ("no-header", "no run header"),
        ("old-results", "records no answers run"),
    ],
    ids=lambda v: v if "-" in v or v == "missing" else "",  # node ids without spaces
)
def test_answers_that_are_not_the_runs_are_not_evaluated(tmp_path, case, why):
    kw = {
        "llm-skipped": {"run": {}},
        "other-run": {"header": answers_run("r0")},
        "other-data": {"header": answers_run(data={**DATA, "rows": 10})},
        "no-header": {"header": None},
    }.get(case, {})
    results, answers = write_run(tmp_path, **kw)
    if case == "missing":
        answers.unlink()
    if case == "old-results":
        d = json.loads(results.read_text())
        del d["answers_run"]
        results.write_text(json.dumps(d))
    with pytest.raises(R.NoAnswers, match=why):
        R.run(results=results, out=None, verbose=False)


def test_without_a_named_run_the_one_results_json_is_used_never_the_newest_answers(tmp_path):
    # a newer answers file of another run (no results JSON of its own: the run crashed)
    crashed, stray = write_run(tmp_path / "a", name="llm_reranker_csv_temporal")
    crashed.unlink()
    with pytest.raises(R.NoAnswers, match="no llm_reranker results JSON"):
        R.run(out=None, verbose=False, results_dir=tmp_path / "a")
    write_run(tmp_path / "a", run={})  # the --llm none run of the study
    stray.touch()
    with pytest.raises(R.NoAnswers, match="made no LLM answers"):
        R.run(out=None, verbose=False, results_dir=tmp_path / "a")
    write_run(tmp_path / "a", name="llm_reranker_generated_interaction")
    with pytest.raises(R.ChooseRun, match="2 llm_reranker results JSONs"):
        R.run(out=None, verbose=False, results_dir=tmp_path / "a")


def test_main_says_n_a_in_one_line(tmp_path, capsys):
    results, _ = write_run(tmp_path, run={})
    assert R.main(["--results", str(results), "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: n/a: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.json").exists()
