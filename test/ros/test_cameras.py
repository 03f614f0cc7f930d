"""Several cameras in one road_seg_node over real DDS: each camera's frames come back on its own topics, a stopped
camera holds up none of the others, a bad frame costs only its own camera, and frames waiting on several cameras
run as one batch.

One three-camera node (frames of three sizes) serves most of the module. Batching gets a node of its own whose
engine stops at a gate on frames of one width (so the other cameras' frames wait for the worker meanwhile, until
the test opens it) and fails on another (a batch holding it fails).
"""

import time

import numpy as np
import pytest
from camera_process import road_frame
from conftest import DIAGNOSTICS_QOS, cpu_engine, diagnostic_values, exchange, injected_node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from gate import Gates, gate_code
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from test_node import NODE_PARAMS, same_header, stamped

from road_seg_ros.core.codec import raw_to_array
from road_seg_ros.ros.cameras import LatestFrames, camera_names_problem
from road_seg_ros.ros.image_conversion import rgb_to_image

CAMERAS = {"front": (120, 160), "left": (96, 128), "rear": (180, 240)}  # height, width: three sizes
OUTPUTS = {"label": Image, "color": Image, "overlay": Image, "timing": DiagnosticArray}
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)  # nothing lost between us and the node
ROUNDS = 6
STREAM_PERIOD_S = 0.125  # 12 rounds span 1.5 s, longer than the 1 s window of the rates in /diagnostics
SLOW_WIDTH, POISON_WIDTH = 79, 77  # frame widths the batching node's engine waits at a gate on / fails on
INJECTED = f"""
from road_seg_ros.core.engine import SegmentationEngine
segment_batch = SegmentationEngine.segment_batch
def injected(self, frames, *args, **kwargs):
    widths = {{frame.shape[1] for frame in frames}}
    if {SLOW_WIDTH} in widths:
        gate("slow")  # the other cameras' frames arrive meanwhile
    if {POISON_WIDTH} in widths:
        raise RuntimeError("injected: a batch holding this frame fails")
    return segment_batch(self, frames, *args, **kwargs)
SegmentationEngine.segment_batch = injected
"""


class Rig:
    """A node with cameras: a publisher into each camera and reliable inboxes on each of its outputs."""

    def __init__(self, ros, node, cameras):
        self.node = node
        self.inputs = {camera: ros.publisher(Image, node.topic(f"../{camera}/image"), RELIABLE) for camera in cameras}
        self.outputs = {
            camera: {name: ros.inbox(kind, node.topic(f"{camera}/{name}"), RELIABLE) for name, kind in OUTPUTS.items()}
            for camera in cameras
        }
        self.diagnostics = ros.inbox(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.gates = None  # Gates, for a node with gates injected

    def status_name(self, name: str) -> str:
        """``front segmentation``, ``front frame timing``, ``engine``: the node's status of that name."""
        return f"{self.node.namespace}/road_seg: {name}"

    def send(self, camera: str, frame_id: str, size=None, seed: int = 0):
        """Publishes one frame on ``camera`` (at its size unless given); returns (header, RGB pixels)."""
        rgb = road_frame(*(size or CAMERAS[camera]), seed=seed)
        msg = rgb_to_image(rgb, stamped(frame_id))
        self.inputs[camera].publish(msg)
        return msg.header, rgb

    def answer(self, camera: str, header, timeout: float = 30.0) -> np.ndarray:
        """The labels published for ``header`` on ``camera``'s own topic."""
        return raw_to_array(self.outputs[camera]["label"].wait_for(same_header(header), timeout=timeout))

    def timing(self, camera: str, header) -> dict:
        reply = self.outputs[camera]["timing"].wait_for(same_header(header), timeout=30.0)
        return diagnostic_values(reply, self.status_name(f"{camera} frame timing"))

    def warm_up(self) -> None:
        """Until every camera answers: discovery done both ways, each input following its reliable publisher."""
        for camera in self.inputs:
            msg = rgb_to_image(road_frame(*CAMERAS.get(camera, (60, 80))), stamped(f"{camera}_warm_up"))
            exchange(self.inputs[camera], msg, self.outputs[camera]["label"], same_header(msg.header))

    def statuses_after(self, condition=lambda statuses: True, timeout: float = 60.0) -> dict:
        """The next /diagnostics statuses of this node (name -> values, level included) that satisfy ``condition``."""
        inbox, names = self.diagnostics, [f"{camera} segmentation" for camera in self.inputs] + ["engine"]

        def statuses(msg):
            found = {name: diagnostic_values(msg, self.status_name(name)) for name in names}
            return found if None not in found.values() else None

        found = inbox.wait_for(lambda msg: (s := statuses(msg)) is not None and condition(s), timeout, inbox.mark())
        return statuses(found)

    def settled(self) -> dict:
        """Statuses once every frame received has been answered, dropped, rejected or found idle."""

        def accounted(statuses):
            cameras = [statuses[f"{camera} segmentation"] for camera in self.inputs]
            keys = ("frames_out", "frames_dropped", "frames_rejected", "frames_idle")
            return all(int(values["frames_in"]) == sum(int(values[key]) for key in keys) for values in cameras)

        return self.statuses_after(accounted)

    def received(self, before: dict, frames: dict) -> None:
        """Until the node has counted ``frames`` (camera -> how many) more frames in than in ``before``."""
        wanted = {camera: camera_counts(before, "frames_in")[camera] + count for camera, count in frames.items()}
        self.statuses_after(lambda s: all(camera_counts(s, "frames_in")[camera] >= n for camera, n in wanted.items()))


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return cpu_engine(tiny_checkpoint)  # as the node runs it with NODE_PARAMS: bit-identical labels


@pytest.fixture(scope="module")
def rig(ros, start_node, tiny_checkpoint):
    node = start_node("/cameras", model_path=tiny_checkpoint, cameras=f"[{', '.join(CAMERAS)}]", **NODE_PARAMS)
    rig = Rig(ros, node, CAMERAS)
    rig.warm_up()
    return rig


@pytest.fixture(scope="module")
def batching(ros, start_node, tiny_checkpoint, tmp_path_factory):
    """A node whose engine waits at gate "slow" on a batch holding a frame SLOW_WIDTH wide and fails one holding
    POISON_WIDTH."""
    gates = tmp_path_factory.mktemp("gates")
    node = start_node(
        "/batching",
        executable=injected_node(gate_code(gates) + INJECTED),
        model_path=tiny_checkpoint,
        cameras=f"[{', '.join(CAMERAS)}]",
        **NODE_PARAMS,
    )
    rig = Rig(ros, node, CAMERAS)
    rig.gates = Gates(gates, node)
    rig.warm_up()
    return rig


def camera_counts(statuses: dict, key: str) -> dict:
    return {camera: int(statuses[f"{camera} segmentation"][key]) for camera in CAMERAS}


def test_each_camera_answers_on_its_own_topics_and_nothing_is_dropped(rig, engine):
    """Rounds of one frame per camera, sent together: a camera's frame never takes another camera's place."""
    before = rig.settled()
    sent = {camera: [] for camera in CAMERAS}
    for index in range(ROUNDS):
        for camera in CAMERAS:
            sent[camera].append(rig.send(camera, f"{camera}_{index}", seed=index))
        for camera in CAMERAS:  # each round answered before the next: a drop here is one camera's frame lost
            header, rgb = sent[camera][-1]
            labels = rig.answer(camera, header)
            assert labels.shape == CAMERAS[camera]
            np.testing.assert_array_equal(labels, engine.segment(rgb).labels)
    for camera, frames in sent.items():
        header, rgb = frames[-1]
        overlay = rig.outputs[camera]["overlay"].wait_for(same_header(header))
        np.testing.assert_array_equal(raw_to_array(overlay), engine.overlay(rgb, engine.segment(rgb).labels, 0.5))
        assert int(rig.timing(camera, header)["batch_size"]) in (1, 2, 3)
    for camera, outputs in rig.outputs.items():  # no cross-talk: each camera's topics carry its own frames only
        for inbox in outputs.values():
            assert inbox.count() > 0 and inbox.count(lambda msg, c=camera: not msg.header.frame_id.startswith(c)) == 0
    after = rig.settled()
    out_before, out_after = camera_counts(before, "frames_out"), camera_counts(after, "frames_out")
    assert {camera: out_after[camera] - out_before[camera] for camera in CAMERAS} == dict.fromkeys(CAMERAS, ROUNDS)
    assert camera_counts(after, "frames_dropped") == camera_counts(before, "frames_dropped")
    engine_status = after["engine"]
    assert engine_status["cameras"] == "front,left,rear" and engine_status["device"] == "cpu"
    batched = sum(size * int(engine_status.get(f"batches_of_{size}", 0)) for size in (1, 2, 3))
    assert batched == sum(camera_counts(after, "frames_out").values())  # every frame answered went through a batch


def test_a_camera_that_stops_holds_up_none_of_the_others(rig, engine):
    since = rig.diagnostics.mark()
    for index in range(ROUNDS * 2):  # front is silent from here on; left and rear go on
        for camera in ("left", "rear"):
            header, rgb = rig.send(camera, f"{camera}_on_{index}", seed=index)
            np.testing.assert_array_equal(rig.answer(camera, header, timeout=10.0), engine.segment(rgb).labels)
        time.sleep(STREAM_PERIOD_S)  # a stream, not a burst: the others still run when front's rate reads 0

    def front_silent_others_served(msg):
        front = diagnostic_values(msg, rig.status_name("front segmentation"))
        others = [diagnostic_values(msg, rig.status_name(f"{camera} segmentation")) for camera in ("left", "rear")]
        return front and front["fps_in"] == "0.00" and all(values and float(values["fps_out"]) > 0 for values in others)

    found = rig.diagnostics.wait_for(front_silent_others_served, timeout=10.0, since=since)
    front = next(status for status in found.status if status.name == rig.status_name("front segmentation"))
    assert (
        front.level == DiagnosticStatus.OK and front.message == "no images on /cameras/front/image in the last second"
    )


def test_a_bad_frame_on_one_camera_costs_only_that_camera(rig, engine):
    before = rig.settled()
    short = rgb_to_image(road_frame(*CAMERAS["front"]), stamped("front_short"))
    short.data = short.data[:-100]
    rig.inputs["front"].publish(short)
    good = {camera: rig.send(camera, f"{camera}_beside_short", seed=7) for camera in ("left", "rear")}
    for camera, (header, rgb) in good.items():
        np.testing.assert_array_equal(rig.answer(camera, header), engine.segment(rgb).labels)

    key = "rejected_short_data"
    after = rig.statuses_after(lambda s: int(s["front segmentation"][key]) > camera_counts(before, key)["front"])
    rejected_before, rejected_after = camera_counts(before, "frames_rejected"), camera_counts(after, "frames_rejected")
    assert rejected_after["left"] == rejected_before["left"] and rejected_after["rear"] == rejected_before["rear"]
    assert after["left segmentation"]["level"] == after["rear segmentation"]["level"] == DiagnosticStatus.OK
    header, rgb = rig.send("front", "front_after_short", seed=8)
    np.testing.assert_array_equal(rig.answer("front", header), engine.segment(rgb).labels)
    assert rig.node.process.poll() is None


def test_the_cameras_parameter_is_read_only(ros, rig):
    value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["front"])
    request = SetParameters.Request(parameters=[Parameter(name="cameras", value=value)])
    result = ros.call(SetParameters, f"{rig.node.namespace}/road_seg/set_parameters", request).results[0]
    assert not result.successful and "read-only" in result.reason


def test_frames_waiting_on_several_cameras_run_as_one_batch(batching, engine):
    before = batching.settled()
    batching.send("front", "front_slow", size=(60, SLOW_WIDTH))
    batching.gates.reached("slow")  # the worker is on it: the next frames wait, one per camera
    sent = {camera: batching.send(camera, f"{camera}_batched", seed=9) for camera in CAMERAS}
    batching.received(before, {"front": 2, "left": 1, "rear": 1})
    batching.gates.open("slow")
    for camera, (header, rgb) in sent.items():
        np.testing.assert_array_equal(batching.answer(camera, header), engine.segment(rgb).labels)
        assert batching.timing(camera, header)["batch_size"] == "3"
    assert int(batching.settled()["engine"]["batches_of_3"]) >= 1


def test_a_batch_that_fails_costs_only_the_frame_it_fails_on(batching, engine):
    before = batching.settled()
    batching.send("front", "front_slow_again", size=(60, SLOW_WIDTH))
    batching.gates.reached("slow")
    batching.send("left", "left_poison", size=(60, POISON_WIDTH))
    good = {camera: batching.send(camera, f"{camera}_beside_poison", seed=10) for camera in ("front", "rear")}
    batching.received(before, {"front": 2, "left": 1, "rear": 1})
    batching.gates.open("slow")
    for camera, (header, rgb) in good.items():  # the batch of three failed; each frame alone then
        np.testing.assert_array_equal(batching.answer(camera, header), engine.segment(rgb).labels)
        assert batching.timing(camera, header)["batch_size"] == "1"
    key = "rejected_inference_error"
    after = batching.statuses_after(lambda s: int(s["left segmentation"][key]) > camera_counts(before, key)["left"])
    assert camera_counts(after, key) == {**camera_counts(before, key), "left": camera_counts(before, key)["left"] + 1}
    assert "camera left: frame skipped (inference_error, 1 so far): RuntimeError: injected" in batching.node.output()
    header, rgb = batching.send("left", "left_after_poison", seed=11)
    np.testing.assert_array_equal(batching.answer("left", header), engine.segment(rgb).labels)


def test_each_camera_puts_one_frame_into_a_batch_and_keeps_its_newest_two():
    mailbox = LatestFrames(3)
    assert mailbox.put(0, "front 1") is False
    assert mailbox.put(0, "front 2") is False  # two at once (a burst): both kept
    assert mailbox.put(0, "front 3") is True  # a third replaces the oldest, never takes another camera's place
    mailbox.put(2, "rear 1")
    assert mailbox.take() == [(0, "front 2"), (2, "rear 1")]  # one per camera: the oldest kept
    mailbox.put(1, "left 1")
    assert mailbox.take() == [(0, "front 3"), (1, "left 1")]
    mailbox.close()
    assert mailbox.take() is None


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["front", "rig/left"], None),
        (["front", "front"], "each name once, got front more than once"),
        (["1st"], "'1st' is not a valid ROS name: it must not have a token that starts with a number"),
        (["fr-ont"], "'fr-ont' is not a valid ROS name: it must not contain characters other than alphanumerics"),
        (["left/"], "'left/' is not a valid ROS name: it must not end with a '/'"),
        (["/front"], "'/front' must be a relative name"),
        (["~front"], "'~front' must be a relative name"),
        ([""], "an empty name is not a camera name"),
    ],
)
def test_camera_names_must_be_relative_ros_names(names, reason):
    problem = camera_names_problem(names)
    assert problem == reason if reason is None else problem.startswith(f"cameras: {reason}")
