"""Reference NT-Xent (SimCLR) loss: builds the similarity matrix in full."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecgfast.ops.backend import Backend, Capabilities


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over two views, the plain way.

    Args:
        z1, z2: (N, D) embeddings of the two views; row i of z1 and row i of z2 are a
            positive pair, every other row of either view is a negative.
        temperature: tau > 0.

    Returns:
        Scalar: mean over the 2N rows of ``logsumexp_{j != i} s_ij - s_{i,pos}``, where
        ``s = z z^T / tau`` and ``z = normalise(concat(z1, z2))``. Computed in the wider
        of float32 and the input dtype (float64 inputs stay float64).

    This equals lightly's ``NTXentLoss`` and pytorch-metric-learning's ``NTXentLoss``
    with one positive per anchor.
    """
    n = z1.shape[0]
    return nt_xent_rows_reference(z1, z2, temperature, 0, n) / (2 * n)


def nt_xent_rows_reference(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, start: int, count: int
) -> torch.Tensor:
    """The sum of the NT-Xent terms of some anchor rows, against every row.

    The anchors are rows ``[start, start + count)`` of each view (2 * count rows of
    ``concat(z1, z2)``); each term is ``logsumexp_{j != i} s_ij - s_{i,pos}`` over all 2N
    columns, as in :func:`nt_xent_reference`, which is this with every row divided by 2N.
    The (2 count x 2N) logits are built in full. Used for one rank's share of a
    distributed batch (:class:`ecgfast.ops.nt_xent_distributed.RowShard`).
    """
    n = z1.shape[0]
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z = F.normalize(torch.cat([z1, z2], dim=0).to(dtype), dim=1)
    own = torch.arange(start, start + count, device=z.device)
    rows = torch.cat([own, own + n])
    logits = (z[rows] @ z.T) / temperature
    self_column = torch.zeros_like(logits, dtype=torch.bool)
    self_column[torch.arange(2 * count, device=z.device), rows] = True
    logits = logits.masked_fill(self_column, float("-inf"))
    return F.cross_entropy(logits, (rows + n) % (2 * n), reduction="sum")


def nt_xent_eager(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
                  shard=None) -> torch.Tensor:
    """The "eager" NT-Xent backend: :func:`nt_xent_reference`, or with ``shard`` (a
    :class:`ecgfast.ops.nt_xent_distributed.RowShard`) this rank's rows against the gathered
    batch."""
    if shard is None:
        return nt_xent_reference(z1, z2, temperature)
    keys = shard.gather_with_grad(z1), shard.gather_with_grad(z2)
    part = nt_xent_rows_reference(*keys, temperature, shard.start, shard.count)
    return shard.join_loss(part / (2 * shard.total))


#: Any device ("meta" included) and the default floating dtypes (fp32, fp64, bf16, fp16).
BACKEND = Backend("nt_xent", "eager", nt_xent_eager, Capabilities(devices=None))
