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
dispatches to); for the fast form below, `delta_rule_chunkwise` in fla/ops/delta_rule/naive.py and
fla/ops/delta_rule/wy_fast.py (the WY representation of the chunked kernels).

Fast form (backend "fast"; "auto" on the CPU up to FAST_MAX_SEQ_LEN tokens), the rule in closed form over
the whole sequence, as one chunk of fla's chunked algorithm. With the written values u_t = beta_t (v_t -
S'^T k_t), S_t = sum_{s<=t} gamma_{ts} k_s u_s^T with gamma_{ts} = exp(sum_{s<r<=t} g_r), so

    u_t + beta_t sum_{s<t} gamma_{ts} (k_t . k_s) u_s = beta_t v_t
    o_t = scale sum_{s<=t} gamma_{ts} (q_t . k_s) u_s

a unit lower-triangular system for all u_t at once (the "UT transform" behind fla's WY representation),
then one causal product.
"""

from __future__ import annotations

import functools

import torch

from .common import Forms, needs_grad, run, segment_sums, unit_lower_solve

GATED_KERNEL_MODULE = "fla.ops.gated_delta_rule"
KERNEL_MODULE = "fla.ops.delta_rule"

# Which fla kernel runs, as fla's layers choose. Gated (GatedDeltaNet layer): fused_recurrent without a
# gradient up to this length (fused_recurrent_gated_delta_rule has no backward), else chunk. Ungated
# (DeltaNet layer): fused_recurrent (it has a backward) up to this length, else chunk_delta_rule, except in
# float32, which chunk_delta_rule refuses: there the gated chunk kernel with no decay (g = 0).
FUSED_RECURRENT_MAX_LEN = 64
# Longest sequence `backend="auto"` runs the fast form for, where kernels do not run.
FAST_MAX_SEQ_LEN = 128


def gated_delta_rule(q, k, v, beta, g=None, scale=None, backend="auto") -> torch.Tensor:
    """The (gated) delta rule (module docstring), (B, T, H, V) in v's dtype, with autocast off
    (common.run); `g=None` is the ungated delta rule (DeltaNet).

    fla's kernels (fla.ops.gated_delta_rule with a gate, fla.ops.delta_rule without; which one:
    FUSED_RECURRENT_MAX_LEN above) get every input in v's dtype, as fla's layers feed them. q and k go in
    as given (the caller normalizes them; the kernels' own L2 norm is off), g as a log decay (the kernels'
    fused gate activation is off) and beta as is (its fused sigmoid is off).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # fla's default too
    module = KERNEL_MODULE if g is None else GATED_KERNEL_MODULE
    return run(backend, module, FORMS, q, k, v, beta, g, scale=scale)


# the recurrence as a loop over time in pure PyTorch, whatever the device (the reference of the tests)
naive_gated_delta_rule = functools.partial(gated_delta_rule, backend="torch")
# the closed form, whatever the device and length
fast_gated_delta_rule = functools.partial(gated_delta_rule, backend="fast")


def _delta_rule_fast(q, k, v, beta, g, scale: float) -> torch.Tensor:
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, T, K|V)
    beta = beta.transpose(1, 2)[..., None]  # (B, H, T, 1)
    T = q.shape[2]
    if g is None:
        decay = torch.ones(T, T, dtype=q.dtype, device=q.device).tril()  # (T, T)
    else:
        decay = segment_sums(g.transpose(1, 2)).exp()  # (B, H, T, T): gamma_{ts}, 0 for s > t
    kk = (k @ k.transpose(-1, -2)) * decay  # (B, H, T, T): gamma_{ts} k_t . k_s
    u = unit_lower_solve(-beta * kk, beta * v)  # (B, H, T, V): (I + diag(beta) tril(kk, -1)) u = beta v
    qk = (q @ k.transpose(-1, -2)) * decay  # (B, H, T, T), causal
    return (qk @ u * scale).transpose(1, 2)  # (B, T, H, V)


def _delta_rule_loop(q, k, v, beta, g, scale: float) -> torch.Tensor:
    B, T, H, K = q.shape
    decay = None if g is None else torch.exp(g)  # (B, T, H)
    S = q.new_zeros(B, H, K, v.shape[-1])  # (B, H, K, V)
    outs = []
    for t in range(T):
        if decay is not None:
            S = decay[:, t, :, None, None] * S  # S' = exp(g_t) S_{t-1}
        k_t = k[:, t, :, :, None]  # (B, H, K, 1)
        pred = (k_t * S).sum(-2)  # (B, H, V): S'^T k_t
        delta = beta[:, t, :, None] * (v[:, t] - pred)  # (B, H, V)
        S = S + k_t * delta[:, :, None, :]  # (B, H, K, V)
        outs.append((q[:, t, :, :, None] * S).sum(-2) * scale)  # (B, H, V): S_t^T q_t
    return torch.stack(outs, dim=1)  # (B, T, H, V)


def _delta_rule_kernel(q, k, v, beta, g, scale: float) -> torch.Tensor:
    q, k, beta = (x.to(v.dtype) for x in (q, k, beta))
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
    kernel = (
        chunk_gated_delta_rule
        if needs_grad(q, k, v, beta, g) or T > FUSED_RECURRENT_MAX_LEN
        else fused_recurrent_gated_delta_rule
    )
    o, _ = kernel(q=q, k=k, v=v, g=g.to(v.dtype), beta=beta, scale=scale)
    return o  # (B, T, H, V)


# what `gated_delta_rule` chooses from
FORMS = Forms(_delta_rule_kernel, _delta_rule_loop, _delta_rule_fast, FAST_MAX_SEQ_LEN)
