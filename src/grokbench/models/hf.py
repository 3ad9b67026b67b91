"""Loading the weights of transformers' models into ours (GPT-2, Llama, Mamba, Mamba-2: the numerical
references of the tests), each a name-for-name copy with every name and shape checked, and the settings
that change the computation without changing a parameter shape compared. The family files hold the
loaders (`load_hf_*_state_dict`), which say which settings and names to compare; transformers itself is
imported there, only when a loader is called (a dev/test dependency).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn


def check_settings(name: str, settings: Iterable[tuple[str, object, object]], problems: Iterable[str] = ()):
    """ValueError listing every (setting, HF value, the value we implement) that differs, and `problems`."""
    found = [f"{key}: HF {theirs!r} != ours {ours!r}" for key, theirs, ours in settings if theirs != ours]
    found += problems
    if found:
        raise ValueError(f"incompatible {name} config: " + "; ".join(found))


@torch.no_grad()
def copy_state_dict(
    name: str, model: nn.Module, hf_model: nn.Module, tied_to: str | None, transposed: Iterable[str] = ()
) -> None:
    """Copy `hf_model`'s parameters into `model` (in place), name for name; raises ValueError, before
    copying anything, on a missing or unexpected name, a shape mismatch, or, where our LM head is tied to
    the embedding `tied_to`, an HF head that differs from it. Names in `transposed` are stored as (in, out)
    on the HF side (GPT-2's Conv1D) and transposed into our nn.Linear's (out, in)."""
    buffers = {key for key, _ in hf_model.named_buffers()}  # e.g. old causal-mask buffers `attn.bias`
    sd_hf = {key: value for key, value in hf_model.state_dict().items() if key not in buffers}
    sd = model.state_dict()  # holds lm_head.weight even when tied
    missing, unexpected = sorted(set(sd) - set(sd_hf)), sorted(set(sd_hf) - set(sd))
    if missing or unexpected:
        raise ValueError(
            f"{name} state dict mismatch: missing from HF model {missing}, "
            f"unexpected in HF model {unexpected}"
        )
    if tied_to is not None and not torch.equal(sd_hf["lm_head.weight"], sd_hf[tied_to]):
        raise ValueError(f"our lm_head is tied to {tied_to} but the HF model's lm_head differs from it")
    transposed = set(transposed)
    theirs = {key: sd_hf[key].t() if key in transposed else sd_hf[key] for key in sd}
    for key, ours in sd.items():
        if theirs[key].shape != ours.shape:
            how = " (a transposed Conv1D)" if key in transposed else ""
            raise ValueError(
                f"shape mismatch for {key}: HF {tuple(theirs[key].shape)}{how} vs ours {tuple(ours.shape)}"
            )
    for key, ours in sd.items():
        ours.copy_(theirs[key])  # state_dict tensors share storage with the parameters
