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

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, BackboneConfig


@dataclass(kw_only=True)
class GPTConfig(BackboneConfig):
    n_head: int = 4
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: True)
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_head < 1:
            raise ValueError(f"n_head must be >= 1, got {self.n_head}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")


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
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


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
        # GPT-2's LM head has no bias, whatever config.bias says
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # weight tying (Press & Wolf 2017), as GPT-2 does
            self.lm_head.weight = self.transformer.wte.weight
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, LayerNorm (1, 0), and the two residual
        projections per block at std 0.02 / sqrt(2 * n_layer) (one per residual add)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.transformer.h:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=resid_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=resid_std)

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
    problems = []
    if hf_cfg.n_head != cfg.n_head:
        problems.append(f"n_head: HF {hf_cfg.n_head} != ours {cfg.n_head}")
    if hf_cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(
            f"activation_function: HF {hf_cfg.activation_function!r}, ours is tanh-GELU ('gelu_new')"
        )
    if hf_cfg.layer_norm_epsilon != cfg.layer_norm_eps:
        problems.append(f"layer_norm_epsilon: HF {hf_cfg.layer_norm_epsilon} != ours {cfg.layer_norm_eps}")
    for name, value in _HF_GPT2_FIXED_SETTINGS:
        if getattr(hf_cfg, name, value) != value:
            problems.append(f"{name}: HF {getattr(hf_cfg, name)!r}, ours implements {value!r}")
    if problems:
        raise ValueError("incompatible GPT2 config: " + "; ".join(problems))

    # HF state dict without buffers (older versions keep causal-mask buffers `attn.bias`)
    buffer_names = {name for name, _ in hf_model.named_buffers()}
    sd_hf = {k: v for k, v in hf_model.state_dict().items() if k not in buffer_names}
    transposed = {f"{name}.weight" for name, m in hf_model.named_modules() if isinstance(m, Conv1D)}
    sd = model.state_dict()  # contains both wte.weight and lm_head.weight, even when tied

    missing = sorted(set(sd) - set(sd_hf))
    unexpected = sorted(set(sd_hf) - set(sd))
    if missing or unexpected:
        raise ValueError(
            f"GPT2 state dict mismatch: missing from HF model {missing}, unexpected in HF model {unexpected}"
        )
    if cfg.tie_embeddings and not torch.equal(sd_hf["lm_head.weight"], sd_hf["transformer.wte.weight"]):
        raise ValueError("our lm_head is tied to wte but the HF model's lm_head differs from wte")

    for key, ours in sd.items():
        theirs = sd_hf[key]
        if key in transposed:
            theirs = theirs.t()
        if theirs.shape != ours.shape:
            raise ValueError(
                f"shape mismatch for {key}: HF {tuple(theirs.shape)} "
                f"({'transposed Conv1D' if key in transposed else 'as is'}) "
                f"vs ours {tuple(ours.shape)}"
            )
        ours.copy_(theirs)  # state_dict tensors share storage with the parameters
