"""Bag replay through the live node over real ROS 2, and offline: outputs matched by stamp, scored, reported."""

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import camvid_drive_frames, cpu_engine
from hostile import BOMBS, damaged_compressed, jpeg_bomb
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer

from road_seg_ros.core.checkpoint import ModelInfo, save_checkpoint
from road_seg_ros.core.resources import PARAMS_FILE_NAME, find_shipped
from road_seg_ros.models import build_model
from road_seg_ros.ros.client import NodeProcess
from road_seg_ros.tools import bags
from road_seg_ros.tools.bags import write_camera_bag
from road_seg_ros.tools.live_replay import OUTPUT_TOPICS, node_remaps
from road_seg_ros.tools.replay import ReplayError, main, run_replay
from road_seg_ros.tools.replay_report import OVERLAY_ALPHA
from road_seg_ros.training.evaluate import evaluate_frames

FRAMES = 3
REPORT_KEYS = {"frames_sent", "frames_received", "frames_dropped", "fps", "latency_ms", "miou", "per_class_iou"}


@pytest.fixture(scope="module")
def camvid_frames():
    return camvid_drive_frames("Seq05VD", FRAMES)


@pytest.fixture(scope="module")
def node_parameters(tiny_checkpoint):
    # One thread: the node and the offline engine then compute identically, and fast on a busy CPU.
    return {"model_path": str(tiny_checkpoint), "device": "cpu", "num_threads": 1}


@pytest.fixture(scope="module")
def make_bag(tmp_path_factory, camvid_frames):
    def make(encoding, ground_truth=True):
        path = tmp_path_factory.mktemp(encoding) / "drive"
        frames = [(rgb, label if ground_truth else None) for rgb, label in camvid_frames]
        write_camera_bag(path, frames, encoding=encoding, rate_hz=10.0)
        return path

    return make


def replay(bag, out_dir, **kwargs):
    """run_replay collecting each output's labels by stamp."""
    labels = {}
    report = run_replay(bag, out_dir, on_output=lambda stamp, pixels: labels.setdefault(stamp, pixels), **kwargs)
    return report, labels


def stamps_of(bag):
    with bags.CameraBag(bag) as camera_bag:
        return [frame.stamp_ns for frame in camera_bag.frames()]


@pytest.fixture(scope="module")
def live_runs(make_bag, node_parameters, tmp_path_factory):
    """rgb8, bgr8 and mono8 (no ground truth) bags replayed through one running node: (bag, out, report, labels)."""
    transport, remaps = node_remaps(bags.IMAGE_TOPIC, bags.IMAGE_TYPE)
    folder = tmp_path_factory.mktemp("live")
    params_file = find_shipped("config", PARAMS_FILE_NAME)
    node = NodeProcess(folder / "node.log", params_file, {**node_parameters, **transport}, remaps=remaps)
    try:
        runs = {}
        for encoding, ground_truth in (("rgb8", True), ("bgr8", True), ("mono8", False)):
            bag = make_bag(encoding, ground_truth)
            runs[encoding] = (
                bag,
                folder / encoding,
                *replay(bag, folder / encoding, parameters=node_parameters, connect=True),
            )
        return runs
    finally:
        node.stop()


def test_live_replay_gives_one_output_per_frame_scored_like_the_evaluator(live_runs, camvid_frames, tiny_checkpoint):
    bag, out_dir, report, labels = live_runs["rgb8"]
    assert (report["frames_sent"], report["frames_received"], report["frames_dropped"]) == (FRAMES, FRAMES, 0)
    assert sorted(labels) == stamps_of(bag)

    engine = cpu_engine(tiny_checkpoint)  # the node's defaults: the evaluator must run what the node runs
    images, truths = zip(*camvid_frames)
    confusion, _ = evaluate_frames(lambda rgb: engine.segment(rgb).labels, images, truths)
    expected = confusion.summary(engine.class_names)
    assert report["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert report["per_class_iou"] == pytest.approx(expected["per_class_iou"], abs=1e-6)

    written = json.loads((out_dir / "report.json").read_text())
    assert REPORT_KEYS <= set(written)
    assert 0 < written["latency_ms"]["p50"] <= written["latency_ms"]["p95"] <= written["latency_ms"]["max"]
    assert written["fps"] > 0
    assert {"inference", "total"} <= set(written["node_timings_ms"])
    markdown = (out_dir / "report.md").read_text()
    assert "| live | 3/3 (0 dropped) |" in markdown
    assert f"**{report['miou']:.2f}**" in markdown
    for name in ("latency_hist.png", "per_class_iou.png"):
        assert cv2.imread(str(out_dir / name)) is not None
    # Three frames: two tiles to a row, each the prediction beside the ground truth at half size.
    assert cv2.imread(str(out_dir / "mosaic.png")).shape == (2 * 180, 2 * 480, 3)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_offline_mode_agrees_with_the_live_node_on_labels(live_runs, node_parameters, tmp_path, encoding):
    bag, _, live_report, live_labels = live_runs[encoding]
    assert live_report["frames_received"] == FRAMES
    report, labels = replay(bag, tmp_path, parameters=node_parameters, offline=True)
    assert report["mode"] == "offline"
    assert sorted(labels) == sorted(live_labels)
    for stamp, pixels in labels.items():
        np.testing.assert_array_equal(pixels, live_labels[stamp])
    assert report["miou"] == live_report["miou"]


def test_bag_without_ground_truth_reports_all_but_iou(live_runs):
    _, out_dir, report, _ = live_runs["mono8"]
    assert report["miou"] is None and report["per_class_iou"] is None
    assert report["frames_received"] == FRAMES and report["fps"] > 0 and report["latency_ms"]["p50"] > 0
    assert "no ground truth" in (out_dir / "report.md").read_text()
    assert not (out_dir / "per_class_iou.png").exists()
    assert cv2.imread(str(out_dir / "latency_hist.png")) is not None
    assert cv2.imread(str(out_dir / "mosaic.png")).shape == (2 * 180, 2 * 240, 3)  # predictions only


def test_cli_starts_the_node_replays_a_jpeg_bag_at_a_rate_and_records_its_outputs(
    make_bag, tiny_checkpoint, tmp_path, capsys
):
    params = tmp_path / "params.yaml"
    params.write_text(
        f"road_seg:\n  ros__parameters:\n    model_path: {tiny_checkpoint}\n    device: cpu\n    num_threads: 1\n"
    )
    record = tmp_path / "replayed.mcap"
    bag = make_bag("jpeg")
    main(
        [str(bag), "--out", str(tmp_path / "out"), "--params-file", str(params), "--rate", "2", "--record", str(record)]
    )
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames_sent"] == FRAMES
    assert report["frames_received"] + report["frames_dropped"] == FRAMES
    assert report["frames_received"] >= 1
    assert f"| live | {report['frames_received']}/3 ({report['frames_dropped']} dropped) |" in printed
    assert "ready" in (tmp_path / "out" / "node.log").read_text()
    with AnyReader([record]) as reader:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
    assert counts[bags.COMPRESSED_TOPIC] == FRAMES
    for name in ("label", "color", "overlay", "timing"):
        assert counts[OUTPUT_TOPICS[name]] == report["frames_received"]


def test_node_that_cannot_start_is_a_clear_error(make_bag, tmp_path):
    with pytest.raises(ReplayError, match=r"road_seg_node exited with code 1: .*overlay_alpha"):
        run_replay(make_bag("png"), tmp_path, parameters={"overlay_alpha": 5.0})


# --------------------------------------------------------------------------- malformed bags on the CLI


def cli_error(*argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("road-seg-replay: ")  # exit status 1
    assert "\n" not in message
    return message


def test_missing_topic_lists_the_image_topics(make_bag, tmp_path):
    message = cli_error(make_bag("rgb8"), "--offline", "--topic", "/front/image", "--out", tmp_path)
    assert "/front/image" in message and "/camera/image_raw (Image)" in message


def test_unsupported_encoding_no_frames_and_corrupt_files(tmp_path):
    depth = tmp_path / "depth"
    with bags.BagRecorder(depth) as recorder:
        message = bags.TYPESTORE.types[bags.IMAGE_TYPE](
            header=bags._header(1),
            height=2,
            width=2,
            encoding="32FC1",
            is_bigendian=0,
            step=8,
            data=np.zeros(16, np.uint8),
        )
        recorder.write(
            bags.IMAGE_TOPIC, bags.IMAGE_TYPE, 1, bytes(bags.TYPESTORE.serialize_cdr(message, bags.IMAGE_TYPE))
        )
    assert "unsupported encoding '32FC1'" in cli_error(depth, "--offline")

    empty = tmp_path / "empty"
    with Writer(empty, version=9) as writer:
        writer.add_connection(bags.IMAGE_TOPIC, bags.IMAGE_TYPE, typestore=bags.TYPESTORE)
    assert "no frames on /camera/image_raw" in cli_error(empty)

    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    assert "corrupt" in cli_error(corrupt)


def compressed_bag(path, frames: list[bytes]):
    """A bag of CompressedImage frames holding exactly ``frames`` (stamps 1, 2, ...), without ground truth."""
    with bags.BagRecorder(path) as recorder:
        for stamp, data in enumerate(frames, start=1):
            message = bags.TYPESTORE.types[bags.COMPRESSED_TYPE](
                header=bags._header(stamp), format="jpeg", data=np.frombuffer(data, np.uint8)
            )
            raw = bytes(bags.TYPESTORE.serialize_cdr(message, bags.COMPRESSED_TYPE))
            recorder.write(bags.COMPRESSED_TOPIC, bags.COMPRESSED_TYPE, stamp, raw)
    return path


def good_jpeg(seed: int) -> bytes:
    rgb = cv2.resize(np.random.default_rng(seed).integers(0, 256, (6, 8, 3), np.uint8), (128, 96))
    return cv2.imencode(".jpg", rgb)[1].tobytes()


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_bomb_frame_ends_offline_replay_in_one_line_naming_it(tmp_path, tiny_checkpoint, bomb):
    """Replay stops at a frame the codec refuses: a report would silently cover fewer frames than the drive."""
    data, (width, height) = BOMBS[bomb][0](), BOMBS[bomb][1]
    bag = compressed_bag(tmp_path / "drive", [good_jpeg(0), good_jpeg(1), data, good_jpeg(2)])
    message = cli_error(bag, "--offline", "--checkpoint", tiny_checkpoint, "--out", tmp_path / "out")
    assert f"{width}x{height}" in message and "over the codec's ceiling" in message and "at stamp 3" in message


def test_a_report_folder_that_cannot_be_made_is_refused_before_the_replay(tmp_path, tiny_checkpoint):
    bag = compressed_bag(tmp_path / "drive", [good_jpeg(0)])
    (tmp_path / "taken").write_text("a file, not a folder")
    message = cli_error(bag, "--offline", "--checkpoint", tiny_checkpoint, "--out", tmp_path / "taken")
    assert message == f"road-seg-replay: cannot write the report to {tmp_path / 'taken'}: File exists"


def test_a_damaged_first_frame_is_refused_when_the_bag_opens(tmp_path):
    bag = compressed_bag(tmp_path / "drive", [damaged_compressed()["jpeg_truncated_in_scan"][0], good_jpeg(0)])
    assert "corrupt jpeg" in cli_error(bag, "--offline", "--out", tmp_path / "out")


def test_a_bomb_frame_ends_live_replay_in_one_line_and_stops_the_node(tmp_path, node_parameters):
    bag = compressed_bag(tmp_path / "drive", [good_jpeg(0), good_jpeg(1), jpeg_bomb(30000, 30000), good_jpeg(2)])
    argv = [bag, "--out", tmp_path / "out", "--device", "cpu", "--checkpoint", node_parameters["model_path"]]
    message = cli_error(*argv)
    assert "jpeg 30000x30000" in message and "at stamp 3" in message
    node_log = (tmp_path / "out" / "node.log").read_text()
    assert "Traceback" not in node_log


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--rate", "nan"], "argument --rate: must be a positive number, got nan"),
        (["--rate", "0"], "argument --rate: must be a positive number"),
        (["--timeout", "nan"], "argument --timeout: must be a positive number, got nan"),
        (["--timeout", "-1"], "argument --timeout: must be a positive number"),
        (["--timeout", "inf"], "argument --timeout: must be a positive number"),
    ],
)
def test_pacing_arguments_must_be_positive_numbers(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_a_model_with_its_own_classes_is_scored_and_coloured_with_them(tmp_path):
    """Three classes named and coloured by the checkpoint: the report's classes and the mosaic's colours are its."""
    torch.manual_seed(0)
    arch = {"name": "student", "size": "tiny", "num_classes": 3}
    names, colors = ["lane", "kerb", "other"], [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    info = ModelInfo(arch=arch, class_names=names, class_colors=colors, input_size=[96, 128])
    checkpoint = save_checkpoint(tmp_path / "three.safetensors", build_model(arch).eval(), info)
    truth = np.repeat(np.arange(3, dtype=np.uint8), [32, 48, 48])[np.newaxis].repeat(96, axis=0)  # three bands
    bag = tmp_path / "drive"
    write_camera_bag(bag, [(np.zeros((96, 128, 3), np.uint8), truth)] * 2)  # black: the overlay is the colours
    report, _ = replay(bag, tmp_path / "out", offline=True, parameters={"model_path": str(checkpoint)})
    assert sorted(report["per_class_iou"]) == sorted(names)
    mosaic = cv2.cvtColor(cv2.imread(report["files"]["mosaic"]), cv2.COLOR_BGR2RGB)
    shown = {tuple(pixel) for pixel in mosaic.reshape(-1, 3)}
    assert all(tuple(round(OVERLAY_ALPHA * value) for value in color) in shown for color in colors), sorted(shown)
