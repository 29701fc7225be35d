// The project's build constants, in one place. setup.py and CMakeLists.txt
// read the values below with a regular expression (keep each on one line);
// C++ code includes this header.
#pragma once

// Version of sniper_ext (the Python package, the wheel and the C++ library).
#define SNIPER_VERSION "0.1.0"

// Oldest torch whose LibTorch stable ABI the libraries target (torch 2.10):
// passed as TORCH_TARGET_VERSION to every compilation.
#define SNIPER_TORCH_TARGET_VERSION 0x020a000000000000

// CUDA architectures built when none is asked for and no GPU is visible:
// Turing (T4), Ampere (A100, A10/RTX 30xx), Ada (L4/L40, RTX 40xx), Hopper
// (H100/H200), plus Hopper PTX that newer GPUs compile at load time.
#define SNIPER_DEFAULT_CUDA_ARCHS "7.5;8.0;8.6;8.9;9.0+PTX"
