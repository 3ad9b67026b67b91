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
