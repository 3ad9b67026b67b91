"""What the operators share: the precision their pure-PyTorch paths compute in, the choice between that path
and a kernel library's (backends.py says which runs), the state a recurrence starts from, and Mamba's
discretization step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backends import check_backend, use_kernels


def compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float32, or float64 if any input is float64: the precision the pure-PyTorch operators run in."""
    dtype = torch.float32
    for x in xs:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def no_autocast(x: torch.Tensor) -> torch.autocast:
    """Autocast off on x's device: inside it an operator keeps the dtypes it chose."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def run(backend: str, module: str, kernel, loop, *inputs: torch.Tensor | None, **kwargs) -> torch.Tensor:
    """An operator of fla's layout (q, k, v, ... as (B, T, H, D)), with autocast off: `kernel(*inputs,
    **kwargs)` from the library `module` where `backend` says so (backends.use_kernels), else `loop`, its
    pure-PyTorch form, on the inputs in their compute dtype (None inputs stay None), cast back to v's
    dtype."""
    q, v = inputs[0], inputs[2]
    with no_autocast(q):
        if use_kernels(backend, module, q):
            return kernel(*inputs, **kwargs)
        dtype = compute_dtype(*(x for x in inputs if x is not None))
        o = loop(*(None if x is None else x.to(dtype) for x in inputs), **kwargs)
    return o.to(v.dtype)


def start_state(initial_state: torch.Tensor | None, like: torch.Tensor, *shape: int) -> torch.Tensor:
    """The state a recurrence starts from: `initial_state` in like's dtype, or zeros of `shape` as `like`."""
    return like.new_zeros(*shape) if initial_state is None else initial_state.to(like.dtype)


def needs_grad(*xs: torch.Tensor | None) -> bool:
    """Whether autograd will want gradients of any of the tensors (None: absent)."""
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs if x is not None)


MAMBA_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_mamba_kernel(backend: str, module: str, x: torch.Tensor, name: str) -> bool:
    """`use_kernels` for mamba-ssm's kernels, which take MAMBA_KERNEL_DTYPES only (no float64): "auto"
    keeps other dtypes on the torch path, backend="kernels" with one raises ValueError."""
    check_backend(backend)
    if backend == "auto" and x.dtype not in MAMBA_KERNEL_DTYPES:
        return False
    if not use_kernels(backend, module, x):
        return False
    if x.dtype not in MAMBA_KERNEL_DTYPES:
        raise ValueError(f"the {name} kernel takes {MAMBA_KERNEL_DTYPES}, got {x.dtype}")
    return True


def time_step(dt: torch.Tensor, bias: torch.Tensor | None, softplus: bool) -> torch.Tensor:
    """Mamba's step size Δ = softplus(dt + bias) (each part where asked for), in dt's dtype."""
    if bias is not None:
        dt = dt + bias.to(dt.dtype)
    if softplus:
        dt = F.softplus(dt)  # threshold 20, as the kernels' softplus
    return dt
