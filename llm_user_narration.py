"""Experiment 2: can a natural-language user profile replace a trained user tower?

Original finding (6 users): category precision@10 0.767 with the template profile vs 0.167
with the LLM-narrated profile. Its profiles were built from the wrong feature columns; here
every profile says only what TRAINING rows say (text.user_profile_facts, text.user_history).

Protocol, top to bottom:
  1. data -> the one split -> features from training rows (experiment.Experiment); a seeded
     sample of --llm-users evaluation users (nested across sizes; every arm on them).
  2. text profiles of each user:
       template profile   the facts as plain sentences (text.profile_template_text)
       LLM narration      the LLM paraphrases the template profile (prompt user_narration:
                          the original study's arm; it can only lose information)
       LLM history        the LLM reads the purchase history itself: most bought products
                          with counts and the last orders (prompt user_history_profile)
     and three controls: the history profile and the narration of another sampled user
     (placebos of the two LLM arms: the same texts, the wrong user), and the name of the
     user's most bought department alone (the ceiling of category precision).
  3. each profile is embedded (MiniLM, text.embed_texts) and matched by FAISS against every
     item's template text "name. aisle. department."; and, when the LLM cache holds item
     descriptions (llm_item_enrichment.py wrote them), against those, on the described
     items only (truth restricted to them; said in the output).
  4. references: the trained two-tower's user tower (--seeds seeds; the same saved towers as
     two_tower.py), top-frequency, popularity, random (and TIFU-KNN unless --no-tifu).
  5. the question's metric decides: R@10 and NDCG@10 on held-out purchases of each text
     profile's retrieval against the trained user tower and against top-frequency, paired
     over the same users (95% bootstrap). Verdict (claim: competitive, no worse than the
     tower by more than MARGIN in R@10): confirmed when some text profile is (the lower
     bound above -MARGIN), refuted when every profile is worse by more (upper bounds below
     -MARGIN); >= 200 narrated users for a finding.
  6. the original's metric, reported beside it with its controls:
        category precision@10 = for each user, the share of the top-10 recommended items
        whose department is the user's most bought department in training rows (ties to
        the lower department id); an empty slot counts as a miss. It rewards lists inside
        one department, whether or not they hold what the user buys: the department's name
        alone is its ceiling. Base rate = the share of the catalogue in that department
        (a uniformly random list), averaged over the same users.

    uv run llm_user_narration.py --no-llm
    uv run llm_user_narration.py --llm local --llm-users 50 --seeds 1 --epochs 1
    uv run llm_user_narration.py --quick
"""

from __future__ import annotations

import options

QUESTION = "Can a natural-language user profile replace a trained user tower?"
ORIGINAL_FINDING = "category precision@10: template profile 0.767 vs LLM narration 0.167 (6 users)"

# ---------------------------------------------------------------------------------------------
# constants (the sizes are also command-line options)
EVAL_USERS = 300  # users per arm (>= 200 by the experiments' contract)
CAT_K = 10  # category precision@10
MARGIN = 0.01  # R@10: a profile "replaces" the tower when no worse than it by more than this
QUICK = {"users": 400, "items": 1500, "seeds": 1, "epochs": 1, "hidden": 64, "llm_users": 8}

# the profiles, and the arm names the verdict and the paired gains refer to
TEMPLATE = "template profile"
NARRATION = "LLM narration"
HISTORY = "LLM history profile"
PLACEBO = "placebo: another's history"  # another sampled user's LLM history profile
NARRATION_PLACEBO = "placebo: another's narration"  # another sampled user's LLM narration
LLM_PROFILES = (NARRATION, HISTORY, PLACEBO, NARRATION_PLACEBO)  # texts an LLM wrote
CEILING = "top department name alone"
PROMPTS = {NARRATION: "user_narration", HISTORY: "user_history_profile"}
CANDIDATES = (TEMPLATE, NARRATION, HISTORY)  # the text profiles the verdict asks about
TOWER = "two-tower user tower"
ITEMS = " x template items"  # every profile is matched against the items' template texts
TEMPLATE_ARM, NARRATION_ARM, HISTORY_ARM = (p + ITEMS for p in CANDIDATES)
BASE_RATE = "base rate (random catalogue item)"


def parse_args(argv=None):
    p = options.script_parser(__doc__, epilog_from=5)
    g = p.add_argument_group("experiment 2")
    g.add_argument(
        "--llm-users",
        "--eval-users",
        dest="llm_users",
        type=int,
        default=EVAL_USERS,
        metavar="N",
        help=f"evaluation users (seeded sample) every arm is scored on, default {EVAL_USERS} "
        "(--eval-users is the same option; --users is the data option: users loaded)",
    )
    g.add_argument(
        "--no-train", action="store_true", help="leave out the trained two-tower reference"
    )
    args = options.parse_args_with_quick(p, argv, QUICK)
    if args.llm_users < 1:
        raise C.ConfigError("--llm-users must be >= 1")
    return args


# --help answers here, before the heavy imports below (torch alone takes seconds)
options.help_before_imports(parse_args)

import time

import numpy as np

import common as C
import descriptions as D
import experiment
import metrics
import text as T
from prompts import TEMPLATES


def top_departments(ds: C.Dataset, train, users: np.ndarray) -> np.ndarray:
    """Each user's most bought department (department_id) in training rows (ties: lower id)."""
    dept = ds.items["department_id"].fillna(0).to_numpy(np.int64)
    n_d = int(dept.max()) + 1
    rows = train[train["user"].isin(users)]
    cell = rows["user"].to_numpy(np.int64) * n_d + dept[rows["item"].to_numpy()]
    uniq, counts = np.unique(cell, return_counts=True)
    out = np.zeros(len(users), np.int64)
    pos = {int(u): j for j, u in enumerate(users)}
    best = np.zeros(len(users))
    for c, n in zip(uniq, counts):  # cells ascend by (user, dept): first max wins a tie
        j = pos[int(c // n_d)]
        if n > best[j]:
            best[j], out[j] = n, c % n_d
    return out


def category_precision(
    ds: C.Dataset, ranked: np.ndarray, top_dept: np.ndarray, k: int = CAT_K
) -> np.ndarray:
    """Per user: share of the top-k items in the user's top department (-1 slots miss)."""
    dept = ds.items["department_id"].fillna(0).to_numpy(np.int64)
    r = ranked[:, :k]
    hit = (r >= 0) & (dept[np.maximum(r, 0)] == top_dept[:, None])
    return hit.sum(1) / k


def main(argv=None):
    args = parse_args(argv)
    exp = experiment.Experiment(
        "llm_user_narration", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    ds, split = exp.ds, exp.split
    progress = not args.quiet

    # --- 1. the evaluation users ----------------------------------------------------------
    users = experiment.sample_users(exp.users, args.llm_users)  # nested across sizes
    print(
        f"{len(users):,} evaluation users (seeded sample of {len(exp.users):,})"
        + ("; fewer than the 200 the experiments' contract asks for" if len(users) < 200 else "")
    )

    # --- 2. profiles: template, the LLM's (narration, history), the controls ----------------
    client = exp.start_llm(*PROMPTS.values(), "item_description")
    top_dept = top_departments(ds, split.train, users)
    template_texts = [
        T.profile_template_text(f) for f in T.user_profile_facts(ds, split.train, users)
    ]
    profiles = {TEMPLATE: (users, template_texts), CEILING: (users, department_names(ds, top_dept))}
    info = {}
    if client:
        for name, (template, fields) in llm_profile_fields(
            ds, split.train, users, template_texts
        ).items():
            done = llm_profiles(client, template, fields, users)
            profiles[name], info[name] = (done["users"], done["texts"]), done["info"]
        # each LLM arm's placebo: the same texts, each given to another sampled user
        for arm, placebo in ((HISTORY, PLACEBO), (NARRATION, NARRATION_PLACEBO)):
            if len(profiles[arm][0]) > 1:
                profiles[placebo] = another_users_profiles(*profiles[arm])
    prof_emb = {p: T.embed_texts(t, progress=progress) for p, (_, t) in profiles.items()}

    # --- 3. item texts: template, and cached LLM descriptions when there are any -----------
    item_emb, desc_scope = item_embeddings(ds, split, client, progress)

    # --- 4. arms and references -----------------------------------------------------------
    exp.add_baselines(users=users)
    if not args.no_train:
        for seed in exp.seeds:
            m = exp.train(options.tower_config(args, seed))
            exp.add(TOWER, C.retrieve(m, users)[0], users)
    for p, pe in prof_emb.items():
        for name, (ie, items, sp) in item_emb.items():
            # an arm with any LLM text says which model wrote it
            llm_text = p in LLM_PROFILES or name != "template items"
            label = client.label if client and llm_text else None
            exp.add(f"{p} x {name}", C.search(pe, ie, items), profiles[p][0], sp, label=label)

    # --- 5. category precision@10 of every arm, its base rate and ceiling -------------------
    cat = {
        arm: category_precision(ds, ranked, top_dept[np.searchsorted(users, u)])
        for arm, (u, ranked, _) in exp.lists.items()
    }
    base = department_base_rate(ds, top_dept)

    # --- 6. tables: the question's metric first, then the original's ------------------------
    exp.print_table(title="arms x metrics (R@K, NDCG@10 on held-out purchases, the same users)")
    if desc_scope:
        print(desc_scope)
    gains = print_paired_gains(exp, profiles)
    cat_json = print_category_precision(exp, cat, base)
    pairs = print_template_minus_llm(cat, users, profiles)

    # --- 7. verdict: can a zero-shot text profile replace the trained user tower? -----------
    extra = {
        "eval_users": len(users),
        "category_precision": cat_json,
        "category_precision_rewards": CAT_REWARDS,
        "gains": gains,
        "descriptions_scope": desc_scope,
        "profiles": info,
        **pairs,
    }
    extra.update(state_verdict(exp, gains, cat, base, client.label if client else None))
    exp.write(extra)


# --- arms: profiles and item texts ------------------------------------------------------------
def department_names(ds: C.Dataset, dept_ids: np.ndarray) -> list[str]:
    """The ceiling control's profile: the name of each user's top department, nothing else."""
    it = ds.items.dropna(subset=["department_id"])
    names = dict(zip(it["department_id"].astype(np.int64), it["department"].fillna("unknown")))
    return [str(names.get(int(d), "unknown")) for d in dept_ids]


def llm_profile_fields(ds: C.Dataset, train, users: np.ndarray, template_texts: list[str]) -> dict:
    """{LLM profile: (prompt template, the fields of each user's prompt)}: the narration
    paraphrases the template profile; the history profile reads the purchase history itself
    (text.user_history: most bought products with counts and the last orders, TRAINING rows
    only), never the template profile."""
    return {
        NARRATION: (PROMPTS[NARRATION], [{"purchase_summary": t} for t in template_texts]),
        HISTORY: (PROMPTS[HISTORY], T.user_history(ds, train, users)),
    }


def llm_profiles(client, template: str, fields: list[dict], users: np.ndarray) -> dict:
    """The LLM's profile of each user (prompt `template` filled with `fields`; cached answers
    free) -> {"users": the users with a profile, "texts": their profiles, "info": counts,
    tokens, mean words and wall seconds for the results JSON}. A failed answer drops its
    user from the arm."""
    reqs = [TEMPLATES[template].request(**f) for f in fields]
    print(f"{template}: {len(reqs):,} profiles with {client.label} (cached answers are free)")
    t0 = time.perf_counter()
    res = client.run_batch(reqs)
    ok = np.array([r.ok and bool(r.text) for r in res])
    texts = [r.text for r, o in zip(res, ok) if o]
    info = {
        "users": len(users),
        "profiled": int(ok.sum()),
        "input_tokens": int(sum(r.input_tokens for r in res if r.ok)),
        "output_tokens": int(sum(r.output_tokens for r in res if r.ok)),
        "words": float(np.mean([len(t.split()) for t in texts])) if ok.any() else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if not ok.all():
        print(
            f"{template} failed for {int((~ok).sum())} users: its arm runs on {int(ok.sum())} users"
        )
    return {"users": users[ok], "texts": texts, "info": info}


def another_users_profiles(
    users: np.ndarray, texts: list[str], seed: int = C.RANDOM_SEED
) -> tuple[np.ndarray, list[str]]:
    """The placebo of a profile arm: each user gets the profile of another user of the same
    arm (one seeded cycle through them), so the texts are the same and the user is wrong."""
    order = np.random.default_rng(seed).permutation(len(users))
    out = list(texts)
    for j, k in zip(order, np.roll(order, -1)):
        out[j] = texts[k]
    return users, out


def item_embeddings(ds: C.Dataset, split, client, progress: bool) -> tuple[dict, str | None]:
    """Item texts to match profiles against -> ({name: (embeddings over all items, the items
    searched, the split scoring them)}, the description arms' scope line or None). Template
    texts always; cached LLM item descriptions (llm_item_enrichment.py) when the client's
    model has any, searched over the described items only with truth restricted to them."""
    all_items = np.arange(ds.n_items)
    item_emb = {
        "template items": (
            T.embed_texts(T.item_template_texts(ds), progress=progress),
            all_items,
            split,
        )
    }
    if not client:
        return item_emb, None
    desc, _ = D.describe_items(ds, all_items, client, cached_only=True)
    if not desc:
        print(
            "no cached item descriptions for this model: run llm_item_enrichment.py "
            "with it first (profile x descriptions arms skipped)"
        )
        return item_emb, None
    have = np.array(sorted(desc), dtype=np.int64)
    e = np.zeros((ds.n_items, 384), np.float32)
    e[have] = T.embed_texts([desc[i] for i in have], progress=progress)
    item_emb["descriptions"] = (e, have, C.restrict_truth(split, have))
    desc_scope = (
        f"x descriptions: matched against the {len(have):,} items with a cached "
        f"{client.label} description (of {ds.n_items:,}); truth restricted "
        "to them"
    )
    print(desc_scope)
    return item_emb, desc_scope


def department_base_rate(ds: C.Dataset, top_dept: np.ndarray) -> np.ndarray:
    """Per user: the share of the catalogue's items in the user's top department (what a
    uniformly random list scores in category precision)."""
    dept = ds.items["department_id"].fillna(0).to_numpy(np.int64)
    share = np.bincount(dept, minlength=int(dept.max()) + 1) / len(dept)
    return share[top_dept]


# --- reporting --------------------------------------------------------------------------------
CAT_REWARDS = (  # what category precision (the original's metric) rewards
    f"rewards a top {CAT_K} inside the user's most bought department, whether or not it "
    "holds what the user buys: the department's name alone is its ceiling, a random "
    "catalogue item its base rate; R@10 and NDCG@10 on held-out purchases decide"
)


def print_paired_gains(exp, profiles: dict) -> dict:
    """Prints the paired R@10 / NDCG@10 gains of every profile x template items arm over the
    trained user tower and over top-frequency (the same users; 95% bootstrap over users);
    returns {reference: {arm: gain}}. The x descriptions arms rank the described subset with
    truth restricted to it: compared among themselves only."""
    gains = {}
    arms = [f"{p}{ITEMS}" for p in profiles]
    print()
    for ref in (TOWER, "top-frequency"):
        if ref in exp.lists:
            gains[ref] = exp.print_gains(arms, ref)
    on_desc = [f"{p} x descriptions" for p in profiles if p != TEMPLATE]
    ref_d = f"{TEMPLATE} x descriptions"
    if ref_d in exp.lists:
        gains[ref_d] = exp.print_gains([a for a in on_desc if a in exp.lists], ref_d)
    return gains


def print_category_precision(exp, cat: dict, base: np.ndarray) -> dict:
    """Prints the category precision@10 table (every arm, the base rate; 95% bootstrap
    interval over users) with what it rewards; returns {arm: {"mean", "ci95", "users"}}."""
    rows, cat_json = {}, {}
    for arm, v in [*cat.items(), (BASE_RATE, base)]:
        ci = metrics.bootstrap_ci({"c": v})["c"]
        name = arm + (f" [{exp.labels[arm]}]" if arm in exp.labels else "")
        rows[name] = {
            "cat. precision@10": float(v.mean()),
            "95% CI": f"[{ci[0]:.3f}, {ci[1]:.3f}]",
            "users": len(v),
        }
        cat_json[arm] = {"mean": float(v.mean()), "ci95": ci, "users": len(v)}
    print()
    print(
        f"category precision@{CAT_K}: share of the top-{CAT_K} items in the user's most "
        f"bought training department. It {CAT_REWARDS}"
    )
    print(experiment.format_table(rows, ["cat. precision@10", "95% CI", "users"], first="arm"))
    return cat_json


def print_template_minus_llm(cat: dict, users: np.ndarray, profiles: dict) -> dict:
    """The original's comparison, on its metric: template - each LLM profile in category
    precision@10, paired over the users the LLM profiled (printed; for the results JSON)."""
    out = {}
    for p, key in (
        (NARRATION, "paired_template_minus_narration"),
        (HISTORY, "paired_template_minus_history"),
    ):
        if p + ITEMS not in cat:
            continue
        g = metrics.paired_mean_ci(
            cat[TEMPLATE_ARM][np.searchsorted(users, profiles[p][0])] - cat[p + ITEMS]
        )
        out[key] = {"mean": g["mean"], "ci95": g["ci95"], "users": g["n"]}
        diff = experiment.format_interval(g)
        print(f"template - {p}, category precision@{CAT_K}: {diff} ({g['n']} users)")
    return out


def state_verdict(exp, gains: dict, cat: dict, base: np.ndarray, label: str | None) -> dict:
    """The verdict line and what it reads: can a zero-shot text profile replace the trained
    user tower? Per text profile (template, narration, history) the paired R@10 gain over the
    tower, claim 'competitive' with MARGIN: confirmed when some profile's lower bound is
    above -MARGIN, refuted when every profile's upper bound is below -MARGIN, else
    inconclusive; the guard counts the LLM's users. Without an LLM or a tower: inconclusive."""
    summary = exp.summary()
    r10 = lambda a: summary[a]["all"]["recall@10"]["mean"]
    cp = lambda a: f"{cat[a].mean():.3f}" if a in cat else "-"
    original = (
        f"category precision@{CAT_K} (the original's metric, which rewards staying in the top "
        f"department): template {cp(TEMPLATE_ARM)}, narration {cp(NARRATION_ARM)}, history "
        f"{cp(HISTORY_ARM)}, department name alone {cp(CEILING + ITEMS)} (ceiling), base rate "
        f"{base.mean():.3f}; original 0.767 vs 0.167 on 6 users"
    )
    llm_arms = [a for a in (NARRATION_ARM, HISTORY_ARM) if a in exp.lists]
    ref = TOWER if TOWER in exp.lists else "top-frequency"
    if not llm_arms or TOWER not in exp.lists:
        why = (
            f"no LLM arm ({exp.llm.note})"
            if not llm_arms
            else "no trained user tower (--no-train): the question's reference is missing"
        )
        exp.verdict(
            "inconclusive",
            f"{why}; template profile R@10 {r10(TEMPLATE_ARM):.3f} vs {ref} {r10(ref):.3f}"
            + "".join(f", {a.removesuffix(ITEMS)} {r10(a):.3f}" for a in llm_arms)
            + f"; {original}",
        )
        return {}
    g = {a: gains[TOWER][a] for a in (TEMPLATE_ARM, *llm_arms)}
    words = {
        a: experiment.verdict_word(x["recall@10"]["ci95"], "competitive", MARGIN)
        for a, x in g.items()
    }
    best = max(g, key=lambda a: g[a]["recall@10"]["mean"])
    word = (
        "confirmed"
        if "confirmed" in words.values()
        else "refuted"
        if set(words.values()) == {"refuted"}
        else "inconclusive"
    )
    if word == "confirmed":  # the profile that decides it: the best of those confirmed
        best = max(
            (a for a in g if words[a] == "confirmed"), key=lambda a: g[a]["recall@10"]["mean"]
        )
    fmt = lambda x, m="recall@10": experiment.format_interval(x[m])
    gb = g[best]
    lo, hi = gb["recall@10"]["ci95"]
    n_users = min(g[a]["n_users"] for a in llm_arms)
    name = lambda a: a.removesuffix(ITEMS)
    by = label if best != TEMPLATE_ARM else "no LLM"
    clauses = [
        (
            f"best text profile '{name(best)}' ({by}) R@10 {r10(best):.3f} vs the trained user "
            f"tower {r10(TOWER):.3f} (paired gain {fmt(gb)}, {gb['n_users']} users; claim: no "
            f"worse than the tower by more than {MARGIN}, half-width {(hi - lo) / 2:.3f})"
        ),
        "every profile - tower: " + ", ".join(f"{name(a)} {fmt(x)}" for a, x in g.items()),
        f"NDCG@10 best - tower {fmt(gb, 'ndcg@10')}",
    ]
    tf = gains.get("top-frequency", {})
    if best in tf:
        clauses.append(f"vs top-frequency ({r10('top-frequency'):.3f}): {fmt(tf[best])}")
    for arm, placebo, what in (
        (HISTORY_ARM, PLACEBO, "history"),
        (NARRATION_ARM, NARRATION_PLACEBO, "narration"),
    ):
        if placebo + ITEMS in exp.lists and arm in exp.lists:
            pg = exp.gain(arm, placebo + ITEMS)
            clauses.append(f"{what} vs another user's {what} (placebo) {fmt(pg)}")
    clauses.append(original)
    exp.verdict(word, "; ".join(clauses), n_users=n_users)
    gains[TOWER][best]["margin"] = MARGIN
    return {
        "verdict_reads": {
            "replace": {
                "gain": f"gains.{TOWER}.{best}",
                "metric": "recall@10",
                "reference": TOWER,
                "interval": "95% paired bootstrap over users (the tower's first seed)",
                "claim": "competitive",
                "margin": MARGIN,
                "arm": best,
                "candidates": list(g),
            }
        },
        "verdict_words": words,
    }


if __name__ == "__main__":
    experiment.main_guard(main)
