"""Loading Kaggle-format Instacart CSVs (real or generated): reading and validating the
files, choosing where they come from, sampling users and items, and the on-disk cache.

    ds = load_dataset()            # the generated sample (written on first use)
    ds = load_dataset("DIR")       # Kaggle CSVs in DIR (.csv, .csv.zip or .csv.gz)

Every problem with a file becomes a one-line config.DataError naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pyarrow import feather

import config
from config import (
    DATA_ENV,
    KAGGLE_DIR,
    RANDOM_SEED,
    REPO,
    SAMPLE_DIR,
    ConfigError,
    DataError,
    short_hash,
)

# The built-in sample is generated once at SAMPLE_USERS x SAMPLE_PRODUCTS; every script then
# samples DEFAULT_USERS users and their DEFAULT_ITEMS most bought items from it (or from real
# CSVs): the size of the real sample the generator is calibrated against (1,446 users) and the
# original study's 5,000 items, small enough for the default run to take about two minutes.
SAMPLE_USERS, SAMPLE_PRODUCTS = 5000, 10000
DEFAULT_USERS, DEFAULT_ITEMS = 1500, 5000
CACHE_VERSION = "2"  # bump when the cached tables' layout or meaning changes


# ----------------------------------------------------------------------------
# the files
# Columns we read from each Kaggle file and the compact dtype each gets.
# order_products__train.csv is not read: the Kaggle release holds items for
# only the 'train' orders (and this repo's real sample only a few of them), so
# every experiment trains and evaluates on prior orders, as the original study did.
SCHEMA = {
    "orders.csv": {
        "order_id": pa.int32(),
        "user_id": pa.int32(),
        "eval_set": pa.string(),
        "order_number": pa.int16(),
        "order_dow": pa.int8(),
        "order_hour_of_day": pa.int8(),
        "days_since_prior_order": pa.float32(),
    },
    "order_products__prior.csv": {
        "order_id": pa.int32(),
        "product_id": pa.int32(),
        "add_to_cart_order": pa.int16(),
        "reordered": pa.int8(),
    },
    "products.csv": {
        "product_id": pa.int32(),
        "product_name": pa.string(),
        "aisle_id": pa.int16(),
        "department_id": pa.int16(),
    },
    "aisles.csv": {"aisle_id": pa.int16(), "aisle": pa.string()},
    "departments.csv": {"department_id": pa.int16(), "department": pa.string()},
}
OCCASIONS_FILE = "order_occasions.csv"  # written by the generator only; optional
EVAL_SETS = ("prior", "train", "test")  # orders.csv eval_set values; anything else is an error
# The non-id numeric columns: never empty, within (low, high) (None: unbounded). An empty
# value would otherwise load as a null and change every metric without a word.
# days_since_prior_order is checked apart: Kaggle leaves it empty on each user's first order.
VALUE_RANGES = {
    "orders.csv": {"order_number": (1, None), "order_dow": (0, 6), "order_hour_of_day": (0, 23)},
    "order_products__prior.csv": {"add_to_cart_order": (1, None), "reordered": (0, 1)},
}
ROW_IDS = {"orders.csv": ["order_id"], "order_products__prior.csv": ["order_id", "product_id"]}


CSV_SUFFIXES = ("", ".zip", ".gz")  # orders.csv, orders.csv.zip (Kaggle's download), orders.csv.gz


def find_csv(data_dir: Path, name: str) -> Path | None:
    """The file holding `name` (e.g. orders.csv) in data_dir: the plain CSV, else
    name.zip, else name.gz; None when there is none."""
    for suffix in CSV_SUFFIXES:
        p = Path(data_dir) / (name + suffix)
        if p.is_file():
            return p
    return None


def _open_csv(path: Path):
    """A binary stream of the CSV text in `path`: a .csv, a .csv.gz, or a .csv.zip that
    holds one CSV (Kaggle's zips may add a __MACOSX folder, which is skipped)."""
    if path.name.endswith(".zip"):
        import zipfile

        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise DataError(f"{path.name}: not a readable zip file ({e})") from None
        inside = [
            m for m in zf.namelist() if m.lower().endswith(".csv") and not m.startswith("__MACOSX")
        ]
        if len(inside) != 1:
            raise DataError(
                f"{path.name}: expected one .csv inside the zip, found "
                f"{len(inside)} ({', '.join(inside) or 'none'})"
            )
        return zf.open(inside[0])
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def read_kaggle_csv(path: Path, columns: dict) -> pa.Table:
    """Read one CSV with pyarrow, checking the file, its header and its types.
    `path` may also be found as path.zip or path.gz (find_csv), read without unpacking.
    Every problem becomes a one-line DataError naming the file."""
    if not path.is_file():
        found_path = find_csv(path.parent, path.name)
        if found_path is None:
            raise DataError(f"{path}: file not found (nor {path.name}.zip, {path.name}.gz)")
        path = found_path
    try:
        with _open_csv(path) as f:
            header = f.readline().decode("utf-8", "replace").strip().lstrip("\ufeff")
    except (OSError, EOFError) as e:  # a corrupt .gz / .zip
        raise DataError(f"{path.name}: cannot read ({str(e).splitlines()[0]})") from None
    found = [c.strip() for c in header.split(",")]
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataError(
            f"{path.name}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(found) or 'nothing'})"
        )
    try:
        # a plain or .gz path goes to pyarrow as is (it un-gzips natively); a zip as a stream
        from contextlib import nullcontext

        zipped = path.name.endswith(".zip")
        with _open_csv(path) if zipped else nullcontext(str(path)) as source:
            table = pacsv.read_csv(
                source,
                read_options=pacsv.ReadOptions(block_size=64 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types=columns, include_columns=list(columns)
                ),
            )
    except pa.ArrowInvalid as e:
        msg = str(e).splitlines()[0]
        # Arrow names columns by position in the file; give the name instead.
        for i, name in enumerate(found):
            msg = msg.replace(f"column #{i}:", f"column '{name}':")
        raise DataError(f"{path.name}: {msg}") from None
    except (OSError, EOFError) as e:  # a corrupt .gz / .zip
        raise DataError(f"{path.name}: cannot read ({str(e).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise DataError(f"{path.name}: no rows")
    for name in ("order_id", "user_id", "product_id", "aisle_id", "department_id"):
        if name in columns and table.column(name).null_count:
            raise DataError(f"{path.name}: {table.column(name).null_count} empty '{name}' value(s)")
    return table


def _check_refs(name: str, col: str, values: np.ndarray, known: np.ndarray, target: str):
    bad = ~np.isin(values, known)
    if bad.any():
        raise DataError(
            f"{name}: {int(bad.sum())} row(s) point at unknown {col} "
            f"(e.g. {int(values[bad][0])}) not in {target}"
        )


def _row_example(name: str, df: pd.DataFrame, bad: np.ndarray) -> str:
    """'order_id 2' (or 'order_id 1, product_id 2'): the ids of the first row in `bad`."""
    i = int(np.flatnonzero(bad)[0])
    return ", ".join(f"{c} {int(df[c].iat[i])}" for c in ROW_IDS[name])


def _check_values(name: str, df: pd.DataFrame):
    """Every VALUE_RANGES column of file `name` is filled in and within its range."""
    for col, (low, high) in VALUE_RANGES.get(name, {}).items():
        values = df[col].to_numpy()
        empty = df[col].isna().to_numpy()
        if empty.any():
            raise DataError(
                f"{name}: {int(empty.sum())} empty '{col}' value(s) "
                f"(e.g. {_row_example(name, df, empty)})"
            )
        bad = values < low if high is None else (values < low) | (values > high)
        if bad.any():
            rule = f">= {low}" if high is None else f"{low}-{high}".replace("0-1", "0 or 1")
            raise DataError(
                f"{name}: {int(bad.sum())} row(s) with '{col}' out of range (must be {rule}; "
                f"e.g. {values[bad][0]:g} at {_row_example(name, df, bad)})"
            )


def _check_days(orders: pd.DataFrame):
    """days_since_prior_order: empty only on a user's first order (Kaggle's convention:
    there is no prior order), never negative."""
    days = orders["days_since_prior_order"].to_numpy()
    first = orders.groupby("user_id")["order_number"].transform("min").to_numpy()
    empty = np.isnan(days) & (orders["order_number"].to_numpy() != first)
    if empty.any():
        raise DataError(
            f"orders.csv: {int(empty.sum())} empty 'days_since_prior_order' value(s) on orders "
            f"other than the user's first order (e.g. {_row_example('orders.csv', orders, empty)})"
        )
    if (days < 0).any():
        raise DataError(
            f"orders.csv: {int((days < 0).sum())} row(s) with negative "
            f"days_since_prior_order (e.g. {days[days < 0][0]:g})"
        )


def read_kaggle_dir(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Read and cross-check the five Kaggle files we use (+ occasions if present)."""
    t = {name: read_kaggle_csv(data_dir / name, cols).to_pandas() for name, cols in SCHEMA.items()}
    orders, prior, products = t["orders.csv"], t["order_products__prior.csv"], t["products.csv"]
    if orders["order_id"].duplicated().any():
        raise DataError("orders.csv: duplicated order_id values")
    bad = ~orders["eval_set"].isin(EVAL_SETS)
    if bad.any():  # an unknown value would otherwise drop its orders' rows silently
        raise DataError(
            f"orders.csv: {int(bad.sum())} row(s) with eval_set "
            f"'{orders['eval_set'][bad].iloc[0]}' (expected {', '.join(EVAL_SETS)})"
        )
    for name in VALUE_RANGES:
        _check_values(name, t[name])
    _check_days(orders)
    if products["product_id"].duplicated().any():
        raise DataError("products.csv: duplicated product_id values")
    _check_refs(
        "order_products__prior.csv",
        "order_id",
        prior["order_id"].to_numpy(),
        orders["order_id"].to_numpy(),
        "orders.csv",
    )
    _check_refs(
        "order_products__prior.csv",
        "product_id",
        prior["product_id"].to_numpy(),
        products["product_id"].to_numpy(),
        "products.csv",
    )
    _check_refs(
        "products.csv",
        "aisle_id",
        products["aisle_id"].to_numpy(),
        t["aisles.csv"]["aisle_id"].to_numpy(),
        "aisles.csv",
    )
    _check_refs(
        "products.csv",
        "department_id",
        products["department_id"].to_numpy(),
        t["departments.csv"]["department_id"].to_numpy(),
        "departments.csv",
    )
    if find_csv(data_dir, OCCASIONS_FILE):
        t[OCCASIONS_FILE] = read_kaggle_csv(
            data_dir / OCCASIONS_FILE, {"order_id": pa.int32(), "occasion": pa.string()}
        ).to_pandas()
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
    if find_csv(KAGGLE_DIR, "orders.csv"):
        return KAGGLE_DIR, f"Kaggle-format CSVs in {KAGGLE_DIR.relative_to(REPO)}"
    import sample_generator as gen  # a shared module, imported only when needed

    # the sample is regenerated whenever the generator's output for these settings changes
    stamp = json.dumps(
        {
            "version": gen.GENERATOR_VERSION,
            "users": SAMPLE_USERS,
            "products": SAMPLE_PRODUCTS,
            "seed": RANDOM_SEED,
        }
    )
    stamp_file = SAMPLE_DIR / "GENERATED_BY.json"
    if not (SAMPLE_DIR / "orders.csv").is_file() or (
        not stamp_file.is_file() or stamp_file.read_text() != stamp
    ):
        print(
            f"data: generating the built-in sample into {SAMPLE_DIR.relative_to(REPO)} "
            f"({SAMPLE_USERS} users x {SAMPLE_PRODUCTS} products, seed {RANDOM_SEED}, "
            f"generator v{gen.GENERATOR_VERSION})"
        )
        gen.generate(SAMPLE_DIR, n_users=SAMPLE_USERS, n_products=SAMPLE_PRODUCTS, seed=RANDOM_SEED)
        stamp_file.write_text(stamp)
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
    key: str = ""  # identifies source files (name, size, mtime) + sampling: the load cache

    @functools.cached_property
    def content_key(self) -> str:
        """A digest of what a model trained on this data sees: every interaction column and
        the items' ids, names, aisles and departments, in order. Saved towers are keyed by it
        rather than by `key`, so a copy or a touch of the same CSVs (new mtimes) does not
        retrain them, and any changed row does."""
        h = hashlib.sha256()
        for frame in (self.interactions, self.items):
            h.update(",".join(map(str, frame.columns)).encode())
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        h.update(np.asarray(self.user_ids, np.int64).tobytes())
        return h.hexdigest()[:16]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "sampling": self.sampling,
            "users": self.n_users,
            "items": self.n_items,
            "rows": len(self.interactions),
            "orders": int(self.interactions["order_id"].nunique()),
            "load_seconds": round(self.load_seconds, 2),
        }


def _cache_key(data_dir: Path, params: dict) -> str:
    """Key the cache on every source file's name, size and mtime plus the sampling
    parameters, so a changed file or option never returns stale rows."""
    stamp = []
    for name in sorted([*SCHEMA, OCCASIONS_FILE]):
        p = find_csv(data_dir, name)
        if p is not None:
            st = p.stat()
            stamp.append((p.name, st.st_size, st.st_mtime_ns))
    blob = json.dumps([CACHE_VERSION, str(data_dir), stamp, params], sort_keys=True)
    return short_hash(blob)


def index_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each of `values` in `keys` (distinct ints), -1 where absent: a lookup table
    when the keys are smallish non-negative ints (Kaggle ids are), else a binary search."""
    keys, values = np.asarray(keys, dtype=np.int64), np.asarray(values)
    if len(keys) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    hi = int(keys.max())
    if keys.min() >= 0 and hi < 4 * len(keys) + (1 << 22):
        table = np.full(hi + 2, -1, dtype=np.int64)  # table[hi + 1] = -1: out of range
        table[keys] = np.arange(len(keys))
        return table[np.where((values >= 0) & (values <= hi), values, hi + 1)]
    sorter = np.argsort(keys, kind="stable")
    at = sorter[np.minimum(np.searchsorted(keys, values, sorter=sorter), len(keys) - 1)]
    return np.where(keys[at] == values, at, -1)


def run_starts(a: np.ndarray) -> np.ndarray:
    """Where each run of equal values in `a` begins."""
    return np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if len(a) else np.zeros(0, np.int64)


def _top(counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices of the non-zero counts, most first; ties broken by ascending id."""
    order = np.lexsort((ids, -counts))
    return order[counts[order] > 0]


def _row_order(block: np.ndarray, user, order_number, cart, item) -> np.ndarray:
    """The permutation that sorts rows by (user, order_number, add_to_cart_order, item),
    stably: what DataFrame.sort_values(kind="stable") gives.

    Sorting 38M rows is the slowest step of a full load, and Kaggle-layout files need
    none of it: each order's rows sit together in cart order, so whole orders (`block`:
    any id of the row's order) are put in order instead. Other layouts take a full sort.
    """
    n = len(block)
    starts = run_starts(block)
    c0, c1 = cart[:-1], cart[1:]
    in_cart_order = (block[1:] != block[:-1]) | (c1 > c0) | ((c1 == c0) & (item[1:] >= item[:-1]))
    if n and np.bincount(block[starts]).max() == 1 and in_cart_order.all():
        by = np.lexsort((order_number[starts], user[starts]))  # orders by (user, number)
        s = starts[by]
        u, num = user[s], order_number[s]
        if not ((u[1:] == u[:-1]) & (num[1:] == num[:-1])).any():  # no two share a number
            lens = np.diff(np.r_[starts, n])[by]
            return np.repeat(s - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(n)
    return np.lexsort((item, cart, order_number, user))


def _sample(t: dict, n_users, n_items, user_sampling, full, seed) -> tuple:
    orders, prior, products = t["orders.csv"], t["order_products__prior.csv"], t["products.csv"]
    # Join each prior row to its order by position (a table lookup, not a merge of 38M rows);
    # rows of non-prior orders drop out. Order columns are gathered once, at the end.
    opos = index_of(orders["order_id"].to_numpy(), prior["order_id"].to_numpy())
    is_prior = (orders["eval_set"] == "prior").to_numpy()
    kept = (opos >= 0) & is_prior[opos]
    if not kept.all():  # (in Kaggle's files every row is a prior order's)
        prior, opos = prior[kept].reset_index(drop=True), opos[kept]
    if len(prior) == 0:
        raise DataError("no prior-order rows after joining order_products__prior.csv to orders.csv")
    # users and products as codes: positions in uids / in products.csv
    order_uid = orders["user_id"].to_numpy()
    uids = np.unique(order_uid[is_prior])
    ucode = index_of(uids, order_uid)[opos]
    pids = products["product_id"].to_numpy()
    pcode = index_of(pids, prior["product_id"].to_numpy())
    if not full:
        per_user = np.bincount(ucode, minlength=len(uids))
        if user_sampling == "heaviest":
            # most prior item rows first; user_id breaks ties so the choice is deterministic
            chosen = _top(per_user, uids)[:n_users]
        elif user_sampling == "random":
            ids = np.flatnonzero(per_user)  # users with rows, by ascending user_id
            rng = np.random.default_rng(seed)
            chosen = index_of(
                uids, rng.choice(uids[ids], size=min(n_users, len(ids)), replace=False)
            )
        else:
            raise ConfigError(f"unknown user sampling '{user_sampling}' (random or heaviest)")
        keep = np.zeros(len(uids), dtype=bool)
        keep[chosen] = True
        sel = np.flatnonzero(keep[ucode])
        top = _top(np.bincount(pcode[sel], minlength=len(pids)), pids)[:n_items]
        keep = np.zeros(len(pids), dtype=bool)
        keep[top] = True
        sel = sel[keep[pcode[sel]]]
        prior = prior.iloc[sel].reset_index(drop=True)
        opos, ucode, pcode = opos[sel], ucode[sel], pcode[sel]
    if len(prior) == 0:
        raise DataError("the sample is empty: no interactions left after choosing users and items")
    # Items ordered by purchase count (ties by product_id): index 0 is the most popular.
    item_code = _top(np.bincount(pcode, minlength=len(pids)), pids)
    item_of = np.full(len(pids), -1, dtype=np.int32)
    item_of[item_code] = np.arange(len(item_code), dtype=np.int32)
    has_rows = np.bincount(ucode, minlength=len(uids)) > 0
    user_ids = uids[has_rows]
    user = (np.cumsum(has_rows) - 1).astype(np.int32)[ucode]
    item = item_of[pcode]
    cart = prior["add_to_cart_order"].to_numpy()
    order_number = orders["order_number"].to_numpy()[opos]
    idx = _row_order(opos, user, order_number, cart, item)
    opos = opos[idx]
    inter = pd.DataFrame(
        {
            "user": user[idx],
            "item": item[idx],
            "order_id": prior["order_id"].to_numpy()[idx],
            "order_number": order_number[idx],
            "add_to_cart_order": cart[idx],
            "reordered": prior["reordered"].to_numpy()[idx],
            **{
                c: orders[c].to_numpy()[opos]
                for c in ("order_dow", "order_hour_of_day", "days_since_prior_order")
            },
        }
    )
    item_pid = pids[item_code]
    items = (
        pd.DataFrame({"product_id": item_pid})
        .merge(t["products.csv"], on="product_id", how="left")
        .merge(t["aisles.csv"], on="aisle_id", how="left")
        .merge(t["departments.csv"], on="department_id", how="left")
    )
    items["aisle"] = items["aisle"].fillna("unknown aisle")
    items["department"] = items["department"].fillna("unknown department")
    return inter, items, user_ids


def _save_frame(df: pd.DataFrame, path: Path):
    """Cache files are uncompressed Arrow IPC (Feather v2): read back memory-mapped, a full
    load's 38M rows take well under a second (parquet: several seconds of decoding)."""
    feather.write_feather(
        pa.Table.from_pandas(df, preserve_index=False), path, compression="uncompressed"
    )


def _load_frame(path: Path) -> pd.DataFrame:
    return feather.read_table(path, memory_map=True).to_pandas()


def _read_cached(cache: Path) -> tuple:
    """(interactions, items, user_ids, occasions or None, meta) from a cache folder."""
    meta = json.loads((cache / "meta.json").read_text())
    occ_path = cache / "occasions.arrow"
    return (
        _load_frame(cache / "interactions.arrow"),
        _load_frame(cache / "items.arrow"),
        np.load(cache / "user_ids.npy"),
        _load_frame(occ_path) if occ_path.is_file() else None,
        meta,
    )


def _write_cached(cache: Path, inter, items, user_ids, occ, meta: dict):
    """Write a cache folder under a temporary name, meta.json last, then rename it into place:
    a reader sees a complete folder or none."""
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    _save_frame(inter, tmp / "interactions.arrow")
    _save_frame(items, tmp / "items.arrow")
    np.save(tmp / "user_ids.npy", user_ids)
    if occ is not None:
        _save_frame(occ, tmp / "occasions.arrow")
    (tmp / "meta.json").write_text(json.dumps(meta))  # written last: marks completeness
    try:
        tmp.rename(cache)
    except OSError:  # another process cached the same key first; theirs is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_dataset(
    data_dir: str | Path | None = None,
    n_users: int = DEFAULT_USERS,
    n_items: int = DEFAULT_ITEMS,
    user_sampling: str = "random",
    full: bool = False,
    seed: int = RANDOM_SEED,
    use_cache: bool = True,
    verbose: bool = True,
) -> Dataset:
    """Load Kaggle-format CSVs, sample users and items, return a Dataset.

    Sampling: `n_users` users chosen at random (seeded) or heaviest-first (most prior
    item rows), then the `n_items` products most purchased by them; rows on other
    products are dropped. `full=True` keeps every user and product.
    The result is cached under data/cache/ (Arrow IPC files), keyed by source files + options.
    """
    t0 = time.perf_counter()
    path, source = resolve_data_dir(data_dir)
    params = {
        "n_users": None if full else int(n_users),
        "n_items": None if full else int(n_items),
        "user_sampling": "all" if full else user_sampling,
        "full": bool(full),
        "seed": int(seed),
    }
    if not full and (n_users <= 0 or n_items <= 0):
        raise ConfigError(f"n_users and n_items must be positive (got {n_users}, {n_items})")
    cache = config.CACHE_DIR / _cache_key(path, params)
    if use_cache and (cache / "meta.json").is_file():
        inter, items, user_ids, occ, meta = _read_cached(cache)
    else:
        t = read_kaggle_dir(path)
        inter, items, user_ids = _sample(t, n_users, n_items, user_sampling, full, seed)
        occ = t.get(OCCASIONS_FILE)
        if occ is not None:
            occ = occ[occ["order_id"].isin(inter["order_id"].unique())].reset_index(drop=True)
        meta = {
            "n_aisles": int(t["aisles.csv"]["aisle_id"].max()),
            "n_departments": int(t["departments.csv"]["department_id"].max()),
        }
        if use_cache:
            _write_cached(cache, inter, items, user_ids, occ, meta)
    sampling = (
        {"mode": "full"}
        if full
        else {
            "mode": user_sampling,
            "n_users": int(n_users),
            "n_items": int(n_items),
            "seed": int(seed),
        }
    )
    ds = Dataset(
        inter,
        items,
        user_ids,
        meta["n_aisles"],
        meta["n_departments"],
        source,
        sampling,
        occ,
        time.perf_counter() - t0,
        cache.name,
    )
    if verbose:
        how = "all users and items" if full else f"{user_sampling} users, top items"
        print(
            f"data: {source} | {how} -> {ds.n_users:,} users x {ds.n_items:,} items, "
            f"{len(inter):,} rows ({ds.load_seconds:.1f}s)"
        )
    return ds


def add_data_args(parser):
    """The data options every script shares."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--data-dir",
        default=None,
        help=f"directory of Kaggle-format CSVs (default: ${DATA_ENV}, then "
        "data/instacart/, then the generated sample in data/sample/)",
    )
    g.add_argument("--users", type=int, default=DEFAULT_USERS, help="number of users to sample")
    g.add_argument(
        "--items",
        type=int,
        default=DEFAULT_ITEMS,
        help="number of items: the most purchased among the sampled users",
    )
    g.add_argument(
        "--user-sampling",
        choices=["random", "heaviest"],
        default="random",
        help="random users (seeded) or heaviest-first (most prior rows; the original "
        "study's choice)",
    )
    g.add_argument("--full", action="store_true", help="no sampling: every user and item")
    g.add_argument(
        "--split",
        choices=["interaction", "temporal"],
        default="interaction",
        help="interaction: random 80/20 of rows (SPLIT_SEED=42); temporal: each user's last "
        "order held out",
    )
    g.add_argument("--no-cache", action="store_true", help="ignore and do not write the data cache")
    return g


def load_from_args(args) -> Dataset:
    return load_dataset(
        args.data_dir,
        args.users,
        args.items,
        args.user_sampling,
        args.full,
        use_cache=not args.no_cache,
    )
