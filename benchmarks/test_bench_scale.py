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
  pycocotools (the reference), and their numbers compared;
* dataset opening: the whole file parsed (polygons too) and every image header read (the
  baseline, at every start before) beside ``open_coco`` building the dataset index (first run)
  and reusing it (later runs: memory-mapped arrays, image files only stat'ed);
* training start-up: ``open_run`` (dataset, configuration, positive chips of the R101 preset) on
  one rank, first run and later runs (goal: <= 10 s and <= 1 GiB after the first run);
* proposals: bytes of peak memory per proposal read from the binary format beside JSON (goal:
  <= 40 bytes);
* positive planning: the vectorised planner beside the per-image loop it replaced (goal: >= 4x
  CPU per image), and with 2 processes;
* loader workers: USS growth of DataLoader workers that read every record, per pass, for an
  ImageTable beside a list of ImageRecord objects (goal: no growth).
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
        # the benchmarks folder (scale_work) and python_tests (reference_planner) importable
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.pathsep.join(
            [here, os.path.join(os.path.dirname(here), "python_tests"), os.environ.get("PYTHONPATH", "")]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.target, self.call],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=path),
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


# ---------------------------------------------------------------------------------------------
# Stage: dataset opening and training start-up

OPEN_GROUP = f"open the training set: {COUNTS['train_images']} images, {COUNTS['train_boxes']} boxes, image headers"
STARTUP_GROUP = f"sniper train start-up (1 rank, R101 chips): {COUNTS['train_images']} images"


@pytest.fixture(scope="session")
def index_cache(scale_dir):
    """The dataset index's cache folder of this session (empty at first)."""
    return str(scale_dir / "index-cache")


@pytest.mark.parametrize("impl", ["baseline", "sniper-first-run", "sniper"])
def test_open_dataset(benchmark, scale_train, scale_train_images, index_cache, impl):
    """``sniper`` is a later run (the index built by ``sniper-first-run`` reused)."""
    benchmark.group = OPEN_GROUP
    if impl == "baseline":
        child = ChildRun("scale_work:open_baseline", scale_train["annotations"], scale_train_images)
    else:
        child = ChildRun("scale_work:open_indexed", scale_train["annotations"], scale_train_images, index_cache)
    result = benchmark.pedantic(child.run, setup=child.start, rounds=1, iterations=1)
    assert result["value"] == {"images": COUNTS["train_images"], "boxes": COUNTS["train_boxes"]}
    record(benchmark, impl, result)


@pytest.mark.parametrize("impl", ["sniper-first-run", "sniper"])
def test_train_startup(benchmark, scale_train, scale_train_images, scale_dir, impl):
    """The first run plans the positive chips and builds the index; a later run reuses both."""
    benchmark.group = STARTUP_GROUP
    child = ChildRun(
        "scale_work:train_startup",
        scale_train["annotations"],
        scale_train_images,
        str(scale_dir / "startup-run"),
        str(scale_dir / "startup-cache"),
    )
    result = benchmark.pedantic(child.run, setup=child.start, rounds=1, iterations=1)
    assert result["value"]["images"] == COUNTS["train_images"] and result["value"]["chips"] > 0
    record(benchmark, impl, result)
    if impl == "sniper" and not QUICK:  # the goals at COCO size, after the first run
        assert result["wall_s"] <= 10 and result["peak_rss_mib"] <= 1024, result


# ---------------------------------------------------------------------------------------------
# Stage: proposals, bytes per proposal

PROPOSAL_IMAGES = 2000 if QUICK else 5000
PROPOSALS_GROUP = f"read proposals: {PROPOSAL_IMAGES} images x 300"


@pytest.fixture(scope="session")
def proposal_files(scale_train, scale_dir):
    return ChildRun(
        "scale_work:write_proposal_files", str(scale_dir / "proposals"), scale_train["annotations"], PROPOSAL_IMAGES
    ).measure()["value"]


@pytest.mark.parametrize("impl", ["json", "sniper-npz"])
def test_read_proposals(benchmark, proposal_files, impl):
    benchmark.group = PROPOSALS_GROUP
    path = proposal_files["json" if impl == "json" else "npz"]
    child = ChildRun("scale_work:read_proposal_file", path)
    result = benchmark.pedantic(child.run, setup=child.start, rounds=1, iterations=1)
    n = result["value"]["proposals"]
    assert n == proposal_files["proposals"]
    per = (result["peak_rss_mib"] - result["ready_rss_mib"]) * 2**20 / n
    record(benchmark, impl, result, bytes_per_proposal=round(per, 1))
    print(f"\n{impl}: {per:.1f} bytes of peak memory per proposal")
    if impl == "sniper-npz":
        assert per <= 40, per


# ---------------------------------------------------------------------------------------------
# Stage: positive planning

PLAN_IMAGES = COUNTS["train_images"] if not QUICK else 3000
PLAN_GROUP = f"plan positive chips (R101 settings): {PLAN_IMAGES} images"


@pytest.fixture(scope="session")
def plans():
    return {}


@pytest.mark.parametrize("impl", ["loop", "sniper", "sniper-2-workers"])
def test_plan_positives(benchmark, scale_train, plans, impl):
    benchmark.group = PLAN_GROUP
    workers = 2 if impl == "sniper-2-workers" else 0
    child = ChildRun(
        "scale_work:plan_positives",
        scale_train["annotations"],
        "loop" if impl == "loop" else "sniper",
        workers,
        PLAN_IMAGES,
    )
    child.start()
    result = child.run()
    value = result["value"]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timing is the child's planning
    benchmark.stats.stats.data[:] = [value["plan_wall_s"]]
    record(benchmark, impl, result, plan_cpu_s=round(value["plan_cpu_s"], 3))
    plans[impl] = value
    if impl != "loop" and "loop" in plans:
        assert (value["chips"], value["digest"]) == (plans["loop"]["chips"], plans["loop"]["digest"])  # same plan
        ratio = plans["loop"]["plan_cpu_s"] / value["plan_cpu_s"]
        print(f"\n{impl}: {1e3 * value['plan_cpu_s'] / PLAN_IMAGES:.3f} ms CPU per image ({ratio:.1f}x the loop)")
        if impl == "sniper":
            assert ratio >= 4, ratio


# ---------------------------------------------------------------------------------------------
# Stage: loader workers reading every record

GROWTH_GROUP = f"loader workers reading {COUNTS['train_images']} records (USS growth per pass)"


@pytest.mark.parametrize("impl", ["records", "sniper-table"])
def test_loader_worker_growth(benchmark, scale_train, impl):
    benchmark.group = GROWTH_GROUP
    child = ChildRun(
        "scale_work:loader_growth", scale_train["annotations"], "table" if impl == "sniper-table" else "records"
    )
    result = benchmark.pedantic(child.run, setup=child.start, rounds=1, iterations=1)
    v = result["value"]
    record(benchmark, impl, result, **{k: round(x, 2) for k, x in v.items()})
    print(
        f"\n{impl}: workers grew {v['growth_first_pass_mib']:.1f} MiB in the first pass, {v['growth_second_pass_mib']:.1f} in the second"
    )
    if impl == "sniper-table":
        assert v["growth_first_pass_mib"] < 4 and v["growth_second_pass_mib"] < 2, v
