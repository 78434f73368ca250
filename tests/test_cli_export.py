"""ecgfast export / embed: a pretrained checkpoint to ONNX to embeddings of a recording."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ecgfast.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--subjects", "2", "--sessions", "2", "--session-seconds", "20"]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    assert main(["pretrain", "--out", str(d / "run"), "--epochs", "1", "--max-steps-per-epoch", "1",
                 "--batch-size", "4", "--quiet", *TINY]) == 0
    assert main(["export", str(d / "run"), "--out", str(d / "enc.onnx")]) == 0
    return d / "enc.onnx"


def test_export_writes_a_verified_model(onnx_model, capsys):
    assert onnx_model.stat().st_size > 1_000_000  # ~345k fp32 parameters
    import onnx

    onnx.checker.check_model(str(onnx_model))


def test_export_int8_with_calibration(onnx_model, tmp_path, capsys):
    run = onnx_model.parent / "run"
    int8 = tmp_path / "enc.int8.onnx"
    assert main(["export", str(run), "--out", str(tmp_path / "enc.onnx"), "--int8",
                 "--int8-out", str(int8), "--calibration", "synthetic", "--calibration-windows",
                 "16", *TINY]) == 0
    assert int8.is_file()
    from ecgfast.export import OnnxEncoder

    x = np.random.default_rng(0).standard_normal((4, 2560)).astype(np.float32)
    a = OnnxEncoder(tmp_path / "enc.onnx").embed(x)
    b = OnnxEncoder(int8).embed(x)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.9


def test_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".onnx" in capsys.readouterr().err


def test_embed_a_recording(onnx_model, tmp_path, capsys):
    from ecgfast.data import ecgsyn

    np.save(tmp_path / "rec.npy", ecgsyn(125.0, fs=360.0, heart_rate=72.0, rng=3))
    out = tmp_path / "emb.npy"
    assert main(["embed", str(onnx_model), str(tmp_path / "rec.npy"), "--fs", "360",
                 "--out", str(out), "--quiet"]) == 0
    emb = np.load(out)
    starts = np.load(tmp_path / "emb.starts.npy")
    assert emb.shape == (12, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(starts, np.arange(12) * 10.0)
    assert np.isfinite(emb).all()
    # the same windows through the training pre-processing and the PyTorch encoder
    from ecgfast.data import preprocess, read_recording
    from ecgfast.evaluation import extract_features
    from ecgfast.training.checkpoint import load_encoder

    rec = read_recording(tmp_path / "rec.npy", fs=360.0)
    win = preprocess(rec.signal, rec.fs)
    ref = extract_features(load_encoder(onnx_model.parent / "run"), win.windows)
    np.testing.assert_allclose(emb, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())

    npz = tmp_path / "emb.npz"
    assert main(["embed", str(onnx_model), str(tmp_path / "rec.npy"), "--fs", "360",
                 "--out", str(npz), "--overlap", "0.5", "--quiet"]) == 0
    with np.load(npz) as f:
        assert f["embeddings"].shape == (24, 128)  # (125 - 10) / 5 + 1
        np.testing.assert_allclose(f["starts_s"], np.arange(24) * 5.0)


@pytest.mark.parametrize("argv,match", [
    (["embed", "{model}", "{dir}/missing.npy", "--fs", "256", "--out", "{dir}/e.npy"], "missing.npy"),
    (["embed", "{dir}/fake.onnx", "{dir}/short.npy", "--fs", "256", "--out", "{dir}/e.npy"], "fake.onnx"),
    (["embed", "{model}", "{dir}/short.npy", "--fs", "256", "--out", "{dir}/e.npy"], "short.npy"),
    (["embed", "{model}", "{dir}/short.npy", "--out", "{dir}/e.npy"], "fs"),
    (["embed", "{model}", "{dir}/nan.npy", "--fs", "256", "--out", "{dir}/e.npy"], "NaN"),
])
def test_embed_errors_name_the_file(onnx_model, tmp_path, capsys, argv, match):
    np.save(tmp_path / "short.npy", np.sin(np.arange(256 * 5) / 7.0))
    bad = np.sin(np.arange(256 * 30) / 7.0)
    bad[100] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "fake.onnx").write_bytes(b"not a model")
    argv = [a.format(model=onnx_model, dir=tmp_path) for a in argv]
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def _embed_peak_rss_mb(model, recording, out):
    code = ("import resource, sys; from ecgfast.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "embed", str(model), str(recording),
                           "--fs", "256", "--out", str(out), "--quiet", "--batch-windows", "64"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split("PEAK")[1].split()[0]) / 1024


def test_embedding_hours_of_ecg_keeps_memory_bounded(onnx_model, tmp_path):
    """Peak memory for 3 hours is within 150 MiB of that for 15 minutes."""
    from ecgfast.data import ecgsyn

    for name, seconds in (("short", 15 * 60), ("long", 3 * 3600)):
        np.save(tmp_path / f"{name}.npy", ecgsyn(seconds, fs=256.0, heart_rate=64.0, rng=7))
    short = _embed_peak_rss_mb(onnx_model, tmp_path / "short.npy", tmp_path / "s.npy")
    long = _embed_peak_rss_mb(onnx_model, tmp_path / "long.npy", tmp_path / "l.npy")
    assert np.load(tmp_path / "l.npy").shape == (1080, 128)
    assert long - short < 150, (short, long)
