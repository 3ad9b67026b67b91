"""The RWKV-6 ("Finch", Peng et al. 2024) state update: linear attention with a data-dependent decay.

Per batch element and head, with a state S of shape (K, V), S_0 = 0 unless an initial state is given, and
for t = 1..T:

    o_t = scale * (S_{t-1} + diag(u) k_t v_t^T)^T r_t        (u: the per-channel "bonus" of the current token)
    S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T

w_t is a log decay (w <= 0); RWKV-6 uses w_t = -exp(w_raw_t), i.e. the decay exp(-exp(w_raw_t)).

Layouts: r, k, w are (B, T, H, K), v is (B, T, H, V), u is (H, K), the output (B, T, H, V), states
(B, H, K, V), as in flash-linear-attention 0.6.

Written for grokbench after reading, not copying:
- BlinkDL/RWKV-LM, RWKV-v5/src/model.py (RWKV_Tmix_x060, RUN_CUDA_RWKV6 and its wkv6 CUDA kernel);
- fla-org/flash-linear-attention 0.6, fla/ops/rwkv6/{fused_recurrent,chunk}.py and
  fla/ops/rwkv6/recurrent_naive.py (`naive_recurrent_rwkv6`, the reference the tests compare with).
"""

from __future__ import annotations

import torch

from ..backends import use_kernels

KERNEL_MODULE = "fla.ops.rwkv6"

# Which fla kernel the dispatcher runs: "fused_recurrent" (a loop over time with its own backward, no
# padding to a chunk: the natural choice for the ~10-token sequences of this study) or "chunk".
KERNEL = "fused_recurrent"


def naive_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence of the module docstring as a loop over time, in pure PyTorch.

    Computed in float32 (float64 for float64 inputs) with autocast off; the output has r's dtype, the
    final state (if asked for) the compute dtype. Returns (o (B, T, H, V), final state (B, H, K, V) or None).
    """
    out_dtype = r.dtype
    dtype = torch.promote_types(torch.promote_types(r.dtype, v.dtype), torch.float32)
    B, T, H, K = r.shape
    V = v.shape[-1]
    with torch.autocast(device_type=r.device.type, enabled=False):
        r, k, v, w, u = (x.to(dtype) for x in (r, k, v, w, u))
        decay = torch.exp(w)  # (B, T, H, K)
        S = r.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)  # (B, H, K, V)
        outs = []
        for t in range(T):
            kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V): k_t v_t^T
            read = S + u[:, :, None] * kv  # (B, H, K, V): S_{t-1} + diag(u) k_t v_t^T
            outs.append((r[:, t, :, :, None] * read).sum(-2) * scale)  # (B, H, V)
            S = decay[:, t, :, :, None] * S + kv
        o = torch.stack(outs, dim=1)  # (B, T, H, V)
    return o.to(out_dtype), (S if output_final_state else None)


def rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The RWKV-6 recurrence (module docstring) through fla's kernel or `naive_rwkv6`, as `backend` says.

    The kernel path casts k, v, w, u to r's dtype (the receptance projection's: bfloat16 under
    autocast, where w and the float32 parameter u are float32), as fla's kernels expect one dtype; its
    output has r's dtype.
    """
    if not use_kernels(backend, KERNEL_MODULE, r):
        return naive_rwkv6(r, k, v, w, u, scale, initial_state, output_final_state)
    from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

    dtype = r.dtype
    k, v, w, u = (x.to(dtype) for x in (k, v, w, u))
    kernel = fused_recurrent_rwkv6 if KERNEL == "fused_recurrent" else chunk_rwkv6
    return kernel(
        r=r,
        k=k,
        v=v,
        w=w,
        u=u,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
    )
