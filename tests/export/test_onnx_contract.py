"""The pre-processing contract from checkpoint to ONNX to embeddings: a model trained with a
non-default chain (a 0.5 Hz high-pass) is served with it; a checkpoint whose chain comes
from a future version is refused at export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecgfast.data import ecgsyn, iter_windows
from ecgfast.data.contract import CONTRACT_VERSION, ContractError, Preprocessing
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.provenance import checkpoint_provenance, describe_data
from ecgfast.training.checkpoint import save_checkpoint

HIGHPASS_05 = Preprocessing(highpass_hz=0.5)


def _checkpoint(run, chain_record: dict):
    torch.manual_seed(0)
    encoder = ECGEncoder(EncoderConfig(dropout=0.0)).eval()
    windows = np.zeros((3, 2560), np.float32)
    provenance = checkpoint_provenance(
        describe_data(windows, source="recordings", preprocessing=chain_record), windows)
    config = {"encoder": encoder.config.to_dict(), "objective": "transform",
              "n_windows": 3, "window_length": 2560, "provenance": provenance,
              "history": [{"kind": "epoch", "epoch": 1, "loss": 0.5}]}
    save_checkpoint(run, epoch=1, config=config,
                    state_dict={f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    return run


@pytest.fixture(scope="module")
def highpass_05_model(tmp_path_factory):
    from ecgfast.export import export_onnx

    d = tmp_path_factory.mktemp("contract")
    export_onnx(_checkpoint(d / "run", HIGHPASS_05.to_record()), d / "m.onnx", verify=False)
    return d / "m.onnx"


def test_a_checkpoints_chain_is_recorded_and_served(highpass_05_model):
    from ecgfast.export import OnnxEncoder
    from ecgfast.export.metadata import META_CARD, META_PREPROCESSING

    encoder = OnnxEncoder(highpass_05_model, providers="cpu")
    assert encoder.preprocessing == HIGHPASS_05
    assert json.loads(encoder.metadata[META_PREPROCESSING]) == HIGHPASS_05.to_record()
    assert json.loads(encoder.metadata[META_CARD])["preprocessing"] == HIGHPASS_05.to_record()
    signal = ecgsyn(65.0, 500.0, heart_rate=66.0, rng=5) + 0.3 * np.sin(
        2 * np.pi * 0.6 * np.arange(int(65.0 * 500)) / 500.0)  # baseline wander at 0.6 Hz
    emb, starts = encoder.embed_recording(signal, 500.0)
    served = np.concatenate([b.windows for b in iter_windows(signal, 500.0,
                                                             preprocessing=HIGHPASS_05)])
    np.testing.assert_array_equal(emb, encoder.embed(served))
    np.testing.assert_allclose(starts, np.arange(6) * 10.0)
    default = np.concatenate([b.windows for b in iter_windows(signal, 500.0)])
    assert np.abs(default - served).max() > 0.05  # the 0.8 Hz default is another input
    assert np.abs(encoder.embed(default) - emb).max() > 1e-4 * np.abs(emb).max()


def test_a_checkpoint_with_a_future_chain_is_refused_at_export(tmp_path):
    from ecgfast.export import export_onnx

    record = {**Preprocessing().to_record(), "version": CONTRACT_VERSION + 1}
    run = _checkpoint(tmp_path / "run", record)
    with pytest.raises(ContractError, match=rf"epoch-0001: its pre-processing contract is "
                                            rf"version {CONTRACT_VERSION + 1}"):
        export_onnx(run, tmp_path / "m.onnx", verify=False)
    assert not (tmp_path / "m.onnx").exists()
