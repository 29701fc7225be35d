"""Builds the CUDA simulation harness: the project's csrc/ops/cuda sources,
copied with every ``kernel<<<cfg>>>(args)`` rewritten into a call of the
harness's launcher, compiled as host C++ by g++ with sim_prelude.h
force-included, and linked with the harness runtime into a shared library
(plus, for the sanitizer modes, a small driver executable that loads it).

The fiber library also holds the CUDA registration code itself
(csrc/ops/cuda/*_cuda.cpp) and the op schemas (csrc/ops/*.cpp), compiled
against torch's stable-ABI headers with include/sim_cuda_device.h in the place
of cuda_device.h (no device guard, no stream) and their registration blocks
turned into functions: sim_register_ops(ns) registers every op under the
namespace ``ns`` for CPU tensors, so ``torch.ops.<ns>.nms(...)`` runs the CUDA
entry points, allocation and launcher calls with the simulated kernels.

Modes:
  fiber  threads of a block are fibers switched at __syncthreads (-O2)
  asan   fiber mode under AddressSanitizer + UndefinedBehaviorSanitizer
  tsan   a std::thread per simulated thread under ThreadSanitizer

Objects are cached under .build/ (or $SNIPER_SIM_BUILD_DIR), keyed by a hash of
the sources, the headers, the flags and the compiler, so repeated runs do not
recompile. ``python build.py [mode ...]`` builds from the command line;
$SNIPER_SIM_CXXFLAGS adds compiler flags (e.g. -O0 -g to debug a kernel).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OPS_DIR = os.path.join(REPO, "csrc", "ops")
KERNEL_DIR = os.path.join(REPO, "csrc", "ops", "cuda")
SHARED_INCLUDE = os.path.join(REPO, "csrc", "include")
SIM_INCLUDE = os.path.join(HERE, "include")
RUNTIME_DIR = os.path.join(HERE, "runtime")
SELFTEST_DIR = os.path.join(HERE, "kernels")

COMMON_FLAGS = ["-std=c++20", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-pthread", "-w"]
MODE_FLAGS = {
    "fiber": ["-O2"],
    "asan": [
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined,float-cast-overflow",
        "-fno-sanitize-recover=all",
    ],
    "tsan": ["-O1", "-g", "-fsanitize=thread", "-DSIM_THREADS=1"],
}
MODES = tuple(MODE_FLAGS)
#: Modes whose library holds the CUDA registrations (loaded into the test process next to torch);
#: the sanitizer modes run in a driver process without torch and call the launchers only.
REGISTRATION_MODES = ("fiber",)


class Unavailable(RuntimeError):
    """No g++ or no CUDA headers: the harness cannot be built here."""


class BuildError(RuntimeError):
    pass


# -- the <<< >>> rewrite ---------------------------------------------------------------------


def _mask_comments_and_strings(text: str) -> str:
    """The text with comments and string/char literals blanked (same length,
    newlines kept), so that scanning for launches sees code only."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, min(j, n)):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def _match_forward(code: str, i: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket closing the one at code[i]."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == open_c:
            depth += 1
        elif code[j] == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError("unbalanced " + open_c + close_c)


def _kernel_start(code: str, end: int) -> int:
    """Start of the kernel expression (qualified name, optional template
    arguments) that ends right before code[end] (the first '<' of '<<<')."""
    i = end
    while i > 0 and code[i - 1].isspace():
        i -= 1
    if i > 0 and code[i - 1] == ">":  # template arguments
        depth = 0
        while i > 0:
            i -= 1
            if code[i] == ">":
                depth += 1
            elif code[i] == "<":
                depth -= 1
                if depth == 0:
                    break
        else:
            raise ValueError("unbalanced template arguments before <<<")
        while i > 0 and code[i - 1].isspace():
            i -= 1
    start = i
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] in "_:"):
        start -= 1
    if start == i:
        raise ValueError("no kernel name before <<<")
    return start


def _depth_scan_to(code: str, i: int, token: str) -> int:
    """Index of the first `token` at bracket depth 0 from code[i]."""
    depth = 0
    j = i
    while j < len(code):
        c = code[j]
        if depth == 0 and code.startswith(token, j):
            return j
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        j += 1
    raise ValueError("no closing " + token)


def rewrite_launches(text: str, display_path: str) -> tuple[str, int]:
    """Rewrites every `K<<<cfg>>>(args);` in `text` into
    `::sim::launch(::sim::Site{"K", __FILE__, __LINE__}, ::sim::cfg(cfg), [](auto&&... a) { K(a...); }, args);`,
    keeping line numbers. Returns the new text (with a #line directive naming
    the original file) and the number of launches rewritten."""
    out = text
    count = 0
    while True:
        code = _mask_comments_and_strings(out)
        pos = code.find("<<<")
        if pos < 0:
            break
        line = code.count("\n", 0, pos) + 1
        try:
            start = _kernel_start(code, pos)
            cfg_end = _depth_scan_to(code, pos + 3, ">>>")
            j = cfg_end + 3
            while j < len(code) and code[j].isspace():
                j += 1
            if j >= len(code) or code[j] != "(":
                raise ValueError("no argument list after >>>")
            args_end = _match_forward(code, j, "(", ")")
        except ValueError as e:
            raise BuildError(f"{display_path}:{line}: cannot rewrite the kernel launch: {e}") from None
        kernel = out[start:pos].rstrip()
        name = " ".join(kernel.split()).replace("\\", "\\\\").replace('"', '\\"')
        cfg = out[pos + 3 : cfg_end]
        args = out[j + 1 : args_end - 1]
        between = out[cfg_end + 3 : j]  # whitespace between >>> and (, newlines kept
        repl = (
            f'::sim::launch(::sim::Site{{"{name}", __FILE__, __LINE__}}, ::sim::cfg({cfg}),{between or " "}'
            f"[](auto&&... sim_a) {{ {kernel}(sim_a...); }}" + (f", {args})" if args.strip() else ")")
        )
        out = out[:start] + repl + out[args_end:]
        count += 1
    if "<<<" in _mask_comments_and_strings(out):
        raise BuildError(f"{display_path}: a '<<<' is left after the rewrite")
    return f'#line 1 "{display_path}"\n' + out, count


# -- toolchain ---------------------------------------------------------------------------------


def _cxx() -> str:
    cxx = os.environ.get("SNIPER_SIM_CXX", "g++")
    if shutil.which(cxx) is None:
        raise Unavailable(f"no C++ compiler ({cxx}) on PATH")
    return cxx


def cuda_include() -> str:
    """A directory with cuda_runtime.h, cuda_fp16.h and cuda_bf16.h."""
    candidates = []
    if os.environ.get("SNIPER_SIM_CUDA_INCLUDE"):
        candidates.append(os.environ["SNIPER_SIM_CUDA_INCLUDE"])
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "include"))
    candidates.append("/usr/local/cuda/include")
    candidates += sorted(glob.glob("/usr/local/cuda-*/include"), reverse=True)
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    for d in candidates:
        if all(os.path.isfile(os.path.join(d, h)) for h in ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h")):
            return d
    raise Unavailable("no CUDA headers found (set SNIPER_SIM_CUDA_INCLUDE or CUDA_HOME)")


def _jobs() -> int:
    for var in ("SNIPER_SIM_JOBS", "MAX_JOBS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    return os.cpu_count() or 1


def build_root() -> str:
    return os.environ.get("SNIPER_SIM_BUILD_DIR") or os.path.join(HERE, ".build")


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_if_changed(path: str, text: str) -> None:
    data = text.encode()
    if os.path.exists(path) and _read(path) == data:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(root: str):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- variants: patched copies of the real kernels (deliberate bugs) ---------------------------


@dataclasses.dataclass(frozen=True)
class Patch:
    file: str  # a file name in csrc/ops/cuda
    pattern: str  # regex
    replacement: str
    count: int = 1  # how many matches the pattern must have


def apply_patches(name: str, files: dict[str, str], patches: tuple[Patch, ...]) -> dict[str, str]:
    files = dict(files)
    for p in patches:
        if p.file not in files:
            raise BuildError(f"variant {name}: no {p.file} in csrc/ops/cuda")
        new, n = re.subn(p.pattern, p.replacement, files[p.file])
        if n != p.count:
            raise BuildError(
                f"variant {name}: pattern {p.pattern!r} matched {n} times in {p.file}, expected "
                f"{p.count}; update the variant in python_tests/cuda_sim to the current kernel"
            )
        files[p.file] = new
    return files


# -- the CUDA registrations, run on CPU tensors ---------------------------------------------


_IMPL_BLOCK = re.compile(r"STABLE_TORCH_LIBRARY_IMPL\(sniper, CUDA, m\)")
_SCHEMA_BLOCK = re.compile(r"STABLE_TORCH_LIBRARY_FRAGMENT\(sniper, m\)")
_LIBRARY = "::torch::stable::detail::StableLibrary"


def _block_to_function(path: str, text: str, pattern: re.Pattern, function: str) -> str:
    """The file with its one registration block turned into `extern "C" void function(StableLibrary& m)`."""
    new, n = pattern.subn(f'extern "C" void {function}({_LIBRARY}& m)', text)
    if n != 1:
        raise BuildError(
            f"{os.path.relpath(path, REPO)}: expected one `{pattern.pattern}` block, found {n} "
            "(the cuda_sim harness registers each file's block under a namespace of its own)"
        )
    return f'#line 1 "{os.path.relpath(path, REPO)}"\n' + new


def registration_sources(cuda_cpp: dict[str, str]) -> dict[str, str]:
    """The CUDA registrations (`cuda_cpp`: the texts of csrc/ops/cuda/*_cuda.cpp, patched for a
    variant), the schema files (csrc/ops/*.cpp with a STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m)
    block), each block turned into a function, and sim_registry.cpp, whose sim_register_ops(ns)
    runs them all for namespace ns and the CPU key."""
    files, defs, impls = {}, [], []
    for path in sorted(glob.glob(os.path.join(OPS_DIR, "*.cpp"))):
        text = _read(path).decode()
        if not _SCHEMA_BLOCK.search(text):
            continue  # e.g. library_version.cpp
        stem = os.path.splitext(os.path.basename(path))[0]
        files[f"schema_{stem}.cpp"] = _block_to_function(path, text, _SCHEMA_BLOCK, f"sim_def_{stem}")
        defs.append(f"sim_def_{stem}")
    for fname, text in sorted(cuda_cpp.items()):
        stem = fname[: -len("_cuda.cpp")]
        files[fname] = _block_to_function(os.path.join(KERNEL_DIR, fname), text, _IMPL_BLOCK, f"sim_impl_{stem}")
        impls.append(f"sim_impl_{stem}")
    if not impls:
        raise BuildError(f"no *_cuda.cpp registrations in {KERNEL_DIR}")
    decl = "".join(f'extern "C" void {f}({_LIBRARY}& m);\n' for f in defs + impls)
    files["sim_registry.cpp"] = (
        "// Generated by python_tests/cuda_sim/build.py: registers the schemas and the CUDA\n"
        "// registrations of csrc/ops under a namespace chosen at run time, for CPU tensors.\n"
        "#include <torch/csrc/stable/library.h>\n\n#include <exception>\n#include <memory>\n#include <vector>\n\n"
        'extern "C" void sim_set_last_error(const char* msg);\n'
        + decl
        + '\nextern "C" int sim_register_ops(const char* ns) {\n'
        f"  using Lib = {_LIBRARY};\n"
        "  static std::vector<std::unique_ptr<Lib>> held;  // registered for the life of the process\n"
        "  try {\n"
        "    auto def = std::make_unique<Lib>(Lib::Kind::DEF, ns, nullptr, __FILE__, __LINE__);\n"
        + "".join(f"    {f}(*def);\n" for f in defs)
        + '    auto impl = std::make_unique<Lib>(Lib::Kind::IMPL, ns, "CPU", __FILE__, __LINE__);\n'
        + "".join(f"    {f}(*impl);\n" for f in impls)
        + "    held.push_back(std::move(def));\n    held.push_back(std::move(impl));\n    return 0;\n"
        "  } catch (const std::exception& e) {\n    sim_set_last_error(e.what());\n  }\n  return 1;\n}\n"
    )
    return files


def _torch_flags() -> tuple[list[str], list[str], str]:
    """(compile flags, link flags, a version key) for code against the installed torch."""
    import torch
    import torch.utils.cpp_extension as cpp_ext

    target = re.search(
        r"^#define SNIPER_TORCH_TARGET_VERSION (\S+)",
        _read(os.path.join(SHARED_INCLUDE, "sniper", "version.h")).decode(),
        re.M,
    )
    if target is None:
        raise BuildError("no SNIPER_TORCH_TARGET_VERSION in csrc/include/sniper/version.h")
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    cflags = [
        f"-DTORCH_TARGET_VERSION={target.group(1)}",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
    ]
    for d in cpp_ext.include_paths():
        cflags += ["-isystem", d]
    ldflags = [f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}", "-ltorch_cpu", "-lc10"]
    return cflags, ldflags, f"{torch.__version__} {torch.__file__}"


# -- the build ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Built:
    mode: str
    lib: str
    driver: str | None
    seconds: float  # spent compiling/linking in this call (0 when cached)
    compiled: int  # objects compiled in this call


def _kernel_sources() -> dict[str, str]:
    """Every file of csrc/ops/cuda that CUDA code includes or is (.cu, .cuh, .h), and the CUDA
    registrations (*_cuda.cpp)."""
    files = {}
    for path in sorted(glob.glob(os.path.join(KERNEL_DIR, "*"))):
        if os.path.splitext(path)[1] in (".cu", ".cuh", ".h", ".hpp") or path.endswith("_cuda.cpp"):
            files[os.path.basename(path)] = _read(path).decode()
    if not any(f.endswith(".cu") for f in files):
        raise BuildError(f"no .cu files in {KERNEL_DIR}")
    return files


def _header_digest() -> str:
    paths = sorted(glob.glob(os.path.join(SHARED_INCLUDE, "**", "*"), recursive=True))
    paths += sorted(glob.glob(os.path.join(SIM_INCLUDE, "**", "*"), recursive=True))
    return _sha(*[p.encode() + _read(p) for p in paths if os.path.isfile(p)])


def _compiler_id(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def _compile(cxx: str, src: str, obj: str, flags: list[str], log: str) -> None:
    tmp = f"{obj}.{os.getpid()}.tmp"
    cmd = [cxx, *flags, "-c", src, "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
        raise BuildError(f"compiling {src} failed (log: {log}):\n{(r.stdout + r.stderr)[-6000:]}")
    os.replace(tmp, obj)


def build(
    mode: str = "fiber", variant: str | None = None, patches: tuple[Patch, ...] = (), verbose: bool = False
) -> Built:
    """Builds (or finds cached) the harness library for `mode`; with `variant`,
    a library whose kernels carry `patches` (the other objects are shared)."""
    if mode not in MODE_FLAGS:
        raise ValueError(f"mode must be one of {MODES}")
    t0 = time.perf_counter()
    cxx = _cxx()
    cuda_inc = cuda_include()
    root = build_root()
    files = _kernel_sources()
    if variant:
        files = apply_patches(variant, files, patches)
    cuda_cpp = {k: files.pop(k) for k in sorted(files) if k.endswith(".cpp")}
    headers = _header_digest()
    flags = COMMON_FLAGS + MODE_FLAGS[mode] + os.environ.get("SNIPER_SIM_CXXFLAGS", "").split()
    compiler = _compiler_id(cxx)
    base = _sha(mode, flags, compiler, cuda_inc, _read(os.path.join(cuda_inc, "cuda_runtime_api.h")), headers)

    # Rewritten copies: every kernel-dir file (so quote-includes find rewritten
    # headers), then the harness's own test kernels.
    rewritten, launches = {}, {}
    for fname, text in files.items():
        rewritten[fname], launches[fname] = rewrite_launches(
            text, os.path.relpath(os.path.join(KERNEL_DIR, fname), REPO)
        )
    # The registrations see the harness's device header (no guard, no stream) in the place of cuda_device.h.
    rewritten["cuda_device.h"] = (
        '#line 1 "python_tests/cuda_sim/include/sim_cuda_device.h"\n'
        + _read(os.path.join(SIM_INCLUDE, "sim_cuda_device.h")).decode()
    )
    registrations = registration_sources(cuda_cpp) if mode in REGISTRATION_MODES else {}
    if registrations:
        torch_cflags, torch_ldflags, torch_key = _torch_flags()
        ops_headers = _sha(*[p.encode() + _read(p) for p in sorted(glob.glob(os.path.join(OPS_DIR, "*.h")))])
    aux_headers = _sha(*[k.encode() + v.encode() for k, v in sorted(rewritten.items()) if not k.endswith(".cu")])
    selftests = {}
    for path in sorted(glob.glob(os.path.join(SELFTEST_DIR, "*.cu"))):
        selftests["selftest_" + os.path.basename(path)] = rewrite_launches(
            _read(path).decode(), os.path.relpath(path, REPO)
        )[0]

    with _locked(root):
        src_dir = os.path.join(root, f"src-{_sha(base, aux_headers, *sorted({**rewritten, **registrations}.items()))}")
        obj_dir = os.path.join(root, "obj")
        os.makedirs(src_dir, exist_ok=True)
        os.makedirs(obj_dir, exist_ok=True)
        for fname, text in {**rewritten, **selftests, **registrations}.items():
            _write_if_changed(os.path.join(src_dir, fname), text)

        include = ["-I", src_dir, "-I", SIM_INCLUDE, "-I", SHARED_INCLUDE, "-isystem", cuda_inc]
        kernel_flags = flags + include + ["-include", "sim_prelude.h"]
        jobs = []  # (src, obj, flags)
        objects = []
        for fname in sorted({**rewritten, **selftests}):
            if not fname.endswith(".cu"):
                continue
            text = rewritten.get(fname) or selftests[fname]
            key = _sha(base, aux_headers, text)
            obj = os.path.join(obj_dir, f"{mode}-{os.path.splitext(fname)[0]}-{key}.o")
            objects.append(obj)
            jobs.append((os.path.join(src_dir, fname), obj, kernel_flags + ["-x", "c++"]))
        for rt in ("sim_runtime.cpp", "sim_capi.cpp"):
            src = os.path.join(RUNTIME_DIR, rt)
            key = _sha(base, aux_headers, _read(src))
            obj = os.path.join(obj_dir, f"{mode}-{os.path.splitext(rt)[0]}-{key}.o")
            objects.append(obj)
            rt_flags = flags + include + (["-include", "sim_prelude.h"] if rt == "sim_runtime.cpp" else [])
            jobs.append((src, obj, rt_flags))
        link_libs = []
        if registrations:
            # Host C++ against torch, no prelude. The copies' `#include "../<family>_common.h"` finds
            # csrc/ops through -I KERNEL_DIR (after src_dir, so the copied cuda_registration.h and the
            # harness's cuda_device.h win).
            reg_flags = flags + ["-I", src_dir, "-I", KERNEL_DIR, "-I", SHARED_INCLUDE] + torch_cflags
            # sim_torch.cpp uses torch's C++ allocator API, which the stable-ABI target forbids.
            unstable_flags = [f for f in reg_flags if not f.startswith("-DTORCH_TARGET_VERSION=")]
            reg_sources = [(os.path.join(src_dir, f), reg_flags) for f in sorted(registrations)]
            reg_sources.append((os.path.join(RUNTIME_DIR, "sim_torch.cpp"), unstable_flags))
            for src, src_flags in reg_sources:
                key = _sha(base, aux_headers, ops_headers, torch_key, src_flags, _read(src))
                obj = os.path.join(obj_dir, f"{mode}-reg-{os.path.splitext(os.path.basename(src))[0]}-{key}.o")
                objects.append(obj)
                jobs.append((src, obj, src_flags))
            link_libs = torch_ldflags
        todo = [j for j in jobs if not os.path.exists(j[1])]
        if todo:
            if verbose:
                print(f"cuda_sim: compiling {len(todo)} file(s) for {mode}", file=sys.stderr)
            with concurrent.futures.ThreadPoolExecutor(max_workers=_jobs()) as ex:
                futures = [ex.submit(_compile, cxx, src, obj, fl, obj + ".log") for src, obj, fl in todo]
                for f in futures:
                    f.result()

        link_flags = [f for f in flags if f.startswith(("-fsanitize", "-pthread"))]
        lib_key = _sha(*objects, link_flags, link_libs)
        lib = os.path.join(root, f"libsim-{mode}{'-' + variant if variant else ''}-{lib_key}.so")
        linked = 0
        if not os.path.exists(lib):
            tmp = f"{lib}.{os.getpid()}.tmp"
            cmd = [cxx, "-shared", "-Wl,-Bsymbolic", *link_flags, "-o", tmp, *objects, *link_libs]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise BuildError(f"linking {lib} failed:\n{r.stdout}{r.stderr}")
            os.replace(tmp, lib)
            linked = 1

        driver = None
        if mode != "fiber":
            src = os.path.join(RUNTIME_DIR, "sim_driver.cpp")
            driver = os.path.join(root, f"sim_driver-{mode}-{_sha(base, _read(src))}")
            if not os.path.exists(driver):
                tmp = f"{driver}.{os.getpid()}.tmp"
                cmd = [cxx, *flags, "-o", tmp, src, "-ldl"]
                r = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    raise BuildError(f"building {driver} failed:\n{r.stdout}{r.stderr}")
                os.replace(tmp, driver)
                linked += 1
    seconds = time.perf_counter() - t0 if (todo or linked) else 0.0
    return Built(mode, lib, driver, seconds, len(todo))


def main(argv: list[str]) -> int:
    for mode in argv or ["fiber"]:
        b = build(mode, verbose=True)
        print(f"{mode}: {b.lib} ({b.compiled} compiled, {b.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
