"""Two-tower retrieval on Instacart, evaluated beside strong simple baselines and
re-ranked with LightGBM / XGBoost.

    uv run two_tower.py                                   # built-in generated sample
    uv run two_tower.py --data-dir DIR --items 5000       # real Kaggle-format CSVs
    uv run two_tower.py --split temporal --seeds 1        # next-basket protocol, one seed

Prints one table (rows = models; R@5, R@10, R@20, NDCG@10 as mean±std over training
seeds; the repeat / explore breakdown; candidate recall for the rankers) and writes a
JSON with the configuration, data summary, metrics, 95% bootstrap intervals, timings
and the git commit. The split is always the project's one split (SPLIT_SEED=42); --seeds
varies only the model's initialisation and batch order.
"""
import argparse
import time

import numpy as np

import common as C

# defaults (all overridable from the command line)
SEEDS = 3                  # training seeds; headline numbers are mean ± std over them
CANDIDATE_SETTINGS = ("faiss@20", "faiss@50+bought")   # seed architecture, gap-closing
RANKERS = ("lightgbm", "xgboost")
BEST_BASELINE = "top-frequency + popular"   # the strong simple baseline gains are measured against
COLUMNS = ["R@5", "R@10", "R@20", "NDCG@10", "R@20 repeat", "R@20 explore", "cand. recall"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_data_args(p)
    d = C.TowerConfig()
    g = p.add_argument_group("two-tower")
    g.add_argument("--epochs", type=int, default=d.epochs, help="training epochs over the training rows")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="in-batch negatives per step")
    g.add_argument("--dim", type=int, default=d.dim, help="embedding size of both towers")
    g.add_argument("--hidden", type=int, default=d.hidden, help="MLP width of both towers")
    g.add_argument("--temperature", type=float, default=d.temperature, help="InfoNCE temperature")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--no-id-embeddings", action="store_true", help="features only, no learned ID embeddings")
    g.add_argument("--purchases", choices=["none", "bag", "centroid"], default=d.purchases,
                   help="how the user tower sees the user's training purchases (see TowerConfig)")
    g.add_argument("--logq", action="store_true", help="logQ sampling-bias correction of in-batch negatives")
    g.add_argument("--seeds", type=int, default=SEEDS, help="number of training seeds (42, 43, ...)")
    g.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core)")
    g.add_argument("--retrain", action="store_true", help="ignore saved towers and train again")
    r = p.add_argument_group("re-ranking")
    r.add_argument("--rankers", default=",".join(RANKERS),
                   help="comma list of lightgbm, xgboost; 'none' to skip the ranking stage")
    r.add_argument("--candidates", default=",".join(CANDIDATE_SETTINGS),
                   help="comma list of candidate settings: faiss@K or faiss@K+bought")
    p.add_argument("--out", default=None, help="results JSON path (default results/two_tower_<source>_<split>.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p.parse_args(argv)


def tower_config(args, seed: int) -> C.TowerConfig:
    return C.TowerConfig(dim=args.dim, hidden=args.hidden, id_embeddings=not args.no_id_embeddings,
                         purchases=args.purchases, temperature=args.temperature, logq=args.logq,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)


def summarize(runs: list) -> dict:
    """Mean and std over seeds of each metric in a list of evaluate() results."""
    out = {}
    for part in ("all", "repeat", "explore"):
        keys = [k for k in runs[0][part] if k != "n_users"]
        out[part] = {k: {"mean": float(np.mean([r[part][k] for r in runs])),
                         "std": float(np.std([r[part][k] for r in runs])) if len(runs) > 1 else None}
                     for k in keys}
        out[part]["n_users"] = runs[0][part]["n_users"]
    out["ci95_first_seed"] = runs[0]["ci95"]
    out["per_seed"] = [{k: r["all"][k] for k in ("recall@5", "recall@10", "recall@20", "ndcg@10")}
                       for r in runs]
    return out


def table_row(s: dict, cand_recall=None) -> dict:
    ms = lambda part, k: (s[part][k]["mean"], s[part][k]["std"])
    return {"R@5": ms("all", "recall@5"), "R@10": ms("all", "recall@10"),
            "R@20": ms("all", "recall@20"), "NDCG@10": ms("all", "ndcg@10"),
            "R@20 repeat": ms("repeat", "recall@20"), "R@20 explore": ms("explore", "recall@20"),
            "cand. recall": cand_recall}


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    cand_cfgs = [C.CandidateConfig.parse(c) for c in args.candidates.split(",") if c.strip()]
    rankers = [] if args.rankers == "none" else [r.strip() for r in args.rankers.split(",") if r.strip()]
    if set(rankers) - set(RANKERS):
        raise C.DataError(f"unknown ranker(s) {', '.join(sorted(set(rankers) - set(RANKERS)))} "
                          f"(choose from {', '.join(RANKERS)} or none)")
    ds = C.load_from_args(args)
    split = C.split_interactions(ds.interactions, args.split)
    feats = C.build_features(ds, split.train)
    users = split.eval_users()
    device = C.pick_device(args.device)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    seeds = [C.RANDOM_SEED + i for i in range(args.seeds)]
    print(f"split: {split.mode} (seed {split.seed}) -> {len(split.train):,} train rows, "
          f"{len(split.test):,} held-out rows, {len(users):,} evaluation users | device {device} | "
          f"seeds {seeds} | logQ correction {'on' if args.logq else 'off'}")

    runs, timings = {}, {"train_s": [], "retrieve_s": [], "rank_s": {}}
    t0 = time.perf_counter()
    first_seed_lists = {}      # each model's lists for the first seed: paired comparisons
    for name, ranked in C.baseline_rankings(feats, users, ds.n_items).items():
        runs[name] = [C.evaluate(ranked, users, split, feats)]
        first_seed_lists[name] = ranked
    timings["baselines_s"] = time.perf_counter() - t0
    importances, cand_recall, tower_info = {}, {}, []
    k_max = max([C.K_MAX, *[c.k for c in cand_cfgs]])   # one FAISS search serves every setting
    for seed in seeds:
        cfg = tower_config(args, seed)
        t0 = time.perf_counter()
        model = C.train_two_tower(ds, split, feats, cfg, device, use_saved=not args.retrain,
                                  progress=not args.quiet)
        timings["train_s"].append(time.perf_counter() - t0)
        tower_info.append({"seed": seed, "loaded_from_cache": model.loaded_from is not None,
                           "epochs": model.training_log["epochs"]})
        t0 = time.perf_counter()
        retrieved, scores = C.retrieve(model, users, k_max)
        timings["retrieve_s"].append(time.perf_counter() - t0)
        runs.setdefault("two-tower", []).append(C.evaluate(retrieved[:, :C.K_MAX], users, split, feats))
        first_seed_lists.setdefault("two-tower", retrieved[:, :C.K_MAX])
        for cc in cand_cfgs if rankers else []:
            t0 = time.perf_counter()
            out = C.rerank(model, users, feats, split, cc, kinds=rankers, retrieved=(retrieved, scores),
                           seed=seed)
            timings["rank_s"].setdefault(cc.name(), []).append(time.perf_counter() - t0)
            for kind, (ranked, info) in out.items():
                label = f"two-tower {cc.name()} + {kind}"
                cand_recall.setdefault(cc.name(), []).append(info["candidate_recall"])
                runs.setdefault(label, []).append(C.evaluate(ranked, users, split, feats))
                first_seed_lists.setdefault(label, ranked)
                importances.setdefault(label, {k: info[k] for k in (
                    "feature_importance", "candidates_per_user", "train_seconds", "stage_seconds")})

    results = {name: summarize(r) for name, r in runs.items()}
    rows = {}
    for name, s in results.items():
        cr = next((float(np.mean(v)) for c, v in cand_recall.items() if f" {c} + " in name), None)
        rows[name] = table_row(s, cr)
    if "two-tower" in rows:   # the two-tower's own top-20 list is the faiss@20 candidate set
        rows["two-tower"]["cand. recall"] = rows["two-tower"]["R@20"][0]
    print()
    print(C.format_table(rows, COLUMNS))
    print(f"(mean±std over {len(seeds)} training seed(s); baselines are deterministic but "
          f"'random'; repeat = held-out items the user bought in training rows, explore = the rest; "
          f"cand. recall = share of held-out items among the candidates, the ceiling of a re-ranker)")
    for label, info in importances.items():
        if label.endswith("lightgbm"):
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(info["feature_importance"].items())[:5])
            print(f"top features by gain, {label} (seed {seeds[0]}): {top}")
    gains = {name: C.paired_gain(lst, first_seed_lists[BEST_BASELINE], users, split)
             for name, lst in first_seed_lists.items() if name.startswith("two-tower")}
    print(f"gain over '{BEST_BASELINE}' (seed {seeds[0]}; 95% paired bootstrap over users):")
    for name, g in gains.items():
        print(f"  {name:<40}" + "  ".join(f"{m} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
                                          for m, v in g.items()))
    timings["total_s"] = time.perf_counter() - t_start
    print(f"time: total {timings['total_s']:.1f}s, training {np.sum(timings['train_s']):.1f}s "
          f"over {len(seeds)} seed(s), ranking "
          f"{sum(np.sum(v) for v in timings['rank_s'].values()):.1f}s")
    src = "generated" if "generated" in ds.source else "csv"
    out = args.out or C.RESULTS_DIR / f"two_tower_{src}_{split.mode}.json"
    path = C.write_results(out, {
        "experiment": "two_tower", "data": ds.summary(), "split": {"mode": split.mode, "seed": split.seed,
        "train_rows": len(split.train), "test_rows": len(split.test), "eval_users": len(users)},
        "tower_config": {**tower_config(args, seeds[0]).key(), "seed": seeds},
        "logq_correction": args.logq, "device": device, "seeds": seeds,
        "candidates": {c: {"recall_mean": float(np.mean(v)), "per_seed_and_ranker": v}
                       for c, v in cand_recall.items()},
        "metrics": results, "gain_over_best_baseline": {"baseline": BEST_BASELINE, "seed": seeds[0],
                                                            "models": gains},
        "rankers": importances, "training": tower_info,
        "timings": timings})
    print(f"results: {path}")
    return results


if __name__ == "__main__":
    C.main_guard(main)
