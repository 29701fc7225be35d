"""sniper_ext.modeling.resnet: shapes and strides, torchvision state-dict compatibility, frozen
stages and BatchNorm modes, and the zero-initialised deformable res5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sniper_ext.modeling import (
    FrozenBatchNorm2d,
    ResNet,
    load_torchvision_weights,
    resnet18,
    resnet18_tiny,
    resnet50,
    resnet101,
)

BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def torchvision_state_dict(depth: int, width: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of ``torchvision.models.resnet{depth}()``, built here from torchvision's
    naming (random values, right shapes). Checked by hand against torchvision 0.x in a separate
    venv: resnet18 has 122 keys, resnet50 320, resnet101 626 (each with fc.weight and fc.bias, and
    20 / 53 / 104 num_batches_tracked)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5

    def bn(name, c):
        sd[name + ".weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[name + ".bias"] = 0.1 * torch.randn(c, generator=g)
        sd[name + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[name + ".running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        sd[name + ".num_batches_tracked"] = torch.tensor(100, dtype=torch.long)

    basic = depth < 50
    expansion = 1 if basic else 4
    w = lambda c: max(1, round(c * width))  # noqa: E731
    conv("conv1", w(64), 3, 7)
    bn("bn1", w(64))
    cin = w(64)
    for i, n in enumerate(BLOCKS[depth]):
        planes = w(64 * 2**i)
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            if basic:
                conv(p + ".conv1", planes, cin, 3)
                bn(p + ".bn1", planes)
                conv(p + ".conv2", planes, planes, 3)
                bn(p + ".bn2", planes)
            else:
                conv(p + ".conv1", planes, cin, 1)
                bn(p + ".bn1", planes)
                conv(p + ".conv2", planes, planes, 3)
                bn(p + ".bn2", planes)
                conv(p + ".conv3", planes * 4, planes, 1)
                bn(p + ".bn3", planes * 4)
            if b == 0 and (i > 0 or cin != planes * expansion):
                conv(p + ".downsample.0", planes * expansion, cin, 1)
                bn(p + ".downsample.1", planes * expansion)
            cin = planes * expansion
    sd["fc.weight"] = torch.randn(1000, cin, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


@pytest.mark.parametrize("depth,keys", [(18, 122), (50, 320), (101, 626)])
def test_reference_key_counts(depth, keys):
    assert len(torchvision_state_dict(depth)) == keys


@pytest.mark.parametrize(
    "factory,channels",
    [
        (resnet18_tiny, (8, 16, 32, 64)),
        (resnet18, (64, 128, 256, 512)),
        (resnet50, (256, 512, 1024, 2048)),
        (resnet101, (256, 512, 1024, 2048)),
    ],
)
def test_shapes_and_strides(factory, channels):
    m = factory().eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        out = m(x)
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for (name, y), c, s in zip(out.items(), channels, (4, 8, 16, 16)):
        assert y.shape == (1, c, 64 // s, 80 // s), name
        assert m.out_channels[name] == c and m.strides[name] == s


def test_undilated_res5_stride_32_and_out_features():
    m = resnet18_tiny(res5_dilation=1, deformable_res5=False, out_features=("res4", "res5")).eval()
    out = m(torch.randn(2, 3, 64, 64))
    assert list(out) == ["res4", "res5"]
    assert out["res4"].shape == (2, 32, 4, 4) and out["res5"].shape == (2, 64, 2, 2)
    assert m.strides["res5"] == 32
    # res5 3x3 convs: stride 2 on the first block's conv2 only, no dilation
    assert m.layer4[0].conv1.stride == (2, 2)  # BasicBlock: the stride is on conv1


def test_odd_input_size():
    out = resnet18_tiny().eval()(torch.randn(1, 3, 37, 50))
    assert out["res4"].shape[2:] == (3, 4) and out["res5"].shape[2:] == (3, 4)


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_torchvision_keys_load_strictly_plain(depth):
    sd = torchvision_state_dict(depth, width=0.125 if depth == 101 else 1.0)
    m = ResNet(depth, width=0.125 if depth == 101 else 1.0, deformable_res5=False)
    assert set(m.state_dict()) == set(sd) - {"fc.weight", "fc.bias"}
    res = load_torchvision_weights(m, sd)
    assert res.ignored == ["fc.weight", "fc.bias"]
    assert res.not_in_file == []
    own = m.state_dict()
    for k in res.loaded:
        assert torch.equal(own[k], sd[k]), k


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_torchvision_keys_load_into_deformable(depth):
    width = 0.125 if depth == 101 else 1.0
    sd = torchvision_state_dict(depth, width=width)
    m = ResNet(depth, width=width)
    res = load_torchvision_weights(m, sd)
    blocks = BLOCKS[depth][3]
    expected = [f"layer4.{b}.conv2.conv_offset.{p}" for b in range(blocks) for p in ("weight", "bias")]
    assert sorted(res.not_in_file) == sorted(expected)
    assert res.ignored == ["fc.weight", "fc.bias"]
    for b in range(blocks):
        assert torch.equal(m.layer4[b].conv2.weight, sd[f"layer4.{b}.conv2.weight"])
        assert not m.layer4[b].conv2.conv_offset.weight.any()


def test_load_from_file_and_frozen_norm(tmp_path):
    sd = torchvision_state_dict(18, width=0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    m = resnet18_tiny(norm="frozen", deformable_res5=False)
    res = load_torchvision_weights(m, str(path))
    assert res.not_in_file == []
    assert isinstance(m.layer3[0].bn1, FrozenBatchNorm2d)
    assert torch.equal(m.layer3[0].bn1.running_var, sd["layer3.0.bn1.running_var"])
    load_torchvision_weights(m, path)  # a PathLike too


def test_old_checkpoint_without_num_batches_tracked():
    sd = {k: v for k, v in torchvision_state_dict(18, width=0.125).items() if "num_batches_tracked" not in k}
    m = resnet18_tiny(deformable_res5=False)
    res = load_torchvision_weights(m, sd)
    assert len(res.not_in_file) == 20 and all(k.endswith("num_batches_tracked") for k in res.not_in_file)


def test_wrong_files_give_clear_errors(tmp_path):
    m = resnet18_tiny(deformable_res5=False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"shape mismatches \(conv1\.weight: file \(64, 3, 7, 7\) vs model \(8, 3, 7, 7\)"
    ):
        load_torchvision_weights(m, torchvision_state_dict(18))  # full width into the tiny one
    path = tmp_path / "r50.pth"
    torch.save(torchvision_state_dict(50, width=0.125), path)
    with pytest.raises(
        ValueError,
        match=r"r50\.pth does not match the model \(model: ResNet-18 at width 0\.125\): 198 file keys not in the model \(layer1\.0\.conv3",
    ):
        load_torchvision_weights(m, path)
    sd = torchvision_state_dict(18, width=0.125)
    del sd["layer2.1.bn2.weight"]
    sd["layer9.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"1 model keys missing.*layer2\.1\.bn2\.weight.*1 file keys not in the model.*layer9"
    ):
        load_torchvision_weights(m, sd)
    bad = tmp_path / "junk.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read .*junk\.pth"):
        load_torchvision_weights(m, bad)
    with pytest.raises(ValueError, match="not a state dict"):
        load_torchvision_weights(m, {"conv1.weight": [1, 2]})  # type: ignore[dict-item]
    for k, v in m.state_dict().items():  # nothing was loaded by the failed calls
        assert torch.equal(v, before[k]), k


def test_frozen_stages_and_bn_modes():
    m = resnet18_tiny()  # freeze_at=2, norm="train"
    m.train()
    frozen = [m.conv1, m.bn1, m.layer1]
    assert all(not p.requires_grad for f in frozen for p in f.parameters())
    assert all(p.requires_grad for n, p in m.named_parameters() if not n.startswith(("conv1", "bn1", "layer1")))
    assert isinstance(m.bn1, FrozenBatchNorm2d) and isinstance(m.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(m.layer2[0].bn1, nn.BatchNorm2d)
    assert not m.layer1.training and m.layer2.training
    stats = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    out = m(torch.randn(2, 3, 64, 64))
    sum(y.sum() for y in out.values()).backward()
    assert all(p.grad is None for f in frozen for p in f.parameters())
    assert m.layer2[0].conv1.weight.grad is not None
    now = m.state_dict()
    changed = {k for k in stats if not torch.equal(now[k], stats[k])}
    assert changed and all(not k.startswith(("bn1", "layer1")) for k in changed)  # batch statistics elsewhere

    f = resnet18_tiny(norm="frozen")
    f.train()
    stats = {k: v.clone() for k, v in f.state_dict().items()}
    f(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(v, stats[k]) for k, v in f.state_dict().items())
    assert not any(isinstance(x, nn.BatchNorm2d) for x in f.modules())


def test_frozen_batchnorm_matches_eval_batchnorm():
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    fb = FrozenBatchNorm2d.from_batchnorm(bn)
    fb2 = FrozenBatchNorm2d(5)
    fb2.load_state_dict(bn.state_dict())
    x = torch.randn(3, 5, 4, 6)
    ref = bn.eval()(x)
    torch.testing.assert_close(fb(x), ref)
    torch.testing.assert_close(fb2.train()(x), ref)
    assert list(fb.parameters()) == []


@pytest.mark.parametrize("depth,width", [(18, 0.125), (50, 0.125)])
def test_deformable_res5_with_zero_offsets_equals_dilated_conv(depth, width):
    torch.manual_seed(0)
    plain = ResNet(depth, width=width, deformable_res5=False).eval()
    deform = ResNet(depth, width=width).eval()
    res = load_torchvision_weights(deform, plain.state_dict())
    assert all(".conv_offset." in k for k in res.not_in_file) and res.not_in_file
    assert isinstance(plain.layer4[0].conv2, nn.Conv2d) and plain.layer4[0].conv2.dilation == (2, 2)
    x = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    with torch.no_grad():
        a, b = plain.double()(x), deform.double()(x)
    torch.testing.assert_close(a["res4"], b["res4"], rtol=0, atol=0)
    torch.testing.assert_close(a["res5"], b["res5"], rtol=1e-10, atol=1e-10)
    assert a["res5"].abs().sum() > 0


def test_argument_errors():
    with pytest.raises(ValueError, match="ResNet: `depth`"):
        ResNet(42)
    with pytest.raises(ValueError, match="ResNet: `norm`"):
        ResNet(18, norm="sync")
    with pytest.raises(ValueError, match="ResNet: `width`"):
        ResNet(18, width=0)
    with pytest.raises(ValueError, match="ResNet: `res5_dilation`"):
        ResNet(18, res5_dilation=4)
    with pytest.raises(ValueError, match="ResNet: `offset_groups`"):
        ResNet(18, width=0.125, offset_groups=5)
    with pytest.raises(ValueError, match="ResNet: `out_features`"):
        ResNet(18, out_features=("res6",))
    with pytest.raises(ValueError, match=r"ResNet: `x` must be a tensor of shape \[N, 3, H, W\]"):
        resnet18_tiny()(torch.randn(1, 4, 32, 32))
