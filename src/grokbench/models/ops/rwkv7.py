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
  fla/ops/generalized_delta_rule/dplr/naive.py (`dplr_recurrence`, the reference the tests compare with).
"""

from __future__ import annotations

import functools
import math

import torch

from ..backends import use_kernels
from .common import compute_dtype, needs_grad, no_autocast, start_state

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
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7

        w, k, v, a, b = (x.to(r.dtype) for x in (w, k, v, a, b))
        state = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
        if NO_GRAD_KERNEL == "fused_recurrent" and not needs_grad(r, w, k, v, a, b, initial_state):
            return fused_recurrent_rwkv7(r=r, w=w, k=k, v=v, a=a, b=b, **state)
        return chunk_rwkv7(
            r=r, w=w, k=k, v=v, a=a, b=b, **state, chunk_size=CHUNK_SIZE, lower_bound=w_lower_bound
        )
    out_dtype = r.dtype
    dtype = compute_dtype(r, v)
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
