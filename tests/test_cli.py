"""One option vocabulary across the CLIs: aliases parse to the same option, --log-level
reaches the logger and not the options hash, a smoke run's verdict says so, progress bars
do not flood a log."""

import argparse
import io
import logging
import types

import pytest

import config
import experiment
import llm_reranker
import llm_user_narration
import runs
import sample_generator


def generator_args(*argv):
    ap = argparse.ArgumentParser()
    sample_generator.add_size_args(ap)
    return ap.parse_args(list(argv))


def test_generator_speaks_the_scripts_vocabulary_and_keeps_the_old_spellings():
    new = generator_args("--out-dir", "d", "--items", "300", "--kaggle-size")
    old = generator_args("--out", "d", "--products", "300", "--full")
    assert (
        vars(new)
        == vars(old)
        == {
            "out_dir": "d",
            "users": None,
            "items": 300,
            "seed": 42,
            "kaggle_size": True,
        }
    )
    # --kaggle-size fills only the size not given
    assert sample_generator.sizes_from_args(new) == (sample_generator.FULL_USERS, 300)


@pytest.mark.parametrize("spelling", ["--llm-users", "--eval-users", "--reranker-users"])
def test_reranker_llm_users_aliases(spelling):
    assert llm_reranker.parse_args([spelling, "7"]).llm_users == 7


@pytest.mark.parametrize("spelling", ["--llm-users", "--eval-users"])
def test_narration_llm_users_aliases(spelling):
    assert llm_user_narration.parse_args([spelling, "9"]).llm_users == 9


def test_log_level_reaches_the_root_logger_not_the_options_hash():
    root = logging.getLogger()
    before = root.level
    try:
        args = llm_user_narration.parse_args(["--log-level", "debug"])
        assert args.log_level == "DEBUG" and root.level == logging.DEBUG
        other = llm_user_narration.parse_args(["--log-level", "warning"])
        assert root.level == logging.WARNING
        assert runs.options_hash(vars(args)) == runs.options_hash(vars(other))
    finally:
        root.setLevel(before)
    with pytest.raises(SystemExit):
        llm_user_narration.parse_args(["--log-level", "loud"])


def test_a_smoke_run_verdict_is_never_a_finding(capsys):
    exp = types.SimpleNamespace(args=types.SimpleNamespace(quick=True))
    line = experiment.Experiment.verdict(exp, "confirmed", "a gain of +0.1")
    assert line.startswith("verdict: inconclusive - smoke run (--quick), not a finding")
    assert "would read confirmed" in line and "a gain of +0.1" in line
    exp.args.quick = False
    assert experiment.Experiment.verdict(exp, "confirmed", "x") == "verdict: confirmed - x"


def test_progress_bar_into_a_log_redraws_rarely(monkeypatch):
    log = io.StringIO()  # not a TTY, like a run_overnight.sh log
    monkeypatch.setattr(config.sys, "stderr", log)
    bar = config.progress(range(5), file=log)
    assert bar.mininterval == config.LOG_PROGRESS_S
    bar.close()
