"""Shared measurement helpers for the benchmark suites (one copy of each).

Every suite records, next to its timings: the device (:func:`device_info`), the fp32 GEMM
rate measured in the same run (:func:`gemm_rate`, once per process:
:func:`same_run_gemm_rate`), and peak memory (:class:`PeakMemory`); :func:`sync` waits for
the device, :func:`free_port` gives multi-process suites a localhost port.

The suites import this as ``common`` (``benchmarks`` is on pytest's ``pythonpath``, see
pyproject.toml; a suite run as a script has its own folder on ``sys.path``) and run only
when asked for::

    python -m pytest benchmarks/bench_encoder.py --benchmark-json benchmarks/results/encoder-cpu.json
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import socket
import statistics
import threading
import time

import torch


def device_info() -> dict:
    """Versions and hardware of this run: CPU model and cores, GPU name if any."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    for name in ("triton", "onnxruntime", "numpy"):
        with contextlib.suppress(Exception):  # a missing optional package is not recorded
            info[name] = __import__(name).__version__
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gemm_rate(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024,
              repeats: int = 15) -> float:
    """Median FLOP/s of an n x n x n matmul on ``device`` (2 n^3 FLOPs per call)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 3):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


@functools.cache
def same_run_gemm_rate(device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """:func:`gemm_rate` measured once per process and device/dtype, for every result of a
    run to be compared against the same figure."""
    return gemm_rate(device, dtype)


# ------------------------------------------------------------------ GPU runs and their dry run
#: Set by ``benchmarks/gpu_check.sh --dry-run``: the suites' GPU cases run on the CPU under
#: TRITON_INTERPRET=1 at tiny sizes, to prove the plumbing (files, fields), not to time.
DRY_RUN_ENV = "ECGFAST_GPU_DRY_RUN"


def dry_run() -> bool:
    """True inside ``gpu_check.sh --dry-run``."""
    return os.environ.get(DRY_RUN_ENV) == "1"


def gpu_device() -> str:
    """Device of the suites' GPU cases: "cuda", or "cpu" in a dry run."""
    return "cpu" if dry_run() else "cuda"


def gpu_skip_reason() -> str | None:
    """Why the GPU cases cannot run here (None: they can)."""
    if dry_run() or torch.cuda.is_available():
        return None
    return "no CUDA GPU on this machine (gpu_check.sh --dry-run runs these on the CPU)"


def interpreter_broken() -> str | None:
    """Why Triton's interpreter (TRITON_INTERPRET=1) cannot run the kernels here (None: it
    can): before Triton 3.8 it fails with numpy >= 2.4 (e.g. Triton 3.6 with numpy 2.5).
    Tests and the dry run skip their interpreted cases with this reason."""
    try:
        import numpy
        import triton
    except ImportError:
        return None

    def version(v):
        return tuple(int(p) for p in v.split(".")[:2])

    if version(triton.__version__) < (3, 8) and version(numpy.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter does not run with numpy "
                f"{numpy.__version__} (needs Triton >= 3.8 or numpy < 2.4)")
    return None


#: Side of the square matmul that is the GPU yardstick (a GPU-filling size; tiny in a dry run).
YARDSTICK_N = 8192


@functools.cache
def yardstick_matmul_rate(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of a same-dtype ``YARDSTICK_N``^3 matmul on ``device``, once per process, in
    the precision the run compares against (fp32 strict: no TF32); 64^3 in a dry run."""
    n = 64 if dry_run() else YARDSTICK_N
    with fp32_strict():
        return gemm_rate(device, dtype, n=n, repeats=3 if dry_run() else 15)


@contextlib.contextmanager
def fp32_strict():
    """fp32 matmuls and convolutions without TF32 inside ``with`` (restored after), through
    PyTorch's ``fp32_precision`` API where it exists, else the legacy ``allow_tf32`` flags."""
    nodes = [torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)]
    nodes = [n for n in nodes if n is not None and hasattr(n, "fp32_precision")]
    if nodes:
        saved = [n.fp32_precision for n in nodes]
        for n in nodes:
            n.fp32_precision = "ieee"
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if nodes:
            for n, v in zip(nodes, saved):
                n.fp32_precision = v
        else:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


#: MUFU (special-function unit) results per clock per SM for exp2 on sm_80/sm_90 (CUDA C
#: programming guide, arithmetic instruction throughput table).
SFU_PER_CLOCK_PER_SM = 16


def nominal_sfu_rate() -> tuple[float | None, str]:
    """(exp2 results/s, how it was obtained): SMs x 16 x the maximum SM clock (NVML, else
    PyTorch's device properties); (None, reason) off CUDA. Nominal, not measured."""
    if not torch.cuda.is_available():
        return None, "no CUDA device"
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_hz, source = None, None
    with contextlib.suppress(Exception):  # NVML is optional
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        clock_hz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM) * 1e6
        source = "NVML max SM clock"
    if clock_hz is None and getattr(props, "clock_rate", None):
        clock_hz, source = props.clock_rate * 1e3, "torch device properties clock_rate"
    if clock_hz is None:
        return None, "SM clock unknown (no NVML, no clock_rate)"
    rate = props.multi_processor_count * SFU_PER_CLOCK_PER_SM * clock_hz
    return rate, f"{props.multi_processor_count} SMs x {SFU_PER_CLOCK_PER_SM}/clock x {source}"


def sync(device) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a process group's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_worker_env(rank: int, world: int, port: int) -> None:
    """What torchrun would set for rank ``rank`` of ``world`` CPU processes on this host
    (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK), and one torch thread per process:
    the ranks share the cores. For the workers that tests and benchmarks spawn."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of the code inside ``with``, in bytes (``.peak_bytes``).

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated on entry. CPU: the
    resident set size sampled every 0.5 ms by a thread, above its value on entry (glibc's
    free lists are trimmed first, so memory freed earlier does not hide new allocations).
    """

    def __init__(self, device: str | torch.device = "cpu", interval_s: float = 5e-4):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()
            self._base = _rss_bytes()
            self._max = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._max = max(self._max, _rss_bytes())
            self._stop.set()
            self._thread.join()
            self.peak_bytes = self._max - self._base
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def encoder_flops(config=None, length: int = 2560) -> dict:
    """FLOPs of one window through :class:`ecgfast.models.ECGEncoder` (2 per MAC).

    ``forward`` counts the convolutions (and 1x1 shortcuts) and the SE MLP; the
    element-wise work (bias, activation, pooling) is left out, a few percent at most.
    ``backward`` counts the weight gradients and the input gradients, except the input
    gradient of block 1, whose input (the ECG) needs none.
    """
    from ecgfast.models import EncoderConfig

    config = config or EncoderConfig()
    channels = (config.in_channels, *config.filters)
    residual = config.residual_blocks
    forward = backward = 0
    n = length
    for i, k in enumerate(config.kernel_sizes):
        cin, cout = channels[i], channels[i + 1]
        conv1 = 2 * n * cout * cin * k
        conv2 = 2 * n * cout * cout * k
        shortcut = 2 * n * cout * cin if residual[i] and cin != cout else 0
        se = 2 * 2 * cout * max(1, cout // config.se_reduction) if config.attention else 0
        block = conv1 + conv2 + shortcut + se
        forward += block
        backward += 2 * block - (conv1 + shortcut if i == 0 else 0)
        if i < 2:
            n = (n - config.pool_size) // config.pool_stride + 1
    return {"forward": forward, "backward": backward, "forward_backward": forward + backward}


#: ``python -c STORE_RSS_SCRIPT STORE RUN_DIR [off]``: one epoch of contrastive pretraining
#: of a tiny encoder over every window of a window store; prints this process's peak RSS
#: (VmHWM: ru_maxrss would count the parent's RSS at fork) and the store's window count.
#: ``off`` is the control: no page release after each read. Used by bench_store.py and
#: tests/test_store_training.py.
STORE_RSS_SCRIPT = """
import json, mmap, sys
if sys.argv[3:] == ["off"]:
    del mmap.MADV_DONTNEED
from ecgfast.data import WindowStore
from ecgfast.models import EncoderConfig
from ecgfast.training import PretrainConfig, pretrain
store = WindowStore(sys.argv[1])
cfg = PretrainConfig(objective="contrastive", epochs=1, batch_size=25, seed=0, device="cpu")
enc = EncoderConfig(filters=(2, 2, 2), kernel_sizes=(3, 3, 3), attention=False,
                    residual="none", dropout=0.0)
pretrain(store, sys.argv[2], enc, cfg, progress=False, loader_workers=0)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"peak_rss_kib": int(hwm.split()[1]), "windows": len(store)}))
"""
