"""Tests of prompts.py: versions are content hashes, the history file is current."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

import llm
import prompts as reg


def test_versions_file_is_up_to_date_with_the_code():
    assert reg.stale() == [], "run: uv run python prompts.py --update"
    assert reg.main([]) == 0


def test_registry_holds_the_experiment_templates():
    assert set(reg.TEMPLATES) >= {
        "item_description",
        "user_narration",
        "user_history_profile",
        "reranker",
        "reranker_free",
        "description_judge",
        "occasion_label",
        "rerank_pointwise",
    }
    structured = {n for n, t in reg.TEMPLATES.items() if t.schema}
    # free text: the narration and the history profile; yes/no: the pointwise reranker
    # (llm.LLM.yes_probability)
    free = {"user_narration", "user_history_profile", "rerank_pointwise"}
    assert structured == set(reg.TEMPLATES) - free
    assert len({t.version for t in reg.TEMPLATES.values()}) == len(reg.TEMPLATES)


def test_version_is_a_hash_of_text_system_and_schema_and_reverts():
    t = reg.TEMPLATES["item_description"]
    edited = dataclasses.replace(t, text=t.text + " Be brief.")
    assert edited.version != t.version
    assert dataclasses.replace(edited, text=t.text).version == t.version  # reverted
    assert dataclasses.replace(t, system=t.system + "!").version != t.version
    assert dataclasses.replace(t, schema={"type": "object"}).version != t.version
    assert len(t.version) == 12 and int(t.version, 16) >= 0


def test_history_records_changes_and_a_revert_reports_the_old_version(tmp_path, monkeypatch):
    path = tmp_path / "versions.json"
    assert sorted(reg.record_versions(path, today="2025-01-01")) == sorted(reg.TEMPLATES)
    original = reg.TEMPLATES["reranker"]
    edited = dataclasses.replace(original, text=original.text + "\nThink about staples.")
    monkeypatch.setitem(reg.TEMPLATES, "reranker", edited)
    assert reg.stale(path) == ["reranker"]
    assert reg.record_versions(path, today="2025-02-01") == ["reranker"]
    monkeypatch.setitem(reg.TEMPLATES, "reranker", original)  # revert the prompt
    assert reg.current_versions()["reranker"] == original.version
    assert reg.record_versions(path, today="2025-03-01") == []  # nothing new to record
    history = json.loads(path.read_text())["reranker"]
    assert history == [
        {"version": original.version, "first_seen": "2025-01-01"},
        {"version": edited.version, "first_seen": "2025-02-01"},
    ]


def test_cli_fails_when_the_file_is_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reg, "VERSIONS_PATH", tmp_path / "v.json")
    assert reg.main([]) == 1
    assert reg.main(["--update"]) == 0 and (tmp_path / "v.json").exists()
    assert "item_description" in capsys.readouterr().out


def test_render_checks_fields_and_embeds_the_schema():
    t = reg.TEMPLATES["item_description"]
    assert t.fields == {"product_name", "aisle", "department"}
    prompt = t.render(product_name="Oat Milk", aisle="milk", department="dairy eggs")
    assert "Product: Oat Milk" in prompt
    assert json.dumps(t.schema, separators=(",", ":")) in prompt
    with pytest.raises(ValueError, match="missing fields"):
        t.render(product_name="Oat Milk")
    with pytest.raises(ValueError, match="unknown fields"):
        t.render(product_name="x", aisle="y", department="z", price=1)


def test_request_carries_name_version_schema_and_text():
    t = reg.TEMPLATES["reranker"]
    cands = reg.format_candidates([(12, "Bananas", "fresh fruits"), (5, "Milk", "milk")])
    assert cands == "[12] Bananas (fresh fruits)\n[5] Milk (milk)"
    fields = {"user_profile": "likes fruit", "recent_orders": "- none", "order_context": ""}
    req = t.request(**fields, candidates=cands, n_candidates=2)
    assert isinstance(req, llm.Request)
    assert (req.template, req.version, req.schema, req.system) == (
        "reranker",
        t.version,
        t.schema,
        t.system,
    )
    assert req.prompt == t.render(**fields, candidates=cands, n_candidates=2)
    assert t.request(max_tokens=50, **fields, candidates=cands, n_candidates=2).max_tokens == 50


def test_rankings_carry_the_permutation_validator_and_never_repair_truncation():
    cands = reg.format_candidates([(12, "Bananas", "fresh fruits"), (5, "Milk", "milk")])
    t = reg.TEMPLATES["reranker"]
    assert t.validator == "permutation" and not t.repair_truncated
    fields = {"user_profile": "p", "recent_orders": "- none", "order_context": ""}
    req = t.request(**fields, candidates=cands, n_candidates=2)
    assert req.ids == (12, 5) and req.validator == "permutation" and not req.repair_truncated
    # the free arm's ranking is held to nothing: no validator, no ids (no id grammar)
    free = reg.TEMPLATES["reranker_free"].request(**fields, candidates=cands, n_candidates=2)
    assert free.ids is None and free.validator is None
    assert (
        reg.TEMPLATES["item_description"]
        .request(product_name="x", aisle="y", department="z")
        .repair_truncated
    )


def test_occasion_label_schema_lists_the_generator_occasions():
    import sample_generator

    enum = reg.TEMPLATES["occasion_label"].schema["properties"]["occasion"]["enum"]
    assert set(sample_generator.OCCASIONS) <= set(enum)
    prompt = reg.TEMPLATES["occasion_label"].render(basket="Eggs (eggs)")
    assert all(o in prompt for o in sample_generator.OCCASIONS)


def test_pointwise_prompts_of_one_list_differ_only_at_the_end():
    # a local slot reuses the KV cache of the common prefix: the candidate must come last
    t = reg.TEMPLATES["rerank_pointwise"]
    shopper = {"user_profile": "P", "recent_orders": "R", "order_context": reg.context_line("C")}
    a = t.render(**shopper, candidate="Bananas (fresh fruits)")
    b = t.render(**shopper, candidate="Milk (milk)")
    assert a.endswith("Bananas (fresh fruits)") and b.endswith("Milk (milk)")
    assert a[: -len("Bananas (fresh fruits)")] == b[: -len("Milk (milk)")]
