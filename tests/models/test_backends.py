"""models/backends.py: kernel imports (a missing library is silent, a broken one warns once) and what each
operator ran (`resolved`, run.json's `backends`), on the CPU: CUDA is simulated where a test needs it."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from grokbench.models import backends, build_model
from grokbench.models.ops import rwkv7 as rwkv7_ops


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA reported available, and kernel_module's cache emptied before and after."""
    backends.kernel_module.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    yield
    backends.kernel_module.cache_clear()


def _import_raising(monkeypatch, error: Exception) -> list[str]:
    calls: list[str] = []

    def fake(name, package=None):
        calls.append(name)
        raise error

    monkeypatch.setattr(importlib, "import_module", fake)
    return calls


def test_a_broken_kernel_library_warns_once_naming_module_and_error(fake_cuda, monkeypatch):
    calls = _import_raising(monkeypatch, RuntimeError("triton 9.9 does not match CUDA 11.0"))
    with pytest.warns(RuntimeWarning) as caught:
        assert backends.kernel_module("fla.ops.rwkv7") is None
        assert backends.kernel_module("fla.ops.rwkv7") is None  # cached: no second import, no second warning
    assert calls == ["fla.ops.rwkv7"]
    (w,) = caught
    assert "fla.ops.rwkv7" in str(w.message) and "RuntimeError: triton 9.9 does not match CUDA 11.0" in str(
        w.message
    )


def test_an_installed_library_missing_a_dependency_warns(fake_cuda, monkeypatch):
    """fla installed, triton not: `import fla.ops.gla` fails on `triton`, not on `fla`: a broken install."""
    _import_raising(monkeypatch, ModuleNotFoundError("No module named 'triton'", name="triton"))
    with pytest.warns(RuntimeWarning, match=r"fla\.ops\.gla .*No module named 'triton'"):
        assert backends.kernel_module("fla.ops.gla") is None


def test_a_missing_kernel_library_is_silent(fake_cuda, monkeypatch):
    _import_raising(monkeypatch, ModuleNotFoundError("No module named 'mamba_ssm'", name="mamba_ssm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.kernel_module("mamba_ssm.ops.triton.ssd_combined") is None


def test_no_import_without_cuda(monkeypatch):
    backends.kernel_module.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = _import_raising(monkeypatch, RuntimeError("must not be imported"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert backends.kernel_module("fla.ops.rwkv7") is None
    finally:
        backends.kernel_module.cache_clear()
    assert calls == []


# --- what ran ---------------------------------------------------------------------------------------------

TINY = {
    "gpt": {"family": "gpt", "n_layer": 1, "d_model": 16, "n_head": 2},
    "mamba": {"family": "mamba", "n_layer": 1, "d_model": 16, "d_state": 4},
    "mamba2": {"family": "mamba2", "n_layer": 1, "d_model": 32, "headdim": 16, "d_state": 4},
    "rwkv7": {"family": "rwkv7", "n_layer": 1, "d_model": 16, "head_size": 8},
    "gla": {"family": "gla", "n_layer": 1, "d_model": 16, "n_head": 2},
}


def _resolved(family: str, T: int, **keys) -> dict:
    model = build_model({**TINY[family], **keys}, vocab_size=10, block_size=T)
    return backends.resolved(model, torch.zeros(1, T, dtype=torch.long))


@pytest.mark.parametrize(
    ("family", "keys", "operators"),
    [
        ("gpt", {}, {}),  # attention only: nothing to choose
        ("mamba", {}, {"selective_scan": "fast", "short_conv": "fast"}),  # auto on the CPU: the fast forms
        ("mamba", {"backend": "torch"}, {"selective_scan": "torch", "short_conv": "fast"}),  # Mamba's conv
        ("mamba2", {"backend": "fast"}, {"ssd": "fast", "short_conv": "fast"}),
        ("rwkv7", {"backend": "torch"}, {"rwkv7": "torch"}),
        ("gla", {"backend": "torch"}, {"gla": "torch"}),
    ],
)
def test_resolved_names_what_each_operator_ran(family, keys, operators):
    got = _resolved(family, 8, **keys)
    assert got["operators"] == operators
    assert got["seq_len"] == 8
    assert got["backend"] == (None if family == "gpt" else keys.get("backend", "auto"))


def test_resolved_follows_the_length_threshold():
    """ "auto" runs rwkv7's fast form up to its FAST_MAX_SEQ_LEN, the loop beyond: the operator decides."""
    n = rwkv7_ops.FAST_MAX_SEQ_LEN
    assert _resolved("rwkv7", n)["operators"] == {"rwkv7": "fast"}
    assert _resolved("rwkv7", n + 1)["operators"] == {"rwkv7": "torch"}


def test_recording_is_off_outside_resolved():
    model = build_model(TINY["mamba"], vocab_size=10, block_size=4)
    model(torch.zeros(1, 4, dtype=torch.long))  # note() without a recording: no effect, no error
    assert backends._ran is None
    with backends.recording() as outer:
        with backends.recording() as inner:
            backends.note("x", "torch")
        backends.note("y", "fast")
    assert inner == {"x": {"torch"}} and outer == {"y": {"fast"}}
