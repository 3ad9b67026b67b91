"""Mamba-2's state space duality (SSD) layer (Dao & Gu 2024, "Transformers are SSMs: Generalized Models
and Efficient Algorithms Through Structured State Space Duality", sections 3 and 7), in its recurrent
form. A is one scalar per head; heads are grouped G ways for B and C (head h reads group h // (H / G)).
With Δ_t = softplus(dt_t + dt_bias) when asked:

    h_t[h, p, n] = exp(Δ_t[h] A[h]) h_{t-1}[h, p, n] + Δ_t[h] x_t[h, p] B_t[g(h), n]      h_0 = 0
    y_t[h, p]    = sum_n C_t[g(h), n] h_t[h, p, n] + D[h] x_t[h, p]

(The same map as causal "attention" y = (L ∘ C B^T) (Δ x) with the 1-semiseparable decay mask
L[t, s] = exp(A sum_{s<r<=t} Δ_r) for s <= t: what the chunked kernel computes block by block.)

Written for grokbench after reading, not copying, state-spaces/mamba's `ssd_minimal.py` and
`mamba2_simple.py` / `mamba2.py`, and transformers' `Mamba2Mixer.torch_forward` / `mamba2_chunk_scan`
(models/mamba2/modeling_mamba2.py). `ssd` dispatches to mamba-ssm's Triton kernel
`mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`, whose layout is the one used here:
x (B, T, H, P); dt (B, T, H); A (H,); B, C (B, T, G, N); D (H,) or (H, P); dt_bias (H,).

Fast form (backend "fast"; "auto" on the CPU up to FAST_MAX_SEQ_LEN tokens): that masked attention over the
whole sequence, one chunk of ssd_minimal.py's algorithm, with the decay mask from common.segment_sums.
"""

from __future__ import annotations

import functools

import torch

from ..backends import note, use_fast
from .common import compute_dtype, kernel_dtype, no_autocast, segment_sums, time_step, use_mamba_kernel

KERNEL_MODULE = "mamba_ssm.ops.triton.ssd_combined"
# Longest sequence `backend="auto"` runs the fast form for, where kernels do not run.
FAST_MAX_SEQ_LEN = 128


def ssd(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, chunk_size=256, backend="auto"
) -> torch.Tensor:
    """The recurrence above, (B, T, H, P) in x's dtype (the kernel's: common.kernel_dtype).

    The PyTorch loop runs in float32 (float64 for float64 x) except, under bf16 autocast, its per-step
    contraction with C, an einsum that autocast runs as a bfloat16 bmm; the fast form runs with autocast
    off, all of it in float32.
    mamba-ssm's chunked Triton kernel computes in float32 internally from x, B, C of one floating type
    (common.use_mamba_kernel: no float64); `chunk_size` only sets its tiling.
    """
    if use_mamba_kernel(backend, KERNEL_MODULE, x, "SSD"):
        note("ssd", "kernels")
        return _ssd_kernel(x, dt, A, B, C, D, dt_bias, dt_softplus, chunk_size)
    dtype = x.dtype
    f = compute_dtype(x)
    batch, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if H % G:
        raise ValueError(f"{H} heads cannot be split into {G} groups")
    fast = use_fast(backend, x, FAST_MAX_SEQ_LEN)
    note("ssd", "fast" if fast else "torch")
    if fast:
        with no_autocast(x):
            return _ssd_fast(x.to(f), dt.to(f), A.to(f), B.to(f), C.to(f), D, dt_bias, dt_softplus).to(dtype)
    x, dt, A = x.to(f), dt.to(f), A.to(f)
    B = B.to(f).repeat_interleave(H // G, dim=2)  # (B, T, H, N): head h reads group h // (H / G)
    C = C.to(f).repeat_interleave(H // G, dim=2)  # (B, T, H, N)
    dt = time_step(dt, dt_bias, dt_softplus)  # (B, T, H)
    dA = torch.exp(dt * A)  # (B, T, H): one decay per head and step
    dtx = (dt.unsqueeze(-1) * x).unsqueeze(-1)  # (B, T, H, P, 1): Δ x
    h = x.new_zeros(batch, H, P, N)  # (B, H, P, N)
    ys = []
    # unbind, not x[:, t]: indexing in the loop makes autograd build a full-size zero gradient per step
    for dA_t, dtx_t, B_t, C_t in zip(dA.unbind(1), dtx.unbind(1), B.unbind(1), C.unbind(1)):
        h = dA_t[:, :, None, None] * h + dtx_t * B_t[:, :, None, :]  # (B, H, P, N)
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C_t))  # (B, H, P)
    y = torch.stack(ys, dim=1)  # (B, T, H, P)
    if D is not None:
        D = D.to(f)
        y = y + x * (D[:, None] if D.dim() == 1 else D)  # (H, 1) or (H, P) skip
    return y.to(dtype)


# the loop over time, whatever the device and dtype (the reference of the tests)
naive_ssd = functools.partial(ssd, backend="torch")
# the masked-attention form, whatever the device and length
fast_ssd = functools.partial(ssd, backend="fast")


def _ssd_fast(x, dt, A, B, C, D, dt_bias, dt_softplus: bool) -> torch.Tensor:
    """y = (L o C B^T) (Δ x) + D x (module docstring), inputs in one dtype; (B, T, H, P)."""
    batch, T, H, P = x.shape
    G = B.shape[2]
    dt = time_step(dt, dt_bias, dt_softplus)  # (B, T, H)
    L = segment_sums((dt * A).transpose(1, 2)).exp()  # (B, H, T, T): exp(A sum_{s<r<=t} Δ_r), 0 for s > t
    CB = C.transpose(1, 2) @ B.permute(0, 2, 3, 1)  # (B, G, T, T): C_t . B_s per group
    M = L.view(batch, G, H // G, T, T) * CB[:, :, None]  # (B, G, H / G, T, T): head h in group h // (H / G)
    dtx = (dt[..., None] * x).transpose(1, 2)  # (B, H, T, P): Δ x
    y = (M.view(batch, H, T, T) @ dtx).transpose(1, 2)  # (B, T, H, P)
    if D is not None:
        D = D.to(x.dtype)
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    return y


def _ssd_kernel(x, dt, A, B, C, D, dt_bias, dt_softplus: bool, chunk_size: int) -> torch.Tensor:
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    dtype = kernel_dtype(x)  # C B^T is a tl.dot of C and B: one type for x, B, C
    return mamba_chunk_scan_combined(
        x.to(dtype),  # (B, T, H, P)
        dt.to(dtype),  # (B, T, H)
        A.float(),  # (H,)
        B.to(dtype),  # (B, T, G, N)
        C.to(dtype),  # (B, T, G, N)
        chunk_size,
        D=None if D is None else D.float(),
        dt_bias=None if dt_bias is None else dt_bias.float(),
        dt_softplus=dt_softplus,
    )  # (B, T, H, P)
