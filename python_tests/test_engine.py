"""The training engine: configuration, lr schedule, checkpoints, metrics, and the `sniper train`
contract: files, exact resume after SIGKILL, and 2-process DDP (gloo) = 1 process."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sniper_ext.chips import ChipDB, plan_dataset
from sniper_ext.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    preset,
    save_config,
)
from sniper_ext.data import load_coco, read_proposals_npz
from sniper_ext.engine import lr_at
from sniper_ext.engine.metrics import MetricsLog, plot_losses, read_metrics
from sniper_ext.errors import DataError
from sniper_ext.runtime import load_checkpoint, save_checkpoint

# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "r50", "sniper_r101_coco"])
def test_presets_round_trip(name, tmp_path):
    cfg = preset(name)
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg


def test_r101_preset_has_the_method_numbers():
    cfg = preset("sniper_r101_coco")
    assert cfg.model.depth == 101 and cfg.model.num_classes == 80
    assert len(cfg.model.anchor_ratios) * len(cfg.model.anchor_scales) == 21
    assert cfg.chips.chip_size == 512 and cfg.chips.stride == 32
    assert cfg.solver.base_lr == 0.015 and cfg.solver.reference_batch == 128 and cfg.solver.warmup_iters == 1000
    assert cfg.inference.resolutions == ((1400, 2000), (800, 1280), (480, 512))
    assert cfg.inference.soft_nms_sigma == 0.55 and cfg.inference.detections_per_image == 200


def test_overrides():
    cfg = apply_overrides(
        preset("tiny"), ["solver.base_lr=0.5", "model.anchor_scales=[1, 2]", "backbone_weights=w.pth"]
    )
    assert cfg.solver.base_lr == 0.5 and cfg.model.anchor_scales == (1, 2) and cfg.backbone_weights == "w.pth"
    for bad, match in (
        ("solver.nope=1", "unknown key 'nope'"),
        ("nope.x=1", "not a section"),
        ("solver.base_lr", "key=value"),
        ("model.deformable_res5=3", "true or false"),
    ):
        with pytest.raises(ConfigError, match=match):
            apply_overrides(preset("tiny"), [bad])


def test_load_config_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(p)
    p.write_text(json.dumps({"solver": {"bogus": 1}}))
    with pytest.raises(ConfigError, match="bogus"):
        load_config(p)


# -- lr schedule ---------------------------------------------------------------------------------


def test_lr_schedule_hand_values():
    kw = dict(warmup_iters=10, warmup_factor=0.1, steps=(2.0,), gamma=0.1)
    assert lr_at(0, 1.0, 100, **kw) == pytest.approx(0.1)
    assert lr_at(5, 1.0, 100, **kw) == pytest.approx(0.1 * 0.5 + 0.5)
    assert lr_at(10, 1.0, 100, **kw) == 1.0
    assert lr_at(199, 1.0, 100, **kw) == 1.0
    assert lr_at(200, 1.0, 100, **kw) == pytest.approx(0.1)
    assert lr_at(3, 1.0, 1, warmup_iters=0, steps=(1.0, 2.0), gamma=0.5) == 0.25


# -- checkpoints and metrics ---------------------------------------------------------------------


def test_checkpoint_atomic_and_checked(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(p, {"model": {"w": torch.ones(3)}, "iter": 1})
    assert load_checkpoint(p)["iter"] == 1

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(p, {"model": {}, "x": Boom()})
    assert load_checkpoint(p)["iter"] == 1  # the old checkpoint survives
    assert [f for f in os.listdir(tmp_path) if f != "last.pt"] == []  # no temporary left
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable sniper_ext checkpoint"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_metrics_cut_back_on_resume(tmp_path):
    p = str(tmp_path / "m.jsonl")
    log = MetricsLog(p, fresh=True)
    for stage, it in (("rpn", 5), ("rpn", 10), ("detector", 5), ("detector", 10)):
        log.log({"stage": stage, "iter": it, "loss": 1.0 / it})
    log.close()
    with open(p, "a") as f:
        f.write('{"stage": "detector", "iter": 15, "lo')  # a line cut by SIGKILL
    assert len(read_metrics(p)) == 4
    MetricsLog(p, keep_until=("detector", 5)).close()
    assert [(e["stage"], e["iter"]) for e in read_metrics(p)] == [("rpn", 5), ("rpn", 10), ("detector", 5)]
    assert plot_losses(p, str(tmp_path / "loss.png")).endswith("loss.png")


# -- `sniper train`: files, resume, DDP ------------------------------------------------------------

SMALL = [
    "--preset", "tiny", "--workers", "0", "--batch-size", "4", "--quiet",
    "--set", "data.synthetic_images=6", "--set", "solver.log_every=1", "--set", "inference.batch_size=6",
]  # fmt: skip


def _train(out, *extra, timeout=300, check=True, env=None):
    cmd = [sys.executable, "-m", "sniper_ext.cli", "train", "--out", str(out), *SMALL, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def _tensors(x, prefix=""):
    if isinstance(x, torch.Tensor):
        yield prefix, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _tensors(v, f"{prefix}[{i}]")


def _weights(path):
    s = torch.load(path, weights_only=True)
    return dict(_tensors({"model": s["model"], "optimizer": s["optimizer"]}))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    _train(out, "--max-iter", "8", "--checkpoint-every", "3")
    return out


def test_train_writes_the_contract_files(uninterrupted):
    out = uninterrupted
    for name in ("config.json", "metrics.jsonl", "last.pt", "rpn.pt", "chips.npz", "loss.png"):
        assert (out / name).exists(), name
    entries = read_metrics(str(out / "metrics.jsonl"))
    assert all({"stage", "iter", "loss"} <= set(e) for e in entries)
    assert [e["iter"] for e in entries if e["stage"] == "rpn"] == list(range(1, 9))
    assert [e["iter"] for e in entries if e["stage"] == "detector"] == list(range(1, 9))
    assert all(math.isfinite(e["loss"]) for e in entries)
    state = load_checkpoint(out / "last.pt")
    assert state["stage"] == "detector" and state["iter"] == 8 and state["stage_done"]
    assert state["completed"] == ["rpn", "negatives"]
    assert [c["name"] for c in state["categories"]] == ["disc", "square", "triangle"]
    cfg = load_config(out / "config.json")
    assert cfg.name == "tiny" and cfg.solver.max_iter == 8
    # The RPN stage's proposals in the binary format; the chips are the plan of them.
    records = load_coco(str(out / "data" / "train.json"))
    proposals = read_proposals_npz(str(out / "proposals.rank0.npz"), records)
    assert sorted(proposals) == records.image_ids.tolist() and proposals.num_proposals > 0
    want = plan_dataset(records, proposals, cfg.chips, seed=cfg.seed, progress=False)
    got = ChipDB.load(str(out / "chips.npz"))
    assert all(np.array_equal(getattr(want, k), getattr(got, k)) for k in ChipDB._ARRAYS)
    assert (got.chip_kind == 1).any() and ChipDB.load(str(out / "chips_positive.npz")).extra["plan_key"]


def _kill_when(out, predicate, extra, timeout=240):
    """Starts the run and SIGKILLs it once ``predicate(metrics entries)`` holds."""
    cmd = [sys.executable, "-m", "sniper_ext.cli", "train", "--out", str(out), *SMALL, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            if predicate(read_metrics(str(out / "metrics.jsonl"))):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def test_sigkill_and_resume_give_the_same_weights(uninterrupted, tmp_path):
    """Killed in the RPN stage between checkpoints, resumed; killed again in the detector stage,
    resumed: the final checkpoint's model and optimizer tensors equal the uninterrupted run's."""
    out = tmp_path / "run"
    args = ("--max-iter", "8", "--checkpoint-every", "3")
    _kill_when(out, lambda es: any(e["stage"] == "rpn" and e["iter"] >= 5 for e in es), args)
    assert load_checkpoint(out / "last.pt")["iter"] == 3  # killed after the checkpoint of iteration 3
    _kill_when(out, lambda es: any(e["stage"] == "detector" and e["iter"] >= 4 for e in es), (*args, "--resume"))
    r = _train(out, *args, "--resume")
    assert "resuming from" in r.stdout
    want, got = _weights(uninterrupted / "last.pt"), _weights(out / "last.pt")
    assert want.keys() == got.keys()
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert not differ, differ[:5]
    # The metrics read as one run: every iteration once.
    entries = read_metrics(str(out / "metrics.jsonl"))
    assert [(e["stage"], e["iter"]) for e in entries] == [("rpn", i) for i in range(1, 9)] + [
        ("detector", i) for i in range(1, 9)
    ]


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    r = _train(tmp_path / "run", "--max-iter", "1", "--mode", "positives", "--resume")
    assert "starting from the beginning" in r.stdout


def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) x 2 chips = 1 process x 4 chips: the same chips per
    iteration (ChipStream), per-chip-normalised losses, frozen norms -> the same weights."""
    # frozen norms: BatchNorm on batch statistics differs between 2 x 2 chips and 4 chips by design
    common = ("--mode", "positives", "--max-iter", "4", "--set", "solver.log_every=1", "--set", "model.norm=frozen")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = tmp_path / "one"
    cmd = [sys.executable, "-m", "sniper_ext.cli", "train", "--out", str(one), *SMALL, *common]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    two = tmp_path / "two"
    small = [a if a != "4" else "2" for a in SMALL]  # --batch-size 2 per process
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sniper_ext.cli", "train", "--out", str(two), *small, *common,
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(one / "last.pt"), _weights(two / "last.pt")
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, worst
    la = [e["loss"] for e in read_metrics(str(one / "metrics.jsonl"))]
    lb = [e["loss"] for e in read_metrics(str(two / "metrics.jsonl"))]
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-5)


def test_two_ranks_mine_negatives_in_shards(tmp_path):
    """torchrun with 2 processes up to the negatives stage: each rank writes the proposals of its
    planning batches (disjoint, together every image) and the merged chips are the plan of all
    of them."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sniper_ext.cli", "train", "--out", str(out), *SMALL, "--max-iter", "2", "--stage", "negatives",
        "--set", "data.synthetic_images=12", "--set", "chips.neg_min_proposals=[2,2,2]",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "SNIPER_PLAN_BATCH": "5"})
    assert r.returncode == 0, r.stderr[-3000:]
    records = load_coco(str(out / "data" / "train.json"))
    shards = [read_proposals_npz(str(out / f"proposals.rank{k}.npz"), records) for k in (0, 1)]
    ids = [sorted(s) for s in shards]
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == records.image_ids.tolist()
    merged = {i: s[i] for s in shards for i in s}
    cfg = load_config(out / "config.json")
    want = plan_dataset(records, merged, cfg.chips, seed=cfg.seed, progress=False, batch_size=5)
    got = ChipDB.load(str(out / "chips.npz"))
    assert all(np.array_equal(getattr(want, k), getattr(got, k)) for k in ChipDB._ARRAYS)
    assert (got.chip_kind == 1).any()


def test_train_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"images": [{"id": 1, "width": 10, "height": 10, "file_name": "x.png"}], "annotations": []})
    )
    r = _train(tmp_path / "run", "--annotations", str(bad), check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "x.png" in r.stderr
    r = _train(tmp_path / "run", "--set", "solver.lr=1", check=False)
    assert r.returncode == 2 and "unknown key 'lr'" in r.stderr
    r = _train(tmp_path / "run", "--annotations", str(tmp_path / "missing.json"), check=False)
    assert r.returncode == 1 and "missing.json" in r.stderr


def test_stage_by_stage_equals_one_command(uninterrupted, tmp_path):
    """--stage rpn, then --stage negatives --resume, then --resume: the same weights as one run."""
    out = tmp_path / "run"
    args = ("--max-iter", "8", "--checkpoint-every", "3")
    r = _train(out, *args, "--stage", "rpn")
    assert "stopped after the rpn stage" in r.stdout and not (out / "chips.npz").exists()
    r = _train(out, *args, "--stage", "negatives", "--resume")
    assert "positive chips: " + str(out / "chips_positive.npz") in r.stdout  # reused, not planned again
    assert (out / "chips.npz").exists() and load_checkpoint(out / "last.pt")["stage"] == "negatives"
    _train(out, *args, "--resume")
    want, got = _weights(uninterrupted / "last.pt"), _weights(out / "last.pt")
    assert all(torch.equal(want[k], got[k]) for k in want)
    r = _train(out, "--mode", "positives", "--stage", "rpn", check=False)
    assert r.returncode == 2 and "mode positives has the stages detector" in r.stderr


def test_bf16_autocast_trains_and_infers(tmp_path):
    """The GPU default (bf16 autocast) runs end to end on the CPU too: training steps with finite
    losses, then multi-scale inference in bf16 writing valid COCO results."""
    out = tmp_path / "run"
    _train(out, "--mode", "positives", "--max-iter", "3", "--set", "solver.precision=bf16")
    entries = read_metrics(str(out / "metrics.jsonl"))
    assert len(entries) == 3 and all(math.isfinite(e["loss"]) for e in entries)
    results = tmp_path / "r.json"
    cmd = [
        sys.executable, "-m", "sniper_ext.cli", "infer", "--checkpoint", str(out / "last.pt"),
        "--annotations", str(out / "data" / "train.json"), "--image-root", str(out / "data" / "images"),
        "--out", str(results), "--precision", "bf16", "--quiet",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    dets = json.loads(results.read_text())
    assert isinstance(dets, list) and all(math.isfinite(d["score"]) and len(d["bbox"]) == 4 for d in dets)
