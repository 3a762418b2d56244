"""JSON answers: extraction, safe repairs, validation, and the permutation policy.

- `parse_json(text, schema, truncated, repair_truncated, check)`: the text as is; the object
  inside code fences or prose ("extracted"); trailing commas outside strings removed
  ("trailing_comma"); and, only when the template opts in, a truncated list closed
  ("truncated_list"). Each candidate is validated with the `jsonschema` package (`validate`)
  and then by the request's named validator (VALIDATORS).
- `interpret(req, text, stop_reason)`: a raw answer under the request's contract (JSON, or
  prose cut back to its last complete sentence when truncated).
- Permutations, in one place: the `permutation` validator (strict: a ranking answer must be a
  permutation of the request's candidate ids, else the answer is re-asked) and
  `repair_permutation` / `Repair` (lenient: the callers' counted repair of a ranking they
  accept anyway).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from .request import Request


def _closed_truncation(s: str) -> str | None:
    """Close JSON cut off inside a list: keep the list's complete items, close every bracket.

    Only the position just before a comma inside an array is a safe cut: everything before it
    is a complete item. Returns None when no such cut exists (nothing safe to keep)."""
    stack, in_str, esc, cut = [], False, False, None
    for i, ch in enumerate(s):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}":
            if not stack:
                return None
            stack.pop()
            if not stack:
                return None  # the object closed: this is not a truncation we can fix
        elif ch == "," and stack and stack[-1] == "[":
            cut = (i, list(stack))
    if cut is None:
        return None
    i, open_brackets = cut
    return s[:i] + "".join("]" if b == "[" else "}" for b in reversed(open_brackets))


def _strip_trailing_commas(s: str) -> str:
    """Remove commas that directly precede ] or } - outside strings only."""
    out, in_str, esc, pending = [], False, False, None
    for ch in s:
        if in_str:
            out.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if pending is not None:
            if ch.isspace():
                pending.append(ch)
                continue
            if ch not in "]}":
                out.append(",")
            out.extend(pending[1:])
            pending = None
        if ch == ",":
            pending = [","]
            continue
        out.append(ch)
        if ch == '"':
            in_str = True
    if pending is not None:
        out.extend(pending)
    return "".join(out)


_validators: dict[str, Any] = {}


def _schema_validator(schema: dict):
    key = json.dumps(schema, sort_keys=True)
    v = _validators.get(key)
    if v is None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        v = _validators[key] = cls(schema)
    return v


def validate(value: Any, schema: dict) -> str | None:
    """Check value against a JSON schema (the `jsonschema` package); an error line or None."""
    import jsonschema

    err = jsonschema.exceptions.best_match(_schema_validator(schema).iter_errors(value))
    if err is None:
        return None
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"{path}: {err.message}"[:300]


def parse_json(
    text: str, schema: dict, truncated: bool, repair_truncated: bool = True, check=None
) -> tuple[Any, str | None, str | None]:
    """(data, repair, error) for a model answer that should be one JSON object.

    Tried in order: the text as is; the object inside code fences or prose ("extracted"); the
    same with trailing commas outside strings removed ("trailing_comma"); and, for truncated
    output when repair_truncated, the truncated list closed ("truncated_list"). `check(data)`
    is an extra validator (error or None). repair is None when the text was fine as is."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    inner = stripped[start : end + 1] if 0 <= start < end else ""
    candidates = [
        (stripped, None),
        (inner, "extracted"),
        (_strip_trailing_commas(inner), "trailing_comma"),
    ]
    if truncated and repair_truncated and start >= 0:
        candidates.append((_closed_truncation(stripped[start:]), "truncated_list"))
    error = "no JSON object in the answer"
    for candidate, repair in candidates:
        if not candidate:
            continue
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as e:
            error = f"invalid JSON ({e.msg} at char {e.pos})"
            continue
        if (err := validate(data, schema)) is None and (
            check is None or (err := check(data)) is None
        ):
            return data, repair, None
        error = f"schema: {err}" if not err.startswith("ranking") else err
    return None, None, ("truncated; " if truncated else "") + error


def trim_text(text: str) -> str | None:
    """Cut truncated prose back to its last complete sentence, or None if there is none."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends else None


def interpret(
    req: Request, text: str, stop_reason: str | None
) -> tuple[Any, str | None, str | None, str | None]:
    """(data, final text, repair, error) for a raw answer, under the request's contract."""
    truncated = stop_reason == "max_tokens"
    if req.schema is not None:
        check = None
        if req.validator:
            fn = VALIDATORS[req.validator]
            check = lambda d: fn(d, req)
        data, repair, error = parse_json(text, req.schema, truncated, req.repair_truncated, check)
        return data, text, repair, error
    if not text.strip():
        return None, None, None, "empty answer"
    if truncated:
        trimmed = trim_text(text)
        return (
            None,
            trimmed,
            "truncated_text",
            None if trimmed else "truncated with no complete sentence",
        )
    return None, text, None, None


# ---------------------------------------------------------------------------------------------
# Permutations: the strict validator and the counted repair


def _permutation(data: Any, req: Request) -> str | None:
    """The `permutation` validator: data["ranking"] must hold every id of `req.ids` once and
    nothing else, else an error line (distinct ids counted) and the answer is re-asked. A
    caller that accepts a near-permutation instead repairs it with repair_permutation."""
    ranking = data.get("ranking") if isinstance(data, dict) else None
    if not isinstance(ranking, list):
        return "no ranking list"
    want = set(req.ids or ())
    dup = sorted({i for i in ranking if ranking.count(i) > 1})
    missing, extra = sorted(want - set(ranking)), sorted(set(ranking) - want)
    if dup or missing or extra:
        return (
            f"ranking is not a permutation of the {len(want)} candidates: "
            f"{len(dup)} duplicated, {len(missing)} missing, {len(extra)} unknown ids"
        )
    return None


VALIDATORS = {"permutation": _permutation}


@dataclass
class Repair:
    """A ranking answer made a permutation of the candidates, and what it took.

    ranking: the repaired permutation (None when the answer failed); unknown: ids that are
    not candidates (dropped); duplicate: repeated ids (removed); missing: candidates the
    answer left out (appended in candidate order); failed: more than half were missing."""

    ranking: list | None
    unknown: int = 0
    duplicate: int = 0
    missing: int = 0
    failed: bool = False

    @property
    def repaired(self) -> bool:
        return bool(self.unknown or self.duplicate or self.missing)

    def counts(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "ranking"}


def repair_permutation(answer, candidates) -> Repair:
    """Validate `answer` (a list of ids) as a permutation of `candidates` (ids, in candidate
    order): unknown ids dropped, duplicates removed (first kept), missing ids appended in
    candidate order, each counted. More than half missing: a failure, not a ranking."""
    cand = list(candidates)
    known = set(cand)
    out, seen, unknown, duplicate = [], set(), 0, 0
    for x in answer if isinstance(answer, list) else []:
        try:
            x = int(x)
        except (TypeError, ValueError):
            unknown += 1
            continue
        if x not in known:
            unknown += 1
        elif x in seen:
            duplicate += 1
        else:
            seen.add(x)
            out.append(x)
    missing = [x for x in cand if x not in seen]
    if len(missing) > len(cand) / 2:
        return Repair(None, unknown, duplicate, len(missing), True)
    return Repair(out + missing, unknown, duplicate, len(missing), False)
