"""The cost plan: FLOPs counted per step, GPU-hours per run, runtime requests within the partition."""

from __future__ import annotations

from pathlib import Path

import pytest

from grokbench import cli
from grokbench.plan import (
    CPU_STEP_MS,
    Shape,
    _count,
    cpu_seconds,
    flops_per_step,
    runtime_minutes,
    throughput,
)

REPO = Path(__file__).resolve().parents[1]
GPT = {"family": "gpt", "n_layer": 2, "d_model": 64, "n_head": 4}


def test_gpt_flops_are_six_n_per_token_plus_attention():
    shape = Shape(vocab_size=100, block_size=6)
    n_params, flops = flops_per_step(GPT, shape, batch_size=8)
    tokens = 8 * 6
    # matmul weights (all but the embeddings' lookups, the biases and norms) x 2 (multiply-add) x 3
    # (forward + two backward products); attention adds 2 products of T x T x d per layer, x 3
    embed = 100 * 64 + 6 * 64  # token and position tables: looked up, not multiplied (the head is tied)
    matmul = 2 * (3 * 64 * 64 + 64 * 64 + 2 * 4 * 64 * 64) + 64 * 100
    attention = 2 * (2 * 2 * 6 * 6 * 64) * 8  # per layer: QK^T and AV, 2 FLOPs per multiply-add
    assert flops == pytest.approx(3 * (2 * matmul * tokens + attention), rel=0.02)
    assert n_params > matmul > n_params - embed - 2000  # the rest: biases and norms


def test_meta_and_cpu_counts_agree():
    """The CPU fallback (batch 1, scaled) counts what the meta device counts, within the attention
    kernels' bookkeeping (the CPU's SDPA path counts its backward slightly differently)."""
    shape = Shape(vocab_size=50, block_size=5)
    assert _count(GPT, shape, 4, "meta")[1] == pytest.approx(_count(GPT, shape, 1, "cpu")[1] * 4, rel=0.02)


def test_runtime_request_capped_at_the_partition_with_slots():
    assert runtime_minutes(0.01, 2880) == (10, 1)  # a floor for start-up
    assert runtime_minutes(2.0, 2880) == (156, 1)  # 2 h x 1.3
    assert runtime_minutes(100.0, 2880) == (2880, 3)  # 130 h in 48 h slots


def test_throughput_names_its_source():
    speed, source = throughput("H200", "llama", "paper", 2e9)
    assert speed > 0 and "from FLOPs" in source and "ANCHORS" in source
    with pytest.raises(ValueError, match="no peak known for GPU 'TPU'"):
        throughput("TPU", "gpt", "paper", 2e9)


@pytest.mark.slow
def test_plan_of_the_paper_config(capsys):
    assert cli.main(["plan", "--configfile", str(REPO / "config" / "paper.yaml"), "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| cmp")]
    # every comparison run: the seed study's 66, issue #15's 135 (plus 21 composition runs)
    assert len(rows) == 66 + 135
    assert "total: " in out and "GPU-hours" in out
    run_ids = [r.split("|")[1].strip().split("/") for r in rows]  # dataset, model, training, seed
    seed_study = [
        r for r, (data, model, training, _) in zip(rows, run_ids)
        if model in ("gpt", "llama", "rwkv", "mamba") and training.split("+")[0] == "paper"
        and data not in ("cmp_k2", "cmp_k4")
    ]  # fmt: skip
    assert len(seed_study) == 66
    hours = [float(r.split("|")[6]) for r in seed_study]
    assert all(3 < h < 10 for h in hours)  # 1.5M steps of a ~57M model on one H100


def test_cpu_seconds_orders_jobs_by_steps_and_family():
    """Steps times the family's measured CPU step; a family not measured counts as the slowest."""
    assert cpu_seconds({"family": "gpt"}, {"steps": 1000}) == pytest.approx(CPU_STEP_MS["gpt"])
    assert cpu_seconds({"family": "gpt"}, {"steps": 2000}) == 2 * cpu_seconds(
        {"family": "gpt"}, {"steps": 1000}
    )
    assert cpu_seconds({"family": "mamba"}, {"steps": 100}) > cpu_seconds({"family": "rwkv7"}, {"steps": 100})
    assert cpu_seconds({"family": "new"}, {"steps": 10}) == cpu_seconds({"family": "mamba"}, {"steps": 10})


def test_cpu_step_times_name_real_families():
    from grokbench.models import FAMILIES

    assert set(CPU_STEP_MS) == set(FAMILIES)  # every family measured, no misspelt key
