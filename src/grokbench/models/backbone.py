"""The backbone every model family shares: token embedding -> blocks -> final norm -> LM head.

A family subclasses `Backbone` and provides its blocks and embeddings; the transformer variants of the
study live here once, so they compose with any family where they make sense:

- cross-layer parameter sharing (`share`): "all" reuses one block at every depth (Universal-Transformer
  style, Dehghani et al. 2019); "mlp" shares only the MLP (channel mixer) across depth, each layer keeping
  its own sequence mixer (attention / recurrence);
- explicit recurrence (`loops`): the block stack applied k times, optionally re-injecting the input
  embedding before every pass after the first (`reinject`, as in looped / recurrent-depth transformers);
- memory augmentation: `memory_tokens` learned vectors prepended to every sequence (their outputs are
  dropped before the head), and `kv_memory`, a key-value memory shared by all layers and added as a
  residual branch after every block: softmax(norm(x) K^T / sqrt(d)) V with `kv_memory` learned slots
  (the persistent-memory layer of Sukhbaatar et al. 2019; cf. `--add_memory` in the anchor repository
  OSU-NLP-Group/GrokkedTransformer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SHARE_MODES = ("none", "all", "mlp")


def check_at_least(config, minimum: int, *names: str, note: str = "") -> None:
    """ValueError naming the first field of `names` whose value is below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}{note}, got {value}")


def check_positive(config, *names: str) -> None:
    """ValueError naming the first field of `names` whose value is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(kw_only=True)
class BackboneConfig:
    vocab_size: int
    block_size: int  # longest input sequence (memory tokens come on top)
    n_layer: int = 2
    d_model: int = 128
    tie_embeddings: bool = True
    share: str = "none"  # none | all | mlp
    loops: int = 1  # passes through the block stack
    reinject: bool = False  # add the input embedding before passes 2..loops
    memory_tokens: int = 0  # learned vectors prepended to the sequence
    kv_memory: int = 0  # slots of the shared key-value memory (0: none)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "vocab_size", "block_size", "n_layer", "d_model", "loops")
        check_at_least(self, 0, "memory_tokens", "kv_memory")
        if self.share not in SHARE_MODES:
            raise ValueError(f"share must be one of {SHARE_MODES}, got {self.share!r}")
        if self.reinject and self.loops == 1:
            raise ValueError("reinject needs loops > 1")

    @property
    def max_len(self) -> int:
        """Longest sequence the blocks see: memory tokens + input."""
        return self.block_size + self.memory_tokens


class KVMemory(nn.Module):
    """A key-value memory read by every position: softmax(norm(x) K^T / sqrt(d)) V."""

    def __init__(self, d_model: int, slots: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.keys = nn.Parameter(torch.randn(slots, d_model) * 0.02)  # (M, C)
        self.values = nn.Parameter(torch.zeros(slots, d_model))  # (M, C): starts as a no-op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.norm(x) @ self.keys.t() / math.sqrt(x.size(-1))  # (B, T, M)
        return F.softmax(scores, dim=-1) @ self.values  # (B, T, C)


class Backbone(nn.Module):
    """Subclasses set `self.layers` (an nn.ModuleList from `self.make_layers`, or a property returning
    one) and implement `embed` and `head`; `add_positions` where the family has absolute positions."""

    config: BackboneConfig
    layers: nn.ModuleList

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        m = config.memory_tokens
        self.memory = nn.Parameter(torch.randn(m, config.d_model) * 0.02) if m else None
        self.kv_memory = KVMemory(config.d_model, config.kv_memory) if config.kv_memory else None

    # --- what a family provides -------------------------------------------------------------
    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> vectors (B, T, C)."""
        raise NotImplementedError

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """Absolute position information, (B, T', C) -> (B, T', C); none by default."""
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head, (B, T, C) -> logits (B, T, V)."""
        raise NotImplementedError

    def make_head(self, embedding: nn.Embedding) -> nn.Linear:
        """The LM head (C -> V, no bias), tied to `embedding` (Press & Wolf 2017) if config.tie_embeddings."""
        head = nn.Linear(self.config.d_model, self.config.vocab_size, bias=False)
        if self.config.tie_embeddings:
            head.weight = embedding.weight
        return head

    def make_layers(self, make_block) -> nn.ModuleList:
        """`n_layer` blocks from `make_block(i)`, shared across depth as `config.share` says."""
        n, share = self.config.n_layer, self.config.share
        if share == "all":
            block = make_block(0)
            return nn.ModuleList([block] * n)
        blocks = [make_block(i) for i in range(n)]
        if share == "mlp":
            if getattr(blocks[0], "mlp", None) is None:
                name = type(self).__name__
                raise ValueError(f"share='mlp': {name} blocks have no separate MLP to share")
            for b in blocks[1:]:
                b.mlp = blocks[0].mlp
        return nn.ModuleList(blocks)

    # --- the shared forward -----------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) token ids with T <= block_size. Returns logits (B, T, vocab_size)."""
        B, T = idx.shape
        if self.config.block_size < T:  # a shape check: no graph break under torch.compile
            raise ValueError(f"sequence length {T} > block_size {self.config.block_size}")
        x = self.embed(idx)  # (B, T, C)
        m = self.config.memory_tokens
        if self.memory is not None:
            x = torch.cat([self.memory.expand(B, -1, -1), x], dim=1)  # (B, m + T, C)
        x = self.add_positions(x)
        x0 = x
        for loop in range(self.config.loops):
            if loop and self.config.reinject:
                x = x + x0
            for block in self.layers:
                x = block(x)  # (B, m + T, C)
                if self.kv_memory is not None:
                    x = x + self.kv_memory(x)
        return self.head(x[:, m:])  # (B, T, V)

    def num_params(self) -> int:
        """Parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters())
