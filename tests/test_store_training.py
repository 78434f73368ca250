"""pretrain on a WindowStore: the same weights as from a tensor, exact resume, lead
count from the store, and peak RSS that does not grow with the store's size."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import STORE_RSS_SCRIPT  # benchmarks/common.py (pytest pythonpath)

from ecgfast.data import WindowStore
from ecgfast.data.prepare import prepare
from ecgfast.models import EncoderConfig
from ecgfast.training import PretrainConfig, pretrain
from ecgfast.training import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = EncoderConfig(filters=(4, 8, 8), kernel_sizes=(5, 3, 3), dropout=0.1)


def _recordings(folder, n, seconds, leads, seed=0, dtype=np.float64):
    """``n`` (leads, seconds * 256) spiky recordings as .npy files; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 256)) / 256
    paths = []
    for i in range(n):
        beat = np.exp(-(((t * (1.0 + 0.05 * i)) % 1.0 - 0.3) ** 2) / 0.001)
        sig = beat[None] * np.linspace(0.5, 1.5, leads)[:, None]
        sig = sig + 0.05 * rng.standard_normal((leads, t.size))
        np.save(folder / f"rec{i:03d}.npy", sig.astype(dtype))
        paths.append(folder / f"rec{i:03d}.npy")
    return paths


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store3")
    paths = _recordings(root / "src", 3, 42.0, 3)
    return WindowStore(prepare(paths, root / "s", fs=256.0, dtype="float32", workers=1,
                               shard_windows=5, progress=False))


def _weights(run):
    return ckpt.load_checkpoint(run).state_dict


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_store_gives_the_weights_of_the_same_windows_in_memory(store, tmp_path):
    cfg = PretrainConfig(objective="contrastive", epochs=1, batch_size=4, seed=3)
    pretrain(store, tmp_path / "s0", TINY, cfg, progress=False, loader_workers=0)
    pretrain(store, tmp_path / "s2", TINY, cfg, progress=False, loader_workers=2)
    pretrain(store.get_batch(range(len(store))), tmp_path / "t", TINY, cfg, progress=False)
    assert _same(_weights(tmp_path / "s0"), _weights(tmp_path / "s2"))
    assert _same(_weights(tmp_path / "s0"), _weights(tmp_path / "t"))
    saved = ckpt.load_checkpoint(tmp_path / "s0")
    assert saved.encoder_config.in_channels == 3 and saved.encoder_config.leads == ("0", "1", "2")
    assert saved.config["data_fingerprint"] == store.fingerprint()
    assert saved.config["n_windows"] == 12 and saved.config["window_length"] == 2560


def test_resume_on_a_store_ends_bit_equal(store, tmp_path):
    cfg = PretrainConfig(objective="contrastive", epochs=2, batch_size=4, seed=1)
    pretrain(store, tmp_path / "whole", TINY, cfg, progress=False, loader_workers=0)
    pretrain(store, tmp_path / "cut", TINY, PretrainConfig(objective="contrastive", epochs=1,
                                                           batch_size=4, seed=1), progress=False,
             loader_workers=0)
    pretrain(store, tmp_path / "cut", TINY, cfg, resume=True, progress=False, loader_workers=0)
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))


def test_encoder_with_another_lead_count_is_refused(store, tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match=r"takes 2 lead.*have 3"):
        pretrain(store, tmp_path / "r", dataclasses.replace(TINY, in_channels=2),
                 PretrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"leads \['I', 'II', 'V1'\] differ.*\['0', '1', '2'\]"):
        pretrain(store, tmp_path / "r", dataclasses.replace(TINY, in_channels=3,
                                                            leads=("I", "II", "V1")),
                 PretrainConfig(epochs=1), progress=False)


def _peak_rss_mib(*runs) -> list[float]:
    """Peak RSS of the pretraining script on each (store, run directory), run together."""
    procs = [subprocess.Popen([sys.executable, "-c", STORE_RSS_SCRIPT, str(store), str(run)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for store, run in runs]
    peaks = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        peaks.append(json.loads(out.strip().splitlines()[-1])["peak_rss_kib"] / 1024)
    return peaks


def test_peak_rss_does_not_grow_with_the_store(tmp_path):
    """Pretraining over every window of a store 10x larger (by >100 MiB) than another
    peaks within 100 MiB of it: the loader never holds the store in memory."""
    small = prepare(_recordings(tmp_path / "a", 1, 1000.0, 12, dtype=np.float32),
                    tmp_path / "small", fs=256.0, dtype="float32", workers=2, progress=False)
    big = prepare(_recordings(tmp_path / "b", 10, 1000.0, 12, dtype=np.float32),
                  tmp_path / "big", fs=256.0, dtype="float32", workers=2, progress=False)
    n_small, n_big = len(WindowStore(small)), len(WindowStore(big))
    assert n_big == 10 * n_small == 1000
    def size(d):
        return sum(f.stat().st_size for f in (d / "shards").iterdir())

    assert size(big) - size(small) > 100 * 2**20  # holding the big one would break the bound
    rss_small, rss_big = _peak_rss_mib((small, tmp_path / "run_small"), (big, tmp_path / "run_big"))
    assert abs(rss_big - rss_small) < 100, (rss_small, rss_big)


@pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")
def test_ptbxl_tree_prepare_pretrain_export_embed(tmp_path, capsys):
    """A PTB-XL-like 12-lead tree (a corrupt record, one at 100 Hz) through every command:
    prepare -> pretrain --data STORE -> export (ONNX, checked against PyTorch) -> embed of
    a 12-lead WFDB record by the lead names the model carries."""
    import importlib.util

    pytest.importorskip("onnxruntime")
    from ecgfast.cli import main

    spec = importlib.util.spec_from_file_location(
        "ecgfast_test_store_files", os.path.join(REPO, "tests", "data", "store_files.py"))
    files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)
    tree = files.ptbxl_tree(tmp_path / "ptbxl", n=6)
    store, run, onnx = tmp_path / "store", tmp_path / "run", tmp_path / "enc.onnx"
    assert main(["prepare", str(tree), "--out", str(store), "--workers", "2", "--quiet"]) == 0
    assert "6 windows from 5 records, 1 rejected" in capsys.readouterr().out
    assert main(["pretrain", "--data", str(store), "--out", str(run), "--epochs", "1",
                 "--batch-size", "2", "--max-steps-per-epoch", "1", "--objective",
                 "contrastive", "--residual", "none", "--no-attention", "--quiet",
                 "--device", "cpu", "--loader-workers", "1"]) == 0
    saved = ckpt.load_checkpoint(run)
    assert saved.encoder_config.in_channels == 12
    assert saved.encoder_config.leads == tuple(files.LEADS12)
    # --leads trains on some of the store's leads, matched case-insensitively
    assert main(["pretrain", "--data", str(store), "--out", str(tmp_path / "run2"),
                 "--leads", "v1,I,avr", "--epochs", "1", "--batch-size", "2",
                 "--max-steps-per-epoch", "1", "--objective", "contrastive", "--residual",
                 "none", "--no-attention", "--quiet", "--device", "cpu"]) == 0
    two = ckpt.load_checkpoint(tmp_path / "run2").encoder_config
    assert two.in_channels == 3 and two.leads == ("V1", "I", "AVR")
    assert main(["pretrain", "--data", str(store), "--out", str(tmp_path / "run3"),
                 "--leads", "I,X9", "--quiet", "--device", "cpu"]) != 0
    assert "no lead(s) ['X9']" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(onnx), "--quiet"]) == 0
    record = files.write_record(tmp_path / "new", "r", 30.0, 500.0, seed=9)
    assert main(["embed", str(onnx), str(record), "--out", str(tmp_path / "emb.npz"),
                 "--quiet", "--providers", "cpu"]) == 0
    emb = np.load(tmp_path / "emb.npz")["embeddings"]
    assert emb.shape == (3, 128) and np.isfinite(emb).all()
