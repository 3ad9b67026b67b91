"""Tests for grokbench.models.mamba (Mamba-1, Mamba-2) and its operators (ops.selective_scan, ops.ssd).

Numerical references, all built at random (nothing is downloaded):
- transformers.MambaForCausalLM (its torch path: `slow_forward`'s causal conv and `mamba_selective_scan`)
  and transformers.Mamba2ForCausalLM (its torch path: the chunked `mamba2_chunk_scan`, here with chunks
  of 4 so that states cross chunk boundaries), logits and every parameter's gradient, float32 and float64;
- for the operators alone: a direct closed form of each written here (the selective scan as a masked double
  sum over time, SSD as masked "attention" (L o C B^T)(Δ x)), and transformers' torch functions;
- on CUDA (marked gpu): mamba-ssm's kernels against the torch backend.

transformers hard-codes float32 casts in these models (RMSNorm, `.float()` on B, C, x, and on Mamba-2's
logits). For the float64 comparisons those casts are lifted to float64 while the reference runs
(`hf_float64`: Tensor.float / Tensor.to leave a float64 tensor float64), so a float64 test checks the math
and not float32 rounding. The kernel-fallback functions of transformers are pinned to their torch versions
(`hf_torch_path`), so the references stay the torch code even where mamba-ssm is installed.

Errors are max |ref - out| / max |ref| over a tensor. Tolerances: float32 1e-5, float64 1e-10 (models),
1e-12 (operators on tiny tensors); measured values are printed (pytest -s).
"""

import contextlib
import importlib
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from grokbench.models import backends
from grokbench.models.mamba import (
    Mamba,
    Mamba2,
    Mamba2Config,
    MambaConfig,
    load_hf_mamba2_state_dict,
    load_hf_mamba_state_dict,
)
from grokbench.models.ops import selective_scan as selective_scan_ops
from grokbench.models.ops import ssd as ssd_ops
from grokbench.models.ops.selective_scan import fast_selective_scan, naive_selective_scan, selective_scan
from grokbench.models.ops.ssd import naive_ssd, ssd

from ..helpers import assert_close

VOCAB, BLOCK, D, L = 97, 16, 32, 2
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
OP_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])


# --- transformers as the reference ---------------------------------------------------------------
_HF_KERNEL_FALLBACKS = {
    "transformers.models.mamba.modeling_mamba": (
        "causal_conv1d_fn",
        "causal_conv1d_update",
        "mamba_inner_fn",
        "mamba_selective_scan",
        "mamba_selective_state_update",
    ),
    "transformers.models.mamba2.modeling_mamba2": (
        "causal_conv1d_fn",
        "causal_conv1d_update",
        "mamba2_split_conv1d_scan_combined",
        "mamba2_selective_state_update",
        "mamba2_chunk_scan",
    ),
}


@pytest.fixture
def hf(monkeypatch):
    """transformers, with Mamba(2)'s kernel-or-torch functions pinned to their torch versions."""
    transformers = pytest.importorskip("transformers")
    for module_name, names in _HF_KERNEL_FALLBACKS.items():
        module = importlib.import_module(module_name)
        for name in names:
            fn = getattr(module, name, None)
            if fn is not None and hasattr(fn, "__wrapped__"):  # functools.wraps of the torch function
                monkeypatch.setattr(module, name, fn.__wrapped__)
    return transformers


@contextlib.contextmanager
def hf_float64(enabled: bool = True):
    """While active, `t.float()` and `t.to(torch.float32)` leave a float64 tensor in float64."""
    if not enabled:
        yield
        return
    to, to_float = torch.Tensor.to, torch.Tensor.float

    def keep_to(self, *args, **kwargs):
        out = to(self, *args, **kwargs)
        if self.dtype == torch.float64 and out.dtype == torch.float32:
            return to(self, device=out.device)
        return out

    def keep_float(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else to_float(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch.Tensor, "to", keep_to)
        m.setattr(torch.Tensor, "float", keep_float)
        yield


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """transformers' init leaves norms at 1, biases at 0 and A, D structured: perturb every parameter so
    that a swapped or misread tensor cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def make_mamba_pair(transformers, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    hf_cfg = transformers.MambaConfig(
        vocab_size=VOCAB,
        hidden_size=D,
        num_hidden_layers=L,
        state_size=16,
        expand=2,
        conv_kernel=4,
        time_step_rank="auto",
        layer_norm_epsilon=1e-5,
        residual_in_fp32=False,
        tie_word_embeddings=True,
    )
    hf_model = transformers.MambaForCausalLM(hf_cfg)
    perturb_(hf_model, seed)
    hf_model = hf_model.to(dtype).eval()
    ours = Mamba(MambaConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, d_model=D, backend="torch"))
    ours = ours.to(dtype).eval()
    load_hf_mamba_state_dict(ours, hf_model)
    return hf_model, ours


def make_mamba2_pair(transformers, dtype: torch.dtype, ngroups: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    hf_cfg = transformers.Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=D,
        num_hidden_layers=L,
        state_size=16,
        expand=2,
        num_heads=4,
        head_dim=16,
        n_groups=ngroups,
        conv_kernel=4,
        chunk_size=4,  # 4 chunks of the 16 steps: the reference passes states between chunks
        layer_norm_epsilon=1e-5,
        residual_in_fp32=False,
        tie_word_embeddings=True,
    )
    hf_model = transformers.Mamba2ForCausalLM(hf_cfg)
    assert hf_model.lm_head.weight is hf_model.backbone.embeddings.weight
    perturb_(hf_model, seed)
    hf_model = hf_model.to(dtype).eval()
    cfg = Mamba2Config(
        vocab_size=VOCAB,
        block_size=BLOCK,
        n_layer=L,
        d_model=D,
        d_state=16,
        headdim=16,
        ngroups=ngroups,
        backend="torch",  # the reference recurrence is what transformers is compared with
    )
    ours = Mamba2(cfg).to(dtype).eval()
    load_hf_mamba2_state_dict(ours, hf_model)
    return hf_model, ours


def compare_logits(hf_model, ours, dtype, name):
    idx = torch.randint(0, VOCAB, (4, BLOCK), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), hf_float64(dtype == torch.float64):
        ref = hf_model(idx).logits
    with torch.no_grad():
        out = ours(idx)
    assert out.dtype == dtype and ref.dtype == dtype
    assert_close(f"{name} logits[{dtype}]", ref, out, TOL[dtype])


def compare_grads(hf_model, ours, dtype, name):
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, VOCAB, (3, BLOCK), generator=g)
    # a weighted sum of the logits keeps every logit's gradient distinct (a plain sum would not)
    w = torch.randn(3, BLOCK, VOCAB, generator=g).to(dtype)
    with hf_float64(dtype == torch.float64):
        (hf_model(idx).logits * w).sum().backward()
    (ours(idx) * w).sum().backward()
    hf_params = dict(hf_model.named_parameters(remove_duplicate=False))
    our_params = dict(ours.named_parameters(remove_duplicate=False))
    assert set(hf_params) == set(our_params)
    worst = 0.0
    for pname, p in our_params.items():
        err = assert_close(f"{name} grad {pname}[{dtype}]", hf_params[pname].grad, p.grad, TOL[dtype])
        worst = max(worst, err)
    print(f"{name} grads[{dtype}]: worst max relative error {worst:.3e} over {len(our_params)} tensors")


@DTYPES
def test_mamba_logits_match_hf(hf, dtype):
    compare_logits(*make_mamba_pair(hf, dtype), dtype, "mamba")


@DTYPES
def test_mamba_grads_match_hf(hf, dtype):
    compare_grads(*make_mamba_pair(hf, dtype), dtype, "mamba")


@DTYPES
@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_logits_match_hf(hf, dtype, ngroups):
    compare_logits(*make_mamba2_pair(hf, dtype, ngroups), dtype, f"mamba2[G={ngroups}]")


@DTYPES
def test_mamba2_grads_match_hf(hf, dtype):
    compare_grads(*make_mamba2_pair(hf, dtype, ngroups=2), dtype, "mamba2[G=2]")


def test_load_hf_rejects_mismatches(hf):
    base = dict(vocab_size=VOCAB, hidden_size=D, state_size=16)
    ours = Mamba(MambaConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, d_model=D))
    with pytest.raises(ValueError, match=r"unexpected in HF model \['backbone\.layers\.2\."):
        load_hf_mamba_state_dict(ours, hf.MambaForCausalLM(hf.MambaConfig(num_hidden_layers=L + 1, **base)))
    with pytest.raises(ValueError, match="state_size"):
        load_hf_mamba_state_dict(
            ours, hf.MambaForCausalLM(hf.MambaConfig(num_hidden_layers=L, **{**base, "state_size": 8}))
        )
    # same shapes, a different norm eps: only the config can tell
    hf_model = hf.MambaForCausalLM(hf.MambaConfig(num_hidden_layers=L, layer_norm_epsilon=1e-6, **base))
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        load_hf_mamba_state_dict(ours, hf_model)
    with pytest.raises(TypeError, match="MambaForCausalLM"):
        load_hf_mamba_state_dict(ours, torch.nn.Linear(2, 2))

    ours2 = Mamba2(
        Mamba2Config(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, d_model=D, d_state=16, headdim=16)
    )
    base2 = dict(
        vocab_size=VOCAB, hidden_size=D, state_size=16, num_heads=4, head_dim=16, num_hidden_layers=L
    )
    with pytest.raises(ValueError, match="n_groups"):
        load_hf_mamba2_state_dict(ours2, hf.Mamba2ForCausalLM(hf.Mamba2Config(n_groups=2, **base2)))
    # an untied HF head cannot load into our tied model
    with pytest.raises(ValueError, match="tied"):
        load_hf_mamba2_state_dict(
            ours2, hf.Mamba2ForCausalLM(hf.Mamba2Config(n_groups=1, tie_word_embeddings=False, **base2))
        )


# --- the operators against closed forms written here --------------------------------------------
def softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(x))


def direct_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """h_t = sum_{s<=t} exp(A (S_t - S_s)) Δ_s B_s u_s with S_t = sum_{r<=t} Δ_r, y_t = C_t . h_t + D u_t,
    gated by SiLU(z): one masked double sum over (t, s), no recurrence."""
    T = u.shape[1]
    d = softplus(delta + delta_bias)  # (B, T, E)
    S = d.cumsum(1)  # (B, T, E)
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # [t, s]: s <= t
    gap = S[:, :, None, :] - S[:, None, :, :]  # (B, t, s, E): sum_{s<r<=t} Δ_r
    expo = gap[..., None] * A  # (B, t, s, E, N)
    decay = torch.exp(torch.where(causal[:, :, None, None], expo, -math.inf))
    y = torch.einsum("btn,btsen,bse,bsn->bte", C, decay, d * u, B)
    return (y + D * u) * z * torch.sigmoid(z)


def direct_ssd(x, dt, A, B, C, D, dt_bias):
    """SSD as masked attention: y = (L o C B^T) (Δ x) + D x with L[t, s] = exp(sum_{s<r<=t} Δ_r A) for
    s <= t and 0 above the diagonal; head h reads group h // (H / G)."""
    T, H, G = x.shape[1], x.shape[2], B.shape[2]
    d = softplus(dt + dt_bias)  # (B, T, H)
    S = (d * A).cumsum(1)  # (B, T, H): log decay from the start
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    gap = S[:, :, None, :] - S[:, None, :, :]  # (B, t, s, H)
    Lmask = torch.exp(torch.where(causal[:, :, None], gap, -math.inf))  # (B, t, s, H)
    group = torch.arange(H) // (H // G)  # (H,)
    scores = torch.einsum("btgn,bsgn->btsg", C, B)[..., group]  # (B, t, s, H): C_t . B_s
    y = torch.einsum("btsh,bsh,bshp->bthp", Lmask * scores, d, x)
    return y + D[:, None] * x


def scan_inputs(dtype, batch=2, T=7, E=5, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (
            (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).requires_grad_()
        )

    return dict(
        u=r(batch, T, E),
        delta=r(batch, T, E, scale=0.5),
        A=(-torch.exp(torch.rand(E, N, generator=g, dtype=torch.float64) * 2)).to(dtype).requires_grad_(),
        B=r(batch, T, N),
        C=r(batch, T, N),
        D=r(E, shift=1.0),
        z=r(batch, T, E),
        delta_bias=r(E, scale=0.5, shift=-1.0),
    )


def ssd_inputs(dtype, batch=2, T=7, H=4, P=3, G=2, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (
            (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).requires_grad_()
        )

    return dict(
        x=r(batch, T, H, P),
        dt=r(batch, T, H, scale=0.5),
        A=(-torch.exp(torch.rand(H, generator=g, dtype=torch.float64) * 2)).to(dtype).requires_grad_(),
        B=r(batch, T, G, N),
        C=r(batch, T, G, N),
        D=r(H, shift=1.0),
        dt_bias=r(H, scale=0.5, shift=-1.0),
    )


def compare_op(name, inputs, ref_fn, out_fn, tol, seed=3):
    """Outputs, and the gradients of a random weighting of them, for every input."""
    ref, out = ref_fn(**inputs), out_fn(**inputs)
    assert_close(f"{name} out", ref, out, tol)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(
        ref.dtype
    )
    ref_grads = torch.autograd.grad((ref * w).sum(), list(inputs.values()))
    out_grads = torch.autograd.grad((out * w).sum(), list(inputs.values()))
    for key, rg, og in zip(inputs, ref_grads, out_grads, strict=True):
        assert_close(f"{name} grad {key}", rg, og, tol)


def test_naive_selective_scan_matches_closed_form():
    inputs = scan_inputs(torch.float64)
    compare_op(
        "selective_scan vs closed form",
        inputs,
        direct_selective_scan,
        lambda **k: naive_selective_scan(**k, delta_softplus=True),
        OP_TOL[torch.float64],
    )


def test_naive_ssd_matches_masked_attention():
    inputs = ssd_inputs(torch.float64)
    compare_op(
        "ssd vs masked attention",
        inputs,
        direct_ssd,
        lambda **k: naive_ssd(**k, dt_softplus=True),
        OP_TOL[torch.float64],
    )


@DTYPES
def test_naive_selective_scan_matches_hf_function(hf, dtype):
    """Against transformers' `mamba_selective_scan` (torch), which takes (batch, channels, time)."""
    from transformers.models.mamba import modeling_mamba

    def hf_scan(u, delta, A, B, C, D, z, delta_bias):
        t = lambda x: x.transpose(1, 2)  # noqa: E731
        with hf_float64(dtype == torch.float64):
            y = modeling_mamba.mamba_selective_scan(
                t(u), t(delta), A, t(B), t(C), D=D, z=t(z), delta_bias=delta_bias, delta_softplus=True
            )
        return t(y)

    compare_op(
        f"selective_scan vs transformers[{dtype}]",
        scan_inputs(dtype),
        hf_scan,
        lambda **k: naive_selective_scan(**k, delta_softplus=True),
        OP_TOL[dtype],
    )


@DTYPES
@pytest.mark.parametrize("chunk_size", [3, 16])
def test_naive_ssd_matches_hf_function(hf, dtype, chunk_size):
    """Against transformers' chunked `mamba2_chunk_scan` (torch); chunks of 3 over 7 steps pad the last."""
    from transformers.models.mamba2 import modeling_mamba2

    def hf_ssd(x, dt, A, B, C, D, dt_bias):
        with hf_float64(dtype == torch.float64):
            return modeling_mamba2.mamba2_chunk_scan(
                x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True
            )

    compare_op(
        f"ssd vs transformers[{dtype}, chunk {chunk_size}]",
        ssd_inputs(dtype),
        hf_ssd,
        lambda **k: naive_ssd(**k, dt_softplus=True),
        OP_TOL[dtype],
    )


def test_ops_dtypes_and_dispatch():
    """Outputs keep the input dtype; under bf16 autocast the ops still return finite bf16 from bf16
    inputs; backend='kernels' fails loudly without CUDA; unknown backends are rejected."""
    s = {k: v.detach() for k, v in scan_inputs(torch.float32).items()}
    y = selective_scan(**s, delta_softplus=True, backend="auto")  # the fast form on the CPU
    torch.testing.assert_close(y, fast_selective_scan(**s, delta_softplus=True), rtol=0, atol=0)
    torch.testing.assert_close(y, naive_selective_scan(**s, delta_softplus=True), rtol=1e-5, atol=1e-6)
    s16 = {k: (v.bfloat16() if k in ("u", "delta", "B", "C", "z") else v) for k, v in s.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = selective_scan(**s16, delta_softplus=True)
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    x = {k: v.detach() for k, v in ssd_inputs(torch.float32).items()}
    assert ssd(**x, dt_softplus=True).dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend='kernels' needs CUDA"):
            selective_scan(**s, backend="kernels")
        with pytest.raises(RuntimeError, match="backend='kernels' needs CUDA"):
            ssd(**x, backend="kernels")
    with pytest.raises(ValueError, match="backend"):
        ssd(**x, backend="cuda")


@pytest.mark.parametrize("op", ["selective_scan", "ssd"])
def test_kernels_get_autocast_dtype(op, monkeypatch):
    """Under bf16 autocast the kernels get bfloat16 activations, as mamba-ssm's own blocks feed them, even
    where the torch side hands over float32 (the causal conv's shifted products promote to it); float32
    A, D and the dt bias. A recording stand-in for mamba-ssm (not installed here) takes the call."""
    seen = {}

    def record(*args, **kwargs):
        seen.update({f"arg{i}": a.dtype for i, a in enumerate(args) if torch.is_tensor(a)})
        seen.update({k: v.dtype for k, v in kwargs.items() if torch.is_tensor(v)})
        return args[0]

    names = ["mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface", "mamba_ssm.ops.triton"]
    names.append("mamba_ssm.ops.triton.ssd_combined")
    for name in names:
        fake = types.ModuleType(name)
        fake.selective_scan_fn = fake.mamba_chunk_scan_combined = record
        monkeypatch.setitem(sys.modules, name, fake)
    if op == "selective_scan":
        s = {k: v.detach() for k, v in scan_inputs(torch.float32).items()}
        call = lambda: selective_scan_ops._selective_scan_kernel(**s, delta_softplus=True)  # noqa: E731
        activations, fp32 = ("arg0", "arg1", "arg3", "arg4", "z"), ("arg2", "D", "delta_bias")
    else:
        x = {k: v.detach() for k, v in ssd_inputs(torch.float32).items()}
        call = lambda: ssd_ops._ssd_kernel(**x, dt_softplus=True, chunk_size=64)  # noqa: E731
        activations, fp32 = ("arg0", "arg1", "arg3", "arg4"), ("arg2", "D", "dt_bias")
    call()  # no autocast: the inputs' own float32
    assert {seen[k] for k in activations} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call()
    assert {k: seen[k] for k in activations} == dict.fromkeys(activations, torch.bfloat16)
    assert {k: seen[k] for k in fp32} == dict.fromkeys(fp32, torch.float32)


# --- configs, init, autocast ---------------------------------------------------------------------
def test_config_validation():
    base = dict(vocab_size=VOCAB, block_size=BLOCK, d_model=D)
    assert MambaConfig(**base).dt_rank_value == 2  # ceil(32 / 16)
    assert MambaConfig(**base, dt_rank=5).dt_rank_value == 5
    for key, value in [("dt_rank", "big"), ("dt_rank", 0), ("d_state", 0), ("d_conv", 0), ("expand", 0)]:
        with pytest.raises(ValueError, match=key):
            MambaConfig(**base, **{key: value})
    with pytest.raises(ValueError, match="dt_min"):
        MambaConfig(**base, dt_min=0.2, dt_max=0.1)
    with pytest.raises(ValueError, match="backend"):
        MambaConfig(**base, backend="cuda")
    assert Mamba2Config(**base).nheads == 2  # 64 / 32
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Config(**base, headdim=24)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2Config(**base, headdim=16, ngroups=3)
    for cls, cfg in ((Mamba, MambaConfig), (Mamba2, Mamba2Config)):
        with pytest.raises(ValueError, match="no separate MLP"):
            cls(cfg(**base, share="mlp"))


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_init(family):
    torch.manual_seed(0)
    n_layer, d = 4, 64
    base = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=n_layer, d_model=d)
    model = Mamba(MambaConfig(**base)) if family == "mamba" else Mamba2(Mamba2Config(**base))
    assert model.lm_head.weight is model.backbone.embeddings.weight
    assert all(block.mlp is None for block in model.layers)
    assert abs(model.backbone.embeddings.weight.std().item() / 0.02 - 1) < 0.05
    for block in model.layers:
        mixer = block.mixer
        A = -torch.exp(mixer.A_log)
        if family == "mamba":
            # S4D-real: A[:, n] = -(n + 1)
            torch.testing.assert_close(A, -torch.arange(1.0, 17.0).expand_as(A))
            dt = F.softplus(mixer.dt_proj.bias)
        else:
            assert (-A >= 1).all() and (-A <= 16).all()
            dt = F.softplus(mixer.dt_bias)
        assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
        assert torch.all(mixer.D == 1) and torch.all(block.norm.weight == 1)
        # kaiming-uniform (bound 1/sqrt(fan_in)) divided by sqrt(n_layer)
        bound = 1 / math.sqrt(mixer.out_proj.in_features) / math.sqrt(n_layer)
        assert mixer.out_proj.weight.abs().max() <= bound
        assert mixer.out_proj.weight.abs().max() > 0.9 * bound
    assert model(torch.zeros(2, BLOCK, dtype=torch.long)).shape == (2, BLOCK, VOCAB)


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_bf16_autocast(family):
    """Under CPU bf16 autocast the logits stay close to float32's (the scans run in float32)."""
    torch.manual_seed(0)
    base = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=L, d_model=D)
    model = Mamba(MambaConfig(**base)) if family == "mamba" else Mamba2(Mamba2Config(**base, d_state=16))
    idx = torch.randint(0, VOCAB, (4, BLOCK))
    ref = model(idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(idx)
        out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert_close(f"{family} bf16 autocast logits", ref.detach(), out.detach().float(), 5e-2)


# --- CUDA: kernels vs torch -----------------------------------------------------------------------
def _need_kernel(module: str) -> None:
    if backends.kernel_module(module) is None:  # not installed, or fails at import (no CUDA build)
        pytest.skip(f"{module} is not importable")


# Output tolerances (gradients get twice these). The CUDA selective scan computes in float32; the SSD
# Triton kernel runs its matrix products in TF32 for float32 inputs and in bf16 for bf16 inputs.
# Measured on an H100 (mamba-ssm 2.3.2, torch 2.11, triton 3.6), worst over T = 8 and 128, outputs and
# gradients: selective scan 8e-7 (fp32), 6e-3 (bf16, grad z); SSD 1.8e-3 (fp32), 6.3e-3 (bf16).
GPU_TOL = {
    "selective_scan": {torch.float32: 1e-4, torch.bfloat16: 2e-2},
    "ssd": {torch.float32: 1e-2, torch.bfloat16: 3e-2},
}
GPU_DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
GPU_SHAPES = pytest.mark.parametrize("T", [8, 128])  # the training shape (B=64, T=8), and a longer one


def _cuda_inputs(shapes: dict, dtype, seed: int):
    """Random leaves on CUDA shaped like the models' tensors; A, D and biases stay float32 parameters."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    out = {}
    for key, (shape, scale, shift, fp32) in shapes.items():
        t = torch.randn(shape, generator=g, device="cuda") * scale + shift
        if key == "A":
            t = -torch.exp(torch.rand(shape, generator=g, device="cuda") * math.log(16))
        out[key] = t.to(torch.float32 if fp32 else dtype).requires_grad_()
    return out


def _kernel_vs_torch(name, fn, inputs, dtype, **kwargs):
    tol = GPU_TOL[name][dtype]
    ref = fn(**inputs, backend="torch", **kwargs)
    out = fn(**inputs, backend="kernels", **kwargs)
    assert out.dtype == ref.dtype == dtype
    assert_close(f"{name} kernel out[{dtype}]", ref.float(), out.float(), tol)
    w = torch.randn(ref.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(9))
    ref_grads = torch.autograd.grad((ref.float() * w).sum(), list(inputs.values()))
    out_grads = torch.autograd.grad((out.float() * w).sum(), list(inputs.values()))
    for key, rg, og in zip(inputs, ref_grads, out_grads, strict=True):
        assert_close(f"{name} kernel grad {key}[{dtype}]", rg.float(), og.float(), 2 * tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@GPU_DTYPES
@GPU_SHAPES
def test_selective_scan_kernel_matches_torch(dtype, T):
    _need_kernel("mamba_ssm.ops.selective_scan_interface")
    batch, E, N = 64, 256, 16  # d_model 128, expand 2, d_state 16
    shapes = dict(
        u=((batch, T, E), 1.0, 0.0, False),
        delta=((batch, T, E), 0.5, 0.0, False),
        A=((E, N), 0, 0, True),
        B=((batch, T, N), 1.0, 0.0, False),
        C=((batch, T, N), 1.0, 0.0, False),
        D=((E,), 0.1, 1.0, True),
        z=((batch, T, E), 1.0, 0.0, False),
        delta_bias=((E,), 0.5, -3.0, True),
    )
    inputs = _cuda_inputs(shapes, dtype, seed=T)
    _kernel_vs_torch("selective_scan", selective_scan, inputs, dtype, delta_softplus=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@GPU_DTYPES
@GPU_SHAPES
def test_ssd_kernel_matches_torch(dtype, T):
    _need_kernel("mamba_ssm.ops.triton.ssd_combined")
    batch, H, P, G, N = 64, 8, 32, 1, 64  # d_model 128, expand 2, headdim 32, d_state 64
    shapes = dict(
        x=((batch, T, H, P), 1.0, 0.0, False),
        dt=((batch, T, H), 0.5, 0.0, False),
        A=((H,), 0, 0, True),
        B=((batch, T, G, N), 1.0, 0.0, False),
        C=((batch, T, G, N), 1.0, 0.0, False),
        D=((H,), 0.1, 1.0, True),
        dt_bias=((H,), 0.5, -3.0, True),
    )
    inputs = _cuda_inputs(shapes, dtype, seed=T)
    _kernel_vs_torch("ssd", ssd, inputs, dtype, dt_softplus=True, chunk_size=64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_model_kernels_match_torch_under_autocast(family):
    """Whole models at the training shape under bf16 autocast: backend='kernels' vs 'torch'. Measured on
    an H100: logits 2e-3 (Mamba) and 5e-3 (Mamba-2), parameter gradients at most 6.5e-3."""
    module = (
        "mamba_ssm.ops.selective_scan_interface" if family == "mamba" else "mamba_ssm.ops.triton.ssd_combined"
    )
    _need_kernel(module)
    torch.manual_seed(0)
    base = dict(vocab_size=VOCAB, block_size=8, n_layer=L, d_model=128)
    models = []
    for backend in ("torch", "kernels"):
        cfg = (
            MambaConfig(**base, backend=backend)
            if family == "mamba"
            else Mamba2Config(**base, backend=backend)
        )
        models.append((Mamba if family == "mamba" else Mamba2)(cfg).cuda())
    models[1].load_state_dict(models[0].state_dict())
    idx = torch.randint(0, VOCAB, (64, 8), device="cuda")
    outs = []
    for model in models:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(idx)
        F.cross_entropy(logits.float().flatten(0, 1), idx.flatten()).backward()
        outs.append(logits.float())
    assert_close(f"{family} logits kernels vs torch", outs[0], outs[1], 3e-2)
    ref_params = dict(models[0].named_parameters())
    for name, p in models[1].named_parameters():
        assert_close(f"{family} grad {name} kernels vs torch", ref_params[name].grad, p.grad, 5e-2)
