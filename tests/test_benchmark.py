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
        assert [e["epoch"] for e in r["training"][0]["epochs"]] == [1]  # the losses are kept
        assert r["training"][0]["epochs"][0]["val_loss"] > 0
    rows = {r["stage"]: r for r in res["table"]}
    assert "b 0.08k-0.16k" in rows["two-tower training"] and "whole process" in rows
    assert res["run"][-5:] == ["--epochs", "1", "--no-tifu", "--hidden", "32"]


def test_step_times_each_batch_size_on_a_data_folder(tmp_path, monkeypatch, small_sample_dir):
    """`step` on a small folder: one row per batch size (sorted, distinct), positive step
    times, and epoch estimates that follow from them (rows / batch x seconds a step)."""
    monkeypatch.setattr(B.config, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "step.json"
    argv = ["step", "--data-dir", str(small_sample_dir), "--batch-sizes", "256,64,256"]
    B.main([*argv, "--steps", "2", "--threads", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert [r["batch"] for r in res["rows"]] == [64, 256]
    for r in res["rows"]:
        assert r["s_per_step"] > 0
        want = res["training_rows"] / r["batch"] * r["s_per_step"] / 60
        assert r["epoch_rows_min"] == pytest.approx(want, abs=0.06)
    assert 0 < res["training_pairs"] <= res["training_rows"]


def test_full_runs_the_pipeline_with_the_full_size_settings(
    tmp_path, monkeypatch, small_sample_dir
):
    """`full` (here on a small folder standing in for data/full): the child gets every user
    and item, the full-size settings, then the user's options (last, so they win); the stage
    table and each arm's metrics come back."""
    monkeypatch.setattr(B, "ensure_full_sample", lambda: small_sample_dir)
    monkeypatch.setattr(B.config, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "full.json"
    B.main(["full", "--json", str(out), "--epochs", "1", "--no-tifu", "--hidden", "32"])
    res = json.loads(out.read_text())
    cmd = res["command"]
    assert "--full" in cmd and cmd[-5:] == ["--epochs", "1", "--no-tifu", "--hidden", "32"]
    at = cmd.index("--epoch-rows")
    assert cmd[at : at + 2] == ["--epoch-rows", "6000000"] and at < len(cmd) - 5
    stages = {r["stage"]: r["wall_s"] for r in res["stages"]}
    assert stages["two-tower training"] > 0 and 0 < res["peak_rss_gib"] < 8
    assert 0 < res["metrics"]["two-tower"]["recall@20"] <= 1
    assert res["training"][0]["seed"] == 42 and res["training"][0]["epochs"][0]["val_loss"] > 0
