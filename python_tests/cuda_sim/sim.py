"""The CUDA ops of csrc/ops/cuda run on the CPU by the simulation harness, with
the signatures and outputs of the ops (torch.ops.sniper.*).

    from cuda_sim.sim import Sim
    s = Sim(order="random", seed=3)          # mode="fiber" | "asan" | "tsan"
    keep = s.nms(boxes, scores, 0.5)

In the fiber mode (in process) a call runs the project's CUDA registration code
itself (csrc/ops/cuda/*_cuda.cpp: the entry points' checks, the output
allocation, the launcher calls), registered by the harness library under a
namespace of its own for CPU tensors (build.py), with the simulated kernels;
every CPU allocation during the call is poisoned. The sanitizer modes send each
call to a driver process built with the sanitizer (one per Sim, ended by
Sim.close(), which also collects ASan's leak report); it has no torch, so there
the launchers are called directly (runtime/sim_capi.cpp), with outputs
allocated here as the registrations allocate them. Inputs must be CPU tensors.
Defaults come from $SNIPER_SIM_ORDER (forward | reverse | random),
$SNIPER_SIM_SEED, $SNIPER_SIM_REDUCE (cub | sequential | random) and
$SNIPER_SIM_POISON.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import subprocess
import tempfile
import time

import torch

try:
    from . import build as _build
    from .variants import VARIANTS
except ImportError:  # imported as a top-level module
    import build as _build  # type: ignore[no-redef]
    from variants import VARIANTS  # type: ignore[no-redef]

ORDERS = {"forward": 0, "reverse": 1, "random": 2}
REDUCE_ORDERS = {"cub": 0, "sequential": 1, "random": 2}
DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


class SimError(RuntimeError):
    """A launcher failed in the harness (its exception, or a harness report)."""


class SanitizerError(RuntimeError):
    """The sanitizer driver died: a sanitizer report (in the message) or a crash."""


#: The ops, by the names of torch.ops.sniper: Sim.<name>(...) takes the raw op's arguments.
OPS = (
    "box_iou",
    "nms",
    "batched_nms",
    "soft_nms",
    "nms_fixed",
    "batched_nms_fixed",
    "soft_nms_fixed",
    "greedy_chip_cover",
    "focus_chips",
    "label_anchors",
    "deform_im2col",
    "deform_col2im",
    "roi_align",
    "roi_align_backward",
    "deform_roi_pool",
    "deform_roi_pool_backward",
)
#: The environment variables of the NMS-family size thresholds (csrc/ops/cuda/nms_tuning.h), in the order of Sim.tuning.
TUNING_VARIABLES = ("SNIPER_NMS_LARGE_SEGMENT", "SNIPER_NMS_MASK_BUDGET", "SNIPER_SOFT_NMS_LARGE_GROUP")

_LIBS: dict[str, ctypes.CDLL] = {}
_BUILT: dict[tuple, _build.Built] = {}
_NAMESPACES: dict[str, str] = {}  # library path -> the torch.ops namespace its registrations are under


def get_build(mode: str = "fiber", variant: str | None = None) -> _build.Built:
    """The harness library for `mode` (and a variant of variants.py), built
    or found in the cache once per process."""
    key = (mode, variant)
    if key not in _BUILT:
        patches = VARIANTS[variant] if variant else ()
        _BUILT[key] = _build.build(mode, variant=variant, patches=patches)
    return _BUILT[key]


def _load(path: str) -> ctypes.CDLL:
    lib = _LIBS.get(path)
    if lib is None:
        lib = ctypes.CDLL(path)
        lib.sim_configure.argtypes = [ctypes.c_int, ctypes.c_ulonglong, ctypes.c_int, ctypes.c_int]
        lib.sim_last_error.restype = ctypes.c_char_p
        _LIBS[path] = lib
    return lib


def _registered_ops(built: _build.Built, variant: str | None):
    """torch.ops.<ns> of the library's CUDA registrations, registered once per process under a
    namespace per library (sniper_sim, or sniper_sim_<variant>)."""
    if built.lib not in _NAMESPACES:
        lib = _load(built.lib)
        lib.sim_register_ops.argtypes = [ctypes.c_char_p]
        lib.sim_poison_allocations.argtypes = [ctypes.c_int]
        ns = "sniper_sim" + (f"_{variant}" if variant else "")
        if ns in _NAMESPACES.values():
            raise SimError(f"cuda_sim: namespace {ns} is taken by another build of the harness in this process")
        if lib.sim_register_ops(ns.encode()) != 0:
            raise SimError(f"cuda_sim: registering the ops under {ns} failed: {lib.sim_last_error().decode()}")
        _NAMESPACES[built.lib] = ns
    return getattr(torch.ops, _NAMESPACES[built.lib])


def _poisoned(shape, dtype, poison: int) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype)
    if t.numel():
        t.view(-1).view(torch.uint8).fill_(poison)
    return t


def _dt(t: torch.Tensor) -> int:
    if t.dtype not in DTYPES:
        raise TypeError(f"cuda_sim: unsupported dtype {t.dtype}")
    return DTYPES[t.dtype]


class Sim:
    """One configuration of the harness: build mode, thread order, block-reduce
    order, seed, poison byte; `variant` names a library built with patched
    kernels (variants.py)."""

    def __init__(
        self,
        mode: str = "fiber",
        order: str | None = None,
        seed: int | None = None,
        reduce: str | None = None,
        poison: int | str | None = None,
        variant: str | None = None,
        timeout: float = 600.0,
    ):
        self.mode = mode
        self.order = order or os.environ.get("SNIPER_SIM_ORDER", "forward")
        self.seed = int(seed if seed is not None else os.environ.get("SNIPER_SIM_SEED", "0"))
        self.reduce = reduce or os.environ.get("SNIPER_SIM_REDUCE", "cub")
        if poison is None:
            poison = os.environ.get("SNIPER_SIM_POISON", "0xA5")
        self.poison = int(poison, 0) if isinstance(poison, str) else int(poison)
        if self.order not in ORDERS or self.reduce not in REDUCE_ORDERS:
            raise ValueError(f"cuda_sim: order must be one of {list(ORDERS)}, reduce one of {list(REDUCE_ORDERS)}")
        self.timeout = timeout
        self.variant = variant
        self.built = get_build(mode, variant)
        self._lib = _load(self.built.lib) if mode == "fiber" else None
        self._ops = _registered_ops(self.built, variant) if mode in _build.REGISTRATION_MODES else None
        self._proc = None
        self._stderr = None
        self.calls = 0
        # The NMS-family size thresholds (cuda::NmsTuning: large_segment, mask_budget, soft_large) at
        # their defaults; tests lower them to send small inputs down the large-group paths.
        self.tuning = (1024, 256 << 20, 1024)

    def __repr__(self):
        v = f", variant={self.variant!r}" if self.variant else ""
        return f"Sim(mode={self.mode!r}, order={self.order!r}, seed={self.seed}, reduce={self.reduce!r}{v})"

    # -- calling an entry point ------------------------------------------------------------

    def call(self, name: str, bufs: list, ints: list, dbls: list = ()) -> list[int]:
        """Calls sim_op_<name>(buffers, ints, doubles, ret) and returns ret (4 ints).
        Buffers are contiguous CPU tensors (written in place) or None."""
        for b in bufs:
            if b is not None and not (b.is_contiguous() and b.device.type == "cpu"):
                raise ValueError(f"cuda_sim.{name}: buffers must be contiguous CPU tensors")
        seed = self.seed * 1000003 + self.calls  # a fresh, reproducible stream per call
        self.calls += 1
        if self._lib is not None:
            return self._call_in_process(name, bufs, ints, dbls, seed)
        return self._call_driver(name, bufs, ints, dbls, seed)

    def _call_in_process(self, name, bufs, ints, dbls, seed):
        lib = self._lib
        lib.sim_configure(ORDERS[self.order], seed, REDUCE_ORDERS[self.reduce], self.poison)
        fn = getattr(lib, "sim_op_" + name)
        ptrs = (ctypes.c_void_p * max(1, len(bufs)))(*[b.data_ptr() if b is not None else None for b in bufs])
        iv = (ctypes.c_int64 * max(1, len(ints)))(*[int(v) for v in ints])
        dv = (ctypes.c_double * max(1, len(dbls)))(*[float(v) for v in dbls])
        ret = (ctypes.c_int64 * 4)()
        if fn(ptrs, iv, dv, ret) != 0:
            raise SimError(f"cuda_sim.{name}: {lib.sim_last_error().decode()}")
        return list(ret)

    def _driver(self) -> subprocess.Popen:
        """The driver process of this Sim (started on first use, and again
        after one died)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        env.setdefault("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the driver)
        self._proc = subprocess.Popen(
            [self.built.driver, self.built.lib],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        return self._proc

    def _stderr_text(self, start=0) -> str:
        self._stderr.seek(start)
        return self._stderr.read().decode(errors="replace")

    def _read(self, proc, n, deadline) -> bytes:
        out = b""
        fd = proc.stdout.fileno()
        while len(out) < n:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                proc.kill()
                proc.wait()
                raise SanitizerError(
                    f"cuda_sim ({self.mode}): no answer within {self.timeout:.0f} s (deadlock?)\n"
                    f"{self._stderr_text()[-20000:]}"
                )
            chunk = os.read(fd, n - len(out))
            if not chunk:
                proc.wait()
                raise SanitizerError(
                    f"cuda_sim ({self.mode}): the driver died (exit status {proc.returncode})\n"
                    f"{self._stderr_text()[-20000:]}"
                )
            out += chunk
        return out

    def _call_driver(self, name, bufs, ints, dbls, seed):
        req = [
            b"SIMQ",
            struct.pack("<iQii", ORDERS[self.order], seed, REDUCE_ORDERS[self.reduce], self.poison),
            struct.pack("<I", len(name)),
            name.encode(),
            struct.pack("<I", len(bufs)),
        ]
        for b in bufs:
            if b is None:
                req.append(struct.pack("<q", -1))
            else:
                data = b.view(-1).view(torch.uint8).numpy().tobytes() if b.numel() else b""
                req += [struct.pack("<q", len(data)), data]
        req += [
            struct.pack("<I", len(ints)),
            struct.pack(f"<{len(ints)}q", *[int(v) for v in ints]),
            struct.pack("<I", len(dbls)),
            struct.pack(f"<{len(dbls)}d", *[float(v) for v in dbls]),
        ]
        body = b"".join(req)
        proc = self._driver()
        err_start = self._stderr.seek(0, os.SEEK_END)
        try:
            proc.stdin.write(struct.pack("<Q", len(body)) + body)
            proc.stdin.flush()
        except BrokenPipeError:
            proc.wait()
            raise SanitizerError(f"cuda_sim.{name} ({self.mode}): the driver died\n{self._stderr_text()}") from None
        deadline = time.monotonic() + self.timeout
        (size,) = struct.unpack("<Q", self._read(proc, 8, deadline))
        data = self._read(proc, size, deadline)
        if self._stderr.seek(0, os.SEEK_END) != err_start:  # a report that did not stop the process
            raise SanitizerError(f"cuda_sim.{name} ({self.mode}): the driver reported\n{self._stderr_text(err_start)}")
        pos = 0

        def take(n):
            nonlocal pos
            out = data[pos : pos + n]
            pos += n
            return out

        if take(4) != b"SIMR":
            raise SanitizerError(f"cuda_sim.{name}: bad driver response")
        (status,) = struct.unpack("<i", take(4))
        err = take(struct.unpack("<I", take(4))[0]).decode()
        ret = list(struct.unpack("<4q", take(32)))
        (count,) = struct.unpack("<I", take(4))
        for b in bufs[:count]:
            (size,) = struct.unpack("<q", take(8))
            if size >= 0:
                chunk = take(size)
                if b is not None and size:
                    b.view(-1).view(torch.uint8).copy_(torch.frombuffer(bytearray(chunk), dtype=torch.uint8))
        if status != 0:
            raise SimError(f"cuda_sim.{name}: {err}")
        return ret

    def close(self):
        """Ends the driver process; raises SanitizerError if it reports at exit
        (ASan's leak check runs then)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.stdin.close()
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode != 0:
            raise SanitizerError(
                f"cuda_sim ({self.mode}): the driver exited with {proc.returncode}\n{self._stderr_text()[-20000:]}"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def empty(self, shape, dtype) -> torch.Tensor:
        """Like new_empty in the CUDA registrations: uninitialised (poisoned) memory."""
        return _poisoned(shape, dtype, self.poison)

    # -- the ops (same arguments and results as torch.ops.sniper.*) -----------------------------

    def op(self, name: str, *args):
        """Runs op `name` (one of OPS) with the raw op's arguments: through the CUDA registration code
        in the fiber mode, else by calling its launcher."""
        if self._ops is None:
            return getattr(self, "_launch_" + name)(*args)
        lib = self._lib
        seed = self.seed * 1000003 + self.calls  # a fresh, reproducible stream per call
        self.calls += 1
        lib.sim_configure(ORDERS[self.order], seed, REDUCE_ORDERS[self.reduce], self.poison)
        saved = {v: os.environ.get(v) for v in TUNING_VARIABLES}
        os.environ.update({v: str(int(t)) for v, t in zip(TUNING_VARIABLES, self.tuning)})
        lib.sim_poison_allocations(1)
        try:
            return getattr(self._ops, name)(*args)
        except RuntimeError as e:
            raise SimError(f"cuda_sim.{name}: {e}") from e
        finally:
            lib.sim_poison_allocations(0)
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old

    def box_iou(self, *args):
        return self.op("box_iou", *args)

    def nms(self, *args):
        return self.op("nms", *args)

    def batched_nms(self, *args):
        return self.op("batched_nms", *args)

    def soft_nms(self, *args):
        return self.op("soft_nms", *args)

    def nms_fixed(self, *args):
        return self.op("nms_fixed", *args)

    def batched_nms_fixed(self, *args):
        return self.op("batched_nms_fixed", *args)

    def soft_nms_fixed(self, *args):
        return self.op("soft_nms_fixed", *args)

    def host_traffic(self, reset: bool = False) -> dict[str, int]:
        """The calls between host and device the simulated CUDA runtime has seen in this process
        (fiber mode): stream/device synchronisations and synchronous copies ("syncs"), device-to-host
        ("to_host") and host-to-device ("to_device") copies; `reset` zeroes the counters after reading."""
        if self._lib is None:
            raise SimError("cuda_sim: host_traffic needs the fiber mode")
        fn = self._lib.sim_host_traffic
        fn.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.c_int]
        out = (ctypes.c_longlong * 3)()
        fn(out, int(reset))
        return dict(zip(("syncs", "to_host", "to_device"), out))

    def greedy_chip_cover(self, *args):
        return self.op("greedy_chip_cover", *args)

    def focus_chips(self, *args):
        return self.op("focus_chips", *args)

    def label_anchors(self, *args):
        return self.op("label_anchors", *args)

    def deform_im2col(self, *args):
        return self.op("deform_im2col", *args)

    def deform_col2im(self, *args):
        return self.op("deform_col2im", *args)

    def roi_align(self, *args):
        return self.op("roi_align", *args)

    def roi_align_backward(self, *args):
        return self.op("roi_align_backward", *args)

    def deform_roi_pool(self, *args):
        return self.op("deform_roi_pool", *args)

    def deform_roi_pool_backward(self, *args):
        return self.op("deform_roi_pool_backward", *args)

    # -- the launchers, called directly (sanitizer modes): outputs allocated as the registrations do

    def _launch_box_iou(self, boxes1, boxes2):
        n, m = boxes1.shape[0], boxes2.shape[0]
        out = self.empty((n, m), boxes1.dtype)
        a, b = boxes1.contiguous(), boxes2.contiguous()
        self.call("box_iou", [a, b, out], [n, m, _dt(a)])
        return out

    def _launch_nms_family(self, boxes, scores, idxs, iou_threshold):
        n = boxes.shape[0]
        keep = self.empty((n,), torch.int64)
        if n == 0:
            return keep
        b, s = boxes.contiguous(), scores.contiguous()
        ids = None if idxs is None else idxs.to(torch.int64).contiguous()
        count = self.call("nms", [b, s, ids, keep], [n, _dt(b)] + list(self.tuning), [iou_threshold])[0]
        return keep[:count].clone()

    def _launch_nms(self, boxes, scores, iou_threshold):
        return self._launch_nms_family(boxes, scores, None, iou_threshold)

    def _launch_batched_nms(self, boxes, scores, idxs, iou_threshold):
        return self._launch_nms_family(boxes, scores, idxs, iou_threshold)

    def _launch_soft_nms(self, boxes, scores, idxs, method, sigma, iou_threshold, score_threshold):
        n = boxes.shape[0]
        keep, kept = self.empty((n,), torch.int64), self.empty((n,), boxes.dtype)
        if n == 0:
            return keep, kept
        b, s = boxes.contiguous(), scores.contiguous()
        ids = None if idxs is None else idxs.to(torch.int64).contiguous()
        count = self.call(
            "soft_nms",
            [b, s, ids, keep, kept],
            [n, method, _dt(b)] + list(self.tuning),
            [sigma, iou_threshold, score_threshold],
        )[0]
        return keep[:count].clone(), kept[:count].clone()

    def _fixed_outputs(self, groups, capacity, scores_dtype=None):
        """The outputs of a fixed-capacity op as FixedOutputs (nms_common.h) makes them: -1, 0, 0."""
        keep = torch.full((groups, capacity), -1, dtype=torch.int64)
        count = torch.zeros(groups, dtype=torch.int64)
        scores = None if scores_dtype is None else torch.zeros((groups, capacity), dtype=scores_dtype)
        return keep, scores, count

    def _launch_nms_fixed_family(self, boxes, scores, idxs, iou_threshold, groups, capacity):
        n = boxes.shape[0]
        keep, _, count = self._fixed_outputs(groups, capacity)
        if n > 0 and groups > 0 and capacity > 0:
            b, s = boxes.contiguous(), scores.contiguous()
            ids = None if idxs is None else idxs.to(torch.int64).contiguous()
            ints = [n, groups, capacity, _dt(b)] + list(self.tuning)
            self.call("nms_fixed", [b, s, ids, keep, count], ints, [iou_threshold])
        return keep, count

    def _launch_nms_fixed(self, boxes, scores, iou_threshold, capacity):
        keep, count = self._launch_nms_fixed_family(boxes, scores, None, iou_threshold, 1, capacity)
        return keep[0], count[0]

    def _launch_batched_nms_fixed(self, boxes, scores, idxs, iou_threshold, num_groups, capacity):
        return self._launch_nms_fixed_family(boxes, scores, idxs, iou_threshold, num_groups, capacity)

    def _launch_soft_nms_fixed(
        self, boxes, scores, idxs, method, sigma, iou_threshold, score_threshold, num_groups, capacity
    ):
        n = boxes.shape[0]
        keep, kept, count = self._fixed_outputs(num_groups, capacity, boxes.dtype)
        if n > 0 and num_groups > 0 and capacity > 0:
            b, s = boxes.contiguous(), scores.contiguous()
            ids = idxs.to(torch.int64).contiguous()
            self.call(
                "soft_nms_fixed",
                [b, s, ids, keep, kept, count],
                [n, num_groups, capacity, method, _dt(b)] + list(self.tuning),
                [sigma, iou_threshold, score_threshold],
            )
        return keep, kept, count

    def _launch_greedy_chip_cover(self, boxes, box_group, canvas_wh, chip_size, stride, seed=None):
        n = boxes.shape[0]
        b = boxes.contiguous()
        g = box_group.to(torch.int64).contiguous()
        canvas = canvas_wh.to(torch.float64).contiguous()
        chip_dtype = torch.float64 if b.dtype == torch.float64 else torch.float32
        chips, chip_group, box_chip = (
            self.empty((n, 4), chip_dtype),
            self.empty((n,), torch.int64),
            self.empty((n,), torch.int64),
        )
        if n == 0:
            return chips, chip_group, box_chip
        count = self.call(
            "greedy_chip_cover",
            [b, g, canvas, chips, chip_group, box_chip],
            [n, canvas.shape[0], chip_size, stride, -1 if seed is None else seed, _dt(b), DTYPES[chip_dtype]],
        )[0]
        return chips[:count].clone(), chip_group[:count].clone(), box_chip

    def _launch_focus_chips(self, prob, sizes, threshold, dilation, min_size):
        maps, height, width = prob.shape
        p, sz = prob.contiguous(), sizes.to(torch.int64).contiguous()
        hw = sz.tolist()
        rows = sum(((h + 1) // 2) * ((w + 1) // 2) for h, w in hw)  # focus_max_chips, as the entry point
        cells = sum(h * w for h, w in hw)
        out = self.empty((rows, 5), torch.int64)
        if rows == 0:
            return out
        count = self.call(
            "focus_chips",
            [p, sz, out],
            [maps, height, width, dilation, min_size, cells, rows, _dt(p)],
            [threshold],
        )[0]
        return out[:count].clone()

    def _launch_label_anchors(
        self, anchors, gt_boxes, gt_state, canvas_wh, pos_iou=0.7, neg_iou=0.3, invalid_iou=0.3, allowed_border=0.0
    ):
        chips, g, a = gt_boxes.shape[0], gt_boxes.shape[1], anchors.shape[0]
        labels, matched = self.empty((chips, a), torch.int8), self.empty((chips, a), torch.int64)
        if chips == 0 or a == 0:
            return labels, matched
        bufs = [
            anchors.contiguous(),
            gt_boxes.contiguous(),
            gt_state.contiguous(),
            canvas_wh.to(torch.float64).contiguous(),
            labels,
            matched,
        ]
        self.call("label_anchors", bufs, [chips, a, g, _dt(anchors)], [pos_iou, neg_iou, invalid_iou, allowed_border])
        return labels, matched

    @staticmethod
    def _geometry(inp, kh, kw, sh, sw, ph, pw, dh, dw, og):
        c, h, w = inp.shape[1:]
        out_h = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
        out_w = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
        return [c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, og, out_h, out_w]

    def _launch_deform_im2col(self, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og):
        g = self._geometry(input, kh, kw, sh, sw, ph, pw, dh, dw, og)
        n = input.shape[0]
        cols = self.empty((n, g[0] * kh * kw, g[12] * g[13]), input.dtype)
        bufs = [input.contiguous(), offset.contiguous(), None if mask is None else mask.contiguous(), cols]
        self.call("deform_im2col", bufs, g + [n, _dt(input)])
        return cols

    def _launch_deform_col2im(
        self, grad_columns, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og, deterministic
    ):
        g = self._geometry(input, kh, kw, sh, sw, ph, pw, dh, dw, og)
        n, dt = input.shape[0], input.dtype
        grad_input = self.empty(tuple(input.shape), dt)
        grad_offset = self.empty((n, 2 * og * kh * kw, g[12], g[13]), dt)
        grad_mask = self.empty((n, og * kh * kw, g[12], g[13]) if mask is not None else (0,), dt)
        bufs = [
            grad_columns.to(dt).contiguous(),
            input.contiguous(),
            offset.contiguous(),
            None if mask is None else mask.contiguous(),
            grad_input,
            grad_offset,
            grad_mask if mask is not None else None,
        ]
        self.call("deform_col2im", bufs, g + [n, int(bool(deterministic)), _dt(input)])
        return grad_input, grad_offset, grad_mask

    def _roi_forward(self, input, rois, offset, scale, ph, pw, sampling, aligned, gamma):
        n, c, h, w = input.shape
        k = rois.shape[0]
        out = self.empty((k, c, ph, pw), input.dtype)
        bufs = [input.contiguous(), rois.contiguous(), None if offset is None else offset.contiguous(), out]
        self.call("roi_pool_forward", bufs, [n, c, h, w, k, ph, pw, sampling, int(aligned), _dt(input)], [scale, gamma])
        return out

    def _roi_backward(self, grad, rois, input, offset, n, c, h, w, scale, ph, pw, sampling, aligned, gamma):
        k = rois.shape[0]
        grad_input = torch.zeros((n, c, h, w), dtype=grad.dtype)  # new_zeros in roi_pool_cuda.cpp
        grad_offset = (
            torch.zeros((k, 2, ph, pw), dtype=grad.dtype) if offset is not None else self.empty((0,), grad.dtype)
        )
        bufs = [
            grad.contiguous(),
            None if input is None else input.contiguous(),
            rois.contiguous(),
            None if offset is None else offset.contiguous(),
            grad_input,
            grad_offset if offset is not None else None,
        ]
        self.call("roi_pool_backward", bufs, [n, c, h, w, k, ph, pw, sampling, int(aligned), _dt(grad)], [scale, gamma])
        return grad_input, grad_offset

    def _launch_roi_align(self, input, rois, scale, ph, pw, sampling, aligned):
        return self._roi_forward(input, rois, None, scale, ph, pw, sampling, aligned, 0.0)

    def _launch_roi_align_backward(self, grad, rois, scale, ph, pw, n, c, h, w, sampling, aligned):
        return self._roi_backward(grad, rois, None, None, n, c, h, w, scale, ph, pw, sampling, aligned, 0.0)[0]

    def _launch_deform_roi_pool(self, input, rois, offset, scale, ph, pw, sampling, gamma):
        return self._roi_forward(input, rois, offset, scale, ph, pw, sampling, True, gamma)

    def _launch_deform_roi_pool_backward(self, grad, input, rois, offset, scale, ph, pw, sampling, gamma):
        n, c, h, w = input.shape
        return self._roi_backward(grad, rois, input, offset, n, c, h, w, scale, ph, pw, sampling, True, gamma)
