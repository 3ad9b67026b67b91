"""Size presets: within a preset, every family's parameter count is within 10% of GPT's."""

from __future__ import annotations

import pytest
import torch

from grokbench.models import FAMILIES, PRESETS, build_model, count_params

# the default study's vocabulary (N=200, A=4, R=5) and the paper dataset's (N=1000, A=20, R=20)
VOCABS = {"tiny": 228, "paper": 1107}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_matched_parameter_counts(preset):
    counts = {}
    for family in PRESETS[preset]:
        with torch.device("meta"):
            counts[family] = count_params(
                build_model({"family": family, "preset": preset}, VOCABS[preset], 10)
            )
    ref = counts["gpt"]
    off = {f: round(n / ref - 1, 3) for f, n in counts.items() if abs(n / ref - 1) > 0.10}
    assert not off, f"{preset}: relative to gpt ({ref}): {off}; all: {counts}"


def test_every_family_has_both_presets():
    for preset, sizes in PRESETS.items():
        assert set(sizes) == set(FAMILIES), f"{preset}: {sorted(set(FAMILIES) ^ set(sizes))}"


def test_explicit_keys_override_the_preset():
    m = build_model({"family": "gpt", "preset": "tiny", "n_layer": 3}, 50, 8)
    assert len(m.layers) == 3 and m.config.d_model == PRESETS["tiny"]["gpt"]["d_model"]


def test_unknown_preset_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_model({"family": "gpt", "preset": "huge"}, 50, 8)
