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
        **kw,
    }


def test_evaluate_answers_rates_noise_floor_and_shift(tmp_path):
    a, b = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    recs = [
        _rec(0, "none", 0, a, a),
        _rec(0, "none", 1, b, a),  # stable: floor 1
        _rec(0, "context", 0, a, b, {"unknown": 1, "duplicate": 0, "missing": 1, "failed": False}),
        _rec(0, "context", 1, b, b),
        _rec(1, "none", 0, a, None, {"failed": True}),
        _rec(1, "none", 1, b, b, reason="likes tea"),
    ]
    res = R.evaluate_answers(recs)
    assert res["hallucination"]["answers_with_unknown_ids_pct"] == pytest.approx(100 / 6, abs=0.01)
    assert res["repairs_per_100_answers"]["failed"] == pytest.approx(100 / 6, abs=0.01)
    assert res["repairs_per_100_answers"]["missing"] == pytest.approx(100 / 6, abs=0.01)
    blk = res["per_set"]["faiss@20 (listwise)"]
    assert blk["noise_floor"]["none"]["rbo"] == pytest.approx(1.0)
    assert blk["shift_vs_none"]["context"]["tau"] == pytest.approx(-1.0)
    assert blk["echo_tau"]["context"] == pytest.approx(0.0)  # one echo (+1), one reversal (-1)
    assert res["reasoning_alignment"]["share_naming_top_item_attribute"] == 1.0
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = R.run(path, users=1, out=tmp_path / "e.json", verbose=False)
    assert out["users"] == 1 and json.loads((tmp_path / "e.json").read_text())["answers"] == 4


def test_pointwise_repeat_is_the_noise_floor_and_does_not_replace_the_answer():
    a, b = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    pw = {"mode": "pointwise", "set": "faiss@20"}
    recs = [
        {**_rec(0, "none", 0, a, a), **pw, "repeat": 0},
        {**_rec(0, "none", 0, a, b), **pw, "repeat": 1},  # the same prompts asked again
        {**_rec(0, "context", 0, a, a), **pw, "repeat": 0},
    ]
    blk = R.evaluate_answers(recs)["per_set"]["faiss@20 (pointwise)"]
    assert blk["noise_floor"]["none"]["tau"] == pytest.approx(-1.0)
    assert blk["shift_vs_none"]["context"]["tau"] == pytest.approx(1.0)  # vs the first answer


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
