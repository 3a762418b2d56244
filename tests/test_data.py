"""Tests of the data layer in common.py: loading + validation, sampling, the data
cache, the split and the features (above all: held-out rows never reach a feature).

The generated sample and the real folder ($INSTACART_DATA_DIR, skipped when unset) are
read through the same code, load_dataset(data_dir=...). Every test writes its cache
into a temp dir, never into the repo's data/.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

from conftest import real_data_dir, with_held_out_rows_altered

import common
import config
import instacart
import text as T
from common import ConfigError, DataError


# ----------------------------------------------------------------------------
# fixtures
@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    """Every test caches into its own temp dir."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(config, "CACHE_DIR", cache)
    return cache


@pytest.fixture(scope="session")
def gen_dir(small_sample_dir) -> Path:
    return small_sample_dir


@pytest.fixture(params=["generated", "real"])
def data_dir(request, gen_dir) -> Path:
    """The generated sample, then the real folder: the same tests for both."""
    return gen_dir if request.param == "generated" else real_data_dir()


def load(data_dir, **kw) -> common.Dataset:
    kw.setdefault("use_cache", False)
    return common.load_dataset(data_dir, verbose=False, **kw)


@pytest.fixture(scope="session")
def gen_ds(gen_dir) -> common.Dataset:
    """A sampled dataset of the generated sample, for split / feature tests."""
    return common.load_dataset(gen_dir, n_users=200, n_items=800, use_cache=False, verbose=False)


def raw_rows(data_dir: Path) -> pd.DataFrame:
    """Prior rows joined to their prior orders, by plain pandas (a reference for load_dataset)."""
    orders = pd.read_csv(data_dir / "orders.csv", usecols=["order_id", "user_id", "eval_set"])
    prior = pd.read_csv(data_dir / "order_products__prior.csv", usecols=["order_id", "product_id"])
    return prior.merge(orders[orders.eval_set == "prior"], on="order_id")


# ----------------------------------------------------------------------------
# bad input: every problem is one line naming the file and the problem
TINY = {
    "orders.csv": "order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day,"
    "days_since_prior_order\n"
    "1,1,prior,1,0,10,\n2,1,prior,2,1,11,7.0\n"
    "3,2,prior,1,2,12,\n4,2,train,2,3,13,5.0\n",
    "order_products__prior.csv": "order_id,product_id,add_to_cart_order,reordered\n"
    "1,1,1,0\n1,2,2,0\n2,1,1,1\n3,3,1,0\n",
    "products.csv": "product_id,product_name,aisle_id,department_id\n"
    "1,Milk,1,1\n2,Bread,2,1\n3,Eggs,1,2\n",
    "aisles.csv": "aisle_id,aisle\n1,dairy\n2,bakery\n",
    "departments.csv": "department_id,department\n1,food\n2,other\n",
}


def tiny_dir(tmp_path: Path, **replace) -> Path:
    """A valid 2-user Kaggle folder; keyword args replace a file's text (None: delete it)."""
    d = tmp_path / "tiny"
    d.mkdir(exist_ok=True)
    for name, text in TINY.items():
        text = replace.get(name.replace(".csv", "").replace("__", "_"), text)
        if text is not None:
            (d / name).write_text(text)
    return d


def one_line_error(fn, *fragments, exc=DataError) -> str:
    with pytest.raises(exc) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def test_tiny_folder_loads(tmp_path):
    ds = load(tiny_dir(tmp_path), full=True)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 3, 4)
    assert ds.items["product_id"].tolist() == [1, 2, 3]  # by purchases, ties by product_id
    assert ds.interactions["user"].tolist() == [0, 0, 0, 1]


PRIOR_HEAD = "order_id,product_id,add_to_cart_order,reordered\n"
PRODUCTS_HEAD = "product_id,product_name,aisle_id,department_id\n"
ORDERS_NO_DAYS = (
    "order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day\n1,1,prior,1,0,1\n"
)


@pytest.mark.parametrize(
    "case, fragments",
    [
        ({"products": None}, ["products.csv", "file not found"]),
        ({"orders": ORDERS_NO_DAYS}, ["orders.csv", "missing column", "days_since_prior_order"]),
        (
            {"aisles": "aisle_id,aisle_name\n1,dairy\n2,bakery\n"},  # misnamed column
            ["aisles.csv", "missing column", "aisle", "aisle_name"],
        ),
        (
            {"order_products_prior": PRIOR_HEAD + "1,x1,1,0\n"},  # non-numeric id
            ["order_products__prior.csv", "product_id", "x1"],
        ),
        (
            {"order_products_prior": PRIOR_HEAD + "1,1,1,0\n99,2,1,0\n"},
            ["order_products__prior.csv", "unknown order_id", "99", "orders.csv"],
        ),
        (
            {"order_products_prior": PRIOR_HEAD + "1,1,1,0\n1,77,2,0\n"},
            ["order_products__prior.csv", "unknown product_id", "77", "products.csv"],
        ),
        (
            {"products": PRODUCTS_HEAD + "1,Milk,1,1\n2,Bread,9,1\n3,Eggs,1,2\n"},
            ["products.csv", "unknown aisle_id", "9", "aisles.csv"],
        ),
        (
            {"products": PRODUCTS_HEAD + "1,Milk,1,1\n2,Bread,2,1\n2,Eggs,1,2\n"},
            ["products.csv", "duplicated product_id"],
        ),
        ({"departments": "department_id,department\n"}, ["departments.csv", "no rows"]),
        ({"departments": ""}, ["departments.csv", "missing column"]),  # 0 bytes
        (
            {"orders": TINY["orders.csv"].replace(",prior,", ",train,")},  # no prior order at all
            ["order_products__prior.csv", "orders.csv", "no prior-order rows"],
        ),
        (
            {"order_products_prior": PRIOR_HEAD + "1,1,1,0\n1,,2,0\n"},  # empty id
            ["order_products__prior.csv", "1 empty 'product_id'"],
        ),
        (
            {"orders": TINY["orders.csv"].replace("3,2,prior,1,2,12,", ",2,prior,1,2,12,")},
            ["orders.csv", "1 empty 'order_id'"],
        ),
        (
            {"orders": TINY["orders.csv"].replace("4,2,train,", "2,2,train,")},  # order 2 twice
            ["orders.csv", "duplicated order_id"],
        ),
        (
            {"products": PRODUCTS_HEAD + "1,Milk,1,1\n2,Bread,2,1\n3,Eggs,1,9\n"},
            ["products.csv", "unknown department_id", "9", "departments.csv"],
        ),
        (
            {"orders": TINY["orders.csv"].replace("4,2,train,", "4,2,Train,")},  # not a silent drop
            ["orders.csv", "1 row(s) with eval_set 'Train'", "prior, train, test"],
        ),
        (
            {"orders": TINY["orders.csv"].replace("2,1,prior,2,1,11,7.0", "2,1,prior,2,1,11,-7.0")},
            ["orders.csv", "1 row(s) with negative days_since_prior_order", "-7"],
        ),
    ],
    ids=[
        "missing-file",
        "missing-column",
        "misnamed-column",
        "non-numeric-id",
        "unknown-order",
        "unknown-product",
        "unknown-aisle",
        "duplicate-product",
        "header-only",
        "zero-bytes",
        "empty-sample",
        "empty-product-id",
        "empty-order-id",
        "duplicate-order",
        "unknown-department",
        "bad-eval-set",
        "negative-days",
    ],
)
def test_bad_input_is_one_line(tmp_path, case, fragments):
    d = tiny_dir(tmp_path, **case)
    one_line_error(lambda: load(d, full=True), *fragments)


def test_bad_options_are_one_line(tmp_path):
    d = tiny_dir(tmp_path)
    one_line_error(lambda: load(tmp_path / "nope"), "nope", "data directory not found")
    cfg = {"exc": ConfigError}  # a bad option is a configuration error, not a data one
    one_line_error(lambda: load(d, n_users=0), "n_users", "positive", "0", **cfg)
    one_line_error(lambda: load(d, n_users=-5), "n_users", "positive", "-5", **cfg)
    one_line_error(
        lambda: load(d, user_sampling="loudest"), "unknown user sampling", "loudest", **cfg
    )
    ds = load(d, full=True)
    one_line_error(
        lambda: common.split_interactions(ds.interactions, "weekly"),
        "unknown split",
        "weekly",
        **cfg,
    )
    one_line_error(lambda: common.split_interactions(ds.interactions.iloc[:0]), "empty")


def compress(d: Path, name: str, how: str, extra_member: bool = False):
    """Replace d/name by d/name.zip or d/name.gz holding the same text."""
    text = (d / name).read_bytes()
    (d / name).unlink()
    if how == "gz":
        (d / f"{name}.gz").write_bytes(gzip.compress(text))
    else:
        with zipfile.ZipFile(d / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(name, text)
            if extra_member:  # what a zip made on macOS carries
                z.writestr(f"__MACOSX/._{name}", b"\x00\x05junk")


def test_zip_and_gz_files_are_read_directly(tmp_path, gen_dir):
    """Kaggle ships name.csv.zip; .csv.gz is common too: both read without unpacking."""
    plain = load(tiny_dir(tmp_path), full=True)
    d = tmp_path / "packed"
    shutil.copytree(tiny_dir(tmp_path), d)
    compress(d, "orders.csv", "zip", extra_member=True)
    compress(d, "order_products__prior.csv", "gz")
    compress(d, "products.csv", "zip")
    packed = load(d, full=True)
    pd.testing.assert_frame_equal(plain.interactions, packed.interactions)
    pd.testing.assert_frame_equal(plain.items, packed.items)
    # the same on the generated sample (occasions file included), and through the cache
    g = tmp_path / "gen"
    shutil.copytree(gen_dir, g)
    for name in [*common.SCHEMA, common.OCCASIONS_FILE]:
        compress(g, name, "zip" if "order" in name else "gz")
    a, b = load(gen_dir, n_users=50, n_items=300), load(g, n_users=50, n_items=300, use_cache=True)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.occasions, b.occasions)
    # a changed zip changes the cache key (name, size and mtime of the file actually read)
    zp = g / "orders.csv.zip"
    st = zp.stat()
    os.utime(zp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load(g, n_users=50, n_items=300, use_cache=True).key != b.key
    # broken or ambiguous archives are one-line errors naming the file
    (d / "aisles.csv").unlink()
    (d / "aisles.csv.zip").write_bytes(b"not a zip")
    one_line_error(lambda: load(d, full=True), "aisles.csv.zip", "zip")
    (d / "aisles.csv.zip").unlink()
    with zipfile.ZipFile(d / "aisles.csv.zip", "w") as z:
        z.writestr("a.csv", "aisle_id,aisle\n1,x\n")
        z.writestr("b.csv", "aisle_id,aisle\n1,x\n")
    one_line_error(lambda: load(d, full=True), "aisles.csv.zip", "one .csv", "found 2")
    (d / "aisles.csv.zip").unlink()
    (d / "aisles.csv.gz").write_bytes(gzip.compress(b"aisle_id,aisle\n1,dairy\n2,bakery\n")[:-12])
    one_line_error(lambda: load(d, full=True), "aisles.csv.gz")
    (d / "aisles.csv.gz").unlink()
    one_line_error(lambda: load(d, full=True), "aisles.csv", "file not found", ".zip", ".gz")


def test_script_error_is_one_line_exit_2():
    code = (
        "import common, experiment; "
        "experiment.main_guard(lambda: common.load_dataset('/nonexistent'))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "/nonexistent" in lines[0] and "Traceback" not in p.stderr


# ----------------------------------------------------------------------------
# sampling (generated and real folders alike)
def test_sampling_is_deterministic(data_dir):
    a = load(data_dir, n_users=60, n_items=400, seed=7)
    b = load(data_dir, n_users=60, n_items=400, seed=7)
    c = load(data_dir, n_users=60, n_items=400, seed=8)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert not np.array_equal(a.user_ids, c.user_ids)


def test_heaviest_and_random_users(data_dir):
    raw = raw_rows(data_dir)
    per_user = raw.groupby("user_id").size().reset_index(name="n")
    expected = per_user.sort_values(["n", "user_id"], ascending=[False, True]).user_id[:50]
    n_products = raw.product_id.nunique()  # keep every product: no user can drop out
    heavy = load(data_dir, n_users=50, n_items=n_products, user_sampling="heaviest")
    rand = load(data_dir, n_users=50, n_items=n_products, user_sampling="random")
    assert set(heavy.user_ids) == set(expected)
    assert len(rand.user_ids) == 50 and set(rand.user_ids) != set(heavy.user_ids)
    assert len(heavy.interactions) == per_user.n.nlargest(50).sum() > len(rand.interactions)


def test_items_are_the_most_purchased_among_chosen_users(data_dir):
    ds = load(data_dir, n_users=40, n_items=100, user_sampling="heaviest")
    raw = raw_rows(data_dir)
    per_user = raw.groupby("user_id").size().reset_index(name="n")
    chosen = per_user.sort_values(["n", "user_id"], ascending=[False, True]).user_id[:40]
    counts = raw[raw.user_id.isin(chosen)].groupby("product_id").size().reset_index(name="n")
    top = counts.sort_values(["n", "product_id"], ascending=[False, True]).product_id[:100]
    assert ds.items["product_id"].tolist() == top.tolist()  # in order: index 0 most bought
    assert ds.interactions["item"].between(0, ds.n_items - 1).all()
    kept = raw[raw.user_id.isin(chosen) & raw.product_id.isin(top)]
    got = pd.DataFrame(
        {
            "order_id": ds.interactions["order_id"].to_numpy(np.int64),
            "product_id": ds.items["product_id"].to_numpy(np.int64)[ds.interactions["item"]],
        }
    )
    want = kept[["order_id", "product_id"]].astype(np.int64)
    pd.testing.assert_frame_equal(
        got.sort_values([*got]).reset_index(drop=True),
        want.sort_values([*want]).reset_index(drop=True),
    )


def test_item_and_user_indices_map_back_to_the_source(data_dir):
    ds = load(data_dir, n_users=80, n_items=300, seed=3)
    raw = raw_rows(data_dir)
    got = pd.DataFrame(
        {
            "order_id": ds.interactions["order_id"],
            "user_id": ds.user_ids[ds.interactions["user"]],
            "product_id": ds.items["product_id"].to_numpy()[ds.interactions["item"]],
        }
    )
    merged = got.merge(raw, on=["order_id", "product_id"], how="left", suffixes=("", "_raw"))
    assert len(merged) == len(got) and (merged.user_id == merged.user_id_raw).all()
    inter = ds.interactions
    keys = inter[["user", "order_number", "add_to_cart_order"]].to_numpy()
    assert (np.diff(keys[:, 0]) >= 0).all()  # sorted by user, then order
    same_user = np.diff(keys[:, 0]) == 0
    assert (np.diff(keys[:, 1])[same_user] >= 0).all()


@pytest.mark.parametrize("layout", ["orders-reversed", "rows-shuffled"])
def test_row_layout_does_not_matter(gen_dir, tmp_path, layout):
    """Kaggle files list each order's rows together in cart order, and the loader puts whole
    orders in place; any other layout takes a full sort. Both must give the same rows."""
    d = tmp_path / layout
    shutil.copytree(gen_dir, d)
    prior = pd.read_csv(d / "order_products__prior.csv")
    if layout == "orders-reversed":  # orders in another sequence, each still in one piece
        prior = prior.sort_values(["order_id", "add_to_cart_order"], ascending=[False, True])
    else:
        prior = prior.sample(frac=1.0, random_state=0)
    prior.to_csv(d / "order_products__prior.csv", index=False)
    for kw in ({"full": True}, {"n_users": 70, "n_items": 300}):
        a, b = load(gen_dir, **kw), load(d, **kw)
        pd.testing.assert_frame_equal(a.interactions, b.interactions)
        pd.testing.assert_frame_equal(a.items, b.items)


def test_full_mode_keeps_everything(data_dir):
    ds = load(data_dir, full=True)
    raw = raw_rows(data_dir)
    assert len(ds.interactions) == len(raw)
    assert ds.n_users == raw.user_id.nunique() and ds.n_items == raw.product_id.nunique()
    assert ds.sampling == {"mode": "full"}
    assert ds.items[["aisle", "department"]].notna().all().all()


# ----------------------------------------------------------------------------
# the data cache (Arrow IPC files under CACHE_DIR)
def test_cache_hit_returns_identical_frames(gen_dir, tmp_cache, monkeypatch):
    a = common.load_dataset(gen_dir, n_users=50, n_items=300, verbose=False)
    assert (tmp_cache / a.key / "meta.json").is_file()

    def no_csv(*_):
        raise AssertionError("the CSVs were read again: the cache was not used")

    monkeypatch.setattr(instacart, "read_kaggle_dir", no_csv)
    b = common.load_dataset(gen_dir, n_users=50, n_items=300, verbose=False)
    assert b.key == a.key
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.occasions, b.occasions)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    assert (a.n_aisles, a.n_departments) == (b.n_aisles, b.n_departments)
    assert a.summary() | {"load_seconds": 0} == b.summary() | {"load_seconds": 0}


def test_cache_is_never_stale(gen_dir, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(gen_dir, d)
    a = common.load_dataset(d, full=True, verbose=False)
    # an option changes the key
    b = common.load_dataset(d, n_users=30, n_items=200, verbose=False)
    c = common.load_dataset(d, n_users=31, n_items=200, verbose=False)
    assert len({a.key, b.key, c.key}) == 3 and b.n_users == 30 and c.n_users == 31
    # a rewritten source file changes the key, and the rows are read afresh
    prior = d / "order_products__prior.csv"
    lines = prior.read_text().splitlines(keepends=True)
    first = lines[1].split(",")
    assert first[3].strip() in ("0", "1")
    lines[1] = ",".join(first[:3] + ["1\n" if first[3].strip() == "0" else "0\n"])
    prior.write_text("".join(lines[:-1]))  # one row flipped, the last row dropped
    st = prior.stat()
    os.utime(prior, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    a2 = common.load_dataset(d, full=True, verbose=False)
    assert a2.key != a.key
    assert len(a2.interactions) == len(a.interactions) - 1
    assert a2.interactions["reordered"].sum() != a.interactions["reordered"].sum()


# ----------------------------------------------------------------------------
# the split
def test_interaction_split(gen_ds):
    inter = gen_ds.interactions
    n = len(inter)
    s = common.split_interactions(inter, "interaction", seed=42)
    assert len(s.test) == round(0.2 * n) and len(s.train) + len(s.test) == n
    s2 = common.split_interactions(inter, "interaction", seed=42)
    s3 = common.split_interactions(inter, "interaction", seed=43)
    pd.testing.assert_frame_equal(s.test, s2.test)
    assert not s.test.equals(s3.test)
    check_truth(s)


def test_temporal_split_holds_out_each_users_last_order(gen_ds):
    inter = gen_ds.interactions
    s = common.split_interactions(inter, "temporal")
    last = inter.groupby("user")["order_number"].max()
    first = inter.groupby("user")["order_number"].min()
    held = s.test.groupby("user")["order_number"].agg(["min", "max", "size"])
    multi = last[last > first].index
    assert set(held.index) == set(multi)
    assert (held["min"] == last[held.index]).all() and (held["max"] == last[held.index]).all()
    assert (
        held["size"]
        == (inter.order_number == inter.user.map(last)).groupby(inter.user).sum()[held.index]
    ).all()
    assert (s.train.groupby("user")["order_number"].max()[held.index] < last[held.index]).all()
    assert len(s.train) + len(s.test) == len(inter)
    check_truth(s)


def check_truth(s: common.Split):
    expected = s.test.groupby("user")["item"].apply(lambda x: sorted(set(x))).to_dict()
    assert set(s.truth) == set(expected)
    for u, items in s.truth.items():
        assert list(items) == expected[u]
    np.testing.assert_array_equal(s.eval_users(), sorted(expected))


# ----------------------------------------------------------------------------
# THE LEAKAGE TEST: held-out rows never reach a feature
def assert_features_equal(a: common.Features, b: common.Features):
    for name in (
        "user",
        "item",
        "item_aisle",
        "item_dept",
        "bought_indptr",
        "bought_items",
        "bought_counts",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    assert a.user_names == b.user_names and a.item_names == b.item_names
    assert a.item_text == b.item_text


def features_differ(a: common.Features, b: common.Features) -> bool:
    try:
        assert_features_equal(a, b)
    except AssertionError:
        return True
    return False


@pytest.mark.parametrize("mode", ["interaction", "temporal"])
def test_held_out_rows_change_no_feature(data_dir, mode):
    """The leakage test. Held-out rows are altered INSIDE the dataset (the only route a
    feature could read them by): no user, item or pair feature may move. Controls: the
    alteration reaches the training rows' Kaggle reorder flags (interaction split), and
    altering one training row does move a feature, so the test can fail."""
    ds = load(data_dir, n_users=150, n_items=600, seed=5)
    base, alt, held = with_held_out_rows_altered(ds, mode)
    base_split = common.split_interactions(base.interactions, mode)
    alt_split = common.split_interactions(alt.interactions, mode)
    assert len(alt_split.test) == len(held)
    np.testing.assert_array_equal(alt_split.test["order_id"], base.interactions["order_id"][held])
    if mode == "interaction":
        # Kaggle's flag on TRAINING rows changed: a feature reading it would leak
        assert (base_split.train["reordered"] != alt_split.train["reordered"]).any()
    base_f = common.build_features(base, base_split.train)
    assert_features_equal(base_f, common.build_features(alt, alt_split.train))

    # control: altering one TRAINING row does change the features (the test can fail)
    train_rows = np.setdiff1d(np.arange(len(ds.interactions)), held)
    ctl = base.interactions.copy()
    r = train_rows[len(train_rows) // 2]
    ctl.loc[r, "item"] = (ctl.loc[r, "item"] + 1) % ds.n_items
    ctl_ds = dataclasses.replace(ds, interactions=ctl)
    assert features_differ(
        base_f, common.build_features(ctl_ds, common.split_interactions(ctl, mode).train)
    )


def test_reorder_rates_ignore_kaggles_flag():
    """Kaggle's flag says 'bought before' over the whole history; a training row whose only
    earlier purchase was held out must count as a first purchase in the reorder rates."""
    nan = float("nan")
    ds = tiny_dataset(
        [(0, 0, 1, 1, 0, nan), (0, 0, 2, 1, 1, 7.0), (0, 1, 2, 2, 0, 7.0), (0, 1, 3, 1, 1, 5.0)]
    )
    train = ds.interactions.iloc[1:]  # the first purchase of item 0 is held out
    np.testing.assert_array_equal(common.reordered_in_rows(train), [0, 0, 1])
    np.testing.assert_array_equal(common.reordered_in_rows(ds.interactions), [0, 1, 0, 1])
    f = common.build_features(ds, train)
    assert f.user[0, f.user_names.index("reorder_rate")] == pytest.approx(1 / 3)  # Kaggle: 2/3
    assert f.item[0, f.item_names.index("item_reorder_rate")] == pytest.approx(0.0)  # Kaggle: 1
    assert f.item[1, f.item_names.index("item_reorder_rate")] == pytest.approx(0.5)


# ----------------------------------------------------------------------------
# features
def test_feature_shapes_and_values(gen_ds):
    s = common.split_interactions(gen_ds.interactions)
    f = common.build_features(gen_ds, s.train)
    U, I = gen_ds.n_users, gen_ds.n_items
    n_dept, n_aisle = gen_ds.n_departments + 1, gen_ds.n_aisles + 1
    assert f.user.shape == (U, 8 + n_dept + n_aisle) == (U, len(f.user_names))
    assert f.item.shape == (I, 5) == (I, len(f.item_names))
    assert f.user.dtype == f.item.dtype == np.float32
    assert np.isfinite(f.user).all() and np.isfinite(f.item).all()
    assert np.isfinite(f.pairs[common.PAIR_COLUMNS].to_numpy()).all()
    assert len(f.item_text) == I and f.item_aisle.shape == f.item_dept.shape == (I,)
    has_rows = np.bincount(s.train["user"], minlength=U) > 0
    dept = f.user[:, 8 : 8 + n_dept]
    aisle = f.user[:, 8 + n_dept :]
    np.testing.assert_allclose(dept[has_rows].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(aisle[has_rows].sum(1), 1.0, atol=1e-5)
    # pairs: one row per distinct training (user, item), sorted; bought_* matches the pairs
    distinct = s.train.drop_duplicates(["user", "item"])
    assert len(f.pairs) == len(distinct)
    keys = f.pairs[["user", "item"]].to_numpy()
    assert (np.lexsort((keys[:, 1], keys[:, 0])) == np.arange(len(keys))).all()
    items, counts = f.bought(int(keys[0, 0]))
    assert items[0] == keys[0, 1] and counts[0] == f.pairs["ui_count"].iloc[0]
    assert ((f.pairs["ui_share"] > 0) & (f.pairs["ui_share"] <= 1)).all()


def tiny_dataset(rows: list[tuple]) -> common.Dataset:
    """A hand-built Dataset: rows of (user, item, order_number, cart, reordered, days)."""
    inter = pd.DataFrame(
        rows,
        columns=[
            "user",
            "item",
            "order_number",
            "add_to_cart_order",
            "reordered",
            "days_since_prior_order",
        ],
    )
    inter["order_id"] = inter["user"] * 100 + inter["order_number"]
    inter["order_dow"], inter["order_hour_of_day"] = 0, 10
    items = pd.DataFrame(
        {
            "product_id": [11, 12, 13],
            "product_name": ["Milk", "Bread", "Eggs"],
            "aisle_id": [1, 2, 1],
            "aisle": ["dairy", "bakery", "dairy"],
            "department_id": [1, 1, 2],
            "department": ["food", "food", "other"],
        }
    )
    return common.Dataset(
        inter,
        items,
        np.array([1, 2]),
        n_aisles=2,
        n_departments=2,
        source="hand-built",
        sampling={"mode": "full"},
    )


def test_pair_features_by_hand():
    nan = float("nan")
    # user 0: four orders (days since prior: -, 7, 10, 5); item 0 in orders 1, 3, 4;
    # item 1 in orders 1, 2; item 2 never. User 1: one order with items 2 and 0.
    ds = tiny_dataset(
        [
            (0, 0, 1, 1, 0, nan),
            (0, 1, 1, 2, 0, nan),
            (0, 1, 2, 1, 1, 7.0),
            (0, 0, 3, 2, 1, 10.0),
            (0, 0, 4, 3, 1, 5.0),
            (1, 2, 1, 1, 0, nan),
            (1, 0, 1, 2, 0, nan),
        ]
    )
    f = common.build_features(ds, ds.interactions)
    p = f.pairs.set_index(["user", "item"])
    assert list(p.index) == [(0, 0), (0, 1), (1, 0), (1, 2)]
    exp = {  # count, share, orders_since_last, streak, rate_since_first, mean_cart, days_since
        (0, 0): (3, 3 / 4, 0, 2, 3 / 4, 2.0, 0.0),
        (0, 1): (2, 2 / 4, 2, 0, 2 / 4, 1.5, 15.0),
        (1, 0): (1, 1.0, 0, 1, 1.0, 2.0, 0.0),
        (1, 2): (1, 1.0, 0, 1, 1.0, 1.0, 0.0),
    }
    for key, values in exp.items():
        np.testing.assert_allclose(
            p.loc[key, common.PAIR_COLUMNS].to_numpy(float), values, rtol=1e-6, err_msg=str(key)
        )
    items, counts = f.bought(0)
    assert items.tolist() == [0, 1] and counts.tolist() == [3, 2]
    # user features: 4 orders, 5 rows; dept shares: user 0 bought 3 dept-1 rows... of items
    # 0 (dept 1) x3 and 1 (dept 1) x2 -> all department 1
    names = f.user_names
    assert f.user[0, names.index("log_orders")] == pytest.approx(np.log1p(4))
    assert f.user[0, names.index("log_rows")] == pytest.approx(np.log1p(5))
    assert f.user[0, names.index("reorder_rate")] == pytest.approx(3 / 5)
    assert f.user[0, names.index("dept_share_1")] == pytest.approx(1.0)
    assert f.user[1, names.index("dept_share_1")] == pytest.approx(0.5)
    assert f.user[1, names.index("aisle_share_1")] == pytest.approx(1.0)
    assert f.item[0, f.item_names.index("log_pop")] == pytest.approx(np.log1p(4))
    assert f.item[0, f.item_names.index("log_buyers")] == pytest.approx(np.log1p(2))
    assert f.item_text == T.item_template_texts(ds) and f.item_text[0] == "Milk. dairy. food."


def test_user_and_item_features_by_hand():
    """Every user and item feature on a hand-made history, with one purchase of order 1 and
    the whole of order 2 held out (what build_features must not see)."""
    nan = float("nan")
    ds = tiny_dataset(
        [
            (0, 0, 1, 1, 0, nan),
            (0, 1, 1, 2, 0, nan),  # order 1: item 0 held out, item 1 kept
            (0, 1, 2, 1, 1, 7.0),  # order 2: held out
            (0, 0, 3, 2, 1, 10.0),
            (0, 0, 4, 3, 1, 5.0),
            (1, 2, 1, 1, 0, nan),
            (1, 0, 1, 2, 0, nan),
        ]
    )
    train = ds.interactions.drop(index=[0, 2])
    f = common.build_features(ds, train)
    user = dict(zip(f.user_names, f.user[0].astype(float)))
    # user 0 in training: orders 1, 3, 4 (gaps -, 10, 5 days); rows: item 1, item 0, item 0
    assert user["log_orders"] == pytest.approx(np.log1p(3))
    assert user["log_rows"] == pytest.approx(np.log1p(3))
    assert user["log_basket"] == pytest.approx(np.log1p(3 / 3))
    assert user["reorder_rate"] == pytest.approx(1 / 3)  # only order 4's item 0
    assert user["gap_mean"] == pytest.approx(7.5 / 30)  # mean(10, 5); order 1 has none
    assert user["gap_std"] == pytest.approx(np.sqrt(12.5) / 30)  # sample std (ddof 1)
    assert user["variety"] == pytest.approx(2 / 3)  # 2 distinct items / 3 rows
    assert user["log_distinct"] == pytest.approx(np.log1p(2))
    assert user["dept_share_1"] == pytest.approx(1.0) and user["aisle_share_1"] == pytest.approx(
        2 / 3
    )
    user1 = dict(zip(f.user_names, f.user[1].astype(float)))
    assert user1["log_basket"] == pytest.approx(np.log1p(2))
    assert user1["gap_mean"] == pytest.approx(15 / 30)  # no gap known: 15 days
    assert user1["gap_std"] == 0.0 and user1["reorder_rate"] == 0.0
    assert user1["variety"] == pytest.approx(1.0)
    exp = {  # item: log_pop, log_buyers, item_reorder_rate, log_mean_cart, buys_per_buyer
        0: (np.log1p(3), np.log1p(2), 1 / 3, np.log1p(7 / 3), 3 / 2),  # carts 2, 3 (u0), 2 (u1)
        1: (np.log1p(1), np.log1p(1), 0.0, np.log1p(2), 1.0),  # order 2's row held out
        2: (np.log1p(1), np.log1p(1), 0.0, np.log1p(1), 1.0),
    }
    assert f.item_names == [
        "log_pop",
        "log_buyers",
        "item_reorder_rate",
        "log_mean_cart",
        "buys_per_buyer",
    ]
    for item, values in exp.items():
        np.testing.assert_allclose(f.item[item], values, rtol=1e-6, err_msg=str(item))
    # an item nobody bought in training: zeros, not NaN
    ds3 = tiny_dataset([(0, 0, 1, 1, 0, nan)])
    np.testing.assert_array_equal(common.build_features(ds3, ds3.interactions).item[2], 0.0)
