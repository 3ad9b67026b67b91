"""RWKV-7 ("Goose", Peng et al. 2025) and RWKV-6 ("Finch", Peng et al. 2024) in plain PyTorch.

Written for grokbench after reading, not copying, these reference implementations:

1) BlinkDL/RWKV-LM, the authors' code:
   RWKV-v7/train_temp/src/model.py (RWKV_Tmix_x070, RWKV_CMix_x070, Block, generate_init_weight),
   RWKV-v7/rwkv_v7_demo.py, RWKV-v7/train_temp/rwkv7_train_simplified.py;
   RWKV-v5/src/model.py (RWKV_Tmix_x060, RWKV_CMix_x060: RWKV-6).
   Parameter names follow these files (x_r, w0/w1/w2, k_k, receptance, ln_x, time_maa_x, ...).
2) fla-org/flash-linear-attention 0.6: fla/layers/rwkv7.py (RWKV7Attention) and
   fla/models/rwkv7/modeling_rwkv7.py (RWKV7ForCausalLM: the numerical reference of the RWKV7 model test,
   logits and every parameter's gradient), fla/layers/rwkv6.py, and the kernels behind `ops.rwkv7` /
   `ops.rwkv6`.

Both families: token embedding -> LayerNorm `ln0` -> blocks -> LayerNorm `ln_out` -> LM head (untied by
default, as the authors do). A block is pre-LayerNorm:
    x = x + att(ln1(x));  x = x + mlp(ln2(x))
with `att` the time-mix (the sequence mixer) and `mlp` the channel-mix (the authors' `ffn`). Every input
of both mixers is a per-channel interpolation between the current token x_t and the previous one x_{t-1}
(token shift; zero before the first token): x + (x_{t-1} - x_t) * mu.

RWKV-7 time-mix, per head of `head_size` channels (see ops/rwkv7.py for the recurrence):
    r = W_r x_r, k = W_k x_k, v = W_v x_v                                     (receptance, key, value)
    w = -exp(-1/2) sigmoid(w0 + tanh(x_w W1) W2)      log decay: decay exp(w) in [exp(-exp(-1/2)), 1)
    a = sigmoid(a0 + x_a A1 A2)                        in-context learning rate
    v <- v + (v_first - v) sigmoid(v0 + x_v V1 V2)    value residual (not in the first application)
    g = sigmoid(x_g G1) G2                             output gate
    kk = normalize(k * k_k) per head;  k <- k (1 + (a - 1) k_a)
    S_t = S_{t-1} (diag(exp(w_t)) - kk_t^T (a_t kk_t)) + v_t^T k_t (BlinkDL's (V, K) layout), o_t = S_t r_t
    out = W_o ((GroupNorm_heads(o) + ((r * k * r_k).sum per head) v) * g)
RWKV-7 channel-mix: W_v relu(W_k x_k)^2. RWKV-6 time-mix: data-dependent token shift (a LoRA per input),
decay exp(-exp(w0 + LoRA(x_w))), the bonus u for the current token, GroupNorm and a SiLU gate; its
channel-mix gates W_v relu(W_k x_k)^2 with sigmoid(W_r x_r).

Choices where the grokbench Backbone differs from a plain stack (documented, tested):
- `ln0` (the authors' extra LayerNorm inside block 0) normalizes the token embedding in `embed`, so it is
  applied once per forward: not again on later passes (loops > 1) nor at every depth of a shared block
  (share="all"). With loops=1, share="none" and no memory tokens this is the authors' model exactly;
  memory tokens are prepended after it and are not normalized by it.
- v_first (RWKV-7's value residual) crosses layers while blocks map (B, T, C) -> (B, T, C): it lives on a
  small `FirstValue` holder shared by the model and all its time-mix modules, cleared in `embed` (start
  of a forward) and in `head` (end of it, so no graph is kept alive). v_first is the value of the FIRST
  time-mix application of the forward: block 0 of the first pass. Every later application (deeper
  blocks, every block of later passes when loops > 1, every depth of the one block when share="all")
  mixes its value toward it with its own learned gate. A block gets that gate (v0, v1, v2) only where it
  can be used: blocks i > 0 always, block 0 when loops > 1 or it is shared across n_layer > 1 depths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import backends
from .backbone import Backbone, BackboneConfig, check_at_least
from .modules import at_least_fp32, pre_norm_residual
from .ops.rwkv6 import rwkv6
from .ops.rwkv7 import RWKV7_W_LOWER_BOUND, rwkv7

LN_X_EPS = 64e-5  # GroupNorm eps of the time-mix output: 1e-5 * head_size_divisor**2 with divisor 8


@dataclass(kw_only=True)
class _RWKVConfig(BackboneConfig):
    tie_embeddings: bool = False  # the authors untie the LM head from the embedding
    head_size: int = 64  # channels per head (the authors' HEAD_SIZE); n_head = d_model // head_size
    ffn_mult: float = 4.0  # channel-mix hidden width = round(ffn_mult * d_model)
    backend: str = "auto"  # torch | kernels | auto: see models/backends.py

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_size < 2:
            raise ValueError(f"head_size must be >= 2, got {self.head_size}")
        if self.d_model % self.head_size != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by head_size ({self.head_size})")
        if not self.ffn_mult > 0 or round(self.ffn_mult * self.d_model) < 1:
            raise ValueError(f"ffn_mult must be > 0 with ffn_mult * d_model >= 1, got {self.ffn_mult}")
        backends.check_backend(self.backend)

    @property
    def n_head(self) -> int:
        return self.d_model // self.head_size

    @property
    def d_ffn(self) -> int:
        return round(self.ffn_mult * self.d_model)


@dataclass(kw_only=True)
class RWKV7Config(_RWKVConfig):
    # ranks of the LoRA MLPs; 0: the authors' suggestion for d_model = C, max(32, round(f sqrt(C) / 32) * 32)
    # with f = 2.5 (decay w, learning rate a), 1.7 (value residual gate v), 5 (output gate g)
    decay_low_rank_dim: int = 0
    a_low_rank_dim: int = 0
    v_low_rank_dim: int = 0
    gate_low_rank_dim: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        names = ("decay_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim", "gate_low_rank_dim")
        check_at_least(self, 0, *names, note=" (0: the authors' default)")

    def low_rank_dim(self, name: str) -> int:
        """The rank of LoRA `name` ("decay", "a", "v" or "gate")."""
        set_value = getattr(self, f"{name}_low_rank_dim")
        if set_value:
            return set_value
        factor = {"decay": 2.5, "a": 2.5, "v": 1.7, "gate": 5.0}[name]
        return max(32, int(round(factor * math.sqrt(self.d_model) / 32) * 32))


@dataclass(kw_only=True)
class RWKV6Config(_RWKVConfig):
    ffn_mult: float = 3.5  # RWKV-6's dim_ffn is 3.5 * n_embd (rounded down to a multiple of 32 there)
    # ranks of the LoRA MLPs; 0: the authors' values, 32 (token-shift mix) and 64 (decay), doubled when
    # d_model >= 4096
    mix_low_rank_dim: int = 0
    decay_low_rank_dim: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "mix_low_rank_dim", "decay_low_rank_dim", note=" (0: the authors' default)")

    def low_rank_dim(self, name: str) -> int:
        """The rank of LoRA `name` ("mix" or "decay")."""
        set_value = getattr(self, f"{name}_low_rank_dim")
        if set_value:
            return set_value
        return {"mix": 32, "decay": 64}[name] * (2 if self.d_model >= 4096 else 1)


# --- initialization helpers ----------------------------------------------------------------------


def _init_basis(config: _RWKVConfig, layer_id: int) -> tuple[float, float, torch.Tensor]:
    """What the authors' init curves are functions of: (ratio_0_to_1, ratio_1_to_almost0) of the layer
    (ratio_0_to_1 is 0 for a single layer) and the channel index n = 0..C-1, in float64."""
    n_layer = config.n_layer
    ratio_0_to_1 = layer_id / (n_layer - 1) if n_layer > 1 else 0.0
    return ratio_0_to_1, 1.0 - layer_id / n_layer, torch.arange(config.d_model, dtype=torch.float64)


def _param(values: torch.Tensor, *shape: int) -> nn.Parameter:
    """A parameter of `shape` from init values computed in float64, in the default dtype."""
    return nn.Parameter(values.reshape(shape).to(torch.get_default_dtype()))


@torch.no_grad()
def _orthogonal_(weight: torch.Tensor, gain: float) -> torch.Tensor:
    """nn.init.orthogonal_ computed in float32 (it needs a QR); a no-op on the meta device."""
    if weight.is_meta:
        return weight
    if gain == 0:
        return weight.zero_()
    w = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
    nn.init.orthogonal_(w, gain=gain)
    return weight.copy_(w)


def _lora_out(rank: int, width: int) -> nn.Parameter:
    """The second matrix of an RWKV-7 LoRA, (rank, width): the authors' ortho_init(., 0.1)."""
    p = nn.Parameter(torch.empty(rank, width))
    gain = math.sqrt(rank / width) if rank > width else 1.0
    _orthogonal_(p, 0.1 * gain)
    return p


def _token_shift_delta(x: torch.Tensor) -> torch.Tensor:
    """x_{t-1} - x_t along dim 1 of (B, T, C), with x_{-1} = 0 (the authors' time_shift(x) - x)."""
    return F.pad(x, (0, 0, 1, -1)) - x  # (B, T, C)


# --- RWKV-7 ----------------------------------------------------------------------------------------


class FirstValue:
    """RWKV-7's v_first for the forward in progress: the value vectors (B, T, C) of the first time-mix
    application, None before it. Shared by a model and its time-mix modules (see the module docstring)."""

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v: torch.Tensor | None = None


class _TimeMix(nn.Module):
    """What the RWKV-7 and RWKV-6 time-mixes share: the C -> C projections receptance, key, value, output
    (and RWKV-6's gate) and the GroupNorm ln_x, one group per head, with generate_init_weight's init."""

    def add_projections(self, config: _RWKVConfig, layer_id: int, gate: bool) -> None:
        C = config.d_model
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False) if gate else None
        self.ln_x = nn.GroupNorm(config.n_head, C, eps=LN_X_EPS)
        # orthogonal (key and gate at gain 0.1), zero output, ln_x scaled with depth
        _orthogonal_(self.receptance.weight, 1.0)
        _orthogonal_(self.key.weight, 0.1)
        _orthogonal_(self.value.weight, 1.0)
        if gate:
            _orthogonal_(self.gate.weight, 0.1)
        nn.init.zeros_(self.output.weight)
        nn.init.constant_(self.ln_x.weight, ((1 + layer_id) / config.n_layer) ** 0.7)

    def norm_heads(self, o: torch.Tensor) -> torch.Tensor:
        """ln_x of the recurrence's output (B, T, H, N) -> (B, T, C): GroupNorm, one group per head."""
        B, T, H, N = o.shape
        return self.ln_x(o.reshape(B * T, H * N)).view(B, T, H * N)


class _Block(nn.Module):
    """Pre-LayerNorm block: x + att(ln1(x)), then x + mlp(ln2(x)) (`mlp`: the authors' `ffn`)."""

    def __init__(self, d_model: int, att: nn.Module, mlp: nn.Module):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.att = att
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pre_norm_residual(x, self.ln1, self.att, self.ln2, self.mlp)  # (B, T, C)


class RWKV7TimeMix(_TimeMix):
    def __init__(self, config: RWKV7Config, layer_id: int, first_value: FirstValue, value_gate: bool):
        super().__init__()
        C, N, H = config.d_model, config.head_size, config.n_head
        self.n_head, self.head_size = H, N
        self.backend = config.backend
        self.first_value = first_value  # a plain object: no parameters, not in the state dict

        # the authors' layer- and channel-dependent init (RWKV_Tmix_x070.__init__)
        r01, r10, n = _init_basis(config, layer_id)
        ddd = n / C
        linear = n / (C - 1) - 0.5
        zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / (C - 1)) ** (1 + r01**0.3)

        self.x_r = _param(1 - ddd ** (0.2 * r10), 1, 1, C)
        self.x_w = _param(1 - ddd ** (0.9 * r10), 1, 1, C)
        self.x_k = _param(1 - ddd ** (0.7 * r10), 1, 1, C)
        self.x_v = _param(1 - ddd ** (0.7 * r10), 1, 1, C)
        self.x_a = _param(1 - ddd ** (0.9 * r10), 1, 1, C)
        self.x_g = _param(1 - ddd ** (0.2 * r10), 1, 1, C)

        d = config.low_rank_dim("decay")
        self.w0 = _param(www + 0.5 + zigzag * 2.5, 1, 1, C)  # + 0.5: the authors' softplus offset
        self.w1 = nn.Parameter(torch.zeros(C, d))
        self.w2 = _lora_out(d, C)

        d = config.low_rank_dim("a")
        self.a0 = _param(-0.19 + zigzag * 0.3 + linear * 0.4, 1, 1, C)
        self.a1 = nn.Parameter(torch.zeros(C, d))
        self.a2 = _lora_out(d, C)

        if value_gate:
            d = config.low_rank_dim("v")
            self.v0 = _param(0.73 - linear * 0.4, 1, 1, C)
            self.v1 = nn.Parameter(torch.zeros(C, d))
            self.v2 = _lora_out(d, C)
        else:
            self.v0 = self.v1 = self.v2 = None

        d = config.low_rank_dim("gate")
        self.g1 = nn.Parameter(torch.zeros(C, d))
        self.g2 = _lora_out(d, C)

        self.k_k = _param(0.71 - linear * 0.1, 1, 1, C)
        self.k_a = _param(torch.full_like(n, 1.02), 1, 1, C)
        self.r_k = _param(torch.full_like(n, -0.04), H, N)

        self.add_projections(config, layer_id, gate=False)  # generate_init_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, self.first_value.v = self.mix(x, self.first_value.v)
        return out

    def mix(self, x: torch.Tensor, v_first: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The time-mix with v_first passed explicitly, as in the authors' forward(x, v_first): None marks
        the first application, whose values become v_first. Returns (output (B, T, C), v_first)."""
        B, T, C = x.size()
        H, N = self.n_head, self.head_size
        xx = _token_shift_delta(x)  # (B, T, C)
        xr, xw, xk, xv, xa, xg = (
            torch.addcmul(x, xx, mu) for mu in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g)
        )  # 6 x (B, T, C)

        r = self.receptance(xr)  # (B, T, C)
        z = self.w0 + torch.tanh(xw @ self.w1) @ self.w2  # (B, T, C)
        w = RWKV7_W_LOWER_BOUND * torch.sigmoid(at_least_fp32(z))  # log decay in [-e^-1/2, 0)
        k = self.key(xk)  # (B, T, C)
        v = self.value(xv)  # (B, T, C)
        if v_first is None:  # the first application in this forward: its values are v_first
            v_first = v
        elif self.v0 is None:
            raise RuntimeError("an RWKV-7 block without a value-residual gate was applied after the first")
        else:  # value residual: move toward v_first, by a learned per-channel amount
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # (B, T, C): in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2  # (B, T, C)

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)  # (B, T, H, N): removal key
        k = k * (1 + (a - 1) * self.k_a)  # (B, T, C)
        r, w, k, v, a = (t.reshape(B, T, H, N) for t in (r, w, k, v, a))  # (B, T, H, N) each
        o, _ = rwkv7(
            r, w, k, v, -kk, kk * a, scale=1.0, w_lower_bound=RWKV7_W_LOWER_BOUND, backend=self.backend
        )  # (B, T, H, N)
        o = self.norm_heads(o)  # (B, T, C)
        bonus = (r * k * self.r_k).sum(dim=-1, keepdim=True) * v  # (B, T, H, N): (r . (k * r_k)) v
        o = o + bonus.reshape(B, T, C)
        return self.output(o * g), v_first  # (B, T, C), (B, T, C)


class _ChannelMix(nn.Module):
    """What the RWKV-7 and RWKV-6 channel-mixes share: value(relu(key(x))^2), key C -> d_ffn and value
    d_ffn -> C (with RWKV-6's receptance C -> C between them), with generate_init_weight's init: key
    orthogonal, receptance and value zero."""

    def add_projections(self, config: _RWKVConfig, receptance: bool) -> None:
        C = config.d_model
        self.key = nn.Linear(C, config.d_ffn, bias=False)
        self.receptance = nn.Linear(C, C, bias=False) if receptance else None
        self.value = nn.Linear(config.d_ffn, C, bias=False)
        _orthogonal_(self.key.weight, 1.0)
        if receptance:
            nn.init.zeros_(self.receptance.weight)
        nn.init.zeros_(self.value.weight)

    def ffn(self, xk: torch.Tensor) -> torch.Tensor:
        return self.value(torch.relu(self.key(xk)) ** 2)  # (B, T, C)


class RWKV7ChannelMix(_ChannelMix):
    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        _, r10, n = _init_basis(config, layer_id)
        self.x_k = _param(1 - (n / config.d_model) ** (r10**4), 1, 1, config.d_model)
        self.add_projections(config, receptance=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(torch.addcmul(x, _token_shift_delta(x), self.x_k))  # (B, T, C)


def _rwkv7_block(config: RWKV7Config, layer_id: int, first_value: FirstValue) -> _Block:
    # the value-residual gate only where it can be used (see the module docstring)
    value_gate = layer_id > 0 or config.loops > 1 or (config.share == "all" and config.n_layer > 1)
    att = RWKV7TimeMix(config, layer_id, first_value, value_gate)
    return _Block(config.d_model, att, RWKV7ChannelMix(config, layer_id))


# --- RWKV-6 ----------------------------------------------------------------------------------------


class RWKV6TimeMix(_TimeMix):
    def __init__(self, config: RWKV6Config, layer_id: int):
        super().__init__()
        C, N, H = config.d_model, config.head_size, config.n_head
        self.n_head, self.head_size = H, N
        self.backend = config.backend

        # the authors' layer- and channel-dependent init (RWKV_Tmix_x060.__init__)
        r01, r10, n = _init_basis(config, layer_id)
        ddd = n / C
        self.time_maa_x = _param(1 - ddd**r10, 1, 1, C)
        self.time_maa_w = _param(1 - ddd**r10, 1, 1, C)
        self.time_maa_k = _param(1 - ddd**r10, 1, 1, C)
        self.time_maa_v = _param(1 - (ddd**r10 + 0.3 * r01), 1, 1, C)
        self.time_maa_r = _param(1 - ddd ** (0.5 * r10), 1, 1, C)
        self.time_maa_g = _param(1 - ddd ** (0.5 * r10), 1, 1, C)

        d = config.low_rank_dim("mix")  # one LoRA producing the 5 mix offsets (w, k, v, r, g)
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, 5 * d))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, d, C))
        nn.init.uniform_(self.time_maa_w2, -0.01, 0.01)

        self.time_decay = _param(-6 + 5 * (n / (C - 1)) ** (0.7 + 1.3 * r01), 1, 1, C)
        d = config.low_rank_dim("decay")
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, d))
        self.time_decay_w2 = nn.Parameter(torch.empty(d, C))
        nn.init.uniform_(self.time_decay_w2, -0.01, 0.01)

        zigzag = ((n + 1) % 3 - 1) * 0.1
        self.time_faaaa = _param(r01 * (1 - n / (C - 1)) + zigzag, H, N)  # the bonus u

        self.add_projections(config, layer_id, gate=True)  # generate_init_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        H, N = self.n_head, self.head_size
        xx = _token_shift_delta(x)  # (B, T, C)
        xxx = torch.addcmul(x, xx, self.time_maa_x)  # (B, T, C)
        xxx = torch.tanh(xxx @ self.time_maa_w1).view(B * T, 5, -1).transpose(0, 1)  # (5, B*T, d)
        xxx = torch.bmm(xxx, self.time_maa_w2).view(5, B, T, C)  # data-dependent mix offsets
        mw, mk, mv, mr, mg = xxx.unbind(dim=0)  # 5 x (B, T, C)
        xw = torch.addcmul(x, xx, self.time_maa_w + mw)
        xk = torch.addcmul(x, xx, self.time_maa_k + mk)
        xv = torch.addcmul(x, xx, self.time_maa_v + mv)
        xr = torch.addcmul(x, xx, self.time_maa_r + mr)
        xg = torch.addcmul(x, xx, self.time_maa_g + mg)

        r = self.receptance(xr)  # (B, T, C)
        k = self.key(xk)  # (B, T, C)
        v = self.value(xv)  # (B, T, C)
        g = F.silu(self.gate(xg))  # (B, T, C)
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2  # (B, T, C)
        w = -torch.exp(at_least_fp32(w))  # log decay: the decay is exp(-exp(w))

        r, k, v, w = (t.reshape(B, T, H, N) for t in (r, k, v, w))  # (B, T, H, N) each
        o, _ = rwkv6(r, k, v, w, self.time_faaaa, scale=1.0, backend=self.backend)  # (B, T, H, N)
        return self.output(self.norm_heads(o) * g)  # (B, T, C)


class RWKV6ChannelMix(_ChannelMix):
    def __init__(self, config: RWKV6Config, layer_id: int):
        super().__init__()
        C = config.d_model
        _, r10, n = _init_basis(config, layer_id)
        self.time_maa_k = _param(1 - (n / C) ** r10, 1, 1, C)
        self.time_maa_r = _param(1 - (n / C) ** r10, 1, 1, C)
        self.add_projections(config, receptance=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xx = _token_shift_delta(x)  # (B, T, C)
        xk = torch.addcmul(x, xx, self.time_maa_k)
        xr = torch.addcmul(x, xx, self.time_maa_r)
        kv = self.ffn(xk)  # (B, T, C)
        return torch.sigmoid(self.receptance(xr)) * kv  # (B, T, C)


# --- the models ------------------------------------------------------------------------------------


class _RWKV(Backbone):
    """Embedding -> ln0 -> blocks -> ln_out -> LM head, with the authors' init of emb and head."""

    def __init__(self, config: _RWKVConfig, make_block):
        super().__init__(config)
        V, C = config.vocab_size, config.d_model
        self.emb = nn.Embedding(V, C)
        self.ln0 = nn.LayerNorm(C)  # the authors' blocks.0.ln0, applied in `embed`
        self.blocks = self.make_layers(make_block)
        self.ln_out = nn.LayerNorm(C)
        self.lm_head = self.make_head(self.emb)
        # generate_init_weight: head orthogonal at gain 0.5 * sqrt(V / C) (0.5 if V <= C); embedding
        # uniform in +-1e-4 (ln0 makes its scale irrelevant to the forward). Tied, the shared matrix
        # takes the head's init, whose scale does matter.
        if not config.tie_embeddings:
            nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        _orthogonal_(self.lm_head.weight, 0.5 * math.sqrt(V / C) if V > C else 0.5)

    @property
    def layers(self) -> nn.ModuleList:
        return self.blocks  # the authors' name for the block list

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.ln0(self.emb(idx))  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_out(x))  # (B, T, vocab_size)


class RWKV7(_RWKV):
    """RWKV-7 "Goose" (x070) language model on the grokbench Backbone."""

    config: RWKV7Config

    def __init__(self, config: RWKV7Config):
        first_value = FirstValue()
        super().__init__(config, lambda i: _rwkv7_block(config, i, first_value))
        self.first_value = first_value

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        self.first_value.v = None  # a new forward: its first time-mix application sets v_first
        return super().embed(idx)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        self.first_value.v = None  # the forward is over: let go of v_first (and its graph)
        return super().head(x)

    def side_state(self) -> torch.Tensor | None:
        return self.first_value.v  # v_first once block 0 has run (Backbone.trunk_states)

    def set_side_state(self, state: torch.Tensor | None) -> None:
        self.first_value.v = state


class RWKV6(_RWKV):
    """RWKV-6 "Finch" (x060) language model on the grokbench Backbone."""

    config: RWKV6Config

    def __init__(self, config: RWKV6Config):
        super().__init__(
            config, lambda i: _Block(config.d_model, RWKV6TimeMix(config, i), RWKV6ChannelMix(config, i))
        )
