"""OnnxEncoder: loads only (batch, 1, length) encoders, validates inputs, matches PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from ecgfast.export import OnnxEncoder, OnnxModelError, cuda_usable


@pytest.fixture(scope="module")
def runtime(exported):
    model, path, _ = exported
    return model, OnnxEncoder(path, providers="cpu", threads=1)


def _identity_model(path, shape):
    """A tiny valid ONNX model: input of ``shape`` -> ReduceMax over the last axis."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph([node], "g", [x], [y], [axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_embed_matches_torch_numpy_and_tensor(runtime):
    model, enc = runtime
    x = np.random.default_rng(0).standard_normal((5, 1, 2560)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = enc.embed(x)
    assert isinstance(got, np.ndarray) and got.shape == (5, 128) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    # (B, L) input, torch input -> torch output, chunked batches: all the same numbers
    np.testing.assert_allclose(enc.embed(x[:, 0]), got, rtol=0, atol=1e-6)
    out_t = enc.embed(torch.from_numpy(x))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (5, 128)
    np.testing.assert_allclose(out_t.numpy(), got, rtol=0, atol=1e-6)
    np.testing.assert_allclose(enc.embed(x, batch_size=2), got, rtol=0, atol=1e-5)
    assert enc.embedding_dim == 128 and enc.min_length == model.min_length
    assert enc.provider == "CPUExecutionProvider"


def test_float64_is_cast_other_dtypes_refused(runtime):
    _, enc = runtime
    x = np.random.default_rng(1).standard_normal((2, 1, 300))
    np.testing.assert_allclose(enc.embed(x), enc.embed(x.astype(np.float32)), atol=0)
    with pytest.raises(TypeError, match="x must be a float32"):
        enc.embed((x * 100).astype(np.int16))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        enc.embed(torch.zeros(2, 1, 300, dtype=torch.int64))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        enc.embed([[0.0] * 300])


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((300,), "got shape \\(300,\\)"),
        ((2, 1, 1, 300), "batch, 1, length"),
        ((2, 3, 300), "1 channel on axis 1"),
    ],
)
def test_wrong_rank_or_channels(runtime, shape, match):
    _, enc = runtime
    with pytest.raises(ValueError, match=match):
        enc.embed(np.zeros(shape, np.float32))


def test_nan_and_short_windows(runtime):
    model, enc = runtime
    x = np.random.default_rng(2).standard_normal((4, 1, 300)).astype(np.float32)
    x[2, 0, 17] = np.nan
    x[3, 0, 5] = np.inf
    with pytest.raises(
        ValueError, match=r"NaN or infinite samples in 2 window\(s\) \(first: index 2\)"
    ):
        enc.embed(x)
    with pytest.raises(ValueError, match=r"NaN"):
        enc.embed(torch.from_numpy(x))
    short = np.zeros((1, 1, model.min_length - 1), np.float32)
    with pytest.raises(ValueError, match=f"length {model.min_length - 1}, shorter than"):
        enc.embed(short)
    assert enc.embed(np.zeros((0, 1, 300), np.float32)).shape == (0, 128)


def test_not_onnx_files(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(OnnxModelError, match="notes.onnx"):
        OnnxEncoder(text)
    junk = tmp_path / "random.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(OnnxModelError, match="random.onnx"):
        OnnxEncoder(junk)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxEncoder(tmp_path / "missing.onnx")
    with pytest.raises(OnnxModelError, match="is not a file"):
        OnnxEncoder(tmp_path)


@pytest.mark.parametrize(
    "shape", [["batch", 2, "length"], ["batch", "length"], ["batch", "c", "length"]]
)
def test_model_with_wrong_input_signature(tmp_path, shape):
    path = tmp_path / "other.onnx"
    _identity_model(path, shape)
    with pytest.raises(OnnxModelError, match=r"other.onnx: input 'x' must be float32 \(batch, 1"):
        OnnxEncoder(path)


def test_provider_and_thread_arguments(exported):
    _, path, _ = exported
    with pytest.raises(ValueError, match="providers must be one of"):
        OnnxEncoder(path, providers="gpu")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            OnnxEncoder(path, threads=bad)
    if not cuda_usable():
        with pytest.raises(RuntimeError, match="CUDA execution provider is not usable"):
            OnnxEncoder(path, providers="cuda")
        assert OnnxEncoder(path).provider == "CPUExecutionProvider"
    with pytest.raises(TypeError, match="spin must be True or False"):
        OnnxEncoder(path, spin=1)


def test_spin_sets_the_session_option_and_keeps_results(exported):
    """spin=True only changes how idle threads wait: the session option is set, the
    embeddings are bit-identical to the default (sleeping) session's."""
    _, path, _ = exported
    quiet = OnnxEncoder(path, providers="cpu")
    spinning = OnnxEncoder(path, providers="cpu", spin=True)
    entry = "session.intra_op.allow_spinning"
    assert quiet.session.get_session_options().get_session_config_entry(entry) == "0"
    assert spinning.session.get_session_options().get_session_config_entry(entry) == "1"
    x = np.random.default_rng(3).standard_normal((5, 1, 300)).astype(np.float32)
    np.testing.assert_array_equal(spinning.embed(x), quiet.embed(x))


def _cpu_seconds_while_idle(enc, x) -> float:
    """Process CPU time during a 0.2 s sleep right after a call (median of 3)."""
    enc.embed(x)
    spent = []
    for _ in range(3):
        enc.embed(x)
        start = time.process_time()
        time.sleep(0.2)
        spent.append(time.process_time() - start)
    return sorted(spent)[1]


def test_default_threads_use_no_cpu_between_calls(exported):
    """By default idle intra-op threads sleep: no CPU is used between calls. With
    spin=True they keep spinning after a call (benchmarks/README.md, "Inference", says for
    how long), which shows that the measurement sees spinning."""
    _, path, _ = exported
    x = np.random.default_rng(4).standard_normal((4, 1, 2560)).astype(np.float32)
    idle = _cpu_seconds_while_idle(OnnxEncoder(path, providers="cpu", threads=2), x)
    spinning = _cpu_seconds_while_idle(OnnxEncoder(path, providers="cpu", threads=2, spin=True), x)
    assert idle < 0.01, f"{idle * 1e3:.1f} ms of CPU while idle after a call"
    assert spinning > idle + 0.01, (idle, spinning)


@pytest.mark.skipif(cuda_usable(), reason="checks the CPU-only fallback")
def test_auto_prints_nothing_about_cuda(exported):
    """providers="auto" on a machine without a GPU: no onnxruntime/CUDA messages at all
    (checked in a fresh process, at the file-descriptor level)."""
    _, path, _ = exported
    code = (
        "import numpy as np\n"
        "from ecgfast.export import OnnxEncoder\n"
        f"enc = OnnxEncoder({str(path)!r})\n"
        "print(enc.provider)\n"
        "enc.embed(np.zeros((1, 1, 64), np.float32))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "CPUExecutionProvider"
    assert "cuda" not in done.stderr.lower(), done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


def test_io_binding_path_matches_plain_runs(exported):
    """The I/O-binding code the CUDA provider uses, run on the CPU provider with CPU
    buffers: chunking, shapes and output buffers give the same embeddings as plain runs,
    for numpy and torch input, a batch that does not divide into chunks, and no windows."""
    _, path, _ = exported
    enc = OnnxEncoder(path, providers="cpu", row_fold=False)
    x = torch.randn(9, 1, 2560)
    ref = enc.embed(x.numpy())
    cpu = torch.device("cpu")
    out = enc._embed_bound(x.numpy(), False, 4, cpu)
    assert isinstance(out, np.ndarray) and out.shape == (9, 128)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    out_t = enc._embed_bound(x, True, 9, cpu)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (9, 128)
    np.testing.assert_allclose(out_t.numpy(), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    empty = enc._embed_bound(x[:0], True, 4, cpu)
    assert empty.shape == (0, 128)


@pytest.mark.skipif(not cuda_usable(), reason="needs an NVIDIA GPU and onnxruntime-gpu")
def test_cuda_io_binding_matches_cpu(runtime, exported):  # pragma: no cover - GPU only
    _, enc_cpu = runtime
    _, path, _ = exported
    enc = OnnxEncoder(path, providers="cuda")
    assert enc.provider == "CUDAExecutionProvider"
    x = torch.randn(9, 1, 2560)
    ref = enc_cpu.embed(x.numpy())
    out = enc.embed(x.cuda(), batch_size=4)
    assert out.is_cuda and out.shape == (9, 128)
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=1e-3 * np.abs(ref).max())
    np.testing.assert_allclose(enc.embed(x.numpy()), ref, atol=1e-3 * np.abs(ref).max())


def test_cuda_usable_checks_each_requirement_quietly(monkeypatch, capsys):
    """cuda_usable's decisions with stand-ins for onnxruntime and torch.cuda: the CUDA
    provider must be listed, the system must be able to show a GPU, PyTorch must see one
    and initialise it, and the CUDA libraries must preload; what preloading prints is
    swallowed."""
    import types

    from ecgfast.export import runtime

    state = {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "device": True,
             "gpu": True, "init_fails": False, "preload_fails": False, "preloaded": 0}

    def preload_dlls():
        print("loading libcudnn... (a message onnxruntime would print)")
        sys.stderr.write("warning: a message on stderr\n")
        if state["preload_fails"]:
            raise OSError("libcudnn.so.9: cannot open shared object file")
        state["preloaded"] += 1

    fake_ort = types.SimpleNamespace(get_available_providers=lambda: state["providers"],
                                     preload_dlls=preload_dlls)
    monkeypatch.setattr(runtime, "_ort", lambda: fake_ort)
    monkeypatch.setattr(runtime, "nvidia_device_may_exist", lambda: state["device"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["gpu"])

    def init():
        if state["init_fails"]:
            raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "init", init)
    assert cuda_usable() is True and state["preloaded"] == 1
    for key, value in (("providers", ["CPUExecutionProvider"]), ("device", False), ("gpu", False),
                       ("init_fails", True), ("preload_fails", True)):
        saved = state[key]
        state[key] = value
        assert cuda_usable() is False, key
        state[key] = saved
    assert cuda_usable() is True
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", out


def test_no_visible_gpu_is_known_without_importing_torch(monkeypatch, tmp_path):
    """Where the system shows no NVIDIA GPU, cuda_usable answers False without importing
    PyTorch (so OnnxEncoder(providers="auto") on a CPU-only host of the full install stays
    light); nvidia_device_may_exist reads CUDA_VISIBLE_DEVICES and the driver's entries."""
    from ecgfast.export import providers

    code = ("import sys; from ecgfast.export import cuda_usable; "
            "print(cuda_usable(), 'torch' in sys.modules)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "False"], out
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert providers.nvidia_device_may_exist() is False
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    if sys.platform.startswith("linux"):
        real_scandir = os.scandir
        for present in ((), ("nvidia0",), ("dxg",), ("nvidiactl", "nvidia-uvm")):
            (tmp_path / "dev").mkdir(exist_ok=True)
            for entry in (tmp_path / "dev").iterdir():
                entry.unlink()
            for name in present:
                (tmp_path / "dev" / name).touch()

            def scandir(path, dev=tmp_path / "dev"):
                if str(path) == "/dev":
                    return real_scandir(dev)
                raise FileNotFoundError(path)

            monkeypatch.setattr(providers.os, "scandir", scandir)
            expected = present in (("nvidia0",), ("dxg",))
            assert providers.nvidia_device_may_exist() is expected, present
