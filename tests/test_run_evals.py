"""evals/run_evals.py: run files (timestamped, with prompt versions, backend, model, commit),
parts that are missing say so, and --compare's deltas and regression flags."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evals import run_evals as E

ROOT = Path(__file__).resolve().parents[1]


def run_file(
    d: Path, run_id: str, r10: float, ci=(0.10, 0.14), words: float = 60.0, data: str = "users=1500"
) -> Path:
    p = d / f"run_{run_id}.json"
    p.write_text(
        json.dumps(
            {
                "run_id": run_id,
                "parts": {
                    "descriptions": {
                        "models": [{"model": "haiku", "version": "v1", "words": words}]
                    },
                    "study": {
                        "two_tower.json": {
                            "data": data,
                            "arms": {"two-tower": {"recall@10": {"mean": r10, "ci95": list(ci)}}},
                        }
                    },
                },
            }
        )
    )
    return p


def test_regression_flag_only_when_the_later_value_leaves_the_earlier_interval(tmp_path):
    run_file(tmp_path, "20260101-000000", 0.12)
    run_file(tmp_path, "20260102-000000", 0.13, words=70.0)  # inside [0.10, 0.14]
    rows = {r["metric"]: r for r in E.compare([], tmp_path)}
    r = rows["study/two_tower.json/arms/two-tower/recall@10"]
    assert r["delta"] == pytest.approx(0.01) and r["regression"] is False
    w = rows["descriptions/models/haiku@v1/words"]  # keyed by model@version, no interval
    assert w["delta"] == pytest.approx(10.0) and w["regression"] is None
    run_file(tmp_path, "20260103-000000", 0.09)  # below 0.10
    rows = {r["metric"]: r for r in E.compare([], tmp_path)}
    r = rows["study/two_tower.json/arms/two-tower/recall@10"]
    assert r["regression"] is True and r["delta"] == pytest.approx(-0.04)


def test_compare_does_not_flag_a_study_file_measured_on_other_data(tmp_path, capsys):
    run_file(tmp_path, "20260101-000000", 0.12)
    run_file(tmp_path, "20260102-000000", 0.30, data="users=1446")  # the real rows, say
    rows = {r["metric"]: r for r in E.compare([], tmp_path)}
    r = rows["study/two_tower.json/arms/two-tower/recall@10"]
    assert r["data_changed"] and r["regression"] is None
    assert "1 measured on other data (not compared)" in capsys.readouterr().out


def test_compare_latest_pair_or_two_named_runs(tmp_path, capsys):
    run_file(tmp_path, "20260101-000000", 0.12)
    run_file(tmp_path, "20260102-000000", 0.20)
    run_file(tmp_path, "20260103-000000", 0.121)
    E.compare([], tmp_path)  # latest two: 02 -> 03
    assert "run_20260102-000000 (earlier) -> run_20260103-000000 (later)" in capsys.readouterr().out
    rows = E.compare(["20260101-000000", "run_20260103-000000.json"], tmp_path)
    assert rows[-1]["earlier"] == 0.12 and rows[-1]["later"] == 0.121
    with pytest.raises(E.EvalError, match="no eval run 'nope'"):
        E.compare(["nope", "20260101-000000"], tmp_path)


def test_compare_needs_two_runs_one_line_error(tmp_path):
    run_file(tmp_path, "20260101-000000", 0.12)
    p = subprocess.run(
        [sys.executable, str(ROOT / "evals/run_evals.py"), "--compare", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2
    assert (
        p.stderr.startswith("error: --compare needs two eval runs")
        and len(p.stderr.strip().splitlines()) == 1
    )


def args_for(tmp_path, *argv):
    return E.parse_args(
        [*argv, "--out-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    )


def test_run_writes_a_timestamped_file_with_provenance_and_study_snapshot(tmp_path, monkeypatch):
    from evals import description_evals as D

    seen = {}

    def fake_eval(cache, judge_n, client, out, progress, print_table):
        seen["out"] = out
        return {"models": [{"model": "qwen-local", "version": "v1", "words": 42.0}]}

    monkeypatch.setattr(D, "evaluate_descriptions", fake_eval)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "exp_generated_interaction.json").write_text(
        json.dumps(
            {
                "verdict": "verdict: refuted - x",
                "metrics": {
                    "arm": {
                        "all": {"recall@10": {"mean": 0.3}, "ndcg@10": {"mean": 0.4}},
                        "ci95_first_seed": {"recall@10": [0.25, 0.35]},
                    }
                },
            }
        )
    )
    monkeypatch.setattr(E, "RESULTS_DIR", tmp_path / "results")
    out = E.run(
        args_for(
            tmp_path, "--descriptions", "--reranker", "--answers", str(tmp_path / "none.jsonl")
        )
    )
    assert out.parent == tmp_path / "runs" and out.name.startswith("run_")
    d = json.loads(out.read_text())
    assert seen["out"] is None  # the module's fixed-name file is not written
    assert d["parts"]["descriptions"]["models"][0]["words"] == 42.0
    assert d["models_evaluated"]["descriptions"] == ["qwen-local"]
    assert "no reranker answers" in d["parts"]["reranker"]["skipped"]
    assert set(d["prompt_versions"]) == {*E.DESCRIPTION_PROMPTS, *E.RERANKER_PROMPTS}
    assert d["backend"].startswith("none") and d["provenance"]["git_commit"] is not None
    assert d["parts"]["study"]["exp_generated_interaction.json"]["arms"]["arm"]["recall@10"] == {
        "mean": 0.3,
        "ci95": [0.25, 0.35],
    }
    second = E.run(args_for(tmp_path, "--reranker", "--answers", str(tmp_path / "none.jsonl")))
    assert second != out and len(E.list_runs(tmp_path / "runs")) == 2


def test_a_module_not_written_yet_is_reported_not_crashed(monkeypatch):
    import evals

    monkeypatch.setitem(sys.modules, "evals.description_evals", None)  # import fails
    monkeypatch.delattr(evals, "description_evals", raising=False)
    part = E.descriptions_part()
    assert part["skipped"].startswith("not available yet: evals/description_evals.py")


def test_options_are_checked():
    for bad in (["--reranker-users", "0", "--reranker"], ["--reranker-users", "5"], []):
        with pytest.raises(SystemExit) as e:
            E.parse_args(bad)
        assert e.value.code == 2


def test_reranker_part_reads_the_answers_of_the_study_run_never_the_newest(tmp_path, monkeypatch):
    """The issue's case: a --llm none study on generated data (its llm_reranker results name
    no answers) beside a newer answers file of a crashed real-rows run (claude-haiku). The
    eval run says n/a with the reason; it never evaluates that file."""
    from evals import reranker_evals as R

    res = tmp_path / "results"
    res.mkdir()
    (res / "llm_reranker_generated_interaction.json").write_text(
        json.dumps(
            {
                "experiment": "llm_reranker",
                "data": {"source": "generated sample", "users": 300},
                "split": {"mode": "interaction", "seed": 42},
                "answers_file": None,
                "llm": {"skipped": "LLM arms disabled (--llm none)"},
            }
        )
    )
    rec = {"user": 7, "set": "faiss@20", "condition": "none", "shuffle": 0, "mode": "listwise"}
    rec |= {"model": "claude-haiku", "candidates": [1, 2], "shown": [1, 2], "parsed": [2, 1]}
    rec |= {"names": ["a", "b"], "aisles": ["x", "y"], "repairs": {}}
    (res / "llm_reranker_answers_csv_temporal.jsonl").write_text(
        "".join(json.dumps({**rec, "shuffle": s}) + "\n" for s in range(6))
    )
    monkeypatch.setattr(R, "RESULTS_DIR", res)  # where the old code looked for "the newest"
    named = ["--reranker-results", str(res / "llm_reranker_generated_interaction.json")]
    for argv in (["--reranker"], ["--reranker", *named]):
        d = json.loads(E.run(args_for(tmp_path, *argv)).read_text())
        part = d["parts"]["reranker"]
        assert "answers" not in part and part["skipped"].startswith("n/a: "), part
        assert d["models_evaluated"]["reranker"] == []
        assert "made no LLM answers (LLM arms skipped: LLM arms disabled" in part["skipped"]
    d = json.loads(
        E.run(args_for(tmp_path, "--reranker", "--reranker-results", "none")).read_text()
    )
    assert d["parts"]["reranker"]["skipped"].startswith("n/a: no completed llm_reranker run")


def test_several_reranker_results_need_one_named(tmp_path, capsys):
    res = tmp_path / "results"
    res.mkdir()
    for name in ("llm_reranker_generated_interaction", "llm_reranker_csv_temporal"):
        (res / f"{name}.json").write_text(json.dumps({"answers_file": None}))
    argv = ["--reranker", "--results-dir", str(res), "--out-dir", str(tmp_path / "runs")]
    assert E.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 llm_reranker results JSONs") and "--reranker-results" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
