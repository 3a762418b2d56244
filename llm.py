"""One Claude client for every experiment: response cache, retries, JSON output, batches, cost.

    import llm
    from evals.prompt_registry import TEMPLATES
    client = llm.LLM()                      # raises llm.NoAPIKey (one line) without a key
    reqs = [TEMPLATES["item_description"].request(product_name=..., aisle=..., department=...)]
    results = client.complete_many(reqs)    # or client.run_batch(reqs): half price, resumable
    results_json["llm"] = client.usage_report()

Design, top to bottom:
- A `Request` is a rendered prompt plus the template name/version it came from; this module
  never imports the prompt registry (evals/ sits on top of it).
- Every answer is committed to a SQLite cache as soon as it arrives, keyed by model, template
  version, full prompt text and decoding parameters. A killed run resumes and pays only for what
  is missing; an identical second run makes no API call. Failures are never cached.
- Transient faults (429 with retry-after, 529, 5xx, connection errors, timeouts) are retried by
  the SDK, whose backoff honours retry-after; we only count the retries (httpx event hook).
- JSON answers are validated against the template's schema; safe repairs (code fences, prose
  around the object, closing a truncated list of complete items) are applied, else the call is
  re-asked once (with twice the max_tokens if it was truncated), else it is a counted failure.
  Nothing raises out of a long run: every failure is logged in one line and counted.
- `usage_report()` gives calls, cache hits, retries, failures, tokens and dollars for results
  JSON. The API key never appears in logs, cache, results or printed errors.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anthropic
from dotenv import load_dotenv

log = logging.getLogger("llm")

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = "claude-haiku-4-5-20251001"
DEFAULT_CACHE_PATH = ROOT / "cache" / "llm_cache.sqlite"
ENV_FILES = [ROOT / ".env", Path.home() / ".env"]  # first file wins; a set variable wins over both
# Dollars per million (input, output) tokens; the Message Batches API bills half of this.
PRICES = {
    "claude-haiku-4-5-20251001": (1.0, 5.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
BATCH_DISCOUNT = 0.5
BATCH_MAX_REQUESTS = 10_000  # per submitted batch; the API allows 100k but smaller is kinder
MAX_TOKENS_CAP = 8192  # a truncated answer is re-asked with twice the budget, up to this
# API version 2026-10-21 (what SDK 2.x sends) rejects temperature/top_p/top_k with a 400, even
# at default values, and the SDK has dropped them. So by default no temperature is sent (the
# cache is what makes reruns identical). A request that sets one is sent under the last API
# version that accepts sampling parameters.
DEFAULT_TEMPERATURE: float | None = None
SAMPLING_API_VERSION = {"anthropic-version": "2023-06-01"}


class NoAPIKey(RuntimeError):
    """No ANTHROPIC_API_KEY: experiments catch this and skip their LLM arm."""


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
# Requests, results and the cache key


@dataclass(frozen=True)
class Request:
    """One prompt to send. `template`/`version` say which registry prompt it was rendered from."""

    prompt: str
    system: str = ""
    template: str = "adhoc"
    version: str = ""
    schema: dict | None = field(default=None, hash=False)
    max_tokens: int = 512
    temperature: float | None = DEFAULT_TEMPERATURE


@dataclass
class Result:
    """The answer to one Request. `data` is the validated JSON (None for text prompts/failures)."""

    ok: bool
    text: str | None = None
    data: Any = None
    cached: bool = False
    repaired: bool = False
    error: str | None = None
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


def cache_key(model: str, req: Request) -> str:
    """sha256 of everything that determines the answer; also used as the batch custom_id."""
    blob = json.dumps({"model": model, "template": req.template, "version": req.version,
                       "system": req.system, "prompt": req.prompt, "schema": req.schema,
                       "max_tokens": req.max_tokens, "temperature": req.temperature},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def message_params(model: str, req: Request, max_tokens: int | None = None) -> dict:
    """Messages API body for a request (shared by the sync and the batch path)."""
    params = {"model": model, "max_tokens": max_tokens or req.max_tokens,
              "messages": [{"role": "user", "content": req.prompt}]}
    if req.system:
        params["system"] = req.system
    if req.temperature is not None:
        params["temperature"] = req.temperature
    return params


def sdk_kwargs(params: dict) -> dict:
    """messages.create() kwargs: the SDK has no `temperature`, so it rides in extra_body."""
    params = dict(params)
    if "temperature" in params:
        extra = {"extra_body": {"temperature": params.pop("temperature")},
                 "extra_headers": SAMPLING_API_VERSION}
        return {**params, **extra}
    return params


# ---------------------------------------------------------------------------------------------
# JSON: extraction, safe repair of truncated output, and a small JSON-schema validator


def _closed_truncation(s: str) -> str | None:
    """Close JSON cut off inside a list: keep the list's complete items, close every bracket.

    Only the position just before a comma inside an array is a safe cut: everything before it
    is a complete item. Returns None when no such cut exists (nothing safe to keep)."""
    stack, in_str, esc, cut = [], False, False, None
    for i, ch in enumerate(s):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}":
            if not stack:
                return None
            stack.pop()
            if not stack:
                return None  # the object closed: this is not a truncation we can fix
        elif ch == "," and stack and stack[-1] == "[":
            cut = (i, list(stack))
    if cut is None:
        return None
    i, open_brackets = cut
    return s[:i] + "".join("]" if b == "[" else "}" for b in reversed(open_brackets))


def validate(value: Any, schema: dict, path: str = "$") -> str | None:
    """Check value against the JSON-schema subset the templates use; returns an error or None."""
    kinds = {"object": dict, "array": list, "string": str, "integer": int,
             "number": (int, float), "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind and (not isinstance(value, kinds[kind])
                 or (kind in ("integer", "number") and isinstance(value, bool))):
        return f"{path}: expected {kind}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} not in enum"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{path}: missing required key {key!r}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False and value.keys() - props.keys():
            return f"{path}: unexpected keys {sorted(value.keys() - props.keys())}"
        for key, sub in props.items():
            if key in value and (err := validate(value[key], sub, f"{path}.{key}")):
                return err
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{path}: fewer than {schema['minItems']} items"
        if len(value) > schema.get("maxItems", len(value)):
            return f"{path}: more than {schema['maxItems']} items"
        for i, item in enumerate(value):
            if "items" in schema and (err := validate(item, schema["items"], f"{path}[{i}]")):
                return err
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        return f"{path}: shorter than {schema['minLength']}"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            value < schema.get("minimum", value) or value > schema.get("maximum", value)):
        return f"{path}: {value} out of range"
    return None


def parse_json(text: str, schema: dict, truncated: bool) -> tuple[Any, bool, str | None]:
    """(data, repaired, error) for a model answer that should be one JSON object.

    Tried in order: the text as is; the object inside code fences or prose; the same with
    trailing commas removed; and, for truncated output only, the truncated list closed."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    inner = stripped[start:end + 1] if 0 <= start < end else ""
    candidates = [stripped, inner, re.sub(r",\s*([\]}])", r"\1", inner)]
    if truncated and start >= 0:
        candidates.append(_closed_truncation(stripped[start:]))
    error = "no JSON object in the answer"
    for n, candidate in enumerate(candidates):
        if not candidate:
            continue
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as e:
            error = f"invalid JSON ({e.msg} at char {e.pos})"
            continue
        if (err := validate(data, schema)) is None:
            return data, n > 0, None
        error = f"schema: {err}"
    return None, False, ("truncated; " if truncated else "") + error


def trim_text(text: str) -> str | None:
    """Cut truncated prose back to its last complete sentence, or None if there is none."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[-1]] if ends else None


def interpret(req: Request, text: str, stop_reason: str | None) -> tuple[Any, str | None, bool,
                                                                         str | None]:
    """(data, final text, repaired, error) for a raw answer, under the request's contract."""
    truncated = stop_reason == "max_tokens"
    if req.schema is not None:
        data, repaired, error = parse_json(text, req.schema, truncated)
        return data, text, repaired, error
    if not text.strip():
        return None, None, False, "empty answer"
    if truncated:
        trimmed = trim_text(text)
        return None, trimmed, True, None if trimmed else "truncated with no complete sentence"
    return None, text, False, None


# ---------------------------------------------------------------------------------------------
# The SQLite cache


class Cache:
    """Persistent answers (and submitted batch ids) in SQLite, safe for many threads/processes.

    One connection per thread, WAL journal and autocommit: every answer is durable the moment
    put() returns, so a killed run loses nothing it was told."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("""CREATE TABLE IF NOT EXISTS responses (
            key TEXT PRIMARY KEY, model TEXT, template TEXT, version TEXT, system TEXT,
            prompt TEXT, params TEXT, text TEXT, data TEXT, stop_reason TEXT, repaired INTEGER,
            input_tokens INTEGER, output_tokens INTEGER, source TEXT, created_at TEXT)""")
        db.execute("""CREATE TABLE IF NOT EXISTS batches (
            batch_id TEXT PRIMARY KEY, model TEXT, requests TEXT, status TEXT,
            submitted_at TEXT, collected_at TEXT)""")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    def get(self, key: str) -> Result | None:
        row = self._db().execute("SELECT text, data, stop_reason, repaired, input_tokens, "
                                 "output_tokens FROM responses WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        text, data, stop, repaired, n_in, n_out = row
        return Result(ok=True, text=text, data=json.loads(data) if data else None, cached=True,
                      repaired=bool(repaired), stop_reason=stop, input_tokens=n_in,
                      output_tokens=n_out)

    def put(self, key: str, model: str, req: Request, res: Result, source: str) -> None:
        """Store a successful answer; failures must never reach here."""
        assert res.ok, "failures are never cached"
        self._db().execute(
            "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, model, req.template, req.version, req.system, req.prompt,
             json.dumps({"max_tokens": req.max_tokens, "temperature": req.temperature}),
             res.text, None if res.data is None else json.dumps(res.data), res.stop_reason,
             int(res.repaired), res.input_tokens, res.output_tokens, source, _now()))

    def count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def add_batch(self, batch_id: str, model: str, requests: dict[str, Request]) -> None:
        """Remember a submitted batch (and how to rebuild its requests) before polling it."""
        payload = json.dumps({k: asdict(r) for k, r in requests.items()})
        self._db().execute("INSERT INTO batches VALUES (?,?,?,?,?,NULL)",
                           (batch_id, model, payload, "submitted", _now()))

    def pending_batches(self, model: str) -> list[tuple[str, dict[str, Request]]]:
        rows = self._db().execute("SELECT batch_id, requests FROM batches WHERE model=? AND "
                                  "status='submitted' ORDER BY submitted_at", (model,))
        return [(bid, {k: Request(**r) for k, r in json.loads(reqs).items()})
                for bid, reqs in rows.fetchall()]

    def mark_batch(self, batch_id: str, status: str) -> None:
        self._db().execute("UPDATE batches SET status=?, collected_at=? WHERE batch_id=?",
                           (status, _now(), batch_id))

    def close(self) -> None:
        with self._lock:
            for db in self._conns:
                db.close()
            self._conns.clear()
        self._local = threading.local()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Accounting


class Stats:
    """Thread-safe counters behind usage_report()."""

    FIELDS = ("requests", "cached", "api_calls", "http_requests", "retries", "reasks",
              "repaired", "failed", "input_tokens", "output_tokens", "batch_requests",
              "batch_input_tokens", "batch_output_tokens", "batch_pending")

    def __init__(self):
        self._lock = threading.Lock()
        self.n = Counter({f: 0 for f in self.FIELDS})
        self.failures: Counter = Counter()  # reason -> count
        self.prompt_versions: dict[str, str] = {}

    def add(self, **counts: int) -> None:
        with self._lock:
            self.n.update(counts)

    def fail(self, reason: str) -> None:
        with self._lock:
            self.n["failed"] += 1
            self.failures[reason] += 1

    def saw(self, req: Request) -> None:
        with self._lock:
            self.n["requests"] += 1
            if req.version:
                self.prompt_versions[req.template] = req.version


def dollars(model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float | None:
    """Cost of the tokens at list price (half for batches); None for a model not in PRICES."""
    if model not in PRICES:
        return None
    p_in, p_out = PRICES[model]
    cost = (input_tokens * p_in + output_tokens * p_out) / 1e6
    return cost * (BATCH_DISCOUNT if batch else 1.0)


# ---------------------------------------------------------------------------------------------
# The client


class LLM:
    """The one Claude client. Thread-safe; use one per experiment run and report its usage.

    model: option, else $LLM_MODEL, else DEFAULT_MODEL. cache_path: option, else
    $LLM_CACHE_PATH, else cache/llm_cache.sqlite. cache_only=True works without a key and
    answers from the cache alone (misses are counted failures). base_url defaults to the SDK's
    own ($ANTHROPIC_BASE_URL, else the public API)."""

    def __init__(self, model: str | None = None, *, cache_path: str | Path | None = None,
                 api_key: str | None = None, base_url: str | None = None,
                 max_retries: int = 6, timeout: float = 60.0, workers: int = 8,
                 cache_only: bool = False):
        load_env()
        self.model = model or os.environ.get("LLM_MODEL") or DEFAULT_MODEL
        self._key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
        if self._key is None and not cache_only:
            raise NoAPIKey("no ANTHROPIC_API_KEY in the environment, ./.env or ~/.env; "
                           "skipping the LLM arm")
        if self.model not in PRICES:
            log.warning("no price for model %s: dollars will be reported as null", self.model)
        # One long-lived pool: its threads (and their SQLite connections) are reused by every
        # complete_many call, so a long experiment does not pile up connections.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm")
        self.cache = Cache(cache_path or os.environ.get("LLM_CACHE_PATH") or DEFAULT_CACHE_PATH)
        self.stats = Stats()
        self.client = None
        if self._key is not None:
            http = anthropic.DefaultHttpxClient(timeout=timeout,
                                                event_hooks={"request": [self._on_http_request]})
            self.client = anthropic.Anthropic(api_key=self._key, base_url=base_url,
                                              max_retries=max_retries, timeout=timeout,
                                              http_client=http)

    def __repr__(self) -> str:  # never show the key
        return f"LLM(model={self.model!r}, cache={str(self.cache.path)!r})"

    def _on_http_request(self, request) -> None:
        """Count every HTTP attempt, and the SDK's retries among them (it numbers its tries)."""
        retry = request.headers.get("x-stainless-retry-count", "0")
        self.stats.add(http_requests=1, retries=int(retry != "0"))

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "<redacted>") if self._key else text

    def _failure(self, reason: str, detail: str = "") -> Result:
        """A counted, logged, uncached failure."""
        detail = self._redact(detail)
        self.stats.fail(reason)
        log.warning("LLM call failed: %s %s", reason, detail[:200])
        return Result(ok=False, error=f"{reason}: {detail}"[:500])

    # --- one call ---------------------------------------------------------------------------

    def complete(self, req: Request) -> Result:
        """Answer one request: from the cache, else from the API (never raises on API faults)."""
        self.stats.saw(req)
        key = cache_key(self.model, req)
        if (hit := self.cache.get(key)) is not None:
            self.stats.add(cached=1)
            return hit
        return self._safe_call(req, key)

    def _call_api(self, req: Request, key: str) -> Result:
        if self.client is None:
            return self._failure("not_cached", "cache-only mode has no API key")
        max_tokens = req.max_tokens
        for attempt in range(2):  # the first answer, then one re-ask if it was unusable
            self.stats.add(api_calls=1)
            try:
                msg = self.client.messages.create(
                    **sdk_kwargs(message_params(self.model, req, max_tokens)))
            except anthropic.APIStatusError as e:
                return self._failure(f"http_{e.status_code}", type(e).__name__)
            except anthropic.APIConnectionError as e:  # includes APITimeoutError
                return self._failure("connection", type(e).__name__)
            res = self._accept(req, msg)
            if res.ok:
                self.cache.put(key, self.model, req, res, "api")
                return res
            if attempt == 0:
                self.stats.add(reasks=1)
                if msg.stop_reason == "max_tokens":
                    max_tokens = min(2 * max_tokens, MAX_TOKENS_CAP)
                log.info("re-asking %s once: %s", req.template, res.error)
        return self._failure("invalid_output", res.error or "")

    def _accept(self, req: Request, msg, batch: bool = False) -> Result:
        """Account for a paid answer and interpret it; the Result says if it is usable."""
        n_in, n_out = msg.usage.input_tokens, msg.usage.output_tokens
        if batch:
            self.stats.add(batch_input_tokens=n_in, batch_output_tokens=n_out)
        else:
            self.stats.add(input_tokens=n_in, output_tokens=n_out)
        raw = "".join(b.text for b in msg.content if b.type == "text")
        data, text, repaired, error = interpret(req, raw, msg.stop_reason)
        if repaired and error is None:
            self.stats.add(repaired=1)
        return Result(ok=error is None, text=text, data=data, repaired=repaired, error=error,
                      stop_reason=msg.stop_reason, input_tokens=n_in, output_tokens=n_out)

    # --- many calls -------------------------------------------------------------------------

    def complete_many(self, reqs: list[Request], progress: bool = False) -> list[Result]:
        """Answer many requests, at most `workers` at a time; results are in request order.

        Cache hits are served first; duplicate requests are sent once."""
        for r in reqs:
            self.stats.saw(r)
        keys = [cache_key(self.model, r) for r in reqs]
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
            log.info("%d requests: %d cached, %d to send", len(reqs), len(reqs) - len(todo),
                     len(todo))
        bar = _progress(len(todo), progress, "llm")
        futures = {k: self._pool.submit(self._safe_call, r, k) for k, r in todo.items()}
        try:
            for k, fut in futures.items():
                done[k] = fut.result()
                bar.update(1)
        except BaseException:  # Ctrl-C: drop the queued calls; answered ones are cached
            for fut in futures.values():
                fut.cancel()
            raise
        finally:
            bar.close()
        return [done[k] for k in keys]

    def _safe_call(self, req: Request, key: str) -> Result:
        """_call_api for a worker thread: an unexpected error is a counted failure, not a crash."""
        try:
            return self._call_api(req, key)
        except Exception as e:  # noqa: BLE001 - a long run must survive one odd answer
            return self._failure(f"unexpected_{type(e).__name__}", str(e))

    # --- the Message Batches API --------------------------------------------------------------

    def run_batch(self, reqs: list[Request], poll_interval: float = 30.0,
                  max_wait: float | None = None, sync_fallback: bool = True) -> list[Result]:
        """Answer many requests through the Message Batches API (half price).

        Cached requests are not sent. Batches submitted by an earlier, interrupted run (their ids
        are in the cache DB) are polled and collected instead of being submitted again. Items
        the batch could not answer usefully are re-sent one by one if sync_fallback.
        With max_wait, returns after that many seconds; unfinished items come back as
        failures with error 'batch_pending' and are collected by the next call."""
        for r in reqs:
            self.stats.saw(r)
        keys = [cache_key(self.model, r) for r in reqs]
        missing = {k: r for k, r in zip(keys, reqs) if self.cache.get(k) is None}
        self.stats.add(cached=sum(1 for k in keys if k not in missing))
        if missing and self.client is None:
            return [self.cache.get(k) or self._failure("not_cached", "cache-only mode")
                    for k in keys]
        pending = [(bid, breqs) for bid, breqs in self.cache.pending_batches(self.model)
                   if breqs.keys() & missing.keys()]
        covered = set().union(*(b.keys() for _, b in pending)) if pending else set()
        for bid, _ in pending:
            log.info("resuming batch %s submitted by an earlier run", bid)
        new = [k for k in missing if k not in covered]
        failed: dict[str, str] = {}
        for i in range(0, len(new), BATCH_MAX_REQUESTS):
            chunk = {k: missing[k] for k in new[i:i + BATCH_MAX_REQUESTS]}
            sampling = any(r.temperature is not None for r in chunk.values())
            try:
                batch = self.client.messages.batches.create(requests=[
                    {"custom_id": k, "params": message_params(self.model, r)}
                    for k, r in chunk.items()],
                    extra_headers=SAMPLING_API_VERSION if sampling else None)
            except anthropic.APIError as e:
                log.warning("submitting a batch of %d failed (%s)", len(chunk), type(e).__name__)
                failed.update({k: "batch_submit" for k in chunk})
                continue
            self.cache.add_batch(batch.id, self.model, chunk)
            log.info("submitted batch %s with %d requests", batch.id, len(chunk))
            pending.append((batch.id, chunk))
        deadline = None if max_wait is None else time.monotonic() + max_wait
        for bid, breqs in pending:
            try:
                if self._wait_batch(bid, poll_interval, deadline):
                    failed.update(self._collect_batch(bid, breqs))
                    continue
            except anthropic.APIError as e:  # the id stays stored: the next run collects it
                log.warning("collecting batch %s failed (%s)", bid, type(e).__name__)
            failed.update({k: "batch_pending" for k in breqs})
        results = {}
        for k in keys:
            if (hit := self.cache.get(k)) is not None:
                results[k] = hit
            elif k in missing and k not in results:
                if failed.get(k) == "batch_pending":
                    self.stats.add(batch_pending=1)
                    results[k] = Result(ok=False, error="batch_pending")
                elif sync_fallback:
                    self.stats.add(reasks=1)
                    results[k] = self._safe_call(missing[k], k)
                else:
                    results[k] = self._failure("batch_item", failed.get(k, "no result"))
        return [results[k] for k in keys]

    def _wait_batch(self, batch_id: str, poll_interval: float, deadline: float | None) -> bool:
        """Poll until the batch has ended (True) or the deadline passes (False)."""
        while True:
            try:
                b = self.client.messages.batches.retrieve(batch_id)
            except anthropic.APIError as e:  # still retrying; the id is safe in the cache
                log.warning("polling batch %s failed (%s); will poll again", batch_id,
                            type(e).__name__)
            else:
                c = b.request_counts
                finished = c.succeeded + c.errored + c.canceled + c.expired
                log.info("batch %s: %s, %d/%d done", batch_id, b.processing_status, finished,
                         finished + c.processing)
                if b.processing_status == "ended":
                    return True
            if deadline is not None and time.monotonic() > deadline:
                log.warning("batch %s still running; a later run will collect it", batch_id)
                return False
            time.sleep(poll_interval)

    def _collect_batch(self, batch_id: str, breqs: dict[str, Request]) -> dict[str, str]:
        """Cache every usable answer of an ended batch; returns {key: reason} for the rest."""
        failed = {}
        for line in self.client.messages.batches.results(batch_id):
            key, result = line.custom_id, line.result
            req = breqs.get(key)
            if req is None or self.cache.get(key) is not None:
                continue  # not ours, or cached before an interruption
            self.stats.add(batch_requests=1)
            if result.type != "succeeded":
                failed[key] = f"batch_{result.type}"
                continue
            res = self._accept(req, result.message, batch=True)
            if res.ok:
                self.cache.put(key, self.model, req, res, "batch")
            else:
                failed[key] = res.error or "invalid"
        self.cache.mark_batch(batch_id, "collected")
        if failed:
            log.warning("batch %s: %d items without a usable answer (%s)", batch_id,
                        len(failed), ", ".join(sorted(set(failed.values())))[:200])
        return failed

    # --- reporting ----------------------------------------------------------------------------

    def usage_report(self) -> dict:
        """Calls, cache hits, retries, failures, tokens and dollars, for a results JSON."""
        n = dict(self.stats.n)
        cost = dollars(self.model, n["input_tokens"], n["output_tokens"])
        batch_cost = dollars(self.model, n["batch_input_tokens"], n["batch_output_tokens"], True)
        total = None if cost is None else round(cost + batch_cost, 6)
        return {"model": self.model, **n, "failure_reasons": dict(self.stats.failures),
                "cost_usd": None if cost is None else round(cost, 6),
                "batch_cost_usd": None if batch_cost is None else round(batch_cost, 6),
                "total_cost_usd": total, "prompt_versions": dict(self.stats.prompt_versions)}

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self.cache.close()
        if self.client is not None:
            self.client.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar when asked for (and there is work), else a no-op."""
    if not (enabled and total):
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="call")
