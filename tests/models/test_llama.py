"""Tests for grokbench.models.llama.

The numerical reference is transformers.LlamaForCausalLM, built at random from a small LlamaConfig
(nothing is downloaded), eager attention. Errors are reported as a max relative error:
max |ref - out| / max |ref| over the whole tensor. Tolerances, for logits and gradients alike: 1e-5 in
float32 and 1e-10 in float64 (measured on CPU: about 2e-7..5e-7 and 1e-15).

HF's LlamaRMSNorm and eager softmax compute in float32 even for float64 inputs (a deliberate upcast for
half precision that is a downcast for float64), which caps HF's float64 agreement at ~1e-7. The
`hf_full_precision` fixture makes both compute in max(dtype, float32) instead: the same math, so the
float64 comparison can resolve 1e-10. The RoPE angles are float32 on both sides (HF's and Meta's
convention, kept by ours) and need no patch.
"""

import math

import pytest
import torch

from grokbench.models.llama import Llama, LlamaConfig, load_hf_llama_state_dict
from grokbench.models.modules import apply_rope, rope_cos_sin, swiglu_hidden

from ..helpers import assert_causal, assert_close

VOCAB, BLOCK, D, L, H = 50, 16, 64, 2, 4
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])

# (name, our config keys, HF config keys): plain multi-head attention with a tied head and the default
# SwiGLU width; grouped-query attention (2 kv heads for 4 query heads) with an untied head, an
# explicit width and a non-default RoPE base
CASES = {
    "mha": (
        dict(tie_embeddings=True),
        dict(num_key_value_heads=H, intermediate_size=swiglu_hidden(D, 32), tie_word_embeddings=True),
    ),
    "gqa": (
        dict(tie_embeddings=False, n_kv_head=2, mlp_hidden=96, rope_theta=500000.0),
        dict(
            num_key_value_heads=2,
            intermediate_size=96,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        ),
    ),
}
CASE = pytest.mark.parametrize("case", list(CASES))


@pytest.fixture
def hf_full_precision(monkeypatch):
    """HF Llama's RMSNorm and eager softmax in max(input dtype, float32) rather than float32."""
    pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama

    def rms_norm_forward(self, hidden_states):  # LlamaRMSNorm.forward with the upcast dtype changed
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.promote_types(input_dtype, torch.float32))
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    softmax = torch.nn.functional.softmax

    def softmax_upcast(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32:
            dtype = torch.promote_types(input.dtype, torch.float32)
        return softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rms_norm_forward)
    monkeypatch.setattr(modeling_llama.nn.functional, "softmax", softmax_upcast)


def hf_config(**overrides):
    transformers = pytest.importorskip("transformers")
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=swiglu_hidden(D, 32),
        num_hidden_layers=L,
        num_attention_heads=H,
        num_key_value_heads=H,
        max_position_embeddings=BLOCK,
        rms_norm_eps=1e-6,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
        attn_implementation="eager",  # explicit softmax(QK^T / sqrt(hd) + mask)V as the reference
    )
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def our_config(**overrides) -> LlamaConfig:
    return LlamaConfig(
        **{**dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, n_head=H, d_model=D), **overrides}
    )


def make_hf_pair(case: str, dtype: torch.dtype, seed: int = 0, **ours_overrides):
    """A random HF LlamaForCausalLM and our Llama with its weights, both in `dtype`, eval mode."""
    transformers = pytest.importorskip("transformers")
    ours_kw, hf_kw = CASES[case]
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(hf_config(**hf_kw))
    assert hf.config._attn_implementation == "eager"
    # HF init leaves the RMSNorm gains at 1 and draws every matrix alike: perturb everything so that a
    # swapped tensor (q/k, gate/up, the two norms, ...) cannot go unnoticed
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = hf.to(dtype).eval()
    ours = Llama(our_config(**{**ours_kw, **ours_overrides})).to(dtype).eval()
    if not ours_overrides:
        load_hf_llama_state_dict(ours, hf)
    return hf, ours


@CASE
@DTYPES
def test_logits_match_hf(case, dtype, hf_full_precision):
    hf, ours = make_hf_pair(case, dtype)
    g = torch.Generator().manual_seed(1)
    for T in (BLOCK, 5):  # a full block and a shorter sequence
        idx = torch.randint(0, VOCAB, (4, T), generator=g)
        with torch.no_grad():
            ref = hf(idx).logits
            out = ours(idx)
        assert out.dtype == dtype
        assert_close(f"logits[{case}, {dtype}, T={T}]", ref, out, TOL[dtype])


@CASE
@DTYPES
def test_grads_match_hf(case, dtype, hf_full_precision):
    hf, ours = make_hf_pair(case, dtype)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, VOCAB, (3, BLOCK), generator=g)
    # a weighted sum of the logits: a plain sum makes d(loss)/d(logits) constant, which would hide an
    # error in the LM head; the weights keep the check sensitive to every logit
    w = torch.randn(3, BLOCK, VOCAB, generator=g).to(dtype)
    (hf(idx).logits * w).sum().backward()
    (ours(idx) * w).sum().backward()
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    our_params = dict(ours.named_parameters(remove_duplicate=False))
    assert set(hf_params) == set(our_params)
    for name, p in hf_params.items():  # every parameter, under the same name on both sides
        assert_close(f"grad {name}[{case}, {dtype}]", p.grad, our_params[name].grad, TOL[dtype])


@DTYPES
def test_memory_tokens_get_positions(dtype, hf_full_precision):
    """Memory tokens prepended by the backbone take RoPE positions 0..m-1, the input m..m+T-1: the
    logits equal HF's on the embedded sequence [memory, tokens]."""
    m = 3
    hf, ours = make_hf_pair("gqa", dtype, memory_tokens=m)
    assert ours.config.max_len == BLOCK + m
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert missing == ["memory"] and unexpected == []
    with torch.no_grad():
        ours.memory.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    for T in (BLOCK, 5):
        idx = torch.randint(0, VOCAB, (2, T), generator=g)
        with torch.no_grad():
            emb = torch.cat([ours.memory.expand(2, -1, -1), hf.model.embed_tokens(idx)], dim=1)
            ref = hf(inputs_embeds=emb).logits[:, m:]
            out = ours(idx)
        assert_close(f"logits with memory[{dtype}, T={T}]", ref, out, TOL[dtype])


def test_load_hf_rejects_mismatches():
    transformers = pytest.importorskip("transformers")

    def hf(**kw):
        return transformers.LlamaForCausalLM(hf_config(**kw))

    ours = Llama(our_config())
    load_hf_llama_state_dict(ours, hf())  # the matching config loads
    # an extra layer: unexpected keys
    with pytest.raises(ValueError, match=r"unexpected in HF model \['model\.layers\.2\."):
        load_hf_llama_state_dict(ours, hf(num_hidden_layers=L + 1))
    # a different MLP width: a shape mismatch
    with pytest.raises(ValueError, match=r"shape mismatch for model\.layers\.0\.mlp\.gate_proj\.weight"):
        load_hf_llama_state_dict(ours, hf(intermediate_size=96))
    # same shapes, different math: only the config can tell
    same_shapes = {
        "num_attention_heads": dict(num_attention_heads=2, head_dim=D // H),  # q_proj still (64, 64)
        "head_dim": dict(head_dim=2 * D // H, num_key_value_heads=2),  # q_proj (128, 64), k_proj (64, 64)
        "num_key_value_heads": dict(num_key_value_heads=2),
        "rope_theta": dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        "rope_type": dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
        "rms_norm_eps": dict(rms_norm_eps=1e-5),
        "hidden_act": dict(hidden_act="gelu"),
        "attention_bias": dict(attention_bias=True),
        "mlp_bias": dict(mlp_bias=True),
        "attention_dropout": dict(attention_dropout=0.1),
    }
    for setting, kw in same_shapes.items():
        with pytest.raises(ValueError, match=rf"incompatible Llama config: .*{setting}"):
            load_hf_llama_state_dict(ours, hf(**kw))
    # a scaled RoPE that still calls itself "default"
    model = hf()
    model.config.rope_parameters["factor"] = 2.0
    with pytest.raises(ValueError, match=r"rope_parameters: HF sets \['factor'\]"):
        load_hf_llama_state_dict(ours, model)
    # our head is tied, HF's is not
    with pytest.raises(ValueError, match="lm_head is tied"):
        load_hf_llama_state_dict(ours, hf(tie_word_embeddings=False))
    # variants of ours that HF does not have
    with pytest.raises(ValueError, match="share='all'"):
        load_hf_llama_state_dict(Llama(our_config(share="all")), hf())
    with pytest.raises(ValueError, match=r"missing from HF model \['memory'\]"):
        load_hf_llama_state_dict(Llama(our_config(memory_tokens=2)), hf())
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        load_hf_llama_state_dict(ours, transformers.LlamaModel(hf_config()))


def test_untied_ours_loads_tied_hf():
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM(hf_config(tie_word_embeddings=True))
    ours = Llama(our_config(tie_embeddings=False))
    load_hf_llama_state_dict(ours, hf)
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight
    assert torch.equal(ours.lm_head.weight, hf.lm_head.weight)


def test_rope_is_relative():
    """<R(p) q, R(s) k> depends on p - s only, and R preserves norms (rotation)."""
    hd, n = 16, 12
    cos, sin = rope_cos_sin(n, hd, 10000.0)
    cos, sin = cos.double(), sin.double()
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(hd, generator=g, dtype=torch.float64),
        torch.randn(hd, generator=g, dtype=torch.float64),
    )
    rq = apply_rope(q.expand(1, 1, n, hd), cos, sin)[0, 0]  # (n, hd): q at every position
    rk = apply_rope(k.expand(1, 1, n, hd), cos, sin)[0, 0]
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(n), rtol=1e-6, atol=0)
    scores = rq @ rk.t()  # (n, n): scores[p, s]
    for offset in (0, 1, 5):
        diag = torch.diagonal(scores, offset=-offset)  # p - s = offset
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rq[0], q)  # position 0 is the identity


@pytest.mark.parametrize("n_kv_head", [None, 2, 1], ids=["mha", "gqa", "mqa"])
def test_causality(n_kv_head):
    torch.manual_seed(0)
    model = Llama(our_config(n_kv_head=n_kv_head)).double().eval()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    assert_causal(model, idx, VOCAB, (0, 1, BLOCK // 2, BLOCK - 1), rtol=0, atol=1e-12)


def test_init_statistics():
    torch.manual_seed(0)
    n_layer, d = 8, 384
    model = Llama(LlamaConfig(vocab_size=512, block_size=64, n_layer=n_layer, n_head=6, d_model=d))
    resid_std = 0.02 / math.sqrt(2 * n_layer)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    for name, p in model.named_parameters():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            expect = resid_std
        elif p.dim() == 2:
            expect = 0.02
        else:  # RMSNorm gains
            assert name.endswith("norm.weight") and torch.all(p == 1), name
            continue
        std, mean = p.std().item(), p.mean().item()
        assert abs(std / expect - 1) < 0.03, f"{name}: std {std:.5f}, expected {expect:.5f}"
        assert abs(mean) < 5 * expect / math.sqrt(p.numel()), f"{name}: mean {mean:.2e}"
    untied = Llama(LlamaConfig(vocab_size=512, block_size=64, n_layer=2, d_model=d, tie_embeddings=False))
    assert abs(untied.lm_head.weight.std().item() / 0.02 - 1) < 0.03


def test_mlp_hidden_and_num_params():
    # Meta's rule: int(8 d / 3) rounded up; LLaMA-7B (d=4096, multiple_of=256) has 11008
    assert swiglu_hidden(4096, 256) == 11008
    assert [swiglu_hidden(d, 32) for d in (64, 128, 256, 768)] == [192, 352, 704, 2048]
    assert our_config().mlp_hidden_size == 192
    assert our_config(mlp_hidden=100).mlp_hidden_size == 100
    assert our_config(multiple_of=64).mlp_hidden_size == 192
    assert our_config(d_model=128, multiple_of=256).mlp_hidden_size == 512
    cfg = our_config(n_kv_head=2, mlp_hidden=96)
    tied = Llama(cfg)
    hd = D // H
    attn = D * H * hd + 2 * D * 2 * hd + H * hd * D  # q, k, v (2 kv heads), o
    per_block = 2 * D + attn + 3 * D * 96
    assert tied.num_params() == VOCAB * D + L * per_block + D == sum(p.numel() for p in tied.parameters())
    assert tied.num_params(exclude_embeddings=True) == L * per_block + D
    untied = Llama(LlamaConfig(**{**cfg.__dict__, "tie_embeddings": False}))
    assert untied.num_params() == tied.num_params() + VOCAB * D


def test_config_errors():
    for kw, msg in (
        (dict(d_model=62), "divisible by n_head"),
        (dict(d_model=12, n_head=4), "even head size"),
        (dict(n_kv_head=3), "must divide n_head"),
        (dict(n_kv_head=8), "must divide n_head"),
        (dict(n_kv_head=0), "must divide n_head"),
        (dict(mlp_hidden=0), "mlp_hidden"),
        (dict(multiple_of=0), "multiple_of"),
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(rms_norm_eps=0.0), "rms_norm_eps"),
        (dict(n_head=0), "n_head"),
        (dict(share="mpl"), "share"),
    ):
        with pytest.raises(ValueError, match=msg):
            our_config(**kw)


@pytest.mark.parametrize("share", ["all", "mlp"])
def test_shared_layers(share):
    model = Llama(our_config(n_layer=3, share=share, loops=2, reinject=True, kv_memory=4, memory_tokens=2))
    blocks = model.layers
    if share == "all":
        assert blocks[0] is blocks[1] is blocks[2]
    else:
        assert blocks[0] is not blocks[1] and blocks[0].mlp is blocks[1].mlp is blocks[2].mlp
    out = model(torch.randint(0, VOCAB, (2, BLOCK)))
    assert out.shape == (2, BLOCK, VOCAB)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_meta_device_and_rope_buffers():
    """Buildable on the meta device (as a spec check does); RoPE tables are buffers outside the state
    dict that follow .to(), covering memory tokens + block_size positions."""
    with torch.device("meta"):
        model = Llama(our_config(memory_tokens=2))
    assert model.lm_head.weight.is_meta
    model = Llama(our_config(memory_tokens=2))
    assert not any("rope" in k for k in model.state_dict())
    attn = model.layers[0].self_attn
    assert attn.rope_cos.shape == (BLOCK + 2, D // H)
    assert model.double().layers[0].self_attn.rope_sin.dtype == torch.float64


def test_autocast_bf16_close_to_fp32():
    """bfloat16 autocast (the trainer's mixed precision): runs, keeps float32 logits' neighbourhood."""
    torch.manual_seed(0)
    model = Llama(our_config(n_kv_head=2)).eval()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    with torch.no_grad():
        ref = model(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(idx)
    err = (ref - out.float()).abs().max().item() / ref.abs().max().item()
    assert err < 0.05, err
