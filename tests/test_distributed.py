"""ecgfast.distributed's helpers without a process group (the two-process tests of the
distributed NT-Xent, which also exercise gather_with_grad on two ranks:
tests/ops/test_nt_xent_distributed.py)."""

import torch

from ecgfast.distributed import gather_with_grad, init_process_group_from_env, wrap_ddp


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    ctx = init_process_group_from_env("cpu")
    assert not ctx.distributed and ctx.is_main and ctx.world_size == 1
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, ctx) is model
