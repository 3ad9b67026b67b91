"""GLA, gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training"), in plain PyTorch: a linear-attention state decayed per key channel by a
data-dependent forget gate from a low-rank projection.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6: fla/layers/gla.py
(GatedLinearAttention: the projections, the gate, the output norm; the tests compare with it) and
fla/models/gla/modeling_gla.py (GLAForCausalLM: the block, the MLP, the initialization). The recurrence
lives in ops/gla.py; the block, the model and the settings every linear-attention family shares (heads,
MLP width, initialization, precision) in modules.py (`LinearAttentionLM`).

The token mixer ("attn", fla's name): q, k (d_model * expand_k wide), v (d_model * expand_v), each through a
short convolution with SiLU with `use_short_conv`; the forget gate g = logsigmoid(W2 W1 x + b) /
gate_logit_normalizer with W1 of rank gate_low_rank_dim; the GLA recurrence; a per-head RMSNorm times a
swish output gate silu(W_g x) (the norm alone without `use_output_gate`); the output projection.

Not implemented (off by default in fla): feature maps, grouped key/value heads, clamp_min, value gates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import check_at_least, check_positive
from .modules import LinearAttentionLM, QKVConfig, QKVMixer, at_least_fp32
from .ops.gla import gla


@dataclass(kw_only=True)
class GLAConfig(QKVConfig):
    expand_k: float = 0.5
    expand_v: float = 1.0
    use_output_gate: bool = True  # swish output gate times the output norm (else the norm alone)
    gate_low_rank_dim: int = 16  # rank of the forget-gate projection
    gate_logit_normalizer: float = 16.0  # forget gate log = logsigmoid(.) / this

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "gate_low_rank_dim")
        check_positive(self, "gate_logit_normalizer")


class GLAMixer(QKVMixer):
    """Gated linear attention (fla.layers.gla.GatedLinearAttention)."""

    def __init__(self, config: GLAConfig):
        super().__init__(config)
        self.gate_logit_normalizer = config.gate_logit_normalizer
        # forget gate through a rank-`gate_low_rank_dim` bottleneck, with a bias on the way out
        self.gk_proj = nn.Sequential(
            nn.Linear(config.d_model, config.gate_low_rank_dim, bias=False),
            nn.Linear(config.gate_low_rank_dim, config.key_dim, bias=True),
        )
        self.add_output(config, config.use_output_gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        q, k, v = (y.view(B, T, H, -1) for y in self.qkv(x))  # (B, T, H, K), (B, T, H, K), (B, T, H, V)
        g = (
            F.logsigmoid(at_least_fp32(self.gk_proj(x))) / self.gate_logit_normalizer
        )  # (B, T, HK): log forget
        o = gla(q, k, v, g.view(B, T, H, -1), backend=self.backend)  # (B, T, H, V)
        return self.output(x, o)  # (B, T, C)


class GLA(LinearAttentionLM):
    config: GLAConfig

    def mixers(self, config: GLAConfig) -> Callable[[int], nn.Module]:
        return lambda i: GLAMixer(config)
