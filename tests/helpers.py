"""Shared test helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

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


def drive_optimizer(opt, sched, params: list[torch.Tensor], steps: int, seed: int = 0) -> None:
    """`steps` optimizer and schedule steps of `opt` on `params` with a fixed sequence of random gradients
    (the same for every optimizer given the same shapes: no feedback of rounding through a model, which
    Adam's division by small second moments amplifies)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * 1e-2
        opt.step()
        sched.step()


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


REPO = Path(__file__).resolve().parents[1]


def copy_workflow(workdir: Path) -> Path:
    """The workflow as a user checks it out, into `workdir`: the Snakefile, workflow/ (rules, schema, report
    captions) and the package sources (no __pycache__), for a workflow test to run Snakemake in."""
    shutil.copy(REPO / "Snakefile", workdir)
    shutil.copytree(REPO / "workflow", workdir / "workflow")
    shutil.copytree(REPO / "src" / "grokbench", workdir / "src" / "grokbench",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return workdir
