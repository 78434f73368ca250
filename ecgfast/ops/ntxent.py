"""Reference NT-Xent (SimCLR) loss: builds the full 2N x 2N similarity matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z = F.normalize(torch.cat([z1, z2], dim=0).to(dtype), dim=1)
    logits = (z @ z.T) / temperature
    diagonal = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(diagonal, float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positive)
