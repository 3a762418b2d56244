"""Experiment 2: can a natural-language user profile replace a trained user tower?

Original finding (6 users): category precision@10 0.767 with the template profile vs 0.167
with the LLM-narrated profile. Its profiles were built from the wrong feature columns; here
both profiles say the same facts, from TRAINING rows only (text.user_profile_facts).

Protocol, top to bottom:
  1. data -> the one split -> features from training rows (experiment.Experiment); a seeded
     sample of --llm-users evaluation users (all of them get every arm).
  2. profiles: the template profile (text.profile_template_text of the facts) and the LLM
     narration of the same facts (prompt user_narration, through llm/, cached).
  3. each profile is embedded (MiniLM, text.embed_texts) and matched by FAISS against the
     item template texts "name. aisle. department."; and, when the LLM cache holds item
     descriptions (llm_item_enrichment.py wrote them) against those, on the described items
     only (truth restricted to them; said in the output).
  4. references: the trained two-tower's user tower (--seeds seeds; the same saved towers as
     two_tower.py), top-frequency, popularity, random (and TIFU-KNN unless --no-tifu).
  5. metrics: R@5/10/20, NDCG@10 (metrics.evaluate) and
        category precision@10 = for each user, the share of the top-10 recommended items
        whose department is the user's most bought department in training rows (by
        purchases; ties to the lower department id); an empty slot counts as a miss.
        Its base rate = the share of the catalogue's items in that department (what a
        uniformly random list scores), averaged over the same users.
     All with 95% bootstrap intervals over users; the verdict rests on the paired interval
     of template - narration category precision@10.

    uv run llm_user_narration.py --no-llm
    uv run llm_user_narration.py --llm local --llm-users 50 --seeds 1 --epochs 1
    uv run llm_user_narration.py --quick
"""

from __future__ import annotations

import numpy as np

import common as C
import descriptions as D
import experiment
import metrics
import text as T
from prompts import TEMPLATES

QUESTION = "Can a natural-language user profile replace a trained user tower?"
ORIGINAL_FINDING = "category precision@10: template profile 0.767 vs LLM narration 0.167 (6 users)"

# ---------------------------------------------------------------------------------------------
# constants (each one is also a command-line option)
EVAL_USERS = 300  # users per arm (>= 200 by the experiments' contract)
CAT_K = 10  # category precision@10
QUICK = {"users": 400, "items": 1500, "seeds": 1, "epochs": 1, "hidden": 64, "llm_users": 8}

# arm names the verdict and the paired gains refer to
TOWER = "two-tower user tower"
TEMPLATE_ARM = "template profile x template items"
NARRATION_ARM = "LLM narration x template items"
BASE_RATE = "base rate (random catalogue item)"


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


def parse_args(argv=None):
    p = experiment.script_parser(__doc__, epilog_from=5)
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
    args = experiment.parse_args_with_quick(p, argv, QUICK)
    if args.llm_users < 1:
        raise C.ConfigError("--llm-users must be >= 1")
    return args


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

    # --- 2. profiles: template text and the LLM narration of the same facts ----------------
    client = exp.start_llm("user_narration", "item_description")
    facts = T.user_profile_facts(ds, split.train, users)
    profiles = {"template profile": [T.profile_template_text(f) for f in facts]}
    prof_users = {"template profile": users}
    narration = None
    if client:
        narration = narrate_profiles(client, profiles["template profile"], users)
        profiles["LLM narration"] = narration["texts"]
        prof_users["LLM narration"] = narration["users"]
    prof_emb = {p: T.embed_texts(t, progress=progress) for p, t in profiles.items()}

    # --- 3. item texts: template, and cached LLM descriptions when there are any -----------
    item_emb, desc_scope = item_embeddings(ds, split, client, progress)

    # --- 4. arms and references -----------------------------------------------------------
    exp.add_baselines(users=users)
    if not args.no_train:
        for seed in exp.seeds:
            m = exp.train(experiment.tower_config(args, seed))
            exp.add(TOWER, C.retrieve(m, users)[0], users)
    for p, pe in prof_emb.items():
        for name, (ie, items, sp) in item_emb.items():
            # an arm with any LLM text says which model wrote it
            llm_text = p != "template profile" or name != "template items"
            label = client.label if client and llm_text else None
            exp.add(f"{p} x {name}", C.search(pe, ie, items), prof_users[p], sp, label=label)

    # --- 5. category precision@10 of every arm, and its base rate -------------------------
    top_dept = top_departments(ds, split.train, users)
    cat = {
        arm: category_precision(ds, ranked, top_dept[np.searchsorted(users, u)])
        for arm, (u, ranked, _) in exp.lists.items()
    }
    base = department_base_rate(ds, top_dept)

    # --- 6. tables ------------------------------------------------------------------------
    exp.print_table(title="arms x metrics (R@K, NDCG@10 over the evaluation users)")
    if desc_scope:
        print(desc_scope)
    print()
    cat_json = print_category_precision(exp, cat, base)
    gains = print_paired_gains(exp, profiles)

    # --- 7. verdict: template vs narration category precision, paired over users -----------
    extra = {
        "eval_users": len(users),
        "category_precision": cat_json,
        "gains": gains,
        "descriptions_scope": desc_scope,
    }
    if narration and len(narration["users"]):
        extra["paired_template_minus_narration"] = narration_verdict(
            exp, cat, base, users, narration["users"], client.label
        )
        extra["narration"] = narration["info"]
    else:
        template_only_verdict(exp, cat, base, exp.llm.note)
    exp.write(extra)


# --- arms: narration and item texts ----------------------------------------------------------
def narrate_profiles(client, template_texts: list[str], users: np.ndarray) -> dict:
    """The LLM narration of each template profile (prompt user_narration, cached answers
    free) -> {"users": the users narrated, "texts": their narrations, "info": counts, tokens
    and mean words for the results JSON}. A failed narration drops its user from the arm."""
    reqs = [TEMPLATES["user_narration"].request(purchase_summary=t) for t in template_texts]
    print(f"narrating {len(reqs):,} profiles with {client.label} (cached answers are free)")
    res = client.run_batch(reqs)
    ok = np.array([r.ok and bool(r.text) for r in res])
    texts = [r.text for r, o in zip(res, ok) if o]
    info = {
        "users": len(users),
        "narrated": int(ok.sum()),
        "input_tokens": int(sum(r.input_tokens for r in res if r.ok)),
        "output_tokens": int(sum(r.output_tokens for r in res if r.ok)),
        "words": float(np.mean([len(t.split()) for t in texts])) if ok.any() else None,
    }
    if not ok.all():
        print(
            f"narration failed for {int((~ok).sum())} users: the LLM arm runs on "
            f"{int(ok.sum())} users"
        )
    return {"users": users[ok], "texts": texts, "info": info}


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
def print_category_precision(exp, cat: dict, base: np.ndarray) -> dict:
    """Prints the category precision@10 table (every arm and the base rate, 95% bootstrap
    interval over users); returns it for the results JSON: {arm: {"mean", "ci95", "users"}}."""
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
    print(
        f"category precision@{CAT_K}: share of the top-{CAT_K} items in the user's most "
        "bought training department"
    )
    print(experiment.format_table(rows, ["cat. precision@10", "95% CI", "users"], first="arm"))
    print()
    return cat_json


def print_paired_gains(exp, profiles: dict) -> dict:
    """Prints the paired R@10 / NDCG@10 gains; returns {reference: {arm: gain}}. Gains only
    between arms that rank the same items: the x descriptions arms rank the described subset
    with truth restricted to it, another denominator than the tower's."""
    gains = {}
    if TOWER in exp.lists:
        gains[TOWER] = exp.print_gains([f"{p} x template items" for p in profiles], TOWER)
    narr_d, tmpl_d = "LLM narration x descriptions", "template profile x descriptions"
    if narr_d in exp.lists and tmpl_d in exp.lists:
        gains[tmpl_d] = exp.print_gains([narr_d], tmpl_d)
    return gains


def narration_verdict(exp, cat, base, users, narrated, label: str) -> dict:
    """Prints the verdict on template - narration category precision@10 (claim: the template
    profile beats the narration, as the original found), paired over the narrated users;
    returns the paired difference {"mean", "ci95", "users"} for the results JSON."""
    t_arm, n_arm = TEMPLATE_ARM, NARRATION_ARM
    g = metrics.paired_mean_ci(cat[t_arm][np.searchsorted(users, narrated)] - cat[n_arm])
    (lo, hi), n = g["ci95"], g["n"]
    exp.verdict(
        experiment.verdict_word((lo, hi), "beats"),
        (
            f"category precision@10 template profile {cat[t_arm].mean():.3f} vs "
            f"{label} narration {cat[n_arm].mean():.3f} (paired difference "
            f"{g['mean']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], {n} users; base rate "
            f"{base.mean():.3f}); original 0.767 vs 0.167 on 6 users"
        ),
        n_users=n,
    )
    return {"mean": g["mean"], "ci95": [lo, hi], "users": n}


def template_only_verdict(exp, cat, base, reason: str):
    """Prints the inconclusive verdict of a run without a narration arm: the template
    profile's category precision and R@10 beside the tower (or top-frequency)."""
    summary = exp.summary()
    r10 = summary[TEMPLATE_ARM]["all"]["recall@10"]["mean"]
    ref = TOWER if TOWER in exp.runs else "top-frequency"
    exp.verdict(
        "inconclusive",
        (
            f"no LLM arm ({reason}); template profile category precision@10 "
            f"{cat[TEMPLATE_ARM].mean():.3f} (base rate {base.mean():.3f}), R@10 {r10:.3f} vs "
            f"{ref} {summary[ref]['all']['recall@10']['mean']:.3f}; original template "
            "0.767 vs LLM 0.167"
        ),
    )


if __name__ == "__main__":
    experiment.main_guard(main)
