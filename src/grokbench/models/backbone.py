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

`Backbone.hidden_states` gives the residual stream after the embedding and after every block application,
at the input positions, for any family and variant, and replaces chosen positions of one layer (activation
patching); `grokbench.mech` builds the logit lens, linear probes and causal tracing on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SHARE_MODES = ("none", "all", "mlp")

Visit = Callable[[int, torch.Tensor], torch.Tensor]  # (layer, state (B, m + T, C)) -> the state to go on with
# layer -> (mask (T,) or (B, T) bool, values (B, T, C)): see Backbone.hidden_states
Patch = Mapping[int, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrunkState:
    """Where one forward stood at hidden layer `layer` (numbered as in `Backbone.hidden_states`): all
    `Backbone.hidden_states(..., start=)` needs to go on from there without the blocks below it.

    x: the state (B, m + T, C) there, memory tokens included; x0: the layer-0 state (re-injected before
    later passes); side: what the family carries across layers besides the residual stream (RWKV-7's
    v_first; `Backbone.side_state`)."""

    layer: int
    x: torch.Tensor
    x0: torch.Tensor
    side: object = None


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
        return self.head(self._trunk(idx)[:, self.config.memory_tokens :])  # (B, T, V)

    def _trunk(
        self, idx: torch.Tensor, visit: Visit | None = None, start: TrunkState | None = None
    ) -> torch.Tensor:
        """Embedding and blocks: the final residual stream (B, m + T, C), memory tokens included.

        `visit(layer, x)`, if given, sees each hidden state (numbered as in `hidden_states`) and returns
        the tensor the forward goes on with (itself, or a patched copy). With `start`, the forward goes on
        from that state: no embedding, no block application below start.layer (idx is not read); the
        first state visited is start.x, at start.layer."""
        if start is None:
            B, T = idx.shape
            if self.config.block_size < T:  # a shape check: no graph break under torch.compile
                raise ValueError(f"sequence length {T} > block_size {self.config.block_size}")
            x = self.embed(idx)  # (B, T, C)
            if self.memory is not None:
                x = torch.cat([self.memory.expand(B, -1, -1), x], dim=1)  # (B, m + T, C)
            x = self.add_positions(x)
            first = 0
        else:
            x, first = start.x, start.layer
            self.set_side_state(start.side)
        if visit is not None:
            x = visit(first, x)
        x0 = x if first == 0 else start.x0
        layer = 0
        for loop in range(self.config.loops):
            if loop and self.config.reinject and layer >= first:
                x = x + x0
            for block in self.layers:
                if layer < first:  # applied before the resumed state
                    layer += 1
                    continue
                x = block(x)  # (B, m + T, C)
                if self.kv_memory is not None:
                    x = x + self.kv_memory(x)
                layer += 1
                if visit is not None:
                    x = visit(layer, x)
        return x

    # --- what crosses layers besides the residual stream (TrunkState.side) ----------------------
    def side_state(self) -> object:
        """The family's cross-layer state of the forward in progress (None: the stream is all)."""
        return None

    def set_side_state(self, state: object) -> None:
        """Restore what `side_state` returned, for a forward resumed from a TrunkState."""

    # --- the residual stream, for probes and patching (grokbench.mech) ------------------------
    @property
    def n_hidden(self) -> int:
        """How many hidden states `hidden_states` returns: 1 + n_layer * loops."""
        return 1 + self.config.n_layer * self.config.loops

    def hidden_states(
        self, idx: torch.Tensor, patch: Patch | None = None, start: TrunkState | None = None
    ) -> list[torch.Tensor]:
        """The residual stream of every family, (B, T, C) per layer: a list of `n_hidden` tensors.

        Layer 0 is the input to the first block (`embed`, for RWKV after `ln0`, plus GPT's absolute
        positions); layer l >= 1 is the output of the l-th block *application* (with the kv-memory read
        added after it when `kv_memory` > 0). With `loops` = k the stack is applied k times, so layer l
        is block (l - 1) % n_layer of pass (l - 1) // n_layer; with share="all" every layer is the same
        block at a new depth (share="mlp": own mixers, one MLP). Positions are the input tokens' 0..T-1: the
        `memory_tokens` positions before them are left out (in these causal models they depend on no
        input token, so they are the same in every run) and are never patched.
        `self.head(states[-1])` is exactly `self(idx)`; `self.head(states[l])` is the logit lens.

        `patch` maps a layer to (mask, values): mask (T,) or (B, T) bool, values (B, T, C); that layer's
        state is replaced by `values` where mask is true before the forward goes on (activation
        patching), and the returned state is the patched one.

        The residual stream is not all a block passes on in two cases, which patching leaves in the
        patched run's own values: with `reinject`, the layer-0 state is added again before every later
        pass (a patch at layer 0 is re-injected, a patch at a later layer is not); RWKV-7's v_first
        (the values of its first time-mix, read by every later one) comes from block 0 of the first
        pass. Everywhere else the state at layer l, all positions, determines everything after it.

        `start` (a TrunkState of `trunk_states(idx)`, e.g. of the corrupted run in causal tracing): go on
        from that layer's state without applying the blocks below it, and return the states from
        start.layer on (n_hidden - start.layer tensors); patches then apply at start.layer or above. The
        states are those of the whole forward, bit for bit: the blocks below see the same inputs.
        """
        B, T = idx.shape
        m = self.config.memory_tokens
        lowest = 0 if start is None else start.layer
        if start is not None and start.x.shape[:2] != (B, m + T):
            raise ValueError(f"start: state of shape {tuple(start.x.shape)} for inputs ({B}, {T})")
        patch = dict(patch or {})
        for layer, (mask, values) in patch.items():
            if not lowest <= layer < self.n_hidden:
                raise ValueError(f"patch: layer {layer} not in {lowest}..{self.n_hidden - 1}")
            if mask.dtype != torch.bool or mask.shape not in ((T,), (B, T)):
                raise ValueError(f"patch: layer {layer}: mask must be bool ({T},) or ({B}, {T})")
            if values.shape != (B, T, self.config.d_model):
                raise ValueError(f"patch: layer {layer}: values must be ({B}, {T}, {self.config.d_model})")
        states: list[torch.Tensor] = []

        def visit(layer: int, x: torch.Tensor) -> torch.Tensor:
            if layer in patch:
                mask, values = patch[layer]
                keep = mask.to(x.device).expand(B, T)[..., None]
                mixed = torch.where(keep, values.to(device=x.device, dtype=x.dtype), x[:, m:])
                x = torch.cat([x[:, :m], mixed], dim=1) if m else mixed
            states.append(x[:, m:])
            return x

        self._trunk(idx, visit, start)
        return states

    def trunk_states(self, idx: torch.Tensor) -> list[TrunkState]:
        """One TrunkState per hidden layer (`n_hidden`) of the forward of `idx`: the points from which
        `hidden_states(idx, patch, start=...)` goes on."""
        found: list[TrunkState] = []

        def visit(layer: int, x: torch.Tensor) -> torch.Tensor:
            x0 = found[0].x if found else x
            found.append(TrunkState(layer, x, x0, self.side_state()))
            return x

        self._trunk(idx, visit)
        return found

    def num_params(self) -> int:
        """Parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters())
