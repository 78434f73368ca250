"""Shared fixtures of the ecgfast.export tests: one exported default encoder, ECG windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgfast.models import ECGEncoder, EncoderConfig


@pytest.fixture(scope="session")
def default_encoder() -> ECGEncoder:
    torch.manual_seed(0)
    return ECGEncoder(EncoderConfig()).eval()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, default_encoder):
    """(encoder, path, report) of the default encoder exported with the full verification
    (batch 1, 7, 64 x length 2560, 4000)."""
    from ecgfast.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "encoder.onnx"
    report = export_onnx(default_encoder, path, print_report=False)
    return default_encoder, path, report


@pytest.fixture(scope="session")
def ecg_windows() -> np.ndarray:
    """(N, 1, 2560) float32 windows of synthetic ECG (ECGSYN) run through the library's
    pre-processing (high-pass, robust z-score, 10 s windows at 256 Hz)."""
    from ecgfast.data import ecgsyn, preprocess

    parts = [
        preprocess(ecgsyn(60.0, 256.0, heart_rate=hr, noise_mv=0.02, rng=seed), 256.0).windows
        for seed, hr in enumerate((52.0, 64.0, 78.0, 95.0, 120.0))
    ]
    return np.concatenate(parts)[:, None, :].astype(np.float32)
