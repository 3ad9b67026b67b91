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

Fast form (backend "fast"; "auto" on the CPU up to FAST_MAX_SEQ_LEN tokens): the closed form over time,

    o_t = scale (sum_{s<t} (sum_k r_t k_s G_{s,t-1}) v_s + (r_t . (u k_t)) v_t + (r_t G_{0,t-1})^T S_0)

with G_{s,t} = exp(sum_{s<r<=t} w_r) per key channel, each pair's decay computed on its own
(common.channel_segment_sums: w has no lower bound, so exp(c_t) exp(-c_s) could overflow).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..backends import note, use_kernels
from .common import (
    channel_segment_sums,
    compute_dtype,
    decayed_scores,
    exclusive_cumsum,
    no_autocast,
    start_state,
    suffix_sums,
    torch_form,
)

KERNEL_MODULE = "fla.ops.rwkv6"

# Which fla kernel the dispatcher runs: "fused_recurrent" (a loop over time with its own backward, no
# padding to a chunk: the natural choice for the ~10-token sequences of this study) or "chunk".
KERNEL = "fused_recurrent"
# Longest sequence `backend="auto"` runs the fast form for, where kernels do not run.
FAST_MAX_SEQ_LEN = 10


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
        note("rwkv6", "kernels")
        from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

        kernel = fused_recurrent_rwkv6 if KERNEL == "fused_recurrent" else chunk_rwkv6
        k, v, w, u = (x.to(r.dtype) for x in (k, v, w, u))
        state = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
        return kernel(r=r, k=k, v=v, w=w, u=u, **state)
    out_dtype, dtype = r.dtype, compute_dtype(r, v)
    if torch_form("rwkv6", backend, r, FAST_MAX_SEQ_LEN):
        with no_autocast(r):
            S0 = None if initial_state is None else initial_state.to(dtype)
            o, S = _rwkv6_fast(*(x.to(dtype) for x in (r, k, v, w, u)), scale, S0, output_final_state)
        return o.to(out_dtype), S
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
# the closed form, whatever the device and length
fast_rwkv6 = functools.partial(rwkv6, backend="fast")


def _rwkv6_fast(r, k, v, w, u, scale, S0, output_final_state):
    """The closed form of the module docstring; (o (B, T, H, V), the final state or None)."""
    r, k, v, w = (x.transpose(1, 2) for x in (r, k, v, w))  # (B, H, T, K|V)
    G = channel_segment_sums(w).exp()  # (B, H, T, T, K): G_{s,t} at [t, s]
    G_prev = F.pad(G[:, :, :-1], (0, 0, 0, 0, 1, 0))  # G_{s,t-1} at [t, s], 0 for s >= t
    scores = decayed_scores(r, k, G_prev)  # (B, H, T, T), strictly causal
    bonus = (r * u[:, None] * k).sum(-1, keepdim=True)  # (B, H, T, 1): r_t . (u k_t)
    o = scores @ v + bonus * v
    if S0 is not None:
        o = o + (r * exclusive_cumsum(w, 2).exp()) @ S0
    o = (o * scale).transpose(1, 2)  # (B, T, H, V)
    if not output_final_state:
        return o, None
    S = (k * suffix_sums(w, 2).exp()).transpose(-1, -2) @ v  # (B, H, K, V)
    if S0 is not None:
        S = S + w.sum(2)[..., None].exp() * S0
    return o, S
