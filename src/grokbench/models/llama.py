"""LLaMA (decoder-only Transformer, Touvron et al. 2023) in plain PyTorch.

Written for grokbench after reading, not copying, these reference implementations:

1) Meta's llama, model.py:
   https://github.com/meta-llama/llama/blob/main/llama/model.py
   (RMSNorm computed in float32, RoPE frequencies in float32, the SwiGLU hidden size rule)
2) Hugging Face transformers, LlamaForCausalLM:
   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py
   (parameter names, the half-split `rotate_half` RoPE layout, grouped-query attention; used as the
   numerical reference in tests)

Architecture: no position embeddings; rotary position embeddings (RoPE, Su et al. 2021) on queries and
keys in every layer; pre-RMSNorm blocks (x + attn(norm(x)), x + mlp(norm(x))); causal multi-head
self-attention via `F.scaled_dot_product_attention(is_causal=True)`, with grouped-query attention
when `n_kv_head < n_head` (query head h reads key/value head h // (n_head / n_kv_head), as HF's
`repeat_kv`); a SwiGLU MLP `down(silu(gate(x)) * up(x))`; a final RMSNorm and an LM head. No biases,
no dropout. Parameter names match LlamaForCausalLM's, so `load_hf_llama_state_dict` is a
name-for-name copy.

Choices, where the references leave room:
- MLP hidden size: `mlp_hidden` if given, else Meta's rule int(2 * 4 * d_model / 3) rounded up to a
  multiple of `multiple_of`. Meta uses multiple_of=256 for its 4096-wide models; for the study's widths
  (64-768) that would inflate the MLP (d=128 -> 512 = 4x), so the default here is 32
  (d=64 -> 192, d=128 -> 352, d=256 -> 704, d=768 -> 2048).
- The LM head is tied to the token embedding by default (`tie_embeddings`, shared by every family so
  that families compare at equal settings); LLaMA itself unties it (`tie_embeddings: false`).
- Precision, as both references: the RoPE angles and their cos/sin are computed in float32 (and then
  held in the model's dtype: exact in float64, rounded in a bfloat16 model as HF rounds them), the
  rotation runs in at least float32 and is cast back, and RMSNorm normalizes in at least float32. "At
  least": in float64 both stay in float64, where HF's RMSNorm and eager softmax drop to float32.
- RoPE positions: 0 .. max_len - 1, where `max_len` = memory tokens + block_size: memory tokens
  prepended by the backbone take positions 0 .. m - 1 and the input tokens m .. m + T - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, BackboneConfig, check_at_least, check_positive
from .hf import check_settings, copy_state_dict
from .modules import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    init_normal_,
    init_residual_,
    pre_norm_residual,
    rope_cos_sin,
    swiglu_hidden,
)


@dataclass(kw_only=True)
class LlamaConfig(BackboneConfig):
    n_head: int = 4
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None: n_head
    mlp_hidden: int | None = None  # SwiGLU hidden size; None: swiglu_hidden(d_model, multiple_of)
    multiple_of: int = 32  # rounding of the default mlp_hidden
    rope_theta: float = 10000.0  # RoPE base
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "n_head", "multiple_of")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head size, got d_model / n_head = {self.head_dim}")
        if self.n_kv_head is not None and not (
            1 <= self.n_kv_head <= self.n_head and self.n_head % self.n_kv_head == 0
        ):
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
        if self.mlp_hidden is not None:
            check_at_least(self, 1, "mlp_hidden", note=" (or None)")
        check_positive(self, "rope_theta", "rms_norm_eps")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads actually used (n_kv_head, defaulting to n_head)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def mlp_hidden_size(self) -> int:
        """SwiGLU hidden size actually used (mlp_hidden, defaulting to Meta's rule)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return swiglu_hidden(self.d_model, self.multiple_of)


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        d, hd = config.d_model, config.head_dim
        self.q_proj = nn.Linear(d, self.n_head * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_head * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_head * hd, bias=False)
        # output projection (a residual projection: scaled init, see Llama._init_weights)
        self.o_proj = nn.Linear(self.n_head * hd, d, bias=False)
        # RoPE tables for every position a block can see (memory tokens included); not in the state
        # dict, and a copy per attention module (a few KiB) keeps blocks self-contained under `share`
        cos, sin = rope_cos_sin(config.max_len, hd, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_len, hd)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_len, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.size()
        hd = self.head_dim
        q = self.q_proj(x).view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_head, hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_head, hd).transpose(1, 2)  # (B, nkv, T, hd)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hd): positions 0 .. T - 1
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_head != self.n_head:  # GQA: each key/value head serves n_rep consecutive query heads
            n_rep = self.n_head // self.n_kv_head
            k = k[:, :, None].expand(B, self.n_kv_head, n_rep, T, hd).reshape(B, self.n_head, T, hd)
            v = v[:, :, None].expand(B, self.n_kv_head, n_rep, T, hd).reshape(B, self.n_head, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * hd)  # (B, T, nh * hd), heads side by side
        return self.o_proj(y)  # (B, T, C)


class LlamaBlock(nn.Module):
    """Pre-RMSNorm Transformer block (HF: LlamaDecoderLayer)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden_size)  # HF: LlamaMLP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm_1, norm_2 = self.input_layernorm, self.post_attention_layernorm
        return pre_norm_residual(x, norm_1, self.self_attn, norm_2, self.mlp)  # (B, T, C)


class Llama(Backbone):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = nn.ModuleDict(
            dict(
                embed_tokens=nn.Embedding(config.vocab_size, config.d_model),
                layers=self.make_layers(lambda i: LlamaBlock(config)),
                norm=RMSNorm(config.d_model, config.rms_norm_eps),
            )
        )
        self.lm_head = self.make_head(self.model.embed_tokens)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """N(0, 0.02) for Linear and Embedding weights, RMSNorm gains 1, and the two residual projections
        per block (o_proj, down_proj) at std 0.02 / sqrt(2 * n_layer), as our GPT. The backbone's memory
        parameters keep their own init."""
        init_normal_([*self.model.modules(), *([] if self.config.tie_embeddings else [self.lm_head])])
        out = [w for b in self.layers for w in (b.self_attn.o_proj.weight, b.mlp.down_proj.weight)]
        init_residual_(out, self.config.n_layer, per_layer=2)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (shared tensors counted once). With exclude_embeddings, the token
        embedding is left out; an untied lm_head is still counted."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers  # HF Llama's name for the block list

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(idx)  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(x))  # (B, T, vocab_size)


@torch.no_grad()
def load_hf_llama_state_dict(model: Llama, hf_model) -> None:
    """Copy the weights of a `transformers.LlamaForCausalLM` into `model`, in place.

    Every parameter name and shape is checked and any missing or unexpected key raises ValueError, as
    does an HF config setting that changes the computation without changing a shape (head counts and
    head size, RoPE type / theta / scaling, biases, activation, RMSNorm eps, attention dropout) or a
    variant of ours that HF does not have (shared layers, loops). Names are equal on both sides and no
    tensor is transposed.
    """
    from transformers import LlamaForCausalLM  # dev/test dependency only

    if not isinstance(hf_model, LlamaForCausalLM):
        raise TypeError(f"expected a transformers.LlamaForCausalLM, got {type(hf_model).__name__}")
    cfg, hf_cfg = model.config, hf_model.config

    # settings invisible in the parameter shapes
    rope = dict(hf_cfg.rope_parameters or {})
    settings = [
        ("num_attention_heads", hf_cfg.num_attention_heads, cfg.n_head),
        ("num_key_value_heads", hf_cfg.num_key_value_heads, cfg.kv_heads),
        ("head_dim", getattr(hf_cfg, "head_dim", None), cfg.head_dim),
        ("hidden_act", hf_cfg.hidden_act, "silu"),
        ("rms_norm_eps", hf_cfg.rms_norm_eps, cfg.rms_norm_eps),
        ("attention_bias", hf_cfg.attention_bias, False),
        ("mlp_bias", hf_cfg.mlp_bias, False),
        ("attention_dropout", float(hf_cfg.attention_dropout or 0.0), 0.0),
        ("rope_parameters['rope_type']", rope.pop("rope_type", None), "default"),
        ("rope_parameters['rope_theta']", rope.pop("rope_theta", None), cfg.rope_theta),
    ]
    problems = []
    if rope:  # scaling factors, partial rotary, ...: not implemented
        problems.append(f"rope_parameters: HF sets {sorted(rope)}, ours implements none of them")
    if cfg.share != "none" or cfg.loops != 1:
        problems.append(f"ours has share={cfg.share!r}, loops={cfg.loops}; HF has neither")
    check_settings("Llama", settings, problems)
    tied_to = "model.embed_tokens.weight" if cfg.tie_embeddings else None
    copy_state_dict("Llama", model, hf_model, tied_to)
