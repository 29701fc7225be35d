"""Builds the CUDA simulation harness: the project's csrc/ops/cuda sources,
copied with every ``kernel<<<cfg>>>(args)`` rewritten into a call of the
harness's launcher, compiled as host C++ by g++ with sim_prelude.h
force-included, and linked with the harness runtime into a shared library
(plus, for the sanitizer modes, a small driver executable that loads it).

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


# -- the build ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Built:
    mode: str
    lib: str
    driver: str | None
    seconds: float  # spent compiling/linking in this call (0 when cached)
    compiled: int  # objects compiled in this call


def _kernel_sources() -> dict[str, str]:
    """Every file of csrc/ops/cuda that CUDA code includes or is (.cu, .cuh, .h)."""
    files = {}
    for path in sorted(glob.glob(os.path.join(KERNEL_DIR, "*"))):
        if os.path.splitext(path)[1] in (".cu", ".cuh", ".h", ".hpp"):
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
    aux_headers = _sha(*[k.encode() + v.encode() for k, v in sorted(rewritten.items()) if not k.endswith(".cu")])
    selftests = {}
    for path in sorted(glob.glob(os.path.join(SELFTEST_DIR, "*.cu"))):
        selftests["selftest_" + os.path.basename(path)] = rewrite_launches(
            _read(path).decode(), os.path.relpath(path, REPO)
        )[0]

    with _locked(root):
        src_dir = os.path.join(root, f"src-{_sha(base, aux_headers, *sorted(rewritten.items()))}")
        obj_dir = os.path.join(root, "obj")
        os.makedirs(src_dir, exist_ok=True)
        os.makedirs(obj_dir, exist_ok=True)
        for fname, text in {**rewritten, **selftests}.items():
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
        todo = [j for j in jobs if not os.path.exists(j[1])]
        if todo:
            if verbose:
                print(f"cuda_sim: compiling {len(todo)} file(s) for {mode}", file=sys.stderr)
            with concurrent.futures.ThreadPoolExecutor(max_workers=_jobs()) as ex:
                futures = [ex.submit(_compile, cxx, src, obj, fl, obj + ".log") for src, obj, fl in todo]
                for f in futures:
                    f.result()

        link_flags = [f for f in flags if f.startswith(("-fsanitize", "-pthread"))]
        lib_key = _sha(*objects, link_flags)
        lib = os.path.join(root, f"libsim-{mode}{'-' + variant if variant else ''}-{lib_key}.so")
        linked = 0
        if not os.path.exists(lib):
            tmp = f"{lib}.{os.getpid()}.tmp"
            cmd = [cxx, "-shared", "-Wl,-Bsymbolic", *link_flags, "-o", tmp, *objects]
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
