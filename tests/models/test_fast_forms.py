"""The fast forms of the recurrences (backend="fast": ops/*, models/backends.py) against the reference loops
over time (backend="torch", what the other tests compare with transformers and fla).

Per operator, outputs and the gradient of every input (of a random weighting of the outputs), over
sequence lengths T in 1, 6, 17, 64, several batch and head shapes, in float64 (tolerance 1e-12), float32
(1e-5) and under bfloat16 autocast from bfloat16 inputs (loose: both forms compute in float32 from the
same inputs, but round differently and the Mamba references contract in bfloat16 under autocast); then
whole models (every recurrent family, fast vs torch on the same weights: logits and every parameter's
gradient), what `backend="auto"` picks, and the Mamba-1 autograd Function under vmap and torch.compile.
Errors are max |ref - out| / max |ref| per tensor (tests/helpers.assert_close); measured values are
printed (pytest -s).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grokbench.models import build_model
from grokbench.models.backends import use_fast
from grokbench.models.ops import delta_rule, gla, rwkv6, rwkv7, selective_scan, ssd

from ..helpers import assert_close

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2}
DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16-autocast"]
)
LENGTHS = pytest.mark.parametrize("T", [1, 6, 17, 64])
# (batch, heads): one sequence and one head, and several of each
SHAPES = pytest.mark.parametrize("batch,H", [(1, 1), (3, 2)])


def inputs_of(gen: torch.Generator, dtype: torch.dtype, **shapes) -> dict[str, torch.Tensor]:
    """Leaf tensors that require grad, drawn in float64 and rounded to `dtype` (bfloat16 for the autocast
    case: the projections' output dtype there). Each value: (shape, kind) with kind "normal", "unit" (L2
    normalized over the last dim), "decay" (log decays in [-1, 0)), "rate" (in (0, 1)) or "param" (float32,
    or float64 in the float64 case: a parameter)."""
    out = {}
    for name, (shape, kind) in shapes.items():
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        if kind == "unit":
            x = F.normalize(x, dim=-1)
        elif kind == "decay":
            x = -torch.rand(*shape, generator=gen, dtype=torch.float64)
        elif kind == "rate":
            x = torch.rand(*shape, generator=gen, dtype=torch.float64)
        to = dtype if kind != "param" else (torch.float64 if dtype == torch.float64 else torch.float32)
        out[name] = x.to(to).requires_grad_()
    return out


def compare(name: str, ref_fn, fast_fn, inputs: dict[str, torch.Tensor], dtype: torch.dtype, seed: int = 1):
    """Outputs (a tensor, or a tuple whose None entries are skipped) and every input's gradient, of
    `fast_fn(**inputs)` against `ref_fn(**inputs)`. For dtype=bfloat16 the fast form runs under bfloat16
    autocast and the reference in float64 on the same (bfloat16-valued) inputs: the exact function of
    what the fast form was given (the reference under autocast rounds more: the Mamba loops contract
    in bfloat16 there)."""
    tol = TOL[dtype]
    results = []
    for fn in (ref_fn, fast_fn):
        args = inputs
        if dtype == torch.bfloat16 and fn is ref_fn:
            args = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16 and fn is fast_fn):
            out = fn(**args)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
        gen = torch.Generator().manual_seed(seed)
        weights = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        grads = torch.autograd.grad(loss, list(args.values()), allow_unused=True)  # unused: a zero gradient
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(args.values(), grads)]
        results.append((outs, grads))
    (ref_outs, ref_grads), (outs, grads) = results
    for i, (r, o) in enumerate(zip(ref_outs, outs)):
        if dtype != torch.bfloat16:
            assert r.dtype == o.dtype, f"{name} output {i}: {o.dtype} != {r.dtype}"
        assert_close(f"{name} output {i}", r, o, tol)
    for key, r, o in zip(inputs, ref_grads, grads):
        if r.abs().max() == 0:  # e.g. no decay gradient for one token from a zero state: ~0 either way
            assert o.abs().max() <= tol, f"{name} grad {key}: {o.abs().max():.3e} where the reference has 0"
        else:
            assert_close(f"{name} grad {key}", r, o, tol)


# --- operators ------------------------------------------------------------------------------------


@DTYPES
@LENGTHS
@SHAPES
def test_selective_scan(T, batch, H, dtype):
    """Mamba-1: H plays the state size N here (1 or 2), with 5 channels; softplus(Δ + bias), D and z."""
    gen = torch.Generator().manual_seed(T)
    E, N = 5, H + 1
    x = inputs_of(
        gen,
        dtype,
        u=((batch, T, E), "normal"),
        delta=((batch, T, E), "normal"),
        B=((batch, T, N), "normal"),
        C=((batch, T, N), "normal"),
        z=((batch, T, E), "normal"),
        D=((E,), "param"),
        delta_bias=((E,), "param"),
    )
    A = -torch.rand(E, N, generator=gen, dtype=torch.float64).mul(3).exp()
    x["A"] = A.to(x["D"].dtype).requires_grad_()
    kw = dict(delta_softplus=True)
    ref, fast = selective_scan.naive_selective_scan, selective_scan.fast_selective_scan
    compare(f"selective_scan T={T}", lambda **a: ref(**a, **kw), lambda **a: fast(**a, **kw), x, dtype)


@DTYPES
@LENGTHS
def test_selective_scan_plain(T, dtype):
    """Without the optional parts (D, z, bias, softplus): Δ as given, of either sign."""
    gen = torch.Generator().manual_seed(T)
    E, N = 4, 3
    x = inputs_of(gen, dtype, u=((2, T, E), "normal"), delta=((2, T, E), "normal"), B=((2, T, N), "normal"))
    x["C"] = torch.randn(2, T, N, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    x["A"] = (-torch.rand(E, N, generator=gen, dtype=torch.float64)).to(x["u"].dtype).requires_grad_()
    compare(
        f"selective_scan plain T={T}",
        selective_scan.naive_selective_scan,
        selective_scan.fast_selective_scan,
        x,
        dtype,
    )


@DTYPES
@LENGTHS
@pytest.mark.parametrize("H,G", [(1, 1), (4, 2)])
def test_ssd(T, H, G, dtype):
    gen = torch.Generator().manual_seed(T)
    batch, P, N = 2, 3, 4
    x = inputs_of(
        gen,
        dtype,
        x=((batch, T, H, P), "normal"),
        dt=((batch, T, H), "normal"),
        B=((batch, T, G, N), "normal"),
        C=((batch, T, G, N), "normal"),
        D=((H, P) if G > 1 else (H,), "param"),  # both skip shapes
        dt_bias=((H,), "param"),
    )
    x["A"] = (
        (-torch.rand(H, generator=gen, dtype=torch.float64).mul(2).exp()).to(x["D"].dtype).requires_grad_()
    )
    kw = dict(dt_softplus=True)
    compare(
        f"ssd T={T} H={H} G={G}",
        lambda **a: ssd.naive_ssd(**a, **kw),
        lambda **a: ssd.fast_ssd(**a, **kw),
        x,
        dtype,
    )


@DTYPES
@LENGTHS
@SHAPES
@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated"])
def test_delta_rule(T, batch, H, gated, dtype):
    gen = torch.Generator().manual_seed(T)
    K, V = 4, 5
    shapes = dict(
        q=((batch, T, H, K), "unit"),
        k=((batch, T, H, K), "unit"),
        v=((batch, T, H, V), "normal"),
        beta=((batch, T, H), "rate"),
    )
    if gated:
        shapes["g"] = ((batch, T, H), "decay")
    x = inputs_of(gen, dtype, **shapes)
    compare(
        f"delta_rule gated={gated} T={T}",
        delta_rule.naive_gated_delta_rule,
        delta_rule.fast_gated_delta_rule,
        x,
        dtype,
    )


@DTYPES
@LENGTHS
@SHAPES
def test_gla(T, batch, H, dtype):
    gen = torch.Generator().manual_seed(T)
    K, V = 4, 3
    x = inputs_of(
        gen,
        dtype,
        q=((batch, T, H, K), "normal"),
        k=((batch, T, H, K), "normal"),
        v=((batch, T, H, V), "normal"),
        g=((batch, T, H, K), "decay"),
    )
    compare(f"gla T={T}", gla.naive_gla, gla.fast_gla, x, dtype)


@DTYPES
@LENGTHS
@SHAPES
@pytest.mark.parametrize("state", [False, True], ids=["zero-state", "initial+final-state"])
def test_rwkv6(T, batch, H, state, dtype):
    gen = torch.Generator().manual_seed(T)
    K, V = 4, 3
    shapes = dict(
        r=((batch, T, H, K), "normal"),
        k=((batch, T, H, K), "normal"),
        v=((batch, T, H, V), "normal"),
        w=((batch, T, H, K), "decay"),
        u=((H, K), "param"),
    )
    if state:
        shapes["initial_state"] = ((batch, H, K, V), "param")
    x = inputs_of(gen, dtype, **shapes)
    kw = dict(scale=0.5, output_final_state=state)
    compare(
        f"rwkv6 T={T} state={state}",
        lambda **a: rwkv6.naive_rwkv6(**a, **kw),
        lambda **a: rwkv6.fast_rwkv6(**a, **kw),
        x,
        dtype,
    )


@DTYPES
@LENGTHS
@SHAPES
@pytest.mark.parametrize("state", [False, True], ids=["zero-state", "initial+final-state"])
@pytest.mark.parametrize("bound", [rwkv7.RWKV7_W_LOWER_BOUND, None], ids=["factored", "pairwise"])
def test_rwkv7(T, batch, H, state, bound, dtype):
    """RWKV-7's parametrization (a = -kk, b = kk * iclr, w >= RWKV7_W_LOWER_BOUND); with the bound the
    fast form splits the decays (exp(c_t) exp(-c_s)), without it computes each pair's decay."""
    gen = torch.Generator().manual_seed(T)
    K, V = 4, 3
    shapes = dict(
        r=((batch, T, H, K), "normal"),
        k=((batch, T, H, K), "normal"),
        v=((batch, T, H, V), "normal"),
        kk=((batch, T, H, K), "unit"),
        iclr=((batch, T, H, K), "rate"),
        w=((batch, T, H, K), "rate"),  # scaled to [lower bound, 0) below
    )
    if state:
        shapes["initial_state"] = ((batch, H, K, V), "param")
    x = inputs_of(gen, dtype, **shapes)
    kw = dict(scale=0.7, output_final_state=state, w_lower_bound=bound)

    def op(fn):
        def f(r, k, v, kk, iclr, w, initial_state=None):
            return fn(
                r, rwkv7.RWKV7_W_LOWER_BOUND * w, k, v, -kk, kk * iclr, initial_state=initial_state, **kw
            )

        return f

    compare(f"rwkv7 T={T} state={state} bound={bound}", op(rwkv7.naive_rwkv7), op(rwkv7.fast_rwkv7), x, dtype)


def test_rwkv7_pairwise_beyond_the_factored_bound():
    """A bound too loose for the split (T |bound| > FACTORED_MAX_LOG_DECAY): the pairwise decays, still
    the reference's function (strong decays, whose exp(-c) would overflow float32)."""
    gen = torch.Generator().manual_seed(0)
    T, bound = 17, -10.0
    x = inputs_of(
        gen,
        torch.float32,
        r=((2, T, 2, 4), "normal"),
        k=((2, T, 2, 4), "normal"),
        v=((2, T, 2, 3), "normal"),
        kk=((2, T, 2, 4), "unit"),
        w=((2, T, 2, 4), "rate"),
    )
    assert T * -bound > rwkv7.FACTORED_MAX_LOG_DECAY

    def op(fn):
        return lambda r, k, v, kk, w: fn(r, bound * w, k, v, -kk, 0.5 * kk, w_lower_bound=bound)[0]

    compare("rwkv7 strong decays", op(rwkv7.naive_rwkv7), op(rwkv7.fast_rwkv7), x, torch.float32)


# --- what "auto" runs -------------------------------------------------------------------------------


def test_use_fast():
    x = torch.zeros(2, 6, 3)
    assert use_fast("fast", x, 0) and use_fast("fast", x.to("meta"), 0)  # "fast": always
    assert not use_fast("torch", x, None) and not use_fast("kernels", x, None)
    assert use_fast("auto", x, None) and use_fast("auto", x, 6) and not use_fast("auto", x, 5)
    assert not use_fast("auto", x, 0)
    assert not use_fast("auto", x.to("meta"), None)  # only on backends.FAST_DEVICES (the CPU)


@pytest.mark.parametrize("op", ["gla", "rwkv6", "rwkv7", "delta_rule", "ssd"])
def test_auto_runs_the_fast_form_up_to_its_length(op):
    """On the CPU "auto" gives the fast form's result, bit for bit, up to the operator's
    FAST_MAX_SEQ_LEN, and the reference's beyond it."""
    module = {"gla": gla, "rwkv6": rwkv6, "rwkv7": rwkv7, "delta_rule": delta_rule, "ssd": ssd}[op]
    limit = module.FAST_MAX_SEQ_LEN
    gen = torch.Generator().manual_seed(0)
    for T, expected in ((limit, "fast"), (limit + 1, "torch")):
        r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
        if op == "ssd":
            args = (r(1, T, 2, 3), r(1, T, 2), -torch.rand(2, generator=gen), r(1, T, 1, 4), r(1, T, 1, 4))
        elif op == "delta_rule":
            args = (
                *(F.normalize(r(1, T, 2, 4), dim=-1) for _ in range(2)),
                r(1, T, 2, 3),
                torch.rand(1, T, 2),
            )
        elif op == "rwkv6":
            args = (
                r(1, T, 2, 4),
                r(1, T, 2, 4),
                r(1, T, 2, 3),
                -torch.rand(1, T, 2, 4, generator=gen),
                r(2, 4),
            )
        elif op == "rwkv7":
            kk = F.normalize(r(1, T, 2, 4), dim=-1)
            w = rwkv7.RWKV7_W_LOWER_BOUND * torch.rand(1, T, 2, 4, generator=gen)
            args = (r(1, T, 2, 4), w, r(1, T, 2, 4), r(1, T, 2, 3), -kk, 0.5 * kk)
        else:
            args = (r(1, T, 2, 4), r(1, T, 2, 4), r(1, T, 2, 3), -torch.rand(1, T, 2, 4, generator=gen))
        fn = {"gla": gla.gla, "rwkv6": rwkv6.rwkv6, "rwkv7": rwkv7.rwkv7}.get(op)
        fn = fn or {"delta_rule": delta_rule.gated_delta_rule, "ssd": ssd.ssd}[op]
        kw = dict(w_lower_bound=rwkv7.RWKV7_W_LOWER_BOUND) if op == "rwkv7" else {}
        out = fn(*args, **kw)
        want = fn(*args, **kw, backend=expected)
        out, want = (o[0] if isinstance(o, tuple) else o for o in (out, want))
        assert torch.equal(out, want), (op, T, expected)


def test_auto_runs_the_fast_scan_at_any_length():
    gen = torch.Generator().manual_seed(0)
    assert selective_scan.FAST_MAX_SEQ_LEN is None
    args = [torch.randn(2, 70, 3, generator=gen), torch.rand(2, 70, 3, generator=gen)]
    args += [-torch.rand(3, 2, generator=gen), torch.randn(2, 70, 2, generator=gen), torch.randn(2, 70, 2)]
    out = selective_scan.selective_scan(*args)
    assert torch.equal(out, selective_scan.fast_selective_scan(*args))


# --- whole models -----------------------------------------------------------------------------------

MODEL_TOL = {torch.float64: 1e-10, torch.float32: 2e-5}
RECURRENT = ["rwkv7", "rwkv6", "mamba", "mamba2", "gla", "retnet", "deltanet", "hgrn2"]
SIZES = {
    "rwkv7": dict(n_layer=2, d_model=32, head_size=8),
    "rwkv6": dict(n_layer=2, d_model=32, head_size=8),
    "mamba": dict(n_layer=2, d_model=16),
    "mamba2": dict(n_layer=2, d_model=32, headdim=8, d_state=8, ngroups=2),
    "gla": dict(n_layer=2, d_model=32, n_head=2, use_short_conv=True),
    "retnet": dict(n_layer=2, d_model=32, n_head=2),
    "deltanet": dict(n_layer=2, d_model=32, n_head=2),
    "hgrn2": dict(n_layer=2, d_model=32, n_head=2, use_short_conv=True),
}


@pytest.mark.parametrize("family", RECURRENT)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_model_fast_matches_torch(family, dtype):
    """The same weights with backend="fast" (the fast forms, and the linear-attention families' short
    convolutions as shifted products) and "torch": logits and every parameter's gradient. float32
    gradients are looser than the operators': a model's gradients sum many rounded products."""
    T, vocab = 6, 23
    torch.manual_seed(0)
    base = build_model({"family": family, "backend": "torch", **SIZES[family]}, vocab, T).to(dtype)
    with torch.no_grad():  # zero-initialized weights would hide parts of the gradient
        for p in base.parameters():
            p.add_(0.1 * torch.randn_like(p))
    idx = torch.randint(0, vocab, (3, T))
    w = torch.randn(3, T, vocab, dtype=dtype)
    results = {}
    for backend in ("torch", "fast"):
        for m in base.modules():
            if hasattr(m, "backend"):
                m.backend = backend
        base.zero_grad(set_to_none=True)
        logits = base(idx)
        (logits * w).sum().backward()
        results[backend] = (logits.detach(), {n: p.grad.clone() for n, p in base.named_parameters()})
    (ref, ref_grads), (out, grads) = results["torch"], results["fast"]
    tol = MODEL_TOL[dtype]
    assert_close(f"{family} logits", ref, out, tol)
    for name, g in ref_grads.items():
        assert_close(f"{family} grad {name}", g, grads[name], tol)


@pytest.mark.parametrize("family", RECURRENT)
def test_model_fast_under_bf16_autocast(family):
    """The training setting: bf16 autocast, fast vs torch logits; loose (bfloat16 projections)."""
    T, vocab = 6, 23
    torch.manual_seed(0)
    model = build_model({"family": family, "backend": "torch", **SIZES[family]}, vocab, T)
    idx = torch.randint(0, vocab, (3, T))
    out = {}
    for backend in ("torch", "fast"):
        for m in model.modules():
            if hasattr(m, "backend"):
                m.backend = backend
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out[backend] = model(idx).float()
    assert_close(f"{family} bf16 autocast logits", out["torch"], out["fast"], 3e-2)


# --- the Mamba-1 autograd Function under vmap and torch.compile -------------------------------------


def test_fast_scan_under_vmap():
    """vmap of grad (train/packed.py's torch.func machinery) over three independent scans equals each
    scan's reference gradients."""
    from torch.func import grad, vmap

    gen = torch.Generator().manual_seed(0)
    d = torch.float64
    M, B, T, E, N = 3, 2, 5, 4, 3
    xs = [torch.randn(M, B, T, E, generator=gen, dtype=d), torch.randn(M, B, T, E, generator=gen, dtype=d)]
    xs += [-torch.rand(M, E, N, generator=gen, dtype=d)]
    xs += [torch.randn(M, B, T, N, generator=gen, dtype=d), torch.randn(M, B, T, N, generator=gen, dtype=d)]

    def loss(fn):
        return lambda *a: (fn(*a, delta_softplus=True) ** 2).sum()

    batched = vmap(grad(loss(selective_scan.fast_selective_scan), argnums=tuple(range(5))))(*xs)
    for i in range(M):
        ins = [x[i].clone().requires_grad_() for x in xs]
        ref = torch.autograd.grad(loss(selective_scan.naive_selective_scan)(*ins), ins)
        for j, (r, g) in enumerate(zip(ref, batched)):
            assert_close(f"vmap scan {i} grad {j}", r, g[i], 1e-12)


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches emptied before and after: compiled code objects (Backbone.forward, the operators)
    are shared by every test, and fullgraph=True elsewhere fails at Dynamo's recompile limit."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("family", [f for f in RECURRENT if f != "retnet"])
def test_model_fast_under_torch_compile(family, fresh_dynamo):
    """The fast forms trace with torch.compile as the trainer calls it (dynamic=True; the "eager" backend
    here, to keep the test fast): the same logits as eager, a backward, and a second length."""
    torch.manual_seed(0)
    model = build_model({"family": family, "backend": "fast", **SIZES[family]}, 11, 8)
    compiled = torch.compile(model, backend="eager", dynamic=True)
    for T in (6, 7):
        idx = torch.randint(0, 11, (2, T))
        out = compiled(idx)
        torch.testing.assert_close(out, model(idx), rtol=0, atol=0)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
