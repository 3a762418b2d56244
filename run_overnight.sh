#!/usr/bin/env bash
# The whole study in order: two_tower.py, the five experiments, the evals, then
# results/REPORT.md with its plots. Resumable and honest about what it skipped.
#
#   bash run_overnight.sh --quick                          # small settings, ~1.5 min (--llm none)
#   bash run_overnight.sh > logs/orchestration.log 2>&1 &  # the full study, in the background
#   bash run_overnight.sh --data-dir DIR --llm local       # real CSVs, the local model
#
# Each step writes logs/<step>.log and prints one status line (ok / skipped: reason /
# failed: reason), also kept in logs/overnight_summary.txt. A failing step does not stop
# the others, but the run then exits 1 and its last line says which failed. Run
# `bash run_overnight.sh --help` for the options, the resume rules and the exit status.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: bash run_overnight.sh [--quick] [--data-dir DIR] [--llm auto|claude|local|none]
                             [--no-llm] [--split interaction|temporal] [--threads N]
                             [--steps LIST] [--args STEP="OPTIONS"]... [--force] [--dry-run]
                             [-h|--help]

Runs the study in order, each step with its own log under logs/ and a one-line status:
  two_tower  llm_item_enrichment  llm_user_narration  llm_reranker  synthetic_context
  exp5_dual_head  evals (evals/run_evals.py)  report (evals/report.py -> results/REPORT.md)

options:
  --quick          the whole study on small settings (each script's --quick, shown by
                   its --help; evals on 10 reranker users)
  --data-dir DIR   Kaggle-format CSVs, passed to every experiment (default: the scripts'
                   choice: $INSTACART_DATA_DIR, data/instacart/, else the generated sample)
  --llm X          LLM backend passed to the LLM experiments (default $LLM_BACKEND, else
                   auto: Claude with a key, else the local model when installed, else the
                   LLM arms are skipped; the run says which). --no-llm = --llm none
  --split S        the split passed to every experiment (default: the scripts' default)
  --threads N      torch CPU threads per step (default: torch's choice)
  --steps LIST     comma list of steps to consider (default: all, in the order above)
  --args STEP="OPTIONS"
                   extra options for one step's script, e.g. sizes for a local-model run:
                   --args llm_reranker="--llm-users 100" (repeatable; part of the step's
                   command line, so changing them reruns the step)
  --force          rerun the selected steps even when their results are up to date
  --dry-run        print what would run or be skipped, run nothing
  -h, --help       this help

resuming: after each step a marker results/.overnight/<step>.marker records its command
line, git commit (for the record only: a commit that changes no code the step runs does
not rerun it), a hash of the code it runs (its script and every repository module it
imports, directly or not; pyproject.toml; uncommitted edits count), the data folder's
files (name, size, mtime), the LLM backend it resolved to (LLM steps), the exit status,
wall time and results file with its hash. A step is skipped when all of these match, it
exited 0 and its results file is still the one it wrote; the evals step also reruns when
any experiment's results changed; the report is always rebuilt. --dry-run says why each
step would run. A step that is killed or fails leaves no ok marker, so the next
run starts again there; finished steps are not redone (and the LLM cache means paid or
computed answers are never redone either). Each run records itself in
results/.overnight/run.marker (run id, start, steps, status) and its id in the marker of
every step it ran or found up to date; evals/report.py names the stale steps from these
(failed, interrupted, or not reached by the last run). A run that starts marks the
REPORT.md in place as stale (first line) until its report step rebuilds it; on INT, TERM
or HUP the report is rebuilt before the run exits.

exit status: 0 when every step ended ok or was skipped (up to date, script not found; LLM
arms skipped by --llm is no failure), 1 when any step failed (the last line says which),
2 for a bad option, 130 when interrupted.

environment: OVERNIGHT_PYTHON (default "uv run python") runs every step; TQDM_MININTERVAL
(default 30 s) thins progress bars in the logs.
EOF
}

die() { echo "error: $*" >&2; exit 2; }

cd "$(dirname "$0")" || die "cannot enter the repository folder"
PY=${OVERNIGHT_PYTHON:-uv run python}
ALL_STEPS=(two_tower llm_item_enrichment llm_user_narration llm_reranker synthetic_context
           exp5_dual_head evals report)
LLM_STEPS=" llm_item_enrichment llm_user_narration llm_reranker synthetic_context "
MARKERS=results/.overnight
RUN_MARKER=$MARKERS/run.marker
SUMMARY=logs/overnight_summary.txt
REPORT=results/REPORT.md

QUICK=0 FORCE=0 DRY=0 DATA_DIR="" LLM=${LLM_BACKEND:-auto} SPLIT="" THREADS="" STEPS=""
declare -A STEP_ARGS=()
add_step_args() {   # STEP=OPTIONS
    local step=${1%%=*}
    [[ $1 == *=* && " ${ALL_STEPS[*]} " == *" $step "* ]] ||
        die "--args needs STEP=OPTIONS with a step among: ${ALL_STEPS[*]}"
    STEP_ARGS[$step]=${1#*=}
}
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --force) FORCE=1 ;;
        --dry-run) DRY=1 ;;
        --no-llm) LLM=none ;;
        --data-dir|--llm|--split|--threads|--steps|--args)
            [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
            case $1 in
                --data-dir) DATA_DIR=$2 ;; --llm) LLM=$2 ;; --split) SPLIT=$2 ;;
                --threads) THREADS=$2 ;; --steps) STEPS=$2 ;; --args) add_step_args "$2" ;;
            esac
            shift ;;
        --args=*) add_step_args "${1#*=}" ;;
        --data-dir=*) DATA_DIR=${1#*=} ;;
        --llm=*) LLM=${1#*=} ;;
        --split=*) SPLIT=${1#*=} ;;
        --threads=*) THREADS=${1#*=} ;;
        --steps=*) STEPS=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
case $LLM in auto|claude|local|none) ;; *) die "--llm must be auto, claude, local or none" ;; esac
case $SPLIT in ""|interaction|temporal) ;; *) die "--split must be interaction or temporal" ;; esac
[[ -z $THREADS || $THREADS =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer"
[[ -z $DATA_DIR || -d $DATA_DIR ]] || die "--data-dir $DATA_DIR is not a folder"
SELECTED=("${ALL_STEPS[@]}")
if [[ -n $STEPS ]]; then
    SELECTED=()
    IFS=, read -r -a wanted <<< "$STEPS"
    for w in "${wanted[@]}"; do
        [[ " ${ALL_STEPS[*]} " == *" $w "* ]] || die "unknown step '$w' (steps: ${ALL_STEPS[*]})"
    done
    for s in "${ALL_STEPS[@]}"; do    # always in study order
        [[ ",$STEPS," == *",$s,"* ]] && SELECTED+=("$s")
    done
fi

mkdir -p logs results "$MARKERS" evals/results
if [[ $DRY -eq 0 ]] && command -v flock > /dev/null; then
    exec 9> "$MARKERS/lock"
    flock -n 9 || die "another run_overnight.sh is running here ($MARKERS/lock)"
fi

sha() { sha256sum | cut -c1-16; }
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo "no-git")

# overnight.py answers the questions that need Python (see its docstring): `deps` and
# `data-dir` need only the standard library, so a bare python3 runs them when there is one
HELPER_PY=python3
command -v python3 > /dev/null || HELPER_PY=$PY
helper() { $HELPER_PY overnight.py "$@"; }

# the LLM backend --llm resolves to, once per run (llm.resolve_backend: the one rule)
resolve_llm() {
    local out
    out=$($PY overnight.py backend "$LLM" 2>/dev/null) ||
        out="unknown (could not import llm): the experiments decide"
    echo "${out:-unknown}"
}

# what a step's results depend on besides its command line: the content of its script and
# of every repository module it imports, directly or not (`overnight.py deps`: read with ast,
# nothing imported; llm/ package files included), plus pyproject.toml and
# prompt_versions.json; uncommitted edits count
code_hash() {
    local f
    for f in $(helper deps "$1") pyproject.toml prompt_versions.json; do
        [[ -f $f ]] && { echo "$f"; cat "$f"; }
    done | sha
}
# the data folder's CSV files (name, size, mtime); DATA_SRC: the folder the steps read
# (`overnight.py data-dir`: --data-dir, $INSTACART_DATA_DIR, data/instacart/; '' = sample)
data_hash() {
    if [[ -z $DATA_SRC ]]; then echo "generated-sample"; return; fi
    find "$DATA_SRC" -maxdepth 1 -type f \( -name '*.csv' -o -name '*.csv.*' \) \
        -printf '%f %s %T@\n' 2>/dev/null | sort | sha
}
inputs_hash() {   # the evals step reads the experiments' outputs and the LLM cache
    {
        for f in results/*.json results/*.jsonl; do [[ -f $f ]] && { echo "$f"; cat "$f"; }; done
        for f in cache/*.sqlite data/cache/*.sqlite ${LLM_CACHE_PATH:-}; do
            [[ -f $f ]] && stat -c '%n %s %Y' "$f"
        done
    } | sha
}

build_cmd() {   # sets CMD (script + options) for step $1
    local s=$1
    CMD=()
    case $s in
        evals)   # the reranker evals read the answers of this study's llm_reranker run
            CMD=(evals/run_evals.py --descriptions --reranker --quiet
                 --reranker-results "$(reranker_results)")
            [[ $QUICK -eq 1 ]] && CMD+=(--reranker-users 10) ;;
        report)
            CMD=(evals/report.py) ;;
        *)
            CMD=("$s.py")
            [[ $QUICK -eq 1 ]] && CMD+=(--quick) ;;
    esac
    case $s in evals|report) append_step_args "$s"; return ;; esac
    [[ $LLM_STEPS == *" $s "* ]] && CMD+=(--llm "$LLM")
    [[ -n $DATA_DIR ]] && CMD+=(--data-dir "$DATA_DIR")
    [[ -n $SPLIT ]] && CMD+=(--split "$SPLIT")
    [[ -n $THREADS ]] && CMD+=(--threads "$THREADS")
    append_step_args "$s"
}
append_step_args() {   # the step's --args options, word-split
    local extra
    if [[ -n ${STEP_ARGS[$1]:-} ]]; then
        read -r -a extra <<< "${STEP_ARGS[$1]}"
        CMD+=("${extra[@]}")
    fi
    return 0
}

# the results JSON of the llm_reranker step when its last run succeeded, else "none"
reranker_results() {
    local m=$MARKERS/llm_reranker.marker res=""
    [[ $(marker_get "$m" status) == 0 ]] && res=$(marker_get "$m" results)
    echo "${res:-none}"
}

# the results file a step produced: the newest one written since $2 (a stamp file)
find_results() {
    local s=$1 stamp=$2 pattern
    case $s in
        evals) pattern="evals/results/run_*.json" ;;
        report) pattern="results/REPORT.md" ;;
        *) pattern="results/${s}_*.json" ;;
    esac
    # shellcheck disable=SC2086
    ls -t $pattern 2>/dev/null | while read -r f; do
        [[ $f -nt $stamp ]] && { echo "$f"; break; }
    done
}

marker_get() { sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1; }

write_marker() {   # step status wall results reason
    local m=$MARKERS/$1.marker
    {
        echo "step=$1"
        echo "run=$RUN_ID"
        echo "key=$KEY"
        echo "command=${CMD[*]}"
        echo "mode=$MODE"
        echo "commit=$COMMIT"
        echo "code=$CODE"
        echo "data=$DATA"
        echo "llm=$LLM_KEY"
        echo "llm_status=$LLM_STATUS"
        echo "inputs=$INPUTS"
        echo "status=$2"
        echo "wall_s=$3"
        echo "results=$4"
        echo "results_sha=$([[ -n $4 && -f $4 ]] && sha < "$4")"
        echo "reason=$5"
        echo "log=logs/$1.log"
        echo "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "$m.$$.tmp" && mv "$m.$$.tmp" "$m"
}

marker_touch() {   # step $1 was found up to date by this run: its marker gets this run's id
    local m=$MARKERS/$1.marker
    { grep -v '^run=' "$m"; echo "run=$RUN_ID"; } > "$m.$$.tmp" && mv "$m.$$.tmp" "$m"
}

write_run_marker() {   # status [failed steps]: this run, for evals/report.py
    {
        echo "run=$RUN_ID"
        echo "started=$STARTED"
        echo "mode=$MODE"
        echo "commit=$COMMIT"
        echo "steps=${SELECTED[*]}"
        echo "status=$1"
        echo "failed=${2:-}"
        [[ $1 == running ]] || echo "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "$RUN_MARKER.$$.tmp" && mv "$RUN_MARKER.$$.tmp" "$RUN_MARKER"
}

# empty when step $1 is up to date according to its marker $2, else why it has to run
why_run() {
    local s=$1 m=$2 res
    [[ $FORCE -eq 1 ]] && { echo "--force"; return; }
    [[ $s == report ]] && { echo "always rebuilt"; return; }
    [[ -f $m ]] || { echo "never run"; return; }
    case $(marker_get "$m" status) in
        0) ;;
        running) echo "its last run was interrupted"; return ;;
        *) echo "its last run did not succeed"; return ;;
    esac
    [[ $(marker_get "$m" command) == "${CMD[*]}" ]] || { echo "other options"; return; }
    [[ $(marker_get "$m" code) == "$CODE" ]] || { echo "code changed"; return; }
    [[ $(marker_get "$m" data) == "$DATA" ]] || { echo "data changed"; return; }
    [[ $(marker_get "$m" llm) == "$LLM_KEY" ]] || { echo "other LLM backend"; return; }
    [[ $(marker_get "$m" inputs) == "$INPUTS" ]] || { echo "experiment results changed"; return; }
    [[ $(marker_get "$m" key) == "$KEY" ]] || { echo "marker from another version"; return; }
    res=$(marker_get "$m" results)
    [[ -n $res && -f $res ]] || { echo "results file missing"; return; }
    # still the file it wrote (not overwritten by another run of the script)
    [[ $(sha < "$res") == $(marker_get "$m" results_sha) ]] || echo "results overwritten"
}

say() { echo "$*"; [[ $DRY -eq 1 ]] || echo "$*" >> "$SUMMARY"; }

CHILD="" LLM_KEY="" KEY="" CODE="" INPUTS="" STEP="" RUN_ID="" FAILED=() SKIPPED=()
on_signal() {
    trap - INT TERM HUP   # a second signal stops the report rebuild below
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    local note=""
    if [[ $DRY -eq 0 && -n $RUN_ID ]]; then
        write_run_marker interrupted "${FAILED[*]}"
        # the report names the stale steps (the interrupted one, those not reached)
        if [[ " ${SELECTED[*]} " == *" report "* && $STEP != report && -f evals/report.py ]]; then
            if $PY evals/report.py >> logs/report.log 2>&1; then
                note="; $REPORT rebuilt: it names the stale steps"
            else
                note="; rebuilding $REPORT failed (logs/report.log)"
            fi
        fi
    fi
    say "interrupted in step ${STEP:-?}: the step in progress keeps no ok marker; rerun to" \
        "resume$note"
    exit 130
}
trap on_signal INT TERM HUP

DATA_SRC=$(helper data-dir "$DATA_DIR") || die "overnight.py data-dir failed (see above)"
LLM_STATUS=$(resolve_llm)
DATA=$(data_hash)
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}
[[ $DRY -eq 1 ]] || : > "$SUMMARY"
MODE=$([[ $QUICK -eq 1 ]] && echo quick || echo full)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [[ $DRY -eq 0 ]]; then
    RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
    write_run_marker running
    # the report in place is from an earlier run until this one's report step rebuilds it
    [[ -f $REPORT ]] && { helper stale-report "$REPORT" "$STARTED" > /dev/null ||
        echo "warning: could not mark $REPORT as stale" >&2; }
fi
say "run_overnight.sh $STARTED: $MODE study," \
    "commit ${COMMIT:0:10}, data ${DATA_SRC:-generated sample}," \
    "steps ${SELECTED[*]}"
say "LLM: $LLM_STATUS"

T_ALL=$(date +%s)
n=0
for step in "${SELECTED[@]}"; do
    n=$((n + 1))
    STEP=$step
    tag="[$n/${#SELECTED[@]}] $step"
    build_cmd "$step"
    script=${CMD[0]}
    if [[ ! -f $script ]]; then
        say "$tag: skipped: $script not found (not written yet)"
        [[ $DRY -eq 1 ]] || { KEY="" CODE="" INPUTS=""; write_marker "$step" "skipped" "" "" \
            "$script not found"; }
        SKIPPED+=("$step")
        continue
    fi
    CODE=$(code_hash "$script")
    INPUTS=""
    [[ $step == evals ]] && INPUTS=$(inputs_hash)
    LLM_KEY=""   # the backend matters to the LLM experiments only
    [[ $LLM_STEPS == *" $step "* ]] && LLM_KEY=$LLM_STATUS
    KEY=$(printf '%s\n' "${CMD[*]}" "$CODE" "$DATA" "$LLM_KEY" "$INPUTS" | sha)
    m=$MARKERS/$step.marker
    why=$(why_run "$step" "$m")
    if [[ -z $why ]]; then
        say "$tag: skipped: up to date (same command, commit, code, data and LLM;" \
            "$(marker_get "$m" wall_s) s on $(marker_get "$m" finished)," \
            "$(marker_get "$m" results))"
        [[ $DRY -eq 1 ]] || marker_touch "$step"
        continue
    fi
    if [[ $DRY -eq 1 ]]; then
        say "$tag: would run ($why): $PY ${CMD[*]}"
        continue
    fi
    log=logs/$step.log
    write_marker "$step" running "" "" "started"
    stamp=$MARKERS/.$step.started
    touch "$stamp"
    sleep 0.05   # a clock tick: what this step writes is strictly newer than the stamp
    echo "$tag: running $PY ${CMD[*]} (log $log)"
    t0=$(date +%s)
    {
        echo "# $PY ${CMD[*]}"
        echo "# commit $COMMIT, started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "$log"
    # shellcheck disable=SC2086
    $PY "${CMD[@]}" >> "$log" 2>&1 &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    wall=$(( $(date +%s) - t0 ))
    res=$(find_results "$step" "$stamp")
    rm -f "$stamp"
    if [[ $rc -eq 0 && -n $res ]]; then
        write_marker "$step" 0 "$wall" "$res" ""
        extra=""
        if [[ $LLM_STEPS == *" $step "* && $LLM_STATUS == none* ]]; then
            extra=", LLM arms skipped"
        fi
        say "$tag: ok (${wall} s$extra; $res)"
    else
        if [[ $rc -eq 0 ]]; then
            reason="exited 0 but wrote no results file"
        elif [[ $rc -ge 128 ]]; then
            reason="killed by signal $((rc - 128))"
        else
            reason=$(grep -E '^(error|Error|[A-Za-z]*Error|Traceback)' "$log" | tail -n 1)
            [[ -z $reason ]] && reason=$(grep -v '^\s*$' "$log" | tail -n 1)
            reason="exit $rc: ${reason:0:160}"
        fi
        write_marker "$step" "$([[ $rc -eq 0 ]] && echo no-results || echo "$rc")" "$wall" "" \
            "$reason"
        say "$tag: failed: $reason (after ${wall} s; log $log)"
        FAILED+=("$step")
    fi
done
STEP=""
[[ $DRY -eq 1 ]] && exit 0
tail="in $(( $(date +%s) - T_ALL )) s; summary $SUMMARY; report $REPORT"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    write_run_marker failed "${FAILED[*]}"
    failed_list=$(printf '%s, ' "${FAILED[@]}")
    failed_list=${failed_list%, }
    say "FAILED: ${#FAILED[@]} of ${#SELECTED[@]} steps failed ($failed_list); done $tail"
    exit 1
fi
write_run_marker done
ok=$(( ${#SELECTED[@]} - ${#SKIPPED[@]} ))
skipped=""
[[ ${#SKIPPED[@]} -gt 0 ]] && skipped=", ${#SKIPPED[@]} skipped (script not found: ${SKIPPED[*]})"
say "done: $ok steps ok or up to date$skipped $tail"
