"""Drawing the study's figures (matplotlib, Agg): what a figure is made of (Row, Panel,
Figure), one figure's PNG (draw_figure, save), and the two plots that are not a verdict's
figure: exp5's gate alpha per epoch (learned gates only) and the description statistics.
evals/plots.py decides what each experiment's figure shows; this module only draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

COLOURS = {"baseline": "#9a9a9a", "llm": "#e07b39", "model": "#3b75af"}
KIND_NAMES = {"baseline": "baseline / candidate order", "llm": "LLM arm", "model": "model"}


# the original study's final gate alphas (../shared/EXPERIMENTS.md), used when the JSON's
# findings do not carry them
ORIGINAL_ALPHA = {"frozen": 0.986, "trainable": 0.889}


# figure geometry (inches): the plot's width, the column of each row's numbers, row height,
# the room around a panel (title, x label), the figure's title, a note line; the label column
# is as wide as the longest label (LABEL_IN per character, at most MAX_LEFT)
PLOT_W, TEXT_W, ROW_H, PANEL_PAD, TOP_H, NOTE_H = 4.6, 4.4, 0.3, 1.0, 1.05, 0.2
LABEL_IN, MAX_LEFT = 0.075, 5.5


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
