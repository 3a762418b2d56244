"""Accounting: the counters behind usage_report() and the dollars they cost at list price.

usage_report() gives backend, model (+ sha256), calls, cache hits, retries, timeouts, repairs,
failures, tokens (incl. prompt-cache fields), dollars (Claude) and wall seconds.
"""

from __future__ import annotations

import threading
from collections import Counter

from .request import Request

# Dollars per million (input, output) tokens; the Message Batches API bills half of this.
# Prompt-cache writes cost 1.25x the input price, reads 0.1x.
PRICES = {
    "claude-haiku-4-5-20251001": (1.0, 5.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
CACHE_WRITE_FACTOR, CACHE_READ_FACTOR = 1.25, 0.1
BATCH_DISCOUNT = 0.5


class Stats:
    """Thread-safe counters behind usage_report()."""

    FIELDS = (
        "requests",
        "cached",
        "api_calls",
        "http_requests",
        "retries",
        "timeouts",
        "connection_errors",
        "reasks",
        "repaired",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "batch_requests",
        "batch_input_tokens",
        "batch_output_tokens",
        "batch_pending",
        "batches_lost",
        "batch_submit_retries",
        "cache_write_failures",
    )

    def __init__(self):
        self._lock = threading.Lock()
        self.n = Counter({f: 0 for f in self.FIELDS})
        self.failures: Counter = Counter()  # reason -> count
        self.repairs: Counter = Counter()  # repair kind -> count
        self.prompt_versions: dict[str, str] = {}
        self.busy_s = 0.0

    def add(self, **counts: int) -> None:
        with self._lock:
            self.n.update(counts)

    def fail(self, reason: str) -> None:
        with self._lock:
            self.n["failed"] += 1
            self.failures[reason] += 1

    def repaired(self, kind: str) -> None:
        with self._lock:
            self.n["repaired"] += 1
            self.repairs[kind] += 1

    def saw(self, req: Request) -> None:
        with self._lock:
            self.n["requests"] += 1
            if req.version:
                self.prompt_versions[req.template] = req.version

    def report(self, model: str, priced: bool, wall_s: float) -> dict:
        """The counters, failure reasons, repairs, dollars (when `priced`: a Claude model; the
        local model costs 0.0), busy and wall seconds, and the prompt versions seen."""
        n = dict(self.n)
        cost = batch_cost = total = None
        if priced:
            cost = dollars(
                model,
                n["input_tokens"],
                n["output_tokens"],
                cache_write=n["cache_creation_input_tokens"],
                cache_read=n["cache_read_input_tokens"],
            )
            batch_cost = dollars(model, n["batch_input_tokens"], n["batch_output_tokens"], True)
            total = None if cost is None else round(cost + batch_cost, 6)
        return {
            **n,
            "failure_reasons": dict(self.failures),
            "repairs": dict(self.repairs),
            "cost_usd": None if cost is None else round(cost, 6),
            "batch_cost_usd": None if batch_cost is None else round(batch_cost, 6),
            "total_cost_usd": total if priced else 0.0,
            "busy_s": round(self.busy_s, 2),
            "wall_s": round(wall_s, 2),
            "prompt_versions": dict(self.prompt_versions),
        }


def dollars(
    model: str,
    input_tokens: int,
    output_tokens: int,
    batch: bool = False,
    cache_write: int = 0,
    cache_read: int = 0,
) -> float | None:
    """Cost of the tokens at list price (half for batches); None for a model not in PRICES."""
    if model not in PRICES:
        return None
    p_in, p_out = PRICES[model]
    cost = (
        input_tokens * p_in
        + output_tokens * p_out
        + cache_write * p_in * CACHE_WRITE_FACTOR
        + cache_read * p_in * CACHE_READ_FACTOR
    ) / 1e6
    return cost * (BATCH_DISCOUNT if batch else 1.0)
