"""Selection: which backend an experiment script uses (--llm auto|claude|local|none).

- `add_llm_args(parser)`: `--llm {auto,claude,local,none}` (default $LLM_BACKEND, else auto),
  `--no-llm` (= `--llm none`), `--llm-model` (Claude model id, or a local model name / GGUF).
- `resolve_backend(choice)`: the one rule (run_overnight.sh asks it too): auto = Claude when a
  key is configured, else the local model when installed, else none with the reason.
- `client_from_args(args, **kw) -> (LLM | None, reason)`; `local_status()`: why the local
  model cannot run here, or None; `check_backend_choice(choice)`: a bad choice as a ConfigError.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from config import ConfigError

from .local import (
    DEFAULT_LOCAL_MODEL,
    LOCAL_MODEL_ENV,
    LOCAL_MODELS,
    TINY_LOCAL_MODEL,
    gguf_problem,
    local_model_installed,
    local_runtime_installed,
)

if TYPE_CHECKING:
    from .client import LLM

BACKENDS = ("auto", "claude", "local", "none")


# The Claude side (.claude, .client: the anthropic SDK, ~2 s to import) is imported where a
# backend is chosen, not here: a script's parser (add_llm_args) then answers --help at once.
def llm_available() -> bool:
    """claude.llm_available: an API key in the environment, ./.env or ~/.env."""
    from .claude import llm_available as key_configured

    return key_configured()


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
    if choice:  # a named model: its own group
        return f"local model {choice} not installed ({LOCAL_MODELS[choice]['install']})"
    return f"local model not installed ({LOCAL_MODELS[DEFAULT_LOCAL_MODEL]['install']})"


def check_backend_choice(choice: str | None = None, model: str | None = None) -> str:
    """The --llm / $LLM_BACKEND choice (default auto), checked before any data loads: argparse
    checks --llm but not a default taken from $LLM_BACKEND. When the local model would run
    (--llm local, or auto without an API key), its choice (--llm-model, else
    $LLM_LOCAL_MODEL) is checked too: a known name or a GGUF file. Else a one-line
    ConfigError."""
    choice = choice or os.environ.get("LLM_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ConfigError(f"--llm / $LLM_BACKEND: {choice!r} is not one of {', '.join(BACKENDS)}")
    if choice == "local" or (choice == "auto" and not llm_available()):
        check_local_model_choice(model if choice == "local" else None)
    return choice


def check_local_model_choice(model: str | None = None) -> None:
    """A local model choice (else $LLM_LOCAL_MODEL) names a known model or a readable GGUF
    file; checked by its first bytes only (resolve_local_model hashes it when it is used)."""
    model = model or os.environ.get(LOCAL_MODEL_ENV)
    if not model or model in LOCAL_MODELS:
        return
    path = Path(model).expanduser()
    why = (
        gguf_problem(path)
        if path.is_file()
        else f"not a model name ({', '.join(LOCAL_MODELS)}) nor a GGUF file"
    )
    if why:
        raise ConfigError(f"local model {model!r} (--llm-model or ${LOCAL_MODEL_ENV}): {why}")


def resolve_backend(choice: str | None = None) -> tuple[str | None, str]:
    """The one rule for --llm / $LLM_BACKEND: (backend, "") with backend "claude" or
    "local", or (None, why the LLM arms are skipped). auto = Claude when a key is
    configured, else the local model when installed, else none. run_overnight.sh asks
    this function too, so the rule lives here only."""
    choice = choice or os.environ.get("LLM_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ConfigError(f"--llm / $LLM_BACKEND: {choice!r} is not one of {', '.join(BACKENDS)}")
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
    from . import client as client_module  # lazy, as llm_available above

    client = client_module.LLM(getattr(args, "llm_model", None), backend=backend, **kw)
    return client, f"LLM backend {client.backend}: {client.label}"
