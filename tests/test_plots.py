"""evals/plots.py on hand-made results JSONs with known numbers: each experiment's figure
draws the paired gain its verdict reads (bar = the gain, whisker = the verdict's interval, on
the verdict's metric), one bar per arm (none dropped), the n on every bar, seeds as dots, the
LLM's users and cold-start users in panels of their own, baselines in another colour, and only
learned gates as alpha curves."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from evals import draw as DRAW
from evals import plots as P


def paired(mean: float, lo: float, hi: float, n: int, metrics=("recall@10", "ndcg@10")) -> dict:
    """An Experiment.gain()-shaped dict: the same gain on every metric."""
    return {**{m: {"mean": mean, "ci95": [lo, hi]} for m in metrics}, "n_users": n}


def over_seeds(per_seed: list) -> dict:
    """A metrics.seed_interval()-shaped dict (the interval: mean +- 0.001, made up)."""
    m = sum(per_seed) / len(per_seed)
    ci = [m - 0.001, m + 0.001] if len(per_seed) > 1 else None
    return {"per_seed": per_seed, "mean": m, "std": 0.002, "ci95": ci}


def arm(r10: float, n: int, seeds: list | None = None) -> dict:
    seeds = seeds or [r10]
    return {
        "all": {"recall@10": {"mean": r10, "std": None}, "n_users": n},
        "ci95_first_seed": {"recall@10": [r10 - 0.01, r10 + 0.01]},
        "per_seed": [{"recall@10": s, "ndcg@10": s} for s in seeds],
    }


def drawn(spec: DRAW.Figure):
    """(axes, figure) of a Figure spec; closed by the caller's fixture."""
    fig, axes = DRAW.draw_figure(spec)
    return axes, fig


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bars(ax) -> list:
    """The bars of a panel: the rectangles of its (one) bar container."""
    assert len(ax.containers) == 1
    return list(ax.containers[0])


def row_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if " | n=" in t.get_text()]


def whiskers(ax) -> list[float]:
    """lo, hi, lo, hi, ... of the interval whiskers of a panel, top row first."""
    segs = [c for c in ax.collections if hasattr(c, "get_segments")]
    return [x for c in segs for s in c.get_segments() for x in (s[0][0], s[1][0])]


def test_two_tower_draws_the_paired_gain_and_its_interval_not_the_arms_own():
    """Bug caught (the issue): unpaired per-arm intervals overlapping where the paired gain
    is clear. The bar is the paired gain, the whisker its paired interval."""
    d = {
        "metrics": {
            "top-frequency + popular": arm(0.30, 594),
            "tifu-knn": arm(0.29, 594),
            "two-tower": arm(0.20, 594, [0.20, 0.21, 0.19]),
            "two-tower faiss@50+bought + lightgbm": arm(0.319, 594, [0.319, 0.32, 0.318]),
        },
        "gains": {
            "top-frequency + popular": {
                "two-tower": paired(-0.1, -0.12, -0.08, 594),
                "two-tower faiss@50+bought + lightgbm": paired(0.019, 0.014, 0.024, 594),
            },
            "tifu-knn": {"two-tower": paired(-0.09, -0.11, -0.07, 594)},
        },
    }
    spec = P.two_tower_figure(d)
    axes, _ = drawn(spec)
    assert len(axes) == 4  # (R@10, NDCG@10) x (two references)
    ax = axes[0]
    assert "top-frequency + popular = the best baseline" in ax.get_title(loc="left")
    assert [b.get_width() for b in bars(ax)] == pytest.approx([-0.1, 0.019])
    assert whiskers(ax) == pytest.approx([-0.12, -0.08, 0.014, 0.024])
    texts = row_texts(ax)
    assert len(texts) == 2 and all("n=594 users, 3 seeds" in t for t in texts)
    assert "+0.0190 [+0.0140, +0.0240] over users, seed 1" in texts[1]
    assert "R@10" in ax.get_xlabel() and "NDCG@10" in axes[2].get_xlabel()
    # the seeds as dots: arm's per-seed R@10 minus the (one-seed) baseline's
    dots = [ln for ln in ax.lines if ln.get_marker() == "o"]
    assert len(dots) == 2 and sorted(dots[1].get_xdata()) == pytest.approx([0.018, 0.019, 0.02])


def test_enrichment_draws_every_arm_and_keeps_cold_users_apart():
    """Bug caught: arms past 24 dropped silently; warm and cold-start users on one axis."""
    gains = {}
    for i in range(30):
        gains[f"arm{i} x description vs arm{i} x template"] = paired(0.001 * i, -0.01, 0.02, 400)
    gains["cold: zero-shot x description vs cold: zero-shot x template"] = paired(
        0.003, -0.02, 0.03, 120
    )
    spec = P.enrichment_figure({"gains": gains, "produced_by": {}})
    axes, _ = drawn(spec)
    assert len(axes) == 2
    warm, cold = axes
    assert len(bars(warm)) == 30 and len(row_texts(warm)) == 30
    assert all("n=400 users" in t for t in row_texts(warm))
    assert len(bars(cold)) == 1 and "n=120 users" in row_texts(cold)[0]
    labels = [t.get_text() for t in warm.get_yticklabels()]
    assert labels[29] == "arm29 x [description − template]"


def test_enrichment_without_llm_colours_baselines_apart_and_marks_the_verdicts_arms():
    metrics = {a: arm(0.1 * (i + 1), 300) for i, a in enumerate(P.BASELINES[:2])}
    metrics["zero-shot purchases x template"] = arm(0.5, 300)
    metrics["cold: popularity"] = arm(0.0, 90)
    axes, _ = drawn(P.enrichment_figure({"metrics": metrics}))
    warm = bars(axes[0])
    assert warm[0].get_facecolor() == warm[1].get_facecolor() != warm[2].get_facecolor()
    bold = [t.get_text() for t in axes[0].get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["popularity  [verdict]", "zero-shot purchases x template  [verdict]"]
    assert "n=90 users" in row_texts(axes[1])[0]


def test_narration_plots_the_verdicts_metric():
    """Bug caught: R@10 drawn where the verdict reads category precision@10."""
    d = {
        "paired_template_minus_narration": {"mean": 0.3, "ci95": [0.2, 0.4], "users": 250},
        "category_precision": {
            "popularity": {"mean": 0.4, "ci95": [0.3, 0.5], "users": 300},
            "template profile x template items": {"mean": 0.7, "ci95": [0.6, 0.8], "users": 300},
            "LLM narration x template items": {"mean": 0.4, "ci95": [0.3, 0.5], "users": 250},
            "base rate (random catalogue item)": {"mean": 0.15, "ci95": [0.1, 0.2], "users": 300},
        },
    }
    axes, _ = drawn(P.narration_figure(d))
    verdict, per_arm = axes
    assert "category precision@10" in verdict.get_xlabel() and "R@10" not in verdict.get_xlabel()
    assert [b.get_width() for b in bars(verdict)] == pytest.approx([0.3])
    assert whiskers(verdict) == pytest.approx([0.2, 0.4])
    assert "n=250 users" in row_texts(verdict)[0]
    assert len(bars(per_arm)) == 3  # the base rate is a line, not an arm
    assert [round(x, 3) for ln in per_arm.lines for x in ln.get_xdata()].count(0.15) >= 1


def test_reranker_puts_the_llms_users_on_their_own_axis_with_their_n():
    """Bug caught: rankers on 394 users beside LLM arms on 2 users, no n."""
    d = {
        "gains": {
            "faiss@20: lightgbm": {"faiss@20: xgboost": paired(0.001, -0.002, 0.004, 394)},
            "faiss@20: lightgbm (LLM users)": {
                "faiss@20: LLM context": paired(-0.05, -0.2, 0.1, 2),
                "faiss@20: LLM no context": paired(-0.06, -0.2, 0.1, 2),
            },
        },
        "produced_by": {"faiss@20: LLM context": "m", "faiss@20: LLM no context": "m"},
        "context_shift": {
            "faiss@20": {"extra_shift_context_vs_placebo": {"mean": 0.1, "ci95": [0, 0.2], "n": 2}}
        },
    }
    axes, _ = drawn(P.reranker_figure(d))
    assert len(axes) == 3
    assert all("n=394 users" in t for t in row_texts(axes[0]))
    assert len(bars(axes[1])) == 2 and all("n=2 users" in t for t in row_texts(axes[1]))
    assert "(2 users)" in axes[1].get_title(loc="left")
    bold = [t.get_text() for t in axes[1].get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["faiss@20: LLM context  [verdict]"]
    assert "RBO" in axes[2].get_xlabel() and "n=2 users" in row_texts(axes[2])[0]


def test_occasion_gain_over_seeds_with_its_seed_interval_metric_and_dots():
    """Bugs caught: the first seed's interval around a multi-seed mean; R@10 where the
    verdict reads R@20."""
    per = [0.001 * (i % 7) - 0.004 for i in range(30)]
    d = {
        "gains_over_seeds": {
            "random fractions": over_seeds(per),
            "context random": over_seeds([0.0, 0.001]),
            "LLM labels (LLM users)": over_seeds([0.002]),  # one seed: no interval over seeds
        },
        "gains_first_seed": {
            "random fractions": paired(-0.05, -0.06, -0.04, 1445, ("recall@20",)),
            "context random": paired(0.0, -0.01, 0.01, 1445, ("recall@20",)),
            "LLM labels (LLM users)": paired(0.002, -0.03, 0.03, 100, ("recall@20",)),
        },
        "produced_by": {"LLM labels (LLM users)": "m"},
    }
    axes, _ = drawn(P.occasion_figure(d))
    allu, llm_users = axes
    assert "R@20" in allu.get_xlabel()
    mean = sum(per) / 30
    assert bars(allu)[0].get_width() == pytest.approx(mean)
    assert whiskers(allu)[:2] == pytest.approx([mean - 0.001, mean + 0.001])  # over seeds
    texts = row_texts(allu)
    assert "over seeds | n=1,445 users, 30 seeds" in texts[0]
    dots = [ln for ln in allu.lines if ln.get_marker() == "o"]
    assert len(dots[0].get_xdata()) == 30
    assert labels_of(llm_users) == ["LLM labels (LLM users) − two-tower (LLM users)"]
    assert "over users | n=100 users, 1 seed" in row_texts(llm_users)[0]
    assert whiskers(llm_users) == pytest.approx([-0.03, 0.03])


def labels_of(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def test_margin_band_is_drawn_from_the_json_only():
    g = paired(0.002, -0.001, 0.005, 500)
    key = P.ENRICHMENT_VERDICT
    spec = P.enrichment_figure({"gains": {key: g}})
    assert spec.panels[0].band is None  # its verdict's margin is 0: the zero line
    spec = P.enrichment_figure({"gains": {key: {**g, "margin": 0.01}}})
    assert spec.panels[0].band[:2] == (0.0, 0.01)
    d = {"gains_over_seeds": {"random fractions": over_seeds([-0.01, 0.0])}}
    spec = P.occasion_figure(d)
    assert spec.panels[0].band is None and any("margin" in n for n in spec.notes)
    d["gains_over_seeds"]["random fractions"]["margin"] = 0.005
    spec = P.occasion_figure(d)
    assert spec.panels[0].band[:2] == (-0.005, 0.0) and not spec.notes
    axes, _ = drawn(spec)
    assert any("margin 0.005" in t.get_text() for t in axes[0].texts)


def test_dual_head_survival_and_gains_over_seeds():
    share = over_seeds([0.52, 0.53, 0.54])
    d = {
        "space_items": 3000,
        "findings": {"survival": {"overlap@10": {"share_init": share, "share": share}}},
        "gains_over_seeds": {"frozen semantic": over_seeds([0.001, 0.0, -0.001])},
        "gains": {"frozen semantic": paired(0.0005, -0.004, 0.005, 1429)},
        "cold_gains": {
            "frozen semantic (cold items)": paired(0.003, -0.003, 0.009, 1009),
            "over_seeds": {"frozen semantic (cold items)": over_seeds([0.005, 0.006])},
        },
    }
    axes, _ = drawn(P.dual_head_figure(d))
    assert len(axes) == 3
    assert "n=3,000 items, 3 seeds" in row_texts(axes[0])[1]
    assert "n=1,429 users, 3 seeds" in row_texts(axes[1])[0]
    assert "n=1,009 users, 2 seeds" in row_texts(axes[2])[0]


def test_alpha_draws_learned_gates_only(tmp_path):
    """Bug caught: fixed arms (alpha 0 or 1 by construction) drawn as if learned."""
    d = {
        "alpha_curves": {
            "collaborative only": [[0.0, 0.0], [0.0, 0.0]],
            "frozen semantic": [[0.5, 0.45], [0.5, 0.44]],
            "trainable semantic": [[0.5, 0.47], [0.5, 0.48]],
            "MiniLM MLP": [[1.0, 1.0], [1.0, 1.0]],
        }
    }
    learned, fixed = DRAW.learned_gates(d)
    assert set(learned) == {"frozen semantic", "trainable semantic"}
    assert fixed == {"collaborative only": 0.0, "MiniLM MLP": 1.0}
    _, ax = DRAW.draw_alpha(d)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["frozen semantic: mean of 2 seeds", "trainable semantic: mean of 2 seeds"]
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == 1]
    assert len(curves) == 2 * (1 + 2)  # per learned arm: the mean and one line per seed
    assert "collaborative only α=0, MiniLM MLP α=1" in ax.get_title()
    assert DRAW.plot_alpha(d, tmp_path) == "plot_exp5_alpha.png"
    # with findings, the arms of the alpha findings are the learned ones
    d["findings"] = {"alpha": {"frozen semantic": {"original": 0.986}}}
    assert set(DRAW.learned_gates(d)[0]) == {"frozen semantic"}


def test_every_experiment_with_nothing_to_draw_gives_none(tmp_path):
    for name in P.FIGURES:
        assert P.plot_experiment(name, {}, tmp_path) is None
    assert DRAW.plot_alpha({}, tmp_path) is None


def two_way(mean: float, lo: float, hi: float, n: int, items: int) -> dict:
    """An exp1 gain dict: R@10 / NDCG@10 over users, and R@10 over users x items."""
    g = paired(mean, lo - 0.01, hi + 0.01, n)
    g["recall@10 users x items"] = {"mean": mean, "ci95": [lo, hi], "n_items": items}
    g["n_items"] = items
    return g


def test_enrichment_with_placebos_draws_the_verdicts_interval_over_users_and_items():
    """Bug caught: the users-only interval drawn where the verdict reads the two-way one; the
    described-items truth mixed with every held-out purchase; the verdict's rows not marked."""
    fam = "described: zero-shot purchases x "
    gains = {
        f"{fam}description vs {fam}placebo filler": two_way(0.01, -0.02, 0.04, 600, 510),
        f"{fam}description vs {fam}template": two_way(0.03, 0.01, 0.05, 600, 510),
        f"{fam}placebo filler vs {fam}template": two_way(0.02, 0.0, 0.04, 600, 510),
        "zero-shot purchases x description vs zero-shot purchases x template": two_way(
            0.001, -0.002, 0.004, 700, 4000
        ),
        "cold: zero-shot purchases x description vs cold: zero-shot purchases x template": (
            two_way(0.0, -0.1, 0.1, 40, 50)
        ),
    }
    read = lambda k, ref: {
        "gain": f"gains.{k}",
        "metric": "recall@10 users x items",
        "reference": ref,
        "claim": "beats",
        "margin": 0.0,
    }
    d = {
        "gains": gains,
        "verdict_reads": {
            "beats best placebo": read(f"{fam}description vs {fam}placebo filler", "placebo"),
            "beats template": read(f"{fam}description vs {fam}template", "template"),
        },
        "produced_by": {},
    }
    spec = P.enrichment_figure(d)
    axes, _ = drawn(spec)
    assert len(axes) == 3  # described items, every purchase, cold start
    described = axes[0]
    assert "described items" in described.get_title(loc="left")
    assert whiskers(described)[:2] == pytest.approx([-0.02, 0.04])  # the two-way interval
    texts = row_texts(described)
    assert all("over users x items" in t and "n=600 users x 510 items" in t for t in texts)
    bold = [t.get_text() for t in described.get_yticklabels() if t.get_fontweight() == "bold"]
    assert len(bold) == 2 and all("description −" in b for b in bold)
    assert "n=700 users x 4,000 items" in row_texts(axes[1])[0]
    assert "n=40 users x 50 items" in row_texts(axes[2])[0]


def test_narration_with_verdict_reads_plots_r10_against_the_tower_with_its_margin():
    """Bug caught: category precision drawn where the verdict reads R@10 against the tower."""
    tower = "two-tower user tower"
    d = {
        "gains": {
            tower: {
                "template profile x template items": paired(-0.15, -0.17, -0.13, 300),
                "LLM history profile x template items": {
                    **paired(-0.12, -0.14, -0.10, 298),
                    "margin": 0.01,
                },
            },
            "top-frequency": {
                "LLM history profile x template items": paired(-0.3, -0.32, -0.28, 298)
            },
        },
        "verdict_reads": {
            "replace": {
                "gain": f"gains.{tower}.LLM history profile x template items",
                "metric": "recall@10",
                "reference": tower,
                "claim": "competitive",
                "margin": 0.01,
                "arm": "LLM history profile x template items",
            }
        },
        "category_precision": {
            "top department name alone x template items": {
                "mean": 0.99,
                "ci95": [0.98, 1.0],
                "users": 300,
            },
            "base rate (random catalogue item)": {"mean": 0.15, "ci95": [0.1, 0.2], "users": 300},
        },
        "produced_by": {"LLM history profile x template items": "m"},
    }
    spec = P.narration_figure(d)
    assert spec.panels[0].band[:2] == (-0.01, 0.0)
    axes, _ = drawn(spec)
    assert len(axes) == 3
    assert "R@10" in axes[0].get_xlabel() and tower in axes[0].get_xlabel()
    assert [b.get_width() for b in bars(axes[0])] == pytest.approx([-0.15, -0.12])
    bold = [t.get_text() for t in axes[0].get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["LLM history profile x template items  [verdict]"]
    assert "top-frequency" in axes[1].get_xlabel()
    assert "category precision@10" in axes[2].get_xlabel() and len(bars(axes[2])) == 1


def reranker_reads_json(sets=("faiss@20", "faiss@50+bought"), random=True) -> dict:
    """An exp3 JSON after verdict_reads (af8120d's shapes): per set, rankers − LightGBM, the LLM
    arms − LightGBM on the LLM's users (the facts arm's gain carries the competitive margin),
    the facts arm − the bare context arm, and the positive control (true − placebo, random −
    placebo, true − random), each read gain with its margin; what each verdict reads."""
    gains, reads, produced = {}, {}, {}
    for i, s in enumerate(sets):
        llm = lambda c, s=s: f"{s}: LLM {c}"
        facts, ctx, pla, rnd = (
            llm("facts + context"),
            llm("context"),
            llm("placebo context"),
            (llm("random occasion")),
        )
        produced.update({a: "m" for a in (facts, ctx, pla, rnd, llm("no context"))})
        gains[f"{s}: lightgbm"] = {f"{s}: xgboost": paired(0.001, -0.002, 0.004, 394)}
        gains[f"{s}: lightgbm (LLM users)"] = {
            llm("no context"): paired(-0.06, -0.09, -0.03, 200),
            ctx: paired(-0.05, -0.08, -0.02, 200),
            facts: {**paired(-0.004 - 0.001 * i, -0.009, 0.001, 200), "margin": 0.01},
        }
        gains[ctx] = {facts: paired(0.046, 0.03, 0.06, 200)}
        gains[pla] = {ctx: {**paired(0.02, 0.01, 0.03, 200), "margin": 0.0}}
        if random:
            gains[pla][rnd] = paired(0.001, -0.01, 0.012, 200)
            gains[rnd] = {ctx: {**paired(0.019, 0.008, 0.03, 200), "margin": 0.0}}

        def read(key, arm, ref, claim, margin, v):
            return {"gain": f"gains.{key}.{arm}", "arm": arm, "reference": ref,
                    "metric": "recall@10", "interval": "95% paired bootstrap over users",
                    "claim": claim, "margin": margin, "verdict": v}  # fmt: skip

        lgbm = f"{s}: lightgbm (LLM users)"
        reads[f"{s}: beats LightGBM"] = read(lgbm, facts, f"{s}: lightgbm", "beats", 0.0, 3 * i)
        reads[f"{s}: competitive with LightGBM"] = read(
            lgbm, facts, f"{s}: lightgbm", "competitive", 0.01, 3 * i + 1
        )
        claim = f"{s}: context shifts rankings correctly"
        reads[f"{claim} (vs placebo context)"] = read(pla, ctx, pla, "beats", 0.0, 3 * i + 2)
        if random:
            reads[f"{claim} (vs random occasion)"] = read(rnd, ctx, rnd, "beats", 0.0, 3 * i + 2)
    return {
        "gains": gains,
        "verdict_reads": reads,
        "produced_by": produced,
        "context_kind": "occasion" if random else "time",
        "positive_control": random,
        "context_shift": {
            s: {
                "extra_shift_context_vs_placebo": {"mean": 0.1, "ci95": [0, 0.2], "n": 200},
                "noise_floor_rbo": 0.9,
            }
            for s in sets
        },
    }


def bold_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]


def test_reranker_with_verdict_reads_draws_every_sets_verdict_rows_with_their_band():
    """Bug caught: only the first set's bare 'LLM context' row drawn as the verdict (the
    verdicts read the facts + context arm, on every candidate set), no margin band, and the
    positive control said to be missing from the JSON while its gains are there."""
    d = reranker_reads_json()
    spec = P.reranker_figure(d)
    axes, _ = drawn(spec)
    titles = [ax.get_title(loc="left") for ax in axes]
    by_title = lambda *words: [
        ax for ax, t in zip(axes, titles) if all(w in t for w in words)
    ]  # fmt: skip
    for s in ("faiss@20", "faiss@50+bought"):
        # the LightGBM verdicts' row, in bold, with the competitive band [-0.01, 0]
        (lgbm,) = by_title(f"arm − {s}: lightgbm (LLM users)")
        assert bold_labels(lgbm) == [f"{s}: LLM facts + context  [verdict]"]
        panel = spec.panels[axes.index(lgbm)]
        assert panel.band[:2] == (-0.01, 0.0)
        spans = [p for p in lgbm.patches if p not in list(lgbm.containers[0])]
        assert len(spans) == 1  # the band, drawn
        assert len(bars(lgbm)) == 3 and all("n=200 users" in t for t in row_texts(lgbm))
        # the positive control: true − placebo, random − placebo, true − random
        (pc,) = by_title(f"{s}: positive control")
        assert labels_of(pc)[0].startswith(f"{s}: LLM [context − placebo context]")
        assert [b.get_width() for b in bars(pc)] == pytest.approx([0.02, 0.001, 0.019])
        assert len(bold_labels(pc)) == 2 and "random occasion − placebo" not in " ".join(
            bold_labels(pc)
        )
        assert len(row_texts(pc)) == 3 and all("n=200 users" in t for t in row_texts(pc))
    # n on every bar of every panel
    for ax in axes:
        assert len(row_texts(ax)) == len(bars(ax))
        assert all(" | n=?" not in t for t in row_texts(ax))
    assert not any("positive control" in n for n in spec.notes)
    # the movement is movement: no verdict row in the shift panel
    (shift,) = by_title("extra shift")
    assert bold_labels(shift) == [] and "sampled repeat" in shift.get_title(loc="left")


def test_reranker_positive_control_panel_only_where_its_gains_exist():
    """With the held-out order's time (no random occasion): context − placebo only; with no
    placebo gains at all (an older JSON): no positive-control panel, drawn as before."""
    d = reranker_reads_json(sets=("faiss@20",), random=False)
    spec = P.reranker_figure(d)
    pcs = [p for p in spec.panels if "positive control" in p.title]
    assert len(pcs) == 1 and "context vs placebo" in pcs[0].title
    assert [r.verdict for r in pcs[0].rows] == [True]
    old = {
        "gains": {
            "faiss@20: lightgbm (LLM users)": {"faiss@20: LLM context": paired(-0.05, -0.2, 0.1, 2)}
        },
        "positive_control": True,
        "context_shift": {
            "faiss@20": {"extra_shift_context_vs_placebo": {"mean": 0.1, "ci95": [0, 0.2], "n": 2}}
        },
    }
    spec = P.reranker_figure(old)
    assert not any("positive control" in p.title for p in spec.panels)
    assert any("positive control" in n and "not drawn" in n for n in spec.notes)


def test_narration_colours_text_controls_as_baselines_and_llm_arms_orange():
    """Bug caught: the template profile and the top-department ceiling coloured as models."""
    assert P.kind_of({}, "template profile x template items") == "baseline"
    assert P.kind_of({}, "top department name alone x template items") == "baseline"
    assert P.kind_of({}, "template profile x LLM descriptions") == "llm"
    assert P.kind_of({}, "LLM history profile x template items") == "llm"
    assert P.kind_of({}, "two-tower user tower") == "model"
    d = {
        "category_precision": {
            "two-tower user tower": {"mean": 0.5, "ci95": [0.4, 0.6], "users": 300},
            "template profile x template items": {"mean": 0.7, "ci95": [0.6, 0.8], "users": 300},
            "top department name alone x template items": {"mean": 0.99, "users": 300},
            "LLM history profile x template items": {"mean": 0.6, "users": 300},
        }
    }
    (panel,) = P.category_panels(d)
    assert [r.kind for r in panel.rows] == ["model", "baseline", "baseline", "llm"]
