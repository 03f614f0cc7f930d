"""road-seg-export: the ONNX file gives the checkpoint's labels and carries its metadata."""

import json

import onnx
import pytest
import torch

from road_seg_ros.core.checkpoint import METADATA_KEY, ModelInfo, load_checkpoint, save_checkpoint
from road_seg_ros.core.frames import synthetic_frames
from road_seg_ros.models import build_model
from road_seg_ros.training.export import MIN_AGREEMENT, label_agreement, main

INPUT_SIZE = (64, 96)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny student with non-trivial BatchNorm statistics, so folding them has to be right."""
    torch.manual_seed(0)
    model = build_model({"name": "student", "size": "tiny"})
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model.eval(), ModelInfo(arch={"name": "student", "size": "tiny"}))


def test_export_round_trips(checkpoint, tmp_path, capsys):
    out = tmp_path / "nested" / "tiny.onnx"
    args = [
        "--format",
        "onnx",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--input-size",
        *map(str, INPUT_SIZE),
    ]
    assert main(args) == 0
    assert "round trip" in capsys.readouterr().out

    graph = onnx.load(str(out))
    (input_tensor,) = graph.graph.input
    assert [d.dim_value for d in input_tensor.type.tensor_type.shape.dim] == [1, 3, *INPUT_SIZE]
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    metadata = json.loads({prop.key: prop.value for prop in graph.metadata_props}[METADATA_KEY])
    assert metadata["input_size"] == list(INPUT_SIZE)
    assert metadata["class_names"] == ModelInfo(arch={}).class_names

    model, info = load_checkpoint(checkpoint)
    unseen = synthetic_frames(INPUT_SIZE, count=2, seed=42)
    assert label_agreement(out, model, info, unseen) >= MIN_AGREEMENT


def test_export_of_a_missing_checkpoint_fails_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    assert main(["--format", "onnx", "--checkpoint", str(missing), "--out", str(tmp_path / "x.onnx")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "checkpoint not found" in error and "Traceback" not in error
    assert not (tmp_path / "x.onnx").exists()


def test_export_needs_a_format(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x.onnx")])
    assert exit_info.value.code == 2
