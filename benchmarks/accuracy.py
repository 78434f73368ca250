"""Correctness next to the timings: the errors each GPU benchmark case records beside its
time, and the tolerances that decide whether its speed-up counts (a fast, wrong kernel is
reported as a failure, not a speed-up).

Every error is relative: a loss error is ``|got - want| / max(|want|, 1)``; a tensor error
is normwise, ``||got - want|| / ||want||``.

NT-Xent (``bench_nt_xent.py``), one extra forward+backward per case after its timing:

- against :func:`nt_xent_float64`, the reference (``ecgfast.ops.nt_xent_rows_reference``) in
  float64 on the same rounded inputs, chunked by anchor rows so that no (2N)^2 float64
  matrix is built at once (tests/nt_xent_helpers.py uses it too), where 2N <= FLOAT64_MAX_ROWS;
- against every other backend run on the same inputs in the same process (Triton vs eager);
- at every size, against the values expected for random unit vectors
  (:func:`random_unit_expectation`), the only check at 2N = 2^20.

Tolerances, per input dtype (NT_XENT_TOL): the loss 1e-5 (the first dot takes exact
products of the inputs and sums in fp32); the gradients, normwise, 2e-2 for bf16 and 3e-3
for fp16 (the backward's second dot takes P and z in the input dtype and the gradient is
rounded to it: 2^-9 and 2^-12 per entry) and 1e-4 for fp32 with TF32 off.

Encoder block (``bench_encoder_block.py``): :func:`encoder_block_errors` runs one forward
and backward of a variant and of the eager op in float64 on the same rounded inputs,
parameters and dropout keys, and the normwise error of the output and of every gradient.
Max-pool argmax decisions flip where two values tie within the dtype's rounding, moving a
gradient entry to a neighbour, so even PyTorch's own bf16 block is far from float64 in its
input gradient. A variant's tensor therefore passes when its error is within the dtype's
tolerance or at most twice the error of the eager op run in the same dtype
(:func:`encoder_verdict`). ENCODER_TOL: ten unit roundoffs of the dtype for bf16 and fp16
(u = 2^-8 and 2^-11: the output is rounded once per op along the block's chain, and the
gradients again in the backward), 1e-4 for fp32 with TF32 off (fp32 sums in another order).
"""

from __future__ import annotations

import math

import torch

from ecgfast.ops import nt_xent_rows_reference

#: Largest 2N whose float64 reference a benchmark computes (2^20 would take minutes).
FLOAT64_MAX_ROWS = 65536
#: Float64 logits per chunk of :func:`nt_xent_float64` (2^27: 1 GiB).
CHUNK_ELEMENTS = 2**27
#: (loss, gradient) tolerance per input dtype; fp32 means TF32 off.
NT_XENT_TOL = {torch.bfloat16: (1e-5, 2e-2), torch.float16: (1e-5, 3e-3),
               torch.float32: (1e-5, 1e-4)}
#: Normwise tolerance of an encoder block's output and gradients per dtype (module docstring).
ENCODER_TOL = {torch.float32: 1e-4, torch.bfloat16: 10 * 2.0**-8, torch.float16: 10 * 2.0**-11}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """``||got - want|| / ||want||`` in float64 (inf when ``got`` is not finite)."""
    got, want = got.detach().double(), want.detach().double().to(got.device)
    if not bool(torch.isfinite(got).all()):
        return math.inf
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


def loss_err(got: float, want: float) -> float:
    return abs(got - want) / max(abs(want), 1.0) if math.isfinite(got) else math.inf


# ------------------------------------------------------------------ NT-Xent

def nt_xent_float64(z1: torch.Tensor, z2: torch.Tensor, tau: float, upstream: float = 1.0):
    """(loss, dL/dz1, dL/dz2) of NT-Xent in float64, ``upstream`` times the loss's gradient.

    The sum of :func:`ecgfast.ops.nt_xent_rows_reference` over chunks of anchor rows, each
    chunk's backward run at once, so the largest float64 tensor is one chunk's
    (2 count x 2N) logits (CHUNK_ELEMENTS); one chunk when 2N is small."""
    a = z1.detach().double().requires_grad_()
    b = z2.detach().double().requires_grad_()
    n = a.shape[0]
    rows = max(1, min(n, CHUNK_ELEMENTS // (4 * n)))
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, n, rows):
        part = nt_xent_rows_reference(a, b, tau, start, min(rows, n - start)) / (2 * n)
        (part * upstream).backward()
        total += part.detach()
    return total, a.grad, b.grad


def random_unit_expectation(two_n: int, d: int, tau: float) -> dict:
    """The NT-Xent loss and gradient size expected for 2N independent random rows (any
    rotation-invariant distribution: their directions are uniform on the sphere).

    Similarities ``c = z_i . z_j`` of unit vectors have mean 0 and variance 1/D, so
    ``E exp(c / tau) = exp(1 / (2 D tau^2))`` up to O(1 / (D^3 tau^4)). A row's term is
    ``lse_i - s_i,pos`` with ``lse_i = log(2N - 1) + log(mean_j exp(s_ij))``, hence

        loss ~ log(2N - 1) + 1 / (2 D tau^2).

    Its spread: the positive term averages N independent pairs, each of standard deviation
    ``1 / (tau sqrt(D))``; the mean of exponentials deviates by at most
    ``sqrt(v / (2N - 1))`` in log, ``v = exp(1 / (D tau^2)) - 1``. The tolerance is six
    times the sum of both, plus 1e-4 for fp32 arithmetic.

    Gradient: ``dL/dz_k = (sum_j (P_kj + P_jk) z_j - 2 z_pos) / (2N tau)`` on the sphere;
    the positive term dominates, the P terms are ``2 sqrt(exp(1/(D tau^2)) / (2N - 1))``
    of it at most, the normalisation's backward keeps the part orthogonal to z_k and
    divides by ``||z_k||``. So ``r_k = ||dL/dz_k|| ||z_k|| N tau`` averages
    ``sqrt(1 - 1/D)``, within ``0.02 + 2 x`` that P-term bound.
    """
    n = two_n // 2
    v = math.expm1(1.0 / (d * tau * tau))
    p_terms = 2 * math.sqrt((v + 1) / (two_n - 1))
    return {
        "loss": math.log(two_n - 1) + 1.0 / (2 * d * tau * tau),
        "loss_tol": 6 * (1 / (tau * math.sqrt(n * d)) + math.sqrt(v / (two_n - 1))) + 1e-4,
        "grad_ratio": math.sqrt(1 - 1 / d),
        "grad_ratio_tol": 0.02 + 2 * p_terms,
    }


#: Tensors of the inputs of one (2N, D), kept for the next case on the same inputs: the
#: float64 reference and every case's result, per input dtype.
_SAME_INPUTS: dict = {"shape": None, "float64": {}, "runs": {}}


def nt_xent_check(run, z1: torch.Tensor, z2: torch.Tensor, tau: float, name: str) -> dict:
    """One more forward+backward, ``run(a, b)`` (returns the loss after its backward), on
    copies of ``z1, z2``, checked against the float64 reference (2N <= FLOAT64_MAX_ROWS),
    against the cases named before it on the same inputs (same shape and dtype, in this
    process: benchmarks seed their inputs) and against :func:`random_unit_expectation`.
    ``ok`` is False when anything is out of tolerance or not finite."""
    shape = tuple(z1.shape)
    if _SAME_INPUTS["shape"] != shape:  # new inputs: forget the previous size's tensors
        _SAME_INPUTS.update(shape=shape, float64={}, runs={})
    a = z1.detach().clone().requires_grad_()
    b = z2.detach().clone().requires_grad_()
    loss = run(a, b)
    got = (loss.detach().double().item(), a.grad, b.grad)
    two_n, d = 2 * shape[0], shape[1]
    loss_tol, grad_tol = NT_XENT_TOL[z1.dtype]
    finite = math.isfinite(got[0]) and all(bool(torch.isfinite(g).all()) for g in got[1:])
    out = {"loss": got[0], "finite": finite, "loss_tol": loss_tol, "grad_tol": grad_tol}
    oks = [finite]
    if two_n <= FLOAT64_MAX_ROWS:
        if z1.dtype not in _SAME_INPUTS["float64"]:
            ref = nt_xent_float64(z1, z2, tau)
            _SAME_INPUTS["float64"][z1.dtype] = (ref[0].item(), ref[1], ref[2])
        ref = _SAME_INPUTS["float64"][z1.dtype]
        f64 = {"loss_error": loss_err(got[0], ref[0]),
               "grad_error": max(rel_err(got[1], ref[1]), rel_err(got[2], ref[2]))}
        f64["ok"] = f64["loss_error"] <= loss_tol and f64["grad_error"] <= grad_tol
        out["float64"] = f64
        oks.append(f64["ok"])
    else:
        out["float64"] = {"skipped": f"2N = {two_n} > {FLOAT64_MAX_ROWS}: float64 too costly"}
    runs = _SAME_INPUTS["runs"].setdefault(z1.dtype, {})
    out["vs"] = {other: {"loss_diff": loss_err(got[0], o[0]),
                         "grad_diff": max(rel_err(got[1], o[1]), rel_err(got[2], o[2]))}
                 for other, o in runs.items()}
    runs[name] = got
    exp = random_unit_expectation(two_n, d, tau)
    z = torch.cat([z1, z2]).double()
    g = torch.cat([got[1], got[2]]).double()
    ratio = (g.norm(dim=1) * z.norm(dim=1)).mean().item() * (two_n // 2) * tau
    exp.update(loss_error=abs(got[0] - exp["loss"]), grad_ratio_got=ratio)
    exp["ok"] = (exp["loss_error"] <= exp["loss_tol"]
                 and abs(ratio - exp["grad_ratio"]) <= exp["grad_ratio_tol"])
    out["random_unit"] = exp
    oks.append(exp["ok"])
    out["ok"] = all(oks)
    return out


# ------------------------------------------------------------------ encoder block

def _fwd_bwd(run, x, params, keys, upstream_seed: int):
    """Output and gradients (input when it requires one, every parameter) of one call."""
    x = x.detach().clone().requires_grad_(x.requires_grad)
    params = type(params)(*(None if t is None else t.detach().clone().requires_grad_()
                            for t in params))
    y = run(x, params, keys)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(upstream_seed))
    y.backward(g.to(y.device, y.dtype))
    grads = {"output": y.detach()}
    if x.requires_grad:
        grads["input"] = x.grad
    for name, t in zip(params._fields, params):
        if t is not None:
            grads[name] = t.grad
    return grads


_ENCODER_REF: dict = {}


def encoder_block_errors(run, x, params, spec, keys, name: str) -> dict:
    """Normwise error of ``run(x, params, keys)``'s output and every gradient against the
    eager op in float64 on the same values, beside the eager op's own in x's dtype (both
    cached per block and dtype), and the verdict (:func:`encoder_verdict`)."""
    from ecgfast.ops.encoder_block import encoder_block

    key = (spec, x.dtype, tuple(x.shape))
    if key not in _ENCODER_REF:
        _ENCODER_REF.clear()
        x64 = x.detach().double().requires_grad_(x.requires_grad)
        p64 = type(params)(*(None if t is None else t.detach().double() for t in params))
        ref = _fwd_bwd(lambda a, p, k: encoder_block(a, p, spec, k), x64, p64, keys, 0)
        eager = _fwd_bwd(lambda a, p, k: encoder_block(a, p, spec, k), x, params, keys, 0)
        _ENCODER_REF[key] = ref, {t: rel_err(eager[t], ref[t]) for t in ref}
    ref, eager_err = _ENCODER_REF[key]
    if name == "eager":
        errors = eager_err
    else:
        got = _fwd_bwd(run, x, params, keys, 0)
        errors = {t: rel_err(got[t], ref[t]) for t in ref}
    return encoder_verdict(errors, eager_err, x.dtype)


def encoder_verdict(errors: dict, eager_errors: dict, dtype: torch.dtype) -> dict:
    """Each tensor passes when its error is within ENCODER_TOL[dtype] or at most twice the
    eager op's in the same dtype; ``ok`` when every one does."""
    tol = ENCODER_TOL[dtype]
    failing = sorted(t for t, e in errors.items()
                     if not (e <= tol or e <= 2 * eager_errors.get(t, 0.0)))
    return {"reference": "eager op in float64", "tol": tol, "errors": errors,
            "eager_errors": eager_errors, "failing": failing, "ok": not failing}
