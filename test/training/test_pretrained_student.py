"""A student on the ImageNet EfficientNet-Lite0 encoder goes the whole way: it trains from the pinned weights,
saves one checkpoint that needs no weight package, exports to ONNX and OpenVINO and answers in the node."""

import numpy as np
import pytest
import torch
from conftest import NODE_EXECUTABLE, camvid_drive_frames, cpu_engine, exchange
from safetensors.torch import load_file
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from road_seg_ros.core.checkpoint import load_checkpoint, read_info
from road_seg_ros.core.codec import raw_to_array
from road_seg_ros.core.frames import synthetic_frames
from road_seg_ros.models import pretrained
from road_seg_ros.models.efficientnet import EfficientNetLite
from road_seg_ros.models.pretrained import WeightsFile, load_imagenet_weights
from road_seg_ros.ros.image_conversion import rgb_to_image
from road_seg_ros.training import export
from road_seg_ros.training.config import ConfigError, checked_config
from road_seg_ros.training.train import main

LITE = ["--set", "limit=4", "--set", "val_split=train", "--set", "val_limit=2", "--set", "crop_size=[128,160]",
        "--set", "scale_range=[1.0,1.0]", "--set", "workers=0", "--set", "warmup_epochs=0",
        "--set", "arch={name: lite_student}", "--set", "encoder_lr_factor=0.1"]  # fmt: skip


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("lite_student")
    main(["student", "--out", str(run), "--epochs", "1", "--batch-size", "2", *LITE])
    return run


def test_training_starts_from_the_imagenet_encoder_and_saves_one_checkpoint(lite_run):
    info = read_info(lite_run / "best.safetensors")
    assert info.arch["name"] == "lite_student" and info.arch["encoder"] == "efficientnet_lite0"
    assert info.mean == info.std == [0.5, 0.5, 0.5]  # the encoder's own input scaling
    imagenet = EfficientNetLite("efficientnet_lite0")
    load_imagenet_weights(imagenet)
    trained = load_file(lite_run / "best.safetensors")
    # one epoch at a tenth of the learning rate moves the encoder a little from its ImageNet weights, not far
    stem, imagenet_stem = trained["encoder.stem.0.weight"], imagenet.stem[0].weight.detach()
    assert not torch.equal(stem, imagenet_stem)
    assert torch.nn.functional.cosine_similarity(stem.flatten(), imagenet_stem.flatten(), dim=0) > 0.95


def test_a_trained_checkpoint_loads_without_the_weight_packages(lite_run, monkeypatch):
    absent = WeightsFile("road_seg_ros_no_such_weights", "0.1.0", "x.pth", "0" * 64)
    monkeypatch.setitem(pretrained.IMAGENET_WEIGHTS, "efficientnet_lite0", absent)
    model, info = load_checkpoint(lite_run / "best.safetensors")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96))["out"].shape == (1, 11, 64, 96)


def test_training_without_the_weight_package_stops_in_one_line(tmp_path, monkeypatch):
    absent = WeightsFile("road_seg_ros_no_such_weights", "0.1.0", "x.pth", "0" * 64)
    monkeypatch.setitem(pretrained.IMAGENET_WEIGHTS, "efficientnet_lite0", absent)
    with pytest.raises(SystemExit) as exit_info:
        main(["student", "--out", str(tmp_path / "run"), "--epochs", "1", *LITE])
    reason = str(exit_info.value.code)
    assert "road-seg-ros-no-such-weights==0.1.0" in reason and "\n" not in reason


@pytest.mark.parametrize("fmt, out", [("onnx", "lite.onnx"), ("openvino", "lite.xml")])
def test_export_round_trips(lite_run, tmp_path, capsys, fmt, out):
    argv = ["--format", fmt, "--checkpoint", str(lite_run / "best.safetensors"), "--out", str(tmp_path / out),
            "--input-size", "96", "128"]  # fmt: skip
    assert export.main(argv) == 0
    assert "round trip" in capsys.readouterr().out


def test_openvino_labels_equal_pytorch_on_a_camvid_frame(lite_run):
    (rgb, _), *_ = camvid_drive_frames("0001TP", 1)
    checkpoint = lite_run / "best.safetensors"
    reference = cpu_engine(checkpoint, backend="torch", precision="fp32").segment(rgb).labels
    labels = cpu_engine(checkpoint, backend="openvino", precision="fp32").segment(rgb).labels
    assert np.mean(labels == reference) >= 0.999


def test_the_node_answers_with_the_engine_labels(lite_run, start_node, ros):
    checkpoint = lite_run / "best.safetensors"
    node = start_node("/lite", model_path=checkpoint, device="cpu", num_threads=1, min_fps=0.0)
    assert NODE_EXECUTABLE.is_file()
    labels_inbox = ros.inbox(Image, node.topic("label"))
    publisher = ros.publisher(Image, node.topic("../image"))
    (rgb,) = synthetic_frames((120, 160), count=1, seed=4)
    msg = rgb_to_image(rgb, Header(frame_id="lite_camera"))
    reply = exchange(publisher, msg, labels_inbox, lambda m: m.header.frame_id == "lite_camera")
    labels = raw_to_array(reply)
    assert labels.shape == (120, 160)
    assert np.array_equal(labels, cpu_engine(checkpoint).segment(rgb).labels)


@pytest.mark.parametrize("role, arch", [("student", "lite_teacher"), ("teacher", "student")])
def test_a_role_refuses_the_other_role_s_network(role, arch):
    with pytest.raises(ConfigError, match=f"a {role} is one of"):
        checked_config({"arch": {"name": arch}}, role)
