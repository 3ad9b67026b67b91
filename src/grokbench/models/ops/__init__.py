"""Sequence-mixing math, one module per operator: a pure-PyTorch reference (`naive_*`, a loop over time
that runs on CPU and GPU) and a dispatcher that can call the CUDA kernel libraries instead."""
