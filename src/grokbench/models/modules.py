"""Building blocks shared by the model families, each written once (as flash-linear-attention keeps its
layers' parts in fla/modules): the float32 upcast, RMSNorm, the L2 norm, rotary embeddings, the pre-norm
residual block, the SwiGLU MLP, the short causal depthwise convolution, the initializations the families
share, and the frame of the four linear-attention families (their configs, block and model), which differ
only in their token mixers (gla.py, retnet.py, deltanet.py, hgrn2.py).

Written for grokbench after reading, not copying, these reference implementations:

1) Andrej Karpathy's nanoGPT, model.py (`_init_weights`: N(0, 0.02) weights, and the residual projections
   scaled by 1 / sqrt(2 * n_layer)): https://github.com/karpathy/nanoGPT/blob/master/model.py
2) fla-org/flash-linear-attention 0.6: fla/modules/{fused_norm_gate,layernorm}.py (RMSNorm and its gated
   form), fla/modules/convolution.py (ShortConvolution), fla/modules/l2norm.py, fla/modules/rotary.py,
   fla/modules/mlp.py (GatedMLP)
3) Hugging Face transformers: models/llama/modeling_llama.py (LlamaRMSNorm, `rotate_half`, LlamaMLP),
   models/mamba2/modeling_mamba2.py (MambaRMSNormGated)
4) state-spaces/mamba: mamba_ssm/modules/mamba_simple.py (the dt initialization),
   mamba_ssm/models/mixer_seq_simple.py (`_init_weights`, rescale_prenorm_residual)

Precision: the norms, the L2 norm and the rotary rotation compute in at least float32 (float64 stays
float64) and cast back where their references do; the order of operations is each reference's, as orders
round differently in low precision (and feed autograd's sums in a different order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, BackboneConfig, check_at_least, check_positive
from .backends import check_backend, note, use_fast

DT_INIT_FLOOR = 1e-4  # smallest initial Δ (the Mamba authors' dt_init_floor)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 for a float64 x (a plain `.float()` would round float64 models)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# --- norms ------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019), normalized in at least float32.

    Two orders of operations, each as its reference computes it:
    - default (transformers' LlamaRMSNorm, MambaRMSNorm, MambaRMSNormGated): the normalized x is cast back
      to x's dtype, then scaled by the weight. A `gate` multiplies the input by SiLU(gate) before the
      normalization (Mamba-2's norm_before_gate=False); with `group_size` the mean runs over groups of
      that many channels (Mamba-2's ngroups).
    - `fla=True` (fla's RMSNorm and FusedRMSNormGated, swish gate): the weight, then SiLU(gate), multiply
      the normalized x in float32, and the product is cast back to x's dtype.
    """

    def __init__(self, dim: int, eps: float, group_size: int | None = None, fla: bool = False):
        super().__init__()
        self.eps, self.group_size, self.fla = eps, group_size, fla
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        h = at_least_fp32(x)  # (..., C)
        if gate is not None and not self.fla:
            h = h * F.silu(gate.to(h.dtype))
        if self.group_size is None:
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            h = h.unflatten(-1, (-1, self.group_size))  # (..., C / group, group)
            h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)  # (..., C)
        if not self.fla:
            return self.weight * h.to(x.dtype)
        h = h * self.weight.to(h.dtype)
        if gate is not None:
            h = h * F.silu(gate.to(h.dtype))
        return h.to(x.dtype)

    def extra_repr(self) -> str:
        group = "" if self.group_size is None else f", group_size={self.group_size}"
        return f"{tuple(self.weight.shape)}, eps={self.eps}{group}" + (", fla" if self.fla else "")


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dimension (fla's l2norm), in at least float32."""
    h = at_least_fp32(x)
    return (h * torch.rsqrt(h.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


# --- rotary position embeddings ---------------------------------------------------------------------


def rope_cos_sin(max_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the RoPE angles (Su et al. 2021), each (max_len, head_dim), in float32.

    Angle of position p in pair i (i < head_dim / 2): p * theta^(-2i / head_dim). Half-split layout (HF's
    `rotate_half`, fla's `interleaved=False`): dimension i is paired with i + head_dim / 2, so the angles
    are repeated, [a, a].
    """
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)  # (hd/2,)
    pos = torch.arange(max_len, device=device, dtype=torch.float32)  # (L,)
    angles = pos[:, None] * inv_freq[None, :]  # (L, hd/2)
    emb = torch.cat((angles, angles), dim=-1)  # (L, hd)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., hd) by the angles of cos/sin (broadcast against x, e.g. (T, hd) for x (B, nh, T, hd)),
    in at least float32, back to x's dtype."""
    h = at_least_fp32(x)
    return (h * cos + rotate_half(h) * sin).to(x.dtype)


# --- the pre-norm block, MLP and convolution --------------------------------------------------------


def pre_norm_residual(x: torch.Tensor, norm_1, mixer, norm_2, mlp) -> torch.Tensor:
    """The pre-norm residual block of GPT-2, Llama, RWKV and fla's models (each names its four parts as its
    reference does): x + mixer(norm_1(x)), then x + mlp(norm_2(x))."""
    x = x + mixer(norm_1(x))  # (B, T, C)
    return x + mlp(norm_2(x))  # (B, T, C)


def swiglu_hidden(d_model: int, multiple_of: int, ratio: float = 4) -> int:
    """Meta's SwiGLU hidden size: 2/3 of ratio * d_model (equal MLP parameters to a two-matrix MLP of
    width ratio * d_model), rounded up to a multiple of `multiple_of` (fla's GatedMLP rule too)."""
    hidden = int(ratio * d_model * 2 / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020; HF's LlamaMLP, fla's GatedMLP with hidden_act="swish")."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class ShortConv(nn.Conv1d):
    """Causal depthwise convolution over time, (B, T, D) -> (B, T, D), optionally followed by SiLU: an
    nn.Conv1d with groups=D and padding k - 1 (the parameter layout of fla's ShortConvolution and of the
    Mamba authors' conv1d), y_t = bias + sum_j w[j] x_{t - (k-1) + j}, x before the start being 0.

    Two ways to compute it, which round differently: conv1d, keeping its first T outputs (fla's torch
    path), or, with `shifted=True`, k shifted products (Mamba's here: for the study's few-token sequences
    several times faster than conv1d on CPU, backward included, and the same on GPU). With a `backend`
    (the model's), the shifted products also run wherever that backend runs the operators' fast forms
    (backends.use_fast): conv1d stays the reference's computation.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        silu: bool,
        bias: bool = False,
        shifted: bool = False,
        backend: str | None = None,
    ):
        super().__init__(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1, bias=bias)
        self.silu, self.shifted, self.backend = silu, shifted, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.size(1)
        shifted = self.shifted or (self.backend is not None and use_fast(self.backend, x, None))
        note("short_conv", "fast" if shifted else "torch")  # backends.note: shifted products or conv1d
        if shifted:
            k = self.kernel_size[0]
            xp = F.pad(x, (0, 0, k - 1, 0))  # (B, T + k - 1, D): k - 1 zero steps in front
            w = self.weight[:, 0, :]  # (D, k)
            y = sum(xp[:, j : j + T] * w[:, j] for j in range(k))  # (B, T, D)
            if self.bias is not None:
                y = y + self.bias
        else:
            # padding k-1 on both sides; the first T outputs see inputs t-k+1..t only (causal)
            y = super().forward(x.transpose(1, 2))[..., :T].transpose(1, 2)  # (B, T, D)
        return F.silu(y) if self.silu else y


# --- initialization ---------------------------------------------------------------------------------


@torch.no_grad()
def init_normal_(modules: Iterable[nn.Module], std: float = 0.02) -> None:
    """GPT-2's init (nanoGPT's `_init_weights`, fla's too): N(0, std) for the weight of every Linear,
    Conv1d and Embedding in `modules`, in their order (a weight met twice is drawn twice), zero biases."""
    for m in modules:
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def init_residual_(
    weights: Iterable[torch.Tensor], n_layer: int, per_layer: int, std: float | None = 0.02
) -> None:
    """The projections that end a residual branch (`per_layer` of them per layer), scaled by
    1 / sqrt(per_layer * n_layer) so the residual stream's variance does not grow with depth: N(0, std)
    scaled (GPT-2, nanoGPT's c_proj init), or with std=None PyTorch's default Linear init scaled (the Mamba
    authors' rescale_prenorm_residual). Drawn in the order given."""
    for w in weights:
        if std is None:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            w /= math.sqrt(per_layer * n_layer)
        else:
            nn.init.normal_(w, mean=0.0, std=std / math.sqrt(per_layer * n_layer))


def dt_bias_init(n: int, dt_min: float, dt_max: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Δ biases (n,) with softplus(bias) log-uniform in [dt_min, dt_max], floored at DT_INIT_FLOOR: the
    inverse softplus dt + log(1 - exp(-dt)) (the Mamba authors' dt init; fla's for Gated DeltaNet)."""
    lo, hi = math.log(dt_min), math.log(dt_max)
    dt = torch.exp(torch.rand(n, dtype=dtype) * (hi - lo) + lo).clamp(min=DT_INIT_FLOOR)
    return dt + torch.log(-torch.expm1(-dt))


# --- the frame of the linear-attention families (GLA, RetNet, DeltaNet, HGRN2: fla's models) ------------


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
        check_at_least(self, 1, "n_head", "conv_size", "multiple_of")
        if self.mlp_hidden is not None:
            check_at_least(self, 1, "mlp_hidden", note=" (or None)")
        check_positive(self, "hidden_ratio", "norm_eps")
        check_backend(self.backend)

    @property
    def mlp_hidden_size(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return swiglu_hidden(self.d_model, self.multiple_of, self.hidden_ratio)


@dataclass(kw_only=True)
class QKVConfig(LinearAttentionConfig):
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


def short_conv(config: LinearAttentionConfig, dim: int, silu: bool) -> ShortConv | None:
    """The short convolution after a projection of width `dim`, where config.use_short_conv asks for one
    (conv1d for the reference backend, shifted products with the fast forms: ShortConv)."""
    return ShortConv(dim, config.conv_size, silu, backend=config.backend) if config.use_short_conv else None


def project(x: torch.Tensor, proj: nn.Linear, conv: ShortConv | None) -> torch.Tensor:
    """proj(x), through the short convolution where there is one."""
    y = proj(x)
    return y if conv is None else conv(y)


class QKVMixer(nn.Module):
    """The frame of the GLA, RetNet and DeltaNet token mixers (fla's layers): q, k (key_dim wide) and v
    (value_dim) projections, each through a short convolution with SiLU where asked for; a subclass adds
    its own parameters and then calls `add_output`: the per-head output RMSNorm, times silu(W_g x) with an
    output gate, and the output projection."""

    def __init__(self, config: QKVConfig):
        super().__init__()
        d, self.n_head, self.backend = config.d_model, config.n_head, config.backend
        self.q_proj = nn.Linear(d, config.key_dim, bias=False)
        self.k_proj = nn.Linear(d, config.key_dim, bias=False)
        self.v_proj = nn.Linear(d, config.value_dim, bias=False)
        self.q_conv1d = short_conv(config, config.key_dim, silu=True)
        self.k_conv1d = short_conv(config, config.key_dim, silu=True)
        self.v_conv1d = short_conv(config, config.value_dim, silu=True)

    def add_output(self, config: QKVConfig, output_gate: bool) -> None:
        d = config.d_model
        self.g_proj = nn.Linear(d, config.value_dim, bias=False) if output_gate else None
        self.o_norm = RMSNorm(config.value_dim // self.n_head, config.norm_eps, fla=True)  # per head
        self.o_proj = nn.Linear(config.value_dim, d, bias=False)  # a residual projection

    def qkv(self, x: torch.Tensor, act=None):
        """q, k, v (B, T, key_dim / key_dim / value_dim), one after the other (a generator: the caller
        reshapes each as it comes); `act` is applied where there is no convolution."""
        for proj, conv in (
            (self.q_proj, self.q_conv1d),
            (self.k_proj, self.k_conv1d),
            (self.v_proj, self.v_conv1d),
        ):
            y = proj(x)
            if conv is not None:
                y = conv(y)
            elif act is not None:
                y = act(y)
            yield y

    def output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The recurrence's output o (B, T, H, V) -> norm (times the output gate) -> o_proj, (B, T, C)."""
        B, T, _ = x.shape
        gate = None if self.g_proj is None else self.g_proj(x).view(B, T, self.n_head, -1)
        o = self.o_norm(o, gate)  # (B, T, H, V)
        return self.o_proj(o.reshape(B, T, -1))  # (B, T, C)


class Block(nn.Module):
    """Pre-RMSNorm block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)) (fla's *Block)."""

    def __init__(self, config: LinearAttentionConfig, mixer: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps, fla=True)
        self.attn = mixer
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps, fla=True)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pre_norm_residual(x, self.attn_norm, self.attn, self.mlp_norm, self.mlp)  # (B, T, C)


class LinearAttentionLM(Backbone):
    """The model of every linear-attention family, as fla's: a token embedding (no position embedding) ->
    blocks -> a final RMSNorm -> the LM head (tied by default); a family provides its token mixers,
    `mixers(config)`. Settings they share:

    - MLP hidden size: `mlp_hidden` if given, else int(hidden_ratio * d_model * 2 / 3) rounded up to a
      multiple of `multiple_of` (fla: of 256, which inflates the MLP at the study's widths; 32 here as in
      our Llama). hidden_ratio defaults as fla's models: 4, RetNet 2.
    - Initialization: fla's (N(0, 0.02) for Linear, convolution and embedding weights, zero biases, norm
      gains 1), plus the residual projections (o_proj, down_proj) at std 0.02 / sqrt(2 * n_layer) as our GPT
      and Llama (fla's prenorm_residual_strategy="rescale" scales them the same way; its default does not).
    - Precision: the recurrences run in float32 (float64 for float64 inputs) with autocast off; the norms,
      the gates' logsigmoid / softplus, the L2 norm and the rotary rotation in at least float32.
    - norm_eps 1e-6 for every RMSNorm, as fla's model configs (HGRN2's output norm: 1e-5, see hgrn2.py).
    """

    config: LinearAttentionConfig

    def __init__(self, config: LinearAttentionConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        make_mixer = self.mixers(config)
        self.layers = self.make_layers(lambda i: Block(config, make_mixer(i)))
        self.norm = RMSNorm(config.d_model, config.norm_eps, fla=True)
        self.lm_head = self.make_head(self.embeddings)
        self._init_weights()

    def mixers(self, config: LinearAttentionConfig) -> Callable[[int], nn.Module]:
        """The token mixer of layer i, as a function of i."""
        raise NotImplementedError

    @torch.no_grad()
    def _init_weights(self) -> None:
        """fla's init (N(0, 0.02) Linear / Conv1d / Embedding weights, zero biases; norm gains, A_log,
        dt_bias and lower bounds keep their constructors' init), with the residual projections at
        std 0.02 / sqrt(2 * n_layer). The backbone's memory parameters keep their own init."""
        init_normal_(m for module in [self.embeddings, self.lm_head, *self.layers] for m in module.modules())
        out = [w for b in self.layers for w in (b.attn.o_proj.weight, b.mlp.down_proj.weight)]
        init_residual_(out, self.config.n_layer, per_layer=2)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embeddings(idx)  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)
