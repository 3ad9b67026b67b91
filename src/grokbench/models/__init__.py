"""Registry of model families.

A family is a name mapped to a builder: a callable taking keyword arguments `vocab_size`,
`block_size` (both supplied by the task) plus the family's own keys, and returning an
nn.Module mapping token ids (B, T) to logits (B, T, vocab_size). The family's keys and their
types are read off the builder's signature and type hints, so adding a family (llama, rwkv,
mamba, ...) is one import and one entry in FAMILIES.
"""

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from grokbench.models.deltanet import DeltaNet, DeltaNetConfig
from grokbench.models.gla import GLA, GLAConfig
from grokbench.models.gpt import GPT, GPTConfig
from grokbench.models.hgrn2 import HGRN2, HGRN2Config
from grokbench.models.llama import Llama, LlamaConfig
from grokbench.models.mamba import Mamba, Mamba2, Mamba2Config, MambaConfig
from grokbench.models.presets import PRESETS, expand_preset
from grokbench.models.retnet import RetNet, RetNetConfig
from grokbench.models.rwkv import RWKV6, RWKV7, RWKV6Config, RWKV7Config
from grokbench.params import coerce, type_name

# keyword arguments every builder takes, supplied by build_model's caller, not by the spec
_TASK_KEYS = ("vocab_size", "block_size")


def _from_config(model_cls: type[nn.Module], config_cls: type) -> Callable[..., nn.Module]:
    """Builder `model_cls(config_cls(**kwargs))` whose signature is the config dataclass's."""

    def build(**kwargs: Any) -> nn.Module:
        return model_cls(config_cls(**kwargs))

    build.__signature__ = inspect.signature(config_cls)  # type: ignore[attr-defined]
    build.__annotations__ = typing.get_type_hints(config_cls)
    build.__name__ = build.__qualname__ = f"build_{model_cls.__name__.lower()}"
    return build


FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "gpt": _from_config(GPT, GPTConfig),
    "llama": _from_config(Llama, LlamaConfig),
    "mamba": _from_config(Mamba, MambaConfig),
    "mamba2": _from_config(Mamba2, Mamba2Config),
    "rwkv6": _from_config(RWKV6, RWKV6Config),
    "rwkv7": _from_config(RWKV7, RWKV7Config),
    "gla": _from_config(GLA, GLAConfig),
    "retnet": _from_config(RetNet, RetNetConfig),
    "deltanet": _from_config(DeltaNet, DeltaNetConfig),
    "hgrn2": _from_config(HGRN2, HGRN2Config),
}


def _unknown_family(family: Any, where: str) -> ValueError:
    return ValueError(f"{where}: unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")


def family_keys(family: str) -> dict[str, type]:
    """The keys a model spec of `family` may set (besides "family"), with their types."""
    if family not in FAMILIES:
        raise _unknown_family(family, "model")
    builder = FAMILIES[family]
    hints = typing.get_type_hints(builder)
    return {
        name: hints.get(name, Any) for name in inspect.signature(builder).parameters if name not in _TASK_KEYS
    }


def build_model(spec: dict, vocab_size: int, block_size: int, where: str = "model") -> nn.Module:
    """Build the model described by `spec`, e.g. {"family": "gpt", "n_layer": 2, ...}.

    Raises ValueError, prefixed with `where` (the config path, e.g. "models.gpt_tiny"), on an
    unknown family, an unknown key, a value of the wrong type or a value the family rejects.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: model spec must be a mapping, got {type(spec).__name__}")
    spec = expand_preset(spec, where)
    if "family" not in spec:
        raise ValueError(f"{where}: missing key 'family'; known: {', '.join(sorted(FAMILIES))}")
    family = spec["family"]
    if not isinstance(family, str) or family not in FAMILIES:
        raise _unknown_family(family, where)
    allowed = family_keys(family)
    kwargs = {}
    for key, value in spec.items():
        if key == "family":
            continue
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{where}: unknown key {key!r} for family {family}{hint}; known: {', '.join(allowed)}"
            )
        ok, kwargs[key] = coerce(value, allowed[key])
        if not ok:
            raise ValueError(
                f"{where}: key {key!r} for family {family} must be {type_name(allowed[key])}, "
                f"got {value!r} ({type(value).__name__})"
            )
    try:
        return FAMILIES[family](vocab_size=vocab_size, block_size=block_size, **kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: invalid {family} model: {e}") from e


def check_model_spec(spec: dict, where: str = "model") -> None:
    """Validate a spec without allocating weights: build it on the meta device."""
    with torch.device("meta"):
        build_model(spec, vocab_size=16, block_size=8, where=where)


def count_params(model: nn.Module) -> int:
    """Number of parameters, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "FAMILIES",
    "GPT",
    "GPTConfig",
    "PRESETS",
    "build_model",
    "check_model_spec",
    "count_params",
    "family_keys",
]
