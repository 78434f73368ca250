"""Every ONNX graph rewrite of ecgfast.export, in one package (no PyTorch here: the runtime
imports it).

All of them keep the maths; the exporter's are checked by the parity run that ends every
export (:func:`ecgfast.export.verify_onnx`), the row fold by its own test. The graph itself
is traced in the layout it runs in (:mod:`ecgfast.export.tracing`); the passes only clean
it up or adapt it to a batch size:

- :mod:`.folds`, run on every trace by :func:`ecgfast.export.build_onnx`:

  1. :func:`fold_constants` evaluates nodes whose inputs are all constants.
  2. :func:`fold_pad_into_conv`: the 'same' padding of the even kernels (F.pad + conv in
     the traced maths) becomes the Conv's own asymmetric ``pads`` attribute (onnxscript's
     optimizer does this too; the pass makes the result independent of it): no Pad node.

- :mod:`.row_fold`, at load time in :class:`ecgfast.export.OnnxEncoder`:
  :func:`fold_rows` rewrites block 1's two convolutions to run on the signal folded into
  two rows: onnxruntime splits an NCHWc convolution's work by 32-channel filter set and
  output row, so block 1's 32-channel convolutions on one row run on one thread at
  batch 1. The exported file keeps the plain graph.

:mod:`._graph` holds the queries the passes share and :func:`remove_unused`, which each
pass runs after its edits.
"""

from ecgfast.export.passes._graph import remove_unused
from ecgfast.export.passes.folds import fold_constants, fold_pad_into_conv
from ecgfast.export.passes.row_fold import ROW_FOLD_PREFIX, fold_rows

__all__ = [
    "ROW_FOLD_PREFIX",
    "fold_constants",
    "fold_pad_into_conv",
    "fold_rows",
    "remove_unused",
]
