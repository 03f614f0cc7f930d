"""The node's cameras: each one's input, outputs and frame statistics, and the mailbox the worker takes frames from.

With no camera names the node has one camera on today's topics (``image`` in, ``~/label`` ... out). With names,
camera C reads ``C/image`` and writes ``~/C/label`` ...: relative names, so namespaces and remapping apply.
"""

import math
import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidNamespaceException
from rclpy.qos import qos_profile_sensor_data
from rclpy.validate_namespace import validate_namespace
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core.frames import stamp_ns
from . import diagnostics, qos
from .camera_info import CameraInfos
from .stamp_gaps import StampGaps

# The image outputs: raw, and image_transport-style compressed beside each (PNG for the label: lossless).
IMAGE_OUTPUTS = {"label": ("mono8", "png"), "color": ("rgb8", "jpeg"), "overlay": ("rgb8", "jpeg")}
OUTPUTS = {
    **{name: Image for name in IMAGE_OUTPUTS},
    **{f"{name}/compressed": CompressedImage for name in IMAGE_OUTPUTS},
    "timing": DiagnosticArray,
    "camera_info": CameraInfo,  # the camera's own, with each label's header (camera_info.py)
}
MAILBOX_DEPTH = 2  # frames a camera may have waiting for the worker (LatestFrames)
REJECT_LOG_PERIOD_S = 10.0  # a bad stream logs each reason once, then at most this often


def camera_names_problem(names) -> str | None:
    """Why ``names`` cannot name cameras (one line), or None: each must be a relative ROS name, e.g. ``front`` or
    ``rig/left`` (letters, digits and '_' in '/'-separated tokens, none starting with a digit), each only once."""
    for name in names:
        if not name:
            return "cameras: an empty name is not a camera name"
        if name[0] in "/~":
            return f"cameras: {name!r} must be a relative name (no leading '/' or '~'): its topics are the node's"
        try:
            validate_namespace(f"/{name}")  # a relative name's rules, checked as the namespace it would make
        except InvalidNamespaceException as error:
            reason = str(error).splitlines()[0].removeprefix("Invalid namespace: ").rstrip(":")
            return f"cameras: {name!r} is not a valid ROS name: {reason.replace('namespace must', 'it must', 1)}"
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        return f"cameras: each name once, got {', '.join(repeated)} more than once"
    return None


class LatestFrames:
    """Each camera's newest untaken frames, MAILBOX_DEPTH at most: a new frame beyond them replaces its camera's
    oldest untaken one.

    Two, not one: a late DDS retransmission or a bag's burst brings two frames of a camera at once, and the
    older is still segmented; when inference is slower than the camera, the newest two win and the rest are
    counted as dropped. The worker takes one frame of every waiting camera at once (each camera's oldest), so
    each camera puts at most one frame into a batch and one that sends faster than the others cannot crowd
    them out; one that stops holds nobody up.
    """

    def __init__(self, count: int, depth: int = MAILBOX_DEPTH):
        self._ready = threading.Condition()
        self._slots = [deque() for _ in range(count)]
        self._depth = depth
        self._closed = False

    def put(self, index: int, frame) -> bool:
        """Stores camera ``index``'s ``frame``; True when it replaced an untaken one."""
        with self._ready:
            slot = self._slots[index]
            replaced = len(slot) >= self._depth
            if replaced:
                slot.popleft()
            slot.append(frame)
            self._ready.notify()
        return replaced

    def take(self) -> list | None:
        """Waits for a frame; then each waiting camera's oldest as (camera index, frame), in camera order. None once
        closed."""
        with self._ready:
            while not self._closed and not any(self._slots):
                self._ready.wait()
            waiting = [(index, slot.popleft()) for index, slot in enumerate(self._slots) if slot]
        return None if self._closed else waiting

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class Camera:
    """One camera's input subscription, output publishers, frame counts and rejection log.

    ``name`` empty: the single camera, on the node's own topics, with today's status names.
    """

    def __init__(self, node, name: str, compressed: bool, receive, frame_s: float):
        self.name = name
        self._node = node
        prefix = f"{name}/" if name else ""
        reliability = qos.POLICIES[node.get_parameter("output_reliability").value]
        self.outputs = {  # a profile each: an override changes the profile it is given
            output: qos.output_publisher(node, msg_type, f"~/{prefix}{output}", qos.profile(reliability, self._depth()))
            for output, msg_type in OUTPUTS.items()
        }
        topic = f"{prefix}image/compressed" if compressed else f"{prefix}image"
        setting = node.get_parameter("qos_reliability").value
        reliability, depth = qos.input_overrides(node, topic, setting, qos.input_depth(self._depth()))
        self.input = qos.InputSubscription(
            node, CompressedImage if compressed else Image, topic, receive, reliability, depth
        )
        # Best effort hears reliable and best-effort camera_info publishers alike.
        self.infos = CameraInfos()
        self._info_subscription = node.create_subscription(
            CameraInfo, f"{prefix}camera_info", self.infos.add, qos_profile_sensor_data
        )
        self.stats = diagnostics.FrameStats(frame_s=frame_s)
        self._stamps = StampGaps()
        label = f"{name} " if name else ""
        self.status_name = f"{node.get_fully_qualified_name()}: {label}segmentation"
        self.timing_name = f"{node.get_fully_qualified_name()}: {label}frame timing"
        self._last_reject_log = {}

    def close(self) -> None:
        """Unsubscribes and stops publishing."""
        self.input.close()
        self._node.destroy_subscription(self._info_subscription)
        for publisher in self.outputs.values():
            self._node.destroy_publisher(publisher)

    def _depth(self) -> int:
        return self._node.get_parameter("qos_depth").value

    def received(self, header) -> None:
        """Counts a frame received, and the frames its stamp says were lost before it."""
        self.stats.count("received")
        for event, times in self._stamps.observe(stamp_ns(header)).items():
            self.stats.count(event, times=times)

    def wanted(self) -> set:
        """The outputs somebody subscribes to."""
        return {output for output, publisher in self.outputs.items() if publisher.get_subscription_count()}

    def reject(self, reason: str, message: str) -> None:
        """Counts a frame rejected for ``reason``; logs it once per reason, then at most every REJECT_LOG_PERIOD_S."""
        count = self.stats.count("rejected", reason)
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -math.inf) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[reason] = now
            camera = f"camera {self.name}: " if self.name else ""
            self._node.get_logger().warning(f"{camera}frame skipped ({reason}, {count} so far): {message}")

    def status(self, min_fps: float, hardware_id: str, extra_values: dict):
        """This camera's DiagnosticStatus for the window since the last one, ``extra_values`` after its own."""
        window, seconds, latencies = self.stats.take_window()
        fps_out = window["published"] / seconds
        topic = self.input.topic_name
        level, message = diagnostics.health(window, fps_out, min_fps, topic, self.stats.silent_s())
        values = {
            **diagnostics.summary_values(self.stats, window, seconds, latencies),
            **extra_values,
            "input_topic": topic,
        }
        return diagnostics.status(level, self.status_name, message, hardware_id, values)
