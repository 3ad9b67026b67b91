"""Choosing between the pure-PyTorch reference, its fast form and a CUDA kernel library for one operator.

`backend` is a model option: "torch" always runs the reference (a loop over time; the tests compare it with
transformers' and fla's implementations); "fast" runs the operator's fast pure-PyTorch form for short
sequences (ops/: a closed form over time with T x T decay matrices where the operator has one, else the
loop with a hand-written backward; the same function, rounded differently; the tests compare it with the
reference); "kernels" runs the kernel library and fails loudly where it cannot (no CUDA, package
missing); "auto" runs the kernel only where it is usable and expected to be faster, else the fast form
where `use_fast` says so, else the reference. The kernel libraries (flash-linear-attention, mamba-ssm)
are imported only here, only when CUDA is present, and only the operator module itself: `import fla`
succeeds without triton, so importing the package proves nothing.

For the ~10-token sequences of the study's tasks, chunked kernels pad to their chunk size (64 or more)
and a torch loop over time is competitive or faster (shared/ANCHORS.md section 4), so "auto" keeps the
torch path below `KERNEL_MIN_SEQ_LEN`; the benchmark (`grokbench bench`) measures both at the training
shape and is where that number comes from.

The fast forms run under "auto" on the CPU, up to each operator's FAST_MAX_SEQ_LEN, where they were
measured faster (docs/benchmarks.md, scripts/bench-steps.py); on CUDA "auto" keeps the reference until
they are measured there (FAST_DEVICES).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "torch", "fast", "kernels")
RAN = ("kernels", "fast", "torch")  # what an operator can run (`note`, `resolved`)
KERNEL_MIN_SEQ_LEN = 64
# devices on which "auto" runs the fast forms (not yet measured on CUDA)
FAST_DEVICES = ("cpu",)


@functools.cache
def kernel_module(module: str):
    """The kernel module if CUDA is available and it imports, else None (cached per process).

    A kernel library that is not installed is optional: None, silently. One that is installed but fails
    to import (a triton or CUDA mismatch, a missing dependency, an old version without the operator)
    warns once per module and process, naming the module and the error, since "auto" then runs the
    PyTorch path where the kernel was expected."""
    if not torch.cuda.is_available():
        return None
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a CUDA extension / triton failing at import
        if not _not_installed(e, module):
            warnings.warn(
                f"kernel module {module} is installed but failed to import ({type(e).__name__}: {e}); "
                "backend 'auto' runs the PyTorch path instead",
                RuntimeWarning,
                stacklevel=2,
            )
        return None


def _not_installed(error: Exception, module: str) -> bool:
    """Whether `error`, raised importing `module`, says only that its top-level package is not installed."""
    return isinstance(error, ModuleNotFoundError) and error.name == module.split(".")[0]


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def use_kernels(backend: str, module: str, x: torch.Tensor) -> bool:
    """Whether the operator on input `x` (B, T, ...) should run the kernel from `module`."""
    if backend in ("torch", "fast"):
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


def use_fast(backend: str, x: torch.Tensor, max_len: int | None) -> bool:
    """Whether an operator on input `x` (B, T, ...) runs its fast form, where the kernel does not run:
    always for backend="fast"; for "auto" on FAST_DEVICES up to `max_len` tokens (None: any length; 0:
    never, an operator whose fast form is not faster)."""
    if backend == "fast":
        return True
    if backend != "auto" or x.device.type not in FAST_DEVICES:
        return False
    return max_len is None or x.shape[1] <= max_len


# --- what ran: operator -> path, recorded while `recording` is on ---------------------------------------

_ran: dict[str, set[str]] | None = None


def note(op: str, choice: str) -> None:
    """Record that operator `op` (e.g. "selective_scan") ran `choice` ("kernels", "fast" or "torch"), where
    it dispatched (after use_kernels / use_fast decided); a no-op unless `recording` is on."""
    if _ran is not None:
        _ran.setdefault(op, set()).add(choice)


@contextlib.contextmanager
def recording() -> Iterator[dict[str, set[str]]]:
    """Collect, while the block runs, operator -> the paths it ran (`note`)."""
    global _ran
    outer, _ran = _ran, {}
    try:
        yield _ran
    finally:
        _ran = outer


def resolved(model: torch.nn.Module, x: torch.Tensor, amp=None) -> dict:
    """What `model` runs on input ids `x` (B, T) under the autocast context `amp`: its `backend` option
    (None for a family without one: attention only), T, and operator -> "kernels" | "fast" | "torch"
    (paths joined by "+" if one operator ran several), as the operators decide it in a forward pass
    (use_kernels, use_fast: the decision depends on the backend, the device, the dtype and the length,
    not on gradients, so one forward without them decides as training does). run.json's `backends`."""
    was_training = model.training
    model.eval()
    try:
        with recording() as ran, torch.no_grad(), amp if amp is not None else contextlib.nullcontext():
            model(x)
    finally:
        model.train(was_training)
    return {
        "backend": getattr(getattr(model, "config", None), "backend", None),
        "seq_len": int(x.shape[1]),
        "operators": {op: "+".join(c for c in RAN if c in paths) for op, paths in sorted(ran.items())},
    }
