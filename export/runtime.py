"""Run an exported encoder with onnxruntime: :class:`OnnxEncoder`.

On a machine with an NVIDIA GPU and onnxruntime-gpu, ``providers="auto"`` uses the CUDA
execution provider, with the cuDNN convolution options of :func:`cuda_provider_options`,
and I/O binding (inputs and outputs stay where the caller has them:
a CUDA torch tensor is read in place and the embedding is written into a CUDA torch
tensor); the CUDA and cuDNN libraries come from the installed PyTorch (``import torch``
first, then ``onnxruntime.preload_dlls()``). Elsewhere it uses the CPU provider, and it
does not even try CUDA where PyTorch sees no GPU, so no "missing CUDA library" errors are
printed.

The CPU provider's idle threads sleep instead of spinning (unless ``spin=True``), so that
onnxruntime does not take the cores from PyTorch or a data pipeline in the same process.

Input dtype: float32 is used as is; float64 and float16 are cast to float32 (values
outside the float32 range become inf and are then refused as non-finite); any other dtype
is refused.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from ecgfast.export.errors import OnnxModelError
from ecgfast.export.interface import contract_of, lead_names_of, load_and_check
from ecgfast.export.metadata import min_length_of, read_metadata
from ecgfast.export.passes import fold_rows
from ecgfast.export.providers import CPU, CUDA, cuda_provider_options, nvidia_device_may_exist

PROVIDER_CHOICES = ("auto", "cpu", "cuda")


def _ort():
    import onnxruntime

    return onnxruntime


def cuda_usable() -> bool:
    """True when onnxruntime's CUDA provider is installed and a CUDA GPU is visible.

    Checks, in this order and without printing anything: onnxruntime lists
    CUDAExecutionProvider; the operating system can show an NVIDIA GPU to this process
    (:func:`~ecgfast.export.providers.nvidia_device_may_exist`: on a CPU-only Linux host this answers without
    importing PyTorch); PyTorch (whose pip wheels carry the CUDA and cuDNN libraries) sees
    a GPU; ``onnxruntime.preload_dlls()`` (when present) loads the libraries.
    """
    ort = _ort()
    if CUDA not in ort.get_available_providers() or not nvidia_device_may_exist():
        return False
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        torch.cuda.init()
    except Exception:  # noqa: BLE001 - any failure means: no usable GPU
        return False
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                preload()
        except Exception:  # noqa: BLE001
            return False
    return True


def _from_onnxruntime(err: Exception) -> bool:
    return type(err).__module__.startswith("onnxruntime")


class OnnxEncoder:
    """An exported :class:`~ecgfast.models.ECGEncoder` run by onnxruntime.

    Args:
        path: .onnx file from :func:`ecgfast.export.export_onnx` (or
            :func:`ecgfast.export.quantize_onnx`); its input must be float32
            (batch, C, length), C the leads its first convolution takes, and its output
            (batch, D).
        providers: "auto" (CUDA when :func:`cuda_usable`, else CPU), "cpu" or "cuda"
            (an error if CUDA is not usable).
        threads: intra-op threads of the CPU provider (None: onnxruntime's default, one
            per physical core).
        spin: let idle intra-op threads spin-wait for the next operator instead of
            sleeping (onnxruntime's own default). Off by default, because spinning threads
            take the cores from PyTorch or a data pipeline in the same process (they keep
            spinning for a while after each call). Measure before turning it on for
            latency-bound serving where onnxruntime has the cores to itself: its effect
            at batch 1 differed between CPUs (benchmarks/README.md, "Inference").
        row_fold: on the CPU provider with 2 or more threads, run batches smaller than the
            thread count through a copy of the graph whose block 1 works on the signal
            folded into two rows (:func:`ecgfast.export.passes.fold_rows`: same sums, but
            onnxruntime can split block 1's convolutions over two threads at batch 1).
            Files the fold does not apply to (INT8, the 1-D layout, leaky-ReLU encoders,
            more than one lead) run as they are.
        conv_algo_search: cuDNN's algorithm search on the CUDA provider
            (:func:`cuda_provider_options` says which and why); ignored on the CPU.

    Attributes: ``provider`` (the execution provider in use), ``min_length`` (shortest
    accepted input, from the file's metadata), ``in_channels`` (its number of leads C),
    ``leads`` (their names from the metadata, or None), ``embedding_dim``, ``metadata``,
    ``preprocessing`` (the :class:`~ecgfast.data.contract.Preprocessing` the model was
    trained with, from its metadata; None for a file exported before files recorded it),
    which :meth:`embed_recording` and ``ecgfast embed`` apply.

    Raises :class:`~ecgfast.export.OnnxModelError` (naming the file) for a file it cannot
    run: at load (not ONNX, a damaged file, another signature, a pre-processing contract
    this version cannot reproduce, a graph onnxruntime or the row fold refuses) or at a call onnxruntime fails on or that returns another shape
    than (batch, D); tests/export/test_onnx_fuzz.py feeds it damaged files.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: str = "auto",
        threads: int | None = None,
        spin: bool = False,
        row_fold: bool = True,
        conv_algo_search: str = "EXHAUSTIVE",
    ):
        self.path = Path(path)
        if providers not in PROVIDER_CHOICES:
            raise ValueError(f"providers must be one of {PROVIDER_CHOICES}, got {providers!r}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        for name, flag in (("spin", spin), ("row_fold", row_fold)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        cuda_options = cuda_provider_options(conv_algo_search)
        model, self.in_channels = load_and_check(self.path)
        try:
            self.metadata = read_metadata(model)
        except UnicodeDecodeError as err:
            raise OnnxModelError(f"{self.path}: unreadable metadata ({err})") from err
        self.leads = lead_names_of(self.path, self.metadata, self.in_channels)
        contract = contract_of(self.path, self.metadata, self.leads)
        self.preprocessing = None if contract is None else contract.preprocessing
        self.min_length = min_length_of(self.metadata)
        out_dim = model.graph.output[0].type.tensor_type.shape.dim[1]
        self.embedding_dim = out_dim.dim_value if out_dim.HasField("dim_value") else None

        use_cuda = providers == "cuda" or (providers == "auto" and cuda_usable())
        if providers == "cuda" and not cuda_usable():
            raise RuntimeError(
                "OnnxEncoder(providers='cuda'): the CUDA execution provider is not usable here "
                "(needs onnxruntime-gpu, a CUDA build of PyTorch and a visible NVIDIA GPU)"
            )
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        # by default idle intra-op threads block instead of spinning: spinning threads take
        # the cores from PyTorch work in the same process (benchmarks/README.md,
        # test_torch_after_ort); spin=True is for latency-bound serving
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.spin = spin
        if threads is not None:
            options.intra_op_num_threads = threads
        chosen = [(CUDA, cuda_options), CPU] if use_cuda else [CPU]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=chosen)
            # names onnxruntime cannot decode raise here, not at the first call
            self.input_name = self.session.get_inputs()[0].name
            self.output_name = self.session.get_outputs()[0].name
        except Exception as err:
            raise OnnxModelError(f"{self.path}: onnxruntime cannot load it ({err})") from err
        self.provider = self.session.get_providers()[0]
        if providers == "cuda" and self.provider != CUDA:
            raise RuntimeError(f"OnnxEncoder: {self.path} could not be placed on CUDA")
        # small batches: the row-folded graph (block 1 on two threads at batch 1)
        self.small_batch_session, self.small_batch_below = None, 0
        n_threads = threads or os.cpu_count() or 1
        if row_fold and self.provider == CPU and n_threads >= 2:
            try:
                folded = fold_rows(model)
                if folded is not model:
                    self.small_batch_session = ort.InferenceSession(
                        folded.SerializeToString(), options, providers=[CPU]
                    )
                    self.small_batch_below = n_threads
            except Exception as err:  # the fold of a file onnxruntime accepted as it is
                raise OnnxModelError(
                    f"{self.path}: the row fold failed ({type(err).__name__}: {err}); "
                    "OnnxEncoder(..., row_fold=False) runs the file as it is"
                ) from err
        del model

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.path)!r}, provider={self.provider!r})"

    # ------------------------------------------------------------------ input checks

    def _check(self, x, name: str = "x"):
        """Validate ``x`` and return it as (B, C, L) float32 (numpy or torch, as given)."""
        is_torch = _is_torch(x)
        if is_torch:
            import torch

            if x.dtype in (torch.float64, torch.float16, torch.bfloat16):
                x = x.float()
            elif x.dtype != torch.float32:
                raise TypeError(f"{name} must be a float32 tensor, got dtype {x.dtype}")
            x = x.detach()
        else:
            if not isinstance(x, np.ndarray):
                raise TypeError(
                    f"{name} must be a numpy array or torch tensor, got {type(x).__name__}"
                )
            if x.dtype in (np.float64, np.float16):
                x = x.astype(np.float32)
            elif x.dtype != np.float32:
                raise TypeError(f"{name} must be a float32 array, got dtype {x.dtype}")
        c = self.in_channels
        if x.ndim == 2:  # one lead
            x = x[:, None, :]
        elif x.ndim != 3:
            raise ValueError(f"{name} must be (batch, {c}, length)"
                             f"{' or (batch, length)' if c == 1 else ''}, got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != c:
            names = f" ({', '.join(self.leads)})" if self.leads else ""
            raise ValueError(
                f"{name} must have {c} channel{'s' if c != 1 else ''} on axis 1 (batch, {c}, "
                f"length): {self.path.name} takes {c} lead(s){names}, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        if x.shape[0] > 0 and x.shape[2] < self.min_length:
            raise ValueError(
                f"{name} has length {x.shape[2]}, shorter than the {self.min_length} samples "
                f"that {self.path.name} accepts"
            )
        finite = x.isfinite().all(dim=(1, 2)) if is_torch else np.isfinite(x).all(axis=(1, 2))
        if not bool(finite.all()):
            bad = ~finite
            first = int(bad.nonzero()[0][0])
            count = int(bad.sum())
            raise ValueError(
                f"{name} has NaN or infinite samples in {count} window(s) (first: index {first})"
            )
        return x, is_torch

    # ------------------------------------------------------------------ inference

    def embed(self, x, batch_size: int = 256):
        """Embeddings of windows ``x``.

        Args:
            x: (B, C, L) float32 numpy array or torch tensor, C = :attr:`in_channels`
                ((B, L) when C is 1; float64/float16 are cast to float32);
                L >= :attr:`min_length`; finite values.
            batch_size: windows per onnxruntime call (bounds memory).

        Returns:
            (B, D) float32: a numpy array for numpy input, a torch tensor on the input's
            device for torch input.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        x, is_torch = self._check(x)
        n = x.shape[0]
        if self.provider == CUDA:  # pragma: no cover - needs a GPU
            import torch

            return self._embed_bound(x, is_torch, batch_size, torch.device("cuda", 0))
        xn = x.cpu().contiguous().numpy() if is_torch else np.ascontiguousarray(x)
        if n == 0:
            out = np.empty((0, self.embedding_dim or 0), np.float32)
        else:
            parts = [self._run(xn[i : i + batch_size]) for i in range(0, n, batch_size)]
            out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if is_torch:
            import torch

            return torch.from_numpy(out).to(x.device)
        return out

    __call__ = embed

    def embed_recording(self, signal, fs: float, *, overlap: float | None = None,
                        batch_windows: int = 256):
        """Embeddings of a whole raw recording, pre-processed as the model was trained.

        Args:
            signal: (n,) raw samples for a one-lead model, (C, n) for a C-lead one (in
                the order of :attr:`leads`), at ``fs`` Hz, any unit.
            overlap: window overlap in [0, 1) (default: the model's, usually 0).
            batch_windows: windows pre-processed and embedded at a time (bounds memory).

        Returns:
            ``(embeddings (N, D) float32, starts_s (N,) float64)``: one row per window
            kept (flat-line windows are dropped) and its start in seconds.

        The chain is :attr:`preprocessing` (:func:`ecgfast.export.embed.serving_chain`);
        a file that records none gets this version's default chain, with a warning.
        """
        from ecgfast.export.embed import embed_recording

        return embed_recording(self, signal, fs, overlap=overlap, batch_windows=batch_windows)

    def _session_for(self, batch: int):
        if self.small_batch_session is not None and batch < self.small_batch_below:
            return self.small_batch_session
        return self.session

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """One onnxruntime call on (b, C, L) float32; the output must be (b, D)."""
        try:
            out = self._session_for(len(chunk)).run([self.output_name], {self.input_name: chunk})[0]
        except Exception as err:
            if not _from_onnxruntime(err):
                raise
            raise OnnxModelError(
                f"{self.path}: onnxruntime failed on a batch of shape {chunk.shape}: {err}"
            ) from err
        want = (len(chunk), self.embedding_dim or (out.shape[-1] if out.ndim else 0))
        if out.shape != want:
            raise OnnxModelError(
                f"{self.path}: output {self.output_name!r} has shape {out.shape} for a batch "
                f"of {len(chunk)}, expected {want}"
            )
        return out

    def _embed_bound(self, x, is_torch: bool, batch_size: int, device):
        """I/O binding: torch buffers on ``device`` in and out, no host round trip.

        On the CUDA provider ``device`` is the provider's default device, cuda:0. The same
        code runs with a CPU device on the CPU provider, which is how the tests exercise it
        on machines without a GPU.
        """
        import torch

        if self.embedding_dim is None:
            raise OnnxModelError(
                f"{self.path}: I/O binding needs a fixed embedding size (output dim 1)"
            )
        xt = x if is_torch else torch.from_numpy(np.ascontiguousarray(x))
        xt = xt.to(device).contiguous()
        out = torch.empty((xt.shape[0], self.embedding_dim), dtype=torch.float32, device=device)
        kind, index = device.type, device.index or 0
        binding = self.session.io_binding()
        for i in range(0, xt.shape[0], batch_size):
            chunk = xt[i : i + batch_size]
            dst = out[i : i + batch_size]
            binding.bind_input(
                self.input_name, kind, index, np.float32, tuple(chunk.shape), chunk.data_ptr()
            )
            binding.bind_output(
                self.output_name, kind, index, np.float32, tuple(dst.shape), dst.data_ptr()
            )
            if kind == "cuda":  # the input was written on torch's stream
                torch.cuda.current_stream().synchronize()
            try:
                self.session.run_with_iobinding(binding)
            except Exception as err:
                if not _from_onnxruntime(err):
                    raise
                raise OnnxModelError(
                    f"{self.path}: onnxruntime failed on a batch of shape {tuple(chunk.shape)}: "
                    f"{err}"
                ) from err
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
        if is_torch:
            return out.to(x.device)
        return out.cpu().numpy()


def _is_torch(x) -> bool:
    mod = type(x).__module__
    if not mod.startswith("torch"):
        return False
    import torch

    return isinstance(x, torch.Tensor)
