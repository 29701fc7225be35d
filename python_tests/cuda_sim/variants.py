"""Deliberately broken copies of the project's kernels and CUDA registrations.
The build script applies each variant's patches to a copy of csrc/ops/cuda (the
sources stay untouched) and links a library of its own; the harness's tests
check that every variant is caught. A pattern that no longer matches fails the build
with a message naming the variant: update it to the current kernel."""

from __future__ import annotations

try:
    from .build import Patch
except ImportError:  # imported as a top-level module
    from build import Patch  # type: ignore[no-redef]

VARIANTS: dict[str, tuple[Patch, ...]] = {
    # soft_nms_segments_kernel: thread 0 publishes the block's choice in shared
    # memory; without the barrier after it the other threads may read the
    # previous step's choice. Forward order hides it (thread 0 runs first).
    "soft_nms_missing_barrier": (
        Patch("soft_nms_kernel.cu", r"(if \(threadIdx\.x == 0\) chosen = best_local;\n)\s*__syncthreads\(\);\n", r"\1"),
    ),
    # nms_walk_kernel: likewise for the word of kept bits thread 0 computes.
    "nms_walk_missing_barrier": (
        Patch("nms_kernel.cu", r"(kept_bits = bits;\n\s*\}\n)\s*__syncthreads\(\);\n", r"\1"),
    ),
    # cover_kernel's block reduction without the tie-breaks (equal counts go to
    # whichever operand comes first): the result depends on the reduction order.
    "chip_cover_broken_tiebreak": (
        Patch(
            "greedy_chip_cover_kernel.cu",
            r"if \(a\.key != b\.key\) return a\.key < b\.key \? a : b;\n\s*return a\.cand < b\.cand \? a : b;",
            "return a;",
        ),
    ),
    # cover_kernel's candidate counts with a plain += instead of atomicAdd: no
    # order of fibers shows it (a fiber runs uninterrupted between barriers);
    # ThreadSanitizer on the threaded build does.
    "chip_cover_plain_add": (
        Patch("greedy_chip_cover_kernel.cu", r"atomicAdd\(&cnt\[iy \* nx \+ ix\], 1\)", "cnt[iy * nx + ix] += 1"),
    ),
    # A bug in registration code (label_anchors_cuda.cpp passes the positive and negative IoU
    # thresholds to the launcher swapped): the harness runs the registrations, so it shows.
    "label_anchors_registration_swaps_thresholds": (
        Patch("label_anchors_cuda.cpp", r"t\.pos_iou,\s*t\.neg_iou", "t.neg_iou, t.pos_iou"),
    ),
    # RoIAlign's input gradient with a plain += instead of atomicAdd.
    "roi_pool_plain_add": (
        Patch(
            "roi_align_kernel.cu",
            r"atomicAdd\(plane \+ t\.idx\[q\], gv \* t\.w\[q\]\)",
            "plane[t.idx[q]] += gv * t.w[q]",
        ),
    ),
}
