"""Numbers and markdown tables as the report and its verdict table write them."""

from __future__ import annotations

import math


def num(v, digits: int = 3) -> str:
    if v is None or isinstance(v, bool):
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def md_table(header: list[str], rows: list[list]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    numeric = lambda v: str(v)[:1] in set("0123456789+-[$.") or str(v) == "-"
    right = [i > 0 and all(numeric(r[i]) for r in rows if i < len(r)) for i in range(len(header))]
    lines = [
        "| " + " | ".join(esc(h) for h in header) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
