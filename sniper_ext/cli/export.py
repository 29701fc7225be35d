"""``sniper export``: a checkpoint of ``sniper train`` as an AOTInductor package (``.pt2``) that
runs without Python (``examples/cpp/sniper_detect.cpp``) or from Python
(:func:`sniper_ext.export.load_package`), plus ``<out stem>.json`` beside it (the categories, the
inference config, the inputs and outputs).

    sniper export --checkpoint runs/tiny/last.pt --out model.pt2
    sniper export --checkpoint runs/tiny --out model_320.pt2 --resolution 320 512

The library side: :mod:`sniper_ext.export`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import torch

from .._atomic import atomic_write
from ..export import (
    ExportableDetector,
    compile_package,
    example_inputs,
    export_detector,
    host_sync_nodes,
    input_names,
    load_package,
    output_names,
    package_metadata,
)
from ..inference import inference_config
from ..runtime import init_distributed, load_detector, resolve_checkpoint
from .common import (
    EXIT_OK,
    CommandError,
    UsageError,
    add_command,
    add_overrides_option,
    check_output_file,
    option,
    positive_int,
    usage,
)

__all__ = ["add_parser", "run", "sidecar_path"]

_DESCRIPTION_EXPORT = """Exports a checkpoint of `sniper train` for deployment: the whole detector at its
inference resolutions (backbone, RPN, proposals, R-CNN head, valid-range filtering and the
per-class Soft-NMS merge) goes through torch.export as one program with a dynamic batch size
and image sizes, with fixed-capacity outputs (boxes [B, D, 4], scores [B, D], labels [B, D],
count [B]; D = detections_per_image) and no host synchronisation, then AOTInductor compiles
it into a .pt2 package. --resolution MIN MAX exports single-scale inference at that
resolution instead of the checkpoint's resolutions. Writes OUT (atomically) and
<OUT stem>.json: the categories, the inference config, the inputs and outputs. The package
is loaded once and checked against the eager model on an example batch before it is kept.
Run it from C++ with examples/cpp/sniper_detect (docs/export.md)."""

_EXAMPLES_EXPORT = """examples:
  sniper export --checkpoint runs/tiny/last.pt --out model.pt2
  sniper export --checkpoint runs/tiny --out model_320.pt2 --resolution 320 512
  sniper export --checkpoint runs/tiny --out model.pt2 --set inference.detections_per_image=50"""


def add_parser(subparsers):
    p = add_command(
        subparsers,
        "export",
        help="a checkpoint as an AOTInductor package (.pt2) for Python-free deployment",
        description=_DESCRIPTION_EXPORT,
        examples=_EXAMPLES_EXPORT,
    )
    p.add_argument(
        "--checkpoint",
        metavar="C",
        required=True,
        help="checkpoint of sniper train, or its run folder (required, no default)",
    )
    p.add_argument(
        "--out", metavar="MODEL.pt2", required=True, help="the package to write, ending in .pt2 (required, no default)"
    )
    p.add_argument(
        "--resolution",
        metavar=("MIN", "MAX"),
        type=positive_int,
        nargs=2,
        help="single-scale at this (min side, max side), every box size valid (default: the checkpoint's "
        "resolutions with their valid ranges)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="the device the package runs on (cuda needs a GPU here)",
    )
    add_overrides_option(p, "override an inference setting of the checkpoint, e.g. inference.detections_per_image=50")
    return p


def sidecar_path(out: str) -> str:
    """``model.pt2`` -> ``model.json``."""
    return os.path.splitext(out)[0] + ".json"


def _verify(package, model, icfg, device) -> float:
    """The package against the eager module on an example batch: the largest box difference
    (CommandError when the counts, labels differ)."""
    example = tuple(t.to(device) for t in example_inputs(icfg, batch=2))
    with torch.no_grad():
        want = ExportableDetector(model, icfg).eval()(*example)
        got = package(*example)
    for name, a, b in zip(output_names(), want, got, strict=True):
        if name in ("labels", "count") and not torch.equal(a.cpu(), b.cpu()):
            raise CommandError(f"the compiled package's {name} differ from the eager model's on an example batch")
    return float((want[0] - got[0]).abs().max()) if want[0].numel() else 0.0


def run(args) -> int:
    out = args.out
    if not out.endswith(".pt2"):
        raise UsageError(f"argument --out: {out!r} must end in .pt2 (an AOTInductor package)")
    check_output_file("--out", out, example="model.pt2")
    check_output_file("--out", sidecar_path(out), example="model.pt2")
    if args.resolution is not None and args.resolution[0] > args.resolution[1]:
        raise UsageError(f"argument --resolution: MIN {args.resolution[0]} is above MAX {args.resolution[1]}")
    with option("--checkpoint"):
        checkpoint = resolve_checkpoint(args.checkpoint)
    with option("--device", args.device):
        dist = init_distributed(args.device)
    device = dist.device
    model, cfg, categories = load_detector(checkpoint, device)
    if not categories:
        categories = [{"id": c, "name": f"class {c}"} for c in range(1, int(model.num_classes) + 1)]
    with usage():
        icfg = inference_config(cfg.inference, overrides=args.overrides)
    if args.resolution is not None:
        icfg = dataclasses.replace(icfg, resolutions=(tuple(args.resolution),), valid_ranges=((0.0, math.inf),))
    scales = ", ".join(f"{lo}x{hi}" for lo, hi in icfg.resolutions)
    print(
        f"exporting {checkpoint}: {len(icfg.resolutions)} resolution(s) ({scales}), {len(categories)} classes, "
        f"on {device}",
        flush=True,
    )
    t0 = time.perf_counter()
    ep = export_detector(model, icfg)
    sync = host_sync_nodes(ep)
    if sync:
        raise CommandError(f"the exported graph synchronises with the host: {', '.join(sorted(set(sync)))}")
    t1 = time.perf_counter()
    print(f"torch.export: {t1 - t0:.1f} s, {len(ep.graph.nodes)} nodes, no host synchronisation", flush=True)
    metadata = package_metadata(icfg, categories, cfg.data.pixel_mean, device=str(device.type))
    print("compiling with AOTInductor (a minute or two on a CPU) ...", flush=True)
    compile_package(ep, out, metadata)
    t2 = time.perf_counter()
    package = load_package(out)
    diff = _verify(package, model, icfg, device)
    print(
        f"AOTInductor: {t2 - t1:.1f} s; the package equals the eager model on an example batch "
        f"(largest box difference {diff:.2g} px)",
        flush=True,
    )
    sidecar = {
        "package": os.path.basename(out),
        "checkpoint": os.path.abspath(checkpoint),
        "device": str(device.type),
        "inputs": input_names(len(icfg.resolutions)),
        "outputs": output_names(),
        "categories": [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories],
        "inference": json.loads(metadata["sniper.inference_config"]),
        "pad_rgb": [int(v) for v in metadata["sniper.pad_rgb"].split(",")],
        "torch": torch.__version__,
    }
    atomic_write(sidecar_path(out), lambda f: f.write(json.dumps(sidecar, indent=1).encode()))
    size = os.path.getsize(out) / 2**20
    print(f"wrote {out} ({size:.1f} MiB) and {sidecar_path(out)} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK
