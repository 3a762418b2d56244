"""Two-tower retrieval on Instacart, evaluated beside strong simple baselines and
re-ranked with LightGBM / XGBoost.

    uv run two_tower.py                                   # built-in generated sample
    uv run two_tower.py --data-dir DIR --items 5000       # real Kaggle-format CSVs
    uv run two_tower.py --split temporal --seeds 1        # next-basket protocol, one seed

Prints one table (rows = models; R@5, R@10, R@20, NDCG@10 as mean±std over training
seeds; the repeat / explore breakdown; candidate recall for the rankers), the paired
gain of each pipeline over the strong simple baselines, and writes a JSON with the
configuration, data summary, metrics, 95% bootstrap intervals, timings and the git
commit. The split is always the project's one split (SPLIT_SEED=42); --seeds varies
only the model's initialisation and batch order.
"""

import options

# defaults (all overridable from the command line)
SEEDS = 3  # training seeds; headline numbers are mean ± std over them
CANDIDATE_SETTINGS = (
    "faiss@20",
    "faiss@50+bought",
)  # the original study's, and the gap-closing one
RANKERS = ("lightgbm", "xgboost")
QUICK = {"users": 600, "items": 1500, "seeds": 1, "epochs": 1, "rankers": "lightgbm"}
QUESTION = "How far do two-tower retrieval and a GBDT re-ranker get beside strong simple baselines?"
ORIGINAL_FINDING = (
    "two-tower R@20 0.188, NDCG@10 0.293 (2,000 heaviest users, 5,000 items); "
    "no top-frequency or TIFU-KNN baseline"
)


def parse_args(argv=None):
    p = options.script_parser(__doc__, seeds=SEEDS, llm_args=False)
    r = p.add_argument_group("re-ranking")
    r.add_argument(
        "--rankers",
        default=",".join(RANKERS),
        help="comma list of lightgbm, xgboost; 'none' to skip the ranking stage",
    )
    r.add_argument(
        "--candidates",
        default=",".join(CANDIDATE_SETTINGS),
        help="comma list of candidate settings: faiss@K or faiss@K+bought",
    )
    r.add_argument(
        "--ranker-train-users",
        type=int,
        default=0,
        help="each cross-fitting fold trains its ranker on a seeded sample of at most this "
        "many users (0: all; a fold holds half the users); default %(default)s",
    )
    return options.parse_args_with_quick(p, argv, QUICK)


# --help answers here, before the heavy imports below (torch alone takes seconds)
options.help_before_imports(parse_args)

import time

import numpy as np

import common as C
import experiment
import reranking


def main(argv=None):
    args = parse_args(argv)
    # options first, so a typo fails before any data is loaded
    cand_cfgs = [
        reranking.CandidateConfig.parse(c) for c in args.candidates.split(",") if c.strip()
    ]
    rankers = (
        [] if args.rankers == "none" else [r.strip() for r in args.rankers.split(",") if r.strip()]
    )
    if set(rankers) - set(RANKERS):
        raise C.ConfigError(
            f"unknown ranker(s) {', '.join(sorted(set(rankers) - set(RANKERS)))} "
            f"(choose from {', '.join(RANKERS)} or none)"
        )
    if rankers and not cand_cfgs:  # else the ranking stage would be skipped without a word
        raise C.ConfigError("--candidates is empty (faiss@K settings, or --rankers none)")

    # data, split, features, reference baselines
    exp = experiment.Experiment(
        "two_tower", args, question=QUESTION, original_finding=ORIGINAL_FINDING
    )
    print(f"logQ correction {'on' if args.logq else 'off'}")
    exp.add_baselines()

    # two-tower per training seed, then each candidate setting x ranker
    k_max = max([C.K_MAX, *[c.k for c in cand_cfgs]])  # one FAISS search serves every setting
    rankers_info, towers = {}, []
    for seed in exp.seeds:
        model = exp.train(options.tower_config(args, seed))
        towers.append(
            {
                "seed": seed,
                "loaded_from_cache": model.loaded_from is not None,
                "epochs": model.training_log["epochs"],
            }
        )
        t0 = time.perf_counter()
        retrieved, scores = C.retrieve(model, exp.users, k_max)
        exp.timings.setdefault("retrieve_s", []).append(round(time.perf_counter() - t0, 2))
        exp.add("two-tower", retrieved, cand_recall=None)
        for cc in cand_cfgs if rankers else []:
            out = reranking.rerank(
                model,
                exp.users,
                exp.feats,
                exp.split,
                cc,
                kinds=rankers,
                retrieved=(retrieved, scores),
                seed=seed,
                train_users=args.ranker_train_users,
            )
            for kind, (ranked, info) in out.items():
                label = f"two-tower {cc.name()} + {kind}"
                exp.add(label, ranked, cand_recall=info["candidate_recall"])
                exp.timings.setdefault("rank_s", []).append(info["stage_seconds"])
                rankers_info.setdefault(
                    label,
                    {
                        k: info[k]
                        for k in (
                            "feature_importance",
                            "candidates_per_user",
                            "train_seconds",
                            "stage_seconds",
                        )
                    },
                )
    # the two-tower's own top-20 list is the faiss@20 candidate set
    exp.cand_recall["two-tower"] = float(
        np.mean([r["all"]["recall@20"] for r in exp.runs["two-tower"]])
    )

    # report
    exp.print_table()
    for label, info in rankers_info.items():
        if label.endswith("lightgbm"):
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(info["feature_importance"].items())[:5])
            print(f"top features by gain, {label} (seed {exp.seeds[0]}): {top}")
    models = [a for a in exp.runs if a.startswith("two-tower")]
    references = [experiment.REFERENCE_BASELINE] + (["tifu-knn"] if "tifu-knn" in exp.runs else [])
    gains = {ref: exp.print_gains(models, ref) for ref in references}
    t = exp.timings
    print(
        f"time: {time.perf_counter() - exp.t_start:.1f}s so far, "
        f"training {np.sum(t['train_s']):.1f}s "
        f"over {len(exp.seeds)} seed(s), ranking {np.sum(t.get('rank_s', [0])):.1f}s, "
        f"baselines {t['baselines_s']:.1f}s"
    )
    exp.write(
        {
            "tower_config": {
                **options.tower_config(args, exp.seeds[0]).key(),
                "seed": exp.seeds,
            },
            "logq_correction": args.logq,
            "gains": gains,
            "rankers": rankers_info,
            "training": towers,
        }
    )
    return exp.summary()


if __name__ == "__main__":
    experiment.main_guard(main)
