"""Benchmarks of the project's heavy steps, one subcommand each.

    uv run benchmark.py load --kaggle-size             # full-size generated data (~206k users)
    uv run benchmark.py load --data-dir DIR            # any Kaggle-format folder
    uv run benchmark.py load --kaggle-size --phases uncached,cached,split,features
    uv run benchmark.py two_tower                       # the default two_tower.py run, by stage
    uv run benchmark.py two_tower --data-dir DIR --items 5000   # any two_tower.py options
    uv run benchmark.py llm                             # local model tokens/s at 1,2,4,8 requests
    uv run benchmark.py scale                           # the pipeline at 12.5k..100k users
    uv run benchmark.py scale --users 1500,3000,6000 --items 5000 --epochs 1
    uv run benchmark.py step                            # two-tower step time at Kaggle's size
    uv run benchmark.py full                            # the whole pipeline at Kaggle's size

`load` times load_dataset(full=True) with an empty cache (CSV read + checks + sampling +
cache write) and again from the cache (Arrow IPC files); optionally the split and the features on
the loaded rows. Each phase runs in its own child process, so its peak RSS is its own.
Writes results/benchmark_load.json. `scale` runs two_tower.py (every user and item, one seed,
LightGBM on faiss@50+bought, the full-size settings KAGGLE_SIZE_SETTINGS) on generated data of
growing user counts and prints seconds per stage, peak RSS and each stage's growth exponent
(results/benchmark_scale.json); `full` runs it once at Kaggle's size, `step` times the
two-tower's training step there by batch size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import config

FULL_DIR = config.REPO / "data" / "full"  # where --kaggle-size writes the full-size data
LOAD_PHASES = ("uncached", "cached", "split", "features")
LOAD_TARGETS = {"uncached": 30.0, "cached": 3.0}  # seconds, from the foundation issue


# ----------------------------------------------------------------------------
# shared helpers
def peak_rss_gib() -> float:
    """This process's peak resident set size so far, in GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return kb / (2**30 if sys.platform == "darwin" else 2**20)


class Clock:
    """Wall and CPU seconds since creation (CPU time shows contention: wall >> cpu)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 2),
            "cpu_s": round(time.process_time() - self.cpu, 2),
        }


def run_child(func: str, spec: dict) -> dict:
    """Run benchmark.<func>(spec) in a fresh interpreter; return the dict it prints last."""
    code = f"import benchmark, json, sys; benchmark.{func}(json.loads(sys.argv[1]))"
    p = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        cwd=config.REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if p.returncode != 0:  # the child already printed its one-line error to stderr
        raise SystemExit(p.returncode)
    return json.loads(p.stdout.strip().splitlines()[-1])


def fresh_cache_dir() -> Path:
    """A new, empty cache folder beside the project's cache (the same disk) for one timed
    run, so nothing it measures is read from an earlier run's cache."""
    config.CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no data/
    return Path(tempfile.mkdtemp(prefix="benchmark-", dir=config.CACHE_DIR.parent))


def run_timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run `cmd` in the repository with `env`; (wall seconds, the child's own peak RSS in
    GiB, from os.wait4: not the largest of every child so far, as RUSAGE_CHILDREN would
    give). A failed child ends the benchmark with its exit code (its error already shown)."""
    clock = Clock()
    p = subprocess.Popen(cmd, cwd=config.REPO, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(p.returncode)
    return clock.read()["wall_s"], usage.ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)


def timed_two_tower(label: str, options: list[str], extra: list[str]):
    """`two_tower.py` with `options`, then --quiet --out, then `extra` (the user's, last so
    they win), in a child with a fresh cache (nothing reused): (its results JSON, the
    command, wall seconds, the child's peak RSS in GiB)."""
    cache_dir = fresh_cache_dir()
    out = cache_dir / "two_tower.json"
    cmd = [sys.executable, "two_tower.py", *options, "--quiet", "--out", str(out), *extra]
    print(f"{label}: {' '.join(cmd[1:])} (fresh cache)", flush=True)
    try:
        wall, peak = run_timed(cmd, {**os.environ, config.CACHE_ENV: str(cache_dir)})
        return json.loads(out.read_text()), cmd, wall, peak
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def run_stages(t: dict, data: dict) -> dict:
    """Seconds per stage of a two_tower.py run, from its results JSON's timings: load (the
    data's own load_seconds), split + features, the baselines (TIFU-KNN included) with their
    evaluation, two-tower training, FAISS retrieval, re-ranking, and the rest (evaluation
    of the other arms, tables, the JSON)."""
    stages = {
        "load": data.get("load_seconds", 0.0),
        "split + features": t.get("split_features_s", 0.0),
        "baselines (incl. TIFU-KNN)": t["baselines_s"],
        "two-tower training": sum(t["train_s"]),
        "FAISS retrieval": sum(t["retrieve_s"]),
        "re-ranking": sum(t.get("rank_s", [])),
    }
    stages["rest"] = max(t["total_s"] - sum(stages.values()), 0.0)
    return {k: round(v, 2) for k, v in stages.items()}


def print_table(rows: list[dict], cols: list[tuple[str, str]]):
    """rows of dicts -> experiment.format_table; cols = (key, header), the first names the row."""
    from experiment import format_table  # lazy: torch, not needed for --help

    (key0, head0), rest = cols[0], cols[1:]
    print(
        format_table(
            {r[key0]: r for r in rows},
            [k for k, _ in rest],
            fmt=lambda v: f"{v:.2f}",
            first=head0,
            headers=dict(rest),
        )
    )


def environment() -> dict:
    import numpy
    import pandas
    import pyarrow

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
    }


# ----------------------------------------------------------------------------
# load
def generated_data(folder: Path, n_users: int, n_products: int) -> Path:
    """Generated Instacart-format data of that size in `folder`, generated once (and again
    when the generator's version changes): a generator.json stamp records what is there."""
    import sample_generator as gen

    want = {
        "version": gen.GENERATOR_VERSION,
        "n_users": n_users,
        "n_products": n_products,
        "seed": config.RANDOM_SEED,
    }
    stamp = folder / "generator.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return folder
    print(
        f"generating {n_users:,} users x {n_products:,} products into "
        f"{folder.relative_to(config.REPO) if folder.is_relative_to(config.REPO) else folder}",
        flush=True,
    )
    t0 = time.perf_counter()
    gen.generate(folder, n_users, n_products, seed=config.RANDOM_SEED, progress=False)
    print(f"generated in {time.perf_counter() - t0:.0f}s", flush=True)
    return folder


def ensure_full_sample() -> Path:
    """The Kaggle-size generated data in data/full/ (~206k users; minutes, once)."""
    import sample_generator as gen

    return generated_data(FULL_DIR, gen.FULL_USERS, gen.FULL_PRODUCTS)


def load_phase(spec: dict):
    """Child process: one phase of `load`; prints its measurements as a JSON line."""

    def phase():
        # the data layer only (no torch), so each phase's peak RSS is the data's own
        from features import build_features
        from instacart import load_dataset
        from splits import split_interactions

        config.CACHE_DIR = Path(spec["cache_dir"])
        name = spec["phase"]
        load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        clock = Clock()
        ds = load_dataset(spec["data_dir"], full=True, verbose=False)
        out = {
            "phase": name,
            **clock.read(),
            "rows": len(ds.interactions),
            "users": ds.n_users,
            "items": ds.n_items,
        }
        if name in ("split", "features"):
            clock = Clock()
            split = split_interactions(ds.interactions, "interaction")
            out.update(clock.read(), rows=len(split.train))
            if name == "split":
                clock = Clock()
                temporal = split_interactions(ds.interactions, "temporal")
                out["temporal_wall_s"] = clock.read()["wall_s"]
                out["temporal_test_rows"] = len(temporal.test)
            else:
                clock = Clock()
                feats = build_features(ds, split.train)
                out.update(clock.read(), rows=len(feats.pairs))
        out["peak_rss_gib"] = round(peak_rss_gib(), 2)
        out["load_avg_1min"] = load_avg
        print(json.dumps(out))

    config.main_guard(phase)


def cmd_load(args) -> dict:
    if args.kaggle_size and args.data_dir:
        raise config.DataError("give --data-dir or --kaggle-size, not both")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    bad = [p for p in phases if p not in LOAD_PHASES]
    if bad or not phases:
        raise config.DataError(
            f"unknown phase(s) {', '.join(bad) or '(none)'} (choose from {', '.join(LOAD_PHASES)})"
        )
    from instacart import resolve_data_dir

    data_dir, source = resolve_data_dir(ensure_full_sample() if args.kaggle_size else args.data_dir)
    print(f"load benchmark: {source}; full=True; phases {', '.join(phases)}", flush=True)
    # A private cache dir, empty at the start: the first phase cannot hit an old entry.
    cache_dir = fresh_cache_dir()
    rows = []
    try:
        for name in ["uncached", *[p for p in phases if p != "uncached"]]:  # uncached fills it
            r = run_child(
                "load_phase",
                {"phase": name, "data_dir": str(data_dir), "cache_dir": str(cache_dir)},
            )
            if name in LOAD_TARGETS:
                r["target_s"] = LOAD_TARGETS[name]
                r["ok"] = "OK" if r["wall_s"] <= LOAD_TARGETS[name] else "MISS"
            if name in phases:
                rows.append(r)
                print(
                    f"  {name}: {r['wall_s']:.2f}s ({r['cpu_s']:.2f}s CPU), "
                    f"peak RSS {r['peak_rss_gib']:.2f} GiB",
                    flush=True,
                )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print()
    print_table(
        rows,
        [
            ("phase", "phase"),
            ("wall_s", "wall s"),
            ("cpu_s", "cpu s"),
            ("peak_rss_gib", "peak RSS GiB"),
            ("rows", "rows"),
            ("target_s", "target s"),
            ("ok", ""),
            ("load_avg_1min", "load avg"),
        ],
    )
    return {
        "benchmark": "load",
        "source": source,
        "data_dir": str(data_dir),
        "kaggle_size": bool(args.kaggle_size),
        "phases": rows,
        "notes": {
            "cpu_s": "CPU seconds of the phase's process (all threads); "
            "load_avg_1min: the machine's load when the phase began",
            "uncached": "load_dataset(full=True) with an empty cache: CSV read, "
            "checks, sampling and the cache write",
            "cached": "load_dataset(full=True) from the cache",
            "split": "split_interactions(interaction) on the cached load "
            "(temporal_wall_s: the temporal split); rows = train rows",
            "features": "build_features on the interaction split's train rows; "
            "rows = (user, item) pairs",
        },
        "environment": environment(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ----------------------------------------------------------------------------
# two_tower
def cmd_two_tower(args) -> dict:
    """Time the default `uv run two_tower.py` run end to end in a child process, with a
    fresh cache (data loaded from CSV, towers trained, nothing reused), and break the
    wall time down by stage from the run's own results JSON."""
    return staged_run("two_tower", [], args.script_args, "target: default run <= 120 s on 2 cores")


def staged_run(name: str, options: list[str], extra: list[str], target: str) -> dict:
    """A timed two_tower.py run (timed_two_tower) broken down by stage, with its peak RSS and
    each arm's headline metrics (mean over seeds), printed and returned."""
    res, cmd, wall, peak = timed_two_tower(f"{name} benchmark", options, extra)
    t = res["timings"]
    rows = [
        {"stage": k, "wall_s": v, "share": f"{100 * v / t['total_s']:.0f}%"}
        for k, v in run_stages(t, res["data"]).items()
    ]
    rows.append({"stage": "whole process (incl. imports)", "wall_s": wall, "share": ""})
    print()
    print_table(rows, [("stage", "stage"), ("wall_s", "wall s"), ("share", "share")])
    print(f"peak RSS {peak:.2f} GiB; {os.cpu_count()} CPUs; {target}")
    metrics = {
        arm: {m: round(r["all"][m]["mean"], 4) for m in HEADLINE}
        for arm, r in res["metrics"].items()
    }
    print()
    print_table(
        [{"arm": a, **v} for a, v in metrics.items()], [("arm", "arm"), *[(m, m) for m in HEADLINE]]
    )
    return {
        "benchmark": name,
        "command": cmd[1:],
        "wall_s": wall,
        "peak_rss_gib": round(peak, 2),
        "stages": rows,
        "metrics": metrics,
        "training": res["training"],  # per seed: each epoch's train and validation loss
        "data": res["data"],
        "seeds": res["seeds"],
        "environment": environment(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


HEADLINE = ("recall@10", "recall@20", "ndcg@10")  # the metrics staged_run prints per arm


# ----------------------------------------------------------------------------
# full
# Kaggle's size in <= 2 hours on 2 CPU cores (issue 24): one epoch over a fresh sample of
# 6M of the ~29M training rows (an epoch of every row is hours of steps on 2 cores),
# TIFU-KNN's neighbours among 20,000 users (the exact search grows as users^2), and each
# ranker fold trained on 20,000 users (a fold holds ~100k). Below those sizes each is a no-op.
KAGGLE_SIZE_SETTINGS = [
    "--epochs",
    "1",
    "--epoch-rows",
    "6000000",
    "--tifu-pool",
    "20000",
    "--ranker-train-users",
    "20000",
]


def cmd_full(args) -> dict:
    """two_tower.py on the Kaggle-size generated data (data/full/, generated once): every
    user and item, SCALE_RUN with KAGGLE_SIZE_SETTINGS (+ the options after `full`, which
    win), in a child with a fresh cache; seconds per stage, peak RSS, each arm's metrics."""
    options = ["--data-dir", str(ensure_full_sample()), *SCALE_RUN, *KAGGLE_SIZE_SETTINGS]
    return staged_run(
        "full", options, args.script_args, "targets: <= 2 h on 2 CPU cores, <= 10 min on a GPU"
    )


# ----------------------------------------------------------------------------
# scale
SCALE_USERS = "12500,25000,50000,100000"  # the sizes of the growth table (users)
SCALE_ITEMS = 49688  # Kaggle's catalogue at every size: only the users grow
SCALE_DIR = config.REPO / "data" / "scale"  # generated data, one folder per size (kept)
# the pipeline each size runs (two_tower.py's options; more can follow on the command line):
# every user and item (--full), one seed, LightGBM on the pipeline's best candidate set
SCALE_RUN = ["--full", "--seeds", "1", "--rankers", "lightgbm", "--candidates", "faiss@50+bought"]


MIN_GROWTH_S = 1.0  # stages shorter than this at either size get no exponent: jitter rules


def growth(t1: float, t2: float, n1: int, n2: int) -> float | None:
    """The exponent b of t ~ n^b between two sizes (None where either time is under
    MIN_GROWTH_S: a sub-second stage's ratio is mostly jitter). n log n between n and 2n
    reads ~1.07 at these sizes; 2.0 is quadratic."""
    if t1 < MIN_GROWTH_S or t2 < MIN_GROWTH_S:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def cmd_scale(args) -> dict:
    """The pipeline at growing sizes: generated data of each --users count (Kaggle's
    catalogue), `two_tower.py` with SCALE_RUN and KAGGLE_SIZE_SETTINGS (the full run's: each
    caps a stage only past its size) (+ the options after `scale`) in a child process
    with a fresh cache, seconds per stage (run_stages) and the child's peak RSS, then the
    growth exponent of each stage between consecutive sizes (which stage grows faster than
    the data)."""
    sizes = sorted({int(x) for x in args.users.split(",") if x.strip()})
    if len(sizes) < 2 or sizes[0] < 2:
        raise config.ConfigError("--users needs two or more sizes of >= 2 users, e.g. 1500,3000")
    runs = []
    for n in sizes:
        data = generated_data(SCALE_DIR / f"{n}_{args.items}", n, args.items)
        res, _, wall, peak = timed_two_tower(
            f"scale {n:,} users",
            ["--data-dir", str(data), *SCALE_RUN, *KAGGLE_SIZE_SETTINGS],
            args.script_args,
        )
        stages = run_stages(res["timings"], res["data"])
        runs.append(
            {
                "users": n,
                "rows": res["data"]["rows"],
                "items": res["data"]["items"],
                "stages": stages,
                "wall_s": wall,
                "peak_rss_gib": round(peak, 2),
                "recall@20": res["metrics"]["two-tower"]["all"]["recall@20"]["mean"],
                "training": res["training"],  # each epoch's train and validation loss
            }
        )
        print(f"  {wall:.0f}s, peak RSS {peak:.2f} GiB", flush=True)
    table = scale_table(runs)
    print()
    print_table(table, [("stage", "stage"), *[(k, k) for k in table[0] if k != "stage"]])
    fast = [
        r["stage"]
        for r in table
        if any(isinstance(v, float) and v > 1.3 for k, v in r.items() if k.startswith("b "))
    ]
    print(
        f"growth b: t ~ n^b between consecutive sizes (n log n ~ 1.07, quadratic 2; '-': under "
        f"{MIN_GROWTH_S:g} s); "
        + (f"above 1.3 somewhere: {', '.join(fast)}" if fast else "no stage above 1.3")
    )
    return {
        "benchmark": "scale",
        "run": SCALE_RUN + KAGGLE_SIZE_SETTINGS + list(args.script_args),
        "items": args.items,
        "runs": runs,
        "table": table,
        "faster_than_n_log_n": fast,
        "environment": environment(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def scale_table(runs: list[dict]) -> list[dict]:
    """One row per stage (+ the whole process and its peak RSS): seconds at each size, then
    the growth exponent between each pair of consecutive sizes."""
    names = [*runs[0]["stages"], "whole process", "peak RSS GiB"]
    value = lambda r, s: (
        r["wall_s"]
        if s == "whole process"
        else r["peak_rss_gib"]
        if s == "peak RSS GiB"
        else r["stages"][s]
    )
    rows = []
    for s in names:
        row = {"stage": s, **{f"{r['users']:,}": value(r, s) for r in runs}}
        for a, b in itertools.pairwise(runs):
            g = growth(value(a, s), value(b, s), a["users"], b["users"])
            row[f"b {a['users'] / 1000:g}k-{b['users'] / 1000:g}k"] = (
                round(g, 2) if g is not None else "-"
            )
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------
# step
STEP_BATCHES = "1024,4096,16384"  # the batch sizes `step` times
STEP_COUNT = 20  # timed steps per batch size


def cmd_step(args) -> dict:
    """The two-tower's training step at one data size (default: Kaggle's, data/full): for
    each batch size, the real fit over --steps batches of training rows drawn at random,
    timed after one untimed warm-up batch. Every user's purchase list and the whole
    catalogue stay as in a full run, so a step does a full run's work. Prints seconds per
    step, rows per second and the epoch that implies over every training row (and over
    the distinct (user, item) pairs, --train-on pairs)."""
    import numpy as np
    import torch

    import common as C

    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.pick_device(args.device)
    data = Path(args.data_dir) if args.data_dir else ensure_full_sample()
    t0 = time.perf_counter()
    ds = C.load_dataset(data, full=True, verbose=False)
    split = C.split_interactions(ds.interactions, args.split)
    feats = C.build_features(ds, split.train)
    prep_s = time.perf_counter() - t0
    train = split.train[["user", "item"]]
    n_rows, n_pairs = len(train), len(train.drop_duplicates())
    print(
        f"{ds.source}: {ds.n_users:,} users x {ds.n_items:,} items, {n_rows:,} training rows "
        f"({n_pairs:,} distinct pairs); loaded, split and featurised in {prep_s:.0f}s; "
        f"{torch.get_num_threads()} torch threads on {device}",
        flush=True,
    )
    rng = np.random.default_rng(config.RANDOM_SEED)
    rows = []
    for bs in sorted({int(x) for x in args.batch_sizes.split(",") if x.strip()}):
        # val_frac 0: no validation pass; the fit is the training loop alone
        cfg = C.TowerConfig(batch_size=bs, epochs=1, val_frac=0.0)
        model = C.TwoTower(cfg, feats, ds.n_users, ds.n_items, device)
        model.fit(train.iloc[rng.choice(n_rows, bs, replace=False)], progress=False)
        sample = train.iloc[rng.choice(n_rows, bs * args.steps, replace=False)]
        t0 = time.perf_counter()
        model.fit(sample, progress=False)
        step_s = (time.perf_counter() - t0) / args.steps
        rows.append(
            {
                "batch": bs,
                "s_per_step": round(step_s, 4),
                "rows_per_s": round(bs / step_s),
                "epoch_rows_min": round(n_rows / bs * step_s / 60, 1),
                "epoch_pairs_min": round(n_pairs / bs * step_s / 60, 1),
            }
        )
        print(f"  batch {bs:,}: {step_s * 1000:.0f} ms a step", flush=True)
    print()
    print_table(
        rows,
        [
            ("batch", "batch"),
            ("s_per_step", "s / step"),
            ("rows_per_s", "rows / s"),
            ("epoch_rows_min", "epoch (rows) min"),
            ("epoch_pairs_min", "epoch (pairs) min"),
        ],
    )
    print(f"peak RSS {peak_rss_gib():.2f} GiB")
    return {
        "benchmark": "step",
        "data": ds.summary(),
        "split": args.split,
        "training_rows": n_rows,
        "training_pairs": n_pairs,
        "prep_s": round(prep_s, 1),
        "device": device,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "environment": environment(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ----------------------------------------------------------------------------
# llm
# Default sizes of the LLM arms (EXPERIMENTS.md) and what one call costs, for the estimates:
# (arm, calls, prompt tokens per call, answer tokens per call).
LLM_ARMS = [
    ("item descriptions (5,000 items)", 5000, 250, 70),
    ("user narration (200 users)", 200, 350, 120),
    ("pointwise rerank (200 users x 20 cand.)", 4000, 150, 1),
    ("listwise rerank (200 users x 20 cand.)", 200, 450, 90),
    ("occasion labels (2,000 orders)", 2000, 280, 15),
]
LLM_WORDS = ["yogurt", "granola", "salsa", "hummus", "oat milk", "cheddar", "spinach", "bagels"]


def llm_requests(n: int, tokens: int) -> list:
    """n distinct product-copy prompts of up to `tokens` answer tokens; returns llm.Requests."""
    import llm

    return [
        llm.Request(
            prompt=f"Describe {LLM_WORDS[i % len(LLM_WORDS)]} number {i} for a grocery "
            "catalogue in two sentences.",
            system="You write product copy.",
            max_tokens=tokens,
        )
        for i in range(n)
    ]


def send_concurrently(backend, reqs: list, c: int, tokens: int) -> tuple[list, dict]:
    """Send reqs from c threads at once (thread i sends reqs[i::c] in turn), each answer
    forced to `tokens` tokens (ignore_eos). Returns the replies, in the order they came
    back, and the Clock reading of the whole batch."""
    replies, lock = [], threading.Lock()

    def worker(batch):
        for r in batch:
            rep = backend.send(r, tokens, {"ignore_eos": True})
            with lock:
                replies.append(rep)

    clock = Clock()
    threads = [threading.Thread(target=worker, args=(reqs[i::c],)) for i in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies, clock.read()


def llm_level(args, c: int) -> dict:
    """One concurrency level: a fresh backend with c slots, a warm-up call, then c * rounds
    requests from c threads. Prints a line and returns the level's row of the table."""
    import llm

    backend = llm.LocalBackend(args.model, n_parallel=c, n_threads=args.threads, ctx_per_slot=512)
    reqs = llm_requests(c * args.rounds, args.tokens)
    backend.send(llm.Request(prompt="Hi", max_tokens=2), 2)  # warm-up
    replies, wall = send_concurrently(backend, reqs, c, args.tokens)
    backend.close()
    out_tok = sum(r.output_tokens for r in replies)
    in_tok = sum(r.input_tokens - r.cache_read_input_tokens for r in replies)
    per_req = [r.timings.get("predicted_per_second", 0) for r in replies]
    row = {
        "concurrent": c,
        "requests": len(replies),
        "out_tokens": out_tok,
        "wall_s": wall["wall_s"],
        "cpu_s": wall["cpu_s"],
        "agg_tok_s": round(out_tok / wall["wall_s"], 2),
        # tokens per CPU-second of this process: what one dedicated core would give,
        # robust to other processes sharing the machine
        "tok_per_cpu_s": round(out_tok / max(wall["cpu_s"], 1e-9), 2),
        "per_request_tok_s": round(sum(per_req) / max(len(per_req), 1), 2),
        "prompt_tokens": in_tok,
        "load_avg": round(os.getloadavg()[0], 2),
    }
    print(
        f"  {c} concurrent: {row['agg_tok_s']:.1f} tok/s aggregate, "
        f"{row['tok_per_cpu_s']:.1f} per CPU-second "
        f"({row['per_request_tok_s']:.1f} per request), {wall['wall_s']:.1f}s wall, "
        f"{wall['cpu_s']:.1f}s CPU, load avg {row['load_avg']}",
        flush=True,
    )
    return row


def llm_estimates(best: dict) -> list[dict]:
    """Hours each LLM arm's default size would take at the `best` level's aggregate
    generation rate. Prompt throughput was measured at ~4x the generation rate on this CPU
    (issue 9), so prompt tokens count at 4x that rate. Returns one dict per arm."""
    rate = best["agg_tok_s"]
    return [
        {"arm": a, "calls": n, "hours": round(n * (p / (4 * rate) + t / rate) / 3600, 2)}
        for a, n, p, t in LLM_ARMS
    ]


def cmd_llm(args) -> dict:
    """Aggregate generation tokens/s of the local model at 1, 2, 4, 8 concurrent requests
    (one llama.cpp slot per request, continuous batching), and the estimated time of each
    LLM arm's default size at the best level. Answers are forced to --tokens tokens
    (ignore_eos); nothing is cached."""
    import llm

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    load0 = os.getloadavg()[0]
    name, path, sha = llm.resolve_local_model(args.model)
    print(
        f"llm benchmark: local {name} ({path.stat().st_size / 1e6:.0f} MB, sha256 "
        f"{sha[:12]}), {args.tokens}-token answers, threads {args.threads or 'auto'}, "
        f"load avg {load0:.1f}",
        flush=True,
    )
    rows = [llm_level(args, c) for c in levels]
    print()
    print_table(
        rows,
        [
            ("concurrent", "concurrent"),
            ("requests", "requests"),
            ("out_tokens", "tokens"),
            ("wall_s", "wall s"),
            ("cpu_s", "cpu s"),
            ("agg_tok_s", "aggregate tok/s"),
            ("per_request_tok_s", "per request"),
            ("tok_per_cpu_s", "tok/CPU-s"),
            ("load_avg", "load avg"),
        ],
    )
    best = max(rows, key=lambda r: r["agg_tok_s"])
    est = llm_estimates(best)
    print(
        f"\nestimated time at {best['concurrent']} concurrent "
        f"({best['agg_tok_s']:.1f} tok/s generation, ~4x that for prompts):"
    )
    print_table(est, [("arm", "LLM arm (default size)"), ("calls", "calls"), ("hours", "hours")])
    return {
        "benchmark": "llm",
        "model": name,
        "model_sha256": sha,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "levels": rows,
        "estimates": est,
        "load_avg_start": load0,
        "environment": environment(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ----------------------------------------------------------------------------
# main
COMMANDS = {
    "load": cmd_load,
    "two_tower": cmd_two_tower,
    "llm": cmd_llm,
    "scale": cmd_scale,
    "step": cmd_step,
    "full": cmd_full,
}


def add_json_arg(parser: argparse.ArgumentParser, name: str) -> None:
    """--json: where a benchmark writes its results (default results/benchmark_<name>.json)."""
    parser.add_argument(
        "--json",
        default=str(config.RESULTS_DIR / f"benchmark_{name}.json"),
        help=f"where to write the results (default: results/benchmark_{name}.json)",
    )


def passes_on(sub, name: str, help: str, command, args_help: str):
    """A subcommand whose other arguments go on to two_tower.py (script_args; parse_args
    keeps the ones argparse's REMAINDER would not take)."""
    p = sub.add_parser(name, help=help, description=command.__doc__)
    p.add_argument("script_args", nargs=argparse.REMAINDER, help=args_help)
    add_json_arg(p, name)
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_log_level_arg(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "load",
        help="time load_dataset(full=True), uncached and cached",
        description=cmd_load.__doc__
        or "time load_dataset(full=True), uncached "
        "and cached, each phase in its own process (peak RSS per phase)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--data-dir",
        default=None,
        help=f"directory of Kaggle-format CSVs (default: ${config.DATA_ENV}, then "
        "data/instacart/, then the generated sample in data/sample/)",
    )
    src.add_argument(
        "--kaggle-size",
        action="store_true",
        help="generated data of Kaggle's size in data/full/ (generated once if missing)",
    )
    src.add_argument(
        "--full-sample", dest="kaggle_size", action="store_true", help=argparse.SUPPRESS
    )
    p.add_argument(
        "--phases",
        default="uncached,cached",
        help=f"comma-separated, from {', '.join(LOAD_PHASES)} (default: uncached,cached)",
    )
    add_json_arg(p, "load")
    passes_on(
        sub,
        "two_tower",
        "time the default two_tower.py run, by stage",
        cmd_two_tower,
        "arguments passed on to two_tower.py (default: none, the default run)",
    )
    sc = passes_on(
        sub,
        "scale",
        "the pipeline at growing user counts: seconds per stage, peak RSS, growth",
        cmd_scale,
        "more two_tower.py options (e.g. --epochs 1 --no-tifu)",
    )
    sc.add_argument(
        "--users",
        default=SCALE_USERS,
        help=f"comma-separated user counts, generated once each (default {SCALE_USERS})",
    )
    sc.add_argument(
        "--items",
        type=int,
        default=SCALE_ITEMS,
        help=f"products in every generated catalogue (default {SCALE_ITEMS:,}, Kaggle's)",
    )
    passes_on(
        sub,
        "full",
        "the pipeline at Kaggle's size (data/full/) with the settings that fit 2 h",
        cmd_full,
        "more two_tower.py options (e.g. --device cuda), after the full-size settings",
    )
    st = sub.add_parser(
        "step",
        help="the two-tower's training step at Kaggle's size: seconds per step by batch size",
        description=cmd_step.__doc__,
    )
    st.add_argument(
        "--data-dir",
        default=None,
        help="Kaggle-format CSVs, every user and item (default: the Kaggle-size generated "
        "data in data/full/, generated once)",
    )
    st.add_argument(
        "--batch-sizes", default=STEP_BATCHES, help=f"comma list (default {STEP_BATCHES})"
    )
    st.add_argument(
        "--steps", type=int, default=STEP_COUNT, help=f"timed steps each (default {STEP_COUNT})"
    )
    st.add_argument("--split", choices=["interaction", "temporal"], default="interaction")
    st.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    st.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_json_arg(st, "step")
    m = sub.add_parser(
        "llm",
        help="local model tokens/s at 1, 2, 4, 8 concurrent requests",
        description=cmd_llm.__doc__,
    )
    m.add_argument(
        "--model",
        default=None,
        help="local model name or GGUF path (default $LLM_LOCAL_MODEL, else the "
        "1.5B model if installed, else the 0.5B test model)",
    )
    m.add_argument("--levels", default="1,2,4,8", help="concurrent requests (default 1,2,4,8)")
    m.add_argument("--tokens", type=int, default=64, help="tokens per answer (default 64)")
    m.add_argument(
        "--rounds", type=int, default=2, help="requests per slot at each level (default 2)"
    )
    m.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default $LLM_THREADS, else the cores not already busy)",
    )
    add_json_arg(m, "llm")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    # two_tower passes its options on; argparse's REMAINDER does not take a first word that
    # starts with '--' (`two_tower --data-dir DIR` failed), so unknown options are kept here
    args, extra = parser.parse_known_args(argv)
    config.apply_log_level(args)
    passes_args_on = hasattr(args, "script_args")  # the passes_on subcommands
    if extra and not passes_args_on:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if passes_args_on:
        args.script_args = [*extra, *args.script_args]
    return args


def main(argv=None):
    args = parse_args(argv)
    result = COMMANDS[args.command](args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    config.main_guard(main)
