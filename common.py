"""Shared core of the project: data loading, the split, features, the two-tower
model with its FAISS index, metrics and rankers.

Every script imports this module; it imports no script. Read it top to bottom:
  1. configuration and errors
  2. loading Kaggle-format CSVs (real or generated), validation, sampling, cache
  3. the train/test split (one function for every experiment)
  4. features, computed from training rows only
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# ----------------------------------------------------------------------------
# 1. configuration
SEED = 42                      # the project's one split seed; experiments share it
REPO = Path(__file__).resolve().parent
DATA_ENV = "INSTACART_DATA_DIR"             # a directory of Kaggle CSVs, if set
KAGGLE_DIR = REPO / "data" / "instacart"    # where a real Kaggle download may be unpacked
SAMPLE_DIR = REPO / "data" / "sample"       # where the generated sample is written on first use
CACHE_DIR = REPO / "data" / "cache"         # parquet cache of loaded + sampled data
RESULTS_DIR = REPO / "results"
DEFAULT_USERS, DEFAULT_ITEMS = 5000, 10000
CACHE_VERSION = "1"            # bump when the cached tables' layout or meaning changes


class DataError(Exception):
    """A problem with the input data, reported as one line (no traceback)."""


def main_guard(main):
    """Run a script's main(); turn DataError into a one-line message and exit 2."""
    try:
        return main()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# ----------------------------------------------------------------------------
# 2. loading
# Columns we read from each Kaggle file and the compact dtype each gets.
# order_products__train.csv is not read: the Kaggle release holds items for
# only the 'train' orders (and this repo's real sample only a few of them), so
# every experiment trains and evaluates on prior orders, as the seed project did.
SCHEMA = {
    "orders.csv": {"order_id": pa.int32(), "user_id": pa.int32(), "eval_set": pa.string(),
                   "order_number": pa.int16(), "order_dow": pa.int8(),
                   "order_hour_of_day": pa.int8(), "days_since_prior_order": pa.float32()},
    "order_products__prior.csv": {"order_id": pa.int32(), "product_id": pa.int32(),
                                  "add_to_cart_order": pa.int16(), "reordered": pa.int8()},
    "products.csv": {"product_id": pa.int32(), "product_name": pa.string(),
                     "aisle_id": pa.int16(), "department_id": pa.int16()},
    "aisles.csv": {"aisle_id": pa.int16(), "aisle": pa.string()},
    "departments.csv": {"department_id": pa.int16(), "department": pa.string()},
}
OCCASIONS_FILE = "order_occasions.csv"   # written by the generator only; optional


def read_kaggle_csv(path: Path, columns: dict) -> pa.Table:
    """Read one CSV with pyarrow, checking the file, its header and its types.
    Every problem becomes a one-line DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8", "replace").strip().lstrip("\ufeff")
    found = [c.strip() for c in header.split(",")]
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(found) or 'nothing'})")
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(block_size=64 << 20),
            convert_options=pacsv.ConvertOptions(column_types=columns,
                                                 include_columns=list(columns)))
    except pa.ArrowInvalid as e:
        msg = str(e).splitlines()[0]
        # Arrow names columns by position in the file; give the name instead.
        for i, name in enumerate(found):
            msg = msg.replace(f"column #{i}:", f"column '{name}':")
        raise DataError(f"{path.name}: {msg}") from None
    if table.num_rows == 0:
        raise DataError(f"{path.name}: no rows")
    for name in ("order_id", "user_id", "product_id", "aisle_id", "department_id"):
        if name in columns and table.column(name).null_count:
            raise DataError(f"{path.name}: {table.column(name).null_count} empty '{name}' value(s)")
    return table


def _check_refs(name: str, col: str, values: np.ndarray, known: np.ndarray, target: str):
    bad = ~np.isin(values, known)
    if bad.any():
        raise DataError(f"{name}: {int(bad.sum())} row(s) point at unknown {col} "
                        f"(e.g. {int(values[bad][0])}) not in {target}")


def read_kaggle_dir(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Read and cross-check the five Kaggle files we use (+ occasions if present)."""
    t = {name: read_kaggle_csv(data_dir / name, cols).to_pandas() for name, cols in SCHEMA.items()}
    orders, prior, products = t["orders.csv"], t["order_products__prior.csv"], t["products.csv"]
    if orders["order_id"].duplicated().any():
        raise DataError("orders.csv: duplicated order_id values")
    _check_refs("order_products__prior.csv", "order_id", prior["order_id"].to_numpy(),
                orders["order_id"].to_numpy(), "orders.csv")
    _check_refs("order_products__prior.csv", "product_id", prior["product_id"].to_numpy(),
                products["product_id"].to_numpy(), "products.csv")
    _check_refs("products.csv", "aisle_id", products["aisle_id"].to_numpy(),
                t["aisles.csv"]["aisle_id"].to_numpy(), "aisles.csv")
    _check_refs("products.csv", "department_id", products["department_id"].to_numpy(),
                t["departments.csv"]["department_id"].to_numpy(), "departments.csv")
    if (data_dir / OCCASIONS_FILE).is_file():
        t[OCCASIONS_FILE] = read_kaggle_csv(
            data_dir / OCCASIONS_FILE, {"order_id": pa.int32(), "occasion": pa.string()}).to_pandas()
    return t


def resolve_data_dir(data_dir: str | Path | None = None) -> tuple[Path, str]:
    """Where the CSVs come from, and a label saying so.
    Order: the explicit option, then $INSTACART_DATA_DIR, then data/instacart/ when a
    Kaggle download is there, else the generated sample (written on first use)."""
    if data_dir is None and os.environ.get(DATA_ENV):
        data_dir = os.environ[DATA_ENV]
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: data directory not found")
        return path.resolve(), f"Kaggle-format CSVs in {path}"
    if (KAGGLE_DIR / "orders.csv").is_file():
        return KAGGLE_DIR, f"Kaggle-format CSVs in {KAGGLE_DIR.relative_to(REPO)}"
    import sample_generator as gen  # a shared module, imported only when needed
    if not (SAMPLE_DIR / "orders.csv").is_file():
        print(f"data: generating the built-in sample into {SAMPLE_DIR.relative_to(REPO)} "
              f"({DEFAULT_USERS} users x {DEFAULT_ITEMS} products, seed {SEED})")
        gen.generate(SAMPLE_DIR, n_users=DEFAULT_USERS, n_products=DEFAULT_ITEMS, seed=SEED)
    return SAMPLE_DIR, f"generated sample (sample_generator v{gen.GENERATOR_VERSION})"


@dataclass
class Dataset:
    """Prior-order interactions of the sampled users and items, with compact indices.

    interactions: one row per (order, product); columns user, item (0-based indices),
        order_id, order_number, add_to_cart_order, reordered, order_dow,
        order_hour_of_day, days_since_prior_order, sorted by user, order_number, cart.
    items: indexed by item index: product_id, product_name, aisle_id, aisle,
        department_id, department (items are ordered by purchases among the users).
    user_ids: original user_id of each user index.
    occasions: order_id -> occasion, for the generated sample (else None).
    """
    interactions: pd.DataFrame
    items: pd.DataFrame
    user_ids: np.ndarray
    n_aisles: int
    n_departments: int
    source: str
    sampling: dict
    occasions: pd.DataFrame | None = None
    load_seconds: float = 0.0
    key: str = ""             # identifies source files + sampling; keys saved models

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def summary(self) -> dict:
        return {"source": self.source, "sampling": self.sampling, "users": self.n_users,
                "items": self.n_items, "rows": len(self.interactions),
                "orders": int(self.interactions["order_id"].nunique()),
                "load_seconds": round(self.load_seconds, 2)}


def _cache_key(data_dir: Path, params: dict) -> str:
    """Key the cache on every source file's name, size and mtime plus the sampling
    parameters, so a changed file or option never returns stale rows."""
    stamp = []
    for name in sorted([*SCHEMA, OCCASIONS_FILE]):
        p = data_dir / name
        if p.is_file():
            st = p.stat()
            stamp.append((name, st.st_size, st.st_mtime_ns))
    blob = json.dumps([CACHE_VERSION, str(data_dir), stamp, params], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sample(t: dict, n_users, n_items, user_sampling, full, seed) -> tuple:
    orders, prior = t["orders.csv"], t["order_products__prior.csv"]
    orders = orders[orders["eval_set"] == "prior"].drop(columns="eval_set")
    rows = prior.merge(orders, on="order_id", how="inner", validate="many_to_one")
    if rows.empty:
        raise DataError("no prior-order rows after joining order_products__prior.csv to orders.csv")
    if not full:
        per_user = rows.groupby("user_id").size()
        if user_sampling == "heaviest":
            # most prior item rows first; user_id breaks ties so the choice is deterministic
            order = per_user.reset_index(name="n").sort_values(["n", "user_id"], ascending=[False, True])
            chosen = order["user_id"].to_numpy()[:n_users]
        elif user_sampling == "random":
            ids = np.sort(per_user.index.to_numpy())
            rng = np.random.default_rng(seed)
            chosen = rng.choice(ids, size=min(n_users, len(ids)), replace=False)
        else:
            raise DataError(f"unknown user sampling '{user_sampling}' (random or heaviest)")
        rows = rows[rows["user_id"].isin(chosen)]
        counts = rows.groupby("product_id").size().reset_index(name="n")
        counts = counts.sort_values(["n", "product_id"], ascending=[False, True])
        rows = rows[rows["product_id"].isin(counts["product_id"].to_numpy()[:n_items])]
    if rows.empty:
        raise DataError("the sample is empty: no interactions left after choosing users and items")
    # Items ordered by purchase count (ties by product_id): index 0 is the most popular.
    counts = rows.groupby("product_id").size().reset_index(name="n")
    item_pid = counts.sort_values(["n", "product_id"], ascending=[False, True])["product_id"].to_numpy()
    user_ids = np.sort(rows["user_id"].unique())
    rows = rows.assign(
        user=np.searchsorted(user_ids, rows["user_id"].to_numpy()).astype(np.int32),
        item=pd.Series(np.arange(len(item_pid), dtype=np.int32), index=item_pid)
        .reindex(rows["product_id"].to_numpy()).to_numpy())
    rows = rows.sort_values(["user", "order_number", "add_to_cart_order", "item"], kind="stable")
    cols = ["user", "item", "order_id", "order_number", "add_to_cart_order", "reordered",
            "order_dow", "order_hour_of_day", "days_since_prior_order"]
    inter = rows[cols].reset_index(drop=True)
    items = (pd.DataFrame({"product_id": item_pid})
             .merge(t["products.csv"], on="product_id", how="left")
             .merge(t["aisles.csv"], on="aisle_id", how="left")
             .merge(t["departments.csv"], on="department_id", how="left"))
    items["aisle"] = items["aisle"].fillna("unknown aisle")
    items["department"] = items["department"].fillna("unknown department")
    return inter, items, user_ids


def load_dataset(data_dir: str | Path | None = None, n_users: int = DEFAULT_USERS,
                 n_items: int = DEFAULT_ITEMS, user_sampling: str = "random",
                 full: bool = False, seed: int = SEED, use_cache: bool = True,
                 verbose: bool = True) -> Dataset:
    """Load Kaggle-format CSVs, sample users and items, return a Dataset.

    Sampling: `n_users` users chosen at random (seeded) or heaviest-first (most prior
    item rows), then the `n_items` products most purchased by them; rows on other
    products are dropped. `full=True` keeps every user and product.
    The result is cached as parquet under data/cache/, keyed by source files + options.
    """
    t0 = time.perf_counter()
    path, source = resolve_data_dir(data_dir)
    params = {"n_users": None if full else int(n_users), "n_items": None if full else int(n_items),
              "user_sampling": "all" if full else user_sampling, "full": bool(full),
              "seed": int(seed)}
    if not full and (n_users <= 0 or n_items <= 0):
        raise DataError(f"n_users and n_items must be positive (got {n_users}, {n_items})")
    cache = CACHE_DIR / _cache_key(path, params)
    if use_cache and (cache / "meta.json").is_file():
        meta = json.loads((cache / "meta.json").read_text())
        inter = pq.read_table(cache / "interactions.parquet").to_pandas()
        items = pq.read_table(cache / "items.parquet").to_pandas()
        user_ids = np.load(cache / "user_ids.npy")
        occ = (pq.read_table(cache / "occasions.parquet").to_pandas()
               if (cache / "occasions.parquet").is_file() else None)
    else:
        t = read_kaggle_dir(path)
        inter, items, user_ids = _sample(t, n_users, n_items, user_sampling, full, seed)
        occ = t.get(OCCASIONS_FILE)
        if occ is not None:
            occ = occ[occ["order_id"].isin(inter["order_id"].unique())].reset_index(drop=True)
        meta = {"n_aisles": int(t["aisles.csv"]["aisle_id"].max()),
                "n_departments": int(t["departments.csv"]["department_id"].max())}
        if use_cache:
            tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pandas(inter, preserve_index=False), tmp / "interactions.parquet")
            pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp / "items.parquet")
            np.save(tmp / "user_ids.npy", user_ids)
            if occ is not None:
                pq.write_table(pa.Table.from_pandas(occ, preserve_index=False), tmp / "occasions.parquet")
            (tmp / "meta.json").write_text(json.dumps(meta))   # written last: marks completeness
            try:
                tmp.rename(cache)
            except OSError:   # another process cached the same key first; theirs is identical
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)
    sampling = ({"mode": "full"} if full else
                {"mode": user_sampling, "n_users": int(n_users), "n_items": int(n_items), "seed": int(seed)})
    ds = Dataset(inter, items, user_ids, meta["n_aisles"], meta["n_departments"], source,
                 sampling, occ, time.perf_counter() - t0, cache.name)
    if verbose:
        how = "all users and items" if full else f"{user_sampling} users, top items"
        print(f"data: {source} | {how} -> {ds.n_users:,} users x {ds.n_items:,} items, "
              f"{len(inter):,} rows ({ds.load_seconds:.1f}s)")
    return ds


def add_data_args(parser):
    """The data options every script shares."""
    g = parser.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help=f"directory of Kaggle-format CSVs (default: ${DATA_ENV}, then "
                        "data/instacart/, then the generated sample in data/sample/)")
    g.add_argument("--users", type=int, default=DEFAULT_USERS, help="number of users to sample")
    g.add_argument("--items", type=int, default=DEFAULT_ITEMS,
                   help="number of items: the most purchased among the sampled users")
    g.add_argument("--user-sampling", choices=["random", "heaviest"], default="random",
                   help="random users (seeded) or heaviest-first (most prior rows; the seed project's choice)")
    g.add_argument("--full", action="store_true", help="no sampling: every user and item")
    g.add_argument("--split", choices=["interaction", "temporal"], default="interaction",
                   help="interaction: random 80/20 of rows (SEED=42); temporal: each user's last order held out")
    g.add_argument("--no-cache", action="store_true", help="ignore and do not write the parquet cache")
    return g


def load_from_args(args) -> Dataset:
    return load_dataset(args.data_dir, args.users, args.items, args.user_sampling, args.full,
                        use_cache=not args.no_cache)


# ----------------------------------------------------------------------------
# 3. the split: one function, used by every experiment
@dataclass
class Split:
    """train/test rows of Dataset.interactions; `truth[u]` = distinct held-out items of user u."""
    train: pd.DataFrame
    test: pd.DataFrame
    mode: str
    seed: int
    truth: dict = field(default_factory=dict)

    def eval_users(self) -> np.ndarray:
        """Users with at least one held-out item, sorted: the users every metric averages over."""
        return np.array(sorted(self.truth), dtype=np.int64)


def split_interactions(inter: pd.DataFrame, mode: str = "interaction", seed: int = SEED,
                       test_frac: float = 0.2) -> Split:
    """Hold out rows for evaluation.

    interaction (default, the seed project's protocol): a seeded random 20% of the
        interaction rows (user, item, order), exactly round(test_frac * n) of them.
        Which rows are held out depends only on the row count and the seed.
    temporal: each user's last prior order in the sample is held out (next-basket
        protocol); users with a single order keep it in training and are not evaluated.
    Ground truth per user = the distinct items of their held-out rows.
    """
    n = len(inter)
    if n == 0:
        raise DataError("cannot split an empty set of interactions")
    if mode == "interaction":
        test_mask = np.zeros(n, dtype=bool)
        test_mask[np.random.default_rng(seed).permutation(n)[: int(round(test_frac * n))]] = True
    elif mode == "temporal":
        last = inter.groupby("user")["order_number"].transform("max").to_numpy()
        first = inter.groupby("user")["order_number"].transform("min").to_numpy()
        test_mask = (inter["order_number"].to_numpy() == last) & (last > first)
    else:
        raise DataError(f"unknown split '{mode}' (interaction or temporal)")
    train, test = inter[~test_mask], inter[test_mask]
    truth = {int(u): np.unique(g) for u, g in test.groupby("user")["item"]}
    return Split(train.reset_index(drop=True), test.reset_index(drop=True), mode, seed, truth)


# ----------------------------------------------------------------------------
# 4. features, from training rows only
@dataclass
class Features:
    """Everything a model may know, all computed from Split.train.

    user: [n_users, F] float32 (names in user_names); item: [n_items, F] float32;
    item_aisle / item_dept: [n_items] int category indices (0 = unknown);
    pairs: one row per (user, item) bought in training, with history features
        (PAIR_COLUMNS), sorted by user then item;
    item_text: "name, aisle, department" strings for text embeddings;
    user_history: per user, the item indices bought in training and their counts.
    """
    user: np.ndarray
    user_names: list
    item: np.ndarray
    item_names: list
    item_aisle: np.ndarray
    item_dept: np.ndarray
    pairs: pd.DataFrame
    item_text: list
    hist_indptr: np.ndarray
    hist_items: np.ndarray
    hist_counts: np.ndarray

    def history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, counts) user u bought in training rows, items ascending."""
        s, e = self.hist_indptr[u], self.hist_indptr[u + 1]
        return self.hist_items[s:e], self.hist_counts[s:e]


PAIR_COLUMNS = ["ui_count", "ui_share", "ui_orders_since_last", "ui_streak",
                "ui_rate_since_first", "ui_mean_cart", "ui_days_since_last"]


def _shares(codes: np.ndarray, users: np.ndarray, n_users: int, n_codes: int) -> np.ndarray:
    m = np.zeros((n_users, n_codes), dtype=np.float32)
    np.add.at(m, (users, codes), 1.0)
    return m / np.maximum(m.sum(1, keepdims=True), 1.0)


def build_features(ds: Dataset, train: pd.DataFrame) -> Features:
    """User, item and user x item features from `train` rows only (never test rows)."""
    U, I = ds.n_users, ds.n_items
    u, i = train["user"].to_numpy(), train["item"].to_numpy()
    aisle = ds.items["aisle_id"].fillna(0).to_numpy(dtype=np.int64)
    dept = ds.items["department_id"].fillna(0).to_numpy(dtype=np.int64)

    # Orders are known only through their training rows: an order whose rows are all
    # held out does not exist for the features (its cadence stays unseen too).
    orders = train.drop_duplicates("order_id")[["user", "order_id", "order_number",
                                                "days_since_prior_order"]]
    n_orders = np.bincount(orders["user"], minlength=U).astype(np.float32)
    n_rows = np.bincount(u, minlength=U).astype(np.float32)
    n_distinct = np.bincount(train.drop_duplicates(["user", "item"])["user"], minlength=U)
    reorder = np.bincount(u, weights=train["reordered"].to_numpy(), minlength=U) / np.maximum(n_rows, 1)
    gap = orders.groupby("user")["days_since_prior_order"].agg(["mean", "std"]).reindex(range(U))
    basket = n_rows / np.maximum(n_orders, 1)
    user_num = np.column_stack([
        np.log1p(n_orders), np.log1p(n_rows), np.log1p(basket), reorder,
        gap["mean"].fillna(15.0).to_numpy() / 30.0, gap["std"].fillna(0.0).to_numpy() / 30.0,
        n_distinct / np.maximum(n_rows, 1), np.log1p(n_distinct)]).astype(np.float32)
    user_feat = np.hstack([user_num,
                           _shares(dept[i], u, U, ds.n_departments + 1),
                           _shares(aisle[i], u, U, ds.n_aisles + 1)])
    user_names = (["log_orders", "log_rows", "log_basket", "reorder_rate", "gap_mean", "gap_std",
                   "variety", "log_distinct"]
                  + [f"dept_share_{d}" for d in range(ds.n_departments + 1)]
                  + [f"aisle_share_{a}" for a in range(ds.n_aisles + 1)])

    pop = np.bincount(i, minlength=I).astype(np.float32)
    n_buyers = np.bincount(train.drop_duplicates(["user", "item"])["item"], minlength=I)
    item_reorder = np.bincount(i, weights=train["reordered"].to_numpy(), minlength=I) / np.maximum(pop, 1)
    cart = np.bincount(i, weights=train["add_to_cart_order"].to_numpy(), minlength=I) / np.maximum(pop, 1)
    item_feat = np.column_stack([
        np.log1p(pop), np.log1p(n_buyers), item_reorder, np.log1p(cart),
        pop / np.maximum(n_buyers, 1)]).astype(np.float32)
    item_names = ["log_pop", "log_buyers", "item_reorder_rate", "log_mean_cart", "buys_per_buyer"]

    pairs = _pair_features(train, orders)
    hist_indptr = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs["user"], minlength=U), out=hist_indptr[1:])
    text = [f"{n}, {a}, {d}" for n, a, d in zip(ds.items["product_name"].fillna("unknown product"),
                                                ds.items["aisle"], ds.items["department"])]
    return Features(user_feat, user_names, item_feat, item_names, aisle, dept, pairs, text,
                    hist_indptr, pairs["item"].to_numpy(np.int64),
                    pairs["ui_count"].to_numpy(np.float32))


def _pair_features(train: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """History of each (user, item) in training rows: the Kaggle reorder winners' features.

    Orders are ranked per user from the most recent training order (rank 0). For a pair:
    count = training orders containing it; share = count / user's training orders;
    orders_since_last = rank of the latest order containing it; streak = how many of
    the user's most recent orders in a row contain it; rate_since_first = count /
    (orders from the first one containing it to the latest); days_since_last = days
    from that order to the user's latest training order.
    """
    o = orders.sort_values(["user", "order_number"]).copy()
    o["rank"] = o.groupby("user").cumcount(ascending=False)
    days = o["days_since_prior_order"].fillna(0.0).to_numpy()
    # days elapsed from each order to the user's latest training order
    o["days_to_last"] = o.assign(d=days)[::-1].groupby("user")["d"].cumsum()[::-1].to_numpy() - days
    r = train[["user", "item", "order_id", "add_to_cart_order"]].merge(
        o[["order_id", "rank", "days_to_last"]], on="order_id")
    r = r.drop_duplicates(["user", "item", "order_id"]).sort_values(["user", "item", "rank"])
    r["k"] = r.groupby(["user", "item"]).cumcount()
    r["in_streak"] = (r["rank"] == r["k"]).astype(np.int32)  # ranks ascend, so a prefix
    g = r.groupby(["user", "item"], sort=True)
    p = g.agg(ui_count=("rank", "size"), ui_orders_since_last=("rank", "min"),
              first_rank=("rank", "max"), ui_streak=("in_streak", "sum"),
              ui_mean_cart=("add_to_cart_order", "mean"),
              ui_days_since_last=("days_to_last", "min")).reset_index()
    n_orders = o.groupby("user").size()
    p["ui_share"] = p["ui_count"] / n_orders.reindex(p["user"]).to_numpy()
    p["ui_rate_since_first"] = p["ui_count"] / (p["first_rank"] + 1)
    p = p.drop(columns="first_rank")
    p[PAIR_COLUMNS] = p[PAIR_COLUMNS].astype(np.float32)
    return p[["user", "item", *PAIR_COLUMNS]]


# ----------------------------------------------------------------------------
# 5. metrics: one implementation for every table in the project
KS = (5, 10, 20)          # cut-offs reported everywhere; K_MAX = 20 = retrieval candidates
K_MAX = max(KS)


def per_user_metrics(ranked: np.ndarray, truths: list, ks=KS) -> dict:
    """Per-user metric arrays for ranked lists against sets of relevant items.

    ranked: [n_users, >= max(ks)] item indices, best first; -1 marks an empty slot
        (a list shorter than K), which never counts as a hit.
    truths: per user, an array of the distinct relevant items (held-out items).
        Users with an empty truth get NaN and are excluded from every average.
    Conventions (binary relevance, train items NOT removed from the ranking):
      Recall@K    = |top-K ∩ truth| / |truth|   (denominator: all of the user's
                    distinct held-out items, even when |truth| > K; the seed project's definition)
      Precision@K = |top-K ∩ truth| / K
      HitRate@K   = 1 if |top-K ∩ truth| > 0 else 0
      NDCG@K      = DCG@K / IDCG@K, DCG@K = sum_{r=1..K} rel_r / log2(r + 1), and
                    IDCG@K = sum_{r=1..min(|truth|, K)} 1 / log2(r + 1)
    """
    kmax = max(ks)
    if ranked.shape[1] < kmax:
        ranked = np.hstack([ranked, -np.ones((len(ranked), kmax - ranked.shape[1]), ranked.dtype)])
    ranked = ranked[:, :kmax]
    hits = np.zeros(ranked.shape, dtype=bool)
    sizes = np.zeros(len(ranked))
    for j, t in enumerate(truths):
        sizes[j] = len(t)
        if len(t):
            hits[j] = np.isin(ranked[j], t) & (ranked[j] >= 0)
    valid = sizes > 0
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            h = hits[:, :k].sum(1)
            out[f"recall@{k}"] = np.where(valid, h / sizes, np.nan)
            out[f"precision@{k}"] = np.where(valid, h / k, np.nan)
            out[f"hit@{k}"] = np.where(valid, (h > 0).astype(float), np.nan)
            dcg = (hits[:, :k] * disc[:k]).sum(1)
            out[f"ndcg@{k}"] = np.where(valid, dcg / ideal[np.minimum(sizes, k).astype(int)], np.nan)
    return out


def split_truth(split: Split, feats: Features, users: np.ndarray) -> dict:
    """Ground truth of `users`, whole and split into repeat items (bought by the user
    in training rows) and explore items (not bought by the user before)."""
    full, rep, exp = [], [], []
    for u in users:
        t = split.truth.get(int(u), np.empty(0, np.int64))
        h = feats.history(int(u))[0]
        m = np.isin(t, h)
        full.append(t)
        rep.append(t[m])
        exp.append(t[~m])
    return {"all": full, "repeat": rep, "explore": exp}


def evaluate(ranked: np.ndarray, users: np.ndarray, split: Split, feats: Features,
             ks=KS, n_boot: int = 1000, seed: int = SEED) -> dict:
    """Macro-averaged metrics over `users` (the evaluation users, those with >= 1
    held-out item), for all held-out items and for the repeat / explore subsets.
    A subset's average runs over users with >= 1 item in that subset; the ranking
    is the same list in all three. 95% bootstrap intervals (users resampled, seeded)
    are given for the 'all' metrics."""
    truths = split_truth(split, feats, users)
    out = {}
    for part, t in truths.items():
        per = per_user_metrics(ranked, t, ks)
        n = int(np.sum([len(x) > 0 for x in t]))
        out[part] = {"n_users": n, **{m: float(np.nanmean(v)) if n else float("nan")
                                      for m, v in per.items()}}
        if part == "all":
            out["ci95"] = bootstrap_ci(per, n_boot, seed)
    return out


def bootstrap_ci(per_user: dict, n_boot: int = 1000, seed: int = SEED) -> dict:
    """95% percentile interval of each metric's mean over users, resampling users."""
    rng = np.random.default_rng(seed)
    ci = {}
    for m, v in per_user.items():
        v = v[~np.isnan(v)]
        if len(v) == 0:
            continue
        means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
        ci[m] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return ci


# ----------------------------------------------------------------------------
# 6. simple baselines (strong ones: personal top-frequency is hard to beat on grocery)
def popularity_ranking(feats: Features, users: np.ndarray, k: int = K_MAX) -> np.ndarray:
    """The k most purchased training items, the same list for everyone."""
    top = np.argsort(-feats.item[:, 0], kind="stable")[:k]
    return np.tile(top, (len(users), 1))


def top_frequency_ranking(feats: Features, users: np.ndarray, k: int = K_MAX,
                          pad_popular: bool = False) -> np.ndarray:
    """The user's own most bought training items (ties: more recent first, then more
    popular), -1 past the end of a short history, or padded with the most popular
    items the user has not bought when pad_popular=True."""
    pairs = feats.pairs
    order = np.lexsort((pairs["item"].to_numpy(), pairs["ui_orders_since_last"].to_numpy(),
                        -pairs["ui_count"].to_numpy(), pairs["user"].to_numpy()))
    items_sorted = pairs["item"].to_numpy()[order]   # grouped by user, best first
    popular = np.argsort(-feats.item[:, 0], kind="stable")[: 2 * k]
    out = -np.ones((len(users), k), dtype=np.int64)
    for j, u in enumerate(users):
        s, e = feats.hist_indptr[u], feats.hist_indptr[u + 1]
        own = items_sorted[s:e][:k]
        out[j, : len(own)] = own
        if pad_popular and len(own) < k:
            fill = popular[~np.isin(popular, own)][: k - len(own)]
            out[j, len(own): len(own) + len(fill)] = fill
    return out


def random_ranking(n_items: int, users: np.ndarray, k: int = K_MAX, seed: int = SEED) -> np.ndarray:
    """k distinct uniformly random items per user (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(n_items, size=min(k, n_items), replace=False) for _ in users])


def baseline_rankings(feats: Features, users: np.ndarray, n_items: int, k: int = K_MAX) -> dict:
    return {"random": random_ranking(n_items, users, k),
            "popularity": popularity_ranking(feats, users, k),
            "top-frequency": top_frequency_ranking(feats, users, k),
            "top-frequency + popular": top_frequency_ranking(feats, users, k, pad_popular=True)}


# ----------------------------------------------------------------------------
# 7. two-tower retrieval + FAISS
# torch and faiss are imported lazily: the data layer and metrics work without them.
@dataclass
class TowerConfig:
    """Hyper-parameters of the two-tower model (all saved with the model)."""
    dim: int = 64               # output embedding size of both towers
    hidden: int = 256           # MLP width
    id_embeddings: bool = True  # learned user / item ID embeddings beside the features
    history_bag: bool = True    # user tower also pools the items the user bought in training
    shared_bag: bool = True     # ...through the item tower's ID table (needs id_embeddings)
    temperature: float = 0.05   # InfoNCE softmax temperature
    logq: bool = False          # subtract log item frequency from logits (sampling-bias correction)
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 0.0
    val_frac: float = 0.02      # training rows kept aside for the per-epoch validation loss
    seed: int = SEED

    def key(self) -> dict:
        return dict(self.__dict__)


def pick_device(name: str = "auto") -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"device '{name}' requested but torch sees no CUDA device")
    return name


def _build_towers(cfg: TowerConfig, feats: Features, n_users: int, n_items: int):
    import torch
    from torch import nn
    import torch.nn.functional as F

    def mlp(n_in):
        return nn.Sequential(nn.Linear(n_in, cfg.hidden), nn.ReLU(),
                             nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                             nn.Linear(cfg.hidden, cfg.dim))

    class UserTower(nn.Module):
        """user features (+ ID embedding) (+ count-weighted bag of bought items) -> 64-d, unit norm."""
        def __init__(self, item_table=None):
            super().__init__()
            n_in = feats.user.shape[1]
            if cfg.id_embeddings:
                self.uid = nn.Embedding(n_users, cfg.dim)
                n_in += cfg.dim
            if cfg.history_bag:
                # Sharing the item tower's ID table puts a user's bag in the same space as
                # the items it holds, which makes repeat purchases easy to score.
                self.item_table = [item_table] if item_table is not None else None
                if item_table is None:
                    self.bag_table = nn.Embedding(n_items, cfg.dim)
                n_in += cfg.dim
            self.mlp = mlp(n_in)

        def forward(self, x, uid, bag_items, bag_offsets, bag_weights):
            parts = [x]
            if cfg.id_embeddings:
                parts.append(self.uid(uid))
            if cfg.history_bag:
                table = self.item_table[0].weight if self.item_table else self.bag_table.weight
                parts.append(F.embedding_bag(bag_items, table, bag_offsets, mode="sum",
                                             per_sample_weights=bag_weights))
            return F.normalize(self.mlp(torch.cat(parts, 1)), dim=-1)

    class ItemTower(nn.Module):
        """item features + aisle + department (+ ID embedding) -> 64-d, unit norm."""
        def __init__(self):
            super().__init__()
            self.aisle = nn.Embedding(int(feats.item_aisle.max()) + 1, 16)
            self.dept = nn.Embedding(int(feats.item_dept.max()) + 1, 8)
            n_in = feats.item.shape[1] + 24
            if cfg.id_embeddings:
                self.iid = nn.Embedding(n_items, cfg.dim)
                n_in += cfg.dim
            self.mlp = mlp(n_in)

        def forward(self, x, iid, aisle, dept):
            parts = [x, self.aisle(aisle), self.dept(dept)]
            if cfg.id_embeddings:
                parts.append(self.iid(iid))
            return F.normalize(self.mlp(torch.cat(parts, 1)), dim=-1)

    item_tower = ItemTower()
    shared = cfg.history_bag and cfg.shared_bag and cfg.id_embeddings
    return UserTower(item_tower.iid if shared else None), item_tower


class TwoTower:
    """Trained towers plus what is needed to embed users and items."""

    def __init__(self, cfg: TowerConfig, feats: Features, n_users: int, n_items: int,
                 device: str = "cpu"):
        import torch
        self.cfg, self.feats, self.device = cfg, feats, device
        torch.manual_seed(cfg.seed)
        self.user_tower, self.item_tower = _build_towers(cfg, feats, n_users, n_items)
        self.user_tower.to(device)
        self.item_tower.to(device)
        t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
        self.user_x = t(feats.user)
        self.item_x = t(feats.item)
        self.item_aisle = t(feats.item_aisle, torch.long)
        self.item_dept = t(feats.item_dept, torch.long)
        # history bag weights: log(1 + count), normalised per user so heavy users do not dominate
        w = np.log1p(feats.hist_counts)
        s = np.add.reduceat(w, feats.hist_indptr[:-1]) if len(w) else w
        lens = np.diff(feats.hist_indptr)
        w = w / np.repeat(np.where(lens > 0, s, 1.0), lens)
        self.hist_w = w.astype(np.float32)
        self.history = {"log_q": None, "epochs": []}

    def _bag(self, users: np.ndarray):
        import torch
        ptr = self.feats.hist_indptr
        starts, ends = ptr[users], ptr[users + 1]
        lens = ends - starts
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(users) else np.empty(0, int)
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
        d = self.device
        return (torch.as_tensor(self.feats.hist_items[idx], device=d),
                torch.as_tensor(offsets, device=d),
                torch.as_tensor(self.hist_w[idx], device=d))

    def embed_users(self, users: np.ndarray, batch: int = 4096) -> np.ndarray:
        import torch
        out = []
        self.user_tower.eval()
        with torch.no_grad():
            for s in range(0, len(users), batch):
                u = np.asarray(users[s:s + batch], dtype=np.int64)
                ut = torch.as_tensor(u, device=self.device)
                out.append(self.user_tower(self.user_x[ut], ut, *self._bag(u)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.cfg.dim), np.float32)

    def embed_items(self) -> np.ndarray:
        import torch
        self.item_tower.eval()
        with torch.no_grad():
            iid = torch.arange(len(self.item_x), device=self.device)
            return self.item_tower(self.item_x, iid, self.item_aisle, self.item_dept).cpu().numpy()

    def _loss(self, users: np.ndarray, items: np.ndarray, log_q):
        """Symmetric in-batch InfoNCE. A batch's repeated items (or users) are not
        negatives of each other: those logits are masked out, except the diagonal."""
        import torch
        import torch.nn.functional as F
        d = self.device
        ut, it = torch.as_tensor(users, device=d), torch.as_tensor(items, device=d)
        ue = self.user_tower(self.user_x[ut], ut, *self._bag(users))
        ie = self.item_tower(self.item_x[it], it, self.item_aisle[it], self.item_dept[it])
        logits = ue @ ie.T / self.cfg.temperature
        eye = torch.eye(len(users), dtype=torch.bool, device=d)
        same_item = (it[:, None] == it[None, :]) & ~eye
        same_user = (ut[:, None] == ut[None, :]) & ~eye
        target = torch.arange(len(users), device=d)
        lu = logits
        if log_q is not None:   # correct the popular items' over-representation as negatives
            lu = logits - log_q[it][None, :]
        loss_u2i = F.cross_entropy(lu.masked_fill(same_item, float("-inf")), target)
        loss_i2u = F.cross_entropy(logits.T.masked_fill(same_user, float("-inf")), target)
        return (loss_u2i + loss_i2u) / 2

    def fit(self, train: pd.DataFrame, progress: bool = True) -> "TwoTower":
        """Train on the (user, item) rows of `train`; a seeded val_frac of them only
        measures the validation loss printed after each epoch."""
        import torch
        from tqdm import tqdm
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        users, items = train["user"].to_numpy(np.int64), train["item"].to_numpy(np.int64)
        perm = rng.permutation(len(users))
        n_val = int(len(users) * cfg.val_frac)
        val, fit_idx = perm[:n_val], perm[n_val:]
        log_q = None
        if cfg.logq:
            q = np.bincount(items, minlength=len(self.item_x)) + 1.0
            log_q = torch.as_tensor(np.log(q / q.sum()), dtype=torch.float32, device=self.device)
        params = [*self.user_tower.parameters(), *self.item_tower.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        bs = cfg.batch_size
        for epoch in range(cfg.epochs):
            self.user_tower.train()
            self.item_tower.train()
            order = fit_idx[rng.permutation(len(fit_idx))]
            total, n = 0.0, 0
            bar = tqdm(range(0, len(order) - bs + 1 if len(order) >= bs else 1, bs),
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
            for s in bar:
                b = order[s:s + bs]
                loss = self._loss(users[b], items[b], log_q)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + loss.item(), n + 1
                bar.set_postfix(loss=f"{total / n:.3f}")
            val_loss = self.validation_loss(users[val], items[val], log_q)
            self.history["epochs"].append({"epoch": epoch + 1, "train_loss": total / max(n, 1),
                                           "val_loss": val_loss})
            if progress:
                print(f"  epoch {epoch + 1}/{cfg.epochs}: train loss {total / max(n, 1):.4f}"
                      f"  val loss {val_loss:.4f}")
        return self

    def validation_loss(self, users, items, log_q) -> float:
        import torch
        if len(users) < 2:
            return float("nan")
        self.user_tower.eval()
        self.item_tower.eval()
        bs, losses = self.cfg.batch_size, []
        with torch.no_grad():
            for s in range(0, len(users), bs):
                if len(users[s:s + bs]) >= 2:
                    losses.append(self._loss(users[s:s + bs], items[s:s + bs], log_q).item())
        return float(np.mean(losses))

    def state(self) -> dict:
        return {"user_tower": self.user_tower.state_dict(), "item_tower": self.item_tower.state_dict(),
                "history": self.history, "config": self.cfg.key()}

    def load_state(self, state: dict):
        self.user_tower.load_state_dict(state["user_tower"])
        self.item_tower.load_state_dict(state["item_tower"])
        self.history = state["history"]


def model_dir(ds: Dataset, split: Split, cfg: TowerConfig) -> Path:
    """Where a trained two-tower is saved: keyed by data, split and every hyper-parameter."""
    blob = json.dumps([ds.key, split.mode, split.seed, cfg.key()], sort_keys=True)
    return CACHE_DIR / "two_tower" / hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_two_tower(ds: Dataset, split: Split, feats: Features, cfg: TowerConfig,
                    device: str = "cpu", use_saved: bool = True, progress: bool = True) -> TwoTower:
    """Train (or load the saved) two-tower for this data, split and configuration.
    Saves the towers, the item embeddings and the configuration for the experiments."""
    import torch
    torch.manual_seed(cfg.seed)
    model = TwoTower(cfg, feats, ds.n_users, ds.n_items, device)
    path = model_dir(ds, split, cfg)
    if use_saved and (path / "model.pt").is_file():
        model.load_state(torch.load(path / "model.pt", map_location=device, weights_only=False))
        model.loaded_from = path
        return model
    model.fit(split.train, progress=progress)
    model.loaded_from = None
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state(), path / "model.pt.tmp")
    np.save(path / "item_embeddings.npy", model.embed_items())
    (path / "config.json").write_text(json.dumps({"data": ds.summary(), "split": split.mode,
                                                  "tower": cfg.key()}, indent=1))
    os.replace(path / "model.pt.tmp", path / "model.pt")   # last: marks the save complete
    return model


def faiss_index(item_emb: np.ndarray):
    """Exact inner-product index (IndexFlatIP) over L2-normalised item embeddings."""
    import faiss
    index = faiss.IndexFlatIP(item_emb.shape[1])
    index.add(np.ascontiguousarray(item_emb, dtype=np.float32))
    return index


def retrieve(model: TwoTower, users: np.ndarray, k: int = K_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for every user in `users`, found by one batched FAISS search."""
    index = faiss_index(model.embed_items())
    scores, ranked = index.search(np.ascontiguousarray(model.embed_users(users)), k)
    return ranked.astype(np.int64), scores
