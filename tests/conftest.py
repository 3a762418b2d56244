"""Shared fixtures (one small generated sample per test session) and helpers."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import common
import sample_generator as sg


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
