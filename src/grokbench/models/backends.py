"""Choosing between the pure-PyTorch reference and a CUDA kernel library for one operator.

`backend` is a model option: "torch" always runs the reference; "kernels" runs the kernel library and
fails loudly where it cannot (no CUDA, package missing); "auto" runs the kernel only where it is usable
and expected to be faster. The kernel libraries (flash-linear-attention, mamba-ssm) are imported only
here, only when CUDA is present, and only the operator module itself: `import fla` succeeds without
triton, so importing the package proves nothing.

For the ~10-token sequences of the study's tasks, chunked kernels pad to their chunk size (64 or more)
and a torch loop over time is competitive or faster (shared/ANCHORS.md section 4), so "auto" keeps the
torch path below `KERNEL_MIN_SEQ_LEN`; the benchmark (`grokbench bench`) measures both at the training
shape and is where that number comes from.
"""

from __future__ import annotations

import functools
import importlib

import torch

BACKENDS = ("auto", "torch", "kernels")
KERNEL_MIN_SEQ_LEN = 64


@functools.cache
def kernel_module(module: str):
    """The kernel module if CUDA is available and it imports, else None (cached per process)."""
    if not torch.cuda.is_available():
        return None
    try:
        return importlib.import_module(module)
    except Exception:  # ImportError, or a CUDA extension / triton failing at import
        return None


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def use_kernels(backend: str, module: str, x: torch.Tensor) -> bool:
    """Whether the operator on input `x` (B, T, ...) should run the kernel from `module`."""
    if backend == "torch":
        return False
    usable = x.is_cuda and kernel_module(module) is not None
    if backend == "kernels":
        if not usable:
            raise RuntimeError(
                f"backend='kernels' needs CUDA and an importable {module} "
                f"(input on {x.device}, CUDA available: {torch.cuda.is_available()})"
            )
        return True
    return usable and x.shape[1] >= KERNEL_MIN_SEQ_LEN
