"""Tests for grokbench.models.gpt and the model registry.

The numerical reference is transformers.GPT2LMHeadModel, built at random from a GPT2Config
(nothing is downloaded). Errors are reported as a max relative error:
max |ref - out| / max |ref| over the whole tensor (elementwise relative errors are
meaningless near zero). Tolerances, for logits and gradients alike: 1e-5 in float32 and 1e-10
in float64 (measured on CPU: about 4e-7..6e-7 and 1e-15).
"""

import math

import pytest
import torch

from grokbench.models import FAMILIES, build_model, count_params, family_keys
from grokbench.models.gpt import GPT, GPTConfig, load_hf_gpt2_state_dict

from ..helpers import assert_causal, assert_close

VOCAB, BLOCK, D, L, H = 97, 16, 64, 2, 4
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_hf_pair(dtype: torch.dtype, seed: int = 0):
    """A random HF GPT2LMHeadModel and our GPT with its weights, both in `dtype`, eval mode."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf_cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=BLOCK,
        n_embd=D,
        n_layer=L,
        n_head=H,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",  # explicit softmax(QK^T / sqrt(hs))V as the reference
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    assert hf.config._attn_implementation == "eager"
    # HF init leaves LayerNorms at (1, 0) and biases at 0: perturb everything so that a swapped
    # or untransposed tensor cannot go unnoticed
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = hf.to(dtype).eval()
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, n_head=H, d_model=D))
    ours = ours.to(dtype).eval()
    load_hf_gpt2_state_dict(ours, hf)
    return hf, ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_logits_match_hf(dtype):
    hf, ours = make_hf_pair(dtype)
    idx = torch.randint(0, VOCAB, (4, BLOCK), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        out = ours(idx)
    assert out.dtype == dtype
    assert_close(f"logits[{dtype}]", ref, out, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_grads_match_hf(dtype):
    hf, ours = make_hf_pair(dtype)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, VOCAB, (3, BLOCK), generator=g)
    # a weighted sum of the logits: a plain sum makes d(loss)/d(logits) constant, which would
    # hide an error in the LM head; the weights keep the check sensitive to every logit
    w = torch.randn(3, BLOCK, VOCAB, generator=g).to(dtype)
    (hf(idx).logits * w).sum().backward()
    (ours(idx) * w).sum().backward()
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    our_params = dict(ours.named_parameters(remove_duplicate=False))
    for name in (
        "transformer.wte.weight",  # tied: gets both the embedding and the LM head gradient
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.attn.c_attn.weight",  # Conv1D in HF: (in, out)
        "transformer.h.0.attn.c_attn.bias",
        "transformer.h.1.mlp.c_proj.weight",  # Conv1D in HF
        "transformer.ln_f.bias",
    ):
        ref = hf_params[name].grad
        if ref.dim() == 2 and "transformer.h." in name:
            ref = ref.t()
        assert_close(f"grad {name}[{dtype}]", ref, our_params[name].grad, GRAD_TOL[dtype])


def test_load_hf_rejects_mismatches():
    transformers = pytest.importorskip("transformers")
    base = dict(vocab_size=VOCAB, n_positions=BLOCK, n_embd=D, n_head=H)
    base.update(bos_token_id=0, eos_token_id=0)
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, n_head=H, d_model=D))
    # an extra layer: unexpected keys
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=L + 1, **base))
    with pytest.raises(ValueError, match=r"unexpected in HF model \['transformer\.h\.2\."):
        load_hf_gpt2_state_dict(ours, hf)
    # a different position count: a shape mismatch
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=L, **{**base, "n_positions": BLOCK + 1})
    )
    with pytest.raises(ValueError, match="shape mismatch for transformer.wpe.weight"):
        load_hf_gpt2_state_dict(ours, hf)
    # same shapes, different head count: only the config can tell
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=L, **{**base, "n_head": 2}))
    with pytest.raises(ValueError, match="n_head"):
        load_hf_gpt2_state_dict(ours, hf)
    # exact GELU is not gelu_new
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=L, activation_function="gelu", **base))
    with pytest.raises(ValueError, match="activation_function"):
        load_hf_gpt2_state_dict(ours, hf)


def test_causality():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, n_head=H, d_model=D))
    model = model.double().eval()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    assert_causal(model, idx, VOCAB, (0, 1, BLOCK // 2, BLOCK - 1), rtol=0, atol=1e-12)


def test_init_statistics():
    torch.manual_seed(0)
    n_layer, d = 8, 384
    model = GPT(GPTConfig(vocab_size=512, block_size=64, n_layer=n_layer, n_head=6, d_model=d))
    resid_std = 0.02 / math.sqrt(2 * n_layer)
    assert model.lm_head.weight is model.transformer.wte.weight
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            expect = resid_std
        elif name.endswith("weight") and p.dim() == 2:
            expect = 0.02
        elif ".ln_" in name and name.endswith("weight"):
            assert torch.all(p == 1), name
            continue
        else:  # biases
            assert torch.all(p == 0), name
            continue
        std, mean = p.std().item(), p.mean().item()
        assert abs(std / expect - 1) < 0.03, f"{name}: std {std:.5f}, expected {expect:.5f}"
        assert abs(mean) < 5 * expect / math.sqrt(p.numel()), f"{name}: mean {mean:.2e}"


def test_num_params():
    cfg = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, n_head=H, d_model=D)
    tied = GPT(cfg)
    emb = VOCAB * D + BLOCK * D
    per_block = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)
    assert tied.num_params() == emb + L * per_block + 2 * D == count_params(tied)
    assert tied.num_params(exclude_embeddings=True) == L * per_block + 2 * D
    untied = GPT(GPTConfig(**{**cfg.__dict__, "tie_embeddings": False}))
    assert untied.num_params() == tied.num_params() + VOCAB * D


def test_build_model_gpt():
    spec = {"family": "gpt", "n_layer": 2, "d_model": 64, "n_head": 4, "dropout": 0}
    model = build_model(spec, vocab_size=VOCAB, block_size=BLOCK)
    assert isinstance(model, GPT)
    assert model.config.d_model == 64 and isinstance(model.config.dropout, float)
    assert model(torch.zeros(1, BLOCK, dtype=torch.long)).shape == (1, BLOCK, VOCAB)
    keys = family_keys("gpt")
    assert keys["n_layer"] is int and keys["dropout"] is float and keys["bias"] is bool
    assert "vocab_size" not in keys and "block_size" not in keys
    assert set(FAMILIES) >= {"gpt"}


def test_build_model_errors():
    with pytest.raises(ValueError, match=r"models\.x: unknown model family 'gpx'; known: .*gpt"):
        build_model({"family": "gpx"}, VOCAB, BLOCK, where="models.x")
    with pytest.raises(
        ValueError,
        match=r"models\.gpt_tiny: unknown key 'n_layers' for family gpt .*'n_layer'.*; known: ",
    ):
        build_model({"family": "gpt", "n_layers": 2}, VOCAB, BLOCK, where="models.gpt_tiny")
    with pytest.raises(ValueError, match=r"unknown key 'vocab_size'"):
        build_model({"family": "gpt", "vocab_size": 3}, VOCAB, BLOCK)
    with pytest.raises(ValueError, match=r"key 'n_head' for family gpt must be int, got '4'"):
        build_model({"family": "gpt", "n_head": "4"}, VOCAB, BLOCK)
    with pytest.raises(ValueError, match=r"key 'n_layer' .* must be int, got True"):
        build_model({"family": "gpt", "n_layer": True}, VOCAB, BLOCK)
    with pytest.raises(ValueError, match=r"m: invalid gpt model: d_model \(10\) must be divisible"):
        build_model({"family": "gpt", "d_model": 10, "n_head": 4}, VOCAB, BLOCK, where="m")
    with pytest.raises(ValueError, match="missing key 'family'"):
        build_model({"n_layer": 2}, VOCAB, BLOCK)
