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

Fast form (backend "fast"; "auto" on the CPU up to FAST_MAX_SEQ_LEN tokens): the closed form over time,
o_t = scale sum_{s<=t} (sum_k q_t k_s exp(sum_{s<r<=t} g_r)) v_s, each pair's decay computed on its own
(common.channel_segment_sums: g has no lower bound, so exp(c_t) exp(-c_s) could overflow).
"""

from __future__ import annotations

import functools

import torch

from .common import Forms, channel_segment_sums, decayed_scores, run

KERNEL_MODULE = "fla.ops.gla"

# Longest sequence that runs fla's fused_recurrent kernel (a loop over time, with a backward); longer
# ones run the chunk kernel. 64 is what fla.layers.gla.GatedLinearAttention uses.
FUSED_RECURRENT_MAX_LEN = 64
# Longest sequence `backend="auto"` runs the fast form for, where kernels do not run.
FAST_MAX_SEQ_LEN = 8


def gla(q, k, v, g, scale=None, backend="auto") -> torch.Tensor:
    """GLA (module docstring), (B, T, H, V) in v's dtype, with autocast off (common.run).

    fla's kernels get every input in v's dtype (the projections' dtype: bfloat16 under autocast), as fla's
    layers feed them, and then keep those dtypes; fused_recurrent_gla runs up to FUSED_RECURRENT_MAX_LEN
    tokens and chunk_gla beyond, as fla's GLA layer does.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # fla's default too
    return run(backend, KERNEL_MODULE, FORMS, q, k, v, g, scale=scale)


# the recurrence as a loop over time in pure PyTorch, whatever the device (the reference of the tests)
naive_gla = functools.partial(gla, backend="torch")
# the closed form, whatever the device and length
fast_gla = functools.partial(gla, backend="fast")


def _gla_fast(q, k, v, g, scale: float) -> torch.Tensor:
    q, k, v, g = (x.transpose(1, 2) for x in (q, k, v, g))  # (B, H, T, K|V)
    decay = channel_segment_sums(g).exp()  # (B, H, T, T, K): exp(sum_{s<r<=t} g_r), 0 for s > t
    return (decayed_scores(q * scale, k, decay) @ v).transpose(1, 2)  # (B, T, H, V)


def _gla_loop(q, k, v, g, scale: float) -> torch.Tensor:
    B, T, H, K = q.shape
    decay = torch.exp(g)  # (B, T, H, K)
    S = q.new_zeros(B, H, K, v.shape[-1])  # (B, H, K, V)
    outs = []
    for t in range(T):
        S = decay[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V)
        outs.append((q[:, t, :, :, None] * S).sum(-2) * scale)  # (B, H, V): S_t^T q_t
    return torch.stack(outs, dim=1)  # (B, T, H, V)


def _gla_kernel(q, k, v, g, scale: float) -> torch.Tensor:
    from fla.ops.gla import chunk_gla, fused_recurrent_gla

    q, k, g = (x.to(v.dtype) for x in (q, k, g))
    if q.shape[1] <= FUSED_RECURRENT_MAX_LEN:
        o, _ = fused_recurrent_gla(q=q, k=k, v=v, gk=g, scale=scale)
    else:
        o, _ = chunk_gla(q=q, k=k, v=v, g=g, scale=scale)
    return o  # (B, T, H, V)


FORMS = Forms(_gla_kernel, _gla_loop, _gla_fast, FAST_MAX_SEQ_LEN)  # what `gla` chooses from
