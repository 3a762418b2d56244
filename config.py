"""Project settings every module shares: where things live, the seeds, the two error types
that end a run with one line, a short content hash, and the logging set-up.

The bottom floor of the project: it imports nothing from it. Paths are read as module
attributes (`config.CACHE_DIR`) at call time, so a test can point them elsewhere with
monkeypatch.setattr(config, "CACHE_DIR", ...).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

# ----------------------------------------------------------------------------
# seeds
SPLIT_SEED = 42  # the project's one split seed: every experiment scores the same rows
RANDOM_SEED = 42  # default of every other seeded draw (sample, training, bootstrap, folds)

# ----------------------------------------------------------------------------
# where things live
REPO = Path(__file__).resolve().parent
DATA_ENV = "INSTACART_DATA_DIR"  # a directory of Kaggle CSVs, if set
CACHE_ENV = "INSTACART_CACHE_DIR"  # where loaded data, saved towers and the LLM cache go
KAGGLE_DIR = REPO / "data" / "instacart"  # where a real Kaggle download may be unpacked
SAMPLE_DIR = REPO / "data" / "sample"  # where the generated sample is written on first use
CACHE_DIR = Path(os.environ.get(CACHE_ENV, REPO / "data" / "cache"))
RESULTS_DIR = REPO / "results"


# ----------------------------------------------------------------------------
# errors that end a run with one line and exit code 2 (experiment.main_guard)
class FatalError(Exception):
    """An error that ends a run with one line and exit code 2 (no traceback). Subclasses
    say whose fault it is; the LLM layer's fatal errors (bad key, unknown model, ...)
    derive from it too."""


class DataError(FatalError):
    """A problem with the input data, reported as one line (no traceback)."""


class ConfigError(FatalError):
    """A bad option or configuration value (not a data problem), reported as one line."""


def write_atomic(path: str | Path, data: str | bytes, replace: bool = True) -> Path:
    """Write `data` (text, UTF-8, or bytes) to `path` through a uniquely named temporary
    file in the same folder, moved into place: a reader sees the old file or the whole new
    one, never a part, and two writers never share a temporary file. With replace=False an
    existing file is never replaced: FileExistsError (the move is a hard link, which fails
    when the name is taken, so two writers cannot both claim it)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are for everyone to read
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------
# content hashes: the one short-hash helper behind every cache key
def short_hash(data: str | bytes, n: int = 16) -> str:
    """The first `n` hex digits of the sha256 of `data` (text is UTF-8 encoded)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return hashlib.sha256(raw).hexdigest()[:n]


# ----------------------------------------------------------------------------
# logging, once for every script
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_log_handlers: list[logging.Handler] = []


# Progress bars: on a terminal they redraw at tqdm's pace; into a log file (run_overnight.sh,
# nohup) every redraw is kept, so they redraw at most every LOG_PROGRESS_S seconds there.
LOG_PROGRESS_S = 60.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def progress(iterable=None, **kw):
    """A tqdm bar that does not flood a log: on a terminal as usual, elsewhere (stderr not a
    TTY) one redraw per LOG_PROGRESS_S seconds at most. Pass postfixes with refresh=False."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kw.setdefault("mininterval", LOG_PROGRESS_S)
        kw.setdefault("maxinterval", LOG_PROGRESS_S * 2)
    return tqdm(iterable, **kw)


def add_log_level_arg(parser) -> None:
    """--log-level (default $LOG_LEVEL, else INFO): every CLI of the project has it."""
    default = (os.environ.get("LOG_LEVEL") or "INFO").upper()
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default if default in LOG_LEVELS else "INFO",
        help=f"log level (default $LOG_LEVEL, else INFO; now: {default})",
    )


def apply_log_level(args) -> None:
    """Sets the root logger's level from a parsed --log-level."""
    logging.getLogger().setLevel(args.log_level)


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
    for noisy in ("httpx", "httpx2", "httpcore", "anthropic", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main_guard(main):
    """Run a script's main(); turn a config.FatalError (DataError, ConfigError, the LLM
    layer's fatal errors) into a one-line message, exit 2.
    Logging is configured here, once for every script ($LOG_LEVEL, default INFO), so the
    lines of llm/ and the other modules reach the console and the overnight logs."""
    setup_logging(level=os.environ.get("LOG_LEVEL", "INFO"))
    try:
        return main()
    except FatalError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
