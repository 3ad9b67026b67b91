"""HGRN2 (Qin et al. 2024, "HGRN2: Gated Linear RNNs with State Expansion") in plain PyTorch: GLA whose keys
are 1 - forget gate, with forget-gate lower bounds that grow with depth.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6: fla/layers/hgrn2.py
(HGRN2Attention: the projections, the gates, the output norm; the tests compare with it) and
fla/models/hgrn2/modeling_hgrn2.py (HGRN2ForCausalLM: its lower bounds). The recurrence is GLA's
(ops/gla.py); the block, the model and the settings every linear-attention family shares live in
modules.py (`LinearAttentionLM`).

The token mixer: q = silu(W_q x), forget gate f = sigmoid(W_f x) raised to the layer's lower bound
(f <- lb + (1 - lb) f), k = 1 - f, v = W_i x (each projection through a short convolution, no SiLU, with
`use_short_conv`); the GLA recurrence; an RMSNorm over the whole width; the output projection.

Choices, where fla leaves room:
- Heads: d_model / n_head for both the forget (key) and input (value) head size (fla's `num_heads` form; its
  default `expand_ratio=128`, i.e. d_model / 128 heads, suits 2048-wide models).
- The lower bounds (fla: a model parameter, softmax over layers, cumulated, minus the first) are one module
  shared by the mixers of all layers; layer i reads row i, and layer 0's bound is 0 (no bound). With
  share="all" the one shared block is layer 0, so there is no lower bound at any depth (and no lower-bound
  parameter).
- The output norm's eps is 1e-5 whatever norm_eps says, as fla's HGRN2 layer in effect uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modules import LinearAttentionConfig, LinearAttentionLM, RMSNorm, at_least_fp32, project, short_conv
from .ops.gla import gla

HGRN2_OUTPUT_NORM_EPS = 1e-5


@dataclass(kw_only=True)
class HGRN2Config(LinearAttentionConfig):
    use_lower_bound: bool = True  # forget-gate lower bounds increasing with depth

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")


class HGRN2LowerBounds(nn.Module):
    """HGRN's forget-gate lower bounds per layer and channel: softmax over the layers of learned logits
    (zeros at init), cumulated and minus the first, so layer 0 gets 0 and the bound grows with depth."""

    def __init__(self, n_layer: int, dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layer, dim))

    def forward(self) -> torch.Tensor:
        p = self.logits.softmax(0, dtype=torch.promote_types(self.logits.dtype, torch.float32))
        return p.cumsum(0) - p[0]  # (n_layer, dim), in [0, 1)


class HGRN2Mixer(nn.Module):
    """HGRN2's token mixer (fla.layers.hgrn2.HGRN2Attention), run through the GLA operator."""

    def __init__(self, config: HGRN2Config, layer_idx: int, lower_bounds: HGRN2LowerBounds | None):
        super().__init__()
        d, H = config.d_model, config.n_head
        self.n_head, self.backend, self.layer_idx = H, config.backend, layer_idx
        self.q_proj = nn.Linear(d, d, bias=False)
        self.f_proj = nn.Linear(d, d, bias=False)  # forget gate
        self.i_proj = nn.Linear(d, d, bias=False)  # input (the values)
        self.q_conv1d = short_conv(config, d, silu=False)
        self.f_conv1d = short_conv(config, d, silu=False)
        self.i_conv1d = short_conv(config, d, silu=False)
        self.lower_bounds = lower_bounds  # shared by the mixers of every layer
        # over the whole width, not per head; eps 1e-5 whatever norm_eps says, as fla's layer (its fused
        # rms_norm_linear is called without an eps and defaults to 1e-5)
        self.o_norm = RMSNorm(d, HGRN2_OUTPUT_NORM_EPS, fla=True)
        self.o_proj = nn.Linear(d, d, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_head
        q = F.silu(project(x, self.q_proj, self.q_conv1d))  # (B, T, C)
        f = project(x, self.f_proj, self.f_conv1d)  # (B, T, C)
        v = project(x, self.i_proj, self.i_conv1d)  # (B, T, C)
        g = F.logsigmoid(at_least_fp32(f))  # log forget gate
        if self.lower_bounds is not None and self.layer_idx > 0:  # layer 0's bound is 0: no bound
            lb = self.lower_bounds()[self.layer_idx].to(g.dtype)  # (C,), in (0, 1)
            g = torch.logaddexp(lb.log(), torch.log1p(-lb) + g)  # forget gate lb + (1 - lb) f, as a log
        k = -torch.expm1(g)  # keys: 1 - forget gate
        q, k, g, v = (y.view(B, T, H, -1) for y in (q, k, g, v))  # (B, T, H, C/H) each
        o = gla(q, k, v, g, backend=self.backend)  # (B, T, H, C/H)
        return self.o_proj(self.o_norm(o.reshape(B, T, C)))  # (B, T, C)


class HGRN2(LinearAttentionLM):
    config: HGRN2Config

    def mixers(self, config: HGRN2Config) -> Callable[[int], nn.Module]:
        # one module for every layer (layer 0 reads a bound of 0: none); with share="all" only layer 0 is
        # built, so there is none
        used = config.use_lower_bound and config.n_layer > 1 and config.share != "all"
        bounds = HGRN2LowerBounds(config.n_layer, config.d_model) if used else None
        return lambda i: HGRN2Mixer(config, i, bounds)
