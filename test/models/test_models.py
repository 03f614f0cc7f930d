"""Each module keeps shapes and passes gradients; builders and checkpoints round-trip."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_student_with_statistics

from road_seg_ros.core.checkpoint import CheckpointError, ModelInfo, load_checkpoint, read_info, save_checkpoint
from road_seg_ros.models import (
    AsymmetricPyramid,
    CoordinateAttention,
    ShiftedDepthwise,
    build_model,
    fuse_conv_bn,
    resolve_architecture,
    shift_depthwise,
)
from road_seg_ros.models.blocks import AsymmetricResidualBlock, Downsample


def _grads_flow(module, x):
    outputs = module(x)
    out = outputs["out"] if isinstance(outputs, dict) else outputs
    sum(o.square().mean() for o in (outputs.values() if isinstance(outputs, dict) else [out])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    return out


def test_coordinate_attention_keeps_shape_and_gates_each_axis():
    attention = CoordinateAttention(16)
    x = torch.randn(2, 16, 9, 13, requires_grad=True)
    out = _grads_flow(attention, x)
    assert out.shape == x.shape
    # gates lie in (0, 1): attention only ever scales features down, per position
    assert (out.abs() <= x.abs() + 1e-6).all()


def test_asymmetric_pyramid_fuses_branches_to_out_channels():
    pyramid = AsymmetricPyramid(32, 24, branch_ch=8, dilations=(1, 2, 4))
    x = torch.randn(2, 32, 12, 16, requires_grad=True)
    assert _grads_flow(pyramid, x).shape == (2, 24, 12, 16)
    factorised = pyramid.branches[0]
    assert factorised[0][0].kernel_size == (3, 1) and factorised[1][0].kernel_size == (1, 3)


def test_residual_block_and_downsample_shapes():
    assert _grads_flow(AsymmetricResidualBlock(8, 2), torch.randn(2, 8, 10, 10, requires_grad=True)).shape == (
        2,
        8,
        10,
        10,
    )
    assert _grads_flow(Downsample(8, 16), torch.randn(2, 8, 11, 15, requires_grad=True)).shape == (2, 16, 6, 8)


@pytest.mark.parametrize(
    "arch",
    [
        {"name": "student", "size": "tiny"},
        {"name": "student", "size": "small", "aux_head": True},
        {"name": "teacher", "backbone": "resnet18", "aux_head": True},
    ],
)
def test_networks_output_logits_at_input_size(arch):
    model = build_model(arch).train()
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    outputs = model(x)
    assert outputs["out"].shape == (2, 11, 64, 96)
    assert outputs["aux"].shape == (2, 11, 64, 96) if arch.get("aux_head") else "aux" not in outputs
    _grads_flow(model, x)
    assert "aux" not in model.eval()(x)


def test_student_sizes_differ_and_unknown_size_is_refused():
    sizes = [
        sum(p.numel() for p in build_model({"name": "student", "size": s}).parameters())
        for s in ("tiny", "small", "medium", "wide")
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    with pytest.raises(ValueError, match="unknown student size"):
        resolve_architecture({"name": "student", "size": "huge"})
    with pytest.raises(ValueError, match="one of 'student', 'lite_student', 'teacher', 'lite_teacher', got 'unet'"):
        resolve_architecture({"name": "unet"})


def test_fused_batchnorm_gives_the_same_output():
    model = build_model({"name": "student", "size": "tiny"})
    model.train()(torch.randn(4, 3, 64, 64))  # move BN statistics off their defaults
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)["out"]
        fused = fuse_conv_bn(model)(x)["out"]
    assert torch.allclose(expected, fused, atol=1e-4)


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    model = build_model({"name": "student", "size": "tiny"}).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, ModelInfo(arch={"name": "student", "size": "tiny"}))
    loaded, info = load_checkpoint(path)
    assert info.arch["stage3_channels"] == 64 and info.input_size == [360, 480]
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], loaded(x)["out"])

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "corrupt.safetensors")
    small_weights = build_model({"name": "student", "size": "small"})
    mismatched = save_checkpoint(
        tmp_path / "mismatch.safetensors", small_weights, ModelInfo(arch={"name": "student", "size": "tiny"})
    )
    with pytest.raises(CheckpointError, match="do not match architecture student"):
        load_checkpoint(mismatched)


@pytest.mark.parametrize("backbone, output_stride", [("resnet18", 8), ("resnet18", 16), ("resnet50", 16)])
def test_teacher_backbone_output_stride(backbone, output_stride):
    teacher = build_model({"name": "teacher", "backbone": backbone, "output_stride": output_stride}).eval()
    with torch.no_grad():
        features = teacher.backbone(torch.randn(1, 3, 64, 96))
    assert features["low"].shape[-2:] == (16, 24)
    assert features["high"].shape[-2:] == (64 // output_stride, 96 // output_stride)


def test_the_shipped_checkpoint_is_the_wide_size():
    """models/README.md and the configs call the shipped network `wide`: the file's full spec must be that preset."""
    shipped = read_info(Path(__file__).resolve().parents[2] / "models" / "student.safetensors").arch
    wide = resolve_architecture({"name": "student", "size": "wide", "aux_head": True})
    assert shipped == {name: list(value) if isinstance(value, tuple) else value for name, value in wide.items()}


def test_depthwise_convolutions_as_shifted_sums_give_the_same_logits():
    net = fuse_conv_bn(tiny_student_with_statistics())
    shifted = shift_depthwise(fuse_conv_bn(tiny_student_with_statistics()))
    replaced = [module for module in shifted.modules() if isinstance(module, ShiftedDepthwise)]
    assert len(replaced) == 4 * (2 + 4) and {module.axis for module in replaced} == {2, 3}
    assert not any(  # the pyramid's full 3x1 / 1x3 convolutions and the decoder's square depthwise one stay
        isinstance(module, torch.nn.Conv2d) and module.kernel_size in ((3, 1), (1, 3)) and module.groups > 1
        for module in shifted.modules()
    )
    with torch.no_grad():
        for size in [(64, 96), (40, 72)]:
            frame = torch.randn(2, 3, *size)
            expected, got = net(frame)["out"], shifted(frame)["out"]
            assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
