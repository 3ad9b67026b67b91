"""grokbench: grokking on reasoning tasks across architectures."""

__version__ = "0.1.0"
