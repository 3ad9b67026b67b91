"""Linear-attention families of flash-linear-attention (fla) in plain PyTorch: GLA, RetNet, (Gated)
DeltaNet and HGRN2.

- GLA, gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
  Hardware-Efficient Training"): a linear-attention state decayed per key channel by a data-dependent
  forget gate from a low-rank projection;
- RetNet, multi-scale retention (Sun et al. 2023, "Retentive Network"): linear attention with rotary
  positions on q and k and a fixed decay 1 - 2^(-5-h) per head h;
- Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule"): the delta
  rule (a state that corrects its prediction for k_t towards v_t) with a data-dependent decay per head,
  L2-normalized q and k, and short causal convolutions; `gated=False` is DeltaNet (Schlag et al. 2021,
  Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length");
- HGRN2 (Qin et al. 2024, "HGRN2: Gated Linear RNNs with State Expansion"): GLA whose keys are
  1 - forget gate, with forget-gate lower bounds that grow with depth.

Written for grokbench after reading, not copying, fla-org/flash-linear-attention 0.6: the layers
fla/layers/{gla,multiscale_retention,gated_deltanet,delta_net,hgrn2}.py (projections, feature maps,
gates, norms: the math each mixer below reproduces; the tests compare with these layers) and the models
fla/models/{gla,retnet,gated_deltanet,delta_net,hgrn2}/modeling_*.py (the block, the MLP, the
initialization, HGRN2's lower bounds). The recurrences themselves live in ops/gla.py (GLA, HGRN2),
ops/retention.py and ops/delta_rule.py.

Every family shares one block, as fla's models do: x + mixer(RMSNorm(x)), then x + mlp(RMSNorm(x)) with
a SwiGLU MLP `down(silu(gate(x)) * up(x))`; a token embedding, no position embedding, a final RMSNorm and
an LM head. Per family, the token mixer ("attn", fla's name):

- GLA: q, k (d_model * expand_k), v (d_model * expand_v); forget gate
  g = logsigmoid(W2 W1 x + b) / gate_logit_normalizer with W1 of rank gate_low_rank_dim; the GLA
  recurrence (ops/gla.py); per-head RMSNorm times a swish output gate silu(W_g x); output projection.
- RetNet: q, k, v as GLA; rotary embeddings on q and k (GPT-NeoX half-split layout, base 10000, as fla's
  RotaryEmbedding); retention (ops/retention.py); per-head RMSNorm times silu(W_g x); output projection.
- DeltaNet: q, k, v = silu(short_conv(W x)) (silu(W x) without the convolution); q and k L2-normalized
  per head; beta = sigmoid(W_b x); with `gated`, the log decay g = -exp(A_log) * softplus(W_a x + dt_bias)
  (Mamba-2's parametrization, A_log and dt_bias initialized as fla); the delta rule (ops/delta_rule.py);
  per-head RMSNorm times silu(W_g x) (`use_output_gate`) or the plain norm; output projection.
- HGRN2: q = silu(W_q x), forget gate f = sigmoid(W_f x) raised to the layer's lower bound
  (f <- lb + (1 - lb) f), k = 1 - f, v = W_i x; the GLA recurrence; RMSNorm over the whole width;
  output projection.

Choices and simplifications, where fla leaves room or does more:
- Heads: every family takes `n_head`; GLA/RetNet/DeltaNet size q/k and v as d_model * expand_k and
  d_model * expand_v (fla's GatedDeltaNet takes head_dim instead: here head_dim = expand_k * d_model /
  n_head). HGRN2 uses d_model / n_head for both the forget (key) and input (value) head size (fla's
  `num_heads` form; its default `expand_ratio=128`, i.e. d_model / 128 heads, suits 2048-wide models).
- DeltaNet with `gated=False` keeps Gated DeltaNet's other settings (expand_v=2, output gate on); fla's
  DeltaNet layer defaults to expand_v=1 and no output gate (set `expand_v=1.0, use_output_gate=false`).
- Not implemented (off by default in fla): GLA/RetNet feature maps, grouped key/value heads, GLA's
  clamp_min and value gates, DeltaNet's sum-norm / non-silu q-k activations and use_beta=False,
  Gated DeltaNet's grouped value heads. `allow_neg_eigval` (beta in (0, 2)) is kept.
- The L2 norm of q/k, the sigmoid of beta and the decay are computed in PyTorch, not fused into the
  kernels (fla's use_qk_l2norm_in_kernel / use_gate_in_kernel): same math, eps 1e-6 as fla's l2norm.
- HGRN2's lower bounds (fla: a model parameter, softmax over layers, cumulated, minus the first) are one
  module shared by the mixers of all layers; layer i reads row i, and layer 0's bound is 0 (no bound).
  With share="all" the one shared block is layer 0, so there is no lower bound at any depth (and no
  lower-bound parameter).
- MLP hidden size: `mlp_hidden` if given, else int(hidden_ratio * d_model * 2 / 3) rounded up to a
  multiple of `multiple_of` (fla: of 256, which inflates the MLP at the study's widths; 32 here as in
  our Llama). hidden_ratio defaults as fla's models: 4, RetNet 2.
- Initialization: fla's (N(0, 0.02) for Linear, convolution and embedding weights, zero biases, norm
  gains 1), plus the residual projections (o_proj, down_proj) at std 0.02 / sqrt(2 * n_layer) as our GPT
  and Llama (fla's prenorm_residual_strategy="rescale" scales them the same way; its default does not).
- Precision: the recurrences run in float32 (float64 for float64 inputs) with autocast off; the norms,
  the gates' logsigmoid / softplus, the L2 norm and the rotary rotation in at least float32.
- norm_eps 1e-6 for every RMSNorm, as fla's model configs, except HGRN2's output norm: 1e-5, as fla's
  HGRN2 layer in effect uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, BackboneConfig
from .backends import check_backend
from .ops.delta_rule import gated_delta_rule
from .ops.gla import gla
from .ops.retention import retention

# --- configs --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class LinearAttentionConfig(BackboneConfig):
    """Keys every linear-attention family shares."""

    n_head: int = 4
    use_short_conv: bool = False  # short causal depthwise convolutions after the q/k/v projections
    conv_size: int = 4  # their kernel size
    hidden_ratio: float = 4.0  # SwiGLU hidden size ~ hidden_ratio * 2/3 * d_model
    mlp_hidden: int | None = None  # SwiGLU hidden size; None: from hidden_ratio and multiple_of
    multiple_of: int = 32  # rounding of the default mlp_hidden
    norm_eps: float = 1e-6
    backend: str = "auto"  # auto | torch | kernels (backends.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_head", "conv_size", "multiple_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise ValueError(f"mlp_hidden must be >= 1 (or None), got {self.mlp_hidden}")
        if not self.hidden_ratio > 0:
            raise ValueError(f"hidden_ratio must be > 0, got {self.hidden_ratio}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        check_backend(self.backend)

    @property
    def mlp_hidden_size(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        hidden = int(self.hidden_ratio * self.d_model * 2 / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


@dataclass(kw_only=True)
class _QKVConfig(LinearAttentionConfig):
    """Families with q/k of width d_model * expand_k and v of width d_model * expand_v, split in heads."""

    expand_k: float = 1.0
    expand_v: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("expand_k", "expand_v"):
            width = self.d_model * getattr(self, name)
            if not (width > 0 and width == round(width) and round(width) % self.n_head == 0):
                raise ValueError(
                    f"{name}: d_model * {name} = {width:g} must be a positive integer divisible by "
                    f"n_head ({self.n_head})"
                )

    @property
    def key_dim(self) -> int:
        return round(self.d_model * self.expand_k)

    @property
    def value_dim(self) -> int:
        return round(self.d_model * self.expand_v)


@dataclass(kw_only=True)
class GLAConfig(_QKVConfig):
    expand_k: float = 0.5
    expand_v: float = 1.0
    use_output_gate: bool = True  # swish output gate times the output norm (else the norm alone)
    gate_low_rank_dim: int = 16  # rank of the forget-gate projection
    gate_logit_normalizer: float = 16.0  # forget gate log = logsigmoid(.) / this

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate_low_rank_dim < 1:
            raise ValueError(f"gate_low_rank_dim must be >= 1, got {self.gate_low_rank_dim}")
        if not self.gate_logit_normalizer > 0:
            raise ValueError(f"gate_logit_normalizer must be > 0, got {self.gate_logit_normalizer}")


@dataclass(kw_only=True)
class RetNetConfig(_QKVConfig):
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
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")


@dataclass(kw_only=True)
class DeltaNetConfig(_QKVConfig):
    gated: bool = True  # Gated DeltaNet; False: DeltaNet (no decay)
    expand_k: float = 1.0
    expand_v: float = 2.0
    use_short_conv: bool = True
    use_output_gate: bool = True
    allow_neg_eigval: bool = False  # beta in (0, 2) instead of (0, 1) (Grazzi et al. 2025)


@dataclass(kw_only=True)
class HGRN2Config(LinearAttentionConfig):
    use_lower_bound: bool = True  # forget-gate lower bounds increasing with depth

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")


# --- shared pieces ----------------------------------------------------------------------------------


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, optionally times silu(gate) (fla's FusedRMSNormGated with its
    default swish activation), computed in at least float32 and cast back to x's dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        h = _upcast(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(h.dtype)
        if gate is not None:
            h = h * F.silu(gate.to(h.dtype))
        return h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class ShortConv(nn.Conv1d):
    """Causal depthwise convolution over time, (B, T, D) -> (B, T, D), optionally followed by SiLU.
    The parameter layout of fla's ShortConvolution (an nn.Conv1d with groups=D, no bias by default)."""

    def __init__(self, dim: int, kernel_size: int, silu: bool):
        super().__init__(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1, bias=False)
        self.silu = silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.size(1)
        # padding k-1 on both sides; the first T outputs see inputs t-k+1..t only (causal)
        y = super().forward(x.transpose(1, 2))[..., :T].transpose(1, 2)  # (B, T, D)
        return F.silu(y) if self.silu else y


def _short_conv(config: LinearAttentionConfig, dim: int, silu: bool) -> ShortConv | None:
    return ShortConv(dim, config.conv_size, silu) if config.use_short_conv else None


def _project(x: torch.Tensor, proj: nn.Linear, conv: ShortConv | None) -> torch.Tensor:
    """proj(x), through the short convolution where there is one."""
    y = proj(x)
    return y if conv is None else conv(y)


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dimension (fla's l2norm), in at least float32."""
    h = _upcast(x)
    return (h * torch.rsqrt(h.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of x (B, T, H, D) at positions 0..T-1, half-split
    layout (dimension i pairs with i + D/2, fla's default `interleaved=False`), in at least float32."""
    T, D = x.shape[1], x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)  # (D/2,)
    angles = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # (T, D/2)
    cos = angles.cos().to(dtype)[:, None, :]  # (T, 1, D/2)
    sin = angles.sin().to(dtype)[:, None, :]
    x1, x2 = _upcast(x).chunk(2, dim=-1)  # (B, T, H, D/2) each
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020; fla's GatedMLP with hidden_act="swish")."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


# --- token mixers -----------------------------------------------------------------------------------


class GLAMixer(nn.Module):
    """Gated linear attention (fla.layers.gla.GatedLinearAttention)."""

    def __init__(self, config: GLAConfig):
        super().__init__()
        d, H = config.d_model, config.n_head
        self.n_head, self.backend = H, config.backend
        self.gate_logit_normalizer = config.gate_logit_normalizer
        self.q_proj = nn.Linear(d, config.key_dim, bias=False)
        self.k_proj = nn.Linear(d, config.key_dim, bias=False)
        self.v_proj = nn.Linear(d, config.value_dim, bias=False)
        self.q_conv1d = _short_conv(config, config.key_dim, silu=True)
        self.k_conv1d = _short_conv(config, config.key_dim, silu=True)
        self.v_conv1d = _short_conv(config, config.value_dim, silu=True)
        # forget gate through a rank-`gate_low_rank_dim` bottleneck, with a bias on the way out
        self.gk_proj = nn.Sequential(
            nn.Linear(d, config.gate_low_rank_dim, bias=False),
            nn.Linear(config.gate_low_rank_dim, config.key_dim, bias=True),
        )
        self.g_proj = nn.Linear(d, config.value_dim, bias=False) if config.use_output_gate else None
        self.o_norm = RMSNorm(config.value_dim // H, config.norm_eps)  # per head
        self.o_proj = nn.Linear(config.value_dim, d, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        q = _project(x, self.q_proj, self.q_conv1d).view(B, T, H, -1)  # (B, T, H, K)
        k = _project(x, self.k_proj, self.k_conv1d).view(B, T, H, -1)  # (B, T, H, K)
        v = _project(x, self.v_proj, self.v_conv1d).view(B, T, H, -1)  # (B, T, H, V)
        g = F.logsigmoid(_upcast(self.gk_proj(x))) / self.gate_logit_normalizer  # (B, T, HK): log forget
        o = gla(q, k, v, g.view(B, T, H, -1), backend=self.backend)  # (B, T, H, V)
        gate = None if self.g_proj is None else self.g_proj(x).view(B, T, H, -1)
        o = self.o_norm(o, gate)  # (B, T, H, V)
        return self.o_proj(o.reshape(B, T, -1))  # (B, T, C)


class RetNetMixer(nn.Module):
    """Multi-scale retention (fla.layers.multiscale_retention.MultiScaleRetention)."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        d, H = config.d_model, config.n_head
        self.n_head, self.backend, self.rope_theta = H, config.backend, config.rope_theta
        self.q_proj = nn.Linear(d, config.key_dim, bias=False)
        self.k_proj = nn.Linear(d, config.key_dim, bias=False)
        self.v_proj = nn.Linear(d, config.value_dim, bias=False)
        self.q_conv1d = _short_conv(config, config.key_dim, silu=True)
        self.k_conv1d = _short_conv(config, config.key_dim, silu=True)
        self.v_conv1d = _short_conv(config, config.value_dim, silu=True)
        self.g_proj = nn.Linear(d, config.value_dim, bias=False) if config.use_output_gate else None
        self.o_norm = RMSNorm(config.value_dim // H, config.norm_eps)  # per head
        self.o_proj = nn.Linear(config.value_dim, d, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        q = _project(x, self.q_proj, self.q_conv1d).view(B, T, H, -1)  # (B, T, H, K)
        k = _project(x, self.k_proj, self.k_conv1d).view(B, T, H, -1)  # (B, T, H, K)
        v = _project(x, self.v_proj, self.v_conv1d).view(B, T, H, -1)  # (B, T, H, V)
        q, k = rotary(q, self.rope_theta), rotary(k, self.rope_theta)
        o = retention(q, k, v, backend=self.backend)  # (B, T, H, V)
        gate = None if self.g_proj is None else self.g_proj(x).view(B, T, H, -1)
        o = self.o_norm(o, gate)  # (B, T, H, V)
        return self.o_proj(o.reshape(B, T, -1))  # (B, T, C)


class DeltaNetMixer(nn.Module):
    """Gated DeltaNet (fla.layers.gated_deltanet.GatedDeltaNet); DeltaNet (fla.layers.delta_net.DeltaNet)
    without the decay."""

    def __init__(self, config: DeltaNetConfig):
        super().__init__()
        d, H = config.d_model, config.n_head
        self.n_head, self.backend = H, config.backend
        self.allow_neg_eigval = config.allow_neg_eigval
        self.q_proj = nn.Linear(d, config.key_dim, bias=False)
        self.k_proj = nn.Linear(d, config.key_dim, bias=False)
        self.v_proj = nn.Linear(d, config.value_dim, bias=False)
        self.q_conv1d = _short_conv(config, config.key_dim, silu=True)
        self.k_conv1d = _short_conv(config, config.key_dim, silu=True)
        self.v_conv1d = _short_conv(config, config.value_dim, silu=True)
        self.b_proj = nn.Linear(d, H, bias=False)  # beta, one per head
        if config.gated:
            self.a_proj = nn.Linear(d, H, bias=False)  # decay input, one per head
            # Mamba-2's decay parametrization, initialized as fla: A ~ U(0, 16), dt log-uniform in
            # [1e-3, 0.1] (floor 1e-4) stored through the inverse softplus
            self.A_log = nn.Parameter(torch.empty(H).uniform_(0, 16).log())
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        else:
            self.a_proj = self.A_log = self.dt_bias = None
        self.g_proj = nn.Linear(d, config.value_dim, bias=False) if config.use_output_gate else None
        self.o_norm = RMSNorm(config.value_dim // H, config.norm_eps)  # per head
        self.o_proj = nn.Linear(config.value_dim, d, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        q, k, v = (
            _project(x, proj, conv) if conv is not None else F.silu(proj(x))
            for proj, conv in (
                (self.q_proj, self.q_conv1d),
                (self.k_proj, self.k_conv1d),
                (self.v_proj, self.v_conv1d),
            )
        )
        q, k = l2_norm(q.view(B, T, H, -1)), l2_norm(k.view(B, T, H, -1))  # (B, T, H, K)
        v = v.view(B, T, H, -1)  # (B, T, H, V)
        beta = torch.sigmoid(_upcast(self.b_proj(x)))  # (B, T, H)
        if self.allow_neg_eigval:
            beta = 2 * beta
        g = None
        if self.A_log is not None:
            a = _upcast(self.a_proj(x))  # (B, T, H)
            g = -self.A_log.to(a.dtype).exp() * F.softplus(a + self.dt_bias.to(a.dtype))  # log decay
        o = gated_delta_rule(q, k, v, beta, g, backend=self.backend)  # (B, T, H, V)
        gate = None if self.g_proj is None else self.g_proj(x).view(B, T, H, -1)
        o = self.o_norm(o, gate)  # (B, T, H, V)
        return self.o_proj(o.reshape(B, T, -1))  # (B, T, C)


HGRN2_OUTPUT_NORM_EPS = 1e-5


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
        self.q_conv1d = _short_conv(config, d, silu=False)
        self.f_conv1d = _short_conv(config, d, silu=False)
        self.i_conv1d = _short_conv(config, d, silu=False)
        self.lower_bounds = lower_bounds  # shared by the mixers of every layer
        # over the whole width, not per head; eps 1e-5 whatever norm_eps says, as fla's layer (its fused
        # rms_norm_linear is called without an eps and defaults to 1e-5)
        self.o_norm = RMSNorm(d, HGRN2_OUTPUT_NORM_EPS)
        self.o_proj = nn.Linear(d, d, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_head
        q = F.silu(_project(x, self.q_proj, self.q_conv1d))  # (B, T, C)
        f = _project(x, self.f_proj, self.f_conv1d)  # (B, T, C)
        v = _project(x, self.i_proj, self.i_conv1d)  # (B, T, C)
        g = F.logsigmoid(_upcast(f))  # log forget gate
        if self.lower_bounds is not None and self.layer_idx > 0:  # layer 0's bound is 0: no bound
            lb = self.lower_bounds()[self.layer_idx].to(g.dtype)  # (C,), in (0, 1)
            g = torch.logaddexp(lb.log(), torch.log1p(-lb) + g)  # forget gate lb + (1 - lb) f, as a log
        k = -torch.expm1(g)  # keys: 1 - forget gate
        q, k, g, v = (y.view(B, T, H, -1) for y in (q, k, g, v))  # (B, T, H, C/H) each
        o = gla(q, k, v, g, backend=self.backend)  # (B, T, H, C/H)
        return self.o_proj(self.o_norm(o.reshape(B, T, C)))  # (B, T, C)


# --- block and model --------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-RMSNorm block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)) (fla's *Block)."""

    def __init__(self, config: LinearAttentionConfig, mixer: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = mixer
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))  # (B, T, C)
        return x + self.mlp(self.mlp_norm(x))  # (B, T, C)


class LinearAttentionLM(Backbone):
    """Embedding -> blocks -> RMSNorm -> LM head; a family provides `mixers(config)`."""

    config: LinearAttentionConfig

    def __init__(self, config: LinearAttentionConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        make_mixer = self.mixers(config)
        self.layers = self.make_layers(lambda i: Block(config, make_mixer(i)))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        self._init_weights()

    def mixers(self, config: LinearAttentionConfig) -> Callable[[int], nn.Module]:
        """The token mixer of layer i, as a function of i."""
        raise NotImplementedError

    @torch.no_grad()
    def _init_weights(self) -> None:
        """fla's init (N(0, 0.02) Linear / Conv1d / Embedding weights, zero biases; norm gains, A_log,
        dt_bias and lower bounds keep their constructors' init), with the residual projections at
        std 0.02 / sqrt(2 * n_layer). The backbone's memory parameters keep their own init."""
        for module in [self.embeddings, self.lm_head, *self.layers]:
            for m in module.modules():
                if isinstance(m, nn.Linear | nn.Conv1d | nn.Embedding):
                    nn.init.normal_(m.weight, mean=0.0, std=0.02)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.layers:
            nn.init.normal_(block.attn.o_proj.weight, mean=0.0, std=resid_std)
            nn.init.normal_(block.mlp.down_proj.weight, mean=0.0, std=resid_std)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embeddings(idx)  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)


class GLA(LinearAttentionLM):
    config: GLAConfig

    def mixers(self, config: GLAConfig) -> Callable[[int], nn.Module]:
        return lambda i: GLAMixer(config)


class RetNet(LinearAttentionLM):
    config: RetNetConfig

    def mixers(self, config: RetNetConfig) -> Callable[[int], nn.Module]:
        return lambda i: RetNetMixer(config)


class DeltaNet(LinearAttentionLM):
    config: DeltaNetConfig

    def mixers(self, config: DeltaNetConfig) -> Callable[[int], nn.Module]:
        return lambda i: DeltaNetMixer(config)


class HGRN2(LinearAttentionLM):
    config: HGRN2Config

    def mixers(self, config: HGRN2Config) -> Callable[[int], nn.Module]:
        # one module for every layer (layer 0 reads a bound of 0: none); with share="all" only layer 0 is
        # built, so there is none
        used = config.use_lower_bound and config.n_layer > 1 and config.share != "all"
        bounds = HGRN2LowerBounds(config.n_layer, config.d_model) if used else None
        return lambda i: HGRN2Mixer(config, i, bounds)
