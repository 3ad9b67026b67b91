"""What the operators share: the precision their pure-PyTorch paths compute in, the choice between those
paths and a kernel library's (backends.py says which runs), the state a recurrence starts from, Mamba's
discretization step, and the pieces of the fast (closed) forms over time: segment sums of log decays and
the unit lower-triangular solve of the delta rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..backends import check_backend, note, use_fast, use_kernels


def compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float32, or float64 if any input is float64: the precision the pure-PyTorch operators run in."""
    dtype = torch.float32
    for x in xs:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def no_autocast(x: torch.Tensor) -> torch.autocast:
    """Autocast off on x's device: inside it an operator keeps the dtypes it chose."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class Forms(NamedTuple):
    """One operator's implementations: `kernel`, the kernel library's; `loop`, the pure-PyTorch
    reference; `fast`, a faster pure-PyTorch form (None: none), which backend "auto" runs up to
    `fast_max_len` tokens (backends.use_fast)."""

    kernel: Callable
    loop: Callable
    fast: Callable | None = None
    fast_max_len: int | None = 0


def run(backend: str, module: str, forms: Forms, *inputs: torch.Tensor | None, **kwargs) -> torch.Tensor:
    """An operator of fla's layout (q, k, v, ... as (B, T, H, D)), with autocast off: `forms.kernel(*inputs,
    **kwargs)` from the library `module` where `backend` says so (backends.use_kernels), else `forms.fast`
    where backends.use_fast says so, else `forms.loop`; the PyTorch forms get the inputs in their compute
    dtype (None inputs stay None), and their output is cast back to v's dtype."""
    q, v = inputs[0], inputs[2]
    op = module.rsplit(".", 1)[-1]  # fla.ops.gla -> gla (backends.note)
    with no_autocast(q):
        if use_kernels(backend, module, q):
            note(op, "kernels")
            return forms.kernel(*inputs, **kwargs)
        is_fast = forms.fast is not None and use_fast(backend, q, forms.fast_max_len)
        note(op, "fast" if is_fast else "torch")
        form = forms.fast if is_fast else forms.loop
        dtype = compute_dtype(*(x for x in inputs if x is not None))
        o = form(*(None if x is None else x.to(dtype) for x in inputs), **kwargs)
    return o.to(v.dtype)


def torch_form(op: str, backend: str, x: torch.Tensor, fast_max_len: int | None) -> bool:
    """For an operator that runs its PyTorch forms itself (where kernels do not run): whether its fast form
    runs for input `x` (backends.use_fast), noted for the record (backends.note)."""
    fast = use_fast(backend, x, fast_max_len)
    note(op, "fast" if fast else "torch")
    return fast


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


def kernel_dtype(x: torch.Tensor) -> torch.dtype:
    """The floating type mamba-ssm's kernels get the activations in: autocast's where autocast is on for
    x's device, else x's own. Under autocast the torch-side inputs can arrive in float32 (the causal
    conv's shifted products promote bf16 activations against its float32 weights); mamba-ssm's own blocks
    feed the kernels autocast's type (their projections and causal_conv1d return it), so do these."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def time_step(dt: torch.Tensor, bias: torch.Tensor | None, softplus: bool) -> torch.Tensor:
    """Mamba's step size Δ = softplus(dt + bias) (each part where asked for), in dt's dtype."""
    if bias is not None:
        dt = dt + bias.to(dt.dtype)
    if softplus:
        dt = F.softplus(dt)  # threshold 20, as the kernels' softplus
    return dt


# --- the fast forms: closed forms over time for short sequences ---------------------------------------


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """x (..., T) -> (..., T, T) with [..., t, s] = sum_{s < r <= t} x[..., r] for s <= t (0 on the
    diagonal) and -inf for s > t: for log decays x, exp of it is the decay from step s to step t, exactly
    0 above the diagonal. Each entry sums its own terms (a masked cumulative sum), not a difference of two
    cumulative sums, which would round small sums next to large ones: the stable `segsum` of Mamba-2's
    minimal SSD (state-spaces/mamba, mamba_ssm/modules/ssd_minimal.py), read, not copied."""
    T = x.shape[-1]
    lower = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    terms = x[..., None].expand(*x.shape, T).masked_fill(~lower.tril(-1), 0)  # [..., r, s] = x_r for r > s
    return terms.cumsum(-2).masked_fill(~lower, float("-inf"))  # (..., T, T)


def channel_segment_sums(x: torch.Tensor) -> torch.Tensor:
    """`segment_sums` over time of per-channel log decays x (B, H, T, K): (B, H, T, T, K), [b, h, t, s, k] =
    sum_{s < r <= t} x[b, h, r, k], -inf for s > t (channels last, as the products that use them)."""
    T = x.shape[2]
    lower = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    strict = lower.tril(-1)[:, :, None]  # (T, T, 1): r > s
    terms = x[:, :, :, None, :].expand(-1, -1, -1, T, -1).masked_fill(~strict, 0)  # [r, s] = x_r, r > s
    return terms.cumsum(2).masked_fill(~lower[:, :, None], float("-inf"))


def decayed_scores(q: torch.Tensor, k: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """sum_c q[b, h, t, c] k[b, h, s, c] G[b, h, t, s, c]: (B, H, T, S) scores of q (B, H, T, C) against k
    (B, H, S, C) under per-channel decays G (B, H, T, S, C) (products and a sum: on the CPU several times
    faster, backward included, than batched (1, C) @ (C, S) products or einsum)."""
    return (q[:, :, :, None, :] * k[:, :, None] * G).sum(-1)


def exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_{r < t} x_r along `dim` (0 at t = 0): the inclusive cumulative sum shifted by one step."""
    c = x.cumsum(dim).narrow(dim, 0, x.shape[dim] - 1)
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [1, 0]
    return F.pad(c, pad)


def suffix_sums(x: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_{r > t} x_r along `dim` (0 at the last step): the log decay from step t to the end."""
    c = x.flip(dim).cumsum(dim).flip(dim).narrow(dim, 1, x.shape[dim] - 1)
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, 1]
    return F.pad(c, pad)


def unit_lower_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """X with (I - L) X = rhs for strictly lower-triangular L (..., T, T) (its diagonal and upper part are
    ignored): the delta rules' UT transform, which turns their per-step corrections into one solve."""
    return torch.linalg.solve_triangular(-L, rhs, upper=False, unitriangular=True)
