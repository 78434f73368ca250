"""A 12-lead encoder through ONNX: export, verify, INT8, OnnxEncoder, embed.

The encoder is narrow (filters 16/16/32) so that every step takes seconds; only block 1's
first conv and shortcut see the leads, which is what these tests are about.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from ecgfast.cli import main
from ecgfast.data.multilead import iter_lead_windows
from ecgfast.export import OnnxEncoder, OnnxModelError, export_onnx, quantize_onnx, verify_onnx
from ecgfast.export import runtime as runtime_module
from ecgfast.export.metadata import META_CONFIG, META_LEADS, write_metadata
from ecgfast.models import ECGEncoder, EncoderConfig

LEADS12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SMALL = {"filters": (16, 16, 32), "kernel_sizes": (9, 5, 3), "se_reduction": 4}


@pytest.fixture(scope="module")
def model12(tmp_path_factory):
    """(encoder, path) of a 12-lead encoder exported with a short verification."""
    torch.manual_seed(12)
    enc = ECGEncoder(EncoderConfig(in_channels=12, leads=LEADS12, **SMALL)).eval()
    path = tmp_path_factory.mktemp("onnx12") / "enc12.onnx"
    report = export_onnx(enc, path, batch_sizes=(1, 3), lengths=(300, 2560), print_report=False)
    assert report.ok and len(report.rows) == 4
    return enc, path


def _windows(n=24, seed=0, length=2560):
    from ecgfast.data import ecgsyn

    rng = np.random.default_rng(seed)
    out = np.empty((n, 12, length), np.float32)
    for i in range(n):
        beat = ecgsyn(length / 256.0, 256.0, heart_rate=55 + 5 * (i % 8), rng=seed + i)[:length]
        gains = rng.uniform(-1.5, 1.5, 12)
        out[i] = gains[:, None] * beat + 0.05 * rng.standard_normal((12, length))
    out -= out.mean(-1, keepdims=True)
    out /= out.std(-1, keepdims=True)
    return out


def test_file_interface_and_metadata(model12):
    enc, path = model12
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 12, "length"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta[META_LEADS]) == list(LEADS12)
    assert EncoderConfig.from_dict(json.loads(meta[META_CONFIG])) == enc.config.replace(backend="eager")
    assert "(batch, 12, length)" in model.doc_string and "(batch, 32)" in model.doc_string


def test_onnx_encoder_matches_torch_for_12_leads(model12):
    enc, path = model12
    ort = OnnxEncoder(path, providers="cpu", threads=2)
    assert ort.in_channels == 12 and ort.leads == LEADS12 and ort.embedding_dim == 32
    assert ort.small_batch_session is None  # the row fold is for one lead
    x = _windows(5, seed=1)
    with torch.inference_mode():
        want = enc(torch.from_numpy(x)).numpy()
    got = ort.embed(x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    got_t = ort.embed(torch.from_numpy(x), batch_size=2)
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_t.numpy(), got, rtol=0, atol=1e-5 * np.abs(got).max())


@pytest.mark.parametrize(("shape", "got"), [((2, 3, 300), 3), ((2, 300), 1), ((2, 1, 300), 1)])
def test_onnx_encoder_refuses_another_lead_count(model12, shape, got):
    _, path = model12
    ort = OnnxEncoder(path, providers="cpu")
    with pytest.raises(ValueError, match=rf"must have 12 channels on axis 1.*enc12.onnx takes "
                                         rf"12 lead\(s\) \(I, II, .*V6\), got {got} "):
        ort.embed(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"must be \(batch, 12, length\), got"):
        ort.embed(np.zeros((1, 1, 12, 300), np.float32))


def test_single_lead_file_has_one_unnamed_lead(exported):
    _, path, _ = exported
    ort = OnnxEncoder(path, providers="cpu")
    assert ort.in_channels == 1 and ort.leads is None


def test_verify_uses_c_lead_inputs(model12):
    enc, path = model12
    report = verify_onnx(path, enc, batch_sizes=(2,), lengths=(777,))
    assert report.ok and report.rows[0].scale > 0


def _edited(path, tmp_path, change, name="edited.onnx"):
    model = onnx.load(str(path))
    change(model)
    out = tmp_path / name
    onnx.save(model, str(out))
    return out


def _set_config_leads(model, n):
    meta = {p.key: p.value for p in model.metadata_props}
    config = json.loads(meta[META_CONFIG])
    config["in_channels"], config["leads"] = n, None
    write_metadata(model, {META_CONFIG: json.dumps(config)})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.graph.input[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 3),
         r"input 'ecg' must be float32 \(batch, 12, length\), got FLOAT \('batch', 3"),
        (lambda m: _set_config_leads(m, 3), "its encoder config says 3 lead.*convolution takes 12"),
        (lambda m: write_metadata(m, {META_LEADS: json.dumps(["I", "II"])}),
         "ecgfast.leads metadata must list the names of its 12 lead"),
        (lambda m: write_metadata(m, {META_LEADS: "not json"}), "ecgfast.leads metadata"),
    ],
    ids=["declared-3", "config-3", "two-names", "not-json"],
)
def test_files_that_disagree_about_their_leads_are_refused(model12, tmp_path, change, match):
    _, path = model12
    with pytest.raises(OnnxModelError, match="edited.onnx: " + match):
        OnnxEncoder(_edited(path, tmp_path, change), providers="cpu")


def test_int8_for_12_leads(model12, tmp_path):
    _, path = model12
    calib = _windows(24, seed=2)
    int8 = tmp_path / "enc12.int8.onnx"
    report = quantize_onnx(path, int8, calib, benchmark_batch=4, benchmark_repeats=1,
                           probe_splits=1, print_report=False)
    assert report.n_calibration == 24 and report.cosine_mean > 0.99, report
    ort8 = OnnxEncoder(int8, providers="cpu")
    assert ort8.in_channels == 12 and ort8.leads == LEADS12
    assert ort8.embed(calib[:3]).shape == (3, 32)
    with pytest.raises(ValueError, match=r"calibration_windows must be \(n, 12, length\) for a "
                                         r"12-lead model, got shape \(4, 1, 2560\)"):
        quantize_onnx(path, tmp_path / "x.onnx", calib[:4, :1], print_report=False)


def test_io_binding_path_with_12_leads(model12):
    """The I/O-binding code the CUDA provider runs, on the CPU provider with CPU buffers."""
    _, path = model12
    ort = OnnxEncoder(path, providers="cpu", row_fold=False)
    x = torch.from_numpy(_windows(7, seed=3, length=600))
    ref = ort.embed(x.numpy())
    out = ort._embed_bound(x, True, 3, torch.device("cpu"))
    assert isinstance(out, torch.Tensor) and out.shape == (7, 32)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


# ---------------------------------------------------------------- CUDA provider options


def test_cuda_provider_options():
    opts = runtime_module.cuda_provider_options()
    assert opts == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
                    "cudnn_conv_use_max_workspace": "1", "cudnn_conv1d_pad_to_nc1d": "1"}
    assert runtime_module.cuda_provider_options("HEURISTIC", 1)["device_id"] == "1"
    with pytest.raises(ValueError, match="conv_algo_search must be one of"):
        runtime_module.cuda_provider_options("FAST")


def test_cuda_session_gets_the_options(model12, monkeypatch):
    """With CUDA chosen, the session is asked for the CUDA provider with those options
    (onnxruntime without CUDA then runs it on the CPU, which this machine checks)."""
    import onnxruntime

    _, path = model12
    asked = []
    real = onnxruntime.InferenceSession

    def recording(model, options, providers):
        asked.append(providers)
        return real(model, options, providers=[p for p in providers if p == "CPUExecutionProvider"])

    monkeypatch.setattr(runtime_module, "cuda_usable", lambda: True)
    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    ort = OnnxEncoder(path, providers="auto", conv_algo_search="HEURISTIC")
    assert asked[0][0] == ("CUDAExecutionProvider",
                           runtime_module.cuda_provider_options("HEURISTIC"))
    assert asked[0][1] == "CPUExecutionProvider"
    assert ort.provider == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="conv_algo_search"):
        OnnxEncoder(path, conv_algo_search="fastest")


# ---------------------------------------------------------------- embed


def _recording12(seconds=30.0, fs=500.0, seed=4):
    from ecgfast.data import ecgsyn

    rng = np.random.default_rng(seed)
    beat = ecgsyn(seconds, fs, heart_rate=70.0, rng=seed)
    gains = rng.uniform(0.3, 1.5, 12) * rng.choice([-1.0, 1.0], 12)
    return np.round(gains[:, None] * beat + 0.02 * rng.standard_normal((12, beat.size)), 3)


def _expected(ort, signal, fs):
    from ecgfast.data import preprocess

    per_lead = [preprocess(row, fs).windows for row in signal]
    return ort.embed(np.stack(per_lead, axis=1))


def test_iter_lead_windows_matches_per_lead_preprocess_and_drops_flat_windows():
    from ecgfast.data import preprocess

    sig = _recording12(40.0, 256.0)
    sig[5, 2560:5120] = 0.0  # lead aVF flat in window 1 (10-20 s)
    batches = list(iter_lead_windows(sig, 256.0, batch_windows=2, source="rec"))
    windows = np.concatenate([b.windows for b in batches])
    starts = np.concatenate([b.starts_s for b in batches])
    assert windows.shape == (3, 12, 2560) and sum(b.n_skipped_flat for b in batches) == 1
    np.testing.assert_array_equal(starts, [0.0, 20.0, 30.0])
    lead0 = preprocess(sig[0], 256.0).windows
    np.testing.assert_allclose(windows[:, 0], lead0[[0, 2, 3]], rtol=0, atol=1e-6)


def _write_wfdb(tmp_path, signal, names, name="rec"):
    wfdb = pytest.importorskip("wfdb")
    wfdb.wrsamp(name, fs=500, units=["mV"] * len(names), sig_name=list(names),
                p_signal=signal.T, fmt=["16"] * len(names), write_dir=str(tmp_path))
    return tmp_path / f"{name}.hea"


@pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")
def test_embed_wfdb_reads_the_models_leads_by_name(model12, tmp_path, capsys):
    _, path = model12
    ort = OnnxEncoder(path, providers="cpu")
    sig = _recording12()
    order = np.random.default_rng(0).permutation(12)  # the file stores them shuffled
    record = _write_wfdb(tmp_path, sig[order], [LEADS12[i] for i in order])
    out = tmp_path / "emb.npz"
    assert main(["embed", str(path), str(record), "--out", str(out), "--quiet",
                 "--providers", "cpu"]) == 0
    got = np.load(out)
    assert got["embeddings"].shape == (3, 32)
    np.testing.assert_allclose(got["embeddings"], _expected(ort, sig, 500.0),
                               rtol=0, atol=1e-4 * np.abs(got["embeddings"]).max())
    # naming the leads explicitly, or 'all' of a file in the model's order, agrees
    out2 = tmp_path / "emb2.npz"
    assert main(["embed", str(path), str(record), "--out", str(out2), "--quiet",
                 "--providers", "cpu", "--leads", ",".join(LEADS12)]) == 0
    np.testing.assert_array_equal(np.load(out2)["embeddings"], got["embeddings"])


@pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")
def test_embed_errors_name_file_lead_and_counts(model12, tmp_path, capsys):
    _, path = model12
    sig = _recording12(20.0)
    names = list(LEADS12[:11]) + ["MLII"]  # no V6
    record = _write_wfdb(tmp_path, sig, names, name="odd")
    out = tmp_path / "e.npz"
    assert main(["embed", str(path), str(record), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "odd.hea" in err and "'V6'" in err and "MLII" in err
    assert main(["embed", str(path), str(record), "--out", str(out), "--quiet",
                 "--leads", "I,II,V1"]) == 2
    err = capsys.readouterr().err
    assert "gives 3 lead(s) (I, II, V1)" in err and "enc12.onnx takes 12" in err
    assert main(["embed", str(path), str(record), "--out", str(out), "--quiet",
                 "--leads", "I,,II"]) == 2
    assert "comma-separated lead names" in capsys.readouterr().err
    assert not out.exists()


def test_embed_csv_and_npy_columns(model12, tmp_path):
    _, path = model12
    ort = OnnxEncoder(path, providers="cpu")
    sig = _recording12(20.0)
    csv = tmp_path / "rec.csv"
    rev = list(reversed(LEADS12))
    np.savetxt(csv, sig[::-1].T, delimiter=",", header=",".join(rev), comments="", fmt="%.3f")
    out = tmp_path / "csv.npy"
    assert main(["embed", str(path), str(csv), "--fs", "500", "--out", str(out), "--quiet"]) == 0
    want = _expected(ort, sig, 500.0)
    np.testing.assert_allclose(np.load(out), want, rtol=0, atol=1e-4 * np.abs(want).max())
    # an unnamed (n, 12) npy: the first 12 columns by default, or by index
    npy = tmp_path / "rec.npy"
    np.save(npy, np.concatenate([sig, sig[:1]]).T)  # 13 columns
    with pytest.raises(ValueError, match="no lead named 'I'"):
        main_debug(["embed", str(path), str(npy), "--fs", "500", "--out", str(out), "--quiet"])
    out3 = tmp_path / "npy.npz"
    assert main(["embed", str(path), str(npy), "--fs", "500", "--out", str(out3), "--quiet",
                 "--leads", ",".join(str(i) for i in range(12))]) == 0
    np.testing.assert_allclose(np.load(out3)["embeddings"], want, rtol=0,
                               atol=1e-4 * np.abs(want).max())


def main_debug(argv):
    import os

    os.environ["ECGFAST_DEBUG"] = "1"
    try:
        return main(argv)
    finally:
        del os.environ["ECGFAST_DEBUG"]


def test_embed_unnamed_model_reads_the_first_c_leads(tmp_path):
    torch.manual_seed(3)
    enc = ECGEncoder(EncoderConfig(in_channels=2, **SMALL)).eval()
    path = tmp_path / "enc2.onnx"
    export_onnx(enc, path, batch_sizes=(1,), lengths=(300,), print_report=False)
    ort = OnnxEncoder(path, providers="cpu")
    assert ort.in_channels == 2 and ort.leads is None
    sig = _recording12(20.0)[:3]
    npy = tmp_path / "three.npy"
    np.save(npy, sig)  # (3, n): leads along the shorter axis
    out = tmp_path / "e.npy"
    assert main(["embed", str(path), str(npy), "--fs", "500", "--out", str(out), "--quiet"]) == 0
    want = _expected(ort, sig[:2], 500.0)
    np.testing.assert_allclose(np.load(out), want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")
def test_cli_export_int8_calibrates_on_a_multilead_record(tmp_path, capsys):
    from ecgfast.training.checkpoint import save_checkpoint

    torch.manual_seed(5)
    config = EncoderConfig(in_channels=12, leads=LEADS12, **SMALL)
    enc = ECGEncoder(config).eval()
    save_checkpoint(tmp_path / "run", epoch=1, config={"encoder": config.to_dict()},
                    state_dict={f"encoder.{k}": v for k, v in enc.state_dict().items()})
    record = _write_wfdb(tmp_path, _recording12(60.0), LEADS12)
    out = tmp_path / "enc.onnx"
    argv = ["export", str(tmp_path / "run"), "--out", str(out), "--int8", "--calibration",
            str(record), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    int8 = OnnxEncoder(tmp_path / "enc.int8.onnx", providers="cpu")
    assert int8.in_channels == 12 and int8.leads == LEADS12
    assert "cosine" in capsys.readouterr().out
    # a labelled cohort has one lead: named as the reason
    argv[-2] = "synthetic"
    assert main(argv) == 2
    assert "enc.onnx takes 12 leads; calibrate it on a recording" in capsys.readouterr().err
