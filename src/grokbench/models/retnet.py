"""RetNet, multi-scale retention (Sun et al. 2023, "Retentive Network: A Successor to Transformer for Large
Language Models"), in plain PyTorch: linear attention with rotary positions on q and k and a fixed decay
1 - 2^(-5-h) per head h.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6:
fla/layers/multiscale_retention.py (MultiScaleRetention: the projections, the rotary embedding, the output
norm; the tests compare with it) and fla/models/retnet/modeling_retnet.py (RetNetForCausalLM). The
recurrence lives in ops/retention.py; the block, the model and the settings every linear-attention family
shares in modules.py (`LinearAttentionLM`).

The token mixer: q, k, v as GLA's (d_model * expand_k, d_model * expand_v wide, optional short
convolutions); rotary embeddings on q and k (GPT-NeoX half-split layout, base rope_theta = 10000, as fla's
RotaryEmbedding), computed in at least float32; retention; a per-head RMSNorm times silu(W_g x); the
output projection. The MLP is narrower than the other families' (hidden_ratio 2, as fla's RetNet).

Not implemented (off by default in fla): feature maps, grouped key/value heads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .backbone import check_positive
from .modules import LinearAttentionLM, QKVConfig, QKVMixer, apply_rope, rope_cos_sin
from .ops.retention import retention


@dataclass(kw_only=True)
class RetNetConfig(QKVConfig):
    expand_k: float = 1.0
    expand_v: float = 2.0
    hidden_ratio: float = 2.0
    use_output_gate: bool = True
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        head_k = self.key_dim // self.n_head
        if head_k % 2:
            raise ValueError(f"rotary embeddings need an even q/k head size, got {head_k}")
        check_positive(self, "rope_theta")


class RetNetMixer(QKVMixer):
    """Multi-scale retention (fla.layers.multiscale_retention.MultiScaleRetention)."""

    def __init__(self, config: RetNetConfig):
        super().__init__(config)
        self.rope_theta = config.rope_theta
        self.add_output(config, config.use_output_gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        q, k, v = (y.view(B, T, H, -1) for y in self.qkv(x))  # (B, T, H, K), (B, T, H, K), (B, T, H, V)
        cos, sin = rope_cos_sin(T, q.size(-1), self.rope_theta, device=x.device)  # (T, K): positions 0..T-1
        cos, sin = cos[:, None], sin[:, None]  # (T, 1, K): the same angles for every head
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = retention(q, k, v, backend=self.backend)  # (B, T, H, V)
        return self.output(x, o)  # (B, T, C)


class RetNet(LinearAttentionLM):
    config: RetNetConfig

    def mixers(self, config: RetNetConfig) -> Callable[[int], nn.Module]:
        return lambda i: RetNetMixer(config)
