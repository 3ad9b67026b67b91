"""Mamba-1's selective scan (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces", Algorithm 2 and eq. 2a/2b with zero-order-hold A and Euler B, as the authors' code discretizes).

For every channel e and state index n, with Δ_t = softplus(delta_t + delta_bias) when asked:

    h_t[e, n] = exp(Δ_t[e] A[e, n]) h_{t-1}[e, n] + Δ_t[e] B_t[n] u_t[e]        h_0 = 0
    y_t[e]    = sum_n C_t[n] h_t[e, n] + D[e] u_t[e]
    out_t[e]  = y_t[e] * silu(z_t[e])                                           (when z is given)

Written for grokbench after reading, not copying, state-spaces/mamba's `selective_scan_ref`
(mamba_ssm/ops/selective_scan_interface.py) and transformers' `MambaMixer.slow_forward` /
`mamba_selective_scan` (models/mamba/modeling_mamba.py). `selective_scan` dispatches to mamba-ssm's CUDA
kernel `mamba_ssm.ops.selective_scan_interface.selective_scan_fn`, which takes the same arguments in a
(batch, channels, time) layout.

Layout here: time second, as everywhere in grokbench: u, delta, z (B, T, E); A (E, N); B, C (B, T, N);
D, delta_bias (E,).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .common import compute_dtype, time_step, use_mamba_kernel

KERNEL_MODULE = "mamba_ssm.ops.selective_scan_interface"


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto"
) -> torch.Tensor:
    """The recurrence above, (B, T, E) in u's dtype.

    The PyTorch loop has only elementwise ops and sums: bf16 autocast leaves them in full precision.
    mamba-ssm's CUDA kernel takes (batch, channels, time) tensors of one floating type for u, delta, B, C,
    z and float32 A, D, delta_bias (common.use_mamba_kernel: no float64).
    """
    if use_mamba_kernel(backend, KERNEL_MODULE, u, "selective-scan"):
        return _selective_scan_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype = u.dtype
    f = compute_dtype(u)
    batch, T, E = u.shape
    N = A.shape[1]
    u, delta, A, B, C = u.to(f), delta.to(f), A.to(f), B.to(f), C.to(f)
    delta = time_step(delta, delta_bias, delta_softplus)  # (B, T, E)
    dA = torch.exp(delta.unsqueeze(-1) * A)  # (B, T, E, N): exp(Δ A), zero-order hold
    dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, N): Δ B u
    h = u.new_zeros(batch, E, N)  # (B, E, N)
    ys = []
    # unbind, not dA[:, t]: indexing in the loop makes autograd build a full-size zero gradient per step
    for dA_t, dBu_t, C_t in zip(dA.unbind(1), dBu.unbind(1), C.unbind(1)):
        h = dA_t * h + dBu_t  # (B, E, N)
        ys.append(torch.einsum("ben,bn->be", h, C_t))  # (B, E): C_t . h_t per channel
    y = torch.stack(ys, dim=1)  # (B, T, E)
    if D is not None:
        y = y + u * D.to(f)
    if z is not None:
        y = y * F.silu(z.to(f))
    return y.to(dtype)


# the loop over time, whatever the device and dtype (the reference of the tests)
naive_selective_scan = functools.partial(selective_scan, backend="torch")


def _selective_scan_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool) -> torch.Tensor:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    dtype = u.dtype  # the kernel checks that delta, B, C (and z) share u's type

    def channels_first(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype).transpose(1, 2)  # (B, T, X) -> (B, X, T); the kernel makes it contiguous

    y = selective_scan_fn(
        channels_first(u),  # (B, E, T)
        channels_first(delta),  # (B, E, T)
        A.float(),  # (E, N)
        channels_first(B),  # (B, N, T)
        channels_first(C),  # (B, N, T)
        D=None if D is None else D.float(),
        z=None if z is None else channels_first(z),
        delta_bias=None if delta_bias is None else delta_bias.float(),
        delta_softplus=delta_softplus,
    )  # (B, E, T)
    return y.transpose(1, 2)  # (B, T, E)
