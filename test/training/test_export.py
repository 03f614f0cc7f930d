"""road-seg-export: the ONNX and OpenVINO files give the checkpoint's labels and carry its metadata; int8 models are
made from a tiny calibration set and found by the engine, and only for the checkpoint they were made from."""

import json

import onnx
import pytest
import torch
from conftest import tiny_student_with_statistics

from road_seg_ros.core.checkpoint import METADATA_KEY, ModelInfo, load_checkpoint, save_checkpoint
from road_seg_ros.core.engine import SegmentationEngine
from road_seg_ros.core.frames import synthetic_frames
from road_seg_ros.core.openvino_backend import METADATA_KEY as IR_KEY
from road_seg_ros.core.openvino_backend import file_digest, quantized_model_path
from road_seg_ros.core.options import EngineError, EngineOptions
from road_seg_ros.training import export
from road_seg_ros.training.export import MIN_AGREEMENT, label_agreement, main, onnx_predictor
from road_seg_ros.training.quantize import calibration_frames

INPUT_SIZE = (64, 96)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny student with non-trivial BatchNorm statistics, so folding them has to be right."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, tiny_student_with_statistics(), ModelInfo(arch={"name": "student", "size": "tiny"}))


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
    assert label_agreement(onnx_predictor(out, info), model, info, unseen) >= MIN_AGREEMENT["fp32"]


def test_export_of_a_missing_checkpoint_fails_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    assert main(["--format", "onnx", "--checkpoint", str(missing), "--out", str(tmp_path / "x.onnx")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "checkpoint not found" in error and "Traceback" not in error
    assert not (tmp_path / "x.onnx").exists()


def test_export_without_its_runtime_package_fails_in_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    # As on a machine without OpenVINO (the GPU machine, an ARM board): a traceback from the import before this.
    monkeypatch.setitem(export.PACKAGES, ("openvino", "fp32"), ("openvino", "road_seg_ros_no_such_package"))
    out = tmp_path / "student.xml"
    assert main(["--format", "openvino", "--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        "road-seg-export: --format openvino --precision fp32 needs Python packages that are not installed: "
        "road_seg_ros_no_such_package\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_export_needs_a_format(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x.onnx")])
    assert exit_info.value.code == 2


def read_ir(path):
    import openvino

    return openvino.Core().read_model(str(path))


def test_openvino_fp32_export_writes_ir_with_the_metadata(checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny.xml"
    assert main(["--format", "openvino", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--input-size", *map(str, INPUT_SIZE)]) == 0  # fmt: skip
    assert "openvino fp32" in capsys.readouterr().out and out.with_suffix(".bin").is_file()
    network = read_ir(out)
    assert list(network.input(0).get_shape()) == [1, 3, *INPUT_SIZE]
    assert network.get_rt_info([IR_KEY, "checkpoint_sha256"]).astype(str) == file_digest(checkpoint)
    assert json.loads(network.get_rt_info([IR_KEY, "info"]).astype(str))["input_size"] == list(INPUT_SIZE)
    assert not any(op.get_type_name() == "FakeQuantize" for op in network.get_ops())


def test_int8_model_from_a_tiny_calibration_set_runs_in_the_engine(tiny_int8_checkpoint):
    model, info = load_checkpoint(tiny_int8_checkpoint)
    path = quantized_model_path(tiny_int8_checkpoint, info.input_size)
    network = read_ir(path)
    assert any(op.get_type_name() == "FakeQuantize" for op in network.get_ops())  # really quantized
    assert network.get_rt_info([IR_KEY, "checkpoint_sha256"]).astype(str) == file_digest(tiny_int8_checkpoint)
    assert network.get_rt_info([IR_KEY, "calibration"]).astype(str) == "4 CamVid train frames"

    options = EngineOptions(checkpoint=str(tiny_int8_checkpoint), device="cpu", precision="int8", num_threads=1)
    int8 = SegmentationEngine(options)
    assert (int8.backend, int8.precision) == ("openvino", "int8")
    frames = calibration_frames(None, info.input_size, 2)
    assert label_agreement(lambda frame: int8.segment(frame).labels, model, info, frames) >= MIN_AGREEMENT["int8"]


def test_int8_model_of_another_checkpoint_is_refused(tiny_int8_checkpoint, tmp_path):
    """A checkpoint retrained under the same name must not run the old int8 model."""
    model, info = load_checkpoint(tiny_int8_checkpoint)
    int8 = quantized_model_path(tiny_int8_checkpoint, info.input_size)
    for path in (int8, int8.with_suffix(".bin")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    changed = save_checkpoint(tmp_path / tiny_int8_checkpoint.name, model, info)
    with pytest.raises(EngineError, match="was made from another checkpoint .* remake it with: road-seg-export"):
        SegmentationEngine(EngineOptions(checkpoint=str(changed), device="cpu", precision="int8"))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--format", "onnx", "--precision", "int8", "--out", "x.onnx"], "exports fp32 only"),
        (["--format", "onnx"], "needs --out"),
        (["--format", "openvino", "--calibration-frames", "0"], "at least 1"),
    ],
)
def test_bad_export_arguments_are_refused(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
