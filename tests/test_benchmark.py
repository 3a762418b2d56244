"""benchmark.py's command line (the benchmarks themselves are timed runs, not tests)."""

import pytest

import benchmark as B


def test_two_tower_passes_its_options_on_to_the_script():
    args = B.parse_args(["two_tower", "--data-dir", "DIR", "--items", "5000", "--bf16"])
    assert args.script_args == ["--data-dir", "DIR", "--items", "5000", "--bf16"]
    assert B.parse_args(["two_tower"]).script_args == []


def test_other_commands_reject_unknown_options():
    with pytest.raises(SystemExit):
        B.parse_args(["llm", "--bf16"])
