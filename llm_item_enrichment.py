"""Experiment 1: do LLM item descriptions improve retrieval over template text?

Original finding (2,000 heaviest users, 5,000 items): LLM descriptions were 6.3x longer than
the template text (65 vs 10 words) and zero-shot R@10 went from 0.0010 (template) to 0.0019
(descriptions): "marginal". Its template showed department "unknown"; here the template is
"name. aisle. department." with the real aisle and department (text.item_template_texts).

Protocol, top to bottom (main's blocks; each stage is a function below it):
  1. data -> the one split -> features from training rows (experiment.Experiment). The item
     world is every loaded item (--items); every arm ranks all of it.
  2. described items: --llm-items N drawn across popularity (10 bands of equal size, the
     same number from each, seeded and nested: experiment.sample_items_by_popularity), never
     the N most bought; each gets an LLM description (prompt item_description through llm/,
     cached by product + prompt version + model).
  3. text sources, each built by one function (source_texts): every item keeps its template
     text; a described item's text is the template followed by an appendix:
       description       its own LLM description
       placebo shuffled  another described item's description, of similar length (a
                         derangement among the described items sorted by length)
       placebo filler    one fixed content-free sentence, cut to the description's length
     So the only difference between sources is the text of the described items; the
     placebos carry no knowledge of the item (EXPERIMENTS.md: a content-free placebo built
     exactly like each LLM text arm). Embedded with MiniLM (text.embed_texts, cached).
  4. zero-shot retrieval, per source, every arm built the same way from that source's
     embeddings: FAISS over the whole item world with
       purchases: user vector = count-weighted mean of the embeddings of the user's training
                  items;
       profile:   the embedded template profile text (text.profile_template_text).
  5. trained: the two-tower whose item tower also gets the frozen text embedding as an
     input (TextItemTower), over --seeds seeds, beside the plain two-tower.
  6. two truths for every warm arm (the same lists): every held-out purchase; and
     "described:" the held-out purchases of the described items only, where the text differs.
  7. cold start: a seeded --cold-frac of the described items (popularity strata) loses all
     its training rows; features and models come from the remaining rows; every arm ranks
     the whole world, scored on held-out purchases of the cold items. Text is the only
     signal about a cold item there.
  8. description statistics (words, distinct words, contradiction rate, for the template,
     the descriptions and the placebo appendices), the cost per 1,000 items, paired gains
     (R@10 with a 95% two-way bootstrap over users and described items, metrics.
     two_way_bootstrap; R@10 / NDCG@10 over users) and the verdict: the description helps
     only where it beats the template AND the best placebo, paired, on zero-shot purchases
     with the described-items truth; a finding needs >= 500 described items and >= 200 users.

    uv run llm_item_enrichment.py --no-llm                      # template arms only
    uv run llm_item_enrichment.py --llm local --llm-items 100 --seeds 1 --epochs 1
    uv run llm_item_enrichment.py --quick                       # smoke run: 12 descriptions
"""

from __future__ import annotations

import options

QUESTION = "Do LLM item descriptions improve retrieval over template text?"
ORIGINAL_FINDING = (
    "descriptions 6.3x longer than the template text (65 vs 10 words); zero-shot R@10 0.0019 "
    "(descriptions) vs 0.0010 (template): 'marginal' (2,000 heaviest users, 5,000 items)"
)

# ---------------------------------------------------------------------------------------------
# constants (the sizes are also command-line options)
LLM_ITEMS = 500  # described items (EXPERIMENTS.md: >= 500 for a finding about item text)
STRATA = 10  # popularity bands the described items are drawn from
COLD_FRAC = 0.1  # share of the described items made cold (no training rows at all)
PLACEBOS = ("placebo shuffled", "placebo filler")
SOURCES = ("template", "description", *PLACEBOS)  # the text an item is embedded from
ZERO_SHOT = ("purchases", "profile")  # how a user vector is made without training
FAMILIES = ("zero-shot purchases", "zero-shot profile", "two-tower + text")  # arm x source
DESCRIBED = "described: "  # arms scored on held-out purchases of the described items only
COLD = "cold: "
VERDICT_FAMILY = "zero-shot purchases"  # the arm the verdict reads (on the DESCRIBED truth)
TWO_WAY = "recall@10 users x items"  # the verdict's metric: R@10, two-way interval
# the filler placebo: the same content-free words for every item, cut to a description's length
FILLER = (
    "This is one of the products on the shelves of the store and it can be added to an "
    "order like any other product that the store sells to its shoppers every day of the week"
)
QUICK = {"users": 400, "items": 1500, "seeds": 1, "epochs": 1, "hidden": 64, "llm_items": 12}


# ---------------------------------------------------------------------------------------------
# options: parsed before the heavy imports below, so --help needs no torch


def parse_args(argv=None):
    p = options.script_parser(__doc__, epilog_from=7)
    g = p.add_argument_group("experiment 1")
    g.add_argument(
        "--llm-items",
        "--limit",
        dest="llm_items",
        type=int,
        default=LLM_ITEMS,
        metavar="N",
        help=f"items to describe, drawn across popularity ({STRATA} bands, seeded, nested), "
        f"default {LLM_ITEMS}; 0: every item (--limit is the same option). Every arm ranks "
        "all loaded items either way",
    )
    g.add_argument(
        "--cold-frac",
        type=float,
        default=COLD_FRAC,
        help=f"share of the described items made cold-start (default {COLD_FRAC})",
    )
    g.add_argument(
        "--no-train",
        action="store_true",
        help="skip the trained two-tower arms (zero-shot and cold zero-shot only)",
    )
    args = options.parse_args_with_quick(p, argv, QUICK)
    if args.llm_items < 0 or args.llm_items == 1:
        raise C.ConfigError(
            "--llm-items must be >= 2 (the shuffled placebo needs two described items), "
            f"or 0 for every item (got {args.llm_items})"
        )
    if not 0 < args.cold_frac < 1:
        raise C.ConfigError("--cold-frac must be between 0 and 1")
    return args


# --help answers here, before the heavy imports below (torch alone takes seconds)
options.help_before_imports(parse_args)

import dataclasses

import numpy as np
import torch
from scipy import sparse

import common as C
import config
import descriptions as D
import experiment
import llm
import metrics
import text as T

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
# the text sources: one builder for every source, so sources differ in the appendix only


def n_words(text: str) -> int:
    return len(text.split())


def filler(n: int) -> str:
    """The filler placebo's appendix: the first n words of FILLER, repeated as needed."""
    words = FILLER.split()
    return " ".join((words * (n // len(words) + 1))[:n])


def shuffled_descriptions(desc: dict, seed: int = C.RANDOM_SEED) -> dict:
    """{item: another described item's description}: the described items sorted by the word
    count of their description (ties in a seeded order) swap descriptions with their
    neighbour in pairs (0<->1, 2<->3, ...; with an odd count the last three rotate), so every
    item gets a description of about its own length and never its own (a derangement)."""
    items = np.array(sorted(desc), dtype=np.int64)
    if len(items) < 2:
        return {}
    tie = np.random.default_rng(seed).permutation(len(items))
    order = items[np.lexsort((tie, [n_words(desc[i]) for i in items]))]
    partner = {}
    pairs_end = len(order) - (3 if len(order) % 2 else 0)
    for j in range(0, pairs_end, 2):
        a, b = order[j], order[j + 1]
        partner[a], partner[b] = b, a
    if len(order) % 2:
        x, y, z = order[-3:]
        partner[x], partner[y], partner[z] = y, z, x
    return {int(i): desc[int(partner[i])] for i in items}


def with_appendix(template: list[str], appendix: dict) -> list[str]:
    """Every item's template text, followed by its appendix where it has one."""
    return [f"{t} {appendix[i]}" if i in appendix else t for i, t in enumerate(template)]


def source_texts(template: list[str], desc: dict, seed: int = C.RANDOM_SEED) -> dict:
    """{source: the text of every item}: the template everywhere; on the described items (the
    keys of `desc`) the template followed by the description, another described item's
    description (placebo shuffled) or the filler cut to the description's word count
    (placebo filler). Every source goes through with_appendix."""
    appendix = {
        "description": dict(desc),
        "placebo shuffled": shuffled_descriptions(desc, seed),
        "placebo filler": {i: filler(n_words(d)) for i, d in desc.items()},
    }
    return {
        "template": list(template),
        **{s: with_appendix(template, a) for s, a in appendix.items()},
    }


@dataclasses.dataclass
class ItemText:
    """Each source's text of every item, its MiniLM embedding, and who wrote each source (the
    LLM's label, for the table rows)."""

    texts: dict[str, list[str]]
    emb: dict[str, np.ndarray]
    label: dict[str, str]

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.emb)

    def key(self, source: str) -> str:
        """A short hash of one source's texts: trained towers are saved under it."""
        return config.short_hash("\n".join(self.texts[source]), n=12)


def purchase_vectors(feats: C.Features, users: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Count-weighted mean of the text embeddings of each user's training items, unit norm."""
    m = sparse.csr_matrix(
        (feats.bought_counts.astype(np.float32), feats.bought_items, feats.bought_indptr),
        shape=(len(feats.user), len(emb)),
    )
    v = np.asarray(m[users] @ emb, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------
# the protocol's stages, in the order main runs them


def described_sample(exp: experiment.Experiment, n: int) -> np.ndarray:
    """The items to describe: n drawn across popularity (training rows), seeded and nested."""
    order = exp.feats.popularity_order()
    return experiment.sample_items_by_popularity(order, n, C.RANDOM_SEED, STRATA)


def describe(ds: C.Dataset, sample: np.ndarray, client, args) -> tuple[dict, dict | None]:
    """({item: description}, describe info) for the sampled items; ({}, None) without an LLM."""
    if not client:
        return {}, None
    print(
        f"describing {len(sample):,} items with {client.label} (cached answers are free; "
        "a killed run resumes from the cache)"
    )
    desc, info = D.describe_items(ds, sample, client, not args.quiet)
    missing = len(sample) - len(desc)
    print(
        f"descriptions: {len(desc):,} of {len(sample):,} items"
        + (f"; {missing} failed and keep their template text in every arm" if missing else "")
    )
    return desc, info


def item_texts(ds: C.Dataset, desc: dict, label: str | None, progress: bool) -> ItemText:
    """ItemText of every source (template only without descriptions), all embedded."""
    template = T.item_template_texts(ds)
    texts = source_texts(template, desc) if desc else {"template": template}
    emb = {s: T.embed_texts(t, progress=progress) for s, t in texts.items()}
    return ItemText(texts, emb, {s: label for s in texts if s != "template"})


def cold_split(split, described: np.ndarray, frac: float):
    """(cold split, cold items): a seeded `frac` of the described items (popularity strata)
    loses all its training rows; scored on held-out purchases of those items only. Items
    outside the described set keep their rows."""
    in_set = dataclasses.replace(split, train=split.train[split.train["item"].isin(described)])
    _, cold_items = C.cold_start_split(in_set, frac)
    warm_rows = split.train[~split.train["item"].isin(cold_items)].reset_index(drop=True)
    return C.restrict_truth(dataclasses.replace(split, train=warm_rows), cold_items), cold_items


@dataclasses.dataclass
class Truth:
    """A population the same ranked lists are scored on: its arm-name prefix, split, users,
    features (repeat / explore follow its rows) and the sentence the table prints."""

    prefix: str
    split: C.Split
    users: np.ndarray
    feats: C.Features
    scope: str


def warm_truths(exp, described: np.ndarray, have_descriptions: bool) -> list[Truth]:
    """The two truths of the warm arms: every held-out purchase, and the held-out purchases
    of the described items only (the DESCRIBED arms; where the text differs)."""
    n, split_d = exp.ds.n_items, C.restrict_truth(exp.split, described)
    what = "described" if have_descriptions else "sampled (no LLM: not described)"
    return [
        Truth(
            "", exp.split, exp.users, exp.feats, f"every held-out purchase; all {n:,} items ranked"
        ),
        Truth(
            DESCRIBED,
            split_d,
            split_d.eval_users(),
            exp.feats,
            f"held-out purchases of the {len(described):,} {what} items only (where the text "
            f"differs); all {n:,} items ranked",
        ),
    ]


def add_scored(exp, truths: list[Truth], arm: str, ranked: np.ndarray, users, label=None):
    """Score one list set (rows = `users`) on each truth whose users it covers."""
    pos = {int(u): j for j, u in enumerate(users)}
    for t in truths:
        rows = np.array([pos[int(u)] for u in t.users], dtype=np.int64)
        exp.add(t.prefix + arm, ranked[rows], t.users, t.split, label=label, feats=t.feats)


def baseline_arms(exp, truths: list[Truth], names=None):
    """random, popularity, top-frequency (+ popular), TIFU-KNN (unless --no-tifu) over the
    whole world, from the first truth's features, scored on every truth."""
    t0 = truths[0]
    train = None if exp.args.no_tifu else t0.split.train
    ranked = C.baseline_rankings(
        t0.feats, t0.users, exp.ds.n_items, train=train, tifu_pool=exp.args.tifu_pool
    )
    for name, r in ranked.items():
        if names is None or name in names:
            add_scored(exp, truths, name, r, t0.users)


def zero_shot_arms(exp, truths: list[Truth], text: ItemText):
    """Per source: user vectors from the first truth's training rows (purchases: that
    source's embeddings of the bought items; profile: the template profile), FAISS over
    every item's embedding of that source; scored on every truth."""
    t0 = truths[0]
    facts = T.user_profile_facts(exp.ds, t0.split.train, t0.users)
    profile = T.embed_texts(
        [T.profile_template_text(f) for f in facts], progress=not exp.args.quiet
    )
    for s in text.sources:
        uvec = {"purchases": purchase_vectors(t0.feats, t0.users, text.emb[s]), "profile": profile}
        for z in ZERO_SHOT:
            ranked = C.search(uvec[z], text.emb[s])
            add_scored(exp, truths, f"zero-shot {z} x {s}", ranked, t0.users, text.label.get(s))


def trained_arms(exp, truths: list[Truth], text: ItemText, variant=None):
    """The two-tower without text and with each source as a frozen item-tower input, per
    training seed, trained on the first truth's rows, ranking every item; scored on every
    truth. `variant` keys the saved towers of another split (the cold start)."""
    t0 = truths[0]
    own = {} if t0.split is exp.split else {"feats": t0.feats, "train": t0.split.train}
    for seed in exp.seeds:
        cfg = options.tower_config(exp.args, seed)
        m = exp.train(cfg, variant=variant, **own)
        add_scored(
            exp,
            truths,
            "two-tower (no text)",
            C.search(m.embed_users(t0.users), m.embed_items()),
            t0.users,
        )
        for s in text.sources:
            m = exp.train(
                cfg,
                **own,
                model_cls=TextTwoTower,
                text_emb=text.emb[s],
                variant={**(variant or {}), "text": s, "text_hash": text.key(s)},
            )
            ranked = C.search(m.embed_users(t0.users), m.embed_items())
            add_scored(exp, truths, f"two-tower + text x {s}", ranked, t0.users, text.label.get(s))


def cold_start_arms(exp, cold: C.Split, cold_items: np.ndarray, text: ItemText) -> Truth | None:
    """The cold-start truth with its arms (random, popularity, zero-shot, trained unless
    --no-train), features and towers from its rows only; None when no user has a held-out
    purchase of a cold item (too few described items)."""
    users = cold.eval_users() if cold.truth else np.zeros(0, np.int64)
    if not len(cold_items) or not len(users):
        print(
            f"cold start skipped: {len(cold_items)} cold items, {len(users)} users with "
            "held-out purchases of them"
        )
        return None
    feats = C.build_features(exp.ds, cold.train)
    truth = Truth(
        COLD,
        cold,
        users,
        feats,
        f"cold start: {len(cold_items):,} cold items ({exp.args.cold_frac:.0%} of the described "
        f"items, popularity strata), all their training rows removed; {len(users):,} users "
        "with held-out purchases of them; every arm ranks the whole item world",
    )
    print(truth.scope)
    baseline_arms(exp, [truth], names=("random", "popularity"))
    zero_shot_arms(exp, [truth], text)
    if not exp.args.no_train:
        key = {"cold_items": config.short_hash("\n".join(str(i) for i in cold_items), n=12)}
        trained_arms(exp, [truth], text, key)
    return truth


# ---------------------------------------------------------------------------------------------
# the protocol


def main(argv=None):
    args = parse_args(argv)
    exp = experiment.Experiment(
        "llm_item_enrichment", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    client = exp.start_llm("item_description")
    ds, split = exp.ds, exp.split

    # --- the described items: drawn across popularity, then described -----------------------
    sample = described_sample(exp, args.llm_items)
    print(
        f"item world: all {ds.n_items:,} items, ranked by every arm; {len(sample):,} drawn "
        f"across popularity ({STRATA} bands, seeded) to describe"
    )
    desc, desc_info = describe(ds, sample, client, args)
    if client and len(desc) < 2:
        print(f"{len(desc)} description(s): too few for the placebos, the LLM arms are skipped")
        desc = {}
    described = np.array(sorted(desc), dtype=np.int64) if desc else sample

    # --- texts per source (template, description, placebos) and their embeddings ------------
    text = item_texts(ds, desc, client.label if client else None, not args.quiet)

    # --- the truths the warm arms are scored on: every purchase, the described items' -------
    truths = warm_truths(exp, described, bool(desc))

    # --- arms: baselines, zero-shot, trained (two-tower + frozen text input), cold start -----
    baseline_arms(exp, truths)
    zero_shot_arms(exp, truths, text)
    if not args.no_train:
        trained_arms(exp, truths, text)
    cold, cold_items = cold_split(split, described, args.cold_frac)
    cold_truth = cold_start_arms(exp, cold, cold_items, text)
    populations = truths + ([cold_truth] if cold_truth else [])

    # --- tables, one per population -----------------------------------------------------
    print_tables(exp, populations)
    extra = {
        "item_set": {
            "items": len(described) if desc else 0,
            "sample": len(sample),
            "world": ds.n_items,
            "llm_items": args.llm_items,
            "strata": STRATA,
            "scope": "every arm ranks the whole item world; 'described:' arms are scored on "
            "held-out purchases of the described items only",
        },
        "populations": {
            t.prefix or "all": {"users": len(t.users), "scope": t.scope} for t in populations
        },
        "cold_start": {
            "items": len(cold_items),
            "frac": args.cold_frac,
            "users": len(cold_truth.users) if cold_truth else 0,
        },
    }
    if desc:
        extra.update(
            description_stats=print_description_stats(ds, text, desc, client.label),
            description_info=desc_info,
            cost=print_cost_per_1000_items(client, desc_info),
            gains=print_paired_gains(exp, populations),
        )

    # --- verdict: does the description beat the template and the best placebo, paired? -------
    extra.update(state_verdict(exp, extra.get("gains"), len(desc), extra.get("description_stats")))
    exp.write(extra)


# ---------------------------------------------------------------------------------------------
# reporting: tables, description statistics, cost, paired gains, the verdict sentence


def population_of(arm: str) -> str:
    """The prefix of the population an arm is scored on ('' for every held-out purchase)."""
    return next((p for p in (DESCRIBED, COLD) if arm.startswith(p)), "")


def print_tables(exp: experiment.Experiment, populations: list[Truth]):
    """One table per population, its truth in the title (the cold start without the
    repeat / explore columns: its cold items were never bought in training rows)."""
    for t in populations:
        cols = experiment.TABLE_COLUMNS if t.prefix != COLD else ["R@5", "R@10", "R@20", "NDCG@10"]
        arms = [a for a in exp.runs if population_of(a) == t.prefix]
        exp.print_table(arms, f"{t.prefix or 'all: '}{t.scope}", cols)


def print_description_stats(ds: C.Dataset, text: ItemText, desc: dict, label: str) -> dict:
    """Prints and returns {text: D.description_stats} over the described items for the
    template, the LLM description alone and each placebo's appendix (the words each source
    adds to the template), with the description's length relative to the template's."""
    have = np.array(sorted(desc), dtype=np.int64)
    names, aisles, depts = (list(x) for x in zip(*D.item_fields(ds, have)))
    template = [text.texts["template"][i] for i in have]
    appendix = lambda s: [text.texts[s][i][len(t) + 1 :] for i, t in zip(have, template)]
    stats = {
        "template": D.description_stats(template, names, aisles, depts),
        f"description [{label}]": D.description_stats(
            [desc[i] for i in have], names, aisles, depts
        ),
        **{
            f"{s} (appendix)": D.description_stats(appendix(s), names, aisles, depts)
            for s in PLACEBOS
        },
    }
    columns = {
        "words": "words",
        "distinct words": "distinct_tokens",
        "vocabulary": "vocabulary",
        "mentions aisle/dept": "grounded",
        "contradiction": "contradiction",
    }
    rows = {k: {c: v[key] for c, key in columns.items()} for k, v in stats.items()}
    words_d, words_t = stats[f"description [{label}]"]["words"], stats["template"]["words"]
    print()
    print(
        f"description statistics ({len(have):,} described items; words per text, distinct "
        "words per text, vocabulary = distinct words over all texts; contradiction = "
        "descriptions.contradiction, as evals/description_evals.py counts it)"
    )
    print(experiment.format_table(rows, list(columns), first="text"))
    print(
        f"descriptions {words_d:.1f} words vs {words_t:.1f} for the template "
        f"({words_d / max(words_t, 1e-9):.1f}x; original 65 vs 10, 6.3x)"
    )
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


# the paired comparisons of each arm family, as (arm source, reference source)
COMPARISONS = (
    ("description", "template"),
    *((p, "template") for p in PLACEBOS),
    *(("description", p) for p in PLACEBOS),
)


def gain_users_items(exp: experiment.Experiment, arm: str, reference: str) -> dict:
    """exp.gain (R@10 and NDCG@10, paired bootstrap over users) plus TWO_WAY: the R@10 gain
    with the two-way bootstrap over users and items (metrics.two_way_bootstrap), and its
    item count."""
    g = exp.gain(arm, reference)
    ua, ra, split = exp.lists[arm]
    ub, rb, _ = exp.lists[reference]
    users, ia, ib = np.intersect1d(ua, ub, return_indices=True)
    truths = [split.truth.get(int(u), np.empty(0, np.int64)) for u in users]
    g[TWO_WAY] = metrics.paired_recall_users_items(ra[ia], rb[ib], truths, k=10)
    g["n_items"] = g[TWO_WAY]["n_items"]
    return g


def best_placebo(summary: dict, family_prefix: str) -> str:
    """The placebo source with the highest mean R@10 in `family_prefix` (e.g. 'described:
    zero-shot purchases'): the control the description has to beat."""
    r10 = lambda s: summary[f"{family_prefix} x {s}"]["all"]["recall@10"]["mean"]
    return max(PLACEBOS, key=r10)


def print_paired_gains(exp: experiment.Experiment, populations: list[Truth]) -> dict:
    """Prints and returns {"<arm> vs <reference>": gain_users_items}: for every population
    and arm family, each LLM or placebo source - template and description - each placebo
    (first seed). The table shows the R@10 gains with their users x items intervals."""
    gains, summary = {}, exp.summary()
    for t in populations:
        rows = {}
        for f in FAMILIES:
            fam = t.prefix + f
            if f"{fam} x template" not in exp.lists:
                continue
            row = {}
            for s, r in COMPARISONS:
                a, b = f"{fam} x {s}", f"{fam} x {r}"
                gains[f"{a} vs {b}"] = g = gain_users_items(exp, a, b)
                row[f"{s} - {r}"] = experiment.format_interval(g[TWO_WAY], 4)
            best = best_placebo(summary, fam)
            row["best placebo"] = best
            row["users x items"] = f"{g['n_users']} x {g['n_items']}"
            rows[f] = row
        if rows:
            print()
            print(
                f"{t.prefix or 'all: '}paired R@10 gains, first seed, 95% two-way bootstrap "
                "over users and items (R@10 / NDCG@10 over users only are in the JSON)"
            )
            print(experiment.format_table(rows, list(next(iter(rows.values()))), first="arm"))
    return gains


def state_verdict(exp, gains: dict | None, n_described: int, stats: dict | None) -> dict:
    """The verdict line and what it reads. The claim: the LLM description helps zero-shot
    retrieval (VERDICT_FAMILY, R@10 on the held-out purchases of the described items, the
    two-way interval over users and items). Confirmed when the description beats the
    template AND the best placebo (the interval above 0 for both); refuted when either is
    above it (the interval below 0); else inconclusive. A finding needs >= 500 described
    items and >= 200 users (Experiment.verdict). Without an LLM: inconclusive."""
    summary = exp.summary()
    r10 = lambda a: summary[a]["all"]["recall@10"]["mean"]
    if gains is None:
        exp.verdict(
            "inconclusive",
            f"no LLM arm ({exp.llm.note}); template-text zero-shot R@10 "
            f"{r10('zero-shot purchases x template'):.4f} vs popularity "
            f"{r10('popularity'):.4f} (original template R@10 0.0010)",
        )
        return {}
    fam = DESCRIBED + VERDICT_FAMILY
    best = best_placebo(summary, fam)
    arm, placebo, template = (f"{fam} x {s}" for s in ("description", best, "template"))
    key_p, key_t = f"{arm} vs {placebo}", f"{arm} vs {template}"
    vs_p, vs_t = gains[key_p][TWO_WAY], gains[key_t][TWO_WAY]
    gap = gains[f"{placebo} vs {template}"][TWO_WAY]
    word = experiment.verdict_all(experiment.verdict_word(g["ci95"], "beats") for g in (vs_t, vs_p))
    fmt = lambda g: experiment.format_interval(g, 4)
    n_users = vs_p["n_users"]
    half = (vs_p["ci95"][1] - vs_p["ci95"][0]) / 2
    clauses = [
        (
            f"zero-shot purchases, R@10 on held-out purchases of the {n_described:,} described "
            f"items ({n_users:,} users): description {r10(arm):.4f} vs best placebo ({best}) "
            f"{r10(placebo):.4f}, paired {fmt(vs_p)} over users x items (half-width "
            f"{half:.4f}), vs template {r10(template):.4f}, paired {fmt(vs_t)}"
        ),
        f"placebo gap ({best} - template) {fmt(gap)}",
        f"decided by '{arm}' against '{placebo}' and '{template}'",
    ]
    for label, f in (
        ("all held-out purchases", VERDICT_FAMILY),
        ("profile arm", DESCRIBED + "zero-shot profile"),
        ("trained two-tower + text", DESCRIBED + "two-tower + text"),
        ("cold start", COLD + VERDICT_FAMILY),
    ):
        if f"{f} x description" in exp.lists:
            b = best_placebo(summary, f)
            g = gains[f"{f} x description vs {f} x {b}"][TWO_WAY]
            clauses.append(f"{label}: description - best placebo ({b}) {fmt(g)}")
    if stats:
        d = next(v for k, v in stats.items() if k.startswith("description"))
        t = stats["template"]
        clauses.append(
            f"descriptions {d['words']:.0f} words vs {t['words']:.0f} for the template "
            f"({d['words'] / max(t['words'], 1e-9):.1f}x; original 65 vs 10), "
            f"{d['distinct_tokens']:.0f} distinct words, contradiction rate "
            f"{d['contradiction']:.1%}"
        )
    clauses.append("original: 0.0019 vs 0.0010, 'marginal'")
    exp.verdict(word, "; ".join(clauses), n_users=n_users, n_items=n_described)
    for k in (key_p, key_t):
        gains[k]["margin"] = 0.0
    read = lambda key, ref: {
        "gain": f"gains.{key}",
        "metric": TWO_WAY,
        "reference": ref,
        "interval": "95% two-way bootstrap over users and described items (zero-shot: no seeds)",
        "claim": "beats",
        "margin": 0.0,
        "truth": "held-out purchases of the described items",
        "arm": arm,
    }
    return {
        "verdict_reads": {
            "beats best placebo": read(key_p, placebo),
            "beats template": read(key_t, template),
        },
        "verdict_sizes": {
            "described_items": n_described,
            "users": n_users,
            "min_items": experiment.MIN_VERDICT_ITEMS,
            "min_users": experiment.MIN_VERDICT_USERS,
        },
    }


if __name__ == "__main__":
    experiment.main_guard(main)
