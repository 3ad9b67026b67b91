"""Sequence-mixing math, one module per operator. Each operator `op(..., backend="auto")` runs either a
CUDA kernel library's implementation or its pure-PyTorch path, as `backend` says (models/backends.py);
`naive_op` is the pure-PyTorch path alone, whatever the device (the reference the tests compare with).

The pure-PyTorch references are loops over time (retention: its parallel form) that run on CPU and GPU;
`fast_op` (backend="fast", and "auto" on the CPU for short sequences) is each operator's fast form: a closed
form over time with T x T decay matrices (RWKV-7, RWKV-6, the delta rules, GLA, SSD), or for Mamba-1's
selective scan the loop as one autograd Function. Both compute in float32, or float64 for float64 inputs,
and return the dtype each operator names. Kernels get
their inputs in the one dtype the kernel library expects. What the operators share lives in common.py.
"""
