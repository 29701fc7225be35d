#!/usr/bin/env bash
# Assembles a CUDA 13 toolkit (nvcc, cicc, headers with CCCL, libcudart) from NVIDIA's pip
# wheels, for machines without an installed toolkit. Prints nothing else on success.
#   bash scripts/cuda_toolkit_from_pip.sh DEST [PYTHON]     then: export CUDA_HOME=DEST PATH=DEST/bin:$PATH
set -euo pipefail
DEST=${1:?usage: cuda_toolkit_from_pip.sh DEST [PYTHON]}
PY=${2:-python3}
VER=${CUDA_PIP_VERSION:-13.0.*}
SITE=$(mktemp -d)
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$SITE" \
  "nvidia-cuda-nvcc==$VER" "nvidia-nvvm==$VER" "nvidia-cuda-crt==$VER" "nvidia-cuda-cccl==$VER" \
  "nvidia-cuda-runtime==$VER"
rm -rf "$DEST"
mv "$SITE/nvidia/cu13" "$DEST"
rm -rf "$SITE"
# The runtime wheel ships only the versioned library; the linker looks for libcudart.so.
lib=$(ls "$DEST"/lib/libcudart.so.* | head -1)
ln -sf "$(basename "$lib")" "$DEST/lib/libcudart.so"
ln -sfn lib "$DEST/lib64"
"$DEST/bin/nvcc" --version | tail -1
