"""benchmark.py's command line (the benchmarks themselves are timed runs, not tests)."""

import json

import pytest

import benchmark as B


def test_two_tower_passes_its_options_on_to_the_script():
    args = B.parse_args(["two_tower", "--data-dir", "DIR", "--items", "5000", "--bf16"])
    assert args.script_args == ["--data-dir", "DIR", "--items", "5000", "--bf16"]
    assert B.parse_args(["two_tower"]).script_args == []


def test_other_commands_reject_unknown_options():
    with pytest.raises(SystemExit):
        B.parse_args(["llm", "--bf16"])


def test_growth_exponent():
    assert B.growth(10.0, 20.0, 1000, 2000) == pytest.approx(1.0)
    assert B.growth(10.0, 40.0, 1000, 2000) == pytest.approx(2.0)
    assert B.growth(0.3, 5.0, 1000, 2000) is None  # a sub-second stage: jitter


def test_scale_runs_the_pipeline_at_each_size_and_tabulates_growth(tmp_path, monkeypatch):
    """Two tiny sizes end to end: data generated once per size (kept), two_tower.py run in a
    child with a fresh cache, every stage timed, the child's own peak RSS, a growth column."""
    monkeypatch.setattr(B, "SCALE_DIR", tmp_path / "scale")
    monkeypatch.setattr(B.config, "CACHE_DIR", tmp_path / "no-data-yet" / "cache")  # fresh clone
    out = tmp_path / "scale.json"
    argv = ["scale", "--users", "160,80", "--items", "300", "--json", str(out)]
    B.main([*argv, "--epochs", "1", "--no-tifu", "--hidden", "32"])
    res = json.loads(out.read_text())
    assert [r["users"] for r in res["runs"]] == [80, 160]  # sorted
    assert sorted(p.name for p in (tmp_path / "scale").iterdir()) == ["160_300", "80_300"]
    for r in res["runs"]:
        assert set(r["stages"]) == {
            "load",
            "split + features",
            "baselines (incl. TIFU-KNN)",
            "two-tower training",
            "FAISS retrieval",
            "re-ranking",
            "rest",
        }
        assert r["stages"]["two-tower training"] > 0 and 0 < r["peak_rss_gib"] < 8
        assert sum(r["stages"].values()) <= r["wall_s"] and 0 <= r["recall@20"] <= 1
    rows = {r["stage"]: r for r in res["table"]}
    assert "b 0.08k-0.16k" in rows["two-tower training"] and "whole process" in rows
    assert res["run"][-5:] == ["--epochs", "1", "--no-tifu", "--hidden", "32"]
