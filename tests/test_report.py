"""evals/report.py on small hand-made results: every experiment gets a section (a missing, a
failed and an unreadable one say so), the question, the finding and the tables come from the
JSON (never from the script's source), plots are written and linked, the cost table adds up
the LLM usage found anywhere in a JSON, once."""

import json
from pathlib import Path

import pytest

from evals import glance as G
from evals import report as R


def summary(r10: float, std: float | None = 0.01, ci=(0.1, 0.2), n: int = 50) -> dict:
    """A common.summarize()-shaped entry."""
    m = lambda v: {"mean": v, "std": std}
    part = {
        "recall@5": m(r10 / 2),
        "recall@10": m(r10),
        "recall@20": m(r10 * 1.5),
        "ndcg@10": m(r10 * 2),
        "n_users": n,
    }
    return {
        "all": part,
        "repeat": part,
        "explore": part,
        "ci95_first_seed": {"recall@10": list(ci)},
        "per_seed": [{"recall@10": r10 - 0.01}, {"recall@10": r10 + 0.01}],
    }


def usage(calls: int, tin: int, tout: int, usd: float) -> dict:
    return {
        "backend": "claude",
        "model": "claude-haiku",
        "label": "claude-haiku",
        "api_calls": calls,
        "cached": 1,
        "input_tokens": tin,
        "output_tokens": tout,
        "batch_input_tokens": 0,
        "batch_output_tokens": 0,
        "total_cost_usd": usd,
        "busy_s": 2.0,
    }


def gain(mean: float, lo: float, hi: float, n: int) -> dict:
    """An Experiment.gain()-shaped paired gain (first seed)."""
    g = {"mean": mean, "ci95": [lo, hi]}
    return {"recall@10": g, "ndcg@10": g, "n_users": n}


def experiment(name: str, **extra) -> dict:
    return {
        "experiment": name,
        "question": f"Question of {name}?",
        "original_finding": f"finding of {name}",
        "options": {"quick": True},
        "data": {"source": "generated sample", "users": 300, "items": 1500},
        "split": {"mode": "interaction", "eval_users": 50},
        "seeds": [42, 43],
        "metrics": {"popularity": summary(0.05), "two-tower": summary(0.1234, 0.0042)},
        "candidate_recall": {"two-tower": 0.5},
        "produced_by": {},
        "verdict": f"verdict: refuted - {name} numbers",
        "timings": {"total_s": 12.5},
        "provenance": {"git_commit": "abcdef1234567", "time_utc": "2026-01-01T00:00:00Z"},
        **extra,
    }


@pytest.fixture
def study(tmp_path):
    """results/ with: two_tower ok; exp1 with description stats and LLM usage; exp2 failed
    (marker, no JSON); exp3 with controls; exp4 missing; exp5 with alpha curves."""
    res = tmp_path / "results"
    (res / ".overnight").mkdir(parents=True)
    u = usage(10, 1000, 200, 0.25)
    files = {
        "two_tower": experiment(
            "two_tower",
            verdict=None,
            gains={"popularity": {"two-tower": gain(0.07, 0.05, 0.09, 50)}},
        ),
        "llm_item_enrichment": experiment(
            "llm_item_enrichment",
            llm=u,
            cost={"usd_per_1000_items_batches": 0.5},
            description_stats={
                "template": {
                    "words": 10.0,
                    "distinct_tokens": 50,
                    "grounded": 1.0,
                    "novel_word_share": 0.0,
                },
                "description [haiku]": {
                    "words": 60.0,
                    "distinct_tokens": 400,
                    "grounded": 0.9,
                    "novel_word_share": 0.6,
                },
            },
            produced_by={"two-tower": "claude-haiku"},
        ),
        "llm_reranker": experiment(
            "llm_reranker",
            gains={"faiss@20: lightgbm": {"faiss@20: xgboost": gain(0.01, -0.01, 0.03, 50)}},
            llm=usage(5, 500, 100, 0.05),
            verdicts=["verdict: refuted - a", "verdict: confirmed - b"],
            controls={
                "faiss@20": {
                    "none": {"R@10": 0.1, "noise floor": {"rbo": 0.8}},
                    "context": {
                        "R@10": 0.12,
                        "noise floor": {"rbo": 0.8},
                        "vs none": {"rbo": 0.6},
                        "vs placebo": {"rbo": 0.65},
                    },
                }
            },
        ),
        # the same usage under two keys (as synthetic_context writes it) counts once
        "exp5_dual_head": experiment(
            "exp5_dual_head",
            alpha_curves={
                "frozen semantic": [[0.5, 0.6], [0.5, 0.7]],
                "trainable": [[0.5, 0.4], [0.5, 0.45]],
            },
            val_loss={"frozen semantic": [2.5, 2.6]},
            gains={"frozen semantic": gain(0.01, -0.01, 0.03, 50)},
            llm=u,
            llm_labels={"usage": u},
        ),
    }
    for name, d in files.items():
        (res / f"{name}_generated_interaction.json").write_text(json.dumps(d))
        (res / ".overnight" / f"{name}.marker").write_text(
            f"step={name}\nstatus=0\nwall_s=30\nresults=results/{name}_generated_interaction"
            f".json\nlog=logs/{name}.log\ncommand={name}.py --quick --llm none\n"
        )
    (res / ".overnight" / "llm_user_narration.marker").write_text(
        "step=llm_user_narration\nstatus=1\nwall_s=3\nreason=exit 1: error: boom in narration"
        "\nlog=logs/llm_user_narration.log\n"
    )
    return res


def build(res: Path) -> tuple[str, Path]:
    out = R.build_report(res, res.parent / "evals_results")
    return out.read_text(), out


def section(text: str, title_part: str) -> str:
    """The text of the section whose heading contains title_part."""
    parts = text.split("\n## ")
    hits = [p for p in parts if p.splitlines()[0].find(title_part) >= 0]
    assert len(hits) == 1, title_part
    return hits[0]


def test_every_experiment_has_a_section_with_question_finding_verdict_table(study):
    text, _ = build(study)
    for name, _title in R.EXPERIMENTS:
        assert f"(`{name}.py`)" in text
    s = section(text, "llm_item_enrichment.py")
    assert "Question of llm_item_enrichment?" in s and "finding of llm_item_enrichment" in s
    assert "verdict: refuted - llm_item_enrichment numbers" in s
    # the table is the JSON's numbers: mean ± std, the first seed's interval, the LLM label
    assert "| two-tower [claude-haiku] | 0.123 ± 0.004 | [0.100, 0.200] |" in s
    assert "Description statistics" in s and "| description [haiku] | 60.0 |" in s
    s = section(text, "llm_reranker.py")
    assert "verdict: refuted - a" in s and "verdict: confirmed - b" in s
    assert "| context | 0.120 |" in s


def test_question_and_finding_come_from_the_results_json_only(study):
    p = study / "exp5_dual_head_generated_interaction.json"
    d = json.loads(p.read_text())
    d["question"] = "Does the zebra head 7f3a beat the tower?"  # in no script
    d["original_finding"] = "zebra alpha 0.123"
    p.write_text(json.dumps(d))
    old = experiment("two_tower", verdict=None)
    del old["question"], old["original_finding"]  # a JSON without them: nothing read elsewhere
    (study / "two_tower_generated_interaction.json").write_text(json.dumps(old))
    text, _ = build(study)
    s = section(text, "exp5_dual_head.py")
    assert "**Question.** Does the zebra head 7f3a beat the tower?" in s
    assert "**Original finding.** zebra alpha 0.123" in s
    s = section(text, "two_tower.py")
    assert "**Question.** _not recorded_" in s and "**Original finding.** _not recorded_" in s
    # a step with no results JSON records no question either (the script is not read)
    assert "**Question.** _not recorded_" in section(text, "synthetic_context.py")
    assert not hasattr(R, "script_constants")


def test_missing_and_failed_experiments_say_so(study):
    text, _ = build(study)
    missing = section(text, "synthetic_context.py")
    assert "**Status: not run**" in missing and "synthetic_context_*.json" in missing
    failed = section(text, "llm_user_narration.py")
    assert "**Status: failed**" in failed and "boom in narration" in failed
    assert "logs/llm_user_narration.log" in failed
    glance = section(text, "Verdicts at a glance")
    assert "Experiment 4: synthetic occasion context | no results" in glance


def test_failed_step_with_old_results_is_marked_stale(study):
    (study / "llm_user_narration_generated_interaction.json").write_text(
        json.dumps(experiment("llm_user_narration"))
    )
    text, _ = build(study)
    s = section(text, "llm_user_narration.py")
    assert "**Status: failed**" in s and "from an earlier run" in s
    assert "| two-tower | 0.123 ± 0.004 |" in s  # the old table is still shown


def test_unreadable_results_and_interrupted_step(study):
    (study / "exp5_dual_head_generated_interaction.json").write_text("{not json")
    (study / ".overnight" / "two_tower.marker").write_text("step=two_tower\nstatus=running\n")
    text, _ = build(study)
    assert "results unreadable" in section(text, "exp5_dual_head.py")
    assert "**Status: interrupted**" in section(text, "two_tower.py")


def test_plots_are_written_and_linked(study):
    text, out = build(study)
    pngs = sorted(p.name for p in out.parent.glob("*.png"))
    assert {
        "plot_exp5_alpha.png",
        "plot_descriptions.png",
        "plot_two_tower.png",
        "plot_llm_item_enrichment.png",
        "plot_llm_reranker.png",
        "plot_exp5_dual_head.png",
    } <= set(pngs)
    for png in pngs:
        assert f"]({png})" in text
        assert (out.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot_synthetic_context.png" not in pngs


def test_absent_alpha_curves_are_tolerated(study):
    p = study / "exp5_dual_head_generated_interaction.json"
    d = json.loads(p.read_text())
    del d["alpha_curves"]
    p.write_text(json.dumps(d))
    text, out = build(study)
    assert "No `alpha_curves` in the JSON" in section(text, "exp5_dual_head.py")
    assert not (out.parent / "plot_exp5_alpha.png").exists()


def test_cost_table_adds_usage_once_per_json(study):
    text, _ = build(study)
    cost = section(text, "Cost:")
    row = lambda step: next(line for line in cost.splitlines() if line.startswith(f"| {step} |"))
    # exp5 has the same usage dict under two keys: counted once
    assert "| 10 | 1 | 1,000 | 200 | $0.2500 |" in row("exp5_dual_head")
    assert "$0.0500" in row("llm_reranker")
    assert "| 30 s |" in row("two_tower")  # wall time from the step marker
    total = row("total")
    assert "$0.5500" in total and "| 25 |" in total and "2,500" in total


def test_empty_results_folder_still_gives_a_report(tmp_path):
    (tmp_path / "results").mkdir()
    text, _ = build(tmp_path / "results")
    assert text.count("**Status: not run**") == len(R.EXPERIMENTS) + 1  # + the evals


def run_marker(res: Path, run: str, status: str, steps=R.STEPS, started="2026-01-02T00:00:00Z"):
    (res / ".overnight" / "run.marker").write_text(
        f"run={run}\nstarted={started}\nstatus={status}\nsteps={' '.join(steps)}\n"
    )


def step_row(text: str, step: str) -> str:
    steps = section(text, "Steps")
    return next(line for line in steps.splitlines() if line.startswith(f"| {step} |"))


def test_failure_reason_is_prefixed_with_its_exit_status_once(study):
    text, _ = build(study)
    assert "exit 1: exit 1:" not in text
    assert "exit 1: error: boom in narration" in section(text, "llm_user_narration.py")
    assert "exit 1: error: boom in narration" in step_row(text, "llm_user_narration")


def test_stale_steps_of_an_interrupted_run_are_named(study):
    """The last run (run=new) was interrupted in llm_reranker: the steps it finished are
    current, the interrupted one, the failed one and those it never reached are stale, and the
    report says so at the top and in the steps table."""
    for name in ("two_tower", "llm_item_enrichment"):  # finished by the last run
        with open(study / ".overnight" / f"{name}.marker", "a") as f:
            f.write("run=new\n")
    with open(study / ".overnight" / "llm_user_narration.marker", "a") as f:
        f.write("run=new\n")  # failed in the last run
    (study / ".overnight" / "llm_reranker.marker").write_text(
        "step=llm_reranker\nstatus=running\nrun=new\nlog=logs/llm_reranker.log\n"
    )
    with open(study / ".overnight" / "exp5_dual_head.marker", "a") as f:
        f.write("run=old\n")  # ok, but from an older run: the last one never reached it
    run_marker(study, "new", "interrupted")
    text, _ = build(study)
    head = text.split("\n## ")[0]
    assert "**Stale.**" in head and "interrupted" in head
    for step in ("llm_user_narration", "llm_reranker", "exp5_dual_head"):
        assert step in head.split("**Stale.**")[1], step
    for step in ("two_tower", "llm_item_enrichment"):
        assert step not in head.split("**Stale.**")[1], step
        assert "stale" not in step_row(text, step)
    assert "| stale |" in step_row(text, "exp5_dual_head")
    assert "not reached" in step_row(text, "exp5_dual_head")
    s = section(text, "exp5_dual_head.py")
    assert "**Stale**" in s and "from an earlier run" in s
    glance = section(text, "Verdicts at a glance")
    row = next(line for line in glance.splitlines() if "Experiment 5" in line)
    assert "stale: not reached" in row and "exp5_dual_head numbers" in row


def test_a_step_found_up_to_date_by_the_last_run_is_not_stale(study):
    """Every step checked by the last run (its marker carries the run id, even when the step
    was skipped as up to date and its results are older than the run): no stale note."""
    for name in R.STEPS:
        m = study / ".overnight" / f"{name}.marker"
        if name == "llm_user_narration":
            m.write_text(f"step={name}\nstatus=0\nrun=new\nwall_s=3\n")
        elif m.exists():
            with open(m, "a") as f:
                f.write("run=new\n")
    run_marker(study, "new", "done")
    text, _ = build(study)
    assert "**Stale.**" not in text and "| stale |" not in text


def test_results_without_a_marker_that_predate_the_last_run_are_stale(study):
    (study / ".overnight" / "exp5_dual_head.marker").unlink()
    for name in R.STEPS:
        m = study / ".overnight" / f"{name}.marker"
        if m.exists():
            with open(m, "a") as f:
                f.write("run=new\n")
    run_marker(study, "new", "done", started="2999-01-01T00:00:00Z")
    text, _ = build(study)
    assert "| stale |" in step_row(text, "exp5_dual_head")
    assert "predate" in step_row(text, "exp5_dual_head")


def test_reranker_answers_of_the_run_or_n_a_with_the_reason(study):
    evals = study.parent / "evals_results"
    evals.mkdir()
    na = "n/a: the llm_reranker run of x.json made no LLM answers (LLM arms skipped: --llm none)"
    (evals / "run_20260101-000000.json").write_text(
        json.dumps({"parts": {"reranker": {"skipped": na}}})
    )
    assert f"Reranker answers: {na}." in section(build(study)[0], "Evaluations")
    part = {"answers": 6, "users": 1, "models": ["claude-haiku"], "answers_file": "a.jsonl"}
    part |= {"results_file": "llm_reranker_csv_temporal.json", "answers_run": {"run_id": "r9"}}
    (evals / "run_20260102-000000.json").write_text(json.dumps({"parts": {"reranker": part}}))
    s = section(build(study)[0], "Evaluations")
    assert "Reranker answers (run r9, `a.jsonl` of `llm_reranker_csv_temporal.json`): 6" in s


# a verdict line as long as the (696 characters), of a smoke run
LONG = (
    "verdict: inconclusive - smoke run (--quick), not a finding (would read refuted): trained "
    "with the collaborative loss, the MiniLM MLP keeps a survival share 0.529 [0.516, 0.541] "
    "over 5 seeds of the attainable MiniLM neighbourhoods (at init 0.666 [0.651, 0.681] over 5 "
    "seeds; overlap@10 0.547 -> 0.446, floor 0.054, ceiling 0.794; 'destroyed' below 0.25); "
    "frozen PCA head R@10 gain +0.0005 [-0.0048, +0.0059] over 5 seeds: recovery inconclusive "
    "(margin 0.005); MiniLM MLP R@10 gain -0.0698 [-0.0776, -0.0621] over 5 seeds; finding - "
    "final alpha 0.440 [0.426, 0.454] over 5 seeds frozen / 0.472 [0.464, 0.480] over 5 seeds "
    "trainable (original 0.986 / 0.889); finding - trainable val loss minus baseline -0.0248 "
    "[-0.0587, +0.0091] over 5 seeds: lower-than-baseline claim inconclusive"
)


def glance_rows(text: str, title_part: str) -> list[list[str]]:
    """The cells of the verdicts-at-a-glance rows whose experiment contains title_part."""
    glance = section(text, "Verdicts at a glance")
    rows = [line for line in glance.splitlines() if line.startswith("| ") and title_part in line]
    return [[c.strip() for c in r.strip("|").split(" | ")] for r in rows]


def test_verdict_table_is_short_marks_smoke_runs_and_names_the_llm_from_usage(study):
    """Bugs caught (the issue): 696-character cells; 'LLM: none' in the header after steps
    ran a model; smoke-run verdicts that read like findings."""
    p = study / "exp5_dual_head_generated_interaction.json"
    d = json.loads(p.read_text())
    d["verdict"] = LONG
    d["llm"] = d["llm_labels"]["usage"] = usage(3, 10, 10, 0.0) | {
        "backend": "local",
        "model": "qwen2.5-1.5b-q4",
        "label": "qwen2.5-1.5b-q4",
    }
    p.write_text(json.dumps(d))
    p = study / "llm_reranker_generated_interaction.json"
    d = json.loads(p.read_text())
    d["options"]["quick"] = False
    d["verdicts"][0] = "verdict: refuted - LLM minus LightGBM [-0.1, -0.05] over 400 users; more"
    p.write_text(json.dumps(d))
    # the last run resolved --llm to none; the JSONs say which model each step used
    with open(study / ".overnight" / "llm_reranker.marker", "a") as f:
        f.write("llm_status=none (--llm none): LLM arms skipped\n")
    text, _ = build(study)
    (row,) = glance_rows(text, "Experiment 5")
    status, sentence, size, llm_cell = row[1:]
    assert status == "**inconclusive** (smoke run, --quick; would read refuted)"
    assert len(sentence) <= G.SENTENCE_CHARS and sentence.startswith("trained with the")
    assert "0.529 [0.516, 0.541] over 5 seeds" in sentence and "smoke run" not in sentence
    assert size == "50 users · 1,500 items · 5 seeds"
    assert llm_cell == "local: qwen2.5-1.5b-q4"
    assert LONG in section(text, "exp5_dual_head.py")  # the full line stays in the section
    rr = glance_rows(text, "Experiment 3")
    assert [r[1] for r in rr] == ["**refuted**", "**confirmed**"]  # not a smoke run
    assert rr[0][2] == "LLM minus LightGBM [-0.1, -0.05] over 400 users"
    assert rr[0][3].startswith("400 users") and rr[0][4] == "claude: claude-haiku"
    assert glance_rows(text, "Reference pipeline")[0][1] == "no verdict (smoke run, --quick)"
    head = text.split("\n## ")[0]
    assert "local: qwen2.5-1.5b-q4: exp5_dual_head" in head
    assert "claude: claude-haiku: llm_item_enrichment, llm_reranker" in head
    assert "resolved `--llm` to: none" in head and "\nLLM: none" not in head


def test_every_glance_cell_is_short(study):
    for name in ("llm_item_enrichment", "exp5_dual_head"):
        p = study / f"{name}_generated_interaction.json"
        d = json.loads(p.read_text())
        d["verdict"] = LONG.replace("(--quick)", "").replace("(", "").replace(")", "")
        p.write_text(json.dumps(d))
    text, _ = build(study)
    for row in glance_rows(text, "Experiment"):
        assert len(row[2]) <= G.SENTENCE_CHARS, row[2]


def test_a_held_back_word_says_why():
    v = G.parse_verdict(
        "verdict: inconclusive - shift +0.1 [+0.05, +0.2] [would read 'confirmed', but 4 users "
        "< 200: not a finding]; more"
    )
    assert (v["status"], v["would"], v["why"]) == ("inconclusive", "confirmed", "4 users < 200")
    assert v["text"] == "shift +0.1 [+0.05, +0.2]; more"


def test_metrics_table_says_which_interval(study):
    text, _ = build(study)
    s = section(text, "llm_item_enrichment.py")  # two seeds
    assert "| R@10 95% CI over users, first seed only |" in s
    assert "R@10 (mean ± std, 2 seeds)" in s
    p = study / "llm_item_enrichment_generated_interaction.json"
    d = json.loads(p.read_text())
    d["seeds"] = [42]
    p.write_text(json.dumps(d))
    s = section(build(study)[0], "llm_item_enrichment.py")
    assert "| R@10 | R@10 95% CI over users | R@20 |" in s


def test_the_short_sentence_keeps_the_headline_and_its_paired_interval():
    text = (
        "category precision@10 template profile 0.117 vs m narration 0.132 (paired difference "
        "-0.015, 95% CI [-0.057, +0.023], 60 users; base rate 0.107); original 0.767 vs 0.167"
    )
    assert G.short_sentence(text) == (
        "category precision@10 template profile 0.117 vs m narration 0.132 (paired difference "
        "-0.015, 95% CI [-0.057, +0.023], 60 users)"
    )
    assert G.verdict_size("x", {"seeds": [1, 2]}, text) == "60 users · 2 seeds"


def test_reranker_controls_caption_says_what_the_noise_floor_is():
    """Bug caught: the caption said "noise floor = two shuffles" where the JSON's noise floor
    is a sampled repeat of the first users' no-context prompts, the shuffle agreement a
    column of its own; an older JSON (no shuffle agreement) keeps its caption."""
    ag = lambda r: {"rbo": r, "jaccard@10": r, "tau": r}
    new = {
        "controls": {
            "faiss@20": {
                "none": {"R@10": 0.1, "noise floor": ag(0.91), "shuffle agreement": ag(0.7)},
                "context": {"R@10": 0.12, "noise floor": {}, "shuffle agreement": ag(0.72)},
            },
            "faiss@50+bought": {"none": {"R@10": 0.1, "shuffle agreement": ag(0.5)}},
        },
        "noise_floor_repeat": {
            "faiss@20": {"users": 20},
            "faiss@50+bought": {"users": 0, "not_measured": "n/a: pointwise P(yes)"},
        },
    }
    first, second = R.reranker_controls_block(new)
    assert "two shuffles" not in first + second
    assert "first 20 users' no-context answers" in first and "sampled repeat" in first
    assert "shuffles = shuffle 1 vs 2" in first
    header = first.split("\n")[2]
    assert "| noise floor | shuffles |" in header
    assert "| none | 0.100 | - | 0.910 | 0.700 |" in first
    assert "noise floor not measured (n/a: pointwise P(yes))" in second
    old = {"controls": {"faiss@20": {"none": {"R@10": 0.1, "noise floor": ag(0.8)}}}}
    (block,) = R.reranker_controls_block(old)
    assert "noise floor = two shuffles" in block and "| shuffles |" not in block
