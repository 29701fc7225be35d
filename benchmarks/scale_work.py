"""The work of the scale benchmark's data stages, as functions a :class:`test_bench_scale.ChildRun`
calls in a fresh interpreter (so that CPU seconds and peak memory are the work's alone). Each
returns JSON-able numbers; the `baseline` functions are the paths these replaced, rebuilt from
the library's pieces where the old code is gone: the whole file parsed (polygons included),
records as Python objects, every image header read at every start, the per-image planning loop
(python_tests/reference_planner.py), proposals as JSON."""

from __future__ import annotations

import json
import os
import resource
import time

import numpy as np

from sniper_ext.chips import ImageTable, plan_dataset
from sniper_ext.config import preset
from sniper_ext.data import check_images, load_coco, load_proposals, open_coco, read_annotations_json, read_proposals
from sniper_ext.engine.pipeline import open_run
from sniper_ext.runtime import DistInfo


def _boxes(table) -> int:
    return int(ImageTable.from_records(table).box_offsets[-1])


def open_baseline(annotations: str, image_root: str) -> dict:
    """Before: the whole file parsed (polygons too), checked into records, every image's header
    read; at every start of every rank."""
    with open(annotations, "rb") as f:
        data = json.loads(f.read())
    records = load_coco(data, name=annotations)
    del data
    records = check_images(records, image_root)
    return {"images": len(records), "boxes": _boxes(records)}


def open_indexed(annotations: str, image_root: str, cache_dir: str) -> dict:
    """open_coco through the dataset index (built on the first call for a cache folder)."""
    ds = open_coco(annotations, image_root, cache_dir=cache_dir)
    return {"images": len(ds.records), "boxes": _boxes(ds.records)}


def train_startup(annotations: str, image_root: str, out_dir: str, cache_dir: str, workers: int = 0) -> dict:
    """``sniper train``'s start-up on one rank up to the first iteration (the R101 preset's
    chips): dataset, configuration, positive chips; the first call builds the index and plans,
    later ones reuse both."""
    cfg = preset("sniper_r101_coco")
    cfg.data.annotations, cfg.data.image_root, cfg.data.cache_dir = annotations, image_root, cache_dir
    cfg.data.workers = workers
    ctx = open_run(
        cfg, out_dir, resume=False, progress=False, dist=DistInfo(), echo=lambda *a, **k: None, max_iter=None
    )
    ctx.log.close()
    return {"images": len(ctx.dataset.records), "chips": len(ctx.db)}


def read_proposal_file(path: str) -> dict:
    """Proposals read from a file of either format (JSON or the binary .npz), unchecked against
    images (the file's own rules only)."""
    props = read_proposals(path) if path.endswith(".npz") else load_proposals(path)
    n = props.num_proposals if hasattr(props, "num_proposals") else sum(len(v) for v in props.values())
    return {"proposals": int(n)}


def plan_positives(annotations: str, impl: str, workers: int = 0, limit: int = 0) -> dict:
    """Positive chips of the dataset (the R101 preset's chip settings): ``impl`` "sniper" (the
    vectorised planner, ``workers`` processes) or "loop" (the per-image loop it replaced). Only
    the planning is timed (the annotations are loaded first)."""
    table = load_coco(read_annotations_json(annotations), name=annotations)
    if limit:
        table = table[:limit]
    cfg = preset("sniper_r101_coco").chips
    c0, w0 = time.process_time(), time.perf_counter()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if impl == "loop":
        import reference_planner  # python_tests/, on the child's path

        db = reference_planner.plan_dataset(list(table), None, cfg, seed=0, progress=False)
    else:
        db = plan_dataset(table, None, cfg, seed=0, workers=workers, progress=False)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + (kids.ru_utime + kids.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    return {
        "images": len(table),
        "chips": len(db),
        "plan_cpu_s": cpu,
        "plan_wall_s": time.perf_counter() - w0,
        "digest": int(np.asarray(db.chip_canvas).sum() * 1000) + int(db.gt_valid.sum()),
    }


class _IndexOnly:
    """What an image loader's worker does with the records before decoding: reads each one."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        return (r.width, r.height, len(r.file_name))


def _uss_mib(pid: int) -> float:
    """The unique set size (private pages) of a process, in MiB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def loader_growth(annotations: str, kind: str, workers: int = 2) -> dict:
    """USS of DataLoader workers indexing every record of the dataset, before and after each of
    two passes: ``kind`` "table" (an ImageTable, rows built from arrays) or "records" (a list
    of ImageRecord objects, each touched by its reader)."""
    import torch

    table = load_coco(read_annotations_json(annotations), name=annotations)
    records = table if kind == "table" else list(table)
    loader = torch.utils.data.DataLoader(
        _IndexOnly(records), batch_size=512, num_workers=workers, persistent_workers=True, collate_fn=lambda b: len(b)
    )
    uss = []
    it = iter(loader)
    next(it)  # workers started
    pids = [w.pid for w in it._workers]  # type: ignore[attr-defined]
    uss.append([_uss_mib(p) for p in pids])
    for _ in it:
        pass
    uss.append([_uss_mib(p) for p in pids])
    for _ in loader:
        pass
    uss.append([_uss_mib(p) for p in pids])
    start, first, second = (float(np.mean(u)) for u in uss)
    return {"uss_start_mib": start, "growth_first_pass_mib": first - start, "growth_second_pass_mib": second - first}


def write_proposal_files(out_dir: str, annotations: str, images: int, per_image: int = 300, seed: int = 0) -> dict:
    """Synthetic RPN-like proposals (``per_image`` per image, inside the image) for the first
    ``images`` images, written as JSON ({image_id: [[x1, y1, x2, y2], ...]}) and as the binary
    format; returns the two paths and the count."""
    from sniper_ext.data import write_proposals_npz

    table = load_coco(read_annotations_json(annotations), name=annotations)[:images]
    rng = np.random.default_rng(seed)
    props = {}
    for iid, (w, h) in zip(table.image_ids.tolist(), table.sizes.tolist()):
        xy = rng.uniform(0, 1, (per_image, 2)) * [w - 2, h - 2]
        wh = rng.uniform(1, 1, (per_image, 2)) + rng.uniform(0, 0.5, (per_image, 2)) * [w, h]
        b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)
        props[iid] = np.round(b, 2)
    os.makedirs(out_dir, exist_ok=True)
    js = os.path.join(out_dir, "proposals.json")
    with open(js, "w") as f:
        json.dump({str(k): v.tolist() for k, v in props.items()}, f)
    npz = write_proposals_npz(os.path.join(out_dir, "proposals.npz"), props)
    return {"json": js, "npz": npz, "proposals": len(table) * per_image}
