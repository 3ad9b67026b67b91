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

import functools

import torch

from ..backends import use_kernels
from .common import compute_dtype, no_autocast, start_state

KERNEL_MODULE = "fla.ops.rwkv6"

# Which fla kernel the dispatcher runs: "fused_recurrent" (a loop over time with its own backward, no
# padding to a chunk: the natural choice for the ~10-token sequences of this study) or "chunk".
KERNEL = "fused_recurrent"


def rwkv6(
    r, k, v, w, u, scale=1.0, initial_state=None, output_final_state=False, backend="auto"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The RWKV-6 recurrence (module docstring): (o (B, T, H, V) in r's dtype, the final state
    (B, H, K, V) if `output_final_state`, else None).

    The PyTorch path runs with autocast off, its final state in the compute dtype. fla's kernel gets k, v,
    w, u in r's dtype (the receptance projection's: bfloat16 under autocast, where w and the float32
    parameter u are float32).
    """
    if use_kernels(backend, KERNEL_MODULE, r):
        from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

        kernel = fused_recurrent_rwkv6 if KERNEL == "fused_recurrent" else chunk_rwkv6
        k, v, w, u = (x.to(r.dtype) for x in (k, v, w, u))
        state = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
        return kernel(r=r, k=k, v=v, w=w, u=u, **state)
    out_dtype = r.dtype
    dtype = compute_dtype(r, v)
    B, T, H, K = r.shape
    V = v.shape[-1]
    with no_autocast(r):
        r, k, v, w, u = (x.to(dtype) for x in (r, k, v, w, u))
        decay = torch.exp(w)  # (B, T, H, K)
        S = start_state(initial_state, r, B, H, K, V)  # (B, H, K, V)
        outs = []
        for t in range(T):
            kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V): k_t v_t^T
            read = S + u[:, :, None] * kv  # (B, H, K, V): S_{t-1} + diag(u) k_t v_t^T
            outs.append((r[:, t, :, :, None] * read).sum(-2) * scale)  # (B, H, V)
            S = decay[:, t, :, :, None] * S + kv
        o = torch.stack(outs, dim=1)  # (B, T, H, V)
    return o.to(out_dtype), (S if output_final_state else None)


# the recurrence as a loop over time in pure PyTorch, whatever the device (the reference of the tests)
naive_rwkv6 = functools.partial(rwkv6, backend="torch")
