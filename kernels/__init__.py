"""Triton kernels (installed as ``ecgfast.kernels``).

Each file holds kernels, the ``torch.autograd.Function`` that launches them, and
nothing else. Only :mod:`ecgfast.dispatch` imports from here.
"""
