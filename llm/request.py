"""Requests, results, the backend interface and the cache key: the bottom of the package.

A `Request` is a rendered prompt plus the template name/version it came from; the package
never imports the prompt registry (prompts.py sits on top of it). `cache_key` hashes
everything that determines an answer; `message_params` / `sdk_kwargs` turn a request into a
Messages API body (shared by the sync and the batch path). Backends answer
`send(request, max_tokens) -> Reply` or raise `BackendError`. The errors that end a run
(NoAPIKey, LLMFatal, ModelError) are config.FatalError: a script's main_guard prints them as
one line and exits 2; their messages never hold the API key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from config import FatalError

# API version 2026-10-21 (what SDK 2.x sends) rejects temperature/top_p/top_k with a 400, even
# at default values, and the SDK has dropped them. So by default no temperature is sent (the
# cache is what makes reruns identical). A request that sets one is sent under the last API
# version that accepts sampling parameters.
DEFAULT_TEMPERATURE: float | None = None
SAMPLING_API_VERSION = {"anthropic-version": "2023-06-01"}


class NoAPIKey(FatalError):
    """No ANTHROPIC_API_KEY for an explicit LLM(backend="claude") (selection skips the LLM
    arms instead of raising it)."""


class LLMFatal(FatalError):
    """A fault no retry can fix (bad key, unknown model, API unreachable): the run stops."""


class ModelError(FatalError):
    """The local model is missing, incomplete, corrupt or not a GGUF file (one line)."""


class BackendError(Exception):
    """A failed send: `reason` is the counted failure reason."""

    def __init__(
        self, reason: str, detail: str = "", *, fatal: bool = False, connection: bool = False
    ):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.fatal, self.connection = reason, detail, fatal, connection


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
    # the sampling seed of the local model (None: the backend's own); with a temperature > 0,
    # another seed is another sample (Claude takes no seed: its answers are sampled anyway)
    seed: int | None = None


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


@dataclass
class Reply:
    """A backend's raw answer to one send()."""

    text: str
    stop_reason: str | None  # "end_turn" | "max_tokens" | ...
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    timings: dict = field(default_factory=dict)  # local: llama.cpp's per-request timings


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
        ("seed", None),
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
