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
  MiniLM MLP           the original's arm (its experiment 1): the item's MiniLM vector is the
                       item tower's only input, through a trainable MLP (C.mlp, the towers'
                       two ReLU layers), trained with the collaborative (InfoNCE) loss
Reported per arm: R@K / NDCG@10 (mean ± std over seeds), gains over the reference (paired
over users on the first seed; per seed with a 95% t interval over seeds), validation loss,
alpha per epoch, cold-start items (C.cold_start_split: 10% of items lose all training rows;
scored on their held-out purchases), and "destroyed?": neighbour overlap@10 and linear CKA
between an item space and the MiniLM space (always the MiniLM vectors themselves), at
initialisation (the same seed's untrained model) and after training, for the tower's output
and for the semantic head alone.
"Destroyed?" is decided on the MiniLM MLP arm's survival share, per seed:
    survival = (overlap after - floor) / (overlap at init - floor)
floor = the collaborative-only tower's overlap after training (a tower that never saw the
text): 1 = the MLP kept the neighbourhoods it started with, 0 = no more MiniLM structure
than a tower without text. Confirmed (destroyed) when the interval over seeds lies below
SURVIVAL_MARGIN, refuted when it lies above it.
"""

import options

QUESTION = "Are semantic embeddings destroyed by MLP training? Can a frozen head recover them?"
ORIGINAL_FINDING = (
    "gate alpha 0.986 (frozen) / 0.889 (trainable); val loss 2.7699 trainable vs 2.8574 "
    "baseline (2,000 heaviest users, 5,000 items; one run)"
)

# defaults (all overridable from the command line)
# SEEDS, chosen from the measured seed noise on the real sample: the deciding survival share
# has a per-seed std of ~0.01 (3 seeds already decide it); the frozen head's per-seed R@10
# gain had std 0.0043 over 5 seeds, so seeds_needed says 14 seeds for its clause to land
# either way at MIN_EFFECT (half-width <= 0.0025). Each run prints its own seed plan.
SEEDS = 14  # training seeds per arm
EPOCHS = 2  # training epochs per arm (the tower's default is 4; see README)
ARMS = (
    "collaborative only",
    "frozen semantic",
    "trainable semantic",
    "semantic only",
    "MiniLM MLP",
)
MODES = dict(zip(ARMS, ("collab", "frozen", "trainable", "semantic", "mlp")))
GATED = ("frozen semantic", "trainable semantic")  # the arms with a learned gate
NEIGHBOURS = 10  # overlap@10 of nearest-neighbour sets
SPACE_ITEMS = 3000  # items (seeded sample) the overlap / CKA are measured on
MIN_EFFECT = 0.005  # R@10 gain that matters
TARGET_HALF_WIDTH = MIN_EFFECT / 2  # a gain of MIN_EFFECT / 2 can land either way
SURVIVAL_MARGIN = 0.25  # "destroyed": less than a quarter of the init's structure survives
ORIGINAL_ALPHA = {"frozen semantic": 0.986, "trainable semantic": 0.889}
ORIGINAL_VAL_LOSS = {"trainable semantic": 2.7699, "collaborative only": 2.8574}
QUICK = {"users": 300, "items": 1500, "epochs": 1, "seeds": 2}


def parse_args(argv=None):
    p = options.script_parser(__doc__, seeds=SEEDS, llm_args=False)
    g = p.add_argument_group("experiment 5")
    g.add_argument("--no-cold", action="store_true", help="skip the cold-start item arms")
    p.set_defaults(epochs=EPOCHS)
    args = options.parse_args_with_quick(p, argv, QUICK)
    return args


# --help answers here, before the heavy imports below (torch alone takes seconds)
options.help_before_imports(parse_args)

import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import common as C
import experiment
import metrics
import text as T


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


class MiniLMItemTower(nn.Module):
    """The original's item tower (its experiment 1): the item's MiniLM vector, the tower's
    only input, through a trainable MLP (C.mlp) -> dim, unit norm. Its output is its semantic
    space (semantic_head), so alpha is 1 by construction."""

    def __init__(self, text: np.ndarray, hidden: int, dim: int):
        super().__init__()
        self.register_buffer("text", torch.as_tensor(text))
        self.mlp = C.mlp(text.shape[1], hidden, dim)

    def alpha(self) -> float:
        return 1.0

    def semantic_head(self, iid):
        return F.normalize(self.mlp(self.text[iid]), dim=-1)

    def forward(self, x, iid, aisle, dept):
        return self.semantic_head(iid)


class DualTwoTower(C.TwoTower):
    """TwoTower whose item tower is a DualItemTower (or, mode 'mlp', a MiniLMItemTower);
    alpha is logged after every epoch."""

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
        if self.mode == "mlp":
            return MiniLMItemTower(self.text, self.cfg.hidden, self.cfg.dim)
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

    # the semantic input: MiniLM vectors of the item template texts, and their PCA; saved
    # towers are keyed by the texts and the text model too (text_variant)
    t0 = time.perf_counter()
    texts = T.item_template_texts(exp.ds)
    text = T.embed_texts(texts, progress=not args.quiet)
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
        cfg = options.tower_config(args, seed)
        for arm in ARMS:
            curve, loss, spaces = train_arm(
                exp, cfg, arm, semantic, sample, cold, text_variant(texts)
            )
            curves[arm].append(curve)
            val[arm].append(loss)
            space[arm].append(spaces)
    cold_ref = None if cold is None else cold_references(exp, cold)

    # the standard table, the cold-start table, gains over the reference (users, seeds)
    exp.print_table(
        arms=[a for a in exp.runs if "(cold" not in a],
        title="experiment 5: dual-head item tower (all held-out items)",
    )
    if cold is not None:
        print_cold_table(exp, cold, cold_ref)
    gains = exp.print_gains(ARMS[1:], "collaborative only")
    sgains = print_seed_gains(exp, ARMS[1:], "collaborative only")
    cold_gains = {}
    if cold is not None:
        cold_arms = [f"{a} (cold items)" for a in ARMS[1:]]
        cold_gains = exp.print_gains(cold_arms, "collaborative only (cold items)")
        cold_gains["over_seeds"] = print_seed_gains(
            exp, cold_arms, "collaborative only (cold items)"
        )

    # validation loss, alpha and "destroyed?" per arm; the findings and the verdict
    rows = space_rows(curves, val, space)
    print_space_table(rows, pca_space, len(sample), args.dim)
    findings = {
        "survival": survival(space, pca_space),
        "alpha": alpha_findings(curves),
        "val_loss": val_loss_findings(val),
    }
    print_findings(findings)
    findings["seed_plan"] = print_seed_plan(sgains, findings["survival"]["overlap@10"]["share"])
    verdict(exp, sgains, findings)
    exp.write(
        {
            "verdict_reads": verdict_reads(sgains, findings),
            "tower_config": {
                **options.tower_config(args, exp.seeds[0]).key(),
                "seed": exp.seeds,
            },
            "gate": "alpha = sigmoid(gate) = weight of the semantic head; heads L2-normalised",
            "gains": gains,
            "gains_over_seeds": sgains,
            "cold_gains": cold_gains,
            "findings": findings,
            "alpha_curves": {a: curves[a] for a in ARMS},
            "val_loss": val,
            "spaces": space,
            "pca_space": pca_space,
            "space_items": len(sample),
            "cold_items": 0 if cold is None else len(cold.items),
            "cold_references": cold_ref,
            "text_model": T.TEXT_MODEL,
            "text_key": text_variant(texts),
        }
    )
    return exp.summary()


def text_variant(texts: list[str]) -> dict:
    """The saved-tower key's share of the semantic input: the item texts (short hash) and
    the sentence model that embedded them."""
    return {"text": C.short_hash("\n".join(texts), 12), "text_model": T.TEXT_MODEL}


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


def train_arm(
    exp,
    cfg,
    arm: str,
    semantic: dict,
    sample: np.ndarray,
    cold: ColdStart | None,
    text_key: dict | None = None,
):
    """Train `arm` on the seed of `cfg` (and its cold-start twin when `cold`), adding their
    lists to `exp`. Returns (alpha per epoch, final validation loss, "destroyed?" report:
    tower_before / tower_after, and head_before / head_after for arms with a semantic head,
    each measured against the MiniLM vectors `semantic["text"]` of the `sample` items).
    `text_key` (text_variant) joins the saved-tower key of the arms that read the text."""
    mode = MODES[arm]
    dual = mode != "collab"
    model_cls = DualTwoTower if dual else C.TwoTower
    model_kw = {"mode": mode, **semantic} if dual else {}
    # the collaborative arm is the standard two-tower (its saved towers are shared)
    train_kw = (
        {
            "model_cls": DualTwoTower,
            "variant": {"item_tower": mode, **(text_key or {})},
            **model_kw,
        }
        if dual
        else {}
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


def print_seed_gains(exp, arms, reference: str, metric: str = "recall@10") -> dict:
    """Prints and returns {arm: metrics.seed_interval of its per-seed `metric` gain over
    `reference`} (same seed, same users; 95% t interval over seeds, None with one seed)."""
    print(f"gain over '{reference}' per training seed ({metric}; mean ± std, 95% t interval):")
    out = {}
    for arm in arms:
        d = [
            x["all"][metric] - y["all"][metric] for x, y in zip(exp.runs[arm], exp.runs[reference])
        ]
        out[arm] = g = metrics.seed_interval(d)
        print(f"  {arm:<44}{fmt_seeds(g)}  per seed " + " ".join(f"{x:+.4f}" for x in d))
    return out


def fmt_seeds(g: dict, digits: int = 4, sign: bool = True) -> str:
    """'+0.0012 [-0.0010, +0.0034] over 5 seeds' from a metrics.seed_interval result (the
    mean alone, 'one seed', without an interval)."""
    f = f"{{:{'+' if sign else ''}.{digits}f}}".format
    n = len(g["per_seed"])
    if g["ci95"] is None:
        return f"{f(g['mean'])} (one seed, no interval)"
    return f"{f(g['mean'])} [{f(g['ci95'][0])}, {f(g['ci95'][1])}] over {n} seeds"


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


# --- the findings: "destroyed?", the gate, the validation loss
def survival(
    space: dict, ceiling: dict, arm: str = "MiniLM MLP", floor: str = "collaborative only"
) -> dict:
    """Per seed, the share of the attainable MiniLM structure that `arm`'s item space keeps,
    at init and after training: (value - floor) / (ceiling - floor), where floor = the
    `floor` tower after training (a tower that never saw the text) and ceiling = the PCA
    projection of MiniLM to the tower size (`ceiling`: space_report of it), for overlap@10
    (deciding) and CKA, with intervals over seeds; the raw values beside them. None where the
    ceiling does not lie above the floor (the measure cannot tell them apart)."""
    out = {}
    for m in ("overlap@10", "cka"):
        init = np.array([r["tower_before"][m] for r in space[arm]])
        after = np.array([r["tower_after"][m] for r in space[arm]])
        base = np.array([r["tower_after"][m] for r in space[floor]])
        span = ceiling[m] - base
        ok = bool((span > 0).all())
        out[m] = {
            "init": init.tolist(),
            "after": after.tolist(),
            "floor": base.tolist(),
            "ceiling": ceiling[m],
            "share_init": metrics.seed_interval((init - base) / span) if ok else None,
            "share": metrics.seed_interval((after - base) / span) if ok else None,
            "change": metrics.seed_interval(after - init),
        }
    return out


def alpha_findings(curves: dict) -> dict:
    """The gate after training (weight of the semantic head's unit vector) per seed, with its
    interval over seeds, read against the neutral start 0.5 (heads are normalised, so alpha
    is a preference, not a scale gap) and against the original's value."""
    out = {}
    for arm in GATED:
        g = metrics.seed_interval([c[-1] for c in curves[arm]])
        ci = g["ci95"]
        prefers = preference(g["ci95"])
        orig = ORIGINAL_ALPHA[arm]
        inside = ci is not None and ci[0] <= orig <= ci[1]
        out[arm] = {**g, "prefers": prefers, "original": orig, "original_inside": inside}
    return out


def preference(ci) -> str:
    """Which head the gate prefers, from the interval over seeds of the final alpha."""
    if ci is None:
        return "no interval (one seed)"
    if ci[0] > 0.5:
        return "the semantic head"
    return "the collaborative head" if ci[1] < 0.5 else "neither head (0.5 inside the interval)"


def val_loss_findings(val: dict, reference: str = "collaborative only") -> dict:
    """Per-seed final validation loss of each arm minus the reference's (same seed: the same
    held-aside rows), with intervals over seeds; the original claim 'the trainable variant
    reaches a lower validation loss than the baseline' is read on 'trainable semantic'
    (confirmed when the interval lies below 0, refuted when above)."""
    out = {a: metrics.seed_interval(np.subtract(val[a], val[reference])) for a in ARMS[1:]}
    ci = out["trainable semantic"]["ci95"]
    word = "inconclusive" if ci is None else experiment.verdict_word([-ci[1], -ci[0]], "beats")
    means = {a: float(np.mean(val[a])) for a in ARMS}
    return {
        "diff_vs_reference": out,
        "claim_lower_than_baseline": word,
        "lowest_arm": min(means, key=means.get),
        "mean": means,
    }


def verdict_reads(sgains: dict, f: dict) -> dict:
    """What each clause of the verdict reads (for the report and its plots), with its margin
    also written into the gain dict it reads ("margin")."""
    share = f["survival"]["overlap@10"]["share"]
    if share is not None:
        share["margin"] = SURVIVAL_MARGIN
    sgains["frozen semantic"]["margin"] = MIN_EFFECT
    return {
        "destroyed": {
            "gain": "findings.survival.overlap@10.share",
            "metric": "survival share of MiniLM overlap@10 (0 = floor, 1 = PCA ceiling)",
            "reference": "collaborative only (floor), PCA of MiniLM (ceiling)",
            "interval": "t over seeds",
            "claim": f"destroyed: share below {SURVIVAL_MARGIN}",
            "margin": SURVIVAL_MARGIN,
        },
        "recovery": {
            "gain": "gains_over_seeds.frozen semantic",
            "metric": "recall@10",
            "reference": "collaborative only",
            "interval": "t over seeds",
            "claim": "beats",
            "margin": MIN_EFFECT,
        },
    }


def destroyed_word(share: dict | None) -> str:
    """'destroyed' verdict word from the survival share's interval over seeds: confirmed
    below SURVIVAL_MARGIN, refuted above it, else (or with one seed) inconclusive."""
    ci = None if share is None else share["ci95"]
    if ci is None:
        return "inconclusive"
    if ci[1] < SURVIVAL_MARGIN:
        return "confirmed"
    return "refuted" if ci[0] > SURVIVAL_MARGIN else "inconclusive"


def print_seed_plan(sgains: dict, share: dict | None) -> dict:
    """Prints and returns the seed count against what each verdict needs: the survival share
    (against SURVIVAL_MARGIN) and the frozen head's R@10 gain (half-width <= MIN_EFFECT / 2)."""
    fro = metrics.seed_plan(sgains["frozen semantic"], TARGET_HALF_WIDTH)
    n = fro["seeds"]
    surv = None if share is None else metrics.seed_plan(share, SURVIVAL_MARGIN)
    plan = {
        "seeds": n,
        "survival_half_width": surv and surv["half_width"],
        "frozen_r10_std": fro["std"],
        "frozen_r10_half_width": fro["half_width"],
        "frozen_r10_seeds_needed": fro["needed"],
    }
    if fro["std"] is None:
        print("seed plan: 1 seed; the seed std is not measured (run --seeds >= 2)")
        return plan
    print(
        f"seed plan: {n} seeds; survival share half-width {_f3(plan['survival_half_width'])}; "
        f"frozen head R@10 gain std {fro['std']:.4f}, half-width {fro['half_width']:.4f}: "
        f"{fro['needed']} seeds give <= {TARGET_HALF_WIDTH} -> "
        + ("enough" if fro["enough"] else "NOT enough")
    )
    return plan


def _f3(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def fmt_share(g: dict | None) -> str:
    return "undefined (ceiling not above floor)" if g is None else fmt_seeds(g, 3, sign=False)


def print_findings(f: dict) -> None:
    """Prints the survival of the MiniLM space, the gate and the validation-loss findings."""
    print(
        "\n'destroyed?' - the MiniLM MLP's item space against MiniLM; survival share = "
        "(value - floor) / (ceiling - floor), floor = collaborative only after training, "
        "ceiling = the PCA projection:"
    )
    for m, r in f["survival"].items():
        print(
            f"  {m:<11} init {np.mean(r['init']):.3f} -> after {np.mean(r['after']):.3f} "
            f"(change {fmt_seeds(r['change'], 3)}); floor {np.mean(r['floor']):.3f}, ceiling "
            f"{r['ceiling']:.3f}; survival share at init {fmt_share(r['share_init'])}, after "
            f"training {fmt_share(r['share'])}"
        )
    print("finding - gate alpha after training (weight of the semantic head; start 0.5):")
    for arm, g in f["alpha"].items():
        print(
            f"  {arm:<22}{fmt_seeds(g, 3, sign=False)}: prefers {g['prefers']}; the "
            f"original's {g['original']} is {'inside' if g['original_inside'] else 'outside'} it"
        )
    v = f["val_loss"]
    print("finding - final validation loss minus the collaborative-only tower's (same seed):")
    for arm, g in v["diff_vs_reference"].items():
        print(f"  {arm:<22}{fmt_seeds(g)}")
    print(
        f"  'trainable reaches a lower validation loss than the baseline': "
        f"{v['claim_lower_than_baseline']}; lowest mean: {v['lowest_arm']}"
    )


def verdict(exp, sgains: dict, f: dict) -> str:
    """The verdict line. Original claims: MLP training destroys the semantic space (decided
    on the MiniLM MLP arm's survival share, destroyed_word); a frozen semantic head recovers
    it (its R@10 gain over seeds, 'beats' by MIN_EFFECT, every seed). The gate and the
    validation loss are reported as findings in the same line. Returns the verdict line."""
    sv = f["survival"]["overlap@10"]
    status = destroyed_word(sv["share"])
    fro = sgains["frozen semantic"]
    ci = fro["ci95"] or [-np.inf, np.inf]
    frozen_word = experiment.verdict_word(ci, "beats", MIN_EFFECT, seeds=fro["per_seed"])
    al, v = f["alpha"], f["val_loss"]
    tr = v["diff_vs_reference"]["trainable semantic"]
    s = (
        f"trained with the collaborative loss, the MiniLM MLP keeps a survival share "
        f"{fmt_share(sv['share'])} of the attainable MiniLM neighbourhoods (at init "
        f"{fmt_share(sv['share_init'])}; overlap@10 {np.mean(sv['init']):.3f} -> "
        f"{np.mean(sv['after']):.3f}, floor {np.mean(sv['floor']):.3f}, ceiling "
        f"{sv['ceiling']:.3f}; 'destroyed' below {SURVIVAL_MARGIN}); frozen PCA head "
        f"R@10 gain {fmt_seeds(fro)}: recovery {frozen_word} (margin {MIN_EFFECT}); MiniLM MLP "
        f"R@10 gain {fmt_seeds(sgains['MiniLM MLP'])}; finding - final alpha "
        + " / ".join(f"{fmt_seeds(al[a], 3, sign=False)} {a.split()[0]}" for a in GATED)
        + f" (original {ORIGINAL_ALPHA['frozen semantic']} / "
        f"{ORIGINAL_ALPHA['trainable semantic']}); finding - trainable val loss minus baseline "
        f"{fmt_seeds(tr)}: lower-than-baseline claim {v['claim_lower_than_baseline']} "
        f"(original 2.7699 vs 2.8574)"
    )
    return exp.verdict(status, s)


if __name__ == "__main__":
    experiment.main_guard(main)
