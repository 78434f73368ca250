"""Chunked contrastive steps (GradCache), and the chunk size "auto".

A contrastive loss needs the whole batch's embeddings at once, the encoder does not: a
:class:`ChunkedStep` embeds the batch in chunks of ``chunk_size`` windows, so that the
activations alive at a time are one chunk's, whatever the batch (Gao et al., "Scaling
Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021):

1. under ``no_grad``, :meth:`~ecgfast.objectives.Contrastive.embed` each chunk;
2. :meth:`~ecgfast.objectives.Contrastive.join` on the whole batch's embeddings (under
   ``torchrun`` the loss gathers every rank's, as unchunked) and its gradient with
   respect to the embeddings (:meth:`ChunkedStep.backward`);
3. each chunk again with gradients, and backward of that chunk's rows of the embedding
   gradient, plus its share ``m / n`` of any per-window loss (``both``: the
   transformation loss).

Every random draw of a step (augmentations, dropout masks in the eager and the Triton
encoder, the pretext heads' dropout) comes from one :class:`~ecgfast.keyed.KeyedRandom`
over the batch, keyed by window: chunk ``[a, b)`` embeds with ``random.select(slice(a,
b))`` and so draws exactly what its windows draw in the unchunked pass, in pass 1 and
again in pass 3. The chunked step therefore computes the unchunked step's loss and
gradients, to float round-off (the convolutions of a chunk may round differently from
the whole batch's), whatever the chunk size.

The batch is cut into ``ceil(n / chunk_size)`` chunks in order; the last one is smaller
when ``chunk_size`` does not divide ``n``. A batch of at most ``chunk_size`` windows takes
the ordinary one-pass step (:class:`~ecgfast.training.step.TrainStep` chooses). Under DDP
the chunked step does not go through DistributedDataParallel's forward: every rank
accumulates its chunks' gradients locally and the step averages them over ranks in one
all-reduce.

``chunk_size="auto"`` (:func:`auto_chunk_size`): the largest chunk whose tensors saved for
backward, measured on a probe of :data:`AUTO_PROBE_WINDOWS` windows, take at most
:data:`AUTO_MEMORY_FRACTION` of the free memory: ``torch.cuda.mem_get_info`` on CUDA,
``MemAvailable`` of ``/proc/meminfo`` on the CPU (no chunking where that is unknown). The
other half is the margin for backward's temporaries, the embeddings and the loss. It is
resolved once, when the run starts (:func:`resolve_chunk_size`), and the number is saved
in every checkpoint, so a resumed run goes on with it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from ecgfast.keyed import KeyedRandom

AUTO_PROBE_WINDOWS = 16
AUTO_MEMORY_FRACTION = 0.5


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in order; the last may be shorter."""
    return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]


class ChunkedStep:
    """Passes 1 and 2 of the module docstring for ``objective`` on ``windows`` (n, C, L).

    After construction :attr:`loss` (the whole batch's, no graph to the encoder) and
    :attr:`metrics` are known; :meth:`backward` accumulates every parameter's gradient.
    ``random``: the step's :class:`~ecgfast.keyed.KeyedRandom` over the n windows.
    ``autocast``: a callable returning the context the forward passes run in.
    """

    def __init__(self, objective, windows: torch.Tensor, random: KeyedRandom, chunk_size: int,
                 autocast):
        if not isinstance(random, KeyedRandom) or len(random) != windows.shape[0]:
            raise TypeError(f"ChunkedStep needs an ecgfast.keyed.KeyedRandom over the batch's "
                            f"{windows.shape[0]} windows (a torch.Generator's draws depend on "
                            f"the chunking), got {random!r}")
        self.objective, self.windows, self.random = objective, windows, random
        self.autocast = autocast
        self.bounds = chunk_bounds(windows.shape[0], chunk_size)
        n = windows.shape[0]
        views1, views2 = [], []
        local, metrics = None, {}
        with torch.no_grad(), autocast():
            for a, b in self.bounds:
                z, part, m = objective.embed(windows[a:b], random.select(slice(a, b)))
                views1.append(z[: b - a])
                views2.append(z[b - a:])
                share = (b - a) / n
                if part is not None:
                    local = part * share if local is None else local + part * share
                for k, v in m.items():
                    metrics[k] = v * share if k not in metrics else metrics[k] + v * share
        self.z1 = torch.cat(views1).requires_grad_()
        self.z2 = torch.cat(views2).requires_grad_()
        with autocast():
            self._joined, self.metrics = objective.join(self.z1, self.z2, local, metrics)
        self.loss = self._joined.detach()

    def backward(self, scale=lambda t: t) -> None:
        """Gradients of the loss (``scale``\\ d, e.g. by a GradScaler) into every
        parameter's ``.grad``, chunk by chunk."""
        g1, g2 = torch.autograd.grad(scale(self._joined), [self.z1, self.z2])
        n = self.windows.shape[0]
        for a, b in self.bounds:
            with self.autocast():
                z, part, _ = self.objective.embed(self.windows[a:b],
                                                  self.random.select(slice(a, b)))
            outputs, grads = [z], [torch.cat([g1[a:b], g2[a:b]]).to(z.dtype)]
            if part is not None:
                outputs.append(scale(part * ((b - a) / n)))
                grads.append(None)
            torch.autograd.backward(outputs, grads)


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: the CUDA driver's figure, or MemAvailable on Linux CPUs."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def saved_bytes_per_window(objective, windows: torch.Tensor, autocast) -> float:
    """Bytes autograd saves for backward per window, from one ``embed`` of ``windows``
    (keyed draws of its own: the run's random streams are not touched)."""
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    random = KeyedRandom.for_batch(0, windows.shape[0], windows.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        out = objective.embed(windows, random)
    del out
    return saved / windows.shape[0]


def auto_chunk_size(objective, windows: torch.Tensor, autocast) -> int:
    """``chunk_size="auto"`` for batches like ``windows`` (module docstring); the smallest
    over ranks under torch.distributed."""
    n = windows.shape[0]
    free = free_memory_bytes(windows.device)
    chunk = n
    if free is not None:
        per_window = saved_bytes_per_window(objective, windows[:AUTO_PROBE_WINDOWS], autocast)
        chunk = max(1, min(n, int(AUTO_MEMORY_FRACTION * free // max(per_window, 1.0))))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([chunk], device=windows.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        chunk = int(t)
    return chunk


def resolve_chunk_size(chunk_size, saved, objective, probe, autocast) -> int | None:
    """The chunk size a run uses: ``PretrainConfig.chunk_size`` when it is a number or
    None; for "auto", ``saved`` (the size a resumed run resolved) when it is a number,
    else :func:`auto_chunk_size` on ``probe()``, the run's first batch on its device."""
    if chunk_size != "auto":
        return chunk_size
    if isinstance(saved, int) and not isinstance(saved, bool):
        return max(1, saved)
    return auto_chunk_size(objective, probe(), autocast)
