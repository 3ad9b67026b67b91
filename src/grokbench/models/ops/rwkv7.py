"""The RWKV-7 ("Goose", Peng et al. 2025) state update: a generalized delta rule.

Per batch element and head, with a state S of shape (K, V) (key rows, value columns), S_0 = 0 unless an
initial state is given, and for t = 1..T:

    S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T        (S_{t-1} read before the update)
    o_t = scale * S_t^T r_t

w_t is a log decay (w <= 0, one per key channel). RWKV-7 uses a_t = -kk_t and b_t = kk_t * iclr_t, with
kk_t a unit-norm "removal key" and iclr_t in (0, 1) the in-context learning rate, so the rank-one term
removes (part of) the value stored along kk_t before k_t v_t^T writes the new one.

Layouts: r, w, k, a, b are (B, T, H, K), v is (B, T, H, V), the output (B, T, H, V), states (B, H, K, V):
flash-linear-attention's layout. BlinkDL's reference keeps the transpose, a (V, K) state updated as
`state = state * w + state @ (a b^T) + v k^T` and read as `state @ r`, which is the same recurrence.

Written for grokbench after reading, not copying:
- BlinkDL/RWKV-LM, RWKV-v7/rwkv_v7_demo.py and RWKV-v7/train_temp/src/model.py (RUN_CUDA_RWKV7g / the
  `clampw` kernel: the recurrence above with decay exp(-exp(w_raw)));
- fla-org/flash-linear-attention 0.6, fla/ops/rwkv7/{chunk,fused_recurrent}.py and
  fla/ops/generalized_delta_rule/dplr/naive.py (`dplr_recurrence`, the reference the tests compare with;
  `dplr_chunkwise` in the same file, and fla/ops/generalized_delta_rule/dplr/wy_fast_fwd.py, for the
  closed form below: fla's chunk kernels in one chunk).

Fast form (backend "fast"; "auto" on the CPU up to FAST_MAX_SEQ_LEN tokens), the recurrence in closed form
over the whole sequence, as one chunk of fla's chunked DPLR algorithm. With u_t = S_{t-1}^T a_t (the value
the rank-one term reads), S_t = diag(exp(w_t)) S_{t-1} + b_t u_t^T + k_t v_t^T unrolls to

    S_t = diag(G_{0,t}) S_0 + sum_{s<=t} diag(G_{s,t}) (k_s v_s^T + b_s u_s^T),
    G_{s,t} = exp(sum_{s<r<=t} w_r)

so u_t = sum_{s<t} [A_ak]_{ts} v_s + [A_ab]_{ts} u_s + (a_t G_{0,t-1})^T S_0, with [A_xy]_{ts} =
sum_k x_t y_s G_{s,t-1}: a unit lower-triangular system (I - A_ab) U = A_ak V + ..., solved at once (the
"UT transform" of fla's WY representation), then O = scale (A_rk V + A_rb U + (r G_{0,t})^T S_0) with
[A_ry]_{ts} = sum_k r_t y_s G_{s,t} for s <= t. The four T x T matrices are one product of (2T, K)
matrices, the decays split as exp(c_t) exp(-c_s) with c the cumulative log decay: safe while exp(-c)
stays far from overflow, i.e. for w >= w_lower_bound with T |w_lower_bound| <= FACTORED_MAX_LOG_DECAY; else
(no bound given, or a longer sequence) each pair's decay is computed on its own
(common.channel_segment_sums), a (B, H, T, T, K) tensor.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..backends import note, use_kernels
from .common import (
    channel_segment_sums,
    compute_dtype,
    decayed_scores,
    exclusive_cumsum,
    needs_grad,
    no_autocast,
    start_state,
    suffix_sums,
    torch_form,
    unit_lower_solve,
)

KERNEL_MODULE = "fla.ops.rwkv7"

# RWKV-7's log decay is w = -exp(-1/2) * sigmoid(.), in [-exp(-1/2), 0): BlinkDL's
# exp(-exp(-softplus(-x) - 0.5)) written as a log. Telling fla's chunk kernel this bound lets it use its
# tensor-core scheme with 64-token chunks (as fla.layers.rwkv7 does).
RWKV7_W_LOWER_BOUND = -math.exp(-0.5)

# Which fla kernel runs where no gradient is needed: "fused_recurrent" (a plain loop over time, no
# padding to a chunk: the natural choice for the ~10-token sequences of this study) or "chunk". With a
# gradient it is always "chunk": fla's fused_recurrent_rwkv7 has no backward (it raises in backward).
NO_GRAD_KERNEL = "fused_recurrent"
# Chunk length of fla's chunk kernel; None lets fla choose (64 when the decay bound above is given).
CHUNK_SIZE: int | None = None
# Longest sequence `backend="auto"` runs the fast form for, where kernels do not run.
FAST_MAX_SEQ_LEN = 64
# Largest total log decay T |w_lower_bound| for which the fast form splits the decays as exp(c_t) exp(-c_s)
# (exp(40) ~ 2e17, far from float32's overflow at exp(88); the split costs ~|c| float32 ulps per entry).
FACTORED_MAX_LOG_DECAY = 40.0


def rwkv7(
    r,
    w,
    k,
    v,
    a,
    b,
    scale=1.0,
    initial_state=None,
    output_final_state=False,
    w_lower_bound=None,
    backend="auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The RWKV-7 recurrence (module docstring): (o (B, T, H, V) in r's dtype, the final state
    (B, H, K, V) if `output_final_state`, else None).

    `w_lower_bound`, if given, promises w >= w_lower_bound (RWKV7_W_LOWER_BOUND for RWKV-7's decay); fla's
    chunk kernel then uses its faster scheme. The PyTorch path runs with autocast off, its final state in
    the compute dtype. fla's kernel gets every input in r's dtype (the receptance projection's: bfloat16
    under autocast, where w, k, v can come out in float32 from float32 parameters); its final state is
    float32.
    """
    if use_kernels(backend, KERNEL_MODULE, r):
        note("rwkv7", "kernels")
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7

        w, k, v, a, b = (x.to(r.dtype) for x in (w, k, v, a, b))
        state = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
        if NO_GRAD_KERNEL == "fused_recurrent" and not needs_grad(r, w, k, v, a, b, initial_state):
            return fused_recurrent_rwkv7(r=r, w=w, k=k, v=v, a=a, b=b, **state)
        return chunk_rwkv7(
            r=r, w=w, k=k, v=v, a=a, b=b, **state, chunk_size=CHUNK_SIZE, lower_bound=w_lower_bound
        )
    out_dtype, dtype = r.dtype, compute_dtype(r, v)
    if torch_form("rwkv7", backend, r, FAST_MAX_SEQ_LEN):
        with no_autocast(r):
            inputs = (x.to(dtype) for x in (r, w, k, v, a, b))
            S0 = None if initial_state is None else initial_state.to(dtype)
            o, S = _rwkv7_fast(*inputs, scale, S0, output_final_state, w_lower_bound)
        return o.to(out_dtype), S
    B, T, H, K = r.shape
    V = v.shape[-1]
    with no_autocast(r):
        r, w, k, v, a, b = (x.to(dtype) for x in (r, w, k, v, a, b))
        decay = torch.exp(w)  # (B, T, H, K)
        S = start_state(initial_state, r, B, H, K, V)  # (B, H, K, V)
        outs = []
        # unbind, not x[:, t]: indexing in the loop makes autograd build a full-size zero gradient per step
        for r_t, d_t, k_t, v_t, a_t, b_t in zip(*(x.unbind(1) for x in (r, decay, k, v, a, b))):
            aS = torch.einsum("bhk,bhkv->bhv", a_t, S)  # (B, H, V): a_t^T S_{t-1}
            S = (
                d_t[..., None] * S  # diag(exp(w_t)) S_{t-1}
                + b_t[..., None] * aS[:, :, None, :]  # b_t (a_t^T S_{t-1})
                + k_t[..., None] * v_t[:, :, None, :]  # k_t v_t^T
            )  # (B, H, K, V)
            outs.append(torch.einsum("bhk,bhkv->bhv", r_t, S) * scale)  # (B, H, V): S_t^T r_t
        o = torch.stack(outs, dim=1)  # (B, T, H, V)
    return o.to(out_dtype), (S if output_final_state else None)


# the recurrence as a loop over time in pure PyTorch, whatever the device (the reference of the tests)
naive_rwkv7 = functools.partial(rwkv7, backend="torch")
# the closed form, whatever the device and length
fast_rwkv7 = functools.partial(rwkv7, backend="fast")


def _rwkv7_fast(r, w, k, v, a, b, scale, S0, output_final_state, w_lower_bound):
    """The closed form of the module docstring; inputs (B, T, H, K|V) in one dtype, S0 (B, H, K, V) or None.
    Returns (o (B, T, H, V), the final state or None)."""
    T = r.shape[1]
    r, w, k, v, a, b = (x.transpose(1, 2) for x in (r, w, k, v, a, b))  # (B, H, T, K|V)
    c = w.cumsum(2)  # (B, H, T, K): log G_{0,t}
    c_prev = exclusive_cumsum(w, 2)  # log G_{0,t-1}
    if w_lower_bound is not None and T * -w_lower_bound <= FACTORED_MAX_LOG_DECAY:
        grow = torch.exp(-c)
        x = torch.cat((r * c.exp(), a * c_prev.exp()), dim=2)  # (B, H, 2T, K)
        y = torch.cat((k * grow, b * grow), dim=2)  # (B, H, 2T, K)
        M = x @ y.transpose(-1, -2)  # (B, H, 2T, 2T): [[A_rk, A_rb], [A_ak, A_ab]], unmasked
        lower = torch.ones(T, T, dtype=torch.bool, device=r.device).tril()
        A_rk, A_rb = (m.masked_fill(~lower, 0) for m in M[..., :T, :].split(T, dim=-1))
        A_ak, A_ab = (m.tril(-1) for m in M[..., T:, :].split(T, dim=-1))
    else:
        G = channel_segment_sums(w).exp()  # (B, H, T, T, K): G_{s,t} at [t, s]
        G_prev = F.pad(G[:, :, :-1], (0, 0, 0, 0, 1, 0))  # G_{s,t-1} at [t, s], 0 for s >= t
        A_rk, A_rb = (decayed_scores(r, y, G) for y in (k, b))
        A_ak, A_ab = (decayed_scores(a, y, G_prev) for y in (k, b))
    rhs = A_ak @ v  # (B, H, T, V)
    if S0 is not None:
        rhs = rhs + (a * c_prev.exp()) @ S0
    u = unit_lower_solve(A_ab, rhs)  # (B, H, T, V): u_t = S_{t-1}^T a_t
    o = A_rk @ v + A_rb @ u
    if S0 is not None:
        o = o + (r * c.exp()) @ S0
    o = (o * scale).transpose(1, 2)  # (B, T, H, V)
    if not output_final_state:
        return o, None
    to_end = suffix_sums(w, 2).exp()  # (B, H, T, K): G_{t,T}
    S = (k * to_end).transpose(-1, -2) @ v + (b * to_end).transpose(-1, -2) @ u  # (B, H, K, V)
    if S0 is not None:
        S = S + c[:, :, -1, :, None].exp() * S0
    return o, S
