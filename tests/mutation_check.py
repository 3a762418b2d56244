"""Mutation check: deliberate bugs, each of which some test must catch.

    uv run python tests/mutation_check.py              # every mutation, 2 at a time
    uv run python tests/mutation_check.py --list       # the mutations, nothing run
    uv run python tests/mutation_check.py --only logq-sign split-fraction --jobs 1

The working tree's source files (git's tracked + untracked-not-ignored files, as they are
now; no data, caches or .venv) are copied once into a temporary folder. For each mutation
(file, old snippet, new snippet, test files) that snapshot is copied again, the snippet is
replaced in the copy, and the named test files run there with `pytest -x`. A mutation is
*caught* when a test fails on the mutated copy and
that same test passes on an unmutated copy (so a test that is failing or flaky anyway does
not count). A mutation whose old snippet is no longer in the file "did not apply": the
code drifted and the mutation must be updated; that counts as a failure too, so drift is
visible. Prints a table (mutation | caught? | failing test) and exits 1 unless every
mutation was caught.

Not part of the default test run (pytest collects only test_*.py). $INSTACART_DATA_DIR is
passed through: with it set the real-data tests run as well (slower).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {
    ".git",
    ".venv",
    "data",
    "results",
    "cache",
    "logs",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
}


@dataclass
class Mutation:
    name: str
    what: str  # the bug, in words
    file: str  # path relative to the repo root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple  # test files to run


M = Mutation
MUTATIONS = [
    # --- leakage: features must come from training rows only (features.py)
    M(
        "pop-all-rows",
        "item features (popularity among them) computed from all rows, not training rows",
        "features.py",
        "    item_feat, item_names = _item_features(train, pairs, reordered, I)\n",
        "    item_feat, item_names = _item_features(\n"
        "        ds.interactions, pairs, reordered_in_rows(ds.interactions), I\n"
        "    )\n",
        ("tests/test_data.py", "tests/test_rankers.py"),
    ),
    M(
        "gap-all-orders",
        "user gap features (days between orders) computed from all orders",
        "features.py",
        '    gap = orders.groupby("user")["days_since_prior_order"]',
        '    gap = ds.interactions.drop_duplicates("order_id").groupby("user")'
        '["days_since_prior_order"]',
        ("tests/test_data.py",),
    ),
    M(
        "shares-all-rows",
        "a feature from all rows: user department shares",
        "features.py",
        "_shares(dept[i], u, U, ds.n_departments + 1)",
        '_shares(dept[ds.interactions["item"].to_numpy()], ds.interactions["user"].to_numpy(), '
        "U, ds.n_departments + 1)",
        ("tests/test_data.py", "tests/test_rankers.py"),
    ),
    M(
        "pairs-all-rows",
        "a feature from all rows: user x item purchase history",
        "features.py",
        "    pairs = _pair_features(train, orders)",
        '    pairs = _pair_features(ds.interactions, ds.interactions.drop_duplicates("order_id"))',
        ("tests/test_rankers.py", "tests/test_data.py"),
    ),
    M(
        "kaggle-reordered",
        "reorder rates read Kaggle's reordered flag (whole history)",
        "features.py",
        "    reordered = reordered_in_rows(train)\n",
        '    reordered = train["reordered"].to_numpy()\n',
        ("tests/test_data.py", "tests/test_rankers.py"),
    ),
    # --- loading (instacart.py)
    M(
        "no-duplicate-order-check",
        "duplicate order_id check in the loader removed",
        "instacart.py",
        '    if orders["order_id"].duplicated().any():\n',
        '    if False and orders["order_id"].duplicated().any():\n',
        ("tests/test_data.py",),
    ),
    M(
        "no-eval-set-check",
        "an unknown eval_set value silently dropped",
        "instacart.py",
        '    bad = ~orders["eval_set"].isin(EVAL_SETS)\n',
        '    bad = orders["eval_set"].isin([])\n',
        ("tests/test_data.py",),
    ),
    # --- the split (splits.py)
    M(
        "split-fraction",
        "interaction split holds out 25% instead of test_frac",
        "splits.py",
        "[: round(test_frac * n)]",
        "[: round(0.25 * n)]",
        ("tests/test_data.py",),
    ),
    # --- metrics (metrics.py)
    M(
        "precision-non-padded",
        "Precision@K divides by the non-padded slots of a short list",
        "metrics.py",
        'out[f"precision@{k}"] = np.where(valid, h / k, np.nan)',
        'out[f"precision@{k}"] = np.where(valid, h / np.maximum((ranked[:, :k] >= 0).sum(1), 1), '
        "np.nan)",
        ("tests/test_metrics.py",),
    ),
    M(
        "ndcg-ideal-cutoff",
        "NDCG's ideal DCG over min(|truth|, max K) instead of min(|truth|, K)",
        "metrics.py",
        "ideal[np.minimum(sizes, k).astype(int)]",
        "ideal[np.minimum(sizes, kmax).astype(int)]",
        ("tests/test_metrics.py",),
    ),
    # --- two-tower loss (towers.py)
    M(
        "logq-sign",
        "logQ correction applied with the wrong sign",
        "towers.py",
        "logits_u2i - log_q[it][None, :]",
        "logits_u2i + log_q[it][None, :]",
        ("tests/test_two_tower.py",),
    ),
    M(
        "no-item-mask",
        "InfoNCE: a batch's repeated items count as negatives (mask dropped)",
        "towers.py",
        'F.cross_entropy(logits_u2i.masked_fill_(same_item, float("-inf")), target)',
        "F.cross_entropy(logits_u2i, target)",
        ("tests/test_two_tower.py",),
    ),
    M(
        "no-user-mask",
        "InfoNCE: a batch's repeated users count as negatives (mask dropped)",
        "towers.py",
        'F.cross_entropy(logits_i2u.masked_fill_(same_user, float("-inf")), target)',
        "F.cross_entropy(logits_i2u, target)",
        ("tests/test_two_tower.py",),
    ),
    # --- re-ranking (reranking.py)
    M(
        "ranker-every-fold",
        "ranker trained on every fold (a user's labels train its own ranker)",
        "reranking.py",
        "        tr = (fold_row != f) & (pos_per_user > 0)\n",
        "        tr = pos_per_user > 0\n",
        ("tests/test_rankers.py",),
    ),
    # --- other engineers' files
    M(
        "llm-cache-key-no-model",
        "LLM cache key ignores the model",
        "llm/request.py",
        '        "model": model,\n        "template": req.template,\n',
        '        "template": req.template,\n',
        ("tests/test_llm.py",),
    ),
    M(
        "generator-basket-45",
        "generator basket size +45%",
        "sample_generator.py",
        "    bsize = np.minimum(1 + rng.poisson(lam), pool_size[order_user])\n",
        "    bsize = np.minimum(np.round(1.45 * (1 + rng.poisson(lam))).astype(np.int64), "
        "pool_size[order_user])\n",
        ("tests/test_sample_generator.py",),
    ),
    M(
        "loss-user-gather",
        "a batch's repeated users get another user's vector (dedupe gather wrong)",
        "towers.py",
        "ue = ue[inverse] / self.cfg.temperature",
        "ue = ue[torch.sort(inverse).values] / self.cfg.temperature",
        ("tests/test_two_tower.py",),
    ),
    M(
        "bought-rows-shifted",
        "user tower: each user's purchase positions shifted by the user's own length",
        "towers.py",
        "torch.repeat_interleave(start - torch.cumsum(lens, 0) + lens, lens)",
        "torch.repeat_interleave(start - torch.cumsum(lens, 0), lens)",
        ("tests/test_two_tower.py",),
    ),
    M(
        "sample-not-nested",
        "LLM evaluation users: a sample of 70 does not contain the sample of 60",
        "experiment.py",
        "np.random.default_rng(seed).permutation(users)[:n]",
        "np.random.default_rng(seed + n).permutation(users)[:n]",
        ("tests/test_llm_user_narration.py",),
    ),
    M(
        "quick-overrides-given",
        "--quick overwrites options given on the command line",
        "options.py",
        "            if k not in given:\n",
        "            if k not in given or getattr(args, k) == parser.get_default(k):\n",
        ("tests/test_two_tower.py", "tests/test_llm_reranker.py"),
    ),
    M(
        "model-cache-ignores-code",
        "saved towers keyed without the tower code (an edited loss loads old towers)",
        "towers.py",
        "model.cfg.key(), tower_code_key(model), variant or {}",
        "model.cfg.key(), variant or {}",
        ("tests/test_two_tower.py",),
    ),
    M(
        "towers-keyed-by-file-times",
        "saved towers keyed by the data files' mtimes: a new session's copy retrains them all",
        "towers.py",
        "        [ds.content_key, split.mode, split.seed]\n",
        "        [ds.key, split.mode, split.seed]\n",
        ("tests/test_caches.py",),
    ),
    M(
        "pipeline-reference-any-data",
        "two_tower.py's reference row taken from a run on other data",
        "runs.py",
        "    return all(_same(data.get(k), other.get(k)) for k in SAME_DATA_KEYS)\n",
        "    return True\n",
        ("tests/test_two_tower.py", "tests/test_runs.py"),
    ),
    M(
        "results-replaced",
        "a run's results file replaces another run's file of the same name",
        "experiment.py",
        "self.per_user(), replace=explicit)",
        "self.per_user(), replace=True)",
        ("tests/test_runs.py",),
    ),
    M(
        "compare-hides-added-arm",
        "--compare A B does not list the arms only the later run has",
        "runs.py",
        '        "added": [x for x in arms_b if x not in arms_a],\n',
        '        "added": [],\n',
        ("tests/test_runs.py",),
    ),
    M(
        "calibrate-plain-csv-only",
        "--calibrate cannot read Kaggle's .csv.zip",
        "calibration.py",
        '    for suffix in ("", ".zip", ".gz"):\n',
        '    for suffix in ("",):\n',
        ("tests/test_sample_generator.py",),
    ),
    M(
        "benchmark-drops-options",
        "benchmark.py two_tower: options for two_tower.py are refused, not passed on",
        "benchmark.py",
        "    args, extra = parser.parse_known_args(argv)\n",
        "    args, extra = parser.parse_args(argv), []\n",
        ("tests/test_benchmark.py",),
    ),
    # --- experiment 3's controls
    M(
        "repeat-from-cache",
        "a pointwise repeat (noise floor) is read from the cache, not asked again",
        "llm/request.py",
        '        ("repeat", 0),\n',
        "",
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "evals-repeat-overwrites",
        "reranker_evals: a repeat answer replaces the first answer to the same prompt",
        "evals/reranker_evals.py",
        '                (r["shuffle"], r.get("repeat", 0))\n',
        '                (r["shuffle"])\n',
        ("tests/test_reranker_evals.py",),
    ),
    # --- experiments 1 and 2: placebos, the item sample, the size guard, the history arm
    M(
        "placebo-filler-length",
        "exp1's filler placebo padded to the template's length, not the description's",
        "llm_item_enrichment.py",
        '        "placebo filler": {i: filler(n_words(d)) for i, d in desc.items()},\n',
        '        "placebo filler": {i: filler(n_words(template[i])) for i in desc},\n',
        ("tests/test_llm_item_enrichment.py",),
    ),
    M(
        "placebo-user-vectors",
        "exp1's placebo arms build user vectors from the template, not from their own text",
        "llm_item_enrichment.py",
        "purchase_vectors(t0.feats, t0.users, text.emb[s])",
        'purchase_vectors(t0.feats, t0.users, text.emb["template" if s in PLACEBOS else s])',
        ("tests/test_llm_item_enrichment.py",),
    ),
    M(
        "described-top-n",
        "exp1 describes the N most bought items, not a draw across popularity",
        "llm_item_enrichment.py",
        "    return experiment.sample_items_by_popularity(order, n, C.RANDOM_SEED, STRATA)\n",
        "    return np.sort(order[: n or None])\n",
        ("tests/test_llm_item_enrichment.py",),
    ),
    M(
        "guard-users-only",
        "the verdict's size guard counts users only, not described items",
        "experiment.py",
        '                (n_items, "described items", MIN_VERDICT_ITEMS),\n',
        "",
        ("tests/test_llm_item_enrichment.py",),
    ),
    M(
        "guard-items-not-passed",
        "exp1's verdict does not tell the guard how many items were described",
        "llm_item_enrichment.py",
        "n_users=n_users, n_items=n_described)",
        "n_users=n_users)",
        ("tests/test_llm_item_enrichment.py",),
    ),
    M(
        "history-reads-template",
        "exp2's history arm prompts with the template profile instead of the purchase history",
        "llm_user_narration.py",
        "        HISTORY: (PROMPTS[HISTORY], T.user_history(ds, train, users)),\n",
        '        HISTORY: (PROMPTS[HISTORY], [{"top_items": t, "recent_orders": "- none"} '
        "for t in template_texts]),\n",
        ("tests/test_llm_user_narration.py",),
    ),
    # --- the import floors
    M(
        "layering-arrow-up",
        "a shared module imports a script (lazily, inside a function)",
        "experiment.py",
        "        import llm\n\n        self.prompts = tuple(prompts)\n",
        "        import llm\n        import two_tower  # noqa: F401\n\n"
        "        self.prompts = tuple(prompts)\n",
        ("tests/test_layering.py",),
    ),
    M(
        "help-after-torch",
        "two_tower.py answers --help only after importing torch",
        "two_tower.py",
        "options.help_before_imports(parse_args)\n",
        "",
        ("tests/test_layering.py",),
    ),
    # --- nothing silent, nothing lost (issue 26)
    M(
        "empty-numeric-accepted",
        "an empty order_number / add_to_cart_order / reordered value loads",
        "instacart.py",
        "        empty = df[col].isna().to_numpy()\n",
        "        empty = np.zeros(len(df), dtype=bool)\n",
        ("tests/test_validation.py",),
    ),
    M(
        "step-syncs-with-host",
        "the training step reads its loss back to the host every step (.item())",
        "towers.py",
        "                total, n = total + loss.detach(), n + 1",
        "                total, n = total + loss.item(), n + 1",
        ("tests/test_two_tower.py",),
    ),
    M(
        "epochs-0-accepted",
        "--epochs 0 trains nothing and reports the untrained tower",
        "options.py",
        'TOWER_LIMITS = {\n    "epochs": 1,',
        'TOWER_LIMITS = {\n    "epochs": 0,',
        ("tests/test_validation.py",),
    ),
    M(
        "options-after-data",
        "shared options are not range-checked before the data loads",
        "options.py",
        "    check_options(args)\n",
        "",
        ("tests/test_validation.py",),
    ),
    M(
        "tower-pickle-load",
        "a saved tower loads with weights_only=False (a planted pickle runs)",
        "towers.py",
        "torch.load(file, map_location=model.device, weights_only=True)",
        "torch.load(file, map_location=model.device, weights_only=False)",
        ("tests/test_validation.py",),
    ),
    M(
        "faiss-at-0",
        "candidate setting faiss@0 accepted",
        "reranking.py",
        "        if k < 1:\n",
        "        if k < 0:\n",
        ("tests/test_validation.py",),
    ),
    M(
        "no-eval-users",
        "a split with no evaluation user is not an error",
        "splits.py",
        "    if not truth:  # nothing to score",
        "    if False:  # nothing to score",
        ("tests/test_validation.py",),
    ),
    M(
        "model-stamp-mtime-only",
        "a local model changed in place with its mtime restored keeps its identity",
        "llm/local.py",
        "    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]",
        "    return [st.st_size, st.st_mtime_ns]",
        ("tests/test_caches.py",),
    ),
    M(
        "embedding-keys-misordered",
        "the text-embedding cache pairs keys with the wrong vectors",
        "text.py",
        "keys = sorted(index, key=index.__getitem__)",
        "keys = list(index)",
        ("tests/test_caches.py",),
    ),
    M(
        "threads-count-own-work",
        "the local backend counts its own CPU use as other processes'",
        "llm/local.py",
        "(d_total - d_idle - d_own) / d_total * cores",
        "(d_total - d_idle) / d_total * cores",
        ("tests/test_llm_local.py",),
    ),
    M(
        "llm-fatal-traceback",
        "a fatal LLM error (401/403/404) ends a script in a traceback",
        "llm/request.py",
        "class LLMFatal(FatalError):",
        "class LLMFatal(RuntimeError):",
        ("tests/test_llm.py",),
    ),
    # --- experiment 3: verdicts, the conditions' prompts, the noise floor, the evals
    M(
        "competitive-refuted-below-0",
        "exp3's 'competitive' reads refuted for any interval below 0, inside the margin too",
        "llm_reranker.py",
        '    status = experiment.verdict_word(r10["ci95"], word, margin)\n',
        '    status = "refuted" if r10["ci95"][1] < 0 else '
        'experiment.verdict_word(r10["ci95"], word, margin)\n',
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "context-correct-without-random",
        "exp3's positive control calls a context correct without beating the random occasion",
        "llm_reranker.py",
        "        words.append(\n"
        '            experiment.verdict_word(vs_random[VERDICT_METRIC]["ci95"], "beats", '
        "BEATS_MARGIN)\n        )\n",
        "",
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "none-arm-without-recent-orders",
        "exp3's listwise no-context prompt leaves out the recent orders the context arms show",
        "llm_ranking.py",
        "        recent_orders=lists.recent[j],\n        order_context=P.context_line(lists."
        "contexts[condition][j]),\n        candidates=lines,\n",
        '        recent_orders=lists.recent[j] if condition != "none" else "- none",\n'
        "        order_context=P.context_line(lists.contexts[condition][j]),\n"
        "        candidates=lines,\n",
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "none-arm-context-not-given",
        "exp3's pointwise no-context prompt says 'Next order context: not given'",
        "llm_ranking.py",
        "            order_context=P.context_line(lists.contexts[condition][j]),\n"
        "            candidate=",
        '            order_context=P.context_line(lists.contexts[condition][j] or "not given"),\n'
        "            candidate=",
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "repeat-not-sampled",
        "exp3's noise-floor repeat on the local model is greedy again (agrees by construction)",
        "llm_ranking.py",
        "            req, repeat=repeat, temperature=REPEAT_TEMPERATURE, seed=RANDOM_SEED + "
        "repeat\n",
        "            req, repeat=repeat\n",
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "evals-noise-from-cached-repeat",
        "reranker_evals takes a repeat that is the cached first answer as the noise floor",
        "evals/reranker_evals.py",
        '    if repeat.get("key") is None or repeat.get("key") == first.get("key"):\n',
        '    if repeat.get("key") is None:\n',
        ("tests/test_reranker_evals.py",),
    ),
    M(
        "evals-reason-share-of-all",
        "reranker_evals' reason alignment counts the answers without a reason",
        "evals/reranker_evals.py",
        '    out["share_citing_a_true_fact"] = _mean([cites(r, facts[r["user"]]) for r in '
        "given])\n",
        '    out["share_citing_a_true_fact"] = sum(cites(r, facts[r["user"]]) for r in given) / '
        "len(asked)\n",
        ("tests/test_reranker_evals.py",),
    ),
    M(
        "evals-hallucination-under-grammar",
        "reranker_evals measures hallucination on answers the id grammar held (0 by construction)",
        "evals/reranker_evals.py",
        ' and r.get("id_grammar") is False\n',
        "\n",
        ("tests/test_reranker_evals.py",),
    ),
    M(
        "answers-truncated-first",
        "the reranker's answers file is truncated before the run (a crash loses the last one)",
        "llm_reranker.py",
        'fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)',
        "fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path)",
        ("tests/test_llm_reranker.py",),
    ),
    M(
        "evals-any-answers",
        "reranker evals read an answers file of another run",
        "evals/reranker_evals.py",
        "    if diff:\n        raise NoAnswers(",
        "    if False:\n        raise NoAnswers(",
        ("tests/test_reranker_evals.py",),
    ),
    M(
        "evals-newest-results",
        "reranker evals pick one of several runs without being told which",
        "evals/reranker_evals.py",
        "    if len(series) > 1:\n",
        "    if len(series) > 1 and False:\n",
        ("tests/test_reranker_evals.py",),
    ),
    M(
        "overnight-exit-0-on-failure",
        "run_overnight.sh exits 0 when a step failed",
        "run_overnight.sh",
        "    exit 1\nfi\nwrite_run_marker done",
        "    exit 0\nfi\nwrite_run_marker done",
        ("tests/test_run_overnight.py",),
    ),
    M(
        "report-stale-unmarked",
        "the report takes a step of an older run for current",
        "evals/report.py",
        '    if marker.get("run") == run["run"]:\n',
        '    if marker.get("status") == "0":\n',
        ("tests/test_report.py",),
    ),
    M(
        "report-exit-prefix-twice",
        "the report prints 'exit 2: exit 2:'",
        "evals/report.py",
        '    if st.isdigit() and not reason.startswith(f"exit {st}"):\n',
        "    if st.isdigit():\n",
        ("tests/test_report.py",),
    ),
    # --- the option vocabulary and smoke runs (experiment.py, config.py, runs.py, run_overnight.sh)
    M(
        "quick-verdict-a-finding",
        "a --quick smoke run prints a confirmed / refuted verdict",
        "experiment.py",
        '        if getattr(getattr(self, "args", None), "quick", False):\n',
        "        if False:\n",
        ("tests/test_cli.py",),
    ),
    M(
        "progress-floods-log",
        "progress bars redraw at tqdm's pace into a log file",
        "config.py",
        "    if not sys.stderr.isatty():\n",
        "    if False:\n",
        ("tests/test_cli.py",),
    ),
    M(
        "log-level-in-options-hash",
        "--log-level changes a run's options hash (two identical runs look different)",
        "runs.py",
        'NOT_HASHED = ("out", "quiet", "log_level")',
        'NOT_HASHED = ("out", "quiet")',
        ("tests/test_cli.py",),
    ),
    M(
        "resume-keyed-on-commit",
        "run_overnight.sh reruns every step after a commit that changed no code",
        "run_overnight.sh",
        'KEY=$(printf \'%s\\n\' "${CMD[*]}" "$CODE"',
        'KEY=$(printf \'%s\\n\' "${CMD[*]}" "$COMMIT" "$CODE"',
        ("tests/test_run_overnight.py",),
    ),
    # --- Kaggle size (issue 24): the settings that make a full run affordable
    M(
        "tifu-pool-self-neighbour",
        "TIFU-KNN's pooled neighbour search lets a user be its own neighbour",
        "baselines.py",
        "        d[np.nonzero(mine)[0], at[mine]] = np.inf\n",
        "",
        ("tests/test_baselines.py",),
    ),
    M(
        "tifu-pool-index",
        "TIFU-KNN's pooled search returns places in the pool, not user indices",
        "baselines.py",
        "        out[s : s + len(b)] = pool[\n",
        "        out[s : s + len(b)] = np.arange(len(pool))[\n",
        ("tests/test_baselines.py",),
    ),
    M(
        "ranker-cap-ignored",
        "--ranker-train-users does not cap a fold's training users",
        "reranking.py",
        "            tr &= np.isin(cu, fold_sample(cu[tr], train_users, seed, f))\n",
        "            pass\n",
        ("tests/test_rankers.py",),
    ),
    M(
        "epoch-rows-same-sample",
        "--epoch-rows trains every epoch on the same rows",
        "towers.py",
        "fit_idx[rng.permutation(len(fit_idx))][:n_epoch]",
        "fit_idx[:n_epoch][rng.permutation(n_epoch)]",
        ("tests/test_two_tower.py",),
    ),
]


def source_files() -> list[Path]:
    """The working tree's source files (as they are now, edits included), relative paths."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        files = [Path(p) for p in out.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):  # a source copy without .git
        files = [
            p.relative_to(REPO)
            for p in REPO.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(REPO).parts)
        ]
    return [f for f in files if (REPO / f).is_file()]


def snapshot(files: list[Path], dest: Path) -> list[Path]:
    """Copy the files once (others may be editing the tree meanwhile); returns those copied."""
    copied = []
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(REPO / f, dest / f)
        except FileNotFoundError:  # deleted since it was listed
            continue
        copied.append(f)
    return copied


def run_pytest(where: Path, targets: list[str], timeout: int) -> tuple[int, str]:
    env = {
        **os.environ,
        "INSTACART_CACHE_DIR": str(where / "data" / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *targets]
    try:
        p = subprocess.run(
            cmd, cwd=where, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return -1, f"timed out after {timeout}s\n{e.stdout or ''}"


def failing_tests(output: str) -> list[str]:
    """Node ids of failed / errored tests in pytest's short summary (-rfE)."""
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)


def check(m: Mutation, clean: Path, work: Path, timeout: int) -> dict:
    """Apply `m` to a copy of the snapshot `clean`, run its tests there."""
    t0 = time.perf_counter()
    res = {"name": m.name, "what": m.what, "caught": False, "test": "", "note": ""}
    if not (clean / m.file).is_file():
        res["note"] = f"did not apply: {m.file} not found"
        return res
    text = (clean / m.file).read_text()
    n = text.count(m.old)
    if n != 1:
        res["note"] = (
            "did not apply: old snippet not found in " + m.file
            if n == 0
            else f"did not apply: old snippet found {n} times in {m.file}"
        )
        return res
    d = work / m.name
    shutil.copytree(clean, d)
    (d / m.file).write_text(text.replace(m.old, m.new))
    if m.file.endswith(".py"):
        try:
            compile((d / m.file).read_text(), m.file, "exec")
        except SyntaxError as e:
            res["note"] = f"invalid mutation (does not compile): {e}"
            return res
    code, out = run_pytest(d, list(m.tests), timeout)
    failed = failing_tests(out)
    if code == 0:
        res["note"] = "survived: every test passed"
    elif code == -1:
        res["note"] = "timed out"
    elif not failed:
        res["note"] = f"pytest exit {code} without a failing test: " + out.strip()[-200:]
    else:
        # the same test must pass without the mutation, or it proves nothing
        code2, _ = run_pytest(clean, [failed[0]], timeout)
        if code2 == 0:
            res["caught"], res["test"] = True, failed[0]
        else:
            res["test"] = failed[0]
            res["note"] = "that test also fails without the mutation (flaky or broken)"
    shutil.rmtree(d, ignore_errors=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    p.add_argument("--jobs", type=int, default=2, help="mutations run in parallel (default 2)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per pytest run")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = p.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        print(
            f"error: unknown mutation(s) {', '.join(sorted(unknown))} (see --list)", file=sys.stderr
        )
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:26s} {m.file:22s} {m.what}  [{', '.join(m.tests)}]")
        return 0
    files = source_files()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation_check_") as tmp:
        work = Path(tmp)
        clean = work / "_clean"
        files = snapshot(files, clean)
        print(
            f"{len(chosen)} mutations, {len(files)} source files copied per run, "
            f"{args.jobs} at a time ...",
            flush=True,
        )
        results = {}
        with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futs = {pool.submit(check, m, clean, work, args.timeout): m for m in chosen}
            for fut in cf.as_completed(futs):
                r = fut.result()
                results[r["name"]] = r
                print(
                    f"  {r['name']}: {'caught' if r['caught'] else 'NOT CAUGHT'}"
                    f" ({r.get('seconds', 0)}s)",
                    flush=True,
                )
    rows = [results[m.name] for m in chosen]
    w = max(len(r["what"]) for r in rows)
    print(f"\n{'mutation':{w}s} | caught? | failing test")
    print(f"{'-' * w}-|---------|-------------")
    for r in rows:
        print(
            f"{r['what']:{w}s} | {'yes' if r['caught'] else 'NO':7s} | "
            f"{r['test']}{'  (' + r['note'] + ')' if r['note'] else ''}"
        )
    missed = [r["name"] for r in rows if not r["caught"]]
    print(
        f"\n{len(rows) - len(missed)}/{len(rows)} caught in {time.perf_counter() - t0:.0f}s"
        + (f"; not caught: {', '.join(missed)}" if missed else "")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
