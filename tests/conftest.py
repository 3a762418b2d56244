"""Shared fixtures (one small generated sample per test session) and helpers."""

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_anthropic import FakeAnthropic

import common
import config
import llm
import sample_generator as sg
import text as T

FAKE_KEY = "sk-ant-test-0123456789"  # what the loopback fake server accepts; not a real key


@pytest.fixture(scope="session")
def small_sample_dir(tmp_path_factory) -> Path:
    """A 300-user x 1,500-product generated sample in Kaggle layout (seed 1)."""
    return sg.generate(
        tmp_path_factory.mktemp("gen") / "sample",
        n_users=300,
        n_products=1500,
        seed=1,
        progress=False,
    )


def small_run_argv(data_dir, *extra) -> list[str]:
    """An experiment script at its smallest on `data_dir` (300 users, 600 items, one seed,
    one thread, no progress bars, no TIFU-KNN), then `extra` options."""
    return [
        *("--data-dir", str(data_dir), "--users", "300", "--items", "600"),
        *("--seeds", "1", "--threads", "1", "--quiet", "--no-tifu"),
        *extra,
    ]


def real_data_dir() -> Path:
    """The real Kaggle-format folder named by $INSTACART_DATA_DIR, else skip the test."""
    d = os.environ.get(common.DATA_ENV)
    if not d or not Path(d).is_dir():
        pytest.skip(f"${common.DATA_ENV} is not set to a directory of real Kaggle CSVs")
    return Path(d)


def kaggle_reordered(inter: pd.DataFrame) -> np.ndarray:
    """Kaggle's `reordered` flag over ALL the rows given (a reference written with pandas):
    1 where the user bought the item in an earlier order."""
    first = inter.groupby(["user", "item"])["order_number"].transform("min")
    return (inter["order_number"] > first).to_numpy().astype(inter["reordered"].dtype)


def with_held_out_rows_altered(ds: common.Dataset, mode: str, seed: int = 0):
    """(base, altered, held): `base` is ds with Kaggle-consistent reorder flags; `altered`
    is the same Dataset whose held-out rows (under `mode`) have other items, cart positions,
    days since prior order, weekday and hour, and whose reorder flags are recomputed over the
    whole altered history, as Kaggle computed them. `held` = positions of the held-out rows."""
    inter = ds.interactions.copy()
    inter["reordered"] = kaggle_reordered(inter)
    base = dataclasses.replace(ds, interactions=inter)
    held = np.flatnonzero(
        ~np.isin(
            np.arange(len(inter)),
            common.split_interactions(inter.assign(row=np.arange(len(inter))), mode)
            .train["row"]
            .to_numpy(),
        )
    )
    assert 0 < len(held) < len(inter)
    rng = np.random.default_rng(seed)
    mod = inter.copy()
    item = mod["item"].to_numpy().copy()
    item[held] = (item[held] + rng.integers(1, ds.n_items, len(held))) % ds.n_items
    mod["item"] = item.astype(inter["item"].dtype)
    mod.loc[held, "add_to_cart_order"] = mod.loc[held, "add_to_cart_order"] + 7
    days = mod["days_since_prior_order"].to_numpy().copy()
    days[held] = np.where(np.isnan(days[held]), 4.0, (days[held] + 11.0) % 31.0)  # all differ
    mod["days_since_prior_order"] = days.astype(inter["days_since_prior_order"].dtype)
    mod.loc[held, "order_dow"] = (mod.loc[held, "order_dow"] + 3) % 7
    mod.loc[held, "order_hour_of_day"] = (mod.loc[held, "order_hour_of_day"] + 5) % 24
    mod["reordered"] = kaggle_reordered(mod)
    assert (mod["item"].to_numpy()[held] != inter["item"].to_numpy()[held]).all()
    return base, dataclasses.replace(ds, interactions=mod), held


def hash_embed(texts, batch_size=128, progress=True, cache_dir=None):
    """Stand-in for T.embed_texts in fast tests: a unit vector per text, fixed by its hash."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    out = np.stack(
        [
            np.random.default_rng(
                int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)
            ).standard_normal(384)
            for t in texts
        ]
    )
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fake_llm_env(tmp_path, monkeypatch):
    """An experiment's main() against the loopback fake Anthropic server: a fresh data cache
    and LLM cache under tmp_path, hash embeddings, no .env read. Yields (server, tmp_path)."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(T, "embed_texts", hash_embed)
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    for v in ("LLM_MODEL", "LLM_BACKEND"):
        monkeypatch.delenv(v, raising=False)
    with FakeAnthropic(batch_polls=0) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("LLM_CACHE_PATH", str(tmp_path / "llm.sqlite"))
        yield server, tmp_path
