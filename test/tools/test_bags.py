"""Camera bags: CamVid frames written with rosbags read back equal; damaged or unexpected bags get clear errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import camvid_drive_frames
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import StoragePlugin

from road_seg_ros.tools import bags
from road_seg_ros.tools.bags import BagError, CameraBag, write_camera_bag
from road_seg_ros.tools.make_bag import main as make_bag_main

REPO = Path(__file__).resolve().parents[2]
FRAMES = 3


@pytest.fixture(scope="module")
def camvid_frames():
    return camvid_drive_frames("0001TP", FRAMES)


def read_all(path, **kwargs):
    with CameraBag(path, **kwargs) as bag:
        return bag, list(bag.frames())


@pytest.mark.parametrize(
    ("storage", "name", "encoding"),
    [
        ("mcap", "drive.mcap", "rgb8"),
        ("mcap", "drive", "png"),
        ("sqlite3", "drive", "rgb8"),
        ("sqlite3", "drive", "png"),
    ],
)
def test_lossless_bags_read_back_equal(tmp_path, camvid_frames, storage, name, encoding):
    path = tmp_path / name
    assert write_camera_bag(path, camvid_frames, storage=storage, encoding=encoding, rate_hz=5.0) == FRAMES
    assert path.is_file() == name.endswith(".mcap")
    bag, frames = read_all(path)
    assert bag.topic == (bags.IMAGE_TOPIC if encoding == "rgb8" else bags.COMPRESSED_TOPIC)
    assert bag.gt_topic == bags.GROUND_TRUTH_TOPIC
    assert bag.frame_count == FRAMES
    for frame, (rgb, label) in zip(frames, camvid_frames, strict=True):
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_array_equal(frame.ground_truth, label)
    stamps = [frame.stamp_ns for frame in frames]
    assert np.diff(stamps).tolist() == [200_000_000] * (FRAMES - 1)


def test_every_topic_shares_the_frame_stamps_and_frame_id(tmp_path, camvid_frames):
    path = tmp_path / "drive.mcap"
    write_camera_bag(path, camvid_frames, encoding="jpeg")
    stamps = {}
    with AnyReader([path]) as reader:
        for connection, log_time, rawdata in reader.messages():
            message = reader.deserialize(rawdata, connection.msgtype)
            assert message.header.frame_id == bags.FRAME_ID
            assert message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == log_time
            stamps.setdefault(connection.topic, []).append(log_time)
    assert set(stamps) == {bags.COMPRESSED_TOPIC, bags.CAMERA_INFO_TOPIC, bags.GROUND_TRUTH_TOPIC}
    assert stamps[bags.COMPRESSED_TOPIC] == stamps[bags.CAMERA_INFO_TOPIC] == stamps[bags.GROUND_TRUTH_TOPIC]


def test_jpeg_frames_decode_close_to_the_originals(tmp_path, camvid_frames):
    _, frames = read_all(write_and_return(tmp_path / "drive.mcap", camvid_frames, encoding="jpeg"))
    for frame, (rgb, label) in zip(frames, camvid_frames, strict=True):
        assert frame.rgb.shape == rgb.shape
        assert np.abs(frame.rgb.astype(int) - rgb).mean() < 3.0  # quality 90
        np.testing.assert_array_equal(frame.ground_truth, label)


@pytest.mark.parametrize(
    ("encoding", "to_expected"),
    [
        ("bgr8", lambda rgb: rgb),
        ("mono8", lambda rgb: cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)),
    ],
)
def test_bgr8_and_mono8_frames_arrive_as_rgb(tmp_path, camvid_frames, encoding, to_expected):
    _, frames = read_all(write_and_return(tmp_path / "drive", camvid_frames[:1], encoding=encoding))
    np.testing.assert_array_equal(frames[0].rgb, to_expected(camvid_frames[0][0]))


def test_make_bag_cli_writes_the_drive_in_time_order(tmp_path, camvid_frames):
    out = tmp_path / "cli.mcap"
    make_bag_main(
        ["--split", "test", "--drive", "0001TP", "--out", str(out), "--transport", "compressed", "--limit", "2"]
    )
    bag, frames = read_all(out)
    assert bag.topic == bags.COMPRESSED_TOPIC
    assert len(frames) == 2
    for frame, (_, label) in zip(frames, camvid_frames):
        np.testing.assert_array_equal(frame.ground_truth, label)


def test_make_bag_cli_names_the_drives_there(tmp_path, camvid_frames, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_bag_main(["--drive", "Nowhere", "--out", str(tmp_path / "x")])
    assert "0001TP, Seq05VD" in str(exit_info.value.code)


def test_bundled_drive_is_a_small_compressed_mcap_with_ground_truth():
    path = bags.bundled_bag()
    assert path == REPO / "bags" / "camvid_seq05vd.mcap"
    assert path.stat().st_size <= 10 * 2**20
    bag, frames = read_all(path)
    assert bag.topic == bags.COMPRESSED_TOPIC
    assert bag.gt_topic == bags.GROUND_TRUTH_TOPIC
    assert len(frames) == bag.frame_count > 100
    assert all(frame.ground_truth is not None and frame.rgb.shape == (360, 480, 3) for frame in frames)
    assert np.all(np.diff([frame.stamp_ns for frame in frames]) > 0)


# --------------------------------------------------------------------------- errors


def write_and_return(path, frames, **kwargs):
    write_camera_bag(path, frames, **kwargs)
    return path


def raw_bag(path, messages, topic="/camera/image_raw", msgtype=bags.IMAGE_TYPE):
    """A bag with exactly ``messages`` (rosbags message objects) on ``topic``."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, msgtype, typestore=bags.TYPESTORE)
        for stamp, message in enumerate(messages, start=1):
            writer.write(connection, stamp, bags.TYPESTORE.serialize_cdr(message, msgtype))
    return path


def image(encoding, channels, dtype=np.uint8, height=4, width=6, step=None):
    data = np.zeros(height * width * channels, dtype=dtype).view(np.uint8)
    return bags.TYPESTORE.types[bags.IMAGE_TYPE](
        header=bags._header(1),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step if step is not None else width * channels * np.dtype(dtype).itemsize,
        data=data,
    )


def test_missing_bag(tmp_path):
    with pytest.raises(BagError, match="no bag at"):
        CameraBag(tmp_path / "absent.mcap")


@pytest.mark.parametrize("content", [b"", b"not a bag at all", b"\x89MCAP0\r\n" + b"\x00" * 64])
def test_garbage_file_is_reported_corrupt(tmp_path, content):
    path = tmp_path / "broken.mcap"
    path.write_bytes(content)
    with pytest.raises(BagError, match="corrupt or not a rosbag2"):
        CameraBag(path)


def test_truncated_mcap_is_reported_corrupt(tmp_path, camvid_frames):
    path = write_and_return(tmp_path / "drive.mcap", camvid_frames)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BagError, match="corrupt"):
        read_all(path)


def test_damaged_sqlite3_bag_is_reported_corrupt(tmp_path, camvid_frames):
    path = write_and_return(tmp_path / "drive", camvid_frames, storage="sqlite3")
    database = next(path.glob("*.db3"))
    damaged = bytearray(database.read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 4096] = b"\xff" * 4096
    database.write_bytes(bytes(damaged))
    with pytest.raises(BagError, match="corrupt"):
        read_all(path)


def test_missing_topic_lists_the_image_topics_there(tmp_path, camvid_frames):
    path = write_and_return(tmp_path / "drive", camvid_frames, encoding="png")
    with pytest.raises(BagError) as error:
        CameraBag(path, topic="/front/image")
    message = str(error.value)
    assert "/front/image" in message
    assert "/camera/image_raw/compressed (CompressedImage)" in message
    assert "/camera/ground_truth (Image)" in message
    with pytest.raises(BagError, match="ground-truth topic /labels is not"):
        CameraBag(path, gt_topic="/labels")


def test_bag_without_image_topics_names_the_topics_it_has(tmp_path):
    path = tmp_path / "imu"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/imu", "sensor_msgs/msg/Imu", typestore=bags.TYPESTORE)
    with pytest.raises(BagError, match=r"no camera image topic; topics there: /imu \(none of them images\)"):
        CameraBag(path)


def test_image_topic_without_frames(tmp_path):
    path = raw_bag(tmp_path / "empty", [])
    with pytest.raises(BagError, match="has no frames on /camera/image_raw"):
        CameraBag(path)


@pytest.mark.parametrize(("encoding", "channels", "dtype"), [("32FC1", 1, np.float32), ("yuv422", 2, np.uint8)])
def test_unsupported_encoding(tmp_path, encoding, channels, dtype):
    path = raw_bag(tmp_path / "depth", [image(encoding, channels, dtype)])
    with pytest.raises(BagError, match=f"unsupported encoding '{encoding}'"):
        CameraBag(path)


def test_bags_read_every_encoding_the_node_reads(tmp_path):
    """One codec for node and bags: a mono16 frame with padded rows reads as its high bytes, in RGB."""
    frame = image("mono16", 1, np.uint16, step=6 * 2 + 4)
    pixels = np.arange(4 * 8, dtype=np.uint16).reshape(4, 8) * 2000  # 6 pixels and 2 of padding per row
    frame.data = pixels.view(np.uint8).ravel()
    _, frames = read_all(raw_bag(tmp_path / "mono16", [frame]))
    expected = (pixels[:, :6] >> 8).astype(np.uint8)
    np.testing.assert_array_equal(frames[0].rgb, np.repeat(expected[..., None], 3, axis=2))


def test_unsupported_compressed_format(tmp_path):
    message = bags.TYPESTORE.types[bags.COMPRESSED_TYPE](
        header=bags._header(1), format="h264", data=np.ones(16, np.uint8)
    )
    path = raw_bag(tmp_path / "video", [message], "/camera/image_raw/compressed", bags.COMPRESSED_TYPE)
    with pytest.raises(BagError, match="unsupported compressed format 'h264'"):
        CameraBag(path)


def test_frame_shorter_than_its_size_fields(tmp_path):
    short = image("rgb8", 3)
    short.data = short.data[:-5]
    with pytest.raises(BagError, match=r"rgb8 image 6x4 has 67 B of data, shorter than step\*height"):
        CameraBag(raw_bag(tmp_path / "short", [short]))


def test_ros1_bag_is_refused_with_the_conversion_to_run(tmp_path):
    path = tmp_path / "drive.bag"
    path.write_bytes(b"#ROSBAG V2.0\n")
    with pytest.raises(BagError, match="is a ROS 1 bag; convert it first: rosbags-convert"):
        CameraBag(path)


def test_make_bag_splits_a_drive_into_unlabeled_odd_and_labeled_even_frames(tmp_path):
    odd, even = tmp_path / "odd.mcap", tmp_path / "even.mcap"
    common = ["--split", "test", "--drive", "0001TP", "--every", "2", "--limit", "2"]
    make_bag_main([*common, "--start", "1", "--no-ground-truth", "--out", str(odd)])
    make_bag_main([*common, "--start", "0", "--out", str(even)])
    expected = camvid_drive_frames("0001TP", 4)
    odd_bag, odd_frames = read_all(odd)
    _, even_frames = read_all(even)
    assert odd_bag.gt_topic is None and all(frame.ground_truth is None for frame in odd_frames)
    for frames, offset in ((odd_frames, 1), (even_frames, 0)):
        for frame, (rgb, _) in zip(frames, expected[offset::2], strict=True):
            np.testing.assert_array_equal(frame.rgb, rgb)
    for frame, (_, label) in zip(even_frames, expected[0::2], strict=True):
        np.testing.assert_array_equal(frame.ground_truth, label)
    with pytest.raises(SystemExit, match="leaves no frame"):
        make_bag_main(["--drive", "0001TP", "--start", "5000", "--out", str(tmp_path / "none.mcap")])


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), float("inf")])
def test_bag_rate_must_be_a_positive_number(tmp_path, rate):
    with pytest.raises(BagError, match="rate must be a positive number"):
        write_camera_bag(tmp_path / "drive", [(np.zeros((4, 6, 3), np.uint8), None)], rate_hz=rate)


def test_make_bag_refuses_a_limit_below_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_bag_main(["--drive", "Seq05VD", "--out", "x", "--limit", "0"])
    assert exit_info.value.code == 2 and "argument --limit: must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["drive", "drive.mcap"])
def test_a_bag_whose_frames_fail_midway_leaves_nothing_and_can_be_written_again(tmp_path, name):
    rgb = np.zeros((24, 32, 3), np.uint8)

    def failing():
        yield rgb, None
        raise OSError("frame 2 could not be read")

    with pytest.raises(OSError, match="frame 2"):
        write_camera_bag(tmp_path / name, failing())
    assert sorted(tmp_path.iterdir()) == []  # no half-written bag, no scratch folder
    assert write_camera_bag(tmp_path / name, [(rgb, None)]) == 1
    assert len(read_all(tmp_path / name)[1]) == 1


def test_a_bag_that_cannot_be_created_is_refused_in_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BagError, match="cannot write bag .*file/drive.mcap"):
        write_camera_bag(tmp_path / "file" / "drive.mcap", [])
