"""Issue 26, values and options: every bad value in a data file and every bad option is one
line naming the file (or option) and the problem, raised before anything is trained or
written; a saved tower is loaded without executing anything.

Data cases are tiny Kaggle folders written by the test (test_data.TINY with one edit).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_data import TINY, one_line_error, tiny_dir

import common
import config
import reranking
import two_tower
from config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ORDER2 = "2,1,prior,2,1,11,7.0"  # user 1's second order in TINY's orders.csv


@pytest.fixture(autouse=True)
def tmp_dirs(tmp_path, monkeypatch):
    """Caches and results go to tmp_path; no LLM backend from the environment."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(config, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.delenv("LLM_BACKEND", raising=False)


def load(d: Path, **kw):
    return common.load_dataset(d, full=True, use_cache=False, verbose=False, **kw)


def orders_with(new: str, old: str = ORDER2) -> dict:
    assert old in TINY["orders.csv"]
    return {"orders": TINY["orders.csv"].replace(old, new)}


def prior_with(old: str, new: str) -> dict:
    text = TINY["order_products__prior.csv"]
    assert text.count(f"\n{old}\n") == 1
    return {"order_products_prior": text.replace(f"\n{old}\n", f"\n{new}\n")}


# ----------------------------------------------------------------------------
# values: empty and out-of-range numbers in the non-id columns
@pytest.mark.parametrize(
    "case, fragments",
    [
        (orders_with("2,1,prior,,1,11,7.0"), ["'order_number'", "1 empty", "order_id 2"]),
        (orders_with("2,1,prior,2,,11,7.0"), ["'order_dow'", "1 empty", "order_id 2"]),
        (orders_with("2,1,prior,2,1,,7.0"), ["'order_hour_of_day'", "1 empty", "order_id 2"]),
        (orders_with("2,1,prior,0,1,11,7.0"), ["'order_number'", "1 row(s)", ">= 1", "0"]),
        (orders_with("2,1,prior,2,7,11,7.0"), ["'order_dow'", "0-6", "7", "order_id 2"]),
        (orders_with("2,1,prior,2,-1,11,7.0"), ["'order_dow'", "0-6", "-1"]),
        (orders_with("2,1,prior,2,1,24,7.0"), ["'order_hour_of_day'", "0-23", "24"]),
        (
            orders_with("2,1,prior,2,1,11,"),  # empty days, but not on the user's first order
            ["'days_since_prior_order'", "1 empty", "first order", "order_id 2"],
        ),
    ],
    ids=[
        "empty-order-number",
        "empty-dow",
        "empty-hour",
        "order-number-0",
        "dow-7",
        "dow-negative",
        "hour-24",
        "empty-days-not-first",
    ],
)
def test_bad_order_values_are_one_line(tmp_path, case, fragments):
    one_line_error(lambda: load(tiny_dir(tmp_path, **case)), "orders.csv", *fragments)


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        ("1,2,2,0", "1,2,,0", ["'add_to_cart_order'", "1 empty", "order_id 1, product_id 2"]),
        ("2,1,1,1", "2,1,1,", ["'reordered'", "1 empty", "order_id 2"]),  # cut after the comma
        ("1,2,2,0", "1,2,0,0", ["'add_to_cart_order'", ">= 1", "0"]),
        ("2,1,1,1", "2,1,1,2", ["'reordered'", "0 or 1", "2", "order_id 2"]),
    ],
    ids=["empty-cart", "cut-row", "cart-0", "reordered-2"],
)
def test_bad_prior_values_are_one_line(tmp_path, old, new, fragments):
    d = tiny_dir(tmp_path, **prior_with(old, new))
    one_line_error(lambda: load(d), "order_products__prior.csv", *fragments)


def test_empty_days_on_first_orders_load(tmp_path):
    """Kaggle leaves days_since_prior_order empty on each user's first order: that loads."""
    ds = load(tiny_dir(tmp_path))
    first = ds.interactions["order_number"] == 1
    assert ds.interactions.loc[first, "days_since_prior_order"].isna().all()
    assert ds.interactions.loc[~first, "days_since_prior_order"].notna().all()


def test_every_user_with_one_order_is_no_evaluation_user(tmp_path):
    """A temporal split where every user has a single prior order leaves nobody to score:
    a one-line DataError, from the split and from a script before anything is trained."""
    d = tiny_dir(tmp_path, **orders_with("2,1,train,2,1,11,7.0"))
    ds = load(d)
    one_line_error(
        lambda: common.split_interactions(ds.interactions, "temporal"),
        "no evaluation users",
        "temporal",
    )
    argv = ["--data-dir", str(d), "--full", "--split", "temporal", "--no-cache", "--quiet"]
    one_line_error(lambda: two_tower.main(argv), "no evaluation users")
    assert not config.RESULTS_DIR.exists() and not (config.CACHE_DIR / "two_tower").exists()


def test_a_one_user_folder_is_a_data_error(tmp_path):
    """--users 1 is refused as an option; a folder that holds one user is a DataError
    before the baselines (TIFU-KNN's neighbours broke with a traceback)."""
    orders = "".join(TINY["orders.csv"].splitlines(keepends=True)[:3])  # user 1's orders
    d = tiny_dir(
        tmp_path,
        orders=orders,
        order_products_prior=TINY["order_products__prior.csv"].replace("3,3,1,0\n", ""),
    )
    assert load(d).n_users == 1
    argv = ["--data-dir", str(d), "--full", "--no-cache", "--quiet"]
    one_line_error(lambda: two_tower.main(argv), "1 user", "at least 2")
    assert not config.RESULTS_DIR.exists()


# ----------------------------------------------------------------------------
# options: range-checked before any data loads (a missing --data-dir would be a DataError)
BAD_OPTIONS = [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "1"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--dim", "0"], "--dim"),
    (["--hidden", "0"], "--hidden"),
    (["--temperature", "0"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--threads", "0"], "--threads"),
    (["--threads", "-1"], "--threads"),
    (["--device", "foo"], "--device"),
    (["--device", "cuda:x"], "--device"),
    (["--users", "1"], "--users"),
    (["--items", "0"], "--items"),
    (["--seeds", "0"], "--seeds"),
    (["--tifu-pool", "-1"], "--tifu-pool"),
    (["--epoch-rows", "-1"], "--epoch-rows"),
    (["--ranker-train-users", "-5"], "--ranker-train-users"),
]


@pytest.mark.parametrize(
    "argv, option", BAD_OPTIONS, ids=[f"{a[0][2:]}={a[1]}" for a, _ in BAD_OPTIONS]
)
def test_bad_tower_and_experiment_options_fail_before_data(tmp_path, argv, option):
    nope = ["--data-dir", str(tmp_path / "nope")]
    one_line_error(lambda: two_tower.main([*argv, *nope]), option, argv[1], exc=ConfigError)
    assert not config.RESULTS_DIR.exists() and not config.CACHE_DIR.exists()


def test_good_edge_options_pass_the_checks(tmp_path):
    """The smallest valid values are accepted (the failure is then the missing data)."""
    argv = ["--epochs", "1", "--batch-size", "2", "--dim", "1", "--hidden", "1", "--users", "2"]
    argv += ["--items", "1", "--threads", "1", "--device", "cpu", "--temperature", "0.01"]
    one_line_error(lambda: two_tower.main([*argv, "--data-dir", str(tmp_path / "nope")]), "nope")


@pytest.mark.parametrize(
    "script",
    ["llm_item_enrichment", "llm_user_narration", "llm_reranker", "synthetic_context", "exp5"],
)
def test_every_experiment_checks_the_shared_options(tmp_path, script):
    import importlib

    mod = importlib.import_module("exp5_dual_head" if script == "exp5" else script)
    nope = ["--data-dir", str(tmp_path / "nope")]
    for argv, option in [(["--epochs", "0"], "--epochs"), (["--device", "foo"], "--device")]:
        one_line_error(lambda a=argv: mod.main([*a, *nope]), option, exc=ConfigError)


@pytest.mark.parametrize("script", ["llm_item_enrichment", "llm_reranker"])
def test_bad_llm_backend_fails_before_data(tmp_path, monkeypatch, script):
    import importlib

    mod = importlib.import_module(script)
    nope = ["--data-dir", str(tmp_path / "nope")]
    monkeypatch.setenv("LLM_BACKEND", "foo")
    one_line_error(lambda: mod.main(nope), "LLM_BACKEND", "foo", "auto", exc=ConfigError)
    monkeypatch.delenv("LLM_BACKEND")
    with pytest.raises(SystemExit):  # --llm foo: argparse's own usage error (exit 2)
        mod.main(["--llm", "foo", *nope])


def test_non_gguf_local_model_fails_before_data(tmp_path, monkeypatch):
    """A local model file that is not GGUF is refused before the data loads (a missing
    --data-dir would otherwise be the error), whether named by --llm-model or the env."""
    import llm_user_narration

    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    nope = ["--data-dir", str(tmp_path / "nope")]
    run = lambda *a: llm_user_narration.main(["--llm", "local", *a, *nope])
    one_line_error(lambda: run("--llm-model", str(fake)), "not a GGUF file", exc=ConfigError)
    monkeypatch.setenv("LLM_LOCAL_MODEL", str(fake))
    one_line_error(lambda: run(), "LLM_LOCAL_MODEL", "not a GGUF file", exc=ConfigError)


@pytest.mark.parametrize("text", ["faiss@0", "faiss@0+bought", "faiss@20+bought0"])
def test_bad_candidate_settings(tmp_path, text):
    one_line_error(lambda: reranking.CandidateConfig.parse(text), text, exc=ConfigError)
    nope = ["--data-dir", str(tmp_path / "nope")]
    one_line_error(lambda: two_tower.main(["--candidates", text, *nope]), text, exc=ConfigError)


def test_empty_candidates_with_rankers(tmp_path):
    nope = ["--data-dir", str(tmp_path / "nope")]
    one_line_error(
        lambda: two_tower.main(["--candidates", ",", *nope]), "--candidates", exc=ConfigError
    )
    one_line_error(
        lambda: two_tower.main(["--candidates", ",", "--rankers", "none", *nope]), "nope"
    )


def test_tower_config_rejects_zero_epochs():
    """The API too: a TowerConfig that would train nothing is refused."""
    for bad in [{"epochs": 0}, {"batch_size": 1}, {"lr": 0.0}, {"temperature": -1.0}]:
        one_line_error(lambda b=bad: common.TowerConfig(**b), next(iter(bad)), exc=ConfigError)


def test_script_bad_option_is_one_line_exit_2_nothing_written(tmp_path):
    out = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, "two_tower.py", "--epochs", "0", "--out", str(out), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "INSTACART_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --epochs"), p.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------
# saved towers: loading executes nothing
class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "payload ran"))


def test_planted_tower_never_runs(small_sample_dir, tmp_path, capsys):
    ds = common.load_dataset(small_sample_dir, n_users=100, n_items=300, verbose=False)
    split = common.split_interactions(ds.interactions)
    feats = common.build_features(ds, split.train)
    cfg = common.TowerConfig(epochs=1, batch_size=256, hidden=16, dim=8)
    a = common.train_two_tower(ds, split, feats, cfg, progress=False)
    path = a.loaded_from or next((config.CACHE_DIR / "two_tower").glob("*/model.pt"))
    # the real state is plain: it loads with weights_only=True
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"user_tower", "item_tower", "training_log"}
    marker = tmp_path / "marker"
    torch.save({"user_tower": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):  # what the old load would have run
        torch.load(path, weights_only=True)
    b = common.train_two_tower(ds, split, feats, cfg, progress=False)
    assert not marker.exists(), "the planted payload ran"
    assert b.loaded_from is None  # trained again, and said so in one line
    assert "model.pt" in capsys.readouterr().err
    c = common.train_two_tower(ds, split, feats, cfg, progress=False)  # the retrained save
    assert c.loaded_from is not None and not marker.exists()
