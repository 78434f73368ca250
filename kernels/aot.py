"""Ahead-of-time compilation of the Triton kernels for sm_80 and sm_90, no GPU needed.

``python -m ecgfast.kernels.aot`` compiles every registered kernel at its production
configurations and prints, per kernel, dtype, config and target: registers, stack (bytes of
spilled registers), local-memory loads/stores in the SASS, shared memory, and whether the
SASS holds tensor-core MMA instructions (HMMA on sm_80, HGMMA warpgroup MMA on sm_90).

How: ``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", cc,
32))`` gives a cubin; ``cuobjdump -res-usage`` reads REG and STACK, ``cuobjdump -sass`` the
instructions (both ship in the Triton wheel), ``metadata.shared`` the shared memory.

Registering kernels (a later kernel file adds one factory)::

    def _my_specs():
        from ecgfast.kernels import my_kernels as k
        return [KernelSpec(name="my_fwd", kernel=k._my_fwd, signature={...: "*{dtype}", ...},
                           constexprs={...}, configs=[AOTConfig("64x64", {...}, 4, 3)],
                           dtypes=("bf16", "fp32-tf32"), uses_dot=True)]
    SPEC_FACTORIES.append(_my_specs)

``{dtype}`` in a signature type is replaced by the input dtype ("fp32", "bf16", "fp16");
a dtype written "fp32-tf32" or "fp32-ieee" compiles fp32 pointers with the constexpr
``INPUT_PRECISION`` set to "tf32" or "ieee".

Run this module in a process where TRITON_INTERPRET is unset: under the interpreter
``@triton.jit`` returns interpreter objects that cannot be compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

TARGETS = {"sm_80": ("cuda", 80, 32), "sm_90": ("cuda", 90, 32)}
_MMA = re.compile(r"\b(HGMMA|HMMA|IMMA|QGMMA)\.[\w.]+")


@dataclasses.dataclass(frozen=True)
class AOTConfig:
    """One launch configuration: constexpr block sizes, num_warps, num_stages."""

    label: str
    constexprs: dict
    num_warps: int
    num_stages: int


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A kernel to compile: its signature (arg -> Triton type), fixed constexprs, configs.

    ``uses_dot``: the kernel calls ``tl.dot``, so tensor-core MMA is expected in the SASS
    for bf16, fp16 and fp32-tf32 (fp32-ieee runs on the FMA units).
    """

    name: str
    kernel: object
    signature: dict
    constexprs: dict
    configs: list
    dtypes: tuple = ("fp32", "bf16", "fp16")
    uses_dot: bool = False
    #: Integer args compiled as multiples of 16, as the JIT specialises them at run time
    #: (pointers always are: torch allocations are 16-byte aligned).
    divisible: tuple = ()


def _nt_xent_specs() -> list[KernelSpec]:
    from ecgfast.kernels import nt_xent as k
    from ecgfast.kernels import nt_xent_configs as nc

    rows = nc.ROWWISE_BLOCK_M
    common = {"n_rows": "i32", "half": "i32", "row_start": "i32", "row_count": "i32",
              "D": "i32", "stride_xm": "i32", "cols_per_split": "i32"}
    fwd_sig = {"X": "*{dtype}", "RNORM": "*fp32", "MAX2": "*fp32", "SUM2": "*fp32",
               "POS": "*fp32", **common, "scale_log2": "fp32"}
    bwd_sig = {"X": "*{dtype}", "RNORM": "*fp32", "LSE": "*fp32", "DZ": "*fp32",
               "GRAD": "*fp32", **common, "stride_dzm": "i32", "stride_dzs": "i32",
               "scale_log2": "fp32", "grad_scale": "fp32"}
    divisible = ("D", "stride_xm", "cols_per_split")

    def configs(cfgs):  # each distinct one once (a family may use one for every 2N)
        out = [AOTConfig(f"{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']}", dict(c.kwargs),
                         c.num_warps, c.num_stages) for c in cfgs]
        return [c for i, c in enumerate(out) if c not in out[:i]]

    specs = [
        KernelSpec("nt_xent_rnorm", k._rnorm_kernel,
                   {"X": "*{dtype}", "RNORM": "*fp32", "n_rows": "i32", "D": "i32",
                    "stride_xm": "i32"},
                   {"BLOCK_K": 128}, [AOTConfig(str(rows), {"BLOCK_M": rows}, 4, 1)],
                   divisible=("D", "stride_xm")),
    ]
    # each D range at a width it serves: 128 and 256 (one tile), 512 (chunked)
    for d_range, d in (("d128", 128), ("d256", 256), ("chunked", 512)):
        for family, dtypes in (("16bit", ("bf16", "fp16")), ("fp32", ("fp32-tf32",)),
                               ("fp32-ieee", ("fp32-ieee",))):
            one_tile = d <= nc.ONE_TILE_MAX_D
            blocks = {"BLOCK_D": nc.block_d(d, family), "ONE_TILE": one_tile, "UPCAST": False}
            dout = blocks["BLOCK_D"] if one_tile else nc.CHUNK_DOUT
            specs += [
                KernelSpec(f"nt_xent_fwd_{d_range}", k._nt_xent_fwd_kernel, fwd_sig, blocks,
                           configs(nc.FWD_CONFIGS[family, d_range]), dtypes, True, divisible),
                KernelSpec(f"nt_xent_bwd_{d_range}", k._nt_xent_bwd_kernel, bwd_sig,
                           dict(blocks, BLOCK_DOUT=dout),
                           configs(nc.BWD_CONFIGS[family, d_range]), dtypes, True,
                           (*divisible, "stride_dzm", "stride_dzs")),
            ]
    specs.append(
        KernelSpec("nt_xent_normalize_bwd", k._normalize_bwd_kernel,
                   {"X": "*{dtype}", "RNORM": "*fp32", "DZ": "*fp32", "DX": "*{dtype}",
                    "n_rows": "i32", "D": "i32", "stride_xm": "i32", "stride_dzm": "i32",
                    "stride_dxm": "i32"},
                   {"BLOCK_K": 128}, [AOTConfig(str(rows), {"BLOCK_M": rows}, 4, 1)],
                   divisible=("D", "stride_xm", "stride_dzm", "stride_dxm")))
    return specs


def _encoder_specs() -> list[KernelSpec]:
    """The fused encoder block kernels at the default encoder's layers (EncoderConfig():
    filters 32/64/128, kernel sizes 32/16/8, relu, dropout > 0, SE, residual everywhere)."""
    from ecgfast.kernels import encoder_block_conv1d as c
    from ecgfast.kernels import encoder_block_se_residual_pool as s

    ints = {"C_out": "i32", "L": "i32", "R": "i32", "n_tblocks": "i32", "stride_xb": "i32",
            "stride_xc": "i32"}
    conv_sig = {"X": "*{dtype}", "W": "*{dtype}", "BIAS": "*{dtype}", "Y": "*{dtype}",
                "PART": "*fp32", "KEYS": "*i32", "keep_thr": "i32", "drop_scale": "fp32",
                "negative_slope": "fp32", "K": "i32", "PAD_LEFT": "i32", **ints}
    specs = []
    # one configuration per output width (K is a runtime argument): C_in = 1 (block 1,
    # conv 1: the FMA path), then C_out = 32, 64, 128 on the tensor cores
    # (exact fp32 "ieee" dots get their own, narrower configuration: suffix _ieee)
    for name, (cin, cout, k) in {"direct_c32": (1, 32, 32), "c32": (32, 32, 32),
                                 "c64": (64, 64, 16), "c128": (128, 128, 8)}.items():
        for ieee in (False, True) if cin > 1 else (False,):
            cfg = c.conv_config(cin, cout, k, ieee_fp32=ieee, interpret=False)
            blocks = {n: cfg[n] for n in ("BLOCK_CO", "BLOCK_T", "BLOCK_R")}
            label = f"{cfg['BLOCK_CO']}x{cfg['BLOCK_T']}x{cfg['BLOCK_R']}"
            dtypes = (("fp32-ieee",) if ieee else ("bf16", "fp16", "fp32-tf32")) if cin > 1 \
                else ("bf16", "fp16", "fp32")
            specs.append(KernelSpec(
                f"conv1d_fwd_{name}{'_ieee' if ieee else ''}", c._conv1d_fwd_kernel, conv_sig,
                {"DIRECT": cfg["DIRECT"], "HAS_BIAS": True, "ACT": 1, "DROPOUT": True,
                 "WRITE_SUMS": True, "UPCAST": False},
                [AOTConfig(label, blocks, cfg["num_warps"], cfg["num_stages"])],
                dtypes, not cfg["DIRECT"]))
    specs.append(KernelSpec(
        "act_dropout_bwd", c._act_dropout_bwd_kernel,
        {"GY": "*{dtype}", "GSUM": "*fp32", "Y": "*{dtype}", "GZ": "*{dtype}", "KEYS": "*i32",
         "keep_thr": "i32", "drop_scale": "fp32", "negative_slope": "fp32", "L": "i32",
         "row_size": "i32", "numel": "i32"},
        {"ACT": 1, "DROPOUT": True, "HAS_GY": True, "HAS_GSUM": True},
        [AOTConfig(str(c.BWD_BLOCK), {"BLOCK": c.BWD_BLOCK}, 4, 1)]))
    pool_ints = {"C": "i32", "C_in": "i32", "L": "i32", "L_out": "i32"}
    for blk, (cin, cout, pool) in enumerate([(1, 32, 8), (32, 64, 8), (64, 128, 0)], 1):
        for ieee in (False, True) if cin > 1 else (False,):
            cfg = s.pool_config(cout, cin, ieee_fp32=ieee, interpret=False)
            label = f"{cfg['BLOCK_C']}x{cfg['BLOCK_T']}x{cfg['BLOCK_CIN']}"
            dtypes = (("fp32-ieee",) if ieee else ("bf16", "fp16", "fp32-tf32")) if cin > 1 \
                else ("bf16", "fp16", "fp32")
            specs.append(KernelSpec(
                f"se_residual_pool_fwd_b{blk}{'_ieee' if ieee else ''}",
                s._se_residual_pool_fwd_kernel,
                {"F": "*{dtype}", "A": "*{dtype}", "X": "*{dtype}", "WS": "*{dtype}",
                 "BS": "*{dtype}", "OUT": "*{dtype}", "ARG": "*i8" if pool else "*i32",
                 **pool_ints},
                {"POOL": pool, "STRIDE": 2, "HAS_SE": True, "RES": s.RES_PROJECTION,
                 "PROJ_DOT": cin > 1, "BLOCK_CIN": cfg["BLOCK_CIN"], "UPCAST": False},
                [AOTConfig(label, {"BLOCK_C": cfg["BLOCK_C"], "BLOCK_T": cfg["BLOCK_T"]},
                           cfg["num_warps"], 1)],
                dtypes, cin > 1))
    for pool in (8, 0):
        cfg = s.pool_bwd_config(interpret=False)
        specs.append(KernelSpec(
            f"se_residual_pool_bwd_{'local' if pool else 'global'}",
            s._se_residual_pool_bwd_kernel,
            {"GOUT": "*{dtype}", "ARG": "*i8" if pool else "*i32", "F": "*{dtype}",
             "A": "*{dtype}", "GF": "*{dtype}", "GY": "*{dtype}", "PART": "*fp32", "C": "i32",
             "L": "i32", "L_out": "i32", "n_tblocks": "i32"},
            {"POOL": pool, "STRIDE": 2, "NQ": 4 if pool else 1, "HAS_SE": True,
             "WRITE_GY": True},
            [AOTConfig(f"{cfg['BLOCK_C']}x{cfg['BLOCK_T']}",
                       {"BLOCK_C": cfg["BLOCK_C"], "BLOCK_T": cfg["BLOCK_T"]},
                       cfg["num_warps"], 1)]))
    return specs


#: Each factory returns KernelSpecs; called lazily so importing this module stays cheap.
SPEC_FACTORIES: list[Callable[[], list[KernelSpec]]] = [_nt_xent_specs, _encoder_specs]


def kernel_specs() -> list[KernelSpec]:
    return [spec for factory in SPEC_FACTORIES for spec in factory()]


def _tool(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found in the Triton wheel at {path}")
    return str(path)


def _split_dtype(dtype: str) -> tuple[str, str | None]:
    if dtype.startswith("fp32-"):
        return "fp32", dtype.split("-", 1)[1]
    return dtype, None


def compile_one(spec: KernelSpec, dtype: str, config: AOTConfig, target: str) -> dict:
    """Compile ``spec`` for ``target`` ("sm_80" | "sm_90") and read its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ecgfast.ops.backend import triton_interpreting

    if triton_interpreting():
        raise RuntimeError("AOT compilation needs TRITON_INTERPRET unset (run in a fresh "
                           "process: python -m ecgfast.kernels.aot)")
    ptr_dtype, precision = _split_dtype(dtype)
    constexprs = dict(spec.constexprs, **config.constexprs)
    if precision is not None or "INPUT_PRECISION" in spec.kernel.arg_names:
        constexprs["INPUT_PRECISION"] = precision or "ieee"
    signature = {a: spec.signature[a].format(dtype=ptr_dtype) if a in spec.signature
                 else "constexpr" for a in spec.kernel.arg_names}
    missing = [a for a, t in signature.items() if t == "constexpr" and a not in constexprs]
    if missing:
        raise ValueError(f"{spec.name}: no type or constexpr value for {missing}")
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(spec.kernel.arg_names)
             if signature[a].startswith("*") or a in spec.divisible}
    src = ASTSource(fn=spec.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget(*TARGETS[target]),
                              options={"num_warps": config.num_warps,
                                       "num_stages": config.num_stages})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)],
                             capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", str(cubin)],
                              capture_output=True, text=True, check=True).stdout
    regs = int(re.search(r"REG:(\d+)", res).group(1))
    stack = int(re.search(r"STACK:(\d+)", res).group(1))
    mma = sorted({m.group(0) for m in _MMA.finditer(sass)})
    return {
        "kernel": spec.name, "dtype": dtype, "config": config.label, "target": target,
        "num_warps": config.num_warps, "num_stages": config.num_stages,
        "registers": regs, "stack_bytes": stack,
        "local_loads": len(re.findall(r"\bLDL\b", sass)),
        "local_stores": len(re.findall(r"\bSTL\b", sass)),
        "shared_bytes": int(compiled.metadata.shared),
        "tensor_core": bool(mma), "mma_instructions": mma,
        "expects_tensor_core": spec.uses_dot and dtype != "fp32-ieee" and dtype != "fp32",
    }


def _compile_job(job: tuple[int, str, int, str]) -> dict:
    i, dtype, j, target = job
    spec = kernel_specs()[i]
    return compile_one(spec, dtype, spec.configs[j], target)


def report(names: list[str] | None = None, targets: list[str] | None = None,
           dtypes: list[str] | None = None, jobs: int | None = None) -> list[dict]:
    """Compile every (kernel, dtype, production config, target); one dict per compile, in
    that order. ``jobs`` compiles run at once in forked processes (default: the cores),
    since each compile is single-threaded and independent of the others."""
    work = [(i, dtype, j, target)
            for i, spec in enumerate(kernel_specs()) if not names or spec.name in names
            for dtype in spec.dtypes if not dtypes or dtype in dtypes
            for j in range(len(spec.configs))
            for target in targets or list(TARGETS)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(work)))
    if jobs == 1:
        return [_compile_job(w) for w in work]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(_compile_job, work, chunksize=1)


def format_table(rows: list[dict]) -> str:
    head = (f"{'kernel':22} {'dtype':10} {'config':7} {'target':6} {'warps':>5} {'stages':>6} "
            f"{'regs':>4} {'spill(B)':>8} {'LDL/STL':>7} {'shared(B)':>9}  tensor-core MMA")
    lines = [head, "-" * len(head)]
    for r in rows:
        mma = ", ".join(r["mma_instructions"]) if r["tensor_core"] else "no"
        lines.append(
            f"{r['kernel']:22} {r['dtype']:10} {r['config']:7} {r['target']:6} "
            f"{r['num_warps']:>5} {r['num_stages']:>6} {r['registers']:>4} "
            f"{r['stack_bytes']:>8} {r['local_loads']:>3}/{r['local_stores']:<3} "
            f"{r['shared_bytes']:>9}  {mma}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecgfast.kernels.aot", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    parser.add_argument("--target", action="append", choices=list(TARGETS))
    parser.add_argument("--dtype", action="append", help="bf16, fp16, fp32, fp32-tf32, ...")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    parser.add_argument("--jobs", type=int, default=None,
                        help="compiles at once (default: the number of cores)")
    args = parser.parse_args(argv)
    rows = report(args.kernel, args.target, args.dtype, args.jobs)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
