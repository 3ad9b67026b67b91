"""The (gated) delta rule: DeltaNet (Schlag et al. 2021; Yang et al. 2024) and Gated DeltaNet (Yang et
al. 2025).

Per batch element and head, with a state S of shape (K, V) (key rows, value columns), S_0 = 0, and for
t = 1..T:

    S'  = exp(g_t) S_{t-1}                                   (gated; S' = S_{t-1} without a gate)
    S_t = S' + beta_t k_t (v_t - S'^T k_t)^T  =  exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * S_t^T q_t

g_t <= 0 is a log decay (one per head), beta_t in (0, 1) the writing strength (one per head): the state's
prediction for k_t, S'^T k_t, is moved a fraction beta_t towards v_t. The models feed L2-normalized q and
k, which the rule needs to stay stable (for |k| = 1 and beta in [0, 1], I - beta k k^T is a contraction).
`scale` defaults to K^-1/2.

Layouts: q, k are (B, T, H, K), v is (B, T, H, V), beta and g (B, T, H), the output (B, T, H, V):
flash-linear-attention's (fla 0.6) layout.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6:
fla/ops/gated_delta_rule/naive.py (`naive_recurrent_gated_delta_rule`) and fla/ops/delta_rule/naive.py
(`delta_rule_recurrence`), the references the tests compare with, and
fla/ops/{gated_delta_rule,delta_rule}/{chunk,fused_recurrent}.py (the kernels `gated_delta_rule`
dispatches to).
"""

from __future__ import annotations

import torch

from ..backends import use_kernels
from .gla import compute_dtype

GATED_KERNEL_MODULE = "fla.ops.gated_delta_rule"
KERNEL_MODULE = "fla.ops.delta_rule"

# Which fla kernel runs, as fla's layers choose. Gated (GatedDeltaNet layer): fused_recurrent without a
# gradient up to this length (fused_recurrent_gated_delta_rule has no backward), else chunk. Ungated
# (DeltaNet layer): fused_recurrent (it has a backward) up to this length, else chunk_delta_rule, except in
# float32, which chunk_delta_rule refuses: there the gated chunk kernel with no decay (g = 0).
FUSED_RECURRENT_MAX_LEN = 64


def naive_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The recurrence of the module docstring as a loop over time, in pure PyTorch; `g=None` is the
    ungated delta rule (DeltaNet).

    Computed in float32 (float64 for float64 inputs) with autocast off; the output has v's dtype.
    """
    out_dtype = v.dtype
    tensors = (q, k, v, beta) if g is None else (q, k, v, beta, g)
    dtype = compute_dtype(*tensors)
    B, T, H, K = q.shape
    V = v.shape[-1]
    if scale is None:
        scale = K**-0.5
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
        decay = None if g is None else torch.exp(g.to(dtype))  # (B, T, H)
        S = q.new_zeros(B, H, K, V)
        outs = []
        for t in range(T):
            if decay is not None:
                S = decay[:, t, :, None, None] * S  # S' = exp(g_t) S_{t-1}
            k_t = k[:, t, :, :, None]  # (B, H, K, 1)
            pred = (k_t * S).sum(-2)  # (B, H, V): S'^T k_t
            delta = beta[:, t, :, None] * (v[:, t] - pred)  # (B, H, V)
            S = S + k_t * delta[:, :, None, :]  # (B, H, K, V)
            outs.append((q[:, t, :, :, None] * S).sum(-2) * scale)  # (B, H, V): S_t^T q_t
        o = torch.stack(outs, dim=1)  # (B, T, H, V)
    return o.to(out_dtype)


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The (gated) delta rule (module docstring) through fla's kernels or `naive_gated_delta_rule`, as
    `backend` says: fla.ops.gated_delta_rule with a gate, fla.ops.delta_rule without.

    The kernel path (kernel choice: FUSED_RECURRENT_MAX_LEN above) casts every input to v's dtype (fla's
    layers feed its kernels one dtype) and runs with autocast off. q and k go in as given (the caller
    normalizes them; the kernels' own L2 norm is off), g as a log decay (the kernels' fused gate
    activation is off) and beta as is (its fused sigmoid is off).
    """
    module = KERNEL_MODULE if g is None else GATED_KERNEL_MODULE
    if use_kernels(backend, module, q):
        with torch.autocast(device_type=q.device.type, enabled=False):
            return _delta_rule_kernel(q, k, v, beta, g, scale)
    return naive_gated_delta_rule(q, k, v, beta, g, scale)


def _delta_rule_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    q, k, beta = (x.to(v.dtype) for x in (q, k, beta))
    if scale is None:
        scale = q.shape[-1] ** -0.5  # fla's default too
    T = q.shape[1]
    if g is None and T <= FUSED_RECURRENT_MAX_LEN:
        # fla's DeltaNet layer: the fused_recurrent kernel (it has a backward) up to 64 tokens
        from fla.ops.delta_rule import fused_recurrent_delta_rule

        o, _ = fused_recurrent_delta_rule(q=q, k=k, v=v, beta=beta, scale=scale)
        return o
    if g is None and v.dtype != torch.float32:
        from fla.ops.delta_rule import chunk_delta_rule

        o, _ = chunk_delta_rule(q=q, k=k, v=v, beta=beta, scale=scale)
        return o
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    if g is None:  # chunk_delta_rule refuses float32: the gated kernel with no decay (g = 0) is the same rule
        g = torch.zeros_like(beta)
    tensors = (q, k, v, beta, g)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in tensors)
    kernel = (
        chunk_gated_delta_rule
        if needs_grad or T > FUSED_RECURRENT_MAX_LEN
        else fused_recurrent_gated_delta_rule
    )
    o, _ = kernel(q=q, k=k, v=v, g=g.to(v.dtype), beta=beta, scale=scale)
    return o  # (B, T, H, V)
