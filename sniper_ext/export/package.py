"""Exporting the detector (``torch.export``), compiling it ahead of time (AOTInductor's ``.pt2``
package) and running either on images: the Python side of ``sniper export`` and of the C++ runner
(``examples/cpp/sniper_detect.cpp``).

    ep = export_detector(model, icfg)                     # torch.export.ExportedProgram
    path = compile_package(ep, "model.pt2", metadata)     # AOTInductor, written atomically
    program = load_package("model.pt2")                   # callable, + its metadata
    dets = run_program(program, records, image_root, icfg, pixel_mean)   # as MultiScaleInference.detect

Inputs and outputs: :class:`~sniper_ext.export.graph.ExportableDetector`. The batch size and every
resolution's padded height and width are dynamic (multiples of ``size_divisibility``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..chips.records import ImageTable
from ..chips.validity import resolution_scale
from ..config import InferenceConfig
from ..data.chip_dataset import pad_colour
from ..errors import ConfigError
from ..inference import resolution_loaders
from .graph import ExportableDetector, input_names, output_names

__all__ = [
    "FORMAT_VERSION",
    "compile_package",
    "config_from_metadata",
    "detect_image_file",
    "dynamic_shapes",
    "example_inputs",
    "export_detector",
    "format_detections",
    "host_sync_nodes",
    "load_package",
    "package_metadata",
    "prepare_image",
    "program_batches",
    "read_image_file",
    "resize_image",
    "run_program",
    "unpack",
]

#: the layout of a package's inputs, outputs and metadata (``sniper.format``)
FORMAT_VERSION = "1"

#: the largest padded side the exported program accepts (in multiples of size_divisibility)
MAX_SIDE = 4096

#: ops that copy a device value to the host (they break CUDA graphs and stall the stream)
HOST_SYNC_OPS = ("_local_scalar_dense", "item", "nonzero", "masked_select", "unique", "tolist", "is_nonzero")


def example_inputs(config: InferenceConfig, batch: int = 2, pad_rgb=(124, 116, 104)) -> tuple:
    """Plausible inputs of the program: a random 640 x 480 image prepared as :func:`prepare_image`
    does, ``batch`` times."""
    image = torch.randint(0, 256, (3, 480, 640), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    one = prepare_image(image, config, pad_rgb)
    return tuple(t.expand(batch, *t.shape[1:]).contiguous() for t in one)


def dynamic_shapes(config: InferenceConfig) -> tuple:
    """The dynamic dimensions: the batch (shared by every input) and each resolution's padded
    height and width (multiples of ``size_divisibility``)."""
    d = int(config.size_divisibility)
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes: list = [{0: batch}]
    for r in range(len(config.resolutions)):
        hs = torch.export.Dim(f"h{r}", min=1, max=MAX_SIDE // d)
        ws = torch.export.Dim(f"w{r}", min=1, max=MAX_SIDE // d)
        shapes += [{0: batch, 2: d * hs, 3: d * ws}, {0: batch}, {0: batch}]
    return (shapes[0], tuple(shapes[1:]))  # forward(orig_wh, *per_scale)


def export_detector(model, config: InferenceConfig, *, example=None) -> torch.export.ExportedProgram:
    """``torch.export.export(strict=False)`` of :class:`ExportableDetector` (model in eval mode,
    on the example's device) with a dynamic batch and image sizes."""
    model.eval()
    module = ExportableDetector(model, config).eval()
    if example is None:
        device = next(model.parameters()).device
        example = tuple(t.to(device) for t in example_inputs(config))
    with torch.no_grad():
        return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(config), strict=False)


def host_sync_nodes(ep: torch.export.ExportedProgram) -> list:
    """The graph's nodes that read device data on the host (``aten._local_scalar_dense``, ``item``,
    data-dependent shapes such as ``nonzero``); an exported detector has none."""
    bad = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if any(f".{op}." in name or name.endswith(f".{op}") or name == op for op in HOST_SYNC_OPS):
            bad.append(name)
        for v in (
            node.meta.get("val", ()) if isinstance(node.meta.get("val"), (tuple, list)) else [node.meta.get("val")]
        ):
            if isinstance(v, torch.Tensor) and any(
                isinstance(s, torch.SymInt) and not s.node.has_hint() for s in v.shape
            ):
                bad.append(f"{name} (data-dependent shape)")
    return bad


def package_metadata(config: InferenceConfig, categories, pixel_mean, *, device: str) -> dict:
    """The strings stored in the package (``get_metadata()``, also from C++): the format, the
    inputs, the resolutions, the padding, the classes and the whole inference config (JSON)."""
    pad = pad_colour(pixel_mean)
    names = [str(c.get("name", c["id"])).replace("\n", " ") for c in categories]
    return {
        "sniper.format": FORMAT_VERSION,
        "sniper.device": device,
        "sniper.inputs": ",".join(input_names(len(config.resolutions))),
        "sniper.outputs": ",".join(output_names()),
        "sniper.resolutions": ";".join(f"{int(lo)}x{int(hi)}" for lo, hi in config.resolutions),
        "sniper.size_divisibility": str(int(config.size_divisibility)),
        "sniper.pad_rgb": ",".join(str(int(v)) for v in pad),
        "sniper.detections_per_image": str(int(config.detections_per_image)),
        "sniper.category_ids": ",".join(str(int(c["id"])) for c in categories),
        "sniper.category_names": "\n".join(names),
        "sniper.inference_config": json.dumps(dataclasses.asdict(config)),
    }


def compile_package(ep: torch.export.ExportedProgram, path: str, metadata: dict | None = None) -> str:
    """AOTInductor-compiles ``ep`` into the ``.pt2`` package ``path``, atomically (a temporary
    file in the same folder, renamed over ``path`` when complete). Returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".pt2", prefix=".sniper_export_", dir=folder)
    os.close(fd)
    try:
        configs = {"aot_inductor.metadata": {str(k): str(v) for k, v in (metadata or {}).items()}}
        with warnings.catch_warnings():  # torch's own deprecation notices while packaging
            warnings.simplefilter("ignore", FutureWarning)
            torch._inductor.aoti_compile_and_package(ep, package_path=tmp, inductor_configs=configs)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would create it, not mkstemp's 0o600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_package(path: str):
    """The compiled program of a ``.pt2`` package (``torch._inductor.aoti_load_package``): call it
    with the inputs of :class:`ExportableDetector`; ``get_metadata()`` gives its metadata."""
    with warnings.catch_warnings():  # torch's own deprecation notices while unpacking
        warnings.simplefilter("ignore", FutureWarning)
        return torch._inductor.aoti_load_package(path)


def config_from_metadata(metadata: dict) -> InferenceConfig:
    """The inference config stored in a package's metadata."""
    if metadata.get("sniper.format") != FORMAT_VERSION:
        raise ConfigError(
            f"package format {metadata.get('sniper.format')!r}: this sniper_ext reads format {FORMAT_VERSION}"
        )
    raw = json.loads(metadata["sniper.inference_config"])
    fields = {f.name for f in dataclasses.fields(InferenceConfig)}
    raw = {
        k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
        for k, v in raw.items()
        if k in fields
    }
    return InferenceConfig(**raw)


# -- running a program --------------------------------------------------------------------------


def program_batches(records, image_root, config: InferenceConfig, pixel_mean, *, batch_size: int | None = None):
    """Yields ``(record indices, inputs)``: the images of ``records`` in
    :class:`~sniper_ext.inference.MultiScaleInference`'s batches (ordered by aspect ratio,
    ``batch_size`` or ``config.batch_size`` per batch), each batch at every resolution, as the
    program's inputs."""
    records = ImageTable.from_records(records)
    order, loaders = resolution_loaders(records, image_root, config, pixel_mean, batch_size=batch_size)
    sizes_of = np.asarray(records.sizes)
    for batches in zip(*loaders, strict=True):
        index = batches[0][3]
        idx = [order[int(i)] for i in index]
        inputs: list = [torch.as_tensor(sizes_of[idx], dtype=torch.float32).reshape(-1, 2)]
        for images, wh, scales, _ in batches:
            inputs += [images, wh.to(torch.float32), scales.to(torch.float32)]
        yield idx, tuple(inputs)


def unpack(outputs) -> list:
    """The program's fixed-size outputs as one ``(boxes [N, 4], scores [N], labels [N])`` NumPy
    triple per image (float32, float32, int64), the first ``count`` rows."""
    boxes, scores, labels, count = (t.detach().cpu() for t in outputs)
    out = []
    for b in range(boxes.shape[0]):
        n = int(count[b])
        out.append(
            (boxes[b, :n].numpy().astype(np.float32), scores[b, :n].numpy().astype(np.float32), labels[b, :n].numpy())
        )
    return out


@torch.no_grad()
def run_program(program, records, image_root, config: InferenceConfig, pixel_mean, *, batch_size=None, device="cpu"):
    """``program`` (an exported module, an AOTInductor package, or :class:`ExportableDetector`)
    over ``records``: one ``(boxes, scores, labels)`` per record as
    :meth:`MultiScaleInference.detect <sniper_ext.inference.MultiScaleInference.detect>` returns."""
    records = ImageTable.from_records(records)
    out: list = [None] * len(records)
    for idx, inputs in program_batches(records, image_root, config, pixel_mean, batch_size=batch_size):
        results = unpack(program(*(t.to(device) for t in inputs)))
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out


# -- one image, as the C++ runner prepares it ---------------------------------------------------


def resize_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, height, width]``: antialiased bilinear (torch's, so the
    C++ runner, which calls the same kernel, gets the same pixels), rounded."""
    if (image.shape[2], image.shape[1]) == (width, height):
        return image.clone()
    x = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def prepare_image(image: torch.Tensor, config: InferenceConfig, pad_rgb) -> tuple:
    """One uint8 ``[3, H, W]`` RGB image as the program's inputs (a batch of one): resized to each
    resolution (scale of :func:`~sniper_ext.chips.resolution_scale`, size rounded half to even),
    padded with ``pad_rgb`` to a multiple of ``size_divisibility``."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError("prepare_image: `image` must be a uint8 tensor [3, H, W] (RGB)")
    _, h0, w0 = image.shape
    d = int(config.size_divisibility)
    inputs: list = [torch.tensor([[float(w0), float(h0)]])]
    pad = torch.tensor([int(v) for v in pad_rgb], dtype=torch.uint8).view(3, 1, 1)
    for res in config.resolutions:
        s = resolution_scale(w0, h0, tuple(res))
        w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
        hp, wp = math.ceil(h / d) * d, math.ceil(w / d) * d
        batch = pad.expand(3, hp, wp).clone()
        batch[:, :h, :w] = resize_image(image, w, h)
        inputs += [batch[None], torch.tensor([[float(w), float(h)]]), torch.tensor([s], dtype=torch.float32)]
    return tuple(inputs)


def read_image_file(path: str) -> torch.Tensor:
    """An image file (PPM, PNG, JPEG, ...) as uint8 ``[3, H, W]`` RGB."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def format_detections(outputs, metadata: dict, image_name: str, width: int, height: int, threshold: float = 0.0) -> str:
    """The first image's detections of a program's outputs as ``examples/cpp/sniper_detect`` prints
    them: a header line, then ``category_id, name, score, x1, y1, x2, y2`` per detection
    (tab-separated, ``%.9g``)."""
    boxes, scores, labels, count = (t.detach().cpu() for t in outputs)
    ids = metadata["sniper.category_ids"].split(",")
    names = metadata["sniper.category_names"].split("\n")
    n = int(count[0])
    shown = sum(1 for i in range(n) if float(scores[0, i]) >= threshold)
    lines = [f"# {image_name}: {width}x{height}, {n} detections ({shown} scoring >= {threshold:g})"]
    for i in range(n):
        s = float(scores[0, i])
        if not s >= threshold:
            continue
        k = int(labels[0, i]) - 1
        cid = ids[k] if 0 <= k < len(ids) else str(k + 1)
        name = names[k] if 0 <= k < len(names) else cid
        box = "\t".join(f"{float(v):.9g}" for v in boxes[0, i])
        lines.append(f"{cid}\t{name}\t{s:.9g}\t{box}")
    return "\n".join(lines) + "\n"


def detect_image_file(package_path: str, image_path: str, threshold: float = 0.0) -> str:
    """What ``examples/cpp/sniper_detect PACKAGE IMAGE`` prints, computed in Python: the image read,
    prepared (:func:`prepare_image`), run through the package and formatted."""
    program = load_package(package_path)
    meta = program.get_metadata()
    config = config_from_metadata(meta)
    pad = [int(v) for v in meta["sniper.pad_rgb"].split(",")]
    image = read_image_file(image_path)
    with torch.no_grad():
        out = program(*prepare_image(image, config, pad))
    return format_detections(out, meta, image_path, image.shape[2], image.shape[1], threshold)
