"""The study's verdict figures, written beside the report by evals/report.py.

One figure per experiment shows what its verdict decides: the paired gain of each arm over its
reference, on the verdict's metric (named on the axis), with the interval the verdict reads
(the 95% paired bootstrap over users of the first seed, or the 95% t interval over seeds where
the JSON has gains over seeds), each row's gain, interval and size (users, seeds) written
beside it, every arm the JSON has a gain for (a selection is said in the panel title), one
panel per population (users who differ: the LLM's sample, cold-start users), per-seed values
as dots, a zero line, and the row the verdict reads in bold. A margin band or threshold line
is drawn where the JSON carries it (a "margin" key in the gain dict the verdict reads); where
it does not, the figure says so. Colours: grey = simple baselines, candidate orders and
controls without LLM text (exp2's template profile and top-department ceiling), orange = LLM
arms, blue = trained models.

Nothing is recomputed, with one exception said on the figure: where the JSON has no gains
over seeds, the dots are the per-seed differences of the arms' per-seed means
(metrics[arm]["per_seed"]), the quantity exp4 and exp5 store as their gains over seeds.

This module decides what each figure shows (rows, panels, bands); evals/draw.py draws it,
and also draws exp5's gate alpha per epoch and the description statistics. Each plot function
returns the PNG's file name, or None when the JSON has nothing to draw.
"""

from __future__ import annotations

from pathlib import Path

from evals.draw import Figure, Panel, Row, draw_figure, get, save

BASELINES = ("random", "popularity", "top-frequency", "top-frequency + popular", "tifu-knn")
# controls drawn as baselines (their text has no LLM in it): exp2's template profile (the
# reference text) and the top department's name alone (the category-precision ceiling), by the
# profile before " x <item texts>"
TEXT_CONTROLS = ("template profile", "top department name alone")
METRIC_NAMES = {
    "recall@10": "R@10",
    "recall@20": "R@20",
    "ndcg@10": "NDCG@10",
    "cat_precision@10": "category precision@10",
    "recall@10 users x items": "R@10",  # exp1: R@10 with the two-way interval (users x items)
}

# what each experiment's verdict reads, where its JSON does not name it (see plot_experiment)
ENRICHMENT_VERDICT = "zero-shot purchases x description vs zero-shot purchases x template"
ENRICHMENT_NO_LLM = ("zero-shot purchases x template", "popularity")  # the verdict without LLM
NARRATION_PAIR = "template profile − LLM narration (narrated users)"
NARRATION_ARMS = ("template profile x template items", "LLM narration x template items")
OCCASION_VERDICT = "random fractions"
OCCASION_METRIC = "recall@20"  # synthetic_context.METRIC: its gains over seeds are R@20
DUAL_REFERENCE = "collaborative only"  # exp5's gains are over this arm (same seed, users)
DUAL_VERDICT = ("frozen semantic", "overlap@10")


# ---------------------------------------------------------------------------------------------
# reading rows from a results JSON


def per_seed(d: dict, arm: str, metric: str) -> list:
    return [s.get(metric) for s in get(d, "metrics", arm, "per_seed") or []]


def seed_count(d: dict, arm: str) -> int | None:
    return len(get(d, "metrics", arm, "per_seed") or []) or None


def seed_diffs(d: dict, arm: str, ref: str, metric: str) -> list:
    """Per-seed arm - reference of the per-seed means (a reference with one seed, e.g. a
    deterministic baseline, is subtracted from every seed); [] with one seed."""
    a, b = per_seed(d, arm, metric), per_seed(d, ref, metric)
    if len(b) == 1:
        b = b * len(a)
    if len(a) < 2 or len(a) != len(b) or None in a + b:
        return []
    return [x - y for x, y in zip(a, b)]


def kind_of(d: dict, arm: str) -> str:
    base = arm.removeprefix("cold: ").split(" (")[0]
    own = arm.replace("(LLM users)", "").replace("[LLM users]", "")  # the LLM's users only
    if arm in (d.get("produced_by") or {}) or "LLM" in own:
        return "llm"
    if base in BASELINES or "candidate order" in arm or base.split(" x ")[0] in TEXT_CONTROLS:
        return "baseline"
    return "model"


def pair_label(a: str, b: str) -> str:
    """'zero-shot purchases x [description − template]' from two arm names sharing words."""
    ta, tb = a.split(), b.split()
    n = 0
    while n < min(len(ta), len(tb)) - 1 and ta[n] == tb[n]:
        n += 1
    if n == 0:
        return f"{a} − {b}"
    return f"{' '.join(ta[:n])} [{' '.join(ta[n:])} − {' '.join(tb[n:])}]"


def paired_row(d: dict, label: str, g: dict, metric: str, arm: str, ref: str, **kw) -> Row:
    """A row from a paired gain dict {metric: {"mean", "ci95"}, "n_users"} (first seed)."""
    kw.setdefault("kind", kind_of(d, arm))
    return Row(
        label,
        g[metric]["mean"],
        g[metric].get("ci95"),
        users=g.get("n_users"),
        seeds=seed_count(d, arm),
        per_seed=seed_diffs(d, arm, ref, metric),
        over="users",
        **kw,
    )


def seed_row(label: str, sg: dict, first: dict | None, metric: str, **kw) -> Row:
    """A row from a gain over seeds {"per_seed", "mean", "ci95"} (ci95 None with one seed:
    then the first seed's paired interval over users, from `first`)."""
    ci, over = sg.get("ci95"), "seeds"
    if ci is None:
        ci, over = get(first, metric, "ci95"), "users"
    return Row(
        label,
        sg["mean"],
        ci,
        users=get(first, "n_users"),
        seeds=len(sg.get("per_seed") or []) or None,
        per_seed=list(sg.get("per_seed") or []) if len(sg.get("per_seed") or []) > 1 else [],
        over=over,
        **kw,
    )


def arm_rows(d: dict, arms: list, metric: str, verdict: tuple = ()) -> list:
    """Rows of each arm's own metric (not a gain): the mean over seeds, the per-seed values as
    dots, and the first seed's interval over users; the arms in `verdict` in bold."""
    rows = []
    for arm in arms:
        s = get(d, "metrics", arm) or {}
        m = get(s, "all", metric, "mean")
        if m is None:
            continue
        seeds = [v for v in per_seed(d, arm, metric) if v is not None]
        rows.append(
            Row(
                arm,
                m,
                get(s, "ci95_first_seed", metric),
                users=get(s, "all", "n_users"),
                seeds=len(seeds) or None,
                per_seed=seeds if len(seeds) > 1 else [],
                kind=kind_of(d, arm),
                verdict=arm in verdict,
                value_note=f"mean of {len(seeds)} seeds" if len(seeds) > 1 else "",
            )
        )
    return rows


def margin_band(g: dict | None, claim: str) -> tuple | None:
    """The verdict's margin as a band, from the gain dict's "margin" (None without one):
    beats -> [0, m] (a gain inside it is too small), competitive / hurts -> [-m, 0]."""
    m = get(g, "margin")
    if not isinstance(m, (int, float)):
        return None
    lo, hi = (0.0, m) if claim == "beats" else (-m, 0.0)
    return lo, hi, f"margin {m:g} ({claim})"


NO_MARGIN = "the verdict's margin is not in the JSON: no band drawn"


# ---------------------------------------------------------------------------------------------
# each experiment's figure


def two_tower_figure(d: dict) -> Figure | None:
    """Paired gain of every two-tower arm over each reference baseline the JSON has gains
    against, on R@10 and NDCG@10 (the reference pipeline states no verdict)."""
    gains = d.get("gains") or {}
    panels, notes = [], []
    for metric in ("recall@10", "ndcg@10"):
        name = METRIC_NAMES[metric]
        base = {a: get(d, "metrics", a, "all", metric, "mean") for a in BASELINES}
        base = {a: v for a, v in base.items() if v is not None}
        best = max(base, key=base.get) if base else None
        for ref, arms in gains.items():
            rows = [
                paired_row(d, arm, g, metric, arm, ref) for arm, g in arms.items() if metric in g
            ]
            tag = " = the best baseline on " + name if ref == best else ""
            if rows:
                panels.append(
                    Panel(
                        f"{name}: every two-tower arm − {ref}{tag}",
                        f"paired gain in {name} (arm − {ref})",
                        rows,
                    )
                )
        if best and best not in gains:
            notes.append(f"the best baseline on {name} is {best}: the JSON has no gains over it")
    if not panels:
        return None
    return Figure(
        "two_tower: paired gain of the pipeline's arms over the strong simple baselines "
        "(reference run: no verdict)",
        panels,
        notes,
    )


ENRICHMENT_GROUPS = {  # exp1's populations, by arm-name prefix (the verdict's first)
    "described: ": "held-out purchases of the described items (the verdict's truth)",
    "": "every held-out purchase",
    "cold: ": "cold-start items",
}


def enrichment_reads_figure(d: dict) -> Figure | None:
    """exp1 with its verdict_reads: every paired gain (each LLM or placebo text − template,
    the description − each placebo, per arm), on the verdict's metric and interval (R@10,
    two-way over users x items, where the gain has it), one panel per population; the
    gains the verdict reads in bold."""
    gains, reads = d.get("gains") or {}, d["verdict_reads"]
    read = {r["gain"].removeprefix("gains."): r for r in reads.values()}
    metric = next(iter(read.values()))["metric"]
    groups = {p: [] for p in ENRICHMENT_GROUPS}
    for key, g in gains.items():
        a, _, b = key.partition(" vs ")
        prefix = next((p for p in ENRICHMENT_GROUPS if p and a.startswith(p)), "")
        m = metric if metric in g else "recall@10"
        row = paired_row(d, pair_label(a, b), g, m, a, b, verdict=key in read)
        if m == metric and "users x items" in metric:
            row.over, row.items, row.per_seed = "users x items", g[m].get("n_items"), []
        groups[prefix].append(row)
    verdict_gain = gains.get(next(iter(read), ""))
    margin = get(verdict_gain, "margin")
    panels = [
        Panel(
            f"{ENRICHMENT_GROUPS[p]}: R@10, paired, same arm ({rows[0].users or 0:,} users)",
            f"paired gain in {METRIC_NAMES.get(metric, metric)} (text − reference text)",
            rows,
            band=margin_band(verdict_gain, "beats") if p == "described: " and margin else None,
        )
        for p, rows in groups.items()
        if rows
    ]
    if not panels:
        return None
    return Figure(
        "llm_item_enrichment: does the LLM description beat the template and the best "
        f"placebo? (verdict, in bold: {' and '.join(reads)}, zero-shot purchases)",
        panels,
    )


def enrichment_figure(d: dict) -> Figure | None:
    """exp1: description (and both) − template text, same arm, R@10 paired over users; warm
    users and cold-start users apart. Without LLM arms (no gains): each arm's R@10. A JSON
    with verdict_reads (the placebo arms): enrichment_reads_figure."""
    gains = d.get("gains") or {}
    if gains and d.get("verdict_reads"):
        return enrichment_reads_figure(d)
    if gains:
        groups = {"warm items": [], "cold-start items": []}
        for key, g in gains.items():
            a, _, b = key.partition(" vs ")
            row = paired_row(
                d, pair_label(a, b), g, "recall@10", a, b, verdict=key == ENRICHMENT_VERDICT
            )
            groups["cold-start items" if a.startswith("cold:") else "warm items"].append(row)
        panels = [
            Panel(
                f"{grp}: R@10, LLM text − template text, same arm ({rows[0].users:,} users)",
                "paired gain in R@10 (description or both − template)",
                rows,
                band=margin_band(gains.get(ENRICHMENT_VERDICT), "beats"),
            )
            for grp, rows in groups.items()
            if rows
        ]
        return Figure(  # the verdict's margin is 0 ('beats': the interval above 0)
            "llm_item_enrichment: does LLM item text beat template text? (verdict: zero-shot "
            "purchases, R@10, paired; claim 'beats': interval above 0)",
            panels,
        )
    metrics = d.get("metrics") or {}
    warm = [a for a in metrics if not a.startswith("cold:")]
    cold = [a for a in metrics if a.startswith("cold:")]
    panels = [
        Panel(
            f"{grp}: R@10 of every arm (not paired)",
            "R@10 (share of the held-out items in the top 10)",
            rows,
            signed=False,
        )
        for grp, rows in (
            ("warm items", arm_rows(d, warm, "recall@10", ENRICHMENT_NO_LLM)),
            ("cold-start items", arm_rows(d, cold, "recall@10")),
        )
        if rows
    ]
    if not panels:
        return None
    return Figure(
        "llm_item_enrichment: no LLM arm, so no paired gain in the JSON; the verdict "
        "(inconclusive) sets template zero-shot beside popularity",
        panels,
    )


def narration_reads_figure(d: dict) -> Figure:
    """exp2 with its verdict_reads: each text profile − the trained user tower in R@10 (the
    verdict's metric, claim 'competitive', its margin as a band), each − top-frequency, then
    every arm's category precision@10 (the original's metric) beside its base rate."""
    r = d["verdict_reads"]["replace"]
    ref, metric = r["reference"], r["metric"]
    name = METRIC_NAMES.get(metric, metric)
    panels = []
    for against in (ref, "top-frequency"):
        arms = get(d, "gains", against) or {}
        rows = [
            paired_row(d, a, g, metric, a, against, verdict=against == ref and a == r["arm"])
            for a, g in arms.items()
            if metric in g
        ]
        if rows:
            verdict = against == ref
            panels.append(
                Panel(
                    f"{name}: every text profile − {against}"
                    + (" (the verdict: can a profile replace it?)" if verdict else ""),
                    f"paired gain in {name} (profile − {against})",
                    rows,
                    digits=3,
                    band=margin_band(arms.get(r["arm"]), r["claim"]) if verdict else None,
                )
            )
    return Figure(
        f"llm_user_narration: can a text profile replace the trained user tower? (verdict: "
        f"{name}, claim '{r['claim']}', margin {r['margin']:g})",
        panels + category_panels(d),
    )


def category_panels(d: dict) -> list:
    """exp2's category precision@10 of every arm (not paired) beside its base rate line."""
    cp = d.get("category_precision") or {}
    base = {a: v for a, v in cp.items() if a.startswith("base rate")}
    rows = [
        Row(a, v["mean"], v.get("ci95"), users=v.get("users"), seeds=1, kind=kind_of(d, a))
        for a, v in cp.items()
        if a not in base and v.get("mean") is not None
    ]
    if not rows:
        return []
    return [
        Panel(
            "category precision@10 of every arm (the original's metric; not paired; 95% CI "
            "over users); the top department's name alone is its ceiling",
            "category precision@10 (share of the top 10 in the user's top department)",
            rows,
            digits=3,
            signed=False,
            lines=[(v["mean"], "base rate (random item)") for v in base.values()],
        )
    ]


def narration_figure(d: dict) -> Figure | None:
    """exp2: the verdict's paired difference in category precision@10 (template − narration,
    the narrated users), then every arm's category precision@10 beside the base rate. A JSON
    with verdict_reads (the verdict on R@10 against the tower): narration_reads_figure."""
    if get(d, "verdict_reads", "replace"):
        return narration_reads_figure(d)
    panels, notes = [], []
    pair = d.get("paired_template_minus_narration")
    if pair and pair.get("mean") is not None:
        row = Row(
            NARRATION_PAIR,
            pair["mean"],
            pair.get("ci95"),
            users=pair.get("users"),
            seeds=1,
            kind="llm",
            verdict=True,
        )
        panels.append(
            Panel(
                "the verdict: category precision@10, template profile − LLM narration, paired",
                "paired difference in category precision@10 (template − narration)",
                [row],
                digits=3,
                band=margin_band(pair, "beats"),
            )
        )
    else:
        notes.append("no narration arm in the JSON: no paired difference (verdict inconclusive)")
    cp = d.get("category_precision") or {}
    base = {a: v for a, v in cp.items() if a.startswith("base rate")}
    rows = [
        Row(a, v["mean"], v.get("ci95"), users=v.get("users"), seeds=1, kind=kind_of(d, a))
        for a, v in cp.items()
        if a not in base and v.get("mean") is not None
    ]
    for r in rows:  # the two arms the verdict compares (paired, above)
        r.verdict = r.label in NARRATION_ARMS
    if rows:
        panels.append(
            Panel(
                "category precision@10 of every arm (not paired; 95% CI over users)",
                "category precision@10 (share of the top 10 in the user's top department)",
                rows,
                digits=3,
                signed=False,
                lines=[(v["mean"], "base rate (random item)") for v in base.values()],
            )
        )
    if not panels:
        return None
    return Figure(
        "llm_user_narration: does the template profile beat the LLM narration on category "
        "precision@10? (the verdict's metric; claim 'beats': interval above 0)",
        panels,
        notes,
    )


def reranker_figure(d: dict) -> Figure | None:
    """exp3: every arm − its reference (LightGBM over every evaluation user; the LLM arms over
    LightGBM and over the candidate order on the LLM's users), R@10, one panel per reference
    (so the LLM's few users never share an axis with every user); then the context shift over
    the placebo (RBO), the second verdict. A JSON with verdict_reads (verdicts on every
    candidate set): reranker_reads_figure."""
    if d.get("verdict_reads") and d.get("gains"):
        return reranker_reads_figure(d)
    gains = d.get("gains") or {}
    panels, notes = [], []
    first = next(iter(gains), "").split(": ")[0]
    has_llm = any(": LLM" in a for arms in gains.values() for a in arms)
    for ref, arms in gains.items():
        rows = []
        for arm, g in arms.items():
            if "recall@10" not in g:
                continue
            # verdict 1 reads the LLM with context over LightGBM on the LLM's users; without
            # LLM arms it reads LightGBM over the candidate order (drawn as order − LightGBM)
            v = (
                ref == f"{first}: lightgbm (LLM users)" and arm == f"{first}: LLM context"
                if has_llm
                else ref == f"{first}: lightgbm" and "candidate order" in arm
            )
            rows.append(paired_row(d, arm, g, "recall@10", arm, ref.split(" (LLM")[0], verdict=v))
        if rows:
            verdict_g = arms.get(f"{first}: LLM context") if "(LLM users)" in ref else None
            band = margin_band(verdict_g, "competitive")
            if verdict_g is not None and band is None:
                notes.append(NO_MARGIN + " (claim 'competitive' with LightGBM)")
            panels.append(
                Panel(
                    f"R@10: arm − {ref}{users_tag(rows)}",
                    f"paired gain in R@10 (arm − {ref.split(' (LLM')[0]})",
                    rows,
                    band=band,
                )
            )
    shift = shift_panel(d)
    if shift:
        panels.append(shift)
        if not shift.band:
            notes.append(NO_MARGIN + " of the context shift (claim 'beats')")
        if d.get("positive_control") and not any(k in gains for k in control_refs(gains)):
            notes.append(
                "the second verdict's positive control (R@10, true occasion − placebo, paired) "
                "is not in the JSON's gains: not drawn"
            )
    elif not has_llm:
        notes.append("no LLM arm: no context shift (the second verdict is inconclusive)")
    if not panels:
        return None
    return Figure(
        "llm_reranker: is the LLM re-ranker competitive with LightGBM, and does context move "
        "its ranking more than a placebo?",
        panels,
        notes,
    )


# exp3's positive control: the references its context gains are over (true − placebo and
# random − placebo over the placebo, true − random over the random occasion)
RERANKER_CONTROLS = ("LLM placebo context", "LLM random occasion")


def control_refs(gains: dict) -> list:
    """The gains keys of exp3's positive control, every candidate set."""
    return [k for k in gains if k.split(": ", 1)[-1] in RERANKER_CONTROLS]


def users_tag(rows: list) -> str:
    n = rows[0].users if rows else None
    return f" ({n:,} users)" if n else ""


def read_rows(reads: dict, gains: dict) -> dict:
    """{(gains key, arm): [the verdict_reads entries that read gains[key][arm]]}: a read's
    "gain" is "gains.<key>.<arm>" (keys hold dots and ': ', so matched, not split)."""
    out = {}
    for name, r in reads.items():
        key = next((k for k in gains if r.get("gain") == f"gains.{k}.{r.get('arm')}"), None)
        if key is not None:
            out.setdefault((key, r["arm"]), []).append({**r, "name": name})
    return out


def reads_band(reads: list, gains: dict, key: str) -> tuple[tuple | None, list]:
    """The margin band of a panel's verdict rows (margin_band of each read: its own margin,
    else the gain dict's) and the claims with their margins for the title (each once); a
    margin of 0 is the zero line (no band); with several bands, the widest."""
    bands, clauses = [], []
    for r in reads:
        src = r if isinstance(r.get("margin"), (int, float)) else get(gains, key, r["arm"])
        b = margin_band(src, r["claim"])
        m = get(src, "margin")
        clause = f"'{r['claim']}' " + (
            (f"margin {m:g}" + (" (band)" if b[0] != b[1] else ""))
            if b
            else "margin not in the JSON"
        )
        if clause not in clauses:
            clauses.append(clause)
        if b and b[0] != b[1]:
            bands.append(b)
    return (max(bands, key=lambda b: b[1] - b[0]) if bands else None), clauses


def read_panel(panels, cset, title, word, xlabel, rows, reads, gains, ref) -> list[str]:
    """Appends the panel of `rows` with the band of the verdicts it reads (`reads`), their
    clauses in the title; returns the notes for clauses whose margin the JSON lacks."""
    band, clauses = reads_band(reads, gains, ref)
    if clauses:
        title += f"; {word} in bold: {', '.join(clauses)}"
    panels.append(Panel(title, xlabel, rows, band=band))
    return [f"{cset}: {NO_MARGIN} ({c})" for c in clauses if "not in the JSON" in c]


def reranker_reads_figure(d: dict) -> Figure | None:
    """exp3 with its verdict_reads: per candidate set, every arm − each reference the JSON has
    gains over (LightGBM on every evaluation user; on the LLM's users LightGBM, the candidate
    order, the bare context arm), then the positive control (true occasion − placebo, random
    occasion − placebo, true − random occasion); the rows each verdict reads in bold, with its
    margin band; then the context's movement over the placebo (RBO: movement, not a verdict)."""
    gains, reads = d["gains"], d["verdict_reads"]
    read = read_rows(reads, gains)
    metric = next((r["metric"] for r in reads.values() if r.get("metric")), "recall@10")
    name = METRIC_NAMES.get(metric, metric)
    sets = list(dict.fromkeys(k.split(": ")[0] for k in gains))
    panels, notes = [], []

    def rows_of(ref, label=lambda arm, ref: arm):
        base = ref.split(" (LLM")[0]
        return [
            paired_row(d, label(arm, ref), g, metric, arm, base, verdict=(ref, arm) in read)
            for arm, g in gains[ref].items()
            if isinstance(g, dict) and metric in g
        ]

    def panel_reads(refs):
        return [r for (k, _), rs in read.items() if k in refs for r in rs]

    for cset in sets:
        refs = [k for k in gains if k.split(": ")[0] == cset]
        controls = [k for k in control_refs(gains) if k in refs]
        for ref in refs:
            rows = rows_of(ref) if ref not in controls else []
            if not rows:
                continue
            base = ref.split(" (LLM")[0]
            title = f"{name}: arm − {ref}{users_tag(rows)}"
            xlabel = f"paired gain in {name} (arm − {base})"
            notes += read_panel(
                panels, cset, title, "verdicts", xlabel, rows, panel_reads([ref]), gains, ref
            )
        rows = [r for ref in controls for r in rows_of(ref, pair_label)]
        if rows:
            what = (
                "true occasion vs placebo and vs random occasion"
                if len(controls) > 1
                else ("context vs placebo")
            )
            title = f"{cset}: positive control ({what}), {name}{users_tag(rows)}"
            xlabel = f"paired gain in {name} (context arm − control arm)"
            reads = panel_reads(controls)
            notes += read_panel(
                panels, cset, title, "verdict", xlabel, rows, reads, gains, controls[0]
            )
    shift = shift_panel(d, verdict=False)
    if shift:
        panels.append(shift)
    if not panels:
        return None
    return Figure(
        "llm_reranker: does the LLM (facts + context) beat or compete with LightGBM on each "
        f"candidate set, and does context shift rankings correctly? ({name}, paired)",
        panels,
        notes,
    )


def shift_panel(d: dict, verdict: bool = True) -> Panel | None:
    """The context's extra shift of the LLM ranking over the placebo's, per candidate set
    (paired over the LLM's users): RBO(placebo, no context) - RBO(context, no context), > 0
    when the context moves the ranking further than the placebo. `verdict`: an older JSON's
    second verdict reads the first set (bold, its band); with verdict_reads it is movement,
    not a verdict. The noise floor's RBO (a sampled repeat of the no-context prompts; in older
    JSONs, two shuffles of one prompt) is named in the title."""
    rows, floors, band = [], [], None
    for cset, st in (d.get("context_shift") or {}).items():
        sh = get(st, "extra_shift_context_vs_placebo")
        if not sh or sh.get("mean") is None or not sh.get("n"):
            continue
        if not rows and verdict:
            band = margin_band(sh, "beats")
        rows.append(
            Row(
                f"{cset}: context − placebo",
                sh["mean"],
                sh.get("ci95"),
                users=sh.get("n"),
                seeds=1,
                kind="llm",
                verdict=verdict and not rows,
            )
        )
        if st.get("noise_floor_rbo") is not None:
            floors.append(f"{cset} {st['noise_floor_rbo']:.3f}")
    if not rows:
        return None
    if verdict:
        title = "the context's extra shift over the placebo's, paired over the LLM's users" + (
            f" (noise floor RBO: {', '.join(floors)})" if floors else ""
        )
    else:
        title = "movement, not a verdict: the context's extra shift over the placebo's, paired" + (
            f"; noise floor RBO (sampled repeat): {', '.join(floors)}" if floors else ""
        )
    return Panel(
        title,
        "extra shift: RBO(placebo, no context) − RBO(context, no context)",
        rows,
        digits=3,
        band=band,
    )


def occasion_reference(name: str) -> str:
    """The reference of an exp4 gain (the JSON does not name it): 'A vs B' -> B; an arm on
    the LLM's users -> their two-tower; else the two-tower."""
    if " vs " in name:
        return name.split(" vs ")[1]
    return "two-tower (LLM users)" if "(LLM users)" in name else "two-tower"


def occasion_figure(d: dict) -> Figure | None:
    """exp4: every arm − its reference on R@20 (the verdict's metric), the interval over seeds
    (one seed: paired over users), per-seed gains as dots; the LLM's users apart."""
    sgains = d.get("gains_over_seeds") or {}
    first = d.get("gains_first_seed") or {}
    groups = {"every evaluation user": [], "the LLM's users": []}
    for name, sg in sgains.items():
        if not isinstance(sg, dict) or sg.get("mean") is None:
            continue
        ref = occasion_reference(name)
        arm = name.split(" vs ")[0]
        row = seed_row(
            f"{arm} − {ref}",
            sg,
            first.get(name),
            OCCASION_METRIC,
            kind=kind_of(d, arm),
            verdict=name == OCCASION_VERDICT,
        )
        llm_users = "(LLM users)" in name
        groups["the LLM's users" if llm_users else "every evaluation user"].append(row)
    plan = d.get("seed_plan") or {}
    plan_txt = (
        f"; seed plan: {plan['seeds']} seeds, half-width {plan['half_width']:.4f} (target "
        f"{plan.get('target_half_width', float('nan')):.4f}), {plan.get('needed')} needed"
        if plan.get("half_width") is not None
        else ""
    )
    panels = [
        Panel(
            f"R@20: arm − reference, {grp} ({rows[0].users or 0:,} users)"
            + (plan_txt if i == 0 else ""),
            "gain in R@20 (arm − reference, same seed, same users)",
            rows,
            band=margin_band(sgains.get(OCCASION_VERDICT), "hurts") if i == 0 else None,
        )
        for i, (grp, rows) in enumerate((g, r) for g, r in groups.items() if r)
    ]
    if not panels:
        return None
    notes = [] if panels[0].band else [NO_MARGIN + " (claim 'hurts')"]
    skipped = {k: v for k, v in (d.get("notes") or {}).items() if "skipped" in str(v)}
    notes += [f"{k}: {v}" for k, v in skipped.items()]
    return Figure(
        "synthetic_context: do random occasion labels lower R@20? (verdict: random fractions "
        "− two-tower over seeds, claim 'hurts')",
        panels,
        notes,
    )


def dual_head_figure(d: dict) -> Figure | None:
    """exp5: the survival share of the MiniLM space (the verdict's measure, over seeds), the
    R@10 gain of every arm over the collaborative-only tower (over seeds), and the same on
    cold-start items (their users apart)."""
    panels, notes = [], []
    surv = get(d, "findings", "survival") or {}
    rows = []
    for measure, r in surv.items():
        for key, when in (("share_init", "at init"), ("share", "after training")):
            g = r.get(key) if isinstance(r, dict) else None
            if not g or g.get("mean") is None:
                continue
            rows.append(
                Row(
                    f"MiniLM MLP {measure}, {when}",
                    g["mean"],
                    g.get("ci95"),
                    users=d.get("space_items"),
                    seeds=len(g.get("per_seed") or []) or None,
                    per_seed=list(g.get("per_seed") or []),
                    over="seeds",
                    unit="items",
                    verdict=(measure, key) == (DUAL_VERDICT[1], "share"),
                )
            )
    if rows:
        m = get(surv, DUAL_VERDICT[1], "share", "margin")
        panels.append(
            Panel(
                "the verdict: how much of the MiniLM space survives collaborative training "
                "(0 = the collaborative-only floor, 1 = the PCA ceiling)",
                "survival share of MiniLM neighbourhoods",
                rows,
                digits=3,
                signed=False,
                lines=[(0.0, "floor"), (1.0, "ceiling")]
                + ([(m, f"'destroyed' below {m:g}")] if isinstance(m, (int, float)) else []),
            )
        )
        if not isinstance(m, (int, float)):
            notes.append("the 'destroyed' threshold is not in the JSON: no line drawn")
    for grp, sg_all, first_all in (
        ("all held-out items", d.get("gains_over_seeds") or {}, d.get("gains") or {}),
        (
            "cold-start items",
            get(d, "cold_gains", "over_seeds") or {},
            {k: v for k, v in (d.get("cold_gains") or {}).items() if k != "over_seeds"},
        ),
    ):
        rows = []
        if sg_all:
            for arm, sg in sg_all.items():
                if isinstance(sg, dict) and sg.get("mean") is not None:
                    v = grp.startswith("all") and arm == DUAL_VERDICT[0]
                    rows.append(seed_row(arm, sg, first_all.get(arm), "recall@10", verdict=v))
        else:  # an older JSON: gains over users only (first seed)
            ref = DUAL_REFERENCE + (" (cold items)" if grp.startswith("cold") else "")
            rows = [
                paired_row(d, arm, g, "recall@10", arm, ref)
                for arm, g in first_all.items()
                if isinstance(g, dict) and "recall@10" in g
            ]
        if rows:
            band = margin_band(sg_all.get(DUAL_VERDICT[0]), "beats") if grp[0] == "a" else None
            if grp.startswith("all") and band is None:
                notes.append(NO_MARGIN + " (frozen head recovery, claim 'beats')")
            panels.append(
                Panel(
                    f"R@10: arm − {DUAL_REFERENCE}, {grp} ({rows[0].users or 0:,} users)",
                    f"gain in R@10 (arm − {DUAL_REFERENCE}, same seed, same users)",
                    rows,
                    band=band,
                )
            )
    if not panels:
        return None
    return Figure(
        "exp5_dual_head: does collaborative training destroy the MiniLM space, and does a "
        "frozen semantic head recover R@10?",
        panels,
        notes,
    )


FIGURES = {
    "two_tower": two_tower_figure,
    "llm_item_enrichment": enrichment_figure,
    "llm_user_narration": narration_figure,
    "llm_reranker": reranker_figure,
    "synthetic_context": occasion_figure,
    "exp5_dual_head": dual_head_figure,
}


# ---------------------------------------------------------------------------------------------
# the figure's PNG (evals/draw.py draws it)


def plot_experiment(name: str, d: dict, out_dir: Path) -> str | None:
    """plot_<name>.png: the experiment's figure (FIGURES), or None with nothing to draw."""
    build = FIGURES.get(name)
    spec = build(d) if build else None
    if spec is None:
        return None
    fig, _ = draw_figure(spec)
    return save(fig, out_dir, f"plot_{name}.png")
