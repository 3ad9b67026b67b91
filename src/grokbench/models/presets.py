"""Size presets with matched parameter counts across families.

`tiny` is the CPU demo (the default study); `paper` is the seed study's scale (GPT-2 with 8 layers,
d=768, 12 heads, ~57M parameters with the comparison task's vocabulary). Within a preset every family's
total parameter count is within 10% of GPT's (tests/models/test_presets.py checks it at both vocabularies).
Recurrent families without a separate MLP use twice the layers, as the Mamba paper pairs two Mamba blocks
with one transformer layer; RWKV, whose LM head is untied, is slightly narrower.

A model spec `{family: mamba, preset: tiny}` takes the preset's keys; keys set next to `preset` win.
"""

from __future__ import annotations

# family: (its keys at `tiny`, at `paper`); DeltaNet's values are 2x wide (expand_v=2)
_SIZES: dict[str, tuple[dict, dict]] = {
    "gpt": ({"n_layer": 2, "d_model": 128, "n_head": 4}, {"n_layer": 8, "d_model": 768, "n_head": 12}),
    "llama": ({"n_layer": 2, "d_model": 128, "n_head": 4}, {"n_layer": 8, "d_model": 768, "n_head": 12}),
    "rwkv7": (
        {"n_layer": 2, "d_model": 112, "head_size": 28},
        {"n_layer": 8, "d_model": 768, "head_size": 64},
    ),
    "rwkv6": (
        {"n_layer": 2, "d_model": 104, "head_size": 26},
        {"n_layer": 8, "d_model": 704, "head_size": 64},
    ),
    "mamba": ({"n_layer": 4, "d_model": 120}, {"n_layer": 16, "d_model": 768}),
    "mamba2": (
        {"n_layer": 4, "d_model": 128, "headdim": 32, "d_state": 16},
        {"n_layer": 16, "d_model": 768, "headdim": 64},
    ),
    "gla": ({"n_layer": 2, "d_model": 128, "n_head": 4}, {"n_layer": 8, "d_model": 768, "n_head": 12}),
    "retnet": ({"n_layer": 2, "d_model": 128, "n_head": 4}, {"n_layer": 8, "d_model": 768, "n_head": 12}),
    "deltanet": ({"n_layer": 2, "d_model": 112, "n_head": 4}, {"n_layer": 8, "d_model": 672, "n_head": 12}),
    "hgrn2": ({"n_layer": 2, "d_model": 128, "n_head": 4}, {"n_layer": 8, "d_model": 768, "n_head": 12}),
}
PRESETS: dict[str, dict[str, dict]] = {
    preset: {family: sizes[i] for family, sizes in _SIZES.items()}
    for i, preset in enumerate(("tiny", "paper"))
}


def expand_preset(spec: dict, where: str = "model") -> dict:
    """`spec` with its `preset` replaced by the preset's keys for its family (explicit keys win)."""
    if "preset" not in spec:
        return spec
    spec = dict(spec)
    name, family = spec.pop("preset"), spec.get("family")
    if name not in PRESETS:
        raise ValueError(f"{where}: unknown preset {name!r}; known: {sorted(PRESETS)}")
    if family not in PRESETS[name]:
        raise ValueError(f"{where}: preset {name!r} has no size for family {family!r}")
    return {**PRESETS[name][family], **spec}
