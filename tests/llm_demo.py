"""Demo of the LLM layer against the loopback fake API: faults, a kill, a resume, a batch.

    uv run python tests/llm_demo.py

1. Sync: a worker process sends 240 item_description prompts through llm.LLM.complete_many
   while the fake injects 429s (with retry-after), 529s, 500s, timeouts, malformed JSON, prose
   around JSON and truncated output. It is SIGKILLed once 100 answers are cached; a second
   worker resumes and pays only for what is missing. One prompt is scripted to fail twice (a
   counted failure, not cached): the third run sends only it, the fourth sends nothing.
2. Batch: a worker submits 200 reranker prompts to the Message Batches API and is SIGKILLed
   while polling; the next worker finds the stored batch id, resumes polling, collects.

`worker` is also the child process that tests/test_llm.py kills mid-run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_anthropic import FakeAnthropic

import llm
from prompts import TEMPLATES, format_candidates

DEMO_KEY = "sk-ant-demo-not-a-real-key"
FOODS = [
    "Yogurt",
    "Granola",
    "Salsa",
    "Hummus",
    "Oat Milk",
    "Cheddar",
    "Spinach",
    "Bagels",
    "Coffee",
    "Pasta",
    "Tofu",
    "Bananas",
    "Almonds",
    "Kombucha",
    "Tortillas",
    "Honey",
]
STYLES = [
    "Organic",
    "Low Fat",
    "Spicy",
    "Family Size",
    "Gluten Free",
    "Vanilla",
    "Classic",
    "Unsweetened",
    "Whole Wheat",
    "Smoked",
    "Greek",
    "Roasted",
    "Mini",
    "Fresh",
    "Raw",
]
FAULT_RATES = {
    "429": 0.06,
    "529": 0.03,
    "500": 0.03,
    "slow": 0.01,
    "malformed": 0.03,
    "prose": 0.04,
    "truncate": 0.03,
}


def demo_requests(kind: str, n: int) -> list[llm.Request]:
    """n distinct prompts rendered from the registry (as an experiment script would)."""
    names = [f"{s} {f}" for s in STYLES for f in FOODS]
    if kind == "sync":
        t = TEMPLATES["item_description"]
        return [
            t.request(
                product_name=names[i % len(names)] + ("" if i < len(names) else f" #{i}"),
                aisle="demo aisle",
                department="demo department",
            )
            for i in range(n)
        ]
    t = TEMPLATES["reranker"]
    reqs = []
    for i in range(n):
        cands = [(100 * i + j, names[(7 * i + j) % len(names)], "demo aisle") for j in range(10)]
        reqs.append(
            t.request(
                user_profile=f"Shopper {i} buys {names[i % len(names)]} weekly.",
                recent_orders="- none",
                order_context="",
                candidates=format_candidates(cands),
                n_candidates=len(cands),
            )
        )
    return reqs


def worker(args) -> None:
    """One run of a bulk job; writes its usage report (what a results JSON would hold)."""
    logging.basicConfig(level=logging.WARNING, format="  worker: %(message)s")
    client = llm.LLM(
        api_key=DEMO_KEY,
        base_url=args.base_url,
        cache_path=args.cache,
        timeout=args.timeout,
        workers=args.workers,
    )
    reqs = demo_requests(args.mode, args.n)
    if args.mode == "sync":
        results = client.complete_many(reqs)
    else:
        results = client.run_batch(reqs, poll_interval=args.poll)
    report = client.usage_report()
    report["ok"] = sum(r.ok for r in results)
    Path(args.report).write_text(json.dumps(report, indent=2))


def _rows(cache: Path, table: str = "responses") -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=5) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # the worker has not created the table yet
        return 0


def run_worker(server, cache, report, mode, n, kill_when=None, poll=0.05, timeout=1.0):
    """Start a worker; SIGKILL it once kill_when() is true. Returns (killed, seconds)."""
    cmd = [
        sys.executable,
        __file__,
        "worker",
        "--base-url",
        server.base_url,
        "--cache",
        str(cache),
        "--report",
        str(report),
        "--mode",
        mode,
        "--n",
        str(n),
        "--poll",
        str(poll),
        "--timeout",
        str(timeout),
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        if kill_when is not None and kill_when():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True, time.time() - t0
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed with exit code {proc.returncode}")
    return False, time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cmd", nargs="?", default="demo", choices=["demo", "worker"])
    p.add_argument("--base-url")
    p.add_argument("--cache")
    p.add_argument("--report")
    p.add_argument("--mode", default="sync", choices=["sync", "batch"])
    p.add_argument("--n", type=int, default=240)
    p.add_argument("--poll", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args()
    if args.cmd == "worker":
        return worker(args)

    tmp = Path(tempfile.mkdtemp(prefix="llm_demo_"))
    cache = tmp / "llm_cache.sqlite"
    rows = []  # (phase, server requests, usage report or None, note)
    with FakeAnthropic(
        fault_rates=FAULT_RATES,
        seed=1,
        retry_after=0.05,
        slow_delay=1.5,
        latency=0.03,
        batch_polls=6,
    ) as server:
        print(f"fake Anthropic API on {server.base_url}; cache {cache}")
        print(f"fault rates per request: {FAULT_RATES}\n")

        def phase(name, mode, n, kill_when=None, poll=0.05):
            before = server.total_requests
            report = tmp / f"{name.split()[0]}.json"
            killed, secs = run_worker(server, cache, report, mode, n, kill_when, poll)
            usage = None if killed else json.loads(report.read_text())
            note = (
                f"SIGKILLed after {secs:.1f}s; {_rows(cache)} answers and "
                f"{_rows(cache, 'batches')} batch id(s) stored"
                if killed
                else f"{secs:.1f}s; {usage['ok']}/{n} answered"
            )
            rows.append((name, server.total_requests - before, usage, note))
            print(f"[{name}] {note}")

        # One prompt near the end answers garbage twice: a counted failure, never cached.
        server.add_fault("malformed", times=2, match="Product: Fresh Tortillas\n")
        phase("sync-1 (killed)", "sync", 240, kill_when=lambda: _rows(cache) >= 100)
        phase("sync-2 (resume)", "sync", 240)
        phase("sync-3 (rerun)", "sync", 240)
        phase("sync-4 (rerun)", "sync", 240)
        cached_before = _rows(cache)
        phase(
            "batch-1 (killed)",
            "batch",
            200,
            poll=0.3,
            kill_when=lambda: (
                _rows(cache, "batches") >= 1 and server.counts["GET /v1/messages/batches/{id}"] >= 2
            ),
        )
        phase("batch-2 (resume)", "batch", 200, poll=0.3)
        phase("batch-3 (rerun)", "batch", 200, poll=0.3)
        counts = dict(server.counts)
        faults = dict(server.faults_served)

    cols = [
        "server reqs",
        "requests",
        "cached",
        "api_calls",
        "retries",
        "reasks",
        "repaired",
        "failed",
        "in_tok",
        "out_tok",
        "batch_req",
        "cost_usd",
        "batch_usd",
    ]
    keys = [
        None,
        "requests",
        "cached",
        "api_calls",
        "retries",
        "reasks",
        "repaired",
        "failed",
        "input_tokens",
        "output_tokens",
        "batch_requests",
        "cost_usd",
        "batch_cost_usd",
    ]
    print("\n" + f"{'phase':18s}" + "".join(f"{c:>12s}" for c in cols))
    total = {k: 0 for k in keys if k}
    for name, served, usage, _ in rows:
        cells = [str(served)]
        for k in keys[1:]:
            v = "-" if usage is None else usage[k]
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
            if usage is not None:
                total[k] += usage[k]
        print(f"{name:18s}" + "".join(f"{c:>12s}" for c in cells))
    print(
        f"{'total (reported)':18s}{sum(r[1] for r in rows):>12d}"
        + "".join(
            f"{total[k]:>12.4f}" if isinstance(total[k], float) else f"{total[k]:>12d}"
            for k in keys[1:]
        )
    )
    print(f"\nserver requests by endpoint: {counts}")
    print(f"faults injected by the server: {faults}")
    print(f"answers in the cache: {cached_before} sync + {_rows(cache) - cached_before} batch")
    # Every run's usage is persisted as it goes, so the killed phases' spend is not lost.
    store = llm.Cache(cache)
    print("usage persisted in the cache, per run (the killed ones included):")
    for row in store.usage_rows():
        r = row["report"]
        print(
            f"  run {row['run_id']}: api_calls {r['api_calls']}, batch_requests "
            f"{r['batch_requests']}, tokens {r['input_tokens'] + r['batch_input_tokens']} in / "
            f"{r['output_tokens'] + r['batch_output_tokens']} out, "
            f"${r['total_cost_usd'] or 0:.4f}"
        )
    store.close()


if __name__ == "__main__":
    main()
