"""Tests for grokbench.models.rwkv (RWKV-7, RWKV-6) and their operators ops.rwkv7 / ops.rwkv6.

Numerical references, all from flash-linear-attention 0.6 (fla), run on CPU with nothing downloaded:
- `naive_rwkv7` vs fla.ops.generalized_delta_rule.dplr.naive.dplr_recurrence (the DPLR / RWKV-7 delta-rule
  recurrence that fla's RWKV-7 kernels implement);
- `naive_rwkv6` vs fla.ops.rwkv6.recurrent_naive.naive_recurrent_rwkv6;
- the whole RWKV7 model vs fla.models.RWKV7ForCausalLM (fla.layers.rwkv7.RWKV7Attention inside) with our
  weights copied in. fla's layer calls Triton kernels that cannot run on CPU; the test swaps each for fla's
  own PyTorch reference of it (token_shift_ref, torch_addcmul_rwkv7, k_update_ref,
  gate_output_correction_ref, and dplr_recurrence for chunk_rwkv7), so all of fla's layer and model logic
  (LoRAs, decay, value residual, kk normalization, GroupNorm, bonus, block, ln0) is what we compare with.
  RWKV-6 has no such model-level comparison: fla's RWKV6Attention is parametrized differently from the
  authors' x060 (LerpLinear / DDLerpLinear, expand_k) and uses fla's fused GroupNorm.
fla's references up-cast their inputs with `.float()`; for the float64 comparisons `Tensor.float` is patched
to the identity while they run (their outputs are checked to come back in float64).

Errors are max relative errors, max |ref - out| / max |ref| over a whole tensor (pytest -s prints them).
Tolerances: 1e-5 in float32 and 1e-11 in float64, except the whole model's parameter gradients in float32,
3e-5. Measured on CPU: recurrences (outputs, states, gradients) <= 2e-7 (fp32) and 4e-16 (fp64); model
logits 4.5e-7 and 8e-16; model gradients <= 4.1e-6 (fp32, blocks.0.att.a0: a sum over every position) and
5e-15 (fp64). GPU tests (marked `gpu`) compare the fla kernels with the torch path on CUDA, at the training
shape (B=64, T=8) and at T=128: the operators in float32 and bfloat16 (no-grad outputs, which use the
NO_GRAD_KERNEL, then outputs and input gradients, which use chunk_rwkv7 / the rwkv6 KERNEL), and whole
models under bfloat16 autocast (tolerances by GPU_TOL below).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from grokbench.models.ops import rwkv6 as rwkv6_module
from grokbench.models.ops.rwkv6 import fast_rwkv6, naive_rwkv6, rwkv6
from grokbench.models.ops.rwkv7 import FAST_MAX_SEQ_LEN, RWKV7_W_LOWER_BOUND, fast_rwkv7, naive_rwkv7, rwkv7
from grokbench.models.rwkv import LN_X_EPS, RWKV6, RWKV7, RWKV6Config, RWKV7Config

from ..helpers import assert_close

TOL = {torch.float32: 1e-5, torch.float64: 1e-11}
MODEL_GRAD_TOL = {torch.float32: 3e-5, torch.float64: 1e-11}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
VOCAB, BLOCK, D, L, N = 37, 10, 64, 3, 16  # N: head size (4 heads)


@pytest.fixture
def fla_in_dtype(monkeypatch):
    """Returns a function that, for float64, makes `Tensor.float` the identity (fla's references call
    it to up-cast) until the test ends."""

    def set_dtype(dtype: torch.dtype) -> None:
        if dtype == torch.float64:
            monkeypatch.setattr(torch.Tensor, "float", lambda self, *args, **kwargs: self)

    return set_dtype


def rwkv7_inputs(B, T, H, K, V, dtype, device="cpu", seed=0):
    """Random inputs shaped like RWKV-7's: log decay in [-e^-1/2, 0), a = -kk, b = kk * iclr."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    r, k = rand(B, T, H, K), rand(B, T, H, K)
    v = rand(B, T, H, V)
    w = RWKV7_W_LOWER_BOUND * torch.sigmoid(2 * rand(B, T, H, K))
    kk = F.normalize(rand(B, T, H, K), dim=-1)
    iclr = torch.sigmoid(rand(B, T, H, K))
    h0 = 0.5 * rand(B, H, K, V)
    return [x.to(dtype=dtype, device=device) for x in (r, w, k, v, -kk, kk * iclr, h0)]


# --- the recurrences -------------------------------------------------------------------------------


@DTYPES
def test_naive_rwkv7_matches_fla_dplr_recurrence(dtype, fla_in_dtype):
    dplr = pytest.importorskip("fla.ops.generalized_delta_rule.dplr.naive")
    fla_in_dtype(dtype)
    B, T, H, K, V = 2, 10, 3, 16, 8
    inputs = [x.requires_grad_() for x in rwkv7_inputs(B, T, H, K, V, dtype)]
    r, w, k, v, a, b, h0 = inputs
    g = torch.Generator().manual_seed(1)
    go = torch.randn(B, T, H, V, generator=g).to(dtype)
    gs = torch.randn(B, H, K, V, generator=g).to(dtype)

    def run(fn):
        o, s = fn()
        for x in inputs:
            x.grad = None
        ((o * go).sum() + (s * gs).sum()).backward()
        return o.detach(), s.detach(), [x.grad for x in inputs]

    def theirs():  # (B, H, T, D) layout; it scales q by K**-0.5 itself
        tr = [x.transpose(1, 2) for x in (r, k, v, a, b, w)]
        o, s = dplr.dplr_recurrence(*tr, initial_state=h0, output_final_state=True)
        return o.transpose(1, 2), s

    scale = K**-0.5
    ref_o, ref_s, ref_g = run(theirs)
    out_o, out_s, out_g = run(lambda: naive_rwkv7(r, w, k, v, a, b, scale, h0, output_final_state=True))
    assert ref_o.dtype == dtype and out_o.dtype == dtype
    assert_close(f"rwkv7 output[{dtype}]", ref_o, out_o, TOL[dtype])
    assert_close(f"rwkv7 final state[{dtype}]", ref_s, out_s, TOL[dtype])
    for name, ref, out in zip(["r", "w", "k", "v", "a", "b", "h0"], ref_g, out_g, strict=True):
        assert_close(f"rwkv7 grad {name}[{dtype}]", ref, out, TOL[dtype])
    # the dispatcher on the CPU: the fast form at this length (compared with the reference in test_fast_forms)
    o, s = rwkv7(r, w, k, v, a, b, scale, h0, output_final_state=True)
    o_fast, s_fast = fast_rwkv7(r, w, k, v, a, b, scale, h0, output_final_state=True)
    assert T <= FAST_MAX_SEQ_LEN and torch.equal(o, o_fast) and torch.equal(s, s_fast)


@DTYPES
def test_naive_rwkv6_matches_fla_naive_recurrent(dtype, fla_in_dtype):
    fla_rwkv6 = pytest.importorskip("fla.ops.rwkv6.recurrent_naive")
    fla_in_dtype(dtype)
    B, T, H, K, V = 2, 10, 3, 16, 8
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype).requires_grad_()

    r, k, v, u = rand(B, T, H, K), rand(B, T, H, K), rand(B, T, H, V), rand(H, K)
    w = (-torch.exp(torch.randn(B, T, H, K, generator=g) - 1)).to(dtype).requires_grad_()
    # naive_recurrent_rwkv6 keeps its state in a float32 buffer it adds the initial state into, so an
    # initial state would be rounded to float32: it is compared in float32 only
    h0 = rand(B, H, K, V) if dtype == torch.float32 else None
    inputs = [x for x in (r, k, v, w, u, h0) if x is not None]
    go = torch.randn(B, T, H, V, generator=g).to(dtype)
    gs = torch.randn(B, H, K, V, generator=g).to(dtype)

    def run(fn):
        o, s = fn()
        for x in inputs:
            x.grad = None
        ((o * go).sum() + (s * gs).sum()).backward()
        return o.detach(), s.detach(), [x.grad for x in inputs]

    def theirs():  # (B, H, T, D) layout
        tr = [x.transpose(1, 2) for x in (r, k, v, w)]
        o, s = fla_rwkv6.naive_recurrent_rwkv6(*tr, u, scale=0.3, initial_state=h0, output_final_state=True)
        return o.transpose(1, 2), s

    ref_o, ref_s, ref_g = run(theirs)
    out_o, out_s, out_g = run(lambda: naive_rwkv6(r, k, v, w, u, 0.3, h0, output_final_state=True))
    assert ref_o.dtype == dtype and out_o.dtype == dtype
    assert_close(f"rwkv6 output[{dtype}]", ref_o, out_o, TOL[dtype])
    assert_close(f"rwkv6 final state[{dtype}]", ref_s, out_s, TOL[dtype])
    for name, ref, out in zip(["r", "k", "v", "w", "u", "h0"][: len(inputs)], ref_g, out_g, strict=True):
        assert_close(f"rwkv6 grad {name}[{dtype}]", ref, out, TOL[dtype])
    o, s = rwkv6(r, k, v, w, u, 0.3, h0, output_final_state=True)  # the dispatcher on the CPU
    form = fast_rwkv6 if T <= rwkv6_module.FAST_MAX_SEQ_LEN else naive_rwkv6
    o_form, s_form = form(r, k, v, w, u, 0.3, h0, output_final_state=True)
    assert torch.equal(o, o_form) and torch.equal(s, s_form)


# --- the whole RWKV-7 model against fla's ---------------------------------------------------------


def fla_rwkv7_on_cpu(monkeypatch):
    """fla's RWKV-7 layer and model modules with each Triton kernel swapped for fla's torch reference."""
    layer_mod = pytest.importorskip("fla.layers.rwkv7")
    model_mod = pytest.importorskip("fla.models.rwkv7.modeling_rwkv7")
    from fla.modules.token_shift import token_shift_ref
    from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence
    from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7
    from fla.ops.rwkv7.fused_k_update import k_update_ref
    from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref

    def token_shift(x, cu_seqlens=None, cache=None, output_cache=False, **kwargs):
        assert cu_seqlens is None and cache is None
        delta = token_shift_ref(x)
        return (delta, x[:, -1]) if output_cache else delta

    def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, **kwargs):
        assert kwargs.get("cu_seqlens") is None
        K = r.shape[-1]
        q = r * (scale * K**0.5)  # dplr_recurrence scales q by K**-0.5 itself
        tr = [x.transpose(1, 2) for x in (q, k, v, a, b, w)]
        o, s = dplr_recurrence(*tr, initial_state=initial_state, output_final_state=output_final_state)
        return o.transpose(1, 2), s

    def fused_mul_recurrent_rwkv7(*args, **kwargs):
        raise AssertionError("the test runs fla's training path (chunk_rwkv7)")

    for name, fn in dict(
        token_shift=token_shift,
        fused_addcmul_rwkv7=torch_addcmul_rwkv7,
        fused_k_rwkv7=k_update_ref,
        gate_output_correction=gate_output_correction_ref,
        chunk_rwkv7=chunk_rwkv7,
        fused_mul_recurrent_rwkv7=fused_mul_recurrent_rwkv7,
    ).items():
        monkeypatch.setattr(layer_mod, name, fn)
    monkeypatch.setattr(model_mod, "token_shift", token_shift)
    return model_mod


def fla_name_map(model: RWKV7) -> dict[str, tuple[str, bool]]:
    """fla RWKV7ForCausalLM parameter name -> (our parameter name, transposed?)."""
    m = {
        "model.embeddings.weight": ("emb.weight", False),
        "model.norm.weight": ("ln_out.weight", False),
        "model.norm.bias": ("ln_out.bias", False),
        "lm_head.weight": ("lm_head.weight", False),
        "model.layers.0.pre_norm.weight": ("ln0.weight", False),
        "model.layers.0.pre_norm.bias": ("ln0.bias", False),
    }
    for i, block in enumerate(model.blocks):
        f, o = f"model.layers.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            m[f + f"attn_norm.{p}"] = (o + f"ln1.{p}", False)
            m[f + f"ffn_norm.{p}"] = (o + f"ln2.{p}", False)
            m[f + f"attn.g_norm.{p}"] = (o + f"att.ln_x.{p}", False)
        for x in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "k_k", "k_a", "r_k"):
            m[f + f"attn.{x}"] = (o + f"att.{x}", False)
        for theirs, ours in (("r", "receptance"), ("k", "key"), ("v", "value"), ("o", "output")):
            m[f + f"attn.{theirs}_proj.weight"] = (o + f"att.{ours}.weight", False)
        loras = ("w", "a", "g") + (("v",) if block.att.v0 is not None else ())
        for x in loras:
            m[f + f"attn.{x}_lora.lora.0.weight"] = (o + f"att.{x}1", True)
            m[f + f"attn.{x}_lora.lora.2.weight"] = (o + f"att.{x}2", True)
            if x != "g":
                m[f + f"attn.{x}_lora.lora.2.bias"] = (o + f"att.{x}0", False)
        m[f + "ffn.x_k"] = (o + "mlp.x_k", False)
        m[f + "ffn.key.weight"] = (o + "mlp.key.weight", False)
        m[f + "ffn.value.weight"] = (o + "mlp.value.weight", False)
    return m


def make_fla_pair(dtype, monkeypatch, seed=0):
    """Our RWKV7 (every parameter perturbed) and fla's RWKV7ForCausalLM with the same weights."""
    model_mod = fla_rwkv7_on_cpu(monkeypatch)
    from fla.models.rwkv7.configuration_rwkv7 import RWKV7Config as FlaRWKV7Config

    torch.manual_seed(seed)
    ranks = dict(decay_low_rank_dim=16, a_low_rank_dim=8, v_low_rank_dim=8, gate_low_rank_dim=24)
    # the reference recurrence (backend="torch") is what fla's model is compared with
    cfg = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, d_model=D, head_size=N, backend="torch")
    ours = RWKV7(RWKV7Config(**cfg, **ranks))
    with torch.no_grad():  # the authors' init zeroes some weights: make every one matter
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    cfg = FlaRWKV7Config(
        hidden_size=D,
        num_hidden_layers=L,
        head_dim=N,
        intermediate_size=4 * D,
        vocab_size=VOCAB,
        norm_first=True,
        norm_bias=True,
        norm_eps=1e-5,
        fuse_norm=False,
        fuse_cross_entropy=False,
        use_l2warp=False,
        tie_word_embeddings=False,
        hidden_act="sqrelu",
        **ranks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fla warns about its RWKV-7 being unofficial
        theirs = model_mod.RWKV7ForCausalLM(cfg)
    names = fla_name_map(ours)
    our_params = dict(ours.named_parameters())
    their_params = dict(theirs.named_parameters())
    assert set(their_params) == set(names), set(their_params) ^ set(names)
    assert {n for n, _ in names.values()} == set(our_params)
    with torch.no_grad():
        for name, (ours_name, transposed) in names.items():
            src = our_params[ours_name]
            src = src.t() if transposed else src
            their_params[name].copy_(src.reshape(their_params[name].shape))
    for layer in theirs.model.layers:
        layer.attn.g_norm.eps = LN_X_EPS  # fla's eps is head_dim * norm_eps: set ours exactly
    return ours.to(dtype).train(), theirs.to(dtype).train(), names


@DTYPES
def test_rwkv7_matches_fla_model(dtype, monkeypatch, fla_in_dtype):
    ours, theirs, names = make_fla_pair(dtype, monkeypatch)
    fla_in_dtype(dtype)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, VOCAB, (3, BLOCK), generator=g)
    # a weighted sum of the logits keeps every logit's gradient distinct
    w = torch.randn(3, BLOCK, VOCAB, generator=g).to(dtype)
    ref = theirs(input_ids=idx).logits
    out = ours(idx)
    assert ref.dtype == dtype and out.dtype == dtype
    assert_close(f"logits[{dtype}]", ref, out, TOL[dtype])
    (ref * w).sum().backward()
    (out * w).sum().backward()
    our_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        ours_name, transposed = names[name]
        ref_grad = p.grad.t() if transposed else p.grad
        got = our_params[ours_name].grad
        assert_close(f"grad {ours_name}[{dtype}]", ref_grad.reshape(got.shape), got, MODEL_GRAD_TOL[dtype])


# --- v_first, share and loops ----------------------------------------------------------------------


def explicit_forward(model: RWKV7, idx: torch.Tensor, reset_each_loop: bool = False) -> torch.Tensor:
    """The Backbone forward with v_first threaded explicitly, as in the authors' block(x, v_first)."""
    cfg = model.config
    x = model.embed(idx)
    B = idx.shape[0]
    if model.memory is not None:
        x = torch.cat([model.memory.expand(B, -1, -1), x], dim=1)
    x0, v_first = x, None
    for loop in range(cfg.loops):
        if loop and cfg.reinject:
            x = x + x0
        if reset_each_loop:
            v_first = None
        for block in model.layers:
            h, v_first = block.att.mix(block.ln1(x), v_first)
            x = x + h
            x = x + block.mlp(block.ln2(x))
    return model.head(x[:, cfg.memory_tokens :])


@pytest.mark.parametrize(
    "variant",
    [
        dict(),
        dict(share="all"),
        dict(share="mlp", loops=2),
        dict(loops=3, reinject=True),
        dict(share="all", loops=2, memory_tokens=2),
    ],
    ids=["plain", "share_all", "share_mlp_loops2", "loops3_reinject", "share_all_loops2_memory"],
)
def test_v_first_is_the_first_application(variant):
    """v_first is the value of the first time-mix application of a forward (block 0 of pass 1); every
    later application, in later passes and at every depth of a shared block, mixes toward it."""
    torch.manual_seed(0)
    model = RWKV7(
        RWKV7Config(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, d_model=32, head_size=8, **variant)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model = model.double()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    out = model(idx)
    assert model.first_value.v is None  # cleared at the end of the forward
    assert torch.equal(out, explicit_forward(model, idx))
    gated = [block.att.v0 is not None for block in model.layers]
    applications = model.config.n_layer * model.config.loops
    assert gated[0] == (applications > 1 and (model.config.loops > 1 or model.config.share == "all"))
    assert all(gated[1:])
    if model.config.loops > 1:  # the definition matters: restarting v_first every pass differs
        assert not torch.allclose(out, explicit_forward(model, idx, reset_each_loop=True))


def test_rwkv7_under_torch_compile():
    """The v_first holder is mutated inside the forward: Dynamo must trace it without a graph break."""
    torch.manual_seed(0)
    model = RWKV7(
        RWKV7Config(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, d_model=32, head_size=8, loops=2)
    )
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(idx), model(idx), rtol=0, atol=0)


# --- dtypes, init, config -------------------------------------------------------------------------


@pytest.mark.parametrize("family", [RWKV7, RWKV6])
def test_runs_in_fp64_and_under_bf16_autocast(family):
    cfg_cls = RWKV7Config if family is RWKV7 else RWKV6Config
    torch.manual_seed(0)
    model = family(cfg_cls(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, d_model=32, head_size=8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    ref = model.double()(idx)
    assert ref.dtype == torch.float64
    model = model.float()
    out32 = model(idx)
    assert_close(f"{family.__name__} fp32 vs fp64", ref, out32.double(), 1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(idx)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert_close(f"{family.__name__} bf16 autocast vs fp64", ref, out.double(), 5e-2)


def test_rwkv7_init_follows_the_authors():
    """Spot checks against RWKV-LM's RWKV_Tmix_x070 / RWKV_CMix_x070 / generate_init_weight, with the
    authors' per-channel loops written out here."""
    C, H, n_layer, V = 64, 16, 4, 300
    model = RWKV7(RWKV7Config(vocab_size=V, block_size=BLOCK, n_layer=n_layer, d_model=C, head_size=H))
    layer = 2
    att, ffn = model.blocks[layer].att, model.blocks[layer].mlp
    r01, r10 = layer / (n_layer - 1), 1 - layer / n_layer
    for n in (0, 1, 17, C - 1):
        ddd = n / C
        linear = n / (C - 1) - 0.5
        zz = ((n % H) - (H - 1) / 2) / ((H - 1) / 2)
        zz = zz * abs(zz)
        www = -6 + 6 * (n / (C - 1)) ** (1 + r01**0.3)
        expected = {
            "x_r": 1 - ddd ** (0.2 * r10),
            "x_w": 1 - ddd ** (0.9 * r10),
            "x_k": 1 - ddd ** (0.7 * r10),
            "x_v": 1 - ddd ** (0.7 * r10),
            "x_a": 1 - ddd ** (0.9 * r10),
            "x_g": 1 - ddd ** (0.2 * r10),
            "w0": www + 0.5 + zz * 2.5,
            "a0": -0.19 + zz * 0.3 + linear * 0.4,
            "v0": 0.73 - linear * 0.4,
            "k_k": 0.71 - linear * 0.1,
            "k_a": 1.02,
        }
        for name, value in expected.items():
            assert getattr(att, name)[0, 0, n].item() == pytest.approx(value, abs=1e-6), (name, n)
        assert ffn.x_k[0, 0, n].item() == pytest.approx(1 - ddd ** (r10**4), abs=1e-6)
    assert torch.all(att.r_k == -0.04)
    assert torch.allclose(att.ln_x.weight, torch.tensor(((1 + layer) / n_layer) ** 0.7))
    assert att.ln_x.eps == 64e-5
    for w1 in (att.w1, att.a1, att.v1, att.g1):
        assert torch.all(w1 == 0)
    # LoRA ranks: max(32, round(f sqrt(C) / 32) * 32)
    assert (att.w1.shape[1], att.a1.shape[1], att.v1.shape[1], att.g1.shape[1]) == (32, 32, 32, 32)
    eye = torch.eye(C)
    torch.testing.assert_close(att.receptance.weight @ att.receptance.weight.t(), eye)
    torch.testing.assert_close(att.key.weight @ att.key.weight.t(), 0.01 * eye)
    torch.testing.assert_close(att.w2 @ att.w2.t(), 0.01 * torch.eye(32), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ffn.key.weight.t() @ ffn.key.weight, eye)  # (4C, C): orthonormal columns
    assert torch.all(att.output.weight == 0) and torch.all(ffn.value.weight == 0)
    assert model.emb.weight.abs().max() <= 1e-4
    head = model.lm_head.weight  # (V, C), V > C: gain 0.5 * sqrt(V / C)
    torch.testing.assert_close(head.t() @ head, 0.25 * V / C * eye, atol=1e-4, rtol=1e-4)
    assert model.lm_head.weight is not model.emb.weight
    tied = RWKV7(RWKV7Config(vocab_size=V, block_size=BLOCK, d_model=C, head_size=H, tie_embeddings=True))
    assert tied.lm_head.weight is tied.emb.weight


def test_config_validation_and_meta_build():
    with pytest.raises(ValueError, match="head_size"):
        RWKV7Config(vocab_size=VOCAB, block_size=BLOCK, d_model=48, head_size=32)
    with pytest.raises(ValueError, match="backend"):
        RWKV6Config(vocab_size=VOCAB, block_size=BLOCK, backend="cuda")
    with pytest.raises(ValueError, match="a_low_rank_dim"):
        RWKV7Config(vocab_size=VOCAB, block_size=BLOCK, a_low_rank_dim=-1)
    with pytest.raises(ValueError, match="ffn_mult"):
        RWKV6Config(vocab_size=VOCAB, block_size=BLOCK, ffn_mult=0)
    assert RWKV6Config(vocab_size=VOCAB, block_size=BLOCK, d_model=128).d_ffn == 448
    with torch.device("meta"):  # grokbench validates model specs on the meta device
        for family, cfg in ((RWKV7, RWKV7Config), (RWKV6, RWKV6Config)):
            model = family(cfg(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, d_model=128))
            assert model.lm_head.weight.is_meta


# --- GPU: the fla kernels against the torch path ----------------------------------------------------

# Tolerances of the GPU tests, not yet measured (no GPU where they were written): outputs; gradients get
# 2x. fla's chunk kernels multiply float32 inputs in TF32 (tl.dot's default), hence 5e-3 in float32; in
# bfloat16 the kernels round their outputs and intermediates to bfloat16 (2^-8 = 4e-3 relative).
GPU_TOL = {torch.float32: 5e-3, torch.bfloat16: 3e-2}
GPU_DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
GPU_SEQ = pytest.mark.parametrize("T", [8, 128])


def compare_kernel_op(op, inputs, dtype, T, name, **kwargs):
    """op(backend="kernels") vs op(backend="torch"): outputs (no grad, then with grad) and input grads.
    The torch path gets the same (rounded) inputs and computes in float32."""
    with torch.no_grad():
        ref_ng, _ = op(*inputs, backend="torch", **kwargs)
        out_ng, _ = op(*inputs, backend="kernels", **kwargs)
    go = torch.randn_like(ref_ng, dtype=torch.float32)
    assert out_ng.dtype == dtype
    assert_close(f"{name} no-grad output[{dtype}, T={T}]", ref_ng.float(), out_ng.float(), GPU_TOL[dtype])
    grads = {}
    for backend in ("torch", "kernels"):
        xs = [x.detach().clone().requires_grad_() for x in inputs]
        o, _ = op(*xs, backend=backend, **kwargs)
        (o.float() * go).sum().backward()
        grads[backend] = (o.detach(), [x.grad for x in xs])
    assert_close(
        f"{name} output[{dtype}, T={T}]",
        grads["torch"][0].float(),
        grads["kernels"][0].float(),
        GPU_TOL[dtype],
    )
    for i, (ref, out) in enumerate(zip(grads["torch"][1], grads["kernels"][1], strict=True)):
        assert_close(f"{name} grad input {i}[{dtype}, T={T}]", ref.float(), out.float(), 2 * GPU_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@GPU_DTYPES
@GPU_SEQ
def test_rwkv7_kernel_matches_torch(dtype, T):
    pytest.importorskip("fla.ops.rwkv7")
    r, w, k, v, a, b, _ = rwkv7_inputs(64, T, 2, 64, 64, dtype, device="cuda")
    compare_kernel_op(
        rwkv7, [r, w, k, v, a, b], dtype, T, "rwkv7", scale=1.0, w_lower_bound=RWKV7_W_LOWER_BOUND
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@GPU_DTYPES
@GPU_SEQ
def test_rwkv6_kernel_matches_torch(dtype, T):
    pytest.importorskip("fla.ops.rwkv6")
    g = torch.Generator(device="cuda").manual_seed(0)
    B, H, K = 64, 2, 64

    def rand(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    r, k, v = rand(B, T, H, K), rand(B, T, H, K), rand(B, T, H, K)
    w = -torch.exp(rand(B, T, H, K) - 2)
    u = 0.5 * rand(H, K)
    compare_kernel_op(rwkv6, [x.to(dtype) for x in (r, k, v, w, u)], dtype, T, "rwkv6", scale=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", [RWKV7, RWKV6])
@GPU_SEQ
def test_model_kernels_match_torch_under_autocast(family, T):
    """The whole model at the training shape (B=64) under bf16 autocast: logits and gradients."""
    pytest.importorskip("fla.ops.rwkv7" if family is RWKV7 else "fla.ops.rwkv6")
    cfg_cls = RWKV7Config if family is RWKV7 else RWKV6Config
    torch.manual_seed(0)
    base = family(cfg_cls(vocab_size=VOCAB, block_size=T, n_layer=2, d_model=128, backend="torch"))
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base = base.cuda()
    idx = torch.randint(0, VOCAB, (64, T), device="cuda")
    results = {}
    for backend in ("torch", "kernels"):
        for module in base.modules():
            if hasattr(module, "backend"):
                module.backend = backend
        base.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = base(idx)
        F.cross_entropy(logits.float().flatten(0, 1), idx.flatten()).backward()
        results[backend] = (logits.detach().float(), {n: p.grad.clone() for n, p in base.named_parameters()})
    assert_close(f"{family.__name__} logits[T={T}]", results["torch"][0], results["kernels"][0], 5e-2)
    for name, ref in results["torch"][1].items():
        if ".att." in name:  # the sequence mixer is where the kernel sits
            assert_close(f"{family.__name__} grad {name}[T={T}]", ref, results["kernels"][1][name], 1e-1)
