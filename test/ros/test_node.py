"""road_seg_node over real DDS: frames published from this process to the node's process come back.

One raw-input and one compressed-input node serve the whole module (tiny
checkpoint, CPU); start-up failures and signals get short-lived nodes of their own.
"""

import array
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
import yaml
from camera_process import road_frame
from conftest import (
    DIAGNOSTICS_QOS,
    NODE_EXECUTABLE,
    PARAMS_FILE,
    REPO_ROOT,
    cpu_engine,
    diagnostic_values,
    exchange,
    injected_node,
)
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from road_seg_ros.core import codec
from road_seg_ros.core.codec import raw_to_array
from road_seg_ros.ros.image_conversion import array_to_image, rgb_to_compressed, rgb_to_image
from road_seg_ros.ros.params import PARAMETERS

TIMING_KEYS = {"decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "publish_ms", "total_ms", "age_ms"}
NODE_PARAMS = {"device": "cpu", "num_threads": 1, "min_fps": 0.0}
BURST = 12
FRAME_COUNTS = ("frames_in", "frames_out", "frames_dropped", "frames_rejected", "frames_idle")  # in = the rest


def stamped(frame_id: str, sec: int = 1_700_000_000, nanosec: int = 123_456_789) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def same_header(header: Header):
    return lambda msg: msg.header.frame_id == header.frame_id and msg.header.stamp == header.stamp


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return cpu_engine(tiny_checkpoint)  # as the node runs it with NODE_PARAMS: bit-identical labels


@pytest.fixture(scope="module")
def raw_node(start_node, tiny_checkpoint):
    return start_node("/raw", model_path=tiny_checkpoint, **NODE_PARAMS)


@pytest.fixture(scope="module")
def compressed_node(start_node, tiny_checkpoint):
    return start_node("/compressed", model_path=tiny_checkpoint, input_transport="compressed", **NODE_PARAMS)


@pytest.fixture(scope="module")
def raw(ros, raw_node):
    """Publishers into and inboxes on every output of the raw node."""
    return _connect(ros, raw_node, Image, "../image")


@pytest.fixture(scope="module")
def compressed(ros, compressed_node):
    return _connect(ros, compressed_node, CompressedImage, "../image/compressed")


def _connect(ros, node, msg_type, input_topic, input_qos=qos_profile_sensor_data):
    ends = {name: ros.inbox(Image, node.topic(name)) for name in ("label", "color", "overlay")}
    ends["timing"] = ros.inbox(DiagnosticArray, node.topic("timing"))
    ends["diagnostics"] = ros.inbox(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
    ends["input"] = ros.publisher(msg_type, node.topic(input_topic), input_qos)
    ends["node"] = node
    return ends


def labels_for(ends, msg) -> np.ndarray:
    """Sends ``msg`` until the node answers it on every output; returns the labels."""
    status = f"{ends['node'].namespace}/road_seg: frame timing"

    def all_outputs(reply):
        return same_header(msg.header)(reply) and diagnostic_values(reply, status)["outputs"] == "color,label,overlay"

    exchange(ends["input"], msg, ends["timing"], all_outputs)
    return raw_to_array(ends["label"].wait_for(same_header(msg.header), timeout=10.0))


def set_parameter(ros, node, name, value):
    kinds = {float: ParameterType.PARAMETER_DOUBLE, int: ParameterType.PARAMETER_INTEGER}
    kind = kinds.get(type(value), ParameterType.PARAMETER_STRING)
    field = {float: "double_value", int: "integer_value"}.get(type(value), "string_value")
    request = SetParameters.Request(
        parameters=[Parameter(name=name, value=ParameterValue(type=kind, **{field: value}))]
    )
    return ros.call(SetParameters, f"{node.namespace}/road_seg/set_parameters", request).results[0]


def counters_after(ends, condition=lambda values: True, timeout=90.0) -> dict:
    """The node's next /diagnostics values that satisfy ``condition``."""
    node, inbox = ends["node"], ends["diagnostics"]
    since = inbox.mark()
    try:
        found = inbox.wait_for(
            lambda msg: (values := diagnostic_values(msg, node.status_name)) is not None and condition(values),
            timeout,
            since=since,
        )
    except AssertionError as error:  # say what did come: no status at all, or counts that never matched
        seen = [values for msg in inbox.since(since) if (values := diagnostic_values(msg, node.status_name))]
        last = seen[-1] if seen else None
        raise AssertionError(f"{error}: {len(seen)} statuses, the last {last}; node log:\n{node.log_tail()}") from None
    return diagnostic_values(found, node.status_name)


def test_every_output_comes_back_with_the_input_header(raw, engine):
    rgb = road_frame(120, 160, seed=1)
    msg = rgb_to_image(rgb, stamped("camera_optical"))
    labels = labels_for(raw, msg)  # only returns once every output was published for msg
    color = raw["color"].wait_for(same_header(msg.header))
    overlay = raw["overlay"].wait_for(same_header(msg.header))
    timing = raw["timing"].wait_for(same_header(msg.header))

    assert labels.shape == (120, 160) and len(np.unique(labels)) > 1  # several classes: equality means something
    assert (color.encoding, color.height, color.width) == ("rgb8", 120, 160)
    assert np.array_equal(raw_to_array(color), engine.colorize(labels))
    assert np.array_equal(raw_to_array(overlay), engine.overlay(rgb, labels, 0.5))
    values = diagnostic_values(timing, "/raw/road_seg: frame timing")
    assert TIMING_KEYS <= values.keys()
    assert all(float(values[key]) >= 0.0 for key in TIMING_KEYS)
    assert set(values["outputs"].split(",")) == {"label", "color", "overlay"}


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb8_padded"])
def test_labels_equal_the_engine_for_each_encoding(raw, engine, encoding):
    rgb = road_frame(90, 120, seed=2)
    header = stamped(f"encoding_{encoding}")
    if encoding == "mono8":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        msg, rgb = array_to_image(gray, "mono8", header), np.repeat(gray[..., None], 3, axis=2)
    elif encoding in ("rgba8", "bgra8"):
        channels = rgb if encoding == "rgba8" else rgb[..., ::-1]
        msg = array_to_image(np.dstack([channels, np.full(rgb.shape[:2], 77, np.uint8)]), encoding, header)
    elif encoding == "rgb8_padded":
        padded = np.zeros((90, 120 * 3 + 8), np.uint8)  # 8 bytes of row padding after each row
        padded[:, : 120 * 3] = rgb.reshape(90, -1)
        msg = Image(header=header, height=90, width=120, encoding="rgb8", step=padded.shape[1])
        msg.data = array.array("B", padded.tobytes())
    else:
        msg = rgb_to_image(rgb, header, encoding=encoding)
    assert np.array_equal(labels_for(raw, msg), engine.segment(rgb).labels)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_input_gives_the_engine_labels(compressed, engine, fmt):
    msg = rgb_to_compressed(road_frame(90, 120, seed=3), stamped(f"compressed_{fmt}"), fmt=fmt)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    labels = labels_for(compressed, msg)
    assert np.array_equal(labels, engine.segment(decoded).labels)
    assert compressed["overlay"].wait_for(same_header(msg.header)).width == 120


def _unsupported_encoding():
    msg = rgb_to_image(road_frame(8, 8))
    msg.encoding = "yuv_martian"
    return msg


def _short_data():
    msg = rgb_to_image(road_frame(40, 40))
    msg.data = msg.data[: 40 * 40 * 3 - 100]
    return msg


def _zero_size():
    return Image(height=0, width=640, encoding="rgb8", step=640 * 3)


def _corrupt_jpeg():
    msg = rgb_to_compressed(road_frame(40, 40), fmt="jpeg")
    msg.data = msg.data[:4] + array.array("B", bytes(range(256)) * 4)
    return msg


BAD_INPUTS = {
    "unsupported_encoding": ("raw", _unsupported_encoding),
    "short_data": ("raw", _short_data),
    "zero_size": ("raw", _zero_size),
    "corrupt_compressed": ("compressed", _corrupt_jpeg),
}


@pytest.mark.parametrize("reason", BAD_INPUTS)
def test_bad_input_is_counted_and_the_next_frame_answered(request, engine, reason):
    node_name, make_bad = BAD_INPUTS[reason]
    ends = request.getfixturevalue(node_name)
    _bad_frame_is_counted(ends, make_bad(), reason)
    good = road_frame(60, 80, seed=4)
    header = stamped(f"after_{reason}")
    msg = rgb_to_compressed(good, header, fmt="png") if node_name == "compressed" else rgb_to_image(good, header)
    assert np.array_equal(labels_for(ends, msg), engine.segment(good).labels)
    assert ends["node"].process.poll() is None


def _bad_frame_is_counted(ends, bad, reason):
    key, status = f"rejected_{reason}", ends["node"].status_name
    before = int(counters_after(ends)[key])
    counted = exchange(
        ends["input"],
        bad,
        ends["diagnostics"],
        lambda msg: int((diagnostic_values(msg, status) or {key: before})[key]) > before,
        period=1.5,  # /diagnostics comes at 1 Hz
    )
    counters = diagnostic_values(counted, status)
    assert int(counters["frames_rejected"]) >= int(counters[key]) > before


def test_oversize_frames_are_counted_after_lowering_max_input_pixels(ros, raw, engine):
    result = set_parameter(ros, raw["node"], "max_input_pixels", 64 * 64)
    assert result.successful, result.reason
    try:
        _bad_frame_is_counted(raw, rgb_to_image(road_frame(80, 80)), "oversize")
    finally:
        assert set_parameter(ros, raw["node"], "max_input_pixels", 8294400).successful
    good = road_frame(80, 80, seed=5)
    assert np.array_equal(labels_for(raw, rgb_to_image(good, stamped("after_oversize"))), engine.segment(good).labels)


@pytest.mark.parametrize(
    ("name", "value", "reason_words"),
    [
        ("overlay_alpha", 1.5, "out of range"),
        ("min_fps", -1.0, "out of range"),
        ("device", "cpu", "read-only"),
        ("input_transport", "compressed", "read-only"),
    ],
)
def test_set_parameters_refuses_invalid_values_with_a_reason(ros, raw_node, name, value, reason_words):
    result = set_parameter(ros, raw_node, name, value)
    assert not result.successful
    assert reason_words in result.reason.lower()


def test_overlay_alpha_set_while_running_changes_the_overlay(ros, raw, engine):
    assert set_parameter(ros, raw["node"], "overlay_alpha", 0.25).successful
    try:
        rgb = road_frame(60, 80, seed=6)
        msg = rgb_to_image(rgb, stamped("alpha_0.25"))
        labels = labels_for(raw, msg)
        overlay = raw_to_array(raw["overlay"].wait_for(same_header(msg.header)))
        assert np.array_equal(overlay, engine.overlay(rgb, labels, 0.25))
        assert not np.array_equal(overlay, engine.overlay(rgb, labels, 0.5))
    finally:
        assert set_parameter(ros, raw["node"], "overlay_alpha", 0.5).successful


@pytest.fixture(scope="module")
def reliable(ros, start_node):
    """A node whose input queue holds a whole burst, so DDS hands it every frame and only the node can drop.

    It runs the shipped student in PyTorch on one thread (tens of ms a frame): with the tiny model and
    OpenVINO the worker could keep pace with a loaded publisher, and then there would be nothing to drop.
    """
    node = start_node("/reliable", backend="torch", qos_reliability="reliable", qos_depth=BURST, **NODE_PARAMS)
    return _connect(ros, node, Image, "../image", QoSProfile(depth=BURST, reliability=ReliabilityPolicy.RELIABLE))


def test_a_burst_drops_stale_frames_and_answers_the_newest(reliable):
    warm_up = rgb_to_image(road_frame(120, 160), stamped("warm_up"))
    exchange(reliable["input"], warm_up, reliable["label"], same_header(warm_up.header))  # matched both ways now
    before = counters_after(reliable)
    # Each frame keeps the worker busy for tens of milliseconds, far longer than receiving one takes. 480x640:
    # the whole burst (11 MiB) fits the sender's 32 MiB shared-memory segment; a burst of 1080p frames (66 MiB)
    # overran it: Fast DDS then overwrites samples in flight and has to resend them, the likeliest reason why the
    # counts once took over 90 s to settle in CI.
    burst = [rgb_to_image(road_frame(480, 640, seed=i), stamped(f"burst_{i}"), encoding="bgr8") for i in range(BURST)]
    for msg in burst[:-1]:
        reliable["input"].publish(msg)
    exchange(reliable["input"], burst[-1], reliable["label"], same_header(burst[-1].header))

    def settled(values):
        counts = {key: int(values[key]) for key in FRAME_COUNTS}
        accounted = sum(counts[key] for key in FRAME_COUNTS if key != "frames_in")
        return counts["frames_out"] > int(before["frames_out"]) and counts["frames_in"] == accounted

    after = counters_after(reliable, settled)
    assert int(after["frames_in"]) - int(before["frames_in"]) >= BURST  # reliable: none lost on the way
    assert int(after["frames_dropped"]) > int(before["frames_dropped"])
    assert int(after["frames_idle"]) == int(before["frames_idle"])  # every burst frame had subscribers


def test_invalid_parameters_and_missing_model_refused_at_start_up(tmp_path):
    cases = {  # word the one-line reason must name: override
        "device": "device:=tpu",
        "cuda:N": "device:=cuda:x",
        "device 'cuda:7'": "device:=cuda:7",  # no GPU here: "no CUDA device"; with one: "has 1 CUDA device(s)"
        "qos_overrides for /road_seg/label": "qos_overrides./road_seg/label.publisher.reliability:=sometimes",
        "/image.subscription.reliability must be one of": "qos_overrides./image.subscription.reliability:=sometimes",
        "overlay_alpha": "overlay_alpha:=1.5",
        "missing.safetensors": f"model_path:={tmp_path / 'missing.safetensors'}",
        "'1x' is not a valid ROS name": "cameras:=[front, 1x]",
    }
    processes = {  # started together: each spends seconds importing torch
        word: subprocess.Popen(
            [str(NODE_EXECUTABLE), "--ros-args", "--params-file", str(PARAMS_FILE), "-p", override],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for word, override in cases.items()
    }
    for word, process in processes.items():
        output, _ = process.communicate(timeout=120)
        fatal = [line for line in output.splitlines() if "[FATAL]" in line]
        assert process.returncode == 1, output
        assert len(fatal) == 1 and word in fatal[0], output
        assert "Traceback" not in output


def test_every_parameter_is_in_the_params_file_with_the_node_default():
    values = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]
    assert values == {param.name: param.default for param in PARAMETERS}


# The engine says, for each batch, which outputs it was asked to compute.
RECORD_OUTPUTS = """
from road_seg_ros.core.engine import SegmentationEngine
segment_batch = SegmentationEngine.segment_batch
def recorded(self, frames, with_color=False, with_overlay=False, overlay_alpha=0.5):
    print(f"computing color={with_color} overlay={with_overlay}", flush=True)
    return segment_batch(self, frames, with_color, with_overlay, overlay_alpha)
SegmentationEngine.segment_batch = recorded
"""


def test_only_subscribed_outputs_are_computed_and_signals_stop_cleanly(ros, start_node, tiny_checkpoint):
    signals = (signal.SIGINT, signal.SIGTERM)
    executable = injected_node(RECORD_OUTPUTS)
    nodes = [
        start_node(f"/{sig.name.lower()}", executable=executable, model_path=tiny_checkpoint, **NODE_PARAMS)
        for sig in signals
    ]
    for node in nodes:
        label = ros.inbox(Image, node.topic("label"))
        timing = ros.inbox(DiagnosticArray, node.topic("timing"))
        msg = rgb_to_image(road_frame(60, 80), stamped(f"only_label{node.namespace}"))
        publisher = ros.publisher(Image, node.topic("../image"))
        status = f"{node.namespace}/road_seg: frame timing"
        reply = exchange(
            publisher, msg, timing, lambda m, status=status: "label" in diagnostic_values(m, status)["outputs"]
        )
        assert diagnostic_values(reply, status)["outputs"] == "label"
        assert label.wait_for(same_header(msg.header), timeout=10.0).encoding == "mono8"
        assert "computing color=[False] overlay=[False]" in node.output()
        assert "color=[True]" not in node.output() and "overlay=[True]" not in node.output()

    for node, sig in zip(nodes, signals):
        assert node.stop(sig) == 0, node.output()
        assert "Traceback" not in node.output()


def test_compressed_outputs_are_image_transports_and_the_label_decodes_to_exactly_its_ids(
    ros, start_node, tiny_checkpoint, engine
):
    """~/label/compressed is PNG (lossless), ~/color/compressed and ~/overlay/compressed JPEG at jpeg_quality;
    each only computed while subscribed: the raw outputs nobody subscribes to here are not published."""
    node = start_node("/compressed_out", model_path=tiny_checkpoint, jpeg_quality=95, **NODE_PARAMS)
    outputs = {name: ros.inbox(CompressedImage, node.topic(f"{name}/compressed")) for name in ("label", "color")}
    outputs["overlay"] = ros.inbox(CompressedImage, node.topic("overlay/compressed"))
    timing = ros.inbox(DiagnosticArray, node.topic("timing"))
    publisher = ros.publisher(Image, node.topic("../image"))
    rgb = road_frame(96, 128, seed=21)
    msg = rgb_to_image(rgb, stamped("compressed_outputs"))
    status = f"{node.namespace}/road_seg: frame timing"
    wanted = "color/compressed,label/compressed,overlay/compressed"

    def every_compressed_output(reply):
        return same_header(msg.header)(reply) and diagnostic_values(reply, status)["outputs"] == wanted

    exchange(publisher, msg, timing, every_compressed_output)
    replies = {name: inbox.wait_for(same_header(msg.header), timeout=10.0) for name, inbox in outputs.items()}
    assert replies["label"].format == "mono8; png compressed mono8"
    assert {replies[name].format for name in ("color", "overlay")} == {"rgb8; jpeg compressed bgr8"}
    expected = engine.segment(rgb, with_color=True, with_overlay=True)
    label = cv2.imdecode(np.frombuffer(bytes(replies["label"].data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(label, expected.labels)
    for name, pixels in (("color", expected.color), ("overlay", expected.overlay)):
        assert bytes(replies[name].data) == codec.encode_compressed(pixels, "jpeg", 95).tobytes()  # at jpeg_quality
        decoded = cv2.imdecode(np.frombuffer(bytes(replies[name].data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert decoded.shape == pixels.shape and np.abs(decoded.astype(int) - pixels).mean() < 8.0


def camera_info(header: Header, width: int, height: int) -> CameraInfo:
    fx, fy, cx, cy = 400.0, 410.0, width / 2, height / 2
    return CameraInfo(
        header=header,
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=[0.1, -0.05, 0.0, 0.0, 0.0],
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, -20.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def test_camera_info_is_republished_with_each_labels_header_and_scaled_to_its_size(ros, start_node, tiny_checkpoint):
    """The camera_info of the frame's own stamp when it came, else the latest, scaled to the label; none before
    the first camera_info (nothing breaks without one)."""
    node = start_node("/with_info", model_path=tiny_checkpoint, **NODE_PARAMS)
    label = ros.inbox(Image, node.topic("label"))
    infos = ros.inbox(CameraInfo, node.topic("camera_info"))
    publisher = ros.publisher(Image, node.topic("../image"))
    info_publisher = ros.publisher(CameraInfo, node.topic("../camera_info"))
    rgb = road_frame(60, 80, seed=22)
    before = rgb_to_image(rgb, stamped("before_any_camera_info", nanosec=1))
    exchange(publisher, before, label, same_header(before.header))
    with pytest.raises(AssertionError):
        infos.wait_for(same_header(before.header), timeout=1.0)  # no camera_info yet: none published
    # Its own stamp's camera_info, at twice the frame's size (e.g. calibrated at full resolution): K and P halved.
    own = stamped("own_stamp", nanosec=2)
    older = stamped("latest", nanosec=3)
    msg = rgb_to_image(rgb, own)
    for _ in range(3):  # best effort: sent a few times
        info_publisher.publish(camera_info(own, 160, 120))
        info_publisher.publish(camera_info(older, 80, 60))  # the latest: not the frame's
    time.sleep(0.5)
    reply = exchange(publisher, msg, infos, same_header(own))
    assert (reply.width, reply.height, reply.header.frame_id) == (80, 60, "own_stamp")
    assert list(reply.k) == pytest.approx([200.0, 0.0, 40.0, 0.0, 205.0, 30.0, 0.0, 0.0, 1.0])
    assert list(reply.p) == pytest.approx([200.0, 0.0, 40.0, -10.0, 0.0, 205.0, 30.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert list(reply.d) == pytest.approx([0.1, -0.05, 0.0, 0.0, 0.0]) and reply.distortion_model == "plumb_bob"
    # A stamp with no camera_info of its own: the latest, unscaled (its size is the label's), under the frame's header.
    unmatched = rgb_to_image(rgb, stamped("no_info_of_its_own", nanosec=4))
    reply = exchange(publisher, unmatched, infos, same_header(unmatched.header))
    assert (reply.width, reply.height) == (80, 60) and list(reply.k)[0] == pytest.approx(400.0)


def test_standard_qos_overrides_set_the_outputs_and_the_input(ros, start_node, tiny_checkpoint):
    """qos_overrides./<topic>.publisher|subscription.<policy>, the node's own settings the defaults elsewhere."""
    overrides = {
        "qos_overrides./qo/road_seg/label.publisher.reliability": "best_effort",
        "qos_overrides./qo/image.subscription.reliability": "reliable",
    }
    node = start_node("/qo", model_path=tiny_checkpoint, **overrides, **NODE_PARAMS)
    label = ros.inbox(Image, node.topic("label"))
    rgb = road_frame(60, 80, seed=23)
    msg = rgb_to_image(rgb, stamped("qos_overrides"))
    reliable_camera = ros.publisher(
        Image, node.topic("../image"), QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    exchange(reliable_camera, msg, label, same_header(msg.header))  # the node is up and answers

    def endpoint(infos):
        (info,) = [info for info in infos if info.node_name == "road_seg" and info.node_namespace == "/qo"]
        return info.qos_profile

    label_qos = endpoint(ros.node.get_publishers_info_by_topic("/qo/road_seg/label"))
    assert label_qos.reliability == ReliabilityPolicy.BEST_EFFORT
    color_qos = endpoint(ros.node.get_publishers_info_by_topic("/qo/road_seg/color"))
    assert color_qos.reliability == ReliabilityPolicy.RELIABLE  # no override: output_reliability
    input_qos = endpoint(ros.node.get_subscriptions_info_by_topic("/qo/image"))
    assert input_qos.reliability == ReliabilityPolicy.RELIABLE  # not best_available's choice: the override's


def test_a_16_9_frame_runs_in_its_own_aspect_and_comes_back_at_its_size(raw, engine, tiny_checkpoint):
    """keep_aspect (the default): a 90x160 frame runs at the model's height and a 16:9 width, not stretched."""
    rgb = road_frame(90, 160, seed=24)
    labels = labels_for(raw, rgb_to_image(rgb, stamped("sixteen_by_nine")))
    assert labels.shape == (90, 160)
    assert np.array_equal(labels, engine.segment(rgb).labels)
    stretched = cpu_engine(tiny_checkpoint, keep_aspect=False).segment(rgb).labels
    assert not np.array_equal(labels, stretched)  # what the node did before: squeezed to the model's 4:3
