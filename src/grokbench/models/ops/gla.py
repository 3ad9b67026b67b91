"""Gated linear attention (GLA, Yang et al. 2024): a linear-attention state with a data-dependent decay
per key channel. HGRN2 (Qin et al. 2024) runs on the same operator (keys = 1 - forget gate).

Per batch element and head, with a state S of shape (K, V) (key rows, value columns), S_0 = 0, and for
t = 1..T:

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T
    o_t = scale * S_t^T q_t

g_t <= 0 is the log of the forget gate, one per key channel; `scale` defaults to K^-1/2.

Layouts: q, k, g are (B, T, H, K), v is (B, T, H, V), the output (B, T, H, V): flash-linear-attention's
(fla 0.6) layout.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6:
fla/ops/gla/naive.py (`naive_recurrent_gla`, the reference the tests compare with) and
fla/ops/gla/{fused_recurrent,chunk}.py (the kernels `gla` dispatches to, and their scale default).
"""

from __future__ import annotations

import torch

from ..backends import use_kernels

KERNEL_MODULE = "fla.ops.gla"

# Longest sequence that runs fla's fused_recurrent kernel (a loop over time, with a backward); longer
# ones run the chunk kernel. 64 is what fla.layers.gla.GatedLinearAttention uses.
FUSED_RECURRENT_MAX_LEN = 64


def compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float32, or float64 if any input is float64: the precision the pure-PyTorch operators run in."""
    dtype = torch.float32
    for x in xs:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def naive_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """The recurrence of the module docstring as a loop over time, in pure PyTorch.

    Computed in float32 (float64 for float64 inputs) with autocast off; the output has v's dtype.
    """
    out_dtype = v.dtype
    dtype = compute_dtype(q, k, v, g)
    B, T, H, K = q.shape
    V = v.shape[-1]
    if scale is None:
        scale = K**-0.5
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v, g = (x.to(dtype) for x in (q, k, v, g))
        decay = torch.exp(g)  # (B, T, H, K)
        S = q.new_zeros(B, H, K, V)
        outs = []
        for t in range(T):
            S = decay[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V)
            outs.append((q[:, t, :, :, None] * S).sum(-2) * scale)  # (B, H, V): S_t^T q_t
        o = torch.stack(outs, dim=1)  # (B, T, H, V)
    return o.to(out_dtype)


def gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """GLA (module docstring) through fla's kernels or `naive_gla`, as `backend` says (see backends.py).

    The kernel path casts every input to v's dtype (the projections' dtype: bfloat16 under autocast), as
    fla's layers feed its kernels one dtype, and runs with autocast off (the torch code around fla's
    kernels then keeps those dtypes); it runs fused_recurrent_gla up to FUSED_RECURRENT_MAX_LEN tokens
    and chunk_gla beyond, as fla's GLA layer does.
    """
    if use_kernels(backend, KERNEL_MODULE, q):
        with torch.autocast(device_type=q.device.type, enabled=False):
            return _gla_kernel(q, k, v, g, scale)
    return naive_gla(q, k, v, g, scale)


def _gla_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None
) -> torch.Tensor:
    from fla.ops.gla import chunk_gla, fused_recurrent_gla

    q, k, g = (x.to(v.dtype) for x in (q, k, g))
    if scale is None:
        scale = q.shape[-1] ** -0.5  # fla's default too; explicit so both paths agree by construction
    if q.shape[1] <= FUSED_RECURRENT_MAX_LEN:
        o, _ = fused_recurrent_gla(q=q, k=k, v=v, gk=g, scale=scale)
    else:
        o, _ = chunk_gla(q=q, k=k, v=v, g=g, scale=scale)
    return o  # (B, T, H, V)
