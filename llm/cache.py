"""The SQLite cache of answers, submitted batch ids and usage: the only owner of its schema.

data/cache/llm_cache.sqlite ($LLM_CACHE_PATH; the folder is config.CACHE_DIR, which
$INSTACART_CACHE_DIR moves). Every answer is committed as soon as it arrives, keyed by
`cache_key`; first writer wins, so two processes sharing a cache both get the stored answer.
The layout is versioned (PRAGMA user_version): a file of another version is moved aside,
never misread. Readers outside the package use `Cache.cached_answers` (read-only).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

import config
from config import ConfigError

from .request import Request, Result

log = logging.getLogger("llm")

CACHE_SCHEMA_VERSION = 2


def cache_dir() -> Path:
    """config.CACHE_DIR (data/cache of the repo, or $INSTACART_CACHE_DIR), read at call time."""
    return Path(config.CACHE_DIR)


def default_cache_path() -> Path:
    return Path(os.environ.get("LLM_CACHE_PATH") or cache_dir() / "llm_cache.sqlite")


class Cache:
    """Persistent answers, submitted batch ids and usage in SQLite, safe for threads/processes.

    One connection per thread, WAL journal and autocommit: every answer is durable the moment
    put() returns, so a killed run loses nothing it was told. The layout is versioned with
    PRAGMA user_version: a file of another version is renamed aside (never misread)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._check_version()
            self._create()
        except (sqlite3.Error, OSError) as e:  # not a database, a folder, no permission...
            self.close()
            raise ConfigError(
                f"LLM cache {self.path} ($LLM_CACHE_PATH): cannot be used as an SQLite "
                f"cache ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            ) from None

    def _create(self) -> None:
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
        aside = self.path.with_name(f"{self.path.name}.v{version}-{utc_now().replace(':', '')}")
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
                utc_now(),
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

    @staticmethod
    def cached_answers(template: str, path: str | Path | None = None) -> list[dict]:
        """Every stored answer of one prompt template, read-only: no file is created, no
        layout moved aside, no API call. Dicts of model (the backend identity, e.g.
        "claude:<id>", "local:<sha256>"), version, prompt and data (the JSON answer, None for
        text). [] when the file (default: default_cache_path()) is missing or unreadable."""
        path = Path(path or default_cache_path())
        if not path.is_file():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT model, version, prompt, data FROM responses WHERE template=?", (template,)
            ).fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            db.close()
        return [
            {"model": m, "version": v, "prompt": p, "data": json.loads(d) if d else None}
            for m, v, p, d in rows
        ]

    def add_batch(self, batch_id: str, model: str, requests: dict[str, Request]) -> None:
        """Remember a submitted batch (and how to rebuild its requests) before polling it."""
        payload = json.dumps({k: asdict(r) for k, r in requests.items()})
        self._db().execute(
            "INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?,NULL)",
            (batch_id, model, payload, "submitted", utc_now()),
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
            (status, utc_now(), batch_id),
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
            (run_id, backend, model, started, utc_now(), json.dumps(report)),
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


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
