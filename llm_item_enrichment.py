"""Experiment 1: do LLM item descriptions improve retrieval over template text?

Original finding (2,000 heaviest users, 5,000 items): LLM descriptions were 6.3x longer than
the template text (65 vs 10 words) and zero-shot R@10 went from 0.0010 (template) to 0.0019
(descriptions): "marginal". Its template showed department "unknown"; here the template is
"name. aisle. department." with the real aisle and department (common.item_template_texts).

Protocol, top to bottom (main's blocks; each stage is a function below it):
  1. data -> the one split -> features from training rows (common.Experiment).
  2. item set: every item, or with --limit N the N most bought (training rows) items; every
     arm, baseline and truth is then restricted to that set (said in the output).
  3. texts per source: template | description (prompt item_description through llm/,
     cached by product + prompt version + model) | both (template + " " + description).
     Embedded with MiniLM (common.embed_texts, cached, L2-normalised).
  4. zero-shot retrieval, per source: FAISS over the item text embeddings with
       purchases: user vector = count-weighted mean of the text embeddings of the user's
                  training items;
       profile:   the embedded template profile text (common.profile_template_text).
  5. trained: the two-tower whose item tower also gets the frozen text embedding as an
     input (TextItemTower), over --seeds seeds, beside the plain two-tower.
  6. cold start: a seeded 10% of the item set (stratified by popularity; common.
     cold_start_split) loses all its training rows; features and models come from the
     remaining rows; every arm ranks the whole item set, scored on each user's held-out
     purchases of cold items only. Text is the only signal about a cold item there.
  7. description statistics, paired gains description - template per arm (95% paired
     bootstrap over users, first seed), the cost per 1,000 items, the verdict.

    uv run llm_item_enrichment.py --no-llm                      # template arms only
    uv run llm_item_enrichment.py --llm local --limit 100 --seeds 1 --epochs 1
    uv run llm_item_enrichment.py --quick                       # ~1 minute smoke run
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import sparse

import common as C
import config
import descriptions as D
import experiment
import llm
import text as T

QUESTION = "Do LLM item descriptions improve retrieval over template text?"
ORIGINAL_FINDING = (
    "descriptions 6.3x longer than the template text (65 vs 10 words); zero-shot R@10 0.0019 "
    "(descriptions) vs 0.0010 (template): 'marginal' (2,000 heaviest users, 5,000 items)"
)

# ---------------------------------------------------------------------------------------------
# constants (each one is also a command-line option)
COLD_FRAC = 0.1  # share of the item set made cold (no training rows at all)
SOURCES = ("template", "description", "both")  # the text an item is embedded from
ZERO_SHOT = ("purchases", "profile")  # how a user vector is made without training
QUICK = {"users": 400, "items": 1500, "seeds": 1, "epochs": 1, "hidden": 64, "limit": 40}


# ---------------------------------------------------------------------------------------------
# the trained arm: an item tower with the frozen text embedding as an extra input


class TextItemTower(C.ItemTower):
    """C.ItemTower whose MLP also reads the item's frozen text embedding (not trained)."""

    def __init__(self, cfg, n_features, n_aisles, n_depts, n_items, text_emb: np.ndarray):
        super().__init__(cfg, n_features + text_emb.shape[1], n_aisles, n_depts, n_items)
        self.register_buffer(
            "text", torch.as_tensor(text_emb, dtype=torch.float32), persistent=False
        )

    def forward(self, x, iid, aisle, dept):
        return super().forward(torch.cat([x, self.text[iid]], 1), iid, aisle, dept)


class TextTwoTower(C.TwoTower):
    def __init__(self, cfg, feats, n_users, n_items, device="cpu", text_emb=None):
        self.text_emb = text_emb
        super().__init__(cfg, feats, n_users, n_items, device)

    def make_item_tower(self, n_items):
        f = self.feats
        return TextItemTower(
            self.cfg,
            f.item.shape[1],
            int(f.item_aisle.max()) + 1,
            int(f.item_dept.max()) + 1,
            n_items,
            self.text_emb,
        )


# ---------------------------------------------------------------------------------------------
# helpers: retrieval restricted to an item set, baselines on that set


def purchase_vectors(feats: C.Features, users: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Count-weighted mean of the text embeddings of each user's training items, unit norm."""
    m = sparse.csr_matrix(
        (feats.bought_counts.astype(np.float32), feats.bought_items, feats.bought_indptr),
        shape=(len(feats.user), len(emb)),
    )
    v = np.asarray(m[users] @ emb, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def baselines_on(feats: C.Features, users: np.ndarray, items: np.ndarray, k: int = C.K_MAX) -> dict:
    """random, popularity and top-frequency (+ popular) with every list restricted to
    `items` (candidate for common: baseline_rankings(..., items=))."""
    pop = feats.popularity_order()
    pop = pop[np.isin(pop, items)][: 2 * k]
    rng = np.random.default_rng(C.RANDOM_SEED)
    rand = np.stack([rng.choice(items, min(k, len(items)), replace=False) for _ in users])
    own = feats.pairs["item"].to_numpy()[C.top_frequency_order(feats)]
    top, padded = -np.ones((len(users), k), np.int64), -np.ones((len(users), k), np.int64)
    for j, u in enumerate(users):
        s, e = feats.bought_indptr[u], feats.bought_indptr[u + 1]
        mine = own[s:e][np.isin(own[s:e], items)][:k]
        fill = pop[~np.isin(pop, mine)][: k - len(mine)]
        top[j, : len(mine)] = mine
        padded[j, : len(mine) + len(fill)] = np.r_[mine, fill]
    return {
        "random": rand,
        "popularity": np.tile(pop[:k], (len(users), 1)),
        "top-frequency": top,
        "top-frequency + popular": padded,
    }


# ---------------------------------------------------------------------------------------------
# an item's text per source, embedded once and shared by every arm


@dataclasses.dataclass
class ItemText:
    """Each source's text of every item, its MiniLM embedding, and who wrote it (the LLM's
    label, for the table rows of description-based arms)."""

    texts: dict[str, list[str]]
    emb: dict[str, np.ndarray]
    label: dict[str, str]

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.emb)

    def key(self, source: str) -> str:
        """A short hash of one source's texts: trained towers are saved under it."""
        return config.short_hash("\n".join(self.texts[source]), n=12)


# ---------------------------------------------------------------------------------------------
# the protocol's stages, in the order main runs them


def item_set_and_cold_split(exp: experiment.Experiment, args):
    """(items, scope, split_s, cold, cold_items): the item set (every item, or the --limit most
    bought), the sentence that says so, the split scored on that set, and the cold-start split:
    a seeded --cold-frac of the set (popularity strata) with all its training rows removed,
    scored on held-out purchases of those cold items only."""
    ds, split = exp.ds, exp.split
    if args.limit:
        items = np.sort(exp.feats.popularity_order()[: args.limit])
        scope = (
            f"item set: the {len(items):,} most bought items (--limit); every arm, "
            f"baseline and truth below is restricted to them"
        )
        split_s = C.restrict_truth(split, items)
    else:
        items, split_s = np.arange(ds.n_items), split
        scope = f"item set: all {ds.n_items:,} items"
    # cold items are drawn inside the set; items outside it keep their training rows (they
    # stay training negatives of the trained arms)
    in_set = dataclasses.replace(split, train=split.train[split.train["item"].isin(items)])
    _, cold_items = C.cold_start_split(in_set, args.cold_frac)
    warm_rows = split.train[~split.train["item"].isin(cold_items)].reset_index(drop=True)
    cold = C.restrict_truth(dataclasses.replace(split, train=warm_rows), cold_items)
    return items, scope, split_s, cold, cold_items


def item_texts(ds: C.Dataset, items: np.ndarray, client, args) -> tuple[ItemText, dict, dict]:
    """(ItemText, descriptions {item: text}, describe info): the template text of every item
    and, with an LLM, the description and template + description of each item of the set
    (an item without one keeps its template text), all embedded."""
    progress = not args.quiet
    template = T.item_template_texts(ds)
    texts = {"template": template}
    desc, desc_info = {}, None
    if client:
        print(
            f"describing {len(items):,} items with {client.label} (cached answers are free; "
            "a killed run resumes from the cache)"
        )
        desc, desc_info = D.describe_items(ds, items, client, progress)
        missing = len(items) - len(desc)
        print(
            f"descriptions: {len(desc):,} of {len(items):,} items"
            + (f"; {missing} failed and use their template text" if missing else "")
        )
        texts["description"] = [desc.get(i, t) for i, t in enumerate(template)]
        texts["both"] = [t + (" " + desc[i] if i in desc else "") for i, t in enumerate(template)]
        if args.limit:
            print(
                "items outside the set keep their template text (they only matter as "
                "training negatives of the trained arm)"
            )
    sources = SOURCES if client else ("template",)
    emb = {s: T.embed_texts(texts[s], progress=progress) for s in sources}
    label = {s: client.label for s in sources if s != "template"} if client else {}
    return ItemText(texts, emb, label), desc, desc_info


def zero_shot_arms(exp, prefix, feats, users, split, text: ItemText, items) -> list[str]:
    """Add the zero-shot arms (user vector x text source, FAISS over `items`) on `split`,
    the user vectors built from its training rows; returns the arm names."""
    facts = T.user_profile_facts(exp.ds, split.train, users)
    profile = T.embed_texts(
        [T.profile_template_text(f) for f in facts], progress=not exp.args.quiet
    )
    arms = []
    for s in text.sources:
        uvec = {"purchases": purchase_vectors(feats, users, text.emb[s]), "profile": profile}
        for z in ZERO_SHOT:
            arm = f"{prefix}zero-shot {z} x {s}"
            exp.add(
                arm, C.search(uvec[z], text.emb[s], items), users, split, label=text.label.get(s)
            )
            arms.append(arm)
    return arms


def trained_arms(exp, prefix, users, split, text: ItemText, items, variant=None, **train_kw):
    """Add the two-tower without text and with each text source as a frozen item-tower input,
    per training seed, ranking `items`; returns the arm names. `variant` and `train_kw`
    (feats, train) go to exp.train: the cold start trains on its own rows."""
    no_text = f"{prefix}two-tower (no text)"
    with_text = {s: f"{prefix}two-tower + text x {s}" for s in text.sources}
    for seed in exp.seeds:
        cfg = experiment.tower_config(exp.args, seed)
        m = exp.train(cfg, variant=variant, **train_kw)
        exp.add(no_text, C.search(m.embed_users(users), m.embed_items(), items), users, split)
        for s in text.sources:
            m = exp.train(
                cfg,
                **train_kw,
                model_cls=TextTwoTower,
                text_emb=text.emb[s],
                variant={**(variant or {}), "text": s, "text_hash": text.key(s)},
            )
            exp.add(
                with_text[s],
                C.search(m.embed_users(users), m.embed_items(), items),
                users,
                split,
                label=text.label.get(s),
            )
    return [no_text, *with_text.values()]


def cold_start_arms(exp, cold, cold_items, text: ItemText, items) -> tuple[list[str], int]:
    """(arm names, users): random, popularity, zero-shot and (unless --no-train) trained arms
    on the cold-start split, features and towers from its rows only; every arm ranks the
    whole item set. Text is the only signal about a cold item there."""
    args, users = exp.args, cold.eval_users()
    feats = C.build_features(exp.ds, cold.train)
    print(
        f"cold start: {len(cold_items):,} cold items ({args.cold_frac:.0%} of the item set, "
        f"popularity strata), all their training rows removed; {len(users):,} users "
        "with held-out purchases of them; every arm ranks the whole item set"
    )
    reference = baselines_on(feats, users, items)
    arms = []
    for name in ("random", "popularity"):
        arms.append(f"cold: {name}")
        exp.add(arms[-1], reference[name], users, cold)
    arms += zero_shot_arms(exp, "cold: ", feats, users, cold, text, items)
    if not args.no_train:
        key = {"cold_items": config.short_hash("\n".join(str(i) for i in cold_items), n=12)}
        arms += trained_arms(
            exp, "cold: ", users, cold, text, items, key, feats=feats, train=cold.train
        )
    return arms, len(users)


# ---------------------------------------------------------------------------------------------
# options, and the protocol


def parse_args(argv=None):
    p = experiment.script_parser(__doc__, epilog_from=7)
    g = p.add_argument_group("experiment 1")
    g.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="describe and evaluate on the N most bought items only (cold-start "
        "items are drawn inside that set); default: every item",
    )
    g.add_argument(
        "--cold-frac",
        type=float,
        default=COLD_FRAC,
        help=f"share of the item set made cold-start (default {COLD_FRAC})",
    )
    g.add_argument(
        "--no-train",
        action="store_true",
        help="skip the trained two-tower arms (zero-shot and cold zero-shot only)",
    )
    args = experiment.parse_args_with_quick(p, argv, QUICK)
    if args.limit is not None and args.limit < 2 * C.K_MAX:
        raise C.ConfigError(f"--limit must be at least {2 * C.K_MAX} items")
    if not 0 < args.cold_frac < 1:
        raise C.ConfigError("--cold-frac must be between 0 and 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    exp = experiment.Experiment(
        "llm_item_enrichment", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    client = exp.start_llm("item_description")

    # --- the item set, and the cold-start items drawn inside it ----------------------------
    items, scope, split_s, cold, cold_items = item_set_and_cold_split(exp, args)
    users = split_s.eval_users()
    print(scope)

    # --- texts per source and their embeddings --------------------------------------------
    text, desc, desc_info = item_texts(exp.ds, items, client, args)

    # --- references: the baselines, restricted to the item set ----------------------------
    if args.limit:
        for name, ranked in baselines_on(exp.feats, users, items).items():
            exp.add(name, ranked, users, split_s)
    else:
        exp.add_baselines()

    # --- arms: zero-shot, trained (two-tower + frozen text input), cold start -------------
    zero_shot_arms(exp, "", exp.feats, users, split_s, text, items)
    if not args.no_train:
        trained_arms(exp, "", users, split_s, text, items)
    cold_arms, cold_users = cold_start_arms(exp, cold, cold_items, text, items)

    # --- tables ---------------------------------------------------------------------------
    warm_arms = [a for a in exp.runs if not a.startswith("cold:")]
    exp.print_table(warm_arms, title=f"warm items ({scope})")
    exp.print_table(
        cold_arms,
        title="cold start (the item set ranked, scored on held-out purchases of the cold items)",
        columns=["R@5", "R@10", "R@20", "NDCG@10"],
    )
    extra = {
        "item_set": {"items": len(items), "limit": args.limit, "scope": scope},
        "cold_start": {"items": len(cold_items), "frac": args.cold_frac, "users": cold_users},
    }
    if client:
        extra.update(
            description_stats=print_description_stats(exp.ds, text.texts["template"], desc, client),
            description_info=desc_info,
            cost=print_cost_per_1000_items(client, desc_info),
            gains=print_paired_gains(exp),
        )

    # --- verdict: does the description beat the template, zero-shot, paired? ---------------
    state_verdict(exp, extra.get("gains"))
    exp.write(extra)


# ---------------------------------------------------------------------------------------------
# reporting: description statistics, cost, paired gains, the verdict sentence


def print_description_stats(ds: C.Dataset, template: list[str], desc: dict, client) -> dict:
    """Prints and returns {text: D.description_stats} for the template and the description
    of every item of the set that got a description."""
    have = np.array(sorted(desc), dtype=np.int64)
    fields = D.item_fields(ds, have)
    names, aisles, depts = ([x[j] for x in fields] for j in range(3))
    stats = {
        "template": D.description_stats([template[i] for i in have], names, aisles, depts),
        f"description [{client.label}]": D.description_stats(
            [desc[i] for i in have], names, aisles, depts
        ),
    }
    columns = {
        "words": "words",
        "distinct tokens": "distinct_tokens",
        "mentions aisle/dept": "grounded",
        "words not in name/aisle/dept": "novel_word_share",
    }
    rows = {k: {c: v[key] for c, key in columns.items()} for k, v in stats.items()}
    print()
    print(f"description statistics ({len(have):,} items)")
    print(experiment.format_table(rows, list(columns), first="text"))
    return stats


def print_cost_per_1000_items(client, desc_info: dict) -> dict:
    """Prints and returns the describing cost: tokens per item, and per 1,000 items the
    dollars through Message Batches (Claude) or the wall seconds (local model)."""
    described = max(desc_info["described"], 1)
    cost = {
        "backend": client.backend,
        "model": client.label,
        "tokens_in_per_item": desc_info["input_tokens"] / described,
        "tokens_out_per_item": desc_info["output_tokens"] / described,
    }
    if client.backend == "local":
        gen = desc_info.get("generated", 0)
        cost["wall_s_per_1000_items"] = (desc_info["seconds"] * 1000 / gen) if gen else None
        print(
            f"cost per 1,000 items ({client.label}): "
            + (
                f"{cost['wall_s_per_1000_items']:,.0f} s wall time ({gen} generated this run)"
                if gen
                else "wall time not measured (every description came from the cache)"
            )
        )
        return cost
    d = llm.dollars(client.model, desc_info["input_tokens"], desc_info["output_tokens"], batch=True)
    per = 1000 / described
    cost["usd_per_1000_items_batches"] = None if d is None else d * per
    print(
        f"cost per 1,000 items ({client.label}, Message Batches): "
        + ("unknown price" if d is None else f"${d * per:.3f}")
        + f" ({cost['tokens_in_per_item']:.0f} in / "
        f"{cost['tokens_out_per_item']:.0f} out tokens per item)"
    )
    return cost


def print_paired_gains(exp: experiment.Experiment) -> dict:
    """Prints and returns {"<arm> vs <template arm>": exp.gain}: description - template and
    both - template for every template arm (first seed, paired bootstrap over users)."""
    gains = {}
    print()
    for s in ("description", "both"):
        print(f"{s} - template, same arm:")
        for b in [a for a in exp.runs if a.endswith("x template")]:
            a = b.replace("template", s)
            gains[f"{a} vs {b}"] = g = exp.gain(a, b)
            intervals = "  ".join(
                f"{m} {experiment.format_interval(v, 4)}" for m, v in g.items() if m != "n_users"
            )
            print(f"  {a:<44}{intervals}  ({g['n_users']} users)")
    return gains


def state_verdict(exp: experiment.Experiment, gains: dict | None) -> str:
    """The verdict line: does zero-shot retrieval from descriptions beat it from template
    text (paired R@10 interval, claim 'beats')? Without an LLM: inconclusive, with the
    template arm beside popularity."""
    r10 = lambda a: exp.summary()[a]["all"]["recall@10"]["mean"]
    if gains is None:
        return exp.verdict(
            "inconclusive",
            f"no LLM arm ({exp.llm.note}); template-text zero-shot R@10 "
            f"{r10('zero-shot purchases x template'):.4f} vs popularity "
            f"{r10('popularity'):.4f} (original template R@10 0.0010)",
        )
    arm, ref = "zero-shot purchases x description", "zero-shot purchases x template"
    g = gains[f"{arm} vs {ref}"]
    lo, hi = g["recall@10"]["ci95"]
    cold = gains[f"cold: {arm} vs cold: {ref}"]["recall@10"]
    return exp.verdict(
        experiment.verdict_word((lo, hi), "beats"),
        f"zero-shot R@10 {r10(arm):.4f} with {exp.llm.client.label} descriptions vs "
        f"{r10(ref):.4f} with template text (paired gain {g['recall@10']['mean']:+.4f}, "
        f"95% CI [{lo:+.4f}, {hi:+.4f}], {g['n_users']} users); cold start "
        f"{experiment.format_interval(cold, 4)}; original: 0.0019 vs 0.0010, 'marginal'",
        n_users=g["n_users"],
    )


if __name__ == "__main__":
    experiment.main_guard(main)
