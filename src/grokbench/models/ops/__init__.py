"""Sequence-mixing math, one module per operator. Each operator `op(..., backend="auto")` runs either a
CUDA kernel library's implementation or its pure-PyTorch path, as `backend` says (models/backends.py);
`naive_op` is the pure-PyTorch path alone, whatever the device (the reference the tests compare with).

The pure-PyTorch paths are loops over time (retention: its parallel form) that run on CPU and GPU; they
compute in float32, or float64 for float64 inputs, and return the dtype each operator names. Kernels get
their inputs in the one dtype the kernel library expects. What the operators share lives in common.py.
"""
