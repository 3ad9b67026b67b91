"""GPT-2 (decoder-only Transformer) in plain PyTorch.

Written for grokbench after reading, not copying, these reference implementations:

1) Andrej Karpathy's nanoGPT, model.py:
   https://github.com/karpathy/nanoGPT/blob/master/model.py
   (module layout `transformer.{wte,wpe,h,ln_f}` + `lm_head`, the residual-projection init)
2) Hugging Face transformers, GPT2LMHeadModel:
   https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py
   (parameter names, `Conv1D` weight layout, `gelu_new`; used as the numerical reference in tests)
3) OpenAI's original TensorFlow code:
   https://github.com/openai/gpt-2/blob/master/src/model.py

Architecture: learned absolute position embeddings, pre-LayerNorm blocks
(x + attn(ln_1(x)), x + mlp(ln_2(x))), causal multi-head self-attention via
`F.scaled_dot_product_attention(is_causal=True)`, a 4x MLP with tanh-approximated GELU
(GPT-2's `gelu_new`), a final LayerNorm and an LM head tied to the token embedding by default.
Parameter names match GPT2LMHeadModel's so `load_hf_gpt2_state_dict` is a name-for-name copy.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, BackboneConfig, check_at_least, check_positive
from .hf import check_settings, copy_state_dict
from .modules import init_normal_, init_residual_, pre_norm_residual


@dataclass(kw_only=True)
class GPTConfig(BackboneConfig):
    n_head: int = 4
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: True)
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "n_head")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_positive(self, "layer_norm_eps")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.d_model = config.d_model
        self.dropout = config.dropout
        # query, key, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        # output projection (a residual projection: scaled init, see GPT._init_weights)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, d_model
        q, k, v = self.c_attn(x).split(self.d_model, dim=2)  # 3 x (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs), softmax(q k^T / sqrt(hs) + causal mask) v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C), heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        # GPT-2's `gelu_new` is the tanh approximation of GELU
        self.gelu = nn.GELU(approximate="tanh")
        # down projection (a residual projection: scaled init, see GPT._init_weights)
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pre_norm_residual(x, self.ln_1, self.attn, self.ln_2, self.mlp)  # (B, T, C)


class GPT(Backbone):
    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),  # token embedding
                wpe=nn.Embedding(config.max_len, config.d_model),  # position embedding
                drop=nn.Dropout(config.dropout),
                h=self.make_layers(lambda i: Block(config)),
                ln_f=nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        # no bias, whatever config.bias says; tied to wte by default, as GPT-2 does
        self.lm_head = self.make_head(self.transformer.wte)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, LayerNorm (1, 0) as constructed, and the two
        residual projections per block at std 0.02 / sqrt(2 * n_layer) (one per residual add)."""
        init_normal_(self.modules())
        out = [w for b in self.transformer.h for w in (b.attn.c_proj.weight, b.mlp.c_proj.weight)]
        init_residual_(out, self.config.n_layer, per_layer=2)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (a tied LM head is counted once). With exclude_embeddings, the
        token and position embeddings are left out; an untied lm_head is still counted."""
        n = sum(p.numel() for p in self.parameters())  # parameters() deduplicates tied weights
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel()
            n -= self.transformer.wpe.weight.numel()
        return n

    @property
    def layers(self) -> nn.ModuleList:
        return self.transformer.h  # HF GPT-2's name for the block list

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.transformer.wte(idx)  # (B, T, C)

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.size(1), dtype=torch.long, device=x.device)  # (T,)
        return self.transformer.drop(x + self.transformer.wpe(pos))  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)


# Settings of transformers.GPT2Config that change the computation without changing any
# parameter shape; they must match what GPT implements. (name, value GPT implements)
_HF_GPT2_FIXED_SETTINGS = (
    ("scale_attn_weights", True),
    ("scale_attn_by_inverse_layer_idx", False),
    ("add_cross_attention", False),
)


@torch.no_grad()
def load_hf_gpt2_state_dict(model: GPT, hf_model) -> None:
    """Copy the weights of a `transformers.GPT2LMHeadModel` into `model`, in place.

    Every parameter name and shape is checked and any missing or unexpected key raises
    ValueError, as does an HF config setting that GPT does not implement (n_head, activation,
    LayerNorm eps, ...). HF GPT-2 uses `Conv1D` (a Linear with its weight stored as
    (in, out)), so those weights are transposed into our nn.Linear's (out, in).
    """
    from transformers import GPT2LMHeadModel  # dev/test dependency only
    from transformers.pytorch_utils import Conv1D

    if not isinstance(hf_model, GPT2LMHeadModel):
        raise TypeError(f"expected a transformers.GPT2LMHeadModel, got {type(hf_model).__name__}")
    cfg, hf_cfg = model.config, hf_model.config

    # settings invisible in the parameter shapes
    tanh_gelu = hf_cfg.activation_function in ("gelu_new", "gelu_pytorch_tanh")
    settings = [
        ("n_head", hf_cfg.n_head, cfg.n_head),
        ("activation_function", "gelu_new" if tanh_gelu else hf_cfg.activation_function, "gelu_new"),
        ("layer_norm_epsilon", hf_cfg.layer_norm_epsilon, cfg.layer_norm_eps),
    ]
    settings += [(name, getattr(hf_cfg, name, value), value) for name, value in _HF_GPT2_FIXED_SETTINGS]
    check_settings("GPT2", settings)
    transposed = [f"{name}.weight" for name, m in hf_model.named_modules() if isinstance(m, Conv1D)]
    tied_to = "transformer.wte.weight" if cfg.tie_embeddings else None
    copy_state_dict("GPT2", model, hf_model, tied_to, transposed)
