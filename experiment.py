"""Experiment scaffolding: what every script shares (../shared/EXPERIMENTS.md).

A script builds an Experiment, adds arms (ranked lists over evaluation users, one per
training seed for trained arms), prints the table and paired gains, states a verdict and
writes one results JSON. Here too: the options every script shares, the one-line error
guard around a script's main, provenance, results JSON and plain-text tables. Nothing here
knows about a particular experiment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import config
import runs
from baselines import baseline_rankings
from config import (
    RANDOM_SEED,
    REPO,
    ConfigError,
    DataError,
    main_guard,  # noqa: F401 (scripts end with experiment.main_guard(main))
    write_atomic,
)
from features import Features, build_features
from instacart import Dataset, load_from_args
from metrics import K_MAX, evaluate, paired_gain, per_user_metrics
from options import TowerConfig, pick_device
from runs import SAME_DATA_KEYS, load_results  # noqa: F401 (re-exported: experiment.load_results)
from splits import Split, split_interactions
from towers import TwoTower, train_two_tower

# ----------------------------------------------------------------------------
# provenance, results JSON, plain-text tables (the one-line error guard: config.main_guard)
# The libraries a results JSON has always named: each stays a key of provenance["versions"],
# None when not installed. "xgboost" is the version of the `xgboost` module whichever
# distribution installs it (xgboost, or xgboost-cpu, the CPU-only build this project uses).
CORE_LIBRARIES = (
    "numpy",
    "pandas",
    "pyarrow",
    "torch",
    "faiss-cpu",
    "lightgbm",
    "xgboost",
    "sentence-transformers",
    "anthropic",
)
MODULE_DISTRIBUTIONS = {"xgboost": ("xgboost", "xgboost-cpu")}


def installed_versions() -> dict:
    """Every installed distribution's version, name -> version, sorted by name. Names are
    normalised as pip does (lower case, runs of "-", "_", "." as one "-"); a distribution
    found twice on sys.path counts where Python would import it from (the first). Plus
    CORE_LIBRARIES, None when absent."""
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    for lib in CORE_LIBRARIES:
        if lib not in found:
            alts = MODULE_DISTRIBUTIONS.get(lib, ())
            found[lib] = next((found[a] for a in alts if a in found), None)
    return dict(sorted(found.items()))


def provenance() -> dict:
    """What produced a result: git commit (+ dirty flag), command line, and the version of every
    installed distribution (installed_versions)."""

    def git(*a):
        try:
            return subprocess.run(
                ["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = installed_versions()
    return {
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def write_results(path: str | Path, payload: dict) -> Path:
    """Write a results JSON (with provenance) atomically; NaN becomes null."""
    return write_atomic(path, results_text(payload))


def results_text(payload: dict) -> str:
    """A results JSON's text: `payload` with provenance; NaN becomes null, numpy numbers
    plain numbers."""

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return None if not np.isfinite(x) else float(x)
        if isinstance(x, np.integer):
            return int(x)
        return x

    return json.dumps(clean({**payload, "provenance": provenance()}), indent=1)


def format_table(
    rows: dict,
    columns: list,
    fmt=lambda v: f"{v:.3f}",
    first: str = "model",
    headers: dict | None = None,
) -> str:
    """A plain-text table: rows = {name: {column: value or (mean, std) or str}}; `first`
    heads the name column, `headers` may rename columns. Floats go through `fmt`,
    (mean, std) prints as mean±std, whole numbers as they are, missing values as '-'."""

    def cell(v):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        if isinstance(v, tuple):
            return f"{fmt(v[0])}±{v[1]:.3f}" if v[1] is not None else fmt(v[0])
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return str(v)
        return v if isinstance(v, str) else fmt(v)

    head = [first, *[(headers or {}).get(c, c) for c in columns]]
    body = [[name, *[cell(r.get(c)) for c in columns]] for name, r in rows.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda xs: "  ".join(
        str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(xs, widths))
    )
    return "\n".join([line(head), line(["-" * w for w in widths]), *[line(r) for r in body]])


# A script builds an Experiment, adds arms (ranked lists over evaluation users, one per
# training seed for trained arms), prints the table and paired gains, states a verdict
# and writes one results JSON. Nothing here knows about a particular experiment.
TABLE_COLUMNS = ["R@5", "R@10", "R@20", "NDCG@10", "R@20 repeat", "R@20 explore", "cand. recall"]
REFERENCE_BASELINE = "top-frequency + popular"  # the strong simple baseline of paired gains
VERDICTS = ("confirmed", "refuted", "inconclusive")
MIN_VERDICT_USERS = 200  # LLM arms: EXPERIMENTS.md's minimum evaluation users for a finding
MIN_VERDICT_ITEMS = 500  # item text: EXPERIMENTS.md's minimum described items for a finding


def summarize(runs: list) -> dict:
    """Mean and std over seeds of each metric in a list of evaluate() results."""
    out = {}
    for part in ("all", "repeat", "explore"):
        keys = [k for k in runs[0][part] if k != "n_users"]
        out[part] = {
            k: {
                "mean": float(np.mean([r[part][k] for r in runs])),
                "std": float(np.std([r[part][k] for r in runs])) if len(runs) > 1 else None,
            }
            for k in keys
        }
        out[part]["n_users"] = runs[0][part]["n_users"]
    out["ci95_first_seed"] = runs[0]["ci95"]
    out["per_seed"] = [
        {k: r["all"][k] for k in ("recall@5", "recall@10", "recall@20", "ndcg@10")} for r in runs
    ]
    return out


def table_row(s: dict, cand_recall=None) -> dict:
    """One row of the standard table from a summarize() result."""
    ms = lambda part, k: (s[part][k]["mean"], s[part][k]["std"])
    return {
        "R@5": ms("all", "recall@5"),
        "R@10": ms("all", "recall@10"),
        "R@20": ms("all", "recall@20"),
        "NDCG@10": ms("all", "ndcg@10"),
        "R@20 repeat": ms("repeat", "recall@20"),
        "R@20 explore": ms("explore", "recall@20"),
        "cand. recall": cand_recall,
    }


def sample_users(users: np.ndarray, n: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """A seeded sample of `n` of `users` (all of them when n is 0 or >= their number),
    sorted. It is a prefix of one seeded permutation, so samples are nested: a larger run
    scores every user of a smaller one and reuses its cached LLM answers."""
    users = np.asarray(users)
    n = len(users) if n == 0 else min(n, len(users))
    return np.sort(np.random.default_rng(seed).permutation(users)[:n])


def sample_items_by_popularity(
    popularity_order: np.ndarray, n: int, seed: int = RANDOM_SEED, strata: int = 10
) -> np.ndarray:
    """A seeded sample of `n` items drawn across popularity, sorted: the items, most bought
    first (`popularity_order`), are cut into `strata` bands of equal size; each band is
    shuffled with the seed and the bands are dealt out in turn (the first of every band,
    then the second, ...), so every band gives n / strata items (all items when n is 0 or
    >= their number). Samples are nested: a larger one holds every item of a smaller one
    and reuses its cached LLM answers. Never the n most bought."""
    order = np.asarray(popularity_order)
    n = len(order) if n == 0 else min(n, len(order))
    rng = np.random.default_rng(seed)
    bands = [b[rng.permutation(len(b))] for b in np.array_split(order, strata) if len(b)]
    depth = max(len(b) for b in bands)
    dealt = [b[r] for r in range(depth) for b in bands if r < len(b)]
    return np.sort(np.asarray(dealt[:n], dtype=np.int64))


PIPELINE_SCRIPT = "two_tower"  # whose best pipeline row every experiment table carries


def pipeline_reference(
    data: dict, split_mode: str, split_seed: int, results_dir: Path | None = None
) -> tuple[str, dict, Path] | None:
    """The best pipeline row of two_tower.py's newest run on the same data and split (the
    results index: runs.newest_run), highest mean NDCG@10 among its two-tower arms: (row
    label, its summarize() dict, the file), or None when two_tower.py has not been run on
    this data and split. A reference row only: no paired gain is computed against it."""
    path = runs.newest_run(PIPELINE_SCRIPT, data, split_mode, split_seed, results_dir)
    try:
        r = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
    if not isinstance(r, dict):
        return None
    arms = {a: m for a, m in r.get("metrics", {}).items() if a.startswith("two-tower")}
    if not arms:
        return None
    best = max(arms, key=lambda a: arms[a]["all"]["ndcg@10"]["mean"])
    return f"{PIPELINE_SCRIPT}.py best: {best}", arms[best], path


# ----------------------------------------------------------------------------
# verdicts: an interval and a margin -> the word (../shared/EXPERIMENTS.md)
CLAIMS = ("beats", "competitive", "hurts")


def verdict_word(ci, claim: str = "beats", margin: float = 0.0, seeds=None) -> str:
    """confirmed | refuted | inconclusive for a paired 95% interval `ci` = (lo, hi) of a
    gain (arm - reference), by the claim it tests:
      beats        confirmed when lo > 0; refuted when hi < margin (no gain of `margin`);
      competitive  no worse than the reference by more than `margin`: confirmed when
                   lo > -margin, refuted when hi < -margin;
      hurts        a drop: confirmed when hi < 0, refuted when lo > -margin.
    With `seeds` (the gain on each training seed), 'beats' also needs every seed above 0
    to confirm and every seed below `margin` to refute."""
    lo, hi = ci
    if claim == "beats":
        up = lo > 0 and (seeds is None or min(seeds) > 0)
        down = hi < margin and (seeds is None or max(seeds) < margin)
        return "confirmed" if up else "refuted" if down else "inconclusive"
    if claim == "competitive":
        return "confirmed" if lo > -margin else "refuted" if hi < -margin else "inconclusive"
    if claim == "hurts":
        return "confirmed" if hi < 0 else "refuted" if lo > -margin else "inconclusive"
    raise ConfigError(f"unknown claim '{claim}' ({', '.join(CLAIMS)})")


def verdict_all(words) -> str:
    """The word for a claim that needs each of its parts (each part's verdict_word):
    confirmed when every part is, refuted when any part is, else inconclusive."""
    words = list(words)
    if words and all(w == "confirmed" for w in words):
        return "confirmed"
    return "refuted" if "refuted" in words else "inconclusive"


def format_interval(g: dict, digits: int = 3) -> str:
    """'+0.012 [+0.003, +0.021]' from {"mean", "ci95": [lo, hi]}."""
    lo, hi = g["ci95"]
    return f"{g['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


# ----------------------------------------------------------------------------
# the LLM of an experiment
class LLMUse:
    """An experiment's LLM lifecycle: the client that --llm resolves to (or why there is
    none, printed), the prompt templates its arms send, the usage report and prompt versions
    in the results JSON, and closing the client. llm is imported here, lazily, so that
    two_tower.py runs without the anthropic SDK."""

    def __init__(self, args, prompts: tuple = (), **client_kw):
        import llm

        self.prompts = tuple(prompts)
        self.client, self.note = llm.client_from_args(args, **client_kw)
        print(self.note if self.client else f"LLM arms skipped: {self.note}")

    def results(self) -> dict:
        """What the results JSON records: usage (or the reason for skipping), prompt versions."""
        from prompts import versions_used

        if self.client is None:
            return {"llm": {"skipped": self.note}, "llm_skipped": self.note}
        return {"llm": self.client.usage_report(), "prompt_versions": versions_used(*self.prompts)}

    def close(self):
        if self.client is not None:
            self.client.close()


class Experiment:
    """The protocol every script shares: data -> the one split -> features (training rows
    only) -> reference baselines -> arms -> table, paired gains, verdict, results JSON.

        exp = C.Experiment("exp5_dual_head", args)          # loads, splits, builds features
        exp.add_baselines()
        for seed in exp.seeds: exp.add("arm", ranked, seed=seed)
        exp.print_table(); exp.print_gains("arm", "two-tower")
        exp.verdict("refuted", "...numbers..."); exp.write({...})

    An arm's lists are rows over `users` (default: every evaluation user); an LLM arm
    on a subset passes its own `users`, and paired gains run over the users both arms
    share. `split` may be another Split over the same rows (cold start, restrict_truth).
    """

    def __init__(
        self,
        name: str,
        args,
        ds: Dataset | None = None,
        question: str = "",
        original_finding: str = "",
    ):
        self.name, self.args = name, args
        # what the report shows above this experiment's table (EXPERIMENTS.md)
        self.question, self.original_finding = question, original_finding
        self.t_start = time.perf_counter()
        self.t_wall = time.time()  # the run's start, in its results file name
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        self.device = pick_device(getattr(args, "device", "auto"))
        self.ds = ds or load_from_args(args)
        if self.ds.n_users < 2:  # (--users 2 or more; a data folder may still hold one user)
            raise DataError(
                f"{self.ds.source}: {self.ds.n_users} user in the sample; an experiment needs "
                "at least 2 (TIFU-KNN's neighbours, the re-rankers' folds over users)"
            )
        # the split raises a DataError when it leaves no evaluation user
        t0 = time.perf_counter()
        self.split = split_interactions(self.ds.interactions, args.split)
        self.feats = build_features(self.ds, self.split.train)
        t_split = round(time.perf_counter() - t0, 2)
        self.users = self.split.eval_users()
        self.seeds = [RANDOM_SEED + i for i in range(getattr(args, "seeds", 1))]
        self.runs: dict[str, list] = {}  # arm -> evaluate() result per seed
        self.lists: dict[str, tuple] = {}  # arm -> (users, ranked, split) of the first seed
        self.cand_recall: dict[str, float] = {}
        self.labels: dict[str, str] = {}  # arm -> who produced it (an LLM's name)
        self.timings: dict[str, float] = {"split_features_s": t_split}
        self.verdict_line = None
        self.llm: LLMUse | None = None  # set by start_llm
        # two_tower.py's best pipeline row on this data and split, when it has been run
        ref = (
            None
            if name == PIPELINE_SCRIPT
            else pipeline_reference(self.ds.summary(), self.split.mode, self.split.seed)
        )
        self.references = {} if ref is None else {ref[0]: ref[1]}
        self.reference_note = (
            f"{ref[0]}: from {ref[2].name} (reference row; no paired gains)"
            if ref
            else f"no {PIPELINE_SCRIPT}.py results on this data and split: run it first for "
            "the best pipeline reference row"
        )
        print(
            f"{name}: {self.ds.source} | split {self.split.mode} (split seed {self.split.seed}): "
            f"{len(self.split.train):,} train rows, {len(self.split.test):,} held-out rows, "
            f"{len(self.users):,} evaluation users | device {self.device} | "
            f"training seeds {self.seeds}"
        )

    # arms
    def add(
        self,
        arm: str,
        ranked: np.ndarray,
        users: np.ndarray | None = None,
        split: Split | None = None,
        cand_recall: float | None = None,
        label: str | None = None,
        feats: Features | None = None,
    ) -> dict:
        """Score one list set (one seed) of an arm; returns its evaluate() result. With
        another `split` (cold start), pass its `feats` so repeat / explore follow its rows."""
        users = self.users if users is None else np.asarray(users)
        split = split or self.split
        res = evaluate(ranked[:, :K_MAX], users, split, feats or self.feats)
        self.runs.setdefault(arm, []).append(res)
        self.lists.setdefault(arm, (users, ranked[:, :K_MAX], split))
        if cand_recall is not None:
            self.cand_recall[arm] = cand_recall
        if label:
            self.labels[arm] = label
        return res

    def add_baselines(
        self, users: np.ndarray | None = None, split: Split | None = None, suffix: str = ""
    ):
        """random, popularity, top-frequency (+ popular) and TIFU-KNN (unless --no-tifu)."""
        t0 = time.perf_counter()
        users = self.users if users is None else users
        split = split or self.split
        feats = self.feats if split is self.split else build_features(self.ds, split.train)
        train = None if getattr(self.args, "no_tifu", False) else split.train
        pool = getattr(self.args, "tifu_pool", 0)
        for name, ranked in baseline_rankings(
            feats, users, self.ds.n_items, train=train, tifu_pool=pool
        ).items():
            self.add(name + suffix, ranked, users, split, feats=feats)
        self.timings["baselines_s"] = self.timings.get("baselines_s", 0) + time.perf_counter() - t0

    def start_llm(self, *prompts: str, **client_kw):
        """The LLM client of this experiment's LLM arms (None when --llm resolves to none,
        the reason printed); `prompts` names the templates they send. write() records the
        usage and prompt versions and closes the client."""
        self.llm = LLMUse(self.args, prompts, **client_kw)
        return self.llm.client

    def train(self, cfg: TowerConfig, **kw) -> TwoTower:
        """train_two_tower on this experiment's data (kw: model_cls, variant, train, ...)."""
        t0 = time.perf_counter()
        model = train_two_tower(
            self.ds,
            self.split,
            kw.pop("feats", self.feats),
            cfg,
            self.device,
            use_saved=not getattr(self.args, "retrain", False),
            progress=not getattr(self.args, "quiet", False),
            **kw,
        )
        self.timings.setdefault("train_s", []).append(round(time.perf_counter() - t0, 2))
        return model

    # reporting
    def summary(self) -> dict:
        return {arm: summarize(r) for arm, r in self.runs.items()}

    def table(self, arms=None, columns=TABLE_COLUMNS) -> str:
        rows = {}
        summary = self.summary()
        if arms is None:  # the full table also carries two_tower.py's best pipeline row
            summary = {**self.references, **summary}
        for arm, s in summary.items():
            if arms is None or arm in arms:
                name = arm + (f" [{self.labels[arm]}]" if arm in self.labels else "")
                rows[name] = {
                    **table_row(s, self.cand_recall.get(arm)),
                    "users": s["all"]["n_users"],
                }
        return format_table(rows, [*columns, "users"])

    def print_table(self, arms=None, title: str | None = None, columns=TABLE_COLUMNS):
        print()
        if title:
            print(title)
        print(self.table(arms, columns))
        if arms is None:
            print(f"({self.reference_note})")
        n = len(self.seeds)
        print(
            f"(mean±std over {n} training seed(s) for trained arms; repeat = held-out items "
            "the user bought in training rows, explore = the rest; cand. recall = share of "
            "held-out items among an arm's candidates, the ceiling of a re-ranker)"
        )

    def gain(self, arm: str, reference: str, metrics=("recall@10", "ndcg@10")) -> dict:
        """Paired bootstrap gain arm - reference (first seed) over the users both share."""
        ua, ra, split = self.lists[arm]
        ub, rb, _ = self.lists[reference]
        common_users, ia, ib = np.intersect1d(ua, ub, return_indices=True)
        g = paired_gain(ra[ia], rb[ib], common_users, split, metrics)
        g["n_users"] = int(sum(len(split.truth.get(int(u), ())) > 0 for u in common_users))
        return g

    def print_gains(self, arms, reference: str, metrics=("recall@10", "ndcg@10")) -> dict:
        print(f"gain over '{reference}' (first seed; 95% paired bootstrap over users):")
        out = {}
        for arm in arms:
            out[arm] = g = self.gain(arm, reference, metrics)
            print(
                f"  {arm:<44}"
                + "  ".join(
                    f"{m} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
                    for m, v in g.items()
                    if m != "n_users"
                )
                + f"  ({g['n_users']} users)"
            )
        return out

    def verdict(
        self, status: str, sentence: str, n_users: int | None = None, n_items: int | None = None
    ) -> str:
        """The closing line every experiment prints (EXPERIMENTS.md). An LLM arm's verdict
        passes the units the LLM worked on: `n_users` (below MIN_VERDICT_USERS) and, for item
        text, `n_items` described items (below MIN_VERDICT_ITEMS); too few of either turns a
        confirmed / refuted into inconclusive (not a finding), every shortfall named in the
        line; so is every verdict of a smoke run (--quick), which says "smoke run" first."""
        if status not in VERDICTS:
            raise ConfigError(f"verdict must be one of {', '.join(VERDICTS)}")
        short = [
            f"{n:,} {unit} < {low}"
            for n, unit, low in (
                (n_users, "users", MIN_VERDICT_USERS),
                (n_items, "described items", MIN_VERDICT_ITEMS),
            )
            if n is not None and n < low
        ]
        if getattr(getattr(self, "args", None), "quick", False):
            sentence = f"smoke run (--quick), not a finding (would read {status}): {sentence}"
            status = "inconclusive"
        elif short and status != "inconclusive":
            sentence += f" [would read '{status}', but {' and '.join(short)}: not a finding]"
            status = "inconclusive"
        self.verdict_line = f"verdict: {status} - {sentence}"
        print(self.verdict_line)
        return self.verdict_line

    def options(self) -> dict:
        return {k: v for k, v in vars(self.args).items() if not k.startswith("_")}

    def run_name(self) -> str:
        """<script>_<data>_<split>_<UTC start time>_<options hash> (runs.run_name)."""
        kind = runs.data_kind(self.ds.source)
        return runs.run_name(self.name, kind, self.split.mode, self.t_wall, self.options())

    def results_path(self) -> Path:
        """--out, else results/<run_name()>.json: one file per run (write() adds a -N
        suffix rather than replace a file of another run with the same name)."""
        out = getattr(self.args, "out", None)
        return Path(out) if out else config.RESULTS_DIR / f"{self.run_name()}.json"

    def per_user(self) -> dict:
        """Per arm, first seed: the original ids of the users with a held-out item and
        their runs.PER_USER_METRICS, for pairing this run with another (runs.paired_run_gains)."""
        out = {}
        for arm, (users, ranked, split) in self.lists.items():
            truths = [split.truth.get(int(u), np.empty(0, np.int64)) for u in users]
            per = per_user_metrics(ranked, truths, ks=(10,))
            keep = ~np.isnan(per[runs.PER_USER_METRICS[0]])
            out[arm] = {"users": np.asarray(self.ds.user_ids)[np.asarray(users)[keep]]}
            out[arm].update({m: np.round(per[m][keep], 5) for m in runs.PER_USER_METRICS})
        return out

    def write(self, extra: dict | None = None) -> Path:
        """One results JSON: configuration, data, split, metrics with intervals, labels,
        verdict, timings, the LLM's usage and prompt versions (start_llm), + `extra`: the
        experiment's own tables; the per-user metrics beside it (<name>.users.npz) and one
        row in the results index (runs.py). Never replaces another run's file (an explicit
        --out is replaced). Closes the LLM client: call it last."""
        self.timings["total_s"] = round(time.perf_counter() - self.t_start, 2)
        args = self.options()
        payload = {
            "experiment": self.name,
            "question": self.question,
            "original_finding": self.original_finding,
            "options": args,
            "data": self.ds.summary(),
            "split": {
                "mode": self.split.mode,
                "seed": self.split.seed,
                "train_rows": len(self.split.train),
                "test_rows": len(self.split.test),
                "eval_users": len(self.users),
            },
            "seeds": self.seeds,
            "device": self.device,
            "metrics": self.summary(),
            "references": self.references,
            "candidate_recall": self.cand_recall,
            "produced_by": self.labels,
            "verdict": self.verdict_line,
            "timings": self.timings,
            **(self.llm.results() if self.llm else {}),
            **(extra or {}),
        }

        written = {}

        def text(per_user_file: str) -> str:  # the JSON names its per-user metrics file
            written["text"] = results_text({**payload, "per_user_file": per_user_file})
            return written["text"]

        explicit = bool(getattr(self.args, "out", None))
        path = runs.write_run(self.results_path(), text, self.per_user(), replace=explicit)
        runs.append_index(path.parent, runs.index_row(json.loads(written["text"]), path))
        print(f"results: {path}")
        if self.llm:
            self.llm.close()
        return path
