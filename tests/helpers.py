"""Shared test helpers."""

from __future__ import annotations

import torch


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, tol: float) -> float:
    """Assert max |ref - out| / max |ref| <= tol (computed in float64); returns that relative error."""
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != ref {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    scale = ref.abs().max().item()
    err = (ref.double() - out.double()).abs().max().item() / max(scale, 1e-30)
    print(f"{name}: max relative error {err:.3e} (tol {tol:.0e})")
    assert err <= tol, f"{name}: max relative error {err:.3e} > {tol:.0e}"
    return err


@torch.no_grad()
def assert_causal(model, idx: torch.Tensor, vocab: int, positions, rtol: float, atol: float) -> torch.Tensor:
    """Changing token t never changes the logits before t, and does change them at t; returns the
    logits of `idx`."""
    base = model(idx)
    for t in positions:
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % vocab
        out = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=rtol, atol=atol)
        assert not torch.allclose(out[:, t], base[:, t])  # the change is seen from t on
    return base
