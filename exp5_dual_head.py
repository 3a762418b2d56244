"""Experiment 5: are semantic embeddings destroyed by training; can a frozen head recover them?

Question: does an item tower keep the meaning of the MiniLM text embeddings after training,
and does a semantic head beside the collaborative one improve retrieval?
Original finding (2,000 heaviest users, 5,000 items): gate alpha 0.986 (frozen head) / 0.889
(trainable); validation loss 2.7699 trainable vs 2.8574 baseline (one run). Its frozen head
was a random matrix and its heads were not normalised, so alpha measured a scale gap.

    uv run exp5_dual_head.py                              # generated sample
    uv run exp5_dual_head.py --data-dir DIR --items 5000  # real Kaggle-format CSVs
    uv run exp5_dual_head.py --quick                      # smoke run (about a minute)

The item tower has two heads mixed by a learned gate, alpha = sigmoid(a learned scalar,
started at 0, so alpha = 0.5):
    item = normalise(alpha * normalise(semantic head)
                     + (1 - alpha) * normalise(collaborative head))
alpha is the weight of the SEMANTIC head. Both heads are unit vectors before the gate, so alpha
measures preference, not a scale gap. The semantic head is a linear map of the item's MiniLM
vector (T.embed_texts of T.item_template_texts) initialised to its PCA to the tower size (a
meaningful projection, not a random matrix); the collaborative head is the standard ItemTower.
Arms (each over --seeds seeds):
  collaborative only   the standard two-tower (the reference)
  frozen semantic      gate + PCA head kept fixed
  trainable semantic   gate + PCA-initialised head trained
  semantic only        the (trainable) semantic head alone, no collaborative head
Reported per arm: R@K / NDCG@10 (mean ± std over seeds), paired gain over the reference,
validation loss, alpha per epoch, cold-start items (C.cold_start_split: 10% of items lose all
training rows; scored on their held-out purchases), and "destroyed?": neighbour overlap@10
and linear CKA between an item space and the MiniLM space, at initialisation and after
training, for the tower's output and for the semantic head alone.
"""

import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import common as C
import experiment
import text as T

QUESTION = "Are semantic embeddings destroyed by MLP training? Can a frozen head recover them?"
ORIGINAL_FINDING = (
    "gate alpha 0.986 (frozen) / 0.889 (trainable); val loss 2.7699 trainable vs 2.8574 "
    "baseline (2,000 heaviest users, 5,000 items; one run)"
)

# defaults (all overridable from the command line)
SEEDS = 3  # training seeds per arm
EPOCHS = 2  # training epochs per arm (the tower's default is 4; see README)
ARMS = ("collaborative only", "frozen semantic", "trainable semantic", "semantic only")
MODES = dict(zip(ARMS, ("collab", "frozen", "trainable", "semantic")))
NEIGHBOURS = 10  # overlap@10 of nearest-neighbour sets
SPACE_ITEMS = 3000  # items (seeded sample) the overlap / CKA are measured on
MIN_EFFECT = 0.005  # R@10 gain that matters
QUICK = {"users": 300, "items": 1500, "epochs": 1, "seeds": 2}


def parse_args(argv=None):
    p = experiment.script_parser(__doc__, seeds=SEEDS, llm_args=False)
    g = p.add_argument_group("experiment 5")
    g.add_argument("--no-cold", action="store_true", help="skip the cold-start item arms")
    p.set_defaults(epochs=EPOCHS)
    args = experiment.parse_args_with_quick(p, argv, QUICK)
    return args


# ----------------------------------------------------------------------------
# the dual-head item tower
def pca_projection(text: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean [384], components [dim, 384]) of the MiniLM vectors: the top-`dim` principal axes."""
    if dim > min(text.shape):
        raise C.ConfigError(f"--dim {dim} exceeds the PCA rank of {text.shape[0]} item texts")
    mean = text.mean(0)
    _, _, vt = np.linalg.svd(text - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dim].astype(np.float32)


class DualItemTower(nn.Module):
    """Collaborative head (C.ItemTower) and/or a semantic head (linear map of the item's MiniLM
    vector, PCA-initialised), each L2-normalised, mixed by alpha = sigmoid(gate)."""

    def __init__(
        self,
        collab: nn.Module | None,
        text: np.ndarray,
        mean: np.ndarray,
        comps: np.ndarray,
        mode: str,
    ):
        super().__init__()
        self.mode, self.collab = mode, collab
        self.register_buffer("text", torch.as_tensor(text))
        self.semantic = nn.Linear(text.shape[1], comps.shape[0])
        with torch.no_grad():
            self.semantic.weight.copy_(torch.as_tensor(comps))
            self.semantic.bias.copy_(-torch.as_tensor(comps) @ torch.as_tensor(mean))
        self.semantic.requires_grad_(mode != "frozen")
        self.gate = nn.Parameter(torch.zeros(()))

    def alpha(self) -> float:
        fixed = {"collab": 0.0, "semantic": 1.0}
        return fixed.get(self.mode, float(torch.sigmoid(self.gate.detach())))

    def semantic_head(self, iid):
        return F.normalize(self.semantic(self.text[iid]), dim=-1)

    def forward(self, x, iid, aisle, dept):
        if self.mode == "semantic":
            return self.semantic_head(iid)
        a = torch.sigmoid(self.gate)
        mix = a * self.semantic_head(iid) + (1 - a) * self.collab(x, iid, aisle, dept)
        return F.normalize(mix, dim=-1)


class DualTwoTower(C.TwoTower):
    """TwoTower whose item tower is a DualItemTower; alpha is logged after every epoch."""

    def __init__(
        self,
        cfg,
        feats,
        n_users,
        n_items,
        device="cpu",
        *,
        text=None,
        mean=None,
        comps=None,
        mode="frozen",
    ):
        self.text, self.mean, self.comps, self.mode = text, mean, comps, mode
        super().__init__(cfg, feats, n_users, n_items, device)

    def make_item_tower(self, n_items):
        collab = None if self.mode == "semantic" else super().make_item_tower(n_items)
        return DualItemTower(collab, self.text, self.mean, self.comps, self.mode)

    def epoch_info(self):
        return {"alpha": self.item_tower.alpha()}

    def semantic_vectors(self) -> np.ndarray:
        with torch.no_grad():
            return (
                self.item_tower.semantic_head(torch.arange(len(self.item_x), device=self.device))
                .cpu()
                .numpy()
            )


# ----------------------------------------------------------------------------
# "destroyed?": how much of the MiniLM space an item space keeps (candidates for common)
def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of each item's k nearest neighbours (cosine, itself excluded) that the two
    spaces share: 1 = same neighbourhoods, about k / n for unrelated spaces."""

    def nn_sets(x):
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return np.argpartition(-s, k, axis=1)[:, :k]

    na, nb = nn_sets(a), nn_sets(b)
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(na, nb)]))


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same items."""
    a, b = a - a.mean(0), b - b.mean(0)
    num = np.linalg.norm(b.T @ a) ** 2
    return float(num / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def space_report(vecs: np.ndarray, text: np.ndarray) -> dict:
    return {"overlap@10": neighbour_overlap(vecs, text), "cka": linear_cka(vecs, text)}


# ----------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)

    # data, split, features from training rows, reference baselines
    exp = experiment.Experiment(
        "exp5_dual_head", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    exp.add_baselines()

    # the semantic input: MiniLM vectors of the item template texts, and their PCA
    t0 = time.perf_counter()
    text = T.embed_texts(T.item_template_texts(exp.ds), progress=not args.quiet)
    mean, comps = pca_projection(text, args.dim)
    exp.timings["text_s"] = round(time.perf_counter() - t0, 2)
    semantic = {"text": text, "mean": mean, "comps": comps}
    # "destroyed?" is measured on a seeded sample of items (the n x n similarities)
    rng = np.random.default_rng(C.RANDOM_SEED)
    sample = np.sort(rng.permutation(exp.ds.n_items)[:SPACE_ITEMS])
    pca_space = space_report(((text - mean) @ comps.T)[sample], text[sample])

    # cold start: 10% of the items lose all their training rows
    cold = None if args.no_cold else cold_start(exp)

    # every arm over the same seeds: alpha per epoch, final validation loss, item spaces
    curves, val, space = ({a: [] for a in ARMS} for _ in range(3))
    for seed in exp.seeds:
        cfg = experiment.tower_config(args, seed)
        for arm in ARMS:
            curve, loss, spaces = train_arm(exp, cfg, arm, semantic, sample, cold)
            curves[arm].append(curve)
            val[arm].append(loss)
            space[arm].append(spaces)
    cold_ref = None if cold is None else cold_references(exp, cold)

    # the standard table, the cold-start table, paired gains over the reference
    exp.print_table(
        arms=[a for a in exp.runs if "(cold" not in a],
        title="experiment 5: dual-head item tower (all held-out items)",
    )
    if cold is not None:
        print_cold_table(exp, cold, cold_ref)
    gains = exp.print_gains(ARMS[1:], "collaborative only")
    print_seed_gains(exp, gains)
    cold_gains = {}
    if cold is not None:
        cold_gains = exp.print_gains(
            [f"{a} (cold items)" for a in ARMS[1:]], "collaborative only (cold items)"
        )

    # validation loss, alpha and "destroyed?" per arm; the verdict
    rows = space_rows(curves, val, space)
    print_space_table(rows, pca_space, len(sample), args.dim)
    verdict(exp, gains, rows)
    exp.write(
        {
            "tower_config": {
                **experiment.tower_config(args, exp.seeds[0]).key(),
                "seed": exp.seeds,
            },
            "gate": "alpha = sigmoid(gate) = weight of the semantic head; heads L2-normalised",
            "gains": gains,
            "cold_gains": cold_gains,
            "alpha_curves": {a: curves[a] for a in ARMS},
            "val_loss": val,
            "spaces": space,
            "pca_space": pca_space,
            "space_items": len(sample),
            "cold_items": 0 if cold is None else len(cold.items),
            "cold_references": cold_ref,
            "text_model": T.TEXT_MODEL,
        }
    )
    return exp.summary()


# ----------------------------------------------------------------------------
# --- arms: one seed of one arm, and its cold-start twin
class ColdStart(NamedTuple):
    """The cold-start arms' data: a split whose training rows lack the cold items, the cold
    items, features from those training rows, and the users who bought a cold item."""

    split: C.Split
    items: np.ndarray
    feats: C.Features
    users: np.ndarray


def cold_start(exp) -> ColdStart:
    """C.cold_start_split of the experiment's split (10% of the items lose all training rows)
    with its features and evaluation users."""
    split, items = C.cold_start_split(exp.split)
    return ColdStart(split, items, C.build_features(exp.ds, split.train), split.eval_users())


def train_arm(exp, cfg, arm: str, semantic: dict, sample: np.ndarray, cold: ColdStart | None):
    """Train `arm` on the seed of `cfg` (and its cold-start twin when `cold`), adding their
    lists to `exp`. Returns (alpha per epoch, final validation loss, "destroyed?" report:
    tower_before / tower_after, and head_before / head_after for arms with a semantic head)."""
    mode = MODES[arm]
    dual = mode != "collab"
    model_cls = DualTwoTower if dual else C.TwoTower
    model_kw = {"mode": mode, **semantic} if dual else {}
    # the collaborative arm is the standard two-tower (its saved towers are shared)
    train_kw = (
        {"model_cls": DualTwoTower, "variant": {"item_tower": mode}, **model_kw} if dual else {}
    )
    # before training: the same seed's freshly initialised model
    fresh = model_cls(cfg, exp.feats, exp.ds.n_users, exp.ds.n_items, exp.device, **model_kw)
    model = exp.train(cfg, **train_kw)
    exp.add(arm, C.retrieve(model, exp.users)[0])
    log = model.training_log["epochs"]
    text = semantic["text"][sample]
    spaces = {
        "tower_before": space_report(fresh.embed_items()[sample], text),
        "tower_after": space_report(model.embed_items()[sample], text),
    }
    if dual:
        spaces["head_before"] = space_report(fresh.semantic_vectors()[sample], text)
        spaces["head_after"] = space_report(model.semantic_vectors()[sample], text)
    if cold is not None:
        variant = {**train_kw.get("variant", {}), "cold": True}
        twin = exp.train(
            cfg, feats=cold.feats, train=cold.split.train, **{**train_kw, "variant": variant}
        )
        exp.add(
            f"{arm} (cold items)",
            C.retrieve(twin, cold.users)[0],
            users=cold.users,
            split=cold.split,
        )
    return [e.get("alpha", 0.0) for e in log], log[-1]["val_loss"], spaces


def cold_references(exp, cold: ColdStart) -> dict:
    """Popularity / top-frequency + popular R@20 on the cold items (both ~0: the items never
    appear in the cold training rows), so the table says what a model without text can do."""
    refs = C.baseline_rankings(cold.feats, cold.users, exp.ds.n_items)
    out = {}
    for name in ("popularity", experiment.REFERENCE_BASELINE):
        r = C.evaluate(refs[name], cold.users, cold.split, cold.feats)
        out[name] = r["all"]["recall@20"]
    return out


# ----------------------------------------------------------------------------
# --- reporting
def print_cold_table(exp, cold: ColdStart, cold_ref: dict) -> None:
    """Prints the cold-start arms' table and the reference baselines' R@20 on cold items."""
    exp.print_table(
        arms=[a for a in exp.runs if "(cold" in a],
        columns=["R@5", "R@10", "R@20", "NDCG@10"],
        title=f"cold-start items ({len(cold.items)} items with no training rows; "
        f"{len(cold.users)} users who bought one in held-out rows)",
    )
    print(
        "  references on cold items: " + ", ".join(f"{k} R@20 {v:.3f}" for k, v in cold_ref.items())
    )


def print_seed_gains(exp, gains: dict) -> None:
    """Prints each arm's recall@10 gain over 'collaborative only' per training seed (same
    seed, all users) and records it as gains[arm]["recall@10"]["per_seed"]: the verdict
    needs every seed, not only the first seed's paired interval."""
    print("gain over 'collaborative only' per training seed (recall@10, same seed):")
    for arm in ARMS[1:]:
        d = [
            x["all"]["recall@10"] - y["all"]["recall@10"]
            for x, y in zip(exp.runs[arm], exp.runs["collaborative only"])
        ]
        gains[arm]["recall@10"]["per_seed"] = d
        print(
            f"  {arm:<44}{np.mean(d):+.4f} ± {np.std(d):.4f}  per seed "
            + " ".join(f"{x:+.4f}" for x in d)
        )


def space_rows(curves: dict, val: dict, space: dict) -> dict:
    """Returns {arm: row} of validation loss and "destroyed?" measures as (mean, std) over
    seeds (None where the arm has no semantic head) and alpha per epoch (mean over seeds)."""

    def mean_std(reports, part, measure):
        if part not in reports[0]:
            return None
        vals = [r[part][measure] for r in reports]
        return float(np.mean(vals)), float(np.std(vals))

    rows = {}
    for arm in ARMS:
        sp = space[arm]
        rows[arm] = {
            "val loss": (float(np.mean(val[arm])), float(np.std(val[arm]))),
            "alpha by epoch": " ".join(f"{x:.3f}" for x in np.array(curves[arm]).mean(0)),
            "tower ovl@10 init": mean_std(sp, "tower_before", "overlap@10"),
            "tower ovl@10 after": mean_std(sp, "tower_after", "overlap@10"),
            "tower CKA after": mean_std(sp, "tower_after", "cka"),
            "head ovl@10 init": mean_std(sp, "head_before", "overlap@10"),
            "head ovl@10 after": mean_std(sp, "head_after", "overlap@10"),
            "head CKA after": mean_std(sp, "head_after", "cka"),
        }
    return rows


def print_space_table(rows: dict, pca_space: dict, n_items: int, dim: int) -> None:
    """Prints the validation loss / alpha / "destroyed?" table and its references: the PCA
    projection itself and the overlap of unrelated spaces."""
    print(
        f"\nvalidation loss, alpha (weight of the semantic head, mean over seeds per epoch) and "
        f"'destroyed?' (overlap@10 / linear CKA with the MiniLM space, {n_items} items):"
    )
    print(experiment.format_table(rows, list(next(iter(rows.values())))))
    print(
        f"  reference: the PCA-{dim} projection itself has overlap@10 "
        f"{pca_space['overlap@10']:.3f}, CKA {pca_space['cka']:.3f}; unrelated spaces: "
        f"overlap about {NEIGHBOURS / n_items:.3f}"
    )


def verdict(exp, gains: dict, rows: dict) -> str:
    """Original claims: training destroys the semantic space; a frozen semantic head recovers
    it (alpha near 1, lower validation loss). Judged on the frozen arm's R@10 gain ('beats'
    by MIN_EFFECT: the paired interval of the first seed and the gain on every seed). Returns
    the verdict line."""
    g = gains["frozen semantic"]["recall@10"]
    seeds = g["per_seed"]
    status = experiment.verdict_word(g["ci95"], "beats", MIN_EFFECT, seeds=seeds)
    t = rows["trainable semantic"]
    a_fro = rows["frozen semantic"]["alpha by epoch"].split()[-1]
    a_tr = t["alpha by epoch"].split()[-1]
    return exp.verdict(
        status,
        (
            f"a frozen PCA semantic head changes R@10 by {experiment.format_interval(g, 4)} "
            f"(paired, first seed; per seed {' '.join(f'{x:+.4f}' for x in seeds)}), trainable "
            f"{gains['trainable semantic']['recall@10']['mean']:+.4f}; "
            f"final alpha {a_fro} frozen / {a_tr} trainable (original 0.986 / 0.889); val loss "
            f"{rows['frozen semantic']['val loss'][0]:.4f} frozen, "
            f"{t['val loss'][0]:.4f} trainable, "
            f"{rows['collaborative only']['val loss'][0]:.4f} baseline; trainable head overlap@10 "
            f"with MiniLM {t['head ovl@10 init'][0]:.3f} -> {t['head ovl@10 after'][0]:.3f}"
        ),
    )


if __name__ == "__main__":
    experiment.main_guard(main)
