"""Build sniper_ext: C++/CUDA ops against the LibTorch stable ABI.

* `sniper_ext._C`       CPU kernels and op schemas (always built).
* `sniper_ext._C_cuda`  CUDA kernels (built when torch has CUDA or FORCE_CUDA=1),
                        loaded separately so a CPU-only install needs no CUDA library.

Both libraries use only the stable ABI and no Python C API at all, so one abi3
wheel serves every torch from the target version on and CPython >= 3.10. The
version, the stable-ABI target and the default CUDA architectures are read from
csrc/include/sniper/version.h (CMakeLists.txt reads the same file).

Environment: FORCE_CUDA=1 builds the CUDA library without a CUDA torch;
TORCH_CUDA_ARCH_LIST picks architectures (default without a visible GPU: see
version.h); CUDA_HOME picks the toolkit (default: the one whose nvcc is on PATH);
SNIPER_DEBUG=1 builds with -O0 -g; SNIPER_LINEINFO=1 keeps CUDA line info (for
compute-sanitizer and ncu) in a release build.
"""

import glob
import os
import re
import shutil
import subprocess

import torch
import torch.utils.cpp_extension as cpp_ext
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_constants():
    with open(os.path.join(ROOT, "csrc", "include", "sniper", "version.h")) as f:
        found = re.findall(r"^#define (SNIPER_\w+) (\S+)", f.read(), re.M)
    return {k: v.strip('"') for k, v in found}


CONSTANTS = read_constants()
VERSION = CONSTANTS["SNIPER_VERSION"]
TORCH_TARGET_VERSION = CONSTANTS["SNIPER_TORCH_TARGET_VERSION"]
DEFAULT_ARCHS = CONSTANTS["SNIPER_DEFAULT_CUDA_ARCHS"]

DEBUG = os.getenv("SNIPER_DEBUG", "0") == "1"
LINEINFO = os.getenv("SNIPER_LINEINFO", "0") == "1"
FORCE_CUDA = os.getenv("FORCE_CUDA", "0") == "1"
WANT_CUDA = torch.version.cuda is not None or FORCE_CUDA


def cudart_dir(home):
    """The folder of libcudart in a toolkit, or None (then it is no usable toolkit)."""
    for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
        if glob.glob(os.path.join(home, sub, "libcudart.so*")):
            return os.path.join(home, sub)
    return None


def nvcc_home(nvcc):
    """The toolkit folder of an nvcc, also when `nvcc` is a wrapper script elsewhere."""
    try:
        out = subprocess.run(
            [nvcc, "-dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True, timeout=120
        )
        m = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.M)
        if m:
            return os.path.dirname(m.group(1).strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def find_cuda_home():
    """A CUDA toolkit with nvcc, headers and libcudart, or None.

    torch's own guess (cpp_extension.CUDA_HOME) is the parent of the nvcc on PATH,
    wrong when that nvcc is a wrapper script (e.g. /usr/local/bin/nvcc): every
    candidate is checked for the runtime library before it is taken.
    """
    cands = [os.getenv("CUDA_HOME"), os.getenv("CUDA_PATH"), cpp_ext.CUDA_HOME]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(nvcc_home(nvcc))
    cands.append("/usr/local/cuda")
    for cand in cands:
        if (
            cand
            and os.path.exists(os.path.join(cand, "bin", "nvcc"))
            and os.path.exists(os.path.join(cand, "include", "cuda_runtime.h"))
            and cudart_dir(cand)
        ):
            return cand
    return None


def nvcc_release(home):
    """((major, minor), banner line) of a toolkit's nvcc."""
    out = subprocess.check_output([os.path.join(home, "bin", "nvcc"), "--version"], text=True)
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))), out.strip().splitlines()[-1]


CUDA_HOME = find_cuda_home() if WANT_CUDA else None
BUILD_CUDA = CUDA_HOME is not None
CUDA_RELEASE, NVCC_BANNER = nvcc_release(CUDA_HOME) if BUILD_CUDA else ((0, 0), "")
if FORCE_CUDA and not BUILD_CUDA:
    raise RuntimeError(
        "sniper_ext: FORCE_CUDA=1 but no CUDA toolkit (bin/nvcc, include/cuda_runtime.h and libcudart) "
        "was found; set CUDA_HOME to the toolkit folder"
    )
if WANT_CUDA and not BUILD_CUDA:
    print(
        "WARNING: sniper_ext: torch has CUDA but no CUDA toolkit was found (set CUDA_HOME): building the "
        "CPU kernels only; importing sniper_ext where a GPU is visible will then fail"
    )
if BUILD_CUDA and torch.version.cuda and int(torch.version.cuda.split(".")[0]) != CUDA_RELEASE[0]:
    raise RuntimeError(
        f"sniper_ext: torch uses CUDA {torch.version.cuda} but the toolkit in {CUDA_HOME} is CUDA "
        f"{CUDA_RELEASE[0]}.{CUDA_RELEASE[1]}; the major versions must match (set CUDA_HOME)"
    )
cpp_ext.CUDA_HOME = CUDA_HOME  # BuildExtension reads it to find nvcc


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def cuda_archs():
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and not torch.cuda.is_available():
        archs = DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return archs or "visible GPUs"


def write_build_info(archs):
    target = int(TORCH_TARGET_VERSION, 16)
    info = {
        "version": VERSION,
        "built_with_torch": torch.__version__,
        "stable_abi_target": f"{target >> 56}.{(target >> 48) & 0xFF}",
        "cuda_built": BUILD_CUDA,
        "cuda_version": "{}.{}".format(*CUDA_RELEASE) if BUILD_CUDA else "",
        "cuda_archs": archs,
        "nvcc": NVCC_BANNER,
    }
    path = os.path.join(ROOT, "sniper_ext", "_build_info.py")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write('"""Written by setup.py at build time."""\n')
        f.write(f"BUILD_INFO = {info!r}\n")
    os.replace(tmp, path)


# py_limited_api=True makes torch define Py_LIMITED_API; nothing here includes Python.h anyway.
macros = [("TORCH_TARGET_VERSION", TORCH_TARGET_VERSION)]
# Release builds carry no debug info (Python's own CFLAGS add -g; -g0 after it wins).
opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
link_flags = [] if DEBUG else ["-s"]
cxx_flags = opt + ["-std=c++17", "-fvisibility=hidden", "-ffp-contract=off", "-Wall"]
# --fmad=false: products and sums are not fused into FMAs, as -ffp-contract=off
# does on the host, so CUDA kernels round exactly as the CPU kernels do (their
# results are promised to be bitwise equal).
nvcc_flags = (["-O0", "-g", "-G"] if DEBUG else ["-O3"]) + [
    "-std=c++17",
    "--expt-relaxed-constexpr",
    "--fmad=false",
]
if LINEINFO and not DEBUG:
    nvcc_flags.append("-lineinfo")
include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]

ext_modules = [
    CppExtension(
        "sniper_ext._C",
        rel("csrc/ops/*.cpp") + rel("csrc/ops/cpu/*.cpp"),
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        py_limited_api=True,
    )
]

archs = cuda_archs() if BUILD_CUDA else ""
if BUILD_CUDA:
    # Only the CUDA runtime is linked: torch's current stream is looked up at run
    # time (csrc/ops/cuda/cuda_stream.cpp), so no torch CUDA library is needed.
    ext_modules.append(
        CppExtension(
            "sniper_ext._C_cuda",
            rel("csrc/ops/cuda/*.cpp") + rel("csrc/ops/cuda/*.cu"),
            include_dirs=include_dirs,
            define_macros=macros + [("USE_CUDA", "1")],
            library_dirs=[cudart_dir(CUDA_HOME)],
            libraries=["cudart", "dl"],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
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
