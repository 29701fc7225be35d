"""Deployable inference (sniper_ext.export, `sniper export`): the exported program and the
AOTInductor package against eager multi-scale inference (MultiScaleInference.detect, the path of
`sniper infer`), on the synthetic validation images in two shapes (landscape and portrait), with
batch sizes 1 and 4, at every inference resolution; the graph's ops and its freedom from host
synchronisation; the command line's contract and its errors.

Eager and exported runs see the same padded batches (the same loader, order and batch size), so
their detections must agree: the same count per image, and each detection has a twin with the
same label, its box within 1e-3 px and its score within 1e-5 (relative) -- the exported graph
computes the R-CNN head on its fixed number of RoIs and AOTInductor fuses the arithmetic, so the
last float bits may differ, and two detections of near-equal score may swap places.

The C++ runner (examples/cpp/sniper_detect) is built and compared with the Python runner's
output, byte for byte, by .ci/run (step 6)."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sniper_ext import cli
from sniper_ext.config import apply_overrides, preset
from sniper_ext.data import make_synthetic_dataset, open_images
from sniper_ext.export import (
    ExportableDetector,
    config_from_metadata,
    detect_image_file,
    example_inputs,
    export_detector,
    format_detections,
    host_sync_nodes,
    load_package,
    prepare_image,
    read_image_file,
    run_program,
)
from sniper_ext.inference import MultiScaleInference
from sniper_ext.modeling import build_model
from sniper_ext.runtime import load_detector


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six synthetic validation images and their transposes (portrait): ImageTable, folder."""
    d = tmp_path_factory.mktemp("export_images")
    make_synthetic_dataset(str(d / "syn"), 6, seed=3, split="val")
    out = d / "images"
    out.mkdir()
    for k, name in enumerate(sorted(os.listdir(d / "syn" / "images"))[:6]):
        img = Image.open(d / "syn" / "images" / name).convert("RGB")
        img.save(out / f"land_{k}.png")
        if k < 3:
            img.transpose(Image.Transpose.TRANSPOSE).save(out / f"port_{k}.png")
    ds = open_images(str(out))
    assert len({(r.width > r.height) for r in ds.records}) == 2  # two shapes
    return ds.records, ds.image_root


@pytest.fixture(scope="module")
def model():
    """The tiny preset's detector with seeded random weights (its many low scores exercise the
    merge and the capacities; a trained one is used by the command-line tests)."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    m = build_model(cfg.model, cfg.data).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m, cfg


def _same(want, got, tag):
    """Per image: the same count; the scores, sorted, within 1e-5; every detection matched to one
    of the other side's with the same label, its score within 1e-5 and its box within 1e-3 px.
    (Matching, not row by row: two detections whose scores differ in the last bits may come out
    in either order once the float rounding differs.)"""
    assert len(want) == len(got)
    for i, ((wb, ws, wl), (gb, gs, gl)) in enumerate(zip(want, got)):
        assert len(wb) == len(gb), f"{tag}: image {i}: {len(wb)} eager detections, {len(gb)} exported"
        np.testing.assert_allclose(np.sort(gs), np.sort(ws), rtol=1e-5, atol=1e-7, err_msg=f"{tag}: image {i}")
        used = np.zeros(len(wb), dtype=bool)
        for k in range(len(gb)):
            close = (wl == gl[k]) & (np.abs(ws - gs[k]) <= 1e-7 + 1e-5 * np.abs(ws))
            close &= np.abs(wb - gb[k]).max(axis=1) <= 1e-3
            hit = np.flatnonzero(close & ~used)
            assert len(hit), f"{tag}: image {i}: detection {k} (label {gl[k]}, score {gs[k]}) has no eager twin"
            used[hit[0]] = True


def _eager(m, icfg, cfg, records, root, batch_size):
    icfg = dataclasses.replace(icfg, batch_size=batch_size)
    return MultiScaleInference(m, icfg, pixel_mean=cfg.data.pixel_mean).detect(records, root)


def _single(icfg, r):
    return dataclasses.replace(icfg, resolutions=(icfg.resolutions[r],), valid_ranges=((0.0, math.inf),))


@pytest.mark.parametrize("r", [0, 1, 2])
def test_exported_program_equals_eager_at_every_resolution(model, images, r):
    """One program per resolution (single-scale, as `sniper export --resolution`): batch sizes 1
    and 4, landscape and portrait images of several padded sizes, through one exported graph."""
    m, cfg = model
    records, root = images
    icfg = _single(cfg.inference, r)
    ep = export_detector(m, icfg)
    assert host_sync_nodes(ep) == []
    for bs in (1, 4):
        want = _eager(m, icfg, cfg, records, root, bs)
        assert sum(len(w[0]) for w in want) > 0
        _same(want, run_program(ep.module(), records, root, icfg, cfg.data.pixel_mean, batch_size=bs), f"r{r} b{bs}")


def test_multiscale_module_equals_eager(model, images):
    """All three resolutions and the Soft-NMS merge in one module (eager, as exported)."""
    m, cfg = model
    records, root = images
    module = ExportableDetector(m, cfg.inference).eval()
    for bs in (1, 4):
        want = _eager(m, cfg.inference, cfg, records, root, bs)
        _same(want, run_program(module, records, root, cfg.inference, cfg.data.pixel_mean, batch_size=bs), f"b{bs}")


def test_capacity_is_the_top_of_eager(model, images):
    """With fewer slots than detections the program keeps eager's first ones."""
    m, cfg = model
    records, root = images
    icfg = dataclasses.replace(cfg.inference, detections_per_image=7, proposals_per_scale=20)
    want = _eager(m, icfg, cfg, records, root, 4)
    assert all(len(w[0]) == 7 for w in want)
    _same(want, run_program(ExportableDetector(m, icfg).eval(), records, root, icfg, cfg.data.pixel_mean), "cap 7")


def test_graph_has_only_sniper_ops_and_no_host_sync(model):
    m, cfg = model
    ep = export_detector(m, cfg.inference)
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    sniper = {t for t in targets if t.startswith("sniper.")}
    assert {"sniper.deform_im2col.default", "sniper.deform_roi_pool.default"} <= sniper
    assert {"sniper.batched_nms_fixed.default", "sniper.soft_nms_fixed.default"} <= sniper
    assert not {"sniper.nms.default", "sniper.batched_nms.default", "sniper.soft_nms.default"} & sniper
    assert host_sync_nodes(ep) == []
    assert not any("_local_scalar_dense" in t or "nonzero" in t for t in targets)
    # dynamic: the batch and each resolution's height and width are symbols
    user = [
        n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)
    ]
    shapes = [v.shape for v in user if v.dtype == torch.uint8]
    assert len(shapes) == 3 and all(isinstance(s, torch.SymInt) for sh in shapes for s in (sh[0], sh[2], sh[3]))


def test_host_sync_check_finds_a_planted_item():
    """The check can fail: a module that reads a value on the host (`.item()`) or makes a
    data-dependent shape (`nonzero`) is reported."""

    class Reads(torch.nn.Module):
        def forward(self, x):
            return x * x.sum().item()

    class Shapes(torch.nn.Module):
        def forward(self, x):
            return x.nonzero()

    x = torch.rand(4, 3)
    assert any("item" in n for n in host_sync_nodes(torch.export.export(Reads(), (x,), strict=False)))
    assert host_sync_nodes(torch.export.export(Shapes(), (x,), strict=False))


def test_example_inputs_and_wrong_input_count(model):
    m, cfg = model
    module = ExportableDetector(m, cfg.inference).eval()
    ex = example_inputs(cfg.inference, batch=3)
    assert len(ex) == 1 + 3 * len(cfg.inference.resolutions)
    with torch.no_grad():
        boxes, scores, labels, count = module(*ex)
    d = cfg.inference.detections_per_image
    assert boxes.shape == (3, d, 4) and scores.shape == (3, d) and labels.shape == (3, d) and count.shape == (3,)
    for b in range(3):  # padding after the count: zeros and label -1
        n = int(count[b])
        assert (labels[b, n:] == -1).all() and (scores[b, n:] == 0).all() and (boxes[b, n:] == 0).all()
        assert ((labels[b, :n] >= 1) & (labels[b, :n] <= 3)).all()
        assert (scores[b, :n][:-1] >= scores[b, :n][1:]).all()
    with pytest.raises(ValueError, match="per-resolution inputs"):
        module(*ex[:4])


# -- the command line and the AOTInductor package ------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`sniper train --preset tiny` (short) and `sniper export` of its checkpoint: (run dir,
    package path, stdout)."""
    from sniper_ext.engine import train

    out = str(tmp_path_factory.mktemp("export_run"))
    cfg = apply_overrides(preset("tiny"), ["data.synthetic_images=16", "data.workers=0", "mode=positives"])
    train(cfg, out, max_iter=20, progress=False)
    pkg = os.path.join(out, "model.pt2")
    rc = cli.main(["export", "--checkpoint", out, "--out", pkg])
    assert rc == 0
    return out, pkg


def test_sniper_export_writes_a_package_equal_to_eager(trained, images, capsys):
    run_dir, pkg = trained
    records, root = images
    assert os.path.isfile(pkg) and os.path.isfile(os.path.join(run_dir, "model.json"))
    assert not [f for f in os.listdir(run_dir) if f.startswith(".sniper_export_")]  # no temporary left
    side = json.load(open(os.path.join(run_dir, "model.json")))
    assert [c["id"] for c in side["categories"]] == [1, 2, 3] and side["inputs"][0] == "orig_wh"
    assert side["inference"]["resolutions"] == [[560, 800], [320, 512], [192, 205]]
    model, cfg, _ = load_detector(run_dir)
    program = load_package(pkg)
    meta = program.get_metadata()
    icfg = config_from_metadata(meta)
    assert icfg == cfg.inference
    for bs in (1, 4):
        want = _eager(model, cfg.inference, cfg, records, root, bs)
        got = run_program(program, records, root, icfg, cfg.data.pixel_mean, batch_size=bs)
        _same(want, got, f"package b{bs}")


def test_python_runner_output_is_the_cpp_format(trained, images, tmp_path):
    """detect_image_file (what examples/cpp/sniper_detect prints) equals the program's outputs."""
    _, pkg = trained
    records, root = images
    ppm = str(tmp_path / "img.ppm")
    Image.open(os.path.join(root, records[0].file_name)).convert("RGB").save(ppm)
    text = detect_image_file(pkg, ppm)
    lines = text.splitlines()
    program = load_package(pkg)
    meta = program.get_metadata()
    image = read_image_file(ppm)
    inputs = prepare_image(image, config_from_metadata(meta), [int(v) for v in meta["sniper.pad_rgb"].split(",")])
    out = program(*inputs)
    assert text == format_detections(out, meta, ppm, image.shape[2], image.shape[1])
    n = int(out[3][0])
    assert lines[0].startswith(f"# {ppm}: {image.shape[2]}x{image.shape[1]}, {n} detections") and len(lines) == n + 1
    if n:
        cid, name, score, *box = lines[1].split("\t")
        assert cid in meta["sniper.category_ids"].split(",") and float(score) == pytest.approx(float(out[1][0, 0]))
        assert [float(v) for v in box] == pytest.approx(out[0][0, 0].tolist(), abs=1e-4)


def test_prepare_image_matches_the_loader_sizes(model):
    """Sizes and scales of prepare_image follow resolution_scale with Python's round()."""
    _, cfg = model
    img = torch.randint(0, 256, (3, 185, 247), dtype=torch.uint8)
    inputs = prepare_image(img, cfg.inference, (124, 116, 104))
    assert inputs[0].tolist() == [[247.0, 185.0]]
    for r, (lo, hi) in enumerate(cfg.inference.resolutions):
        images, wh, scale = inputs[1 + 3 * r : 4 + 3 * r]
        s = min(lo / 185, hi / 247) if 247 * lo / 185 > hi else lo / 185
        w, h = round(247 * s), round(185 * s)
        assert wh.tolist() == [[w, h]] and scale.item() == pytest.approx(s)
        assert images.shape[2] % 16 == 0 and images.shape[3] % 16 == 0
        pad = torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)
        assert (images[0, :, h:, :] == pad).all() and (images[0, :, :, w:] == pad).all()
        assert images.shape[2] - h < 16 and images.shape[3] - w < 16
    with pytest.raises(ValueError, match="uint8 tensor"):
        prepare_image(img.float(), cfg.inference, (0, 0, 0))


def test_export_resolution_option_exports_single_scale(trained, tmp_path, monkeypatch):
    """--resolution MIN MAX: one resolution, every size valid (the spy stops before compiling)."""
    import sniper_ext.cli.export as export_cmd

    seen = {}

    class Stop(Exception):
        pass

    def spy(model, icfg, **kw):
        seen["icfg"] = icfg
        raise Stop

    monkeypatch.setattr(export_cmd, "export_detector", spy)
    with pytest.raises(Stop):
        cli.main(["export", "--checkpoint", trained[0], "--out", str(tmp_path / "m.pt2"), "--resolution", "320", "512"])
    assert seen["icfg"].resolutions == ((320, 512),) and seen["icfg"].valid_ranges == ((0.0, math.inf),)


def test_failed_export_leaves_the_old_package(trained, tmp_path, monkeypatch):
    import sniper_ext.export.package as package

    out = tmp_path / "m.pt2"
    out.write_bytes(b"old package")

    def boom(*a, **k):
        raise RuntimeError("compiler crashed")

    monkeypatch.setattr(package.torch._inductor, "aoti_compile_and_package", boom)
    with pytest.raises(RuntimeError, match="compiler crashed"):
        cli.main(["export", "--checkpoint", trained[0], "--out", str(out)])
    assert out.read_bytes() == b"old package"
    assert sorted(os.listdir(tmp_path)) == ["m.pt2"]


@pytest.mark.parametrize(
    "extra, code, fragment",
    [
        (["--out", "model.onnx"], 2, "must end in .pt2"),
        (["--resolution", "512", "320"], 2, "MIN 512 is above MAX 320"),
        (["--resolution", "0", "320"], 2, "--resolution"),
        (["--set", "model.depth=50"], 2, "only inference.* keys"),
        (["--device", "tpu"], 2, "--device"),
    ],
)
def test_bad_options(trained, tmp_path, capsys, extra, code, fragment):
    argv = ["export", "--checkpoint", trained[0], "--out", str(tmp_path / "m.pt2")] + extra
    if "--out" in extra:
        argv = ["export", "--checkpoint", trained[0]] + extra
    assert cli.main(argv) == code
    assert fragment in capsys.readouterr().err


def test_missing_checkpoint_and_cuda_without_gpu(tmp_path, trained, capsys):
    rc = cli.main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.pt2")])
    assert rc == 1 and "nope.pt" in capsys.readouterr().err
    if not torch.cuda.is_available():
        rc = cli.main(["export", "--checkpoint", trained[0], "--out", str(tmp_path / "m.pt2"), "--device", "cuda"])
        assert rc == 1 and "no GPU" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m.pt2")
