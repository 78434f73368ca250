"""ecgfast.distributed's helpers without a process group or in one of a single rank (the
two-process tests of the distributed NT-Xent, which also exercise gather_with_grad on two
ranks: tests/ops/test_nt_xent_distributed.py)."""

import torch

from ecgfast.distributed import gather_with_grad, init_process_group_from_env, wrap_ddp


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    ctx = init_process_group_from_env("cpu")
    assert not ctx.distributed and ctx.is_main and ctx.world_size == 1
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, ctx) is model


def test_destroy_frees_unreferenced_ddp_wrappers_before_their_process_group():
    """A DistributedDataParallel wrapper out of scope can wait in a reference cycle (DDP's
    own hooks form one at times; here a forward hook that closes over the wrapper does);
    freed at interpreter exit, after its process group, it aborted gloo ranks now and then.
    destroy_process_group collects it first (automatic collection is off here, so only that
    call can free it)."""
    import gc
    import weakref

    import torch.distributed as dist

    from ecgfast.distributed import destroy_process_group

    def train_a_step() -> weakref.ref:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 3))
        model.register_forward_hook(lambda module, args, out: model.module and None)
        model(torch.randn(5, 4)).sum().backward()
        return weakref.ref(model)

    gc.collect()
    gc.disable()
    try:
        dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
        wrapper = train_a_step()
        assert wrapper() is not None  # held by the cycle
        destroy_process_group()
        assert wrapper() is None
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()
