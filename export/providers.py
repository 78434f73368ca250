"""The execution providers' options of :class:`ecgfast.export.OnnxEncoder`."""

from __future__ import annotations

import contextlib
import os
import re
import sys

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


def cuda_provider_options(conv_algo_search: str = "EXHAUSTIVE", device_id: int = 0) -> dict:
    """Options of onnxruntime's CUDA execution provider for the encoder's convolutions.

    - ``cudnn_conv_algo_search``: how cuDNN picks each Conv's algorithm. "EXHAUSTIVE"
      (the default here and onnxruntime's) times every algorithm the first time a Conv
      sees an input shape and caches the winner: embedding runs repeat one window length
      and a few batch sizes, so the search is paid a handful of times and every later
      call gets the fastest kernel. "HEURISTIC" takes cuDNN's guess without timing (no
      first-call cost; the choice for inputs whose length changes call after call),
      "DEFAULT" a fixed implicit-GEMM algorithm.
    - ``cudnn_conv_use_max_workspace`` "1": the search may consider algorithms that need
      a large workspace, which are often the fast ones for long 1-D signals.
    - ``cudnn_conv1d_pad_to_nc1d`` "1": a 1-D Conv's (N, C, L) input goes to cuDNN as
      (N, C, 1, L) rather than (N, C, L, 1), the layout whose kernels run along the
      signal; it matters for files exported with ``layout="1d"`` (the default 2-D layout
      is height-1 2-D already).
    """
    if conv_algo_search not in CONV_ALGO_SEARCHES:
        raise ValueError(f"conv_algo_search must be one of {CONV_ALGO_SEARCHES}, got "
                         f"{conv_algo_search!r}")
    return {"device_id": str(int(device_id)), "cudnn_conv_algo_search": conv_algo_search,
            "cudnn_conv_use_max_workspace": "1", "cudnn_conv1d_pad_to_nc1d": "1"}


def nvidia_device_may_exist() -> bool:
    """False when this is Linux and no NVIDIA GPU can be visible to the process.

    That is: ``CUDA_VISIBLE_DEVICES`` hides every device, or the NVIDIA driver exposes no
    GPU (neither ``/dev/nvidia<N>`` nor an entry under ``/proc/driver/nvidia/gpus``, nor
    WSL's GPU device ``/dev/dxg``).
    Elsewhere it cannot tell and answers True, leaving the question to PyTorch. It lets a
    CPU-only host skip importing PyTorch (hundreds of MB, seconds) just to learn that.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not sys.platform.startswith("linux"):
        return True
    with contextlib.suppress(OSError):
        if any(os.scandir("/proc/driver/nvidia/gpus")):
            return True
    with contextlib.suppress(OSError):
        return any(re.fullmatch(r"nvidia\d+|dxg", e.name) for e in os.scandir("/dev"))
    return False
