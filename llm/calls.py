"""One request's way to a usable, cached answer (`Caller`), shared by every LLM entry point.

send: one backend call with fail-fast bookkeeping; accept: account for a paid answer and
interpret it under the request's contract (jsonrepair.interpret); call: the first answer, then
one re-ask if it was unusable (with twice the max_tokens if it was truncated), stored in the
cache, else a counted failure. Usage is persisted in the cache DB after every paid call.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid

from .accounting import Stats
from .cache import Cache, utc_now
from .jsonrepair import interpret
from .request import BackendError, LLMFatal, Reply, Request, Result

log = logging.getLogger("llm")

MAX_TOKENS_CAP = 8192  # a truncated answer is re-asked with twice the budget, up to this


class Caller:
    """The single-call pipeline of one LLM client, for its backend `impl`. Thread-safe.

    Fatal faults (the backend's BackendError(fatal=True), or max_connection_failures connection
    failures in a row) stop the caller: that and every later send raise LLMFatal. Every other
    fault is a counted, logged, uncached failure. The API key (impl.key) is redacted from
    every message it writes."""

    def __init__(self, impl, stats: Stats, cache: Cache, max_connection_failures: int = 5):
        self.impl, self.stats, self.cache = impl, stats, cache
        self.identity = impl.identity
        self.max_connection_failures = max_connection_failures
        self._key = getattr(impl, "key", None)  # never logged, cached or printed
        self._lock = threading.Lock()
        self._conn_failures = 0
        self._fatal: str | None = None
        self._run_id = uuid.uuid4().hex[:12]
        self._started = utc_now()
        self._t0 = time.perf_counter()

    def redact(self, text: str) -> str:
        return text.replace(self._key, "<redacted>") if self._key else text

    def stop(self, message: str) -> LLMFatal:
        """Stop: returns LLMFatal(message) to raise; every later send raises it too (key
        redacted)."""
        self._fatal = self.redact(message)
        return LLMFatal(self._fatal)

    def failure(self, reason: str, detail: str = "") -> Result:
        """A counted, logged, uncached failure."""
        detail = self.redact(detail)
        self.stats.fail(reason)
        log.warning("LLM call failed: %s %s", reason, detail[:200])
        return Result(ok=False, error=f"{reason}: {detail}"[:500])

    def store(self, key: str, req: Request, res: Result, source: str) -> Result:
        """Cache a paid answer; a failed write still returns it (loudly)."""
        try:
            return self.cache.put(key, self.identity, req, res, source)
        except sqlite3.Error as e:
            self.stats.add(cache_write_failures=1)
            log.error(
                "could not store a paid answer in the cache %s (%s: %s); returning it uncached",
                self.cache.path,
                type(e).__name__,
                e,
            )
            return res

    def send(self, req: Request, max_tokens: int) -> Reply:
        """One backend call with fail-fast bookkeeping; raises BackendError or LLMFatal."""
        if self._fatal:
            raise LLMFatal(self._fatal)
        self.stats.add(api_calls=1)
        try:
            reply = self.impl.send(req, max_tokens)
        except BackendError as e:
            if e.fatal:
                raise self.stop(
                    f"LLM backend {self.impl.name} refused the request ({e.reason}): {e.detail}"
                ) from None
            if e.connection:
                with self._lock:
                    self._conn_failures += 1
                    n = self._conn_failures
                if n >= self.max_connection_failures:
                    raise self.stop(
                        f"LLM API unreachable: {n} connection failures in a row "
                        f"(last: {e.detail}); stopping"
                    ) from None
            raise
        finally:
            self.save_usage()
        self._conn_failures = 0
        return reply

    def _call(self, req: Request, key: str) -> Result:
        """The first answer, then one re-ask if it was unusable; stored, else a failure."""
        max_tokens = req.max_tokens
        res = None
        for attempt in range(2):  # the first answer, then one re-ask if it was unusable
            try:
                reply = self.send(req, max_tokens)
            except BackendError as e:
                return self.failure(e.reason, e.detail)
            res = self.accept(req, reply)
            self.save_usage()
            if res.ok:
                return self.store(key, req, res, "api")
            if attempt == 0:
                self.stats.add(reasks=1)
                if reply.stop_reason == "max_tokens":
                    max_tokens = min(2 * max_tokens, MAX_TOKENS_CAP)
                log.info("re-asking %s once: %s", req.template, res.error)
        return self.failure("invalid_output", res.error or "")

    def accept(self, req: Request, reply: Reply, batch: bool = False) -> Result:
        """Account for a paid answer and interpret it; the Result says if it is usable."""
        n_in, n_out = reply.input_tokens, reply.output_tokens
        if batch:
            self.stats.add(batch_input_tokens=n_in, batch_output_tokens=n_out)
        else:
            self.stats.add(input_tokens=n_in, output_tokens=n_out)
        self.stats.add(
            cache_creation_input_tokens=reply.cache_creation_input_tokens,
            cache_read_input_tokens=reply.cache_read_input_tokens,
        )
        data, text, repair, error = interpret(req, reply.text, reply.stop_reason)
        if repair and error is None:
            self.stats.repaired(repair)
        return Result(
            ok=error is None,
            text=text,
            data=data,
            repaired=bool(repair),
            repair=repair,
            error=error,
            stop_reason=reply.stop_reason,
            input_tokens=n_in,
            output_tokens=n_out,
        )

    def call(self, req: Request, key: str) -> Result:
        """The answer to one uncached request (safe in a worker thread): an unexpected error
        is a counted failure, not a crash. LLMFatal passes through: it stops the run."""
        try:
            return self._call(req, key)
        except LLMFatal:
            raise
        except Exception as e:  # noqa: BLE001 - a long run must survive one odd answer
            return self.failure(f"unexpected_{type(e).__name__}", str(e))

    def usage_report(self) -> dict:
        """Backend, model, calls, cache hits, retries, failures, tokens, dollars, seconds."""
        return {
            **self.impl.describe(),
            "label": self.impl.label,
            **self.stats.report(
                self.impl.model, self.impl.name != "local", time.perf_counter() - self._t0
            ),
        }

    def save_usage(self) -> None:
        """Persist usage_report() in the cache DB (table usage), so a killed run's spend is kept."""
        try:
            self.cache.save_usage(
                self._run_id, self.impl.name, self.impl.model, self._started, self.usage_report()
            )
        except sqlite3.Error as e:
            log.warning("could not persist usage (%s)", e)
