#!/usr/bin/env bash
# The one-call GPU check: every kernel checked for correctness, the key ratios timed next to
# their errors, nothing lost when a step runs out of time.
#
# Requires a CUDA GPU of compute capability 8.0 or newer; Python (PYTHON, default python3)
# with torch, Triton, numpy, pytest and pytest-benchmark installed, and setuptools for the
# editable install (without it the working tree is put on PYTHONPATH instead); no network;
# OUT naming an empty folder for the results (benchmarks/results/gpu-check when unset). Run
# from a working tree of the repository:
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: the same steps on the CPU, tiny sizes
#
# One deadline: GPU_CHECK_BUDGET_S seconds from the start (default 500, 8 min 20 s: a
# 10-minute call keeps 100 s to spare). Each step has a slot, the time assumed for it on one
# H100-class GPU with 16 CPU cores and cold Triton and torch.compile caches, and its
# deadline is the sum of the slots up to it, counted from the start: a step that ends early
# leaves its time to the later ones, a slow one shortens them instead of overrunning. Each
# step runs under `timeout -s INT -k GRACE_S`: interrupted GRACE_S seconds before its
# deadline, killed at it; a step with less than MIN_STEP_S left is skipped, saying so. The
# slots scale with GPU_CHECK_BUDGET_S. In order of information per second:
#
#   step     slot deadline  assumed work
#   install   30     30     pip install --no-index --no-build-isolation --no-deps -e .
#                           (5-15 s); if ecgfast.kernels then does not import, the source
#                           folders are put on PYTHONPATH instead
#   env       20     50     card, driver, versions, requirements; every ecgfast.kernels
#                           module imported (a failure: the ONE reason the Triton steps
#                           are skipped, while the eager baselines still run)
#   kernels  100    150     CUDA kernel tests at the production tiles, 2 processes at once:
#                           NT-Xent (D = 300/512/1024, fp16, 2N = 65536, then bf16, TF32,
#                           fp32 at 8190/16384) and the encoder (autocast through it, then
#                           the SE-pool and conv kernels at odd shapes): about 40 Triton
#                           compiles of 1-3 s each per process
#   nt_xent   70    220     NT-Xent benchmarks, bf16 D = 128: per 2N in {8192, 65536,
#                           262144} eager, triton, eager fp32 strict, then triton at 2^20;
#                           each with its correctness (float64 up to 65536)
#   encoder   80    300     encoder block benchmarks, batch 256: bf16 then fp32, per block
#                           eager then triton (15 steps and one float64 check each)
#   compile  110    410     torch.compile of the block, bf16 only, CUDA graphs first
#                           (one fresh compile per case: 15-25 s)
#   tests     70    480     the remaining CUDA tests, 3 processes at once (hundreds of
#                           Triton compiles: what is not reached is reported as such)
#   summary   20    500     summary.json and a table in the log
#
# Every case of every step appends one JSON line (name, status, numbers, error) to
# $OUT/cases.jsonl the moment it ends (benchmarks/gpu_check_cases.py), so a step cut off
# keeps every case it finished. Files in $OUT, flat: gpu_check.log (everything printed,
# each step's output capped at LOG_CAP bytes), env.json, cases.jsonl, summary.json.
#
# --dry-run: on the CPU (Triton under TRITON_INTERPRET=1, tiny sizes, torch.compile with
# backend "eager", pip's own --dry-run), with smaller lists of tests. One case of the
# encoder step is cut off on purpose inside its timed rounds (the step's `timeout` is made
# to expire there), proving that a cut step keeps its finished cases and the summary reads
# it; the summary fails unless it did. tests/test_gpu_check.py runs it.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
case "${1:-}" in
    "") ;;
    --dry-run) dry=1 ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

out="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
cases="$out/cases.jsonl"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
exec > >(tee -a "$out/gpu_check.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# name:slot_s (GPU):slot_s (dry run)
PLAN=(install:30:20 env:20:15 kernels:100:40 nt_xent:70:30 encoder:80:30 compile:110:40
      tests:70:40 summary:20:15)
GRACE_S=$( ((dry)) && echo 8 || echo 10 )
MIN_STEP_S=5
LOG_CAP=$((512 * 1024))  # per process: the log stays under 5 MB
slot_total=0
for p in "${PLAN[@]}"; do
    IFS=: read -r _ gpu_s dry_s <<<"$p"
    slot_total=$((slot_total + ( dry ? dry_s : gpu_s )))
done
budget="${GPU_CHECK_BUDGET_S:-$slot_total}"
declare -A DEADLINE
json_plan='' cum=0
echo "gpu_check $( ((dry)) && echo "DRY RUN (CPU, interpreter, tiny sizes)") $(date -u +%FT%TZ)"
echo "  step     slot s  deadline s  (one deadline: $budget s from the start; grace $GRACE_S s)"
for p in "${PLAN[@]}"; do
    IFS=: read -r name gpu_s dry_s <<<"$p"
    slot=$(( (dry ? dry_s : gpu_s) * budget / slot_total ))
    cum=$((cum + slot))
    DEADLINE[$name]=$cum
    printf '  %-8s %6d  %10d\n' "$name" "$slot" "$cum"
    json_plan+="${json_plan:+,}{\"step\":\"$name\",\"planned_s\":$slot,\"deadline_s\":$cum}"
done
printf '{"event":"plan","dry_run":%s,"budget_s":%d,"grace_s":%d,"steps":[%s]}\n' \
    "$( ((dry)) && echo true || echo false)" "$budget" "$GRACE_S" "$json_plan" >>"$cases"

if ((dry)); then
    export ECGFAST_GPU_DRY_RUN=1 TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
else
    unset TRITON_INTERPRET ECGFAST_GPU_DRY_RUN ECGFAST_GPU_CHECK_CUT
fi
export PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}"
start=0  # bash's SECONDS counts from the script's start

json_str() {  # a JSON string of $1 (backslash, quote, control characters escaped)
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/ }
    printf '"%s"' "${s//[$'\001'-$'\037']/ }"
}
record() {  # record STEP STATUS REASON SECONDS LIMIT EXITS
    printf '{"event":"step","step":"%s","status":"%s","reason":%s,"seconds":%d,"limit_s":%d,"exits":[%s]}\n' \
        "$1" "$2" "$(json_str "$3")" "$4" "$5" "$6" >>"$cases"
    echo "== $1: $2 after $4 s${3:+ ($3)}"
}
limit_for() {  # seconds step $1 may run: up to GRACE_S before its deadline
    echo $(( DEADLINE[$1] - (SECONDS - start) - GRACE_S ))
}
at_least() { echo $(( $1 > MIN_STEP_S ? $1 : MIN_STEP_S )); }  # for install, env, summary
capped() {  # capped PREFIX: copy stdin to stdout, lines prefixed, at most LOG_CAP bytes
    awk -v p="$1" -v max="$LOG_CAP" '{ n += length($0) + 1 }
        n <= max { print p $0; fflush(); next }
        !done { print p "[output past " max " bytes left out of the log]"; fflush(); done = 1 }'
}
bounded() {  # bounded LIMIT PREFIX CMD...: run CMD under timeout, output capped; its status
    local limit=$1 prefix=$2
    shift 2
    timeout -s INT -k "$GRACE_S" "$limit" "$@" 2>&1 | capped "$prefix"
    return "${PIPESTATUS[0]}"
}
step() {  # step NAME GROUP... : each GROUP a "|"-separated pytest argument list, run at once
    local name=$1 t0=$SECONDS limit g i status=pass reason="" exits="" pids=() rc
    shift
    limit=$(limit_for "$name")
    if [[ -n ${SKIP[$name]:-} ]]; then
        record "$name" skipped "${SKIP[$name]}" 0 0 ""
        return
    fi
    if ((limit < MIN_STEP_S)); then
        record "$name" skipped "no time left: ${limit} s before its deadline" 0 0 ""
        return
    fi
    echo "== $name (limit $limit s, $# process(es))"
    printf '{"event":"step-start","step":"%s","limit_s":%d}\n' "$name" "$limit" >>"$cases"
    i=0
    for g in "$@"; do
        i=$((i + 1))
        IFS='|' read -r -a args <<<"$g"
        (bounded "$limit" "[$name.$i] " "$PY" benchmarks/gpu_check.py pytest --step "$name" \
            --group "$i" --jsonl "$cases" -- -q -rfE --tb=short -p no:cacheprovider "${args[@]}") &
        pids+=($!)
    done
    for g in "${pids[@]}"; do
        wait "$g"
        rc=$?
        exits+="${exits:+,}$rc"
        if ((rc == 124 || rc == 137)); then
            status=timeout reason="cut off at its deadline"
        elif ((rc != 0)) && [[ $status == pass ]]; then
            status=fail reason="pytest exit $rc"
        fi
    done
    record "$name" "$status" "$reason" $((SECONDS - t0)) "$limit" "$exits"
}

declare -A SKIP
# ------------------------------------------------------------------ install
t0=$SECONDS
limit=$(at_least "$(limit_for install)")
pip_args=(--no-index --no-build-isolation --no-deps -q -e .)
((dry)) && pip_args=(--dry-run "${pip_args[@]}")  # a dry run installs nothing
echo "== install (limit $limit s): pip install ${pip_args[*]}"
bounded "$limit" "[install] " "$PY" -m pip install "${pip_args[@]}"
rc=$?
importable() { (cd "$tmp" && "$PY" -c "import ecgfast.kernels" 2>"$tmp/import.err"); }  # not from ./ecgfast
if ((rc == 0)) && importable; then
    how="installed"
elif importable; then
    how="importable as it was"
else
    "$PY" benchmarks/gpu_check.py overlay "$tmp/overlay" >/dev/null
    export PYTHONPATH="$tmp/overlay:$PYTHONPATH"
    how="source folders on PYTHONPATH"
fi
if importable; then
    record install pass "pip exit $rc; ecgfast imports ($how)" $((SECONDS - t0)) "$limit" "$rc"
else
    record install fail "ecgfast does not import: $(tail -n 1 "$tmp/import.err")" \
        $((SECONDS - t0)) "$limit" "$rc"
fi

# ------------------------------------------------------------------ env
t0=$SECONDS
limit=$(at_least "$(limit_for env)")
echo "== env (limit $limit s)"
bounded "$limit" "[env] " "$PY" benchmarks/gpu_check.py env "$out/env.json" "$tmp/triton_reason"
rc=$?
triton_reason="$(cat "$tmp/triton_reason" 2>/dev/null)"
if [[ ! -s $out/env.json ]]; then
    triton_reason="the environment check did not finish (exit $rc)"
fi
record env "$( ((rc == 0)) && echo pass || echo fail)" \
    "$( ((rc != 0)) && echo "exit $rc; ")$triton_reason" $((SECONDS - t0)) "$limit" "$rc"
not_triton=()
if [[ -n $triton_reason ]]; then
    SKIP[kernels]="Triton steps skipped: $triton_reason"
    SKIP[tests]="Triton steps skipped: $triton_reason"
    not_triton=(-k "not triton")
    echo "== Triton steps skipped: $triton_reason"
fi

# ------------------------------------------------------------------ kernels
k=tests/kernels
if ((dry)); then
    nt_kernels="$k/test_cuda_kernels.py"
    enc_kernels="$k/test_nt_xent_triton_production.py::test_same_strides_keeps_the_device"
else
    nt_kernels="$k/test_nt_xent_triton_production.py|$k/test_cuda_kernels.py"
    enc_kernels="$k/test_encoder_block_triton_autocast.py|$k/test_encoder_block_triton_se_residual_pool.py::test_se_residual_pool_matches_reference|$k/test_encoder_block_triton_conv1d.py::test_conv_act_matches_reference"
fi
step kernels "$nt_kernels" "$enc_kernels"

# ------------------------------------------------------------------ benchmarks
step nt_xent "benchmarks/bench_nt_xent.py|-k|cuda${not_triton[1]:+ and ${not_triton[1]}}"
ids=()
for dtype in bf16 fp32; do
    for block in $( ((dry)) && echo 3 || echo 1 2 3 ); do
        for variant in eager triton; do
            [[ -n $triton_reason && $variant == triton ]] && continue
            ids+=("benchmarks/bench_encoder_block.py::test_encoder_block_forward_backward[cuda-$block-$variant-$dtype]")
        done
    done
done
expect_cut=()
if ((dry)); then  # cut off inside the timed rounds of this case, on purpose
    export ECGFAST_GPU_CHECK_CUT="[cuda-3-eager-fp32]"
    expect_cut=(--expect-cut encoder)
fi
step encoder "$(IFS='|'; echo "${ids[*]}")"
unset ECGFAST_GPU_CHECK_CUT
ids=()
for variant in compile-cudagraphs compile; do  # bf16 only, CUDA graphs (the target) first
    for block in $( ((dry)) && echo 3 || echo 1 2 3 ); do
        ids+=("benchmarks/bench_encoder_block.py::test_encoder_block_forward_backward[cuda-$block-$variant-bf16]")
    done
done
step compile "$(IFS='|'; echo "${ids[*]}")"

# ------------------------------------------------------------------ remaining CUDA tests
if ((dry)); then
    step tests "$k/test_nt_xent_triton.py::test_production_config_path" \
        "$k/test_encoder_block_triton.py::test_triton_backend_limits_name_every_reason"
else  # CPU-only cases left out: the AOT audit (no GPU needed), the kernel groups' cases run above
    step tests "$k/test_nt_xent_triton.py" "$k/test_encoder_block_triton.py" \
        "$k/test_encoder_block_triton_conv1d.py|--deselect|$k/test_encoder_block_triton_conv1d.py::test_conv_act_matches_reference|-k|not audited|$k/test_encoder_block_triton_se_residual_pool.py|--deselect|$k/test_encoder_block_triton_se_residual_pool.py::test_se_residual_pool_matches_reference|tests/test_precision.py::test_precision_resolution_and_refusals|tests/test_precision.py::test_fp16_with_scaler_on_a_large_logit_batch_has_no_nan|tests/test_transforms.py::test_dtype_device_contiguity_preserved"
fi

# ------------------------------------------------------------------ summary
t0=$SECONDS
limit=$(at_least $(( budget - (SECONDS - start) - GRACE_S )))  # the summary always runs
printf '{"event":"step-start","step":"summary","limit_s":%d}\n' "$limit" >>"$cases"
echo "== summary (limit $limit s)"
timeout -s INT -k "$GRACE_S" "$limit" "$PY" benchmarks/gpu_check.py summary "$out" \
    $( ((dry)) && echo --dry-run ) "${expect_cut[@]}"
rc=$?
echo "== summary: exit $rc after $((SECONDS - t0)) s; $((SECONDS - start)) s in all"
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null  # the log is complete when the script ends
exit "$rc"
