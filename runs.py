"""The results files of runs: one file per run, the per-user metrics beside it, the index.

    results/<script>_<data>_<split>_<UTC time>_<options hash>.json   one run (never replaced)
    results/<same name>.users.npz     per arm (first seed): original user ids, recall@10, ndcg@10
    results/index.jsonl               one row per run: time, script, data, split, options,
                                      headline metrics of the best arm, verdict, file

A run's file name carries its start time and a short hash of its options, and is claimed
without replacing anything (config.write_atomic with replace=False: a second run in the same
second with the same options gets a -2 suffix). The index is appended one line per run, under
an exclusive lock, in one O_APPEND write. load_results() returns the index as a DataFrame;
newest_run() finds the newest run of a script on the same data and split (what used to be a
fixed file name); paired_run_gains() pairs two runs' per-user metrics over the users both
scored (evals/run_evals.py --compare A B).
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import numpy as np

import config
from metrics import paired_mean_ci

INDEX_NAME = "index.jsonl"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # UTC
SAME_DATA_KEYS = ("source", "sampling", "users", "items", "rows")  # what "the same data" means
PER_USER_METRICS = ("recall@10", "ndcg@10")  # saved per user, per arm (first seed)
HEADLINE_METRICS = ("recall@10", "recall@20", "ndcg@10")  # the best arm's, in the index
NOT_HASHED = ("out", "quiet", "log_level")  # options that do not change a result
# the part of a run's file name after <script>_<data>_<split>: time, options hash, -N
RUN_SUFFIX = re.compile(r"_\d{8}T\d{6}Z_[0-9a-f]{8}(-\d+)?$")


def data_kind(source: str) -> str:
    """The <data> part of a results name: 'generated' (the generated sample) or 'csv'
    (a folder of Kaggle CSVs; two folders differ in the options hash: --data-dir)."""
    return "generated" if "generated" in source else "csv"


def options_hash(options: dict) -> str:
    """8 hex digits of the options (json, sorted keys; --out, --quiet and --log-level left out)."""
    kept = {k: v for k, v in options.items() if k not in NOT_HASHED and not k.startswith("_")}
    return config.short_hash(json.dumps(kept, sort_keys=True, default=str), 8)


def run_name(script: str, kind: str, split: str, when: float, options: dict) -> str:
    """<script>_<data>_<split>_<UTC time>_<options hash> (no suffix)."""
    stamp = time.strftime(STAMP_FORMAT, time.gmtime(when))
    return f"{script}_{kind}_{split}_{stamp}_{options_hash(options)}"


def series_of(name: str) -> str:
    """The run's series, <script>_<data>_<split>: its file stem without time and hash (a
    name written before runs had their own files is its own series)."""
    stem = Path(name).name.removesuffix(".json")
    return RUN_SUFFIX.sub("", stem)


def per_user_path(path: str | Path) -> Path:
    """The per-user metrics file beside a results JSON: <stem>.users.npz."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".json") + ".users.npz")


# ---------------------------------------------------------------------------------------------
# writing a run: per-user metrics, results JSON, index row


def per_user_bytes(per_user: dict) -> bytes:
    """{arm: {"users": ids, metric: values}} as a compressed .npz (no pickle: arm names are
    one string array, arm i's arrays are a{i}_users, a{i}_<metric>)."""
    arrays = {"arms": np.array(list(per_user), dtype=str)}
    for i, cols in enumerate(per_user.values()):
        arrays[f"a{i}_users"] = np.asarray(cols["users"], np.int64)
        for m in PER_USER_METRICS:
            arrays[f"a{i}_{m}"] = np.asarray(cols[m], np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_per_user(path: str | Path) -> dict:
    """The per-user metrics of a run ({arm: {"users", metric: array}}), from its .npz or its
    results JSON's path; {} when the run has none."""
    path = Path(path)
    path = path if path.suffix == ".npz" else per_user_path(path)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {
            str(arm): {
                "users": z[f"a{i}_users"],
                **{m: z[f"a{i}_{m}"] for m in PER_USER_METRICS if f"a{i}_{m}" in z},
            }
            for i, arm in enumerate(z["arms"])
        }


def write_run(path: str | Path, make_text, per_user: dict, replace: bool) -> Path:
    """Write one run: its per-user metrics, then its results JSON (make_text(npz name) ->
    the JSON text). replace=False (the default name): neither replaces any file; a taken
    name gets the next -N suffix. replace=True (an explicit --out): both are replaced."""
    path = Path(path)
    stem = path.name.removesuffix(".json")
    for n in range(1, 1000):
        cand = path.with_name(f"{stem}-{n}.json" if n > 1 else f"{stem}.json")
        side = per_user_path(cand)
        if not replace and cand.exists():
            continue
        try:
            config.write_atomic(side, per_user_bytes(per_user), replace=replace)
        except FileExistsError:
            continue
        try:
            return config.write_atomic(cand, make_text(side.name), replace=replace)
        except FileExistsError:
            side.unlink(missing_ok=True)
    raise FileExistsError(f"no free results name for {path}")


def index_row(payload: dict, path: Path) -> dict:
    """The index row of a run from its results payload (as written) and its file."""
    metrics = payload.get("metrics") or {}
    mean = lambda arm, m: ((metrics[arm].get("all") or {}).get(m) or {}).get("mean")
    scored = [a for a in metrics if mean(a, "ndcg@10") is not None]
    best = max(scored, key=lambda a: mean(a, "ndcg@10"), default=None)
    data, split = payload.get("data") or {}, payload.get("split") or {}
    options = payload.get("options") or {}
    return {
        "time": (payload.get("provenance") or {}).get("time_utc"),
        "script": payload.get("experiment"),
        "data": {k: data.get(k) for k in SAME_DATA_KEYS},
        "split": split.get("mode"),
        "split_seed": split.get("seed"),
        "options_hash": options_hash(options),
        "options": options,
        "best_arm": best,
        **{m: (mean(best, m) if best else None) for m in HEADLINE_METRICS},
        "users": ((metrics.get(best) or {}).get("all") or {}).get("n_users"),
        "verdict": payload.get("verdict"),
        "file": path.name,
        "per_user_file": payload.get("per_user_file"),
    }


def append_index(results_dir: str | Path, row: dict) -> Path:
    """Append one row to <results_dir>/index.jsonl: one line, one O_APPEND write, under an
    exclusive lock (two runs finishing at once never interleave their lines)."""
    import fcntl

    path = Path(results_dir) / INDEX_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)  # releases the lock
    return path


# ---------------------------------------------------------------------------------------------
# reading: the index, the newest run of a script, a run named on the command line


def index_rows(results_dir: str | Path | None = None) -> list[dict]:
    """The index's rows, oldest first (an unreadable line is skipped)."""
    path = Path(results_dir or config.RESULTS_DIR) / INDEX_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def load_results(results_dir: str | Path | None = None):
    """The results index (default results/index.jsonl) as a pandas DataFrame, one row per
    run, oldest first: time (UTC), script, data (dict of SAME_DATA_KEYS), split, split_seed,
    options_hash, options, best_arm, its recall@10 / recall@20 / ndcg@10 and users, verdict,
    file (relative to the results folder), per_user_file."""
    import pandas as pd

    columns = [
        "time", "script", "data", "split", "split_seed", "options_hash", "options",
        "best_arm", *HEADLINE_METRICS, "users", "verdict", "file", "per_user_file",
    ]  # fmt: skip
    df = pd.DataFrame(index_rows(results_dir), columns=columns)
    df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    return df


def _same(a, b) -> bool:
    plain = lambda v: json.loads(json.dumps(v, default=str))
    return plain(a) == plain(b)


def same_data(data: dict, other: dict) -> bool:
    return all(_same(data.get(k), other.get(k)) for k in SAME_DATA_KEYS)


def newest_run(
    script: str, data: dict, split: str, split_seed: int, results_dir: str | Path | None = None
) -> Path | None:
    """The results JSON of the newest run of `script` on the same data (SAME_DATA_KEYS) and
    split, by the index; without an index row, the newest <script>_*.json file (by time
    written) that says it was run on that data and split (files from before the index)."""
    folder = Path(results_dir or config.RESULTS_DIR)
    same = lambda mode, seed, d: mode == split and seed == split_seed and same_data(data, d or {})
    for row in reversed(index_rows(folder)):
        path = folder / str(row.get("file"))
        ours = row.get("script") == script and path.is_file()
        if ours and same(row.get("split"), row.get("split_seed"), row.get("data")):
            return path
    files = sorted(folder.glob(f"{script}_*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(files):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        sp = (r.get("split") or {}) if isinstance(r, dict) else {}
        if sp and same(sp.get("mode"), sp.get("seed"), r.get("data")):
            return path
    return None


def resolve_results(name: str, results_dir: str | Path | None = None) -> Path | None:
    """An experiment's results JSON named on the command line: a path, a file name in the
    results folder, or @N, row N of the index (@-1: the newest run). None when `name` is
    none of these or not an experiment's results (an eval run, say)."""
    folder = Path(results_dir or config.RESULTS_DIR)
    if re.fullmatch(r"@-?\d+", name):
        rows = index_rows(folder)
        try:
            path = folder / str(rows[int(name[1:])].get("file"))
        except IndexError:
            return None
    else:
        path = next((p for p in (Path(name), folder / name) if p.is_file()), None)
    try:
        d = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
    ok = isinstance(d, dict) and isinstance(d.get("metrics"), dict) and "parts" not in d
    return path if ok else None


# ---------------------------------------------------------------------------------------------
# pairing two runs


def paired_run_gains(path_a: str | Path, path_b: str | Path) -> dict:
    """Run b against run a: arms only in b (added) or only in a (removed), and for each arm
    in both, per saved metric, the mean per-user gain b - a with its 95% bootstrap interval
    over the users both runs scored for that arm (metrics.paired_mean_ci; users matched by
    original user id), or why there is none (a run without per-user metrics).
    {"added", "removed", "gains": {arm: {metric: {"mean", "ci95", "n"} | None}}, "notes"}."""
    a, b = (json.loads(Path(p).read_text()) for p in (path_a, path_b))
    arms_a, arms_b = list(a.get("metrics") or {}), list(b.get("metrics") or {})
    ua, ub = load_per_user(path_a), load_per_user(path_b)
    notes = [
        f"{Path(p).name}: no per-user metrics saved"
        for p, u in ((path_a, ua), (path_b, ub))
        if not u
    ]
    if not same_data(a.get("data") or {}, b.get("data") or {}):
        notes.append("measured on other data: users matched by original user id")
    if (a.get("split") or {}).get("mode") != (b.get("split") or {}).get("mode"):
        notes.append("other split modes: the held-out rows differ")
    gains = {}
    for arm in (x for x in arms_b if x in arms_a):
        pa, pb = ua.get(arm), ub.get(arm)
        gains[arm] = {m: None for m in PER_USER_METRICS}
        if pa is None or pb is None:
            continue
        _, ia, ib = np.intersect1d(pa["users"], pb["users"], return_indices=True)
        for m in PER_USER_METRICS:
            if m in pa and m in pb:
                diff = pb[m][ib].astype(float) - pa[m][ia].astype(float)
                gains[arm][m] = paired_mean_ci(diff)
    return {
        "added": [x for x in arms_b if x not in arms_a],
        "removed": [x for x in arms_a if x not in arms_b],
        "gains": gains,
        "notes": notes,
    }
