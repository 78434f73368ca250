"""Every ONNX graph rewrite of ecgfast.export, in one package (no PyTorch here: the runtime
imports it).

All of them keep the maths; the exporter's are checked by the parity run that ends every
export (:func:`ecgfast.export.verify_onnx`), the row fold by its own test. The package is
split by when a pass runs, to keep each file short:

- :mod:`.folds`, run on every trace by :func:`ecgfast.export.build_onnx`:

  1. :func:`fold_constants` evaluates nodes whose inputs are all constants.
  2. :func:`fold_max_pool_2d`: ``torch.export`` specialises the length axis of
     ``F.max_pool1d`` to the example length, so the trace writes max_pool1d as a (1, k)
     max_pool2d (:mod:`ecgfast.export.tracing`); the resulting Unsqueeze -> MaxPool(1, k)
     -> Squeeze is folded back into a 1-D MaxPool here.
  3. :func:`fold_pad_into_conv`: the 'same' padding of the even kernels (F.pad + conv1d
     in the eager maths) becomes the Conv's own asymmetric ``pads`` attribute
     (onnxscript's optimizer does this too; the pass makes the result independent of
     it): no Pad node.

- :mod:`.lift`, for ``layout="2d"`` (the default): :func:`lift_to_2d` writes every 1-D
  op on a (batch, C, 1, length) tensor: a Conv with kernel (1, K), a MaxPool with
  (1, k), reductions over (1, length), and the squeeze-excitation mean over time a
  GlobalAveragePool. The arithmetic is the same; the point is that onnxruntime's CPU
  provider runs 2-D convs in its blocked NCHWc layout with direct-convolution kernels
  and the activation fused in, while it runs 1-D convs through its generic NCHW path;
  and that its INT8 (QDQ) path has a uint8 GlobalAveragePool in the channels-last layout
  of its INT8 convs, where a ReduceMean costs a dequantization and a transpose of the
  whole block output. ``layout="1d"`` keeps the graph as traced
  (benchmarks/bench_inference.py measures both; benchmarks/README.md, "Inference").

- :mod:`.row_fold`, at load time in :class:`ecgfast.export.OnnxEncoder`:
  :func:`fold_rows` rewrites block 1's two convolutions to run on the signal folded into
  two rows: onnxruntime splits an NCHWc convolution's work by 32-channel filter set and
  output row, so block 1's 32-channel convolutions on one row run on one thread at
  batch 1. The exported file keeps the plain graph.

:mod:`._graph` holds the queries the passes share and :func:`remove_unused`, which each
pass runs after its edits.
"""

from ecgfast.export.passes._graph import remove_unused
from ecgfast.export.passes.folds import fold_constants, fold_max_pool_2d, fold_pad_into_conv
from ecgfast.export.passes.lift import CannotLift, lift_to_2d
from ecgfast.export.passes.row_fold import ROW_FOLD_PREFIX, fold_rows

__all__ = [
    "ROW_FOLD_PREFIX",
    "CannotLift",
    "fold_constants",
    "fold_max_pool_2d",
    "fold_pad_into_conv",
    "fold_rows",
    "lift_to_2d",
    "remove_unused",
]
