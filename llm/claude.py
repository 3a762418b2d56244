"""Claude: the Anthropic Messages API through the official SDK, and the Message Batches path.

- `ClaudeBackend.from_env(...)`: model = option, else $LLM_MODEL, else DEFAULT_MODEL; the key
  from the option, the environment, ./.env or ~/.env (ENV_FILES; a set variable wins over
  both); NoAPIKey without one unless cache_only. `backend == "fake"` when base_url is a
  loopback address (tests).
- Transient faults (429/529/5xx, connection errors, timeouts) are retried by the SDK, whose
  backoff honours retry-after (capped at RETRY_AFTER_CAP s, logged at WARNING); a counting
  transport counts attempts, retries, timeouts and connection errors. Fatal faults (401, 403,
  404 unknown model) are BackendError(fatal=True) with the API's message in one line.
- `BatchRunner`: LLM.run_batch for Claude (half price, resumable; see its docstring).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import anthropic
import httpx2
from dotenv import load_dotenv

import config

from .accounting import PRICES, Stats
from .request import (
    SAMPLING_API_VERSION,
    BackendError,
    NoAPIKey,
    Reply,
    Request,
    Result,
    cache_key,
    message_params,
    sdk_kwargs,
)

log = logging.getLogger("llm")

DEFAULT_MODEL = "claude-haiku-4-5-20251001"
# .env files with ANTHROPIC_API_KEY etc.: the first file wins; a set variable wins over both
ENV_FILES = [config.REPO / ".env", Path.home() / ".env"]
RETRY_AFTER_CAP = 30.0  # seconds: a longer retry-after from the API is cut to this
FATAL_STATUS = (401, 403, 404)  # bad key, no permission, unknown model: stop the run
LOST_STATUS = (400, 401, 403, 404)  # a batch id the API answers with these is gone for good
BATCH_MAX_REQUESTS = 10_000  # per submitted batch; the API allows 100k but smaller is kinder
BATCH_SUBMIT_TRIES = 3


def load_env() -> None:
    """Load ANTHROPIC_API_KEY etc. from ./.env then ~/.env, never overriding the environment."""
    for path in ENV_FILES:
        if Path(path).is_file():
            load_dotenv(path, override=False)


def llm_available() -> bool:
    """True when an API key is configured (environment or .env)."""
    load_env()
    return bool(os.environ.get("ANTHROPIC_API_KEY"))


# ---------------------------------------------------------------------------------------------
# The backend: send(request, max_tokens) -> Reply, or raise BackendError


class _CountingTransport(httpx2.BaseTransport):
    """Wraps the SDK's transport: counts attempts (and the SDK's retries among them, which it
    numbers), timeouts and connection errors; caps and logs retry-after."""

    def __init__(self, inner: httpx2.BaseTransport, stats: Stats, retry_after_cap: float):
        self.inner, self.stats, self.cap = inner, stats, retry_after_cap

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request):
        retry = request.headers.get("x-stainless-retry-count", "0")
        self.stats.add(http_requests=1, retries=int(retry != "0"))
        try:
            response = self.inner.handle_request(request)
        except httpx2.TimeoutException:
            self.stats.add(timeouts=1)
            raise
        except httpx2.TransportError:
            self.stats.add(connection_errors=1)
            raise
        ra = response.headers.get("retry-after")
        if ra is not None:
            try:
                wait = float(ra)
            except ValueError:
                wait = None
            if wait is not None:
                capped = min(wait, self.cap)
                log.warning(
                    "API answered %d with retry-after %.3gs%s",
                    response.status_code,
                    wait,
                    f" (capped at {self.cap:g}s)" if wait > self.cap else "",
                )
                if wait > self.cap:
                    response.headers["retry-after"] = f"{capped:g}"
                    response.headers.pop("retry-after-ms", None)
        return response


class ClaudeBackend:
    """The Anthropic Messages API through the official SDK."""

    supports_batches = True

    def __init__(
        self,
        model: str,
        key: str | None,
        base_url: str | None,
        stats: Stats,
        max_retries: int = 6,
        timeout: float = 60.0,
        retry_after_cap: float = RETRY_AFTER_CAP,
    ):
        self.model = model
        self.key = key
        url = base_url or os.environ.get("ANTHROPIC_BASE_URL")
        self.name = "fake" if url and _is_loopback(url) else "claude"
        self.identity = f"{self.name}:{model}"
        self.label = model
        self.workers = 8
        self.client = None
        if key is not None:
            http = anthropic.DefaultHttpxClient(timeout=timeout)
            http._transport = _CountingTransport(http._transport, stats, retry_after_cap)
            self.client = anthropic.Anthropic(
                api_key=key,
                base_url=base_url,
                max_retries=max_retries,
                timeout=timeout,
                http_client=http,
            )

    @classmethod
    def from_env(
        cls,
        model: str | None,
        api_key: str | None,
        base_url: str | None,
        stats: Stats,
        *,
        cache_only: bool = False,
        **kw,
    ) -> ClaudeBackend:
        """The backend for LLM(backend="claude"): model = option, else $LLM_MODEL, else
        DEFAULT_MODEL; key = option, else $ANTHROPIC_API_KEY (./.env, ~/.env). Raises NoAPIKey
        without a key unless cache_only (then only cached answers are served)."""
        load_env()
        model = model or os.environ.get("LLM_MODEL") or DEFAULT_MODEL
        key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
        if key is None and not cache_only:
            raise NoAPIKey(
                "no ANTHROPIC_API_KEY in the environment, ./.env or ~/.env; skipping the LLM arm"
            )
        if model not in PRICES:
            log.warning("no price for model %s: dollars will be reported as null", model)
        return cls(model, key, base_url, stats, **kw)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model}

    def send(self, req: Request, max_tokens: int) -> Reply:
        if self.client is None:
            raise BackendError("not_cached", "cache-only mode has no API key")
        try:
            msg = self.client.messages.create(
                **sdk_kwargs(message_params(self.model, req, max_tokens))
            )
        except anthropic.APIStatusError as e:
            raise BackendError(
                f"http_{e.status_code}", _api_message(e), fatal=e.status_code in FATAL_STATUS
            ) from None
        except anthropic.APIConnectionError as e:  # includes APITimeoutError
            raise BackendError("connection", type(e).__name__, connection=True) from None
        return reply_of(msg)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def reply_of(msg) -> Reply:
    """A Reply from an SDK Message (sync or batch), prompt-cache token fields included."""
    u = msg.usage
    return Reply(
        text="".join(b.text for b in msg.content if b.type == "text"),
        stop_reason=msg.stop_reason,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_creation_input_tokens=getattr(u, "cache_creation_input_tokens", 0) or 0,
        cache_read_input_tokens=getattr(u, "cache_read_input_tokens", 0) or 0,
    )


def _api_message(e: anthropic.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else body
    msg = (err or {}).get("message") or type(e).__name__
    return " ".join(str(msg).split())[:300]


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# The Message Batches API


class BatchRunner:
    """LLM.run_batch for Claude: the Message Batches API at half price, resumable.

    Works through one client's single-call pipeline `caller` (calls.Caller: its backend,
    cache, counters, accept/store/failure/stop) and its worker pool `run_pool` (the fallback).
    Cached requests are not sent. Batches submitted by an earlier, interrupted run (their ids
    are in the cache DB) are polled and collected instead of being submitted again; one the
    API no longer knows (400/401/403/404) is marked lost and its items fall back. A submit is
    retried on transient errors (never silently sent at full price); after a timed-out
    submit, the batch the API may have created anyway is looked up (for orphan_wait s) and
    adopted instead of submitting twice."""

    def __init__(self, caller, run_pool, poll_interval: float, orphan_wait: float):
        self.caller, self.run_pool = caller, run_pool
        self.cache, self.stats, self.identity = caller.cache, caller.stats, caller.identity
        self.model = caller.impl.model
        self.api = caller.impl.client  # the SDK client; None in cache-only mode
        self.poll_interval, self.orphan_wait = poll_interval, orphan_wait

    def run(self, reqs: list[Request], max_wait: float | None, sync_fallback: bool) -> list:
        """Results in request order; see LLM.run_batch."""
        for r in reqs:
            self.stats.saw(r)
        keys = [cache_key(self.identity, r) for r in reqs]
        missing = {k: r for k, r in zip(keys, reqs) if self.cache.get(k) is None}
        self.stats.add(cached=sum(1 for k in keys if k not in missing))
        if missing and self.api is None:
            return [
                self.cache.get(k) or self.caller.failure("not_cached", "cache-only mode")
                for k in keys
            ]
        pending, failed = self._submit_missing(missing)
        deadline = None if max_wait is None else time.monotonic() + max_wait
        for bid, breqs in pending:
            failed.update(self._finish(bid, breqs, deadline))
        return self._results(keys, missing, failed, sync_fallback)

    def _submit_missing(self, missing: dict[str, Request]) -> tuple[list, dict[str, str]]:
        """(pending batches [(id, {key: request})], {key: failure reason}): batches of an
        earlier run that hold missing items are resumed, the rest is submitted in chunks."""
        pending = [
            (bid, breqs)
            for bid, breqs in self.cache.pending_batches(self.identity)
            if breqs.keys() & missing.keys()
        ]
        covered = set().union(*(b.keys() for _, b in pending)) if pending else set()
        for bid, _ in pending:
            log.info("resuming batch %s submitted by an earlier run", bid)
        new = [k for k in missing if k not in covered]
        failed: dict[str, str] = {}
        for i in range(0, len(new), BATCH_MAX_REQUESTS):
            chunk = {k: missing[k] for k in new[i : i + BATCH_MAX_REQUESTS]}
            bid = self._submit(chunk)
            if bid is None:
                failed.update({k: "batch_submit" for k in chunk})
                continue
            pending.append((bid, chunk))
        return pending, failed

    def _finish(self, bid: str, breqs: dict[str, Request], deadline: float | None) -> dict:
        """Wait for one batch and collect it: {key: failure reason} for its unusable items."""
        try:
            state = self._wait(bid, deadline)
            if state == "ended":
                return self._collect(bid, breqs)
            if state == "lost":
                return {k: "batch_lost" for k in breqs}
        except anthropic.APIStatusError as e:
            if e.status_code in LOST_STATUS:
                self._lose(bid, e)
                return {k: "batch_lost" for k in breqs}
            log.warning("collecting batch %s failed (%s)", bid, type(e).__name__)
        except anthropic.APIError as e:  # the id stays stored: the next run collects it
            log.warning("collecting batch %s failed (%s)", bid, type(e).__name__)
        return {k: "batch_pending" for k in breqs}

    def _results(self, keys, missing, failed: dict[str, str], sync_fallback: bool) -> list:
        """Cached answers, failures, and the fallback items re-sent through the worker pool."""
        results: dict[str, Result] = {}
        fallback: dict[str, Request] = {}
        for k in keys:
            if k in results or k in fallback:
                continue
            if (hit := self.cache.get(k)) is not None:
                results[k] = hit
            elif k in missing:
                reason = failed.get(k, "no result")
                if reason == "batch_pending":
                    self.stats.add(batch_pending=1)
                    results[k] = Result(ok=False, error="batch_pending")
                elif reason == "batch_submit":
                    results[k] = self.caller.failure(
                        "batch_submit",
                        "the batch could not be submitted; rerun to retry at batch price",
                    )
                elif sync_fallback:
                    self.stats.add(reasks=1)
                    fallback[k] = missing[k]
                else:
                    results[k] = self.caller.failure("batch_item", reason)
        if fallback:
            log.info("re-sending %d batch items one by one", len(fallback))
            results.update(self.run_pool(fallback, progress=False))
        return [results[k] for k in keys]

    def _submit(self, chunk: dict[str, Request]) -> str | None:
        """Submit one batch; its id, or None after BATCH_SUBMIT_TRIES transient failures."""
        sampling = any(r.temperature is not None for r in chunk.values())
        body = [{"custom_id": k, "params": message_params(self.model, r)} for k, r in chunk.items()]
        for attempt in range(BATCH_SUBMIT_TRIES):
            if attempt:
                self.stats.add(batch_submit_retries=1)
                time.sleep(min(2.0**attempt, 30.0) * 0.25)
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
            try:
                # No SDK retry here: a retried create after a timeout could submit twice.
                batch = self.api.with_options(max_retries=0).messages.batches.create(
                    requests=body, extra_headers=SAMPLING_API_VERSION if sampling else None
                )
            except anthropic.APIStatusError as e:
                if e.status_code in FATAL_STATUS:
                    raise self.caller.stop(
                        f"the batch API refused the request "
                        f"(http_{e.status_code}): {_api_message(e)}"
                    ) from None
                if e.status_code == 400:
                    log.warning("batch of %d rejected: %s", len(chunk), _api_message(e))
                    return None
                log.warning(
                    "submitting a batch of %d failed (http_%d); retrying", len(chunk), e.status_code
                )
                continue
            except anthropic.APIConnectionError as e:
                log.warning(
                    "submitting a batch of %d: %s; looking for a batch the API may "
                    "have created anyway",
                    len(chunk),
                    type(e).__name__,
                )
                bid = find_orphan(self.api, self.cache, len(chunk), since, self.orphan_wait)
                if bid is None:
                    continue
                log.warning("adopted batch %s created by the timed-out submit", bid)
            else:
                bid = batch.id
            self.cache.add_batch(bid, self.identity, chunk)
            self.caller.save_usage()
            log.info("submitted batch %s with %d requests", bid, len(chunk))
            return bid
        log.warning(
            "submitting a batch of %d failed %d times: its items are failures (no "
            "silent full-price fallback)",
            len(chunk),
            BATCH_SUBMIT_TRIES,
        )
        return None

    def _lose(self, batch_id: str, e: Exception) -> None:
        self.stats.add(batches_lost=1)
        self.cache.mark_batch(batch_id, "lost")
        detail = _api_message(e) if isinstance(e, anthropic.APIStatusError) else str(e)
        detail = self.caller.redact(detail)
        log.warning("batch %s is lost (%s): its items fall back", batch_id, detail)

    def _wait(self, batch_id: str, deadline: float | None) -> str:
        """Poll until the batch has ended ("ended"), is unknown to the API ("lost"), or the
        deadline passes ("pending")."""
        while True:
            try:
                b = self.api.messages.batches.retrieve(batch_id)
            except anthropic.APIStatusError as e:
                if e.status_code in LOST_STATUS:  # final: no poll will ever succeed
                    self._lose(batch_id, e)
                    return "lost"
                log.warning(
                    "polling batch %s failed (%s); will poll again", batch_id, type(e).__name__
                )
            except anthropic.APIError as e:  # still retrying; the id is safe in the cache
                log.warning(
                    "polling batch %s failed (%s); will poll again", batch_id, type(e).__name__
                )
            else:
                c = b.request_counts
                finished = c.succeeded + c.errored + c.canceled + c.expired
                log.info(
                    "batch %s: %s, %d/%d done",
                    batch_id,
                    b.processing_status,
                    finished,
                    finished + c.processing,
                )
                if b.processing_status == "ended":
                    return "ended"
            if deadline is not None and time.monotonic() > deadline:
                log.warning("batch %s still running; a later run will collect it", batch_id)
                return "pending"
            time.sleep(self.poll_interval)

    def _collect(self, batch_id: str, breqs: dict[str, Request]) -> dict[str, str]:
        """Cache every usable answer of an ended batch; returns {key: reason} for the rest."""
        failed = {}
        for line in self.api.messages.batches.results(batch_id):
            key, result = line.custom_id, line.result
            req = breqs.get(key)
            if req is None or self.cache.get(key) is not None:
                continue  # not ours, or cached before an interruption
            self.stats.add(batch_requests=1)
            if result.type != "succeeded":
                failed[key] = f"batch_{result.type}"
                continue
            res = self.caller.accept(req, reply_of(result.message), batch=True)
            if res.ok:
                self.caller.store(key, req, res, "batch")
            else:
                failed[key] = res.error or "invalid"
        self.cache.mark_batch(batch_id, "collected")
        self.caller.save_usage()
        if failed:
            log.warning(
                "batch %s: %d items without a usable answer (%s)",
                batch_id,
                len(failed),
                ", ".join(sorted(set(failed.values())))[:200],
            )
        return failed


def find_orphan(api, cache, n: int, since: dt.datetime, wait: float) -> str | None:
    """A batch of n requests created since `since` that `cache` does not know (the one a
    timed-out submit may have created anyway), looked for during `wait` s; else None."""
    deadline = time.monotonic() + wait
    while True:
        try:
            for b in api.messages.batches.list(limit=20):
                c = b.request_counts
                total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                if total == n and b.created_at >= since and not cache.known_batch(b.id):
                    return b.id
                if b.created_at < since:
                    break
        except anthropic.APIError as e:
            log.warning("listing batches failed (%s)", type(e).__name__)
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(1.0, max(0.05, wait / 10)))
