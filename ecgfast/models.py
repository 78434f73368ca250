"""The SSL-ECG encoder, its residual and squeeze-excitation variants, and the heads.

The encoder (Sarkar & Etemad's 3-block 1-D CNN with the report's residual connections
and SE channel attention):

    block 1: [Conv1d(1->32, k=32) -> act -> Dropout] -> [Conv1d(32->32, k=32) -> act -> Dropout]
             -> SE -> (+ W_s x) -> MaxPool1d(8, 2)
    block 2: the same with 64 filters, k=16
    block 3: the same with 128 filters, k=8, then a global max over time -> (B, 128)

Input (B, C, L) with C = ``EncoderConfig.in_channels`` leads (1 by default, when (B, L)
is accepted too); L = 2560 (10 s at 256 Hz) in the papers, any
L >= :attr:`ECGEncoder.min_length` works. Only block 1's first conv (and its 1x1 shortcut)
sees the leads: its weight is (32, C, 32).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ecgfast import dispatch
from ecgfast.keyed import KeyedRandom, keyed_dropout
from ecgfast.layers import EncoderBlock
from ecgfast.ops.encoder_block import BlockSpec, activation, check_block_options

RESIDUAL_PRESETS = {
    "none": (False, False, False),
    "first": (True, False, False),
    "first_two": (True, True, False),
    "all": (True, True, True),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Configuration of :class:`ECGEncoder`.

    Attributes:
        residual: which blocks get a shortcut: "none" | "first" | "first_two" | "all",
            or a 3-tuple of bools (one per block).
        attention: squeeze-excitation after each block's second conv.
        se_reduction: SE reduction ratio r (hidden width C // r).
        dropout: dropout probability after every conv activation.
        activation: "relu" (the report) or "leaky_relu" (the original SSL-ECG code).
        negative_slope: slope of leaky_relu (TensorFlow's default, 0.2).
        backend: "auto" | "eager" | "triton"; see :mod:`ecgfast.dispatch`.
        filters, kernel_sizes: per block; the papers' 32/64/128 and 32/16/8.
        pool_size, pool_stride: the MaxPool1d after blocks 1 and 2.
        in_channels: number of input leads C (the input is (B, C, L)); default 1.
        leads: optional names of those leads, in input order (``len(leads) ==
            in_channels``), e.g. ("I", "II", "V1"), so that a checkpoint or an ONNX file
            says which leads it was trained on; None when unknown.
    """

    residual: str | tuple[bool, bool, bool] = "all"
    attention: bool = True
    se_reduction: int = 8
    dropout: float = 0.1
    activation: str = "relu"
    negative_slope: float = 0.2
    backend: str = "auto"
    filters: tuple[int, int, int] = (32, 64, 128)
    kernel_sizes: tuple[int, int, int] = (32, 16, 8)
    pool_size: int = 8
    pool_stride: int = 2
    in_channels: int = 1
    leads: tuple[str, ...] | None = None

    def __post_init__(self):
        residual = self.residual
        if isinstance(residual, list):
            residual = tuple(residual)
            object.__setattr__(self, "residual", residual)
        if isinstance(residual, str):
            if residual not in RESIDUAL_PRESETS:
                raise ValueError(
                    f"residual must be one of {tuple(RESIDUAL_PRESETS)} or a 3-tuple of bools, "
                    f"got {residual!r}"
                )
        elif not (
            isinstance(residual, tuple)
            and len(residual) == 3
            and all(isinstance(r, bool) for r in residual)
        ):
            raise ValueError(f"residual must be a preset name or a 3-tuple of bools, got {residual!r}")
        if len(self.filters) != 3 or len(self.kernel_sizes) != 3:
            raise ValueError("filters and kernel_sizes must have one entry per block (3)")
        for name in ("filters", "kernel_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        check_block_options(activation=self.activation, dropout=self.dropout,
                            pool_size=self.pool_size, pool_stride=self.pool_stride,
                            se_reduction=self.se_reduction)
        dispatch.check_backend("encoder_block", self.backend)
        self._check_leads()

    def _check_leads(self) -> None:
        c = self.in_channels
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"in_channels must be an int >= 1 (the number of leads), got {c!r}")
        leads = self.leads
        if leads is None:
            return
        if isinstance(leads, str) or not isinstance(leads, (tuple, list)):
            raise TypeError(f"leads must be a sequence of lead names or None, got {leads!r}")
        leads = tuple(leads)
        if not all(isinstance(n, str) and n.strip() for n in leads):
            raise ValueError(f"leads must be non-empty strings, got {leads!r}")
        if len(set(leads)) != len(leads):
            raise ValueError(f"leads must be distinct, got {leads!r}")
        if len(leads) != c:
            raise ValueError(f"leads has {len(leads)} name(s) {leads!r} but in_channels is "
                             f"{c}; give in_channels={len(leads)}")
        object.__setattr__(self, "leads", leads)

    @property
    def residual_blocks(self) -> tuple[bool, bool, bool]:
        if isinstance(self.residual, str):
            return RESIDUAL_PRESETS[self.residual]
        return self.residual

    def block_options(self, i: int) -> dict:
        """Keyword arguments of block ``i`` (0, 1, 2) for :class:`~ecgfast.layers.EncoderBlock`
        and :meth:`~ecgfast.ops.encoder_block.BlockSpec.build`; block 3 pools globally."""
        channels = (self.in_channels, *self.filters)
        return {"in_channels": channels[i], "out_channels": channels[i + 1],
                "kernel_size": self.kernel_sizes[i], "residual": self.residual_blocks[i],
                "attention": self.attention, "se_reduction": self.se_reduction,
                "dropout": self.dropout, "activation": self.activation,
                "negative_slope": self.negative_slope,
                "pool_size": self.pool_size if i < 2 else None, "pool_stride": self.pool_stride}

    def block_specs(self) -> tuple[BlockSpec, BlockSpec, BlockSpec]:
        """The three blocks' :class:`~ecgfast.ops.encoder_block.BlockSpec`."""
        return tuple(BlockSpec.build(**self.block_options(i)) for i in range(3))

    @classmethod
    def ssl_ecg(cls, **overrides) -> EncoderConfig:
        """The original SSL-ECG encoder: no shortcut, no SE, leaky ReLU, no dropout."""
        base = {"residual": "none", "attention": False, "dropout": 0.0, "activation": "leaky_relu"}
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["residual"] = self.residual if isinstance(self.residual, str) else list(self.residual)
        d["filters"] = list(self.filters)
        d["kernel_sizes"] = list(self.kernel_sizes)
        d["leads"] = None if self.leads is None else list(self.leads)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        """The inverse of :meth:`to_dict`: every field, and nothing else."""
        return cls(**exact_fields(cls, d))

    def replace(self, **changes) -> EncoderConfig:
        return dataclasses.replace(self, **changes)


def exact_fields(cls, d: dict) -> dict:
    """``d`` as the keyword arguments of the dataclass ``cls`` (a config read back from
    JSON): ValueError unless it holds every field and no other."""
    known = {f.name for f in dataclasses.fields(cls)}
    if set(d) != known:
        raise ValueError(f"a {cls.__name__} dict needs exactly its fields: missing "
                         f"{sorted(known - set(d))}, unknown {sorted(set(d) - known)}")
    return d


def lead_names(leads: tuple[str, ...] | None) -> str:
    """``", leads I, II, V1"`` for error messages; empty when the leads have no names."""
    return "" if not leads else f", leads {', '.join(leads)}"


class ECGEncoder(nn.Module):
    """The 3-block 1-D CNN encoder; (B, C, L) -> (B, filters[-1]), C = config.in_channels
    ((B, L) too when C is 1).

    See the module docstring for the architecture and :class:`EncoderConfig` for the
    options. Parameters and ``state_dict`` keys do not depend on ``config.backend``.

    ``encoder(x, random=None)``: in training mode, ``random`` (a
    :class:`~ecgfast.keyed.KeyedRandom` whose rows are x's samples) keys the dropout masks,
    two streams per block, so a sample's masks do not depend on the rest of the batch;
    None draws the seed from torch's default generator.
    """

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else EncoderConfig()
        self.blocks = nn.ModuleList(
            EncoderBlock(**config.block_options(i), backend=config.backend) for i in range(3)
        )

    @property
    def embedding_dim(self) -> int:
        return self.config.filters[-1]

    @property
    def min_length(self) -> int:
        """Shortest input the two local max pools accept (22 samples by default)."""
        c = self.config
        # block 2's pool needs pool_size samples, so block 1's pool must leave that many
        return (c.pool_size - 1) * c.pool_stride + c.pool_size

    def forward(self, x: torch.Tensor, random: KeyedRandom | None = None) -> torch.Tensor:
        x = self._check_input(x)
        dropout = self.training and self.config.dropout > 0
        if dropout and random is None:
            random = KeyedRandom.from_default_generator(x.shape[0])
        for block in self.blocks:
            x = block(x, random.dropout_keys(2, x.device) if dropout else None)
        return x

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ECGEncoder input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"ECGEncoder input must be floating point, got dtype {x.dtype}")
        c = self.config.in_channels
        if x.dim() == 2:
            x = x.unsqueeze(1)
        elif x.dim() != 3:
            raise ValueError(
                f"ECGEncoder input must be (batch, {c}, length)"
                f"{' or (batch, length)' if c == 1 else ''}, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != c:
            raise ValueError(
                f"ECGEncoder input has {x.shape[1]} lead(s) (channels on axis 1) but this "
                f"encoder takes {c} (in_channels={c}{lead_names(self.config.leads)}), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[-1] < self.min_length:
            raise ValueError(
                f"ECGEncoder input length {x.shape[-1]} is shorter than the minimum "
                f"{self.min_length} samples that the pools need"
            )
        return x


class ProjectionHead(nn.Module):
    """SimCLR projection head: Linear(in, hidden) -> ReLU -> Linear(hidden, out).

    (B, in_dim) -> (B, out_dim); defaults 128 -> 256 -> 128.
    """

    def __init__(self, in_dim: int = 128, hidden_dim: int = 256, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class _BinaryHead(nn.Module):
    def __init__(self, in_dim, hidden, dropout, act, negative_slope):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        self.p, self.act, self.negative_slope = dropout, act, negative_slope

    def forward(self, h, keys):
        h = keyed_dropout(activation(self.fc1(h), self.act, self.negative_slope), self.p,
                          None if keys is None else keys[0])
        h = keyed_dropout(activation(self.fc2(h), self.act, self.negative_slope), self.p,
                          None if keys is None else keys[1])
        return self.out(h).squeeze(-1)


class TransformationHeads(nn.Module):
    """The SSL-ECG pretext heads: one binary classifier per signal version.

    Each head is Dense(hidden) -> act -> Dropout -> Dense(hidden) -> act -> Dropout ->
    Dense(1). (B, in_dim) -> (B, n_tasks) logits; head k answers "is this the k-th
    version?" (order: :data:`ecgfast.transforms.TRANSFORM_NAMES`). ``heads(h, random=None)``:
    in training mode the dropout masks are keyed by ``random`` (a
    :class:`~ecgfast.keyed.KeyedRandom` over h's rows, two streams per head) or, when None,
    by a seed from torch's default generator.
    """

    def __init__(
        self,
        in_dim: int = 128,
        hidden_dim: int = 128,
        n_tasks: int = 7,
        dropout: float = 0.6,
        activation: str = "relu",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.heads = nn.ModuleList(
            _BinaryHead(in_dim, hidden_dim, dropout, activation, negative_slope)
            for _ in range(n_tasks)
        )

    def forward(self, h: torch.Tensor, random: KeyedRandom | None = None) -> torch.Tensor:
        keys = [None] * len(self.heads)
        if self.training and any(head.p > 0 for head in self.heads):
            if random is None:
                random = KeyedRandom.from_default_generator(h.shape[0])
            keys = random.dropout_keys(2 * len(self.heads), h.device).view(len(self.heads), 2, -1)
        return torch.stack([head(h, k) for head, k in zip(self.heads, keys)], dim=-1)
