"""CUDA kernels of csrc/ops/cuda run on the CPU (see README.md)."""
