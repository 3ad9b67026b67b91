"""Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule") and DeltaNet
(Schlag et al. 2021; Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence
Length"), in plain PyTorch: the delta rule, a state that corrects its prediction for k_t towards v_t, with
(`gated`) or without a data-dependent decay per head.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6:
fla/layers/gated_deltanet.py and fla/layers/delta_net.py (GatedDeltaNet, DeltaNet: the projections, the
convolutions, beta, the decay and its initialization, the output norm; the tests compare with them) and
fla/models/{gated_deltanet,delta_net}/modeling_*.py. The recurrence lives in ops/delta_rule.py; the block,
the model and the settings every linear-attention family shares in modules.py (`LinearAttentionLM`).

The token mixer: q, k, v = silu(short_conv(W x)) (silu(W x) without the convolution); q and k
L2-normalized per head (eps 1e-6, as fla's l2norm); beta = sigmoid(W_b x), one per head; with `gated`, the
log decay g = -exp(A_log) * softplus(W_a x + dt_bias) (Mamba-2's parametrization, A_log and dt_bias
initialized as fla); the delta rule; a per-head RMSNorm times silu(W_g x) (`use_output_gate`) or the plain
norm; the output projection.

Choices, where fla leaves room or does more:
- Heads: q/k and v are d_model * expand_k and d_model * expand_v wide, in n_head heads (fla's GatedDeltaNet
  takes head_dim instead: here head_dim = expand_k * d_model / n_head).
- `gated=False` keeps Gated DeltaNet's other settings (expand_v=2, output gate on); fla's DeltaNet layer
  defaults to expand_v=1 and no output gate (set `expand_v=1.0, use_output_gate=false`).
- The L2 norm of q/k, the sigmoid of beta and the decay are computed in PyTorch, not fused into the kernels
  (fla's use_qk_l2norm_in_kernel / use_gate_in_kernel): the same math.
- Not implemented: sum-norm and non-silu q/k activations, use_beta=False, grouped value heads.
  `allow_neg_eigval` (beta in (0, 2), Grazzi et al. 2025) is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modules import LinearAttentionLM, QKVConfig, QKVMixer, at_least_fp32, dt_bias_init, l2_norm
from .ops.delta_rule import gated_delta_rule


@dataclass(kw_only=True)
class DeltaNetConfig(QKVConfig):
    gated: bool = True  # Gated DeltaNet; False: DeltaNet (no decay)
    expand_k: float = 1.0
    expand_v: float = 2.0
    use_short_conv: bool = True
    use_output_gate: bool = True
    allow_neg_eigval: bool = False  # beta in (0, 2) instead of (0, 1) (Grazzi et al. 2025)


class DeltaNetMixer(QKVMixer):
    """Gated DeltaNet (fla.layers.gated_deltanet.GatedDeltaNet); DeltaNet (fla.layers.delta_net.DeltaNet)
    without the decay."""

    def __init__(self, config: DeltaNetConfig):
        super().__init__(config)
        d, H = config.d_model, config.n_head
        self.allow_neg_eigval = config.allow_neg_eigval
        self.b_proj = nn.Linear(d, H, bias=False)  # beta, one per head
        if config.gated:
            self.a_proj = nn.Linear(d, H, bias=False)  # decay input, one per head
            # Mamba-2's decay parametrization, initialized as fla: A ~ U(0, 16), dt log-uniform in
            # [1e-3, 0.1] (floor 1e-4) stored through the inverse softplus
            self.A_log = nn.Parameter(torch.empty(H).uniform_(0, 16).log())
            self.dt_bias = nn.Parameter(dt_bias_init(H, 1e-3, 0.1))
        else:
            self.a_proj = self.A_log = self.dt_bias = None
        self.add_output(config, config.use_output_gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        q, k, v = self.qkv(x, act=F.silu)  # (B, T, key_dim), (B, T, key_dim), (B, T, value_dim)
        q, k = l2_norm(q.view(B, T, H, -1)), l2_norm(k.view(B, T, H, -1))  # (B, T, H, K)
        v = v.view(B, T, H, -1)  # (B, T, H, V)
        beta = torch.sigmoid(at_least_fp32(self.b_proj(x)))  # (B, T, H)
        if self.allow_neg_eigval:
            beta = 2 * beta
        g = None
        if self.A_log is not None:
            a = at_least_fp32(self.a_proj(x))  # (B, T, H)
            g = -self.A_log.to(a.dtype).exp() * F.softplus(a + self.dt_bias.to(a.dtype))  # log decay
        o = gated_delta_rule(q, k, v, beta, g, backend=self.backend)  # (B, T, H, V)
        return self.output(x, o)  # (B, T, C)


class DeltaNet(LinearAttentionLM):
    config: DeltaNetConfig

    def mixers(self, config: DeltaNetConfig) -> Callable[[int], nn.Module]:
        return lambda i: DeltaNetMixer(config)
