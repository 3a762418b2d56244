"""runs.py: one results file per run (never replaced), per-user metrics beside it, the
results index and load_results(), the newest run as the pipeline reference, and
evals/run_evals.py --compare A B over two experiment runs (arms added, paired intervals)."""

import json

import numpy as np
import pytest

import config
import experiment
import options
import runs
from evals import run_evals as E


def make_args(sample_dir, *extra):
    parser = options.script_parser("demo", seeds=1, llm_args=False)
    argv = ["--data-dir", str(sample_dir), "--users", "300", "--items", "1500", "--no-cache"]
    return options.parse_args_with_quick(parser, [*argv, "--quiet", *extra], {})


def one_run(args, t_wall=None, two_tower_from="popularity"):
    """A two_tower-named run of the baselines plus a 'two-tower' arm copied from a baseline's
    lists (no training: fast), written to config.RESULTS_DIR; returns its results path."""
    exp = experiment.Experiment("two_tower", args)
    if t_wall is not None:
        exp.t_wall = t_wall
    exp.add_baselines()
    exp.add("two-tower", exp.lists[two_tower_from][1])
    exp.verdict("inconclusive", "a test run")
    return exp, exp.write()


@pytest.fixture
def two_runs(small_sample_dir, tmp_path, monkeypatch):
    """Run A (--no-tifu) then run B (tifu-knn added; its 'two-tower' arm other lists)."""
    monkeypatch.setattr(config, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    exp_a, a = one_run(make_args(small_sample_dir, "--no-tifu"))
    exp_b, b = one_run(make_args(small_sample_dir), two_tower_from="top-frequency + popular")
    return exp_a, a, exp_b, b


def test_two_runs_with_different_options_are_both_kept_and_indexed(two_runs, capsys):
    exp_a, a, exp_b, b = two_runs
    res = config.RESULTS_DIR
    assert a != b and a.parent == b.parent == res
    for path, exp in ((a, exp_a), (b, exp_b)):
        assert path.name == exp.run_name() + ".json"
        assert runs.series_of(path.name) == "two_tower_csv_interaction"
        d = json.loads(path.read_text())
        assert d["per_user_file"] == runs.per_user_path(path).name
    assert "tifu-knn" not in json.loads(a.read_text())["metrics"]
    assert "tifu-knn" in json.loads(b.read_text())["metrics"]
    saved = runs.load_per_user(a)
    assert set(saved) == set(exp_a.lists)
    u = saved["popularity"]
    assert len(u["users"]) == len(u["recall@10"]) == len(u["ndcg@10"]) > 100
    assert np.isfinite(u["recall@10"]).all()
    df = experiment.load_results()
    assert list(df["file"]) == [a.name, b.name] and list(df["script"]) == ["two_tower"] * 2
    assert df["options_hash"].nunique() == 2 and df["time"].notna().all()
    assert df["verdict"].str.contains("a test run").all() and (df["ndcg@10"] > 0).all()
    assert set(df.loc[0, "data"]) == set(experiment.SAME_DATA_KEYS)
    # the pipeline reference is two_tower's newest run on the same data and split
    ds = exp_b.ds.summary()
    ref = experiment.pipeline_reference(ds, "interaction", exp_b.split.seed)
    assert ref is not None and ref[2] == b and ref[0] == "two_tower.py best: two-tower"
    assert experiment.pipeline_reference(ds, "temporal", exp_b.split.seed) is None
    assert experiment.pipeline_reference({**ds, "rows": 1}, "interaction", 42) is None


def test_a_run_with_the_same_name_never_replaces_the_first(two_runs, small_sample_dir):
    """Same options, same second: the second run gets a -2 suffix; the first is untouched."""
    _, _, exp_b, b = two_runs
    before, side = b.read_bytes(), runs.per_user_path(b).read_bytes()
    _, c = one_run(make_args(small_sample_dir), t_wall=exp_b.t_wall)
    assert c.name == b.name.replace(".json", "-2.json")
    assert b.read_bytes() == before and runs.per_user_path(b).read_bytes() == side
    assert runs.per_user_path(c).is_file()
    assert list(experiment.load_results()["file"])[-1] == c.name
    assert runs.resolve_results("@-1") == c and runs.resolve_results("@0").name.endswith(".json")


def test_compare_two_runs_lists_the_added_arm_and_gives_paired_intervals(two_runs, capsys):
    _, a, _, b = two_runs
    capsys.readouterr()
    assert E.main(["--compare", str(a), "@-1", "--results-dir", str(config.RESULTS_DIR)]) == 0
    out = capsys.readouterr().out
    assert "arms added: tifu-knn" in out and "arms removed: -" in out
    res = E.compare([a.name, b.name], results_dir=config.RESULTS_DIR)
    assert res["added"] == ["tifu-knn"] and res["removed"] == []
    same = res["gains"]["popularity"]["recall@10"]  # identical lists: a zero gain
    assert same["mean"] == 0 and same["ci95"] == [0, 0] and same["n"] > 100
    g = res["gains"]["two-tower"]["ndcg@10"]  # popularity -> top-frequency + popular
    lo, hi = g["ci95"]
    assert lo <= g["mean"] <= hi and g["mean"] > 0 and g["n"] == same["n"]
    line = next(s for s in out.splitlines() if s.startswith("two-tower") and "ndcg@10" in s)
    assert f"{g['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}]" in line


def test_compare_of_a_run_without_per_user_metrics_says_so(two_runs, capsys):
    _, a, _, b = two_runs
    runs.per_user_path(a).unlink()
    res = E.compare([str(a), str(b)], results_dir=config.RESULTS_DIR)
    assert res["gains"]["two-tower"]["recall@10"] is None
    assert f"note: {a.name}: no per-user metrics saved" in capsys.readouterr().out


def test_index_appends_one_line_per_row(tmp_path):
    for i in range(3):
        runs.append_index(tmp_path, {"script": "s", "file": f"f{i}.json", "time": None})
    with (tmp_path / runs.INDEX_NAME).open("a") as f:
        f.write("{not json\n")  # a torn line is skipped
    df = runs.load_results(tmp_path)
    assert list(df["file"]) == ["f0.json", "f1.json", "f2.json"]
    assert runs.load_results(tmp_path / "none").empty


def test_study_snapshot_keeps_one_key_per_series_the_newest_run(two_runs):
    """The eval runs' study snapshot is keyed by <script>_<data>_<split>, not by the file of
    one run, so two eval runs compare the same series from run to run."""
    _, _, _, b = two_runs
    study = E.study_part(config.RESULTS_DIR)
    assert list(study) == ["two_tower_csv_interaction.json"]
    assert study["two_tower_csv_interaction.json"]["file"] == b.name


def test_eval_run_compare_lists_study_arms_added_and_removed(tmp_path, capsys):
    def eval_run(name, arms):
        study = {"x.json": {"arms": {a: {"recall@10": {"mean": 0.1}} for a in arms}}}
        (tmp_path / f"run_{name}.json").write_text(json.dumps({"parts": {"study": study}}))

    eval_run("1", ["a", "b"])
    eval_run("2", ["a", "c"])
    rows = E.compare([], tmp_path)
    out = capsys.readouterr().out
    assert [r["metric"] for r in rows] == ["study/x.json/arms/a/recall@10"]
    assert "study arms added: x.json/c" in out and "study arms removed: x.json/b" in out


def test_provenance_records_every_installed_distribution(monkeypatch):
    """provenance()["versions"]: every installed distribution (name -> version, sorted), not
    only the nine libraries it once named; those keep their keys, None when absent, and
    "xgboost" is the xgboost module's version when xgboost-cpu installs it."""
    from importlib.metadata import version

    v = experiment.provenance()["versions"]
    assert v["scipy"] == version("scipy") and v["httpx2"] == version("httpx2")
    assert v["torch"] == version("torch") and v["faiss-cpu"] == version("faiss-cpu")
    assert list(v) == sorted(v) and len(v) > 40
    assert set(experiment.CORE_LIBRARIES) <= set(v)
    assert v["xgboost"] == __import__("xgboost").__version__
    assert all(k == k.lower() and "_" not in k for k in v)  # normalised names
    monkeypatch.setattr(experiment, "CORE_LIBRARIES", (*experiment.CORE_LIBRARIES, "no-such"))
    assert experiment.installed_versions()["no-such"] is None
