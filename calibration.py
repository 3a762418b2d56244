"""Calibration of the generated sample against real Instacart rows: the generator's
marginals (basket size, reorder rate, order cadence, department shares, ...), how the
project's own models behave on both (top-frequency, popularity, a short two-tower run), and
whether the generated occasions carry signal. Generated vs real, side by side, OK/OFF per row.

    uv run calibration.py --data-dir DIR            # generate at the real folder's size, compare
    uv run calibration.py --data-dir DIR --out-dir D  # compare an existing generated folder D

Above the generator (it imports sample_generator and the project's models); the generator
imports nothing from the project.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import config
from config import DATA_ENV
from sample_generator import KAGGLE_FILES, add_size_args, generate, sizes_from_args

# -----------------------------------------------------------------------------
# marginals

REL_TOL = 0.15  # every figure within 15% of real (relative) ...
ABS_TOL_DEPT = 0.0015  # ... or, for department shares, within 0.15 percentage points (tiny ones)


def kaggle_file(d: Path, name: str) -> Path:
    """`name` in folder d as shipped: name.csv, or Kaggle's name.csv.zip / name.csv.gz
    (pandas reads each directly); the plain name when none exists (the caller reports it)."""
    for suffix in ("", ".zip", ".gz"):
        if (Path(d) / (name + suffix)).is_file():
            return Path(d) / (name + suffix)
    return Path(d) / name


def _read(d: Path, name: str, **kw) -> pd.DataFrame:
    return pd.read_csv(kaggle_file(d, name), **kw)


def marginal_stats(d: Path) -> dict[str, float]:
    """Headline statistics of a Kaggle-layout folder (prior orders only)."""
    orders = _read(d, "orders.csv", usecols=["order_id", "user_id", "days_since_prior_order"])
    prior = _read(d, "order_products__prior.csv", usecols=["order_id", "product_id", "reordered"])
    products = _read(d, "products.csv", usecols=["product_id", "department_id"])
    depts = _read(d, "departments.csv")
    s: dict[str, float] = {}
    s["basket size mean"] = prior.groupby("order_id").size().mean()
    s["reorder rate"] = prior.reordered.mean()
    n = orders.groupby("user_id").size()
    for q in (25, 50, 75):
        s[f"orders/user p{q}"] = n.quantile(q / 100)
    days = orders.days_since_prior_order.dropna()
    s["days since prior mean"] = days.mean()
    s["days share ==30"] = (days == 30).mean()
    s["days share ==7"] = (days == 7).mean()
    s["days share <=7"] = (days <= 7).mean()
    cnt = prior.product_id.value_counts()
    s["top 1% of bought items: row share"] = cnt.iloc[: max(1, round(len(cnt) / 100))].sum() / len(
        prior
    )
    user = orders.set_index("order_id").user_id.reindex(prior.order_id).to_numpy()
    s["distinct products/user mean"] = (
        pd.DataFrame({"u": user, "p": prior.product_id})
        .drop_duplicates()
        .groupby("u")
        .size()
        .mean()
    )
    s["items bought / catalogue"] = len(cnt) / len(products)
    dept = products.set_index("product_id").department_id.reindex(prior.product_id)
    share = dept.value_counts(normalize=True)
    for did, name in zip(depts.department_id, depts.department):
        s[f"dept {name}"] = share.get(did, 0.0)
    return s


def calibration_table(generated_dir, real_dir) -> pd.DataFrame:
    """Generated vs real side by side: rows = statistic, cols = generated, real, rel_diff, ok.

    ok: |rel_diff| <= 15%, or for department shares |abs diff| <= 0.15 percentage points.
    'items bought / catalogue' depends on the sizes compared; it is shown, not judged.
    """
    g, r = marginal_stats(Path(generated_dir)), marginal_stats(Path(real_dir))
    df = pd.DataFrame({"generated": pd.Series(g), "real": pd.Series(r)})
    df["rel_diff"] = (df.generated - df.real) / df.real.where(df.real != 0)
    ok = df.rel_diff.abs() <= REL_TOL
    dept = df.index.str.startswith("dept ")
    ok |= dept & ((df.generated - df.real).abs() <= ABS_TOL_DEPT)
    df["ok"] = ok
    df.loc["items bought / catalogue", "ok"] = True
    return df


BEHAVIOUR_ITEMS = 5000  # behaviour rows: the most bought 5,000 items, as the README's real table
BEHAVIOUR_EPOCHS = 2  # two-tower: one seed, a short run (the same on both sides)


def behaviour_stats(
    data_dir, n_items: int = BEHAVIOUR_ITEMS, epochs: int = BEHAVIOUR_EPOCHS, progress: bool = False
) -> dict[str, float]:
    """How the project's own models behave on a Kaggle-layout folder: every user, the
    `n_items` most bought items, the interaction split, common's baselines, metrics and a
    short one-seed two-tower run. Used to compare generated with real rows at matched size."""
    import common  # lazy: torch, so that --help and the marginal checks need none

    n_users = _read(Path(data_dir), "orders.csv", usecols=["user_id"]).user_id.nunique()
    ds = common.load_dataset(
        data_dir, n_users=n_users, n_items=n_items, use_cache=False, verbose=False
    )
    split = common.split_interactions(ds.interactions, "interaction")
    feats = common.build_features(ds, split.train)
    users = split.eval_users()
    base = common.baseline_rankings(feats, users, ds.n_items)
    tf = common.evaluate(base["top-frequency"], users, split, feats, n_boot=10)["all"]
    pop = common.evaluate(base["popularity"], users, split, feats, n_boot=10)["all"]
    tt = {"recall@20": float("nan")}
    if epochs:  # epochs=0: no two-tower row (fast checks)
        model = common.train_two_tower(
            ds, split, feats, common.TowerConfig(epochs=epochs), progress=progress
        )
        tt = common.evaluate(common.retrieve(model, users, 20)[0], users, split, feats, n_boot=10)[
            "all"
        ]
    train_pairs = set(
        zip(split.train.user.to_numpy().tolist(), split.train.item.to_numpy().tolist())
    )
    test_pairs = zip(split.test.user.to_numpy().tolist(), split.test.item.to_numpy().tolist())
    repeat = np.mean([p in train_pairs for p in test_pairs])
    return {
        "top-frequency R@5": tf["recall@5"],
        "top-frequency R@10": tf["recall@10"],
        "top-frequency R@20": tf["recall@20"],
        "top-frequency NDCG@10": tf["ndcg@10"],
        "popularity R@20": pop["recall@20"],
        f"two-tower R@20 ({epochs} ep, 1 seed)": tt["recall@20"],
        "held-out rows repeating a training pair": float(repeat),
        "distinct held-out items/user mean": float(np.mean([len(split.truth[u]) for u in users])),
    }


def behaviour_table(generated_dir, real_dir, **kw) -> pd.DataFrame:
    """Behaviour rows, generated vs real: cols generated, real, rel_diff, ok (|rel| <= 15%)."""
    df = pd.DataFrame(
        {
            "generated": pd.Series(behaviour_stats(generated_dir, **kw)),
            "real": pd.Series(behaviour_stats(real_dir, **kw)),
        }
    )
    df["rel_diff"] = (df.generated - df.real) / df.real
    df["ok"] = df.rel_diff.abs() <= REL_TOL
    return df


OCC_POP_GOAL = 1.5  # occasion popularity must reach this multiple of global popularity
OCC_SHRINK = 2.0  # occasion-aware top-frequency: pseudo-orders of the user's overall rate


def occasion_signal(data_dir, k: int = 20) -> dict[str, float]:
    """Does the true occasion carry signal? Needs order_occasions.csv (generated data only).

    Target: each user's last prior order (its distinct items); history: the earlier prior
    orders. Recall@k, macro over users, of
      global popularity:      the k most bought history items;
      occasion popularity:    the k most bought history items in orders of the target's
                              occasion (all users);
      top-frequency:          the user's most bought history items (ties: more recent);
      occasion top-frequency: the user's items by their rate in the user's orders of the
                              target's occasion, shrunk towards the user's overall rate
                              with OCC_SHRINK pseudo-orders (ties: overall count, recency).
    """
    d = Path(data_dir)
    orders = _read(d, "orders.csv", usecols=["order_id", "user_id", "eval_set", "order_number"])
    orders = orders[orders.eval_set == "prior"].merge(_read(d, "order_occasions.csv"))
    rows = (
        _read(d, "order_products__prior.csv", usecols=["order_id", "product_id"])
        .drop_duplicates()
        .merge(orders[["order_id", "user_id", "order_number", "occasion"]])
    )
    last = orders.groupby("user_id").order_number.transform("max") == orders.order_number
    target = orders[last].set_index("user_id").occasion
    is_t = (
        rows.order_number.to_numpy()
        == rows.user_id.map(orders[last].set_index("user_id").order_number).to_numpy()
    )
    hist, test = rows[~is_t], rows[is_t]
    truth = test.groupby("user_id").product_id.agg(set)
    users = truth.index.to_numpy()

    def recall(top: dict) -> float:
        return float(np.mean([len(truth[u] & set(top.get(u, ()))) / len(truth[u]) for u in users]))

    glob = hist.product_id.value_counts().index[:k].tolist()
    by_occ = {
        o: g.product_id.value_counts().index[:k].tolist() for o, g in hist.groupby("occasion")
    }
    # per (user, item): overall count, count in target-occasion orders, last order number
    h = hist.assign(same=(hist.occasion.to_numpy() == target.reindex(hist.user_id).to_numpy()))
    ui = (
        h.groupby(["user_id", "product_id"])
        .agg(n=("order_id", "size"), n_occ=("same", "sum"), last=("order_number", "max"))
        .reset_index()
    )
    n_ord = orders[~last].groupby("user_id").size()
    n_same = (
        orders[~last]
        .assign(same=lambda o: o.occasion.to_numpy() == target.reindex(o.user_id).to_numpy())
        .groupby("user_id")
        .same.sum()
    )
    rate = ui.n / n_ord.reindex(ui.user_id).to_numpy()
    ui["occ_score"] = (ui.n_occ + OCC_SHRINK * rate) / (
        n_same.reindex(ui.user_id).to_numpy() + OCC_SHRINK
    )

    def top_by(cols):
        s = ui.sort_values(["user_id"] + cols, ascending=[True] + [False] * len(cols))
        s = s[s.groupby("user_id").cumcount() < k]
        return s.groupby("user_id").product_id.agg(list).to_dict()

    return {
        "global popularity R@20": recall({u: glob for u in users}),
        "occasion popularity R@20": recall({u: by_occ.get(target[u], []) for u in users}),
        "top-frequency R@20": recall(top_by(["n", "last"])),
        "occasion top-frequency R@20": recall(top_by(["occ_score", "n", "last"])),
    }


def _real_dir(arg: str | None) -> Path:
    d = arg or os.environ.get(DATA_ENV)
    if not d:
        sys.exit(f"error: calibration needs --data-dir DIR or ${DATA_ENV} set to the real data")
    missing = [f for f in KAGGLE_FILES if not kaggle_file(Path(d), f).is_file()]
    if missing:
        sys.exit(f"error: real data dir {d} lacks {', '.join(missing)}")
    return Path(d)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_size_args(ap, default_note="; here the real folder's")
    ap.add_argument(
        "--data-dir",
        help=f"the real Kaggle-layout folder to calibrate against (default ${DATA_ENV})",
    )
    ap.add_argument("--real-dir", dest="data_dir", help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-behaviour",
        action="store_true",
        help="skip the behaviour rows (they train a two-tower)",
    )
    ap.add_argument("--json", help="also write the table as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    config.add_log_level_arg(ap)
    args = ap.parse_args(argv)
    config.apply_log_level(args)
    users, products = sizes_from_args(args)
    real = _real_dir(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        gen = (
            Path(args.out_dir)
            if args.out_dir and Path(args.out_dir).exists()
            else Path(tmp) / "gen"
        )
        if gen.parent == Path(tmp):
            users = users or _read(real, "orders.csv", usecols=["user_id"]).user_id.nunique()
            products = products or len(_read(real, "products.csv", usecols=["product_id"]))
            print(
                f"generating {users:,} users x {products:,} products, seed {args.seed} "
                f"(matched to the real folder's size unless --users / --items given)"
            )
            generate(gen, users, products, args.seed, progress=not args.quiet)
        else:
            print(f"using existing sample {gen}")
        df = calibration_table(gen, real)
        beh = None if args.no_behaviour else behaviour_table(gen, real)
        occ = occasion_signal(gen)
    _print_table(df)
    print(
        f"{int(df.ok.sum())}/{len(df)} OK (|rel| <= {REL_TOL:.0%}; department shares also OK "
        f"within {ABS_TOL_DEPT * 100:.2f} pp; top-1% is over the products actually bought)"
    )
    if beh is not None:
        print(
            f"\nbehaviour: every user, the {BEHAVIOUR_ITEMS:,} most bought items, interaction "
            f"split, common's metrics"
        )
        _print_table(beh)
        print(f"{int(beh.ok.sum())}/{len(beh)} OK (|rel| <= {REL_TOL:.0%})")
    print(
        f"\noccasion signal on the generated rows (each user's last prior order; goal: "
        f"occasion popularity >= {OCC_POP_GOAL}x global, occasion top-frequency > top-frequency)"
    )
    print(pd.Series(occ).map("{:.4f}".format).to_string())
    print(f"ratio {occ['occasion popularity R@20'] / occ['global popularity R@20']:.2f}x")
    if args.json:
        tables = [df] + ([beh] if beh is not None else [])
        Path(args.json).write_text(
            pd.concat(tables).reset_index(names="statistic").to_json(orient="records", indent=1)
        )


def _print_table(df: pd.DataFrame):
    show = df.copy()
    show["rel_diff"] = show.rel_diff.map(lambda x: f"{x:+.1%}" if pd.notna(x) else "")
    show["ok"] = show.ok.map({True: "OK", False: "OFF"})
    if "items bought / catalogue" in show.index:  # depends on the sizes compared
        show.loc["items bought / catalogue", "ok"] = "info"
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(show.to_string())


if __name__ == "__main__":
    main()
