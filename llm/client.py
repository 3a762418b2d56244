"""The client: one LLM object for Claude or the local model, with cache, retries, validation.

`LLM.complete(req)` answers one request from the cache, else through the single-call pipeline
(calls.Caller: send, interpret, re-ask once, store, count). `complete_many` runs requests on
a long-lived worker pool (cache hits first, duplicates sent once, an optional tqdm bar with
rate and ETA). `run_batch` uses the Message Batches API for Claude (claude.BatchRunner) and
the worker pool for the local model. `yes_probability` asks yes/no questions: logprobs
locally, a 0-10 JSON score from Claude (SCORE_SUFFIX), both cached.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from config import ConfigError

from .accounting import Stats
from .cache import Cache, default_cache_path
from .calls import Caller
from .claude import RETRY_AFTER_CAP, BatchRunner, ClaudeBackend
from .local import LocalBackend
from .request import Request, Result, cache_key

log = logging.getLogger("llm")

P_YES_SCHEMA = {
    "type": "object",
    "properties": {"p_yes": {"type": ["number", "null"]}},
    "required": ["p_yes"],
}
SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["score"],
}
SCORE_SUFFIX = (
    "\n\nInstead of Yes or No, rate how likely the answer is Yes on a scale from 0 "
    "(certainly no) to 10 (certainly yes). Reply with only a JSON object that "
    "matches this JSON Schema:\n" + json.dumps(SCORE_SCHEMA, separators=(",", ":"))
)


class LLM:
    """The one client, for Claude or the local model. Thread-safe; one per experiment run.

    backend "claude" (default): model = option, else $LLM_MODEL, else DEFAULT_MODEL; raises
    NoAPIKey without a key unless cache_only. backend "local": model = a LOCAL_MODELS name or
    a GGUF path (else $LLM_LOCAL_MODEL, else the best installed). cache_path: option, else
    $LLM_CACHE_PATH, else llm_cache.sqlite in config.CACHE_DIR (data/cache, or
    $INSTACART_CACHE_DIR)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        backend: str = "claude",
        cache_path: str | Path | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 6,
        timeout: float = 60.0,
        workers: int | None = None,
        cache_only: bool = False,
        max_connection_failures: int = 5,
        retry_after_cap: float = RETRY_AFTER_CAP,
        n_parallel: int = 4,
        n_threads: int | None = None,
        ctx_per_slot: int = 2048,
    ):
        self.stats = Stats()
        if backend not in ("claude", "local"):
            raise ConfigError(f"unknown LLM backend {backend!r} (claude or local)")
        if backend == "local":
            self.impl = LocalBackend(
                model, n_parallel=n_parallel, n_threads=n_threads, ctx_per_slot=ctx_per_slot
            )
        else:
            self.impl = ClaudeBackend.from_env(
                model,
                api_key,
                base_url,
                self.stats,
                cache_only=cache_only,
                max_retries=max_retries,
                timeout=timeout,
                retry_after_cap=retry_after_cap,
            )
        try:
            self.cache = Cache(cache_path or default_cache_path())
        except BaseException:  # an unusable cache is a one-line error (ConfigError)
            self.impl.close()
            raise
        self.model = self.impl.model
        self.backend = self.impl.name
        self.label = self.impl.label
        self.identity = self.impl.identity
        self.client = getattr(self.impl, "client", None)  # the SDK client (Claude)
        # One long-lived pool: its threads (and their SQLite connections) are reused by every
        # complete_many call, so a long experiment does not pile up connections.
        self._pool = ThreadPoolExecutor(
            max_workers=workers or self.impl.workers, thread_name_prefix="llm"
        )
        self._caller = Caller(self.impl, self.stats, self.cache, max_connection_failures)

    def __repr__(self) -> str:  # never show the key
        return (
            f"LLM(backend={self.backend!r}, model={self.model!r}, cache={str(self.cache.path)!r})"
        )

    # --- one call ---------------------------------------------------------------------------

    def complete(self, req: Request) -> Result:
        """Answer one request: from the cache, else from the backend.

        Never raises on a single bad answer; raises LLMFatal when the run cannot go on."""
        self.stats.saw(req)
        key = cache_key(self.identity, req)
        if (hit := self.cache.get(key)) is not None:
            self.stats.add(cached=1)
            return hit
        t0 = time.perf_counter()
        try:
            return self._caller.call(req, key)
        finally:
            self.stats.busy_s += time.perf_counter() - t0

    # --- many calls -------------------------------------------------------------------------

    def complete_many(self, reqs: list[Request], progress: bool = False) -> list[Result]:
        """Answer many requests, at most `workers` at a time; results are in request order.

        Cache hits are served first; duplicate requests are sent once. progress: a tqdm bar
        with rate and ETA. Raises LLMFatal (after cancelling queued calls) on a fatal fault."""
        for r in reqs:
            self.stats.saw(r)
        keys = [cache_key(self.identity, r) for r in reqs]
        done: dict[str, Result] = {}
        todo: dict[str, Request] = {}
        for k, r in zip(keys, reqs):
            if k in done or k in todo:
                continue
            if (hit := self.cache.get(k)) is not None:
                done[k] = hit
            else:
                todo[k] = r
        self.stats.add(cached=sum(1 for k in keys if k in done))
        if todo:
            log.info(
                "%d requests: %d cached, %d to send (%s)",
                len(reqs),
                len(reqs) - len(todo),
                len(todo),
                self.label,
            )
        done.update(self._run_pool(todo, progress))
        return [done[k] for k in keys]

    def _run_pool(self, todo: dict[str, Request], progress: bool) -> dict[str, Result]:
        out: dict[str, Result] = {}
        if not todo:
            return out
        t0 = time.perf_counter()
        bar = _progress(len(todo), progress, self.label)
        futures = {k: self._pool.submit(self._caller.call, r, k) for k, r in todo.items()}
        try:
            for k, fut in futures.items():
                out[k] = fut.result()
                bar.update(1)
        except BaseException:  # Ctrl-C or LLMFatal: drop queued calls; answered ones are cached
            for fut in futures.values():
                fut.cancel()
            raise
        finally:
            bar.close()
            self.stats.busy_s += time.perf_counter() - t0
        return out

    # --- pointwise scoring --------------------------------------------------------------------

    def yes_probability(self, reqs: list[Request], progress: bool = False) -> list[float | None]:
        """P(yes) for yes/no questions (e.g. the rerank_pointwise template), cached.

        local: from the first answer token's logprobs, P(yes)/(P(yes)+P(no)); None when neither
        is among the top 20 tokens. claude: a 0-10 score asked as JSON, divided by 10; None when
        the call failed."""
        derived = [yes_request(r, self.backend == "local") for r in reqs]
        results = self.complete_many(derived, progress=progress)
        out: list[float | None] = []
        for res in results:
            if not res.ok or not isinstance(res.data, dict):
                out.append(None)
            elif "p_yes" in res.data:
                out.append(res.data["p_yes"])
            else:
                out.append(res.data["score"] / 10)
        return out

    # --- the Message Batches API --------------------------------------------------------------

    def run_batch(
        self,
        reqs: list[Request],
        poll_interval: float = 30.0,
        max_wait: float | None = None,
        sync_fallback: bool = True,
        orphan_wait: float = 60.0,
    ) -> list[Result]:
        """Answer many requests through the Message Batches API (half price).

        Local backend: no batches; the parallel path with a progress bar and ETA.
        Cached requests are not sent. Batches submitted by an earlier, interrupted run (their ids
        are in the cache DB) are polled and collected instead of being submitted again; one the
        API no longer knows (400/401/403/404) is marked lost and its items fall back. Items the
        batch could not answer usefully are re-sent through the worker pool if sync_fallback.
        A submit is retried on transient errors (never silently sent at full price); after a
        timed-out submit, the batch the API may have created anyway is looked up (for
        orphan_wait s) and adopted instead of submitting twice. With max_wait, returns after
        that many seconds; unfinished items come back as failures with error 'batch_pending'
        and are collected by the next call."""
        if not self.impl.supports_batches:
            return self.complete_many(reqs, progress=True)
        t_start = time.perf_counter()
        try:
            runner = BatchRunner(self._caller, self._run_pool, poll_interval, orphan_wait)
            return runner.run(reqs, max_wait, sync_fallback)
        finally:
            self.stats.busy_s += time.perf_counter() - t_start

    # --- reporting ----------------------------------------------------------------------------

    def usage_report(self) -> dict:
        """Backend, model, calls, cache hits, retries, failures, tokens, dollars, seconds."""
        return self._caller.usage_report()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._caller.save_usage()
        self.cache.close()
        self.impl.close()


def yes_request(r: Request, local: bool) -> Request:
    """The request yes_probability sends for a yes/no question: local, one token whose
    logprobs give P(yes) (mode yes_no); Claude, a 0-10 score as JSON (SCORE_SUFFIX)."""
    if local:
        return Request(
            prompt=r.prompt,
            system=r.system,
            template=r.template,
            version=r.version,
            schema=P_YES_SCHEMA,
            max_tokens=1,
            temperature=r.temperature,
            mode="yes_no",
            repeat=r.repeat,
            seed=r.seed,
        )
    return Request(
        prompt=r.prompt + SCORE_SUFFIX,
        system=r.system,
        template=r.template,
        version=r.version,
        schema=SCORE_SCHEMA,
        max_tokens=20,
        temperature=r.temperature,
        repeat=r.repeat,
        seed=r.seed,
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar (rate and ETA) when asked for (and there is work), else a no-op."""
    if not (enabled and total):
        return _NoBar()
    from config import progress

    return progress(total=total, desc=desc, unit="call", dynamic_ncols=True)
