"""The scale benchmark (issue 19): COCO-size data from ``coco_scale.py``, one test per stage.

Data: session fixtures generate, once per run into a temporary folder, a COCO-train2017-like
annotation file (``scale_train``), its JPEG files (``scale_train_images``) and a COCO-val-like
set with 100 detections per image (``scale_val``): full size by default (118,287 / 5,000 images,
860,001 boxes, 500,000 detections), ``coco_scale.QUICK_SCALE`` (10,000 / 423 images) with
``SNIPER_BENCH_QUICK=1``.

Measurement: a stage that reports CPU seconds and peak memory runs its work in a child process
(:class:`ChildRun`) that imports everything first, reports its RSS (``ready_rss_mib``: the
interpreter, torch, numpy and sniper_ext), then on a signal runs the work alone: the benchmark's
time is the work's wall time (no start-up), ``cpu_s`` its CPU time (``time.process_time``, all
threads of the child), ``peak_rss_mib`` the peak RSS of the child's own memory (``VmHWM`` of
/proc/self/status; not ``ru_maxrss``, which after fork and exec also counts the parent's RSS),
which includes the ``ready_rss_mib`` base: peak - ready is what the work added. One child per
measurement, so no peak hides another. The end of ``pytest benchmarks`` lists them beside the
speedups.

Stages:

* generation: the generated data has COCO's statistics, parses, and the JPEGs have the declared
  sizes; the same seed gives the same bytes;
* evaluation: ``evaluate_coco`` at COCO-val size with the faster-coco-eval backend beside
  pycocotools (the reference), and their numbers compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import coco_scale
import numpy as np
import pytest
from bench_utils import QUICK

from sniper_ext.evaluation import METRIC_KEYS, format_table, resolve_backend

SCALE = coco_scale.QUICK_SCALE if QUICK else 1.0
COUNTS = coco_scale.counts_for(SCALE)

try:
    HAS_FASTER = resolve_backend("faster") == "faster"
except ImportError:
    HAS_FASTER = False
needs_faster = pytest.mark.skipif(not HAS_FASTER, reason="faster-coco-eval is not installed")


# ---------------------------------------------------------------------------------------------
# Work in a child process: CPU seconds and peak RSS of that work alone

_CHILD = r"""
import importlib, json, sys, time
target, call = sys.argv[1], json.loads(sys.argv[2])
module, name = target.split(":")
fn = getattr(importlib.import_module(module), name)
def status_mib(key):  # VmRSS (now) or VmHWM (peak) of this process's own memory, in MiB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024
ready = status_mib("VmRSS")
print(json.dumps({"ready_rss_mib": ready}), flush=True)
sys.stdin.readline()
c0, w0 = time.process_time(), time.perf_counter()
value = fn(*call["args"], **call["kwargs"])
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
peak = status_mib("VmHWM")
print(json.dumps({"cpu_s": cpu, "wall_s": wall, "ready_rss_mib": ready, "peak_rss_mib": peak, "value": value}), flush=True)
"""


class ChildRun:
    """``target`` (``"module:function"``) called with JSON-able ``args``/``kwargs`` in a fresh
    interpreter, measured: ``start()`` launches it and waits until its imports are done (not
    timed), ``run()`` lets it work and returns {"cpu_s", "wall_s", "ready_rss_mib",
    "peak_rss_mib", "value"} (``value``: what the function returned, through JSON). For
    ``benchmark.pedantic(child.run, setup=child.start, rounds=1, iterations=1)``."""

    def __init__(self, target: str, *args, **kwargs):
        self.target, self.call = target, json.dumps({"args": list(args), "kwargs": kwargs})
        self.proc: subprocess.Popen | None = None
        self.result: dict | None = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.target, self.call],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._line()  # ready: imports done

    def _line(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{self.target} failed in its child process (exit {self.proc.returncode}, see stderr)")
        return json.loads(line)

    def run(self) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.result = self._line()
        assert self.proc.wait() == 0
        return self.result

    def measure(self) -> dict:
        """start() and run(), outside a benchmark."""
        self.start()
        return self.run()


def record(benchmark, impl: str, result: dict, **extra) -> None:
    """The child's measurements into the benchmark's extra_info (JSON output and the summary)."""
    benchmark.extra_info["impl"] = impl
    for k in ("cpu_s", "wall_s", "ready_rss_mib", "peak_rss_mib"):
        benchmark.extra_info[k] = round(result[k], 3)
    benchmark.extra_info.update(extra)


# ---------------------------------------------------------------------------------------------
# Data: generated once per session


@pytest.fixture(scope="session")
def scale_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("coco_scale")


@pytest.fixture(scope="session")
def scale_train(scale_dir):
    """``coco_scale.make_train`` at SCALE: the annotation file, its split and statistics."""
    return coco_scale.make_train(str(scale_dir), SCALE, seed=0)


@pytest.fixture(scope="session")
def scale_train_images(scale_train):
    """The folder of one JPEG per training image (file_name, declared width and height)."""
    root = os.path.join(os.path.dirname(scale_train["annotations"]), "train2017")
    t = time.perf_counter()
    coco_scale.write_images(root, scale_train["split"])
    scale_train["seconds"]["images"] = time.perf_counter() - t
    return root


@pytest.fixture(scope="session")
def scale_val(scale_dir):
    """``coco_scale.make_val`` at SCALE: annotations and 100 detections per image."""
    return coco_scale.make_val(str(scale_dir), SCALE, seed=1)


# ---------------------------------------------------------------------------------------------
# Stage: generation


def test_generation(scale_train, scale_train_images, scale_val, tmp_path):
    from PIL import Image

    stats = scale_train["statistics"]
    assert stats["images"] == COUNTS["train_images"] and stats["boxes"] == COUNTS["train_boxes"]
    assert stats["boxes_per_image"] == pytest.approx(coco_scale.COCO_TRAIN_BOXES / coco_scale.COCO_TRAIN_IMAGES, 1e-3)
    for key, share in zip(("small", "medium", "large"), coco_scale.SIZE_SHARES):
        assert stats[key] == pytest.approx(share, abs=0.01), key
    assert stats["crowd"] == pytest.approx(coco_scale.CROWD_SHARE, abs=0.003)
    assert 0 < stats["empty_images"] < 0.02 * stats["images"]
    assert stats["categories"] == 80 and stats["long_side_640"] > 0.95
    assert 20 < stats["polygon_points_per_box"] < 28
    if not QUICK:  # COCO's instances_train2017.json: 448 MB
        assert 400e6 < scale_train["bytes"] < 500e6

    # the file parses to what was generated; COCO's ids; image files of the declared sizes
    with open(scale_train["annotations"], "rb") as f:
        data = json.loads(f.read())
    split = scale_train["split"]
    assert [c["id"] for c in data["categories"]] == [c for c, _ in coco_scale.COCO_CATEGORIES]
    assert len(data["images"]) == split.num_images and len(data["annotations"]) == split.num_boxes
    pick = np.random.default_rng(0).choice(split.num_boxes, min(2000, split.num_boxes), replace=False)
    for k in pick.tolist():
        a = data["annotations"][k]
        assert a["bbox"] == split.boxes[k].tolist() and a["area"] == split.areas[k]
        if a["iscrowd"]:
            assert sum(a["segmentation"]["counts"]) == a["segmentation"]["size"][0] * a["segmentation"]["size"][1]
        else:
            xy = np.array(a["segmentation"][0]).reshape(-1, 2)
            assert 8 <= len(xy) <= 40
            assert [xy[:, 0].min(), xy[:, 1].min()] == a["bbox"][:2]
    del data
    names = sorted(os.listdir(scale_train_images))
    assert len(names) == split.num_images
    for i in range(0, split.num_images, max(1, split.num_images // 500)):
        with Image.open(os.path.join(scale_train_images, split.file_name(i))) as im:
            assert im.format == "JPEG" and im.size == (split.widths[i], split.heights[i])

    val = scale_val["statistics"]
    assert val["images"] == COUNTS["val_images"] and scale_val["detections"] == COUNTS["val_detections"]

    # seeded: the same bytes again (a small scale, to keep it quick)
    texts = []
    for run in range(2):
        out = coco_scale.make_val(str(tmp_path / str(run)), 0.02, seed=5)
        texts.append(open(out["annotations"], "rb").read() + open(out["results"], "rb").read())
    assert texts[0] == texts[1]

    seconds = scale_train["seconds"]
    print(
        f"\ngenerated {split.num_images} images, {split.num_boxes} boxes: {scale_train['bytes'] / 1e6:.1f} MB in "
        f"{seconds['generate']:.1f} s + {seconds['write']:.1f} s; JPEGs {seconds['images']:.1f} s; "
        f"val {scale_val['detections']} detections {sum(scale_val['seconds'].values()):.1f} s"
    )


# ---------------------------------------------------------------------------------------------
# Stage: evaluation, faster-coco-eval beside pycocotools

EVAL_GROUP = f"evaluate_coco {COUNTS['val_images']} images, {COUNTS['val_detections']} detections"
EVAL_IMPLS = {"pycocotools": "pycocotools", "sniper-faster": "faster"}


@pytest.fixture(scope="session")
def eval_runs():
    """{backend: child result} of the evaluation stage, shared by its tests."""
    return {}


def _evaluation(scale_val, backend: str) -> ChildRun:
    return ChildRun(
        "sniper_ext.evaluation:evaluate_coco",
        scale_val["annotations"],
        scale_val["results"],
        per_class=True,
        backend=backend,
    )


@pytest.mark.parametrize("impl", ["pycocotools", pytest.param("sniper-faster", marks=needs_faster)])
def test_evaluation(benchmark, scale_val, eval_runs, impl):
    backend = EVAL_IMPLS[impl]
    benchmark.group = EVAL_GROUP
    child = _evaluation(scale_val, backend)
    result = benchmark.pedantic(child.run, setup=child.start, rounds=1, iterations=1)
    metrics = result["value"]
    assert metrics["backend"] == backend and metrics["num_detections"] == COUNTS["val_detections"]
    record(benchmark, impl, result, AP=metrics["AP"])
    eval_runs[backend] = result


@needs_faster
def test_evaluation_same_numbers(scale_val, eval_runs):
    """The fast backend's 12 numbers and per-class APs are pycocotools' (ARs bit for bit, APs
    within 2**-52: see sniper_ext.evaluation.coco_eval), and print as the same table."""
    for backend in ("pycocotools", "faster"):
        if backend not in eval_runs:  # this test selected alone
            eval_runs[backend] = _evaluation(scale_val, backend).measure()
    ref, fast = eval_runs["pycocotools"]["value"], eval_runs["faster"]["value"]
    assert format_table(ref) == format_table(fast)
    worst = 0.0
    for key in METRIC_KEYS:
        assert (ref[key] is None) == (fast[key] is None), key
        if ref[key] is not None:
            diff = abs(ref[key] - fast[key])
            assert diff <= (2.0**-52 if key.startswith("AP") else 0.0), (key, ref[key], fast[key])
            worst = max(worst, diff)
    assert list(ref["per_class"]) == list(fast["per_class"])
    for name, v in ref["per_class"].items():
        w = fast["per_class"][name]
        assert (v is None) == (w is None) and (v is None or abs(v - w) <= 2.0**-52), name
    cpu = {b: eval_runs[b]["cpu_s"] for b in eval_runs}
    print(
        f"\nevaluation: pycocotools {cpu['pycocotools']:.1f} s CPU, faster {cpu['faster']:.1f} s CPU "
        f"({cpu['pycocotools'] / cpu['faster']:.1f}x); largest difference {worst:.3g}"
    )
