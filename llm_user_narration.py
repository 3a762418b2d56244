"""Experiment 2: can a natural-language user profile replace a trained user tower?

Original finding (6 users): category precision@10 0.767 with the template profile vs 0.167
with the LLM-narrated profile. Its profiles were built from the wrong feature columns; here
both profiles say the same facts, from TRAINING rows only (common.user_profile_facts).

Protocol, top to bottom:
  1. data -> the one split -> features from training rows (common.Experiment); a seeded
     sample of --eval-users evaluation users (all of them get every arm).
  2. profiles: the template profile (common.profile_template_text of the facts) and the LLM
     narration of the same facts (prompt user_narration, through llm.py, cached).
  3. each profile is embedded (MiniLM, common.embed_texts) and matched by FAISS against the
     item template texts "name. aisle. department."; and, when the LLM cache holds item
     descriptions (llm_item_enrichment.py wrote them) against those, on the described items
     only (truth restricted to them; said in the output).
  4. references: the trained two-tower's user tower (--seeds seeds; the same saved towers as
     two_tower.py), top-frequency, popularity, random (and TIFU-KNN unless --no-tifu).
  5. metrics: R@5/10/20, NDCG@10 (common.evaluate) and
        category precision@10 = for each user, the share of the top-10 recommended items
        whose department is the user's most bought department in training rows (by
        purchases; ties to the lower department id); an empty slot counts as a miss.
        Its base rate = the share of the catalogue's items in that department (what a
        uniformly random list scores), averaged over the same users.
     All with 95% bootstrap intervals over users; the verdict rests on the paired interval
     of template - narration category precision@10.

    uv run llm_user_narration.py --no-llm
    uv run llm_user_narration.py --llm local --eval-users 50 --seeds 1 --epochs 1
    uv run llm_user_narration.py --quick
"""

from __future__ import annotations

import argparse

import numpy as np

import common as C
import descriptions as D
import llm
from evals.prompt_registry import TEMPLATES, versions_used

# ---------------------------------------------------------------------------------------------
# constants (each one is also a command-line option)
EVAL_USERS = 300  # users per arm (>= 200 by the experiments' contract)
CAT_K = 10  # category precision@10
QUICK = {"users": 400, "items": 1500, "seeds": 1, "epochs": 1, "hidden": 64, "eval_users": 40}


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
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[5:]),
    )
    C.add_data_args(p)
    C.add_experiment_args(p)
    C.add_tower_args(p)
    llm.add_llm_args(p)
    g = p.add_argument_group("experiment 2")
    g.add_argument(
        "--eval-users",
        type=int,
        default=EVAL_USERS,
        metavar="N",
        help=f"evaluation users (seeded sample) every arm is scored on, default "
        f"{EVAL_USERS}; --users is the data option (users loaded)",
    )
    g.add_argument(
        "--no-train", action="store_true", help="leave out the trained two-tower reference"
    )
    args = C.parse_args_with_quick(p, argv, QUICK)
    if args.eval_users < 1:
        raise C.ConfigError("--eval-users must be >= 1")
    if args.seeds < 1:
        raise C.ConfigError("--seeds must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    exp = C.Experiment("llm_user_narration", args)
    ds, split = exp.ds, exp.split
    progress = not args.quiet

    # --- 1. the evaluation users ----------------------------------------------------------
    users = C.sample_users(exp.users, args.eval_users)  # nested across sizes
    print(
        f"{len(users):,} evaluation users (seeded sample of {len(exp.users):,})"
        + ("; fewer than the 200 the experiments' contract asks for" if len(users) < 200 else "")
    )

    # --- 2. profiles: template text and the LLM narration of the same facts ----------------
    client, reason = llm.client_from_args(args)
    print(reason if client else f"LLM arms skipped: {reason}")
    facts = C.user_profile_facts(ds, split.train, users)
    profiles = {"template profile": [C.profile_template_text(f) for f in facts]}
    narrated = users
    narr_info = None
    if client:
        reqs = [
            TEMPLATES["user_narration"].request(purchase_summary=t)
            for t in profiles["template profile"]
        ]
        print(f"narrating {len(reqs):,} profiles with {client.label} (cached answers are free)")
        res = client.run_batch(reqs)
        ok = np.array([r.ok and bool(r.text) for r in res])
        narrated = users[ok]
        profiles["LLM narration"] = [r.text for r, o in zip(res, ok) if o]
        narr_info = {
            "users": len(users),
            "narrated": int(ok.sum()),
            "input_tokens": int(sum(r.input_tokens for r in res if r.ok)),
            "output_tokens": int(sum(r.output_tokens for r in res if r.ok)),
            "words": float(np.mean([len(t.split()) for t in profiles["LLM narration"]]))
            if ok.any()
            else None,
        }
        if not ok.all():
            print(
                f"narration failed for {int((~ok).sum())} users: the LLM arm runs on "
                f"{int(ok.sum())} users"
            )
    prof_users = {"template profile": users, "LLM narration": narrated}
    prof_emb = {p: C.embed_texts(t, progress=progress) for p, t in profiles.items()}

    # --- 3. item texts: template, and cached LLM descriptions when there are any -----------
    all_items = np.arange(ds.n_items)
    item_emb = {
        "template items": (
            C.embed_texts(C.item_template_texts(ds), progress=progress),
            all_items,
            split,
        )
    }
    desc_scope = None
    if client:
        desc, _ = D.describe_items(ds, all_items, client, cached_only=True)
        if desc:
            have = np.array(sorted(desc), dtype=np.int64)
            e = np.zeros((ds.n_items, 384), np.float32)
            e[have] = C.embed_texts([desc[i] for i in have], progress=progress)
            item_emb["descriptions"] = (e, have, C.restrict_truth(split, have))
            desc_scope = (
                f"x descriptions: matched against the {len(have):,} items with a cached "
                f"{client.label} description (of {ds.n_items:,}); truth restricted "
                "to them"
            )
            print(desc_scope)
        else:
            print(
                "no cached item descriptions for this model: run llm_item_enrichment.py "
                "with it first (profile x descriptions arms skipped)"
            )

    # --- 4. arms and references -----------------------------------------------------------
    exp.add_baselines(users=users)
    if not args.no_train:
        for seed in exp.seeds:
            m = exp.train(C.tower_config(args, seed))
            exp.add("two-tower user tower", C.retrieve(m, users)[0], users)
    text_arms = []
    for p, pe in prof_emb.items():
        for name, (ie, items, sp) in item_emb.items():
            arm = f"{p} x {name}"
            u = prof_users[p]
            lab = (
                client.label
                if client and (p != "template profile" or name != "template items")
                else None
            )
            exp.add(arm, C.search(pe, ie, items), u, sp, label=lab)
            text_arms.append(arm)

    # --- 5. category precision@10 with intervals ------------------------------------------
    top_dept = top_departments(ds, split.train, users)
    dept = ds.items["department_id"].fillna(0).to_numpy(np.int64)
    share = np.bincount(dept, minlength=int(dept.max()) + 1) / len(dept)
    cat, cat_users = {}, {}
    for arm, (u, ranked, _) in exp.lists.items():
        j = np.searchsorted(users, u)
        cat[arm], cat_users[arm] = category_precision(ds, ranked, top_dept[j]), u
    base = share[top_dept]
    rows, cat_json = {}, {}
    for arm, v in [*cat.items(), ("base rate (random catalogue item)", base)]:
        ci = C.bootstrap_ci({"c": v})["c"]
        name = arm + (f" [{exp.labels[arm]}]" if arm in exp.labels else "")
        rows[name] = {
            "cat. precision@10": float(v.mean()),
            "95% CI": f"[{ci[0]:.3f}, {ci[1]:.3f}]",
            "users": len(v),
        }
        cat_json[arm] = {"mean": float(v.mean()), "ci95": ci, "users": len(v)}

    exp.print_table(title="arms x metrics (R@K, NDCG@10 over the evaluation users)")
    if desc_scope:
        print(desc_scope)
    print()
    print(
        f"category precision@{CAT_K}: share of the top-{CAT_K} items in the user's most "
        "bought training department"
    )
    print(C.format_table(rows, ["cat. precision@10", "95% CI", "users"], first="arm"))
    print()
    # paired gains only between arms that rank the same items: the x descriptions arms rank
    # the described subset with truth restricted to it, another denominator than the tower's
    gains = {}  # reference -> {arm: paired gain}
    full_items = [a for a in text_arms if a.endswith("x template items")]
    if "two-tower user tower" in exp.lists:
        gains["two-tower user tower"] = exp.print_gains(full_items, "two-tower user tower")
    narr_d, tmpl_d = "LLM narration x descriptions", "template profile x descriptions"
    if narr_d in exp.lists and tmpl_d in exp.lists:
        gains[tmpl_d] = exp.print_gains([narr_d], tmpl_d)

    # --- 6. verdict: template vs narration category precision, paired over users -----------
    extra = {
        "eval_users": len(users),
        "category_precision": cat_json,
        "gains": gains,
        "llm_skipped": None if client else reason,
        "prompt_versions": versions_used("user_narration", "item_description"),
        "descriptions_scope": desc_scope,
    }
    t_arm, n_arm = "template profile x template items", "LLM narration x template items"
    if client and len(narrated):
        j = np.searchsorted(users, narrated)
        d = cat[t_arm][j] - cat[n_arm]
        lo, hi = C.bootstrap_ci({"d": d})["d"]
        status = "confirmed" if lo > 0 else "refuted" if hi < 0 else "inconclusive"
        extra.update(
            paired_template_minus_narration={
                "mean": float(d.mean()),
                "ci95": [lo, hi],
                "users": len(d),
            },
            narration=narr_info,
            llm=client.usage_report(),
        )
        exp.verdict(
            status,
            (
                f"category precision@10 template profile {cat[t_arm].mean():.3f} vs "
                f"{client.label} narration {cat[n_arm].mean():.3f} (paired difference "
                f"{d.mean():+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], {len(d)} users; base rate "
                f"{base.mean():.3f}); original 0.767 vs 0.167 on 6 users"
            ),
            n_users=len(d),
        )
    else:
        r10 = exp.summary()[t_arm]["all"]["recall@10"]["mean"]
        ref = "two-tower user tower" if "two-tower user tower" in exp.runs else "top-frequency"
        exp.verdict(
            "inconclusive",
            (
                f"no LLM arm ({reason}); template profile category precision@10 "
                f"{cat[t_arm].mean():.3f} (base rate {base.mean():.3f}), R@10 {r10:.3f} vs "
                f"{ref} {exp.summary()[ref]['all']['recall@10']['mean']:.3f}; original template "
                "0.767 vs LLM 0.167"
            ),
        )
    exp.write(extra)
    if client:
        client.close()


if __name__ == "__main__":
    C.main_guard(main)
