"""evals/description_evals.py: token-boundary matching, the model-free measures by hand, and
reading cached descriptions per model without any API call (loopback fake server)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_anthropic import FakeAnthropic

import descriptions as S
import llm
import text as T
from evals import description_evals as D

KEY = "sk-ant-test-0123456789"


def test_words_match_on_token_boundaries():
    """Bug caught: substring matching ('tea' found in 'steak', 'pet' in 'carpet')."""
    assert not S.grounded(set(S.tokens("A juicy steak.")), "tea", "beverages")
    assert S.grounded(set(S.tokens("Green TEA, loose leaf.")), "tea", "beverages")
    assert S.grounded(set(S.tokens("Keep in the dairy case")), "milk", "dairy eggs")
    assert S.contradiction(set(S.tokens("Cleans carpets")), "Rug Shampoo", "household") is None


def test_contradiction_flags():
    """Bug caught: organic flagged for an organic product, or another department's word
    not flagged."""
    flag = lambda text, name, dept: S.contradiction(set(S.tokens(text)), name, dept)
    assert flag("An organic whole milk.", "Whole Milk", "dairy eggs") == "organic"
    assert flag("An organic whole milk.", "Organic Whole Milk", "dairy eggs") is None
    assert flag("Keep frozen until use.", "Whole Milk", "dairy eggs") == "department:frozen"
    assert flag("Keep frozen until use.", "Frozen Peas", "frozen") is None


def test_description_stats_by_hand():
    """Bug caught: distinct-n, duplicates or novel-word share computed wrongly."""
    texts = ["red apple crisp", "red apple crisp", "fresh tart green fruit"]
    names, aisles, depts = (
        ["Apple", "Apple Two", "Green Apple"],
        ["fresh fruits"] * 3,
        ["produce"] * 3,
    )
    s = S.description_stats(texts, names, aisles, depts)
    assert s["n"] == 3 and s["words"] == pytest.approx((3 + 3 + 4) / 3)
    assert s["distinct_1"] == pytest.approx(7 / 10)  # red apple crisp fresh tart green fruit
    assert s["distinct_2"] == pytest.approx(5 / 7)
    assert s["duplicates"] == pytest.approx(2 / 3)
    # only 'fresh' of aisle 'fresh fruits' grounds text 3; 'fruit' is not the token 'fruits'
    assert s["grounded"] == pytest.approx(1 / 3)
    # novel content words: red, crisp (apple is in the name); tart, fruit (fresh, green known)
    assert s["novel_word_share"] == pytest.approx(np.mean([2 / 3, 2 / 3, 2 / 4]))


def test_reads_cached_descriptions_per_model_without_api_calls(tmp_path, monkeypatch):
    """Bug caught: the evals calling the API (or loading a model) to read descriptions;
    rows of different models mixed into one line."""
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    monkeypatch.setattr(
        T, "embed_texts", lambda texts, **kw: np.ones((len(texts), 384), np.float32) / 384**0.5
    )
    cache = tmp_path / "c.sqlite"
    with FakeAnthropic() as server:
        for model in ("claude-haiku-4-5-20251001", "claude-other"):
            c = llm.LLM(model, api_key=KEY, base_url=server.base_url, cache_path=cache)
            c.complete_many(
                [
                    S.description_request(f"Product {i}", "tea", "beverages")
                    for i in range(5 if model.endswith("1") else 3)
                ]
            )
            c.close()
        sent = sum(server.counts.values())
        report = D.evaluate_descriptions(cache, out=tmp_path / "e.json", progress=False)
        assert sum(server.counts.values()) == sent
    by = {m["model"]: m for m in report["models"]}
    assert by["fake claude-haiku-4-5-20251001"]["n"] == 5 and by["fake claude-other"]["n"] == 3
    assert by["fake claude-other"]["sim_template"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "e.json").read_text())
    assert len(saved["models"]) == 2
    assert D.evaluate_descriptions(tmp_path / "none.sqlite", out=None)["models"] == []


def test_judge_reports_score_and_cost(tmp_path, monkeypatch):
    monkeypatch.setattr(llm.claude, "ENV_FILES", [])
    rows = [
        {"name": f"P{i}", "aisle": "tea", "department": "beverages", "text": f"A tea number {i}."}
        for i in range(6)
    ]
    with FakeAnthropic() as server:
        c = llm.LLM(api_key=KEY, base_url=server.base_url, cache_path=tmp_path / "c.sqlite")
        j = D.judge(rows, c, 4)
        c.close()
    assert j["n"] == 4 and j["answered"] == 4 and 1 <= j["score"] <= 5
    assert j["cost_usd"] > 0 and 0 <= j["faithful"] <= 1
