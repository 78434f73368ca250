"""The inference install: a serving path that never imports PyTorch, the model's own
pre-processing contract applied by ``embed``, and training commands that say what they need.

Every test here is marked ``inference`` and this module imports no torch: CI runs
``pytest -m inference`` in a fresh environment made by ``pip install ./serving`` (no torch,
Triton or NVIDIA wheels), and the full suite runs the same tests with torch hidden from a
subprocess. The models are tiny ONNX graphs written by the test (tests/tiny_onnx.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import tiny_encoder

from ecgfast.data import ecgsyn, iter_windows
from ecgfast.data.contract import (
    CONTRACT_VERSION,
    ContractError,
    Preprocessing,
    read_contract,
)
from ecgfast.export import OnnxEncoder, OnnxModelError
from ecgfast.export.metadata import META_LEADS, META_PREPROCESSING

pytestmark = pytest.mark.inference

REPO = Path(__file__).resolve().parents[1]
#: Chosen away from every default, so that serving with the defaults would differ.
HIGHPASS_05 = Preprocessing(highpass_hz=0.5, highpass_order=2, target_fs=128.0,
                            window_seconds=4.0)
#: What the training install has and the inference install lacks; hidden in subprocesses.
TRAINING_ONLY = ("torch", "triton", "onnxscript", "safetensors")
#: The modules of the serving packages that belong to training (they import torch).
TORCH_MODULES = ("ecgfast.data.store", "ecgfast.export.onnx_export",
                 "ecgfast.export.tracing", "ecgfast.export.verify", "ecgfast.export.quantize",
                 "ecgfast.export.quantize_report")

#: Run first in a subprocess: any import of TRAINING_ONLY raises and is recorded.
HIDE_TRAINING = textwrap.dedent(f"""
    import sys

    class HideTraining:
        tried = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {TRAINING_ONLY!r}:
                self.tried.append(name)
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, HideTraining())
""")


def run_python(code: str, cwd) -> dict:
    """Run ``code`` in a fresh interpreter of this environment; it prints one JSON line."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """70 s of two-lead synthetic ECG at 360 Hz: a WFDB record, and the signal itself."""
    import wfdb

    d = tmp_path_factory.mktemp("rec")
    signal = np.stack([ecgsyn(70.0, 360.0, heart_rate=hr, rng=seed)
                       for seed, hr in ((1, 64.0), (2, 71.0))])
    wfdb.wrsamp("rec", fs=360, units=["mV", "mV"], sig_name=["I", "II"],
                p_signal=signal.T, fmt=["16", "16"], adc_gain=[2000.0, 2000.0],
                baseline=[0, 0], write_dir=str(d))
    return d / "rec.hea", wfdb.rdrecord(str(d / "rec")).p_signal.T


def model(path, chain: Preprocessing | None, leads=None, record=None):
    meta = {}
    if chain is not None or record is not None:
        meta[META_PREPROCESSING] = record if record is not None else chain.to_record(leads)
    if leads is not None:
        meta[META_LEADS] = list(leads)
    return tiny_encoder(path, leads=len(leads) if leads else 1, metadata=meta)


def test_the_serving_path_never_imports_torch(tmp_path, recording):
    """ecgfast, every module of ecgfast.data and of the serving side of ecgfast.export,
    the CLI, and `ecgfast embed` of a WFDB record run with the training stack hidden and
    never even try to import it."""
    hea, _ = recording
    path = model(tmp_path / "m.onnx", Preprocessing(), leads=("I", "II"))
    code = HIDE_TRAINING + textwrap.dedent(f"""
        import importlib, json, pkgutil
        import ecgfast, ecgfast.atomic, ecgfast.cli, ecgfast.data, ecgfast.export, ecgfast.provenance
        from ecgfast.export import OnnxEncoder
        loaded = []
        for package in (ecgfast.data, ecgfast.export, ecgfast.cli):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if info.name not in {TORCH_MODULES!r}:
                    importlib.import_module(info.name)
                    loaded.append(info.name)
        from ecgfast.cli import main
        rc = main(["embed", {str(path)!r}, {str(hea)!r}, "--out", "e.npy", "--quiet",
                   "--providers", "cpu"])
        print(json.dumps({{"rc": rc, "tried": HideTraining.tried, "loaded": loaded,
                          "shape": list(__import__("numpy").load("e.npy").shape),
                          "modules": sorted(m for m in sys.modules
                                            if m.split(".")[0] in {TRAINING_ONLY!r})}}))
    """)
    out = run_python(code, tmp_path)
    assert out["rc"] == 0 and out["shape"] == [7, 4]  # 70 s in 10 s windows
    assert out["tried"] == [] and out["modules"] == []
    assert {"ecgfast.data.readers", "ecgfast.data.contract", "ecgfast.export.runtime",
            "ecgfast.export.embed", "ecgfast.export.card"} <= set(out["loaded"])
    # loading a model for serving (what every worker pays at start) needs no scipy either
    lean = textwrap.dedent(f"""
        import json, sys
        from ecgfast.export import OnnxEncoder
        OnnxEncoder({str(path)!r}, providers="cpu")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                                ("scipy", *{TRAINING_ONLY!r}))))
    """)
    assert run_python(lean, tmp_path) == []


def test_training_commands_say_they_need_the_training_install(tmp_path):
    code = HIDE_TRAINING + textwrap.dedent("""
        import contextlib, io, json
        from ecgfast.cli import main
        found = {}
        for argv in (["pretrain", "--out", "r"], ["evaluate", "random"], ["demo"],
                     ["ablation", "--out", "a"], ["export", "r", "--out", "m.onnx"],
                     ["prepare", "--info", "store"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(argv)
            found[argv[0]] = [rc, err.getvalue()]
        print(json.dumps(found))
    """)
    for command, (rc, err) in run_python(code, tmp_path).items():
        assert rc == 2, (command, err)
        assert f"ecgfast {command}: needs the training install" in err
        assert "Traceback" not in err


def test_embed_applies_the_models_recorded_chain(tmp_path, recording):
    """A model recording a non-default chain (0.5 Hz order-2 high-pass, 128 Hz, 4 s
    windows) is served with it, not with the library's defaults, by the CLI and by
    OnnxEncoder.embed_recording alike."""
    hea, signal = recording
    encoder = OnnxEncoder(model(tmp_path / "m.onnx", HIGHPASS_05, leads=("I", "II")),
                          providers="cpu")
    assert encoder.preprocessing == HIGHPASS_05
    emb, starts = encoder.embed_recording(signal, 360.0)
    per_lead = [list(iter_windows(row, 360.0, preprocessing=HIGHPASS_05)) for row in signal]
    windows = np.stack([np.concatenate([b.windows for b in lead]) for lead in per_lead], 1)
    assert windows.shape == (17, 2, 512)
    np.testing.assert_array_equal(emb, encoder.embed(windows))
    np.testing.assert_allclose(starts, np.arange(17) * 4.0)
    # the library's default high-pass would give other windows, hence other embeddings
    default = replace(HIGHPASS_05, highpass_hz=0.8, highpass_order=4)
    other = np.stack([np.concatenate([b.windows for b in iter_windows(row, 360.0,
                                                                      preprocessing=default)])
                      for row in signal], 1)
    assert np.abs(encoder.embed(other) - emb).max() > 1e-3 * np.abs(emb).max()
    # serving may overlap the windows; the rest of the chain stays the model's
    np.testing.assert_allclose(encoder.embed_recording(signal, 360.0, overlap=0.5)[1],
                               np.arange(34) * 2.0)

    # the installed `ecgfast` command (the entry point), on the WFDB record
    script = Path(sys.executable).with_name("ecgfast")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "ecgfast"]
    proc = subprocess.run([*command, "embed", str(encoder.path), str(hea), "--out",
                           str(tmp_path / "e.npz"), "--quiet", "--providers", "cpu"],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "17 windows embedded (4-d)" in proc.stdout
    with np.load(tmp_path / "e.npz") as f:
        np.testing.assert_allclose(f["embeddings"], emb, rtol=1e-6)
        np.testing.assert_array_equal(f["starts_s"], starts)


def test_a_file_without_a_contract_is_served_with_todays_chain_and_a_warning(tmp_path):
    signal = ecgsyn(40.0, 500.0, rng=4)
    encoder = OnnxEncoder(model(tmp_path / "old.onnx", None), providers="cpu")
    assert encoder.preprocessing is None
    with pytest.warns(UserWarning, match=r"old\.onnx records no pre-processing.*default chain"):
        emb, starts = encoder.embed_recording(signal, 500.0)
    windows = np.concatenate([b.windows for b in iter_windows(signal, 500.0)])
    np.testing.assert_array_equal(emb, encoder.embed(windows))
    np.testing.assert_allclose(starts, [0.0, 10.0, 20.0, 30.0])


@pytest.mark.parametrize("change, match", [
    ({"version": CONTRACT_VERSION + 1}, (rf"version {CONTRACT_VERSION + 1}, written by a newer "
                                        rf"ecgfast.*up to {CONTRACT_VERSION}")),
    ({"highpass": "bessel"}, r"highpass 'bessel' is not one this version.*butterworth"),
    ({"resampler": "fft"}, r"resampler 'fft' is not one this version.*polyphase"),
    ({"notch_hz": 50.0}, r"\['notch_hz'\] that this version does not know"),
    ({"format": "other"}, r"format is 'other'"),
    ({"highpass_hz": -1.0}, r"highpass_hz must be > 0"),
    ({"leads": ["V1"]}, r"pre-processing names leads \['V1'\], its ecgfast.leads \['I'\]"),
])
def test_a_chain_this_version_cannot_reproduce_is_refused(tmp_path, change, match):
    record = {**Preprocessing().to_record(["I"]), **change}
    with pytest.raises(OnnxModelError, match=match) as err:
        OnnxEncoder(model(tmp_path / "m.onnx", None, leads=("I",), record=record),
                    providers="cpu")
    assert "m.onnx" in str(err.value)


def test_contract_record_round_trip_and_checks():
    chain = replace(HIGHPASS_05, zscore_scope="subject", overlap=0.25)
    record = json.loads(json.dumps(chain.to_record(("I", "II"))))
    assert record["format"] == "ecgfast.preprocessing" and record["version"] == CONTRACT_VERSION
    assert read_contract(record, "x") == (chain, ("I", "II"), CONTRACT_VERSION)
    assert read_contract(json.dumps(Preprocessing().to_record()), "x").leads is None
    with pytest.raises(ContractError, match=r"f\.onnx: .*lacks \['central'\]"):
        read_contract({k: v for k, v in record.items() if k != "central"}, "f.onnx")
    for bad in ({"overlap": 1.0}, {"highpass_order": 0}, {"central": 0.0},
                {"zscore_scope": "session"}, {"target_fs": float("nan")}):
        with pytest.raises(ContractError, match=next(iter(bad))):
            Preprocessing(**bad)
    with pytest.raises(TypeError, match="unknown pre-processing option"):
        list(iter_windows(np.zeros(10), 256.0, highpass_typo=1.0))


def test_the_serving_distribution_ships_the_packages_of_the_full_one():
    """serving/pyproject.toml builds the same package from the same folders, with the
    inference dependencies only."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    full = tomllib.loads((REPO / "pyproject.toml").read_text())
    lean = tomllib.loads((REPO / "serving" / "pyproject.toml").read_text())
    assert lean["project"]["version"] == full["project"]["version"]
    assert lean["tool"]["setuptools"]["packages"] == full["tool"]["setuptools"]["packages"]
    dirs = {k: "../" + v for k, v in full["tool"]["setuptools"]["package-dir"].items()}
    assert lean["tool"]["setuptools"]["package-dir"] == {"ecgfast": "../ecgfast", **dirs}
    assert lean["project"]["scripts"] == full["project"]["scripts"]
    names = {d.split(">")[0].split(";")[0].split("=")[0].strip()
             for d in lean["project"]["dependencies"]}
    assert names == {"numpy", "scipy", "onnx", "onnxruntime", "tqdm", "wfdb", "edfio"}
