"""A loopback stand-in for the Anthropic Messages and Message Batches API, for offline tests.

It speaks the wire format closely enough for the real `anthropic` SDK (point `base_url` at
`server.base_url`): message objects with content blocks, stop_reason and usage; batch objects
with processing_status, request_counts and results_url; JSONL results; error bodies and status
codes as the API sends them. Answers are deterministic functions of the prompt: a prompt that
ends with a JSON Schema gets a JSON object that satisfies it (a ranking uses the prompt's
"[id]" candidates), any other prompt gets a few sentences of text.

Faults are scripted (add_fault: the next matching requests fail in a given way) or drawn at a
fixed rate from a hash of (seed, prompt, how many times the prompt was seen), so a run is
reproducible and a retry of the same prompt can succeed. Kinds:
    429 (rate_limit_error + retry-after), 529 (overloaded_error), 500 (api_error),
    401 (authentication_error), 403 (permission_error), 404 (not_found_error: unknown model),
    slow (answer after `delay` seconds: past the client's timeout), malformed (broken JSON),
    prose (valid JSON wrapped in prose and a code fence: repairable),
    truncate (stop_reason max_tokens, text cut), bad_ranking (a ranking with a duplicated and a
    missing id), batch_error (an errored batch item).
Batches can be listed (GET /v1/messages/batches, newest first) and carry their real creation
time, so a client can find a batch whose create call timed out.
Every request is counted per endpoint in `counts` so tests can assert that none arrived.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

HTTP_FAULTS = {
    "429": (429, "rate_limit_error", "This request would exceed your rate limit"),
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "403": (403, "permission_error", "Your API key does not have permission"),
    "404": (404, "not_found_error", "model: claude-does-not-exist"),
}
CONTENT_FAULTS = ("malformed", "prose", "truncate", "bad_ranking")
TIMESTAMP = "2025-01-01T00:00:00Z"


@dataclass
class Fault:
    """A scripted fault: the next `times` requests that match fail as `kind`."""

    kind: str
    times: int = 1
    match: str | None = None  # substring of the prompt; None matches any prompt
    endpoint: str = "messages"  # messages | batch_create | batch_get | batch_results | batch_item
    retry_after: float | None = None
    delay: float = 0.0


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _text_of(content) -> str:
    """The text of a `system` or message `content` (a string or a list of text blocks)."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def _fake_value(schema: dict, rng: random.Random, prompt: str, name: str = ""):
    """A deterministic value that satisfies the JSON-schema subset the registry uses."""
    kind = schema.get("type")
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if kind == "object":
        return {k: _fake_value(v, rng, prompt, k) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        if name == "ranking":  # a permutation of the candidate ids listed in the prompt
            ids = [int(i) for i in re.findall(r"^\[(\d+)\]", prompt, re.MULTILINE)] or [1, 2, 3]
            return sorted(ids, key=lambda i: hashlib.sha256(f"{prompt}{i}".encode()).digest())
        n = min(max(schema.get("minItems", 0), 3), schema.get("maxItems", 3))
        return [_fake_value(schema.get("items", {}), rng, prompt, name) for _ in range(n)]
    if kind == "string":
        return (
            f"{name or 'text'} {rng.choice(['crisp', 'sweet', 'organic', 'family'])} "
            f"{rng.randrange(1000)}"
        )
    if kind == "integer":
        return rng.randint(schema.get("minimum", 0), schema.get("maximum", 100))
    if kind == "number":
        return rng.uniform(schema.get("minimum", 0.0), schema.get("maximum", 1.0))
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def answer_for(prompt: str) -> str:
    """The fake model's complete answer to a prompt."""
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    marker = prompt.find("JSON Schema:")
    if marker >= 0:
        rest = prompt[marker + len("JSON Schema:") :].lstrip()
        schema, _ = json.JSONDecoder().raw_decode(rest)
        return json.dumps(_fake_value(schema, rng, prompt))
    words = ["staples", "fresh produce", "snacks", "dairy", "organic", "frozen meals"]
    return " ".join(f"This shopper often buys {rng.choice(words)} in week {i}." for i in range(3))


class FakeAnthropic:
    """The server. Use as a context manager; `base_url` goes to anthropic.Anthropic/llm.LLM."""

    def __init__(
        self,
        *,
        fault_rates: dict[str, float] | None = None,
        seed: int = 0,
        retry_after: float = 0.02,
        slow_delay: float = 1.0,
        batch_polls: int = 2,
        latency: float = 0.0,
        cache_read_tokens: int = 0,
    ):
        self.fault_rates = fault_rates or {}
        self.seed = seed
        self.retry_after = retry_after  # what 429/529 answers put in their retry-after header
        self.slow_delay = slow_delay
        self.batch_polls = batch_polls  # GETs of a batch before it reports "ended"
        self.latency = latency  # added to every /v1/messages answer
        self.cache_read_tokens = cache_read_tokens  # reported as prompt-cache reads per answer
        self.faults: list[Fault] = []
        self.counts: Counter = Counter()  # "POST /v1/messages" -> number of requests
        self.faults_served: Counter = Counter()
        self.seen: Counter = Counter()  # (endpoint, prompt) -> requests so far
        self.api_keys: set[str] = set()  # credentials seen (bearer token or x-api-key)
        self.versions: set[str] = set()  # anthropic-version headers seen
        self.bodies: list[dict] = []  # /v1/messages request bodies, in arrival order
        self.inflight = self.max_inflight = 0  # concurrent /v1/messages requests
        self.tokens_billed: Counter = Counter()  # usage of every 200 from /v1/messages
        self.retry_headers: list[str] = []  # x-stainless-retry-count of each request
        self.batches: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        # A short poll interval keeps stop() (which waits for the loop) fast in tests.
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def total_requests(self) -> int:
        return sum(self.counts.values())

    def add_fault(self, kind: str, **kw) -> None:
        with self.lock:
            self.faults.append(Fault(kind, **kw))

    # --- faults ------------------------------------------------------------------------------

    def pick_fault(self, endpoint: str, prompt: str = "") -> Fault | None:
        """The scripted fault that applies to this request, else a rate-drawn one, else None."""
        with self.lock:
            for f in self.faults:
                if (
                    f.times > 0
                    and f.endpoint == endpoint
                    and (f.match is None or f.match in prompt)
                ):
                    f.times -= 1
                    self.faults_served[f.kind] += 1
                    return f
            if endpoint not in ("messages", "batch_item") or not self.fault_rates:
                return None
            # Each request for a prompt is a fresh draw (as from a sampling model), yet the
            # sequence of draws per prompt is fixed by the seed, whatever the thread timing.
            nth = self.seen[(endpoint, prompt)]
            self.seen[(endpoint, prompt)] += 1
            h = hashlib.sha256(f"{self.seed}|{endpoint}|{prompt}|{nth}".encode()).digest()
            u = int.from_bytes(h[:8], "big") / 2**64
            for kind, rate in sorted(self.fault_rates.items()):
                if endpoint == "batch_item" and kind in HTTP_FAULTS:
                    continue
                if u < rate:
                    self.faults_served[kind] += 1
                    return Fault(kind, delay=self.slow_delay)
                u -= rate
        return None

    # --- the model ---------------------------------------------------------------------------

    def message(self, params: dict, fault: Fault | None) -> dict:
        """A Message object answering the request params, with a content fault if given."""
        prompt = "".join(_text_of(m.get("content")) for m in params["messages"])
        text, stop = answer_for(prompt), "end_turn"
        kind = fault.kind if fault else None
        if kind == "malformed":
            text = text.replace('"', "'", 3).rstrip("}") + ", oops"
        elif kind == "bad_ranking":
            data = json.loads(text)
            r = data["ranking"]
            data["ranking"] = r[:-1] + r[:1]  # the first id twice, the last one missing
            text = json.dumps(data)
        elif kind == "prose":
            text = f"Here is the JSON you asked for:\n```json\n{text}\n```\nHope this helps."
        budget = params["max_tokens"] * 4  # the fake counts four characters per token
        if kind == "truncate" or len(text) > budget:
            text, stop = text[: min(budget, int(len(text) * 0.8))], "max_tokens"
        n_in = _tokens(_text_of(params.get("system", "")) + prompt)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": n_in,
                "output_tokens": min(_tokens(text), params["max_tokens"]),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": self.cache_read_tokens,
            },
        }

    def batch_object(self, batch_id: str) -> dict:
        b = self.batches[batch_id]
        ended = b["polls"] >= self.batch_polls
        n = len(b["requests"])
        counts = {
            "processing": 0 if ended else n,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        if ended:
            for line in self.batch_results(batch_id):
                counts["succeeded" if line["result"]["type"] == "succeeded" else "errored"] += 1
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": b["created_at"],
            "expires_at": "2025-01-02T00:00:00Z",
            "ended_at": TIMESTAMP if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results"
            if ended
            else None,
        }

    def batch_results(self, batch_id: str) -> list[dict]:
        """The results of a batch, computed once (faults included) when it ends."""
        b = self.batches[batch_id]
        if b.get("results") is None:
            lines = []
            for r in b["requests"]:
                p = r["params"]
                prompt = "".join(_text_of(m.get("content")) for m in p["messages"])
                fault = self.pick_fault("batch_item", prompt)
                if fault and fault.kind == "batch_error":
                    result = {
                        "type": "errored",
                        "error": {
                            "type": "error",
                            "error": {"type": "api_error", "message": "Internal server error"},
                        },
                    }
                else:
                    result = {"type": "succeeded", "message": self.message(p, fault)}
                lines.append({"custom_id": r["custom_id"], "result": result})
            b["results"] = lines
        return b["results"]


class _QuietServer(ThreadingHTTPServer):
    """A client that dies mid-request (the kill tests) is expected, not a server error."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _handler(server: FakeAnthropic):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(
            self,
            status: int,
            body,
            headers: dict | None = None,
            content_type: str = "application/json",
        ) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to deliver

        def _error(self, status: int, kind: str, message: str, headers=None) -> None:
            self._send(
                status,
                {
                    "type": "error",
                    "error": {"type": kind, "message": message},
                    "request_id": f"req_{uuid.uuid4().hex[:20]}",
                },
                headers,
            )

        def _http_fault(self, fault: Fault | None) -> bool:
            """Answer with an HTTP-level fault if there is one; True when it was sent."""
            if fault is None:
                return False
            if fault.kind == "slow":
                time.sleep(fault.delay or server.slow_delay)
                return False  # then answer normally, too late for the client
            if fault.kind in HTTP_FAULTS:
                status, kind, message = HTTP_FAULTS[fault.kind]
                headers = {}
                # 429/529 carry the server's retry-after; a 500 only when the fault names one.
                ra = fault.retry_after
                if ra is None and fault.kind in ("429", "529"):
                    ra = server.retry_after
                if ra is not None:
                    headers["retry-after"] = str(ra)
                if fault.kind == "429":
                    headers["anthropic-ratelimit-requests-remaining"] = "0"
                self._error(status, kind, message, headers)
                return True
            return False

        def _start(self) -> bool:
            """Count the request and check its credentials like the API does."""
            endpoint = f"{self.command} {re.sub(r'msgbatch_[0-9a-f]+', '{id}', self.path)}"
            retry = self.headers.get("x-stainless-retry-count", "0")
            with server.lock:
                server.counts[endpoint] += 1
                server.retry_headers.append(retry)
            # SDK 2.x sends the key as a bearer token; older clients send x-api-key.
            bearer = self.headers.get("authorization", "")
            key = self.headers.get("x-api-key") or bearer.removeprefix("Bearer ").strip()
            if not key:
                self._error(401, "authentication_error", "invalid x-api-key")
                return False
            with server.lock:
                server.api_keys.add(key)
            if not self.headers.get("anthropic-version"):
                self._error(400, "invalid_request_error", "anthropic-version header is required")
                return False
            with server.lock:
                server.versions.add(self.headers["anthropic-version"])
            return True

        def _sampling_rejected(self, params: dict) -> bool:
            """API version 2026-10-21 refuses sampling parameters, as the real API does."""
            bad = [k for k in ("temperature", "top_p", "top_k") if k in params]
            if bad and self.headers.get("anthropic-version", "") >= "2026-10-21":
                self._error(
                    400, "invalid_request_error", f"{bad[0]}: Extra inputs are not permitted"
                )
                return True
            return False

        def _body(self) -> dict | None:
            n = int(self.headers.get("content-length", 0))
            try:
                return json.loads(self.rfile.read(n) or b"{}")
            except json.JSONDecodeError:
                self._error(400, "invalid_request_error", "request body is not valid JSON")
                return None

        def do_POST(self) -> None:
            body = self._body()
            if not self._start() or body is None:
                return
            if self.path == "/v1/messages":
                for k in ("model", "max_tokens", "messages"):
                    if k not in body:
                        return self._error(400, "invalid_request_error", f"{k}: Field required")
                if self._sampling_rejected(body):
                    return
                with server.lock:
                    server.bodies.append(body)
                prompt = "".join(_text_of(m.get("content")) for m in body["messages"])
                fault = server.pick_fault("messages", prompt)
                with server.lock:
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    time.sleep(server.latency)
                    if not self._http_fault(fault):
                        msg = server.message(body, fault)
                        with server.lock:
                            server.tokens_billed.update(msg["usage"])
                        self._send(200, msg)
                finally:
                    with server.lock:
                        server.inflight -= 1
                return
            if self.path == "/v1/messages/batches":
                if self._http_fault(server.pick_fault("batch_create")):
                    return
                reqs = body.get("requests") or []
                if not reqs or len({r.get("custom_id") for r in reqs}) != len(reqs):
                    return self._error(
                        400,
                        "invalid_request_error",
                        "requests: custom_id values must be unique and non-empty",
                    )
                if any(self._sampling_rejected(r.get("params", {})) for r in reqs):
                    return
                batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
                created = (
                    time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                    + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"
                )
                with server.lock:
                    server.batches[batch_id] = {
                        "requests": reqs,
                        "polls": 0,
                        "results": None,
                        "created_at": created,
                    }
                return self._send(200, server.batch_object(batch_id))
            self._error(404, "not_found_error", f"no route {self.path}")

        def do_GET(self) -> None:
            if not self._start():
                return
            if self.path.split("?")[0] == "/v1/messages/batches":
                with server.lock:
                    ids = list(server.batches)[::-1]  # newest first, as the API lists them
                    data = [server.batch_object(i) for i in ids]
                return self._send(
                    200,
                    {
                        "data": data,
                        "has_more": False,
                        "first_id": ids[0] if ids else None,
                        "last_id": ids[-1] if ids else None,
                    },
                )
            m = re.fullmatch(r"/v1/messages/batches/(msgbatch_[0-9a-f]+)(/results)?", self.path)
            if not m or m.group(1) not in server.batches:
                return self._error(404, "not_found_error", f"no such batch: {self.path}")
            batch_id = m.group(1)
            if m.group(2):
                if self._http_fault(server.pick_fault("batch_results")):
                    return
                if server.batches[batch_id]["polls"] < server.batch_polls:
                    return self._error(400, "invalid_request_error", "batch has not ended")
                lines = server.batch_results(batch_id)
                body = "".join(json.dumps(line) + "\n" for line in lines).encode()
                return self._send(200, body, content_type="application/binary")
            if self._http_fault(server.pick_fault("batch_get")):
                return
            with server.lock:
                server.batches[batch_id]["polls"] += 1
            self._send(200, server.batch_object(batch_id))

    return Handler
