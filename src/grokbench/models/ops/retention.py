"""Retention (RetNet's multi-scale retention, Sun et al. 2023): linear attention with a fixed decay
gamma_h per head.

Per batch element and head h, with gamma_h = 1 - 2^(-5 - h) (h = 0..H-1), the recurrent form

    S_t = gamma_h S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t        (S_0 = 0, S of shape (K, V))

equals the parallel form used here, o = scale * ((q k^T) * D) v with D[t, s] = gamma_h^(t - s) for
s <= t and 0 above the diagonal (causal). `scale` defaults to K^-1/2.

Layouts: q, k are (B, T, H, K), v is (B, T, H, V), the output (B, T, H, V): flash-linear-attention's
(fla 0.6) layout.

Written for grokbench after reading, not copying, the RetNet paper (section 2.1, the parallel
representation) and fla-org/flash-linear-attention 0.6: fla/ops/retention/naive.py (`naive_retention`,
the reference the tests compare with; it takes (B, H, T, D)) and fla/ops/retention/{chunk,
fused_recurrent}.py (the kernels `retention` dispatches to, which use the same per-head decays).
"""

from __future__ import annotations

import functools

import torch

from .common import Forms, run

KERNEL_MODULE = "fla.ops.retention"

# Up to this length fla's fused_recurrent kernel runs (it has a backward: the kernel fla's GLA layer
# trains with at these lengths), beyond it the chunk kernel. fla's MultiScaleRetention layer takes the
# chunk kernel whenever a gradient is needed; here its backward crashed with an illegal memory access in
# a whole-model test at the study's shape (B=64, T=8, bfloat16; fla 0.6.0, Triton 3.6.0, H200), so the
# short sequences train through fused_recurrent as GLA's do.
FUSED_RECURRENT_MAX_LEN = 64


def retention_log_decay(n_head: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """log gamma_h = log(1 - 2^(-5 - h)) for h = 0..n_head-1, shape (n_head,)."""
    h = torch.arange(n_head, dtype=dtype, device=device)
    return torch.log1p(-torch.exp2(-5.0 - h))


def retention(q, k, v, scale=None, backend="auto") -> torch.Tensor:
    """Retention (module docstring), (B, T, H, V) in v's dtype, with autocast off (common.run).

    fla's kernels get q and k in v's dtype; fused_recurrent_retention runs up to FUSED_RECURRENT_MAX_LEN
    tokens and chunk_retention beyond.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # fla's default too
    return run(backend, KERNEL_MODULE, FORMS, q, k, v, scale=scale)


# the parallel form in pure PyTorch, whatever the device (the reference of the tests)
naive_retention = functools.partial(retention, backend="torch")


def _retention_parallel(q, k, v, scale: float) -> torch.Tensor:
    T, H = q.shape[1], q.shape[2]
    pos = torch.arange(T, device=q.device)
    dist = (pos[:, None] - pos[None, :]).to(q.dtype)  # (T, T): t - s
    causal = pos[:, None] >= pos[None, :]  # (T, T)
    log_decay = retention_log_decay(H, q.dtype, q.device)[:, None, None] * dist  # (H, T, T)
    # exp of -inf above the diagonal: the masked entries are exact zeros, never exp of a large number
    D = torch.where(causal, log_decay, torch.full_like(log_decay, float("-inf"))).exp()  # (H, T, T)
    scores = torch.einsum("bthk,bshk->bhts", q, k) * (D * scale)  # (B, H, T, T)
    return torch.einsum("bhts,bshv->bthv", scores, v)  # (B, T, H, V)


def _retention_kernel(q, k, v, scale: float) -> torch.Tensor:
    from fla.ops.retention import chunk_retention, fused_recurrent_retention

    q, k = q.to(v.dtype), k.to(v.dtype)
    if q.shape[1] <= FUSED_RECURRENT_MAX_LEN:
        o, _ = fused_recurrent_retention(q=q, k=k, v=v, scale=scale)
    else:
        o, _ = chunk_retention(q=q, k=k, v=v, scale=scale)
    return o  # (B, T, H, V)


FORMS = Forms(_retention_kernel, _retention_parallel)  # what `retention` chooses from (no fast form)
