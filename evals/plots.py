"""The study's plots (matplotlib, Agg), written beside the report by evals/report.py.

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

Also exp5's gate alpha per epoch (learned gates only) and the description statistics.
Each plot function returns the PNG's file name, or None when the JSON has nothing to draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BASELINES = ("random", "popularity", "top-frequency", "top-frequency + popular", "tifu-knn")
# controls drawn as baselines (their text has no LLM in it): exp2's template profile (the
# reference text) and the top department's name alone (the category-precision ceiling), by the
# profile before " x <item texts>"
TEXT_CONTROLS = ("template profile", "top department name alone")
COLOURS = {"baseline": "#9a9a9a", "llm": "#e07b39", "model": "#3b75af"}
KIND_NAMES = {"baseline": "baseline / candidate order", "llm": "LLM arm", "model": "model"}
METRIC_NAMES = {
    "recall@10": "R@10",
    "recall@20": "R@20",
    "ndcg@10": "NDCG@10",
    "cat_precision@10": "category precision@10",
    "recall@10 users x items": "R@10",  # exp1: R@10 with the two-way interval (users x items)
}
# the original study's final gate alphas (../shared/EXPERIMENTS.md), used when the JSON's
# findings do not carry them
ORIGINAL_ALPHA = {"frozen": 0.986, "trainable": 0.889}
# figure geometry (inches): the plot's width, the column of each row's numbers, row height,
# the room around a panel (title, x label), the figure's title, a note line; the label column
# is as wide as the longest label (LABEL_IN per character, at most MAX_LEFT)
PLOT_W, TEXT_W, ROW_H, PANEL_PAD, TOP_H, NOTE_H = 4.6, 4.4, 0.3, 1.0, 1.05, 0.2
LABEL_IN, MAX_LEFT = 0.075, 5.5

# what each experiment's verdict reads, where its JSON does not name it (see plot_experiment)
ENRICHMENT_VERDICT = "zero-shot purchases x description vs zero-shot purchases x template"
ENRICHMENT_NO_LLM = ("zero-shot purchases x template", "popularity")  # the verdict without LLM
NARRATION_PAIR = "template profile − LLM narration (narrated users)"
NARRATION_ARMS = ("template profile x template items", "LLM narration x template items")
OCCASION_VERDICT = "random fractions"
OCCASION_METRIC = "recall@20"  # synthetic_context.METRIC: its gains over seeds are R@20
DUAL_REFERENCE = "collaborative only"  # exp5's gains are over this arm (same seed, users)
DUAL_VERDICT = ("frozen semantic", "overlap@10")


def get(d, *keys, default=None):
    """d[k1][k2]..., or `default` where a key or a level is missing."""
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        else:
            return default
    return d


# ---------------------------------------------------------------------------------------------
# what a figure is made of


@dataclass
class Row:
    """One bar: a gain (or, where said, a value) with its interval and size."""

    label: str
    mean: float
    ci: tuple | list | None = None
    users: int | None = None
    seeds: int | None = None
    per_seed: list = field(default_factory=list)
    kind: str = "model"  # model | llm | baseline
    over: str = "users"  # the interval: "users" (paired bootstrap, first seed) | "seeds"
    verdict: bool = False  # the row the verdict reads
    unit: str = "users"  # what n counts
    items: int | None = None  # the items an interval over users x items resampled
    value_note: str = ""  # e.g. "mean of 3 seeds" for a value whose interval is seed 1's

    def text(self, digits: int, signed: bool) -> str:
        """'+0.0190 [+0.0140, +0.0240] over users (seed 1) | n=594 users, 3 seeds'."""
        f = f"{{:{'+' if signed else ''}.{digits}f}}".format
        val = f(self.mean) + (f" ({self.value_note})" if self.value_note else "")
        if self.ci is not None:
            where = self.over if self.over in ("seeds", "users x items") else "users"
            seed1 = ", seed 1" if self.over == "users" and (self.seeds or 1) > 1 else ""
            val += f" [{f(self.ci[0])}, {f(self.ci[1])}] over {where}{seed1}"
        else:
            val += " (no interval)"
        size = f"n={self.users:,} {self.unit}" if self.users is not None else "n=?"
        if self.items is not None:
            size += f" x {self.items:,} items"
        if self.seeds:
            size += f", {self.seeds} seed{'s' if self.seeds > 1 else ''}"
        return f"{val} | {size}"


@dataclass
class Panel:
    title: str
    xlabel: str
    rows: list
    digits: int = 4
    signed: bool = True  # a gain (signed, zero line) or a value
    lines: list = field(default_factory=list)  # [(x, label)]: thresholds, base rates
    band: tuple | None = None  # (lo, hi, label): the verdict's margin


@dataclass
class Figure:
    title: str
    panels: list
    notes: list = field(default_factory=list)


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
# drawing


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_panel(ax, p: Panel) -> None:
    """Bars (gain or value), the interval as a whisker, seeds as dots, the row's text beside
    it, the zero line, reference lines and the margin band."""
    ys = list(range(len(p.rows)))
    ax.barh(
        ys,
        [r.mean for r in p.rows],
        color=[COLOURS[r.kind] for r in p.rows],
        height=0.6,
        alpha=0.8,
        edgecolor="black",
        linewidth=[1.6 if r.verdict else 0 for r in p.rows],
    )
    xs = [0.0]  # every bar starts at 0
    for y, r in zip(ys, p.rows):
        xs.append(r.mean)
        if r.ci is not None:
            ax.hlines(y, r.ci[0], r.ci[1], color="black", lw=1.3, zorder=3)
            ax.plot([r.ci[0], r.ci[1]], [y, y], "|", color="black", ms=9, zorder=3)
            xs += list(r.ci)
        if r.per_seed:  # spread vertically in a fixed pattern, so that 30 seeds stay visible
            jitter = [((i * 7) % 9 - 4) * 0.045 for i in range(len(r.per_seed))]
            ax.plot(r.per_seed, [y + j for j in jitter], "o", ms=3.2, mfc="white", mec="black",
                    mew=0.7, alpha=0.8, zorder=4)  # fmt: skip
            xs += r.per_seed
        ax.annotate(
            r.text(p.digits, p.signed),
            xy=(1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=7,
            fontweight="bold" if r.verdict else "normal",
        )
    if p.signed:
        ax.axvline(0, color="black", lw=0.8)
    for x, label in p.lines:
        ax.axvline(x, color="#7a3db8", ls="--", lw=1)
        ax.text(x, -0.6, f" {label}", color="#7a3db8", fontsize=7, va="center")
        xs.append(x)
    if p.band:
        ax.axvspan(p.band[0], p.band[1], color="#e8c547", alpha=0.3, lw=0)
        ax.text(p.band[1], len(ys) - 0.4, f" {p.band[2]}", fontsize=7, color="#8a6d00")
        xs += [p.band[0], p.band[1]]
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.06 or 0.01
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(len(ys) - 0.5, -0.85 if p.lines else -0.6)
    ax.set_yticks(ys)
    ax.set_yticklabels([r.label + ("  [verdict]" if r.verdict else "") for r in p.rows], fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), p.rows):
        tick.set_fontweight("bold" if r.verdict else "normal")
    ax.set_xlabel(p.xlabel, fontsize=8)
    ax.set_title(p.title, fontsize=8, loc="left")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def draw_figure(fig_spec: Figure):
    """The matplotlib figure of a Figure: panels stacked, each as tall as its rows, labels on
    the left, each row's numbers on the right; returns (fig, [axes])."""
    plt = _plt()
    from matplotlib.patches import Patch

    heights = [len(p.rows) * ROW_H + PANEL_PAD for p in fig_spec.panels]
    notes = fig_spec.notes
    total = TOP_H + sum(heights) + NOTE_H * (len(notes) + 1)
    longest = max(len(r.label) + 11 * r.verdict for p in fig_spec.panels for r in p.rows)
    left = min(0.3 + LABEL_IN * longest, MAX_LEFT)
    width = left + PLOT_W + TEXT_W
    fig = plt.figure(figsize=(width, total))
    axes, top = [], total - TOP_H
    for p, h in zip(fig_spec.panels, heights):
        bottom = top - h + 0.65  # room for the x label below the axes
        ax = fig.add_axes([left / width, bottom / total, PLOT_W / width, (h - 0.95) / total])
        draw_panel(ax, p)
        axes.append(ax)
        top -= h
    kinds = [k for k in COLOURS if any(r.kind == k for p in fig_spec.panels for r in p.rows)]
    fig.text(0.01, 1 - 0.3 / total, fig_spec.title, fontsize=10, fontweight="bold", va="top")
    fig.text(
        0.01,
        1 - 0.62 / total,
        "bar: gain (or value) | whisker: 95% CI, over users or seeds as each row says | "
        "white dots: training seeds | bold: the row the verdict reads",
        fontsize=8,
        va="top",
    )
    fig.legend(
        handles=[Patch(color=COLOURS[k], label=KIND_NAMES[k]) for k in kinds],
        loc="upper right",
        fontsize=7,
        ncols=len(kinds) or 1,
        frameon=False,
    )
    for i, n in enumerate(notes):
        fig.text(0.01, (NOTE_H * (len(notes) - i)) / total, f"note: {n}", fontsize=7)
    return fig, axes


def save(fig, out_dir: Path, fname: str) -> str:
    plt = _plt()
    fig.savefig(Path(out_dir) / fname, dpi=110)
    plt.close(fig)
    return fname


def plot_experiment(name: str, d: dict, out_dir: Path) -> str | None:
    """plot_<name>.png: the experiment's figure (FIGURES), or None with nothing to draw."""
    build = FIGURES.get(name)
    spec = build(d) if build else None
    if spec is None:
        return None
    fig, _ = draw_figure(spec)
    return save(fig, out_dir, f"plot_{name}.png")


# ---------------------------------------------------------------------------------------------
# exp5's gate, the description statistics


def learned_gates(d: dict) -> tuple[dict, dict]:
    """({arm: per-seed curves} of the arms whose alpha is learned, {arm: constant} of those
    whose alpha is fixed: the arms of the JSON's alpha findings are the learned ones; without
    findings, an arm whose every value is one constant is fixed."""
    curves = {a: c for a, c in (d.get("alpha_curves") or {}).items() if c and any(c)}
    found = get(d, "findings", "alpha")
    learned, fixed = {}, {}
    for arm, c in curves.items():
        values = {round(v, 6) for s in c for v in s}
        if (arm in found) if isinstance(found, dict) else len(values) > 1:
            learned[arm] = c
        else:
            fixed[arm] = next(iter(values)) if len(values) == 1 else None
    return learned, fixed


def plot_alpha(d: dict, out_dir: Path) -> str | None:
    """plot_exp5_alpha.png (draw_alpha), or None without a learned gate."""
    drawn = draw_alpha(d)
    return save(drawn[0], out_dir, "plot_exp5_alpha.png") if drawn else None


def draw_alpha(d: dict):
    """exp5: alpha per epoch of the learned gates only, every seed drawn, the mean over seeds,
    the original study's final alpha; fixed arms named as constants in the title. Returns
    (fig, ax), or None without a learned gate."""
    learned, fixed = learned_gates(d)
    if not learned:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    longest = 1
    for arm, per_seed in learned.items():
        n = min(len(s) for s in per_seed)
        if n == 0:
            continue
        longest = max(longest, n)
        ep = list(range(1, n + 1))
        mean = [sum(s[e] for s in per_seed) / len(per_seed) for e in range(n)]
        (line,) = ax.plot(ep, mean, marker="o", lw=2, label=f"{arm}: mean of {len(per_seed)} seeds")
        for s in per_seed:
            ax.plot(ep, s[:n], color=line.get_color(), lw=0.7, alpha=0.45)
        orig = get(d, "findings", "alpha", arm, "original")
        if orig is None:
            orig = ORIGINAL_ALPHA.get(arm.split()[0])
        if orig is not None:
            ax.axhline(orig, ls="--", lw=0.9, color=line.get_color())
            ax.text(1, orig, f"original study, {arm}: {orig}", fontsize=7, va="bottom",
                    color=line.get_color())  # fmt: skip
    ax.axhline(0.5, ls=":", lw=0.8, color="black")
    ax.set_xticks(range(1, longest + 1))
    ax.set_xlim(0.7, longest + 0.3)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("alpha = weight of the semantic head")
    fixed_txt = ", ".join(
        f"{a} α={v:g}" if v is not None else f"{a} (varies)" for a, v in fixed.items()
    )
    ax.set_title(
        "exp5: learned gate alpha per epoch (thin lines: seeds; thick: mean; dotted: start 0.5)"
        + (f"\nfixed, not learned (not drawn): {fixed_txt}" if fixed else ""),
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig, ax


def plot_descriptions(exp1: dict | None, evals_run: dict | None, out_dir: Path) -> str | None:
    """Exp1's description statistics (template vs LLM text) and the description evals per
    model and prompt version: mean words (bars, left) and shares (dots, right)."""
    stats = (exp1 or {}).get("description_stats") or {}
    models = get(evals_run or {}, "parts", "descriptions", "models") or []
    if not stats and not models:
        return None
    plt = _plt()
    panels = [
        p for p in (("exp1 description statistics", stats), ("description evals", models)) if p[1]
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, (title, src) in zip(axes[0], panels):
        if isinstance(src, dict):
            names = [f"{n}, n={get(src[n], 'n', default='?')}" for n in src]
            src = list(src.values())
            bars = {"words": [get(v, "words") for v in src]}
            shares = {
                "mentions aisle/dept": [get(v, "grounded") for v in src],
                "words not in name/aisle/dept": [get(v, "novel_word_share") for v in src],
            }
        else:
            names = [f"{m.get('model')} ({str(m.get('version'))[:6]}), n={m.get('n')}" for m in src]
            bars = {
                "words": [m.get("words") for m in src],
                "template words": [m.get("template_words") for m in src],
            }
            shares = {
                "grounded": [m.get("grounded") for m in src],
                "contradicts": [m.get("contradiction") for m in src],
                "similarity to template": [m.get("sim_template") for m in src],
            }
        x = range(len(names))
        w = 0.7 / len(bars)
        for j, (lab, vals) in enumerate(bars.items()):
            xs = [i + (j - (len(bars) - 1) / 2) * w for i in x]
            ax.bar(xs, [v or 0 for v in vals], width=w, alpha=0.6, label=f"{lab} (left)")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("mean words per text")
        ax2 = ax.twinx()
        for lab, vals in shares.items():
            ys = [v if v is not None else float("nan") for v in vals]
            ax2.plot(list(x), ys, marker="o", ls="none", markersize=8, label=f"{lab} (right)")
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("share")
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=15, fontsize=7)
        ax.set_title(title, fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, out_dir, "plot_descriptions.png")
