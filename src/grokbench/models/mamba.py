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

from .backbone import Backbone, BackboneConfig, check_at_least, check_positive
from .backends import check_backend
from .hf import check_settings, copy_state_dict
from .modules import RMSNorm, ShortConv, at_least_fp32, dt_bias_init, init_residual_
from .ops.selective_scan import selective_scan
from .ops.ssd import ssd

# initialization constants of the authors' code (mamba2.py, mixer_seq_simple.py; dt: modules.dt_bias_init)
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
        check_at_least(self, 1, "d_state", "d_conv", "expand")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"dt_min, dt_max must satisfy 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}"
            )
        check_positive(self, "norm_eps")
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
        check_at_least(self, 1, "headdim", "ngroups", "chunk_size")
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
def _norm(config: _SSMConfig) -> RMSNorm:
    """The blocks' and the final RMSNorm: one group of d_model channels, written as a grouped norm (the
    reshape makes autograd sum the norm's two input gradients before the residual's, as it always has)."""
    return RMSNorm(config.d_model, config.norm_eps, group_size=config.d_model)


def depthwise_conv(channels: int, config: _SSMConfig) -> ShortConv:
    """The causal depthwise conv1d and its SiLU, computed as k shifted products (see ShortConv)."""
    return ShortConv(channels, config.d_conv, silu=True, bias=config.conv_bias, shifted=True)


class Block(nn.Module):
    """Pre-RMSNorm residual block around a sequence mixer; no channel MLP."""

    def __init__(self, config: _SSMConfig, mixer: nn.Module):
        super().__init__()
        self.norm = _norm(config)
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
        self.dt_proj.bias.copy_(dt_bias_init(E, config.dt_min, config.dt_max, torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        x = self.conv1d(x)  # (B, T, E): SiLU(causal conv)
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
        self.norm = RMSNorm(E, config.norm_eps, group_size=E // G)  # gated (gate first), per group
        self.out_proj = nn.Linear(E, C, bias=config.bias)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.reset_ssm_parameters(config)

    @torch.no_grad()
    def reset_ssm_parameters(self, config: Mamba2Config) -> None:
        """The authors' init: A = -U(1, 16) per head, D = 1, softplus(dt_bias) log-uniform."""
        self.A_log.copy_(torch.log(torch.empty_like(self.A_log, dtype=torch.float32).uniform_(*A_INIT_RANGE)))
        self.D.fill_(1.0)
        self.dt_bias.copy_(dt_bias_init(self.nheads, config.dt_min, config.dt_max, torch.float32))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        E, GN = self.d_inner, self.ngroups * self.d_state
        z, xBC, dt = self.in_proj(u).split([E, E + 2 * GN, self.nheads], dim=-1)  # dt: (B, T, H)
        xBC = self.conv1d(xBC)  # (B, T, E + 2GN): SiLU(causal conv)
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
                norm_f=_norm(config),
            )
        )
        self.lm_head = self.make_head(self.backbone.embeddings)
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
            init_residual_([block.mixer.out_proj.weight], self.config.n_layer, per_layer=1, std=None)

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
def _load_hf(
    name: str, model: _SSMLanguageModel, hf_model, settings: list[tuple[str, object, object]]
) -> None:
    """Check the settings both Mamba generations share, and `settings`, then copy the weights."""
    cfg, hf = model.config, hf_model.config
    shared = [
        ("hidden_act", hf.hidden_act, "silu"),
        ("layer_norm_epsilon", hf.layer_norm_epsilon, cfg.norm_eps),
        ("state_size", hf.state_size, cfg.d_state),
        ("use_bias", hf.use_bias, cfg.bias),
        ("use_conv_bias", hf.use_conv_bias, cfg.conv_bias),
    ]
    check_settings(name, shared + settings)
    copy_state_dict(name, model, hf_model, "backbone.embeddings.weight" if cfg.tie_embeddings else None)


def load_hf_mamba_state_dict(model: Mamba, hf_model) -> None:
    """Copy the weights of a `transformers.MambaForCausalLM` into `model`, in place.

    Any missing or unexpected key, any shape mismatch, and any HF setting that changes the computation
    without changing a shape (norm eps, activation, dt_rank...) raises ValueError."""
    from transformers import MambaForCausalLM  # dev/test dependency only

    if not isinstance(hf_model, MambaForCausalLM):
        raise TypeError(f"expected a transformers.MambaForCausalLM, got {type(hf_model).__name__}")
    rank = int(hf_model.config.time_step_rank)
    _load_hf("Mamba", model, hf_model, [("time_step_rank", rank, model.config.dt_rank_value)])


def load_hf_mamba2_state_dict(model: Mamba2, hf_model) -> None:
    """Copy the weights of a `transformers.Mamba2ForCausalLM` into `model`, in place; checks as
    `load_hf_mamba_state_dict` (heads, head size, groups and state size included)."""
    from transformers import Mamba2ForCausalLM  # dev/test dependency only

    if not isinstance(hf_model, Mamba2ForCausalLM):
        raise TypeError(f"expected a transformers.Mamba2ForCausalLM, got {type(hf_model).__name__}")
    cfg, hf = model.config, hf_model.config
    settings = [
        ("num_heads", hf.num_heads, cfg.nheads),
        ("head_dim", hf.head_dim, cfg.headdim),
        ("n_groups", hf.n_groups, cfg.ngroups),
        ("time_step_limit", tuple(hf.time_step_limit), (0.0, float("inf"))),
    ]
    _load_hf("Mamba2", model, hf_model, settings)
