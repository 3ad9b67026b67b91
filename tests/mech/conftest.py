"""One intra-op thread for these tests: the probes' L-BFGS and the tiny models' forwards are small ops,
which two threads on a shared machine only slow down (the threads wait on each other)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
