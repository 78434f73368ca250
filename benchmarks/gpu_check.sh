#!/usr/bin/env bash
# The one-call GPU check for a machine lent by the `device` tool (one H200: torch + CUDA,
# Triton, a CPU-only onnxruntime, no network; 10 minutes a call, 8 files back):
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, once: packages the image lacks,
#                                                 # into .whl/ (git-ignored), Python 3.12
#   bash benchmarks/gpu_check.sh                  # there (carry .whl if fetched)
#   bash benchmarks/gpu_check.sh --dry-run        # here: the same steps on the CPU, tiny
#
# Steps, in this order (benchmarks first: they are the rarest data), each bounded by
# `timeout -s INT` (pytest still writes its JSON/XML when interrupted) and each writing its
# file into $OUT as soon as it ends (benchmarks/results/gpu-check when OUT is unset):
#   env       card, driver, versions, onnxruntime providers        env.json
#   ntxent    bench_nt_xent GPU cases: eager vs triton, bf16, D = 128,
#             2N in {8192, 65536, 262144}; triton alone at 2^20; eager fp32 strict
#                                                                  ntxent.json
#   encoder   bench_encoder_block GPU cases, eager and triton, batch 256, bf16 and fp32
#                                                                  encoder_block.json
#   compile   the same with torch.compile, CUDA graphs and not (bf16 first)
#                                                                  encoder_compile.json
#   tests     a CUDA test subset (kernels, NT-Xent, encoder, distributed on one GPU)
#                                                                  tests.xml
#   summary   pass/fail per step, every ratio, card and versions  summary.json
# plus gpu_check.log (everything printed): 7 files. The onnxruntime CUDA provider is not
# checkable on the lent image (no CUDA onnxruntime there, too big to carry): env.json and
# summary.json say so. --dry-run runs every step on the CPU (Triton under
# TRITON_INTERPRET=1, tiny sizes, torch.compile with backend "eager") and fails unless every
# expected file was written and parses; tests/test_gpu_check.py runs it.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(pytorch-metric-learning==2.9.0)
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
fi
dry=0
case "${1:-}" in
    "") ;;
    --dry-run) dry=1 ;;
    *) echo "usage: $0 [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac

out="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
steps_file="$(mktemp)"
trap 'rm -f "$steps_file"' EXIT
exec > >(tee -a "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# name:limit_s:file; limits add up to 450 s, under 8 minutes with the kill grace
STEPS=(env:30:env.json ntxent:120:ntxent.json encoder:75:encoder_block.json
       compile:105:encoder_compile.json tests:105:tests.xml summary:15:summary.json)
echo "gpu_check $( ((dry)) && echo "DRY RUN (CPU, interpreter, tiny sizes)" ) $(date -u +%FT%TZ)"
total=0
for s in "${STEPS[@]}"; do
    IFS=: read -r name limit file <<<"$s"
    printf '  %-8s %4d s  -> %s\n' "$name" "$limit" "$file"
    total=$((total + limit))
done
printf '  %-8s %4d s  (each step killed 10 s after its SIGINT at most)\n' total "$total"

if ((dry)); then
    export ECGFAST_GPU_DRY_RUN=1 TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
else
    unset TRITON_INTERPRET ECGFAST_GPU_DRY_RUN
    # the wheels are for the device image's Python 3.12
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . || echo "pip install -e . failed"
fi

limit_of() { local s; for s in "${STEPS[@]}"; do [[ $s == "$1":* ]] && { IFS=: read -r _ l _ <<<"$s"; echo "$l"; }; done; }
# pytest with Python's own SIGINT handler (a shell may start us with SIGINT ignored), so
# timeout's SIGINT becomes KeyboardInterrupt and pytest writes its reports
PYTEST_MAIN='import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)
import pytest; sys.exit(pytest.main(sys.argv[1:]))'
run() {  # run STEP FILE CMD... : bounded, timed, recorded
    local name=$1 file=$2 limit t0=$SECONDS rc
    shift 2
    limit=$(limit_of "$name")
    echo "== $name (limit $limit s) -> $out/$file"
    timeout -s INT -k 10 "$limit" "$@"
    rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" "$file" >>"$steps_file"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
}
bench() {  # bench STEP FILE SUITE PYTEST_ARGS...
    local name=$1 file=$2 suite=$3
    shift 3
    run "$name" "$file" "$PY" -c "$PYTEST_MAIN" "benchmarks/bench_$suite.py" -q \
        -p no:cacheprovider --benchmark-json "$out/$file" "$@"
}

run env env.json "$PY" benchmarks/gpu_check.py env "$out/env.json"
bench ntxent ntxent.json nt_xent -k "cuda"
bench encoder encoder_block.json encoder_block -k "cuda and not cpu and (eager or triton)"
# compile last; bf16 before fp32 and CUDA graphs first (the targets' yardstick), explicit ids
ids=()
for dtype in bf16 $( ((dry)) || echo fp32 ); do
    for variant in compile-cudagraphs compile; do
        for block in $( ((dry)) && echo 3 || echo 1 2 3 ); do
            ids+=("benchmarks/bench_encoder_block.py::test_encoder_block_forward_backward[cuda-$block-$variant-$dtype]")
        done
    done
done
run compile encoder_compile.json "$PY" -c "$PYTEST_MAIN" "${ids[@]}" -q -p no:cacheprovider \
    --benchmark-json "$out/encoder_compile.json"
if ((dry)); then
    tests=(tests/kernels/test_cuda_kernels.py
           "tests/kernels/test_nt_xent_triton.py::test_production_config_path")
else
    tests=(tests/kernels/test_cuda_kernels.py tests/kernels/test_nt_xent_triton.py
           tests/kernels/test_encoder_block_triton.py
           tests/kernels/test_encoder_block_triton_conv1d.py
           tests/kernels/test_encoder_block_triton_se_residual_pool.py tests/ops/test_nt_xent.py
           tests/ops/test_nt_xent_streaming.py tests/ops/test_nt_xent_distributed.py
           tests/test_encoder_block_ddp.py tests/test_distributed.py)
fi
run tests tests.xml "$PY" -c "$PYTEST_MAIN" "${tests[@]}" -q -rs -p no:cacheprovider \
    --junitxml "$out/tests.xml"
run summary summary.json "$PY" benchmarks/gpu_check.py summary "$out" "$steps_file" \
    $( ((dry)) && echo --dry-run )
rc=$(awk -F'\t' '$1 == "summary" {print $2}' "$steps_file")
exit "${rc:-1}"
