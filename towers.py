"""The two-tower retrieval model (PyTorch; UserTower and ItemTower to 64-d, L2-normalised,
in-batch InfoNCE), its training loop and saved towers, and FAISS retrieval (IndexFlatIP).

faiss is imported lazily: the data layer and metrics work without it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import config
from config import ConfigError, short_hash
from features import Features
from instacart import Dataset
from metrics import K_MAX
from options import TowerConfig  # torch-free, so the options (and --help) need no torch
from splits import Split

# steps between progress-bar loss updates: each update syncs with the device (.item())
POSTFIX_EVERY = 25


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
        # the users' purchase lists where the model lives: a step gathers from them on the
        # device (no host-side index work, no per-step copies)
        self.bought_ptr = t(feats.bought_indptr, torch.long)
        self.bought_items = t(feats.bought_items, torch.long)
        self.bought_weights = t(self.bought_w)
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

    def _bought_rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions in the purchase lists of the training items of `users`, user by user;
        each user's count of them), on the device."""
        start, lens = self.bought_ptr[users], self.bought_ptr[users + 1] - self.bought_ptr[users]
        # each position = its user's start + its place in the run (vectorised; one sync for
        # the total length)
        first = torch.repeat_interleave(start - torch.cumsum(lens, 0) + lens, lens)
        return first + torch.arange(len(first), device=first.device), lens

    def _items(self, items):
        """Item tower vectors of the item indices in the tensor `items`."""
        return self.item_tower(
            self.item_x[items], items, self.item_aisle[items], self.item_dept[items]
        )

    def _users(self, users, item_vecs=None, item_pos=None, context=None):
        """User tower vectors of `users` (a tensor on the device, or an array). With
        purchases='centroid', `item_vecs[item_pos[i]]` must hold the item tower's vector of
        every item i in these users' histories (computed if None)."""
        d = self.device
        ut = torch.as_tensor(users, dtype=torch.long, device=d)
        idx, lens = self._bought_rows(ut)
        bag_items = self.bought_items[idx]
        offsets = torch.cumsum(lens, 0) - lens
        weights = self.bought_weights[idx]
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
        ctx = None if context is None else torch.as_tensor(context, dtype=torch.long, device=d)
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

    def _loss(self, users, items, log_q, context=None):
        """Symmetric in-batch InfoNCE of the rows (users[i], items[i]): tensors on the
        device (a training step), or arrays. A batch's repeated items (or users) are not
        negatives of each other: those logits are masked out, except the diagonal. Every
        step of it runs on the device: no host-side index work, no copies back."""
        d = self.device
        as_t = lambda a: torch.as_tensor(a, dtype=torch.long, device=d)  # no copy for a tensor
        ut, it = as_t(users), as_t(items)
        context = None if context is None else as_t(context)
        # a user appears in a batch once per bought row: run the user tower once per
        # distinct user (and context) and gather, which gives the same vectors for ~half the cost
        width = self.cfg.n_contexts + 1
        key = ut if context is None else ut * width + context
        key, inverse = torch.unique(key, return_inverse=True)  # sorted, as np.unique
        first_users = key if context is None else key // width
        ctx = None if context is None else key % width
        need = it
        if self.cfg.purchases == "centroid":
            # exact: one item-tower pass over the positives and the users' bought items,
            # so both towers see the same item vectors
            need = torch.cat([it, self.bought_items[self._bought_rows(first_users)[0]]])
        uniq = torch.unique(need)
        vecs = self._items(uniq)
        pos = torch.zeros(len(self.item_x), dtype=torch.long, device=d)
        pos[uniq] = torch.arange(len(uniq), device=d)
        if self.cfg.purchases == "centroid":
            ue = self._users(first_users, vecs, pos, ctx)
        else:
            ue = self._users(first_users, context=ctx)
        ue = ue[inverse] / self.cfg.temperature
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
        # every training row on the device once; a step only slices them
        d = self.device
        users_t, items_t = torch.as_tensor(users, device=d), torch.as_tensor(items, device=d)
        if context is not None:
            ctx_t = torch.as_tensor(np.asarray(context, np.int64), device=d)
        ctx = (lambda b: None) if context is None else (lambda b: ctx_t[b])
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
        # rows an epoch trains on: all, or (epoch_rows) the first rows of its seeded shuffle,
        # a fresh sample each epoch
        n_epoch = min(cfg.epoch_rows, len(fit_idx)) if cfg.epoch_rows else len(fit_idx)
        steps_per_epoch = max((n_epoch - bs) // bs + 1, 1)
        scheduler = lr_scheduler(opt, cfg.lr_schedule, cfg.epochs * steps_per_epoch)
        for epoch in range(cfg.epochs):
            self.user_tower.train()
            self.item_tower.train()
            # the batch order: numpy's seeded permutation (the same batches as ever), sent to
            # the device once per epoch
            order = torch.as_tensor(fit_idx[rng.permutation(len(fit_idx))][:n_epoch], device=d)
            starts = range(0, max(len(order) - bs + 1, 1), bs)  # drops the last partial batch
            total, n = torch.zeros((), dtype=torch.float64, device=d), 0
            bar = config.progress(
                starts, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
            )
            for s in bar:
                b = order[s : s + bs]
                loss = self._loss(users_t[b], items_t[b], log_q, ctx(b))
                opt.zero_grad()
                loss.backward()
                opt.step()
                scheduler.step()
                total, n = total + loss.detach(), n + 1  # no per-step sync with the host
                if progress and n % POSTFIX_EVERY == 0:
                    bar.set_postfix(loss=f"{total.item() / n:.3f}", refresh=False)
            total = total.item()
            val_t = torch.as_tensor(val, device=d)
            val_loss = self.validation_loss(users_t[val_t], items_t[val_t], log_q, ctx(val_t))
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
        """Mean in-batch loss over batches of the rows (users[i], items[i]) (tensors on the
        device; a batch of fewer than 2 rows has no negative and is left out)."""
        if len(users) < 2:
            return float("nan")
        self.user_tower.eval()
        self.item_tower.eval()
        bs, losses = self.cfg.batch_size, []
        with torch.no_grad():
            for s in range(0, len(users), bs):
                if len(users[s : s + bs]) >= 2:
                    ctx = None if context is None else context[s : s + bs]
                    losses.append(self._loss(users[s : s + bs], items[s : s + bs], log_q, ctx))
        losses = [x.item() for x in losses]  # one sync, after the batches
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
    objs = []
    for cls in (type(model), type(model.user_tower), type(model.item_tower)):
        objs += [c for c in cls.__mro__ if c is not object and not c.__module__.startswith("torch")]
    src = "".join(code_source(o) for o in dict.fromkeys([*objs, mlp, lr_scheduler]))
    return short_hash(src)


@functools.cache
def code_source(obj) -> str:
    """The source of a class or function, read once per process: a file edited while a
    run goes on does not change the key of towers that run trains with the code it loaded
    (inspect reads the file on disk, not the code in memory)."""
    import inspect

    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # defined where no file holds it (python -c, a REPL)
        return f"{obj.__module__}.{obj.__qualname__}"


def model_dir(ds: Dataset, split: Split, model: TwoTower, variant: dict | None = None) -> Path:
    """Where a trained two-tower is saved: keyed by the data's content (Dataset.content_key),
    split, every hyper-parameter, the tower code (tower_code_key) and `variant` (what an
    experiment changed: tower class, extra inputs, training rows)."""
    blob = json.dumps(
        [ds.content_key, split.mode, split.seed]
        + [model.cfg.key(), tower_code_key(model), variant or {}],
        sort_keys=True,
    )
    return config.CACHE_DIR / "two_tower" / short_hash(blob)


def plain(x):
    """`x` made of what torch.load(weights_only=True) accepts: tensors, dicts, lists, str,
    numbers, None (numpy scalars and arrays become numbers, lists and tensors)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, np.generic):
        return x.item()
    return x


def load_saved(model: TwoTower, file: Path) -> bool:
    """Load a saved tower into `model`, executing nothing: torch.load(weights_only=True)
    refuses any pickled object but tensors, dicts, lists, strings and numbers (a planted
    model.pt with code in it). A file that is refused, unreadable or does not fit the model
    is reported in one line and False returned: the caller trains again and replaces it."""
    import pickle
    import sys

    try:
        model.load_state(torch.load(file, map_location=model.device, weights_only=True))
    except pickle.UnpicklingError:
        why = "it holds objects other than tensors and numbers: loading it could run code"
    except (RuntimeError, EOFError, KeyError, TypeError, ValueError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    else:
        return True
    print(f"warning: saved tower {file} refused ({why}); training again", file=sys.stderr)
    return False


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
        if load_saved(model, path / "model.pt"):
            model.loaded_from = path
            return model
        torch.manual_seed(cfg.seed)  # a fresh model: the refused load may have set some weights
        model = model_cls(cfg, feats, ds.n_users, ds.n_items, device, **model_kw)
    model.fit(split.train if train is None else train, progress=progress, context=context)
    path.mkdir(parents=True, exist_ok=True)
    # a unique temporary name: two runs saving the same tower never write one file together
    fd, tmp = tempfile.mkstemp(prefix=".model.pt.", suffix=".tmp", dir=path)
    os.close(fd)
    torch.save(plain(model.state()), tmp)
    np.save(path / "item_embeddings.npy", model.embed_items())
    (path / "config.json").write_text(
        json.dumps(
            {"data": ds.summary(), "split": split.mode, "tower": cfg.key(), "variant": variant},
            indent=1,
        )
    )
    os.replace(tmp, path / "model.pt")  # last: marks the save complete
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
