"""Launch configurations of the NT-Xent kernels (:mod:`ecgfast.kernels.nt_xent`) and how
one is chosen per shape: dtype family, D range, 2N, and the column splits that fill the GPU."""

from __future__ import annotations

import torch
import triton

from ecgfast.kernels._common import interpreting

LN2 = 0.6931471805599453

#: Production configs per dtype family ("16bit": bf16/fp16, "fp32": fp32 with tf32 dots,
#: "fp32-ieee": fp32 with exact dots on the FMA units) and D range ("d128": D <= 128,
#: "d256": D <= 256, both one full-D tile; "chunked": D > 256, BLOCK_D-wide chunks): the
#: first for 2N < 8192, the second from 2N >= 8192. Each was kept among candidates compiled
#: for sm_80 and sm_90 at D = 128, 256 and 512 because it spills no register
#: (tests/kernels/test_aot.py; results in benchmarks/results/aot-triton-<version>.json).
def _configs(*tiles):
    """``triton.Config`` list from (BLOCK_M, BLOCK_N, num_warps, num_stages) tuples."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
            for m, n, w, st in tiles]


#: (dtype family, D range) -> the forward's and the backward's candidate tiles, each
#: (BLOCK_M, BLOCK_N, num_warps, num_stages).
TILES = {
    ("16bit", "d128"): (((64, 64, 4, 3), (128, 64, 8, 3)), ((64, 32, 4, 2), (64, 64, 8, 2))),
    ("16bit", "d256"): (((64, 64, 8, 2), (128, 64, 8, 2)), ((64, 32, 8, 2), (64, 32, 8, 2))),
    ("16bit", "chunked"): (((64, 64, 4, 3), (128, 64, 8, 3)), ((64, 64, 4, 2), (128, 32, 8, 2))),
    ("fp32", "d128"): (((64, 32, 4, 2), (128, 64, 8, 2)), ((64, 16, 4, 2), (64, 32, 8, 2))),
    ("fp32", "d256"): (((64, 16, 4, 2), (64, 32, 8, 2)), ((64, 16, 8, 1), (64, 16, 8, 2))),
    ("fp32", "chunked"): (((64, 64, 4, 3), (128, 64, 8, 3)), ((64, 16, 8, 2), (128, 16, 8, 2))),
    ("fp32-ieee", "d128"): (((32, 32, 4, 1), (32, 64, 4, 1)), ((32, 16, 4, 1), (32, 16, 8, 1))),
    ("fp32-ieee", "d256"): (((32, 16, 4, 1), (32, 32, 8, 1)), ((16, 16, 4, 1), (32, 16, 8, 1))),
    ("fp32-ieee", "chunked"): (((64, 32, 8, 3), (128, 64, 8, 2)),
                               ((32, 16, 8, 1), (128, 16, 8, 1))),
}
FWD_CONFIGS = {key: _configs(*fwd) for key, (fwd, _) in TILES.items()}
BWD_CONFIGS = {key: _configs(*bwd) for key, (_, bwd) in TILES.items()}
#: Widest D kept as one tile; the D chunk of the chunked path per family.
ONE_TILE_MAX_D = 256
CHUNK_D = {"16bit": 64, "fp32": 32, "fp32-ieee": 32}
#: Output D columns per program of the chunked backward.
CHUNK_DOUT = 128
#: Rows per program of the row-wise kernels (_rnorm_kernel, _normalize_bwd_kernel).
ROWWISE_BLOCK_M = 16
#: Small fixed config used under TRITON_INTERPRET=1 (numpy, CPU): the smallest legal tiles.
INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16}
#: Column tiles per split at least, and programs per SM the row tiles should give.
MIN_TILES_PER_SPLIT, PROGRAMS_PER_SM = 4, 2


def family(dtype, input_precision: str) -> str:
    """"16bit" (bf16/fp16), "fp32" (tf32 dots) or "fp32-ieee" (exact fp32 dots)."""
    if dtype != torch.float32:
        return "16bit"
    return "fp32-ieee" if input_precision == "ieee" else "fp32"


def d_range(d: int) -> str:
    """"d128", "d256" (one full-D tile) or "chunked" (D > ONE_TILE_MAX_D)."""
    return "d128" if d <= 128 else "d256" if d <= ONE_TILE_MAX_D else "chunked"


def block_d(d: int, fam: str) -> int:
    """D as one tile, padded to a power of two >= 16 (D <= 256); else the D chunk."""
    if d > ONE_TILE_MAX_D:
        return CHUNK_D[fam]
    return triton.next_power_of_2(max(d, 16))


def pick(configs, fam: str, d: int, n_rows: int) -> dict:
    """Fixed production choice per family and D range: the second (bigger) config only
    when there are rows to fill it; the smallest legal tiles under the interpreter."""
    if interpreting():
        return dict(INTERPRET_CONFIG, num_warps=4, num_stages=1)
    cfg = configs[fam, d_range(d)][1 if n_rows >= 8192 else 0]
    return dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def sm_count(x: torch.Tensor) -> int | None:
    """Multiprocessors of ``x``'s GPU; None on the CPU and under the interpreter."""
    if interpreting() or not x.is_cuda:
        return None
    return torch.cuda.get_device_properties(x.device).multi_processor_count


def column_splits(row_programs: int, n_cols: int, block_n: int,
                  sms: int | None) -> tuple[int, int]:
    """(splits, columns per split): split the columns when the row tiles give fewer than
    PROGRAMS_PER_SM programs per SM (``sms`` of them; None: no split), keeping at least
    MIN_TILES_PER_SPLIT column tiles per split."""
    if sms is None:
        want = 1
    else:
        want = min(triton.cdiv(PROGRAMS_PER_SM * sms, row_programs),
                   max(1, triton.cdiv(n_cols, block_n) // MIN_TILES_PER_SPLIT))
    return split_columns(n_cols, block_n, want)


def split_columns(n_cols: int, block_n: int, want: int) -> tuple[int, int]:
    """(splits, columns per split) for about ``want`` splits of whole BLOCK_N tiles (never
    more splits than tiles)."""
    per_split = triton.cdiv(triton.cdiv(n_cols, block_n), max(1, want)) * block_n
    return triton.cdiv(n_cols, per_split), per_split


def merge_splits(max2, sum2, pos):
    """lse and positive logits of every row from the splits' (max, sum) in base 2."""
    m = max2.amax(dim=0)
    lse = (m + torch.log2((sum2 * torch.exp2(max2 - m)).sum(dim=0))) * LN2
    return lse, pos.sum(dim=0)


