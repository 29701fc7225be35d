"""Build sniper_ext: C++/CUDA ops against the LibTorch stable ABI.

* `sniper_ext._C`       CPU kernels and op schemas (always built).
* `sniper_ext._C_cuda`  CUDA kernels (built when torch has CUDA or FORCE_CUDA=1),
                        loaded separately so a CPU-only install needs no CUDA library.

Both libraries use only the stable ABI (TORCH_TARGET_VERSION = 2.10) and no
Python C API at all, so one abi3 wheel serves torch >= 2.10 and CPython >= 3.10.

Environment: FORCE_CUDA=1 builds the CUDA library without a CUDA torch;
TORCH_CUDA_ARCH_LIST picks architectures (default "8.0;9.0+PTX" when no GPU is
visible); SNIPER_DEBUG=1 builds with -O0 -g.
"""
import glob
import os
import subprocess

import shutil

import torch
import torch.utils.cpp_extension as cpp_ext
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))
TORCH_TARGET_VERSION = "0x020a000000000000"  # LibTorch stable ABI of torch 2.10
DEFAULT_ARCHS = "8.0;9.0+PTX"

DEBUG = os.getenv("SNIPER_DEBUG", "0") == "1"
FORCE_CUDA = os.getenv("FORCE_CUDA", "0") == "1"


def find_cuda_home():
    """torch finds the toolkit only when torch itself has CUDA; FORCE_CUDA looks too."""
    if cpp_ext.CUDA_HOME is not None or not FORCE_CUDA:
        return cpp_ext.CUDA_HOME
    for cand in (os.getenv("CUDA_HOME"), os.getenv("CUDA_PATH"), "/usr/local/cuda"):
        if cand and os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return cand
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(nvcc)) if nvcc else None


CUDA_HOME = find_cuda_home()
cpp_ext.CUDA_HOME = CUDA_HOME  # BuildExtension reads it to find nvcc
BUILD_CUDA = (torch.version.cuda is not None or FORCE_CUDA) and CUDA_HOME is not None
if FORCE_CUDA and CUDA_HOME is None:
    raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def nvcc_version():
    try:
        out = subprocess.check_output([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"], text=True)
        return out.strip().splitlines()[-1]
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def cuda_archs():
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and not torch.cuda.is_available():
        archs = DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return archs or "visible GPUs"


def write_build_info(archs):
    info = {
        "version": VERSION,
        "built_with_torch": torch.__version__,
        "stable_abi_target": "2.10",
        "cuda_built": BUILD_CUDA,
        "cuda_archs": archs if BUILD_CUDA else "",
        "nvcc": nvcc_version() if BUILD_CUDA else "",
    }
    path = os.path.join(ROOT, "sniper_ext", "_build_info.py")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write('"""Written by setup.py at build time."""\n')
        f.write(f"BUILD_INFO = {info!r}\n")
    os.replace(tmp, path)


# py_limited_api=True makes torch define Py_LIMITED_API; nothing here includes Python.h anyway.
macros = [("TORCH_TARGET_VERSION", TORCH_TARGET_VERSION)]
opt = ["-O0", "-g"] if DEBUG else ["-O3"]
cxx_flags = opt + ["-std=c++17", "-fvisibility=hidden", "-ffp-contract=off", "-Wall"]
include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]

ext_modules = [
    CppExtension(
        "sniper_ext._C",
        rel("csrc/ops/*.cpp") + rel("csrc/ops/cpu/*.cpp"),
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags},
        py_limited_api=True,
    )
]

archs = cuda_archs() if BUILD_CUDA else ""
if BUILD_CUDA:
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    libraries = ["cudart"]
    # The current-stream shim lives in libtorch_cuda; a CPU-only torch (FORCE_CUDA
    # builds for compile checks) has none, and the symbol then resolves at load.
    if glob.glob(os.path.join(torch_lib, "libtorch_cuda.*")):
        libraries.append("torch_cuda")
    ext_modules.append(
        CppExtension(
            "sniper_ext._C_cuda",
            rel("csrc/ops/cuda/*.cpp") + rel("csrc/ops/cuda/*.cu"),
            include_dirs=include_dirs,
            define_macros=macros + [("USE_CUDA", "1")],
            library_dirs=[os.path.join(CUDA_HOME, "lib64")],
            libraries=libraries,
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"],
            },
            py_limited_api=True,
        )
    )

write_build_info(archs)

setup(
    name="sniper_ext",
    version=VERSION,
    description="SNIPER multi-scale training and fast detection ops (NMS, Soft-NMS, ...) for PyTorch",
    packages=find_packages(include=["sniper_ext", "sniper_ext.*"]),
    package_data={"sniper_ext": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.10", "numpy", "pillow", "pycocotools", "tqdm"],
    extras_require={"test": ["pytest", "pytest-benchmark", "hypothesis"]},
    entry_points={"console_scripts": ["sniper=sniper_ext.cli:main"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
