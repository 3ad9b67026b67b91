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

Two pure-PyTorch forms (backends.py says which runs): the reference, a loop over time through autograd
(`naive_selective_scan`, what the tests compare with transformers), and the fast form (`fast_selective_scan`),
the same loop as one autograd Function with a hand-written backward. The decay exp(Δ A) differs per channel
and state index, so a closed form over time (h_t = sum_s (prod_r exp(Δ_r A)) Δ_s B_s u_s) needs T^2 / 2
such factors where the loop needs T: no parallel form beats the loop here; what costs is the number of
passes over the (batch, time, channels, state) tensors: about 40 through autograd (each step's products
saved, unbind / stack copies, the per-step C-contraction autocast to bfloat16), about 15 here.

Layout here: time second, as everywhere in grokbench: u, delta, z (B, T, E); A (E, N); B, C (B, T, N);
D, delta_bias (E,).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..backends import note, use_fast
from .common import compute_dtype, kernel_dtype, no_autocast, time_step, use_mamba_kernel

KERNEL_MODULE = "mamba_ssm.ops.selective_scan_interface"
# Longest sequence `backend="auto"` runs the fast form for, where kernels do not run (None: any length).
FAST_MAX_SEQ_LEN: int | None = None


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto"
) -> torch.Tensor:
    """The recurrence above, (B, T, E) in u's dtype (the kernel's: common.kernel_dtype).

    The PyTorch loop runs in float32 (float64 for float64 u) except, under bf16 autocast, its per-step
    contraction with C, an einsum that autocast runs as a bfloat16 bmm; the fast form runs with autocast
    off, all of it in float32.
    mamba-ssm's CUDA kernel takes (batch, channels, time) tensors of one floating type for u, delta, B, C,
    z (autocast's under autocast, common.kernel_dtype) and float32 A, D, delta_bias (common.use_mamba_kernel:
    no float64).
    """
    if use_mamba_kernel(backend, KERNEL_MODULE, u, "selective-scan"):
        note("selective_scan", "kernels")
        return _selective_scan_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    fast = use_fast(backend, u, FAST_MAX_SEQ_LEN)
    note("selective_scan", "fast" if fast else "torch")
    if fast:
        return _selective_scan_fast(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
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
# the fast form, whatever the device, length and dtype
fast_selective_scan = functools.partial(selective_scan, backend="fast")


def _selective_scan_fast(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool) -> torch.Tensor:
    """The reference's arithmetic around `_Scan` (the recurrence and its C-contraction), with autocast off:
    all of it in the compute dtype."""
    dtype = u.dtype
    f = compute_dtype(u)
    with no_autocast(u):
        u, delta, A, B, C = u.to(f), delta.to(f), A.to(f), B.to(f), C.to(f)
        delta = time_step(delta, delta_bias, delta_softplus)  # (B, T, E)
        y = _Scan.apply(delta, A, B, C, u)[0]  # (B, T, E)
        if D is not None:
            y = y + u * D.to(f)
        if z is not None:
            y = y * F.silu(z.to(f))
    return y.to(dtype)


class _Scan(torch.autograd.Function):
    """y_t[e] = sum_n C_t[n] h_t[e, n] with h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t (h_{-1} = 0), computed
    in place in two preallocated (B, T, E, N) tensors, the decays and the states, which the backward reuses.

    Backward, with G_t = dL/dh_t = gy_t C_t + exp(Δ_{t+1} A) G_{t+1} (a loop backwards in time) and
    P_t = G_t h_{t-1} exp(Δ_t A) = dL/d(Δ_t A) (P_0 = 0):
        dL/dC_t = sum_e gy_t h_t,   dL/d(Δu)_t = sum_n B_t G_t,   dL/dB_t = sum_e (Δu)_t G_t,
        dL/dΔ_t = sum_n A P_t + u_t dL/d(Δu)_t,   dL/dA = sum_{b,t} Δ_t P_t,   dL/du_t = Δ_t dL/d(Δu)_t.
    exp(Δ_0 A) is never needed (h_{-1} = 0), so it is not computed. The contractions are matrix products
    shaped (1, K) @ (K, M), the fast shape for these sizes on the CPU. Written in the functorch style
    (forward without ctx, setup_context), so vmap (train/packed.py) and torch.compile can trace it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(delta, A, B, C, u):
        T = u.shape[1]
        # (B, T-1, E, N): exp(Δ_t A) for t >= 1, as 2^(Δ_t A log2(e)) (exp2 is ~3x faster than exp on CPU;
        # log2(e) as a literal: a module constant here made dynamo fail to trace with dynamic shapes)
        dA = torch.mul(delta[:, 1:, :, None], A * 1.4426950408889634).exp2_()
        du = delta * u  # (B, T, E)
        h = torch.mul(du[..., None], B[:, :, None, :])  # (B, T, E, N): Δ_t u_t B_t, then the states
        for t in range(1, T):
            h[:, t].addcmul_(dA[:, t - 1], h[:, t - 1])  # h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t
        y = torch.matmul(C[:, :, None, :], h.transpose(-1, -2)).squeeze(2)  # (B, T, E): C_t . h_t
        return y, du, dA, h

    @staticmethod
    def setup_context(ctx, inputs, output):
        delta, A, B, C, u = inputs
        _, du, dA, h = output
        ctx.mark_non_differentiable(du, dA, h)
        ctx.set_materialize_grads(False)  # no zero gradients for those three
        ctx.save_for_backward(delta, A, B, C, u, du, dA, h)

    @staticmethod
    def backward(ctx, gy, *_):
        delta, A, B, C, u, du, dA, h = ctx.saved_tensors
        if gy is None:  # y unused
            return None, None, None, None, None
        batch, T, E = u.shape
        N = A.shape[1]
        g = torch.mul(gy[..., None], C[:, :, None, :])  # (B, T, E, N): gy_t C_t, then G_t
        for t in range(T - 2, -1, -1):
            g[:, t].addcmul_(dA[:, t], g[:, t + 1])  # G_t += exp(Δ_{t+1} A) G_{t+1}
        gC = torch.matmul(gy[:, :, None, :], h).squeeze(2)  # (B, T, N)
        gdu = torch.matmul(B[:, :, None, :], g.transpose(-1, -2)).squeeze(2)  # (B, T, E)
        gB = torch.matmul(du[:, :, None, :], g).squeeze(2)  # (B, T, N)
        g[:, 1:].mul_(h[:, :-1]).mul_(dA)  # P_t for t >= 1
        g[:, 0].zero_()  # P_0
        p = g.view(batch * T, E, N)
        # sum_n A[e, n] P_t[e, n] as E products (1, N) @ (N, B T)
        gdelta = torch.bmm(A[:, None, :], p.permute(1, 2, 0)).view(E, batch, T).permute(1, 2, 0)
        gdelta = gdelta + gdu * u  # (B, T, E)
        gA = g.mul_(delta[..., None]).sum((0, 1))  # (E, N); P is not needed any more
        return gdelta, gA, gB, gC, gdu * delta


def _selective_scan_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool) -> torch.Tensor:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    dtype = kernel_dtype(u)  # the kernel checks that delta, B, C (and z) share u's type

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
