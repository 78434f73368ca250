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


def test_export_writes_the_model_card_beside_the_file(onnx_model):
    """The card: its first line says the model saw synthetic data only; the training data,
    objective, epochs, final loss, pre-processing and software from the checkpoint; the
    same JSON beside the file as in its metadata."""
    import json

    from ecgfast.data.contract import SUBJECT_CHAIN
    from ecgfast.export import OnnxEncoder
    from ecgfast.export.metadata import META_CARD

    card = json.loads((onnx_model.parent / "enc.card.json").read_text())
    assert card == json.loads(OnnxEncoder(onnx_model).metadata[META_CARD])
    md = (onnx_model.parent / "enc.card.md").read_text()
    assert md.splitlines()[0].startswith("# SYNTHETIC-DATA MODEL: self-supervised (transform)")
    assert card["summary"].startswith("SYNTHETIC-DATA MODEL")
    data = card["training_data"]
    assert data["synthetic"] and data["source"] == "synthetic" and data["n_subjects"] == 2
    assert data["n_windows"] == card["training"]["n_windows"] == 8  # 2 x 2 x 20 s
    assert card["training"]["objective"] == "transform"
    assert card["training"]["epochs_trained"] == card["training"]["epochs_planned"] == 1
    assert card["training"]["final_epoch"]["loss"] > 0
    assert card["preprocessing"] == SUBJECT_CHAIN.to_record()
    assert card["evaluation"] is None and "No probe results were recorded" in md
    assert {"torch", "numpy", "ecgfast"} <= set(card["software"]["training"])
    assert "onnx" in card["software"]["export"]
    assert any(line.startswith("Not a medical device") for line in card["limitations"])
    assert card["limitations"][0].startswith("Trained on the synthetic ECGSYN cohort only")


def test_the_card_takes_probe_results(onnx_model, tmp_path):
    """Probe results of `ecgfast evaluate --out` (or the run's demo) go into the card."""
    import json

    from ecgfast.evaluation import probe_features
    from ecgfast.export.card import export_metadata, render_markdown
    from ecgfast.export.metadata import META_CARD
    from ecgfast.training import load_encoder

    rng = np.random.default_rng(0)
    scores = probe_features(rng.standard_normal((40, 8)).astype(np.float32),
                            {"arousal": np.arange(40) % 2}, split="window", n_folds=2, epochs=5)
    results = tmp_path / "eval.json"
    results.write_text(json.dumps({"split": "window", "results": {"run": scores}}))
    run = onnx_model.parent / "run"
    card = json.loads(export_metadata(run, load_encoder(run), probe_results=results)[META_CARD])
    row = card["evaluation"]["results"]["run"]["arousal"]
    assert card["evaluation"]["file"] == "eval.json"
    assert row["accuracy_mean"] == scores["arousal"]["accuracy_mean"] and row["n_folds"] == 2
    md = render_markdown(card, "enc.onnx")
    assert f"| run | arousal | window | {100 * row['accuracy_mean']:.1f} ± " in md
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match=r"bad\.json: not a probe results file"):
        export_metadata(run, load_encoder(run), probe_results=tmp_path / "bad.json")


def test_export_int8_with_calibration(onnx_model, tmp_path, capsys):
    run = onnx_model.parent / "run"
    int8 = tmp_path / "enc.int8.onnx"
    assert main(["export", str(run), "--out", str(tmp_path / "enc.onnx"), "--int8",
                 "--int8-out", str(int8), "--calibration", "synthetic", "--calibration-windows",
                 "16", *TINY]) == 0
    assert int8.is_file()
    assert "(INT8 int8-qdq-per-channel)" in (tmp_path / "enc.int8.card.md").read_text()
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
