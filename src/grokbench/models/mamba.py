"""Mamba-1 (selective state spaces) and Mamba-2 (state space duality) language models in plain PyTorch.

Written for grokbench after reading, not copying, these reference implementations:

1) state-spaces/mamba (the authors' code, Gu & Dao 2023; Dao & Gu 2024):
   https://github.com/state-spaces/mamba/blob/main/mamba_ssm/modules/mamba_simple.py (Mamba-1 mixer, its
   dt / A / D initialization), .../modules/mamba2_simple.py and .../modules/mamba2.py (Mamba-2 mixer),
   .../models/mixer_seq_simple.py (the LM around the mixers: RMSNorm pre-norm blocks without an MLP, final
   norm, tied head, `_init_weights`), .../ops/selective_scan_interface.py (`selective_scan_ref`)
2) Hugging Face transformers, MambaForCausalLM and Mamba2ForCausalLM:
   https://github.com/huggingface/transformers/blob/main/src/transformers/models/mamba/modeling_mamba.py
   (`slow_forward`) and .../models/mamba2/modeling_mamba2.py (`torch_forward`): parameter names, and the
   numerical references of the tests

Mamba-1 block:  x + out_proj(scan(SiLU(conv(x')), Δ, A, B, C, D) * SiLU(z)),  [x', z] = in_proj(RMSNorm(x))
    x' goes through a causal depthwise conv1d (d_conv taps) and SiLU; x_proj maps it to (Δ low-rank, B, C);
    Δ = softplus(dt_proj(Δ low-rank)), A = -exp(A_log) (S4D-real init A[:, n] = -(n + 1)), D a skip.
Mamba-2 block:  x + out_proj(GatedRMSNorm(SSD(x, Δ, A, B, C, D), z)),  [z, xBC, dt] = in_proj(RMSNorm(x))
    xBC goes through the causal depthwise conv1d and SiLU and splits into x (heads of `headdim`), B and C
    (`ngroups` groups of d_state); A is one scalar per head; the gate z enters through the RMSNorm
    (y * SiLU(z), then normalized: the authors' norm_before_gate=False).
Neither has a separate MLP (blocks set `mlp = None`) nor position embeddings: the conv and the recurrence
carry position. Parameter names match transformers' so `load_hf_mamba_state_dict` and
`load_hf_mamba2_state_dict` are name-for-name copies.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, BackboneConfig
from .backends import check_backend
from .ops.selective_scan import selective_scan
from .ops.ssd import ssd

# initialization constants of the authors' code (mamba_simple.py, mamba2.py)
DT_INIT_FLOOR = 1e-4
A_INIT_RANGE = (1.0, 16.0)  # Mamba-2: A = -uniform(1, 16) per head
EMBED_STD = 0.02  # mixer_seq_simple.py's `initializer_range`


@dataclass(kw_only=True)
class _SSMConfig(BackboneConfig):
    """Keys Mamba-1 and Mamba-2 share."""

    d_state: int = 16  # N: state size per channel (Mamba-1) or per head (Mamba-2)
    d_conv: int = 4  # taps of the causal depthwise conv
    expand: int = 2  # d_inner = expand * d_model
    dt_min: float = 0.001  # softplus(dt bias) starts log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    conv_bias: bool = True
    bias: bool = False  # biases of in_proj / out_proj
    norm_eps: float = 1e-5
    backend: str = "auto"  # torch | kernels | auto (see backends.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"dt_min, dt_max must satisfy 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}"
            )
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        check_backend(self.backend)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


@dataclass(kw_only=True)
class MambaConfig(_SSMConfig):
    dt_rank: int | str = "auto"  # rank of the Δ projection; "auto" = ceil(d_model / 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dt_rank != "auto" and (
            not isinstance(self.dt_rank, int) or isinstance(self.dt_rank, bool) or self.dt_rank < 1
        ):
            raise ValueError(f"dt_rank must be 'auto' or an int >= 1, got {self.dt_rank!r}")

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)


@dataclass(kw_only=True)
class Mamba2Config(_SSMConfig):
    d_state: int = 64
    headdim: int = 32  # P: channels per head; nheads = d_inner / headdim
    ngroups: int = 1  # G: groups of heads sharing B and C
    chunk_size: int = 256  # tiling of the SSD kernel only; the math does not depend on it

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("headdim", "ngroups", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_inner % self.headdim:
            raise ValueError(
                f"headdim ({self.headdim}) must divide d_inner = expand * d_model ({self.d_inner})"
            )
        if self.nheads % self.ngroups:
            raise ValueError(f"ngroups ({self.ngroups}) must divide the number of heads ({self.nheads})")

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim


# --- shared pieces -------------------------------------------------------------------------------
def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """float32, or float64 for a float64 tensor (the authors' `.float()` would round float64 models)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, normalized in float32 (float64 for float64 input). With a
    `gate`, the input is first multiplied by SiLU(gate), and the mean runs over `group_size` channels
    (Mamba-2's gated norm, norm_before_gate=False)."""

    def __init__(self, dim: int, eps: float, group_size: int | None = None):
        super().__init__()
        self.eps = eps
        self.group_size = group_size or dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        h = at_least_fp32(x)  # (..., C)
        if gate is not None:
            h = h * F.silu(gate.to(h.dtype))
        h = h.unflatten(-1, (-1, self.group_size))  # (..., C / group, group)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.flatten(-2).to(dtype)  # (..., C)


def causal_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """SiLU of a causal depthwise conv1d along time with `conv`'s weights: (B, T, E) -> (B, T, E).

    y_t = bias + sum_j w[j] x_{t - (k-1) + j}, x before the start being 0: what `conv` (padding k - 1,
    first T outputs kept) computes, written as k shifted products. For the few-token sequences of the
    study this is several times faster than conv1d on CPU, backward included, and the same on GPU."""
    T, k = x.size(1), conv.kernel_size[0]
    xp = F.pad(x, (0, 0, k - 1, 0))  # (B, T + k - 1, E): k - 1 zero steps in front
    w = conv.weight[:, 0, :]  # (E, k)
    y = sum(xp[:, j : j + T] * w[:, j] for j in range(k))  # (B, T, E)
    if conv.bias is not None:
        y = y + conv.bias
    return F.silu(y)


def depthwise_conv(channels: int, config: _SSMConfig) -> nn.Conv1d:
    k = config.d_conv
    return nn.Conv1d(channels, channels, k, groups=channels, padding=k - 1, bias=config.conv_bias)


@torch.no_grad()
def init_dt_bias(bias: torch.Tensor, config: _SSMConfig) -> None:
    """Δ bias so that softplus(bias) is log-uniform in [dt_min, dt_max] (floored at 1e-4): the bias is
    softplus^-1(dt) = dt + log(1 - exp(-dt))."""
    lo, hi = math.log(config.dt_min), math.log(config.dt_max)
    dt = torch.exp(torch.rand_like(bias, dtype=torch.float32) * (hi - lo) + lo).clamp(min=DT_INIT_FLOOR)
    bias.copy_(dt + torch.log(-torch.expm1(-dt)))


class Block(nn.Module):
    """Pre-RMSNorm residual block around a sequence mixer; no channel MLP."""

    def __init__(self, config: _SSMConfig, mixer: nn.Module):
        super().__init__()
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = mixer
        self.mlp = None  # no separate feed-forward: share="mlp" is rejected by the Backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))  # (B, T, C)


# --- Mamba-1 ------------------------------------------------------------------------------------
class MambaMixer(nn.Module):
    def __init__(self, config: MambaConfig):
        super().__init__()
        C, E, N, R = config.d_model, config.d_inner, config.d_state, config.dt_rank_value
        self.d_state, self.dt_rank, self.backend = N, R, config.backend
        self.in_proj = nn.Linear(C, 2 * E, bias=config.bias)  # -> [x, z]
        self.conv1d = depthwise_conv(E, config)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)  # -> [Δ low-rank, B, C]
        self.dt_proj = nn.Linear(R, E, bias=True)  # its bias enters the scan as delta_bias
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, C, bias=config.bias)
        for p in (self.A_log, self.D):
            p._no_weight_decay = True  # the authors' marker, honoured by train.trainer.make_optimizer
        self.reset_ssm_parameters(config)

    @torch.no_grad()
    def reset_ssm_parameters(self, config: MambaConfig) -> None:
        """The authors' init: S4D-real A (A[e, n] = -(n + 1)), D = 1, dt_proj weight U(±rank^-1/2)."""
        E, N = self.A_log.shape
        self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N))
        self.D.fill_(1.0)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        init_dt_bias(self.dt_proj.bias, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        x = causal_conv(self.conv1d, x)  # (B, T, E)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (B, T, E); bias added inside the scan
        A = -torch.exp(at_least_fp32(self.A_log))  # (E, N)
        y = selective_scan(
            x,
            dt,
            A,
            B,
            C,
            D=self.D,
            z=z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            backend=self.backend,
        )  # (B, T, E), y * SiLU(z)
        return self.out_proj(y)  # (B, T, C)


# --- Mamba-2 ------------------------------------------------------------------------------------
class Mamba2Mixer(nn.Module):
    def __init__(self, config: Mamba2Config):
        super().__init__()
        C, E, N, G, H = config.d_model, config.d_inner, config.d_state, config.ngroups, config.nheads
        self.d_inner, self.d_state, self.ngroups, self.nheads = E, N, G, H
        self.headdim, self.chunk_size, self.backend = config.headdim, config.chunk_size, config.backend
        conv_dim = E + 2 * G * N
        self.in_proj = nn.Linear(C, E + conv_dim + H, bias=config.bias)  # -> [z, x, B, C, dt]
        self.conv1d = depthwise_conv(conv_dim, config)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = RMSNorm(E, config.norm_eps, group_size=E // G)  # gated, per group
        self.out_proj = nn.Linear(E, C, bias=config.bias)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.reset_ssm_parameters(config)

    @torch.no_grad()
    def reset_ssm_parameters(self, config: Mamba2Config) -> None:
        """The authors' init: A = -U(1, 16) per head, D = 1, softplus(dt_bias) log-uniform."""
        self.A_log.copy_(torch.log(torch.empty_like(self.A_log, dtype=torch.float32).uniform_(*A_INIT_RANGE)))
        self.D.fill_(1.0)
        init_dt_bias(self.dt_bias, config)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        E, GN = self.d_inner, self.ngroups * self.d_state
        z, xBC, dt = self.in_proj(u).split([E, E + 2 * GN, self.nheads], dim=-1)  # dt: (B, T, H)
        xBC = causal_conv(self.conv1d, xBC)  # (B, T, E + 2GN)
        x, B, C = xBC.split([E, GN, GN], dim=-1)
        A = -torch.exp(at_least_fp32(self.A_log))  # (H,)
        y = ssd(
            x.unflatten(-1, (self.nheads, self.headdim)),  # (B, T, H, P)
            dt,
            A,
            B.unflatten(-1, (self.ngroups, self.d_state)),  # (B, T, G, N)
            C.unflatten(-1, (self.ngroups, self.d_state)),  # (B, T, G, N)
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )  # (B, T, H, P)
        y = self.norm(y.flatten(-2), z)  # (B, T, E): RMSNorm(y * SiLU(z)) per group
        return self.out_proj(y)  # (B, T, C)


# --- the language models ------------------------------------------------------------------------
class _SSMLanguageModel(Backbone):
    """Token embedding -> pre-norm mixer blocks -> final RMSNorm -> LM head (tied by default), with the
    module names of transformers' Mamba(2)ForCausalLM: backbone.{embeddings, layers, norm_f}, lm_head."""

    config: _SSMConfig

    def __init__(self, config: _SSMConfig, make_mixer: Callable[[], nn.Module]):
        super().__init__(config)
        self.backbone = nn.ModuleDict(
            dict(
                embeddings=nn.Embedding(config.vocab_size, config.d_model),
                layers=self.make_layers(lambda i: Block(config, make_mixer())),
                norm_f=RMSNorm(config.d_model, config.norm_eps),
            )
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """mixer_seq_simple.py's `_init_weights`: PyTorch's default Linear / Conv1d init, zero Linear
        biases except the Δ bias, N(0, 0.02) embedding, and out_proj re-drawn (kaiming-uniform) and scaled
        by 1 / sqrt(n_layer), one residual branch per layer. The mixers' SSM parameters were set by their
        own `reset_ssm_parameters`."""
        nn.init.normal_(self.backbone.embeddings.weight, std=EMBED_STD)
        if not self.config.tie_embeddings:
            self.lm_head.reset_parameters()  # PyTorch's Linear default (the authors always tie)
        for block in self.layers:
            for name, m in block.mixer.named_modules():
                if isinstance(m, nn.Linear) and m.bias is not None and name != "dt_proj":
                    nn.init.zeros_(m.bias)
            out = block.mixer.out_proj.weight
            nn.init.kaiming_uniform_(out, a=math.sqrt(5))
            out /= math.sqrt(self.config.n_layer)

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.layers  # transformers' name for the block list

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.backbone.embeddings(idx)  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.backbone.norm_f(x))  # (B, T, vocab_size)


class Mamba(_SSMLanguageModel):
    config: MambaConfig

    def __init__(self, config: MambaConfig):
        super().__init__(config, lambda: MambaMixer(config))


class Mamba2(_SSMLanguageModel):
    config: Mamba2Config

    def __init__(self, config: Mamba2Config):
        super().__init__(config, lambda: Mamba2Mixer(config))


# --- loading transformers' weights (tests) -------------------------------------------------------
def _check_hf_settings(name: str, settings: list[tuple[str, object, object]]) -> None:
    """Settings invisible in the parameter shapes: (key, HF value, the value we implement)."""
    problems = [f"{key}: HF {theirs!r} != ours {ours!r}" for key, theirs, ours in settings if theirs != ours]
    if problems:
        raise ValueError(f"incompatible {name} config: " + "; ".join(problems))


@torch.no_grad()
def _copy_state_dict(name: str, model: nn.Module, hf_model: nn.Module, tied: bool, emb_key: str) -> None:
    """Name-for-name copy, every name and shape checked."""
    sd_hf = hf_model.state_dict()
    sd = model.state_dict()  # holds lm_head.weight even when tied
    missing = sorted(set(sd) - set(sd_hf))
    unexpected = sorted(set(sd_hf) - set(sd))
    if missing or unexpected:
        raise ValueError(
            f"{name} state dict mismatch: missing from HF model {missing}, "
            f"unexpected in HF model {unexpected}"
        )
    if tied and not torch.equal(sd_hf["lm_head.weight"], sd_hf[emb_key]):
        raise ValueError(f"our lm_head is tied to {emb_key} but the HF model's lm_head differs from it")
    for key, ours in sd.items():
        theirs = sd_hf[key]
        if theirs.shape != ours.shape:
            raise ValueError(
                f"shape mismatch for {key}: HF {tuple(theirs.shape)} vs ours {tuple(ours.shape)}"
            )
        ours.copy_(theirs)  # state_dict tensors share storage with the parameters


def load_hf_mamba_state_dict(model: Mamba, hf_model) -> None:
    """Copy the weights of a `transformers.MambaForCausalLM` into `model`, in place.

    Any missing or unexpected key, any shape mismatch, and any HF setting that changes the computation
    without changing a shape (norm eps, activation, dt_rank...) raises ValueError."""
    from transformers import MambaForCausalLM  # dev/test dependency only

    if not isinstance(hf_model, MambaForCausalLM):
        raise TypeError(f"expected a transformers.MambaForCausalLM, got {type(hf_model).__name__}")
    cfg, hf = model.config, hf_model.config
    settings = [
        ("hidden_act", hf.hidden_act, "silu"),
        ("layer_norm_epsilon", hf.layer_norm_epsilon, cfg.norm_eps),
        ("time_step_rank", int(hf.time_step_rank), cfg.dt_rank_value),
        ("state_size", hf.state_size, cfg.d_state),
        ("use_bias", hf.use_bias, cfg.bias),
        ("use_conv_bias", hf.use_conv_bias, cfg.conv_bias),
    ]
    _check_hf_settings("Mamba", settings)
    _copy_state_dict("Mamba", model, hf_model, cfg.tie_embeddings, "backbone.embeddings.weight")


def load_hf_mamba2_state_dict(model: Mamba2, hf_model) -> None:
    """Copy the weights of a `transformers.Mamba2ForCausalLM` into `model`, in place; checks as
    `load_hf_mamba_state_dict` (heads, head size, groups and state size included)."""
    from transformers import Mamba2ForCausalLM  # dev/test dependency only

    if not isinstance(hf_model, Mamba2ForCausalLM):
        raise TypeError(f"expected a transformers.Mamba2ForCausalLM, got {type(hf_model).__name__}")
    cfg, hf = model.config, hf_model.config
    settings = [
        ("hidden_act", hf.hidden_act, "silu"),
        ("layer_norm_epsilon", hf.layer_norm_epsilon, cfg.norm_eps),
        ("num_heads", hf.num_heads, cfg.nheads),
        ("head_dim", hf.head_dim, cfg.headdim),
        ("n_groups", hf.n_groups, cfg.ngroups),
        ("state_size", hf.state_size, cfg.d_state),
        ("use_bias", hf.use_bias, cfg.bias),
        ("use_conv_bias", hf.use_conv_bias, cfg.conv_bias),
        ("time_step_limit", tuple(hf.time_step_limit), (0.0, float("inf"))),
    ]
    _check_hf_settings("Mamba2", settings)
    _copy_state_dict("Mamba2", model, hf_model, cfg.tie_embeddings, "backbone.embeddings.weight")
