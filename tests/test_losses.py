"""The SSL-ECG pretext loss (NT-Xent's tests: tests/ops/test_nt_xent.py)."""

import pytest
import torch

from ecgfast.losses import SSL_ECG_TASK_WEIGHTS, transformation_recognition_loss


def test_transformation_loss_weights_and_value():
    logits = torch.randn(14, 7)
    labels = torch.arange(7).repeat(2)
    loss = transformation_recognition_loss(logits, labels)
    manual = 0.0
    for k, w in enumerate(SSL_ECG_TASK_WEIGHTS):
        target = (labels == k).float()
        manual += w * torch.nn.functional.binary_cross_entropy_with_logits(logits[:, k], target)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    assert SSL_ECG_TASK_WEIGHTS == (0.195, 0.195, 0.195, 0.0125, 0.0125, 0.195, 0.195)


def test_transformation_loss_bad_input():
    with pytest.raises(ValueError, match="weights"):
        transformation_recognition_loss(torch.randn(4, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        transformation_recognition_loss(torch.randn(4, 7), torch.zeros(5, dtype=torch.long))
